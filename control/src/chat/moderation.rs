//! Chat moderation of one channel: bans and timeouts, slow mode and the word filter.
//!
//! Moderators only (the channel owner, its listed moderators, admins). The API validates and
//! proposes; the catalog enforces the rules on every later post while applying it.
//!
//! - `POST /api/channels/{id}/chat/bans` `{userId, durationSeconds?, reason?}`: without a duration
//!   a ban, with one a timeout (201, the ban record).
//! - `DELETE /api/channels/{id}/chat/bans/{userId}` (204), `GET /api/channels/{id}/chat/bans`
//!   (bans and timeouts in force).
//! - `GET|PUT /api/channels/{id}/chat/settings` `{slowModeSecs, blockedWords, filterMode}` and
//!   automod's rules `{blockLinks, allowedLinkDomains, repeatWindowSecs, capsMaxPercent,
//!   maxEmotes, newAccountHoldMinutes}` (see `raft::state::automod`; held messages: [`super::automod`]);
//!   a PUT changes the fields it gives and keeps the others.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use raft::state::automod::Automod;
use raft::{now_millis, ChatBan, ChatSettings, Command, Response, WordFilterMode};
use serde::{Deserialize, Serialize};

use super::{chat_error, require_moderator};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::ApiJson;
use crate::ApiState;

/// Longest timeout: two weeks (longer means a ban).
pub const MAX_TIMEOUT_SECS: i64 = 14 * 24 * 3600;
pub const MAX_REASON_CHARS: usize = 500;
pub const MAX_SLOW_MODE_SECS: i64 = 3600;
pub const MAX_BLOCKED_WORDS: usize = 200;
pub const MAX_BLOCKED_WORD_CHARS: usize = 64;
pub const MAX_ALLOWED_LINK_DOMAINS: usize = 100;
pub const MAX_DOMAIN_CHARS: usize = 253;
pub const MAX_REPEAT_WINDOW_SECS: i64 = 3600;
pub const MAX_EMOTES_LIMIT: i64 = 100;
/// A week.
pub const MAX_NEW_ACCOUNT_HOLD_MINUTES: i64 = 7 * 24 * 60;

/// A channel's chat settings: slow mode, the word filter and automod's rules (see
/// [`SettingsBody`] for what each means).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct SettingsView {
    slow_mode_secs: u32,
    blocked_words: Vec<String>,
    filter_mode: WordFilterMode,
    block_links: bool,
    allowed_link_domains: Vec<String>,
    repeat_window_secs: u32,
    caps_max_percent: u8,
    max_emotes: u32,
    new_account_hold_minutes: u32,
}

