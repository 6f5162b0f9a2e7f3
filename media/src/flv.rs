//! FLV: the tag bodies RTMP carries in video/audio messages, the codec configuration inside them
//! (AVCDecoderConfigurationRecord with its SPS, AAC AudioSpecificConfig), and FLV tag framing as
//! found in files and RTMP aggregate messages.
//!
//! Tag bodies arrive whole (one RTMP message each), so [`parse_video_tag`] and
//! [`parse_audio_tag`] treat a short body as invalid ([`FlvError::Truncated`]). Only
//! [`read_tag`] and [`read_file_header`] work on a growing buffer and return
//! [`FlvError::Incomplete`].
//!
//! Video: legacy AVC (codec id 7) and the Enhanced RTMP `ExVideoTagHeader` (FourCC `avc1`,
//! `hvc1`, `av01`, `vp09`). Only AVC configuration is parsed further; the others are reported with
//! their raw configuration record. Audio: AAC (sound format 10) and Enhanced RTMP `mp4a`/`Opus`.
//!
//! Written here rather than using a crate: the parsing we need is small, and we want parsers that
//! never panic, bound their work, and report typed errors.

use bytes::Bytes;
use thiserror::Error;

/// Why a tag or codec configuration could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FlvError {
    /// Only from the incremental readers ([`read_tag`], [`read_file_header`]): more bytes needed.
    #[error("incomplete FLV data")]
    Incomplete,
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("unsupported video codec id {0}")]
    UnsupportedVideoCodec(u8),
    #[error("unsupported Enhanced RTMP video FourCC {0:?}")]
    UnsupportedFourCc([u8; 4]),
    #[error("invalid AVCDecoderConfigurationRecord: {0}")]
    InvalidAvcConfig(&'static str),
    #[error("invalid H.264 SPS: {0}")]
    InvalidSps(&'static str),
    #[error("invalid AAC AudioSpecificConfig: {0}")]
    InvalidAudioSpecificConfig(&'static str),
    #[error("invalid AVCC NAL unit framing")]
    InvalidNalFraming,
    #[error("not an FLV file")]
    NotFlv,
}

/// Video codec of a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VideoCodec {
    /// H.264 (legacy codec id 7 or FourCC `avc1`).
    Avc,
    /// H.265 (FourCC `hvc1`, or the unofficial legacy codec id 12).
    Hevc,
    /// AV1 (FourCC `av01`).
    Av1,
    /// VP9 (FourCC `vp09`).
    Vp9,
}

/// Audio codec of a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AudioCodec {
    Aac,
    Mp3,
    Opus,
    /// Another legacy SoundFormat (value 0-15).
    Other(u8),
}

/// A coded video frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoFrame {
    /// Presentation time: `dts_ms` plus the composition time offset (never below 0).
    pub pts_ms: u64,
    /// Decode time: the RTMP message timestamp.
    pub dts_ms: u64,
    pub keyframe: bool,
    pub codec: VideoCodec,
    /// For AVC/HEVC: length-prefixed NAL units (AVCC/HVCC, length size from the configuration
    /// record; see [`nal_units`]). For AV1: OBUs; for VP9: the frame.
    pub nalus: Bytes,
}

/// Parsed AVCDecoderConfigurationRecord.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    /// The record as received (the body of an MP4 `avcC` box).
    pub record: Bytes,
    /// Sequence parameter sets (NAL units, without length prefix); at least one.
    pub sps: Vec<Bytes>,
    /// Picture parameter sets.
    pub pps: Vec<Bytes>,
    /// Size in bytes of the NAL unit length prefix in frames (1, 2 or 4).
    pub nal_length_size: u8,
    pub profile: u8,
    /// profile_compatibility (constraint flags).
    pub compatibility: u8,
    pub level: u8,
    /// Display size from the first SPS, after cropping.
    pub width: u32,
    pub height: u32,
    /// RFC 6381 codec string, e.g. `avc1.64001F`.
    pub codec_string: String,
}

/// Parsed AAC AudioSpecificConfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacConfig {
    /// The AudioSpecificConfig as received (for an MP4 `esds` box).
    pub asc: Bytes,
    /// Audio object type (2 = AAC-LC, 5 = HE-AAC, 29 = HE-AACv2).
    pub object_type: u8,
    /// Sampling rate of the core (AAC) layer.
    pub sample_rate: u32,
    /// Channel count; 0 when the configuration is in a program config element.
    pub channels: u8,
    /// RFC 6381 codec string, e.g. `mp4a.40.2`.
    pub codec_string: String,
}

/// A coded audio frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioFrame {
    pub pts_ms: u64,
    pub codec: AudioCodec,
    /// For AAC: one raw access unit (no ADTS header).
    pub data: Bytes,
}

/// What a video tag body holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VideoTag {
    /// AVC sequence header.
    AvcSequenceHeader(AvcConfig),
    /// Sequence header of a codec whose record we do not parse (HEVC, AV1, VP9).
    SequenceHeader {
        codec: VideoCodec,
        record: Bytes,
    },
    Frame(VideoFrame),
    EndOfSequence {
        codec: VideoCodec,
    },
    /// Video info/command frames, Enhanced RTMP metadata, multitrack and other packets we skip.
    Ignored,
}

