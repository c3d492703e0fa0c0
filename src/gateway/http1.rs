//! Plain HTTP/1.1 requests, served without hyper.
//!
//! hyper's HTTP/1 server costs a fifth of a small request's instructions
//! (docs/performance.md): its dispatcher, its body channel, a read buffer
//! reallocated for every request. Most requests a gateway sees are plain:
//! HTTP/1.1, a method a route can have, a body of a few kilobytes sent with
//! its length. Those are read here whole, head and body, parsed by httparse
//! as hyper parses them, passed on with a [`RequestBody::Whole`], and
//! answered as hyper answers: the same status line, the headers in the same
//! order, `content-length` or chunked framing, `date`.
//!
//! Anything else hands the connection over to hyper, with the bytes read so
//! far, for the rest of its life ([`Outcome::Handover`]): HTTP/2 (its
//! preface), HTTP/1.0, methods other than GET, POST, PUT, PATCH and DELETE,
//! targets that are not a path, `Transfer-Encoding`, `Connection`,
//! `Upgrade` (WebSockets), `Expect` and `TE` headers, a repeated
//! `Content-Length`, bodies over [`WHOLE_BODY`], more than [`MAX_FIELDS`]
//! header fields, and whatever httparse cannot read (hyper then refuses it,
//! in the envelope: `refusal`). What this module does not take, hyper does
//! as it always did.
//!
//! A body not all here when its head is goes to the handler as it arrives
//! ([`Feed`]), within the route's body timeout as under hyper. As under
//! hyper, a client that closes its side while its request is in flight, or
//! while a streamed answer waits for its next message, ends the request
//! (its upstream call is cancelled).

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRAILER, TRANSFER_ENCODING};
use http::response::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tower::Service;

use crate::http::body::Feed;
use crate::http::RequestBody;

/// Bodies up to this size are read whole here; larger ones stream through
/// hyper.
pub const WHOLE_BODY: usize = 64 << 10;
/// Header fields a request may have here; hyper takes up to 100.
pub const MAX_FIELDS: usize = 64;
/// The read buffer's size; a larger request grows it.
const READ_BUFFER: usize = 8 << 10;
/// Answer bytes gathered before they are written, when a body has more
/// ready.
const WRITE_AT: usize = 64 << 10;
/// Data up to this size is copied behind the head (one write); larger data
/// is written from where it is.
const COPY_UP_TO: usize = 16 << 10;

/// What the connection's watcher and this loop tell each other.
#[derive(Debug, Default)]
pub struct Flags {
    /// Close once the request in flight is answered: idle, or shutting
    /// down.
    closing: AtomicBool,
    /// Nothing of a next request has been read.
    between: AtomicBool,
}

impl Flags {
    pub fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Closing, with no request under way: the connection may go now.
    pub fn may_go(&self) -> bool {
        self.closing() && self.between.load(Ordering::Relaxed)
    }
}

/// How serving here ended.
#[derive(Debug)]
pub enum Outcome<I> {
    /// The connection is done: either side closed it, or it broke.
    Closed(io::Result<()>),
    /// hyper serves the connection from here on; `read` holds what was
    /// read of its next request.
    Handover { io: I, read: BytesMut },
}

