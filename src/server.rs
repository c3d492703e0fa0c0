//! The request path. [`Gateway::serve`] accepts connections; [`pipeline`]
//! is the whole middleware stack, top to bottom; [`Transcoder`] is the
//! innermost service: decode, call, encode. Every error becomes the one JSON
//! envelope in [`error_response`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use prost_reflect::DescriptorPool;
use tokio::net::TcpListener;
use tonic::Code;
use tower::{Service, ServiceBuilder};

use crate::catalog::{Catalog, LoadError};
use crate::config::Config;
use crate::error::{Fault, GatewayError};
use crate::middleware::auth::{AuthLayer, Authenticator};
use crate::middleware::ratelimit::{RateLimitLayer, RateLimiter};
use crate::middleware::request_id::RequestIdLayer;
use crate::middleware::route_match::{MatchedRoute, RouteMatchLayer};
use crate::middleware::{Identity, ResponseFuture};
use crate::reload::Reloader;
use crate::transcode::metadata::{self, MetadataRules, X_REQUEST_ID};
use crate::transcode::status::render_error;
use crate::transcode::{JsonSettings, RequestInput};
use crate::upstream::Upstreams;

/// The response body of every route. Unary answers are one buffer; streaming
/// routes will add a variant here.
pub type Body = Full<Bytes>;

/// How long a client may take to send a request's headers (HTTP/1).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long in-flight requests may run after shutdown is asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

const GRPC_TIMEOUT: &str = "grpc-timeout";

/// A loaded gateway: config, upstream channels and the live catalog.
#[derive(Clone)]
pub struct Gateway {
    /// Owns the live catalog (swapped whole on reload; a request keeps the
    /// snapshot it started on).
    reloader: Arc<Reloader>,
    metadata: Arc<MetadataRules>,
    auth: Arc<Authenticator>,
    /// Rate-limit state; outlives catalog swaps so buckets survive reloads.
    ratelimit: Arc<RateLimiter>,
}

impl Gateway {
    /// Reads the descriptor folder and builds the catalog. Must run inside a
    /// tokio runtime (upstream channels spawn their workers).
    pub fn load(config: Config) -> Result<Self, LoadError> {
        let upstreams = Upstreams::new(&config)?;
        let auth = Authenticator::new(&config.auth).map_err(|err| LoadError { problems: vec![err.to_string()] })?;
        let metadata = MetadataRules::new(&config.forward_headers).with_identity(auth.forwarding().clone());
        let ratelimit = Arc::new(RateLimiter::new(&config.rate_limits));
        let reloader = Arc::new(Reloader::start(Arc::new(config), upstreams)?);
        let gateway = Self { reloader, metadata: Arc::new(metadata), auth: Arc::new(auth), ratelimit };
        gateway.auth.start();
        Ok(gateway)
    }

    /// The rate limiter's state (sizes and counters for metrics).
    pub fn rate_limiter(&self) -> &Arc<RateLimiter> {
        &self.ratelimit
    }

    /// The catalog currently serving.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.reloader.catalog().load_full()
    }

    /// Reloading and its status.
    pub fn reloader(&self) -> &Arc<Reloader> {
        &self.reloader
    }

    /// Serves HTTP/1.1 and HTTP/2 (h2c) on `listener` until `shutdown`
    /// resolves, then stops accepting and drains in-flight requests. The
    /// descriptor folder is watched meanwhile.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop_watching, watching) = tokio::sync::oneshot::channel::<()>();
        let watcher = tokio::spawn(self.reloader.clone().watch(async move {
            let _ = watching.await;
        }));
        let this = self.clone();
        let result = accept_loop(listener, shutdown, move |peer| this.pipeline(peer)).await;
        let _ = stop_watching.send(());
        let _ = watcher.await;
        result
    }

    /// The middleware stack of one connection, outermost first.
    pub fn pipeline(
        &self,
        peer: SocketAddr,
    ) -> impl Service<Request<Incoming>, Response = Response<Body>, Error = Infallible, Future = ResponseFuture> + Clone
    {
        ServiceBuilder::new()
            // First, so that every response, errors included, carries the id.
            .layer(RequestIdLayer)
            // Takes the catalog snapshot the request will finish on; 404 and
            // 405 end here, before any body is read.
            .layer(RouteMatchLayer::new(self.reloader.catalog().clone()))
            // After the match (policies are per route), before any body is
            // read: 401/403 cost no JSON parsing.
            .layer(AuthLayer::new(self.auth.clone()))
            // After authentication (key `consumer`), before any body is read:
            // a refused request costs no JSON parsing and no upstream call.
            .layer(RateLimitLayer::new(self.ratelimit.clone(), peer))
            // Innermost: body, transcoding, the upstream call.
            .service(Transcoder { metadata: self.metadata.clone(), peer: metadata::peer_value(peer.ip()) })
    }
}

