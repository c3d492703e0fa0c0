//! HTTP request → input `DynamicMessage`: the JSON body (or raw `HttpBody`),
//! then query parameters, then path captures, in that order so that the
//! path has the last word (http.proto).
//!
//! [`RequestPlan::new`] resolves every field path of a binding once at load
//! and refuses bindings that could never work; [`RequestPlan::build`] does
//! only what depends on the request. Client mistakes become 400s that name
//! the field at fault; JSON error paths are found by a second, tracked parse
//! that only failing requests pay for.

use bytes::Bytes;
use http::StatusCode;
use prost_reflect::{DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, Value};
use serde::Deserialize as _;
use serde_path_to_error::Segment;
use tonic::Code;

use super::codec::Outgoing;
use super::direct::captures_in::CapturesIn;
use super::direct::json_in::JsonIn;
use super::names::{kind_name, push_key};
use super::numbers;
use super::query::{self, BodyCover, BoundPath, Leaf, QueryPlan};
use super::update_mask::MaskAutofill;
use super::JsonSettings;
use crate::error::{Fault, GatewayError};

const HTTP_BODY: &str = "google.api.HttpBody";

/// A binding that cannot be served, found at load time.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

/// What one HTTP request brings.
pub struct RequestInput<'a> {
    pub body: Bytes,
    pub content_type: Option<&'a str>,
    /// Path variable values, in the order of the template's variables.
    pub captures: &'a [String],
    /// Raw query string (without `?`), if any.
    pub query: Option<&'a str>,
}

/// What a request body carries, as documentation sees it.
#[derive(Debug, Clone, Copy)]
pub enum BodyShape<'a> {
    None,
    /// `body: "*"`: the whole message.
    Whole,
    /// `body: "field"`: that field's JSON.
    Field(&'a FieldDescriptor),
    /// The raw bytes of a `google.api.HttpBody` (whole or one field).
    Raw,
}

/// How the HTTP body maps onto the input message.
#[derive(Debug, Clone)]
enum BodyPlan {
    None,
    /// `body: "*"`.
    Whole,
    /// `body: "*"` on a `google.api.HttpBody` input: raw bytes.
    WholeRaw {
        data: FieldDescriptor,
        content_type: FieldDescriptor,
    },
    /// `body: "field"` naming a singular message field.
    Message(FieldDescriptor),
    /// `body: "field"` naming a `google.api.HttpBody` field: raw bytes.
    MessageRaw {
        field: FieldDescriptor,
        data: FieldDescriptor,
        content_type: FieldDescriptor,
    },
    /// `body: "field"` naming a scalar, repeated or map field.
    Other(FieldDescriptor),
}

/// One path variable, resolved.
#[derive(Debug, Clone)]
struct Variable {
    fields: Vec<FieldDescriptor>,
    leaf: Leaf,
    /// Dotted proto field path, as in the template.
    display: String,
}

/// Everything about turning a request into the input message that depends
/// only on the binding.
#[derive(Debug, Clone)]
pub struct RequestPlan {
    input: MessageDescriptor,
    body: BodyPlan,
    variables: Vec<Variable>,
    query: QueryPlan,
    /// Fills an unsent `update_mask` from the body (AIP-134), if asked and
    /// the binding qualifies.
    mask_autofill: Option<MaskAutofill>,
    /// JSON → wire bytes without a `DynamicMessage`, for `body: "*"`.
    direct: Option<JsonIn>,
    /// Path captures → wire bytes without a `DynamicMessage`, when the
    /// binding's variables are ones it covers.
    captures: Option<CapturesIn>,
}

impl RequestPlan {
    /// `body` is HttpRule.body: "" (none), "*" or a top-level field name;
    /// `variables` are the template's variable field paths, in order.
    pub fn new(input: &MessageDescriptor, body: &str, variables: &[Vec<String>]) -> Result<Self, PlanError> {
        Self::planned(input, body, variables, None)
    }

    /// The plan of one WebSocket text frame on a binding without a body
    /// (a `get:` server stream): the frame is the whole message, and the
    /// upgrade URL's query parameters and path variables bind on top of it,
    /// as they would on the GET itself.
    pub fn frames(input: &MessageDescriptor, variables: &[Vec<String>]) -> Result<Self, PlanError> {
        Self::planned(input, "*", variables, Some(BodyCover::Nothing))
    }

