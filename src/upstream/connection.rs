//! One HTTP/2 connection to one backend address, spoken through h2
//! directly: made on the first call, made again on the first call after it
//! closed.
//!
//! A unary call ([`Connection::unary`]) writes its headers and its one
//! framed message straight into the connection's stream store from the
//! request's own task and reads the answer the same way: no per-call
//! channel hop to a dispatcher task, no request-body task, no generic gRPC
//! client state machine. Streaming calls, health checks and reflection go
//! through tonic's client over the same connection ([`Connection`] is a
//! `tower::Service` of HTTP requests): their message framing and
//! back-pressure are tonic's, only the transport is this one.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::future::{BoxFuture, FutureExt, Shared};
use h2::client::SendRequest;
use http::header::{CONTENT_TYPE, TE, USER_AGENT};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::{Body as _, Frame};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use crate::config::tls::UpstreamTlsConfig;
use crate::tls::TlsError;

mod wire;

use wire::{KeepAlive, Wire};
pub use wire::{Reset, NO_ERROR, REFUSED_STREAM};

/// A backend's answer is refused beyond this size (tonic's default limit).
const MAX_MESSAGE: usize = 4 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 PINGs while calls are open: a backend that stops answering them
/// has its connection closed, failing its calls instead of hanging them.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
const KEEP_ALIVE: KeepAlive = KeepAlive { interval: KEEP_ALIVE_INTERVAL, timeout: KEEP_ALIVE_TIMEOUT };

// Names, not strings: a lookup by `&str` parses the name first.
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
const GRPC_STATUS_DETAILS: HeaderName = HeaderName::from_static("grpc-status-details-bin");

/// The client side of TLS to a backend.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: ServerName<'static>,
}

/// What every connection of one upstream shares: where calls say they go
/// (`:scheme`, `:authority`) and how to secure them.
#[derive(Debug)]
pub struct Target {
    scheme: Scheme,
    authority: Authority,
    tls: Option<ClientTls>,
}

impl Target {
    /// Calls to `origin` (its scheme and authority), over TLS when `tls`
    /// is given.
    pub fn new(origin: &Uri, tls: Option<ClientTls>) -> Self {
        let scheme = if tls.is_some() { Scheme::HTTPS } else { Scheme::HTTP };
        let authority = origin.authority().cloned().unwrap_or_else(|| Authority::from_static("localhost"));
        Self { scheme, authority, tls }
    }

    /// A call's request head: POST to `path` with `headers` and the ones
    /// gRPC requires.
    fn request(&self, path: PathAndQuery, mut headers: HeaderMap) -> Request<()> {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        headers.insert(USER_AGENT, HeaderValue::from_static(concat!("protogate/", env!("CARGO_PKG_VERSION"))));
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(self.authority.clone());
        uri.path_and_query = Some(path);
        let mut request = Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = Uri::from_parts(uri).unwrap_or_default();
        *request.headers_mut() = headers;
        request
    }
}

/// The client side of an `upstream_tls` entry, from its files' contents
/// (in [`UpstreamTlsConfig::files`] order), checked here so that a bad file
/// is named.
pub fn client_tls(tls: &UpstreamTlsConfig, host: &str, contents: &[Vec<u8>]) -> Result<ClientTls, TlsError> {
    let mut contents = contents.iter();
    // A file's contents are taken only when the entry names that file.
    let roots = match tls.ca.as_deref() {
        Some(path) => {
            let Some(pem) = contents.next() else {
                return Err(TlsError { path: path.display().to_string(), reason: "not read".into() });
            };
            crate::tls::roots(path, pem)?
        }
        None => web_roots(),
    };
    let identity = match (tls.cert.as_deref(), tls.key.as_deref()) {
        (Some(cert), Some(key)) => {
            let (Some(cert_pem), Some(key_pem)) = (contents.next(), contents.next()) else {
                return Err(TlsError { path: cert.display().to_string(), reason: "not read".into() });
            };
            let chain = crate::tls::certificates(cert, cert_pem)?;
            let key_der = crate::tls::private_key(key, key_pem)?;
            Some((key, chain, key_der))
        }
        _ => None,
    };
    let key_path = identity.as_ref().map(|(key, ..)| key.display().to_string()).unwrap_or_default();
    let identity = identity.map(|(_, chain, key)| (chain, key));
    // Endpoints are dialled by address: the name to check is the URL's
    // host unless the entry says otherwise.
    let name = tls.server_name.as_deref().unwrap_or(host);
    if ServerName::try_from(name).is_err() {
        return Err(TlsError { path: String::new(), reason: format!("{name:?} is not a server name") });
    }
    // What is left to fail is the key's match with the certificate.
    secured(roots, identity, name).map_err(|reason| TlsError { path: key_path, reason })
}

