//! The gateway's one error type: what went wrong, whose fault it is, and the
//! HTTP status the standard gRPC code → HTTP mapping gives it (DESIGN §5).
//! Nothing here renders: the respond layer (`http::respond`) is the one
//! place where an error becomes a response.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use tonic::Code;

/// Whose fault an error is: picks log level and metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client sent something we refuse.
    Client,
    /// The backend failed or answered with a non-OK status.
    Upstream,
    /// A fault of the gateway itself (never caused by input).
    Internal,
}

/// One entry of a `google.rpc.BadRequest` detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

/// An error on its way to the client.
#[derive(Debug, Clone)]
pub struct GatewayError {
    pub code: Code,
    /// HTTP status; defaults to the mapping of `code`, some gateway errors
    /// (405, 413, 415) override it.
    pub status: StatusCode,
    pub message: String,
    pub fault: Fault,
    /// Rendered as one `google.rpc.BadRequest` detail when non-empty.
    pub violations: Vec<FieldViolation>,
    /// A backend's serialized `google.rpc.Status` (`grpc-status-details-bin`);
    /// its `details` are rendered through the descriptor pool.
    pub backend_details: Option<Bytes>,
    /// Extra response headers (`Allow`, `WWW-Authenticate`, `Retry-After`, …).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Also end the answer with `grpc-status`/`grpc-message` trailers: a
    /// stream's failure before its first message, over HTTP/2.
    pub trailers: bool,
}

impl GatewayError {
    pub fn new(code: Code, fault: Fault, message: impl Into<String>) -> Self {
        Self {
            code,
            status: http_status(code),
            message: message.into(),
            fault,
            violations: Vec::new(),
            backend_details: None,
            headers: Vec::new(),
            trailers: false,
        }
    }

    /// 400 INVALID_ARGUMENT naming the field at fault.
    pub fn bad_field(field: impl Into<String>, description: impl Into<String>) -> Self {
        let field = field.into();
        let description = description.into();
        let message = if field.is_empty() { description.clone() } else { format!("{field}: {description}") };
        let mut err = Self::new(Code::InvalidArgument, Fault::Client, message);
        err.violations.push(FieldViolation { field, description });
        err
    }

    /// 500 INTERNAL: a fault of the gateway (or of what the backend sent
    /// that the gateway cannot render), never of the client's input.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, Fault::Internal, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, Fault::Client, message)
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// The same error, its answer ended by gRPC status trailers.
    pub fn with_trailers(mut self) -> Self {
        self.trailers = true;
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// A backend's non-OK status.
    pub fn from_upstream(status: &tonic::Status) -> Self {
        // An empty message says nothing; the code's description does.
        let message = match status.message() {
            "" => status.code().description(),
            message => message,
        };
        let mut err = Self::new(status.code(), Fault::Upstream, message);
        if !status.details().is_empty() {
            err.backend_details = Some(Bytes::copy_from_slice(status.details()));
        }
        err
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for GatewayError {}

/// The standard mapping of google/rpc/code.proto, with CANCELLED → 499.
pub fn http_status(code: Code) -> StatusCode {
    let n = match code {
        Code::Ok => 200,
        Code::Cancelled => 499,
        Code::Unknown => 500,
        Code::InvalidArgument => 400,
        Code::DeadlineExceeded => 504,
        Code::NotFound => 404,
        Code::AlreadyExists => 409,
        Code::PermissionDenied => 403,
        Code::ResourceExhausted => 429,
        Code::FailedPrecondition => 400,
        Code::Aborted => 409,
        Code::OutOfRange => 400,
        Code::Unimplemented => 501,
        Code::Internal => 500,
        Code::Unavailable => 503,
        Code::DataLoss => 500,
        Code::Unauthenticated => 401,
    };
    StatusCode::from_u16(n).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
