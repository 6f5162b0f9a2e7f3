//! `media-bench`: glass-to-glass latency of the live path on loopback, and passthrough capacity
//! beside nginx-rtmp.
//!
//! The bench pre-encodes a synthetic stream once (ffmpeg testsrc2 640x360@30 + sine, libx264
//! veryfast zerolatency GOP 30, AAC) into a temp `.flv`. It spawns the release `bitriver` binary
//! (development mode, roles control,ingest,origin,edge: no transcoding, loopback ports, temp data
//! dir) and creates a creator and channels through the API.
//!
//! - **Latency** (one stream, `ffmpeg -re -c copy` of the file): publish start → first `200`
//!   media playlist with a part (`#EXT-X-PART`) and with a full segment (`#EXTINF`); then blocking
//!   playlist reloads (`_HLS_msn`/`_HLS_part` of the preload hint) in a loop, and for each part
//!   the time between the end of its media on the wall clock (the segment's
//!   `EXT-X-PROGRAM-DATE-TIME`, which the origin anchors to the ingest clock, plus the durations of
//!   the parts up to and including it) and the moment the reload answering it arrived; then hls.js
//!   in headless Chromium (`tests/browser/play.mjs`) plays the master playlist through the edge,
//!   three runs, and reports its live latency and the glass-to-glass latency: this stream is
//!   encoded live with the wall clock burned into each frame, read back from the frame on screen.
//! - **Capacity**: for each N in `--streams`, N publishers of the same file into bitriver, then
//!   into nginx-rtmp (`hls on; hls_fragment 1s`, a worker per core), `--seconds` each, one server
//!   after the other; CPU time of the server processes from `/proc/PID/stat`. The publishers are
//!   one `bitriver-load publishers` process (real-time pacing, no encoder, no process per stream).
//! - **Ceiling**: each server alone takes `--ramp` stream counts in turn until a stream's output
//!   advances less than 90% of the measured window (it fell behind real time) or a publisher is
//!   refused; the most streams kept up is printed for both.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::Parser;
use serde_json::{json, Value};
use testkit::ffmpeg::TestPattern;
use tokio::process::{Child, Command};
use tokio::time::Instant;

const PLAY_MJS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/browser/play.mjs");

#[derive(Debug, Parser)]
#[command(
    name = "media-bench",
    about = "Live-path latency on loopback and passthrough capacity beside nginx-rtmp",
    long_about = "Spawns the release bitriver binary, publishes a pre-encoded synthetic stream over RTMP, \
                  measures time to first playlist/part, part availability lag and hls.js live latency through \
                  the edge, then CPU per passthrough stream for bitriver and nginx-rtmp and the most streams \
                  each keeps in real time. Prints figures; asserts nothing. Every flag has a MEDIA_BENCH_* \
                  environment twin."
)]
struct Args {
    /// The bitriver binary [default: $CARGO_TARGET_DIR/release/bitriver, else target/release/bitriver].
    #[arg(long, value_name = "PATH", env = "MEDIA_BENCH_BITRIVER")]
    bitriver: Option<PathBuf>,
    /// Passthrough stream counts of the capacity runs.
    #[arg(long, value_name = "N,...", env = "MEDIA_BENCH_STREAMS", value_delimiter = ',', default_values_t = [1, 4, 8])]
    streams: Vec<usize>,
    /// Measured length of each capacity run, per server, in seconds.
    #[arg(long, env = "MEDIA_BENCH_SECONDS", default_value_t = 15.0)]
    seconds: f64,
    /// Seconds each capacity run streams before it is measured: a stream's first seconds fill
    /// the server's windows (bitriver's live window in memory, nginx-rtmp's playlist of files,
    /// which it starts deleting after `hls_playlist_length`, 20 s), so the measure is of the
    /// steady state a long broadcast spends its hours in.
    #[arg(long, env = "MEDIA_BENCH_WARMUP_SECONDS", default_value_t = 25.0)]
    warmup_seconds: f64,
    /// How long the blocking-reload loop records part lags, in seconds.
    #[arg(long, env = "MEDIA_BENCH_LAG_SECONDS", default_value_t = 10.0)]
    lag_seconds: f64,
    /// Seconds of hls.js playback (0: skip the browser).
    #[arg(long, env = "MEDIA_BENCH_PLAY_SECONDS", default_value_t = 10.0)]
    play_seconds: f64,
    /// Stream counts of the ceiling search: each server takes them in turn until one of its
    /// streams falls behind real time (`--ramp` with no value: skip the search).
    #[arg(long, value_name = "N,...", env = "MEDIA_BENCH_RAMP", value_delimiter = ',', num_args = 0.., default_values_t = [16, 32, 64, 128, 256, 384, 512])]
    ramp: Vec<usize>,
    /// Measured length of each step of the ceiling search, per server, in seconds.
    #[arg(long, env = "MEDIA_BENCH_RAMP_SECONDS", default_value_t = 10.0)]
    ramp_seconds: f64,
    /// The `bitriver-load` binary that plays the publishers [default: beside this binary].
    #[arg(long, value_name = "PATH", env = "MEDIA_BENCH_LOAD")]
    load: Option<PathBuf>,
    /// Skip the nginx-rtmp reference.
    #[arg(long, env = "MEDIA_BENCH_NO_NGINX")]
    no_nginx: bool,
    /// A flag for the bitriver node, e.g. `--node-arg=--rtmp-read-merge-ms=20` (repeatable).
    #[arg(long = "node-arg", value_name = "ARG", allow_hyphen_values = true)]
    node_args: Vec<String>,
    /// Directory for temp files [default: the system temp dir].
    #[arg(long, value_name = "DIR", env = "MEDIA_BENCH_DIR")]
    dir: Option<PathBuf>,
    /// What the capacity runs ask of both servers besides HLS. `on`: each also records every
    /// stream whole (bitriver its recordings, as by default; nginx-rtmp `record all`, FLV).
    /// `off`: HLS only (bitriver `--record-renditions off`, nginx-rtmp `record off`).
    #[arg(long, value_enum, env = "MEDIA_BENCH_RECORDING", default_value_t = Recording::On)]
    recording: Recording,
}

