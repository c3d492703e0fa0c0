//! One route → one OpenAPI path and operation: its path template in
//! OpenAPI's notation, its path and query parameters, request body,
//! responses (streaming framings included) and security requirements.

use prost_reflect::{FieldDescriptor, Kind};
use serde_json::{json, Map, Value};

use super::schema::{described, Schemas};
use super::security::Security;
use crate::auth::policy::RoutePolicy;
use crate::catalog::composition::{AnswerPart, CompositionPlan, Input, TextPart};
use crate::catalog::{CallKind, MethodCall, Route, Target};
use crate::routing::template::Segment;
use crate::routing::PathTemplate;
use crate::transcode::request::BodyShape;

/// A path template in OpenAPI's notation and the parameters it names.
pub struct OpenApiPath {
    pub path: String,
    pub parameters: Vec<PathParameter>,
}

/// One `{name}` of an OpenAPI path.
pub struct PathParameter {
    pub name: String,
    /// The template variable it belongs to (index), if any.
    pub variable: Option<usize>,
    /// The variable captures exactly this one segment: the parameter is the
    /// field's whole value.
    pub whole: bool,
    /// The variable's field path (`user.id`).
    pub field: Option<String>,
    pub description: Option<String>,
}

/// `/v1/{name=shelves/*}/books` → `/v1/shelves/{name}/books`: a variable's
/// literal segments stay in the path and each of its wildcards becomes a
/// parameter (named after the variable, numbered when it has several), so
/// that every parameter is one path segment as OpenAPI requires; the field
/// still receives the whole matched text (`shelves/1`).
pub fn openapi_path(template: &PathTemplate) -> OpenApiPath {
    let mut path = String::new();
    let mut parameters = Vec::new();
    let mut i = 0;
    while i < template.segments.len() {
        let found = template.variables.iter().enumerate().find(|(_, v)| v.start == i && v.end > i);
        let Some((index, variable)) = found else {
            path.push('/');
            match &template.segments[i] {
                Segment::Literal(text) => path.push_str(text),
                wildcard => {
                    let name = unique(format!("segment{}", i + 1), &parameters);
                    path.push_str(&format!("{{{name}}}"));
                    let multi = matches!(wildcard, Segment::Multi);
                    parameters.push(PathParameter {
                        name,
                        variable: None,
                        whole: false,
                        field: None,
                        description: multi.then(|| MULTI.to_owned()),
                    });
                }
            }
            i += 1;
            continue;
        };
        let field = variable.field_path.join(".");
        // `{user.id}` would be a field lookup to tools that fill paths with
        // format strings: parameters are named `user_id`.
        let base = variable.field_path.join("_");
        let covered = &template.segments[i..variable.end.min(template.segments.len())];
        let wildcards = covered.iter().filter(|s| !matches!(s, Segment::Literal(_))).count();
        let mut shown = Vec::with_capacity(covered.len());
        let mut names = Vec::new();
        for segment in covered {
            match segment {
                Segment::Literal(text) => shown.push(text.clone()),
                wildcard => {
                    let name = match wildcards {
                        1 => base.clone(),
                        _ => format!("{base}_{}", names.len() + 1),
                    };
                    let name = unique(name, &parameters);
                    shown.push(format!("{{{name}}}"));
                    names.push((name, matches!(wildcard, Segment::Multi)));
                }
            }
        }
        let whole = covered.len() == 1 && covered[0] == Segment::Single;
        let full = shown.join("/");
        for (name, multi) in names {
            let mut notes = Vec::new();
            if !whole {
                notes.push(format!("The field `{field}` is set to the whole matched text, `{full}`."));
            }
            if multi {
                notes.push(MULTI.to_owned());
            }
            let description = (!notes.is_empty()).then(|| notes.join(" "));
            parameters.push(PathParameter {
                name,
                variable: Some(index),
                whole,
                field: Some(field.clone()),
                description,
            });
        }
        path.push('/');
        path.push_str(&full);
        i = variable.end;
    }
    if path.is_empty() {
        path.push('/');
    }
    if let Some(verb) = &template.verb {
        path.push(':');
        path.push_str(verb);
    }
    OpenApiPath { path, parameters }
}

