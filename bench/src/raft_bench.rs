//! `raft-bench`: committed proposals per second and commit latency of the replicated catalog.
//!
//! Everything runs in one process on a multi-thread tokio runtime. Each node is a real
//! [`raft::Catalog`]: RocksDB in its own temp dir, Raft over QUIC with mutual TLS on loopback; the
//! second and third nodes enrol with a join token like an operator's would. For one node and for
//! three nodes it runs, with `Command::Noop` carrying `--payload` bytes (a chat message):
//!
//! - **batching on**: `--in-flight` closed-loop proposers on the leader. Whatever batching the
//!   catalog does (log appends, replication, apply) shows up as commits/s above the sequential run.
//! - **batching off**: one proposer at a time on the leader: the latency of a lone commit.
//! - **fixed rate**: open loop at `--rate` commits/s. Proposals are issued on a timer whether or not
//!   earlier ones have finished, so the p99 is the one a steady chat load would see.
//! - on three nodes, short runs of the first two through a follower, which forwards to the leader.
//!
//! Beside them it prints a reference taken on the same disk in the same run: a bare append +
//! `File::sync_data` loop. `commits/fsync` (commits/s ÷ syncs/s) says how many commits ride on each
//! fsync the disk can do, a figure that carries across fast and slow machines better than commits/s.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use raft::metrics::CatalogMetrics;
use raft::tls::{ClusterCa, TlsPaths};
use raft::{Catalog, CatalogConfig, Command, JoinConfig};
use tempfile::TempDir;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};

/// How long a node may take to see a leader, and a new node to be enrolled, promoted and caught up.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Closed-loop warm-up before the first measured run on a cluster: QUIC connections, RocksDB files.
const WARM_UP: Duration = Duration::from_millis(300);
/// Proposers of the warm-up.
const WARM_UP_PROPOSERS: usize = 32;
/// Ceiling on open-loop proposals in flight; past it ticks are shed (and counted), not queued.
const OPEN_LOOP_MAX_IN_FLIGHT: usize = 4096;
/// How long the open loop waits for its last proposals after it stops issuing.
const OPEN_LOOP_DRAIN: Duration = Duration::from_secs(15);
/// Voters of the learner runs: what a fleet's control nodes are.
const VOTERS: usize = 3;
/// Learners one run may start in this process (each is a RocksDB and a QUIC endpoint).
const MAX_LEARNERS: usize = 256;

/// Flags of `raft-bench`. Every flag has an environment twin.
#[derive(Debug, Parser)]
#[command(
    name = "raft-bench",
    about = "Commits/s and commit latency of the replicated catalog, beside a bare fsync loop"
)]
struct Args {
    /// Length of each full run (batching on, batching off, fixed rate), in seconds.
    #[arg(long, env = "RAFT_BENCH_SECONDS", default_value_t = 5.0)]
    seconds: f64,
    /// Length of the follower (forwarded) runs and of the fsync reference, in seconds.
    #[arg(long, env = "RAFT_BENCH_SHORT_SECONDS", default_value_t = 2.0)]
    short_seconds: f64,
    /// Concurrent proposers in the "batching on" runs.
    #[arg(long, env = "RAFT_BENCH_IN_FLIGHT", default_value_t = 256)]
    in_flight: usize,
    /// Target commits/s of the open-loop run.
    #[arg(long, env = "RAFT_BENCH_RATE", default_value_t = 1000)]
    rate: u32,
    /// Payload bytes of each `Command::Noop` (200 is about a chat message).
    #[arg(long, env = "RAFT_BENCH_PAYLOAD", default_value_t = 200)]
    payload: usize,
    /// Cluster sizes to measure, comma-separated (1 and/or 3).
    #[arg(long, env = "RAFT_BENCH_NODES", value_delimiter = ',', default_values_t = [1, 3])]
    nodes: Vec<usize>,
    /// Learner counts to measure beside three voters, comma-separated (e.g. `0,8,32`): commit
    /// latency at `--rate`, how far behind the leader each learner applies, and process CPU per
    /// commit. Empty (the default) skips the learner runs.
    #[arg(long, env = "RAFT_BENCH_LEARNERS", value_delimiter = ',')]
    learners: Vec<usize>,
    /// Directory for the nodes' data dirs and the fsync reference file: the disk under test.
    /// Defaults to the system temp dir.
    #[arg(long, env = "RAFT_BENCH_DIR")]
    dir: Option<PathBuf>,
}

