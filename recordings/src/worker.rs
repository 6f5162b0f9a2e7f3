//! What the node holding recordings does in the background, once a second:
//!
//! - **recovery**: a recording still `recording` that the recorder is not writing (the node
//!   was killed or stopped mid-broadcast) is made ready from what its journals hold;
//! - **clips**: a queued clip held here is cut ([`LocalStore::cut_clip`]), then ready or failed
//!   with the reason;
//! - **pictures**: a ready recording without any gets its poster and timeline pictures;
//! - **retention**: a draft older than `--recording-retention-unpublished` (from its end) or a
//!   published recording older than `--recording-retention-published` (from its publication) is
//!   deleted; a deleted recording's files are removed, then its entry (see
//!   [`raft::state::recordings`]), and directories no entry names are removed after a minute.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use raft::state::recordings::{Recording, RecordingKind, RecordingStatus};
use raft::{now_millis, Catalog, Command, UnixMillis};

use crate::mirror::Mirror;
use crate::recorder::Recorder;
use crate::store::{LocalStore, Summary};
use crate::thumbnails::{self, MakeJpeg};

/// Retention: `None` keeps forever (`0` on the command line).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub published: Option<Duration>,
    pub unpublished: Option<Duration>,
}

/// A directory no catalog entry names is removed once it is this old (an entry may be a moment
/// behind its directory).
const ORPHAN_AFTER: Duration = Duration::from_secs(60);

/// Runs the background work until the task is aborted.
pub async fn run(
    catalog: Catalog,
    store: LocalStore,
    recorder: Arc<Recorder>,
    retention: Retention,
    jpeg: Option<MakeJpeg>,
    mirror: Option<Mirror>,
) {
    let mirror = mirror.as_ref();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut orphans_checked = tokio::time::Instant::now();
    // Recordings whose pictures were attempted by this process (a failure is not retried).
    let mut pictured: HashSet<String> = HashSet::new();
    loop {
        tick.tick().await;
        let me = catalog.node_id();
        let mine: Vec<Recording> = catalog.read(|s| s.recordings_on(me).cloned().collect());
        for recording in mine {
            match recording.status {
                RecordingStatus::Recording if !recorder.is_active(&recording.id) => {
                    recover(&catalog, &store, recording, mirror).await;
                }
                RecordingStatus::Queued | RecordingStatus::Processing if recording.kind == RecordingKind::Clip => {
                    cut(&catalog, &store, recording, mirror).await;
                }
                RecordingStatus::Deleting => sweep(&catalog, &store, &recording.id, mirror).await,
                RecordingStatus::Ready
                    if recording.thumbnails == 0 && !expired(&recording, retention, now_millis()) =>
                {
                    if let Some(make) = jpeg.as_ref().filter(|_| pictured.insert(recording.id.clone())) {
                        pictures(&catalog, &store, recording, make.clone(), mirror).await;
                    }
                }
                _ if expired(&recording, retention, now_millis()) => {
                    tracing::info!(recording = %recording.id, "retention: deleting");
                    propose(&catalog, Command::DeleteRecording { id: recording.id.clone() }).await;
                }
                _ => {}
            }
        }
        if orphans_checked.elapsed() >= ORPHAN_AFTER {
            orphans_checked = tokio::time::Instant::now();
            remove_orphans(&catalog, &store, &recorder).await;
        }
    }
}

/// Whether retention deletes `recording` at `now`.
pub fn expired(recording: &Recording, retention: Retention, now: UnixMillis) -> bool {
    let older = |since: UnixMillis, keep: Duration| now.saturating_sub(since) >= keep.as_millis() as i64;
    match (recording.status, recording.published_at) {
        (RecordingStatus::Ready, Some(published)) => retention.published.is_some_and(|keep| older(published, keep)),
        (RecordingStatus::Ready, None) => {
            let since = recording.ended_at.unwrap_or(recording.created_at);
            retention.unpublished.is_some_and(|keep| older(since, keep))
        }
        (RecordingStatus::Failed, _) => retention.unpublished.is_some_and(|keep| older(recording.created_at, keep)),
        _ => false,
    }
}

