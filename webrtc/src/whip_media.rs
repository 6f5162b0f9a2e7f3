//! Sans-IO: what a WHIP publisher's frames become before the packager, the WebRTC twin of
//! `media::ingest::srt::TsToCmaf`.
//!
//! ```text
//! str0m MediaData (depacketized) ─┬─ H.264 Annex B, RTP 90 kHz ──▶ h264::AnnexbFrames ─┐
//!                                 └─ Opus, RTP 48 kHz ──▶ OpusToAac ── AAC-LC ──────────┤ MediaInput (90 kHz)
//!                                                                                      ▼
//!                                                       PackagerFeed ──▶ FeedOutput ──▶ PublishSink
//! ```
//!
//! Timing: each track's RTP clock starts at a random offset, so each is anchored at the arrival
//! of its first frame (relative to the first frame of either track) and runs on its RTP
//! timestamps from there. Browsers capture audio and video together, so arrival anchors keep lip
//! sync within a network jitter; the feed's track clocks absorb later jumps.
//!
//! Audio: HLS players everywhere decode AAC but not all decode Opus in fMP4 (Safari before 17
//! does not), so Opus is transcoded to AAC-LC once, here, rather than carried as Opus.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use media::codec::aac::AacConfig;
use media::codec::h264::AnnexbFrames;
use media::codec::{AudioFrame, MediaInput, CLOCK_RATE};
use media::ingest::{FeedError, FeedOutput, FrameCounts, PackagerFeed};
use transcode::audio::{AudioError, OpusToAac, OUTPUT_RATE};

/// AAC bitrate of a WHIP publisher's audio (stereo 48 kHz).
pub const AAC_BITRATE: u32 = 128_000;
/// Channels of the AAC track: Opus in WebRTC is always signalled as stereo (RFC 7587).
const CHANNELS: u8 = 2;

/// One track's mapping from RTP time to media time.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    rtp: u64,
    media: u64,
}

impl Anchor {
    /// Media time (track clock) of `rtp`; frames from before the anchor clamp to it.
    fn map(self, rtp: u64) -> u64 {
        self.media + rtp.saturating_sub(self.rtp)
    }
}

/// See the module docs.
pub struct WhipMedia {
    feed: PackagerFeed,
    video: AnnexbFrames,
    inputs: VecDeque<MediaInput>,
    opus: Option<OpusToAac>,
    audio_config: bool,
    epoch: Option<Instant>,
    video_anchor: Option<Anchor>,
    audio_anchor: Option<Anchor>,
    counts: FrameCounts,
    /// Opus packets the transcoder refused (counted as lost).
    audio_errors: u64,
}

impl WhipMedia {
    /// A publish whose offer has video and, if `audio`, Opus audio: the packager waits for both
    /// tracks before it starts.
    pub fn new(audio: bool) -> Self {
        let mut feed = PackagerFeed::new();
        feed.expect_tracks(true, audio);
        WhipMedia {
            feed,
            video: AnnexbFrames::default(),
            inputs: VecDeque::new(),
            opus: None,
            audio_config: false,
            epoch: None,
            video_anchor: None,
            audio_anchor: None,
            counts: FrameCounts::default(),
            audio_errors: 0,
        }
    }

    /// One H.264 access unit (Annex B, as str0m depacketizes it), RTP time in 90 kHz ticks.
    pub fn video(&mut self, arrival: Instant, rtp: u64, annexb: &[u8]) -> Result<(), FeedError> {
        let anchor = *self
            .video_anchor
            .get_or_insert_with(|| Anchor { rtp, media: since(&mut self.epoch, arrival, CLOCK_RATE) });
        let time = anchor.map(rtp);
        if !self.video.push(time, time, &Bytes::copy_from_slice(annexb), &mut self.inputs) {
            self.counts.dropped += 1;
        }
        self.pump()
    }

    /// One Opus packet, RTP time in 48 kHz ticks. A packet the decoder refuses counts as lost.
    pub fn audio(&mut self, arrival: Instant, rtp: u64, packet: &[u8]) -> Result<(), FeedError> {
        let anchor = *self
            .audio_anchor
            .get_or_insert_with(|| Anchor { rtp, media: since(&mut self.epoch, arrival, u64::from(OUTPUT_RATE)) });
        let pts = i64::try_from(anchor.map(rtp)).unwrap_or(i64::MAX);
        let frames = match self.transcoder().and_then(|opus| opus.push(packet, pts)) {
            Ok(frames) => frames,
            Err(error) => {
                self.audio_errors += 1;
                if self.audio_errors.is_power_of_two() {
                    tracing::debug!(%error, errors = self.audio_errors, "Opus packet refused");
                }
                return Ok(());
            }
        };
        self.push_aac(frames);
        self.pump()
    }

    /// The publish ended: the transcoder's tail, then the feed's.
    pub fn finish(&mut self) -> Result<(), FeedError> {
        if let Some(frames) = self.opus.as_mut().and_then(|opus| opus.flush().ok()) {
            self.push_aac(frames);
        }
        let pumped = self.pump();
        self.feed.finish();
        self.counts.dropped += self.feed.take_dropped();
        pumped
    }

    /// The next track set or sample, in order.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<FeedOutput> {
        self.feed.poll_output()
    }

    pub fn take_counts(&mut self) -> FrameCounts {
        std::mem::take(&mut self.counts)
    }

    /// Opus packets refused so far.
    pub fn audio_errors(&self) -> u64 {
        self.audio_errors
    }

    fn transcoder(&mut self) -> Result<&mut OpusToAac, AudioError> {
        if self.opus.is_none() {
            self.opus = Some(OpusToAac::new(CHANNELS, AAC_BITRATE)?);
        }
        Ok(self.opus.as_mut().expect("set above"))
    }

    fn push_aac(&mut self, frames: Vec<transcode::audio::AudioFrame>) {
        let Some(opus) = &self.opus else { return };
        if !self.audio_config && !frames.is_empty() {
            match AacConfig::parse(&opus.audio_specific_config()) {
                Ok(config) => {
                    self.inputs.push_back(MediaInput::AudioConfig(config));
                    self.audio_config = true;
                }
                Err(error) => {
                    tracing::warn!(%error, "the AAC encoder's configuration does not parse");
                    return;
                }
            }
        }
        for frame in frames {
            let pts = u64::try_from(frame.pts).unwrap_or(0) * CLOCK_RATE / u64::from(OUTPUT_RATE);
            self.inputs.push_back(MediaInput::Audio(AudioFrame { pts, data: frame.data }));
        }
    }

    fn pump(&mut self) -> Result<(), FeedError> {
        self.feed.pump(self.inputs.drain(..), &mut self.counts)
    }
}

/// Ticks of `rate` from the publish's first frame (set now if this is it) to `arrival`.
fn since(epoch: &mut Option<Instant>, arrival: Instant, rate: u64) -> u64 {
    let epoch = *epoch.get_or_insert(arrival);
    let elapsed = arrival.saturating_duration_since(epoch);
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX) * rate / 1_000_000
}
