//! The one place where errors become responses (DESIGN §5). Every layer
//! below refuses by returning a [`GatewayError`]; this layer renders it as
//! the JSON of `google.rpc.Status` with its HTTP status and the headers the
//! error carries (`WWW-Authenticate`, `Retry-After`, `Allow`,
//! `RateLimit-*`), and logs it once, at a level chosen by whose fault it
//! is. Metrics and the access log are recorded here too ([`observe`]).
//!
//! [`observe`]: super::observe
//!
//! It also takes the catalog snapshot the request will finish on, so that a
//! backend's error details are rendered through the same descriptor pool
//! that served the call.

use std::convert::Infallible;
use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use arc_swap::ArcSwap;
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Frame;
use http_body_util::StreamBody;
use tonic::Code;
use tower::{Layer, Service};

use super::observe::{AccessRecord, Exchange, Observed};
use super::request_id::X_REQUEST_ID;
use super::Body;
use crate::catalog::Catalog;
use crate::error::{Fault, GatewayError};
use crate::metrics::Metrics;
use crate::transcode::status::{render_error, status_trailers};

/// A request refused before any work — over `limits.max_concurrent_requests`,
/// or its target or headers too large: the route match, the first layer
/// that may answer for a route, returns this error (the CORS layer above
/// it then lets a page read it).
#[derive(Debug, Clone)]
pub struct Refused(pub GatewayError);

/// The longest request target (path and query) served; longer is a 414.
pub const MAX_TARGET: usize = 8 << 10;

/// The catalog a request started on, in its extensions for the route match.
#[derive(Debug, Clone)]
pub struct Snapshot(pub Arc<Catalog>);

/// What the respond layer of one connection records requests into.
#[derive(Clone)]
pub struct Observer {
    pub metrics: Arc<Metrics>,
    /// `logging.access`.
    pub access: bool,
    /// `limits.max_concurrent_requests`.
    pub max_in_flight: Option<NonZeroUsize>,
    /// `limits.max_header_bytes`.
    pub max_header_bytes: usize,
    /// The connection's peer as the access log prints it.
    pub peer: Arc<str>,
}

impl Observer {
    /// 414 or 431 for a request whose target or header fields are larger
    /// than the gateway serves.
    fn oversized<B>(&self, req: &Request<B>) -> Option<GatewayError> {
        let target = req.uri().path_and_query().map_or(0, |target| target.as_str().len());
        if target > MAX_TARGET {
            let message = format!("the request target is {target} bytes; the limit is {MAX_TARGET}");
            return Some(
                GatewayError::new(Code::ResourceExhausted, Fault::Client, message)
                    .with_status(StatusCode::URI_TOO_LONG),
            );
        }
        // As on the HTTP/1 wire: `name: value` and a line end per field.
        let bytes: usize = req.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
        (bytes > self.max_header_bytes).then(|| {
            let message = format!(
                "the request's header fields are {bytes} bytes; the limit is {} (limits.max_header_bytes)",
                self.max_header_bytes
            );
            GatewayError::new(Code::ResourceExhausted, Fault::Client, message)
                .with_status(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        })
    }

    /// 503 for a request over `limits.max_concurrent_requests`.
    fn shed(&self) -> GatewayError {
        let limit = self.max_in_flight.map_or(0, NonZeroUsize::get);
        GatewayError::new(
            Code::Unavailable,
            Fault::Upstream,
            format!("the gateway is serving its limit of {limit} concurrent requests; retry later"),
        )
        .with_status(StatusCode::SERVICE_UNAVAILABLE)
        .with_header(RETRY_AFTER, HeaderValue::from_static("1"))
    }
}

#[derive(Clone)]
pub struct RespondLayer {
    catalog: Arc<ArcSwap<Catalog>>,
    observer: Observer,
}

impl RespondLayer {
    pub fn new(catalog: Arc<ArcSwap<Catalog>>, observer: Observer) -> Self {
        Self { catalog, observer }
    }
}

impl<S> Layer<S> for RespondLayer {
    type Service = Respond<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Respond { catalog: self.catalog.clone(), observer: self.observer.clone(), inner }
    }
}

#[derive(Clone)]
pub struct Respond<S> {
    catalog: Arc<ArcSwap<Catalog>>,
    observer: Observer,
    inner: S,
}

