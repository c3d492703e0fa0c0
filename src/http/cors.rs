//! CORS (DESIGN §10): lets browser pages of allowed origins call the
//! gateway and read its answers, errors included.
//!
//! The layer sits below the respond layer and above the route match, so a
//! preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
//! is answered here, 204, before the route match could answer 405 or 404;
//! and every other answer (a backend's, or an error envelope on its way to
//! the respond layer) gets the headers that let the page read it.
//!
//! Policies are compiled at load into ready header values ([`CorsPolicy`]);
//! each route's own policy (the first `cors.routes` entry that selects it)
//! goes to its extension slot as [`RouteCors`] through [`CorsRules`], the
//! feature's resolver. A request reads them back: a preflight finds its
//! route in the catalog snapshot's table by the method it asks for; an
//! actual request takes the route the match recorded. A path with no route
//! gets the global policy, so a page can see the 404 behind it.
//!
//! An origin that is not allowed gets no CORS headers at all: its preflight
//! is answered 204 bare (the browser then refuses the call), and its other
//! requests are served or refused on their own merits.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use tower::{Layer, Service};

use super::observe::Exchange;
use super::respond::Snapshot;
use super::{Body, ResponseFuture};
use crate::catalog::{Route, RouteResolver};
use crate::config::cors::{CorsConfig, CorsSettings};
use crate::config::{RouteFacts, RouteSelector};
use crate::error::GatewayError;
use crate::routing::Match;

/// One CORS policy, its header values built once.
#[derive(Debug)]
pub struct CorsPolicy {
    settings: CorsSettings,
    /// `Access-Control-Allow-Origin: *` rather than the origin echoed:
    /// every origin is allowed and no credentials are.
    wildcard: bool,
    allow_methods: HeaderValue,
    /// `None`: echo what the preflight asks for.
    allow_headers: Option<HeaderValue>,
    /// `None` when nothing is exposed.
    expose_headers: Option<HeaderValue>,
    max_age: HeaderValue,
}

fn yes() -> HeaderValue {
    HeaderValue::from_static("true")
}

fn vary_origin() -> HeaderValue {
    HeaderValue::from_static("origin")
}

fn vary_preflight() -> HeaderValue {
    HeaderValue::from_static("origin, access-control-request-method, access-control-request-headers")
}

impl CorsPolicy {
    pub fn new(settings: &CorsSettings) -> Result<Self, String> {
        if settings.any_origin() && settings.allow_credentials {
            return Err("allow_credentials: true with allow_origins `*` is refused".into());
        }
        let list = |items: Vec<&str>| HeaderValue::try_from(items.join(", ")).map_err(|e| e.to_string());
        let names = |names: &[HeaderName]| list(names.iter().map(HeaderName::as_str).collect());
        Ok(Self {
            wildcard: settings.any_origin(),
            allow_methods: list(settings.allow_methods.iter().map(Method::as_str).collect())?,
            allow_headers: settings.allow_headers.as_deref().map(names).transpose()?,
            expose_headers: match settings.expose_headers.as_slice() {
                [] => None,
                exposed => Some(names(exposed)?),
            },
            max_age: HeaderValue::from(settings.max_age.as_secs()),
            settings: settings.clone(),
        })
    }

