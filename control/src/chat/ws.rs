//! The live chat socket: `GET /api/channels/{id}/chat/ws`.
//!
//! On connect the socket gets `{"type":"history","messages":[...]}` (the latest messages, oldest
//! first; `?history=N` asks for fewer, `?history=0` for none), then one JSON frame per event of
//! its channel as this node applies them: `message`, `deleted`, `ban`, `unban`, `settings`.
//! Authenticated clients (Authorization header or session cookie on the upgrade request) may send
//! `{"type":"message","text":"..."}`; it is posted exactly like a REST post, and refusals come
//! back as `{"type":"error","error":{code,message,...}}` without closing the socket.
//!
//! Events come from the node's fan-out ([`super::fanout`]), which writes them, framed once per
//! channel, into the sockets of that channel only.
//!
//! Bounds: client frames are at most [`ChatConfig::max_client_frame_bytes`] (larger closes with
//! 1009), and the read buffer is sized for them, not tungstenite's 128 KiB default.
//!
//! The socket is the upgraded connection itself, not axum's wrapper, so that the fan-out can
//! write a tick's frames into it without waking this socket's task ([`super::out`]); the task
//! reads the client, writes its own frames (history, errors, pings) through the same queue, and
//! writes what the kernel did not take at once. A client that cannot take queued frames within
//! [`ChatConfig::write_timeout`] or stays silent for three ping periods is closed; one that falls
//! [`ChatConfig::channel_backlog`] events behind skips further events and is told
//! `{"type":"lagged","missed":n}`. The node's shutdown signal ([`super::ChatHub::with_shutdown`])
//! closes every socket with 1001.
//!
//! [`ChatConfig::max_client_frame_bytes`]: super::ChatConfig::max_client_frame_bytes
//! [`ChatConfig::channel_backlog`]: super::ChatConfig::channel_backlog
//! [`ChatConfig::write_timeout`]: super::ChatConfig::write_timeout

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use raft::now_millis;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf};
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tokio_tungstenite::WebSocketStream;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::Message;

use super::event::{ErrorView, MessageView, ServerFrame};
use super::out::{End, SocketOut, SocketWriter};
use super::{pick_text, post, read_or_catch_up, Posted, SocketSlot};
use crate::audit::{self, Peer};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::ApiState;

/// Bytes tungstenite reads from a chat socket at once. Client frames are small (at most
/// `max_client_frame_bytes`, 4 KiB by default; a larger frame grows the buffer until it is refused),
/// and tungstenite zero-fills this much before every read attempt.
const READ_BUFFER_BYTES: usize = 1024;
/// Bytes tungstenite gathers before writing to the connection; every frame is flushed right after
/// it is queued anyway, so a large target only costs memory.
const WRITE_BUFFER_BYTES: usize = 4 * 1024;

