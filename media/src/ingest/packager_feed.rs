//! [`PackagerFeed`]: the codec layer's typed inputs in (track configs, then frames with 90 kHz
//! timestamps, from any ingest protocol), CMAF track configs and [`Sample`]s for the packager out.
//! Sans-IO. RTMP feeds it through [`super::flv_input::FlvInput`], SRT straight from the MPEG-TS
//! demuxer.
//!
//! What it does between the two:
//! - **Track set.** The packager needs every track's config before the first sample, but neither
//!   FLV nor MPEG-TS announces one up front. The feed holds samples until the video config and
//!   first keyframe and the audio config are known, then emits [`FeedOutput::Tracks`] followed by
//!   the held samples. A stream whose audio does not show up within [`TRACK_WAIT`] of media (or
//!   whose metadata names no audio, [`PackagerFeed::expect_tracks`]) starts video-only; the mirror
//!   rule covers audio-only.
//! - **Timestamps.** Inputs are 90 kHz, the CMAF video timescale, so video maps 1:1 (`pts_offset =
//!   pts - dts`). Audio: AAC frames are 1024 samples, so dts is counted in frames from an anchor
//!   (no rounding drift) and re-anchored when the input timestamp strays more than one frame from
//!   the count. Each track's clock is made monotonic first: a jump backwards or far forwards
//!   continues from the last timestamp (the tracks re-anchor separately, which is the best we can
//!   do for a broken encoder).
//! - **Durations.** A sample's duration is the next sample's dts minus its own, so each track holds
//!   back one sample; the last one gets the previous duration at [`PackagerFeed::finish`].
//!
//! Drive it like the other state machines: after each [`PackagerFeed::handle`] drain
//! [`PackagerFeed::poll_output`].

use std::collections::VecDeque;

use thiserror::Error;

use crate::cmaf::{AudioConfig, Sample, VideoConfig, VIDEO_TIMESCALE};
use crate::codec::aac::{self, AacConfig};
use crate::codec::h264::{self, AvcConfig};
use crate::codec::{AudioFrame, MediaInput, VideoCodec, VideoFrame, CLOCK_RATE};

/// Media time (90 kHz ticks, one second) the feed waits for the other track before starting with
/// one.
pub const TRACK_WAIT: u64 = CLOCK_RATE;
/// Samples held while the track set is unknown (~4 s of 30 fps video with 48 kHz AAC).
const MAX_HELD: usize = 512;
/// A timestamp this far (ticks, 10 s) ahead of the previous one is a discontinuity, not a gap.
const MAX_FORWARD_JUMP: u64 = 10 * CLOCK_RATE;
const AAC_FRAME_SAMPLES: u64 = aac::FRAME_SAMPLES as u64;
/// Video frame duration used until two frames give a real one (30 fps).
const DEFAULT_VIDEO_DURATION: u32 = VIDEO_TIMESCALE / 30;

/// What the feed produces, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedOutput {
    /// The track set is known; comes exactly once, before the first sample.
    Tracks { video: Option<VideoConfig>, audio: Option<AudioConfig> },
    /// A video sample, dts in 90 kHz ticks.
    Video(Sample),
    /// An audio sample, dts in sample-rate ticks.
    Audio(Sample),
}

/// What became of one input (for the caller's counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// A coded frame was accepted (it comes out of `poll_output` now or later).
    Frame,
    /// A codec configuration, or an input that carries nothing we package.
    Other,
    /// A frame was discarded: before its track's config or first keyframe, malformed, a track
    /// that started without it, or held too long while the track set was unknown.
    Dropped,
}

/// Frames an ingest protocol's conversion counted since it was last asked (see
/// [`PackagerFeed::pump`]), for the per-channel metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameCounts {
    pub video: u64,
    pub audio: u64,
    pub dropped: u64,
}

