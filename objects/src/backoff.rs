//! Capped exponential backoff with jitter, for retries against the store.

use std::time::Duration;

use rand::Rng;

/// Delays double from `initial` up to `max`; each is drawn from its upper half so that nodes
/// retrying against one store after an outage do not all arrive at once.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        let max = max.max(initial);
        Backoff { initial, max, next: initial }
    }

    /// The delay before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(self.max);
        rand::thread_rng().gen_range(ceiling / 2..=ceiling)
    }

    /// After a success: start again from `initial`.
    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(100), ms(1000));
        let ceilings = [100, 200, 400, 800, 1000, 1000];
        for ceiling in ceilings {
            let delay = backoff.next_delay();
            assert!(delay >= ms(ceiling) / 2 && delay <= ms(ceiling), "{delay:?} vs {ceiling}");
        }
        backoff.reset();
        assert!(backoff.next_delay() <= ms(100));
    }
}
