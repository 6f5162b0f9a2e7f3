//! Prometheus metrics of the origin: requests and bytes per object kind, blocking waits, live
//! channels.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// What an origin request asked for; the `kind` label of the request and byte counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Master,
    Playlist,
    Init,
    Segment,
    Part,
}

impl Kind {
    const ALL: [Kind; 5] = [Kind::Master, Kind::Playlist, Kind::Init, Kind::Segment, Kind::Part];

    fn label(self) -> &'static str {
        match self {
            Kind::Master => "master",
            Kind::Playlist => "playlist",
            Kind::Init => "init",
            Kind::Segment => "segment",
            Kind::Part => "part",
        }
    }
}

/// The origin's collectors. Cheap to clone; the [`super::LiveRegistry`] holds one and the router
/// takes it from there.
#[derive(Debug, Clone)]
pub struct OriginMetrics {
    /// `bitriver_origin_requests_total{kind}`, kind = master | playlist | init | segment | part.
    pub requests: IntCounterVec,
    /// `bitriver_origin_bytes_total{kind}`: body bytes of successful answers.
    pub bytes: IntCounterVec,
    /// `bitriver_origin_blocking_waits_total`: requests that had to wait (blocking playlist reloads
    /// and preload-hinted parts).
    pub blocking_waits: IntCounter,
    /// `bitriver_origin_blocking_timeouts_total`: waits that ended in 503.
    pub blocking_timeouts: IntCounter,
    /// `bitriver_live_channels`: channels with a live (not ended) stream on this origin.
    pub live_channels: IntGauge,
    /// `bitriver_origin_forced_segment_cuts_total`: segments cut without a keyframe because the
    /// publisher sent none within the hard limit (see `hls::Rendition::forced_cuts`).
    pub forced_segment_cuts: IntCounter,
    /// Label children resolved once, indexed like [`Kind::ALL`].
    by_kind: [(IntCounter, IntCounter); 5],
}

impl OriginMetrics {
    /// Creates the collectors and registers them on `registry` (the node's, served at `/metrics`).
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new("bitriver_origin_requests_total", "Origin requests by object kind"),
            &["kind"],
        )?;
        let bytes = IntCounterVec::new(
            Opts::new("bitriver_origin_bytes_total", "Body bytes served by the origin, by object kind"),
            &["kind"],
        )?;
        let blocking_waits = IntCounter::new(
            "bitriver_origin_blocking_waits_total",
            "Playlist and part requests that waited for a part to be published",
        )?;
        let blocking_timeouts = IntCounter::new(
            "bitriver_origin_blocking_timeouts_total",
            "Waiting requests answered 503 because nothing was published in time",
        )?;
        let live_channels = IntGauge::new("bitriver_live_channels", "Channels live on this origin")?;
        let forced_segment_cuts = IntCounter::new(
            "bitriver_origin_forced_segment_cuts_total",
            "Segments cut without a keyframe because the publisher sent none within the limit",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(bytes.clone()))?;
        registry.register(Box::new(blocking_waits.clone()))?;
        registry.register(Box::new(blocking_timeouts.clone()))?;
        registry.register(Box::new(live_channels.clone()))?;
        registry.register(Box::new(forced_segment_cuts.clone()))?;
        let by_kind =
            Kind::ALL.map(|k| (requests.with_label_values(&[k.label()]), bytes.with_label_values(&[k.label()])));
        Ok(OriginMetrics {
            requests,
            bytes,
            blocking_waits,
            blocking_timeouts,
            live_channels,
            forced_segment_cuts,
            by_kind,
        })
    }

    /// Metrics on a private registry, for tests and tools.
    pub fn unregistered() -> Self {
        // Six distinct names on a fresh registry cannot collide.
        Self::new(&Registry::new()).expect("fresh registry")
    }

    pub(crate) fn request(&self, kind: Kind) {
        self.by_kind[kind as usize].0.inc();
    }

    pub(crate) fn served(&self, kind: Kind, bytes: usize) {
        self.by_kind[kind as usize].1.inc_by(u64::try_from(bytes).unwrap_or(u64::MAX));
    }
}
