//! Two regions, each node in a network namespace of its own (`common::netns`): region `a` ingests
//! and packages a channel; region `b` has two edges and no origin. Each object crosses from `a`
//! to `b` once, through `b`'s shield edge (chosen by rendezvous hashing over `b`'s edges), not once
//! per edge: many viewers on both `b` edges cost `a`'s origin about one request per part. ffprobe
//! and hls.js in Chromium play the channel through `b`'s other edge.
//!
//! Needs ffmpeg, ffprobe, Chromium (tests/browser), `ip`; a missing tool fails the test unless
//! BITRIVER_ALLOW_SKIP=1.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::fleet::{all_reported, channel_as_admin, member_at, start_fleet, Fleet};
use common::live::{publish, wait_url_body, Encoding};
use common::netns::Net;
use common::NodeProc;

/// `name{label="value"} N` of `node`'s metrics, summed over the lines that match `label`.
async fn metric_with(node: &NodeProc, name: &str, label: &str) -> f64 {
    let Some((_, body)) = node.get("/metrics").await else { return 0.0 };
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One viewer polling a media playlist through an edge and fetching every part listed, until
/// `until`; returns the part URIs it fetched.
async fn poll_parts(playlist_url: String, until: Instant) -> BTreeSet<String> {
    let base = playlist_url.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap();
    let client = reqwest::Client::new();
    let mut fetched = BTreeSet::new();
    while Instant::now() < until {
        if let Ok(resp) = client.get(&playlist_url).send().await {
            let body = resp.text().await.unwrap_or_default();
            let parts: Vec<String> = body
                .lines()
                .filter(|l| l.starts_with("#EXT-X-PART:"))
                .filter_map(|l| Some(l.split("URI=\"").nth(1)?.split('"').next()?.to_owned()))
                .collect();
            for part in parts {
                if fetched.contains(&part) {
                    continue;
                }
                if let Ok(resp) = client.get(format!("{base}/{part}")).send().await {
                    if resp.status() == 200 && resp.bytes().await.is_ok() {
                        fetched.insert(part);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fetched
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_b_edges_fetch_each_object_from_region_a_once_through_their_shield() {
    if !testkit::require_tools(&[common::live::MEDIA_TOOLS, testkit::tools::BROWSER].concat()) {
        return;
    }
    let Some(mut net) = Net::new() else { return };
    let root = tempfile::tempdir().unwrap();
    let members =
        [("ingest-a", "ingest", "a"), ("origin-a", "origin", "a"), ("edge-b1", "edge", "b"), ("edge-b2", "edge", "b")];
    let Fleet { spaces, control, token, nodes } = start_fleet(&mut net, root.path(), &members).await;
    let (id, key) = channel_as_admin(&control, &token).await;
    // Both edges report before the publish, so every node names the same shield.
    let cluster = all_reported(&control, &token, 5).await;
    let node_at = |i: usize| member_at(&cluster, spaces[i].ip);
    let (b1, b2) = (node_at(3), node_at(4));
    let shield_id = bitriver_node::placement::rank(&id, &[b1, b2])[0];
    let (shield_at, other_at) = if shield_id == b1 { (3, 4) } else { (4, 3) };

    let rtmp = format!("rtmp://{}:1935/live/{key}", spaces[1].ip);
    let mut publisher = publish("flv", &rtmp, 90, Encoding::ZeroLatency, &root.path().join("ffmpeg.log"));
    let playlist = |i: usize| format!("http://{}:8081/hls/{id}/source/index.m3u8", spaces[i].ip);
    {
        let all: Vec<&NodeProc> = std::iter::once(&control).chain(nodes.iter()).collect();
        wait_url_body(&playlist(other_at), "#EXT-X-PART", Duration::from_secs(40), &all).await;
    }
    let origin = &nodes[1];
    let parts_before = metric_with(origin, "bitriver_origin_requests_total", "kind=\"part\"").await;

    // 8 viewers on each edge of region b for 8 s.
    let until = Instant::now() + Duration::from_secs(8);
    let mut viewers = Vec::new();
    for i in 0..16 {
        viewers.push(tokio::spawn(poll_parts(playlist(if i % 2 == 0 { 3 } else { 4 }), until)));
    }
    let mut distinct = BTreeSet::new();
    let mut fetches = 0;
    for viewer in viewers {
        let parts = viewer.await.unwrap();
        fetches += parts.len();
        distinct.extend(parts);
    }
    let origin_parts = metric_with(origin, "bitriver_origin_requests_total", "kind=\"part\"").await - parts_before;
    eprintln!(
        "region b: {fetches} part fetches by 16 viewers on 2 edges, {} distinct parts, {origin_parts} part requests at region a's origin",
        distinct.len()
    );
    assert!(distinct.len() >= 20, "the viewers played: {} parts", distinct.len());
    // Once per region: about one origin request per part (a part in flight at the start or the end
    // may be asked twice), where two edges fetching on their own would make it about two.
    assert!(
        origin_parts <= distinct.len() as f64 * 1.25 + 2.0,
        "{origin_parts} origin part requests for {} parts: objects crossed regions more than once",
        distinct.len()
    );
    let (shield, other) = (&nodes[shield_at - 1], &nodes[other_at - 1]);
    assert!(metric_with(other, "bitriver_edge_upstream_requests_total", "tier=\"shield\"").await > 0.0);
    assert_eq!(metric_with(other, "bitriver_edge_upstream_requests_total", "tier=\"origin\"").await, 0.0);
    assert_eq!(metric_with(shield, "bitriver_edge_upstream_requests_total", "tier=\"shield\"").await, 0.0);

    // ffprobe and hls.js in Chromium through region b's non-shield edge.
    let master = format!("http://{}:8081/hls/{id}/master.m3u8", spaces[other_at].ip);
    let (width, height) = testkit::ffmpeg::probe_size(&master).await;
    assert_eq!((width, height), (640, 360));
    let env = [("PLAY_ALLOW_NON_LOOPBACK", "1".to_owned())];
    let played = tokio::task::spawn_blocking(move || common::browser::play_in_chromium_env(&master, 4.0, &env))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("hls.js through region b's edge: {e}"));
    assert_eq!(played["ok"], true, "{played}");

    let _ = publisher.kill().await;
    drop(nodes);
    drop(control);
    drop(net);
}
