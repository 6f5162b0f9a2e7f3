//! The recorder: takes every segment the node's packager completes ([`SegmentSink`]) for the
//! broadcasts this node records, writes it to the [`LocalStore`] and keeps the catalog entry up
//! to date (created with the first segment, duration and size every few seconds, ready when the
//! stream ends). A publisher who comes back within the grace continues the same recording
//! behind a discontinuity.
//!
//! The packager calls the sink under no lock but on its hot path, so the sink only queues; one
//! task writes, in order. If the disk falls behind by more than [`MAX_QUEUED`] segments, newer
//! segments are dropped (and counted) rather than the packager slowed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use hls_names::InitId;
use media::origin::{ClosedSegment, SegmentSink};
use raft::state::recordings::{Recording, RecordingKind, RecordingStatus};
use raft::state::CatalogState;
use raft::{now_millis, Catalog, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::journal::{Entry, RenditionMeta, META};
use crate::mirror::Mirror;
use crate::store::LocalStore;
use crate::thumbnails::LivePosters;
use crate::RecordingMetrics;

/// Segments waiting for the disk before newer ones are dropped.
pub const MAX_QUEUED: usize = 512;

/// Which broadcasts this node records: given the catalog and a channel, whether this node is
/// the one (the channel's primary origin, see the node's placement).
pub type Decide = Arc<dyn Fn(&CatalogState, &str) -> bool + Send + Sync>;

#[derive(Clone)]
pub struct RecorderConfig {
    /// Only these renditions (`--record-renditions`); `None`: all.
    pub renditions: Option<Vec<String>>,
    /// A new session of the channel within this long after the last one ended continues its
    /// recording.
    pub reconnect_grace: Duration,
    /// How often a recording's duration and size go to the catalog while it is on air.
    pub report_every: Duration,
    /// Offered the newest segment of each recorded channel's first rendition, for its live
    /// picture; `None`: no live pictures.
    pub posters: Option<LivePosters>,
    /// The copy in object storage, if configured.
    pub mirror: Option<Mirror>,
}

impl std::fmt::Debug for RecorderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecorderConfig")
            .field("renditions", &self.renditions)
            .field("reconnect_grace", &self.reconnect_grace)
            .field("report_every", &self.report_every)
            .field("posters", &self.posters.is_some())
            .field("mirror", &self.mirror.is_some())
            .finish()
    }
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig {
            renditions: None,
            reconnect_grace: Duration::from_secs(20),
            report_every: Duration::from_secs(5),
            posters: None,
            mirror: None,
        }
    }
}

enum Event {
    Segment(ClosedSegment),
    Ended { channel: String, session: String },
}

/// The sink half, handed to the live registry.
pub struct Recorder {
    events: mpsc::UnboundedSender<Event>,
    queued: Arc<AtomicUsize>,
    active: Arc<Mutex<HashSet<String>>>,
    metrics: RecordingMetrics,
}

impl Recorder {
    /// Whether recording `id` is being written now (the worker leaves those alone).
    pub fn is_active(&self, id: &str) -> bool {
        self.active.lock().unwrap_or_else(PoisonError::into_inner).contains(id)
    }
}

