//! The HTTP/2 connection that carries unary calls, spoken here rather
//! than through h2: a unary call is one HEADERS frame, its message in DATA
//! frames, and an answer read whole, so the general machinery (a stream
//! state machine per call, prioritization, an HPACK encoder that hashes and
//! Huffman-codes every field) costs more than the call itself. What this
//! side sends is cheap to write: the header fields that never change are
//! encoded once per upstream, literals are never indexed (the backend's
//! table settings cannot matter) and nothing is Huffman-coded. What comes
//! back is read in full: HPACK with its dynamic table ([`hpack`]), padding,
//! CONTINUATION, flow control, SETTINGS, PING, RST_STREAM and GOAWAY
//! (RFC 9113).
//!
//! One driver task per connection owns the socket: it writes what calls
//! queue and reads frames into the calls' slots, waking each call when its
//! answer is complete. A call runs on its request's task and touches the
//! connection only under one lock, to queue its frames and to take its
//! answer.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, TE, USER_AGENT};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use super::{from_http_status, status_of, Deframer, Failure, Target, UnaryReply};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// Frame types and flags (RFC 9113 §6).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

// Error codes (RFC 9113 §7).
pub const NO_ERROR: u32 = 0x0;
const PROTOCOL_ERROR: u32 = 0x1;
const FLOW_CONTROL_ERROR: u32 = 0x3;
const FRAME_SIZE_ERROR: u32 = 0x6;
pub const REFUSED_STREAM: u32 = 0x7;
const CANCEL: u32 = 0x8;
const COMPRESSION_ERROR: u32 = 0x9;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// The largest frame this side accepts (the protocol's default; it is
/// not raised in SETTINGS).
const MAX_FRAME: usize = 16_384;
/// What this side lets a backend send ahead: per stream (in SETTINGS) and
/// for the whole connection (raised by a WINDOW_UPDATE after the preface).
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 8 << 20;
/// A backend's header block beyond this is refused (with the connection:
/// the HPACK state cannot be kept without decoding the block).
const MAX_HEADER_BLOCK: usize = 256 << 10;
/// The largest window the protocol allows.
const MAX_WINDOW: i64 = (1 << 31) - 1;

/// Why a call failed in the transport, kept as its status's source: what
/// the retry rules read. `unprocessed` marks a stream the backend said it
/// never acted on (above a GOAWAY's last stream, or refused).
#[derive(Debug, Clone)]
pub struct Reset {
    pub reason: u32,
    pub go_away: bool,
    pub unprocessed: bool,
}

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let by = if self.go_away { "GOAWAY" } else { "RST_STREAM" };
        write!(f, "{by} with error code {:#x}", self.reason)
    }
}

impl std::error::Error for Reset {}

/// A transport failure as the call's status: the code gRPC gives the
/// error code (PROTOCOL-HTTP2.md), the [`Reset`] its source.
fn reset_status(reset: Reset, what: &str) -> Status {
    let code = match reset.reason {
        _ if reset.unprocessed => Code::Unavailable,
        REFUSED_STREAM => Code::Unavailable,
        CANCEL => Code::Cancelled,
        ENHANCE_YOUR_CALM => Code::ResourceExhausted,
        0xc => Code::PermissionDenied,
        0x0..=0xd => Code::Internal,
        _ => Code::Unknown,
    };
    let mut status = Status::new(code, format!("{what}: {reset}"));
    status.set_source(Arc::new(reset));
    status
}

/// The connection gone (closed, failed, or a keep-alive ping unanswered):
/// UNAVAILABLE, as gRPC's own clients report a transport that closed; the
/// backend may have acted on the call, so it is not retried.
fn gone(why: &str) -> Status {
    let mut status = Status::unavailable(format!("the backend connection ended: {why}"));
    status.set_source(Arc::new(Reset { reason: NO_ERROR, go_away: false, unprocessed: false }));
    status
}

/// The header fields every call of `target` has, HPACK-encoded:
/// `:method POST`, `:scheme`, `:authority`, then gRPC's content-type, te
/// and user-agent; and where between them a call's `:path` goes (the
/// pseudo-fields come first). The call's own fields follow.
pub fn head_block(target: &Target) -> (Vec<u8>, usize) {
    let mut block = Vec::with_capacity(96);
    block.push(0x80 | 3); // :method POST (static table 3)
    block.push(0x80 | if target.tls.is_some() { 7 } else { 6 }); // :scheme https / http
    indexed_name(&mut block, 1, target.authority.as_str().as_bytes());
    let path_at = block.len();
    indexed_name(&mut block, 31, b"application/grpc");
    new_name(&mut block, TE.as_str().as_bytes(), b"trailers");
    indexed_name(&mut block, 58, concat!("protogate/", env!("CARGO_PKG_VERSION")).as_bytes());
    (block, path_at)
}

