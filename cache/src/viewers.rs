//! Unique viewers per channel over a sliding window.
//!
//! A viewer is a client address: HLS players carry no session, and counting requests would
//! count a viewer once per part. Nothing the client sends (user agent, query parameters) is part
//! of it, or one client could pose as any number of viewers by varying it; an IPv6 client counts
//! by its /64, which one host may rotate through freely. Viewers behind one NAT count once.
//! Each request refreshes its viewer's last-seen time; [`ViewerCounter::counts`] forgets viewers
//! not seen within the window and says how many remain per channel. A viewer forgotten so leaves
//! its watch time (first to last request) behind, which [`ViewerCounter::take_watches`] hands
//! over for the audience analytics (average watch time, retention).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Viewers tracked per channel at most: beyond it new viewers are not counted, so a flood of
/// forged addresses cannot grow memory without bound.
const MAX_VIEWERS_PER_CHANNEL: usize = 1_000_000;
/// Channels tracked at most.
const MAX_CHANNELS: usize = 100_000;
/// Finished watches held per channel until taken; more are dropped (reports come every 10 s).
const MAX_WATCHES_PER_CHANNEL: usize = 100_000;

/// How often a connection's viewer is counted again for the channel it keeps asking for
/// ([`ViewerCounter::seen_on_connection`]).
pub const RECOUNT: Duration = Duration::from_secs(1);

/// The channel a connection's viewer was last counted for, and when (`None`: not yet).
#[derive(Debug, Default)]
pub struct LastCounted {
    channel: String,
    at: Option<Instant>,
}

/// Last-seen times of viewers (client addresses, see the module docs), per channel.
pub struct ViewerCounter {
    window: Duration,
    /// channel → viewer → (first seen, last seen).
    channels: Mutex<HashMap<String, Viewers>>,
    /// channel → seconds watched by each viewer who left, until taken.
    watches: Mutex<HashMap<String, Vec<u32>>>,
}

/// A channel's viewers: (first request, last request) by viewer.
type Viewers = HashMap<Option<IpAddr>, (Instant, Instant)>;

/// The viewer a client address stands for: the address itself for IPv4, the /64 for IPv6.
fn viewer(addr: Option<IpAddr>) -> Option<IpAddr> {
    addr.map(|addr| match addr.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !u128::from(u64::MAX))),
    })
}

impl ViewerCounter {
    pub fn new(window: Duration) -> Self {
        ViewerCounter { window, channels: Mutex::default(), watches: Mutex::default() }
    }

    /// The window viewers are counted over.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Note a request of `channel` by the client at `addr` (`None`: not an IP connection).
    pub fn seen(&self, channel: &str, addr: Option<IpAddr>, now: Instant) {
        let viewer = viewer(addr);
        let Ok(mut channels) = self.channels.lock() else { return };
        if let Some(viewers) = channels.get_mut(channel) {
            if let Some(seen) = viewers.get_mut(&viewer) {
                seen.1 = now;
            } else if viewers.len() < MAX_VIEWERS_PER_CHANNEL {
                viewers.insert(viewer, (now, now));
            }
        } else if channels.len() < MAX_CHANNELS {
            channels.insert(channel.to_owned(), HashMap::from([(viewer, (now, now))]));
        }
    }

    /// [`ViewerCounter::seen`] for a request on a connection whose viewer `last` remembers:
    /// skipped when that viewer was counted for the same channel less than [`RECOUNT`] ago. A
    /// player asks for a part every part target on one keep-alive connection, and each need not
    /// take the counter's lock; its last-seen time is then at most [`RECOUNT`] old.
    pub fn seen_on_connection(&self, last: &mut LastCounted, channel: &str, addr: Option<IpAddr>, now: Instant) {
        let recent = last.at.is_some_and(|at| now.saturating_duration_since(at) < RECOUNT);
        if recent && last.channel == channel {
            return;
        }
        last.channel.clear();
        last.channel.push_str(channel);
        last.at = Some(now);
        self.seen(channel, addr, now);
    }

    /// Unique viewers per channel seen within the window before `now`. A channel whose last
    /// viewer left is reported once with 0, then forgotten.
    pub fn counts(&self, now: Instant) -> Vec<(String, u64)> {
        let Ok(mut channels) = self.channels.lock() else { return Vec::new() };
        let mut out = Vec::with_capacity(channels.len());
        let mut left: Vec<(String, u32)> = Vec::new();
        channels.retain(|channel, viewers| {
            viewers.retain(|_, (first, last)| {
                let stays = now.saturating_duration_since(*last) <= self.window;
                if !stays {
                    // At least one second: a player that fetched once watched something.
                    let seconds = last.saturating_duration_since(*first).as_secs_f64().round().max(1.0);
                    left.push((channel.clone(), seconds.min(f64::from(u32::MAX)) as u32));
                }
                stays
            });
            out.push((channel.clone(), viewers.len() as u64));
            !viewers.is_empty()
        });
        drop(channels);
        if !left.is_empty() {
            let Ok(mut watches) = self.watches.lock() else { return out };
            for (channel, seconds) in left {
                let list = watches.entry(channel).or_default();
                if list.len() < MAX_WATCHES_PER_CHANNEL {
                    list.push(seconds);
                }
            }
        }
        out
    }