/// [`Args`] checked and turned into durations.
#[derive(Debug, Clone)]
struct Plan {
    run_for: Duration,
    short_run_for: Duration,
    in_flight: usize,
    rate: u32,
    payload: usize,
    nodes: Vec<usize>,
    learners: Vec<usize>,
    dir: PathBuf,
}

impl Args {
    fn validate(self) -> anyhow::Result<Plan> {
        let seconds = |flag: &str, value: f64| {
            Duration::try_from_secs_f64(value)
                .ok()
                .filter(|d| !d.is_zero() && *d <= Duration::from_secs(3600))
                .with_context(|| format!("--{flag} must be more than 0 and at most 3600, not {value}"))
        };
        anyhow::ensure!(self.in_flight >= 1, "--in-flight must be at least 1");
        anyhow::ensure!((1..=100_000).contains(&self.rate), "--rate must be 1..=100000, not {}", self.rate);
        anyhow::ensure!(self.payload <= 1 << 20, "--payload must be at most 1 MiB, not {}", self.payload);
        anyhow::ensure!(
            !self.nodes.is_empty() && self.nodes.iter().all(|n| matches!(n, 1 | 3)),
            "--nodes takes 1 and/or 3, not {:?}",
            self.nodes
        );
        anyhow::ensure!(
            self.learners.iter().all(|&n| n <= MAX_LEARNERS),
            "--learners takes counts up to {MAX_LEARNERS}, not {:?}",
            self.learners
        );
        let dir = self.dir.unwrap_or_else(std::env::temp_dir);
        anyhow::ensure!(dir.is_dir(), "--dir {} is not a directory", dir.display());
        Ok(Plan {
            run_for: seconds("seconds", self.seconds)?,
            short_run_for: seconds("short-seconds", self.short_seconds)?,
            in_flight: self.in_flight,
            rate: self.rate,
            payload: self.payload,
            nodes: self.nodes,
            learners: self.learners,
            dir,
        })
    }
}

fn main() -> anyhow::Result<()> {
    let plan = Args::parse().validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("building the runtime")?;
    runtime.block_on(run(plan))
}

async fn run(plan: Plan) -> anyhow::Result<()> {
    let started = Instant::now();
    eprintln!("fsync reference: append {} B + sync_data in {} ...", plan.payload, plan.dir.display());
    let reference = {
        let (dir, run_for, payload) = (plan.dir.clone(), plan.short_run_for, plan.payload);
        tokio::task::spawn_blocking(move || fsync_reference(&dir, run_for, payload))
            .await
            .context("fsync reference task")??
    };

    let mut rows = Vec::new();
    for &size in &plan.nodes {
        rows.extend(bench_cluster(size, &plan).await?);
    }

    print_report(&plan, &reference, &rows, started.elapsed());

    if !plan.learners.is_empty() {
        let mut learner_rows = Vec::new();
        for &learners in &plan.learners {
            learner_rows.push(learners::bench(learners, &plan).await?);
        }
        learners::print(&plan, &learner_rows);
    }
    Ok(())
}

/// Who the proposals were submitted to.
#[derive(Debug, Clone, Copy)]
enum Via {
    Leader,
    Follower,
}

/// How the proposals were issued.
#[derive(Debug, Clone, Copy)]
enum Load {
    /// This many closed-loop proposers (1 = sequential, batching off).
    Concurrent(usize),
    /// Open loop at this many proposals per second.
    FixedRate(u32),
}

