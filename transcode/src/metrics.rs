//! Prometheus metrics of the ladder.

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Metrics of every ladder run on this node, by channel.
#[derive(Debug, Clone)]
pub struct TranscodeMetrics {
    /// How far the ladder's output is behind the source, in seconds (0 when keeping up).
    pub lag_seconds: GaugeVec,
    /// Rungs being encoded now.
    pub active_rungs: IntGaugeVec,
    /// Rungs dropped (`dropped`) or brought back (`readmitted`) by the degrade policy.
    pub degrade_events: IntCounterVec,
    /// Frames encoded, by channel and rendition.
    pub frames: IntCounterVec,
}

impl TranscodeMetrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self::unregistered();
        registry.register(Box::new(metrics.lag_seconds.clone()))?;
        registry.register(Box::new(metrics.active_rungs.clone()))?;
        registry.register(Box::new(metrics.degrade_events.clone()))?;
        registry.register(Box::new(metrics.frames.clone()))?;
        Ok(metrics)
    }

    /// Metrics registered nowhere (tests, benchmarks).
    pub fn unregistered() -> Self {
        // Constant names and labels: construction cannot fail.
        let valid = "valid metric definition";
        TranscodeMetrics {
            lag_seconds: GaugeVec::new(
                Opts::new("bitriver_transcode_lag_seconds", "How far the ladder's output is behind the source."),
                &["channel"],
            )
            .expect(valid),
            active_rungs: IntGaugeVec::new(
                Opts::new("bitriver_transcode_active_rungs", "Ladder rungs being encoded now."),
                &["channel"],
            )
            .expect(valid),
            degrade_events: IntCounterVec::new(
                Opts::new("bitriver_transcode_degrade_events_total", "Rungs dropped or readmitted by load."),
                &["channel", "event"],
            )
            .expect(valid),
            frames: IntCounterVec::new(
                Opts::new("bitriver_transcode_frames_total", "Frames encoded by the ladder."),
                &["channel", "rendition"],
            )
            .expect(valid),
        }
    }
}
