//! The relay's wire format: length-delimited frames on one QUIC bidirectional stream per
//! subscription. Sans-IO: [`encode`] writes a frame into a buffer, [`Decoder`] turns received
//! bytes back into frames (`handle_data`, then drain `poll_frame`).
//!
//! ```text
//! frame   = kind:u8 length:u32be payload[length]
//! str     = len:u16be utf8[len]
//! bytes16 = len:u16be byte[len]
//! 0x01 Subscribe  channel:str rendition:str                                   (subscriber → server)
//! 0x02 Tracks     session:str epoch_msn:u64 part_target_us:u32 segment_target_us:u32
//!                 playlist_segments:u16 max_part_bytes:u32
//!                 has_video:u8 [codec:u8 width:u16 height:u16 codec_string:str
//!                               n_sps:u8 bytes16*n_sps n_pps:u8 bytes16*n_pps]
//!                 has_audio:u8 [sample_rate:u32 channels:u16 codec_string:str asc:bytes16]
//! 0x03 Segment    msn:u64                 the next video sample opens segment `msn`
//! 0x04 Video      dts:u64 pts_offset:i32 duration:u32 flags:u8 now:i64 data[..]
//! 0x05 Audio      dts:u64 duration:u32 now:i64 data[..]
//! 0x06 End                                the broadcast finished
//! 0x07 Refused    reason:str              the server has no such track
//! ```
//!
//! Bounds, checked on the header before any payload is buffered: a frame's length is at most
//! its kind's maximum ([`Limits`]); the decoder holds at most one frame plus one header. Counts
//! inside a payload (parameter sets) are capped. Authentication happens before this decoder
//! sees a byte (the cluster listener accepts the relay ALPN from CA-signed members only), but the
//! bounds are the same for every peer: a member is trusted with its role, not with our memory.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use media::cmaf::{AudioConfig, Sample, VideoConfig};
use media::codec::VideoCodec;
use thiserror::Error;

/// Header bytes before every payload.
pub const HEADER: usize = 5;
/// Largest sample payload: the packager refuses samples above its `max_part_bytes` (8 MiB by
/// default, at most [`MAX_PART_BYTES`] here).
pub const MAX_SAMPLE: usize = 16 << 20;
/// Largest `max_part_bytes` a Tracks frame may announce.
pub const MAX_PART_BYTES: u32 = 16 << 20;
/// Largest Tracks frame: parameter sets and strings.
pub const MAX_TRACKS: usize = 64 << 10;
/// Largest control frame (Subscribe, Segment, End, Refused).
pub const MAX_CONTROL: usize = 1024;
/// Parameter sets of one kind in a Tracks frame.
pub const MAX_PARAMETER_SETS: usize = 32;
/// Longest channel id, rendition name, session id, codec string.
pub const MAX_NAME: usize = 256;

mod kind {
    pub(super) const SUBSCRIBE: u8 = 0x01;
    pub(super) const TRACKS: u8 = 0x02;
    pub(super) const SEGMENT: u8 = 0x03;
    pub(super) const VIDEO: u8 = 0x04;
    pub(super) const AUDIO: u8 = 0x05;
    pub(super) const END: u8 = 0x06;
    pub(super) const REFUSED: u8 = 0x07;
}

/// How the broadcast is packaged: every packager of one track uses the publisher's settings, so
/// they cut the same parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packaging {
    /// The broadcast's first media sequence number (its epoch).
    pub epoch_msn: u64,
    pub part_target_us: u32,
    pub segment_target_us: u32,
    pub playlist_segments: u16,
    pub max_part_bytes: u32,
}

/// One frame of the relay protocol (see the module docs for the bytes).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Frame {
    Subscribe { channel: String, rendition: String },
    Tracks { session: String, packaging: Packaging, video: Option<VideoConfig>, audio: Option<AudioConfig> },
    Segment { msn: u64 },
    Video { sample: Sample, now: i64 },
    Audio { sample: Sample, now: i64 },
    End,
    Refused { reason: String },
}