/// Why the stream cannot be packaged. The publish should end; the encoder may reconnect.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FeedError {
    #[error("unsupported video codec {0} (only H.264 is packaged)")]
    UnsupportedVideoCodec(String),
    #[error("{track} configuration changed mid-stream (renditions cannot change their init segment)")]
    ConfigChanged { track: &'static str },
    #[error("video size {width}x{height} out of range")]
    BadVideoSize { width: u32, height: u32 },
    #[error("H.264 configuration without SPS or PPS")]
    MissingParameterSets,
}

/// Makes a track's timestamps (ticks) monotonic, continuing across jumps.
#[derive(Debug, Default)]
struct TrackClock {
    /// Added to the raw timestamp.
    offset: i64,
    last: Option<u64>,
}

impl TrackClock {
    /// Maps `raw` to media time; `step` is the expected distance between samples, used to
    /// continue after a jump.
    fn map(&mut self, raw: u64, step: u64) -> u64 {
        let raw_i = i64::try_from(raw).unwrap_or(i64::MAX);
        let mut mapped = raw_i.saturating_add(self.offset).max(0) as u64;
        if let Some(last) = self.last {
            if mapped < last || mapped > last.saturating_add(MAX_FORWARD_JUMP) {
                let target = last.saturating_add(step);
                self.offset = i64::try_from(target).unwrap_or(i64::MAX).saturating_sub(raw_i);
                mapped = target;
            }
        }
        self.last = Some(mapped);
        mapped
    }
}

#[derive(Debug)]
struct VideoTrack {
    config: AvcConfig,
    cmaf: VideoConfig,
    clock: TrackClock,
    /// Media time of the first keyframe; frames before it are dropped.
    first_keyframe: Option<u64>,
    last: u64,
    pending: Option<Sample>,
    last_duration: u32,
}

#[derive(Debug)]
struct AudioTrack {
    config: AacConfig,
    cmaf: AudioConfig,
    clock: TrackClock,
    /// dts (sample-rate ticks) of frame 0 of the current run, and frames counted since.
    anchor: Option<(u64, u64)>,
    first: Option<u64>,
    last: u64,
    pending: Option<Sample>,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct PackagerFeed {
    video: Option<VideoTrack>,
    audio: Option<AudioTrack>,
    /// The protocol's metadata said which tracks to expect.
    expect_video: Option<bool>,
    expect_audio: Option<bool>,
    /// The track set was emitted; which tracks it has.
    started: Option<(bool, bool)>,
    held: VecDeque<FeedOutput>,
    /// Held samples discarded because the track set took too long; see [`PackagerFeed::take_dropped`].
    dropped: u64,
    out: VecDeque<FeedOutput>,
    finished: bool,
}

impl PackagerFeed {
    pub fn new() -> Self {
        Self::default()
    }

    /// The protocol announced its tracks (RTMP's `onMetaData`): whether to wait for both.
    pub fn expect_tracks(&mut self, video: bool, audio: bool) {
        self.expect_video = Some(video);
        self.expect_audio = Some(audio);
        self.try_start();
    }

    /// One input, in stream order.
    pub fn handle(&mut self, input: MediaInput) -> Result<Handled, FeedError> {
        if self.finished {
            return Ok(Handled::Dropped);
        }
        let handled = match input {
            MediaInput::VideoConfig(config) => {
                self.set_video_config(config)?;
                Handled::Other
            }
            MediaInput::AudioConfig(config) => {
                self.set_audio_config(config)?;
                Handled::Other
            }
            MediaInput::Video(frame) => self.video_frame(frame),
            MediaInput::Audio(frame) => self.audio_frame(frame),
        };
        self.try_start();
        Ok(handled)
    }

    /// The publish ended: emit the held-back samples (starting with whatever tracks are known).
    pub fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        if self.started.is_none() {
            let video = self.video.as_ref().is_some_and(|v| v.first_keyframe.is_some());
            let audio = self.audio.as_ref().is_some_and(|a| a.first.is_some());
            if video || audio {
                self.start(video, audio);
            }
        }
        if let Some(v) = &mut self.video {
            if let Some(mut s) = v.pending.take() {
                s.duration = v.last_duration;
                self.emit(FeedOutput::Video(s));
            }
        }
        if let Some(a) = &mut self.audio {
            if let Some(mut s) = a.pending.take() {
                s.duration = AAC_FRAME_SAMPLES as u32;
                self.emit(FeedOutput::Audio(s));
            }
        }
        // Never started: nothing can be packaged from what is held.
        self.dropped += self.held.len() as u64;
        self.held.clear();
    }

