//! Channel chat: history and posting over REST, moderation (deletes, bans, timeouts, slow mode,
//! word filter), and live delivery over WebSocket.
//!
//! How a message travels: a post (REST or socket) is validated here, passes this node's per-user
//! flood limit ([`limiter`]), and is proposed as [`Command::PostChat`]. The catalog's state machine
//! enforces the replicated rules (bans, timeouts, slow mode, blocked words) while applying it, so
//! every node agrees on what was accepted. Every node then publishes what it applied: one
//! dispatcher per node ([`fanout`]) turns each applied chat command into a frame serialized once
//! ([`event`]) and hands it to the sockets ([`ws`]) of that command's channel only.
//!
//! Routes:
//! - `GET /api/channels/{id}/chat?limit=25&before=SEQ` (public): one page of history. The first
//!   page holds the newest messages; within a page messages are oldest first (ready to append to
//!   a chat pane). `nextCursor` is passed as `before` to get the next older page; `null` when there
//!   is nothing older.
//! - `POST /api/channels/{id}/chat` `{"text"|"message", "userId"?}`: post (201).
//! - `DELETE /api/channels/{id}/chat/{messageId}`: remove a message (moderators).
//! - `GET|POST /api/channels/{id}/chat/bans`, `DELETE .../chat/bans/{userId}`,
//!   `GET|PUT /api/channels/{id}/chat/settings`: see [`moderation`].
//! - `GET /api/channels/{id}/chat/ws`: the live socket, see [`ws`].

pub mod automod;
pub mod event;
mod fanout;
pub mod limiter;
pub mod moderation;
mod out;
mod ws;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use raft::{now_millis, CatalogError, ChatMessage, Command, ProposeError, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::ApiJson;
use crate::read_or_catch_up;
use crate::ApiState;
pub use event::{rfc3339_millis, MessageView};
use limiter::UserRateLimiter;

/// Longest chat message, in characters, after trimming.
pub const MAX_MESSAGE_CHARS: usize = 500;
/// Largest history page.
pub const MAX_PAGE: usize = 100;
/// History page size when `limit` is not given.
pub const DEFAULT_PAGE: usize = 25;

/// Environment variable that sets [`ChatConfig::max_sockets_per_client`].
pub const ENV_SOCKETS_PER_CLIENT: &str = "BITRIVER_LIVE_CHAT_SOCKETS_PER_CLIENT";
/// Default of [`ChatConfig::max_sockets_per_client`].
pub const DEFAULT_SOCKETS_PER_CLIENT: usize = 256;

/// Limits of this node's chat. Every bound in one place; [`Default`] holds the production values.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// Messages one user may post through this node per [`ChatConfig::rate_window`] (0 = off).
    pub messages_per_window: usize,
    pub rate_window: Duration,
    /// Users the flood limiter tracks at once.
    pub max_tracked_users: usize,
    /// Open chat sockets on this node.
    pub max_sockets: usize,
    /// Open chat sockets one client address may hold (IPv6 by /64), so that one client cannot
    /// take the whole node's budget; 0 = no per-address limit. Behind a reverse proxy every
    /// client has the proxy's address: raise it there (`BITRIVER_LIVE_CHAT_SOCKETS_PER_CLIENT`).
    pub max_sockets_per_client: usize,
    /// Messages sent to a socket when it connects (clients may ask for fewer with `?history=N`).
    pub history_on_connect: usize,
    /// Idle ping period; a socket silent for three periods is closed.
    pub ping_interval: Duration,
    /// Largest frame or message a client may send.
    pub max_client_frame_bytes: usize,
    /// Events a socket's queue holds for a client that does not take them as fast as they come
    /// (beyond what the kernel's buffers hold); further events are skipped and the client gets
    /// `lagged` once it catches up.
    pub channel_backlog: usize,
    /// A socket that cannot take one tick's frames within this long is closed.
    pub write_timeout: Duration,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            messages_per_window: 5,
            rate_window: Duration::from_secs(10),
            max_tracked_users: 100_000,
            max_sockets: 10_000,
            max_sockets_per_client: DEFAULT_SOCKETS_PER_CLIENT,
            history_on_connect: 50,
            ping_interval: Duration::from_secs(30),
            max_client_frame_bytes: 4096,
            channel_backlog: 256,
            write_timeout: Duration::from_secs(10),
        }
    }
}

