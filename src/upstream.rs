//! Backends: the endpoints of each upstream URL ([`cluster`]) and their
//! HTTP/2 connections ([`connection`]), the choice of upstream for a service
//! (most specific `--upstream` pattern wins), and the calls themselves with
//! their deadlines and retries.
//!
//! A unary call goes over the connection directly
//! ([`Connection::unary`](connection::Connection::unary)): one framed
//! message out, the answer's headers, message and trailers back, separately
//! (`grpc-metadata-*` versus `grpc-trailer-*`). Streaming calls go through
//! tonic's client over the same connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::Uri;
use http::{HeaderName, HeaderValue};
use prost_reflect::DynamicMessage;
use tokio::time::Instant;
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::Code;

use crate::config::tls::UpstreamTlsConfig;
use crate::config::upstreams::{Retries, UpstreamSettings};
use crate::config::Config;
use crate::error::{Fault, GatewayError};
use crate::telemetry::CallSpan;
use crate::tls::Watched;
use crate::transcode::codec::Outgoing;
use crate::transcode::DynamicCodec;

pub mod cluster;
pub mod connection;
mod metadata;

use self::cluster::{Admitted, Attempt, Cluster, Outcome, Resolve, SystemResolver};
pub use self::connection::UnaryReply;
use self::connection::{ConnectError, Connection, Failure, Reset};
pub use self::metadata::CallMetadata;

const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// One upstream: its endpoints ([`Cluster`]) and the calls to them.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub url: Uri,
    /// `url` as configured (no `/` path added): the upstream's label in
    /// metrics and logs.
    pub label: Arc<str>,
    pub cluster: Arc<Cluster>,
}

#[derive(Debug, thiserror::Error)]
#[error("upstream {url}: {reason}")]
pub struct UpstreamError {
    pub url: String,
    pub reason: String,
}