async fn summary(store: &LocalStore, id: &str) -> std::io::Result<Summary> {
    let (store, id) = (store.clone(), id.to_owned());
    tokio::task::spawn_blocking(move || store.summary(&id)).await.map_err(std::io::Error::other)?
}

/// Queues every file of recording `id` (after a crash or a cut, when it is not known which
/// were sent).
async fn mirror_all(mirror: Option<&Mirror>, store: &LocalStore, id: &str) {
    let Some(mirror) = mirror else { return };
    let (store2, owned) = (store.clone(), id.to_owned());
    let files = tokio::task::spawn_blocking(move || {
        store2.write_playlists(&owned)?;
        store2.files(&owned)
    })
    .await;
    match files {
        Ok(Ok(files)) => mirror.upload(store, id, &files).await,
        Ok(Err(error)) => tracing::warn!(recording = id, %error, "listing the recording for object storage failed"),
        Err(error) => tracing::error!(%error, "mirror task failed"),
    }
}

async fn recover(catalog: &Catalog, store: &LocalStore, mut recording: Recording, mirror: Option<&Mirror>) {
    let summary = match summary(store, &recording.id).await {
        Ok(summary) => summary,
        Err(error) => {
            tracing::error!(recording = %recording.id, %error, "cannot read an interrupted recording");
            return;
        }
    };
    tracing::info!(recording = %recording.id, duration = ?summary.duration,
        "an interrupted recording is ready up to its last complete segment");
    apply_summary(&mut recording, &summary);
    recording.status = RecordingStatus::Ready;
    recording.ended_at.get_or_insert(now_millis());
    let id = recording.id.clone();
    if propose(catalog, Command::PutRecording(Box::new(recording))).await {
        mirror_all(mirror, store, &id).await;
    }
}

fn apply_summary(recording: &mut Recording, summary: &Summary) {
    recording.renditions = summary.renditions.clone();
    recording.duration_ms = summary.duration.as_millis() as u64;
    recording.size_bytes = summary.bytes;
}

async fn cut(catalog: &Catalog, store: &LocalStore, mut clip: Recording, mirror: Option<&Mirror>) {
    if clip.status == RecordingStatus::Queued {
        clip.status = RecordingStatus::Processing;
        if !propose(catalog, Command::PutRecording(Box::new(clip.clone()))).await {
            return;
        }
    }
    let (Some(source), Some(start), Some(end)) = (clip.source_id.clone(), clip.clip_start_ms, clip.clip_end_ms) else {
        return fail(catalog, clip, "the clip names no source or range".into()).await;
    };
    let (store2, id) = (store.clone(), clip.id.clone());
    let result = tokio::task::spawn_blocking(move || {
        store2.cut_clip(&source, &id, Duration::from_millis(start), Duration::from_millis(end))
    })
    .await;
    match result {
        Ok(Ok(cut)) => {
            apply_summary(&mut clip, &cut.summary);
            clip.status = RecordingStatus::Ready;
            clip.ended_at = Some(now_millis());
            tracing::info!(clip = %clip.id, duration_ms = clip.duration_ms, "clip ready");
            let id = clip.id.clone();
            if propose(catalog, Command::PutRecording(Box::new(clip))).await {
                mirror_all(mirror, store, &id).await;
            }
        }
        Ok(Err(error)) => fail(catalog, clip, error.to_string()).await,
        Err(error) => fail(catalog, clip, format!("clip task failed: {error}")).await,
    }
}

async fn pictures(
    catalog: &Catalog,
    store: &LocalStore,
    mut recording: Recording,
    make: MakeJpeg,
    mirror: Option<&Mirror>,
) {
    let (store2, id) = (store.clone(), recording.id.clone());
    match tokio::task::spawn_blocking(move || thumbnails::make_timeline(&store2, &id, &make)).await {
        Ok(Ok(0)) => {}
        Ok(Ok(count)) => {
            recording.thumbnails = count;
            let id = recording.id.clone();
            propose(catalog, Command::PutRecording(Box::new(recording))).await;
            if let Some(mirror) = mirror {
                let files: Vec<String> = (0..count).map(|n| format!("thumb{n}.jpg")).collect();
                mirror.upload(store, &id, &files).await;
            }
        }
        Ok(Err(error)) => tracing::warn!(recording = %recording.id, %error, "no pictures for the recording"),
        Err(error) => tracing::error!(%error, "picture task failed"),
    }
}

