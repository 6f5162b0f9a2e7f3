//! Messages of the cluster protocol.
//!
//! Framing is one request and one response per QUIC bidirectional stream: the requester writes
//! an encoded [`Request`] and finishes its side, the responder reads to the end (bounded), answers
//! with an encoded [`Reply`] and finishes. QUIC does the framing, so there is no parser state to
//! keep here; decoding goes through [`crate::codec`], which bounds allocations.
//! The same messages travel over the local admin socket, length-prefixed.

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::command::{ApplyResult, Command};
use crate::{NodeId, TypeConfig};

/// Largest request or reply accepted on a stream (snapshots are the big ones).
pub const MAX_MESSAGE: usize = 512 << 20;

/// A request from one node (or the local CLI) to another.
#[derive(Debug, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A follower forwards a client proposal to the node it believes is leader.
    Propose(Command),
    /// Read index for a linearizable read on a follower.
    ReadIndex,
    /// An enrolled node asks to be added as a learner (and promoted if voters are wanted).
    Join {
        node_id: NodeId,
        addr: String,
    },
    /// Remove a node from the membership.
    Remove {
        node_id: NodeId,
    },
    /// Cluster status as the leader sees it.
    Status,
    /// A node without a certificate asks for one (the only request allowed unauthenticated).
    Enrol(EnrolRequest),
    /// The local replica's records (see `Catalog::dump_records`), for export and checks.
    Dump,
    /// Test-only fault injection: drop all RPCs to these nodes (needs BITRIVER_LIVE_FAULT_INJECTION=1).
    Partition {
        blocked: Vec<NodeId>,
    },
}

impl Request {
    /// Short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::AppendEntries(_) => "append_entries",
            Request::Vote(_) => "vote",
            Request::InstallSnapshot(_) => "install_snapshot",
            Request::Propose(_) => "propose",
            Request::ReadIndex => "read_index",
            Request::Join { .. } => "join",
            Request::Remove { .. } => "remove",
            Request::Status => "status",
            Request::Enrol(_) => "enrol",
            Request::Dump => "dump",
            Request::Partition { .. } => "partition",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EnrolRequest {
    pub token: String,
    pub csr_der: Vec<u8>,
    /// `--node-id` of the joiner, if set; otherwise the cluster picks one.
    pub node_id: Option<NodeId>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EnrolResponse {
    pub node_id: NodeId,
    pub cert_der: Vec<u8>,
    pub ca_cert_der: Vec<u8>,
    /// Every member can enrol the next node, so the CA key travels (over the pinned TLS session).
    pub ca_key_pem: String,
}

/// The answer to a [`Request`].
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    Propose(ApplyResult),
    ReadIndex(u64),
    Done,
    Status(crate::status::ClusterStatus),
    Enrol(EnrolResponse),
    Dump(Vec<crate::store::Record>),
    /// The receiver is not the leader; try `leader` (if known) instead.
    NotLeader {
        leader: Option<(NodeId, String)>,
    },
    /// Refused or failed, with a reason a person can read.
    Error(String),
}
