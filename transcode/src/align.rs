//! The timing rules that keep every rung aligned with `source`, and the degrade policy. Pure
//! logic, tested without FFmpeg.

use bytes::Bytes;
use media::clock::UnixMillis;
use media::cmaf::Sample;

/// Turns a rung's encoded frames (presentation order, no B-frames) into packager samples whose
/// keyframes have the source keyframes' decode times.
///
/// The source may have B-frames: its keyframe at presentation time `pts` has decode time
/// `pts - offset`. Each rung frame gets decode time `pts - offset`, with `offset` taken from the
/// source keyframe the rung (re)started at, and presentation offset `offset`; so every rung
/// keyframe sits at the source keyframe's decode time and the packager cuts segments at the same
/// places. A sample's duration is the time to the next one, so each is held until the next
/// arrives.
#[derive(Debug, Default)]
pub(crate) struct OutputTimer {
    offset: Option<i32>,
    held: Option<(Sample, UnixMillis)>,
    last_duration: u32,
}

/// Used for the last sample when no other gave a duration (30 fps).
const FALLBACK_DURATION: u32 = 3_000;

impl OutputTimer {
    /// Takes an encoded frame; returns the previous one, now complete. Frames before the first
    /// keyframe (after a reset) are dropped: a rung starts where the source starts a segment.
    pub(crate) fn push(
        &mut self,
        pts: i64,
        source_offset: i32,
        keyframe: bool,
        data: Bytes,
        now: UnixMillis,
    ) -> Option<(Sample, UnixMillis)> {
        let offset = match self.offset {
            None if keyframe => *self.offset.insert(source_offset),
            None => return None,
            // A source keyframe with another presentation offset than the last one: follow it, so
            // this keyframe too lands on the source keyframe's decode time, unless that would go
            // back in time.
            Some(offset) if keyframe && source_offset != offset => {
                let candidate = pts.saturating_sub(i64::from(source_offset));
                let forward =
                    self.held.as_ref().is_none_or(|(held, _)| u64::try_from(candidate).is_ok_and(|c| c > held.dts));
                if forward {
                    self.offset = Some(source_offset);
                    source_offset
                } else {
                    offset
                }
            }
            Some(offset) => offset,
        };
        let dts = u64::try_from(pts.saturating_sub(i64::from(offset))).ok()?;
        if let Some((held, _)) = &self.held {
            if dts <= held.dts {
                // Out of order (a broken input timestamp): drop rather than feed the packager
                // a decode time it must refuse.
                return None;
            }
        }
        let sample = Sample { dts, pts_offset: offset, duration: 0, keyframe, data };
        let previous = self.held.replace((sample, now));
        previous.map(|(mut held, held_now)| {
            held.duration = u32::try_from(dts - held.dts).unwrap_or(u32::MAX);
            self.last_duration = held.duration;
            (held, held_now)
        })
    }

    /// The last held sample, with the last known duration (end of stream).
    pub(crate) fn finish(&mut self) -> Option<(Sample, UnixMillis)> {
        let duration = if self.last_duration > 0 { self.last_duration } else { FALLBACK_DURATION };
        self.offset = None;
        self.held.take().map(|(mut s, now)| {
            s.duration = duration;
            (s, now)
        })
    }

    /// Forgets everything: the rung stopped being fed and will restart at a keyframe.
    #[cfg(test)]
    pub(crate) fn reset(&mut self) {
        self.offset = None;
        self.held = None;
    }
}

/// When the ladder sheds and takes back rungs. Lag is how far (ms) the ladder's output is behind
/// the source's wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DegradePolicy {
    /// Lag above which the ladder drops its tallest rung. Default 2 s.
    pub drop_lag_ms: u64,
    /// Lag below which the ladder counts as keeping up. Default 0.5 s.
    pub calm_lag_ms: u64,
    /// Time between two drops, for the dropped rung's backlog to drain (a lag that still grows
    /// drops the next one anyway). Default 5 s.
    pub drop_cooldown_ms: u64,
    /// How long the ladder must keep up before the last dropped rung comes back. Default 30 s.
    pub readmit_after_ms: u64,
}

