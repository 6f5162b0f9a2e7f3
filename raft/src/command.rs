//! What can be proposed to the catalog, what applying it returns, and why it can be refused.
//!
//! Every input that `apply` needs (ids, timestamps, hashes) is inside the command, chosen by the
//! proposer, so that every replica computes the same state from the same log.
//!
//! Compatibility rule: variants are only ever appended (the encoding stores the variant index), so
//! a newer binary replays an older log.

use serde::{Deserialize, Serialize};

use crate::types::{
    AuthSession, Channel, ChatBan, ChatMessage, ChatSettings, NodeId, NodeInfo, Profile, StreamSession, UnixMillis,
    User, ViewerSample,
};

/// A change to the catalog. Applied through Raft with [`crate::Catalog::propose`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Command {
    /// Does nothing; used to measure commit latency and to test the pipeline.
    Noop {
        payload: Vec<u8>,
    },
    /// Register or refresh a node's directory entry.
    UpsertNode(NodeInfo),
    /// Drop a node's directory entry (after it was removed from the membership).
    RemoveNode {
        id: NodeId,
    },
    /// Hand out the next free node id (enrolment of a node started without `--node-id`).
    ReserveNodeId {
        at_least: NodeId,
    },
    CreateUser(User),
    UpdateUser(UserPatch),
    DeleteUser {
        id: String,
    },
    CreateAuthSession(AuthSession),
    DeleteAuthSession {
        token_hash: String,
    },
    /// Drop every session whose expiry is before `now`.
    PurgeExpiredAuthSessions {
        now: UnixMillis,
    },
    CreateChannel(Channel),
    UpdateChannel(ChannelPatch),
    DeleteChannel {
        id: String,
    },
    SetStreamKey {
        channel_id: String,
        stream_key_hash: String,
        at: UnixMillis,
    },
    /// Start a broadcast; refused when the channel is already live.
    StartSession(StreamSession),
    /// End the channel's current broadcast.
    EndSession {
        channel_id: String,
        ended_at: UnixMillis,
        peak_concurrent: Option<u64>,
    },
    PostChat(ChatMessage),
    DeleteChat {
        channel_id: String,
        message_id: String,
    },
    /// Create or replace a user's profile.
    UpsertProfile(Profile),
    Follow {
        channel_id: String,
        user_id: String,
        at: UnixMillis,
    },
    Unfollow {
        channel_id: String,
        user_id: String,
    },
    Subscribe {
        channel_id: String,
        user_id: String,
        at: UnixMillis,
    },
    Unsubscribe {
        channel_id: String,
        user_id: String,
    },
    SetChatSettings {
        channel_id: String,
        settings: ChatSettings,
    },
    /// Ban (no `until`) or time out a user in a channel's chat.
    BanFromChat(ChatBan),
    UnbanFromChat {
        channel_id: String,
        user_id: String,
    },
    /// A node's current viewer count for a channel (feeds analytics and peak concurrents).
    ReportViewers(ViewerSample),
    /// Several commands in one log entry (group commit). Each is applied on its own, in order, and
    /// answers on its own in [`Response::Batch`]; a refused one does not affect the others.
    Batch(Vec<Command>),
    /// The renditions a live session is served in. Ingest starts a session before it knows the
    /// source (and so the transcode rungs it gets), then records them with this; refused once the
    /// session has ended.
    SetSessionRenditions {
        session_id: String,
        renditions: Vec<String>,
    },
    /// A node's load, a few times a second (see [`crate::load`]); refused for unknown nodes.
    ReportLoad(crate::load::LoadReport),
    /// Mark a node draining (placement and edges stop choosing it) or not.
    SetDraining {
        node_id: NodeId,
        draining: bool,
    },
    /// The holder renews its ingest leases (see [`crate::lease`]); answers with the channels
    /// whose lease it no longer holds.
    RenewIngestLeases {
        holder: NodeId,
        leases: Vec<crate::lease::LeaseClaim>,
        at: UnixMillis,
    },
    /// The leader ends a lease that was not renewed for its TTL, and with it the session (at the
    /// last renewal). Refused if the lease's version changed since the leader judged it.
    ExpireIngestLease {
        channel_id: String,
        version: u64,
    },
    /// End the channel's broadcast only if `session_id` is still its current session: what an
    /// ingest node proposes when its publish stops, so that a late end (a node cut off from the
    /// catalog, whose lease expired and whose channel went live elsewhere) never ends a newer
    /// session. Refused as not live otherwise.
    EndIngestSession {
        channel_id: String,
        session_id: String,
        ended_at: UnixMillis,
    },
    /// Refuse this node's certificate on every member from now on (`bitriver cluster revoke`).
    RevokeNode {
        node_id: NodeId,
        at: UnixMillis,
    },
    /// Count one use of a join token at enrolment; refused once it was used `max_uses` times, so a
    /// token cannot be replayed on another member. `expires_at` and `now` are Unix seconds.
    UseJoinToken {
        token_id: String,
        max_uses: u32,
        expires_at: i64,
        now: i64,
    },
    /// End every login session of a user but `keep` (a password change signs the other devices
    /// out). Answers [`Response::Removed`] with how many ended.
    RevokeUserAuthSessions {
        user_id: String,
        keep: Option<String>,
    },
    /// Set (or, with `None`, clear) a channel's home region (see [`crate::home`]).
    SetHomeRegion {
        channel_id: String,
        region: Option<String>,
    },
    /// Create or replace a region of the operator's network map (see [`crate::state::regions`]);
    /// refused for an unknown region, a malformed or overlapping network, an unknown neighbour.
    SetRegion(crate::state::regions::RegionRecord),
    /// Replace a channel's automod rules.
    SetAutomod {
        channel_id: String,
        rules: crate::state::automod::Automod,
    },
    /// A moderator's decision on a held chat message: approved (posted now) or rejected.
    ReviewHeldMessage {
        channel_id: String,
        message_id: String,
        approve: bool,
    },
    /// A user reports a message, a channel or a user (see [`crate::state::reports`]).
    FileReport(Box<crate::state::reports::Report>),
    /// A moderator's decision on a report; its action (delete, timeout, ban) applies with it.
    ResolveReport {
        id: String,
        resolution: crate::state::reports::Resolution,
    },
    /// A banned user appeals the ban (once per ban).
    FileAppeal(Box<crate::state::reports::Appeal>),
    /// An admin sets a legal page's text (see [`crate::state::takedowns`]).
    SetLegalPage(crate::state::takedowns::LegalPage),
    /// An admin records a copyright notice: the channel is hidden (and its broadcast ends).
    FileTakedown(Box<crate::state::takedowns::Takedown>),
    /// The owner's counter-notice (`counter`), or an admin's `restored` / `removed`.
    StepTakedown {
        id: String,
        event: crate::state::takedowns::TakedownEvent,
    },
    /// An ingest node's health sample of a broadcast it ingests (see [`crate::state::health`]).
    ReportHealth {
        session_id: String,
        sample: crate::state::health::HealthSample,
    },
    /// A user deletes their account ([`Command::DeleteUser`], and with `delete_chat` their chat
    /// lines go too instead of staying under "deleted user").
    EraseUser {
        id: String,
        delete_chat: bool,
    },
    /// Someone other than the banning moderator upholds or lifts the ban.
    DecideAppeal {
        id: String,
        decision: crate::state::reports::AppealDecision,
    },
    /// The node holding a recording's artefacts creates or updates it (see
    /// [`crate::state::recordings`]); the API queues a clip with it.
    PutRecording(Box<crate::state::recordings::Recording>),
    /// The owner publishes a ready recording.
    PublishRecording {
        id: String,
        at: UnixMillis,
    },
    /// The owner (or retention) deletes a recording: hidden now, its holder removes the files.
    DeleteRecording {
        id: String,
    },
    /// The holder removed a deleted recording's files: the entry goes too.
    ForgetRecording {
        id: String,
    },
}

