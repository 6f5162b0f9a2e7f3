//! The real ladder (FFmpeg decode, swscale, libx264) in-process on an ffmpeg-made H.264 stream: a
//! ladder that is behind real time drops its tallest rung (unlisted from the multivariant
//! playlist) while the other rung and the source stay live and get every frame.
//!
//! Lag is made, not waited for: samples carry a wall clock ten seconds old, as if the ladder were
//! that far behind. Needs ffmpeg; fails naming it when it is missing.

use std::path::Path;
use std::time::{Duration, Instant};

use media::cmaf::{Sample, VideoCodec, VideoConfig};
use media::codec::h264::{codec_string, split_access_units};
use media::hls::{Rendition, RenditionConfig};
use media::ingest::{Ladder, LadderRendition, LadderRun, LadderSource};
use media::origin::{routes, LiveHandle, LiveRegistry, LiveRendition, OriginConfig, OriginMetrics, RegistryConfig};
use transcode::{DegradePolicy, HardwareProbe, LadderSpec, TranscodeLadder, TranscodeMetrics};

/// Two seconds of 320x180 test pattern, keyframe every second, as AVCC samples at 30 fps.
fn input(dir: &Path) -> (VideoConfig, Vec<Sample>) {
    let file = dir.join("in.h264");
    let pattern = testkit::ffmpeg::TestPattern {
        seconds: Some(2),
        audio: false,
        extra: vec!["-x264-params".into(), "aud=1".into()],
        ..testkit::ffmpeg::TestPattern::new(320, 180)
    };
    let status = pattern.command("h264", &file).status().unwrap();
    assert!(status.success());
    let es = split_access_units(&std::fs::read(&file).unwrap());
    let samples = es
        .access_units
        .into_iter()
        .enumerate()
        .map(|(i, (data, keyframe))| Sample { dts: i as u64 * 3000, pts_offset: 0, duration: 3000, keyframe, data })
        .collect();
    let codec_string = codec_string(&es.sps[0]).unwrap();
    let (sps, pps) = (es.sps, es.pps);
    let config = VideoConfig { codec: VideoCodec::Avc1, sps, pps, width: 320, height: 180, codec_string };
    (config, samples)
}

