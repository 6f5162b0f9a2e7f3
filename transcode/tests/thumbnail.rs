//! `transcode::thumbnail` on real CMAF: ffmpeg's fragmented MP4 (with audio, B-frames, odd and
//! anamorphic sizes) and our own packager's, read back by ffprobe; and the inputs that must be
//! errors, not panics (garbage, an audio-only header, cut and corrupted media).
//!
//! Needs ffmpeg and ffprobe; fails naming them when missing unless `BITRIVER_ALLOW_SKIP=1`.

use std::path::Path;
use std::time::Instant;

use media::cmaf::{self, Sample, TrackRun, VideoCodec, VideoConfig};
use media::codec::h264::{codec_string, split_access_units};
use testkit::ffmpeg::{Encoding, TestPattern};
use transcode::thumbnail::{jpeg_from_cmaf, Thumbnail, ThumbnailError};

/// ffmpeg's CMAF flavour of fragmented MP4: empty `moov`, a fragment per keyframe, offsets from
/// the `moof` (what our packager writes too).
const CMAF_FLAGS: &str = "cmaf+frag_keyframe+empty_moov+default_base_moof";

/// Runs `pattern` into a fragmented MP4 and splits it: (header, [fragment, ...]).
fn cmaf_of(pattern: &TestPattern, dir: &Path, name: &str) -> (Vec<u8>, Vec<Vec<u8>>) {
    let file = dir.join(name);
    let mut pattern = pattern.clone();
    pattern.extra.extend(["-movflags".into(), CMAF_FLAGS.into()]);
    let status = pattern.command("mp4", &file).status().expect("running ffmpeg");
    assert!(status.success(), "ffmpeg could not write {name}: {status}");
    split(&std::fs::read(&file).unwrap())
}

/// A fragmented MP4 cut into its header (everything before the first `moof`) and fragments
/// (each `moof` up to the next).
fn split(file: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut moofs = Vec::new();
    let mut pos = 0;
    while pos + 8 <= file.len() {
        let size = u32::from_be_bytes(file[pos..pos + 4].try_into().unwrap()) as usize;
        if &file[pos + 4..pos + 8] == b"moof" {
            moofs.push(pos);
        }
        assert!(size >= 8, "ffmpeg wrote a box of size {size} at {pos}");
        pos += size;
    }
    assert!(!moofs.is_empty(), "no moof in ffmpeg's output");
    let header = file[..moofs[0]].to_vec();
    let ends = moofs.iter().skip(1).copied().chain([file.len()]);
    let fragments = moofs.iter().zip(ends).map(|(&start, end)| file[start..end].to_vec()).collect();
    (header, fragments)
}

/// Asserts `thumb` is a whole JPEG that ffprobe reads as MJPEG of `width`x`height`.
async fn assert_jpeg(thumb: &Thumbnail, width: u32, height: u32, dir: &Path, name: &str) {
    assert_eq!((thumb.width, thumb.height), (width, height), "{name}");
    assert!(thumb.jpeg.starts_with(&[0xFF, 0xD8]), "{name}: no JPEG start-of-image marker");
    assert!(thumb.jpeg.ends_with(&[0xFF, 0xD9]), "{name}: no JPEG end-of-image marker");
    let file = dir.join(name);
    std::fs::write(&file, &thumb.jpeg).unwrap();
    let probe = testkit::ffmpeg::ffprobe(&["-show_streams", file.to_str().unwrap()]).await;
    let stream = testkit::ffmpeg::stream(&probe, "mjpeg").unwrap_or_else(|| panic!("{name}: not MJPEG: {probe}"));
    assert_eq!(stream["width"].as_u64(), Some(u64::from(width)), "{name}: {stream}");
    assert_eq!(stream["height"].as_u64(), Some(u64::from(height)), "{name}: {stream}");
}

/// Mean milliseconds of `runs` calls of `f`.
fn mean_ms(runs: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..runs {
        f();
    }
    start.elapsed().as_secs_f64() * 1000.0 / f64::from(runs)
}