impl ChatConfig {
    /// The defaults, with [`ENV_SOCKETS_PER_CLIENT`] applied when set; a value that is not a
    /// whole number is refused with the variable named.
    pub fn try_from_env() -> Result<Self, String> {
        let mut config = ChatConfig::default();
        if let Some(raw) = std::env::var(ENV_SOCKETS_PER_CLIENT).ok().filter(|v| !v.trim().is_empty()) {
            config.max_sockets_per_client = raw
                .trim()
                .parse()
                .map_err(|_| format!("{ENV_SOCKETS_PER_CLIENT}={raw:?}: expected a whole number (0 = no limit)"))?;
        }
        Ok(config)
    }
}

/// Node-local chat runtime held in [`ApiState`]: the flood limiter, the socket budget (the node's
/// and each client address's share of it), the per-channel fan-out of live events and the
/// shutdown signal of every chat socket.
#[derive(Debug)]
pub struct ChatHub {
    config: ChatConfig,
    limiter: Mutex<UserRateLimiter>,
    sockets: Arc<Semaphore>,
    /// Open sockets per client address (only addresses holding one).
    per_client: Arc<Mutex<HashMap<IpAddr, usize>>>,
    fanout: Arc<fanout::Fanout>,
    /// The node's shutdown signal (or this hub's own, see [`ChatHub::with_shutdown`]).
    shutdown: CancellationToken,
    /// Where sockets run, when not on the runtime that accepted them (see [`ChatHub::with_runtime`]).
    runtime: Option<tokio::runtime::Handle>,
}

impl Default for ChatHub {
    fn default() -> Self {
        Self::new(ChatConfig::default())
    }
}

impl ChatHub {
    pub fn new(config: ChatConfig) -> Self {
        let limiter = UserRateLimiter::new(config.messages_per_window, config.rate_window, config.max_tracked_users);
        let shutdown = CancellationToken::new();
        ChatHub {
            sockets: Arc::new(Semaphore::new(config.max_sockets)),
            per_client: Arc::default(),
            limiter: Mutex::new(limiter),
            fanout: fanout::Fanout::new(shutdown.clone()),
            shutdown,
            runtime: None,
            config,
        }
    }

    pub fn config(&self) -> &ChatConfig {
        &self.config
    }

    /// Close every chat socket (1001 "going away") and refuse new ones once `shutdown` is
    /// cancelled: the node passes its one shutdown signal, so chat sockets do not hold the HTTP
    /// drain.
    pub fn with_shutdown(mut self, shutdown: CancellationToken) -> Self {
        self.fanout = fanout::Fanout::new(shutdown.clone());
        self.shutdown = shutdown;
        self
    }

