//! CMAF (fragmented MP4) muxing, and the media types the rest of the crate passes around.
//!
//! Data flow: ingest/transcode produce a [`VideoConfig`] / [`AudioConfig`] once per track and then
//! [`Sample`]s in decode order. The LL-HLS packager ([`crate::hls`]) turns the configs into a CMAF
//! header with [`init_segment`] and groups samples into [`TrackRun`]s that [`fragment`] writes as one
//! `moof`+`mdat` pair (one LL-HLS part).
//!
//! Track ids are fixed: video is [`VIDEO_TRACK_ID`], audio [`AUDIO_TRACK_ID`], whether or not the
//! other track is present, so a fragment's runs never depend on what the header happened to hold.
//! Video uses the [`VIDEO_TIMESCALE`] (90 kHz); audio uses its sample rate as timescale.
//!
//! Our own box writer rather than mp4-atom or scuffle-mp4: a live packager writes the same few
//! boxes thousands of times a second, so it writes them straight into one buffer with sizes
//! patched in place, and its byte-exact tests pin what players see.

mod boxes;
mod muxer;

use bytes::Bytes;

/// The track configs the header is written from (the codec layer's neutral types).
pub use crate::codec::{AudioConfig, VideoCodec, VideoConfig};
pub use muxer::{fragment, init_segment};

/// Timescale of video tracks (ticks per second). [`Sample::dts`] of video is in these units; the
/// same clock as the codec layer's timestamps, so ingest timestamps map 1:1.
pub const VIDEO_TIMESCALE: u32 = crate::codec::CLOCK_RATE as u32;
/// Track id of the video track in every header and fragment we write.
pub const VIDEO_TRACK_ID: u32 = 1;
/// Track id of the audio track in every header and fragment we write.
pub const AUDIO_TRACK_ID: u32 = 2;

/// One coded frame of one track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Decode timestamp in the track's timescale ([`VIDEO_TIMESCALE`] or the audio sample rate).
    pub dts: u64,
    /// Presentation minus decode time, in the track's timescale (B-frames make it non-zero).
    pub pts_offset: i32,
    /// Duration in the track's timescale (time to the next sample's dts).
    pub duration: u32,
    /// A sync sample: an IDR access unit for video; every AAC frame is one.
    pub keyframe: bool,
    /// Video: the access unit as AVCC (4-byte length-prefixed NAL units). Audio: one raw AAC frame.
    pub data: Bytes,
}

/// The samples of one track in one fragment, contiguous in decode order.
#[derive(Debug, Clone, Copy)]
pub struct TrackRun<'a> {
    pub track_id: u32,
    /// Decode time of the first sample (`tfdt`), in the track's timescale.
    pub base_media_decode_time: u64,
    pub samples: &'a [Sample],
}

/// Why a header or fragment could not be written. Inputs come from the network, so every
/// malformed one ends here rather than in a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CmafError {
    #[error("an init segment needs at least one track")]
    NoTracks,
    #[error("video config has no SPS or no PPS")]
    MissingParameterSets,
    #[error("parameter set invalid for avcC (SPS shorter than 4 bytes, longer than 65535, or too many)")]
    BadParameterSet,
    #[error("audio config has an empty AudioSpecificConfig or a zero sample rate")]
    BadAudioConfig,
    #[error("fragment larger than 32-bit box sizes allow")]
    TooLarge,
}

impl From<boxes::Overflow> for CmafError {
    fn from(_: boxes::Overflow) -> Self {
        CmafError::TooLarge
    }
}
