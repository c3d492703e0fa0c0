//! The real tonic backend behind the integration tests: an implementation of
//! `protogate.test.v1.TestService` whose answers make the gateway's work
//! observable (echoes, chosen errors, metadata reports, a call counter).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use http_body::{Body, Frame, SizeHint};
use prost::Message as _;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::metadata::{KeyAndValueRef, MetadataValue};
use tonic::{Code, Request, Response, Status};

use super::pb::google::api::HttpBody;
use super::pb::google::rpc;
use super::pb::protogate::test::v1::test_service_server::{TestService, TestServiceServer};
use super::pb::protogate::test::v1::{
    AllTypes, CountResponse, CustomDetail, DownloadRequest, FailRequest, MetadataRequest, MetadataResponse,
    SleepRequest, UploadFieldRequest, UploadFieldResponse,
};

/// gRPC path prefix of every TestService method.
const SERVICE_PREFIX: &str = "/protogate.test.v1.TestService/";
/// The one method whose calls are not counted, so that asking does not change the answer.
const COUNT_PATH: &str = "/protogate.test.v1.TestService/Count";
/// The method whose successful responses carry an extra trailer.
const METADATA_PATH: &str = "/protogate.test.v1.TestService/Metadata";

/// `TestService` with a call counter shared with the [`Observe`] layer.
#[derive(Debug, Clone, Default)]
pub struct TestBackend {
    calls: Arc<AtomicU64>,
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

    async fn count(&self, _request: Request<()>) -> Result<Response<CountResponse>, Status> {
        let calls = self.calls.load(Ordering::SeqCst);
        Ok(Response::new(CountResponse { calls: i64::try_from(calls).unwrap_or(i64::MAX) }))
    }
}

/// Counts every request that reaches the server for `TestService` (before
/// tonic decodes it, so even a malformed one counts: "reached the backend")
/// and adds the `x-echo-trailer` trailer to `Metadata` responses.
#[derive(Debug, Clone)]
struct ObserveLayer {
    calls: Arc<AtomicU64>,
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner, calls: self.calls.clone() }
    }
}

#[derive(Debug, Clone)]
struct Observe<S> {
    inner: S,
    calls: Arc<AtomicU64>,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Observe<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<WithTrailer<ResBody>>;
    type Error = S::Error;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let path = request.uri().path();
        if path.starts_with(SERVICE_PREFIX) && path != COUNT_PATH {
            self.calls.fetch_add(1, Ordering::SeqCst);
        }
        let add_trailer = path == METADATA_PATH;
        self.inner
            .call(request)
            .map(move |result| result.map(|response| response.map(|inner| WithTrailer { inner, add_trailer })))
            .boxed()
    }
}

/// A response body that adds `x-echo-trailer: bye` to the trailers frame.
#[derive(Debug)]
struct WithTrailer<B> {
    inner: B,
    add_trailer: bool,
}

impl<B: Body + Unpin> Body for WithTrailer<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let add_trailer = self.add_trailer;
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if !add_trailer {
            return polled;
        }
        polled.map(|frame| {
            frame.map(|frame| {
                frame.map(|frame| match frame.into_trailers() {
                    Ok(mut trailers) => {
                        trailers.insert("x-echo-trailer", http::HeaderValue::from_static("bye"));
                        Frame::trailers(trailers)
                    }
                    Err(frame) => frame,
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A running backend; dropping it stops the server without waiting.
#[derive(Debug)]
pub struct BackendHandle {
    addr: SocketAddr,
    calls: Arc<AtomicU64>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl BackendHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Calls received so far, `Count` excluded (what `Count` answers).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Stops accepting, drains open connections and joins the server task.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("backend task panicked").expect("backend server failed");
        }
    }
}

impl Drop for BackendHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Starts a `TestService` backend on `127.0.0.1:0` (h2c, like any gRPC server).
pub async fn start_backend() -> (SocketAddr, BackendHandle) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind backend listener");
    let addr = listener.local_addr().expect("backend local addr");
    let backend = TestBackend::default();
    let calls = backend.calls.clone();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .layer(ObserveLayer { calls: calls.clone() })
        .add_service(TestServiceServer::new(backend))
        .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), async move {
            let _ = rx.await;
        });
    let task = tokio::spawn(server);
    let handle = BackendHandle { addr, calls, shutdown: Some(tx), task: Some(task) };
    (addr, handle)
}
