//! The happy path of a broadcast against the real `bitriver` binary: create a user and a channel
//! through the API (development mode), publish with ffmpeg over RTMP, play the HLS output with
//! ffprobe, see the channel live in the API, stop, see it offline.
//!
//! Skips (passes with a note) only when ffmpeg/ffprobe are not installed.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{free_ports, get_json, post_json, wait_for_body, NodeProc};
use serde_json::{json, Value};

const FFMPEG: &str = "/usr/bin/ffmpeg";
const FFPROBE: &str = "/usr/bin/ffprobe";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_publish_goes_live_and_plays_over_hls() {
    if !Path::new(FFMPEG).exists() || !Path::new(FFPROBE).exists() {
        eprintln!("SKIPPED: {FFMPEG} or {FFPROBE} not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProc::new(dir.path(), "live");
    let (rtmp_port, _) = free_ports();
    // The harness binds RTMP on port 0; the last --rtmp-addr wins.
    node.args = vec!["--rtmp-addr".into(), format!("127.0.0.1:{rtmp_port}")];
    node.start();
    node.wait_healthy(Duration::from_secs(30)).await;

    let health = get_json(&node, "/healthz").await;
    assert!(health.to_string().contains(&format!("127.0.0.1:{rtmp_port}")), "rtmp listener not in /healthz: {health}");

    let (status, user) = post_json(
        &node,
        "/api/users",
        json!({"displayName": "Streamer", "email": "streamer@example.com", "roles": ["creator"]}),
    )
    .await;
    assert_eq!(status, 201, "{user}");
    let (status, channel) =
        post_json(&node, "/api/channels", json!({"ownerId": user["id"], "title": "Live over RTMP", "tags": ["test"]}))
            .await;
    assert_eq!(status, 201, "{channel}");
    let id = channel["id"].as_str().unwrap().to_owned();
    let key = channel["streamKey"].as_str().expect("streamKey in the create answer").to_owned();

    let started = Instant::now();
    let mut publisher = tokio::process::Command::new(FFMPEG)
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "30", "-pix_fmt", "yuv420p"])
        .args(["-c:a", "aac", "-b:a", "128k", "-t", "40", "-f", "flv"])
        .arg(format!("rtmp://127.0.0.1:{rtmp_port}/live/{key}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("ffmpeg.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

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
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(FFPROBE)
                .args(["-v", "error", "-show_streams", "-of", "json", &node.url(&path)])
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("ffprobe timed out")
        .unwrap();
        assert!(out.status.success(), "ffprobe {path}: {}", String::from_utf8_lossy(&out.stderr));
        let probe: Value = serde_json::from_slice(&out.stdout).unwrap();
        let streams = probe["streams"].as_array().unwrap();
        let video = streams.iter().find(|s| s["codec_name"] == "h264").unwrap_or_else(|| panic!("no h264: {probe}"));
        assert_eq!((video["width"].as_u64(), video["height"].as_u64()), (Some(640), Some(360)));
        assert!(streams.iter().any(|s| s["codec_name"] == "aac"), "no aac: {probe}");
    }

    let live = get_json(&node, &format!("/api/channels/{id}")).await;
    assert_eq!(live["liveState"], "live", "{live}");
    assert!(live["currentSessionId"].is_string(), "{live}");
    assert_eq!(live["playbackUrl"], format!("/hls/{id}/master.m3u8"));
    assert_eq!(node.metric("bitriver_ingest_active_publishers").await, Some(1.0));

    // Stop publishing: the channel goes offline.
    let pid = publisher.id().unwrap().to_string();
    std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap();
    tokio::time::timeout(Duration::from_secs(10), publisher.wait()).await.expect("ffmpeg exits on SIGINT").unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let channel = get_json(&node, &format!("/api/channels/{id}")).await;
        if channel["liveState"] == "offline" {
            break;
        }
        assert!(Instant::now() < deadline, "still live after the publisher stopped: {channel}\n{}", node.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(node.metric("bitriver_ingest_active_publishers").await, Some(0.0));
    assert_eq!(node.terminate(), Some(0), "{}", node.log_text());
}