#[tokio::test]
async fn a_keyframe_of_ffmpeg_cmaf_becomes_a_jpeg_of_the_asked_width() {
    if !testkit::require_tools(&["ffmpeg", "ffprobe"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Video and audio, a keyframe a second: two fragments.
    let pattern = TestPattern { seconds: Some(2), ..TestPattern::new(640, 360) };
    let (init, fragments) = cmaf_of(&pattern, dir.path(), "av.mp4");
    assert!(fragments.len() >= 2, "expected a fragment per second, got {}", fragments.len());

    let media = fragments.concat();
    let thumb = jpeg_from_cmaf(&init, &media, 320).unwrap();
    assert_jpeg(&thumb, 320, 180, dir.path(), "av.jpg").await;
    assert!(
        (1_000..100_000).contains(&thumb.jpeg.len()),
        "a 320x180 thumbnail should be a few tens of KB, not {} bytes",
        thumb.jpeg.len()
    );
    // A later segment on its own (what a live poster reads), and the full size when asked wider.
    let later = jpeg_from_cmaf(&init, &fragments[1], 320).unwrap();
    assert_jpeg(&later, 320, 180, dir.path(), "later.jpg").await;
    let full = jpeg_from_cmaf(&init, &media, 1920).unwrap();
    assert_jpeg(&full, 640, 360, dir.path(), "full.jpg").await;

    let ms = mean_ms(20, || drop(jpeg_from_cmaf(&init, &fragments[1], 320).unwrap()));
    println!("thumbnail: 640x360 -> 320x180 in {ms:.2} ms ({} bytes)", thumb.jpeg.len());
}

#[tokio::test]
async fn a_1080p_keyframe_with_b_frames_takes_milliseconds() {
    if !testkit::require_tools(&["ffmpeg", "ffprobe"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // OBS-like: B-frames, so the decoder has a reorder delay to flush.
    let pattern = TestPattern {
        seconds: Some(1),
        audio: false,
        encoding: Encoding::BFrames,
        preset: "ultrafast",
        ..TestPattern::new(1920, 1080)
    };
    let (init, fragments) = cmaf_of(&pattern, dir.path(), "1080p.mp4");
    let thumb = jpeg_from_cmaf(&init, &fragments[0], 320).unwrap();
    assert_jpeg(&thumb, 320, 180, dir.path(), "1080p.jpg").await;
    let ms = mean_ms(10, || drop(jpeg_from_cmaf(&init, &fragments[0], 320).unwrap()));
    println!(
        "thumbnail: 1920x1080 -> 320x180 in {ms:.2} ms ({} bytes, keyframe of {} KB)",
        thumb.jpeg.len(),
        fragments[0].len() / 1024
    );
}

#[tokio::test]
async fn odd_portrait_and_anamorphic_sources_keep_their_aspect() {
    if !testkit::require_tools(&["ffmpeg", "ffprobe"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // 332x200 (83:50), 4:4:4 (High 4:4:4 profile). libx264 rounds odd sizes down to even, so
    // odd heights come from the scaling: 200 * 200 / 332 = 120.5, 200 * 254 / 332 = 153.01.
    let odd = TestPattern {
        seconds: Some(1),
        audio: false,
        extra: vec!["-pix_fmt".into(), "yuv444p".into()],
        ..TestPattern::new(332, 200)
    };
    let (init, fragments) = cmaf_of(&odd, dir.path(), "odd.mp4");
    let thumb = jpeg_from_cmaf(&init, &fragments[0], 200).unwrap();
    assert_jpeg(&thumb, 200, 120, dir.path(), "odd.jpg").await;
    // An odd limit: the width rounds down to even, the height to the nearest even.
    let thumb = jpeg_from_cmaf(&init, &fragments[0], 255).unwrap();
    assert_jpeg(&thumb, 254, 154, dir.path(), "odd-limit.jpg").await;
    // Narrower than asked: never upscaled.
    let thumb = jpeg_from_cmaf(&init, &fragments[0], 640).unwrap();
    assert_jpeg(&thumb, 332, 200, dir.path(), "odd-full.jpg").await;

    let portrait = TestPattern { seconds: Some(1), audio: false, ..TestPattern::new(180, 320) };
    let (init, fragments) = cmaf_of(&portrait, dir.path(), "portrait.mp4");
    let thumb = jpeg_from_cmaf(&init, &fragments[0], 320).unwrap();
    assert_jpeg(&thumb, 180, 320, dir.path(), "portrait.jpg").await;

    // 480x360 stored with 4:3 pixels displays as 640x360: the picture is 16:9.
    let anamorphic = TestPattern {
        seconds: Some(1),
        audio: false,
        extra: vec!["-vf".into(), "setsar=4/3".into()],
        ..TestPattern::new(480, 360)
    };
    let (init, fragments) = cmaf_of(&anamorphic, dir.path(), "anamorphic.mp4");
    let thumb = jpeg_from_cmaf(&init, &fragments[0], 320).unwrap();
    assert_jpeg(&thumb, 320, 180, dir.path(), "anamorphic.jpg").await;
}

/// What the node actually hands over: our packager's header (`avcC` from the ingest's parameter
/// sets) and a fragment of AVCC samples.
#[tokio::test]
async fn a_segment_of_our_own_packager_becomes_a_jpeg() {
    if !testkit::require_tools(&["ffmpeg", "ffprobe"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.h264");
    let pattern = TestPattern { seconds: Some(1), audio: false, ..TestPattern::new(640, 360) };
    assert!(pattern.command("h264", &file).status().expect("running ffmpeg").success());
    let es = split_access_units(&std::fs::read(&file).unwrap());
    let samples: Vec<Sample> = es
        .access_units
        .into_iter()
        .enumerate()
        .map(|(i, (data, keyframe))| Sample { dts: i as u64 * 3000, pts_offset: 0, duration: 3000, keyframe, data })
        .collect();
    let codec_string = codec_string(&es.sps[0]).unwrap();
    let video =
        VideoConfig { codec: VideoCodec::Avc1, sps: es.sps, pps: es.pps, width: 640, height: 360, codec_string };
    let init = cmaf::init_segment(Some(&video), None).unwrap();
    let run = TrackRun { track_id: cmaf::VIDEO_TRACK_ID, base_media_decode_time: 0, samples: &samples };
    let segment = cmaf::fragment(1, &[run]).unwrap();

    let thumb = jpeg_from_cmaf(&init, &segment, 320).unwrap();
    assert_jpeg(&thumb, 320, 180, dir.path(), "packager.jpg").await;
}

#[test]
fn garbage_an_audio_only_header_and_cut_media_are_errors() {
    if !testkit::require_tools(&["ffmpeg", "ffprobe"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pattern = TestPattern { seconds: Some(2), ..TestPattern::new(320, 180) };
    let (init, fragments) = cmaf_of(&pattern, dir.path(), "av.mp4");
    let media = fragments.concat();

    // Garbage.
    let noise: Vec<u8> = (0..65_536u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    assert!(matches!(jpeg_from_cmaf(b"", b"", 320), Err(ThumbnailError::MalformedInit(_))));
    assert!(jpeg_from_cmaf(&noise[..1000], &noise, 320).is_err());
    assert!(matches!(jpeg_from_cmaf(&init, &noise, 320), Err(ThumbnailError::MalformedMedia { .. })));
    assert!(matches!(jpeg_from_cmaf(&init, b"", 320), Err(ThumbnailError::NoKeyframe { track_id: 1 })));
    // The header where the media should be and the other way round.
    assert!(jpeg_from_cmaf(&init, &init, 320).is_err());
    assert!(jpeg_from_cmaf(&media, &media, 320).is_err());

    // A header without video.
    let audio_only = TestPattern { seconds: Some(1), extra: vec!["-vn".into()], ..TestPattern::new(320, 180) };
    let (audio_init, audio_fragments) = cmaf_of(&audio_only, dir.path(), "audio.mp4");
    let error = jpeg_from_cmaf(&audio_init, &audio_fragments.concat(), 320).unwrap_err();
    assert_eq!(error, ThumbnailError::NoVideoTrack);
    assert_eq!(error.to_string(), "the CMAF header has no video track");

    // Cut inside the first keyframe (the video data comes first in ffmpeg's mdat), inside the
    // first moof, and every header prefix.
    let moof_len = u32::from_be_bytes(media[..4].try_into().unwrap()) as usize;
    let error = jpeg_from_cmaf(&init, &media[..moof_len + 200], 320).unwrap_err();
    assert!(matches!(error, ThumbnailError::KeyframeTruncated { track_id: 1, .. }), "{error}");
    println!("cut keyframe: {error}");
    let error = jpeg_from_cmaf(&init, &media[..moof_len / 2], 320).unwrap_err();
    assert!(matches!(error, ThumbnailError::MalformedMedia { offset: 0, .. }), "{error}");
    println!("cut moof: {error}");
    for len in (0..init.len()).step_by(7) {
        assert!(jpeg_from_cmaf(&init[..len], &media, 320).is_err(), "a header cut to {len} bytes");
    }
}

/// Bytes flipped all over the header and the first fragment: whatever comes out (a picture, an
/// error), nothing panics. A poor man's fuzz run, deterministic, with the real decoder behind it.
#[test]
fn corrupted_headers_and_fragments_never_panic() {
    if !testkit::require_tools(&["ffmpeg"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pattern = TestPattern { seconds: Some(1), ..TestPattern::new(320, 180) };
    let (init, fragments) = cmaf_of(&pattern, dir.path(), "av.mp4");
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move || {
        // xorshift64: reproducible without a rand dependency.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut pictures, mut errors) = (0, 0);
    for round in 0..400 {
        let (mut init, mut media) = (init.clone(), fragments[0].clone());
        // Early rounds hit the boxes (the first 2 KB of each), later ones anywhere.
        let target = if round % 2 == 0 { &mut init } else { &mut media };
        let span = if round < 200 { target.len().min(2048) } else { target.len() };
        for _ in 0..1 + next() % 4 {
            let at = (next() % span as u64) as usize;
            target[at] = next() as u8;
        }
        match jpeg_from_cmaf(&init, &media, 160) {
            Ok(thumb) => {
                assert!(thumb.jpeg.starts_with(&[0xFF, 0xD8]));
                pictures += 1;
            }
            Err(_) => errors += 1,
        }
    }
    println!("corrupted inputs: {pictures} pictures, {errors} errors");
}
