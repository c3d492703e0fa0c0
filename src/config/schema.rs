//! The config file as written: one serde struct per YAML mapping, every key
//! optional and every unknown key an error.
//!
//! These types mirror the file, not the program: they keep "not given"
//! apart from "given" so that defaults and command-line flags can be applied
//! afterwards by [`FileConfig::resolve`], which is also the single place
//! where relative paths meet the config file's folder. A later secret value
//! (`{ env: NAME } | { file: PATH }`) is one more self-validating value type
//! in the style of [`UpstreamTarget`] (a string or a mapping), read here and
//! turned into its plain value in `resolve`, where the file's folder is
//! known.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;

use http::HeaderName;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::check::{Check, Checked, KeyPath, Problem};
use super::compositions::{self, CompositionsSection};
use super::selector::SelectorRaw;
use super::upstreams::{UpstreamMap, UpstreamSettings};
use super::values::{
    parse_forward_header, parse_upstream_pattern, relative_to, Addr, DateValue, DurationValue, LogLevel, PathText,
    PeriodValue, SizeValue, Threads, UpstreamUrl, VersionName,
};
use super::{
    Config, Deprecation, InvalidBindings, JsonOptions, LogFormat, RouteOverride, Strictness, UpstreamRule,
    VersionConfig,
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of config keys such as listen, upstreams, json")]
pub(super) struct FileConfig {
    listen: Option<Addr>,
    admin: Option<AdminSection>,
    descriptors: Option<DescriptorsSection>,
    threads: Option<Threads>,
    shutdown_timeout: Option<DurationValue>,
    upstreams: Option<Upstreams>,
    json: Option<JsonSection>,
    routes: Option<RoutesSection>,
    limits: Option<Checked<LimitsSection>>,
    forward_headers: Option<ForwardHeaders>,
    logging: Option<LoggingSection>,
    tracing: Option<TracingSection>,
    versions: Option<BTreeMap<VersionName, VersionSection>>,
    auth: Option<super::auth::AuthConfig>,
    policies: Option<super::auth::PoliciesConfig>,
    rate_limits: Option<super::rate_limits::RateLimitsConfig>,
    compositions: Option<CompositionsSection>,
    cors: Option<super::cors::CorsSection>,
    tls: Option<Checked<super::tls::TlsSection>>,
    upstream_tls: Option<Vec<Checked<super::tls::UpstreamTlsRaw>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with upstream, deprecated")]
struct VersionSection {
    upstream: Option<UpstreamTarget>,
    deprecated: Option<DeprecatedSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with since, sunset")]
struct DeprecatedSection {
    since: Option<DateValue>,
    sunset: Option<DateValue>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with `listen`")]
struct AdminSection {
    listen: Option<Addr>,
}

/// `descriptors: { path: DIR, reflection: [URL], reflection_interval: D }`,
/// or `descriptors: DIR` for short.
#[derive(Debug, Default)]
struct DescriptorsSection {
    path: Option<PathText>,
    reflection: Option<Vec<UpstreamUrl>>,
    reflection_interval: Option<DurationValue>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with path, reflection, reflection_interval")]
struct DescriptorsMap {
    path: Option<PathText>,
    reflection: Option<Vec<UpstreamUrl>>,
    reflection_interval: Option<DurationValue>,
}

impl<'de> Deserialize<'de> for DescriptorsSection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DescriptorsSection;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a folder, or a mapping with `path`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                PathText::deserialize(de::value::StrDeserializer::<E>::new(v))
                    .map(|p| DescriptorsSection { path: Some(p), ..DescriptorsSection::default() })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                DescriptorsMap::deserialize(MapAccessDeserializer::new(map)).map(|m| DescriptorsSection {
                    path: m.path,
                    reflection: m.reflection,
                    reflection_interval: m.reflection_interval,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of JSON options")]
struct JsonSection {
    use_proto_names: Option<bool>,
    emit_unpopulated: Option<bool>,
    enums_as_ints: Option<bool>,
    int64_as_numbers: Option<bool>,
    unknown_fields: Option<Strictness>,
    unknown_query_params: Option<Strictness>,
    query_path_conflict: Option<super::QueryPathConflict>,
    pretty: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with auto_map, invalid_bindings, timeout, stream_idle_timeout, sse_keep_alive, \
                 autofill_update_mask, overrides"
)]
struct RoutesSection {
    auto_map: Option<bool>,
    invalid_bindings: Option<InvalidBindings>,
    timeout: Option<DurationValue>,
    stream_idle_timeout: Option<DurationValue>,
    sse_keep_alive: Option<DurationValue>,
    autofill_update_mask: Option<bool>,
    overrides: Option<Vec<Checked<OverrideRaw>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with match, timeout, max_body, stream_idle_timeout")]
struct OverrideRaw {
    #[serde(rename = "match")]
    selector: Checked<SelectorRaw>,
    timeout: Option<DurationValue>,
    max_body: Option<SizeValue>,
    stream_idle_timeout: Option<DurationValue>,
}

impl Check for OverrideRaw {
    fn check(&self) -> Result<(), String> {
        if self.timeout.is_none() && self.max_body.is_none() && self.stream_idle_timeout.is_none() {
            return Err("this override changes nothing: give `timeout`, `max_body` or `stream_idle_timeout`".into());
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with max_body, max_message, max_concurrent_requests, max_header_bytes, header_read_timeout, \
                 idle_timeout, http2_max_concurrent_streams, http2_keep_alive_interval, http2_keep_alive_timeout"
)]
struct LimitsSection {
    max_body: Option<SizeValue>,
    max_message: Option<SizeValue>,
    max_concurrent_requests: Option<std::num::NonZeroUsize>,
    max_header_bytes: Option<SizeValue>,
    header_read_timeout: Option<DurationValue>,
    idle_timeout: Option<DurationValue>,
    http2_max_concurrent_streams: Option<u32>,
    http2_keep_alive_interval: Option<PeriodValue>,
    http2_keep_alive_timeout: Option<DurationValue>,
}

impl Check for LimitsSection {
    fn check(&self) -> Result<(), String> {
        for (key, value) in [("header_read_timeout", self.header_read_timeout), ("idle_timeout", self.idle_timeout)] {
            if value.is_some_and(|DurationValue(d)| d.is_zero()) {
                return Err(format!("`{key}` must be greater than zero: a connection needs some time"));
            }
        }
        if self.http2_max_concurrent_streams == Some(0) {
            return Err("`http2_max_concurrent_streams` must be at least 1: a connection without streams serves \
                        nothing"
                .into());
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with format, level, access")]
struct LoggingSection {
    format: Option<LogFormat>,
    level: Option<LogLevel>,
    access: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with otlp_endpoint, service_name")]
struct TracingSection {
    otlp_endpoint: Option<UpstreamUrl>,
    service_name: Option<String>,
}

/// `upstreams`: an ordered mapping of PATTERN to URL, duplicates refused.
#[derive(Debug, Default)]
struct Upstreams(Vec<UpstreamRule>);

impl<'de> Deserialize<'de> for Upstreams {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Upstreams;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of PATTERN: URL")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut rules: Vec<UpstreamRule> = Vec::new();
                // The key is read through a seed that knows the earlier keys,
                // so a duplicate is reported at its own line.
                while let Some(pattern) = map.next_key_seed(PatternKey { seen: &rules })? {
                    let UpstreamTarget(url, settings) = map.next_value()?;
                    rules.push(UpstreamRule { pattern, url, settings });
                }
                Ok(Upstreams(rules))
            }
        }
        d.deserialize_map(V)
    }
}

struct PatternKey<'a> {
    seen: &'a [UpstreamRule],
}

impl<'de> DeserializeSeed<'de> for PatternKey<'_> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for PatternKey<'_> {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an upstream pattern")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        let pattern = parse_upstream_pattern(v).map_err(E::custom)?;
        if self.seen.iter().any(|r| r.pattern == pattern) {
            return Err(E::custom(format!("upstream pattern `{pattern}` is given twice")));
        }
        Ok(pattern)
    }
}

/// One upstream: `URL`, or the long form `{ url | endpoints, balance, ... }`
/// (DESIGN §4b, checked as a whole where it is read).
#[derive(Debug)]
struct UpstreamTarget(http::Uri, UpstreamSettings);

impl<'de> Deserialize<'de> for UpstreamTarget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UpstreamTarget;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a URL such as http://127.0.0.1:50051, or a mapping with `url` or `endpoints`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                UpstreamUrl::deserialize(de::value::StrDeserializer::<E>::new(v))
                    .map(|u| UpstreamTarget(u.0, UpstreamSettings::default()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let raw = UpstreamMap::deserialize(MapAccessDeserializer::new(map))?;
                raw.check().map_err(de::Error::custom)?;
                let (url, settings) = raw.resolve();
                Ok(UpstreamTarget(url, settings))
            }
        }
        d.deserialize_any(V)
    }
}

/// `forward_headers`: a list of header names, duplicates refused.
#[derive(Debug, Default)]
struct ForwardHeaders(Vec<HeaderName>);

impl<'de> Deserialize<'de> for ForwardHeaders {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ForwardHeaders;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of header names")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut names = Vec::new();
                let mut seen = HashSet::new();
                while let Some(name) = seq.next_element_seed(HeaderSeed { seen: &seen })? {
                    seen.insert(name.clone());
                    names.push(name);
                }
                Ok(ForwardHeaders(names))
            }
        }
        d.deserialize_seq(V)
    }
}

struct HeaderSeed<'a> {
    seen: &'a HashSet<HeaderName>,
}

impl<'de> DeserializeSeed<'de> for HeaderSeed<'_> {
    type Value = HeaderName;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<HeaderName, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for HeaderSeed<'_> {
    type Value = HeaderName;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a header name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<HeaderName, E> {
        let name = parse_forward_header(v).map_err(E::custom)?;
        if self.seen.contains(&name) {
            return Err(E::custom(format!("header `{name}` is listed twice")));
        }
        Ok(name)
    }
}

