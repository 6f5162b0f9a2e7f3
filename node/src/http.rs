//! The node's own HTTP endpoints: cluster status, health, metrics.
//!
//! `GET /api/cluster` and `DELETE /api/cluster/nodes/{id}` are for admins; in development mode a
//! request from loopback without a token counts as an admin (so local curl works as documented).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use prometheus::{Encoder, Registry, TextEncoder};
use raft::Catalog;
use serde_json::json;

use crate::config::Mode;

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct NodeHttp {
    pub catalog: Catalog,
    pub registry: Registry,
    pub mode: Mode,
    pub data_dir: PathBuf,
    /// Listeners this node runs, by name, for `/healthz`.
    pub listeners: Arc<Vec<(String, SocketAddr)>>,
    /// The transcode component of `/healthz`: on or off, ladder, encoders found.
    pub transcode: Arc<serde_json::Value>,
    /// The edge cache, when the node runs the edge role, for `/healthz`.
    pub edge_cache: Option<&'static cache::MokaStorage>,
}

pub fn router(state: NodeHttp) -> Router {
    Router::new()
        .route("/api/cluster", get(cluster_status))
        .route("/api/cluster/nodes/{id}", delete(remove_node))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// A JSON error in the API's shape: `{"error":{"code","message"}}`.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": {"code": code, "message": message.into()}}))).into_response()
}

/// Whether the caller may use admin endpoints.
fn is_admin(state: &NodeHttp, headers: &HeaderMap, peer: SocketAddr) -> bool {
    // The bearer header or the browser's session cookie (the Control Center shows cluster status).
    let token = control::auth::presented_token(headers);
    match token.as_deref() {
        None => state.mode == Mode::Development && peer.ip().is_loopback(),
        Some(token) => {
            let hash = hex_sha256(token.trim().as_bytes());
            let now = raft::now_millis();
            state.catalog.read(|s| {
                s.auth_session(&hash)
                    .filter(|session| session.expires_at > now)
                    .and_then(|session| s.user(&session.user_id))
                    .is_some_and(|user| user.roles.iter().any(|r| r == "admin"))
            })
        }
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn forbidden() -> Response {
    error(StatusCode::FORBIDDEN, "forbidden", "admin only (in development mode, loopback requests need no token)")
}

async fn cluster_status(
    State(state): State<NodeHttp>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if !is_admin(&state, &headers, peer) {
        return forbidden();
    }
    Json(state.catalog.status().await).into_response()
}

async fn remove_node(
    State(state): State<NodeHttp>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !is_admin(&state, &headers, peer) {
        return forbidden();
    }
    let Ok(id) = id.parse::<u64>() else {
        return error(StatusCode::BAD_REQUEST, "invalid_node_id", format!("{id:?} is not a node id"));
    };
    match state.catalog.remove_node(id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(StatusCode::CONFLICT, "remove_failed", e.to_string()),
    }
}

async fn healthz(State(state): State<NodeHttp>) -> Response {
    let status = state.catalog.local_status();
    let leader_ok = status.leader_id.is_some();
    let data_dir = state.data_dir.clone();
    let storage =
        tokio::task::spawn_blocking(move || probe_storage(&data_dir)).await.unwrap_or_else(|e| Err(e.to_string()));
    let listeners: serde_json::Map<String, serde_json::Value> = state
        .listeners
        .iter()
        .map(|(name, addr)| (name.clone(), json!({"status": "ok", "addr": addr.to_string()})))
        .collect();
    let healthy = leader_ok && storage.is_ok();
    let body = json!({
        "status": if healthy { "ok" } else { "error" },
        "nodeId": state.catalog.node_id(),
        "components": {
            "catalog": {
                "status": if leader_ok { "ok" } else { "error" },
                "leaderId": status.leader_id,
                "term": status.term,
                "detail": if leader_ok { "leader known" } else { "no leader known" },
            },
            "storage": match &storage {
                Ok(()) => json!({"status": "ok"}),
                Err(e) => json!({"status": "error", "detail": e}),
            },
            "listeners": listeners,
            "transcode": *state.transcode,
        }
    });
    let mut body = body;
    if let Some(storage) = state.edge_cache {
        body["components"]["edge"] = json!({
            "status": "ok",
            "cacheBytes": storage.weighted_bytes(),
            "objects": storage.object_count(),
            "filling": storage.filling_count(),
        });
    }
    let code = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body)).into_response()
}

/// Write and sync a small file in the data dir: the disk is writable and not full.
fn probe_storage(data_dir: &std::path::Path) -> Result<(), String> {
    use std::io::Write;
    let path = data_dir.join(".healthz");
    let mut file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(b"ok").and_then(|()| file.sync_all()).map_err(|e| format!("{}: {e}", path.display()))
}

/// The node's user + system CPU time, under the usual Prometheus name, so a load test
/// (`bitriver-load`) can chart what its load costs the node; `None` off Linux.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at field 3; utime is 14.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / rustix::param::clock_ticks_per_second() as f64)
}

async fn metrics(State(state): State<NodeHttp>) -> Response {
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&state.registry.gather(), &mut buf) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "metrics", e.to_string());
    }
    if let Some(seconds) = process_cpu_seconds() {
        buf.extend_from_slice(
            format!(
                "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
                 # TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {seconds}\n"
            )
            .as_bytes(),
        );
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], buf).into_response()
}
