//! A real viewer: ffmpeg publishes over RTMP to the `bitriver` binary and hls.js, in headless
//! Chromium, plays the channel's LL-HLS from the origin (another origin than the page: CORS).
//!
//! Needs ffmpeg, Chromium and the npm packages that `scripts/test.sh` installs.

mod common;

use std::time::Duration;

use common::browser::play_in_chromium;
use common::{free_ports, NodeProc};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_plays_a_live_rtmp_publish() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProc::new(dir.path(), "browser");
    let (rtmp_port, _) = free_ports();
    node.args = vec!["--rtmp-addr".into(), format!("127.0.0.1:{rtmp_port}")];
    node.start();
    node.wait_healthy(Duration::from_secs(30)).await;

    let client = reqwest::Client::new();
    let user: Value = client
        .post(node.url("/api/users"))
        .json(&json!({"displayName": "Streamer", "email": "s@example.com", "roles": ["creator"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let channel: Value = client
        .post(node.url("/api/channels"))
        .json(&json!({"ownerId": user["id"], "title": "Browser test", "tags": []}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = channel["id"].as_str().expect("channel id").to_owned();
    let key = channel["streamKey"].as_str().expect("stream key").to_owned();

    let mut publisher = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "30", "-pix_fmt", "yuv420p"])
        .args(["-c:a", "aac", "-b:a", "128k", "-t", "60", "-f", "flv"])
        .arg(format!("rtmp://127.0.0.1:{rtmp_port}/live/{key}"))
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg");

    // Wait until the playlist exists, then let a real player at it.
    let playlist = node.url(&format!("/hls/{id}/source/index.m3u8"));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(resp) = client.get(&playlist).send().await {
            if resp.status().is_success() && resp.text().await.unwrap_or_default().contains("#EXTINF") {
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline, "no playlist:\n{}", node.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let master = node.url(&format!("/hls/{id}/master.m3u8"));
    let summary = tokio::task::spawn_blocking(move || play_in_chromium(&master, 3.0)).await.unwrap();
    let _ = publisher.kill().await;
    let summary = summary.unwrap_or_else(|e| panic!("hls.js did not play: {e}\n{}", node.log_text()));
    eprintln!("playback summary: {summary}");
    assert_eq!(summary["ok"], true, "{summary}");
    assert!(summary["playedSeconds"].as_f64().unwrap_or(0.0) >= 3.0, "{summary}");
}
