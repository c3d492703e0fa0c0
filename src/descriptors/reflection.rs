//! Pulls descriptors from upstreams that serve gRPC server reflection.
//!
//! A backend that serves `grpc.reflection.v1` (or the older `v1alpha`, same
//! messages on another path) can describe itself, so its services need no
//! file in the descriptor folder. This module only fetches: it returns the
//! files as the upstream encoded them, and `descriptors::load` merges them
//! with the folder. Keeping the bytes raw matters: prost_types would drop
//! the `google.api.http` extension from method options on a round trip.
//!
//! The upstream is not trusted to be well behaved: the whole exchange runs
//! under one deadline and stops at a number of files and bytes.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tokio::sync::mpsc;
use tonic::body::Body;
use tonic::client::GrpcService;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::{Code, Status, Streaming};
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ErrorResponse, ServerReflectionRequest, ServerReflectionResponse};

use super::FileHead;

/// What the exchange runs over: any gRPC client transport (the gateway's
/// upstream connection; a tonic `Channel` in tests).
pub trait Transport:
    GrpcService<Body, ResponseBody = Body, Future: Send, Error: std::error::Error + Send> + Clone + Send + 'static
{
}

impl<T> Transport for T where
    T: GrpcService<Body, ResponseBody = Body, Future: Send, Error: std::error::Error + Send> + Clone + Send + 'static
{
}

/// The v1 and v1alpha messages are the same on the wire; only the path of
/// the method differs, so one client speaks both.
const V1: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
const V1ALPHA: &str = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";

/// Bounds on what one upstream may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The whole exchange, connecting included.
    pub timeout: Duration,
    /// Distinct files kept (also caps the number of services listed).
    pub max_files: usize,
    /// Encoded bytes of the distinct files kept; also the largest single
    /// response accepted.
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { timeout: Duration::from_secs(10), max_files: 10_000, max_bytes: 64 << 20 }
    }
}

/// Why an upstream's descriptors could not be fetched.
#[derive(Debug, thiserror::Error)]
#[error("upstream {upstream} {problem}")]
pub struct ReflectionError {
    pub upstream: String,
    pub problem: Problem,
}

/// What went wrong, phrased to follow "upstream URL".
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("does not serve gRPC reflection (neither grpc.reflection.v1 nor v1alpha)")]
    Unimplemented,
    #[error("did not finish reflection within {0:?}")]
    Timeout(Duration),
    #[error("failed the reflection call: {0}")]
    Call(String),
    #[error("refused {request}: {message} ({code:?})")]
    Refused { request: String, code: Code, message: String },
    #[error("lists more than {0} services")]
    TooManyServices(usize),
    #[error("sent more than {0} descriptor files")]
    TooManyFiles(usize),
    #[error("sent more than {0} bytes of descriptors")]
    TooLarge(usize),
    #[error("sent a file descriptor that does not decode: {0}")]
    Decode(prost::DecodeError),
    #[error("broke the reflection protocol: {0}")]
    Protocol(String),
}

/// Fetches every service's files (with all transitive dependencies) from a
/// server that implements `grpc.reflection.v1` ServerReflection, falling
/// back to `v1alpha` when v1 is UNIMPLEMENTED. Returns raw encoded
/// FileDescriptorProto bytes, deduplicated by file name, sorted by name.
/// `upstream` names the server in errors.
pub async fn fetch(
    upstream: &str,
    channel: impl Transport,
    timeout: Duration,
) -> Result<Vec<(String, Bytes)>, ReflectionError> {
    let limits = Limits { timeout, ..Limits::default() };
    fetch_with_limits(upstream, channel, limits).await
}

/// [`fetch`] with every bound chosen by the caller.
pub async fn fetch_with_limits(
    upstream: &str,
    channel: impl Transport,
    limits: Limits,
) -> Result<Vec<(String, Bytes)>, ReflectionError> {
    let exchange = async {
        match session(channel.clone(), V1, &limits).await {
            Err(Problem::Unimplemented) => session(channel, V1ALPHA, &limits).await,
            other => other,
        }
    };
    let problem = match tokio::time::timeout(limits.timeout, exchange).await {
        Ok(Ok(files)) => return Ok(files),
        Ok(Err(problem)) => problem,
        Err(_) => Problem::Timeout(limits.timeout),
    };
    Err(ReflectionError { upstream: upstream.to_owned(), problem })
}

/// What a request in flight asked for, to judge its answer.
enum Asked {
    Service(String),
    File(String),
}

/// One reflection stream: requests go out through `requests`, answers come
/// back in order on `responses`.
struct Session {
    requests: mpsc::UnboundedSender<ServerReflectionRequest>,
    responses: Streaming<ServerReflectionResponse>,
}

impl Session {
    fn send(&self, request: MessageRequest) -> Result<(), Problem> {
        self.requests
            .send(ServerReflectionRequest { host: String::new(), message_request: Some(request) })
            .map_err(|_| Problem::Protocol("closed the request stream".to_owned()))
    }

    async fn next(&mut self) -> Result<MessageResponse, Problem> {
        match self.responses.message().await {
            Ok(Some(ServerReflectionResponse { message_response: Some(response), .. })) => Ok(response),
            Ok(Some(_)) => Err(Problem::Protocol("sent an empty response".to_owned())),
            Ok(None) => Err(Problem::Protocol("ended the stream before answering every request".to_owned())),
            Err(status) => Err(call_failed(&status)),
        }
    }
}

