//! The crate's items the tests use, named here and nowhere else under
//! `tests/`: a change of the crate's module layout is an edit of this file.
//! Test files use `common::api::…` (or the harness, which wraps most of it).
#![allow(unused_imports)]

pub use protogate::admin::serve as serve_admin;
pub use protogate::cli::route_table;
pub use protogate::config::values::parse_upstream_url;
pub use protogate::config::{from_yaml, Config, RouteOverride, RouteSelector, Strictness, UpstreamRule};
pub use protogate::error::GatewayError;
pub use protogate::reload::ReloadStatus;
pub use protogate::server::Gateway;

/// The rate limiter, for the tests that drive it without a gateway.
pub mod ratelimit {
    pub use protogate::middleware::ratelimit::config::RateLimitsConfig;
    pub use protogate::middleware::ratelimit::local::ManualClock;
    pub use protogate::middleware::ratelimit::rule::{compile, ResolvedLimit, RouteLimits};
    pub use protogate::middleware::ratelimit::{Check, RateLimiter, Verdict};
}
