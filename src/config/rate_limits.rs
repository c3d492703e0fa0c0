//! The `rate_limits:` section of the config file, as serde types. Values
//! with a grammar of their own (`100/s`, `10.0.0.0/8`, `50ms`, key parts)
//! are parsed while deserializing, and what needs two places of the section
//! (unique names, cost against burst, a `redis` rule against the `redis`
//! section) once it is read, so every problem is reported with its key and
//! line (see `check`).

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::check::{self, KeyPath, Problem};

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
    /// The most keys the local limiter keeps at once (memory bound); at
    /// least 1.
    #[serde(deserialize_with = "check::at_least_one_usize")]
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
    #[serde(deserialize_with = "redis_url")]
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
    /// 1, in file order) when absent. Never empty.
    #[serde(default, deserialize_with = "rule_name")]
    pub name: Option<String>,
    /// Which routes the rule applies to; empty selects every route.
    #[serde(default, rename = "match")]
    pub selector: RuleMatch,
    /// What one bucket is per: one part or a list of parts.
    pub key: KeySpec,
    pub rate: Rate,
    /// Requests allowed at once (bucket size); the rate's count by default.
    /// At least 1.
    #[serde(default, deserialize_with = "check::opt_at_least_one_u32")]
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
    /// A composition's name: selects that composition's route only.
    #[serde(default, deserialize_with = "composition")]
    pub composition: Option<String>,
}

fn composition<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    check::opt_str_rule(d, super::selector::check_composition)
}

/// What one bucket is per, as written: one part (`ip`) or a list of parts
/// (`[consumer, route]`). Parsed while reading: never empty, no part twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec(Vec<KeyPart>);

impl KeySpec {
    pub fn parts(&self) -> &[KeyPart] {
        &self.0
    }
}

/// One part of a bucket key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// The authenticated consumer; the client IP for anonymous requests.
    Consumer,
    /// The client IP (see `client_ip.rs`).
    Ip,
    /// The route itself: one bucket per HTTP method and template.
    Route,
    /// A request header's value; the client IP when the header is absent.
    Header(HeaderName),
}

impl FromStr for KeyPart {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "consumer" => Ok(Self::Consumer),
            "ip" => Ok(Self::Ip),
            "route" => Ok(Self::Route),
            other => match other.strip_prefix("header:") {
                Some(name) => HeaderName::try_from(name.trim())
                    .map(Self::Header)
                    .map_err(|_| format!("invalid header name {name:?} in key")),
                None => Err(format!("unknown key part {other:?}: expected consumer, ip, route or header:NAME")),
            },
        }
    }
}

impl<'de> Deserialize<'de> for KeySpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeySpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key part (consumer, ip, route, header:NAME) or a list of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeySpec, E> {
                v.parse().map(|part| KeySpec(vec![part])).map_err(E::custom)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KeySpec, A::Error> {
                let mut parts = Vec::new();
                // Each part is read through a seed that knows the earlier
                // ones, so a repeated part is reported at its own line.
                while let Some(part) = seq.next_element_seed(PartSeed { seen: &parts })? {
                    parts.push(part);
                }
                if parts.is_empty() {
                    return Err(de::Error::custom("at least one part is needed"));
                }
                Ok(KeySpec(parts))
            }
        }
        d.deserialize_any(V)
    }
}

struct PartSeed<'a> {
    seen: &'a [KeyPart],
}

impl<'de> DeserializeSeed<'de> for PartSeed<'_> {
    type Value = KeyPart;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<KeyPart, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for PartSeed<'_> {
    type Value = KeyPart;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key part: consumer, ip, route or header:NAME")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyPart, E> {
        let part: KeyPart = v.parse().map_err(E::custom)?;
        if self.seen.contains(&part) {
            return Err(E::custom(format!("{v:?} appears twice")));
        }
        Ok(part)
    }
}

fn rule_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    check::opt_str_rule(d, |name| if name.is_empty() { Err("must not be empty".into()) } else { Ok(()) })
}

/// Parsed as the client will parse it; the URL may hold a password, so the
/// message names the problem, never the URL.
fn redis_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    check::str_rule(d, |url| match redis::Client::open(url) {
        Ok(_) => Ok(()),
        Err(err) => {
            Err(format!("not a Redis URL (redis://[user:password@]host:port[/db] or rediss://...): {}", err.category()))
        }
    })
}

impl RuleConfig {
    /// `name`, or `rule-N` (N from 1) for the rule at `index`.
    pub fn name_or_default(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| format!("rule-{}", index + 1))
    }

    /// The bucket size: `burst`, else the rate's count.
    pub fn bucket_size(&self) -> u32 {
        self.burst.unwrap_or(self.rate.count)
    }
}

impl RateLimitsConfig {
    /// What needs more than one place of the section: names are unique, no
    /// cost exceeds its rule's burst, a `redis` rule has a `redis` section.
    /// The path is relative to `rate_limits`.
    pub(super) fn problem(&self) -> Option<Problem> {
        let mut names = HashSet::new();
        for (index, rule) in self.rules.iter().enumerate() {
            let at = || KeyPath::new().key("rules").index(index);
            let name = rule.name_or_default(index);
            if !names.insert(name.clone()) {
                let message = match rule.name {
                    Some(_) => format!("another rule is named {name:?}"),
                    None => format!("another rule is named {name:?}, this rule's default name: give it a name"),
                };
                return Some(at().key("name").problem(message));
            }
            let burst = rule.bucket_size();
            let exceeds =
                |cost: u32| format!("rule {name:?}: cost {cost} exceeds the burst {burst}: no request could ever pass");
            if rule.cost > burst {
                return Some(at().key("cost").problem(exceeds(rule.cost)));
            }
            for (k, route_cost) in rule.route_costs.iter().enumerate() {
                if route_cost.cost > burst {
                    return Some(at().key("route_costs").index(k).key("cost").problem(exceeds(route_cost.cost)));
                }
            }
            if rule.backend == Backend::Redis && self.redis.is_none() {
                let message = format!("rule {name:?}: backend redis needs a rate_limits.redis section");
                return Some(at().key("backend").problem(message));
            }
        }
        None
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
