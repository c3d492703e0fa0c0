//! The gateway's Prometheus metrics (DESIGN §9): one explicit registry per
//! gateway, the families under the names dashboards are built on, and the
//! text served at admin `/metrics`.
//!
//! Label values that come from the catalog (route templates, upstream URLs,
//! gRPC methods) are shared `Arc<str>`s built at load, so recording costs a
//! hash of the label set and an atomic add, never a string built per
//! request. A client cannot add a series: routes are the catalog's, and an
//! unmatched request is counted as route `unmatched` with its method folded
//! into `OTHER` unless it is a standard one.

use std::num::NonZeroUsize;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::Method;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tonic::Code;

/// Request and call durations: 0.5 ms to 10 s (DESIGN §9).
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The route label of requests no route matched.
pub const UNMATCHED: &str = "unmatched";

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Every metric family of the gateway, registered in its own registry.
pub struct Metrics {
    registry: Registry,
    /// The registered names (counters without their `_total`).
    families: Vec<&'static str>,
    /// The route label of requests no route matched.
    unmatched: Arc<str>,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Histograms<RouteLabels>,
    upstream_requests: Family<UpstreamCodeLabels, Counter>,
    upstream_duration: Histograms<UpstreamLabels>,
    phases: [Histogram; 3],
    inflight: Gauge,
    stream_messages: Family<StreamLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    catalog_routes: Gauge,
    auth_decisions: Family<AuthLabels, Counter>,
    ratelimit_decisions: Family<RateLimitLabels, Counter>,
    composition_calls: Family<CompositionLabels, Counter>,
    upstream_endpoints: Family<EndpointStateLabels, Gauge>,
    upstream_inflight: Family<UpstreamOnlyLabels, Gauge>,
    upstream_retries: Family<UpstreamOnlyLabels, Counter>,
    upstream_ejections: Family<UpstreamOnlyLabels, Counter>,
    upstream_overloaded: Family<UpstreamOnlyLabels, Counter>,
}