async fn fail(catalog: &Catalog, mut clip: Recording, reason: String) {
    tracing::warn!(clip = %clip.id, %reason, "clip failed");
    clip.status = RecordingStatus::Failed;
    clip.failure = Some(reason);
    propose(catalog, Command::PutRecording(Box::new(clip))).await;
}

async fn sweep(catalog: &Catalog, store: &LocalStore, id: &str, mirror: Option<&Mirror>) {
    // Objects first: if the store is down, nothing is removed and the next round tries again.
    if let Some(mirror) = mirror {
        if let Err(error) = mirror.remove(id).await {
            tracing::warn!(recording = %id, %error, "deleting the recording's objects failed; retrying");
            return;
        }
    }
    let (store, owned) = (store.clone(), id.to_owned());
    match tokio::task::spawn_blocking(move || store.remove(&owned)).await {
        Ok(Ok(())) => {
            tracing::info!(recording = %id, "recording deleted");
            propose(catalog, Command::ForgetRecording { id: id.to_owned() }).await;
        }
        Ok(Err(error)) => tracing::error!(recording = %id, %error, "removing a deleted recording's files failed"),
        Err(error) => tracing::error!(%error, "sweep task failed"),
    }
}

async fn remove_orphans(catalog: &Catalog, store: &LocalStore, recorder: &Recorder) {
    let listing = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.list()).await
    };
    let Ok(Ok(on_disk)) = listing else { return };
    for (id, changed) in on_disk {
        let named = catalog.read(|s| s.recording(&id).is_some());
        let old = SystemTime::now().duration_since(changed).is_ok_and(|age| age >= ORPHAN_AFTER);
        if !named && old && !recorder.is_active(&id) {
            tracing::warn!(recording = %id, "removing files no recording names");
            let store = store.clone();
            let _ = tokio::task::spawn_blocking(move || store.remove(&id)).await;
        }
    }
}

/// Proposes `command`; whether it was applied.
async fn propose(catalog: &Catalog, command: Command) -> bool {
    match catalog.propose(command).await {
        Ok(_) => true,
        Err(error) => {
            tracing::warn!(%error, "recording update not applied; retrying on the next round");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(ended: UnixMillis, published: Option<UnixMillis>) -> Recording {
        Recording {
            id: "r".into(),
            channel_id: "c".into(),
            owner_id: "u".into(),
            title: String::new(),
            kind: RecordingKind::Broadcast,
            status: RecordingStatus::Ready,
            failure: None,
            session_ids: vec![],
            source_id: None,
            clip_start_ms: None,
            clip_end_ms: None,
            node_id: 1,
            renditions: vec![],
            duration_ms: 0,
            size_bytes: 0,
            thumbnails: 0,
            created_at: 0,
            ended_at: Some(ended),
            published_at: published,
        }
    }

    #[test]
    fn drafts_age_from_their_end_published_ones_from_publication() {
        let retention =
            Retention { published: Some(Duration::from_secs(10)), unpublished: Some(Duration::from_secs(2)) };
        assert!(!expired(&ready(1_000, None), retention, 2_999));
        assert!(expired(&ready(1_000, None), retention, 3_000));
        assert!(!expired(&ready(1_000, Some(5_000)), retention, 14_999));
        assert!(expired(&ready(1_000, Some(5_000)), retention, 15_000));
        let keep = Retention::default();
        assert!(!expired(&ready(0, None), keep, i64::MAX));
        let on_air = Recording { status: RecordingStatus::Recording, ..ready(0, None) };
        assert!(!expired(&on_air, retention, i64::MAX));
    }
}
