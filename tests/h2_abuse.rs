//! HTTP/2 and connection abuse (issue 9): the known attacks on an HTTP/2
//! server, each sent to the gateway from loopback, bounded in count and
//! time. Every test asserts what the gateway did to the attacking
//! connection (GOAWAY and its error code, refused streams, a close at a
//! deadline, writes that stop being read), that the backend was not called
//! for requests that never completed, and that a normal HTTP/1 and HTTP/2
//! client is still answered while it happens.
//!
//! The h2 crate is the client where its API can express the attack (rapid
//! reset, flow-control windows); otherwise frames are written by hand over a
//! TcpStream ([`wire`], [`hpack`]). Memory is read from this process's
//! resident set ([`rss`]): the gateway runs in the test process.

mod common;

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::TestGateway;
use futures_util::FutureExt as _;
use h2::Reason;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::RwLock;

use wire::Frame;

const HEADER_READ: Duration = Duration::from_secs(1);
const IDLE: Duration = Duration::from_secs(2);
/// What a deadline may run late on a loaded two-core machine.
const SLACK: Duration = Duration::from_millis(1500);
/// The longest any single wait here may take.
const WAIT: Duration = Duration::from_secs(10);
const MIB: usize = 1 << 20;

/// Memory is measured for the whole process, so a test whose bound is a
/// few MiB runs alone (`write`); every other test takes `read` (the floods'
/// bound is far above what the others add).
static MEMORY: RwLock<()> = RwLock::const_new(());

async fn gateway() -> TestGateway {
    common::start_test_service_with_timeouts(HEADER_READ, IDLE).await
}

async fn connect(gw: &TestGateway) -> TcpStream {
    let tcp = TcpStream::connect(gw.authority()).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    tcp
}

/// A connection with small socket buffers on the test's side, so that the
/// gateway's answers to a peer that does not read back up soon (its own
/// side's buffers are the kernel's to size).
async fn connect_small_buffers(gw: &TestGateway) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.set_send_buffer_size(4096).expect("SO_SNDBUF");
    let tcp = socket.connect(gw.authority().parse().expect("gateway address")).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    tcp
}

/// One GET over a fresh HTTP/2 connection (the h2 crate as a well-behaved
/// client); its status.
async fn h2_get(gw: &TestGateway, path: &str) -> http::StatusCode {
    let tcp = connect(gw).await;
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let driver = tokio::spawn(connection);
    let mut client = client.ready().await.expect("h2 ready");
    let request = http::Request::get(gw.url(path)).body(()).expect("request");
    let (response, _) = client.send_request(request, true).expect("send");
    let status = response.await.expect("h2 response").status();
    driver.abort();
    status
}

/// A normal HTTP/1 client (reqwest) and a normal HTTP/2 client (h2) are
/// both answered, each within [`WAIT`].
async fn assert_served(gw: &TestGateway, when: &str) {
    let reply = tokio::time::timeout(WAIT, gw.get("/test/metadata"))
        .await
        .unwrap_or_else(|_| panic!("{when}: no HTTP/1 answer within {WAIT:?}"));
    assert_eq!(reply.status, 200, "{when}: HTTP/1 {}", reply.text());
    let status = tokio::time::timeout(WAIT, h2_get(gw, "/test/metadata"))
        .await
        .unwrap_or_else(|_| panic!("{when}: no HTTP/2 answer within {WAIT:?}"));
    assert_eq!(status, 200, "{when}: HTTP/2");
}

/// Backend calls one [`assert_served`] makes (one per client).
const SERVED_CALLS: u64 = 2;

/// This process's resident set in bytes (`VmRSS`).
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("VmRSS in /proc/self/status");
    let kib: usize = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmRSS value");
    kib * 1024
}

/// HTTP/2 frames by hand (RFC 9113 §4): a 9-byte header (length u24, type,
/// flags, stream id u31) and a payload.
mod wire {
    use tokio::io::{AsyncRead, AsyncReadExt};

    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;

    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;

    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;

