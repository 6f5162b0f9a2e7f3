//! Automod: a channel's chat rules beyond the word filter, judged while a post is applied so every
//! replica agrees on it (the inputs are the message, the catalog and the message's own
//! timestamp, never a local clock).
//!
//! - links: refused when `block_links` is on, unless their host is an allowed domain or a
//!   subdomain of one;
//! - the same text (case and spacing aside) from the same user again within
//!   `repeat_window_secs`: refused;
//! - shouting: at least [`CAPS_MIN_LETTERS`] letters, more than `caps_max_percent` of them
//!   capitals: refused;
//! - emote floods: more than `max_emotes` emoji or `:name:` codes: refused;
//! - accounts younger than `new_account_hold_minutes` at the message's time: the message is held
//!   for a moderator ([`HeldMessage`]), who approves it (it is posted then, under its own id and
//!   time) or rejects it ([`Command::ReviewHeldMessage`]).
//!
//! Moderators of the channel are exempt, as from slow mode and the word filter.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{delete, put, CatalogState, Mutation};
use crate::codec::{self, CodecError};
use crate::command::{ApplyResult, CatalogError, Command, Response};
use crate::types::{ChatMessage, UnixMillis};

/// Shorter messages are never judged as shouting ("OK", "GG WP").
pub const CAPS_MIN_LETTERS: usize = 10;
/// Held messages kept per channel; past it the oldest is dropped (a flood of new accounts must
/// not grow the catalog without bound).
pub const MAX_HELD_PER_CHANNEL: usize = 200;

mod key {
    pub(super) const AUTOMOD: &str = "amod/";
    pub(super) const HELD: &str = "held/";
}

/// A channel's automod rules (all off by default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Automod {
    pub block_links: bool,
    /// Lower-case domains whose links pass when `block_links` is on (subdomains too).
    pub allowed_link_domains: Vec<String>,
    /// The same message again from one user within this many seconds is refused (0 = off).
    pub repeat_window_secs: u32,
    /// Most capitals, in percent of the letters, a message of [`CAPS_MIN_LETTERS`] or more
    /// letters may have (0 = off).
    pub caps_max_percent: u8,
    /// Most emotes (emoji, `:name:` codes) in one message (0 = no limit).
    pub max_emotes: u32,
    /// Messages from accounts younger than this many minutes are held for review (0 = off).
    pub new_account_hold_minutes: u32,
}

/// A message held for a moderator's review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct HeldMessage {
    pub message: ChatMessage,
    pub reason: String,
}

/// What automod makes of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Post,
    Refuse(String),
    Hold(String),
}

/// Judges `text` by `rules`. `previous` is the author's last message in the channel (text,
/// time), `account_age_ms` the author's account age at `sent_at`.
pub fn judge(
    rules: &Automod,
    text: &str,
    sent_at: UnixMillis,
    previous: Option<(&str, UnixMillis)>,
    account_age_ms: i64,
) -> Verdict {
    if rules.block_links {
        if let Some(host) = links(text).find(|h| !allowed(h, &rules.allowed_link_domains)) {
            return Verdict::Refuse(format!("links are not allowed in this chat ({host})"));
        }
    }
    if rules.repeat_window_secs > 0 {
        if let Some((last, at)) = previous {
            if sent_at - at < i64::from(rules.repeat_window_secs) * 1000 && same_text(last, text) {
                return Verdict::Refuse(format!(
                    "you sent the same message less than {} s ago",
                    rules.repeat_window_secs
                ));
            }
        }
    }
    if rules.caps_max_percent > 0 {
        let letters = text.chars().filter(|c| c.is_alphabetic()).count();
        let capitals = text.chars().filter(|c| c.is_uppercase()).count();
        if letters >= CAPS_MIN_LETTERS && capitals * 100 > usize::from(rules.caps_max_percent) * letters {
            return Verdict::Refuse(format!("too many capitals (at most {}%)", rules.caps_max_percent));
        }
    }
    if rules.max_emotes > 0 && emotes(text) > rules.max_emotes as usize {
        return Verdict::Refuse(format!("too many emotes (at most {})", rules.max_emotes));
    }
    if rules.new_account_hold_minutes > 0 && account_age_ms < i64::from(rules.new_account_hold_minutes) * 60_000 {
        return Verdict::Hold(format!(
            "accounts younger than {} minutes are held for review",
            rules.new_account_hold_minutes
        ));
    }
    Verdict::Post
}

