//! `bitriver-load`: load generators an operator points at a running deployment, and a planner
//! that turns what they measured into a fleet size.
//!
//! - `viewers`: simulated LL-HLS players (`viewers.rs`, logic in the sans-IO `player.rs`);
//! - `chat`: WebSocket chat clients and a poster, delivery latency (`chat.rs`);
//! - `publishers`: RTMP publishers replaying one FLV file with fresh timestamps (`publishers.rs`);
//! - `plan`: edges per PoP and traffic from viewers and bitrates, or from a measured report
//!   (`plan.rs`).
//!
//! Every load mode prints a progress line a second, a summary table at the end, and writes
//! `--json FILE` and `--report DIR` (HTML and SVG charts over time).

mod chat;
mod http;
mod plan;
mod player;
mod playlist;
mod publishers;
mod report;
mod rtmp_client;
mod stats;
mod viewers;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use url::Url;

use report::Report;
use stats::{Counters, Sampler, TargetCpu};

#[derive(Debug, Parser)]
#[command(name = "bitriver-load", version, about = "Load generators for BitRiver Live, and a fleet planner")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Simulated low-latency HLS viewers (what hls.js does, without decoding).
    Viewers(viewers::ViewersArgs),
    /// Chat WebSocket clients; posts at a fixed rate and measures delivery latency.
    Chat(chat::ChatArgs),
    /// RTMP publishers replaying one pre-encoded FLV file with fresh timestamps.
    Publishers(publishers::PublishersArgs),
    /// Edges per PoP and traffic for an audience, from a measured report or a given capacity.
    Plan(plan::PlanArgs),
}

/// Flags every load mode takes.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Common {
    /// Seconds of load after the ramp.
    #[arg(long, env = "BITRIVER_LOAD_DURATION", default_value_t = 30.0)]
    pub(crate) duration: f64,
    /// Write the summary and the per-second timeline as JSON to this file.
    #[arg(long, env = "BITRIVER_LOAD_JSON")]
    pub(crate) json: Option<PathBuf>,
    /// Write an HTML report with SVG charts (index.html, *.svg, report.json) into this directory.
    #[arg(long, env = "BITRIVER_LOAD_REPORT")]
    pub(crate) report: Option<PathBuf>,
    /// The target's Prometheus endpoint, for its CPU (`process_cpu_seconds_total`); default
    /// `/metrics` on the target's host. `none` turns it off.
    #[arg(long, env = "BITRIVER_LOAD_METRICS")]
    pub(crate) metrics: Option<String>,
    /// No progress line (the summary is still printed).
    #[arg(long, env = "BITRIVER_LOAD_QUIET")]
    pub(crate) quiet: bool,
}

impl Common {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.duration > 0.0 && self.duration.is_finite(),
            "--duration must be a positive number of seconds"
        );
        Ok(())
    }

    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration)
    }

    /// Where to read the target's CPU: `--metrics`, else `/metrics` on `target`'s host
    /// (http for ws, https for wss).
    fn metrics_url(&self, target: &Url) -> Option<String> {
        match self.metrics.as_deref() {
            Some("none") => None,
            Some(url) => Some(url.to_owned()),
            None => {
                let scheme = match target.scheme() {
                    "ws" | "rtmp" => "http",
                    "wss" => "https",
                    other => other,
                };
                let host = target.host_str()?;
                let port = match (target.scheme(), target.port()) {
                    // An RTMP port serves no HTTP: the caller passes --metrics for publishers.
                    ("rtmp", _) => return None,
                    (_, Some(p)) => format!(":{p}"),
                    (_, None) => String::new(),
                };
                Some(format!("{scheme}://{host}{port}/metrics"))
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let sockets = match &cli.mode {
        Mode::Viewers(a) => a.viewers.saturating_mul(2),
        Mode::Chat(a) => a.sockets,
        Mode::Publishers(a) => a.count,
        Mode::Plan(_) => 0,
    };
    raise_open_file_limit(sockets as u64 + 256);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.mode {
            Mode::Viewers(args) => viewers::run(args).await,
            Mode::Chat(args) => chat::run(args).await,
            Mode::Publishers(args) => publishers::run(args).await,
            Mode::Plan(args) => plan::run(args),
        }
    })
}