    pub const REFUSED_STREAM: u32 = 0x7;
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).expect("frame length");
        assert!(len < 1 << 24, "frame payload of {len} bytes");
        let mut out = Vec::with_capacity(9 + payload.len());
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    pub fn settings(values: &[(u16, u32)]) -> Vec<u8> {
        let mut payload = Vec::new();
        for (id, value) in values {
            payload.extend_from_slice(&id.to_be_bytes());
            payload.extend_from_slice(&value.to_be_bytes());
        }
        frame(SETTINGS, 0, 0, &payload)
    }

    pub fn window_update(stream: u32, increment: u32) -> Vec<u8> {
        frame(WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
    }

    /// The preface and a SETTINGS frame of `values`: a client's opening.
    pub fn opening(values: &[(u16, u32)]) -> Vec<u8> {
        let mut out = PREFACE.to_vec();
        out.extend(settings(values));
        out
    }

    #[derive(Debug)]
    pub struct Frame {
        pub kind: u8,
        pub flags: u8,
        pub stream: u32,
        pub payload: Vec<u8>,
    }

    impl Frame {
        fn u32_at(&self, at: usize) -> Option<u32> {
            let bytes = self.payload.get(at..at + 4)?;
            Some(u32::from_be_bytes(bytes.try_into().ok()?))
        }

        /// The error code of a GOAWAY or RST_STREAM.
        pub fn error_code(&self) -> Option<u32> {
            match self.kind {
                GOAWAY => self.u32_at(4),
                RST_STREAM => self.u32_at(0),
                _ => None,
            }
        }

        /// The last stream id a GOAWAY says was processed.
        pub fn last_stream(&self) -> Option<u32> {
            (self.kind == GOAWAY).then(|| self.u32_at(0)).flatten().map(|id| id & 0x7fff_ffff)
        }

        /// The parameters of a SETTINGS frame.
        pub fn settings(&self) -> Vec<(u16, u32)> {
            self.payload
                .chunks_exact(6)
                .map(|s| (u16::from_be_bytes([s[0], s[1]]), u32::from_be_bytes([s[2], s[3], s[4], s[5]])))
                .collect()
        }
    }

    /// The next frame, or `None` once the connection is closed (or reset).
    pub async fn read_frame(from: &mut (impl AsyncRead + Unpin)) -> Option<Frame> {
        let mut head = [0u8; 9];
        from.read_exact(&mut head).await.ok()?;
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0; len];
        from.read_exact(&mut payload).await.ok()?;
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        Some(Frame { kind: head[3], flags: head[4], stream, payload })
    }
}

/// HPACK by hand (RFC 7541), enough to build header blocks that use the
/// decoder's dynamic table on purpose.
mod hpack {
    /// The index of the newest dynamic-table entry (after the 61 static
    /// ones).
    pub const NEWEST: usize = 62;

    /// An integer with an N-bit prefix (§5.1); `flags` are the first byte's
    /// bits above the prefix.
    pub fn int(out: &mut Vec<u8>, prefix: u32, flags: u8, value: usize) {
        let max = (1usize << prefix) - 1;
        if value < max {
            out.push(flags | value as u8);
            return;
        }
        out.push(flags | max as u8);
        let mut rest = value - max;
        while rest >= 128 {
            out.push((rest % 128) as u8 | 0x80);
            rest /= 128;
        }
        out.push(rest as u8);
    }

    /// A string literal, not Huffman-coded (§5.2).
    pub fn string(out: &mut Vec<u8>, s: &[u8]) {
        int(out, 7, 0x00, s.len());
        out.extend_from_slice(s);
    }

    /// An indexed field (§6.1): one byte for an entry of the tables.
    pub fn indexed(out: &mut Vec<u8>, index: usize) {
        int(out, 7, 0x80, index);
    }

    /// A literal field with incremental indexing and a new name (§6.2.1):
    /// the decoder adds it to its dynamic table, evicting older entries.
    pub fn literal_indexed(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
        out.push(0x40);
        string(out, name);
        string(out, value);
    }

    /// A literal field without indexing whose name is a static entry
    /// (§6.2.2): leaves the dynamic table alone.
    pub fn literal(out: &mut Vec<u8>, name_index: usize, value: &[u8]) {
        int(out, 4, 0x00, name_index);
        string(out, value);
    }

    /// The pseudo-headers of a request: `:method` (static 2 GET, 3 POST),
    /// `:scheme http` (6), `:path` (4) and `:authority` (1).
    pub fn request(method: &str, path: &str) -> Vec<u8> {
        let mut out = Vec::new();
        indexed(
            &mut out,
            match method {
                "GET" => 2,
                "POST" => 3,
                other => panic!("no static entry for {other}"),
            },
        );
        indexed(&mut out, 6);
        literal(&mut out, 4, path.as_bytes());
        literal(&mut out, 1, b"localhost");
        out
    }

    /// The `:status` of a response block, as hyper and h2 encode it first:
    /// a static entry (200, 204, 400, 404, 500), or a literal with its name
    /// indexed and its value Huffman-coded (431, say).
    pub fn status(block: &[u8]) -> Option<u16> {
        match *block.first()? {
            0x88 => Some(200),
            0x89 => Some(204),
            0x8c => Some(400),
            0x8d => Some(404),
            0x8e => Some(500),
            0x48 | 0x08 | 0x18 => {
                let head = *block.get(1)?;
                let value = block.get(2..2 + usize::from(head & 0x7f))?;
                let digits = if head & 0x80 != 0 { huffman_digits(value)? } else { value.to_vec() };
                std::str::from_utf8(&digits).ok()?.parse().ok()
            }
            _ => None,
        }
    }

