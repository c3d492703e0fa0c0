//! The unary call against a real HTTP/2 server on loopback (h2's server
//! side, so that a test can answer what no well-behaved gRPC server would).

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Response};
use tokio::net::TcpListener;

use super::*;
use crate::config::tls::UpstreamTlsConfig;

/// What the test server does with each call it receives.
#[derive(Clone)]
enum Answer {
    /// Status 200, the body in these DATA frames, then these trailers.
    Frames(Vec<Bytes>, Vec<(&'static str, &'static str)>),
    /// The response headers alone, ending the stream.
    HeadersOnly(u16, Vec<(&'static str, &'static str)>),
    /// The request's body back as the answer (it is one framed message),
    /// and its `x-big` header, if any, in the answer's headers.
    Echo,
    /// The stream reset with this reason once the request is read.
    Reset(h2::Reason),
    /// No answer: counts the call, and counts it again when this side
    /// resets the stream.
    Hang(Arc<AtomicUsize>),
}

/// Serves every connection on a loopback port with `answer`; each call's
/// request body is read first. Returns the address and a count of
/// connections accepted.
async fn server(answer: Answer) -> (SocketAddr, Arc<AtomicUsize>) {
    server_with(h2::server::Builder::new(), answer).await
}

/// [`server`], its connections set up by `builder`.
async fn server_with(builder: h2::server::Builder, answer: Answer) -> (SocketAddr, Arc<AtomicUsize>) {
    accepting(move |tcp| {
        let (answer, builder) = (answer.clone(), builder.clone());
        async move {
            let Ok(mut connection) = builder.handshake(tcp).await else { return };
            while let Some(Ok((request, mut respond))) = connection.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let big = request.headers().get("x-big").cloned();
                    let mut body = request.into_body();
                    let mut received = Vec::new();
                    while let Some(Ok(chunk)) = body.data().await {
                        let _ = body.flow_control().release_capacity(chunk.len());
                        received.extend_from_slice(&chunk);
                    }
                    match answer {
                        Answer::Echo => {
                            let mut head = Response::builder().status(200).header("content-type", "application/grpc");
                            if let Some(big) = big {
                                head = head.header("x-big", big);
                            }
                            let Ok(mut send) = respond.send_response(head.body(()).expect("head"), false) else {
                                return;
                            };
                            let _ = send.send_data(Bytes::from(received), false);
                            let _ = send.send_trailers(headers(&[OK]));
                        }
                        Answer::Reset(reason) => respond.send_reset(reason),
                        Answer::Hang(count) => {
                            count.fetch_add(1, Ordering::SeqCst);
                            if std::future::poll_fn(|cx| respond.poll_reset(cx)).await.is_ok() {
                                count.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Answer::Frames(frames, trailers) => {
                            let head = Response::builder().status(200).header("content-type", "application/grpc");
                            let Ok(mut send) = respond.send_response(head.body(()).expect("head"), false) else {
                                return;
                            };
                            for frame in frames {
                                let _ = send.send_data(frame, false);
                            }
                            let _ = send.send_trailers(headers(&trailers));
                        }
                        Answer::HeadersOnly(status, fields) => {
                            let mut head = Response::builder().status(status).body(()).expect("head");
                            *head.headers_mut() = headers(&fields);
                            let _ = respond.send_response(head, true);
                        }
                    }
                });
            }
        }
    })
    .await
}

/// A loopback port whose every connection `serve` handles in a task of its
/// own; its address and a count of connections accepted.
async fn accepting<F, Fut>(serve: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(tcp));
        }
    });
    (addr, accepted)
}

fn headers(fields: &[(&'static str, &'static str)]) -> HeaderMap {
    fields.iter().map(|(name, value)| (http::HeaderName::from_static(name), HeaderValue::from_static(value))).collect()
}

fn framed(message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(0);
    out.extend_from_slice(&u32::try_from(message.len()).expect("len").to_be_bytes());
    out.extend_from_slice(message);
    Bytes::from(out)
}

fn connection(addr: SocketAddr) -> Connection {
    let target = Arc::new(Target::new(&format!("http://{addr}").parse().expect("uri"), None));
    Connection::new(target, addr)
}

async fn call(connection: &Connection) -> Result<UnaryReply, Failure> {
    connection.unary(&PathAndQuery::from_static("/t.S/M"), &[], &framed(b"ask")).await
}

fn opening(result: Result<UnaryReply, Failure>) -> Status {
    match result {
        Err(Failure::Opening(status)) => status,
        other => panic!("expected a failure at opening, got {other:?}"),
    }
}

fn answering(result: Result<UnaryReply, Failure>) -> Status {
    match result {
        Err(Failure::Answering(status)) => status,
        other => panic!("expected a failure while answering, got {other:?}"),
    }
}

