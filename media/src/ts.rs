//! MPEG-TS demuxer (ISO/IEC 13818-1): transport stream bytes in, the codec layer's neutral
//! [`MediaInput`]s out (90 kHz timestamps, as the stream carries them). Sans-IO; used by SRT
//! ingest.
//!
//! Our own rather than an MPEG-TS crate: ingest needs only PAT/PMT, H.264 and ADTS AAC, and it
//! must hand out exactly the inputs the RTMP path produces, under the crate's input bounds.
//!
//! How data passes through:
//! 1. **Packets.** Input of any split is buffered up to whole 188-byte packets. A byte other than
//!    the 0x47 sync byte where a packet should start is a sync loss: bytes are skipped up to the
//!    next 0x47 that is followed by another one 188 bytes later (counted in [`TsStats`]).
//! 2. **Tables.** The PAT names the first program's PMT pid; the PMT names its elementary
//!    streams. Only H.264 (stream type 0x1B) and AAC in ADTS (0x0F) are kept; sections are
//!    CRC-checked, so random bytes cannot invent a program.
//! 3. **PES.** Payloads of a stream pid are gathered from one `payload_unit_start` to the
//!    declared `PES_packet_length` (emitted at once) or, when the length is 0 (video), to the next
//!    start. A gap in the continuity counter drops the PES being gathered. PTS/DTS are 33-bit; they
//!    are extended across the wrap into one monotonic 90 kHz `u64` clock shared by all streams.
//! 4. **Frames.** H.264 Annex B access units become AVCC frames with 4-byte lengths (AUD, SPS,
//!    PPS and filler removed; SPS/PPS go to a [`MediaInput::VideoConfig`], emitted first and again
//!    when they change). ADTS becomes one [`MediaInput::Audio`] per raw AAC frame, each 1024
//!    samples after the one before, with a [`MediaInput::AudioConfig`] built from the header.
//!
//! Drive it like the other state machines: after each [`TsDemuxer::handle_input`] call, drain
//! [`TsDemuxer::poll_event`] until it returns `None`. Nothing here panics on any input; memory is
//! bounded by [`MAX_PES_SIZE`] per stream and [`MAX_STREAMS`] streams.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::codec::aac::{self, AacConfig};
use crate::codec::h264;
use crate::codec::{AudioFrame, MediaInput};

/// Size of one transport stream packet.
pub const PACKET_SIZE: usize = 188;
const SYNC_BYTE: u8 = 0x47;
/// Largest PES gathered; a bigger one is dropped (a 4K intra frame is well under this).
pub const MAX_PES_SIZE: usize = 8 << 20;
/// Elementary streams tracked in the program; more in a PMT are ignored.
pub const MAX_STREAMS: usize = 16;
/// Largest PSI section (ISO/IEC 13818-1: `section_length` ≤ 1021 for PAT/PMT).
const MAX_SECTION: usize = 1024;
/// Stream type of H.264 video.
pub const STREAM_TYPE_H264: u8 = 0x1B;
/// Stream type of AAC audio in ADTS.
pub const STREAM_TYPE_AAC_ADTS: u8 = 0x0F;
/// The 90 kHz clock of PTS/DTS (the codec layer's clock rate).
pub const TS_TIMESCALE: u64 = crate::codec::CLOCK_RATE;
const PTS_WRAP: u64 = 1 << 33;
const AAC_FRAME_SAMPLES: u64 = aac::FRAME_SAMPLES as u64;

/// Why one packet, section or PES could not be used. The demuxer counts these in [`TsStats`]
/// and goes on; [`parse_packet`] returns them to callers that look at single packets.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TsError {
    /// More bytes are needed.
    #[error("incomplete MPEG-TS packet")]
    Incomplete,
    #[error("no 0x47 sync byte")]
    NoSync,
    #[error("adaptation field longer than the packet")]
    BadAdaptationField,
}

/// One transport packet header and its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TsPacket<'a> {
    pub pid: u16,
    pub payload_unit_start: bool,
    pub transport_error: bool,
    pub continuity_counter: u8,
    /// The adaptation field's discontinuity_indicator.
    pub discontinuity: bool,
    pub has_payload: bool,
    pub payload: &'a [u8],
}

