//! H.264: NAL unit framing (Annex B start codes, AVCC length prefixes), the sequence parameter
//! set, the `avcC` record (AVCDecoderConfigurationRecord, ISO/IEC 14496-15 5.3.3.1) and the RFC
//! 6381 codec string.
//!
//! Encoders and MPEG-TS speak Annex B; FLV, CMAF and FFmpeg's decoder (with `avcC` extradata)
//! speak AVCC. The packager always stores 4-byte lengths.

use bytes::{BufMut, Bytes, BytesMut};

use std::collections::VecDeque;

use super::{BitReader, CodecError, MediaInput, VideoCodec, VideoConfig, VideoFrame};

/// NAL unit type of an IDR slice.
pub const NAL_IDR: u8 = 5;
/// NAL unit type of a sequence parameter set.
pub const NAL_SPS: u8 = 7;
/// NAL unit type of a picture parameter set.
pub const NAL_PPS: u8 = 8;
/// NAL unit type of an access unit delimiter.
pub const NAL_AUD: u8 = 9;
/// NAL unit type of filler data.
pub const NAL_FILLER: u8 = 12;

/// The type of a NAL unit (low five bits of its header byte); `None` for an empty unit.
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|h| h & 0x1f)
}

/// The RFC 6381 codec string of an H.264 track: `avc1.PPCCLL` (profile, constraint flags,
/// level), lowercase hex, the one spelling every playlist uses.
pub fn codec_string_of(profile: u8, constraints: u8, level: u8) -> String {
    format!("avc1.{profile:02x}{constraints:02x}{level:02x}")
}

/// [`codec_string_of`] from the first SPS (with its NAL header byte). `None` if it is too short
/// to hold profile and level.
pub fn codec_string(sps: &[u8]) -> Option<String> {
    match sps {
        [_, profile, constraints, level, ..] => Some(codec_string_of(*profile, *constraints, *level)),
        _ => None,
    }
}

/// The NAL units of Annex B data (3- or 4-byte start codes), without their start codes. Trailing
/// zero bytes of a unit (the first byte of a 4-byte start code, `trailing_zero_8bits`) are
/// dropped; empty units are skipped. Bytes before the first start code are not a unit.
pub fn annexb_nal_units(data: &[u8]) -> AnnexBNalUnits<'_> {
    AnnexBNalUnits { data, next: find_start_code(data, 0).map(|at| at + 3) }
}

/// Iterator returned by [`annexb_nal_units`].
#[derive(Debug, Clone)]
pub struct AnnexBNalUnits<'a> {
    data: &'a [u8],
    /// Where the next unit starts (just after its start code).
    next: Option<usize>,
}

impl<'a> Iterator for AnnexBNalUnits<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            let start = self.next?;
            let code = find_start_code(self.data, start);
            self.next = code.map(|at| at + 3);
            let mut end = code.unwrap_or(self.data.len());
            while end > start && self.data[end - 1] == 0 {
                end -= 1;
            }
            if end > start {
                return Some(&self.data[start..end]);
            }
        }
    }
}

/// Position of the next `00 00 01` at or after `from`.
fn find_start_code(data: &[u8], from: usize) -> Option<usize> {
    data.get(from..)?.windows(3).position(|w| w == [0, 0, 1]).map(|at| at + from)
}

/// Appends one NAL unit behind its 4-byte big-endian length. `false` (nothing written) for a
/// unit longer than 4 GiB.
pub fn put_avcc_nal(out: &mut BytesMut, nal: &[u8]) -> bool {
    let Ok(len) = u32::try_from(nal.len()) else { return false };
    out.put_u32(len);
    out.put_slice(nal);
    true
}

/// Rewrites Annex B data as AVCC with 4-byte lengths, every NAL unit kept.
pub fn annexb_to_avcc(data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 16);
    for nal in annexb_nal_units(data) {
        put_avcc_nal(&mut out, nal);
    }
    out.freeze()
}

