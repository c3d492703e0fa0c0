//! One connection's clock: closed if it does not complete its first
//! request's headers (HTTP/1) or its preface and first SETTINGS (HTTP/2)
//! within the header-read timeout of being accepted, and closed gracefully
//! once no request has been in flight for the idle timeout.
//!
//! hyper-util's version detection waits for the first bytes without a time
//! limit; hyper's own HTTP/1 header-read timeout only starts once HTTP/1 is
//! chosen, and runs while a kept-alive connection waits for its next
//! request, so it would close idle connections at the header-read timeout
//! instead of the idle one; HTTP/2 has no idle timeout at all. So the
//! connection's state is kept beside it: [`Sniff`] wraps the socket, sees
//! the HTTP/2 handshake complete and the first bytes of each later HTTP/1
//! request arrive; [`Tracked`] wraps the service and counts requests in
//! flight until their response bodies have handed over their last frame
//! (a peer slow to take it is idle, not busy); [`watch`] drives the
//! connection and closes it when a deadline passes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tower::Service;

use crate::config::Limits;

/// The connection deadlines and HTTP/2 limits, from config `limits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub header_read: Duration,
    pub idle: Duration,
    /// `limits.max_header_bytes`: hyper's own buffers are sized above it,
    /// so that the gateway, not hyper, refuses what exceeds it (431, in
    /// the envelope).
    pub max_header_bytes: usize,
    /// `limits.http2_max_concurrent_streams`.
    pub http2_max_concurrent_streams: u32,
    /// `limits.http2_keep_alive_interval`; `None`: no pings.
    pub http2_keep_alive_interval: Option<Duration>,
    /// `limits.http2_keep_alive_timeout`.
    pub http2_keep_alive_timeout: Duration,
}

impl Timeouts {
    pub fn from_limits(limits: &Limits) -> Self {
        Self {
            header_read: limits.header_read_timeout,
            idle: limits.idle_timeout,
            max_header_bytes: limits.max_header_bytes,
            http2_max_concurrent_streams: limits.http2_max_concurrent_streams,
            http2_keep_alive_interval: limits.http2_keep_alive_interval,
            http2_keep_alive_timeout: limits.http2_keep_alive_timeout,
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Self::from_limits(&crate::config::Config::default().limits)
    }
}

/// What the watcher knows of its connection, written by the socket and the
/// service, read when a deadline passes.
#[derive(Debug)]
pub struct State {
    started: Instant,
    /// Headers of a first request (HTTP/1), or the preface and first
    /// SETTINGS (HTTP/2), have arrived.
    ready: AtomicBool,
    in_flight: AtomicUsize,
    /// When the last request ended, in milliseconds since `started`.
    idle_since_ms: AtomicU64,
    /// When the first bytes of the next HTTP/1 request arrived ([`NONE`]
    /// until they do).
    head_started_ms: AtomicU64,
}

const NONE: u64 = u64::MAX;

/// What the watcher does next.
enum Step {
    Wait(Instant),
    /// Close gracefully: idle.
    Graceful,
    /// Drop the connection: headers did not arrive in time.
    Drop,
}

impl State {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            ready: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            head_started_ms: AtomicU64::new(NONE),
        })
    }

    /// Bytes arrived on an HTTP/1 connection.
    fn http1_bytes(&self) {
        if self.ready.load(Ordering::Relaxed)
            && self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started_ms.load(Ordering::Relaxed) == NONE
        {
            self.head_started_ms.store(self.elapsed_ms(), Ordering::Relaxed);
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.started + Duration::from_millis(ms)
    }

    fn step(&self, timeouts: Timeouts, now: Instant) -> Step {
        if !self.ready.load(Ordering::Relaxed) {
            let deadline = self.started + timeouts.header_read;
            return if deadline <= now { Step::Drop } else { Step::Wait(deadline) };
        }
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Step::Wait(now + timeouts.idle);
        }
        let idle_until = self.at(self.idle_since_ms.load(Ordering::Relaxed)) + timeouts.idle;
        let head_until = match self.head_started_ms.load(Ordering::Relaxed) {
            NONE => None,
            ms => Some(self.at(ms) + timeouts.header_read),
        };
        match head_until {
            Some(deadline) if deadline <= now => Step::Drop,
            _ if idle_until <= now => Step::Graceful,
            Some(deadline) => Step::Wait(deadline.min(idle_until)),
            None => Step::Wait(idle_until),
        }
    }

    fn mark_ready(&self) {
        if !self.ready.load(Ordering::Relaxed) {
            self.ready.store(true, Ordering::Relaxed);
            self.idle_since_ms.store(self.elapsed_ms(), Ordering::Relaxed);
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// One request in flight; dropped once its response body has handed over
/// its last frame, or with the body.
struct InFlight(Arc<State>);

impl InFlight {
    fn begin(state: &Arc<State>) -> Self {
        state.mark_ready();
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        state.head_started_ms.store(NONE, Ordering::Relaxed);
        Self(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // The time first, so a watcher that sees zero in flight also sees
        // a fresh idle start.
        self.0.idle_since_ms.store(self.0.elapsed_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Release);
    }
}

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The preface and the first frame's header.
const SNIFFED: usize = PREFACE.len() + 9;
const SETTINGS: u8 = 0x4;

pin_project_lite::pin_project! {
    /// The socket, watched until the HTTP/2 handshake is complete.
    pub struct Sniff<T> {
        #[pin]
        inner: T,
        state: Arc<State>,
        head: [u8; SNIFFED],
        seen: usize,
        // Bytes of the first SETTINGS payload still to come, once its
        // header is read.
        settings_left: Option<usize>,
        done: bool,
        http1: bool,
    }
}

impl<T> Sniff<T> {
    pub fn new(inner: T, state: Arc<State>) -> Self {
        Self { inner, state, head: [0; SNIFFED], seen: 0, settings_left: None, done: false, http1: false }
    }
}

impl<T: AsyncRead> AsyncRead for Sniff<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if !matches!(polled, Poll::Ready(Ok(()))) || buf.filled().len() == before {
            return polled;
        }
        if *this.http1 {
            this.state.http1_bytes();
            return polled;
        }
        if *this.done {
            return polled;
        }
        let mut new = &buf.filled()[before..];
        if *this.seen < SNIFFED {
            let take = new.len().min(SNIFFED - *this.seen);
            this.head[*this.seen..*this.seen + take].copy_from_slice(&new[..take]);
            *this.seen += take;
            new = &new[take..];
            let compared = (*this.seen).min(PREFACE.len());
            if this.head[..compared] != PREFACE[..compared] {
                // HTTP/1: its first request's headers make it ready.
                *this.done = true;
                *this.http1 = true;
                return polled;
            }
            if *this.seen == SNIFFED {
                let frame = &this.head[PREFACE.len()..];
                if frame[3] != SETTINGS {
                    // Not a valid HTTP/2 start: the codec refuses it.
                    *this.done = true;
                    return polled;
                }
                *this.settings_left =
                    Some(usize::from(frame[0]) << 16 | usize::from(frame[1]) << 8 | usize::from(frame[2]));
            }
        }
        if let Some(left) = this.settings_left {
            *left = left.saturating_sub(new.len());
            if *left == 0 {
                this.state.mark_ready();
                *this.done = true;
            }
        }
        polled
    }
}

impl<T: AsyncWrite> AsyncWrite for Sniff<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The connection's service, counting requests in flight.
#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    state: Arc<State>,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, state: Arc<State>) -> Self {
        Self { inner, state }
    }
}