/// One upstream's endpoint states and totals, read at scrape time.
#[derive(Debug, Clone)]
pub struct UpstreamSnapshot {
    pub upstream: Arc<str>,
    /// Endpoints by state name (`healthy`, `unhealthy`, `ejected`,
    /// `draining`).
    pub endpoints: Vec<(&'static str, usize)>,
    pub in_flight: usize,
    pub retries: u64,
    pub ejections: u64,
    pub overloaded: u64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let mut families = Vec::new();
        macro_rules! register {
            ($name:expr, $help:expr, $metric:expr $(,)?) => {{
                families.push($name);
                registry.register($name, $help, $metric);
            }};
        }
        let http_requests = Family::default();
        let http_duration = Histograms::new_with_constructor(histogram as fn() -> Histogram);
        let upstream_requests = Family::default();
        let upstream_duration = Histograms::new_with_constructor(histogram as fn() -> Histogram);
        // The three phases share one family; each keeps its histogram's
        // handle so that recording one needs no lookup.
        let phase_family = Histograms::<PhaseLabels>::new_with_constructor(histogram as fn() -> Histogram);
        let phases = Phase::ALL.map(|phase| phase_family.get_or_create_owned(&PhaseLabels { phase: phase.as_str() }));
        let inflight = Gauge::default();
        let stream_messages = Family::default();
        let reloads = Family::default();
        let catalog_routes = Gauge::default();
        let auth_decisions = Family::default();
        let ratelimit_decisions = Family::default();
        let composition_calls = Family::default();
        let upstream_endpoints = Family::default();
        let upstream_inflight = Family::default();
        let upstream_retries = Family::default();
        let upstream_ejections = Family::default();
        let upstream_overloaded = Family::default();

        // Counters are registered without `_total`: the encoder adds it.
        register!(
            "protogate_http_requests",
            "HTTP requests answered, by method, route template and status",
            http_requests.clone(),
        );
        register!(
            "protogate_http_request_duration_seconds",
            "Time from request to response head, by method and route template",
            http_duration.clone(),
        );
        register!(
            "protogate_upstream_requests",
            "gRPC calls to upstreams, by upstream, method and gRPC code",
            upstream_requests.clone(),
        );
        register!(
            "protogate_upstream_request_duration_seconds",
            "Duration of gRPC calls to upstreams",
            upstream_duration.clone(),
        );
        register!(
            "protogate_phase_duration_seconds",
            "Where the gateway's own time goes: decode, upstream, encode",
            phase_family,
        );
        register!("protogate_inflight_requests", "Requests being served", inflight.clone());
        register!("protogate_stream_messages", "Streamed messages, by route and direction", stream_messages.clone(),);
        register!("protogate_reloads", "Catalog reloads, by result", reloads.clone());
        register!("protogate_catalog_routes", "Routes in the serving catalog", catalog_routes.clone());
        register!("protogate_auth_decisions", "Authentication decisions", auth_decisions.clone());
        register!("protogate_ratelimit_decisions", "Rate-limit decisions", ratelimit_decisions.clone());
        register!("protogate_composition_calls", "Calls made by compositions, by outcome", composition_calls.clone(),);
        register!(
            "protogate_upstream_endpoints",
            "Endpoints of each routed upstream, by state",
            upstream_endpoints.clone(),
        );
        register!("protogate_upstream_inflight", "Calls in flight to each upstream", upstream_inflight.clone());
        register!("protogate_upstream_retries", "Calls tried again on another endpoint", upstream_retries.clone());
        register!("protogate_upstream_ejections", "Endpoints ejected by outlier detection", upstream_ejections.clone());
        register!(
            "protogate_upstream_overloaded",
            "Calls refused by the upstream's circuit breaker (max_concurrent_requests)",
            upstream_overloaded.clone(),
        );
        // Both results are visible before the first reload, so that a
        // dashboard's rate() has a zero to start from.
        for result in [ReloadResult::Ok, ReloadResult::Refused] {
            let _ = reloads.get_or_create_owned(&ReloadLabels { result: result.as_str() });
        }
        Self {
            registry,
            families,
            unmatched: Arc::from(UNMATCHED),
            http_requests,
            http_duration,
            upstream_requests,
            upstream_duration,
            phases,
            inflight,
            stream_messages,
            reloads,
            catalog_routes,
            auth_decisions,
            ratelimit_decisions,
            composition_calls,
            upstream_endpoints,
            upstream_inflight,
            upstream_retries,
            upstream_ejections,
            upstream_overloaded,
        }
    }

    /// Brings the upstream families up to date (at scrape time: the
    /// upstreams keep their own counts).
    pub fn upstreams(&self, snapshots: &[UpstreamSnapshot]) {
        for snapshot in snapshots {
            let upstream = UpstreamOnlyLabels { upstream: snapshot.upstream.clone() };
            for &(state, count) in &snapshot.endpoints {
                let labels = EndpointStateLabels { upstream: snapshot.upstream.clone(), state };
                self.upstream_endpoints.get_or_create(&labels).set(i64::try_from(count).unwrap_or(i64::MAX));
            }
            self.upstream_inflight.get_or_create(&upstream).set(i64::try_from(snapshot.in_flight).unwrap_or(i64::MAX));
            for (family, total) in [
                (&self.upstream_retries, snapshot.retries),
                (&self.upstream_ejections, snapshot.ejections),
                (&self.upstream_overloaded, snapshot.overloaded),
            ] {
                let counter = family.get_or_create(&upstream);
                counter.inc_by(total.saturating_sub(counter.get()));
            }
        }
    }

