//! The conformance backend behind most gateway tests: an implementation of
//! `protogate.test.v1.TestService` whose answers make the gateway's work
//! observable (echoes, chosen errors, metadata reports, a call counter,
//! streams whose pace, failures and cancellation are counted, and `Delay`
//! calls that wait for each other and count their overlap).
//! [`super::Backend::test_service`] serves it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt as _};
use prost::Message as _;
use tonic::metadata::{KeyAndValueRef, MetadataValue};
use tonic::service::Routes;
use tonic::{Code, Request, Response, Status, Streaming};

use super::backend::Observe;
use super::pb::google::api::HttpBody;
use super::pb::google::rpc;
use super::pb::protogate::test::v1::test_service_server::{TestService, TestServiceServer};
use super::pb::protogate::test::v1::{
    AllTypes, Collected, CountResponse, CustomDetail, DelayRequest, DelayResponse, DelayStatsResponse, DownloadRequest,
    FailRequest, Item, MetadataRequest, MetadataResponse, SleepRequest, StreamRequest, StreamStatsResponse,
    UploadFieldRequest, UploadFieldResponse, UploadStats, WrappedItem,
};

/// gRPC path prefix of every TestService method.
const SERVICE_PREFIX: &str = "/protogate.test.v1.TestService/";
/// The methods whose calls are not counted, so that asking does not change the answer.
const COUNT_PATH: &str = "/protogate.test.v1.TestService/Count";
const STREAM_STATS_PATH: &str = "/protogate.test.v1.TestService/StreamStats";
const DELAY_STATS_PATH: &str = "/protogate.test.v1.TestService/DelayStats";
/// The method whose successful responses carry an extra trailer.
const METADATA_PATH: &str = "/protogate.test.v1.TestService/Metadata";

/// The service and how the server observes it: `calls` counts every request
/// that reaches the server for `TestService` (before tonic decodes it, so
/// even a malformed one counts: "reached the backend") except `Count` and
/// `StreamStats` (and `DelayStats`), and `Metadata` responses get the
/// `x-echo-trailer` trailer.
pub(super) fn routes(calls: Arc<AtomicU64>) -> (Routes, Observe) {
    let observe = Observe {
        calls: calls.clone(),
        counts: |path| {
            path.starts_with(SERVICE_PREFIX)
                && path != COUNT_PATH
                && path != STREAM_STATS_PATH
                && path != DELAY_STATS_PATH
        },
        trailer_on: Some(METADATA_PATH),
    };
    let service = TestBackend { calls, streams: Arc::default(), delays: Arc::default() };
    (Routes::new(TestServiceServer::new(service)), observe)
}

/// `TestService` with the call counter the server's [`Observe`] layer keeps
/// and this backend's own stream and `Delay` counters.
#[derive(Debug, Clone, Default)]
struct TestBackend {
    calls: Arc<AtomicU64>,
    streams: Arc<StreamCounters>,
    delays: Arc<DelayCounters>,
}

/// What `StreamStats` answers: every streaming call of one backend.
#[derive(Debug, Default)]
struct StreamCounters {
    started: AtomicU64,
    cancelled: AtomicU64,
    completed: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
}

impl StreamCounters {
    fn snapshot(&self) -> StreamStatsResponse {
        let read = |counter: &AtomicU64| i64::try_from(counter.load(Ordering::SeqCst)).unwrap_or(i64::MAX);
        StreamStatsResponse {
            started: read(&self.started),
            cancelled: read(&self.cancelled),
            completed: read(&self.completed),
            sent: read(&self.sent),
            received: read(&self.received),
        }
    }
}

/// One streaming call, from its start: it ends either by [`Call::complete`]
/// (the backend finished it, with or without an error) or by being dropped
/// first, which is how tonic tells a handler that the client went away
/// (the response stream, or the handler's future, is dropped on
/// RST_STREAM or a closed connection). That drop counts as cancelled.
#[derive(Debug)]
struct Call {
    counters: Arc<StreamCounters>,
    done: bool,
}

impl Call {
    fn start(counters: &Arc<StreamCounters>) -> Call {
        counters.started.fetch_add(1, Ordering::SeqCst);
        Call { counters: counters.clone(), done: false }
    }

