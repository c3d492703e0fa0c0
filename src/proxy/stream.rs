//! Streaming calls over plain HTTP (DESIGN §6): a request body cut into
//! messages as it arrives (client streaming), a response written message
//! by message in the framing `Accept` picks (server streaming), or both at
//! once (bidi over HTTP/2 or HTTP/1.1).
//!
//! Nothing is buffered beyond a message: the response body is pulled by
//! the connection, so a client that reads slowly slows the upstream
//! through HTTP/2 flow control; the request body is pulled by the upstream
//! call as it sends. Dropping either side drops the call, which resets the
//! upstream stream (the backend sees CANCELLED).
//!
//! Until the first message the answer can still be an ordinary error
//! response; after it, an error is the framing's in-band record (and, over
//! HTTP/2, `grpc-status`/`grpc-message` trailers).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt as _, StreamExt as _};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Version};
use http_body::Frame;
use http_body_util::{BodyExt as _, StreamBody};

use prost_reflect::DynamicMessage;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};
use tonic::metadata::MetadataMap;
use tonic::Code;

use super::metadata;
use super::request::{
    announced_too_large, body_error, call_metadata, call_timeout, read_whole_body, too_large, CallRecord, Ending,
    Handler,
};
use crate::catalog::MethodCall;
use crate::error::{Fault, GatewayError};
use crate::http::body::BoxError;
use crate::http::observe::Exchange;
use crate::http::{Body, MatchedRoute, RequestBody};
use crate::metrics::Direction;
use crate::transcode::framing::{Framer, Framing};
use crate::transcode::split::{Delimiting, SplitError, Splitter};
use crate::transcode::status::{render_error, status_trailers};
use crate::transcode::{JsonSettings, RequestInput};
use crate::upstream::{Deadline, KillSwitch, ResponseStream, StreamReply};
use prometheus_client::metrics::counter::Counter;

const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// A streaming call over HTTP.
pub async fn call(
    handler: &Handler,
    matched: &MatchedRoute,
    call: &Arc<MethodCall>,
    req: Request<RequestBody>,
) -> Result<Response<Body>, GatewayError> {
    // A server stream over HTTP/2 always ends with its status as trailers,
    // an ordinary error answer (before the first message) included.
    let trailers = req.version() == Version::HTTP_2 && matched.route.kind.server_streams();
    let exchange = req.extensions().get::<Arc<Exchange>>().cloned();
    let mut record = CallRecord::new(&handler.metrics, call, exchange.as_ref());
    let answer = answer(handler, matched, call, req, exchange, &mut record).await;
    // A stream's body ends its record; an answer or an error here ends it.
    record.end(answer.as_ref().map_or_else(|err| err.code, |_| Code::Ok));
    answer.map_err(|err| if trailers { err.with_trailers() } else { err })
}

