//! `GET /api/export` (admins): a JSON snapshot of the catalog for backups and migrations.
//!
//! Read linearizably, so the snapshot includes every write acknowledged before the request. It
//! leaves out secrets: password hashes, stream key hashes and login sessions are never exported.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use raft::state::CatalogState;
use raft::{now_millis, ChatMessage, NodeInfo, Profile, StreamSession, UnixMillis, User};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::channels::ChannelView;
use crate::error::ApiResult;
use crate::ApiState;

pub(crate) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::default().routes(routes!(export))
}

/// The snapshot.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Export {
    #[schema(value_type = i64)]
    pub exported_at: UnixMillis,
    pub users: Vec<UserExport>,
    pub channels: Vec<ChannelView>,
    pub sessions: Vec<StreamSession>,
    /// Chat history per channel id, oldest first.
    pub chat: BTreeMap<String, Vec<ChatMessage>>,
    pub profiles: Vec<Profile>,
    /// Follower and subscriber counts per channel id.
    pub follows: BTreeMap<String, FollowCounts>,
    pub nodes: Vec<NodeInfo>,
}

/// A user without the password hash.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserExport {
    pub id: String,
    pub display_name: String,
    pub email: String,
    pub roles: Vec<String>,
    pub has_password: bool,
    #[schema(value_type = i64)]
    pub created_at: UnixMillis,
}

impl From<&User> for UserExport {
    fn from(u: &User) -> Self {
        UserExport {
            id: u.id.clone(),
            display_name: u.display_name.clone(),
            email: u.email.clone(),
            roles: u.roles.clone(),
            has_password: u.password_hash.is_some(),
            created_at: u.created_at,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FollowCounts {
    pub followers: u64,
    pub subscribers: u64,
}

/// Build the snapshot from a state.
pub fn snapshot(state: &CatalogState, now: UnixMillis) -> Export {
    let followers = state.follower_counts();
    let subscribers = state.subscriber_counts();
    let count = |m: &BTreeMap<&str, usize>, id: &str| m.get(id).copied().unwrap_or(0);
    Export {
        exported_at: now,
        users: state.users().map(UserExport::from).collect(),
        channels: state
            .channels()
            .map(|c| ChannelView::new(c, count(&followers, &c.id), count(&subscribers, &c.id)))
            .collect(),
        sessions: state.sessions().cloned().collect(),
        chat: state
            .channels()
            .map(|c| (c.id.clone(), state.chat(&c.id).cloned().collect::<Vec<_>>()))
            .filter(|(_, messages)| !messages.is_empty())
            .collect(),
        profiles: state.users().filter_map(|u| state.profile(&u.id).cloned()).collect(),
        follows: state
            .channels()
            .map(|c| {
                let counts = FollowCounts {
                    followers: count(&followers, &c.id) as u64,
                    subscribers: count(&subscribers, &c.id) as u64,
                };
                (c.id.clone(), counts)
            })
            .collect(),
        nodes: state.nodes().cloned().collect(),
    }
}

#[utoipa::path(
    get,
    path = "/api/export",
    tag = "export",
    responses(
        (status = 200, description = "A snapshot of the catalog without secrets (admins); sent as an attachment", body = Export),
        (status = 401, description = "Not signed in"),
        (status = 403, description = "Not an admin"),
    )
)]
async fn export(State(state): State<ApiState>, caller: Caller) -> ApiResult<Response> {
    caller.require_admin()?;
    let now = now_millis();
    let snapshot = state.catalog.read_linearizable(|s| snapshot(s, now)).await?;
    let disposition = format!("attachment; filename=\"bitriver-export-{now}.json\"");
    Ok(([(header::CONTENT_DISPOSITION, disposition)], Json(snapshot)).into_response())
}
