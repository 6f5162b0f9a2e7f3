//! The background uploader against a real s3s-fs server that gets killed (-9) and restarted:
//! nothing enqueued is lost, a restarted process resumes the spool, and the spool is bounded.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{fast_options, markers, wait_for, write_file, ObjectsOf as _, S3Server};
use objects::{Error, ObjectStorage, Uploader};

const GIB: u64 = 1024 * 1024 * 1024;

struct Recording {
    dir: tempfile::TempDir,
    files: Vec<(String, PathBuf, Vec<u8>)>,
}

impl Recording {
    fn new() -> Self {
        Recording { dir: tempfile::tempdir().unwrap(), files: Vec::new() }
    }

    /// Writes a file and remembers what the bucket must end up holding for `key`.
    fn write(&mut self, key: &str, len: usize) -> PathBuf {
        let seed = self.files.len() as u64 + 1;
        let (path, bytes) = write_file(self.dir.path(), key, len, seed);
        self.files.retain(|(k, _, _)| k != key);
        self.files.push((key.to_owned(), path.clone(), bytes));
        path
    }

    async fn assert_all_in_bucket(&self, storage: &ObjectStorage, server: &S3Server, prefix: &str) {
        for (key, _, bytes) in &self.files {
            let read = storage.get(key).await.unwrap_or_else(|e| panic!("{key}: {e}"));
            assert!(read.as_ref() == bytes.as_slice(), "{key}: bucket holds different bytes");
            let on_disk = std::fs::read(server.object_path(&format!("{prefix}{key}"))).unwrap();
            assert!(on_disk == *bytes, "{key}: server disk holds different bytes");
        }
    }
}

