//! Fixtures shared by media's unit tests: codec configurations, synthetic frames and the wall
//! clock they arrive at. One place, so a test reads "a 30 fps stream with a keyframe every 30
//! frames" rather than a copy of how to build one.

use bytes::Bytes;

use crate::clock::UnixMillis;
use crate::cmaf::Sample;
use crate::codec::{AudioConfig, VideoCodec, VideoConfig};
use crate::hls::{Rendition, RenditionConfig};

/// The wall clock of the first frame of every synthetic stream.
pub(crate) const T0: UnixMillis = 1_700_000_000_000;

/// x264's Constrained Baseline 3.0 SPS for 320x240.
pub(crate) const X264_BASELINE_SPS: &[u8] = &[
    0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03,
    0xc0, 0xf1, 0x62, 0xe4, 0x80,
];
/// A PPS to go with it.
pub(crate) const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
/// AudioSpecificConfig of AAC-LC, 48 kHz, stereo.
pub(crate) const ASC_48K_STEREO: &[u8] = &[0x11, 0x90];

/// A 640x360 Baseline video track (parameter sets cut short: the packager never parses them).
pub(crate) fn video_config() -> VideoConfig {
    VideoConfig {
        codec: VideoCodec::Avc1,
        sps: vec![vec![0x67, 0x42, 0xc0, 0x1e]],
        pps: vec![vec![0x68, 0xce]],
        width: 640,
        height: 360,
        codec_string: "avc1.42c01e".into(),
    }
}

/// A video track whose SPS really says `width`x`height` (High profile, level 3.1).
pub(crate) fn video_config_of(width: u16, height: u16) -> VideoConfig {
    let sps = test_sps(u32::from(width), u32::from(height));
    VideoConfig {
        codec: VideoCodec::Avc1,
        codec_string: crate::codec::h264::codec_string(&sps).unwrap_or_default(),
        sps: vec![sps],
        pps: vec![PPS.to_vec()],
        width,
        height,
    }
}

/// AAC-LC, 48 kHz, stereo.
pub(crate) fn audio_config() -> AudioConfig {
    AudioConfig { asc: ASC_48K_STEREO.to_vec(), sample_rate: 48_000, channels: 2, codec_string: "mp4a.40.2".into() }
}

/// Video frame `i` of a 30 fps stream (90 kHz) with a keyframe every `gop` frames; `gop` 0 means
/// only frame 0 is one.
pub(crate) fn frame(i: u64, gop: u64) -> Sample {
    Sample {
        dts: i * 3000,
        pts_offset: 0,
        duration: 3000,
        keyframe: if gop == 0 { i == 0 } else { i.is_multiple_of(gop) },
        data: Bytes::from(vec![i as u8; 100]),
    }
}

/// Frame `i` of a 30 fps stream arrives at its media time after [`T0`].
pub(crate) fn now_of(i: u64) -> UnixMillis {
    T0 + (i * 100 / 3) as i64
}

/// A video-only rendition fed frames `0..frames` of a 30 fps stream with a keyframe every `gop`.
pub(crate) fn video_rendition(name: &str, frames: u64, gop: u64) -> Rendition {
    let config = RenditionConfig { name: name.into(), ..RenditionConfig::default() };
    let mut r = Rendition::new(config, Some(video_config()), None).expect("valid test rendition");
    for i in 0..frames {
        let _ = r.push_video(frame(i, gop), now_of(i)).expect("test frames are valid");
    }
    r
}

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

/// A High profile (100) level 3.1 SPS for `width`x`height` (4:2:0, progressive), with cropping
/// when the size is not a multiple of 16 and a scaling list to exercise the parser's skip.
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
                 // Emulation prevention where needed.
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

/// The AVCDecoderConfigurationRecord of [`test_sps`] and a PPS.
pub(crate) fn test_avc_record(width: u32, height: u32) -> Vec<u8> {
    let sps = test_sps(width, height);
    crate::codec::h264::decoder_config_record(&[sps], &[PPS.to_vec()]).expect("valid test parameter sets")
}

