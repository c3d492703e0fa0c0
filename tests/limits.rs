//! The limits a request meets before any work (DESIGN §10):
//! `limits.max_concurrent_requests` sheds with a 503 envelope, code 14 and
//! `Retry-After`, freeing up as requests end; an oversized request target
//! (414) or header block (`limits.max_header_bytes`, 431) is refused in the
//! envelope over HTTP/1.1 and HTTP/2 alike.

mod common;

use common::{assert_error, metrics, start, Backend, Descriptors};
use reqwest::Method;

#[tokio::test]
async fn requests_over_the_limit_are_shed_and_the_rest_served() {
    let backend = Backend::test_service().await;
    let yaml = format!(
        "upstreams: {{ \"*\": \"{}\" }}\nlimits: {{ max_concurrent_requests: 2 }}\n\
         cors: {{ allow_origins: [\"https://app.example.com\"] }}\n",
        backend.url()
    );
    let gateway = start(Descriptors::test_service(), yaml, vec![backend]).await;
    // Six at once, each held by the backend far longer than it takes to
    // send the others: two are served, four shed.
    let origin = [("origin", "https://app.example.com")];
    let replies =
        futures_util::future::join_all((0..6).map(|_| gateway.request(Method::GET, "/test/sleep/1500", &origin, None)))
            .await;
    let served = replies.iter().filter(|reply| reply.status == 200).count();
    let shed: Vec<_> = replies.iter().filter(|reply| reply.status == 503).collect();
    assert_eq!((served, shed.len()), (2, 4), "{:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
    for reply in shed {
        let envelope = assert_error(reply, 503, 14);
        assert!(envelope["message"].as_str().is_some_and(|m| m.contains("2 concurrent")), "{envelope}");
        assert_eq!(reply.header("retry-after"), Some("1"));
        // A page can read why it was refused.
        assert_eq!(reply.header("access-control-allow-origin"), Some("https://app.example.com"));
    }
    // The two backend calls were the only ones made.
    assert_eq!(gateway.backend_calls(), 2);
    // Nothing is held once they have ended.
    let samples = metrics::samples(&gateway.gateway);
    assert_eq!(metrics::sample(&samples, "protogate_inflight_requests"), 0.0);
    let shed_count = r#"protogate_http_requests_total{method="GET",route="unmatched",status="503"}"#;
    assert_eq!(metrics::sample(&samples, shed_count), 4.0, "{samples:?}");
    assert_eq!(gateway.get("/test/metadata").await.status, 200);
    gateway.shutdown().await;
}

/// An HTTP/2 client (prior knowledge) to the gateway.
fn h2_client() -> reqwest::Client {
    reqwest::Client::builder().http2_prior_knowledge().build().expect("h2 client")
}

#[tokio::test]
async fn an_oversized_target_or_header_block_is_refused_in_the_envelope() {
    let backend = Backend::test_service().await;
    let yaml = format!("upstreams: {{ \"*\": \"{}\" }}\nlimits: {{ max_header_bytes: 8KiB }}\n", backend.url());
    let gateway = start(Descriptors::test_service(), yaml, vec![backend]).await;
    let long_target = format!("/test/query?string_value={}", "a".repeat(9000));
    let big_header = "b".repeat(10_000);
    for (name, client) in [("HTTP/1.1", common::http_client()), ("HTTP/2", h2_client())] {
        let reply = common::Reply::read(client.get(gateway.url(&long_target)).send().await.expect("send")).await;
        let envelope = assert_error(&reply, 414, 8);
        assert!(envelope["message"].as_str().is_some_and(|m| m.contains("request target")), "{name}: {envelope}");

        let request = client.get(gateway.url("/test/metadata")).header("x-big", &big_header);
        let reply = common::Reply::read(request.send().await.expect("send")).await;
        let envelope = assert_error(&reply, 431, 8);
        assert!(envelope["message"].as_str().is_some_and(|m| m.contains("max_header_bytes")), "{name}: {envelope}");

        // Under the limits, served as usual.
        let request = client.get(gateway.url("/test/metadata")).header("x-small", "c".repeat(1000));
        assert_eq!(common::Reply::read(request.send().await.expect("send")).await.status, 200, "{name}");
    }
    // Neither refusal reached the backend.
    assert_eq!(gateway.backend_calls(), 2);
    gateway.shutdown().await;
}

/// Writes `request` as is on a new connection and reads everything the
/// gateway sends back until it closes.
async fn raw_exchange(gateway: &common::TestGateway, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(gateway.authority()).await.expect("connect");
        // The gateway may refuse and close before it has read everything.
        let _ = stream.write_all(request).await;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        String::from_utf8(answer).expect("a text answer")
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), exchange).await.expect("answered in time")
}

