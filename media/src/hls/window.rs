//! One rendition's LL-HLS window: samples in, CMAF parts and segments out.
//!
//! A [`Rendition`] receives samples in decode order (`push_video`, `push_audio`, each with the
//! ingest wall clock `now`) and cuts them:
//! - a **part** closes as soon as it holds `part_target` of media, or before a sample that would
//!   make it longer than that; every part is one CMAF fragment ([`crate::cmaf::fragment`]) and the
//!   parts of a segment never overlap two segments;
//! - a **segment** closes at the first keyframe at least `segment_target` after its start, so
//!   segments follow the source GOP and begin with a keyframe (which keeps them aligned across
//!   renditions encoded with the same GOP). Hard limit: a segment that reaches
//!   [`FORCED_CUT_TARGETS`] segment targets, or [`MAX_SEGMENT_BYTES`], without a keyframe is cut
//!   anyway ([`Rendition::forced_cuts`]), so a publisher that never sends one (intra refresh, a
//!   huge GOP) cannot grow the window without bound; parts keep flowing either way. A segment's bytes are its parts' fragments back
//!   to back; after the segment closes its parts are re-sliced out of those bytes, so each byte
//!   is held once.
//!
//! Video leads when present: cuts happen on video timing and each part also carries the audio
//! frames that start before the part's end. An audio-only rendition cuts on audio timing.
//!
//! The window is bounded: the playlist lists the last `playlist_segments` complete segments and
//! two more are kept for clients still reading the previous playlist; older ones are dropped.
//!
//! There is no waker here. After each push returns [`Pushed::Published`], the async driver wakes
//! requests waiting on the playlist; [`Rendition::latest`] and the lookups answer them.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hls_names::InitId;

use crate::clock::UnixMillis;

use crate::cmaf::{
    self, AudioConfig, CmafError, Sample, TrackRun, VideoConfig, AUDIO_TRACK_ID, VIDEO_TIMESCALE, VIDEO_TRACK_ID,
};

/// Complete segments kept beyond those listed in the playlist, for clients holding an older
/// playlist (RFC 8216bis asks servers to keep removed segments available for a while).
const RETAINED_BEYOND_PLAYLIST: usize = 2;
/// Audio frames waiting for a video part to carry them (~10 s of 48 kHz AAC): bounds memory if
/// video stalls while audio keeps coming.
const MAX_QUEUED_AUDIO: usize = 512;
/// A segment without a keyframe is cut at this many segment targets (4 s by default).
pub const FORCED_CUT_TARGETS: u64 = 4;
/// ... or at this many bytes of parts, whichever comes first.
pub const MAX_SEGMENT_BYTES: usize = 32 << 20;
/// Program date-time is media time from an anchor; re-anchor to the wall clock past this drift.
const PDT_RESYNC_MILLIS: u64 = 1_000;

/// Settings of one rendition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenditionConfig {
    /// Path segment of the rendition (`source`, `720p`): `[A-Za-z0-9._-]+`.
    pub name: String,
    /// Longest part (`PART-TARGET`). Default 200 ms.
    pub part_target: Duration,
    /// Shortest segment; a segment ends at the first keyframe after it. Default 1 s.
    pub segment_target: Duration,
    /// Complete segments listed in the media playlist. Default 8.
    pub playlist_segments: usize,
    /// A part closes early once it holds this many bytes of samples. Default 8 MiB.
    pub max_part_bytes: usize,
    /// Media sequence number of the first segment. Parts and segments are immutable under their
    /// URLs, so a new broadcast of a channel must not reuse the numbers of an earlier one (caches
    /// would serve the old bytes). Default 0.
    pub first_msn: u64,
    /// First media sequence number of the broadcast, when this packager joins it later than its
    /// start (an origin subscribing to a relayed track at a segment boundary): the init segment's
    /// name and the fragments' sequence numbers derive from it, so every packager of one
    /// broadcast writes the same bytes under the same names. `None`: `first_msn`.
    pub epoch_msn: Option<u64>,
}

impl Default for RenditionConfig {
    fn default() -> Self {
        RenditionConfig {
            name: "source".into(),
            part_target: Duration::from_millis(200),
            segment_target: Duration::from_secs(1),
            playlist_segments: 8,
            max_part_bytes: 8 << 20,
            first_msn: 0,
            epoch_msn: None,
        }
    }
}

impl RenditionConfig {
    /// Checks the settings, naming the bad one.
    pub fn validate(&self) -> Result<(), RenditionError> {
        let name_ok = !self.name.is_empty()
            && self.name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            && self.name != "."
            && self.name != "..";
        let bad = if !name_ok {
            "name must be [A-Za-z0-9._-]+"
        } else if self.part_target < Duration::from_millis(50) || self.part_target > Duration::from_secs(5) {
            "part_target must be between 50 ms and 5 s"
        } else if self.segment_target < self.part_target || self.segment_target > Duration::from_secs(30) {
            "segment_target must be at least part_target and at most 30 s"
        } else if self.playlist_segments < 3 {
            "playlist_segments must be at least 3"
        } else if self.max_part_bytes < 1024 {
            "max_part_bytes must be at least 1024"
        } else if self.epoch_msn.is_some_and(|epoch| epoch > self.first_msn) {
            "epoch_msn must not be above first_msn"
        } else {
            return Ok(());
        };
        Err(RenditionError::InvalidConfig { rendition: self.name.clone(), reason: bad })
    }
}

/// Which track of a rendition a sample belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackKind {
    Video,
    Audio,
}

/// A partial segment: one CMAF fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Media sequence number of the parent segment.
    pub msn: u64,
    /// Index within the parent segment, from 0.
    pub index: u32,
    pub duration: Duration,
    /// Starts with a keyframe (`INDEPENDENT=YES`).
    pub independent: bool,
    pub bytes: Bytes,
}

