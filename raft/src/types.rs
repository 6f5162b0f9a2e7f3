//! The schema of replicated state: every record the catalog holds.
//!
//! Records are plain data. They are written to RocksDB through [`crate::codec`], which prefixes
//! each value with a format version so that a newer binary can still read what an older one wrote.
//! Field names serialize in camelCase because the same structs are the REST API's JSON shapes.

use serde::{Deserialize, Serialize};

/// Raft node id. Node 1 is the node that bootstrapped the cluster.
pub type NodeId = u64;

/// Milliseconds since the Unix epoch, as stamped by the proposer (never by `apply`, which must be
/// deterministic on every replica).
pub type UnixMillis = i64;

/// A person with an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: String,
    pub display_name: String,
    /// Lower-cased; unique across the catalog.
    pub email: String,
    /// `admin`, `creator`, `viewer`, ... (moderator is per channel, see [`Channel::moderators`]).
    pub roles: Vec<String>,
    /// PHC string (argon2id). `None` for accounts that cannot log in with a password.
    pub password_hash: Option<String>,
    pub created_at: UnixMillis,
}

/// A logged-in session. Only the hash of the bearer token is replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthSession {
    /// Hex SHA-256 of the bearer token.
    pub token_hash: String,
    pub user_id: String,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
}

/// Whether a channel is broadcasting right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum LiveState {
    Offline,
    Live,
}

/// A creator's channel: what viewers follow and what a stream key publishes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    pub id: String,
    pub owner_id: String,
    pub title: String,
    pub category: Option<String>,
    pub tags: Vec<String>,
    /// Hex SHA-256 of the stream key; the key itself is shown once, at creation or rotation.
    pub stream_key_hash: String,
    pub live_state: LiveState,
    pub current_session_id: Option<String>,
    pub moderators: Vec<String>,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}

/// One broadcast of a channel, from publish to unpublish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct StreamSession {
    pub id: String,
    pub channel_id: String,
    #[cfg_attr(feature = "utoipa", schema(value_type = i64))]
    pub started_at: UnixMillis,
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<i64>))]
    pub ended_at: Option<UnixMillis>,
    pub renditions: Vec<String>,
    pub peak_concurrent: u64,
    /// The node whose ingest accepted the publish, if it came in over RTMP/SRT.
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<u64>))]
    pub ingest_node: Option<NodeId>,
}

/// A chat line. `seq` is the Raft log index that applied it, so history orders the same everywhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ChatMessage {
    pub id: String,
    pub channel_id: String,
    pub user_id: String,
    pub text: String,
    #[cfg_attr(feature = "utoipa", schema(value_type = i64))]
    pub sent_at: UnixMillis,
    pub seq: u64,
}

/// What a node reports about itself; the node directory that placement and edges read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    #[cfg_attr(feature = "utoipa", schema(value_type = u64))]
    pub id: NodeId,
    pub region: String,
    pub roles: Vec<String>,
    /// Address -> URL/host:port, e.g. `("http", "127.0.0.1:8080")`, `("cluster", ...)`.
    pub addresses: Vec<(String, String)>,
    pub load: NodeLoad,
    #[cfg_attr(feature = "utoipa", schema(value_type = i64))]
    pub updated_at: UnixMillis,
}

impl NodeInfo {
    /// The advertised address of listener `name` (`http`, `cluster`, `edge`, `rtmp`, ...).
    pub fn address(&self, name: &str) -> Option<&str> {
        self.addresses.iter().find(|(n, _)| n == name).map(|(_, addr)| addr.as_str())
    }
}

/// Coarse load figures used for placement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct NodeLoad {
    /// Per mille of one core (1000 = one core busy).
    pub cpu_permille: u32,
    pub publishers: u32,
    pub viewers: u32,
}

/// A streamer's public profile (MySpace-style: bio, top friends, donation links).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub user_id: String,
    pub bio: String,
    pub avatar_url: Option<String>,
    pub banner_url: Option<String>,
    /// Must be one of the user's own channels.
    pub featured_channel_id: Option<String>,
    /// Existing users, at most eight, no duplicates, never the user themself.
    pub top_friends: Vec<String>,
    pub donation_addresses: Vec<DonationAddress>,
    #[cfg_attr(feature = "utoipa", schema(value_type = i64))]
    pub updated_at: UnixMillis,
}

/// A crypto address viewers can send to directly (the platform never holds funds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DonationAddress {
    /// Upper case, e.g. `BTC`, `ETH`.
    pub currency: String,
    pub address: String,
    pub note: Option<String>,
}

/// What a channel's word filter does with a blocked word.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum WordFilterMode {
    /// Refuse the message.
    #[default]
    Block,
    /// Replace the word with asterisks.
    Mask,
}

/// Per-channel chat rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ChatSettings {
    /// Minimum seconds between two messages of one viewer (0 = off). Moderators are exempt.
    pub slow_mode_secs: u32,
    /// Lower-case words; matched case-insensitively.
    pub blocked_words: Vec<String>,
    pub filter_mode: WordFilterMode,
}

/// A ban (no `until`) or a timeout (`until` set) of a user in one channel's chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ChatBan {
    pub channel_id: String,
    pub user_id: String,
    pub by: String,
    #[cfg_attr(feature = "utoipa", schema(value_type = i64))]
    pub at: UnixMillis,
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<i64>))]
    pub until: Option<UnixMillis>,
    pub reason: Option<String>,
}

/// A viewer count reported for a channel by one node (edges count unique viewers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ViewerSample {
    pub channel_id: String,
    pub node_id: NodeId,
    pub viewers: u64,
    pub at: UnixMillis,
    /// Seconds watched by each viewer who left since the node's last sample (see
    /// [`crate::state::audience`]).
    #[serde(default)]
    pub watched_seconds: Vec<u32>,
}