/// The client TLS of an `https://` upstream with no `upstream_tls` entry:
/// the web PKI's roots, checking `host`.
pub fn default_client_tls(host: &str) -> Result<ClientTls, String> {
    secured(web_roots(), None, host)
}

/// Client TLS trusting `roots`, presenting `identity` if given, checking
/// the server's certificate for `name`, offering HTTP/2 only.
fn secured(
    roots: rustls::RootCertStore,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    name: &str,
) -> Result<ClientTls, String> {
    let builder = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|err| format!("the key does not match the certificate ({err})"))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let server_name = ServerName::try_from(name.to_owned()).map_err(|_| format!("{name:?} is not a server name"))?;
    Ok(ClientTls { config: Arc::new(config), server_name })
}

fn web_roots() -> rustls::RootCertStore {
    rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() }
}

/// Why a unary call failed: before its answer began (nothing, or only a
/// status, came back: the retry rules decide whether to try elsewhere), or
/// while it was being answered.
#[derive(Debug)]
pub enum Failure {
    Opening(Status),
    Answering(Status),
}

/// A connection could not be made: nothing of any call was sent.
#[derive(Debug, Clone, thiserror::Error)]
#[error("connecting to {addr}: {reason}")]
pub struct ConnectError {
    addr: SocketAddr,
    reason: Arc<str>,
}

/// The connections to one backend address: made on their first call,
/// made again on the first call after they closed. Unary calls go over a
/// connection of this module's own ([`wire`]); streaming calls, health
/// checks and reflection over one of h2's, made only when one of those is
/// first called.
#[derive(Debug)]
pub struct Connection {
    target: Arc<Target>,
    addr: SocketAddr,
    state: Arc<Mutex<State<Live>>>,
    wire: Arc<Mutex<State<Arc<Wire>>>>,
}

type Connecting<L> = Shared<BoxFuture<'static, Result<L, ConnectError>>>;

/// A connection slot.
enum State<L> {
    Idle,
    Connecting(Connecting<L>),
    Live(L),
}

impl<L> std::fmt::Debug for State<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Idle => "Idle",
            State::Connecting(_) => "Connecting",
            State::Live(_) => "Live",
        })
    }
}

/// An open connection as its slot holds it.
trait Link: Clone + Send + Sync + 'static {
    /// Whether it still takes new calls.
    fn is_open(&self) -> bool;
    fn is(&self, other: &Self) -> bool;
}

/// An open h2 connection: its handle, whether its driver has stopped, and
/// how many calls use it (keep-alive pings only while some do).
#[derive(Clone)]
struct Live {
    send: SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

impl Link for Live {
    fn is_open(&self) -> bool {
        !self.closed.load(Ordering::Acquire)
    }

    fn is(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.closed, &other.closed)
    }
}

impl Link for Arc<Wire> {
    fn is_open(&self) -> bool {
        !self.is_closing()
    }

    fn is(&self, other: &Self) -> bool {
        Arc::ptr_eq(self, other)
    }
}

/// The open connection in `slot`, made now (by `open`) if there is none.
async fn live<L: Link>(
    slot: &Arc<Mutex<State<L>>>,
    addr: SocketAddr,
    open: impl FnOnce() -> BoxFuture<'static, Result<L, ConnectError>>,
) -> Result<L, ConnectError> {
    let connecting = {
        let mut state = slot.lock().unwrap_or_else(PoisonError::into_inner);
        match &*state {
            State::Live(live) if live.is_open() => return Ok(live.clone()),
            State::Connecting(connecting) => connecting.clone(),
            State::Idle | State::Live(_) => {
                // A task of its own: the connect finishes (and fills the
                // slot) even if every call waiting for it gives up; left to
                // its waiters, a connect abandoned half-way would resume,
                // timed out, on the next call.
                let task = tokio::spawn(connect(open(), slot.clone()));
                let connecting = async move {
                    task.await.unwrap_or_else(|err| Err(ConnectError { addr, reason: Arc::from(err.to_string()) }))
                }
                .boxed()
                .shared();
                *state = State::Connecting(connecting.clone());
                connecting
            }
        }
    };
    connecting.await
}

