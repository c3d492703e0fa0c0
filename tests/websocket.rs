//! Streaming calls over a WebSocket, end to end (DESIGN §6): the gateway in
//! front of the real test service, and a real WebSocket client
//! (tokio-tungstenite) over loopback.
//!
//! What is checked is what a client and the backend can observe: the `101`
//! (or the refusal envelope instead of it), one JSON message per text frame
//! each way, answers arriving while the client is still sending, the call's
//! status in the close frame (1000, or 1011 with the `google.rpc.Status`
//! JSON, cut to 123 bytes after a last `{"error": Status}` text frame when
//! it does not fit), and how the backend saw its call end (StreamStats:
//! completed when the client half-closed, cancelled when the client or the
//! gateway gave up). Every read is bounded by [`WAIT`], every test by
//! [`TEST_LIMIT`].

mod common;

use std::future::Future;
use std::time::Duration;

use common::api::Config;
use common::jwt::sha256_hex;
use common::{assert_error, start_test_service, start_test_service_with, violation_fields, Reply, TestGateway};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The longest any one read, write or upgrade may take.
const WAIT: Duration = Duration::from_secs(10);
/// The longest one test may take.
const TEST_LIMIT: Duration = Duration::from_secs(60);
/// The longest close reason the protocol allows (125 bytes less the code).
const MAX_REASON: usize = 123;

/// The headers of a well-formed upgrade request, for the refusals a
/// WebSocket client would only report as a failed handshake (sent with
/// reqwest, which reads the whole answer).
const UPGRADE: [(&str, &str); 4] = [
    ("connection", "upgrade"),
    ("upgrade", "websocket"),
    ("sec-websocket-version", "13"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

// ---- the client ----------------------------------------------------------

/// `test`, or a panic once it has run for [`TEST_LIMIT`].
async fn bounded(test: impl Future<Output = ()>) {
    tokio::time::timeout(TEST_LIMIT, test).await.unwrap_or_else(|_| panic!("the test ran over {TEST_LIMIT:?}"));
}

/// `future`, or a panic naming `what` after [`WAIT`].
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future).await.unwrap_or_else(|_| panic!("not within {WAIT:?}: {what}"))
}

/// One WebSocket session with the gateway.
struct Ws {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    /// Upgrades `GET path` (whatever method the route's binding names);
    /// panics unless the answer is `101`.
    async fn open(gw: &TestGateway, path: &str) -> Ws {
        Self::open_with(gw, path, &[]).await
    }

