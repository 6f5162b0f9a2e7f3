//! The ladder on a node of its own: ffmpeg publishes RTMP into region a's ingest-only node; one
//! of region a's two transcode nodes (the one placement ranks first) subscribes to `source` over
//! the cluster's QUIC, runs the ladder and publishes the rung; both origins of region a subscribe
//! to `source` (from the ingest node) and to the rung (from the transcode node) and serve both;
//! ffprobe and hls.js in Chromium play the ladder through region b's edge. Then the transcode
//! node is killed with SIGKILL: the other one takes the ladder over, and `source` plays on
//! throughout.
//!
//! Needs ffmpeg, ffprobe, Chromium (fails naming them unless BITRIVER_ALLOW_SKIP=1) and `ip`.

mod common;

use std::time::{Duration, Instant};

use common::fleet::{all_reported, channel_as_admin, member_at, start_fleet_with, Fleet};
use common::live::{publish, wait_url_body, Encoding};
use common::netns::Net;
use common::NodeProc;

/// The newest segment number of a media playlist (segments are `seg{msn}.m4s`).
fn newest_segment(playlist: &str) -> Option<u64> {
    playlist
        .lines()
        .filter_map(|l| l.strip_prefix("seg").and_then(|r| r.strip_suffix(".m4s")))
        .filter_map(|n| n.parse().ok())
        .max()
}

async fn newest_at(url: &str) -> Option<u64> {
    match testkit::http::get(url).await {
        Some((200, body)) => newest_segment(&body),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ladder_runs_on_a_transcode_node_and_moves_when_it_is_killed() {
    if !testkit::require_tools(&[common::live::MEDIA_TOOLS, testkit::tools::BROWSER].concat()) {
        return;
    }
    let Some(mut net) = Net::new() else { return };
    let root = tempfile::tempdir().unwrap();
    let members = [
        ("ingest-a", "ingest", "a"),
        ("transcode-a1", "transcode", "a"),
        ("transcode-a2", "transcode", "a"),
        ("origin-a1", "origin", "a"),
        ("origin-a2", "origin", "a"),
        ("edge-a", "edge", "a"),
        ("ingest-b", "ingest", "b"),
        ("edge-b", "edge", "b"),
    ];
    let ladder = ["--transcode-ladder", "180p:300"];
    let args = [("transcode-a1", &ladder[..]), ("transcode-a2", &ladder[..])];
    let Fleet { spaces, control, token, mut nodes } = start_fleet_with(&mut net, root.path(), &members, &args).await;
    let (id, key) = channel_as_admin(&control, &token).await;
    let cluster = all_reported(&control, &token, members.len() + 1).await;
    let (t1, t2) = (member_at(&cluster, spaces[2].ip), member_at(&cluster, spaces[3].ip));
    let first = bitriver_node::placement::rank(&id, &[t1, t2])[0];
    let (first_at, second_at) = if first == t1 { (2, 3) } else { (3, 2) };

    let rtmp = format!("rtmp://{}:1935/live/{key}", spaces[1].ip);
    let mut publisher = publish("flv", &rtmp, 120, Encoding::ZeroLatency, &root.path().join("ffmpeg.log"));
    let edge_b = spaces[8].ip;
    let master = format!("http://{edge_b}:8081/hls/{id}/master.m3u8");
    let all: Vec<&NodeProc> = std::iter::once(&control).chain(nodes.iter()).collect();
    let body = wait_url_body(&master, "/index.m3u8", Duration::from_secs(40), &all).await;
    // The rung joins the origins' stream once the transcode node publishes it (and names it on
    // the session).
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut body = body;
    while !body.contains("180p/index.m3u8") {
        assert!(
            Instant::now() < deadline,
            "the ladder never reached region b's edge: {body}\n{}",
            nodes[first_at - 1].log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        body = testkit::http::get(&master).await.map(|(_, b)| b).unwrap_or_default();
    }
    assert!(body.contains("source/index.m3u8"), "{body}");
    let transcoder = &nodes[first_at - 1];
    assert!(transcoder.log_text().contains("ladder running"), "{}", transcoder.log_text());
    assert!(!nodes[second_at - 1].log_text().contains("ladder running"), "one transcode per channel");
    // The ingest node only relays: it runs no ladder.
    assert!(!nodes[0].log_text().contains("ladder running"));

    // ffprobe reads both renditions through region b's edge.
    let rung = format!("http://{edge_b}:8081/hls/{id}/180p/index.m3u8");
    let source = format!("http://{edge_b}:8081/hls/{id}/source/index.m3u8");
    wait_url_body(&rung, "#EXTINF", Duration::from_secs(20), &all).await;
    assert_eq!(testkit::ffmpeg::probe_size(&rung).await, (320, 180));
    // Both origins package the rung and name its segments alike.
    let origin_rung = |i: usize| format!("http://{}:8080/hls/{id}/180p/index.m3u8", spaces[i].ip);
    let (a, b) = (newest_at(&origin_rung(4)).await, newest_at(&origin_rung(5)).await);
    assert!(a.is_some() && b.is_some(), "the rung on both origins: {a:?} {b:?}");
    assert!(a.unwrap().abs_diff(b.unwrap()) <= 1, "same numbering on both origins: {a:?} {b:?}");
    drop(all);

    // hls.js in Chromium plays the ladder through region b's edge, switching to the rung (hls.js
    // orders levels by bandwidth: the 180p rung at 300 kbit/s is level 0).
    let env = [("PLAY_ALLOW_NON_LOOPBACK", "1".to_owned())];
    let url = master.clone();
    let played =
        tokio::task::spawn_blocking(move || common::browser::play_in_chromium_switching_env(&url, 4.0, 0, &env))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("hls.js through region b's edge: {e}"));
    assert_eq!(played["levels"].as_array().map(Vec::len), Some(2), "{played}");
    assert_eq!(played["level"], 0, "{played}");

    // kill -9 the transcode node; the other one takes the ladder; `source` never stops.
    let rung_before = newest_at(&rung).await.expect("rung segments before the kill");
    let source_before = newest_at(&source).await.expect("source segments before the kill");
    nodes[first_at - 1].kill9();
    let killed = Instant::now();
    let mut source_seen = vec![source_before];
    let resumed = loop {
        assert!(
            killed.elapsed() < Duration::from_secs(45),
            "the ladder did not resume after the kill (rung at {rung_before}):\n{}",
            nodes[second_at - 1].log_text()
        );
        if let Some(msn) = newest_at(&source).await {
            source_seen.push(msn);
        }
        match newest_at(&rung).await {
            Some(msn) if msn >= rung_before + 3 => break msn,
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    eprintln!(
        "ladder resumed on the second transcode node {:.1} s after the kill (rung segment {rung_before} -> {resumed})",
        killed.elapsed().as_secs_f64()
    );
    assert!(nodes[second_at - 1].log_text().contains("ladder running"), "{}", nodes[second_at - 1].log_text());
    assert!(source_seen.windows(2).all(|w| w[1] >= w[0]), "source went back: {source_seen:?}");
    assert!(source_seen.last().unwrap() > &source_before, "source went on during the failover: {source_seen:?}");
    let master_after = testkit::http::get(&master).await.map(|(_, b)| b).unwrap_or_default();
    assert!(master_after.contains("180p/index.m3u8"), "the rung is listed again: {master_after}");

    let _ = publisher.kill().await;
    drop(nodes);
    drop(control);
    drop(net);
}
