//! What load reports cost the catalog. A real catalog (RocksDB on disk, Raft) takes the reports of
//! many simulated nodes, each reporting twice a second as `bitriver` nodes do; group commit must
//! put many reports in one log entry, and every node's last report must be what the catalog holds.
//! Prints the figures (reports/s, log entries per report, commit latency, bytes per report).

use std::sync::Arc;
use std::time::Duration;

use raft::metrics::CatalogMetrics;
use raft::{Catalog, CatalogConfig, Command, LoadReport, NodeInfo, NodeLoad};
use tokio::task::JoinSet;
use tokio::time::Instant;

const NODES: u64 = 200;
const ROUNDS: u64 = 6;
const EVERY: Duration = Duration::from_millis(500);

fn report(node_id: u64, round: u64) -> LoadReport {
    LoadReport {
        node_id,
        cpu_permille: 300 + round as u32,
        egress_bps: 50_000_000 + node_id,
        streams: round as u32,
        connections: 1_000,
        at: 1_000 * round as i64 + 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_of_many_nodes_share_log_entries_and_the_last_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(CatalogMetrics::new(&prometheus::Registry::new()).unwrap());
    let catalog = Catalog::start_with_metrics(CatalogConfig::local(dir.path()), metrics).await.unwrap();
    catalog.wait_ready(Duration::from_secs(30)).await.unwrap();
    for id in 2..2 + NODES {
        let info = NodeInfo {
            id,
            region: "r".into(),
            roles: vec![],
            addresses: vec![],
            load: NodeLoad::default(),
            updated_at: 1,
        };
        catalog.propose(Command::UpsertNode(info)).await.unwrap();
    }

    let first_index = catalog.raft().metrics().borrow().last_log_index.unwrap_or(0);
    let mut latencies = Vec::new();
    let started = Instant::now();
    let mut tick = tokio::time::interval(EVERY);
    for round in 1..=ROUNDS {
        tick.tick().await;
        // Every node reports at about the same moment, like a fleet on synchronised timers (the
        // worst case for the leader).
        let mut reports = JoinSet::new();
        for id in 2..2 + NODES {
            let catalog = catalog.clone();
            reports.spawn(async move {
                let sent = Instant::now();
                catalog.propose(Command::ReportLoad(report(id, round))).await.map(|_| sent.elapsed())
            });
        }
        while let Some(done) = reports.join_next().await {
            latencies.push(done.unwrap().expect("a load report is committed"));
        }
    }
    let elapsed = started.elapsed();
    let entries = catalog.raft().metrics().borrow().last_log_index.unwrap_or(0) - first_index;
    let total = NODES * ROUNDS;

    for id in 2..2 + NODES {
        let held = catalog.read(|s| s.load_of(id).cloned());
        assert_eq!(held, Some(report(id, ROUNDS)), "node {id}'s last report");
    }
    assert!(entries < total, "{total} reports took {entries} log entries: group commit did not batch");

    latencies.sort();
    let pct = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    let bytes = raft::codec::encode(&Command::ReportLoad(report(2, 1))).len();
    eprintln!(
        "load reports: {total} from {NODES} nodes in {elapsed:.2?} ({:.0}/s), {entries} log entries \
         ({:.1} reports per entry), commit p50 {:.1?} p99 {:.1?}, {bytes} bytes per report",
        total as f64 / elapsed.as_secs_f64(),
        total as f64 / entries as f64,
        pct(50),
        pct(99),
    );
    catalog.shutdown().await;
}
