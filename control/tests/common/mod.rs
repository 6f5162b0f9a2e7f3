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
        TestApi { base: format!("http://{addr}"), addr, catalog, client: reqwest::Client::new(), _dir: dir, server }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Send a request; returns (status, JSON body or Null).
    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut req = self.client.request(method.parse().unwrap(), self.url(path));
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
