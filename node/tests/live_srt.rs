//! A broadcast over SRT against the real `bitriver` binary: create a user and a channel through the
//! API (development mode), publish MPEG-TS with ffmpeg over SRT, play the HLS output with ffprobe,
//! record 10 s of it with ffmpeg, see the channel live in the API; a wrong key and a second
//! publisher over RTMP are refused; stop, see it offline.
//!
//! Needs ffmpeg and ffprobe; fails naming a missing one.

mod common;

use std::time::{Duration, Instant};

use common::live::{
    create_channel, ffprobe, publish, rtmp_url, start_with_rtmp, stop_and_wait_offline, stream, wait_playable,
    Encoding, MEDIA_TOOLS,
};
use common::{free_ports, get_json, NodeProc};
use testkit::process::exit_within;

/// ffmpeg's SRT caller URL; the stream id is written raw (ffmpeg 5.1 sends it verbatim).
fn srt_url(port: u16, key: &str) -> String {
    format!("srt://127.0.0.1:{port}?streamid=#!::r=live/{key},m=publish")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srt_publish_goes_live_and_plays_over_hls() {
    if !testkit::require_tools(MEDIA_TOOLS) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = |name: &str| dir.path().join(name);
    let mut node = NodeProc::new(dir.path(), "live");
    let (_, srt_port) = free_ports();
    let rtmp_port = start_with_rtmp(&mut node, &["--srt-addr", &format!("127.0.0.1:{srt_port}")]).await;

    let health = get_json(&node, "/healthz").await.to_string();
    assert!(health.contains("\"srt\"") && health.contains(&format!("127.0.0.1:{srt_port}")), "no srt in {health}");

    let (id, key) = create_channel(&node, "Live over SRT").await;

    // A wrong key is refused in the handshake: the encoder gives up at once.
    let wrong_key = "live_ffffffffffffffffffffffffffffffffffffffff";
    let refused_at = Instant::now();
    let mut wrong = publish("mpegts", &srt_url(srt_port, wrong_key), 5, Encoding::ZeroLatency, &log("wrong.log"));
    let status = exit_within(&mut wrong, Duration::from_secs(10), "wrong-key publisher").await;
    assert!(!status.success(), "a wrong key was accepted");
    println!("wrong key refused after {} ms", refused_at.elapsed().as_millis());
    let logs = node.log_text();
    assert!(logs.contains("SRT publish refused: unknown stream key"), "no log line for the wrong key:\n{logs}");
    assert!(!logs.contains(wrong_key), "a full stream key was logged:\n{logs}");

    let started = Instant::now();
    let mut publisher = publish("mpegts", &srt_url(srt_port, &key), 60, Encoding::ZeroLatency, &log("ffmpeg.log"));

    let media_path = wait_playable(&node, &id, started).await;

    let probe = ffprobe(&["-show_streams", &node.url(&media_path)]).await;
    let video = stream(&probe, "h264").unwrap_or_else(|| panic!("no h264: {probe}"));
    assert_eq!((video["width"].as_u64(), video["height"].as_u64()), (Some(640), Some(360)), "{probe}");
    assert!(stream(&probe, "aac").is_some(), "no aac: {probe}");

    let live = get_json(&node, &format!("/api/channels/{id}")).await;
    assert_eq!(live["liveState"], "live", "{live}");
    assert!(live["currentSessionId"].is_string(), "{live}");
    assert_eq!(node.metric("bitriver_ingest_active_publishers").await, Some(1.0));

    // Record 10 s of the live stream.
    let recording = log("out.mp4");
    let mut recorder = testkit::ffmpeg::record(&node.url(&media_path), 10, &recording, &log("recorder.log"));

    // The same key over RTMP while SRT publishes: one gate for both, so refused.
    let mut second = publish("flv", &rtmp_url(rtmp_port, &key), 5, Encoding::ZeroLatency, &log("second.log"));
    let status = exit_within(&mut second, Duration::from_secs(20), "second publisher").await;
    assert!(!status.success(), "a second publisher over RTMP was accepted");

    let status = exit_within(&mut recorder, Duration::from_secs(45), "recorder").await;
    let recorder_log = std::fs::read_to_string(log("recorder.log")).unwrap_or_default();
    assert!(status.success(), "recording failed: {recorder_log}");
    assert!(recorder_log.trim().is_empty(), "recorder reported errors:\n{recorder_log}");
    let probe = ffprobe(&["-show_format", "-show_streams", recording.to_str().unwrap()]).await;
    let duration: f64 = probe["format"]["duration"].as_str().and_then(|d| d.parse().ok()).unwrap_or(0.0);
    println!("recorded {duration:.2} s");
    assert!((9.0..=11.0).contains(&duration), "recorded {duration} s, expected ~10: {probe}");
    assert!(stream(&probe, "h264").is_some() && stream(&probe, "aac").is_some(), "{probe}");

    assert!(publisher.try_wait().unwrap().is_none(), "the SRT publisher stopped early");
    let logs = node.log_text();
    assert!(logs.contains("already live"), "no log line for the second publisher:\n{logs}");
    assert!(!logs.contains(&key), "a full stream key was logged:\n{logs}");

    // Stop publishing: the channel goes offline.
    stop_and_wait_offline(&node, &mut publisher, &id, Duration::from_secs(20)).await;
    assert_eq!(node.metric("bitriver_ingest_active_publishers").await, Some(0.0));
    assert!(node.log_text().contains("SRT publish ended"), "{}", node.log_text());
    assert_eq!(node.terminate(), Some(0), "{}", node.log_text());
}
