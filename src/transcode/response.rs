//! A backend's answer → HTTP response body: proto3 JSON of the whole
//! message or of `response_body`'s field, or the raw bytes of a
//! `google.api.HttpBody`. Answers arrive as wire bytes; the whole-message
//! JSON is written from them directly ([`JsonOut`]) where it can be, through
//! a `DynamicMessage` otherwise.
//!
//! A backend can send things the JSON mapping cannot express (an `Any` whose
//! type the catalog does not know, a Timestamp out of range); those become a
//! 500 with the reason, never a panic and never half a body.

use base64::display::Base64Display;
use base64::prelude::BASE64_STANDARD;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, Value};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use super::direct::json_out::JsonOut;
use super::names::non_finite;
use super::{JsonSettings, PlanError};
use crate::error::GatewayError;

const HTTP_BODY: &str = "google.api.HttpBody";
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");

/// A response body with its content type.
pub struct Rendered {
    pub body: Bytes,
    pub content_type: HeaderValue,
}

#[derive(Debug, Clone)]
enum Shape {
    Whole,
    WholeRaw { data: FieldDescriptor, content_type: FieldDescriptor },
    Field(FieldDescriptor),
    FieldRaw { field: FieldDescriptor, data: FieldDescriptor, content_type: FieldDescriptor },
}

/// How one route renders its output message, fixed at load.
#[derive(Debug, Clone)]
pub struct ResponsePlan {
    output: MessageDescriptor,
    shape: Shape,
    /// The wire → JSON fast path, for whole-message JSON answers.
    direct: Option<Arc<JsonOut>>,
}

impl ResponsePlan {
    /// `response_body` is HttpRule.response_body: "" or a top-level field.
    pub fn new(output: &MessageDescriptor, response_body: &str) -> Result<Self, PlanError> {
        let shape = if response_body.is_empty() {
            match http_body_fields(output) {
                Some((data, content_type)) => Shape::WholeRaw { data, content_type },
                None => Shape::Whole,
            }
        } else {
            let field = output.get_field_by_name(response_body).ok_or_else(|| {
                let rule = "response_body must name a top-level field of the response message (http.proto)";
                PlanError(match response_body.contains('.') {
                    true => format!("response_body: \"{response_body}\": {rule}; nested paths are not allowed"),
                    false => format!(
                        "response_body: \"{response_body}\": {rule}; {} has {}",
                        output.full_name(),
                        super::request::field_names(output)
                    ),
                })
            })?;
            match field.kind() {
                Kind::Message(desc) if !field.is_list() && !field.is_map() => match http_body_fields(&desc) {
                    Some((data, content_type)) => Shape::FieldRaw { field, data, content_type },
                    None => Shape::Field(field),
                },
                _ => Shape::Field(field),
            }
        };
        let direct = match shape {
            Shape::Whole => Some(JsonOut::new(output)).filter(JsonOut::covers_root).map(Arc::new),
            _ => None,
        };
        Ok(Self { output: output.clone(), shape, direct })
    }

    pub fn output(&self) -> &MessageDescriptor {
        &self.output
    }

    /// Whether the answer is the raw bytes of a `google.api.HttpBody`.
    pub fn is_raw(&self) -> bool {
        matches!(self.shape, Shape::WholeRaw { .. } | Shape::FieldRaw { .. })
    }

    /// The `response_body` field, when the answer is one field's JSON.
    pub fn field(&self) -> Option<&FieldDescriptor> {
        match &self.shape {
            Shape::Field(field) => Some(field),
            _ => None,
        }
    }

    pub fn render(&self, settings: &JsonSettings, msg: &DynamicMessage) -> Result<Rendered, GatewayError> {
        match &self.shape {
            Shape::Whole | Shape::Field(_) => {
                // Most small answers fit without growing the buffer.
                let mut buf = Vec::with_capacity(512);
                self.render_json(settings, msg, &mut buf)?;
                Ok(Rendered { body: Bytes::from(buf), content_type: JSON })
            }
            Shape::WholeRaw { data, content_type } => raw(msg, data, content_type),
            Shape::FieldRaw { field, data, content_type } => match msg.get_field(field).as_message() {
                Some(inner) => raw(inner, data, content_type),
                None => Err(GatewayError::internal(format!("response field {} is not a message", field.name()))),
            },
        }
    }
}