impl Default for DegradePolicy {
    fn default() -> Self {
        DegradePolicy { drop_lag_ms: 2_000, calm_lag_ms: 500, drop_cooldown_ms: 5_000, readmit_after_ms: 30_000 }
    }
}

/// What the ladder should do after a lag observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Keep,
    /// Stop encoding rung `i` (the tallest still encoded).
    Drop(usize),
    /// Rung `i` (the last dropped) may come back at the next segment start.
    Readmit(usize),
}

/// Degrade policy: drop the tallest rung while the ladder falls behind real time, bring rungs
/// back (the last dropped first) after it has kept up for a while. Rungs are indexed tallest
/// first.
#[derive(Debug)]
pub(crate) struct Degrader {
    policy: DegradePolicy,
    active: Vec<bool>,
    dropped: Vec<usize>,
    last_change_ms: u64,
    lag_at_change: u64,
    calm_since_ms: Option<u64>,
}

impl Degrader {
    pub(crate) fn new(rungs: usize, now_ms: u64, policy: DegradePolicy) -> Self {
        Degrader {
            policy,
            active: vec![true; rungs],
            dropped: Vec::new(),
            last_change_ms: now_ms,
            lag_at_change: 0,
            calm_since_ms: None,
        }
    }

    #[cfg(test)]
    pub(crate) fn is_active(&self, rung: usize) -> bool {
        self.active.get(rung).copied().unwrap_or(false)
    }

    pub(crate) fn active_count(&self) -> usize {
        self.active.iter().filter(|a| **a).count()
    }

    /// Records the ladder's current lag (ms behind the source) at time `now_ms`.
    pub(crate) fn observe(&mut self, now_ms: u64, lag_ms: u64) -> Decision {
        let since_change = now_ms.saturating_sub(self.last_change_ms);
        let policy = self.policy;
        if lag_ms > policy.drop_lag_ms {
            self.calm_since_ms = None;
            // After a drop, wait for the backlog to drain, unless the lag keeps growing anyway.
            let draining = since_change < policy.drop_cooldown_ms || lag_ms < self.lag_at_change;
            if draining && self.lag_at_change > 0 {
                return Decision::Keep;
            }
            let Some(top) = self.active.iter().position(|a| *a) else { return Decision::Keep };
            self.active[top] = false;
            self.dropped.push(top);
            self.last_change_ms = now_ms;
            self.lag_at_change = lag_ms;
            return Decision::Drop(top);
        }
        if lag_ms > policy.calm_lag_ms {
            self.calm_since_ms = None;
            return Decision::Keep;
        }
        let calm_since = *self.calm_since_ms.get_or_insert(now_ms);
        if now_ms.saturating_sub(calm_since) >= policy.readmit_after_ms && since_change >= policy.readmit_after_ms {
            if let Some(rung) = self.dropped.pop() {
                self.active[rung] = true;
                self.last_change_ms = now_ms;
                self.lag_at_change = 0;
                self.calm_since_ms = None;
                return Decision::Readmit(rung);
            }
        }
        if self.dropped.is_empty() {
            self.lag_at_change = 0;
        }
        Decision::Keep
    }