/// Serves plain requests on `io` until the connection ends or a request
/// is not plain. `max_head`: the longest head hyper would read.
pub async fn serve<I, S, B>(mut io: I, mut service: S, flags: &Flags, max_head: usize) -> Outcome<I>
where
    I: AsyncRead + AsyncWrite + Unpin,
    S: Service<Request<RequestBody>, Response = Response<B>, Error = Infallible>,
    B: Body,
{
    let mut read = BytesMut::with_capacity(READ_BUFFER);
    let mut out = Vec::with_capacity(READ_BUFFER);
    let mut head = Head::default();
    loop {
        flags.between.store(read.is_empty(), Ordering::Relaxed);
        // What of `read` has been looked at for the blank line ending a
        // head: a head sent a byte at a time is not parsed again for every
        // byte (hyper's `is_complete_fast` does the same).
        let mut scanned = 0;
        loop {
            if read.len() > max_head || blank_line_from(&read, scanned) {
                match parse(&read, max_head, &mut head) {
                    Parsed::Request => break,
                    Parsed::Partial => {}
                    Parsed::Hyper => return Outcome::Handover { io, read },
                }
            }
            scanned = read.len();
            if read.capacity() - read.len() < READ_BUFFER / 4 {
                read.reserve(READ_BUFFER);
            }
            match io.read_buf(&mut read).await {
                Ok(0) if read.is_empty() => return Outcome::Closed(Ok(())),
                // Cut off mid-head: hyper says what it makes of it.
                Ok(0) => return Outcome::Handover { io, read },
                Ok(_) => flags.between.store(false, Ordering::Relaxed),
                Err(err) => return Outcome::Closed(Err(err)),
            }
        }
        let head_bytes = read.split_to(head.len).freeze();
        let Some(request) = head.request(&head_bytes) else {
            // A target or field that `http` refuses though httparse read
            // it: hyper answers it.
            let mut again = BytesMut::with_capacity(head_bytes.len() + read.len());
            again.extend_from_slice(&head_bytes);
            again.extend_from_slice(&read);
            return Outcome::Handover { io, read: again };
        };
        drop(head_bytes);
        // The body whole, or what is here of it and the rest fed as it
        // comes (the handler reads it within its own timeout). A client
        // that writes the head and the body apart (Python's http.client
        // does) has often sent the rest by now: what the socket already
        // holds is taken first.
        if read.len() < head.body {
            if let Err(err) = read_ready(&mut io, &mut read, head.body).await {
                return Outcome::Closed(Err(err));
            }
        }
        let arrived = read.len().min(head.body);
        let feed = (arrived < head.body).then(|| Feed::new(&read.split_to(arrived), head.body - arrived));
        let request = request.map(|()| match &feed {
            None => RequestBody::whole(read.split_to(head.body).freeze()),
            Some(feed) => RequestBody::Fed(feed.clone()),
        });

        if poll_fn(|cx| service.poll_ready(cx)).await.is_err() {
            return Outcome::Closed(Ok(()));
        }
        let mut answering = pin!(service.call(request));
        let response = poll_fn(|cx| loop {
            if let Poll::Ready(Ok(response)) = answering.as_mut().poll(cx) {
                return Poll::Ready(Some(response));
            }
            // Meanwhile: the rest of the body, and a client that goes away
            // ends the request.
            match &feed {
                Some(feed) if feed.left() > 0 => match fed(&mut io, &mut read, feed, cx) {
                    Poll::Ready(()) => continue,
                    Poll::Pending => return Poll::Pending,
                },
                _ => {
                    return match gone(&mut io, &mut read, cx) {
                        true => Poll::Ready(None),
                        false => Poll::Pending,
                    }
                }
            }
        })
        .await;
        let Some(response) = response else {
            return Outcome::Closed(Ok(()));
        };
        // Answered before its body was all here (a refusal): what is still
        // coming is not a next request.
        let unread = feed.is_some_and(|feed| !feed.complete());

        let (parts, body) = response.into_parts();
        out.clear();
        let length = body_length(&parts, &body);
        let close = encode_head(&mut out, &parts, length);
        drop(parts);
        match write_body(&mut io, &mut out, body, length, &mut read).await {
            Ok(true) => {}
            Ok(false) => return Outcome::Closed(Ok(())),
            Err(err) => return Outcome::Closed(Err(err)),
        }
        if close || unread || flags.closing() {
            return Outcome::Closed(io.shutdown().await);
        }
    }
}

/// A request head httparse read whole, as offsets into the bytes read.
struct Head {
    /// The head's length, blank line included.
    len: usize,
    /// The body's length (`Content-Length`).
    body: usize,
    method: Method,
    target: (usize, usize),
    fields: [(usize, usize, usize, usize); MAX_FIELDS],
    count: usize,
}

impl Default for Head {
    fn default() -> Self {
        Self { len: 0, body: 0, method: Method::GET, target: (0, 0), fields: [(0, 0, 0, 0); MAX_FIELDS], count: 0 }
    }
}