    /// `query_cover` overrides what the body leaves to query parameters.
    fn planned(
        input: &MessageDescriptor,
        body: &str,
        variables: &[Vec<String>],
        query_cover: Option<BodyCover>,
    ) -> Result<Self, PlanError> {
        let (body_plan, cover) = plan_body(input, body)?;
        let cover = query_cover.unwrap_or(cover);
        let mut resolved = Vec::with_capacity(variables.len());
        let mut bound = Vec::with_capacity(variables.len());
        for path in variables {
            let variable = resolve_variable(input, path)?;
            bound.push(BoundPath {
                numbers: variable.fields.iter().map(FieldDescriptor::number).collect(),
                display: variable.display.clone(),
            });
            resolved.push(variable);
        }
        let direct = matches!(body_plan, BodyPlan::Whole).then(|| JsonIn::new(input));
        // Captures alone set the message only under a body that can set
        // nothing: none, or an empty one for `*` or a non-message field. An
        // HttpBody always sets its content type, and a message body field is
        // set to a message even by an empty body.
        let captures = match body_plan {
            BodyPlan::None | BodyPlan::Whole | BodyPlan::Other(_) => {
                CapturesIn::new(resolved.iter().map(|v| v.fields.as_slice()))
            }
            BodyPlan::WholeRaw { .. } | BodyPlan::Message(_) | BodyPlan::MessageRaw { .. } => None,
        };
        Ok(Self {
            input: input.clone(),
            body: body_plan,
            variables: resolved,
            query: QueryPlan::new(input.clone(), cover, bound),
            mask_autofill: None,
            direct,
            captures,
        })
    }

    /// Asks the plan to fill `update_mask` from the JSON keys of the body
    /// when a request sends no mask (AIP-134, as grpc-gateway does for
    /// PATCH: the caller picks the HTTP methods). Only a binding whose body
    /// is one message field of a request with a `google.protobuf.FieldMask
    /// update_mask` qualifies; returns whether this one does.
    pub fn autofill_update_mask(&mut self) -> bool {
        if let BodyPlan::Message(field) = &self.body {
            self.mask_autofill = MaskAutofill::plan(&self.input, field);
        }
        self.mask_autofill.is_some()
    }

    pub fn has_body(&self) -> bool {
        !matches!(self.body, BodyPlan::None)
    }

    /// Whether the body is the raw bytes of a `google.api.HttpBody`.
    pub fn is_raw(&self) -> bool {
        matches!(self.body, BodyPlan::WholeRaw { .. } | BodyPlan::MessageRaw { .. })
    }

    pub fn input(&self) -> &MessageDescriptor {
        &self.input
    }

