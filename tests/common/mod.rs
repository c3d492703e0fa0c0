//! The integration-test harness, shared by every test binary (`mod common;`,
//! each using a different part of it).
//!
//! Real tonic backends ([`Backend`]) and the gateway in process
//! ([`TestGateway`]), each on `127.0.0.1:0`, served until a shutdown channel
//! fires and joined by `shutdown().await` (dropping only signals the stop):
//!
//! ```ignore
//! let backend = Backend::start(Routes::new(my_service)).await;
//! let gw = common::start(Descriptors::test_service(), common::config_for(&backend), vec![backend]).await;
//! let reply = gw.get("/test/metadata").await;
//! gw.shutdown().await;
//! ```
//!
//! The config is a [`api::Config`] or the YAML text of a config file
//! ([`Setup`]); [`start_test_service`] is the common case of the conformance
//! backend behind the default config. The fixtures the tests share are
//! defined here once: descriptor sets and protos ([`fixtures`]), JWT keys
//! and tokens ([`jwt`]), a Redis server ([`redis`]). Streamed exchanges,
//! read and sent a piece at a time over HTTP/1.1 and HTTP/2, are in
//! [`stream`]. [`api`] is the one place under `tests/` that names the
//! crate's internal module paths.
#![allow(dead_code)]

pub mod api;
mod backend;
pub mod fixtures;
mod gateway;
pub mod jwt;
pub mod metrics;
pub mod redis;
mod reply;
pub mod rpc;
pub mod stream;
mod test_service;
pub mod unary;
mod wait;

// Re-exported for the test binaries; not every binary uses each one.
#[allow(unused_imports)]
pub use backend::{bind, upstream_url, Backend};
#[allow(unused_imports)]
pub use gateway::{
    canonical, config_for, start, start_test_service, start_test_service_with, start_test_service_with_timeouts,
    start_with_admin, Descriptors, Setup, TestGateway,
};
#[allow(unused_imports)]
pub use reply::{assert_error, http_client, violation_fields, Reply};
#[allow(unused_imports)]
pub use test_service::fail_details;
#[allow(unused_imports)]
pub use wait::eventually;

/// Generated code, nested like the protobuf packages so that the generated
/// `super::...::google::api` paths resolve.
pub mod pb {
    pub mod google {
        pub mod api {
            tonic::include_proto!("google.api");
        }
        pub use super::super::rpc;
    }
    pub mod protogate {
        pub mod test {
            pub mod v1 {
                tonic::include_proto!("protogate.test.v1");
            }
        }
    }
}

/// `google.rpc.Code` values, as the JSON envelope's `code` carries them.
pub mod code {
    pub const CANCELLED: i32 = 1;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const NOT_FOUND: i32 = 5;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const FAILED_PRECONDITION: i32 = 9;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

// Not every test binary talks to the test service directly.
#[allow(unused_imports)]
pub use pb::protogate::test::v1 as testpb;
