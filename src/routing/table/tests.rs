use super::*;
use crate::routing::template::tests::arb_template;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS, NON_ALPHANUMERIC};
use proptest::prelude::*;

fn template(text: &str) -> PathTemplate {
    match PathTemplate::parse(text) {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    }
}

/// A GET-only table whose values are the template texts.
fn table(templates: &[&'static str]) -> RouteTable<&'static str> {
    table_with(templates.iter().map(|t| (Method::GET, *t)))
}

fn table_with(routes: impl IntoIterator<Item = (Method, &'static str)>) -> RouteTable<&'static str> {
    let mut builder = RouteTableBuilder::new();
    for (method, text) in routes {
        if builder.insert(method, template(text), text).is_err() {
            panic!("{text} collides");
        }
    }
    builder.build()
}

/// The matched template text and captures, or a label for the other outcomes.
fn get(table: &RouteTable<&'static str>, path: &str) -> (String, Vec<String>) {
    find(table, &Method::GET, path)
}

fn find(table: &RouteTable<&'static str>, method: &Method, path: &str) -> (String, Vec<String>) {
    match table.find(method, path) {
        Match::Found { value, captures } => ((*value).to_owned(), captures),
        Match::MethodNotAllowed { allow } => ("405".into(), allow.iter().map(ToString::to_string).collect()),
        Match::NotFound => ("404".into(), vec![]),
        Match::Invalid { reason } => ("400".into(), vec![reason]),
    }
}

fn found(template: &str, captures: &[&str]) -> (String, Vec<String>) {
    (template.into(), captures.iter().map(|c| (*c).to_owned()).collect())
}

fn not_found() -> (String, Vec<String>) {
    ("404".into(), vec![])
}

#[test]
fn literal_beats_single_beats_multi() {
    let t = table(&["/v1/users/me", "/v1/users/{id}", "/v1/users/{rest=**}"]);
    assert_eq!(get(&t, "/v1/users/me"), found("/v1/users/me", &[]));
    assert_eq!(get(&t, "/v1/users/42"), found("/v1/users/{id}", &["42"]));
    assert_eq!(get(&t, "/v1/users/42/x"), found("/v1/users/{rest=**}", &["42/x"]));
    assert_eq!(get(&t, "/v1/users"), found("/v1/users/{rest=**}", &[""]));
}

#[test]
fn priority_is_decided_left_to_right() {
    let t = table(&["/v1/{a}/items", "/v1/shelves/{b=**}"]);
    // The literal at the second segment wins even though the other route is
    // more literal further right.
    assert_eq!(get(&t, "/v1/shelves/items"), found("/v1/shelves/{b=**}", &["items"]));
    assert_eq!(get(&t, "/v1/other/items"), found("/v1/{a}/items", &["other"]));
}

#[test]
fn search_backtracks_when_the_literal_branch_dead_ends() {
    let t = table(&["/v1/users/me/settings", "/v1/users/{id}/posts", "/v1/{r=**}"]);
    assert_eq!(get(&t, "/v1/users/me/posts"), found("/v1/users/{id}/posts", &["me"]));
    assert_eq!(get(&t, "/v1/users/me/likes"), found("/v1/{r=**}", &["users/me/likes"]));
    assert_eq!(get(&t, "/v1/users/me/settings"), found("/v1/users/me/settings", &[]));
}

#[test]
fn exact_end_beats_multi_matching_nothing() {
    let t = table(&["/files/{p=**}", "/files"]);
    assert_eq!(get(&t, "/files"), found("/files", &[]));
    assert_eq!(get(&t, "/files/a/b"), found("/files/{p=**}", &["a/b"]));
}

#[test]
fn multi_inside_a_variable_with_literals() {
    let t = table(&["/v1/{name=shelves/*/books/**}"]);
    assert_eq!(get(&t, "/v1/shelves/s1/books"), found("/v1/{name=shelves/*/books/**}", &["shelves/s1/books"]));
    assert_eq!(
        get(&t, "/v1/shelves/s1/books/b1/p2"),
        found("/v1/{name=shelves/*/books/**}", &["shelves/s1/books/b1/p2"])
    );
    assert_eq!(get(&t, "/v1/shelves/s1"), not_found());
}

#[test]
fn captures_follow_variable_order() {
    let t = table(&["/v1/{parent=projects/*}/items/{item.id}/{tail=**}"]);
    assert_eq!(
        get(&t, "/v1/projects/p/items/7/x/y"),
        found("/v1/{parent=projects/*}/items/{item.id}/{tail=**}", &["projects/p", "7", "x/y"])
    );
}

#[test]
fn verbs_are_tried_first_then_the_whole_segment() {
    let t = table(&["/v1/{name}", "/v1/{name}:cancel"]);
    assert_eq!(get(&t, "/v1/foo:cancel"), found("/v1/{name}:cancel", &["foo"]));
    assert_eq!(get(&t, "/v1/foo:bar"), found("/v1/{name}", &["foo:bar"]));
    assert_eq!(get(&t, "/v1/foo"), found("/v1/{name}", &["foo"]));
    // The text after the last `:` is the verb.
    assert_eq!(get(&t, "/v1/a:b:cancel"), found("/v1/{name}:cancel", &["a:b"]));
}

#[test]
fn a_template_with_a_verb_needs_that_verb() {
    let t = table(&["/v1/{name}:cancel", "/v1/jobs:run"]);
    assert_eq!(get(&t, "/v1/foo"), not_found());
    assert_eq!(get(&t, "/v1/foo:run"), not_found());
    assert_eq!(get(&t, "/v1/jobs"), not_found());
    assert_eq!(get(&t, "/v1/jobs:run"), found("/v1/jobs:run", &[]));
    assert_eq!(get(&t, "/v1/jobs:cancel"), found("/v1/{name}:cancel", &["jobs"]));
}

#[test]
fn only_a_raw_colon_separates_the_verb() {
    let t = table(&["/v1/{name}", "/v1/{name}:cancel"]);
    assert_eq!(get(&t, "/v1/foo%3Acancel"), found("/v1/{name}", &["foo:cancel"]));
    // A colon in an earlier segment is part of that segment.
    let t = table(&["/v1/{a}/{b}"]);
    assert_eq!(get(&t, "/v1/x:y/z"), found("/v1/{a}/{b}", &["x:y", "z"]));
}

#[test]
fn verb_and_multi() {
    let t = table(&["/files/{path=**}:download", "/files/{path=**}"]);
    assert_eq!(get(&t, "/files/a/b:download"), found("/files/{path=**}:download", &["a/b"]));
    assert_eq!(get(&t, "/files:download"), found("/files/{path=**}:download", &[""]));
    assert_eq!(get(&t, "/files/a/b:zip"), found("/files/{path=**}", &["a/b:zip"]));
}

#[test]
fn verbs_match_after_percent_decoding() {
    let t = table(&["/v1/{name}:cancel"]);
    assert_eq!(get(&t, "/v1/x:c%61ncel"), found("/v1/{name}:cancel", &["x"]));
}

#[test]
fn single_segment_variables_are_fully_decoded() {
    let t = table(&["/v1/{name}", "/v2/{id=*}"]);
    assert_eq!(get(&t, "/v1/a%2Fb%20c%C3%A9"), found("/v1/{name}", &["a/b cé"]));
    assert_eq!(get(&t, "/v2/100%"), found("/v2/{id=*}", &["100%"]));
    assert_eq!(get(&t, "/v2/%zz"), found("/v2/{id=*}", &["%zz"]));
}

#[test]
fn one_literal_segment_variables_are_fully_decoded() {
    let t = table(&["/v1/{kind=users}"]);
    assert_eq!(get(&t, "/v1/us%65rs"), found("/v1/{kind=users}", &["users"]));
}

#[test]
fn multi_segment_variables_keep_encoded_slashes() {
    let t = table(&["/v1/{name=shelves/*}", "/files/{path=**}"]);
    assert_eq!(get(&t, "/v1/shelves/a%2fb%20c"), found("/v1/{name=shelves/*}", &["shelves/a%2Fb c"]));
    assert_eq!(get(&t, "/files/a%2Fb/c%25d"), found("/files/{path=**}", &["a%2Fb/c%d"]));
}

#[test]
fn literals_match_after_decoding() {
    let t = table(&["/v1/users/{id}", "/v1/é/x"]);
    assert_eq!(get(&t, "/v1/us%65rs/1"), found("/v1/users/{id}", &["1"]));
    assert_eq!(get(&t, "/v1/%C3%A9/x"), found("/v1/é/x", &[]));
    // An encoded slash is not a separator.
    assert_eq!(get(&t, "/v1%2Fusers/1"), not_found());
}

#[test]
fn undecodable_values_are_invalid_not_panics() {
    let t = table(&["/v1/{name}", "/files/{p=**}"]);
    let (outcome, reason) = get(&t, "/v1/%FF");
    assert_eq!(outcome, "400");
    assert!(reason[0].contains("`name`"), "{reason:?}");
    assert_eq!(get(&t, "/files/a/%C3").0, "400");
    // A literal never equals bytes that are not UTF-8.
    assert_eq!(get(&table(&["/v1/x"]), "/v1/%FF"), not_found());
}

#[test]
fn empty_segments_and_trailing_slashes_never_match() {
    let t = table(&["/v1/users/{id}", "/v1/users", "/files/{p=**}"]);
    assert_eq!(get(&t, "/v1/users/"), not_found());
    assert_eq!(get(&t, "/v1//users"), not_found());
    assert_eq!(get(&t, "/v1/users"), found("/v1/users", &[]));
    assert_eq!(get(&t, "/files/a//b"), not_found());
    assert_eq!(get(&t, "/files/a/"), not_found());
    assert_eq!(get(&t, "/files/"), not_found());
    assert_eq!(get(&t, "/files"), found("/files/{p=**}", &[""]));
}

#[test]
fn paths_must_start_with_a_slash() {
    let t = table(&["/v1/x", "/{p=**}"]);
    assert_eq!(get(&t, "v1/x"), not_found());
    assert_eq!(get(&t, ""), not_found());
    assert_eq!(get(&t, "*"), not_found());
}

#[test]
fn root_template() {
    let t = table(&["/", "/{x}"]);
    assert_eq!(get(&t, "/"), found("/", &[]));
    assert_eq!(get(&t, "/a"), found("/{x}", &["a"]));
    assert_eq!(get(&t, "//"), not_found());
    let t = table(&["/{rest=**}"]);
    assert_eq!(get(&t, "/"), found("/{rest=**}", &[""]));
}

#[test]
fn other_methods_give_a_sorted_allow_list() {
    let purge = Method::from_bytes(b"PURGE").expect("valid method");
    let t = table_with([
        (Method::POST, "/v1/users"),
        (Method::GET, "/v1/users/{id}"),
        (Method::PUT, "/v1/users/{id}"),
        (Method::DELETE, "/v1/users/{id}"),
        (Method::DELETE, "/v1/users/{id}:cancel"),
        (purge.clone(), "/v1/users/{id}"),
    ]);
    assert_eq!(
        find(&t, &Method::PATCH, "/v1/users/7"),
        ("405".into(), vec!["DELETE".into(), "GET".into(), "PURGE".into(), "PUT".into()])
    );
    assert_eq!(find(&t, &Method::GET, "/v1/users"), ("405".into(), vec!["POST".into()]));
    // A verb some route takes makes the path that route's under every
    // method; a verb no route takes is part of the value.
    assert_eq!(find(&t, &Method::GET, "/v1/users/7:cancel"), ("405".into(), vec!["DELETE".into()]));
    assert_eq!(find(&t, &Method::PUT, "/v1/users/7:cancel"), ("405".into(), vec!["DELETE".into()]));
    assert_eq!(find(&t, &Method::GET, "/v1/users/7:other"), found("/v1/users/{id}", &["7:other"]));
    assert_eq!(find(&t, &Method::GET, "/v1/users/7%3Acancel"), found("/v1/users/{id}", &["7:cancel"]));
    assert_eq!(find(&t, &purge, "/v1/users/7"), found("/v1/users/{id}", &["7"]));
    assert_eq!(find(&t, &Method::PATCH, "/v2/users/7"), not_found());
    assert_eq!(find(&t, &Method::POST, "/v1/users/"), not_found());
}

#[test]
fn head_does_not_fall_back_to_get() {
    let t = table_with([(Method::GET, "/v1/x")]);
    assert_eq!(find(&t, &Method::HEAD, "/v1/x"), ("405".into(), vec!["GET".into()]));
    let t = table_with([(Method::GET, "/v1/x"), (Method::HEAD, "/v1/x")]);
    assert_eq!(find(&t, &Method::HEAD, "/v1/x"), found("/v1/x", &[]));
}

#[test]
fn same_shape_collides_whatever_the_variable_names() {
    let mut builder = RouteTableBuilder::new();
    assert!(builder.insert(Method::GET, template("/v1/{a}"), 1).is_ok());
    for colliding in ["/v1/{b}", "/v1/*", "/v1/{a=*}"] {
        match builder.insert(Method::GET, template(colliding), 2) {
            Err(Collision { existing }) => assert_eq!(*existing, 1, "{colliding}"),
            Ok(()) => panic!("{colliding} should collide"),
        }
    }
    assert!(builder.insert(Method::GET, template("/v1/{a=**}"), 3).is_ok());
    assert!(matches!(builder.insert(Method::GET, template("/v1/**"), 4), Err(Collision { existing: 3 })));
    assert!(builder.insert(Method::GET, template("/v1/{a}:run"), 5).is_ok());
    assert!(matches!(builder.insert(Method::GET, template("/v1/*:run"), 6), Err(Collision { existing: 5 })));
    assert!(builder.insert(Method::POST, template("/v1/{a}"), 7).is_ok());
    assert!(builder.insert(Method::GET, template("/v1/a"), 8).is_ok());
    assert!(builder.insert(Method::GET, template("/v1/{a=x/*}"), 9).is_ok());
    assert!(builder.insert(Method::GET, template("/v1/x/*"), 10).is_err());
    let table = builder.build();
    assert_eq!(table.len(), 6);
    // Rejected routes left nothing behind.
    assert_eq!(table.find(&Method::GET, "/v1/q"), Match::Found { value: &1, captures: vec!["q".into()] });
}

#[test]
fn len_and_is_empty() {
    let empty: RouteTable<()> = RouteTableBuilder::new().build();
    assert!(empty.is_empty());
    assert_eq!(empty.len(), 0);
    assert_eq!(empty.find(&Method::GET, "/"), Match::NotFound);
    let t = table(&["/a", "/b"]);
    assert!(!t.is_empty());
    assert_eq!(t.len(), 2);
}

#[test]
fn span_selects_raw_segments() {
    assert_eq!(span("a/b/c", 1, Some(2)), "b");
    assert_eq!(span("a/b/c", 0, None), "a/b/c");
    assert_eq!(span("a/b/c", 1, None), "b/c");
    assert_eq!(span("a", 1, None), "");
    assert_eq!(span("", 0, None), "");
}

// ---- properties -------------------------------------------------------------

/// Everything that is not unreserved, `:` included, is sometimes encoded.
const PATH_VALUE: &AsciiSet = &CONTROLS.add(b' ').add(b'%').add(b'/').add(b'?').add(b'#');

/// A request segment's raw value, with its text as captured.
fn arb_value() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 é:%._~/-]{1,6}"
}

fn encode(text: &str, aggressive: bool) -> String {
    let set = if aggressive { NON_ALPHANUMERIC } else { PATH_VALUE };
    utf8_percent_encode(text, set).to_string()
}

/// For each template segment, the decoded texts of the request segments it matches.
fn arb_matching_values(t: &PathTemplate) -> impl Strategy<Value = Vec<Vec<String>>> {
    t.segments
        .iter()
        .map(|segment| match segment {
            Segment::Literal(text) => Just(vec![text.clone()]).boxed(),
            Segment::Single => arb_value().prop_filter("no slash", |v| !v.contains('/')).prop_map(|v| vec![v]).boxed(),
            Segment::Multi => prop::collection::vec(arb_value(), 0..3).boxed(),
        })
        .collect::<Vec<_>>()
}

fn expected_captures(t: &PathTemplate, values: &[Vec<String>]) -> Vec<String> {
    t.variables
        .iter()
        .map(|v| {
            let texts = values[v.start..v.end].iter().flatten();
            if t.is_single_segment(v) {
                texts.cloned().collect()
            } else {
                texts.map(|text| text.replace('/', "%2F")).collect::<Vec<_>>().join("/")
            }
        })
        .collect()
}

fn request_path(t: &PathTemplate, values: &[Vec<String>], aggressive: bool) -> String {
    let segments: Vec<String> = values.iter().flatten().map(|v| encode(v, aggressive)).collect();
    let mut path = format!("/{}", segments.join("/"));
    if let Some(verb) = &t.verb {
        path.push(':');
        path.push_str(verb);
    }
    path
}

/// Brute force: does `t` match `segments` (raw) with `verb`?
fn reference_matches(t: &PathTemplate, segments: &[&str], verb: Option<&str>) -> bool {
    if t.verb.as_deref() != verb {
        return false;
    }
    let decoded = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8().ok().map(|d| d.into_owned());
    let mut i = 0;
    for segment in &t.segments {
        match segment {
            Segment::Multi => return segments[i..].iter().all(|s| !s.is_empty()),
            Segment::Single if segments.get(i).is_some_and(|s| !s.is_empty()) => {}
            Segment::Literal(text) if segments.get(i).and_then(|s| decoded(s)).as_ref() == Some(text) => {}
            _ => return false,
        }
        i += 1;
    }
    i == segments.len()
}

/// The most specific matching route: literal < `*` < end of template < `**`,
/// compared left to right, verb split tried first.
fn reference_find<'t>(routes: &'t [PathTemplate], path: &str) -> Option<&'t PathTemplate> {
    let body = path.strip_prefix('/')?;
    let split = |body: &str| -> Vec<String> {
        if body.is_empty() {
            vec![]
        } else {
            body.split('/').map(str::to_owned).collect()
        }
    };
    let rank = |t: &PathTemplate| -> Vec<u8> {
        t.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(_) => 0,
                Segment::Single => 1,
                Segment::Multi => 2,
            })
            .collect()
    };
    let mut attempts = Vec::new();
    let last = body.rfind('/').map_or(0, |i| i + 1);
    if let Some(colon) = body[last..].rfind(':') {
        let verb = percent_encoding::percent_decode_str(&body[last + colon + 1..]).decode_utf8().ok();
        if let Some(verb) = verb {
            attempts.push((split(&body[..last + colon]), Some(verb.into_owned())));
        }
    }
    attempts.push((split(body), None));
    attempts.into_iter().find_map(|(segments, verb)| {
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        routes.iter().filter(|t| reference_matches(t, &segments, verb.as_deref())).min_by_key(|t| rank(t))
    })
}