/// Drops `live` from `slot` (if it still holds it): the next call connects
/// anew.
fn forget<L: Link>(slot: &Mutex<State<L>>, live: &L) {
    let mut state = slot.lock().unwrap_or_else(PoisonError::into_inner);
    if matches!(&*state, State::Live(current) if current.is(live)) {
        *state = State::Idle;
    }
}

/// A call on a connection, counted while it lasts.
struct InCall(Arc<AtomicUsize>);

impl InCall {
    fn new(calls: &Arc<AtomicUsize>) -> Self {
        calls.fetch_add(1, Ordering::Relaxed);
        Self(calls.clone())
    }
}

impl Drop for InCall {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connection {
    /// Connections to `addr`, made when first used.
    pub fn new(target: Arc<Target>, addr: SocketAddr) -> Self {
        Self { target, addr, state: Arc::new(Mutex::new(State::Idle)), wire: Arc::new(Mutex::new(State::Idle)) }
    }

    /// The open h2 connection (made now if there is none), ready for one
    /// more stream. A connection that refuses new streams (GOAWAY) is
    /// replaced once: nothing was sent on it.
    async fn ready(&self) -> Result<(SendRequest<Bytes>, InCall), Status> {
        let mut replaced = false;
        loop {
            let live = live(&self.state, self.addr, || open_h2(self.target.clone(), self.addr).boxed())
                .await
                .map_err(unreachable)?;
            let in_call = InCall::new(&live.calls);
            match live.send.clone().ready().await {
                Ok(send) => return Ok((send, in_call)),
                Err(err) if !replaced => {
                    tracing::debug!(endpoint = %self.addr, error = %err, "connection refuses new streams; reconnecting");
                    forget(&self.state, &live);
                    replaced = true;
                }
                Err(err) => return Err(h2_status(err)),
            }
        }
    }

    /// One unary call: `message` (already framed, see
    /// [`Outgoing::framed`](crate::transcode::codec::Outgoing::framed)) to
    /// `path`, and the backend's answer. A status sent in the response
    /// headers alone (trailers-only) or failing to connect ends the call at
    /// its opening; a connection that takes no new streams (GOAWAY) is
    /// replaced once, nothing having been sent on it.
    pub async fn unary(
        &self,
        path: &PathAndQuery,
        fields: &[(HeaderName, HeaderValue)],
        message: &Bytes,
    ) -> Result<UnaryReply, Failure> {
        let mut replaced = false;
        let opened = loop {
            // The target is cloned only when a connection is to be made.
            let wire = live(&self.wire, self.addr, || open_wire(self.target.clone(), self.addr).boxed())
                .await
                .map_err(|err| Failure::Opening(unreachable(err)))?;
            match wire.open(path, fields, message).await {
                Ok(opened) => break opened,
                Err(status) if !replaced => {
                    tracing::debug!(endpoint = %self.addr, reason = %status.message(), "connection takes no new calls; reconnecting");
                    forget(&self.wire, &wire);
                    replaced = true;
                }
                Err(status) => return Err(Failure::Opening(status)),
            }
        };
        opened.answer().await
    }
}

/// Waits for `opening` and puts what it made in `slot` (or empties the
/// slot when it failed, so that the next call tries again).
async fn connect<L: Link>(
    opening: BoxFuture<'static, Result<L, ConnectError>>,
    slot: Arc<Mutex<State<L>>>,
) -> Result<L, ConnectError> {
    let opened = opening.await;
    let mut state = slot.lock().unwrap_or_else(PoisonError::into_inner);
    *state = match &opened {
        Ok(live) => State::Live(live.clone()),
        Err(err) => {
            tracing::debug!(error = %err, "upstream connect failed");
            State::Idle
        }
    };
    opened
}

/// A socket to a backend: TCP, then TLS for `https://` upstreams.
enum Transport {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

async fn transport(target: &Target, addr: SocketAddr) -> Result<Transport, ConnectError> {
    let error = |reason: String| ConnectError { addr, reason: Arc::from(reason) };
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(err)) => return Err(error(err.to_string())),
        Err(_) => return Err(error("timed out".into())),
    };
    let _ = tcp.set_nodelay(true);
    let Some(tls) = &target.tls else { return Ok(Transport::Plain(tcp)) };
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let handshake_tls = connector.connect(tls.server_name.clone(), tcp);
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, handshake_tls).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return Err(error(format!("TLS handshake: {err}"))),
        Err(_) => return Err(error("TLS handshake timed out".into())),
    };
    if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err(error("the backend does not speak HTTP/2 over TLS (no h2 in ALPN)".into()));
    }
    Ok(Transport::Tls(Box::new(stream)))
}

