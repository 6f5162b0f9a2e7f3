//! Unique viewers per channel over a sliding window.
//!
//! A viewer is a client address plus user agent, hashed: HLS players carry no session, and
//! counting requests would count a viewer once per part. Each request refreshes its viewer's
//! last-seen time; [`ViewerCounter::counts`] forgets viewers not seen within the window and says
//! how many remain per channel.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Viewers tracked per channel at most: beyond it new viewers are not counted, so a flood of
/// forged addresses cannot grow memory without bound.
const MAX_VIEWERS_PER_CHANNEL: usize = 1_000_000;
/// Channels tracked at most.
const MAX_CHANNELS: usize = 100_000;

/// Last-seen times of viewers, per channel.
pub struct ViewerCounter {
    window: Duration,
    channels: Mutex<HashMap<String, HashMap<u64, Instant>>>,
}

impl ViewerCounter {
    pub fn new(window: Duration) -> Self {
        ViewerCounter { window, channels: Mutex::default() }
    }

    /// The window viewers are counted over.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Note a request of `channel` by the viewer at `addr` with `user_agent`.
    pub fn seen(&self, channel: &str, addr: Option<IpAddr>, user_agent: &[u8], now: Instant) {
        let mut hasher = DefaultHasher::new();
        addr.hash(&mut hasher);
        user_agent.hash(&mut hasher);
        let viewer = hasher.finish();
        let Ok(mut channels) = self.channels.lock() else { return };
        if let Some(viewers) = channels.get_mut(channel) {
            if viewers.len() < MAX_VIEWERS_PER_CHANNEL || viewers.contains_key(&viewer) {
                viewers.insert(viewer, now);
            }
        } else if channels.len() < MAX_CHANNELS {
            channels.insert(channel.to_owned(), HashMap::from([(viewer, now)]));
        }
    }

    /// Unique viewers per channel seen within the window before `now`. A channel whose last
    /// viewer left is reported once with 0, then forgotten.
    pub fn counts(&self, now: Instant) -> Vec<(String, u64)> {
        let Ok(mut channels) = self.channels.lock() else { return Vec::new() };
        let mut out = Vec::with_capacity(channels.len());
        channels.retain(|channel, viewers| {
            viewers.retain(|_, seen| now.saturating_duration_since(*seen) <= self.window);
            out.push((channel.clone(), viewers.len() as u64));
            !viewers.is_empty()
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_unique_viewers_in_the_window() {
        let counter = ViewerCounter::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        for _ in 0..10 {
            counter.seen("ch", a, b"hls.js", t0);
        }
        counter.seen("ch", a, b"other player", t0);
        counter.seen("ch", b, b"hls.js", t0 + Duration::from_secs(20));
        counter.seen("other", b, b"hls.js", t0);
        let mut counts = counter.counts(t0 + Duration::from_secs(25));
        counts.sort();
        assert_eq!(counts, [("ch".to_owned(), 3), ("other".to_owned(), 1)]);
        let mut counts = counter.counts(t0 + Duration::from_secs(45));
        counts.sort();
        assert_eq!(counts, [("ch".to_owned(), 1), ("other".to_owned(), 0)]);
        assert_eq!(counter.counts(t0 + Duration::from_secs(45)), [("ch".to_owned(), 1)]);
    }
}
