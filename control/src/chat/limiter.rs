//! The per-user chat flood limit of one node: at most `limit` messages per `window` per user.
//!
//! Node-local on purpose: it protects this node's proposers and sockets from one user's burst, so
//! it needs no consensus (the replicated rules, slow mode and bans, live in the catalog). Sans-IO:
//! the caller passes `now`, which keeps the window logic testable without sleeping.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Sliding-window counter per user, bounded in the number of users it tracks.
#[derive(Debug)]
pub struct UserRateLimiter {
    limit: usize,
    window: Duration,
    max_users: usize,
    /// user id -> send times within the window, oldest first (never more than `limit`).
    recent: HashMap<String, VecDeque<Instant>>,
}

/// Why a message was refused: wait this long before the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
    /// The node tracks as many users as it may and none of them has gone quiet yet.
    pub node_busy: bool,
}

impl UserRateLimiter {
    /// `limit == 0` turns the limiter off.
    pub fn new(limit: usize, window: Duration, max_users: usize) -> Self {
        UserRateLimiter { limit, window, max_users: max_users.max(1), recent: HashMap::new() }
    }

    /// Record a message of `user` at `now` if the user is under the limit.
    pub fn check(&mut self, user: &str, now: Instant) -> Result<(), Limited> {
        if self.limit == 0 {
            return Ok(());
        }
        let window = self.window;
        if let Some(times) = self.recent.get_mut(user) {
            while times.front().is_some_and(|t| now.saturating_duration_since(*t) >= window) {
                times.pop_front();
            }
            if times.len() >= self.limit {
                // The oldest send leaves the window first; `times` is non-empty because limit > 0.
                let oldest = times.front().copied().unwrap_or(now);
                let retry_after = window.saturating_sub(now.saturating_duration_since(oldest));
                return Err(Limited { retry_after, node_busy: false });
            }
            times.push_back(now);
            return Ok(());
        }
        if self.recent.len() >= self.max_users {
            self.recent.retain(|_, times| times.back().is_some_and(|t| now.saturating_duration_since(*t) < window));
            if self.recent.len() >= self.max_users {
                // Every tracked user spoke within the window: refusing newcomers for a moment keeps
                // the memory bound without letting anyone reset their own count by eviction.
                return Err(Limited { retry_after: window, node_busy: true });
            }
        }
        self.recent.insert(user.to_owned(), VecDeque::from([now]));
        Ok(())
    }

    /// Users currently tracked (for tests and metrics).
    pub fn tracked_users(&self) -> usize {
        self.recent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_limit_then_refuses_until_the_oldest_leaves_the_window() {
        let t0 = Instant::now();
        let mut l = UserRateLimiter::new(3, Duration::from_secs(10), 100);
        for i in 0..3 {
            assert!(l.check("u1", t0 + Duration::from_secs(i)).is_ok());
        }
        let refused = l.check("u1", t0 + Duration::from_secs(4)).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(6));
        assert!(!refused.node_busy);
        // Other users are independent.
        assert!(l.check("u2", t0 + Duration::from_secs(4)).is_ok());
        // At t0+10 the first send has left the window.
        assert!(l.check("u1", t0 + Duration::from_secs(10)).is_ok());
        assert!(l.check("u1", t0 + Duration::from_secs(10)).is_err());
    }

    #[test]
    fn refused_attempts_do_not_extend_the_wait() {
        let t0 = Instant::now();
        let mut l = UserRateLimiter::new(1, Duration::from_secs(10), 100);
        assert!(l.check("u1", t0).is_ok());
        for i in 1..10 {
            assert!(l.check("u1", t0 + Duration::from_secs(i)).is_err());
        }
        assert!(l.check("u1", t0 + Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn user_table_is_bounded_and_quiet_users_are_swept() {
        let t0 = Instant::now();
        let mut l = UserRateLimiter::new(5, Duration::from_secs(10), 2);
        assert!(l.check("a", t0).is_ok());
        assert!(l.check("b", t0).is_ok());
        let busy = l.check("c", t0 + Duration::from_secs(1)).unwrap_err();
        assert!(busy.node_busy);
        assert_eq!(l.tracked_users(), 2);
        // Once a and b are quiet for a whole window, c gets in and the table stays bounded.
        assert!(l.check("c", t0 + Duration::from_secs(11)).is_ok());
        assert!(l.tracked_users() <= 2);
    }

    #[test]
    fn zero_limit_is_off() {
        let mut l = UserRateLimiter::new(0, Duration::from_secs(10), 1);
        let now = Instant::now();
        for _ in 0..100 {
            assert!(l.check("u", now).is_ok());
        }
        assert_eq!(l.tracked_users(), 0);
    }
}