    /// Run the sockets on `runtime`'s threads: a tick's sweep over thousands of sockets then
    /// shares the cores with the API's requests (a chat post among them) through the kernel's
    /// scheduler, instead of queueing those requests behind every socket on the same workers.
    pub fn with_runtime(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Cancel this hub's shutdown signal now (see [`ChatHub::with_shutdown`]).
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Whether new sockets are refused because the node is stopping.
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Chat sockets open on this node.
    pub fn open_sockets(&self) -> usize {
        self.config.max_sockets.saturating_sub(self.sockets.available_permits())
    }

    /// Channels with at least one chat socket on this node: the only ones whose events this node
    /// serializes for sockets.
    pub fn watched_channels(&self) -> usize {
        self.fanout.watched_channels()
    }

    /// A place in the socket budget for a client at `peer`: 429 when that address already holds
    /// its share, 503 when the node is full or shutting down. Held until the slot is dropped.
    fn open_socket(&self, peer: Option<IpAddr>) -> ApiResult<SocketSlot> {
        let share = self.config.max_sockets_per_client;
        let key = peer.filter(|_| share > 0).map(crate::limits::client_key);
        if let Some(key) = key {
            let mut counts = self.per_client.lock().unwrap_or_else(|p| p.into_inner());
            let held = counts.entry(key).or_default();
            if *held >= share {
                let mut e = ApiError::too_many(
                    format!("too many chat connections from your address (at most {share}); close some first"),
                    10,
                );
                e.code = "too_many_sockets";
                return Err(e);
            }
            *held += 1;
        }
        // From here the slot owns the count: dropping it on a refusal below gives the place back.
        let mut slot = SocketSlot { per_client: self.per_client.clone(), key, _permit: None };
        slot._permit = Some(self.sockets.clone().try_acquire_owned().map_err(|e| match e {
            TryAcquireError::Closed => ApiError::unavailable("this server is shutting down"),
            TryAcquireError::NoPermits => {
                ApiError::unavailable("too many chat connections on this server; retry shortly")
            }
        })?);
        Ok(slot)
    }

    /// Chat sockets the client address `ip` holds on this node.
    pub fn sockets_of(&self, ip: IpAddr) -> usize {
        let counts = self.per_client.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(&crate::limits::client_key(ip)).copied().unwrap_or(0)
    }

    /// Count one message of `user` against the flood limit.
    fn admit(&self, user: &str) -> ApiResult<()> {
        let verdict = self.limiter.lock().unwrap_or_else(|p| p.into_inner()).check(user, Instant::now());
        verdict.map_err(|limited| {
            let secs = limited.retry_after.as_millis().div_ceil(1000) as u64;
            let message = if limited.node_busy {
                "chat is very busy on this server; try again shortly".to_owned()
            } else {
                format!(
                    "you are sending messages too fast (at most {} per {} s); wait {secs} s",
                    self.config.messages_per_window,
                    self.config.rate_window.as_secs()
                )
            };
            let mut e = ApiError::too_many(message, secs);
            e.code = "chat_rate_limited";
            e
        })
    }
}

pub(crate) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::default()
        .routes(routes!(list_messages, post_message))
        .routes(routes!(ws::connect))
        .routes(routes!(moderation::list_bans, moderation::ban))
        .routes(routes!(moderation::unban))
        .routes(routes!(moderation::get_settings, moderation::put_settings))
        .routes(routes!(automod::list_held))
        .routes(routes!(automod::approve_held))
        .routes(routes!(automod::reject_held))
        .routes(routes!(delete_message))
}

/// One socket's place in the node's budget and in its client address's share.
#[derive(Debug)]
struct SocketSlot {
    per_client: Arc<Mutex<HashMap<IpAddr, usize>>>,
    key: Option<IpAddr>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let mut counts = self.per_client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = counts.get_mut(&key) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                counts.remove(&key);
            }
        }
    }
}

// ----- history -----

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct HistoryPage {
    messages: Vec<MessageView>,
    next_cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/channels/{id}/chat",
    tag = "chat",
    security((), ("bearer" = []), ("bitriver_session" = [])),
    params(
        ("id" = String, Path, description = "Channel id"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "Page size (default 25)"),
        ("before" = Option<String>, Query, description = "`nextCursor` of the previous (newer) page"),
    ),
    responses(
        (status = 200, description = "One page of history, oldest first within the page", body = HistoryPage),
        (status = 404, description = "No such channel"),
        (status = 422, description = "A bad `limit` or `before`", body = crate::error::Body),
    )
)]
async fn list_messages(
    State(state): State<ApiState>,
    Path(channel_id): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Json<HistoryPage>> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit =
        match query.get("limit") {
            None => DEFAULT_PAGE,
            Some(raw) => raw.trim().parse::<usize>().ok().filter(|n| (1..=MAX_PAGE).contains(n)).ok_or_else(|| {
                ApiError::invalid("limit", format!("limit must be a whole number from 1 to {MAX_PAGE}"))
            })?,
        };
    let before =
        match query.get("before").map(|s| s.trim()).filter(|s| !s.is_empty()) {
            None => None,
            Some(raw) => Some(raw.parse::<u64>().map_err(|_| {
                ApiError::invalid("before", "before must be a cursor from a previous page's nextCursor")
            })?),
        };
    read_or_catch_up(&state, |s| {
        if s.channel(&channel_id).is_none() {
            return Err(ApiError::not_found("channel", &channel_id));
        }
        let mut newest_first: Vec<ChatMessage> =
            s.chat(&channel_id).rev().filter(|m| before.is_none_or(|b| m.seq < b)).take(limit + 1).cloned().collect();
        let more = newest_first.len() > limit;
        newest_first.truncate(limit);
        let next_cursor = more.then(|| newest_first.last().map(|m| m.seq.to_string())).flatten();
        let messages = newest_first.into_iter().rev().map(|m| MessageView::new(m, s)).collect();
        Ok(Json(HistoryPage { messages, next_cursor }))
    })
    .await
}

