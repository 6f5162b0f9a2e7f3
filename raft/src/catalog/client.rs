//! The client API of the catalog: proposals (forwarded to the leader from followers),
//! linearizable reads, and leader-only operations retried across elections.

use std::time::{Duration, Instant};

use openraft::ServerState;
use serde::{Deserialize, Serialize};

use super::batcher::{LocalWrite, PENDING};
use super::Catalog;
use crate::command::{CatalogError, Command, Response};
use crate::rpc::{Reply, Request};
use crate::state::CatalogState;
use crate::types::NodeId;

/// Why a proposal or read did not go through.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ProposeError {
    /// Applied, and the state machine refused it.
    #[error(transparent)]
    Rejected(#[from] CatalogError),
    /// No leader could be reached before the deadline; safe to retry later.
    #[error("catalog unavailable: {0}")]
    Unavailable(String),
    /// Raft stopped on this node.
    #[error("catalog stopped: {0}")]
    Fatal(String),
}

impl Catalog {
    /// Read after everything committed before this call has been applied locally.
    pub async fn read_linearizable<R>(&self, f: impl FnOnce(&CatalogState) -> R) -> Result<R, ProposeError> {
        let index = match self.leader_op(Request::ReadIndex).await? {
            Reply::ReadIndex(index) => index,
            other => return Err(ProposeError::Unavailable(format!("unexpected reply {other:?}"))),
        };
        self.inner
            .raft
            .wait(Some(Duration::from_secs(10)))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map_err(|e| ProposeError::Unavailable(e.to_string()))?;
        Ok(self.read(f))
    }

    /// Replicate `command` and return what applying it produced. Works on any node.
    pub async fn propose(&self, command: Command) -> Result<Response, ProposeError> {
        let result = self.propose_inner(command).await;
        let outcome = match &result {
            Ok(_) => "committed",
            Err(ProposeError::Rejected(_)) => "rejected",
            Err(_) => "failed",
        };
        self.inner.metrics.proposals.with_label_values(&[outcome]).inc();
        result
    }

    async fn propose_inner(&self, command: Command) -> Result<Response, ProposeError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last_error;
        loop {
            match self.propose_local(command.clone()).await {
                Ok(applied) => return applied.map_err(ProposeError::Rejected),
                Err(LocalWrite::Fatal(e)) => return Err(ProposeError::Fatal(e)),
                // Appended but not committed in time: retrying could apply it twice.
                Err(LocalWrite::Pending) => return Err(ProposeError::Unavailable(PENDING.into())),
                Err(LocalWrite::NotLeader(Some((leader, addr)))) => {
                    self.inner.metrics.forwarded_proposals.inc();
                    let forwarded = Request::Propose(command.clone());
                    match self.inner.client.call(&addr, &forwarded, FORWARD_TIMEOUT).await {
                        Ok(Reply::Propose(applied)) => return applied.map_err(ProposeError::Rejected),
                        Ok(Reply::NotLeader { .. }) => last_error = format!("node {leader} is no longer the leader"),
                        Ok(Reply::Error(e)) => return Err(ProposeError::Unavailable(format!("leader {leader}: {e}"))),
                        Ok(other) => return Err(ProposeError::Unavailable(format!("leader {leader}: {other:?}"))),
                        // The leader may have died mid-call (the common case in a fail-over): try
                        // the next leader. Commands carry their ids, so a repeat is refused as a
                        // duplicate rather than applied twice (chat lines are deduplicated by id).
                        Err(e) => last_error = e.to_string(),
                    }
                }
                Err(LocalWrite::NotLeader(None)) => last_error = "no leader elected yet".into(),
            }
            if Instant::now() >= deadline {
                return Err(ProposeError::Unavailable(last_error));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(super) fn leader(&self) -> Option<(NodeId, String)> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let leader = metrics.current_leader?;
        let addr = metrics.membership_config.membership().get_node(&leader)?.addr.clone();
        Some((leader, addr))
    }

    pub(super) fn is_leader(&self) -> bool {
        self.inner.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Run a leader-only request here if we lead, else on the leader; retry across elections.
    pub(super) async fn leader_op(&self, request: Request) -> Result<Reply, ProposeError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last_error;
        loop {
            let reply = if self.is_leader() {
                Ok(self.handle_on_leader(&request).await)
            } else if let Some((_, addr)) = self.leader() {
                self.inner.client.call(&addr, &request, Duration::from_secs(20)).await
            } else {
                Ok(Reply::NotLeader { leader: None })
            };
            match reply {
                Ok(Reply::NotLeader { .. }) => last_error = "leader changed".into(),
                Ok(reply) => return Ok(reply),
                Err(e) => last_error = e.to_string(),
            }
            if Instant::now() >= deadline {
                return Err(ProposeError::Unavailable(last_error));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A forwarded proposal waits a little longer than the leader's own commit timeout.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(7);