/// Why bytes are not a valid frame. The stream should be closed: there is no resynchronising.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    #[error("frame kind {kind:#04x} of {length} bytes exceeds its limit of {max}")]
    TooLarge { kind: u8, length: usize, max: usize },
    #[error("frame kind {kind:#04x} truncated: {what}")]
    Truncated { kind: u8, what: &'static str },
    #[error("frame kind {kind:#04x}: {what}")]
    Invalid { kind: u8, what: &'static str },
}

/// The largest payload a frame of `kind` may have.
fn max_payload(kind: u8) -> Option<usize> {
    Some(match kind {
        kind::SUBSCRIBE | kind::SEGMENT | kind::END | kind::REFUSED => MAX_CONTROL,
        kind::TRACKS => MAX_TRACKS,
        kind::VIDEO | kind::AUDIO => MAX_SAMPLE + 32,
        _ => return None,
    })
}

fn put_str(out: &mut BytesMut, s: &str) {
    let s = &s.as_bytes()[..s.len().min(MAX_NAME)];
    out.put_u16(s.len() as u16);
    out.put_slice(s);
}

fn put_bytes16(out: &mut BytesMut, b: &[u8]) {
    let b = &b[..b.len().min(usize::from(u16::MAX))];
    out.put_u16(b.len() as u16);
    out.put_slice(b);
}

/// Appends `frame` to `out`. Names longer than [`MAX_NAME`] and lists longer than the limits
/// are cut (we never write what our own decoder would refuse).
pub fn encode(frame: &Frame, out: &mut BytesMut) {
    let start = out.len();
    out.put_u8(0);
    out.put_u32(0);
    let kind = match frame {
        Frame::Subscribe { channel, rendition } => {
            put_str(out, channel);
            put_str(out, rendition);
            kind::SUBSCRIBE
        }
        Frame::Tracks { session, packaging, video, audio } => {
            put_str(out, session);
            out.put_u64(packaging.epoch_msn);
            out.put_u32(packaging.part_target_us);
            out.put_u32(packaging.segment_target_us);
            out.put_u16(packaging.playlist_segments);
            out.put_u32(packaging.max_part_bytes);
            match video {
                None => out.put_u8(0),
                Some(v) => {
                    out.put_u8(1);
                    out.put_u8(match v.codec {
                        VideoCodec::Avc1 => 1,
                        // A codec media learns before the relay does: 0, which subscribers refuse.
                        _ => 0,
                    });
                    out.put_u16(v.width);
                    out.put_u16(v.height);
                    put_str(out, &v.codec_string);
                    for sets in [&v.sps, &v.pps] {
                        let sets = &sets[..sets.len().min(MAX_PARAMETER_SETS)];
                        out.put_u8(sets.len() as u8);
                        for set in sets {
                            put_bytes16(out, set);
                        }
                    }
                }
            }
            match audio {
                None => out.put_u8(0),
                Some(a) => {
                    out.put_u8(1);
                    out.put_u32(a.sample_rate);
                    out.put_u16(a.channels);
                    put_str(out, &a.codec_string);
                    put_bytes16(out, &a.asc);
                }
            }
            kind::TRACKS
        }
        Frame::Segment { msn } => {
            out.put_u64(*msn);
            kind::SEGMENT
        }
        Frame::Video { sample, now } => {
            out.put_u64(sample.dts);
            out.put_i32(sample.pts_offset);
            out.put_u32(sample.duration);
            out.put_u8(u8::from(sample.keyframe));
            out.put_i64(*now);
            out.put_slice(&sample.data[..sample.data.len().min(MAX_SAMPLE)]);
            kind::VIDEO
        }
        Frame::Audio { sample, now } => {
            out.put_u64(sample.dts);
            out.put_u32(sample.duration);
            out.put_i64(*now);
            out.put_slice(&sample.data[..sample.data.len().min(MAX_SAMPLE)]);
            kind::AUDIO
        }
        Frame::End => kind::END,
        Frame::Refused { reason } => {
            put_str(out, reason);
            kind::REFUSED
        }
    };
    let length = (out.len() - start - HEADER) as u32;
    out[start] = kind;
    out[start + 1..start + HEADER].copy_from_slice(&length.to_be_bytes());
}

/// The frame as one buffer (what the server fans out to every subscriber).
pub fn encode_to_bytes(frame: &Frame) -> Bytes {
    // Room for a sample's bytes and its fields up front: one allocation, no regrowth.
    let capacity = match frame {
        Frame::Video { sample, .. } | Frame::Audio { sample, .. } => sample.data.len() + 64,
        _ => 256,
    };
    let mut out = BytesMut::with_capacity(capacity);
    encode(frame, &mut out);
    out.freeze()
}

/// Reads a payload, checking each length against what is left.
struct Reader {
    kind: u8,
    buf: Bytes,
}

impl Reader {
    fn need(&self, n: usize, what: &'static str) -> Result<(), WireError> {
        if self.buf.remaining() < n {
            return Err(WireError::Truncated { kind: self.kind, what });
        }
        Ok(())
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        self.need(1, what)?;
        Ok(self.buf.get_u8())
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        self.need(2, what)?;
        Ok(self.buf.get_u16())
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        self.need(4, what)?;
        Ok(self.buf.get_u32())
    }
    fn i32(&mut self, what: &'static str) -> Result<i32, WireError> {
        self.need(4, what)?;
        Ok(self.buf.get_i32())
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        self.need(8, what)?;
        Ok(self.buf.get_u64())
    }
    fn i64(&mut self, what: &'static str) -> Result<i64, WireError> {
        self.need(8, what)?;
        Ok(self.buf.get_i64())
    }
    fn bytes16(&mut self, what: &'static str) -> Result<Bytes, WireError> {
        let n = usize::from(self.u16(what)?);
        self.need(n, what)?;
        Ok(self.buf.split_to(n))
    }
    fn string(&mut self, what: &'static str) -> Result<String, WireError> {
        let bytes = self.bytes16(what)?;
        if bytes.len() > MAX_NAME {
            return Err(WireError::Invalid { kind: self.kind, what });
        }
        String::from_utf8(bytes.to_vec()).map_err(|_| WireError::Invalid { kind: self.kind, what })
    }
    fn sample_data(&mut self) -> Result<Bytes, WireError> {
        if self.buf.len() > MAX_SAMPLE {
            return Err(WireError::Invalid { kind: self.kind, what: "sample larger than the limit" });
        }
        Ok(self.buf.split_to(self.buf.len()))
    }
    fn done(&self) -> Result<(), WireError> {
        if self.buf.has_remaining() {
            return Err(WireError::Invalid { kind: self.kind, what: "trailing bytes" });
        }
        Ok(())
    }
}

/// Parses one frame's payload.
pub fn decode_payload(kind: u8, payload: Bytes) -> Result<Frame, WireError> {
    let mut r = Reader { kind, buf: payload };
    let frame = match kind {
        kind::SUBSCRIBE => Frame::Subscribe { channel: r.string("channel")?, rendition: r.string("rendition")? },
        kind::TRACKS => {
            let session = r.string("session")?;
            let packaging = Packaging {
                epoch_msn: r.u64("epoch")?,
                part_target_us: r.u32("part target")?,
                segment_target_us: r.u32("segment target")?,
                playlist_segments: r.u16("playlist segments")?,
                max_part_bytes: r.u32("max part bytes")?,
            };
            if packaging.max_part_bytes > MAX_PART_BYTES {
                return Err(WireError::Invalid { kind, what: "max part bytes" });
            }
            let video = match r.u8("video flag")? {
                0 => None,
                1 => {
                    let codec = match r.u8("codec")? {
                        1 => VideoCodec::Avc1,
                        _ => return Err(WireError::Invalid { kind, what: "video codec" }),
                    };
                    let width = r.u16("width")?;
                    let height = r.u16("height")?;
                    let codec_string = r.string("codec string")?;
                    let mut lists = [Vec::new(), Vec::new()];
                    for list in &mut lists {
                        let n = usize::from(r.u8("parameter set count")?);
                        if n > MAX_PARAMETER_SETS {
                            return Err(WireError::Invalid { kind, what: "too many parameter sets" });
                        }
                        for _ in 0..n {
                            list.push(r.bytes16("parameter set")?.to_vec());
                        }
                    }
                    let [sps, pps] = lists;
                    Some(VideoConfig { codec, sps, pps, width, height, codec_string })
                }
                _ => return Err(WireError::Invalid { kind, what: "video flag" }),
            };
            let audio = match r.u8("audio flag")? {
                0 => None,
                1 => Some(AudioConfig {
                    sample_rate: r.u32("sample rate")?,
                    channels: r.u16("channels")?,
                    codec_string: r.string("codec string")?,
                    asc: r.bytes16("audio specific config")?.to_vec(),
                }),
                _ => return Err(WireError::Invalid { kind, what: "audio flag" }),
            };
            Frame::Tracks { session, packaging, video, audio }
        }
        kind::SEGMENT => Frame::Segment { msn: r.u64("msn")? },
        kind::VIDEO => {
            let dts = r.u64("dts")?;
            let pts_offset = r.i32("pts offset")?;
            let duration = r.u32("duration")?;
            let flags = r.u8("flags")?;
            if flags > 1 {
                return Err(WireError::Invalid { kind, what: "flags" });
            }
            let now = r.i64("now")?;
            let sample = Sample { dts, pts_offset, duration, keyframe: flags == 1, data: r.sample_data()? };
            Frame::Video { sample, now }
        }
        kind::AUDIO => {
            let dts = r.u64("dts")?;
            let duration = r.u32("duration")?;
            let now = r.i64("now")?;
            let sample = Sample { dts, pts_offset: 0, duration, keyframe: true, data: r.sample_data()? };
            Frame::Audio { sample, now }
        }
        kind::END => Frame::End,
        kind::REFUSED => Frame::Refused { reason: r.string("reason")? },
        other => return Err(WireError::UnknownKind(other)),
    };
    r.done()?;
    Ok(frame)
}

/// Incremental decoder: bytes in, frames out. Feed with [`Decoder::handle_data`], then drain
/// [`Decoder::poll_frame`] until it returns `Ok(None)` (*incomplete*: it needs more bytes).
/// After an `Err` the stream is unusable (the error repeats).
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
    /// Kinds this side accepts (a server takes only Subscribe; a subscriber never does).
    accepts: Option<fn(u8) -> bool>,
    failed: Option<WireError>,
}