/// What an audio tag body holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AudioTag {
    AacSequenceHeader(AacConfig),
    /// Sequence header of a codec whose configuration we do not parse (e.g. Opus).
    SequenceHeader {
        codec: AudioCodec,
        config: Bytes,
    },
    Frame(AudioFrame),
    /// Enhanced RTMP audio packets we skip (sequence end, multichannel config, multitrack).
    Ignored,
}

const FOURCC_AVC: [u8; 4] = *b"avc1";
const FOURCC_HEVC: [u8; 4] = *b"hvc1";
const FOURCC_AV1: [u8; 4] = *b"av01";
const FOURCC_VP9: [u8; 4] = *b"vp09";

fn si24(b: &[u8]) -> i32 {
    // Sign-extend a big-endian 24-bit value.
    (i32::from(b[0]) << 24 | i32::from(b[1]) << 16 | i32::from(b[2]) << 8) >> 8
}

/// Parses the body of an RTMP video message / FLV video tag. `timestamp_ms` is the message
/// timestamp (the DTS).
pub fn parse_video_tag(timestamp_ms: u64, body: &Bytes) -> Result<VideoTag, FlvError> {
    let Some(&b0) = body.first() else { return Err(FlvError::Truncated("video tag header")) };
    if b0 & 0x80 != 0 {
        return parse_ex_video_tag(timestamp_ms, body);
    }
    let frame_type = b0 >> 4;
    let codec = match b0 & 0x0f {
        7 => VideoCodec::Avc,
        12 => VideoCodec::Hevc,
        other => return Err(FlvError::UnsupportedVideoCodec(other)),
    };
    if frame_type == 5 {
        return Ok(VideoTag::Ignored);
    }
    if body.len() < 5 {
        return Err(FlvError::Truncated("AVC video tag header"));
    }
    let cts = si24(&body[2..5]);
    let data = body.slice(5..);
    match body[1] {
        0 => match codec {
            VideoCodec::Avc => Ok(VideoTag::AvcSequenceHeader(parse_avc_decoder_config(&data)?)),
            _ => Ok(VideoTag::SequenceHeader { codec, record: data }),
        },
        1 => Ok(VideoTag::Frame(VideoFrame {
            pts_ms: timestamp_ms.saturating_add_signed(i64::from(cts)),
            dts_ms: timestamp_ms,
            keyframe: frame_type == 1,
            codec,
            nalus: data,
        })),
        2 => Ok(VideoTag::EndOfSequence { codec }),
        _ => Ok(VideoTag::Ignored),
    }
}

fn parse_ex_video_tag(timestamp_ms: u64, body: &Bytes) -> Result<VideoTag, FlvError> {
    let b0 = body[0];
    let frame_type = (b0 >> 4) & 0x07;
    let packet_type = b0 & 0x0f;
    const SEQUENCE_START: u8 = 0;
    const CODED_FRAMES: u8 = 1;
    const SEQUENCE_END: u8 = 2;
    const CODED_FRAMES_X: u8 = 3;
    const METADATA: u8 = 4;
    if frame_type == 5 && packet_type != METADATA {
        return Ok(VideoTag::Ignored);
    }
    if !matches!(packet_type, SEQUENCE_START | CODED_FRAMES | SEQUENCE_END | CODED_FRAMES_X) {
        // Metadata, MPEG-2 TS sequence start, multitrack, ModEx: nothing we use.
        return Ok(VideoTag::Ignored);
    }
    let Some(fourcc) = body.get(1..5) else { return Err(FlvError::Truncated("ExVideoTagHeader FourCC")) };
    let fourcc = [fourcc[0], fourcc[1], fourcc[2], fourcc[3]];
    let codec = match fourcc {
        FOURCC_AVC => VideoCodec::Avc,
        FOURCC_HEVC => VideoCodec::Hevc,
        FOURCC_AV1 => VideoCodec::Av1,
        FOURCC_VP9 => VideoCodec::Vp9,
        _ => return Err(FlvError::UnsupportedFourCc(fourcc)),
    };
    let data = body.slice(5..);
    match packet_type {
        SEQUENCE_START => match codec {
            VideoCodec::Avc => Ok(VideoTag::AvcSequenceHeader(parse_avc_decoder_config(&data)?)),
            _ => Ok(VideoTag::SequenceHeader { codec, record: data }),
        },
        SEQUENCE_END => Ok(VideoTag::EndOfSequence { codec }),
        _ => {
            let (cts, nalus) = if packet_type == CODED_FRAMES && matches!(codec, VideoCodec::Avc | VideoCodec::Hevc) {
                let Some(c) = data.get(0..3) else { return Err(FlvError::Truncated("composition time")) };
                (si24(c), data.slice(3..))
            } else {
                (0, data)
            };
            Ok(VideoTag::Frame(VideoFrame {
                pts_ms: timestamp_ms.saturating_add_signed(i64::from(cts)),
                dts_ms: timestamp_ms,
                keyframe: frame_type == 1,
                codec,
                nalus,
            }))
        }
    }
}

