//! The route table: every binding of a catalog snapshot, organised so that a
//! request finds its route by walking its own path segments, whatever the
//! number of routes.
//!
//! One trie per HTTP method: literal children in a hash map, one `*` child,
//! and at each node the routes that end there or end there with `**`, keyed
//! by verb. Two routes that would land in the same slot have the same shape
//! and are rejected as a collision when the table is built.

use super::percent;
use super::template::{PathTemplate, Segment};
use http::Method;
use std::collections::HashMap;

pub struct RouteTableBuilder<T> {
    routes: Routes<T>,
}

pub struct RouteTable<T> {
    routes: Routes<T>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Match<'a, T> {
    /// `captures` are in the template's variable order, percent-decoded.
    Found {
        value: &'a T,
        captures: Vec<String>,
    },
    /// The path matches only routes of other methods (sorted, deduplicated).
    MethodNotAllowed {
        allow: Vec<Method>,
    },
    NotFound,
    /// A route matched, but a captured value is not UTF-8 once decoded.
    Invalid {
        reason: String,
    },
}

/// Two routes with the same HTTP method and the same template shape.
#[derive(Debug)]
pub struct Collision<'a, T> {
    pub existing: &'a T,
}

struct Routes<T> {
    /// Few methods per table: a scan is cheaper than hashing a `Method`.
    tries: Vec<(Method, Node)>,
    entries: Vec<Entry<T>>,
}

struct Entry<T> {
    value: T,
    captures: Box<[Capture]>,
}

/// Where a variable's value lies in the request path, worked out at build
/// time from the template alone.
struct Capture {
    field_path: Box<str>,
    first: usize,
    /// One past the last request segment; `None` runs to the end of the path
    /// (the variable ends with the template's `**`).
    end: Option<usize>,
    single_segment: bool,
}

#[derive(Default)]
struct Node {
    /// Hashed by foldhash, not SipHash: the keys come from the
    /// descriptors, not from clients, and every request looks up one per
    /// segment.
    literals: HashMap<Box<str>, Node, foldhash::fast::RandomState>,
    single: Option<Box<Node>>,
    /// Routes whose template ends at this node.
    end: Ends,
    /// Routes whose template ends with `**` right after this node.
    rest: Ends,
}

/// Route ids by verb.
#[derive(Default)]
struct Ends {
    plain: Option<usize>,
    verbs: HashMap<Box<str>, usize>,
}

impl Ends {
    fn get(&self, verb: Option<&str>) -> Option<usize> {
        match verb {
            None => self.plain,
            Some(verb) => self.verbs.get(verb).copied(),
        }
    }

    /// Takes the slot for `verb`, or names the route already holding it.
    fn claim(&mut self, verb: Option<&str>, id: usize) -> Result<(), usize> {
        let holder = match verb {
            None => *self.plain.get_or_insert(id),
            Some(verb) => *self.verbs.entry(verb.into()).or_insert(id),
        };
        if holder == id {
            Ok(())
        } else {
            Err(holder)
        }
    }
}

impl<T> Default for RouteTableBuilder<T> {
    fn default() -> Self {
        Self { routes: Routes { tries: Vec::new(), entries: Vec::new() } }
    }
}

