//! Recordings: every broadcast recorded from the packager's own segments, and highlight clips cut
//! from them. The catalog holds what viewers and creators see (title, duration, renditions,
//! whether it is published); the artefacts live on the node named by [`Recording::node_id`],
//! which alone writes them, cuts clips from them and deletes them.
//!
//! Deleting is two steps so that artefacts and entries never outlive one another:
//! [`Command::DeleteRecording`] marks the entry [`RecordingStatus::Deleting`] (hidden at once),
//! the holder removes the files, then [`Command::ForgetRecording`] drops the entry. A crash
//! between the steps leaves a `Deleting` entry that the holder's next sweep finishes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{delete, put, CatalogState, Mutation};
use crate::codec::{self, CodecError};
use crate::command::{ApplyResult, CatalogError, Command, Response};
use crate::types::{NodeId, UnixMillis};

mod key {
    pub(super) const RECORDING: &str = "rec/";
}

/// A broadcast's recording, or a clip cut from one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum RecordingKind {
    Broadcast,
    Clip,
}

/// Where a recording is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum RecordingStatus {
    /// The broadcast is on air and being written.
    Recording,
    /// A clip waiting for its node to cut it.
    Queued,
    /// A clip being cut.
    Processing,
    /// Complete and playable.
    Ready,
    /// A clip that could not be cut ([`Recording::failure`] says why).
    Failed,
    /// Deleted: hidden, its artefacts are being removed.
    Deleting,
}

/// One recording as the catalog holds it (and the API shows it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Recording {
    pub id: String,
    pub channel_id: String,
    /// The channel's owner when it was made (who may publish, clip and delete it).
    pub owner_id: String,
    pub title: String,
    pub kind: RecordingKind,
    pub status: RecordingStatus,
    /// Why a clip failed.
    pub failure: Option<String>,
    /// The broadcast sessions it covers (several when a publisher reconnected within the grace).
    pub session_ids: Vec<String>,
    /// For a clip: the recording it was cut from and the requested range.
    pub source_id: Option<String>,
    pub clip_start_ms: Option<u64>,
    pub clip_end_ms: Option<u64>,
    /// The node holding the artefacts.
    #[cfg_attr(feature = "utoipa", schema(value_type = u64))]
    pub node_id: NodeId,
    pub renditions: Vec<String>,
    pub duration_ms: u64,
    pub size_bytes: u64,
    /// Thumbnails exist: a poster and a few along the timeline.
    pub thumbnails: u32,
    #[cfg_attr(feature = "utoipa", schema(value_type = i64))]
    pub created_at: UnixMillis,
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<i64>))]
    pub ended_at: Option<UnixMillis>,
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<i64>))]
    pub published_at: Option<UnixMillis>,
}

impl Recording {
    pub fn is_published(&self) -> bool {
        self.published_at.is_some()
    }

    /// Listed, playable or on its way to be (not deleted).
    pub fn is_visible(&self) -> bool {
        self.status != RecordingStatus::Deleting
    }
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct RecordingTable {
    recordings: BTreeMap<String, Recording>,
}

fn recording_key(id: &str) -> String {
    format!("{}{id}", key::RECORDING)
}

impl RecordingTable {
    pub(crate) fn load_record(&mut self, key: &str, value: &[u8]) -> Result<bool, CodecError> {
        if !key.starts_with(key::RECORDING) {
            return Ok(false);
        }
        let recording: Recording = codec::decode(value)?;
        self.recordings.insert(recording.id.clone(), recording);
        Ok(true)
    }
}

impl CatalogState {
    pub fn recording(&self, id: &str) -> Option<&Recording> {
        self.recordings.recordings.get(id)
    }

    pub fn recordings(&self) -> impl Iterator<Item = &Recording> {
        self.recordings.recordings.values()
    }

    /// The recordings whose artefacts `node` holds.
    pub fn recordings_on(&self, node: NodeId) -> impl Iterator<Item = &Recording> {
        self.recordings().filter(move |r| r.node_id == node)
    }

    pub(crate) fn apply_recordings(&mut self, command: &Command, out: &mut Vec<Mutation>) -> ApplyResult {
        match command {
            Command::PutRecording(recording) => self.put_recording(recording, out),
            Command::PublishRecording { id, at } => {
                let mut recording = self.live_recording(id)?;
                if recording.status != RecordingStatus::Ready {
                    return Err(CatalogError::invalid("status", "only a ready recording can be published"));
                }
                recording.published_at.get_or_insert(*at);
                Ok(self.store_recording(recording, out))
            }
            Command::DeleteRecording { id } => {
                let mut recording = self.live_recording(id)?;
                recording.status = RecordingStatus::Deleting;
                Ok(self.store_recording(recording, out))
            }
            Command::ForgetRecording { id } => {
                let recording = self.recording(id).ok_or_else(|| CatalogError::not_found("recording", id))?;
                if recording.status != RecordingStatus::Deleting {
                    return Err(CatalogError::invalid("status", "only a deleted recording is forgotten"));
                }
                self.recordings.recordings.remove(id);
                out.push(delete(recording_key(id)));
                Ok(Response::Done)
            }
            _ => Err(CatalogError::invalid("command", "not a recording command")),
        }
    }

