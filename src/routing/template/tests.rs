use super::*;
use proptest::prelude::*;

fn lit(text: &str) -> Segment {
    Segment::Literal(text.into())
}

fn var(path: &str, start: usize, end: usize) -> Variable {
    Variable { field_path: path.split('.').map(str::to_owned).collect(), start, end }
}

fn parse_ok(text: &str) -> PathTemplate {
    match PathTemplate::parse(text) {
        Ok(t) => t,
        Err(e) => panic!("{text} should parse: {e}"),
    }
}

fn reason(text: &str) -> String {
    match PathTemplate::parse(text) {
        Ok(t) => panic!("{text} should be rejected, got {t:?}"),
        Err(e) => {
            assert_eq!(e.template, text);
            e.reason
        }
    }
}

#[test]
fn literals_and_wildcards() {
    let t = parse_ok("/v1/shelves/*/books/**");
    assert_eq!(t.segments, vec![lit("v1"), lit("shelves"), Segment::Single, lit("books"), Segment::Multi]);
    assert!(t.variables.is_empty());
    assert_eq!(t.verb, None);
}

#[test]
fn short_variable_is_a_single_wildcard() {
    let t = parse_ok("/v1/users/{id}");
    assert_eq!(t.segments, vec![lit("v1"), lit("users"), Segment::Single]);
    assert_eq!(t.variables, vec![var("id", 2, 3)]);
    assert_eq!(t, parse_ok("/v1/users/{id=*}"));
}

#[test]
fn variable_with_segments_and_field_path() {
    let t = parse_ok("/v1/{book.name=shelves/*/books/**}");
    assert_eq!(t.segments, vec![lit("v1"), lit("shelves"), Segment::Single, lit("books"), Segment::Multi]);
    assert_eq!(t.variables, vec![var("book.name", 1, 5)]);
    assert!(!t.is_single_segment(&t.variables[0]));
    assert!(t.ends_with_multi());
}

#[test]
fn several_variables_and_a_verb() {
    let t = parse_ok("/v1/{parent=projects/*}/items/{item_id}:batchGet");
    assert_eq!(t.variables, vec![var("parent", 1, 3), var("item_id", 4, 5)]);
    assert_eq!(t.verb.as_deref(), Some("batchGet"));
    assert!(t.is_single_segment(&t.variables[1]));
}

#[test]
fn one_segment_patterns_are_single_segment_variables() {
    for (text, single) in
        [("/{a}", true), ("/{a=*}", true), ("/{a=lit}", true), ("/{a=**}", false), ("/{a=x/*}", false)]
    {
        let t = parse_ok(text);
        assert_eq!(t.is_single_segment(&t.variables[0]), single, "{text}");
    }
}

#[test]
fn root_template_has_no_segments() {
    let t = parse_ok("/");
    assert!(t.segments.is_empty() && t.variables.is_empty() && t.verb.is_none());
    assert_eq!(t.to_string(), "/");
}

#[test]
fn multi_may_be_alone_or_followed_by_a_verb() {
    assert_eq!(parse_ok("/**").segments, vec![Segment::Multi]);
    let t = parse_ok("/files/{path=**}:download");
    assert_eq!(t.verb.as_deref(), Some("download"));
    assert_eq!(t.variables, vec![var("path", 1, 2)]);
}

#[test]
fn literal_characters_beyond_alphanumerics_are_allowed() {
    let t = parse_ok("/v1beta1/a-b_c.d~e/é");
    assert_eq!(t.segments, vec![lit("v1beta1"), lit("a-b_c.d~e"), lit("é")]);
}

#[test]
fn rejections() {
    let cases = [
        ("v1/users", "start with"),
        ("", "start with"),
        ("/v1//users", "empty segment"),
        ("/v1/users/", "empty segment"),
        ("/v1/**/users", "last segment"),
        ("/v1/{name=**}/users", "last segment"),
        ("/**/**", "last segment"),
        ("/v1/{a={b}}", "nested"),
        ("/v1/{a=x/{b}}", "nested"),
        ("/v1/{name", "unclosed"),
        ("/v1/{name=x/*", "unclosed"),
        ("/v1/{1abc}", "field path"),
        ("/v1/{a..b}", "field path"),
        ("/v1/{a-b}", "field path"),
        ("/v1/{a.}", "field path"),
        ("/v1/{a}/{a}", "twice"),
        ("/v1/{a.b}/x/{a.b=*}", "twice"),
        ("/v1/x:", "empty verb"),
        ("/v1/{}", "without a field path"),
        ("/v1/{=x}", "without a field path"),
        ("/v1/{a=}", "empty segment"),
        ("/v1/{a=x//y}", "empty segment"),
        ("/v1/x{a}", "whole segment"),
        ("/v1/{a}x", "whole segment"),
        ("/v1/x}", "without `{`"),
        ("/v1/a:b/c", "invalid character"),
        ("/v1/a b", "invalid character"),
        ("/v1/a*", "invalid character"),
        ("/v1/a%20", "invalid character"),
        ("/v1/{a=b=c}", "invalid character"),
        ("/v1/x:a b", "invalid character"),
        ("/:verb", "empty segment"),
        ("//", "empty segment"),
    ];
    for (text, expected) in cases {
        let reason = reason(text);
        assert!(reason.contains(expected), "{text}: reason {reason:?} lacks {expected:?}");
    }
}

#[test]
fn error_display_names_template_and_reason() {
    let message = PathTemplate::parse("/v1//x").expect_err("rejected").to_string();
    assert!(message.contains("/v1//x") && message.contains("empty segment"), "{message}");
}

