//! The catalog: an immutable snapshot of everything a request needs —
//! the descriptor pool, every route with its resolved request and response
//! plans and its upstream, and the route table that matches paths.
//!
//! All descriptor work happens here, at load: reading `google.api.http`
//! options, parsing templates, resolving field paths, choosing upstreams,
//! detecting collisions. A request only looks things up.
//!
//! The catalog knows no feature. Auth, rate limits (and later CORS, metrics,
//! compositions) attach their per-route data through one typed extension
//! slot, [`Route::extensions`], filled at load by each feature's own
//! [`RouteResolver`]; the feature's layer reads it back.

pub mod composition;
mod rules;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use http::{Extensions, HeaderName, HeaderValue, Method};
use prost_reflect::{DescriptorPool, MethodDescriptor, ServiceDescriptor};

use crate::config::compositions::Composition;
use crate::config::values::is_version;
use crate::config::{Config, Deprecation, InvalidBindings, RouteFacts, RouteOverride};
use crate::descriptors::{DescriptorError, Descriptors, Origin, SourceFile};
use crate::metrics::Series;
use crate::routing::{PathTemplate, RouteTable, RouteTableBuilder};
use crate::transcode::{DynamicCodec, JsonSettings, RequestPlan, ResponsePlan};
use crate::upstream::{Upstream, UpstreamError, Upstreams};

pub use self::composition::CompositionPlan;
use self::rules::{ConfigRules, Declared, Rule, Unreadable};

/// The files one upstream listed through gRPC reflection: (URL, files).
pub type Reflected = (String, Vec<(String, bytes::Bytes)>);

/// Which sides of a call stream, from the method's descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    Unary,
    ServerStreaming,
    ClientStreaming,
    Bidi,
    /// A composition of unary calls.
    Composition,
}

impl CallKind {
    pub fn of(method: &MethodDescriptor) -> Self {
        match (method.is_client_streaming(), method.is_server_streaming()) {
            (false, false) => Self::Unary,
            (false, true) => Self::ServerStreaming,
            (true, false) => Self::ClientStreaming,
            (true, true) => Self::Bidi,
        }
    }

    /// Whether the route streams in either direction.
    pub fn streams(self) -> bool {
        self.client_streams() || self.server_streams()
    }

    pub fn client_streams(self) -> bool {
        matches!(self, Self::ClientStreaming | Self::Bidi)
    }

    pub fn server_streams(self) -> bool {
        matches!(self, Self::ServerStreaming | Self::Bidi)
    }

    /// `unary`, `server-streaming`, `client-streaming`, `bidi-streaming`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unary => "unary",
            Self::ServerStreaming => "server-streaming",
            Self::ClientStreaming => "client-streaming",
            Self::Bidi => "bidi-streaming",
            Self::Composition => "composition",
        }
    }
}

/// The limits of a streaming call, resolved per route at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// The whole call's deadline: none unless an override gives one.
    pub deadline: Option<Duration>,
    /// Silence in both directions this long ends the stream.
    pub idle: Duration,
    /// SSE comment lines after this much silence.
    pub keep_alive: Duration,
    /// Largest message of a streamed request body.
    pub max_message: usize,
}

/// One HTTP binding of one gRPC method, ready to serve.
#[derive(Debug)]
pub struct Route {
    pub http_method: Method,
    pub kind: CallKind,
    pub template: PathTemplate,
    /// The template as `protogate routes` prints it: the route's label in
    /// metrics and logs.
    pub label: Arc<str>,
    /// The route's usual metric series, cached at first use.
    pub series: Series,
    /// What serves the route: one gRPC method, or a composition of several.
    pub target: Target,
    /// The deadline of a unary call or of a whole composition.
    pub timeout: Duration,
    pub max_body: usize,
    /// The URL version prefix the route is mounted under (`v1`, `v2beta1`),
    /// if any.
    pub version: Option<String>,
    /// Added to every response of the route (`Deprecation`, `Sunset`).
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// Per-route data of the features, one value per type, attached at
    /// load by their [`RouteResolver`]s.
    pub extensions: Extensions,
}

