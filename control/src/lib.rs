//! The control plane: BitRiver Live's REST API under `/api`, auth, chat over WebSocket,
//! profiles, follows, the channel directory and analytics.
//!
//! Every write is a [`raft::Command`] proposed to the catalog, so any node with the control role
//! serves any request and every node sees the result. Reads use the local replica.
//!
//! Module map: [`auth`] (who is calling), [`error`] (the JSON error shape), then one module per
//! resource, each registering its routes once with their OpenAPI operations ([`openapi`]);
//! [`router`] puts them together with the cross-cutting layers (rate limits, body size
//! limit, audit events, metrics).

pub mod analytics;
pub mod audit;
pub mod auth;
pub mod channels;
pub mod chat;
pub mod directory;
pub mod error;
pub mod export;
pub mod health;
pub mod ingest_point;
pub mod json;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod privacy;
pub mod profiles;
pub mod recordings;
pub mod reports;
pub mod routing;
pub mod same_origin;
pub mod takedowns;
pub mod users;
pub mod whoami;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::middleware::{from_fn, from_fn_with_state};
use axum::Router;
use raft::Catalog;

pub use error::{ApiError, ApiResult};

/// Run mode as the API sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Development,
    Production,
}

/// Everything handlers share. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    pub catalog: Catalog,
    pub mode: Mode,
    pub dev_admin_warned: Arc<AtomicBool>,
    /// Rate limits and the body cap; [`router`] builds its limiters from these.
    pub limits: Arc<limits::Limits>,
    pub metrics: Arc<metrics::ApiMetrics>,
    /// Node-local chat runtime: flood limiter, socket budget, socket shutdown.
    pub chat: Arc<chat::ChatHub>,
    /// This node's edge, if it runs one: channel answers then carry `edgePlaybackUrl`.
    pub edge_playback: Option<channels::EdgePlayback>,
    /// The node serves WHEP (`/whep/{id}`): live channel answers then carry `whepUrl`.
    pub whep: bool,
    /// Which browsers' pages may send writes and open chat sockets ([`same_origin`]).
    pub origins: Arc<same_origin::OriginPolicy>,
    /// Which edge a viewer gets ([`routing`]): `/play`, steering and `edgePlaybackUrl`.
    pub routing: Arc<routing::Routing>,
}

impl ApiState {
    /// State with metrics on a private registry (tests; see [`ApiState::with_registry`]).
    pub fn new(catalog: Catalog, mode: Mode) -> Self {
        Self::with_metrics(catalog, mode, metrics::ApiMetrics::unregistered())
    }

    /// State whose metrics are registered on `registry` (the node's, served at `/metrics`).
    pub fn with_registry(catalog: Catalog, mode: Mode, registry: &prometheus::Registry) -> Self {
        let metrics = metrics::ApiMetrics::register(registry).unwrap_or_else(|e| {
            tracing::error!(error = %e, "API metrics not registered; /metrics will not show them");
            metrics::ApiMetrics::unregistered()
        });
        Self::with_metrics(catalog, mode, metrics)
    }

    fn with_metrics(catalog: Catalog, mode: Mode, metrics: metrics::ApiMetrics) -> Self {
        ApiState {
            catalog,
            mode,
            dev_admin_warned: Arc::new(AtomicBool::new(false)),
            limits: Arc::new(limits::Limits::from_env()),
            metrics: Arc::new(metrics),
            chat: Arc::new(chat::ChatHub::new(chat::ChatConfig::try_from_env().unwrap_or_else(|e| {
                tracing::error!(error = %e, "ignoring an invalid chat setting; using the defaults");
                chat::ChatConfig::default()
            }))),
            edge_playback: None,
            whep: false,
            origins: Arc::default(),
            routing: Arc::default(),
        }
    }
}

/// The `/api` routes (mount at the root: paths include `/api`).
pub fn router(state: ApiState) -> Router {
    // The document half is built once by `openapi::document`; here only the routes are kept.
    let (routes, _) = openapi::api_routes().split_for_parts();
    with_layers(routes, &state).with_state(state)
}

/// The cross-cutting layers around every route, innermost first: JSON error bodies, the limits
/// (body size, login and signup attempts, global rate), the cross-origin check, the audit event,
/// metrics (which see every answer).
fn with_layers(routes: Router<ApiState>, state: &ApiState) -> Router<ApiState> {
    limits::apply(routes.layer(from_fn(json::errors_as_json)), &state.limits)
        .layer(from_fn_with_state(state.origins.clone(), same_origin::guard))
        .layer(from_fn_with_state(state.clone(), audit::audit))
        .layer(from_fn_with_state(state.metrics.clone(), metrics::track))
}

/// `read` on the local replica; when that answers an error, once more after catching up with the
/// leader. A channel created, or a moderator appointed, a moment ago through another node may not
/// have reached this replica yet, and this node must answer as the one that made the change would.
/// Without a leader the local answer stands.
pub(crate) async fn read_or_catch_up<T>(
    state: &ApiState,
    read: impl Fn(&raft::state::CatalogState) -> ApiResult<T>,
) -> ApiResult<T> {
    match state.catalog.read(&read) {
        Ok(value) => Ok(value),
        Err(local) => state.catalog.read_linearizable(&read).await.unwrap_or(Err(local)),
    }
}
