//! Tower layers around the transcoder, in the order DESIGN §7 gives:
//! request id → route match → (authentication → authorization → rate
//! limit) → transcoder. Every layer answers errors itself through
//! [`crate::server::error_response`], so its service never fails.

pub mod auth;
pub mod ratelimit;
pub mod request_id;
pub mod route_match;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use http::Response;

use crate::server::Body;

/// Who is calling, as established by authentication; put in the request's
/// extensions for authorization, rate limiting (key `consumer`) and the
/// metadata sent to the backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// JWT `sub` or the API key's id.
    pub consumer: String,
    /// The JWT provider's or API key set's configured name.
    pub provider: String,
    /// From the JWT `scope`/`scp` claim or the API key's scopes.
    pub scopes: Vec<String>,
    /// All claims of a JWT (empty for API keys).
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// The future every layer returns: boxed, because the stack is built once
/// per connection and one allocation per layer and request is cheap next
/// to the work behind it.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;