// ----- posting -----

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct PostBody {
    /// The message, 1 to 500 characters.
    #[schema(required = false)]
    text: Option<String>,
    /// The original API's name for the text.
    #[schema(required = false)]
    message: Option<String>,
    /// The author: must be the caller; required without a session (development mode).
    #[schema(required = false)]
    user_id: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/channels/{id}/chat",
    tag = "chat",
    params(("id" = String, Path, description = "Channel id")),
    request_body = PostBody,
    responses(
        (status = 201, description = "The posted message (as stored: masked if the word filter masked it)", body = MessageView),
        (status = 202, description = "Held by automod for a moderator's review (a new account)", body = automod::HeldView),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Banned or timed out, or posting as someone else"),
        (status = 404, description = "No such channel"),
        (status = 422, description = "Invalid text, a blocked word, or refused by automod (links, repeats, capitals, emotes)", body = crate::error::Body),
        (status = 429, description = "Too fast, or slow mode", body = crate::error::Body),
    )
)]
async fn post_message(
    State(state): State<ApiState>,
    Path(channel_id): Path<String>,
    caller: Caller,
    ApiJson(body): ApiJson<PostBody>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse as _;
    let text = pick_text(body.text, body.message)?;
    Ok(match post(&state, &channel_id, &caller, text, body.user_id).await? {
        Posted::Message(message) => (StatusCode::CREATED, Json(message)).into_response(),
        Posted::Held(held) => (StatusCode::ACCEPTED, Json(held)).into_response(),
    })
}

/// `text` or its alias `message` (both may be given only if equal).
pub(crate) fn pick_text(text: Option<String>, message: Option<String>) -> ApiResult<String> {
    match (text, message) {
        (Some(a), Some(b)) if a != b => {
            Err(ApiError::invalid("text", "give the message as either `text` or `message`, not two different ones"))
        }
        (Some(t), _) | (None, Some(t)) => Ok(t),
        (None, None) => Err(ApiError::invalid("text", "text is required")),
    }
}

/// Check and trim a message text.
fn validate_text(text: &str) -> ApiResult<String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(ApiError::invalid("text", "text must not be empty"));
    }
    let chars = trimmed.chars().count();
    if chars > MAX_MESSAGE_CHARS {
        return Err(ApiError::invalid(
            "text",
            format!("text is {chars} characters; at most {MAX_MESSAGE_CHARS} are allowed"),
        ));
    }
    if trimmed.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(ApiError::invalid("text", "text must not contain control characters"));
    }
    Ok(trimmed.to_owned())
}

/// What became of a post: posted, or held by automod for a moderator's review.
#[derive(Debug)]
pub(crate) enum Posted {
    Message(MessageView),
    Held(automod::HeldView),
}

/// Post a message as the caller (REST and sockets share this).
pub(crate) async fn post(
    state: &ApiState,
    channel_id: &str,
    caller: &Caller,
    text: String,
    user_id: Option<String>,
) -> ApiResult<Posted> {
    let author = match caller {
        Caller::Anonymous => return Err(ApiError::unauthorized("sign in to chat")),
        Caller::User { user, .. } => {
            if user_id.as_ref().is_some_and(|id| *id != user.id) {
                return Err(ApiError::forbidden("you can only post chat messages as yourself").with_field("userId"));
            }
            user.id.clone()
        }
        Caller::DevAdmin => match user_id.map(|id| id.trim().to_owned()).filter(|id| !id.is_empty()) {
            Some(id) => id,
            None => {
                return Err(ApiError::invalid(
                    "userId",
                    "userId is required: without a session, say which user the message is from",
                ))
            }
        },
    };
    let text = validate_text(&text)?;
    read_or_catch_up(state, |s| match s.channel(channel_id) {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found("channel", channel_id)),
    })
    .await?;
    state.chat.admit(&author)?;
    let message = ChatMessage {
        id: hex::encode(rand::random::<[u8; 12]>()),
        channel_id: channel_id.to_owned(),
        user_id: author,
        text,
        sent_at: now_millis(),
        seq: 0,
    };
    match state.catalog.propose(Command::PostChat(message)).await.map_err(chat_error)? {
        Response::Chat(message) => {
            state.metrics.chat_messages_in.inc();
            Ok(Posted::Message(state.catalog.read(|s| MessageView::new(message, s))))
        }
        Response::ChatHeld(held) => Ok(Posted::Held(state.catalog.read(|s| automod::HeldView::new(held, s)))),
        other => Err(ApiError::internal(format!("unexpected catalog answer to a chat post: {other:?}"))),
    }
}