impl Upstream {
    /// The endpoints of `url` (or `settings.endpoints`), connected lazily:
    /// an upstream that is down at load only fails the requests sent to it
    /// (503). An `https://` upstream verifies its backends with the web PKI
    /// roots, or as `tls` says (its files are read now, and again by
    /// [`Upstreams::refresh_tls`]). Discovery and health checks run in the
    /// background for as long as the upstream lives.
    pub fn new(
        url: &Uri,
        settings: UpstreamSettings,
        tls: Option<&UpstreamTlsConfig>,
        resolver: Arc<dyn Resolve>,
    ) -> Result<Self, UpstreamError> {
        let error = |reason: String| UpstreamError { url: url.to_string(), reason };
        let tls = match (url.scheme_str(), tls) {
            (Some("https"), Some(tls)) => {
                let tls = tls.clone();
                let host = url.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
                let paths = tls.files().map(Path::to_path_buf).collect();
                let watched =
                    Watched::new("upstream TLS", paths, move |contents| connection::client_tls(&tls, &host, contents))
                        .map_err(|err| error(err.to_string()))?;
                Some(Arc::new(watched))
            }
            _ => None,
        };
        let cluster = Cluster::new(url, settings, tls, resolver);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(Cluster::run(Arc::downgrade(&cluster)));
        }
        Ok(Self { url: url.clone(), label: Arc::from(url.to_string().trim_end_matches('/')), cluster })
    }

    /// A connection to one of its endpoints, for calls other than
    /// transcoded ones (reflection); `None` while it has no endpoint.
    pub fn connection(&self) -> Option<Connection> {
        self.cluster.pick(&[]).map(|attempt| attempt.endpoint.connection())
    }

    /// The circuit breaker's refusal.
    fn overloaded(&self) -> GatewayError {
        GatewayError::new(Code::Unavailable, Fault::Upstream, "upstream overloaded: too many calls in flight")
            .with_header(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"))
    }

    fn no_endpoint(&self) -> GatewayError {
        GatewayError::new(Code::Unavailable, Fault::Upstream, "upstream unavailable: no endpoint")
    }

    /// Sends one request message and reads one response message. A try
    /// that never reached a backend (see [`retryable`]) is tried again on
    /// another endpoint, within the deadline and the retry budget.
    pub async fn unary(
        &self,
        path: PathAndQuery,
        message: Outgoing,
        mut metadata: CallMetadata,
        timeout: Duration,
    ) -> Result<UnaryReply, GatewayError> {
        let deadline = Deadline { at: Instant::now() + timeout, timeout };
        let _admitted = self.cluster.admit().ok_or_else(|| self.overloaded())?;
        self.cluster.count_request();
        let mut span = CallSpan::start(&mut metadata, &self.url, path.as_str());
        let framed = message.framed();
        let retries = self.cluster.settings.retries;
        let call = async {
            let mut tried = Tried::default();
            loop {
                let (attempt, mut metadata, last) = self.next_try(&mut tried, &mut metadata, retries)?;
                metadata.append(GRPC_TIMEOUT, grpc_timeout(deadline.at));
                let connection = attempt.endpoint.connection();
                match connection.unary(&path, metadata.fields(), &framed).await {
                    Ok(reply) => {
                        self.cluster.report(&attempt.endpoint, Outcome::Answered);
                        return Ok(reply);
                    }
                    Err(Failure::Opening(status)) => {
                        let (outcome, safe) = retryable(&status);
                        self.cluster.report(&attempt.endpoint, outcome);
                        if last || !safe || !self.retry(&tried, retries, Some(deadline)).await {
                            return Err(self.call_error(&status, Some(deadline)));
                        }
                    }
                    Err(Failure::Answering(status)) => {
                        self.cluster.report(&attempt.endpoint, Outcome::Answered);
                        return Err(self.call_error(&status, Some(deadline)));
                    }
                }
            }
        };
        let reply = match tokio::time::timeout_at(deadline.at, call).await {
            Ok(reply) => reply,
            Err(_) => Err(deadline.exceeded()),
        };
        span.finish(reply.as_ref().map_or_else(|err| err.code, |_| Code::Ok));
        reply
    }

    /// The endpoint of the next try, its metadata (a copy while another
    /// try may follow) and whether it is the last.
    fn next_try(
        &self,
        tried: &mut Tried,
        metadata: &mut CallMetadata,
        retries: Retries,
    ) -> Result<(Attempt, CallMetadata, bool), GatewayError> {
        let attempt = self.cluster.pick(tried.as_slice()).ok_or_else(|| self.no_endpoint())?;
        // With no other endpoint to go to, no retry can follow: the
        // metadata need not be kept (the common case of one endpoint).
        let last = !tried.push(attempt.endpoint.addr, retries.attempts) || self.cluster.endpoint_count() <= tried.len();
        let metadata = if last { std::mem::take(metadata) } else { metadata.clone() };
        Ok((attempt, metadata, last))
    }

    /// Whether to try again (another endpoint, the budget allowing, time
    /// left), after the backoff.
    async fn retry(&self, tried: &Tried, retries: Retries, deadline: Option<Deadline>) -> bool {
        if self.cluster.endpoints().iter().all(|e| tried.as_slice().contains(&e.addr)) || !self.cluster.may_retry() {
            return false;
        }
        let exponent = u32::try_from(tried.len().saturating_sub(1)).unwrap_or(u32::MAX).min(16);
        let ceiling = retries.backoff.saturating_mul(2u32.saturating_pow(exponent)).min(retries.max_backoff);
        // Full jitter, as gRPC's retry policy does.
        let pause = ceiling.mul_f64(fastrand::f64());
        if deadline.is_some_and(|d| Instant::now() + pause >= d.at) {
            return false;
        }
        self.cluster.count_retry();
        tracing::debug!(upstream = %self.label, pause_ms = pause.as_millis() as u64, "retrying on another endpoint");
        tokio::time::sleep(pause).await;
        true
    }

    /// Opens a streaming call (any kind: a unary side is a stream of one)
    /// and waits for the backend's response headers. The request messages
    /// are sent as `requests` yields them; its end half-closes the call.
    /// Dropping the returned stream cancels the call (RST_STREAM). A try
    /// that never reached a backend is tried again elsewhere only while
    /// no request message has been taken for sending.
    pub async fn open_stream<S>(
        &self,
        path: PathAndQuery,
        codec: DynamicCodec,
        requests: S,
        mut metadata: CallMetadata,
        deadline: Option<Deadline>,
    ) -> Result<StreamReply, GatewayError>
    where
        S: futures_util::Stream<Item = DynamicMessage> + Send + 'static,
    {
        let admitted = self.cluster.admit().ok_or_else(|| self.overloaded())?;
        self.cluster.count_request();
        let mut span = CallSpan::start(&mut metadata, &self.url, path.as_str());
        let requests = Handoff::new(requests);
        let retries = self.cluster.settings.retries;
        let kill = KillSwitch::default();
        let call = async {
            let mut tried = Tried::default();
            loop {
                let (attempt, mut metadata, last) = self.next_try(&mut tried, &mut metadata, retries)?;
                if let Some(deadline) = deadline {
                    metadata.append(GRPC_TIMEOUT, grpc_timeout(deadline.at));
                }
                let mut request =
                    tonic::Request::from_parts(metadata.into_metadata_map(), Default::default(), requests.attempt());
                let cancel = CancelOnDrop(Some(request.cancellation_handle()));
                // The backend's response body goes into the kill switch's
                // slot, so that it can be dropped from outside the call.
                let slot = kill.clone();
                let channel = tower::ServiceExt::map_response(
                    attempt.endpoint.connection(),
                    move |response: http::Response<Body>| response.map(|body| slot.hold(body)),
                );
                let mut grpc = tonic::client::Grpc::new(channel);
                let opened = async {
                    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
                    grpc.streaming(request, path.clone(), codec.clone()).await
                }
                .await;
                match opened {
                    Ok(response) => {
                        self.cluster.report(&attempt.endpoint, Outcome::Answered);
                        return Ok((response, cancel, attempt));
                    }
                    Err(status) => {
                        let (outcome, safe) = retryable(&status);
                        self.cluster.report(&attempt.endpoint, outcome);
                        let untouched = requests.untouched();
                        let retry = !last && safe && untouched;
                        if !retry || !self.retry(&tried, retries, deadline).await {
                            return Err(self.call_error(&status, deadline));
                        }
                    }
                }
            }
        };
        let opened = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline.at, call).await {
                Ok(opened) => opened,
                Err(_) => {
                    span.finish(Code::DeadlineExceeded);
                    return Err(deadline.exceeded());
                }
            },
            None => call.await,
        };
        match opened {
            Ok((response, cancel, attempt)) => {
                let (headers, messages, _) = response.into_parts();
                let messages =
                    ResponseStream { messages, kill, span, _cancel: cancel, _held: Some((attempt, admitted)) };
                Ok(StreamReply { headers, messages })
            }
            Err(err) => {
                span.finish(err.code);
                Err(err)
            }
        }
    }

    /// A status that ended a call, as the client should see it.
    pub fn call_error(&self, status: &tonic::Status, deadline: Option<Deadline>) -> GatewayError {
        // tonic's own timer may fire a hair before ours and report CANCELLED.
        if let Some(deadline) = deadline.filter(|d| Instant::now() >= d.at) {
            return deadline.exceeded();
        }
        // Errors raised by the transport, not sent by the backend: say what
        // happened without internals.
        if std::error::Error::source(status).is_some() {
            tracing::debug!(upstream = %self.url, error = %status, "upstream unreachable");
            return GatewayError::new(Code::Unavailable, Fault::Upstream, "upstream unavailable");
        }
        GatewayError::from_upstream(status)
    }
}