/// A complete media segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub msn: u64,
    /// The first segment after a resumed publish: `EXT-X-DISCONTINUITY` (new timeline).
    pub discontinuity: bool,
    /// The header its samples need (`EXT-X-MAP`); a resumed publish may bring a new one.
    pub init_id: InitId,
    pub duration: Duration,
    /// Wall-clock time of the first sample (`EXT-X-PROGRAM-DATE-TIME`).
    pub program_date_time: UnixMillis,
    pub parts: Vec<Part>,
    /// The parts' bytes back to back, once asked for ([`Segment::bytes`]).
    joined: JoinedParts,
}

impl Segment {
    /// The segment's bytes: its parts back to back. They are joined (one copy) on the first call
    /// and kept for later ones, so a segment nobody fetches whole (LL-HLS players fetch parts;
    /// a recording writes the parts) is never copied.
    pub fn bytes(&self) -> Bytes {
        self.joined
            .0
            .get_or_init(|| match self.parts.as_slice() {
                [only] => only.bytes.clone(),
                parts => {
                    let mut joined = BytesMut::with_capacity(self.byte_len());
                    for part in parts {
                        joined.extend_from_slice(&part.bytes);
                    }
                    joined.freeze()
                }
            })
            .clone()
    }

    /// Its length in bytes (its parts').
    pub fn byte_len(&self) -> usize {
        self.parts.iter().map(|p| p.bytes.len()).sum()
    }
}

/// A segment's parts joined, when they have been: derived from the parts, so it takes no part in
/// comparing segments.
#[derive(Debug, Clone, Default)]
struct JoinedParts(std::sync::OnceLock<Bytes>);

impl PartialEq for JoinedParts {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for JoinedParts {}

/// The segment being built: its parts published so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartialSegment {
    pub msn: u64,
    /// See [`Segment::discontinuity`].
    pub discontinuity: bool,
    pub init_id: InitId,
    pub program_date_time: UnixMillis,
    pub parts: Vec<Part>,
}

/// The newest published part of a rendition: what `LAST-MSN`/`LAST-PART` report and what
/// blocking playlist requests are compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latest {
    /// Media sequence number of the part's parent segment.
    pub msn: u64,
    /// Index of the part in that segment.
    pub part: u32,
    /// The parent segment is complete: the next part will be part 0 of `msn + 1`.
    pub segment_complete: bool,
}

/// What a push did. Drain it: on `Published`, wake requests waiting for new parts.
#[must_use = "wake blocked playlist requests on Published"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Held for the part being built.
    Buffered,
    /// At least one new part (and maybe a segment) is available; this is the new latest part.
    Published(Latest),
    /// The sample was discarded.
    Dropped(DropReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// Nothing is published before the first keyframe of the leading track.
    WaitingForKeyframe,
    /// Audio arrived before the first video keyframe, or faster than video can carry it.
    AudioWithoutVideo,
}

/// Why a rendition rejected an input. Each names the rendition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RenditionError {
    #[error("rendition {rendition}: invalid config: {reason}")]
    InvalidConfig { rendition: String, reason: &'static str },
    #[error("rendition {rendition}: has no {track:?} track")]
    NoTrack { rendition: String, track: TrackKind },
    #[error("rendition {rendition}: {track:?} dts {dts} not after previous {previous}")]
    NonMonotonicDts { rendition: String, track: TrackKind, dts: u64, previous: u64 },
    #[error("rendition {rendition}: sample of {size} bytes exceeds max_part_bytes")]
    SampleTooLarge { rendition: String, size: usize },
    #[error("rendition {rendition}: stream already finished")]
    Finished { rendition: String },
    #[error("rendition {rendition}: {source}")]
    Cmaf { rendition: String, source: CmafError },
}

/// Packager state of one rendition (see the module docs for the cutting rules).
///
/// Inputs: [`Rendition::push_video`], [`Rendition::push_audio`], [`Rendition::finish`]; each
/// returns a `#[must_use]` [`Pushed`] the caller acts on before the next input. Reads:
/// [`Rendition::latest`], [`Rendition::part`], [`Rendition::segment`], [`Rendition::init`] and the
/// accessors used by [`super::playlist`].
#[derive(Debug)]
pub struct Rendition {
    config: RenditionConfig,
    video: Option<VideoConfig>,
    audio: Option<AudioConfig>,
    init: Bytes,
    init_id: InitId,
    /// Headers of earlier publishes that segments in the window still name (after a resume).
    earlier_inits: Vec<(InitId, Bytes)>,
    /// The next segment starts a new timeline (see [`Rendition::resume`]).
    discontinuity_next: bool,
    /// Discontinuities among the segments dropped from the window (`EXT-X-DISCONTINUITY-SEQUENCE`).
    dropped_discontinuities: u64,
    lead: TrackKind,
    lead_timescale: u32,
    part_target_ticks: u64,
    segment_target_ticks: u64,

    /// Complete segments, oldest first, contiguous msns.
    segments: VecDeque<Segment>,
    open: Option<PartialSegment>,
    open_start_dts: u64,
    next_msn: u64,
    /// Leading-track samples of the part being built.
    pending: Vec<Sample>,
    pending_ticks: u64,
    pending_bytes: usize,
    /// Audio waiting for a video part (video-led renditions only).
    queued_audio: VecDeque<Sample>,
    last_dts: [Option<u64>; 2],
    /// The broadcast's first msn (see [`RenditionConfig::epoch_msn`]).
    epoch_msn: u64,
    longest_segment: Duration,
    pdt_anchor: Option<(UnixMillis, u64)>,
    finished: bool,
    /// Bytes of the open segment's published parts.
    open_bytes: usize,
    /// Segments cut without a keyframe (see [`FORCED_CUT_TARGETS`]).
    forced_cuts: u64,
}