impl<S, R, B> Service<Request<R>> for Tracked<S>
where
    S: Service<Request<R>, Response = Response<B>>,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<R>) -> Self::Future {
        let in_flight = InFlight::begin(&self.state);
        TrackedFuture { inner: self.inner.call(req), in_flight: Some(in_flight) }
    }
}

pin_project_lite::pin_project! {
    pub struct TrackedFuture<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx));
        let in_flight = this.in_flight.take();
        Poll::Ready(response.map(|response| response.map(|body| TrackedBody { inner: body, in_flight })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted until it has given
    /// up its last frame (or is dropped before).
    pub struct TrackedBody<B> {
        #[pin]
        inner: B,
        in_flight: Option<InFlight>,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        // Once the whole response is handed to the connection, what is left
        // is the peer taking it, at the pace of its flow-control window:
        // that wait is the peer's idleness, not the gateway's work. hyper
        // keeps the body until the window lets the last frame out, so
        // counted until dropped, a peer that keeps its window at zero (and
        // answers pings) would hold the connection, and every response on
        // it, for good.
        let ended = match &polled {
            Poll::Ready(None | Some(Err(_))) => true,
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            Poll::Pending => false,
        };
        if ended {
            this.in_flight.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why [`watch`] stopped a connection early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// It ended by itself (the peer closed, or a graceful close finished).
    Ended,
    /// No request headers (or HTTP/2 handshake) within the header-read
    /// timeout.
    Silent,
    /// A graceful close (idle, or shutdown) did not finish in time.
    Forced,
}

/// Drives `conn` until it ends, `shutdown` asks for a graceful close, or a
/// deadline of `timeouts` passes. A connection that went idle, or was asked
/// to shut down, is closed with `graceful` (HTTP/2: GOAWAY) and given the
/// header-read timeout to finish before it is dropped.
///
/// Requests do not wake the watcher. A deadline only ever starts at an
/// event (a request's first bytes, a request's end) and runs for the
/// header-read or the idle timeout, so a timer armed no later than
/// `now + min(header_read, idle)` is never late for a deadline that
/// starts after it was armed: when it fires, the state is read again and
/// the timer armed again. A busy connection costs one timer wake per
/// `min(header_read, idle)`, not a timer and a wake-up per request.
pub async fn watch<C: Future>(
    conn: C,
    graceful: impl Fn(Pin<&mut C>),
    state: &State,
    timeouts: Timeouts,
    shutdown: impl Future<Output = ()>,
) -> (Closed, Option<C::Output>) {
    let horizon = timeouts.header_read.min(timeouts.idle);
    tokio::pin!(conn);
    tokio::pin!(shutdown);
    let timer = tokio::time::sleep_until(Instant::now() + horizon);
    tokio::pin!(timer);
    let mut closing: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let wait = match closing {
            Some(deadline) => deadline,
            None => match state.step(timeouts, now) {
                Step::Wait(deadline) => deadline.min(now + horizon),
                Step::Drop => return (Closed::Silent, None),
                Step::Graceful => {
                    graceful(conn.as_mut());
                    *closing.insert(now + timeouts.header_read)
                }
            },
        };
        timer.as_mut().reset(wait);
        tokio::select! {
            biased;
            output = conn.as_mut() => return (Closed::Ended, Some(output)),
            () = &mut shutdown, if closing.is_none() => {
                graceful(conn.as_mut());
                closing = Some(Instant::now() + timeouts.header_read);
            }
            () = timer.as_mut() => {
                if closing.is_some_and(|deadline| deadline <= Instant::now()) {
                    return (Closed::Forced, None);
                }
            }
        }
    }
}
