//! hyper's own refusals, answered in the envelope (DESIGN §5, §10).
//!
//! A request hyper's HTTP/1 parser cannot read (a bad method token, header
//! line or version, an invalid target, a head larger than its buffer, more
//! than 100 header fields, a target over 64 KiB) never reaches a service:
//! hyper answers it by itself and closes. With hyper 1.12 the answer is
//! exactly, byte for byte:
//!
//! ```text
//! HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Mon, 07 Dec 2026 14:53:03 GMT\r\n\r\n
//! ```
//!
//! (`431 Request Header Fields Too Large` for a head over its buffer or too
//! many fields, `414 URI Too Long` for a target over 64 KiB), whatever the
//! request's version. hyper has no hook for it, so [`Refusals`] wraps the
//! socket and rewrites that answer on its way out: the same status and date,
//! `content-type: application/json`, and the `google.rpc.Status` body the
//! respond layer would render for it.
//!
//! What is recognized must never be one of the gateway's own answers, and
//! looking must cost other writes next to nothing:
//! - only on an HTTP/1 connection: one whose first bytes are the HTTP/2
//!   preface passes through untouched;
//! - only a write that is that head whole, from its first byte to its last
//!   (hyper writes it into its empty output buffer and then closes), so a
//!   response body can only look like one if a short write happened to end
//!   right before it;
//! - only the exact head: one of those three status lines, then
//!   `connection: close`, `content-length: 0` and `date`, nothing else.
//!   Every answer of the gateway carries a `content-type`.
//!
//! The admin listener's sockets are wrapped too (same accept loop): the
//! same refusals get the same answer there.
//!
//! Every other write costs a length check and at most a four-byte
//! comparison. hyper's answer to a request pipelined behind a response it
//! has not yet flushed (the client not reading) shares a write with that
//! response's tail, and goes out as hyper wrote it.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http::StatusCode;
use prost_reflect::DescriptorPool;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::Code;

use crate::error::{Fault, GatewayError};
use crate::http::respond::MAX_TARGET;
use crate::transcode::status::render_error;
use crate::transcode::JsonSettings;

const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An IMF-fixdate, as hyper writes `date`: `Mon, 07 Dec 2026 14:53:03 GMT`.
const DATE_LEN: usize = 29;

/// Longer than any head hyper refuses with; longer writes are not looked at.
const LONGEST_HEAD: usize = 160;

/// One answer hyper gives by itself, and what it means.
struct Refusal {
    status_line: &'static [u8],
    status: StatusCode,
    code: Code,
}

const REFUSALS: [Refusal; 3] = [
    Refusal {
        status_line: b"HTTP/1.1 400 Bad Request\r\n",
        status: StatusCode::BAD_REQUEST,
        code: Code::InvalidArgument,
    },
    Refusal {
        status_line: b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
        status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        code: Code::ResourceExhausted,
    },
    Refusal {
        status_line: b"HTTP/1.1 414 URI Too Long\r\n",
        status: StatusCode::URI_TOO_LONG,
        code: Code::ResourceExhausted,
    },
];

impl Refusal {
    /// As precise as hyper's status lets it be: hyper keeps which part of
    /// the request it could not parse to itself.
    fn message(&self) -> String {
        match self.status {
            StatusCode::BAD_REQUEST => {
                "malformed HTTP/1 request: its request line (method, target, version) or a header field is not valid \
                 HTTP/1.1"
                    .into()
            }
            StatusCode::URI_TOO_LONG => {
                format!("the request target is over 65534 bytes; the limit is {MAX_TARGET}")
            }
            _ => "the request's head (request line and header fields) is far larger than limits.max_header_bytes, \
                  or has more than 100 header fields"
                .into(),
        }
    }

    /// The whole answer: status line, headers (hyper's `date` kept) and
    /// the envelope.
    fn answer(&self, date: &[u8]) -> Bytes {
        let err = GatewayError::new(self.code, Fault::Client, self.message()).with_status(self.status);
        // No details to resolve: an empty pool renders the same envelope.
        let body = render_error(&err, &DescriptorPool::new(), &JsonSettings::default());
        let mut answer = Vec::with_capacity(LONGEST_HEAD + body.len());
        answer.extend_from_slice(self.status_line);
        answer.extend_from_slice(b"content-type: application/json\r\ncontent-length: ");
        answer.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        answer.extend_from_slice(b"\r\nconnection: close\r\ndate: ");
        answer.extend_from_slice(date);
        answer.extend_from_slice(b"\r\n\r\n");
        answer.extend_from_slice(&body);
        Bytes::from(answer)
    }
}

