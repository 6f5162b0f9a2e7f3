//! WHIP and WHEP on the node: the media sockets, the service over the node's publish gate and
//! live registry, and where a channel packaged elsewhere is (a WHEP offer for it is redirected).

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::Context;
use prometheus::Registry;
use raft::Catalog;
use webrtc::{MediaPorts, PortMode, Webrtc, WebrtcConfig, WebrtcMetrics, WhepHub};

use crate::config::ValidatedConfig;
use crate::ingest_gate::CatalogGate;

/// Binds the media port(s) and builds the service. `hub` is the live registry's observer;
/// `gate` the ingest's (none without the ingest role: WHEP only); `host` the advertised host,
/// offered as the host candidate when the media socket is bound to a wildcard.
pub async fn start(
    config: &ValidatedConfig,
    ports: &PortMode,
    gate: Option<Arc<CatalogGate>>,
    hub: WhepHub,
    catalog: &Catalog,
    host: Option<IpAddr>,
    registry: &Registry,
) -> anyhow::Result<Webrtc<CatalogGate>> {
    let metrics = WebrtcMetrics::new(registry)?;
    let bind_ip = match ports {
        PortMode::Single(addr) => addr.ip(),
        PortMode::Range { ip, .. } => *ip,
    };
    let hosts: Vec<IpAddr> = if bind_ip.is_unspecified() {
        host.or_else(crate::advertise::primary_interface_address).into_iter().collect()
    } else {
        vec![bind_ip]
    };
    let media = MediaPorts::bind(ports.clone(), hosts, metrics.unrouted.clone(), metrics.dropped.clone())
        .await
        .with_context(|| match ports {
            PortMode::Single(addr) => format!("binding --webrtc-udp-port {addr}"),
            PortMode::Range { first, last, .. } => format!("--webrtc-udp-ports {first}-{last}"),
        })?;
    let ingest = match &gate {
        Some(gate) => gate.metrics().clone(),
        None => media::ingest::IngestMetrics::unregistered(),
    };
    let settings = WebrtcConfig {
        ports: ports.clone(),
        ice_servers: config.webrtc_ice_servers.clone(),
        // WHIP publishers are asked for a keyframe per segment (segments start on keyframes).
        timeouts: webrtc::Timeouts { keyframe_every: config.segment_target, ..webrtc::Timeouts::default() },
        ..WebrtcConfig::default()
    };
    let (catalog, scheme) = (catalog.clone(), if config.tls.is_some() { "https" } else { "http" });
    let locator = Arc::new(move |channel: &str| {
        let me = catalog.node_id();
        let origins = catalog.read(|s| crate::edge::resolve_origins(s, channel, me, None, false));
        let origin = origins.into_iter().find(|o| !o.shield)?;
        Some(format!("{scheme}://{}/whep/{channel}", origin.addr))
    });
    Ok(Webrtc::new(gate, ingest, hub, media, settings, metrics).with_locator(locator))
}