impl OpenApiPath {
    /// The path with its parameters' names left out: two paths of one shape
    /// are one path to OpenAPI.
    pub fn shape(&self) -> String {
        let mut shape = String::with_capacity(self.path.len());
        let mut inside = false;
        for c in self.path.chars() {
            match c {
                '{' => {
                    inside = true;
                    shape.push(c);
                }
                '}' => {
                    inside = false;
                    shape.push(c);
                }
                _ if inside => {}
                _ => shape.push(c),
            }
        }
        shape
    }

    /// Its parameters renamed, in order, to `names` (those of an earlier
    /// path of the same shape).
    pub fn rename(&mut self, names: &[String]) {
        let mut path = self.path.clone();
        // Through placeholders, so that swapped names cannot clash.
        for (k, parameter) in self.parameters.iter().enumerate() {
            path = path.replacen(&format!("{{{}}}", parameter.name), &format!("{{\u{0}{k}}}"), 1);
        }
        for (k, (parameter, name)) in self.parameters.iter_mut().zip(names).enumerate() {
            path = path.replacen(&format!("{{\u{0}{k}}}"), &format!("{{{name}}}"), 1);
            parameter.name = name.clone();
        }
        self.path = path;
    }

    pub fn names(&self) -> Vec<String> {
        self.parameters.iter().map(|p| p.name.clone()).collect()
    }
}

/// `name`, or `name_2`, `name_3`… when a parameter has it already.
fn unique(name: String, taken: &[PathParameter]) -> String {
    let free = |candidate: &str| !taken.iter().any(|p| p.name == candidate);
    if free(&name) {
        return name;
    }
    (2..).map(|n| format!("{name}_{n}")).find(|candidate| free(candidate)).unwrap_or(name)
}

const MULTI: &str =
    "Matches several path segments (`**`); a `/` sent percent-encoded as `%2F` stays encoded in the value.";

/// Builds the operations of a document.
pub struct Operations<'s, 'o> {
    pub schemas: &'s mut Schemas<'o>,
    pub security: &'s Security,
}

impl Operations<'_, '_> {
    /// The operation of `route` (at `path`, from [`openapi_path`]).
    pub fn operation(&mut self, route: &Route, path: &OpenApiPath, operation_id: String) -> Value {
        let mut op = Map::new();
        op.insert("operationId".into(), Value::String(operation_id));
        let (parameters, body, ok) = match &route.target {
            Target::Method(call) => {
                self.describe_method(route, call, &mut op);
                (
                    self.method_parameters(call, path),
                    self.method_body(route.kind, call),
                    self.method_answer(route.kind, call),
                )
            }
            Target::Composition(plan) => {
                describe_composition(plan, &mut op);
                (self.composition_parameters(plan, path), self.composition_body(plan), self.composition_answer(plan))
            }
        };
        if !parameters.is_empty() {
            op.insert("parameters".into(), Value::Array(parameters));
        }
        if let Some(body) = body {
            op.insert("requestBody".into(), body);
        }
        let mut ok = ok;
        let deprecated = route.response_headers.iter().any(|(name, _)| name == "deprecation");
        if deprecated {
            let mut headers = Map::new();
            for (name, _) in &route.response_headers {
                headers.insert(name.as_str().to_owned(), json!({"schema": {"type": "string"}}));
            }
            merge_headers(&mut ok, headers);
            op.insert("deprecated".into(), Value::Bool(true));
        }
        op.insert("responses".into(), json!({"200": ok, "default": {"$ref": "#/components/responses/Status"}}));
        if let Some(security) = route.extensions.get::<std::sync::Arc<RoutePolicy>>().and_then(|p| self.security.of(p))
        {
            op.insert("security".into(), security);
        }
        Value::Object(op)
    }

