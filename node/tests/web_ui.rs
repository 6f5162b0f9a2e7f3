//! The web UI in a real browser against the real binary: headless Chromium (playwright-core)
//! runs `tests/browser/ui.mjs` scenarios against a development-mode node.
//!
//! - `live`: sign up, get the creator role from an admin in the Control Center, create a channel,
//!   copy its stream key from the page, publish it with ffmpeg over RTMP, the channel page shows
//!   the live badge and `video.currentTime` advances; screenshots at 1280 and 390 px.
//! - `chat`: a message from one signed-in viewer appears for another; the owner deletes it on the
//!   channel page and an admin deletes another from the Control Center; gone everywhere. Signing
//!   in with `next=/\evil.example` stays on the site (no open redirect).
//! - `a11y`: axe-core finds no serious or critical violations on `/`, `/channels`, `/c/{id}`,
//!   `/signup` in both themes; keyboard focus is visible.
//! - `recordings`: empty states; ffmpeg publishes for 8 s; the Control Center lists the draft,
//!   previews and publishes it; an anonymous visitor's channel page lists it and plays it; a clip
//!   cut 1..4 s in the Control Center (a range past the end shows the server's message) becomes
//!   ready, is published and plays; Delete asks to confirm; axe-core checks both views.
//!
//! Every scenario fails on any console error or uncaught exception in any page. Screenshots and
//! summaries go to `$CARGO_TARGET_DIR/ui-artifacts` (or `target/ui-artifacts`). Needs
//! `/usr/bin/chromium`, node and `tests/browser/node_modules` (`scripts/browser-setup.sh`), and
//! ffmpeg for `live` and `recordings`; fails naming a missing one.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::time::Duration;

use common::live::start_with_rtmp;
use common::NodeProc;
use testkit::process::wait_with_output;

const UI_MJS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/browser/ui.mjs");
/// Each scenario's own time limit (ui.mjs stops itself then); the test waits a little longer.
const SCENARIO_TIMEOUT_S: u64 = 90;

fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("ui-artifacts")
}

/// Starts a development-mode node (RTMP on a known port) and waits until it is healthy.
async fn start_node(dir: &Path) -> (NodeProc, u16) {
    let mut node = NodeProc::new(dir, "ui");
    let rtmp_port = start_with_rtmp(&mut node, &["--mode", "development"]).await;
    (node, rtmp_port)
}

/// Runs `node ui.mjs SCENARIO BASE` and returns its JSON summary; panics with it on failure.
fn run_scenario(scenario: &str, node: &NodeProc, rtmp_port: u16) -> serde_json::Value {
    let artifacts = artifacts_dir();
    std::fs::create_dir_all(&artifacts).unwrap();
    let child = Command::new("node")
        .arg(UI_MJS)
        .arg(scenario)
        .arg(node.url(""))
        .env("RTMP_URL", format!("rtmp://127.0.0.1:{rtmp_port}"))
        .env("FFMPEG", testkit::tools::ffmpeg())
        .env("UI_ARTIFACTS", &artifacts)
        .env("UI_TIMEOUT_S", SCENARIO_TIMEOUT_S.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `node {UI_MJS}`: {e} (run scripts/browser-setup.sh)"));
    // Backstop for a wedged node process: ui.mjs gives up by itself after SCENARIO_TIMEOUT_S.
    let (status, stdout, stderr) = wait_with_output(child, Duration::from_secs(SCENARIO_TIMEOUT_S + 20));
    let status = status.unwrap();
    eprintln!("{stderr}");
    println!("UI artifacts (screenshots, summaries): {}", artifacts.display());
    let summary: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("ui.mjs {scenario} printed no JSON ({e}); status {status:?}\n{stdout}\n{stderr}"));
    assert!(
        status.is_some_and(|s| s.success()) && summary["ok"] == true,
        "UI scenario {scenario} failed: {}\n{}\nnode log:\n{}",
        summary["reason"].as_str().unwrap_or("no reason"),
        serde_json::to_string_pretty(&summary).unwrap(),
        node.log_text()
    );
    summary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_create_channel_copy_key_publish_and_watch_live() {
    if !testkit::require_tools(&[&["ffmpeg"], testkit::tools::BROWSER].concat()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (node, rtmp_port) = start_node(dir.path()).await;
    let summary = tokio::task::spawn_blocking(move || {
        let summary = run_scenario("live", &node, rtmp_port);
        drop(node);
        summary
    })
    .await
    .unwrap();
    assert_eq!(summary["playback"]["width"], 640, "{summary}");
    let shots = summary["screenshots"].as_array().expect("screenshots");
    assert_eq!(shots.len(), 6, "{summary}");
    for shot in shots {
        let file = shot["file"].as_str().unwrap();
        let png = std::fs::read(file).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(png.starts_with(b"\x89PNG"), "{file} is not a PNG");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_message_reaches_another_browser_and_moderators_delete_it_everywhere() {
    if !testkit::require_tools(testkit::tools::BROWSER) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (node, rtmp_port) = start_node(dir.path()).await;
    tokio::task::spawn_blocking(move || run_scenario("chat", &node, rtmp_port)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_have_no_serious_accessibility_violations() {
    if !testkit::require_tools(testkit::tools::BROWSER) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (node, rtmp_port) = start_node(dir.path()).await;
    let summary = tokio::task::spawn_blocking(move || run_scenario("a11y", &node, rtmp_port)).await.unwrap();
    assert_eq!(summary["axe"].as_object().map(|o| o.len()), Some(10), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_becomes_a_draft_then_a_published_replay_with_a_clip_in_the_ui() {
    if !testkit::require_tools(&[&["ffmpeg"], testkit::tools::BROWSER].concat()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (node, rtmp_port) = start_node(dir.path()).await;
    let summary = tokio::task::spawn_blocking(move || {
        let summary = run_scenario("recordings", &node, rtmp_port);
        drop(node);
        summary
    })
    .await
    .unwrap();
    let statuses = summary["clipStatuses"].as_array().expect("clipStatuses");
    assert_eq!(statuses.last().and_then(|s| s.as_str()), Some("ready"), "{summary}");
    assert_eq!(summary["axe"].as_object().map(|o| o.len()), Some(4), "{summary}");
    let shots = summary["screenshots"].as_array().expect("screenshots");
    assert_eq!(shots.len(), 4, "{summary}");
    for shot in shots {
        let file = shot["file"].as_str().unwrap();
        let png = std::fs::read(file).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(png.starts_with(b"\x89PNG"), "{file} is not a PNG");
    }
}
