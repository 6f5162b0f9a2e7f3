//! The codec layer: what H.264 and AAC bytes mean, independent of the container they came in
//! (FLV over RTMP, MPEG-TS over SRT, an FFmpeg encoder) or go out in (CMAF).
//!
//! - [`h264`]: Annex B <-> AVCC framing, the SPS parser, `avcC` (AVCDecoderConfigurationRecord)
//!   build and parse, the `avc1.PPCCLL` codec string.
//! - [`aac`]: AudioSpecificConfig, ADTS headers, the `mp4a.40.N` codec string.
//! - Here: the neutral types the rest of the crate passes around. Track configs
//!   ([`VideoConfig`], [`AudioConfig`]) are what the CMAF header is written from; [`MediaInput`]
//!   is what every ingest protocol hands the packager feed, with 90 kHz timestamps so no
//!   precision is lost on the way (MPEG-TS clocks are 90 kHz; FLV milliseconds convert exactly).
//!
//! Every parser here takes untrusted bytes: none panics, each bounds its work, errors are typed.

pub mod aac;
pub mod h264;

use bytes::Bytes;
use thiserror::Error;

/// Ticks per second of every [`MediaInput`] timestamp (the MPEG-TS clock, and CMAF's video
/// timescale).
pub const CLOCK_RATE: u64 = 90_000;

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
    /// RFC 6381 codec string for `CODECS=`, e.g. `avc1.64001f` (see [`h264::codec_string`]).
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
    /// RFC 6381 codec string, e.g. `mp4a.40.2` (see [`aac::codec_string`]).
    pub codec_string: String,
}

/// One H.264 access unit as an ingest protocol delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoFrame {
    /// Decode time, [`CLOCK_RATE`] ticks.
    pub dts: u64,
    /// Presentation time, [`CLOCK_RATE`] ticks (never below `dts` in a valid stream).
    pub pts: u64,
    /// An IDR access unit.
    pub keyframe: bool,
    /// AVCC with 4-byte NAL lengths; parameter sets and delimiters removed.
    pub data: Bytes,
}

/// One raw AAC frame (1024 samples) as an ingest protocol delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioFrame {
    /// Presentation time, [`CLOCK_RATE`] ticks.
    pub pts: u64,
    /// The raw access unit (no ADTS header).
    pub data: Bytes,
}

/// What an ingest protocol hands the packager feed, in stream order: a track's configuration
/// before its first frame (and again whenever the encoder repeats or changes it), then frames.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaInput {
    VideoConfig(h264::AvcConfig),
    Video(VideoFrame),
    AudioConfig(aac::AacConfig),
    Audio(AudioFrame),
}

/// Why codec bytes could not be understood. Carries static text only: safe to log.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CodecError {
    #[error("invalid AVCDecoderConfigurationRecord: {0}")]
    InvalidAvcConfig(&'static str),
    #[error("invalid H.264 SPS: {0}")]
    InvalidSps(&'static str),
    #[error("invalid AAC AudioSpecificConfig: {0}")]
    InvalidAudioSpecificConfig(&'static str),
    #[error("invalid AVCC NAL unit framing")]
    InvalidNalFraming,
}

/// MSB-first bit reader over a byte slice (an RBSP, or an AudioSpecificConfig). Every read past
/// the end is `None`.
pub(crate) struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    pub(crate) fn bit(&mut self) -> Option<u32> {
        let byte = self.data.get(self.pos / 8)?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(bit))
    }

    /// Up to 32 bits.
    pub(crate) fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |acc, _| Some(acc << 1 | self.bit()?))
    }

    /// Unsigned exp-Golomb; values that need more than 32 bits are rejected.
    pub(crate) fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        u32::try_from((1u64 << zeros) - 1 + u64::from(rest)).ok()
    }

    /// Signed exp-Golomb.
    pub(crate) fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}
