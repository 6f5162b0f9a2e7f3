//! The relay bench: what relaying a channel from its ingest node to an origin node costs, on
//! loopback, in process. `cargo bench -p bitriver-relay --bench relay` (optimised; only the
//! relay's dependencies, no pingora or FFmpeg). Settings from the environment:
//! `RELAY_BENCH_STREAMS` (4), `RELAY_BENCH_SECONDS` (8), `RELAY_BENCH_RUNS` (3),
//! `RELAY_BENCH_LAG_SECONDS` (12).
//!
//! Two catalogs with real certificates (an ingest+control node and an origin node) and the relay
//! between them over QUIC with mutual TLS, as in a fleet; a synthetic 30 fps stream (~1.6 Mbit/s
//! H.264-sized frames, keyframe every second, 48 kHz AAC-sized frames) published in real time
//! through the ingest's `LivePublish`, so the ingest packages it as it does in production.
//!
//! - **Added latency**: both packagers' origin routes on loopback HTTP; a blocking playlist
//!   reload loop against each (`_HLS_msn`/`_HLS_part` of the preload hint) records when each part
//!   becomes servable; per part, origin time minus ingest time. Reference: the same part on the
//!   ingest node (0 by definition) and the part duration (200 ms), the granularity viewers see.
//! - **CPU per stream**: N streams for `--seconds`, packaged in process only (the all-in-one
//!   path), then the same N relayed to the origin node in the same process (publish side,
//!   QUIC both ways, subscribe side and the origin's packaging); CPU time of the process from
//!   `/proc`, alternated `--runs` times; printed min/median/max per stream.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use media::cmaf::{AudioConfig, Sample, VideoCodec, VideoConfig};
use media::ingest::{FeedOutput, IngestConfig, IngestMetrics, LivePublish, Protocol, TrackTap};
use media::origin::{LiveHandle, LiveRegistry, OriginConfig, OriginMetrics, RegistryConfig};
use raft::metrics::CatalogMetrics;
use raft::tls::{ClusterCa, TlsPaths};
use raft::{Catalog, CatalogConfig, JoinConfig};
use relay::quic::{RelayHub, RelayMetrics};

/// The bench's settings.
struct Args {
    streams: usize,
    seconds: f64,
    runs: usize,
    lag_seconds: f64,
}

impl Args {
    fn from_env() -> Self {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
            std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
        }
        Args {
            streams: var("RELAY_BENCH_STREAMS", 4),
            seconds: var("RELAY_BENCH_SECONDS", 8.0),
            runs: var("RELAY_BENCH_RUNS", 3),
            lag_seconds: var("RELAY_BENCH_LAG_SECONDS", 12.0),
        }
    }
}

async fn catalog(dir: &Path, roles: &[&str], join: Option<(&Catalog, &Path)>) -> anyhow::Result<Catalog> {
    let mut config = CatalogConfig::local(dir);
    config.roles = roles.iter().map(|r| r.to_string()).collect();
    if let Some((member, data)) = join {
        let token = ClusterCa::load(&TlsPaths::new(data))?.join_token(raft::now_millis() / 1000 + 600, 1);
        config.join = Some(JoinConfig { addr: member.cluster_addr().to_owned(), token });
    }
    let catalog = Catalog::start_with_metrics(config, Arc::new(CatalogMetrics::unregistered())).await?;
    catalog.wait_ready(Duration::from_secs(30)).await?;
    Ok(catalog)
}

fn tracks() -> FeedOutput {
    let video = VideoConfig {
        codec: VideoCodec::Avc1,
        sps: vec![vec![0x67, 0x42, 0xc0, 0x1e]],
        pps: vec![vec![0x68, 0xce]],
        width: 640,
        height: 360,
        codec_string: "avc1.42c01e".into(),
    };
    let audio =
        AudioConfig { asc: vec![0x11, 0x90], sample_rate: 48_000, channels: 2, codec_string: "mp4a.40.2".into() };
    FeedOutput::Tracks { video: Some(video), audio: Some(audio) }
}