    /// The `Access-Control-Allow-Origin` value for `origin`, or `None` when
    /// the origin is not allowed.
    fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        let text = origin.to_str().ok()?;
        if !self.settings.allows(text) {
            return None;
        }
        Some(if self.wildcard { HeaderValue::from_static("*") } else { origin.clone() })
    }

    /// The preflight's answer: 204, with the `Allow-*` headers when the
    /// origin is allowed.
    fn preflight(&self, origin: &HeaderValue, requested_headers: Option<&HeaderValue>) -> Response<Body> {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        headers.insert(VARY, vary_preflight());
        let Some(allow_origin) = self.allow_origin(origin) else {
            return response;
        };
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        headers.insert(ACCESS_CONTROL_ALLOW_METHODS, self.allow_methods.clone());
        if let Some(allowed) = self.allow_headers.as_ref().or(requested_headers) {
            headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, allowed.clone());
        }
        headers.insert(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        if self.settings.allow_credentials {
            headers.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, yes());
        }
        response
    }

    /// Gives `put` the headers an actual request's answer gets.
    fn actual(&self, origin: &HeaderValue, mut put: impl FnMut(HeaderName, HeaderValue)) {
        let Some(allow_origin) = self.allow_origin(origin) else {
            return;
        };
        put(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        if let Some(exposed) = &self.expose_headers {
            put(ACCESS_CONTROL_EXPOSE_HEADERS, exposed.clone());
        }
        if self.settings.allow_credentials {
            put(ACCESS_CONTROL_ALLOW_CREDENTIALS, yes());
        }
    }
}

/// A route's own CORS policy, in its extension slot; a route without one
/// takes the global policy.
#[derive(Debug, Clone)]
pub struct RouteCors(pub Arc<CorsPolicy>);

/// `cors:` compiled: the global policy, and the route entries' policies
/// for the resolver.
#[derive(Debug)]
pub struct CorsRules {
    global: Arc<CorsPolicy>,
    routes: Vec<(RouteSelector, Arc<CorsPolicy>)>,
}

impl CorsRules {
    /// The config file's checks have refused what is wrong in it with key
    /// and line; this guards configs built in code.
    pub fn compile(config: &CorsConfig) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let global = CorsPolicy::new(&config.settings).map_err(|e| problems.push(format!("cors: {e}"))).ok();
        let mut routes = Vec::with_capacity(config.routes.len());
        for (index, route) in config.routes.iter().enumerate() {
            match CorsPolicy::new(&route.settings) {
                Ok(policy) => routes.push((route.selector.clone(), Arc::new(policy))),
                Err(e) => problems.push(format!("cors.routes[{index}]: {e}")),
            }
        }
        match global {
            Some(global) if problems.is_empty() => Ok(Self { global: Arc::new(global), routes }),
            _ => Err(problems),
        }
    }

    fn policy_of<'a>(&'a self, route: Option<&'a Route>) -> &'a CorsPolicy {
        route.and_then(|r| r.extensions.get::<RouteCors>()).map_or(&self.global, |RouteCors(p)| p)
    }
}

impl RouteResolver for CorsRules {
    fn attach(&self, _route: &Route, facts: &RouteFacts<'_>, slot: &mut http::Extensions) -> Result<(), String> {
        if let Some((_, policy)) = self.routes.iter().find(|(selector, _)| selector.selects(facts)) {
            slot.insert(RouteCors(policy.clone()));
        }
        Ok(())
    }
}

/// The CORS layer; `None` when `cors` is not configured, and then the
/// layer passes every request straight through.
#[derive(Debug, Clone)]
pub struct CorsLayer {
    rules: Option<Arc<CorsRules>>,
}

impl CorsLayer {
    pub fn new(rules: Option<Arc<CorsRules>>) -> Self {
        Self { rules }
    }
}

impl<S> Layer<S> for CorsLayer {
    type Service = Cors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Cors { rules: self.rules.clone(), inner }
    }
}

#[derive(Debug, Clone)]
pub struct Cors<S> {
    rules: Option<Arc<CorsRules>>,
    inner: S,
}