    /// Creates or updates a recording as its node reports it. What others decide is kept: the
    /// publication, the title once set, a deletion (a late report never brings an entry back).
    fn put_recording(&mut self, recording: &Recording, out: &mut Vec<Mutation>) -> ApplyResult {
        if recording.id.is_empty() || recording.id.len() > 128 {
            return Err(CatalogError::invalid("id", "1 to 128 characters"));
        }
        let mut recording = recording.clone();
        if let Some(existing) = self.recording(&recording.id) {
            if existing.status == RecordingStatus::Deleting {
                return Err(CatalogError::not_found("recording", &recording.id));
            }
            if existing.node_id != recording.node_id || existing.channel_id != recording.channel_id {
                return Err(CatalogError::invalid("nodeId", "a recording stays on the node that holds it"));
            }
            recording.published_at = existing.published_at;
            recording.owner_id = existing.owner_id.clone();
            recording.created_at = existing.created_at;
        } else if self.channel(&recording.channel_id).is_none() {
            return Err(CatalogError::not_found("channel", &recording.channel_id));
        }
        if let Some(source) = &recording.source_id {
            if self.recording(source).is_none_or(|s| s.status == RecordingStatus::Deleting)
                && recording.status == RecordingStatus::Queued
            {
                return Err(CatalogError::not_found("recording", source));
            }
        }
        Ok(self.store_recording(recording, out))
    }

    /// A recording that is not deleted.
    fn live_recording(&self, id: &str) -> Result<Recording, CatalogError> {
        self.recording(id).filter(|r| r.is_visible()).cloned().ok_or_else(|| CatalogError::not_found("recording", id))
    }

    fn store_recording(&mut self, recording: Recording, out: &mut Vec<Mutation>) -> Response {
        out.push(put(recording_key(&recording.id), codec::encode(&recording)));
        self.recordings.recordings.insert(recording.id.clone(), recording.clone());
        Response::Recording(Box::new(recording))
    }

    /// A deleted channel's recordings go with it: marked deleted, their holders sweep them.
    pub(crate) fn delete_recordings_of(&mut self, channel_id: &str, out: &mut Vec<Mutation>) {
        let ids: Vec<String> =
            self.recordings().filter(|r| r.channel_id == channel_id && r.is_visible()).map(|r| r.id.clone()).collect();
        for id in ids {
            if let Some(mut recording) = self.recording(&id).cloned() {
                recording.status = RecordingStatus::Deleting;
                self.store_recording(recording, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::with_channel;

    pub(crate) fn recording(id: &str, channel: &str) -> Recording {
        Recording {
            id: id.into(),
            channel_id: channel.into(),
            owner_id: "u1".into(),
            title: "t".into(),
            kind: RecordingKind::Broadcast,
            status: RecordingStatus::Recording,
            failure: None,
            session_ids: vec!["s1".into()],
            source_id: None,
            clip_start_ms: None,
            clip_end_ms: None,
            node_id: 1,
            renditions: vec!["source".into()],
            duration_ms: 0,
            size_bytes: 0,
            thumbnails: 0,
            created_at: 100,
            ended_at: None,
            published_at: None,
        }
    }

    #[test]
    fn publish_needs_ready_and_a_late_report_keeps_it() {
        let mut r = with_channel();
        let put = |rec: Recording| Command::PutRecording(Box::new(rec));
        r.ok(put(recording("r1", "c1")));
        r.err(Command::PublishRecording { id: "r1".into(), at: 5 });
        r.ok(put(Recording { status: RecordingStatus::Ready, duration_ms: 20_000, ..recording("r1", "c1") }));
        r.ok(Command::PublishRecording { id: "r1".into(), at: 5 });
        // The node's next report does not unpublish it.
        r.ok(put(Recording { status: RecordingStatus::Ready, duration_ms: 21_000, ..recording("r1", "c1") }));
        let stored = r.state.recording("r1").unwrap();
        assert_eq!((stored.published_at, stored.duration_ms), (Some(5), 21_000));
        // Another node may not take it over; an unknown channel is refused.
        r.err(put(Recording { node_id: 2, ..recording("r1", "c1") }));
        r.err(put(recording("r2", "nope")));
    }

    #[test]
    fn delete_hides_then_forget_removes_and_nothing_comes_back() {
        let mut r = with_channel();
        r.ok(Command::PutRecording(Box::new(recording("r1", "c1"))));
        r.err(Command::ForgetRecording { id: "r1".into() });
        r.ok(Command::DeleteRecording { id: "r1".into() });
        assert!(!r.state.recording("r1").unwrap().is_visible());
        r.err(Command::DeleteRecording { id: "r1".into() });
        r.err(Command::PutRecording(Box::new(recording("r1", "c1"))));
        r.ok(Command::ForgetRecording { id: "r1".into() });
        assert!(r.state.recording("r1").is_none());
    }

    #[test]
    fn deleting_the_channel_deletes_its_recordings() {
        let mut r = with_channel();
        r.ok(Command::PutRecording(Box::new(Recording { status: RecordingStatus::Ready, ..recording("r1", "c1") })));
        r.ok(Command::DeleteChannel { id: "c1".into() });
        assert_eq!(r.state.recording("r1").unwrap().status, RecordingStatus::Deleting);
    }
}
