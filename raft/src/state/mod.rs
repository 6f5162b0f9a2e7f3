//! The deterministic state machine: the catalog's in-memory tables and how a command changes them.
//!
//! [`CatalogState::apply`] validates a command, updates the tables and returns the exact list of
//! record writes ([`Mutation`]) that the storage layer must persist in the same batch as the
//! applied log id. It reads no clock and no randomness: every replica that applies the same log
//! ends with byte-identical records.

use std::collections::{BTreeMap, HashMap};

use crate::codec::{self, CodecError};
use crate::command::{ApplyResult, CatalogError, ChannelPatch, Command, Response, UserPatch};
use crate::types::{AuthSession, Channel, ChatMessage, LiveState, NodeId, NodeInfo, StreamSession, User};

pub mod access;
pub mod audience;
pub mod automod;
pub mod community;
pub mod health;
pub mod recordings;
pub mod regions;
#[cfg(test)]
pub(crate) mod replica;
pub mod reports;
pub mod takedowns;

/// Chat lines kept per channel; older lines are dropped as new ones arrive.
pub const CHAT_HISTORY_PER_CHANNEL: usize = 1000;

/// One record write for the storage layer: `value: None` deletes the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutation {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// Key prefixes of the record space. Keys order records the way reads want them.
mod key {
    pub(super) const NODE: &str = "node/";
    pub(super) const USER: &str = "user/";
    pub(super) const AUTH: &str = "auth/";
    pub(super) const CHANNEL: &str = "chan/";
    pub(super) const SESSION: &str = "strm/";
    pub(super) const CHAT: &str = "chat/";
    pub(super) const NEXT_NODE_ID: &str = "meta/next-node-id";
}

/// All catalog tables, plus the indexes derived from them (indexes are never persisted).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CatalogState {
    pub(crate) nodes: BTreeMap<NodeId, NodeInfo>,
    pub(crate) users: BTreeMap<String, User>,
    pub(crate) auth_sessions: BTreeMap<String, AuthSession>,
    pub(crate) channels: BTreeMap<String, Channel>,
    pub(crate) sessions: BTreeMap<String, StreamSession>,
    /// channel id -> seq -> message.
    pub(crate) chat: BTreeMap<String, BTreeMap<u64, ChatMessage>>,
    pub(crate) next_node_id: NodeId,
    /// Follows, subscriptions, profiles, chat rules and viewer samples: see [`community`].
    pub(crate) community: community::Community,
    /// Automod rules and held chat messages: see [`automod`].
    pub(crate) automod: automod::AutomodTables,
    /// Reports and appeals: see [`reports`].
    pub(crate) reports: reports::ReportTables,
    /// Stream health samples per session: see [`health`].
    pub(crate) health: health::HealthTable,
    /// Watch times per session: see [`audience`].
    pub(crate) audience: audience::AudienceTable,
    /// Legal pages and takedown notices: see [`takedowns`].
    pub(crate) takedowns: takedowns::TakedownTables,
    /// Revoked nodes and join-token uses: see [`access`].
    pub(crate) access: access::Access,
    /// Load reports and draining nodes: see [`crate::load`].
    pub(crate) load: crate::load::LoadTable,
    /// Ingest leases: see [`crate::lease`].
    pub(crate) leases: crate::lease::LeaseTable,
    /// Channels' home regions: see [`crate::home`].
    pub(crate) homes: crate::home::HomeTable,
    /// The operator's network map: see [`regions`].
    pub(crate) regions: regions::RegionMap,
    /// Recordings and clips: see [`recordings`].
    pub(crate) recordings: recordings::RecordingTable,
    // Derived indexes.
    user_by_email: HashMap<String, String>,
    channel_by_key_hash: HashMap<String, String>,
}

/// Who a deleted account's kept chat lines, reports and bans name instead of it.
pub const DELETED_USER: &str = "deleted-user";

/// Errors loading persisted records.
#[derive(Debug, thiserror::Error)]
#[error("record {key}: {source}")]
pub struct LoadError {
    pub key: String,
    #[source]
    pub source: CodecError,
}

