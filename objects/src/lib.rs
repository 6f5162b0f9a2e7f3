//! S3-compatible object storage for recordings.
//!
//! The recorder writes a recording's CMAF files (init `.mp4`, `.m4s` segments, `.m3u8`
//! playlists, `.jpg` thumbnails) to local disk; with `--object-endpoint` set they also go to a
//! bucket:
//!
//! ```text
//!  ObjectArgs --validate--> ObjectConfig --connect--> ObjectStorage (object_store AmazonS3)
//!  recorder --Uploader::enqueue(key, file)--> spool marker --> background task --> bucket
//!  node: status() for /healthz, flush() when a recording ends, delete_prefix() to remove one,
//!        apply_lifecycle(days) at start for --object-lifecycle-days
//! ```
//!
//! While the store is unreachable files wait where they are, listed by markers in the spool
//! directory, up to `--object-spool-max-bytes`; a restarted process picks them up again.

mod backoff;
mod config;
mod error;
mod key;
mod lifecycle;
mod sigv4;
mod spool;
mod storage;
mod uploader;

pub use config::{ConfigError, Credentials, ObjectArgs, ObjectConfig, Secret, DEFAULT_SPOOL_MAX_BYTES};
pub use error::{Error, Result};
pub use storage::{ObjectInfo, ObjectStorage, RetryPolicy, Uploaded, MULTIPART_THRESHOLD};
pub use uploader::{Uploader, UploaderOptions, UploaderStatus};
