//! The audit trail: one structured event per state-changing API call.
//!
//! Every `POST`, `PUT`, `PATCH` and `DELETE` under `/api` emits exactly one `tracing` event at
//! target [`TARGET`] after the response is ready, with fields `user` (a user id, `anonymous`,
//! `dev-admin`, or `invalid-token`), `method`, `path`, `status` and `remote_ip`. With the JSON
//! log format these are one line each, ready for `journalctl` or a log pipeline.
//!
//! Writes that do not pass through this middleware call [`record`] themselves: chat messages
//! posted over the WebSocket (method `WS`, the socket's path, the status the same post over
//! REST would have had) and the node's `DELETE /api/cluster/nodes/{id}`.
//!
//! The caller is resolved here from the presented token (SHA-256, then a read of the local
//! replica) before the handler runs, so a logout or an account deletion is still attributed to
//! the account that made it.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use crate::auth::{presented_token, token_hash};
use crate::same_origin::loopback_request;
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
    let local = loopback_request(peer, request.headers(), request.uri());
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
        (None, None) if state.mode == Mode::Development && local => "dev-admin".to_owned(),
        (None, None) => "anonymous".to_owned(),
    };
    record(&user, &method, &path, response.status().as_u16(), peer);
    response
}

/// Write one audit event (see the module docs for the fields).
pub fn record(user: &str, method: &dyn std::fmt::Display, path: &str, status: u16, peer: Option<SocketAddr>) {
    let remote_ip = peer.map(|p| p.ip().to_string()).unwrap_or_else(|| "unknown".to_owned());
    tracing::info!(
        target: TARGET,
        user = %user,
        method = %method,
        path = %path,
        status = status,
        remote_ip = %remote_ip,
        "api call"
    );
}

/// The TCP peer of a request, when the server recorded it (an extractor that never refuses).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)))
    }
}
