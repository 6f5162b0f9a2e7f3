//! The happy path of a broadcast against the real `bitriver` binary: create a user and a channel
//! through the API (development mode), publish with ffmpeg over RTMP, play the HLS output with
//! ffprobe, see the channel live in the API, stop, see it offline.
//!
//! Needs ffmpeg and ffprobe; fails naming a missing one.

mod common;

use std::time::{Duration, Instant};

use common::live::{
    create_channel, probe_size, publish, rtmp_url, start_with_rtmp, stop_and_wait_offline, wait_playable, Encoding,
    MEDIA_TOOLS,
};
use common::{get_json, NodeProc};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_publish_goes_live_and_plays_over_hls() {
    if !testkit::require_tools(MEDIA_TOOLS) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProc::new(dir.path(), "live");
    let rtmp_port = start_with_rtmp(&mut node, &[]).await;

    let health = get_json(&node, "/healthz").await;
    assert!(health.to_string().contains(&format!("127.0.0.1:{rtmp_port}")), "rtmp listener not in /healthz: {health}");

    let (id, key) = create_channel(&node, "Live over RTMP").await;
    let started = Instant::now();
    let log = dir.path().join("ffmpeg.log");
    let mut publisher = publish("flv", &rtmp_url(rtmp_port, &key), 40, Encoding::ZeroLatency, &log);

    // The multivariant playlist names the media playlist; wait until that one is playable.
    let media_path = wait_playable(&node, &id, started).await;

    for path in [format!("/hls/{id}/master.m3u8"), media_path.clone()] {
        assert_eq!(probe_size(&node.url(&path)).await, (640, 360), "{path}");
    }

    let live = get_json(&node, &format!("/api/channels/{id}")).await;
    assert_eq!(live["liveState"], "live", "{live}");
    assert!(live["currentSessionId"].is_string(), "{live}");
    assert_eq!(live["playbackUrl"], format!("/hls/{id}/master.m3u8"));
    assert_eq!(node.metric("bitriver_ingest_active_publishers").await, Some(1.0));

    // Stop publishing: the channel goes offline.
    stop_and_wait_offline(&node, &mut publisher, &id, Duration::from_secs(15)).await;
    assert_eq!(node.metric("bitriver_ingest_active_publishers").await, Some(0.0));
    assert_eq!(node.terminate(), Some(0), "{}", node.log_text());
}