impl<T> RouteTableBuilder<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Collision = same HTTP method and same template shape (segments with
    /// variables erased, plus the verb): `/v1/{a}`, `/v1/{b}` and `/v1/*`
    /// all collide.
    ///
    /// `template` must keep `**` last, as [`PathTemplate::parse`] ensures;
    /// segments after a `**` are ignored.
    pub fn insert(&mut self, method: Method, template: PathTemplate, value: T) -> Result<(), Collision<'_, T>> {
        let routes = &mut self.routes;
        let id = routes.entries.len();
        let trie = match routes.tries.iter().position(|(m, _)| *m == method) {
            Some(at) => &mut routes.tries[at].1,
            None => {
                routes.tries.push((method, Node::default()));
                let last = routes.tries.len() - 1;
                &mut routes.tries[last].1
            }
        };
        let multi_at = template.segments.iter().position(|s| *s == Segment::Multi);
        let mut node = trie;
        for segment in &template.segments[..multi_at.unwrap_or(template.segments.len())] {
            node = match segment {
                Segment::Literal(text) => node.literals.entry(text.as_str().into()).or_default(),
                Segment::Single | Segment::Multi => node.single.get_or_insert_with(Box::default),
            };
        }
        let ends = if multi_at.is_some() { &mut node.rest } else { &mut node.end };
        if let Err(existing) = ends.claim(template.verb.as_deref(), id) {
            return Err(Collision { existing: &routes.entries[existing].value });
        }
        let captures = template
            .variables
            .iter()
            .map(|v| Capture {
                field_path: v.field_path.join(".").into(),
                first: v.start,
                end: match multi_at {
                    Some(multi) if v.end > multi => None,
                    _ => Some(v.end),
                },
                single_segment: template.is_single_segment(v),
            })
            .collect();
        routes.entries.push(Entry { value, captures });
        Ok(())
    }

    pub fn build(self) -> RouteTable<T> {
        RouteTable { routes: self.routes }
    }
}

impl<T> RouteTable<T> {
    /// `path` is the raw, still percent-encoded URI path (no query).
    ///
    /// The verb split is tried first across the whole table: when a route
    /// of any method takes the path's `:verb`, the path is that route's,
    /// and another method gets 405 with its `Allow` rather than the
    /// verb-less route of its own method with the verb glued to a value
    /// (as Envoy's transcoder, and as the OpenAPI document, which lists
    /// `/v1/users/{id}:deactivate` as a path of its own). Only when no
    /// route takes the verb does the whole last segment count.
    pub fn find(&self, method: &Method, path: &str) -> Match<'_, T> {
        let Some(body) = path.strip_prefix('/') else {
            return Match::NotFound;
        };
        let tries = &self.routes.tries;
        let own = tries.iter().find(|(m, _)| m == method).map(|(_, trie)| trie);
        if let Some((head, verb)) = split_verb(body) {
            if let Some(id) = own.and_then(|trie| lookup_verb(trie, head, verb)) {
                return self.found(id, head);
            }
            let allow = allowed(tries, method, |trie| lookup_verb(trie, head, verb).is_some());
            if !allow.is_empty() {
                return Match::MethodNotAllowed { allow };
            }
        }
        if let Some(id) = own.and_then(|trie| lookup_plain(trie, body)) {
            return self.found(id, body);
        }
        let allow = allowed(tries, method, |trie| lookup_plain(trie, body).is_some());
        if allow.is_empty() {
            return Match::NotFound;
        }
        Match::MethodNotAllowed { allow }
    }

    pub fn len(&self) -> usize {
        self.routes.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.entries.is_empty()
    }

    /// `body` is the matched path without its leading `/` and verb.
    fn found(&self, id: usize, body: &str) -> Match<'_, T> {
        let entry = &self.routes.entries[id];
        let mut captures = Vec::with_capacity(entry.captures.len());
        for capture in &entry.captures {
            let raw = span(body, capture.first, capture.end);
            let decoded =
                if capture.single_segment { percent::decode(raw) } else { percent::decode_keeping_slashes(raw) };
            match decoded {
                Ok(value) => captures.push(value),
                Err(_) => {
                    return Match::Invalid {
                        reason: format!(
                            "path variable `{}` is not valid UTF-8 after percent-decoding",
                            capture.field_path
                        ),
                    }
                }
            }
        }
        Match::Found { value: &entry.value, captures }
    }
}

/// The methods other than `method` whose trie `matches`, sorted.
fn allowed(tries: &[(Method, Node)], method: &Method, matches: impl Fn(&Node) -> bool) -> Vec<Method> {
    let mut allow: Vec<Method> =
        tries.iter().filter(|(m, trie)| m != method && matches(trie)).map(|(m, _)| m.clone()).collect();
    allow.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    allow.dedup();
    allow
}

