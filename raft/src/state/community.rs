//! The social side of the catalog: profiles, follows, subscriptions, chat rules (bans, timeouts,
//! slow mode, word filter), daily chat counts and viewer samples for analytics.
//!
//! Same contract as [`crate::state`]: deterministic, every change returned as [`Mutation`]s, and
//! `load_record` rebuilding exactly what applying built.

use std::collections::{BTreeMap, BTreeSet};

use super::{delete, put, CatalogState, Mutation};
use crate::codec::{self, CodecError};
use crate::command::{ApplyResult, CatalogError, Command, Response};
use crate::types::{ChatBan, ChatMessage, ChatSettings, LiveState, Profile, UnixMillis, ViewerSample, WordFilterMode};

/// Viewer samples older than this (relative to the newest sample) are dropped.
pub const VIEWER_SAMPLE_RETENTION_MS: UnixMillis = 48 * 3600 * 1000;
/// Most top friends a profile may list.
pub const MAX_TOP_FRIENDS: usize = 8;

mod key {
    pub(super) const PROFILE: &str = "prof/";
    pub(super) const FOLLOW: &str = "foll/";
    pub(super) const SUBSCRIPTION: &str = "subs/";
    pub(super) const CHAT_SETTINGS: &str = "chst/";
    pub(super) const BAN: &str = "cban/";
    pub(super) const CHAT_DAY: &str = "chcn/";
    pub(super) const VIEWERS: &str = "view/";
}

/// What the community tables hold about one user (see [`CatalogState::community_of`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommunityOfUser {
    /// (channel, since).
    pub follows: Vec<(String, UnixMillis)>,
    pub subscriptions: Vec<(String, UnixMillis)>,
    pub bans_received: Vec<ChatBan>,
    pub bans_made: Vec<ChatBan>,
}

/// Community tables. `(channel, user)` pairs order by channel first, so per-channel reads are ranges.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Community {
    profiles: BTreeMap<String, Profile>,
    follows: BTreeMap<(String, String), UnixMillis>,
    subscriptions: BTreeMap<(String, String), UnixMillis>,
    chat_settings: BTreeMap<String, ChatSettings>,
    bans: BTreeMap<(String, String), ChatBan>,
    /// (channel, UTC day number) -> messages posted that day.
    chat_per_day: BTreeMap<(String, i64), u64>,
    /// (channel, at, node) -> viewers.
    viewers: BTreeMap<(String, UnixMillis, u64), u64>,
}

fn pair_key(prefix: &str, channel: &str, user: &str) -> String {
    format!("{prefix}{channel}/{user}")
}

fn split_pair(rest: &str) -> Option<(&str, &str)> {
    rest.split_once('/')
}

/// UTC day number of a timestamp (days since the epoch).
pub fn utc_day(at: UnixMillis) -> i64 {
    at.div_euclid(86_400_000)
}