impl CatalogState {
    /// Rebuild the tables from persisted records (keys and values as written by [`Mutation`]s).
    /// Keys outside the record space (e.g. Raft metadata) are ignored.
    pub fn load<'a>(records: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Result<Self, LoadError> {
        let mut state = CatalogState::default();
        for (k, v) in records {
            let key = String::from_utf8_lossy(k).into_owned();
            let wrap = |source| LoadError { key: key.clone(), source };
            if key.starts_with(key::NODE) {
                let n: NodeInfo = codec::decode(v).map_err(wrap)?;
                state.nodes.insert(n.id, n);
            } else if key.starts_with(key::USER) {
                let u: User = codec::decode(v).map_err(wrap)?;
                state.user_by_email.insert(u.email.clone(), u.id.clone());
                state.users.insert(u.id.clone(), u);
            } else if key.starts_with(key::AUTH) {
                let s: AuthSession = codec::decode(v).map_err(wrap)?;
                state.auth_sessions.insert(s.token_hash.clone(), s);
            } else if key.starts_with(key::CHANNEL) {
                let c: Channel = codec::decode(v).map_err(wrap)?;
                state.channel_by_key_hash.insert(c.stream_key_hash.clone(), c.id.clone());
                state.channels.insert(c.id.clone(), c);
            } else if key.starts_with(key::SESSION) {
                let s: StreamSession = codec::decode(v).map_err(wrap)?;
                state.sessions.insert(s.id.clone(), s);
            } else if key.starts_with(key::CHAT) {
                let m: ChatMessage = codec::decode(v).map_err(wrap)?;
                state.chat.entry(m.channel_id.clone()).or_default().insert(m.seq, m);
            } else if state.community.load_record(&key, v).map_err(wrap)?
                || state.automod.load_record(&key, v).map_err(wrap)?
                || state.reports.load_record(&key, v).map_err(wrap)?
                || state.takedowns.load_record(&key, v).map_err(wrap)?
                || state.health.load_record(&key, v).map_err(wrap)?
                || state.audience.load_record(&key, v).map_err(wrap)?
            {
                // A community, automod, report or appeal record.
            } else if state.load.load_record(&key, v).map_err(wrap)?
                || state.leases.load_record(&key, v).map_err(wrap)?
                || state.homes.load_record(&key, v).map_err(wrap)?
            {
                // A load, drain, lease or home region record.
            } else if state.regions.load_record(&key, v).map_err(wrap)?
                || state.recordings.load_record(&key, v).map_err(wrap)?
            {
                // A region of the network map.
            } else if state.access.load_record(&key, v).map_err(wrap)? {
                // A revocation or a join-token use.
            } else if key == key::NEXT_NODE_ID {
                state.next_node_id = codec::decode(v).map_err(wrap)?;
            }
        }
        Ok(state)
    }

    // ----- reads -----

    /// Revoked nodes and join-token uses.
    pub fn access(&self) -> &access::Access {
        &self.access
    }

    pub fn node(&self, id: NodeId) -> Option<&NodeInfo> {
        self.nodes.get(&id)
    }
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.values()
    }
    pub fn user(&self, id: &str) -> Option<&User> {
        self.users.get(id)
    }
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }
    pub fn user_by_email(&self, email: &str) -> Option<&User> {
        self.user_by_email.get(&email.to_lowercase()).and_then(|id| self.users.get(id))
    }
    /// The login sessions of `user_id`.
    pub fn auth_sessions_of<'a>(&'a self, user_id: &'a str) -> impl Iterator<Item = &'a AuthSession> + 'a {
        self.auth_sessions.values().filter(move |s| s.user_id == user_id)
    }
    pub fn auth_session(&self, token_hash: &str) -> Option<&AuthSession> {
        self.auth_sessions.get(token_hash)
    }
    pub fn channel(&self, id: &str) -> Option<&Channel> {
        self.channels.get(id)
    }
    pub fn channels(&self) -> impl Iterator<Item = &Channel> {
        self.channels.values()
    }
    pub fn channel_by_stream_key_hash(&self, hash: &str) -> Option<&Channel> {
        self.channel_by_key_hash.get(hash).and_then(|id| self.channels.get(id))
    }
    pub fn session(&self, id: &str) -> Option<&StreamSession> {
        self.sessions.get(id)
    }
    pub fn sessions_of_channel<'a>(&'a self, channel_id: &'a str) -> impl Iterator<Item = &'a StreamSession> + 'a {
        self.sessions.values().filter(move |s| s.channel_id == channel_id)
    }
    pub fn sessions(&self) -> impl Iterator<Item = &StreamSession> {
        self.sessions.values()
    }
    /// Chat history of a channel, oldest first.
    pub fn chat(&self, channel_id: &str) -> impl DoubleEndedIterator<Item = &ChatMessage> {
        self.chat.get(channel_id).into_iter().flat_map(|m| m.values())
    }

    // ----- apply -----

    /// Apply one command at log index `index`. On error nothing changed and no mutation is returned.
    pub fn apply(&mut self, index: u64, command: &Command) -> (ApplyResult, Vec<Mutation>) {
        let base = index.saturating_mul(crate::command::MAX_BATCH as u64);
        if let Command::Batch(commands) = command {
            return self.apply_batch(base, commands);
        }
        self.apply_at(base, command)
    }

    /// Apply the commands of one batch entry; each answers (and writes) on its own.
    fn apply_batch(&mut self, base: u64, commands: &[Command]) -> (ApplyResult, Vec<Mutation>) {
        if commands.len() > crate::command::MAX_BATCH {
            return (Err(CatalogError::invalid("batch", "too many commands in one batch")), Vec::new());
        }
        let mut out = Vec::new();
        let mut results = Vec::with_capacity(commands.len());
        for (position, command) in commands.iter().enumerate() {
            let result = if matches!(command, Command::Batch(_)) {
                Err(CatalogError::invalid("batch", "batches do not nest"))
            } else {
                let (result, mutations) = self.apply_at(base + position as u64, command);
                out.extend(mutations);
                result
            };
            results.push(result);
        }
        (Ok(Response::Batch(results)), out)
    }

    /// Apply one command; `seq` orders what it creates (log index × MAX_BATCH + batch position).
    fn apply_at(&mut self, seq: u64, command: &Command) -> (ApplyResult, Vec<Mutation>) {
        let index = seq;
        let mut out = Vec::new();
        let result = self.apply_inner(index, command, &mut out);
        if result.is_err() {
            debug_assert!(out.is_empty(), "a refused command must not write");
            out.clear();
        }
        (result, out)
    }

    fn apply_inner(&mut self, index: u64, command: &Command, out: &mut Vec<Mutation>) -> ApplyResult {
        match command {
            Command::Noop { .. } => Ok(Response::Done),
            Command::UpsertNode(info) => {
                if info.id == 0 {
                    return Err(CatalogError::invalid("id", "node ids start at 1"));
                }
                self.put_node(info.clone(), out);
                Ok(Response::Node(info.clone()))
            }
            Command::RemoveNode { id } => {
                if self.nodes.remove(id).is_none() {
                    return Err(CatalogError::not_found("node", &id.to_string()));
                }
                out.push(delete(node_key(*id)));
                self.forget_node_load(*id, out);
                Ok(Response::Done)
            }
            Command::ReserveNodeId { at_least } => {
                // Checked arithmetic: `at_least` and directory ids come from proposers, and an
                // overflow here would panic (debug) or hand out id 0 again (release) on every replica.
                let exhausted = || CatalogError::invalid("nodeId", "no node id left above the highest one in use");
                let highest_known = self.nodes.keys().next_back().copied().unwrap_or(0);
                let above_known = highest_known.checked_add(1).ok_or_else(exhausted)?;
                let id = self.next_node_id.max(*at_least).max(above_known).max(1);
                self.next_node_id = id.checked_add(1).ok_or_else(exhausted)?;
                out.push(put(key::NEXT_NODE_ID.into(), codec::encode(&self.next_node_id)));
                Ok(Response::NodeId(id))
            }
            Command::CreateUser(user) => self.create_user(user, out),
            Command::UpdateUser(patch) => self.update_user(patch, out),
            Command::DeleteUser { id } => self.delete_user(id, false, out),
            Command::EraseUser { id, delete_chat } => self.delete_user(id, *delete_chat, out),
            Command::CreateAuthSession(session) => {
                if !self.users.contains_key(&session.user_id) {
                    return Err(CatalogError::not_found("user", &session.user_id));
                }
                if self.auth_sessions.contains_key(&session.token_hash) {
                    return Err(CatalogError::AlreadyExists { kind: "session".into(), id: "token".into() });
                }
                out.push(put(auth_key(&session.token_hash), codec::encode(session)));
                self.auth_sessions.insert(session.token_hash.clone(), session.clone());
                Ok(Response::Done)
            }
            Command::DeleteAuthSession { token_hash } => {
                if self.auth_sessions.remove(token_hash).is_none() {
                    return Err(CatalogError::not_found("session", "token"));
                }
                out.push(delete(auth_key(token_hash)));
                Ok(Response::Done)
            }
            Command::PurgeExpiredAuthSessions { now } => {
                let expired: Vec<String> = self
                    .auth_sessions
                    .values()
                    .filter(|s| s.expires_at <= *now)
                    .map(|s| s.token_hash.clone())
                    .collect();
                for hash in &expired {
                    self.auth_sessions.remove(hash);
                    out.push(delete(auth_key(hash)));
                }
                Ok(Response::Removed(expired.len() as u64))
            }
            Command::CreateChannel(channel) => self.create_channel(channel, out),
            Command::UpdateChannel(patch) => self.update_channel(patch, out),
            Command::DeleteChannel { id } => {
                let channel = self.channels.get(id).ok_or_else(|| CatalogError::not_found("channel", id))?.clone();
                // Same rule as DeleteUser: deleting a live channel would leave its session open
                // (no `ended_at`) forever, pointing at a channel that no longer exists.
                if channel.live_state == LiveState::Live {
                    return Err(CatalogError::AlreadyLive {
                        channel_id: channel.id.clone(),
                        session_id: channel.current_session_id.clone().unwrap_or_default(),
                    });
                }
                self.remove_channel(&channel, out);
                Ok(Response::Done)
            }
            Command::SetStreamKey { channel_id, stream_key_hash, at } => {
                if let Some(other) = self.channel_by_key_hash.get(stream_key_hash) {
                    if other != channel_id {
                        return Err(CatalogError::invalid("streamKey", "collides with another channel's key"));
                    }
                }
                let mut channel = self
                    .channels
                    .get(channel_id)
                    .ok_or_else(|| CatalogError::not_found("channel", channel_id))?
                    .clone();
                self.channel_by_key_hash.remove(&channel.stream_key_hash);
                channel.stream_key_hash = stream_key_hash.clone();
                channel.updated_at = *at;
                self.put_channel(channel.clone(), out);
                Ok(Response::Channel(channel))
            }
            Command::StartSession(session) => {
                if self.is_taken_down(&session.channel_id) {
                    return Err(CatalogError::invalid("channelId", "this channel is hidden by a takedown notice"));
                }
                let started = self.start_session(session, out)?;
                self.grant_ingest_lease(index, session, out);
                self.settle_home(session, out);
                Ok(started)
            }
            Command::EndSession { channel_id, ended_at, peak_concurrent } => {
                let mut channel = self
                    .channels
                    .get(channel_id)
                    .ok_or_else(|| CatalogError::not_found("channel", channel_id))?
                    .clone();
                let session_id = match (&channel.live_state, &channel.current_session_id) {
                    (LiveState::Live, Some(id)) => id.clone(),
                    _ => return Err(CatalogError::NotLive { channel_id: channel_id.clone() }),
                };
                let mut session = self
                    .sessions
                    .get(&session_id)
                    .ok_or_else(|| CatalogError::not_found("session", &session_id))?
                    .clone();
                session.ended_at = Some((*ended_at).max(session.started_at));
                if let Some(peak) = peak_concurrent {
                    session.peak_concurrent = session.peak_concurrent.max(*peak);
                }
                channel.live_state = LiveState::Offline;
                channel.current_session_id = None;
                channel.updated_at = *ended_at;
                self.release_ingest_lease(channel_id, out);
                self.put_channel(channel, out);
                self.put_session(session.clone(), out);
                Ok(Response::Session(session))
            }
            Command::PostChat(message) => {
                let mut message = message.clone();
                if let Some(reason) = self.check_chat_rules(&mut message)? {
                    return self.hold_message(message, reason, out);
                }
                self.post_chat(index, &message, out)
            }
            Command::SetAutomod { .. } | Command::ReviewHeldMessage { .. } => self.apply_automod(index, command, out),
            Command::FileReport(_)
            | Command::ResolveReport { .. }
            | Command::FileAppeal(_)
            | Command::DecideAppeal { .. } => self.apply_reports(index, command, out),
            Command::ReportHealth { .. } => self.apply_health(command, out),
            Command::PutRecording(_)
            | Command::PublishRecording { .. }
            | Command::DeleteRecording { .. }
            | Command::ForgetRecording { .. } => self.apply_recordings(command, out),
            Command::SetLegalPage(_) | Command::FileTakedown(_) | Command::StepTakedown { .. } => {
                self.apply_takedowns(index, command, out)
            }
            Command::DeleteChat { channel_id, message_id } => {
                let history =
                    self.chat.get_mut(channel_id).ok_or_else(|| CatalogError::not_found("message", message_id))?;
                let seq = history
                    .values()
                    .find(|m| &m.id == message_id)
                    .map(|m| m.seq)
                    .ok_or_else(|| CatalogError::not_found("message", message_id))?;
                history.remove(&seq);
                // Drop the emptied history too: `load` never creates empty ones, and the tables
                // must be the same whether built by applying the log or by reading the records.
                if history.is_empty() {
                    self.chat.remove(channel_id);
                }
                out.push(delete(chat_key(channel_id, seq)));
                Ok(Response::Done)
            }
            Command::SetSessionRenditions { session_id, renditions } => {
                let mut session = self
                    .sessions
                    .get(session_id)
                    .ok_or_else(|| CatalogError::not_found("session", session_id))?
                    .clone();
                if session.ended_at.is_some() {
                    return Err(CatalogError::NotLive { channel_id: session.channel_id });
                }
                session.renditions = renditions.clone();
                self.put_session(session.clone(), out);
                Ok(Response::Session(session))
            }
            Command::ReportLoad(_) | Command::SetDraining { .. } => self.apply_load(command, out),
            Command::SetHomeRegion { .. } => self.apply_home(command, out),
            Command::EndIngestSession { channel_id, session_id, ended_at } => {
                let current = self.channel(channel_id).and_then(|c| c.current_session_id.as_deref());
                if current != Some(session_id.as_str()) {
                    return Err(CatalogError::NotLive { channel_id: channel_id.clone() });
                }
                let end =
                    Command::EndSession { channel_id: channel_id.clone(), ended_at: *ended_at, peak_concurrent: None };
                self.apply_inner(index, &end, out)
            }
            Command::RenewIngestLeases { .. } | Command::ExpireIngestLease { .. } => {
                self.apply_lease(index, command, out)
            }
            Command::RevokeNode { .. } | Command::UseJoinToken { .. } => self
                .access
                .apply(command, out)
                .unwrap_or_else(|| Err(CatalogError::invalid("command", "not an access command"))),
            Command::RevokeUserAuthSessions { user_id, keep } => {
                let revoked: Vec<String> = self
                    .auth_sessions
                    .values()
                    .filter(|s| s.user_id == *user_id && Some(&s.token_hash) != keep.as_ref())
                    .map(|s| s.token_hash.clone())
                    .collect();
                for hash in &revoked {
                    self.auth_sessions.remove(hash);
                    out.push(delete(auth_key(hash)));
                }
                Ok(Response::Removed(revoked.len() as u64))
            }
            Command::SetRegion(_) => self.apply_region(command, out),
            other => self.apply_community(other, out),
        }
    }

    fn create_user(&mut self, user: &User, out: &mut Vec<Mutation>) -> ApplyResult {
        if user.id.is_empty() {
            return Err(CatalogError::invalid("id", "must not be empty"));
        }
        if self.users.contains_key(&user.id) {
            return Err(CatalogError::AlreadyExists { kind: "user".into(), id: user.id.clone() });
        }
        if user.display_name.trim().is_empty() {
            return Err(CatalogError::invalid("displayName", "must not be empty"));
        }
        let mut user = user.clone();
        user.email = normalize_email(&user.email)?;
        if self.user_by_email.contains_key(&user.email) {
            return Err(CatalogError::EmailTaken { email: user.email });
        }
        self.put_user(user.clone(), out);
        Ok(Response::User(user))
    }

    fn update_user(&mut self, patch: &UserPatch, out: &mut Vec<Mutation>) -> ApplyResult {
        let mut user = self.users.get(&patch.id).ok_or_else(|| CatalogError::not_found("user", &patch.id))?.clone();
        if let Some(name) = &patch.display_name {
            if name.trim().is_empty() {
                return Err(CatalogError::invalid("displayName", "must not be empty"));
            }
            user.display_name = name.clone();
        }
        if let Some(email) = &patch.email {
            let email = normalize_email(email)?;
            if let Some(owner) = self.user_by_email.get(&email) {
                if owner != &user.id {
                    return Err(CatalogError::EmailTaken { email });
                }
            }
            self.user_by_email.remove(&user.email);
            user.email = email;
        }
        if let Some(roles) = &patch.roles {
            user.roles = roles.clone();
        }
        if let Some(hash) = &patch.password_hash {
            user.password_hash = Some(hash.clone());
        }
        self.put_user(user.clone(), out);
        Ok(Response::User(user))
    }

    /// Deletes a user and what is theirs; what others keep (chat lines, reports, bans they made)
    /// stops naming them: the author or moderator becomes [`DELETED_USER`]. With `delete_chat`
    /// their chat lines go too.
    fn delete_user(&mut self, id: &str, delete_chat: bool, out: &mut Vec<Mutation>) -> ApplyResult {
        let user = self.users.get(id).ok_or_else(|| CatalogError::not_found("user", id))?.clone();
        if let Some(live) = self.channels.values().find(|c| c.owner_id == id && c.live_state == LiveState::Live) {
            return Err(CatalogError::AlreadyLive {
                channel_id: live.id.clone(),
                session_id: live.current_session_id.clone().unwrap_or_default(),
            });
        }
        let owned: Vec<Channel> = self.channels.values().filter(|c| c.owner_id == id).cloned().collect();
        for channel in &owned {
            self.remove_channel(channel, out);
        }
        let tokens: Vec<String> =
            self.auth_sessions.values().filter(|s| s.user_id == id).map(|s| s.token_hash.clone()).collect();
        for hash in tokens {
            self.auth_sessions.remove(&hash);
            out.push(delete(auth_key(&hash)));
        }
        self.community.remove_user(id, out);
        self.automod.remove_user(id, out);
        self.forget_chat_author(id, delete_chat, out);
        self.reports.forget_user(id, out);
        self.community.forget_moderator(id, out);
        let moderated: Vec<Channel> =
            self.channels.values().filter(|c| c.moderators.iter().any(|m| m == id)).cloned().collect();
        for mut channel in moderated {
            channel.moderators.retain(|m| m != id);
            self.put_channel(channel, out);
        }
        self.user_by_email.remove(&user.email);
        self.users.remove(id);
        out.push(delete(user_key(id)));
        Ok(Response::Done)
    }

    /// The chat lines of a user being deleted: removed, or kept under [`DELETED_USER`].
    fn forget_chat_author(&mut self, id: &str, delete_chat: bool, out: &mut Vec<Mutation>) {
        for (channel, history) in self.chat.iter_mut() {
            let theirs: Vec<u64> = history.values().filter(|m| m.user_id == id).map(|m| m.seq).collect();
            for seq in theirs {
                if delete_chat {
                    history.remove(&seq);
                    out.push(delete(chat_key(channel, seq)));
                } else if let Some(message) = history.get_mut(&seq) {
                    message.user_id = DELETED_USER.to_owned();
                    out.push(put(chat_key(channel, seq), codec::encode(&*message)));
                }
            }
        }
        // `load` never creates empty histories.
        self.chat.retain(|_, history| !history.is_empty());
    }

    fn create_channel(&mut self, channel: &Channel, out: &mut Vec<Mutation>) -> ApplyResult {
        if channel.id.is_empty() {
            return Err(CatalogError::invalid("id", "must not be empty"));
        }
        if self.channels.contains_key(&channel.id) {
            return Err(CatalogError::AlreadyExists { kind: "channel".into(), id: channel.id.clone() });
        }
        if !self.users.contains_key(&channel.owner_id) {
            return Err(CatalogError::not_found("user", &channel.owner_id));
        }
        if channel.title.trim().is_empty() {
            return Err(CatalogError::invalid("title", "must not be empty"));
        }
        if self.channel_by_key_hash.contains_key(&channel.stream_key_hash) {
            return Err(CatalogError::invalid("streamKey", "collides with another channel's key"));
        }
        let mut channel = channel.clone();
        channel.live_state = LiveState::Offline;
        channel.current_session_id = None;
        self.put_channel(channel.clone(), out);
        Ok(Response::Channel(channel))
    }

    fn update_channel(&mut self, patch: &ChannelPatch, out: &mut Vec<Mutation>) -> ApplyResult {
        let mut channel =
            self.channels.get(&patch.id).ok_or_else(|| CatalogError::not_found("channel", &patch.id))?.clone();
        if let Some(title) = &patch.title {
            if title.trim().is_empty() {
                return Err(CatalogError::invalid("title", "must not be empty"));
            }
            channel.title = title.clone();
        }
        if let Some(category) = &patch.category {
            channel.category = category.clone();
        }
        if let Some(tags) = &patch.tags {
            channel.tags = tags.clone();
        }
        if let Some(moderators) = &patch.moderators {
            if let Some(missing) = moderators.iter().find(|m| !self.users.contains_key(*m)) {
                return Err(CatalogError::not_found("user", missing));
            }
            channel.moderators = moderators.clone();
        }
        channel.updated_at = patch.at;
        self.put_channel(channel.clone(), out);
        Ok(Response::Channel(channel))
    }

    fn start_session(&mut self, session: &StreamSession, out: &mut Vec<Mutation>) -> ApplyResult {
        let mut channel = self
            .channels
            .get(&session.channel_id)
            .ok_or_else(|| CatalogError::not_found("channel", &session.channel_id))?
            .clone();
        if channel.live_state == LiveState::Live {
            return Err(CatalogError::AlreadyLive {
                channel_id: channel.id.clone(),
                session_id: channel.current_session_id.clone().unwrap_or_default(),
            });
        }
        if self.sessions.contains_key(&session.id) {
            return Err(CatalogError::AlreadyExists { kind: "session".into(), id: session.id.clone() });
        }
        let mut session = session.clone();
        session.ended_at = None;
        channel.live_state = LiveState::Live;
        channel.current_session_id = Some(session.id.clone());
        channel.updated_at = session.started_at;
        self.put_channel(channel, out);
        self.put_session(session.clone(), out);
        Ok(Response::Session(session))
    }

    pub(crate) fn post_chat(&mut self, index: u64, message: &ChatMessage, out: &mut Vec<Mutation>) -> ApplyResult {
        if !self.channels.contains_key(&message.channel_id) {
            return Err(CatalogError::not_found("channel", &message.channel_id));
        }
        if !self.users.contains_key(&message.user_id) {
            return Err(CatalogError::not_found("user", &message.user_id));
        }
        if message.text.trim().is_empty() {
            return Err(CatalogError::invalid("text", "must not be empty"));
        }
        // A client retrying after a lost answer must not post the same line twice.
        if self.chat(&message.channel_id).any(|m| m.id == message.id) {
            return Err(CatalogError::AlreadyExists { kind: "message".into(), id: message.id.clone() });
        }
        let mut message = message.clone();
        message.seq = index;
        self.count_chat_message(&message, out);
        let history = self.chat.entry(message.channel_id.clone()).or_default();
        out.push(put(chat_key(&message.channel_id, index), codec::encode(&message)));
        history.insert(index, message.clone());
        while history.len() > CHAT_HISTORY_PER_CHANNEL {
            if let Some((seq, _)) = history.pop_first() {
                out.push(delete(chat_key(&message.channel_id, seq)));
            }
        }
        Ok(Response::Chat(message))
    }

    fn remove_channel(&mut self, channel: &Channel, out: &mut Vec<Mutation>) {
        self.channel_by_key_hash.remove(&channel.stream_key_hash);
        self.channels.remove(&channel.id);
        out.push(delete(channel_key(&channel.id)));
        if let Some(history) = self.chat.remove(&channel.id) {
            for seq in history.keys() {
                out.push(delete(chat_key(&channel.id, *seq)));
            }
        }
        self.community.remove_channel(&channel.id, out);
        self.automod.remove_channel(&channel.id, out);
        self.forget_home(&channel.id, out);
        self.delete_recordings_of(&channel.id, out);
    }

    fn put_node(&mut self, node: NodeInfo, out: &mut Vec<Mutation>) {
        out.push(put(node_key(node.id), codec::encode(&node)));
        self.nodes.insert(node.id, node);
    }

    fn put_user(&mut self, user: User, out: &mut Vec<Mutation>) {
        out.push(put(user_key(&user.id), codec::encode(&user)));
        self.user_by_email.insert(user.email.clone(), user.id.clone());
        self.users.insert(user.id.clone(), user);
    }

    fn put_channel(&mut self, channel: Channel, out: &mut Vec<Mutation>) {
        out.push(put(channel_key(&channel.id), codec::encode(&channel)));
        self.channel_by_key_hash.insert(channel.stream_key_hash.clone(), channel.id.clone());
        self.channels.insert(channel.id.clone(), channel);
    }

    pub(crate) fn put_channel_record(&mut self, channel: Channel, out: &mut Vec<Mutation>) {
        self.put_channel(channel, out);
    }

    pub(crate) fn put_session_record(&mut self, session: StreamSession, out: &mut Vec<Mutation>) {
        self.put_session(session, out);
    }

    fn put_session(&mut self, session: StreamSession, out: &mut Vec<Mutation>) {
        out.push(put(session_key(&session.id), codec::encode(&session)));
        self.sessions.insert(session.id.clone(), session);
    }
}