impl SettingsView {
    fn new(chat: ChatSettings, automod: Automod) -> Self {
        SettingsView {
            slow_mode_secs: chat.slow_mode_secs,
            blocked_words: chat.blocked_words,
            filter_mode: chat.filter_mode,
            block_links: automod.block_links,
            allowed_link_domains: automod.allowed_link_domains,
            repeat_window_secs: automod.repeat_window_secs,
            caps_max_percent: automod.caps_max_percent,
            max_emotes: automod.max_emotes,
            new_account_hold_minutes: automod.new_account_hold_minutes,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct BanBody {
    user_id: String,
    /// A timeout of 1 s to 14 days; leave it out for a permanent ban.
    #[schema(required = false)]
    duration_seconds: Option<i64>,
    #[schema(required = false)]
    reason: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/channels/{id}/chat/bans",
    tag = "chat",
    params(("id" = String, Path, description = "Channel id")),
    request_body = BanBody,
    responses(
        (status = 201, description = "The ban (or timeout) record", body = ChatBan),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not a moderator of this channel"),
        (status = 404, description = "No such channel"),
    )
)]
pub(super) async fn ban(
    State(state): State<ApiState>,
    Path(channel_id): Path<String>,
    caller: Caller,
    ApiJson(body): ApiJson<BanBody>,
) -> ApiResult<(StatusCode, Json<ChatBan>)> {
    let by = require_moderator(&state, &channel_id, &caller).await?;
    let user_id = body.user_id.trim().to_owned();
    if user_id.is_empty() {
        return Err(ApiError::invalid("userId", "userId is required"));
    }
    if caller.user_id() == Some(user_id.as_str()) {
        return Err(ApiError::invalid("userId", "you cannot ban yourself"));
    }
    if let Some(secs) = body.duration_seconds {
        if !(1..=MAX_TIMEOUT_SECS).contains(&secs) {
            return Err(ApiError::invalid(
                "durationSeconds",
                format!("durationSeconds must be from 1 to {MAX_TIMEOUT_SECS} (leave it out for a permanent ban)"),
            ));
        }
    }
    let reason = body.reason.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
    if reason.as_ref().is_some_and(|r| r.chars().count() > MAX_REASON_CHARS) {
        return Err(ApiError::invalid("reason", format!("reason must be at most {MAX_REASON_CHARS} characters")));
    }
    let target_moderates = state.catalog.read(|s| s.can_moderate(&channel_id, &user_id));
    if target_moderates {
        return Err(ApiError::invalid(
            "userId",
            "this user moderates the channel and cannot be banned (remove them as a moderator first)",
        ));
    }
    let at = now_millis();
    let ban =
        ChatBan { channel_id, user_id, by, at, until: body.duration_seconds.map(|secs| at + secs * 1000), reason };
    state.catalog.propose(Command::BanFromChat(ban.clone())).await.map_err(chat_error)?;
    Ok((StatusCode::CREATED, Json(ban)))
}

#[utoipa::path(
    delete,
    path = "/api/channels/{id}/chat/bans/{user_id}",
    tag = "chat",
    params(
        ("id" = String, Path, description = "Channel id"),
        ("user_id" = String, Path, description = "The banned user"),
    ),
    responses(
        (status = 204, description = "Lifted"),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not a moderator of this channel"),
        (status = 404, description = "No such channel or ban"),
    )
)]
pub(super) async fn unban(
    State(state): State<ApiState>,
    Path((channel_id, user_id)): Path<(String, String)>,
    caller: Caller,
) -> ApiResult<StatusCode> {
    require_moderator(&state, &channel_id, &caller).await?;
    state.catalog.propose(Command::UnbanFromChat { channel_id, user_id }).await.map_err(chat_error)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct BanList {
    bans: Vec<ChatBan>,
}

#[utoipa::path(
    get,
    path = "/api/channels/{id}/chat/bans",
    tag = "chat",
    params(("id" = String, Path, description = "Channel id")),
    responses(
        (status = 200, description = "Bans and timeouts in force", body = BanList),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not a moderator of this channel"),
        (status = 404, description = "No such channel"),
    )
)]
pub(super) async fn list_bans(
    State(state): State<ApiState>,
    Path(channel_id): Path<String>,
    caller: Caller,
) -> ApiResult<Json<BanList>> {
    require_moderator(&state, &channel_id, &caller).await?;
    let now = now_millis();
    let bans = state
        .catalog
        .read(|s| s.chat_bans(&channel_id).filter(|b| b.until.is_none_or(|until| until > now)).cloned().collect());
    Ok(Json(BanList { bans }))
}

