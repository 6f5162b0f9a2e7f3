//! `whep-bench`: WebRTC (WHEP) playback beside LL-HLS on the same live stream, on loopback.
//!
//! The bench spawns the release `bitriver` binary (development mode, roles control, ingest, origin
//! and edge), creates a channel and publishes ffmpeg's test pattern over RTMP with the wall clock
//! burned into each frame (testkit's `TestPattern::clock`, x264 zerolatency, a keyframe a second).
//!
//! - **Glass-to-glass**: headless Chromium reads the burned clock from every new frame on screen,
//!   `--runs` times alternating: `tests/browser/whep.mjs` (WHEP from the node) and
//!   `tests/browser/play.mjs` (hls.js through the edge). Each run's median, then min/median/max
//!   over the runs.
//! - **CPU per viewer**: the node's CPU time (`/proc/PID/stat`) over `--seconds` with no viewer,
//!   then with N viewers for each N of `--viewers`, alternating: N WHEP sessions (str0m clients
//!   in this process, which count the frames they receive) and N LL-HLS viewers
//!   (`bitriver-load viewers` through the edge). Per viewer: (CPU with viewers - CPU without) / N.
//!
//! Prints figures; asserts nothing.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use serde_json::{json, Value};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, RtcConfig};
use testkit::ffmpeg::TestPattern;
use testkit::process::BenchNode;
use testkit::procfs::cpu_seconds_of;
use tokio::net::UdpSocket;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

const BROWSER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/browser");

#[derive(Debug, Parser)]
#[command(
    name = "whep-bench",
    about = "WHEP beside LL-HLS on one live stream: glass-to-glass latency in Chromium, node CPU per viewer",
    long_about = "Spawns the release bitriver binary, publishes a test pattern with a burned-in wall clock over \
                  RTMP, reads the clock back in headless Chromium over WHEP and over LL-HLS, then measures the \
                  node's CPU per WHEP viewer (str0m clients) and per LL-HLS viewer (bitriver-load). Prints \
                  figures; asserts nothing. Every flag has a WHEP_BENCH_* environment twin."
)]
struct Args {
    /// The bitriver binary [default: $CARGO_TARGET_DIR/release/bitriver, else target/release/bitriver].
    #[arg(long, value_name = "PATH", env = "WHEP_BENCH_BITRIVER")]
    bitriver: Option<PathBuf>,
    /// Viewer counts of the CPU runs.
    #[arg(long, value_name = "N,...", env = "WHEP_BENCH_VIEWERS", value_delimiter = ',', default_values_t = [10, 50])]
    viewers: Vec<usize>,
    /// Measured seconds of each CPU run.
    #[arg(long, env = "WHEP_BENCH_SECONDS", default_value_t = 10.0)]
    seconds: f64,
    /// Alternating runs of each measurement.
    #[arg(long, env = "WHEP_BENCH_RUNS", default_value_t = 3)]
    runs: usize,
    /// Seconds each browser plays per latency run (0: skip the browser).
    #[arg(long, env = "WHEP_BENCH_PLAY_SECONDS", default_value_t = 5.0)]
    play_seconds: f64,
    /// The `bitriver-load` binary [default: beside this binary].
    #[arg(long, value_name = "PATH", env = "WHEP_BENCH_LOAD")]
    load: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.viewers.is_empty()
        || args.viewers.contains(&0)
        || args.seconds.is_nan()
        || args.seconds <= 0.0
        || args.runs == 0
    {
        bail!("--viewers must be counts > 0, --seconds > 0, --runs > 0");
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(args))
}

/// min/median/max of `values`, formatted with `unit`.
fn spread(values: &[f64], unit: &str, digits: usize) -> String {
    if values.is_empty() {
        return "-".to_owned();
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 };
    format!("{:.digits$} / {:.digits$} / {:.digits$} {unit}", v[0], median, v[v.len() - 1])
}

async fn run(args: Args) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new().prefix("whep-bench-").tempdir()?;
    let bin = testkit::process::bitriver_binary(args.bitriver.as_deref());
    let (node, ports) = BenchNode::start_all_in_one(&bin, tmp.path(), &[]).await?;
    let (http_port, rtmp_port, edge_port) = (ports.http, ports.rtmp, ports.edge);
    let result = bench(&args, &node, http_port, rtmp_port, edge_port, tmp.path()).await;
    if result.is_err() {
        eprintln!("node log tail:\n{}", node.log_tail());
    }
    node.stop().await;
    result
}

