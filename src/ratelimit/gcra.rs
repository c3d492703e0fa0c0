//! The generic cell rate algorithm: the state of a bucket is one instant,
//! the theoretical arrival time (TAT) of the next request at the steady
//! rate. A request of cost `c` is allowed when pushing the TAT forward by
//! `c` emission intervals keeps it within `burst` intervals of now.
//!
//! The same arithmetic runs locally (nanoseconds, [`Gcra::decide`]) and in
//! the Redis script (microseconds, see `redis.rs`); both report through
//! [`Gcra::decision`] so headers mean the same whatever the backend.

use crate::config::rate_limits::Rate;

/// The parameters of one limit, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Time one unit of cost takes to refill.
    pub interval: u64,
    /// `interval × burst`: how far ahead of now the TAT may run.
    pub capacity: u64,
    pub burst: u32,
}

/// The outcome of one decision and what the response headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Units that could still be spent right now.
    pub remaining: u32,
    /// Nanoseconds until the bucket is full again.
    pub reset: u64,
    /// Nanoseconds until this request would have been allowed (0 when it
    /// was).
    pub retry_after: u64,
}

impl Gcra {
    pub fn new(rate: Rate, burst: u32) -> Self {
        let period = u64::try_from(rate.period.as_nanos()).unwrap_or(u64::MAX);
        let interval = (period / u64::from(rate.count.max(1))).max(1);
        Self { interval, capacity: interval.saturating_mul(u64::from(burst)), burst }
    }

    /// Decides on a request of `cost` units at `now` given the stored TAT;
    /// returns the TAT to store when the state changes.
    pub fn decide(&self, stored: Option<u64>, now: u64, cost: u32) -> (Decision, Option<u64>) {
        let tat = stored.unwrap_or(now).max(now);
        let new_tat = tat.saturating_add(self.interval.saturating_mul(u64::from(cost)));
        let ahead = new_tat - now;
        if ahead > self.capacity {
            (self.decision(false, tat - now, ahead - self.capacity), None)
        } else {
            let store = (cost > 0).then_some(new_tat);
            (self.decision(true, ahead, 0), store)
        }
    }

    /// The decision whose bucket's TAT is `ahead` ns past now afterwards.
    pub fn decision(&self, allowed: bool, ahead: u64, retry_after: u64) -> Decision {
        let left = self.capacity.saturating_sub(ahead) / self.interval;
        Decision {
            allowed,
            remaining: u32::try_from(left).unwrap_or(u32::MAX).min(self.burst),
            reset: ahead,
            retry_after,
        }
    }
}

/// Whole seconds, rounded up: a client waiting that long is not refused
/// again for the same reason.
pub fn ceil_secs(nanos: u64) -> u64 {
    nanos.div_ceil(1_000_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn run(g: &Gcra, tat: &mut Option<u64>, now: u64, cost: u32) -> Decision {
        let (d, new) = g.decide(*tat, now, cost);
        if let Some(new) = new {
            *tat = Some(new);
        }
        d
    }

    #[test]
    fn burst_then_steady_rate() {
        let g = Gcra::new("10/s".parse().expect("rate"), 5);
        let mut tat = None;
        let allowed = (0..20).filter(|_| run(&g, &mut tat, 0, 1).allowed).count();
        assert_eq!(allowed, 5);
        // One interval later exactly one more fits.
        assert!(!run(&g, &mut tat, 99 * MS, 1).allowed);
        assert!(run(&g, &mut tat, 100 * MS, 1).allowed);
        assert!(!run(&g, &mut tat, 100 * MS, 1).allowed);
        // Over one second at the steady rate: ten more.
        let mut allowed = 0;
        for ms in (101..=1100).step_by(1) {
            if run(&g, &mut tat, ms * MS, 1).allowed {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 10);
    }

    #[test]
    fn remaining_reset_and_retry_after() {
        let g = Gcra::new("10/s".parse().expect("rate"), 5);
        let mut tat = None;
        let d = run(&g, &mut tat, 0, 1);
        assert_eq!((d.remaining, d.reset, d.retry_after), (4, 100 * MS, 0));
        for expected in (0..4).rev() {
            assert_eq!(run(&g, &mut tat, 0, 1).remaining, expected);
        }
        let denied = run(&g, &mut tat, 0, 1);
        assert!(!denied.allowed);
        assert_eq!(denied.remaining, 0);
        assert_eq!(denied.reset, 500 * MS);
        assert_eq!(denied.retry_after, 100 * MS);
        assert_eq!(ceil_secs(denied.retry_after), 1);
        assert_eq!(ceil_secs(denied.reset), 1);
    }

    #[test]
    fn cost_spends_several_units() {
        let g = Gcra::new("60/min".parse().expect("rate"), 10);
        let mut tat = None;
        assert_eq!(run(&g, &mut tat, 0, 4).remaining, 6);
        assert_eq!(run(&g, &mut tat, 0, 4).remaining, 2);
        let denied = run(&g, &mut tat, 0, 4);
        assert!(!denied.allowed);
        // Two more units refill in two seconds.
        assert_eq!(denied.retry_after, 2_000 * MS);
        assert!(run(&g, &mut tat, 0, 2).allowed);
        // A cost larger than the burst never fits.
        assert!(!run(&g, &mut None, 0, 11).allowed);
    }

    #[test]
    fn zero_cost_is_free_and_stores_nothing() {
        let g = Gcra::new("1/s".parse().expect("rate"), 1);
        let (d, store) = g.decide(None, 0, 0);
        assert!(d.allowed);
        assert_eq!(d.remaining, 1);
        assert_eq!(store, None);
    }
}
