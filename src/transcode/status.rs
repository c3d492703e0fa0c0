//! The error envelope's JSON: `google.rpc.Status` (DESIGN §5), with
//! `details` rendered as `Any` JSON through the catalog's descriptor pool.
//! Called by the respond layer and by streams ending in band. Rendering an error must not fail, so a detail the pool
//! cannot describe falls back to its type URL and base64 bytes.

use base64::prelude::BASE64_STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, Value};
use serde::Serialize;

use super::JsonSettings;
use crate::error::{FieldViolation, GatewayError};

const BAD_REQUEST_URL: &str = "type.googleapis.com/google.rpc.BadRequest";

/// `google.rpc.Status` on the wire, as a backend sends it in
/// `grpc-status-details-bin`; the details stay opaque until rendered.
#[derive(Clone, PartialEq, prost::Message)]
struct WireStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

#[derive(Serialize)]
struct Envelope<'a> {
    code: i32,
    message: &'a str,
    details: Vec<serde_json::Value>,
}

/// The JSON body of `google.rpc.Status` for `err`:
/// `{"code": N, "message": "...", "details": [...]}`, `details` always there.
pub fn render_error(err: &GatewayError, pool: &DescriptorPool, settings: &JsonSettings) -> Bytes {
    let mut details = Vec::new();
    if !err.violations.is_empty() {
        details.push(bad_request(&err.violations, pool, settings));
    }
    if let Some(raw) = &err.backend_details {
        match WireStatus::decode(raw.as_ref()) {
            Ok(status) => details.extend(status.details.iter().map(|any| any_json(any, pool, settings))),
            Err(e) => {
                tracing::debug!(error = %e, "backend grpc-status-details-bin is not a google.rpc.Status")
            }
        }
    }
    let envelope = Envelope { code: i32::from(err.code), message: &err.message, details };
    let json = if settings.pretty { serde_json::to_vec_pretty(&envelope) } else { serde_json::to_vec(&envelope) };
    match json {
        Ok(body) => Bytes::from(body),
        // serde_json::Value and plain fields cannot fail to serialize; keep a
        // valid envelope regardless.
        Err(_) => Bytes::from(format!(r#"{{"code":{},"message":"","details":[]}}"#, i32::from(err.code))),
    }
}

/// One `google.rpc.BadRequest` detail listing the violations, built as a
/// real message so the naming options apply to it as to any response.
fn bad_request(violations: &[FieldViolation], pool: &DescriptorPool, settings: &JsonSettings) -> serde_json::Value {
    let built = (|| {
        let desc = pool.get_message_by_name("google.rpc.BadRequest")?;
        let list = desc.get_field_by_name("field_violations")?;
        let prost_reflect::Kind::Message(violation_desc) = list.kind() else {
            return None;
        };
        let field = violation_desc.get_field_by_name("field")?;
        let description = violation_desc.get_field_by_name("description")?;
        let items = violations
            .iter()
            .map(|v| {
                let mut m = DynamicMessage::new(violation_desc.clone());
                m.set_field(&field, Value::String(v.field.clone()));
                m.set_field(&description, Value::String(v.description.clone()));
                Value::Message(m)
            })
            .collect();
        let mut msg = DynamicMessage::new(desc);
        msg.set_field(&list, Value::List(items));
        Some(prost_types::Any { type_url: BAD_REQUEST_URL.to_owned(), value: msg.encode_to_vec() })
    })();
    match built {
        Some(any) => any_json(&any, pool, settings),
        // A pool without google.rpc (not supposed to happen): same shape by hand.
        None => {
            let list = if settings.options.use_proto_names { "field_violations" } else { "fieldViolations" };
            let items: Vec<_> = violations
                .iter()
                .map(|v| serde_json::json!({"field": v.field, "description": v.description}))
                .collect();
            serde_json::json!({"@type": BAD_REQUEST_URL, list: items})
        }
    }
}

/// An `Any` as JSON through the pool; what the pool cannot render is
/// passed on as type URL and base64 bytes.
fn any_json(any: &prost_types::Any, pool: &DescriptorPool, settings: &JsonSettings) -> serde_json::Value {
    let rendered = pool.get_message_by_name("google.protobuf.Any").and_then(|desc| {
        let mut msg = DynamicMessage::new(desc);
        msg.transcode_from(any).ok()?;
        msg.serialize_with_options(serde_json::value::Serializer, &settings.serialize).ok()
    });
    rendered.unwrap_or_else(|| serde_json::json!({"@type": any.type_url, "value": BASE64_STANDARD.encode(&any.value)}))
}

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// gRPC's percent-encoding of `grpc-message`: everything outside printable
/// ASCII, and `%` itself.
const GRPC_MESSAGE_SET: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');

/// A stream's final status as HTTP/2 trailers: `grpc-status` and, when
/// there is one, `grpc-message` (percent-encoded as gRPC does).
pub fn status_trailers(code: tonic::Code, message: &str) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert(GRPC_STATUS, HeaderValue::from(i32::from(code)));
    if !message.is_empty() {
        let encoded = percent_encoding::utf8_percent_encode(message, GRPC_MESSAGE_SET).to_string();
        if let Ok(value) = HeaderValue::try_from(encoded) {
            trailers.insert(GRPC_MESSAGE, value);
        }
    }
    trailers
}