#[test]
fn display_is_canonical() {
    for (input, canonical) in [
        ("/v1/{name=shelves/*}:cancel", "/v1/{name=shelves/*}:cancel"),
        ("/v1/users/{id}", "/v1/users/{id}"),
        ("/v1/users/{id=*}", "/v1/users/{id}"),
        ("/v1/{a.b.c=x}/*/**", "/v1/{a.b.c=x}/*/**"),
        ("/{path=**}", "/{path=**}"),
        ("/v1/{p=a/*}/{q}/**:v", "/v1/{p=a/*}/{q}/**:v"),
    ] {
        let t = parse_ok(input);
        assert_eq!(t.to_string(), canonical);
        assert_eq!(parse_ok(canonical), t);
    }
}

#[test]
fn with_prefix_prepends_literals_and_shifts_variables() {
    let t = parse_ok("/users/{id}:get").with_prefix("/v2");
    assert_eq!(t, parse_ok("/v2/users/{id}:get"));
    let t = parse_ok("/{name=things/*}").with_prefix("/api/v1beta1/");
    assert_eq!(t.variables, vec![var("name", 2, 4)]);
    assert_eq!(t.to_string(), "/api/v1beta1/{name=things/*}");
}

#[test]
fn with_prefix_never_prefixes_twice() {
    let t = parse_ok("/v2/users/{id}");
    assert_eq!(t.with_prefix("/v2"), t);
    assert_eq!(t.with_prefix("/v2").with_prefix("/v2"), t);
    // Only a whole-segment match counts as already prefixed.
    assert_eq!(parse_ok("/v22/x").with_prefix("/v2").to_string(), "/v2/v22/x");
    assert_eq!(parse_ok("/{v=v2}").with_prefix("/v2").to_string(), "/{v=v2}");
    assert_eq!(parse_ok("/x").with_prefix(""), parse_ok("/x"));
    assert_eq!(parse_ok("/").with_prefix("/v2"), parse_ok("/v2"));
}

#[test]
fn parse_rejects_without_panicking_on_odd_input() {
    for text in ["/{", "/}", "/{}}", "/:", "/::", "/{a}:", "/a:b:c", "/é:", "/{a=**}:x:y"] {
        let _ = PathTemplate::parse(text);
    }
}

/// A random valid template, built as a value so the text is derived from it.
pub(crate) fn arb_template() -> impl Strategy<Value = PathTemplate> {
    let literal = "[a-z0-9._~-]{1,6}|é[a-z]{0,2}";
    let ident = "[A-Za-z_][A-Za-z0-9_]{0,4}";
    let bare = prop_oneof![literal.prop_map(Segment::Literal), Just(Segment::Single)];
    let pattern = prop::collection::vec(bare.clone(), 1..3);
    let part = prop_oneof![
        bare.prop_map(|s| (None, vec![s])),
        (prop::collection::vec(ident, 1..3), pattern).prop_map(|(path, segs)| (Some(path), segs)),
        prop::collection::vec(ident, 1..3).prop_map(|path| (Some(path), vec![Segment::Single])),
    ];
    // The tail: nothing, bare `**`, or a variable ending in `**`.
    let tail = prop_oneof![
        Just(None),
        Just(Some((None, vec![Segment::Multi]))),
        (prop::collection::vec(ident, 1..3), prop::collection::vec(bare_literal(), 0..2)).prop_map(
            |(path, mut segs)| {
                segs.push(Segment::Multi);
                Some((Some(path), segs))
            }
        ),
    ];
    let verb = prop::option::of("[a-zA-Z][a-zA-Z0-9_.-]{0,6}");
    (prop::collection::vec(part, 0..5), tail, verb).prop_map(|(parts, tail, verb)| {
        let mut t = PathTemplate { segments: Vec::new(), variables: Vec::new(), verb: None };
        for (n, (path, segs)) in parts.into_iter().chain(tail).enumerate() {
            let start = t.segments.len();
            t.segments.extend(segs);
            if let Some(mut field_path) = path {
                // Unique field paths: suffix the last ident with the part index.
                if let Some(last) = field_path.last_mut() {
                    last.push_str(&format!("_{n}"));
                }
                t.variables.push(Variable { field_path, start, end: t.segments.len() });
            }
        }
        // A verb needs a segment to follow.
        if !t.segments.is_empty() {
            t.verb = verb;
        }
        t
    })
}

fn bare_literal() -> impl Strategy<Value = Segment> {
    "[a-z][a-z0-9]{0,4}".prop_map(Segment::Literal)
}

proptest! {
    #[test]
    fn display_round_trips(t in arb_template()) {
        let text = t.to_string();
        prop_assert_eq!(PathTemplate::parse(&text), Ok(t), "text: {}", text);
    }

    #[test]
    fn parse_never_panics(text in "\\PC{0,40}", shaped in "/[a-z{}=*/:.%]{0,30}") {
        let _ = PathTemplate::parse(&text);
        let _ = PathTemplate::parse(&shaped);
    }
}

#[test]
fn rejections_quote_the_rule_of_http_proto() {
    for text in
        ["v1/x", "/v1//x", "/v1/**/x", "/v1/{a={b}}", "/v1/{a", "/v1/{1a}", "/v1/x:", "/v1/{}", "/v1/x{a}", "/v1/a b"]
    {
        let reason = reason(text);
        assert!(reason.contains("(http.proto"), "{text}: {reason}");
    }
}

#[test]
fn a_second_verb_after_a_variable_is_explained() {
    // grpc-gateway's a_bit_of_everything binds this; http.proto does not.
    let reason = reason("/v1/example/a_bit_of_everything/{uuid}:custom:custom");
    assert!(reason.starts_with("a variable must be a whole segment (http.proto"), "{reason}");
    assert!(reason.contains("`{uuid}:custom`") && reason.contains("grpc-gateway accepts this"), "{reason}");
}
