//! `bitriver cluster ...`: administer a node through its data dir.
//!
//! These commands never take RocksDB's lock. With the node running they talk to it through the
//! admin socket in the data dir; with it stopped they read the data dir read-only (status), sign
//! with the CA key file (token), or reach the other members with the node's own certificate
//! (remove).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use raft::catalog::{admin_call, stored_node_id};
use raft::rpc::{Reply, Request};
use raft::state::CatalogState;
use raft::store::Database;
use raft::tls::{ClusterCa, NodeIdentity, TlsPaths};
use raft::transport::ClusterClient;
use raft::{ClusterStatus, MemberStatus};

use crate::config::ClusterCommand;

pub async fn run(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Token(args) => {
            let ca = ClusterCa::load(&TlsPaths::new(&args.data.data))
                .with_context(|| format!("reading the cluster CA in {}", args.data.data.display()))?;
            let expires = raft::now_millis() / 1000 + args.ttl.as_secs() as i64;
            println!("{}", ca.join_token(expires));
            Ok(())
        }
        ClusterCommand::Status(args) => {
            let status = status(&args.data.data).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", render_status(&status));
            }
            Ok(())
        }
        ClusterCommand::Remove(args) => remove(&args.data.data, args.node_id).await,
    }
}

async fn status(data: &Path) -> anyhow::Result<ClusterStatus> {
    match admin_call(data, &Request::Status).await {
        Ok(Reply::Status(status)) => return Ok(status),
        Ok(other) => bail!("node answered {other:?}"),
        Err(e) => tracing::debug!(error = %e, "admin socket unavailable; reading the data dir"),
    }
    offline_status(data)
}

/// Status from a stopped node's data dir: its last known membership and applied index.
fn offline_status(data: &Path) -> anyhow::Result<ClusterStatus> {
    let db = Database::open_read_only(&data.join("db"))
        .with_context(|| format!("no node running and no catalog in {}", data.display()))?;
    let (applied, membership) = db.applied_state()?;
    let vote = db.vote()?;
    let records = db.state_records()?;
    let state = CatalogState::load(records.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))?;
    let me = stored_node_id(data);
    let voters: Vec<u64> = membership.membership().voter_ids().collect();
    let members = membership
        .membership()
        .nodes()
        .map(|(id, node)| {
            let info = state.node(*id);
            MemberStatus {
                node_id: *id,
                region: info.map(|n| n.region.clone()).unwrap_or_default(),
                roles: info.map(|n| n.roles.clone()).unwrap_or_default(),
                voter: voters.contains(id),
                last_applied: if Some(*id) == me { applied.map(|l| l.index) } else { None },
                addr: node.addr.clone(),
            }
        })
        .collect();
    Ok(ClusterStatus { leader_id: None, term: vote.map(|v| v.leader_id.term).unwrap_or(0), members })
}

fn render_status(status: &ClusterStatus) -> String {
    let mut out = format!(
        "leader: {}\nterm:   {}\n\n{:<6} {:<8} {:<10} {:<10} {:<22} roles\n",
        status.leader_id.map_or("unknown".to_owned(), |l| l.to_string()),
        status.term,
        "node",
        "voter",
        "region",
        "applied",
        "address"
    );
    for m in &status.members {
        out.push_str(&format!(
            "{:<6} {:<8} {:<10} {:<10} {:<22} {}\n",
            m.node_id,
            if m.voter { "voter" } else { "learner" },
            if m.region.is_empty() { "-" } else { &m.region },
            m.last_applied.map_or("-".to_owned(), |i| i.to_string()),
            m.addr,
            m.roles.join(",")
        ));
    }
    out
}

async fn remove(data: &Path, node_id: u64) -> anyhow::Result<()> {
    let request = Request::Remove { node_id };
    let reply = match admin_call(data, &request).await {
        Ok(reply) => reply,
        Err(_) => remove_via_peers(data, &request).await?,
    };
    match reply {
        Reply::Done => {
            println!("node {node_id} removed");
            Ok(())
        }
        Reply::Error(e) => bail!("{e}"),
        other => bail!("unexpected reply {other:?}"),
    }
}

/// The node is stopped: use its certificate to ask the other members directly.
async fn remove_via_peers(data: &Path, request: &Request) -> anyhow::Result<Reply> {
    let me = stored_node_id(data).context("no node identity in the data dir")?;
    let identity = NodeIdentity::load(&TlsPaths::new(data), me)?;
    let status = offline_status(data)?;
    let endpoint = quinn::Endpoint::client(std::net::SocketAddr::from(([0, 0, 0, 0], 0)))?;
    let client = Arc::new(ClusterClient::new(endpoint, identity.client_config()?)?);
    let mut last = String::from("no other members known");
    for member in status.members.iter().filter(|m| m.node_id != me) {
        match client.call(&member.addr, request, Duration::from_secs(30)).await {
            Ok(reply) => return Ok(reply),
            Err(e) => last = e.to_string(),
        }
    }
    bail!("the node is not running and no other member answered: {last}")
}
