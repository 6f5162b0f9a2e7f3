//! Role wiring: start the catalog, bind the listeners, serve until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use prometheus::Registry;
use raft::{Catalog, CatalogConfig, JoinConfig, RaftTuning};
use tokio::net::{TcpListener, UdpSocket};

use media::ingest::{serve_rtmp_with, serve_srt, CatalogGate, IngestConfig, IngestMetrics, SrtConfig};
use media::origin::{LiveRegistry, OriginConfig, OriginMetrics, RegistryConfig};

use crate::config::{Role, TlsFiles, ValidatedConfig};
use crate::http::{self, NodeHttp};

/// How the node should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Stop accepting, finish in-flight requests, then stop the catalog (SIGTERM).
    Graceful,
    /// Stop now (SIGINT). Acknowledged catalog writes are already on disk.
    Fast,
}

/// Listeners bound before [`run`] so that callers (and tests) can use port 0.
pub struct Listeners {
    pub http: TcpListener,
    /// RTMP ingest; bound when the `ingest` role is on.
    pub rtmp: Option<TcpListener>,
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
        let edge = if config.roles.contains(Role::Edge) {
            let addr = config.edge_addr;
            Some(TcpListener::bind(addr).await.with_context(|| format!("binding --edge-addr {addr}"))?)
        } else {
            None
        };
        Ok(Listeners { http, rtmp, srt, edge })
    }
}

fn catalog_config(config: &ValidatedConfig, http_addr: SocketAddr) -> CatalogConfig {
    let advertise =
        if config.cluster_advertise.port() == 0 { None } else { Some(config.cluster_advertise.to_string()) };
    let http_public = if http_addr.ip().is_unspecified() {
        SocketAddr::new(std::net::IpAddr::from([127, 0, 0, 1]), http_addr.port())
    } else {
        http_addr
    };
    CatalogConfig {
        data_dir: config.data_dir.clone(),
        node_id: config.node_id,
        cluster_bind: config.cluster_addr,
        cluster_advertise: advertise,
        join: config.join.as_ref().map(|j| JoinConfig { addr: j.peer.to_string(), token: j.token.expose().to_owned() }),
        voters: config.voters,
        region: config.region.clone(),
        roles: config.roles.iter().map(|r: Role| r.as_str().to_owned()).collect(),
        addresses: vec![("http".to_owned(), http_public.to_string())],
        tuning: RaftTuning {
            snapshot_every: config.raft_snapshot_every,
            keep_logs: config.raft_keep_logs,
            ..RaftTuning::default()
        },
        fault_injection: config.fault_injection,
    }
}

/// Ingest settings from the config: LL-HLS part and segment targets.
fn ingest_config(config: &ValidatedConfig) -> IngestConfig {
    let mut ingest = IngestConfig::default();
    ingest.rendition.part_target = config.part_target;
    ingest.rendition.segment_target = config.segment_target;
    ingest
}

