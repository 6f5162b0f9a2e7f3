//! Recordings: every broadcast recorded from the packager's own CMAF segments (no second
//! encode), served back as VOD, cut into clips, kept for the configured retention.
//!
//! - [`journal`] and [`playlist`]: the on-disk index of a rendition and the VOD playlists
//!   rendered from it (pure, unit tested);
//! - [`store`]: the files of a recording on the local disk;
//! - [`recorder`]: the live registry's [`media::origin::SegmentSink`], writing as segments close;
//! - [`thumbnails`]: live posters and recordings' pictures;
//! - [`mirror`]: the copy in S3-compatible object storage, when configured;
//! - [`worker`]: recovery after a crash, clips, thumbnails, retention.
//!
//! The catalog side (entries, publish, delete) is `raft::state::recordings`; the API is
//! `control::recordings`; the node serves `/vod/{id}/...` from the [`store`].

pub mod journal;
pub mod mirror;
pub mod playlist;
pub mod recorder;
pub mod store;
pub mod thumbnails;
pub mod worker;

pub use mirror::Mirror;
pub use recorder::{Recorder, RecorderConfig};
pub use store::LocalStore;
pub use worker::Retention;

/// `bitriver_recording_*` metrics.
#[derive(Debug, Clone)]
pub struct RecordingMetrics {
    pub segments: prometheus::IntCounter,
    pub bytes: prometheus::IntCounter,
    pub dropped_segments: prometheus::IntCounter,
    pub write_errors: prometheus::IntCounter,
    pub active: prometheus::IntGauge,
    /// Live posters decoded (on request, at most one per channel per [`thumbnails::LIVE_EVERY`]).
    pub live_posters: prometheus::IntCounter,
}

impl RecordingMetrics {
    pub fn new(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let metrics = Self::unregistered();
        registry.register(Box::new(metrics.segments.clone()))?;
        registry.register(Box::new(metrics.bytes.clone()))?;
        registry.register(Box::new(metrics.dropped_segments.clone()))?;
        registry.register(Box::new(metrics.write_errors.clone()))?;
        registry.register(Box::new(metrics.active.clone()))?;
        registry.register(Box::new(metrics.live_posters.clone()))?;
        Ok(metrics)
    }

    pub fn unregistered() -> Self {
        let counter = |name: &str, help: &str| prometheus::IntCounter::new(name, help).expect("valid metric");
        RecordingMetrics {
            segments: counter("bitriver_recording_segments_total", "Segments written to recordings"),
            bytes: counter("bitriver_recording_bytes_total", "Bytes written to recordings"),
            dropped_segments: counter(
                "bitriver_recording_dropped_segments_total",
                "Segments not recorded because the disk fell behind",
            ),
            write_errors: counter("bitriver_recording_write_errors_total", "Failed writes of recorded segments"),
            active: prometheus::IntGauge::new("bitriver_recording_active", "Broadcasts being recorded on this node")
                .expect("valid metric"),
            live_posters: counter(
                "bitriver_recording_live_posters_total",
                "Live posters decoded, when asked for and older than their refresh interval",
            ),
        }
    }
}