    /// Decodes a Huffman-coded string of decimal digits (RFC 7541 Appendix
    /// B: `0`-`2` are the 5-bit codes 0-2, `3`-`9` the 6-bit codes
    /// 0x19-0x1f), the padding being the leftover one bits.
    fn huffman_digits(coded: &[u8]) -> Option<Vec<u8>> {
        let bits: Vec<u8> = coded.iter().flat_map(|byte| (0..8).rev().map(move |i| (byte >> i) & 1)).collect();
        let read = |at: usize, n: usize| bits.get(at..at + n).map(|b| b.iter().fold(0u8, |v, bit| v << 1 | bit));
        let (mut at, mut out) = (0, Vec::new());
        while bits.len() - at >= 5 {
            let five = read(at, 5)?;
            if five <= 2 {
                out.push(b'0' + five);
                at += 5;
                continue;
            }
            match read(at, 6) {
                Some(six @ 0x19..=0x1f) => {
                    out.push(b'3' + six - 0x19);
                    at += 6;
                }
                // The padding: all ones, fewer than 8 bits.
                _ if bits[at..].iter().all(|bit| *bit == 1) => break,
                _ => return None,
            }
        }
        Some(out)
    }
}

/// How [`read_frames`] ended.
#[derive(Debug, PartialEq, Eq)]
enum Read {
    Done,
    Closed,
    TimedOut,
}

/// Reads frames from `from` and hands each to `each` until it returns
/// true, the connection closes, or `within` passes.
async fn read_frames(
    from: &mut (impl AsyncRead + Unpin),
    within: Duration,
    mut each: impl FnMut(&Frame) -> bool,
) -> Read {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, wire::read_frame(from)).await {
            Err(_) => return Read::TimedOut,
            Ok(None) => return Read::Closed,
            Ok(Some(frame)) => {
                if each(&frame) {
                    return Read::Done;
                }
            }
        }
    }
}

/// What a connection got back: its GOAWAY (if any) and whether it was
/// closed, read to the end by a task of its own while the test writes.
#[derive(Debug, Default)]
struct Received {
    goaway: Option<(u32, u32)>,
    closed: bool,
    frames: usize,
}

fn spawn_reader(mut from: tokio::net::tcp::OwnedReadHalf) -> tokio::task::JoinHandle<Received> {
    tokio::spawn(async move {
        let mut received = Received::default();
        let read = read_frames(&mut from, WAIT, |frame| {
            received.frames += 1;
            if frame.kind == wire::GOAWAY {
                received.goaway = Some((frame.error_code().unwrap_or(0), frame.last_stream().unwrap_or(0)));
            }
            false
        })
        .await;
        received.closed = read == Read::Closed;
        received
    })
}

