//! Audience of each broadcast: how long its viewers watched. Edges report the watch time of every
//! viewer who left (first to last request, see `cache::viewers`) with their viewer counts; the
//! catalog keeps, per session, how many viewers left, their total seconds and how many watched at
//! least each [`BUCKET_SECONDS`] step, which is what the average watch time and the retention
//! curve are drawn from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{put, CatalogState, Mutation};
use crate::codec::{self, CodecError};
use crate::types::{UnixMillis, ViewerSample};

/// Width of one step of the retention curve.
pub const BUCKET_SECONDS: u32 = 30;
/// Watch times beyond this count in the last step (12 h).
pub const MAX_BUCKETS: u32 = 12 * 3600 / BUCKET_SECONDS;
/// A viewer who leaves this long after the broadcast ended still counts for it (the edges
/// notice a viewer gone one viewer window after its last request).
pub const LATE_LEAVERS_MS: UnixMillis = 10 * 60 * 1000;

mod key {
    pub(super) const AUDIENCE: &str = "aud/";
}

/// Watch times of one session's viewers who left.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchStats {
    pub viewers: u64,
    pub total_seconds: u64,
    /// Viewers per step of [`BUCKET_SECONDS`] (`seconds / BUCKET_SECONDS`, capped).
    pub buckets: BTreeMap<u32, u64>,
}

impl WatchStats {
    fn add(&mut self, seconds: u32) {
        self.viewers += 1;
        self.total_seconds += u64::from(seconds);
        *self.buckets.entry((seconds / BUCKET_SECONDS).min(MAX_BUCKETS)).or_default() += 1;
    }

    /// Mean seconds watched; 0 before anyone left.
    pub fn average_seconds(&self) -> f64 {
        if self.viewers == 0 {
            return 0.0;
        }
        self.total_seconds as f64 / self.viewers as f64
    }

    /// The retention curve: for each step `t` (seconds, from 0), the share of viewers who watched
    /// at least `t`, up to the step past the longest watch.
    pub fn retention(&self) -> Vec<(u32, f64)> {
        let Some((&last, _)) = self.buckets.last_key_value() else { return Vec::new() };
        let total = self.viewers.max(1) as f64;
        let mut remaining = self.viewers;
        (0..=last + 1)
            .map(|step| {
                let share = remaining as f64 / total;
                remaining -= self.buckets.get(&step).copied().unwrap_or(0);
                (step * BUCKET_SECONDS, share)
            })
            .collect()
    }
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct AudienceTable {
    sessions: BTreeMap<String, WatchStats>,
}

impl AudienceTable {
    pub(crate) fn load_record(&mut self, key: &str, value: &[u8]) -> Result<bool, CodecError> {
        let Some(session) = key.strip_prefix(key::AUDIENCE) else { return Ok(false) };
        self.sessions.insert(session.to_owned(), codec::decode(value)?);
        Ok(true)
    }
}

impl CatalogState {
    /// The watch times recorded for a session (empty before any viewer left).
    pub fn watch_stats(&self, session_id: &str) -> WatchStats {
        self.audience.sessions.get(session_id).cloned().unwrap_or_default()
    }

    /// Adds the watch times of `sample` to the channel's live session, or to its latest one if
    /// that ended within [`LATE_LEAVERS_MS`] (viewers are seen gone after the end).
    pub(crate) fn record_watches(&mut self, sample: &ViewerSample, out: &mut Vec<Mutation>) {
        if sample.watched_seconds.is_empty() {
            return;
        }
        let session = self
            .sessions_of_channel(&sample.channel_id)
            .max_by_key(|s| s.started_at)
            .filter(|s| s.ended_at.is_none_or(|end| sample.at - end <= LATE_LEAVERS_MS))
            .map(|s| s.id.clone());
        let Some(session) = session else { return };
        let stats = self.audience.sessions.entry(session.clone()).or_default();
        for &seconds in &sample.watched_seconds {
            stats.add(seconds);
        }
        out.push(put(format!("{}{session}", key::AUDIENCE), codec::encode(&*stats)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_and_retention_of_the_viewers_who_left() {
        let mut stats = WatchStats::default();
        for seconds in [10, 40, 70, 75, 200] {
            stats.add(seconds);
        }
        assert_eq!(stats.viewers, 5);
        assert!((stats.average_seconds() - 79.0).abs() < 1e-9);
        let curve = stats.retention();
        // Everyone at 0 s; 4 of 5 watched 30 s or more; 3 of 5 60 s; 1 of 5 90 s .. 180 s; nobody 210 s.
        assert_eq!(curve[0], (0, 1.0));
        assert_eq!(curve[1], (30, 0.8));
        assert_eq!(curve[2], (60, 0.6));
        assert_eq!(curve[3], (90, 0.2));
        assert_eq!(curve.last(), Some(&(210, 0.0)));
        assert!(curve.windows(2).all(|w| w[1].1 <= w[0].1), "never rises: {curve:?}");
        assert!(WatchStats::default().retention().is_empty());
    }
}