impl Rendition {
    /// Creates a rendition with a video track, an audio track or both, and writes its CMAF header.
    pub fn new(
        config: RenditionConfig,
        video: Option<VideoConfig>,
        audio: Option<AudioConfig>,
    ) -> Result<Self, RenditionError> {
        config.validate()?;
        let first_msn = config.first_msn;
        let epoch_msn = config.epoch_msn.unwrap_or(first_msn);
        let init = cmaf::init_segment(video.as_ref(), audio.as_ref())
            .map_err(|source| RenditionError::Cmaf { rendition: config.name.clone(), source })?;
        let (lead, lead_timescale) = match (&video, &audio) {
            (None, Some(a)) => (TrackKind::Audio, a.sample_rate),
            _ => (TrackKind::Video, VIDEO_TIMESCALE),
        };
        Ok(Rendition {
            part_target_ticks: ticks(config.part_target, lead_timescale),
            segment_target_ticks: ticks(config.segment_target, lead_timescale),
            config,
            video,
            audio,
            init_id: init_id(epoch_msn, &init),
            init,
            earlier_inits: Vec::new(),
            discontinuity_next: false,
            dropped_discontinuities: 0,
            lead,
            lead_timescale,
            segments: VecDeque::new(),
            open: None,
            open_start_dts: 0,
            next_msn: first_msn,
            pending: Vec::new(),
            pending_ticks: 0,
            pending_bytes: 0,
            queued_audio: VecDeque::new(),
            last_dts: [None, None],
            epoch_msn,
            longest_segment: Duration::ZERO,
            pdt_anchor: None,
            finished: false,
            open_bytes: 0,
            forced_cuts: 0,
        })
    }

    /// Adds a video sample (dts in 90 kHz ticks). `now` is the ingest wall clock of the sample.
    pub fn push_video(&mut self, sample: Sample, now: UnixMillis) -> Result<Pushed, RenditionError> {
        self.check_input(TrackKind::Video, &sample)?;
        let keyframe = sample.keyframe;
        self.push_lead(sample, keyframe, now)
    }

    /// Adds an audio sample (dts in sample-rate ticks). `now` is the ingest wall clock of the sample.
    pub fn push_audio(&mut self, sample: Sample, now: UnixMillis) -> Result<Pushed, RenditionError> {
        self.check_input(TrackKind::Audio, &sample)?;
        if self.lead == TrackKind::Audio {
            // Every AAC frame is a sync sample.
            return self.push_lead(sample, true, now);
        }
        if self.open.is_none() || self.queued_audio.len() >= MAX_QUEUED_AUDIO {
            return Ok(Pushed::Dropped(DropReason::AudioWithoutVideo));
        }
        self.queued_audio.push_back(sample);
        Ok(Pushed::Buffered)
    }

    /// Ends the stream: publishes the part and segment being built. Playlists then carry
    /// `EXT-X-ENDLIST` and no preload hint.
    pub fn finish(&mut self) -> Result<Pushed, RenditionError> {
        if self.finished {
            return Ok(Pushed::Buffered);
        }
        self.finished = true;
        let published = self.close_part()?;
        self.close_segment();
        Ok(match (published, self.latest()) {
            (true, Some(latest)) => Pushed::Published(latest),
            _ => Pushed::Buffered,
        })
    }

    fn check_input(&mut self, track: TrackKind, sample: &Sample) -> Result<(), RenditionError> {
        let rendition = || self.config.name.clone();
        if self.finished {
            return Err(RenditionError::Finished { rendition: rendition() });
        }
        let present = match track {
            TrackKind::Video => self.video.is_some(),
            TrackKind::Audio => self.audio.is_some(),
        };
        if !present {
            return Err(RenditionError::NoTrack { rendition: rendition(), track });
        }
        if sample.data.len() > self.config.max_part_bytes {
            return Err(RenditionError::SampleTooLarge { rendition: rendition(), size: sample.data.len() });
        }
        let last = &mut self.last_dts[track as usize];
        if let Some(previous) = *last {
            if sample.dts <= previous {
                return Err(RenditionError::NonMonotonicDts {
                    rendition: self.config.name.clone(),
                    track,
                    dts: sample.dts,
                    previous,
                });
            }
        }
        *last = Some(sample.dts);
        Ok(())
    }

    fn push_lead(&mut self, sample: Sample, keyframe: bool, now: UnixMillis) -> Result<Pushed, RenditionError> {
        let mut published = false;
        if self.open.is_none() {
            if !keyframe {
                return Ok(Pushed::Dropped(DropReason::WaitingForKeyframe));
            }
            self.start_segment(sample.dts, now);
        } else if keyframe && sample.dts.saturating_sub(self.open_start_dts) >= self.segment_target_ticks {
            published |= self.close_part()?;
            self.close_segment();
            self.start_segment(sample.dts, now);
        } else if sample.dts.saturating_sub(self.open_start_dts)
            >= self.segment_target_ticks.saturating_mul(FORCED_CUT_TARGETS)
            || self.open_bytes + self.pending_bytes + sample.data.len() > MAX_SEGMENT_BYTES
        {
            // No keyframe for too long: cut here anyway (the new segment starts with a part
            // that is not independent; players decode on from the previous one).
            published |= self.close_part()?;
            self.close_segment();
            self.start_segment(sample.dts, now);
            self.forced_cuts += 1;
        } else if !self.pending.is_empty()
            && (self.pending_ticks.saturating_add(u64::from(sample.duration)) > self.part_target_ticks
                || self.pending_bytes + sample.data.len() > self.config.max_part_bytes)
        {
            published |= self.close_part()?;
        }
        self.pending_ticks = self.pending_ticks.saturating_add(u64::from(sample.duration));
        self.pending_bytes += sample.data.len();
        self.pending.push(sample);
        if self.pending_ticks >= self.part_target_ticks {
            published |= self.close_part()?;
        }
        Ok(match (published, self.latest()) {
            (true, Some(latest)) => Pushed::Published(latest),
            _ => Pushed::Buffered,
        })
    }

    fn start_segment(&mut self, dts: u64, now: UnixMillis) {
        self.open_bytes = 0;
        let program_date_time = self.program_date_time(dts, now);
        let discontinuity = std::mem::take(&mut self.discontinuity_next);
        self.open = Some(PartialSegment {
            msn: self.next_msn,
            discontinuity,
            init_id: self.init_id,
            program_date_time,
            parts: Vec::new(),
        });
        self.open_start_dts = dts;
    }