/// `--recording`: the same work asked of both servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Recording {
    On,
    Off,
}

impl Args {
    fn bitriver_path(&self) -> PathBuf {
        testkit::process::bitriver_binary(self.bitriver.as_deref())
    }

    fn load_path(&self) -> PathBuf {
        self.load.clone().unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|dir| dir.join("bitriver-load")))
                .unwrap_or_else(|| PathBuf::from("bitriver-load"))
        })
    }
}

use testkit::process::{free_port, tail, tail_str, BenchNode};
use testkit::procfs::{cpu_seconds, cpu_seconds_of, Pid};

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.streams.is_empty()
        || args.streams.contains(&0)
        || args.seconds.is_nan()
        || args.seconds <= 0.0
        || args.warmup_seconds.is_nan()
        || args.warmup_seconds < 0.0
        || args.lag_seconds.is_nan()
        || args.lag_seconds <= 0.0
    {
        bail!("--streams must be counts > 0, --seconds and --lag-seconds > 0, --warmup-seconds >= 0");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let tmp = match &args.dir {
        Some(d) => tempfile::Builder::new().prefix("media-bench-").tempdir_in(d)?,
        None => tempfile::Builder::new().prefix("media-bench-").tempdir()?,
    };
    let create_us = file_create_us(tmp.path())?;
    let flv = tmp.path().join("source.flv");
    eprintln!("pre-encoding 20 s of testsrc2 640x360@30 + sine into {} ...", flv.display());
    encode(&flv).await?;
    let file_kbps = std::fs::metadata(&flv)?.len() as f64 * 8.0 / 20.0 / 1000.0;

    let bin = args.bitriver_path();
    let mut node_args = args.node_args.clone();
    if args.recording == Recording::Off {
        node_args.push("--record-renditions=off".into());
    }
    let node = Node::start(&bin, tmp.path(), &node_args).await?;
    eprintln!("  node pid {} on http://127.0.0.1:{} rtmp :{}", node.pid, node.http_port, node.rtmp_port);
    let result = bench(&args, &node, &flv, tmp.path()).await;
    if result.is_err() {
        eprintln!("node log tail:\n{}", node.node.log_tail());
    }
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            node.stop().await;
            return Err(e);
        }
    };
    node.stop().await;
    report.print(&args, file_kbps, create_us, tmp.path(), started);
    Ok(())
}

async fn encode(flv: &Path) -> anyhow::Result<()> {
    let pattern = TestPattern {
        seconds: Some(20),
        // The last -b:a wins: 96 kb/s audio, as the published figures were measured with.
        extra: ["-keyint_min", "30", "-sc_threshold", "0", "-b:v", "1000k", "-b:a", "96k", "-ar", "48000"]
            .map(String::from)
            .to_vec(),
        ..TestPattern::new(640, 360)
    };
    let status =
        Command::from(pattern.command("flv", flv)).status().await.context("running ffmpeg (is it installed?)")?;
    if !status.success() {
        bail!("ffmpeg pre-encode failed: {status}");
    }
    Ok(())
}

/// The test pattern encoded live (as [`encode`] does) with the wall clock burned in
/// (`TestPattern::clock`), published to `url`; killed on drop.
fn publish_with_clock(url: &str) -> anyhow::Result<Child> {
    let pattern = TestPattern {
        realtime: true,
        clock: true,
        extra: ["-keyint_min", "30", "-sc_threshold", "0", "-b:v", "1000k", "-b:a", "96k", "-ar", "48000"]
            .map(String::from)
            .to_vec(),
        ..TestPattern::new(640, 360)
    };
    pattern
        .tokio_command("flv", url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawning the ffmpeg publisher")
}

async fn stop_all(children: Vec<Child>) {
    for mut c in children {
        let _ = c.kill().await;
    }
}

// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Report {
    first_part_s: Option<f64>,
    first_segment_s: Option<f64>,
    part_target_s: Option<f64>,
    lags_ms: Vec<f64>,
    lag_errors: u64,
    /// hls.js runs (play.mjs summaries), with the burned clock read back.
    plays: Vec<Value>,
    play_error: Option<String>,
    rows: Vec<CapRow>,
    ramp: Vec<RampRow>,
    nginx_note: Option<String>,
}

impl Report {
    /// The ceiling search of `server` stops at its first step with a stream behind.
    fn ceiling_done(&self, server: &str) -> bool {
        self.ramp.iter().any(|r| r.server == server && !r.kept_up())
    }

    /// The most streams `server` kept in real time, and whether a larger step failed.
    fn ceiling(&self, server: &str) -> Option<(usize, bool)> {
        let rows: Vec<&RampRow> = self.ramp.iter().filter(|r| r.server == server).collect();
        let kept = rows.iter().filter(|r| r.kept_up()).map(|r| r.streams).max().unwrap_or(0);
        (!rows.is_empty()).then(|| (kept, rows.iter().any(|r| !r.kept_up())))
    }
}

