//! `bitriver-load viewers`: N simulated low-latency HLS players in one process.
//!
//! Each viewer is a tokio task driving a [`Player`] (the sans-IO state machine) over two
//! keep-alive HTTP/1.1 connections, one per lane: the playlist lane carries the blocking reloads,
//! the media lane the init segment, parts and segments. Viewers start evenly over `--ramp` and
//! all stop at the end of `--duration`. Once a second each viewer samples its latency to live and
//! whether it is stalled.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::stream::FuturesUnordered;
use futures::StreamExt as _;
use serde_json::json;
use url::Url;

use super::http::{self, Fetched};
use super::player::{Answer, Clock, Lane, Player, PlayerStats};
use super::stats::{table, Counters, Percentiles};
use super::{finish, sample_until, Common};

/// Flags of `viewers`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ViewersArgs {
    /// The multivariant playlist (`http://EDGE/hls/CHANNEL/master.m3u8`), or one media playlist.
    #[arg(long, env = "BITRIVER_LOAD_URL")]
    pub(crate) url: String,
    /// Simulated viewers.
    #[arg(long, env = "BITRIVER_LOAD_VIEWERS", default_value_t = 10)]
    pub(crate) viewers: usize,
    /// Seconds over which the viewers join, evenly spaced.
    #[arg(long, env = "BITRIVER_LOAD_RAMP", default_value_t = 5.0)]
    pub(crate) ramp: f64,
    /// Link speeds in bits/s, handed out to viewers in turn: each picks the highest variant whose
    /// BANDWIDTH fits its link (or the lowest). Several values give a rendition mix.
    #[arg(long, env = "BITRIVER_LOAD_BANDWIDTH", value_delimiter = ',', default_value = "5000000")]
    pub(crate) bandwidth: Vec<u64>,
    /// Local addresses to connect from, handed out to viewers in turn (spreads the load over
    /// source addresses, as the fleet tests' network namespaces do).
    #[arg(long, env = "BITRIVER_LOAD_SOURCE_ADDR", value_delimiter = ',')]
    pub(crate) source_addr: Vec<IpAddr>,
    /// Milliseconds from a viewer's first loaded part to its first frame shown (a browser's media
    /// pipeline start-up, which adds to its latency to live). The default is what hls.js in
    /// headless Chromium takes on this project's test machine (first part loaded -> playing:
    /// 0.26-0.27 s, `node/tests/load.rs`); 0 models a player that shows the first frame at once.
    #[arg(long, env = "BITRIVER_LOAD_STARTUP_MS", default_value_t = 250.0)]
    pub(crate) startup_ms: f64,
    /// Seconds a request may take (connect to last byte) before it counts as an error; blocking
    /// playlist reloads are held by the server for up to three target durations.
    #[arg(long, env = "BITRIVER_LOAD_TIMEOUT", default_value_t = 10.0)]
    pub(crate) timeout: f64,
    #[command(flatten)]
    pub(crate) common: Common,
}

