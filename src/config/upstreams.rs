//! The long form of an upstream (DESIGN §4b): where its endpoints come
//! from, how calls are spread over them, how they are checked, when a call
//! is tried again, and how many may run at once.

use std::num::NonZeroUsize;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::check::{self, Check};
use super::values::{parse_upstream_url, DurationValue};

/// How an upstream treats its endpoints. The short form (`PATTERN: URL`)
/// gets the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    /// A fixed list; empty: every address the URL's host resolves to.
    pub endpoints: Vec<http::Uri>,
    /// How often the host is resolved again.
    pub dns_refresh: Duration,
    pub balance: Balance,
    /// HTTP/2 connections per endpoint.
    pub connections: usize,
    /// `grpc.health.v1.Health/Check` probes; `None`: off.
    pub health_check: Option<HealthCheck>,
    /// Passive ejection of failing endpoints; `None`: off.
    pub outlier: Option<Outlier>,
    pub retries: Retries,
    /// Calls in flight at once; more are refused with 503 at once.
    pub max_concurrent_requests: Option<NonZeroUsize>,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            dns_refresh: Duration::from_secs(5),
            balance: Balance::LeastRequest,
            connections: 1,
            health_check: None,
            outlier: None,
            retries: Retries::default(),
            max_concurrent_requests: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// The less busy of two endpoints picked at random.
    #[default]
    LeastRequest,
    RoundRobin,
}