/// The answer that replaces `head`, if `head` is exactly one of hyper's own
/// refusals.
fn replacement(head: &[u8]) -> Option<Bytes> {
    if head.len() > LONGEST_HEAD || !head.ends_with(b"\r\n\r\n") {
        return None;
    }
    let (refusal, rest) =
        REFUSALS.iter().find_map(|refusal| Some((refusal, head.strip_prefix(refusal.status_line)?)))?;
    let date = rest.strip_prefix(b"connection: close\r\ncontent-length: 0\r\ndate: ")?.strip_suffix(b"\r\n\r\n")?;
    let fixdate =
        date.len() == DATE_LEN && date.ends_with(b" GMT") && date.iter().all(|&b| b.is_ascii_graphic() || b == b' ');
    fixdate.then(|| refusal.answer(date))
}

/// What the connection speaks, as far as its first bytes tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// Nothing read yet, or only the start of the HTTP/2 preface.
    Unknown { matched: usize },
    /// HTTP/1: hyper's refusals are looked for.
    Http1,
    /// HTTP/2, or a refusal already rewritten: nothing more to look for.
    Done,
}

pin_project_lite::pin_project! {
    /// The socket of one connection, with hyper's bare HTTP/1 refusal
    /// rewritten into the envelope on its way out.
    pub struct Refusals<T> {
        #[pin]
        inner: T,
        protocol: Protocol,
        // The rewritten answer, still to be written; written before
        // anything else, and by every flush or shutdown.
        pending: Bytes,
    }
}

impl<T> Refusals<T> {
    pub fn new(inner: T) -> Self {
        Self { inner, protocol: Protocol::Unknown { matched: 0 }, pending: Bytes::new() }
    }
}

impl Protocol {
    /// `read` arrived next.
    fn after(self, read: &[u8]) -> Self {
        let Protocol::Unknown { matched } = self else { return self };
        let take = read.len().min(H2_PREFACE.len() - matched);
        if read[..take] != H2_PREFACE[matched..matched + take] {
            Protocol::Http1
        } else if matched + take == H2_PREFACE.len() {
            Protocol::Done
        } else {
            Protocol::Unknown { matched: matched + take }
        }
    }
}

impl<T: AsyncRead> AsyncRead for Refusals<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if matches!(this.protocol, Protocol::Unknown { .. }) && buf.filled().len() > before {
            *this.protocol = this.protocol.after(&buf.filled()[before..]);
        }
        polled
    }
}

/// Writes what is left of `pending`.
fn write_pending<T: AsyncWrite>(
    mut inner: Pin<&mut T>,
    pending: &mut Bytes,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while !pending.is_empty() {
        match ready!(inner.as_mut().poll_write(cx, pending))? {
            0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            n => pending.advance(n),
        }
    }
    Poll::Ready(Ok(()))
}

