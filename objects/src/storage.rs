//! [`ObjectStorage`]: the bucket as the node sees it, keys relative to `--object-prefix`.
//!
//! Built on object_store's `AmazonS3` with path-style requests, which every S3-compatible server
//! (MinIO, Garage, Ceph, s3s) understands without wildcard DNS. Files above
//! [`MULTIPART_THRESHOLD`] go up in parts so a large recording segment never sits whole in memory.

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as StorePath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart,
};
use tokio::io::AsyncReadExt;

use crate::backoff::Backoff;
use crate::config::ObjectConfig;
use crate::error::{Error, Result};
use crate::key;

/// Files larger than this go up as a multipart upload.
pub const MULTIPART_THRESHOLD: u64 = 8 * 1024 * 1024;
/// Multipart part size (S3's minimum is 5 MiB for all parts but the last).
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts of one file in flight at once: bounds memory to about (this + 1) * PART_SIZE per upload.
const PARTS_IN_FLIGHT: usize = 2;
const READ_CHUNK: usize = 1024 * 1024;

/// How [`ObjectStorage::put_file`] retries transient failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { attempts: 5, initial_backoff: Duration::from_millis(200), max_backoff: Duration::from_secs(5) }
    }
}

/// One object in a listing; `key` is relative to the configured prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub last_modified: SystemTime,
    pub e_tag: Option<String>,
}

/// What [`ObjectStorage::put_file`] sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uploaded {
    pub bytes: u64,
    pub multipart: bool,
}

/// A bucket (and prefix) on an S3-compatible store. Cheap to clone.
#[derive(Clone)]
pub struct ObjectStorage {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Clone)]
pub(crate) struct Inner {
    pub(crate) store: AmazonS3,
    pub(crate) config: ObjectConfig,
    /// For the calls object_store does not make (bucket lifecycle).
    pub(crate) http: reqwest::Client,
    retry: RetryPolicy,
}

impl fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = &self.inner.config;
        f.debug_struct("ObjectStorage")
            .field("endpoint", &config.endpoint.as_str())
            .field("bucket", &config.bucket)
            .field("prefix", &config.prefix)
            .finish_non_exhaustive()
    }
}

