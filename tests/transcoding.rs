//! End-to-end transcoding over real HTTP: the gateway in front of the
//! conformance backend, whose echo methods return the request they received,
//! so the JSON that comes back shows what the gateway built from the path,
//! query and body (and how it renders a response).

mod common;

use common::testpb::Color;
use common::{api, start_test_service, start_test_service_with, TestGateway};
use reqwest::Method;
use serde_json::{json, Value};

/// POSTs `body` to `path`, expects 200 and returns the JSON answer.
async fn post_ok(env: &TestGateway, path: &str, body: &Value) -> Value {
    let reply = env.post_json(path, &body.to_string()).await;
    assert_eq!(reply.status, 200, "POST {path} {body}: {}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"), "POST {path}");
    reply.json()
}

/// GETs `path_and_query`, expects 200 and returns the JSON answer.
async fn get_ok(env: &TestGateway, path_and_query: &str) -> Value {
    let reply = env.get(path_and_query).await;
    assert_eq!(reply.status, 200, "GET {path_and_query}: {}", reply.text());
    reply.json()
}

async fn echo(env: &TestGateway, body: &Value) -> Value {
    post_ok(env, "/test/echo", body).await
}

// ---------------------------------------------------------------------------
// Request: body "*"
// ---------------------------------------------------------------------------

#[tokio::test]
async fn body_star_every_scalar_type() {
    let env = start_test_service().await;
    let sent = json!({
        "doubleValue": 1.5,
        "floatValue": -2.25,
        "int32Value": -7,
        "int64Value": "-9223372036854775808",
        "uint32Value": 4294967295u32,
        "uint64Value": "18446744073709551615",
        "sint32Value": -2147483648i64,
        "sint64Value": "-99",
        "fixed32Value": 42,
        "fixed64Value": "43",
        "sfixed32Value": -44,
        "sfixed64Value": "-45",
        "boolValue": true,
        "stringValue": "héllo \"wörld\" ✓",
        "bytesValue": "AAH+/w=="
    });
    assert_eq!(echo(&env, &sent).await, sent);
}

#[tokio::test]
async fn body_star_numbers_as_strings_and_strings_as_numbers() {
    let env = start_test_service().await;
    // The JSON mapping accepts 64-bit integers as numbers, 32-bit ones as
    // strings, and floats as strings (including the special words).
    let got = echo(
        &env,
        &json!({
            "int64Value": 1234567890123i64,
            "uint64Value": 5,
            "sint64Value": -6,
            "fixed64Value": 7,
            "int32Value": "12",
            "uint32Value": "13",
            "doubleValue": "2.5",
            "floatValue": "Infinity",
            "repeatedDouble": ["NaN", "-Infinity", 0.25]
        }),
    )
    .await;
    assert_eq!(
        got,
        json!({
            "int64Value": "1234567890123",
            "uint64Value": "5",
            "sint64Value": "-6",
            "fixed64Value": "7",
            "int32Value": 12,
            "uint32Value": 13,
            "doubleValue": 2.5,
            "floatValue": "Infinity",
            "repeatedDouble": ["NaN", "-Infinity", 0.25]
        })
    );
}

#[tokio::test]
async fn body_star_bytes_accept_url_safe_and_unpadded_base64() {
    let env = start_test_service().await;
    let got = echo(&env, &json!({"bytesValue": "AAH-_w", "repeatedBytes": ["AQI=", "AQI"]})).await;
    assert_eq!(got, json!({"bytesValue": "AAH+/w==", "repeatedBytes": ["AQI=", "AQI="]}));
}

#[tokio::test]
async fn body_star_enums_by_name_and_number() {
    let env = start_test_service().await;
    let got = echo(&env, &json!({"color": 2, "repeatedColor": ["RED", 2, "COLOR_UNSPECIFIED"]})).await;
    assert_eq!(got, json!({"color": "GREEN", "repeatedColor": ["RED", "GREEN", "COLOR_UNSPECIFIED"]}));
    let got = echo(&env, &json!({"color": "RED"})).await;
    assert_eq!(got, json!({"color": "RED"}));
    // An unknown number is kept (open enums) and written back as a number.
    let got = echo(&env, &json!({"color": 7})).await;
    assert_eq!(got, json!({"color": 7}));
}