impl SegmentSink for Recorder {
    fn segment(&self, segment: ClosedSegment) {
        if self.queued.fetch_add(1, Ordering::Relaxed) >= MAX_QUEUED {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            self.metrics.dropped_segments.inc();
            tracing::error!(channel = %segment.channel, "recording falls behind (disk too slow): segment dropped");
            return;
        }
        if self.events.send(Event::Segment(segment)).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn ended(&self, channel: &str, session: &str) {
        let _ = self.events.send(Event::Ended { channel: channel.to_owned(), session: session.to_owned() });
    }
}

/// Starts the recorder; the task ends when the registry (every sink clone) is gone.
pub fn start(
    catalog: Catalog,
    store: LocalStore,
    config: RecorderConfig,
    decide: Decide,
    metrics: RecordingMetrics,
) -> (Arc<Recorder>, tokio::task::JoinHandle<()>) {
    let (events, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let active = Arc::new(Mutex::new(HashSet::new()));
    let recorder =
        Arc::new(Recorder { events, queued: queued.clone(), active: active.clone(), metrics: metrics.clone() });
    let writer = Writer {
        catalog,
        store,
        config,
        decide,
        metrics,
        queued,
        active,
        channels: HashMap::new(),
        declined: HashSet::new(),
    };
    (recorder, tokio::spawn(writer.run(rx)))
}

/// Writes a complete recording's playlists as files and queues them with its journals (its
/// segments went as they were written).
pub fn mirror_complete(mirror: Mirror, store: LocalStore, id: String) {
    tokio::spawn(async move {
        let written = {
            let (store, id) = (store.clone(), id.clone());
            tokio::task::spawn_blocking(move || store.write_playlists(&id)).await
        };
        match written {
            Ok(Ok(files)) => mirror.upload(&store, &id, &files).await,
            Ok(Err(error)) => tracing::warn!(recording = %id, %error, "writing the VOD playlists failed"),
            Err(error) => tracing::error!(%error, "playlist task failed"),
        }
    });
}

/// One rendition being written.
#[derive(Default)]
struct Track {
    next_index: u64,
    inits: HashSet<InitId>,
    duration: Duration,
    bytes: u64,
    /// The next segment starts a new timeline (a continued recording).
    discontinuity_next: bool,
}

/// A channel's recording on this node.
struct Active {
    recording: Recording,
    session: String,
    tracks: HashMap<String, Track>,
    ended: Option<Instant>,
    last_report: Instant,
    dirty: bool,
    lead: Option<String>,
}

impl Active {
    fn refresh(&mut self) {
        let r = &mut self.recording;
        r.duration_ms = self.tracks.values().map(|t| t.duration).max().unwrap_or_default().as_millis() as u64;
        r.size_bytes = self.tracks.values().map(|t| t.bytes).sum();
        let mut names: Vec<&String> = self.tracks.keys().collect();
        names.sort_by_key(|n| (n.as_str() != "source", (*n).clone()));
        r.renditions = names.into_iter().cloned().collect();
    }
}

struct Writer {
    catalog: Catalog,
    store: LocalStore,
    config: RecorderConfig,
    decide: Decide,
    metrics: RecordingMetrics,
    queued: Arc<AtomicUsize>,
    active: Arc<Mutex<HashSet<String>>>,
    channels: HashMap<String, Active>,
    /// Sessions this node does not record, decided once.
    declined: HashSet<String>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = rx.recv() => match event {
                    Some(Event::Segment(segment)) => {
                        self.queued.fetch_sub(1, Ordering::Relaxed);
                        self.segment(segment).await;
                    }
                    Some(Event::Ended { channel, session }) => self.ended(&channel, &session).await,
                    None => break,
                },
                _ = tick.tick() => self.housekeeping().await,
            }
        }
        // The registry is gone (shutdown): what is on air stays `recording` until the worker of
        // the next start finalizes it from disk.
    }

    async fn segment(&mut self, closed: ClosedSegment) {
        let closed = Arc::new(closed);
        if let Some(only) = &self.config.renditions {
            if !only.iter().any(|r| **r == *closed.rendition) {
                return;
            }
        }
        let (store, metrics, posters) = (self.store.clone(), self.metrics.clone(), self.config.posters.clone());
        let mirror = self.config.mirror.clone();
        let store_for_mirror = store.clone();
        let Some(active) = self.recording_for(&closed).await else { return };
        let id = active.recording.id.clone();
        let rendition = closed.rendition.to_string();
        let track = active.tracks.entry(rendition.clone()).or_default();
        let first_of_track = track.next_index == 0;
        let entry = Entry {
            index: track.next_index,
            duration: closed.segment.duration,
            discontinuity: (closed.segment.discontinuity || track.discontinuity_next) && !first_of_track,
            init: closed.segment.init_id,
            bytes: closed.segment.byte_len() as u64,
            program_date_time: closed.segment.program_date_time,
        };
        let meta = first_of_track.then(|| RenditionMeta {
            name: rendition.clone(),
            codecs: closed.codecs.clone(),
            width: closed.resolution.map(|r| r.0),
            height: closed.resolution.map(|r| r.1),
        });
        let init = track.inits.insert(entry.init).then(|| closed.init.clone());
        let mut mirrored = Vec::with_capacity(3);
        if meta.is_some() {
            mirrored.push(format!("{rendition}/{META}"));
        }
        if init.is_some() {
            mirrored.push(format!("{rendition}/{}", hls_names::RenditionFile::Init(entry.init)));
        }
        mirrored.push(format!("{rendition}/{}", hls_names::RenditionFile::Segment(entry.index)));
        let mirror_id = id.clone();
        // The parts as they are: written one after the other, never joined into one buffer.
        let parts: Vec<Bytes> = closed.segment.parts.iter().map(|p| p.bytes.clone()).collect();
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if let Some(meta) = meta {
                store.begin_rendition(&id, &meta)?;
            }
            if let Some(init) = init {
                store.write_init(&id, &rendition, entry.init, &init)?;
            }
            store.append_segment(&id, &rendition, &entry, &parts)
        })
        .await;
        let track = active.tracks.get_mut(&*closed.rendition).expect("inserted above");
        match written {
            Ok(Ok(())) => {
                track.next_index += 1;
                track.duration += entry.duration;
                track.bytes += entry.bytes;
                track.discontinuity_next = false;
                active.dirty = true;
                metrics.segments.inc();
                metrics.bytes.inc_by(entry.bytes);
                if let Some(mirror) = &mirror {
                    mirror.upload(&store_for_mirror, &mirror_id, &mirrored).await;
                }
                let lead = active.lead.get_or_insert_with(|| closed.rendition.to_string());
                if let (Some(posters), true) = (&posters, *lead == *closed.rendition) {
                    posters.offer(closed);
                }
            }
            Ok(Err(error)) => {
                // The header may not be there: write it again with the next segment.
                track.inits.remove(&entry.init);
                metrics.write_errors.inc();
                tracing::error!(recording = %active.recording.id, %error, "writing a recorded segment failed");
            }
            Err(error) => tracing::error!(%error, "recording writer task failed"),
        }
    }

    /// The recording `closed` belongs to: the channel's current one, a continued one, a new one,
    /// or none when this node does not record the session.
    async fn recording_for(&mut self, closed: &ClosedSegment) -> Option<&mut Active> {
        let channel = &*closed.channel;
        let session = &*closed.session;
        let continues = match self.channels.get(channel) {
            Some(active) if active.session == session => false,
            Some(active) => active.ended.is_none_or(|at| at.elapsed() < self.config.reconnect_grace),
            None => false,
        };
        let same = self.channels.get(channel).is_some_and(|a| a.session == session);
        if continues {
            let active = self.channels.get_mut(channel).expect("checked");
            tracing::info!(recording = %active.recording.id, %session, "the broadcast resumed: recording continues");
            active.session = session.to_owned();
            active.ended = None;
            active.recording.status = RecordingStatus::Recording;
            active.recording.ended_at = None;
            active.recording.session_ids.push(session.to_owned());
            for track in active.tracks.values_mut() {
                track.discontinuity_next = true;
            }
            self.report(channel).await;
        } else if !same {
            if self.declined.contains(session) {
                return None;
            }
            let decide = self.decide.clone();
            let me = self.catalog.node_id();
            let fresh = self.catalog.read(|s| {
                if !decide(s, channel) {
                    return None;
                }
                let c = s.channel(channel)?;
                Some(Recording {
                    id: hex::encode(rand::random::<[u8; 12]>()),
                    channel_id: c.id.clone(),
                    owner_id: c.owner_id.clone(),
                    title: c.title.clone(),
                    kind: RecordingKind::Broadcast,
                    status: RecordingStatus::Recording,
                    failure: None,
                    session_ids: vec![session.to_owned()],
                    source_id: None,
                    clip_start_ms: None,
                    clip_end_ms: None,
                    node_id: me,
                    renditions: Vec::new(),
                    duration_ms: 0,
                    size_bytes: 0,
                    thumbnails: 0,
                    created_at: now_millis(),
                    ended_at: None,
                    published_at: None,
                })
            });
            let Some(recording) = fresh else {
                self.declined.insert(session.to_owned());
                return None;
            };
            tracing::info!(recording = %recording.id, channel, session, "recording the broadcast");
            self.active.lock().unwrap_or_else(PoisonError::into_inner).insert(recording.id.clone());
            if let Some(previous) = self.channels.insert(
                channel.to_owned(),
                Active {
                    recording,
                    session: session.to_owned(),
                    tracks: HashMap::new(),
                    ended: None,
                    last_report: Instant::now(),
                    dirty: true,
                    lead: None,
                },
            ) {
                self.forget(&previous.recording.id);
            }
            self.metrics.active.set(self.channels.len() as i64);
            self.report(channel).await;
        }
        self.channels.get_mut(channel)
    }

    async fn ended(&mut self, channel: &str, session: &str) {
        let Some(active) = self.channels.get_mut(channel).filter(|a| a.session == session) else { return };
        active.ended = Some(Instant::now());
        if let Some(posters) = &self.config.posters {
            posters.forget(channel);
        }
        active.recording.status = RecordingStatus::Ready;
        active.recording.ended_at = Some(now_millis());
        tracing::info!(recording = %active.recording.id, "broadcast ended: recording ready");
        let id = active.recording.id.clone();
        self.report(channel).await;
        if let Some(mirror) = self.config.mirror.clone() {
            mirror_complete(mirror, self.store.clone(), id);
        }
    }

    /// Sends the channel's recording to the catalog as it stands.
    async fn report(&mut self, channel: &str) {
        let Some(active) = self.channels.get_mut(channel) else { return };
        active.refresh();
        active.last_report = Instant::now();
        let command = Command::PutRecording(Box::new(active.recording.clone()));
        match self.catalog.propose(command).await {
            Ok(_) => {
                if let Some(active) = self.channels.get_mut(channel) {
                    active.dirty = false;
                }
            }
            // Deleted while on air: stop writing it; the sweep removes what was written.
            Err(raft::ProposeError::Rejected(error)) => {
                tracing::warn!(channel, %error, "recording refused by the catalog; no longer recording it");
                if let Some(active) = self.channels.remove(channel) {
                    self.declined.insert(active.session.clone());
                    self.forget(&active.recording.id);
                }
            }
            Err(error) => {
                tracing::warn!(channel, %error, "recording not reported yet (catalog unavailable); will retry")
            }
        }
    }

    async fn housekeeping(&mut self) {
        let due: Vec<String> = self
            .channels
            .iter()
            .filter(|(_, a)| a.dirty && a.last_report.elapsed() >= self.config.report_every)
            .map(|(c, _)| c.clone())
            .collect();
        for channel in due {
            self.report(&channel).await;
        }
        let grace = self.config.reconnect_grace;
        let over: Vec<String> = self
            .channels
            .iter()
            .filter(|(_, a)| !a.dirty && a.ended.is_some_and(|at| at.elapsed() >= grace))
            .map(|(c, _)| c.clone())
            .collect();
        for channel in over {
            if let Some(active) = self.channels.remove(&channel) {
                self.forget(&active.recording.id);
            }
        }
        self.metrics.active.set(self.channels.len() as i64);
    }

    fn forget(&self, id: &str) {
        self.active.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
    }
}