/// When a call must be over, and the timeout it was given (for messages).
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    pub at: Instant,
    pub timeout: Duration,
}

impl Deadline {
    pub fn after(timeout: Duration) -> Self {
        Self { at: Instant::now() + timeout, timeout }
    }

    pub fn exceeded(self) -> GatewayError {
        GatewayError::new(
            Code::DeadlineExceeded,
            Fault::Upstream,
            format!("deadline of {} exceeded", humanize(self.timeout)),
        )
    }
}

/// A streaming call whose response headers have arrived.
pub struct StreamReply {
    pub headers: MetadataMap,
    /// The messages, then the status and trailers.
    pub messages: ResponseStream,
}

/// The backend's side of a streaming call. Dropping it before the call is
/// over resets the upstream stream (RST_STREAM CANCEL): the backend sees
/// CANCELLED, never a half-close that looks like a client that finished,
/// even while the request side is still open.
pub struct ResponseStream {
    messages: tonic::codec::Streaming<Bytes>,
    kill: KillSwitch,
    /// Ended with the call's status (CANCELLED if the stream is dropped
    /// first).
    span: CallSpan,
    _cancel: CancelOnDrop,
    /// The endpoint and the circuit breaker's slot, held while the stream
    /// lives.
    _held: Option<(Attempt, Admitted)>,
}

