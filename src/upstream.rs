//! Backends: one pooled HTTP/2 channel per upstream URL, the choice of
//! upstream for a service (most specific `--upstream` pattern wins), and the
//! call itself with its deadline.
//!
//! The call goes through tonic's server-streaming client even for unary
//! methods: it hands back response headers, messages and trailers
//! separately, which is what the response needs (`grpc-metadata-*` versus
//! `grpc-trailer-*`) and what streaming routes will need later.

use std::collections::HashMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::PathAndQuery;
use http::Uri;
use prost_reflect::DynamicMessage;
use tokio::time::Instant;
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

use crate::config::tls::UpstreamTlsConfig;
use crate::config::Config;
use crate::error::{Fault, GatewayError};
use crate::telemetry::CallSpan;
use crate::tls::{TlsError, Watched};
use crate::transcode::DynamicCodec;

/// One backend address with its connection pool.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub url: Uri,
    /// `url` as configured (no `/` path added): the upstream's label in
    /// metrics and logs.
    pub label: Arc<str>,
    channel: Transport,
}

/// The channel, fixed, or rebuilt when its `upstream_tls` files change
/// (calls in flight finish on the channel they started on).
#[derive(Debug, Clone)]
enum Transport {
    Fixed(Channel),
    Watched(Arc<Watched<Channel>>),
}

