//! What WHEP viewers are sent: each live channel's `source` samples as the packager accepts
//! them, made ready for RTP once per channel (not per viewer) and fanned out.
//!
//! ```text
//! LiveRegistry (every stream opened here: ingest, WHIP, relayed) ── TrackTap::start ──▶ WhepHub
//!   source sample ──▶ ChannelRun (on the pushing task, under the packager's lock: cheap work only)
//!        video: AVCC → Annex B (SPS/PPS before each keyframe) ─┐
//!        audio: AAC ──▶ AacToOpus, 20 ms packets ──────────────┴─▶ broadcast ──▶ each viewer's session
//! ```
//!
//! Nothing is converted while a channel has no viewer. Samples are taken as pushed, before the
//! packager closes a part, so a WHEP viewer is not held back by part or segment boundaries.
//! A viewer that falls behind the broadcast (lagged) waits for the next keyframe, as a new one
//! does; viewers' keyframe requests go to the publisher when it can honour them (a WHIP
//! publisher), see [`WhepHub::request_keyframe`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{BufMut, Bytes, BytesMut};
use media::clock::UnixMillis;
use media::cmaf::{AudioConfig, Sample, VideoConfig};
use media::codec::h264;
use media::ingest::{TapRun, TapSource, TrackTap, SOURCE_RENDITION};
use tokio::sync::{broadcast, mpsc};
use transcode::audio::AacToOpus;

/// Opus bitrate sent to viewers (stereo, music-grade).
pub const OPUS_BITRATE: u32 = 96_000;
/// Frames a viewer may fall behind before it is lagged (about 4 s of 30 fps video and audio).
const BROADCAST_CAPACITY: usize = 512;

/// One frame ready for a viewer's RTP writer.
#[derive(Debug, Clone)]
pub enum PlayFrame {
    /// An H.264 access unit, Annex B; a keyframe carries its SPS and PPS. `rtp` is the
    /// presentation time, 90 kHz.
    Video { rtp: u64, keyframe: bool, data: Bytes },
    /// One 20 ms Opus packet, `rtp` at 48 kHz.
    Audio { rtp: u64, data: Bytes },
}

/// A channel WHEP can play: its tracks and its frames.
#[derive(Debug)]
pub struct ChannelFeed {
    pub channel_id: String,
    pub session_id: String,
    pub video: VideoConfig,
    pub audio: Option<AudioConfig>,
    frames: broadcast::Sender<PlayFrame>,
}

impl ChannelFeed {
    pub fn subscribe(&self) -> broadcast::Receiver<PlayFrame> {
        self.frames.subscribe()
    }

    /// Viewers subscribed now.
    pub fn viewers(&self) -> usize {
        self.frames.receiver_count()
    }
}

#[derive(Debug, Default)]
struct Channels {
    feeds: HashMap<String, Arc<ChannelFeed>>,
    /// Where a keyframe can be asked for, by channel (WHIP publishers register here).
    keyframes: HashMap<String, mpsc::Sender<()>>,
}

/// The live channels WHEP can play on this node. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct WhepHub {
    inner: Arc<Mutex<Channels>>,
}

impl WhepHub {
    pub fn new() -> Self {
        Self::default()
    }

    /// The channel's feed, if it is live here.
    pub fn channel(&self, channel_id: &str) -> Option<Arc<ChannelFeed>> {
        self.lock().feeds.get(channel_id).cloned()
    }

    /// Asks the channel's publisher for a keyframe, if it can send one on request (a WHIP
    /// publisher; RTMP and SRT encoders cannot be asked, their viewers wait for the next one).
    /// The publisher's session throttles.
    pub fn request_keyframe(&self, channel_id: &str) -> bool {
        self.lock().keyframes.get(channel_id).is_some_and(|tx| tx.try_send(()).is_ok())
    }