impl ObjectStorage {
    /// Builds the client; no request is made (the store may be down at start).
    pub fn connect(config: &ObjectConfig) -> Result<Self> {
        // The HTTP client takes the process's rustls provider: ring, as everywhere in the binary
        // (an error only means one is installed already).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let endpoint = config.endpoint.as_str().trim_end_matches('/').to_owned();
        let connect_error =
            |source| Error::Connect { endpoint: endpoint.clone(), bucket: config.bucket.clone(), source };
        let options = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            // Generous: an 8 MiB part over a slow uplink must still fit.
            .with_timeout(Duration::from_secs(120))
            .with_content_type_for_suffix("m3u8", "application/vnd.apple.mpegurl")
            .with_content_type_for_suffix("m4s", "video/iso.segment")
            .with_content_type_for_suffix("mp4", "video/mp4")
            .with_content_type_for_suffix("jpg", "image/jpeg")
            .with_content_type_for_suffix("json", "application/json");
        // object_store's own retries stay short: the uploader keeps retrying on its own schedule,
        // and an unreachable store should show on /healthz within seconds.
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(1),
                base: 2.0,
            },
            max_retries: 2,
            retry_timeout: Duration::from_secs(15),
        };
        let mut builder = AmazonS3Builder::new()
            .with_client_options(options)
            .with_endpoint(endpoint.clone())
            .with_region(config.region.clone())
            .with_bucket_name(config.bucket.clone())
            .with_virtual_hosted_style_request(false)
            .with_allow_http(config.is_plain_http())
            .with_retry(retry);
        builder = match &config.credentials {
            Some(credentials) => builder
                .with_access_key_id(credentials.access_key.clone())
                .with_secret_access_key(credentials.secret_key.expose()),
            // Without keys object_store would ask the cloud instance-metadata address for some.
            None => builder.with_skip_signature(true),
        };
        let store = builder.build().map_err(connect_error)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Connect {
                endpoint: endpoint.clone(),
                bucket: config.bucket.clone(),
                source: object_store::Error::Generic { store: "S3", source: Box::new(e) },
            })?;
        Ok(ObjectStorage {
            inner: Arc::new(Inner { store, config: config.clone(), http, retry: RetryPolicy::default() }),
        })
    }

    /// Replaces how [`put_file`](Self::put_file) retries.
    pub fn with_retry(self, retry: RetryPolicy) -> Self {
        let mut inner = Arc::unwrap_or_clone(self.inner);
        inner.retry = retry;
        ObjectStorage { inner: Arc::new(inner) }
    }

    pub fn config(&self) -> &ObjectConfig {
        &self.inner.config
    }

    /// Where clients fetch `key`, when `--object-public-endpoint` is set.
    pub fn public_url(&self, key: &str) -> Option<String> {
        self.inner.config.public_url(key)
    }

    /// Uploads `local` as `key`, retrying transient failures per the [`RetryPolicy`].
    pub async fn put_file(&self, key: &str, local: &Path) -> Result<Uploaded> {
        let retry = self.inner.retry;
        let mut backoff = Backoff::new(retry.initial_backoff, retry.max_backoff);
        let mut attempt = 1;
        loop {
            match self.put_file_once(key, local).await {
                Err(error) if error.is_transient() && attempt < retry.attempts => {
                    let wait = backoff.next_delay();
                    tracing::debug!(key, attempt, ?wait, %error, "upload failed, retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    /// One attempt: a single PUT, or a multipart upload (aborted on failure) above the threshold.
    pub async fn put_file_once(&self, key: &str, local: &Path) -> Result<Uploaded> {
        let location = self.location(key)?;
        let size = tokio::fs::metadata(local).await.map_err(|e| Error::local(local, e))?.len();
        let store_error = |source| Error::Store { op: "put", key: key.to_owned(), source };
        if size <= MULTIPART_THRESHOLD {
            let data = tokio::fs::read(local).await.map_err(|e| Error::local(local, e))?;
            let bytes = data.len() as u64;
            self.inner.store.put(&location, PutPayload::from(data)).await.map_err(store_error)?;
            return Ok(Uploaded { bytes, multipart: false });
        }

        let mut file = tokio::fs::File::open(local).await.map_err(|e| Error::local(local, e))?;
        let upload = self.inner.store.put_multipart(&location).await.map_err(store_error)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut bytes = 0u64;
        loop {
            if let Err(source) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                abort(writer, key).await;
                return Err(store_error(source));
            }
            let mut chunk = BytesMut::with_capacity(READ_CHUNK);
            match file.read_buf(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => {
                    bytes += n as u64;
                    writer.put(chunk.freeze());
                }
                Err(e) => {
                    abort(writer, key).await;
                    return Err(Error::local(local, e));
                }
            }
        }
        // `finish` aborts the upload itself when a part or the completion fails.
        writer.finish().await.map_err(store_error)?;
        Ok(Uploaded { bytes, multipart: true })
    }

    pub async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let location = self.location(key)?;
        self.inner.store.put(&location, PutPayload::from(data)).await.map(drop).map_err(|source| Error::Store {
            op: "put",
            key: key.to_owned(),
            source,
        })
    }

    pub async fn get(&self, key: &str) -> Result<Bytes> {
        let location = self.location(key)?;
        let result = self.inner.store.get(&location).await.map_err(|e| self.map_error("get", key, e))?;
        result.bytes().await.map_err(|e| self.map_error("get", key, e))
    }

    /// Bytes `range` (end exclusive) of `key`.
    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let location = self.location(key)?;
        self.inner.store.get_range(&location, range).await.map_err(|e| self.map_error("get_range", key, e))
    }

    /// Size and date of `key`; [`Error::NotFound`] when it does not exist.
    pub async fn head(&self, key: &str) -> Result<ObjectInfo> {
        let location = self.location(key)?;
        let meta = self.inner.store.head(&location).await.map_err(|e| self.map_error("head", key, e))?;
        Ok(self.info(meta))
    }

    pub async fn exists(&self, key: &str) -> Result<bool> {
        match self.head(key).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes `key`; deleting a missing object is not an error (S3 semantics).
    pub async fn delete(&self, key: &str) -> Result<()> {
        let location = self.location(key)?;
        match self.inner.store.delete(&location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(Error::Store { op: "delete", key: key.to_owned(), source }),
        }
    }

    /// Every object under `prefix` (whole segments: `rec1` holds `rec1/a`, not `rec10/a`).
    /// An empty prefix lists everything under the configured prefix.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let location = self.prefix_location(prefix)?;
        let metas: Vec<ObjectMeta> =
            self.inner.store.list(location.as_ref()).try_collect().await.map_err(|source| Error::Store {
                op: "list",
                key: prefix.to_owned(),
                source,
            })?;
        Ok(metas.into_iter().map(|meta| self.info(meta)).collect())
    }

    /// Deletes every object under `prefix` (how a recording is removed) and returns how many.
    /// An empty prefix is refused: it would remove every recording.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize> {
        if prefix.trim_matches('/').is_empty() {
            return Err(Error::InvalidKey { key: prefix.to_owned(), reason: "delete_prefix needs a non-empty prefix" });
        }
        let location = self.prefix_location(prefix)?;
        let store_error = |source| Error::Store { op: "delete_prefix", key: prefix.to_owned(), source };
        let locations = self.inner.store.list(location.as_ref()).map_ok(|meta| meta.location).boxed();
        let deleted: Vec<StorePath> =
            self.inner.store.delete_stream(locations).try_collect().await.map_err(store_error)?;
        Ok(deleted.len())
    }

    /// `key` under the configured prefix, checked.
    pub(crate) fn location(&self, key: &str) -> Result<StorePath> {
        let invalid = |reason| Error::InvalidKey { key: key.to_owned(), reason };
        key::check(key).map_err(invalid)?;
        let full = format!("{}{key}", self.inner.config.prefix);
        if full.len() > key::MAX_KEY_LEN {
            return Err(invalid("longer than 1024 bytes with the prefix"));
        }
        StorePath::parse(full).map_err(|_| invalid("not a valid object path"))
    }

    fn prefix_location(&self, prefix: &str) -> Result<Option<StorePath>> {
        let relative =
            key::normalize_prefix(prefix).map_err(|reason| Error::InvalidKey { key: prefix.to_owned(), reason })?;
        let full = format!("{}{relative}", self.inner.config.prefix);
        let full = full.trim_end_matches('/');
        if full.is_empty() {
            return Ok(None);
        }
        StorePath::parse(full)
            .map(Some)
            .map_err(|_| Error::InvalidKey { key: prefix.to_owned(), reason: "not a valid object path" })
    }

    fn info(&self, meta: ObjectMeta) -> ObjectInfo {
        let full = meta.location.as_ref();
        let key = full.strip_prefix(self.inner.config.prefix.as_str()).unwrap_or(full).to_owned();
        ObjectInfo { key, size: meta.size, last_modified: meta.last_modified.into(), e_tag: meta.e_tag }
    }

    fn map_error(&self, op: &'static str, key: &str, source: object_store::Error) -> Error {
        match source {
            object_store::Error::NotFound { .. } => Error::NotFound { key: key.to_owned() },
            source => Error::Store { op, key: key.to_owned(), source },
        }
    }
}

async fn abort(writer: WriteMultipart, key: &str) {
    // Best effort: when the store is down the abort fails too, and the bucket's lifecycle rule
    // (AbortIncompleteMultipartUpload) collects the parts.
    if let Err(error) = writer.abort().await {
        tracing::debug!(key, %error, "could not abort multipart upload");
    }
}