pub(crate) async fn run(args: ViewersArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.viewers > 0, "--viewers must be at least 1");
    anyhow::ensure!(!args.bandwidth.is_empty(), "--bandwidth needs at least one value");
    anyhow::ensure!(args.ramp >= 0.0 && args.ramp.is_finite(), "--ramp must be a number of seconds");
    anyhow::ensure!(args.timeout > 0.0 && args.timeout.is_finite(), "--timeout must be positive");
    anyhow::ensure!(
        (0.0..=10_000.0).contains(&args.startup_ms),
        "--startup-ms must be 0..=10000, not {}",
        args.startup_ms
    );
    args.common.validate()?;
    let master = Url::parse(&args.url).map_err(|e| anyhow::anyhow!("--url {}: {e}", args.url))?;
    let target = http::resolve(&master).await?;
    let counters = Arc::new(Counters::default());
    let epoch = Instant::now();
    let started_unix_ms = unix_ms() as u64;
    let ramp = Duration::from_secs_f64(args.ramp);
    let stop_at = epoch + ramp + args.common.duration();
    let timeout = Duration::from_secs_f64(args.timeout);

    let mut tasks = Vec::with_capacity(args.viewers);
    for i in 0..args.viewers {
        let start = epoch + ramp.mul_f64(i as f64 / args.viewers as f64);
        let bandwidth = args.bandwidth[i % args.bandwidth.len()];
        let source = (!args.source_addr.is_empty()).then(|| args.source_addr[i % args.source_addr.len()]);
        let player = Player::new(master.clone(), bandwidth).with_startup_ms(args.startup_ms);
        let counters = counters.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            viewer(player, target, source, stop_at, timeout, counters, epoch).await
        }));
    }
    let metrics_url = args.common.metrics_url(&master);
    let sampler = sample_until(&counters, epoch, stop_at, metrics_url.as_deref(), "viewers", args.common.quiet).await;
    let mut all = Vec::with_capacity(tasks.len());
    for task in tasks {
        all.push(task.await?);
    }
    let summary = Summary::of(&all, &sampler.all_latency, epoch.elapsed().as_secs_f64());
    let printed = summary.table();
    finish(&args.common, "viewers", &args.url, started_unix_ms, epoch, sampler, summary.json(), printed)
}

fn unix_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn clock(epoch: Instant) -> Clock {
    Clock { mono_ms: epoch.elapsed().as_secs_f64() * 1000.0, wall_ms: unix_ms() }
}