/// Parses an AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1) and its first SPS.
pub fn parse_avc_decoder_config(record: &Bytes) -> Result<AvcConfig, FlvError> {
    let r = &record[..];
    if r.len() < 7 {
        return Err(FlvError::InvalidAvcConfig("shorter than 7 bytes"));
    }
    if r[0] != 1 {
        return Err(FlvError::InvalidAvcConfig("configurationVersion is not 1"));
    }
    let (profile, compatibility, level) = (r[1], r[2], r[3]);
    let nal_length_size = (r[4] & 0x03) + 1;
    if nal_length_size == 3 {
        return Err(FlvError::InvalidAvcConfig("NAL length size 3"));
    }
    let mut pos = 5;
    let read_sets = |count: usize, pos: &mut usize| -> Result<Vec<Bytes>, FlvError> {
        let mut sets = Vec::with_capacity(count);
        for _ in 0..count {
            let len = r.get(*pos..*pos + 2).ok_or(FlvError::InvalidAvcConfig("truncated parameter set length"))?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            let start = *pos + 2;
            if start + len > r.len() {
                return Err(FlvError::InvalidAvcConfig("truncated parameter set"));
            }
            sets.push(record.slice(start..start + len));
            *pos = start + len;
        }
        Ok(sets)
    };
    let num_sps = usize::from(r[pos] & 0x1f);
    pos += 1;
    let sps = read_sets(num_sps, &mut pos)?;
    let num_pps = usize::from(*r.get(pos).ok_or(FlvError::InvalidAvcConfig("missing PPS count"))?);
    pos += 1;
    let pps = read_sets(num_pps, &mut pos)?;
    // Anything after (the High profile chroma/bit depth extension) is not needed.
    let first = sps.first().ok_or(FlvError::InvalidAvcConfig("no SPS"))?;
    let parsed = parse_sps(first)?;
    Ok(AvcConfig {
        record: record.clone(),
        sps,
        pps,
        nal_length_size,
        profile,
        compatibility,
        level,
        width: parsed.width,
        height: parsed.height,
        codec_string: format!("avc1.{profile:02X}{compatibility:02X}{level:02X}"),
    })
}

/// Iterates over the NAL units of AVCC data (each prefixed by a `length_size`-byte big-endian
/// length). Yields an error, then stops, if a length runs past the end.
pub fn nal_units(data: &[u8], length_size: u8) -> NalUnits<'_> {
    NalUnits { data, length_size: usize::from(length_size), failed: false }
}

/// Iterator returned by [`nal_units`].
#[derive(Debug)]
pub struct NalUnits<'a> {
    data: &'a [u8],
    length_size: usize,
    failed: bool,
}

impl<'a> Iterator for NalUnits<'a> {
    type Item = Result<&'a [u8], FlvError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.data.is_empty() || self.failed {
            return None;
        }
        let n = self.length_size;
        let fail = |s: &mut Self| {
            s.failed = true;
            Some(Err(FlvError::InvalidNalFraming))
        };
        if !(1..=4).contains(&n) || self.data.len() < n {
            return fail(self);
        }
        let len = self.data[..n].iter().fold(0usize, |acc, &b| acc << 8 | usize::from(b));
        let Some(nal) = self.data.get(n..n + len) else { return fail(self) };
        self.data = &self.data[n + len..];
        Some(Ok(nal))
    }
}

/// What we read from an H.264 sequence parameter set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sps {
    pub profile_idc: u8,
    pub constraint_flags: u8,
    pub level_idc: u8,
    pub chroma_format_idc: u32,
    pub bit_depth_luma: u32,
    pub bit_depth_chroma: u32,
    pub frame_mbs_only: bool,
    /// Width and height after frame cropping.
    pub width: u32,
    pub height: u32,
}

