//! Reports and appeals: viewers report a chat message, a channel or a user; moderators act on a
//! report (dismiss, delete the message, time out or ban its author) and the action is recorded on
//! the report; a banned user appeals the ban once, and someone other than the moderator who
//! banned decides it (uphold, or lift the ban).
//!
//! Actions apply in the same log entry as the decision that records them (a ban from a report is
//! a [`Command::BanFromChat`] applied inside [`Command::ResolveReport`]), so a report never says
//! "banned" without the ban, or the other way round. Permissions (who may see and decide what)
//! are the API's; the rules that keep the records consistent are here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{put, CatalogState, Mutation};
use crate::codec::{self, CodecError};
use crate::command::{ApplyResult, CatalogError, Command, Response};
use crate::types::{ChatBan, UnixMillis};

mod key {
    pub(super) const REPORT: &str = "rept/";
    pub(super) const APPEAL: &str = "appl/";
}

/// What a report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum ReportTarget {
    Message,
    Channel,
    User,
}

/// A moderator's decision on a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum ReportAction {
    /// Nothing wrong.
    Dismiss,
    /// Delete the reported message.
    Delete,
    /// Time the reported user out of the report's channel chat.
    Timeout {
        #[serde(rename = "durationSeconds")]
        duration_seconds: i64,
    },
    /// Ban the reported user from the report's channel chat.
    Ban,
}

/// Who decided, when, what, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Resolution {
    pub by: String,
    #[cfg_attr(feature = "utoipa", schema(value_type = i64))]
    pub at: UnixMillis,
    pub action: ReportAction,
    pub note: Option<String>,
}

/// One report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub id: String,
    pub reporter_id: String,
    pub target_type: ReportTarget,
    pub target_id: String,
    /// The channel the target belongs to (a message's channel, the channel itself); `None` for a
    /// user reported outside any channel (admins handle those).
    pub channel_id: Option<String>,
    /// The user the report is against (a message's author, a channel's owner, the user).
    pub subject_user_id: String,
    /// A reported message's text when it was reported (the message may be deleted later).
    pub excerpt: Option<String>,
    pub reason: String,
    pub note: Option<String>,
    #[cfg_attr(feature = "utoipa", schema(value_type = i64))]
    pub created_at: UnixMillis,
    pub resolution: Option<Resolution>,
}

/// A banned user's appeal, and its decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Appeal {
    pub id: String,
    pub user_id: String,
    pub channel_id: String,
    /// The moderator who banned: they may not decide the appeal.
    pub ban_by: String,
    /// When the appealed ban was made: one appeal per ban.
    #[cfg_attr(feature = "utoipa", schema(value_type = i64))]
    pub ban_at: UnixMillis,
    pub text: String,
    #[cfg_attr(feature = "utoipa", schema(value_type = i64))]
    pub created_at: UnixMillis,
    pub decision: Option<AppealDecision>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AppealDecision {
    pub by: String,
    #[cfg_attr(feature = "utoipa", schema(value_type = i64))]
    pub at: UnixMillis,
    /// The ban was lifted (else upheld).
    pub lift: bool,
    pub note: Option<String>,
}

/// Reports and appeals by id.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReportTables {
    reports: BTreeMap<String, Report>,
    appeals: BTreeMap<String, Appeal>,
}

impl ReportTables {
    pub(crate) fn load_record(&mut self, key: &str, value: &[u8]) -> Result<bool, CodecError> {
        if key.starts_with(key::REPORT) {
            let r: Report = codec::decode(value)?;
            self.reports.insert(r.id.clone(), r);
        } else if key.starts_with(key::APPEAL) {
            let a: Appeal = codec::decode(value)?;
            self.appeals.insert(a.id.clone(), a);
        } else {
            return Ok(false);
        }
        Ok(true)
    }
}