/// One viewer until `stop_at`; its counters at the end and the connections it opened.
async fn viewer(
    mut player: Player,
    target: SocketAddr,
    source: Option<IpAddr>,
    stop_at: Instant,
    timeout: Duration,
    c: Arc<Counters>,
    epoch: Instant,
) -> (PlayerStats, u64) {
    let connects = Arc::new(AtomicU64::new(0));
    let mut lanes = [
        Some(http::Lane::new(target, source, connects.clone())),
        Some(http::Lane::new(target, source, connects.clone())),
    ];
    let slot = |lane: Lane| match lane {
        Lane::Playlist => 0,
        Lane::Media => 1,
    };
    let mut in_flight = FuturesUnordered::new();
    let mut next_sample = Instant::now() + Duration::from_secs(1);
    let mut stalled = false;
    Counters::add(&c.active, 1);
    loop {
        if Instant::now() >= stop_at || player.is_finished() {
            break;
        }
        for request in player.poll(clock(epoch)) {
            let Some(mut conn) = lanes[slot(request.lane)].take() else { continue };
            let keep_body = request.lane == Lane::Playlist;
            in_flight.push(async move {
                let fetched = conn.get(&request.url, keep_body, timeout).await;
                (request.lane, conn, fetched)
            });
        }
        let mut wake = stop_at.min(next_sample);
        if let Some(ms) = player.wake_at() {
            wake = wake.min(epoch + Duration::from_secs_f64((ms / 1000.0).max(0.0)));
        }
        tokio::select! {
            Some((lane, conn, fetched)) = in_flight.next() => {
                lanes[slot(lane)] = Some(conn);
                let before = (player.stats().errors, player.stats().stalls);
                let now = clock(epoch);
                match &fetched {
                    Fetched::Ok { body, bytes } => {
                        Counters::add(&c.requests, 1);
                        Counters::add(&c.bytes, *bytes);
                        player.on_response(lane, Answer::Ok { body: body.as_slice(), bytes: *bytes }, now);
                    }
                    Fetched::Status(status) => {
                        Counters::add(&c.requests, 1);
                        player.on_response(lane, Answer::Status(*status), now);
                    }
                    Fetched::Failed(why) => player.on_response(lane, Answer::Failed(why), now),
                }
                Counters::add(&c.errors, player.stats().errors - before.0);
                Counters::add(&c.stalls, player.stats().stalls - before.1);
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
        if Instant::now() >= next_sample {
            let before = player.stats().stalls;
            let sample = player.sample(clock(epoch));
            Counters::add(&c.stalls, player.stats().stalls - before);
            if let Some(latency) = sample.latency_ms {
                c.latency(latency);
            }
            if sample.stalled != stalled {
                if sample.stalled {
                    Counters::add(&c.stalled, 1);
                } else {
                    Counters::dec(&c.stalled);
                }
                stalled = sample.stalled;
            }
            next_sample += Duration::from_secs(1);
        }
    }
    if stalled {
        Counters::dec(&c.stalled);
    }
    Counters::dec(&c.active);
    (player.final_stats(clock(epoch)), connects.load(Ordering::Relaxed))
}

/// The figures of a whole run.
#[derive(Debug, Default)]
struct Summary {
    viewers: usize,
    playing: usize,
    seconds: f64,
    total: PlayerStats,
    connects: u64,
    viewers_stalled: usize,
    latency: Option<Percentiles>,
    startup: Option<Percentiles>,
    variants: Vec<(String, usize)>,
    first_error: Option<String>,
}

impl Summary {
    fn of(all: &[(PlayerStats, u64)], latency: &[f64], seconds: f64) -> Self {
        let mut s = Summary { viewers: all.len(), seconds, ..Summary::default() };
        let mut startup = Vec::new();
        for (v, connects) in all {
            let t = &mut s.total;
            t.requests += v.requests;
            t.bytes += v.bytes;
            t.playlist_bytes += v.playlist_bytes;
            t.playlists += v.playlists;
            t.blocking_playlists += v.blocking_playlists;
            t.delta_playlists += v.delta_playlists;
            t.parts += v.parts;
            t.hinted_parts += v.hinted_parts;
            t.segments += v.segments;
            t.inits += v.inits;
            t.errors += v.errors;
            t.stalls += v.stalls;
            t.stall_ms += v.stall_ms;
            t.resyncs += v.resyncs;
            t.live_syncs += v.live_syncs;
            t.catch_ups += v.catch_ups;
            s.connects += connects;
            s.viewers_stalled += usize::from(v.stalls > 0);
            if let Some(ms) = v.startup_ms {
                s.playing += 1;
                startup.push(ms);
            }
            if s.first_error.is_none() {
                s.first_error.clone_from(&v.last_error);
            }
            if let Some(variant) = &v.variant {
                let name = variant_name(variant);
                match s.variants.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, count)) => *count += 1,
                    None => s.variants.push((name, 1)),
                }
            }
        }
        s.latency = Percentiles::of(&mut latency.to_vec());
        s.startup = Percentiles::of(&mut startup);
        s
    }

    fn table(&self) -> String {
        let t = &self.total;
        let secs = self.seconds.max(1e-3);
        let ms =
            |p: Option<Percentiles>, f: fn(&Percentiles) -> f64| p.map_or("-".to_owned(), |p| format!("{:.0}", f(&p)));
        let rows = vec![
            vec!["viewers (playing)".into(), format!("{} ({})", self.viewers, self.playing)],
            vec!["requests".into(), format!("{} ({:.0}/s)", t.requests, t.requests as f64 / secs)],
            vec![
                "received".into(),
                format!("{:.1} MB ({:.2} Mbit/s)", t.bytes as f64 / 1e6, t.bytes as f64 * 8.0 / secs / 1e6),
            ],
            vec!["parts (from hints)".into(), format!("{} ({})", t.parts, t.hinted_parts)],
            vec!["segments, inits".into(), format!("{}, {}", t.segments, t.inits)],
            vec![
                "playlists (blocking, delta)".into(),
                format!("{} ({}, {})", t.playlists, t.blocking_playlists, t.delta_playlists),
            ],
            vec![
                "latency to live p50/p90/p99/max ms".into(),
                format!(
                    "{}/{}/{}/{}",
                    ms(self.latency, |p| p.p50),
                    ms(self.latency, |p| p.p90),
                    ms(self.latency, |p| p.p99),
                    ms(self.latency, |p| p.max)
                ),
            ],
            vec![
                "startup p50/p99 ms".into(),
                format!("{}/{}", ms(self.startup, |p| p.p50), ms(self.startup, |p| p.p99)),
            ],
            vec![
                "stalls (viewers stalled, total s)".into(),
                format!("{} ({}, {:.1})", t.stalls, self.viewers_stalled, t.stall_ms / 1000.0),
            ],
            vec!["errors".into(), t.errors.to_string()],
            vec!["resyncs".into(), t.resyncs.to_string()],
            vec!["jumps to the live point".into(), t.live_syncs.to_string()],
            vec!["catch-ups by playback rate".into(), t.catch_ups.to_string()],
            vec!["connections opened".into(), self.connects.to_string()],
            vec![
                "variants".into(),
                self.variants.iter().map(|(n, c)| format!("{n}: {c}")).collect::<Vec<_>>().join(", "),
            ],
        ];
        let mut out = table(&["viewers", "value"], &rows);
        if let Some(e) = &self.first_error {
            out += &format!("first error: {e}\n");
        }
        out
    }

    fn json(&self) -> serde_json::Value {
        let t = &self.total;
        json!({
            "viewers": self.viewers,
            "playing": self.playing,
            "seconds": self.seconds,
            "requests": t.requests,
            "bytes": t.bytes,
            "playlist_bytes": t.playlist_bytes,
            "requests_per_s": t.requests as f64 / self.seconds.max(1e-3),
            "mbit_per_s": t.bytes as f64 * 8.0 / self.seconds.max(1e-3) / 1e6,
            "parts": t.parts,
            "hinted_parts": t.hinted_parts,
            "segments": t.segments,
            "inits": t.inits,
            "playlists": t.playlists,
            "blocking_playlists": t.blocking_playlists,
            "delta_playlists": t.delta_playlists,
            "latency_ms": self.latency,
            "startup_ms": self.startup,
            "stalls": t.stalls,
            "viewers_stalled": self.viewers_stalled,
            "stall_seconds": t.stall_ms / 1000.0,
            "errors": t.errors,
            "first_error": self.first_error,
            "resyncs": t.resyncs,
            "live_syncs": t.live_syncs,
            "catch_ups": t.catch_ups,
            "connections": self.connects,
            "variants": self.variants.iter().map(|(n, c)| json!({"variant": n, "viewers": c})).collect::<Vec<_>>(),
        })
    }
}

