//! Legal pages and copyright takedowns.
//!
//! The operator edits the Terms, Privacy and DMCA pages' text ([`LegalPage`]). A takedown notice
//! ([`Takedown`]) recorded by an admin hides the channel at once (not listed, not watchable, no
//! new broadcast) and is shown to the channel's owner, who may send one counter-notice; an admin
//! then restores the channel or removes it for good. Every step is appended to the notice's
//! history, which admins export as the audit trail.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{put, CatalogState, Mutation};
use crate::codec::{self, CodecError};
use crate::command::{ApplyResult, CatalogError, Command, Response};
use crate::types::UnixMillis;

mod key {
    pub(super) const PAGE: &str = "page/";
    pub(super) const TAKEDOWN: &str = "tkdn/";
}

/// The legal pages an operator edits.
pub const LEGAL_PAGES: [&str; 3] = ["terms", "privacy", "dmca"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LegalPage {
    /// `terms`, `privacy` or `dmca`.
    pub name: String,
    pub text: String,
    #[cfg_attr(feature = "utoipa", schema(value_type = i64))]
    pub updated_at: UnixMillis,
    pub updated_by: String,
}

/// Where a notice stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum TakedownStatus {
    /// The channel is hidden; the owner may counter.
    Hidden,
    /// The owner sent a counter-notice; an admin decides.
    Countered,
    /// The channel is back.
    Restored,
    /// The channel stays hidden for good.
    Removed,
}

/// One step of a notice's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TakedownEvent {
    #[cfg_attr(feature = "utoipa", schema(value_type = i64))]
    pub at: UnixMillis,
    pub by: String,
    /// `notice`, `counter`, `restored`, `removed`.
    pub what: String,
    pub text: Option<String>,
}

/// A copyright notice against a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Takedown {
    pub id: String,
    pub channel_id: String,
    /// The channel's owner when the notice came (the uploader who is notified).
    pub owner_id: String,
    pub claimant_name: String,
    pub claimant_email: String,
    /// The copyrighted work.
    pub work: String,
    /// Where the infringement was seen.
    pub infringing_url: String,
    /// The claimant's statement (good faith, accuracy).
    pub statement: String,
    pub status: TakedownStatus,
    pub history: Vec<TakedownEvent>,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct TakedownTables {
    pages: BTreeMap<String, LegalPage>,
    takedowns: BTreeMap<String, Takedown>,
}

impl TakedownTables {
    pub(crate) fn load_record(&mut self, key: &str, value: &[u8]) -> Result<bool, CodecError> {
        if key.starts_with(key::PAGE) {
            let p: LegalPage = codec::decode(value)?;
            self.pages.insert(p.name.clone(), p);
        } else if key.starts_with(key::TAKEDOWN) {
            let t: Takedown = codec::decode(value)?;
            self.takedowns.insert(t.id.clone(), t);
        } else {
            return Ok(false);
        }
        Ok(true)
    }
}

fn takedown_key(id: &str) -> String {
    format!("{}{id}", key::TAKEDOWN)
}

impl CatalogState {
    pub fn legal_page(&self, name: &str) -> Option<&LegalPage> {
        self.takedowns.pages.get(name)
    }

    pub fn takedown(&self, id: &str) -> Option<&Takedown> {
        self.takedowns.takedowns.get(id)
    }

    /// Every notice, oldest first.
    pub fn takedowns(&self) -> Vec<&Takedown> {
        let mut all: Vec<&Takedown> = self.takedowns.takedowns.values().collect();
        all.sort_by_key(|t| (t.history.first().map_or(0, |e| e.at), t.id.clone()));
        all
    }

    /// Whether a takedown hides `channel_id` (a notice not restored).
    pub fn is_taken_down(&self, channel_id: &str) -> bool {
        self.takedowns.takedowns.values().any(|t| t.channel_id == channel_id && t.status != TakedownStatus::Restored)
    }

    pub(crate) fn apply_takedowns(&mut self, index: u64, command: &Command, out: &mut Vec<Mutation>) -> ApplyResult {
        match command {
            Command::SetLegalPage(page) => {
                if !LEGAL_PAGES.contains(&page.name.as_str()) {
                    return Err(CatalogError::invalid("name", "legal pages are terms, privacy and dmca"));
                }
                out.push(put(format!("{}{}", key::PAGE, page.name), codec::encode(page)));
                self.takedowns.pages.insert(page.name.clone(), page.clone());
                Ok(Response::Done)
            }
            Command::FileTakedown(notice) => {
                if self.takedowns.takedowns.contains_key(&notice.id) {
                    return Err(CatalogError::AlreadyExists { kind: "takedown".into(), id: notice.id.clone() });
                }
                let channel = self
                    .channel(&notice.channel_id)
                    .ok_or_else(|| CatalogError::not_found("channel", &notice.channel_id))?;
                if channel.owner_id != notice.owner_id
                    || notice.status != TakedownStatus::Hidden
                    || notice.history.len() != 1
                {
                    return Err(CatalogError::invalid(
                        "takedown",
                        "a new notice names the channel's owner and starts hidden",
                    ));
                }
                // A live broadcast ends with the notice, at the notice's time.
                if channel.live_state == crate::types::LiveState::Live {
                    let at = notice.history[0].at;
                    let end = Command::EndSession {
                        channel_id: notice.channel_id.clone(),
                        ended_at: at,
                        peak_concurrent: None,
                    };
                    self.apply_inner(index, &end, out)?;
                }
                self.put_takedown((**notice).clone(), out)
            }
            Command::StepTakedown { id, event } => {
                let mut notice = self.takedown(id).cloned().ok_or_else(|| CatalogError::not_found("takedown", id))?;
                let next = match (notice.status, event.what.as_str()) {
                    (TakedownStatus::Hidden, "counter") => TakedownStatus::Countered,
                    (TakedownStatus::Hidden | TakedownStatus::Countered, "restored") => TakedownStatus::Restored,
                    (TakedownStatus::Hidden | TakedownStatus::Countered, "removed") => TakedownStatus::Removed,
                    (_, "counter") => {
                        return Err(CatalogError::invalid(
                            "takedown",
                            "one counter-notice, while the channel is hidden",
                        ))
                    }
                    _ => return Err(CatalogError::invalid("takedown", "this notice is already decided")),
                };
                notice.status = next;
                notice.history.push(event.clone());
                self.put_takedown(notice, out)
            }
            _ => Err(CatalogError::invalid("command", "not a takedown command")),
        }
    }

    fn put_takedown(&mut self, notice: Takedown, out: &mut Vec<Mutation>) -> ApplyResult {
        out.push(put(takedown_key(&notice.id), codec::encode(&notice)));
        self.takedowns.takedowns.insert(notice.id.clone(), notice.clone());
        Ok(Response::Takedown(Box::new(notice)))
    }
}