impl<T: AsyncWrite> AsyncWrite for Refusals<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut this = self.project();
        ready!(write_pending(this.inner.as_mut(), this.pending, cx))?;
        if *this.protocol == Protocol::Http1 {
            if let Some(answer) = replacement(buf) {
                *this.protocol = Protocol::Done;
                *this.pending = answer;
                // hyper's bytes are taken whole; what replaces them is this
                // wrapper's to deliver, by hyper's next flush at the latest.
                if let Poll::Ready(Err(err)) = write_pending(this.inner, this.pending, cx) {
                    return Poll::Ready(Err(err));
                }
                return Poll::Ready(Ok(buf.len()));
            }
        }
        this.inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // hyper writes a head into its own buffer, one slice, with nothing
        // queued behind it when it is a refusal: a single slice is looked at
        // as a plain write.
        let mut filled = bufs.iter().filter(|buf| !buf.is_empty());
        if let (Some(only), None) = (filled.next(), filled.next()) {
            return self.poll_write(cx, only);
        }
        let mut this = self.project();
        ready!(write_pending(this.inner.as_mut(), this.pending, cx))?;
        this.inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        ready!(write_pending(this.inner.as_mut(), this.pending, cx))?;
        this.inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        ready!(write_pending(this.inner.as_mut(), this.pending, cx))?;
        this.inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    // Tests may panic on unexpected input: that is how they fail.
    #![allow(clippy::unwrap_used)]

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    const DATE: &str = "Mon, 07 Dec 2026 14:53:03 GMT";

    /// hyper 1.12's refusal with `status_line`, as it writes it.
    fn hyper_head(status_line: &str) -> Vec<u8> {
        format!("{status_line}\r\nconnection: close\r\ncontent-length: 0\r\ndate: {DATE}\r\n\r\n").into_bytes()
    }

    /// A socket: hands out `incoming` once, then end of file; keeps what
    /// is written, at most `chunk` bytes a write, every other write
    /// refused once with `Pending` when `stall`.
    struct Wire {
        incoming: Vec<u8>,
        written: Vec<u8>,
        chunk: usize,
        stall: bool,
        stalled: bool,
        vectored_writes: usize,
    }

    impl Wire {
        fn new(incoming: &[u8]) -> Self {
            Self {
                incoming: incoming.to_vec(),
                written: Vec::new(),
                chunk: usize::MAX,
                stall: false,
                stalled: false,
                vectored_writes: 0,
            }
        }

        fn accept(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
            if self.stall && !self.stalled {
                self.stalled = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.stalled = false;
            let n = bytes.len().min(self.chunk);
            self.written.extend_from_slice(&bytes[..n]);
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncRead for Wire {
        fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            let incoming = std::mem::take(&mut self.incoming);
            buf.put_slice(&incoming);
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Wire {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.accept(cx, buf)
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.vectored_writes += 1;
            let all: Vec<u8> = bufs.iter().flat_map(|buf| buf.iter().copied()).collect();
            self.accept(cx, &all)
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// What reaches the wire of a connection that received `request`, then
    /// wrote `writes` (each whole), flushed and shut down.
    async fn wire_after(request: &[u8], writes: &[&[u8]], configure: impl FnOnce(&mut Wire)) -> Vec<u8> {
        let mut wire = Wire::new(request);
        configure(&mut wire);
        let mut io = Refusals::new(wire);
        let mut read = vec![0; 1024];
        let n = io.read(&mut read).await.unwrap();
        assert_eq!(n, request.len());
        for write in writes {
            io.write_all(write).await.unwrap();
        }
        io.flush().await.unwrap();
        io.shutdown().await.unwrap();
        io.inner.written
    }

    /// The status line, the header lines and the envelope of an answer,
    /// checked for `content-type` and a `content-length` that fits.
    fn envelope(answer: &[u8]) -> (String, Vec<String>, serde_json::Value) {
        let text = std::str::from_utf8(answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n").map(str::to_owned);
        let status = lines.next().unwrap();
        let headers: Vec<String> = lines.collect();
        assert!(headers.contains(&"content-type: application/json".to_owned()), "{text}");
        assert!(headers.contains(&format!("content-length: {}", body.len())), "{text}");
        assert!(headers.contains(&"connection: close".to_owned()), "{text}");
        assert!(headers.contains(&format!("date: {DATE}")), "{text}");
        (status, headers, serde_json::from_str(body).unwrap())
    }

    #[tokio::test]
    async fn each_of_hypers_refusals_becomes_the_envelope() {
        for (status_line, code, words) in [
            ("HTTP/1.1 400 Bad Request", 3, "malformed"),
            ("HTTP/1.1 431 Request Header Fields Too Large", 8, "max_header_bytes"),
            ("HTTP/1.1 414 URI Too Long", 8, "request target"),
        ] {
            let answer = wire_after(b"G@T / HTTP/1.1\r\n\r\n", &[&hyper_head(status_line)], |_| {}).await;
            let (status, headers, json) = envelope(&answer);
            assert_eq!(status, status_line);
            assert_eq!(headers.len(), 4, "{headers:?}");
            assert_eq!(json["code"], code, "{json}");
            assert!(json["message"].as_str().unwrap().contains(words), "{json}");
            assert_eq!(json["details"], serde_json::json!([]));
        }
    }

    #[tokio::test]
    async fn the_envelope_is_the_respond_layers() {
        let answer = wire_after(b"GET / HTTP/9.9\r\n\r\n", &[&hyper_head("HTTP/1.1 400 Bad Request")], |_| {}).await;
        let err = GatewayError::new(Code::InvalidArgument, Fault::Client, REFUSALS[0].message());
        let rendered = render_error(&err, &DescriptorPool::new(), &JsonSettings::default());
        assert!(answer.ends_with(&rendered), "{}", String::from_utf8_lossy(&answer));
    }

    #[tokio::test]
    async fn short_and_stalled_writes_deliver_the_whole_answer() {
        let head = hyper_head("HTTP/1.1 400 Bad Request");
        let whole = wire_after(b"x\r\n\r\n", &[&head], |_| {}).await;
        for chunk in [1, 7, 64] {
            let answer = wire_after(b"x\r\n\r\n", &[&head], |wire| {
                wire.chunk = chunk;
                wire.stall = true;
            })
            .await;
            assert_eq!(answer, whole, "chunk {chunk}");
        }
    }

    #[tokio::test]
    async fn a_pending_answer_is_finished_by_flush_or_shutdown() {
        let head = hyper_head("HTTP/1.1 431 Request Header Fields Too Large");
        let mut wire = Wire::new(b"GET /");
        wire.stall = true;
        let mut io = Refusals::new(wire);
        assert_eq!(io.read(&mut [0; 16]).await.unwrap(), 5);
        // The head is taken whole at once though the socket is not ready;
        // the answer waits.
        assert_eq!(io.write(&head).await.unwrap(), head.len());
        assert!(io.inner.written.is_empty() && !io.pending.is_empty());
        io.shutdown().await.unwrap();
        assert!(io.pending.is_empty());
        assert_eq!(envelope(&io.inner.written).2["code"], 8);
    }

    #[tokio::test]
    async fn the_gateways_own_answers_pass_untouched() {
        let date = format!("date: {DATE}\r\n\r\n");
        let own: Vec<Vec<u8>> = vec![
            // An error answer of the respond layer, head and body apart.
            format!("HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 42\r\n{date}")
                .into_bytes(),
            // Its answer to HEAD: no body, a content type all the same.
            format!("HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n{date}")
                .into_bytes(),
            format!("HTTP/1.1 204 No Content\r\n{date}").into_bytes(),
            format!("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n{date}").into_bytes(),
            format!("HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n{date}").into_bytes(),
            // An empty answer that keeps the connection (an admin route's, say).
            format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n{date}").into_bytes(),
            format!("HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\nx-a: 1\r\n{date}")
                .into_bytes(),
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: yesterday\r\n\r\n".to_vec(),
            // A body that ends with what looks like a refusal.
            [b"{}".as_slice(), &hyper_head("HTTP/1.1 400 Bad Request")].concat(),
        ];
        for write in own {
            let wire = wire_after(b"GET / HTTP/1.1\r\n\r\n", &[&write], |_| {}).await;
            assert_eq!(wire, write, "{}", String::from_utf8_lossy(&write));
        }
    }

    #[tokio::test]
    async fn http2_and_unread_connections_pass_untouched() {
        let head = hyper_head("HTTP/1.1 400 Bad Request");
        let preface = [H2_PREFACE.as_slice(), b"\0\0\0\x04\0\0\0\0\0"].concat();
        assert_eq!(wire_after(&preface, &[&head], |_| {}).await, head);
        // The preface in pieces.
        let mut io = Refusals::new(Wire::new(b""));
        for piece in H2_PREFACE.chunks(5) {
            io.protocol = io.protocol.after(piece);
        }
        assert_eq!(io.protocol, Protocol::Done);
        // Nothing read.
        let mut io = Refusals::new(Wire::new(b""));
        io.write_all(&head).await.unwrap();
        assert_eq!(io.inner.written, head);
        // HTTP/1 known from its first differing byte.
        assert_eq!(Protocol::Unknown { matched: 0 }.after(b"PRI * HTTP/1.1"), Protocol::Http1);
        assert_eq!(Protocol::Unknown { matched: 0 }.after(b"PRI"), Protocol::Unknown { matched: 3 });
    }

    #[tokio::test]
    async fn vectored_writes_are_rewritten_alone_and_passed_through_otherwise() {
        let head = hyper_head("HTTP/1.1 400 Bad Request");
        let mut io = Refusals::new(Wire::new(b"GET / HTTP/1.1\r\n"));
        assert_eq!(io.read(&mut [0; 64]).await.unwrap(), 16);
        let response = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n";
        let slices = [io::IoSlice::new(response), io::IoSlice::new(b"ok")];
        assert_eq!(io.write_vectored(&slices).await.unwrap(), response.len() + 2);
        assert_eq!(io.inner.vectored_writes, 1);
        let slices = [io::IoSlice::new(&[]), io::IoSlice::new(&head), io::IoSlice::new(&[])];
        assert_eq!(io.write_vectored(&slices).await.unwrap(), head.len());
        io.flush().await.unwrap();
        let written = io.inner.written.split_off(response.len() + 2);
        assert_eq!(envelope(&written).2["code"], 3);
        assert!(io.is_write_vectored());
    }
}