impl ReportTables {
    /// A deleted user's appeals go; reports they filed or that are about them stay for the
    /// record, naming [`super::DELETED_USER`] instead (and without the reported text), as do
    /// decisions they made.
    pub(crate) fn forget_user(&mut self, user: &str, out: &mut Vec<Mutation>) {
        let gone = super::DELETED_USER;
        for (id, _) in self.appeals.extract_if(.., |_, a| a.user_id == user) {
            out.push(super::delete(appeal_key(&id)));
        }
        for appeal in self.appeals.values_mut() {
            let mut changed = false;
            if appeal.ban_by == user {
                appeal.ban_by = gone.to_owned();
                changed = true;
            }
            if let Some(d) = appeal.decision.as_mut().filter(|d| d.by == user) {
                d.by = gone.to_owned();
                changed = true;
            }
            if changed {
                out.push(put(appeal_key(&appeal.id), codec::encode(&*appeal)));
            }
        }
        for report in self.reports.values_mut() {
            let mut changed = false;
            if report.reporter_id == user {
                report.reporter_id = gone.to_owned();
                changed = true;
            }
            if report.subject_user_id == user {
                report.subject_user_id = gone.to_owned();
                report.excerpt = None;
                if report.target_type != ReportTarget::Channel {
                    report.target_id = gone.to_owned();
                }
                changed = true;
            }
            if let Some(r) = report.resolution.as_mut().filter(|r| r.by == user) {
                r.by = gone.to_owned();
                changed = true;
            }
            if changed {
                out.push(put(report_key(&report.id), codec::encode(&*report)));
            }
        }
    }
}

fn report_key(id: &str) -> String {
    format!("{}{id}", key::REPORT)
}

fn appeal_key(id: &str) -> String {
    format!("{}{id}", key::APPEAL)
}

impl CatalogState {
    pub fn report(&self, id: &str) -> Option<&Report> {
        self.reports.reports.get(id)
    }

    /// Every report, oldest first.
    pub fn reports(&self) -> Vec<&Report> {
        let mut all: Vec<&Report> = self.reports.reports.values().collect();
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        all
    }

    pub fn appeal(&self, id: &str) -> Option<&Appeal> {
        self.reports.appeals.get(id)
    }

    /// Every appeal, oldest first.
    pub fn appeals(&self) -> Vec<&Appeal> {
        let mut all: Vec<&Appeal> = self.reports.appeals.values().collect();
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        all
    }