impl ResponseStream {
    /// The next message's wire bytes; `None` once the backend has sent its
    /// last.
    pub async fn message(&mut self) -> Result<Option<Bytes>, tonic::Status> {
        let message = self.messages.message().await;
        if let Err(status) = &message {
            self.span.finish(status.code());
        }
        message
    }

    /// The trailers, after the last message.
    pub async fn trailers(&mut self) -> Result<Option<MetadataMap>, tonic::Status> {
        let trailers = self.messages.trailers().await;
        self.span.finish(trailers.as_ref().map_or_else(tonic::Status::code, |_| Code::Ok));
        trailers
    }

    /// A handle that ends the call from elsewhere (a watchdog), even while
    /// nobody reads it.
    pub fn kill_switch(&self) -> KillSwitch {
        self.kill.clone()
    }
}

/// Ends a streaming call from outside it: the backend's response body is
/// dropped, which resets the upstream HTTP/2 stream (the backend sees
/// CANCELLED), and the call's next read reports the status given.
#[derive(Clone, Default)]
pub struct KillSwitch(Arc<Mutex<Killable>>);

#[derive(Default)]
struct Killable {
    body: Option<Body>,
    killed: Option<tonic::Status>,
}

impl KillSwitch {
    pub fn kill(&self, status: tonic::Status) {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        slot.body = None;
        slot.killed = Some(status);
    }

    fn hold(&self, body: Body) -> KillableBody {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).body = Some(body);
        KillableBody(self.0.clone())
    }
}

/// The backend's response body, read through its [`KillSwitch`]'s slot.
struct KillableBody(Arc<Mutex<Killable>>);

impl http_body::Body for KillableBody {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut slot.body {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(slot.killed.take().map(Err)),
        }
    }
}

/// Cancels the call it belongs to when dropped (a no-op once the call has
/// ended cleanly).
struct CancelOnDrop(Option<tonic::CancellationHandle>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.cancel();
        }
    }
}

/// The `grpc-timeout` a call sends: what is left until `at`, in whole
/// milliseconds rounded up (hours past 8 digits of them). Unrounded, the
/// value differed on every call and HPACK had to write it out in full each
/// time; rounded, a route's calls repeat it and the connection's table
/// holds it. Up, so that the backend's deadline is never before the
/// gateway's own (whose error is the one the client should see).
fn grpc_timeout(at: Instant) -> HeaderValue {
    timeout_value(at.saturating_duration_since(Instant::now()))
}

