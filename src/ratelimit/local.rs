//! The in-process limiter: GCRA over a sharded map from key hash to
//! theoretical arrival time (TAT), one `u64` per key.
//!
//! Why our own and not governor's keyed limiter: governor cannot cap the
//! number of keys, and millions of distinct keys (one per spoofed or
//! rotating client) must not grow memory without bound. Here a key costs
//! ~32 bytes, a shard never holds more than its share of `max_keys`, and
//! a key whose TAT has passed is forgotten: its bucket is full again, which
//! is exactly what an absent key means, so evicting it changes no decision.
//!
//! Hot path: one hash, one uncontended shard lock for a few nanoseconds.
//! Shards are many (64) and cache-line aligned, so concurrent requests
//! rarely meet on one lock.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::gcra::{Decision, Gcra};

/// Nanoseconds on a monotonic time line; injectable so tests are exact.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> u64;
}

/// The process's monotonic clock, counted from the limiter's creation.
#[derive(Debug)]
pub struct MonotonicClock {
    start: Instant,
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self { start: Instant::now() }
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A clock that moves only when told to (tests, benches).
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(by, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.nanos.load(Ordering::Relaxed)
    }
}

const SHARDS: usize = 64;
/// How often each shard drops the keys whose buckets are full again.
const SWEEP_EVERY: u64 = 5_000_000_000;

/// Keys are already `RandomState` hashes: hashing them again is waste.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in so it still works.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type TatMap = HashMap<u64, u64, BuildHasherDefault<PassThrough>>;

struct ShardState {
    tats: TatMap,
    next_sweep: u64,
}

#[repr(align(64))]
struct Shard(Mutex<ShardState>);

/// The local GCRA state of every local rule (and of Redis rules while
/// Redis is unreachable), bounded by `max_keys`.
pub struct LocalStore {
    shards: Box<[Shard]>,
    shard_cap: usize,
    clock: Arc<dyn Clock>,
    hasher: std::hash::RandomState,
}

impl std::fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore").field("keys", &self.len()).field("max_keys", &(self.shard_cap * SHARDS)).finish()
    }
}

impl LocalStore {
    pub fn new(max_keys: usize, clock: Arc<dyn Clock>) -> Self {
        let shard_cap = max_keys.div_ceil(SHARDS).max(1);
        let shards =
            (0..SHARDS).map(|_| Shard(Mutex::new(ShardState { tats: TatMap::default(), next_sweep: 0 }))).collect();
        Self { shards, shard_cap, clock, hasher: std::hash::RandomState::new() }
    }

    /// A hasher for one key; seeded per process, so a client cannot aim
    /// its keys at one shard or collide with someone else's key.
    pub fn key_hasher(&self) -> impl Hasher {
        self.hasher.build_hasher()
    }

    pub fn now(&self) -> u64 {
        self.clock.now()
    }

    /// The most keys held at once.
    pub fn capacity(&self) -> usize {
        self.shard_cap * SHARDS
    }

    /// Keys currently held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).tats.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One GCRA decision for the key whose hash is `key`.
    pub fn decide(&self, key: u64, gcra: &Gcra, cost: u32) -> Decision {
        let now = self.clock.now();
        // Middle bits pick the shard: the low bits pick the bucket inside
        // the map and the top seven are its tag.
        let shard = &self.shards[((key >> 32) as usize) & (SHARDS - 1)];
        let mut state = lock(shard);
        if now >= state.next_sweep {
            state.tats.retain(|_, tat| *tat > now);
            state.next_sweep = now.saturating_add(SWEEP_EVERY);
        }
        let stored = state.tats.get(&key).copied();
        let (decision, new_tat) = gcra.decide(stored, now, cost);
        if let Some(tat) = new_tat {
            if stored.is_none() && state.tats.len() >= self.shard_cap {
                make_room(&mut state.tats, now);
            }
            state.tats.insert(key, tat);
        }
        decision
    }
}

fn lock(shard: &Shard) -> std::sync::MutexGuard<'_, ShardState> {
    // The critical sections cannot panic halfway through an update that
    // matters; a poisoned shard is still consistent.
    shard.0.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Frees at least a quarter of a full shard: first the keys whose buckets
/// are full again (no decision changes), then, under a flood of live keys,
/// those closest to full (the least state is lost). Freeing a fraction at
/// once keeps the cost amortized O(1) per new key.
fn make_room(tats: &mut TatMap, now: u64) {
    let before = tats.len();
    let to_free = (before / 4).max(1);
    tats.retain(|_, tat| *tat > now);
    if tats.len() + to_free > before {
        let mut all: Vec<u64> = tats.values().copied().collect();
        let k = (all.len() / 4).max(1);
        let (_, threshold, _) = all.select_nth_unstable(k - 1);
        let threshold = *threshold;
        tats.retain(|_, tat| *tat > threshold);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::rate_limits::Rate;

    fn gcra(rate: &str, burst: u32) -> Gcra {
        Gcra::new(rate.parse::<Rate>().expect("rate"), burst)
    }

    #[test]
    fn stale_keys_are_swept_and_the_cap_holds() {
        let clock = Arc::new(ManualClock::default());
        let store = LocalStore::new(6_400, clock.clone());
        let g = gcra("10/s", 10);
        for key in 0..100_000u64 {
            let key = store.hasher.hash_one(key);
            assert!(store.decide(key, &g, 1).allowed);
            assert!(store.len() <= store.capacity());
        }
        assert!(!store.is_empty());
        // Every bucket refilled; the periodic sweep forgets them all.
        clock.advance(Duration::from_secs(10));
        for shard in 0..SHARDS as u64 {
            store.decide(shard << 32, &g, 1);
        }
        assert_eq!(store.len(), SHARDS);
    }

    #[test]
    fn eviction_under_pressure_keeps_the_most_used_keys() {
        let clock = Arc::new(ManualClock::default());
        let store = LocalStore::new(SHARDS * 8, clock);
        let g = gcra("1/s", 10);
        // A heavy key in shard 0 has used its whole burst.
        let heavy = 7u64;
        for _ in 0..10 {
            assert!(store.decide(heavy, &g, 1).allowed);
        }
        // A flood of one-off keys into the same shard.
        for i in 1..1_000u64 {
            store.decide(i << 16, &g, 1);
        }
        assert!(store.len() <= store.capacity());
        assert!(!store.decide(heavy, &g, 1).allowed, "heavy key forgotten");
    }
}