/// Run the node until `shutdown` resolves.
pub async fn run(
    config: ValidatedConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = Shutdown> + Send + 'static,
) -> anyhow::Result<()> {
    // Refuse bad BITRIVER_LIVE_RATE_* / _MAX_BODY_BYTES values instead of running without limits.
    let limits = control::limits::Limits::try_from_env().context("API limits")?;
    let registry = Registry::new();
    let http_addr = listeners.http.local_addr()?;
    let catalog = Catalog::start(catalog_config(&config, http_addr), &registry).await?;

    // Live windows of the channels this node packages. Ingest feeds it; the origin serves it. An
    // ingest-only node still packages locally: shipping media to a remote origin is not wired yet.
    let live = LiveRegistry::new(RegistryConfig::default(), OriginMetrics::new(&registry)?);
    // The ladder runs inside ingest (one decode per publish, on its own threads).
    let transcode = crate::transcode::setup(&config, &registry)?;
    let mut listener_names = vec![("http".to_owned(), http_addr), ("cluster".to_owned(), config.cluster_addr)];
    if config.roles.contains(Role::Origin) {
        listener_names.push(("origin".to_owned(), http_addr));
    }
    let rtmp_addr = listeners.rtmp.as_ref().map(TcpListener::local_addr).transpose()?;
    if let Some(addr) = rtmp_addr {
        listener_names.push(("rtmp".to_owned(), addr));
    }
    let srt_addr = listeners.srt.as_ref().map(UdpSocket::local_addr).transpose()?;
    if let Some(addr) = srt_addr {
        listener_names.push(("srt".to_owned(), addr));
    }
    // The edge caches this cluster's LL-HLS for viewers; on an all-in-one node it fronts the
    // origin above, and the playback URLs the API hands out point at it.
    let edge = match listeners.edge {
        Some(listener) => Some(crate::edge::start(&config, listener, catalog.clone(), http_addr, &registry)?),
        None => None,
    };
    if let Some(edge) = &edge {
        listener_names.push(("edge".to_owned(), edge.addr));
    }

    let state = NodeHttp {
        catalog: catalog.clone(),
        registry: registry.clone(),
        mode: config.mode,
        storage: Arc::new(http::StorageProbe::new(config.data_dir.clone())),
        listeners: Arc::new(listener_names),
        transcode: Arc::new(transcode.health.clone()),
        edge_cache: edge.as_ref().map(|e| e.storage),
    };
    let api_mode = match config.mode {
        crate::config::Mode::Development => control::Mode::Development,
        crate::config::Mode::Production => control::Mode::Production,
    };
    let mut api = control::ApiState::with_registry(catalog.clone(), api_mode, &registry);
    api.limits = Arc::new(limits);
    api.edge_playback =
        edge.as_ref().map(|e| control::channels::EdgePlayback { port: e.addr.port(), https: config.tls.is_some() });
    let chat = api.chat.clone();
    let mut app = http::router(state).merge(control::router(api));
    if config.roles.contains(Role::Control) {
        // The web UI: `/`, `/channels`, `/c/{id}`, `/signup` and `/assets/*`, beside `/api`.
        app = app.merge(web::router());
    }
    if config.roles.contains(Role::Origin) {
        app = app.merge(media::origin::routes(live.clone(), OriginConfig::default()));
    }
    tracing::info!(
        http = %http_addr,
        rtmp = ?rtmp_addr,
        srt = ?srt_addr,
        edge = ?edge.as_ref().map(|e| e.addr),
        cluster = %catalog.cluster_addr(),
        node_id = catalog.node_id(),
        mode = config.mode.as_str(),
        roles = %config.roles,
        "bitriver node running"
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(None::<Shutdown>);
    // One gate for both protocols: it is what keeps a channel to one publisher on this node.
    let gate = match (&listeners.rtmp, &listeners.srt) {
        (None, None) => None,
        _ => Some(CatalogGate::new(
            catalog.clone(),
            live.clone(),
            IngestConfig { ladder: transcode.ladder.clone(), ..ingest_config(&config) },
            IngestMetrics::new(&registry)?,
        )),
    };
    let mut ingest = Vec::new();
    if let (Some(listener), Some(gate)) = (listeners.rtmp, &gate) {
        let stop = stop_rx.clone();
        let task = tokio::spawn(serve_rtmp_with(listener, gate.clone(), async move {
            wait_stop(stop).await;
        }));
        ingest.push(("RTMP", task));
    }
    if let (Some(socket), Some(gate)) = (listeners.srt, gate) {
        let stop = stop_rx.clone();
        let metrics = gate.metrics().clone();
        let served = serve_srt(socket, Arc::new(gate), SrtConfig::default(), metrics, async move {
            wait_stop(stop).await;
        });
        let task = tokio::spawn(async move {
            if let Err(error) = served.await {
                tracing::error!(%error, "SRT ingest stopped");
            }
        });
        ingest.push(("SRT", task));
    }
    let origin_live = live.clone();
    tokio::spawn(async move {
        let how = shutdown.await;
        // Chat sockets are long-lived: close them so the HTTP drain does not wait on them.
        chat.shutdown();
        let _ = stop_tx.send(Some(how));
        // Blocked playlist requests answer at once instead of holding the HTTP drain.
        origin_live.shutdown();
    });

    let server = serve_http(listeners.http, app, config.tls.clone(), stop_rx.clone());
    let result = server.await;
    let how = *stop_rx.borrow();
    if let Some(edge) = edge {
        edge.stop(how == Some(Shutdown::Fast)).await;
    }
    match how {
        Some(Shutdown::Fast) => tracing::info!("interrupted; exiting now"),
        _ => {
            // Publishers end their sessions in the catalog, so stop it only afterwards. The
            // listeners wind down side by side, so one bound covers them all.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            for (protocol, task) in ingest {
                match tokio::time::timeout_at(deadline, task).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "{protocol} ingest task failed"),
                    Err(_) => tracing::warn!("{protocol} ingest did not stop in time"),
                }
            }
            tracing::info!("draining: stopping the catalog");
            tokio::time::timeout(Duration::from_secs(10), catalog.shutdown()).await.ok();
            tracing::info!("stopped cleanly");
        }
    }
    result
}

async fn wait_stop(mut rx: tokio::sync::watch::Receiver<Option<Shutdown>>) -> Shutdown {
    loop {
        if let Some(how) = *rx.borrow_and_update() {
            return how;
        }
        if rx.changed().await.is_err() {
            return Shutdown::Graceful;
        }
    }
}

async fn serve_http(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsFiles>,
    stop: tokio::sync::watch::Receiver<Option<Shutdown>>,
) -> anyhow::Result<()> {
    let make_service = app.into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        None => axum::serve(listener, make_service)
            .with_graceful_shutdown(async move {
                wait_stop(stop).await;
            })
            .await
            .context("http server"),
        Some(files) => crate::tls::serve_https(listener, make_service, &files, stop).await,
    }
}
