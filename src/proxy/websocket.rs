//! Streaming calls over a WebSocket (DESIGN §6): the way for bidirectional
//! methods, and for client or server streams when a client prefers it.
//!
//! The upgrade is an ordinary request until the `101`: the route matched it
//! and auth and rate limits judged it like any other, so a refusal is the
//! usual envelope. After it, one JSON message travels per text frame each
//! way (`google.api.HttpBody` methods: binary frames carry the raw bytes).
//! The client half-closes the upstream stream with a close frame or the
//! text frame `{"end": true}`; the call's status comes back as the close
//! frame: 1000 for OK, 1011 with the `google.rpc.Status` JSON as reason,
//! cut to the protocol's 123 bytes with the full Status first in a last
//! text frame `{"error": Status}` when it does not fit.
//!
//! Frames are read by a task of their own, so that a client that stops
//! reading cannot stop the gateway from noticing its close, and the
//! upstream call is fed through a channel of one message: a client that
//! sends faster than the backend takes waits on TCP, not on our memory.
//! Fragmented messages are put together here, up to the route's message
//! limit. Dropping the session drops the call: the backend sees CANCELLED.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocket, WebSocketError, WebSocketRead};
use futures_util::StreamExt as _;
use http::header::{CONNECTION, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION};
use http::request::Parts;
use http::{HeaderValue, Request, Response, StatusCode, Version};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use prost_reflect::DynamicMessage;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tonic::Code;

use super::request::{call_metadata, call_timeout, CallRecord, Handler};
use super::stream::{at_index, Activity, Watch};
use crate::catalog::MethodCall;
use crate::error::{Fault, GatewayError};
use crate::http::route_match::has_token;
use crate::http::{Body, MatchedRoute, RequestBody};
use crate::metrics::Direction;
use crate::transcode::status::render_error;
use crate::transcode::RequestInput;
use crate::upstream::{Deadline, StreamReply};
use prometheus_client::metrics::counter::Counter;

/// The longest close reason the protocol allows (125 bytes of payload less
/// the 2-byte code).
const MAX_REASON: usize = 123;
const NORMAL: u16 = 1000;
/// How long the last frames of a session may take to write.
const FAREWELL: Duration = Duration::from_secs(1);
const INTERNAL_ERROR: u16 = 1011;

type Io = TokioIo<Upgraded>;

/// Answers the upgrade with `101` and runs the session once the connection
/// is handed over.
pub fn call(
    handler: &Arc<Handler>,
    matched: MatchedRoute,
    call: Arc<MethodCall>,
    mut req: Request<RequestBody>,
) -> Result<Response<Body>, GatewayError> {
    // RFC 8441's WebSocket over HTTP/2 is not offered.
    if req.version() != Version::HTTP_11 || !has_token(req.headers(), CONNECTION, "upgrade") {
        return Err(GatewayError::bad_field(
            "connection",
            "a WebSocket upgrade needs HTTP/1.1 and `Connection: upgrade`",
        ));
    }
    let (response, upgrade) = fastwebsockets::upgrade::upgrade(&mut req).map_err(refusal)?;
    // Checked now so that a bad header is a 400, not a closed socket.
    let (parts, _) = req.into_parts();
    let deadline = call_timeout(&parts.headers, call.stream.deadline)?.map(Deadline::after);
    let handler = handler.clone();
    tokio::spawn(async move {
        match upgrade.await {
            Ok(ws) => Session { handler, matched, call, parts, deadline }.run(ws).await,
            Err(err) => tracing::debug!(error = %err, "websocket upgrade did not complete"),
        }
    });
    let (head, _) = response.into_parts();
    Ok(Response::from_parts(head, Body::empty()))
}