#[tokio::test]
async fn body_star_nested_repeated_and_maps() {
    let env = start_test_service().await;
    let sent = json!({
        "nested": {"name": "outer", "values": [1, -2, 3], "child": {"name": "inner", "child": {"values": [9]}}},
        "repeatedInt32": [1, -2],
        "repeatedInt64": ["-1", "9223372036854775807"],
        "repeatedUint64": ["18446744073709551615"],
        "repeatedDouble": [0.5, -1.0e-3],
        "repeatedBool": [true, false, true],
        "repeatedString": ["a", "", "c"],
        "repeatedBytes": ["AQI=", ""],
        "repeatedColor": ["GREEN"],
        "repeatedNested": [{"name": "a"}, {}, {"values": [1]}],
        "mapStringInt32": {"a": 1, "": -1},
        "mapInt64String": {"-1": "minus one", "9223372036854775807": "max"},
        "mapStringNested": {"k": {"name": "v", "values": [4]}},
        "mapBoolString": {"true": "yes", "false": "no"}
    });
    assert_eq!(echo(&env, &sent).await, sent);
}

#[tokio::test]
async fn body_star_oneof_members() {
    let env = start_test_service().await;
    assert_eq!(echo(&env, &json!({"text": "hi"})).await, json!({"text": "hi"}));
    // A oneof member set to its default value is still set, so it is echoed.
    assert_eq!(echo(&env, &json!({"number": 0})).await, json!({"number": 0}));
    assert_eq!(echo(&env, &json!({"item": {"name": "x"}})).await, json!({"item": {"name": "x"}}));
    assert_eq!(echo(&env, &json!({"item": {}})).await, json!({"item": {}}));
}

#[tokio::test]
async fn body_star_accepts_json_names_and_proto_names() {
    let env = start_test_service().await;
    let got = echo(
        &env,
        &json!({
            "string_value": "proto name",
            "int64_value": "5",
            "repeated_string": ["x"],
            "map_string_int32": {"k": 1},
            "nested": {"name": "n"},
            "optional_int32": 0
        }),
    )
    .await;
    assert_eq!(
        got,
        json!({
            "stringValue": "proto name",
            "int64Value": "5",
            "repeatedString": ["x"],
            "mapStringInt32": {"k": 1},
            "nested": {"name": "n"},
            // proto3 optional keeps an explicit zero.
            "optionalInt32": 0
        })
    );
    // `json_name` overrides lowerCamelCase; the proto name still works on input.
    assert_eq!(echo(&env, &json!({"customName": "a"})).await, json!({"customName": "a"}));
    assert_eq!(echo(&env, &json!({"renamed": "b"})).await, json!({"customName": "b"}));
}

#[tokio::test]
async fn body_star_well_known_types() {
    let env = start_test_service().await;
    let sent = json!({
        "timestamp": "2024-01-02T03:04:05.123Z",
        "duration": "-1.500s",
        "fieldMask": "stringValue,nested.name",
        "structValue": {"a": 1.0, "b": [true, null, "s"], "c": {"d": 2.5}},
        "value": {"list": [1.0, "two"]},
        "listValue": [1.0, "a", null, {"x": false}],
        "any": {"@type": "type.googleapis.com/protogate.test.v1.Nested", "name": "packed", "values": [1]},
        "empty": {},
        "repeatedTimestamp": ["1970-01-01T00:00:00Z", "2000-01-01T00:00:00.500Z"]
    });
    assert_eq!(echo(&env, &sent).await, sent);
}

#[tokio::test]
async fn body_star_well_known_types_in_other_spellings_come_back_canonical() {
    let env = start_test_service().await;
    let got = echo(
        &env,
        &json!({
            "timestamp": "2024-01-02T04:04:05+01:00",
            "duration": "3600s",
            "value": "text",
            "any": {"@type": "type.googleapis.com/google.protobuf.Duration", "value": "2s"}
        }),
    )
    .await;
    assert_eq!(
        got,
        json!({
            "timestamp": "2024-01-02T03:04:05Z",
            "duration": "3600s",
            "value": "text",
            "any": {"@type": "type.googleapis.com/google.protobuf.Duration", "value": "2s"}
        })
    );
}