/// The socket's operation in the OpenAPI document: its traffic is WebSocket frames (see the
/// module docs), so only the upgrade and its refusals are described.
#[utoipa::path(
    get,
    path = "/api/channels/{id}/chat/ws",
    tag = "chat",
    operation_id = "chat_socket",
    summary = "The live chat socket of a channel",
    description = "A WebSocket. On connect it sends `{\"type\":\"history\",\"messages\":[...]}`, then one JSON frame \
        per chat event (`message`, `deleted`, `ban`, `unban`, `settings`). Signed-in clients may send \
        `{\"type\":\"message\",\"text\":\"...\"}`.",
    security((), ("bearer" = []), ("bitriver_session" = [])),
    params(
        ("id" = String, Path, description = "Channel id"),
        ("history" = Option<u32>, Query, minimum = 0, maximum = 50,
            description = "Messages of history sent on connect (default 50, at most 50)"),
    ),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 404, description = "No such channel"),
        (status = 426, description = "Not a WebSocket upgrade request", body = crate::error::Body),
        (status = 429, description = "This client address holds its share of the node's chat sockets", body = crate::error::Body),
        (status = 503, description = "Too many chat sockets on this node, or shutting down", body = crate::error::Body),
    )
)]
pub(super) async fn connect(
    State(state): State<ApiState>,
    Path(channel_id): Path<String>,
    caller: Caller,
    Peer(peer): Peer,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    Upgrade(upgrade): Upgrade,
) -> ApiResult<Response> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let config = state.chat.config().clone();
    let history = match query.get("history") {
        None => config.history_on_connect,
        Some(raw) => raw.trim().parse::<usize>().ok().filter(|n| *n <= config.history_on_connect).ok_or_else(|| {
            ApiError::invalid(
                "history",
                format!("history must be a whole number from 0 to {}", config.history_on_connect),
            )
        })?,
    };
    let moderator = read_or_catch_up(&state, |s| {
        if s.channel(&channel_id).is_none() {
            return Err(ApiError::not_found("channel", &channel_id));
        }
        Ok(match &caller {
            Caller::DevAdmin => true,
            Caller::User { user, .. } => s.can_moderate(&channel_id, &user.id),
            Caller::Anonymous => false,
        })
    })
    .await?;
    let (on_upgrade, accept) = upgrade.map_err(|why| {
        ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "websocket_required",
            format!("this endpoint is a WebSocket; connect with a WebSocket client ({why})"),
        )
    })?;
    if state.chat.is_shutting_down() {
        return Err(ApiError::unavailable("this server is shutting down"));
    }
    let slot = state.chat.open_socket(peer.map(|p| p.ip()))?;
    let runtime = state.chat.runtime.clone();
    let socket = ChatSocket { state, channel_id, caller, peer, moderator, history, _slot: slot };
    let task = async move {
        match on_upgrade.await {
            Ok(upgraded) => socket.run(upgraded).await,
            Err(e) => tracing::debug!(error = %e, "chat socket upgrade failed"),
        }
    };
    drop(match runtime {
        Some(runtime) => runtime.spawn(task),
        None => tokio::spawn(task),
    });
    let headers = [
        (header::CONNECTION, HeaderValue::from_static("upgrade")),
        (header::UPGRADE, HeaderValue::from_static("websocket")),
        (header::SEC_WEBSOCKET_ACCEPT, accept),
    ];
    Ok((StatusCode::SWITCHING_PROTOCOLS, headers).into_response())
}

/// A WebSocket upgrade request (RFC 6455 §4.2.1): the connection to take over and the
/// `Sec-WebSocket-Accept` to answer with, or why the request is not one.
pub(super) struct Upgrade(Result<(OnUpgrade, HeaderValue), &'static str>);

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Upgrade(upgrade_request(parts)))
    }
}

fn upgrade_request(parts: &mut Parts) -> Result<(OnUpgrade, HeaderValue), &'static str> {
    if parts.method != Method::GET {
        return Err("the upgrade request must be a GET");
    }
    if !has_token(&parts.headers, header::CONNECTION, "upgrade") {
        return Err("no `Connection: upgrade` header");
    }
    if !has_token(&parts.headers, header::UPGRADE, "websocket") {
        return Err("no `Upgrade: websocket` header");
    }
    if parts.headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v != "13") {
        return Err("`Sec-WebSocket-Version` must be 13");
    }
    let key = parts.headers.get(header::SEC_WEBSOCKET_KEY).ok_or("no `Sec-WebSocket-Key` header")?;
    let accept = accept_key(key.as_bytes());
    let on_upgrade = parts.extensions.remove::<OnUpgrade>().ok_or("this connection cannot be upgraded")?;
    Ok((on_upgrade, accept))
}

/// Whether a comma-separated header lists `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// `Sec-WebSocket-Accept` for a client's key: base64 of the SHA-1 of the key and the protocol's GUID.
fn accept_key(key: &[u8]) -> HeaderValue {
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(GUID);
    let encoded = base64::engine::general_purpose::STANDARD.encode(ctx.finish());
    HeaderValue::from_str(&encoded).expect("base64 is a valid header value")
}

