//! The node's own HTTP endpoints: cluster status, health, metrics.
//!
//! `GET /api/cluster` and `DELETE /api/cluster/nodes/{id}` are for admins; in development mode a
//! request from loopback without a token counts as an admin (so local curl works as documented).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// The storage component of `/healthz`.
    pub storage: Arc<StorageProbe>,
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
    let storage = state.storage.check().await;
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

/// The storage check of `/healthz`: the data dir's disk is writable and not full. The probe
/// writes and syncs a file, so it runs at most once per interval and calls in between get its
/// last result: `/healthz` is unauthenticated, and a sync per call would let anyone who reaches
/// it keep the disk busy (and health checkers poll it often anyway).
pub struct StorageProbe {
    data_dir: PathBuf,
    interval: Duration,
    /// When the last probe finished, and its result. Held across a probe, so that concurrent
    /// calls wait for that one probe instead of starting their own.
    last: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
    probes: AtomicU64,
}

impl StorageProbe {
    /// How long a probe's result is reused.
    pub const INTERVAL: Duration = Duration::from_secs(1);

    pub fn new(data_dir: PathBuf) -> Self {
        Self::with_interval(data_dir, Self::INTERVAL)
    }

    pub fn with_interval(data_dir: PathBuf, interval: Duration) -> Self {
        StorageProbe { data_dir, interval, last: tokio::sync::Mutex::new(None), probes: AtomicU64::new(0) }
    }

    /// The storage's health: the last probe's result if it is recent, else a new probe's.
    pub async fn check(&self) -> Result<(), String> {
        let mut last = self.last.lock().await;
        if let Some((at, result)) = &*last {
            if at.elapsed() < self.interval {
                return result.clone();
            }
        }
        self.probes.fetch_add(1, Ordering::Relaxed);
        let data_dir = self.data_dir.clone();
        let result =
            tokio::task::spawn_blocking(move || probe_storage(&data_dir)).await.unwrap_or_else(|e| Err(e.to_string()));
        *last = Some((Instant::now(), result.clone()));
        result
    }

    /// Probes run so far.
    pub fn probes(&self) -> u64 {
        self.probes.load(Ordering::Relaxed)
    }
}

/// Write and sync a small file in the data dir: the disk is writable and not full.
fn probe_storage(data_dir: &std::path::Path) -> Result<(), String> {
    use std::io::Write;
    let path = data_dir.join(".healthz");
    let mut file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(b"ok").and_then(|()| file.sync_all()).map_err(|e| format!("{}: {e}", path.display()))
}

async fn metrics(State(state): State<NodeHttp>) -> Response {
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&state.registry.gather(), &mut buf) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "metrics", e.to_string());
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], buf).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_healthz_calls_probe_the_disk_once_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(raft::metrics::CatalogMetrics::unregistered());
        let catalog = Catalog::start_with_metrics(raft::CatalogConfig::local(&dir.path().join("catalog")), metrics)
            .await
            .unwrap();
        catalog.wait_ready(Duration::from_secs(30)).await.unwrap();
        // An interval no test run outlasts: every call below falls in the first one.
        let storage = Arc::new(StorageProbe::with_interval(dir.path().to_owned(), Duration::from_secs(3600)));
        let state = NodeHttp {
            catalog: catalog.clone(),
            registry: Registry::new(),
            mode: Mode::Development,
            storage: storage.clone(),
            listeners: Arc::new(Vec::new()),
            transcode: Arc::new(json!({"status": "off"})),
            edge_cache: None,
        };
        let app = router(state);
        let calls = (0..100).map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                let resp = app.oneshot(Request::get("/healthz").body(Body::empty()).unwrap()).await.unwrap();
                let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
                serde_json::from_slice::<serde_json::Value>(&body).unwrap()
            })
        });
        for call in calls.collect::<Vec<_>>() {
            let body = call.await.unwrap();
            assert_eq!(body["components"]["storage"]["status"], "ok", "{body}");
        }
        assert_eq!(storage.probes(), 1);
        assert!(dir.path().join(".healthz").exists());
        catalog.shutdown().await;

        // A zero interval probes on every call; a failing disk is reported (and reused as well).
        let every = StorageProbe::with_interval(dir.path().to_owned(), Duration::ZERO);
        for _ in 0..3 {
            every.check().await.unwrap();
        }
        assert_eq!(every.probes(), 3);
        let missing = StorageProbe::with_interval(dir.path().join("gone"), Duration::from_secs(3600));
        assert!(missing.check().await.unwrap_err().contains("gone"));
        assert!(missing.check().await.is_err());
        assert_eq!(missing.probes(), 1);
    }
}
