//! `bitriver-load` (bench/src/load) against the real `bitriver` binary: viewers play a live
//! channel through the edge (and stall, not crash, when the node stops answering), chat clients
//! get the messages posted, RTMP publishers replaying a file make channels live.
//!
//! `bitriver-load` is looked up next to the `bitriver` binary under test (the workspace test run
//! builds both; alone: `cargo build -p bitriver-bench --bin bitriver-load`). Needs ffmpeg.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::live::{create_channel, publish, rtmp_url, start_with_rtmp, wait_url_body, Encoding, MEDIA_TOOLS};
use common::{get_json, post_json, NodeProc, BIN};
use serde_json::Value;
use tokio::process::Command;

/// The `bitriver-load` binary beside `bitriver`, or `None` (with a note) when the run may skip.
fn load_binary() -> Option<PathBuf> {
    let path = Path::new(BIN).with_file_name("bitriver-load");
    if path.is_file() {
        return Some(path);
    }
    let why = format!("{} not built: run `cargo build -p bitriver-bench --bin bitriver-load`", path.display());
    if std::env::var("BITRIVER_ALLOW_SKIP").as_deref() == Ok("1") {
        eprintln!("SKIPPED: {why}");
        return None;
    }
    panic!("{why}");
}

/// Runs `bitriver-load ARGS --json FILE --quiet` (bounded to 60 s); returns the JSON report and
/// stdout, asserting a clean exit.
async fn run_load(bin: &Path, dir: &Path, name: &str, args: &[String]) -> (Value, String) {
    let json = dir.join(format!("{name}.json"));
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(bin).args(args).arg("--json").arg(&json).arg("--quiet").kill_on_drop(true).output(),
    )
    .await
    .expect("bitriver-load finishes within 60 s")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "bitriver-load {args:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap(), stdout)
}