/// One connected client of one channel's chat.
struct ChatSocket {
    state: ApiState,
    channel_id: String,
    caller: Caller,
    /// The client's address, for the audit log.
    peer: Option<SocketAddr>,
    /// Moderators also see the blocked words in `settings` events.
    moderator: bool,
    history: usize,
    /// Holds this socket's place in the node's socket budget and its address's share.
    _slot: SocketSlot,
}

/// What a client may send.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", rename_all_fields = "camelCase")]
enum ClientFrame {
    Message { text: Option<String>, message: Option<String>, user_id: Option<String> },
}

fn error_frame(e: impl Into<ErrorView>) -> Message {
    ServerFrame::Error { error: e.into() }.to_message()
}

fn close_frame(code: CloseCode, reason: &'static str) -> CloseFrame {
    CloseFrame { code, reason: reason.into() }
}

impl ChatSocket {
    async fn run(self, upgraded: Upgraded) {
        let config = self.state.chat.config().clone();
        let (read, write) = tokio::io::split(TokioIo::new(upgraded));
        let out = SocketOut::new(Box::new(write), self.moderator, config.channel_backlog);
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(config.max_client_frame_bytes))
            .max_frame_size(Some(config.max_client_frame_bytes))
            .read_buffer_size(READ_BUFFER_BYTES)
            .write_buffer_size(WRITE_BUFFER_BYTES);
        let connection = Connection { read, write: SocketWriter(out.clone()) };
        let mut ws = WebSocketStream::from_raw_socket(connection, Role::Server, Some(ws_config)).await;
        // Subscribe before reading history so that nothing falls between the two: the fan-out
        // holds this socket's ticks until the history is written, and messages in both are
        // left out of the ticks by their `seq`.
        let subscription =
            self.state.chat.fanout.subscribe(&self.state.catalog, &self.state.metrics, &self.channel_id, out.clone());
        let mut last_history_seq = 0;
        if self.history > 0 {
            let messages: Vec<MessageView> = self.state.catalog.read(|s| {
                let mut latest: Vec<_> = s.chat(&self.channel_id).rev().take(self.history).cloned().collect();
                latest.reverse();
                latest.into_iter().map(|m| MessageView::new(m, s)).collect()
            });
            last_history_seq = messages.last().map_or(0, |m| m.seq);
            if !send(&mut ws, ServerFrame::History { messages }.to_message(), config.write_timeout).await {
                return;
            }
        }
        out.release(last_history_seq);
        // Counted once it takes events: a socket in the gauge misses none from then on.
        let _connected = ConnectionGauge::open(&self.state.metrics.ws_connections);

        let mut ping = interval_at(Instant::now() + config.ping_interval, config.ping_interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();

        let close = loop {
            // Queued frames first: the fan-out wakes this task only when the kernel did not take a
            // tick at once, or when the socket must close.
            tokio::select! {
                biased;
                () = out.woken() => {
                    let drained = tokio::time::timeout(config.write_timeout, poll_fn(|cx| out.poll_drain(cx))).await;
                    if !matches!(drained, Ok(Ok(()))) {
                        break None; // too slow to take its frames, or gone
                    }
                    match out.ended() {
                        None => {}
                        Some(End::ChannelDeleted) => break Some(close_frame(CloseCode::Normal, "channel deleted")),
                        Some(End::ShuttingDown) => break Some(close_frame(CloseCode::Away, "server shutting down")),
                        Some(End::Broken) => break None,
                    }
                }
                frame = ws.next() => {
                    let reply = match frame {
                        None | Some(Ok(Message::Close(_))) => break None,
                        Some(Err(e)) => break Some(read_failed(&e)),
                        Some(Ok(Message::Text(text))) => {
                            last_heard = Instant::now();
                            self.handle_client_text(text.as_str()).await
                        }
                        Some(Ok(Message::Binary(_))) => Some(error_frame(ApiError::bad_request(
                            "invalid_frame",
                            "binary frames are not accepted; send JSON text frames",
                        ))),
                        Some(Ok(_)) => {
                            last_heard = Instant::now();
                            None
                        }
                    };
                    if let Some(reply) = reply {
                        if !send(&mut ws, reply, config.write_timeout).await {
                            break None;
                        }
                    }
                },
                _ = ping.tick() => {
                    if last_heard.elapsed() >= config.ping_interval * 3 {
                        break Some(close_frame(CloseCode::Policy, "no answer to pings"));
                    }
                    if !send(&mut ws, Message::Ping(Default::default()), config.write_timeout).await {
                        break None;
                    }
                }
            }
        };
        // The last socket of a channel takes the channel off the fan-out.
        drop(subscription);
        if out.ended() != Some(End::Broken) {
            // What was queued goes first (a deleted channel's last events), then the close.
            let _ = tokio::time::timeout(config.write_timeout, ws.close(close)).await;
        }
    }

