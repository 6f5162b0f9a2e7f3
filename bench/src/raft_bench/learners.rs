//! Learner runs (`--learners 0,8,32`): what the leader pays per learner, and how far behind the
//! learners apply.
//!
//! Every non-control node (edges, origins, ingest) reads the catalog as a Raft learner, so the
//! leader replicates each entry once per node of the fleet. Each run starts three voters and N
//! learners in this process, the leader on a tokio runtime of its own whose threads are named
//! [`LEADER_THREADS`], and drives an open loop of `--rate` commits/s of `--payload` bytes through
//! the leader. It prints:
//!
//! - commit p50/p99 (a quorum of voters; learners are not in it, so a rise is the leader's CPU or
//!   sockets saturating);
//! - learner lag: when a learner applied an entry minus when the leader applied it, over every
//!   learner and every entry of the run;
//! - the leader's CPU (its runtime's worker and blocking threads; RocksDB's own background
//!   threads are not in it) per 1,000 commits, and what each learner adds to it against the run
//!   without learners.

use std::time::Duration;

use anyhow::Context as _;
use raft::Catalog;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{millis, open_loop, percentile, Cluster, Outcome, Plan, WARM_UP, WARM_UP_PROPOSERS};

/// Name of the leader runtime's threads (at most 15 bytes: `/proc/*/comm` keeps no more).
const LEADER_THREADS: &str = "raft-leader";
/// How long learners get to apply the run's last entries before lags are counted.
const CATCH_UP: Duration = Duration::from_secs(20);

/// One learner run.
pub(super) struct LearnerRow {
    learners: usize,
    outcome: Outcome,
    /// Learner apply time minus leader apply time, every (learner, observed index), sorted.
    lags: Vec<Duration>,
    /// Entries the slowest learner was still behind when [`CATCH_UP`] ran out (0 = all caught up).
    behind: u64,
    leader_cpu_seconds: f64,
    process_cpu_seconds: f64,
    run_for: Duration,
    term_changed: bool,
}

impl LearnerRow {
    fn leader_cpu_ms_per_1k(&self) -> f64 {
        let commits = self.outcome.latencies.len().max(1) as f64;
        self.leader_cpu_seconds * 1e3 / commits * 1e3
    }
}

/// Three voters and `learners` learners: warm up, one open-loop run, lags, shut down.
pub(super) async fn bench(learners: usize, plan: &Plan) -> anyhow::Result<LearnerRow> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(LEADER_THREADS)
        // Idle blocking threads must not exit mid-run and take their CPU time with them.
        .thread_keep_alive(Duration::from_secs(3600))
        .enable_all()
        .build()
        .context("building the leader's runtime")?;
    let size = super::VOTERS + learners;
    eprintln!("starting 3 voters + {learners} learners in {} ...", plan.dir.display());
    let result = match Cluster::start_on(size, &plan.dir, Some(runtime.handle())).await {
        Ok(cluster) => {
            let row = measure(&cluster, learners, plan).await;
            cluster.shutdown().await;
            row
        }
        Err(e) => Err(e),
    };
    runtime.shutdown_background();
    result
}

async fn measure(cluster: &Cluster, learners: usize, plan: &Plan) -> anyhow::Result<LearnerRow> {
    let leader = cluster.nodes.first().context("empty cluster")?;
    anyhow::ensure!(
        cluster.leader()?.node_id() == leader.node_id(),
        "the bootstrapped node lost the lead before the run"
    );
    super::closed_loop(leader, WARM_UP_PROPOSERS, WARM_UP, plan.payload).await;

    let stop = CancellationToken::new();
    let watchers: Vec<JoinHandle<Vec<(Instant, u64)>>> =
        cluster.nodes.iter().map(|n| tokio::spawn(applied_over_time(n.clone(), stop.clone()))).collect();
    let term_before = leader.raft().metrics().borrow().current_term;
    let (leader_before, process_before) =
        (leader_cpu_seconds(), testkit::procfs::cpu_seconds(testkit::procfs::Pid::This)?);
    let started = Instant::now();
    eprintln!("  3 voters + {learners} learners: fixed {}/s for {:?} ...", plan.rate, plan.run_for);
    let outcome = open_loop(leader, plan.rate, plan.run_for, plan.payload).await;
    let run_for = started.elapsed();
    let leader_cpu_seconds = leader_cpu_seconds() - leader_before;
    let process_cpu_seconds = testkit::procfs::cpu_seconds(testkit::procfs::Pid::This)? - process_before;
    let term_changed = leader.raft().metrics().borrow().current_term != term_before;

    let last = applied(leader);
    let caught_up = tokio::time::timeout(CATCH_UP, async {
        for node in &cluster.nodes {
            let _ = node.raft().wait(Some(CATCH_UP)).applied_index_at_least(Some(last), "caught up").await;
        }
    })
    .await;
    let behind = match caught_up {
        Ok(()) => 0,
        Err(_) => cluster.nodes.iter().map(|n| last.saturating_sub(applied(n))).max().unwrap_or(0),
    };
    stop.cancel();
    let mut series = Vec::new();
    for watcher in watchers {
        series.push(watcher.await.context("applied-index watcher")?);
    }
    let lags = lags(&series[0], &series[super::VOTERS..], started);
    Ok(LearnerRow { learners, outcome, lags, behind, leader_cpu_seconds, process_cpu_seconds, run_for, term_changed })
}

