//! Messages of the cluster protocol.
//!
//! Framing is one request and one response per QUIC bidirectional stream: the requester writes
//! an encoded [`Request`] and finishes its side, the responder reads to the end (bounded), answers
//! with an encoded [`Reply`] and finishes. QUIC does the framing, so there is no parser state to
//! keep here; decoding goes through [`crate::codec`], which bounds allocations.
//! The same messages travel over the local admin socket, length-prefixed.
//!
//! Each request kind has its own size limit and read deadline ([`frame_limits`]), known from the
//! first two bytes of the frame, so a peer cannot make the listener buffer a snapshot-sized
//! message to ask for the status.

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::{Deserialize, Serialize};

use std::time::Duration;

use crate::codec::FORMAT_VERSION;
use crate::command::{ApplyResult, Command};
use crate::{NodeId, TypeConfig};

/// Largest request or reply accepted on a stream (log batches are the big ones).
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
        /// Whether it may be promoted to voter. Set from the joiner's certificate by the member it
        /// asks (only control nodes vote); trusted only when forwarded by a control node.
        may_vote: bool,
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
    /// Revoke a node's certificate cluster-wide and remove it from the membership.
    Revoke {
        node_id: NodeId,
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
            Request::Revoke { .. } => "revoke",
        }
    }
}

/// How much of a request kind the listener reads, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    pub kind: &'static str,
    /// Largest encoded request of this kind.
    pub max_bytes: usize,
    /// Longest a peer may take to send it.
    pub deadline: Duration,
}

const SMALL: usize = 64 << 10;
const QUICK: Duration = Duration::from_secs(5);
const BULK: Duration = Duration::from_secs(30);

/// Limits of each request kind, in [`Request`]'s variant order (bincode writes the variant index
/// as the byte after the format version; a unit test keeps this table in step with the enum).
const LIMITS: [FrameLimits; 12] = [
    // openraft sends at most `max_payload_entries` (512) entries per append; entries are
    // proposals, group commits included, so this is the one large kind.
    FrameLimits { kind: "append_entries", max_bytes: MAX_MESSAGE, deadline: BULK },
    FrameLimits { kind: "vote", max_bytes: SMALL, deadline: QUICK },
    // Snapshots travel in chunks of openraft's `snapshot_max_chunk_size` (3 MiB by default).
    FrameLimits { kind: "install_snapshot", max_bytes: 64 << 20, deadline: BULK },
    FrameLimits { kind: "propose", max_bytes: 16 << 20, deadline: BULK },
    FrameLimits { kind: "read_index", max_bytes: SMALL, deadline: QUICK },
    FrameLimits { kind: "join", max_bytes: SMALL, deadline: QUICK },
    FrameLimits { kind: "remove", max_bytes: SMALL, deadline: QUICK },
    FrameLimits { kind: "status", max_bytes: SMALL, deadline: QUICK },
    FrameLimits { kind: "enrol", max_bytes: MAX_ENROL_REQUEST, deadline: QUICK },
    FrameLimits { kind: "dump", max_bytes: SMALL, deadline: QUICK },
    FrameLimits { kind: "partition", max_bytes: SMALL, deadline: QUICK },
    FrameLimits { kind: "revoke", max_bytes: SMALL, deadline: QUICK },
];

/// Largest enrolment request (a token, a CSR and a few roles).
pub const MAX_ENROL_REQUEST: usize = 16 << 10;

/// The limits of the request whose encoded frame starts with `prefix` (at least 2 bytes), or
/// `None` if it cannot be a request of this format version.
pub fn frame_limits(prefix: &[u8]) -> Option<FrameLimits> {
    match prefix {
        [FORMAT_VERSION, variant, ..] => LIMITS.get(usize::from(*variant)).copied(),
        _ => None,
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EnrolRequest {
    pub token: String,
    pub csr_der: Vec<u8>,
    /// `--node-id` of the joiner, if set; otherwise the cluster picks one.
    pub node_id: Option<NodeId>,
    /// The roles the joiner runs; they go into its certificate and bound what it may do.
    pub roles: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EnrolResponse {
    pub node_id: NodeId,
    pub cert_der: Vec<u8>,
    pub ca_cert_der: Vec<u8>,
    /// The CA key, for control nodes only (they enrol the next nodes); travels over the TLS
    /// session pinned to the token's CA.
    pub ca_key_pem: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    /// The limits table follows the enum: every variant's frame maps to its own kind.
    #[test]
    fn frame_limits_follow_the_request_enum() {
        let enrol = EnrolRequest { token: "t".into(), csr_der: vec![1; 100], node_id: None, roles: vec![] };
        let requests = vec![
            Request::Vote(VoteRequest::new(openraft::Vote::new(1, 1), None)),
            Request::Propose(Command::Noop { payload: vec![] }),
            Request::ReadIndex,
            Request::Join { node_id: 2, addr: "a:1".into(), may_vote: false },
            Request::Remove { node_id: 2 },
            Request::Status,
            Request::Enrol(enrol),
            Request::Dump,
            Request::Partition { blocked: vec![] },
            Request::Revoke { node_id: 3 },
        ];
        for request in &requests {
            let frame = codec::encode(request);
            let limits = frame_limits(&frame).unwrap();
            assert_eq!(limits.kind, request.kind(), "{request:?}");
            assert!(frame.len() <= limits.max_bytes);
        }
        assert_eq!(frame_limits(&[FORMAT_VERSION, 0]).unwrap().kind, "append_entries");
        assert_eq!(frame_limits(&[FORMAT_VERSION, 2]).unwrap().kind, "install_snapshot");
        assert_eq!(frame_limits(&[FORMAT_VERSION, LIMITS.len() as u8]), None);
        assert_eq!(frame_limits(&[FORMAT_VERSION + 1, 0]), None);
        assert_eq!(frame_limits(&[FORMAT_VERSION]), None);
    }
}
