//! Chat moderation of one channel: bans and timeouts, slow mode and the word filter.
//!
//! Moderators only (the channel owner, its listed moderators, admins). The API validates and
//! proposes; the catalog enforces the rules on every later post while applying it.
//!
//! - `POST /api/channels/{id}/chat/bans` `{userId, durationSeconds?, reason?}`: without a duration
//!   a ban, with one a timeout (201, the ban record).
//! - `DELETE /api/channels/{id}/chat/bans/{userId}` (204), `GET /api/channels/{id}/chat/bans`
//!   (bans and timeouts in force).
//! - `GET|PUT /api/channels/{id}/chat/settings` `{slowModeSecs, blockedWords, filterMode}`; a PUT
//!   changes the fields it gives and keeps the others.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
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
        (status = 200, description = "Slow mode and the word filter", body = ChatSettings),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not a moderator of this channel"),
        (status = 404, description = "No such channel"),
    )
)]
pub(super) async fn get_settings(
    State(state): State<ApiState>,
    Path(channel_id): Path<String>,
    caller: Caller,
) -> ApiResult<Json<ChatSettings>> {
    require_moderator(&state, &channel_id, &caller).await?;
    Ok(Json(state.catalog.read(|s| s.chat_settings(&channel_id))))
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
}

#[utoipa::path(
    put,
    path = "/api/channels/{id}/chat/settings",
    tag = "chat",
    params(("id" = String, Path, description = "Channel id")),
    request_body(content = SettingsBody, description = "Fields left out keep their value"),
    responses(
        (status = 200, description = "The settings now in force", body = ChatSettings),
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
) -> ApiResult<Json<ChatSettings>> {
    require_moderator(&state, &channel_id, &caller).await?;
    let mut settings = state.catalog.read(|s| s.chat_settings(&channel_id));
    apply_settings(&mut settings, body)?;
    match state.catalog.propose(Command::SetChatSettings { channel_id, settings }).await.map_err(chat_error)? {
        Response::ChatSettings(settings) => Ok(Json(settings)),
        other => Err(ApiError::internal(format!("unexpected catalog answer to chat settings: {other:?}"))),
    }
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
