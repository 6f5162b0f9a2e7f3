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

pub use muxer::{fragment, init_segment};

/// Timescale of video tracks (ticks per second). [`Sample::dts`] of video is in these units.
pub const VIDEO_TIMESCALE: u32 = 90_000;
/// Track id of the video track in every header and fragment we write.
pub const VIDEO_TRACK_ID: u32 = 1;
/// Track id of the audio track in every header and fragment we write.
pub const AUDIO_TRACK_ID: u32 = 2;

/// Video codec of a track. Only H.264 in `avc1` sample entries (parameter sets in the header) for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VideoCodec {
    /// H.264/AVC, `avc1` sample entry with an `avcC` box.
    Avc1,
}

/// Decoder configuration of a video track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoConfig {
    pub codec: VideoCodec,
    /// Sequence parameter sets, NAL unit bytes without start code or length prefix (header byte
    /// included). At least one; the first gives profile and level.
    pub sps: Vec<Vec<u8>>,
    /// Picture parameter sets, same form as `sps`.
    pub pps: Vec<Vec<u8>>,
    pub width: u16,
    pub height: u16,
    /// RFC 6381 codec string for `CODECS=`, e.g. `avc1.64001f` (see [`avc_codec_string`]).
    pub codec_string: String,
}

/// Decoder configuration of an AAC audio track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioConfig {
    /// AudioSpecificConfig (ISO/IEC 14496-3), as carried in the FLV AAC sequence header.
    pub asc: Vec<u8>,
    /// Samples per second; also the track's timescale.
    pub sample_rate: u32,
    pub channels: u16,
    /// RFC 6381 codec string, e.g. `mp4a.40.2` (see [`aac_codec_string`]).
    pub codec_string: String,
}

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

/// RFC 6381 codec string of an H.264 track from its first SPS: `avc1.PPCCLL` (profile,
/// constraint flags, level in hex). `None` if the SPS is too short to hold them.
pub fn avc_codec_string(sps: &[u8]) -> Option<String> {
    match sps {
        [_, profile, constraints, level, ..] => Some(format!("avc1.{profile:02x}{constraints:02x}{level:02x}")),
        _ => None,
    }
}

/// RFC 6381 codec string of an AAC track: `mp4a.40.{audio object type}` from the first five bits
/// of the AudioSpecificConfig (`mp4a.40.2` for AAC-LC). Escaped object types (31) are read too.
pub fn aac_codec_string(asc: &[u8]) -> Option<String> {
    let first = *asc.first()?;
    let mut aot = first >> 3;
    if aot == 31 {
        let second = *asc.get(1)?;
        aot = 32 + (((first & 0x07) << 3) | (second >> 5));
    }
    Some(format!("mp4a.40.{aot}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_strings() {
        assert_eq!(avc_codec_string(&[0x67, 0x64, 0x00, 0x1f, 0xac]).as_deref(), Some("avc1.64001f"));
        assert_eq!(avc_codec_string(&[0x67, 0x42]), None);
        assert_eq!(aac_codec_string(&[0x12, 0x10]).as_deref(), Some("mp4a.40.2"));
        assert_eq!(aac_codec_string(&[0x2b, 0x92]).as_deref(), Some("mp4a.40.5"));
        assert_eq!(aac_codec_string(&[0xf8, 0x20]).as_deref(), Some("mp4a.40.33"));
        assert_eq!(aac_codec_string(&[]), None);
    }
}