fn normalize_email(email: &str) -> Result<String, CatalogError> {
    let email = email.trim().to_lowercase();
    let valid = match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        }
        None => false,
    };
    if !valid || email.len() > 254 || email.chars().any(char::is_whitespace) {
        return Err(CatalogError::invalid("email", "expected an address like name@example.com"));
    }
    Ok(email)
}

pub(crate) fn put(key: String, value: Vec<u8>) -> Mutation {
    Mutation { key: key.into_bytes(), value: Some(value) }
}
pub(crate) fn delete(key: String) -> Mutation {
    Mutation { key: key.into_bytes(), value: None }
}
fn node_key(id: NodeId) -> String {
    format!("{}{id:020}", key::NODE)
}
fn user_key(id: &str) -> String {
    format!("{}{id}", key::USER)
}
fn auth_key(hash: &str) -> String {
    format!("{}{hash}", key::AUTH)
}
fn channel_key(id: &str) -> String {
    format!("{}{id}", key::CHANNEL)
}
fn session_key(id: &str) -> String {
    format!("{}{id}", key::SESSION)
}
fn chat_key(channel_id: &str, seq: u64) -> String {
    format!("{}{channel_id}/{seq:020}", key::CHAT)
}

#[cfg(test)]
mod tests {
    use super::replica::Replica;
    use super::*;
    use crate::types::NodeLoad;