    /// [`Ws::open`] with extra request headers.
    async fn open_with(gw: &TestGateway, path: &str, headers: &[(&str, &str)]) -> Ws {
        let url = format!("ws://{}{path}", gw.authority());
        let mut request = url.as_str().into_client_request().expect("a WebSocket request");
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).expect("header name");
            request.headers_mut().insert(name, HeaderValue::from_str(value).expect("header value"));
        }
        let upgraded = within(&format!("upgrade of {path}"), tokio_tungstenite::connect_async(request)).await;
        let (socket, response) = upgraded.unwrap_or_else(|e| panic!("upgrade of {path}: {e}"));
        assert_eq!(response.status().as_u16(), 101, "upgrade of {path}");
        Ws { socket }
    }

    async fn send(&mut self, message: Message) {
        within("sending a frame", self.socket.send(message)).await.unwrap_or_else(|e| panic!("sending a frame: {e}"));
    }

    /// One JSON message as one text frame.
    async fn send_json(&mut self, message: &Value) {
        self.send(Message::text(message.to_string())).await;
    }

    /// The client's close frame (code 1000): its end of input.
    async fn send_close(&mut self) {
        self.send(Message::Close(None)).await;
    }

    /// The next frame from the gateway.
    async fn next(&mut self, what: &str) -> Message {
        match within(what, self.socket.next()).await {
            Some(Ok(message)) => message,
            Some(Err(e)) => panic!("{what}: {e}"),
            None => panic!("{what}: the connection ended"),
        }
    }

    /// The next frame, which must be a text frame holding JSON.
    async fn next_json(&mut self, what: &str) -> Value {
        match self.next(what).await {
            Message::Text(text) => serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{what}: a text frame that is not JSON ({e}): {}", text.as_str())),
            other => panic!("{what}: expected a text frame, got {other:?}"),
        }
    }

    /// The next frame, which must be a close frame with a code.
    async fn next_close(&mut self, what: &str) -> CloseFrame {
        match self.next(what).await {
            Message::Close(Some(frame)) => frame,
            other => panic!("{what}: expected a close frame, got {other:?}"),
        }
    }

    /// The next frame, which must be the close of a call that ended OK.
    async fn expect_normal_close(&mut self, what: &str) {
        let frame = self.next_close(what).await;
        assert_eq!(u16::from(frame.code), 1000, "{what}: close reason {:?}", frame.reason.as_str());
        assert!(frame.reason.is_empty(), "{what}: a normal close with a reason: {:?}", frame.reason.as_str());
    }

    /// The next frames, which must tell that the call ended with an error:
    /// close 1011 with the Status JSON as reason, or, when the Status is
    /// longer than a reason can be, a last text frame `{"error": Status}`
    /// and a close whose reason is the Status cut to [`MAX_REASON`] bytes.
    /// Returns the Status.
    async fn expect_error_close(&mut self, what: &str) -> Value {
        match self.next(what).await {
            Message::Close(Some(frame)) => {
                assert_eq!(u16::from(frame.code), 1011, "{what}: close reason {:?}", frame.reason.as_str());
                let reason = frame.reason.as_str();
                assert!(reason.len() <= MAX_REASON, "{what}: a reason of {} bytes: {reason}", reason.len());
                serde_json::from_str(reason)
                    .unwrap_or_else(|e| panic!("{what}: the close reason is not a whole Status ({e}): {reason}"))
            }
            Message::Text(text) => {
                #[derive(serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Last<'a> {
                    #[serde(borrow)]
                    error: &'a RawValue,
                }
                let last: Last<'_> = serde_json::from_str(&text).unwrap_or_else(|e| {
                    panic!("{what}: a text frame before the close that is not {{\"error\": Status}} ({e}): {text}")
                });
                let full = last.error.get().to_owned();
                assert!(
                    full.len() > MAX_REASON,
                    "{what}: a Status of {} bytes fits a close reason, yet came in a text frame: {full}",
                    full.len()
                );
                let frame = self.next_close(&format!("{what}: the close after the error frame")).await;
                assert_eq!(u16::from(frame.code), 1011, "{what}: close reason {:?}", frame.reason.as_str());
                let reason = frame.reason.as_str();
                assert!(reason.len() <= MAX_REASON, "{what}: a reason of {} bytes: {reason}", reason.len());
                assert!(!reason.is_empty(), "{what}: an error close without a reason");
                assert!(
                    full.starts_with(reason),
                    "{what}: the reason {reason:?} is not the start of the Status {full}"
                );
                serde_json::from_str(&full).unwrap_or_else(|e| panic!("{what}: the error frame's Status ({e}): {full}"))
            }
            other => panic!("{what}: expected an error close, got {other:?}"),
        }
    }
}

// ---- what the answers say -------------------------------------------------

/// An integer field of proto3 JSON: absent when 0, a number for 32 bits.
fn int(message: &Value, field: &str) -> i64 {
    match message.get(field) {
        None => 0,
        Some(value) => value.as_i64().unwrap_or_else(|| panic!("`{field}` is not a number in {message}")),
    }
}

fn text<'a>(message: &'a Value, field: &str) -> &'a str {
    message.get(field).and_then(Value::as_str).unwrap_or_default()
}