fn same_text(a: &str, b: &str) -> bool {
    let words = |s: &str| s.split_whitespace().map(str::to_lowercase).collect::<Vec<_>>();
    words(a) == words(b)
}

/// Whether `host` is `domain` or a subdomain of one of `domains`.
fn allowed(host: &str, domains: &[String]) -> bool {
    domains.iter().any(|d| host == d || host.strip_suffix(d.as_str()).is_some_and(|rest| rest.ends_with('.')))
}

/// The lower-case hosts of the links in `text`: `scheme://host...`, `www.host...`, or a bare
/// `name.tld[/...]` whose last label is 2 to 24 letters.
pub fn links(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split_whitespace().filter_map(|word| {
        let word = word.trim_matches(|c: char| matches!(c, '(' | ')' | '<' | '>' | '"' | '\'' | ',' | '!' | '?'));
        let rest = match word.find("://") {
            Some(i) if i > 0 && word[..i].chars().all(|c| c.is_ascii_alphabetic()) => &word[i + 3..],
            Some(_) => return None,
            None => word,
        };
        let has_scheme = rest.len() != word.len();
        let host = rest.split(['/', '?', '#']).next()?.rsplit('@').next()?;
        let host = host.split(':').next()?.trim_end_matches('.').to_lowercase();
        let labels: Vec<&str> = host.split('.').collect();
        let tld = *labels.last()?;
        let looks_like_host = labels.len() >= 2
            && labels.iter().all(|l| !l.is_empty() && l.chars().all(|c| c.is_alphanumeric() || c == '-'));
        let named = (2..=24).contains(&tld.chars().count()) && tld.chars().all(char::is_alphabetic);
        let numeric = labels.len() == 4 && labels.iter().all(|l| l.parse::<u8>().is_ok());
        (looks_like_host && (has_scheme || named || numeric)).then_some(host)
    })
}

/// Emoji (pictographs, symbols and dingbats) and `:name:` emote codes in `text`.
pub fn emotes(text: &str) -> usize {
    let emoji =
        text.chars().filter(|&c| matches!(c as u32, 0x1F300..=0x1FAFF | 0x2600..=0x27BF | 0x1F000..=0x1F2FF)).count();
    // Between two colons: the odd parts of a split, except a last one (no closing colon).
    let parts: Vec<&str> = text.split(':').collect();
    let codes = (1..parts.len().saturating_sub(1))
        .step_by(2)
        .filter(|&i| {
            let part = parts[i];
            !part.is_empty() && part.len() <= 32 && part.chars().all(|c| c.is_alphanumeric() || c == '_')
        })
        .count();
    emoji + codes
}

/// Automod rules and held messages.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AutomodTables {
    rules: BTreeMap<String, Automod>,
    /// (channel, message id) -> held message.
    held: BTreeMap<(String, String), HeldMessage>,
}

fn held_key(channel: &str, message: &str) -> String {
    format!("{}{channel}/{message}", key::HELD)
}

