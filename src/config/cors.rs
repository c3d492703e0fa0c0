//! The `cors:` section of the config file (DESIGN §10): which browser
//! origins may call the gateway, globally and per route selector. Origins
//! are parsed while they are read, so a bad one is reported with its key
//! and line; what needs two places (`*` with `allow_credentials`, a route
//! entry inheriting from the global keys) is checked once the section is
//! read (see `check`). The request path never parses anything of this: the
//! CORS layer (`http::cors`) compiles it into header values at load.

use std::fmt;
use std::time::Duration;

use http::{HeaderName, Method};
use serde::de::Deserializer;
use serde::Deserialize;

use super::check::{self, Check, Checked, KeyPath, Problem};
use super::selector::SelectorRaw;
use super::values::{DurationValue, HttpMethod};
use super::RouteSelector;

/// `cors:`, resolved: the global settings and the per-route entries, each
/// entry's unset keys taken from the global ones.
#[derive(Debug, Clone, PartialEq)]
pub struct CorsConfig {
    pub settings: CorsSettings,
    /// The first entry whose selector selects a route gives its settings.
    pub routes: Vec<CorsRoute>,
}

/// One `cors.routes` entry, with the global keys laid under its own.
#[derive(Debug, Clone, PartialEq)]
pub struct CorsRoute {
    pub selector: RouteSelector,
    pub settings: CorsSettings,
}

/// What one CORS policy allows.
#[derive(Debug, Clone, PartialEq)]
pub struct CorsSettings {
    /// Empty: no origin is allowed (the default, so that a route entry can
    /// open a few routes only).
    pub allow_origins: Vec<OriginPattern>,
    pub allow_methods: Vec<Method>,
    /// `None`: the headers a preflight asks for are allowed (echoed).
    pub allow_headers: Option<Vec<HeaderName>>,
    pub expose_headers: Vec<HeaderName>,
    pub max_age: Duration,
    pub allow_credentials: bool,
}

/// The methods allowed when `allow_methods` is not given.
pub const DEFAULT_ALLOW_METHODS: [Method; 6] =
    [Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE];

/// The response headers a browser script may read when `expose_headers` is
/// not given: the gRPC status, the request id and the rate-limit headers.
pub const DEFAULT_EXPOSE_HEADERS: [&str; 8] = [
    "grpc-status",
    "grpc-message",
    "x-request-id",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "ratelimit-policy",
    "retry-after",
];

/// How long a browser may cache a preflight's answer by default.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);

impl Default for CorsSettings {
    fn default() -> Self {
        Self {
            allow_origins: Vec::new(),
            allow_methods: DEFAULT_ALLOW_METHODS.to_vec(),
            allow_headers: None,
            expose_headers: DEFAULT_EXPOSE_HEADERS.iter().map(|name| HeaderName::from_static(name)).collect(),
            max_age: DEFAULT_MAX_AGE,
            allow_credentials: false,
        }
    }
}

impl CorsSettings {
    /// Whether `*` is among the allowed origins.
    pub fn any_origin(&self) -> bool {
        self.allow_origins.contains(&OriginPattern::Any)
    }

    /// Whether the `Origin` header value `origin` is allowed.
    pub fn allows(&self, origin: &str) -> bool {
        self.allow_origins.iter().any(|pattern| pattern.matches(origin))
    }
}

/// One entry of `allow_origins`, lowercased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    /// `*`: every origin.
    Any,
    /// `https://app.example.com` (with its port when it has one).
    Exact(String),
    /// `https://*.example.com`: any subdomain, at any depth, of
    /// `example.com` with that scheme (and port): `https://a.example.com`,
    /// `https://a.b.example.com`; never `https://example.com` itself,
    /// `http://a.example.com` or `https://example.com.evil.com`.
    Subdomains {
        /// `https://`
        scheme: String,
        /// `.example.com`, or `.example.com:8443`.
        suffix: String,
    },
}