/// `body` (the path after its leading `/`) split at the last `:` of its
/// last segment into the path and the still percent-encoded verb.
fn split_verb(body: &str) -> Option<(&str, &str)> {
    let last_segment = body.rfind('/').map_or(0, |slash| slash + 1);
    let colon = body[last_segment..].rfind(':')?;
    Some((&body[..last_segment + colon], &body[last_segment + colon + 1..]))
}

/// The route of `trie` for the path `head` with `verb`.
fn lookup_verb(trie: &Node, head: &str, verb: &str) -> Option<usize> {
    let path = Cursor::new(head);
    percent::with_decoded(verb, |verb| verb.and_then(|verb| search(trie, &path, path.start(), Some(verb))))
}

/// The route of `trie` for `body` as a whole, a `:` in its last segment
/// included, so that `/v1/foo:bar` can still reach `/v1/{name}`.
fn lookup_plain(trie: &Node, body: &str) -> Option<usize> {
    let path = Cursor::new(body);
    search(trie, &path, path.start(), None)
}

/// Depth-first, literal before `*` before `**`; the first complete match wins.
/// Depth is bounded by the longest template, not by the request.
fn search(node: &Node, path: &Cursor<'_>, at: usize, verb: Option<&str>) -> Option<usize> {
    match path.segment(at) {
        // `*` and literals never match an empty segment.
        Some((segment, next)) if !segment.is_empty() => {
            if !node.literals.is_empty() {
                let child = percent::with_decoded(segment, |text| text.and_then(|text| node.literals.get(text)));
                if let Some(id) = child.and_then(|child| search(child, path, next, verb)) {
                    return Some(id);
                }
            }
            if let Some(id) = node.single.as_deref().and_then(|child| search(child, path, next, verb)) {
                return Some(id);
            }
        }
        Some(_) => {}
        None => {
            if let Some(id) = node.end.get(verb) {
                return Some(id);
            }
        }
    }
    if path.no_empty_segment_from(at) {
        node.rest.get(verb)
    } else {
        None
    }
}

/// A request path (without its leading `/`) walked by byte offsets, so that
/// backtracking needs no segment list.
struct Cursor<'p> {
    body: &'p str,
    /// Offset of the last empty segment, which `**` must not swallow.
    last_empty: Option<usize>,
}

impl<'p> Cursor<'p> {
    fn new(body: &'p str) -> Self {
        let mut last_empty = None;
        if !body.is_empty() {
            let mut offset = 0;
            for segment in body.split('/') {
                if segment.is_empty() {
                    last_empty = Some(offset);
                }
                offset += segment.len() + 1;
            }
        }
        Self { body, last_empty }
    }

    /// Offset of the first segment; `/` alone has no segments at all.
    fn start(&self) -> usize {
        usize::from(self.body.is_empty())
    }

    /// The segment at `at` and the offset of the next one; `None` past the end.
    fn segment(&self, at: usize) -> Option<(&'p str, usize)> {
        let rest = self.body.get(at..)?;
        let len = rest.find('/').unwrap_or(rest.len());
        Some((&rest[..len], at + len + 1))
    }

    fn no_empty_segment_from(&self, at: usize) -> bool {
        self.last_empty.is_none_or(|empty| empty < at)
    }
}

/// Raw text of the request segments `[first, end)` (`None`: through the
/// last one), separators included.
fn span(body: &str, first: usize, end: Option<usize>) -> &str {
    let (mut start, mut stop) = (body.len(), body.len());
    let mut offset = 0;
    for (index, segment) in body.split('/').enumerate() {
        if index == first {
            start = offset;
        }
        if end == Some(index + 1) {
            stop = offset + segment.len();
            break;
        }
        offset += segment.len() + 1;
    }
    &body[start.min(stop)..stop]
}

#[cfg(test)]
mod tests;
