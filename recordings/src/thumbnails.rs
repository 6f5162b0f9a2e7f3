//! Still pictures: a live channel's poster, refreshed from its newest source segment every
//! [`LIVE_EVERY`], and a recording's poster plus pictures along its timeline, made once it is
//! ready. Decoding is the node's business (FFmpeg in-process, see the `transcode` crate): this
//! module takes it as a [`MakeJpeg`], so the choice of frames and files is tested without it.

use std::sync::Arc;
use std::time::Duration;

use hls_names::RenditionFile;

use crate::journal::Entry;
use crate::store::LocalStore;

/// A JPEG of the first keyframe of `media` (CMAF fragments) with header `init`.
pub type MakeJpeg = Arc<dyn Fn(&[u8], &[u8]) -> Result<Vec<u8>, String> + Send + Sync>;

/// How often a live channel's poster is refreshed.
pub const LIVE_EVERY: Duration = Duration::from_secs(10);

/// Where along a recording its pictures are taken (fractions of its duration); the first is the
/// poster (a little in, past a fade-in or a black first frame).
pub const TIMELINE: [f64; 5] = [0.1, 0.3, 0.5, 0.7, 0.9];

/// The segments whose first frames make the pictures at [`TIMELINE`]; fewer for a short
/// recording (never the same segment twice).
pub fn timeline_segments(entries: &[Entry]) -> Vec<usize> {
    let total: Duration = entries.iter().map(|e| e.duration).sum();
    let mut picked: Vec<usize> = Vec::new();
    for fraction in TIMELINE {
        let at = total.mul_f64(fraction);
        let mut start = Duration::ZERO;
        let index = entries.iter().position(|e| {
            start += e.duration;
            start > at
        });
        if let Some(index) = index.filter(|i| !picked.contains(i)) {
            picked.push(index);
        }
    }
    picked
}

/// Makes recording `id`'s pictures from its first rendition (`thumb0.jpg` the poster); returns
/// how many were written.
pub fn make_timeline(store: &LocalStore, id: &str, make: &MakeJpeg) -> Result<u32, String> {
    let renditions = store.renditions(id).map_err(|e| e.to_string())?;
    let Some((meta, entries)) = renditions.into_iter().find(|(_, e)| !e.is_empty()) else {
        return Ok(0);
    };
    let mut written = 0;
    for index in timeline_segments(&entries) {
        let entry = &entries[index];
        let read = |file| {
            let path = store.object(id, &meta.name, file).ok_or_else(|| format!("{file} missing"))?;
            std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
        };
        let jpeg = make(&read(RenditionFile::Init(entry.init))?, &read(RenditionFile::Segment(entry.index))?)?;
        store.write_thumbnail(id, written, &jpeg).map_err(|e| e.to_string())?;
        written += 1;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use hls_names::InitId;

    use super::*;

    fn entries(seconds: &[u64]) -> Vec<Entry> {
        seconds
            .iter()
            .enumerate()
            .map(|(i, s)| Entry {
                index: i as u64,
                duration: Duration::from_secs(*s),
                discontinuity: false,
                init: InitId(1),
                bytes: 1,
                program_date_time: 0,
            })
            .collect()
    }

    #[test]
    fn pictures_spread_along_the_timeline() {
        assert_eq!(timeline_segments(&entries(&[1; 20])), [2, 6, 10, 14, 18]);
        assert_eq!(timeline_segments(&entries(&[1, 1])), [0, 1], "a short recording: each segment once");
        assert!(timeline_segments(&[]).is_empty());
    }

    #[test]
    fn the_timeline_is_written_from_the_first_rendition() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("recordings")).unwrap();
        let meta =
            crate::journal::RenditionMeta { name: "source".into(), codecs: String::new(), width: None, height: None };
        store.begin_rendition("r", &meta).unwrap();
        store.write_init("r", "source", InitId(1), b"I").unwrap();
        for entry in entries(&[1; 10]) {
            store.append_segment("r", "source", &entry, format!("S{}", entry.index).as_bytes()).unwrap();
        }
        let make: MakeJpeg = Arc::new(|init, media| Ok([init, b"+", media].concat()));
        assert_eq!(make_timeline(&store, "r", &make).unwrap(), 5);
        assert_eq!(std::fs::read(store.thumbnail_path("r", 0).unwrap()).unwrap(), b"I+S1");
        let failing: MakeJpeg = Arc::new(|_, _| Err("no keyframe".into()));
        assert_eq!(make_timeline(&store, "r", &failing), Err("no keyframe".into()));
    }
}