/// [`grpc_timeout`]'s value for `left`.
fn timeout_value(left: Duration) -> HeaderValue {
    let millis = u64::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
    // A route's calls mostly send the same value (its timeout): the last
    // one is kept per thread rather than written out again.
    thread_local! {
        static LAST: std::cell::RefCell<(u64, HeaderValue)> =
            const { std::cell::RefCell::new((1, HeaderValue::from_static("1m"))) };
    }
    LAST.with_borrow_mut(|(last, value)| {
        if *last != millis {
            let mut text = itoa::Buffer::new();
            let written = match millis {
                0..=99_999_999 => [text.format(millis), "m"].concat(),
                _ => [text.format(left.as_secs().div_ceil(3600).min(99_999_999)), "H"].concat(),
            };
            *value = HeaderValue::try_from(written).unwrap_or_else(|_| HeaderValue::from_static("1m"));
            *last = millis;
        }
        value.clone()
    })
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The most tries of one call (`retries.attempts` is checked against it).
const MAX_ATTEMPTS: usize = 5;

/// The endpoints a call has tried, in order.
struct Tried {
    addrs: [SocketAddr; MAX_ATTEMPTS],
    len: usize,
}

impl Default for Tried {
    fn default() -> Self {
        Self { addrs: [SocketAddr::from(([0, 0, 0, 0], 0)); MAX_ATTEMPTS], len: 0 }
    }
}

impl Tried {
    /// Records a try; whether `attempts` allows another after it.
    fn push(&mut self, addr: SocketAddr, attempts: u32) -> bool {
        if self.len < MAX_ATTEMPTS {
            self.addrs[self.len] = addr;
            self.len += 1;
        }
        self.len < (attempts as usize).min(MAX_ATTEMPTS)
    }

    fn as_slice(&self) -> &[SocketAddr] {
        &self.addrs[..self.len]
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// How a failed try went for its endpoint, and whether the call may be
/// tried again elsewhere: only when the request cannot have been processed
/// (DESIGN §4b) — no connection was made (connect or TLS handshake
/// failure), the stream was refused (REFUSED_STREAM) or fell under a
/// graceful GOAWAY, or the backend answered trailers-only UNAVAILABLE.
fn retryable(status: &tonic::Status) -> (Outcome, bool) {
    let Some(mut source) = std::error::Error::source(status) else {
        // The backend's own status, before any response header.
        return match status.code() {
            Code::Unavailable => (Outcome::Failed, true),
            _ => (Outcome::Answered, false),
        };
    };
    loop {
        if let Some(h2) = source.downcast_ref::<h2::Error>() {
            let refused = h2.reason() == Some(h2::Reason::REFUSED_STREAM);
            let graceful = h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR);
            return if refused || graceful { (Outcome::Answered, true) } else { (Outcome::Failed, false) };
        }
        if let Some(reset) = source.downcast_ref::<Reset>() {
            let refused = reset.unprocessed || reset.reason == connection::REFUSED_STREAM;
            let graceful = reset.go_away && reset.reason == connection::NO_ERROR;
            return if refused || graceful { (Outcome::Answered, true) } else { (Outcome::Failed, false) };
        }
        if source.downcast_ref::<ConnectError>().is_some() {
            return (Outcome::ConnectFailed, true);
        }
        match source.source() {
            Some(next) => source = next,
            None => return (Outcome::Failed, false),
        }
    }
}

/// The request stream of a streaming call, lent to one try at a time: a
/// try that failed before taking it hands it on to the next; once taken
/// (a message may have gone out), no other try gets it.
struct Handoff<S> {
    slot: Arc<Mutex<Option<Pin<Box<S>>>>>,
}

impl<S> Handoff<S> {
    fn new(requests: S) -> Self {
        Self { slot: Arc::new(Mutex::new(Some(Box::pin(requests)))) }
    }

    fn attempt(&self) -> Lent<S> {
        Lent { slot: self.slot.clone(), taken: None }
    }

    /// Whether no try has taken the stream yet.
    fn untouched(&self) -> bool {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner).is_some()
    }
}

struct Lent<S> {
    slot: Arc<Mutex<Option<Pin<Box<S>>>>>,
    taken: Option<Pin<Box<S>>>,
}

impl<S: futures_util::Stream> futures_util::Stream for Lent<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.taken.is_none() {
            let taken = self.slot.lock().unwrap_or_else(PoisonError::into_inner).take();
            self.taken = taken;
        }
        match self.taken.as_mut() {
            Some(requests) => requests.as_mut().poll_next(cx),
            None => Poll::Ready(None),
        }
    }
}

