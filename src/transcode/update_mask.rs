//! AIP-134 update masks filled in from the body (DESIGN §4, config
//! `routes.autofill_update_mask`): a PATCH whose request message has a
//! `google.protobuf.FieldMask update_mask` field and whose binding's body is
//! one message field, sent without a mask, updates exactly the fields its
//! JSON body names. That is what grpc-gateway's generated handlers do with
//! `runtime.FieldMaskFromRequestBody`, and backends written behind it rely
//! on it: without a mask they would replace the whole resource.
//!
//! Whether a binding qualifies depends only on descriptors and is decided
//! at load ([`MaskAutofill::plan`]); a route that does not qualify carries
//! nothing. A request that qualifies and sends no mask has its body read a
//! second time, after it parsed, by a walk that follows keys only: values
//! are skipped, never built.
//!
//! The paths, in proto field names relative to the body message, sorted:
//! - a key names a field by its proto or JSON name; the path is the field's
//!   proto name, below its parent's path;
//! - an object under a singular message field is descended into, and lists
//!   its own keys; an empty object lists the field itself;
//! - scalars, enums, `null`, repeated and map fields end the path;
//! - well-known types whose JSON is not an object of their fields end it
//!   too (Any, Timestamp, Duration, FieldMask, ListValue, the wrappers),
//!   except `Struct` and `Value`, whose JSON objects are descended into by
//!   their keys as written, as grpc-gateway does (`labels.env`);
//! - a key that names no field (only possible when `json.unknown_fields` is
//!   `ignore`: the body was dropped from the message) lists nothing.

use std::fmt;

use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// AIP-134's name of the mask field.
const MASK_FIELD: &str = "update_mask";
const FIELD_MASK: &str = "google.protobuf.FieldMask";

/// How to fill one binding's `update_mask`, resolved at load.
#[derive(Debug, Clone)]
pub(crate) struct MaskAutofill {
    /// The request message's `update_mask`.
    mask: FieldDescriptor,
    /// `google.protobuf.FieldMask.paths`.
    paths: FieldDescriptor,
    /// The type of the message the body carries; paths are relative to it.
    body: MessageDescriptor,
}

impl MaskAutofill {
    /// `Some` when `input` has a singular `google.protobuf.FieldMask
    /// update_mask` field and `body_field` (the binding's `body`) is a
    /// singular message field whose JSON is an object of its fields (not a
    /// well-known type such as the mask itself, or `Struct`).
    pub(crate) fn plan(input: &MessageDescriptor, body_field: &FieldDescriptor) -> Option<Self> {
        let mask = input.get_field_by_name(MASK_FIELD)?;
        let Kind::Message(mask_type) = mask.kind() else {
            return None;
        };
        if mask_type.full_name() != FIELD_MASK || mask.is_list() {
            return None;
        }
        let paths = mask_type.get_field_by_name("paths")?;
        let Kind::Message(body) = body_field.kind() else {
            return None;
        };
        if body_field.is_list() || body_field.is_map() || shape(&body) != Shape::Fields {
            return None;
        }
        Some(Self { mask, paths, body })
    }

    /// Sets the mask of `msg` to the paths the body names, unless the
    /// client sent a mask with paths (in the query or a path variable,
    /// already in `msg`). A body naming no field leaves the mask unset.
    /// `json` is the body, already parsed into `msg` (so that an error is
    /// as good as impossible).
    pub(crate) fn fill(&self, msg: &mut DynamicMessage, json: Option<&[u8]>) -> Result<(), serde_json::Error> {
        if self.sent(msg) {
            return Ok(());
        }
        let Some(json) = json else {
            return Ok(());
        };
        let paths = paths_of(&self.body, json)?;
        if paths.is_empty() {
            return Ok(());
        }
        let mut mask = DynamicMessage::new(self.paths.parent_message().clone());
        mask.set_field(&self.paths, Value::List(paths.into_iter().map(Value::String).collect()));
        msg.set_field(&self.mask, Value::Message(mask));
        Ok(())
    }

    /// Whether `msg` holds a mask with at least one path. An empty mask
    /// (`?update_mask=`) means what no mask means (AIP-134, and
    /// grpc-gateway's test), so it is filled in as well.
    fn sent(&self, msg: &DynamicMessage) -> bool {
        if !msg.has_field(&self.mask) {
            return false;
        }
        let mask = msg.get_field(&self.mask);
        let paths = mask.as_message().map(|m| m.get_field(&self.paths));
        paths.as_deref().and_then(Value::as_list).is_some_and(|list| !list.is_empty())
    }
}

/// Every field path the JSON object `json` names in `body`, sorted, each
/// once.
pub(crate) fn paths_of(body: &MessageDescriptor, json: &[u8]) -> Result<Vec<String>, serde_json::Error> {
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(json);
    Node { fields: Some(body.clone()), path: String::new(), out: &mut out }.deserialize(&mut de)?;
    de.end()?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// How a message type's JSON reads, as far as masks care.
#[derive(Debug, PartialEq, Eq)]
enum Shape {
    /// An object of its fields: descended into by field.
    Fields,
    /// `Struct`, `Value`: any JSON; an object is descended into by its keys.
    Free,
    /// A well-known type written as a string, number, array or `@type`
    /// object: the path ends at it.
    Opaque,
}

fn shape(desc: &MessageDescriptor) -> Shape {
    match desc.full_name() {
        "google.protobuf.Struct" | "google.protobuf.Value" => Shape::Free,
        "google.protobuf.Any"
        | "google.protobuf.Timestamp"
        | "google.protobuf.Duration"
        | "google.protobuf.FieldMask"
        | "google.protobuf.ListValue" => Shape::Opaque,
        name if super::names::is_wrapper(name) => Shape::Opaque,
        _ => Shape::Fields,
    }
}

/// One JSON value in the walk: at `path` (empty for the body itself), of a
/// message whose `fields` name its keys (`None`: keys are taken as written,
/// inside a `Struct` or `Value`).
struct Node<'a> {
    fields: Option<MessageDescriptor>,
    path: String,
    out: &'a mut Vec<String>,
}

impl Node<'_> {
    fn below(&self, name: &str) -> String {
        match self.path.is_empty() {
            true => name.to_owned(),
            false => format!("{}.{name}", self.path),
        }
    }

    /// A value that is not an object ends the path here.
    fn end(self) {
        if !self.path.is_empty() {
            self.out.push(self.path);
        }
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut named = false;
        while let Some(key) = map.next_key::<String>()? {
            named = true;
            let Some(desc) = &self.fields else {
                let path = self.below(&key);
                map.next_value_seed(Node { fields: None, path, out: &mut *self.out })?;
                continue;
            };
            let Some(field) = desc.get_field_by_name(&key).or_else(|| desc.get_field_by_json_name(&key)) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let path = self.below(field.name());
            let fields = match field.kind() {
                Kind::Message(inner) if !field.is_list() && !field.is_map() => match shape(&inner) {
                    Shape::Fields => Some(Some(inner)),
                    Shape::Free => Some(None),
                    Shape::Opaque => None,
                },
                _ => None,
            };
            match fields {
                Some(fields) => map.next_value_seed(Node { fields, path, out: &mut *self.out })?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                    self.out.push(path);
                }
            }
        }
        // `{}` for a field: the field itself, to be cleared or reset.
        if !named {
            self.end();
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        self.end();
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.end();
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.end();
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        self.end();
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        self.end();
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        self.end();
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        self.end();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