impl tokio::io::AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Transport::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The unary calls' connection: ours, over [`transport`].
async fn open_wire(target: Arc<Target>, addr: SocketAddr) -> Result<Arc<Wire>, ConnectError> {
    let io = transport(&target, addr).await?;
    let error = |reason: String| ConnectError { addr, reason: Arc::from(reason) };
    match tokio::time::timeout(CONNECT_TIMEOUT, Wire::handshake(io, &target, KEEP_ALIVE)).await {
        Ok(Ok(wire)) => Ok(wire),
        Ok(Err(reason)) => Err(error(format!("HTTP/2 handshake: {reason}"))),
        Err(_) => Err(error("HTTP/2 handshake timed out".into())),
    }
}

/// The streaming calls' connection: h2's, over [`transport`].
async fn open_h2(target: Arc<Target>, addr: SocketAddr) -> Result<Live, ConnectError> {
    handshake(transport(&target, addr).await?, addr).await
}

/// The HTTP/2 handshake over `io`; its driver runs in a task of its own
/// until the connection closes.
async fn handshake(io: Transport, addr: SocketAddr) -> Result<Live, ConnectError> {
    let handshake = h2::client::Builder::new()
        .enable_push(false)
        .initial_window_size(1 << 20)
        .initial_connection_window_size(8 << 20)
        .handshake::<_, Bytes>(io);
    let (send, mut connection) = match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
        Ok(Ok(parts)) => parts,
        Ok(Err(err)) => return Err(ConnectError { addr, reason: Arc::from(format!("HTTP/2 handshake: {err}")) }),
        Err(_) => return Err(ConnectError { addr, reason: Arc::from("HTTP/2 handshake timed out") }),
    };
    let closed = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let ping_pong = connection.ping_pong();
    let (closed_by_driver, calls_seen) = (closed.clone(), calls.clone());
    tokio::spawn(async move {
        tokio::select! {
            ended = &mut connection => if let Err(err) = ended {
                tracing::debug!(endpoint = %addr, error = %err, "upstream connection ended");
            },
            () = keep_alive(ping_pong, calls_seen) => {
                tracing::warn!(endpoint = %addr, "upstream connection closed: keep-alive ping unanswered");
            }
        }
        closed_by_driver.store(true, Ordering::Release);
    });
    Ok(Live { send, closed, calls })
}

/// Pings while calls are open; returns when a ping goes unanswered.
async fn keep_alive(ping_pong: Option<h2::PingPong>, calls: Arc<AtomicUsize>) {
    let Some(mut ping_pong) = ping_pong else { return std::future::pending().await };
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE_INTERVAL, KEEP_ALIVE_INTERVAL);
    loop {
        tick.tick().await;
        if calls.load(Ordering::Relaxed) == 0 {
            continue;
        }
        match tokio::time::timeout(KEEP_ALIVE_TIMEOUT, ping_pong.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            // The connection's own error ends the driver anyway.
            Ok(Err(_)) => return std::future::pending().await,
            Err(_) => return,
        }
    }
}

/// What a backend answered to a unary call.
#[derive(Debug)]
pub struct UnaryReply {
    pub headers: MetadataMap,
    /// The answer's wire bytes; `None` when the backend ended the call OK
    /// without a message.
    pub message: Option<Bytes>,
    pub trailers: MetadataMap,
}

/// Cuts gRPC messages out of a body's DATA frames. A message that arrives
/// whole in one frame (the common case) is a slice of it, no copy; one
/// spread over several frames is put together once, in a buffer sized from
/// its header.
#[derive(Default)]
struct Deframer {
    partial: BytesMut,
}

