//! Which edges are up, as this control node sees them: an edge is alive while its load reports
//! keep changing (one every 500 ms), and it is used for new viewers only after it has been alive
//! for [`HOLD_BEFORE_USE`] without a gap, so an edge that crashes in a loop does not flap in and
//! out of answers.
//!
//! Liveness is judged on this node's monotonic clock (when it *saw* a new report), never by
//! comparing the reporter's wall-clock stamp with ours: clocks of a fleet disagree by more than
//! the few seconds this needs. Sans-IO: the caller feeds reports and `now`, a task in `node`
//! does so every [`OBSERVE_EVERY`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use raft::{NodeId, UnixMillis};

/// How often the node's watcher feeds the tracker.
pub const OBSERVE_EVERY: Duration = Duration::from_millis(250);
/// An edge whose report did not change for this long is taken for dead (four report periods).
pub const DEAD_AFTER: Duration = Duration::from_secs(2);
/// How long an edge must have been alive before new viewers go to it again.
pub const HOLD_BEFORE_USE: Duration = Duration::from_secs(5);

/// Whether an edge may get viewers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeState {
    /// Alive for long enough: use it.
    Usable,
    /// Alive again (or new), not for long enough yet: use only when nothing else is usable.
    Warming,
    /// No new report for [`DEAD_AFTER`], or never seen.
    Dead,
}

#[derive(Debug, Clone)]
struct Seen {
    /// The reporter's stamp of its last report (only compared with itself).
    stamp: UnixMillis,
    /// When this node saw the stamp change.
    changed: Instant,
    /// Since when it has been alive without a gap.
    alive_since: Option<Instant>,
}

/// The liveness of every edge this node has heard of.
#[derive(Debug, Default)]
pub struct EdgeHealth {
    seen: BTreeMap<NodeId, Seen>,
}

impl EdgeHealth {
    /// One observation of an edge's latest report stamp. Call for every edge on every tick.
    pub fn handle_report(&mut self, node_id: NodeId, stamp: UnixMillis, now: Instant) {
        match self.seen.get_mut(&node_id) {
            Some(seen) if seen.stamp == stamp => {}
            Some(seen) => {
                seen.stamp = stamp;
                seen.changed = now;
                if seen.alive_since.is_none() {
                    seen.alive_since = Some(now);
                }
            }
            None => {
                self.seen.insert(node_id, Seen { stamp, changed: now, alive_since: Some(now) });
            }
        }
    }

    /// Mark edges dead whose report stopped changing; forget those no longer in the directory.
    pub fn handle_tick(&mut self, now: Instant, present: impl Fn(NodeId) -> bool) {
        self.seen.retain(|id, _| present(*id));
        for seen in self.seen.values_mut() {
            if now.saturating_duration_since(seen.changed) > DEAD_AFTER {
                seen.alive_since = None;
            }
        }
    }

    pub fn state(&self, node_id: NodeId, now: Instant) -> EdgeState {
        let Some(seen) = self.seen.get(&node_id) else { return EdgeState::Dead };
        if now.saturating_duration_since(seen.changed) > DEAD_AFTER {
            return EdgeState::Dead;
        }
        match seen.alive_since {
            Some(since) if now.saturating_duration_since(since) >= HOLD_BEFORE_USE => EdgeState::Usable,
            Some(_) => EdgeState::Warming,
            None => EdgeState::Dead,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edge_is_usable_after_the_hold_dead_after_silence_and_held_again_when_back() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut health = EdgeHealth::default();
        assert_eq!(health.state(7, t0), EdgeState::Dead, "never seen");
        // A report every 500 ms, each with a new stamp.
        let mut stamp = 0;
        let mut report = |health: &mut EdgeHealth, ms: u64| {
            stamp += 500;
            health.handle_report(7, stamp, at(ms));
            health.handle_tick(at(ms), |_| true);
            stamp
        };
        for ms in (0..=4500).step_by(500) {
            report(&mut health, ms);
            assert_eq!(health.state(7, at(ms)), EdgeState::Warming, "at {ms} ms");
        }
        let last = report(&mut health, 5000);
        assert_eq!(health.state(7, at(5000)), EdgeState::Usable);

        // Silence: the same stamp seen again and again does not keep it alive.
        health.handle_report(7, last, at(6000));
        health.handle_tick(at(7100), |_| true);
        assert_eq!(health.state(7, at(7100)), EdgeState::Dead);

        // Back: warming for the hold, then usable.
        report(&mut health, 9000);
        assert_eq!(health.state(7, at(9000)), EdgeState::Warming);
        for ms in (9500..14000).step_by(500) {
            report(&mut health, ms);
        }
        assert_eq!(health.state(7, at(13500)), EdgeState::Warming);
        report(&mut health, 14000);
        assert_eq!(health.state(7, at(14000)), EdgeState::Usable);

        // Gone from the directory: forgotten.
        health.handle_tick(at(14100), |_| false);
        assert_eq!(health.state(7, at(14100)), EdgeState::Dead);
    }
}