impl Community {
    /// Load one record if its key belongs here; `Ok(false)` for keys of other tables.
    pub(crate) fn load_record(&mut self, key: &str, value: &[u8]) -> Result<bool, CodecError> {
        let bad = || CodecError::Malformed(format!("bad key {key}"));
        if let Some(user) = key.strip_prefix(key::PROFILE) {
            let p: Profile = codec::decode(value)?;
            self.profiles.insert(user.to_owned(), p);
        } else if let Some(rest) = key.strip_prefix(key::FOLLOW) {
            let (c, u) = split_pair(rest).ok_or_else(bad)?;
            self.follows.insert((c.to_owned(), u.to_owned()), codec::decode(value)?);
        } else if let Some(rest) = key.strip_prefix(key::SUBSCRIPTION) {
            let (c, u) = split_pair(rest).ok_or_else(bad)?;
            self.subscriptions.insert((c.to_owned(), u.to_owned()), codec::decode(value)?);
        } else if let Some(channel) = key.strip_prefix(key::CHAT_SETTINGS) {
            self.chat_settings.insert(channel.to_owned(), codec::decode(value)?);
        } else if key.starts_with(key::BAN) {
            let ban: ChatBan = codec::decode(value)?;
            self.bans.insert((ban.channel_id.clone(), ban.user_id.clone()), ban);
        } else if let Some(rest) = key.strip_prefix(key::CHAT_DAY) {
            let (c, day) = rest.rsplit_once('/').ok_or_else(bad)?;
            let day: i64 = day.parse().map_err(|_| bad())?;
            self.chat_per_day.insert((c.to_owned(), day), codec::decode(value)?);
        } else if key.starts_with(key::VIEWERS) {
            let s: ViewerSample = codec::decode(value)?;
            self.viewers.insert((s.channel_id, s.at, s.node_id), s.viewers);
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    pub(crate) fn remove_channel(&mut self, channel: &str, out: &mut Vec<Mutation>) {
        let c = channel.to_owned();
        let in_channel = |k: &(String, String)| k.0 == c;
        for (k, _) in self.follows.extract_if(.., |k, _| in_channel(k)) {
            out.push(delete(pair_key(key::FOLLOW, &k.0, &k.1)));
        }
        for (k, _) in self.subscriptions.extract_if(.., |k, _| in_channel(k)) {
            out.push(delete(pair_key(key::SUBSCRIPTION, &k.0, &k.1)));
        }
        for (k, _) in self.bans.extract_if(.., |k, _| in_channel(k)) {
            out.push(delete(pair_key(key::BAN, &k.0, &k.1)));
        }
        if self.chat_settings.remove(channel).is_some() {
            out.push(delete(format!("{}{channel}", key::CHAT_SETTINGS)));
        }
        for ((c, day), _) in self.chat_per_day.extract_if(.., |k, _| k.0 == channel) {
            out.push(delete(day_key(&c, day)));
        }
        for ((c, at, node), _) in self.viewers.extract_if(.., |k, _| k.0 == channel) {
            out.push(delete(viewer_key(&c, at, node)));
        }
    }

    /// Bans a deleted moderator made stay, naming [`super::DELETED_USER`] as who made them.
    pub(crate) fn forget_moderator(&mut self, user: &str, out: &mut Vec<Mutation>) {
        for ban in self.bans.values_mut().filter(|b| b.by == user) {
            ban.by = super::DELETED_USER.to_owned();
            out.push(put(pair_key(key::BAN, &ban.channel_id, &ban.user_id), codec::encode(&*ban)));
        }
    }

    pub(crate) fn remove_user(&mut self, user: &str, out: &mut Vec<Mutation>) {
        if self.profiles.remove(user).is_some() {
            out.push(delete(format!("{}{user}", key::PROFILE)));
        }
        for (k, _) in self.follows.extract_if(.., |k, _| k.1 == user) {
            out.push(delete(pair_key(key::FOLLOW, &k.0, &k.1)));
        }
        for (k, _) in self.subscriptions.extract_if(.., |k, _| k.1 == user) {
            out.push(delete(pair_key(key::SUBSCRIPTION, &k.0, &k.1)));
        }
        for (k, _) in self.bans.extract_if(.., |k, _| k.1 == user) {
            out.push(delete(pair_key(key::BAN, &k.0, &k.1)));
        }
    }
}

fn count_by_channel<'a>(pairs: impl Iterator<Item = &'a (String, String)>) -> BTreeMap<&'a str, usize> {
    let mut counts = BTreeMap::new();
    for (channel, _) in pairs {
        *counts.entry(channel.as_str()).or_insert(0) += 1;
    }
    counts
}

fn day_key(channel: &str, day: i64) -> String {
    format!("{}{channel}/{day:010}", key::CHAT_DAY)
}

fn viewer_key(channel: &str, at: UnixMillis, node: u64) -> String {
    format!("{}{channel}/{at:015}/{node:020}", key::VIEWERS)
}

/// Replace each blocked word (case-insensitive) with asterisks; `true` if anything matched.
fn mask_words(text: &mut String, words: &[String]) -> bool {
    let mut hit = false;
    for word in words.iter().filter(|w| !w.is_empty()) {
        loop {
            let lower = text.to_lowercase();
            // Lower-casing can change byte lengths for some scripts; only mask when offsets agree.
            if lower.len() != text.len() {
                return hit || lower.contains(word.as_str());
            }
            let Some(pos) = lower.find(word.as_str()) else { break };
            let stars = "*".repeat(word.chars().count());
            text.replace_range(pos..pos + word.len(), &stars);
            hit = true;
        }
    }
    hit
}

impl CatalogState {
    // ----- reads -----

