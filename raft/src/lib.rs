//! The catalog: BitRiver Live's replicated database.
//!
//! Every node holds a replica of the catalog (users, channels, sessions, chat, the node
//! directory). Writes are [`Command`]s replicated with openraft; each node applies them to a
//! deterministic state machine ([`state::CatalogState`]) stored in RocksDB ([`store`]). Nodes talk
//! Raft over QUIC with mutual TLS ([`transport`], [`tls`]); a new node enrols with a join token and
//! gets a certificate signed by the cluster CA naming its roles, which bound what it may ask of
//! the others ([`authz`]).
//!
//! The rest of the code uses [`Catalog`]: `propose` a command from any node (followers forward to
//! the leader), read the local replica, or read linearizably when freshness matters.
//!
//! This file is the composition root: the one `declare_raft_types!`.

pub mod authz;
pub mod catalog;
pub mod codec;
pub mod command;
pub mod home;
pub mod lease;
pub mod load;
pub mod metrics;
pub mod placement;
pub mod rpc;
pub mod state;
pub mod status;
pub mod store;
pub mod tls;
pub mod transport;
pub mod types;

pub use catalog::{Catalog, CatalogConfig, JoinConfig, ProposeError, RaftTuning};
pub use command::{ApplyResult, CatalogError, ChannelPatch, Command, Response, UserPatch};
pub use lease::{IngestLease, LeaseClaim};
pub use load::LoadReport;
pub use state::community;
pub use status::{ClusterStatus, MemberStatus};
pub use types::*;

use std::io::Cursor;

openraft::declare_raft_types!(
    /// Type configuration of the catalog's Raft group.
    pub TypeConfig:
        D = Command,
        R = ApplyResult,
        NodeId = u64,
        Node = openraft::BasicNode,
);

/// The openraft instance of the catalog.
pub type Raft = openraft::Raft<TypeConfig>;

/// Wall-clock milliseconds since the Unix epoch, for proposers to stamp commands with.
pub fn now_millis() -> UnixMillis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as UnixMillis).unwrap_or(0)
}

/// What the catalog stores for a stream key ([`Channel::stream_key_hash`]): hex SHA-256. The one
/// definition the API (which sets keys) and the ingest gate (which looks them up) both use.
pub fn stream_key_hash(key: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, key.as_bytes()).as_ref())
}