/// One line of the report.
#[derive(Debug)]
struct Row {
    nodes: usize,
    load: Load,
    via: Via,
    outcome: Outcome,
    /// The leader's term moved during the run (an election: figures are suspect).
    term_changed: bool,
    /// When the run started, to place the slowest commit and the snapshots in it.
    started: Instant,
    /// Snapshots any node built while the run went on (each with a log purge; they can show in the p99).
    snapshots: Vec<SnapshotBuilt>,
}

/// Every cluster-size run: start the cluster, warm up, measure, shut down.
async fn bench_cluster(size: usize, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    eprintln!("starting a {size}-node cluster in {} ...", plan.dir.display());
    let cluster = Cluster::start(size, &plan.dir).await?;
    let result = bench_on(&cluster, size, plan).await;
    cluster.shutdown().await;
    result
}

async fn bench_on(cluster: &Cluster, size: usize, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let leader = cluster.leader()?;
    closed_loop(leader, WARM_UP_PROPOSERS, WARM_UP, plan.payload).await;

    let mut runs = vec![
        (Load::Concurrent(plan.in_flight), Via::Leader, plan.run_for),
        (Load::Concurrent(1), Via::Leader, plan.run_for),
        (Load::FixedRate(plan.rate), Via::Leader, plan.run_for),
    ];
    if size > 1 {
        runs.push((Load::Concurrent(plan.in_flight), Via::Follower, plan.short_run_for));
        runs.push((Load::Concurrent(1), Via::Follower, plan.short_run_for));
    }
    let mut rows = Vec::new();
    for (load, via, run_for) in runs {
        let leader = cluster.leader()?;
        let target = match via {
            Via::Leader => leader,
            Via::Follower => cluster.follower_of(leader).context("a 3-node cluster without a follower")?,
        };
        eprintln!("  {size} node(s): {} via {} for {run_for:?} ...", load_label(load), via_label(via));
        let term_before = leader.raft().metrics().borrow().current_term;
        let started = Instant::now();
        let outcome = match load {
            Load::Concurrent(proposers) => closed_loop(target, proposers, run_for, plan.payload).await,
            Load::FixedRate(rate) => open_loop(target, rate, run_for, plan.payload).await,
        };
        let term_after = leader.raft().metrics().borrow().current_term;
        let snapshots = cluster.snapshots_since(started);
        rows.push(Row { nodes: size, load, via, outcome, term_changed: term_after != term_before, started, snapshots });
    }
    Ok(rows)
}

/// A snapshot one node built (and so purged its log behind), as its Raft metrics showed it.
#[derive(Debug, Clone, Copy)]
struct SnapshotBuilt {
    at: Instant,
    node: raft::NodeId,
    /// Last log index the snapshot covers.
    index: u64,
}

/// Nodes of one cluster, all in this process. The temp dirs outlive the nodes.
struct Cluster {
    nodes: Vec<Catalog>,
    dirs: Vec<TempDir>,
    snapshots: Arc<Mutex<Vec<SnapshotBuilt>>>,
    watchers: Vec<JoinHandle<()>>,
}

impl Cluster {
    /// Bootstrap one node, then enrol and join the others through it with a join token.
    async fn start(size: usize, base: &Path) -> anyhow::Result<Cluster> {
        Cluster::start_on(size, base, None).await
    }

    /// [`Cluster::start`], with the first node (the leader) on `leader_runtime` when given, so its
    /// threads' CPU can be told apart from the other nodes'.
    async fn start_on(size: usize, base: &Path, leader_runtime: Option<&Handle>) -> anyhow::Result<Cluster> {
        let mut cluster =
            Cluster { nodes: Vec::new(), dirs: Vec::new(), snapshots: Arc::default(), watchers: Vec::new() };
        match cluster.grow(size, base, leader_runtime).await {
            Ok(()) => Ok(cluster),
            Err(e) => {
                cluster.shutdown().await;
                Err(e)
            }
        }
    }