fn segment_key(i: usize) -> String {
    let rendition = ["720p", "480p"][i % 2];
    format!("rec1/{rendition}/seg_{i:05}.m4s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_survive_a_store_outage() {
    let Some(mut server) = S3Server::start() else { return };
    let storage = server.storage("tenant1/");
    let spool = tempfile::tempdir().unwrap();
    let (uploader, task) = Uploader::start_with(storage.clone(), spool.path(), GIB, fast_options()).unwrap();
    let task = tokio::spawn(task);
    let mut recording = Recording::new();

    // Before the outage: a run of segments, one of them large enough to go up in parts.
    for i in 0..12 {
        let len = if i == 5 { 12 * 1024 * 1024 } else { 200_000 + i * 1_000 };
        let path = recording.write(&segment_key(i), len);
        uploader.enqueue(&segment_key(i), &path).await.unwrap();
    }
    wait_for("a first upload", Duration::from_secs(10), || uploader.status().uploaded_total >= 1).await;
    server.kill();
    let at_kill = uploader.status();
    eprintln!("at kill -9: {at_kill:?}");

    // During the outage: more segments and a playlist rewritten twice.
    let mut outage_bytes = 0;
    for i in 12..24 {
        let path = recording.write(&segment_key(i), 150_000);
        outage_bytes += 150_000;
        uploader.enqueue(&segment_key(i), &path).await.unwrap();
    }
    for version in 0..2 {
        let path = recording.write("rec1/index.m3u8", 400 + version);
        uploader.enqueue("rec1/index.m3u8", &path).await.unwrap();
    }
    wait_for("the uploader to notice the outage", Duration::from_secs(15), || {
        let status = uploader.status();
        !status.reachable && status.last_error.is_some()
    })
    .await;
    let down = uploader.status();
    eprintln!("during the outage: {down:?}");
    assert!(down.pending_uploads >= 13, "{down:?}");
    assert!(down.pending_bytes >= outage_bytes, "{down:?}");
    assert!(down.uploaded_total < 25);
    assert_eq!(markers(spool.path()) as u64, down.pending_uploads);
    let json = serde_json::to_value(&down).unwrap();
    assert_eq!(json["reachable"], false);
    assert!(json["lastError"].is_string() && json["pendingUploads"].is_u64() && json["spoolMaxBytes"] == GIB);

    server.restart();
    tokio::time::timeout(Duration::from_secs(20), uploader.flush())
        .await
        .expect("flush did not finish within 20 s of the restart")
        .unwrap();
    let after = uploader.status();
    eprintln!("after the restart: {after:?}");
    assert!(after.reachable);
    assert_eq!((after.pending_uploads, after.pending_bytes, after.dropped_total), (0, 0, 0));
    assert!(after.uploaded_total >= 25, "{after:?}");
    assert_eq!(markers(spool.path()), 0);
    recording.assert_all_in_bucket(&storage, &server, "tenant1/").await;

    drop(uploader);
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("task stops with its last handle").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_uploader_resumes_the_spool() {
    let Some(mut server) = S3Server::start() else { return };
    server.kill();
    let storage = server.storage("tenant1/");
    let spool = tempfile::tempdir().unwrap();
    let mut recording = Recording::new();

    let (uploader, task) = Uploader::start_with(storage.clone(), spool.path(), GIB, fast_options()).unwrap();
    let task = tokio::spawn(task);
    let mut bytes = 0;
    for i in 0..6 {
        let path = recording.write(&segment_key(i), 100_000 + i);
        bytes += 100_000 + i as u64;
        uploader.enqueue(&segment_key(i), &path).await.unwrap();
    }
    wait_for("a failed attempt", Duration::from_secs(10), || uploader.status().last_error.is_some()).await;
    assert_eq!(uploader.status().pending_uploads, 6);
    // The process goes away: handle dropped, task aborted mid-retry.
    drop(uploader);
    task.abort();
    let _ = task.await;
    assert_eq!(markers(spool.path()), 6);

    server.restart();
    let (uploader, task) = Uploader::start_with(storage.clone(), spool.path(), GIB, fast_options()).unwrap();
    let resumed = uploader.status();
    assert_eq!((resumed.pending_uploads, resumed.pending_bytes), (6, bytes));
    let task = tokio::spawn(task);
    tokio::time::timeout(Duration::from_secs(20), uploader.flush()).await.expect("flush within 20 s").unwrap();
    assert_eq!(uploader.status().uploaded_total, 6);
    assert_eq!(markers(spool.path()), 0);
    recording.assert_all_in_bucket(&storage, &server, "tenant1/").await;
    drop(uploader);
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_refuses_more() {
    let Some(mut server) = S3Server::start() else { return };
    server.kill();
    let storage = server.storage("");
    let spool = tempfile::tempdir().unwrap();
    let mut recording = Recording::new();
    let (uploader, task) = Uploader::start_with(storage.clone(), spool.path(), 100_000, fast_options()).unwrap();
    let task = tokio::spawn(task);

    for i in 0..2 {
        let path = recording.write(&segment_key(i), 40_000);
        uploader.enqueue(&segment_key(i), &path).await.unwrap();
    }
    let third = recording.write(&segment_key(2), 40_000);
    match uploader.enqueue(&segment_key(2), &third).await {
        Err(Error::SpoolFull { key, size, pending_bytes, max_bytes }) => {
            assert_eq!((key, size, pending_bytes, max_bytes), (segment_key(2), 40_000, 80_000, 100_000));
        }
        other => panic!("expected SpoolFull, got {other:?}"),
    }
    let status = uploader.status();
    assert!(status.spool_full && !status.reachable, "{status:?}");
    assert_eq!((status.pending_uploads, status.pending_bytes, status.spool_max_bytes), (2, 80_000, 100_000));
    assert_eq!(status.rejected_total, 1);
    assert!(third.exists(), "a refused file stays with the caller");
    assert_eq!(markers(spool.path()), 2);

    // Once the store is back and the spool drains, the refused file fits.
    server.restart();
    tokio::time::timeout(Duration::from_secs(20), uploader.flush()).await.expect("flush within 20 s").unwrap();
    assert!(!uploader.status().spool_full);
    uploader.enqueue(&segment_key(2), &third).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), uploader.flush()).await.expect("flush within 20 s").unwrap();
    recording.assert_all_in_bucket(&storage, &server, "").await;
    drop(uploader);
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_file_is_dropped_not_retried_forever() {
    let Some(server) = S3Server::start() else { return };
    let storage = server.storage("");
    let spool = tempfile::tempdir().unwrap();
    let mut recording = Recording::new();
    let (uploader, task) = Uploader::start_with(storage.clone(), spool.path(), GIB, fast_options()).unwrap();
    let path = recording.write("rec1/720p/seg_00001.m4s", 1000);
    // Enqueued before the task runs, then deleted: the upload can never happen.
    uploader.enqueue("rec1/720p/seg_00001.m4s", &path).await.unwrap();
    std::fs::remove_file(&path).unwrap();
    let kept = recording.write("rec1/720p/seg_00002.m4s", 1000);
    uploader.enqueue("rec1/720p/seg_00002.m4s", &kept).await.unwrap();
    let task = tokio::spawn(task);
    tokio::time::timeout(Duration::from_secs(20), uploader.flush()).await.expect("flush within 20 s").unwrap();
    let status = uploader.status();
    assert_eq!((status.dropped_total, status.uploaded_total, status.pending_uploads), (1, 1, 0));
    assert!(status.last_error.unwrap().contains("seg_00001.m4s"));
    assert!(!storage.exists("rec1/720p/seg_00001.m4s").await.unwrap());
    assert!(storage.exists("rec1/720p/seg_00002.m4s").await.unwrap());
    assert_eq!(markers(spool.path()), 0);
    drop(uploader);
    task.await.unwrap();
}