struct CapRow {
    server: &'static str,
    streams: usize,
    secs: f64,
    cpu: f64,
    output_ok: usize,
}

/// One step of the ceiling search.
#[derive(Debug, Clone)]
struct RampRow {
    server: &'static str,
    streams: usize,
    secs: f64,
    cpu: f64,
    /// Media seconds the slowest stream's output advanced over the window.
    slowest: f64,
    /// Streams whose output advanced less than 90% of the window.
    behind: usize,
    /// Publishers the load generator kept live to the end.
    live: usize,
    /// The load generator's send lag (how late it wrote a tag), p99, ms.
    send_lag_p99: Option<f64>,
    /// Why the first publisher that failed failed.
    failure: Option<String>,
}

impl RampRow {
    fn kept_up(&self) -> bool {
        self.behind == 0 && self.live == self.streams
    }
}

async fn bench(args: &Args, node: &Node, flv: &Path, tmp: &Path) -> anyhow::Result<Report> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build()?;
    let base = format!("http://127.0.0.1:{}", node.http_port);
    let owner = created(
        &http,
        format!("{base}/api/users"),
        json!({"displayName": "Bench Owner", "email": "owner@bench.example", "roles": ["creator"]}),
    )
    .await?;
    let max_n = args.streams.iter().chain(&args.ramp).copied().max().unwrap_or(1);
    let mut channels = Vec::new(); // (id, stream key)
    for i in 0..=max_n {
        let ch = created(
            &http,
            format!("{base}/api/channels"),
            json!({"ownerId": owner["id"], "title": format!("Media bench {i}"), "tags": ["bench"]}),
        )
        .await?;
        let id = ch["id"].as_str().context("no channel id")?.to_owned();
        let key = ch["streamKey"].as_str().context("no streamKey")?.to_owned();
        channels.push((id, key));
    }
    let mut report = Report::default();

    // ----- latency -----
    let (id, key) = &channels[0];
    let media = format!("{base}/hls/{id}/source/index.m3u8");
    eprintln!("latency: publishing to channel {id} ...");
    let t0 = Instant::now();
    // Encoded live, with the wall clock burned into each frame (read back in the browser).
    let publisher = publish_with_clock(&format!("rtmp://127.0.0.1:{}/live/{key}", node.rtmp_port))?;
    let mut last_body = String::new();
    while t0.elapsed() < Duration::from_secs(20) && (report.first_part_s.is_none() || report.first_segment_s.is_none())
    {
        if let Ok(resp) = http.get(&media).send().await {
            if resp.status().is_success() {
                let body = resp.text().await.unwrap_or_default();
                let at = t0.elapsed().as_secs_f64();
                if report.first_part_s.is_none() && body.contains("#EXT-X-PART:") {
                    report.first_part_s = Some(at);
                }
                if report.first_segment_s.is_none() && body.contains("#EXTINF") {
                    report.first_segment_s = Some(at);
                }
                last_body = body;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    report.part_target_s = attr(&last_body, "#EXT-X-PART-INF:", "PART-TARGET").and_then(|v| v.parse().ok());
    // Blocking reloads for the hinted part, one after the other.
    let lag_until = Instant::now() + Duration::from_secs_f64(args.lag_seconds);
    let mut body = last_body;
    let mut last_measured: Option<(u64, u64)> = None;
    while Instant::now() < lag_until {
        let Some((msn, part)) = preload_hint(&body) else {
            report.lag_errors += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            body = http.get(&media).send().await?.text().await?;
            continue;
        };
        let resp = http.get(format!("{media}?_HLS_msn={msn}&_HLS_part={part}")).send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        let arrived = unix_ms_f64();
        if !status.is_success() {
            report.lag_errors += 1;
            continue;
        }
        // A hint for the part after a segment's last one is answered by the next segment's first
        // part (the keyframe closed the segment): then the newest listed part is the one that
        // woke the request.
        let ends = part_ends(&text);
        let newest = ends.iter().max_by_key(|(k, _)| **k).map(|(k, e)| (*k, *e));
        match ends.get(&(msn, part)).map(|e| ((msn, part), *e)).or(newest) {
            Some((key, end)) if last_measured.is_none_or(|l| key > l) => {
                report.lags_ms.push(arrived - end);
                last_measured = Some(key);
            }
            _ => report.lag_errors += 1,
        }
        body = text;
    }
    // hls.js in Chromium.
    if args.play_seconds > 0.0 {
        // Through the edge, as viewers play.
        let master = format!("http://127.0.0.1:{}/hls/{id}/master.m3u8", node.edge_port);
        for run in 1..=3 {
            eprintln!("latency: hls.js playing {master} for {} s (run {run} of 3) ...", args.play_seconds);
            match play(&master, args.play_seconds).await {
                Ok(v) => report.plays.push(v),
                Err(e) => report.play_error = Some(e.to_string()),
            }
        }
    }
    stop_all(vec![publisher]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // ----- capacity -----
    let nginx = if args.no_nginx {
        report.nginx_note = Some("skipped (--no-nginx)".into());
        None
    } else {
        match Nginx::start(tmp, args.recording).await {
            Ok(n) => Some(n),
            Err(e) => {
                report.nginx_note =
                    Some(format!("not run: {e:#} (install with `apt-get install -y nginx libnginx-mod-rtmp`)"));
                None
            }
        }
    };
    let load = args.load_path();
    let run_for = Duration::from_secs_f64(args.seconds);
    let warmup = args.warmup_seconds;
    {
        // Idle baseline: both servers with no stream, over the same 3 s.
        let mut pids = vec![node.pid];
        let ng_pids = nginx.as_ref().map(Nginx::pids).unwrap_or_default();
        pids.extend(&ng_pids);
        let c0: Vec<f64> = pids.iter().map(|p| cpu_seconds(Pid::Of(*p)).unwrap_or(0.0)).collect();
        let t = Instant::now();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let secs = t.elapsed().as_secs_f64();
        let d: Vec<f64> = pids.iter().zip(&c0).map(|(p, c)| cpu_seconds(Pid::Of(*p)).unwrap_or(0.0) - c).collect();
        report.rows.push(CapRow { server: "bitriver", streams: 0, secs, cpu: d[0], output_ok: 0 });
        if nginx.is_some() {
            report.rows.push(CapRow { server: "nginx-rtmp", streams: 0, secs, cpu: d[1..].iter().sum(), output_ok: 0 });
        }
    }
    let bitriver_rtmp = format!("rtmp://127.0.0.1:{}/live", node.rtmp_port);
    let keys: Vec<String> = channels[1..].iter().map(|(_, key)| key.clone()).collect();
    for &n in &args.streams {
        eprintln!("capacity: {n} stream(s) into bitriver for {} s ...", args.seconds);
        let pubs = Publishers::start(&load, &bitriver_rtmp, &keys[..n], flv, warmup + args.seconds + 2.0, tmp)?;
        tokio::time::sleep(Duration::from_secs_f64(1.0 + warmup)).await;
        let (cpu, secs) = measure(&[node.pid], run_for).await;
        let mut ok = 0;
        for (id, _) in &channels[1..=n] {
            if let Ok(resp) = http.get(format!("{base}/hls/{id}/source/index.m3u8")).send().await {
                if resp.status().is_success() && resp.text().await.unwrap_or_default().contains("#EXT-X-PART:") {
                    ok += 1;
                }
            }
        }
        pubs.finish().await;
        report.rows.push(CapRow { server: "bitriver", streams: n, secs, cpu, output_ok: ok });
        tokio::time::sleep(Duration::from_secs(1)).await;

        if let Some(ng) = &nginx {
            eprintln!("capacity: {n} stream(s) into nginx-rtmp for {} s ...", args.seconds);
            let ng_keys: Vec<String> = (0..n).map(|i| format!("n{n}s{i}")).collect();
            let pubs = Publishers::start(&load, &ng.rtmp(), &ng_keys, flv, warmup + args.seconds + 2.0, tmp)?;
            tokio::time::sleep(Duration::from_secs_f64(1.0 + warmup)).await;
            let pids = ng.pids();
            let (cpu, secs) = measure(&pids, run_for).await;
            let ok = ng_keys.iter().filter(|k| ng.hls.join(format!("{k}.m3u8")).is_file()).count();
            pubs.finish().await;
            report.rows.push(CapRow { server: "nginx-rtmp", streams: n, secs, cpu, output_ok: ok });
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    // ----- ceiling: the most streams each server keeps in real time -----
    let window = Duration::from_secs_f64(args.ramp_seconds);
    for &n in &args.ramp {
        if report.ceiling_done("bitriver") {
            break;
        }
        eprintln!("ceiling: {n} stream(s) into bitriver ...");
        let playlists: Vec<String> =
            channels[1..=n].iter().map(|(id, _)| format!("{base}/hls/{id}/source/index.m3u8")).collect();
        let (http, playlists) = (&http, &playlists);
        let step = ramp_step(&load, &bitriver_rtmp, &keys[..n], flv, tmp, window, &[node.pid], || async move {
            let mut ends = Vec::with_capacity(n);
            for url in playlists.iter() {
                let body = match http.get(url).send().await {
                    Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
                    _ => String::new(),
                };
                ends.push(part_ends(&body).into_values().reduce(f64::max).map(|ms| ms / 1000.0));
            }
            ends
        })
        .await?;
        report.ramp.push(RampRow { server: "bitriver", ..step });
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if let Some(ng) = &nginx {
        for &n in &args.ramp {
            if report.ceiling_done("nginx-rtmp") {
                break;
            }
            eprintln!("ceiling: {n} stream(s) into nginx-rtmp ...");
            let ng_keys: Vec<String> = (0..n).map(|i| format!("r{n}s{i}")).collect();
            let files: Vec<PathBuf> = ng_keys.iter().map(|k| ng.hls.join(format!("{k}.m3u8"))).collect();
            let pids = ng.pids();
            // nginx's playlists hold whole segments only: media advanced = the segments completed.
            let mut seen: Vec<BTreeMap<u64, f64>> = vec![BTreeMap::new(); n];
            let seen = std::sync::Mutex::new(&mut seen);
            let (seen, files) = (&seen, &files);
            let step = ramp_step(&load, &ng.rtmp(), &ng_keys, flv, tmp, window, &pids, || async move {
                let mut seen = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                files
                    .iter()
                    .zip(seen.iter_mut())
                    .map(|(f, acc)| {
                        acc.extend(segment_durations(&std::fs::read_to_string(f).unwrap_or_default()));
                        (!acc.is_empty()).then(|| acc.values().sum::<f64>())
                    })
                    .collect()
            })
            .await?;
            report.ramp.push(RampRow { server: "nginx-rtmp", ..step });
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    if let Some(ng) = nginx {
        ng.stop().await;
    }
    Ok(report)
}

/// One step of the ceiling search: `keys.len()` publishers, 3 s to settle, then `window`
/// measured. `media_ends` gives, per stream, how far its output has got in media seconds; a
/// stream keeps up when its output advanced at least 90% of the window (nginx completes whole
/// 1 s segments, so its figure moves in steps of a second).
#[allow(clippy::too_many_arguments)]
async fn ramp_step<F, Fut>(
    load: &Path,
    rtmp: &str,
    keys: &[String],
    flv: &Path,
    tmp: &Path,
    window: Duration,
    pids: &[u32],
    mut media_ends: F,
) -> anyhow::Result<RampRow>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<Option<f64>>>,
{
    let settle = Duration::from_secs(3);
    let pubs = Publishers::start(load, rtmp, keys, flv, (settle + window).as_secs_f64() + 2.0, tmp)?;
    tokio::time::sleep(settle).await;
    let before = media_ends().await;
    let (cpu, secs) = measure(pids, window).await;
    let after = media_ends().await;
    let summary = pubs.finish().await;
    let advanced: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| match (b, a) {
            (Some(b), Some(a)) => a - b,
            _ => 0.0,
        })
        .collect();
    let slowest = advanced.iter().copied().reduce(f64::min).unwrap_or(0.0);
    let behind = advanced.iter().filter(|a| **a < 0.9 * secs).count();
    let live = summary.as_ref().and_then(|s| s["summary"]["live"].as_u64()).unwrap_or(0) as usize;
    let send_lag_p99 = summary.as_ref().and_then(|s| s["summary"]["send_lag_ms"]["p99"].as_f64());
    let failure = match &summary {
        Some(s) => s["summary"]["first_failure"].as_str().map(str::to_owned),
        None => Some("the load generator wrote no report".into()),
    };
    Ok(RampRow { server: "", streams: keys.len(), secs, cpu, slowest, behind, live, send_lag_p99, failure })
}

/// Durations of the complete segments of a media playlist, by media sequence number.
fn segment_durations(playlist: &str) -> BTreeMap<u64, f64> {
    let mut out = BTreeMap::new();
    let Some(mut seq) = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
    else {
        return out;
    };
    for line in playlist.lines() {
        if let Some(v) = line.strip_prefix("#EXTINF:") {
            if let Ok(d) = v.split(',').next().unwrap_or("").trim().parse::<f64>() {
                out.insert(seq, d);
            }
            seq += 1;
        }
    }
    out
}

/// `bitriver-load publishers`: one process replays the file as every publisher (no encoder,
/// no process per stream), so the load generator costs the same whichever server it feeds.
struct Publishers {
    child: Child,
    json: PathBuf,
}

impl Publishers {
    fn start(load: &Path, rtmp: &str, keys: &[String], flv: &Path, seconds: f64, tmp: &Path) -> anyhow::Result<Self> {
        static RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let keys_file = tmp.join(format!("keys-{run}.txt"));
        std::fs::write(&keys_file, keys.join("\n"))?;
        let json = tmp.join(format!("publishers-{run}.json"));
        let child = Command::new(load)
            .args(["publishers", "--quiet", "--metrics", "none", "--rtmp", rtmp])
            .args(["--count", &keys.len().to_string(), "--duration", &seconds.to_string()])
            .arg("--keys-file")
            .arg(&keys_file)
            .arg("--file")
            .arg(flv)
            .arg("--json")
            .arg(&json)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {} (cargo build --release -p bitriver-bench)", load.display()))?;
        Ok(Publishers { child, json })
    }

    /// Waits for the run to end; its JSON report, if it wrote one.
    async fn finish(mut self) -> Option<Value> {
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
        serde_json::from_str(&std::fs::read_to_string(&self.json).ok()?).ok()
    }
}

/// CPU seconds used by `pids` over `run_for`, and the wall seconds measured.
async fn measure(pids: &[u32], run_for: Duration) -> (f64, f64) {
    let c0 = cpu_seconds_of(pids);
    let t = Instant::now();
    tokio::time::sleep(run_for).await;
    (cpu_seconds_of(pids) - c0, t.elapsed().as_secs_f64())
}

async fn play(url: &str, seconds: f64) -> anyhow::Result<Value> {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new("node")
            .arg(PLAY_MJS)
            .arg(url)
            .arg(seconds.to_string())
            .env("PLAY_CLOCK", "1")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("play.mjs did not finish in 120 s")??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or("");
    serde_json::from_str(line).or_else(|_| serde_json::from_str(stdout.trim())).with_context(|| {
        format!(
            "play.mjs ({}) printed no JSON summary: {}",
            out.status,
            tail_str(&String::from_utf8_lossy(&out.stderr))
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Playlist parsing
// ---------------------------------------------------------------------------------------------

/// `(msn, part)` of `#EXT-X-PRELOAD-HINT:TYPE=PART,URI="partM.I.m4s"`.
fn preload_hint(playlist: &str) -> Option<(u64, u64)> {
    let uri = attr(playlist, "#EXT-X-PRELOAD-HINT:", "URI")?;
    part_uri(&uri)
}

fn part_uri(uri: &str) -> Option<(u64, u64)> {
    let name = uri.rsplit('/').next()?.strip_prefix("part")?.strip_suffix(".m4s")?;
    let (m, i) = name.split_once('.')?;
    Some((m.parse().ok()?, i.parse().ok()?))
}

/// Attribute `name` of the first line starting with `tag`, quotes removed.
fn attr(playlist: &str, tag: &str, name: &str) -> Option<String> {
    let line = playlist.lines().find(|l| l.starts_with(tag))?;
    line[tag.len()..].split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == name).then(|| v.trim_matches('"').to_owned())
    })
}

/// Wall-clock end (Unix ms) of every listed part: its segment's program date time plus the
/// durations of the segment's parts up to and including it.
fn part_ends(playlist: &str) -> HashMap<(u64, u64), f64> {
    let mut ends = HashMap::new();
    let (mut pdt, mut offset) = (None::<f64>, 0.0);
    for line in playlist.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            pdt = parse_iso8601_ms(v.trim());
            offset = 0.0;
        } else if let Some(rest) = line.strip_prefix("#EXT-X-PART:") {
            let mut dur = None;
            let mut uri = None;
            for kv in rest.split(',') {
                if let Some((k, v)) = kv.split_once('=') {
                    match k {
                        "DURATION" => dur = v.parse::<f64>().ok(),
                        "URI" => uri = part_uri(v.trim_matches('"')),
                        _ => {}
                    }
                }
            }
            if let (Some(start), Some(d), Some(key)) = (pdt, dur, uri) {
                offset += d * 1000.0;
                ends.insert(key, start + offset);
            }
        }
    }
    ends
}

/// `2023-11-14T22:13:22.000Z` → Unix ms.
fn parse_iso8601_ms(s: &str) -> Option<f64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (h, min) = (t.next()?.parse::<i64>().ok()?, t.next()?.parse::<i64>().ok()?);
    let sec: f64 = t.next()?.parse().ok()?;
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + min * 60) as f64 + sec) * 1000.0)
}

fn unix_ms_f64() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// The spawned `bitriver` node (control, ingest and origin roles); killed when dropped.
struct Node {
    node: BenchNode,
    pid: u32,
    http_port: u16,
    rtmp_port: u16,
    edge_port: u16,
}

impl Node {
    async fn start(bin: &Path, dir: &Path, extra: &[String]) -> anyhow::Result<Node> {
        // The ceiling search goes past the default of 256 publishers.
        let mut flags = vec!["--rtmp-max-connections", "4096"];
        flags.extend(extra.iter().map(String::as_str));
        let (node, ports) = BenchNode::start_all_in_one(bin, dir, &flags).await?;
        let (http_port, rtmp_port, edge_port) = (ports.http, ports.rtmp, ports.edge);
        Ok(Node { pid: node.pid, node, http_port, rtmp_port, edge_port })
    }

    async fn stop(self) {
        self.node.stop().await;
    }
}

/// nginx workers: one per core, as bitriver's runtime has a thread per core (a publisher is served
/// by the worker that accepted it; with no viewer no `rtmp_auto_push` between workers is needed).
fn nginx_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A private nginx with the RTMP module: `daemon off; master_process on;` a worker per core.
struct Nginx {
    child: Child,
    master: u32,
    port: u16,
    hls: PathBuf,
}

impl Nginx {
    async fn start(tmp: &Path, recording: Recording) -> anyhow::Result<Nginx> {
        let module = Path::new("/usr/lib/nginx/modules/ngx_rtmp_module.so");
        if !module.is_file() {
            bail!("{} missing", module.display());
        }
        let dir = tmp.join("nginx");
        let hls = dir.join("hls");
        let flv = dir.join("record");
        std::fs::create_dir_all(dir.join("logs"))?;
        std::fs::create_dir_all(&hls)?;
        std::fs::create_dir_all(&flv)?;
        let record = match recording {
            Recording::On => format!("record all; record_path {}; record_unique on;", flv.display()),
            Recording::Off => "record off;".to_owned(),
        };
        // Workers run as nobody when started as root.
        use std::os::unix::fs::PermissionsExt as _;
        for d in [tmp, dir.as_path(), hls.as_path(), flv.as_path()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777))?;
        }
        let port = free_port(false)?;
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "load_module {module};\ndaemon off;\nmaster_process on;\nworker_processes {workers};\n\
                 error_log {d}/logs/error.log warn;\npid {d}/nginx.pid;\nevents {{ worker_connections 1024; }}\n\
                 rtmp {{\n  server {{\n    listen 127.0.0.1:{port};\n    chunk_size 4096;\n    application live {{\n      \
                 live on; {record}\n      hls on; hls_path {h}; hls_fragment 1s; hls_playlist_length 20s;\n    }}\n  }}\n}}\n",
                module = module.display(),
                workers = nginx_workers(),
                d = dir.display(),
                h = hls.display()
            ),
        )?;
        let mut child = Command::new("nginx")
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("logs/error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("spawning nginx")?;
        let master = child.id().context("nginx exited at once")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Some(status) = child.try_wait()? {
                bail!("nginx exited with {status}: {}", tail(&dir.join("logs/error.log")));
            }
            if Instant::now() > deadline {
                bail!("nginx did not listen on {port} in 10 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Nginx { child, master, port, hls })
    }

    /// The application URL publishers connect to.
    fn rtmp(&self) -> String {
        format!("rtmp://127.0.0.1:{}/live", self.port)
    }

    /// The master and its children (the workers, and any cache helpers).
    fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.master];
        pids.extend(testkit::procfs::children(self.master));
        pids
    }

    async fn stop(mut self) {
        testkit::process::signal(self.master, testkit::process::Signal::QUIT);
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
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

// ---------------------------------------------------------------------------------------------

fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Wall time of creating (and writing 4 KB to) a new file under `dir`, in microseconds: the
/// median of 200. Some file systems make it costly (an ext4 without a journal scans for
/// recently deleted inodes on every create).
fn file_create_us(dir: &Path) -> anyhow::Result<f64> {
    let probe = dir.join("create-probe");
    std::fs::create_dir_all(&probe)?;
    let mut took = Vec::with_capacity(200);
    for i in 0..200 {
        let started = Instant::now();
        std::fs::write(probe.join(format!("f{i}")), [0u8; 4096])?;
        took.push(started.elapsed().as_secs_f64() * 1e6);
    }
    std::fs::remove_dir_all(&probe)?;
    took.sort_by(f64::total_cmp);
    Ok(took[took.len() / 2])
}

fn opt_s(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.3} s"))
}

