//! The upload queue on disk: one small marker file per pending upload.
//!
//! The recording files themselves are the spool (they stay where the recorder wrote them); a
//! marker `{seq}.upload` names the key, the file and its size. A marker is written (and synced)
//! before `enqueue` returns and removed once the object is in the bucket, so after a crash or a
//! restart every marker left is an upload still owed. Uploading twice is harmless (same key,
//! same bytes), losing one is not: hence write-then-rename and a directory sync on enqueue, and
//! no sync on removal.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const EXTENSION: &str = "upload";

/// One pending upload, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Marker {
    pub(crate) key: String,
    pub(crate) path: PathBuf,
    pub(crate) size: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct SpoolDir {
    dir: PathBuf,
}

impl SpoolDir {
    /// Creates the directory if needed and returns the markers found, oldest first. Half-written
    /// markers (a crash between write and rename) are removed: their `enqueue` never returned.
    /// Unreadable ones are renamed `*.corrupt` and reported, not fatal.
    pub(crate) fn open(dir: &Path) -> Result<(SpoolDir, Vec<(u64, Marker)>)> {
        fs::create_dir_all(dir).map_err(|e| Error::spool(dir, e))?;
        let mut found = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| Error::spool(dir, e))? {
            let path = entry.map_err(|e| Error::spool(dir, e))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(&path);
                continue;
            }
            let Some(seq) = name.strip_suffix(&format!(".{EXTENSION}")).and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Marker>(&b).map_err(|e| e.to_string()))
            {
                Ok(marker) => found.push((seq, marker)),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "unreadable upload marker set aside");
                    let _ = fs::rename(&path, path.with_extension("corrupt"));
                }
            }
        }
        found.sort_by_key(|(seq, _)| *seq);
        Ok((SpoolDir { dir: dir.to_owned() }, found))
    }

    pub(crate) fn marker_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.{EXTENSION}"))
    }

    /// Writes the marker durably (blocking: call from `spawn_blocking`).
    pub(crate) fn write(&self, seq: u64, marker: &Marker) -> Result<()> {
        let path = self.marker_path(seq);
        let tmp = path.with_extension(format!("{EXTENSION}.tmp"));
        let json = serde_json::to_vec(marker).map_err(|e| Error::spool(&path, io::Error::other(e)))?;
        let write = || -> io::Result<()> {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            // The rename is durable only once the directory is synced.
            fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::spool(&path, e)
        })
    }

    /// Removes the marker once its upload is done (blocking).
    pub(crate) fn remove(&self, seq: u64) -> Result<()> {
        let path = self.marker_path(seq);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::spool(path, e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_survive_a_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, found) = SpoolDir::open(dir.path()).unwrap();
        assert!(found.is_empty());
        let marker =
            |n: u64| Marker { key: format!("rec/{n}.m4s"), path: PathBuf::from(format!("/r/{n}.m4s")), size: n };
        for seq in [3, 1, 12] {
            spool.write(seq, &marker(seq)).unwrap();
        }
        spool.remove(3).unwrap();
        spool.remove(3).unwrap(); // already gone: fine
        fs::write(dir.path().join("00000000000000000009.upload.tmp"), b"{").unwrap();
        fs::write(dir.path().join("00000000000000000010.upload"), b"not json").unwrap();

        let (_, found) = SpoolDir::open(dir.path()).unwrap();
        assert_eq!(found, vec![(1, marker(1)), (12, marker(12))]);
        assert!(!dir.path().join("00000000000000000009.upload.tmp").exists());
        assert!(dir.path().join("00000000000000000010.corrupt").exists());
    }
}
