//! Role wiring: start the catalog, bind the listeners, serve until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use prometheus::Registry;
use raft::{Catalog, CatalogConfig, JoinConfig, RaftTuning};
use tokio::net::{TcpListener, UdpSocket};

use media::ingest::{serve_rtmp, serve_srt, IngestConfig, IngestMetrics, SrtConfig};
use media::origin::{LiveRegistry, OriginConfig, OriginMetrics, RegistryConfig};

use crate::config::{Role, ValidatedConfig};
use crate::http::{self, NodeHttp};
use crate::ingest_gate::CatalogGate;
use crate::service::Services;
pub use crate::service::Shutdown;

/// Listeners bound before [`run`] so that callers (and tests) can use port 0.
pub struct Listeners {
    pub http: TcpListener,
    /// RTMP ingest; bound when the `ingest` role is on.
    pub rtmp: Option<TcpListener>,
    /// RTMPS ingest; bound when the `ingest` role is on and TLS is configured.
    pub rtmps: Option<TcpListener>,
    /// SRT ingest (UDP); bound when the `ingest` role is on.
    pub srt: Option<UdpSocket>,
    /// The edge (LL-HLS cache); bound when the `edge` role is on.
    pub edge: Option<TcpListener>,
}

impl Listeners {
    pub async fn bind(config: &ValidatedConfig) -> anyhow::Result<Self> {
        let http = TcpListener::bind(config.addr).await.with_context(|| format!("binding --addr {}", config.addr))?;
        let (rtmp, srt) = if config.roles.contains(Role::Ingest) {
            let addr = config.rtmp_addr;
            let rtmp = TcpListener::bind(addr).await.with_context(|| format!("binding --rtmp-addr {addr}"))?;
            let addr = config.srt_addr;
            let srt = UdpSocket::bind(addr).await.with_context(|| format!("binding --srt-addr {addr}"))?;
            (Some(rtmp), Some(srt))
        } else {
            (None, None)
        };
        let rtmps = match config.rtmps_addr {
            Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| format!("binding --rtmps-addr {addr}"))?),
            None => None,
        };
        let edge = if config.roles.contains(Role::Edge) {
            let addr = config.edge_addr;
            Some(TcpListener::bind(addr).await.with_context(|| format!("binding --edge-addr {addr}"))?)
        } else {
            None
        };
        Ok(Listeners { http, rtmp, rtmps, srt, edge })
    }

    /// `(name, bound address)` of each listener, as the node directory names them.
    fn bound(&self) -> std::io::Result<Vec<(&'static str, SocketAddr)>> {
        let mut bound = vec![("http", self.http.local_addr()?)];
        if let Some(rtmp) = &self.rtmp {
            bound.push(("rtmp", rtmp.local_addr()?));
        }
        if let Some(rtmps) = &self.rtmps {
            bound.push(("rtmps", rtmps.local_addr()?));
        }
        if let Some(srt) = &self.srt {
            bound.push(("srt", srt.local_addr()?));
        }
        if let Some(edge) = &self.edge {
            bound.push(("edge", edge.local_addr()?));
        }
        Ok(bound)
    }
}

fn catalog_config(config: &ValidatedConfig, advertised: &crate::advertise::Advertised) -> CatalogConfig {
    let advertise = match advertised.cluster {
        Some(addr) => Some(addr.to_string()),
        None if config.cluster_advertise.port() == 0 => None,
        None => Some(config.cluster_advertise.to_string()),
    };
    CatalogConfig {
        data_dir: config.data_dir.clone(),
        node_id: config.node_id,
        cluster_bind: config.cluster_addr,
        cluster_advertise: advertise,
        join: config.join.as_ref().map(|j| JoinConfig { addr: j.peer.to_string(), token: j.token.expose().to_owned() }),
        voters: config.voters,
        region: config.region.clone(),
        // The directory lists transcode only for a node with a ladder: placement reads it as
        // "runs ladders" (an all-in-one node lists the role but stays passthrough by default).
        roles: config
            .roles
            .iter()
            .filter(|&r: &Role| r != Role::Transcode || config.transcode.is_some())
            .map(|r: Role| r.as_str().to_owned())
            .collect(),
        addresses: advertised.listeners.clone(),
        tuning: RaftTuning {
            snapshot_every: config.raft_snapshot_every,
            keep_logs: config.raft_keep_logs,
            ..RaftTuning::default()
        },
        fault_injection: config.fault_injection,
    }
}

