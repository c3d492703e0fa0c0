//! protogate: an HTTP/JSON to gRPC gateway driven by protobuf descriptors
//! loaded at run time.
//!
//! Data flows one way, and modules import only downward in this list
//! (docs/architecture.md):
//! [`error`], [`config`], [`descriptors`], [`routing`], [`tls`] → [`transcode`] →
//! [`telemetry`] (trace context, spans, OTLP export) → [`upstream`] →
//! [`catalog`] → [`http`] (what every layer shares, and the
//! one respond layer) → the features ([`auth`], [`ratelimit`]) → [`proxy`]
//! (the innermost handlers) → [`openapi`] (the catalog's OpenAPI document)
//! → [`gateway`] (load, the layer stack, reload,
//! listeners, admin) → [`cli`].

pub mod auth;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod descriptors;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod openapi;
pub mod proxy;
pub mod ratelimit;
pub mod routing;
pub mod telemetry;
pub mod tls;
pub mod transcode;
pub mod upstream;

pub use cli::run;