/// Iterates over the NAL units of AVCC data (each behind a `length_size`-byte big-endian
/// length). Yields an error, then stops, if a length runs past the end.
pub fn avcc_nal_units(data: &[u8], length_size: u8) -> AvccNalUnits<'_> {
    AvccNalUnits { data, length_size: usize::from(length_size), failed: false }
}

/// Iterator returned by [`avcc_nal_units`].
#[derive(Debug)]
pub struct AvccNalUnits<'a> {
    data: &'a [u8],
    length_size: usize,
    failed: bool,
}

impl<'a> Iterator for AvccNalUnits<'a> {
    type Item = Result<&'a [u8], CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.data.is_empty() || self.failed {
            return None;
        }
        let n = self.length_size;
        let fail = |s: &mut Self| {
            s.failed = true;
            Some(Err(CodecError::InvalidNalFraming))
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

/// AVCC with `length_size`-byte lengths → AVCC with 4-byte lengths (the same bytes when they
/// already are). `None` if the framing is broken.
pub fn to_avcc4(data: &Bytes, length_size: u8) -> Option<Bytes> {
    if length_size == 4 {
        return avcc_nal_units(data, 4).all(|n| n.is_ok()).then(|| data.clone());
    }
    let mut out = BytesMut::with_capacity(data.len() + data.len() / 16 + 16);
    for nal in avcc_nal_units(data, length_size) {
        if !put_avcc_nal(&mut out, nal.ok()?) {
            return None;
        }
    }
    Some(out.freeze())
}

/// Annex B access units (an MPEG-TS PES, a WebRTC frame) to [`MediaInput`]s: the SPS and PPS
/// they carry become a [`MediaInput::VideoConfig`] whenever they change (before the frame that
/// brought them), the rest of each unit a [`MediaInput::Video`] as AVCC with 4-byte lengths,
/// delimiters and filler removed. Frames before the first valid parameter sets are dropped.
#[derive(Debug, Default)]
pub struct AnnexbFrames {
    /// Last parameter sets emitted.
    emitted: Option<(Vec<Bytes>, Vec<Bytes>)>,
    /// SPS/PPS seen in the stream, the most recent used.
    sps: Option<Bytes>,
    pps: Option<Bytes>,
}

impl AnnexbFrames {
    /// Converts one access unit (`pts`/`dts` in 90 kHz ticks) into `events`. `false`: dropped
    /// (no configuration yet, or nothing but parameter sets and framing).
    pub fn push(&mut self, pts: u64, dts: u64, annexb: &Bytes, events: &mut VecDeque<MediaInput>) -> bool {
        let mut out = BytesMut::with_capacity(annexb.len() + 16);
        let mut keyframe = false;
        let (mut new_sps, mut new_pps) = (None, None);
        for nal in annexb_nal_units(annexb) {
            match nal_type(nal) {
                // Access unit delimiter, filler: framing only.
                Some(NAL_AUD | NAL_FILLER) | None => continue,
                Some(NAL_SPS) => {
                    new_sps = Some(annexb.slice_ref(nal));
                    continue;
                }
                Some(NAL_PPS) => {
                    new_pps = Some(annexb.slice_ref(nal));
                    continue;
                }
                Some(NAL_IDR) => keyframe = true,
                _ => {}
            }
            put_avcc_nal(&mut out, nal);
        }
        if new_sps.is_some() {
            self.sps = new_sps;
        }
        if new_pps.is_some() {
            self.pps = new_pps;
        }
        if let (Some(sps), Some(pps)) = (&self.sps, &self.pps) {
            let sets = (vec![sps.clone()], vec![pps.clone()]);
            if self.emitted.as_ref() != Some(&sets) {
                match AvcConfig::from_parameter_sets(sps.clone(), pps.clone()) {
                    Ok(config) => {
                        events.push_back(MediaInput::VideoConfig(config));
                        self.emitted = Some(sets);
                    }
                    // A bad SPS: forget it and wait for the next one.
                    Err(_) => self.sps = None,
                }
            }
        }
        if self.emitted.is_none() || out.is_empty() {
            return false;
        }
        // B-frames: pts ≥ dts in a valid stream; clamp a broken one.
        let pts = pts.max(dts);
        events.push_back(MediaInput::Video(VideoFrame { dts, pts, keyframe, data: out.freeze() }));
        true
    }
}

/// A parsed H.264 decoder configuration: the parameter sets and what the first SPS says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
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
}

