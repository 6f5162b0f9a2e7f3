//! Ingest: accepts broadcasts and feeds them to the origin.
//!
//! ```text
//! TCP ──▶ rtmp::serve_rtmp (one task per connection, bounded)
//!           │ bytes                    ▲ replies
//!           ▼                          │
//!        rtmp::ServerSession (sans-IO) ── PublishRequested ──▶ gate::PublishGate (the node's, over
//!           │ FLV tag bodies                                    the catalog) ── PublishSink
//!           ▼
//!        flv_input::FlvInput (sans-IO) ── MediaInput (90 kHz) ─┐
//!                                                              ▼
//!                                   packager_feed::PackagerFeed (sans-IO) ── FeedOutput ──▶ PublishSink
//!                                                              ▲            (LivePublish: Tracks ──▶
//! UDP ──▶ srt::serve_srt ── stream id ──▶ the same PublishGate │             hls::Rendition "source" in
//!           │ MPEG-TS                                          │             origin::LiveRegistry;
//!           ▼                                                  │             samples ──▶ LiveHandle)
//!        ts::TsDemuxer (inside srt::TsToCmaf) ── MediaInput ───┘
//! ```
//!
//! The tokio drivers in [`rtmp`] and [`srt`] only move bytes, apply the timeouts and ask the
//! [`PublishGate`]. The protocol ([`crate::rtmp`], [`crate::ts`]), the conversions ([`FlvInput`],
//! [`PackagerFeed`]) are state machines tested without sockets. [`LivePublish`] is the origin
//! side of a publish that every sink wraps; the catalog side (who may publish, sessions) is the
//! node's (`node/src/ingest_gate.rs`), so media does not depend on the catalog.

pub mod flv_input;
pub mod gate;
pub mod health;
pub mod ladder;
pub mod packager_feed;
pub mod publish;
pub mod rtmp;
pub mod srt;
pub mod tap;

use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::hls::RenditionConfig;

pub use flv_input::FlvInput;
pub use gate::{Protocol, PublishGate, PublishSink, Refusal, StreamRefused};
pub use ladder::{Ladder, LadderRendition, LadderRun, LadderSource};
pub use packager_feed::{FeedError, FeedOutput, FrameCounts, Handled, PackagerFeed};
pub use publish::{LivePublish, SOURCE_RENDITION};
pub use rtmp::{serve_rtmp, serve_rtmp_over, Plain, RtmpTransport};
pub use srt::{serve_srt, SrtConfig};
pub use tap::{TapRun, TapSource, TrackTap};

/// Settings of the RTMP ingest.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Connections served at once; more wait in the accept queue. Default 256.
    pub max_connections: usize,
    /// Time from accept to a finished handshake and `connect`. Default 5 s.
    pub handshake_timeout: Duration,
    /// Longest silence: from `connect` to `publish`, and between media messages while
    /// publishing (a stalled publisher). Default 10 s.
    pub idle_timeout: Duration,
    /// Longest a write to the client may block. Default 10 s.
    pub write_timeout: Duration,
    /// Merged reads: how long a publishing RTMP connection waits after a read that drained its
    /// socket before it reads again, so that one read (one wakeup, one system call, one
    /// acknowledgement) takes several frames. Adds at most this much latency. Default 0: every
    /// frame is read as it arrives.
    pub read_merge: Duration,
    /// Threads that run RTMP connections, each a single-threaded runtime a connection stays on
    /// (the least busy one when it is accepted), so its wakeups never cross cores or wait on a
    /// shared scheduler. 0: connections run on the caller's runtime. Default 0.
    pub connection_threads: usize,
    /// Packaging of the `source` rendition (its name is always `source`).
    pub rendition: RenditionConfig,
    /// How long shutdown waits for publishers to be wound down (sessions ended in the catalog).
    /// Default 5 s.
    pub shutdown_grace: Duration,
    /// Adds renditions beside `source` (the transcode ladder). Default none: passthrough.
    pub ladder: Option<Arc<dyn Ladder>>,
    /// Sends each publish's `source` track to other nodes (the relay). Default none.
    pub tap: Option<Arc<dyn TrackTap>>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_connections: 256,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            read_merge: Duration::ZERO,
            connection_threads: 0,
            rendition: RenditionConfig::default(),
            shutdown_grace: Duration::from_secs(5),
            ladder: None,
            tap: None,
        }
    }
}

