//! What nodes say about their load, and which nodes are draining: the inputs of placement.
//!
//! Every node proposes a [`LoadReport`] a few times a second ([`Command::ReportLoad`]); the
//! leader's group commit puts the reports of many nodes in one log entry. Reports are soft
//! state: they go through the log (so every replica holds the same figures) but are not written
//! as records, because a report is worthless a second later and storing it would rewrite a
//! RocksDB value, and grow every snapshot, for nothing. After a restart or a snapshot install a
//! node's figures are back within one report period. A drained node ([`Command::SetDraining`],
//! a durable record: it is an operator's decision) keeps serving what it serves, but placement
//! and edges stop choosing it for new work.
//!
//! Same contract as [`crate::state`] for the durable part: deterministic, every change returned
//! as [`Mutation`]s, and `load_record` rebuilding exactly what applying built.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::command::{ApplyResult, CatalogError, Command, Response};
use crate::state::{delete, put, CatalogState, Mutation};
use crate::types::{NodeId, UnixMillis};

mod key {
    pub(super) const DRAIN: &str = "drain/";
}

/// A load report older than this (five report periods of half a second) means the node is not
/// reaching the catalog: it may be dead, partitioned or hung. Judged on the reader's clock.
pub const REPORT_STALE_AFTER_MS: UnixMillis = 2_500;

/// A node's load as it measured it. Figures are coarse on purpose: placement compares nodes, it
/// does not account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LoadReport {
    #[cfg_attr(feature = "utoipa", schema(value_type = u64))]
    pub node_id: NodeId,
    /// CPU time of the process per mille of one core since the previous report (2000 = two
    /// cores busy).
    pub cpu_permille: u32,
    /// Bytes per second the node sent to viewers and other nodes (edge and origin responses).
    pub egress_bps: u64,
    /// Live streams the node packages or publishes.
    pub streams: u32,
    /// Open client connections (viewers at the edge, publishers at ingest).
    pub connections: u32,
    /// The reporter's clock when it measured.
    #[cfg_attr(feature = "utoipa", schema(value_type = i64))]
    pub at: UnixMillis,
}

/// Load and drain tables. Only `draining` is durable, so only it takes part in equality (the
/// catalog's tables equal a reload of its records).
#[derive(Debug, Default, Clone)]
pub struct LoadTable {
    reports: BTreeMap<NodeId, LoadReport>,
    draining: BTreeSet<NodeId>,
}

impl PartialEq for LoadTable {
    fn eq(&self, other: &Self) -> bool {
        self.draining == other.draining
    }
}

fn drain_key(id: NodeId) -> String {
    format!("{}{id:020}", key::DRAIN)
}

impl LoadTable {
    /// Load one record if its key belongs here; `Ok(false)` for keys of other tables.
    pub(crate) fn load_record(&mut self, key: &str, value: &[u8]) -> Result<bool, CodecError> {
        if key.starts_with(key::DRAIN) {
            let id: NodeId = codec::decode(value)?;
            self.draining.insert(id);
        } else {
            return Ok(false);
        }
        Ok(true)
    }
}

impl CatalogState {
    /// The node's last load report, if it sent one.
    pub fn load_of(&self, node_id: NodeId) -> Option<&LoadReport> {
        self.load.reports.get(&node_id)
    }

    /// Whether the node's last load report is less than [`REPORT_STALE_AFTER_MS`] old at `now`.
    pub fn reports_fresh(&self, node_id: NodeId, now: UnixMillis) -> bool {
        self.load_of(node_id).is_some_and(|l| now - l.at < REPORT_STALE_AFTER_MS)
    }

    /// Whether the node is draining: placement and edges choose it only when nothing else fits.
    pub fn is_draining(&self, node_id: NodeId) -> bool {
        self.load.draining.contains(&node_id)
    }

