//! The two ends of a relayed track as state machines, without sockets.
//!
//! - [`TrackCache`] (the publishing node): every event of the source track in, encoded frames
//!   out for the current subscribers ([`TrackCache::poll_transmit`]), and for a subscriber that
//!   joins now, the frames it needs to start packaging at the newest segment that began with a
//!   keyframe ([`TrackCache::join`]). Frames are kept as values (a sample's bytes are shared, not
//!   copied) and encoded only when sent: a track nobody subscribes to, as on a node that packages
//!   its own streams, costs no copy of its media.
//! - [`Subscription`] (an origin): frames in, packager events out ([`Subscription::poll_event`]):
//!   open the rendition at the segment it joined with the broadcast's epoch, then push samples.
//!
//! Why replay from a segment start, and why audio moves: a packager that starts a segment on the
//! same keyframe, in the same state, cuts every later part exactly as the publisher's packager
//! did ([`media::hls::Rendition`]'s cuts are a function of the samples since the segment start).
//! That state at a segment start is empty but for one thing: audio frames that arrived before the
//! keyframe with a timestamp at or after it, which the packager queued for the new segment. The
//! replay therefore sends them right after the keyframe, where a fresh packager queues them the
//! same way.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use media::cmaf::{AudioConfig, Sample, VideoConfig, VIDEO_TIMESCALE};
use media::hls::RenditionConfig;

use crate::wire::{encode_to_bytes, Frame, Packaging};

/// Bytes of media a cache keeps for joiners; past this (a GOP far longer than any sane segment)
/// joiners wait for the next keyframe segment instead.
pub const MAX_REPLAY_BYTES: usize = 64 << 20;

/// A frame as the cache keeps it until it is sent: unencoded, media sharing the sample's bytes,
/// and small (the Tracks frame is held once, by the cache), since every sample is moved through
/// the outbox and the replay.
#[derive(Debug, Clone)]
enum Held {
    Tracks,
    Segment(u64),
    Video(Sample, i64),
    Audio(Sample, i64),
    End,
}

impl Held {
    /// The media bytes it holds (what the replay's bound counts).
    fn media_len(&self) -> usize {
        match self {
            Held::Video(sample, _) | Held::Audio(sample, _) => sample.data.len(),
            _ => 0,
        }
    }
}

/// The publishing side of one track. Feed it with `handle_*`; after each, drain
/// [`TrackCache::poll_transmit`] to every current subscriber.
#[derive(Debug)]
pub struct TrackCache {
    tracks: Frame,
    audio_rate: u32,
    keeping: Keeping,
    /// Frames since the newest segment that began with a keyframe, its Segment frame first;
    /// empty while there is no join point.
    replay: Vec<Held>,
    replay_bytes: usize,
    /// Whether frames go to the outbox: only while someone subscribes ([`TrackCache::set_sending`]).
    sending: bool,
    outbox: VecDeque<Held>,
    /// Frames not put in the outbox since the last [`TrackCache::discard_transmit`].
    unsent: usize,
    ended: bool,
}

/// Whether the cache keeps a replay for joiners. Keeping one costs a hold of every sample until
/// the next keyframe segment (and freeing them then, out of cache), which a node whose streams
/// nobody subscribes to need not pay ([`TrackCache::without_replay`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keeping {
    Off,
    /// Asked for mid-stream: the next keyframe segment starts a replay that may miss audio the
    /// packager queued before it, so it is not offered to joiners.
    Warming,
    /// Kept from a keyframe segment: the next one is a complete join point.
    Started,
    On,
}

impl TrackCache {
    /// A track whose Tracks frame is `tracks` (session, packaging, configs).
    pub fn new(session: &str, packaging: Packaging, video: Option<VideoConfig>, audio: Option<AudioConfig>) -> Self {
        let audio_rate = audio.as_ref().map_or(1, |a| a.sample_rate.max(1));
        let tracks = Frame::Tracks { session: session.to_owned(), packaging, video, audio };
        TrackCache {
            outbox: VecDeque::from([Held::Tracks]),
            tracks,
            audio_rate,
            keeping: Keeping::On,
            replay: Vec::new(),
            replay_bytes: 0,
            sending: true,
            unsent: 0,
            ended: false,
        }
    }

    /// The same cache keeping no replay until [`TrackCache::keep_replay`].
    #[must_use]
    pub fn without_replay(mut self) -> Self {
        self.keeping = Keeping::Off;
        self
    }

    /// Keep a replay for joiners from now on. Asked for mid-stream, the first complete join point
    /// is the second keyframe segment from now ([`TrackCache::can_join`] says when).
    pub fn keep_replay(&mut self) {
        if self.keeping == Keeping::Off {
            self.keeping = Keeping::Warming;
        }
    }