/// Prometheus metrics of the ingest.
#[derive(Debug, Clone)]
pub struct IngestMetrics {
    /// Connections publishing right now.
    pub active_publishers: IntGauge,
    /// Bytes received from publishing connections, by channel.
    pub bytes: IntCounterVec,
    /// Socket reads of publishing RTMP connections, by channel: against `frames`, how many
    /// frames a read takes (several with merged reads, [`IngestConfig::read_merge`]).
    pub reads: IntCounterVec,
    /// Coded frames received, by channel and kind (`video`, `audio`).
    pub frames: IntCounterVec,
    /// Frames discarded (malformed, before a keyframe, refused by the packager), by channel.
    pub dropped_frames: IntCounterVec,
    /// Publishes and connections refused, by reason.
    pub rejected: IntCounterVec,
    /// Open RTMP connections by connection thread ([`IngestConfig::connection_threads`]).
    pub thread_connections: IntGaugeVec,
}

impl IngestMetrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self::unregistered();
        registry.register(Box::new(metrics.active_publishers.clone()))?;
        registry.register(Box::new(metrics.bytes.clone()))?;
        registry.register(Box::new(metrics.reads.clone()))?;
        registry.register(Box::new(metrics.frames.clone()))?;
        registry.register(Box::new(metrics.dropped_frames.clone()))?;
        registry.register(Box::new(metrics.rejected.clone()))?;
        registry.register(Box::new(metrics.thread_connections.clone()))?;
        Ok(metrics)
    }

    /// Metrics registered nowhere (tests, tools).
    pub fn unregistered() -> Self {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            // Constant names and labels: construction cannot fail.
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition")
        };
        IngestMetrics {
            active_publishers: IntGauge::new("bitriver_ingest_active_publishers", "Connections publishing now.")
                .expect("valid metric definition"),
            bytes: counter("bitriver_ingest_bytes_total", "Bytes received from publishers.", &["channel"]),
            reads: counter("bitriver_ingest_reads_total", "Socket reads of publishing RTMP connections.", &["channel"]),
            frames: counter("bitriver_ingest_frames_total", "Coded frames received.", &["channel", "kind"]),
            dropped_frames: counter("bitriver_ingest_dropped_frames_total", "Frames discarded.", &["channel"]),
            rejected: counter("bitriver_ingest_rejected_total", "Publishes and connections refused.", &["reason"]),
            thread_connections: IntGaugeVec::new(
                Opts::new("bitriver_ingest_thread_connections", "Open RTMP connections by connection thread."),
                &["thread"],
            )
            .expect("valid metric definition"),
        }
    }
}

/// One publish's series of [`IngestMetrics`]'s per-channel frame counters.
#[derive(Debug, Clone)]
pub struct FrameCounters {
    video: prometheus::IntCounter,
    audio: prometheus::IntCounter,
    dropped: prometheus::IntCounter,
}

impl FrameCounters {
    pub fn new(metrics: &IngestMetrics, channel: &str) -> Self {
        FrameCounters {
            video: metrics.frames.with_label_values(&[channel, "video"]),
            audio: metrics.frames.with_label_values(&[channel, "audio"]),
            dropped: metrics.dropped_frames.with_label_values(&[channel]),
        }
    }

    /// Adds what a conversion counted ([`PackagerFeed::pump`]).
    pub fn add(&self, counts: FrameCounts) {
        self.video.inc_by(counts.video);
        self.audio.inc_by(counts.audio);
        self.dropped.inc_by(counts.dropped);
    }
}

/// The start of a stream key, safe to log: at most 8 characters and never more than half the
/// key (keys are `live_` plus 40 hex digits, so this names the key's kind, not the key).
pub fn key_prefix(key: &str) -> String {
    let shown = key.chars().count().div_ceil(2).saturating_sub(1).min(8);
    let prefix: String = key.chars().take(shown).collect();
    format!("{prefix}…")
}