    fn describe_method(&mut self, route: &Route, call: &MethodCall, op: &mut Map<String, Value>) {
        let method = &call.method;
        let service = method.parent_service();
        op.insert("tags".into(), json!([service.full_name()]));
        let comment = self.schemas.comment(&method.parent_file(), method.path());
        if let Some(comment) = &comment {
            let summary = comment.split("\n\n").next().unwrap_or_default().replace('\n', " ");
            op.insert("summary".into(), Value::String(summary));
        }
        let mut text = comment.unwrap_or_default();
        let mut note = |line: String| {
            if !text.is_empty() {
                text.push_str("\n\n");
            }
            text.push_str(&line);
        };
        note(format!("gRPC method `{}` ({}).", call.grpc_method(), route.kind.as_str()));
        if route.kind.streams() {
            note(
                "Also served as a WebSocket (a `GET` upgrade on this path): one JSON message per text frame each way."
                    .to_owned(),
            );
        }
        op.insert("description".into(), Value::String(text));
        op.insert("x-protogate-grpc-method".into(), Value::String(call.grpc_method().to_owned()));
        op.insert("x-protogate-kind".into(), Value::String(route.kind.as_str().to_owned()));
    }

    fn method_parameters(&mut self, call: &MethodCall, path: &OpenApiPath) -> Vec<Value> {
        let variables: Vec<&[FieldDescriptor]> = call.request.variable_fields().collect();
        let mut out = Vec::new();
        for parameter in &path.parameters {
            let leaf = parameter.variable.and_then(|i| variables.get(i)).and_then(|fields| fields.last());
            let schema = match (leaf, parameter.whole) {
                (Some(field), true) => self.schemas.parameter(field),
                _ => json!({"type": "string"}),
            };
            out.push(path_parameter(parameter, schema));
        }
        for query in call.request.query_parameters() {
            let Some(leaf) = query.path.last() else { continue };
            let name: Vec<String> = query.path.iter().map(|f| self.schemas.name_of(f)).collect();
            let name = name.join(".");
            let mut parameter = json!({"name": name, "in": "query"});
            if query.map {
                parameter["schema"] = self.schemas.map_parameter(leaf);
                parameter["style"] = json!("deepObject");
                parameter["explode"] = json!(true);
            } else {
                parameter["schema"] = self.schemas.parameter(leaf);
                if leaf.is_list() {
                    parameter["style"] = json!("form");
                    parameter["explode"] = json!(true);
                }
            }
            if let Some(comment) = self.schemas.comment(&leaf.parent_file(), leaf.path()) {
                parameter["description"] = Value::String(comment);
            }
            out.push(parameter);
        }
        out
    }

    fn method_body(&mut self, kind: CallKind, call: &MethodCall) -> Option<Value> {
        let request = &call.request;
        let item = match request.body_shape() {
            BodyShape::None => return None,
            BodyShape::Raw => {
                let text = match kind.client_streams() {
                    true => "The raw bytes of the upload, streamed to the backend in chunks (google.api.HttpBody).",
                    false => "The raw bytes, with their content type (google.api.HttpBody).",
                };
                return Some(json!({"description": text, "content": {"*/*": {"schema": {}}}}));
            }
            // As the gateway reads it, which is more than it prints.
            BodyShape::Whole => self.schemas.input_message(request.input()),
            BodyShape::Field(field) => match field.kind() {
                // Read as the message itself, which `null` is not.
                Kind::Message(desc) if !field.is_list() && !field.is_map() => self.schemas.input_message(&desc),
                _ => self.schemas.input_field(field),
            },
        };
        if kind.client_streams() {
            return Some(json!({
                "description": "A stream of messages: one JSON message per line (NDJSON), or one JSON array.",
                "content": {
                    "application/x-ndjson": {"schema": item},
                    "application/json": {"schema": {"type": "array", "items": item}},
                }
            }));
        }
        Some(json!({"content": {"application/json": {"schema": item}}}))
    }