    /// What the body carries, for documentation (OpenAPI).
    pub fn body_shape(&self) -> BodyShape<'_> {
        match &self.body {
            BodyPlan::None => BodyShape::None,
            BodyPlan::Whole => BodyShape::Whole,
            BodyPlan::WholeRaw { .. } => BodyShape::Raw,
            BodyPlan::Message(field) | BodyPlan::Other(field) => BodyShape::Field(field),
            BodyPlan::MessageRaw { .. } => BodyShape::Raw,
        }
    }

    /// The fields each path variable sets (intermediate messages, then the
    /// field), in the template's order.
    pub fn variable_fields(&self) -> impl Iterator<Item = &[FieldDescriptor]> {
        self.variables.iter().map(|v| v.fields.as_slice())
    }

    /// Every query parameter the route accepts.
    pub fn query_parameters(&self) -> Vec<query::QueryParameter> {
        self.query.parameters()
    }

    /// The request message for a unary call: when the JSON body alone sets
    /// it, or the path variables alone (no query, no mask to fill in), its
    /// wire bytes straight from them; otherwise, or when the direct path
    /// bails, [`build`](Self::build)'s message.
    pub fn build_outgoing(&self, settings: &JsonSettings, input: RequestInput<'_>) -> Result<Outgoing, GatewayError> {
        let no_query_or_mask = input.query.is_none_or(str::is_empty) && self.mask_autofill.is_none();
        if let Some(direct) = self.direct.as_ref().filter(|_| no_query_or_mask && input.captures.is_empty()) {
            check_content_type(&input)?;
            if let Some(json) = json_of(&input.body) {
                let mut out = Vec::with_capacity(input.body.len());
                if direct.encode(json, settings, &mut out) {
                    return Ok(Outgoing::Encoded(Bytes::from(out)));
                }
            }
        }
        // A binding without a body ignores what comes; an empty one sets
        // nothing (nor is its content type checked).
        let no_body = input.body.is_empty() || matches!(self.body, BodyPlan::None);
        if let Some(captures) = self.captures.as_ref().filter(|_| no_query_or_mask && no_body) {
            // A key and a length or number per field rarely pass 16 bytes.
            let size = input.captures.iter().map(|c| c.len() + 16).sum();
            let mut out = Vec::with_capacity(size);
            if captures.encode(input.captures, &mut out) {
                return Ok(Outgoing::Encoded(Bytes::from(out)));
            }
        }
        self.build(settings, input).map(Outgoing::Message)
    }

    pub fn build(&self, settings: &JsonSettings, input: RequestInput<'_>) -> Result<DynamicMessage, GatewayError> {
        if input.captures.len() != self.variables.len() {
            return Err(GatewayError::internal(format!(
                "route has {} path variables but {} captures were given",
                self.variables.len(),
                input.captures.len()
            )));
        }
        let mut msg = self.body(settings, &input)?;
        if let Some(q) = input.query.filter(|q| !q.is_empty()) {
            self.query.apply(&mut msg, q, settings)?;
        }
        for (variable, text) in self.variables.iter().zip(input.captures) {
            let value = variable.leaf.parse(text).map_err(|e| GatewayError::bad_field(&variable.display, e))?;
            query::set_at(&mut msg, &variable.fields, value)
                .map_err(|e| GatewayError::bad_field(&variable.display, e))?;
        }
        // Last, so that a mask from the query or the path counts as sent.
        if let Some(autofill) = &self.mask_autofill {
            autofill.fill(&mut msg, json_of(&input.body)).map_err(|err| syntax_error(&err))?;
        }
        Ok(msg)
    }

    fn body(&self, settings: &JsonSettings, input: &RequestInput<'_>) -> Result<DynamicMessage, GatewayError> {
        let opts = &settings.deserialize;
        match &self.body {
            BodyPlan::None => Ok(DynamicMessage::new(self.input.clone())),
            BodyPlan::WholeRaw { data, content_type } => {
                let mut msg = DynamicMessage::new(self.input.clone());
                set_raw(&mut msg, data, content_type, input);
                Ok(msg)
            }
            BodyPlan::MessageRaw { field, data, content_type } => {
                let mut msg = DynamicMessage::new(self.input.clone());
                let inner = msg
                    .get_field_mut(field)
                    .as_message_mut()
                    .ok_or_else(|| GatewayError::internal(format!("body field {} is not a message", field.name())))?;
                set_raw(inner, data, content_type, input);
                Ok(msg)
            }
            BodyPlan::Whole => {
                check_content_type(input)?;
                match json_of(&input.body) {
                    None => Ok(DynamicMessage::new(self.input.clone())),
                    Some(json) => parse_message(&self.input, json, opts, ""),
                }
            }
            BodyPlan::Message(field) => {
                check_content_type(input)?;
                let mut msg = DynamicMessage::new(self.input.clone());
                let Kind::Message(desc) = field.kind() else {
                    return Err(GatewayError::internal(format!("body field {} is not a message", field.name())));
                };
                let value = match json_of(&input.body) {
                    None => DynamicMessage::new(desc),
                    Some(json) => parse_message(&desc, json, opts, field.json_name())?,
                };
                msg.set_field(field, Value::Message(value));
                Ok(msg)
            }
            BodyPlan::Other(field) => {
                check_content_type(input)?;
                let mut msg = DynamicMessage::new(self.input.clone());
                if let Some(json) = json_of(&input.body) {
                    let value = parse_lone_field(&self.input, field, json, opts)?;
                    msg.set_field(field, value);
                }
                Ok(msg)
            }
        }
    }
}

fn plan_body(input: &MessageDescriptor, body: &str) -> Result<(BodyPlan, BodyCover), PlanError> {
    match body {
        "" => Ok((BodyPlan::None, BodyCover::Nothing)),
        "*" => {
            let plan = match http_body_fields(input) {
                Some((data, content_type)) => BodyPlan::WholeRaw { data, content_type },
                None => BodyPlan::Whole,
            };
            Ok((plan, BodyCover::Everything))
        }
        name => {
            let field = input.get_field_by_name(name).ok_or_else(|| PlanError(body_not_found(input, name)))?;
            let cover = BodyCover::Field { number: field.number(), name: name.to_owned() };
            let plan = match field.kind() {
                Kind::Message(desc) if !field.is_list() && !field.is_map() => match http_body_fields(&desc) {
                    Some((data, content_type)) => BodyPlan::MessageRaw { field, data, content_type },
                    None => BodyPlan::Message(field),
                },
                _ => BodyPlan::Other(field),
            };
            Ok((plan, cover))
        }
    }
}