    /// Whether a subscriber joining now gets a complete start ([`TrackCache::join`]): a replay
    /// from a keyframe segment start, or the end of the broadcast.
    pub fn can_join(&self) -> bool {
        self.ended || (self.keeping == Keeping::On && !self.replay.is_empty())
    }

    /// Whether frames are queued for [`TrackCache::poll_transmit`]; off while nobody subscribes,
    /// which saves holding each frame until it is discarded. Turning it off drops the queue.
    pub fn set_sending(&mut self, sending: bool) {
        if self.sending && !sending {
            self.unsent += self.outbox.len();
            self.outbox.clear();
        }
        self.sending = sending;
    }

    /// Nobody to send to and nothing kept: a frame other than a segment start is only counted.
    fn idle(&self) -> bool {
        !self.sending && self.replay.is_empty()
    }

    fn send(&mut self, held: Held) {
        if self.sending {
            self.outbox.push_back(held);
        } else {
            self.unsent += 1;
        }
    }

    /// A video sample the publisher's packager accepted; `segment_start` when this keyframe
    /// opened segment `msn` there.
    pub fn handle_video(&mut self, sample: &Sample, now: i64, segment_start: Option<u64>) {
        if self.ended {
            return;
        }
        if segment_start.is_none() && self.idle() {
            self.unsent += 1;
            return;
        }
        let frame = Held::Video(sample.clone(), now);
        if let Some(msn) = segment_start {
            let marker = Held::Segment(msn);
            self.send(marker.clone());
            if sample.keyframe && self.keeping != Keeping::Off {
                // A new join point: audio already sent that the packager queued for this
                // segment (dts at or after the keyframe) moves behind the keyframe.
                let rate = u128::from(self.audio_rate);
                let starts_after =
                    |dts: u64| u128::from(dts) * u128::from(VIDEO_TIMESCALE) >= u128::from(sample.dts) * rate;
                // In place: the replay keeps its capacity from one segment to the next.
                self.replay.retain(|held| matches!(held, Held::Audio(audio, _) if starts_after(audio.dts)));
                self.replay.splice(0..0, [marker, frame.clone()]);
                self.replay_bytes = self.replay.iter().map(Held::media_len).sum();
                self.keeping = match self.keeping {
                    Keeping::Warming => Keeping::Started,
                    _ => Keeping::On,
                };
                self.send(frame);
                return;
            }
        }
        self.remember(&frame);
        self.send(frame);
    }

    /// An audio sample the publisher's packager accepted.
    pub fn handle_audio(&mut self, sample: &Sample, now: i64) {
        if self.ended {
            return;
        }
        if self.idle() {
            self.unsent += 1;
            return;
        }
        let frame = Held::Audio(sample.clone(), now);
        self.remember(&frame);
        self.send(frame);
    }

    /// The broadcast finished.
    pub fn handle_end(&mut self) {
        if !self.ended {
            self.ended = true;
            self.replay.clear();
            self.send(Held::End);
        }
    }

    fn remember(&mut self, held: &Held) {
        if self.replay.is_empty() {
            return;
        }
        self.replay_bytes += held.media_len();
        self.replay.push(held.clone());
        if self.replay_bytes > MAX_REPLAY_BYTES {
            self.replay.clear();
            self.replay_bytes = 0;
        }
    }

    /// The next frame for every current subscriber, encoded once for all of them.
    #[must_use = "send every frame to the subscribers"]
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        let held = self.outbox.pop_front()?;
        Some(self.encode(&held))
    }

    fn encode(&self, held: &Held) -> Bytes {
        match held {
            Held::Tracks => encode_to_bytes(&self.tracks),
            Held::Segment(msn) => encode_to_bytes(&Frame::Segment { msn: *msn }),
            Held::Video(sample, now) => encode_to_bytes(&Frame::Video { sample: sample.clone(), now: *now }),
            Held::Audio(sample, now) => encode_to_bytes(&Frame::Audio { sample: sample.clone(), now: *now }),
            Held::End => encode_to_bytes(&Frame::End),
        }
    }

    /// Drops the frames [`TrackCache::poll_transmit`] would give, unencoded: there is nobody to
    /// send them to. Returns how many.
    pub fn discard_transmit(&mut self) -> usize {
        let frames = self.outbox.len() + std::mem::take(&mut self.unsent);
        self.outbox.clear();
        frames
    }

    /// What a subscriber joining now is sent before the live frames: the Tracks frame, then the
    /// replay from the newest keyframe segment start (nothing while there is none, see
    /// [`TrackCache::can_join`]: it then starts at the next Segment frame of the live stream).
    /// Drain `poll_transmit` first, so the joiner gets neither a frame twice nor a gap.
    pub fn join(&self) -> Vec<Bytes> {
        let mut frames = vec![self.encode(&Held::Tracks)];
        if self.keeping == Keeping::On {
            frames.extend(self.replay.iter().map(|held| self.encode(held)));
        }
        if self.ended {
            frames.push(self.encode(&Held::End));
        }
        frames
    }

    /// Whether the broadcast finished.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Media bytes held for joiners (shared with the packager, not copies).
    pub fn replay_bytes(&self) -> usize {
        self.replay_bytes
    }
}

