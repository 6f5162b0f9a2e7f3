//! Proves the browser playback harness itself, without a `bitriver` process: ffmpeg writes a live
//! fMP4 HLS stream (1 s segments, sliding 6-segment playlist) into a temp dir, a tiny static file
//! server in this test serves it on loopback with CORS, and `play_in_chromium` must see headless
//! Chromium + hls.js play 3 s of it (then 2 s more through play.mjs's same-origin proxy). If this fails, a failing live-path browser test is the
//! harness's fault (Chromium, node, tests/browser), not the origin's. Needs ffmpeg and the
//! browser tools; fails naming a missing one.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::browser::{play_in_chromium, play_in_chromium_same_origin};

/// Kills and reaps ffmpeg when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Serves the files of `root` on 127.0.0.1 (any free port) until the test process exits.
fn serve_dir(root: PathBuf) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let root = root.clone();
            thread::spawn(move || {
                let _ = serve_one(&root, conn);
            });
        }
    });
    port
}

/// One request per connection (`Connection: close`): GET/HEAD of a file under `root`.
fn serve_one(root: &Path, mut conn: TcpStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("/");
    let path = target.split(['?', '#']).next().unwrap_or("/").trim_start_matches('/');
    let rel = Path::new(path);
    let safe = !path.is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)));
    let body = if (method == "GET" || method == "HEAD") && safe { std::fs::read(root.join(rel)).ok() } else { None };
    let cors = "Access-Control-Allow-Origin: *\r\nCache-Control: no-cache\r\nConnection: close\r\n";
    match body {
        Some(body) => {
            let content_type = match rel.extension().and_then(|e| e.to_str()) {
                Some("m3u8") => "application/vnd.apple.mpegurl",
                Some("mp4" | "m4s") => "video/mp4",
                _ => "application/octet-stream",
            };
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{cors}\r\n",
                body.len()
            )?;
            if method == "GET" {
                conn.write_all(&body)?;
            }
        }
        None => write!(conn, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n{cors}\r\n")?,
    }
    conn.flush()
}

#[test]
fn hls_js_in_headless_chromium_plays_an_ffmpeg_live_stream() {
    if !testkit::require_tools(&[&["ffmpeg"], testkit::tools::BROWSER].concat()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let playlist = dir.path().join("index.m3u8");
    let log = std::fs::File::create(dir.path().join("ffmpeg.log")).unwrap();
    let hls = ["-hls_time", "1", "-hls_list_size", "6", "-hls_flags", "delete_segments+temp_file"];
    let pattern = testkit::ffmpeg::TestPattern {
        // A safety cap: the test needs well under a minute of stream.
        seconds: Some(150),
        realtime: true,
        extra: hls.iter().chain(&["-hls_segment_type", "fmp4"]).map(|a| a.to_string()).collect(),
        ..testkit::ffmpeg::TestPattern::new(640, 360)
    };
    let ffmpeg = pattern
        .command("hls", &playlist)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn ffmpeg (scripts/setup.sh installs it)");
    let mut ffmpeg = KillOnDrop(ffmpeg);

    // Two segments in the playlist before the player starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let segments = std::fs::read_to_string(&playlist).map(|p| p.matches("#EXTINF").count()).unwrap_or(0);
        if segments >= 2 {
            break;
        }
        if let Ok(Some(status)) = ffmpeg.0.try_wait() {
            let log = std::fs::read_to_string(dir.path().join("ffmpeg.log")).unwrap_or_default();
            panic!("ffmpeg exited early ({status}): {log}");
        }
        assert!(Instant::now() < deadline, "ffmpeg wrote no HLS playlist with 2 segments in 30 s");
        thread::sleep(Duration::from_millis(100));
    }

    let port = serve_dir(dir.path().to_path_buf());
    let url = format!("http://127.0.0.1:{port}/index.m3u8");
    let summary = play_in_chromium(&url, 3.0).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{}", serde_json::to_string_pretty(&summary).unwrap());

    assert!(summary["playedSeconds"].as_f64().unwrap() >= 3.0, "{summary}");
    assert_eq!(summary["video"]["width"], 640, "{summary}");
    assert_eq!(summary["video"]["height"], 360, "{summary}");
    assert_eq!(summary["fatalHlsError"], false, "{summary}");
    assert!(summary["pageErrors"].as_array().unwrap().is_empty(), "{summary}");
    assert!(summary["hlsVersion"].is_string(), "{summary}");
    // A live stream: hls.js knows how far behind the live edge it plays.
    let latency = summary["latency"].as_f64().expect("hls.latency");
    assert!(latency > 0.0 && latency < 20.0, "{summary}");

    // The same stream through play.mjs's same-origin pass-through proxy.
    let summary = play_in_chromium_same_origin(&url, 2.0).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(summary["sameOrigin"], true, "{summary}");
    assert!(summary["playedSeconds"].as_f64().unwrap() >= 2.0, "{summary}");
    assert_eq!(summary["video"]["width"], 640, "{summary}");
}
