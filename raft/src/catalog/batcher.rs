//! Group commit: proposals queued on the leader go into the log together.

use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot};

use super::Catalog;
use crate::command::{ApplyResult, Command, Response};
use crate::types::NodeId;
use crate::Raft;

impl Catalog {
    /// Write through the local Raft if it is the leader; never forwards. Concurrent proposals are
    /// grouped into one log entry by [`run_batcher`].
    pub(super) async fn propose_local(&self, command: Command) -> Result<ApplyResult, LocalWrite> {
        let (reply, answer) = oneshot::channel();
        if self.inner.batcher.send((command, reply)).await.is_err() {
            return Err(LocalWrite::Fatal("the catalog is shutting down".into()));
        }
        answer.await.unwrap_or_else(|_| Err(LocalWrite::Fatal("the catalog is shutting down".into())))
    }
}

/// A proposal waiting for the batcher, with where to send its outcome.
pub(super) type Proposal = (Command, oneshot::Sender<Result<ApplyResult, LocalWrite>>);

/// Proposals queued for the batcher before proposers wait for room.
pub(super) const BATCHER_QUEUE: usize = 8192;

/// Most proposals grouped into one log entry.
const MAX_GROUP: usize = 1024;

/// Group commit. openraft appends (and fsyncs) client writes one at a time, so under load each
/// proposal would cost a log append of its own. This task takes whatever proposals are queued,
/// writes them as one [`Command::Batch`] entry and hands each proposer its own answer. A lone
/// proposal is written as itself, so an idle catalog pays no extra latency.
pub(super) async fn run_batcher(raft: Raft, mut proposals: mpsc::Receiver<Proposal>) {
    while let Some(first) = proposals.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match proposals.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        if group.len() == 1 {
            let (command, reply) = group.remove(0);
            let _ = reply.send(write_entry(&raft, command).await);
            continue;
        }
        let (commands, replies): (Vec<Command>, Vec<_>) = group.into_iter().unzip();
        let count = commands.len();
        match write_entry(&raft, Command::Batch(commands)).await {
            Ok(Ok(Response::Batch(results))) if results.len() == count => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
            }
            Ok(other) => {
                let e = LocalWrite::Fatal(format!("batch of {count} answered {other:?}"));
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// One log entry through the local Raft.
async fn write_entry(raft: &Raft, command: Command) -> Result<ApplyResult, LocalWrite> {
    // A leader cut off from its quorum cannot commit; don't wait for it forever.
    let Ok(written) = tokio::time::timeout(COMMIT_TIMEOUT, raft.client_write(command)).await else {
        return Err(LocalWrite::Pending);
    };
    match written {
        Ok(response) => Ok(response.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(LocalWrite::NotLeader(f.leader_id.zip(f.leader_node.map(|n| n.addr))))
        }
        Err(RaftError::APIError(e)) => Err(LocalWrite::Fatal(e.to_string())),
        Err(RaftError::Fatal(e)) => Err(LocalWrite::Fatal(e.to_string())),
    }
}

#[derive(Debug, Clone)]
pub(super) enum LocalWrite {
    NotLeader(Option<(NodeId, String)>),
    /// Appended to the leader's log but not committed within [`COMMIT_TIMEOUT`].
    Pending,
    Fatal(String),
}

/// How long a leader waits for a quorum to commit a proposal before answering "pending".
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) const PENDING: &str = "not committed in time (no quorum?); the write may still apply later";