    pub fn profile(&self, user_id: &str) -> Option<&Profile> {
        self.community.profiles.get(user_id)
    }
    pub fn followers(&self, channel_id: &str) -> usize {
        self.community.follows.keys().filter(|(c, _)| c == channel_id).count()
    }
    pub fn is_following(&self, channel_id: &str, user_id: &str) -> bool {
        self.community.follows.contains_key(&(channel_id.to_owned(), user_id.to_owned()))
    }
    /// Everything the community tables hold about `user_id`, for their data export: follows and
    /// subscriptions (channel, since), bans they received, bans they made.
    pub fn community_of(&self, user_id: &str) -> CommunityOfUser {
        let pairs = |table: &BTreeMap<(String, String), UnixMillis>| {
            table.iter().filter(|((_, u), _)| u == user_id).map(|((c, _), at)| (c.clone(), *at)).collect()
        };
        CommunityOfUser {
            follows: pairs(&self.community.follows),
            subscriptions: pairs(&self.community.subscriptions),
            bans_received: self.community.bans.values().filter(|b| b.user_id == user_id).cloned().collect(),
            bans_made: self.community.bans.values().filter(|b| b.by == user_id).cloned().collect(),
        }
    }
    pub fn followed_by(&self, user_id: &str) -> Vec<String> {
        self.community.follows.keys().filter(|(_, u)| u == user_id).map(|(c, _)| c.clone()).collect()
    }
    /// Follower count of every channel that has followers, in one pass (for listings).
    pub fn follower_counts(&self) -> BTreeMap<&str, usize> {
        count_by_channel(self.community.follows.keys())
    }
    pub fn subscribers(&self, channel_id: &str) -> usize {
        self.community.subscriptions.keys().filter(|(c, _)| c == channel_id).count()
    }
    /// Subscriber count of every channel that has subscribers, in one pass (for listings).
    pub fn subscriber_counts(&self) -> BTreeMap<&str, usize> {
        count_by_channel(self.community.subscriptions.keys())
    }
    pub fn is_subscribed(&self, channel_id: &str, user_id: &str) -> bool {
        self.community.subscriptions.contains_key(&(channel_id.to_owned(), user_id.to_owned()))
    }
    pub fn chat_settings(&self, channel_id: &str) -> ChatSettings {
        self.community.chat_settings.get(channel_id).cloned().unwrap_or_default()
    }
    /// The ban or timeout of a user in a channel, if one is in force at `now`.
    pub fn chat_ban(&self, channel_id: &str, user_id: &str, now: UnixMillis) -> Option<&ChatBan> {
        let ban = self.community.bans.get(&(channel_id.to_owned(), user_id.to_owned()))?;
        ban.until.is_none_or(|until| until > now).then_some(ban)
    }
    pub fn chat_bans<'a>(&'a self, channel_id: &'a str) -> impl Iterator<Item = &'a ChatBan> + 'a {
        self.community.bans.values().filter(move |b| b.channel_id == channel_id)
    }
    /// Messages posted in a channel on the UTC day of `at`.
    pub fn chat_messages_on_day(&self, channel_id: &str, at: UnixMillis) -> u64 {
        self.community.chat_per_day.get(&(channel_id.to_owned(), utc_day(at))).copied().unwrap_or(0)
    }
    /// Viewer samples of a channel since `from`, oldest first: (at, node, viewers).
    pub fn viewer_samples(&self, channel_id: &str, from: UnixMillis) -> Vec<(UnixMillis, u64, u64)> {
        let start = (channel_id.to_owned(), from, 0);
        self.community
            .viewers
            .range(start..)
            .take_while(|((c, _, _), _)| c == channel_id)
            .map(|((_, at, node), v)| (*at, *node, *v))
            .collect()
    }
    /// Whether `user_id` may moderate `channel_id`: its owner, one of its moderators, or an admin.
    pub fn can_moderate(&self, channel_id: &str, user_id: &str) -> bool {
        let admin = self.user(user_id).is_some_and(|u| u.roles.iter().any(|r| r == "admin"));
        admin
            || self
                .channel(channel_id)
                .is_some_and(|c| c.owner_id == user_id || c.moderators.iter().any(|m| m == user_id))
    }

    // ----- apply -----

    /// Enforce bans, timeouts, slow mode, the word filter and automod on a chat message (may mask
    /// its text). `Ok(Some(reason))`: automod holds it for review.
    pub(crate) fn check_chat_rules(&self, message: &mut ChatMessage) -> Result<Option<String>, CatalogError> {
        if let Some(ban) = self.chat_ban(&message.channel_id, &message.user_id, message.sent_at) {
            return Err(CatalogError::ChatBanned { until: ban.until });
        }
        if self.can_moderate(&message.channel_id, &message.user_id) {
            return Ok(None);
        }
        let settings = self.chat_settings(&message.channel_id);
        if settings.slow_mode_secs > 0 {
            let window = i64::from(settings.slow_mode_secs) * 1000;
            let last = self.chat(&message.channel_id).rev().find(|m| m.user_id == message.user_id).map(|m| m.sent_at);
            if let Some(last) = last {
                let next_allowed = last + window;
                if message.sent_at < next_allowed {
                    return Err(CatalogError::SlowMode { retry_after_ms: (next_allowed - message.sent_at) as u64 });
                }
            }
        }
        if !settings.blocked_words.is_empty() {
            let mut masked = message.text.clone();
            if mask_words(&mut masked, &settings.blocked_words) {
                match settings.filter_mode {
                    WordFilterMode::Block => return Err(CatalogError::invalid("text", "contains a blocked word")),
                    WordFilterMode::Mask => message.text = masked,
                }
            }
        }
        match self.automod_verdict(message) {
            super::automod::Verdict::Post => Ok(None),
            super::automod::Verdict::Refuse(reason) => Err(CatalogError::invalid("text", &reason)),
            super::automod::Verdict::Hold(reason) => Ok(Some(reason)),
        }
    }

    /// Count a posted message for the daily totals (called by `post_chat`).
    pub(crate) fn count_chat_message(&mut self, message: &ChatMessage, out: &mut Vec<Mutation>) {
        let day = utc_day(message.sent_at);
        let count = self.community.chat_per_day.entry((message.channel_id.clone(), day)).or_default();
        *count += 1;
        out.push(put(day_key(&message.channel_id, day), codec::encode(count)));
    }

    pub(crate) fn apply_community(&mut self, command: &Command, out: &mut Vec<Mutation>) -> ApplyResult {
        match command {
            Command::UpsertProfile(profile) => self.upsert_profile(profile, out),
            Command::Follow { channel_id, user_id, at } | Command::Subscribe { channel_id, user_id, at } => {
                self.require_channel_and_user(channel_id, user_id)?;
                let (table, prefix) = if matches!(command, Command::Follow { .. }) {
                    (&mut self.community.follows, key::FOLLOW)
                } else {
                    (&mut self.community.subscriptions, key::SUBSCRIPTION)
                };
                let since = *table.entry((channel_id.clone(), user_id.clone())).or_insert(*at);
                out.push(put(pair_key(prefix, channel_id, user_id), codec::encode(&since)));
                Ok(Response::Done)
            }
            Command::Unfollow { channel_id, user_id } | Command::Unsubscribe { channel_id, user_id } => {
                let (table, prefix) = if matches!(command, Command::Unfollow { .. }) {
                    (&mut self.community.follows, key::FOLLOW)
                } else {
                    (&mut self.community.subscriptions, key::SUBSCRIPTION)
                };
                if table.remove(&(channel_id.clone(), user_id.clone())).is_some() {
                    out.push(delete(pair_key(prefix, channel_id, user_id)));
                }
                Ok(Response::Done)
            }
            Command::SetChatSettings { channel_id, settings } => {
                if self.channel(channel_id).is_none() {
                    return Err(CatalogError::not_found("channel", channel_id));
                }
                let mut settings = settings.clone();
                settings.blocked_words = settings
                    .blocked_words
                    .iter()
                    .map(|w| w.trim().to_lowercase())
                    .filter(|w| !w.is_empty())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                out.push(put(format!("{}{channel_id}", key::CHAT_SETTINGS), codec::encode(&settings)));
                self.community.chat_settings.insert(channel_id.clone(), settings.clone());
                Ok(Response::ChatSettings(settings))
            }
            Command::BanFromChat(ban) => {
                self.require_channel_and_user(&ban.channel_id, &ban.user_id)?;
                if self.channel(&ban.channel_id).is_some_and(|c| c.owner_id == ban.user_id) {
                    return Err(CatalogError::invalid("userId", "the channel owner cannot be banned from their chat"));
                }
                out.push(put(pair_key(key::BAN, &ban.channel_id, &ban.user_id), codec::encode(ban)));
                self.community.bans.insert((ban.channel_id.clone(), ban.user_id.clone()), ban.clone());
                Ok(Response::Done)
            }
            Command::UnbanFromChat { channel_id, user_id } => {
                if self.community.bans.remove(&(channel_id.clone(), user_id.clone())).is_none() {
                    return Err(CatalogError::not_found("ban", user_id));
                }
                out.push(delete(pair_key(key::BAN, channel_id, user_id)));
                Ok(Response::Done)
            }
            Command::ReportViewers(sample) => self.report_viewers(sample, out),
            other => Err(CatalogError::invalid("command", &format!("not a catalog command: {other:?}"))),
        }
    }

    fn require_channel_and_user(&self, channel_id: &str, user_id: &str) -> Result<(), CatalogError> {
        if self.channel(channel_id).is_none() {
            return Err(CatalogError::not_found("channel", channel_id));
        }
        if self.user(user_id).is_none() {
            return Err(CatalogError::not_found("user", user_id));
        }
        Ok(())
    }

    fn upsert_profile(&mut self, profile: &Profile, out: &mut Vec<Mutation>) -> ApplyResult {
        if self.user(&profile.user_id).is_none() {
            return Err(CatalogError::not_found("user", &profile.user_id));
        }
        if let Some(featured) = &profile.featured_channel_id {
            match self.channel(featured) {
                None => return Err(CatalogError::not_found("channel", featured)),
                Some(c) if c.owner_id != profile.user_id => {
                    return Err(CatalogError::invalid("featuredChannelId", "must be one of your own channels"))
                }
                Some(_) => {}
            }
        }
        if profile.top_friends.len() > MAX_TOP_FRIENDS {
            return Err(CatalogError::invalid("topFriends", "at most eight friends"));
        }
        let mut seen = BTreeSet::new();
        for friend in &profile.top_friends {
            if friend == &profile.user_id {
                return Err(CatalogError::invalid("topFriends", "you cannot be your own top friend"));
            }
            if !seen.insert(friend) {
                return Err(CatalogError::invalid("topFriends", "duplicate friend"));
            }
            if self.user(friend).is_none() {
                return Err(CatalogError::not_found("user", friend));
            }
        }
        out.push(put(format!("{}{}", key::PROFILE, profile.user_id), codec::encode(profile)));
        self.community.profiles.insert(profile.user_id.clone(), profile.clone());
        Ok(Response::Profile(profile.clone()))
    }

    fn report_viewers(&mut self, sample: &ViewerSample, out: &mut Vec<Mutation>) -> ApplyResult {
        let Some(channel) = self.channel(&sample.channel_id) else {
            return Err(CatalogError::not_found("channel", &sample.channel_id));
        };
        let live_session =
            (channel.live_state == LiveState::Live).then(|| channel.current_session_id.clone()).flatten();
        let c = sample.channel_id.clone();
        self.community.viewers.insert((c.clone(), sample.at, sample.node_id), sample.viewers);
        out.push(put(viewer_key(&c, sample.at, sample.node_id), codec::encode(sample)));
        self.record_watches(sample, out);
        let horizon = sample.at - VIEWER_SAMPLE_RETENTION_MS;
        for ((ch, at, node), _) in self.community.viewers.extract_if(.., |k, _| k.0 == c && k.1 < horizon) {
            out.push(delete(viewer_key(&ch, at, node)));
        }
        // Peak concurrents of the live session follow the reported audience.
        if let Some(session_id) = live_session {
            let total: u64 = self
                .viewer_samples(&c, sample.at - 60_000)
                .into_iter()
                .fold(BTreeMap::new(), |mut latest, (_, node, v)| {
                    latest.insert(node, v);
                    latest
                })
                .values()
                .sum();
            if let Some(session) = self.session(&session_id).cloned() {
                if total > session.peak_concurrent {
                    let mut session = session;
                    session.peak_concurrent = total;
                    self.put_session_record(session, out);
                }
            }
        }
        Ok(Response::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_is_case_insensitive_and_keeps_length() {
        let mut text = "What a DARN good darn stream".to_owned();
        assert!(mask_words(&mut text, &["darn".to_owned()]));
        assert_eq!(text, "What a **** good **** stream");
        let mut clean = "hello".to_owned();
        assert!(!mask_words(&mut clean, &["darn".to_owned()]));
    }

    #[test]
    fn utc_days() {
        assert_eq!(utc_day(0), 0);
        assert_eq!(utc_day(86_399_999), 0);
        assert_eq!(utc_day(86_400_000), 1);
        assert_eq!(utc_day(-1), -1);
    }
}
