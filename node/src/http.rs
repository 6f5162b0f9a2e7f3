//! The node's own HTTP endpoints: cluster status, health, metrics.
//!
//! `GET /api/cluster`, `DELETE /api/cluster/nodes/{id}` and `POST /api/cluster/nodes/{id}/drain`
//! (`/undrain`) are for admins; in development mode a
//! request from loopback to a loopback host without a token counts as an admin (so local curl
//! works as documented; see `control::same_origin`). Browsers' cross-site writes are refused, and
//! a node removal is written to the audit log like the API's writes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use prometheus::{Encoder, Registry, TextEncoder};
use raft::Catalog;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Mode, TlsFiles};

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct NodeHttp {
    /// Which browsers' pages may send writes (the same policy as the API's).
    pub origins: Arc<control::same_origin::OriginPolicy>,
    pub catalog: Catalog,
    pub registry: Registry,
    pub mode: Mode,
    /// The storage component of `/healthz`.
    pub storage: Arc<StorageProbe>,
    /// Listeners this node runs, by name, for `/healthz`.
    pub listeners: Arc<Vec<(String, SocketAddr)>>,
    /// The transcode component of `/healthz`: on or off, ladder, encoders found.
    pub transcode: Arc<serde_json::Value>,
    /// The copy of recordings in object storage, if configured, for `/healthz`.
    pub objects: Option<recordings::Mirror>,
    /// The edge cache, when the node runs the edge role, for `/healthz`.
    pub edge_cache: Option<&'static cache::MokaStorage>,
    /// The streams this node carries, for the `drain` component of `/healthz`.
    pub load: Arc<crate::fleet::LoadGauges>,
}

pub fn router(state: NodeHttp) -> Router {
    Router::new()
        .route("/api/cluster", get(cluster_status))
        .route("/api/cluster/nodes/{id}", delete(remove_node))
        .route("/api/cluster/nodes/{id}/drain", post(drain_node))
        .route("/api/cluster/nodes/{id}/undrain", post(undrain_node))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(from_fn_with_state(state.origins.clone(), control::same_origin::guard))
        .with_state(state)
}

/// A JSON error in the API's shape: `{"error":{"code","message"}}`.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": {"code": code, "message": message.into()}}))).into_response()
}

/// Who is calling, for the audit log: a user id, `dev-admin`, `anonymous` or `invalid-token`;
/// and whether they may use admin endpoints.
fn caller(state: &NodeHttp, headers: &HeaderMap, uri: &Uri, peer: SocketAddr) -> (String, bool) {
    // The bearer header or the browser's session cookie (the Control Center shows cluster status).
    let token = control::auth::presented_token(headers);
    match token.as_deref() {
        None if state.mode == Mode::Development && control::same_origin::loopback_request(Some(peer), headers, uri) => {
            ("dev-admin".to_owned(), true)
        }
        None => ("anonymous".to_owned(), false),
        Some(token) => {
            let hash = hex_sha256(token.trim().as_bytes());
            let now = raft::now_millis();
            let user = state.catalog.read(|s| {
                s.auth_session(&hash)
                    .filter(|session| session.expires_at > now)
                    .and_then(|session| s.user(&session.user_id))
                    .map(|user| (user.id.clone(), user.roles.iter().any(|r| r == "admin")))
            });
            user.unwrap_or_else(|| ("invalid-token".to_owned(), false))
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
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if !caller(&state, &headers, &uri, peer).1 {
        return forbidden();
    }
    let status = state.catalog.status().await;
    let mut body = serde_json::to_value(&status).unwrap_or_default();
    // The directory side of each member: advertised listeners, load, drain and health.
    let now = raft::now_millis();
    let leader_applied = status
        .leader_id
        .and_then(|leader| status.members.iter().find(|m| m.node_id == leader))
        .and_then(|m| m.last_applied);
    if let Some(members) = body["members"].as_array_mut() {
        for (member, m) in members.iter_mut().zip(&status.members) {
            let extra = state.catalog.read(|s| {
                let listeners: serde_json::Map<String, serde_json::Value> = s
                    .node(m.node_id)
                    .map(|n| n.addresses.iter().map(|(name, addr)| (name.clone(), json!(addr))).collect())
                    .unwrap_or_default();
                let load = s.load_of(m.node_id).cloned();
                (listeners, load, s.is_draining(m.node_id))
            });
            let (listeners, load, draining) = extra;
            let health = member_health(m, leader_applied, load.as_ref(), now);
            member["listeners"] = json!(listeners);
            member["load"] = json!(load);
            member["draining"] = json!(draining);
            member["health"] = json!(health);
        }
    }
    Json(body).into_response()
}

/// How a member looks from here: `ok` when it replicates and reported its load recently,
/// `stale` when its load report is older than a few report periods (or it never sent one),
/// `lagging` when its log is far behind the leader's, `unknown` when replication progress is not
/// known (this node is not the leader and could not ask it).
fn member_health(
    member: &raft::MemberStatus,
    leader_applied: Option<u64>,
    load: Option<&raft::LoadReport>,
    now: raft::UnixMillis,
) -> &'static str {
    const LAG_ENTRIES: u64 = 1_000;
    let fresh = load.is_some_and(|l| now - l.at < raft::load::REPORT_STALE_AFTER_MS);
    match (member.last_applied, leader_applied) {
        (Some(applied), Some(leader)) if leader.saturating_sub(applied) > LAG_ENTRIES => "lagging",
        (None, _) if !fresh => "unknown",
        _ if !fresh => "stale",
        _ => "ok",
    }
}

async fn drain_node(
    State(state): State<NodeHttp>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    set_draining(state, peer, uri, headers, id, true).await
}

async fn undrain_node(
    State(state): State<NodeHttp>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    set_draining(state, peer, uri, headers, id, false).await
}

/// Drain or undrain a node (admin); written to the audit log like a removal.
async fn set_draining(
    state: NodeHttp,
    peer: SocketAddr,
    uri: Uri,
    headers: HeaderMap,
    id: String,
    draining: bool,
) -> Response {
    let (who, admin) = caller(&state, &headers, &uri, peer);
    let response = if !admin {
        forbidden()
    } else if let Ok(node_id) = id.parse::<u64>() {
        match state.catalog.propose(raft::Command::SetDraining { node_id, draining }).await {
            Ok(_) => Json(json!({"nodeId": node_id, "draining": draining})).into_response(),
            Err(raft::ProposeError::Rejected(e)) => error(StatusCode::NOT_FOUND, "node_not_found", e.to_string()),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "catalog_unavailable", e.to_string()),
        }
    } else {
        error(StatusCode::BAD_REQUEST, "invalid_node_id", format!("{id:?} is not a node id"))
    };
    control::audit::record(&who, &Method::POST, uri.path(), response.status().as_u16(), Some(peer));
    response
}

