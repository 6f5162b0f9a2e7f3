//! Automod over the API: its rules live in the chat settings (see [`super::moderation`]); this
//! module is the queue of messages it held (accounts younger than the channel's threshold) and the
//! moderators' decisions on them. The rules themselves are judged by the catalog
//! (`raft::state::automod`), so every node holds, refuses and posts alike.
//!
//! - `GET /api/channels/{id}/chat/held`: the held messages, oldest first (moderators).
//! - `POST /api/channels/{id}/chat/held/{messageId}/approve`: posted now, under its own id (200).
//! - `POST /api/channels/{id}/chat/held/{messageId}/reject`: dropped (204).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use raft::state::automod::HeldMessage;
use raft::state::CatalogState;
use raft::{Command, Response};
use serde::Serialize;

use super::{chat_error, require_moderator, MessageView};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::ApiState;

/// A message automod held, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeldView {
    /// Always true: tells a poster's client the message waits for review.
    pub held: bool,
    pub reason: String,
    pub message: MessageView,
}

impl HeldView {
    pub(crate) fn new(held: HeldMessage, state: &CatalogState) -> Self {
        HeldView { held: true, reason: held.reason, message: MessageView::new(held.message, state) }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct HeldList {
    messages: Vec<HeldView>,
}

#[utoipa::path(
    get,
    path = "/api/channels/{id}/chat/held",
    tag = "chat",
    params(("id" = String, Path, description = "Channel id")),
    responses(
        (status = 200, description = "Messages automod held for review, oldest first", body = HeldList),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not a moderator of this channel"),
        (status = 404, description = "No such channel"),
    )
)]
pub(super) async fn list_held(
    State(state): State<ApiState>,
    Path(channel_id): Path<String>,
    caller: Caller,
) -> ApiResult<Json<HeldList>> {
    require_moderator(&state, &channel_id, &caller).await?;
    let messages =
        state.catalog.read(|s| s.held_messages(&channel_id).into_iter().map(|h| HeldView::new(h.clone(), s)).collect());
    Ok(Json(HeldList { messages }))
}

#[utoipa::path(
    post,
    path = "/api/channels/{id}/chat/held/{message_id}/approve",
    tag = "chat",
    params(
        ("id" = String, Path, description = "Channel id"),
        ("message_id" = String, Path, description = "The held message"),
    ),
    responses(
        (status = 200, description = "Posted", body = MessageView),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not a moderator of this channel, or the author was banned meanwhile"),
        (status = 404, description = "No such channel or held message"),
    )
)]
pub(super) async fn approve_held(
    State(state): State<ApiState>,
    Path((channel_id, message_id)): Path<(String, String)>,
    caller: Caller,
) -> ApiResult<Json<MessageView>> {
    require_moderator(&state, &channel_id, &caller).await?;
    let command = Command::ReviewHeldMessage { channel_id, message_id, approve: true };
    match state.catalog.propose(command).await.map_err(chat_error)? {
        Response::Chat(message) => {
            state.metrics.chat_messages_in.inc();
            Ok(Json(state.catalog.read(|s| MessageView::new(message, s))))
        }
        other => Err(ApiError::internal(format!("unexpected catalog answer to an approval: {other:?}"))),
    }
}

#[utoipa::path(
    post,
    path = "/api/channels/{id}/chat/held/{message_id}/reject",
    tag = "chat",
    params(
        ("id" = String, Path, description = "Channel id"),
        ("message_id" = String, Path, description = "The held message"),
    ),
    responses(
        (status = 204, description = "Dropped"),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not a moderator of this channel"),
        (status = 404, description = "No such channel or held message"),
    )
)]
pub(super) async fn reject_held(
    State(state): State<ApiState>,
    Path((channel_id, message_id)): Path<(String, String)>,
    caller: Caller,
) -> ApiResult<StatusCode> {
    require_moderator(&state, &channel_id, &caller).await?;
    let command = Command::ReviewHeldMessage { channel_id, message_id, approve: false };
    state.catalog.propose(command).await.map_err(chat_error)?;
    Ok(StatusCode::NO_CONTENT)
}