/// Accepts connections on `listener` until `shutdown`, serving each with the
/// service `make(peer)` over HTTP/1.1 or HTTP/2 (h2c), then drains.
pub(crate) async fn accept_loop<S>(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    make: impl Fn(SocketAddr) -> S,
) -> std::io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client that connects and never finishes its headers must not hold a
    // connection forever; an HTTP/2 peer that stops answering pings is let go.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1024)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off
                    // instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(make(peer));
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service).into_owned());
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(error = %err, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("drain deadline passed; closing remaining connections"),
    }
    Ok(())
}

/// Decodes the request into the route's input message, calls the upstream
/// and encodes its answer.
#[derive(Clone)]
pub struct Transcoder {
    metadata: Arc<MetadataRules>,
    /// The connection's peer IP, already an `x-forwarded-for` entry.
    peer: HeaderValue,
}

impl Service<Request<Incoming>> for Transcoder {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let Some(matched) = req.extensions_mut().remove::<MatchedRoute>() else {
                let err = GatewayError::new(Code::Internal, Fault::Internal, "no route was matched");
                return Ok(render(&DescriptorPool::global(), &JsonSettings::default(), &err));
            };
            let response = match this.unary(&matched, req).await {
                Ok(response) => response,
                Err(err) => {
                    match err.fault {
                        Fault::Client => {
                            tracing::debug!(route = matched.route.grpc_method(), code = ?err.code, message = %err.message, "rejected")
                        }
                        Fault::Upstream => {
                            tracing::debug!(route = matched.route.grpc_method(), code = ?err.code, message = %err.message, "upstream error")
                        }
                        Fault::Internal => {
                            tracing::error!(route = matched.route.grpc_method(), code = ?err.code, message = %err.message, "gateway fault")
                        }
                    }
                    error_response(&matched.catalog, &err)
                }
            };
            Ok(response)
        })
    }
}

impl Transcoder {
    /// A unary call: decode, call, encode.
    async fn unary(&self, matched: &MatchedRoute, req: Request<Incoming>) -> Result<Response<Body>, GatewayError> {
        let MatchedRoute { catalog, route, captures } = matched;
        let (parts, body) = req.into_parts();

        let body = read_body(body, &parts.headers, route.max_body).await?;
        let content_type = parts.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let message = route
            .request
            .build(&catalog.json, RequestInput { body, content_type, captures, query: parts.uri.query() })?;

        let request_id = parts.headers.get(X_REQUEST_ID).cloned().unwrap_or_else(metadata::new_request_id);
        let metadata = self.metadata.request_metadata(
            &parts.headers,
            parts.uri.authority().map(|a| a.as_str()),
            &self.peer,
            &request_id,
            parts.extensions.get::<Identity>(),
        );
        let timeout = match parts.headers.get(GRPC_TIMEOUT) {
            Some(value) => parse_grpc_timeout(value)?.min(route.timeout),
            None => route.timeout,
        };
        let reply =
            route.upstream.unary(route.grpc_path.clone(), route.codec.clone(), message, metadata, timeout).await?;
        let message = reply.message.ok_or_else(|| {
            GatewayError::new(Code::Internal, Fault::Upstream, "upstream ended the call without a response message")
        })?;
        let rendered = route.response.render(&catalog.json, &message)?;

        let mut response = Response::new(Full::new(rendered.body));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, rendered.content_type);
        metadata::response_headers(&reply.headers, &reply.trailers, headers);
        Ok(response)
    }
}

/// Reads the whole body, refusing more than `limit` bytes (413) before
/// reading them when the client announced its length.
async fn read_body(body: Incoming, headers: &http::HeaderMap, limit: usize) -> Result<Bytes, GatewayError> {
    let too_large = || {
        GatewayError::new(
            Code::ResourceExhausted,
            Fault::Client,
            format!("request body exceeds the limit of {limit} bytes"),
        )
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    };
    let announced = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<LengthLimitError>() => Err(too_large()),
        Err(err) => {
            Err(GatewayError::new(Code::InvalidArgument, Fault::Client, format!("reading request body: {err}")))
        }
    }
}

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &HeaderValue) -> Result<Duration, GatewayError> {
    let invalid = || GatewayError::bad_field("grpc-timeout", format!("invalid grpc-timeout header {value:?}"));
    let text = value.to_str().map_err(|_| invalid())?;
    if text.len() < 2 || text.len() > 9 {
        return Err(invalid());
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let n: u64 = digits.parse().map_err(|_| invalid())?;
    Ok(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return Err(invalid()),
    })
}

/// The one place where errors become responses.
pub fn error_response(catalog: &Catalog, err: &GatewayError) -> Response<Body> {
    render(&catalog.pool, &catalog.json, err)
}

fn render(pool: &DescriptorPool, json: &JsonSettings, err: &GatewayError) -> Response<Body> {
    let body = render_error(err, pool, json);
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = err.status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in &err.headers {
        headers.append(name.clone(), value.clone());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        let parse = |s: &str| parse_grpc_timeout(&HeaderValue::from_str(s).expect("value")).ok();
        assert_eq!(parse("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse("150m"), Some(Duration::from_millis(150)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "S", "10", "10s", "-1S", "123456789S", "1.5S"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