async fn remove_node(
    State(state): State<NodeHttp>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (who, admin) = caller(&state, &headers, &uri, peer);
    let response = if !admin {
        forbidden()
    } else if let Ok(node_id) = id.parse::<u64>() {
        match state.catalog.remove_node(node_id).await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => error(StatusCode::CONFLICT, "remove_failed", e.to_string()),
        }
    } else {
        error(StatusCode::BAD_REQUEST, "invalid_node_id", format!("{id:?} is not a node id"))
    };
    control::audit::record(&who, &Method::DELETE, uri.path(), response.status().as_u16(), Some(peer));
    response
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
    let drain = crate::fleet::drain_health(&state.catalog, &state.load);
    let overall = match (&drain, healthy) {
        (_, false) => "error",
        (Some((draining, _)), true) => *draining,
        (None, true) => "ok",
    };
    let body = json!({
        "status": overall,
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
    if let Some((_, drain)) = drain {
        body["components"]["drain"] = drain;
    }
    if let Some(storage) = state.edge_cache {
        body["components"]["edge"] = json!({
            "status": "ok",
            "cacheBytes": storage.weighted_bytes(),
            "objects": storage.object_count(),
            "filling": storage.filling_count(),
        });
    }
    if let Some(mirror) = &state.objects {
        // Not a reason to take the node out of service: uploads wait in the spool.
        let status = mirror.status();
        let word = match (status.reachable, status.spool_full) {
            (_, true) => "error",
            (false, false) => "degraded",
            (true, false) => "ok",
        };
        let mut component = json!(status);
        component["status"] = json!(word);
        body["components"]["objects"] = component;
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

/// Sends small writes at once on an accepted connection. With Nagle's algorithm a chat tick (one
/// small write) waits while the previous one is unacknowledged, i.e. for the client's delayed
/// acknowledgement: up to 200 ms on Linux.
pub(crate) fn no_delay(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
}

/// Serves `app` on `listener` (HTTPS with `tls`) until `stop` is cancelled; plain HTTP then lets
/// requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsFiles>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use axum::serve::ListenerExt as _;
    let make_service = app.into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        None => axum::serve(listener.tap_io(no_delay), make_service)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .context("http server"),
        Some(files) => crate::tls::serve_https(listener, make_service, &files, stop).await,
    }
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
            origins: Arc::new(control::same_origin::OriginPolicy::default()),
            listeners: Arc::new(Vec::new()),
            transcode: Arc::new(json!({"status": "off"})),
            objects: None,
            edge_cache: None,
            load: Arc::default(),
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
