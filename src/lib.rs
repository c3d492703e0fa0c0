//! protogate: an HTTP/JSON to gRPC gateway driven by protobuf descriptors
//! loaded at run time.
//!
//! Data flows one way: files ([`descriptors`]) → catalog and route table
//! ([`catalog`], [`routing`]) → the request pipeline ([`server`]), which
//! matches a route, transcodes JSON into a dynamic protobuf message
//! ([`transcode`]), calls the backend ([`upstream`]) and transcodes the answer
//! back. Every error leaves through one place ([`error`]).

pub mod admin;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod descriptors;
pub mod error;
pub mod middleware;
pub mod reload;
pub mod routing;
pub mod server;
pub mod transcode;
pub mod upstream;

pub use cli::run;
