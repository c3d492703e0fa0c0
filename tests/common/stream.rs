//! Streamed exchanges with the gateway (DESIGN §6): a response body read a
//! piece at a time — a chunk, a line, an SSE event — while the stream is
//! still going, and a request body sent a piece at a time. Real clients
//! over loopback, each read bounded by [`WAIT`] (a test that would wait
//! longer panics, saying for what):
//!
//! - HTTP/1.1 with reqwest ([`TestGateway::open`]), the usual client;
//! - HTTP/1.1 by hand ([`RawHttp1`]): a chunked request body sent as the
//!   test decides, and a connection the test can drop at a chosen moment;
//! - HTTP/2 with the h2 crate ([`H2Client`]): flow control in the test's
//!   hands (a small window, capacity released only as the test reads),
//!   trailers, and RST_STREAM.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::gateway::TestGateway;

/// The longest any one read or write of a streamed exchange may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// `future`, or a panic naming `what` after [`WAIT`].
pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future).await.unwrap_or_else(|_| panic!("not within {WAIT:?}: {what}"))
}

impl TestGateway {
    /// `GET path_and_query` over HTTP/1.1 (reqwest), answered as far as the
    /// response headers: the body is read with the [`Streamed`] methods.
    pub async fn open(&self, path_and_query: &str, headers: &[(&str, &str)]) -> Streamed {
        self.open_request(Method::GET, path_and_query, headers, None).await
    }

    /// Any request over HTTP/1.1 (reqwest), answered as far as the response
    /// headers.
    pub async fn open_request(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Streamed {
        let url = self.url(path_and_query);
        let mut builder = self.client.request(method.clone(), &url);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        if let Some(body) = body {
            builder = builder.body(body);
        }
        let response = within(&format!("response headers of {method} {url}"), builder.send())
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        Streamed::new(response.status(), response.headers().clone(), Source::Reqwest(response))
    }
}

/// Where a [`Streamed`] body comes from.
enum Source {
    Reqwest(reqwest::Response),
    /// The request side is kept so that the test can reset the stream, and
    /// so that dropping it early does not.
    H2 {
        body: h2::RecvStream,
        request: Option<h2::SendStream<Bytes>>,
    },
    Raw(RawBody),
}

/// A response whose headers have arrived and whose body is read as the
/// test asks for it.
pub struct Streamed {
    pub status: StatusCode,
    pub headers: HeaderMap,
    source: Source,
    /// Read from the transport, not yet handed out.
    buf: BytesMut,
    ended: bool,
}

impl std::fmt::Debug for Streamed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streamed").field("status", &self.status).field("headers", &self.headers).finish()
    }
}

impl Streamed {
    fn new(status: StatusCode, headers: HeaderMap, source: Source) -> Streamed {
        Streamed { status, headers, source, buf: BytesMut::new(), ended: false }
    }

