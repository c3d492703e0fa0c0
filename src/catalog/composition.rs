//! Compositions compiled against the descriptor pool (DESIGN §8): every
//! method, field path, reference and type is resolved at load into a
//! [`CompositionPlan`]; a request only follows it. Each problem is a load
//! error naming the composition, the call and the field.

use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MessageDescriptor, MethodDescriptor};

use crate::config::compositions::{parse_for_each, parse_template, Call, Composition, OnError, Piece, Reference, Root};
use crate::metrics::Series;
use crate::transcode::fields::{kind_name, Conversion, FieldPath, Source};
use crate::transcode::{DynamicCodec, JsonSettings};
use crate::upstream::Upstream;

/// One composition, ready to run.
#[derive(Debug)]
pub struct CompositionPlan {
    pub name: Arc<str>,
    /// In the order written; `needs` point backwards or forwards, never in
    /// a circle.
    pub calls: Vec<CallPlan>,
    /// The answer's keys in order, each a whole call or a value in one.
    pub answer: Vec<(String, AnswerPart)>,
    /// The path template's variables, in capture order (`{path.X}`).
    pub path_variables: Vec<String>,
}

/// One call of a composition.
#[derive(Debug)]
pub struct CallPlan {
    pub name: Arc<str>,
    pub grpc_path: PathAndQuery,
    /// `package.Service/Method`: the call's label in metrics.
    pub label: Arc<str>,
    /// The call's usual metric series, cached at first use.
    pub series: Series,
    pub codec: DynamicCodec,
    pub upstream: Arc<Upstream>,
    /// The request with every literal set; cloned for each call.
    pub base: DynamicMessage,
    /// The request fields filled from references, per call.
    pub sets: Vec<SetField>,
    /// The calls whose answers this one reads (indices into `calls`).
    pub needs: Vec<usize>,
    pub optional: bool,
    pub timeout: Option<Duration>,
    /// One call per element of this list.
    pub for_each: Option<Input>,
    pub max_concurrency: usize,
}

/// A request field filled from a reference.
#[derive(Debug)]
pub struct SetField {
    /// `user_id`, as written (for errors).
    pub key: String,
    pub target: FieldPath,
    pub value: Input,
    /// How the value's type becomes the field's (unused for body JSON,
    /// which the field's JSON mapping reads).
    pub conversion: Conversion,
}

/// Where a value comes from at request time.
#[derive(Debug, Clone)]
pub enum Input {
    /// The path variable at this capture index.
    Path(usize),
    /// A query parameter (absent: the field is left unset).
    Query(String),
    /// The JSON request body, or a value inside it.
    Body(Vec<String>),
    /// A value in an earlier call's answer.
    Call { call: usize, path: FieldPath },
    /// A value in the current `for_each` element.
    Item(FieldPath),
    /// Text around references: a string.
    Text(Vec<TextPart>),
}

/// A piece of an interpolated string.
#[derive(Debug, Clone)]
pub enum TextPart {
    Literal(String),
    Value(Input),
}

/// One key of the answer.
#[derive(Debug)]
pub enum AnswerPart {
    /// A call's answer, or a value in it (`{orders.orders}`).
    Call { call: usize, path: FieldPath },
    /// A literal written in `response:`.
    Literal(serde_json::Value),
}

/// What the compiler needs from the catalog being built.
pub struct Context<'a> {
    pub pool: &'a DescriptorPool,
    pub json: &'a JsonSettings,
    /// The upstream serving a service, as for its descriptor routes.
    pub upstream: &'a dyn Fn(&MethodDescriptor) -> Option<Arc<Upstream>>,
}

impl CompositionPlan {
    /// Compiles `composition`, whose path template has `path_variables`.
    /// Every problem found is returned, each naming the composition, the
    /// call and the field.
    pub fn compile(
        composition: &Composition,
        path_variables: Vec<String>,
        cx: &Context<'_>,
    ) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let at = |call: &str, what: String| format!("composition {}: call {call}: {what}", composition.name);
        let index_of = |name: &str| composition.calls.iter().position(|c| c.name == name);