#[utoipa::path(
    get,
    path = "/api/channels/{id}/chat/settings",
    tag = "chat",
    params(("id" = String, Path, description = "Channel id")),
    responses(
        (status = 200, description = "Slow mode, the word filter and automod", body = SettingsView),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not a moderator of this channel"),
        (status = 404, description = "No such channel"),
    )
)]
pub(super) async fn get_settings(
    State(state): State<ApiState>,
    Path(channel_id): Path<String>,
    caller: Caller,
) -> ApiResult<Json<SettingsView>> {
    require_moderator(&state, &channel_id, &caller).await?;
    Ok(Json(state.catalog.read(|s| SettingsView::new(s.chat_settings(&channel_id), s.automod(&channel_id)))))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct SettingsBody {
    /// 0 (off) to 3600.
    #[schema(required = false)]
    slow_mode_secs: Option<i64>,
    #[schema(required = false)]
    blocked_words: Option<Vec<String>>,
    /// `block` or `mask`.
    #[schema(required = false)]
    filter_mode: Option<String>,
    /// Refuse messages with links, except to `allowedLinkDomains`.
    #[schema(required = false)]
    block_links: Option<bool>,
    /// Domains whose links pass (subdomains too), at most 100.
    #[schema(required = false)]
    allowed_link_domains: Option<Vec<String>>,
    /// Refuse the same message again from one user within this many seconds: 0 (off) to 3600.
    #[schema(required = false)]
    repeat_window_secs: Option<i64>,
    /// Refuse messages of 10+ letters with more than this percent of capitals: 0 (off) to 100.
    #[schema(required = false)]
    caps_max_percent: Option<i64>,
    /// Most emotes (emoji, `:name:`) per message: 0 (no limit) to 100.
    #[schema(required = false)]
    max_emotes: Option<i64>,
    /// Hold messages from accounts younger than this many minutes for review: 0 (off) to 10080.
    #[schema(required = false)]
    new_account_hold_minutes: Option<i64>,
}

#[utoipa::path(
    put,
    path = "/api/channels/{id}/chat/settings",
    tag = "chat",
    params(("id" = String, Path, description = "Channel id")),
    request_body(content = SettingsBody, description = "Fields left out keep their value"),
    responses(
        (status = 200, description = "The settings now in force", body = SettingsView),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not a moderator of this channel"),
        (status = 404, description = "No such channel"),
    )
)]
pub(super) async fn put_settings(
    State(state): State<ApiState>,
    Path(channel_id): Path<String>,
    caller: Caller,
    ApiJson(body): ApiJson<SettingsBody>,
) -> ApiResult<Json<SettingsView>> {
    require_moderator(&state, &channel_id, &caller).await?;
    let (mut settings, mut rules) = state.catalog.read(|s| (s.chat_settings(&channel_id), s.automod(&channel_id)));
    let rules_given = apply_automod(&mut rules, &body)?;
    apply_settings(&mut settings, body)?;
    let command = Command::SetChatSettings { channel_id: channel_id.clone(), settings };
    let chat = match state.catalog.propose(command).await.map_err(chat_error)? {
        Response::ChatSettings(settings) => settings,
        other => return Err(ApiError::internal(format!("unexpected catalog answer to chat settings: {other:?}"))),
    };
    let automod = if rules_given {
        match state.catalog.propose(Command::SetAutomod { channel_id, rules }).await.map_err(chat_error)? {
            Response::Automod(rules) => rules,
            other => return Err(ApiError::internal(format!("unexpected catalog answer to automod rules: {other:?}"))),
        }
    } else {
        rules
    };
    Ok(Json(SettingsView::new(chat, automod)))
}

/// Validate the automod fields of a settings change and merge them into `rules`; whether any
/// was given. Nothing is merged unless all are valid.
fn apply_automod(rules: &mut Automod, body: &SettingsBody) -> ApiResult<bool> {
    let ranged = |field: &str, value: Option<i64>, max: i64, what: &str| -> ApiResult<Option<i64>> {
        match value {
            Some(v) if !(0..=max).contains(&v) => {
                Err(ApiError::invalid(field, format!("{field} must be from 0 ({what}) to {max}")))
            }
            other => Ok(other),
        }
    };
    let repeat = ranged("repeatWindowSecs", body.repeat_window_secs, MAX_REPEAT_WINDOW_SECS, "off")?;
    let caps = ranged("capsMaxPercent", body.caps_max_percent, 100, "off")?;
    let emotes = ranged("maxEmotes", body.max_emotes, MAX_EMOTES_LIMIT, "no limit")?;
    let hold = ranged("newAccountHoldMinutes", body.new_account_hold_minutes, MAX_NEW_ACCOUNT_HOLD_MINUTES, "off")?;
    let domains = match &body.allowed_link_domains {
        None => None,
        Some(list) if list.len() > MAX_ALLOWED_LINK_DOMAINS => {
            return Err(ApiError::invalid(
                "allowedLinkDomains",
                format!("at most {MAX_ALLOWED_LINK_DOMAINS} domains (got {})", list.len()),
            ))
        }
        Some(list) => {
            let mut cleaned = Vec::with_capacity(list.len());
            for (i, domain) in list.iter().enumerate() {
                let d = domain.trim().trim_start_matches("*.").trim_matches('.').to_lowercase();
                let valid = !d.is_empty()
                    && d.len() <= MAX_DOMAIN_CHARS
                    && d.contains('.')
                    && d.split('.').all(|l| !l.is_empty() && l.chars().all(|c| c.is_alphanumeric() || c == '-'));
                if !valid {
                    return Err(ApiError::invalid(
                        &format!("allowedLinkDomains[{i}]"),
                        format!("{domain:?} is not a domain name like example.com"),
                    ));
                }
                cleaned.push(d);
            }
            Some(cleaned)
        }
    };
    let given = body.block_links.is_some()
        || domains.is_some()
        || repeat.is_some()
        || caps.is_some()
        || emotes.is_some()
        || hold.is_some();
    if let Some(v) = body.block_links {
        rules.block_links = v;
    }
    if let Some(v) = domains {
        rules.allowed_link_domains = v;
    }
    // The ranges were checked above, so the narrowing casts hold.
    if let Some(v) = repeat {
        rules.repeat_window_secs = v as u32;
    }
    if let Some(v) = caps {
        rules.caps_max_percent = v as u8;
    }
    if let Some(v) = emotes {
        rules.max_emotes = v as u32;
    }
    if let Some(v) = hold {
        rules.new_account_hold_minutes = v as u32;
    }
    Ok(given)
}