/// Parses the first packet of `data` (which must start with the sync byte).
pub fn parse_packet(data: &[u8]) -> Result<TsPacket<'_>, TsError> {
    let Some(p) = data.get(..PACKET_SIZE) else {
        return Err(if data.first().is_some_and(|&b| b != SYNC_BYTE) { TsError::NoSync } else { TsError::Incomplete });
    };
    if p[0] != SYNC_BYTE {
        return Err(TsError::NoSync);
    }
    let transport_error = p[1] & 0x80 != 0;
    let payload_unit_start = p[1] & 0x40 != 0;
    let pid = u16::from_be_bytes([p[1] & 0x1f, p[2]]);
    let afc = (p[3] >> 4) & 0x03;
    let continuity_counter = p[3] & 0x0f;
    let mut pos = 4;
    let mut discontinuity = false;
    if afc & 0x02 != 0 {
        // Adaptation field: PCR, splice info, stuffing. Only the discontinuity flag matters here.
        let len = usize::from(p[4]);
        if 5 + len > PACKET_SIZE {
            return Err(TsError::BadAdaptationField);
        }
        discontinuity = len > 0 && p[5] & 0x80 != 0;
        pos = 5 + len;
    }
    let has_payload = afc & 0x01 != 0;
    let payload = if has_payload { &p[pos..] } else { &[] };
    Ok(TsPacket { pid, payload_unit_start, transport_error, continuity_counter, discontinuity, has_payload, payload })
}

/// Counters of what was skipped or repaired; see [`TsDemuxer::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TsStats {
    /// Whole packets parsed.
    pub packets: u64,
    /// Times the sync byte was lost (each followed by a resync).
    pub sync_losses: u64,
    /// Bytes skipped while resyncing.
    pub skipped_bytes: u64,
    /// Continuity counter gaps on stream pids.
    pub discontinuities: u64,
    /// Packets flagged with transport_error_indicator, or with a bad adaptation field.
    pub bad_packets: u64,
    /// PSI sections with a bad CRC or layout.
    pub bad_sections: u64,
    /// PES packets dropped: gap inside, too large, truncated, bad header, no timestamp.
    pub dropped_pes: u64,
    /// Frames dropped: video before its parameter sets, malformed ADTS.
    pub dropped_frames: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamKind {
    H264,
    Aac,
}

#[derive(Debug)]
struct Stream {
    pid: u16,
    kind: StreamKind,
    last_cc: Option<u8>,
    /// The PES being gathered (header included); `None` until a payload_unit_start.
    pes: Option<BytesMut>,
    /// Whether the PES being gathered lost a packet (it is dropped when complete).
    damaged: bool,
    /// `PES_packet_length` + 6 of the PES being gathered, when declared.
    expected_len: Option<usize>,
    /// Audio: where the next ADTS frame's timestamp continues, for a PES without PTS.
    next_pts: Option<u64>,
}

#[derive(Debug, Default)]
struct Section {
    pid: u16,
    buf: Vec<u8>,
    last_cc: Option<u8>,
}

/// Extends 33-bit timestamps into a 64-bit clock: each value is placed in the wrap period that
/// puts it nearest the previous one, so B-frame reordering and audio/video skew never look like
/// a wrap, and a real wrap continues upwards.
#[derive(Debug, Default)]
struct Unwrapper {
    last: Option<u64>,
}

impl Unwrapper {
    fn extend(&mut self, raw: u64) -> u64 {
        let raw = raw & (PTS_WRAP - 1);
        let value = match self.last {
            None => raw,
            Some(last) => {
                let base = last & !(PTS_WRAP - 1);
                [base.checked_sub(PTS_WRAP), Some(base), base.checked_add(PTS_WRAP)]
                    .into_iter()
                    .flatten()
                    .map(|b| b | raw)
                    .min_by_key(|v| v.abs_diff(last))
                    .unwrap_or(raw)
            }
        };
        self.last = Some(value);
        value
    }
}