#[tokio::test]
async fn body_star_integers_in_any_number_spelling_keep_their_exact_value() {
    let env = start_test_service().await;
    // Each literal reaches serde_json as an f64 that is off by some units.
    let reply = env
        .post_json(
            "/test/echo",
            r#"{"uint64Value": 18446744073709551614.0, "int64Value": -9223372036854775807e0,
                "fixed64Value": 1.8446744073709551615e19, "int64Wrapper": 9007199254740993.000,
                "repeatedInt64": [123456789012345e4, 900719925474099.3e1]}"#,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({
            "uint64Value": "18446744073709551614",
            "int64Value": "-9223372036854775807",
            "fixed64Value": "18446744073709551615",
            "int64Wrapper": "9007199254740993",
            "repeatedInt64": ["1234567890123450000", "9007199254740993"]
        })
    );
}

#[tokio::test]
async fn body_star_wrappers_keep_explicit_defaults() {
    let env = start_test_service().await;
    let sent = json!({
        "doubleWrapper": 1.5,
        "floatWrapper": 0.0,
        "int64Wrapper": "0",
        "uint64Wrapper": "18446744073709551615",
        "int32Wrapper": 0,
        "uint32Wrapper": 9,
        "boolWrapper": false,
        "stringWrapper": "",
        "bytesWrapper": "AQ=="
    });
    assert_eq!(echo(&env, &sent).await, sent);
    // Wrappers accept the same alternative spellings as their scalars.
    let got = echo(&env, &json!({"int64Wrapper": 7, "int32Wrapper": "8"})).await;
    assert_eq!(got, json!({"int64Wrapper": "7", "int32Wrapper": 8}));
}

#[tokio::test]
async fn body_star_empty_body_is_an_empty_message() {
    let env = start_test_service().await;
    for body in [None, Some(b"".to_vec()), Some(b" \n ".to_vec()), Some(b"{}".to_vec())] {
        let reply =
            env.request(Method::POST, "/test/echo", &[("content-type", "application/json")], body.clone()).await;
        assert_eq!(reply.status, 200, "body {body:?}: {}", reply.text());
        assert_eq!(reply.json(), json!({}), "body {body:?}");
    }
}

