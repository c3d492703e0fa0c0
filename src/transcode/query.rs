//! Query parameters into fields, and the one text → field value parser that
//! query parameters and path captures share (both arrive as plain strings,
//! neither as JSON).
//!
//! What can be decided per route — which field paths the path template
//! binds, what the body covers — is fixed in a [`QueryPlan`] at load time; a
//! request only pays for resolving the names it actually sends.

use std::borrow::Cow;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::{alphabet, DecodeError, Engine};
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, Value};

use super::JsonSettings;
use crate::error::GatewayError;

/// Where a field value parsed from text ends up: a scalar or enum, a wrapper
/// type, or a well-known type whose JSON form is a string.
#[derive(Debug, Clone)]
pub enum Leaf {
    /// Every non-message kind (scalars and enums).
    Scalar(Kind),
    /// `google.protobuf.*Value`: the wrapped value's text, boxed.
    Wrapper { message: MessageDescriptor, value: FieldDescriptor },
    /// Timestamp, Duration, FieldMask: parsed exactly like their JSON strings.
    Text(MessageDescriptor),
}

impl Leaf {
    /// `None` for message types that have no single-string form.
    pub fn of(kind: &Kind) -> Option<Leaf> {
        let Kind::Message(message) = kind else {
            return Some(Leaf::Scalar(kind.clone()));
        };
        match message.full_name() {
            "google.protobuf.Timestamp" | "google.protobuf.Duration" | "google.protobuf.FieldMask" => {
                Some(Leaf::Text(message.clone()))
            }
            name if super::names::is_wrapper(name) => {
                message.get_field_by_name("value").map(|value| Leaf::Wrapper { message: message.clone(), value })
            }
            _ => None,
        }
    }

    /// Parses `text` into a value of this leaf's type; the error says why.
    pub fn parse(&self, text: &str) -> Result<Value, String> {
        match self {
            Leaf::Scalar(kind) => parse_scalar(kind, text),
            Leaf::Wrapper { message, value } => {
                let inner = parse_scalar(&value.kind(), text)?;
                let mut boxed = DynamicMessage::new(message.clone());
                boxed.try_set_field(value, inner).map_err(|e| e.to_string())?;
                Ok(Value::Message(boxed))
            }
            Leaf::Text(message) if text.contains('_') && message.full_name() == "google.protobuf.FieldMask" => {
                field_mask_of_proto_names(message, text)
            }
            Leaf::Text(message) => json_string(message, text).map(Value::Message),
        }
    }
}

/// A well-known type read from text as the JSON mapping reads its string.
fn json_string(message: &MessageDescriptor, text: &str) -> Result<DynamicMessage, String> {
    let de = serde::de::value::StrDeserializer::<serde::de::value::Error>::new(text);
    DynamicMessage::deserialize(message.clone(), de)
        .map_err(|e| format!("invalid {} {text:?}: {e}", short_name(message)))
}