    /// One answered request. `series` is the matched route's cache (for
    /// requests with the route's own method).
    pub fn request(
        &self,
        method: &Method,
        route: Option<&Arc<str>>,
        series: Option<&Series>,
        status: u16,
        elapsed: Duration,
    ) {
        let seconds = elapsed.as_secs_f64();
        let route_labels =
            |route: &Arc<str>| RouteLabels { method: MethodLabel::of(method, true), route: route.clone() };
        let Some(route) = route else {
            let labels = RouteLabels { method: MethodLabel::of(method, false), route: self.unmatched.clone() };
            self.http_duration.get_or_create(&labels).observe(seconds);
            self.http_requests.get_or_create(&HttpLabels { labels, status }).inc();
            return;
        };
        match series {
            Some(series) => {
                let duration =
                    series.duration.get_or_init(|| self.http_duration.get_or_create_owned(&route_labels(route)));
                duration.observe(seconds);
                if status == 200 {
                    let labels = || HttpLabels { labels: route_labels(route), status };
                    series.ok.get_or_init(|| self.http_requests.get_or_create_owned(&labels())).inc();
                    return;
                }
            }
            None => self.http_duration.get_or_create(&route_labels(route)).observe(seconds),
        }
        self.http_requests.get_or_create(&HttpLabels { labels: route_labels(route), status }).inc();
    }

    /// One finished call to an upstream. `series` is the call's cache.
    pub fn upstream_call(
        &self,
        upstream: &Arc<str>,
        grpc_method: &Arc<str>,
        series: &Series,
        code: Code,
        elapsed: Duration,
    ) {
        let labels = || UpstreamLabels { upstream: upstream.clone(), grpc_method: grpc_method.clone() };
        let duration = series.duration.get_or_init(|| self.upstream_duration.get_or_create_owned(&labels()));
        duration.observe(elapsed.as_secs_f64());
        let coded = || UpstreamCodeLabels { call: labels(), grpc_code: CodeLabel(code) };
        match code {
            Code::Ok => series.ok.get_or_init(|| self.upstream_requests.get_or_create_owned(&coded())).inc(),
            _ => self.upstream_requests.get_or_create(&coded()).inc(),
        };
    }

    pub fn phase(&self, phase: Phase, elapsed: Duration) {
        self.phases[phase as usize].observe(elapsed.as_secs_f64());
    }

    /// Counts a request as in flight until the guard drops; `None` (and
    /// nothing counted) when `limit` requests already are.
    pub fn in_flight(self: &Arc<Self>, limit: Option<NonZeroUsize>) -> Option<InFlight> {
        let before = self.inflight.inc();
        let guard = InFlight(self.clone());
        match limit {
            Some(limit) if usize::try_from(before).is_ok_and(|n| n >= limit.get()) => None,
            _ => Some(guard),
        }
    }

    /// The counter of one route's messages in one direction; taken once
    /// per stream, then bumped per message without a lookup.
    pub fn stream_messages(&self, route: &Arc<str>, direction: Direction) -> Counter {
        self.stream_messages.get_or_create_owned(&StreamLabels { route: route.clone(), direction: direction.as_str() })
    }

    pub fn reload(&self, result: ReloadResult) {
        self.reloads.get_or_create(&ReloadLabels { result: result.as_str() }).inc();
    }

    pub fn catalog_routes(&self, routes: usize) {
        self.catalog_routes.set(i64::try_from(routes).unwrap_or(i64::MAX));
    }

    pub fn auth_decision(&self, provider: &str, outcome: AuthOutcome) {
        let labels = AuthLabels { provider: Arc::from(provider), outcome: outcome.as_str() };
        self.auth_decisions.get_or_create(&labels).inc();
    }

    pub fn ratelimit_decision(&self, rule: &Arc<str>, outcome: RateLimitOutcome) {
        let labels = RateLimitLabels { rule: rule.clone(), outcome: outcome.as_str() };
        self.ratelimit_decisions.get_or_create(&labels).inc();
    }

    pub fn composition_call(&self, composition: &Arc<str>, call: &Arc<str>, outcome: CallOutcome) {
        let labels =
            CompositionLabels { composition: composition.clone(), call: call.clone(), outcome: outcome.as_str() };
        self.composition_calls.get_or_create(&labels).inc();
    }

