//! Live-path fixtures shared by the broadcast tests: a node with a known RTMP port, a channel with
//! its stream key, an ffmpeg publisher of the test pattern, and ffprobe.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::process::{Child, Command};

use super::{free_ports, post_json, NodeProc};

pub const FFMPEG: &str = "/usr/bin/ffmpeg";
pub const FFPROBE: &str = "/usr/bin/ffprobe";

/// True (after printing a skip note) when ffmpeg or ffprobe is not installed.
pub fn media_tools_missing() -> bool {
    let missing = !Path::new(FFMPEG).exists() || !Path::new(FFPROBE).exists();
    if missing {
        eprintln!("SKIPPED: {FFMPEG} or {FFPROBE} not installed");
    }
    missing
}

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

/// How the test pattern is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// x264 zerolatency: no B-frames, decode order = presentation order.
    ZeroLatency,
    /// Two B-frames, as from OBS's default x264 settings (decode order differs).
    BFrames,
}

/// ffmpeg encoding a 640x360@30 test pattern (keyframe every second) and a 440 Hz tone for
/// `seconds`, sent to `output` in container `format` (`flv` for RTMP, `mpegts` for SRT); its
/// stderr goes to `log`.
pub fn publish(format: &str, output: &str, seconds: u32, encoding: Encoding, log: &Path) -> Child {
    let tune: &[&str] = match encoding {
        Encoding::ZeroLatency => &["-tune", "zerolatency"],
        Encoding::BFrames => &["-bf", "2"],
    };
    Command::new(FFMPEG)
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-g", "30", "-pix_fmt", "yuv420p"])
        .args(tune)
        .args(["-c:a", "aac", "-b:a", "128k", "-t", &seconds.to_string(), "-f", format])
        .arg(output)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// The RTMP publish URL of `key` on a loopback port.
pub fn rtmp_url(port: u16, key: &str) -> String {
    format!("rtmp://127.0.0.1:{port}/live/{key}")
}

/// `ffprobe -v error -of json ARGS`, bounded to 30 s; panics when it fails.
pub async fn ffprobe(args: &[&str]) -> Value {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(FFPROBE).args(["-v", "error", "-of", "json"]).args(args).kill_on_drop(true).output(),
    )
    .await
    .expect("ffprobe timed out")
    .unwrap();
    assert!(out.status.success(), "ffprobe {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The first stream of `probe` (ffprobe `-show_streams` JSON) with codec `codec`.
pub fn stream<'a>(probe: &'a Value, codec: &str) -> Option<&'a Value> {
    probe["streams"].as_array()?.iter().find(|s| s["codec_name"] == codec)
}

/// ffprobe's video (width, height) of `url`, asserting it is H.264 with AAC audio.
pub async fn probe_size(url: &str) -> (u64, u64) {
    let probe = ffprobe(&["-show_streams", url]).await;
    let video = stream(&probe, "h264").unwrap_or_else(|| panic!("no h264 in {url}: {probe}"));
    assert!(stream(&probe, "aac").is_some(), "no aac in {url}: {probe}");
    (video["width"].as_u64().unwrap(), video["height"].as_u64().unwrap())
}

/// GETs the absolute `url` until it answers 200 with `needle` in the body, for up to `limit`;
/// returns the body, or panics with the logs of `nodes`.
pub async fn wait_url_body(url: &str, needle: &str, limit: Duration, nodes: &[&NodeProc]) -> String {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Ok(resp) = reqwest::get(url).await {
            if resp.status() == 200 {
                let body = resp.text().await.unwrap_or_default();
                if body.contains(needle) {
                    return body;
                }
            }
        }
        if std::time::Instant::now() >= deadline {
            let logs: Vec<String> = nodes.iter().map(|n| format!("--- {}:\n{}", n.name, n.log_text())).collect();
            panic!("{url} has no {needle:?} after {limit:?}\n{}", logs.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops `publisher` the way an encoder stops on Ctrl-C (SIGINT, then its exit within 10 s) and
/// waits up to `limit` for channel `id` to go offline in the API; panics otherwise.
pub async fn stop_and_wait_offline(node: &NodeProc, publisher: &mut Child, id: &str, limit: Duration) {
    let pid = publisher.id().expect("the publisher is running").to_string();
    std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap();
    tokio::time::timeout(Duration::from_secs(10), publisher.wait())
        .await
        .expect("ffmpeg exits within 10 s of SIGINT")
        .unwrap();
    let deadline = std::time::Instant::now() + limit;
    loop {
        let channel = super::get_json(node, &format!("/api/channels/{id}")).await;
        if channel["liveState"] == "offline" {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still live after the publisher stopped: {channel}\n{}",
            node.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