impl AvcConfig {
    /// Parses an AVCDecoderConfigurationRecord (the body of an MP4 `avcC` box, the FLV AVC
    /// sequence header) and its first SPS.
    pub fn parse_record(record: &Bytes) -> Result<Self, CodecError> {
        let r = &record[..];
        if r.len() < 7 {
            return Err(CodecError::InvalidAvcConfig("shorter than 7 bytes"));
        }
        if r[0] != 1 {
            return Err(CodecError::InvalidAvcConfig("configurationVersion is not 1"));
        }
        let (profile, compatibility, level) = (r[1], r[2], r[3]);
        let nal_length_size = (r[4] & 0x03) + 1;
        if nal_length_size == 3 {
            return Err(CodecError::InvalidAvcConfig("NAL length size 3"));
        }
        let mut pos = 5;
        let read_sets = |count: usize, pos: &mut usize| -> Result<Vec<Bytes>, CodecError> {
            let mut sets = Vec::with_capacity(count);
            for _ in 0..count {
                let len =
                    r.get(*pos..*pos + 2).ok_or(CodecError::InvalidAvcConfig("truncated parameter set length"))?;
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                let start = *pos + 2;
                if start + len > r.len() {
                    return Err(CodecError::InvalidAvcConfig("truncated parameter set"));
                }
                sets.push(record.slice(start..start + len));
                *pos = start + len;
            }
            Ok(sets)
        };
        let num_sps = usize::from(r[pos] & 0x1f);
        pos += 1;
        let sps = read_sets(num_sps, &mut pos)?;
        let num_pps = usize::from(*r.get(pos).ok_or(CodecError::InvalidAvcConfig("missing PPS count"))?);
        pos += 1;
        let pps = read_sets(num_pps, &mut pos)?;
        // Anything after (the High profile chroma/bit depth extension) is not needed.
        let first = sps.first().ok_or(CodecError::InvalidAvcConfig("no SPS"))?;
        let parsed = parse_sps(first)?;
        Ok(AvcConfig {
            sps,
            pps,
            nal_length_size,
            profile,
            compatibility,
            level,
            width: parsed.width,
            height: parsed.height,
        })
    }

    /// The configuration of an Annex B stream from its latest SPS and PPS (frames then carry
    /// 4-byte lengths once rewritten).
    pub fn from_parameter_sets(sps: Bytes, pps: Bytes) -> Result<Self, CodecError> {
        let parsed = parse_sps(&sps)?;
        if sps.len() > usize::from(u16::MAX) || pps.len() > usize::from(u16::MAX) {
            return Err(CodecError::InvalidAvcConfig("parameter set longer than 65535 bytes"));
        }
        if pps.is_empty() {
            return Err(CodecError::InvalidAvcConfig("empty PPS"));
        }
        Ok(AvcConfig {
            profile: parsed.profile_idc,
            compatibility: parsed.constraint_flags,
            level: parsed.level_idc,
            width: parsed.width,
            height: parsed.height,
            sps: vec![sps],
            pps: vec![pps],
            nal_length_size: 4,
        })
    }

    /// RFC 6381 codec string (see [`codec_string_of`]).
    pub fn codec_string(&self) -> String {
        codec_string_of(self.profile, self.compatibility, self.level)
    }
}

