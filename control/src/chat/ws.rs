//! The live chat socket: `GET /api/channels/{id}/chat/ws`.
//!
//! On connect the socket gets `{"type":"history","messages":[...]}` (the latest messages, oldest
//! first; `?history=N` asks for fewer, `?history=0` for none), then one JSON frame per event of
//! its channel as this node applies them: `message`, `deleted`, `ban`, `unban`, `settings`.
//! Authenticated clients (Authorization header or session cookie on the upgrade request) may send
//! `{"type":"message","text":"..."}`; it is posted exactly like a REST post, and refusals come
//! back as `{"type":"error","error":{code,message,...}}` without closing the socket.
//!
//! Events come from the node's fan-out ([`super::fanout`]): the socket holds a receiver of its own
//! channel's broadcast and forwards the already-serialized frames; it never sees other channels.
//!
//! Bounds: client frames are at most [`ChatConfig::max_client_frame_bytes`] (larger closes with
//! 1009), and the read buffer is sized for them, not tungstenite's 128 KiB default. One task
//! reads and writes each socket: a tick's frames go out with one flush, and while a client does
//! not take them the socket takes no further events (the kernel's send buffer is its queue).
//! Once its channel's broadcast has moved on by more than [`ChatConfig::channel_backlog`]
//! events, the socket skips the events the broadcast no longer holds and is told
//! `{"type":"lagged","missed":n}`; a client that cannot take one tick's frames within
//! [`ChatConfig::write_timeout`] or stays silent for three ping periods is closed. The node's
//! shutdown signal ([`super::ChatHub::with_shutdown`]) closes every socket with 1001.
//!
//! [`ChatConfig::max_client_frame_bytes`]: super::ChatConfig::max_client_frame_bytes
//! [`ChatConfig::channel_backlog`]: super::ChatConfig::channel_backlog
//! [`ChatConfig::write_timeout`]: super::ChatConfig::write_timeout

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use raft::now_millis;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{interval_at, Instant, MissedTickBehavior};

use super::event::{ErrorView, MessageView, ServerFrame};
use super::fanout::ChannelFrame;
use super::{pick_text, post, read_or_catch_up, Posted, SocketSlot};
use crate::audit::{self, Peer};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::ApiState;

/// Bytes tungstenite reads from a chat socket at once. Client frames are small (at most
/// `max_client_frame_bytes`, 4 KiB by default; a larger frame grows the buffer until it is refused),
/// and tungstenite zero-fills this much before every read attempt, once a tick on every socket.
const READ_BUFFER_BYTES: usize = 1024;
/// Bytes tungstenite gathers before writing to the TCP stream; every frame is flushed right after
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
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
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
    let upgrade = upgrade.map_err(|e| {
        ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "websocket_required",
            format!("this endpoint is a WebSocket; connect with a WebSocket client ({})", e.body_text()),
        )
    })?;
    if state.chat.is_shutting_down() {
        return Err(ApiError::unavailable("this server is shutting down"));
    }
    let slot = state.chat.open_socket(peer.map(|p| p.ip()))?;
    let socket = ChatSocket { state, channel_id, caller, peer, moderator, history, _slot: slot };
    Ok(upgrade
        .max_message_size(config.max_client_frame_bytes)
        .max_frame_size(config.max_client_frame_bytes)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .on_upgrade(move |ws| async move {
            match socket.state.chat.runtime.clone() {
                Some(runtime) => drop(runtime.spawn(socket.run(ws))),
                None => socket.run(ws).await,
            }
        }))
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

fn close_frame(code: u16, reason: &'static str) -> CloseFrame {
    CloseFrame { code, reason: reason.into() }
}