#[tokio::test]
async fn json_content_types_with_parameters_and_suffix_are_accepted() {
    let env = start_test_service().await;
    for ct in ["application/json; charset=utf-8", "application/vnd.acme+json", "APPLICATION/JSON"] {
        let reply = env
            .request(Method::POST, "/test/echo", &[("content-type", ct)], Some(br#"{"int32Value":1}"#.to_vec()))
            .await;
        assert_eq!(reply.status, 200, "{ct}: {}", reply.text());
        assert_eq!(reply.json(), json!({"int32Value": 1}), "{ct}");
    }
    // No content type at all is taken as JSON.
    let reply = env.request(Method::POST, "/test/echo", &[], Some(br#"{"int32Value":2}"#.to_vec())).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json(), json!({"int32Value": 2}));
}

// ---------------------------------------------------------------------------
// Request: body "field", path variables
// ---------------------------------------------------------------------------

#[tokio::test]
async fn body_field_takes_the_field_from_the_body_and_the_rest_from_path_and_query() {
    let env = start_test_service().await;
    let reply = env
        .request(
            Method::PUT,
            "/test/body-field/abc?int32Value=5&repeated_string=a&repeated_string=b",
            &[("content-type", "application/json")],
            Some(br#"{"name": "n", "values": [1, 2], "child": {"name": "c"}}"#.to_vec()),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({
            "stringValue": "abc",
            "int32Value": 5,
            "repeatedString": ["a", "b"],
            "nested": {"name": "n", "values": [1, 2], "child": {"name": "c"}}
        })
    );
}

#[tokio::test]
async fn body_field_body_fields_are_those_of_the_nested_message() {
    let env = start_test_service().await;
    // `stringValue` is a field of AllTypes, not of Nested: the body is the
    // `nested` field alone, so it is unknown there.
    let reply = env
        .request(
            Method::PUT,
            "/test/body-field/abc",
            &[("content-type", "application/json")],
            Some(br#"{"stringValue": "sneaky"}"#.to_vec()),
        )
        .await;
    let body = common::assert_error(&reply, 400, 3);
    assert!(body["message"].as_str().unwrap_or_default().contains("stringValue"), "{body}");
}

#[tokio::test]
async fn get_with_path_variables_nested_enum_and_int64_plus_query() {
    let env = start_test_service().await;
    let got = get_ok(&env, "/test/path/hello/-9223372036854775808/nm/GREEN?int32_value=4&nested.values=7").await;
    assert_eq!(
        got,
        json!({
            "stringValue": "hello",
            "int64Value": "-9223372036854775808",
            "nested": {"name": "nm", "values": [7]},
            "color": "GREEN",
            "int32Value": 4
        })
    );
    // Enum path variable by number.
    let got = get_ok(&env, "/test/path/h/9223372036854775807/n/1").await;
    assert_eq!(got["color"], json!("RED"));
    assert_eq!(got["int64Value"], json!("9223372036854775807"));
}

#[tokio::test]
async fn a_query_parameter_on_a_path_bound_field_is_refused_or_dropped_by_config() {
    let path = "/test/path/hello/7/nm/GREEN?string_value=other&nested.name=x&int32_value=4";
    let strict = start_test_service().await;
    let refused = strict.get(path).await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(refused.text().contains("path_wins"), "the message names the switch: {}", refused.text());
    let lax = start_test_service_with(|config| {
        config.json.query_path_conflict = api::QueryPathConflict::PathWins;
    })
    .await;
    let got = get_ok(&lax, path).await;
    assert_eq!(
        (&got["stringValue"], &got["nested"]["name"], &got["int32Value"]),
        (&json!("hello"), &json!("nm"), &json!(4))
    );
}

#[tokio::test]
async fn single_segment_variables_are_fully_percent_decoded() {
    let env = start_test_service().await;
    let got = get_ok(&env, "/test/path/hello%20world%2Fx%3F/1/n%2Fm%25/RED").await;
    assert_eq!(got["stringValue"], json!("hello world/x?"));
    assert_eq!(got["nested"], json!({"name": "n/m%"}));
    let got = get_ok(&env, "/test/path/h%C3%A9llo/1/n/RED").await;
    assert_eq!(got["stringValue"], json!("héllo"));
}

#[tokio::test]
async fn multi_segment_variable_keeps_encoded_slashes() {
    let env = start_test_service().await;
    let got = get_ok(&env, "/test/files/a/b%2Fc/d%20e.txt").await;
    assert_eq!(got, json!({"stringValue": "a/b%2Fc/d e.txt"}));
    let got = get_ok(&env, "/test/files/one").await;
    assert_eq!(got, json!({"stringValue": "one"}));
}

#[tokio::test]
async fn additional_binding_with_a_segment_pattern() {
    let env = start_test_service().await;
    let got = get_ok(&env, "/test/things/shelves/1/books/2?int32_value=3").await;
    assert_eq!(got, json!({"stringValue": "shelves/1/books/2", "int32Value": 3}));
    // The pattern has exactly four segments with fixed literals.
    for path in ["/test/things/shelves/1/books", "/test/things/racks/1/books/2", "/test/things/shelves/1/books/2/x"] {
        let reply = env.get(path).await;
        common::assert_error(&reply, 404, 5);
    }
}

#[tokio::test]
async fn custom_verb_and_the_path_has_the_last_word_over_the_body() {
    let env = start_test_service().await;
    let got = post_ok(&env, "/test/things/abc:frobnicate", &json!({"int32Value": 3, "stringValue": "from body"})).await;
    assert_eq!(got, json!({"stringValue": "abc", "int32Value": 3}));
    // Without the verb, or with another one, nothing matches.
    let reply = env.post_json("/test/things/abc", "{}").await;
    common::assert_error(&reply, 404, 5);
    let reply = env.post_json("/test/things/abc:other", "{}").await;
    common::assert_error(&reply, 404, 5);
}

#[tokio::test]
async fn auto_mapped_method_without_http_option() {
    let env = start_test_service().await;
    let sent = json!({"int32Value": 9, "nested": {"name": "n"}, "mapBoolString": {"true": "t"}});
    let got = post_ok(&env, "/protogate.test.v1.TestService/Unannotated", &sent).await;
    assert_eq!(got, sent);

    let env = start_test_service_with(|config| config.routes.auto_map = false).await;
    let reply = env.post_json("/protogate.test.v1.TestService/Unannotated", "{}").await;
    common::assert_error(&reply, 404, 5);
}

// ---------------------------------------------------------------------------
// Request: query parameters
// ---------------------------------------------------------------------------

#[tokio::test]
async fn query_every_scalar_type() {
    let env = start_test_service().await;
    let got = get_ok(
        &env,
        "/test/query?double_value=1.5&float_value=-2.5&int32_value=-7&int64_value=-9223372036854775808\
         &uint32_value=4294967295&uint64_value=18446744073709551615&sint32_value=-1&sint64_value=-2\
         &fixed32_value=3&fixed64_value=4&sfixed32_value=-5&sfixed64_value=-6&bool_value=true\
         &string_value=a%26b%3Dc&bytes_value=AAH-_w",
    )
    .await;
    assert_eq!(
        got,
        json!({
            "doubleValue": 1.5,
            "floatValue": -2.5,
            "int32Value": -7,
            "int64Value": "-9223372036854775808",
            "uint32Value": 4294967295u32,
            "uint64Value": "18446744073709551615",
            "sint32Value": -1,
            "sint64Value": "-2",
            "fixed32Value": 3,
            "fixed64Value": "4",
            "sfixed32Value": -5,
            "sfixed64Value": "-6",
            "boolValue": true,
            "stringValue": "a&b=c",
            "bytesValue": "AAH+/w=="
        })
    );
}

#[tokio::test]
async fn query_accepts_json_names_too() {
    let env = start_test_service().await;
    let got = get_ok(&env, "/test/query?stringValue=s&customName=c&int64Value=3").await;
    assert_eq!(got, json!({"stringValue": "s", "customName": "c", "int64Value": "3"}));
    let got = get_ok(&env, "/test/query?renamed=r").await;
    assert_eq!(got, json!({"customName": "r"}));
}

#[tokio::test]
async fn query_enums_by_name_and_number() {
    let env = start_test_service().await;
    let got = get_ok(&env, "/test/query?color=GREEN&repeated_color=RED&repeated_color=2").await;
    assert_eq!(got, json!({"color": "GREEN", "repeatedColor": ["RED", "GREEN"]}));
    let got = get_ok(&env, "/test/query?color=1").await;
    assert_eq!(got, json!({"color": "RED"}));
}

#[tokio::test]
async fn query_repeated_fields_by_repetition() {
    let env = start_test_service().await;
    let got = get_ok(
        &env,
        "/test/query?repeated_string=a&repeated_string=b&repeated_int64=1&repeated_int64=-2\
         &repeated_bool=true&repeated_bool=false&repeated_double=0.5&repeated_bytes=AQI%3D\
         &repeated_timestamp=1970-01-01T00:00:00Z&repeated_timestamp=2000-01-01T00:00:00Z",
    )
    .await;
    assert_eq!(
        got,
        json!({
            "repeatedString": ["a", "b"],
            "repeatedInt64": ["1", "-2"],
            "repeatedBool": [true, false],
            "repeatedDouble": [0.5],
            "repeatedBytes": ["AQI="],
            "repeatedTimestamp": ["1970-01-01T00:00:00Z", "2000-01-01T00:00:00Z"]
        })
    );
}

#[tokio::test]
async fn query_nested_fields_and_maps() {
    let env = start_test_service().await;
    let got = get_ok(
        &env,
        "/test/query?nested.name=x&nested.values=1&nested.values=2&nested.child.name=y\
         &map_string_int32[a]=1&map_string_int32[b]=-2&map_int64_string[-1]=neg\
         &map_bool_string[true]=yes&mapBoolString%5Bfalse%5D=no",
    )
    .await;
    assert_eq!(
        got,
        json!({
            "nested": {"name": "x", "values": [1, 2], "child": {"name": "y"}},
            "mapStringInt32": {"a": 1, "b": -2},
            "mapInt64String": {"-1": "neg"},
            "mapBoolString": {"true": "yes", "false": "no"}
        })
    );
}

#[tokio::test]
async fn query_well_known_scalar_types() {
    let env = start_test_service().await;
    let got = get_ok(
        &env,
        "/test/query?timestamp=2024-01-02T03:04:05.5Z&duration=1.5s&field_mask=stringValue,nested.name\
         &int32_wrapper=0&bool_wrapper=false&string_wrapper=&int64_wrapper=5&uint64_wrapper=6\
         &double_wrapper=2.5&float_wrapper=-1&uint32_wrapper=7&bytes_wrapper=AQ%3D%3D",
    )
    .await;
    assert_eq!(
        got,
        json!({
            "timestamp": "2024-01-02T03:04:05.500Z",
            "duration": "1.500s",
            "fieldMask": "stringValue,nested.name",
            "int32Wrapper": 0,
            "boolWrapper": false,
            "stringWrapper": "",
            "int64Wrapper": "5",
            "uint64Wrapper": "6",
            "doubleWrapper": 2.5,
            "floatWrapper": -1.0,
            "uint32Wrapper": 7,
            "bytesWrapper": "AQ=="
        })
    );
}

#[tokio::test]
async fn query_plus_is_a_space_and_percent_escapes_are_decoded() {
    let env = start_test_service().await;
    let got = get_ok(&env, "/test/query?string_value=a+b%2Bc%20d&repeated_string=%E2%9C%93&text=x+y").await;
    assert_eq!(got, json!({"stringValue": "a b+c d", "repeatedString": ["✓"], "text": "x y"}));
}

#[tokio::test]
async fn query_oneof_member() {
    let env = start_test_service().await;
    assert_eq!(get_ok(&env, "/test/query?number=0").await, json!({"number": 0}));
    assert_eq!(get_ok(&env, "/test/query?item.name=i").await, json!({"item": {"name": "i"}}));
}

// ---------------------------------------------------------------------------
// Response rendering
// ---------------------------------------------------------------------------

#[tokio::test]
async fn response_defaults_follow_the_proto3_json_mapping() {
    let env = start_test_service().await;
    let got = echo(
        &env,
        &json!({
            "int32Value": 0,
            "stringValue": "",
            "boolValue": false,
            "bytesValue": "",
            "color": "COLOR_UNSPECIFIED",
            "repeatedString": [],
            "mapStringInt32": {},
            "int64Value": "12",
            "uint64Value": 13,
            "repeatedColor": [1]
        }),
    )
    .await;
    // Defaults omitted, lowerCamelCase names, 64-bit integers as strings,
    // enums as names.
    assert_eq!(got, json!({"int64Value": "12", "uint64Value": "13", "repeatedColor": ["RED"]}));
}

#[tokio::test]
async fn json_use_proto_names() {
    let env = start_test_service_with(|config| config.json.use_proto_names = true).await;
    let got = echo(
        &env,
        &json!({"int64Value": "5", "customName": "r", "nested": {"name": "n"}, "map_string_int32": {"a": 1}}),
    )
    .await;
    assert_eq!(got, json!({"int64_value": "5", "renamed": "r", "nested": {"name": "n"}, "map_string_int32": {"a": 1}}));
}

#[tokio::test]
async fn json_emit_unpopulated() {
    let env = start_test_service_with(|config| config.json.emit_unpopulated = true).await;
    let got = echo(&env, &json!({})).await;
    let expected = [
        ("int32Value", json!(0)),
        ("int64Value", json!("0")),
        ("doubleValue", json!(0.0)),
        ("boolValue", json!(false)),
        ("stringValue", json!("")),
        ("bytesValue", json!("")),
        ("color", json!("COLOR_UNSPECIFIED")),
        ("repeatedString", json!([])),
        ("mapStringInt32", json!({})),
        ("customName", json!("")),
    ];
    for (key, value) in expected {
        assert_eq!(got.get(key), Some(&value), "{key} in {got}");
    }
    // Presence-tracked fields that are not set stay absent: no member of the
    // oneof, no proto3 optional.
    for key in ["text", "number", "item", "optionalInt32"] {
        assert!(got.get(key).is_none_or(Value::is_null), "{key} in {got}");
    }
}

#[tokio::test]
async fn json_enums_as_ints() {
    let env = start_test_service_with(|config| config.json.enums_as_ints = true).await;
    let got = echo(&env, &json!({"color": "GREEN", "repeatedColor": ["RED", "GREEN"]})).await;
    assert_eq!(got, json!({"color": Color::Green as i32, "repeatedColor": [Color::Red as i32, Color::Green as i32]}));
}

#[tokio::test]
async fn json_int64_as_numbers() {
    let env = start_test_service_with(|config| config.json.int64_as_numbers = true).await;
    let got = echo(
        &env,
        &json!({
            "int64Value": "-5",
            "uint64Value": "18446744073709551615",
            "sint64Value": "-4",
            "fixed64Value": "3",
            "sfixed64Value": "6",
            "repeatedInt64": ["1", "-1"],
            "mapInt64String": {"-1": "map keys stay strings"}
        }),
    )
    .await;
    assert_eq!(
        got,
        json!({
            "int64Value": -5,
            "uint64Value": 18446744073709551615u64,
            "sint64Value": -4,
            "fixed64Value": 3,
            "sfixed64Value": 6,
            "repeatedInt64": [1, -1],
            "mapInt64String": {"-1": "map keys stay strings"}
        })
    );
}

#[tokio::test]
async fn json_unknown_fields_ignore() {
    let env = start_test_service_with(|config| {
        config.json.unknown_fields = api::Strictness::Ignore;
    })
    .await;
    let got =
        echo(&env, &json!({"int32Value": 1, "bogus": {"x": [1, 2]}, "nested": {"alsoBogus": true, "name": "n"}})).await;
    assert_eq!(got, json!({"int32Value": 1, "nested": {"name": "n"}}));
}

#[tokio::test]
async fn json_unknown_query_params_ignore() {
    let env = start_test_service_with(|config| {
        config.json.unknown_query_params = api::Strictness::Ignore;
    })
    .await;
    let got = get_ok(&env, "/test/query?int32_value=1&bogus=2&nested.bogus=3").await;
    assert_eq!(got, json!({"int32Value": 1}));
    // Ignoring unknown names does not relax the checks on known ones.
    let reply = env.get("/test/query?int32_value=x").await;
    common::assert_error(&reply, 400, 3);
}

#[tokio::test]
async fn json_pretty() {
    let env = start_test_service_with(|config| config.json.pretty = true).await;
    let sent = json!({"int32Value": 1, "nested": {"name": "n"}});
    let reply = env.post_json("/test/echo", &sent.to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let text = reply.text();
    assert!(text.contains("\n  \"int32Value\": 1"), "not indented: {text}");
    assert_eq!(reply.json(), sent);
    // The error envelope is pretty too.
    let reply = env.get("/test/nothing-here").await;
    common::assert_error(&reply, 404, 5);
    assert!(reply.text().contains("\n  \"code\": 5"), "error not indented: {}", reply.text());
}

#[tokio::test]
async fn response_body_returns_one_field() {
    let env = start_test_service().await;
    let got = post_ok(
        &env,
        "/test/response-field",
        &json!({"stringValue": "not returned", "nested": {"name": "n", "values": [1], "child": {"name": "c"}}}),
    )
    .await;
    assert_eq!(got, json!({"name": "n", "values": [1], "child": {"name": "c"}}));
    // An unset message field is its default: the empty object.
    let got = post_ok(&env, "/test/response-field", &json!({"stringValue": "x"})).await;
    assert_eq!(got, json!({}));
}

#[tokio::test]
async fn http_body_upload_echoes_bytes_and_content_type() {
    let env = start_test_service().await;
    let data: Vec<u8> = (0..=255u8).chain([0, 0xff, b'{']).collect();
    let reply = env.request(Method::POST, "/test/upload", &[("content-type", "image/png")], Some(data.clone())).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("image/png"));
    assert_eq!(reply.body.as_ref(), data.as_slice());
    // Not JSON, though it says so: a raw body is never parsed.
    let reply = env
        .request(Method::POST, "/test/upload", &[("content-type", "application/json")], Some(b"{not json".to_vec()))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.body.as_ref(), b"{not json");
}

#[tokio::test]
async fn http_body_download_returns_raw_bytes_with_their_content_type() {
    let env = start_test_service().await;
    let reply = env.get("/test/download/report.csv?content_type=text%2Fcsv%3B%20charset%3Dutf-8").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("text/csv; charset=utf-8"));
    assert_eq!(reply.body.as_ref(), b"contents of report.csv");
    let reply = env.get("/test/download/a%20b").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    assert_eq!(reply.body.as_ref(), b"contents of a b");
}

#[tokio::test]
async fn http_body_field_carries_the_raw_body() {
    let env = start_test_service().await;
    let reply = env
        .request(
            Method::POST,
            "/test/upload-field/doc.txt",
            &[("content-type", "text/plain; charset=utf-8")],
            Some(b"hello world".to_vec()),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json(), json!({"name": "doc.txt", "contentType": "text/plain; charset=utf-8", "size": "11"}));
}
