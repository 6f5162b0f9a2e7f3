//! The control plane: BitRiver Live's REST API under `/api`, auth, chat over WebSocket,
//! profiles, follows, the channel directory and analytics.
//!
//! Every write is a [`raft::Command`] proposed to the catalog, so any node with the control role
//! serves any request and every node sees the result. Reads use the local replica.
//!
//! Module map: [`auth`] (who is calling), [`error`] (the JSON error shape), then one module per
//! resource; [`router`] puts them together with the cross-cutting layers (rate limits, body size
//! limit, audit events, metrics).

pub mod auth;
pub mod error;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

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
}

impl ApiState {
    pub fn new(catalog: Catalog, mode: Mode) -> Self {
        ApiState { catalog, mode, dev_admin_warned: Arc::new(AtomicBool::new(false)) }
    }
}

/// The `/api` routes (mount at the root: paths include `/api`).
pub fn router(state: ApiState) -> Router {
    Router::new().with_state(state)
}