impl<S, B> Service<Request<B>> for Respond<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = GatewayError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
            // No layer of ours refuses readiness; if one did, the call
            // below reports it as a response.
            Poll::Ready(Err(_)) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let start = Instant::now();
        // Load shedding: decided here, exactly (one atomic add), and
        // answered before any work (see `Refused`).
        let in_flight = self.observer.metrics.in_flight(self.observer.max_in_flight);
        let catalog = self.catalog.load_full();
        let method = req.method().clone();
        let uri = req.uri().clone();
        let may_leave_body = req.version() <= Version::HTTP_11 && has_body(req.headers());
        let exchange = Arc::new(Exchange::default());
        let request_id = self.observer.access.then(|| req.headers().get(X_REQUEST_ID).cloned()).flatten();
        req.extensions_mut().insert(Snapshot(catalog.clone()));
        req.extensions_mut().insert(exchange.clone());
        let refused = match in_flight {
            None => Some(self.observer.shed()),
            Some(_) => self.observer.oversized(&req),
        };
        if let Some(refused) = refused {
            req.extensions_mut().insert(Refused(refused));
        }
        let call = self.inner.call(req);
        let observer = self.observer.clone();
        Box::pin(async move {
            let response = match call.await {
                Ok(response) => response,
                Err(err) => {
                    log(&method, &uri, &err);
                    exchange.set_code(err.code);
                    let mut response = error_response(&catalog, &err);
                    if may_leave_body {
                        // A refusal may come before the body is read (413,
                        // 401, 429, ...): the connection then cannot carry
                        // another request, and the client must be told so
                        // rather than find out on its next one.
                        response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
                    }
                    response
                }
            };
            let status = response.status();
            let route = exchange.route();
            // The route's cached series are those of its own method (a
            // HEAD served by a GET route is counted apart).
            let series = route.filter(|route| route.http_method == method).map(|route| &route.series);
            observer.metrics.request(
                &method,
                route.map(|route| &route.label),
                series,
                status.as_u16(),
                start.elapsed(),
            );
            let record = observer.access.then(|| AccessRecord {
                exchange,
                start,
                request_id,
                peer: observer.peer.clone(),
                method,
                status,
            });
            // A whole answer is done: record it now. A stream is recorded
            // when its body ends.
            let (parts, body) = response.into_parts();
            let body = match body {
                Body::Full(full) => {
                    if let Some(record) = record {
                        record.write(http_body::Body::size_hint(&full).exact().unwrap_or(0));
                    }
                    drop(in_flight);
                    Body::Full(full)
                }
                stream => Body::stream(Observed::new(stream, record, in_flight)),
            };
            Ok(Response::from_parts(parts, body))
        })
    }
}

/// Whether an HTTP/1 request announces a body.
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(TRANSFER_ENCODING) || headers.get(CONTENT_LENGTH).is_some_and(|len| len.as_bytes() != b"0")
}

/// One event per refusal, at the level its fault deserves: a client's
/// mistake or a backend's answer is routine, a gateway fault is not.
fn log(method: &Method, uri: &Uri, err: &GatewayError) {
    let path = uri.path();
    match err.fault {
        Fault::Client => tracing::debug!(%method, path, code = ?err.code, message = %err.message, "rejected"),
        Fault::Upstream => tracing::debug!(%method, path, code = ?err.code, message = %err.message, "upstream error"),
        Fault::Internal => tracing::error!(%method, path, code = ?err.code, message = %err.message, "gateway fault"),
    }
}

/// `err` as the `google.rpc.Status` JSON, details resolved through the
/// catalog's descriptor pool.
pub fn error_response(catalog: &Catalog, err: &GatewayError) -> Response<Body> {
    let body = render_error(err, &catalog.pool, &catalog.json);
    let body = match err.trailers {
        false => Body::full(body),
        true => {
            let trailers = status_trailers(err.code, &err.message);
            let frames = [Ok::<_, Infallible>(Frame::data(body)), Ok(Frame::trailers(trailers))];
            Body::stream(StreamBody::new(futures_util::stream::iter(frames)))
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = err.status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in &err.headers {
        headers.append(name.clone(), value.clone());
    }
    response
}