/// Lifts the soft open-file limit to the hard one (a viewer holds two sockets; distributions
/// default to 1,024), and says so when even that is below what the run needs.
fn raise_open_file_limit(need: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let _ = setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum });
    }
    let now = getrlimit(Resource::Nofile).current;
    if now.is_some_and(|n| n < need) {
        eprintln!(
            "note: the open-file limit is {}, this run needs about {need}: raise it (ulimit -n {need}) or expect connect errors",
            now.unwrap_or_default()
        );
    }
}

/// Samples `counters` once a second until `stop_at`, printing the progress line: in place on a
/// terminal, one line every five seconds otherwise (logs stay readable).
pub(crate) async fn sample_until(
    counters: &Counters,
    epoch: Instant,
    stop_at: Instant,
    metrics: Option<&str>,
    what: &str,
    quiet: bool,
) -> Sampler {
    let cpu = metrics.map(|url| TargetCpu::new(url.to_owned()));
    let first = match &cpu {
        Some(cpu) => cpu.seconds().await,
        None => None,
    };
    if cpu.is_some() && first.is_none() && !quiet {
        eprintln!("note: no process_cpu_seconds_total at {}: target CPU not charted", metrics.unwrap_or_default());
    }
    let cpu = cpu.filter(|_| first.is_some());
    let mut sampler = Sampler::new(epoch, first);
    let tty = std::io::stderr().is_terminal();
    let mut tick = epoch;
    let mut logged = 0;
    loop {
        tick += Duration::from_secs(1);
        let last = tick >= stop_at;
        let at = tick.min(stop_at);
        tokio::time::sleep_until(at.into()).await;
        let target = match &cpu {
            Some(cpu) => cpu.seconds().await,
            None => None,
        };
        // The time it is, not the tick: a late wake-up (a busy machine) must not inflate the rates.
        sampler.sample(counters, Instant::now(), target);
        if !quiet {
            let line = sampler.progress_line(what);
            if tty {
                eprint!("\r{line}\x1b[K");
            } else if sampler.points.len() >= logged + 5 || last {
                logged = sampler.points.len();
                eprintln!("{line}");
            }
        }
        if last {
            break;
        }
    }
    if tty && !quiet {
        eprintln!();
    }
    sampler
}

/// Prints the summary and writes `--json` and `--report`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn finish(
    common: &Common,
    mode: &'static str,
    target: &str,
    started_unix_ms: u64,
    epoch: Instant,
    sampler: Sampler,
    summary: serde_json::Value,
    table: String,
) -> anyhow::Result<()> {
    let mut table = table;
    let own: Vec<f64> = sampler.points.iter().filter_map(|p| p.own_cpu).collect();
    if !own.is_empty() {
        table += &format!("load generator CPU: {:.2} cores on average\n", own.iter().sum::<f64>() / own.len() as f64);
    }
    let target_cpu: Vec<f64> = sampler.points.iter().filter_map(|p| p.target_cpu).collect();
    if !target_cpu.is_empty() {
        table +=
            &format!("target CPU: {:.2} cores on average\n", target_cpu.iter().sum::<f64>() / target_cpu.len() as f64);
    }
    println!("{table}");
    let report = Report {
        mode,
        target: target.to_owned(),
        started_unix_ms,
        duration_s: epoch.elapsed().as_secs_f64(),
        summary,
        table,
        timeline: sampler.points,
    };
    if let Some(path) = &common.json {
        report.write_json(path)?;
    }
    if let Some(dir) = &common.report {
        report.write_html(dir)?;
        eprintln!("report: {}", dir.join("index.html").display());
    }
    Ok(())
}