    impl Replica {
        pub(super) fn ok(&mut self, command: Command) -> Response {
            let (result, _) = self.apply(command.clone());
            result.unwrap_or_else(|e| panic!("{command:?} refused: {e}"))
        }

        pub(super) fn err(&mut self, command: Command) -> CatalogError {
            let before = self.state.clone();
            let (result, mutations) = self.apply(command.clone());
            assert!(mutations.is_empty(), "refused {command:?} wrote {mutations:?}");
            assert_eq!(self.state, before, "refused {command:?} changed the tables");
            result.expect_err("expected a refusal")
        }
    }

    fn user(id: &str, email: &str) -> User {
        User {
            id: id.into(),
            display_name: format!("User {id}"),
            email: email.into(),
            roles: vec!["creator".into()],
            password_hash: None,
            created_at: 10,
        }
    }

    fn channel(id: &str, owner: &str, key_hash: &str) -> Channel {
        Channel {
            id: id.into(),
            owner_id: owner.into(),
            title: format!("Channel {id}"),
            category: None,
            tags: vec![],
            stream_key_hash: key_hash.into(),
            live_state: LiveState::Offline,
            current_session_id: None,
            moderators: vec![],
            created_at: 20,
            updated_at: 20,
        }
    }

    fn session(id: &str, channel_id: &str) -> StreamSession {
        StreamSession {
            id: id.into(),
            channel_id: channel_id.into(),
            started_at: 100,
            ended_at: None,
            renditions: vec!["source".into()],
            peak_concurrent: 0,
            ingest_node: Some(1),
        }
    }