fn arb_overlapping_template() -> impl Strategy<Value = PathTemplate> {
    let segment = prop_oneof![
        3 => prop_oneof![Just("a"), Just("b")].prop_map(|s| Segment::Literal(s.into())),
        2 => Just(Segment::Single),
    ];
    (prop::collection::vec(segment, 0..4), any::<bool>(), prop::option::of(prop_oneof![Just("x"), Just("y")])).prop_map(
        |(mut segments, multi, verb)| {
            if multi {
                segments.push(Segment::Multi);
            }
            let verb = verb.filter(|_| !segments.is_empty()).map(str::to_owned);
            PathTemplate { segments, variables: vec![], verb }
        },
    )
}

proptest! {
    #[test]
    fn generated_paths_find_their_route(
        (t, values) in arb_template().prop_flat_map(|t| { let v = arb_matching_values(&t); (Just(t), v) }),
        aggressive in any::<bool>(),
    ) {
        let mut builder = RouteTableBuilder::new();
        let noise = template("/zz-noise/{x}");
        prop_assert!(builder.insert(Method::GET, t.clone(), "get").is_ok());
        prop_assert!(builder.insert(Method::POST, t.clone(), "post").is_ok());
        prop_assert!(builder.insert(Method::GET, noise, "noise").is_ok());
        let table = builder.build();
        let path = request_path(&t, &values, aggressive);
        let expected = Match::Found { value: &"get", captures: expected_captures(&t, &values) };
        prop_assert_eq!(table.find(&Method::GET, &path), expected, "template {} path {}", t, path);
    }

    #[test]
    fn find_agrees_with_brute_force(
        templates in prop::collection::vec(arb_overlapping_template(), 1..12),
        path in "/([ab]|%61|:|x|y|/){0,10}",
    ) {
        let mut builder = RouteTableBuilder::new();
        let mut routes = Vec::new();
        for t in templates {
            if builder.insert(Method::GET, t.clone(), routes.len()).is_ok() {
                routes.push(t);
            }
        }
        let table = builder.build();
        let expected = reference_find(&routes, &path);
        match table.find(&Method::GET, &path) {
            Match::Found { value, .. } => prop_assert_eq!(Some(&routes[*value]), expected, "path {}", path),
            other => prop_assert!(expected.is_none(), "path {} gave {:?}, expected {:?}", path, other, expected),
        }
    }

    #[test]
    fn find_never_panics(path in "\\PC{0,40}", shaped in "/[a-z:%/0-9A-F]{0,30}") {
        let t = table_with([
            (Method::GET, "/"),
            (Method::GET, "/v1/{name}"),
            (Method::GET, "/v1/{name}:cancel"),
            (Method::POST, "/v1/{name=shelves/*/books/**}"),
            (Method::GET, "/v1/a/{b}/c"),
            (Method::GET, "/{x=**}:v"),
        ]);
        for method in [Method::GET, Method::PUT] {
            let _ = t.find(&method, &path);
            let _ = t.find(&method, &shaped);
        }
    }
}