    /// The next output, in order.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<FeedOutput> {
        self.out.pop_front()
    }

    /// Hands every input to the feed in order, counting in `counts` the frames accepted (video,
    /// audio) and dropped (including those the feed dropped on its own); stops at the first
    /// error.
    pub fn pump(
        &mut self,
        inputs: impl IntoIterator<Item = MediaInput>,
        counts: &mut FrameCounts,
    ) -> Result<(), FeedError> {
        for input in inputs {
            let video = matches!(input, MediaInput::Video(_) | MediaInput::VideoConfig(_));
            match self.handle(input)? {
                Handled::Frame if video => counts.video += 1,
                Handled::Frame => counts.audio += 1,
                Handled::Dropped => counts.dropped += 1,
                Handled::Other => {}
            }
        }
        counts.dropped += self.take_dropped();
        Ok(())
    }

    /// Samples discarded since the last call that no `handle` result reported (held too long
    /// before the track set was known, or held at the end of a stream that never started).
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// Whether the track set has been emitted.
    pub fn is_started(&self) -> bool {
        self.started.is_some()
    }

    fn set_video_config(&mut self, config: AvcConfig) -> Result<(), FeedError> {
        if let Some(v) = &self.video {
            // Encoders repeat the sequence header (ffmpeg on reconnect, OBS on keyframes, MPEG-TS
            // before every keyframe).
            if v.config.sps == config.sps && v.config.pps == config.pps {
                return Ok(());
            }
            return Err(FeedError::ConfigChanged { track: "video" });
        }
        if config.sps.is_empty() || config.pps.is_empty() {
            return Err(FeedError::MissingParameterSets);
        }
        let (Ok(width), Ok(height)) = (u16::try_from(config.width), u16::try_from(config.height)) else {
            return Err(FeedError::BadVideoSize { width: config.width, height: config.height });
        };
        let codec_string = h264::codec_string(&config.sps[0]).unwrap_or_else(|| config.codec_string());
        let cmaf = VideoConfig {
            codec: VideoCodec::Avc1,
            sps: config.sps.iter().map(|s| s.to_vec()).collect(),
            pps: config.pps.iter().map(|p| p.to_vec()).collect(),
            width,
            height,
            codec_string,
        };
        self.video = Some(VideoTrack {
            config,
            cmaf,
            clock: TrackClock::default(),
            first_keyframe: None,
            last: 0,
            pending: None,
            last_duration: DEFAULT_VIDEO_DURATION,
        });
        Ok(())
    }

    fn set_audio_config(&mut self, config: AacConfig) -> Result<(), FeedError> {
        if let Some(a) = &self.audio {
            if a.config.asc == config.asc {
                return Ok(());
            }
            return Err(FeedError::ConfigChanged { track: "audio" });
        }
        let cmaf = AudioConfig {
            asc: config.asc.to_vec(),
            sample_rate: config.sample_rate,
            // 0 means "see the program config element"; the sample entry needs a count, and
            // decoders take the real layout from the AudioSpecificConfig.
            channels: if config.channels == 0 { 2 } else { u16::from(config.channels) },
            codec_string: aac::codec_string(&config.asc).unwrap_or_else(|| config.codec_string()),
        };
        self.audio = Some(AudioTrack {
            config,
            cmaf,
            clock: TrackClock::default(),
            anchor: None,
            first: None,
            last: 0,
            pending: None,
        });
        Ok(())
    }

    fn video_frame(&mut self, frame: VideoFrame) -> Handled {
        if self.started.is_some_and(|(video, _)| !video) {
            return Handled::Dropped;
        }
        let Some(v) = &mut self.video else { return Handled::Dropped };
        if v.first_keyframe.is_none() && !frame.keyframe {
            return Handled::Dropped;
        }
        if frame.data.is_empty() {
            return Handled::Dropped;
        }
        let mapped = v.clock.map(frame.dts, u64::from(v.last_duration).max(1));
        v.first_keyframe.get_or_insert(mapped);
        v.last = mapped;
        let mut dts = mapped;
        if let Some(prev) = &v.pending {
            // Two frames at the same time: keep dts strictly increasing.
            dts = dts.max(prev.dts + 1);
        }
        let composition = i64::try_from(frame.pts).unwrap_or(i64::MAX) - i64::try_from(frame.dts).unwrap_or(i64::MAX);
        let pts = i64::try_from(mapped).unwrap_or(i64::MAX).saturating_add(composition);
        let pts_offset = (pts - i64::try_from(dts).unwrap_or(i64::MAX)).clamp(i64::from(i32::MIN), i64::from(i32::MAX));
        let sample =
            Sample { dts, pts_offset: pts_offset as i32, duration: 0, keyframe: frame.keyframe, data: frame.data };
        if let Some(mut prev) = v.pending.replace(sample) {
            prev.duration = u32::try_from(dts - prev.dts).unwrap_or(u32::MAX);
            v.last_duration = prev.duration;
            self.emit(FeedOutput::Video(prev));
        }
        Handled::Frame
    }

    fn audio_frame(&mut self, frame: AudioFrame) -> Handled {
        if self.started.is_some_and(|(_, audio)| !audio) {
            return Handled::Dropped;
        }
        let Some(a) = &mut self.audio else { return Handled::Dropped };
        if frame.data.is_empty() {
            return Handled::Dropped;
        }
        let rate = u64::from(a.cmaf.sample_rate).max(1);
        let frame_ticks = (AAC_FRAME_SAMPLES * CLOCK_RATE / rate).max(1);
        let mapped = a.clock.map(frame.pts, frame_ticks);
        a.first.get_or_insert(mapped);
        a.last = mapped;
        let from_timestamp =
            u64::try_from(u128::from(mapped) * u128::from(rate) / u128::from(CLOCK_RATE)).unwrap_or(u64::MAX);
        let prev_dts = a.pending.as_ref().map(|s| s.dts);
        let dts = match a.anchor {
            Some((anchor, n)) if (anchor + n * AAC_FRAME_SAMPLES).abs_diff(from_timestamp) <= AAC_FRAME_SAMPLES => {
                a.anchor = Some((anchor, n + 1));
                anchor + n * AAC_FRAME_SAMPLES
            }
            _ => {
                // First frame, or the count drifted from the encoder's clock: re-anchor, never
                // at or before the previous frame.
                let anchor = prev_dts.map_or(from_timestamp, |p| from_timestamp.max(p + 1));
                a.anchor = Some((anchor, 1));
                anchor
            }
        };
        let sample = Sample { dts, pts_offset: 0, duration: 0, keyframe: true, data: frame.data };
        if let Some(mut prev) = a.pending.replace(sample) {
            prev.duration = u32::try_from(dts - prev.dts).unwrap_or(u32::MAX);
            self.emit(FeedOutput::Audio(prev));
        }
        Handled::Frame
    }

    /// Starts once the track set is known (see the module docs).
    fn try_start(&mut self) {
        if self.started.is_some() || self.finished {
            return;
        }
        let video_ready = self.video.as_ref().and_then(|v| v.first_keyframe.map(|k| (k, v.last)));
        let audio_ready = self.audio.as_ref().and_then(|a| a.first.map(|f| (f, a.last)));
        let no_audio = self.expect_audio == Some(false);
        let no_video = self.expect_video == Some(false);
        match (video_ready, audio_ready) {
            (Some(_), Some(_)) => self.start(true, true),
            (Some((first, last)), None) if no_audio || last >= first + TRACK_WAIT => self.start(true, false),
            (None, Some((first, last))) if no_video || (self.video.is_none() && last >= first + TRACK_WAIT) => {
                self.start(false, true)
            }
            _ => {}
        }
    }

    fn start(&mut self, video: bool, audio: bool) {
        self.started = Some((video, audio));
        let video_config = if video { self.video.as_ref().map(|v| v.cmaf.clone()) } else { None };
        let audio_config = if audio { self.audio.as_ref().map(|a| a.cmaf.clone()) } else { None };
        self.out.push_back(FeedOutput::Tracks { video: video_config, audio: audio_config });
        for held in std::mem::take(&mut self.held) {
            match held {
                FeedOutput::Video(_) if !video => {}
                FeedOutput::Audio(_) if !audio => {}
                other => self.out.push_back(other),
            }
        }
        if !video {
            self.video = None;
        }
        if !audio {
            self.audio = None;
        }
    }

    fn emit(&mut self, output: FeedOutput) {
        if self.started.is_some() {
            self.out.push_back(output);
        } else {
            if self.held.len() >= MAX_HELD {
                self.held.pop_front();
                self.dropped += 1;
            }
            self.held.push_back(output);
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::ingest::flv_input::{Converted, FlvInput};
    use crate::rtmp::Metadata;
    use crate::test_support::{ASC_48K_STEREO as ASC, PPS, X264_BASELINE_SPS as SPS};

    /// The RTMP path: FLV tag bodies through [`FlvInput`] into the feed.
    #[derive(Default)]
    struct Flv {
        input: FlvInput,
        feed: PackagerFeed,
    }

    impl Flv {
        fn handle_video(&mut self, timestamp_ms: u64, body: &Bytes) -> Result<Handled, FeedError> {
            let converted = self.input.video(timestamp_ms, body)?;
            self.handle(converted)
        }

        fn handle_audio(&mut self, timestamp_ms: u64, body: &Bytes) -> Result<Handled, FeedError> {
            let converted = self.input.audio(timestamp_ms, body);
            self.handle(converted)
        }

        fn handle(&mut self, converted: Converted) -> Result<Handled, FeedError> {
            match converted {
                Converted::Input(input) => self.feed.handle(input),
                Converted::Other => Ok(Handled::Other),
                Converted::Dropped => Ok(Handled::Dropped),
            }
        }

        fn handle_metadata(&mut self, meta: &Metadata) {
            if let Some((video, audio)) = FlvInput::expected_tracks(meta) {
                self.feed.expect_tracks(video, audio);
            }
        }
    }

    impl std::ops::Deref for Flv {
        type Target = PackagerFeed;
        fn deref(&self) -> &PackagerFeed {
            &self.feed
        }
    }

    impl std::ops::DerefMut for Flv {
        fn deref_mut(&mut self) -> &mut PackagerFeed {
            &mut self.feed
        }
    }

    fn avc_header(length_size: u8, sps: &[u8]) -> Bytes {
        let mut b = vec![0x17, 0, 0, 0, 0, 1, sps[1], sps[2], sps[3], 0xfc | (length_size - 1), 0xe1];
        b.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        b.extend_from_slice(sps);
        b.push(1);
        b.extend_from_slice(&(PPS.len() as u16).to_be_bytes());
        b.extend_from_slice(PPS);
        b.into()
    }

    /// A frame holding one NAL unit with `length_size`-byte framing; `cts_ms` composition offset.
    fn avc_frame(key: bool, cts_ms: u8, length_size: u8, nal: &[u8]) -> Bytes {
        let mut b = vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, cts_ms];
        b.extend_from_slice(&(nal.len() as u32).to_be_bytes()[4 - usize::from(length_size)..]);
        b.extend_from_slice(nal);
        b.into()
    }

    fn aac(header: bool, data: &[u8]) -> Bytes {
        let mut b = vec![0xaf, u8::from(!header)];
        b.extend_from_slice(data);
        b.into()
    }

    fn drain(feed: &mut PackagerFeed) -> Vec<FeedOutput> {
        std::iter::from_fn(|| feed.poll_output()).collect()
    }

    #[test]
    fn both_tracks_start_together_with_converted_timestamps() {
        let mut b = Flv::default();
        assert_eq!(b.handle_video(0, &avc_header(4, SPS)), Ok(Handled::Other));
        assert_eq!(b.handle_audio(0, &aac(true, ASC)), Ok(Handled::Other));
        // A non-key frame before the first keyframe is dropped.
        assert_eq!(b.handle_video(0, &avc_frame(false, 0, 4, &[0x41, 1])), Ok(Handled::Dropped));
        // Keyframe at 0 (pts 66 ms), then a B-ish frame; audio every ~21.3 ms as ms timestamps.
        assert_eq!(b.handle_video(0, &avc_frame(true, 66, 4, &[0x65, 1])), Ok(Handled::Frame));
        for ts in [0, 21, 43, 64] {
            assert_eq!(b.handle_audio(ts, &aac(false, &[0x21, ts as u8])), Ok(Handled::Frame));
        }
        assert_eq!(b.handle_video(33, &avc_frame(false, 0, 4, &[0x41, 2])), Ok(Handled::Frame));
        let out = drain(&mut b);
        let FeedOutput::Tracks { video: Some(v), audio: Some(a) } = &out[0] else { panic!("{out:?}") };
        assert_eq!((v.width, v.height, v.codec_string.as_str()), (320, 240, "avc1.42c01e"));
        assert_eq!((a.sample_rate, a.channels, a.codec_string.as_str()), (48_000, 2, "mp4a.40.2"));
        // One sample per track is held back for its duration.
        let audio: Vec<_> =
            out.iter().filter_map(|o| if let FeedOutput::Audio(s) = o { Some(s) } else { None }).collect();
        assert_eq!(
            audio.iter().map(|s| (s.dts, s.duration)).collect::<Vec<_>>(),
            [(0, 1024), (1024, 1024), (2048, 1024)]
        );
        let video: Vec<_> =
            out.iter().filter_map(|o| if let FeedOutput::Video(s) = o { Some(s) } else { None }).collect();
        assert_eq!(video.len(), 1);
        assert_eq!((video[0].dts, video[0].duration, video[0].pts_offset, video[0].keyframe), (0, 2970, 5940, true));
        assert_eq!(&video[0].data[..], &[0, 0, 0, 2, 0x65, 1]);

        b.finish();
        let tail = drain(&mut b);
        assert!(tail.contains(&FeedOutput::Video(Sample {
            dts: 2970,
            pts_offset: 0,
            duration: 2970,
            keyframe: false,
            data: Bytes::from_static(&[0, 0, 0, 2, 0x41, 2]),
        })));
        assert!(tail.iter().any(|o| matches!(o, FeedOutput::Audio(s) if s.dts == 3072 && s.duration == 1024)));
    }

    #[test]
    fn audio_count_resyncs_after_a_gap_and_clock_survives_a_jump_back() {
        let mut b = Flv::default();
        b.handle_metadata(&Metadata { audio_sample_rate: Some(48_000.0), ..Default::default() });
        b.handle_audio(0, &aac(true, ASC)).unwrap();
        for ts in [1000, 1021, 2000, 500, 520] {
            b.handle_audio(ts, &aac(false, &[1])).unwrap();
        }
        b.finish();
        let dts: Vec<_> = drain(&mut b)
            .into_iter()
            .filter_map(|o| if let FeedOutput::Audio(s) = o { Some(s.dts) } else { None })
            .collect();
        // 1000 ms = 48000; +1 frame; a 1 s gap re-anchors at 96000; the jump back to 500 ms maps
        // to one frame after the last timestamp, where the frame count already is: counting goes on.
        assert_eq!(dts, [48_000, 49_024, 96_000, 97_024, 98_048]);
    }

    #[test]
    fn video_only_after_the_wait_and_short_nal_lengths_are_rewritten() {
        let mut b = Flv::default();
        b.handle_video(0, &avc_header(2, SPS)).unwrap();
        let mut ts = 0;
        while !b.is_started() {
            b.handle_video(ts, &avc_frame(ts == 0, 0, 2, &[0x65, 7])).unwrap();
            ts += 33;
            assert!(ts < 2_000, "never started");
        }
        assert!(ts > TRACK_WAIT / 90);
        let out = drain(&mut b);
        assert!(matches!(&out[0], FeedOutput::Tracks { video: Some(_), audio: None }));
        let FeedOutput::Video(first) = &out[1] else { panic!() };
        assert_eq!(&first.data[..], &[0, 0, 0, 2, 0x65, 7]);
        assert_eq!(out.len() - 1, (ts / 33) as usize - 1);
        // Audio arriving later is dropped; the track set cannot change.
        b.handle_audio(ts, &aac(true, ASC)).unwrap();
        assert_eq!(b.handle_audio(ts, &aac(false, &[1])), Ok(Handled::Dropped));
    }

    #[test]
    fn config_changes_and_other_codecs_end_the_stream() {
        let mut b = Flv::default();
        b.handle_video(0, &avc_header(4, SPS)).unwrap();
        assert_eq!(b.handle_video(0, &avc_header(4, SPS)), Ok(Handled::Other), "repeats are fine");
        let mut other = SPS.to_vec();
        other[3] = 0x1f;
        assert_eq!(b.handle_video(0, &avc_header(4, &other)), Err(FeedError::ConfigChanged { track: "video" }));
        let hevc = Bytes::from_static(&[0x1c, 1, 0, 0, 0, 0, 0, 0, 1, 0x26]);
        assert!(matches!(Flv::default().handle_video(0, &hevc), Err(FeedError::UnsupportedVideoCodec(_))));
    }

    /// Typed inputs as SRT hands them: 29.97 fps timestamps, which are no whole number of
    /// milliseconds, come out tick for tick.
    #[test]
    fn typed_inputs_keep_90khz_timestamps() {
        let mut feed = PackagerFeed::new();
        let config = AvcConfig::from_parameter_sets(Bytes::from_static(SPS), Bytes::from_static(PPS)).unwrap();
        feed.handle(MediaInput::VideoConfig(config)).unwrap();
        feed.expect_tracks(true, false);
        for i in 0..10u64 {
            let dts = 1001 + i * 3003;
            let frame =
                VideoFrame { dts, pts: dts + 1501, keyframe: i == 0, data: Bytes::from_static(&[0, 0, 0, 1, 0x65]) };
            assert_eq!(feed.handle(MediaInput::Video(frame)), Ok(Handled::Frame));
        }
        feed.finish();
        let samples: Vec<Sample> = drain(&mut feed)
            .into_iter()
            .filter_map(|o| if let FeedOutput::Video(s) = o { Some(s) } else { None })
            .collect();
        let expected: Vec<(u64, i32, u32)> = (0..10).map(|i| (1001 + i * 3003, 1501, 3003)).collect();
        assert_eq!(samples.iter().map(|s| (s.dts, s.pts_offset, s.duration)).collect::<Vec<_>>(), expected);
    }

    #[test]
    fn garbage_never_panics() {
        let mut b = Flv::default();
        b.handle_video(0, &avc_header(4, SPS)).unwrap();
        b.handle_audio(0, &aac(true, ASC)).unwrap();
        let mut seed = 0x1234_5678_u64;
        for i in 0..20_000u64 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let len = (seed >> 59) as usize;
            let mut body: Vec<u8> = (0..len).map(|j| (seed >> (j % 56)) as u8).collect();
            if let Some(first) = body.first_mut() {
                *first = if i % 2 == 0 { 0x17 | (*first & 0x20) } else { 0xaf };
            }
            let ts = seed >> 40;
            let _ = if i % 2 == 0 { b.handle_video(ts, &body.into()) } else { b.handle_audio(ts, &body.into()) };
            while b.poll_output().is_some() {}
        }
        b.finish();
    }
}
