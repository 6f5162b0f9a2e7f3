//! Recordings mirrored to S3-compatible object storage, against a real server (s3s-fs, see
//! `testkit::s3`): every file lands in the bucket under the prefix as it is written; the server
//! killed mid-broadcast and restarted loses nothing (the node's spool holds what waits, and
//! `/healthz` says so); deleting the recording deletes its objects.
//!
//! Needs ffmpeg, ffprobe and s3s-fs (objects/install-s3s-fs.sh); fails naming a missing one.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::live::{create_channel, publish, rtmp_url, start_with_rtmp, Encoding, MEDIA_TOOLS};
use common::{get_json, NodeProc};
use serde_json::Value;
use testkit::s3::{S3Server, ACCESS_KEY, BUCKET, SECRET_KEY};

const PREFIX: &str = "tenant1/";

/// Waits up to `limit` for `/healthz`'s objects component to satisfy `check`.
async fn wait_objects(node: &NodeProc, what: &str, limit: Duration, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let health = get_json(node, "/healthz").await;
        let objects = &health["components"]["objects"];
        if check(objects) {
            return objects.clone();
        }
        assert!(Instant::now() < deadline, "{what}: {objects}\n{}", node.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every file of a local recording directory: (path relative to it, bytes).
fn local_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for item in std::fs::read_dir(&at).unwrap().flatten() {
            let path = item.path();
            if path.is_dir() {
                stack.push(path);
            } else if !path.to_string_lossy().ends_with(".tmp") {
                let relative = path.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.push((relative, std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_land_in_the_bucket_and_survive_a_store_outage() {
    if !testkit::require_tools(MEDIA_TOOLS) {
        return;
    }
    let Some(mut s3) = S3Server::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProc::new(dir.path(), "s3");
    let endpoint = format!("127.0.0.1:{}", s3.port());
    let args = [
        "--object-endpoint",
        &endpoint,
        "--object-access-key",
        ACCESS_KEY,
        "--object-secret-key",
        SECRET_KEY,
        "--object-bucket",
        BUCKET,
        "--object-prefix",
        PREFIX,
        "--object-lifecycle-days",
        "30",
    ];
    let port = start_with_rtmp(&mut node, &args).await;
    let (channel, key) = create_channel(&node, "Mirrored").await;
    let mut publisher =
        publish("flv", &rtmp_url(port, &key), 16, Encoding::ZeroLatency, &dir.path().join("ffmpeg.log"));

    // Segments go up as they are written.
    let deadline = Instant::now() + Duration::from_secs(30);
    let id = loop {
        let list = get_json(&node, &format!("/api/recordings?channelId={channel}")).await;
        let recording = &list["recordings"][0];
        if recording["durationMs"].as_u64().unwrap_or(0) >= 3_000 {
            break recording["id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no recording: {list}\n{}", node.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let in_bucket = Path::new(PREFIX).join("recordings").join(&id);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !s3.objects_under(&in_bucket).iter().any(|(k, _)| k.ends_with(".m4s")) {
        assert!(Instant::now() < deadline, "no segment in the bucket\n{}", node.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The store goes away mid-broadcast: uploads wait in the spool, /healthz says so.
    s3.kill();
    let down = wait_objects(&node, "the outage is not reported", Duration::from_secs(20), |o| {
        o["reachable"] == false && o["pendingUploads"].as_u64().unwrap_or(0) > 0
    })
    .await;
    assert_eq!(down["status"], "degraded", "{down}");
    assert!(down["lastError"].is_string(), "{down}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    s3.restart();

    let status = tokio::time::timeout(Duration::from_secs(40), publisher.wait()).await;
    assert!(matches!(status, Ok(Ok(s)) if s.success()), "ffmpeg: {status:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_json(&node, &format!("/api/recordings/{id}")).await["status"] != "ready" {
        assert!(Instant::now() < deadline, "never ready\n{}", node.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let healthy = wait_objects(&node, "uploads never caught up", Duration::from_secs(60), |o| {
        o["reachable"] == true && o["pendingUploads"] == 0 && o["uploadedTotal"].as_u64().unwrap_or(0) > 10
    })
    .await;
    assert_eq!(healthy["status"], "ok");

    // Nothing lost: every file of the recording is in the bucket, byte for byte, under the
    // prefix (pictures may still be on their way; they are checked by being listed, not here).
    let local = local_files(&node.data.join("recordings").join(&id));
    let remote: Vec<(String, Vec<u8>)> = s3
        .objects_under(&in_bucket)
        .into_iter()
        .map(|(k, b)| (k.strip_prefix(&format!("{}/", in_bucket.display())).unwrap_or(&k).to_owned(), b))
        .collect();
    let mut missing = Vec::new();
    for (name, bytes) in local.iter().filter(|(n, _)| !n.starts_with("thumb")) {
        match remote.iter().find(|(k, _)| k == name) {
            Some((_, copy)) => assert!(copy == bytes, "{name} differs in the bucket"),
            None => missing.push(name.clone()),
        }
    }
    assert!(missing.is_empty(), "not in the bucket: {missing:?} (bucket has {})", remote.len());
    let segments = local.iter().filter(|(n, _)| n.ends_with(".m4s")).count();
    assert!(segments >= 14, "{segments} segments recorded");
    for needed in ["master.m3u8", "source/index.m3u8", "source/segments.tsv"] {
        assert!(remote.iter().any(|(k, _)| k == needed), "{needed} not in the bucket");
    }
    let log = node.log_text();
    assert!(log.contains("does not support lifecycle rules"), "the lifecycle attempt is not reported:\n{log}");

    // Deleting the recording deletes its objects, then its files.
    let deleted = reqwest::Client::new().delete(node.url(&format!("/api/recordings/{id}"))).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !s3.objects_under(&in_bucket).is_empty() || node.data.join("recordings").join(&id).exists() {
        assert!(Instant::now() < deadline, "the deleted recording is still stored\n{}", node.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