enum Parsed {
    /// A plain request's head, in `head`.
    Request,
    Partial,
    /// Not a plain request: hyper's.
    Hyper,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Fields whose presence makes a request hyper's.
const HYPERS: [&str; 5] = ["transfer-encoding", "connection", "upgrade", "expect", "te"];

fn parse(bytes: &[u8], max_head: usize, head: &mut Head) -> Parsed {
    if bytes.is_empty() {
        return Parsed::Partial;
    }
    if bytes.starts_with(&H2_PREFACE[..4]) || H2_PREFACE.starts_with(bytes) {
        return Parsed::Hyper;
    }
    let mut fields = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_FIELDS];
    let mut request = httparse::Request::new(&mut []);
    let len = match request.parse_with_uninit_headers(bytes, &mut fields) {
        Ok(httparse::Status::Complete(len)) if len <= max_head => len,
        Ok(httparse::Status::Partial) if bytes.len() <= max_head => return Parsed::Partial,
        _ => return Parsed::Hyper,
    };
    if request.version != Some(1) {
        return Parsed::Hyper;
    }
    head.method = match request.method {
        Some("GET") => Method::GET,
        Some("POST") => Method::POST,
        Some("PUT") => Method::PUT,
        Some("PATCH") => Method::PATCH,
        Some("DELETE") => Method::DELETE,
        _ => return Parsed::Hyper,
    };
    let Some(path) = request.path.filter(|path| path.starts_with('/')) else {
        return Parsed::Hyper;
    };
    let at = |part: &[u8]| part.as_ptr() as usize - bytes.as_ptr() as usize;
    head.len = len;
    head.body = 0;
    head.target = (at(path.as_bytes()), at(path.as_bytes()) + path.len());
    head.count = request.headers.len();
    let mut length_seen = false;
    for (field, slot) in request.headers.iter().zip(head.fields.iter_mut()) {
        let name = field.name;
        if name.eq_ignore_ascii_case("content-length") {
            match (length_seen, content_length(field.value)) {
                (false, Some(length)) if length <= WHOLE_BODY => head.body = length,
                _ => return Parsed::Hyper,
            }
            length_seen = true;
        } else if HYPERS.iter().any(|hyper| name.eq_ignore_ascii_case(hyper)) {
            return Parsed::Hyper;
        }
        let (name_at, value_at) = (at(name.as_bytes()), at(field.value));
        *slot = (name_at, name_at + name.len(), value_at, value_at + field.value.len());
    }
    Parsed::Request
}

/// Whether `bytes` from about `from` on hold a blank line (the end of a
/// head, with CRLF or bare LF line ends as httparse takes them).
fn blank_line_from(bytes: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(3);
    memchr::memchr_iter(b'\n', &bytes[start..]).any(|at| {
        let rest = &bytes[start + at + 1..];
        rest.starts_with(b"\n") || rest.starts_with(b"\r\n")
    })
}

/// A `Content-Length` value as hyper reads it: digits alone.
fn content_length(value: &[u8]) -> Option<usize> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

impl Head {
    /// The request, its parts slices of `bytes` (no copy); `None` if `http`
    /// refuses the target or a field.
    fn request(&self, bytes: &Bytes) -> Option<Request<()>> {
        let uri = Uri::from_maybe_shared(bytes.slice(self.target.0..self.target.1)).ok()?;
        let mut headers = HeaderMap::with_capacity(self.count);
        for &(name_start, name_end, value_start, value_end) in &self.fields[..self.count] {
            let name = HeaderName::from_bytes(&bytes[name_start..name_end]).ok()?;
            // Checked again (hyper trusts httparse's check): a value `http`
            // refuses hands the request to hyper.
            let value = HeaderValue::from_maybe_shared(bytes.slice(value_start..value_end)).ok()?;
            headers.append(name, value);
        }
        let mut request = Request::new(());
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = headers;
        Some(request)
    }
}

/// Reads what the socket holds now, without waiting, until `read` has
/// `wanted` bytes.
async fn read_ready<I: AsyncRead + Unpin>(io: &mut I, read: &mut BytesMut, wanted: usize) -> io::Result<()> {
    poll_fn(|cx| {
        while read.len() < wanted {
            match poll_chunk(io, cx, |bytes| read.extend_from_slice(bytes)) {
                Poll::Ready(Ok(0)) | Poll::Pending => break,
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
            }
        }
        // Nothing more yet, or the end: the body is fed, and what the
        // socket says next is seen then.
        Poll::Ready(Ok(()))
    })
    .await
}