/// See the module docs. After each `handle_*` call the caller drains [`TsDemuxer::poll_event`].
#[derive(Debug, Default)]
pub struct TsDemuxer {
    buf: Vec<u8>,
    /// The PAT (pid 0) and the PMT being gathered.
    pat: Section,
    pmt: Option<Section>,
    pmt_version: Option<u8>,
    streams: Vec<Stream>,
    clock: Unwrapper,
    /// H.264 access units to frames, parameter sets to configs.
    video: h264::AnnexbFrames,
    aac_asc: Option<[u8; 2]>,
    events: VecDeque<MediaInput>,
    stats: TsStats,
    /// In a sync loss (counted once until sync is back).
    lost_sync: bool,
}

impl TsDemuxer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds transport stream bytes, split anywhere.
    pub fn handle_input(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        let mut pos = 0;
        while self.buf.len() - pos >= PACKET_SIZE {
            if self.buf[pos] != SYNC_BYTE || !self.sync_confirmed(pos) {
                if !self.lost_sync {
                    self.lost_sync = true;
                    self.stats.sync_losses += 1;
                }
                self.stats.skipped_bytes += 1;
                pos += 1;
                continue;
            }
            self.lost_sync = false;
            let mut packet = [0u8; PACKET_SIZE];
            packet.copy_from_slice(&self.buf[pos..pos + PACKET_SIZE]);
            pos += PACKET_SIZE;
            self.handle_packet(&packet);
        }
        self.buf.drain(..pos);
    }

    /// The input ended: a PES still being gathered without a declared length is complete.
    pub fn finish(&mut self) {
        for i in 0..self.streams.len() {
            self.complete_pes(i, false);
        }
        self.buf.clear();
    }

    /// The next event, in stream order.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<MediaInput> {
        self.events.pop_front()
    }

    pub fn stats(&self) -> &TsStats {
        &self.stats
    }

    /// A 0x47 starts a packet only if another follows one packet later (when those bytes are
    /// here already): junk that happens to begin with 0x47 is skipped, not parsed.
    fn sync_confirmed(&self, pos: usize) -> bool {
        self.buf.get(pos + PACKET_SIZE).is_none_or(|&b| b == SYNC_BYTE)
    }

    fn handle_packet(&mut self, data: &[u8]) {
        let packet = match parse_packet(data) {
            Ok(p) if !p.transport_error => p,
            _ => {
                self.stats.bad_packets += 1;
                return;
            }
        };
        self.stats.packets += 1;
        if packet.pid == 0 {
            let mut pat = std::mem::take(&mut self.pat);
            pat.pid = 0;
            if let Some(section) = gather_section(&mut pat, &packet) {
                self.handle_pat(&section);
            }
            self.pat = pat;
        } else if self.pmt.as_ref().is_some_and(|s| s.pid == packet.pid) {
            if let Some(mut pmt) = self.pmt.take() {
                let section = gather_section(&mut pmt, &packet);
                self.pmt = Some(pmt);
                if let Some(section) = section {
                    self.handle_pmt(&section);
                }
            }
        } else if let Some(i) = self.streams.iter().position(|s| s.pid == packet.pid) {
            self.handle_stream_packet(i, &packet);
        }
    }

    fn handle_pat(&mut self, section: &[u8]) {
        let Some(body) = check_section(section, 0x00) else {
            self.stats.bad_sections += 1;
            return;
        };
        // Program loop: program_number(16) reserved(3) pid(13); program 0 is the network PID.
        let pmt_pid = body
            .chunks_exact(4)
            .find(|e| u16::from_be_bytes([e[0], e[1]]) != 0)
            .map(|e| u16::from_be_bytes([e[2] & 0x1f, e[3]]));
        if let Some(pid) = pmt_pid {
            if self.pmt.as_ref().is_none_or(|s| s.pid != pid) {
                self.pmt = Some(Section { pid, ..Section::default() });
                self.pmt_version = None;
            }
        }
    }

    fn handle_pmt(&mut self, section: &[u8]) {
        let Some(body) = check_section(section, 0x02) else {
            self.stats.bad_sections += 1;
            return;
        };
        let version = (section[5] >> 1) & 0x1f;
        if self.pmt_version == Some(version) {
            return;
        }
        // PCR_PID(16) program_info_length(16) descriptors, then the stream loop.
        let Some(info_len) = body.get(2..4).map(|b| usize::from(u16::from_be_bytes([b[0] & 0x0f, b[1]]))) else {
            self.stats.bad_sections += 1;
            return;
        };
        let mut rest = body.get(4 + info_len..).unwrap_or(&[]);
        let mut found = Vec::new();
        while rest.len() >= 5 {
            let stream_type = rest[0];
            let pid = u16::from_be_bytes([rest[1] & 0x1f, rest[2]]);
            let es_len = usize::from(u16::from_be_bytes([rest[3] & 0x0f, rest[4]]));
            rest = rest.get(5 + es_len..).unwrap_or(&[]);
            let kind = match stream_type {
                STREAM_TYPE_H264 => StreamKind::H264,
                STREAM_TYPE_AAC_ADTS => StreamKind::Aac,
                _ => continue,
            };
            if found.len() < MAX_STREAMS && !found.iter().any(|&(p, _)| p == pid) {
                found.push((pid, kind));
            }
        }
        self.pmt_version = Some(version);
        // Keep the state of streams that stay; a new version only adds or removes.
        let mut old = std::mem::take(&mut self.streams);
        for (pid, kind) in found {
            let stream = match old.iter().position(|s| s.pid == pid && s.kind == kind) {
                Some(i) => old.swap_remove(i),
                None => {
                    Stream { pid, kind, last_cc: None, pes: None, damaged: false, expected_len: None, next_pts: None }
                }
            };
            self.streams.push(stream);
        }
    }

    fn handle_stream_packet(&mut self, i: usize, packet: &TsPacket<'_>) {
        let stream = &mut self.streams[i];
        if packet.has_payload {
            let expected = stream.last_cc.map(|cc| (cc + 1) & 0x0f);
            if stream.last_cc == Some(packet.continuity_counter) && !packet.discontinuity {
                // A duplicate packet (allowed once by the standard): ignore it.
                return;
            }
            if expected.is_some_and(|e| e != packet.continuity_counter) && !packet.discontinuity {
                self.stats.discontinuities += 1;
                stream.damaged = stream.pes.is_some();
            }
            stream.last_cc = Some(packet.continuity_counter);
        } else {
            return;
        }
        if packet.payload_unit_start {
            self.complete_pes(i, false);
            let stream = &mut self.streams[i];
            stream.damaged = false;
            stream.expected_len = None;
            let mut pes = BytesMut::with_capacity(match stream.kind {
                StreamKind::H264 => 64 * 1024,
                StreamKind::Aac => 2 * 1024,
            });
            pes.put_slice(packet.payload);
            if pes.len() >= 6 {
                let len = usize::from(u16::from_be_bytes([pes[4], pes[5]]));
                stream.expected_len = (len > 0).then_some(len + 6);
            }
            stream.pes = Some(pes);
        } else {
            let stream = &mut self.streams[i];
            let Some(pes) = &mut stream.pes else { return };
            if pes.len() + packet.payload.len() > MAX_PES_SIZE {
                stream.pes = None;
                self.stats.dropped_pes += 1;
                return;
            }
            pes.put_slice(packet.payload);
            if stream.expected_len.is_none() && pes.len() >= 6 {
                let len = usize::from(u16::from_be_bytes([pes[4], pes[5]]));
                stream.expected_len = (len > 0).then_some(len + 6);
            }
        }
        let stream = &self.streams[i];
        if let (Some(pes), Some(expected)) = (&stream.pes, stream.expected_len) {
            if pes.len() >= expected {
                self.complete_pes(i, true);
            }
        }
    }

    /// Ends the PES being gathered on stream `i`. `by_length`: it reached its declared length
    /// (otherwise a new PES or the end of input cut it, which truncates a declared length).
    fn complete_pes(&mut self, i: usize, by_length: bool) {
        let stream = &mut self.streams[i];
        let Some(mut pes) = stream.pes.take() else { return };
        let damaged = std::mem::take(&mut stream.damaged);
        let expected = stream.expected_len.take();
        let kind = stream.kind;
        if damaged || (!by_length && expected.is_some()) {
            self.stats.dropped_pes += 1;
            return;
        }
        if let Some(expected) = expected {
            pes.truncate(expected);
        }
        let pes = pes.freeze();
        let Some((pts, dts, payload)) = parse_pes_header(&pes) else {
            self.stats.dropped_pes += 1;
            return;
        };
        // Audio PES may omit the PTS; continue from the previous frame.
        let pts = pts.map(|p| self.clock.extend(p)).or_else(|| self.streams[i].next_pts);
        let dts = dts.map(|d| self.clock.extend(d));
        let Some(pts) = pts else {
            self.stats.dropped_pes += 1;
            return;
        };
        match kind {
            StreamKind::H264 => self.video_access_unit(pts, dts.unwrap_or(pts), &payload),
            StreamKind::Aac => {
                let next = self.adts_frames(pts, &payload);
                self.streams[i].next_pts = next;
            }
        }
    }

    fn video_access_unit(&mut self, pts: u64, dts: u64, annexb: &Bytes) {
        if !self.video.push(pts, dts, annexb, &mut self.events) {
            self.stats.dropped_frames += 1;
        }
    }

    /// Splits a PES of ADTS frames. Returns the timestamp after the last frame.
    fn adts_frames(&mut self, pts: u64, data: &Bytes) -> Option<u64> {
        let mut pos = 0;
        let mut n: u64 = 0;
        let mut rate = None;
        while pos < data.len() {
            let header = match aac::parse_adts_header(&data[pos..]) {
                Ok(h) => h,
                Err(_) => {
                    // Garbage or a frame cut off at the end of the PES: drop the rest.
                    self.stats.dropped_frames += 1;
                    break;
                }
            };
            let body = data.slice(pos + header.header_len..pos + header.frame_len);
            pos += header.frame_len;
            if header.raw_blocks != 0 {
                // Several raw blocks per ADTS frame are not produced by encoders we serve.
                self.stats.dropped_frames += 1;
                continue;
            }
            if self.aac_asc != Some(header.asc) {
                match AacConfig::parse(&Bytes::copy_from_slice(&header.asc)) {
                    Ok(config) => {
                        self.aac_asc = Some(header.asc);
                        self.events.push_back(MediaInput::AudioConfig(config));
                    }
                    Err(_) => {
                        self.stats.dropped_frames += 1;
                        continue;
                    }
                }
            }
            let frame_pts = pts + n * AAC_FRAME_SAMPLES * TS_TIMESCALE / u64::from(header.sample_rate);
            n += 1;
            rate = Some(header.sample_rate);
            self.events.push_back(MediaInput::Audio(AudioFrame { pts: frame_pts, data: body }));
        }
        rate.map(|r| pts + n * AAC_FRAME_SAMPLES * TS_TIMESCALE / u64::from(r))
    }
}