/// Waits (up to a minute) until rung `name` of channel `ch` has packaged `total` frames.
async fn wait_frames(metrics: &TranscodeMetrics, name: &str, total: u64) {
    let frames = || metrics.frames.with_label_values(&["ch", name]).get();
    let deadline = Instant::now() + Duration::from_secs(60);
    while frames() < total {
        assert!(Instant::now() < deadline, "{name} got {} of {total} frames", frames());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens channel `ch` with the source and the ladder's `rungs`, attaches the ladder to it and
/// serves it over HTTP on loopback: (the stream's handle, the origin's base URL).
async fn serve(video: &VideoConfig, rungs: &[LadderRendition], run: &mut Box<dyn LadderRun>) -> (LiveHandle, String) {
    let config = RenditionConfig::default();
    let mut renditions = vec![LiveRendition::new(Rendition::new(config.clone(), Some(video.clone()), None).unwrap())];
    for rung in rungs {
        let config = RenditionConfig { name: rung.name.clone(), ..config.clone() };
        renditions.push(LiveRendition::new(Rendition::new(config, Some(rung.video.clone()), None).unwrap()));
    }
    let registry = LiveRegistry::new(RegistryConfig::default(), OriginMetrics::unregistered());
    let live = registry.open("ch", "s", renditions).unwrap();
    run.attach(live.feed());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, routes(registry, OriginConfig::default())).await.unwrap() });
    (live, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ladder_behind_real_time_drops_its_tallest_rung_and_keeps_the_rest() {
    if !testkit::require_tool("ffmpeg") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (video, samples) = input(dir.path());
    let total = samples.len() as u64;
    let metrics = TranscodeMetrics::unregistered();
    let spec = LadderSpec::parse("180p:400,144p:200").unwrap();
    let ladder = TranscodeLadder::new(spec, &HardwareProbe::none(), metrics.clone());
    let source = LadderSource { channel_id: "ch", session_id: "s", video: &video, audio: None };
    let mut run = ladder.start(&source).expect("the ladder starts");
    let rungs = run.renditions();
    let names: Vec<_> = rungs.iter().map(|r| (r.name.as_str(), r.video.width, r.video.height)).collect();
    assert_eq!(names, [("180p", 320, 180), ("144p", 256, 144)]);

    let (live, base) = serve(&video, &rungs, &mut run).await;

    for sample in samples {
        let stale = media::clock::now_millis() - 10_000;
        let _ = live.push_video(0, sample.clone(), stale).unwrap();
        run.video(&sample, stale, None);
    }
    // The last frame of a rung is packaged when its encoder is flushed, at the end of the run.
    drop(run);
    let frames = |name: &str| metrics.frames.with_label_values(&["ch", name]).get();
    wait_frames(&metrics, "144p", total).await;
    assert_eq!(frames("180p"), 0, "the tallest rung was dropped before its first frame");
    assert!(metrics.degrade_events.with_label_values(&["ch", "dropped"]).get() >= 1);
    let master = reqwest::get(format!("{base}/hls/ch/master.m3u8")).await.unwrap().text().await.unwrap();
    assert!(master.contains("source/index.m3u8") && master.contains("144p/index.m3u8"), "{master}");
    assert!(!master.contains("180p/index.m3u8"), "{master}");
    let playlist = reqwest::get(format!("{base}/hls/ch/144p/index.m3u8")).await.unwrap().text().await.unwrap();
    assert!(playlist.contains("seg0.m4s"), "{playlist}");
}

/// `baseMediaDecodeTime` of the video track (id 1) in the first `moof` of a CMAF segment.
fn first_video_tfdt(segment: &[u8]) -> u64 {
    fn boxes(data: &[u8]) -> Vec<(&[u8], &[u8])> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 8 <= data.len() {
            let size = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
            out.push((&data[at + 4..at + 8], &data[at + 8..at + size]));
            at += size.max(8);
        }
        out
    }
    let moof = boxes(segment).into_iter().find(|(k, _)| *k == b"moof").unwrap().1;
    let traf = boxes(moof).into_iter().find(|(k, _)| *k == b"traf").unwrap().1;
    let tfdt = boxes(traf).into_iter().find(|(k, _)| *k == b"tfdt").unwrap().1;
    if tfdt[0] == 1 {
        u64::from_be_bytes(tfdt[4..12].try_into().unwrap())
    } else {
        u64::from(u32::from_be_bytes(tfdt[4..8].try_into().unwrap()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_rung_rejoins_aligned_once_the_ladder_keeps_up() {
    if !testkit::require_tool("ffmpeg") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (video, mut samples) = input(dir.path());
    // Four seconds: the same two seconds again, continuing the timestamps.
    let again: Vec<_> = samples.iter().map(|s| Sample { dts: s.dts + 180_000, ..s.clone() }).collect();
    samples.extend(again);
    let total = samples.len() as u64;
    let metrics = TranscodeMetrics::unregistered();
    // Lag thresholds far from what this small ladder shows on any machine: 10 s behind is
    // behind, anything under 5 s keeps up; come back at once, never drop twice.
    let policy =
        DegradePolicy { drop_lag_ms: 8_000, calm_lag_ms: 5_000, drop_cooldown_ms: 3_600_000, readmit_after_ms: 0 };
    let spec = LadderSpec::parse("180p:400,144p:200").unwrap();
    let ladder = TranscodeLadder::new(spec, &HardwareProbe::none(), metrics.clone()).with_degrade_policy(policy);
    let source = LadderSource { channel_id: "ch", session_id: "s", video: &video, audio: None };
    let mut run = ladder.start(&source).expect("the ladder starts");
    let rungs = run.renditions();
    let (live, base) = serve(&video, &rungs, &mut run).await;

    // The first second arrives ten seconds late, the rest on time. What the ingest hands the
    // ladder is what `Publish` hands it: the sample, its wall clock, and the segment it opened.
    let start = media::clock::now_millis();
    for (i, sample) in samples.into_iter().enumerate() {
        let late = if i < 30 { 10_000 } else { 0 };
        let now = start + (i as i64 * 100 / 3) - late;
        let before = live.open_segment(0);
        let _ = live.push_video(0, sample.clone(), now).unwrap();
        let opened = live.open_segment(0).filter(|msn| sample.keyframe && Some(*msn) != before);
        run.video(&sample, now, opened);
    }
    drop(run);
    let frames = |name: &str| metrics.frames.with_label_values(&["ch", name]).get();
    wait_frames(&metrics, "144p", total).await;
    let events = |event: &str| metrics.degrade_events.with_label_values(&["ch", event]).get();
    assert_eq!((events("dropped"), events("readmitted")), (1, 1));
    let rejoined = frames("180p");
    assert!(rejoined > 0 && rejoined < total, "180p encoded {rejoined} of {total} frames");

    let get = |path: String| {
        let url = format!("{base}{path}");
        async move { reqwest::get(url).await.unwrap().bytes().await.unwrap().to_vec() }
    };
    let master = String::from_utf8(get("/hls/ch/master.m3u8".into()).await).unwrap();
    assert!(master.contains("180p/index.m3u8"), "the rung is listed again: {master}");
    let playlist = String::from_utf8(get("/hls/ch/180p/index.m3u8".into()).await).unwrap();
    let first: u64 = playlist.lines().find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:")).unwrap().parse().unwrap();
    assert!(first >= 1, "the rung restarted at a later segment: {playlist}");
    let source = String::from_utf8(get("/hls/ch/source/index.m3u8".into()).await).unwrap();
    let dated = |p: &str, msn: u64| {
        let lines: Vec<&str> = p.lines().collect();
        let at =
            lines.iter().position(|l| *l == format!("seg{msn}.m4s")).unwrap_or_else(|| panic!("no seg{msn}:\n{p}"));
        lines[..at].iter().rev().find(|l| l.starts_with("#EXT-X-PROGRAM-DATE-TIME")).unwrap().to_string()
    };
    assert_eq!(dated(&playlist, first), dated(&source, first), "rejoined segment {first} dated differently");
    let rung_seg = get(format!("/hls/ch/180p/seg{first}.m4s")).await;
    let source_seg = get(format!("/hls/ch/source/seg{first}.m4s")).await;
    assert_eq!(first_video_tfdt(&rung_seg), first_video_tfdt(&source_seg));
}