/// Catalog refusals of chat commands, with messages that say what to do.
pub(crate) fn chat_error(e: ProposeError) -> ApiError {
    match e {
        ProposeError::Rejected(CatalogError::ChatBanned { until }) => {
            let message = match until {
                Some(until) => {
                    format!("you are timed out of this chat until {} (untilMillis={until})", rfc3339_millis(until))
                }
                None => "you are banned from this chat".to_owned(),
            };
            ApiError::new(StatusCode::FORBIDDEN, "chat_banned", message)
        }
        ProposeError::Rejected(CatalogError::SlowMode { retry_after_ms }) => {
            let secs = retry_after_ms.div_ceil(1000).max(1);
            let mut e = ApiError::too_many(
                format!("slow mode is on in this channel: wait {secs} s before your next message"),
                secs,
            );
            e.code = "slow_mode";
            e
        }
        other => other.into(),
    }
}

// ----- deleting -----

/// 401/404/403 unless the caller may moderate the channel; returns who acts (for ban records).
pub(crate) async fn require_moderator(state: &ApiState, channel_id: &str, caller: &Caller) -> ApiResult<String> {
    caller.require_authenticated()?;
    read_or_catch_up(state, |s| {
        if s.channel(channel_id).is_none() {
            return Err(ApiError::not_found("channel", channel_id));
        }
        match caller {
            Caller::User { user, .. } if s.can_moderate(channel_id, &user.id) => Ok(user.id.clone()),
            Caller::DevAdmin => Ok(caller.audit_name()),
            _ => Err(ApiError::forbidden("only the channel owner, its moderators and admins can moderate this chat")),
        }
    })
    .await
}

#[utoipa::path(
    delete,
    path = "/api/channels/{id}/chat/{message_id}",
    tag = "chat",
    params(
        ("id" = String, Path, description = "Channel id"),
        ("message_id" = String, Path, description = "Message id"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not a moderator of this channel"),
        (status = 404, description = "No such channel or message"),
    )
)]
async fn delete_message(
    State(state): State<ApiState>,
    Path((channel_id, message_id)): Path<(String, String)>,
    caller: Caller,
) -> ApiResult<StatusCode> {
    require_moderator(&state, &channel_id, &caller).await?;
    state.catalog.propose(Command::DeleteChat { channel_id, message_id }).await.map_err(chat_error)?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(validate_text("  hi  ").unwrap(), "hi");
        assert_eq!(validate_text("   ").unwrap_err().field.as_deref(), Some("text"));
        assert!(validate_text(&"é".repeat(MAX_MESSAGE_CHARS)).is_ok(), "limit counts characters, not bytes");
        assert!(validate_text(&"a".repeat(MAX_MESSAGE_CHARS + 1)).is_err());
        assert!(validate_text("a\u{7}b").is_err());
        assert!(validate_text("line one\nline two").is_ok());
    }

    #[test]
    fn text_field_aliases() {
        assert_eq!(pick_text(None, Some("a".into())).unwrap(), "a");
        assert_eq!(pick_text(Some("a".into()), Some("a".into())).unwrap(), "a");
        assert!(pick_text(Some("a".into()), Some("b".into())).is_err());
        assert_eq!(pick_text(None, None).unwrap_err().field.as_deref(), Some("text"));
    }

    #[test]
    fn bans_and_slow_mode_say_what_to_do() {
        let e = chat_error(ProposeError::Rejected(CatalogError::ChatBanned { until: Some(1_714_564_800_000) }));
        assert_eq!((e.status, e.code), (StatusCode::FORBIDDEN, "chat_banned"));
        assert!(e.message.contains("2024-05-01T12:00:00.000Z"), "{}", e.message);
        let e = chat_error(ProposeError::Rejected(CatalogError::SlowMode { retry_after_ms: 1500 }));
        assert_eq!((e.status, e.code, e.retry_after), (StatusCode::TOO_MANY_REQUESTS, "slow_mode", Some(2)));
    }
}