impl AutomodTables {
    pub(crate) fn load_record(&mut self, key: &str, value: &[u8]) -> Result<bool, CodecError> {
        if let Some(channel) = key.strip_prefix(key::AUTOMOD) {
            self.rules.insert(channel.to_owned(), codec::decode(value)?);
        } else if key.starts_with(key::HELD) {
            let held: HeldMessage = codec::decode(value)?;
            self.held.insert((held.message.channel_id.clone(), held.message.id.clone()), held);
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    pub(crate) fn remove_channel(&mut self, channel: &str, out: &mut Vec<Mutation>) {
        if self.rules.remove(channel).is_some() {
            out.push(delete(format!("{}{channel}", key::AUTOMOD)));
        }
        for ((c, m), _) in self.held.extract_if(.., |k, _| k.0 == channel) {
            out.push(delete(held_key(&c, &m)));
        }
    }

    pub(crate) fn remove_user(&mut self, user: &str, out: &mut Vec<Mutation>) {
        for ((c, m), _) in self.held.extract_if(.., |_, h| h.message.user_id == user) {
            out.push(delete(held_key(&c, &m)));
        }
    }
}

impl CatalogState {
    /// A channel's automod rules (defaults: all off).
    pub fn automod(&self, channel_id: &str) -> Automod {
        self.automod.rules.get(channel_id).cloned().unwrap_or_default()
    }

    /// Messages of a channel held for review, oldest first.
    pub fn held_messages(&self, channel_id: &str) -> Vec<&HeldMessage> {
        let mut held: Vec<&HeldMessage> =
            self.automod.held.iter().filter(|((c, _), _)| c == channel_id).map(|(_, h)| h).collect();
        held.sort_by_key(|h| (h.message.sent_at, h.message.id.clone()));
        held
    }

    /// Automod's verdict on `message` (moderators are exempt: the caller checks that first).
    pub(crate) fn automod_verdict(&self, message: &ChatMessage) -> Verdict {
        let rules = self.automod(&message.channel_id);
        if rules == Automod::default() {
            return Verdict::Post;
        }
        let previous = self
            .chat
            .get(&message.channel_id)
            .and_then(|h| h.values().rev().find(|m| m.user_id == message.user_id))
            .map(|m| (m.text.as_str(), m.sent_at));
        let age = self.user(&message.user_id).map_or(i64::MAX, |u| message.sent_at - u.created_at);
        judge(&rules, &message.text, message.sent_at, previous, age)
    }

    /// Keep `message` for review instead of posting it.
    pub(crate) fn hold_message(
        &mut self,
        message: ChatMessage,
        reason: String,
        out: &mut Vec<Mutation>,
    ) -> ApplyResult {
        let channel = message.channel_id.clone();
        let id = (channel.clone(), message.id.clone());
        if self.automod.held.contains_key(&id) {
            return Err(CatalogError::AlreadyExists { kind: "message".into(), id: message.id });
        }
        let held = HeldMessage { message, reason };
        out.push(put(held_key(&id.0, &id.1), codec::encode(&held)));
        self.automod.held.insert(id, held.clone());
        let in_channel: Vec<(UnixMillis, String)> = self
            .automod
            .held
            .iter()
            .filter(|((c, _), _)| *c == channel)
            .map(|((_, m), h)| (h.message.sent_at, m.clone()))
            .collect();
        if in_channel.len() > MAX_HELD_PER_CHANNEL {
            if let Some((_, oldest)) = in_channel.iter().min() {
                self.automod.held.remove(&(channel.clone(), oldest.clone()));
                out.push(delete(held_key(&channel, oldest)));
            }
        }
        Ok(Response::ChatHeld(held))
    }

    pub(crate) fn apply_automod(&mut self, index: u64, command: &Command, out: &mut Vec<Mutation>) -> ApplyResult {
        match command {
            Command::SetAutomod { channel_id, rules } => {
                if self.channel(channel_id).is_none() {
                    return Err(CatalogError::not_found("channel", channel_id));
                }
                let mut rules = rules.clone();
                rules.allowed_link_domains = rules
                    .allowed_link_domains
                    .iter()
                    .map(|d| d.trim().trim_start_matches("*.").trim_matches('.').to_lowercase())
                    .filter(|d| !d.is_empty())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                out.push(put(format!("{}{channel_id}", key::AUTOMOD), codec::encode(&rules)));
                self.automod.rules.insert(channel_id.clone(), rules.clone());
                Ok(Response::Automod(rules))
            }
            Command::ReviewHeldMessage { channel_id, message_id, approve } => {
                let id = (channel_id.clone(), message_id.clone());
                let held = self
                    .automod
                    .held
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| CatalogError::not_found("held message", message_id))?;
                let result = if *approve {
                    // Bans still hold: a user banned while the message waited is not posted (and
                    // the message stays for a moderator to reject).
                    if let Some(ban) = self.chat_ban(channel_id, &held.message.user_id, held.message.sent_at) {
                        return Err(CatalogError::ChatBanned { until: ban.until });
                    }
                    self.post_chat(index, &held.message, out)?
                } else {
                    Response::Done
                };
                self.automod.held.remove(&id);
                out.push(delete(held_key(channel_id, message_id)));
                Ok(result)
            }
            _ => Err(CatalogError::invalid("command", "not an automod command")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Automod {
        Automod {
            block_links: true,
            allowed_link_domains: vec!["example.com".into()],
            repeat_window_secs: 30,
            caps_max_percent: 70,
            max_emotes: 3,
            new_account_hold_minutes: 10,
        }
    }

    const OLD: i64 = 3_600_000;

    #[test]
    fn links_are_found_in_their_usual_shapes() {
        let found: Vec<String> = links(
            "see https://Evil.test/x?y, www.spam.io and shop.example.com/deal (or 10.0.0.1) but not 3.14 or e.g. or a.b",
        )
        .collect();
        assert_eq!(found, ["evil.test", "www.spam.io", "shop.example.com", "10.0.0.1"]);
        assert_eq!(
            links("mailto:x javascript:alert(1) ftp://files.example.org").collect::<Vec<_>>(),
            ["files.example.org"]
        );
    }

    #[test]
    fn blocked_links_pass_only_for_allowed_domains() {
        let r = rules();
        assert!(
            matches!(judge(&r, "go to https://spam.io now", 0, None, OLD), Verdict::Refuse(m) if m.contains("spam.io"))
        );
        assert_eq!(judge(&r, "clip at https://clips.example.com/1", 0, None, OLD), Verdict::Post);
        assert_eq!(judge(&r, "example.com rocks", 0, None, OLD), Verdict::Post);
        assert!(matches!(judge(&r, "notexample.com", 0, None, OLD), Verdict::Refuse(_)), "a suffix is not a subdomain");
        let open = Automod { block_links: false, ..rules() };
        assert_eq!(judge(&open, "https://spam.io", 0, None, OLD), Verdict::Post);
    }

    #[test]
    fn repeats_caps_and_emotes_have_limits() {
        let r = rules();
        let previous = Some(("Hello   there", 1_000));
        assert!(matches!(judge(&r, "hello there", 20_000, previous, OLD), Verdict::Refuse(_)));
        assert_eq!(judge(&r, "hello there", 31_001, previous, OLD), Verdict::Post, "outside the window");
        assert_eq!(judge(&r, "hello again", 2_000, previous, OLD), Verdict::Post);
        assert!(matches!(judge(&r, "THIS IS SO LOUD RIGHT NOW", 0, None, OLD), Verdict::Refuse(_)));
        assert_eq!(judge(&r, "GG WP", 0, None, OLD), Verdict::Post, "too short to shout");
        assert_eq!(judge(&r, "This Is Title Case Text", 0, None, OLD), Verdict::Post);
        assert!(matches!(judge(&r, "🎉🎉🎉🎉", 0, None, OLD), Verdict::Refuse(_)));
        assert!(matches!(judge(&r, ":pog: :pog: :kappa: :lul:", 0, None, OLD), Verdict::Refuse(_)));
        assert_eq!(judge(&r, "🎉 :pog: nice", 0, None, OLD), Verdict::Post);
        assert_eq!(judge(&r, "at 10:30 or 11:45", 0, None, OLD), Verdict::Post, "times are not emotes");
        assert_eq!(emotes("a:b:c"), 1);
        assert_eq!(emotes(":a:b:c:"), 2);
    }

    #[test]
    fn new_accounts_are_held() {
        let r = rules();
        assert!(matches!(judge(&r, "hi all", 0, None, 9 * 60_000), Verdict::Hold(_)));
        assert_eq!(judge(&r, "hi all", 0, None, 10 * 60_000), Verdict::Post);
        // A refusal beats a hold: spam from a new account is refused outright.
        assert!(matches!(judge(&r, "https://spam.io", 0, None, 0), Verdict::Refuse(_)));
    }
}
