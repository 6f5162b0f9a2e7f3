//! Prometheus metrics of the catalog: Raft progress, apply latency, proposals.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Every catalog metric, registered once on the node's registry.
#[derive(Debug, Clone)]
pub struct CatalogMetrics {
    pub term: IntGauge,
    pub leader_id: IntGauge,
    pub is_leader: IntGauge,
    pub last_log_index: IntGauge,
    pub committed_index: IntGauge,
    pub applied_index: IntGauge,
    pub snapshot_index: IntGauge,
    pub purged_index: IntGauge,
    pub members: IntGauge,
    pub apply_seconds: Histogram,
    pub proposals: IntCounterVec,
    pub forwarded_proposals: IntCounter,
    pub snapshots_installed: IntCounter,
    pub refused_peers: IntCounter,
}

impl CatalogMetrics {
    /// Create the metrics and register them on `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let apply_seconds = Histogram::with_opts(
            HistogramOpts::new("bitriver_raft_apply_seconds", "Time to apply one batch of committed entries")
                .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25]),
        )?;
        registry.register(Box::new(apply_seconds.clone()))?;
        let proposals = IntCounterVec::new(
            Opts::new("bitriver_raft_proposals_total", "Proposals by outcome (committed, rejected, failed)"),
            &["outcome"],
        )?;
        registry.register(Box::new(proposals.clone()))?;
        Ok(CatalogMetrics {
            term: gauge("bitriver_raft_term", "Current Raft term")?,
            leader_id: gauge("bitriver_raft_leader_id", "Node id of the current leader (0 when unknown)")?,
            is_leader: gauge("bitriver_raft_is_leader", "1 when this node is the leader")?,
            last_log_index: gauge("bitriver_raft_last_log_index", "Index of the last log entry")?,
            committed_index: gauge("bitriver_raft_commit_index", "Index of the last committed entry")?,
            applied_index: gauge("bitriver_raft_applied_index", "Index of the last applied entry")?,
            snapshot_index: gauge("bitriver_raft_snapshot_index", "Last log index in the current snapshot")?,
            purged_index: gauge(
                "bitriver_raft_purged_index",
                "Last log index purged from the log (covered by a snapshot)",
            )?,
            members: gauge("bitriver_raft_members", "Voters and learners in the membership")?,
            apply_seconds,
            proposals,
            forwarded_proposals: counter(
                "bitriver_raft_forwarded_proposals_total",
                "Proposals this node forwarded to the leader",
            )?,
            snapshots_installed: counter(
                "bitriver_raft_snapshots_installed_total",
                "Snapshots installed from a leader",
            )?,
            refused_peers: counter(
                "bitriver_raft_refused_peers_total",
                "Cluster connections or requests refused (bad certificate, token, or unauthenticated RPC)",
            )?,
        })
    }

    /// Metrics on a private registry, for tests and tools.
    pub fn unregistered() -> Self {
        // Registering on a fresh registry cannot collide.
        Self::new(&Registry::new()).expect("fresh registry")
    }
}
