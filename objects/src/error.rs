//! One error type for the crate: each variant says which object or file, and
//! [`Error::is_transient`] says whether trying again can help.

use std::io;
use std::path::PathBuf;

use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// The S3 client could not be built from the configuration.
    #[error("object store for bucket {bucket:?} at {endpoint}: {source}")]
    Connect {
        endpoint: String,
        bucket: String,
        #[source]
        source: object_store::Error,
    },

    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },

    #[error("object {key:?} not found")]
    NotFound { key: String },

    /// A request to the store failed (unreachable, refused, denied...).
    #[error("{op} {key:?}: {source}")]
    Store {
        op: &'static str,
        key: String,
        #[source]
        source: object_store::Error,
    },

    /// The local file to upload could not be read.
    #[error("local file {path}: {source}")]
    LocalFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The spool already holds `pending_bytes` of at most `max_bytes`: the caller keeps the file.
    #[error(
        "upload spool full: {key:?} ({size} bytes) does not fit ({pending_bytes} of {max_bytes} bytes waiting for the store)"
    )]
    SpoolFull { key: String, size: u64, pending_bytes: u64, max_bytes: u64 },

    /// The spool directory could not be read or written.
    #[error("upload spool {path}: {source}")]
    Spool {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The uploader's task has ended (every handle was dropped or the task was aborted).
    #[error("the uploader has stopped")]
    UploaderStopped,

    /// The server does not implement bucket lifecycle configuration.
    #[error("bucket {bucket:?}: the store does not support lifecycle rules (HTTP {status} {code})")]
    LifecycleUnsupported { bucket: String, status: u16, code: String },

    /// Setting the lifecycle rule failed for another reason.
    #[error("bucket {bucket:?}: setting the lifecycle rule failed: {message}")]
    Lifecycle { bucket: String, status: Option<u16>, code: Option<String>, message: String },
}

impl Error {
    /// Whether the same call may succeed later without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Store { source, .. } => is_transient_store_error(source),
            Error::Lifecycle { status, .. } => status.is_none_or(|s| s >= 500 || s == 429),
            Error::LocalFile { source, .. } | Error::Spool { source, .. } => {
                matches!(source.kind(), io::ErrorKind::Interrupted | io::ErrorKind::TimedOut)
            }
            Error::SpoolFull { .. } => true,
            _ => false,
        }
    }

    pub(crate) fn local(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::LocalFile { path: path.into(), source }
    }

    pub(crate) fn spool(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Spool { path: path.into(), source }
    }
}

/// object_store's `Generic` covers connection failures, timeouts and 5xx answers (after its own
/// few retries); the other variants are answers that will not change on their own.
fn is_transient_store_error(error: &object_store::Error) -> bool {
    matches!(error, object_store::Error::Generic { .. } | object_store::Error::JoinError { .. })
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
