//! The relay between real catalogs over QUIC on loopback: an origin-role node subscribes to a
//! track an ingest node publishes and packages it; a node whose certificate lacks the origin
//! (and transcode) role is refused by the publisher's listener, whatever it asks.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use media::cmaf::{AudioConfig, Sample, VideoCodec, VideoConfig};
use media::hls::RenditionConfig;
use media::ingest::{TapRun, TapSource, TrackTap};
use media::origin::{LiveRegistry, OriginMetrics, RegistryConfig};
use raft::metrics::CatalogMetrics;
use raft::tls::{ClusterCa, TlsPaths};
use raft::{Catalog, CatalogConfig, JoinConfig};
use relay::quic::{RelayHub, RelayMetrics};

const READY: Duration = Duration::from_secs(30);

async fn start(dir: &Path, roles: &[&str], join: Option<(&Catalog, &Path)>) -> Catalog {
    let mut config = CatalogConfig::local(dir);
    config.roles = roles.iter().map(|r| r.to_string()).collect();
    config.join = join.map(|(member, data)| JoinConfig {
        addr: member.cluster_addr().to_owned(),
        token: ClusterCa::load(&TlsPaths::new(data)).unwrap().join_token(raft::now_millis() / 1000 + 600, 1),
    });
    let catalog = Catalog::start_with_metrics(config, Arc::new(CatalogMetrics::unregistered())).await.unwrap();
    catalog.wait_ready(READY).await.unwrap();
    catalog
}

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

/// Channel `c1` (session `s1`, rendition `source`) published into `hub`, its segments numbered
/// from 5000.
fn publish_c1(hub: &RelayHub) -> Box<dyn TapRun> {
    let packaging = RenditionConfig { first_msn: 5_000, ..RenditionConfig::default() };
    let (video, audio) = (video_config(), audio_config());
    hub.start(&TapSource {
        channel_id: "c1",
        session_id: "s1",
        rendition: "source",
        video: Some(&video),
        audio: Some(&audio),
        packaging: &packaging,
    })
    .expect("the hub relays every publish")
}

/// The segment frame `i` opens: 5000 at frame 0, 5001 at 30, 5002 at 60, ...
fn opened(i: u64) -> Option<u64> {
    i.is_multiple_of(30).then_some(5_000 + i / 30)
}

/// Video frame `i` at 30 fps, a keyframe every 30 frames, 400 bytes.
fn frame(i: u64) -> Sample {
    Sample {
        dts: i * 3000,
        pts_offset: 0,
        duration: 3000,
        keyframe: i.is_multiple_of(30),
        data: Bytes::from(vec![i as u8; 400]),
    }
}

/// `origin` subscribes to c1 on `ingest` in the background, packaging it into a registry of its
/// own; the task ends with the subscription.
async fn subscribe_c1(
    origin: &Catalog,
    ingest: &Catalog,
) -> (LiveRegistry, RelayMetrics, tokio::task::JoinHandle<Result<(), relay::quic::RelayError>>) {
    let live = LiveRegistry::new(RegistryConfig::default(), OriginMetrics::unregistered());
    let metrics = RelayMetrics::unregistered().unwrap();
    let conn = origin.connect_relay(ingest.cluster_addr()).await.unwrap();
    let subscription = tokio::spawn({
        let (live, metrics) = (live.clone(), metrics.clone());
        async move {
            let mut handle = None;
            relay::quic::subscribe(&conn, "c1", &live, &metrics, &mut handle).await
        }
    });
    (live, metrics, subscription)
}