        // Methods first: every reference to a call needs its output type.
        let mut methods = Vec::with_capacity(composition.calls.len());
        for call in &composition.calls {
            match resolve_method(cx.pool, &call.method) {
                Ok(method) if method.is_client_streaming() || method.is_server_streaming() => {
                    problems.push(at(
                        &call.name,
                        format!("method {} streams; a composition calls unary methods", call.method),
                    ));
                    methods.push(None);
                }
                Ok(method) => methods.push(Some(method)),
                Err(problem) => {
                    problems.push(at(&call.name, problem));
                    methods.push(None);
                }
            }
        }

        let compiler =
            Compiler { composition, path_variables: &path_variables, methods: &methods, index_of: &index_of };
        let mut calls = Vec::with_capacity(composition.calls.len());
        for (i, call) in composition.calls.iter().enumerate() {
            let Some(method) = &methods[i] else { continue };
            match compiler.call(call, method, cx) {
                Ok(plan) => calls.push(plan),
                Err(found) => problems.extend(found.into_iter().map(|p| at(&call.name, p))),
            }
        }
        if let Some(cycle) = find_cycle(&calls).filter(|_| calls.len() == composition.calls.len()) {
            let names: Vec<&str> = cycle.iter().map(|&i| &*calls[i].name).collect();
            problems.push(format!(
                "composition {}: the calls {} need each other in a circle",
                composition.name,
                names.join(" → ")
            ));
        }

        let answer = match compiler.answer(cx) {
            Ok(answer) => answer,
            Err(found) => {
                problems.extend(found.into_iter().map(|p| format!("composition {}: response: {p}", composition.name)));
                Vec::new()
            }
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self { name: Arc::from(composition.name.as_str()), calls, answer, path_variables })
    }
}

impl CompositionPlan {
    /// `user-overview: user, orders, details` — the name and its calls.
    pub fn summary(&self) -> String {
        let calls: Vec<&str> = self.calls.iter().map(|c| &*c.name).collect();
        format!("{}: {}", self.name, calls.join(", "))
    }

    /// The distinct upstream URLs the calls go to, in call order.
    pub fn upstreams(&self) -> Vec<String> {
        let mut urls: Vec<String> = Vec::new();
        for call in &self.calls {
            let url = call.upstream.url.to_string();
            if !urls.contains(&url) {
                urls.push(url);
            }
        }
        urls
    }
}

impl CallPlan {
    /// `acme.users.v1.UserService/GetUser`
    pub fn grpc_method(&self) -> &str {
        &self.grpc_path.as_str()[1..]
    }
}

struct Compiler<'a> {
    composition: &'a Composition,
    path_variables: &'a [String],
    methods: &'a [Option<MethodDescriptor>],
    index_of: &'a dyn Fn(&str) -> Option<usize>,
}

/// The type a reference yields, for type checks.
enum Yields {
    Text,
    Json,
    Proto { kind: Kind, list: bool },
}