async fn answer(
    handler: &Handler,
    matched: &MatchedRoute,
    call: &Arc<MethodCall>,
    req: Request<RequestBody>,
    exchange: Option<Arc<Exchange>>,
    record: &mut CallRecord,
) -> Result<Response<Body>, GatewayError> {
    let route = &matched.route;
    let (parts, body) = req.into_parts();
    let sent = handler.metrics.stream_messages(&route.label, Direction::Out);
    let activity = Activity::new();
    let (fail, failed) = oneshot::channel();
    let requests = if route.kind.client_streams() {
        if announced_too_large(&parts.headers, route.max_body) {
            return Err(too_large(route.max_body));
        }
        let content_type = parts.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let input = RequestStream::new(matched.clone(), call.clone(), content_type, parts.uri.query(), body);
        let received = handler.metrics.stream_messages(&route.label, Direction::In);
        input.with(activity.clone(), fail).observed(received, exchange).boxed()
    } else {
        let body = read_whole_body(body, route.max_body, route.timeout).await?;
        if let Some(exchange) = &exchange {
            exchange.add_bytes_in(body.len());
        }
        let content_type = parts.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let message = call.request.build(
            &matched.catalog.json,
            RequestInput { body, content_type, captures: &matched.captures, query: parts.uri.query() },
        )?;
        futures_util::stream::once(std::future::ready(message)).boxed()
    };
    let metadata = call_metadata(&handler.metadata, &parts, &handler.peer);
    let deadline = call_timeout(&parts.headers, call.stream.deadline)?.map(Deadline::after);
    let mut watch = Watch::new(activity, call.stream.idle, Some(failed), handler.ending.clone(), deadline);

    record.begin();
    let open = call.upstream.open_stream(call.grpc_path.clone(), call.codec.clone(), requests, metadata, deadline);
    let StreamReply { headers: upstream_headers, mut messages } = watch.race(open).await??;
    let error = |status: tonic::Status| call.upstream.call_error(&status, deadline);

    if !route.kind.server_streams() {
        // Client streaming: one answer, rendered as a unary one.
        let message = watch.race(messages.message()).await?.map_err(error)?.ok_or_else(|| {
            GatewayError::new(Code::Internal, Fault::Upstream, "upstream ended the call without a response message")
        })?;
        let trailers = watch.race(messages.trailers()).await?.map_err(error)?.unwrap_or_default();
        let rendered = call.response.render_encoded(&matched.catalog.json, message)?;
        let mut response = Response::new(Body::full(rendered.body));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, rendered.content_type);
        metadata::response_headers(&upstream_headers, &trailers, headers);
        return Ok(response);
    }

    // The answer waits for the first message (or the end), so that an
    // error before it is an ordinary response (DESIGN §6); the idle
    // timeout and the deadline bound the wait. SSE alone starts after one
    // keep-alive interval of silence: its keep-alive comments need an
    // answer to travel in (an error after that is in band).
    let framing = Framing::negotiate(&parts.headers);
    let raw = call.response.is_raw();
    let sse = framing == Framing::Sse && !raw;
    let first = if sse {
        match watch.race(tokio::time::timeout(call.stream.keep_alive, messages.message())).await? {
            Ok(first) => Some(first.map_err(error)?),
            Err(_silent) => None,
        }
    } else {
        Some(watch.race(messages.message()).await?.map_err(error)?)
    };

    let mut settings = matched.catalog.json.clone();
    // One message per line (and per SSE data line): never pretty.
    settings.pretty &= framing == Framing::Array;
    // The idle clock above runs while the connection pulls from the stream;
    // a client that keeps its HTTP/2 window shut (and answers pings) stops
    // the pulling, so a watchdog resets the upstream call at the idle
    // limit all the same. The client learns it when it reads again.
    let watchdog = spawn_watchdog(watch.activity.clone(), call.stream.idle, messages.kill_switch());
    let mut pump = Pump {
        call: call.clone(),
        _watchdog: watchdog,
        framer: Framer::new(framing),
        raw,
        pending: None,
        messages: Some(messages),
        matched: matched.clone(),
        settings,
        watch,
        keep_alive: sse.then(|| Box::pin(tokio::time::sleep(call.stream.keep_alive))),
        trailers: parts.version == Version::HTTP_2,
        deadline,
        finished: None,
        held: None,
        record: record.take(),
        sent,
    };
    // A raw (`HttpBody`) stream takes its first message's content type.
    let mut content_type =
        if raw { HeaderValue::from_static("application/octet-stream") } else { framing.content_type() };
    match first {
        // SSE, silent so far: the answer starts with a keep-alive comment.
        None => pump.pending = pump.framer.keep_alive(),
        Some(Some(message)) => {
            pump.watch.activity.touch();
            pump.sent.inc();
            let rendered = call.response.render_encoded(&pump.settings, message)?;
            if raw {
                content_type = rendered.content_type;
                pump.pending = Some(rendered.body);
            } else {
                pump.pending = Some(pump.framer.message(&rendered.body));
            }
        }
        // Ended before any message: an empty stream.
        Some(None) => {
            let Pump { watch, messages, .. } = &mut pump;
            let messages = messages.as_mut().ok_or_else(|| GatewayError::internal("the call ended twice"))?;
            let trailers = watch.race(messages.trailers()).await?.map_err(error)?;
            pump.pending = pump.finish(Ok(trailers.unwrap_or_default()));
        }
    }

    let frames = futures_util::stream::unfold(pump, |mut pump| async move {
        let frame = pump.next().await?;
        Some((frame, pump))
    });
    let mut response = Response::new(Body::stream(StreamBody::new(frames)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, content_type);
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if framing == Framing::Sse && !raw {
        // Proxies in front (nginx) must not hold events back.
        headers.insert(X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
    }
    metadata::response_headers(&upstream_headers, &MetadataMap::new(), headers);
    Ok(response)
}

/// The response side of a server stream: pulls one message per frame.
struct Pump {
    call: Arc<MethodCall>,
    framer: Framer,
    /// `google.api.HttpBody` messages: their bytes, unframed.
    raw: bool,
    /// Bytes to send before pulling again.
    pending: Option<Bytes>,
    /// `None` once the call is over (dropping it cancels an unfinished one).
    messages: Option<ResponseStream>,
    matched: MatchedRoute,
    settings: JsonSettings,
    watch: Watch,
    keep_alive: Option<Pin<Box<Sleep>>>,
    /// HTTP/2: the status goes out as trailers too.
    trailers: bool,
    deadline: Option<Deadline>,
    /// The trailers still to send once the stream has ended (`Some(None)`:
    /// nothing more).
    finished: Option<Option<HeaderMap>>,
    /// What ended a batch of messages, to be handled next.
    held: Option<Event>,
    /// Dropped with the stream: the watchdog then stops.
    _watchdog: oneshot::Sender<()>,
    /// Ends with the call; dropped early (the client left), CANCELLED.
    record: CallRecord,
    /// `protogate_stream_messages_total{direction="out"}` of the route.
    sent: Counter,
}

fn idle_message(idle: Duration) -> String {
    format!("the stream was idle for {} s", idle.as_secs_f64())
}

/// How long after the idle limit the watchdog acts: a stream that is being
/// pulled ends at the limit itself, with its own record, first.
const WATCHDOG_GRACE: Duration = Duration::from_secs(1);

/// Cancels the upstream call once `activity` has been still for `idle`
/// (and [`WATCHDOG_GRACE`]), unless the returned sender is dropped first.
fn spawn_watchdog(activity: Activity, idle: Duration, kill: KillSwitch) -> oneshot::Sender<()> {
    let limit = idle;
    let idle = idle + WATCHDOG_GRACE;
    let (alive, mut ended) = oneshot::channel::<()>();
    tokio::spawn(async move {
        loop {
            let due = activity.last() + idle;
            tokio::select! {
                _ = &mut ended => return,
                () = tokio::time::sleep_until(due) => {
                    if activity.last() + idle <= Instant::now() {
                        kill.kill(tonic::Status::deadline_exceeded(idle_message(limit)));
                        return;
                    }
                }
            }
        }
    });
    alive
}

/// Messages already at hand are written into one frame up to this size.
const BATCH_BYTES: usize = 16 << 10;

type Next = Result<Frame<Bytes>, BoxError>;

enum Event {
    Message(Result<Option<Bytes>, tonic::Status>),
    Interrupted(GatewayError),
    KeepAlive,
}

impl Pump {
    async fn next(&mut self) -> Option<Next> {
        if let Some(bytes) = self.pending.take() {
            return Some(Ok(Frame::data(bytes)));
        }
        if let Some(trailers) = &mut self.finished {
            return trailers.take().map(|t| Ok(Frame::trailers(t)));
        }
        let event = match self.held.take() {
            Some(event) => event,
            None => {
                let Self { messages, watch, keep_alive, .. } = self;
                let messages = messages.as_mut()?;
                tokio::select! {
                    biased;
                    message = messages.message() => Event::Message(message),
                    err = watch.interrupted() => Event::Interrupted(err),
                    () = tick(keep_alive) => Event::KeepAlive,
                }
            }
        };
        match event {
            Event::Message(Ok(Some(message))) => {
                self.watch.activity.touch();
                if let Some(timer) = &mut self.keep_alive {
                    timer.as_mut().reset(Instant::now() + self.call.stream.keep_alive);
                }
                self.sent.inc();
                if self.raw {
                    return match self.call.response.render_encoded(&self.settings, message) {
                        Ok(rendered) => Some(Ok(Frame::data(rendered.body))),
                        Err(err) => self.end(Err(err)),
                    };
                }
                let mut out = Vec::with_capacity(512);
                if let Err(err) = self.write(&mut out, &message) {
                    return self.end(Err(err));
                }
                // The messages that have already arrived go out in the same
                // frame: one chunk, one wake-up of the connection for many
                // small messages. Nothing waits for more.
                while out.len() < BATCH_BYTES {
                    let Some(messages) = &mut self.messages else { break };
                    match messages.message().now_or_never() {
                        Some(Ok(Some(message))) => {
                            self.sent.inc();
                            if let Err(err) = self.write(&mut out, &message) {
                                self.held = Some(Event::Interrupted(err));
                                break;
                            }
                        }
                        Some(other) => {
                            self.held = Some(Event::Message(other));
                            break;
                        }
                        None => break,
                    }
                }
                Some(Ok(Frame::data(Bytes::from(out))))
            }
            Event::Message(Ok(None)) => {
                let trailers = {
                    let Self { messages, watch, .. } = self;
                    let messages = messages.as_mut()?;
                    watch.race(messages.trailers()).await
                };
                let outcome = match trailers {
                    Ok(Ok(trailers)) => Ok(trailers.unwrap_or_default()),
                    Ok(Err(status)) => Err(self.call.upstream.call_error(&status, self.deadline)),
                    Err(err) => Err(err),
                };
                self.end(outcome)
            }
            Event::Message(Err(status)) => {
                let err = self.call.upstream.call_error(&status, self.deadline);
                self.end(Err(err))
            }
            Event::Interrupted(err) => self.end(Err(err)),
            Event::KeepAlive => {
                if let Some(timer) = &mut self.keep_alive {
                    timer.as_mut().reset(Instant::now() + self.call.stream.keep_alive);
                }
                self.framer.keep_alive().map(|line| Ok(Frame::data(line)))
            }
        }
    }

    /// Appends `message` in the stream's framing.
    fn write(&mut self, out: &mut Vec<u8>, message: &Bytes) -> Result<(), GatewayError> {
        let Self { framer, call, settings, .. } = self;
        framer.write_message(out, |out| call.response.render_json_encoded(settings, message, out))
    }

    /// The stream is over: its last bytes now, its trailers next.
    fn end(&mut self, outcome: Result<MetadataMap, GatewayError>) -> Option<Next> {
        let bytes = self.finish(outcome.inspect_err(|err| {
            tracing::debug!(path = %self.call.grpc_path, code = ?err.code, message = %err.message, "stream ended with an error");
        }));
        match bytes {
            Some(bytes) => Some(Ok(Frame::data(bytes))),
            None => match &mut self.finished {
                Some(trailers) => trailers.take().map(|t| Ok(Frame::trailers(t))),
                // A raw stream cut short over HTTP/1: abort the body, so
                // the client sees an incomplete transfer, not a short file.
                None => Some(Err("the stream ended with an error".into())),
            },
        }
    }

    /// Ends the call and returns the framing's last bytes (`None` if there
    /// are none). A raw stream has no in-band record: without trailers, an
    /// error leaves `finished` unset for [`Pump::end`] to abort.
    fn finish(&mut self, outcome: Result<MetadataMap, GatewayError>) -> Option<Bytes> {
        self.messages = None;
        let (code, message, backend) = match &outcome {
            Ok(trailers) => (Code::Ok, "", Some(trailers)),
            Err(err) => (err.code, err.message.as_str(), None),
        };
        self.record.end(code);
        let trailers = self.trailers.then(|| grpc_trailers(code, message, backend));
        let bytes = match &outcome {
            Err(_) | Ok(_) if self.raw => Bytes::new(),
            Ok(_) => self.framer.end(),
            Err(err) => {
                let catalog = &self.matched.catalog;
                self.framer.error(&render_error(err, &catalog.pool, &self.settings))
            }
        };
        if trailers.is_some() || !self.raw || outcome.is_ok() {
            self.finished = Some(trailers);
        }
        Some(bytes).filter(|b| !b.is_empty())
    }
}

/// `grpc-status`, `grpc-message` (percent-encoded as gRPC does) and the
/// backend's trailers as `grpc-trailer-*`.
fn grpc_trailers(code: Code, message: &str, backend: Option<&MetadataMap>) -> HeaderMap {
    let mut trailers = status_trailers(code, message);
    if let Some(backend) = backend {
        metadata::response_headers(&MetadataMap::new(), backend, &mut trailers);
    }
    trailers
}

/// Resolves when the keep-alive timer fires; never without one.
async fn tick(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(timer) => timer.as_mut().await,
        None => std::future::pending().await,
    }
}

