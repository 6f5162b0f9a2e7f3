//! The transcode ladder: FFmpeg in-process (ffmpeg-next over Debian's FFmpeg), one H.264 decode
//! per publish, one scale + encode per rung, the source's AAC passed through into every rung.
//!
//! It plugs into the ingest through [`media::ingest::Ladder`]: for each publish it plans the rungs
//! at or below the source height ([`LadderSpec::plan`]), opens the encoders (their parameter sets
//! go into each rendition's `init.mp4`) and then feeds renditions 1.. of the live stream from its
//! own threads ([`ladder`]). Every rung gets an IDR exactly where the source has a keyframe, at
//! the source keyframe's decode time ([`align`]), and the same wall clock, so the packager cuts
//! segment N of every rendition at the same PTS with the same program date-time.
//!
//! A ladder that falls behind real time (`bitriver_transcode_lag_seconds`) drops its tallest rung
//! and brings it back once it keeps up; the source rendition is never slowed.
//!
//! All unsafe code (three FFmpeg fields without a safe accessor) is in the private `ffi` module.
#![deny(unsafe_op_in_unsafe_fn)]

mod align;
pub mod audio;
pub mod codec;
mod ffi;
pub mod ladder;
pub mod metrics;
pub mod spec;
pub mod thumbnail;

pub use align::DegradePolicy;
pub use codec::{EncoderKind, HardwareEncoder, HardwareProbe, X264_PARAMS, X264_PRESET};
pub use ladder::TranscodeLadder;
pub use metrics::TranscodeMetrics;
pub use spec::{LadderError, LadderSpec, PlannedRung, Rung, DEFAULT_LADDER};

/// Initialises FFmpeg once and keeps its own logging to errors (x264 prints a banner per
/// encoder otherwise).
pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Err(error) = ffmpeg_next::init() {
            tracing::warn!(%error, "FFmpeg initialisation reported an error");
        }
        ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Error);
    });
}