#[tokio::test]
async fn rapid_reset_gets_goaway_enhance_your_calm() {
    let _shared = MEMORY.read().await;
    let gw = gateway().await;
    let calls = gw.backend_calls();
    let (client, connection) = h2::client::handshake(connect(&gw).await).await.expect("h2 handshake");
    let driver = tokio::spawn(connection);
    let mut client = client;
    // CVE-2023-44487: open a stream and cancel it at once, over and over;
    // each burst of 100 goes out in one write when the loop yields.
    let mut sent = 0usize;
    'attack: for _burst in 0..100 {
        client = match tokio::time::timeout(WAIT, client.ready()).await {
            Ok(Ok(ready)) => ready,
            _ => break,
        };
        for _ in 0..100 {
            let request = http::Request::get(gw.url("/test/sleep/200")).body(()).expect("request");
            match client.send_request(request, true) {
                Ok((_response, mut stream)) => {
                    stream.send_reset(Reason::CANCEL);
                    sent += 1;
                }
                Err(_) => break 'attack,
            }
        }
        tokio::task::yield_now().await;
    }
    let ended = tokio::time::timeout(WAIT, driver).await.expect("the gateway must end the connection");
    let err = ended.expect("driver task").expect_err("the connection must end with an error");
    eprintln!("rapid reset: sent {sent}, err {err:?}, backend calls {}", gw.backend_calls() - calls);
    assert!(err.is_go_away() && err.is_remote(), "ended by {err:?}, not the gateway's GOAWAY");
    assert_eq!(err.reason(), Some(Reason::ENHANCE_YOUR_CALM), "{err:?}");
    assert!(sent < 10_000, "all {sent} streams went through");
    // A stream reset before the gateway took it never reaches the service:
    // h2 keeps count of those, and more than 20 at once is the GOAWAY. Any
    // the gateway took before their reset came are cancelled with it.
    let attack_calls = gw.backend_calls() - calls;
    assert!(attack_calls < sent as u64 / 4, "{attack_calls} of {sent} cancelled requests reached the backend");
    assert_served(&gw, "after a rapid reset").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn streams_beyond_the_advertised_limit_are_refused() {
    let _shared = MEMORY.read().await;
    let gw = gateway().await;
    let calls = gw.backend_calls();
    let mut tcp = connect(&gw).await;
    let mut hello = wire::opening(&[(wire::INITIAL_WINDOW_SIZE, 1 << 20)]);
    hello.extend(wire::window_update(0, 1 << 20));
    tcp.write_all(&hello).await.expect("write opening");
    let mut advertised = None;
    let read = read_frames(&mut tcp, WAIT, |frame| {
        if frame.kind == wire::SETTINGS && frame.flags & wire::ACK == 0 {
            advertised =
                frame.settings().into_iter().find(|(id, _)| *id == wire::MAX_CONCURRENT_STREAMS).map(|(_, v)| v);
            return true;
        }
        false
    })
    .await;
    assert_eq!(read, Read::Done, "no SETTINGS from the gateway");
    assert_eq!(advertised, Some(256), "SETTINGS_MAX_CONCURRENT_STREAMS");
    // 300 requests that each hold their stream for a second, in one write.
    const OPENED: u32 = 300;
    let mut burst = wire::frame(wire::SETTINGS, wire::ACK, 0, &[]);
    let block = hpack::request("GET", "/test/sleep/1000");
    for i in 0..OPENED {
        burst.extend(wire::frame(wire::HEADERS, wire::END_HEADERS | wire::END_STREAM, 1 + 2 * i, &block));
    }
    tcp.write_all(&burst).await.expect("write streams");
    // While 256 sleep at the backend, others are still answered.
    assert_served(&gw, "while a connection holds 256 streams").await;
    let (mut refused, mut ok, mut other) = (0u32, 0u32, Vec::new());
    let read = read_frames(&mut tcp, WAIT, |frame| {
        match frame.kind {
            wire::RST_STREAM if frame.error_code() == Some(wire::REFUSED_STREAM) => refused += 1,
            wire::RST_STREAM => other.push(format!("RST_STREAM {:?} on {}", frame.error_code(), frame.stream)),
            wire::HEADERS if hpack::status(&frame.payload) == Some(200) => ok += 1,
            wire::HEADERS => other.push(format!("HEADERS {:?} on {}", hpack::status(&frame.payload), frame.stream)),
            wire::GOAWAY => other.push(format!("GOAWAY {:?}", frame.error_code())),
            _ => {}
        }
        refused + ok + other.len() as u32 >= OPENED
    })
    .await;
    eprintln!("many streams: ok {ok} refused {refused} other {other:?}");
    assert_eq!(read, Read::Done, "answers: {ok} 200, {refused} refused, other {other:?}");
    assert!(other.is_empty(), "{other:?}");
    assert_eq!((ok, refused), (256, OPENED - 256), "200s and REFUSED_STREAMs");
    assert_eq!(gw.backend_calls() - calls, 256 + SERVED_CALLS, "only accepted streams reach the backend");
    assert_served(&gw, "after").await;
    gw.shutdown().await;
}

/// Writes a HEADERS frame without END_HEADERS on stream 1, then up to
/// `count` CONTINUATION frames of `each` without END_HEADERS, reading what
/// comes back meanwhile; the gateway's GOAWAY (code, last stream) and how
/// many were written before it stopped taking them.
async fn continuation_flood(gw: &TestGateway, first: &[u8], each: &[u8], count: usize) -> (Received, usize) {
    let tcp = connect(gw).await;
    let (read, mut write) = tcp.into_split();
    let reader = spawn_reader(read);
    write.write_all(&wire::opening(&[])).await.expect("write opening");
    let mut block = hpack::request("GET", "/test/metadata");
    block.extend_from_slice(first);
    write.write_all(&wire::frame(wire::HEADERS, wire::END_STREAM, 1, &block)).await.expect("write HEADERS");
    let continuation = wire::frame(wire::CONTINUATION, 0, 1, each);
    let mut written = 0;
    while written < count {
        match tokio::time::timeout(Duration::from_secs(2), write.write_all(&continuation)).await {
            Ok(Ok(())) => written += 1,
            Ok(Err(_)) | Err(_) => break,
        }
    }
    drop(write);
    let received = tokio::time::timeout(WAIT, reader).await.expect("reader ends").expect("reader task");
    (received, written)
}

