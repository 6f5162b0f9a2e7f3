//! An edge-only node in front of another node's origin, both real `bitriver` processes joined
//! in one cluster: the edge finds the origin through its catalog replica, keeps serving what it
//! holds when the origin is killed, fails new requests cleanly, and recovers when the origin
//! comes back.
//!
//! Needs ffmpeg; fails naming it when it is missing.

mod common;

use std::time::Duration;

use common::live::{create_channel, publish, rtmp_url, start_with_rtmp, wait_url_body, Encoding};
use common::{cli, NodeProc};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_node_survives_its_origin_being_killed_and_recovers() {
    if !testkit::require_tool("ffmpeg") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut origin = NodeProc::new(root.path(), "origin");
    let rtmp_port = start_with_rtmp(&mut origin, &["--roles", "control,ingest,origin"]).await;
    let (id, key) = create_channel(&origin, "Far").await;

    // An edge-only node joins as a learner.
    let (code, token, err) = cli(&["cluster", "token", "--data", origin.data.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let mut edge = NodeProc::new(root.path(), "edge");
    edge.args = vec![
        "--roles".into(),
        "edge".into(),
        "--join".into(),
        origin.cluster_addr(),
        "--join-token".into(),
        token.trim().into(),
    ];
    edge.start();
    edge.wait_healthy(Duration::from_secs(30)).await;
    let edge_base = format!("http://127.0.0.1:{}", edge.edge_port().await);
    assert!(origin.get("/healthz").await.unwrap().1.contains("\"origin\""));

    let mut publisher =
        publish("flv", &rtmp_url(rtmp_port, &key), 60, Encoding::ZeroLatency, &root.path().join("ffmpeg-1.log"));
    let playlist_url = format!("{edge_base}/hls/{id}/source/index.m3u8");
    let playlist = wait_url_body(&playlist_url, "#EXTINF", Duration::from_secs(30), &[&origin, &edge]).await;
    let segment = playlist.lines().find(|l| l.starts_with("seg")).expect("a segment").to_owned();
    let part = playlist
        .lines()
        .filter(|l| l.starts_with("#EXT-X-PART:"))
        .find_map(|l| l.split("URI=\"").nth(1))
        .and_then(|l| l.split('"').next())
        .expect("a part")
        .to_owned();
    let init = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\""))
        .and_then(|l| l.split('"').next())
        .expect("a header")
        .to_owned();
    let mut held = Vec::new();
    for name in [&segment, &part, &init] {
        let url = format!("{edge_base}/hls/{id}/source/{name}");
        let resp = reqwest::get(&url).await.unwrap();
        assert_eq!(resp.status(), 200, "{url}");
        held.push((url, resp.bytes().await.unwrap()));
    }
    assert!(edge.metric("bitriver_edge_origin_requests_total{kind=\"segment\"}").await.unwrap() >= 1.0);

    // The origin dies. What the edge holds is still served; anything else fails cleanly.
    origin.kill9();
    let _ = publisher.kill().await;
    for (url, body) in &held {
        let resp = reqwest::get(url).await.unwrap();
        assert_eq!(resp.status(), 200, "{url}");
        assert_eq!(&resp.bytes().await.unwrap(), body, "{url}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = reqwest::get(&playlist_url).await.unwrap();
    assert!(matches!(resp.status().as_u16(), 502 | 504), "{}", resp.status());
    assert_eq!(resp.headers()["content-type"], "application/json");
    let error: serde_json::Value = resp.json().await.unwrap();
    assert!(error["error"]["code"].is_string(), "{error}");
    assert!(error["error"]["message"].is_string(), "{error}");

    // The origin comes back on the same addresses and the broadcaster reconnects: the edge serves again.
    origin.start();
    origin.wait_healthy(Duration::from_secs(30)).await;
    let mut publisher =
        publish("flv", &rtmp_url(rtmp_port, &key), 60, Encoding::ZeroLatency, &root.path().join("ffmpeg-2.log"));
    let fresh = wait_url_body(&playlist_url, "#EXTINF", Duration::from_secs(40), &[&origin, &edge]).await;
    assert!(fresh.contains("#EXT-X-PART"), "{fresh}");
    let _ = publisher.kill().await;
}