impl Upstream {
    /// The pooled channel, for calls other than transcoded ones (reflection).
    pub fn channel(&self) -> Channel {
        match &self.channel {
            Transport::Fixed(channel) => channel.clone(),
            Transport::Watched(watched) => Channel::clone(&watched.current()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("upstream {url}: {reason}")]
pub struct UpstreamError {
    pub url: String,
    pub reason: String,
}

impl Upstream {
    /// Creates the channel; it connects lazily, so an upstream that is down at
    /// load time only fails the requests sent to it (503). An `https://`
    /// upstream verifies its backend with the web PKI roots, or as `tls`
    /// says (its files are read now, and again by [`Upstreams::refresh_tls`]).
    pub fn new(url: &Uri, tls: Option<&UpstreamTlsConfig>) -> Result<Self, UpstreamError> {
        let error = |reason: String| UpstreamError { url: url.to_string(), reason };
        let endpoint = Endpoint::from(url.clone())
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(false)
            .initial_stream_window_size(Some(1 << 20))
            .initial_connection_window_size(Some(8 << 20))
            .connect_timeout(Duration::from_secs(5));
        let channel = match (url.scheme_str(), tls) {
            (Some("https"), Some(tls)) => {
                let tls = tls.clone();
                let paths = tls.files().map(Path::to_path_buf).collect();
                let watched = Watched::new("upstream TLS", paths, move |contents| {
                    let config = client_tls(&tls, contents)?;
                    let endpoint = endpoint.clone().tls_config(config).map_err(|err| TlsError {
                        path: tls.files().next().map(|p| p.display().to_string()).unwrap_or_default(),
                        reason: err.to_string(),
                    })?;
                    Ok(endpoint.connect_lazy())
                })
                .map_err(|err| error(err.to_string()))?;
                Transport::Watched(Arc::new(watched))
            }
            (Some("https"), None) => Transport::Fixed(
                endpoint
                    .tls_config(ClientTlsConfig::new().with_webpki_roots())
                    .map_err(|e| error(e.to_string()))?
                    .connect_lazy(),
            ),
            _ => Transport::Fixed(endpoint.connect_lazy()),
        };
        Ok(Self { url: url.clone(), label: Arc::from(url.to_string().trim_end_matches('/')), channel })
    }

    /// Sends one request message and reads one response message.
    pub async fn unary(
        &self,
        path: PathAndQuery,
        codec: DynamicCodec,
        message: DynamicMessage,
        mut metadata: MetadataMap,
        timeout: Duration,
    ) -> Result<UnaryReply, GatewayError> {
        let deadline = Instant::now() + timeout;
        let mut span = CallSpan::start(&mut metadata, &self.url, path.as_str());
        let mut request = tonic::Request::from_parts(metadata, Default::default(), message);
        request.set_timeout(timeout);
        let call = async {
            let mut grpc = tonic::client::Grpc::new(self.channel());
            grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let response = grpc.server_streaming(request, path, codec).await?;
            let (headers, mut stream, _) = response.into_parts();
            let message = stream.message().await?;
            let trailers = stream.trailers().await?.unwrap_or_default();
            Ok::<_, tonic::Status>(UnaryReply { headers, message, trailers })
        };
        let deadline = Deadline { at: deadline, timeout };
        let reply = match tokio::time::timeout_at(deadline.at, call).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(status)) => Err(self.call_error(&status, Some(deadline))),
            Err(_) => Err(deadline.exceeded()),
        };
        span.finish(reply.as_ref().map_or_else(|err| err.code, |_| Code::Ok));
        reply
    }

    /// Opens a streaming call (any kind: a unary side is a stream of one)
    /// and waits for the backend's response headers. The request messages
    /// are sent as `requests` yields them; its end half-closes the call.
    /// Dropping the returned stream cancels the call (RST_STREAM).
    pub async fn open_stream<S>(
        &self,
        path: PathAndQuery,
        codec: DynamicCodec,
        requests: S,
        mut metadata: MetadataMap,
        deadline: Option<Deadline>,
    ) -> Result<StreamReply, GatewayError>
    where
        S: futures_util::Stream<Item = DynamicMessage> + Send + 'static,
    {
        let mut span = CallSpan::start(&mut metadata, &self.url, path.as_str());
        let mut request = tonic::Request::from_parts(metadata, Default::default(), requests);
        if let Some(deadline) = deadline {
            request.set_timeout(deadline.timeout);
        }
        let cancel = CancelOnDrop(Some(request.cancellation_handle()));
        let kill = KillSwitch::default();
        let call = async {
            // The backend's response body goes into the kill switch's slot,
            // so that it can be dropped from outside the call.
            let slot = kill.clone();
            let channel = tower::ServiceExt::map_response(self.channel(), move |response: http::Response<Body>| {
                response.map(|body| slot.hold(body))
            });
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            grpc.streaming(request, path, codec).await
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
            Ok(response) => {
                let (headers, messages, _) = response.into_parts();
                Ok(StreamReply { headers, messages: ResponseStream { messages, kill, span, _cancel: cancel } })
            }
            Err(status) => {
                let err = self.call_error(&status, deadline);
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
    messages: tonic::codec::Streaming<DynamicMessage>,
    kill: KillSwitch,
    /// Ended with the call's status (CANCELLED if the stream is dropped
    /// first).
    span: CallSpan,
    _cancel: CancelOnDrop,
}

impl ResponseStream {
    /// The next message; `None` once the backend has sent its last.
    pub async fn message(&mut self) -> Result<Option<DynamicMessage>, tonic::Status> {
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

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// What a backend answered to a unary call.
#[derive(Debug)]
pub struct UnaryReply {
    pub headers: MetadataMap,
    /// `None` when the backend ended the call OK without a message.
    pub message: Option<DynamicMessage>,
    pub trailers: MetadataMap,
}

/// The `--upstream` rules and version upstreams with their channels: one
/// channel per distinct URL and, for an `https://` URL, per `upstream_tls`
/// entry that may apply to it.
#[derive(Debug, Clone, Default)]
pub struct Upstreams {
    /// Pattern → URL (as a channel key).
    rules: Vec<(String, String)>,
    /// Version → URL.
    versions: HashMap<String, String>,
    /// `descriptors.reflection` sources by URL: they serve what they list.
    reflection: Vec<(String, Arc<Upstream>)>,
    /// The `upstream_tls` patterns, in config order.
    tls: Vec<String>,
    /// (URL, `upstream_tls` entry) → channel.
    channels: HashMap<(String, Option<usize>), Arc<Upstream>>,
}

impl Upstreams {
    pub fn new(config: &Config) -> Result<Self, UpstreamError> {
        let tls: Vec<String> = config.upstream_tls.iter().map(|entry| entry.pattern.clone()).collect();
        let mut channels = HashMap::new();
        let mut add = |url: &Uri| -> Result<String, UpstreamError> {
            let key = url.to_string();
            if channels.contains_key(&(key.clone(), None)) {
                return Ok(key);
            }
            channels.insert((key.clone(), None), Arc::new(Upstream::new(url, None)?));
            if url.scheme_str() == Some("https") {
                for (index, entry) in config.upstream_tls.iter().enumerate() {
                    channels.insert((key.clone(), Some(index)), Arc::new(Upstream::new(url, Some(entry))?));
                }
            }
            Ok(key)
        };
        let mut rules = Vec::with_capacity(config.upstreams.len());
        for rule in &config.upstreams {
            rules.push((rule.pattern.clone(), add(&rule.url)?));
        }
        let mut versions = HashMap::new();
        for (name, version) in &config.versions {
            if let Some(url) = &version.upstream {
                versions.insert(name.clone(), add(url)?);
            }
        }
        let mut reflection_urls = Vec::with_capacity(config.reflection.len());
        for url in &config.reflection {
            reflection_urls.push(add(url)?);
        }
        let mut this = Self { rules, versions, reflection: Vec::new(), tls, channels };
        // A reflection source serves services not known yet: the `*` entry.
        this.reflection = reflection_urls
            .into_iter()
            .filter_map(|url| Some((url.clone(), this.channel(&url, "*")?.clone())))
            .collect();
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
            Some(url) => self.channel(url, service),
            None => self.resolve(service),
        }
    }

    /// The upstream of a fully-qualified service: an exact service pattern
    /// beats the longest matching package prefix, which beats `*`.
    pub fn resolve(&self, service: &str) -> Option<&Arc<Upstream>> {
        let (_, url) = most_specific(self.rules.iter().map(|(pattern, url)| (pattern.as_str(), url)), service)?;
        self.channel(url, service)
    }

    /// The channel to `url` for `service`, with the most specific
    /// `upstream_tls` entry naming it.
    fn channel(&self, url: &str, service: &str) -> Option<&Arc<Upstream>> {
        let entry = most_specific(self.tls.iter().enumerate().map(|(i, p)| (p.as_str(), i)), service).map(|(_, i)| i);
        self.channels.get(&(url.to_owned(), entry)).or_else(|| self.channels.get(&(url.to_owned(), None)))
    }

    /// Whether any upstream reads TLS files that may change.
    pub fn has_tls_files(&self) -> bool {
        self.channels.values().any(|u| matches!(u.channel, Transport::Watched(_)))
    }

    /// Reads every upstream's TLS files again and rebuilds the channels
    /// whose files changed (blocking reads: off the request path).
    pub fn refresh_tls(&self) {
        for upstream in self.channels.values() {
            if let Transport::Watched(watched) = &upstream.channel {
                watched.refresh();
            }
        }
    }
}

/// The item of the most specific pattern naming `service`.
fn most_specific<'a, T>(items: impl Iterator<Item = (&'a str, T)>, service: &str) -> Option<(usize, T)> {
    items.filter_map(|(pattern, item)| specificity(pattern, service).map(|s| (s, item))).max_by_key(|(s, _)| *s)
}

/// The client side of an `upstream_tls` entry, from its files' contents
/// (in [`UpstreamTlsConfig::files`] order), checked here so that a bad file
/// is named.
fn client_tls(tls: &UpstreamTlsConfig, contents: &[Vec<u8>]) -> Result<ClientTlsConfig, TlsError> {
    let mut contents = contents.iter();
    let mut config = ClientTlsConfig::new();
    match tls.ca.as_deref().zip(contents.next()) {
        Some((path, pem)) => {
            crate::tls::roots(path, pem)?;
            config = config.ca_certificate(Certificate::from_pem(pem));
        }
        None => config = config.with_webpki_roots(),
    }
    if let (Some(cert), Some(key)) = (tls.cert.as_deref(), tls.key.as_deref()) {
        let (cert_pem, key_pem) = (contents.next(), contents.next());
        let (Some(cert_pem), Some(key_pem)) = (cert_pem, key_pem) else {
            return Err(TlsError { path: cert.display().to_string(), reason: "not read".into() });
        };
        crate::tls::certificates(cert, cert_pem)?;
        crate::tls::private_key(key, key_pem)?;
        config = config.identity(Identity::from_pem(cert_pem, key_pem));
    }
    if let Some(name) = &tls.server_name {
        config = config.domain_name(name.clone());
    }
    Ok(config)
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

    fn rule(pattern: &str, url: &str) -> UpstreamRule {
        UpstreamRule { pattern: pattern.into(), url: url.parse().expect("url") }
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
            VersionConfig { upstream: Some("http://127.0.0.1:2".parse().expect("url")), deprecated: None },
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
        assert!(matches!(plain.channel, Transport::Fixed(_)));
        // A bad CA at start names the file.
        std::fs::write(&ca, "garbage").expect("write");
        let err = Upstreams::new(&config).expect_err("refused").to_string();
        assert!(err.contains("ca.pem"), "{err}");
    }
}