/// Waits (10 s at most) for the subscriber to open c1.
async fn wait_live_c1(live: &LiveRegistry) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !live.is_live("c1") {
        assert!(Instant::now() < deadline, "the origin never opened the relayed channel");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_node_with_the_origin_role_may_subscribe_to_a_relayed_track() {
    let root = tempfile::tempdir().unwrap();
    let (d1, d2, d3) = (root.path().join("ingest"), root.path().join("origin"), root.path().join("edge"));
    let ingest = start(&d1, &["control", "ingest"], None).await;
    let hub_metrics = RelayMetrics::unregistered().unwrap();
    let hub = RelayHub::new(hub_metrics.clone());
    let _served = bitriver_node::relay::serve(&ingest, hub.clone()).expect("the relay is served once");

    // A broadcast published into the hub, as an ingest's LivePublish does.
    let mut run = publish_c1(&hub);
    // Two seconds of video, segments opening at frames 0 and 30 (msn 5000 and 5001).
    for i in 0..60u64 {
        run.video(&frame(i), raft::now_millis(), opened(i));
    }
    // Nobody subscribes yet: the frames are kept for joiners but never encoded for sending.
    assert!(hub_metrics.unsent.get() >= 60, "unsent frames: {}", hub_metrics.unsent.get());
    assert_eq!(hub_metrics.bytes.with_label_values(&["sent"]).get(), 0);

    // An origin joins the cluster, subscribes and packages the track from the newest segment start.
    let origin = start(&d2, &["origin"], Some((&ingest, &d1))).await;
    let (live, metrics, subscription) = subscribe_c1(&origin, &ingest).await;
    wait_live_c1(&live).await;
    assert_eq!(live.session("c1").as_deref(), Some("s1"));
    for i in 60..120u64 {
        run.video(&frame(i), raft::now_millis(), opened(i));
    }
    drop(run);
    let ended = tokio::time::timeout(Duration::from_secs(10), subscription).await.expect("the subscription ends");
    ended.unwrap().expect("a clean end of the broadcast");
    assert_eq!(metrics.diverged.get(), 0);
    assert!(metrics.bytes.with_label_values(&["received"]).get() > 60 * 400);
    assert!(hub_metrics.bytes.with_label_values(&["sent"]).get() > 60 * 400, "live frames went to the subscriber");

    // An edge-only node is a member too, but its certificate names no origin role: refused.
    let edge = start(&d3, &["edge"], Some((&ingest, &d1))).await;
    let conn = edge.connect_relay(ingest.cluster_addr()).await.unwrap();
    let mut handle = None;
    let refused = relay::quic::subscribe(&conn, "c1", &live, &metrics, &mut handle).await.unwrap_err().to_string();
    assert!(refused.contains("neither the origin nor the transcode role"), "{refused}");
    assert!(handle.is_none());
    // ... and it stays refused on the next try.
    let conn = edge.connect_relay(ingest.cluster_addr()).await;
    if let Ok(conn) = conn {
        let again = relay::quic::subscribe(&conn, "c1", &live, &metrics, &mut handle).await;
        assert!(again.is_err());
    }

    for catalog in [edge, origin, ingest] {
        catalog.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_node_keeps_no_replay_and_a_late_origin_joins_at_the_second_keyframe_segment() {
    let root = tempfile::tempdir().unwrap();
    let (d1, d2) = (root.path().join("ingest"), root.path().join("origin"));
    let ingest = start(&d1, &["control", "ingest"], None).await;
    let hub = RelayHub::new(RelayMetrics::unregistered().unwrap());
    let _served = bitriver_node::relay::serve(&ingest, hub.clone()).expect("the relay is served once");
    let _peers = bitriver_node::relay::follow_peers(&ingest, hub.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    while hub.replay_wanted() {
        assert!(Instant::now() < deadline, "a node alone still keeps replays");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut run = publish_c1(&hub);
    for i in 0..60u64 {
        run.video(&frame(i), raft::now_millis(), opened(i));
    }
    assert_eq!(hub.replay_bytes("c1", "source"), Some(0), "nobody could subscribe: nothing held");

    // An origin joins the cluster: the hub keeps replays again.
    let origin = start(&d2, &["origin"], Some((&ingest, &d1))).await;
    while !hub.replay_wanted() {
        assert!(Instant::now() < deadline + READY, "the hub never saw the origin");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (live, metrics, subscription) = subscribe_c1(&origin, &ingest).await;
    // The replay starts at the next keyframe segment (frame 60) but may miss audio queued
    // before it: the subscriber waits for the one after (frame 90).
    for i in 60..90u64 {
        run.video(&frame(i), raft::now_millis(), opened(i));
    }
    assert!(hub.replay_bytes("c1", "source").unwrap() >= 30 * 400, "the replay is kept from frame 60");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!live.is_live("c1"), "the origin opened before a complete join point");
    for i in 90..120u64 {
        run.video(&frame(i), raft::now_millis(), opened(i));
    }
    wait_live_c1(&live).await;
    drop(run);
    let ended = tokio::time::timeout(Duration::from_secs(10), subscription).await.expect("the subscription ends");
    ended.unwrap().expect("a clean end of the broadcast");
    assert_eq!(metrics.diverged.get(), 0);
    // Frames 90..120 came in the join: a whole segment and its parts.
    assert!(metrics.bytes.with_label_values(&["received"]).get() >= 30 * 400);

    for catalog in [origin, ingest] {
        catalog.shutdown().await;
    }
}