impl FileConfig {
    /// The first problem that needs more than one place of the file, with
    /// the key path of the node at fault; the caller finds its line (see
    /// `check::locate`).
    pub(super) fn problem(&self) -> Option<Problem> {
        if let Some(auth) = &self.auth {
            if let Some(problem) = auth.problem() {
                return Some(problem.under("auth"));
            }
        }
        if let Some(policies) = &self.policies {
            let no_auth = super::auth::AuthConfig::default();
            if let Some(problem) = policies.problem(self.auth.as_ref().unwrap_or(&no_auth)) {
                return Some(problem.under("policies"));
            }
        }
        if let Some(rate_limits) = &self.rate_limits {
            if let Some(problem) = rate_limits.problem() {
                return Some(problem.under("rate_limits"));
            }
        }
        if let Some(problem) = self.cors.as_ref().and_then(|cors| cors.problem()) {
            return Some(problem.under("cors"));
        }
        if let Some(problem) = self.tls_problem() {
            return Some(problem);
        }
        let compositions = self.compositions.as_ref().map_or(&[][..], |c| c.0.as_slice());
        if let Some(problem) = compositions::problem(compositions) {
            return Some(problem.under("compositions"));
        }
        self.composition_selector_problem(compositions)
    }

    /// A duplicate `upstream_tls` pattern, or `auth.mtls` without client
    /// certificates to read identities from.
    fn tls_problem(&self) -> Option<Problem> {
        let entries: Vec<_> = self.upstream_tls.iter().flatten().map(|Checked(e)| e).collect();
        if let Some(problem) = super::tls::duplicate_pattern(&entries) {
            return Some(problem.under("upstream_tls"));
        }
        let mtls = self.auth.as_ref().is_some_and(|auth| auth.mtls.is_some());
        let client_ca = self.tls.as_ref().is_some_and(|Checked(tls)| tls.asks_clients());
        (mtls && !client_ca).then(|| {
            KeyPath::new()
                .key("auth")
                .key("mtls")
                .problem("needs `tls.client_ca`: identities come from verified client certificates")
        })
    }