/// An AVCDecoderConfigurationRecord with 4-byte NAL lengths from parameter sets (what the CMAF
/// `avcC` box holds, and FFmpeg's decoder takes as extradata). Profile and level come from the
/// first SPS. No High-profile extension: players read chroma format and bit depth from the SPS.
pub fn decoder_config_record<P: AsRef<[u8]>>(sps: &[P], pps: &[P]) -> Result<Vec<u8>, CodecError> {
    let first = sps.first().map(AsRef::as_ref).ok_or(CodecError::InvalidAvcConfig("no SPS"))?;
    let (Some(profile_level), false) = (first.get(1..4), pps.is_empty()) else {
        return Err(CodecError::InvalidAvcConfig("SPS shorter than 4 bytes, or no PPS"));
    };
    // avcC: 5-bit SPS count, 8-bit PPS count, 16-bit lengths.
    let bad = |p: &P| p.as_ref().is_empty() || p.as_ref().len() > usize::from(u16::MAX);
    if sps.len() > 31 || pps.len() > 255 || sps.iter().chain(pps).any(bad) {
        return Err(CodecError::InvalidAvcConfig("parameter set count or length out of range"));
    }
    let size = 7 + sps.iter().chain(pps).map(|p| 2 + p.as_ref().len()).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.push(1); // configurationVersion
    out.extend_from_slice(profile_level);
    out.push(0xff); // reserved + lengthSizeMinusOne = 3
    out.push(0xe0 | sps.len() as u8); // <= 31, checked above
    for set in sps {
        out.extend_from_slice(&(set.as_ref().len() as u16).to_be_bytes()); // <= u16::MAX, checked
        out.extend_from_slice(set.as_ref());
    }
    out.push(pps.len() as u8); // <= 255, checked above
    for set in pps {
        out.extend_from_slice(&(set.as_ref().len() as u16).to_be_bytes());
        out.extend_from_slice(set.as_ref());
    }
    Ok(out)
}

/// The packager's track config of an encoder's output, from its global header (Annex B SPS and
/// PPS, as libx264 and the hardware encoders write it) and the size it was opened with.
pub fn video_config_from_annexb(header: &[u8], width: u32, height: u32) -> Option<VideoConfig> {
    let of_type = |t: u8| -> Vec<Vec<u8>> {
        annexb_nal_units(header).filter(|n| nal_type(n) == Some(t)).map(<[u8]>::to_vec).collect()
    };
    let (sps, pps) = (of_type(NAL_SPS), of_type(NAL_PPS));
    let codec_string = codec_string(sps.first()?)?;
    if pps.is_empty() {
        return None;
    }
    Some(VideoConfig {
        codec: VideoCodec::Avc1,
        sps,
        pps,
        width: u16::try_from(width).ok()?,
        height: u16::try_from(height).ok()?,
        codec_string,
    })
}

/// A raw H.264 elementary stream (an `.h264` file, Annex B) cut into access units: what tools and
/// tests that read ffmpeg's output need to feed the packager.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Elementary {
    /// The distinct SPS, in order of appearance.
    pub sps: Vec<Vec<u8>>,
    /// The distinct PPS, in order of appearance.
    pub pps: Vec<Vec<u8>>,
    /// Access units as AVCC with 4-byte lengths (parameter sets and delimiters removed), and
    /// whether each is an IDR.
    pub access_units: Vec<(Bytes, bool)>,
}