impl Compiler<'_> {
    fn call(&self, call: &Call, method: &MethodDescriptor, cx: &Context<'_>) -> Result<CallPlan, Vec<String>> {
        let mut problems = Vec::new();
        let Some(upstream) = (cx.upstream)(method) else {
            return Err(vec![format!(
                "no upstream serves {} (add --upstream {}=URL)",
                call.method,
                method.parent_service().full_name()
            )]);
        };
        let input = method.input();
        let item = match &call.for_each {
            None => None,
            Some(text) => {
                match parse_for_each(text).map_err(|p| format!("for_each: {p}")).and_then(|r| self.list(&r)) {
                    Ok(list) => Some(list),
                    Err(problem) => {
                        problems.push(problem);
                        None
                    }
                }
            }
        };

        // Literals become one JSON object, read once with the JSON mapping;
        // references become setters.
        let mut literals = serde_json::Map::new();
        let mut literal_keys: Vec<(&str, Vec<String>, &serde_json::Value)> = Vec::new();
        let mut sets = Vec::new();
        let mut needs = Vec::new();
        for (key, value) in &call.request {
            let names: Vec<String> = key.split('.').map(str::to_owned).collect();
            let target = match FieldPath::resolve(&input, &names) {
                Ok(target) => target,
                Err(problem) => {
                    problems.push(format!("request.{key}: {problem}"));
                    continue;
                }
            };
            let pieces = match value {
                serde_json::Value::String(text) => match parse_template(text) {
                    Ok(pieces) => pieces,
                    Err(problem) => {
                        problems.push(format!("request.{key}: {problem}"));
                        continue;
                    }
                },
                _ => Vec::new(),
            };
            if !pieces.iter().any(|p| matches!(p, Piece::Ref(_))) {
                insert_literal(&mut literals, &names, value.clone());
                literal_keys.push((key, names, value));
                continue;
            }
            match self.setter(key, target, &pieces, item.as_ref(), &mut needs) {
                Ok(set) => sets.push(set),
                Err(problem) => problems.push(format!("request.{key}: {problem}")),
            }
        }
        let base = match DynamicMessage::deserialize_with_options(
            input.clone(),
            serde_json::Value::Object(literals),
            &cx.json.deserialize,
        ) {
            Ok(base) => base,
            Err(err) => {
                // Read on its own, each literal names its own field; only
                // literals that fit alone but not together (two members of
                // a oneof) are reported as the whole.
                let mut found = false;
                for (key, names, value) in &literal_keys {
                    let mut alone = serde_json::Map::new();
                    insert_literal(&mut alone, names, (*value).clone());
                    let read = DynamicMessage::deserialize_with_options(
                        input.clone(),
                        serde_json::Value::Object(alone),
                        &cx.json.deserialize,
                    );
                    if let Err(err) = read {
                        problems.push(format!("request.{key}: the literal {value} does not fit: {err}"));
                        found = true;
                    }
                }
                if !found {
                    problems.push(format!("request: the literals do not fit {} together: {err}", input.full_name()));
                }
                DynamicMessage::new(input.clone())
            }
        };
        if let Some((Input::Call { call: needed, .. }, _)) = &item {
            needs.push(*needed);
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        needs.sort_unstable();
        needs.dedup();
        let optional = call.optional && self.composition.on_error != OnError::Fail;
        Ok(CallPlan {
            name: Arc::from(call.name.as_str()),
            label: Arc::from(&grpc_path(method).as_str()[1..]),
            series: Series::default(),
            grpc_path: grpc_path(method),
            codec: DynamicCodec::new(method.output()),
            upstream,
            base,
            sets,
            needs,
            optional,
            timeout: call.timeout,
            for_each: item.map(|(list, _)| list),
            max_concurrency: call.max_concurrency,
        })
    }

    /// A request field filled from `pieces` (at least one reference).
    fn setter(
        &self,
        key: &str,
        target: FieldPath,
        pieces: &[Piece],
        item: Option<&(Input, Kind)>,
        needs: &mut Vec<usize>,
    ) -> Result<SetField, String> {
        let leaf = target.leaf().ok_or("a request key names no field")?.clone();
        let (value, yields) = match pieces {
            [Piece::Ref(reference)] => self.input(reference, item, needs)?,
            _ => {
                let mut parts = Vec::with_capacity(pieces.len());
                for piece in pieces {
                    parts.push(match piece {
                        Piece::Text(text) => TextPart::Literal(text.clone()),
                        Piece::Ref(reference) => match self.input(reference, item, needs)? {
                            (input, Yields::Text | Yields::Json) => TextPart::Value(input),
                            (input, Yields::Proto { kind, list: false }) if scalar(&kind) => TextPart::Value(input),
                            (_, Yields::Proto { kind, .. }) => {
                                return Err(format!(
                                    "{reference} is {}, which has no text to put in a string",
                                    kind_name(&kind)
                                ));
                            }
                        },
                    });
                }
                (Input::Text(parts), Yields::Text)
            }
        };
        let conversion = match yields {
            Yields::Json => Conversion::Same,
            Yields::Text => Conversion::plan(&Source::Text, &leaf)?,
            Yields::Proto { kind, list } => Conversion::plan(&Source::Proto { kind, list }, &leaf)?,
        };
        Ok(SetField { key: key.to_owned(), target, value, conversion })
    }

    /// Where `reference` reads at request time, and what type it yields.
    fn input(
        &self,
        reference: &Reference,
        item: Option<&(Input, Kind)>,
        needs: &mut Vec<usize>,
    ) -> Result<(Input, Yields), String> {
        match &reference.root {
            Root::Path => {
                let name = reference.path.join(".");
                let index = self
                    .path_variables
                    .iter()
                    .position(|v| *v == name)
                    .ok_or_else(|| format!("{reference}: the path template has no variable `{name}`"))?;
                Ok((Input::Path(index), Yields::Text))
            }
            Root::Query => Ok((Input::Query(reference.path.join(".")), Yields::Text)),
            Root::Body => {
                if !matches!(self.composition.http_method, http::Method::POST | http::Method::PUT | http::Method::PATCH)
                {
                    return Err(format!("{reference}: a {} route has no body", self.composition.http_method));
                }
                Ok((Input::Body(reference.path.clone()), Yields::Json))
            }
            Root::Item => {
                let (_, element) = item.ok_or_else(|| format!("{reference}: only a call with for_each has an item"))?;
                match element {
                    Kind::Message(desc) => {
                        let path =
                            FieldPath::resolve(desc, &reference.path).map_err(|p| format!("{reference}: {p}"))?;
                        let yields = yields_at(&path, desc);
                        Ok((Input::Item(path), yields))
                    }
                    kind if reference.path.is_empty() => {
                        Ok((Input::Item(FieldPath::empty()), Yields::Proto { kind: kind.clone(), list: false }))
                    }
                    kind => Err(format!("{reference}: the item is {}, it has no fields", kind_name(kind))),
                }
            }
            Root::Call(name) => {
                let (call, output, each) = self.called(name, reference)?;
                needs.push(call);
                let path = FieldPath::resolve(&output, &reference.path).map_err(|p| format!("{reference}: {p}"))?;
                let yields = match (each, reference.path.is_empty()) {
                    (false, _) => yields_at(&path, &output),
                    (true, true) => Yields::Proto { kind: Kind::Message(output), list: true },
                    (true, false) => {
                        return Err(format!("{reference}: {name} runs for_each and answers a list; refer to it whole"));
                    }
                };
                Ok((Input::Call { call, path }, yields))
            }
        }
    }

    /// The call `name`: its index, output type and whether it is a
    /// `for_each` (its answer a list).
    fn called(&self, name: &str, reference: &Reference) -> Result<(usize, MessageDescriptor, bool), String> {
        let call = (self.index_of)(name).ok_or_else(|| format!("{reference}: there is no call `{name}`"))?;
        let output = self.methods[call]
            .as_ref()
            .map(MethodDescriptor::output)
            .ok_or_else(|| format!("{reference}: call `{name}` has no method"))?;
        Ok((call, output, self.composition.calls[call].for_each.is_some()))
    }

    /// A `for_each` list: where it is read and the kind of its elements.
    fn list(&self, reference: &Reference) -> Result<(Input, Kind), String> {
        match &reference.root {
            Root::Call(name) => {
                let (call, output, each) = self.called(name, reference)?;
                if each {
                    return Err(format!("for_each: {reference}: {name} answers a list of lists"));
                }
                let path =
                    FieldPath::resolve(&output, &reference.path).map_err(|p| format!("for_each: {reference}: {p}"))?;
                match path.leaf() {
                    Some(field) if field.is_list() => Ok((Input::Call { call, path: path.clone() }, field.kind())),
                    _ => Err(format!("for_each: {reference} is not a repeated field")),
                }
            }
            Root::Body => Err(format!("for_each: {reference}: a list must come from a call's answer")),
            _ => Err(format!("for_each: {reference} is not a list")),
        }
    }

    /// The answer's shape: `response:` or every call by name.
    fn answer(&self, _cx: &Context<'_>) -> Result<Vec<(String, AnswerPart)>, Vec<String>> {
        let Some(response) = &self.composition.response else {
            return Ok(self
                .composition
                .calls
                .iter()
                .enumerate()
                .map(|(call, c)| (c.name.clone(), AnswerPart::Call { call, path: FieldPath::empty() }))
                .collect());
        };
        let mut problems = Vec::new();
        let mut answer = Vec::with_capacity(response.len());
        for (key, value) in response {
            let part = match value {
                serde_json::Value::String(text) => match parse_template(text) {
                    Ok(pieces) => match pieces.as_slice() {
                        [Piece::Ref(reference @ Reference { root: Root::Call(name), .. })] => {
                            match self.called(name, reference).and_then(|(call, output, each)| {
                                if each && !reference.path.is_empty() {
                                    return Err(format!("{reference}: {name} answers a list; refer to it whole"));
                                }
                                let path = FieldPath::resolve(&output, &reference.path)
                                    .map_err(|p| format!("{reference}: {p}"))?;
                                Ok(AnswerPart::Call { call, path })
                            }) {
                                Ok(part) => part,
                                Err(problem) => {
                                    problems.push(format!("{key}: {problem}"));
                                    continue;
                                }
                            }
                        }
                        pieces if pieces.iter().any(|p| matches!(p, Piece::Ref(_))) => {
                            problems.push(format!(
                                "{key}: {text:?}: an answer value is one reference to a call, or a literal"
                            ));
                            continue;
                        }
                        _ => AnswerPart::Literal(value.clone()),
                    },
                    Err(problem) => {
                        problems.push(format!("{key}: {problem}"));
                        continue;
                    }
                },
                literal => AnswerPart::Literal(literal.clone()),
            };
            answer.push((key.clone(), part));
        }
        if problems.is_empty() {
            Ok(answer)
        } else {
            Err(problems)
        }
    }
}