impl ResponsePlan {
    /// Renders a backend's answer, the message encoded in `bytes`.
    pub fn render_encoded(&self, settings: &JsonSettings, bytes: Bytes) -> Result<Rendered, GatewayError> {
        if let Some(direct) = &self.direct {
            let mut buf = Vec::with_capacity(512);
            if direct.render(settings, &bytes, &mut buf) {
                return Ok(Rendered { body: Bytes::from(buf), content_type: JSON });
            }
        }
        self.render(settings, &self.decode(bytes)?)
    }

    /// [`render_json`](Self::render_json) for the message encoded in
    /// `bytes`.
    pub fn render_json_encoded(
        &self,
        settings: &JsonSettings,
        bytes: &Bytes,
        out: &mut Vec<u8>,
    ) -> Result<(), GatewayError> {
        if let Some(direct) = &self.direct {
            if direct.render(settings, bytes, out) {
                return Ok(());
            }
        }
        self.render_json(settings, &self.decode(bytes.clone())?, out)
    }

    /// The output message encoded in `bytes`; bytes that are none are the
    /// backend's fault.
    pub fn decode(&self, bytes: Bytes) -> Result<DynamicMessage, GatewayError> {
        decode(&self.output, bytes)
    }

    /// Appends the message's JSON to `out` (a stream writes many messages
    /// into one buffer). Not for raw (`HttpBody`) answers.
    pub fn render_json(
        &self,
        settings: &JsonSettings,
        msg: &DynamicMessage,
        out: &mut Vec<u8>,
    ) -> Result<(), GatewayError> {
        match &self.shape {
            Shape::Whole => write_json(settings, out, |s| msg.serialize_with_options(s, &settings.serialize)),
            Shape::Field(field) => {
                let value = msg.get_field(field);
                let kind = field.kind();
                let json = FieldJson { value: &value, kind: &kind, settings };
                write_json(settings, out, |s| json.serialize(s))
            }
            Shape::WholeRaw { .. } | Shape::FieldRaw { .. } => {
                Err(GatewayError::internal("a raw HttpBody answer has no JSON"))
            }
        }
    }
}

fn http_body_fields(desc: &MessageDescriptor) -> Option<(FieldDescriptor, FieldDescriptor)> {
    if desc.full_name() != HTTP_BODY {
        return None;
    }
    Some((desc.get_field_by_name("data")?, desc.get_field_by_name("content_type")?))
}

/// A backend's message of type `desc`, from its wire bytes.
pub fn decode(desc: &MessageDescriptor, bytes: Bytes) -> Result<DynamicMessage, GatewayError> {
    DynamicMessage::decode(desc.clone(), bytes)
        .map_err(|e| GatewayError::from_upstream(&tonic::Status::internal(format!("decoding response: {e}"))))
}

/// Appends JSON to `buf` through serde_json with the catalog's formatting.
pub(crate) fn write_json<F>(settings: &JsonSettings, buf: &mut Vec<u8>, write: F) -> Result<(), GatewayError>
where
    F: FnOnce(&mut serde_json::Serializer<&mut Vec<u8>, Formatter>) -> Result<(), serde_json::Error>,
{
    let formatter = if settings.pretty { Formatter::Pretty(Default::default()) } else { Formatter::Compact };
    let mut ser = serde_json::Serializer::with_formatter(buf, formatter);
    write(&mut ser).map_err(|e| GatewayError::internal(format!("cannot render the response as JSON: {e}")))
}