    /// The value of a header as text, when present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The content type, `""` when absent.
    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or_default()
    }

    /// The next piece of the body as the transport delivered it; `None` at
    /// its end. Panics if the body breaks off.
    pub async fn chunk(&mut self) -> Option<Bytes> {
        if !self.buf.is_empty() {
            return Some(self.buf.split().freeze());
        }
        self.read().await.unwrap_or_else(|e| panic!("reading the body: {e}"))
    }

    /// The next line without its `\n` (a last line without one included);
    /// `None` at the end of the body.
    pub async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(at) = self.buf.iter().position(|&b| b == b'\n') {
                let line = self.buf.split_to(at + 1);
                return Some(String::from_utf8_lossy(&line[..at]).into_owned());
            }
            match self.read().await {
                Ok(Some(bytes)) => self.buf.extend_from_slice(&bytes),
                Ok(None) if self.buf.is_empty() => return None,
                Ok(None) => return Some(String::from_utf8_lossy(&self.buf.split()).into_owned()),
                Err(e) => panic!("reading a line: {e}; read so far: {:?}", String::from_utf8_lossy(&self.buf)),
            }
        }
    }

    /// The next line as JSON; `None` at the end of the body.
    pub async fn json_line(&mut self) -> Option<serde_json::Value> {
        let line = self.line().await?;
        Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("line is not JSON ({e}): {line:?}")))
    }

    /// The next server-sent event: the lines up to a blank one (a block of
    /// comments alone, the keep-alive, is an event here too); `None` at the
    /// end of the body.
    pub async fn event(&mut self) -> Option<SseEvent> {
        let mut event = SseEvent::default();
        loop {
            let Some(line) = self.line().await else {
                return (!event.lines.is_empty()).then_some(event);
            };
            if line.is_empty() {
                if event.lines.is_empty() {
                    continue;
                }
                return Some(event);
            }
            event.push(line);
        }
    }

    /// The rest of the body. Panics if it breaks off.
    pub async fn rest(&mut self) -> Bytes {
        let (body, error) = self.try_rest().await;
        if let Some(error) = error {
            panic!("the body broke off ({error}) after {:?}", String::from_utf8_lossy(&body));
        }
        body
    }

    /// The rest of the body as text.
    pub async fn rest_text(&mut self) -> String {
        String::from_utf8_lossy(&self.rest().await).into_owned()
    }

    /// The rest of the body as it arrived, and the error that broke it off
    /// (a transfer cut short), if one did.
    pub async fn try_rest(&mut self) -> (Bytes, Option<String>) {
        let mut body = self.buf.split();
        loop {
            match self.read().await {
                Ok(Some(bytes)) => body.extend_from_slice(&bytes),
                Ok(None) => return (body.freeze(), None),
                Err(e) => return (body.freeze(), Some(e)),
            }
        }
    }

    /// The trailers after the body (HTTP/2 only; read the body first).
    pub async fn trailers(&mut self) -> Option<HeaderMap> {
        match &mut self.source {
            Source::H2 { body, .. } => {
                within("trailers", body.trailers()).await.unwrap_or_else(|e| panic!("reading trailers: {e}"))
            }
            _ => panic!("trailers are read over HTTP/2 only"),
        }
    }

    /// HTTP/2: more of the request body, sent while the answer streams
    /// (bidirectional calls); `end` ends the body.
    pub fn send(&mut self, data: &[u8], end: bool) {
        match &mut self.source {
            Source::H2 { request: Some(request), .. } => {
                request.send_data(Bytes::copy_from_slice(data), end).expect("send request data")
            }
            _ => panic!("only an HTTP/2 request body can go on after the answer started"),
        }
    }

    /// HTTP/2: resets the stream (RST_STREAM CANCEL), as a client that
    /// gives up does; the connection stays open.
    pub fn reset(&mut self) {
        match &mut self.source {
            Source::H2 { request: Some(request), .. } => request.send_reset(h2::Reason::CANCEL),
            _ => panic!("only an HTTP/2 stream can be reset"),
        }
    }

    /// The next bytes from the transport, within [`WAIT`].
    async fn read(&mut self) -> Result<Option<Bytes>, String> {
        if self.ended {
            return Ok(None);
        }
        let next = tokio::time::timeout(WAIT, self.source_next())
            .await
            .unwrap_or_else(|_| Err(format!("no more of the body within {WAIT:?}")));
        if !matches!(next, Ok(Some(_))) {
            self.ended = true;
        }
        next
    }

    async fn source_next(&mut self) -> Result<Option<Bytes>, String> {
        loop {
            let next = match &mut self.source {
                Source::Reqwest(response) => response.chunk().await.map_err(|e| format!("{e:?}")),
                Source::H2 { body, .. } => match body.data().await {
                    None => Ok(None),
                    Some(Ok(data)) => {
                        // Read, so the window opens again by as much.
                        let _ = body.flow_control().release_capacity(data.len());
                        Ok(Some(data))
                    }
                    Some(Err(e)) => Err(e.to_string()),
                },
                Source::Raw(raw) => raw.next().await,
            };
            match next {
                Ok(Some(bytes)) if bytes.is_empty() => continue,
                other => return other,
            }
        }
    }
}

/// One server-sent event as received: its fields and every line of it.
#[derive(Debug, Clone, Default)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    /// The `data:` lines, in order.
    pub data: Vec<String>,
    /// Comment lines (`:` first), without the colon.
    pub comments: Vec<String>,
    /// Every line as it came.
    pub lines: Vec<String>,
}

impl SseEvent {
    fn push(&mut self, line: String) {
        if let Some(comment) = line.strip_prefix(':') {
            self.comments.push(comment.to_owned());
        } else {
            let (field, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
            match field {
                "id" => self.id = Some(value),
                "event" => self.event = Some(value),
                "data" => self.data.push(value),
                _ => {}
            }
        }
        self.lines.push(line);
    }

    /// Only comments: a keep-alive.
    pub fn is_comment(&self) -> bool {
        self.lines.iter().all(|line| line.starts_with(':'))
    }

    /// The data as JSON (its lines joined by `\n`, as a browser would).
    pub fn json(&self) -> serde_json::Value {
        let data = self.data.join("\n");
        serde_json::from_str(&data).unwrap_or_else(|e| panic!("event data is not JSON ({e}): {:?}", self.lines))
    }
}

/// An HTTP/1.1 exchange written by hand over its own connection: the
/// request head, then (for a body) chunks as the test sends them.
pub struct RawHttp1 {
    tcp: TcpStream,
}

impl RawHttp1 {
    /// Sends `method path` with `headers` on a fresh connection; with
    /// `body`, announces a chunked body that [`RawHttp1::send`] writes.
    pub async fn open(gw: &TestGateway, method: &str, path: &str, headers: &[(&str, &str)], body: bool) -> RawHttp1 {
        let tcp = within("connect", TcpStream::connect(gw.authority())).await.expect("connect to the gateway");
        Self::open_on(tcp, gw, method, path, headers, body).await
    }

