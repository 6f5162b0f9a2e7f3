//! Deterministic packaging across origins: the publisher's packager and two subscribers (one from
//! the start, one joining mid-stream through the cache's replay) name every part and segment
//! alike and write the same bytes under each name, so an edge can switch between them.
//! No sockets: frames go from the cache to each subscriber's decoder as bytes.

use bytes::{Bytes, BytesMut};
use media::cmaf::{AudioConfig, Sample, VideoCodec, VideoConfig};
use media::hls::{Pushed, Rendition, RenditionConfig};
use relay::track::{Subscription, TrackCache, TrackEvent};
use relay::wire::{Decoder, Packaging};

const T0: i64 = 1_790_000_000_000;
const EPOCH: u64 = 17_900_000_000;

fn video_config() -> VideoConfig {
    VideoConfig {
        codec: VideoCodec::Avc1,
        sps: vec![vec![0x67, 0x42, 0xc0, 0x1e]],
        pps: vec![vec![0x68, 0xce]],
        width: 640,
        height: 360,
        codec_string: "avc1.42c01e".into(),
    }
}

fn audio_config() -> AudioConfig {
    AudioConfig { asc: vec![0x11, 0x90], sample_rate: 48_000, channels: 2, codec_string: "mp4a.40.2".into() }
}

/// `(is_video, sample, now)` in feed order: 30 fps video with GOPs of varying length (so
/// segments differ in length and parts in count), 48 kHz AAC delivered ~100 ms ahead of video
/// (so audio for the next segment is queued before its keyframe arrives).
fn stream(seconds: u64) -> Vec<(bool, Sample, i64)> {
    let gops = [30u64, 45, 20, 60, 33];
    let mut keyframes = std::collections::BTreeSet::new();
    let (mut at, mut g) = (0u64, 0usize);
    while at < seconds * 30 {
        keyframes.insert(at);
        at += gops[g % gops.len()];
        g += 1;
    }
    let mut out = Vec::new();
    let mut audio_i = 0u64;
    for i in 0..seconds * 30 {
        let dts = i * 3000;
        // Audio whose time is up to 100 ms after this frame's time goes first.
        while audio_i * 1024 * 90_000 / 48_000 <= dts + 9000 {
            let data = Bytes::from(vec![(audio_i % 251) as u8; 300]);
            let sample = Sample { dts: audio_i * 1024, pts_offset: 0, duration: 1024, keyframe: true, data };
            out.push((false, sample, T0 + (audio_i * 1024 * 1000 / 48_000) as i64));
            audio_i += 1;
        }
        let size = 500 + (i * 37 % 900) as usize;
        let data = Bytes::from(vec![(i % 253) as u8; size]);
        let sample = Sample { dts, pts_offset: 0, duration: 3000, keyframe: keyframes.contains(&i), data };
        out.push((true, sample, T0 + (i * 100 / 3) as i64));
    }
    out
}

/// An origin's packager behind a subscription, fed raw bytes.
struct Origin {
    decoder: Decoder,
    subscription: Subscription,
    rendition: Option<Rendition>,
    expected: Option<u64>,
    diverged: u32,
}

impl Origin {
    fn new() -> Self {
        Origin {
            decoder: Decoder::for_subscriber(),
            subscription: Subscription::new("source"),
            rendition: None,
            expected: None,
            diverged: 0,
        }
    }

    fn receive(&mut self, bytes: &[u8]) {
        self.decoder.handle_data(bytes);
        while let Some(frame) = self.decoder.poll_frame().unwrap() {
            self.subscription.handle_frame(frame).unwrap();
            while let Some(event) = self.subscription.poll_event() {
                match event {
                    TrackEvent::Open { config, video, audio, .. } => {
                        self.rendition = Some(Rendition::new(config, video, audio).unwrap());
                    }
                    TrackEvent::Video { sample, now } => {
                        let r = self.rendition.as_mut().unwrap();
                        let _ = r.push_video(sample, now).unwrap();
                        if let Some(msn) = self.expected.take() {
                            if r.partial_segment().map(|s| s.msn) != Some(msn) {
                                self.diverged += 1;
                            }
                        }
                    }
                    TrackEvent::Audio { sample, now } => {
                        let _ = self.rendition.as_mut().unwrap().push_audio(sample, now).unwrap();
                    }
                    TrackEvent::ExpectSegment { msn } => self.expected = Some(msn),
                    TrackEvent::End => {
                        let _ = self.rendition.as_mut().unwrap().finish().unwrap();
                    }
                    _ => {}
                }
            }
        }
    }
}