/// Most commands one [`Command::Batch`] may carry (the position in the batch is part of `seq`).
pub const MAX_BATCH: usize = 4096;

/// Fields of a user that can change; `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPatch {
    pub id: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub roles: Option<Vec<String>>,
    pub password_hash: Option<String>,
}

/// Fields of a channel that can change; `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelPatch {
    pub id: String,
    pub title: Option<String>,
    pub category: Option<Option<String>>,
    pub tags: Option<Vec<String>>,
    pub moderators: Option<Vec<String>>,
    pub at: UnixMillis,
}

/// What a successfully applied command returns to its proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Response {
    Done,
    User(User),
    Channel(Channel),
    Session(StreamSession),
    Chat(ChatMessage),
    Node(NodeInfo),
    NodeId(NodeId),
    Profile(Profile),
    ChatSettings(ChatSettings),
    /// How many records a purge removed.
    Removed(u64),
    /// One answer per command of a [`Command::Batch`], in order.
    Batch(Vec<ApplyResult>),
    /// Channels whose ingest lease a renewal did not hold (any longer).
    LostLeases(Vec<String>),
    /// A region of the network map as stored (canonical networks).
    Region(crate::state::regions::RegionRecord),
    /// A chat message automod held for review instead of posting.
    ChatHeld(crate::state::automod::HeldMessage),
    Automod(crate::state::automod::Automod),
    Report(crate::state::reports::Report),
    Appeal(crate::state::reports::Appeal),
    Takedown(Box<crate::state::takedowns::Takedown>),
    Recording(Box<crate::state::recordings::Recording>),
}

/// Why the state machine refused a command. Deterministic: every replica refuses the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    #[error("{kind} {id} not found")]
    NotFound { kind: String, id: String },
    #[error("{kind} {id} already exists")]
    AlreadyExists { kind: String, id: String },
    #[error("email {email} is already registered")]
    EmailTaken { email: String },
    #[error("channel {channel_id} is already live (session {session_id})")]
    AlreadyLive { channel_id: String, session_id: String },
    #[error("channel {channel_id} is not live")]
    NotLive { channel_id: String },
    #[error("you are banned from this chat")]
    ChatBanned { until: Option<UnixMillis> },
    #[error("slow mode: wait {retry_after_ms} ms before the next message")]
    SlowMode { retry_after_ms: u64 },
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
}

impl CatalogError {
    pub(crate) fn not_found(kind: &str, id: &str) -> Self {
        CatalogError::NotFound { kind: kind.to_owned(), id: id.to_owned() }
    }

    pub(crate) fn invalid(field: &str, reason: &str) -> Self {
        CatalogError::Invalid { field: field.to_owned(), reason: reason.to_owned() }
    }
}

/// The state machine's answer to one command, as carried back through Raft.
pub type ApplyResult = Result<Response, CatalogError>;
