//! How refusals name what they are about: a protobuf type for people
//! (`int64`, `repeated string`) and a request field path
//! (`items[2].name`). Shared by the JSON body parser and the exact number
//! check, both of which report through them; and the JSON strings of
//! floats that are not finite, which both renderers write.

use prost_reflect::Kind;

pub(super) fn kind_name(kind: &Kind) -> String {
    let name = match kind {
        Kind::Double => "double",
        Kind::Float => "float",
        Kind::Int32 => "int32",
        Kind::Int64 => "int64",
        Kind::Uint32 => "uint32",
        Kind::Uint64 => "uint64",
        Kind::Sint32 => "sint32",
        Kind::Sint64 => "sint64",
        Kind::Fixed32 => "fixed32",
        Kind::Fixed64 => "fixed64",
        Kind::Sfixed32 => "sfixed32",
        Kind::Sfixed64 => "sfixed64",
        Kind::Bool => "bool",
        Kind::String => "string",
        Kind::Bytes => "bytes",
        Kind::Message(m) => return m.full_name().to_owned(),
        Kind::Enum(e) => return format!("enum {}", e.full_name()),
    };
    name.to_owned()
}

/// Whether `full_name` is one of the nine wrapper types
/// (`google.protobuf.Int64Value` and the rest): a message whose JSON form is
/// its one `value`.
pub(super) fn is_wrapper(full_name: &str) -> bool {
    matches!(
        full_name,
        "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
    )
}

pub(super) fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

/// The proto3 JSON strings of a float that is not finite.
pub(crate) fn non_finite(v: f64) -> &'static str {
    if v.is_nan() {
        "NaN"
    } else if v > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}