impl Report {
    fn print(&self, args: &Args, file_kbps: f64, create_us: f64, dir: &Path, started: Instant) {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let load = testkit::procfs::load_average();
        println!();
        println!(
            "media-bench: {cores} CPU cores; load average {}; source 640x360@30 GOP 30 (1 s) + AAC, {file_kbps:.0} kb/s, \
             replayed by bitriver-load publishers (one process, real-time pacing, no encoder)",
            load
        );
        // Both servers write where --dir points (bitriver its recordings, nginx-rtmp its segments,
        // playlists and recordings), so what a create costs there weighs on both figures.
        println!("files under {}: creating one costs {create_us:.0} us (pick --dir to compare)", dir.display());
        let (recording, work) = match args.recording {
            Recording::On => (
                "on",
                "both servers make HLS and record every stream whole (bitriver its recordings, fMP4 segments; \
                 nginx-rtmp record all, FLV)",
            ),
            Recording::Off => {
                ("off", "both servers make HLS only (bitriver --record-renditions off, nginx-rtmp record off)")
            }
        };
        println!("capacity runs (--recording {recording}): {work}");
        println!();
        println!("glass-to-glass on loopback (bitriver, one stream, part target {})", opt_s(self.part_target_s));
        println!("  publish start -> first media playlist with a part (#EXT-X-PART)   {}", opt_s(self.first_part_s));
        println!("  publish start -> first media playlist with a segment (#EXTINF)    {}", opt_s(self.first_segment_s));
        let mut lags = self.lags_ms.clone();
        lags.sort_by(f64::total_cmp);
        println!(
            "  part availability lag (blocking reload answered - part end by PDT), {} parts: p50 {:.1} ms  p90 {:.1} ms  \
             p99 {:.1} ms  min {:.1}  max {:.1}{}",
            lags.len(),
            pct(&lags, 0.5),
            pct(&lags, 0.9),
            pct(&lags, 0.99),
            lags.first().copied().unwrap_or(f64::NAN),
            lags.last().copied().unwrap_or(f64::NAN),
            if self.lag_errors > 0 { format!("  ({} reloads unmatched)", self.lag_errors) } else { String::new() }
        );
        println!(
            "    part end = segment PDT + part durations (PDT is the ingest clock at the first sample, then media time); \
             ffmpeg -re sends a packet up to one frame (33 ms) before its dts, and a part ends one frame after its \
             last frame's dts, so the lag behind the last frame's send is likely about this + 33..67 ms (negative figures come from that)"
        );
        for (run, v) in self.plays.iter().enumerate() {
            println!(
                "  hls.js run {} (lowLatencyMode, Chromium) through the edge: live latency {} s (target {} s); \
                 glass-to-glass (clock burned by ffmpeg, read from the frame on screen) {} ms (min {}, max {}); \
                 wall clock - program date time of the frame on screen {} ms; ok {}{}, played {} s, first progress \
                 after {} ms, parts loaded {}, stalls {}, playback-rate changes to catch up {}",
                run + 1,
                fmt_num(&v["latency"]),
                fmt_num(&v["targetLatency"]),
                v["clockLatencyMs"]["median"],
                v["clockLatencyMs"]["min"],
                v["clockLatencyMs"]["max"],
                v["pdtLatencyMs"]["median"],
                v["ok"],
                v["reason"].as_str().map(|r| format!(" ({r})")).unwrap_or_default(),
                fmt_num(&v["playedSeconds"]),
                v["timeToFirstProgressMs"],
                v["partsLoaded"],
                v["stalls"],
                v["rateChanges"].as_array().map_or(0, Vec::len)
            );
        }
        let of = |key: &str, scale: f64| -> Vec<f64> {
            let mut v: Vec<f64> = self
                .plays
                .iter()
                .filter_map(|p| if key == "latency" { p[key].as_f64() } else { p[key]["median"].as_f64() })
                .map(|x| x * scale)
                .collect();
            v.sort_by(f64::total_cmp);
            v
        };
        if !self.plays.is_empty() {
            let (latency, clock) = (of("latency", 1000.0), of("clockLatencyMs", 1.0));
            println!(
                "  over {} runs, min / median / max: hls.js latency {:.0} / {:.0} / {:.0} ms, glass-to-glass {:.0} / {:.0} / {:.0} ms",
                self.plays.len(),
                latency.first().copied().unwrap_or(f64::NAN),
                pct(&latency, 0.5),
                latency.last().copied().unwrap_or(f64::NAN),
                clock.first().copied().unwrap_or(f64::NAN),
                pct(&clock, 0.5),
                clock.last().copied().unwrap_or(f64::NAN),
            );
        }
        match (&self.plays.is_empty(), &self.play_error) {
            (_, Some(e)) => println!("  hls.js: a run failed: {e}"),
            (true, None) => println!("  hls.js: skipped"),
            (false, None) => {}
        }
        println!();
        println!(
            "passthrough capacity: N streams (the same file), {} s measured per server and N after {} s of warm-up",
            args.seconds, args.warmup_seconds
        );
        if let Some(note) = &self.nginx_note {
            println!("  nginx-rtmp: {note}");
        }
        println!();
        println!(
            "{:>3} {:<10} {:>7} {:>8} {:>10} {:>13} {:>13} {:>10} {:>14}",
            "N", "server", "wall s", "CPU s", "% core", "% core/stream", "net of idle", "streams/", "output ok"
        );
        println!(
            "{:>3} {:<10} {:>7} {:>8} {:>10} {:>13} {:>13} {:>10} {:>14}",
            "", "", "", "", "", "", "% core/stream", "core", ""
        );
        println!("{}", "-".repeat(3 + 10 + 7 + 8 + 10 + 13 + 13 + 10 + 14 + 8));
        for r in &self.rows {
            let core = r.cpu / r.secs * 100.0;
            if r.streams == 0 {
                println!(
                    "{:>3} {:<10} {:>7.1} {:>8.2} {:>10.2} {:>13} {:>13} {:>10} {:>14}",
                    0, r.server, r.secs, r.cpu, core, "-", "-", "-", "idle"
                );
                continue;
            }
            let idle = self
                .rows
                .iter()
                .find(|i| i.streams == 0 && i.server == r.server)
                .map_or(0.0, |i| i.cpu / i.secs * 100.0);
            let per = core / r.streams as f64;
            let net = (core - idle).max(0.0) / r.streams as f64;
            let ok_what = if r.server == "bitriver" { "with parts" } else { ".m3u8" };
            println!(
                "{:>3} {:<10} {:>7.1} {:>8.2} {:>10.2} {:>13.3} {:>13.3} {:>10.0} {:>14}",
                r.streams,
                r.server,
                r.secs,
                r.cpu,
                core,
                per,
                net,
                if per > 0.0 { 100.0 / per } else { f64::INFINITY },
                format!("{}/{} {ok_what}", r.output_ok, r.streams)
            );
        }
        let pairs: Vec<(&CapRow, &CapRow)> = self
            .rows
            .iter()
            .filter(|r| r.server == "bitriver" && r.streams > 0)
            .filter_map(|b| {
                self.rows.iter().find(|n| n.server == "nginx-rtmp" && n.streams == b.streams).map(|n| (b, n))
            })
            .collect();
        if !pairs.is_empty() {
            println!();
            for (b, n) in pairs {
                let (bp, np) = (b.cpu / b.secs / b.streams as f64, n.cpu / n.secs / n.streams as f64);
                println!(
                    "  N={:<2} CPU per stream nginx-rtmp / bitriver = {:.2}  (> 1: bitriver uses less CPU per stream)",
                    b.streams,
                    if bp > 0.0 { np / bp } else { f64::NAN }
                );
            }
        }
        if !self.ramp.is_empty() {
            println!();
            println!(
                "ceiling: each server alone, N publishers from one bitriver-load process, 3 s to settle, {} s measured; \
                 a stream keeps up when its output advanced >= 90% of the window",
                args.ramp_seconds
            );
            println!(
                "{:>4} {:<10} {:>8} {:>13} {:>14} {:>7} {:>9} {:>14} {:>8}",
                "N", "server", "% core", "% core/stream", "slowest media", "behind", "live", "send lag p99", "result"
            );
            for r in &self.ramp {
                let core = r.cpu / r.secs * 100.0;
                println!(
                    "{:>4} {:<10} {:>8.1} {:>13.3} {:>12.1} s {:>7} {:>9} {:>14} {:>8}",
                    r.streams,
                    r.server,
                    core,
                    core / r.streams as f64,
                    r.slowest,
                    r.behind,
                    format!("{}/{}", r.live, r.streams),
                    r.send_lag_p99.map_or("-".into(), |l| format!("{l:.0} ms")),
                    if r.kept_up() { "kept up" } else { "BEHIND" }
                );
                if let Some(why) = &r.failure {
                    println!("       first publisher failure: {why}");
                }
            }
            for server in ["bitriver", "nginx-rtmp"] {
                if let Some((kept, failed)) = self.ceiling(server) {
                    println!(
                        "  {server}: {kept} streams kept in real time{}",
                        if failed { "" } else { " (the largest step tried; the ceiling is higher)" }
                    );
                }
            }
        }
        println!();
        println!(
            "% core = server CPU time (utime+stime of /proc/PID/stat; nginx: master + worker) / wall time; streams/core = \
             100 / (% core/stream), a linear extrapolation (idle included); net of idle = (% core - idle % core) / N. CPU time has 1/CLK_TCK (10 ms) resolution; idle rows are the servers with no stream. bitriver packages fMP4 LL-HLS parts + segments in memory; \
             nginx-rtmp writes MPEG-TS segments (1 s) to disk, no parts."
        );
        println!("total time {:.1} s", started.elapsed().as_secs_f64());
    }
}

fn fmt_num(v: &Value) -> String {
    v.as_f64().map_or_else(|| v.to_string(), |f| format!("{f:.2}"))
}
