//! Rate limiting (DESIGN §7, docs/rate-limits.md): GCRA buckets keyed by
//! consumer, client IP, a header or the route, kept in process
//! ([`local`]) or in Redis shared by every replica ([`redis`]).
//!
//! Rules are matched to routes once, when the catalog is built
//! ([`rule::RuleSet`] attaches each route's [`rule::RouteLimits`] to its
//! extension slot); a request only computes
//! its keys and asks the backends. Local decisions are synchronous; only
//! Redis-backed rules make the request wait.

pub mod client_ip;
pub mod gcra;
pub mod key;
pub mod layer;
pub mod local;
pub mod redis;
pub mod rule;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tonic::Code;

use self::client_ip::TrustedProxies;
use self::gcra::{ceil_secs, Decision};
use self::key::KeySource;
use self::local::{Clock, LocalStore, MonotonicClock};
use self::redis::RedisBackend;
use self::rule::{ResolvedLimit, RouteLimits, Rule};
use crate::config::rate_limits::{Backend, OnRedisError, RateLimitsConfig};
use crate::error::{Fault, GatewayError};
use crate::metrics::{Metrics, RateLimitOutcome};

pub use self::layer::{RateLimit, RateLimitLayer};

pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// The state behind every rule: the local store, the Redis connection and
/// the proxy trust. One per gateway; it outlives catalog reloads, so
/// buckets survive them.
pub struct RateLimiter {
    local: LocalStore,
    redis: Option<RedisBackend>,
    trusted: TrustedProxies,
    on_redis_error: OnRedisError,
    denied: AtomicU64,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").field("local", &self.local).field("redis", &self.redis).finish_non_exhaustive()
    }
}

impl RateLimiter {
    pub fn new(config: &RateLimitsConfig) -> Self {
        Self::with_clock(config, Arc::new(MonotonicClock::default()))
    }

