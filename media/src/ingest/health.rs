//! Stream health at ingest, sans-IO: what the encoder sends, measured over windows of a few
//! seconds (bitrates, frame rate, keyframe interval, A/V drift), for the streamer's health view.
//!
//! The meter reads the packager feed's samples (media time: 90 kHz video, sample-rate audio) and
//! the caller's clock (`now` in ms), and yields one [`HealthSample`] per [`WINDOW_MS`].

use crate::cmaf::{Sample, VIDEO_TIMESCALE};

/// How long one sample measures.
pub const WINDOW_MS: i64 = 5_000;

/// One window's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthSample {
    /// End of the window (the caller's clock, Unix ms).
    pub at: i64,
    pub video_kbps: u32,
    pub audio_kbps: u32,
    /// Video frames per second of media time received in the window.
    pub fps: f32,
    /// Longest distance between two keyframes seen so far in the window (ms of media time);
    /// 0 when the window saw fewer than two keyframes (see `since_keyframe_ms`).
    pub keyframe_interval_ms: u32,
    /// Media time since the last keyframe at the window's end: grows past the interval when
    /// keyframes are rarer than the window.
    pub since_keyframe_ms: u32,
    /// Last video time minus last audio time (ms): positive when audio lags.
    pub av_drift_ms: i32,
}

/// Accumulates one window.
#[derive(Debug, Default)]
pub struct HealthMeter {
    audio_rate: u32,
    window_start: Option<i64>,
    video_bytes: u64,
    audio_bytes: u64,
    frames: u32,
    /// First and last video dts of the window (90 kHz).
    video_span: Option<(u64, u64)>,
    last_keyframe: Option<u64>,
    longest_gop: u64,
    last_video_ms: Option<f64>,
    last_audio_ms: Option<f64>,
}

impl HealthMeter {
    /// A meter for a stream whose audio runs at `audio_rate` Hz (0 without audio).
    pub fn new(audio_rate: u32) -> Self {
        HealthMeter { audio_rate, ..HealthMeter::default() }
    }

    pub fn video(&mut self, sample: &Sample, now: i64) {
        self.window_start.get_or_insert(now);
        self.video_bytes += sample.data.len() as u64;
        self.frames += 1;
        let span = self.video_span.get_or_insert((sample.dts, sample.dts));
        span.1 = span.1.max(sample.dts);
        if sample.keyframe {
            if let Some(last) = self.last_keyframe.filter(|&l| sample.dts > l) {
                self.longest_gop = self.longest_gop.max(sample.dts - last);
            }
            self.last_keyframe = Some(sample.dts);
        }
        self.last_video_ms = Some(sample.dts as f64 * 1000.0 / f64::from(VIDEO_TIMESCALE));
    }

    pub fn audio(&mut self, sample: &Sample, now: i64) {
        self.window_start.get_or_insert(now);
        self.audio_bytes += sample.data.len() as u64;
        if self.audio_rate > 0 {
            self.last_audio_ms = Some(sample.dts as f64 * 1000.0 / f64::from(self.audio_rate));
        }
    }

    /// The window's figures once it is [`WINDOW_MS`] long (then a new window starts).
    pub fn poll(&mut self, now: i64) -> Option<HealthSample> {
        let start = self.window_start?;
        let elapsed = now - start;
        if elapsed < WINDOW_MS {
            return None;
        }
        let seconds = elapsed as f64 / 1000.0;
        let kbps = |bytes: u64| (bytes as f64 * 8.0 / 1000.0 / seconds).round() as u32;
        let fps = match self.video_span {
            Some((first, last)) if last > first && self.frames > 1 => {
                (f64::from(self.frames - 1) * f64::from(VIDEO_TIMESCALE) / (last - first) as f64) as f32
            }
            _ => 0.0,
        };
        let to_ms = |ticks: u64| (ticks * 1000 / u64::from(VIDEO_TIMESCALE)) as u32;
        let since_keyframe = match (self.video_span, self.last_keyframe) {
            (Some((_, last)), Some(key)) => to_ms(last.saturating_sub(key)),
            _ => 0,
        };
        let drift = match (self.last_video_ms, self.last_audio_ms) {
            (Some(v), Some(a)) => (v - a).round() as i32,
            _ => 0,
        };
        let sample = HealthSample {
            at: now,
            video_kbps: kbps(self.video_bytes),
            audio_kbps: kbps(self.audio_bytes),
            fps,
            keyframe_interval_ms: to_ms(self.longest_gop),
            since_keyframe_ms: since_keyframe,
            av_drift_ms: drift,
        };
        // The keyframe position carries over: a GOP may span windows.
        *self = HealthMeter {
            audio_rate: self.audio_rate,
            window_start: Some(now),
            last_keyframe: self.last_keyframe,
            last_video_ms: self.last_video_ms,
            last_audio_ms: self.last_audio_ms,
            ..HealthMeter::default()
        };
        Some(sample)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn frame(dts: u64, keyframe: bool, bytes: usize) -> Sample {
        Sample { dts, pts_offset: 0, duration: 3000, keyframe, data: Bytes::from(vec![0u8; bytes]) }
    }

    #[test]
    fn a_window_gives_bitrates_frame_rate_keyframe_interval_and_drift() {
        let mut m = HealthMeter::new(48_000);
        // 5 s of 30 fps video, 2,500 bytes a frame (600 kbit/s), a keyframe every 2 s; AAC frames
        // of 300 bytes 46.875 a second (112.5 kbit/s), audio ending 100 ms behind the video.
        for i in 0..150u64 {
            m.video(&frame(i * 3000, i % 60 == 0, 2500), i as i64 * 33);
        }
        for i in 0..234u64 {
            m.audio(&frame(i * 1024, true, 300), i as i64 * 21);
        }
        assert_eq!(m.poll(4_999), None, "the window is not over");
        let s = m.poll(5_000).unwrap();
        assert_eq!((s.video_kbps, s.audio_kbps), (600, 112));
        assert!((s.fps - 30.0).abs() < 0.01, "{s:?}");
        assert_eq!(s.keyframe_interval_ms, 2000);
        // Last keyframe at 4.000 s, last frame at 4.967 s.
        assert_eq!(s.since_keyframe_ms, 966);
        // Video ends at 4966.7 ms, audio at 4970.7 ms.
        assert_eq!(s.av_drift_ms, -4, "{s:?}");
        // The next window starts empty but remembers the last keyframe.
        assert_eq!(m.poll(9_000), None);
        m.video(&frame(150 * 3000, false, 2500), 9_500);
        let s = m.poll(10_000).unwrap();
        assert_eq!(s.keyframe_interval_ms, 0);
        assert_eq!(s.since_keyframe_ms, 1000, "1 s since the keyframe at 4 s");
    }

    #[test]
    fn rare_keyframes_show_as_a_long_interval() {
        let mut m = HealthMeter::new(0);
        for i in 0..300u64 {
            m.video(&frame(i * 3000, i == 0 || i == 299, 1000), i as i64 * 33);
        }
        let s = m.poll(10_000).unwrap();
        assert_eq!(s.keyframe_interval_ms, 9966);
        assert_eq!(s.av_drift_ms, 0, "no audio: no drift");
    }
}