/// The `--upstream` rules and version upstreams with their endpoints: one
/// [`Upstream`] per distinct URL and settings and, for an `https://` URL,
/// per `upstream_tls` entry that may apply to it.
#[derive(Debug, Clone, Default)]
pub struct Upstreams {
    /// Pattern → upstream key.
    rules: Vec<(String, usize)>,
    /// Version → upstream key.
    versions: HashMap<String, usize>,
    /// `descriptors.reflection` sources by URL: they serve what they list.
    reflection: Vec<(String, Arc<Upstream>)>,
    /// The `upstream_tls` patterns, in config order.
    tls: Vec<String>,
    /// (upstream key, `upstream_tls` entry) → upstream.
    channels: HashMap<(usize, Option<usize>), Arc<Upstream>>,
}

impl Upstreams {
    pub fn new(config: &Config) -> Result<Self, UpstreamError> {
        Self::with_resolver(config, Arc::new(SystemResolver))
    }

    /// [`Upstreams::new`], with names resolved by `resolver`.
    pub fn with_resolver(config: &Config, resolver: Arc<dyn Resolve>) -> Result<Self, UpstreamError> {
        let tls: Vec<String> = config.upstream_tls.iter().map(|entry| entry.pattern.clone()).collect();
        let mut keys: Vec<(Uri, UpstreamSettings)> = Vec::new();
        let mut channels = HashMap::new();
        let default_settings = UpstreamSettings::default();
        let mut add = |url: &Uri, settings: &UpstreamSettings| -> Result<usize, UpstreamError> {
            if let Some(key) = keys.iter().position(|(u, s)| u == url && s == settings) {
                return Ok(key);
            }
            let key = keys.len();
            keys.push((url.clone(), settings.clone()));
            channels.insert((key, None), Arc::new(Upstream::new(url, settings.clone(), None, resolver.clone())?));
            if url.scheme_str() == Some("https") {
                for (index, entry) in config.upstream_tls.iter().enumerate() {
                    let upstream = Upstream::new(url, settings.clone(), Some(entry), resolver.clone())?;
                    channels.insert((key, Some(index)), Arc::new(upstream));
                }
            }
            Ok(key)
        };
        let mut rules = Vec::with_capacity(config.upstreams.len());
        for rule in &config.upstreams {
            let key = add(&rule.url, &rule.settings)?;
            rules.push((rule.pattern.clone(), key));
        }
        let mut versions = HashMap::new();
        for (name, version) in &config.versions {
            if let Some(url) = &version.upstream {
                let key = add(url, &version.upstream_settings)?;
                versions.insert(name.clone(), key);
            }
        }
        let mut reflection_keys = Vec::with_capacity(config.reflection.len());
        for url in &config.reflection {
            let key = add(url, &default_settings)?;
            reflection_keys.push((url.to_string(), key));
        }
        let mut this = Self { rules, versions, reflection: Vec::new(), tls, channels };
        // A reflection source serves services not known yet: the `*` entry.
        this.reflection =
            reflection_keys.into_iter().filter_map(|(url, key)| Some((url, this.channel(key, "*")?.clone()))).collect();
        Ok(this)
    }

    /// The reflection sources: (URL, upstream).
    pub fn reflection_sources(&self) -> &[(String, Arc<Upstream>)] {
        &self.reflection
    }