/// A handshake fastwebsockets will not accept, as a 400 naming the header
/// at fault.
fn refusal(err: WebSocketError) -> GatewayError {
    match err {
        // RFC 6455 §4.4: the refusal lists the versions the server speaks.
        WebSocketError::InvalidSecWebsocketVersion => GatewayError::bad_field(
            SEC_WEBSOCKET_VERSION.as_str(),
            "only version 13 of the WebSocket protocol is spoken here",
        )
        .with_header(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13")),
        err => GatewayError::bad_field(SEC_WEBSOCKET_KEY.as_str(), format!("not a valid WebSocket upgrade: {err}")),
    }
}

struct Session {
    handler: Arc<Handler>,
    matched: MatchedRoute,
    call: Arc<MethodCall>,
    parts: Parts,
    deadline: Option<Deadline>,
}

impl Session {
    async fn run(self, mut ws: WebSocket<Io>) {
        let call = self.call.clone();
        ws.set_auto_close(false);
        ws.set_auto_pong(true);
        // A frame this large is refused by the reader itself; fragments are
        // counted against the same limit below.
        ws.set_max_message_size(call.stream.max_message.saturating_add(1));
        let (read, mut write) = ws.split(tokio::io::split);

        let activity = Activity::new();
        let (fail, failed) = oneshot::channel();
        // Control frames the protocol obliges us to answer (pongs), from the
        // reader to the one writer.
        let (obliged_tx, mut obliged) = mpsc::channel::<Frame<'static>>(4);
        let (requests_tx, requests_rx) = mpsc::channel::<DynamicMessage>(1);
        let reader = tokio::spawn(
            Reader {
                matched: self.matched.clone(),
                call: call.clone(),
                query: self.parts.uri.query().map(str::to_owned),
                activity: activity.clone(),
                obliged: obliged_tx,
                requests: Some(requests_tx),
                fail: Some(fail),
                received: self.handler.metrics.stream_messages(&self.matched.route.label, Direction::In),
            }
            .run(read),
        );

        let requests = receiver_stream(requests_rx);
        let metadata = call_metadata(&self.handler.metadata, &self.parts, &self.handler.peer);
        let mut watch =
            Watch::new(activity.clone(), call.stream.idle, Some(failed), self.handler.ending.clone(), self.deadline);
        let sent = self.handler.metrics.stream_messages(&self.matched.route.label, Direction::Out);
        // The session's access event was the 101; the call's own metrics
        // are recorded when it ends.
        let mut record = CallRecord::new(&self.handler.metrics, &call, None);
        record.begin();
        let open =
            call.upstream.open_stream(call.grpc_path.clone(), call.codec.clone(), requests, metadata, self.deadline);

        let mut writer = Writer { write: &mut write };
        let outcome: Result<(), Ending> = async {
            let mut open = std::pin::pin!(open);
            let opened = loop {
                tokio::select! {
                    biased;
                    Some(frame) = obliged.recv() => writer.send(frame).await?,
                    opened = watch.race(open.as_mut()) => break opened??,
                }
            };
            let StreamReply { mut messages, .. } = opened;
            let raw = call.response.is_raw();
            loop {
                tokio::select! {
                    biased;
                    Some(frame) = obliged.recv() => writer.send(frame).await?,
                    next = watch.race(messages.message()) => {
                        match next?.map_err(|s| call.upstream.call_error(&s, self.deadline))? {
                            Some(message) => {
                                activity.touch();
                                sent.inc();
                                let rendered = call.response.render_encoded(&self.matched.catalog.json, message)?;
                                let frame = if raw {
                                    Frame::binary(Payload::Owned(rendered.body.to_vec()))
                                } else {
                                    Frame::text(Payload::Owned(rendered.body.to_vec()))
                                };
                                // A client that stops reading blocks the write:
                                // the idle clock and the drain still run.
                                watch.race(writer.send(frame)).await??;
                            }
                            None => {
                                let trailers = watch.race(messages.trailers()).await?;
                                trailers.map_err(|s| call.upstream.call_error(&s, self.deadline))?;
                                return Ok(());
                            }
                        }
                    }
                }
            }
        }
        .await;
        // The call (and with it the upstream stream) is over or dropped;
        // the reader has nothing more to feed. Only now may it drop the
        // request stream it holds open after a failure.
        reader.abort();
        match &outcome {
            Ok(()) => record.end(Code::Ok),
            Err(Ending::Failed(err)) => record.end(err.code),
            // Dropped: CANCELLED.
            Err(Ending::Gone) => {}
        }
        let catalog = &self.matched.catalog;
        // The last frames go to a client that may not be reading: bounded.
        let farewell = async {
            match outcome {
                Ok(()) => {
                    let _ = write.write_frame(Frame::close(NORMAL, b"")).await;
                }
                Err(Ending::Gone) => {}
                Err(Ending::Failed(err)) => {
                    tracing::debug!(path = %call.grpc_path, code = ?err.code, message = %err.message, "websocket stream ended with an error");
                    let status = render_error(&err, &catalog.pool, &catalog.json);
                    if status.len() > MAX_REASON {
                        let mut last = Vec::with_capacity(status.len() + 10);
                        last.extend_from_slice(b"{\"error\":");
                        last.extend_from_slice(&status);
                        last.push(b'}');
                        let _ = write.write_frame(Frame::text(Payload::Owned(last))).await;
                    }
                    let reason = truncate_utf8(&status, MAX_REASON);
                    let _ = write.write_frame(Frame::close(INTERNAL_ERROR, reason)).await;
                }
            }
            let _ = write.flush().await;
        };
        let _ = tokio::time::timeout(FAREWELL, farewell).await;
    }
}

/// Why a session ended before its call did.
enum Ending {
    /// The client's connection is gone: nothing can be told.
    Gone,
    /// The call ended with this error, for the close frame.
    Failed(GatewayError),
}

impl From<GatewayError> for Ending {
    fn from(err: GatewayError) -> Self {
        Self::Failed(err)
    }
}

struct Writer<'a> {
    write: &'a mut fastwebsockets::WebSocketWrite<WriteHalf<Io>>,
}