fn raw(
    body: &DynamicMessage,
    data: &FieldDescriptor,
    content_type: &FieldDescriptor,
) -> Result<Rendered, GatewayError> {
    let bytes = match body.get_field(data).as_bytes() {
        Some(b) => b.clone(),
        None => Bytes::new(),
    };
    let content_type = match body.get_field(content_type).as_str() {
        None | Some("") => OCTET_STREAM,
        Some(ct) => HeaderValue::from_str(ct).map_err(|_| {
            GatewayError::internal(format!("backend HttpBody content_type {ct:?} is not a valid header value"))
        })?,
    };
    Ok(Rendered { body: bytes, content_type })
}

/// One formatter type for both settings, so the serializer is monomorphized
/// once.
pub(crate) enum Formatter {
    Compact,
    Pretty(serde_json::ser::PrettyFormatter<'static>),
}

macro_rules! delegate {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $name<W: ?Sized + std::io::Write>(&mut self, w: &mut W $(, $arg: $ty)*) -> std::io::Result<()> {
            match self {
                Formatter::Compact => serde_json::ser::CompactFormatter.$name(w $(, $arg)*),
                Formatter::Pretty(p) => p.$name(w $(, $arg)*),
            }
        }
    )*};
}

impl serde_json::ser::Formatter for Formatter {
    delegate! {
        begin_array();
        end_array();
        begin_array_value(first: bool);
        end_array_value();
        begin_object();
        end_object();
        begin_object_key(first: bool);
        end_object_key();
        begin_object_value();
        end_object_value();
    }
}

/// One field's value in the proto3 JSON mapping, default or not: what
/// `response_body` returns. Messages inside go through prost-reflect.
pub struct FieldJson<'a> {
    pub value: &'a Value,
    /// The field's kind (for a list, the element kind; for a map, the entry).
    pub kind: &'a Kind,
    pub settings: &'a JsonSettings,
}

impl Serialize for FieldJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let options = &self.settings.options;
        match self.value {
            Value::Bool(v) => s.serialize_bool(*v),
            Value::I32(v) => s.serialize_i32(*v),
            Value::U32(v) => s.serialize_u32(*v),
            Value::I64(v) if options.int64_as_numbers => s.serialize_i64(*v),
            Value::U64(v) if options.int64_as_numbers => s.serialize_u64(*v),
            Value::I64(v) => s.collect_str(v),
            Value::U64(v) => s.collect_str(v),
            Value::F32(v) if v.is_finite() => s.serialize_f32(*v),
            Value::F64(v) if v.is_finite() => s.serialize_f64(*v),
            Value::F32(v) => s.serialize_str(non_finite(f64::from(*v))),
            Value::F64(v) => s.serialize_str(non_finite(*v)),
            Value::String(v) => s.serialize_str(v),
            Value::Bytes(v) => s.collect_str(&Base64Display::new(v, &BASE64_STANDARD)),
            Value::EnumNumber(n) => match self.kind {
                Kind::Enum(e) if e.full_name() == "google.protobuf.NullValue" => s.serialize_unit(),
                Kind::Enum(e) if !options.enums_as_ints => match e.get_value(*n) {
                    Some(v) => s.serialize_str(v.name()),
                    None => s.serialize_i32(*n),
                },
                _ => s.serialize_i32(*n),
            },
            Value::Message(m) => m.serialize_with_options(s, &self.settings.serialize),
            Value::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&FieldJson { value: item, kind: self.kind, settings: self.settings })?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                let value_kind = match self.kind {
                    Kind::Message(entry) if entry.is_map_entry() => entry.map_entry_value_field().kind(),
                    _ => return Err(serde::ser::Error::custom("map value without a map entry type")),
                };
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(
                        &MapKeyJson(key),
                        &FieldJson { value, kind: &value_kind, settings: self.settings },
                    )?;
                }
                map.end()
            }
        }
    }
}

/// Map keys are always JSON strings.
struct MapKeyJson<'a>(&'a MapKey);

impl Serialize for MapKeyJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            MapKey::Bool(v) => s.collect_str(v),
            MapKey::I32(v) => s.collect_str(v),
            MapKey::I64(v) => s.collect_str(v),
            MapKey::U32(v) => s.collect_str(v),
            MapKey::U64(v) => s.collect_str(v),
            MapKey::String(v) => s.serialize_str(v),
        }
    }
}