/// When either direction of a call last moved.
#[derive(Debug, Clone)]
pub struct Activity {
    base: Instant,
    /// Milliseconds after `base`.
    last: Arc<AtomicU64>,
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    pub fn new() -> Self {
        Self { base: Instant::now(), last: Arc::new(AtomicU64::new(0)) }
    }

    pub fn touch(&self) {
        let millis = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(millis, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }
}

/// Everything that may end a call other than the call itself: a bad
/// request message, silence in both directions, the drain deadline, the
/// call's own deadline.
pub struct Watch {
    pub activity: Activity,
    idle: Duration,
    idle_timer: Pin<Box<Sleep>>,
    failed: Option<oneshot::Receiver<GatewayError>>,
    ending: Pin<Box<dyn Future<Output = ()> + Send>>,
    deadline: Option<(Deadline, Pin<Box<Sleep>>)>,
}

impl Watch {
    pub fn new(
        activity: Activity,
        idle: Duration,
        failed: Option<oneshot::Receiver<GatewayError>>,
        ending: Ending,
        deadline: Option<Deadline>,
    ) -> Self {
        Self {
            idle_timer: Box::pin(tokio::time::sleep_until(activity.last() + idle)),
            activity,
            idle,
            failed,
            ending: Box::pin(ending.wait()),
            deadline: deadline.map(|d| (d, Box::pin(tokio::time::sleep_until(d.at)))),
        }
    }