/// A FieldMask in text whose paths are in proto names (`display_name`), as
/// grpc-gateway takes `?update_mask=` and clients of it send it: the JSON
/// form (lowerCamel) cannot hold a `_`, so such a path is taken as written;
/// the others are read as the JSON form reads them.
fn field_mask_of_proto_names(message: &MessageDescriptor, text: &str) -> Result<Value, String> {
    let invalid = || format!("invalid FieldMask {text:?}: a path must be field names joined by '.'");
    let field = message.get_field_by_name("paths").ok_or_else(invalid)?;
    let mut paths = Vec::new();
    for path in text.split(',') {
        let named = path.split('.').all(|name| {
            let mut chars = name.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
        if !named {
            return Err(invalid());
        }
        if path.contains('_') {
            paths.push(Value::String(path.to_owned()));
        } else if let Some(list) = json_string(message, path)?.get_field(&field).as_list() {
            paths.extend(list.iter().cloned());
        }
    }
    let mut mask = DynamicMessage::new(message.clone());
    mask.set_field(&field, Value::List(paths));
    Ok(Value::Message(mask))
}

fn short_name(message: &MessageDescriptor) -> &str {
    message.full_name().rsplit('.').next().unwrap_or(message.full_name())
}

/// A scalar or enum from text: the rules of query parameters and path
/// captures, which `direct::captures_in` follows too.
pub(crate) fn parse_scalar(kind: &Kind, text: &str) -> Result<Value, String> {
    fn int<T: std::str::FromStr>(text: &str, ty: &str) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        text.parse::<T>().map_err(|e| format!("invalid {ty} value {text:?}: {e}"))
    }
    Ok(match kind {
        Kind::Double => Value::F64(parse_f64(text, "double")?),
        Kind::Float => {
            let v = parse_f64(text, "float")?;
            if v.is_finite() && v.abs() > f64::from(f32::MAX) {
                return Err(format!("float value {text:?} is out of range"));
            }
            Value::F32(v as f32)
        }
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(int(text, "int32")?),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(int(text, "int64")?),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(int(text, "uint32")?),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(int(text, "uint64")?),
        Kind::Bool => Value::Bool(parse_bool(text)?),
        Kind::String => Value::String(text.to_owned()),
        Kind::Bytes => Value::Bytes(parse_base64(text)?.into()),
        Kind::Enum(e) => match e.get_value_by_name(text) {
            Some(v) => Value::EnumNumber(v.number()),
            None => match text.parse::<i32>() {
                Ok(n) => Value::EnumNumber(n),
                Err(_) => return Err(format!("unknown value {text:?} for enum {}", e.full_name())),
            },
        },
        Kind::Message(m) => return Err(format!("message {} cannot be set from text", m.full_name())),
    })
}

fn parse_f64(text: &str, ty: &str) -> Result<f64, String> {
    match text {
        "NaN" => Ok(f64::NAN),
        "Infinity" => Ok(f64::INFINITY),
        "-Infinity" => Ok(f64::NEG_INFINITY),
        _ => match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            // Rust also accepts "inf"/"nan" spellings and overflows to
            // infinity; the JSON mapping knows only the three words above.
            Ok(_) => Err(format!("{ty} value {text:?} is out of range or not a number")),
            Err(e) => Err(format!("invalid {ty} value {text:?}: {e}")),
        },
    }
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(format!("invalid bool value {text:?}: expected true or false")),
    }
}

/// Standard or URL-safe alphabet, padded or not (the proto3 JSON rule).
fn parse_base64(text: &str) -> Result<Vec<u8>, String> {
    const CONFIG: GeneralPurposeConfig = GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, CONFIG);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, CONFIG);
    match STANDARD.decode(text) {
        Ok(v) => Ok(v),
        Err(DecodeError::InvalidByte(_, b'-' | b'_')) => {
            URL_SAFE.decode(text).map_err(|e| format!("invalid base64: {e}"))
        }
        Err(e) => Err(format!("invalid base64: {e}")),
    }
}

fn parse_map_key(kind: &Kind, text: &str) -> Result<MapKey, String> {
    match parse_scalar(kind, text)? {
        Value::Bool(v) => Ok(MapKey::Bool(v)),
        Value::I32(v) => Ok(MapKey::I32(v)),
        Value::I64(v) => Ok(MapKey::I64(v)),
        Value::U32(v) => Ok(MapKey::U32(v)),
        Value::U64(v) => Ok(MapKey::U64(v)),
        Value::String(v) => Ok(MapKey::String(v)),
        _ => Err("unsupported map key type".to_owned()),
    }
}

/// Sets `value` at `path` (intermediate message fields, then the leaf),
/// creating the intermediate messages. The last field must be singular.
pub(crate) fn set_at(msg: &mut DynamicMessage, path: &[FieldDescriptor], value: Value) -> Result<(), String> {
    let (leaf, parents) = path.split_last().ok_or("empty field path")?;
    let target = descend(msg, parents)?;
    target.try_set_field(leaf, value).map_err(|e| e.to_string())
}

fn descend<'m>(msg: &'m mut DynamicMessage, parents: &[FieldDescriptor]) -> Result<&'m mut DynamicMessage, String> {
    let mut cur = msg;
    for field in parents {
        cur = cur
            .get_field_mut(field)
            .as_message_mut()
            .ok_or_else(|| format!("field {} is not a message", field.name()))?;
    }
    Ok(cur)
}

/// A field path as numbers: what collision checks compare.
#[derive(Debug, Clone)]
pub(crate) struct BoundPath {
    pub numbers: Vec<u32>,
    /// As written in the template, for error messages.
    pub display: String,
}

/// What the request body covers, as far as query parameters care.
#[derive(Debug, Clone)]
pub(crate) enum BodyCover {
    Nothing,
    /// `body: "*"`: http.proto leaves no field to query parameters.
    Everything,
    /// `body: "field"`: that top-level field and everything under it.
    Field {
        number: u32,
        name: String,
    },
}