/// Why `body: "{name}"` names no field, with the rule it breaks and what
/// to write instead.
fn body_not_found(input: &MessageDescriptor, name: &str) -> String {
    let rule = "body must name a top-level field of the request message, or be \"*\" (http.proto)";
    match name.split_once('.') {
        Some((first, _)) if input.get_field_by_name(first).is_some() => format!(
            "body: \"{name}\": {rule}; grpc-gateway accepts nested paths, protogate does not: \
             use body: \"{first}\" and send the rest of `{first}` with it"
        ),
        _ => format!("body: \"{name}\": {rule}; {} has {}", input.full_name(), field_names(input)),
    }
}

/// `fields a, b and c` (or `no fields`): what a user may name instead.
pub(super) fn field_names(desc: &MessageDescriptor) -> String {
    let names: Vec<String> = desc.fields().map(|f| format!("`{}`", f.name())).collect();
    match names.as_slice() {
        [] => "no fields".to_owned(),
        [one] => format!("one field, {one}"),
        [rest @ .., last] => format!("fields {} and {last}", rest.join(", ")),
    }
}

fn http_body_fields(desc: &MessageDescriptor) -> Option<(FieldDescriptor, FieldDescriptor)> {
    if desc.full_name() != HTTP_BODY {
        return None;
    }
    Some((desc.get_field_by_name("data")?, desc.get_field_by_name("content_type")?))
}

fn resolve_variable(input: &MessageDescriptor, path: &[String]) -> Result<Variable, PlanError> {
    let display = path.join(".");
    let fail = |why: String| PlanError(format!("path variable `{display}`: {why}"));
    let (leaf_name, parents) = path.split_last().ok_or_else(|| fail("empty field path".to_owned()))?;
    let mut desc = input.clone();
    let mut fields = Vec::with_capacity(path.len());
    for name in parents {
        let field = desc.get_field_by_name(name).ok_or_else(|| fail(no_such_field(&desc, name)))?;
        match field.kind() {
            Kind::Message(inner) if !field.is_list() && !field.is_map() => desc = inner,
            _ => {
                return Err(fail(format!(
                    "`{name}` is {}, but every name of a field path but the last must be a singular message \
                     field (http.proto: path variables must not refer to any repeated or mapped field)",
                    shape(&field)
                )))
            }
        }
        fields.push(field);
    }
    let field = desc.get_field_by_name(leaf_name).ok_or_else(|| fail(no_such_field(&desc, leaf_name)))?;
    if field.is_list() || field.is_map() {
        return Err(fail(format!(
            "`{leaf_name}` is {}; http.proto: path variables must not refer to any repeated or mapped field. \
             grpc-gateway accepts repeated path variables (comma-separated), protogate does not: bind the \
             field with a query parameter (`?{display}=a&{display}=b`) or the body instead",
            shape(&field)
        )));
    }
    let leaf = Leaf::of(&field.kind()).ok_or_else(|| {
        fail(format!(
            "`{leaf_name}` is a message ({}) without a string form; a path segment can only carry a scalar, \
             an enum or a well-known type with a JSON string form (Timestamp, Duration, FieldMask, wrappers): \
             bind one of its fields instead, such as `{display}.id` (http.proto)",
            field.kind().as_message().map_or_else(String::new, |m| m.full_name().to_owned())
        ))
    })?;
    fields.push(field);
    Ok(Variable { fields, leaf, display })
}

/// `a repeated field`, `a map field`, `a string field`: a field's shape for messages.
fn shape(field: &FieldDescriptor) -> String {
    if field.is_map() {
        return "a map field".to_owned();
    }
    let kind = match field.kind() {
        Kind::Message(desc) => format!("message ({})", desc.full_name()),
        Kind::Enum(desc) => format!("enum ({})", desc.full_name()),
        other => format!("{other:?}").to_lowercase(),
    };
    match field.is_list() {
        true => format!("a repeated {kind} field"),
        false => format!("a {kind} field"),
    }
}