impl<S, B> Service<Request<B>> for Cors<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = GatewayError, Future = ResponseFuture>,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(rules) = &self.rules else {
            return self.inner.call(req);
        };
        let Some(origin) = req.headers().get(ORIGIN).cloned() else {
            // Caches must still know the answer would differ with an Origin.
            let call = self.inner.call(req);
            return Box::pin(async move { add_vary_origin(call.await) });
        };
        if let Some(requested) = preflight_method(&req) {
            // Without route entries every route has the global policy: no
            // need to look the route up.
            let snapshot = req.extensions().get::<Snapshot>().filter(|_| !rules.routes.is_empty());
            let route = snapshot.and_then(|Snapshot(catalog)| match catalog.table.find(&requested, req.uri().path()) {
                Match::Found { value, .. } => Some(value.clone()),
                _ => None,
            });
            let policy = rules.policy_of(route.as_deref());
            let response = policy.preflight(&origin, req.headers().get(ACCESS_CONTROL_REQUEST_HEADERS));
            return Box::pin(std::future::ready(Ok(response)));
        }
        // The route match records the route here; its policy is known once
        // the answer comes back.
        let exchange = req.extensions().get::<Arc<Exchange>>().cloned();
        let rules = rules.clone();
        let call = self.inner.call(req);
        Box::pin(async move {
            let result = call.await;
            let policy = rules.policy_of(exchange.as_deref().and_then(Exchange::route).map(|r| &**r));
            match result {
                Ok(mut response) => {
                    let headers = response.headers_mut();
                    headers.append(VARY, vary_origin());
                    policy.actual(&origin, |name, value| {
                        headers.insert(name, value);
                    });
                    Ok(response)
                }
                Err(mut err) => {
                    err.headers.push((VARY, vary_origin()));
                    policy.actual(&origin, |name, value| err.headers.push((name, value)));
                    Err(err)
                }
            }
        })
    }
}

/// The method a preflight asks about, or `None` when `req` is no preflight.
fn preflight_method<B>(req: &Request<B>) -> Option<Method> {
    if req.method() != Method::OPTIONS {
        return None;
    }
    let requested = req.headers().get(ACCESS_CONTROL_REQUEST_METHOD)?;
    Method::from_bytes(requested.as_bytes()).ok()
}

fn add_vary_origin(result: Result<Response<Body>, GatewayError>) -> Result<Response<Body>, GatewayError> {
    match result {
        Ok(mut response) => {
            response.headers_mut().append(VARY, vary_origin());
            Ok(response)
        }
        Err(err) => Err(err.with_header(VARY, vary_origin())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::cors::parse_origin;

    fn settings(origins: &[&str]) -> CorsSettings {
        CorsSettings {
            allow_origins: origins.iter().map(|o| parse_origin(o).expect("origin")).collect(),
            ..CorsSettings::default()
        }
    }

    fn value(text: &'static str) -> HeaderValue {
        HeaderValue::from_static(text)
    }

    #[test]
    fn header_values_are_built_once_from_the_settings() {
        let policy = CorsPolicy::new(&settings(&["https://app.example.com"])).expect("policy");
        assert_eq!(policy.allow_methods, "GET, HEAD, POST, PUT, PATCH, DELETE");
        assert_eq!(policy.max_age, "600");
        assert_eq!(policy.allow_headers, None);
        let exposed = policy.expose_headers.as_ref().expect("exposed");
        assert!(exposed.to_str().is_ok_and(|e| e.starts_with("grpc-status, grpc-message, x-request-id")));
    }

    #[test]
    fn the_origin_is_echoed_unless_every_origin_is_allowed() {
        let exact = CorsPolicy::new(&settings(&["https://app.example.com"])).expect("policy");
        assert_eq!(exact.allow_origin(&value("https://app.example.com")), Some(value("https://app.example.com")));
        assert_eq!(exact.allow_origin(&value("https://evil.example.com")), None);
        let any = CorsPolicy::new(&settings(&["*"])).expect("policy");
        assert_eq!(any.allow_origin(&value("https://anyone.test")), Some(value("*")));
    }

    #[test]
    fn star_with_credentials_is_refused() {
        let mut both = settings(&["*"]);
        both.allow_credentials = true;
        assert!(CorsPolicy::new(&both).is_err());
    }

    #[test]
    fn a_disallowed_preflight_is_a_bare_204() {
        let policy = CorsPolicy::new(&settings(&["https://app.example.com"])).expect("policy");
        let response = policy.preflight(&value("https://evil.example.com"), None);
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert!(response.headers().keys().all(|name| !name.as_str().starts_with("access-control-")));
        assert!(response.headers().contains_key(VARY));
    }
}
