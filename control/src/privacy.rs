//! A user's own data: `GET /api/me/export` (everything the catalog holds about the caller, as one
//! JSON document) and `DELETE /api/me` (the account and what is theirs; what others keep, such as
//! chat lines, reports and bans, stops naming them; `?chat=delete` removes their chat lines too).

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use raft::state::automod::HeldMessage;
use raft::state::reports::{Appeal, Report};
use raft::{now_millis, ChatBan, ChatMessage, Command, Profile, StreamSession, UnixMillis};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::channels::ChannelView;
use crate::error::{ApiError, ApiResult};
use crate::export::UserExport;
use crate::ApiState;

pub(crate) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::default().routes(routes!(export_me)).routes(routes!(delete_me))
}

/// A login session, without its token hash.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginSession {
    #[schema(value_type = i64)]
    pub created_at: UnixMillis,
    #[schema(value_type = i64)]
    pub expires_at: UnixMillis,
}

/// A channel followed or subscribed to, and since when.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Membership {
    pub channel_id: String,
    #[schema(value_type = i64)]
    pub since: UnixMillis,
}

/// Everything stored about one user.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MyData {
    #[schema(value_type = i64)]
    pub exported_at: UnixMillis,
    pub user: UserExport,
    pub login_sessions: Vec<LoginSession>,
    pub profile: Option<Profile>,
    pub follows: Vec<Membership>,
    pub subscriptions: Vec<Membership>,
    pub channels: Vec<ChannelView>,
    /// Broadcasts of their channels.
    pub broadcasts: Vec<StreamSession>,
    /// Channels they moderate.
    pub moderates: Vec<String>,
    /// Their chat lines still in the channels' history.
    pub chat_messages: Vec<ChatMessage>,
    /// Their chat lines waiting for a moderator's review.
    #[schema(value_type = Vec<Object>)]
    pub held_messages: Vec<HeldMessage>,
    pub bans_received: Vec<ChatBan>,
    pub bans_made: Vec<ChatBan>,
    #[schema(value_type = Vec<Object>)]
    pub reports_filed: Vec<Report>,
    /// Reports about them, without who filed them.
    #[schema(value_type = Vec<Object>)]
    pub reports_about_them: Vec<Report>,
    #[schema(value_type = Vec<Object>)]
    pub appeals: Vec<Appeal>,
}

#[utoipa::path(
    get,
    path = "/api/me/export",
    tag = "users",
    responses(
        (status = 200, description = "Everything stored about the caller (a download)", body = MyData),
        (status = 401, description = "Not signed in as a user"),
    )
)]
pub(crate) async fn export_me(State(state): State<ApiState>, caller: Caller) -> ApiResult<Response> {
    let user = caller.require_user()?.clone();
    let data = state
        .catalog
        .read_linearizable(|s| {
            let id = user.id.as_str();
            let community = s.community_of(id);
            let membership = |pairs: Vec<(String, UnixMillis)>| {
                pairs.into_iter().map(|(channel_id, since)| Membership { channel_id, since }).collect()
            };
            let owned: Vec<&raft::Channel> = s.channels().filter(|c| c.owner_id == id).collect();
            MyData {
                exported_at: now_millis(),
                user: UserExport::from(&user),
                login_sessions: s
                    .auth_sessions_of(id)
                    .map(|a| LoginSession { created_at: a.created_at, expires_at: a.expires_at })
                    .collect(),
                profile: s.profile(id).cloned(),
                follows: membership(community.follows),
                subscriptions: membership(community.subscriptions),
                channels: owned.iter().map(|c| ChannelView::new(c, s.followers(&c.id), s.subscribers(&c.id))).collect(),
                broadcasts: owned.iter().flat_map(|c| s.sessions_of_channel(&c.id).cloned()).collect(),
                moderates: s
                    .channels()
                    .filter(|c| c.moderators.iter().any(|m| m == id))
                    .map(|c| c.id.clone())
                    .collect(),
                chat_messages: s.channels().flat_map(|c| s.chat(&c.id).filter(|m| m.user_id == id).cloned()).collect(),
                held_messages: s
                    .channels()
                    .flat_map(|c| s.held_messages(&c.id).into_iter().filter(|h| h.message.user_id == id).cloned())
                    .collect(),
                bans_received: community.bans_received,
                bans_made: community.bans_made,
                reports_filed: s.reports().into_iter().filter(|r| r.reporter_id == id).cloned().collect(),
                reports_about_them: s
                    .reports()
                    .into_iter()
                    .filter(|r| r.subject_user_id == id)
                    .map(|r| Report { reporter_id: String::new(), ..r.clone() })
                    .collect(),
                appeals: s.appeals().into_iter().filter(|a| a.user_id == id).cloned().collect(),
            }
        })
        .await?;
    let disposition = format!("attachment; filename=\"bitriver-my-data-{}.json\"", data.exported_at);
    Ok(([(header::CONTENT_DISPOSITION, disposition)], Json(data)).into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeleteQuery {
    /// `keep` (default: their chat lines stay, shown as "Deleted user") or `delete`.
    chat: Option<String>,
}

#[utoipa::path(
    delete,
    path = "/api/me",
    tag = "users",
    params(DeleteQuery),
    responses(
        (status = 204, description = "The account is deleted; this session ends"),
        (status = 401, description = "Not signed in as a user"),
        (status = 409, description = "One of their channels is live: stop it first", body = crate::error::Body),
        (status = 422, description = "Invalid chat choice", body = crate::error::Body),
    )
)]
pub(crate) async fn delete_me(
    State(state): State<ApiState>,
    caller: Caller,
    Query(query): Query<DeleteQuery>,
) -> ApiResult<StatusCode> {
    let id = caller.require_user()?.id.clone();
    let delete_chat = match query.chat.as_deref() {
        None | Some("keep") => false,
        Some("delete") => true,
        Some(_) => return Err(ApiError::invalid("chat", "chat must be keep or delete")),
    };
    state.catalog.propose(Command::EraseUser { id, delete_chat }).await?;
    Ok(StatusCode::NO_CONTENT)
}