    fn complete(&mut self) {
        if !self.done {
            self.done = true;
            self.counters.completed.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn sent(&self) {
        self.counters.sent.fetch_add(1, Ordering::SeqCst);
    }

    fn received(&self) {
        self.counters.received.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.done {
            self.counters.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// What `DelayStats` answers, and what waiting `Delay` calls watch: every
/// arrival and end changes it and wakes them.
#[derive(Debug)]
struct DelayCounters(tokio::sync::watch::Sender<DelayState>);

#[derive(Debug, Default, Clone)]
struct DelayState {
    /// The event counter: every arrival and every end moves it by one.
    events: i64,
    stats: DelayStatsResponse,
}

impl Default for DelayCounters {
    fn default() -> Self {
        Self(tokio::sync::watch::Sender::new(DelayState::default()))
    }
}

/// How long a `Delay` call waits for other calls before it goes on anyway:
/// a test whose calls never overlap then fails on its counters, not on a
/// hang.
const DELAY_WAIT_LIMIT: Duration = Duration::from_secs(5);

impl DelayCounters {
    /// Waits until `ready` holds (at most [`DELAY_WAIT_LIMIT`]).
    async fn wait(&self, ready: impl FnMut(&DelayState) -> bool) {
        let mut watching = self.0.subscribe();
        let _ = tokio::time::timeout(DELAY_WAIT_LIMIT, watching.wait_for(ready)).await;
    }
}

/// One `Delay` call, from its arrival: it ends by [`DelayCall::finish`] or
/// by being dropped first (the client went away), which counts as
/// cancelled.
#[derive(Debug)]
struct DelayCall {
    counters: Arc<DelayCounters>,
    arrived: i64,
    done: bool,
}

impl DelayCall {
    fn start(counters: &Arc<DelayCounters>) -> DelayCall {
        let mut arrived = 0;
        counters.0.send_modify(|state| {
            state.events += 1;
            arrived = state.events;
            let stats = &mut state.stats;
            stats.started += 1;
            stats.in_flight += 1;
            stats.max_in_flight = stats.max_in_flight.max(stats.in_flight);
        });
        DelayCall { counters: counters.clone(), arrived, done: false }
    }

    /// Counts the call completed as `value`; its number on the event counter.
    fn finish(&mut self, value: &str) -> i64 {
        self.done = true;
        let mut finished = 0;
        self.counters.0.send_modify(|state| {
            state.events += 1;
            finished = state.events;
            let stats = &mut state.stats;
            stats.completed += 1;
            stats.in_flight -= 1;
            stats.finished.push(value.to_owned());
        });
        finished
    }
}

impl Drop for DelayCall {
    fn drop(&mut self) {
        if !self.done {
            self.counters.0.send_modify(|state| {
                state.events += 1;
                state.stats.cancelled += 1;
                state.stats.in_flight -= 1;
            });
        }
    }
}

/// Called when a request stream has ended, before the call counts as
/// completed. hyper reads a request body whose stream the client reset
/// (RST_STREAM CANCEL) as a clean end, so the end alone does not say the
/// client finished; but hyper drops a handler that is pending on a reset
/// stream. Pending once lets it: a cancelled call is dropped here, before
/// it can complete.
async fn settle() {
    tokio::task::yield_now().await;
}

/// A status of `code` (a google.rpc.Code value) and `message`.
fn status_of(code: i32, message: &str) -> Status {
    Status::new(Code::from_i32(code), message.to_owned())
}

/// The `index`-th Item of a `StreamItems` answer to `request`.
fn item(index: i32, request: &StreamRequest) -> Item {
    let size = usize::try_from(request.payload_size).unwrap_or(0);
    Item {
        index,
        name: format!("item-{index}"),
        tag: request.tag.clone(),
        payload: "x".repeat(size),
        ..Item::default()
    }
}

/// The server-streaming answers: the stream `StreamItems` describes, each
/// message made by `make` when the transport pulls it (nothing is made
/// ahead), so the backend's `sent` counter shows how far a consumer got.
/// A failure before the first message is the handler's own error (a
/// trailers-only answer), counted like any call; with an interval, it is
/// the stream's first item instead (response headers, then the failure).
fn numbered<M: Send + 'static>(
    counters: &Arc<StreamCounters>,
    request: StreamRequest,
    make: fn(i32, &StreamRequest) -> M,
) -> Result<Response<BoxStream<'static, Result<M, Status>>>, Status> {
    let mut call = Call::start(counters);
    let count = request.count.max(0);
    let fails_at = (request.fail_code != 0).then(|| request.fail_after.clamp(0, count));
    let interval = Duration::from_millis(u64::try_from(request.interval_ms).unwrap_or(0));
    if fails_at == Some(0) && interval.is_zero() {
        call.complete();
        return Err(status_of(request.fail_code, &request.fail_message));
    }
    let messages = stream::unfold((call, request, 0i32), move |(mut call, request, next)| async move {
        if call.done {
            return None;
        }
        let failing = fails_at == Some(next);
        if failing || (next > 0 && next < count) {
            tokio::time::sleep(interval).await;
        }
        if failing {
            call.complete();
            return Some((Err(status_of(request.fail_code, &request.fail_message)), (call, request, next)));
        }
        if next >= count {
            if request.hold {
                // Until the client goes away: the stream is then dropped here.
                std::future::pending::<()>().await;
            }
            call.complete();
            return None;
        }
        let message = make(next, &request);
        call.sent();
        Some((Ok(message), (call, request, next + 1)))
    });
    Ok(Response::new(messages.boxed()))
}

fn any<M: prost::Message>(type_name: &str, message: &M) -> prost_types::Any {
    prost_types::Any { type_url: format!("type.googleapis.com/{type_name}"), value: message.encode_to_vec() }
}

/// The `google.rpc.Status` that `Fail` attaches when `with_details` is set.
pub fn fail_details(code: i32, message: &str) -> rpc::Status {
    rpc::Status {
        code,
        message: message.to_owned(),
        details: vec![
            any(
                "google.rpc.ErrorInfo",
                &rpc::ErrorInfo {
                    reason: "TEST_REASON".into(),
                    domain: "test.protogate".into(),
                    metadata: HashMap::from([("k".to_owned(), "v".to_owned())]),
                },
            ),
            any(
                "google.rpc.BadRequest",
                &rpc::BadRequest {
                    field_violations: vec![rpc::bad_request::FieldViolation {
                        field: "message".into(),
                        description: "asked to fail".into(),
                        reason: "TEST_VIOLATION".into(),
                    }],
                },
            ),
            any(
                "protogate.test.v1.CustomDetail",
                &CustomDetail { note: "only the test descriptors know this type".into() },
            ),
        ],
    }
}

#[tonic::async_trait]
impl TestService for TestBackend {
    async fn echo(&self, request: Request<AllTypes>) -> Result<Response<AllTypes>, Status> {
        Ok(Response::new(request.into_inner()))
    }

    async fn echo_query(&self, request: Request<AllTypes>) -> Result<Response<AllTypes>, Status> {
        Ok(Response::new(request.into_inner()))
    }

    async fn echo_path(&self, request: Request<AllTypes>) -> Result<Response<AllTypes>, Status> {
        Ok(Response::new(request.into_inner()))
    }

    async fn echo_verb(&self, request: Request<AllTypes>) -> Result<Response<AllTypes>, Status> {
        Ok(Response::new(request.into_inner()))
    }

    async fn echo_body_field(&self, request: Request<AllTypes>) -> Result<Response<AllTypes>, Status> {
        Ok(Response::new(request.into_inner()))
    }

    async fn echo_response_field(&self, request: Request<AllTypes>) -> Result<Response<AllTypes>, Status> {
        Ok(Response::new(request.into_inner()))
    }

    async fn upload(&self, request: Request<HttpBody>) -> Result<Response<HttpBody>, Status> {
        Ok(Response::new(request.into_inner()))
    }

    async fn download(&self, request: Request<DownloadRequest>) -> Result<Response<HttpBody>, Status> {
        let DownloadRequest { name, content_type } = request.into_inner();
        let content_type = if content_type.is_empty() { "text/plain".to_owned() } else { content_type };
        Ok(Response::new(HttpBody {
            content_type,
            data: format!("contents of {name}").into_bytes(),
            extensions: Vec::new(),
        }))
    }

    async fn upload_field(
        &self,
        request: Request<UploadFieldRequest>,
    ) -> Result<Response<UploadFieldResponse>, Status> {
        let UploadFieldRequest { name, file } = request.into_inner();
        let file = file.unwrap_or_default();
        Ok(Response::new(UploadFieldResponse {
            name,
            content_type: file.content_type,
            size: i64::try_from(file.data.len()).unwrap_or(i64::MAX),
        }))
    }

    async fn fail(&self, request: Request<FailRequest>) -> Result<Response<()>, Status> {
        let FailRequest { code, message, with_details } = request.into_inner();
        if code == 0 {
            return Ok(Response::new(()));
        }
        let grpc_code = Code::from_i32(code);
        if with_details {
            let details = fail_details(code, &message).encode_to_vec();
            Err(Status::with_details(grpc_code, message, Bytes::from(details)))
        } else {
            Err(Status::new(grpc_code, message))
        }
    }

    async fn metadata(&self, request: Request<MetadataRequest>) -> Result<Response<MetadataResponse>, Status> {
        let mut headers: HashMap<String, String> = HashMap::new();
        for entry in request.metadata().iter() {
            let (key, value) = match entry {
                KeyAndValueRef::Ascii(key, value) => match value.to_str() {
                    Ok(value) => (key.as_str(), value),
                    Err(_) => continue,
                },
                // The wire form of a binary value is base64, so it is ASCII already.
                KeyAndValueRef::Binary(key, value) => match std::str::from_utf8(value.as_encoded_bytes()) {
                    Ok(value) => (key.as_str(), value),
                    Err(_) => continue,
                },
            };
            headers
                .entry(key.to_owned())
                .and_modify(|joined| {
                    joined.push_str(", ");
                    joined.push_str(value);
                })
                .or_insert_with(|| value.to_owned());
        }
        let mut response = Response::new(MetadataResponse { headers });
        let metadata = response.metadata_mut();
        metadata.insert("x-echo-header", MetadataValue::from_static("hello"));
        metadata.insert_bin("x-echo-bin", MetadataValue::from_bytes(&[0x01, 0x02]));
        // The trailer `x-echo-trailer` is added by `Observe`: tonic has no API
        // for trailers on a successful unary response.
        Ok(response)
    }

    async fn sleep(&self, request: Request<SleepRequest>) -> Result<Response<()>, Status> {
        let seen = request.metadata().get("grpc-timeout").cloned();
        let millis = u64::try_from(request.get_ref().millis).unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(millis)).await;
        let mut response = Response::new(());
        if let Some(seen) = seen {
            response.metadata_mut().insert("x-seen-grpc-timeout", seen);
        }
        Ok(response)
    }

    async fn unannotated(&self, request: Request<AllTypes>) -> Result<Response<AllTypes>, Status> {
        Ok(Response::new(request.into_inner()))
    }

    type StreamItemsStream = BoxStream<'static, Result<Item, Status>>;

    async fn stream_items(&self, request: Request<StreamRequest>) -> Result<Response<Self::StreamItemsStream>, Status> {
        numbered(&self.streams, request.into_inner(), item)
    }

    type StreamWrappedStream = BoxStream<'static, Result<WrappedItem, Status>>;

    async fn stream_wrapped(
        &self,
        request: Request<StreamRequest>,
    ) -> Result<Response<Self::StreamWrappedStream>, Status> {
        numbered(&self.streams, request.into_inner(), |index, request| WrappedItem {
            item: Some(item(index, request)),
            ignored: "not part of the answer".into(),
        })
    }

    type StreamDownloadStream = BoxStream<'static, Result<HttpBody, Status>>;

    async fn stream_download(
        &self,
        request: Request<StreamRequest>,
    ) -> Result<Response<Self::StreamDownloadStream>, Status> {
        numbered(&self.streams, request.into_inner(), |index, request| HttpBody {
            content_type: if request.tag.is_empty() { "text/plain".into() } else { request.tag.clone() },
            data: format!("chunk-{index}\n").into_bytes(),
            extensions: Vec::new(),
        })
    }

    async fn collect(&self, request: Request<Streaming<Item>>) -> Result<Response<Collected>, Status> {
        let mut call = Call::start(&self.streams);
        let mut items = request.into_inner();
        let mut collected = Collected::default();
        // An error reading is the client going away: `call` drops uncompleted.
        while let Some(item) = items.message().await? {
            call.received();
            if item.fail_code != 0 {
                call.complete();
                return Err(status_of(item.fail_code, &item.fail_message));
            }
            collected.count += 1;
            collected.names.push(item.name);
            collected.tags.push(item.tag);
        }
        settle().await;
        call.complete();
        Ok(Response::new(collected))
    }

    async fn upload_stream(&self, request: Request<Streaming<HttpBody>>) -> Result<Response<UploadStats>, Status> {
        let mut call = Call::start(&self.streams);
        let mut chunks = request.into_inner();
        let mut stats = UploadStats::default();
        while let Some(chunk) = chunks.message().await? {
            call.received();
            if stats.chunks == 0 {
                stats.content_type = chunk.content_type;
            }
            stats.chunks += 1;
            stats.size += i64::try_from(chunk.data.len()).unwrap_or(i64::MAX);
        }
        settle().await;
        call.complete();
        Ok(Response::new(stats))
    }

    type ChatStream = BoxStream<'static, Result<Item, Status>>;

    async fn chat(&self, request: Request<Streaming<Item>>) -> Result<Response<Self::ChatStream>, Status> {
        let call = Call::start(&self.streams);
        let answers = stream::unfold((call, request.into_inner(), 0i32), |(mut call, mut items, index)| async move {
            if call.done {
                return None;
            }
            match items.message().await {
                Ok(Some(item)) => {
                    call.received();
                    if item.fail_code != 0 {
                        call.complete();
                        return Some((Err(status_of(item.fail_code, &item.fail_message)), (call, items, index)));
                    }
                    call.sent();
                    Some((Ok(Item { index, ..item }), (call, items, index + 1)))
                }
                Ok(None) => {
                    settle().await;
                    call.complete();
                    None
                }
                // The client went away; the stream is dropped uncompleted.
                Err(_) => None,
            }
        });
        Ok(Response::new(answers.boxed()))
    }

    async fn delay(&self, request: Request<DelayRequest>) -> Result<Response<DelayResponse>, Status> {
        let mut call = DelayCall::start(&self.delays);
        let request = request.into_inner();
        if request.await_in_flight > 0 {
            let wanted = i64::from(request.await_in_flight);
            self.delays.wait(|state| state.stats.in_flight >= wanted).await;
        }
        if !request.after.is_empty() {
            self.delays.wait(|state| request.after.iter().all(|value| state.stats.finished.contains(value))).await;
        }
        tokio::time::sleep(Duration::from_millis(u64::try_from(request.millis).unwrap_or(0))).await;
        let finished = call.finish(&request.value);
        if request.fail_code != 0 {
            return Err(status_of(request.fail_code, &request.fail_message));
        }
        Ok(Response::new(DelayResponse {
            value: request.value,
            values: request.values,
            then: request.then,
            previous: request.previous.map(Box::new),
            color: request.color,
            arrived: call.arrived,
            finished,
        }))
    }

    async fn delay_stats(&self, _request: Request<()>) -> Result<Response<DelayStatsResponse>, Status> {
        Ok(Response::new(self.delays.0.borrow().stats.clone()))
    }

    async fn stream_stats(&self, _request: Request<()>) -> Result<Response<StreamStatsResponse>, Status> {
        Ok(Response::new(self.streams.snapshot()))
    }

    async fn count(&self, _request: Request<()>) -> Result<Response<CountResponse>, Status> {
        let calls = self.calls.load(Ordering::SeqCst);
        Ok(Response::new(CountResponse { calls: i64::try_from(calls).unwrap_or(i64::MAX) }))
    }
}