    fn method_answer(&mut self, kind: CallKind, call: &MethodCall) -> Value {
        let response = &call.response;
        if response.is_raw() {
            let text = match kind.server_streams() {
                true => "The raw bytes of the download, chunked, with the first message's content type (google.api.HttpBody).",
                false => "The raw bytes, with the backend's content type (google.api.HttpBody).",
            };
            return json!({"description": text, "content": {"*/*": {"schema": {}}}});
        }
        let item = match response.field() {
            Some(field) => self.schemas.field(field),
            None => self.schemas.message(response.output()),
        };
        if !kind.server_streams() {
            return json!({"description": "OK", "content": {"application/json": {"schema": item}}});
        }
        // The last element may be the error that ended the stream.
        let ended = json!({
            "type": "object",
            "properties": {"error": {"$ref": "#/components/schemas/google.rpc.Status"}},
            "required": ["error"],
        });
        let element = json!({"anyOf": [item, ended]});
        json!({
            "description": "A stream of messages, framed as `Accept` asks: NDJSON (the default), JSON Lines, server-sent events (`id: N` and `data: <message>`; `event: error` with the Status last), or one JSON array. An error after the first message ends the stream as a last element `{\"error\": Status}`.",
            "content": {
                "application/x-ndjson": {"schema": element},
                "application/jsonl": {"schema": element},
                "text/event-stream": {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "array", "items": element}},
            }
        })
    }

    fn composition_parameters(&mut self, plan: &CompositionPlan, path: &OpenApiPath) -> Vec<Value> {
        let mut out = Vec::new();
        for parameter in &path.parameters {
            let target = parameter.variable.filter(|_| parameter.whole).and_then(|i| {
                plan.calls.iter().flat_map(|c| &c.sets).find_map(|set| match set.value {
                    Input::Path(at) if at == i => set.target.leaf().cloned(),
                    _ => None,
                })
            });
            let schema = match target {
                Some(field) => self.schemas.parameter(&field),
                None => json!({"type": "string"}),
            };
            out.push(path_parameter(parameter, schema));
        }
        let mut queries: Vec<(String, Option<FieldDescriptor>)> = Vec::new();
        for call in &plan.calls {
            for set in &call.sets {
                for (name, direct) in query_inputs(&set.value) {
                    let field = set.target.leaf().filter(|_| direct).cloned();
                    match queries.iter_mut().find(|(n, _)| *n == name) {
                        // A parameter read into fields of different types is
                        // documented as text.
                        Some((_, known)) => {
                            if known.as_ref().map(FieldDescriptor::kind) != field.as_ref().map(FieldDescriptor::kind) {
                                *known = None;
                            }
                        }
                        None => queries.push((name, field)),
                    }
                }
            }
        }
        for (name, field) in queries {
            let schema = match field.filter(|f| !f.is_list() && !f.is_map()) {
                Some(field) => self.schemas.parameter(&field),
                None => json!({"type": "string"}),
            };
            out.push(json!({"name": name, "in": "query", "schema": schema}));
        }
        out
    }

    fn composition_body(&mut self, plan: &CompositionPlan) -> Option<Value> {
        let reads_body = plan.calls.iter().flat_map(|c| &c.sets).any(|set| reads_body(&set.value))
            || plan.calls.iter().filter_map(|c| c.for_each.as_ref()).any(reads_body);
        reads_body.then(|| {
            json!({
                "description": "A JSON object; the composition reads the values its calls name (`{body.X}`).",
                "content": {"application/json": {"schema": {"type": "object"}}}
            })
        })
    }

    fn composition_answer(&mut self, plan: &CompositionPlan) -> Value {
        let mut properties = Map::new();
        for (key, part) in &plan.answer {
            let schema = match part {
                AnswerPart::Literal(value) => json!({"const": value}),
                AnswerPart::Call { call, path } => {
                    let Some(call) = plan.calls.get(*call) else { continue };
                    let one = match path.leaf() {
                        Some(field) => self.schemas.field(field),
                        None => self.schemas.message(call.codec.output()),
                    };
                    let one = match call.for_each.is_some() {
                        true => json!({"type": "array", "items": one}),
                        false => one,
                    };
                    described(one, format!("From call `{}` (`{}`).", call.name, call.grpc_method()))
                }
            };
            properties.insert(key.clone(), schema);
        }
        properties.insert(
            "errors".into(),
            json!({
                "type": "object",
                "description": "On a partial answer: the Status of each optional call that failed or was skipped, by call name.",
                "additionalProperties": {"$ref": "#/components/schemas/google.rpc.Status"},
            }),
        );
        json!({
            "description": "One JSON object: the answers of the composition's calls by key.",
            "headers": {"x-protogate-partial": {
                "description": "`true` when an optional call failed and its key is left out (see `errors`).",
                "schema": {"type": "string", "enum": ["true"]},
            }},
            "content": {"application/json": {"schema": {"type": "object", "properties": properties}}}
        })
    }
}

