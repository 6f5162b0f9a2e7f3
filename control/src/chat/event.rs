//! What a chat socket sends: applied catalog commands turned into chat events of the channel they
//! concern, and the JSON frames they travel in.
//!
//! Pure functions over [`AppliedEvent`]s: every node applies the whole log and pushes what it
//! applied to its own sockets (through [`super::fanout`]), so a message posted on any node reaches
//! sockets on every node.

use raft::state::reports::ReportAction;
use raft::store::AppliedEvent;
use raft::{ChatMessage, ChatSettings, Command, Response, UnixMillis, WordFilterMode};
use serde::Serialize;

/// A change in one channel's chat, as its sockets see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChatEvent {
    /// A message was posted (text as stored: masked if the word filter masked it).
    Message(ChatMessage),
    Deleted {
        message_id: String,
    },
    Ban {
        user_id: String,
        until: Option<UnixMillis>,
    },
    Unban {
        user_id: String,
    },
    Settings(ChatSettings),
    /// The channel itself is gone: sockets close.
    ChannelDeleted,
}

/// The channel `applied` concerns and the chat event it means there, if any. Refused commands
/// mean nothing.
pub(crate) fn chat_event(applied: &AppliedEvent) -> Option<(&str, ChatEvent)> {
    let response = applied.result.as_ref().ok()?;
    match (&applied.command, response) {
        // A post, or a held message a moderator approved.
        (Command::PostChat(_) | Command::ReviewHeldMessage { .. }, Response::Chat(message)) => {
            Some((message.channel_id.as_str(), ChatEvent::Message(message.clone())))
        }
        (Command::DeleteChat { channel_id, message_id }, _) => {
            Some((channel_id, ChatEvent::Deleted { message_id: message_id.clone() }))
        }
        (Command::BanFromChat(ban), _) => {
            Some((&ban.channel_id, ChatEvent::Ban { user_id: ban.user_id.clone(), until: ban.until }))
        }
        (Command::UnbanFromChat { channel_id, user_id }, _) => {
            Some((channel_id, ChatEvent::Unban { user_id: user_id.clone() }))
        }
        (Command::SetChatSettings { channel_id, .. }, Response::ChatSettings(settings)) => {
            Some((channel_id, ChatEvent::Settings(settings.clone())))
        }
        (Command::DeleteChannel { id }, _) => Some((id, ChatEvent::ChannelDeleted)),
        // A report's decision and an appeal's lift act on the chat like the moderation commands.
        (Command::ResolveReport { .. }, Response::Report(report)) => {
            let channel = report.channel_id.as_deref()?;
            match &report.resolution.as_ref()?.action {
                ReportAction::Delete => Some((channel, ChatEvent::Deleted { message_id: report.target_id.clone() })),
                ReportAction::Ban => {
                    Some((channel, ChatEvent::Ban { user_id: report.subject_user_id.clone(), until: None }))
                }
                ReportAction::Timeout { duration_seconds } => {
                    let until = report.resolution.as_ref().map(|r| r.at + duration_seconds * 1000);
                    Some((channel, ChatEvent::Ban { user_id: report.subject_user_id.clone(), until }))
                }
                ReportAction::Dismiss => None,
            }
        }
        (Command::DecideAppeal { .. }, Response::Appeal(appeal))
            if appeal.decision.as_ref().is_some_and(|d| d.lift) =>
        {
            Some((&appeal.channel_id, ChatEvent::Unban { user_id: appeal.user_id.clone() }))
        }
        _ => None,
    }
}

/// A chat line as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    pub id: String,
    pub channel_id: String,
    pub user_id: String,
    /// The author's display name now (their user id if the account is gone).
    pub user_display_name: String,
    pub text: String,
    #[schema(value_type = i64)]
    pub sent_at: UnixMillis,
    /// Position in the channel's history (log index of the entry that applied it × 4096 + position in its batch).
    pub seq: u64,
}

impl MessageView {
    pub(crate) fn new(message: ChatMessage, state: &raft::state::CatalogState) -> Self {
        let user_display_name = match state.user(&message.user_id) {
            Some(u) => u.display_name.clone(),
            None if message.user_id == raft::state::DELETED_USER => "Deleted user".to_owned(),
            None => message.user_id.clone(),
        };
        MessageView {
            id: message.id,
            channel_id: message.channel_id,
            user_id: message.user_id,
            user_display_name,
            text: message.text,
            sent_at: message.sent_at,
            seq: message.seq,
        }
    }
}

/// Chat settings as a socket shows them: the blocked words only to moderators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SettingsView {
    pub(crate) slow_mode_secs: u32,
    pub(crate) filter_mode: WordFilterMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) blocked_words: Option<Vec<String>>,
}

impl SettingsView {
    pub(crate) fn new(settings: ChatSettings, moderator: bool) -> Self {
        SettingsView {
            slow_mode_secs: settings.slow_mode_secs,
            filter_mode: settings.filter_mode,
            blocked_words: moderator.then_some(settings.blocked_words),
        }
    }
}

/// An error as a socket reports it (same fields as the REST error body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ErrorView {
    pub(crate) code: String,
    pub(crate) message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) field: Option<String>,
    /// Seconds to wait, for rate limits and slow mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) retry_after: Option<u64>,
}