/// What a subscriber's packager does next.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TrackEvent {
    /// Open the rendition (replacing an earlier stream of the channel): it starts at
    /// `config.first_msn` with `config.epoch_msn` the broadcast's epoch.
    Open {
        session: String,
        config: RenditionConfig,
        video: Option<VideoConfig>,
        audio: Option<AudioConfig>,
    },
    Video {
        sample: Sample,
        now: i64,
    },
    Audio {
        sample: Sample,
        now: i64,
    },
    /// After pushing the next video sample, the rendition's open segment should be `msn`; if it
    /// is not, this packager diverged from the publisher's (logged and counted by the driver).
    ExpectSegment {
        msn: u64,
    },
    /// The broadcast finished: finish the rendition.
    End,
}

/// Why a subscription cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscriptionError {
    #[error("the publisher refused the subscription: {0}")]
    Refused(String),
    #[error("media before the tracks")]
    NoTracks,
    #[error("the tracks' packaging settings are invalid: {0}")]
    BadPackaging(String),
    #[error("unexpected frame from the publisher")]
    Unexpected,
}

/// The subscribing side of one track: feed every decoded frame to
/// [`Subscription::handle_frame`], then drain [`Subscription::poll_event`] into the packager.
#[derive(Debug)]
pub struct Subscription {
    rendition: String,
    tracks: Option<(String, RenditionConfig, Option<VideoConfig>, Option<AudioConfig>)>,
    opened: bool,
    events: VecDeque<TrackEvent>,
}

impl Subscription {
    /// A subscription to rendition `rendition` (its name in the origin).
    pub fn new(rendition: &str) -> Self {
        Subscription { rendition: rendition.to_owned(), tracks: None, opened: false, events: VecDeque::new() }
    }

    /// Whether the packager has been opened (the subscription joined at a segment start).
    pub fn is_open(&self) -> bool {
        self.opened
    }

    pub fn handle_frame(&mut self, frame: Frame) -> Result<(), SubscriptionError> {
        match frame {
            Frame::Tracks { session, packaging, video, audio } => {
                let config = RenditionConfig {
                    name: self.rendition.clone(),
                    part_target: Duration::from_micros(packaging.part_target_us.into()),
                    segment_target: Duration::from_micros(packaging.segment_target_us.into()),
                    playlist_segments: packaging.playlist_segments.into(),
                    max_part_bytes: usize::try_from(packaging.max_part_bytes).unwrap_or(usize::MAX),
                    first_msn: packaging.epoch_msn,
                    epoch_msn: Some(packaging.epoch_msn),
                };
                config.validate().map_err(|e| SubscriptionError::BadPackaging(e.to_string()))?;
                // A new session of the channel (same connection): start over at its next segment.
                self.opened = false;
                self.tracks = Some((session, config, video, audio));
            }
            Frame::Segment { msn } => {
                let Some((session, config, video, audio)) = &self.tracks else {
                    return Err(SubscriptionError::NoTracks);
                };
                if self.opened {
                    self.events.push_back(TrackEvent::ExpectSegment { msn });
                } else if msn >= config.first_msn {
                    let config = RenditionConfig { first_msn: msn, ..config.clone() };
                    self.events.push_back(TrackEvent::Open {
                        session: session.clone(),
                        config,
                        video: video.clone(),
                        audio: audio.clone(),
                    });
                    self.opened = true;
                }
            }
            Frame::Video { sample, now } => {
                if self.tracks.is_none() {
                    return Err(SubscriptionError::NoTracks);
                }
                if self.opened {
                    self.events.push_back(TrackEvent::Video { sample, now });
                }
            }
            Frame::Audio { sample, now } => {
                if self.tracks.is_none() {
                    return Err(SubscriptionError::NoTracks);
                }
                if self.opened {
                    self.events.push_back(TrackEvent::Audio { sample, now });
                }
            }
            Frame::End => {
                if self.opened {
                    self.events.push_back(TrackEvent::End);
                }
                self.opened = false;
                self.tracks = None;
            }
            Frame::Refused { reason } => return Err(SubscriptionError::Refused(reason)),
            _ => return Err(SubscriptionError::Unexpected),
        }
        Ok(())
    }

    #[must_use = "apply every event to the packager"]
    pub fn poll_event(&mut self) -> Option<TrackEvent> {
        self.events.pop_front()
    }
}