impl Balance {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LeastRequest => "least_request",
            Self::RoundRobin => "round_robin",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthCheck {
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failed checks that take an endpoint out.
    pub unhealthy: u32,
    /// Consecutive passed checks that bring it back.
    pub healthy: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outlier {
    /// Transport failures or trailers-only UNAVAILABLE answers in a row.
    pub consecutive_failures: u32,
    /// How long the first ejection lasts; the n-th lasts n times as long
    /// (at most 5 minutes).
    pub ejection: Duration,
    /// At most this share of the endpoints is ejected at once, in percent.
    pub max_ejected_percent: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retries {
    /// Every try, the first included (gRPC's maxAttempts).
    pub attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Retries may add at most this share of the requests of the last 10 s,
    /// in percent; 100: no budget.
    pub budget_percent: u32,
}

impl Default for Retries {
    fn default() -> Self {
        Self {
            attempts: 2,
            backoff: Duration::from_millis(25),
            max_backoff: Duration::from_millis(250),
            budget_percent: 20,
        }
    }
}

/// `PATTERN: { url, endpoints, dns_refresh, ... }` as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with url, endpoints, dns_refresh, balance, connections, health_check, outlier, retries, \
                 max_concurrent_requests"
)]
pub(super) struct UpstreamMap {
    #[serde(default, deserialize_with = "opt_url")]
    pub(super) url: Option<http::Uri>,
    #[serde(default, deserialize_with = "urls")]
    endpoints: Vec<http::Uri>,
    dns_refresh: Option<DurationValue>,
    balance: Option<Balance>,
    connections: Option<NonZeroUsize>,
    health_check: Option<check::Checked<HealthCheckRaw>>,
    outlier: Option<check::Checked<OutlierRaw>>,
    retries: Option<check::Checked<RetriesRaw>>,
    max_concurrent_requests: Option<NonZeroUsize>,
}

impl Check for UpstreamMap {
    fn check(&self) -> Result<(), String> {
        if self.url.is_none() && self.endpoints.is_empty() {
            return Err("give `url` (every address its host resolves to) or `endpoints`".into());
        }
        if self.url.is_some() && !self.endpoints.is_empty() {
            return Err("give `url` or `endpoints`, not both".into());
        }
        if let Some(first) = self.endpoints.first() {
            if self.endpoints.iter().any(|e| e.scheme_str() != first.scheme_str()) {
                return Err("every endpoint must use the same scheme (all http:// or all https://)".into());
            }
            if let Some(i) = (1..self.endpoints.len()).find(|&i| self.endpoints[..i].contains(&self.endpoints[i])) {
                return Err(format!("endpoint {} is listed twice", self.endpoints[i]));
            }
        }
        if self.dns_refresh.as_ref().is_some_and(|DurationValue(d)| d.is_zero()) {
            return Err("`dns_refresh` must be greater than zero".into());
        }
        Ok(())
    }
}

impl UpstreamMap {
    /// The URL that names the upstream (its label) and its settings.
    pub(super) fn resolve(self) -> (http::Uri, UpstreamSettings) {
        let defaults = UpstreamSettings::default();
        let url = self.url.clone().or_else(|| self.endpoints.first().cloned()).unwrap_or_default();
        let settings = UpstreamSettings {
            endpoints: self.endpoints,
            dns_refresh: self.dns_refresh.map_or(defaults.dns_refresh, |DurationValue(d)| d),
            balance: self.balance.unwrap_or_default(),
            connections: self.connections.map_or(defaults.connections, NonZeroUsize::get),
            health_check: self.health_check.map(|check::Checked(h)| h.resolve()),
            outlier: self.outlier.map(|check::Checked(o)| o.resolve()),
            retries: self.retries.map_or(defaults.retries, |check::Checked(r)| r.resolve()),
            max_concurrent_requests: self.max_concurrent_requests,
        };
        (url, settings)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with interval, timeout, unhealthy, healthy")]
struct HealthCheckRaw {
    interval: Option<DurationValue>,
    timeout: Option<DurationValue>,
    unhealthy: Option<std::num::NonZeroU32>,
    healthy: Option<std::num::NonZeroU32>,
}

impl Check for HealthCheckRaw {
    fn check(&self) -> Result<(), String> {
        let (interval, timeout) = (self.interval(), self.timeout());
        if interval.is_zero() || timeout.is_zero() {
            return Err("`interval` and `timeout` must be greater than zero".into());
        }
        if timeout > interval {
            return Err("`timeout` must not be longer than `interval`".into());
        }
        Ok(())
    }
}

impl HealthCheckRaw {
    fn interval(&self) -> Duration {
        self.interval.as_ref().map_or(Duration::from_secs(5), |DurationValue(d)| *d)
    }

    fn timeout(&self) -> Duration {
        self.timeout.as_ref().map_or(Duration::from_secs(1), |DurationValue(d)| *d)
    }

    fn resolve(self) -> HealthCheck {
        HealthCheck {
            interval: self.interval(),
            timeout: self.timeout(),
            unhealthy: self.unhealthy.map_or(3, |n| n.get()),
            healthy: self.healthy.map_or(2, |n| n.get()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with consecutive_failures, ejection, max_ejected")]
struct OutlierRaw {
    consecutive_failures: Option<std::num::NonZeroU32>,
    ejection: Option<DurationValue>,
    #[serde(default, deserialize_with = "percent")]
    max_ejected: Option<u32>,
}

impl Check for OutlierRaw {
    fn check(&self) -> Result<(), String> {
        if self.ejection.as_ref().is_some_and(|DurationValue(d)| d.is_zero()) {
            return Err("`ejection` must be greater than zero".into());
        }
        Ok(())
    }
}

impl OutlierRaw {
    fn resolve(self) -> Outlier {
        Outlier {
            consecutive_failures: self.consecutive_failures.map_or(5, |n| n.get()),
            ejection: self.ejection.map_or(Duration::from_secs(30), |DurationValue(d)| d),
            max_ejected_percent: self.max_ejected.unwrap_or(50),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with attempts, backoff, max_backoff, budget")]
struct RetriesRaw {
    attempts: Option<std::num::NonZeroU32>,
    backoff: Option<DurationValue>,
    max_backoff: Option<DurationValue>,
    #[serde(default, deserialize_with = "percent")]
    budget: Option<u32>,
}

impl Check for RetriesRaw {
    fn check(&self) -> Result<(), String> {
        let defaults = Retries::default();
        let backoff = self.backoff.as_ref().map_or(defaults.backoff, |DurationValue(d)| *d);
        let max = self.max_backoff.as_ref().map_or(defaults.max_backoff.max(backoff), |DurationValue(d)| *d);
        if max < backoff {
            return Err("`max_backoff` must not be shorter than `backoff`".into());
        }
        if self.attempts.is_some_and(|n| n.get() > 5) {
            return Err("`attempts` is at most 5 (every try, the first included)".into());
        }
        Ok(())
    }
}

impl RetriesRaw {
    fn resolve(self) -> Retries {
        let defaults = Retries::default();
        let backoff = self.backoff.map_or(defaults.backoff, |DurationValue(d)| d);
        Retries {
            attempts: self.attempts.map_or(defaults.attempts, |n| n.get()),
            backoff,
            max_backoff: self.max_backoff.map_or(defaults.max_backoff.max(backoff), |DurationValue(d)| d),
            budget_percent: self.budget.unwrap_or(defaults.budget_percent),
        }
    }
}

fn opt_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<http::Uri>, D::Error> {
    check::parsed(d, "a URL such as http://users:50051", parse_upstream_url).map(Some)
}

fn urls<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<http::Uri>, D::Error> {
    struct Url(http::Uri);
    impl<'de> Deserialize<'de> for Url {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            check::parsed(d, "a URL such as http://10.0.0.5:50051", parse_upstream_url).map(Url)
        }
    }
    Vec::<Url>::deserialize(d).map(|urls| urls.into_iter().map(|Url(u)| u).collect())
}

/// `"50%"`: a whole percentage from 0 to 100.
fn percent<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    fn parse(text: &str) -> Result<u32, String> {
        let digits = text.trim().strip_suffix('%').ok_or_else(|| format!("`{text}` is not a percentage like 50%"))?;
        match digits.trim().parse::<u32>() {
            Ok(n) if n <= 100 => Ok(n),
            _ => Err(format!("`{text}` is not a percentage from 0% to 100%")),
        }
    }
    check::parsed(d, "a percentage such as 50%", parse).map(Some)
}
