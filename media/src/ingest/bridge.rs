//! [`FlvToCmaf`]: RTMP's FLV tag bodies in, CMAF track configs and [`Sample`]s out. Sans-IO.
//!
//! What it does between the two formats:
//! - **Track set.** The packager needs every track's config before the first sample, but FLV
//!   announces none up front. The bridge holds samples until the video config and first keyframe
//!   and the audio config are known, then emits [`BridgeOutput::Tracks`] followed by the held
//!   samples. A stream whose audio does not show up within [`TRACK_WAIT_MS`] of media (or whose
//!   `onMetaData` names no audio codec) starts video-only; the mirror rule covers audio-only.
//! - **Timestamps.** Video: 1 ms → 90 ticks, `pts_offset = (pts - dts) * 90`. Audio: AAC frames are
//!   1024 samples, so dts is counted in frames from an anchor (no rounding drift) and re-anchored
//!   when the RTMP timestamp strays more than one frame from the count. Each track's millisecond
//!   clock is made monotonic first: a jump backwards or far forwards continues from the last
//!   timestamp (the tracks re-anchor separately, which is the best we can do for a broken encoder).
//! - **Durations.** A sample's duration is the next sample's dts minus its own, so each track holds
//!   back one sample; the last one gets the previous duration at [`FlvToCmaf::finish`].
//! - **NAL framing.** CMAF samples use 4-byte NAL lengths; other FLV length sizes are rewritten.
//!
//! Drive it like the other state machines: after each `handle_*` call drain
//! [`FlvToCmaf::poll_output`].

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::cmaf::{self, AudioConfig, Sample, VideoConfig, VIDEO_TIMESCALE};
use crate::flv::{self, AacConfig, AudioCodec, AudioTag, AvcConfig, VideoCodec, VideoTag};
use crate::rtmp::Metadata;

/// Media time (ms) the bridge waits for the other track before starting with one.
pub const TRACK_WAIT_MS: u64 = 1_000;
/// Samples held while the track set is unknown (~4 s of 30 fps video with 48 kHz AAC).
const MAX_HELD: usize = 512;
/// A timestamp this far ahead of the previous one is a discontinuity, not a gap.
const MAX_FORWARD_JUMP_MS: u64 = 10_000;
const AAC_FRAME_SAMPLES: u64 = 1024;
/// Video frame duration used until two frames give a real one (30 fps).
const DEFAULT_VIDEO_DURATION: u32 = VIDEO_TIMESCALE / 30;
const TICKS_PER_MS: u64 = (VIDEO_TIMESCALE / 1000) as u64;

/// What the bridge produces, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum BridgeOutput {
    /// The track set is known; comes exactly once, before the first sample.
    Tracks { video: Option<VideoConfig>, audio: Option<AudioConfig> },
    /// A video sample, dts in 90 kHz ticks.
    Video(Sample),
    /// An audio sample, dts in sample-rate ticks.
    Audio(Sample),
}

/// What became of one input tag (for the caller's counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// A coded frame was accepted (it comes out of `poll_output` now or later).
    Frame,
    /// A codec configuration, or a tag that carries nothing we package.
    Other,
    /// A frame was discarded: before its track's config or first keyframe, malformed, a track
    /// that started without it, or held too long while the track set was unknown.
    Dropped,
}

/// Why the stream cannot be packaged. The publish should end; the encoder may reconnect.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BridgeError {
    #[error("unsupported video codec {0} (only H.264 is packaged)")]
    UnsupportedVideoCodec(String),
    #[error("{track} configuration changed mid-stream (renditions cannot change their init segment)")]
    ConfigChanged { track: &'static str },
    #[error("video size {width}x{height} out of range")]
    BadVideoSize { width: u32, height: u32 },
    #[error("H.264 configuration without SPS or PPS")]
    MissingParameterSets,
}

/// Makes a track's millisecond timestamps monotonic, continuing across jumps.
#[derive(Debug, Default)]
struct MsClock {
    /// Added to the raw timestamp.
    offset: i64,
    last: Option<u64>,
}

