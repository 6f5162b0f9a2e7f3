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
use raft::state::recordings::RecordingStatus;
use raft::state::CatalogState;
use raft::{Catalog, Command, LiveState, NodeId, ViewerSample};

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
        self.catalog.read(|s| resolve_origins(s, channel, me, self.local_origin, self.tls))
    }

    fn recording_origins(&self, recording: &str) -> Vec<Origin> {
        let me = self.catalog.node_id();
        let holder = self.catalog.read(|s| {
            let r = s.recording(recording).filter(|r| r.is_published() && r.status == RecordingStatus::Ready)?;
            if r.node_id == me {
                return self.local_origin.map(|addr| Origin { addr, tls: self.tls, verify_tls: false, shield: false });
            }
            let addr = listener(s, r.node_id, "http")?;
            Some(Origin { addr, tls: self.tls, verify_tls: true, shield: false })
        });
        holder.into_iter().collect()
    }
}

/// The origins of a live channel, best first. When the channel is placed on origin nodes
/// ([`crate::placement`]), those, primary first then standby (the edge fails over along the
/// list), then the ingest node if it packages with the origin role too. Otherwise, as on an
/// all-in-one node, the node that ingests (and so packages) it; among several such candidates,
/// the ones not draining come first, least loaded first, and draining ones are kept only when
/// no other origin is left, so that the viewers of a draining node's channels are never cut off.
pub fn resolve_origins(
    s: &CatalogState,
    channel: &str,
    me: NodeId,
    local_origin: Option<SocketAddr>,
    tls: bool,
) -> Vec<Origin> {
    let Some(channel) = s.channel(channel).filter(|c| c.live_state == LiveState::Live) else { return Vec::new() };
    let origin_of = |node: NodeId| -> Option<Origin> {
        if node == me {
            return Some(Origin { addr: local_origin?, tls, verify_tls: false, shield: false });
        }
        let addr = listener(s, node, "http")?;
        Some(Origin { addr, tls, verify_tls: true, shield: false })
    };
    if let Some(placement) = crate::placement::place(s, &channel.id).filter(|p| !p.origins.is_empty()) {
        let ingest_packages = s.node(placement.ingest).is_some_and(|n| n.roles.iter().any(|r| r == "origin"));
        let origins_region = s.node(placement.origins[0]).map(|n| n.region.clone());
        let mut nodes = placement.origins;
        if ingest_packages && !nodes.contains(&placement.ingest) {
            nodes.push(placement.ingest);
        }
        let mut origins: Vec<Origin> = nodes.into_iter().filter_map(origin_of).collect();
        // Outside the origins' region, ask the region's shield edge first (unless this is it);
        // the origins stay behind it in the list, for when the shield fails.
        let my_region = s.node(me).map(|n| n.region.clone());
        if let Some(region) = my_region.filter(|r| Some(r) != origins_region.as_ref()) {
            let shield = crate::placement::shield(s, &channel.id, &region).filter(|&n| n != me);
            if let Some(addr) = shield.and_then(|n| listener(s, n, "edge")) {
                origins.insert(0, Origin { addr, tls, verify_tls: true, shield: true });
            }
        }
        return origins;
    }
    let packager = channel.current_session_id.as_deref().and_then(|id| s.session(id)).and_then(|s| s.ingest_node);
    // Live without a packaging node recorded (started without ingest): this node's own origin.
    let candidates: Vec<NodeId> = packager.into_iter().collect();
    if candidates.is_empty() {
        return local_origin.map(|addr| Origin { addr, tls, verify_tls: false, shield: false }).into_iter().collect();
    }
    let ranked: Vec<(bool, u32, u32, Origin)> = candidates
        .into_iter()
        .filter_map(|node| {
            let origin = origin_of(node)?;
            let load = s.load_of(node);
            let (streams, cpu) = load.map_or((0, 0), |l| (l.streams, l.cpu_permille));
            Some((s.is_draining(node), streams, cpu, origin))
        })
        .collect();
    rank_origins(ranked)
}

/// The advertised address of `node`'s listener `name` (`http`, `edge`).
fn listener(s: &CatalogState, node: NodeId, name: &str) -> Option<SocketAddr> {
    s.node(node)?.address(name)?.parse::<SocketAddr>().ok()
}

/// Orders `(draining, streams, cpu per mille, origin)` candidates: not draining first, then by
/// load; draining ones are dropped unless nothing else is left.
fn rank_origins(mut ranked: Vec<(bool, u32, u32, Origin)>) -> Vec<Origin> {
    ranked.sort_by_key(|(draining, streams, cpu, _)| (*draining, *streams, *cpu));
    if ranked.iter().any(|(draining, ..)| !draining) {
        ranked.retain(|(draining, ..)| !draining);
    }
    ranked.into_iter().map(|(.., origin)| origin).collect()
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
        viewer_window: config.viewer_window,
        body_dir: Some(config.data_dir.join(EDGE_BODY_DIR)),
        ..EdgeConfig::default()
    }
}

