//! The `rate_limits:` section of the config file, as serde types. Values
//! with a grammar of their own (`100/s`, `10.0.0.0/8`, `50ms`) are parsed
//! while deserializing, so a bad value is reported with its key and line.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

/// `rate_limits:`. The default has no rules: nothing is limited.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsConfig {
    /// Peers whose forwarding headers are believed (CIDRs or bare addresses).
    pub trusted_proxies: Vec<Cidr>,
    /// Which forwarding header trusted proxies write.
    pub client_ip_header: ClientIpHeader,
    /// Required when a rule uses `backend: redis`.
    pub redis: Option<RedisConfig>,
    /// What a `redis` rule decides while Redis cannot be reached.
    pub on_redis_error: OnRedisError,
    /// The most keys the local limiter keeps at once (memory bound).
    pub max_keys: usize,
    /// Every rule that selects a route applies to it, in this order.
    pub rules: Vec<RuleConfig>,
}

/// The default cap on local keys: about 32 MB at the worst.
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;

impl Default for RateLimitsConfig {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            client_ip_header: ClientIpHeader::default(),
            redis: None,
            on_redis_error: OnRedisError::default(),
            max_keys: DEFAULT_MAX_KEYS,
            rules: Vec::new(),
        }
    }
}

/// The forwarding header a trusted proxy appends to. Only one is read: a
/// proxy that appends to one passes the other through untouched, and a
/// client could otherwise choose its address by sending the other one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum ClientIpHeader {
    #[default]
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    #[serde(rename = "forwarded")]
    Forwarded,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]` or `rediss://…`.
    pub url: String,
    /// Put in front of every key, so several gateways (or other users) can
    /// share one Redis.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// The longest a decision waits for Redis before falling back.
    #[serde(default = "default_redis_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
}

fn default_key_prefix() -> String {
    "protogate:".into()
}

fn default_redis_timeout() -> Duration {
    Duration::from_millis(50)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRedisError {
    /// Decide with the local limiter of this replica (fail open to the
    /// per-replica limit).
    #[default]
    Allow,
    /// Refuse requests on Redis-backed rules with 503.
    Deny,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Names the limit in 429 messages and in Redis keys; `rule-N` (N from
    /// 1, in file order) when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// Which routes the rule applies to; empty selects every route.
    #[serde(default, rename = "match")]
    pub selector: RuleMatch,
    /// What one bucket is per: one part or a list of parts.
    pub key: KeySpec,
    pub rate: Rate,
    /// Requests allowed at once (bucket size); the rate's count by default.
    #[serde(default)]
    pub burst: Option<u32>,
    /// Units one request takes; 1 by default.
    #[serde(default = "one")]
    pub cost: u32,
    /// Per-route costs: the first entry that selects the route wins over
    /// `cost`.
    #[serde(default)]
    pub route_costs: Vec<RouteCost>,
    #[serde(default)]
    pub backend: Backend,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteCost {
    #[serde(rename = "match")]
    pub selector: RuleMatch,
    pub cost: u32,
}

/// Selects routes like policies do; every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleMatch {
    pub path_prefix: Option<String>,
    /// Fully-qualified service, `acme.users.v1.UserService`.
    pub service: Option<String>,
    /// `acme.users.v1.UserService/GetUser`.
    pub method: Option<String>,
    #[serde(default, deserialize_with = "http_method")]
    pub http_method: Option<http::Method>,
    /// The route's URL version prefix (`v1`).
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum KeySpec {
    One(String),
    Many(Vec<String>),
}

impl KeySpec {
    pub fn parts(&self) -> &[String] {
        match self {
            KeySpec::One(one) => std::slice::from_ref(one),
            KeySpec::Many(many) => many,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Local,
    Redis,
}

/// `N/s`, `N/min`, `N/h`, `N/d`: N requests per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub period: Duration,
}

impl Rate {
    /// The period as the `w=` of `RateLimit-Policy` (seconds).
    pub fn window_secs(&self) -> u64 {
        self.period.as_secs()
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.period.as_secs() {
            1 => "second",
            60 => "minute",
            3600 => "hour",
            _ => "day",
        };
        write!(f, "{} per {unit}", self.count)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rate {0:?}: expected N/s, N/min, N/h or N/d with N ≥ 1")]
pub struct RateError(String);

impl FromStr for Rate {
    type Err = RateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || RateError(s.to_string());
        let (count, unit) = s.split_once('/').ok_or_else(err)?;
        let count: u32 = count.trim().parse().map_err(|_| err())?;
        if count == 0 {
            return Err(err());
        }
        let secs = match unit.trim() {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3600,
            "d" | "day" => 86_400,
            _ => return Err(err()),
        };
        Ok(Self { count, period: Duration::from_secs(secs) })
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A network in CIDR notation; a bare address is its own /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(pub IpNet);

impl Cidr {
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.0.contains(ip)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(net) = s.parse::<IpNet>() {
            // 10.1.2.3/8 is almost certainly meant as 10.0.0.0/8.
            return Ok(Self(net.trunc()));
        }
        match s.parse::<IpAddr>() {
            Ok(ip) => Ok(Self(IpNet::from(ip))),
            Err(_) => Err(format!("invalid network {s:?}: expected an address or CIDR (10.0.0.0/8)")),
        }
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `250ms`, `2s`, `1m`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    Some(match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" | "min" => Duration::from_secs(n.checked_mul(60)?),
        _ => return None,
    })
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    match parse_duration(&text) {
        Some(t) if !t.is_zero() => Ok(t),
        _ => Err(serde::de::Error::custom(format!("invalid duration {text:?}: expected e.g. 50ms or 1s"))),
    }
}

fn http_method<'de, D: Deserializer<'de>>(d: D) -> Result<Option<http::Method>, D::Error> {
    let text = String::deserialize(d)?;
    http::Method::from_bytes(text.to_ascii_uppercase().as_bytes())
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("invalid HTTP method {text:?}")))
}