impl OriginPattern {
    /// Whether an `Origin` header value is one this pattern allows. The
    /// browser serializes origins lowercase; any case is accepted.
    pub fn matches(&self, origin: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(exact) => origin.eq_ignore_ascii_case(exact),
            Self::Subdomains { scheme, suffix } => {
                let Some(labels) =
                    strip_prefix_ignore_case(origin, scheme).and_then(|rest| strip_suffix_ignore_case(rest, suffix))
                else {
                    return false;
                };
                // The part the `*` stands for: one or more whole labels,
                // nothing that could end the host early (`:`, `/`, `@`).
                !labels.is_empty()
                    && !labels.starts_with('.')
                    && !labels.ends_with('.')
                    && !labels.contains("..")
                    && labels.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            }
        }
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

fn strip_suffix_ignore_case<'a>(text: &'a str, suffix: &str) -> Option<&'a str> {
    let at = text.len().checked_sub(suffix.len())?;
    let tail = text.get(at..)?;
    tail.eq_ignore_ascii_case(suffix).then(|| &text[..at])
}

impl fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Exact(origin) => f.write_str(origin),
            Self::Subdomains { scheme, suffix } => write!(f, "{scheme}*{suffix}"),
        }
    }
}

/// An `allow_origins` entry: `*`, `SCHEME://HOST[:PORT]`, or
/// `SCHEME://*.DOMAIN[:PORT]`. An origin has no path, so a trailing `/` is
/// refused rather than silently matching nothing.
pub fn parse_origin(text: &str) -> Result<OriginPattern, String> {
    if text == "*" {
        return Ok(OriginPattern::Any);
    }
    if text.eq_ignore_ascii_case("null") {
        return Err("origin `null` is refused: any sandboxed page or local file sends it".into());
    }
    let lower = text.to_ascii_lowercase();
    let Some((scheme, authority)) = lower.split_once("://") else {
        return Err(format!("origin `{text}` needs a scheme: https://{text}"));
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok {
        return Err(format!("origin `{text}` has an invalid scheme"));
    }
    if let Some(at) = authority.find(['/', '?', '#']) {
        let bare = format!("{scheme}://{}", &authority[..at]);
        return Err(format!("origin `{text}` must have no path: an origin is scheme://host[:port], e.g. {bare}"));
    }
    if authority.contains('@') {
        return Err(format!("origin `{text}` must have no user info"));
    }
    let (host, port) = split_port(authority).map_err(|problem| format!("origin `{text}`: {problem}"))?;
    let (wildcard, host) = match host.strip_prefix("*.") {
        Some(domain) => (true, domain),
        None => (false, host),
    };
    check_host(host).map_err(|problem| format!("origin `{text}`: {problem}"))?;
    if wildcard && host.starts_with('[') {
        return Err(format!("origin `{text}`: a wildcard needs a domain name, not an address"));
    }
    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
    Ok(if wildcard {
        OriginPattern::Subdomains { scheme: format!("{scheme}://"), suffix: format!(".{host}{port}") }
    } else {
        OriginPattern::Exact(format!("{scheme}://{host}{port}"))
    })
}

fn split_port(authority: &str) -> Result<(&str, Option<u16>), String> {
    // `[::1]:8080`: the port follows the bracket.
    let colon = match authority.rfind(']') {
        Some(end) => authority[end..].find(':').map(|i| end + i),
        None => authority.rfind(':'),
    };
    match colon {
        None => Ok((authority, None)),
        Some(at) => {
            let port = &authority[at + 1..];
            match port.parse::<u16>() {
                Ok(n) if n > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok((&authority[..at], Some(n))),
                _ => Err(format!("invalid port `{port}`")),
            }
        }
    }
}

fn check_host(host: &str) -> Result<(), String> {
    if host.starts_with('[') {
        let ok = host.ends_with(']')
            && host.len() > 2
            && host[1..host.len() - 1].bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        return if ok { Ok(()) } else { Err(format!("invalid address `{host}`")) };
    }
    if host.contains('*') {
        return Err("a wildcard may only be the first label: https://*.example.com".into());
    }
    let ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("invalid host `{host}`"))
    }
}

/// An `allow_origins` entry as read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin(OriginPattern);

impl<'de> Deserialize<'de> for Origin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let expecting = "an origin such as https://app.example.com, https://*.example.com or *";
        check::parsed(d, expecting, |v| parse_origin(v).map(Origin))
    }
}