/// Groups an Annex B stream's NAL units into access units: a new one starts at an SEI, SPS, PPS
/// or delimiter, or at a slice with `first_mb_in_slice == 0`, once the current one holds a slice
/// (ITU-T H.264 7.4.1.2.3, enough for one slice group).
pub fn split_access_units(stream: &[u8]) -> Elementary {
    let mut es = Elementary::default();
    let mut current = BytesMut::new();
    let (mut has_slice, mut idr) = (false, false);
    for nal in annexb_nal_units(stream) {
        let Some(kind) = nal_type(nal) else { continue };
        let is_slice = kind == 1 || kind == NAL_IDR;
        // first_mb_in_slice is ue(v): a leading 1 bit is the value 0.
        let starts_unit = matches!(kind, 6..=9) || (is_slice && nal.get(1).is_some_and(|b| b & 0x80 != 0));
        if starts_unit && has_slice {
            es.access_units.push((current.split().freeze(), idr));
            (has_slice, idr) = (false, false);
        }
        match kind {
            NAL_SPS if !es.sps.iter().any(|s| s == nal) => es.sps.push(nal.to_vec()),
            NAL_PPS if !es.pps.iter().any(|p| p == nal) => es.pps.push(nal.to_vec()),
            NAL_SPS | NAL_PPS | NAL_AUD => {}
            _ => {
                put_avcc_nal(&mut current, nal);
                has_slice |= is_slice;
                idr |= kind == NAL_IDR;
            }
        }
    }
    if has_slice {
        es.access_units.push((current.freeze(), idr));
    }
    es
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
pub fn parse_sps(nal: &[u8]) -> Result<Sps, CodecError> {
    let err = CodecError::InvalidSps;
    let header = *nal.first().ok_or(err("empty"))?;
    if header & 0x1f != NAL_SPS {
        return Err(err("not an SPS NAL unit"));
    }
    let rbsp = to_rbsp(&nal[1..]);
    let mut r = BitReader::new(&rbsp);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{test_avc_record, test_sps, X264_BASELINE_SPS};

    #[test]
    fn codec_strings_are_lowercase() {
        assert_eq!(codec_string(&[0x67, 0x64, 0x00, 0x1f, 0xac]).as_deref(), Some("avc1.64001f"));
        assert_eq!(codec_string(&[0x67, 0x42]), None);
        let config = AvcConfig::parse_record(&Bytes::from(test_avc_record(1280, 720))).unwrap();
        assert_eq!(config.codec_string(), "avc1.64001f");
    }

    #[test]
    fn annexb_splits_three_and_four_byte_start_codes_and_strips_trailing_zeros() {
        let data = [0, 0, 0, 1, 9, 0xF0, 0, 0, 1, 0x65, 1, 2, 0, 0, 0, 0, 1, 0x41, 3];
        let nals: Vec<&[u8]> = annexb_nal_units(&data).collect();
        assert_eq!(nals, vec![&[9, 0xF0][..], &[0x65, 1, 2][..], &[0x41, 3][..]]);
        let stream = [0, 0, 0, 1, 0x67, 0x64, 0x00, 0x1f, 0, 0, 1, 0x68, 0xee, 0, 0, 0, 1, 0x65, 0x88, 0x80];
        assert_eq!(&annexb_to_avcc(&stream[8..13])[..], [0, 0, 0, 2, 0x68, 0xee]);
        assert_eq!(annexb_nal_units(&[1, 2, 3]).count(), 0);
        assert_eq!(annexb_nal_units(&[0, 0, 1, 0, 0, 1]).count(), 0);
    }

    #[test]
    fn encoder_header_gives_a_track_config_and_its_record() {
        let stream = [0, 0, 0, 1, 0x67, 0x64, 0x00, 0x1f, 0, 0, 1, 0x68, 0xee, 0, 0, 0, 1, 0x65, 0x88, 0x80];
        let config = video_config_from_annexb(&stream[..13], 640, 360).unwrap();
        assert_eq!(config.codec_string, "avc1.64001f");
        assert_eq!((config.sps.len(), config.pps.len()), (1, 1));
        assert_eq!(
            decoder_config_record(&config.sps, &config.pps).unwrap(),
            [1, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0, 4, 0x67, 0x64, 0x00, 0x1f, 1, 0, 2, 0x68, 0xee]
        );
        assert!(video_config_from_annexb(&stream[13..], 640, 360).is_none());
        assert!(decoder_config_record::<Vec<u8>>(&[vec![0x67, 1]], &[vec![0x68]]).is_err());
        assert!(decoder_config_record::<Vec<u8>>(&[vec![0x67, 1, 2, 3]], &[]).is_err());
    }

    #[test]
    fn record_round_trips_through_the_parser() {
        let sps = Bytes::from(test_sps(854, 480));
        let pps = Bytes::from_static(&[0x68, 0xee, 0x3c, 0x80]);
        let record = decoder_config_record(&[&sps[..]], &[&pps[..]]).unwrap();
        let parsed = AvcConfig::parse_record(&Bytes::from(record)).unwrap();
        assert_eq!(parsed, AvcConfig::from_parameter_sets(sps, pps).unwrap());
        assert_eq!((parsed.width, parsed.height, parsed.nal_length_size), (854, 480, 4));
    }

    #[test]
    fn access_units_split_at_delimiters_and_first_slices() {
        let mut stream = Vec::new();
        for nal in [
            &[0x09, 0xf0][..],
            &[0x67, 0x64, 0, 0x1f],
            &[0x68, 0xee],
            &[0x65, 0x88, 1],
            &[0x65, 0x08, 2], // a second slice of the same IDR picture (first_mb_in_slice != 0)
            &[0x41, 0x9a, 3], // no delimiter: a first slice starts the next unit
            &[0x09, 0xf0],
            &[0x67, 0x64, 0, 0x1f],
            &[0x41, 0x9a, 4],
        ] {
            stream.extend_from_slice(&[0, 0, 0, 1]);
            stream.extend_from_slice(nal);
        }
        let es = split_access_units(&stream);
        assert_eq!((es.sps.len(), es.pps.len()), (1, 1));
        let units: Vec<(&[u8], bool)> = es.access_units.iter().map(|(d, k)| (&d[..], *k)).collect();
        assert_eq!(
            units,
            [
                (&[0, 0, 0, 3, 0x65, 0x88, 1, 0, 0, 0, 3, 0x65, 0x08, 2][..], true),
                (&[0, 0, 0, 3, 0x41, 0x9a, 3][..], false),
                (&[0, 0, 0, 3, 0x41, 0x9a, 4][..], false),
            ]
        );
    }

    #[test]
    fn avcc_framing() {
        let nals: Vec<_> = avcc_nal_units(&[0, 0, 0, 2, 0x41, 0x9a, 0, 0, 0, 1, 0x06], 4).collect();
        assert_eq!(nals, vec![Ok(&[0x41, 0x9a][..]), Ok(&[0x06][..])]);
        let bad: Vec<_> = avcc_nal_units(&[0, 0, 0, 9, 1], 4).collect();
        assert_eq!(bad, vec![Err(CodecError::InvalidNalFraming)]);
        let short = Bytes::from_static(&[0, 2, 0x65, 7, 0, 1, 0x41]);
        assert_eq!(&to_avcc4(&short, 2).unwrap()[..], [0, 0, 0, 2, 0x65, 7, 0, 0, 0, 1, 0x41]);
        assert_eq!(to_avcc4(&Bytes::from_static(&[0, 9, 1]), 2), None);
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
        let s = parse_sps(X264_BASELINE_SPS).unwrap();
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
    fn truncated_records_are_errors() {
        let record = test_avc_record(1280, 720);
        for cut in 0..record.len() - 4 {
            assert!(AvcConfig::parse_record(&Bytes::copy_from_slice(&record[..cut])).is_err(), "cut {cut}");
        }
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let b = Bytes::from(bytes);
            let _ = parse_sps(&b);
            let _ = AvcConfig::parse_record(&b);
            let _ = avcc_nal_units(&b, 4).count();
            let _ = to_avcc4(&b, 2);
            let _ = annexb_nal_units(&b).count();
            let _ = video_config_from_annexb(&b, 640, 360);
        }

        #[test]
        fn random_sps_after_valid_prefix_never_panics(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let mut nal = vec![0x67, 100, 0, 31];
            nal.extend_from_slice(&tail);
            let _ = parse_sps(&nal);
        }
    }
}