    async fn grow(&mut self, size: usize, base: &Path, leader_runtime: Option<&Handle>) -> anyhow::Result<()> {
        let dir = new_data_dir(base)?;
        let config = CatalogConfig::local(dir.path());
        let first = match leader_runtime {
            Some(runtime) => runtime.spawn(start_node(config)).await.context("leader start-up task")??,
            None => start_node(config).await?,
        };
        self.dirs.push(dir);
        self.add(first.clone());
        first.wait_ready(READY_TIMEOUT).await.context("waiting for the first node to lead")?;
        if size == 1 {
            return Ok(());
        }

        let ca = ClusterCa::load(&TlsPaths::new(self.dirs[0].path())).context("loading the first node's cluster CA")?;
        let token = ca.join_token(raft::now_millis() / 1000 + 3600, u32::try_from(size - 1).unwrap_or(u32::MAX));
        for _ in 1..size {
            // One at a time: each enrolment reserves a node id through the log.
            let dir = new_data_dir(base)?;
            let mut config = CatalogConfig::local(dir.path());
            config.join = Some(JoinConfig { addr: first.cluster_addr().to_owned(), token: token.clone() });
            let node = start_node(config).await?;
            self.dirs.push(dir);
            self.add(node);
        }

        let voters = size.min(VOTERS);
        first
            .raft()
            .wait(Some(READY_TIMEOUT))
            .metrics(
                |m| {
                    let membership = m.membership_config.membership();
                    membership.voter_ids().count() == voters && membership.nodes().count() == size
                },
                "every node a member, the first three voters",
            )
            .await
            .with_context(|| format!("waiting for {voters} voters among {size} members"))?;
        let last_index = first.raft().metrics().borrow().last_log_index;
        for node in &self.nodes {
            node.wait_ready(READY_TIMEOUT)
                .await
                .with_context(|| format!("node {} never saw a leader", node.node_id()))?;
            node.raft()
                .wait(Some(READY_TIMEOUT))
                .applied_index_at_least(last_index, "caught up with the leader")
                .await
                .with_context(|| format!("node {} never caught up", node.node_id()))?;
        }
        Ok(())
    }

    fn add(&mut self, node: Catalog) {
        self.watchers.push(tokio::spawn(watch_snapshots(node.clone(), self.snapshots.clone())));
        self.nodes.push(node);
    }

    fn snapshots_since(&self, since: Instant) -> Vec<SnapshotBuilt> {
        let all = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        all.iter().filter(|c| c.at >= since).copied().collect()
    }

    /// The node the first node believes leads (proposals go there unless a run says otherwise).
    fn leader(&self) -> anyhow::Result<&Catalog> {
        let first = self.nodes.first().context("empty cluster")?;
        let leader_id = first.raft().metrics().borrow().current_leader.context("no leader known")?;
        self.nodes.iter().find(|n| n.node_id() == leader_id).with_context(|| format!("leader {leader_id} is not ours"))
    }

    fn follower_of(&self, leader: &Catalog) -> Option<&Catalog> {
        self.nodes.iter().find(|n| n.node_id() != leader.node_id())
    }

    /// Followers first, so the leader does not spend the shutdown electing or retrying.
    async fn shutdown(self) {
        for watcher in &self.watchers {
            watcher.abort();
        }
        for node in self.nodes.iter().rev() {
            node.shutdown().await;
        }
        drop(self.dirs);
    }
}