    /// With a clock of the caller's (tests: [`local::ManualClock`]).
    pub fn with_clock(config: &RateLimitsConfig, clock: Arc<dyn Clock>) -> Self {
        let redis = config.redis.as_ref().and_then(|redis| {
            // An invalid URL is a load error reported by `rule::compile`
            // before a gateway is built; here it can only mean "no Redis".
            RedisBackend::new(redis, clock.clone())
                .map_err(|err| tracing::error!(error = %err, "rate_limits.redis.url is invalid"))
                .ok()
        });
        Self {
            local: LocalStore::new(config.max_keys.max(1), clock),
            redis,
            trusted: TrustedProxies::new(config.trusted_proxies.clone(), config.client_ip_header),
            on_redis_error: config.on_redis_error,
            denied: AtomicU64::new(0),
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// Decisions are counted in `metrics` (else in a registry of their own).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    fn count(&self, rule: &Rule, decision: &Decision) {
        let outcome = match decision.allowed {
            true => RateLimitOutcome::Allowed,
            false => RateLimitOutcome::Limited,
        };
        self.metrics.ratelimit_decision(&rule.name, outcome);
    }

    /// The local store (for its size and cap).
    pub fn local(&self) -> &LocalStore {
        &self.local
    }

    /// Requests refused since start.
    pub fn denied(&self) -> u64 {
        self.denied.load(Ordering::Relaxed)
    }

    /// Decisions Redis could not make since start.
    pub fn redis_failures(&self) -> u64 {
        self.redis.as_ref().map_or(0, RedisBackend::failures)
    }

    /// Decides the local rules of `limits` now and prepares the Redis ones.
    pub fn check(&self, limits: &RouteLimits, peer: SocketAddr, headers: &HeaderMap, consumer: Option<&str>) -> Check {
        let mut keys = KeySource::new(peer, headers, consumer, &limits.route_key, &self.trusted);
        let mut verdict = Verdict::new(limits);
        let mut pending = Vec::new();
        for limit in limits.limits.iter() {
            match limit.rule.backend {
                Backend::Local => {
                    let key = keys.hash(&limit.rule, self.local.key_hasher());
                    let decision = self.local.decide(key, &limit.rule.gcra, limit.cost);
                    self.count(&limit.rule, &decision);
                    if let Err(err) = verdict.add(&limit.rule, decision) {
                        self.denied.fetch_add(1, Ordering::Relaxed);
                        return Check::Done(Err(err));
                    }
                }
                Backend::Redis => pending.push(PendingLimit {
                    limit: limit.clone(),
                    key: keys.text(&limit.rule),
                    local_key: keys.hash(&limit.rule, self.local.key_hasher()),
                }),
            }
        }
        if pending.is_empty() {
            Check::Done(Ok(verdict))
        } else {
            Check::Pending(Pending { verdict, pending })
        }
    }
}

/// The result of [`RateLimiter::check`].
pub enum Check {
    /// Decided without waiting: pass with these headers, or refuse.
    Done(Result<Verdict, GatewayError>),
    /// Redis-backed rules remain: [`Pending::run`].
    Pending(Pending),
}

struct PendingLimit {
    limit: ResolvedLimit,
    key: String,
    /// For the local fallback while Redis is down.
    local_key: u64,
}

pub struct Pending {
    verdict: Verdict,
    pending: Vec<PendingLimit>,
}

impl Pending {
    /// Asks Redis for the remaining rules, in order; the first refusal
    /// ends the check.
    pub async fn run(self, limiter: &RateLimiter) -> Result<Verdict, GatewayError> {
        let Pending { mut verdict, pending } = self;
        for p in pending {
            let rule = &p.limit.rule;
            let outcome = match &limiter.redis {
                Some(redis) => redis.decide(&p.key, &rule.gcra, p.limit.cost).await.ok(),
                None => None,
            };
            // A decision Redis could not make counts as `error`, whether
            // the local fallback then allows it or the request is refused.
            match &outcome {
                Some(decision) => limiter.count(rule, decision),
                None => limiter.metrics.ratelimit_decision(&rule.name, RateLimitOutcome::Error),
            }
            let decision = match (outcome, limiter.on_redis_error) {
                (Some(decision), _) => decision,
                (None, OnRedisError::Allow) => limiter.local.decide(p.local_key, &rule.gcra, p.limit.cost),
                (None, OnRedisError::Deny) => {
                    limiter.denied.fetch_add(1, Ordering::Relaxed);
                    return Err(unavailable());
                }
            };
            if let Err(err) = verdict.add(rule, decision) {
                limiter.denied.fetch_add(1, Ordering::Relaxed);
                return Err(err);
            }
        }
        Ok(verdict)
    }
}

fn unavailable() -> GatewayError {
    GatewayError::new(Code::Unavailable, Fault::Internal, "rate limiting is temporarily unavailable; try again later")
        .with_header(RETRY_AFTER, HeaderValue::from_static("1"))
}

/// The headers an allowed request's response carries: those of the most
/// restrictive rule (fewest requests left).
#[derive(Debug, Clone)]
pub struct Verdict {
    policy: Option<HeaderValue>,
    tightest: Option<(HeaderValue, Decision)>,
}

impl Verdict {
    fn new(limits: &RouteLimits) -> Self {
        Self { policy: limits.policy.clone(), tightest: None }
    }

    /// Folds one decision in; a refusal becomes the 429.
    fn add(&mut self, rule: &Rule, decision: Decision) -> Result<(), GatewayError> {
        if !decision.allowed {
            let mut err = GatewayError::new(Code::ResourceExhausted, Fault::Client, rule.exceeded_message())
                .with_status(StatusCode::TOO_MANY_REQUESTS)
                .with_header(RETRY_AFTER, HeaderValue::from(ceil_secs(decision.retry_after).max(1)));
            for (name, value) in headers_of(&rule.limit_header, &decision, &self.policy) {
                err = err.with_header(name, value);
            }
            return Err(err);
        }
        let tighter = match &self.tightest {
            None => true,
            Some((_, best)) => {
                (decision.remaining, std::cmp::Reverse(decision.reset))
                    < (best.remaining, std::cmp::Reverse(best.reset))
            }
        };
        if tighter {
            self.tightest = Some((rule.limit_header.clone(), decision));
        }
        Ok(())
    }

    /// Adds `RateLimit-*` to a response.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if let Some((limit, decision)) = &self.tightest {
            for (name, value) in headers_of(limit, decision, &self.policy) {
                headers.insert(name, value);
            }
        }
    }
}

fn headers_of(
    limit: &HeaderValue,
    decision: &Decision,
    policy: &Option<HeaderValue>,
) -> impl Iterator<Item = (HeaderName, HeaderValue)> {
    [
        Some((RATELIMIT_LIMIT, limit.clone())),
        Some((RATELIMIT_REMAINING, HeaderValue::from(decision.remaining))),
        Some((RATELIMIT_RESET, HeaderValue::from(ceil_secs(decision.reset)))),
        policy.clone().map(|p| (RATELIMIT_POLICY, p)),
    ]
    .into_iter()
    .flatten()
}
