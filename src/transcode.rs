//! Transcoding between HTTP/JSON and protobuf messages: the request side
//! (body, path variables, query → `DynamicMessage`), the response side
//! (`DynamicMessage` → JSON or raw `HttpBody`), the error envelope, and the
//! tonic codec that carries dynamic messages.
//!
//! Everything that depends only on descriptors and config (field paths,
//! serializer options) is resolved into plans at load time.

pub mod codec;
pub mod direct;
pub mod fields;
pub mod framing;
mod names;
mod numbers;
pub mod query;
pub mod request;
pub mod response;
pub mod split;
pub mod status;
mod update_mask;

#[cfg(test)]
mod tests;

use prost_reflect::{DeserializeOptions, SerializeOptions};

pub use codec::DynamicCodec;
pub use request::{PlanError, RequestInput, RequestPlan};
pub use response::{Rendered, ResponsePlan};

use crate::config::{JsonOptions, Strictness};

/// JSON behaviour resolved from `config.json` once per catalog.
#[derive(Debug, Clone)]
pub struct JsonSettings {
    pub serialize: SerializeOptions,
    pub deserialize: DeserializeOptions,
    pub pretty: bool,
    pub reject_unknown_query_params: bool,
    /// `json.query_path_conflict: path_wins`.
    pub path_wins: bool,
    pub options: JsonOptions,
}

impl JsonSettings {
    pub fn new(options: &JsonOptions) -> Self {
        Self {
            serialize: SerializeOptions::new()
                .stringify_64_bit_integers(!options.int64_as_numbers)
                .use_enum_numbers(options.enums_as_ints)
                .use_proto_field_name(options.use_proto_names)
                .skip_default_fields(!options.emit_unpopulated),
            deserialize: DeserializeOptions::new().deny_unknown_fields(options.unknown_fields == Strictness::Reject),
            pretty: options.pretty,
            reject_unknown_query_params: options.unknown_query_params == Strictness::Reject,
            path_wins: options.query_path_conflict == crate::config::QueryPathConflict::PathWins,
            options: options.clone(),
        }
    }
}

impl Default for JsonSettings {
    fn default() -> Self {
        Self::new(&JsonOptions::default())
    }
}