    /// Media time since an anchor taken from the wall clock, so segment times don't jitter with
    /// network arrival; re-anchored (never going backwards) if the two drift apart.
    fn program_date_time(&mut self, dts: u64, now: UnixMillis) -> UnixMillis {
        let from_anchor = |(at, anchor_dts): (UnixMillis, u64)| {
            let elapsed = dts.saturating_sub(anchor_dts).saturating_mul(1000) / u64::from(self.lead_timescale);
            at.saturating_add(i64::try_from(elapsed).unwrap_or(i64::MAX))
        };
        let candidate = self.pdt_anchor.map(from_anchor);
        match candidate {
            Some(pdt) if pdt.abs_diff(now) <= PDT_RESYNC_MILLIS => pdt,
            _ => {
                let previous_end = self.segments.back().map(|s| {
                    s.program_date_time.saturating_add(i64::try_from(s.duration.as_millis()).unwrap_or(i64::MAX))
                });
                let pdt = previous_end.map_or(now, |end| now.max(end));
                self.pdt_anchor = Some((pdt, dts));
                pdt
            }
        }
    }

    /// Writes the pending samples as one fragment and publishes it as the next part.
    fn close_part(&mut self) -> Result<bool, RenditionError> {
        let Some(open) = self.open.as_mut() else { return Ok(false) };
        let Some(first) = self.pending.first() else { return Ok(false) };
        let start = first.dts;
        let independent = first.keyframe || self.lead == TrackKind::Audio;
        let end = start.saturating_add(self.pending_ticks);

        let audio: Vec<Sample> = if self.lead == TrackKind::Video {
            let rate = u128::from(self.audio.as_ref().map_or(1, |a| a.sample_rate));
            let ends_before = |s: &Sample| u128::from(s.dts) * u128::from(VIDEO_TIMESCALE) < u128::from(end) * rate;
            let count = self.queued_audio.iter().take_while(|s| ends_before(s)).count();
            self.queued_audio.drain(..count).collect()
        } else {
            Vec::new()
        };
        let lead_track = if self.lead == TrackKind::Video { VIDEO_TRACK_ID } else { AUDIO_TRACK_ID };
        let mut runs = vec![TrackRun { track_id: lead_track, base_media_decode_time: start, samples: &self.pending }];
        if let Some(first_audio) = audio.first() {
            runs.push(TrackRun { track_id: AUDIO_TRACK_ID, base_media_decode_time: first_audio.dts, samples: &audio });
        }
        let index = u32::try_from(open.parts.len()).unwrap_or(u32::MAX);
        let sequence = fragment_sequence(open.msn.saturating_sub(self.epoch_msn), index);
        let bytes = cmaf::fragment(sequence, &runs)
            .map_err(|source| RenditionError::Cmaf { rendition: self.config.name.clone(), source })?;
        self.open_bytes += bytes.len();
        open.parts.push(Part {
            msn: open.msn,
            index,
            duration: duration(self.pending_ticks, self.lead_timescale),
            independent,
            bytes,
        });
        self.pending.clear();
        self.pending_ticks = 0;
        self.pending_bytes = 0;
        Ok(true)
    }

    /// Moves the open segment (if it has parts) into the window, dropping the oldest beyond it.
    fn close_segment(&mut self) {
        let Some(open) = self.open.take() else { return };
        if open.parts.is_empty() {
            return;
        }
        let parts = open.parts;
        let duration = parts.iter().map(|p| p.duration).sum();
        self.longest_segment = self.longest_segment.max(duration);
        self.segments.push_back(Segment {
            msn: open.msn,
            discontinuity: open.discontinuity,
            init_id: open.init_id,
            duration,
            program_date_time: open.program_date_time,
            parts,
            joined: JoinedParts::default(),
        });
        self.next_msn = open.msn + 1;
        while self.segments.len() > self.config.playlist_segments + RETAINED_BEYOND_PLAYLIST {
            if self.segments.pop_front().is_some_and(|s| s.discontinuity) {
                self.dropped_discontinuities += 1;
            }
        }
        // Headers no segment in the window names any more.
        let named: Vec<InitId> = self.segments.iter().map(|s| s.init_id).collect();
        self.earlier_inits.retain(|(id, _)| named.contains(id));
    }

    /// Continues the rendition with a new publish of the same broadcast (the publisher reconnected,
    /// maybe to another ingest node): the segment being built is closed as it is, and the next
    /// one (the msn returned: the one after the last this window holds) starts a new timeline
    /// (`EXT-X-DISCONTINUITY`, fresh timestamps and program date-times) and, if the tracks
    /// changed, names a new header. The window before it stays listed.
    pub fn resume(&mut self, video: Option<VideoConfig>, audio: Option<AudioConfig>) -> Result<u64, RenditionError> {
        let invalid = |reason| RenditionError::InvalidConfig { rendition: self.config.name.clone(), reason };
        if self.finished {
            return Err(RenditionError::Finished { rendition: self.config.name.clone() });
        }
        let lead = match (&video, &audio) {
            (None, Some(_)) => TrackKind::Audio,
            (None, None) => return Err(invalid("a resumed publish has no track")),
            _ => TrackKind::Video,
        };
        if lead != self.lead {
            return Err(invalid("a resumed publish changes the leading track"));
        }
        self.close_part()?;
        self.close_segment();
        self.open = None;
        let first_msn = self.next_msn;
        self.pending.clear();
        self.pending_ticks = 0;
        self.pending_bytes = 0;
        self.queued_audio.clear();
        self.last_dts = [None, None];
        self.pdt_anchor = None;
        self.discontinuity_next = true;
        if video != self.video || audio != self.audio {
            let init = cmaf::init_segment(video.as_ref(), audio.as_ref())
                .map_err(|source| RenditionError::Cmaf { rendition: self.config.name.clone(), source })?;
            let id = init_id(first_msn, &init);
            let old = (self.init_id, std::mem::replace(&mut self.init, init));
            self.earlier_inits.push(old);
            self.init_id = id;
            self.video = video;
            self.audio = audio;
        }
        Ok(first_msn)
    }

    /// The header called `init-{id}.mp4`: the current one, or an earlier one that segments in the
    /// window still name.
    pub fn init_named(&self, id: InitId) -> Option<Bytes> {
        if id == self.init_id {
            return Some(self.init.clone());
        }
        self.earlier_inits.iter().find(|(i, _)| *i == id).map(|(_, b)| b.clone())
    }

