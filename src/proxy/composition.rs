//! A composition route (DESIGN §8): runs its plan's calls as their inputs
//! allow — independent calls at once, a dependent one as soon as the calls
//! it reads have answered — and answers one JSON object.
//!
//! Answers move between calls as messages, never through JSON text. A
//! required call that fails ends the route with its status; dropping the
//! calls still running cancels them (the backends see CANCELLED). An
//! optional call that fails, or cannot run because a call it needs failed,
//! leaves its key out and adds `errors` (`x-protogate-partial: true`).

use std::sync::Arc;
use std::time::Duration;

use crate::upstream::CallMetadata;
use futures_util::stream::{FuturesUnordered, StreamExt as _};
use http::header::CONTENT_TYPE;
use http::{HeaderName, HeaderValue, Request, Response};

use prost_reflect::{DynamicMessage, Kind, Value};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use tokio::time::Instant;
use tonic::Code;

use super::request::{call_metadata, call_timeout, read_whole_body, Handler};
use crate::catalog::composition::{AnswerPart, CallPlan, Input, SetField, TextPart};
use crate::catalog::CompositionPlan;
use crate::error::{Fault, GatewayError};
use crate::http::observe::Exchange;
use crate::http::{Body, MatchedRoute, RequestBody};
use crate::metrics::{CallOutcome, Metrics};
use crate::telemetry::span::with_own_span_id;
use crate::transcode::codec::Outgoing;
use crate::transcode::fields::text_of;
use crate::transcode::query::decode_component;
use crate::transcode::request::syntax_error;
use crate::transcode::response::FieldJson;
use crate::transcode::status::render_error;
use crate::transcode::JsonSettings;

const X_PROTOGATE_PARTIAL: HeaderName = HeaderName::from_static("x-protogate-partial");

