//! The background uploader: recording files go to the bucket as they are written, and wait on
//! local disk (bounded) while the store is unreachable.
//!
//! ```text
//!  recorder --enqueue(key, file)--> marker in spool dir (synced) --> queue (seq order)
//!      queue --first waiting upload of each key directory, up to `concurrency`--> put_file_once
//!      ok: marker removed, pending bytes freed    failure: back off (capped), try again, forever
//! ```
//!
//! Uploads that share a key directory (`rec1/720p/`) go one at a time in enqueue order, so a
//! playlist never reaches the bucket before the segments it lists. Different directories go in
//! parallel. A later enqueue of a key that is still waiting replaces the waiting one (playlists
//! are rewritten after every segment).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::key;
use crate::spool::{Marker, SpoolDir};
use crate::storage::{ObjectStorage, Uploaded};

/// Key looked up (never written) to learn whether the store answers while there is nothing to upload.
const PROBE_KEY: &str = ".bitriver-probe";

/// Tuning for [`Uploader::start_with`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UploaderOptions {
    /// Uploads in flight at once (across key directories).
    pub concurrency: usize,
    /// First wait after a failed upload; it doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// How often an idle uploader checks that the store answers (for `/healthz`).
    pub probe_interval: Duration,
}

impl Default for UploaderOptions {
    fn default() -> Self {
        UploaderOptions {
            concurrency: 4,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
            probe_interval: Duration::from_secs(30),
        }
    }
}

impl UploaderOptions {
    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }

    pub fn with_probe_interval(mut self, interval: Duration) -> Self {
        self.probe_interval = interval;
        self
    }
}

/// What `/healthz` shows about uploads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UploaderStatus {
    /// The latest request to the store succeeded.
    pub reachable: bool,
    /// Files waiting in the spool (uploading ones included).
    pub pending_uploads: u64,
    pub pending_bytes: u64,
    pub spool_max_bytes: u64,
    /// The latest enqueue was refused for lack of room and nothing has been freed since.
    pub spool_full: bool,
    /// The latest failure, kept after recovery for the operator to read.
    pub last_error: Option<String>,
    pub uploaded_total: u64,
    pub uploaded_bytes_total: u64,
    /// Enqueues refused because the spool was full (those files stay local only).
    pub rejected_total: u64,
    /// Uploads given up because their local file disappeared before it could be sent.
    pub dropped_total: u64,
}

/// Hands finished recording files to the background upload task. Cheap to clone; the task
/// stops once every clone is dropped (pending uploads stay in the spool for the next start).
#[derive(Clone)]
pub struct Uploader {
    shared: Arc<Shared>,
    _handles: Arc<HandleGuard>,
}

impl std::fmt::Debug for Uploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploader").field("status", &self.status()).finish_non_exhaustive()
    }
}

struct Shared {
    state: Mutex<State>,
    spool: SpoolDir,
    storage: ObjectStorage,
    max_bytes: u64,
    /// Wakes the task: new work, or the last handle went away.
    wake: Notify,
    /// Wakes `flush` callers: an upload finished or was given up, or the task stopped.
    progress: Notify,
}

struct Entry {
    key: String,
    path: PathBuf,
    size: u64,
    in_flight: bool,
}

#[derive(Default)]
struct State {
    /// Waiting and in-flight uploads by sequence number (enqueue order).
    entries: BTreeMap<u64, Entry>,
    /// Sequence numbers whose marker is being written (counted in `pending_bytes` already).
    reserved: BTreeSet<u64>,
    next_seq: u64,
    pending_bytes: u64,
    reachable: bool,
    /// Any request to the store has finished, so `reachable` is known.
    contacted: bool,
    last_error: Option<String>,
    uploaded_total: u64,
    uploaded_bytes_total: u64,
    rejected_total: u64,
    dropped_total: u64,
    spool_full: bool,
    /// Every [`Uploader`] handle is gone.
    closed: bool,
    /// The task has ended (or was dropped).
    stopped: bool,
}