/// Record every snapshot `node`'s metrics show, until aborted or Raft stops.
async fn watch_snapshots(node: Catalog, into: Arc<Mutex<Vec<SnapshotBuilt>>>) {
    let mut metrics = node.raft().metrics();
    let mut last = metrics.borrow_and_update().snapshot.map(|l| l.index);
    while metrics.changed().await.is_ok() {
        let now = metrics.borrow_and_update().snapshot.map(|l| l.index);
        if let Some(index) = now.filter(|_| now != last) {
            let built = SnapshotBuilt { at: Instant::now(), node: node.node_id(), index };
            into.lock().unwrap_or_else(|p| p.into_inner()).push(built);
        }
        last = now;
    }
}

fn new_data_dir(base: &Path) -> anyhow::Result<TempDir> {
    tempfile::Builder::new()
        .prefix("raft-bench-")
        .tempdir_in(base)
        .with_context(|| format!("creating a data dir in {}", base.display()))
}

async fn start_node(config: CatalogConfig) -> anyhow::Result<Catalog> {
    let dir = config.data_dir.clone();
    // A private registry per node: several nodes in one process would collide on the global one.
    Catalog::start_with_metrics(config, Arc::new(CatalogMetrics::unregistered()))
        .await
        .with_context(|| format!("starting a node in {}", dir.display()))
}

#[path = "raft_bench/learners.rs"]
mod learners;

fn noop(payload: usize) -> Command {
    Command::Noop { payload: vec![0u8; payload] }
}

/// What one run measured.
#[derive(Debug, Default)]
struct Outcome {
    /// Commit latency of every successful proposal, sorted.
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
    /// Open loop only: ticks not issued because too many proposals were in flight.
    shed: u64,
    /// Open loop only: the worst delay between a tick's scheduled time and the proposal's issue.
    worst_issue_lag: Duration,
    /// When the slowest committed proposal was sent, and its latency.
    slowest: Option<(Instant, Duration)>,
    /// From the first proposal to the last answer.
    elapsed: Duration,
}