#[tokio::test]
async fn continuation_flood_gets_goaway_enhance_your_calm() {
    let _shared = MEMORY.read().await;
    let gw = gateway().await;
    let calls = gw.backend_calls();
    // CVE-2024-27316: a header block that never ends. Once as small fields
    // the decoder can decode as they come, once as one field whose value
    // never completes, so that the frames can only be buffered.
    let mut field = Vec::new();
    // user-agent: aaaa…
    hpack::literal(&mut field, 58, &[b'a'; 1000]);
    let mut endless = Vec::new();
    endless.push(0x00);
    hpack::string(&mut endless, b"x-endless");
    hpack::int(&mut endless, 7, 0x00, 64 * MIB);
    let patterns: [(&str, &[u8], Vec<u8>); 2] =
        [("decodable fields", &[], field), ("one endless value", &endless, vec![b'b'; 16_000])];
    for (name, first, each) in &patterns {
        let (received, written) = continuation_flood(&gw, first, each, 10_000).await;
        eprintln!("continuation {name}: {received:?}, written {written}");
        assert_eq!(
            received.goaway,
            Some((wire::ENHANCE_YOUR_CALM, 0)),
            "{name}: GOAWAY (code, last stream) after {written} CONTINUATION frames"
        );
        assert!(received.closed, "{name}: the connection must be closed");
        assert!(written < 10_000, "{name}: all {written} CONTINUATION frames were taken");
    }
    assert_eq!(gw.backend_calls(), calls, "an unfinished header block never reaches the backend");
    assert_served(&gw, "after CONTINUATION floods").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn hpack_bomb_gets_goaway_and_heavy_table_use_stays_in_step() {
    let _shared = MEMORY.read().await;
    let gw = gateway().await;
    let calls = gw.backend_calls();

    // The bomb: one 4 KB entry in the dynamic table, then 4000 one-byte
    // references to it: a 10 KB frame that decodes to 16 MB of headers.
    let tcp = connect(&gw).await;
    let (read, mut write) = tcp.into_split();
    let reader = spawn_reader(read);
    let mut block = hpack::request("GET", "/test/metadata");
    hpack::literal_indexed(&mut block, b"x-bomb", &[b'a'; 4000]);
    for _ in 0..4000 {
        hpack::indexed(&mut block, hpack::NEWEST);
    }
    let mut bomb = wire::opening(&[]);
    bomb.extend(wire::frame(wire::HEADERS, wire::END_HEADERS | wire::END_STREAM, 1, &block));
    write.write_all(&bomb).await.expect("write bomb");
    let received = tokio::time::timeout(WAIT, reader).await.expect("reader ends").expect("reader task");
    eprintln!("hpack bomb: {received:?}");
    assert_eq!(received.goaway, Some((wire::ENHANCE_YOUR_CALM, 0)), "GOAWAY (code, last stream)");
    assert!(received.closed, "the connection must be closed");
    assert_eq!(gw.backend_calls(), calls, "the bomb never reaches the backend");

    // Heavy but legal use: 200 requests on one connection, each adding a
    // 3 KB entry that evicts the one before and referring to it three
    // times (12 KB decoded, under the 16 KiB limit); then one that refers
    // to it six times (over the limit), then a plain request. The decoder
    // must stay in step with the table through every eviction.
    const REQUESTS: u32 = 200;
    let mut tcp = connect(&gw).await;
    let mut burst = wire::opening(&[(wire::INITIAL_WINDOW_SIZE, 1 << 20)]);
    burst.extend(wire::window_update(0, 16 << 20));
    for i in 0..=REQUESTS {
        let mut block = hpack::request("GET", "/test/metadata");
        let value = vec![b'a' + (i % 26) as u8; 3000];
        hpack::literal_indexed(&mut block, format!("x-fill-{i}").as_bytes(), &value);
        let references = if i == REQUESTS { 6 } else { 3 };
        for _ in 0..references {
            hpack::indexed(&mut block, hpack::NEWEST);
        }
        burst.extend(wire::frame(wire::HEADERS, wire::END_HEADERS | wire::END_STREAM, 1 + 2 * i, &block));
    }
    let last = 1 + 2 * (REQUESTS + 1);
    burst.extend(wire::frame(
        wire::HEADERS,
        wire::END_HEADERS | wire::END_STREAM,
        last,
        &hpack::request("GET", "/test/metadata"),
    ));
    tcp.write_all(&burst).await.expect("write requests");
    let (mut ok, mut too_large, mut other) = (0u32, 0u32, Vec::new());
    let mut last_ok = false;
    let read = read_frames(&mut tcp, WAIT, |frame| {
        if frame.kind == wire::HEADERS {
            match hpack::status(&frame.payload) {
                Some(200) => ok += 1,
                Some(431) => too_large += 1,
                status => other.push(format!("{status:?} on {}", frame.stream)),
            }
            last_ok |= frame.stream == last;
        } else if frame.kind == wire::GOAWAY {
            other.push(format!("GOAWAY {:?}", frame.error_code()));
        }
        ok + too_large + other.len() as u32 >= REQUESTS + 2
    })
    .await;
    eprintln!("hpack heavy: ok {ok} 431 {too_large} other {other:?}");
    assert_eq!(read, Read::Done, "{ok} 200, {too_large} 431, other {other:?}");
    assert!(other.is_empty(), "{other:?}");
    assert_eq!((ok, too_large), (REQUESTS + 1, 1), "200s and 431s");
    assert!(last_ok, "the request after the oversized one is answered");
    assert_eq!(gw.backend_calls() - calls, u64::from(REQUESTS) + 1, "the oversized request never reaches the backend");
    assert_served(&gw, "after an HPACK bomb").await;
    gw.shutdown().await;
}

/// How a flood from a peer that never reads went.
#[derive(Debug)]
struct Flood {
    /// Frames the gateway took (written into the socket) before the writes
    /// blocked or the connection was closed.
    taken: usize,
    /// The writes blocked: the gateway stopped reading.
    blocked: bool,
    /// When the connection was closed, from its start.
    closed: Option<Duration>,
    /// Resident-set growth, at most, while the flood ran.
    growth: usize,
}

/// Writes `frame` over and over in batches, up to [`FLOOD_MAX`], on a
/// connection that never reads; checks that normal clients are answered
/// once the writes block; ends when the gateway closes the connection or
/// [`WAIT`] passes.
async fn flood_without_reading(gw: &TestGateway, frame: &[u8]) -> Flood {
    const BATCH: usize = 1000;
    let start = Instant::now();
    let mut tcp = connect_small_buffers(gw).await;
    tcp.write_all(&wire::opening(&[])).await.expect("write opening");
    let batch = frame.repeat(BATCH);
    let before = rss();
    let mut flood = Flood { taken: 0, blocked: false, closed: None, growth: 0 };
    'flood: while flood.taken < FLOOD_MAX {
        let write = tcp.write_all(&batch);
        tokio::pin!(write);
        loop {
            tokio::select! {
                written = &mut write => match written {
                    Ok(()) => {
                        flood.taken += BATCH;
                        break;
                    }
                    Err(_) => {
                        flood.closed = Some(start.elapsed());
                        break 'flood;
                    }
                },
                () = tokio::time::sleep(Duration::from_millis(300)) => {
                    if !flood.blocked {
                        flood.blocked = true;
                        flood.growth = flood.growth.max(rss().saturating_sub(before));
                        assert_served(gw, "while a flood is blocked").await;
                    }
                    if start.elapsed() > WAIT {
                        break 'flood;
                    }
                }
            }
        }
        flood.growth = flood.growth.max(rss().saturating_sub(before));
    }
    flood.growth = flood.growth.max(rss().saturating_sub(before));
    flood
}