/// Ingest settings from the config: LL-HLS part and segment targets, connections served.
fn ingest_config(config: &ValidatedConfig) -> IngestConfig {
    let mut ingest = IngestConfig {
        max_connections: config.rtmp_max_connections,
        read_merge: config.rtmp_read_merge,
        connection_threads: config.rtmp_threads,
        ..IngestConfig::default()
    };
    ingest.rendition.part_target = config.part_target;
    ingest.rendition.segment_target = config.segment_target;
    ingest
}

/// How long a graceful stop waits for the services to wind down (side by side), and then for the
/// catalog.
const GRACE: Duration = Duration::from_secs(10);

/// Run the node until `shutdown` resolves: start the catalog, then one [`Service`] per listener of
/// the enabled roles, all stopped by one signal.
///
/// [`Service`]: crate::service::Service
pub async fn run(
    config: ValidatedConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = Shutdown> + Send + 'static,
) -> anyhow::Result<()> {
    // Refuse bad BITRIVER_LIVE_RATE_* / _MAX_BODY_BYTES values instead of running without limits.
    let limits = control::limits::Limits::try_from_env().context("API limits")?;
    let registry = Registry::new();
    let http_addr = listeners.http.local_addr()?;
    let advertised = crate::advertise::plan(&config, &listeners.bound()?)?;
    let catalog = Catalog::start(catalog_config(&config, &advertised), &registry).await?;
    // Live windows of the channels this node packages. Ingest feeds it (and still packages
    // locally on an ingest-only node: that packager is what the relay's join points follow);
    // relayed tracks feed it on an origin; the origin serves it.
    let live = LiveRegistry::new(RegistryConfig::default(), OriginMetrics::new(&registry)?);
    // WHEP viewers get the `source` samples of every stream packaged here, however it arrives.
    let whep = webrtc::WhepHub::new();
    if config.webrtc_ports.is_some() {
        live.set_observer(Arc::new(whep.clone()));
    }
    let relay_metrics = relay::quic::RelayMetrics::new(&registry)?;
    let mut relay_tasks = Vec::new();
    // The ladder runs inside ingest (one decode per publish, on its own threads).
    let transcode = crate::transcode::setup(&config, &registry)?;
    let mut services = Services::default();

    // The tracks this node publishes to others: what it ingests, and the rungs of its ladders.
    let ingests = listeners.rtmp.is_some() && listeners.srt.is_some();
    let hub = (ingests || transcode.ladder.is_some()).then(|| relay::quic::RelayHub::new(relay_metrics.clone()));
    if let Some(hub) = &hub {
        relay_tasks.extend(crate::relay::serve(&catalog, hub.clone()));
        relay_tasks.push(crate::relay::follow_peers(&catalog, hub.clone()));
    }
    // Transcode: the ladders of channels ingested elsewhere that placement gives this node.
    if let (Some(ladder), Some(hub)) = (&transcode.ladder, &hub) {
        relay_tasks.push(tokio::spawn(crate::transcode_worker::manage_transcodes(
            catalog.clone(),
            ladder.clone(),
            hub.clone(),
            relay_metrics.clone(),
            ingest_config(&config),
        )));
    }

    // Ingest: RTMP and SRT publishers, packaged into `live`.
    let mut gate = None;
    if let (Some(rtmp), Some(srt), Some(hub)) = (listeners.rtmp, listeners.srt, hub) {
        // Each publish's tracks are also served to the origins the channel is placed on.
        let tap: Arc<dyn media::ingest::TrackTap> = Arc::new(hub);
        let ingest = IngestConfig { ladder: transcode.ladder.clone(), tap: Some(tap), ..ingest_config(&config) };
        gate = Some(spawn_ingest(&mut services, rtmp, srt, &catalog, &live, ingest, &registry)?);
        // RTMPS: the same publish path behind a TLS handshake.
        if let (Some(rtmps), Some(tls), Some(gate)) = (listeners.rtmps, &config.tls, &gate) {
            let transport = Arc::new(crate::tls::RtmpsTransport::new(tls)?);
            let (ingest, metrics) = (gate.config().clone(), gate.metrics().clone());
            let addr = rtmps.local_addr()?;
            let served =
                media::ingest::serve_rtmp_over(rtmps, transport, gate.clone(), ingest, metrics, services.stop());
            services.spawn("rtmps", addr, async move {
                served.await;
                Ok(())
            });
        }
    }
    // Origin: package the live channels placed here that another node ingests.
    if config.roles.contains(Role::Origin) {
        relay_tasks.push(tokio::spawn(crate::relay::manage_subscriptions(
            catalog.clone(),
            live.clone(),
            relay_metrics,
        )));
    }
    // Recordings: the broadcasts this node packages as their primary origin, written as their
    // segments close; clips and retention of what it holds.
    let (recording_store, mirror) = if config.roles.contains(Role::Origin) {
        let store = recordings::LocalStore::new(config.data_dir.join("recordings")).context("recordings directory")?;
        let started = crate::recording::start(&config, &catalog, &store, &live, &registry)?;
        relay_tasks.extend(started.tasks);
        (Some((store, started.posters)), started.mirror)
    } else {
        (None, None)
    };
    // Load reports, and the ingest leases of what this node publishes.
    let load = Arc::new(crate::fleet::LoadGauges::default());
    let fleet = crate::fleet::start(&catalog, &load, gate.as_deref(), &live);
    // Edge: caches this cluster's LL-HLS for viewers; on an all-in-one node it fronts the origin
    // below, and the playback URLs the API hands out point at it.
    let edge_cache = match listeners.edge {
        Some(listener) => {
            Some(crate::edge::spawn(&mut services, &config, listener, catalog.clone(), http_addr, &registry, &load)?)
        }
        None => None,
    };
    let edge_addr = services.listeners().find(|(name, _)| *name == "edge").map(|(_, addr)| addr);
    // WHIP publishers (through the same gate as RTMP and SRT) and WHEP viewers.
    let webrtc = match &config.webrtc_ports {
        Some(ports) => {
            let gate = gate.clone();
            Some(crate::webrtc::start(&config, ports, gate, whep, &catalog, advertised.host, &registry).await?)
        }
        None => None,
    };
    // HTTP: the node's endpoints, the API and chat, the web UI (control role), the origin (origin role).
    let mut names = vec![("http", http_addr), ("cluster", config.cluster_addr)];
    if config.roles.contains(Role::Origin) {
        names.push(("origin", http_addr));
    }
    names.extend(services.listeners());
    if let Some(addr) = webrtc.as_ref().and_then(|w| w.media_addr()) {
        names.push(("webrtc", addr));
    }

    // Browsers' cross-site writes are refused on every route (see control::same_origin).
    let origins = Arc::new(control::same_origin::OriginPolicy {
        https: config.tls.is_some(),
        allowed: config.allowed_origins.clone(),
    });
    let state = NodeHttp {
        origins: origins.clone(),
        catalog: catalog.clone(),
        registry: registry.clone(),
        mode: config.mode,
        storage: Arc::new(http::StorageProbe::new(config.data_dir.clone())),
        listeners: Arc::new(names.into_iter().map(|(name, addr)| (name.to_owned(), addr)).collect()),
        transcode: Arc::new(transcode.health.clone()),
        edge_cache,
        objects: mirror,
        load: load.clone(),
    };
    let api_mode = match config.mode {
        crate::config::Mode::Development => control::Mode::Development,
        crate::config::Mode::Production => control::Mode::Production,
    };
    let mut api = control::ApiState::with_registry(catalog.clone(), api_mode, &registry);
    let _ = load.ws_connections.set(api.metrics.ws_connections.clone());
    api.limits = Arc::new(limits);
    api.origins = origins;
    api.whep = webrtc.is_some();
    api.edge_playback =
        edge_addr.map(|addr| control::channels::EdgePlayback { port: addr.port(), https: config.tls.is_some() });
    // Which edge a viewer gets (`/play`, steering, `edgePlaybackUrl`): this node's view of edge
    // health, fed from the catalog's load reports.
    let routing = Arc::new(control::routing::Routing::new(control::routing::RoutingConfig {
        client_region_header: config.client_region_header.clone(),
        trusted_proxies: config.trusted_proxies.clone(),
        geoip: config.geoip.clone().map(|db| Arc::new(db) as Arc<dyn control::routing::client::GeoLookup>),
        https: config.tls.is_some(),
    }));
    api.routing = routing.clone();
    let routing_watch = tokio::spawn(control::routing::watch_edges(routing, catalog.clone(), services.stop()));
    // Chat sockets are long-lived: they close on the stop signal so the HTTP drain does not wait on them.
    let chat = control::chat::ChatConfig::try_from_env().map_err(anyhow::Error::msg).context("chat settings")?;
    let chat_runtime = ChatRuntime::start()?;
    api.chat =
        Arc::new(control::chat::ChatHub::new(chat).with_shutdown(services.stop()).with_runtime(chat_runtime.handle()));
    let vod_api = api.clone();
    let mut app = http::router(state).merge(control::router(api));
    if config.roles.contains(Role::Control) {
        // The web UI: `/`, `/channels`, `/c/{id}`, `/signup` and `/assets/*`, beside `/api`.
        app = app.merge(web::router());
    }
    if config.roles.contains(Role::Origin) {
        app = app.merge(media::origin::routes(live.clone(), OriginConfig::default()));
    }
    if let Some(webrtc) = &webrtc {
        app = app.merge(webrtc.router());
    }
    if let Some((store, posters)) = recording_store {
        app = app.merge(crate::vod::routes(store, posters, vod_api));
    }
    services.spawn("http", http_addr, http::serve(listeners.http, app, config.tls.clone(), services.stop()));

    let find = |name: &str| services.listeners().find(|(n, _)| *n == name).map(|(_, addr)| addr);
    tracing::info!(
        http = %http_addr,
        rtmp = ?find("rtmp"),
        srt = ?find("srt"),
        edge = ?edge_addr,
        webrtc = ?webrtc.as_ref().and_then(|w| w.media_addr()),
        cluster = %catalog.cluster_addr(),
        advertised = ?advertised.listeners,
        node_id = catalog.node_id(),
        mode = config.mode.as_str(),
        roles = %config.roles,
        "bitriver node running"
    );

    let (how, result) = services.serve_until(shutdown).await;
    for task in fleet.into_iter().chain(relay_tasks) {
        task.abort();
    }
    routing_watch.abort();
    // Blocked playlist requests answer at once instead of holding the HTTP drain.
    live.shutdown();
    if let Some(webrtc) = &webrtc {
        // WHIP publishers end their catalog sessions before the catalog stops.
        webrtc.shut_down(GRACE).await;
    }
    services.shut_down(how, GRACE).await;
    match how {
        Shutdown::Fast => tracing::info!("interrupted; exiting now"),
        Shutdown::Graceful => {
            // Publishers ended their sessions in the catalog above, so it stops only now.
            tracing::info!("draining: stopping the catalog");
            tokio::time::timeout(GRACE, catalog.shutdown()).await.ok();
            tracing::info!("stopped cleanly");
        }
    }
    result
}