/// `acme.v1.Book has no field `nmae`; it has fields ...`.
fn no_such_field(desc: &MessageDescriptor, name: &str) -> String {
    format!(
        "{} has no field `{name}` (it has {}); a field path names proto fields",
        desc.full_name(),
        field_names(desc)
    )
}

fn set_raw(msg: &mut DynamicMessage, data: &FieldDescriptor, content_type: &FieldDescriptor, input: &RequestInput<'_>) {
    msg.set_field(data, Value::Bytes(input.body.clone()));
    msg.set_field(content_type, Value::String(input.content_type.unwrap_or("").to_owned()));
}

/// JSON bodies only: `application/json` or any `*/*+json`, parameters
/// allowed; no content type at all is taken as JSON, and so are
/// `text/plain` and `application/x-www-form-urlencoded`, which plain HTTP
/// clients send by default (`curl -d`), as Envoy and grpc-gateway do. An
/// empty body is accepted whatever its content type (nothing is misread).
fn check_content_type(input: &RequestInput<'_>) -> Result<(), GatewayError> {
    let Some(ct) = input.content_type else {
        return Ok(());
    };
    if input.body.is_empty() || is_json(ct) {
        return Ok(());
    }
    Err(GatewayError::new(
        Code::InvalidArgument,
        Fault::Client,
        format!("unsupported content type '{ct}': the body must be application/json"),
    )
    .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE))
}

fn is_json(content_type: &str) -> bool {
    // What nearly every client sends, without splitting and trimming.
    if content_type.eq_ignore_ascii_case("application/json") {
        return true;
    }
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if essence.is_empty() {
        return true;
    }
    let Some((ty, sub)) = essence.split_once('/') else {
        return false;
    };
    if essence.eq_ignore_ascii_case("text/plain") || essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return true;
    }
    let sub = sub.as_bytes();
    (ty.eq_ignore_ascii_case("application") && sub.eq_ignore_ascii_case(b"json"))
        || (!ty.is_empty() && sub.len() > 5 && sub[sub.len() - 5..].eq_ignore_ascii_case(b"+json"))
}

/// The body as JSON text, `None` when there is nothing but whitespace
/// (treated as `{}`).
fn json_of(body: &Bytes) -> Option<&[u8]> {
    if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(body.as_ref())
    }
}

/// Deserializes one JSON value (nothing after it) into `desc`. `prefix`
/// names the field the body is for, so violations read as request paths.
/// The oracle of `direct::json_in`, whose tests compare against it.
pub(crate) fn parse_message(
    desc: &MessageDescriptor,
    json: &[u8],
    opts: &DeserializeOptions,
    prefix: &str,
) -> Result<DynamicMessage, GatewayError> {
    let msg = deserialize(desc, json, opts).map_err(|err| json_error(desc, json, opts, prefix, &err))?;
    // Integer fields may have been given rounded f64s (numbers.rs); a body
    // without a literal that could round, the usual case, is done.
    if !numbers::has_rounding_number(json) {
        return Ok(msg);
    }
    match numbers::exact_integers(desc, json, prefix)? {
        None => Ok(msg),
        Some(exact) => deserialize(desc, &exact, opts).map_err(|err| json_error(desc, &exact, opts, prefix, &err)),
    }
}

fn deserialize(
    desc: &MessageDescriptor,
    json: &[u8],
    opts: &DeserializeOptions,
) -> Result<DynamicMessage, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let msg = DynamicMessage::deserialize_with_options(desc.clone(), &mut de, opts)?;
    de.end()?;
    Ok(msg)
}

/// `body: "field"` for a non-message field: the JSON is that field's value.
/// It is parsed as `{"<field>": <body>}` against the input type, after the
/// body alone has been checked to be exactly one JSON value (so nothing in
/// it can escape into other fields).
fn parse_lone_field(
    input: &MessageDescriptor,
    field: &FieldDescriptor,
    json: &[u8],
    opts: &DeserializeOptions,
) -> Result<Value, GatewayError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let checked = serde::de::IgnoredAny::deserialize(&mut de).and_then(|_| de.end());
    if let Err(err) = checked {
        return Err(syntax_error(&err));
    }
    let key = serde_json::to_string(field.json_name()).map_err(|e| GatewayError::internal(e.to_string()))?;
    let mut wrapped = Vec::with_capacity(json.len() + key.len() + 3);
    wrapped.push(b'{');
    wrapped.extend_from_slice(key.as_bytes());
    wrapped.push(b':');
    wrapped.extend_from_slice(json);
    wrapped.push(b'}');
    let msg = parse_message(input, &wrapped, opts, "")?;
    Ok(msg.get_field(field).into_owned())
}