/// Per-route query handling, fixed at load.
#[derive(Debug, Clone)]
pub(crate) struct QueryPlan {
    root: MessageDescriptor,
    body: BodyCover,
    bound: Vec<BoundPath>,
}

/// A query parameter name resolved against the input message.
struct Target {
    /// Intermediate message fields, then the addressed field.
    path: Vec<FieldDescriptor>,
    numbers: Vec<u32>,
    map_key: Option<MapKey>,
    leaf: Leaf,
}

enum Unresolved {
    /// Names no settable field: 400 or skipped, by config.
    Unknown(String),
    /// Names a field but is malformed (bad map key): always 400.
    Invalid(String),
}

/// A query parameter naming a field that something else sets.
enum Collision {
    Body(GatewayError),
    Path(GatewayError),
}

impl QueryPlan {
    pub(crate) fn new(root: MessageDescriptor, body: BodyCover, bound: Vec<BoundPath>) -> Self {
        Self { root, body, bound }
    }

    /// Applies every parameter of the raw query string to `msg`: unknown
    /// ones refused or dropped (`json.unknown_query_params`), ones naming a
    /// path-bound field refused or dropped (`json.query_path_conflict`).
    pub(crate) fn apply(
        &self,
        msg: &mut DynamicMessage,
        query: &str,
        settings: &JsonSettings,
    ) -> Result<(), GatewayError> {
        let reject_unknown = settings.reject_unknown_query_params;
        // Singular fields (and oneofs) already set by an earlier parameter,
        // with the parameter that set them.
        let mut taken: Vec<(String, String)> = Vec::new();
        // Oneofs decided by an earlier parameter: the oneof, the member it
        // chose, that parameter. `text=a&item.name=b` names two members of
        // one oneof as surely as `text=a&number=1` does.
        let mut chosen: Vec<(String, u32, String)> = Vec::new();
        for pair in query.split('&') {
            if pair.is_empty() {
                continue;
            }
            let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode_component(raw_name).map_err(|e| GatewayError::bad_field(raw_name, e))?;
            let value = decode_component(raw_value).map_err(|e| GatewayError::bad_field(name.as_ref(), e))?;
            let target = match self.resolve(&name) {
                Ok(target) => target,
                Err(Unresolved::Invalid(why)) => return Err(GatewayError::bad_field(name.as_ref(), why)),
                Err(Unresolved::Unknown(why)) if reject_unknown => {
                    return Err(GatewayError::bad_field(name.as_ref(), why));
                }
                Err(Unresolved::Unknown(_)) => continue,
            };
            match self.check_collision(&name, &target.numbers) {
                Ok(()) => {}
                // The path variable, applied after the query, sets it.
                Err(Collision::Path(_)) if settings.path_wins => continue,
                Err(Collision::Path(err) | Collision::Body(err)) => return Err(err),
            }
            for (oneof, member) in oneof_members(&target) {
                match chosen.iter().find(|(o, _, _)| *o == oneof) {
                    Some((_, earlier_member, earlier)) if *earlier_member != member => {
                        let why = format!("sets the same field or oneof as query parameter '{earlier}'");
                        return Err(GatewayError::bad_field(name.as_ref(), why));
                    }
                    Some(_) => {}
                    None => chosen.push((oneof, member, name.clone().into_owned())),
                }
            }
            if let Some(key) = singular_key(&target) {
                if let Some((_, earlier)) = taken.iter().find(|(k, _)| *k == key) {
                    let why = if earlier.as_str() == name.as_ref() {
                        "given more than once for a non-repeated field".to_owned()
                    } else {
                        format!("sets the same field or oneof as query parameter '{earlier}'")
                    };
                    return Err(GatewayError::bad_field(name.as_ref(), why));
                }
                taken.push((key, name.clone().into_owned()));
            }
            assign(msg, target, &value).map_err(|e| GatewayError::bad_field(name.as_ref(), e))?;
        }
        Ok(())
    }