fn applied(node: &Catalog) -> u64 {
    node.raft().metrics().borrow().last_applied.map_or(0, |l| l.index)
}

/// Every change of `node`'s applied index, with when this task saw it, until `stop`.
async fn applied_over_time(node: Catalog, stop: CancellationToken) -> Vec<(Instant, u64)> {
    let mut metrics = node.raft().metrics();
    let mut seen = vec![(Instant::now(), metrics.borrow_and_update().last_applied.map_or(0, |l| l.index))];
    loop {
        tokio::select! {
            () = stop.cancelled() => return seen,
            changed = metrics.changed() => {
                if changed.is_err() {
                    return seen;
                }
                let index = metrics.borrow_and_update().last_applied.map_or(0, |l| l.index);
                if seen.last().is_none_or(|&(_, last)| index > last) {
                    seen.push((Instant::now(), index));
                }
            }
        }
    }
}

/// For each index a learner reached after `since`: when it did minus when the leader first had
/// that index applied. Sorted.
fn lags(leader: &[(Instant, u64)], learners: &[Vec<(Instant, u64)>], since: Instant) -> Vec<Duration> {
    let mut lags = Vec::new();
    for learner in learners {
        for &(at, index) in learner.iter().filter(|(at, _)| *at >= since) {
            let first = leader.partition_point(|&(_, i)| i < index);
            if let Some(&(leader_at, _)) = leader.get(first) {
                lags.push(at.saturating_duration_since(leader_at));
            }
        }
    }
    lags.sort_unstable();
    lags
}

/// CPU seconds of this process's threads named [`LEADER_THREADS`].
fn leader_cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    let mut ticks = 0.0;
    for task in tasks.flatten() {
        let dir = task.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() != LEADER_THREADS {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit_once(')').map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
        // utime and stime are fields 14 and 15; the split starts at field 3.
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
        ticks += field(14) + field(15);
    }
    ticks / testkit::procfs::clock_ticks()
}

pub(super) fn print(plan: &Plan, rows: &[LearnerRow]) {
    println!();
    println!(
        "learners: 3 voters + N learners in one process, fixed {}/s open loop of {} B through the leader, {} s runs",
        plan.rate,
        plan.payload,
        plan.run_for.as_secs_f64()
    );
    println!(
        "{:>8}  {:>9}  {:>10}  {:>10}  {:>9}  {:>9}  {:>9}  {:>15}  {:>11}  {:>8}  {:>6}",
        "learners",
        "commits/s",
        "commit p50",
        "commit p99",
        "lag p50",
        "lag p99",
        "lag max",
        "leader ms/1k c.",
        "+/learner",
        "proc CPU",
        "errors"
    );
    println!("{}", "-".repeat(8 + 9 + 10 + 10 + 9 * 3 + 15 + 11 + 8 + 6 + 2 * 10));
    let base = rows.iter().find(|r| r.learners == 0).map(LearnerRow::leader_cpu_ms_per_1k);
    for row in rows {
        let o = &row.outcome;
        let per_learner = match base {
            Some(base) if row.learners > 0 => {
                format!("{:.2}", (row.leader_cpu_ms_per_1k() - base) / row.learners as f64)
            }
            _ => "-".to_owned(),
        };
        let flag = if row.term_changed { " *" } else { "" };
        println!(
            "{:>8}  {:>9.0}  {:>10}  {:>10}  {:>9}  {:>9}  {:>9}  {:>15.1}  {:>11}  {:>7.0}%  {:>6}{flag}",
            row.learners,
            o.commits_per_sec(),
            millis(percentile(&o.latencies, 0.50)),
            millis(percentile(&o.latencies, 0.99)),
            millis(percentile(&row.lags, 0.50)),
            millis(percentile(&row.lags, 0.99)),
            millis(row.lags.last().copied()),
            row.leader_cpu_ms_per_1k(),
            per_learner,
            row.process_cpu_seconds / row.run_for.as_secs_f64() * 100.0,
            o.errors + o.shed,
        );
        if row.behind > 0 {
            println!(
                "  {} learners: the slowest was {} entries behind {CATCH_UP:?} after the run",
                row.learners, row.behind
            );
        }
        if row.term_changed {
            println!("* {} learners: the leader's term changed during the run; figures are suspect", row.learners);
        }
    }
    println!(
        "leader ms/1k c. = CPU ms of the leader's runtime threads per 1,000 commits; +/learner = its rise per learner"
    );
    println!("over the run without learners; lag = learner apply time - leader apply time; proc CPU = all nodes, % of one core.");
}