impl Writer<'_> {
    async fn send(&mut self, frame: Frame<'_>) -> Result<(), Ending> {
        self.write.write_frame(frame).await.map_err(|_| Ending::Gone)
    }
}

/// The longest prefix of `bytes` within `max` that ends on a character
/// boundary.
fn truncate_utf8(bytes: &[u8], max: usize) -> &[u8] {
    if bytes.len() <= max {
        return bytes;
    }
    let mut end = max;
    while end > 0 && (bytes[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    &bytes[..end]
}

fn receiver_stream(mut rx: mpsc::Receiver<DynamicMessage>) -> futures_util::stream::BoxStream<'static, DynamicMessage> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

/// Reads the client's frames: messages go to the upstream call, a problem
/// ends the session through `fail`.
struct Reader {
    matched: MatchedRoute,
    call: Arc<MethodCall>,
    query: Option<String>,
    activity: Activity,
    obliged: mpsc::Sender<Frame<'static>>,
    /// Dropped at the client's end of input: the upstream call is
    /// half-closed.
    requests: Option<mpsc::Sender<DynamicMessage>>,
    fail: Option<oneshot::Sender<GatewayError>>,
    /// `protogate_stream_messages_total{direction="in"}` of the route.
    received: Counter,
}

impl Reader {
    async fn run(mut self, read: WebSocketRead<ReadHalf<Io>>) {
        if let Err(err) = self.read_all(read).await {
            if let Some(fail) = self.fail.take() {
                let _ = fail.send(err);
            }
            // Dropping `requests` now would end the upstream request stream
            // as if the client had finished: the backend could complete the
            // call on that half-close (instead of seeing it cancelled), and
            // answer before the failure is noticed, so that the session
            // closed with 1000. The stream stays open until the session has
            // dropped the call and aborts this task.
            std::future::pending::<()>().await;
        }
    }

    async fn read_all(&mut self, mut read: WebSocketRead<ReadHalf<Io>>) -> Result<(), GatewayError> {
        let limit = self.call.stream.max_message;
        let raw = self.call.frame_request().is_raw();
        let mut index = 0usize;
        // A fragmented message so far: its opcode and bytes.
        let mut partial: Option<(OpCode, Vec<u8>)> = None;
        loop {
            let obliged = self.obliged.clone();
            let mut send = move |frame: Frame<'_>| {
                let owned = Frame::new(true, frame.opcode, None, Payload::Owned(frame.payload.to_vec()));
                let obliged = obliged.clone();
                async move { obliged.send(owned).await.map_err(|_| "session over") }
            };
            let frame = match read.read_frame(&mut send).await {
                Ok(frame) => frame,
                Err(WebSocketError::FrameTooLarge) => return Err(too_large(index, limit)),
                // The connection broke or spoke bad protocol: no one to
                // answer, the call is cancelled.
                Err(err) => return Err(gone(&err)),
            };
            self.activity.touch();
            let (opcode, payload) = match frame.opcode {
                OpCode::Close => {
                    // The client has no more to send.
                    self.requests = None;
                    return Ok(());
                }
                OpCode::Ping | OpCode::Pong => continue,
                OpCode::Text | OpCode::Binary if partial.is_some() => {
                    return Err(protocol(index, "a new message began inside a fragmented one"));
                }
                OpCode::Text | OpCode::Binary if !frame.fin => {
                    partial = Some((frame.opcode, frame.payload.to_vec()));
                    continue;
                }
                OpCode::Text | OpCode::Binary => (frame.opcode, frame.payload.to_vec()),
                OpCode::Continuation => {
                    let Some((opcode, mut bytes)) = partial.take() else {
                        return Err(protocol(index, "a continuation frame without a message to continue"));
                    };
                    if bytes.len() + frame.payload.len() > limit {
                        return Err(too_large(index, limit));
                    }
                    bytes.extend_from_slice(&frame.payload);
                    if !frame.fin {
                        partial = Some((opcode, bytes));
                        continue;
                    }
                    (opcode, bytes)
                }
            };
            let Some(requests) = &self.requests else {
                // The request side is over (a unary input, or `{"end": true}`):
                // only a close frame matters now.
                continue;
            };
            let body = Bytes::from(payload);
            let content_type = match opcode {
                OpCode::Text if is_end(&body) => {
                    self.requests = None;
                    continue;
                }
                OpCode::Binary if raw => None,
                OpCode::Text => Some("application/json"),
                _ => return Err(protocol(index, "binary frames carry only raw bytes (google.api.HttpBody) methods")),
            };
            let message = self.build(index, body, content_type)?;
            self.received.inc();
            index += 1;
            // A method that takes one request message has it now: later
            // frames are read (pings, the close) but not sent.
            if requests.send(message).await.is_err() || !self.matched.route.kind.client_streams() {
                self.requests = None;
            }
        }
    }

    fn build(&self, index: usize, body: Bytes, content_type: Option<&str>) -> Result<DynamicMessage, GatewayError> {
        let MatchedRoute { catalog, captures, .. } = &self.matched;
        let input = RequestInput { body, content_type, captures, query: self.query.as_deref() };
        self.call.frame_request().build(&catalog.json, input).map_err(|err| at_index(index, err))
    }
}

/// `{"end": true}`, the client's half-close, with any spacing.
fn is_end(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct End {
        end: bool,
    }
    // Cheap first look: a message that does not mention `end` is not one.
    memchr::memmem::find(body, b"\"end\"").is_some() && serde_json::from_slice::<End>(body).is_ok_and(|e| e.end)
}

fn too_large(index: usize, limit: usize) -> GatewayError {
    at_index(
        index,
        GatewayError::new(
            Code::ResourceExhausted,
            Fault::Client,
            format!("message exceeds the limit of {limit} bytes"),
        )
        .with_status(StatusCode::PAYLOAD_TOO_LARGE),
    )
}

fn protocol(index: usize, what: &str) -> GatewayError {
    at_index(index, GatewayError::bad_field("", what))
}

fn gone(err: &WebSocketError) -> GatewayError {
    GatewayError::new(Code::Cancelled, Fault::Client, format!("the client went away: {err}"))
}