    fn chat(id: &str, channel_id: &str, user_id: &str) -> ChatMessage {
        ChatMessage {
            id: id.into(),
            channel_id: channel_id.into(),
            user_id: user_id.into(),
            text: format!("hello from {id}"),
            sent_at: 200,
            seq: 0,
        }
    }

    fn node(id: NodeId) -> NodeInfo {
        NodeInfo { id, region: "eu".into(), roles: vec![], addresses: vec![], load: NodeLoad::default(), updated_at: 1 }
    }

    fn auth(token_hash: &str, user_id: &str, expires_at: i64) -> AuthSession {
        AuthSession { token_hash: token_hash.into(), user_id: user_id.into(), created_at: 1, expires_at }
    }

    /// A replica with user `u1` owning channel `c1` (stream key hash `k1`).
    pub(super) fn with_channel() -> Replica {
        let mut r = Replica::default();
        r.ok(Command::CreateUser(user("u1", "river@example.com")));
        r.ok(Command::CreateChannel(channel("c1", "u1", "k1")));
        r
    }

    #[test]
    fn email_is_unique_ignoring_case() {
        let mut r = Replica::default();
        let Response::User(created) = r.ok(Command::CreateUser(user("u1", "River@Example.com"))) else { panic!() };
        assert_eq!(created.email, "river@example.com");
        assert_eq!(r.state.user_by_email("RIVER@example.COM").map(|u| u.id.as_str()), Some("u1"));

        let err = r.err(Command::CreateUser(user("u2", "  RIVER@EXAMPLE.COM ")));
        assert_eq!(err, CatalogError::EmailTaken { email: "river@example.com".into() });

        r.ok(Command::CreateUser(user("u2", "brook@example.com")));
        let taken = r.err(Command::UpdateUser(UserPatch {
            id: "u2".into(),
            email: Some("River@example.com".into()),
            ..Default::default()
        }));
        assert_eq!(taken, CatalogError::EmailTaken { email: "river@example.com".into() });

        // Changing the case of one's own address is not a collision, and frees nothing.
        r.ok(Command::UpdateUser(UserPatch {
            id: "u1".into(),
            email: Some("RIVER@example.com".into()),
            ..Default::default()
        }));
        assert_eq!(r.state.user_by_email("river@example.com").map(|u| u.id.as_str()), Some("u1"));

        // Moving to a new address frees the old one.
        r.ok(Command::UpdateUser(UserPatch {
            id: "u1".into(),
            email: Some("delta@example.com".into()),
            ..Default::default()
        }));
        assert!(r.state.user_by_email("river@example.com").is_none());
        r.ok(Command::CreateUser(user("u3", "river@example.com")));
    }

    #[test]
    fn second_start_on_a_live_channel_is_already_live() {
        let mut r = with_channel();
        r.ok(Command::StartSession(session("s1", "c1")));
        let err = r.err(Command::StartSession(session("s2", "c1")));
        assert_eq!(err, CatalogError::AlreadyLive { channel_id: "c1".into(), session_id: "s1".into() });
        assert_eq!(r.state.channel("c1").unwrap().current_session_id.as_deref(), Some("s1"));
    }

    #[test]
    fn a_live_session_records_its_renditions_and_an_ended_one_refuses() {
        let mut r = with_channel();
        let set = || Command::SetSessionRenditions {
            session_id: "s1".into(),
            renditions: vec!["source".into(), "360p".into(), "180p".into()],
        };
        assert_eq!(r.err(set()), CatalogError::not_found("session", "s1"));
        r.ok(Command::StartSession(session("s1", "c1")));
        r.ok(set());
        assert_eq!(r.state.session("s1").unwrap().renditions, ["source", "360p", "180p"]);

        r.ok(Command::EndSession { channel_id: "c1".into(), ended_at: 300, peak_concurrent: None });
        assert_eq!(r.err(set()), CatalogError::NotLive { channel_id: "c1".into() });
    }

