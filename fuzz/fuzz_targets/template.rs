//! Path templates: the parser, the route table's matcher and the
//! percent-decoding of captured values.
//!
//! Input: `[flags] template \n value \n value …`. A template that parses
//! must print back to itself, mount under a prefix once, and match the
//! paths built from it: its literals (plain or percent-encoded), the values
//! filled into its wildcards (percent-encoded), its verb. The captures must
//! come back as the values, decoded as http.proto says. Every line is also
//! matched as a raw path, which must not panic and must capture one value
//! per variable.

#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS, NON_ALPHANUMERIC};
use protogate::routing::{Match, PathTemplate, RouteTableBuilder, Segment};

/// The least a client must encode in a segment: separators, `%` itself,
/// and what cannot appear in a URI path.
const MINIMAL: &AsciiSet = &CONTROLS.add(b'/').add(b'%').add(b':').add(b'?').add(b'#').add(b' ');

fuzz_target!(|data: &[u8]| {
    let [flags, rest @ ..] = data else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let mut lines = text.split('\n');
    let source = lines.next().unwrap_or_default();
    let values: Vec<&str> = lines.collect();

    let template = match PathTemplate::parse(source) {
        Ok(template) => template,
        Err(err) => {
            assert_eq!(err.template, source);
            assert!(!err.reason.is_empty());
            return;
        }
    };
    check_shape(&template);

    let printed = template.to_string();
    let reparsed = PathTemplate::parse(&printed).unwrap_or_else(|e| panic!("{printed:?} does not parse again: {e}"));
    assert_eq!(reparsed, template, "{source:?} printed as {printed:?}");

    let prefixed = template.with_prefix("/v2");
    assert_eq!(prefixed.with_prefix("/v2"), prefixed, "a prefix is added once");
    assert_eq!(PathTemplate::parse(&prefixed.to_string()).ok().as_ref(), Some(&prefixed));

    let mut builder = RouteTableBuilder::new();
    assert!(builder.insert(Method::GET, template.clone(), ()).is_ok(), "one route cannot collide");
    let table = builder.build();

    // A template of literals only is its own path.
    if template.variables.is_empty() && !template.segments.iter().any(|s| matches!(s, Segment::Single | Segment::Multi))
    {
        assert_eq!(table.find(&Method::GET, source), Match::Found { value: &(), captures: Vec::new() }, "{source}");
    }

    let (path, expected) = fill(&template, &values, *flags);
    match table.find(&Method::GET, &path) {
        Match::Found { captures, .. } => assert_eq!(captures, expected, "{source:?} matched by {path:?}"),
        other => panic!("{source:?} does not match its own path {path:?}: {other:?}"),
    }
    assert_eq!(
        table.find(&Method::POST, &path),
        Match::MethodNotAllowed { allow: vec![Method::GET] },
        "{source:?} for POST {path:?}"
    );

    for raw in &values {
        match table.find(&Method::GET, raw) {
            Match::Found { captures, .. } => assert_eq!(captures.len(), template.variables.len(), "{raw:?}"),
            Match::Invalid { reason } => assert!(!reason.is_empty()),
            Match::NotFound => {}
            Match::MethodNotAllowed { allow } => panic!("one GET route, yet {raw:?} allows {allow:?}"),
        }
    }
});

/// What [`PathTemplate`] documents about itself.
fn check_shape(template: &PathTemplate) {
    let segments = &template.segments;
    if let Some(multi) = segments.iter().position(|s| *s == Segment::Multi) {
        assert_eq!(multi, segments.len() - 1, "`**` is the last segment");
    }
    let mut last_end = 0;
    for variable in &template.variables {
        assert!(variable.start >= last_end && variable.start < variable.end && variable.end <= segments.len());
        assert!(!variable.field_path.is_empty());
        last_end = variable.end;
    }
    for segment in segments {
        if let Segment::Literal(text) = segment {
            assert!(!text.is_empty() && !text.contains('/'));
        }
    }
}

/// A request path for `template` and the captures it must yield.
fn fill(template: &PathTemplate, values: &[&str], flags: u8) -> (String, Vec<String>) {
    let set = if flags & 1 == 0 { MINIMAL } else { NON_ALPHANUMERIC };
    let encode_literals = flags & 2 != 0;
    let multi_count = usize::from(flags >> 2) % 4;
    let mut next_value = values.iter().copied().filter(|v| !v.is_empty()).cycle();
    let mut value = || next_value.next().unwrap_or("x");

    // Each template segment's raw text in the path, and its decoded value
    // (for `**`, the decoded values of the segments it stands for).
    let mut raw: Vec<Vec<String>> = Vec::new();
    let mut decoded: Vec<Vec<String>> = Vec::new();
    for segment in &template.segments {
        match segment {
            Segment::Literal(text) => {
                let text = if encode_literals {
                    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
                } else {
                    text.clone()
                };
                raw.push(vec![text]);
                decoded.push(Vec::new());
            }
            Segment::Single => {
                let v = value();
                raw.push(vec![utf8_percent_encode(v, set).to_string()]);
                decoded.push(vec![v.to_owned()]);
            }
            Segment::Multi => {
                let vs: Vec<&str> = (0..multi_count).map(|_| value()).collect();
                raw.push(vs.iter().map(|v| utf8_percent_encode(v, set).to_string()).collect());
                decoded.push(vs.iter().map(|v| (*v).to_owned()).collect());
            }
        }
    }
    let mut path = String::from("/");
    path.push_str(&raw.iter().flatten().cloned().collect::<Vec<_>>().join("/"));
    if let Some(verb) = &template.verb {
        path.push(':');
        path.push_str(&utf8_percent_encode(verb, set).to_string());
    }

    let expected = template
        .variables
        .iter()
        .map(|v| {
            // One segment is fully decoded; several keep `%2F` (http.proto).
            let single = template.is_single_segment(v);
            let mut parts = Vec::new();
            for (segment, values) in template.segments[v.start..v.end].iter().zip(&decoded[v.start..v.end]) {
                match segment {
                    Segment::Literal(text) => parts.push(text.clone()),
                    _ if single => parts.extend(values.iter().cloned()),
                    _ => parts.extend(values.iter().map(|v| v.replace('/', "%2F"))),
                }
            }
            parts.join("/")
        })
        .collect();
    (path, expected)
}
