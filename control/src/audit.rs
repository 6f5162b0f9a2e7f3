//! The audit trail: one structured event per state-changing API call.
//!
//! Every `POST`, `PUT`, `PATCH` and `DELETE` under `/api` emits exactly one `tracing` event at
//! target [`TARGET`] after the response is ready, with fields `user` (a user id, `anonymous`,
//! `dev-admin`, or `invalid-token`), `method`, `path`, `status` and `remote_ip`. With the JSON
//! log format these are one line each, ready for `journalctl` or a log pipeline.
//!
//! The caller is resolved here from the presented token (SHA-256, then a read of the local
//! replica) before the handler runs, so a logout or an account deletion is still attributed to
//! the account that made it.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use crate::auth::{presented_token, token_hash};
use crate::{ApiState, Mode};

/// The `tracing` target of audit events.
pub const TARGET: &str = "bitriver::audit";

fn is_state_changing(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE)
}

/// Middleware (see [`crate::router`]).
pub(crate) async fn audit(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    if !is_state_changing(request.method()) || !path.starts_with("/api/") {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let token = presented_token(request.headers()).map(|t| token_hash(&t));
    let resolve = |hash: &str| {
        let now = raft::now_millis();
        state.catalog.read(|s| {
            s.auth_session(hash).filter(|session| session.expires_at > now).map(|session| session.user_id.clone())
        })
    };
    let before = token.as_deref().and_then(resolve);

    let response = next.run(request).await;

    let user = match (&token, before) {
        (_, Some(id)) => id,
        // A session made a moment ago elsewhere: the handler has waited for it by now.
        (Some(hash), None) => resolve(hash).unwrap_or_else(|| "invalid-token".to_owned()),
        (None, None) if state.mode == Mode::Development && peer.is_some_and(|p| p.ip().is_loopback()) => {
            "dev-admin".to_owned()
        }
        (None, None) => "anonymous".to_owned(),
    };
    let remote_ip = peer.map(|p| p.ip().to_string()).unwrap_or_else(|| "unknown".to_owned());
    tracing::info!(
        target: TARGET,
        user = %user,
        method = %method,
        path = %path,
        status = response.status().as_u16(),
        remote_ip = %remote_ip,
        "api call"
    );
    response
}
