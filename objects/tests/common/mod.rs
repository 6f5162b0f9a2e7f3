//! The real S3-compatible test server (`testkit::s3`, s3s-fs) as this crate's tests use it: its
//! flags and client, test files, waits, spool markers.

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use objects::{ObjectArgs, ObjectStorage, Secret, UploaderOptions};

pub(crate) use testkit::s3::{S3Server, ACCESS_KEY, BUCKET, SECRET_KEY};

/// The object storage flags and client of a test server.
pub(crate) trait ObjectsOf {
    fn args(&self, prefix: &str) -> ObjectArgs;
    fn storage(&self, prefix: &str) -> ObjectStorage;
}

impl ObjectsOf for S3Server {
    /// Flags as the node would get them, pointing at this server.
    fn args(&self, prefix: &str) -> ObjectArgs {
        ObjectArgs {
            object_endpoint: Some(format!("127.0.0.1:{}", self.port())),
            object_access_key: Some(ACCESS_KEY.to_owned()),
            object_secret_key: Some(Secret::new(SECRET_KEY)),
            object_bucket: Some(BUCKET.to_owned()),
            object_prefix: prefix.to_owned(),
            ..ObjectArgs::default()
        }
    }

    fn storage(&self, prefix: &str) -> ObjectStorage {
        let config = self.args(prefix).validate().expect("valid flags").expect("endpoint set");
        ObjectStorage::connect(&config).expect("connect")
    }
}

/// Short waits, so tests see recovery quickly.
pub(crate) fn fast_options() -> UploaderOptions {
    UploaderOptions::default()
        .with_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .with_probe_interval(Duration::from_millis(500))
}

/// A file of `len` deterministic pseudo-random bytes (different per `seed`).
pub(crate) fn write_file(dir: &Path, name: &str, len: usize, seed: u64) -> (PathBuf, Vec<u8>) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("dirs");
    }
    std::fs::write(&path, &bytes).expect("write file");
    (path, bytes)
}

/// Polls `condition` until it holds, or fails the test after `limit`.
pub(crate) async fn wait_for(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Upload markers left in a spool directory.
pub(crate) fn markers(spool: &Path) -> usize {
    std::fs::read_dir(spool)
        .map(|entries| {
            entries.filter_map(Result::ok).filter(|e| e.path().extension().is_some_and(|x| x == "upload")).count()
        })
        .unwrap_or(0)
}