/// What serves a route.
#[derive(Debug)]
pub enum Target {
    /// One gRPC method (any call kind).
    Method(Arc<MethodCall>),
    /// Several, composed into one answer.
    Composition(Arc<CompositionPlan>),
}

/// A route's gRPC method, with everything its calls need, resolved at load.
#[derive(Debug)]
pub struct MethodCall {
    pub method: MethodDescriptor,
    /// `/package.Service/Method`, the gRPC request path.
    pub grpc_path: PathAndQuery,
    /// `package.Service/Method`: the method's label in metrics and logs.
    pub label: Arc<str>,
    /// The call's usual metric series, cached at first use.
    pub series: Series,
    pub request: RequestPlan,
    /// A streaming binding without a body: how a WebSocket frame becomes
    /// the request message (the frame is the body). Otherwise `request`
    /// serves frames too.
    pub frames: Option<RequestPlan>,
    pub response: ResponsePlan,
    pub codec: DynamicCodec,
    pub upstream: Arc<Upstream>,
    pub stream: StreamLimits,
    /// The descriptor file the method came from.
    pub origin: Origin,
    /// No `google.api.http` option: mapped to `POST /pkg.Service/Method`.
    pub auto_mapped: bool,
}

impl MethodCall {
    /// How a WebSocket message becomes the request message.
    pub fn frame_request(&self) -> &RequestPlan {
        self.frames.as_ref().unwrap_or(&self.request)
    }

    /// `acme.users.v1.UserService/GetUser`
    pub fn grpc_method(&self) -> &str {
        &self.grpc_path.as_str()[1..]
    }
}

impl Route {
    /// The route's gRPC method, unless it is a composition.
    pub fn call(&self) -> Option<&Arc<MethodCall>> {
        match &self.target {
            Target::Method(call) => Some(call),
            Target::Composition(_) => None,
        }
    }

    /// `acme.users.v1.UserService/GetUser`; empty for a composition.
    pub fn grpc_method(&self) -> &str {
        self.call().map_or("", |call| call.grpc_method())
    }

    /// The composition's name, if the route is one.
    pub fn composition(&self) -> Option<&str> {
        match &self.target {
            Target::Method(_) => None,
            Target::Composition(plan) => Some(&plan.name),
        }
    }

    /// What logs call the route: its gRPC method or its composition.
    pub fn name(&self) -> &str {
        self.composition().unwrap_or_else(|| self.grpc_method())
    }

    /// What route selectors look at; `template` is `self.template` printed.
    pub fn facts<'a>(&'a self, template: &'a str) -> RouteFacts<'a> {
        RouteFacts {
            http_method: &self.http_method,
            template,
            grpc_method: self.grpc_method(),
            version: self.version.as_deref(),
            composition: self.composition(),
        }
    }
}

/// A feature's resolver: compiled from its config once per gateway, it
/// attaches the feature's data for one route to the route's extension slot
/// (for example the route's policy, or its rate limits). A problem is
/// reported with the name of the rule at fault and refuses the load.
pub trait RouteResolver: Send + Sync {
    fn attach(&self, route: &Route, facts: &RouteFacts<'_>, slot: &mut Extensions) -> Result<(), String>;
}

/// A service or method that has no route, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unrouted {
    /// Fully-qualified service or `service/method`.
    pub name: String,
    pub reason: String,
}

/// A binding left out because it breaks http.proto, under
/// `routes.invalid_bindings: skip`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SkippedBinding {
    /// `package.Service/Method`.
    pub method: String,
    /// `GET /v1/things/{id}:custom:custom`, as written.
    pub binding: String,
    /// Where it is written: the descriptor file, or `api.yaml:12` for a
    /// service config's rule.
    pub source: String,
    /// The http.proto rule it breaks.
    pub reason: String,
}

impl fmt::Display for SkippedBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} {}: {}", self.source, self.method, self.binding, self.reason)
    }
}