/// Asserts a Chat answer: the message `name` sent as the `index`-th, with
/// the path's `tag`.
#[track_caller]
fn assert_item(answer: &Value, index: i64, name: &str, tag: &str) {
    assert_eq!(int(answer, "index"), index, "index of {answer}");
    assert_eq!(text(answer, "name"), name, "name of {answer}");
    assert_eq!(text(answer, "tag"), tag, "tag of {answer}");
}

/// Asserts a `google.rpc.Status` of `code` and returns its message.
#[track_caller]
fn assert_status(status: &Value, code: i64) -> String {
    assert_eq!(status["code"], json!(code), "code of {status}");
    let message = status["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "no message in {status}");
    assert!(status.get("details").is_none_or(Value::is_array), "details of {status}");
    message.to_owned()
}

/// The gateway still answers ordinary requests and opens new sessions.
async fn assert_still_serving(gw: &TestGateway) {
    let echo = gw.post_json("/test/echo", r#"{"stringValue": "still here"}"#).await;
    assert_eq!(echo.status, 200, "{}", echo.text());
    assert_eq!(echo.json()["stringValue"], "still here");
    let query = gw.get("/test/query?stringValue=q").await;
    assert_eq!(query.status, 200, "{}", query.text());

    let mut ws = Ws::open(gw, "/test/chat/again").await;
    ws.send_json(&json!({"name": "after"})).await;
    assert_item(&ws.next_json("an answer in a later session").await, 0, "after", "again");
    ws.send_close().await;
    ws.expect_normal_close("the close of a later session").await;
}

/// `GET path` with the upgrade headers (`UPGRADE`, some replaced or left
/// out by `edit`), read to the end.
async fn upgrade_request(gw: &TestGateway, path: &str, edit: impl Fn(&mut Vec<(&str, &str)>)) -> Reply {
    let mut headers = UPGRADE.to_vec();
    edit(&mut headers);
    gw.request(reqwest::Method::GET, path, &headers, None).await
}

/// Asserts that `reply` is not a switch of protocols.
#[track_caller]
fn assert_not_upgraded(reply: &Reply) {
    assert_ne!(reply.status, 101);
    assert_eq!(reply.header("upgrade"), None, "{:?}", reply.headers);
    assert_eq!(reply.header("sec-websocket-accept"), None, "{:?}", reply.headers);
}

// ---- bidirectional -----------------------------------------------------------

#[tokio::test]
async fn chat_upgrades_with_get_and_answers_each_message_as_it_arrives() {
    bounded(async {
        let gw = start_test_service().await;
        // Chat's binding is `post: "/test/chat/{tag}"`; the upgrade is a GET.
        let mut ws = Ws::open(&gw, "/test/chat/blue").await;
        for i in 0..3 {
            // Sent one at a time: each answer must come before the next
            // message is sent, so the gateway does not wait for more input.
            let name = format!("m{i}");
            ws.send_json(&json!({ "name": name })).await;
            let answer = ws.next_json(&format!("the answer to message {i}")).await;
            assert_item(&answer, i, &name, "blue");
        }
        // The path's value binds into every message, over the body's.
        ws.send_json(&json!({"name": "m3", "tag": "red"})).await;
        assert_item(&ws.next_json("the answer to a message with its own tag").await, 3, "m3", "blue");
        // Pings are answered between messages.
        ws.send(Message::Ping(b"are you there".to_vec().into())).await;
        match ws.next("the pong").await {
            Message::Pong(payload) => assert_eq!(&payload[..], b"are you there"),
            other => panic!("expected a pong, got {other:?}"),
        }
        // A message fragmented into three frames is one message.
        let whole = json!({"name": "in pieces"}).to_string();
        let (a, rest) = whole.split_at(4);
        let (b, c) = rest.split_at(6);
        ws.send(Message::Frame(Frame::message(a.as_bytes().to_vec(), OpCode::Data(Data::Text), false))).await;
        ws.send(Message::Frame(Frame::message(b.as_bytes().to_vec(), OpCode::Data(Data::Continue), false))).await;
        ws.send(Message::Frame(Frame::message(c.as_bytes().to_vec(), OpCode::Data(Data::Continue), true))).await;
        assert_item(&ws.next_json("the answer to a fragmented message").await, 4, "in pieces", "blue");

        ws.send_json(&json!({"end": true})).await;
        ws.expect_normal_close("the close after the end").await;
        let stats = gw.stream_stats_until("the chat completed", |s| s.completed == 1).await;
        assert_eq!((stats.started, stats.cancelled, stats.received, stats.sent), (1, 0, 5, 5), "{stats:?}");
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn end_message_half_closes_and_the_remaining_answers_come_before_the_close() {
    bounded(async {
        let gw = start_test_service().await;
        let mut ws = Ws::open(&gw, "/test/chat/green").await;
        // Nothing is read until the client has said all it has to say.
        for i in 0..3 {
            ws.send_json(&json!({ "name": format!("m{i}") })).await;
        }
        ws.send_json(&json!({ "end": true })).await;
        for i in 0..3 {
            let answer = ws.next_json(&format!("answer {i} after the end")).await;
            assert_item(&answer, i, &format!("m{i}"), "green");
        }
        ws.expect_normal_close("the close after the last answer").await;
        // The backend saw the end of its input: the call completed.
        let stats = gw.stream_stats_until("the chat completed", |s| s.completed == 1).await;
        assert_eq!((stats.started, stats.cancelled, stats.received), (1, 0, 3), "{stats:?}");
        assert_still_serving(&gw).await;
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn client_close_half_closes_and_the_gateway_close_follows() {
    bounded(async {
        let gw = start_test_service().await;
        let mut ws = Ws::open(&gw, "/test/chat/teal").await;
        ws.send_json(&json!({"name": "first"})).await;
        assert_item(&ws.next_json("the first answer").await, 0, "first", "teal");
        // The last message's answer is still on its way when the client
        // closes: the close is the end of input, not the end of the call.
        ws.send_json(&json!({"name": "last"})).await;
        ws.send_close().await;
        assert_item(&ws.next_json("the answer after the client's close").await, 1, "last", "teal");
        ws.expect_normal_close("the gateway's close after the client's").await;
        let stats = gw.stream_stats_until("the chat completed", |s| s.completed == 1).await;
        assert_eq!((stats.started, stats.cancelled), (1, 0), "the backend saw a half-close: {stats:?}");
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn backend_error_is_the_close_frame() {
    bounded(async {
        let gw = start_test_service().await;

        // A Status that fits a close reason.
        let mut ws = Ws::open(&gw, "/test/chat/red").await;
        ws.send_json(&json!({"name": "fine"})).await;
        assert_item(&ws.next_json("the answer before the failure").await, 0, "fine", "red");
        ws.send_json(&json!({"name": "bad", "failCode": 9, "failMessage": "not now"})).await;
        // The close comes next: no error frame for a Status that fits.
        let frame = ws.next_close("the close with a short Status").await;
        assert_eq!(u16::from(frame.code), 1011, "{:?}", frame.reason.as_str());
        let status: Value = serde_json::from_str(frame.reason.as_str())
            .unwrap_or_else(|e| panic!("the close reason is not a Status ({e}): {}", frame.reason.as_str()));
        assert_eq!(assert_status(&status, 9), "not now");

        // A Status longer than a close reason can be: the whole of it in a
        // last text frame, then a close whose reason is the Status cut to
        // 123 bytes, on a character boundary (each `é` is two bytes: with
        // one of the two prefixes the 123rd byte is inside one).
        for prefix in ["a", "ab"] {
            let long = format!("{prefix}{}", "é".repeat(100));
            let mut ws = Ws::open(&gw, "/test/chat/red").await;
            ws.send_json(&json!({"name": "bad", "failCode": 10, "failMessage": long})).await;
            // The helper checks the order, the shape of the error frame and
            // the cut; a reason that is not valid UTF-8 fails the read.
            let status = ws.expect_error_close("a long failure").await;
            assert_eq!(assert_status(&status, 10), long);
        }

        // The backend ended those calls itself.
        let stats = gw.stream_stats_until("three chats completed", |s| s.completed == 3).await;
        assert_eq!((stats.started, stats.cancelled), (3, 0), "{stats:?}");
        assert_still_serving(&gw).await;
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_mid_stream_names_its_index_and_cancels_the_call() {
    bounded(async {
        let gw = start_test_service().await;
        let mut ws = Ws::open(&gw, "/test/chat/plum").await;
        for i in 0..2 {
            ws.send_json(&json!({ "name": format!("m{i}") })).await;
            assert_item(&ws.next_json(&format!("answer {i}")).await, i, &format!("m{i}"), "plum");
        }
        ws.send(Message::text(r#"{"name": "m2", "#)).await;
        let status = ws.expect_error_close("the close after a bad message").await;
        assert_status(&status, 3);
        let fields = violation_fields(&status);
        assert!(fields.iter().any(|f| f.starts_with("[2]")), "no violation names message [2]: {status}");

        // The backend's call was cancelled, not half-closed as if the
        // client had finished.
        let stats = gw.stream_stats_until("the chat was cancelled", |s| s.cancelled == 1).await;
        assert_eq!((stats.started, stats.completed, stats.received), (1, 0, 2), "{stats:?}");
        assert_still_serving(&gw).await;
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abrupt_disconnect_cancels_the_backend_call() {
    bounded(async {
        let gw = start_test_service().await;
        let mut ws = Ws::open(&gw, "/test/chat/gone").await;
        ws.send_json(&json!({"name": "hello"})).await;
        assert_item(&ws.next_json("the answer before leaving").await, 0, "hello", "gone");
        // No close frame: the TCP connection just goes.
        drop(ws);
        let stats = gw.stream_stats_until("the chat was cancelled", |s| s.cancelled == 1).await;
        assert_eq!((stats.started, stats.completed), (1, 0), "{stats:?}");
        assert_still_serving(&gw).await;
        gw.shutdown().await;
    })
    .await;
}

// ---- server and client streaming -------------------------------------------

#[tokio::test]
async fn server_stream_over_websocket_takes_its_request_from_the_first_frame() {
    bounded(async {
        let gw = start_test_service().await;
        // StreamItems' own binding is `get: "/test/stream/items"`, which
        // has no body: over a WebSocket the request is the first text frame
        // all the same.
        let mut ws = Ws::open(&gw, "/test/stream/items").await;
        ws.send_json(&json!({"count": 3, "tag": "srv", "payloadSize": 2, "intervalMs": 50})).await;
        // Frames after the request are read, not sent on: pings are still
        // answered while the stream runs.
        for _ in 0..3 {
            ws.send_json(&json!({"count": 99})).await;
        }
        ws.send(Message::Ping(b"still there?".to_vec().into())).await;
        let (mut items, mut pongs) = (Vec::new(), 0);
        while items.len() < 3 {
            match ws.next("the items and the pong").await {
                Message::Pong(payload) if &payload[..] == b"still there?" => pongs += 1,
                Message::Text(text) => items.push(serde_json::from_str::<Value>(&text).expect("JSON")),
                other => panic!("unexpected frame {other:?}"),
            }
        }
        for (i, item) in (0..).zip(&items) {
            assert_item(item, i, &format!("item-{i}"), "srv");
            assert_eq!(text(item, "payload"), "xx", "{item}");
        }
        if pongs == 0 {
            match ws.next("the pong").await {
                Message::Pong(payload) => assert_eq!(&payload[..], b"still there?"),
                other => panic!("expected the pong, got {other:?}"),
            }
        }
        ws.expect_normal_close("the close after the last item").await;
        let stats = gw.stream_stats_until("the stream completed", |s| s.completed == 1).await;
        assert_eq!((stats.started, stats.cancelled, stats.sent), (1, 0, 3), "{stats:?}");
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn server_stream_over_websocket_on_a_binding_with_a_body() {
    bounded(async {
        let gw = start_test_service().await;
        // `post: "/test/stream/items/{tag}"`, `body: "*"`: the first frame
        // is the request, the path's tag binds into it.
        let mut ws = Ws::open(&gw, "/test/stream/items/path").await;
        ws.send_json(&json!({"count": 2, "tag": "body"})).await;
        for i in 0..2 {
            assert_item(&ws.next_json(&format!("item {i}")).await, i, &format!("item-{i}"), "path");
        }
        ws.expect_normal_close("the close after the last item").await;

        // A server stream that fails after its first message.
        let mut ws = Ws::open(&gw, "/test/stream/items/failing").await;
        ws.send_json(&json!({"count": 3, "failAfter": 1, "failCode": 14, "failMessage": "backend fell over"})).await;
        assert_item(&ws.next_json("the item before the failure").await, 0, "item-0", "failing");
        let status = ws.expect_error_close("the close after a failing stream").await;
        assert_eq!(assert_status(&status, 14), "backend fell over");

        let stats = gw.stream_stats_until("both streams completed", |s| s.completed == 2).await;
        assert_eq!((stats.started, stats.cancelled, stats.sent), (2, 0, 3), "{stats:?}");
        assert_still_serving(&gw).await;
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn client_stream_over_websocket_answers_once_after_the_end() {
    bounded(async {
        let gw = start_test_service().await;
        let mut ws = Ws::open(&gw, "/test/collect/box").await;
        ws.send_json(&json!({"name": "a"})).await;
        ws.send_json(&json!({"name": "b", "tag": "ignored"})).await;
        ws.send_json(&json!({"name": "c"})).await;
        ws.send_json(&json!({"end": true})).await;
        let collected = ws.next_json("the one answer").await;
        assert_eq!(collected, json!({"count": 3, "names": ["a", "b", "c"], "tags": ["box", "box", "box"]}));
        ws.expect_normal_close("the close after the answer").await;
        let stats = gw.stream_stats_until("the collect completed", |s| s.completed == 1).await;
        assert_eq!((stats.started, stats.cancelled, stats.received), (1, 0, 3), "{stats:?}");
        gw.shutdown().await;
    })
    .await;
}

// ---- the upgrade request is an ordinary request until the 101 ---------------

#[tokio::test]
async fn auth_applies_to_the_upgrade() {
    bounded(async {
        let auth = format!("api_keys:\n  keys:\n    - {{ id: ws, sha256: {} }}\n", sha256_hex("ws-key-1"));
        let gw = start_test_service_with(|config: &mut Config| {
            config.auth = serde_yaml_ng::from_str(&auth).expect("auth config");
            config.policies = serde_yaml_ng::from_str(
                "default: public\nrules:\n  - path_prefix: /test/chat\n    allow: authenticated\n",
            )
            .expect("policies config");
        })
        .await;

        let refused = upgrade_request(&gw, "/test/chat/locked", |_| {}).await;
        assert_not_upgraded(&refused);
        assert_error(&refused, 401, 16);
        assert!(refused.header("www-authenticate").is_some(), "{:?}", refused.headers);
        let wrong = upgrade_request(&gw, "/test/chat/locked", |h| h.push(("x-api-key", "ws-key-2"))).await;
        assert_not_upgraded(&wrong);
        assert_error(&wrong, 401, 16);
        assert_eq!(gw.backend_calls(), 0, "a refused upgrade reached the backend");

        let mut ws = Ws::open_with(&gw, "/test/chat/locked", &[("x-api-key", "ws-key-1")]).await;
        ws.send_json(&json!({"name": "let in"})).await;
        assert_item(&ws.next_json("the answer behind the key").await, 0, "let in", "locked");
        ws.send_close().await;
        ws.expect_normal_close("the close behind the key").await;
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn rate_limits_apply_to_the_upgrade() {
    bounded(async {
        let gw = start_test_service_with(|config: &mut Config| {
            config.rate_limits = serde_yaml_ng::from_str(
                "rules:\n  - name: chats\n    match: { path_prefix: /test/chat }\n    key: route\n    \
                 rate: 1/min\n    burst: 1\n",
            )
            .expect("rate_limits config");
        })
        .await;

        let mut ws = Ws::open(&gw, "/test/chat/once").await;
        ws.send_json(&json!({"name": "only"})).await;
        assert_item(&ws.next_json("the one allowed session").await, 0, "only", "once");
        ws.send_close().await;
        ws.expect_normal_close("the close of the allowed session").await;
        let calls = gw.backend_calls();

        let limited = upgrade_request(&gw, "/test/chat/once", |_| {}).await;
        assert_not_upgraded(&limited);
        assert_error(&limited, 429, 8);
        assert!(limited.header("retry-after").is_some(), "{:?}", limited.headers);
        assert_eq!(gw.backend_calls(), calls, "a limited upgrade reached the backend");
        // Routes the rule does not select are not limited.
        let other = Ws::open(&gw, "/test/collect/free").await;
        drop(other);
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn bad_upgrades_are_refused_and_unary_paths_are_not_upgraded() {
    bounded(async {
        let gw = start_test_service().await;

        let no_key = upgrade_request(&gw, "/test/chat/x", |h| h.retain(|(n, _)| *n != "sec-websocket-key")).await;
        assert_not_upgraded(&no_key);
        let status = assert_error(&no_key, 400, 3);
        assert!(violation_fields(&status).contains(&"sec-websocket-key".to_owned()), "{status}");

        let old = upgrade_request(&gw, "/test/chat/x", |h| {
            h.retain(|(n, _)| *n != "sec-websocket-version");
            h.push(("sec-websocket-version", "12"));
        })
        .await;
        assert_not_upgraded(&old);
        let status = assert_error(&old, 400, 3);
        assert!(violation_fields(&status).contains(&"sec-websocket-version".to_owned()), "{status}");
        // RFC 6455 §4.4: the refusal says which version the server speaks.
        assert_eq!(old.header("sec-websocket-version"), Some("13"), "{:?}", old.headers);

        let no_connection = upgrade_request(&gw, "/test/chat/x", |h| h.retain(|(n, _)| *n != "connection")).await;
        assert_not_upgraded(&no_connection);
        assert_error(&no_connection, 400, 3);
        assert_eq!(gw.backend_calls(), 0, "a bad upgrade reached the backend");

        // A unary route's path: an ordinary GET, answered as one.
        let unary = upgrade_request(&gw, "/test/query?stringValue=plain", |_| {}).await;
        assert_not_upgraded(&unary);
        assert_eq!(unary.status, 200, "{}", unary.text());
        assert_eq!(unary.json()["stringValue"], "plain");
        // A path no route has: the usual 404.
        let nowhere = upgrade_request(&gw, "/test/nowhere", |_| {}).await;
        assert_not_upgraded(&nowhere);
        assert_error(&nowhere, 404, 5);
        assert_still_serving(&gw).await;
        gw.shutdown().await;
    })
    .await;
}

// ---- limits ----------------------------------------------------------------

#[tokio::test]
async fn a_message_over_the_limit_ends_the_session() {
    bounded(async {
        let gw = start_test_service_with(|config: &mut Config| config.limits.max_message = 1024).await;

        // One frame over the limit.
        let mut ws = Ws::open(&gw, "/test/chat/big").await;
        ws.send_json(&json!({"name": "small"})).await;
        assert_item(&ws.next_json("the answer to a small message").await, 0, "small", "big");
        ws.send_json(&json!({"name": "large", "payload": "x".repeat(2000)})).await;
        let status = ws.expect_error_close("the close after a large message").await;
        assert_status(&status, 8);

        // Fragments, each within the limit, that add up to more.
        let mut ws = Ws::open(&gw, "/test/chat/big").await;
        let half = format!(r#"{{"name": "{}"#, "y".repeat(700));
        ws.send(Message::Frame(Frame::message(half.into_bytes(), OpCode::Data(Data::Text), false))).await;
        let rest = format!(r#"{}"}}"#, "y".repeat(700));
        ws.send(Message::Frame(Frame::message(rest.into_bytes(), OpCode::Data(Data::Continue), true))).await;
        let status = ws.expect_error_close("the close after a large fragmented message").await;
        assert_status(&status, 8);
        // Neither large message reached the backend.
        let stats = gw.stream_stats_until("both chats ended", |s| s.cancelled + s.completed == 2).await;
        assert_eq!(stats.received, 1, "{stats:?}");
        assert_still_serving(&gw).await;
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_silent_session_ends_at_the_idle_timeout() {
    bounded(async {
        let gw = start_test_service_with(|config: &mut Config| {
            config.routes.stream_idle_timeout = Duration::from_millis(300);
        })
        .await;
        let mut ws = Ws::open(&gw, "/test/chat/quiet").await;
        ws.send_json(&json!({"name": "then silence"})).await;
        assert_item(&ws.next_json("the answer before the silence").await, 0, "then silence", "quiet");
        let status = ws.expect_error_close("the close of a silent session").await;
        assert_status(&status, 4);
        gw.stream_stats_until("the silent chat was cancelled", |s| s.cancelled == 1).await;
        assert_still_serving(&gw).await;
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn shutdown_ends_an_open_session_with_unavailable_after_the_drain() {
    bounded(async {
        let gw = start_test_service_with(|config: &mut Config| {
            config.shutdown_timeout = Duration::from_millis(400);
        })
        .await;
        let mut ws = Ws::open(&gw, "/test/chat/late").await;
        ws.send_json(&json!({"name": "still here"})).await;
        assert_item(&ws.next_json("the answer before shutdown").await, 0, "still here", "late");
        // The session outlives its HTTP connection: the drain waits for it,
        // then ends it with the status of a gateway going away.
        let stopping = tokio::spawn(gw.shutdown());
        let status = ws.expect_error_close("the close at the drain deadline").await;
        assert_status(&status, 14);
        within("the gateway to stop", stopping).await.expect("shutdown task");
    })
    .await;
}

// ---- after all of that ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_keeps_serving_after_sessions_end_every_way() {
    bounded(async {
        let gw = start_test_service().await;
        for round in 0..5 {
            // Half-closed.
            let mut ws = Ws::open(&gw, "/test/chat/r").await;
            ws.send_json(&json!({"name": "a"})).await;
            ws.send_json(&json!({"end": true})).await;
            assert_item(&ws.next_json("an answer").await, 0, "a", "r");
            ws.expect_normal_close("a normal close").await;
            // Failed by the backend.
            let mut ws = Ws::open(&gw, "/test/chat/r").await;
            ws.send_json(&json!({"failCode": 7, "failMessage": "no"})).await;
            assert_status(&ws.expect_error_close("a backend error").await, 7);
            // Refused by the gateway.
            let mut ws = Ws::open(&gw, "/test/chat/r").await;
            ws.send(Message::text("not json")).await;
            assert_status(&ws.expect_error_close("a bad message").await, 3);
            // Left without a word.
            let mut ws = Ws::open(&gw, "/test/chat/r").await;
            ws.send_json(&json!({"name": "bye"})).await;
            drop(ws);
            // Upgraded, never used.
            drop(Ws::open(&gw, "/test/stream/items").await);
            assert_still_serving(&gw).await;
            // Calls refused before they reached the backend are not counted;
            // three a round surely reached it. Every one that did has ended.
            let reached = 3 * (round + 1);
            gw.stream_stats_until("every call of the round ended", |s| {
                s.started >= reached && s.completed + s.cancelled == s.started
            })
            .await;
        }
        gw.shutdown().await;
    })
    .await;
}