/// Bit reader over an RBSP (emulation prevention bytes already removed).
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    fn bit(&mut self) -> Option<u32> {
        let byte = self.data.get(self.pos / 8)?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(u32::from(bit))
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        (0..n).try_fold(0u32, |acc, _| Some(acc << 1 | self.bit()?))
    }

    /// Unsigned exp-Golomb; values that need more than 32 bits are rejected.
    fn ue(&mut self) -> Option<u32> {
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
    fn se(&mut self) -> Option<i64> {
        let k = i64::from(self.ue()?);
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

/// Removes emulation prevention bytes (`00 00 03` → `00 00`).
fn to_rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// Parses an H.264 SPS NAL unit (with its one-byte NAL header) far enough to get the picture size
/// (ITU-T H.264 7.3.2.1.1).
pub fn parse_sps(nal: &[u8]) -> Result<Sps, FlvError> {
    let err = FlvError::InvalidSps;
    let header = *nal.first().ok_or(err("empty"))?;
    if header & 0x1f != 7 {
        return Err(err("not an SPS NAL unit"));
    }
    let rbsp = to_rbsp(&nal[1..]);
    let mut r = BitReader { data: &rbsp, pos: 0 };
    let truncated = || err("truncated");
    let profile_idc = r.bits(8).ok_or_else(truncated)? as u8;
    let constraint_flags = r.bits(8).ok_or_else(truncated)? as u8;
    let level_idc = r.bits(8).ok_or_else(truncated)? as u8;
    let sps_id = r.ue().ok_or_else(truncated)?;
    if sps_id > 31 {
        return Err(err("seq_parameter_set_id > 31"));
    }
    let (mut chroma_format_idc, mut separate_colour_plane, mut bit_depth_luma, mut bit_depth_chroma) = (1, false, 8, 8);
    if matches!(profile_idc, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135) {
        chroma_format_idc = r.ue().ok_or_else(truncated)?;
        if chroma_format_idc > 3 {
            return Err(err("chroma_format_idc > 3"));
        }
        if chroma_format_idc == 3 {
            separate_colour_plane = r.bit().ok_or_else(truncated)? == 1;
        }
        let luma = r.ue().ok_or_else(truncated)?;
        let chroma = r.ue().ok_or_else(truncated)?;
        if luma > 6 || chroma > 6 {
            return Err(err("bit depth above 14"));
        }
        bit_depth_luma = 8 + luma;
        bit_depth_chroma = 8 + chroma;
        let _qpprime_y_zero_transform_bypass = r.bit().ok_or_else(truncated)?;
        if r.bit().ok_or_else(truncated)? == 1 {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit().ok_or_else(truncated)? == 1 {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 }).ok_or_else(truncated)?;
                }
            }
        }
    }
    let _log2_max_frame_num_minus4 = r.ue().ok_or_else(truncated)?;
    match r.ue().ok_or_else(truncated)? {
        0 => {
            let _log2_max_poc_lsb_minus4 = r.ue().ok_or_else(truncated)?;
        }
        1 => {
            let _delta_pic_order_always_zero = r.bit().ok_or_else(truncated)?;
            let _offset_for_non_ref_pic = r.se().ok_or_else(truncated)?;
            let _offset_for_top_to_bottom_field = r.se().ok_or_else(truncated)?;
            let cycle = r.ue().ok_or_else(truncated)?;
            if cycle > 255 {
                return Err(err("num_ref_frames_in_pic_order_cnt_cycle > 255"));
            }
            for _ in 0..cycle {
                r.se().ok_or_else(truncated)?;
            }
        }
        2 => {}
        _ => return Err(err("pic_order_cnt_type > 2")),
    }
    let _max_num_ref_frames = r.ue().ok_or_else(truncated)?;
    let _gaps_in_frame_num_allowed = r.bit().ok_or_else(truncated)?;
    let width_mbs = u64::from(r.ue().ok_or_else(truncated)?) + 1;
    let height_map_units = u64::from(r.ue().ok_or_else(truncated)?) + 1;
    let frame_mbs_only = r.bit().ok_or_else(truncated)? == 1;
    if !frame_mbs_only {
        let _mb_adaptive_frame_field = r.bit().ok_or_else(truncated)?;
    }
    let _direct_8x8_inference = r.bit().ok_or_else(truncated)?;
    let mut crop = [0u64; 4];
    if r.bit().ok_or_else(truncated)? == 1 {
        for c in &mut crop {
            *c = u64::from(r.ue().ok_or_else(truncated)?);
        }
    }
    // H.264 limits pictures to 139264 macroblocks (level 6.2); 1024 per side is far beyond any
    // stream we could ingest.
    if width_mbs > 1024 || height_map_units > 1024 {
        return Err(err("picture larger than 16384 pixels"));
    }
    let field_factor = if frame_mbs_only { 1 } else { 2 };
    let chroma_array_type = if separate_colour_plane { 0 } else { chroma_format_idc };
    let (crop_x, crop_y) = match chroma_array_type {
        0 => (1, field_factor),
        1 => (2, 2 * field_factor),
        2 => (2, field_factor),
        _ => (1, field_factor),
    };
    let full_width = width_mbs * 16;
    let full_height = height_map_units * 16 * field_factor;
    let crop_w = crop_x * (crop[0] + crop[1]);
    let crop_h = crop_y * (crop[2] + crop[3]);
    if crop_w >= full_width || crop_h >= full_height {
        return Err(err("cropping removes the whole picture"));
    }
    Ok(Sps {
        profile_idc,
        constraint_flags,
        level_idc,
        chroma_format_idc,
        bit_depth_luma,
        bit_depth_chroma,
        frame_mbs_only,
        // Both fit: at most 1024 * 16 * 2.
        width: (full_width - crop_w) as u32,
        height: (full_height - crop_h) as u32,
    })
}

fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            next = (last + r.se()?).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

const AAC_SAMPLE_RATES: [u32; 13] =
    [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];