/// Whether the client has gone: it closed its side, or broke the
/// connection, while nothing of a next request was waiting (bytes of one
/// are kept, and then hyper stops looking too).
fn gone<I: AsyncRead + Unpin>(io: &mut I, read: &mut BytesMut, cx: &mut Context<'_>) -> bool {
    if !read.is_empty() {
        return false;
    }
    match poll_chunk(io, cx, |bytes| read.extend_from_slice(bytes)) {
        Poll::Pending | Poll::Ready(Ok(1..)) => false,
        Poll::Ready(Ok(0) | Err(_)) => true,
    }
}

/// Reads the next bytes of `feed`'s body (and keeps what follows it in
/// `read`); ready when some arrived or the connection ended.
fn fed<I: AsyncRead + Unpin>(io: &mut I, read: &mut BytesMut, feed: &Feed, cx: &mut Context<'_>) -> Poll<()> {
    let taking = |bytes: &[u8]| {
        let taken = feed.push(bytes);
        read.extend_from_slice(&bytes[taken..]);
    };
    match poll_chunk(io, cx, taking) {
        Poll::Pending => Poll::Pending,
        Poll::Ready(Ok(1..)) => Poll::Ready(()),
        Poll::Ready(Ok(0) | Err(_)) => {
            feed.break_off();
            Poll::Ready(())
        }
    }
}

/// One read from the socket, its bytes handed to `take`; `Ok(0)` at the
/// end of the stream. The buffer is not zeroed: `ReadBuf` tracks what the
/// read filled.
fn poll_chunk<I: AsyncRead + Unpin>(
    io: &mut I,
    cx: &mut Context<'_>,
    take: impl FnOnce(&[u8]),
) -> Poll<io::Result<usize>> {
    let mut chunk = [MaybeUninit::<u8>::uninit(); 8192];
    let mut buf = ReadBuf::uninit(&mut chunk);
    match Pin::new(io).poll_read(cx, &mut buf) {
        Poll::Ready(Ok(())) => {
            take(buf.filled());
            Poll::Ready(Ok(buf.filled().len()))
        }
        Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
        Poll::Pending => Poll::Pending,
    }
}

/// How the answer's body is framed, as hyper frames it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Length {
    /// None at all (204, 304): no `content-length`, nothing written.
    None,
    Known(u64),
    Chunked,
}

fn body_length<B: Body>(parts: &Parts, body: &B) -> Length {
    if matches!(parts.status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED) || parts.status.is_informational() {
        return Length::None;
    }
    if body.is_end_stream() {
        return Length::Known(0);
    }
    match body.size_hint().exact() {
        Some(length) => Length::Known(length),
        None => Length::Chunked,
    }
}