/// An `allow_headers` or `expose_headers` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Header(HeaderName);

impl<'de> Deserialize<'de> for Header {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        check::parsed(d, "a header name", |v| {
            HeaderName::try_from(v.trim()).map(Header).map_err(|_| format!("`{v}` is not a valid header name"))
        })
    }
}

/// The keys a CORS policy has, as written: every one optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Keys {
    allow_origins: Option<Vec<Origin>>,
    allow_methods: Option<Vec<HttpMethod>>,
    allow_headers: Option<Vec<Header>>,
    expose_headers: Option<Vec<Header>>,
    max_age: Option<DurationValue>,
    allow_credentials: Option<bool>,
}

/// `cors:` as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with allow_origins, allow_methods, allow_headers, expose_headers, max_age, \
                 allow_credentials, routes"
)]
pub(super) struct CorsSection {
    allow_origins: Option<Vec<Origin>>,
    allow_methods: Option<Vec<HttpMethod>>,
    allow_headers: Option<Vec<Header>>,
    expose_headers: Option<Vec<Header>>,
    max_age: Option<DurationValue>,
    allow_credentials: Option<bool>,
    routes: Option<Vec<Checked<CorsRouteRaw>>>,
}

/// One `cors.routes` entry as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with match, allow_origins, allow_methods, allow_headers, expose_headers, max_age, \
                 allow_credentials"
)]
pub(super) struct CorsRouteRaw {
    #[serde(rename = "match")]
    pub(super) selector: Checked<SelectorRaw>,
    allow_origins: Option<Vec<Origin>>,
    allow_methods: Option<Vec<HttpMethod>>,
    allow_headers: Option<Vec<Header>>,
    expose_headers: Option<Vec<Header>>,
    max_age: Option<DurationValue>,
    allow_credentials: Option<bool>,
}

impl Check for CorsRouteRaw {
    fn check(&self) -> Result<(), String> {
        if self.keys().is_empty() {
            return Err("this entry changes nothing: give at least one of allow_origins, allow_methods, \
                        allow_headers, expose_headers, max_age, allow_credentials"
                .into());
        }
        Ok(())
    }
}

impl Keys {
    fn is_empty(&self) -> bool {
        self.allow_origins.is_none()
            && self.allow_methods.is_none()
            && self.allow_headers.is_none()
            && self.expose_headers.is_none()
            && self.max_age.is_none()
            && self.allow_credentials.is_none()
    }

    /// These keys laid over `base`.
    fn over(&self, base: &CorsSettings) -> CorsSettings {
        CorsSettings {
            allow_origins: self
                .allow_origins
                .as_ref()
                .map_or_else(|| base.allow_origins.clone(), |list| list.iter().map(|o| o.0.clone()).collect()),
            allow_methods: self
                .allow_methods
                .as_ref()
                .map_or_else(|| base.allow_methods.clone(), |list| list.iter().map(|m| m.0.clone()).collect()),
            allow_headers: match &self.allow_headers {
                Some(list) => Some(list.iter().map(|h| h.0.clone()).collect()),
                None => base.allow_headers.clone(),
            },
            expose_headers: self
                .expose_headers
                .as_ref()
                .map_or_else(|| base.expose_headers.clone(), |list| list.iter().map(|h| h.0.clone()).collect()),
            max_age: self.max_age.map_or(base.max_age, |DurationValue(d)| d),
            allow_credentials: self.allow_credentials.unwrap_or(base.allow_credentials),
        }
    }
}

impl CorsSection {
    fn keys(&self) -> Keys {
        Keys {
            allow_origins: self.allow_origins.clone(),
            allow_methods: self.allow_methods.clone(),
            allow_headers: self.allow_headers.clone(),
            expose_headers: self.expose_headers.clone(),
            max_age: self.max_age,
            allow_credentials: self.allow_credentials,
        }
    }

    fn routes(&self) -> &[Checked<CorsRouteRaw>] {
        self.routes.as_deref().unwrap_or_default()
    }