    fn resolve(&self, name: &str) -> Result<Target, Unresolved> {
        let unknown = |why: String| Unresolved::Unknown(format!("unknown query parameter: {why}"));
        let mut desc = self.root.clone();
        let mut path = Vec::new();
        let mut numbers = Vec::new();
        let mut rest = name;
        loop {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            let ident = &rest[..end];
            let mut tail = &rest[end..];
            let key = match tail.strip_prefix('[') {
                Some(inner) => {
                    let close = inner.find(']').ok_or_else(|| unknown("unclosed '[' in map key".to_owned()))?;
                    tail = &inner[close + 1..];
                    Some(&inner[..close])
                }
                None => None,
            };
            let last = tail.is_empty();
            if !last && !tail.starts_with('.') {
                return Err(unknown(format!("malformed name after '{ident}'")));
            }
            let field = desc
                .get_field_by_name(ident)
                .or_else(|| desc.get_field_by_json_name(ident))
                .ok_or_else(|| unknown(format!("no field '{ident}' in {}", desc.full_name())))?;
            numbers.push(field.number());
            let kind = field.kind();
            if let Some(key) = key {
                let entry = match (&kind, field.is_map()) {
                    (Kind::Message(entry), true) => entry.clone(),
                    _ => return Err(unknown(format!("field '{ident}' is not a map"))),
                };
                if !last {
                    return Err(unknown(format!("map '{ident}' values can only be set whole")));
                }
                let map_key = parse_map_key(&entry.map_entry_key_field().kind(), key)
                    .map_err(|e| Unresolved::Invalid(format!("map key: {e}")))?;
                let leaf = Leaf::of(&entry.map_entry_value_field().kind())
                    .ok_or_else(|| unknown(format!("map '{ident}' has message values")))?;
                path.push(field);
                return Ok(Target { path, numbers, map_key: Some(map_key), leaf });
            }
            if last {
                if field.is_map() {
                    return Err(unknown(format!("map field '{ident}' needs a key: {ident}[key]=value")));
                }
                let leaf = Leaf::of(&kind).ok_or_else(|| {
                    unknown(format!("field '{ident}' is a message; set its fields as {ident}.field=value"))
                })?;
                path.push(field);
                return Ok(Target { path, numbers, map_key: None, leaf });
            }
            match kind {
                Kind::Message(inner) if !field.is_list() && !field.is_map() => desc = inner,
                _ => return Err(unknown(format!("field '{ident}' has no sub-fields to address"))),
            }
            path.push(field);
            rest = &tail[1..];
        }
    }

    fn check_collision(&self, name: &str, numbers: &[u32]) -> Result<(), Collision> {
        match &self.body {
            BodyCover::Nothing => {}
            BodyCover::Everything => {
                return Err(Collision::Body(GatewayError::bad_field(
                    name,
                    "query parameters cannot set fields: the whole request comes from the body",
                )));
            }
            BodyCover::Field { number, name: body } => {
                if numbers.first() == Some(number) {
                    let why = format!("field '{body}' comes from the request body");
                    return Err(Collision::Body(GatewayError::bad_field(name, why)));
                }
            }
        }
        for bound in &self.bound {
            let n = bound.numbers.len().min(numbers.len());
            if bound.numbers[..n] == numbers[..n] {
                let why = format!(
                    "conflicts with path variable '{}' (json.query_path_conflict: path_wins keeps the path's value)",
                    bound.display
                );
                return Err(Collision::Path(GatewayError::bad_field(name, why)));
            }
        }
        Ok(())
    }
}

/// One query parameter a route accepts, as documentation sees it (OpenAPI):
/// the field path it sets, its last field a leaf that text can set.
#[derive(Debug, Clone)]
pub struct QueryParameter {
    /// Intermediate message fields, then the field set.
    pub path: Vec<FieldDescriptor>,
    /// A map field with scalar values, set as `name[key]=value`.
    pub map: bool,
}

impl QueryPlan {
    /// Every parameter [`QueryPlan::apply`] accepts, in field order: what
    /// the body and the path variables leave, through singular message
    /// fields, each message type at most once on a path (a recursive
    /// message would otherwise offer endless names).
    pub(crate) fn parameters(&self) -> Vec<QueryParameter> {
        let mut out = Vec::new();
        if !matches!(self.body, BodyCover::Everything) {
            let mut path = Vec::new();
            self.collect(&self.root, &mut path, &mut out);
        }
        out
    }