    /// The first selector whose `composition` names none of the file's.
    fn composition_selector_problem(&self, compositions: &[compositions::Composition]) -> Option<Problem> {
        let unknown = |name: &Option<String>| compositions::unknown_composition(name.as_deref()?, compositions);
        let overrides = self.routes.as_ref().and_then(|r| r.overrides.as_deref()).unwrap_or_default();
        for (index, Checked(o)) in overrides.iter().enumerate() {
            if let Some(message) = unknown(&o.selector.0.composition) {
                let at = KeyPath::new().key("routes").key("overrides").index(index);
                return Some(at.key("match").key("composition").problem(message));
            }
        }
        for (index, rule) in self.policies.iter().flat_map(|p| p.rules.iter().enumerate()) {
            if let Some(message) = unknown(&rule.composition) {
                let at = KeyPath::new().key("policies").key("rules").index(index);
                return Some(at.key("composition").problem(message));
            }
        }
        for (index, rule) in self.rate_limits.iter().flat_map(|r| r.rules.iter().enumerate()) {
            let at = || KeyPath::new().key("rate_limits").key("rules").index(index);
            if let Some(message) = unknown(&rule.selector.composition) {
                return Some(at().key("match").key("composition").problem(message));
            }
            for (k, cost) in rule.route_costs.iter().enumerate() {
                if let Some(message) = unknown(&cost.selector.composition) {
                    return Some(at().key("route_costs").index(k).key("match").key("composition").problem(message));
                }
            }
        }
        for (index, selector) in self.cors.iter().flat_map(|c| c.selectors().enumerate()) {
            if let Some(message) = unknown(&selector.composition) {
                let at = KeyPath::new().key("cors").key("routes").index(index);
                return Some(at.key("match").key("composition").problem(message));
            }
        }
        None
    }