impl ChatSocket {
    async fn run(self, mut socket: WebSocket) {
        let _connected = ConnectionGauge::open(&self.state.metrics.ws_connections);
        let config = self.state.chat.config().clone();
        // Subscribe before reading history so that nothing falls between the two (messages in both
        // are skipped by their `seq` below).
        let mut events = self.state.chat.fanout.subscribe(&self.state.catalog, &self.channel_id);
        // What goes out with the next flush; kept between ticks so that a tick allocates nothing.
        let mut pending: Vec<Message> = Vec::new();

        let mut last_history_seq = 0;
        if self.history > 0 {
            let messages: Vec<MessageView> = self.state.catalog.read(|s| {
                let mut latest: Vec<_> = s.chat(&self.channel_id).rev().take(self.history).cloned().collect();
                latest.reverse();
                latest.into_iter().map(|m| MessageView::new(m, s)).collect()
            });
            last_history_seq = messages.last().map_or(0, |m| m.seq);
            pending.push(ServerFrame::History { messages }.to_message());
        }

        let mut ping = interval_at(Instant::now() + config.ping_interval, config.ping_interval);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();

        let close = loop {
            if !write_frames(&mut socket, &mut pending, config.write_timeout).await {
                break None; // too slow to take a tick, or gone
            }
            // Events first: a tick wakes the socket and is taken without polling the others.
            // The node's shutdown closes the channel's broadcast (see `fanout`).
            tokio::select! {
                biased;
                event = events.recv() => match event {
                    Ok(frame) => {
                        let mut messages = 0;
                        let deleted = self.select(&frame, last_history_seq, &mut pending, &mut messages);
                        self.state.metrics.chat_messages_out.inc_by(messages);
                        if pending.len() > 1 {
                            // A tick's frames take one write.
                            self.state.metrics.chat_coalesced_writes.inc();
                        }
                        if deleted {
                            break Some(close_frame(close_code::NORMAL, "channel deleted"));
                        }
                    }
                    Err(RecvError::Lagged(missed)) => pending.push(ServerFrame::Lagged { missed }.to_message()),
                    Err(RecvError::Closed) => break Some(close_frame(close_code::AWAY, "server shutting down")),
                },
                frame = socket.next() => match frame {
                    None | Some(Ok(Message::Close(_))) => break None,
                    Some(Err(e)) => break Some(read_failed(e)),
                    Some(Ok(frame)) => {
                        last_heard = Instant::now();
                        let reply = match frame {
                            Message::Text(text) => self.handle_client_text(text.as_str()).await,
                            Message::Binary(_) => Some(error_frame(ApiError::bad_request(
                                "invalid_frame",
                                "binary frames are not accepted; send JSON text frames",
                            ))),
                            _ => None,
                        };
                        pending.extend(reply);
                    }
                },
                _ = ping.tick() => {
                    if last_heard.elapsed() >= config.ping_interval * 3 {
                        break Some(close_frame(close_code::POLICY, "no answer to pings"));
                    }
                    pending.push(Message::Ping(Default::default()));
                }
            }
        };
        // The last socket of a channel releases its broadcast.
        drop(events);
        // What was pending goes first (a deleted channel's last events), then the close.
        pending.extend(close.map(|frame| Message::Close(Some(frame))));
        write_frames(&mut socket, &mut pending, config.write_timeout).await;
        let _ = tokio::time::timeout(config.write_timeout, socket.close()).await;
    }

    /// Post what a client sent; the answer is an error frame, or nothing (the posted message comes
    /// back to every socket of the channel, this one included, as a `message` event).
    /// The frames of `frame` this socket sends, in order: messages its history already held are
    /// skipped, settings as its caller may see them. Counts the chat messages among them in
    /// `messages`; `true` when the channel is gone (its last frame).
    fn select(&self, frame: &ChannelFrame, last_history_seq: u64, out: &mut Vec<Message>, messages: &mut u64) -> bool {
        match frame {
            ChannelFrame::ChannelDeleted => return true,
            ChannelFrame::Message { seq, .. } if *seq <= last_history_seq => {}
            ChannelFrame::Message { frame, .. } => {
                out.push(frame.clone());
                *messages += 1;
            }
            ChannelFrame::Notice(frame) => out.push(frame.clone()),
            ChannelFrame::Settings { public, moderator } => {
                out.push(if self.moderator { moderator } else { public }.clone());
            }
            ChannelFrame::Batch(frames) => {
                for frame in frames {
                    if self.select(frame, last_history_seq, out, messages) {
                        return true;
                    }
                }
            }
        }
        false
    }

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
fn read_failed(e: axum::Error) -> CloseFrame {
    let too_large = e
        .into_inner()
        .downcast_ref::<tungstenite::Error>()
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)));
    if too_large {
        close_frame(close_code::SIZE, "frame too large")
    } else {
        close_frame(close_code::PROTOCOL, "unreadable frame")
    }
}

/// Write `frames` (emptying it) with one flush; `false` when the client could not take them
/// within `limit` or is gone. Nothing to write is no write. Most writes complete at once, into
/// the kernel's buffer: those arm no timer.
async fn write_frames(socket: &mut WebSocket, frames: &mut Vec<Message>, limit: Duration) -> bool {
    if frames.is_empty() {
        return true;
    }
    let mut write = pin!(async {
        for frame in frames.drain(..) {
            socket.feed(frame).await?;
        }
        socket.flush().await
    });
    match futures::poll!(write.as_mut()) {
        Poll::Ready(written) => written.is_ok(),
        Poll::Pending => matches!(tokio::time::timeout(limit, write).await, Ok(Ok(()))),
    }
}
