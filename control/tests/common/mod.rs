//! Test harness: a real one-node catalog (RocksDB in a temp dir, QUIC on loopback) behind the
//! real API router, served over HTTP on 127.0.0.1:0.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use control::{ApiState, Mode};
use raft::{Catalog, CatalogConfig};
use serde_json::Value;

pub struct TestApi {
    pub base: String,
    pub addr: SocketAddr,
    pub catalog: Catalog,
    pub client: reqwest::Client,
    _dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

impl TestApi {
    /// Start in development mode (loopback without a token acts as admin).
    pub async fn start() -> Self {
        Self::start_with(Mode::Development, |s| s).await
    }

    /// Start with a mode and a chance to adjust the state (limits, ...) before serving.
    pub async fn start_with(mode: Mode, adjust: impl FnOnce(ApiState) -> ApiState) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(raft::metrics::CatalogMetrics::unregistered());
        let catalog = Catalog::start_with_metrics(CatalogConfig::local(dir.path()), metrics).await.unwrap();
        catalog.wait_ready(Duration::from_secs(10)).await.unwrap();
        let state = adjust(ApiState::new(catalog.clone(), mode));
        let app = control::router(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap();
        });
        // Redirects are answers to check (`/play`), not to follow.
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        TestApi { base: format!("http://{addr}"), addr, catalog, client, _dir: dir, server }
    }

    /// Makes this catalog's node an ingest node with an RTMP address and keeps its load reports
    /// fresh (what a running node's fleet task does), so placement answers name it. Stops when
    /// the handle is dropped or aborted.
    pub async fn report_as_ingest_node(&self) -> tokio::task::JoinHandle<()> {
        let catalog = self.catalog.clone();
        let id = catalog.node_id();
        // The catalog publishes its own directory entry (no roles) once at start; ours must land
        // after it, or that one would take the ingest role away again.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while catalog.read(|s| s.node(id).is_none()) {
            assert!(std::time::Instant::now() < deadline, "the catalog never registered itself");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let node = raft::NodeInfo {
            id,
            region: "local".into(),
            roles: vec!["ingest".into()],
            addresses: vec![("rtmp".into(), "127.0.0.1:1935".into())],
            load: raft::NodeLoad::default(),
            updated_at: raft::now_millis(),
        };
        catalog.propose(raft::Command::UpsertNode(node)).await.unwrap();
        let report = move || {
            raft::Command::ReportLoad(raft::LoadReport { node_id: id, at: raft::now_millis(), ..Default::default() })
        };
        // The first one before returning, so the node is ready from the first call on.
        catalog.propose(report()).await.unwrap();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let _ = catalog.propose(report()).await;
            }
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Send a request; returns (status, JSON body or Null).
    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        self.call_with(method, path, &[], token, body).await
    }

    /// [`TestApi::call`] with extra request headers (`Origin`, `Host`, ...).
    pub async fn call_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.client.request(method.parse().unwrap(), self.url(path));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.call("GET", path, token, None).await
    }
    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.call("POST", path, token, Some(body)).await
    }
}

impl Drop for TestApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TestApi {
    /// Insert a user and a live login session straight into the catalog (no argon2 work).
    /// `id` is used as given; returns (id, bearer token).
    pub async fn user_with(
        &self,
        id: &str,
        display_name: &str,
        roles: &[&str],
        password_hash: Option<&str>,
    ) -> (String, String) {
        let now = raft::now_millis();
        self.catalog
            .propose(raft::Command::CreateUser(raft::User {
                id: id.to_owned(),
                display_name: display_name.to_owned(),
                email: format!("{id}@example.com"),
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                password_hash: password_hash.map(str::to_owned),
                created_at: now,
            }))
            .await
            .unwrap();
        let token = control::auth::new_token();
        self.catalog
            .propose(raft::Command::CreateAuthSession(raft::AuthSession {
                token_hash: control::auth::token_hash(&token),
                user_id: id.to_owned(),
                created_at: now,
                expires_at: now + 3_600_000,
            }))
            .await
            .unwrap();
        (id.to_owned(), token)
    }

    /// A channel `id` owned by `owner` with `moderators`, straight into the catalog (its stream
    /// key hash is that of `id`).
    pub async fn channel(&self, id: &str, owner: &str, moderators: &[&str]) {
        let now = raft::now_millis();
        self.catalog
            .propose(raft::Command::CreateChannel(raft::Channel {
                id: id.into(),
                owner_id: owner.into(),
                title: format!("{id} title"),
                category: None,
                tags: vec![],
                stream_key_hash: control::auth::token_hash(id),
                live_state: raft::LiveState::Offline,
                current_session_id: None,
                moderators: moderators.iter().map(|m| m.to_string()).collect(),
                created_at: now,
                updated_at: now,
            }))
            .await
            .unwrap();
    }

    /// A ready recording `id` of `channel` lasting `seconds`, held by this node, straight into
    /// the catalog as a recorder would report it.
    #[allow(dead_code)]
    pub async fn recording(&self, id: &str, channel: &str, seconds: u64) -> String {
        use raft::state::recordings::{Recording, RecordingKind, RecordingStatus};
        let owner = self.catalog.read(|s| s.channel(channel).map(|c| c.owner_id.clone())).unwrap_or_default();
        let recording = Recording {
            id: id.into(),
            channel_id: channel.into(),
            owner_id: owner,
            title: "Fixture".into(),
            kind: RecordingKind::Broadcast,
            status: RecordingStatus::Ready,
            failure: None,
            session_ids: vec!["s".into()],
            source_id: None,
            clip_start_ms: None,
            clip_end_ms: None,
            node_id: self.catalog.node_id(),
            renditions: vec!["source".into()],
            duration_ms: seconds * 1000,
            size_bytes: 1_000_000,
            thumbnails: 0,
            created_at: raft::now_millis(),
            ended_at: Some(raft::now_millis()),
            published_at: None,
        };
        self.catalog.propose(raft::Command::PutRecording(Box::new(recording))).await.unwrap();
        id.into()
    }

    /// A user named `name` (id derived from it plus random bits) with `roles` and a token.
    pub async fn user(&self, name: &str, roles: &[&str]) -> (String, String) {
        let id = format!("{}-{}", name.to_lowercase().replace(' ', "-"), hex::encode(rand::random::<[u8; 4]>()));
        self.user_with(&id, name, roles, None).await
    }
}

/// `error.field` of an API error body.
pub fn field(body: &Value) -> &str {
    body["error"]["field"].as_str().unwrap_or_default()
}

/// `error.code` of an API error body.
pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}