    fn collect(&self, desc: &MessageDescriptor, path: &mut Vec<FieldDescriptor>, out: &mut Vec<QueryParameter>) {
        for field in desc.fields() {
            if let (true, BodyCover::Field { number, .. }) = (path.is_empty(), &self.body) {
                if field.number() == *number {
                    continue;
                }
            }
            path.push(field.clone());
            let numbers: Vec<u32> = path.iter().map(FieldDescriptor::number).collect();
            // `check_collision`'s rule: a variable at, above or below the field.
            let overlaps = |b: &BoundPath| {
                let n = b.numbers.len().min(numbers.len());
                b.numbers[..n] == numbers[..n]
            };
            let kind = field.kind();
            let entry_leaf = match (&kind, field.is_map()) {
                (Kind::Message(entry), true) => Some(Leaf::of(&entry.map_entry_value_field().kind()).is_some()),
                _ => None,
            };
            match entry_leaf {
                Some(scalar_values) => {
                    if scalar_values && !self.bound.iter().any(overlaps) {
                        out.push(QueryParameter { path: path.clone(), map: true });
                    }
                }
                None if Leaf::of(&kind).is_some() => {
                    if !self.bound.iter().any(overlaps) {
                        out.push(QueryParameter { path: path.clone(), map: false });
                    }
                }
                None => {
                    // Below a variable's message nothing is free; beside a
                    // deeper variable its siblings are.
                    let under_variable = self.bound.iter().any(|b| overlaps(b) && b.numbers.len() <= numbers.len());
                    if let Kind::Message(inner) = &kind {
                        // Well-known types (Any, Value, Struct…) are JSON
                        // forms, not objects of their fields, to a reader.
                        let seen = *inner == self.root
                            || inner.full_name().starts_with("google.protobuf.")
                            || path[..path.len() - 1]
                                .iter()
                                .any(|f| matches!(f.kind(), Kind::Message(m) if m == *inner));
                        if !field.is_list() && !under_variable && !seen {
                            self.collect(inner, path, out);
                        }
                    }
                }
            }
            path.pop();
        }
    }
}

/// Identifies what a non-repeated parameter sets, so that a second one for
/// the same field — or another member of the same oneof — is refused.
fn singular_key(target: &Target) -> Option<String> {
    use std::fmt::Write as _;
    let (field, parents) = target.path.split_last()?;
    if field.is_list() {
        return None;
    }
    let mut key = String::with_capacity(16);
    for parent in parents {
        let _ = write!(key, "{}.", parent.number());
    }
    let _ = match (&target.map_key, field.containing_oneof()) {
        (Some(map_key), _) => write!(key, "{}[{map_key:?}]", field.number()),
        (None, Some(oneof)) => write!(key, "oneof:{}", oneof.name()),
        (None, None) => write!(key, "{}", field.number()),
    };
    Some(key)
}

/// Each oneof that the target's path goes through (intermediate messages
/// included), identified with the path to its message, and the member the
/// path takes.
fn oneof_members(target: &Target) -> Vec<(String, u32)> {
    use std::fmt::Write as _;
    let mut members = Vec::new();
    let mut prefix = String::new();
    for field in &target.path {
        if let Some(oneof) = field.containing_oneof() {
            members.push((format!("{prefix}oneof:{}", oneof.name()), field.number()));
        }
        let _ = write!(prefix, "{}.", field.number());
    }
    members
}

fn assign(msg: &mut DynamicMessage, target: Target, text: &str) -> Result<(), String> {
    let value = target.leaf.parse(text)?;
    let (field, parents) = target.path.split_last().ok_or("empty field path")?;
    let owner = descend(msg, parents)?;
    if let Some(key) = target.map_key {
        owner.get_field_mut(field).as_map_mut().ok_or("not a map field")?.insert(key, value);
    } else if field.is_list() {
        owner.get_field_mut(field).as_list_mut().ok_or("not a repeated field")?.push(value);
    } else {
        owner.try_set_field(field, value).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `+` as space, then percent-decoding; the result must be UTF-8.
pub fn decode_component(raw: &str) -> Result<Cow<'_, str>, &'static str> {
    if !raw.bytes().any(|b| b == b'%' || b == b'+') {
        return Ok(Cow::Borrowed(raw));
    }
    let spaced = raw.replace('+', " ");
    let bytes: Vec<u8> = percent_encoding::percent_decode(spaced.as_bytes()).collect();
    String::from_utf8(bytes).map(Cow::Owned).map_err(|_| "query parameter is not valid UTF-8 after percent-decoding")
}