impl From<crate::ApiError> for ErrorView {
    fn from(e: crate::ApiError) -> Self {
        ErrorView { code: e.code.to_owned(), message: e.message, field: e.field, retry_after: e.retry_after }
    }
}

/// Server-to-client frames: `{"type": ..., ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub(crate) enum ServerFrame {
    /// The latest messages at connect time, oldest first.
    History {
        messages: Vec<MessageView>,
    },
    Message {
        message: MessageView,
    },
    Deleted {
        message_id: String,
    },
    Ban {
        user_id: String,
        until: Option<UnixMillis>,
    },
    Unban {
        user_id: String,
    },
    Settings {
        settings: SettingsView,
    },
    /// To its author only: automod held this message for a moderator's review.
    Held {
        reason: String,
        message: MessageView,
    },
    /// This socket fell behind and `missed` events were skipped; refetch history to resync.
    Lagged {
        missed: u64,
    },
    Error {
        error: ErrorView,
    },
}

impl ServerFrame {
    pub(crate) fn to_json(&self) -> String {
        // Serializing these plain structs cannot fail (string keys, no non-finite floats).
        serde_json::to_string(self).unwrap_or_else(|_| r#"{"type":"error"}"#.to_owned())
    }

    /// The frame as it goes on the wire: one whole WebSocket text frame, framed once for every
    /// socket that gets it.
    pub(crate) fn to_wire(&self) -> bytes::Bytes {
        super::out::text_frame(self.to_json().as_bytes())
    }

    /// The frame as a WebSocket text message (cheap to clone: the bytes are shared).
    pub(crate) fn to_message(&self) -> tungstenite::Message {
        tungstenite::Message::text(self.to_json())
    }
}

/// `ms` since the Unix epoch as RFC 3339 UTC with milliseconds, e.g. `2024-05-01T12:00:00.250Z`.
pub fn rfc3339_millis(ms: UnixMillis) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Proleptic Gregorian date of a day number since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::{CatalogError, ChatBan};

    fn applied(command: Command, result: raft::ApplyResult) -> AppliedEvent {
        AppliedEvent { index: 7, command, result }
    }

    fn message(channel: &str) -> ChatMessage {
        ChatMessage {
            id: "m1".into(),
            channel_id: channel.into(),
            user_id: "u1".into(),
            text: "hi".into(),
            sent_at: 1,
            seq: 7,
        }
    }

    #[test]
    fn events_name_their_channel_and_only_successes_count() {
        let posted = applied(Command::PostChat(message("c1")), Ok(Response::Chat(message("c1"))));
        assert_eq!(chat_event(&posted), Some(("c1", ChatEvent::Message(message("c1")))));
        let elsewhere = applied(Command::PostChat(message("c1")), Ok(Response::Chat(message("c2"))));
        assert_eq!(chat_event(&elsewhere).map(|(c, _)| c), Some("c2"), "the applied message names the channel");
        let refused = applied(Command::PostChat(message("c1")), Err(CatalogError::SlowMode { retry_after_ms: 5 }));
        assert_eq!(chat_event(&refused), None);
        let deleted =
            applied(Command::DeleteChat { channel_id: "c1".into(), message_id: "m1".into() }, Ok(Response::Done));
        assert_eq!(chat_event(&deleted), Some(("c1", ChatEvent::Deleted { message_id: "m1".into() })));
        let gone = applied(Command::DeleteChannel { id: "c3".into() }, Ok(Response::Done));
        assert_eq!(chat_event(&gone), Some(("c3", ChatEvent::ChannelDeleted)));
        let ban = ChatBan {
            channel_id: "c1".into(),
            user_id: "u2".into(),
            by: "u1".into(),
            at: 1,
            until: Some(5),
            reason: None,
        };
        let banned = applied(Command::BanFromChat(ban), Ok(Response::Done));
        assert_eq!(chat_event(&banned), Some(("c1", ChatEvent::Ban { user_id: "u2".into(), until: Some(5) })));
        let noop = applied(Command::Noop { payload: vec![] }, Ok(Response::Done));
        assert_eq!(chat_event(&noop), None);
    }

    #[test]
    fn frames_serialize_with_type_tags_in_camel_case() {
        let frame = ServerFrame::Deleted { message_id: "m1".into() };
        assert_eq!(frame.to_json(), r#"{"type":"deleted","messageId":"m1"}"#);
        let frame = ServerFrame::Settings {
            settings: SettingsView::new(
                ChatSettings { slow_mode_secs: 3, blocked_words: vec!["x".into()], filter_mode: WordFilterMode::Mask },
                false,
            ),
        };
        assert_eq!(frame.to_json(), r#"{"type":"settings","settings":{"slowModeSecs":3,"filterMode":"mask"}}"#);
        let frame = ServerFrame::Lagged { missed: 4 };
        assert_eq!(frame.to_json(), r#"{"type":"lagged","missed":4}"#);
    }

    #[test]
    fn rfc3339_formatting() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_250), "2000-02-29T00:00:00.250Z");
        assert_eq!(rfc3339_millis(1_714_564_800_000), "2024-05-01T12:00:00.000Z");
        assert_eq!(rfc3339_millis(-1), "1969-12-31T23:59:59.999Z");
    }
}
