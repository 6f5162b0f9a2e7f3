//! Viewers at the nearest edge: which region a viewer is in ([`client`]), which edges are up
//! ([`health`]), which edge serves a channel there ([`choice`]), and the answers built from that
//! one choice ([`steering`], [`api`]): `/play/{id}` redirects, `edgePlaybackUrl` in channel
//! answers, the steered multivariant playlist and the steering manifest.
//!
//! Data flow: edges report load to the catalog twice a second (`node/src/fleet.rs`); `node` runs
//! [`watch_edges`], which feeds those reports to this node's [`health::EdgeHealth`]; a request
//! reads the catalog replica (directory, drains, load, the region map) and the health tracker,
//! and ranks the usable edges. Every control node computes the same ranking from the same
//! catalog, so answers agree whichever node a viewer asks.

pub mod api;
pub mod choice;
pub mod client;
pub mod health;
pub mod steering;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::{HeaderMap, HeaderName};
use raft::state::regions::Cidr;
use raft::state::CatalogState;
use raft::{Catalog, NodeId};
use tokio_util::sync::CancellationToken;

use choice::Candidate;
use client::{ClientFacts, GeoLookup, RegionSource};
use health::{EdgeHealth, EdgeState};

/// The role name of edges in the node directory.
pub const EDGE_ROLE: &str = "edge";

/// How this node finds a viewer's region (from the flags).
#[derive(Clone, Default)]
pub struct RoutingConfig {
    /// `--client-region-header`: a header the operator's load balancer sets to the region.
    pub client_region_header: Option<HeaderName>,
    /// `--trusted-proxies`: peers whose region header and `X-Forwarded-For` are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// `--geoip-db`, opened.
    pub geoip: Option<Arc<dyn GeoLookup>>,
    /// Edges serve HTTPS (the node runs with TLS).
    pub https: bool,
}

/// Shared by the handlers: the config and this node's view of edge health.
#[derive(Default)]
pub struct Routing {
    pub config: RoutingConfig,
    health: Mutex<EdgeHealth>,
}

/// Where a viewer is and how that was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    pub addr: IpAddr,
    pub region: String,
    pub source: RegionSource,
}

impl Routing {
    pub fn new(config: RoutingConfig) -> Self {
        Routing { config, health: Mutex::default() }
    }

    /// Feed the edges' latest load reports to the health tracker.
    pub fn observe(&self, state: &CatalogState, now: Instant) {
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        for node in state.nodes().filter(|n| n.roles.iter().any(|r| r == EDGE_ROLE)) {
            if let Some(load) = state.load_of(node.id) {
                health.handle_report(node.id, load.at, now);
            }
        }
        health.handle_tick(now, |id| state.node(id).is_some());
    }

    /// The viewer of a request: its address and region.
    pub fn viewer(&self, state: &CatalogState, peer: Option<SocketAddr>, headers: &HeaderMap, me: NodeId) -> Viewer {
        let peer = peer.map_or(IpAddr::from([127, 0, 0, 1]), |p| p.ip());
        let forwarded = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
        let addr = client::client_addr(peer, forwarded, &self.config.trusted_proxies);
        let region_header =
            self.config.client_region_header.as_ref().and_then(|name| headers.get(name)).and_then(|v| v.to_str().ok());
        let facts = ClientFacts { peer, client: addr, region_header };
        let node_region = state.node(me).map(|n| n.region.as_str()).unwrap_or_default();
        let (region, source) = client::client_region(
            &facts,
            &self.config.trusted_proxies,
            state.region_map(),
            |r| state.region_known(r),
            self.config.geoip.as_deref(),
            node_region,
        );
        Viewer { addr, region, source }
    }

    /// The edges that may take new viewers: in the directory with the edge role and an
    /// advertised edge listener, not draining, alive for the hold time. When no edge is usable
    /// (this node just started, or every edge came back at once) the warming ones are better
    /// than none.
    pub fn candidates(&self, state: &CatalogState, now: Instant) -> Vec<Candidate> {
        let health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let scheme = if self.config.https { "https" } else { "http" };
        let mut usable = Vec::new();
        let mut warming = Vec::new();
        for node in state.nodes() {
            if !node.roles.iter().any(|r| r == EDGE_ROLE) || state.is_draining(node.id) {
                continue;
            }
            let Some(addr) = node.address("edge") else { continue };
            let candidate = Candidate {
                node_id: node.id,
                region: node.region.clone(),
                base_url: format!("{scheme}://{addr}"),
                weight: choice::spare_capacity(state.load_of(node.id)),
            };
            match health.state(node.id, now) {
                EdgeState::Usable => usable.push(candidate),
                EdgeState::Warming => warming.push(candidate),
                EdgeState::Dead => {}
            }
        }
        if usable.is_empty() {
            warming
        } else {
            usable
        }
    }

    /// The edges for a viewer of `channel`, best first.
    pub fn rank(&self, state: &CatalogState, channel: &str, viewer: &Viewer, now: Instant) -> Vec<Candidate> {
        choice::rank(channel, &viewer.region, state.region_map(), &self.candidates(state, now))
    }

    /// The headers the answer depends on, for `Vary`: the proxy headers count only when some
    /// proxy is trusted.
    pub fn vary(&self) -> Option<String> {
        if self.config.trusted_proxies.is_empty() {
            return None;
        }
        let mut vary = String::from("X-Forwarded-For");
        if let Some(name) = &self.config.client_region_header {
            vary.push_str(", ");
            vary.push_str(name.as_str());
        }
        Some(vary)
    }
}

/// Feed the catalog's load reports to `routing` every [`health::OBSERVE_EVERY`] until `stop`.
pub async fn watch_edges(routing: Arc<Routing>, catalog: Catalog, stop: CancellationToken) {
    let mut tick = tokio::time::interval(health::OBSERVE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => catalog.read(|s| routing.observe(s, Instant::now())),
        }
    }
}
