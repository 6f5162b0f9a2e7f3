//! What a transcoder does to a live stream through `LiveFeed`, over real HTTP: it feeds
//! renditions besides the ingest's handle, unlists a rendition it stopped feeding (the
//! multivariant playlist leaves it out), restarts it at a later media sequence number so it
//! rejoins aligned, and gets `Ended` once the stream is over.

mod common;

use common::{frame_of, now_of, serve, video_config};
use media::cmaf::Sample;
use media::hls::{Rendition, RenditionConfig};
use media::origin::{LiveRegistry, OriginError, OriginMetrics, RegistryConfig};

fn rendition(name: &str) -> Rendition {
    let config = RenditionConfig { name: name.into(), first_msn: 100, ..RenditionConfig::default() };
    Rendition::new(config, Some(video_config()), None).unwrap()
}

/// Frame `i` of a 30 fps stream with a keyframe every second.
fn frame(i: u64) -> Sample {
    frame_of(i, 8)
}

#[tokio::test]
async fn a_feed_unlists_restarts_and_sees_the_end() {
    let registry = LiveRegistry::new(RegistryConfig::default(), OriginMetrics::unregistered());
    let base = serve(registry.clone()).await;
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
