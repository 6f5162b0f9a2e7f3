//! Recordings mirrored to S3-compatible object storage (`--object-*`): every file is queued to
//! the [`objects::Uploader`] as soon as it is written locally (segments as they close; the
//! playlists, journals and pictures when the recording is complete), so the bucket holds a
//! self-contained VOD under `{prefix}recordings/{id}/`. The local copy stays the one this node
//! serves; while the store is unreachable the uploader's spool holds what is pending (bounded,
//! reported by `/healthz`). Deleting a recording deletes its objects before its files.

use crate::store::LocalStore;

/// The bucket side of the recordings.
#[derive(Clone)]
pub struct Mirror {
    uploader: objects::Uploader,
    storage: objects::ObjectStorage,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mirror")
    }
}

/// The object key of `relative` (a path inside recording `id`'s directory), before the prefix.
pub fn key(id: &str, relative: &str) -> String {
    format!("recordings/{id}/{relative}")
}

impl Mirror {
    pub fn new(uploader: objects::Uploader, storage: objects::ObjectStorage) -> Self {
        Mirror { uploader, storage }
    }

    /// Queues `relative` files of recording `id` for upload. A full spool or a missing file is
    /// logged (the file stays on local disk) and does not stop the caller.
    pub async fn upload(&self, store: &LocalStore, id: &str, relative: &[String]) {
        for name in relative {
            let Ok(path) = store.file(id, name) else { continue };
            if let Err(error) = self.uploader.enqueue(&key(id, name), &path).await {
                tracing::warn!(recording = id, file = %name, %error, "not mirrored to object storage");
            }
        }
    }

    /// Deletes recording `id`'s objects.
    pub async fn remove(&self, id: &str) -> Result<usize, objects::Error> {
        self.storage.delete_prefix(&key(id, "")).await
    }

    pub fn status(&self) -> objects::UploaderStatus {
        self.uploader.status()
    }
}
