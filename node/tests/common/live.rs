//! Live-path fixtures shared by the broadcast tests: a node with a known RTMP port, a channel with
//! its stream key, an ffmpeg publisher of the test pattern (`testkit::ffmpeg`), and ffprobe.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::process::Signal;
use tokio::process::Child;

use super::{free_ports, post_json, wait_for_body, NodeProc};

pub use testkit::ffmpeg::{ffprobe, probe_size, stream, Encoding};

/// The tools every live test drives: a test that needs them calls
/// `if !testkit::require_tools(MEDIA_TOOLS) { return; }`.
pub const MEDIA_TOOLS: &[&str] = &["ffmpeg", "ffprobe"];

/// Starts `node` with RTMP on a free loopback port (the harness binds port 0 otherwise; the last
/// `--rtmp-addr` wins) after `extra` arguments, waits until it is healthy, returns the RTMP port.
pub async fn start_with_rtmp(node: &mut NodeProc, extra: &[&str]) -> u16 {
    let (rtmp_port, _) = free_ports();
    node.args.extend(extra.iter().map(|a| a.to_string()));
    node.args.extend(["--rtmp-addr".to_owned(), format!("127.0.0.1:{rtmp_port}")]);
    node.start();
    node.wait_healthy(Duration::from_secs(30)).await;
    rtmp_port
}

/// Creates a creator and a channel titled `title` through the API (development mode); returns
/// (channel id, stream key).
pub async fn create_channel(node: &NodeProc, title: &str) -> (String, String) {
    let (status, user) = post_json(
        node,
        "/api/users",
        json!({"displayName": "Streamer", "email": "streamer@example.com", "roles": ["creator"]}),
    )
    .await;
    assert_eq!(status, 201, "{user}");
    let (status, channel) =
        post_json(node, "/api/channels", json!({"ownerId": user["id"], "title": title, "tags": ["test"]})).await;
    assert_eq!(status, 201, "{channel}");
    let id = channel["id"].as_str().unwrap().to_owned();
    (id, channel["streamKey"].as_str().expect("streamKey in the create answer").to_owned())
}

/// ffmpeg publishing a 640x360@30 test pattern (keyframe every second) and a 440 Hz tone for
/// `seconds`, sent to `output` in container `format` (`flv` for RTMP, `mpegts` for SRT); its
/// stderr goes to `log`.
pub fn publish(format: &str, output: &str, seconds: u32, encoding: Encoding, log: &Path) -> Child {
    testkit::ffmpeg::TestPattern { seconds: Some(seconds), encoding, ..testkit::ffmpeg::TestPattern::new(640, 360) }
        .publish(format, output, log)
}

/// Waits until channel `id`'s multivariant playlist names the source media playlist and that one
/// has a segment (20 s from `started`, when the publish began); prints the latency and returns
/// the media playlist's path.
pub async fn wait_playable(node: &NodeProc, id: &str, started: Instant) -> String {
    let limit = Duration::from_secs(20);
    let master = wait_for_body(node, &format!("/hls/{id}/master.m3u8"), "#EXT-X-STREAM-INF", started, limit).await;
    let media_uri = master.lines().find(|l| !l.is_empty() && !l.starts_with('#')).expect("a variant URI").trim();
    let media_path = if media_uri.starts_with('/') { media_uri.to_owned() } else { format!("/hls/{id}/{media_uri}") };
    assert_eq!(media_path, format!("/hls/{id}/source/index.m3u8"));
    wait_for_body(node, &media_path, "#EXTINF", started, limit).await;
    println!("latency: publish start -> first playable playlist: {} ms", started.elapsed().as_millis());
    media_path
}

/// The RTMP publish URL of `key` on a loopback port.
pub fn rtmp_url(port: u16, key: &str) -> String {
    format!("rtmp://127.0.0.1:{port}/live/{key}")
}

/// GETs the absolute `url` until it answers 200 with `needle` in the body, for up to `limit`;
/// returns the body, or panics with the logs of `nodes`.
pub async fn wait_url_body(url: &str, needle: &str, limit: Duration, nodes: &[&NodeProc]) -> String {
    testkit::http::wait_body(url, needle, limit).await.unwrap_or_else(|why| {
        let logs: Vec<String> = nodes.iter().map(|n| format!("--- {}:\n{}", n.name, n.log_text())).collect();
        panic!("{why}\n{}", logs.join("\n"))
    })
}

/// Stops `publisher` the way an encoder stops on Ctrl-C (SIGINT, then its exit within 10 s) and
/// waits up to `limit` for channel `id` to go offline in the API; panics otherwise.
pub async fn stop_and_wait_offline(node: &NodeProc, publisher: &mut Child, id: &str, limit: Duration) {
    testkit::process::signal(publisher.id().expect("the publisher is running"), Signal::INT);
    tokio::time::timeout(Duration::from_secs(10), publisher.wait())
        .await
        .expect("ffmpeg exits within 10 s of SIGINT")
        .unwrap();
    let deadline = Instant::now() + limit;
    loop {
        let channel = super::get_json(node, &format!("/api/channels/{id}")).await;
        if channel["liveState"] == "offline" {
            return;
        }
        assert!(Instant::now() < deadline, "still live after the publisher stopped: {channel}\n{}", node.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