/// Everything a request needs, built once per load.
pub struct Catalog {
    pub pool: DescriptorPool,
    pub routes: Vec<Arc<Route>>,
    pub table: RouteTable<Arc<Route>>,
    /// Every streaming route by its path alone, for WebSocket upgrades
    /// (`GET`, whatever method the binding names).
    pub websockets: RouteTable<Arc<Route>>,
    pub unrouted: Vec<Unrouted>,
    /// Bindings left out under `routes.invalid_bindings: skip`.
    pub skipped: Vec<SkippedBinding>,
    pub sources: Vec<SourceFile>,
    /// SHA-256 of the descriptor files this catalog was built from.
    pub digest: String,
    pub json: JsonSettings,
}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Catalog")
            .field("routes", &self.routes.len())
            .field("unrouted", &self.unrouted)
            .field("skipped", &self.skipped)
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

/// Why a catalog could not be built: every problem found, not just the first.
#[derive(Debug)]
pub struct LoadError {
    pub problems: Vec<String>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for problem in &self.problems {
            if !first {
                f.write_str("\n")?;
            }
            first = false;
            f.write_str(problem)?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

impl From<DescriptorError> for LoadError {
    fn from(err: DescriptorError) -> Self {
        Self { problems: vec![err.to_string()] }
    }
}

impl From<UpstreamError> for LoadError {
    fn from(err: UpstreamError) -> Self {
        Self { problems: vec![err.to_string()] }
    }
}

impl Catalog {
    /// Every upstream a route calls, once each, in route order.
    pub fn upstreams(&self) -> Vec<Arc<Upstream>> {
        let mut seen: Vec<Arc<Upstream>> = Vec::new();
        let mut add = |upstream: &Arc<Upstream>| {
            if !seen.iter().any(|u| Arc::ptr_eq(u, upstream)) {
                seen.push(upstream.clone());
            }
        };
        for route in &self.routes {
            match &route.target {
                Target::Method(call) => add(&call.upstream),
                Target::Composition(plan) => plan.calls.iter().for_each(|call| add(&call.upstream)),
            }
        }
        seen
    }

    /// Builds the catalog of `descriptors` under `config`, letting each of
    /// `resolvers` attach its data to every route.
    ///
    /// Every annotated method is checked — templates, field paths and
    /// collisions — whether or not an upstream serves it, so that what
    /// `protogate check` accepts without upstreams is what `serve` accepts
    /// with them. Services without an upstream are listed as unrouted.
    pub fn build(
        config: &Config,
        descriptors: Descriptors,
        upstreams: &Upstreams,
        resolvers: &[&dyn RouteResolver],
    ) -> Result<Self, LoadError> {
        let mut problems = Vec::new();
        let mut unrouted = Vec::new();
        let mut skipped = Vec::new();
        let mut planned = Vec::new();
        let http_ext = descriptors.pool.get_extension_by_name("google.api.http");
        let skip = config.routes.invalid_bindings == InvalidBindings::Skip;
        let mut config_rules = ConfigRules::new(&descriptors.service_configs);
        for (file, reason) in &descriptors.left_out {
            unrouted.push(Unrouted { name: file.clone(), reason: format!("left out: {reason}") });
        }
        // Every method with its version, to explain a selector that misses.
        let mut methods = Vec::new();

        for service in descriptors.pool.services() {
            let (origin, version, upstream) = service_upstream(&descriptors, upstreams, &service);
            if origin == Origin::Builtin {
                continue;
            }
            if upstream.is_none() {
                unrouted.push(Unrouted {
                    name: service.full_name().to_string(),
                    reason: format!("no upstream matches (add --upstream {}=URL)", service.full_name()),
                });
            }
            for method in service.methods() {
                methods.push((method.full_name().to_owned(), version.clone()));
                // A service config's rule replaces the annotation.
                let reads = config_rules
                    .bindings_for(version.as_deref(), &method)
                    .unwrap_or_else(|| rules::annotation(http_ext.as_ref(), &method));
                let written = reads.len();
                let mut kept = 0;
                for read in reads {
                    let (binding, declared) = match read {
                        Ok((rule, declared)) => {
                            (Binding::of(rule, &method, upstream, &origin, version.clone(), declared.clone()), declared)
                        }
                        Err(Unreadable { binding, reason }) => {
                            let invalid = Invalid { binding, reason, place: origin.to_string() };
                            invalid.report(&method, skip, &mut problems, &mut skipped);
                            continue;
                        }
                    };
                    match binding.plan() {
                        Ok(plans) => {
                            kept += 1;
                            planned.push((binding, plans));
                        }
                        Err(reason) => {
                            let invalid = Invalid {
                                binding: format!("{} {}", binding.http_method, binding.path),
                                reason,
                                place: declared.place(&origin),
                            };
                            invalid.report(&method, skip, &mut problems, &mut skipped);
                        }
                    }
                }
                if kept > 0 {
                    continue;
                }
                if config.routes.auto_map {
                    let mut binding = auto_binding(&service, &method, upstream, &origin);
                    binding.version = version.clone();
                    match binding.plan() {
                        Ok(plans) => planned.push((binding, plans)),
                        Err(reason) => problems.push(format!("{origin}: {}: {reason}", method.full_name())),
                    }
                } else if upstream.is_some() {
                    let reason = match written {
                        0 => "no google.api.http option and routes.auto_map is off".into(),
                        _ => "every binding was skipped (routes.invalid_bindings: skip) and routes.auto_map is off"
                            .into(),
                    };
                    unrouted.push(Unrouted { name: format!("{}/{}", service.full_name(), method.name()), reason });
                }
            }
        }
        problems.extend(config_rules.unmatched(&methods));

        let json = JsonSettings::new(&config.json);
        let mut routes = Vec::with_capacity(planned.len());
        // Every binding, served or not, claims its method and template.
        let mut claims = RouteTableBuilder::new();
        for (binding, plans) in planned {
            let grpc_method = plans.grpc_path.as_str()[1..].to_owned();
            let claimant = (grpc_method.clone(), binding.declared.place(&binding.origin));
            if let Err(collision) = claims.insert(binding.http_method.clone(), plans.template.clone(), claimant) {
                let (existing, existing_origin) = collision.existing;
                problems.push(format!(
                    "route collision: {} {} is bound by both {existing} ({existing_origin}) and {} ({})",
                    binding.http_method,
                    plans.template,
                    grpc_method,
                    binding.declared.place(&binding.origin)
                ));
                continue;
            }
            let Some(upstream) = binding.upstream.clone() else {
                continue;
            };
            let route = binding.into_route(plans, upstream, config);
            routes.push(Arc::new(attach(route, resolvers, &mut problems)));
        }

        // Compositions claim their routes after the descriptors' bindings,
        // so that a collision names the method it would shadow.
        let upstream_of = |method: &MethodDescriptor| {
            let service = method.parent_service();
            service_upstream(&descriptors, upstreams, service).2.cloned()
        };
        let cx = composition::Context { pool: &descriptors.pool, json: &json, upstream: &upstream_of };
        for composition in &config.compositions {
            let named = |what: String| format!("composition {}: {what}", composition.name);
            let template = match PathTemplate::parse(&composition.path) {
                Ok(template) => template,
                Err(err) => {
                    problems.push(named(format!("{} {}: {err}", composition.http_method, composition.path)));
                    continue;
                }
            };
            let claimant = (format!("composition {}", composition.name), "config".to_owned());
            if let Err(collision) = claims.insert(composition.http_method.clone(), template.clone(), claimant) {
                let (existing, existing_origin) = collision.existing;
                problems.push(named(format!(
                    "route collision: {} {template} is bound by {existing} ({existing_origin}) already",
                    composition.http_method
                )));
                continue;
            }
            let variables = template.variables.iter().map(|v| v.field_path.join(".")).collect();
            match CompositionPlan::compile(composition, variables, &cx) {
                Ok(plan) => {
                    let route = composition_route(composition, template, plan, config);
                    routes.push(Arc::new(attach(route, resolvers, &mut problems)));
                }
                Err(found) => problems.extend(found),
            }
        }

        let mut table = RouteTableBuilder::new();
        let mut websockets = RouteTableBuilder::new();
        for route in &routes {
            // Collisions were reported above, over every binding.
            let _ = table.insert(route.http_method.clone(), route.template.clone(), route.clone());
        }
        // Two streaming bindings of one path under different methods share
        // one WebSocket address: a GET binding keeps it, else the first
        // bound.
        let streaming = routes.iter().filter(|r| r.kind.streams());
        let (get, other): (Vec<_>, Vec<_>) = streaming.partition(|r| r.http_method == Method::GET);
        for route in get.into_iter().chain(other) {
            let _ = websockets.insert(Method::GET, route.template.clone(), route.clone());
        }
        if !problems.is_empty() {
            return Err(LoadError { problems });
        }
        Ok(Self {
            pool: descriptors.pool,
            routes,
            table: table.build(),
            websockets: websockets.build(),
            unrouted,
            skipped,
            sources: descriptors.sources,
            digest: descriptors.digest,
            json,
        })
    }
}

/// One HTTP binding before its plans are resolved.
struct Binding {
    method: MethodDescriptor,
    http_method: Method,
    path: String,
    body: String,
    response_body: String,
    /// `None`: checked like every binding, but not served.
    upstream: Option<Arc<Upstream>>,
    origin: Origin,
    auto_mapped: bool,
    version: Option<String>,
    /// Where the binding is written, for messages.
    declared: Declared,
}

/// A binding that breaks http.proto: a load error, or skipped.
struct Invalid {
    binding: String,
    reason: String,
    place: String,
}

impl Invalid {
    fn report(
        self,
        method: &MethodDescriptor,
        skip: bool,
        problems: &mut Vec<String>,
        skipped: &mut Vec<SkippedBinding>,
    ) {
        let Invalid { binding, reason, place } = self;
        if skip {
            let method = format!("{}/{}", method.parent_service().full_name(), method.name());
            skipped.push(SkippedBinding { method, binding, source: place, reason });
        } else {
            problems.push(format!(
                "{place}: {}: {binding}: {reason} (routes.invalid_bindings: skip leaves this binding out and \
                 serves the rest)",
                method.full_name()
            ));
        }
    }
}

/// What a binding compiles to before it has an upstream.
struct Plans {
    template: PathTemplate,
    request: RequestPlan,
    frames: Option<RequestPlan>,
    response: ResponsePlan,
    grpc_path: PathAndQuery,
}

fn auto_binding(
    service: &ServiceDescriptor,
    method: &MethodDescriptor,
    upstream: Option<&Arc<Upstream>>,
    origin: &Origin,
) -> Binding {
    Binding {
        method: method.clone(),
        http_method: Method::POST,
        path: format!("/{}/{}", service.full_name(), method.name()),
        body: "*".into(),
        response_body: String::new(),
        upstream: upstream.cloned(),
        origin: origin.clone(),
        auto_mapped: true,
        version: None,
        declared: Declared::Auto,
    }
}

impl Binding {
    fn of(
        rule: Rule,
        method: &MethodDescriptor,
        upstream: Option<&Arc<Upstream>>,
        origin: &Origin,
        version: Option<String>,
        declared: Declared,
    ) -> Self {
        Binding {
            method: method.clone(),
            http_method: rule.http_method,
            path: rule.path,
            body: rule.body,
            response_body: rule.response_body,
            upstream: upstream.cloned(),
            origin: origin.clone(),
            auto_mapped: false,
            version,
            declared,
        }
    }

    /// Parses the template and resolves every field path: all that can be
    /// wrong with a binding. The error is the rule it breaks.
    fn plan(&self) -> Result<Plans, String> {
        let mut template = PathTemplate::parse(&self.path).map_err(|e| e.reason)?;
        // Auto-mapped routes keep DESIGN's `/{package}.{Service}/{Method}`:
        // the package already names the version.
        if let (Some(version), false) = (&self.version, self.auto_mapped) {
            template = template.with_prefix(&format!("/{version}"));
        }
        let variables: Vec<Vec<String>> = template.variables.iter().map(|v| v.field_path.clone()).collect();
        let request = RequestPlan::new(&self.method.input(), &self.body, &variables).map_err(|e| e.to_string())?;
        let streams = self.method.is_client_streaming() || self.method.is_server_streaming();
        let frames = match streams && !request.has_body() {
            true => Some(RequestPlan::frames(&self.method.input(), &variables).map_err(|e| e.to_string())?),
            false => None,
        };
        let response = ResponsePlan::new(&self.method.output(), &self.response_body).map_err(|e| e.to_string())?;
        let grpc_path = format!("/{}/{}", self.method.parent_service().full_name(), self.method.name());
        let grpc_path = PathAndQuery::try_from(grpc_path).map_err(|e| e.to_string())?;
        Ok(Plans { template, request, frames, response, grpc_path })
    }

    fn into_route(self, plans: Plans, upstream: Arc<Upstream>, config: &Config) -> Route {
        let Plans { template, mut request, frames, response, grpc_path } = plans;
        // AIP-134: a PATCH without a mask updates the fields its body names
        // (grpc-gateway's rule: PATCH only; PUT replaces the resource).
        if self.http_method == Method::PATCH && config.routes.autofill_update_mask {
            request.autofill_update_mask();
        }
        let template_text = template.to_string();
        let facts = RouteFacts {
            http_method: &self.http_method,
            template: &template_text,
            grpc_method: &grpc_path.as_str()[1..],
            version: self.version.as_deref(),
            composition: None,
        };
        // The first override that selects the route decides each setting.
        let chosen = |get: &dyn Fn(&RouteOverride) -> Option<Duration>| {
            config.routes.overrides.iter().filter(|o| o.selector.selects(&facts)).find_map(get)
        };
        let deadline = chosen(&|o| o.timeout);
        let max_body = config
            .routes
            .overrides
            .iter()
            .filter(|o| o.selector.selects(&facts))
            .find_map(|o| o.max_body)
            .unwrap_or(config.limits.max_body);
        let stream = StreamLimits {
            deadline,
            idle: chosen(&|o| o.stream_idle_timeout).unwrap_or(config.routes.stream_idle_timeout),
            keep_alive: config.routes.sse_keep_alive,
            max_message: config.limits.max_message.min(max_body),
        };

        Route {
            http_method: self.http_method,
            kind: CallKind::of(&self.method),
            timeout: deadline.unwrap_or(config.routes.timeout),
            label: Arc::from(template_text),
            series: Series::default(),
            template,
            max_body,
            target: Target::Method(Arc::new(MethodCall {
                stream,
                codec: DynamicCodec::new(self.method.output()),
                label: Arc::from(&grpc_path.as_str()[1..]),
                series: Series::default(),
                grpc_path,
                request,
                frames,
                response,
                upstream,
                origin: self.origin,
                auto_mapped: self.auto_mapped,
                method: self.method,
            })),
            response_headers: version_headers(self.version.as_deref(), config),
            version: self.version,
            extensions: Extensions::new(),
        }
    }
}

/// `route` with the features' data attached by `resolvers`.
fn attach(mut route: Route, resolvers: &[&dyn RouteResolver], problems: &mut Vec<String>) -> Route {
    let template = route.template.to_string();
    let mut slot = Extensions::new();
    for resolver in resolvers {
        if let Err(problem) = resolver.attach(&route, &route.facts(&template), &mut slot) {
            problems.push(problem);
        }
    }
    route.extensions = slot;
    route
}

/// Where a service's descriptor came from, the version it is mounted
/// under, and the upstream that serves it (if any).
fn service_upstream<'u>(
    descriptors: &Descriptors,
    upstreams: &'u Upstreams,
    service: &ServiceDescriptor,
) -> (Origin, Option<String>, Option<&'u Arc<Upstream>>) {
    let origin = descriptors.origin(service.parent_file().name()).clone();
    let version = match &origin {
        // No folder to read a version from: the package's last segment
        // names it (`acme.users.v2` → `v2`).
        Origin::Reflection(_) => service.package_name().rsplit('.').next().filter(|v| is_version(v)).map(str::to_owned),
        _ => version_of(&origin),
    };
    let upstream = match &origin {
        Origin::Reflection(url) => upstreams.reflection_upstream(url),
        _ => upstreams.resolve_versioned(service.full_name(), version.as_deref()),
    };
    (origin, version, upstream)
}

/// A composition's route: its template's first segment is its version
/// when named like one (`/v1/...`), with that version's headers.
fn composition_route(
    composition: &Composition,
    template: PathTemplate,
    plan: CompositionPlan,
    config: &Config,
) -> Route {
    let text = template.to_string();
    let version = text.trim_start_matches('/').split(['/', ':']).next().filter(|s| is_version(s)).map(str::to_owned);
    // Overrides select a composition like any route; its own `timeout`
    // wins over theirs.
    let facts = RouteFacts {
        http_method: &composition.http_method,
        template: &text,
        grpc_method: "",
        version: version.as_deref(),
        composition: Some(&composition.name),
    };
    let selected = || config.routes.overrides.iter().filter(|o| o.selector.selects(&facts));
    let timeout = composition.timeout.or_else(|| selected().find_map(|o| o.timeout)).unwrap_or(config.routes.timeout);
    let max_body = selected().find_map(|o| o.max_body).unwrap_or(config.limits.max_body);
    Route {
        http_method: composition.http_method.clone(),
        kind: CallKind::Composition,
        label: Arc::from(text),
        series: Series::default(),
        template,
        target: Target::Composition(Arc::new(plan)),
        timeout,
        max_body,
        response_headers: version_headers(version.as_deref(), config),
        version,
        extensions: Extensions::new(),
    }
}

/// A deprecated version's `Deprecation` and `Sunset` headers.
fn version_headers(version: Option<&str>, config: &Config) -> Vec<(HeaderName, HeaderValue)> {
    version
        .and_then(|v| config.versions.get(v))
        .and_then(|v| v.deprecated.as_ref())
        .map(deprecation_headers)
        .unwrap_or_default()
}

/// The version a descriptor file is mounted under: the nearest enclosing
/// folder named like a version (`descriptors/v2/users.binpb` → `v2`).
fn version_of(origin: &Origin) -> Option<String> {
    let Origin::Folder(path) = origin else {
        return None;
    };
    path.parent()?
        .components()
        .rev()
        .filter_map(|c| c.as_os_str().to_str())
        .find(|name| is_version(name))
        .map(str::to_owned)
}

/// `Deprecation` (RFC 9745: `@<unix seconds>`, or `true` when no date is
/// configured) and `Sunset` (RFC 8594, an HTTP date).
fn deprecation_headers(deprecated: &Deprecation) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = Vec::with_capacity(2);
    let since = deprecated
        .since
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or_else(|| "true".to_owned(), |d| format!("@{}", d.as_secs()));
    if let Ok(value) = HeaderValue::try_from(since) {
        headers.push((HeaderName::from_static("deprecation"), value));
    }
    if let Some(sunset) = deprecated.sunset {
        if let Ok(value) = HeaderValue::try_from(httpdate::fmt_http_date(sunset)) {
            headers.push((HeaderName::from_static("sunset"), value));
        }
    }
    headers
}

/// Loads the descriptor folder, merges files discovered by reflection
/// (`(upstream URL, files)`), and builds a catalog in one step.
pub fn load(
    config: &Config,
    upstreams: &Upstreams,
    reflected: &[Reflected],
    resolvers: &[&dyn RouteResolver],
) -> Result<Catalog, LoadError> {
    let skip = config.routes.invalid_bindings == crate::config::InvalidBindings::Skip;
    let descriptors = crate::descriptors::load_with(&config.descriptors, reflected, skip)?;
    Catalog::build(config, descriptors, upstreams, resolvers)
}
