//! ObjectStorage against a real s3s-fs server: uploads (single PUT and multipart), reads,
//! listing, deletion by prefix, and the lifecycle call.

mod common;

use std::time::Instant;

use common::{write_file, ObjectsOf as _, S3Server};
use objects::{Error, ObjectStorage, Secret, MULTIPART_THRESHOLD};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_and_multipart_files_land_under_the_prefix_and_delete_prefix_removes_them() {
    let Some(server) = S3Server::start() else { return };
    let storage = server.storage("tenant1/");
    let local = tempfile::tempdir().unwrap();

    let large_len = 2 * MULTIPART_THRESHOLD as usize + 123_457;
    let files = [
        ("rec1/720p/init.mp4", write_file(local.path(), "init.mp4", 1_432, 1)),
        ("rec1/720p/seg_00001.m4s", write_file(local.path(), "seg_00001.m4s", 734_003, 2)),
        ("rec1/index.m3u8", write_file(local.path(), "index.m3u8", 311, 3)),
        ("rec1/720p/seg_00002.m4s", write_file(local.path(), "big.m4s", large_len, 4)),
    ];
    for (key, (path, bytes)) in &files {
        let started = Instant::now();
        let uploaded = storage.put_file(key, path).await.unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(uploaded.bytes, bytes.len() as u64);
        assert_eq!(uploaded.multipart, bytes.len() as u64 > MULTIPART_THRESHOLD, "{key}");
        if uploaded.multipart {
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "multipart upload of {} bytes to s3s-fs on loopback: {secs:.2} s, {:.0} MiB/s",
                bytes.len(),
                bytes.len() as f64 / secs / 1024.0 / 1024.0
            );
        }
    }
    // A sibling whose name starts like the recording: prefixes are whole segments.
    let (other_path, other_bytes) = write_file(local.path(), "other.m4s", 1000, 5);
    storage.put_file("rec10/720p/seg_00001.m4s", &other_path).await.unwrap();

    for (key, (_, bytes)) in &files {
        let read = storage.get(key).await.unwrap();
        assert!(read.as_ref() == bytes.as_slice(), "{key}: bytes read back differ");
        let on_disk = std::fs::read(server.object_path(&format!("tenant1/{key}"))).unwrap();
        assert!(on_disk == *bytes, "{key}: bytes on the server's disk differ");
        assert_eq!(storage.head(key).await.unwrap().size, bytes.len() as u64);
        assert!(storage.exists(key).await.unwrap());
    }
    let large = &files[3].1 .1;
    let range = storage.get_range("rec1/720p/seg_00002.m4s", 9_000_000..9_000_100).await.unwrap();
    assert_eq!(range.as_ref(), &large[9_000_000..9_000_100]);
    assert!(matches!(storage.get("rec1/missing.m4s").await, Err(Error::NotFound { .. })));
    assert!(!storage.exists("rec1/missing.m4s").await.unwrap());

    let mut listed: Vec<String> = storage.list("rec1").await.unwrap().into_iter().map(|o| o.key).collect();
    listed.sort();
    let mut expected: Vec<String> = files.iter().map(|(key, _)| key.to_string()).collect();
    expected.sort();
    assert_eq!(listed, expected);
    assert_eq!(storage.list("").await.unwrap().len(), files.len() + 1);

    assert!(matches!(storage.delete_prefix("").await, Err(Error::InvalidKey { .. })));
    assert_eq!(storage.delete_prefix("rec1/").await.unwrap(), files.len());
    assert!(storage.list("rec1").await.unwrap().is_empty());
    for (key, _) in &files {
        assert!(!storage.exists(key).await.unwrap(), "{key} survived delete_prefix");
        assert!(!server.object_path(&format!("tenant1/{key}")).exists(), "{key} still on the server's disk");
    }
    assert_eq!(storage.get("rec10/720p/seg_00001.m4s").await.unwrap().as_ref(), other_bytes.as_slice());

    storage.delete("rec10/720p/seg_00001.m4s").await.unwrap();
    storage.delete("rec10/720p/seg_00001.m4s").await.unwrap();
    assert!(!storage.exists("rec10/720p/seg_00001.m4s").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_checked_before_any_request() {
    let Some(server) = S3Server::start() else { return };
    let storage = server.storage("tenant1/");
    for key in ["", "../escape", "/abs", "a//b"] {
        assert!(matches!(storage.get(key).await, Err(Error::InvalidKey { .. })), "{key:?}");
    }
    assert_eq!(storage.public_url("rec1/index.m3u8"), None, "no --object-public-endpoint, no public URL");
}

/// s3s-fs has no lifecycle support: a correctly signed request is answered 501 NotImplemented,
/// which must come back as `LifecycleUnsupported`. A wrong secret must fail the signature check
/// first, which shows the request really is checked and signed right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_on_a_server_without_lifecycle_support() {
    let Some(server) = S3Server::start() else { return };
    let storage = server.storage("tenant1/");
    match storage.apply_lifecycle(30).await {
        Err(Error::LifecycleUnsupported { bucket, status, code }) => {
            assert_eq!((bucket.as_str(), status, code.as_str()), (common::BUCKET, 501, "NotImplemented"));
        }
        other => panic!("expected LifecycleUnsupported, got {other:?}"),
    }

    let mut args = server.args("tenant1/");
    args.object_secret_key = Some(Secret::new("not-the-secret"));
    let wrong = ObjectStorage::connect(&args.validate().unwrap().unwrap()).unwrap();
    match wrong.apply_lifecycle(30).await {
        Err(Error::Lifecycle { status, code, .. }) => {
            assert_eq!((status, code.as_deref()), (Some(403), Some("SignatureDoesNotMatch")));
        }
        other => panic!("expected a signature failure, got {other:?}"),
    }
}

/// Building the client makes no request, so an https store that is down (or absent) at start
/// does not stop the node; secrets stay out of `Debug`.
#[tokio::test]
async fn connect_makes_no_request() {
    let args = objects::ObjectArgs {
        object_endpoint: Some("s3.invalid:9000".to_owned()),
        object_use_ssl: true,
        object_bucket: Some("recordings".to_owned()),
        object_access_key: Some("AKIDEXAMPLE".to_owned()),
        object_secret_key: Some(Secret::new("super-secret-value")),
        object_public_endpoint: Some("https://cdn.example.com".to_owned()),
        ..objects::ObjectArgs::default()
    };
    let storage = ObjectStorage::connect(&args.validate().unwrap().unwrap()).unwrap();
    assert_eq!(storage.config().endpoint.as_str(), "https://s3.invalid:9000/");
    assert_eq!(storage.public_url("rec1/index.m3u8").as_deref(), Some("https://cdn.example.com/rec1/index.m3u8"));
    assert!(!format!("{storage:?}").contains("super-secret-value"));
}