impl State {
    /// Marks up to `limit` uploads as in flight: for each key directory, only its oldest entry
    /// may run, and only when it is not running already.
    fn start_ready(&mut self, limit: usize) -> Vec<(u64, String, PathBuf)> {
        let mut seen = HashSet::new();
        let mut ready = Vec::new();
        for (seq, entry) in &self.entries {
            if ready.len() >= limit {
                break;
            }
            if seen.insert(key::parent(&entry.key)) && !entry.in_flight {
                ready.push(*seq);
            }
        }
        ready
            .into_iter()
            .filter_map(|seq| {
                let entry = self.entries.get_mut(&seq)?;
                entry.in_flight = true;
                Some((seq, entry.key.clone(), entry.path.clone()))
            })
            .collect()
    }

    fn remove(&mut self, seq: u64) -> Option<Entry> {
        let entry = self.entries.remove(&seq)?;
        self.pending_bytes = self.pending_bytes.saturating_sub(entry.size);
        Some(entry)
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; if something did, the counters are still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Dropped with the last [`Uploader`] clone: tells the task to stop.
struct HandleGuard(Arc<Shared>);

impl Drop for HandleGuard {
    fn drop(&mut self) {
        self.0.state().closed = true;
        self.0.wake.notify_one();
    }
}

/// Lives inside the task future: however it ends (returned, aborted, dropped unpolled),
/// `flush` callers learn that nothing will make progress any more.
struct StoppedGuard(Arc<Shared>);

impl Drop for StoppedGuard {
    fn drop(&mut self) {
        self.0.state().stopped = true;
        self.0.progress.notify_waiters();
    }
}

impl Uploader {
    /// Opens the spool in `spool_dir` (resuming uploads left by an earlier process) and returns
    /// the handle and the task to spawn. `max_bytes` bounds what may wait for the store.
    /// Reads the spool directory synchronously.
    pub fn start(
        storage: ObjectStorage,
        spool_dir: &Path,
        max_bytes: u64,
    ) -> Result<(Uploader, impl Future<Output = ()> + Send + 'static)> {
        Self::start_with(storage, spool_dir, max_bytes, UploaderOptions::default())
    }

    pub fn start_with(
        storage: ObjectStorage,
        spool_dir: &Path,
        max_bytes: u64,
        options: UploaderOptions,
    ) -> Result<(Uploader, impl Future<Output = ()> + Send + 'static)> {
        let (spool, found) = SpoolDir::open(spool_dir)?;
        let mut state = State::default();
        for (seq, marker) in found {
            state.pending_bytes += marker.size;
            state.next_seq = seq + 1;
            state
                .entries
                .insert(seq, Entry { key: marker.key, path: marker.path, size: marker.size, in_flight: false });
        }
        if !state.entries.is_empty() {
            tracing::info!(
                pending_uploads = state.entries.len(),
                pending_bytes = state.pending_bytes,
                spool = %spool_dir.display(),
                "resuming uploads left in the spool"
            );
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            spool,
            storage,
            max_bytes,
            wake: Notify::new(),
            progress: Notify::new(),
        });
        let uploader = Uploader { shared: shared.clone(), _handles: Arc::new(HandleGuard(shared.clone())) };
        let stopped = StoppedGuard(shared.clone());
        let task = async move {
            let _stopped = stopped;
            run(shared, options).await;
        };
        Ok((uploader, task))
    }

    /// Queues `path` (a complete file) for upload as `key`. Returns once the request is on disk
    /// in the spool; the upload happens in the background. [`Error::SpoolFull`] means the file
    /// was not queued: it stays local only, and the caller should report it.
    pub async fn enqueue(&self, key: &str, path: impl AsRef<Path>) -> Result<()> {
        let shared = &self.shared;
        shared.storage.location(key)?;
        let path = std::path::absolute(path.as_ref()).map_err(|e| Error::local(path.as_ref(), e))?;
        let meta = tokio::fs::metadata(&path).await.map_err(|e| Error::local(&path, e))?;
        if !meta.is_file() {
            return Err(Error::local(&path, std::io::Error::other("not a regular file")));
        }
        let size = meta.len();

        let seq = {
            let mut state = shared.state();
            if state.closed || state.stopped {
                return Err(Error::UploaderStopped);
            }
            // A waiting upload of the same key will be replaced, so its bytes do not count.
            let replaced: u64 = state.entries.values().filter(|e| e.key == key && !e.in_flight).map(|e| e.size).sum();
            let after = state.pending_bytes.saturating_sub(replaced).saturating_add(size);
            if after > shared.max_bytes {
                state.rejected_total += 1;
                state.spool_full = true;
                let pending_bytes = state.pending_bytes;
                drop(state);
                tracing::warn!(key, size, pending_bytes, max_bytes = shared.max_bytes, "upload spool full");
                return Err(Error::SpoolFull { key: key.to_owned(), size, pending_bytes, max_bytes: shared.max_bytes });
            }
            let seq = state.next_seq;
            state.next_seq += 1;
            state.reserved.insert(seq);
            state.pending_bytes += size;
            seq
        };

        let marker = Marker { key: key.to_owned(), path: path.clone(), size };
        let spool = shared.spool.clone();
        let written = tokio::task::spawn_blocking(move || spool.write(seq, &marker))
            .await
            .unwrap_or_else(|e| Err(Error::spool(shared.spool.marker_path(seq), std::io::Error::other(e))));

        let replaced = {
            let mut state = shared.state();
            state.reserved.remove(&seq);
            if let Err(error) = written {
                state.pending_bytes = state.pending_bytes.saturating_sub(size);
                drop(state);
                shared.progress.notify_waiters();
                return Err(error);
            }
            let replaced: Vec<u64> =
                state.entries.iter().filter(|(_, e)| e.key == key && !e.in_flight).map(|(seq, _)| *seq).collect();
            for old in &replaced {
                state.remove(*old);
            }
            state.entries.insert(seq, Entry { key: key.to_owned(), path, size, in_flight: false });
            replaced
        };
        shared.wake.notify_one();
        if !replaced.is_empty() {
            shared.progress.notify_waiters();
            let spool = shared.spool.clone();
            let removed =
                tokio::task::spawn_blocking(move || replaced.iter().try_for_each(|seq| spool.remove(*seq))).await;
            if let Ok(Err(error)) = removed {
                // The new marker is durable already: a stale one only means one extra upload.
                tracing::warn!(key, %error, "could not remove a replaced spool marker");
            }
        }
        Ok(())
    }

    /// Waits until everything enqueued before this call is in the bucket (or given up because
    /// its file vanished). While the store is down this waits: bound it with a timeout.
    pub async fn flush(&self) -> Result<()> {
        let target = self.shared.state().next_seq;
        loop {
            let notified = self.shared.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.shared.state();
                if state.entries.range(..target).next().is_none() && state.reserved.range(..target).next().is_none() {
                    return Ok(());
                }
                if state.stopped {
                    return Err(Error::UploaderStopped);
                }
            }
            notified.await;
        }
    }

