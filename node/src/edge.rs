//! The edge role's wiring: origins from the catalog, viewer reports to the catalog, the service.
//!
//! `cache` knows nothing of the catalog: [`CatalogOrigins`] answers its [`OriginResolver`] from
//! the local replica (a channel's live session names the node that packages it, and that node's
//! directory entry its `http` address), and [`report_viewers`] turns the edge's unique-viewer
//! counts into `Command::ReportViewers` a few times a minute.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache::{Edge, EdgeConfig, Freshness, Origin, OriginResolver, UpstreamTimeouts, ViewerCounter};
use raft::{Catalog, Command, LiveState, ViewerSample};

use crate::config::{Role, ValidatedConfig};
use crate::service::Services;

/// How often viewer counts go to the catalog.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Resolves a channel's origins from the catalog replica.
pub struct CatalogOrigins {
    catalog: Catalog,
    /// This node's own origin (its HTTP listener on loopback), if it runs the origin role.
    local_origin: Option<SocketAddr>,
    tls: bool,
}

impl CatalogOrigins {
    pub fn new(catalog: Catalog, local_origin: Option<SocketAddr>, tls: bool) -> Self {
        CatalogOrigins { catalog, local_origin, tls }
    }
}

impl OriginResolver for CatalogOrigins {
    fn origins(&self, channel: &str) -> Vec<Origin> {
        let me = self.catalog.node_id();
        // `None`: not live. `Some(None)`: live, packaged here (or started without ingest).
        let packager = self.catalog.read(|s| {
            let channel = s.channel(channel).filter(|c| c.live_state == LiveState::Live)?;
            let node = channel.current_session_id.as_deref().and_then(|id| s.session(id)).and_then(|s| s.ingest_node);
            let remote = node.filter(|n| *n != me).map(|n| {
                s.node(n)
                    .and_then(|info| info.addresses.iter().find(|(name, _)| name == "http"))
                    .and_then(|(_, addr)| addr.parse::<SocketAddr>().ok())
            });
            Some(remote)
        });
        match packager {
            None => Vec::new(),
            Some(Some(Some(addr))) => vec![Origin { addr, tls: self.tls, verify_tls: true }],
            // The packaging node has no usable address in the directory yet.
            Some(Some(None)) => Vec::new(),
            Some(None) => {
                self.local_origin.map(|addr| Origin { addr, tls: self.tls, verify_tls: false }).into_iter().collect()
            }
        }
    }
}

/// Edge settings from the node config: the byte budget, plus timeouts and freshness derived
/// from the LL-HLS targets this cluster packages with.
pub fn edge_config(config: &ValidatedConfig) -> EdgeConfig {
    // The origin holds a blocking request for up to three target durations (whole seconds).
    let target = Duration::from_secs(config.segment_target.as_secs_f64().ceil().max(1.0) as u64);
    let hold = target * 3;
    let freshness = Freshness {
        // A quarter of a part: viewers polling together share a fetch, none falls a part behind.
        playlist: (config.part_target / 4).max(Duration::from_millis(20)),
        blocking_playlist_max: target,
        ..Freshness::default()
    };
    EdgeConfig {
        cache_bytes: config.edge_cache_bytes,
        freshness,
        timeouts: UpstreamTimeouts { connect: Duration::from_secs(2), read: hold + Duration::from_secs(5) },
        ..EdgeConfig::default()
    }
}

/// How long the edge lets requests in flight finish once the node stops.
const DRAIN: Duration = Duration::from_secs(10);

/// Builds the edge and adds it to `services` as `edge`, with the viewer reports beside it.
/// Returns the cache storage, for `/healthz`.
pub fn spawn(
    services: &mut Services,
    config: &ValidatedConfig,
    listener: tokio::net::TcpListener,
    catalog: Catalog,
    http_addr: SocketAddr,
    registry: &prometheus::Registry,
) -> anyhow::Result<&'static cache::MokaStorage> {
    let addr = listener.local_addr()?;
    let local_origin = config.roles.contains(Role::Origin).then(|| {
        if http_addr.ip().is_unspecified() {
            SocketAddr::new(std::net::IpAddr::from([127, 0, 0, 1]), http_addr.port())
        } else {
            http_addr
        }
    });
    let resolver = Arc::new(CatalogOrigins::new(catalog.clone(), local_origin, config.tls.is_some()));
    let mut edge = Edge::new(edge_config(config), resolver, registry)?;
    if let Some(tls) = &config.tls {
        edge = edge.with_tls(&tls.cert, &tls.key)?;
    }
    let storage = edge.storage();
    let stop = services.stop();
    services.spawn("edge", addr, async move {
        let viewers = edge.viewers();
        // The reports stop with the edge (they never end on their own).
        tokio::select! {
            () = edge.serve(listener, stop, DRAIN) => {}
            () = report_viewers(catalog, viewers) => {}
        }
        Ok(())
    });
    Ok(storage)
}

/// Every [`REPORT_EVERY`], propose this node's unique viewers per channel to the catalog.
pub async fn report_viewers(catalog: Catalog, viewers: Arc<ViewerCounter>) {
    let mut tick = tokio::time::interval(REPORT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let node_id = catalog.node_id();
        for (channel_id, count) in viewers.counts(Instant::now()) {
            // Only channels the catalog knows: a report for anything else would be refused anyway.
            if !catalog.read(|s| s.channel(&channel_id).is_some()) {
                continue;
            }
            let sample = ViewerSample { channel_id, node_id, viewers: count, at: raft::now_millis() };
            let channel = sample.channel_id.clone();
            if let Err(error) = catalog.propose(Command::ReportViewers(sample)).await {
                tracing::debug!(%error, channel, "viewer report not accepted");
            }
        }
    }
}