/// The envelope of a refusal: `answer` is one HTTP/1.1 response with
/// `status`, the JSON content type, a content length that fits its body,
/// `connection: close`, and `google.rpc.Status` with `code` as body.
#[track_caller]
fn refusal_envelope(answer: &str, status: u16, code: i64) -> serde_json::Value {
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("not an HTTP response: {answer:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    assert!(status_line.starts_with(&format!("HTTP/1.1 {status} ")), "{answer:?}");
    let headers: Vec<&str> = lines.collect();
    assert!(headers.contains(&"content-type: application/json"), "{answer:?}");
    assert!(headers.contains(&format!("content-length: {}", body.len()).as_str()), "{answer:?}");
    assert!(headers.contains(&"connection: close"), "{answer:?}");
    let envelope: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer:?}"));
    assert_eq!(envelope["code"], code, "{envelope}");
    assert!(envelope["message"].as_str().is_some_and(|m| !m.is_empty()), "{envelope}");
    assert!(envelope["details"].is_array(), "{envelope}");
    envelope
}

#[tokio::test]
async fn requests_hyper_cannot_read_are_refused_in_the_envelope() {
    let backend = Backend::test_service().await;
    // hyper reads heads of up to 2 × 32 KiB + 8 KiB: room for a target
    // over its own 64 KiB limit.
    let yaml = format!("upstreams: {{ \"*\": \"{}\" }}\nlimits: {{ max_header_bytes: 32KiB }}\n", backend.url());
    let gateway = start(Descriptors::test_service(), yaml, vec![backend]).await;
    let many_fields: String = (0..101).map(|i| format!("x-field-{i}: a\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, u16, i64, &str)> = vec![
        (
            "a header line without a colon",
            b"GET /test/metadata HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n".to_vec(),
            400,
            3,
            "malformed",
        ),
        ("a bad method token", b"G@T /test/metadata HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(), 400, 3, "malformed"),
        ("an unknown version", b"GET /test/metadata HTTP/9.9\r\nhost: x\r\n\r\n".to_vec(), 400, 3, "malformed"),
        (
            "a NUL in a header value",
            b"GET /test/metadata HTTP/1.1\r\nhost: x\r\nx-a: a\0b\r\n\r\n".to_vec(),
            400,
            3,
            "malformed",
        ),
        ("spaces in the target", b"GET /test/a b HTTP/1.1\r\nhost: x\r\n\r\n".to_vec(), 400, 3, "malformed"),
        (
            "two content lengths",
            b"POST /test/echo HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n".to_vec(),
            400,
            3,
            "malformed",
        ),
        ("not HTTP at all", b"\x16\x03\x01\x00\x05hello\r\n\r\n".to_vec(), 400, 3, "malformed"),
        (
            "101 header fields",
            format!("GET /test/metadata HTTP/1.1\r\n{many_fields}\r\n").into_bytes(),
            431,
            8,
            "100 header fields",
        ),
        (
            "a head over hyper's buffer",
            format!("GET /test/metadata HTTP/1.1\r\nx-big: {}\r\n\r\n", "b".repeat(200_000)).into_bytes(),
            431,
            8,
            "max_header_bytes",
        ),
        (
            "a target over 64 KiB",
            format!("GET /test/query?string_value={} HTTP/1.1\r\n\r\n", "a".repeat(70_000)).into_bytes(),
            414,
            8,
            "request target",
        ),
    ];
    for (name, request, status, code, words) in cases {
        let answer = raw_exchange(&gateway, &request).await;
        let envelope = refusal_envelope(&answer, status, code);
        assert!(envelope["message"].as_str().is_some_and(|m| m.contains(words)), "{name}: {envelope}");
        // The gateway serves on.
        assert_eq!(gateway.get("/test/metadata").await.status, 200, "after {name}");
    }
    // A malformed request behind a served one on the same connection: the
    // first answer is untouched, the refusal after it is the envelope.
    let answer = raw_exchange(&gateway, b"GET /test/metadata HTTP/1.1\r\nhost: x\r\n\r\nG@T / HTTP/1.1\r\n\r\n").await;
    let second = answer.rfind("HTTP/1.1 ").expect("two answers");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer:?}");
    assert!(answer[..second].contains("content-type: application/json"), "{answer:?}");
    refusal_envelope(&answer[second..], 400, 3);
    // The gateway's own refusals are left as they are.
    let long_target =
        format!("GET /test/query?string_value={} HTTP/1.1\r\nconnection: close\r\n\r\n", "a".repeat(9000));
    let answer = raw_exchange(&gateway, long_target.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{answer:?}");
    assert!(answer.contains("\r\nx-request-id: ") && answer.contains("the limit is 8192"), "{answer:?}");
    // Only the served requests reached the backend.
    assert_eq!(gateway.backend_calls(), 11);
    gateway.shutdown().await;
}

#[tokio::test]
async fn http2_streams_and_pings_follow_the_limits() {
    use std::future::Future as _;
    use std::pin::Pin;
    use std::task::Poll;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let wait = std::time::Duration::from_secs(10);
    let backend = Backend::test_service().await;
    let yaml = format!(
        "upstreams: {{ \"*\": \"{}\" }}\nlimits: {{ http2_max_concurrent_streams: 2, http2_keep_alive_interval: 200ms }}\n",
        backend.url()
    );
    let gateway = start(Descriptors::test_service(), yaml, vec![backend]).await;

    let tcp = tokio::net::TcpStream::connect(gateway.authority()).await.expect("connect");
    let (client, mut connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    // The limit comes in the gateway's SETTINGS: drive the connection
    // until they are in.
    let settings = futures_util::future::poll_fn(|cx| {
        if let Poll::Ready(ended) = Pin::new(&mut connection).poll(cx) {
            panic!("the connection ended: {ended:?}");
        }
        match connection.max_concurrent_send_streams() {
            2 => Poll::Ready(()),
            _ => Poll::Pending,
        }
    });
    tokio::time::timeout(wait, settings).await.expect("the gateway's SETTINGS");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    // Three at once on the connection: the client holds the third back
    // until a stream is free, and all are served.
    let url = gateway.url("/test/sleep/300");
    let requests = (0..3).map(|_| {
        let client = client.clone();
        let request = http::Request::get(&url).body(()).expect("request");
        async move {
            let mut client = client.ready().await.expect("ready");
            let (response, _) = client.send_request(request, true).expect("send");
            response.await.expect("response").status()
        }
    });
    let statuses = tokio::time::timeout(wait, futures_util::future::join_all(requests)).await.expect("served");
    assert_eq!(statuses, vec![200; 3]);

    // Pings at `http2_keep_alive_interval` (30 s by default): read frames
    // off a bare connection until one comes.
    let mut tcp = tokio::net::TcpStream::connect(gateway.authority()).await.expect("connect");
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.expect("preface");
    let ping = async {
        loop {
            let mut header = [0u8; 9];
            tcp.read_exact(&mut header).await.expect("a frame");
            let len = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            tcp.read_exact(&mut vec![0; len]).await.expect("its payload");
            const PING: u8 = 0x6;
            const ACK: u8 = 0x1;
            if header[3] == PING && header[4] & ACK == 0 {
                break;
            }
        }
    };
    tokio::time::timeout(wait, ping).await.expect("a ping from the gateway");
    gateway.shutdown().await;
}