/// `source` of `.../source/index.m3u8`: the rendition directory, or the file name.
fn variant_name(url: &str) -> String {
    let path = url.split('?').next().unwrap_or(url);
    let mut parts = path.rsplit('/');
    let file = parts.next().unwrap_or(path);
    match parts.next() {
        Some(dir) if file.starts_with("index") => dir.to_owned(),
        _ => file.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_adds_viewers_up() {
        let a = PlayerStats {
            requests: 10,
            bytes: 1000,
            parts: 5,
            stalls: 1,
            startup_ms: Some(300.0),
            variant: Some("http://e/hls/c/720p/index.m3u8".into()),
            last_error: Some("boom".into()),
            ..PlayerStats::default()
        };
        let b = PlayerStats {
            requests: 4,
            parts: 2,
            variant: Some("http://e/hls/c/720p/index.m3u8".into()),
            ..PlayerStats::default()
        };
        let s = Summary::of(&[(a, 2), (b, 2)], &[100.0, 200.0], 2.0);
        assert_eq!((s.total.requests, s.total.parts, s.playing, s.viewers_stalled, s.connects), (14, 7, 1, 1, 4));
        assert_eq!(s.variants, [("720p".to_owned(), 2)]);
        let j = s.json();
        assert_eq!(j["requests_per_s"], 7.0);
        assert_eq!(j["latency_ms"]["p50"], 100.0);
        assert_eq!(j["first_error"], "boom");
        assert!(s.table().contains("first error: boom"));
    }
}
