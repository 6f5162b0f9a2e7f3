//! Stream health end to end: an ffmpeg publish with a keyframe only every 10 s, whose picture
//! turns to noise after 6 s (its bitrate jumps), measured at ingest every 5 s and read back from
//! `GET /api/channels/{id}/health` with a keyframe-interval warning.

mod common;

use std::time::{Duration, Instant};

use common::live::{create_channel, rtmp_url, start_with_rtmp, MEDIA_TOOLS};
use common::{get_json, NodeProc};
use testkit::ffmpeg::TestPattern;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_follow_the_bitrate_and_rare_keyframes_are_warned() {
    if !testkit::require_tools(MEDIA_TOOLS) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProc::new(dir.path(), "health");
    let rtmp_port = start_with_rtmp(&mut node, &[]).await;
    let (id, key) = create_channel(&node, "Health").await;
    let pattern = TestPattern {
        gop: 300,
        seconds: Some(30),
        // No scene-cut keyframes: the noise would bring one every few frames.
        extra: ["-sc_threshold", "0", "-vf", "noise=alls=80:allf=t+u:enable='gte(t,6)'"].map(String::from).to_vec(),
        ..TestPattern::new(640, 360)
    };
    let mut publisher = pattern.publish("flv", &rtmp_url(rtmp_port, &key), &dir.path().join("ffmpeg.log"));

    let path = format!("/api/channels/{id}/health");
    let deadline = Instant::now() + Duration::from_secs(40);
    let health = loop {
        let health = get_json(&node, &path).await;
        if health["samples"].as_array().is_some_and(|s| s.len() >= 3) {
            break health;
        }
        assert!(Instant::now() < deadline, "three health samples never came: {health}\n{}", node.log_text());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let _ = publisher.kill().await;
    eprintln!("health: {health}");
    assert_eq!(health["live"], true);
    let samples = health["samples"].as_array().unwrap();
    let kbps = |i: usize| samples[i]["videoKbps"].as_f64().unwrap();
    // 0-5 s: the plain pattern; 10-15 s: noise, many times the bits.
    assert!(kbps(2) > 3.0 * kbps(0), "the bitrate change shows: {} then {}", kbps(0), kbps(2));
    assert!(samples.iter().all(|s| (s["fps"].as_f64().unwrap() - 30.0).abs() < 3.0), "{health}");
    assert!(samples[0]["audioKbps"].as_f64().unwrap() > 50.0, "{health}");
    let codes: Vec<&str> = health["warnings"].as_array().unwrap().iter().map(|w| w["code"].as_str().unwrap()).collect();
    assert!(codes.contains(&"keyframe_interval"), "{health}");

    let session = health["sessionId"].as_str().unwrap();
    let (status, _) = node.get(&format!("{path}?sessionId=nope")).await.unwrap();
    assert_eq!(status, 404);
    let again = get_json(&node, &format!("{path}?sessionId={session}")).await;
    assert_eq!(again["sessionId"], session);
}

/// Polls `url` through a client bound to `source` (a loopback address: the edge counts viewers by
/// address) until `until`.
async fn watch(url: String, source: [u8; 4], until: Instant) -> usize {
    let client = reqwest::Client::builder().local_address(std::net::IpAddr::from(source)).build().unwrap();
    let mut fetched = 0;
    while Instant::now() < until {
        if client.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
            fetched += 1;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    fetched
}

/// Audience: two viewers (two client addresses) watch through the edge for about 3 and 9 s and
/// leave; once the edge counts them gone (`--viewer-window-secs 5`) and reports, the health
/// answer has both, an average watch time between theirs, and a retention curve from 1 down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_reports_how_long_viewers_watched() {
    if !testkit::require_tools(MEDIA_TOOLS) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProc::new(dir.path(), "audience");
    let rtmp_port = start_with_rtmp(&mut node, &["--viewer-window-secs", "5"]).await;
    let (id, key) = create_channel(&node, "Audience").await;
    let pattern = TestPattern { seconds: Some(60), realtime: true, ..TestPattern::new(320, 180) };
    let mut publisher = pattern.publish("flv", &rtmp_url(rtmp_port, &key), &dir.path().join("ffmpeg.log"));
    // Wait at the origin (the HTTP port): only the two viewers below go through the edge.
    let origin = node.url(&format!("/hls/{id}/source/index.m3u8"));
    testkit::http::wait_body(&origin, "#EXTINF", Duration::from_secs(30)).await.unwrap_or_else(|e| panic!("{e}"));
    let url = format!("http://127.0.0.1:{}/hls/{id}/source/index.m3u8", node.media_ports.2);

    let start = Instant::now();
    let short = tokio::spawn(watch(url.clone(), [127, 0, 0, 2], start + Duration::from_secs(3)));
    let long = tokio::spawn(watch(url.clone(), [127, 0, 0, 3], start + Duration::from_secs(9)));
    assert!(short.await.unwrap() > 3 && long.await.unwrap() > 10, "both viewers played");

    let path = format!("/api/channels/{id}/health");
    let deadline = Instant::now() + Duration::from_secs(40);
    let health = loop {
        let health = get_json(&node, &path).await;
        if health["audience"]["viewersLeft"].as_u64() == Some(2) {
            break health;
        }
        assert!(Instant::now() < deadline, "the two viewers never left: {health}\n{}", node.log_text());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let _ = publisher.kill().await;
    eprintln!("audience: {}", health["audience"]);
    let average = health["audience"]["averageWatchSeconds"].as_f64().unwrap();
    assert!((4.0..=8.0).contains(&average), "about (3 + 9) / 2 s: {health}");
    let retention = health["audience"]["retention"].as_array().unwrap();
    assert_eq!(retention[0]["atSeconds"], 0);
    assert_eq!(retention[0]["share"], 1.0);
    assert_eq!(retention.last().unwrap()["share"], 0.0, "nobody watched 30 s: {health}");
}
