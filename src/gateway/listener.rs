//! The listeners: accept connections, serve each over HTTP/1.1 or HTTP/2
//! (h2c, or TLS with ALPN), drain on shutdown. Knows nothing of what it
//! serves.
//!
//! Every connection starts with the plain HTTP/1.1 loop ([`http1`]); the
//! first request it does not take hands the connection to hyper, which
//! serves HTTP/2 and everything else of HTTP/1.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::{Service, ServiceExt as _};

use super::connection::{self, Closed, Sniff, State, Timeouts, Tracked};
use super::http1::{self, Outcome};
use super::refusal::Refusals;
use crate::http::body::BoxError;
use crate::http::respond::MAX_TARGET;
use crate::http::RequestBody;
use crate::tls::{ClientCert, ServerTls};

/// How long streams still open when the drain deadline passes get to write
/// their last record before their connections are dropped.
const LAST_WORDS: Duration = Duration::from_secs(1);

/// How a listener winds down once shutdown is asked for.
#[derive(Debug, Clone)]
pub struct Drain {
    /// How long in-flight requests and streams may go on.
    pub timeout: Duration,
    /// Set when `timeout` has passed: open streams end (in-band
    /// UNAVAILABLE). Its receivers live as long as a connection or a
    /// stream that outlived its connection (a WebSocket), so the drain
    /// also waits for them.
    pub streams: Arc<watch::Sender<bool>>,
}

impl Drain {
    pub fn new(timeout: Duration) -> Self {
        Self { timeout, streams: Arc::new(watch::channel(false).0) }
    }
}

/// Who is at the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The certificate the client presented and `tls.client_ca` verified.
    pub client_cert: Option<Arc<ClientCert>>,
}

/// Accepts connections on `listener` until `shutdown`, serving each with the
/// service `make(peer)` over HTTP/1.1 or HTTP/2 (h2c, or ALPN over `tls`),
/// then drains. Every connection is held to `timeouts` (see
/// [`connection`]).
pub async fn accept_loop<M, S, B>(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    timeouts: Timeouts,
    drain: Drain,
    shutdown: impl Future<Output = ()> + Send + 'static,
    make: M,
) -> std::io::Result<()>
where
    M: Fn(Peer) -> S + Send + Sync + 'static,
    S: Service<Request<RequestBody>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's own header-read timer also runs while a kept-alive
    // connection waits, so it would cut idle connections short: the
    // connection watcher keeps both deadlines instead. An HTTP/2 peer that
    // stops answering pings is let go.
    // Room for twice the header limit plus the longest request target:
    // the respond layer then answers an oversized request with the
    // envelope; only a grossly larger one meets hyper's own refusal,
    // which `Refusals` rewrites into the envelope on its way out.
    let header_room = timeouts.max_header_bytes.saturating_mul(2).saturating_add(MAX_TARGET);
    builder.http1().timer(TokioTimer::new()).header_read_timeout(None).max_buf_size(header_room.max(16 << 10));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(header_room).unwrap_or(u32::MAX))
        .max_concurrent_streams(timeouts.http2_max_concurrent_streams)
        .keep_alive_interval(timeouts.http2_keep_alive_interval)
        .keep_alive_timeout(timeouts.http2_keep_alive_timeout);
    let builder = Arc::new(builder);
    // The plain loop hands over a head larger than hyper's buffer too.
    let max_head = header_room.max(16 << 10);
    let make = Arc::new(make);
    // Every connection holds a receiver; the drain ends when all are gone.
    let (shutting_down, shutdown_seen) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
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
        // The header-read deadline runs from here: a TLS handshake counts.
        let conn = Connection {
            builder: builder.clone(),
            max_head,
            make: make.clone(),
            state: State::new(),
            timeouts,
            shutdown_seen: shutdown_seen.clone(),
        };
        let Some(tls) = tls.clone() else {
            tokio::spawn(conn.serve(stream, Peer { addr, client_cert: None }));
            continue;
        };
        tokio::spawn(async move {
            match tokio::time::timeout(timeouts.header_read, crate::tls::acceptor(&tls).accept(stream)).await {
                Ok(Ok(stream)) => {
                    let client_cert = stream.get_ref().1.peer_certificates().and_then(|chain| chain.first());
                    let client_cert = client_cert.and_then(|leaf| ClientCert::parse(leaf)).map(Arc::new);
                    conn.serve(stream, Peer { addr, client_cert }).await;
                }
                Ok(Err(err)) => tracing::debug!(error = %err, peer = %addr, "TLS handshake failed"),
                Err(_) => {
                    tracing::debug!(peer = %addr, "connection closed: no TLS handshake within the header-read timeout")
                }
            }
        });
    }
    drop(listener);
    drop(make);
    let _ = shutting_down.send(true);
    drop(shutdown_seen);
    let drained = async {
        shutting_down.closed().await;
        drain.streams.closed().await;
    };
    if tokio::time::timeout(drain.timeout, drained).await.is_err() {
        tracing::warn!("drain deadline passed; ending open streams and closing remaining connections");
        let _ = drain.streams.send(true);
        let drained = async {
            shutting_down.closed().await;
            drain.streams.closed().await;
        };
        let _ = tokio::time::timeout(LAST_WORDS, drained).await;
    }
    Ok(())
}