/// Parses an AAC AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1), including explicit SBR/PS
/// signalling.
pub fn parse_audio_specific_config(asc: &Bytes) -> Result<AacConfig, FlvError> {
    let err = FlvError::InvalidAudioSpecificConfig;
    let mut r = BitReader { data: asc, pos: 0 };
    let truncated = || err("truncated");
    let object_type = |r: &mut BitReader<'_>| -> Option<u32> {
        let t = r.bits(5)?;
        if t == 31 {
            Some(32 + r.bits(6)?)
        } else {
            Some(t)
        }
    };
    let sample_rate = |r: &mut BitReader<'_>| -> Result<u32, FlvError> {
        match r.bits(4).ok_or_else(truncated)? {
            15 => r.bits(24).ok_or_else(truncated),
            i => AAC_SAMPLE_RATES.get(i as usize).copied().ok_or(err("reserved sampling frequency index")),
        }
    };
    let aot = object_type(&mut r).ok_or_else(truncated)?;
    if aot == 0 {
        return Err(err("audio object type 0"));
    }
    let rate = sample_rate(&mut r)?;
    if rate == 0 {
        return Err(err("sampling frequency 0"));
    }
    let channels = match r.bits(4).ok_or_else(truncated)? {
        c @ 0..=6 => c as u8,
        7 | 12 | 14 => 8,
        11 => 7,
        13 => 24,
        _ => return Err(err("reserved channel configuration")),
    };
    if aot == 5 || aot == 29 {
        // Explicit SBR/PS: extension sampling frequency and the underlying object type follow.
        sample_rate(&mut r)?;
        object_type(&mut r).ok_or_else(truncated)?;
    }
    Ok(AacConfig {
        asc: asc.clone(),
        // At most 32 + 63.
        object_type: aot as u8,
        sample_rate: rate,
        channels,
        codec_string: format!("mp4a.40.{aot}"),
    })
}

/// Parses the body of an RTMP audio message / FLV audio tag.
pub fn parse_audio_tag(timestamp_ms: u64, body: &Bytes) -> Result<AudioTag, FlvError> {
    let Some(&b0) = body.first() else { return Err(FlvError::Truncated("audio tag header")) };
    let sound_format = b0 >> 4;
    match sound_format {
        10 => {
            let Some(&packet_type) = body.get(1) else { return Err(FlvError::Truncated("AAC packet type")) };
            let data = body.slice(2..);
            match packet_type {
                0 => Ok(AudioTag::AacSequenceHeader(parse_audio_specific_config(&data)?)),
                _ => Ok(AudioTag::Frame(AudioFrame { pts_ms: timestamp_ms, codec: AudioCodec::Aac, data })),
            }
        }
        9 => parse_ex_audio_tag(timestamp_ms, body),
        2 | 14 => {
            Ok(AudioTag::Frame(AudioFrame { pts_ms: timestamp_ms, codec: AudioCodec::Mp3, data: body.slice(1..) }))
        }
        other => Ok(AudioTag::Frame(AudioFrame {
            pts_ms: timestamp_ms,
            codec: AudioCodec::Other(other),
            data: body.slice(1..),
        })),
    }
}

fn parse_ex_audio_tag(timestamp_ms: u64, body: &Bytes) -> Result<AudioTag, FlvError> {
    let packet_type = body[0] & 0x0f;
    const SEQUENCE_START: u8 = 0;
    const CODED_FRAMES: u8 = 1;
    if !matches!(packet_type, SEQUENCE_START | CODED_FRAMES) {
        return Ok(AudioTag::Ignored);
    }
    let Some(fourcc) = body.get(1..5) else { return Err(FlvError::Truncated("ExAudioTagHeader FourCC")) };
    let fourcc = [fourcc[0], fourcc[1], fourcc[2], fourcc[3]];
    let codec = match &fourcc {
        b"mp4a" => AudioCodec::Aac,
        b"Opus" => AudioCodec::Opus,
        b".mp3" => AudioCodec::Mp3,
        _ => return Err(FlvError::UnsupportedFourCc(fourcc)),
    };
    let data = body.slice(5..);
    Ok(match (packet_type, codec) {
        (SEQUENCE_START, AudioCodec::Aac) => AudioTag::AacSequenceHeader(parse_audio_specific_config(&data)?),
        (SEQUENCE_START, _) => AudioTag::SequenceHeader { codec, config: data },
        _ => AudioTag::Frame(AudioFrame { pts_ms: timestamp_ms, codec, data }),
    })
}

/// FLV tag types.
pub mod tag_type {
    pub const AUDIO: u8 = 8;
    pub const VIDEO: u8 = 9;
    pub const SCRIPT_DATA: u8 = 18;
}

/// One FLV tag from a file or an RTMP aggregate message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlvTag {
    /// See [`tag_type`].
    pub tag_type: u8,
    /// Timestamp in milliseconds (32 bits: 24 plus the extension byte).
    pub timestamp: u32,
    pub body: Bytes,
}

/// Size of an FLV tag header.
pub const TAG_HEADER_SIZE: usize = 11;