    /// Post what a client sent; the answer is an error frame, or nothing (the posted message comes
    /// back to every socket of the channel, this one included, as a `message` event).
    async fn handle_client_text(&self, text: &str) -> Option<Message> {
        let frame = match serde_json::from_str::<ClientFrame>(text) {
            Ok(frame) => frame,
            Err(e) => {
                return Some(error_frame(ApiError::bad_request(
                    "invalid_frame",
                    format!("could not read that frame ({e}); send {{\"type\":\"message\",\"text\":\"...\"}}"),
                )))
            }
        };
        let ClientFrame::Message { text, message, user_id } = frame;
        // The session may have ended (logout, expiry) since the socket connected.
        if let Caller::User { token_hash, .. } = &self.caller {
            let now = now_millis();
            let valid = self.state.catalog.read(|s| s.auth_session(token_hash).is_some_and(|a| a.expires_at > now));
            if !valid {
                return Some(error_frame(ApiError::unauthorized(
                    "your session has ended; sign in again and reconnect",
                )));
            }
        }
        let result = match pick_text(text, message) {
            Ok(text) => post(&self.state, &self.channel_id, &self.caller, text, user_id).await,
            Err(e) => Err(e),
        };
        // A post over the socket is a write like the REST one: audited with the status that would have had.
        let status = match &result {
            Err(e) => e.status,
            Ok(Posted::Message(_)) => StatusCode::CREATED,
            Ok(Posted::Held(_)) => StatusCode::ACCEPTED,
        };
        let path = format!("/api/channels/{}/chat/ws", self.channel_id);
        audit::record(&self.caller.audit_name(), &"WS", &path, status.as_u16(), self.peer);
        match result {
            Err(e) => Some(error_frame(e)),
            Ok(Posted::Message(_)) => None,
            Ok(Posted::Held(held)) => {
                Some(ServerFrame::Held { reason: held.reason, message: held.message }.to_message())
            }
        }
    }
}

/// Counts a socket in `bitriver_ws_connections` for as long as it lives (also if its task panics).
struct ConnectionGauge(prometheus::IntGauge);

impl ConnectionGauge {
    fn open(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        ConnectionGauge(gauge.clone())
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Why reading failed, as a close frame: too large (1009) or a protocol error (1002).
fn read_failed(e: &tungstenite::Error) -> CloseFrame {
    if matches!(e, tungstenite::Error::Capacity(_)) {
        close_frame(CloseCode::Size, "frame too large")
    } else {
        close_frame(CloseCode::Protocol, "unreadable frame")
    }
}

/// Send one frame of the socket's own (behind whatever is queued) within `limit`; `false` when
/// the client could not take it or is gone. A write the kernel takes at once arms no timer.
async fn send(ws: &mut WebSocketStream<Connection>, frame: Message, limit: Duration) -> bool {
    let mut sent = std::pin::pin!(ws.send(frame));
    match futures::poll!(sent.as_mut()) {
        Poll::Ready(sent) => sent.is_ok(),
        Poll::Pending => matches!(tokio::time::timeout(limit, sent).await, Ok(Ok(()))),
    }
}

/// The upgraded connection as tungstenite sees it: reads straight from it, writes through the
/// socket's queue, which the fan-out writes into as well.
struct Connection {
    read: ReadHalf<TokioIo<Upgraded>>,
    write: SocketWriter,
}

impl AsyncRead for Connection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.write).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_is_the_one_rfc_6455_gives() {
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