    /// Resolves with the error that must end the call now. Cancel-safe.
    pub async fn interrupted(&mut self) -> GatewayError {
        let Self { activity, idle, idle_timer, failed, ending, deadline } = self;
        loop {
            tokio::select! {
                err = request_failure(failed) => return err,
                () = idle_timer.as_mut() => {
                    let due = activity.last() + *idle;
                    if due <= Instant::now() {
                        return GatewayError::new(
                            Code::DeadlineExceeded,
                            Fault::Client,
                            idle_message(*idle),
                        );
                    }
                    idle_timer.as_mut().reset(due);
                }
                () = ending.as_mut() => {
                    return GatewayError::new(Code::Unavailable, Fault::Upstream, "the gateway is shutting down");
                }
                () = deadline_passed(deadline) => {
                    if let Some((deadline, _)) = deadline {
                        return deadline.exceeded();
                    }
                }
            }
        }
    }

    /// `work`, unless the call must end first.
    pub async fn race<F: Future>(&mut self, work: F) -> Result<F::Output, GatewayError> {
        tokio::select! {
            biased;
            out = work => Ok(out),
            err = self.interrupted() => Err(err),
        }
    }
}

async fn request_failure(failed: &mut Option<oneshot::Receiver<GatewayError>>) -> GatewayError {
    if let Some(receiver) = failed {
        if let Ok(err) = receiver.await {
            return err;
        }
        // The request side finished (or the call took it down) without
        // a failure.
        *failed = None;
    }
    std::future::pending().await
}

async fn deadline_passed(deadline: &mut Option<(Deadline, Pin<Box<Sleep>>)>) {
    match deadline {
        Some((_, timer)) => timer.as_mut().await,
        None => std::future::pending().await,
    }
}

/// A client-streamed body as the messages it holds, cut as bytes arrive.
/// A problem (a bad message, too many bytes, a broken body) is sent on
/// `fail` and the stream then never ends, so that the call is cancelled
/// by the handler, not half-closed as if the client had finished.
struct RequestStream {
    matched: MatchedRoute,
    call: Arc<MethodCall>,
    query: Option<String>,
    /// The content type each raw (`HttpBody`) chunk carries.
    content_type: Option<String>,
    body: RequestBody,
    /// `None`: the body is raw bytes, one message per chunk.
    splitter: Option<Splitter>,
    read: usize,
    ended: bool,
    activity: Activity,
    fail: Option<oneshot::Sender<GatewayError>>,
    /// `protogate_stream_messages_total{direction="in"}` of the route.
    received: Option<Counter>,
    exchange: Option<Arc<Exchange>>,
}

impl RequestStream {
    fn new(
        matched: MatchedRoute,
        call: Arc<MethodCall>,
        content_type: Option<&str>,
        query: Option<&str>,
        body: RequestBody,
    ) -> Self {
        let splitter =
            (!call.request.is_raw()).then(|| Splitter::new(Delimiting::of(content_type), call.stream.max_message));
        Self {
            matched,
            call,
            query: query.map(str::to_owned),
            content_type: content_type.map(str::to_owned),
            body,
            splitter,
            read: 0,
            ended: false,
            activity: Activity::new(),
            fail: None,
            received: None,
            exchange: None,
        }
    }

