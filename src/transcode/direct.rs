//! Transcoding without a `DynamicMessage` in between, compiled at load:
//! request JSON straight to wire bytes ([`json_in`], per message type),
//! path captures straight to wire bytes ([`captures_in`], per binding),
//! answers' wire bytes straight to JSON ([`json_out`]). The
//! `DynamicMessage` paths stay as the oracle: a direct path bails to them
//! on anything it does not cover, and differential tests hold the two to
//! the same output.

pub mod captures_in;
pub mod json_in;
pub mod json_out;
mod wire;

use prost_reflect::MessageDescriptor;

/// The types prost-reflect maps to JSON in their own ways (its `wkt.rs`):
/// the direct paths hand them to it, one value at a time.
fn is_well_known(desc: &MessageDescriptor) -> bool {
    matches!(
        desc.full_name(),
        "google.protobuf.Any"
            | "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FloatValue"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.Int32Value"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
            | "google.protobuf.FieldMask"
            | "google.protobuf.Struct"
            | "google.protobuf.ListValue"
            | "google.protobuf.Value"
            | "google.protobuf.Empty"
    )
}