/// Writes the status line and headers into `out`; whether the connection
/// closes after this answer.
fn encode_head(out: &mut Vec<u8>, parts: &Parts, length: Length) -> bool {
    if parts.status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(parts.status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(parts.status.canonical_reason().unwrap_or("<none>").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let mut close = false;
    let mut wrote_date = false;
    for (name, value) in &parts.headers {
        // The framing is this module's to write.
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING || name == TRAILER {
            continue;
        }
        if name == CONNECTION {
            close |= has_close(value);
        }
        wrote_date |= name == DATE;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match length {
        Length::None => {}
        Length::Known(length) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Length::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if !wrote_date {
        out.extend_from_slice(b"date: ");
        date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    close
}

fn has_close(value: &HeaderValue) -> bool {
    value.to_str().is_ok_and(|value| value.split(',').any(|token| token.trim().eq_ignore_ascii_case("close")))
}

thread_local! {
    /// `date` as last written on this thread, and its second.
    static DATE_NOW: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
}

/// Now as an IMF-fixdate, made once a second per thread.
fn date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
    DATE_NOW.with_borrow_mut(|(cached, text)| {
        if *cached != second {
            *text = httpdate::fmt_http_date(now);
            *cached = second;
        }
        out.extend_from_slice(text.as_bytes());
    });
}

/// What writing a body waits for next.
enum Step<D> {
    Data(D),
    /// The body has nothing more yet: write what is gathered.
    Flush,
    End,
    /// The body broke, or the client went away: the connection ends.
    Abort,
}

/// Writes `out` (the head) and the body after it; `Ok(false)` if the
/// connection must end without the body complete (the body broke, or the
/// client went away).
async fn write_body<I, B>(
    io: &mut I,
    out: &mut Vec<u8>,
    body: B,
    length: Length,
    read: &mut BytesMut,
) -> io::Result<bool>
where
    I: AsyncRead + AsyncWrite + Unpin,
    B: Body,
{
    if length == Length::None {
        io.write_all(out).await?;
        return Ok(true);
    }
    let mut body = pin!(body);
    loop {
        let step = poll_fn(|cx| match body.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(match frame.into_data() {
                Ok(data) => Step::Data(data),
                // Trailers: hyper sends none to a client that did not ask
                // (`TE: trailers` goes to hyper).
                Err(_) => Step::Flush,
            }),
            Poll::Ready(Some(Err(_))) => Poll::Ready(Step::Abort),
            Poll::Ready(None) => Poll::Ready(Step::End),
            Poll::Pending if !out.is_empty() => Poll::Ready(Step::Flush),
            Poll::Pending => match gone(io, read, cx) {
                true => Poll::Ready(Step::Abort),
                false => Poll::Pending,
            },
        })
        .await;
        match step {
            Step::Data(mut data) => {
                let size = data.remaining();
                if size == 0 {
                    continue;
                }
                if length == Length::Chunked {
                    chunk_size(out, size);
                }
                if size >= COPY_UP_TO {
                    // Large data goes out from where it is, behind what
                    // is gathered.
                    write_both(io, out, &mut data).await?;
                    out.clear();
                    if length == Length::Chunked {
                        out.extend_from_slice(b"\r\n");
                    }
                    continue;
                }
                while data.has_remaining() {
                    let chunk = data.chunk();
                    out.extend_from_slice(chunk);
                    let advanced = chunk.len();
                    data.advance(advanced);
                }
                if length == Length::Chunked {
                    out.extend_from_slice(b"\r\n");
                }
                if out.len() >= WRITE_AT {
                    io.write_all(out).await?;
                    out.clear();
                }
            }
            Step::Flush => {
                if !out.is_empty() {
                    io.write_all(out).await?;
                    out.clear();
                }
            }
            Step::End => {
                if length == Length::Chunked {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                io.write_all(out).await?;
                out.clear();
                return Ok(true);
            }
            Step::Abort => {
                if !out.is_empty() {
                    let _ = io.write_all(out).await;
                    out.clear();
                }
                return Ok(false);
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A socket whose first bytes were already read: they are read again
    /// first.
    pub struct Replay<I> {
        read: Bytes,
        #[pin]
        io: I,
    }
}

impl<I> Replay<I> {
    pub fn new(read: Bytes, io: I) -> Self {
        Self { read, io }
    }
}

impl<I: AsyncRead> AsyncRead for Replay<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        if this.read.is_empty() {
            return this.io.poll_read(cx, buf);
        }
        let take = this.read.len().min(buf.remaining());
        buf.put_slice(&this.read.split_to(take));
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite> AsyncWrite for Replay<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Writes `head`, then all of `data`, in as few writes as the socket takes.
async fn write_both<I: AsyncWrite + Unpin, D: Buf>(io: &mut I, head: &[u8], data: &mut D) -> io::Result<()> {
    let mut head = head;
    while !head.is_empty() || data.has_remaining() {
        let slices = [IoSlice::new(head), IoSlice::new(data.chunk())];
        let written = io.write_vectored(&slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_head = written.min(head.len());
        head = &head[from_head..];
        data.advance(written - from_head);
    }
    Ok(())
}

/// A chunk's size line, in upper-case hex as hyper writes it.
fn chunk_size(out: &mut Vec<u8>, size: usize) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut rest = size;
    loop {
        at -= 1;
        digits[at] = DIGITS[rest % 16];
        rest /= 16;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests;
