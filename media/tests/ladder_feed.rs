//! What a transcoder does to a live stream through `LiveFeed`, over real HTTP: it feeds
//! renditions besides the ingest's handle, unlists a rendition it stopped feeding (the
//! multivariant playlist leaves it out), restarts it at a later media sequence number so it
//! rejoins aligned, and gets `Ended` once the stream is over.

use bytes::Bytes;
use media::cmaf::{Sample, VideoCodec, VideoConfig};
use media::hls::{Rendition, RenditionConfig};
use media::origin::{routes, LiveRegistry, OriginConfig, OriginError, OriginMetrics, RegistryConfig};

const T0: i64 = 1_700_000_000_000;

fn rendition(name: &str) -> Rendition {
    let video = VideoConfig {
        codec: VideoCodec::Avc1,
        sps: vec![vec![0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x2f, 0xf9, 0x70, 0x11]],
        pps: vec![vec![0x68, 0xce, 0x3c, 0x80]],
        width: 640,
        height: 360,
        codec_string: "avc1.42c01e".into(),
    };
    let config = RenditionConfig { name: name.into(), first_msn: 100, ..RenditionConfig::default() };
    Rendition::new(config, Some(video), None).unwrap()
}

/// Frame `i` of a 30 fps stream with a keyframe every second.
fn frame(i: u64) -> Sample {
    let keyframe = i.is_multiple_of(30);
    let mut data = vec![0, 0, 0, 9, if keyframe { 0x65 } else { 0x41 }];
    data.extend(std::iter::repeat_n(i as u8, 8));
    Sample { dts: i * 3000, pts_offset: 0, duration: 3000, keyframe, data: Bytes::from(data) }
}

fn now_of(i: u64) -> i64 {
    T0 + (i * 100 / 3) as i64
}

#[tokio::test]
async fn a_feed_unlists_restarts_and_sees_the_end() {
    let registry = LiveRegistry::new(RegistryConfig::default(), OriginMetrics::unregistered());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = routes(registry.clone(), OriginConfig::default());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let get = |path: String| {
        let url = format!("{base}{path}");
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };

    let handle = registry.open("ch", "s1", vec![rendition("source"), rendition("360p")]).unwrap();
    let feed = handle.feed();
    for i in 0..95 {
        let _ = handle.push_video(0, frame(i), now_of(i)).unwrap();
        let _ = feed.push_video(1, frame(i), now_of(i)).unwrap();
    }
    let master = get("/hls/ch/master.m3u8".into()).await;
    assert!(master.contains("source/index.m3u8") && master.contains("360p/index.m3u8"), "{master}");
    assert_eq!(handle.open_segment(0), Some(103));

    // Dropped by the ladder: no longer offered to new players, still servable.
    feed.set_listed(1, false);
    let master = get("/hls/ch/master.m3u8".into()).await;
    assert!(!master.contains("360p/index.m3u8") && master.contains("source/index.m3u8"), "{master}");
    assert!(get("/hls/ch/360p/index.m3u8".into()).await.contains("seg102.m4s"));

    // The source goes on; the rung rejoins at the segment the next keyframe opens (msn 105).
    for i in 95..150 {
        let _ = handle.push_video(0, frame(i), now_of(i)).unwrap();
    }
    assert_eq!(handle.open_segment(0), Some(104));
    let _ = handle.push_video(0, frame(150), now_of(150)).unwrap();
    assert_eq!(handle.open_segment(0), Some(105));
    feed.restart(1, 105).unwrap();
    feed.set_listed(1, true);
    for i in 150..185 {
        if i > 150 {
            let _ = handle.push_video(0, frame(i), now_of(i)).unwrap();
        }
        let _ = feed.push_video(1, frame(i), now_of(i)).unwrap();
    }
    let playlist = get("/hls/ch/360p/index.m3u8".into()).await;
    assert!(playlist.contains("#EXT-X-MEDIA-SEQUENCE:105") && playlist.contains("seg105.m4s"), "{playlist}");
    assert!(!playlist.contains("seg102.m4s"), "{playlist}");
    let source = get("/hls/ch/source/index.m3u8".into()).await;
    let pdt = |p: &str, msn: u64| {
        let lines: Vec<&str> = p.lines().collect();
        let at = lines.iter().position(|l| *l == format!("seg{msn}.m4s")).unwrap();
        lines[..at].iter().rev().find(|l| l.starts_with("#EXT-X-PROGRAM-DATE-TIME")).unwrap().to_string()
    };
    assert_eq!(pdt(&playlist, 105), pdt(&source, 105));
    assert!(get("/hls/ch/master.m3u8".into()).await.contains("360p/index.m3u8"));

    // The ingest ends the stream: the feed's pushes are refused.
    handle.finish();
    assert!(matches!(feed.push_video(1, frame(185), now_of(185)), Err(OriginError::Ended { .. })));
    assert!(!feed.is_live());
}