impl Decoder {
    /// A decoder that accepts every frame kind.
    pub fn new() -> Self {
        Decoder::default()
    }

    /// The server's side: subscribers only ever send Subscribe.
    pub fn for_server() -> Self {
        Decoder { accepts: Some(|k| k == kind::SUBSCRIBE), ..Decoder::default() }
    }

    /// The subscriber's side: everything but Subscribe.
    pub fn for_subscriber() -> Self {
        Decoder { accepts: Some(|k| k != kind::SUBSCRIBE), ..Decoder::default() }
    }

    /// Bytes the caller may hand over next without exceeding one frame: read at most this many
    /// from the stream (a header, or the rest of the current frame).
    pub fn wants(&self) -> usize {
        match self.header() {
            Some((_, length)) => (HEADER + length).saturating_sub(self.buf.len()).max(1),
            None => HEADER.saturating_sub(self.buf.len()).max(1),
        }
    }

    fn header(&self) -> Option<(u8, usize)> {
        let head = self.buf.get(..HEADER)?;
        let length = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        Some((head[0], usize::try_from(length).unwrap_or(usize::MAX)))
    }

    /// Adds received bytes. Callers should hand over at most [`Decoder::wants`] bytes at a
    /// time; more is accepted but the limit check then comes after buffering them.
    pub fn handle_data(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// The next complete frame; `Ok(None)` when more bytes are needed.
    #[must_use = "drain every frame after each handle_data"]
    pub fn poll_frame(&mut self) -> Result<Option<Frame>, WireError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let Some((kind, length)) = self.header() else { return Ok(None) };
        let checked = match max_payload(kind) {
            None => Err(WireError::UnknownKind(kind)),
            Some(_) if self.accepts.is_some_and(|accepts| !accepts(kind)) => {
                Err(WireError::Invalid { kind, what: "not expected from this peer" })
            }
            Some(max) if length > max => Err(WireError::TooLarge { kind, length, max }),
            Some(_) => Ok(()),
        };
        if let Err(error) = checked {
            self.buf = BytesMut::new();
            self.failed = Some(error.clone());
            return Err(error);
        }
        if self.buf.len() < HEADER + length {
            return Ok(None);
        }
        self.buf.advance(HEADER);
        let payload = self.buf.split_to(length).freeze();
        decode_payload(kind, payload).map(Some).inspect_err(|error| {
            self.buf = BytesMut::new();
            self.failed = Some(error.clone());
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn video_config() -> VideoConfig {
        VideoConfig {
            codec: VideoCodec::Avc1,
            sps: vec![vec![0x67, 0x64, 0x00, 0x1f, 0xac]],
            pps: vec![vec![0x68, 0xee, 0x3c, 0x80]],
            width: 1280,
            height: 720,
            codec_string: "avc1.64001f".into(),
        }
    }

    fn frames() -> Vec<Frame> {
        let packaging = Packaging {
            epoch_msn: 17_900_000_000,
            part_target_us: 200_000,
            segment_target_us: 1_000_000,
            playlist_segments: 8,
            max_part_bytes: 8 << 20,
        };
        let audio =
            AudioConfig { asc: vec![0x12, 0x10], sample_rate: 48_000, channels: 2, codec_string: "mp4a.40.2".into() };
        vec![
            Frame::Subscribe { channel: "c1".into(), rendition: "source".into() },
            Frame::Tracks { session: "s1".into(), packaging, video: Some(video_config()), audio: Some(audio) },
            Frame::Tracks { session: "s2".into(), packaging, video: None, audio: None },
            Frame::Segment { msn: 42 },
            Frame::Video {
                sample: Sample {
                    dts: 9000,
                    pts_offset: -3000,
                    duration: 3000,
                    keyframe: true,
                    data: Bytes::from_static(b"\0\0\0\x01e"),
                },
                now: 1_790_000_000_123,
            },
            Frame::Audio {
                sample: Sample {
                    dts: 1024,
                    pts_offset: 0,
                    duration: 1024,
                    keyframe: true,
                    data: Bytes::from_static(b"aac"),
                },
                now: -1,
            },
            Frame::End,
            Frame::Refused { reason: "not live here".into() },
        ]
    }

    #[test]
    fn every_frame_round_trips_whole_and_byte_by_byte() {
        let mut wire = BytesMut::new();
        for frame in frames() {
            encode(&frame, &mut wire);
        }
        let mut whole = Decoder::new();
        whole.handle_data(&wire);
        let mut out = Vec::new();
        while let Some(frame) = whole.poll_frame().unwrap() {
            out.push(frame);
        }
        assert_eq!(out, frames());

        let mut trickle = Decoder::new();
        let mut out = Vec::new();
        let mut at = 0;
        while at < wire.len() {
            let n = trickle.wants().min(wire.len() - at);
            trickle.handle_data(&wire[at..at + n]);
            at += n;
            while let Some(frame) = trickle.poll_frame().unwrap() {
                out.push(frame);
            }
        }
        assert_eq!(out, frames());
    }

    #[test]
    fn oversized_frames_are_refused_from_the_header_alone() {
        let mut d = Decoder::new();
        // A Subscribe claiming 1 GiB: refused after five bytes, nothing buffered for it.
        d.handle_data(&[kind::SUBSCRIBE, 0x40, 0, 0, 0]);
        assert!(matches!(d.poll_frame(), Err(WireError::TooLarge { .. })));
        assert!(d.poll_frame().is_err(), "the error sticks");
        let mut d = Decoder::new();
        d.handle_data(&[kind::VIDEO, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(d.poll_frame(), Err(WireError::TooLarge { .. })));
        let mut d = Decoder::new();
        d.handle_data(&[0x7f, 0, 0, 0, 0]);
        assert_eq!(d.poll_frame(), Err(WireError::UnknownKind(0x7f)));
    }

    #[test]
    fn a_server_takes_only_subscribe_and_a_subscriber_never_does() {
        let wire = encode_to_bytes(&Frame::End);
        let mut server = Decoder::for_server();
        server.handle_data(&wire);
        assert!(server.poll_frame().is_err());
        let wire = encode_to_bytes(&Frame::Subscribe { channel: "c".into(), rendition: "source".into() });
        let mut subscriber = Decoder::for_subscriber();
        subscriber.handle_data(&wire);
        assert!(subscriber.poll_frame().is_err());
    }

    #[test]
    fn malformed_payloads_are_errors_not_panics() {
        // Truncated strings, bad flags, trailing bytes, bad UTF-8, too many parameter sets.
        let cases: [(u8, &[u8]); 6] = [
            (kind::SUBSCRIBE, &[0, 5, b'a']),
            (kind::SUBSCRIBE, &[0, 1, 0xff, 0, 0]),
            (kind::SEGMENT, &[0, 0, 0, 0, 0, 0, 0, 1, 9]),
            (kind::VIDEO, &[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 7, 0, 0, 0, 0, 0, 0, 0, 0]),
            (kind::TRACKS, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]),
            (
                kind::TRACKS,
                &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 33],
            ),
        ];
        for (kind, payload) in cases {
            let mut wire = vec![kind];
            wire.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            wire.extend_from_slice(payload);
            let mut d = Decoder::new();
            d.handle_data(&wire);
            assert!(d.poll_frame().is_err(), "kind {kind:#x} {payload:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data: Vec<u8>) {
            let mut d = Decoder::new();
            d.handle_data(&data);
            while let Ok(Some(_)) = d.poll_frame() {}
        }
    }
}