    #[test]
    fn end_on_an_offline_channel_is_not_live() {
        let mut r = with_channel();
        let end = || Command::EndSession { channel_id: "c1".into(), ended_at: 300, peak_concurrent: Some(5) };
        assert_eq!(r.err(end()), CatalogError::NotLive { channel_id: "c1".into() });

        r.ok(Command::StartSession(session("s1", "c1")));
        let Response::Session(ended) = r.ok(end()) else { panic!() };
        assert_eq!((ended.ended_at, ended.peak_concurrent), (Some(300), 5));
        assert_eq!(r.state.channel("c1").unwrap().live_state, LiveState::Offline);
        assert_eq!(r.err(end()), CatalogError::NotLive { channel_id: "c1".into() });
    }

    #[test]
    fn chat_history_is_bounded_and_deletes_are_written() {
        let mut r = with_channel();
        let seq_of = |index: u64| index * crate::command::MAX_BATCH as u64;
        let first_index = seq_of(r.index + 1);
        for i in 0..CHAT_HISTORY_PER_CHANNEL {
            let (result, mutations) = r.apply(Command::PostChat(chat(&format!("m{i}"), "c1", "u1")));
            assert!(result.is_ok());
            let chat_writes: Vec<_> = mutations.iter().filter(|m| m.key.starts_with(b"chat/")).collect();
            assert_eq!(chat_writes.len(), 1, "no trimming below the bound");
        }
        assert_eq!(r.state.chat("c1").count(), CHAT_HISTORY_PER_CHANNEL);

        // One over the bound: the new line is written and the oldest one deleted, in one apply.
        let (result, mutations) = r.apply(Command::PostChat(chat("newest", "c1", "u1")));
        let Ok(Response::Chat(newest)) = result else { panic!("{result:?}") };
        assert_eq!(newest.seq, seq_of(r.index), "seq is the applying log index times MAX_BATCH");
        let chat_writes: Vec<_> = mutations.into_iter().filter(|m| m.key.starts_with(b"chat/")).collect();
        assert_eq!(chat_writes.len(), 2);
        assert_eq!(chat_writes[1], delete(chat_key("c1", first_index)));
        assert_eq!(r.state.chat("c1").count(), CHAT_HISTORY_PER_CHANNEL);
        assert_eq!(r.state.chat("c1").next().unwrap().id, "m1");
        assert_eq!(r.state.chat("c1").next_back().unwrap().id, "newest");

        let (result, mutations) = r.apply(Command::DeleteChat { channel_id: "c1".into(), message_id: "m500".into() });
        assert_eq!(result, Ok(Response::Done));
        assert_eq!(mutations, vec![delete(chat_key("c1", first_index + seq_of(500)))]);
        assert!(r.state.chat("c1").all(|m| m.id != "m500"));
        let err = r.err(Command::DeleteChat { channel_id: "c1".into(), message_id: "m500".into() });
        assert!(matches!(err, CatalogError::NotFound { .. }));
    }

    #[test]
    fn automod_holds_a_new_accounts_message_until_a_moderator_approves_it() {
        // `Replica::apply` compares against a reload after every command.
        let mut r = with_channel();
        r.ok(Command::CreateUser(user("u2", "brook@example.com")));
        let rules = automod::Automod { block_links: true, new_account_hold_minutes: 10, ..Default::default() };
        r.ok(Command::SetAutomod { channel_id: "c1".into(), rules });
        // u2's account is 190 ms old at the message: held, not posted.
        let held = r.ok(Command::PostChat(chat("m1", "c1", "u2")));
        assert!(matches!(held, Response::ChatHeld(ref h) if h.message.id == "m1"), "{held:?}");
        assert_eq!(r.state.chat("c1").count(), 0);
        assert_eq!(r.state.held_messages("c1").len(), 1);
        // Links are refused outright, held or not; the owner (a moderator) is exempt.
        let spam = ChatMessage { text: "buy at https://spam.io".into(), ..chat("m2", "c1", "u2") };
        assert!(matches!(r.err(Command::PostChat(spam.clone())), CatalogError::Invalid { .. }));
        r.ok(Command::PostChat(ChatMessage { user_id: "u1".into(), ..spam }));
        // Approval posts it under its own id; a second review finds nothing.
        let review = |approve| Command::ReviewHeldMessage { channel_id: "c1".into(), message_id: "m1".into(), approve };
        assert!(matches!(r.ok(review(true)), Response::Chat(m) if m.id == "m1"));
        assert!(r.state.held_messages("c1").is_empty());
        assert_eq!(r.state.chat("c1").count(), 2);
        assert!(matches!(r.err(review(false)), CatalogError::NotFound { .. }));
        // Rejection drops it; deleting the channel drops rules and held messages.
        r.ok(Command::PostChat(chat("m3", "c1", "u2")));
        r.ok(Command::ReviewHeldMessage { channel_id: "c1".into(), message_id: "m3".into(), approve: false });
        assert_eq!(r.state.chat("c1").count(), 2);
        r.ok(Command::PostChat(chat("m4", "c1", "u2")));
        // The author banned meanwhile: approval is refused and changes nothing.
        let ban = crate::types::ChatBan {
            channel_id: "c1".into(),
            user_id: "u2".into(),
            by: "u1".into(),
            at: 0,
            until: None,
            reason: None,
        };
        r.ok(Command::BanFromChat(ban));
        let approve = Command::ReviewHeldMessage { channel_id: "c1".into(), message_id: "m4".into(), approve: true };
        assert!(matches!(r.err(approve), CatalogError::ChatBanned { .. }));
        r.ok(Command::DeleteChannel { id: "c1".into() });
        assert!(r.state.held_messages("c1").is_empty());
        assert_eq!(r.state.automod("c1"), automod::Automod::default());
    }

    #[test]
    fn a_report_acts_with_its_decision_and_an_appeal_goes_to_someone_else() {
        use reports::{Appeal, AppealDecision, Report, ReportAction, ReportTarget, Resolution};
        let mut r = with_channel();
        r.ok(Command::CreateUser(user("u2", "brook@example.com")));
        r.ok(Command::CreateUser(user("u3", "cole@example.com")));
        r.ok(Command::PostChat(ChatMessage { text: "rude".into(), ..chat("m1", "c1", "u2") }));
        let report = Report {
            id: "r1".into(),
            reporter_id: "u3".into(),
            target_type: ReportTarget::Message,
            target_id: "m1".into(),
            channel_id: Some("c1".into()),
            subject_user_id: "u2".into(),
            excerpt: Some("rude".into()),
            reason: "harassment".into(),
            note: None,
            created_at: 300,
            resolution: None,
        };
        r.ok(Command::FileReport(Box::new(report.clone())));
        assert!(matches!(r.err(Command::FileReport(Box::new(report))), CatalogError::AlreadyExists { .. }));
        // Banning from the report deletes nothing else, bans in the same entry, records who did it.
        let ban = |action| Resolution { by: "u1".into(), at: 400, action, note: Some("see chat".into()) };
        r.ok(Command::ResolveReport { id: "r1".into(), resolution: ban(ReportAction::Ban) });
        assert_eq!(r.state.chat_ban("c1", "u2", 500).map(|b| b.by.as_str()), Some("u1"));
        assert_eq!(r.state.report("r1").unwrap().resolution.as_ref().map(|x| x.at), Some(400));
        let again = Command::ResolveReport { id: "r1".into(), resolution: ban(ReportAction::Dismiss) };
        assert!(matches!(r.err(again), CatalogError::Invalid { .. }), "decided once");

        // One appeal per ban; not decided by the banning moderator nor by the appellant.
        let appeal = Appeal {
            id: "a1".into(),
            user_id: "u2".into(),
            channel_id: "c1".into(),
            ban_by: "u1".into(),
            ban_at: 400,
            text: "sorry".into(),
            created_at: 600,
            decision: None,
        };
        r.ok(Command::FileAppeal(Box::new(appeal.clone())));
        let second = Appeal { id: "a2".into(), ..appeal };
        assert!(matches!(r.err(Command::FileAppeal(Box::new(second))), CatalogError::Invalid { .. }));
        let decide = |by: &str, lift| Command::DecideAppeal {
            id: "a1".into(),
            decision: AppealDecision { by: by.into(), at: 700, lift, note: None },
        };
        assert!(matches!(r.err(decide("u1", true)), CatalogError::Invalid { .. }), "the banning moderator");
        assert!(matches!(r.err(decide("u2", true)), CatalogError::Invalid { .. }), "the appellant");
        r.ok(decide("u3", true));
        assert!(r.state.chat_ban("c1", "u2", 800).is_none(), "lifted with the decision");
        assert!(matches!(r.err(decide("u3", false)), CatalogError::Invalid { .. }), "decided once");
    }