const OK: (&str, &str) = ("grpc-status", "0");

#[tokio::test]
async fn a_message_split_over_many_frames_is_put_back_together() {
    let whole = framed(b"hello, world");
    let frames = whole.iter().map(|b| Bytes::copy_from_slice(&[*b])).collect();
    let (addr, _) = server(Answer::Frames(frames, vec![OK, ("x-t", "v")])).await;
    let reply = call(&connection(addr)).await.expect("answer");
    assert_eq!(reply.message.as_deref(), Some(&b"hello, world"[..]));
    assert_eq!(reply.trailers.get("x-t").and_then(|v| v.to_str().ok()), Some("v"));
}

#[tokio::test]
async fn messages_after_the_first_are_skipped_and_frames_may_hold_several() {
    let mut both = framed(b"first").to_vec();
    both.extend_from_slice(&framed(b"second"));
    let (addr, _) = server(Answer::Frames(vec![Bytes::from(both)], vec![OK])).await;
    let reply = call(&connection(addr)).await.expect("answer");
    assert_eq!(reply.message.as_deref(), Some(&b"first"[..]));
}

#[tokio::test]
async fn an_ok_call_without_a_message_has_none() {
    let (addr, _) = server(Answer::Frames(vec![], vec![OK])).await;
    assert!(call(&connection(addr)).await.expect("answer").message.is_none());
}

#[tokio::test]
async fn trailers_only_errors_end_the_call_at_its_opening() {
    let fields = vec![("grpc-status", "5"), ("grpc-message", "no%20such%20thing")];
    let (addr, _) = server(Answer::HeadersOnly(200, fields)).await;
    let status = opening(call(&connection(addr)).await);
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "no such thing");
    // The backend's own status: nothing says the transport failed.
    assert!(std::error::Error::source(&status).is_none());
}

#[tokio::test]
async fn details_that_are_not_base64_are_dropped_not_a_crash() {
    let trailers = vec![("grpc-status", "3"), ("grpc-status-details-bin", "%%%not base64")];
    let (addr, _) = server(Answer::Frames(vec![], trailers)).await;
    let status = answering(call(&connection(addr)).await);
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.details().is_empty());
}

#[tokio::test]
async fn an_http_error_without_a_grpc_status_maps_by_the_grpc_table() {
    for (http, code) in [(503, Code::Unavailable), (404, Code::Unimplemented), (401, Code::Unauthenticated)] {
        let (addr, _) = server(Answer::HeadersOnly(http, vec![])).await;
        assert_eq!(opening(call(&connection(addr)).await).code(), code, "HTTP {http}");
    }
}

#[tokio::test]
async fn an_answer_without_a_status_or_cut_inside_a_message_is_an_error() {
    let (addr, _) = server(Answer::Frames(vec![framed(b"x")], vec![])).await;
    assert_eq!(answering(call(&connection(addr)).await).code(), Code::Unknown);

    let cut = framed(b"longer message").slice(..8);
    let (addr, _) = server(Answer::Frames(vec![cut], vec![OK])).await;
    assert_eq!(answering(call(&connection(addr)).await).code(), Code::Internal);
}

#[tokio::test]
async fn compressed_or_oversized_messages_are_refused() {
    let compressed = Bytes::from_static(&[1, 0, 0, 0, 1, b'x']);
    let (addr, _) = server(Answer::Frames(vec![compressed], vec![OK])).await;
    assert_eq!(answering(call(&connection(addr)).await).code(), Code::Internal);

    let mut huge = vec![0u8];
    huge.extend_from_slice(&u32::try_from(MAX_MESSAGE + 1).expect("len").to_be_bytes());
    let (addr, _) = server(Answer::Frames(vec![Bytes::from(huge)], vec![OK])).await;
    assert_eq!(answering(call(&connection(addr)).await).code(), Code::OutOfRange);
}

#[tokio::test]
async fn a_refused_connect_is_unavailable_with_the_connect_error_as_source() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let status = opening(call(&connection(addr)).await);
    assert_eq!(status.code(), Code::Unavailable);
    let source = std::error::Error::source(&status).expect("a source");
    assert!(source.downcast_ref::<ConnectError>().is_some(), "source: {source:?}");
}