impl MsClock {
    /// Maps `raw` to media time; `step` is the expected distance between samples, used to
    /// continue after a jump.
    fn map(&mut self, raw: u64, step: u64) -> u64 {
        let raw_i = i64::try_from(raw).unwrap_or(i64::MAX);
        let mut mapped = raw_i.saturating_add(self.offset).max(0) as u64;
        if let Some(last) = self.last {
            if mapped < last || mapped > last + MAX_FORWARD_JUMP_MS {
                let target = last + step;
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
    clock: MsClock,
    /// Media ms of the first keyframe; frames before it are dropped.
    first_keyframe_ms: Option<u64>,
    last_ms: u64,
    pending: Option<Sample>,
    last_duration: u32,
}

#[derive(Debug)]
struct AudioTrack {
    config: AacConfig,
    cmaf: AudioConfig,
    clock: MsClock,
    /// dts (ticks) of frame 0 of the current run, and frames counted since.
    anchor: Option<(u64, u64)>,
    first_ms: Option<u64>,
    last_ms: u64,
    pending: Option<Sample>,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct FlvToCmaf {
    video: Option<VideoTrack>,
    audio: Option<AudioTrack>,
    /// `onMetaData` said which tracks to expect.
    meta_has_video: Option<bool>,
    meta_has_audio: Option<bool>,
    /// The track set was emitted; which tracks it has.
    started: Option<(bool, bool)>,
    held: VecDeque<BridgeOutput>,
    /// Held samples discarded because the track set took too long; see [`FlvToCmaf::take_dropped`].
    dropped: u64,
    out: VecDeque<BridgeOutput>,
    finished: bool,
}

impl FlvToCmaf {
    pub fn new() -> Self {
        Self::default()
    }

    /// `onMetaData`: tells whether to wait for both tracks.
    pub fn handle_metadata(&mut self, meta: &Metadata) {
        let has_video = meta.video_codec_id.is_some() || meta.width.is_some();
        let has_audio = meta.audio_codec_id.is_some() || meta.audio_sample_rate.is_some();
        // Metadata with neither is uninformative (some encoders send only `encoder`).
        if has_video || has_audio {
            self.meta_has_video = Some(has_video);
            self.meta_has_audio = Some(has_audio);
        }
        self.try_start();
    }

    /// One video message body with its (wraparound-extended) RTMP timestamp.
    pub fn handle_video(&mut self, timestamp_ms: u64, body: &Bytes) -> Result<Handled, BridgeError> {
        if self.finished {
            return Ok(Handled::Dropped);
        }
        let handled = match flv::parse_video_tag(timestamp_ms, body) {
            Ok(VideoTag::AvcSequenceHeader(config)) => {
                self.set_video_config(config)?;
                Handled::Other
            }
            Ok(VideoTag::SequenceHeader { codec, .. }) => {
                return Err(BridgeError::UnsupportedVideoCodec(format!("{codec:?}")))
            }
            Ok(VideoTag::Frame(frame)) if frame.codec != VideoCodec::Avc => {
                return Err(BridgeError::UnsupportedVideoCodec(format!("{:?}", frame.codec)))
            }
            Ok(VideoTag::Frame(frame)) => self.video_frame(frame),
            Ok(_) => Handled::Other,
            Err(e @ (flv::FlvError::UnsupportedVideoCodec(_) | flv::FlvError::UnsupportedFourCc(_))) => {
                return Err(BridgeError::UnsupportedVideoCodec(e.to_string()))
            }
            Err(_) => Handled::Dropped,
        };
        self.try_start();
        Ok(handled)
    }

    /// One audio message body with its (wraparound-extended) RTMP timestamp. Audio other than
    /// AAC is dropped (the stream goes on as video-only).
    pub fn handle_audio(&mut self, timestamp_ms: u64, body: &Bytes) -> Result<Handled, BridgeError> {
        if self.finished {
            return Ok(Handled::Dropped);
        }
        let handled = match flv::parse_audio_tag(timestamp_ms, body) {
            Ok(AudioTag::AacSequenceHeader(config)) => {
                self.set_audio_config(config)?;
                Handled::Other
            }
            Ok(AudioTag::Frame(frame)) if frame.codec == AudioCodec::Aac => self.audio_frame(frame.pts_ms, frame.data),
            Ok(AudioTag::Frame(_)) => Handled::Dropped,
            Ok(_) => Handled::Other,
            Err(_) => Handled::Dropped,
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
            let video = self.video.as_ref().is_some_and(|v| v.first_keyframe_ms.is_some());
            let audio = self.audio.as_ref().is_some_and(|a| a.first_ms.is_some());
            if video || audio {
                self.start(video, audio);
            }
        }
        if let Some(v) = &mut self.video {
            if let Some(mut s) = v.pending.take() {
                s.duration = v.last_duration;
                self.emit(BridgeOutput::Video(s));
            }
        }
        if let Some(a) = &mut self.audio {
            if let Some(mut s) = a.pending.take() {
                s.duration = AAC_FRAME_SAMPLES as u32;
                self.emit(BridgeOutput::Audio(s));
            }
        }
        // Never started: nothing can be packaged from what is held.
        self.dropped += self.held.len() as u64;
        self.held.clear();
    }

    /// The next output, in order.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<BridgeOutput> {
        self.out.pop_front()
    }

    /// Samples discarded since the last call that no `handle_*` result reported (held too long
    /// before the track set was known, or held at the end of a stream that never started).
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// Whether the track set has been emitted.
    pub fn is_started(&self) -> bool {
        self.started.is_some()
    }

    fn set_video_config(&mut self, config: AvcConfig) -> Result<(), BridgeError> {
        if let Some(v) = &self.video {
            // Encoders repeat the sequence header (ffmpeg on reconnect, OBS on keyframes).
            if v.config.sps == config.sps && v.config.pps == config.pps {
                return Ok(());
            }
            return Err(BridgeError::ConfigChanged { track: "video" });
        }
        if config.sps.is_empty() || config.pps.is_empty() {
            return Err(BridgeError::MissingParameterSets);
        }
        let (Ok(width), Ok(height)) = (u16::try_from(config.width), u16::try_from(config.height)) else {
            return Err(BridgeError::BadVideoSize { width: config.width, height: config.height });
        };
        let codec_string = cmaf::avc_codec_string(&config.sps[0]).unwrap_or_else(|| config.codec_string.clone());
        let cmaf = VideoConfig {
            codec: cmaf::VideoCodec::Avc1,
            sps: config.sps.iter().map(|s| s.to_vec()).collect(),
            pps: config.pps.iter().map(|p| p.to_vec()).collect(),
            width,
            height,
            codec_string,
        };
        self.video = Some(VideoTrack {
            config,
            cmaf,
            clock: MsClock::default(),
            first_keyframe_ms: None,
            last_ms: 0,
            pending: None,
            last_duration: DEFAULT_VIDEO_DURATION,
        });
        Ok(())
    }

    fn set_audio_config(&mut self, config: AacConfig) -> Result<(), BridgeError> {
        if let Some(a) = &self.audio {
            if a.config.asc == config.asc {
                return Ok(());
            }
            return Err(BridgeError::ConfigChanged { track: "audio" });
        }
        let cmaf = AudioConfig {
            asc: config.asc.to_vec(),
            sample_rate: config.sample_rate,
            // 0 means "see the program config element"; the sample entry needs a count, and
            // decoders take the real layout from the AudioSpecificConfig.
            channels: if config.channels == 0 { 2 } else { u16::from(config.channels) },
            codec_string: cmaf::aac_codec_string(&config.asc).unwrap_or_else(|| config.codec_string.clone()),
        };
        self.audio = Some(AudioTrack {
            config,
            cmaf,
            clock: MsClock::default(),
            anchor: None,
            first_ms: None,
            last_ms: 0,
            pending: None,
        });
        Ok(())
    }

    fn video_frame(&mut self, frame: flv::VideoFrame) -> Handled {
        if self.started.is_some_and(|(video, _)| !video) {
            return Handled::Dropped;
        }
        let Some(v) = &mut self.video else { return Handled::Dropped };
        if v.first_keyframe_ms.is_none() && !frame.keyframe {
            return Handled::Dropped;
        }
        let Some(data) = to_avcc4(&frame.nalus, v.config.nal_length_size) else { return Handled::Dropped };
        let step_ms = u64::from(v.last_duration) / TICKS_PER_MS;
        let ms = v.clock.map(frame.dts_ms, step_ms.max(1));
        v.first_keyframe_ms.get_or_insert(ms);
        v.last_ms = ms;
        let mut dts = ms * TICKS_PER_MS;
        if let Some(prev) = &v.pending {
            // Two frames in the same millisecond: keep dts strictly increasing.
            dts = dts.max(prev.dts + 1);
        }
        let cto_ms = i64::try_from(frame.pts_ms).unwrap_or(i64::MAX) - i64::try_from(frame.dts_ms).unwrap_or(i64::MAX);
        let pts = (i64::try_from(ms).unwrap_or(i64::MAX) + cto_ms).saturating_mul(TICKS_PER_MS as i64);
        let pts_offset = (pts - i64::try_from(dts).unwrap_or(i64::MAX)).clamp(i64::from(i32::MIN), i64::from(i32::MAX));
        let sample = Sample { dts, pts_offset: pts_offset as i32, duration: 0, keyframe: frame.keyframe, data };
        if let Some(mut prev) = v.pending.replace(sample) {
            prev.duration = u32::try_from(dts - prev.dts).unwrap_or(u32::MAX);
            v.last_duration = prev.duration;
            self.emit(BridgeOutput::Video(prev));
        }
        Handled::Frame
    }

    fn audio_frame(&mut self, timestamp_ms: u64, data: Bytes) -> Handled {
        if self.started.is_some_and(|(_, audio)| !audio) {
            return Handled::Dropped;
        }
        let Some(a) = &mut self.audio else { return Handled::Dropped };
        if data.is_empty() {
            return Handled::Dropped;
        }
        let rate = u64::from(a.cmaf.sample_rate);
        let frame_ms = (AAC_FRAME_SAMPLES * 1000 / rate.max(1)).max(1);
        let ms = a.clock.map(timestamp_ms, frame_ms);
        a.first_ms.get_or_insert(ms);
        a.last_ms = ms;
        let from_timestamp = ms * rate / 1000;
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
        let sample = Sample { dts, pts_offset: 0, duration: 0, keyframe: true, data };
        if let Some(mut prev) = a.pending.replace(sample) {
            prev.duration = u32::try_from(dts - prev.dts).unwrap_or(u32::MAX);
            self.emit(BridgeOutput::Audio(prev));
        }
        Handled::Frame
    }

    /// Starts once the track set is known (see the module docs).
    fn try_start(&mut self) {
        if self.started.is_some() || self.finished {
            return;
        }
        let video_ready = self.video.as_ref().and_then(|v| v.first_keyframe_ms.map(|k| (k, v.last_ms)));
        let audio_ready = self.audio.as_ref().and_then(|a| a.first_ms.map(|f| (f, a.last_ms)));
        let no_audio = self.meta_has_audio == Some(false);
        let no_video = self.meta_has_video == Some(false);
        match (video_ready, audio_ready) {
            (Some(_), Some(_)) => self.start(true, true),
            (Some((first, last)), None) if no_audio || last >= first + TRACK_WAIT_MS => self.start(true, false),
            (None, Some((first, last))) if no_video || (self.video.is_none() && last >= first + TRACK_WAIT_MS) => {
                self.start(false, true)
            }
            _ => {}
        }
    }

    fn start(&mut self, video: bool, audio: bool) {
        self.started = Some((video, audio));
        let video_config = if video { self.video.as_ref().map(|v| v.cmaf.clone()) } else { None };
        let audio_config = if audio { self.audio.as_ref().map(|a| a.cmaf.clone()) } else { None };
        self.out.push_back(BridgeOutput::Tracks { video: video_config, audio: audio_config });
        for held in std::mem::take(&mut self.held) {
            match held {
                BridgeOutput::Video(_) if !video => {}
                BridgeOutput::Audio(_) if !audio => {}
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

    fn emit(&mut self, output: BridgeOutput) {
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

/// AVCC with `length_size`-byte lengths → AVCC with 4-byte lengths. `None` if the framing is
/// broken.
fn to_avcc4(nalus: &Bytes, length_size: u8) -> Option<Bytes> {
    if length_size == 4 {
        return flv::nal_units(nalus, 4).all(|n| n.is_ok()).then(|| nalus.clone());
    }
    let mut out = BytesMut::with_capacity(nalus.len() + nalus.len() / 16 + 16);
    for nal in flv::nal_units(nalus, length_size) {
        let nal = nal.ok()?;
        out.put_u32(u32::try_from(nal.len()).ok()?);
        out.put_slice(nal);
    }
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// x264's Constrained Baseline 3.0 SPS for 320x240, and a PPS.
    const SPS: &[u8] = &[
        0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03,
        0x03, 0xc0, 0xf1, 0x62, 0xe4, 0x80,
    ];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
    /// AAC-LC, 48 kHz, stereo.
    const ASC: &[u8] = &[0x11, 0x90];

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

    fn drain(bridge: &mut FlvToCmaf) -> Vec<BridgeOutput> {
        std::iter::from_fn(|| bridge.poll_output()).collect()
    }

    #[test]
    fn both_tracks_start_together_with_converted_timestamps() {
        let mut b = FlvToCmaf::new();
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
        let BridgeOutput::Tracks { video: Some(v), audio: Some(a) } = &out[0] else { panic!("{out:?}") };
        assert_eq!((v.width, v.height, v.codec_string.as_str()), (320, 240, "avc1.42c01e"));
        assert_eq!((a.sample_rate, a.channels, a.codec_string.as_str()), (48_000, 2, "mp4a.40.2"));
        // One sample per track is held back for its duration.
        let audio: Vec<_> =
            out.iter().filter_map(|o| if let BridgeOutput::Audio(s) = o { Some(s) } else { None }).collect();
        assert_eq!(
            audio.iter().map(|s| (s.dts, s.duration)).collect::<Vec<_>>(),
            [(0, 1024), (1024, 1024), (2048, 1024)]
        );
        let video: Vec<_> =
            out.iter().filter_map(|o| if let BridgeOutput::Video(s) = o { Some(s) } else { None }).collect();
        assert_eq!(video.len(), 1);
        assert_eq!((video[0].dts, video[0].duration, video[0].pts_offset, video[0].keyframe), (0, 2970, 5940, true));
        assert_eq!(&video[0].data[..], &[0, 0, 0, 2, 0x65, 1]);

        b.finish();
        let tail = drain(&mut b);
        assert!(tail.contains(&BridgeOutput::Video(Sample {
            dts: 2970,
            pts_offset: 0,
            duration: 2970,
            keyframe: false,
            data: Bytes::from_static(&[0, 0, 0, 2, 0x41, 2]),
        })));
        assert!(tail.iter().any(|o| matches!(o, BridgeOutput::Audio(s) if s.dts == 3072 && s.duration == 1024)));
    }

    #[test]
    fn audio_count_resyncs_after_a_gap_and_clock_survives_a_jump_back() {
        let mut b = FlvToCmaf::new();
        b.handle_metadata(&Metadata { audio_sample_rate: Some(48_000.0), ..Default::default() });
        b.handle_audio(0, &aac(true, ASC)).unwrap();
        for ts in [1000, 1021, 2000, 500, 520] {
            b.handle_audio(ts, &aac(false, &[1])).unwrap();
        }
        b.finish();
        let dts: Vec<_> = drain(&mut b)
            .into_iter()
            .filter_map(|o| if let BridgeOutput::Audio(s) = o { Some(s.dts) } else { None })
            .collect();
        // 1000 ms = 48000; +1 frame; a 1 s gap re-anchors at 96000; the jump back to 500 ms maps
        // to one frame after the last timestamp, where the frame count already is: counting goes on.
        assert_eq!(dts, [48_000, 49_024, 96_000, 97_024, 98_048]);
    }

    #[test]
    fn video_only_after_the_wait_and_short_nal_lengths_are_rewritten() {
        let mut b = FlvToCmaf::new();
        b.handle_video(0, &avc_header(2, SPS)).unwrap();
        let mut ts = 0;
        while !b.is_started() {
            b.handle_video(ts, &avc_frame(ts == 0, 0, 2, &[0x65, 7])).unwrap();
            ts += 33;
            assert!(ts < 2_000, "never started");
        }
        assert!(ts > TRACK_WAIT_MS);
        let out = drain(&mut b);
        assert!(matches!(&out[0], BridgeOutput::Tracks { video: Some(_), audio: None }));
        let BridgeOutput::Video(first) = &out[1] else { panic!() };
        assert_eq!(&first.data[..], &[0, 0, 0, 2, 0x65, 7]);
        assert_eq!(out.len() - 1, (ts / 33) as usize - 1);
        // Audio arriving later is dropped; the track set cannot change.
        b.handle_audio(ts, &aac(true, ASC)).unwrap();
        assert_eq!(b.handle_audio(ts, &aac(false, &[1])), Ok(Handled::Dropped));
    }

    #[test]
    fn config_changes_and_other_codecs_end_the_stream() {
        let mut b = FlvToCmaf::new();
        b.handle_video(0, &avc_header(4, SPS)).unwrap();
        assert_eq!(b.handle_video(0, &avc_header(4, SPS)), Ok(Handled::Other), "repeats are fine");
        let mut other = SPS.to_vec();
        other[3] = 0x1f;
        assert_eq!(b.handle_video(0, &avc_header(4, &other)), Err(BridgeError::ConfigChanged { track: "video" }));
        let hevc = Bytes::from_static(&[0x1c, 1, 0, 0, 0, 0, 0, 0, 1, 0x26]);
        assert!(matches!(FlvToCmaf::new().handle_video(0, &hevc), Err(BridgeError::UnsupportedVideoCodec(_))));
    }

    #[test]
    fn garbage_never_panics() {
        let mut b = FlvToCmaf::new();
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