/// Publishes one synthetic stream in real time for `length` into `publish`.
async fn feed(mut publish: LivePublish, length: Duration) {
    if publish.handle_output(tracks()).is_err() {
        return;
    }
    let start = tokio::time::Instant::now();
    let (mut frame, mut audio) = (0u64, 0u64);
    let keyframe = Bytes::from(vec![0x65; 40_000]);
    let delta = Bytes::from(vec![0x41; 5_500]);
    let aac = Bytes::from(vec![0x21; 300]);
    while start.elapsed() < length {
        let due = Duration::from_micros(frame * 1_000_000 / 30);
        tokio::time::sleep_until(start + due).await;
        while audio * 1024 * 90_000 / 48_000 <= frame * 3000 {
            let sample = Sample { dts: audio * 1024, pts_offset: 0, duration: 1024, keyframe: true, data: aac.clone() };
            let _ = publish.handle_output(FeedOutput::Audio(sample));
            audio += 1;
        }
        let data = if frame.is_multiple_of(30) { keyframe.clone() } else { delta.clone() };
        let sample =
            Sample { dts: frame * 3000, pts_offset: 0, duration: 3000, keyframe: frame.is_multiple_of(30), data };
        let _ = publish.handle_output(FeedOutput::Video(sample));
        frame += 1;
    }
    publish.finish();
}

fn publish(live: &LiveRegistry, tap: Option<Arc<dyn TrackTap>>, channel: &str) -> LivePublish {
    let config = IngestConfig { tap, ..IngestConfig::default() };
    let peer = SocketAddr::from(([127, 0, 0, 1], 1));
    LivePublish::new(
        live.clone(),
        &config,
        &IngestMetrics::unregistered(),
        channel.to_owned(),
        format!("s-{channel}"),
        peer,
        Protocol::Rtmp,
    )
}

