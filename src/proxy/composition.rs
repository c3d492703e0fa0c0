//! A composition route (DESIGN §8): runs its plan's calls as their inputs
//! allow and answers one JSON object.

use http::{Request, Response};
use hyper::body::Incoming;

use super::request::Handler;
use crate::catalog::CompositionPlan;
use crate::error::GatewayError;
use crate::http::{Body, MatchedRoute};

/// Runs `plan` for the request.
pub async fn call(
    _handler: &Handler,
    _matched: &MatchedRoute,
    plan: &CompositionPlan,
    _req: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    Err(GatewayError::internal(format!("composition {} cannot run yet", plan.name)))
}