    /// `EXT-X-DISCONTINUITY-SEQUENCE`: discontinuities before the first listed segment.
    pub fn discontinuity_sequence(&self) -> u64 {
        let unlisted = self.segments.len().saturating_sub(self.config.playlist_segments);
        let hidden = self.segments.iter().take(unlisted).filter(|s| s.discontinuity).count() as u64;
        // The first listed segment's own tag counts from it on, not before it.
        self.dropped_discontinuities + hidden
    }

    /// The header the first listed segment needs (the playlist's first `EXT-X-MAP`).
    pub fn first_listed_init(&self) -> InitId {
        match self.playlist_segments().next() {
            Some(s) => s.init_id,
            None => self.open.as_ref().map_or(self.init_id, |o| o.init_id),
        }
    }

    /// The newest complete segment (what a recorder takes when it changes).
    pub fn newest_segment(&self) -> Option<&Segment> {
        self.segments.back()
    }

    /// Segments cut without a keyframe so far (the hard limit of the module docs).
    pub fn forced_cuts(&self) -> u64 {
        self.forced_cuts
    }

    /// Bytes held by the window: complete segments' and the open segment's parts (a segment
    /// fetched whole also keeps its joined copy, not counted here).
    pub fn window_bytes(&self) -> usize {
        self.segments.iter().map(Segment::byte_len).sum::<usize>() + self.open_bytes + self.pending_bytes
    }

    /// The newest published part, `None` before the first one.
    pub fn latest(&self) -> Option<Latest> {
        if let Some(open) = &self.open {
            if let Some(last) = open.parts.last() {
                return Some(Latest { msn: open.msn, part: last.index, segment_complete: false });
            }
        }
        let segment = self.segments.back()?;
        let part = segment.parts.last().map_or(0, |p| p.index);
        Some(Latest { msn: segment.msn, part, segment_complete: true })
    }

    /// Bytes of part `index` of segment `msn`, complete or in progress, if still in the window.
    pub fn part(&self, msn: u64, index: u32) -> Option<Bytes> {
        let parts = match &self.open {
            Some(open) if open.msn == msn => &open.parts,
            _ => &self.find_segment(msn)?.parts,
        };
        parts.get(usize::try_from(index).ok()?).map(|p| p.bytes.clone())
    }

    /// Bytes of complete segment `msn`, if still in the window.
    pub fn segment(&self, msn: u64) -> Option<Bytes> {
        self.find_segment(msn).map(Segment::bytes)
    }

    /// The CMAF header (`init-{id}.mp4`, see [`Rendition::init_id`]).
    pub fn init(&self) -> Bytes {
        self.init.clone()
    }

    /// The id in the header's name: a digest of the broadcast (its first media sequence number)
    /// and the header's bytes (every track's configuration), so a reconnect, or a new encoder
    /// setting, gets a URL no cache holds the old header under.
    pub fn init_id(&self) -> InitId {
        self.init_id
    }

    fn find_segment(&self, msn: u64) -> Option<&Segment> {
        let first = self.segments.front()?.msn;
        self.segments.get(usize::try_from(msn.checked_sub(first)?).ok()?)
    }