    pub(crate) fn apply_load(&mut self, command: &Command, out: &mut Vec<Mutation>) -> ApplyResult {
        match command {
            Command::ReportLoad(report) => {
                if self.node(report.node_id).is_none() {
                    return Err(CatalogError::not_found("node", &report.node_id.to_string()));
                }
                // A report delayed behind a newer one (a retry) must not roll the figures back.
                if self.load.reports.get(&report.node_id).is_some_and(|r| r.at > report.at) {
                    return Ok(Response::Done);
                }
                self.load.reports.insert(report.node_id, report.clone());
                Ok(Response::Done)
            }
            Command::SetDraining { node_id, draining } => {
                if self.node(*node_id).is_none() {
                    return Err(CatalogError::not_found("node", &node_id.to_string()));
                }
                if *draining {
                    if self.load.draining.insert(*node_id) {
                        out.push(put(drain_key(*node_id), codec::encode(node_id)));
                    }
                } else if self.load.draining.remove(node_id) {
                    out.push(delete(drain_key(*node_id)));
                }
                Ok(Response::Done)
            }
            other => Err(CatalogError::invalid("command", &format!("not a load command: {other:?}"))),
        }
    }

    /// A node left the directory: its load and drain records go with it.
    pub(crate) fn forget_node_load(&mut self, node_id: NodeId, out: &mut Vec<Mutation>) {
        self.load.reports.remove(&node_id);
        if self.load.draining.remove(&node_id) {
            out.push(delete(drain_key(node_id)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{NodeInfo, NodeLoad};

    fn node(id: NodeId) -> Command {
        Command::UpsertNode(NodeInfo {
            id,
            region: "eu".into(),
            roles: vec![],
            addresses: vec![],
            load: NodeLoad::default(),
            updated_at: 1,
        })
    }

    fn report(node_id: NodeId, streams: u32, at: UnixMillis) -> Command {
        Command::ReportLoad(LoadReport { node_id, cpu_permille: 250, egress_bps: 1_000, streams, connections: 3, at })
    }

    fn reload(records: &BTreeMap<Vec<u8>, Vec<u8>>) -> CatalogState {
        CatalogState::load(records.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))).unwrap()
    }

    #[test]
    fn reports_are_kept_per_node_and_drains_survive_a_reload() {
        let mut state = CatalogState::default();
        let mut records = BTreeMap::new();
        let mut index = 0;
        let mut apply = |state: &mut CatalogState, command: Command| {
            index += 1;
            let (result, mutations) = state.apply(index, &command);
            for m in mutations {
                match m.value {
                    Some(v) => records.insert(m.key, v),
                    None => records.remove(&m.key),
                };
            }
            assert_eq!(&reload(&records), state, "after {command:?}");
            result
        };
        assert!(matches!(apply(&mut state, report(7, 1, 10)), Err(CatalogError::NotFound { .. })));
        apply(&mut state, node(7)).unwrap();
        let (_, written) = state.apply(100, &report(7, 1, 10));
        assert!(written.is_empty(), "reports are soft state: no record");
        apply(&mut state, report(7, 4, 20)).unwrap();
        // A late report does not roll the figures back.
        apply(&mut state, report(7, 2, 15)).unwrap();
        assert_eq!(state.load_of(7).map(|l| (l.streams, l.at)), Some((4, 20)));

        assert!(!state.is_draining(7));
        apply(&mut state, Command::SetDraining { node_id: 7, draining: true }).unwrap();
        apply(&mut state, Command::SetDraining { node_id: 7, draining: true }).unwrap();
        assert!(state.is_draining(7));
        assert!(apply(&mut state, Command::SetDraining { node_id: 8, draining: true }).is_err());
        apply(&mut state, Command::SetDraining { node_id: 7, draining: false }).unwrap();
        assert!(!state.is_draining(7));

        // Removing the node removes its load and drain records.
        apply(&mut state, Command::SetDraining { node_id: 7, draining: true }).unwrap();
        apply(&mut state, Command::RemoveNode { id: 7 }).unwrap();
        assert!(state.load_of(7).is_none() && !state.is_draining(7));
        assert!(records.keys().all(|k| !k.starts_with(b"drain/")));
    }
}
