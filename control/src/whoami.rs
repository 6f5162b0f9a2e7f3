//! Who the caller is, for pages deciding what to show: `GET /api/auth/whoami` (always 200) and
//! `GET /api/channels/{id}/relation` (whether the caller follows, subscribes to and may moderate
//! a channel, so the channel page's buttons start in the right state).
//!
//! Web pages ask this on every load to decide what to show. `GET /api/auth/session` answers 401
//! to anonymous callers, which browsers log as a failed request on every public page, and says
//! nothing about the development-mode admin (who has no user record). This answer covers all
//! three kinds of caller: anonymous (`user: null, admin: false`), the development admin
//! (`user: null, admin: true`) and a signed-in user. A stale session cookie (expired, or signed
//! out elsewhere) answers as anonymous and clears the cookie, so the browser stops sending it.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{clear_session_cookie, Caller};
use crate::error::ApiError;
use crate::json::ApiJson;
use crate::users::UserView;
use crate::{read_or_catch_up, ApiState};

pub(crate) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::default().routes(routes!(whoami)).routes(routes!(relation))
}

/// The caller as the web UI needs to know it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WhoAmI {
    /// The signed-in user; `null` when anonymous or the development admin.
    pub user: Option<UserView>,
    /// Whether the caller may do what admins do (an admin user, or the development admin).
    pub admin: bool,
}

#[utoipa::path(
    get,
    path = "/api/auth/whoami",
    tag = "auth",
    security((), ("bearer" = []), ("bitriver_session" = [])),
    responses(
        (status = 200, description = "The caller: a user, the development admin, or anonymous", body = WhoAmI),
    )
)]
pub(crate) async fn whoami(State(state): State<ApiState>, caller: Result<Caller, ApiError>) -> Response {
    match caller {
        Ok(caller) => {
            ApiJson(WhoAmI { user: caller.user().map(UserView::from), admin: caller.is_admin() }).into_response()
        }
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            let anonymous = ApiJson(WhoAmI { user: None, admin: false });
            match HeaderValue::from_str(&clear_session_cookie(state.mode)) {
                Ok(clear) => ([(header::SET_COOKIE, clear)], anonymous).into_response(),
                Err(_) => anonymous.into_response(),
            }
        }
        Err(e) => e.into_response(),
    }
}

/// What the caller is to one channel. All false for anonymous callers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelRelation {
    pub following: bool,
    pub subscribed: bool,
    /// The owner, a moderator of the channel, or an admin.
    pub can_moderate: bool,
}

#[utoipa::path(
    get,
    path = "/api/channels/{id}/relation",
    tag = "channels",
    security((), ("bearer" = []), ("bitriver_session" = [])),
    params(("id" = String, Path, description = "Channel id")),
    responses(
        (status = 200, description = "Whether the caller follows, subscribes to and may moderate the channel", body = ChannelRelation),
        (status = 401, description = "A token was presented but is invalid or expired"),
        (status = 404, description = "No such channel"),
    )
)]
pub(crate) async fn relation(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<ApiJson<ChannelRelation>, ApiError> {
    let relation = read_or_catch_up(&state, |s| {
        if s.channel(&id).is_none() {
            return Err(ApiError::not_found("channel", &id));
        }
        Ok(match caller.user() {
            Some(user) => ChannelRelation {
                following: s.is_following(&id, &user.id),
                subscribed: s.is_subscribed(&id, &user.id),
                can_moderate: caller.is_admin() || s.can_moderate(&id, &user.id),
            },
            None => ChannelRelation { following: false, subscribed: false, can_moderate: caller.is_admin() },
        })
    })
    .await?;
    Ok(ApiJson(relation))
}