    /// Every family's name as registered (a counter's without `_total`),
    /// whether or not it has a sample yet.
    pub fn families(&self) -> &[&'static str] {
        &self.families
    }

    /// The exposition: OpenMetrics text when `openmetrics`, else the
    /// Prometheus text format (0.0.4) most scrapers default to.
    pub fn render(&self, openmetrics: bool) -> String {
        let mut text = String::with_capacity(16 << 10);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        match openmetrics {
            true => text,
            false => prometheus_text(&text),
        }
    }
}

/// OpenMetrics text as the Prometheus 0.0.4 format: counters are typed
/// under their `_total` sample name, and `# EOF` and `# UNIT` go.
fn prometheus_text(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(name) = line.strip_prefix("# TYPE ").and_then(|rest| rest.strip_suffix(" counter")) {
            counters.insert(name.to_owned());
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# TYPE ", "# HELP "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The handles of one route's (or one upstream call's) usual series — its
/// duration and its success count — taken at first use, so that the
/// common case records without hashing its labels. Lives beside the route
/// in the catalog; a reload starts new ones.
#[derive(Debug, Default)]
pub struct Series {
    duration: OnceLock<Histogram>,
    ok: OnceLock<Counter>,
}

/// Keeps `protogate_inflight_requests` up while a request is served.
#[derive(Debug)]
pub struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inflight.dec();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Decode = 0,
    Upstream = 1,
    Encode = 2,
}

impl Phase {
    const ALL: [Phase; 3] = [Phase::Decode, Phase::Upstream, Phase::Encode];

    fn as_str(self) -> &'static str {
        match self {
            Self::Decode => "decode",
            Self::Upstream => "upstream",
            Self::Encode => "encode",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Self::In => "in",
            Self::Out => "out",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    Ok,
    Refused,
}

impl ReloadResult {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Refused => "refused",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    Allowed,
    Unauthenticated,
    Forbidden,
}

impl AuthOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitOutcome {
    Allowed,
    Limited,
    Error,
}

impl RateLimitOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Limited => "limited",
            Self::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    Ok,
    Error,
    Skipped,
}

impl CallOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Skipped => "skipped",
        }
    }
}

/// A gRPC code as its name (`OK`, `NOT_FOUND`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct CodeLabel(Code);

impl EncodeLabelValue for CodeLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(code_name(self.0))
    }
}

/// The canonical name of a gRPC code, as `google.rpc.Code` spells it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// An HTTP method as a label: a matched route's own, or for unmatched
/// requests a standard method or `OTHER` (a client must not be able to
/// mint series).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct MethodLabel(Method);

impl MethodLabel {
    fn of(method: &Method, routed: bool) -> Self {
        let standard = matches!(
            *method,
            Method::GET
                | Method::POST
                | Method::PUT
                | Method::PATCH
                | Method::DELETE
                | Method::HEAD
                | Method::OPTIONS
                | Method::CONNECT
                | Method::TRACE
        );
        match routed || standard {
            true => Self(method.clone()),
            false => Self(Method::from_bytes(b"OTHER").unwrap_or(Method::GET)),
        }
    }
}