fn describe_composition(plan: &CompositionPlan, op: &mut Map<String, Value>) {
    op.insert("tags".into(), json!(["compositions"]));
    op.insert("summary".into(), Value::String(format!("Composition {}", plan.name)));
    let calls: Vec<String> = plan
        .calls
        .iter()
        .map(|c| {
            let mut line = format!("- `{}`: `{}`", c.name, c.grpc_method());
            if c.for_each.is_some() {
                line.push_str(" (one call per list element)");
            }
            if c.optional {
                line.push_str(" (optional)");
            }
            line
        })
        .collect();
    op.insert(
        "description".into(),
        Value::String(format!("Composition `{}` of the calls:\n\n{}", plan.name, calls.join("\n"))),
    );
    op.insert("x-protogate-composition".into(), Value::String(plan.name.to_string()));
    op.insert("x-protogate-kind".into(), Value::String(CallKind::Composition.as_str().to_owned()));
}

fn path_parameter(parameter: &PathParameter, mut schema: Value) -> Value {
    if schema.get("type").and_then(Value::as_str) == Some("string") && schema.get("enum").is_none() {
        // `*` matches one non-empty segment.
        schema["minLength"] = json!(1);
    }
    let mut out = json!({"name": parameter.name, "in": "path", "required": true, "schema": schema});
    let mut notes = Vec::new();
    if let Some(field) = parameter.field.as_ref().filter(|f| parameter.whole && **f != parameter.name) {
        notes.push(format!("The field `{field}`."));
    }
    notes.extend(parameter.description.clone());
    if !notes.is_empty() {
        out["description"] = Value::String(notes.join(" "));
    }
    out
}

fn merge_headers(response: &mut Value, headers: Map<String, Value>) {
    let Some(object) = response.as_object_mut() else { return };
    let entry = object.entry("headers").or_insert_with(|| Value::Object(Map::new()));
    if let Some(existing) = entry.as_object_mut() {
        existing.extend(headers);
    }
}

/// The query parameters an input reads, each with whether it is the whole
/// value (typed by its target field) or text inside a string.
fn query_inputs(input: &Input) -> Vec<(String, bool)> {
    match input {
        Input::Query(name) => vec![(name.clone(), true)],
        Input::Text(parts) => parts
            .iter()
            .filter_map(|p| match p {
                TextPart::Value(Input::Query(name)) => Some((name.clone(), false)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn reads_body(input: &Input) -> bool {
    match input {
        Input::Body(_) => true,
        Input::Text(parts) => parts.iter().any(|p| matches!(p, TextPart::Value(Input::Body(_)))),
        _ => false,
    }
}