/// The origin node's subscription to `channel`, until it ends.
fn subscribe(
    origin: &Catalog,
    ingest_addr: String,
    channel: String,
    live: LiveRegistry,
) -> tokio::task::JoinHandle<()> {
    let origin = origin.clone();
    tokio::spawn(async move {
        let metrics = RelayMetrics::unregistered().expect("metrics");
        let mut handle: Option<LiveHandle> = None;
        for _ in 0..50 {
            if let Ok(conn) = origin.connect_relay(&ingest_addr).await {
                if relay::quic::subscribe(&conn, &channel, &live, &metrics, &mut handle).await.is_ok() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

async fn serve(live: &LiveRegistry) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = media::origin::routes(live.clone(), OriginConfig::default());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

/// Follows a rendition's parts with blocking reloads; returns when each `(msn, part)` became
/// servable (first seen), until `until`.
async fn follow_parts(addr: SocketAddr, channel: &str, until: Instant) -> Vec<((u64, u32), Instant)> {
    let client = reqwest::Client::new();
    let base = format!("http://{addr}/hls/{channel}/source/index.m3u8");
    let mut seen = Vec::new();
    let mut next: Option<(u64, u32)> = None;
    while Instant::now() < until {
        let url = match next {
            Some((msn, part)) => format!("{base}?_HLS_msn={msn}&_HLS_part={part}"),
            None => base.clone(),
        };
        let Ok(resp) = client.get(&url).send().await else { continue };
        let arrived = Instant::now();
        if !resp.status().is_success() {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let Ok(body) = resp.text().await else { continue };
        if let Some(asked) = next {
            seen.push((asked, arrived));
        }
        next = body.lines().find_map(|l| {
            let uri = l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part")?;
            let name = uri.split(".m4s").next()?;
            let (msn, part) = name.split_once('.')?;
            Some((msn.parse().ok()?, part.parse().ok()?))
        });
    }
    seen
}

fn stats(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(|a, b| a.total_cmp(b));
    if values.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    (values[0], values[values.len() / 2], values[values.len() - 1])
}

fn cpu_now() -> anyhow::Result<f64> {
    testkit::procfs::cpu_seconds(testkit::procfs::Pid::This)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::from_env();
    let root = tempfile::tempdir()?;
    let (d1, d2) = (root.path().join("ingest"), root.path().join("origin"));
    let ingest = catalog(&d1, &["control", "ingest"], None).await.context("ingest catalog")?;
    let origin = catalog(&d2, &["origin"], Some((&ingest, &d1))).await.context("origin catalog")?;
    let hub = RelayHub::new(RelayMetrics::unregistered()?);
    let _served = serve_relay(&ingest, hub.clone());
    let ingest_addr = ingest.cluster_addr().to_owned();

    // Added latency of one relayed stream.
    let (ingest_live, origin_live) = (registry(), registry());
    let (ingest_http, origin_http) = (serve(&ingest_live).await?, serve(&origin_live).await?);
    let length = Duration::from_secs_f64(args.lag_seconds);
    let tap: Arc<dyn TrackTap> = Arc::new(hub.clone());
    let publisher =
        tokio::spawn(feed(publish(&ingest_live, Some(tap.clone()), "lag"), length + Duration::from_secs(2)));
    let _subscription = subscribe(&origin, ingest_addr.clone(), "lag".into(), origin_live.clone());
    let until = Instant::now() + length;
    let (at_ingest, at_origin) =
        tokio::join!(follow_parts(ingest_http, "lag", until), follow_parts(origin_http, "lag", until));
    publisher.await?;
    let ingest_times: std::collections::HashMap<_, _> = at_ingest.into_iter().collect();
    let mut lags: Vec<f64> = at_origin
        .iter()
        .filter_map(|(part, t)| Some(t.saturating_duration_since(*ingest_times.get(part)?).as_secs_f64() * 1000.0))
        .collect();
    let n = lags.len();
    let (min, median, max) = stats(&mut lags);
    println!("relay bench: ingest -> origin added latency per part (loopback QUIC, mTLS), {n} parts");
    println!("  ours:      min {min:.2} ms  median {median:.2} ms  max {max:.2} ms");
    println!("  reference: 0 ms on the ingest node itself; a part lasts 200 ms (PART-TARGET)");

    // CPU per stream, in-process packaging vs relayed, alternated.
    let seconds = Duration::from_secs_f64(args.seconds);
    let (mut local, mut relayed) = (Vec::new(), Vec::new());
    for run in 0..args.runs {
        for relay_it in [false, true] {
            let (src, dst) = (registry(), registry());
            let before = cpu_now()?;
            let mut tasks = Vec::new();
            for i in 0..args.streams {
                let channel = format!("cpu{run}-{i}-{relay_it}");
                let tap = relay_it.then(|| tap.clone());
                tasks.push(tokio::spawn(feed(publish(&src, tap, &channel), seconds)));
                if relay_it {
                    tasks.push(subscribe(&origin, ingest_addr.clone(), channel, dst.clone()));
                }
            }
            for task in tasks {
                let _ = task.await;
            }
            let per_stream = (cpu_now()? - before) / args.streams as f64 / seconds.as_secs_f64() * 100.0;
            if relay_it {
                relayed.push(per_stream);
            } else {
                local.push(per_stream);
            }
        }
    }
    let (lmin, lmed, lmax) = stats(&mut local);
    let (rmin, rmed, rmax) = stats(&mut relayed);
    println!(
        "relay bench: CPU per stream (% of one core), {} streams x {:.0} s, {} alternated runs",
        args.streams, args.seconds, args.runs
    );
    println!("  reference (packaging in process, all-in-one): min {lmin:.2}  median {lmed:.2}  max {lmax:.2}");
    println!("  ours (ingest packaging + relay both ends + origin packaging): min {rmin:.2}  median {rmed:.2}  max {rmax:.2}");
    println!("  relay and origin packaging added: median {:.2}", rmed - lmed);

    origin.shutdown().await;
    ingest.shutdown().await;
    Ok(())
}

fn registry() -> LiveRegistry {
    LiveRegistry::new(RegistryConfig::default(), OriginMetrics::unregistered())
}

/// Serves relay connections into `hub`, as `node/src/relay.rs` does on an ingest node (the
/// relay crate does not depend on the node).
fn serve_relay(catalog: &Catalog, hub: RelayHub) -> Option<tokio::task::JoinHandle<()>> {
    let mut connections = catalog.serve_relay()?;
    Some(tokio::spawn(async move {
        while let Some((conn, _node)) = connections.recv().await {
            tokio::spawn(hub.clone().serve_connection(conn));
        }
    }))
}
