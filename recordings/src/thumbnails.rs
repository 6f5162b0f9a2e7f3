//! Still pictures: a live channel's poster, made when asked for from its newest source segment
//! at most every [`LIVE_EVERY`] ([`LivePosters`]), and a recording's poster plus pictures along
//! its timeline, made once it is ready. Decoding is the node's business (FFmpeg in-process, see the `transcode` crate): this
//! module takes it as a [`MakeJpeg`], so the choice of frames and files is tested without it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hls_names::RenditionFile;
use media::origin::ClosedSegment;

use crate::journal::Entry;
use crate::store::LocalStore;

/// A JPEG of the first keyframe of `media` (CMAF fragments) with header `init`.
pub type MakeJpeg = Arc<dyn Fn(&[u8], &[u8]) -> Result<Vec<u8>, String> + Send + Sync>;

/// How often a live channel's poster may be refreshed.
pub const LIVE_EVERY: Duration = Duration::from_secs(10);

/// Live channels' pictures, decoded when someone asks (a directory tile, a channel card) from
/// the newest segment the recorder saw, at most once per channel per [`LIVE_EVERY`]. Decoding a
/// keyframe takes milliseconds: done for every broadcast as its segments closed, it was about a
/// quarter of a passthrough ingest's CPU, for pictures nobody may look at.
#[derive(Clone)]
pub struct LivePosters {
    make: MakeJpeg,
    made: prometheus::IntCounter,
    channels: Arc<Mutex<HashMap<String, Arc<LiveChannel>>>>,
}

struct LiveChannel {
    newest: Mutex<Arc<ClosedSegment>>,
    /// The last picture and when it was made; held while one is being made, so viewers asking at
    /// once share one decode.
    picture: tokio::sync::Mutex<Option<(Instant, Bytes)>>,
}

impl LivePosters {
    /// `made` counts the decodes.
    pub fn new(make: MakeJpeg, made: prometheus::IntCounter) -> Self {
        LivePosters { make, made, channels: Arc::default() }
    }

    /// `closed` is now the newest segment of its channel's picture rendition (cheap: no decode).
    pub fn offer(&self, closed: Arc<ClosedSegment>) {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        match channels.get(&*closed.channel) {
            Some(channel) => *channel.newest.lock().unwrap_or_else(PoisonError::into_inner) = closed,
            None => {
                let channel =
                    LiveChannel { newest: Mutex::new(closed.clone()), picture: tokio::sync::Mutex::new(None) };
                channels.insert(closed.channel.to_string(), Arc::new(channel));
            }
        }
    }

    /// The broadcast of `channel` ended here: its picture goes.
    pub fn forget(&self, channel: &str) {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner).remove(channel);
    }

    /// The channel's current picture: the last one if younger than [`LIVE_EVERY`], else a new one
    /// from its newest segment (the last one again if that fails). `None`: no broadcast of the
    /// channel is recorded here.
    pub async fn poster(&self, channel: &str) -> Option<Bytes> {
        let live = self.channels.lock().unwrap_or_else(PoisonError::into_inner).get(channel).cloned()?;
        let mut picture = live.picture.lock().await;
        if let Some((_, jpeg)) = picture.as_ref().filter(|(at, _)| at.elapsed() < LIVE_EVERY) {
            return Some(jpeg.clone());
        }
        let segment = live.newest.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let make = self.make.clone();
        match tokio::task::spawn_blocking(move || make(&segment.init, &segment.segment.bytes())).await {
            Ok(Ok(jpeg)) => {
                self.made.inc();
                let jpeg = Bytes::from(jpeg);
                *picture = Some((Instant::now(), jpeg.clone()));
                Some(jpeg)
            }
            Ok(Err(error)) => {
                tracing::debug!(channel, %error, "no live poster from the newest segment");
                picture.as_ref().map(|(_, jpeg)| jpeg.clone())
            }
            Err(error) => {
                tracing::error!(%error, "live poster task failed");
                picture.as_ref().map(|(_, jpeg)| jpeg.clone())
            }
        }
    }
}

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
            store.append_segment("r", "source", &entry, &[format!("S{}", entry.index)]).unwrap();
        }
        let make: MakeJpeg = Arc::new(|init, media| Ok([init, b"+", media].concat()));
        assert_eq!(make_timeline(&store, "r", &make).unwrap(), 5);
        assert_eq!(std::fs::read(store.thumbnail_path("r", 0).unwrap()).unwrap(), b"I+S1");
        let failing: MakeJpeg = Arc::new(|_, _| Err("no keyframe".into()));
        assert_eq!(make_timeline(&store, "r", &failing), Err("no keyframe".into()));
    }
}
