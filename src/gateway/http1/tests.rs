//! The plain loop against hyper itself: the same bytes in must give the same
//! bytes out (the `date` value aside), whichever of the two serves them.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use http_body::Frame;
use http_body_util::{BodyExt as _, StreamBody};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{duplex, AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};
use tower::ServiceExt as _;

use super::*;
use crate::http::Body as Answer;

/// Answers by path. `/close` answers with `connection: close`, so that every
/// exchange below ends with both servers closing.
fn answer(path: &str, body: Bytes) -> Response<Answer> {
    let mut response = match path {
        "/ok" => Response::new(Answer::full(r#"{"ok":true}"#)),
        "/echo" => Response::new(Answer::full(body)),
        "/large" => Response::new(Answer::full("x".repeat(100_000))),
        "/empty" => Response::new(Answer::empty()),
        "/none" => {
            let mut response = Response::new(Answer::empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        }
        "/stream" => {
            let frames = [
                Ok::<_, Infallible>(Frame::data(Bytes::from("one\n"))),
                Ok(Frame::data(Bytes::new())),
                Ok(Frame::data(Bytes::from("two and more\n".repeat(3)))),
                // Past what is copied behind the head.
                Ok(Frame::data(Bytes::from("large\n".repeat(4000)))),
                Ok(Frame::trailers(HeaderMap::new())),
            ];
            Response::new(Answer::stream(StreamBody::new(futures_util::stream::iter(frames))))
        }
        "/refuse" | "/close" => {
            let mut response = Response::new(Answer::full(r#"{"code":3}"#));
            if path == "/refuse" {
                *response.status_mut() = StatusCode::BAD_REQUEST;
            }
            response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
            response
        }
        _ => {
            let mut response = Response::new(Answer::full("{}"));
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
    };
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.append("x-many", HeaderValue::from_static("1"));
    headers.append("x-many", HeaderValue::from_static("2"));
    response
}

type Service = tower::util::BoxCloneService<Request<RequestBody>, Response<Answer>, Infallible>;

fn service() -> Service {
    tower::service_fn(|req: Request<RequestBody>| async move {
        let path = req.uri().path().to_owned();
        // `/refuse` answers without reading the body.
        let body = match path.as_str() {
            "/refuse" => Bytes::new(),
            _ => req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default(),
        };
        Ok::<_, Infallible>(answer(&path, body))
    })
    .boxed_clone()
}

/// Sends `writes` (pausing between them, so that they arrive apart) to a
/// server on the other end of `client`, and reads until it closes.
async fn exchange(client: DuplexStream, writes: &[&[u8]]) -> String {
    let (mut read_half, mut write_half) = tokio::io::split(client);
    let writing = async {
        for write in writes {
            // An empty write stands for closing this side.
            if write.is_empty() {
                let _ = write_half.shutdown().await;
            }
            // A server that closed early makes the rest fail: that is its
            // answer too.
            let _ = write_half.write_all(write).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        write_half
    };
    let reading = async {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), read_half.read_to_end(&mut out)).await;
        out
    };
    let (out, _open) = tokio::join!(reading, writing);
    without_dates(&String::from_utf8_lossy(&out))
}

fn without_dates(text: &str) -> String {
    text.split("\r\n")
        .map(|line| if line.starts_with("date: ") && line.ends_with(" GMT") { "date: -" } else { line })
        .collect::<Vec<_>>()
        .join("\r\n")
}

async fn by_hyper(writes: &[&[u8]]) -> String {
    let (client, server) = duplex(1 << 20);
    let service = service().map_request(|req: Request<hyper::body::Incoming>| req.map(RequestBody::from));
    tokio::spawn(
        hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .serve_connection(TokioIo::new(server), TowerToHyperService::new(service)),
    );
    exchange(client, writes).await
}

/// Served here; a handover finishes under hyper as the listener does it.
async fn by_plain(writes: &[&[u8]]) -> (String, bool) {
    let (client, server) = duplex(1 << 20);
    let handed = Arc::new(AtomicBool::new(false));
    let handed_too = handed.clone();
    tokio::spawn(async move {
        let flags = Flags::default();
        if let Outcome::Handover { io, read } = serve(server, service(), &flags, 64 << 10).await {
            handed_too.store(true, Ordering::Relaxed);
            let service = service().map_request(|req: Request<hyper::body::Incoming>| req.map(RequestBody::from));
            let replay = Replay::new(read.freeze(), io);
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(TokioIo::new(replay), TowerToHyperService::new(service))
                .await;
        }
    });
    let out = exchange(client, writes).await;
    (out, handed.load(Ordering::Relaxed))
}

const CLOSE: &[u8] = b"GET /close HTTP/1.1\r\nhost: a\r\n\r\n";

async fn same_as_hyper(writes: &[&[u8]], handed_over: bool) -> String {
    let expected = by_hyper(writes).await;
    let (got, handed) = by_plain(writes).await;
    assert_eq!(got, expected, "for {:?}", writes.iter().map(|w| String::from_utf8_lossy(w)).collect::<Vec<_>>());
    assert_eq!(handed, handed_over, "handed over");
    got
}

#[tokio::test]
async fn plain_requests_are_answered_byte_for_byte_as_hyper_answers_them() {
    // Pipelined, in one write.
    let got =
        same_as_hyper(&[b"GET /ok HTTP/1.1\r\nhost: a\r\n\r\nGET /nowhere HTTP/1.1\r\nhost: a\r\n\r\n", CLOSE], false)
            .await;
    assert!(got.starts_with("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-many: 1\r\nx-many: 2\r\ncontent-length: 11\r\ndate: -\r\n\r\n{\"ok\":true}HTTP/1.1 404 Not Found\r\n"), "{got}");
    // A body in the same write, and one whose head and body come apart.
    let post = b"POST /echo HTTP/1.1\r\nhost: a\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\n";
    same_as_hyper(&[&[&post[..], b"{\"a\":[1]}"].concat(), CLOSE], false).await;
    same_as_hyper(&[post, b"{\"a\"", b":[1]}", CLOSE], false).await;
    // A client that closes its side once its request is sent: answered
    // when the answer is at once.
    let got = same_as_hyper(&[b"GET /ok HTTP/1.1\r\n\r\n", b""], false).await;
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    // A head in pieces.
    same_as_hyper(&[b"GET /ok HT", b"TP/1.1\r\nhost:", b" a\r\n\r\n", CLOSE], false).await;
    // Streamed (chunked, the empty frame and the trailers left out),
    // empty, and no body at all.
    let got = same_as_hyper(&[b"GET /stream HTTP/1.1\r\n\r\n", CLOSE], false).await;
    assert!(got.contains("transfer-encoding: chunked\r\ndate: -\r\n\r\n4\r\none\n\r\n27\r\n"), "{got}");
    same_as_hyper(&[b"DELETE /empty HTTP/1.1\r\n\r\nPUT /none HTTP/1.1\r\ncontent-length: 0\r\n\r\n", CLOSE], false)
        .await;
    // A large answer, written from where it is.
    let got = same_as_hyper(&[b"GET /large HTTP/1.1\r\n\r\n", CLOSE], false).await;
    let whole = format!("content-length: 100000\r\ndate: -\r\n\r\n{}HTTP", "x".repeat(100_000));
    assert!(got.contains(&whole), "{}", &got[..200]);
}

#[tokio::test]
async fn an_answer_before_the_body_closes_the_connection_as_under_hyper() {
    // The body unread, whole or in part: nothing after it is read as a
    // next request.
    let refused = b"POST /refuse HTTP/1.1\r\ncontent-length: 4\r\n\r\nabcdGET /ok HTTP/1.1\r\n\r\n";
    let got = same_as_hyper(&[refused], false).await;
    assert!(got.starts_with("HTTP/1.1 400 Bad Request\r\n") && !got.contains("200 OK"), "{got}");
    same_as_hyper(&[b"POST /refuse HTTP/1.1\r\ncontent-length: 40\r\n\r\nabcd"], false).await;
}

#[tokio::test]
async fn what_is_not_plain_is_handed_to_hyper_with_what_was_read() {
    let chunked = b"POST /echo HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    // Served here first, then handed over mid-connection.
    let got = same_as_hyper(&[b"GET /ok HTTP/1.1\r\n\r\n", chunked, CLOSE], true).await;
    assert!(got.contains("content-length: 5\r\ndate: -\r\n\r\nhello"), "{got}");
    for request in [
        &b"GET /ok HTTP/1.0\r\n\r\n"[..],
        b"OPTIONS /ok HTTP/1.1\r\n\r\n",
        b"GET /ok HTTP/1.1\r\nConnection: keep-alive\r\n\r\n",
        b"GET /ok HTTP/1.1\r\nexpect: 100-continue\r\n\r\n",
        b"GET /ok HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\nx",
        b"GET /ok HTTP/1.1\r\ncontent-length: +1\r\n\r\nx",
        b"GET http://a/ok HTTP/1.1\r\n\r\n",
        b"GET /ok HTTP/1.1\r\nbad header\r\n\r\n",
        b"GET /o k HTTP/1.1\r\n\r\n",
        // httparse takes `<` in the target, `http` does not: hyper gets
        // the request as sent, and refuses it.
        b"POST /a<b HTTP/1.1\r\ncontent-length: 2\r\n\r\nhi",
    ] {
        same_as_hyper(&[request, CLOSE], true).await;
    }
    let many: String = (0..MAX_FIELDS + 1).map(|i| format!("x-{i}: v\r\n")).collect();
    same_as_hyper(&[format!("GET /ok HTTP/1.1\r\n{many}\r\n").as_bytes(), CLOSE], true).await;
    let large =
        format!("POST /echo HTTP/1.1\r\ncontent-length: {}\r\n\r\n{}", WHOLE_BODY + 1, "x".repeat(WHOLE_BODY + 1));
    same_as_hyper(&[large.as_bytes(), CLOSE], true).await;
}

#[tokio::test]
async fn a_client_that_goes_away_ends_its_request() {
    let started = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    struct Guard(Arc<AtomicUsize>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    let (started_too, dropped_too) = (started.clone(), dropped.clone());
    let waits = tower::service_fn(move |_: Request<RequestBody>| {
        started_too.fetch_add(1, Ordering::Relaxed);
        let guard = Guard(dropped_too.clone());
        async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Ok::<_, Infallible>(Response::new(Answer::empty()))
        }
    });
    let (mut client, server) = duplex(1 << 16);
    let served =
        tokio::spawn(
            async move { matches!(serve(server, waits, &Flags::default(), 1 << 16).await, Outcome::Closed(_)) },
        );
    client.write_all(b"GET /wait HTTP/1.1\r\n\r\n").await.expect("write");
    while started.load(Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(dropped.load(Ordering::Relaxed), 0);
    drop(client);
    assert!(tokio::time::timeout(Duration::from_secs(5), served).await.expect("in time").expect("joined"));
    assert_eq!(dropped.load(Ordering::Relaxed), 1, "the request's future is dropped");
}

#[test]
fn a_head_is_parsed_once_its_blank_line_is_here() {
    let head = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";
    for end in 0..head.len() - 1 {
        assert!(!blank_line_from(&head[..end], 0), "{end}");
    }
    assert!(blank_line_from(head, 0));
    // Found again when only its last byte is new, and with bare LFs.
    assert!(blank_line_from(head, head.len() - 1));
    assert!(blank_line_from(b"GET / HTTP/1.1\nhost: a\n\n", 20));
}

#[test]
fn chunk_sizes_are_upper_case_hex() {
    for (size, line) in [(1, "1\r\n"), (10, "A\r\n"), (255, "FF\r\n"), (65_536, "10000\r\n")] {
        let mut out = Vec::new();
        chunk_size(&mut out, size);
        assert_eq!(out, line.as_bytes());
    }
}