    pub fn status(&self) -> UploaderStatus {
        let state = self.shared.state();
        UploaderStatus {
            reachable: state.reachable,
            pending_uploads: (state.entries.len() + state.reserved.len()) as u64,
            pending_bytes: state.pending_bytes,
            spool_max_bytes: self.shared.max_bytes,
            spool_full: state.spool_full,
            last_error: state.last_error.clone(),
            uploaded_total: state.uploaded_total,
            uploaded_bytes_total: state.uploaded_bytes_total,
            rejected_total: state.rejected_total,
            dropped_total: state.dropped_total,
        }
    }
}

enum Job {
    Upload { seq: u64, result: Result<Uploaded> },
    Probe(Result<bool>),
}

async fn upload(shared: Arc<Shared>, seq: u64, key: String, path: PathBuf) -> Job {
    let result = shared.storage.put_file_once(&key, &path).await;
    // Done for good either way: the marker goes before the outcome is reported, so a `flush`
    // that returns leaves no marker behind.
    if result.as_ref().err().is_none_or(is_gone) {
        let spool = shared.spool.clone();
        let removed = tokio::task::spawn_blocking(move || spool.remove(seq)).await;
        if let Ok(Err(error)) = removed {
            tracing::warn!(key, %error, "the spool marker stays: this file will upload again on restart");
        }
    }
    Job::Upload { seq, result }
}