    /// Registers the channel's publisher as able to send keyframes on request, until the
    /// returned guard drops.
    pub fn keyframes_from(&self, channel_id: &str, tx: mpsc::Sender<()>) -> KeyframeSource {
        self.lock().keyframes.insert(channel_id.to_owned(), tx.clone());
        KeyframeSource { hub: self.clone(), channel_id: channel_id.to_owned(), tx }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Channels> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// See [`WhepHub::keyframes_from`].
#[derive(Debug)]
pub struct KeyframeSource {
    hub: WhepHub,
    channel_id: String,
    tx: mpsc::Sender<()>,
}

impl Drop for KeyframeSource {
    fn drop(&mut self) {
        let mut channels = self.hub.lock();
        if channels.keyframes.get(&self.channel_id).is_some_and(|tx| tx.same_channel(&self.tx)) {
            channels.keyframes.remove(&self.channel_id);
        }
    }
}

impl TrackTap for WhepHub {
    fn start(&self, source: &TapSource<'_>) -> Option<Box<dyn TapRun>> {
        if source.rendition != SOURCE_RENDITION {
            return None;
        }
        let video = source.video?.clone();
        let (frames, _) = broadcast::channel(BROADCAST_CAPACITY);
        let feed = Arc::new(ChannelFeed {
            channel_id: source.channel_id.to_owned(),
            session_id: source.session_id.to_owned(),
            video,
            audio: source.audio.cloned(),
            frames,
        });
        self.lock().feeds.insert(feed.channel_id.clone(), feed.clone());
        Some(Box::new(ChannelRun { hub: self.clone(), feed, opus: None, opus_failed: false }))
    }
}

/// One live stream's conversions (see the module docs); removes the channel when the stream
/// ends.
struct ChannelRun {
    hub: WhepHub,
    feed: Arc<ChannelFeed>,
    opus: Option<AacToOpus>,
    /// The AAC track cannot be transcoded (logged once): video only.
    opus_failed: bool,
}

impl TapRun for ChannelRun {
    fn video(&mut self, sample: &Sample, _now: UnixMillis, _segment_start: Option<u64>) {
        if self.feed.viewers() == 0 {
            return;
        }
        let Some(data) = annexb(sample, &self.feed.video) else { return };
        let rtp = sample.dts.saturating_add_signed(i64::from(sample.pts_offset));
        let _ = self.feed.frames.send(PlayFrame::Video { rtp, keyframe: sample.keyframe, data });
    }

    fn audio(&mut self, sample: &Sample, _now: UnixMillis) {
        if self.feed.viewers() == 0 || self.opus_failed {
            return;
        }
        let Some(config) = &self.feed.audio else { return };
        if self.opus.is_none() {
            match AacToOpus::new(&config.asc, OPUS_BITRATE) {
                Ok(opus) => self.opus = Some(opus),
                Err(error) => {
                    tracing::warn!(channel = %self.feed.channel_id, %error, "WHEP viewers get no audio");
                    self.opus_failed = true;
                    return;
                }
            }
        }
        let Some(opus) = &mut self.opus else { return };
        let pts = i64::try_from(sample.dts).unwrap_or(i64::MAX);
        match opus.push(&sample.data, pts, config.sample_rate) {
            Ok(packets) => {
                for packet in packets {
                    let rtp = u64::try_from(packet.pts).unwrap_or(0);
                    let _ = self.feed.frames.send(PlayFrame::Audio { rtp, data: packet.data });
                }
            }
            Err(error) => tracing::debug!(channel = %self.feed.channel_id, %error, "AAC frame not transcoded"),
        }
    }
}

impl Drop for ChannelRun {
    fn drop(&mut self) {
        let mut channels = self.hub.lock();
        if channels.feeds.get(&self.feed.channel_id).is_some_and(|f| Arc::ptr_eq(f, &self.feed)) {
            channels.feeds.remove(&self.feed.channel_id);
        }
    }
}

/// A sample's AVCC access unit as Annex B, with the track's parameter sets before a keyframe
/// (a viewer may start at any keyframe). `None` if the NAL lengths are broken.
fn annexb(sample: &Sample, config: &VideoConfig) -> Option<Bytes> {
    let mut out = BytesMut::with_capacity(sample.data.len() + 64);
    if sample.keyframe {
        for set in config.sps.iter().chain(&config.pps) {
            out.put_slice(&[0, 0, 0, 1]);
            out.put_slice(set);
        }
    }
    for nal in h264::avcc_nal_units(&sample.data, 4) {
        out.put_slice(&[0, 0, 0, 1]);
        out.put_slice(nal.ok()?);
    }
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframes_carry_their_parameter_sets_in_annexb() {
        let config = VideoConfig {
            codec: media::cmaf::VideoCodec::Avc1,
            sps: vec![vec![0x67, 1, 2]],
            pps: vec![vec![0x68, 3]],
            width: 640,
            height: 360,
            codec_string: "avc1.42e01e".into(),
        };
        let avcc = Bytes::from_static(&[0, 0, 0, 2, 0x65, 9, 0, 0, 0, 1, 0x06]);
        let key = Sample { dts: 0, pts_offset: 0, duration: 3000, keyframe: true, data: avcc.clone() };
        assert_eq!(
            &annexb(&key, &config).unwrap()[..],
            &[0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 9, 0, 0, 0, 1, 0x06][..]
        );
        let delta = Sample { keyframe: false, ..key };
        assert_eq!(&annexb(&delta, &config).unwrap()[..], &[0, 0, 0, 1, 0x65, 9, 0, 0, 0, 1, 0x06][..]);
        let broken = Sample { data: Bytes::from_static(&[0, 0, 0, 9, 0x41]), ..delta };
        assert!(annexb(&broken, &config).is_none());
    }
}