    pub fn config(&self) -> &RenditionConfig {
        &self.config
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn video_config(&self) -> Option<&VideoConfig> {
        self.video.as_ref()
    }

    pub fn audio_config(&self) -> Option<&AudioConfig> {
        self.audio.as_ref()
    }

    /// `CODECS` attribute value: video then audio codec strings.
    pub fn codecs(&self) -> String {
        let video = self.video.as_ref().map(|v| v.codec_string.as_str());
        let audio = self.audio.as_ref().map(|a| a.codec_string.as_str());
        [video, audio].into_iter().flatten().collect::<Vec<_>>().join(",")
    }

    /// Complete segments the media playlist lists, oldest first.
    pub fn playlist_segments(&self) -> impl Iterator<Item = &Segment> {
        let skip = self.segments.len().saturating_sub(self.config.playlist_segments);
        self.segments.iter().skip(skip)
    }

    /// The segment being built, with the parts published so far.
    pub fn partial_segment(&self) -> Option<&PartialSegment> {
        self.open.as_ref()
    }

    /// The media sequence number of the first listed segment (`EXT-X-MEDIA-SEQUENCE`).
    pub fn media_sequence(&self) -> u64 {
        match self.playlist_segments().next() {
            Some(s) => s.msn,
            None => self.open.as_ref().map_or(self.next_msn, |o| o.msn),
        }
    }

    /// `(msn, part)` of the part being built, for `EXT-X-PRELOAD-HINT`; `None` once finished.
    pub fn preload_hint(&self) -> Option<(u64, u32)> {
        if self.finished {
            return None;
        }
        Some(match &self.open {
            Some(open) => (open.msn, u32::try_from(open.parts.len()).unwrap_or(u32::MAX)),
            None => (self.next_msn, 0),
        })
    }

    /// `EXT-X-TARGETDURATION` in seconds: the longest segment so far (or the segment target before
    /// the first), rounded up. It never decreases during the stream.
    pub fn target_duration(&self) -> u64 {
        ceil_secs(self.longest_segment.max(self.config.segment_target))
    }

    /// `PART-TARGET`: no part is longer, except a part holding one sample longer than it.
    pub fn part_target(&self) -> Duration {
        self.config.part_target
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The wall-clock anchor program date-times are computed from: (wall clock, lead-track dts).
    pub(crate) fn pdt_anchor(&self) -> Option<(UnixMillis, u64)> {
        self.pdt_anchor
    }

    /// Takes another rendition's anchor, so a rendition started late (a transcode rung
    /// rejoining) dates its segments exactly as that one does.
    pub(crate) fn set_pdt_anchor(&mut self, anchor: Option<(UnixMillis, u64)>) {
        self.pdt_anchor = anchor;
    }

    /// Peak and average bit rate of the complete segments in the window, for `BANDWIDTH` and
    /// `AVERAGE-BANDWIDTH`; `None` before the first segment.
    pub fn measured_bandwidth(&self) -> Option<(u64, u64)> {
        let rate = |bytes: usize, d: Duration| {
            let nanos = d.as_nanos().max(1);
            u64::try_from(bytes as u128 * 8 * 1_000_000_000 / nanos).unwrap_or(u64::MAX)
        };
        let peak = self.segments.iter().map(|s| rate(s.byte_len(), s.duration)).max()?;
        let bytes = self.segments.iter().map(Segment::byte_len).sum();
        let total = self.segments.iter().map(|s| s.duration).sum();
        Some((peak, rate(bytes, total)))
    }
}

/// Parts a segment may have before [`fragment_sequence`] stops telling them apart: a segment is
/// at most [`FORCED_CUT_TARGETS`] x 30 s long and a part at least 50 ms, so 2400 at most.
const PARTS_PER_SEGMENT_SEQUENCE: u32 = 4096;

/// The `mfhd` sequence number of part `index` of the segment `segment` places after the
/// broadcast's first: a function of the part's name alone rather than a count of fragments
/// written, so a packager that joined the broadcast later writes the same bytes. Increasing along
/// the broadcast, as CMAF asks, until it wraps after 2^20 segments (days), like any 32-bit count.
fn fragment_sequence(segment: u64, index: u32) -> u32 {
    let segment = (segment & u64::from(u32::MAX)) as u32;
    segment
        .wrapping_mul(PARTS_PER_SEGMENT_SEQUENCE)
        .wrapping_add(index.min(PARTS_PER_SEGMENT_SEQUENCE - 1))
        .wrapping_add(1)
}

/// The first 64 bits of SHA-256 over the broadcast's first msn and the header.
fn init_id(first_msn: u64, init: &[u8]) -> InitId {
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    digest.update(&first_msn.to_be_bytes());
    digest.update(init);
    let digest = digest.finish();
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest.as_ref()[..8]);
    InitId(u64::from_be_bytes(id))
}

fn ticks(d: Duration, timescale: u32) -> u64 {
    u64::try_from(d.as_nanos() * u128::from(timescale) / 1_000_000_000).unwrap_or(u64::MAX)
}

fn duration(ticks: u64, timescale: u32) -> Duration {
    let nanos = u128::from(ticks) * 1_000_000_000 / u128::from(timescale.max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{audio_config, frame, now_of, video_config, video_rendition, T0};

    /// A publisher that sends one keyframe and then none (intra refresh, `-g 100000`) for 200 s:
    /// segments are cut at the hard limit, parts and playlists keep moving, memory stays bounded.
    #[test]
    fn a_publisher_without_keyframes_is_cut_at_the_hard_limit() {
        let mut r = Rendition::new(RenditionConfig::default(), Some(video_config()), None).unwrap();
        let mut peak = 0;
        let mut published = Vec::new();
        for i in 0..6000 {
            if let Pushed::Published(latest) = r.push_video(frame(i, 0), now_of(i)).unwrap() {
                published.push((latest.msn, latest.part));
            }
            peak = peak.max(r.window_bytes());
        }
        // Parts kept flowing: one every 200 ms, each after the one before.
        assert!(published.len() >= 990, "{} parts", published.len());
        assert!(published.windows(2).all(|w| w[0] < w[1]));
        // 200 s at 4 s a segment.
        assert!((49..=50).contains(&r.forced_cuts()), "{}", r.forced_cuts());
        let segments: Vec<_> = r.playlist_segments().collect();
        assert_eq!(segments.len(), 8);
        assert!(segments.iter().all(|s| s.duration == Duration::from_secs(4)), "{:?}", segments[0].duration);
        assert!(segments.iter().all(|s| !s.parts[0].independent), "cut segments start without a keyframe");
        assert!(r.media_sequence() >= 40, "the playlist moves on: {}", r.media_sequence());
        assert_eq!(r.target_duration(), 4);
        // Ten segments (listed plus retained) and the open one, of 120 frames of 100 bytes plus
        // fragment headers; without the limit all 6000 frames would stay in one open segment.
        let bound = 11 * 120 * (100 + 64);
        assert!(peak <= bound, "window peaked at {peak} bytes (bound {bound})");
    }

    fn part_layout(s: &Segment) -> Vec<(u128, bool)> {
        s.parts.iter().map(|p| (p.duration.as_millis(), p.independent)).collect()
    }

    #[test]
    fn a_segment_is_joined_only_when_fetched_whole_and_only_once() {
        let r = video_rendition("source", 91, 30);
        let first = r.playlist_segments().next().unwrap();
        assert!(r.playlist_segments().all(|s| s.joined.0.get().is_none()), "joined before anyone asked");
        let (a, b) = (r.segment(first.msn).unwrap(), r.segment(first.msn).unwrap());
        assert_eq!(a.as_ptr(), b.as_ptr(), "joined twice");
        assert_eq!(a.len(), first.byte_len());
        assert!(r.playlist_segments().skip(1).all(|s| s.joined.0.get().is_none()), "others joined too");
    }

    #[test]
    fn gop_of_one_second_gives_one_second_segments_of_five_parts() {
        let r = video_rendition("source", 91, 30); // frame 90 is the keyframe that closes segment 2
        let segments: Vec<_> = r.playlist_segments().collect();
        assert_eq!(segments.len(), 3);
        for (msn, s) in segments.iter().enumerate() {
            assert_eq!(s.msn, msn as u64);
            assert_eq!(s.duration, Duration::from_secs(1));
            assert_eq!(part_layout(s), [(200, true), (200, false), (200, false), (200, false), (200, false)]);
            assert_eq!(s.program_date_time, T0 + 1000 * msn as i64);
            let concatenated: Vec<u8> = s.parts.iter().flat_map(|p| p.bytes.to_vec()).collect();
            assert_eq!(&s.bytes()[..], &concatenated[..]);
            assert_eq!(s.byte_len(), concatenated.len());
            assert_eq!(r.segment(s.msn), Some(s.bytes()));
            for p in &s.parts {
                assert_eq!(r.part(s.msn, p.index), Some(p.bytes.clone()));
                assert_eq!(&p.bytes[4..8], b"moof");
            }
        }
        assert_eq!(r.latest(), Some(Latest { msn: 2, part: 4, segment_complete: true }));
        assert_eq!(r.preload_hint(), Some((3, 0)));
        assert_eq!(r.target_duration(), 1);
        assert_eq!(r.part(3, 0), None);
        assert_eq!(r.segment(3), None);
    }

    #[test]
    fn parts_publish_as_soon_as_they_are_full() {
        let config = RenditionConfig::default();
        let mut r = Rendition::new(config, Some(video_config()), None).unwrap();
        let mut published = Vec::new();
        for i in 0..36 {
            if let Pushed::Published(latest) = r.push_video(frame(i, 30), now_of(i)).unwrap() {
                published.push((i, latest.msn, latest.part));
            }
        }
        // The 6th frame of each part completes it; frame 30 (keyframe) has already been preceded
        // by the full last part, so closing segment 0 publishes nothing new.
        assert_eq!(published, [(5, 0, 0), (11, 0, 1), (17, 0, 2), (23, 0, 3), (29, 0, 4), (35, 1, 0)]);
        let partial = r.partial_segment().unwrap();
        assert_eq!(partial.msn, 1);
        assert_eq!(partial.parts.len(), 1);
        assert!(partial.parts[0].independent);
    }

    #[test]
    fn longer_gop_stretches_segments_to_the_next_keyframe() {
        let r = video_rendition("source", 91, 45); // keyframes at 0, 45, 90: 1.5 s segments
        let segments: Vec<_> = r.playlist_segments().collect();
        assert_eq!(segments.len(), 2);
        for s in segments {
            assert_eq!(s.duration, Duration::from_millis(1500));
            let layout = part_layout(s);
            assert_eq!(layout.len(), 8);
            assert_eq!(layout[0], (200, true));
            assert_eq!(layout[7], (100, false));
        }
        assert_eq!(r.target_duration(), 2);
    }

    #[test]
    fn shorter_gop_waits_for_the_first_keyframe_after_the_target() {
        let r = video_rendition("source", 61, 15); // keyframes every 0.5 s
        let segments: Vec<_> = r.playlist_segments().collect();
        assert_eq!(segments.len(), 2);
        assert!(segments.iter().all(|s| s.duration == Duration::from_secs(1)));
        // The keyframe at 0.5 s lands inside a part: parts stay 200 ms.
        assert!(segments.iter().all(|s| s.parts.len() == 5));
    }

    #[test]
    fn frames_before_the_first_keyframe_are_dropped() {
        let mut r = Rendition::new(RenditionConfig::default(), Some(video_config()), Some(audio_config())).unwrap();
        let mut sample = frame(1, 30);
        assert_eq!(r.push_video(sample.clone(), T0), Ok(Pushed::Dropped(DropReason::WaitingForKeyframe)));
        let audio = Sample { dts: 0, pts_offset: 0, duration: 1024, keyframe: true, data: Bytes::from_static(b"a") };
        assert_eq!(r.push_audio(audio, T0), Ok(Pushed::Dropped(DropReason::AudioWithoutVideo)));
        sample.keyframe = true;
        sample.dts = 6000;
        assert_eq!(r.push_video(sample, T0), Ok(Pushed::Buffered));
        assert_eq!(r.latest(), None);
    }

    #[test]
    fn bad_inputs_are_errors_naming_the_rendition() {
        let mut r = video_rendition("720p", 3, 30);
        let err = r.push_video(frame(1, 30), T0).unwrap_err();
        assert_eq!(
            err,
            RenditionError::NonMonotonicDts {
                rendition: "720p".into(),
                track: TrackKind::Video,
                dts: 3000,
                previous: 6000
            }
        );
        let audio = Sample { dts: 0, pts_offset: 0, duration: 1024, keyframe: true, data: Bytes::new() };
        assert!(matches!(r.push_audio(audio, T0), Err(RenditionError::NoTrack { track: TrackKind::Audio, .. })));
        let mut huge = frame(10, 30);
        huge.data = Bytes::from(vec![0; (8 << 20) + 1]);
        assert!(matches!(r.push_video(huge, T0), Err(RenditionError::SampleTooLarge { .. })));

        for bad in [
            RenditionConfig { name: "../x".into(), ..RenditionConfig::default() },
            RenditionConfig { name: "a\"b".into(), ..RenditionConfig::default() },
            RenditionConfig { part_target: Duration::from_millis(10), ..RenditionConfig::default() },
            RenditionConfig { segment_target: Duration::from_millis(100), ..RenditionConfig::default() },
            RenditionConfig { playlist_segments: 1, ..RenditionConfig::default() },
        ] {
            assert!(matches!(bad.validate(), Err(RenditionError::InvalidConfig { .. })), "{bad:?}");
        }
        assert!(matches!(Rendition::new(RenditionConfig::default(), None, None), Err(RenditionError::Cmaf { .. })));
    }

    #[test]
    fn audio_rides_in_the_video_part_covering_its_time() {
        let mut r = Rendition::new(RenditionConfig::default(), Some(video_config()), Some(audio_config())).unwrap();
        let mut audio_dts = 0u64;
        for i in 0..12 {
            let _ = r.push_video(frame(i, 30), now_of(i)).unwrap();
            // Audio up to the end of this frame (i + 1) * 33.3 ms.
            while audio_dts * 90_000 < (i + 1) * 3000 * 48_000 {
                let a = Sample {
                    dts: audio_dts,
                    pts_offset: 0,
                    duration: 1024,
                    keyframe: true,
                    data: Bytes::from_static(b"AAC"),
                };
                let _ = r.push_audio(a, now_of(i)).unwrap();
                audio_dts += 1024;
            }
        }
        let parts = &r.partial_segment().unwrap().parts;
        assert_eq!(parts.len(), 2);
        // Part 0 closes right after frame 5 is pushed, before that frame's audio arrives: it
        // carries audio starting before 166.7 ms (8 frames); the rest follows in part 1.
        let trafs = |b: &Bytes| b.windows(4).filter(|w| w == b"traf").count();
        assert_eq!(trafs(&parts[0].bytes), 2);
        assert_eq!(trafs(&parts[1].bytes), 2);
        let audio_bytes = |b: &Bytes| b.windows(3).filter(|w| w == b"AAC").count();
        assert_eq!(audio_bytes(&parts[0].bytes), 8);
        // 19 frames start before 400 ms; the last arrived after part 1 closed and waits for part 2.
        assert_eq!(audio_bytes(&parts[0].bytes) + audio_bytes(&parts[1].bytes), 18);
    }

    #[test]
    fn window_keeps_playlist_segments_plus_two() {
        let r = video_rendition("source", 20 * 30 + 1, 30);
        assert_eq!(r.playlist_segments().count(), 8);
        assert_eq!(r.media_sequence(), 12);
        assert_eq!(r.segment(9), None);
        assert!(r.segment(10).is_some()); // retained beyond the playlist
        assert!(r.part(10, 4).is_some());
        assert!(r.segment(19).is_some());
        let (peak, average) = r.measured_bandwidth().unwrap();
        assert!(peak >= average && average > 0);
    }

    #[test]
    fn finish_publishes_the_tail_and_stops_hints() {
        let mut r = video_rendition("source", 40, 30);
        assert_eq!(r.finish(), Ok(Pushed::Published(Latest { msn: 1, part: 1, segment_complete: true })));
        assert_eq!(r.segment(1).map(|b| b.is_empty()), Some(false));
        assert_eq!(r.preload_hint(), None);
        assert!(matches!(r.push_video(frame(40, 30), T0), Err(RenditionError::Finished { .. })));
    }

    #[test]
    fn audio_only_rendition_cuts_on_audio_time() {
        let config = RenditionConfig { name: "audio".into(), ..RenditionConfig::default() };
        let mut r = Rendition::new(config, None, Some(audio_config())).unwrap();
        for i in 0..100u64 {
            let a = Sample {
                dts: i * 1024,
                pts_offset: 0,
                duration: 1024,
                keyframe: false,
                data: Bytes::from_static(b"x"),
            };
            let _ = r.push_audio(a, T0 + (i * 1024 * 1000 / 48_000) as i64).unwrap();
        }
        let s = r.playlist_segments().next().unwrap();
        // 9 frames (192 ms) fit in 200 ms; the segment ends at the first frame at or after 1 s.
        assert_eq!(s.duration, duration(47 * 1024, 48_000));
        assert_eq!(s.parts[0].duration, duration(9 * 1024, 48_000));
        assert!(s.parts.iter().all(|p| p.independent));
        assert_eq!(r.codecs(), "mp4a.40.2");
    }
}

#[cfg(test)]
mod hostile_input {
    use super::*;
    use crate::test_support::{video_config, T0};

    /// Timestamps and durations at the edges of their types must not panic (overflow checks are on
    /// in debug builds).
    #[test]
    fn extreme_timestamps_do_not_panic() {
        let mut r = Rendition::new(RenditionConfig::default(), Some(video_config()), None).unwrap();
        for (i, dts) in [0, u64::MAX / 2, u64::MAX - 10, u64::MAX].into_iter().enumerate() {
            let sample = Sample {
                dts,
                pts_offset: i32::MIN,
                duration: u32::MAX,
                keyframe: i.is_multiple_of(2),
                data: Bytes::from_static(b"x"),
            };
            let _ = r.push_video(sample, if i == 1 { i64::MIN } else { i64::MAX });
        }
        let _ = r.finish();
        let _ = super::super::media_playlist(&r, true, &[]);
        let _ = r.push_video(Sample { dts: 1, pts_offset: 0, duration: 1, keyframe: true, data: Bytes::new() }, T0);
    }

    /// A publisher that reconnects (to another ingest node, with a new timeline from dts 0 and a
    /// new encoder header) continues the same window: the next msn after the last one held, one
    /// discontinuity, both headers servable while the window names them, the sequence counted
    /// once the discontinuity leaves the window.
    #[test]
    fn a_resumed_publish_continues_the_window_after_one_discontinuity() {
        use crate::test_support::{frame, now_of, video_config, video_rendition};
        let mut r = video_rendition("source", 100, 30);
        let before = r.latest().unwrap();
        let first_init = r.init_id();
        let next = r.resume(Some(crate::test_support::video_config_of(1280, 720)), None).unwrap();
        assert_eq!(next, before.msn + 1, "the segment being built was closed as it was");
        assert_ne!(r.init_id(), first_init, "new tracks, new header name");
        // The new publish starts its timestamps over, 5 s later.
        for i in 0..100 {
            let now = now_of(i) + 5_000 + (100 * 100 / 3);
            let _ = r.push_video(frame(i, 30), now).unwrap();
        }
        let text = crate::hls::media_playlist(&r, false, &[]);
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{text}");
        assert_eq!(text.matches("#EXT-X-MAP:").count(), 2, "{text}");
        assert!(!text.contains("#EXT-X-DISCONTINUITY-SEQUENCE"), "{text}");
        let msns: Vec<u64> = r.playlist_segments().map(|s| s.msn).collect();
        assert!(msns.windows(2).all(|w| w[1] == w[0] + 1), "contiguous: {msns:?}");
        assert!(msns.contains(&next) && msns.contains(&before.msn), "{msns:?}");
        assert!(r.init_named(first_init).is_some() && r.init_named(r.init_id()).is_some());
        // The new timeline's date follows the old one's (never backwards).
        let dates: Vec<_> = r.playlist_segments().map(|s| s.program_date_time).collect();
        assert!(dates.windows(2).all(|w| w[1] >= w[0]), "{dates:?}");

        // Long after, the discontinuity and the old header have left the window.
        for i in 100..1000 {
            let now = now_of(i) + 5_000 + (100 * 100 / 3);
            let _ = r.push_video(frame(i, 30), now).unwrap();
        }
        let text = crate::hls::media_playlist(&r, false, &[]);
        assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{text}");
        assert!(!text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
        assert!(r.init_named(first_init).is_none(), "the old header is no longer named");
        // A finished rendition does not resume.
        let _ = r.finish().unwrap();
        assert!(r.resume(Some(video_config()), None).is_err());
    }
}