impl Deframer {
    /// Takes one DATA frame; each message it completes goes to `each`, in
    /// order.
    fn push(&mut self, mut chunk: Bytes, each: &mut impl FnMut(Bytes)) -> Result<(), Status> {
        while !chunk.is_empty() {
            if self.partial.is_empty() {
                if let Some(len) = message_len(&chunk)? {
                    if chunk.len() >= 5 + len {
                        chunk.advance(5);
                        each(chunk.split_to(len));
                        continue;
                    }
                    self.partial.reserve(5 + len);
                }
                self.partial.extend_from_slice(&chunk);
                return Ok(());
            }
            // Only as much as the message still lacks: what follows in
            // this frame starts the next one.
            let wanted = match message_len(&self.partial)? {
                Some(len) => 5 + len - self.partial.len(),
                None => 5 - self.partial.len(),
            };
            self.partial.extend_from_slice(&chunk.split_to(wanted.min(chunk.len())));
            match message_len(&self.partial)? {
                Some(len) if self.partial.len() == 5 + len => {
                    let mut whole = self.partial.split().freeze();
                    whole.advance(5);
                    each(whole);
                }
                Some(len) => self.partial.reserve(5 + len - self.partial.len()),
                None => {}
            }
        }
        Ok(())
    }

    /// Whether a message was begun and not finished.
    fn is_partial(&self) -> bool {
        !self.partial.is_empty()
    }
}

/// The length of the message framed at the start of `bytes`, once its
/// 5-byte header is there; refused when compressed (none was asked for) or
/// over [`MAX_MESSAGE`].
fn message_len(bytes: &[u8]) -> Result<Option<usize>, Status> {
    let Some(header) = bytes.get(..5) else { return Ok(None) };
    match header[0] {
        0 => {}
        1 => return Err(Status::internal("the backend sent a compressed message, which was not asked for")),
        flag => return Err(Status::internal(format!("the backend sent a message with compression flag {flag}"))),
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_MESSAGE {
        return Err(Status::out_of_range(format!(
            "the backend's message is {len} bytes, more than the {MAX_MESSAGE} bytes accepted"
        )));
    }
    Ok(Some(len))
}

/// The status in `headers` (trailers, or the headers of a trailers-only
/// answer), if they carry one. Unlike tonic's reading, details that are not
/// base64 are dropped rather than a panic.
fn status_of(headers: &HeaderMap) -> Option<Status> {
    let code = match headers.get(&GRPC_STATUS)?.as_bytes() {
        b"0" => return Some(Status::new(Code::Ok, "")),
        code => Code::from_bytes(code),
    };
    let message = headers
        .get(&GRPC_MESSAGE)
        .map(|m| percent_encoding::percent_decode(m.as_bytes()).decode_utf8_lossy().into_owned())
        .unwrap_or_default();
    let details = headers.get(&GRPC_STATUS_DETAILS).and_then(|d| decode_base64(d.as_bytes())).unwrap_or_default();
    Some(Status::with_details(code, message, details.into()))
}

fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    use base64::engine::DecodePaddingMode;
    use base64::Engine;
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    LENIENT.decode(text).ok()
}

/// An answer without a gRPC status, by its HTTP status (the mapping of
/// gRPC's http-grpc-status-mapping.md).
fn from_http_status(status: StatusCode) -> Status {
    let code = match status {
        StatusCode::BAD_REQUEST => Code::Internal,
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::FORBIDDEN => Code::PermissionDenied,
        StatusCode::NOT_FOUND => Code::Unimplemented,
        StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
        _ => Code::Unknown,
    };
    Status::new(code, format!("the backend answered HTTP {} without a gRPC status", status.as_u16()))
}

/// A transport failure as a status; the h2 error stays its source (what
/// the retry rules look at).
fn h2_status(err: h2::Error) -> Status {
    Status::from_error(Box::new(err))
}

/// A connect failure as a status: UNAVAILABLE, the [`ConnectError`] its
/// source (what the retry rules look for).
fn unreachable(err: ConnectError) -> Status {
    let mut status = Status::unavailable(err.to_string());
    status.set_source(Arc::new(err));
    status
}

// ===== the tower::Service that tonic's client calls through =====