    #[test]
    fn an_erased_users_chat_lines_stay_anonymous_or_go() {
        let mut r = with_channel();
        r.ok(Command::CreateUser(user("u2", "brook@example.com")));
        r.ok(Command::CreateUser(user("u3", "cole@example.com")));
        r.ok(Command::PostChat(chat("m1", "c1", "u2")));
        r.ok(Command::PostChat(chat("m2", "c1", "u3")));
        r.ok(Command::PostChat(chat("m3", "c1", "u1")));
        r.ok(Command::EraseUser { id: "u2".into(), delete_chat: false });
        let authors: Vec<&str> = r.state.chat("c1").map(|m| m.user_id.as_str()).collect();
        assert_eq!(authors, [DELETED_USER, "u3", "u1"]);
        r.ok(Command::EraseUser { id: "u3".into(), delete_chat: true });
        let left: Vec<&str> = r.state.chat("c1").map(|m| m.id.as_str()).collect();
        assert_eq!(left, ["m1", "m3"]);
    }

    #[test]
    fn a_takedown_hides_a_channel_until_an_admin_restores_it() {
        use takedowns::{Takedown, TakedownEvent, TakedownStatus};
        let mut r = with_channel();
        r.ok(Command::StartSession(session("s1", "c1")));
        let event = |at, by: &str, what: &str| TakedownEvent { at, by: by.into(), what: what.into(), text: None };
        let notice = Takedown {
            id: "t1".into(),
            channel_id: "c1".into(),
            owner_id: "u1".into(),
            claimant_name: "Rights Holder".into(),
            claimant_email: "legal@example.com".into(),
            work: "Song".into(),
            infringing_url: "https://bitriver.example/c/c1".into(),
            statement: "good faith".into(),
            status: TakedownStatus::Hidden,
            history: vec![event(500, "admin", "notice")],
        };
        r.ok(Command::FileTakedown(Box::new(notice)));
        assert!(r.state.is_taken_down("c1"));
        assert_eq!(r.state.session("s1").and_then(|s| s.ended_at), Some(500), "the broadcast ended with the notice");
        assert!(matches!(r.err(Command::StartSession(session("s2", "c1"))), CatalogError::Invalid { .. }));
        let step = |what: &str| Command::StepTakedown { id: "t1".into(), event: event(600, "u1", what) };
        r.ok(step("counter"));
        assert!(matches!(r.err(step("counter")), CatalogError::Invalid { .. }), "one counter-notice");
        r.ok(step("restored"));
        assert!(!r.state.is_taken_down("c1"));
        assert!(matches!(r.err(step("removed")), CatalogError::Invalid { .. }), "decided once");
        assert_eq!(r.state.takedown("t1").unwrap().history.len(), 3);
        r.ok(Command::StartSession(session("s2", "c1")));
    }

    #[test]
    fn deleting_the_last_chat_line_leaves_the_same_tables_as_a_reload() {
        // `Replica::apply` compares against a reload after every command.
        let mut r = with_channel();
        r.ok(Command::PostChat(chat("m1", "c1", "u1")));
        r.ok(Command::DeleteChat { channel_id: "c1".into(), message_id: "m1".into() });
        assert_eq!(r.state.chat("c1").count(), 0);
    }

    #[test]
    fn refused_commands_write_nothing_and_change_nothing() {
        let mut r = with_channel();
        r.ok(Command::CreateUser(user("u2", "brook@example.com")));
        r.ok(Command::CreateAuthSession(auth("t1", "u1", 1_000)));
        r.ok(Command::PostChat(chat("m1", "c1", "u1")));
        r.ok(Command::UpsertNode(node(3)));
        r.ok(Command::StartSession(session("s1", "c1")));

        let refused = [
            Command::UpsertNode(node(0)),
            Command::RemoveNode { id: 9 },
            Command::CreateUser(user("u1", "other@example.com")),
            Command::CreateUser(user("u9", "not-an-email")),
            Command::CreateUser(User { display_name: " ".into(), ..user("u9", "nine@example.com") }),
            Command::CreateUser(user("", "nine@example.com")),
            Command::UpdateUser(UserPatch { id: "u9".into(), ..Default::default() }),
            Command::UpdateUser(UserPatch { id: "u1".into(), display_name: Some(String::new()), ..Default::default() }),
            Command::UpdateUser(UserPatch {
                id: "u1".into(),
                email: Some("brook@EXAMPLE.com".into()),
                ..Default::default()
            }),
            Command::DeleteUser { id: "u1".into() }, // owns a live channel
            Command::DeleteUser { id: "u9".into() },
            Command::CreateAuthSession(auth("t1", "u1", 5)),
            Command::CreateAuthSession(auth("t2", "u9", 5)),
            Command::DeleteAuthSession { token_hash: "t9".into() },
            Command::CreateChannel(channel("c1", "u1", "k9")),
            Command::CreateChannel(channel("c2", "u9", "k2")),
            Command::CreateChannel(channel("c2", "u1", "k1")),
            Command::CreateChannel(Channel { title: "".into(), ..channel("c2", "u1", "k2") }),
            Command::UpdateChannel(ChannelPatch { id: "c9".into(), ..Default::default() }),
            Command::UpdateChannel(ChannelPatch {
                id: "c1".into(),
                title: Some("New".into()),
                moderators: Some(vec!["u2".into(), "u9".into()]),
                ..Default::default()
            }),
            Command::DeleteChannel { id: "c1".into() }, // live
            Command::DeleteChannel { id: "c9".into() },
            Command::SetStreamKey { channel_id: "c9".into(), stream_key_hash: "k9".into(), at: 1 },
            Command::StartSession(session("s2", "c1")),
            Command::StartSession(session("s2", "c9")),
            Command::EndSession { channel_id: "c9".into(), ended_at: 1, peak_concurrent: None },
            Command::PostChat(chat("m2", "c9", "u1")),
            Command::PostChat(chat("m2", "c1", "u9")),
            Command::PostChat(ChatMessage { text: "  ".into(), ..chat("m2", "c1", "u1") }),
            Command::DeleteChat { channel_id: "c1".into(), message_id: "m9".into() },
            Command::DeleteChat { channel_id: "c9".into(), message_id: "m1".into() },
        ];
        for command in refused {
            r.err(command);
        }

        // A second channel to collide with.
        r.ok(Command::CreateChannel(channel("c2", "u2", "k2")));
        r.err(Command::SetStreamKey { channel_id: "c1".into(), stream_key_hash: "k2".into(), at: 1 });
        r.err(Command::CreateChannel(channel("c3", "u2", "k2")));
    }

