//! Stream health samples: what an ingest node measured of a broadcast every few seconds
//! (bitrates, frame rate, keyframe interval, A/V drift), kept per session for the streamer's
//! health charts, the newest [`MAX_SAMPLES_PER_SESSION`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{delete, put, CatalogState, Mutation};
use crate::codec::{self, CodecError};
use crate::command::{ApplyResult, CatalogError, Command, Response};
use crate::types::UnixMillis;

/// An hour of 5 s samples.
pub const MAX_SAMPLES_PER_SESSION: usize = 720;

mod key {
    pub(super) const HEALTH: &str = "hlth/";
}

/// One health sample of a broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct HealthSample {
    #[cfg_attr(feature = "utoipa", schema(value_type = i64))]
    pub at: UnixMillis,
    pub video_kbps: u32,
    pub audio_kbps: u32,
    pub fps: f32,
    /// Longest keyframe distance in the window (ms); 0 with fewer than two keyframes in it.
    pub keyframe_interval_ms: u32,
    /// Media time since the last keyframe at the window's end (ms).
    pub since_keyframe_ms: u32,
    /// Video minus audio time at the window's end (ms).
    pub av_drift_ms: i32,
}

// Samples are compared by value in state equality; NaN frame rates never come from the meter.
impl Eq for HealthSample {}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct HealthTable {
    /// session -> at -> sample.
    samples: BTreeMap<String, BTreeMap<UnixMillis, HealthSample>>,
}

fn health_key(session: &str, at: UnixMillis) -> String {
    format!("{}{session}/{at:020}", key::HEALTH)
}

impl HealthTable {
    pub(crate) fn load_record(&mut self, key: &str, value: &[u8]) -> Result<bool, CodecError> {
        let Some(rest) = key.strip_prefix(key::HEALTH) else { return Ok(false) };
        let (session, _) = rest.rsplit_once('/').ok_or_else(|| CodecError::Malformed(format!("bad key {key}")))?;
        let sample: HealthSample = codec::decode(value)?;
        self.samples.entry(session.to_owned()).or_default().insert(sample.at, sample);
        Ok(true)
    }
}

impl CatalogState {
    /// A session's health samples, oldest first.
    pub fn health_samples(&self, session_id: &str) -> Vec<HealthSample> {
        self.health.samples.get(session_id).map(|s| s.values().copied().collect()).unwrap_or_default()
    }

    pub(crate) fn apply_health(&mut self, command: &Command, out: &mut Vec<Mutation>) -> ApplyResult {
        let Command::ReportHealth { session_id, sample } = command else {
            return Err(CatalogError::invalid("command", "not a health command"));
        };
        if self.session(session_id).is_none() {
            return Err(CatalogError::not_found("session", session_id));
        }
        let samples = self.health.samples.entry(session_id.clone()).or_default();
        samples.insert(sample.at, *sample);
        out.push(put(health_key(session_id, sample.at), codec::encode(sample)));
        while samples.len() > MAX_SAMPLES_PER_SESSION {
            if let Some((at, _)) = samples.pop_first() {
                out.push(delete(health_key(session_id, at)));
            }
        }
        Ok(Response::Done)
    }
}