/// Runs the whole exchange over one stream at `path`.
async fn session(
    channel: impl Transport,
    path: &'static str,
    limits: &Limits,
) -> Result<Vec<(String, Bytes)>, Problem> {
    let (sender, receiver) = mpsc::unbounded_channel();
    let outgoing = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|request| (request, receiver))
    });
    // Queued before the call: some servers send their response headers only
    // once the first request has arrived.
    sender
        .send(ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        })
        .map_err(|_| Problem::Protocol("closed the request stream".to_owned()))?;

    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(limits.max_bytes);
    grpc.ready().await.map_err(|e| Problem::Call(describe_error(&e)))?;
    let responses = grpc
        .streaming(
            tonic::Request::new(outgoing),
            PathAndQuery::from_static(path),
            tonic_prost::ProstCodec::<ServerReflectionRequest, ServerReflectionResponse>::default(),
        )
        .await
        .map_err(|status| first_failure(&status))?
        .into_inner();
    let mut session = Session { requests: sender, responses };

    // A server that has no such method may still open the stream and fail
    // on the first message.
    let services = match session.responses.message().await {
        Ok(Some(ServerReflectionResponse {
            message_response: Some(MessageResponse::ListServicesResponse(list)),
            ..
        })) => list.service,
        Ok(Some(ServerReflectionResponse {
            message_response: Some(MessageResponse::ErrorResponse(error)), ..
        })) => return Err(refused("list_services".to_owned(), error)),
        Ok(Some(_)) => return Err(Problem::Protocol("did not answer list_services with a list".to_owned())),
        Ok(None) => return Err(Problem::Protocol("ended the stream without listing services".to_owned())),
        Err(status) => return Err(first_failure(&status)),
    };
    let services: BTreeSet<String> =
        services.into_iter().map(|service| service.name).filter(|name| !name.starts_with("grpc.reflection.")).collect();
    if services.len() > limits.max_files {
        return Err(Problem::TooManyServices(limits.max_files));
    }

    let mut received = Received::new(limits);
    // Names asked for by file_by_filename, so a file the server cannot
    // find is asked for once.
    let mut asked_files = HashSet::new();
    let mut in_flight: Vec<Asked> = Vec::with_capacity(services.len());
    for service in services {
        session.send(MessageRequest::FileContainingSymbol(service.clone()))?;
        in_flight.push(Asked::Service(service));
    }
    // Rounds: send every request the last answers made necessary, then read
    // their answers in order (the protocol answers in request order).
    while !in_flight.is_empty() {
        let mut imports = Vec::new();
        for asked in in_flight.drain(..) {
            match session.next().await? {
                MessageResponse::FileDescriptorResponse(response) => {
                    for raw in response.file_descriptor_proto {
                        received.add(raw, &mut imports)?;
                    }
                }
                MessageResponse::ErrorResponse(error) => match asked {
                    Asked::Service(service) => return Err(refused(format!("file_containing_symbol {service}"), error)),
                    // Left to the pool: the folder or the built-in files may
                    // have it, and if nothing does the load names it.
                    Asked::File(_) if error.error_code == Code::NotFound as i32 => {}
                    Asked::File(name) => return Err(refused(format!("file_by_filename {name}"), error)),
                },
                _ => return Err(Problem::Protocol("did not answer a file request with files".to_owned())),
            }
        }
        for name in imports {
            if !received.has(&name) && asked_files.insert(name.clone()) {
                session.send(MessageRequest::FileByFilename(name.clone()))?;
                in_flight.push(Asked::File(name));
            }
        }
    }
    Ok(received.files.into_iter().collect())
}

/// The distinct files received so far, within the limits.
struct Received<'a> {
    limits: &'a Limits,
    files: BTreeMap<String, Bytes>,
    bytes: usize,
}

impl<'a> Received<'a> {
    fn new(limits: &'a Limits) -> Self {
        Received { limits, files: BTreeMap::new(), bytes: 0 }
    }

    fn has(&self, name: &str) -> bool {
        self.files.contains_key(name)
    }

    /// Keeps `raw` unless a file of its name is already kept (servers may
    /// resend files), and pushes its imports onto `imports`.
    fn add(&mut self, raw: Vec<u8>, imports: &mut Vec<String>) -> Result<(), Problem> {
        let raw = Bytes::from(raw);
        let head = FileHead::decode(raw.clone()).map_err(Problem::Decode)?;
        if head.name.is_empty() {
            return Err(Problem::Protocol("sent a file without a name".to_owned()));
        }
        if self.files.contains_key(&head.name) {
            return Ok(());
        }
        if self.files.len() >= self.limits.max_files {
            return Err(Problem::TooManyFiles(self.limits.max_files));
        }
        self.bytes = self.bytes.saturating_add(raw.len());
        if self.bytes > self.limits.max_bytes {
            return Err(Problem::TooLarge(self.limits.max_bytes));
        }
        imports.extend(head.dependency);
        self.files.insert(head.name, raw);
        Ok(())
    }
}

fn refused(request: String, error: ErrorResponse) -> Problem {
    Problem::Refused { request, code: Code::from_i32(error.error_code), message: error.error_message }
}

/// A failure before the server answered anything: UNIMPLEMENTED means this
/// version of the service is not there.
fn first_failure(status: &Status) -> Problem {
    if status.code() == Code::Unimplemented {
        Problem::Unimplemented
    } else {
        call_failed(status)
    }
}

fn call_failed(status: &Status) -> Problem {
    let mut text = format!("{:?}", status.code());
    if !status.message().is_empty() {
        text.push_str(": ");
        text.push_str(status.message());
    }
    if let Some(source) = std::error::Error::source(status) {
        text.push_str(": ");
        text.push_str(&describe_error(source));
    }
    Problem::Call(text)
}

/// An error with its chain of causes, for transport errors whose top level
/// says only "transport error".
fn describe_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

#[cfg(test)]
mod tests;