fn s(v: impl ToString) -> String {
    v.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_play_through_the_edge_and_stall_when_the_node_stops_answering() {
    if !testkit::require_tools(MEDIA_TOOLS) {
        return;
    }
    let Some(load) = load_binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProc::new(dir.path(), "load-viewers");
    let rtmp_port = start_with_rtmp(&mut node, &[]).await;
    let (id, key) = create_channel(&node, "Load").await;
    let mut publisher =
        publish("flv", &rtmp_url(rtmp_port, &key), 60, Encoding::ZeroLatency, &dir.path().join("ffmpeg.log"));
    let edge = node.edge_url(&format!("/hls/{id}")).await;
    let master = format!("{edge}/master.m3u8");
    wait_url_body(&master, "#EXT-X-STREAM-INF", Duration::from_secs(25), &[&node]).await;
    wait_url_body(&format!("{edge}/source/index.m3u8"), "#EXT-X-PART", Duration::from_secs(25), &[&node]).await;

    // Straight at the origin: our bytes and requests are the origin's own, up to the requests in
    // flight at the stop (counted by one side only: at most two per viewer).
    let origin_before = origin_totals(&node).await;
    let (json, stdout) = run_load(
        &load,
        dir.path(),
        "origin",
        &[
            s("viewers"),
            s("--url"),
            node.url(&format!("/hls/{id}/master.m3u8")),
            s("--viewers"),
            s(2),
            s("--ramp"),
            s(0),
            s("--duration"),
            s(3),
            // One viewer from each loopback address.
            s("--source-addr"),
            s("127.0.0.1,127.0.0.2"),
        ],
    )
    .await;
    let origin_after = origin_totals(&node).await;
    let sum = &json["summary"];
    let (requests, bytes) = (sum["requests"].as_f64().unwrap(), sum["bytes"].as_f64().unwrap());
    let (origin_requests, origin_bytes) = (origin_after.0 - origin_before.0, origin_after.1 - origin_before.1);
    assert_eq!(sum["errors"], 0, "{stdout}");
    assert!(requests > 20.0, "{stdout}");
    assert!(sum["connections"].as_u64().unwrap() >= 4, "{stdout}");
    assert!(
        (origin_requests - requests).abs() <= requests * 0.05 + 4.0,
        "requests: ours {requests}, origin {origin_requests}\n{stdout}"
    );
    // A part in flight is at most a few hundred KB at this bitrate.
    assert!((origin_bytes - bytes).abs() <= bytes * 0.05, "bytes: ours {bytes}, origin {origin_bytes}\n{stdout}");

    let edge_before = node.metric("bitriver_edge_requests_total").await.unwrap();
    let edge_bytes_before = node.metric("bitriver_edge_body_bytes_total").await.unwrap();
    let report = dir.path().join("report");
    let viewers = 4;
    let (json, stdout) = run_load(
        &load,
        dir.path(),
        "viewers",
        &[
            s("viewers"),
            s("--url"),
            master.clone(),
            s("--viewers"),
            s(viewers),
            s("--ramp"),
            s(1),
            s("--duration"),
            s(5),
            s("--metrics"),
            node.url("/metrics"),
            s("--report"),
            report.display().to_string(),
        ],
    )
    .await;
    let edge_after = node.metric("bitriver_edge_requests_total").await.unwrap();
    let edge_bytes = node.metric("bitriver_edge_body_bytes_total").await.unwrap() - edge_bytes_before;
    let sum = &json["summary"];
    assert_eq!(sum["errors"], 0, "{stdout}");
    assert_eq!(sum["playing"], viewers, "{stdout}");
    assert!(sum["parts"].as_u64().unwrap() >= 4 * 5, "{stdout}");
    assert!(sum["hinted_parts"].as_u64().unwrap() > 0, "{stdout}");
    assert!(sum["blocking_playlists"].as_u64().unwrap() > 0, "{stdout}");
    let latency = &sum["latency_ms"];
    assert!(latency["count"].as_u64().unwrap() >= viewers as u64, "{stdout}");
    // Started PART-HOLD-BACK (0.6 s) behind the edge: latency to live is about that, not seconds.
    let p50 = latency["p50"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 < 3000.0, "{stdout}");
    assert!(stdout.contains("latency to live"), "{stdout}");
    // Our request count matches the edge's own, up to the requests in flight when the run
    // stopped (counted by the edge, abandoned by us: at most two per viewer).
    let ours = sum["requests"].as_f64().unwrap();
    let edges = edge_after - edge_before;
    assert!((edges - ours).abs() <= ours * 0.05 + 2.0 * viewers as f64, "ours {ours}, edge {edges}\n{stdout}");
    // And our bytes match the body bytes the edge sent (sendfile hits and pingora's answers
    // alike), up to those requests in flight: a part or a playlist each, well under 128 KB.
    let our_bytes = sum["bytes"].as_f64().unwrap();
    eprintln!("viewers through the edge: {our_bytes} bytes received, edge sent {edge_bytes}");
    assert!(
        (edge_bytes - our_bytes).abs() <= our_bytes * 0.05 + 2.0 * viewers as f64 * 128_000.0,
        "bytes: ours {our_bytes}, edge {edge_bytes}\n{stdout}"
    );
    // The node's CPU came through /metrics, and the report has its charts.
    assert!(json["timeline"].as_array().unwrap().iter().any(|p| p["target_cpu"].is_number()), "{json}");
    for file in ["index.html", "requests.svg", "egress.svg", "latency.svg", "stalls.svg", "cpu.svg"] {
        assert!(report.join(file).is_file(), "{file} in the report");
    }

    // The node stops answering for 3 s (SIGSTOP): every viewer stalls, requests time out, and the
    // run still ends with a summary.
    let pid = node_pid(&node);
    let load2 = load.clone();
    let dir2 = dir.path().to_path_buf();
    let master2 = master.clone();
    let run = tokio::spawn(async move {
        let args = [
            s("viewers"),
            s("--url"),
            master2,
            s("--viewers"),
            s(2),
            s("--ramp"),
            s(0),
            s("--duration"),
            s(7),
            s("--timeout"),
            s(1.5),
            s("--metrics"),
            s("none"),
        ];
        run_load(&load2, &dir2, "stalled", &args).await
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    signal(pid, "-STOP");
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal(pid, "-CONT");
    let (json, stdout) = run.await.unwrap();
    let sum = &json["summary"];
    assert!(sum["stalls"].as_u64().unwrap() >= 2, "{stdout}");
    assert_eq!(sum["viewers_stalled"], 2, "{stdout}");
    assert!(sum["errors"].as_u64().unwrap() > 0, "{stdout}");
    assert!(sum["stall_seconds"].as_f64().unwrap() > 1.0, "{stdout}");
    let _ = publisher.kill().await;
}

fn node_pid(node: &NodeProc) -> u32 {
    // The data dir's process: found through /proc, as NodeProc keeps its child private.
    let data = node.data.display().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.starts_with(BIN) && cmdline.split('\0').any(|a| a == data) {
            return pid;
        }
    }
    panic!("no process for {data}");
}

fn signal(pid: u32, sig: &str) {
    assert!(std::process::Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_clients_get_every_message_posted() {
    let Some(load) = load_binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProc::new(dir.path(), "load-chat");
    node.start();
    node.wait_healthy(Duration::from_secs(30)).await;
    let (id, _) = create_channel(&node, "Chat load").await;
    let ws = node.url(&format!("/api/channels/{id}/chat/ws")).replace("http://", "ws://");
    let (json, stdout) = run_load(
        &load,
        dir.path(),
        "chat",
        &[
            s("chat"),
            s("--url"),
            ws,
            s("--sockets"),
            s(5),
            s("--rate"),
            s(2),
            s("--ramp"),
            s(0.5),
            s("--duration"),
            s(3),
        ],
    )
    .await;
    let sum = &json["summary"];
    assert_eq!(sum["connected"], 5, "{stdout}");
    assert!(sum["posts_ok"].as_u64().unwrap() >= 5, "{stdout}");
    assert_eq!(sum["posts_failed"], 0, "{stdout}");
    assert_eq!(sum["deliveries"], sum["expected_deliveries"], "{stdout}");
    assert_eq!(sum["missed"], 0, "{stdout}");
    assert!(sum["delivery_ms"]["count"].as_u64().unwrap() >= 25, "{stdout}");
    // The messages are in the channel's history too.
    let history = get_json(&node, &format!("/api/channels/{id}/chat")).await;
    assert!(history.to_string().contains("bitriver-load "), "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_replaying_a_file_make_channels_live() {
    if !testkit::require_tools(MEDIA_TOOLS) {
        return;
    }
    let Some(load) = load_binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    // Three seconds of test pattern, encoded once; the publishers loop it.
    let flv = dir.path().join("clip.flv");
    let encoded = Command::new(testkit::tools::ffmpeg())
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "3"])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "30", "-pix_fmt", "yuv420p"])
        .args(["-c:a", "aac", "-b:a", "64k", "-f", "flv"])
        .arg(&flv)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(encoded.status.success(), "{}", String::from_utf8_lossy(&encoded.stderr));

    let mut node = NodeProc::new(dir.path(), "load-publishers");
    let rtmp_port = start_with_rtmp(&mut node, &[]).await;
    let (a, key_a) = create_channel(&node, "Publisher A").await;
    let (b, key_b) = second_channel(&node).await;
    let args = [
        s("publishers"),
        s("--rtmp"),
        format!("rtmp://127.0.0.1:{rtmp_port}/live"),
        s("--count"),
        s(2),
        s("--key"),
        format!("{key_a},{key_b}"),
        s("--file"),
        flv.display().to_string(),
        s("--duration"),
        s(7),
        s("--metrics"),
        node.url("/metrics"),
    ];
    let load2 = load.clone();
    let dir2 = dir.path().to_path_buf();
    let run = tokio::spawn(async move { run_load(&load2, &dir2, "publishers", &args).await });

    // Both go live, and past the file's end (3 s) the stream keeps going: timestamps continue
    // across loops, so segments keep coming.
    let started = Instant::now();
    for id in [&a, &b] {
        loop {
            let channel = get_json(&node, &format!("/api/channels/{id}")).await;
            if channel["liveState"] == "live" {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(15), "{id} not live: {channel}\n{}", node.log_text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for id in [&a, &b] {
        let url = node.url(&format!("/hls/{id}/source/index.m3u8"));
        let first = wait_url_body(&url, "#EXT-X-PART", Duration::from_secs(10), &[&node]).await;
        let base = media_sequence(&first);
        // Four more whole segments (1 s each) is past the end of the 3-s file.
        let deadline = Instant::now() + Duration::from_secs(12);
        loop {
            let (_, playlist) = node.get(&format!("/hls/{id}/source/index.m3u8")).await.unwrap_or_default();
            if last_segment(&playlist).is_some_and(|last| last >= base + 4) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id}: no segment {} after the loop: {playlist}\n{}",
                base + 4,
                node.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let (json, stdout) = run.await.unwrap();
    let sum = &json["summary"];
    assert_eq!(sum["live"], 2, "{stdout}");
    assert_eq!(sum["failed"], 0, "{stdout}");
    assert!(sum["tags"].as_u64().unwrap() > 2 * 5 * 30, "{stdout}");
}

fn media_sequence(playlist: &str) -> u64 {
    playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The highest `segN.m4s` listed.
fn last_segment(playlist: &str) -> Option<u64> {
    playlist.lines().filter_map(|l| l.strip_prefix("seg")?.strip_suffix(".m4s")?.parse().ok()).max()
}

/// Another creator's channel (`create_channel` takes a fixed email): (id, stream key).
async fn second_channel(node: &NodeProc) -> (String, String) {
    let user = serde_json::json!({"displayName": "Second", "email": "second@example.com", "roles": ["creator"]});
    let (status, user) = post_json(node, "/api/users", user).await;
    assert_eq!(status, 201, "{user}");
    let (status, channel) =
        post_json(node, "/api/channels", serde_json::json!({"ownerId": user["id"], "title": "Publisher B"})).await;
    assert_eq!(status, 201, "{channel}");
    (channel["id"].as_str().unwrap().to_owned(), channel["streamKey"].as_str().unwrap().to_owned())
}

/// The origin's (requests, bytes) over every object kind, from `/metrics`.
async fn origin_totals(node: &NodeProc) -> (f64, f64) {
    let (_, text) = node.get("/metrics").await.expect("/metrics");
    let sum = |name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    (sum("bitriver_origin_requests_total"), sum("bitriver_origin_bytes_total"))
}

/// bitriver-load's latency to live against hls.js's in headless Chromium, on the same stream:
/// bitriver-load starts the moment hls.js starts playing (play.mjs's `PLAY_STARTED_FILE`), with
/// the start-up hls.js took, so both join at the same live edge, and both take the wall clock minus the
/// `EXT-X-PROGRAM-DATE-TIME` of what is playing (hls.js: `Date.now() - hls.playingDate`). The
/// stream has a keyframe every part (200 ms), so where a player starts does not depend on where
/// in a GOP it joined: both start `PART-HOLD-BACK` behind the edge they saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_latency_to_live_matches_hls_js_in_chromium() {
    if !testkit::require_tools(&[MEDIA_TOOLS, testkit::tools::BROWSER].concat()) {
        return;
    }
    let Some(load) = load_binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProc::new(dir.path(), "load-latency");
    let rtmp_port = start_with_rtmp(&mut node, &[]).await;
    let (id, key) = create_channel(&node, "Latency").await;
    let pattern =
        testkit::ffmpeg::TestPattern { gop: 6, seconds: Some(90), ..testkit::ffmpeg::TestPattern::new(640, 360) };
    let mut publisher = pattern.publish("flv", &rtmp_url(rtmp_port, &key), &dir.path().join("ffmpeg.log"));
    let edge = node.edge_url(&format!("/hls/{id}")).await;
    let master = format!("{edge}/master.m3u8");
    wait_url_body(&format!("{edge}/source/index.m3u8"), "#EXT-X-PART", Duration::from_secs(25), &[&node]).await;

    let started_file = dir.path().join("hls-js-playing");
    let env = [("PLAY_STARTED_FILE", started_file.display().to_string())];
    let url = master.clone();
    let browser = tokio::task::spawn_blocking(move || common::browser::play_in_chromium_env(&url, 14.0, &env));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !started_file.exists() {
        assert!(Instant::now() < deadline && !browser.is_finished(), "hls.js never started playing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // bitriver-load gets hls.js's own start-up (first media playlist to playing: Chromium's
    // fetching, parsing and decoder start, longer on a loaded machine), so the two players
    // differ only in what is compared: where they join, and how they keep up from there.
    let startup_ms = std::fs::read_to_string(&started_file)
        .ok()
        .and_then(|text| text.lines().nth(1).and_then(|l| l.trim().parse::<u64>().ok()))
        .unwrap_or(250);
    eprintln!("hls.js start-up {startup_ms} ms, given to bitriver-load");
    let args = [
        s("viewers"),
        s("--url"),
        master.clone(),
        s("--viewers"),
        s(3),
        s("--ramp"),
        s(0),
        s("--duration"),
        s(12),
        s("--startup-ms"),
        s(startup_ms),
    ];
    let (json, stdout) = run_load(&load, dir.path(), "latency", &args).await;
    let played = browser.await.unwrap().unwrap_or_else(|e| panic!("hls.js: {e}"));
    let _ = publisher.kill().await;

    let ours = &json["summary"]["latency_ms"];
    let theirs = &played["pdtLatencyMs"];
    eprintln!(
        "latency to live, ms: bitriver-load {ours}; hls.js in Chromium {theirs} (hls.latency {} s)",
        played["latency"]
    );
    eprintln!(
        "hls.js start: currentTime {} after {} ms, first events {}",
        played["startCurrentTime"], played["timeToFirstProgressMs"], played["firstEvents"]
    );
    assert_eq!(json["summary"]["errors"], 0, "{stdout}");
    let (ours, theirs) = (ours["p50"].as_f64().unwrap(), theirs["median"].as_f64().unwrap());
    assert!(
        (ours - theirs).abs() <= 300.0,
        "bitriver-load's median latency to live {ours:.0} ms, hls.js's {theirs:.0} ms: more than 0.3 s apart\n{stdout}\n{played}"
    );
}