/// Frames a flood may write: more than every socket buffer on both sides
/// of a loopback connection can hold (a few tens of MiB here), so that a
/// gateway that kept reading would have to keep its answers itself.
const FLOOD_MAX: usize = 4_000_000;

/// Asserts what a flood from a peer that never reads must come to: the
/// gateway stopped reading (or closed) long before [`FLOOD_MAX`], the
/// resident set grew by less than 32 MiB meanwhile, and it closed the
/// connection at the idle timeout with its grace.
fn assert_flood_bounded(what: &str, flood: &Flood) {
    assert!(flood.taken < FLOOD_MAX, "{what}: all {} frames were read, the answers buffered", flood.taken);
    assert!(flood.blocked || flood.closed.is_some(), "{what}: {flood:?}");
    assert!(flood.growth < 32 * MIB, "{what}: memory grew by {} MiB", flood.growth / MIB);
    let closed = flood.closed.unwrap_or_else(|| panic!("{what}: never closed: {flood:?}"));
    assert!(closed < IDLE + HEADER_READ + SLACK, "{what}: closed after {closed:?}");
}

#[tokio::test]
async fn ping_flood_from_a_peer_that_never_reads_is_not_buffered() {
    let _shared = MEMORY.read().await;
    let gw = gateway().await;
    assert_served(&gw, "before").await;
    // h2 answers a PING before it reads the next frame, so once the
    // answers fill the socket it stops reading: the flood's writes block.
    let ping = wire::frame(wire::PING, 0, 0, &[7; 8]);
    let flood = flood_without_reading(&gw, &ping).await;
    eprintln!("ping flood: {flood:?}");
    assert_flood_bounded("PING flood", &flood);
    assert_served(&gw, "after a PING flood").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn settings_flood_from_a_peer_that_never_reads_is_not_buffered() {
    let _shared = MEMORY.read().await;
    let gw = gateway().await;
    assert_served(&gw, "before").await;
    // Likewise h2 acknowledges a SETTINGS before it reads on.
    let settings = wire::settings(&[(wire::ENABLE_PUSH, 0)]);
    let flood = flood_without_reading(&gw, &settings).await;
    eprintln!("settings flood: {flood:?}");
    assert_flood_bounded("SETTINGS flood", &flood);
    assert_served(&gw, "after a SETTINGS flood").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn a_slowloris_and_silent_connections_are_closed_at_their_deadline() {
    let _shared = MEMORY.read().await;
    let gw = gateway().await;
    let calls = gw.backend_calls();
    let start = Instant::now();
    let (mut silent, mut slow, mut slow_request) = (Vec::new(), Vec::new(), Vec::new());
    let request =
        wire::frame(wire::HEADERS, wire::END_HEADERS | wire::END_STREAM, 1, &hpack::request("GET", "/test/metadata"));
    for _ in 0..10 {
        // Connected, and never a byte.
        silent.push(tokio::spawn(dribble_until_closed(connect(&gw).await, Vec::new(), Vec::new(), start)));
        // The preface and SETTINGS, a byte every 150 ms: 5 s if let be.
        slow.push(tokio::spawn(dribble_until_closed(connect(&gw).await, Vec::new(), wire::opening(&[]), start)));
    }
    for _ in 0..5 {
        // The handshake at once, then a request's HEADERS a byte every
        // 150 ms: past the handshake no header-read deadline holds, but
        // with nothing in flight the idle timeout does.
        let tcp = connect(&gw).await;
        slow_request.push(tokio::spawn(dribble_until_closed(tcp, wire::opening(&[]), request.clone(), start)));
    }
    assert_served(&gw, "while slowloris connections hang on").await;
    for (what, tasks) in [("silent", silent), ("slowloris", slow)] {
        for task in tasks {
            let closed = task.await.expect("task");
            let after = closed.after.unwrap_or_else(|| panic!("a {what} connection was never closed"));
            assert!(after >= HEADER_READ, "{what}: closed after {after:?}, before the timeout");
            assert!(after < HEADER_READ + SLACK, "{what}: closed after {after:?}");
            assert_eq!(closed.goaway, None, "{what}: the protocol was never chosen, so no GOAWAY");
        }
    }
    for task in slow_request {
        let closed = task.await.expect("task");
        let after = closed.after.expect("a dribbled request after the handshake was never closed");
        assert!(after >= IDLE, "slow request: closed after {after:?}, before the idle timeout");
        assert!(after < IDLE + HEADER_READ + SLACK, "slow request: closed after {after:?}");
        assert_eq!(closed.goaway, Some(0), "slow request: GOAWAY NO_ERROR when idle");
    }
    assert_eq!(gw.backend_calls() - calls, SERVED_CALLS, "no dribbled request reached the backend");
    gw.shutdown().await;
}

/// When a dribbling connection was closed, from its start, and the code
/// of the GOAWAY it got first, if any.
struct Closed {
    after: Option<Duration>,
    goaway: Option<u32>,
}

/// Writes `at_once`, then `dribbled` a byte every 150 ms, then nothing,
/// while reading frames until the gateway closes the connection or
/// [`WAIT`] passes.
async fn dribble_until_closed(tcp: TcpStream, at_once: Vec<u8>, dribbled: Vec<u8>, since: Instant) -> Closed {
    let (mut read, mut write) = tcp.into_split();
    let writer = tokio::spawn(async move {
        if write.write_all(&at_once).await.is_err() {
            return;
        }
        for byte in dribbled {
            if write.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        // Then hold the connection open, silent.
        tokio::time::sleep(WAIT).await;
    });
    let mut goaway = None;
    let read = read_frames(&mut read, WAIT.saturating_sub(since.elapsed()), |frame| {
        if frame.kind == wire::GOAWAY {
            goaway = goaway.or(frame.error_code());
        }
        false
    })
    .await;
    writer.abort();
    Closed { after: (read == Read::Closed).then(|| since.elapsed()), goaway }
}

/// A socket whose reads can be stopped for good while its writes go on: a
/// client that stops reading its responses.
struct Stalling {
    inner: TcpStream,
    stalled: Arc<AtomicBool>,
}

impl AsyncRead for Stalling {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.stalled.load(Ordering::Relaxed) {
            // Never woken: this reader is gone for good.
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stalling {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Streams a stalled client opens, and the size of each response.
const STALLED_STREAMS: usize = 32;
const RESPONSE: usize = 256 << 10;

/// `POST /test/echo` bodies whose echo is about [`RESPONSE`] bytes.
fn echo_body() -> Bytes {
    Bytes::from(format!(r#"{{"stringValue":"{}"}}"#, "x".repeat(RESPONSE)))
}

/// A client that sends [`STALLED_STREAMS`] echo requests with a stream
/// window of zero (the gateway can send no DATA) and waits for every
/// response's headers; the responses' bodies are never read.
struct Stalled {
    // Both kept, so that the streams stay open.
    _client: h2::client::SendRequest<Bytes>,
    _responses: Vec<http::Response<h2::RecvStream>>,
    connection: h2::client::Connection<Stalling, Bytes>,
    stalled: Arc<AtomicBool>,
}

async fn stall(gw: &TestGateway) -> Stalled {
    let stalled = Arc::new(AtomicBool::new(false));
    let io = Stalling { inner: connect(gw).await, stalled: stalled.clone() };
    let (client, mut connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .initial_connection_window_size(64 << 20)
        .handshake::<_, Bytes>(io)
        .await
        .expect("h2 handshake");
    let body = echo_body();
    let mut client = client.ready().await.expect("ready");
    let mut pending = Vec::new();
    for _ in 0..STALLED_STREAMS {
        let request = http::Request::post(gw.url("/test/echo"))
            .header("content-type", "application/json")
            .body(())
            .expect("request");
        let (response, mut stream) = client.send_request(request, false).expect("send");
        stream.send_data(body.clone(), true).expect("send body");
        pending.push(response);
    }
    let mut responses = Vec::new();
    let all = async {
        for response in pending {
            responses.push(response.await.expect("response headers"));
        }
    };
    tokio::select! {
        () = tokio::time::timeout(WAIT, all).map(|r| r.expect("all response headers within the wait")) => {}
        ended = &mut connection => panic!("the connection ended before the responses: {ended:?}"),
    }
    for response in &responses {
        assert_eq!(response.status(), 200);
    }
    Stalled { _client: client, _responses: responses, connection, stalled }
}

/// What the stalled streams may add to the resident set while they wait:
/// each holds its response (the JSON body), and the request, its protobuf,
/// the backend's copies and the response message the allocator may keep
/// mapped after they were freed; 16 MiB for the rest (runtime, sockets,
/// allocator arenas).
const HELD_BOUND: usize = STALLED_STREAMS * RESPONSE * 4 + 16 * MIB;

/// Memory given back to the allocator is used again by the next round of
/// the same work: a later round that grows the resident set by less than
/// half the responses one round holds is using what the first gave back.
/// (The resident set itself need not fall: glibc keeps freed memory mapped
/// for reuse.)
fn assert_given_back(what: &str, first: usize, later: usize) {
    assert!(
        later <= first + STALLED_STREAMS * RESPONSE / 2,
        "{what}: the resident set grew to {} KiB above the start, after {} KiB in the first round: \
         the first round's responses were not given back",
        later >> 10,
        first >> 10
    );
}

#[tokio::test]
async fn a_zero_window_reader_holds_bounded_memory_and_is_let_go_when_idle() {
    let _alone = MEMORY.write().await;
    let gw = gateway().await;
    assert_served(&gw, "before").await;
    let calls = gw.backend_calls();
    let start = rss();
    let mut stalled = stall(&gw).await;
    let ready = Instant::now();
    let held = rss().saturating_sub(start);
    assert_eq!(gw.backend_calls() - calls, STALLED_STREAMS as u64, "every request reached the backend");
    assert!(held < HELD_BOUND, "{STALLED_STREAMS} stalled streams hold {} MiB", held / MIB);
    assert_served(&gw, "while a zero-window reader holds its responses").await;
    // Nothing can move: once every response is handed over, the
    // connection is idle, and the gateway sends GOAWAY and closes it after
    // the grace.
    let ended = tokio::time::timeout(IDLE + HEADER_READ + SLACK, &mut stalled.connection).await;
    let closed = ready.elapsed();
    assert!(ended.is_ok(), "a reader that never opens its window was still held after {closed:?}");
    drop(stalled);
    // The same again, leaving at once: it fits in what the first gave back.
    let again = stall(&gw).await;
    let held_again = rss().saturating_sub(start);
    drop(again);
    eprintln!("zero window: held {} KiB, closed after {closed:?}, again {} KiB", held >> 10, held_again >> 10);
    assert_given_back("zero window", held, held_again);
    assert_served(&gw, "after").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn a_stalled_reader_holds_bounded_memory_and_gives_it_back_when_it_leaves() {
    let _alone = MEMORY.write().await;
    let gw = gateway().await;
    assert_served(&gw, "before").await;
    let start = rss();
    let mut held = Vec::new();
    for round in 0..2 {
        let mut stalled = stall(&gw).await;
        // Open every window wide, then never read again: the gateway writes
        // until the socket buffers are full and keeps the rest.
        stalled.connection.set_target_window_size(1 << 30);
        stalled.connection.set_initial_window_size(1 << 30).expect("raise the window");
        stalled.stalled.store(true, Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_millis(300), &mut stalled.connection).await;
        held.push(rss().saturating_sub(start));
        if round == 0 {
            assert_served(&gw, "while a stalled reader holds its responses").await;
        }
        // The reader leaves.
        drop(stalled);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("stalled: held {:?} KiB", held.iter().map(|h| h >> 10).collect::<Vec<_>>());
    for (round, held) in held.iter().enumerate() {
        assert!(*held < HELD_BOUND, "round {round}: {STALLED_STREAMS} stalled streams hold {} MiB", held / MIB);
    }
    assert_given_back("stalled reader", held[0], held[1]);
    assert_served(&gw, "after").await;
    gw.shutdown().await;
}