/// One accepted connection, ready to be served once its transport is.
struct Connection<M> {
    builder: Arc<auto::Builder<TokioExecutor>>,
    /// The longest request head hyper reads.
    max_head: usize,
    make: Arc<M>,
    state: Arc<State>,
    timeouts: Timeouts,
    shutdown_seen: watch::Receiver<bool>,
}

impl<M> Connection<M> {
    async fn serve<I, S, B>(self, io: I, peer: Peer)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        M: Fn(Peer) -> S,
        S: Service<Request<RequestBody>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
        S::Future: Send + 'static,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let Self { builder, max_head, make, state, timeouts, mut shutdown_seen } = self;
        let addr = peer.addr;
        // hyper's own bare HTTP/1 refusals (400, 414, 431) leave in the envelope.
        let io = Sniff::new(Refusals::new(io), state.clone());
        let service = Tracked::new(make(peer), state.clone());
        let flags = http1::Flags::default();
        let conn = serve_connection(io, service, &builder, &flags, max_head);
        let shutdown = async move {
            let _ = shutdown_seen.wait_for(|stop| *stop).await;
        };
        let graceful = |_: std::pin::Pin<&mut _>| flags.close();
        match connection::watch(conn, graceful, &state, timeouts, shutdown).await {
            (Closed::Ended, Some(Err(err))) => {
                tracing::debug!(error = %err, peer = %addr, "connection ended with an error")
            }
            (Closed::Ended, _) => {}
            (Closed::Silent, _) => {
                tracing::debug!(peer = %addr, "connection closed: no request within the header-read timeout")
            }
            (Closed::Forced, _) => {
                tracing::debug!(peer = %addr, "connection closed: it did not finish closing in time")
            }
        }
    }
}

/// Serves `io`: plain HTTP/1.1 requests here, then, from the first request
/// that is not plain, hyper. A graceful close (`flags`) closes a connection
/// between requests at once, and after the request in flight otherwise.
async fn serve_connection<I, S, B>(
    io: I,
    service: S,
    builder: &auto::Builder<TokioExecutor>,
    flags: &http1::Flags,
    max_head: usize,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<RequestBody>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let outcome = {
        let mut plain = pin!(http1::serve(io, service.clone(), flags, max_head));
        poll_fn(|cx| match flags.may_go() {
            true => Poll::Ready(None),
            false => plain.as_mut().poll(cx).map(Some),
        })
        .await
    };
    let (io, read) = match outcome {
        None => return Ok(()),
        Some(Outcome::Closed(result)) => return result.map_err(Into::into),
        Some(Outcome::Handover { io, read }) => (io, read),
    };
    let service = service.map_request(|req: Request<Incoming>| req.map(RequestBody::from));
    let mut conn = pin!(builder.serve_connection_with_upgrades(
        TokioIo::new(http1::Replay::new(read.freeze(), io)),
        TowerToHyperService::new(service)
    ));
    let mut told = false;
    poll_fn(|cx| {
        if !told && flags.closing() {
            told = true;
            conn.as_mut().graceful_shutdown();
        }
        conn.as_mut().poll(cx)
    })
    .await
}