impl EncodeLabelValue for MethodLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        encoder.write_str(self.0.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HttpLabels {
    #[prometheus(flatten)]
    labels: RouteLabels,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    method: MethodLabel,
    route: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: Arc<str>,
    grpc_method: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamCodeLabels {
    #[prometheus(flatten)]
    call: UpstreamLabels,
    grpc_code: CodeLabel,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StreamLabels {
    route: Arc<str>,
    direction: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointStateLabels {
    upstream: Arc<str>,
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamOnlyLabels {
    upstream: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AuthLabels {
    provider: Arc<str>,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RateLimitLabels {
    rule: Arc<str>,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CompositionLabels {
    composition: Arc<str>,
    call: Arc<str>,
    outcome: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_typed_by_their_sample_name_in_prometheus_text() {
        let metrics = Metrics::new();
        let route: Arc<str> = Arc::from("/v1/items/{id}");
        metrics.request(&Method::GET, Some(&route), None, 200, Duration::from_millis(3));
        let text = metrics.render(false);
        assert!(text.contains("# TYPE protogate_http_requests_total counter\n"), "{text}");
        assert!(
            text.contains("protogate_http_requests_total{method=\"GET\",route=\"/v1/items/{id}\",status=\"200\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
        let open = metrics.render(true);
        assert!(open.contains("# TYPE protogate_http_requests counter\n"), "{open}");
        assert!(open.ends_with("# EOF\n"));
    }

    #[test]
    fn cached_and_looked_up_series_are_the_same_series() {
        let metrics = Metrics::new();
        let route: Arc<str> = Arc::from("/v1/items/{id}");
        let series = Series::default();
        metrics.request(&Method::GET, Some(&route), Some(&series), 200, Duration::from_millis(1));
        metrics.request(&Method::GET, Some(&route), Some(&series), 200, Duration::from_millis(1));
        metrics.request(&Method::GET, Some(&route), None, 200, Duration::from_millis(1));
        metrics.request(&Method::GET, Some(&route), Some(&series), 404, Duration::from_millis(1));
        let upstream: Arc<str> = Arc::from("http://127.0.0.1:1");
        let method: Arc<str> = Arc::from("a.B/C");
        let call = Series::default();
        metrics.upstream_call(&upstream, &method, &call, Code::Ok, Duration::ZERO);
        metrics.upstream_call(&upstream, &method, &call, Code::NotFound, Duration::ZERO);
        metrics.upstream_call(&upstream, &method, &call, Code::Ok, Duration::ZERO);
        let text = metrics.render(false);
        let line = |series: &str| text.lines().filter(|l| l.starts_with(series)).collect::<Vec<_>>();
        let ok = r#"protogate_http_requests_total{method="GET",route="/v1/items/{id}",status="200"}"#;
        assert_eq!(line(ok), [format!("{ok} 3")], "{text}");
        let missing = r#"protogate_http_requests_total{method="GET",route="/v1/items/{id}",status="404"}"#;
        assert_eq!(line(missing), [format!("{missing} 1")], "{text}");
        let count = r#"protogate_http_request_duration_seconds_count{method="GET",route="/v1/items/{id}"}"#;
        assert_eq!(line(count), [format!("{count} 4")], "{text}");
        let calls =
            r#"protogate_upstream_requests_total{upstream="http://127.0.0.1:1",grpc_method="a.B/C",grpc_code="OK"}"#;
        assert_eq!(line(calls), [format!("{calls} 2")], "{text}");
    }

    #[test]
    fn unmatched_requests_cannot_mint_method_labels() {
        let metrics = Metrics::new();
        let odd = Method::from_bytes(b"BREW").expect("method");
        metrics.request(&odd, None, None, 404, Duration::ZERO);
        let text = metrics.render(false);
        assert!(text.contains("method=\"OTHER\",route=\"unmatched\",status=\"404\"} 1"), "{text}");
        assert!(!text.contains("BREW"));
    }

    #[test]
    fn histograms_have_the_stated_buckets() {
        let metrics = Metrics::new();
        metrics.phase(Phase::Decode, Duration::from_micros(100));
        let text = metrics.render(false);
        assert!(text.contains("protogate_phase_duration_seconds_bucket{le=\"0.0005\",phase=\"decode\"} 1"), "{text}");
        assert!(text.contains("protogate_phase_duration_seconds_bucket{le=\"10.0\",phase=\"decode\"} 1"), "{text}");
        assert!(text.contains("protogate_phase_duration_seconds_count{phase=\"upstream\"} 0"), "{text}");
    }
}
