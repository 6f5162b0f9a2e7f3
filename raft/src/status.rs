//! Cluster status as reported by `GET /api/cluster`, `bitriver cluster status` and the `Status` RPC.

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// One member as `GET /api/cluster` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    pub node_id: NodeId,
    pub region: String,
    pub roles: Vec<String>,
    pub voter: bool,
    pub last_applied: Option<u64>,
    pub addr: String,
}

/// The cluster as one node (preferably the leader) sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub members: Vec<MemberStatus>,
}