/// Adds a packet's payload to a PSI section being gathered; returns the section when complete.
fn gather_section(section: &mut Section, packet: &TsPacket<'_>) -> Option<Vec<u8>> {
    if !packet.has_payload {
        return None;
    }
    if section.last_cc == Some(packet.continuity_counter) {
        return None;
    }
    let gap = section.last_cc.is_some_and(|cc| (cc + 1) & 0x0f != packet.continuity_counter);
    section.last_cc = Some(packet.continuity_counter);
    if packet.payload_unit_start {
        // Bytes before the pointer end a previous section; tables repeat every ~100 ms, so a
        // section split that way is simply waited out.
        let pointer = usize::from(*packet.payload.first()?);
        section.buf.clear();
        section.buf.extend_from_slice(packet.payload.get(1 + pointer..).unwrap_or(&[]));
    } else if gap || section.buf.is_empty() {
        section.buf.clear();
        return None;
    } else if section.buf.len() + packet.payload.len() <= MAX_SECTION + 188 {
        section.buf.extend_from_slice(packet.payload);
    }
    if section.buf.len() < 3 {
        return None;
    }
    let total = 3 + usize::from(u16::from_be_bytes([section.buf[1] & 0x0f, section.buf[2]]));
    if total > MAX_SECTION {
        section.buf.clear();
        return None;
    }
    if section.buf.len() < total {
        return None;
    }
    let complete = section.buf[..total].to_vec();
    section.buf.clear();
    Some(complete)
}