impl Outcome {
    /// Count one proposal sent at `sent`: its commit latency, or why it failed.
    fn record(&mut self, sent: Instant, result: Result<Duration, String>) {
        match result {
            Ok(latency) => {
                self.latencies.push(latency);
                if self.slowest.is_none_or(|(_, worst)| latency > worst) {
                    self.slowest = Some((sent, latency));
                }
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    fn merge(&mut self, part: Outcome) {
        self.latencies.extend(part.latencies);
        self.errors += part.errors;
        if let Some(e) = part.first_error {
            self.first_error.get_or_insert(e);
        }
        self.shed += part.shed;
        self.worst_issue_lag = self.worst_issue_lag.max(part.worst_issue_lag);
        if let Some((sent, latency)) = part.slowest {
            if self.slowest.is_none_or(|(_, worst)| latency > worst) {
                self.slowest = Some((sent, latency));
            }
        }
    }

    fn finish(mut self, elapsed: Duration) -> Self {
        self.latencies.sort_unstable();
        self.elapsed = elapsed;
        self
    }

    fn commits_per_sec(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// `proposers` tasks each propose, wait for the commit, and propose again until `run_for` is up.
async fn closed_loop(node: &Catalog, proposers: usize, run_for: Duration, payload: usize) -> Outcome {
    let start = Instant::now();
    let deadline = start + run_for;
    let mut tasks = JoinSet::new();
    for _ in 0..proposers {
        let node = node.clone();
        tasks.spawn(async move {
            let mut outcome = Outcome::default();
            while Instant::now() < deadline {
                let sent = Instant::now();
                let result = node.propose(noop(payload)).await;
                outcome.record(sent, result.map(|_| sent.elapsed()).map_err(|e| e.to_string()));
            }
            outcome
        });
    }
    let mut total = Outcome::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(part) => total.merge(part),
            Err(e) => total.record(start, Err(format!("proposer task: {e}"))),
        }
    }
    total.finish(start.elapsed())
}

/// Issue one proposal every `1/rate` s for `run_for`, each on its own task, never waiting for
/// earlier ones. Latency runs from the issue to the commit; the issuer's own lateness against the
/// schedule is reported apart, so a stalled issuer cannot hide (coordinated omission).
async fn open_loop(node: &Catalog, rate: u32, run_for: Duration, payload: usize) -> Outcome {
    let ticks = (run_for.as_secs_f64() * f64::from(rate)).round().max(1.0) as u64;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    // Burst: a late tick is followed at once by the ones it delayed, keeping the average rate.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let permits = Arc::new(Semaphore::new(OPEN_LOOP_MAX_IN_FLIGHT));
    let mut tasks = JoinSet::new();
    let mut outcome = Outcome::default();
    let start = Instant::now();
    for _ in 0..ticks {
        let scheduled = ticker.tick().await;
        let sent = Instant::now();
        outcome.worst_issue_lag = outcome.worst_issue_lag.max(sent - scheduled);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            outcome.shed += 1;
            continue;
        };
        let node = node.clone();
        tasks.spawn(async move {
            let result = node.propose(noop(payload)).await;
            drop(permit);
            (sent, result.map(|_| sent.elapsed()).map_err(|e| e.to_string()))
        });
        while let Some(done) = tasks.try_join_next() {
            record_spawned(&mut outcome, start, done);
        }
    }
    let drained = tokio::time::timeout(OPEN_LOOP_DRAIN, async {
        while let Some(done) = tasks.join_next().await {
            record_spawned(&mut outcome, start, done);
        }
    })
    .await;
    if drained.is_err() {
        let stuck = tasks.len();
        tasks.abort_all();
        for _ in 0..stuck {
            outcome.record(start, Err(format!("no answer within {OPEN_LOOP_DRAIN:?} after the run")));
        }
    }
    outcome.finish(start.elapsed())
}

type SpawnedProposal = Result<(Instant, Result<Duration, String>), tokio::task::JoinError>;

fn record_spawned(outcome: &mut Outcome, start: Instant, done: SpawnedProposal) {
    match done {
        Ok((sent, result)) => outcome.record(sent, result),
        Err(e) => outcome.record(start, Err(format!("proposer task: {e}"))),
    }
}

/// The disk's own pace: append `payload` bytes and `sync_data`, as a log append would.
#[derive(Debug)]
struct FsyncReference {
    /// Time of each append + sync, sorted.
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl FsyncReference {
    fn syncs_per_sec(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

fn fsync_reference(dir: &Path, run_for: Duration, payload: usize) -> anyhow::Result<FsyncReference> {
    let mut file = tempfile::Builder::new()
        .prefix("raft-bench-fsync-")
        .tempfile_in(dir)
        .with_context(|| format!("creating the fsync reference file in {}", dir.display()))?;
    let bytes = vec![0u8; payload.max(1)];
    let mut latencies = Vec::new();
    let start = std::time::Instant::now();
    while start.elapsed() < run_for {
        let sent = std::time::Instant::now();
        file.write_all(&bytes).context("writing the fsync reference file")?;
        file.as_file().sync_data().context("syncing the fsync reference file")?;
        latencies.push(sent.elapsed());
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    Ok(FsyncReference { latencies, elapsed })
}

/// The `q` quantile (nearest rank) of sorted durations.
fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    let last = sorted.len().checked_sub(1)?;
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.saturating_sub(1).min(last)])
}

fn millis(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| format!("{:.2}", d.as_secs_f64() * 1e3))
}

fn offset(start: Instant, at: Instant) -> String {
    format!("+{:.2} s", at.saturating_duration_since(start).as_secs_f64())
}

fn load_label(load: Load) -> String {
    match load {
        Load::Concurrent(1) => "batching off (1 sequential)".to_owned(),
        Load::Concurrent(n) => format!("batching on ({n} in flight)"),
        Load::FixedRate(rate) => format!("fixed {rate}/s (open loop)"),
    }
}

fn via_label(via: Via) -> &'static str {
    match via {
        Via::Leader => "leader",
        Via::Follower => "follower (fwd)",
    }
}

fn print_report(plan: &Plan, reference: &FsyncReference, rows: &[Row], total: Duration) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "raft-bench: Command::Noop {} B, {} s runs ({} s follower runs), {} cores, data in {}",
        plan.payload,
        plan.run_for.as_secs_f64(),
        plan.short_run_for.as_secs_f64(),
        cores,
        plan.dir.display()
    );
    println!(
        "reference:  bare append + File::sync_data loop: {:.0} syncs/s, p50 {} ms, p99 {} ms, max {} ms ({} syncs)",
        reference.syncs_per_sec(),
        millis(percentile(&reference.latencies, 0.50)),
        millis(percentile(&reference.latencies, 0.99)),
        millis(reference.latencies.last().copied()),
        reference.latencies.len()
    );
    println!();
    println!(
        "{:<5}  {:<28}  {:<14}  {:>9}  {:>7}  {:>7}  {:>7}  {:>13}  {:>7}  {:>6}",
        "nodes",
        "load",
        "proposed via",
        "commits/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "commits/fsync",
        "commits",
        "errors"
    );
    println!("{}", "-".repeat(5 + 28 + 14 + 9 + 7 + 7 + 7 + 13 + 7 + 6 + 2 * 9));
    let syncs_per_sec = reference.syncs_per_sec();
    for row in rows {
        let o = &row.outcome;
        let flag = if row.term_changed { " *" } else { "" };
        println!(
            "{:<5}  {:<28}  {:<14}  {:>9.0}  {:>7}  {:>7}  {:>7}  {:>13.2}  {:>7}  {:>6}{flag}",
            row.nodes,
            load_label(row.load),
            via_label(row.via),
            o.commits_per_sec(),
            millis(percentile(&o.latencies, 0.50)),
            millis(percentile(&o.latencies, 0.99)),
            millis(o.latencies.last().copied()),
            o.commits_per_sec() / syncs_per_sec.max(f64::MIN_POSITIVE),
            o.latencies.len(),
            o.errors + o.shed,
        );
    }
    println!();
    println!("commits/fsync = commits/s / syncs/s of the reference loop on the same disk (all nodes share it).");
    println!(
        "Per run: when the slowest commit was sent; snapshots built (+ log purge) on any node; +s from its start."
    );
    for row in rows {
        let o = &row.outcome;
        let name = format!("{} node(s), {}, via {}", row.nodes, load_label(row.load), via_label(row.via));
        let mut notes = Vec::new();
        if let Some((sent, latency)) = o.slowest {
            notes.push(format!("slowest {} ms sent at {}", millis(Some(latency)), offset(row.started, sent)));
        }
        if let Load::FixedRate(_) = row.load {
            notes.push(format!("issuer lag <= {} ms, {} ticks shed", millis(Some(o.worst_issue_lag)), o.shed));
        }
        // The nodes snapshot at the same index within milliseconds: one note per index.
        let mut indexes: Vec<u64> = row.snapshots.iter().map(|b| b.index).collect();
        indexes.sort_unstable();
        indexes.dedup();
        for index in indexes {
            let same: Vec<&SnapshotBuilt> = row.snapshots.iter().filter(|b| b.index == index).collect();
            let first = same.iter().map(|b| b.at).min().unwrap_or(row.started);
            let nodes: Vec<String> = same.iter().map(|b| format!("n{}", b.node)).collect();
            notes.push(format!("snapshot@{index} at {} on {}", offset(row.started, first), nodes.join(",")));
        }
        println!("  {name}: {}", notes.join("; "));
        if row.term_changed {
            println!("* {name}: the leader's term changed during the run (an election); figures are suspect");
        }
        if let Some(e) = &o.first_error {
            println!("{name}: {} errors, first: {e}", o.errors);
        }
    }
    println!("total time {:.1} s", total.as_secs_f64());
}