    pub(crate) fn apply_reports(&mut self, index: u64, command: &Command, out: &mut Vec<Mutation>) -> ApplyResult {
        match command {
            Command::FileReport(report) => {
                if self.reports.reports.contains_key(&report.id) {
                    return Err(CatalogError::AlreadyExists { kind: "report".into(), id: report.id.clone() });
                }
                if self.user(&report.reporter_id).is_none() {
                    return Err(CatalogError::not_found("user", &report.reporter_id));
                }
                if report.resolution.is_some() {
                    return Err(CatalogError::invalid("resolution", "a new report is open"));
                }
                out.push(put(report_key(&report.id), codec::encode(report)));
                self.reports.reports.insert(report.id.clone(), (**report).clone());
                Ok(Response::Report((**report).clone()))
            }
            Command::ResolveReport { id, resolution } => {
                let report = self.report(id).cloned().ok_or_else(|| CatalogError::not_found("report", id))?;
                if report.resolution.is_some() {
                    return Err(CatalogError::invalid("report", "this report is already resolved"));
                }
                let effect = match (&resolution.action, report.target_type, report.channel_id.clone()) {
                    (ReportAction::Dismiss, _, _) => None,
                    (ReportAction::Delete, ReportTarget::Message, Some(channel_id)) => {
                        Some(Command::DeleteChat { channel_id, message_id: report.target_id.clone() })
                    }
                    (ReportAction::Delete, _, _) => {
                        return Err(CatalogError::invalid("action", "only a reported message can be deleted"))
                    }
                    (ReportAction::Timeout { .. } | ReportAction::Ban, _, None) => {
                        return Err(CatalogError::invalid(
                            "action",
                            "this report names no channel: ban or time the user out in a channel's chat",
                        ))
                    }
                    (ReportAction::Timeout { duration_seconds }, _, Some(channel_id)) => {
                        Some(Command::BanFromChat(ChatBan {
                            channel_id,
                            user_id: report.subject_user_id.clone(),
                            by: resolution.by.clone(),
                            at: resolution.at,
                            until: Some(resolution.at + (*duration_seconds).max(1) * 1000),
                            reason: Some(format!("report {}: {}", report.id, report.reason)),
                        }))
                    }
                    (ReportAction::Ban, _, Some(channel_id)) => Some(Command::BanFromChat(ChatBan {
                        channel_id,
                        user_id: report.subject_user_id.clone(),
                        by: resolution.by.clone(),
                        at: resolution.at,
                        until: None,
                        reason: Some(format!("report {}: {}", report.id, report.reason)),
                    })),
                };
                if let Some(effect) = effect {
                    match self.apply_inner(index, &effect, out) {
                        Ok(_) => {}
                        // The message is already gone (deleted by a moderator meanwhile): the
                        // decision still stands.
                        Err(CatalogError::NotFound { kind, .. }) if kind == "message" => {}
                        Err(e) => return Err(e),
                    }
                }
                let mut report = report;
                report.resolution = Some(resolution.clone());
                out.push(put(report_key(id), codec::encode(&report)));
                self.reports.reports.insert(id.clone(), report.clone());
                Ok(Response::Report(report))
            }
            Command::FileAppeal(appeal) => {
                if self.reports.appeals.contains_key(&appeal.id) {
                    return Err(CatalogError::AlreadyExists { kind: "appeal".into(), id: appeal.id.clone() });
                }
                let ban = self
                    .chat_ban(&appeal.channel_id, &appeal.user_id, appeal.created_at)
                    .ok_or_else(|| CatalogError::not_found("ban", &appeal.user_id))?;
                if ban.by != appeal.ban_by || ban.at != appeal.ban_at {
                    return Err(CatalogError::invalid("channelId", "the ban changed; appeal the ban in force"));
                }
                let again = self.reports.appeals.values().any(|a| {
                    a.channel_id == appeal.channel_id && a.user_id == appeal.user_id && a.ban_at == appeal.ban_at
                });
                if again {
                    return Err(CatalogError::invalid(
                        "channelId",
                        "this ban was already appealed: one appeal per ban",
                    ));
                }
                out.push(put(appeal_key(&appeal.id), codec::encode(appeal)));
                self.reports.appeals.insert(appeal.id.clone(), (**appeal).clone());
                Ok(Response::Appeal((**appeal).clone()))
            }
            Command::DecideAppeal { id, decision } => {
                let mut appeal = self.appeal(id).cloned().ok_or_else(|| CatalogError::not_found("appeal", id))?;
                if appeal.decision.is_some() {
                    return Err(CatalogError::invalid("appeal", "this appeal is already decided"));
                }
                if decision.by == appeal.ban_by {
                    return Err(CatalogError::invalid("appeal", "the moderator who banned cannot decide the appeal"));
                }
                if decision.by == appeal.user_id {
                    return Err(CatalogError::invalid("appeal", "you cannot decide your own appeal"));
                }
                let ban_in_force = self
                    .chat_ban(&appeal.channel_id, &appeal.user_id, decision.at)
                    .is_some_and(|b| b.at == appeal.ban_at);
                if decision.lift && ban_in_force {
                    let lift = Command::UnbanFromChat {
                        channel_id: appeal.channel_id.clone(),
                        user_id: appeal.user_id.clone(),
                    };
                    self.apply_inner(index, &lift, out)?;
                }
                appeal.decision = Some(decision.clone());
                out.push(put(appeal_key(id), codec::encode(&appeal)));
                self.reports.appeals.insert(id.clone(), appeal.clone());
                Ok(Response::Appeal(appeal))
            }
            _ => Err(CatalogError::invalid("command", "not a report command")),
        }
    }
}