/// What a value at `path` in a message of type `desc` yields.
fn yields_at(path: &FieldPath, desc: &MessageDescriptor) -> Yields {
    match path.leaf() {
        None => Yields::Proto { kind: Kind::Message(desc.clone()), list: false },
        Some(field) => Yields::Proto { kind: field.kind(), list: field.is_list() || field.is_map() },
    }
}

fn scalar(kind: &Kind) -> bool {
    !matches!(kind, Kind::Message(_) | Kind::Bytes)
}

/// `package.Service/Method` in `pool`.
fn resolve_method(pool: &DescriptorPool, name: &str) -> Result<MethodDescriptor, String> {
    let (service, method) =
        name.split_once('/').ok_or_else(|| format!("method {name:?} is not package.Service/Method"))?;
    let service = pool
        .get_service_by_name(service)
        .ok_or_else(|| format!("method {name}: no service {service} in the descriptors"))?;
    let found = service.methods().find(|m| m.name() == method);
    found.ok_or_else(|| format!("method {name}: {} has no method {method}", service.full_name()))
}

fn grpc_path(method: &MethodDescriptor) -> PathAndQuery {
    let text = format!("/{}/{}", method.parent_service().full_name(), method.name());
    PathAndQuery::try_from(text).unwrap_or_else(|_| PathAndQuery::from_static("/"))
}

