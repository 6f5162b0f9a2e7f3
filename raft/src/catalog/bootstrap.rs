//! A node's identity and place in the cluster: the data dir's node id and PKI (created at
//! bootstrap or by enrolment), the address other nodes dial, the node directory entry, and the
//! Raft metrics mirrored into Prometheus.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use openraft::ServerState;
use serde::{Deserialize, Serialize};

use super::config::CatalogConfig;
use super::enrol::enrol_with;
use super::Catalog;
use crate::command::Command;
use crate::now_millis;
use crate::tls::{ClusterCa, NodeIdentity, TlsPaths};
use crate::types::{NodeId, NodeInfo, NodeLoad};

/// What the data dir remembers about this node besides RocksDB and the PKI.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeFile {
    node_id: NodeId,
}

fn node_file(data_dir: &Path) -> PathBuf {
    data_dir.join("node.json")
}

/// Node id recorded in a data dir, if any.
pub fn stored_node_id(data_dir: &Path) -> Option<NodeId> {
    let text = std::fs::read_to_string(node_file(data_dir)).ok()?;
    serde_json::from_str::<NodeFile>(&text).ok().map(|f| f.node_id)
}

pub(super) fn advertise_addr(configured: Option<&str>, bound: SocketAddr) -> String {
    match configured {
        Some(addr) if !addr.ends_with(":0") => addr.to_owned(),
        // A host with port 0: advertise that host at the port just bound (ephemeral ports).
        Some(addr) if addr.parse::<SocketAddr>().is_ok_and(|a| !a.ip().is_unspecified()) => {
            addr.parse::<SocketAddr>().map(|a| SocketAddr::new(a.ip(), bound.port()).to_string()).unwrap_or_default()
        }
        _ => {
            let ip = if bound.ip().is_unspecified() { std::net::IpAddr::from([127, 0, 0, 1]) } else { bound.ip() };
            SocketAddr::new(ip, bound.port()).to_string()
        }
    }
}

/// Use the identity in the data dir, or create one: bootstrap (new CA) or enrol (join token).
pub(super) async fn load_or_create_identity(
    config: &CatalogConfig,
    paths: &TlsPaths,
) -> anyhow::Result<(NodeIdentity, Option<ClusterCa>)> {
    if let (Some(id), true) = (stored_node_id(&config.data_dir), paths.has_identity()) {
        if let Some(flag) = config.node_id {
            anyhow::ensure!(
                flag == id,
                "--node-id {flag} does not match node id {id} stored in {}",
                config.data_dir.display()
            );
        }
        let identity = NodeIdentity::load(paths, id)?;
        let ca = ClusterCa::load(paths).ok();
        return Ok((identity, ca));
    }
    let (identity, ca) = match &config.join {
        None => {
            let ca = ClusterCa::generate()?;
            let identity = ca.issue_node_identity(config.node_id.unwrap_or(1), &config.roles)?;
            (identity, Some(ca))
        }
        Some(join) => enrol_with(join, config.node_id, &config.roles).await?,
    };
    // Only control nodes get (and keep) the CA key: see `Catalog::enrol`.
    if let Some(ca) = &ca {
        ca.save(paths)?;
    }
    identity.save(paths)?;
    let file = serde_json::to_string(&NodeFile { node_id: identity.node_id })?;
    std::fs::write(node_file(&config.data_dir), file)?;
    Ok((identity, ca))
}

/// Publish this node in the node directory once a leader is known.
pub(super) async fn register_in_directory(catalog: Catalog) {
    let config = &catalog.inner.config;
    let mut addresses = vec![("cluster".to_owned(), catalog.inner.advertise.clone())];
    addresses.extend(config.addresses.iter().cloned());
    loop {
        let info = NodeInfo {
            id: catalog.inner.id,
            region: config.region.clone(),
            roles: config.roles.clone(),
            addresses: addresses.clone(),
            load: NodeLoad::default(),
            updated_at: now_millis(),
        };
        let already = catalog.read(|s| {
            s.node(info.id).map(|n| n.region == info.region && n.roles == info.roles && n.addresses == info.addresses)
        });
        if already == Some(true) {
            return;
        }
        match catalog.propose(Command::UpsertNode(info)).await {
            Ok(_) => return,
            Err(e) => tracing::debug!(error = %e, "node directory registration pending"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Mirror openraft's metrics into Prometheus gauges.
pub(super) async fn track_metrics(catalog: Catalog) {
    let mut rx = catalog.inner.raft.metrics();
    loop {
        {
            let m = rx.borrow_and_update();
            let g = &catalog.inner.metrics;
            g.term.set(m.current_term as i64);
            g.leader_id.set(m.current_leader.unwrap_or(0) as i64);
            g.is_leader.set(i64::from(m.state == ServerState::Leader));
            g.last_log_index.set(m.last_log_index.unwrap_or(0) as i64);
            g.applied_index.set(m.last_applied.map(|l| l.index).unwrap_or(0) as i64);
            g.snapshot_index.set(m.snapshot.map(|l| l.index).unwrap_or(0) as i64);
            g.purged_index.set(m.purged.map(|l| l.index).unwrap_or(0) as i64);
            g.members.set(m.membership_config.membership().nodes().count() as i64);
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