/// Validate a settings change and merge it into `settings`.
fn apply_settings(settings: &mut ChatSettings, body: SettingsBody) -> ApiResult<()> {
    if let Some(secs) = body.slow_mode_secs {
        if !(0..=MAX_SLOW_MODE_SECS).contains(&secs) {
            return Err(ApiError::invalid(
                "slowModeSecs",
                format!("slowModeSecs must be from 0 (off) to {MAX_SLOW_MODE_SECS}"),
            ));
        }
        settings.slow_mode_secs = secs as u32;
    }
    if let Some(words) = body.blocked_words {
        if words.len() > MAX_BLOCKED_WORDS {
            return Err(ApiError::invalid(
                "blockedWords",
                format!("at most {MAX_BLOCKED_WORDS} blocked words (got {})", words.len()),
            ));
        }
        let mut cleaned = Vec::with_capacity(words.len());
        for (i, word) in words.iter().enumerate() {
            let word = word.trim();
            let chars = word.chars().count();
            if chars == 0 || chars > MAX_BLOCKED_WORD_CHARS {
                return Err(ApiError::invalid(
                    &format!("blockedWords[{i}]"),
                    format!("each blocked word must be 1 to {MAX_BLOCKED_WORD_CHARS} characters"),
                ));
            }
            cleaned.push(word.to_owned());
        }
        settings.blocked_words = cleaned;
    }
    if let Some(mode) = body.filter_mode {
        settings.filter_mode = match mode.as_str() {
            "block" => WordFilterMode::Block,
            "mask" => WordFilterMode::Mask,
            _ => return Err(ApiError::invalid("filterMode", "filterMode must be \"block\" or \"mask\"")),
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> SettingsBody {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn settings_merge_and_validate() {
        let mut s = ChatSettings::default();
        apply_settings(&mut s, body(r#"{"slowModeSecs":30}"#)).unwrap();
        apply_settings(&mut s, body(r#"{"blockedWords":[" Darn "],"filterMode":"mask"}"#)).unwrap();
        assert_eq!(s.slow_mode_secs, 30, "fields not given are kept");
        assert_eq!(s.blocked_words, vec!["Darn".to_owned()]);
        assert_eq!(s.filter_mode, WordFilterMode::Mask);

        let field = |json: &str| apply_settings(&mut ChatSettings::default(), body(json)).unwrap_err().field;
        assert_eq!(field(r#"{"slowModeSecs":3601}"#).as_deref(), Some("slowModeSecs"));
        assert_eq!(field(r#"{"slowModeSecs":-1}"#).as_deref(), Some("slowModeSecs"));
        assert_eq!(field(r#"{"filterMode":"shout"}"#).as_deref(), Some("filterMode"));
        assert_eq!(field(r#"{"blockedWords":["ok","  "]}"#).as_deref(), Some("blockedWords[1]"));
        let long = format!(r#"{{"blockedWords":["{}"]}}"#, "x".repeat(65));
        assert_eq!(field(&long).as_deref(), Some("blockedWords[0]"));
        let many = serde_json::json!({ "blockedWords": vec!["w"; 201] }).to_string();
        assert_eq!(field(&many).as_deref(), Some("blockedWords"));
    }
}
