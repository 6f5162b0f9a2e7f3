//! A real viewer: ffmpeg publishes over RTMP to the `bitriver` binary and hls.js, in headless
//! Chromium, plays the channel's LL-HLS from the origin (another origin than the page: CORS).
//!
//! Needs ffmpeg, Chromium and the npm packages that `scripts/test.sh` installs; fails naming a
//! missing one.

mod common;

use std::time::{Duration, Instant};

use common::browser::play_in_chromium;
use common::live::{create_channel, publish, rtmp_url, start_with_rtmp, Encoding};
use common::{wait_for_body, NodeProc};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_plays_a_live_rtmp_publish() {
    if !testkit::require_tools(&[&["ffmpeg"], testkit::tools::BROWSER].concat()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProc::new(dir.path(), "browser");
    let rtmp_port = start_with_rtmp(&mut node, &[]).await;
    let (id, key) = create_channel(&node, "Browser test").await;
    let log = dir.path().join("ffmpeg.log");
    let mut publisher = publish("flv", &rtmp_url(rtmp_port, &key), 60, Encoding::ZeroLatency, &log);

    // Wait until the playlist exists, then let a real player at it.
    wait_for_body(&node, &format!("/hls/{id}/source/index.m3u8"), "#EXTINF", Instant::now(), Duration::from_secs(20))
        .await;
    let master = node.url(&format!("/hls/{id}/master.m3u8"));
    let summary = tokio::task::spawn_blocking(move || play_in_chromium(&master, 3.0)).await.unwrap();
    let _ = publisher.kill().await;
    let summary = summary.unwrap_or_else(|e| panic!("hls.js did not play: {e}\n{}", node.log_text()));
    eprintln!("playback summary: {summary}");
    assert_eq!(summary["ok"], true, "{summary}");
    assert!(summary["playedSeconds"].as_f64().unwrap_or(0.0) >= 3.0, "{summary}");
}