    /// [`RawHttp1::open`] on a connection the test made (small socket
    /// buffers, say).
    pub async fn open_on(
        tcp: TcpStream,
        gw: &TestGateway,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: bool,
    ) -> RawHttp1 {
        tcp.set_nodelay(true).expect("nodelay");
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {}\r\n", gw.authority());
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if body {
            head.push_str("transfer-encoding: chunked\r\n");
        }
        head.push_str("\r\n");
        let mut raw = RawHttp1 { tcp };
        raw.write(head.as_bytes()).await;
        raw
    }

    /// `GET path` on a fresh connection, answered as far as the response
    /// headers. Dropping the [`Streamed`] closes the connection.
    pub async fn get(gw: &TestGateway, path: &str, headers: &[(&str, &str)]) -> Streamed {
        Self::open(gw, "GET", path, headers, false).await.response().await
    }

    /// One chunk of the request body.
    pub async fn send(&mut self, data: &[u8]) {
        assert!(!data.is_empty(), "an empty chunk would end the body");
        let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
        chunk.extend_from_slice(data);
        chunk.extend_from_slice(b"\r\n");
        self.write(&chunk).await;
    }

    /// The end of the request body.
    pub async fn finish(&mut self) {
        self.write(b"0\r\n\r\n").await;
    }

    async fn write(&mut self, bytes: &[u8]) {
        within("writing the request", self.tcp.write_all(bytes)).await.expect("write the request");
    }

    /// The response's head; its body is read with the [`Streamed`] methods.
    pub async fn response(self) -> Streamed {
        let mut raw = RawBody { tcp: self.tcp, buf: BytesMut::new(), framing: Framing::Close, crlf_due: false };
        let head = within("response headers", raw.head()).await.unwrap_or_else(|e| panic!("response head: {e}"));
        let (status, headers) = head;
        raw.framing = if headers
            .get("transfer-encoding")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            Framing::Chunked { left: 0 }
        } else if let Some(length) =
            headers.get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok())
        {
            Framing::Length(length)
        } else {
            Framing::Close
        };
        Streamed::new(status, headers, Source::Raw(raw))
    }
}

/// How an HTTP/1.1 response body is delimited.
#[derive(Debug, Clone, Copy)]
enum Framing {
    /// `left` bytes of the current chunk to go (0: a size line is next).
    Chunked {
        left: usize,
    },
    Length(usize),
    /// Until the connection closes.
    Close,
    Done,
}

/// An HTTP/1.1 response read off the socket by hand.
struct RawBody {
    tcp: TcpStream,
    buf: BytesMut,
    framing: Framing,
    /// A chunk's data has been read; its CRLF has not.
    crlf_due: bool,
}

impl RawBody {
    /// Reads more from the socket; `false` at its end.
    async fn fill(&mut self) -> Result<bool, String> {
        let n = self.tcp.read_buf(&mut self.buf).await.map_err(|e| e.to_string())?;
        Ok(n > 0)
    }

