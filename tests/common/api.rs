//! The crate's items the tests use, named here and nowhere else under
//! `tests/`: a change of the crate's module layout is an edit of this file.
//! Test files use `common::api::…` (or the harness, which wraps most of it).
#![allow(unused_imports)]

pub use protogate::cli::route_table;
pub use protogate::config::values::parse_upstream_url;
pub use protogate::config::{
    from_yaml, Config, QueryPathConflict, RouteOverride, RouteSelector, Strictness, UpstreamRule,
};
pub use protogate::error::GatewayError;
pub use protogate::gateway::admin::serve as serve_admin;
pub use protogate::gateway::reload::ReloadStatus;
pub use protogate::gateway::Gateway;

/// The rate limiter, for the tests that drive it without a gateway.
pub mod ratelimit {
    pub use protogate::config::rate_limits::RateLimitsConfig;
    pub use protogate::ratelimit::local::ManualClock;
    pub use protogate::ratelimit::rule::{compile, ResolvedLimit, RouteLimits};
    pub use protogate::ratelimit::{Check, RateLimiter, Verdict};
}