/// Runs `plan` for the request.
pub async fn call(
    handler: &Handler,
    matched: &MatchedRoute,
    plan: &CompositionPlan,
    req: Request<RequestBody>,
) -> Result<Response<Body>, GatewayError> {
    let route = &matched.route;
    let (parts, body) = req.into_parts();
    let body = read_whole_body(body, route.max_body, route.timeout).await?;
    if let Some(exchange) = parts.extensions.get::<Arc<Exchange>>() {
        exchange.add_bytes_in(body.len());
    }
    let body = match body.is_empty() {
        true => None,
        false => Some(serde_json::from_slice::<serde_json::Value>(&body).map_err(|e| syntax_error(&e))?),
    };
    let query = parts.uri.query().map(parse_query).transpose()?.unwrap_or_default();
    let metadata = call_metadata(&handler.metadata, &parts, &handler.peer);
    let timeout = call_timeout(&parts.headers, Some(route.timeout))?.unwrap_or(route.timeout);
    let deadline = Instant::now() + timeout;

    let inputs = Inputs { captures: &matched.captures, query, body };
    let run = Run { plan, inputs: &inputs, metadata, deadline, timeout, metrics: &handler.metrics };
    let outcomes = tokio::time::timeout_at(deadline, run.all()).await.map_err(|_| run.deadline_exceeded())??;

    let catalog = &matched.catalog;
    let errors: Vec<(&str, Box<serde_json::value::RawValue>)> = plan
        .calls
        .iter()
        .zip(&outcomes)
        .filter_map(|(call, outcome)| match outcome {
            Outcome::Failed(err) => Some((&*call.name, err)),
            _ => None,
        })
        .filter_map(|(name, err)| {
            let status = render_error(err, &catalog.pool, &catalog.json);
            let text = String::from_utf8(status.to_vec()).ok()?;
            serde_json::value::RawValue::from_string(text).ok().map(|raw| (name, raw))
        })
        .collect();
    let answer = Answer { plan, outcomes: &outcomes, errors: &errors, settings: &catalog.json };
    let mut out = Vec::with_capacity(512);
    let written = if catalog.json.pretty {
        answer.serialize(&mut serde_json::Serializer::pretty(&mut out))
    } else {
        answer.serialize(&mut serde_json::Serializer::new(&mut out))
    };
    written.map_err(|e| GatewayError::internal(format!("cannot render the composition's answer: {e}")))?;

    if let Some(exchange) = parts.extensions.get::<Arc<Exchange>>() {
        exchange.set_code(Code::Ok);
    }
    let mut response = Response::new(Body::full(out));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if !errors.is_empty() {
        headers.insert(X_PROTOGATE_PARTIAL, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// What the request gives the calls.
struct Inputs<'a> {
    captures: &'a [String],
    query: Vec<(String, String)>,
    body: Option<serde_json::Value>,
}

/// How a call ended.
enum Outcome {
    /// Not run yet.
    Pending,
    One(DynamicMessage),
    /// A `for_each`: the answers in the order of the list.
    Many(Vec<DynamicMessage>),
    /// An optional call that failed, or could not run (its Status).
    Failed(GatewayError),
}

struct Run<'a> {
    plan: &'a CompositionPlan,
    inputs: &'a Inputs<'a>,
    metadata: CallMetadata,
    /// The route's, and its length (for the error).
    deadline: Instant,
    timeout: Duration,
    metrics: &'a Metrics,
}

/// How one call ended: its index, and its outcome or error.
struct Ended {
    index: usize,
    outcome: Result<Outcome, GatewayError>,
    /// It ran out of the route's time, not its own: the route has ended,
    /// whether the call was optional or not.
    route_deadline: bool,
}

impl Run<'_> {
    /// Every call, each as soon as the calls it needs have answered. A
    /// required failure returns at once, dropping (cancelling) the rest.
    async fn all(&self) -> Result<Vec<Outcome>, GatewayError> {
        let calls = &self.plan.calls;
        let mut outcomes: Vec<Outcome> = calls.iter().map(|_| Outcome::Pending).collect();
        let mut started = vec![false; calls.len()];
        let mut running = FuturesUnordered::new();
        loop {
            // Start what can start; a call whose input failed is settled
            // at once, which may settle others: go round until nothing moves.
            let mut moved = true;
            while moved {
                moved = false;
                for (i, call) in calls.iter().enumerate() {
                    if started[i] || call.needs.iter().any(|&n| matches!(outcomes[n], Outcome::Pending) || !started[n])
                    {
                        continue;
                    }
                    started[i] = true;
                    moved = true;
                    if let Some(&failed) = call.needs.iter().find(|&&n| matches!(outcomes[n], Outcome::Failed(_))) {
                        if call.optional {
                            self.count(call, CallOutcome::Skipped);
                            outcomes[i] = Outcome::Failed(skipped(call, &calls[failed]));
                            continue;
                        }
                        // A required call that cannot run fails the route
                        // with the status that stopped it.
                        if let Outcome::Failed(err) = &outcomes[failed] {
                            self.count(call, CallOutcome::Skipped);
                            return Err(err.clone());
                        }
                    }
                    match self.requests(call, &outcomes) {
                        Ok(requests) => running.push(self.invoke(i, call, requests)),
                        // What the client sent is wrong: a 400, even for an
                        // optional call.
                        Err(err) if call.optional && err.fault != Fault::Client => {
                            self.count(call, CallOutcome::Error);
                            outcomes[i] = Outcome::Failed(err);
                        }
                        Err(err) => {
                            self.count(call, CallOutcome::Error);
                            return Err(err);
                        }
                    }
                }
            }
            let Some(Ended { index: i, outcome, route_deadline }) = running.next().await else { break };
            self.count(&calls[i], if outcome.is_ok() { CallOutcome::Ok } else { CallOutcome::Error });
            outcomes[i] = match outcome {
                Ok(outcome) => outcome,
                Err(_) if route_deadline => return Err(self.deadline_exceeded()),
                Err(err) if calls[i].optional => Outcome::Failed(err),
                Err(err) => return Err(err),
            };
        }
        Ok(outcomes)
    }

    fn count(&self, call: &CallPlan, outcome: CallOutcome) {
        self.metrics.composition_call(&self.plan.name, &call.name, outcome);
    }

    /// The route's deadline has passed.
    fn deadline_exceeded(&self) -> GatewayError {
        GatewayError::new(
            Code::DeadlineExceeded,
            Fault::Upstream,
            format!("composition {}: deadline of {} ms exceeded", self.plan.name, self.timeout.as_millis()),
        )
    }

    /// The call's request messages: one, or one per `for_each` element.
    fn requests(&self, call: &CallPlan, outcomes: &[Outcome]) -> Result<Vec<DynamicMessage>, GatewayError> {
        let Some(list) = &call.for_each else {
            return Ok(vec![self.request(call, outcomes, None)?]);
        };
        let items = match self.value(list, outcomes, None)? {
            Some(Value::List(items)) => items,
            Some(_) | None => Vec::new(),
        };
        items.iter().map(|item| self.request(call, outcomes, Some(item))).collect()
    }

    fn request(
        &self,
        call: &CallPlan,
        outcomes: &[Outcome],
        item: Option<&Value>,
    ) -> Result<DynamicMessage, GatewayError> {
        let mut message = call.base.clone();
        for set in &call.sets {
            self.set(&mut message, set, outcomes, item).map_err(|problem| {
                let err = format!("call {}: request.{}: {problem}", call.name, set.key);
                match from_client(&set.value) {
                    true => GatewayError::bad_field(&set.key, err),
                    false => GatewayError::new(Code::Internal, Fault::Upstream, err),
                }
            })?;
        }
        Ok(message)
    }

    fn set(
        &self,
        message: &mut DynamicMessage,
        set: &SetField,
        outcomes: &[Outcome],
        item: Option<&Value>,
    ) -> Result<(), String> {
        let value = match &set.value {
            Input::Body(path) => {
                let Some(json) = json_at(self.inputs.body.as_ref(), path) else { return Ok(()) };
                return set_json(message, set, json);
            }
            Input::Path(_) | Input::Query(_) | Input::Text(_) => {
                let Some(text) = self.text(&set.value, outcomes, item)? else { return Ok(()) };
                set.conversion.apply_text(&text)?
            }
            input => match self.value(input, outcomes, item).map_err(|e| e.message)? {
                // A repeated field: the conversion planned for its element
                // type applies to each element.
                Some(Value::List(items)) => {
                    Value::List(items.into_iter().map(|item| set.conversion.apply(item)).collect::<Result<_, _>>()?)
                }
                Some(value) => set.conversion.apply(value)?,
                None => return Ok(()),
            },
        };
        set.target.set(message, value)
    }

    /// A proto value from an earlier answer or the current item.
    fn value(&self, input: &Input, outcomes: &[Outcome], item: Option<&Value>) -> Result<Option<Value>, GatewayError> {
        Ok(match input {
            Input::Call { call, path } => match &outcomes[*call] {
                Outcome::One(answer) => Some(path.get(answer)),
                Outcome::Many(answers) => Some(Value::List(answers.iter().cloned().map(Value::Message).collect())),
                Outcome::Pending | Outcome::Failed(_) => None,
            },
            Input::Item(path) => match (item, path.leaf()) {
                (Some(item), None) => Some(item.clone()),
                (Some(Value::Message(element)), Some(_)) => Some(path.get(element)),
                _ => None,
            },
            _ => None,
        })
    }

    /// Text from the request, or interpolated (`None`: a query parameter
    /// that was not sent).
    fn text(&self, input: &Input, outcomes: &[Outcome], item: Option<&Value>) -> Result<Option<String>, String> {
        Ok(match input {
            Input::Path(i) => self.inputs.captures.get(*i).cloned(),
            Input::Query(name) => self.inputs.query.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()),
            Input::Body(path) => json_at(self.inputs.body.as_ref(), path).map(|json| match json {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
            Input::Text(parts) => {
                let mut text = String::new();
                for part in parts {
                    match part {
                        TextPart::Literal(literal) => text.push_str(literal),
                        TextPart::Value(input) => {
                            let piece = match input {
                                Input::Call { .. } | Input::Item(_) => self
                                    .value(input, outcomes, item)
                                    .map_err(|e| e.message)?
                                    .map(|v| text_at(input, &v)),
                                input => self.text(input, outcomes, item)?,
                            };
                            text.push_str(&piece.unwrap_or_default());
                        }
                    }
                }
                Some(text)
            }
            Input::Call { .. } | Input::Item(_) => {
                self.value(input, outcomes, item).map_err(|e| e.message)?.map(|v| text_at(input, &v))
            }
        })
    }

    /// One call: its request(s) to the backend, within its own timeout and
    /// what is left of the route's.
    async fn invoke(&self, index: usize, call: &CallPlan, requests: Vec<DynamicMessage>) -> Ended {
        let left = self.deadline.saturating_duration_since(Instant::now());
        // When the route's time is the shorter, a call that runs out of it
        // ends the route: which of the two timers fires first must not
        // decide between a 504 and a partial answer.
        let route_bound = call.timeout.is_none_or(|t| t >= left);
        let timeout = call.timeout.map_or(left, |t| t.min(left)).max(Duration::from_millis(1));
        let one = |message: DynamicMessage| async move {
            let started = std::time::Instant::now();
            // One request, several calls: each its own span id.
            let metadata = with_own_span_id(self.metadata.clone());
            let reply =
                call.upstream.unary(call.grpc_path.clone(), Outgoing::Message(message), metadata, timeout).await;
            let code = reply.as_ref().map_or_else(|err| err.code, |_| Code::Ok);
            self.metrics.upstream_call(&call.upstream.label, &call.label, &call.series, code, started.elapsed());
            let reply = reply?;
            let message = reply.message.ok_or_else(|| {
                GatewayError::new(
                    Code::Internal,
                    Fault::Upstream,
                    format!("call {}: the backend answered no message", call.name),
                )
            })?;
            // Compositions read fields of the answers: decoded here.
            crate::transcode::response::decode(call.codec.output(), message)
        };
        let outcome = match call.for_each {
            None => match requests.into_iter().next() {
                Some(message) => one(message).await.map(Outcome::One),
                None => Err(GatewayError::internal("a call without its request")),
            },
            // At most `max_concurrency` at once, the next started as soon
            // as any ends (not only the oldest), the answers put back in
            // the list's order; the first failure fails the call and drops
            // the rest.
            Some(_) => {
                let mut answers: Vec<Option<DynamicMessage>> = vec![None; requests.len()];
                let mut calls = futures_util::stream::iter(requests.into_iter().enumerate())
                    .map(|(i, message)| {
                        let one = &one;
                        async move { (i, one(message).await) }
                    })
                    .buffer_unordered(call.max_concurrency.max(1));
                let mut failed = None;
                while let Some((i, answer)) = calls.next().await {
                    match answer {
                        Ok(answer) => answers[i] = Some(answer),
                        Err(err) => {
                            failed = Some(err);
                            break;
                        }
                    }
                }
                match failed {
                    Some(err) => Err(err),
                    None => Ok(Outcome::Many(answers.into_iter().flatten().collect())),
                }
            }
        };
        // (A DEADLINE_EXCEEDED the backend answers before then is its own.)
        let route_deadline = route_bound
            && Instant::now() >= self.deadline
            && matches!(&outcome, Err(err) if err.code == Code::DeadlineExceeded);
        Ended { index, outcome, route_deadline }
    }
}

/// A proto value as interpolated text: an enum by its name, as the JSON
/// mapping writes it.
fn text_at(input: &Input, value: &Value) -> String {
    let path = match input {
        Input::Call { path, .. } | Input::Item(path) => path,
        _ => return text_of(value),
    };
    match (path.leaf().map(|f| f.kind()), value) {
        (Some(Kind::Enum(e)), Value::EnumNumber(n)) => {
            e.get_value(*n).map_or_else(|| n.to_string(), |v| v.name().to_owned())
        }
        _ => text_of(value),
    }
}

/// Whether a value comes from what the client sent (a bad one is a 400).
fn from_client(input: &Input) -> bool {
    match input {
        Input::Path(_) | Input::Query(_) | Input::Body(_) => true,
        Input::Text(parts) => parts.iter().any(|p| matches!(p, TextPart::Value(i) if from_client(i))),
        Input::Call { .. } | Input::Item(_) => false,
    }
}

/// The Status of an optional call that could not run.
fn skipped(call: &CallPlan, failed: &CallPlan) -> GatewayError {
    GatewayError::new(
        Code::FailedPrecondition,
        Fault::Upstream,
        format!("call {} was not made: it needs {}, which failed", call.name, failed.name),
    )
}

/// The JSON at `path` in the body.
fn json_at<'a>(body: Option<&'a serde_json::Value>, path: &[String]) -> Option<&'a serde_json::Value> {
    path.iter().try_fold(body?, |json, key| json.get(key))
}

