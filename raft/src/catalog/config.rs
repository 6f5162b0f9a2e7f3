//! What the catalog needs to start: data dir, cluster addresses, join, roles, Raft timing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::types::NodeId;

/// Raft timing and log retention.
#[derive(Debug, Clone)]
pub struct RaftTuning {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    /// Build a snapshot after this many applied entries since the last one.
    pub snapshot_every: u64,
    /// Log entries kept behind the snapshot (so slightly lagging followers avoid a snapshot).
    pub keep_logs: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            heartbeat_ms: 150,
            election_min_ms: 600,
            election_max_ms: 1200,
            snapshot_every: 10_000,
            keep_logs: 1_000,
        }
    }
}

/// Where to join an existing cluster.
#[derive(Debug, Clone)]
pub struct JoinConfig {
    pub addr: String,
    pub token: String,
}

/// Everything the catalog needs to start.
#[derive(Debug, Clone)]
pub struct CatalogConfig {
    pub data_dir: PathBuf,
    pub node_id: Option<NodeId>,
    /// UDP address the QUIC endpoint binds.
    pub cluster_bind: SocketAddr,
    /// `host:port` other nodes dial; derived from the bound address when `None`.
    pub cluster_advertise: Option<String>,
    pub join: Option<JoinConfig>,
    /// How many voters the cluster wants; later nodes stay learners.
    pub voters: usize,
    pub region: String,
    pub roles: Vec<String>,
    /// Extra addresses published in the node directory, e.g. `("http", "127.0.0.1:8080")`.
    pub addresses: Vec<(String, String)>,
    pub tuning: RaftTuning,
    /// Accept `Partition` requests on the admin socket (tests only).
    pub fault_injection: bool,
}

impl CatalogConfig {
    /// A single-node config on loopback with an ephemeral port (tests, benches).
    pub fn local(data_dir: &Path) -> Self {
        CatalogConfig {
            data_dir: data_dir.to_owned(),
            node_id: None,
            cluster_bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            cluster_advertise: None,
            join: None,
            voters: 3,
            region: "local".into(),
            roles: vec![],
            addresses: vec![],
            tuning: RaftTuning::default(),
            fault_injection: false,
        }
    }
}