pub fn syntax_error(err: &serde_json::Error) -> GatewayError {
    GatewayError::bad_field(
        "",
        format!("invalid JSON at line {} column {}: {}", err.line(), err.column(), bare_message(err)),
    )
}

/// The failure path: malformed JSON is reported by position; anything else
/// (wrong type, out of range, unknown field or enum value) by the field
/// path, found by parsing again with path tracking.
fn json_error(
    desc: &MessageDescriptor,
    json: &[u8],
    opts: &DeserializeOptions,
    prefix: &str,
    err: &serde_json::Error,
) -> GatewayError {
    let message = bare_message(err);
    // serde_json files an overflowing number (1e400) under syntax, but for a
    // client it is a value out of range in a particular field.
    let out_of_range = message.starts_with("number out of range");
    if !out_of_range && matches!(err.classify(), serde_json::error::Category::Syntax | serde_json::error::Category::Eof)
    {
        return syntax_error(err);
    }
    let mut track = serde_path_to_error::Track::new();
    let mut de = serde_json::Deserializer::from_slice(json);
    let tracked = serde_path_to_error::Deserializer::new(&mut de, &mut track);
    let (path, message) = match DynamicMessage::deserialize_with_options(desc.clone(), tracked, opts) {
        Err(again) => (track.path(), bare_message(&again)),
        // Cannot happen (same input, same options); keep the first answer.
        Ok(_) => (track.path(), message),
    };
    let mut field = String::from(prefix);
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => field.push_str(&format!("[{index}]")),
            Segment::Map { key } => push_key(&mut field, key),
            Segment::Enum { variant } => push_key(&mut field, variant),
            Segment::Unknown => push_key(&mut field, "?"),
        }
    }
    // An unknown key fails after the key is read but before its value is,
    // so the tracked path stops at the enclosing object; name the key.
    if let Some(key) = message.strip_prefix("unrecognized field name '").and_then(|r| r.strip_suffix('\'')) {
        push_key(&mut field, key);
        return GatewayError::bad_field(field, "unknown field");
    }
    // serde's "invalid type: …, expected …" says it all; number parse
    // errors ("invalid digit found in string") need the expected type.
    let description = match type_at(desc, &path) {
        Some(ty) if !message.starts_with("invalid type") => {
            format!("invalid value for {ty}: {message}")
        }
        _ => message,
    };
    GatewayError::bad_field(field, description)
}

/// Where a JSON path points inside a message type.
enum Position {
    Message(MessageDescriptor),
    Value(Kind),
    List(Kind),
    Map(Kind),
}

/// The protobuf type a JSON error path points at, for error descriptions.
fn type_at(desc: &MessageDescriptor, path: &serde_path_to_error::Path) -> Option<String> {
    let mut pos = Position::Message(desc.clone());
    for segment in path.iter() {
        if let Position::Value(Kind::Message(m)) = pos {
            pos = Position::Message(m);
        }
        pos = match (pos, segment) {
            (Position::Message(m), Segment::Map { key }) => {
                let field = m.get_field_by_json_name(key).or_else(|| m.get_field_by_name(key))?;
                match field.kind() {
                    Kind::Message(entry) if field.is_map() => Position::Map(entry.map_entry_value_field().kind()),
                    kind if field.is_list() => Position::List(kind),
                    kind => Position::Value(kind),
                }
            }
            (Position::List(kind), Segment::Seq { .. }) | (Position::Map(kind), Segment::Map { .. }) => {
                Position::Value(kind)
            }
            _ => return None,
        };
    }
    match pos {
        Position::Value(kind) => Some(kind_name(&kind)),
        Position::List(kind) => Some(format!("repeated {}", kind_name(&kind))),
        Position::Map(_) => Some("map".to_owned()),
        Position::Message(m) => Some(m.full_name().to_owned()),
    }
}

/// serde_json's message without its " at line L column C" suffix.
fn bare_message(err: &serde_json::Error) -> String {
    let full = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    match full.strip_suffix(&suffix) {
        Some(bare) => bare.to_owned(),
        None => full,
    }
}