/// One access unit for [`ts_video_stream`]: 90 kHz decode and presentation times, and whether it
/// is an IDR (the first one also carries SPS and PPS).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TsAccessUnit {
    pub(crate) dts: u64,
    pub(crate) pts: u64,
    pub(crate) keyframe: bool,
}

/// A video-only MPEG-TS stream as an SRT encoder sends it: PAT and PMT (H.264 on pid 0x100),
/// then one PES per access unit with PTS and DTS. Slices are a few bytes of filler; the demuxer
/// never decodes them.
pub(crate) fn ts_video_stream(units: &[TsAccessUnit]) -> Vec<u8> {
    const PMT_PID: u16 = 0x1000;
    const VIDEO_PID: u16 = 0x100;
    let mut out = Vec::new();
    let section = |table: &[u8], pid: u16, out: &mut Vec<u8>| {
        let mut payload = vec![0]; // pointer_field
        payload.extend_from_slice(table);
        payload.extend_from_slice(&crate::ts::crc32_mpeg2(table).to_be_bytes());
        ts_packets(pid, &payload, &mut 0, out);
    };
    // PAT: program 1 → PMT pid. PMT: PCR on the video pid, one H.264 stream.
    let pat = [0x00, 0xB0, 0x0D, 0x00, 0x01, 0xC1, 0x00, 0x00, 0x00, 0x01, 0xE0 | (PMT_PID >> 8) as u8, PMT_PID as u8];
    section(&pat, 0, &mut out);
    let pmt = [0x02, 0xB0, 0x12, 0x00, 0x01, 0xC1, 0x00, 0x00, 0xE1, 0x00, 0xF0, 0x00, 0x1B, 0xE1, 0x00, 0xF0, 0x00];
    section(&pmt, PMT_PID, &mut out);
    let mut cc = 0u8;
    for (i, unit) in units.iter().enumerate() {
        let mut es = vec![0, 0, 0, 1, 0x09, 0xF0];
        if i == 0 {
            for set in [&test_sps(640, 360)[..], PPS] {
                es.extend_from_slice(&[0, 0, 0, 1]);
                es.extend_from_slice(set);
            }
        }
        es.extend_from_slice(&[0, 0, 1, if unit.keyframe { 0x65 } else { 0x41 }, 0x88, i as u8, 0x80]);
        let mut pes = vec![0, 0, 1, 0xE0, 0, 0, 0x80, 0xC0, 10];
        pes.extend_from_slice(&pes_timestamp(0x3, unit.pts));
        pes.extend_from_slice(&pes_timestamp(0x1, unit.dts));
        pes.extend_from_slice(&es);
        ts_packets(VIDEO_PID, &pes, &mut cc, &mut out);
    }
    out
}

/// A 33-bit PES timestamp with its 4-bit prefix and marker bits.
fn pes_timestamp(prefix: u8, ts: u64) -> [u8; 5] {
    [
        (prefix << 4) | (((ts >> 30) & 0x07) as u8) << 1 | 1,
        (ts >> 22) as u8,
        (((ts >> 15) & 0x7f) as u8) << 1 | 1,
        (ts >> 7) as u8,
        ((ts & 0x7f) as u8) << 1 | 1,
    ]
}

/// Splits one PES or section into 188-byte packets on `pid`, the last one padded with an
/// adaptation field.
fn ts_packets(pid: u16, payload: &[u8], cc: &mut u8, out: &mut Vec<u8>) {
    for (n, chunk) in payload.chunks(184).enumerate() {
        let start = if n == 0 { 0x40 } else { 0 };
        let stuffing = 184 - chunk.len();
        let afc = if stuffing > 0 { 0x30 } else { 0x10 };
        out.extend_from_slice(&[0x47, start | (pid >> 8) as u8, pid as u8, afc | *cc]);
        *cc = (*cc + 1) & 0x0f;
        if stuffing > 0 {
            out.push((stuffing - 1) as u8);
            if stuffing > 1 {
                out.push(0);
                out.extend(std::iter::repeat_n(0xFF, stuffing - 2));
            }
        }
        out.extend_from_slice(chunk);
    }
}