    /// `*` alongside other origins, and `*` with `allow_credentials`, at
    /// the top and in every route entry (with what the entry inherits).
    /// The path is relative to `cors`.
    pub(super) fn problem(&self) -> Option<Problem> {
        let global = self.keys();
        if let Some(problem) = keys_problem(&global, &CorsSettings::default(), KeyPath::new()) {
            return Some(problem);
        }
        let base = global.over(&CorsSettings::default());
        for (index, Checked(route)) in self.routes().iter().enumerate() {
            let at = KeyPath::new().key("routes").index(index);
            if let Some(problem) = keys_problem(&route.keys(), &base, at) {
                return Some(problem);
            }
        }
        None
    }

    /// The selectors of the route entries, for the file's selector checks.
    pub(super) fn selectors(&self) -> impl Iterator<Item = &SelectorRaw> {
        self.routes().iter().map(|Checked(route)| &route.selector.0)
    }

    pub(super) fn resolve(self) -> CorsConfig {
        let settings = self.keys().over(&CorsSettings::default());
        let routes = self
            .routes
            .unwrap_or_default()
            .into_iter()
            .map(|Checked(route)| CorsRoute {
                settings: route.keys().over(&settings),
                selector: route.selector.0.resolve(),
            })
            .collect();
        CorsConfig { settings, routes }
    }
}

impl CorsRouteRaw {
    fn keys(&self) -> Keys {
        Keys {
            allow_origins: self.allow_origins.clone(),
            allow_methods: self.allow_methods.clone(),
            allow_headers: self.allow_headers.clone(),
            expose_headers: self.expose_headers.clone(),
            max_age: self.max_age,
            allow_credentials: self.allow_credentials,
        }
    }
}

/// The problems of one policy's keys laid over `base`, pointing at the key
/// written at `at` that makes the policy wrong.
fn keys_problem(keys: &Keys, base: &CorsSettings, at: KeyPath) -> Option<Problem> {
    if let Some(origins) = &keys.allow_origins {
        if origins.len() > 1 && origins.iter().any(|o| o.0 == OriginPattern::Any) {
            return Some(at.key("allow_origins").problem("`*` allows every origin: list it alone"));
        }
    }
    let settings = keys.over(base);
    if settings.any_origin() && settings.allow_credentials {
        let key = if keys.allow_credentials.is_some() { "allow_credentials" } else { "allow_origins" };
        return Some(at.key(key).problem(
            "allow_credentials: true with allow_origins `*` is refused: any site could call the API with the \
             user's cookies; list the origins instead",
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(text: &str) -> OriginPattern {
        parse_origin(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn exact_origins_match_scheme_host_and_port() {
        let exact = origin("https://App.Example.com");
        assert_eq!(exact, OriginPattern::Exact("https://app.example.com".into()));
        assert!(exact.matches("https://app.example.com"));
        assert!(!exact.matches("http://app.example.com"));
        assert!(!exact.matches("https://app.example.com:8443"));
        assert!(origin("http://localhost:3000").matches("http://localhost:3000"));
        assert!(origin("http://[::1]:3000").matches("http://[::1]:3000"));
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        let wild = origin("https://*.example.com");
        assert!(wild.matches("https://a.example.com"));
        assert!(wild.matches("https://a.b.example.com"));
        assert!(!wild.matches("https://example.com"));
        assert!(!wild.matches("https://.example.com"));
        assert!(!wild.matches("http://a.example.com"));
        assert!(!wild.matches("https://example.com.evil.com"));
        assert!(!wild.matches("https://a.example.com.evil.com"));
        assert!(!wild.matches("https://evilexample.com"));
        assert!(!wild.matches("https://a.example.com:8443"));
        assert!(!wild.matches("https://x@a.example.com"));
        let with_port = origin("https://*.example.com:8443");
        assert!(with_port.matches("https://a.example.com:8443"));
        assert!(!with_port.matches("https://a.example.com"));
    }

    #[test]
    fn bad_origins_are_refused() {
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://*.example.com/",
            "https://a.*.example.com",
            "https://*example.com",
            "https://*",
            "https://user@app.example.com",
            "https://app.example.com:0",
            "https://app.example.com:port",
            "null",
            "https://",
            "://app.example.com",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad} was accepted");
        }
    }
}
