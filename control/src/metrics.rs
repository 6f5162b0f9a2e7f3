//! Prometheus metrics of the API: request counts and latency per route template, plus the chat
//! gauges and counters the WebSocket chat updates.
//!
//! Routes are labelled with the matched template (`/api/users/{id}`), never the raw path, so the
//! number of series stays bounded whatever clients send; requests that match no route share the
//! label `unmatched`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// The API's collectors. Cheap to share (`Arc` in [`crate::ApiState`]).
#[derive(Clone, Debug)]
pub struct ApiMetrics {
    /// `bitriver_http_requests_total{route,method,status}`
    pub http_requests: IntCounterVec,
    /// `bitriver_http_request_duration_seconds{route}`
    pub http_duration: HistogramVec,
    /// `bitriver_ws_connections`: open chat WebSockets.
    pub ws_connections: IntGauge,
    /// `bitriver_chat_messages_total{direction="in"}`: messages received from clients.
    pub chat_messages_in: IntCounter,
    /// `bitriver_chat_messages_total{direction="out"}`: messages sent to clients.
    pub chat_messages_out: IntCounter,
    /// `bitriver_chat_coalesced_writes_total`: socket writes that carried several frames of one
    /// fan-out tick.
    pub chat_coalesced_writes: IntCounter,
    /// `bitriver_chat_direct_writes_total`: ticks the fan-out wrote straight into a socket's
    /// kernel buffer, without waking the socket's task.
    pub chat_direct_writes: IntCounter,
}

impl ApiMetrics {
    /// Collectors registered on `registry` (the node's, served at `/metrics`).
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let http_requests = IntCounterVec::new(
            Opts::new("bitriver_http_requests_total", "API requests by route template, method and status"),
            &["route", "method", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new("bitriver_http_request_duration_seconds", "API request latency by route template")
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["route"],
        )?;
        let ws_connections = IntGauge::new("bitriver_ws_connections", "Open chat WebSocket connections")?;
        let chat_messages = IntCounterVec::new(
            Opts::new("bitriver_chat_messages_total", "Chat messages received (in) and delivered (out)"),
            &["direction"],
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(ws_connections.clone()))?;
        let chat_coalesced_writes = IntCounter::new(
            "bitriver_chat_coalesced_writes_total",
            "Chat socket writes that carried several frames of one fan-out tick",
        )?;
        registry.register(Box::new(chat_messages.clone()))?;
        registry.register(Box::new(chat_coalesced_writes.clone()))?;
        let chat_direct_writes = IntCounter::new(
            "bitriver_chat_direct_writes_total",
            "Chat fan-out ticks written straight into a socket's kernel buffer, without waking its task",
        )?;
        registry.register(Box::new(chat_direct_writes.clone()))?;
        Ok(ApiMetrics {
            http_requests,
            http_duration,
            ws_connections,
            chat_messages_in: chat_messages.with_label_values(&["in"]),
            chat_messages_out: chat_messages.with_label_values(&["out"]),
            chat_coalesced_writes,
            chat_direct_writes,
        })
    }

    /// Collectors on a private registry (tests, or when the node's registry refused them).
    pub fn unregistered() -> Self {
        // A fresh registry has no names yet, so registration cannot collide.
        Self::register(&Registry::new()).expect("fresh registry accepts the API metrics")
    }
}

/// Middleware (see [`crate::router`]).
pub(crate) async fn track(State(metrics): State<std::sync::Arc<ApiMetrics>>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_owned();
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics.http_requests.with_label_values(&[route.as_str(), method, status.as_str()]).inc();
    metrics.http_duration.with_label_values(&[route.as_str()]).observe(started.elapsed().as_secs_f64());
    response
}

/// Standard methods by name; anything else shares one label (clients choose methods freely).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
