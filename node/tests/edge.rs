//! The edge in front of a live channel, against the real `bitriver` binary with ffmpeg
//! publishing over RTMP: players read through it as from the origin (fresh hits through the
//! sendfile fast path), a whole audience blocked on one part costs the origin one request, and
//! viewers it counts reach the analytics.
//!
//! Needs ffmpeg and ffprobe (and Chromium for the player); fails naming a missing one.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::browser::play_in_chromium;
use common::live::{
    create_channel, probe_size, publish, rtmp_url, start_with_rtmp, wait_url_body, Encoding, MEDIA_TOOLS,
};
use common::{get_json, wait_for_body, NodeProc};

/// A node with a live channel published by ffmpeg: (node, channel id, publisher).
async fn live_node(dir: &Path, name: &str, seconds: u32) -> (NodeProc, String, tokio::process::Child) {
    let mut node = NodeProc::new(dir, name);
    let rtmp_port = start_with_rtmp(&mut node, &[]).await;
    let (id, key) = create_channel(&node, "Edge").await;
    let log = dir.join(format!("{name}-ffmpeg.log"));
    let publisher = publish("flv", &rtmp_url(rtmp_port, &key), seconds, Encoding::ZeroLatency, &log);
    (node, id, publisher)
}

/// GET through the edge until it answers 200 with `needle` in the body.
async fn wait_edge_body(url: &str, needle: &str, node: &NodeProc) -> String {
    wait_url_body(url, needle, Duration::from_secs(25), &[node]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffprobe_and_hls_js_play_through_the_edge() {
    if !testkit::require_tools(&[MEDIA_TOOLS, testkit::tools::BROWSER].concat()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (node, id, mut publisher) = live_node(dir.path(), "edge-play", 40).await;
    let edge_port = node.edge_port().await;
    let master = format!("http://127.0.0.1:{edge_port}/hls/{id}/master.m3u8");
    wait_edge_body(&master, "#EXT-X-STREAM-INF", &node).await;
    wait_edge_body(&format!("http://127.0.0.1:{edge_port}/hls/{id}/source/index.m3u8"), "#EXTINF", &node).await;

    assert_eq!(probe_size(&master).await, (640, 360));

    // The API hands viewers the edge; the old relative URL still works.
    let channel = get_json(&node, &format!("/api/channels/{id}")).await;
    assert_eq!(channel["playbackUrl"], format!("/hls/{id}/master.m3u8"));
    assert_eq!(channel["edgePlaybackUrl"], master, "{channel}");

    let edge_master = master.clone();
    let summary = tokio::task::spawn_blocking(move || play_in_chromium(&edge_master, 3.0)).await.unwrap();
    let summary = summary.unwrap_or_else(|e| panic!("hls.js did not play through the edge: {e}\n{}", node.log_text()));
    assert_eq!(summary["ok"], true, "{summary}");
    assert!(summary["playedSeconds"].as_f64().unwrap_or(0.0) >= 3.0, "{summary}");

    // Everything the players loaded came through the edge and most of it from its cache.
    let requests = node.metric("bitriver_edge_requests_total").await.unwrap();
    let hits = node.metric("bitriver_edge_cache_hits_total").await.unwrap();
    let origin_parts = node.metric("bitriver_edge_origin_requests_total{kind=\"part\"}").await.unwrap();
    assert!(
        requests > 20.0 && hits > 0.0 && origin_parts > 0.0,
        "requests {requests} hits {hits} parts {origin_parts}"
    );
    assert!(node.metric("bitriver_edge_cache_bytes").await.unwrap() > 0.0);

    // A segment asked twice on one keep-alive connection: the second answer is a fresh hit, sent
    // from its memfd by the sendfile fast path (cache::direct), which counts its sends.
    const SENDFILE: &str = "bitriver_edge_direct_sends_total{body=\"sendfile\"}";
    let playlist =
        wait_edge_body(&format!("http://127.0.0.1:{edge_port}/hls/{id}/source/index.m3u8"), "#EXTINF", &node).await;
    let segment =
        playlist.lines().find(|l| l.starts_with("seg")).unwrap_or_else(|| panic!("no segment in\n{playlist}"));
    let url = format!("http://127.0.0.1:{edge_port}/hls/{id}/source/{segment}");
    let client = reqwest::Client::new();
    let first = client.get(&url).send().await.unwrap().bytes().await.unwrap();
    assert!(first.len() >= 16 * 1024, "a segment small enough to stay in memory: {} bytes", first.len());
    // The fill that answered the first request may still be finishing in the cache when its last
    // byte reaches us (such hits go through pingora); once complete, a hit goes by sendfile.
    let mut sent = 0.0;
    for _ in 0..50 {
        let sent_before = node.metric(SENDFILE).await.expect("the direct send counter on /metrics");
        let hit = client.get(&url).send().await.unwrap();
        assert_eq!(hit.headers()["x-cache"], "HIT");
        assert_eq!(hit.bytes().await.unwrap(), first);
        sent = node.metric(SENDFILE).await.unwrap() - sent_before;
        if sent > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sent, 1.0, "a complete fresh hit did not take the sendfile path (or counted twice)");

    let health = get_json(&node, "/healthz").await;
    assert_eq!(health["components"]["edge"]["status"], "ok", "{health}");
    assert!(health["components"]["edge"]["objects"].as_u64().unwrap_or(0) > 0, "{health}");
    let _ = publisher.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audience_blocked_on_the_next_part_costs_the_origin_one_request() {
    if !testkit::require_tools(MEDIA_TOOLS) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (node, id, mut publisher) = live_node(dir.path(), "edge-collapse", 40).await;
    let edge = format!("http://127.0.0.1:{}", node.edge_port().await);
    let playlist_url = format!("{edge}/hls/{id}/source/index.m3u8");
    wait_edge_body(&playlist_url, "#EXT-X-PRELOAD-HINT", &node).await;
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    const AUDIENCE: usize = 300;
    let mut done = Vec::new();

    for (round, attempt) in ["part", "playlist"].into_iter().flat_map(|r| (1..=5).map(move |a| (r, a))) {
        if done.contains(&round) {
            continue;
        }
        // Right after a fresh playlist the hinted part is not published yet.
        let playlist = client.get(format!("{playlist_url}?fresh={round}")).send().await.unwrap().text().await.unwrap();
        let hint = playlist
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:"))
            .and_then(|l| l.split("URI=\"").nth(1))
            .and_then(|l| l.split('"').next())
            .unwrap_or_else(|| panic!("no preload hint:\n{playlist}"))
            .to_owned();
        // part{msn}.{index}.m4s: the blocking reload that asks for it.
        let (msn, index) = hint
            .trim_start_matches("part")
            .trim_end_matches(".m4s")
            .split_once('.')
            .map(|(m, i)| (m.to_owned(), i.to_owned()))
            .unwrap();
        let (url, metric) = match round {
            "part" => (format!("{edge}/hls/{id}/source/{hint}"), "bitriver_origin_requests_total{kind=\"part\"}"),
            _ => (
                format!("{playlist_url}?_HLS_msn={msn}&_HLS_part={index}"),
                "bitriver_origin_requests_total{kind=\"playlist\"}",
            ),
        };
        let before = node.metric(metric).await.unwrap();
        let mut viewers = Vec::new();
        for viewer in 0..AUDIENCE {
            let url = format!("{url}{}viewer={viewer}", if url.contains('?') { '&' } else { '?' });
            let client = client.clone();
            viewers.push(tokio::spawn(async move {
                let resp = client.get(url).send().await.unwrap();
                (resp.status().as_u16(), resp.bytes().await.unwrap())
            }));
        }
        let mut answers = Vec::new();
        for viewer in viewers {
            answers.push(viewer.await.unwrap());
        }
        // A keyframe can close the segment before the hinted part: the origin then says 404 (never
        // cached), and the round is tried again with the next hint.
        if round == "part" && attempt < 5 && answers.iter().all(|(status, _)| *status == 404) {
            eprintln!("{hint} was cut by a new segment; trying the next hint");
            continue;
        }
        for (status, body) in &answers {
            assert_eq!(*status, 200, "{round}: {}", String::from_utf8_lossy(body));
        }
        assert!(answers.windows(2).all(|w| w[0].1 == w[1].1), "{round}: every viewer got the same answer");
        let after = node.metric(metric).await.unwrap();
        assert_eq!(after - before, 1.0, "{round}: {AUDIENCE} viewers made {} origin requests", after - before);
        done.push(round);
    }
    assert_eq!(done, ["part", "playlist"]);
    assert!(node.metric("bitriver_edge_collapsed_waiters_total").await.unwrap() > 0.0);
    let _ = publisher.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_viewers_at_the_edge_reach_live_viewers_in_analytics() {
    if !testkit::require_tools(MEDIA_TOOLS) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (node, id, mut publisher) = live_node(dir.path(), "edge-viewers", 50).await;
    // Wait on the origin, so that this test's own polling is not a viewer at the edge.
    let path = format!("/hls/{id}/source/index.m3u8");
    wait_for_body(&node, &path, "#EXTINF", Instant::now(), Duration::from_secs(25)).await;
    let playlist = node.edge_url(&path).await;
    // Three players on three loopback addresses; each varies its user agent, which must not make
    // it count as more than one viewer.
    let players: Vec<reqwest::Client> = (1..=3u8)
        .map(|n| reqwest::Client::builder().local_address(std::net::IpAddr::from([127, 0, 0, n])).build().unwrap())
        .collect();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(40);
    let mut poll = 0;
    loop {
        // Each player polls many times.
        poll += 1;
        for (player, client) in players.iter().enumerate() {
            let agent = format!("player-{player}-{poll}");
            let resp = client.get(&playlist).header("user-agent", agent).send().await.unwrap();
            assert_eq!(resp.status(), 200);
        }
        let overview = get_json(&node, "/api/analytics/overview").await;
        let live = overview["summary"]["liveViewers"].as_u64().unwrap_or(0);
        if live == 3 {
            let per_channel = overview["perChannel"].as_array().unwrap();
            let channel = per_channel.iter().find(|c| c["channelId"] == id.as_str());
            assert!(channel.is_some_and(|c| c["liveViewers"] == 3), "{overview}");
            break;
        }
        assert!(live <= 3, "{overview}");
        assert!(Instant::now() < deadline, "liveViewers never reached 3: {overview}\n{}", node.log_text());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = publisher.kill().await;
}
