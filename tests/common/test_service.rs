//! The conformance backend behind most gateway tests: an implementation of
//! `protogate.test.v1.TestService` whose answers make the gateway's work
//! observable (echoes, chosen errors, metadata reports, a call counter).
//! [`super::Backend::test_service`] serves it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use tonic::metadata::{KeyAndValueRef, MetadataValue};
use tonic::service::Routes;
use tonic::{Code, Request, Response, Status};

use super::backend::Observe;
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

/// The service and how the server observes it: `calls` counts every request
/// that reaches the server for `TestService` (before tonic decodes it, so
/// even a malformed one counts: "reached the backend") except `Count`, and
/// `Metadata` responses get the `x-echo-trailer` trailer.
pub(super) fn routes(calls: Arc<AtomicU64>) -> (Routes, Observe) {
    let observe = Observe {
        calls: calls.clone(),
        counts: |path| path.starts_with(SERVICE_PREFIX) && path != COUNT_PATH,
        trailer_on: Some(METADATA_PATH),
    };
    (Routes::new(TestServiceServer::new(TestBackend { calls })), observe)
}

/// `TestService` with the call counter the server's [`Observe`] layer keeps.
#[derive(Debug, Clone, Default)]
struct TestBackend {
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