async fn bench(
    args: &Args,
    node: &BenchNode,
    http_port: u16,
    rtmp_port: u16,
    edge_port: u16,
    dir: &Path,
) -> anyhow::Result<()> {
    let base = format!("http://127.0.0.1:{http_port}");
    let client = reqwest::Client::new();
    let user = created(
        &client,
        format!("{base}/api/users"),
        json!({"displayName": "Bench", "email": "bench@example.com", "roles": ["creator"]}),
    )
    .await?;
    let channel =
        created(&client, format!("{base}/api/channels"), json!({"ownerId": user["id"], "title": "whep-bench"})).await?;
    let (id, key) = (channel["id"].as_str().unwrap_or_default(), channel["streamKey"].as_str().unwrap_or_default());
    let pattern = TestPattern { clock: true, realtime: true, ..TestPattern::new(640, 360) };
    let log = std::fs::File::create(dir.join("ffmpeg.log"))?;
    let mut publisher = pattern
        .tokio_command("flv", format!("rtmp://127.0.0.1:{rtmp_port}/live/{key}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("spawning ffmpeg")?;
    // Live once the edge serves a media playlist with a segment.
    let hls = format!("http://127.0.0.1:{edge_port}/hls/{id}/master.m3u8");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let media = client.get(format!("{base}/hls/{id}/source/index.m3u8")).send().await;
        if let Ok(r) = media {
            if r.status().is_success() && r.text().await.unwrap_or_default().contains("#EXTINF") {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("the channel did not become playable in 30 s");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let whep = format!("{base}/whep/{id}");
    eprintln!("live: WHEP {whep}, LL-HLS {hls}; node pid {}", node.pid);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Glass-to-glass, alternating.
    let (mut whep_ms, mut hls_ms) = (Vec::new(), Vec::new());
    if args.play_seconds > 0.0 {
        for run in 0..args.runs {
            let w = browser("whep.mjs", &[&whep, &args.play_seconds.to_string()], &[("WHEP_CLOCK", "1")]).await?;
            let h = browser("play.mjs", &[&hls, &args.play_seconds.to_string()], &[("PLAY_CLOCK", "1")]).await?;
            let (w, h) = (w["clockLatencyMs"]["median"].as_f64(), h["clockLatencyMs"]["median"].as_f64());
            eprintln!("  latency run {}: WHEP {w:?} ms, LL-HLS {h:?} ms", run + 1);
            whep_ms.extend(w);
            hls_ms.extend(h);
        }
    }

    // CPU per viewer, alternating WHEP and LL-HLS at each count.
    let pid = [node.pid];
    let window = Duration::from_secs_f64(args.seconds);
    let idle = {
        let c0 = cpu_seconds_of(&pid);
        let t = Instant::now();
        tokio::time::sleep(window).await;
        (cpu_seconds_of(&pid) - c0) / t.elapsed().as_secs_f64()
    };
    let load = args.load.clone().unwrap_or_else(|| {
        std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join("bitriver-load"))).unwrap_or_default()
    });
    let mut rows = Vec::new();
    for &n in &args.viewers {
        let (mut whep_cpu, mut hls_cpu, mut fps) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..args.runs {
            let (cpu, frames) = whep_viewers(&whep, n, window, &pid).await?;
            whep_cpu.push((cpu - idle) / n as f64 * 100.0);
            fps.push(frames);
            let cpu = hls_viewers(&load, &hls, n, window, &pid).await?;
            hls_cpu.push((cpu - idle) / n as f64 * 100.0);
            eprintln!(
                "  {n} viewers: WHEP {:.3} %/viewer ({frames:.1} fps each), LL-HLS {:.3} %/viewer",
                whep_cpu.last().unwrap_or(&0.0),
                hls_cpu.last().unwrap_or(&0.0)
            );
        }
        rows.push((n, whep_cpu, hls_cpu, fps));
    }
    let _ = publisher.kill().await;

    println!();
    println!("whep-bench: one 640x360@30 RTMP publish (x264 zerolatency, AAC), loopback, 2 cores; min / median / max of {} runs", args.runs);
    println!();
    println!("| glass-to-glass (burned clock, Chromium) | WHEP | LL-HLS via the edge (hls.js) |");
    println!("| --- | --- | --- |");
    println!("| median per run | {} | {} |", spread(&whep_ms, "ms", 0), spread(&hls_ms, "ms", 0));
    println!();
    println!("node CPU with no viewer: {:.2} % of a core (the publish, packaging)", idle * 100.0);
    println!();
    println!("| viewers | node CPU per WHEP viewer | per LL-HLS viewer | WHEP frames/s per viewer |");
    println!("| --- | --- | --- | --- |");
    for (n, whep_cpu, hls_cpu, fps) in rows {
        println!("| {n} | {} | {} | {} |", spread(&whep_cpu, "%", 3), spread(&hls_cpu, "%", 3), spread(&fps, "", 1));
    }
    Ok(())
}

async fn created(http: &reqwest::Client, url: String, body: Value) -> anyhow::Result<Value> {
    let resp = http.post(&url).json(&body).send().await.with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let answer: Value = resp.json().await?;
    if status != reqwest::StatusCode::CREATED {
        bail!("POST {url}: {status} {answer}");
    }
    Ok(answer)
}

/// Runs a harness of `tests/browser` and returns its JSON summary (it must say ok).
async fn browser(script: &str, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Value> {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new("node")
            .arg(format!("{BROWSER_DIR}/{script}"))
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("{script} did not finish in 120 s"))??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or("");
    let summary: Value = serde_json::from_str(line)
        .or_else(|_| serde_json::from_str(stdout.trim()))
        .with_context(|| format!("{script} printed no summary: {stdout}"))?;
    if summary["ok"] != Value::Bool(true) {
        bail!("{script} failed: {summary}");
    }
    Ok(summary)
}

/// `n` WHEP viewers (str0m clients) connected, then the node's CPU (cores) over `window`, and
/// the video frames per second each viewer received (mean).
async fn whep_viewers(url: &str, n: usize, window: Duration, pid: &[u32]) -> anyhow::Result<(f64, f64)> {
    let stop = CancellationToken::new();
    let frames = Arc::new(AtomicU64::new(0));
    let connected = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (url, stop, frames, connected) = (url.to_owned(), stop.clone(), frames.clone(), connected.clone());
        tasks.push(tokio::spawn(async move { viewer(&url, stop, frames, connected).await }));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while connected.load(Ordering::Relaxed) < n as u64 {
        if Instant::now() > deadline {
            stop.cancel();
            bail!("only {} of {n} WHEP viewers connected in 20 s", connected.load(Ordering::Relaxed));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Past the wait for the first keyframe.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (c0, f0, t) = (cpu_seconds_of(pid), frames.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(window).await;
    let elapsed = t.elapsed().as_secs_f64();
    let cpu = (cpu_seconds_of(pid) - c0) / elapsed;
    let fps = (frames.load(Ordering::Relaxed) - f0) as f64 / elapsed / n as f64;
    stop.cancel();
    for task in tasks {
        match task.await {
            Ok(Err(error)) => eprintln!("  a viewer failed: {error:#}"),
            Err(error) => eprintln!("  a viewer panicked: {error}"),
            Ok(Ok(())) => {}
        }
    }
    // Sessions end on DELETE; let them go before the next run.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok((cpu, fps))
}

/// One WHEP viewer: a recvonly str0m session on its own UDP socket, counting video frames.
async fn viewer(
    url: &str,
    stop: CancellationToken,
    frames: Arc<AtomicU64>,
    connected: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let local = socket.local_addr()?;
    let mut rtc = RtcConfig::new().clear_codecs().enable_h264(true).enable_opus(true).build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp")?);
    let mut change = rtc.sdp_api();
    change.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, pending) = change.apply().context("an offer")?;
    let http = reqwest::Client::new();
    let response = http.post(url).header("content-type", "application/sdp").body(offer.to_sdp_string()).send().await?;
    if response.status() != reqwest::StatusCode::CREATED {
        bail!("WHEP answered {}", response.status());
    }
    let location = response.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let answer = SdpAnswer::from_sdp_string(&response.text().await?)?;
    rtc.sdp_api().accept_answer(pending, answer)?;
    let mut buf = vec![0u8; 2048];
    let mut counted = false;
    loop {
        let deadline = loop {
            match rtc.poll_output()? {
                Output::Timeout(at) => break at,
                Output::Transmit(t) => {
                    let _ = socket.send_to(&t.contents, t.destination).await;
                }
                Output::Event(Event::Connected) if !counted => {
                    counted = true;
                    connected.fetch_add(1, Ordering::Relaxed);
                }
                Output::Event(Event::MediaData(data)) if data.params.spec().codec == str0m::format::Codec::H264 => {
                    frames.fetch_add(1, Ordering::Relaxed);
                }
                Output::Event(_) => {}
            }
        };
        let input = tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let (len, source) = received?;
                match buf[..len].try_into() {
                    Ok(contents) => Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source, destination: local, contents }),
                    Err(_) => continue,
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => Input::Timeout(Instant::now()),
            _ = stop.cancelled() => break,
        };
        rtc.handle_input(input)?;
    }
    if let Some(location) = location {
        let url = reqwest::Url::parse(url)?.join(&location)?;
        let _ = http.delete(url).send().await;
    }
    Ok(())
}

/// `n` LL-HLS viewers (`bitriver-load viewers`) through the edge; the node's CPU (cores) over
/// `window` once they have all joined.
async fn hls_viewers(load: &Path, url: &str, n: usize, window: Duration, pid: &[u32]) -> anyhow::Result<f64> {
    let ramp = 2.0;
    let mut child = Command::new(load)
        .args(["viewers", "--url", url, "--viewers", &n.to_string(), "--ramp", &ramp.to_string()])
        .args(["--duration", &(window.as_secs_f64() + 4.0).to_string(), "--metrics", "none", "--quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("running {} (build it: cargo build --release -p bitriver-bench)", load.display()))?;
    tokio::time::sleep(Duration::from_secs_f64(ramp + 2.0)).await;
    let (c0, t) = (cpu_seconds_of(pid), Instant::now());
    tokio::time::sleep(window).await;
    let cpu = (cpu_seconds_of(pid) - c0) / t.elapsed().as_secs_f64();
    let _ = child.wait().await;
    Ok(cpu)
}