/// A body value into a field, read with the field's JSON mapping.
fn set_json(message: &mut DynamicMessage, set: &SetField, json: &serde_json::Value) -> Result<(), String> {
    let Some(leaf) = set.target.leaf() else { return Err("no field".into()) };
    let parent = leaf.parent_message().clone();
    let wrapped = serde_json::json!({ leaf.json_name(): json });
    let read = DynamicMessage::deserialize(parent, wrapped).map_err(|e| e.to_string())?;
    set.target.set(message, read.get_field(leaf).into_owned())
}

/// `a=1&b=x+y` as decoded pairs.
fn parse_query(query: &str) -> Result<Vec<(String, String)>, GatewayError> {
    let mut pairs = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode =
            |text| decode_component(text).map(|t| t.into_owned()).map_err(|e| GatewayError::bad_field(name, e));
        pairs.push((decode(name)?, decode(value)?));
    }
    Ok(pairs)
}

/// The composition's answer, written by one serializer (so `json.pretty`
/// holds for the whole object).
struct Answer<'a> {
    plan: &'a CompositionPlan,
    outcomes: &'a [Outcome],
    errors: &'a [(&'a str, Box<serde_json::value::RawValue>)],
    settings: &'a JsonSettings,
}

impl Serialize for Answer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (key, part) in &self.plan.answer {
            match part {
                AnswerPart::Literal(value) => map.serialize_entry(key, value)?,
                AnswerPart::Call { call, path } => match (&self.outcomes[*call], path.leaf()) {
                    (Outcome::One(answer), None) => map.serialize_entry(key, &MessageJson(answer, self.settings))?,
                    (Outcome::One(answer), Some(field)) => {
                        let value = path.get(answer);
                        let kind = field.kind();
                        map.serialize_entry(key, &FieldJson { value: &value, kind: &kind, settings: self.settings })?
                    }
                    (Outcome::Many(answers), _) => map.serialize_entry(key, &Messages(answers, self.settings))?,
                    (Outcome::Pending | Outcome::Failed(_), _) => {}
                },
            }
        }
        if !self.errors.is_empty() {
            map.serialize_entry("errors", &Errors(self.errors))?;
        }
        map.end()
    }
}

struct MessageJson<'a>(&'a DynamicMessage, &'a JsonSettings);

impl Serialize for MessageJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_with_options(s, &self.1.serialize)
    }
}

struct Messages<'a>(&'a [DynamicMessage], &'a JsonSettings);

impl Serialize for Messages<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for message in self.0 {
            seq.serialize_element(&MessageJson(message, self.1))?;
        }
        seq.end()
    }
}

struct Errors<'a>(&'a [(&'a str, Box<serde_json::value::RawValue>)]);

impl Serialize for Errors<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, status) in self.0 {
            map.serialize_entry(name, status)?;
        }
        map.end()
    }
}
