//! The happy path of a broadcast against the real `bitriver` binary: create a user and a channel
//! through the API (development mode), publish with ffmpeg over RTMP, play the HLS output with
//! ffprobe, see the channel live in the API, stop, see it offline.
//!
//! Skips (passes with a note) only when ffmpeg/ffprobe are not installed.

mod common;

use std::time::{Duration, Instant};

use common::live::{
    create_channel, media_tools_missing, probe_size, publish, rtmp_url, start_with_rtmp, stop_and_wait_offline,
    Encoding,
};
use common::{get_json, wait_for_body, NodeProc};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_publish_goes_live_and_plays_over_hls() {
    if media_tools_missing() {
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
    let master =
        wait_for_body(&node, &format!("/hls/{id}/master.m3u8"), "#EXT-X-STREAM-INF", started, Duration::from_secs(20))
            .await;
    let media_uri = master.lines().find(|l| !l.is_empty() && !l.starts_with('#')).expect("a variant URI").trim();
    let media_path = if media_uri.starts_with('/') { media_uri.to_owned() } else { format!("/hls/{id}/{media_uri}") };
    assert_eq!(media_path, format!("/hls/{id}/source/index.m3u8"));
    wait_for_body(&node, &media_path, "#EXTINF", started, Duration::from_secs(20)).await;
    println!("latency: publish start -> first playable playlist: {} ms", started.elapsed().as_millis());

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
