//! Browser playback: headless Chromium + hls.js (low-latency mode) through `tests/browser/play.mjs`.
//!
//! Needs `/usr/bin/chromium`, node >= 20 and `tests/browser/node_modules`; `scripts/browser-setup.sh`
//! (run by `scripts/test.sh`) installs them, and a test checks with
//! `testkit::require_tools(testkit::tools::BROWSER)`. `play.mjs` also reads `PLAY_TIMEOUT_S` (default 45)
//! and `PLAY_SCREENSHOT=FILE.png` from the environment, which the child inherits.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use testkit::process::{tail_str, wait_with_output};

/// The playback script (a path under the workspace root).
pub const PLAY_MJS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/browser/play.mjs");

/// Plays `hls_url` in headless Chromium with hls.js until `video.currentTime` has advanced by at
/// least `min_seconds` of real playback (seeks do not count), or `PLAY_TIMEOUT_S` (45 s) passes.
///
/// `Ok` is `play.mjs`'s JSON summary: `ok`, `playedSeconds`, `latency` (hls.js live latency, s),
/// `targetLatency`, `levelSwitches`, `level`, `levels`, `lowLatencyPlaylist`, `partsLoaded`,
/// `fragsLoaded`, `stalls`, `hlsErrors` (non-fatal ones too), `consoleErrors`, `pageErrors`,
/// `video` (`width`, `height`, `droppedFrames`, ...), `timeToFirstProgressMs`, `hlsVersion`,
/// `browserVersion`. `Err` says why, with the summary and the script's stderr.
///
/// The page comes from play.mjs's own server on another port, so this is a cross-origin player:
/// the origin must send `Access-Control-Allow-Origin` (see [`play_in_chromium_same_origin`]).
///
/// Blocking (tens of seconds): from async code call it in `tokio::task::spawn_blocking`.
pub fn play_in_chromium(hls_url: &str, min_seconds: f64) -> Result<Value, String> {
    play(hls_url, min_seconds, false)
}

/// [`play_in_chromium`] with the stream fetched through the page's own server (a pass-through
/// proxy), so the origin needs no CORS headers; LL-HLS query parameters pass through.
pub fn play_in_chromium_same_origin(hls_url: &str, min_seconds: f64) -> Result<Value, String> {
    play(hls_url, min_seconds, true)
}

/// [`play_in_chromium`] that, after a second of playback, forces hls.js onto level `level` (an
/// index into the multivariant playlist's variants, `hls.currentLevel`); it succeeds only if the
/// player switched to that level and played on at least a second after the switch. The summary
/// adds `switchLevel` and `playedAfterSwitch` (seconds).
pub fn play_in_chromium_switching(hls_url: &str, min_seconds: f64, level: usize) -> Result<Value, String> {
    play_with(hls_url, min_seconds, false, Some(level))
}

/// [`play_in_chromium_switching`] with extra environment for play.mjs.
pub fn play_in_chromium_switching_env(
    hls_url: &str,
    min_seconds: f64,
    level: usize,
    env: &[(&str, String)],
) -> Result<Value, String> {
    play_with_env(hls_url, min_seconds, false, Some(level), env)
}

/// [`play_in_chromium`] with extra environment for play.mjs (e.g. `PLAY_STARTED_FILE`).
pub fn play_in_chromium_env(hls_url: &str, min_seconds: f64, env: &[(&str, String)]) -> Result<Value, String> {
    play_with_env(hls_url, min_seconds, false, None, env)
}

fn play(hls_url: &str, min_seconds: f64, same_origin: bool) -> Result<Value, String> {
    play_with(hls_url, min_seconds, same_origin, None)
}

fn play_with(hls_url: &str, min_seconds: f64, same_origin: bool, switch_level: Option<usize>) -> Result<Value, String> {
    play_with_env(hls_url, min_seconds, same_origin, switch_level, &[])
}

fn play_with_env(
    hls_url: &str,
    min_seconds: f64,
    same_origin: bool,
    switch_level: Option<usize>,
    env: &[(&str, String)],
) -> Result<Value, String> {
    let timeout_s: u64 = std::env::var("PLAY_TIMEOUT_S").ok().and_then(|s| s.parse().ok()).unwrap_or(45);
    let child = Command::new("node")
        .arg(PLAY_MJS)
        .arg(hls_url)
        .arg(min_seconds.to_string())
        .env("PLAY_SAME_ORIGIN", if same_origin { "1" } else { "0" })
        .env("PLAY_SWITCH_LEVEL", switch_level.map(|l| l.to_string()).unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `node {PLAY_MJS}`: {e} (run scripts/browser-setup.sh)"))?;
    // play.mjs stops itself at timeout + 30 s; this is the backstop for a wedged node process.
    let (status, stdout, stderr) = wait_with_output(child, Duration::from_secs(timeout_s + 60));
    let stderr_tail = tail_str(&stderr);

    let status = match status {
        Ok(Some(status)) => status,
        Ok(None) => {
            return Err(format!(
                "play.mjs did not finish in {}s\nstdout: {stdout}\nstderr: {stderr_tail}",
                timeout_s + 60
            ))
        }
        Err(e) => return Err(format!("waiting for play.mjs: {e}")),
    };
    let summary: Value = serde_json::from_str(stdout.trim()).map_err(|e| {
        format!("play.mjs ({status}) printed no JSON summary ({e})\nstdout: {stdout}\nstderr: {stderr_tail}")
    })?;
    if status.success() && summary["ok"] == Value::Bool(true) {
        Ok(summary)
    } else {
        let reason = summary["reason"].as_str().unwrap_or("no reason given");
        let pretty = serde_json::to_string_pretty(&summary).unwrap_or(stdout);
        Err(format!("browser playback of {hls_url} failed ({status}): {reason}\n{pretty}\nstderr: {stderr_tail}"))
    }
}

/// A WebRTC harness script (`whip.mjs`, `whep.mjs`) under `tests/browser`, run with `args` and
/// extra `env`: its JSON summary when it says `ok`, else why not (summary and stderr). Blocking.
pub fn run_rtc_script(script: &str, args: &[&str], env: &[(&str, String)]) -> Result<Value, String> {
    let path = format!("{}/../tests/browser/{script}", env!("CARGO_MANIFEST_DIR"));
    let child = Command::new("node")
        .arg(&path)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `node {path}`: {e} (run scripts/browser-setup.sh)"))?;
    let (status, stdout, stderr) = wait_with_output(child, Duration::from_secs(120));
    let stderr_tail = tail_str(&stderr);
    let status = match status {
        Ok(Some(status)) => status,
        Ok(None) => return Err(format!("{script} did not finish in 120 s\nstdout: {stdout}\nstderr: {stderr_tail}")),
        Err(e) => return Err(format!("waiting for {script}: {e}")),
    };
    let summary: Value = serde_json::from_str(stdout.trim()).map_err(|e| {
        format!("{script} ({status}) printed no JSON summary ({e})\nstdout: {stdout}\nstderr: {stderr_tail}")
    })?;
    if status.success() && summary["ok"] == Value::Bool(true) {
        Ok(summary)
    } else {
        Err(format!(
            "{script} failed ({status}): {}\nstderr: {stderr_tail}",
            serde_json::to_string_pretty(&summary).unwrap_or(stdout)
        ))
    }
}
