//! Recordings on the local disk, one directory each:
//!
//! ```text
//! {root}/{recording}/{rendition}/init-{id}.mp4     the headers its segments name
//! {root}/{recording}/{rendition}/seg{index}.m4s    the packager's segments, as served live
//! {root}/{recording}/{rendition}/segments.tsv      the journal (see [`crate::journal`])
//! {root}/{recording}/{rendition}/rendition.json    codecs and size
//! {root}/{recording}/thumb{n}.jpg                  poster (0) and thumbnails along the timeline
//! ```
//!
//! A segment's file is renamed into place before its journal line is appended, so the journal
//! never names a file that is not complete. Blocking I/O: call from `spawn_blocking`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use hls_names::{is_name, InitId, RenditionFile};

use crate::journal::{self, Entry, RenditionMeta, JOURNAL, META};

/// The recordings directory of a node (`{data dir}/recordings`).
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

/// What a recording holds on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Renditions with at least one segment, the source first.
    pub renditions: Vec<String>,
    /// The longest rendition's duration.
    pub duration: Duration,
    pub bytes: u64,
}

/// What a clip was cut to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    pub summary: Summary,
}

/// Why a clip could not be cut (shown to its creator).
#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error("the recording has no segments on this node")]
    Empty,
    #[error("the range {start_ms}..{end_ms} ms holds no whole segment")]
    NoSegment { start_ms: u64, end_ms: u64 },
    #[error("writing the clip: {0}")]
    Io(#[from] io::Error),
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("not a valid name: {what:?}"))
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root)?;
        Ok(LocalStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, id: &str) -> io::Result<PathBuf> {
        if !is_name(id) {
            return Err(invalid(id));
        }
        Ok(self.root.join(id))
    }

    fn rendition_dir(&self, id: &str, rendition: &str) -> io::Result<PathBuf> {
        if !is_name(rendition) {
            return Err(invalid(rendition));
        }
        Ok(self.dir(id)?.join(rendition))
    }

    /// Starts a rendition: its directory and description.
    pub fn begin_rendition(&self, id: &str, meta: &RenditionMeta) -> io::Result<()> {
        let dir = self.rendition_dir(id, &meta.name)?;
        fs::create_dir_all(&dir)?;
        let json = serde_json::to_vec_pretty(meta).map_err(io::Error::other)?;
        write_atomically(&dir.join(META), &json)
    }

    /// Writes header `init` unless it is there already.
    pub fn write_init(&self, id: &str, rendition: &str, init: InitId, bytes: &[u8]) -> io::Result<()> {
        let path = self.rendition_dir(id, rendition)?.join(RenditionFile::Init(init).to_string());
        if path.exists() {
            return Ok(());
        }
        write_atomically(&path, bytes)
    }

    /// Writes a segment, then its journal line. The line is what makes the segment part of the
    /// recording (a file without one is in no playlist, clip or upload, and the next segment of
    /// that index overwrites it), so the segment needs no temporary name and rename.
    pub fn append_segment(
        &self,
        id: &str,
        rendition: &str,
        entry: &Entry,
        parts: &[impl AsRef<[u8]>],
    ) -> io::Result<()> {
        let dir = self.rendition_dir(id, rendition)?;
        let mut file = File::create(dir.join(RenditionFile::Segment(entry.index).to_string()))?;
        for part in parts {
            file.write_all(part.as_ref())?;
        }
        let mut journal = OpenOptions::new().create(true).append(true).open(dir.join(JOURNAL))?;
        journal.write_all(entry.line().as_bytes())
    }

    /// A rendition's segments as its journal lists them (empty if it has none).
    pub fn journal(&self, id: &str, rendition: &str) -> io::Result<Vec<Entry>> {
        match fs::read_to_string(self.rendition_dir(id, rendition)?.join(JOURNAL)) {
            Ok(text) => Ok(journal::parse(&text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Every rendition with its journal, `source` first, then by bit rate, highest first.
    pub fn renditions(&self, id: &str) -> io::Result<Vec<(RenditionMeta, Vec<Entry>)>> {
        let dir = self.dir(id)?;
        let mut renditions = Vec::new();
        let listing = match fs::read_dir(&dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(renditions),
            Err(e) => return Err(e),
        };
        for item in listing {
            let item = item?;
            let Ok(json) = fs::read(item.path().join(META)) else { continue };
            let Ok(meta) = serde_json::from_slice::<RenditionMeta>(&json) else { continue };
            let entries = self.journal(id, &meta.name)?;
            renditions.push((meta, entries));
        }
        renditions.sort_by_key(|(meta, entries)| {
            (meta.name != "source", std::cmp::Reverse(journal::peak_bandwidth(entries)), meta.name.clone())
        });
        Ok(renditions)
    }

    /// Renditions, duration and size of what is on disk.
    pub fn summary(&self, id: &str) -> io::Result<Summary> {
        let mut summary = Summary::default();
        for (meta, entries) in self.renditions(id)? {
            if entries.is_empty() {
                continue;
            }
            summary.renditions.push(meta.name);
            summary.duration = summary.duration.max(journal::duration(&entries));
            summary.bytes += entries.iter().map(|e| e.bytes).sum::<u64>();
        }
        Ok(summary)
    }

    /// The file behind a VOD object name, if the recording has it.
    pub fn object(&self, id: &str, rendition: &str, file: RenditionFile) -> Option<PathBuf> {
        let path = self.rendition_dir(id, rendition).ok()?.join(file.to_string());
        path.is_file().then_some(path)
    }

    /// Thumbnail `n` (0: the poster).
    pub fn thumbnail_path(&self, id: &str, n: u32) -> io::Result<PathBuf> {
        Ok(self.dir(id)?.join(format!("thumb{n}.jpg")))
    }

    pub fn write_thumbnail(&self, id: &str, n: u32, jpeg: &[u8]) -> io::Result<()> {
        write_atomically(&self.thumbnail_path(id, n)?, jpeg)
    }

    /// The path of `relative` (`{rendition}/{file}` or a top-level file) in recording `id`.
    pub fn file(&self, id: &str, relative: &str) -> io::Result<PathBuf> {
        if relative.split('/').any(|part| !is_name(part)) {
            return Err(invalid(relative));
        }
        Ok(self.dir(id)?.join(relative))
    }

    /// Every file of recording `id`, relative to its directory.
    pub fn files(&self, id: &str) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for item in fs::read_dir(self.dir(id)?)? {
            let item = item?;
            let name = item.file_name().to_string_lossy().into_owned();
            if item.file_type()?.is_dir() {
                for inner in fs::read_dir(item.path())? {
                    let inner = inner?.file_name().to_string_lossy().into_owned();
                    if !inner.ends_with(".tmp") {
                        out.push(format!("{name}/{inner}"));
                    }
                }
            } else if !name.ends_with(".tmp") {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Writes the VOD playlists (`master.m3u8`, `{rendition}/index.m3u8`) as files, for a copy of
    /// the recording that is served as plain files (object storage); returns them with the
    /// journals, relative to the recording's directory.
    pub fn write_playlists(&self, id: &str) -> io::Result<Vec<String>> {
        let renditions = self.renditions(id)?;
        let mut written = Vec::new();
        if let Some(master) = crate::playlist::multivariant_playlist(&renditions) {
            write_atomically(&self.dir(id)?.join(hls_names::MASTER_PLAYLIST), master.as_bytes())?;
            written.push(hls_names::MASTER_PLAYLIST.to_owned());
        }
        for (meta, entries) in &renditions {
            let Some(text) = crate::playlist::media_playlist(entries) else { continue };
            let dir = self.rendition_dir(id, &meta.name)?;
            write_atomically(&dir.join(hls_names::MEDIA_PLAYLIST), text.as_bytes())?;
            written.push(format!("{}/{}", meta.name, hls_names::MEDIA_PLAYLIST));
            written.push(format!("{}/{JOURNAL}", meta.name));
        }
        Ok(written)
    }

    /// Removes a recording's files; nothing there is fine.
    pub fn remove(&self, id: &str) -> io::Result<()> {
        match fs::remove_dir_all(self.dir(id)?) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The recordings on disk with when they last changed.
    pub fn list(&self) -> io::Result<Vec<(String, SystemTime)>> {
        let mut out = Vec::new();
        for item in fs::read_dir(&self.root)? {
            let item = item?;
            let name = item.file_name().to_string_lossy().into_owned();
            if is_name(&name) && item.file_type()?.is_dir() {
                out.push((name, item.metadata()?.modified()?));
            }
        }
        Ok(out)
    }

    /// Cuts clip `clip` out of recording `source`: the segments from the boundary nearest
    /// `start` to the one nearest `end` of each rendition (segments start on keyframes: no
    /// re-encoding), linked rather than copied where the file system allows.
    pub fn cut_clip(&self, source: &str, clip: &str, start: Duration, end: Duration) -> Result<Cut, ClipError> {
        let renditions = self.renditions(source)?;
        // The clip's range is in the source rendition's time; other renditions are aligned by
        // wall clock (a rung may have joined a segment later).
        let Some((_, lead)) = renditions.iter().find(|(_, e)| !e.is_empty()) else { return Err(ClipError::Empty) };
        let origin = lead[0].program_date_time;
        let out_of_range =
            || ClipError::NoSegment { start_ms: start.as_millis() as u64, end_ms: end.as_millis() as u64 };
        let lead_range = journal::clip_range(lead, start, end).ok_or_else(out_of_range)?;
        self.remove(clip)?;
        for (meta, entries) in &renditions {
            let Some(first) = entries.first() else { continue };
            let shift = Duration::from_millis(u64::try_from(first.program_date_time - origin).unwrap_or(0));
            let range = if std::ptr::eq(entries, lead) {
                lead_range.clone()
            } else {
                match journal::clip_range(entries, start.saturating_sub(shift), end.saturating_sub(shift)) {
                    Some(range) => range,
                    None => continue,
                }
            };
            self.begin_rendition(clip, meta)?;
            let from = self.rendition_dir(source, &meta.name)?;
            let to = self.rendition_dir(clip, &meta.name)?;
            for (index, entry) in entries[range].iter().enumerate() {
                let init = RenditionFile::Init(entry.init).to_string();
                if !to.join(&init).exists() {
                    link_or_copy(&from.join(&init), &to.join(&init))?;
                }
                let name = |i| RenditionFile::Segment(i).to_string();
                link_or_copy(&from.join(name(entry.index)), &to.join(name(index as u64)))?;
                let entry = Entry { index: index as u64, discontinuity: index > 0 && entry.discontinuity, ..*entry };
                let mut journal = OpenOptions::new().create(true).append(true).open(to.join(JOURNAL))?;
                journal.write_all(entry.line().as_bytes())?;
            }
        }
        Ok(Cut { summary: self.summary(clip)? })
    }
}

/// Writes `bytes` to `path` through a temporary name, so readers never see half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    drop(file);
    fs::rename(&tmp, path)
}

fn link_or_copy(from: &Path, to: &Path) -> io::Result<()> {
    if fs::hard_link(from, to).is_err() {
        fs::copy(from, to)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, pdt: i64) -> Entry {
        Entry {
            index,
            duration: Duration::from_secs(1),
            discontinuity: false,
            init: InitId(7),
            bytes: 3,
            program_date_time: pdt,
        }
    }

    fn meta(name: &str) -> RenditionMeta {
        RenditionMeta { name: name.into(), codecs: "avc1.64001f".into(), width: Some(640), height: Some(360) }
    }

    #[test]
    fn a_recording_is_written_listed_cut_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("recordings")).unwrap();
        store.begin_rendition("r1", &meta("source")).unwrap();
        store.begin_rendition("r1", &meta("180p")).unwrap();
        store.write_init("r1", "source", InitId(7), b"init").unwrap();
        store.write_init("r1", "180p", InitId(7), b"init").unwrap();
        for i in 0..10 {
            store.append_segment("r1", "source", &entry(i, 1000 * i as i64), &[&b"ab"[..], &b"c"[..]]).unwrap();
            // The rung joined two segments late.
            if i >= 2 {
                store.append_segment("r1", "180p", &entry(i - 2, 1000 * i as i64), &[b"xyz"]).unwrap();
            }
        }
        let summary = store.summary("r1").unwrap();
        assert_eq!(summary.renditions, ["source", "180p"]);
        assert_eq!((summary.duration, summary.bytes), (Duration::from_secs(10), 54));
        // A segment's parts are written back to back.
        let written = fs::read(store.object("r1", "source", RenditionFile::Segment(9)).unwrap()).unwrap();
        assert_eq!(written, b"abc");
        assert!(store.object("r1", "source", RenditionFile::Segment(10)).is_none());
        assert!(store.object("r1", "..", RenditionFile::Playlist).is_none());

        let cut = store.cut_clip("r1", "c1", Duration::from_secs(3), Duration::from_secs(6)).unwrap();
        assert_eq!(cut.summary.duration, Duration::from_secs(3));
        let rung = store.journal("c1", "180p").unwrap();
        assert_eq!(
            rung.iter().map(|e| e.program_date_time).collect::<Vec<_>>(),
            [3000, 4000, 5000],
            "aligned by clock"
        );
        assert_eq!(fs::read(store.object("c1", "180p", RenditionFile::Segment(0)).unwrap()).unwrap(), b"xyz");
        assert!(matches!(
            store.cut_clip("r1", "c2", Duration::from_secs(30), Duration::from_secs(40)),
            Err(ClipError::NoSegment { .. })
        ));

        let ids: Vec<String> = store.list().unwrap().into_iter().map(|(id, _)| id).collect();
        assert!(ids.contains(&"r1".to_owned()) && ids.contains(&"c1".to_owned()));
        store.remove("r1").unwrap();
        store.remove("r1").unwrap();
        assert!(store.summary("r1").unwrap().renditions.is_empty());
        assert!(store.begin_rendition("../x", &meta("source")).is_err());
    }
}