    /// The upstream a service discovered by reflection at `url` is served by.
    pub fn reflection_upstream(&self, url: &str) -> Option<&Arc<Upstream>> {
        self.reflection.iter().find(|(u, _)| u == url).map(|(_, upstream)| upstream)
    }

    /// The upstream of a service mounted under `version`: the version's own
    /// upstream if configured, else the service's pattern match.
    pub fn resolve_versioned(&self, service: &str, version: Option<&str>) -> Option<&Arc<Upstream>> {
        match version.and_then(|v| self.versions.get(v)) {
            Some(key) => self.channel(*key, service),
            None => self.resolve(service),
        }
    }

    /// The upstream of a fully-qualified service: an exact service pattern
    /// beats the longest matching package prefix, which beats `*`.
    pub fn resolve(&self, service: &str) -> Option<&Arc<Upstream>> {
        let (_, key) = most_specific(self.rules.iter().map(|(pattern, key)| (pattern.as_str(), *key)), service)?;
        self.channel(key, service)
    }

    /// The upstream `key` for `service`, with the most specific
    /// `upstream_tls` entry naming it.
    fn channel(&self, key: usize, service: &str) -> Option<&Arc<Upstream>> {
        let entry = most_specific(self.tls.iter().enumerate().map(|(i, p)| (p.as_str(), i)), service).map(|(_, i)| i);
        self.channels.get(&(key, entry)).or_else(|| self.channels.get(&(key, None)))
    }

    /// Every upstream, once each.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.channels.values()
    }

    /// Whether any upstream reads TLS files that may change.
    pub fn has_tls_files(&self) -> bool {
        self.channels.values().any(|u| u.cluster.has_tls_files())
    }

    /// Reads every upstream's TLS files again and makes new connections
    /// where they changed (blocking reads: off the request path).
    pub fn refresh_tls(&self) {
        for upstream in self.channels.values() {
            upstream.cluster.refresh_tls();
        }
    }
}

/// The item of the most specific pattern naming `service`.
fn most_specific<'a, T>(items: impl Iterator<Item = (&'a str, T)>, service: &str) -> Option<(usize, T)> {
    items.filter_map(|(pattern, item)| specificity(pattern, service).map(|s| (s, item))).max_by_key(|(s, _)| *s)
}