/// Puts `value` at the dotted `names` of a JSON object.
fn insert_literal(object: &mut serde_json::Map<String, serde_json::Value>, names: &[String], value: serde_json::Value) {
    let Some((last, parents)) = names.split_last() else { return };
    let mut current = object;
    for name in parents {
        let entry = current.entry(name.clone()).or_insert_with(|| serde_json::Value::Object(Default::default()));
        if !entry.is_object() {
            *entry = serde_json::Value::Object(Default::default());
        }
        let serde_json::Value::Object(inner) = entry else { return };
        current = inner;
    }
    current.insert(last.clone(), value);
}

/// A circle among the calls' `needs`, if there is one.
fn find_cycle(calls: &[CallPlan]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(i: usize, calls: &[CallPlan], marks: &mut [Mark], stack: &mut Vec<usize>) -> Option<Vec<usize>> {
        marks[i] = Mark::Open;
        stack.push(i);
        for &next in &calls[i].needs {
            if next >= calls.len() {
                continue;
            }
            match marks[next] {
                Mark::Open => {
                    let from = stack.iter().position(|&s| s == next).unwrap_or(0);
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next);
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(cycle) = visit(next, calls, marks, stack) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks[i] = Mark::Done;
        None
    }
    let mut marks = vec![Mark::New; calls.len()];
    let mut stack = Vec::new();
    (0..calls.len()).find_map(|i| if marks[i] == Mark::New { visit(i, calls, &mut marks, &mut stack) } else { None })
}