impl tower::Service<Request<Body>> for Connection {
    type Response = Response<Body>;
    type Error = Status;
    type Future = BoxFuture<'static, Result<Response<Body>, Status>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (mut send, in_call) = this.ready().await?;
            let (parts, body) = request.into_parts();
            let mut head = this.target.request(
                parts.uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")),
                parts.headers,
            );
            *head.extensions_mut() = parts.extensions;
            let end = http_body::Body::is_end_stream(&body);
            let (response, stream) = send.send_request(head, end).map_err(h2_status)?;
            let (cancel, cancelled) = tokio::sync::oneshot::channel::<()>();
            if !end {
                tokio::spawn(Pipe { body, stream, cancelled, waiting: None });
            }
            let (head, recv) = response.await.map_err(h2_status)?.into_parts();
            let body = RecvBody { recv, trailers: false, _cancel: cancel, _in_call: in_call };
            Ok(Response::from_parts(head, Body::new(body)))
        })
    }
}

impl Clone for Connection {
    fn clone(&self) -> Self {
        Self { target: self.target.clone(), addr: self.addr, state: self.state.clone(), wire: self.wire.clone() }
    }
}

/// A response body read from h2, its window given back as it is read.
/// Dropping it stops the request side too (`_cancel`).
struct RecvBody {
    recv: h2::RecvStream,
    trailers: bool,
    _cancel: tokio::sync::oneshot::Sender<()>,
    _in_call: InCall,
}

impl http_body::Body for RecvBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if !this.trailers {
            match std::task::ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(err)) => return Poll::Ready(Some(Err(h2_status(err)))),
                None => this.trailers = true,
            }
        }
        match std::task::ready!(this.recv.poll_trailers(cx)) {
            Ok(Some(mut trailers)) => {
                // tonic panics on details that are not base64: drop them.
                if trailers.get(&GRPC_STATUS_DETAILS).is_some_and(|d| decode_base64(d.as_bytes()).is_none()) {
                    trailers.remove(&GRPC_STATUS_DETAILS);
                }
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            Ok(None) => Poll::Ready(None),
            Err(err) => Poll::Ready(Some(Err(h2_status(err)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.trailers && self.recv.is_end_stream()
    }
}

/// Sends a streaming call's request body as the stream's window allows,
/// until it ends, the backend resets the stream or the response is
/// dropped. As hyper does: a frame is taken from the body first, then one
/// byte of capacity is asked for (never a whole frame's worth ahead of
/// time, which can starve other streams of the connection's window), and
/// the frame goes out once any is granted; h2 queues what the window does
/// not take yet.
struct Pipe {
    body: Body,
    stream: h2::SendStream<Bytes>,
    cancelled: tokio::sync::oneshot::Receiver<()>,
    /// A frame waiting for capacity, and whether it ends the body.
    waiting: Option<(Bytes, bool)>,
}

impl Future for Pipe {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        loop {
            if Pin::new(&mut this.cancelled).poll(cx).is_ready() {
                this.stream.send_reset(h2::Reason::CANCEL);
                return Poll::Ready(());
            }
            if this.stream.poll_reset(cx).is_ready() {
                return Poll::Ready(());
            }
            if let Some((data, end)) = this.waiting.take() {
                while this.stream.capacity() == 0 {
                    match this.stream.poll_capacity(cx) {
                        Poll::Ready(Some(Ok(0))) => {}
                        Poll::Ready(Some(Ok(_))) => break,
                        Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                        Poll::Pending => {
                            this.waiting = Some((data, end));
                            return Poll::Pending;
                        }
                    }
                }
                if this.stream.send_data(data, end).is_err() || end {
                    return Poll::Ready(());
                }
                continue;
            }
            match std::task::ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {
                        let end = http_body::Body::is_end_stream(&this.body);
                        if this.stream.send_data(data, end).is_err() || end {
                            return Poll::Ready(());
                        }
                    }
                    Ok(data) => {
                        this.stream.reserve_capacity(1);
                        this.waiting = Some((data, http_body::Body::is_end_stream(&this.body)));
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            this.stream.reserve_capacity(0);
                            let _ = this.stream.send_trailers(trailers);
                            return Poll::Ready(());
                        }
                    }
                },
                Some(Err(err)) => {
                    tracing::debug!(error = %err, "request stream failed; cancelling the call");
                    this.stream.send_reset(h2::Reason::CANCEL);
                    return Poll::Ready(());
                }
                None => {
                    let _ = this.stream.send_data(Bytes::new(), true);
                    return Poll::Ready(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