/// An HPACK integer with an `n`-bit prefix, the prefix's other bits `first`.
fn integer(out: &mut Vec<u8>, first: u8, n: u8, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 0x80 {
        out.push(0x80 | (value & 0x7f) as u8);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A string literal, not Huffman-coded.
fn string(out: &mut Vec<u8>, text: &[u8]) {
    integer(out, 0, 7, text.len());
    out.extend_from_slice(text);
}

/// A literal field without indexing, its name from the static table.
fn indexed_name(out: &mut Vec<u8>, index: usize, value: &[u8]) {
    integer(out, 0, 4, index);
    string(out, value);
}

/// A literal field without indexing, with its name.
fn new_name(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0);
    string(out, name);
    string(out, value);
}

/// A frame's 9-byte header.
fn frame_head(out: &mut BytesMut, len: usize, kind: u8, flags: u8, id: u32) {
    let len = len.to_be_bytes();
    let l = len.len();
    out.extend_from_slice(&[len[l - 3], len[l - 2], len[l - 1], kind, flags]);
    out.extend_from_slice(&id.to_be_bytes());
}

fn u32_at(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// DATA frames of `data` for stream `id`, as far as the connection's and
/// the stream's send windows allow (each taken down by what goes), the
/// last one ending the stream; returns how many bytes went.
fn write_data(out: &mut BytesMut, windows: (&mut i64, &mut i64), max_frame: usize, id: u32, data: &[u8]) -> usize {
    let (connection, stream) = windows;
    let mut sent = 0;
    while sent < data.len() {
        let room = (*stream).min(*connection).min(max_frame as i64);
        if room <= 0 {
            break;
        }
        let n = (data.len() - sent).min(room as usize);
        let flags = if sent + n == data.len() { END_STREAM } else { 0 };
        frame_head(out, n, DATA, flags, id);
        out.extend_from_slice(&data[sent..sent + n]);
        sent += n;
        *stream -= n as i64;
        *connection -= n as i64;
    }
    sent
}

/// A connection error: what goes in this side's GOAWAY, and why.
struct Fatal {
    reason: u32,
    why: String,
}

fn fatal(reason: u32, why: impl Into<String>) -> Fatal {
    Fatal { reason, why: why.into() }
}

/// A call's slot on the connection.
struct Stream {
    /// Set once the answer is complete or the call failed.
    done: Option<Result<UnaryReply, Failure>>,
    /// The answer's headers, once they came (and did not end the call).
    head: Option<HeaderMap>,
    messages: Deframer,
    message: Option<Bytes>,
    /// Whether the backend ended its side (no RST_STREAM is owed when the
    /// call goes away).
    peer_ended: bool,
    waker: Option<Waker>,
    /// The request's bytes not yet sent, waiting for window.
    unsent: Bytes,
    send_window: i64,
    /// Received and not yet given back in a WINDOW_UPDATE.
    unacked: u32,
}

impl Stream {
    fn finish(&mut self, outcome: Result<UnaryReply, Failure>) {
        if self.done.is_none() {
            self.done = Some(outcome);
            if let Some(waker) = self.waker.take() {
                waker.wake();
            }
        }
    }

    /// Fails the call: at its opening while no answer had begun, else
    /// while answering (what the retry rules tell apart).
    fn fail(&mut self, status: Status) {
        let failure = if self.head.is_some() { Failure::Answering(status) } else { Failure::Opening(status) };
        self.finish(Err(failure));
    }
}

/// Stream ids are this side's own, small and distinct: a multiply spreads
/// them well enough, where SipHash would cost more than the lookup.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 << 8 | u64::from(byte)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.0 = u64::from(id).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// What the driver and the calls share.
struct Shared {
    /// Frames queued for the driver to write.
    out: BytesMut,
    driver: Option<Waker>,
    streams: HashMap<u32, Stream, BuildHasherDefault<IdHasher>>,
    next_id: u32,
    /// The backend's settings.
    max_frame: usize,
    initial_window: i64,
    max_streams: usize,
    /// The connection's send window.
    send_window: i64,
    /// Calls waiting for the backend's stream limit.
    waiting: Vec<Waker>,
    /// Set when no new stream may open: the reason, as a status.
    closing: Option<Status>,
    /// The driver has stopped: every stream has failed.
    ended: bool,
    /// No handle is left: the driver stops once the streams are done.
    abandoned: bool,
    /// The payload of a keep-alive PING not yet answered.
    ping: Option<[u8; 8]>,
    /// Whether the backend's first SETTINGS came.
    settled: bool,
    handshake: Option<Waker>,
}

impl Shared {
    fn wake_driver(&mut self) {
        if let Some(waker) = &self.driver {
            waker.wake_by_ref();
        }
    }

    fn wake_waiting(&mut self) {
        for waker in self.waiting.drain(..) {
            waker.wake();
        }
    }

    /// Sends as much of `id`'s unsent bytes as the windows allow.
    fn send_data(&mut self, id: u32) {
        let Shared { streams, out, send_window, max_frame, .. } = self;
        let Some(stream) = streams.get_mut(&id) else { return };
        let sent = write_data(out, (send_window, &mut stream.send_window), *max_frame, id, &stream.unsent);
        stream.unsent.advance(sent);
    }

    /// Sends what every stream still has to send (after window was given).
    fn send_all_data(&mut self) {
        let ids: Vec<u32> =
            self.streams.iter().filter(|(_, stream)| !stream.unsent.is_empty()).map(|(id, _)| *id).collect();
        for id in ids {
            self.send_data(id);
        }
    }

    fn reset(&mut self, id: u32, reason: u32) {
        frame_head(&mut self.out, 4, RST_STREAM, 0, id);
        self.out.extend_from_slice(&reason.to_be_bytes());
    }

    fn window_update(&mut self, id: u32, increment: u32) {
        frame_head(&mut self.out, 4, WINDOW_UPDATE, 0, id);
        self.out.extend_from_slice(&increment.to_be_bytes());
    }

    /// The driver has stopped: every open call fails with `status`.
    fn end(&mut self, status: &Status) {
        self.ended = true;
        self.closing.get_or_insert_with(|| status.clone());
        for stream in self.streams.values_mut() {
            stream.fail(status.clone());
        }
        self.wake_waiting();
        if let Some(waker) = self.handshake.take() {
            waker.wake();
        }
    }
}

/// A call's hold on its stream: the answer is taken through it, and a call
/// dropped before its answer resets the stream.
struct Call {
    shared: Arc<Mutex<Shared>>,
    id: u32,
}

impl Drop for Call {
    fn drop(&mut self) {
        let mut shared = lock(&self.shared);
        if let Some(stream) = shared.streams.remove(&self.id) {
            if !stream.peer_ended && !shared.ended {
                shared.reset(self.id, CANCEL);
            }
            shared.wake_driver();
        }
        shared.wake_waiting();
    }
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The calls' handle on one connection. The driver winds down once every
/// handle (and every call) is gone.
pub struct Wire {
    shared: Arc<Mutex<Shared>>,
    head: Vec<u8>,
    path_at: usize,
}

impl Drop for Wire {
    fn drop(&mut self) {
        let mut shared = lock(&self.shared);
        shared.abandoned = true;
        shared.wake_driver();
    }
}

impl Wire {
    /// Starts HTTP/2 over `io` (its driver in a task of its own) and waits
    /// for the backend's SETTINGS.
    pub async fn handshake<T>(io: T, target: &Target, keep_alive: KeepAlive) -> Result<Arc<Wire>, String>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut out = BytesMut::with_capacity(4096);
        out.extend_from_slice(PREFACE);
        frame_head(&mut out, 12, SETTINGS, 0, 0);
        out.extend_from_slice(&[0, 2, 0, 0, 0, 0]); // ENABLE_PUSH 0
        out.extend_from_slice(&[0, 4]); // INITIAL_WINDOW_SIZE
        out.extend_from_slice(&STREAM_WINDOW.to_be_bytes());
        frame_head(&mut out, 4, WINDOW_UPDATE, 0, 0);
        out.extend_from_slice(&(CONNECTION_WINDOW - 65_535).to_be_bytes());
        let shared = Arc::new(Mutex::new(Shared {
            out,
            driver: None,
            streams: HashMap::default(),
            next_id: 1,
            max_frame: MAX_FRAME,
            initial_window: 65_535,
            max_streams: usize::MAX,
            send_window: 65_535,
            waiting: Vec::new(),
            closing: None,
            ended: false,
            abandoned: false,
            ping: None,
            settled: false,
            handshake: None,
        }));
        let driver = Driver {
            io,
            shared: shared.clone(),
            read: BytesMut::with_capacity(2 * MAX_FRAME),
            scratch: vec![0; MAX_FRAME + 9].into_boxed_slice(),
            write: BytesMut::new(),
            hpack: hpack::Decoder::default(),
            block: None,
            unacked: 0,
        };
        tokio::spawn(drive(driver, shared.clone(), keep_alive));
        // Made first: dropped (the handshake abandoned), it stops the driver.
        let (head, path_at) = head_block(target);
        let wire = Arc::new(Wire { shared, head, path_at });
        std::future::poll_fn(|cx| {
            let mut state = lock(&wire.shared);
            if state.settled {
                Poll::Ready(Ok(()))
            } else if state.ended {
                Poll::Ready(Err(state.closing.as_ref().map_or_else(String::new, |s| s.message().to_owned())))
            } else {
                state.handshake = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await?;
        Ok(wire)
    }

    /// Closes the connection from this side once its calls are done.
    #[cfg(test)]
    pub fn close(&self) {
        let mut shared = lock(&self.shared);
        shared.closing = Some(gone("closed by a test"));
        shared.wake_driver();
    }

    /// Whether new streams can no longer open here.
    pub fn is_closing(&self) -> bool {
        lock(&self.shared).closing.is_some()
    }

    /// Sends one unary call: its header fields, then `message` (framed,
    /// never empty) as the windows allow; what they do not take yet is kept
    /// (a slice of `message`, no copy) until they do. An `Err` means this
    /// connection takes no new streams (GOAWAY, closed, ids used up), and
    /// another one may.
    pub async fn open(
        &self,
        path: &PathAndQuery,
        fields: &[(HeaderName, HeaderValue)],
        message: &Bytes,
    ) -> Result<Opened, Status> {
        // Sized for what goes in: each field's name, value and at most 6
        // bytes of lengths and representation.
        let room: usize = fields.iter().map(|(name, value)| name.as_str().len() + value.len() + 6).sum();
        let mut block = Vec::with_capacity(self.head.len() + path.as_str().len() + 4 + room);
        block.extend_from_slice(&self.head[..self.path_at]);
        indexed_name(&mut block, 4, path.as_str().as_bytes());
        block.extend_from_slice(&self.head[self.path_at..]);
        for (name, value) in fields {
            if name != CONTENT_TYPE && name != TE && name != USER_AGENT {
                new_name(&mut block, name.as_str().as_bytes(), value.as_bytes());
            }
        }
        std::future::poll_fn(|cx| {
            let mut shared = lock(&self.shared);
            if let Some(status) = &shared.closing {
                return Poll::Ready(Err(status.clone()));
            }
            if shared.streams.len() >= shared.max_streams {
                shared.waiting.push(cx.waker().clone());
                return Poll::Pending;
            }
            let id = shared.next_id;
            if id > MAX_WINDOW as u32 {
                let status = Status::unavailable("the connection's stream ids are used up");
                shared.closing = Some(status.clone());
                shared.wake_driver();
                return Poll::Ready(Err(status));
            }
            shared.next_id += 2;
            let max_frame = shared.max_frame;
            let mut chunks = block.chunks(max_frame).peekable();
            let mut kind = HEADERS;
            while let Some(chunk) = chunks.next() {
                let flags = if chunks.peek().is_none() { END_HEADERS } else { 0 };
                frame_head(&mut shared.out, chunk.len(), kind, flags, id);
                shared.out.extend_from_slice(chunk);
                kind = CONTINUATION;
            }
            let state = &mut *shared;
            let mut window = state.initial_window;
            let sent = write_data(&mut state.out, (&mut state.send_window, &mut window), max_frame, id, message);
            state.streams.insert(
                id,
                Stream {
                    done: None,
                    head: None,
                    messages: Deframer::default(),
                    message: None,
                    peer_ended: false,
                    waker: None,
                    unsent: if sent < message.len() { message.slice(sent..) } else { Bytes::new() },
                    send_window: window,
                    unacked: 0,
                },
            );
            shared.wake_driver();
            Poll::Ready(Ok(Opened(Call { shared: self.shared.clone(), id })))
        })
        .await
    }
}

/// A call sent, its answer to come.
pub struct Opened(Call);

impl Opened {
    /// The answer, once complete.
    pub async fn answer(self) -> Result<UnaryReply, Failure> {
        let call = self.0;
        std::future::poll_fn(|cx| {
            let mut shared = lock(&call.shared);
            let Some(stream) = shared.streams.get_mut(&call.id) else {
                return Poll::Ready(Err(Failure::Answering(Status::internal("the call's stream is gone"))));
            };
            if let Some(done) = stream.done.take() {
                // Taken: the stream is still removed (and reset, if the
                // backend has not ended it) when `call` drops.
                return Poll::Ready(done);
            }
            if !stream.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                stream.waker = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

/// Runs the driver until the connection ends, and the keep-alive beside it.
async fn drive<T>(driver: Driver<T>, shared: Arc<Mutex<Shared>>, every: KeepAlive)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let ended = tokio::select! {
        ended = driver => ended,
        () = keep_alive(&shared, every) => gone("a keep-alive ping was not answered"),
    };
    tracing::debug!(reason = %ended.message(), "upstream connection ended");
    lock(&shared).end(&ended);
}

/// How often a connection PINGs while calls are open, and how long it waits
/// for the answer before it closes.
#[derive(Debug, Clone, Copy)]
pub struct KeepAlive {
    pub interval: Duration,
    pub timeout: Duration,
}

/// Pings every `every.interval` while calls are open; returns when one
/// goes unanswered for `every.timeout`.
async fn keep_alive(shared: &Mutex<Shared>, every: KeepAlive) {
    let start = tokio::time::Instant::now() + every.interval;
    let mut tick = tokio::time::interval_at(start, every.interval);
    let mut sent = 0u64;
    loop {
        tick.tick().await;
        {
            let mut shared = lock(shared);
            if shared.streams.is_empty() {
                continue;
            }
            sent += 1;
            let payload = sent.to_be_bytes();
            shared.ping = Some(payload);
            frame_head(&mut shared.out, 8, PING, 0, 0);
            shared.out.extend_from_slice(&payload);
            shared.wake_driver();
        }
        tokio::time::sleep(every.timeout).await;
        if lock(shared).ping.is_some() {
            return;
        }
    }
}

/// The connection's reader and writer.
struct Driver<T> {
    io: T,
    shared: Arc<Mutex<Shared>>,
    /// Bytes read and not yet cut into frames.
    read: BytesMut,
    scratch: Box<[u8]>,
    /// Bytes taken from `Shared::out`, being written.
    write: BytesMut,
    hpack: hpack::Decoder,
    /// A header block waiting for its CONTINUATION frames: its stream,
    /// whether it ends the stream, and the block so far.
    block: Option<(u32, bool, Vec<u8>)>,
    /// Connection-level bytes received and not yet given back.
    unacked: u32,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Future for Driver<T> {
    type Output = Status;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Status> {
        let this = &mut *self;
        loop {
            if let Err(status) = this.flush(cx) {
                return Poll::Ready(status);
            }
            match this.read(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(status)) => {
                    // The GOAWAY of a connection error, if it can go.
                    let _ = this.flush(cx);
                    return Poll::Ready(status);
                }
                Poll::Pending => {
                    let shared = lock(&this.shared);
                    let idle = shared.streams.is_empty();
                    if idle && (shared.abandoned || shared.closing.is_some()) && this.write.is_empty() {
                        return Poll::Ready(shared.closing.clone().unwrap_or_else(|| gone("no longer used")));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Driver<T> {
    /// Writes what the calls queued, until done or the socket is full.
    fn flush(&mut self, cx: &mut Context<'_>) -> Result<(), Status> {
        loop {
            if self.write.is_empty() {
                let mut shared = lock(&self.shared);
                if !shared.driver.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    shared.driver = Some(cx.waker().clone());
                }
                if shared.out.is_empty() {
                    drop(shared);
                    return match Pin::new(&mut self.io).poll_flush(cx) {
                        Poll::Ready(Err(err)) => Err(gone(&err.to_string())),
                        _ => Ok(()),
                    };
                }
                std::mem::swap(&mut self.write, &mut shared.out);
            }
            match Pin::new(&mut self.io).poll_write(cx, &self.write) {
                Poll::Ready(Ok(0)) => return Err(gone("the socket takes no more")),
                Poll::Ready(Ok(n)) => self.write.advance(n),
                Poll::Ready(Err(err)) => return Err(gone(&err.to_string())),
                Poll::Pending => return Ok(()),
            }
            if self.write.is_empty() {
                self.write.clear();
            }
        }
    }

    /// Reads once and handles every whole frame read.
    fn read(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        let mut buf = ReadBuf::new(&mut self.scratch);
        match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(err)) => return Poll::Ready(Err(gone(&err.to_string()))),
            Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                return Poll::Ready(Err(gone("the backend closed the connection")));
            }
            Poll::Ready(Ok(())) => self.read.extend_from_slice(buf.filled()),
        }
        let shared = self.shared.clone();
        let mut shared = lock(&shared);
        while self.read.len() >= 9 {
            let len = (usize::from(self.read[0]) << 16) | (usize::from(self.read[1]) << 8) | usize::from(self.read[2]);
            if len > MAX_FRAME {
                return Poll::Ready(Err(
                    self.fail(&mut shared, fatal(FRAME_SIZE_ERROR, "a frame over the size allowed"))
                ));
            }
            if self.read.len() < 9 + len {
                self.read.reserve(9 + len - self.read.len());
                break;
            }
            let (kind, flags, id) = (self.read[3], self.read[4], u32_at(&self.read[5..9]) & 0x7fff_ffff);
            self.read.advance(9);
            let payload = self.read.split_to(len).freeze();
            if let Err(err) = self.frame(&mut shared, kind, flags, id, payload) {
                return Poll::Ready(Err(self.fail(&mut shared, err)));
            }
        }
        Poll::Ready(Ok(()))
    }

    /// A connection error: GOAWAY queued, the reason as every call's status.
    fn fail(&mut self, shared: &mut Shared, err: Fatal) -> Status {
        frame_head(&mut shared.out, 8, GOAWAY, 0, 0);
        shared.out.extend_from_slice(&0u32.to_be_bytes());
        shared.out.extend_from_slice(&err.reason.to_be_bytes());
        reset_status(
            Reset { reason: err.reason, go_away: true, unprocessed: false },
            &format!("the backend broke HTTP/2 ({})", err.why),
        )
    }

    fn frame(&mut self, shared: &mut Shared, kind: u8, flags: u8, id: u32, payload: Bytes) -> Result<(), Fatal> {
        if let Some((expected, _, _)) = &self.block {
            if kind != CONTINUATION || id != *expected {
                return Err(fatal(PROTOCOL_ERROR, "a header block was interrupted"));
            }
        }
        match kind {
            DATA => self.data(shared, flags, id, payload),
            HEADERS => {
                if id == 0 {
                    return Err(fatal(PROTOCOL_ERROR, "HEADERS on stream 0"));
                }
                let mut fragment = unpad(flags, payload)?;
                if flags & PRIORITY != 0 {
                    if fragment.len() < 5 {
                        return Err(fatal(FRAME_SIZE_ERROR, "HEADERS too short for its priority"));
                    }
                    fragment.advance(5);
                }
                let ends = flags & END_STREAM != 0;
                if flags & END_HEADERS != 0 {
                    self.headers(shared, id, ends, &fragment)
                } else {
                    self.block = Some((id, ends, fragment.to_vec()));
                    Ok(())
                }
            }
            CONTINUATION => {
                let Some((id, ends, mut block)) = self.block.take() else {
                    return Err(fatal(PROTOCOL_ERROR, "CONTINUATION without HEADERS"));
                };
                if block.len() + payload.len() > MAX_HEADER_BLOCK {
                    return Err(fatal(ENHANCE_YOUR_CALM, "a header block over 256 KiB"));
                }
                block.extend_from_slice(&payload);
                if flags & END_HEADERS != 0 {
                    self.headers(shared, id, ends, &block)
                } else {
                    self.block = Some((id, ends, block));
                    Ok(())
                }
            }
            RST_STREAM => {
                if id == 0 {
                    return Err(fatal(PROTOCOL_ERROR, "RST_STREAM on stream 0"));
                }
                if payload.len() != 4 {
                    return Err(fatal(FRAME_SIZE_ERROR, "RST_STREAM of the wrong size"));
                }
                let reason = u32_at(&payload);
                if let Some(stream) = shared.streams.get_mut(&id) {
                    stream.peer_ended = true;
                    let unprocessed = reason == REFUSED_STREAM;
                    stream.fail(reset_status(
                        Reset { reason, go_away: false, unprocessed },
                        "the backend reset the call",
                    ));
                }
                Ok(())
            }
            SETTINGS => self.settings(shared, flags, id, &payload),
            PUSH_PROMISE => Err(fatal(PROTOCOL_ERROR, "PUSH_PROMISE though push is off")),
            PING => {
                if id != 0 || payload.len() != 8 {
                    return Err(fatal(PROTOCOL_ERROR, "a malformed PING"));
                }
                if flags & ACK != 0 {
                    if shared.ping.is_some_and(|sent| sent[..] == payload[..]) {
                        shared.ping = None;
                    }
                } else {
                    frame_head(&mut shared.out, 8, PING, ACK, 0);
                    shared.out.extend_from_slice(&payload);
                }
                Ok(())
            }
            GOAWAY => {
                if id != 0 || payload.len() < 8 {
                    return Err(fatal(PROTOCOL_ERROR, "a malformed GOAWAY"));
                }
                let last = u32_at(&payload[..4]) & 0x7fff_ffff;
                let reason = u32_at(&payload[4..8]);
                let refused = |unprocessed| {
                    reset_status(Reset { reason, go_away: true, unprocessed }, "the backend is closing the connection")
                };
                shared.closing.get_or_insert_with(|| refused(true));
                for (_, stream) in shared.streams.iter_mut().filter(|(&stream, _)| stream > last) {
                    stream.peer_ended = true;
                    stream.fail(refused(true));
                }
                if reason != NO_ERROR {
                    // An error GOAWAY ends the connection: what is left fails.
                    for stream in shared.streams.values_mut() {
                        stream.fail(refused(false));
                    }
                }
                shared.wake_waiting();
                Ok(())
            }
            WINDOW_UPDATE => {
                if payload.len() != 4 {
                    return Err(fatal(FRAME_SIZE_ERROR, "WINDOW_UPDATE of the wrong size"));
                }
                let increment = i64::from(u32_at(&payload) & 0x7fff_ffff);
                if id == 0 {
                    if increment == 0 {
                        return Err(fatal(PROTOCOL_ERROR, "a WINDOW_UPDATE of 0"));
                    }
                    shared.send_window += increment;
                    if shared.send_window > MAX_WINDOW {
                        return Err(fatal(FLOW_CONTROL_ERROR, "the connection window overflowed"));
                    }
                    shared.send_all_data();
                } else if let Some(stream) = shared.streams.get_mut(&id) {
                    stream.send_window += increment;
                    if increment == 0 || stream.send_window > MAX_WINDOW {
                        stream.peer_ended = true;
                        let reset = Reset { reason: FLOW_CONTROL_ERROR, go_away: false, unprocessed: false };
                        stream.fail(reset_status(reset, "the backend broke the stream's flow control"));
                        shared.reset(id, if increment == 0 { PROTOCOL_ERROR } else { FLOW_CONTROL_ERROR });
                    } else {
                        shared.send_data(id);
                    }
                }
                Ok(())
            }
            // PRIORITY, and types this side does not know, are ignored.
            _ => Ok(()),
        }
    }

    fn data(&mut self, shared: &mut Shared, flags: u8, id: u32, payload: Bytes) -> Result<(), Fatal> {
        if id == 0 {
            return Err(fatal(PROTOCOL_ERROR, "DATA on stream 0"));
        }
        // The whole frame counts against the windows, padding included.
        let len = payload.len() as u32;
        self.unacked += len;
        if self.unacked >= CONNECTION_WINDOW / 2 {
            shared.window_update(0, self.unacked);
            self.unacked = 0;
        }
        let data = unpad(flags, payload)?;
        let Some(stream) = shared.streams.get_mut(&id) else { return Ok(()) };
        if stream.done.is_some() {
            stream.peer_ended |= flags & END_STREAM != 0;
            return Ok(());
        }
        if stream.head.is_none() {
            stream.peer_ended = true;
            stream.fail(Status::internal("the backend sent a message before its headers"));
            shared.reset(id, PROTOCOL_ERROR);
            return Ok(());
        }
        let message = &mut stream.message;
        // Messages after the first are not a unary answer: skipped.
        let pushed = stream.messages.push(data, &mut |framed| {
            message.get_or_insert(framed);
        });
        if let Err(status) = pushed {
            stream.peer_ended |= flags & END_STREAM != 0;
            stream.fail(status);
            return Ok(());
        }
        if flags & END_STREAM != 0 {
            stream.peer_ended = true;
            let status = if stream.messages.is_partial() {
                Status::internal("the backend's answer ended inside a message")
            } else {
                Status::unknown("the backend ended the call without a grpc-status")
            };
            stream.fail(status);
            return Ok(());
        }
        stream.unacked += len;
        if stream.unacked >= STREAM_WINDOW / 2 {
            let increment = stream.unacked;
            stream.unacked = 0;
            shared.window_update(id, increment);
        }
        Ok(())
    }

    /// A whole header block: the answer's headers, or its trailers.
    fn headers(&mut self, shared: &mut Shared, id: u32, ends: bool, block: &[u8]) -> Result<(), Fatal> {
        if block.len() > MAX_HEADER_BLOCK {
            return Err(fatal(ENHANCE_YOUR_CALM, "a header block over 256 KiB"));
        }
        let mut fields = HeaderMap::new();
        let mut status = None;
        let mut malformed = false;
        let decoded = self.hpack.decode(block, |field| match field {
            hpack::Field::Header(name, value) => {
                fields.append(name, value);
            }
            hpack::Field::Pseudo(b":status", value) => {
                status = std::str::from_utf8(value).ok().and_then(|s| s.parse::<StatusCode>().ok());
                malformed |= status.is_none();
            }
            hpack::Field::Pseudo(..) | hpack::Field::Invalid => malformed = true,
        });
        if let Err(err) = decoded {
            return Err(fatal(COMPRESSION_ERROR, format!("a header block did not decode: {}", err.0)));
        }
        let Some(stream) = shared.streams.get_mut(&id) else { return Ok(()) };
        stream.peer_ended |= ends;
        if stream.done.is_some() {
            return Ok(());
        }
        if malformed {
            stream.fail(Status::internal("the backend sent a malformed header block"));
            return Ok(());
        }
        match (stream.head.is_some(), status) {
            // Informational answers (1xx) come before the real one.
            (false, Some(status)) if status.is_informational() && !ends => Ok(()),
            (false, Some(status)) => {
                match grpc_status(&fields) {
                    // An OK status in the headers alone: no message, no trailers.
                    Some(Ok(())) => stream.finish(Ok(UnaryReply {
                        headers: MetadataMap::from_headers(fields),
                        message: None,
                        trailers: MetadataMap::new(),
                    })),
                    Some(Err(grpc)) => stream.fail(grpc),
                    None if status != StatusCode::OK => stream.fail(from_http_status(status)),
                    None if ends => {
                        stream.head = Some(fields);
                        stream.fail(Status::unknown("the backend ended the call without a grpc-status"));
                    }
                    None => stream.head = Some(fields),
                }
                Ok(())
            }
            (false, None) => {
                stream.fail(Status::internal("the backend's answer has no :status"));
                Ok(())
            }
            (true, _) if !ends || status.is_some() => {
                stream.fail(Status::internal("the backend sent headers in the middle of its answer"));
                Ok(())
            }
            (true, _) => {
                if stream.messages.is_partial() {
                    stream.fail(Status::internal("the backend's answer ended inside a message"));
                    return Ok(());
                }
                match grpc_status(&fields) {
                    Some(Ok(())) => {
                        let head = stream.head.take().unwrap_or_default();
                        let message = stream.message.take();
                        stream.finish(Ok(UnaryReply {
                            headers: MetadataMap::from_headers(head),
                            message,
                            trailers: MetadataMap::from_headers(fields),
                        }));
                    }
                    Some(Err(grpc)) => stream.fail(grpc),
                    None => stream.fail(Status::unknown("the backend ended the call without a grpc-status")),
                }
                Ok(())
            }
        }
    }

    fn settings(&mut self, shared: &mut Shared, flags: u8, id: u32, payload: &[u8]) -> Result<(), Fatal> {
        if id != 0 {
            return Err(fatal(PROTOCOL_ERROR, "SETTINGS on a stream"));
        }
        if flags & ACK != 0 {
            return if payload.is_empty() {
                Ok(())
            } else {
                Err(fatal(FRAME_SIZE_ERROR, "a SETTINGS ACK with a payload"))
            };
        }
        if payload.len() % 6 != 0 {
            return Err(fatal(FRAME_SIZE_ERROR, "SETTINGS of the wrong size"));
        }
        for setting in payload.chunks_exact(6) {
            let value = u32_at(&setting[2..]);
            match u16::from_be_bytes([setting[0], setting[1]]) {
                // MAX_CONCURRENT_STREAMS
                0x3 => {
                    shared.max_streams = value as usize;
                    shared.wake_waiting();
                }
                // INITIAL_WINDOW_SIZE: open streams' windows move by the change.
                0x4 => {
                    if i64::from(value) > MAX_WINDOW {
                        return Err(fatal(FLOW_CONTROL_ERROR, "an initial window over 2^31-1"));
                    }
                    let delta = i64::from(value) - shared.initial_window;
                    shared.initial_window = i64::from(value);
                    for stream in shared.streams.values_mut() {
                        stream.send_window += delta;
                    }
                    shared.send_all_data();
                }
                // MAX_FRAME_SIZE
                0x5 => {
                    if !(16_384..=16_777_215).contains(&value) {
                        return Err(fatal(PROTOCOL_ERROR, "a max frame size out of range"));
                    }
                    shared.max_frame = value as usize;
                }
                // HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_HEADER_LIST_SIZE and
                // unknown settings change nothing this side does.
                _ => {}
            }
        }
        frame_head(&mut shared.out, 0, SETTINGS, ACK, 0);
        if !shared.settled {
            shared.settled = true;
            if let Some(waker) = shared.handshake.take() {
                waker.wake();
            }
        }
        Ok(())
    }
}

/// The gRPC status in `fields`, if any: OK without building a status
/// (the common case), else the error.
fn grpc_status(fields: &HeaderMap) -> Option<Result<(), Status>> {
    match fields.get(&super::GRPC_STATUS)?.as_bytes() {
        b"0" => Some(Ok(())),
        _ => status_of(fields).map(Err),
    }
}

/// A frame's payload without its padding.
fn unpad(flags: u8, mut payload: Bytes) -> Result<Bytes, Fatal> {
    if flags & PADDED == 0 {
        return Ok(payload);
    }
    let Some(&pad) = payload.first() else { return Err(fatal(FRAME_SIZE_ERROR, "a padded frame without its length")) };
    let pad = usize::from(pad);
    if pad >= payload.len() {
        return Err(fatal(PROTOCOL_ERROR, "padding longer than the frame"));
    }
    payload.advance(1);
    payload.truncate(payload.len() - pad);
    Ok(payload)
}

mod hpack;

#[cfg(test)]
mod tests;