/// The task: starts uploads, collects their outcomes, backs off while the store fails.
async fn run(shared: Arc<Shared>, options: UploaderOptions) {
    let mut jobs = JoinSet::new();
    // Which upload each task is, so even a panicked one frees its entry.
    let mut running: HashMap<tokio::task::Id, u64> = HashMap::new();
    let mut backoff = Backoff::new(options.initial_backoff, options.max_backoff);
    let mut retry_at: Option<Instant> = None;
    let mut probe_at = Some(Instant::now());
    let concurrency = options.concurrency.max(1);

    loop {
        let now = Instant::now();
        if retry_at.is_some_and(|at| now >= at) {
            retry_at = None;
        }
        let started = {
            let mut state = shared.state();
            if state.closed {
                // Dropping `jobs` aborts uploads in flight; their markers stay for the next start.
                return;
            }
            match retry_at {
                Some(_) => Vec::new(),
                None => state.start_ready(concurrency.saturating_sub(running.len())),
            }
        };
        for (seq, key, path) in started {
            let handle = jobs.spawn(upload(shared.clone(), seq, key, path));
            running.insert(handle.id(), seq);
        }
        if jobs.is_empty() && retry_at.is_none() && probe_at.is_some_and(|at| now >= at) {
            let storage = shared.storage.clone();
            jobs.spawn(async move { Job::Probe(storage.exists(PROBE_KEY).await) });
            probe_at = None;
        }

        let timer = match (retry_at, probe_at.filter(|_| jobs.is_empty())) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            joined = jobs.join_next_with_id(), if !jobs.is_empty() => {
                let job = match joined {
                    Some(Ok((id, job))) => {
                        running.remove(&id);
                        job
                    }
                    Some(Err(error)) => {
                        // A panic in an upload is a bug; its entry goes back to waiting.
                        let Some(seq) = running.remove(&error.id()) else { continue };
                        tracing::error!(seq, %error, "upload task failed");
                        let source = object_store::Error::JoinError { source: error };
                        Job::Upload { seq, result: Err(Error::Store { op: "put", key: String::new(), source }) }
                    }
                    None => continue,
                };
                probe_at = Some(Instant::now() + options.probe_interval);
                match job {
                    Job::Probe(result) => note_contact(&shared, result.err()),
                    Job::Upload { seq, result } => {
                        if finish(&shared, seq, result) {
                            backoff.reset();
                        } else if retry_at.is_none() {
                            // Uploads failing together share one backoff step.
                            retry_at = Some(Instant::now() + backoff.next_delay());
                        }
                    }
                }
            }
            () = shared.wake.notified() => {}
            () = sleep_until(timer), if timer.is_some() => {}
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Records the outcome of a request to the store, logging when reachability changes.
fn note_contact(shared: &Shared, error: Option<Error>) {
    let mut state = shared.state();
    let was = state.reachable || !state.contacted;
    state.contacted = true;
    match error {
        None => {
            state.reachable = true;
            if !was {
                tracing::info!("object store reachable");
            }
        }
        Some(error) => {
            state.reachable = false;
            if was {
                tracing::warn!(%error, "object store unreachable; uploads wait in the spool");
            } else {
                tracing::debug!(%error, "object store still unreachable");
            }
            state.last_error = Some(error.to_string());
        }
    }
}

/// Applies an upload's outcome; `true` when it went through (or was given up for good).
fn finish(shared: &Shared, seq: u64, result: Result<Uploaded>) -> bool {
    match result {
        Ok(uploaded) => {
            {
                let mut state = shared.state();
                state.remove(seq);
                state.uploaded_total += 1;
                state.uploaded_bytes_total += uploaded.bytes;
                state.spool_full = false;
            }
            note_contact(shared, None);
            shared.progress.notify_waiters();
            true
        }
        Err(error) if is_gone(&error) => {
            // Nothing can ever upload a file that no longer exists: give it up, loudly.
            tracing::warn!(%error, "upload dropped: its local file is gone");
            {
                let mut state = shared.state();
                state.remove(seq);
                state.dropped_total += 1;
                state.last_error = Some(error.to_string());
            }
            shared.progress.notify_waiters();
            true
        }
        Err(error) => {
            if let Some(entry) = shared.state().entries.get_mut(&seq) {
                entry.in_flight = false;
            }
            match error {
                Error::Store { .. } => note_contact(shared, Some(error)),
                other => {
                    tracing::warn!(error = %other, "upload failed; will retry");
                    shared.state().last_error = Some(other.to_string());
                }
            }
            false
        }
    }
}

fn is_gone(error: &Error) -> bool {
    match error {
        Error::LocalFile { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
        Error::InvalidKey { .. } => true,
        _ => false,
    }
}
