//! The shared limiter: GCRA in one Lua script, run atomically by Redis, so
//! any number of replicas sharing one Redis enforce one limit. The script
//! reads Redis's own clock (`TIME`), so replicas' clocks need not agree,
//! and the key expires when its bucket is full again, so Redis holds only
//! live buckets.
//!
//! Failure handling lives here too: every decision has a deadline; after a
//! failure Redis is skipped for a short while (no request waits on a dead
//! server) and the caller falls back; warnings are rate-limited; the
//! connection manager reconnects on its own.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::gcra::{Decision, Gcra};
use super::local::Clock;
use crate::config::rate_limits::RedisConfig;

/// KEYS[1] the bucket; ARGV interval, capacity, increment in µs.
/// Returns {allowed, TAT − now after the decision, retry after}, in µs.
/// `string.format('%d')` because Lua would print a large TAT as `1.7e+15`.
const GCRA_SCRIPT: &str = r"
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local increment = tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then
  tat = now
end
local new_tat = tat + increment
local ahead = new_tat - now
if ahead > capacity then
  return {0, tat - now, ahead - capacity}
end
if increment > 0 then
  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil(ahead / 1000) + 1)
end
return {1, ahead, 0}
";

/// How long Redis is skipped after a failure before it is tried again.
const BACKOFF: u64 = 500_000_000;
/// At most one warning per this many nanoseconds.
const WARN_EVERY: u64 = 10_000_000_000;

#[derive(Debug, thiserror::Error)]
pub enum RedisFailure {
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis skipped after a recent failure")]
    Backoff,
}

pub struct RedisBackend {
    client: redis::Client,
    /// Made on first use: it needs the runtime, and it connects lazily.
    manager: OnceLock<ConnectionManager>,
    script: redis::Script,
    timeout: Duration,
    clock: Arc<dyn Clock>,
    skip_until: AtomicU64,
    next_warning: AtomicU64,
    suppressed: AtomicU64,
    failing: AtomicBool,
    failures: AtomicU64,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl RedisBackend {
    pub fn new(config: &RedisConfig, clock: Arc<dyn Clock>) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(config.url.as_str())?,
            manager: OnceLock::new(),
            script: redis::Script::new(GCRA_SCRIPT),
            timeout: config.timeout,
            clock,
            skip_until: AtomicU64::new(0),
            next_warning: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            failures: AtomicU64::new(0),
        })
    }

    /// Decisions that could not be made by Redis since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    fn manager(&self) -> Result<ConnectionManager, redis::RedisError> {
        if let Some(manager) = self.manager.get() {
            return Ok(manager.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout.max(Duration::from_millis(250))))
            // Our own deadline bounds each decision; a reconnect keeps
            // going in the background meanwhile.
            .set_response_timeout(None)
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(self.client.clone(), config)?;
        // Two first requests may race; the loser's manager is dropped.
        Ok(self.manager.get_or_init(|| manager).clone())
    }

    /// One atomic decision in Redis.
    pub async fn decide(&self, key: &str, gcra: &Gcra, cost: u32) -> Result<Decision, RedisFailure> {
        if self.clock.now() < self.skip_until.load(Ordering::Relaxed) {
            return Err(RedisFailure::Backoff);
        }
        let result = self.call(key, gcra, cost).await;
        match &result {
            Ok(_) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("redis rate limiter reachable again; shared limits restored");
                }
            }
            Err(err) => self.failed(err),
        }
        result
    }

    async fn call(&self, key: &str, gcra: &Gcra, cost: u32) -> Result<Decision, RedisFailure> {
        let interval = (gcra.interval / 1_000).max(1);
        let capacity = interval.saturating_mul(u64::from(gcra.burst));
        let increment = interval.saturating_mul(u64::from(cost));
        let mut conn = self.manager()?;
        let mut invocation = self.script.key(key);
        invocation.arg(interval).arg(capacity).arg(increment);
        let reply = tokio::time::timeout(self.timeout, invocation.invoke_async::<(i64, i64, i64)>(&mut conn))
            .await
            .map_err(|_| RedisFailure::Timeout(self.timeout))??;
        let (allowed, ahead, retry_after) = reply;
        let micros = |n: i64| u64::try_from(n).unwrap_or(0).saturating_mul(1_000);
        // Report in the same units as the local limiter.
        let local = Gcra { interval: interval * 1_000, capacity: capacity.saturating_mul(1_000), burst: gcra.burst };
        Ok(local.decision(allowed == 1, micros(ahead), micros(retry_after)))
    }

    fn failed(&self, err: &RedisFailure) {
        let now = self.clock.now();
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.skip_until.store(now.saturating_add(BACKOFF), Ordering::Relaxed);
        self.failing.store(true, Ordering::Relaxed);
        let next = self.next_warning.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_warning
                .compare_exchange(next, now.saturating_add(WARN_EVERY), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
            tracing::warn!(
                error = %err,
                suppressed,
                "redis rate limiter unavailable; deciding by rate_limits.on_redis_error"
            );
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }
}
