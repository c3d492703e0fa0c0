//! What every layer of the request path shares: the response [`Body`], the
//! caller's [`Identity`], the request id, the [`MatchedRoute`], and the one
//! layer that turns errors into responses ([`respond`]).
//!
//! Layers below [`respond::RespondLayer`] refuse a request by returning a
//! [`GatewayError`](crate::error::GatewayError); none of them renders one.

pub mod body;
pub mod cors;
pub mod identity;
pub mod observe;
pub mod request_id;
pub mod respond;
pub mod route_match;
pub mod trace;

use std::future::Future;
use std::pin::Pin;

use http::Response;

pub use self::body::{Body, RequestBody};
pub use self::identity::Identity;
pub use self::route_match::MatchedRoute;
use crate::error::GatewayError;

/// The future of every layer below the respond layer: boxed, because the
/// stack is built once per connection and one allocation per layer and
/// request is cheap next to the work behind it.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, GatewayError>> + Send>>;
