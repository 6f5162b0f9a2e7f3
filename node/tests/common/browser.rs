//! Browser playback: headless Chromium + hls.js (low-latency mode) through `tests/browser/play.mjs`.
//!
//! Needs `/usr/bin/chromium`, node >= 20 and `tests/browser/node_modules`; `scripts/browser-setup.sh`
//! (run by `scripts/test.sh`) installs them. `play.mjs` also reads `PLAY_TIMEOUT_S` (default 45)
//! and `PLAY_SCREENSHOT=FILE.png` from the environment, which the child inherits.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

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

fn play(hls_url: &str, min_seconds: f64, same_origin: bool) -> Result<Value, String> {
    play_with(hls_url, min_seconds, same_origin, None)
}

fn play_with(hls_url: &str, min_seconds: f64, same_origin: bool, switch_level: Option<usize>) -> Result<Value, String> {
    let timeout_s: u64 = std::env::var("PLAY_TIMEOUT_S").ok().and_then(|s| s.parse().ok()).unwrap_or(45);
    let child = Command::new("node")
        .arg(PLAY_MJS)
        .arg(hls_url)
        .arg(min_seconds.to_string())
        .env("PLAY_SAME_ORIGIN", if same_origin { "1" } else { "0" })
        .env("PLAY_SWITCH_LEVEL", switch_level.map(|l| l.to_string()).unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `node {PLAY_MJS}`: {e} (run scripts/browser-setup.sh)"))?;
    // play.mjs stops itself at timeout + 30 s; this is the backstop for a wedged node process.
    let (status, stdout, stderr) = wait_script(child, Duration::from_secs(timeout_s + 60));
    let stderr_tail = tail(&stderr, 4000);

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

/// Waits for a script started with piped stdout and stderr, reading both as it runs; past `limit`
/// it is sent SIGTERM (so a browser driver can close Chromium), then killed: `Ok(None)`.
pub fn wait_script(mut child: Child, limit: Duration) -> (std::io::Result<Option<ExitStatus>>, String, String) {
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        })
    };
    let out_reader = read_all(Box::new(child.stdout.take().expect("piped stdout")));
    let err_reader = read_all(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(Some(status)),
            Ok(None) if Instant::now() >= deadline => {
                let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
                thread::sleep(Duration::from_secs(5));
                let _ = child.kill();
                let _ = child.wait();
                break Ok(None);
            }
            Ok(None) => thread::sleep(Duration::from_millis(100)),
            Err(e) => break Err(e),
        }
    };
    (status, out_reader.join().unwrap_or_default(), err_reader.join().unwrap_or_default())
}

fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}
