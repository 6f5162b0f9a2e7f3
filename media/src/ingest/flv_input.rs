//! [`FlvInput`]: RTMP's FLV tag bodies → the codec layer's typed [`MediaInput`]s for the
//! [`super::PackagerFeed`]. Sans-IO.
//!
//! It converts what only FLV has: millisecond timestamps (× 90, exact, to the 90 kHz clock), the
//! NAL length size of the sequence header (frames are rewritten to 4-byte lengths), and FLV's
//! codec ids (anything but H.264 video ends the stream, audio other than AAC is dropped).

use bytes::Bytes;

use super::packager_feed::FeedError;
use crate::codec::h264;
use crate::codec::{AudioFrame, MediaInput, VideoFrame, CLOCK_RATE};
use crate::flv::{self, AudioCodec, AudioTag, FlvError, VideoCodec, VideoTag};
use crate::rtmp::Metadata;

/// 90 kHz ticks per FLV millisecond.
const TICKS_PER_MS: u64 = CLOCK_RATE / 1000;

/// What one tag body became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Converted {
    /// Hand this to the feed.
    Input(MediaInput),
    /// A tag that carries nothing we package (end of sequence, command frames).
    Other,
    /// A frame that cannot be used (malformed, before its sequence header, audio not AAC).
    Dropped,
}

/// See the module docs. One per publish.
#[derive(Debug, Default)]
pub struct FlvInput {
    /// NAL length size of the current AVC sequence header.
    nal_length_size: Option<u8>,
}

impl FlvInput {
    pub fn new() -> Self {
        Self::default()
    }

    /// Which tracks `onMetaData` announces: `(video, audio)`, or `None` when it says neither
    /// (some encoders send only `encoder`).
    pub fn expected_tracks(meta: &Metadata) -> Option<(bool, bool)> {
        let video = meta.video_codec_id.is_some() || meta.width.is_some();
        let audio = meta.audio_codec_id.is_some() || meta.audio_sample_rate.is_some();
        (video || audio).then_some((video, audio))
    }

    /// One video message body with its (wraparound-extended) RTMP timestamp. Err: the stream's
    /// video is not H.264 and cannot be packaged.
    pub fn video(&mut self, timestamp_ms: u64, body: &Bytes) -> Result<Converted, FeedError> {
        Ok(match flv::parse_video_tag(timestamp_ms, body) {
            Ok(VideoTag::AvcSequenceHeader(config)) => {
                self.nal_length_size = Some(config.nal_length_size);
                Converted::Input(MediaInput::VideoConfig(config))
            }
            Ok(VideoTag::SequenceHeader { codec, .. }) => {
                return Err(FeedError::UnsupportedVideoCodec(format!("{codec:?}")))
            }
            Ok(VideoTag::Frame(frame)) if frame.codec != VideoCodec::Avc => {
                return Err(FeedError::UnsupportedVideoCodec(format!("{:?}", frame.codec)))
            }
            Ok(VideoTag::Frame(frame)) => {
                let Some(length_size) = self.nal_length_size else { return Ok(Converted::Dropped) };
                let Some(data) = h264::to_avcc4(&frame.nalus, length_size) else { return Ok(Converted::Dropped) };
                Converted::Input(MediaInput::Video(VideoFrame {
                    dts: frame.dts_ms.saturating_mul(TICKS_PER_MS),
                    pts: frame.pts_ms.saturating_mul(TICKS_PER_MS),
                    keyframe: frame.keyframe,
                    data,
                }))
            }
            Ok(_) => Converted::Other,
            Err(e @ (FlvError::UnsupportedVideoCodec(_) | FlvError::UnsupportedFourCc(_))) => {
                return Err(FeedError::UnsupportedVideoCodec(e.to_string()))
            }
            Err(_) => Converted::Dropped,
        })
    }

    /// One audio message body with its (wraparound-extended) RTMP timestamp.
    pub fn audio(&mut self, timestamp_ms: u64, body: &Bytes) -> Converted {
        match flv::parse_audio_tag(timestamp_ms, body) {
            Ok(AudioTag::AacSequenceHeader(config)) => Converted::Input(MediaInput::AudioConfig(config)),
            Ok(AudioTag::Frame(frame)) if frame.codec == AudioCodec::Aac => {
                let pts = frame.pts_ms.saturating_mul(TICKS_PER_MS);
                Converted::Input(MediaInput::Audio(AudioFrame { pts, data: frame.data }))
            }
            Ok(AudioTag::Frame(_)) => Converted::Dropped,
            Ok(_) => Converted::Other,
            Err(_) => Converted::Dropped,
        }
    }
}