    /// Counts messages and bytes read.
    fn observed(mut self, received: Counter, exchange: Option<Arc<Exchange>>) -> Self {
        self.received = Some(received);
        self.exchange = exchange;
        self
    }

    /// Touches `activity` as bytes arrive and reports a problem on `fail`.
    fn with(mut self, activity: Activity, fail: oneshot::Sender<GatewayError>) -> Self {
        self.activity = activity;
        self.fail = Some(fail);
        self
    }

    fn boxed(self) -> BoxStream<'static, DynamicMessage> {
        futures_util::stream::unfold(self, |mut this| async move {
            match this.next().await {
                Ok(Some(message)) => {
                    if let Some(received) = &this.received {
                        received.inc();
                    }
                    Some((message, this))
                }
                Ok(None) => None,
                Err(err) => {
                    if let Some(fail) = this.fail.take() {
                        let _ = fail.send(err);
                    }
                    std::future::pending().await
                }
            }
        })
        .boxed()
    }

    async fn next(&mut self) -> Result<Option<DynamicMessage>, GatewayError> {
        loop {
            if let Some(splitter) = &mut self.splitter {
                let index = splitter.index();
                let found = if self.ended { splitter.finish() } else { splitter.next_message() };
                match found.map_err(|err| split_error(index, err))? {
                    Some(json) => return self.build(index, json, Some("application/json")).map(Some),
                    None if self.ended => return Ok(None),
                    None => {}
                }
            } else if self.ended {
                return Ok(None);
            }
            match self.body.frame().await {
                None => self.ended = true,
                Some(Err(err)) => return Err(body_error(&err)),
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    self.read += data.len();
                    if let Some(exchange) = &self.exchange {
                        exchange.add_bytes_in(data.len());
                    }
                    let limit = self.matched.route.max_body;
                    if self.read > limit {
                        return Err(too_large(limit));
                    }
                    self.activity.touch();
                    match &mut self.splitter {
                        Some(splitter) => splitter.push(&data),
                        None if data.is_empty() => {}
                        None => {
                            let content_type = self.content_type.clone();
                            return self.build(0, data, content_type.as_deref()).map(Some);
                        }
                    }
                }
            }
        }
    }

    fn build(&self, index: usize, body: Bytes, content_type: Option<&str>) -> Result<DynamicMessage, GatewayError> {
        let MatchedRoute { catalog, captures, .. } = &self.matched;
        let input = RequestInput { body, content_type, captures, query: self.query.as_deref() };
        self.call.request.build(&catalog.json, input).map_err(|err| at_index(index, err))
    }
}

/// A message's error, its field paths under the message's index:
/// `[3].name`.
pub fn at_index(index: usize, mut err: GatewayError) -> GatewayError {
    for violation in &mut err.violations {
        violation.field = if violation.field.is_empty() {
            format!("[{index}]")
        } else if violation.field.starts_with('[') {
            format!("[{index}]{}", violation.field)
        } else {
            format!("[{index}].{}", violation.field)
        };
    }
    if err.violations.is_empty() && err.fault == Fault::Client {
        err.violations
            .push(crate::error::FieldViolation { field: format!("[{index}]"), description: err.message.clone() });
    }
    err.message = format!("message {index}: {}", err.message);
    err
}

fn split_error(index: usize, err: SplitError) -> GatewayError {
    match err {
        SplitError::TooLarge { .. } => GatewayError::new(Code::ResourceExhausted, Fault::Client, err.to_string())
            .with_status(http::StatusCode::PAYLOAD_TOO_LARGE),
        SplitError::Syntax(what) => at_index(index, GatewayError::bad_field("", what)),
    }
}