    /// The next `\r\n`-terminated line, without it.
    async fn crlf_line(&mut self) -> Result<String, String> {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf.split_to(at + 2);
                return Ok(String::from_utf8_lossy(&line[..at]).into_owned());
            }
            if !self.fill().await? {
                return Err("the connection closed inside a line".into());
            }
        }
    }

    async fn head(&mut self) -> Result<(StatusCode, HeaderMap), String> {
        let status_line = self.crlf_line().await?;
        let code = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| format!("not a status line: {status_line:?}"))?;
        let status = StatusCode::from_u16(code).map_err(|e| e.to_string())?;
        let mut headers = HeaderMap::new();
        loop {
            let line = self.crlf_line().await?;
            if line.is_empty() {
                return Ok((status, headers));
            }
            let (name, value) = line.split_once(':').ok_or_else(|| format!("not a header: {line:?}"))?;
            let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|e| e.to_string())?;
            let value = HeaderValue::from_str(value.trim()).map_err(|e| e.to_string())?;
            headers.append(name, value);
        }
    }

    /// The next piece of the body; `None` at its end.
    async fn next(&mut self) -> Result<Option<Bytes>, String> {
        loop {
            match self.framing {
                Framing::Done | Framing::Length(0) => {
                    self.framing = Framing::Done;
                    return Ok(None);
                }
                Framing::Close => {
                    if self.buf.is_empty() && !self.fill().await? {
                        self.framing = Framing::Done;
                        return Ok(None);
                    }
                    return Ok(Some(self.buf.split().freeze()));
                }
                Framing::Length(left) | Framing::Chunked { left } if left > 0 => {
                    if self.buf.is_empty() && !self.fill().await? {
                        return Err(format!("the connection closed {left} bytes before the end of the body"));
                    }
                    let take = left.min(self.buf.len());
                    let data = self.buf.split_to(take).freeze();
                    self.framing = match self.framing {
                        Framing::Length(_) => Framing::Length(left - take),
                        _ => Framing::Chunked { left: left - take },
                    };
                    self.crlf_due = matches!(self.framing, Framing::Chunked { left: 0 });
                    return Ok(Some(data));
                }
                Framing::Length(_) => unreachable!("a zero length is handled above"),
                Framing::Chunked { .. } => {
                    if self.crlf_due {
                        let end = self.crlf_line().await?;
                        if !end.is_empty() {
                            return Err(format!("chunk data longer than its size: {end:?}"));
                        }
                        self.crlf_due = false;
                    }
                    let line = self
                        .crlf_line()
                        .await
                        .map_err(|e| format!("{e} (the chunked body ended without its last chunk)"))?;
                    let size = line.split(';').next().unwrap_or_default().trim();
                    let size = usize::from_str_radix(size, 16).map_err(|_| format!("not a chunk size: {line:?}"))?;
                    if size == 0 {
                        // Trailers, if any, up to a blank line.
                        while !self.crlf_line().await?.is_empty() {}
                        self.framing = Framing::Done;
                        return Ok(None);
                    }
                    self.framing = Framing::Chunked { left: size };
                }
            }
        }
    }
}

/// An HTTP/2 connection (prior knowledge, as gRPC clients speak it) driven
/// in the background; its requests are answered as [`Streamed`].
pub struct H2Client {
    send: h2::client::SendRequest<Bytes>,
    driver: JoinHandle<()>,
    authority: String,
}

impl H2Client {
    pub async fn connect(gw: &TestGateway) -> H2Client {
        Self::connect_with(gw, h2::client::Builder::new()).await
    }

    /// A connection with the settings of `builder` (a small window, say).
    pub async fn connect_with(gw: &TestGateway, builder: h2::client::Builder) -> H2Client {
        let tcp = within("connect", TcpStream::connect(gw.authority())).await.expect("connect to the gateway");
        tcp.set_nodelay(true).expect("nodelay");
        let (send, connection) =
            within("h2 handshake", builder.handshake::<_, Bytes>(tcp)).await.expect("h2 handshake");
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        H2Client { send, driver, authority: gw.authority().to_owned() }
    }

    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> http::Request<()> {
        let mut request = http::Request::builder().method(method).uri(format!("http://{}{path}", self.authority));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).expect("request")
    }

    /// `GET path`, answered as far as the response headers.
    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Streamed {
        let request = self.request("GET", path, headers);
        let mut send = within("h2 ready", self.send.clone().ready()).await.expect("h2 connection ready");
        let (response, stream) = send.send_request(request, true).expect("send the request");
        H2Upload { body: stream, response }.response().await
    }

    /// A request whose body the test sends with [`H2Upload::send`].
    pub async fn open(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> H2Upload {
        let request = self.request(method, path, headers);
        let mut send = within("h2 ready", self.send.clone().ready()).await.expect("h2 connection ready");
        let (response, body) = send.send_request(request, false).expect("send the request");
        H2Upload { body, response }
    }
}

impl Drop for H2Client {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// An HTTP/2 request whose body is still being sent.
pub struct H2Upload {
    body: h2::SendStream<Bytes>,
    response: h2::client::ResponseFuture,
}

impl H2Upload {
    /// One DATA frame of the request body (buffered by h2 until the
    /// gateway's window lets it out).
    pub fn send(&mut self, data: &[u8]) {
        self.body.send_data(Bytes::copy_from_slice(data), false).expect("send request data");
    }

    /// The end of the request body.
    pub fn finish(&mut self) {
        self.body.send_data(Bytes::new(), true).expect("end the request body");
    }

    /// Gives the request up before its answer (RST_STREAM CANCEL).
    pub fn reset(&mut self) {
        self.body.send_reset(h2::Reason::CANCEL);
    }

    /// The response's headers; its body is read with the [`Streamed`]
    /// methods.
    pub async fn response(self) -> Streamed {
        let H2Upload { body: request, response } = self;
        let response = within("h2 response headers", response).await.expect("h2 response");
        let (parts, body) = response.into_parts();
        Streamed::new(parts.status, parts.headers, Source::H2 { body, request: Some(request) })
    }
}
