//! The connection's own parts; calls end to end are in `connection`'s tests.

use super::*;

#[test]
fn integers_take_their_prefix_then_seven_bits_a_byte() {
    // RFC 7541 C.1: 10 in a 5-bit prefix, 1337 in a 5-bit prefix.
    let mut out = Vec::new();
    integer(&mut out, 0, 5, 10);
    assert_eq!(out, [10]);
    out.clear();
    integer(&mut out, 0, 5, 1337);
    assert_eq!(out, [31, 154, 10]);
    out.clear();
    integer(&mut out, 0xe0, 5, 31);
    assert_eq!(out, [0xff, 0]);
}

#[test]
fn what_this_side_encodes_decodes_to_the_same_fields() {
    let target = Target::new(&"https://backend.example:8443".parse().expect("uri"), None);
    let (head, path_at) = head_block(&target);
    let mut block = head[..path_at].to_vec();
    indexed_name(&mut block, 4, b"/pkg.Service/Method");
    block.extend_from_slice(&head[path_at..]);
    new_name(&mut block, b"x-request-id", &[b'a'; 300]);
    let mut decoder = loona_hpack::Decoder::new();
    let fields = decoder.decode(&block).expect("decodes");
    let fields: Vec<(String, String)> = fields
        .into_iter()
        .map(|(n, v)| (String::from_utf8(n).expect("name"), String::from_utf8(v).expect("value")))
        .collect();
    let expected = [
        (":method", "POST".to_owned()),
        // No TLS configured: the scheme follows the connection, not the URL.
        (":scheme", "http".to_owned()),
        (":authority", "backend.example:8443".to_owned()),
        (":path", "/pkg.Service/Method".to_owned()),
        ("content-type", "application/grpc".to_owned()),
        ("te", "trailers".to_owned()),
        ("user-agent", concat!("protogate/", env!("CARGO_PKG_VERSION")).to_owned()),
        ("x-request-id", "a".repeat(300)),
    ];
    let expected: Vec<(String, String)> = expected.into_iter().map(|(n, v)| (n.to_owned(), v)).collect();
    assert_eq!(fields, expected);
}

#[test]
fn padding_is_cut_off_and_padding_past_the_frame_refused() {
    let padded = Bytes::from_static(&[2, b'h', b'i', 0, 0]);
    assert_eq!(&unpad(PADDED, padded).ok().expect("unpadded")[..], b"hi");
    assert_eq!(&unpad(0, Bytes::from_static(b"as is")).ok().expect("as is")[..], b"as is");
    assert!(unpad(PADDED, Bytes::from_static(&[4, 1, 2])).is_err());
    assert!(unpad(PADDED, Bytes::new()).is_err());
}

// ===== against a raw HTTP/2 peer that misbehaves on purpose =====

/// What the raw peer does once it has sent its SETTINGS.
#[derive(Clone, Copy)]
enum Peer {
    /// Reads everything, answers nothing (not even PINGs).
    Silent,
    /// Answers the first HEADERS it reads with a DATA frame on stream 0.
    Breaks,
}

/// A one-connection HTTP/2 peer on loopback; the frame types it read from
/// this side arrive on the channel.
async fn raw_peer(peer: Peer) -> (std::net::SocketAddr, tokio::sync::mpsc::UnboundedReceiver<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (seen, frames) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let Ok((mut tcp, _)) = listener.accept().await else { return };
        // The server's preface: an empty SETTINGS frame.
        if tcp.write_all(&[0, 0, 0, SETTINGS, 0, 0, 0, 0, 0]).await.is_err() {
            return;
        }
        let mut read = Vec::new();
        let mut at = PREFACE.len();
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => read.extend_from_slice(&buf[..n]),
            }
            while read.len() >= at + 9 {
                let len = usize::from(read[at]) << 16 | usize::from(read[at + 1]) << 8 | usize::from(read[at + 2]);
                if read.len() < at + 9 + len {
                    break;
                }
                let kind = read[at + 3];
                let _ = seen.send(kind);
                at += 9 + len;
                if kind == HEADERS && matches!(peer, Peer::Breaks) {
                    let _ = tcp.write_all(&[0, 0, 1, DATA, 0, 0, 0, 0, 0, b'x']).await;
                }
            }
        }
    });
    (addr, frames)
}

async fn call_raw(addr: std::net::SocketAddr, keep_alive: KeepAlive) -> Result<UnaryReply, Failure> {
    let target = Target::new(&format!("http://{addr}").parse().expect("uri"), None);
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let wire = Wire::handshake(tcp, &target, keep_alive).await.expect("handshake");
    let message = Bytes::from_static(&[0, 0, 0, 0, 0]);
    let opened = wire.open(&PathAndQuery::from_static("/t.S/M"), &[], &message).await;
    let Ok(opened) = opened else { panic!("the connection took no new stream") };
    opened.answer().await
}

/// The status of a call that must fail, within 5 s, before any answer.
async fn failed_at_opening(call: impl std::future::Future<Output = Result<UnaryReply, Failure>>) -> Status {
    match tokio::time::timeout(Duration::from_secs(5), call).await.expect("not hung") {
        Err(Failure::Opening(status)) => status,
        other => panic!("expected the call to fail at its opening, got {other:?}"),
    }
}

const SECONDS: KeepAlive = KeepAlive { interval: Duration::from_secs(30), timeout: Duration::from_secs(20) };

#[tokio::test]
async fn a_backend_that_stops_answering_pings_has_its_calls_failed() {
    let (addr, _) = raw_peer(Peer::Silent).await;
    let quick = KeepAlive { interval: Duration::from_millis(50), timeout: Duration::from_millis(100) };
    let status = failed_at_opening(call_raw(addr, quick)).await;
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("keep-alive"), "{}", status.message());
}

#[tokio::test]
async fn a_backend_that_breaks_the_protocol_gets_a_goaway_and_the_call_fails() {
    let (addr, mut frames) = raw_peer(Peer::Breaks).await;
    let status = failed_at_opening(call_raw(addr, SECONDS)).await;
    assert_eq!(status.code(), Code::Internal);
    assert!(status.message().contains("DATA on stream 0"), "{}", status.message());
    let mut kinds = Vec::new();
    while let Ok(Some(kind)) = tokio::time::timeout(Duration::from_secs(2), frames.recv()).await {
        kinds.push(kind);
        if kind == GOAWAY {
            return;
        }
    }
    panic!("no GOAWAY reached the backend: {kinds:?}");
}