/// A window long enough to hold the whole stream, so every segment can be compared.
fn packaging() -> RenditionConfig {
    RenditionConfig { first_msn: EPOCH, playlist_segments: 64, ..RenditionConfig::default() }
}

#[test]
fn a_late_subscriber_names_and_writes_every_common_part_and_segment_alike() {
    late_subscriber_matches_the_publisher(Replay::FromTheStart);
}

#[test]
fn a_replay_asked_for_mid_stream_offers_the_second_keyframe_segment_and_matches_too() {
    late_subscriber_matches_the_publisher(Replay::AskedAtTheJoin);
}

/// When the publishing cache starts keeping its replay.
#[derive(Clone, Copy, PartialEq)]
enum Replay {
    FromTheStart,
    /// Kept only from the moment the late subscriber asks (a node that thought nobody would):
    /// the subscriber waits for the cache's first complete join point.
    AskedAtTheJoin,
}

fn late_subscriber_matches_the_publisher(replay: Replay) {
    let config = packaging();
    let mut publisher = Rendition::new(config.clone(), Some(video_config()), Some(audio_config())).unwrap();
    let wire_packaging = Packaging {
        epoch_msn: EPOCH,
        part_target_us: config.part_target.as_micros() as u32,
        segment_target_us: config.segment_target.as_micros() as u32,
        playlist_segments: config.playlist_segments as u16,
        max_part_bytes: config.max_part_bytes as u32,
    };
    let mut cache = TrackCache::new("s1", wire_packaging, Some(video_config()), Some(audio_config()));
    if replay == Replay::AskedAtTheJoin {
        cache = cache.without_replay();
    }
    let mut early = Origin::new();
    let mut late = Origin::new();
    let (mut late_joined, mut late_waiting) = (false, false);
    let mut joined_at_msn = None;
    // Keyframe segments started since the late subscriber asked.
    let mut join_points_since_asked = 0;
    let feed = stream(40);
    let join_at = feed.len() * 11 / 20 + 7;
    for (n, (video, sample, now)) in feed.into_iter().enumerate() {
        if n == join_at {
            match replay {
                Replay::FromTheStart => {
                    // The late origin subscribes now: the join frames, then the live ones.
                    assert!(cache.can_join());
                    for frame in cache.join() {
                        late.receive(&frame);
                    }
                    late_joined = true;
                }
                Replay::AskedAtTheJoin => {
                    assert_eq!(cache.replay_bytes(), 0, "nothing was held before anyone asked");
                    assert!(!cache.can_join());
                    cache.keep_replay();
                    late_waiting = true;
                }
            }
        }
        let open_before = publisher.partial_segment().map(|s| s.msn);
        let pushed =
            if video { publisher.push_video(sample.clone(), now) } else { publisher.push_audio(sample.clone(), now) };
        if matches!(pushed, Ok(Pushed::Buffered | Pushed::Published(_))) {
            if video {
                let open_after = publisher.partial_segment().map(|s| s.msn);
                let opened = if sample.keyframe { open_after.filter(|&m| Some(m) != open_before) } else { None };
                if opened.is_some() && late_waiting {
                    join_points_since_asked += 1;
                }
                cache.handle_video(&sample, now, opened);
            } else {
                cache.handle_audio(&sample, now);
            }
        }
        while let Some(frame) = cache.poll_transmit() {
            early.receive(&frame);
            if late_joined {
                late.receive(&frame);
                if joined_at_msn.is_none() {
                    joined_at_msn = late.rendition.as_ref().map(|r| r.config().first_msn);
                }
            }
        }
        if late_waiting {
            // The first keyframe segment may miss audio queued before it; the second is whole.
            assert_eq!(cache.can_join(), join_points_since_asked >= 2, "after {join_points_since_asked}");
            if cache.can_join() {
                for frame in cache.join() {
                    late.receive(&frame);
                }
                (late_joined, late_waiting) = (true, false);
            }
        }
    }
    assert!(late_joined, "the late subscriber joined");
    let _ = publisher.finish().unwrap();
    cache.handle_end();
    while let Some(frame) = cache.poll_transmit() {
        early.receive(&frame);
        late.receive(&frame);
    }

    let (early_r, late_r) = (early.rendition.as_ref().unwrap(), late.rendition.as_ref().unwrap());
    assert_eq!(early.diverged + late.diverged, 0, "segment numbers diverged from the publisher's");
    for origin in [early_r, late_r] {
        assert_eq!(origin.init_id(), publisher.init_id(), "one init name per broadcast");
        assert_eq!(origin.init(), publisher.init());
    }
    let late_first = late_r.playlist_segments().next().unwrap().msn;
    assert!(late_first > EPOCH + 3, "the late origin joined mid-stream, at {late_first}");
    // The segment it joined at too (the one whose audio was queued before its keyframe).
    assert_eq!(late_r.segment(late_first), publisher.segment(late_first), "the join segment {late_first}");
    let mut compared = 0;
    for segment in publisher.playlist_segments() {
        for origin in [early_r, late_r] {
            let Some(bytes) = origin.segment(segment.msn) else { continue };
            assert_eq!(bytes, segment.bytes(), "segment {} differs", segment.msn);
            for part in &segment.parts {
                assert_eq!(
                    origin.part(part.msn, part.index).as_ref(),
                    Some(&part.bytes),
                    "part {}.{}",
                    part.msn,
                    part.index
                );
            }
            compared += 1;
        }
    }
    assert!(compared >= 10, "compared {compared} segments");
    assert_eq!(late_r.latest(), publisher.latest());
    assert_eq!(early_r.latest(), publisher.latest());
}