    /// The watch times (seconds from a viewer's first request to its last) of the viewers who
    /// left each channel since the last call, as [`ViewerCounter::counts`] found them gone.
    pub fn take_watches(&self) -> HashMap<String, Vec<u32>> {
        self.watches.lock().map(|mut w| std::mem::take(&mut *w)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn counts_unique_viewers_in_the_window() {
        let counter = ViewerCounter::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        for _ in 0..10 {
            counter.seen("ch", a, t0);
        }
        counter.seen("ch", b, t0 + Duration::from_secs(20));
        counter.seen("other", b, t0);
        let mut counts = counter.counts(t0 + Duration::from_secs(25));
        counts.sort();
        assert_eq!(counts, [("ch".to_owned(), 2), ("other".to_owned(), 1)]);
        let mut counts = counter.counts(t0 + Duration::from_secs(45));
        counts.sort();
        assert_eq!(counts, [("ch".to_owned(), 1), ("other".to_owned(), 0)]);
        assert_eq!(counter.counts(t0 + Duration::from_secs(45)), [("ch".to_owned(), 1)]);
    }

    #[test]
    fn a_viewer_who_leaves_leaves_its_watch_time() {
        let counter = ViewerCounter::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let (a, b) = (Some(IpAddr::from([10, 0, 0, 1])), Some(IpAddr::from([10, 0, 0, 2])));
        for second in 0..=90 {
            counter.seen("ch", a, t0 + Duration::from_secs(second));
        }
        counter.seen("ch", b, t0 + Duration::from_secs(10));
        // b's last request was at 10 s: gone at 41 s, having watched one fetch's worth.
        let _ = counter.counts(t0 + Duration::from_secs(41));
        assert_eq!(counter.take_watches(), HashMap::from([("ch".to_owned(), vec![1])]));
        assert!(counter.take_watches().is_empty(), "taken once");
        let _ = counter.counts(t0 + Duration::from_secs(121));
        assert_eq!(counter.take_watches(), HashMap::from([("ch".to_owned(), vec![90])]));
    }

    #[test]
    fn a_connection_counts_its_viewer_once_a_second_per_channel() {
        let counter = ViewerCounter::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let mut last = LastCounted::default();
        // A part every 200 ms for 90 s on one connection: counted all along, 90 s watched.
        for tick in 0..=450 {
            counter.seen_on_connection(&mut last, "ch", a, t0 + Duration::from_millis(200 * tick));
            if tick % 50 == 0 {
                assert_eq!(counter.counts(t0 + Duration::from_millis(200 * tick)), [("ch".to_owned(), 1)]);
            }
        }
        let _ = counter.counts(t0 + Duration::from_secs(121));
        assert_eq!(counter.take_watches(), HashMap::from([("ch".to_owned(), vec![90])]));

        // The request 0.9 s after a counted one is not counted (the counter saw it last at t1),
        // while another channel's on the same connection is, at once.
        let t1 = t0 + Duration::from_secs(200);
        counter.seen_on_connection(&mut last, "ch", a, t1);
        counter.seen_on_connection(&mut last, "ch", a, t1 + Duration::from_millis(900));
        counter.seen_on_connection(&mut last, "other", a, t1 + Duration::from_millis(900));
        let mut counts = counter.counts(t1 + Duration::from_millis(30_500));
        counts.sort();
        assert_eq!(counts, [("ch".to_owned(), 0), ("other".to_owned(), 1)]);
    }

    #[test]
    fn one_host_counts_once_however_it_varies_its_ipv6_address() {
        let counter = ViewerCounter::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let host: u128 = 0x2001_0db8_0001_0002 << 64;
        for interface_id in 0..100u128 {
            counter.seen("ch", Some(IpAddr::V6(Ipv6Addr::from(host | (interface_id * 7919)))), t0);
        }
        // Another /64 is another viewer; an IPv4-mapped address is its IPv4 viewer.
        counter.seen("ch", Some(IpAddr::V6(Ipv6Addr::from(host + (1 << 64)))), t0);
        counter.seen("ch", Some(IpAddr::from([10, 0, 0, 1])), t0);
        counter.seen("ch", Some(IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped())), t0);
        counter.seen("ch", None, t0);
        assert_eq!(counter.counts(t0), [("ch".to_owned(), 4)]);
    }
}
