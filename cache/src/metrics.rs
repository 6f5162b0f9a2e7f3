//! The edge's Prometheus metrics, registered in the node's registry so they show on `/metrics`.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::policy::ObjectKind;

/// Counters and gauges of one edge.
#[derive(Clone)]
pub struct EdgeMetrics {
    /// `bitriver_edge_requests_total`: every request the edge answered.
    pub requests: IntCounter,
    /// `bitriver_edge_cache_hits_total`: answered from the cache (fresh, stale, or another
    /// request's fill in progress).
    pub cache_hits: IntCounter,
    /// `bitriver_edge_origin_requests_total{kind}`: requests sent to an origin.
    pub origin_requests: IntCounterVec,
    /// `bitriver_edge_upstream_requests_total{tier}`: requests sent upstream, `tier="shield"` to
    /// the region's shield edge, `tier="origin"` to an origin.
    pub upstream_requests: IntCounterVec,
    /// `bitriver_edge_origin_errors_total`: origin requests that failed (connect, timeout, broken).
    pub origin_errors: IntCounter,
    /// `bitriver_edge_origin_failovers_total`: requests retried on the channel's next origin
    /// after the one before it failed (the primary origin down: the standby answers).
    pub origin_failovers: IntCounter,
    /// `bitriver_edge_stale_served_total`: stale objects served because the origin failed.
    pub stale_served: IntCounter,
    /// `bitriver_edge_cache_bytes`: bytes of complete objects held.
    pub cache_bytes: IntGauge,
    /// `bitriver_edge_collapsed_waiters_total`: requests that waited on another request's
    /// origin fetch instead of making their own.
    pub collapsed_waiters: IntCounter,
    /// `bitriver_edge_connections`: open viewer connections.
    pub connections: IntGauge,
    /// `bitriver_edge_thread_connections{thread}`: open viewer connections per serving thread
    /// (`crate::server`): how evenly the edge spreads them.
    pub thread_connections: IntGaugeVec,
    /// `bitriver_edge_direct_sends_total{body}`: fresh hits written straight to the viewer's
    /// socket by `crate::direct`, bypassing pingora's hit path; `body="sendfile"` for bodies sent
    /// from their memfd, `body="memory"` for small ones. Tests read it to prove the fast path ran.
    pub direct_sends: IntCounterVec,
    /// `bitriver_edge_early_hits_total`: the direct sends whose request the edge read itself,
    /// before pingora (`crate::early`): plain `GET`s of fresh immutable hits on plain TCP.
    pub early_hits: IntCounter,
    /// `bitriver_edge_body_bytes_total`: response body bytes sent to viewers, on every path
    /// (pingora's and the direct one), so load tests can check their byte counts at the edge.
    pub body_bytes: IntCounter,
    /// `direct_sends` of each body label, resolved once rather than per hit.
    sent_from_file: IntCounter,
    sent_from_memory: IntCounter,
}

impl EdgeMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let direct_sends = IntCounterVec::new(
            Opts::new(
                "bitriver_edge_direct_sends_total",
                "Fresh hits sent straight to the viewer's socket, by where the body was sent from",
            ),
            &["body"],
        )?;
        // Both labels show from the start, at 0.
        let sent_from_file = direct_sends.with_label_values(&[crate::direct::SENDFILE]);
        let sent_from_memory = direct_sends.with_label_values(&[crate::direct::MEMORY]);
        let metrics = EdgeMetrics {
            requests: IntCounter::new("bitriver_edge_requests_total", "Requests answered by the edge")?,
            cache_hits: IntCounter::new("bitriver_edge_cache_hits_total", "Edge requests answered from the cache")?,
            origin_requests: IntCounterVec::new(
                Opts::new("bitriver_edge_origin_requests_total", "Requests the edge sent to origins, by object kind"),
                &["kind"],
            )?,
            upstream_requests: IntCounterVec::new(
                Opts::new(
                    "bitriver_edge_upstream_requests_total",
                    "Requests the edge sent upstream, by tier (shield, origin)",
                ),
                &["tier"],
            )?,
            origin_errors: IntCounter::new("bitriver_edge_origin_errors_total", "Failed edge requests to origins")?,
            origin_failovers: IntCounter::new(
                "bitriver_edge_origin_failovers_total",
                "Edge requests retried on the channel's next origin after one failed",
            )?,
            stale_served: IntCounter::new(
                "bitriver_edge_stale_served_total",
                "Stale objects served because the origin failed",
            )?,
            cache_bytes: IntGauge::new("bitriver_edge_cache_bytes", "Bytes of complete objects in the edge cache")?,
            collapsed_waiters: IntCounter::new(
                "bitriver_edge_collapsed_waiters_total",
                "Edge requests that waited on another request's origin fetch",
            )?,
            connections: IntGauge::new("bitriver_edge_connections", "Open viewer connections to the edge")?,
            thread_connections: IntGaugeVec::new(
                Opts::new("bitriver_edge_thread_connections", "Open viewer connections per edge serving thread"),
                &["thread"],
            )?,
            direct_sends,
            early_hits: IntCounter::new(
                "bitriver_edge_early_hits_total",
                "Fresh hits the edge read the request of and answered before pingora",
            )?,
            body_bytes: IntCounter::new(
                "bitriver_edge_body_bytes_total",
                "Response body bytes the edge sent to viewers",
            )?,
            sent_from_file,
            sent_from_memory,
        };
        registry.register(Box::new(metrics.requests.clone()))?;
        registry.register(Box::new(metrics.cache_hits.clone()))?;
        registry.register(Box::new(metrics.origin_requests.clone()))?;
        registry.register(Box::new(metrics.origin_errors.clone()))?;
        registry.register(Box::new(metrics.origin_failovers.clone()))?;
        registry.register(Box::new(metrics.upstream_requests.clone()))?;
        registry.register(Box::new(metrics.stale_served.clone()))?;
        registry.register(Box::new(metrics.cache_bytes.clone()))?;
        registry.register(Box::new(metrics.collapsed_waiters.clone()))?;
        registry.register(Box::new(metrics.connections.clone()))?;
        registry.register(Box::new(metrics.thread_connections.clone()))?;
        registry.register(Box::new(metrics.direct_sends.clone()))?;
        registry.register(Box::new(metrics.early_hits.clone()))?;
        registry.register(Box::new(metrics.body_bytes.clone()))?;
        // Every kind shows from the start, at 0.
        for kind in [ObjectKind::Playlist, ObjectKind::Part, ObjectKind::Segment, ObjectKind::Init] {
            metrics.origin_requests.with_label_values(&[kind.label()]);
        }
        Ok(metrics)
    }

    /// Count a direct send whose body went out as `body` ([`crate::direct::SENDFILE`] or
    /// [`crate::direct::MEMORY`]).
    pub(crate) fn direct_sent(&self, body: &str) {
        match body {
            crate::direct::SENDFILE => self.sent_from_file.inc(),
            crate::direct::MEMORY => self.sent_from_memory.inc(),
            other => self.direct_sends.with_label_values(&[other]).inc(),
        }
    }
}