/// Reads one tag and its trailing PreviousTagSize from the start of `buf`; returns the tag and the
/// bytes used. [`FlvError::Incomplete`] when `buf` ends before that.
pub fn read_tag(buf: &Bytes) -> Result<(FlvTag, usize), FlvError> {
    let Some(h) = buf.get(..TAG_HEADER_SIZE) else { return Err(FlvError::Incomplete) };
    // Bit 5 is the encryption filter flag; the top two bits are reserved.
    let tag_type = h[0] & 0x1f;
    let size = usize::from(h[1]) << 16 | usize::from(h[2]) << 8 | usize::from(h[3]);
    let timestamp = u32::from(h[7]) << 24 | u32::from(h[4]) << 16 | u32::from(h[5]) << 8 | u32::from(h[6]);
    let end = TAG_HEADER_SIZE + size;
    if buf.len() < end + 4 {
        return Err(FlvError::Incomplete);
    }
    Ok((FlvTag { tag_type, timestamp, body: buf.slice(TAG_HEADER_SIZE..end) }, end + 4))
}

/// Header of an FLV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlvFileHeader {
    pub version: u8,
    pub has_audio: bool,
    pub has_video: bool,
}

/// Reads the FLV file header and PreviousTagSize0; returns it and the bytes used (the first tag
/// follows).
pub fn read_file_header(buf: &[u8]) -> Result<(FlvFileHeader, usize), FlvError> {
    let Some(h) = buf.get(..9) else {
        return if b"FLV".starts_with(&buf[..buf.len().min(3)]) {
            Err(FlvError::Incomplete)
        } else {
            Err(FlvError::NotFlv)
        };
    };
    if &h[..3] != b"FLV" {
        return Err(FlvError::NotFlv);
    }
    let header_size = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) as usize;
    if !(9..=1024).contains(&header_size) {
        return Err(FlvError::NotFlv);
    }
    if buf.len() < header_size + 4 {
        return Err(FlvError::Incomplete);
    }
    Ok((FlvFileHeader { version: h[3], has_audio: h[4] & 0x04 != 0, has_video: h[4] & 0x01 != 0 }, header_size + 4))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Bit writer used to build test SPS NAL units.
    struct BitWriter {
        bytes: Vec<u8>,
        bits: usize,
    }

    impl BitWriter {
        fn put(&mut self, value: u64, n: u32) {
            for i in (0..n).rev() {
                if self.bits.is_multiple_of(8) {
                    self.bytes.push(0);
                }
                let bit = ((value >> i) & 1) as u8;
                let last = self.bytes.len() - 1;
                self.bytes[last] |= bit << (7 - self.bits % 8);
                self.bits += 1;
            }
        }
        fn ue(&mut self, v: u32) {
            let v = u64::from(v) + 1;
            let len = 64 - v.leading_zeros();
            self.put(0, len - 1);
            self.put(v, len);
        }
    }

    /// A High profile (100) level 3.1 SPS for `width`x`height` (4:2:0, progressive), with
    /// cropping when the size is not a multiple of 16.
    pub(crate) fn test_sps(width: u32, height: u32) -> Vec<u8> {
        let mut w = BitWriter { bytes: vec![0x67], bits: 8 };
        w.put(100, 8); // profile_idc
        w.put(0, 8); // constraint flags
        w.put(31, 8); // level_idc
        w.ue(0); // sps id
        w.ue(1); // chroma_format_idc 4:2:0
        w.ue(0); // bit depth luma - 8
        w.ue(0); // bit depth chroma - 8
        w.put(0, 1); // qpprime
        w.put(1, 1); // seq_scaling_matrix_present
        for i in 0..8 {
            // One list present with a few deltas, to exercise the skip.
            if i == 0 {
                w.put(1, 1);
                for _ in 0..16 {
                    w.ue(1); // se(+1)
                }
            } else {
                w.put(0, 1);
            }
        }
        w.ue(0); // log2_max_frame_num - 4
        w.ue(0); // poc type 0
        w.ue(2); // log2_max_poc_lsb - 4
        w.ue(4); // max_num_ref_frames
        w.put(0, 1); // gaps
        let mbs_w = width.div_ceil(16);
        let mbs_h = height.div_ceil(16);
        w.ue(mbs_w - 1);
        w.ue(mbs_h - 1);
        w.put(1, 1); // frame_mbs_only
        w.put(1, 1); // direct_8x8
        let crop_r = (mbs_w * 16 - width) / 2;
        let crop_b = (mbs_h * 16 - height) / 2;
        if crop_r + crop_b > 0 {
            w.put(1, 1);
            w.ue(0);
            w.ue(crop_r);
            w.ue(0);
            w.ue(crop_b);
        } else {
            w.put(0, 1);
        }
        w.put(0, 1); // no VUI
        w.put(1, 1); // rbsp stop bit
                     // Insert emulation prevention where needed.
        let mut out = Vec::new();
        let mut zeros = 0;
        for &b in &w.bytes {
            if zeros >= 2 && b <= 3 {
                out.push(3);
                zeros = 0;
            }
            zeros = if b == 0 { zeros + 1 } else { 0 };
            out.push(b);
        }
        out
    }

    pub(crate) fn test_avc_record(width: u32, height: u32) -> Vec<u8> {
        let sps = test_sps(width, height);
        let pps = [0x68, 0xee, 0x3c, 0x80];
        let mut r = vec![1, 100, 0, 31, 0xff, 0xe1];
        r.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        r.extend_from_slice(&sps);
        r.push(1);
        r.extend_from_slice(&(pps.len() as u16).to_be_bytes());
        r.extend_from_slice(&pps);
        r
    }

    #[test]
    fn sps_sizes_with_cropping() {
        for (w, h) in [(1920, 1080), (1280, 720), (640, 360), (854, 480), (16, 16)] {
            let sps = parse_sps(&test_sps(w, h)).unwrap();
            assert_eq!((sps.width, sps.height), (w, h));
            assert_eq!((sps.profile_idc, sps.level_idc, sps.chroma_format_idc), (100, 31, 1));
        }
    }

    #[test]
    fn known_baseline_sps_from_x264() {
        // Constrained Baseline 3.0, 320x240, as x264 writes it.
        let sps = [
            0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03,
            0x03, 0xc0, 0xf1, 0x62, 0xe4, 0x80,
        ];
        let s = parse_sps(&sps).unwrap();
        assert_eq!((s.width, s.height, s.profile_idc), (320, 240, 66));
    }

    #[test]
    fn known_high_profile_1080p_sps_from_x264() {
        // High 4.0, 1920x1088 coded with 8 lines cropped, VUI present.
        let sps = [
            0x67, 0x64, 0x00, 0x28, 0xac, 0xd9, 0x40, 0x78, 0x02, 0x27, 0xe5, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00, 0x04,
            0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x60, 0xc6, 0x58,
        ];
        let s = parse_sps(&sps).unwrap();
        assert_eq!((s.width, s.height, s.profile_idc, s.level_idc), (1920, 1080, 100, 40));
    }

    #[test]
    fn malformed_sps_is_an_error() {
        assert!(parse_sps(&[]).is_err());
        assert!(parse_sps(&[0x68, 0x42]).is_err());
        let good = test_sps(1280, 720);
        let full = parse_sps(&good).unwrap();
        for cut in 1..good.len() {
            // Only the trailing bits we do not read (VUI flag, stop bit) may be cut without error.
            let r = parse_sps(&good[..cut]);
            assert!(r.is_err() || r == Ok(full.clone()), "cut {cut}");
        }
        assert!(parse_sps(&good[..good.len() / 2]).is_err());
        // 40 zero bits: an exp-Golomb code longer than 32 bits.
        assert!(parse_sps(&[0x67, 100, 0, 31, 0, 0, 0, 0, 0, 1]).is_err());
    }

    #[test]
    fn avc_sequence_header_and_frames() {
        let mut body = vec![0x17, 0, 0, 0, 0];
        body.extend_from_slice(&test_avc_record(1280, 720));
        let VideoTag::AvcSequenceHeader(cfg) = parse_video_tag(0, &Bytes::from(body)).unwrap() else { panic!() };
        assert_eq!((cfg.width, cfg.height, cfg.nal_length_size), (1280, 720, 4));
        assert_eq!(cfg.codec_string, "avc1.64001F");
        assert_eq!(cfg.pps.len(), 1);

        // Inter frame with composition time offset 40 ms holding two NAL units.
        let body = Bytes::from_static(&[0x27, 1, 0, 0, 40, 0, 0, 0, 2, 0x41, 0x9a, 0, 0, 0, 1, 0x06]);
        let VideoTag::Frame(f) = parse_video_tag(1000, &body).unwrap() else { panic!() };
        assert_eq!((f.dts_ms, f.pts_ms, f.keyframe, f.codec), (1000, 1040, false, VideoCodec::Avc));
        let nals: Vec<_> = nal_units(&f.nalus, 4).collect::<Result<_, _>>().unwrap();
        assert_eq!(nals, vec![&[0x41, 0x9a][..], &[0x06][..]]);
        // Negative composition offset at the very start clamps to 0.
        let body = Bytes::from_static(&[0x17, 1, 0xff, 0xff, 0xf6, 0, 0, 0, 1, 0x65]);
        let VideoTag::Frame(f) = parse_video_tag(5, &body).unwrap() else { panic!() };
        assert_eq!((f.pts_ms, f.keyframe), (0, true));
        assert_eq!(
            parse_video_tag(0, &Bytes::from_static(&[0x17, 2, 0, 0, 0])).unwrap(),
            VideoTag::EndOfSequence { codec: VideoCodec::Avc }
        );
    }

    #[test]
    fn enhanced_rtmp_video() {
        let mut body = vec![0x90];
        body.extend_from_slice(b"hvc1");
        body.extend_from_slice(&[1, 2, 3]);
        assert_eq!(
            parse_video_tag(0, &Bytes::from(body)).unwrap(),
            VideoTag::SequenceHeader { codec: VideoCodec::Hevc, record: Bytes::from_static(&[1, 2, 3]) }
        );
        let mut body = vec![0x91];
        body.extend_from_slice(b"hvc1");
        body.extend_from_slice(&[0, 0, 33, 0, 0, 0, 1, 0x26]);
        let VideoTag::Frame(f) = parse_video_tag(100, &Bytes::from(body)).unwrap() else { panic!() };
        assert_eq!((f.pts_ms, f.keyframe, f.codec, f.nalus.len()), (133, true, VideoCodec::Hevc, 5));
        let mut body = vec![0xa3];
        body.extend_from_slice(b"av01");
        body.extend_from_slice(&[0x12, 0x00]);
        let VideoTag::Frame(f) = parse_video_tag(100, &Bytes::from(body)).unwrap() else { panic!() };
        assert_eq!((f.pts_ms, f.keyframe, f.codec), (100, false, VideoCodec::Av1));
        let mut body = vec![0x90];
        body.extend_from_slice(b"xxxx");
        assert_eq!(parse_video_tag(0, &Bytes::from(body)), Err(FlvError::UnsupportedFourCc(*b"xxxx")));
        let mut body = vec![0x90];
        body.extend_from_slice(b"avc1");
        body.extend_from_slice(&test_avc_record(640, 360));
        assert!(
            matches!(parse_video_tag(0, &Bytes::from(body)), Ok(VideoTag::AvcSequenceHeader(c)) if c.height == 360)
        );
    }

    #[test]
    fn aac_config_and_frames() {
        // AAC-LC, 44.1 kHz, stereo.
        let body = Bytes::from_static(&[0xaf, 0x00, 0x12, 0x10]);
        let AudioTag::AacSequenceHeader(c) = parse_audio_tag(0, &body).unwrap() else { panic!() };
        assert_eq!((c.object_type, c.sample_rate, c.channels), (2, 44100, 2));
        assert_eq!(c.codec_string, "mp4a.40.2");
        // HE-AAC with explicit SBR: 24 kHz core, extension 48 kHz, underlying AAC-LC.
        let asc = Bytes::from_static(&[0x2b, 0x11, 0x88]);
        let c = parse_audio_specific_config(&asc).unwrap();
        assert_eq!((c.object_type, c.sample_rate, c.channels, c.codec_string.as_str()), (5, 24000, 2, "mp4a.40.5"));
        let body = Bytes::from_static(&[0xaf, 0x01, 0x21, 0x10]);
        assert_eq!(
            parse_audio_tag(23, &body).unwrap(),
            AudioTag::Frame(AudioFrame { pts_ms: 23, codec: AudioCodec::Aac, data: Bytes::from_static(&[0x21, 0x10]) })
        );
        assert!(parse_audio_tag(0, &Bytes::from_static(&[0xaf, 0x00, 0x17, 0x90])).is_err()); // reserved rate index 14
        assert!(parse_audio_tag(0, &Bytes::from_static(&[0xaf])).is_err());
        assert!(parse_audio_tag(0, &Bytes::new()).is_err());
    }

    #[test]
    fn truncated_and_bad_tags_are_errors() {
        assert!(parse_video_tag(0, &Bytes::new()).is_err());
        assert!(parse_video_tag(0, &Bytes::from_static(&[0x17, 0, 0])).is_err());
        assert_eq!(parse_video_tag(0, &Bytes::from_static(&[0x12, 0])), Err(FlvError::UnsupportedVideoCodec(2)));
        let record = test_avc_record(1280, 720);
        for cut in 0..record.len() - 4 {
            let mut body = vec![0x17, 0, 0, 0, 0];
            body.extend_from_slice(&record[..cut]);
            assert!(parse_video_tag(0, &Bytes::from(body)).is_err(), "cut {cut}");
        }
        let bad: Vec<_> = nal_units(&[0, 0, 0, 9, 1], 4).collect();
        assert_eq!(bad, vec![Err(FlvError::InvalidNalFraming)]);
    }

    #[test]
    fn flv_file_tags() {
        let mut file = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
        file.extend_from_slice(&[9, 0, 0, 2, 0x00, 0x01, 0x02, 0x01, 0, 0, 0, 0xaa, 0xbb, 0, 0, 0, 13]);
        let (h, used) = read_file_header(&file).unwrap();
        assert!(h.has_audio && h.has_video);
        let rest = Bytes::from(file[used..].to_vec());
        let (tag, n) = read_tag(&rest).unwrap();
        assert_eq!((tag.tag_type, tag.timestamp, &tag.body[..], n), (9, 0x0100_0102, &[0xaa, 0xbb][..], 17));
        for cut in 0..rest.len() {
            assert_eq!(read_tag(&rest.slice(..cut)), Err(FlvError::Incomplete));
        }
        assert_eq!(read_file_header(b"FL"), Err(FlvError::Incomplete));
        assert_eq!(read_file_header(b"GIF89a..."), Err(FlvError::NotFlv));
    }

    proptest::proptest! {
        #[test]
        fn random_bodies_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256), ts in 0u64..u64::MAX) {
            let b = Bytes::from(bytes);
            let _ = parse_video_tag(ts, &b);
            let _ = parse_audio_tag(ts, &b);
            let _ = parse_sps(&b);
            let _ = parse_avc_decoder_config(&b);
            let _ = parse_audio_specific_config(&b);
            let _ = read_tag(&b);
            let _ = read_file_header(&b);
            let _ = nal_units(&b, 4).count();
        }

        #[test]
        fn random_sps_after_valid_prefix_never_panics(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let mut nal = vec![0x67, 100, 0, 31];
            nal.extend_from_slice(&tail);
            let _ = parse_sps(&nal);
        }
    }
}