/// Checks a complete PSI section (table id, syntax, CRC) and returns the part between the
/// 8-byte long header and the CRC.
fn check_section(section: &[u8], table_id: u8) -> Option<&[u8]> {
    if section.len() < 12 || section[0] != table_id || section[1] & 0x80 == 0 {
        return None;
    }
    // current_next_indicator: a table not yet in force.
    if section[5] & 0x01 == 0 {
        return None;
    }
    let (body, crc) = section.split_at(section.len() - 4);
    if crc32_mpeg2(body) != u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return None;
    }
    body.get(8..)
}

/// CRC-32/MPEG-2 (polynomial 0x04C11DB7, no reflection, initial value all ones).
pub(crate) fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &byte in data {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 { (crc << 1) ^ 0x04C1_1DB7 } else { crc << 1 };
        }
    }
    crc
}

/// PES header → (PTS, DTS, payload). `None` if it is not a PES or the header is cut.
fn parse_pes_header(pes: &Bytes) -> Option<(Option<u64>, Option<u64>, Bytes)> {
    if pes.len() < 9 || pes[..3] != [0, 0, 1] {
        return None;
    }
    // Stream ids without the optional header (padding, private_stream_2, ...) carry no media
    // we demux.
    if matches!(pes[3], 0xBC | 0xBE | 0xBF | 0xF0 | 0xF1 | 0xF2 | 0xF8 | 0xFF) || pes[6] & 0xC0 != 0x80 {
        return None;
    }
    let flags = pes[7] >> 6;
    let header_len = usize::from(pes[8]);
    let header = pes.get(9..9 + header_len)?;
    let timestamp = |b: &[u8]| -> Option<u64> {
        let b = b.get(..5)?;
        Some(
            (u64::from(b[0] >> 1) & 0x07) << 30
                | u64::from(b[1]) << 22
                | u64::from(b[2] >> 1) << 15
                | u64::from(b[3]) << 7
                | u64::from(b[4] >> 1),
        )
    };
    let (pts, dts) = match flags {
        0b10 => (Some(timestamp(header)?), None),
        0b11 => (Some(timestamp(header)?), Some(timestamp(header.get(5..)?)?)),
        _ => (None, None),
    };
    Some((pts, dts, pes.slice(9 + header_len..)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::VideoFrame;

    fn drain(d: &mut TsDemuxer) -> Vec<MediaInput> {
        std::iter::from_fn(|| d.poll_event()).collect()
    }

    #[test]
    fn crc_of_a_known_pat() {
        // PAT of ffmpeg's mpegts muxer: program 1 → PMT pid 0x1000.
        let pat = [0x00, 0xB0, 0x0D, 0x00, 0x01, 0xC1, 0x00, 0x00, 0x00, 0x01, 0xF0, 0x00];
        assert_eq!(crc32_mpeg2(&pat), 0x2AB1_04B2);
    }

    #[test]
    fn unwrap_crosses_the_33_bit_wrap() {
        let mut u = Unwrapper::default();
        assert_eq!(u.extend(PTS_WRAP - 3000), PTS_WRAP - 3000);
        assert_eq!(u.extend(1000), PTS_WRAP + 1000);
        // Reordered (B-frame) timestamp just before the wrap stays before it.
        assert_eq!(u.extend(PTS_WRAP - 500), PTS_WRAP - 500);
        assert_eq!(u.extend(4000), PTS_WRAP + 4000);
    }

    #[test]
    fn garbage_and_truncation_do_not_panic() {
        let mut d = TsDemuxer::new();
        d.handle_input(&[0x47; 1000]);
        d.handle_input(&[0u8; 500]);
        d.handle_input(&[0x47, 0x40, 0x00]);
        d.finish();
        assert!(drain(&mut d).is_empty());
        assert!(d.stats().sync_losses >= 1);
    }

    #[test]
    fn huge_pes_is_bounded() {
        // A PAT/PMT-less stream pid is ignored; build the program by hand.
        let mut d = TsDemuxer::new();
        d.streams.push(Stream {
            pid: 0x100,
            kind: StreamKind::H264,
            last_cc: None,
            pes: None,
            damaged: false,
            expected_len: None,
            next_pts: None,
        });
        let mut packet = [0xFFu8; PACKET_SIZE];
        packet[..4].copy_from_slice(&[0x47, 0x41, 0x00, 0x10]);
        packet[4..13].copy_from_slice(&[0, 0, 1, 0xE0, 0, 0, 0x80, 0, 0]);
        d.handle_input(&packet);
        let mut cc = 0u8;
        for _ in 0..(MAX_PES_SIZE / 184 + 10) {
            cc = (cc + 1) & 0x0f;
            packet[..4].copy_from_slice(&[0x47, 0x01, 0x00, 0x10 | cc]);
            d.handle_input(&packet);
        }
        assert_eq!(d.stats().dropped_pes, 1);
        assert!(d.streams[0].pes.is_none());
    }

    /// Real TS from ffmpeg (2 s, 30 fps H.264 GOP 30, 48 kHz AAC); `None` when ffmpeg is missing
    /// and `BITRIVER_ALLOW_SKIP=1` (without it, a missing ffmpeg fails the test).
    fn ffmpeg_ts() -> Option<Vec<u8>> {
        if !testkit::require_tool("ffmpeg") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.ts");
        let status = std::process::Command::new(testkit::tools::ffmpeg())
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i"])
            .arg("testsrc2=size=320x240:rate=30")
            .args(["-f", "lavfi", "-i", "sine=sample_rate=48000", "-t", "2"])
            .args(["-c:v", "libx264", "-g", "30", "-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "mpegts"])
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success(), "ffmpeg could not write the test stream: {status}");
        Some(std::fs::read(&out).unwrap())
    }

    /// Feeds `data` in pseudo-random splits (xorshift, fixed seed) and collects the events.
    fn demux_in_splits(data: &[u8], seed: u64) -> (Vec<MediaInput>, TsStats) {
        let mut d = TsDemuxer::new();
        let mut events = Vec::new();
        let mut x = seed | 1;
        let mut rest = data;
        while !rest.is_empty() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = ((x % 3000) as usize + 1).min(rest.len());
            d.handle_input(&rest[..n]);
            rest = &rest[n..];
            events.extend(drain(&mut d));
        }
        d.finish();
        events.extend(drain(&mut d));
        (events, d.stats().clone())
    }

    #[test]
    fn ffmpeg_stream_demuxes_into_frames_and_configs() {
        let Some(ts) = ffmpeg_ts() else { return };
        for seed in [1, 7, 1234567] {
            let (events, stats) = demux_in_splits(&ts, seed);
            assert_eq!(stats.sync_losses, 0);
            assert_eq!(stats.discontinuities, 0);
            assert_eq!(stats.dropped_pes, 0, "{stats:?}");
            let video: Vec<&VideoFrame> = events
                .iter()
                .filter_map(|e| if let MediaInput::Video(frame) = e { Some(frame) } else { None })
                .collect();
            assert_eq!(video.len(), 60);
            let keyframes: Vec<usize> = video.iter().enumerate().filter(|(_, f)| f.keyframe).map(|(i, _)| i).collect();
            assert_eq!(keyframes, vec![0, 30]);
            // Decode order is monotonic; 30 fps is 3000 ticks apart, exactly as the stream says.
            for w in video.windows(2) {
                assert_eq!(w[1].dts - w[0].dts, 3000, "{} -> {}", w[0].dts, w[1].dts);
            }
            for f in &video {
                assert!(f.pts >= f.dts);
                let nals: Vec<_> = h264::avcc_nal_units(&f.data, 4).collect::<Result<_, _>>().unwrap();
                assert!(nals.iter().all(|n| !matches!(n[0] & 0x1f, 7..=9)));
            }
            let audio: Vec<&AudioFrame> = events
                .iter()
                .filter_map(|e| if let MediaInput::Audio(frame) = e { Some(frame) } else { None })
                .collect();
            // 2 s of 48 kHz = 93.75 frames; the encoder may pad or trim one or two.
            assert!((90..=96).contains(&audio.len()), "{} audio frames", audio.len());
            for w in audio.windows(2) {
                assert_eq!(w[1].pts - w[0].pts, 1920, "1024 samples at 48 kHz");
            }
            let video_config =
                events.iter().filter_map(|e| if let MediaInput::VideoConfig(c) = e { Some(c) } else { None });
            let video_config: Vec<_> = video_config.collect();
            assert_eq!(video_config.len(), 1, "parameter sets repeat unchanged");
            assert_eq!((video_config[0].width, video_config[0].height), (320, 240));
            assert_eq!(video_config[0].nal_length_size, 4);
            assert!(video_config[0].codec_string().starts_with("avc1.64"));
            let audio_config: Vec<_> =
                events.iter().filter_map(|e| if let MediaInput::AudioConfig(c) = e { Some(c) } else { None }).collect();
            assert_eq!(audio_config.len(), 1);
            assert_eq!(audio_config[0].codec_string(), "mp4a.40.2");
            assert_eq!(audio_config[0].sample_rate, 48000);
            assert_eq!(&audio_config[0].asc[..], &[0x11, 0x88]);
            // Configs come before the first frame of their track.
            let first_config = events.iter().position(|e| matches!(e, MediaInput::VideoConfig(_))).unwrap();
            let first_video = events.iter().position(|e| matches!(e, MediaInput::Video(_))).unwrap();
            assert!(first_config < first_video);
        }
    }

    #[test]
    fn ffmpeg_stream_survives_damage() {
        let Some(ts) = ffmpeg_ts() else { return };
        // Truncated in the middle of a packet.
        let (events, _) = demux_in_splits(&ts[..ts.len() / 2 + 77], 3);
        let n = events.iter().filter(|e| matches!(e, MediaInput::Video(_))).count();
        assert!((25..=35).contains(&n), "{n}");
        // Junk inserted between packets: sync is lost, then found again.
        let mut damaged = ts[..188 * 200].to_vec();
        damaged.extend_from_slice(&[0x47, 1, 2, 3, 0x47, 0x47, 9, 9, 9]);
        damaged.extend_from_slice(&ts[188 * 200..]);
        let (events, stats) = demux_in_splits(&damaged, 5);
        assert_eq!(stats.sync_losses, 1);
        assert_eq!(stats.skipped_bytes, 9);
        let n = events.iter().filter(|e| matches!(e, MediaInput::Video(_))).count();
        assert_eq!(n, 60);
        // A lost packet: the continuity counter tells, the PES it was in is dropped.
        let mut lossy = ts.clone();
        let video_packet = (300..ts.len() / 188)
            .find(|i| {
                let p = &ts[i * 188..];
                // ffmpeg puts video on pid 0x100; a packet in the middle of a PES.
                p[1] & 0x40 == 0 && u16::from_be_bytes([p[1] & 0x1f, p[2]]) == 0x100
            })
            .unwrap();
        lossy.drain(188 * video_packet..188 * (video_packet + 1));
        let (events, stats) = demux_in_splits(&lossy, 9);
        assert_eq!(stats.discontinuities, 1);
        assert_eq!(stats.dropped_pes, 1);
        let frames = events.iter().filter(|e| matches!(e, MediaInput::Video(_) | MediaInput::Audio(_))).count();
        assert!(frames > 140);
        // A bit flip everywhere that is not the sync byte never panics.
        let mut flipped = ts.clone();
        for (i, b) in flipped.iter_mut().enumerate() {
            if i % 188 != 0 && i % 97 == 0 {
                *b ^= 0x5A;
            }
        }
        let _ = demux_in_splits(&flipped, 11);
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096),
                                    split in 1usize..400) {
            let mut d = TsDemuxer::new();
            for chunk in data.chunks(split) {
                d.handle_input(chunk);
                let _ = drain(&mut d);
            }
            d.finish();
            let _ = drain(&mut d);
        }

        #[test]
        fn random_packets_with_sync_never_panic(
            packets in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 187), 1..40),
            pids in proptest::collection::vec(0u16..4, 40),
        ) {
            // Packets with valid sync on a few pids (0 = PAT, so sections are parsed too).
            let mut d = TsDemuxer::new();
            for (i, p) in packets.iter().enumerate() {
                let mut packet = vec![SYNC_BYTE];
                packet.extend_from_slice(p);
                let pid = pids[i % pids.len()] * 0x100;
                packet[1] = (packet[1] & 0xE0) | (pid >> 8) as u8;
                packet[2] = pid as u8;
                d.handle_input(&packet);
                let _ = drain(&mut d);
            }
            d.finish();
        }
    }
}