/// RTMP and SRT ingest as the services `rtmp` and `srt`, deciding through one gate: it is what
/// keeps a channel to one publisher on this node, whatever the protocol.
fn spawn_ingest(
    services: &mut Services,
    rtmp: TcpListener,
    srt: UdpSocket,
    catalog: &Catalog,
    live: &LiveRegistry,
    config: IngestConfig,
    registry: &Registry,
) -> anyhow::Result<Arc<CatalogGate>> {
    let gate = Arc::new(CatalogGate::new(catalog.clone(), live.clone(), config, IngestMetrics::new(registry)?));
    services.spawn("rtmp", rtmp.local_addr()?, {
        let (config, metrics) = (gate.config().clone(), gate.metrics().clone());
        let served = serve_rtmp(rtmp, gate.clone(), config, metrics, services.stop());
        async move {
            served.await;
            Ok(())
        }
    });
    let (addr, metrics) = (srt.local_addr()?, gate.metrics().clone());
    let served = serve_srt(srt, gate.clone(), SrtConfig::default(), metrics, services.stop());
    services.spawn("srt", addr, async move {
        // As before the services existed: a failed SRT listener is logged, the node keeps serving.
        if let Err(error) = served.await {
            tracing::error!(%error, "SRT ingest stopped");
        }
        Ok(())
    });
    Ok(gate)
}

/// The chat sockets' own threads ([`control::chat::ChatHub::with_runtime`]): a fan-out tick over
/// thousands of sockets then leaves the API, the origin's playlists and the edge their workers.
/// Shut down (in the background) when the node's run ends.
struct ChatRuntime(Option<tokio::runtime::Runtime>);

impl ChatRuntime {
    fn start() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("chat")
            .enable_all()
            .build()
            .context("chat threads")?;
        Ok(ChatRuntime(Some(runtime)))
    }

    fn handle(&self) -> tokio::runtime::Handle {
        self.0.as_ref().expect("running until dropped").handle().clone()
    }
}

impl Drop for ChatRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}