/// The packaging a publisher with 200 ms parts and 1 s segments announces on the wire.
fn wire_packaging() -> Packaging {
    Packaging {
        epoch_msn: EPOCH,
        part_target_us: 200_000,
        segment_target_us: 1_000_000,
        playlist_segments: 8,
        max_part_bytes: 8 << 20,
    }
}

#[test]
fn the_replay_is_bounded_to_the_newest_keyframe_segment() {
    let config = packaging();
    let packaging = wire_packaging();
    let mut publisher = Rendition::new(config, Some(video_config()), None).unwrap();
    let mut cache = TrackCache::new("s1", packaging, Some(video_config()), None);
    let (mut biggest, mut discarded) = (0, 0);
    for (video, sample, now) in stream(20).into_iter().filter(|(video, ..)| *video) {
        let before = publisher.partial_segment().map(|s| s.msn);
        let _ = publisher.push_video(sample.clone(), now).unwrap();
        let opened = publisher.partial_segment().map(|s| s.msn).filter(|m| sample.keyframe && Some(*m) != before);
        assert!(video);
        cache.handle_video(&sample, now, opened);
        // Nobody subscribes: what would have been sent is dropped unencoded.
        discarded += cache.discard_transmit();
        assert!(cache.poll_transmit().is_none());
        biggest = biggest.max(cache.replay_bytes());
    }
    assert!(discarded > 20 * 30, "every frame of the stream was dropped, {discarded}");
    // The longest GOP is 60 frames of at most 1.4 KB: the replay never holds more than that.
    assert!(biggest < 60 * 1500, "replay held {biggest} bytes");
    let mut wire = BytesMut::new();
    for frame in cache.join() {
        wire.extend_from_slice(&frame);
    }
    let mut origin = Origin::new();
    origin.receive(&wire);
    assert!(origin.rendition.is_some(), "a joiner opens at once from the replay, never encoded before");
}

#[test]
fn nothing_is_queued_for_sending_while_nobody_subscribes() {
    let packaging = wire_packaging();
    let mut cache = TrackCache::new("s1", packaging, Some(video_config()), Some(audio_config()));
    cache.set_sending(false);
    let feed = stream(3);
    let fed = feed.len();
    for (video, sample, now) in feed {
        if video {
            cache.handle_video(&sample, now, None);
        } else {
            cache.handle_audio(&sample, now);
        }
        assert!(cache.poll_transmit().is_none(), "queued while not sending");
    }
    // Counted as unsent: the Tracks frame queued at the start, then every sample.
    assert_eq!(cache.discard_transmit(), fed + 1);
    assert_eq!(cache.discard_transmit(), 0);
    cache.set_sending(true);
    cache.handle_end();
    let mut origin = Origin::new();
    let mut wire = BytesMut::new();
    for frame in cache.join() {
        wire.extend_from_slice(&frame);
    }
    wire.extend_from_slice(&cache.poll_transmit().expect("sending again: the End frame"));
    origin.receive(&wire);
    assert!(cache.poll_transmit().is_none());
}
