//! FLV: the tag bodies RTMP carries in video/audio messages and FLV tag framing as found in files
//! and RTMP aggregate messages. The codec configuration inside sequence headers is parsed by the
//! codec layer ([`crate::codec`]).
//!
//! Tag bodies arrive whole (one RTMP message each), so [`parse_video_tag`] and
//! [`parse_audio_tag`] treat a short body as invalid ([`FlvError::Truncated`]). Only
//! [`read_tag`] and [`read_file_header`] work on a growing buffer and return
//! [`FlvError::Incomplete`].
//!
//! Video: legacy AVC (codec id 7) and the Enhanced RTMP `ExVideoTagHeader` (FourCC `avc1`,
//! `hvc1`, `av01`, `vp09`). Only AVC configuration is parsed further
//! ([`AvcConfig::parse_record`]); the others are reported with their raw configuration record. Audio: AAC (sound format 10) and Enhanced RTMP `mp4a`/`Opus`.
//!
//! Written here rather than using a crate: the parsing we need is small, and we want parsers that
//! never panic, bound their work, and report typed errors.

use bytes::Bytes;
use thiserror::Error;

use crate::codec::aac::AacConfig;
use crate::codec::h264::AvcConfig;
use crate::codec::CodecError;

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
    /// A sequence header whose codec configuration is malformed.
    #[error(transparent)]
    Codec(#[from] CodecError),
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
    /// record; see [`crate::codec::h264::avcc_nal_units`]). For AV1: OBUs; for VP9: the frame.
    pub nalus: Bytes,
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
            VideoCodec::Avc => Ok(VideoTag::AvcSequenceHeader(AvcConfig::parse_record(&data)?)),
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
            VideoCodec::Avc => Ok(VideoTag::AvcSequenceHeader(AvcConfig::parse_record(&data)?)),
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

/// Parses the body of an RTMP audio message / FLV audio tag.
pub fn parse_audio_tag(timestamp_ms: u64, body: &Bytes) -> Result<AudioTag, FlvError> {
    let Some(&b0) = body.first() else { return Err(FlvError::Truncated("audio tag header")) };
    let sound_format = b0 >> 4;
    match sound_format {
        10 => {
            let Some(&packet_type) = body.get(1) else { return Err(FlvError::Truncated("AAC packet type")) };
            let data = body.slice(2..);
            match packet_type {
                0 => Ok(AudioTag::AacSequenceHeader(AacConfig::parse(&data)?)),
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
        (SEQUENCE_START, AudioCodec::Aac) => AudioTag::AacSequenceHeader(AacConfig::parse(&data)?),
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
mod tests {
    use super::*;
    use crate::codec::h264::avcc_nal_units;
    use crate::test_support::test_avc_record;

    #[test]
    fn avc_sequence_header_and_frames() {
        let mut body = vec![0x17, 0, 0, 0, 0];
        body.extend_from_slice(&test_avc_record(1280, 720));
        let VideoTag::AvcSequenceHeader(cfg) = parse_video_tag(0, &Bytes::from(body)).unwrap() else { panic!() };
        assert_eq!((cfg.width, cfg.height, cfg.nal_length_size), (1280, 720, 4));
        assert_eq!(cfg.codec_string(), "avc1.64001f");
        assert_eq!(cfg.pps.len(), 1);

        // Inter frame with composition time offset 40 ms holding two NAL units.
        let body = Bytes::from_static(&[0x27, 1, 0, 0, 40, 0, 0, 0, 2, 0x41, 0x9a, 0, 0, 0, 1, 0x06]);
        let VideoTag::Frame(f) = parse_video_tag(1000, &body).unwrap() else { panic!() };
        assert_eq!((f.dts_ms, f.pts_ms, f.keyframe, f.codec), (1000, 1040, false, VideoCodec::Avc));
        let nals: Vec<_> = avcc_nal_units(&f.nalus, 4).collect::<Result<_, _>>().unwrap();
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
        assert_eq!(c.codec_string(), "mp4a.40.2");
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
            let _ = read_tag(&b);
            let _ = read_file_header(&b);
        }
    }
}