#[tokio::test]
async fn calls_share_one_connection_and_a_closed_one_is_made_again() {
    let (addr, accepted) = server(Answer::Frames(vec![framed(b"a")], vec![OK])).await;
    let connection = connection(addr);
    let calls = (0..8).map(|_| call(&connection));
    for reply in futures_util::future::join_all(calls).await {
        reply.expect("answer");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "concurrent calls opened more than one connection");

    // Closed from this side (as a lost connection would be): the next
    // call connects again instead of failing.
    match &*connection.wire.lock().expect("slot") {
        State::Live(wire) => wire.close(),
        other => panic!("no open connection after calls: {other:?}"),
    }
    call(&connection).await.expect("answer after reconnecting");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn grpc_clients_call_through_it_too() {
    // tonic's health client over the connection: a streaming-capable
    // path (request body piped, response body read) end to end.
    let trailers = vec![OK];
    let serving = tonic_health::pb::HealthCheckResponse { status: 1 };
    let answer = framed(&prost::Message::encode_to_vec(&serving));
    let (addr, _) = server(Answer::Frames(vec![answer], trailers)).await;
    let mut client = tonic_health::pb::health_client::HealthClient::new(connection(addr));
    let reply = client.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.expect("check");
    assert_eq!(reply.get_ref().status, 1);
}

#[tokio::test]
async fn large_messages_go_and_come_as_the_windows_allow() {
    // 3 MiB each way: past the backend's 64 KiB default windows on the
    // way out, past this side's 1 MiB stream window on the way back.
    let (addr, _) = server(Answer::Echo).await;
    let message: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
    let connection = connection(addr);
    let path = PathAndQuery::from_static("/t.S/M");
    for _ in 0..2 {
        let reply = connection.unary(&path, &[], &framed(&message)).await.expect("answer");
        assert!(reply.message.as_deref() == Some(&message[..]), "the message came back changed");
    }
}

#[tokio::test]
async fn header_blocks_over_a_frame_go_and_come_in_continuation_frames() {
    let (addr, _) = server(Answer::Echo).await;
    let big = "b".repeat(40_000);
    let fields = [(http::HeaderName::from_static("x-big"), HeaderValue::from_str(&big).expect("value"))];
    let reply =
        connection(addr).unary(&PathAndQuery::from_static("/t.S/M"), &fields, &framed(b"m")).await.expect("answer");
    assert_eq!(reply.headers.get("x-big").and_then(|v| v.to_str().ok()), Some(&big[..]));
}

#[tokio::test]
async fn calls_past_the_backends_stream_limit_wait_their_turn() {
    let mut builder = h2::server::Builder::new();
    builder.max_concurrent_streams(1);
    let (addr, accepted) = server_with(builder, Answer::Echo).await;
    let connection = connection(addr);
    let calls = (0..6u8).map(|i| {
        let connection = connection.clone();
        async move { connection.unary(&PathAndQuery::from_static("/t.S/M"), &[], &framed(&[i])).await }
    });
    for (i, reply) in futures_util::future::join_all(calls).await.into_iter().enumerate() {
        assert_eq!(reply.expect("answer").message.as_deref(), Some(&[i as u8][..]));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_call_given_up_resets_its_stream() {
    let count = Arc::new(AtomicUsize::new(0));
    let (addr, _) = server(Answer::Hang(count.clone())).await;
    let connection = connection(addr);
    let given_up = tokio::time::timeout(Duration::from_millis(200), call(&connection)).await;
    assert!(given_up.is_err(), "the call was answered: {given_up:?}");
    for _ in 0..500 {
        if count.load(Ordering::SeqCst) == 2 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the backend saw no RST_STREAM (count {})", count.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_refused_stream_is_unavailable_and_may_be_retried() {
    let (addr, _) = server(Answer::Reset(h2::Reason::REFUSED_STREAM)).await;
    let status = opening(call(&connection(addr)).await);
    assert_eq!(status.code(), Code::Unavailable);
    let reset = std::error::Error::source(&status).and_then(|s| s.downcast_ref::<Reset>()).expect("a Reset source");
    assert_eq!(reset.reason, REFUSED_STREAM);

    let (addr, _) = server(Answer::Reset(h2::Reason::INTERNAL_ERROR)).await;
    assert_eq!(opening(call(&connection(addr)).await).code(), Code::Internal);
}

/// Messages out of `frames`, as the deframer cuts them.
fn deframe(frames: &[&[u8]]) -> (Vec<Vec<u8>>, bool) {
    let mut deframer = Deframer::default();
    let mut out = Vec::new();
    for frame in frames {
        deframer.push(Bytes::copy_from_slice(frame), &mut |m| out.push(m.to_vec())).expect("push");
    }
    (out, deframer.is_partial())
}

#[test]
fn the_deframer_cuts_messages_at_any_frame_boundary() {
    let mut wire = framed(b"first").to_vec();
    wire.extend_from_slice(&framed(b""));
    wire.extend_from_slice(&framed(&[7u8; 300]));
    let expected = vec![b"first".to_vec(), Vec::new(), vec![7u8; 300]];
    // Every way of cutting the bytes in two, and in pieces of every size.
    for cut in 0..=wire.len() {
        let (messages, partial) = deframe(&[&wire[..cut], &wire[cut..]]);
        assert_eq!(messages, expected, "cut at {cut}");
        assert!(!partial);
    }
    for size in 1..=wire.len() {
        let pieces: Vec<&[u8]> = wire.chunks(size).collect();
        assert_eq!(deframe(&pieces).0, expected, "pieces of {size}");
    }
    let (messages, partial) = deframe(&[&wire[..wire.len() - 1]]);
    assert_eq!(messages.len(), 2);
    assert!(partial, "a message cut short is still waiting");
}

#[tokio::test]
async fn grpc_clients_never_see_details_that_are_not_base64() {
    // tonic's own status parsing panics on such details (an abort in the
    // release build): the connection drops them from the trailers first.
    let trailers = vec![("grpc-status", "9"), ("grpc-status-details-bin", "%%%not base64")];
    let (addr, _) = server(Answer::Frames(vec![], trailers)).await;
    let mut client = tonic_health::pb::health_client::HealthClient::new(connection(addr));
    let status = client
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .expect_err("an error status");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.details().is_empty());
}

#[tokio::test]
async fn a_connection_closed_with_goaway_is_replaced_for_the_next_call() {
    // Each connection answers one call, then says GOAWAY (as a backend
    // going away or rotating its connections does).
    let (addr, accepted) = accepting(|tcp| async move {
        let Ok(mut connection) = h2::server::handshake(tcp).await else { return };
        if let Some(Ok((request, mut respond))) = connection.accept().await {
            let mut body = request.into_body();
            while let Some(Ok(chunk)) = body.data().await {
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            let head = Response::builder().status(200).header("content-type", "application/grpc");
            if let Ok(mut send) = respond.send_response(head.body(()).expect("head"), false) {
                let _ = send.send_data(framed(b"one"), false);
                let _ = send.send_trailers(headers(&[OK]));
            }
        }
        connection.graceful_shutdown();
        while connection.accept().await.is_some() {}
    })
    .await;
    let connection = connection(addr);
    for round in 1..=3 {
        let reply = call(&connection).await.unwrap_or_else(|err| panic!("call {round}: {err:?}"));
        assert_eq!(reply.message.as_deref(), Some(&b"one"[..]));
        closed_after_goaway(&connection).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3, "each call after a GOAWAY needs a new connection");
}

/// Waits (at most 5 s) until the connection in the slot has closed.
async fn closed_after_goaway(connection: &Connection) {
    for _ in 0..500 {
        let closed = match &*connection.wire.lock().expect("state") {
            State::Live(wire) => wire.is_closing(),
            State::Idle | State::Connecting(_) => true,
        };
        if closed {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the connection did not close after the backend's GOAWAY");
}

fn pem_pair(name: &str) -> (Vec<u8>, Vec<u8>) {
    let pair = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("certificate");
    (pair.cert.pem().into_bytes(), pair.signing_key.serialize_pem().into_bytes())
}

fn entry(ca: bool, identity: bool) -> UpstreamTlsConfig {
    UpstreamTlsConfig {
        pattern: "*".into(),
        ca: ca.then(|| "ca.pem".into()),
        cert: identity.then(|| "client.pem".into()),
        key: identity.then(|| "client.key".into()),
        server_name: None,
    }
}

#[test]
fn upstream_tls_reads_each_file_it_names_in_order() {
    let (ca, _) = pem_pair("ca");
    let (cert, key) = pem_pair("client");
    // A client identity with the web PKI roots: no CA file to skip.
    client_tls(&entry(false, true), "backend", &[cert.clone(), key.clone()]).expect("identity without a CA");
    client_tls(&entry(true, true), "backend", &[ca.clone(), cert.clone(), key.clone()]).expect("CA and identity");
    client_tls(&entry(true, false), "backend", &[ca]).expect("CA alone");
    let tls = client_tls(&entry(false, false), "10.0.0.1", &[]).expect("nothing named");
    assert_eq!(tls.config.alpn_protocols, [b"h2".to_vec()]);
}

#[test]
fn a_key_of_another_certificate_is_refused_naming_the_key() {
    let (cert, _) = pem_pair("client");
    let (_, other_key) = pem_pair("other");
    let err = client_tls(&entry(false, true), "backend", &[cert, other_key]).expect_err("a mismatched key");
    assert_eq!(err.path, "client.key", "{err}");
    let err = client_tls(&entry(false, false), "not a name!", &[]).expect_err("a bad server name");
    assert!(err.reason.contains("not a server name"), "{err}");
}