/// Under the data directory: the files of the edge's large cached bodies. They have no names
/// (`O_TMPFILE`), so the directory stays empty and nothing is left behind by a crash.
pub const EDGE_BODY_DIR: &str = "edge-bodies";

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
    load: &crate::fleet::LoadGauges,
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
    let mut edge_config = edge_config(config);
    if let Some(dir) = &edge_config.body_dir {
        if let Err(error) = std::fs::create_dir_all(dir) {
            // The bodies go to memfds instead: slower to send, nothing lost.
            tracing::warn!(%error, dir = %dir.display(), "edge: no body directory; keeping bodies in memfds");
            edge_config.body_dir = None;
        }
    }
    let mut edge = Edge::new(edge_config, resolver, registry)?;
    if let Some(tls) = &config.tls {
        edge = edge.with_tls(&tls.cert, &tls.key)?;
    }
    let storage = edge.storage();
    let _ = load.edge_connections.set(edge.connections());
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
        let counts = viewers.counts(Instant::now());
        let mut watches = viewers.take_watches();
        for (channel_id, count) in counts {
            // Only channels the catalog knows: a report for anything else would be refused anyway.
            if !catalog.read(|s| s.channel(&channel_id).is_some()) {
                continue;
            }
            let watched_seconds = watches.remove(&channel_id).unwrap_or_default();
            let sample = ViewerSample { channel_id, node_id, viewers: count, at: raft::now_millis(), watched_seconds };
            let channel = sample.channel_id.clone();
            if let Err(error) = catalog.propose(Command::ReportViewers(sample)).await {
                tracing::debug!(%error, channel, "viewer report not accepted");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::{Channel, NodeInfo, NodeLoad, StreamSession, User};

    fn origin(port: u16) -> Origin {
        Origin { addr: SocketAddr::from(([10, 0, 0, 1], port)), tls: false, verify_tls: true, shield: false }
    }

    #[test]
    fn draining_origins_are_chosen_only_when_nothing_else_is_left() {
        let ranked =
            rank_origins(vec![(true, 0, 0, origin(1)), (false, 5, 100, origin(2)), (false, 1, 900, origin(3))]);
        assert_eq!(ranked, [origin(3), origin(2)], "least loaded first, the draining one left out");
        assert_eq!(rank_origins(vec![(true, 9, 9, origin(1))]), [origin(1)], "never cut viewers off");
        assert!(rank_origins(vec![]).is_empty());
    }

    /// A catalog replica where node 2 (at 10.0.0.2:8080) packages live channel `c1`.
    fn replica() -> CatalogState {
        let mut s = CatalogState::default();
        let node = |id: u64| NodeInfo {
            id,
            region: "eu".into(),
            roles: vec!["origin".into()],
            addresses: vec![("http".into(), format!("10.0.0.{id}:8080"))],
            load: NodeLoad::default(),
            updated_at: 1,
        };
        let user = User {
            id: "u1".into(),
            display_name: "U".into(),
            email: "u@example.com".into(),
            roles: vec![],
            password_hash: None,
            created_at: 1,
        };
        let channel = Channel {
            id: "c1".into(),
            owner_id: "u1".into(),
            title: "C".into(),
            category: None,
            tags: vec![],
            stream_key_hash: "k".into(),
            live_state: LiveState::Offline,
            current_session_id: None,
            moderators: vec![],
            created_at: 1,
            updated_at: 1,
        };
        let session = StreamSession {
            id: "s1".into(),
            channel_id: "c1".into(),
            started_at: 10,
            ended_at: None,
            renditions: vec![],
            peak_concurrent: 0,
            ingest_node: Some(2),
        };
        let commands = [
            Command::UpsertNode(node(1)),
            Command::UpsertNode(node(2)),
            Command::CreateUser(user),
            Command::CreateChannel(channel),
            Command::StartSession(session),
        ];
        for (i, command) in commands.into_iter().enumerate() {
            s.apply(i as u64 + 1, &command).0.unwrap();
        }
        s
    }

    #[test]
    fn the_packaging_node_is_the_origin_and_draining_it_keeps_viewers_playing() {
        let mut s = replica();
        let remote = SocketAddr::from(([10, 0, 0, 2], 8080));
        let loopback = SocketAddr::from(([127, 0, 0, 1], 8080));
        let local = Some(loopback);
        assert_eq!(
            resolve_origins(&s, "c1", 1, local, false),
            [Origin { addr: remote, tls: false, verify_tls: true, shield: false }]
        );
        // On the packaging node itself: its own origin, on loopback.
        assert_eq!(resolve_origins(&s, "c1", 2, local, false)[0].addr, loopback);
        assert!(resolve_origins(&s, "nope", 1, local, false).is_empty());

        s.apply(9, &Command::SetDraining { node_id: 2, draining: true }).0.unwrap();
        assert!(s.is_draining(2));
        assert_eq!(resolve_origins(&s, "c1", 1, local, false)[0].addr, remote, "the only origin stays chosen");
    }
}