    #[test]
    fn delete_user_cascades_channels_chat_and_auth_sessions() {
        let mut r = with_channel();
        r.ok(Command::CreateChannel(channel("c2", "u1", "k2")));
        r.ok(Command::CreateUser(user("u2", "brook@example.com")));
        r.ok(Command::CreateChannel(channel("c3", "u2", "k3")));
        r.ok(Command::CreateAuthSession(auth("t1", "u1", 1_000)));
        r.ok(Command::CreateAuthSession(auth("t2", "u1", 1_000)));
        r.ok(Command::CreateAuthSession(auth("t3", "u2", 1_000)));
        r.ok(Command::PostChat(chat("m1", "c1", "u1")));
        r.ok(Command::PostChat(chat("m2", "c2", "u2")));
        r.ok(Command::StartSession(session("s1", "c1")));

        // Not while one of the user's channels is live.
        let err = r.err(Command::DeleteUser { id: "u1".into() });
        assert_eq!(err, CatalogError::AlreadyLive { channel_id: "c1".into(), session_id: "s1".into() });
        r.ok(Command::EndSession { channel_id: "c1".into(), ended_at: 150, peak_concurrent: None });

        let (result, mutations) = r.apply(Command::DeleteUser { id: "u1".into() });
        assert_eq!(result, Ok(Response::Done));
        assert!(mutations.iter().all(|m| m.value.is_none()), "a delete only deletes: {mutations:?}");
        assert!(r.state.user("u1").is_none());
        assert!(r.state.user_by_email("river@example.com").is_none());
        assert!(r.state.channel("c1").is_none() && r.state.channel("c2").is_none());
        assert!(r.state.channel_by_stream_key_hash("k1").is_none());
        assert_eq!(r.state.chat("c1").count() + r.state.chat("c2").count(), 0);
        assert!(r.state.auth_session("t1").is_none() && r.state.auth_session("t2").is_none());
        // Somebody else's things stay.
        assert!(r.state.user("u2").is_some() && r.state.channel("c3").is_some());
        assert!(r.state.auth_session("t3").is_some());
        // The email is free again.
        r.ok(Command::CreateUser(user("u4", "River@example.com")));
    }

    #[test]
    fn stream_key_lookup_follows_set_stream_key() {
        let mut r = with_channel();
        assert_eq!(r.state.channel_by_stream_key_hash("k1").map(|c| c.id.as_str()), Some("c1"));

        let Response::Channel(c) =
            r.ok(Command::SetStreamKey { channel_id: "c1".into(), stream_key_hash: "k2".into(), at: 50 })
        else {
            panic!()
        };
        assert_eq!((c.stream_key_hash.as_str(), c.updated_at), ("k2", 50));
        assert!(r.state.channel_by_stream_key_hash("k1").is_none(), "the old key no longer publishes");
        assert_eq!(r.state.channel_by_stream_key_hash("k2").map(|c| c.id.as_str()), Some("c1"));

        // Re-setting the same key is allowed; the old key is free for another channel.
        r.ok(Command::SetStreamKey { channel_id: "c1".into(), stream_key_hash: "k2".into(), at: 60 });
        r.ok(Command::CreateChannel(channel("c2", "u1", "k1")));
        assert_eq!(r.state.channel_by_stream_key_hash("k1").map(|c| c.id.as_str()), Some("c2"));

        r.ok(Command::DeleteChannel { id: "c1".into() });
        assert!(r.state.channel_by_stream_key_hash("k2").is_none());
    }

    #[test]
    fn reserve_node_id_skips_known_ids_and_refuses_overflow() {
        let mut r = Replica::default();
        assert_eq!(r.ok(Command::ReserveNodeId { at_least: 0 }), Response::NodeId(1));
        r.ok(Command::UpsertNode(node(5)));
        assert_eq!(r.ok(Command::ReserveNodeId { at_least: 2 }), Response::NodeId(6));
        assert_eq!(r.ok(Command::ReserveNodeId { at_least: 2 }), Response::NodeId(7));
        assert_eq!(r.ok(Command::ReserveNodeId { at_least: 40 }), Response::NodeId(40));

        // Proposer-chosen numbers at the top of the range must be refused, not overflow.
        assert!(matches!(r.err(Command::ReserveNodeId { at_least: u64::MAX }), CatalogError::Invalid { .. }));
        r.ok(Command::UpsertNode(node(u64::MAX)));
        assert!(matches!(r.err(Command::ReserveNodeId { at_least: 0 }), CatalogError::Invalid { .. }));
    }

    #[test]
    fn revoking_a_users_sessions_keeps_the_named_one_and_other_users() {
        let mut r = with_channel();
        r.ok(Command::CreateUser(user("u2", "brook@example.com")));
        for (token, user) in [("t1", "u1"), ("t2", "u1"), ("t3", "u1"), ("t4", "u2")] {
            r.ok(Command::CreateAuthSession(auth(token, user, 1_000)));
        }
        let revoke = |keep: Option<&str>| Command::RevokeUserAuthSessions {
            user_id: "u1".into(),
            keep: keep.map(str::to_owned),
        };
        assert_eq!(r.ok(revoke(Some("t2"))), Response::Removed(2));
        assert!(r.state.auth_session("t1").is_none() && r.state.auth_session("t3").is_none());
        assert!(r.state.auth_session("t2").is_some() && r.state.auth_session("t4").is_some());
        assert_eq!(r.ok(revoke(None)), Response::Removed(1));
        assert!(r.state.auth_session("t2").is_none() && r.state.auth_session("t4").is_some());
    }

    #[test]
    fn purge_removes_only_expired_sessions() {
        let mut r = with_channel();
        r.ok(Command::CreateAuthSession(auth("t1", "u1", 100)));
        r.ok(Command::CreateAuthSession(auth("t2", "u1", 200)));
        assert_eq!(r.ok(Command::PurgeExpiredAuthSessions { now: 150 }), Response::Removed(1));
        assert!(r.state.auth_session("t1").is_none() && r.state.auth_session("t2").is_some());
        assert_eq!(r.ok(Command::PurgeExpiredAuthSessions { now: 150 }), Response::Removed(0));
    }

    #[test]
    fn a_batch_answers_each_command_and_orders_chat_lines() {
        let mut r = with_channel();
        let batch = Command::Batch(vec![
            Command::PostChat(chat("b1", "c1", "u1")),
            Command::CreateUser(user("u2", "river@example.com")), // email taken: refused alone
            Command::PostChat(chat("b2", "c1", "u1")),
            Command::Batch(vec![]),
        ]);
        let Response::Batch(results) = r.ok(batch) else { panic!("a batch answers with Response::Batch") };
        assert_eq!(results.len(), 4);
        assert!(matches!(results[0], Ok(Response::Chat(_))));
        assert!(matches!(results[1], Err(CatalogError::EmailTaken { .. })));
        assert!(matches!(results[2], Ok(Response::Chat(_))));
        assert!(matches!(results[3], Err(CatalogError::Invalid { .. })), "batches do not nest");
        let lines: Vec<_> = r.state.chat("c1").map(|m| (m.id.clone(), m.seq)).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].0, "b1");
        assert_eq!(lines[1].1, lines[0].1 + 2, "position in the batch orders lines of one entry");
        assert!(r.state.user("u2").is_none());
    }
}