    /// Lays the file's values over the defaults. `base` is the folder of the
    /// config file, against which relative paths in it are resolved.
    pub(super) fn resolve(self, base: &Path) -> Config {
        let mut config = Config::default();
        if let Some(Addr(addr)) = self.listen {
            config.listen = addr;
        }
        if let Some(Addr(addr)) = self.admin.and_then(|a| a.listen) {
            config.admin_listen = addr;
        }
        if let Some(descriptors) = self.descriptors {
            if let Some(PathText(path)) = descriptors.path {
                config.descriptors = relative_to(base, &path);
            }
            config.reflection = descriptors.reflection.unwrap_or_default().into_iter().map(|u| u.0).collect();
            if let Some(DurationValue(interval)) = descriptors.reflection_interval {
                config.reflection_interval = interval;
            }
        }
        if let Some(Threads(n)) = self.threads {
            config.threads = Some(n);
        }
        if let Some(DurationValue(timeout)) = self.shutdown_timeout {
            config.shutdown_timeout = timeout;
        }
        if let Some(Upstreams(rules)) = self.upstreams {
            config.upstreams = rules;
        }
        if let Some(json) = self.json {
            config.json = json.resolve();
        }
        if let Some(routes) = self.routes {
            if let Some(auto_map) = routes.auto_map {
                config.routes.auto_map = auto_map;
            }
            if let Some(invalid_bindings) = routes.invalid_bindings {
                config.routes.invalid_bindings = invalid_bindings;
            }
            if let Some(DurationValue(timeout)) = routes.timeout {
                config.routes.timeout = timeout;
            }
            if let Some(DurationValue(timeout)) = routes.stream_idle_timeout {
                config.routes.stream_idle_timeout = timeout;
            }
            if let Some(DurationValue(interval)) = routes.sse_keep_alive {
                config.routes.sse_keep_alive = interval;
            }
            if let Some(autofill) = routes.autofill_update_mask {
                config.routes.autofill_update_mask = autofill;
            }
            config.routes.overrides =
                routes.overrides.unwrap_or_default().into_iter().map(|Checked(raw)| raw.resolve()).collect();
        }
        if let Some(Checked(limits)) = self.limits {
            if let Some(SizeValue(max_body)) = limits.max_body {
                config.limits.max_body = max_body;
            }
            if let Some(SizeValue(max_message)) = limits.max_message {
                config.limits.max_message = max_message;
            }
            if let Some(max) = limits.max_concurrent_requests {
                config.limits.max_concurrent_requests = Some(max);
            }
            if let Some(SizeValue(max)) = limits.max_header_bytes {
                config.limits.max_header_bytes = max;
            }
            if let Some(DurationValue(timeout)) = limits.header_read_timeout {
                config.limits.header_read_timeout = timeout;
            }
            if let Some(DurationValue(timeout)) = limits.idle_timeout {
                config.limits.idle_timeout = timeout;
            }
            if let Some(streams) = limits.http2_max_concurrent_streams {
                config.limits.http2_max_concurrent_streams = streams;
            }
            if let Some(PeriodValue(interval)) = limits.http2_keep_alive_interval {
                config.limits.http2_keep_alive_interval = interval;
            }
            if let Some(DurationValue(timeout)) = limits.http2_keep_alive_timeout {
                config.limits.http2_keep_alive_timeout = timeout;
            }
        }
        if let Some(ForwardHeaders(names)) = self.forward_headers {
            config.forward_headers = names;
        }
        if let Some(auth) = self.auth {
            config.auth = auth;
        }
        if let Some(policies) = self.policies {
            config.policies = policies;
        }
        if let Some(rate_limits) = self.rate_limits {
            config.rate_limits = rate_limits;
        }
        if let Some(CompositionsSection(compositions)) = self.compositions {
            config.compositions = compositions;
        }
        config.cors = self.cors.map(super::cors::CorsSection::resolve);
        config.tls = self.tls.map(|Checked(tls)| tls.resolve(base));
        config.upstream_tls =
            self.upstream_tls.unwrap_or_default().into_iter().map(|Checked(entry)| entry.resolve(base)).collect();
        for (VersionName(name), version) in self.versions.unwrap_or_default() {
            let deprecated = version
                .deprecated
                .map(|d| Deprecation { since: d.since.map(|DateValue(t)| t), sunset: d.sunset.map(|DateValue(t)| t) });
            let (upstream, upstream_settings) = match version.upstream {
                Some(UpstreamTarget(url, settings)) => (Some(url), settings),
                None => (None, UpstreamSettings::default()),
            };
            config.versions.insert(name, VersionConfig { upstream, upstream_settings, deprecated });
        }
        if let Some(logging) = self.logging {
            if let Some(format) = logging.format {
                config.logging.format = format;
            }
            if let Some(LogLevel(level)) = logging.level {
                config.logging.level = level;
            }
            if let Some(access) = logging.access {
                config.logging.access = access;
            }
        }
        if let Some(tracing) = self.tracing {
            if let Some(url) = tracing.otlp_endpoint {
                config.tracing.otlp_endpoint = Some(url.0);
            }
            if let Some(name) = tracing.service_name {
                config.tracing.service_name = name;
            }
        }
        config
    }
}

impl JsonSection {
    fn resolve(self) -> JsonOptions {
        let d = JsonOptions::default();
        JsonOptions {
            use_proto_names: self.use_proto_names.unwrap_or(d.use_proto_names),
            emit_unpopulated: self.emit_unpopulated.unwrap_or(d.emit_unpopulated),
            enums_as_ints: self.enums_as_ints.unwrap_or(d.enums_as_ints),
            int64_as_numbers: self.int64_as_numbers.unwrap_or(d.int64_as_numbers),
            unknown_fields: self.unknown_fields.unwrap_or(d.unknown_fields),
            unknown_query_params: self.unknown_query_params.unwrap_or(d.unknown_query_params),
            query_path_conflict: self.query_path_conflict.unwrap_or(d.query_path_conflict),
            pretty: self.pretty.unwrap_or(d.pretty),
        }
    }
}

impl OverrideRaw {
    fn resolve(self) -> RouteOverride {
        RouteOverride {
            selector: self.selector.0.resolve(),
            timeout: self.timeout.map(|v| v.0),
            max_body: self.max_body.map(|v| v.0),
            stream_idle_timeout: self.stream_idle_timeout.map(|v| v.0),
        }
    }
}