    /// Every rung stops at once (the input overflowed: frames were lost), to come back one by
    /// one like dropped rungs, the shortest first.
    pub(crate) fn drop_all(&mut self, now_ms: u64) -> Vec<usize> {
        let mut stopped = Vec::new();
        for (i, active) in self.active.iter_mut().enumerate() {
            if *active {
                *active = false;
                stopped.push(i);
            }
        }
        self.dropped.extend(stopped.iter().copied());
        self.last_change_ms = now_ms;
        self.lag_at_change = self.policy.drop_lag_ms;
        self.calm_since_ms = None;
        stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(
        timer: &mut OutputTimer,
        pts: i64,
        offset: i32,
        key: bool,
        now: i64,
    ) -> Option<(u64, i32, u32, bool, i64)> {
        timer.push(pts, offset, key, Bytes::new(), now).map(|(s, n)| (s.dts, s.pts_offset, s.duration, s.keyframe, n))
    }

    #[test]
    fn rung_keyframes_take_the_source_keyframe_decode_time() {
        // Source with B-frames: keyframe at pts 6000 has dts 0 (offset 6000), 3000-tick frames.
        let mut t = OutputTimer::default();
        assert_eq!(frame(&mut t, 3000, 0, false, 1), None, "frames before the first keyframe are dropped");
        assert_eq!(frame(&mut t, 6000, 6000, true, 10), None);
        assert_eq!(frame(&mut t, 9000, 3000, false, 11), Some((0, 6000, 3000, true, 10)));
        assert_eq!(frame(&mut t, 12000, 0, false, 12), Some((3000, 6000, 3000, false, 11)));
        // A later source keyframe at pts 36000 (dts 30000): the rung's keyframe lands on 30000.
        assert_eq!(frame(&mut t, 36000, 6000, true, 20), Some((6000, 6000, 24000, false, 12)));
        assert_eq!(frame(&mut t, 36000, 6000, false, 21), None, "a repeated pts is dropped");
        // The next source keyframe has a shorter offset (3000): the rung's keyframe still lands on
        // its decode time, 39000 - 3000.
        assert_eq!(frame(&mut t, 39000, 3000, true, 22), Some((30000, 6000, 6000, true, 20)));
        assert_eq!(frame(&mut t, 42000, 0, false, 23), Some((36000, 3000, 3000, true, 22)));
        // One whose decode time would not be after the previous frame keeps the old offset.
        assert_eq!(frame(&mut t, 45000, 9000, true, 24), Some((39000, 3000, 3000, false, 23)));
        assert_eq!(t.finish().map(|(s, _)| (s.dts, s.duration, s.keyframe)), Some((42000, 3000, true)));
        assert!(t.finish().is_none());
        // After a reset the next keyframe sets the offset again.
        t.reset();
        assert_eq!(frame(&mut t, 90000, 0, true, 30), None);
        assert_eq!(frame(&mut t, 93000, 0, false, 31), Some((90000, 0, 3000, true, 30)));
    }

    #[test]
    fn drops_the_top_rung_when_behind_and_readmits_after_keeping_up() {
        let mut d = Degrader::new(3, 0, DegradePolicy::default());
        assert_eq!(d.observe(1_000, 100), Decision::Keep);
        assert_eq!(d.observe(2_000, 2_500), Decision::Drop(0));
        assert!(!d.is_active(0) && d.is_active(1));
        // Still behind but draining (cooling down): keep.
        assert_eq!(d.observe(3_000, 2_400), Decision::Keep);
        // Growing after the cooldown: the next tallest goes.
        assert_eq!(d.observe(8_000, 3_000), Decision::Drop(1));
        assert_eq!(d.active_count(), 1);
        // Keeping up: after 30 s calm and 30 s since the last change, rung 1 comes back first.
        assert_eq!(d.observe(10_000, 100), Decision::Keep);
        assert_eq!(d.observe(39_000, 100), Decision::Keep);
        assert_eq!(d.observe(40_000, 100), Decision::Readmit(1));
        assert_eq!(d.observe(50_000, 100), Decision::Keep);
        assert_eq!(d.observe(70_000, 100), Decision::Keep);
        assert_eq!(d.observe(80_000, 100), Decision::Readmit(0));
        assert_eq!(d.active_count(), 3);
        assert_eq!(d.observe(200_000, 100), Decision::Keep);
    }

    #[test]
    fn drop_all_then_readmit_shortest_first() {
        let mut d = Degrader::new(2, 0, DegradePolicy::default());
        assert_eq!(d.drop_all(1_000), vec![0, 1]);
        assert_eq!(d.active_count(), 0);
        assert_eq!(d.observe(2_000, 3_000), Decision::Keep);
        assert_eq!(d.observe(3_000, 100), Decision::Keep);
        assert_eq!(d.observe(40_000, 100), Decision::Readmit(1));
    }
}
