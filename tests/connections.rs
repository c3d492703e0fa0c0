//! Connection deadlines (issue 9, DESIGN §10 `limits`): a connection that
//! never completes its first request's headers (HTTP/1) or its preface and
//! first SETTINGS (HTTP/2) is closed at the header-read timeout, counted
//! from its first byte, whatever protocol it turns out to speak; one with
//! no request in flight is closed after the idle timeout. Raw sockets and
//! the h2 crate as the client, on loopback, with deadlines of about a
//! second so that every wait here is bounded.

mod common;

use std::time::{Duration, Instant};

use common::TestGateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADER_READ: Duration = Duration::from_millis(800);
const IDLE: Duration = Duration::from_millis(1600);
/// Longer than any deadline here: a connection still open by then was never
/// going to be closed.
const LONG: Duration = Duration::from_secs(6);

async fn gateway() -> TestGateway {
    common::start_test_service_with_timeouts(HEADER_READ, IDLE).await
}

async fn connect(gw: &TestGateway) -> TcpStream {
    TcpStream::connect(gw.authority()).await.expect("connect")
}

/// Reads until the gateway closes the connection, answering nothing;
/// returns how long that took from `since`, or `None` if it was still open
/// after [`LONG`]. Whatever the gateway sends first (a GOAWAY, say) is
/// read and dropped.
async fn closed_after(stream: &mut TcpStream, since: Instant) -> Option<Duration> {
    let mut buf = [0u8; 4096];
    let deadline = since + LONG;
    loop {
        match tokio::time::timeout_at(deadline.into(), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(since.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

/// Writes `bytes` one at a time, `gap` apart, until done or the gateway
/// closes; returns how many were written.
async fn dribble(stream: &mut TcpStream, bytes: &[u8], gap: Duration) -> usize {
    for (i, byte) in bytes.iter().enumerate() {
        if stream.write_all(&[*byte]).await.is_err() {
            return i;
        }
        tokio::time::sleep(gap).await;
    }
    bytes.len()
}

#[tokio::test]
async fn a_silent_connection_is_closed_at_the_header_read_timeout() {
    let gw = gateway().await;
    let start = Instant::now();
    let mut stream = connect(&gw).await;
    let after = closed_after(&mut stream, start).await.expect("a silent connection must be closed");
    assert!(after >= HEADER_READ, "closed after {after:?}, before the timeout");
    assert!(after < IDLE + HEADER_READ, "closed after {after:?}: the header-read timeout, not another, applies");
    // The gateway still serves.
    assert_eq!(gw.get("/test/metadata").await.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn dribbled_h2_preface_and_http1_headers_are_cut_at_the_timeout() {
    let gw = gateway().await;
    // One byte every 100 ms: the preface alone would take 2.4 s.
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let request = b"GET /test/metadata HTTP/1.1\r\nhost: x\r\n\r\n";
    for bytes in [&preface[..], &request[..]] {
        let start = Instant::now();
        let mut stream = connect(&gw).await;
        let written = dribble(&mut stream, bytes, Duration::from_millis(100)).await;
        let after = closed_after(&mut stream, start).await.expect("a dribbling connection must be closed");
        assert!(written < bytes.len(), "all {written} bytes got through before the close");
        assert!(after < IDLE + HEADER_READ, "closed after {after:?}");
    }
    assert_eq!(gw.get("/test/metadata").await.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn an_idle_http1_connection_is_closed_after_the_idle_timeout_and_a_busy_one_is_not() {
    let gw = gateway().await;
    let mut stream = connect(&gw).await;
    let request = b"GET /test/metadata HTTP/1.1\r\nhost: x\r\n\r\n";
    // Busy: a request every 400 ms for longer than the idle timeout, all on
    // one connection.
    let busy = Instant::now();
    let mut buf = vec![0u8; 65536];
    while busy.elapsed() < IDLE + HEADER_READ {
        stream.write_all(request).await.expect("the connection stays open while used");
        let n = stream.read(&mut buf).await.expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // Then idle.
    let idle = Instant::now();
    let after = closed_after(&mut stream, idle).await.expect("an idle connection must be closed");
    assert!(after + Duration::from_millis(500) >= IDLE, "closed after {after:?} idle");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_h2_connection_gets_goaway_when_idle_not_at_the_header_timeout() {
    let gw = gateway().await;
    let start = Instant::now();
    let tcp = connect(&gw).await;
    let (mut client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let driver = tokio::spawn(connection);
    let request = http::Request::get(gw.url("/test/metadata")).body(()).expect("request");
    let (response, _) = client.send_request(request, true).expect("send");
    assert_eq!(response.await.expect("response").status(), 200);
    // The connection future ends when the gateway sends GOAWAY and closes.
    let ended = tokio::time::timeout(LONG, driver).await;
    let after = start.elapsed();
    assert!(ended.is_ok(), "an idle h2 connection must be closed");
    assert!(after >= IDLE, "closed after {after:?}: before the idle timeout");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_h2_handshake_alone_counts_as_ready() {
    // Preface and SETTINGS in time, then no request: idle rules apply, so
    // the connection outlives the header-read timeout.
    let gw = gateway().await;
    let start = Instant::now();
    let tcp = connect(&gw).await;
    let (_client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let driver = tokio::spawn(connection);
    let ended = tokio::time::timeout(LONG, driver).await;
    let after = start.elapsed();
    assert!(ended.is_ok(), "an idle h2 connection must be closed");
    assert!(after >= IDLE, "closed after {after:?}: at the header-read timeout, though the handshake was done");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_later_http1_request_dribbled_is_cut_at_the_header_read_timeout() {
    let gw = gateway().await;
    let mut stream = connect(&gw).await;
    let request = b"GET /test/metadata HTTP/1.1\r\nhost: x\r\n\r\n";
    stream.write_all(request).await.expect("write");
    let mut buf = vec![0u8; 65536];
    let n = stream.read(&mut buf).await.expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    // The next request's headers at one byte every 100 ms: its clock
    // starts at its first byte, and runs out before the idle timeout.
    let start = Instant::now();
    let written = dribble(&mut stream, request, Duration::from_millis(100)).await;
    let after = closed_after(&mut stream, start).await.expect("a dribbling request must be cut");
    assert!(written < request.len(), "all {written} bytes got through");
    assert!(after >= HEADER_READ, "cut after {after:?}");
    assert!(after < IDLE, "cut after {after:?}: the idle timeout, not the header-read one, applied");
    gw.shutdown().await;
}