/// How specifically `pattern` names `service`, or `None` if it does not.
fn specificity(pattern: &str, service: &str) -> Option<usize> {
    if pattern == "*" {
        return Some(0);
    }
    if pattern == service {
        return Some(usize::MAX);
    }
    let rest = service.strip_prefix(pattern)?;
    rest.starts_with('.').then_some(pattern.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{UpstreamRule, VersionConfig};

    #[test]
    fn grpc_timeout_is_whole_milliseconds_rounded_up_and_never_a_stale_one() {
        let sent = |left: Duration| timeout_value(left).to_str().expect("ASCII").to_owned();
        assert_eq!(sent(Duration::from_millis(30_000)), "30000m");
        // Another value right after: the per-thread copy is not reused.
        assert_eq!(sent(Duration::from_millis(7_000)), "7000m");
        assert_eq!(sent(Duration::from_millis(7_000)), "7000m");
        // Rounded up, never down: the backend's deadline is never earlier.
        assert_eq!(sent(Duration::from_micros(200)), "1m");
        assert_eq!(sent(Duration::from_micros(7_000_001)), "7001m");
        assert_eq!(sent(Duration::ZERO), "0m");
        // Past 8 digits of milliseconds: hours, rounded up.
        assert_eq!(sent(Duration::from_secs(200 * 3600)), "200H");
        assert_eq!(sent(Duration::from_secs(200 * 3600 + 1)), "201H");
    }

    fn rule(pattern: &str, url: &str) -> UpstreamRule {
        UpstreamRule::new(pattern, url.parse().expect("url"))
    }

    fn upstreams(rules: &[UpstreamRule]) -> Upstreams {
        Upstreams::new(&Config { upstreams: rules.to_vec(), ..Config::default() }).expect("upstreams")
    }

    #[tokio::test]
    async fn most_specific_pattern_wins() {
        let upstreams = upstreams(&[
            rule("*", "http://127.0.0.1:1"),
            rule("acme", "http://127.0.0.1:2"),
            rule("acme.users.v1", "http://127.0.0.1:3"),
            rule("acme.users.v1.UserService", "http://127.0.0.1:4"),
        ]);
        let port = |service: &str| upstreams.resolve(service).and_then(|u| u.url.port_u16());
        assert_eq!(port("acme.users.v1.UserService"), Some(4));
        assert_eq!(port("acme.users.v1.Other"), Some(3));
        assert_eq!(port("acme.orders.v1.OrderService"), Some(2));
        assert_eq!(port("acmex.Service"), Some(1));
        assert_eq!(port("other.Service"), Some(1));
    }

    #[tokio::test]
    async fn no_rule_no_upstream_and_urls_share_a_channel() {
        let upstreams = upstreams(&[rule("a.v1", "http://127.0.0.1:7"), rule("b.v1", "http://127.0.0.1:7")]);
        assert!(upstreams.resolve("c.v1.S").is_none());
        let a = upstreams.resolve("a.v1.S").expect("a");
        let b = upstreams.resolve("b.v1.S").expect("b");
        assert!(Arc::ptr_eq(a, b));
    }

    #[tokio::test]
    async fn a_version_upstream_wins_over_patterns() {
        let mut config = Config { upstreams: vec![rule("*", "http://127.0.0.1:1")], ..Config::default() };
        config.versions.insert(
            "v2".into(),
            VersionConfig { upstream: Some("http://127.0.0.1:2".parse().expect("url")), ..VersionConfig::default() },
        );
        let upstreams = Upstreams::new(&config).expect("upstreams");
        let port = |v: Option<&str>| upstreams.resolve_versioned("a.S", v).and_then(|u| u.url.port_u16());
        assert_eq!(port(Some("v2")), Some(2));
        assert_eq!(port(Some("v1")), Some(1));
        assert_eq!(port(None), Some(1));
    }

    #[tokio::test]
    async fn the_most_specific_upstream_tls_entry_picks_the_channel() {
        use crate::config::tls::UpstreamTlsConfig;
        let dir = tempfile::tempdir().expect("dir");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, params.self_signed(&key).expect("ca").pem()).expect("write");
        let entry = |pattern: &str| UpstreamTlsConfig {
            pattern: pattern.into(),
            ca: Some(ca.clone()),
            cert: None,
            key: None,
            server_name: None,
        };
        let config = Config {
            upstreams: vec![rule("*", "https://127.0.0.1:1"), rule("plain", "http://127.0.0.1:2")],
            upstream_tls: vec![entry("*"), entry("acme.users")],
            ..Config::default()
        };
        let upstreams = Upstreams::new(&config).expect("upstreams");
        assert!(upstreams.has_tls_files());
        let users = upstreams.resolve("acme.users.v1.S").expect("users");
        let orders = upstreams.resolve("acme.orders.v1.S").expect("orders");
        let other = upstreams.resolve("other.S").expect("other");
        assert!(!Arc::ptr_eq(users, orders), "acme.users has its own entry");
        assert!(Arc::ptr_eq(orders, other), "both take the `*` entry");
        assert_eq!(users.url, orders.url);
        // A plain-text upstream takes no TLS entry.
        let plain = upstreams.resolve("plain.S").expect("plain");
        assert!(!plain.cluster.has_tls_files());
        // A bad CA at start names the file.
        std::fs::write(&ca, "garbage").expect("write");
        let err = Upstreams::new(&config).expect_err("refused").to_string();
        assert!(err.contains("ca.pem"), "{err}");
    }
}
