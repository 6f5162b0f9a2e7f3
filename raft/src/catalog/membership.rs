//! Membership: adding enrolled nodes (promoted to voter while voters are wanted), removing
//! nodes, and the cluster status as the leader sees it.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};

use super::client::ProposeError;
use super::Catalog;
use crate::command::Command;
use crate::rpc::{Reply, Request};
use crate::status::{ClusterStatus, MemberStatus};
use crate::types::NodeId;

impl Catalog {
    /// Requests that only the leader answers. Replies `NotLeader` elsewhere.
    pub(super) async fn handle_on_leader(&self, request: &Request) -> Reply {
        let raft = &self.inner.raft;
        let not_leader = |c: &Catalog| Reply::NotLeader { leader: c.leader() };
        match request {
            Request::ReadIndex => match raft.get_read_log_id().await {
                Ok((read, _applied)) => Reply::ReadIndex(read.map(|l| l.index).unwrap_or(0)),
                Err(RaftError::APIError(_)) => not_leader(self),
                Err(e) => Reply::Error(e.to_string()),
            },
            Request::Status => {
                if self.is_leader() {
                    Reply::Status(self.local_status())
                } else {
                    not_leader(self)
                }
            }
            Request::Join { node_id, addr, may_vote } => self.add_member(*node_id, addr, *may_vote).await,
            Request::Remove { node_id } => self.remove_member(*node_id).await,
            other => Reply::Error(format!("{} is not a leader request", other.kind())),
        }
    }

    /// Add `node_id` as a learner; promote it to voter if it `may_vote` and voters are wanted.
    async fn add_member(&self, node_id: NodeId, addr: &str, may_vote: bool) -> Reply {
        let raft = &self.inner.raft;
        let node = BasicNode { addr: addr.to_owned() };
        let membership = raft.metrics().borrow().membership_config.membership().clone();
        if membership.get_node(&node_id).is_none() {
            match raft.add_learner(node_id, node, true).await {
                Ok(_) => tracing::info!(node_id, addr, "added learner"),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                    return Reply::NotLeader { leader: self.leader() }
                }
                Err(e) => return Reply::Error(format!("adding learner {node_id}: {e}")),
            }
        }
        let membership = raft.metrics().borrow().membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if may_vote && !voters.contains(&node_id) && voters.len() < self.inner.config.voters {
            match raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node_id])), true).await {
                Ok(_) => tracing::info!(node_id, voters = voters.len() + 1, "promoted to voter"),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                    return Reply::NotLeader { leader: self.leader() }
                }
                Err(e) => return Reply::Error(format!("promoting {node_id}: {e}")),
            }
        }
        Reply::Done
    }

    async fn remove_member(&self, node_id: NodeId) -> Reply {
        let raft = &self.inner.raft;
        let membership = raft.metrics().borrow().membership_config.membership().clone();
        let change = if membership.voter_ids().any(|v| v == node_id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([node_id]))
        } else if membership.get_node(&node_id).is_some() {
            ChangeMembers::RemoveNodes(BTreeSet::from([node_id]))
        } else {
            return Reply::Error(format!("node {node_id} is not a member"));
        };
        match raft.change_membership(change, false).await {
            Ok(_) => {}
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                return Reply::NotLeader { leader: self.leader() }
            }
            Err(e) => return Reply::Error(format!("removing {node_id}: {e}")),
        }
        tracing::info!(node_id, "removed from the cluster");
        // The directory entry goes too; a missing entry is fine.
        match self.propose(Command::RemoveNode { id: node_id }).await {
            Ok(_) | Err(ProposeError::Rejected(_)) => Reply::Done,
            Err(e) => Reply::Error(format!("removed from membership, directory update failed: {e}")),
        }
    }

    /// Remove a (dead) node from the cluster. Works on any node.
    pub async fn remove_node(&self, node_id: NodeId) -> Result<(), ProposeError> {
        match self.leader_op(Request::Remove { node_id }).await? {
            Reply::Done => Ok(()),
            Reply::Error(e) => Err(ProposeError::Unavailable(e)),
            other => Err(ProposeError::Unavailable(format!("unexpected reply {other:?}"))),
        }
    }

    /// Cluster status from the leader's point of view (or ours, if the leader is unreachable).
    pub async fn status(&self) -> ClusterStatus {
        if !self.is_leader() {
            if let Some((_, addr)) = self.leader() {
                if let Ok(Reply::Status(status)) =
                    self.inner.client.call(&addr, &Request::Status, Duration::from_secs(2)).await
                {
                    return status;
                }
            }
        }
        self.local_status()
    }

    /// Cluster status as this node sees it right now.
    pub fn local_status(&self) -> ClusterStatus {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let last_applied = if *id == self.inner.id {
                    metrics.last_applied.map(|l| l.index)
                } else {
                    metrics.replication.as_ref().and_then(|r| r.get(id).cloned().flatten()).map(|l| l.index)
                };
                let (region, roles) =
                    self.read(|s| s.node(*id).map(|n| (n.region.clone(), n.roles.clone()))).unwrap_or_default();
                MemberStatus {
                    node_id: *id,
                    region,
                    roles,
                    voter: voters.contains(id),
                    last_applied,
                    addr: node.addr.clone(),
                }
            })
            .collect();
        ClusterStatus { leader_id: metrics.current_leader, term: metrics.current_term, members }
    }
}
