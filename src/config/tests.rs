// Tests may panic on unexpected input: that is how they fail.
#![allow(clippy::unwrap_used)]

use std::fs;

use super::values::{parse_duration, parse_size, parse_upstream_url, redact_url};
use super::*;

const ORIGIN: &str = "conf/protogate.yaml";

fn parse(text: &str) -> Result<Config, ConfigError> {
    from_yaml(text, Path::new(ORIGIN))
}

fn parse_ok(text: &str) -> Config {
    match parse(text) {
        Ok(config) => config,
        Err(e) => panic!("expected {text:?} to parse, got: {e}"),
    }
}

/// Asserts that `text` is refused with a message that names the file, the
/// key path and the problem, and that points at `line`.
fn assert_rejected(text: &str, key: &str, problem: &str, line: usize) {
    let err = match parse(text) {
        Ok(config) => panic!("expected {text:?} to be rejected, got {config:?}"),
        Err(e) => e,
    };
    let shown = err.to_string();
    assert!(shown.starts_with(ORIGIN), "no file name in: {shown}");
    assert!(shown.contains(key), "no key `{key}` in: {shown}");
    assert!(shown.contains(problem), "no `{problem}` in: {shown}");
    assert!(shown.contains(&format!("at line {line} column")), "not at line {line}: {shown}");
    assert!(!shown.contains('\n'), "not one line: {shown}");
    match err {
        ConfigError::File { line: Some(l), column: Some(_), .. } => assert_eq!(l, line, "{shown}"),
        other => panic!("expected a located file error, got {other:?}"),
    }
}

fn uri(s: &str) -> http::Uri {
    s.parse().unwrap()
}

fn rule(pattern: &str, url: &str) -> UpstreamRule {
    UpstreamRule::new(pattern, uri(url))
}

const FULL: &str = r#"
listen: 0.0.0.0:8000
admin:
  listen: "[::1]:9000"
descriptors:
  path: ./protos
threads: 3
shutdown_timeout: 5s
upstreams:
  acme.users.v1: http://127.0.0.1:50051
  acme.orders.v1.OrderService: { url: http://127.0.0.1:50052 }
  "*": https://backend.internal
json:
  use_proto_names: true
  emit_unpopulated: true
  enums_as_ints: true
  int64_as_numbers: true
  unknown_fields: ignore
  unknown_query_params: ignore
  query_path_conflict: path_wins
  pretty: true
routes:
  auto_map: false
  invalid_bindings: skip
  timeout: 1.5s
  stream_idle_timeout: 90s
  sse_keep_alive: 5s
  autofill_update_mask: false
  overrides:
    - match: { path_prefix: /v1/users, service: acme.users.v1.UserService,
               method: acme.users.v1.UserService/GetUser, http_method: GET }
      timeout: 250ms
      max_body: 1MiB
    - match:
        service: acme.orders.v1.OrderService
      max_body: 100kB
      stream_idle_timeout: 1m
limits:
  max_body: 2MB
  max_message: 64KiB
  header_read_timeout: 10s
  idle_timeout: 2m
forward_headers: [X-Tenant-ID, x-request-source]
logging:
  format: json
  level: protogate=debug,hyper=warn
"#;

#[test]
fn every_key_is_read() {
    let c = parse_ok(FULL);
    assert_eq!(c.listen, "0.0.0.0:8000".parse().unwrap());
    assert_eq!(c.admin_listen, "[::1]:9000".parse().unwrap());
    assert_eq!(c.descriptors, PathBuf::from("conf/protos"));
    assert_eq!(c.threads, Some(3));
    assert_eq!(
        c.upstreams,
        vec![
            rule("acme.users.v1", "http://127.0.0.1:50051/"),
            rule("acme.orders.v1.OrderService", "http://127.0.0.1:50052/"),
            rule("*", "https://backend.internal:443/"),
        ]
    );
    assert_eq!(
        c.json,
        JsonOptions {
            use_proto_names: true,
            emit_unpopulated: true,
            enums_as_ints: true,
            int64_as_numbers: true,
            unknown_fields: Strictness::Ignore,
            unknown_query_params: Strictness::Ignore,
            query_path_conflict: QueryPathConflict::PathWins,
            pretty: true,
        }
    );
    assert!(!c.routes.auto_map);
    assert_eq!(c.routes.invalid_bindings, InvalidBindings::Skip);
    assert!(!c.routes.autofill_update_mask);
    assert_eq!(c.routes.timeout, Duration::from_millis(1500));
    assert_eq!(
        c.routes.overrides,
        vec![
            RouteOverride {
                selector: RouteSelector {
                    path_prefix: Some("/v1/users".into()),
                    service: Some("acme.users.v1.UserService".into()),
                    method: Some("acme.users.v1.UserService/GetUser".into()),
                    http_method: Some(http::Method::GET),
                    version: None,
                    composition: None,
                },
                timeout: Some(Duration::from_millis(250)),
                max_body: Some(1 << 20),
                stream_idle_timeout: None,
            },
            RouteOverride {
                selector: RouteSelector {
                    service: Some("acme.orders.v1.OrderService".into()),
                    ..RouteSelector::default()
                },
                timeout: None,
                max_body: Some(100_000),
                stream_idle_timeout: Some(Duration::from_secs(60)),
            },
        ]
    );
    assert_eq!(c.routes.stream_idle_timeout, Duration::from_secs(90));
    assert_eq!(c.routes.sse_keep_alive, Duration::from_secs(5));
    assert_eq!(c.limits.max_body, 2_000_000);
    assert_eq!(c.limits.max_message, 64 << 10);
    assert_eq!(c.shutdown_timeout, Duration::from_secs(5));
    assert_eq!(c.limits.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.limits.idle_timeout, Duration::from_secs(120));
    assert_eq!(
        c.forward_headers,
        vec![http::HeaderName::from_static("x-tenant-id"), http::HeaderName::from_static("x-request-source"),]
    );
    assert_eq!(
        c.logging,
        Logging { format: LogFormat::Json, level: "protogate=debug,hyper=warn".into(), access: true }
    );
}

#[test]
fn the_shipped_example_is_valid() {
    let text = include_str!("../../protogate.example.yaml");
    let c = match from_yaml(text, Path::new("protogate.example.yaml")) {
        Ok(c) => c,
        Err(e) => panic!("protogate.example.yaml: {e}"),
    };
    assert!(!c.upstreams.is_empty());
    assert!(!c.routes.overrides.is_empty());
}

/// The example's compositions are commented out (none by default); with
/// the comment marks taken off they must still be valid.
#[test]
fn the_shipped_examples_composition_is_valid() {
    let text = include_str!("../../protogate.example.yaml");
    let start = text.find("# compositions:").unwrap();
    let uncommented: String =
        text[start..].lines().filter_map(|line| line.strip_prefix("# ")).map(|line| format!("{line}\n")).collect();
    let c = parse_ok(&uncommented);
    assert_eq!(c.compositions[0].name, "user-overview");
    assert_eq!(c.compositions[0].calls.len(), 2);
}

#[test]
fn empty_file_and_empty_sections_give_the_defaults() {
    let defaults = Config::default();
    assert_eq!(parse_ok(""), defaults);
    assert_eq!(parse_ok("# nothing here\n"), defaults);
    assert_eq!(parse_ok("listen:\njson:\nroutes:\nlimits:\nlogging:\nadmin:\n"), defaults);
}

#[test]
fn defaults_are_the_documented_ones() {
    let c = Config::default();
    assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.admin_listen, "127.0.0.1:9901".parse().unwrap());
    assert_eq!(c.descriptors, PathBuf::from("./descriptors"));
    assert_eq!(c.threads, None);
    assert!(c.upstreams.is_empty());
    assert_eq!(c.json.unknown_fields, Strictness::Reject);
    assert_eq!(c.json.unknown_query_params, Strictness::Reject);
    assert!(c.routes.auto_map);
    assert_eq!(c.routes.invalid_bindings, InvalidBindings::Reject);
    assert!(c.routes.autofill_update_mask);
    assert_eq!(c.routes.timeout, Duration::from_secs(30));
    assert_eq!(c.limits.max_body, 4 * 1024 * 1024);
    assert_eq!(c.limits.max_message, 1024 * 1024);
    assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(c.routes.stream_idle_timeout, Duration::from_secs(300));
    assert_eq!(c.routes.sse_keep_alive, Duration::from_secs(15));
    assert_eq!(c.limits.header_read_timeout, Duration::from_secs(30));
    assert_eq!(c.limits.idle_timeout, Duration::from_secs(60));
    assert_eq!(c.logging.format, LogFormat::Pretty);
    assert_eq!(c.logging.level, "info");
}

#[test]
fn a_section_keeps_the_defaults_of_keys_it_leaves_out() {
    let c = parse_ok("json:\n  pretty: true\nroutes:\n  auto_map: false\n");
    assert!(c.json.pretty);
    assert_eq!(c.json.unknown_fields, Strictness::Reject);
    assert!(!c.routes.auto_map);
    assert_eq!(c.routes.timeout, Duration::from_secs(30));
}

#[test]
fn unknown_keys_are_named_with_their_line() {
    assert_rejected("listn: 127.0.0.1:1\n", "unknown field `listn`", "expected one of", 1);
    assert_rejected(
        "listen: 127.0.0.1:1\njson:\n  pretty: true\n  use_proto_nmes: true\n",
        "json: unknown field `use_proto_nmes`",
        "`use_proto_names`",
        4,
    );
    assert_rejected("admin:\n  lisen: 127.0.0.1:1\n", "admin: unknown field `lisen`", "", 2);
    assert_rejected(
        "routes:\n  overrides:\n    - match: { service: a.B }\n      timeout: 1s\n      policy: x\n",
        "routes.overrides[0]: unknown field `policy`",
        "",
        5,
    );
    assert_rejected(
        "routes:\n  overrides:\n    - match: { servce: a.B }\n      timeout: 1s\n",
        "routes.overrides[0].match: unknown field `servce`",
        "",
        3,
    );
    assert_rejected("upstreams:\n  a: { url: http://x, tls: {} }\n", "upstreams.a: unknown field `tls`", "", 2);
    assert_rejected("limits:\n  max_bdy: 1\n", "limits: unknown field `max_bdy`", "", 2);
    assert_rejected("logging:\n  lvl: info\n", "logging: unknown field `lvl`", "", 2);
    assert_rejected("descriptors:\n  pth: x\n", "descriptors: unknown field `pth`", "", 2);
}

#[test]
fn bad_values_are_named_with_their_line() {
    let cases: &[(&str, &str, &str, usize)] = &[
        ("listen: localhost:80\n", "listen", "invalid address", 1),
        ("listen: [::]:80\n", "listen", "quote IPv6", 1),
        ("admin:\n  listen: 1.2.3.4\n", "admin.listen", "IP:PORT", 2),
        ("threads: 0\n", "threads", "at least 1", 1),
        ("threads: -2\n", "threads", "at least 1", 1),
        ("threads: many\n", "threads", "whole number", 1),
        ("descriptors: \"\"\n", "descriptors", "must not be empty", 1),
        ("routes:\n  timeout: 0s\n", "routes.timeout", "greater than zero", 2),
        ("routes:\n  timeout: -3s\n", "routes.timeout", "greater than zero", 2),
        ("routes:\n  timeout: -3\n", "routes.timeout", "greater than zero", 2),
        ("routes:\n  timeout: 3 days\n", "routes.timeout", "unknown unit `days`", 2),
        ("routes:\n  timeout: 1.5\n", "routes.timeout", "needs a unit", 2),
        ("routes:\n  auto_map: yes\n", "routes.auto_map", "boolean", 2),
        ("routes:\n  invalid_bindings: ignore\n", "routes.invalid_bindings", "`reject` or `skip`", 2),
        ("routes:\n  autofill_update_mask: on\n", "routes.autofill_update_mask", "boolean", 2),
        ("limits:\n  max_body: 0\n", "limits.max_body", "at least 1 byte", 2),
        ("limits:\n  max_body: 4mb\n", "limits.max_body", "unknown unit `mb`", 2),
        ("limits:\n  max_body: lots\n", "limits.max_body", "invalid size", 2),
        ("json:\n  unknown_fields: drop\n", "json.unknown_fields", "`reject` or `ignore`", 2),
        ("json:\n  unknown_query_params: Reject\n", "json.unknown_query_params", "unknown variant", 2),
        ("json:\n  pretty: 1\n", "json.pretty", "boolean", 2),
        ("logging:\n  format: xml\n", "logging.format", "`pretty` or `json`", 2),
        ("logging:\n  level: x=loud\n", "logging.level", "invalid log filter", 2),
        ("upstreams:\n  a: ftp://x\n", "upstreams.a", "scheme must be http or https", 2),
        ("upstreams:\n  a: 127.0.0.1:50051\n", "upstreams.a", "http://", 2),
        ("upstreams:\n  a: http://x/api\n", "upstreams.a", "path or query", 2),
        ("upstreams:\n  a: http://x?q=1\n", "upstreams.a", "path or query", 2),
        ("upstreams:\n  a: http://:80\n", "upstreams.a", "", 2),
        ("upstreams:\n  a: { url: ftp://x }\n", "upstreams.a.url", "http or https", 2),
        ("upstreams:\n  a: {}\n", "upstreams.a", "give `url`", 2),
        ("upstreams:\n  acme.*: http://x\n", "upstreams", "invalid upstream pattern", 2),
        ("upstreams:\n  acme..v1: http://x\n", "upstreams", "invalid upstream pattern", 2),
        ("upstreams:\n  1acme: http://x\n", "upstreams", "invalid upstream pattern", 2),
        ("upstreams:\n  a.b: http://x\n  c: http://y\n  a.b: http://z\n", "upstreams", "`a.b` is given twice", 4),
        ("forward_headers: [x-a, \"bad header\"]\n", "forward_headers[1]", "not a valid header", 1),
        ("forward_headers:\n  - connection\n", "forward_headers[0]", "hop-by-hop", 2),
        ("forward_headers:\n  - Transfer-Encoding\n", "forward_headers[0]", "hop-by-hop", 2),
        ("forward_headers:\n  - te\n", "forward_headers[0]", "hop-by-hop", 2),
        ("forward_headers:\n  - upgrade\n", "forward_headers[0]", "hop-by-hop", 2),
        ("forward_headers:\n  - keep-alive\n", "forward_headers[0]", "hop-by-hop", 2),
        ("forward_headers:\n  - proxy-authorization\n", "forward_headers[0]", "hop-by-hop", 2),
        ("forward_headers:\n  - content-type\n", "forward_headers[0]", "set by the gateway", 2),
        ("forward_headers:\n  - grpc-timeout\n", "forward_headers[0]", "reserved by gRPC", 2),
        ("forward_headers:\n  - x-trace-bin\n", "forward_headers[0]", "binary", 2),
        ("forward_headers:\n  - x-a\n  - X-A\n", "forward_headers[1]", "listed twice", 3),
        ("forward_headers: x-a\n", "forward_headers", "list of header names", 1),
    ];
    for (text, key, problem, line) in cases {
        assert_rejected(text, key, problem, *line);
    }
}

#[test]
fn route_overrides_are_checked() {
    let cases: &[(&str, &str, &str, usize)] = &[
        (
            "routes:\n  overrides:\n    - match: {}\n      timeout: 1s\n",
            "routes.overrides[0].match",
            "needs at least one of",
            3,
        ),
        ("routes:\n  overrides:\n    - timeout: 1s\n", "routes.overrides[0]", "missing field `match`", 3),
        (
            "routes:\n  overrides:\n    - match: { service: a.B }\n      timeout: 1s\n    - match: { service: a.C }\n",
            "routes.overrides[1]",
            "changes nothing",
            5,
        ),
        (
            "routes:\n  overrides:\n    - match:\n        http_method: get\n      timeout: 1s\n",
            "routes.overrides[0].match.http_method",
            "must be uppercase: `GET`",
            4,
        ),
        (
            "routes:\n  overrides:\n    - match:\n        path_prefix: v1/users\n      timeout: 1s\n",
            "routes.overrides[0].match.path_prefix",
            "must start with /",
            4,
        ),
        (
            "routes:\n  overrides:\n    - match:\n        method: acme.v1.S.Get\n      timeout: 1s\n",
            "routes.overrides[0].match.method",
            "SERVICE/METHOD",
            4,
        ),
        (
            "routes:\n  overrides:\n    - match:\n        service: acme/v1\n      timeout: 1s\n",
            "routes.overrides[0].match.service",
            "invalid service",
            4,
        ),
        (
            "routes:\n  overrides:\n    - match:\n        service: a.S\n        method: a.T/Get\n      timeout: 1s\n",
            "routes.overrides[0].match",
            "not in service `a.S`",
            4,
        ),
        (
            "routes:\n  overrides:\n    - match: { service: a.S }\n      max_body: 0\n",
            "routes.overrides[0].max_body",
            "at least 1 byte",
            4,
        ),
        (
            "routes:\n  overrides:\n    - match: { service: a.S }\n      timeout: 0ms\n",
            "routes.overrides[0].timeout",
            "greater than zero",
            4,
        ),
    ];
    for (text, key, problem, line) in cases {
        assert_rejected(text, key, problem, *line);
    }
}

#[test]
fn yaml_syntax_errors_carry_the_file_and_line() {
    let err = parse("json:\n  pretty: [true\n").unwrap_err();
    let shown = err.to_string();
    assert!(shown.starts_with(ORIGIN), "{shown}");
    assert!(shown.contains("line"), "{shown}");
    assert!(matches!(err, ConfigError::File { line: Some(_), .. }));
}

#[test]
fn durations() {
    let ok = [
        ("30s", Duration::from_secs(30)),
        ("30", Duration::from_secs(30)),
        ("1.5s", Duration::from_millis(1500)),
        ("0.1s", Duration::from_millis(100)),
        ("250ms", Duration::from_millis(250)),
        ("2m", Duration::from_secs(120)),
        ("1h", Duration::from_secs(3600)),
        ("1.25h", Duration::from_secs(4500)),
        ("10 s", Duration::from_secs(10)),
    ];
    for (text, want) in ok {
        assert_eq!(parse_duration(text), Ok(want), "{text}");
    }
    for bad in [
        "",
        "s",
        "0",
        "0s",
        "0.0000000001s",
        "1.5",
        "1.s",
        ".5s",
        "1..5s",
        "5x",
        "5 sec",
        "1e3s",
        "99999999999999999999999999999999999999999h",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
    }
}

#[test]
fn sizes() {
    let ok = [
        ("4MiB", 4 << 20),
        ("512KiB", 512 << 10),
        ("1GiB", 1 << 30),
        ("1MB", 1_000_000),
        ("100kB", 100_000),
        ("100KB", 100_000),
        ("2GB", 2_000_000_000),
        ("1.5MiB", 3 << 19),
        ("1024", 1024),
        ("1024B", 1024),
    ];
    for (text, want) in ok {
        assert_eq!(parse_size(text), Ok(want), "{text}");
    }
    for bad in ["", "0", "0B", "MiB", "4mib", "4 M", "-1", "1.5.5MB", "99999999999999999999999GiB"] {
        assert!(parse_size(bad).is_err(), "{bad:?} was accepted");
    }
}

#[test]
fn integer_values_in_the_file() {
    let c = parse_ok("routes:\n  timeout: 45\nlimits:\n  max_body: 2048\n");
    assert_eq!(c.routes.timeout, Duration::from_secs(45));
    assert_eq!(c.limits.max_body, 2048);
}

#[test]
fn upstream_urls_are_normalised() {
    let cases = [
        ("http://backend", "http://backend:80/"),
        ("https://backend", "https://backend:443/"),
        ("http://backend:50051/", "http://backend:50051/"),
        ("https://10.0.0.1:8443", "https://10.0.0.1:8443/"),
        ("http://[::1]:50051", "http://[::1]:50051/"),
        ("https://[::1]", "https://[::1]:443/"),
    ];
    for (text, want) in cases {
        let got = parse_upstream_url(text).unwrap();
        assert_eq!(got.to_string(), want, "{text}");
        assert_eq!(got.port_u16(), uri(want).port_u16());
    }
}

#[test]
fn credentials_never_reach_a_message() {
    let err = parse("upstreams:\n  a: https://user:hunter2@x\n").unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(err.to_string().contains("credentials"), "{err}");

    let args = ConfigArgs { upstreams: vec!["a=https://user:hunter2@x/".into()], ..ConfigArgs::default() };
    let err = load_with_default(&args, Path::new("/nonexistent/protogate.yaml")).unwrap_err();
    let shown = err.to_string();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.starts_with("--upstream a=https://***@x/"), "{shown}");
    assert_eq!(redact_url("http://x:1"), "http://x:1");
}

/// A folder with a config file in it, removed when dropped.
struct ConfigDir {
    dir: tempfile::TempDir,
}

impl ConfigDir {
    fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("gateway.yaml"), text).unwrap();
        Self { dir }
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("gateway.yaml")
    }

    fn args(&self) -> ConfigArgs {
        ConfigArgs { config: Some(self.file()), ..ConfigArgs::default() }
    }
}

fn no_default() -> &'static Path {
    Path::new("/nonexistent/protogate.yaml")
}

#[test]
fn relative_descriptor_paths_follow_the_config_file() {
    let dir = ConfigDir::new("descriptors:\n  path: ./protos/v1\n");
    let c = load(&dir.args()).unwrap();
    assert_eq!(c.descriptors, dir.dir.path().join("protos/v1"));

    let dir = ConfigDir::new("descriptors: ../shared\n");
    let c = load(&dir.args()).unwrap();
    assert_eq!(c.descriptors, dir.dir.path().join("../shared"));

    let dir = ConfigDir::new("descriptors: { path: /srv/descriptors }\n");
    let c = load(&dir.args()).unwrap();
    assert_eq!(c.descriptors, PathBuf::from("/srv/descriptors"));

    // A bare file name has no folder: paths stay relative to the CWD.
    let c = from_yaml("descriptors: { path: ./protos }\n", Path::new("protogate.yaml")).unwrap();
    assert_eq!(c.descriptors, PathBuf::from("protos"));
}

#[test]
fn the_descriptors_flag_is_relative_to_the_working_directory() {
    let dir = ConfigDir::new("descriptors: { path: ./protos }\n");
    let args = ConfigArgs { descriptors: Some(PathBuf::from("./mine")), ..dir.args() };
    assert_eq!(load(&args).unwrap().descriptors, PathBuf::from("./mine"));
}

#[test]
fn flags_override_the_file() {
    let dir = ConfigDir::new(
        "listen: 127.0.0.1:1000\nadmin: { listen: 127.0.0.1:1001 }\nthreads: 2\njson: { pretty: true }\n",
    );
    let args = ConfigArgs {
        listen: Some("0.0.0.0:2000".parse().unwrap()),
        admin_listen: Some("0.0.0.0:2001".parse().unwrap()),
        threads: Some(8),
        ..dir.args()
    };
    let c = load(&args).unwrap();
    assert_eq!(c.listen, "0.0.0.0:2000".parse().unwrap());
    assert_eq!(c.admin_listen, "0.0.0.0:2001".parse().unwrap());
    assert_eq!(c.threads, Some(8));
    // Keys without a flag keep the file's value.
    assert!(c.json.pretty);

    let c = load(&dir.args()).unwrap();
    assert_eq!(c.listen, "127.0.0.1:1000".parse().unwrap());
    assert_eq!(c.threads, Some(2));
}

#[test]
fn upstream_flags_merge_with_the_file() {
    let dir = ConfigDir::new("upstreams:\n  acme.users.v1: http://file-users:1\n  \"*\": http://file-default:2\n");
    let args = ConfigArgs {
        upstreams: vec!["acme.orders.v1=http://flag-orders:3".into(), "*=https://flag-default".into()],
        ..dir.args()
    };
    let c = load(&args).unwrap();
    assert_eq!(
        c.upstreams,
        vec![
            rule("acme.users.v1", "http://file-users:1/"),
            rule("*", "https://flag-default:443/"),
            rule("acme.orders.v1", "http://flag-orders:3/"),
        ]
    );
}

#[test]
fn bad_flags_are_named() {
    let cases: &[(ConfigArgs, &str)] = &[
        (
            ConfigArgs { upstreams: vec!["acme=ftp://x".into()], ..ConfigArgs::default() },
            "--upstream acme=ftp://x: URL scheme must be http or https",
        ),
        (
            ConfigArgs { upstreams: vec!["http://x".into()], ..ConfigArgs::default() },
            "--upstream http://x: expected PATTERN=URL",
        ),
        (
            ConfigArgs { upstreams: vec!["acme-users=http://x".into()], ..ConfigArgs::default() },
            "--upstream acme-users=http://x: invalid upstream pattern",
        ),
        (
            ConfigArgs { upstreams: vec!["a=http://x".into(), "a=http://y".into()], ..ConfigArgs::default() },
            "--upstream a=http://y: upstream pattern `a` is given twice",
        ),
        (ConfigArgs { threads: Some(0), ..ConfigArgs::default() }, "--threads 0: must be at least 1"),
    ];
    for (args, want) in cases {
        let err = load_with_default(args, no_default()).unwrap_err();
        assert!(matches!(err, ConfigError::Flag { .. }), "{err:?}");
        assert!(err.to_string().starts_with(want), "{err} vs {want}");
    }
}

#[test]
fn a_missing_config_flag_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    let args = ConfigArgs { config: Some(missing.clone()), ..ConfigArgs::default() };
    let err = load(&args).unwrap_err();
    assert!(matches!(&err, ConfigError::Read { path, .. } if *path == missing), "{err:?}");
    assert!(err.to_string().contains("nope.yaml"), "{err}");
}

#[test]
fn the_default_file_is_optional_and_used_when_present() {
    let dir = tempfile::tempdir().unwrap();
    let default = dir.path().join("protogate.yaml");
    let args = ConfigArgs { upstreams: vec!["*=http://x".into()], ..ConfigArgs::default() };
    let c = load_with_default(&args, &default).unwrap();
    assert_eq!(c.listen, Config::default().listen);
    assert_eq!(c.upstreams, vec![rule("*", "http://x:80/")]);

    fs::write(&default, "listen: 127.0.0.1:7000\n").unwrap();
    let c = load_with_default(&args, &default).unwrap();
    assert_eq!(c.listen, "127.0.0.1:7000".parse().unwrap());

    // An explicit --config wins over the default file.
    let other = ConfigDir::new("listen: 127.0.0.1:7001\n");
    let c = load_with_default(&other.args(), &default).unwrap();
    assert_eq!(c.listen, "127.0.0.1:7001".parse().unwrap());
}

#[test]
fn errors_name_the_file_that_was_loaded() {
    let dir = ConfigDir::new("json:\n  pretty: maybe\n");
    let err = load(&dir.args()).unwrap_err();
    let shown = err.to_string();
    assert!(shown.starts_with(&dir.file().display().to_string()), "{shown}");
    assert!(shown.contains("json.pretty"), "{shown}");
    assert!(shown.contains("line 2"), "{shown}");
}

#[test]
fn clap_reads_the_flags() {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ConfigArgs,
    }
    let cli = Cli::try_parse_from([
        "protogate",
        "--config",
        "x.yaml",
        "--descriptors",
        "d",
        "--listen",
        "0.0.0.0:1",
        "--admin-listen",
        "127.0.0.1:2",
        "--upstream",
        "a=http://x",
        "--upstream",
        "*=http://y",
        "--threads",
        "2",
    ])
    .unwrap();
    assert_eq!(cli.args.config, Some(PathBuf::from("x.yaml")));
    assert_eq!(cli.args.admin_listen, Some("127.0.0.1:2".parse().unwrap()));
    assert_eq!(cli.args.upstreams.len(), 2);
    assert_eq!(cli.args.threads, Some(2));

    let err = Cli::try_parse_from(["protogate", "--listen", "localhost:1"]).err().unwrap().to_string();
    assert!(err.contains("IP:PORT"), "{err}");
}

#[test]
fn rate_limits_are_checked_with_key_and_line() {
    let cases: &[(&str, &str, &str, usize)] = &[
        ("rate_limits:\n  max_keys: 0\n", "rate_limits.max_keys", "at least 1", 2),
        ("rate_limits:\n  redis:\n    url: http://x\n", "rate_limits.redis.url", "not a Redis URL", 3),
        (
            "rate_limits:\n  redis:\n    url: redis://:hunter2@host:notaport\n",
            "rate_limits.redis.url",
            "not a Redis URL",
            3,
        ),
        (
            "rate_limits:\n  rules:\n    - name: ''\n      key: ip\n      rate: 1/s\n",
            "rate_limits.rules[0].name",
            "must not be empty",
            3,
        ),
        (
            "rate_limits:\n  rules:\n    - key: nonsense\n      rate: 1/s\n",
            "rate_limits.rules[0].key",
            "unknown key part \"nonsense\"",
            3,
        ),
        (
            "rate_limits:\n  rules:\n    - key:\n        - ip\n        - header:bad header\n      rate: 1/s\n",
            "rate_limits.rules[0].key[1]",
            "invalid header name",
            5,
        ),
        (
            "rate_limits:\n  rules:\n    - key: [consumer, ip, ' ip']\n      rate: 1/s\n",
            "rate_limits.rules[0].key[2]",
            "\" ip\" appears twice",
            3,
        ),
        (
            "rate_limits:\n  rules:\n    - key: []\n      rate: 1/s\n",
            "rate_limits.rules[0].key",
            "at least one part",
            3,
        ),
        (
            "rate_limits:\n  rules:\n    - key: ip\n      rate: 1/s\n      burst: 0\n",
            "rate_limits.rules[0].burst",
            "at least 1",
            5,
        ),
        (
            "rate_limits:\n  rules:\n    - key: ip\n      rate: 1/s\n      burst: -2\n",
            "rate_limits.rules[0].burst",
            "at least 1",
            5,
        ),
        // Checks that need two places of the section are made once it is
        // read, and still point at the node at fault.
        (
            "rate_limits:\n  rules:\n    - name: a\n      key: ip\n      rate: 1/s\n    - name: a\n      key: ip\n      rate: 1/s\n",
            "rate_limits.rules[1].name",
            "another rule is named \"a\"",
            6,
        ),
        (
            "rate_limits:\n  rules:\n    - name: rule-2\n      key: ip\n      rate: 1/s\n    - key: ip\n      rate: 1/s\n",
            "rate_limits.rules[1]",
            "default name",
            6,
        ),
        (
            "rate_limits:\n  rules:\n    - name: search\n      key: ip\n      rate: 10/s\n      burst: 2\n      cost: 3\n",
            "rate_limits.rules[0].cost",
            "rule \"search\": cost 3 exceeds the burst 2",
            7,
        ),
        (
            "rate_limits:\n  rules:\n    - key: ip\n      rate: 5/s\n      route_costs:\n        - match: { path_prefix: /v1 }\n          cost: 1\n        - match: { path_prefix: /v2 }\n          cost: 6\n",
            "rate_limits.rules[0].route_costs[1].cost",
            "cost 6 exceeds the burst 5",
            9,
        ),
        (
            "rate_limits:\n  rules:\n    - key: ip\n      rate: 1/s\n    - key: ip\n      rate: 1/s\n      backend: redis\n",
            "rate_limits.rules[1].backend",
            "rule \"rule-2\": backend redis needs a rate_limits.redis section",
            7,
        ),
    ];
    for (text, key, problem, line) in cases {
        assert_rejected(text, key, problem, *line);
    }
    // The Redis URL may hold a password: it is never echoed.
    let err = parse("rate_limits:\n  redis:\n    url: redis://:hunter2@host:notaport\n").unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[test]
fn a_valid_rate_limits_section_is_read() {
    let c = parse_ok(
        "rate_limits:\n  max_keys: 10\n  redis: { url: 'redis://127.0.0.1:6379' }\n  rules:\n    - key: [consumer, header:x-tenant]\n      rate: 10/s\n      burst: 10\n      cost: 10\n      backend: redis\n    - key: ip\n      rate: 1/s\n",
    );
    assert_eq!(c.rate_limits.max_keys, 10);
    let parts = c.rate_limits.rules[0].key.parts();
    assert_eq!(parts, [rate_limits::KeyPart::Consumer, rate_limits::KeyPart::Header("x-tenant".parse().unwrap())]);
    assert_eq!(c.rate_limits.rules[1].name_or_default(1), "rule-2");
}

/// An `auth` section with one JWT provider and the API keys, for policies.
const AUTH: &str = "auth:\n  jwt:\n    - name: corp\n      secret: { env: CORP_JWT }\n  api_keys:\n    keys: []\n";

#[test]
fn policies_are_checked_with_key_and_line() {
    let with_auth = |policies: &str| format!("{AUTH}{policies}");
    let cases: Vec<(String, &str, &str, usize)> = vec![
        (
            with_auth("policies:\n  rules:\n    - path_prefix: v1/admin\n"),
            "policies.rules[0].path_prefix",
            "\"v1/admin\" must start with /",
            9,
        ),
        (
            with_auth("policies:\n  rules:\n    - service: a.S\n    - method: a.S.Get\n"),
            "policies.rules[1].method",
            "must be package.Service/Method",
            10,
        ),
        (
            with_auth("policies:\n  rules:\n    - http_method: \"GE T\"\n"),
            "policies.rules[0].http_method",
            "\"GE T\" is not an HTTP method",
            9,
        ),
        (
            with_auth("policies:\n  rules:\n    - name: admin\n      service: a.S\n      method: a.T/Get\n"),
            "policies.rules[0]",
            "rule \"admin\": method `a.T/Get` is not in service `a.S`",
            9,
        ),
        (
            with_auth("policies:\n  rules:\n    - name: health\n      allow: public\n      scopes: [read]\n"),
            "policies.rules[0]",
            "rule \"health\": a public rule cannot require providers, scopes or claims",
            9,
        ),
        // Against `auth`, once the file is read.
        (
            with_auth("policies:\n  rules:\n    - name: admin\n      providers:\n        - corp\n        - nobody\n"),
            "policies.rules[0].providers[1]",
            "rule \"admin\": unknown provider \"nobody\"; auth configures corp, api_key",
            12,
        ),
        ("policies:\n  default: authenticated\n".to_string(), "policies.default", "auth configures no provider", 2),
        (
            "policies:\n  default: public\n  rules:\n    - service: a.S\n      allow: authenticated\n".to_string(),
            "policies.rules[0].allow",
            "rule \"rule 1\" requires authentication, but auth configures no provider",
            5,
        ),
        // `allow` left out means authenticated: the rule itself is named.
        (
            "policies:\n  rules:\n    - service: a.S\n    - name: admin\n      path_prefix: /admin\n".to_string(),
            "policies.rules[0]",
            "requires authentication",
            3,
        ),
    ];
    for (text, key, problem, line) in &cases {
        assert_rejected(text, key, problem, *line);
    }
}

#[test]
fn a_valid_policies_section_is_read() {
    let c = parse_ok(&format!(
        "{AUTH}policies:\n  rules:\n    - name: admin\n      path_prefix: /v1/admin\n      http_method: delete\n      providers: [corp, api_key]\n    - service: a.S\n      allow: public\n"
    ));
    assert_eq!(c.policies.rules.len(), 2);
    assert_eq!(c.policies.rules[0].http_method.as_deref(), Some("delete"));
    // Without providers, public rules are fine.
    parse_ok("policies:\n  default: public\n  rules:\n    - service: a.S\n      allow: public\n");
}

#[test]
fn auth_is_checked_with_key_and_line() {
    let digest = "ab".repeat(32);
    let cases: Vec<(String, &str, &str, usize)> = vec![
        ("auth:\n  realm: 'a\"b'\n".into(), "auth.realm", "cannot be used in a WWW-Authenticate header", 2),
        (
            "auth:\n  jwt:\n    - name: ''\n      secret: { env: X }\n".into(),
            "auth.jwt[0].name",
            "must not be empty",
            3,
        ),
        (
            "auth:\n  jwt:\n    - name: a\n      secret: { env: X }\n      jwks_url: https://x.test/jwks\n".into(),
            "auth.jwt[0]",
            "set exactly one of jwks_url, jwks_file and secret",
            3,
        ),
        (
            "auth:\n  jwt:\n    - name: a\n      secret: { env: X }\n    - name: b\n      issuer: https://x.test\n".into(),
            "auth.jwt[1]",
            "set exactly one of jwks_url, jwks_file and secret",
            5,
        ),
        (
            "auth:\n  jwt:\n    - name: a\n      jwks_url: ftp://x.test/jwks\n".into(),
            "auth.jwt[0].jwks_url",
            "must be http:// or https://",
            4,
        ),
        (
            "auth:\n  jwt:\n    - name: a\n      secret: { env: X }\n      algorithms: [HS256, RS256]\n".into(),
            "auth.jwt[0]",
            "algorithm RS256 needs a public key",
            3,
        ),
        (
            "auth:\n  jwt:\n    - name: a\n      jwks_url: https://x.test/jwks\n      algorithms: [HS256]\n".into(),
            "auth.jwt[0]",
            "algorithm HS256 needs a shared secret",
            3,
        ),
        (
            "auth:\n  jwt:\n    - name: a\n      secret: { env: X }\n      param: x token\n".into(),
            "auth.jwt[0]",
            "param \"x token\" is not a header name",
            3,
        ),
        (
            "auth:\n  api_keys:\n    header: x key\n    keys: []\n".into(),
            "auth.api_keys.header",
            "\"x key\" is not a header name",
            3,
        ),
        (
            format!("auth:\n  api_keys:\n    keys:\n      - id: ''\n        sha256: {digest}\n"),
            "auth.api_keys.keys[0].id",
            "must not be empty",
            4,
        ),
        (
            "auth:\n  api_keys:\n    keys:\n      - id: batch\n        sha256: abc\n".into(),
            "auth.api_keys.keys[0].sha256",
            "must be 64 hex digits",
            5,
        ),
        (
            "auth:\n  forward_claims:\n    - email\n    - { claim: sub, header: x-consumer-id }\n".into(),
            "auth.forward_claims[1].header",
            "a claim cannot be sent as x-consumer-id",
            4,
        ),
        (
            "auth:\n  forward_claims:\n    - claim: tier\n      header: grpc-tier\n".into(),
            "auth.forward_claims[0].header",
            "reserved by gRPC",
            4,
        ),
        (
            "auth:\n  forward_claims:\n    - claim: tier\n      header: x tier\n".into(),
            "auth.forward_claims[0].header",
            "not a header name",
            4,
        ),
        // Checks that need two places of the section.
        (
            "auth:\n  jwt:\n    - name: corp\n      secret: { env: X }\n    - name: corp\n      jwks_url: https://x.test/jwks\n"
                .into(),
            "auth.jwt[1].name",
            "provider name \"corp\" is used by auth.jwt[0] too",
            5,
        ),
        (
            "auth:\n  jwt:\n    - name: corp\n      secret: { env: X }\n  api_keys:\n    name: corp\n    keys: []\n".into(),
            "auth.api_keys.name",
            "provider name \"corp\" is used by auth.jwt[0] too",
            6,
        ),
        // The API keys' default name: reported at `api_keys`.
        (
            "auth:\n  jwt:\n    - name: api_key\n      secret: { env: X }\n  api_keys:\n    keys: []\n".into(),
            "auth.api_keys",
            "unless api_keys.name says otherwise",
            6,
        ),
        (
            format!(
                "auth:\n  api_keys:\n    keys:\n      - id: a\n        sha256: {digest}\n      - id: a\n        sha256: {}\n",
                "cd".repeat(32)
            ),
            "auth.api_keys.keys[1].id",
            "key id \"a\" is used by keys[0] too",
            6,
        ),
        (
            format!(
                "auth:\n  api_keys:\n    keys:\n      - id: a\n        sha256: {digest}\n      - id: b\n        sha256: {}\n",
                digest.to_uppercase()
            ),
            "auth.api_keys.keys[1].sha256",
            "key \"b\" is the same key as keys[0]",
            7,
        ),
    ];
    for (text, key, problem, line) in &cases {
        assert_rejected(text, key, problem, *line);
    }
}

#[test]
fn a_valid_auth_section_is_read() {
    let c = parse_ok(&format!(
        "auth:\n  realm: acme\n  jwt:\n    - name: corp\n      jwks_url: https://issuer.test/jwks\n    - name: files\n      jwks_file: ./jwks.json\n      algorithms: [HS256, RS256]\n  api_keys:\n    header: X-Key\n    keys:\n      - id: batch\n        sha256: {}\n  forward_claims: [email, {{ claim: groups, header: X-Groups }}]\n",
        "AB".repeat(32)
    ));
    assert_eq!(c.auth.provider_names(), ["corp", "files", "api_key"]);
    assert_eq!(c.auth.realm.as_deref(), Some("acme"));
    let headers: Vec<String> =
        c.auth.forward_claims.iter().map(|claim| claim.header().unwrap().as_str().to_owned()).collect();
    assert_eq!(headers, ["x-claim-email", "x-groups"]);
}

/// DESIGN §8's example, plus a route with a body and every kind of value.
const COMPOSITIONS: &str = r#"
compositions:
  - name: user-overview
    get: /v1/users/{id}/overview
    timeout: 2s
    calls:
      user:
        method: acme.users.v1.UserService/GetUser
        request: { id: "{path.id}" }
      orders:
        method: acme.orders.v1.OrderService/ListOrders
        request: { user_id: "{user.id}", page_size: 5 }
        timeout: 500ms
        optional: true
      friends:
        method: acme.users.v1.UserService/GetUser
        for_each: "{user.friend_ids}"
        request: { id: "{item}" }
        max_concurrency: 8
    response:
      user: "{user}"
      orders: "{orders.orders}"
      friends: "{friends}"
  - name: checkout
    post: /v1/users/{user.id}/checkout
    on_error: fail
    calls:
      order:
        method: acme.orders.v1.OrderService/CreateOrder
        request:
          user_id: "{path.user.id}"
          items: "{body.items}"
          currency_code: EUR
          note: "by {path.user.id} via {query.source}"
          tags: [a, 1, true, ~, 2.5]
          filter.region: { name: eu, codes: [1, 2] }
      ping:
        method: acme.orders.v1.OrderService/Ping
        request: {}
      explicit:
        method: acme.orders.v1.OrderService/Ping
        request: { message: "{body}" }
"#;

#[test]
fn a_valid_compositions_section_is_read_in_order() {
    use compositions::{Call, Composition, OnError, DEFAULT_MAX_CONCURRENCY};
    use serde_json::json;

    let c = parse_ok(COMPOSITIONS);
    let call = |name: &str, method: &str, request: Vec<(&str, serde_json::Value)>| Call {
        name: name.into(),
        method: method.into(),
        request: request.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        timeout: None,
        optional: false,
        for_each: None,
        max_concurrency: DEFAULT_MAX_CONCURRENCY,
    };
    let overview = Composition {
        name: "user-overview".into(),
        http_method: http::Method::GET,
        path: "/v1/users/{id}/overview".into(),
        timeout: Some(Duration::from_secs(2)),
        on_error: OnError::Partial,
        calls: vec![
            call("user", "acme.users.v1.UserService/GetUser", vec![("id", json!("{path.id}"))]),
            Call {
                timeout: Some(Duration::from_millis(500)),
                optional: true,
                ..call(
                    "orders",
                    "acme.orders.v1.OrderService/ListOrders",
                    vec![("user_id", json!("{user.id}")), ("page_size", json!(5))],
                )
            },
            Call {
                for_each: Some("{user.friend_ids}".into()),
                max_concurrency: 8,
                ..call("friends", "acme.users.v1.UserService/GetUser", vec![("id", json!("{item}"))])
            },
        ],
        response: Some(vec![
            ("user".into(), json!("{user}")),
            ("orders".into(), json!("{orders.orders}")),
            ("friends".into(), json!("{friends}")),
        ]),
    };
    let checkout = Composition {
        name: "checkout".into(),
        http_method: http::Method::POST,
        path: "/v1/users/{user.id}/checkout".into(),
        timeout: None,
        on_error: OnError::Fail,
        calls: vec![
            call(
                "order",
                "acme.orders.v1.OrderService/CreateOrder",
                vec![
                    ("user_id", json!("{path.user.id}")),
                    ("items", json!("{body.items}")),
                    ("currency_code", json!("EUR")),
                    ("note", json!("by {path.user.id} via {query.source}")),
                    ("tags", json!(["a", 1, true, null, 2.5])),
                    ("filter.region", json!({ "name": "eu", "codes": [1, 2] })),
                ],
            ),
            call("ping", "acme.orders.v1.OrderService/Ping", vec![]),
            call("explicit", "acme.orders.v1.OrderService/Ping", vec![("message", json!("{body}"))]),
        ],
        response: None,
    };
    assert_eq!(c.compositions, vec![overview, checkout]);
    assert_eq!(c.compositions[0].calls[2].dependencies(), ["user"]);
    assert!(c.compositions[1].calls[0].dependencies().is_empty());
    // `partial`, the default, may be written.
    let partial = COMPOSITIONS.replace("on_error: fail", "on_error: partial");
    assert_eq!(parse_ok(&partial).compositions[1].on_error, OnError::Partial);
    // No section, no compositions.
    assert!(parse_ok("compositions:\n").compositions.is_empty());
    assert!(parse_ok("").compositions.is_empty());
}

#[test]
fn the_selector_key_composition_is_read_everywhere() {
    let text = format!(
        "{COMPOSITIONS}routes:\n  overrides:\n    - match: {{ composition: checkout }}\n      timeout: 5s\n\
         policies:\n  rules:\n    - composition: user-overview\n      allow: public\n\
         rate_limits:\n  rules:\n    - match: {{ composition: checkout }}\n      key: ip\n      rate: 5/s\n      \
         route_costs:\n        - match: {{ composition: user-overview }}\n          cost: 2\n"
    );
    let c = parse_ok(&text);
    assert_eq!(c.routes.overrides[0].selector.composition.as_deref(), Some("checkout"));
    assert_eq!(c.policies.rules[0].composition.as_deref(), Some("user-overview"));
    assert_eq!(c.rate_limits.rules[0].selector.composition.as_deref(), Some("checkout"));
    assert_eq!(c.rate_limits.rules[0].route_costs[0].selector.composition.as_deref(), Some("user-overview"));
}

/// A composition `c` at `GET /v1/x/{id}` (lines 1 to 3) followed by `rest`,
/// which starts at line 4.
fn composition(rest: &str) -> String {
    format!("compositions:\n  - name: c\n    get: /v1/x/{{id}}\n{rest}")
}

/// `composition` with calls `a` (line 5) and `b` (line 8), `b`'s request at
/// line 10; `a_request` is `a`'s request at line 7.
fn two_calls(a_request: &str, b_request: &str) -> String {
    composition(&format!(
        "    calls:\n      a:\n        method: a.v1.S/Get\n        request: {a_request}\n      b:\n        method: a.v1.S/Get\n        request: {b_request}\n"
    ))
}

#[test]
fn compositions_are_checked_with_key_and_line() {
    let call_a = "    calls:\n      a:\n        method: a.v1.S/Get\n";
    let cases: Vec<(String, &str, &str, usize)> = vec![
        // The entry as a whole.
        ("compositions: {}\n".into(), "compositions", "a sequence", 1),
        (
            "compositions:\n  - name: ''\n    get: /x\n    calls: { a: { method: a.v1.S/Get } }\n".into(),
            "compositions[0].name",
            "must not be empty",
            2,
        ),
        (
            "compositions:\n  - get: /x\n    calls: { a: { method: a.v1.S/Get } }\n".into(),
            "compositions[0]",
            "missing field `name`",
            2,
        ),
        (
            "compositions:\n  - name: c\n    calls: { a: { method: a.v1.S/Get } }\n".into(),
            "compositions[0]",
            "composition \"c\" needs its route: one of get, post, put, patch or delete",
            2,
        ),
        (
            composition(&format!("    post: /v1/x\n{call_a}")),
            "compositions[0]",
            "composition \"c\" has both get and post",
            2,
        ),
        (
            "compositions:\n  - name: c\n    get: v1/x\n    calls: { a: { method: a.v1.S/Get } }\n".into(),
            "compositions[0].get",
            "\"v1/x\" must start with /",
            3,
        ),
        (composition(&format!("    timeout: 0s\n{call_a}")), "compositions[0].timeout", "greater than zero", 4),
        (composition(&format!("    on_error: ignore\n{call_a}")), "compositions[0].on_error", "unknown variant", 4),
        (composition(&format!("    retries: 3\n{call_a}")), "compositions[0]: unknown field `retries`", "", 4),
        (composition(""), "compositions[0]", "missing field `calls`", 2),
        (composition("    calls: {}\n"), "compositions[0].calls", "at least one call", 4),
        // Call names, at their own line.
        (composition("    calls:\n      1a: { method: a.v1.S/Get }\n"), "compositions[0].calls", "call name \"1a\"", 5),
        (composition("    calls:\n      user-info: { method: a.v1.S/Get }\n"), "compositions[0].calls", "letters", 5),
        (composition("    calls:\n      item: { method: a.v1.S/Get }\n"), "compositions[0].calls", "reserved", 5),
        (composition("    calls:\n      errors: { method: a.v1.S/Get }\n"), "compositions[0].calls", "reserved", 5),
        (
            composition("    calls:\n      a: { method: a.v1.S/Get }\n      b: { method: a.v1.S/Get }\n      a: { method: a.v1.S/Get }\n"),
            "compositions[0].calls",
            "call name \"a\" is given twice",
            7,
        ),
        // One call's values.
        (composition("    calls:\n      a: {}\n"), "compositions[0].calls.a", "missing field `method`", 5),
        (composition("    calls:\n      a:\n        method: S/Get\n"), "compositions[0].calls.a.method", "package.Service/Method", 6),
        (composition("    calls:\n      a:\n        method: a.v1.S.Get\n"), "compositions[0].calls.a.method", "package.Service/Method", 6),
        (composition("    calls:\n      a:\n        method: a.v1.S/\n"), "compositions[0].calls.a.method", "package.Service/Method", 6),
        (composition("    calls:\n      a:\n        method: a.v1.S/Get/More\n"), "compositions[0].calls.a.method", "package.Service/Method", 6),
        (composition(&format!("{call_a}        timeout: 0ms\n")), "compositions[0].calls.a.timeout", "greater than zero", 7),
        (composition(&format!("{call_a}        optional: yes\n")), "compositions[0].calls.a.optional", "boolean", 7),
        (composition(&format!("{call_a}        retries: 1\n")), "compositions[0].calls.a: unknown field `retries`", "", 7),
        (
            composition(&format!("{call_a}        for_each: \"{{z.ids}}\"\n        max_concurrency: 0\n")),
            "compositions[0].calls.a.max_concurrency",
            "at least 1",
            8,
        ),
        (
            composition(&format!("{call_a}        max_concurrency: 4\n")),
            "compositions[0].calls.a",
            "max_concurrency limits the calls of a for_each, and this call has no for_each",
            6,
        ),
        // `request` and `response` keys.
        (two_calls("{ filter..region: 1 }", "{}"), "compositions[0].calls.a.request", "\"filter..region\" is not a field path", 7),
        (two_calls("{ id: 1, id: 2 }", "{}"), "compositions[0].calls.a.request", "key \"id\" is given twice", 7),
        (two_calls("[id]", "{}"), "compositions[0].calls.a.request", "a mapping of request field to value", 7),
        (
            composition(&format!("{call_a}    response:\n      errors: \"{{a}}\"\n")),
            "compositions[0].response",
            "`errors` is where a partial answer lists its failed calls",
            8,
        ),
        (two_calls("{ x: .nan }", "{}"), "compositions[0].calls.a.request.x", "has no JSON form", 7),
        // Reference syntax, while the value is read.
        (two_calls("{ id: \"{path.id\" }", "{}"), "compositions[0].calls.a.request.id", "a `{` is never closed", 7),
        (two_calls("{ id: \"path.id}\" }", "{}"), "compositions[0].calls.a.request.id", "a `}` closes no `{`", 7),
        (two_calls("{ id: \"{a{b}}\" }", "{}"), "compositions[0].calls.a.request.id", "references do not nest", 7),
        (two_calls("{ id: \"x{}\" }", "{}"), "compositions[0].calls.a.request.id", "`{}` names nothing", 7),
        (two_calls("{ id: \"{b..id}\" }", "{}"), "compositions[0].calls.a.request.id", "`{b..id}` has an empty segment", 7),
        (two_calls("{ id: \"{b.}\" }", "{}"), "compositions[0].calls.a.request.id", "has an empty segment", 7),
        (two_calls("{ id: \"{path}\" }", "{}"), "compositions[0].calls.a.request.id", "`{path}` needs a name: `{path.NAME}`", 7),
        (two_calls("{ id: \"{query}\" }", "{}"), "compositions[0].calls.a.request.id", "`{query.NAME}`", 7),
        (two_calls("{ id: \"{ b.id }\" }", "{}"), "compositions[0].calls.a.request.id", "no spaces inside a reference", 7),
        (two_calls("{ id: \"{errors.b}\" }", "{}"), "compositions[0].calls.a.request.id", "cannot be referenced", 7),
        (two_calls("{ id: \"{9b.id}\" }", "{}"), "compositions[0].calls.a.request.id", "neither path, query, body, item nor a call name", 7),
        (two_calls("{ id: \"{b.x/y}\" }", "{}"), "compositions[0].calls.a.request.id", "\"x/y\" is not a field or parameter name", 7),
        // Inside a list or mapping a string is a literal: a brace there
        // would be a reference that is never read.
        (
            two_calls("\n          ids: [\"x\", \"{path.id}\"]", "{}"),
            "compositions[0].calls.a.request.ids[1]",
            "\"{path.id}\": references stand only as a whole request or answer value, not inside a list or mapping",
            8,
        ),
        (
            two_calls("{}", "\n          filter:\n            region: [eu, \"}\"]"),
            "compositions[0].calls.b.request.filter.region[1]",
            "references stand only as a whole",
            12,
        ),
        (
            composition(&format!("{call_a}    response:\n      x: {{ y: \"{{a.y}}\" }}\n")),
            "compositions[0].response.x.y",
            "references stand only as a whole",
            8,
        ),
        // An answer value is one reference to a call, or a literal.
        (
            composition(&format!("{call_a}    response:\n      one: \"{{a}}\"\n      each: \"{{item}}\"\n")),
            "compositions[0].response.each",
            "\"{item}\": an answer value refers to a call's answer (`{CALL}`, `{CALL.field}`), not to item",
            9,
        ),
        (
            composition(&format!("{call_a}    response:\n      id: \"{{path.id}}\"\n")),
            "compositions[0].response.id",
            "not to path",
            8,
        ),
        (
            composition(&format!("{call_a}    response:\n      n: \"total {{a.n}}\"\n")),
            "compositions[0].response.n",
            "an answer value is one reference to a call, or a literal: no text around it",
            8,
        ),
        (composition(&format!("{call_a}        for_each: \"ids: {{path.id}}\"\n")), "compositions[0].calls.a.for_each", "exactly one reference", 7),
        (composition(&format!("{call_a}        for_each: \"{{path.id}}{{path.id}}\"\n")), "compositions[0].calls.a.for_each", "exactly one reference", 7),
        (composition(&format!("{call_a}        for_each: \"\"\n")), "compositions[0].calls.a.for_each", "exactly one reference", 7),
        (composition(&format!("{call_a}        for_each: \"{{item.ids}}\"\n")), "compositions[0].calls.a.for_each", "cannot be the list", 7),
        (
            composition(&format!("{call_a}        for_each: \"{{query.ids}}\"\n")),
            "compositions[0].calls.a.for_each",
            "the list must come from a call's answer (`{CALL.field}`), not from query",
            7,
        ),
        (
            composition(&format!("{call_a}        for_each: \"{{body.items}}\"\n")),
            "compositions[0].calls.a.for_each",
            "not from body",
            7,
        ),
        // References against the composition, once the file is read.
        (
            two_calls("{ id: \"{usr.id}\" }", "{}"),
            "compositions[0].calls.a.request.id",
            "composition \"c\": `{usr.id}` names no call: the calls are a, b",
            7,
        ),
        (
            two_calls("{}", "{ id: \"users/{b.id}\" }"),
            "compositions[0].calls.b.request.id",
            "`{b.id}`: call \"b\" cannot use its own answer",
            10,
        ),
        (
            two_calls("{ id: \"{item}\" }", "{}"),
            "compositions[0].calls.a.request.id",
            "`{item}`: call \"a\" has no for_each, so it has no item",
            7,
        ),
        (
            two_calls("{ id: \"{body.id}\" }", "{}"),
            "compositions[0].calls.a.request.id",
            "`{body.id}`: a GET route has no request body",
            7,
        ),
        (
            two_calls("{ id: \"{path.uid}\" }", "{}"),
            "compositions[0].calls.a.request.id",
            "`{path.uid}`: the path /v1/x/{id} has no variable `uid` (it has id)",
            7,
        ),
        (
            composition(&format!("{call_a}        for_each: \"{{z.ids}}\"\n")),
            "compositions[0].calls.a.for_each",
            "`{z.ids}` names no call",
            7,
        ),
        (
            composition(&format!("{call_a}        for_each: \"{{a.ids}}\"\n")),
            "compositions[0].calls.a.for_each",
            "call \"a\" cannot use its own answer",
            7,
        ),
        (
            composition(&format!("{call_a}    response:\n      one: \"{{a}}\"\n      two: \"{{b.x}}\"\n")),
            "compositions[0].response.two",
            "composition \"c\": `{b.x}` names no call: the calls are a",
            9,
        ),
        (
            two_calls("{ id: \"{b.id}\" }", "{ id: \"{a.id}\" }"),
            "compositions[0].calls.a",
            "composition \"c\": calls `a` → `b` → `a` wait for each other in a cycle",
            6,
        ),
        (
            composition(&format!("    timeout: 1s\n{call_a}        timeout: 2s\n")),
            "compositions[0].calls.a.timeout",
            "call timeout 2s is longer than the composition's 1s",
            8,
        ),
        (
            format!("{}  - name: c\n    get: /y\n    calls: {{ a: {{ method: a.v1.S/Get }} }}\n", two_calls("{}", "{}")),
            "compositions[1].name",
            "composition name \"c\" is used by compositions[0] too",
            11,
        ),
    ];
    for (text, key, problem, line) in &cases {
        assert_rejected(text, key, problem, *line);
    }
}

#[test]
fn selectors_name_compositions_that_exist() {
    let c = composition("    calls: { a: { method: a.v1.S/Get } }\n");
    let cases: Vec<(String, &str, &str, usize)> = vec![
        (
            "routes:\n  overrides:\n    - match: { composition: '' }\n      timeout: 1s\n".into(),
            "routes.overrides[0].match.composition",
            "must not be empty",
            3,
        ),
        (
            "routes:\n  overrides:\n    - match: { composition: c }\n      timeout: 1s\n".into(),
            "routes.overrides[0].match.composition",
            "no composition is named \"c\": the file defines no compositions",
            3,
        ),
        (
            format!("{c}routes:\n  overrides:\n    - match:\n        composition: d\n      timeout: 1s\n"),
            "routes.overrides[0].match.composition",
            "no composition is named \"d\"; compositions are \"c\"",
            8,
        ),
        (
            format!("{c}policies:\n  rules:\n    - allow: public\n      composition: d\n"),
            "policies.rules[0].composition",
            "no composition is named \"d\"",
            8,
        ),
        (
            format!("{c}rate_limits:\n  rules:\n    - key: ip\n      rate: 1/s\n      match: {{ composition: d }}\n"),
            "rate_limits.rules[0].match.composition",
            "no composition is named \"d\"",
            9,
        ),
        (
            format!(
                "{c}rate_limits:\n  rules:\n    - key: ip\n      rate: 5/s\n      route_costs:\n        - match: {{ composition: d }}\n          cost: 2\n"
            ),
            "rate_limits.rules[0].route_costs[0].match.composition",
            "no composition is named \"d\"",
            10,
        ),
    ];
    for (text, key, problem, line) in &cases {
        assert_rejected(text, key, problem, *line);
    }
}

#[test]
fn templates_split_into_text_and_references() {
    use compositions::{parse_for_each, parse_response_value, parse_template, Piece, Reference, Root};

    let reference = |root: Root, path: &[&str]| Reference { root, path: path.iter().map(|s| s.to_string()).collect() };
    assert_eq!(parse_template("").unwrap(), []);
    assert_eq!(parse_template("plain").unwrap(), [Piece::Text("plain".into())]);
    assert_eq!(parse_template("{user}").unwrap(), [Piece::Ref(reference(Root::Call("user".into()), &[]))]);
    assert_eq!(
        parse_template("users/{path.id}:{orders.orders.total-count}!").unwrap(),
        [
            Piece::Text("users/".into()),
            Piece::Ref(reference(Root::Path, &["id"])),
            Piece::Text(":".into()),
            Piece::Ref(reference(Root::Call("orders".into()), &["orders", "total-count"])),
            Piece::Text("!".into()),
        ]
    );
    assert_eq!(
        parse_template("{query.a}{body}{item.x}").unwrap(),
        [
            Piece::Ref(reference(Root::Query, &["a"])),
            Piece::Ref(reference(Root::Body, &[])),
            Piece::Ref(reference(Root::Item, &["x"])),
        ]
    );
    let r = parse_for_each("{user.friend_ids}").unwrap();
    assert_eq!(r, reference(Root::Call("user".into()), &["friend_ids"]));
    assert_eq!(r.to_string(), "{user.friend_ids}");
    assert!(parse_for_each("{item}").is_err());
    assert!(parse_for_each("{query.ids}").is_err());
    assert!(parse_for_each(" {user.ids}").is_err());
    assert_eq!(
        parse_response_value("{orders.orders}").unwrap(),
        Some(reference(Root::Call("orders".into()), &["orders"]))
    );
    assert_eq!(parse_response_value("plain").unwrap(), None);
    assert_eq!(parse_response_value("").unwrap(), None);
    assert!(parse_response_value("{path.id}").is_err());
    assert!(parse_response_value("n={a.n}").is_err());
}

/// The example's `cors` block is commented out (CORS is off by default);
/// uncommented it must be valid, and a route entry inherits what it leaves
/// out.
#[test]
fn the_shipped_examples_cors_is_valid() {
    use super::cors::{OriginPattern, DEFAULT_MAX_AGE};
    let text = include_str!("../../protogate.example.yaml");
    let start = text.find("# cors:").expect("a cors block in the example");
    let uncommented: String = text[start..]
        .lines()
        .take_while(|line| line.starts_with('#'))
        .filter_map(|line| line.strip_prefix("# "))
        .map(|line| format!("{line}\n"))
        .collect();
    let cors = parse_ok(&uncommented).cors.expect("cors on");
    assert_eq!(cors.settings.allow_origins[0], OriginPattern::Exact("https://app.example.com".into()));
    assert_eq!(cors.settings.max_age, Duration::from_secs(600));
    assert!(!cors.settings.allow_credentials);
    let route = &cors.routes[0];
    assert_eq!(route.selector.path_prefix.as_deref(), Some("/v1/reports"));
    assert!(route.settings.allow_credentials);
    assert_eq!(route.settings.allow_headers, cors.settings.allow_headers);
    assert!(route.settings.allows("https://reports.example.net"));
    assert!(!route.settings.allows("https://app.example.com"));

    assert_eq!(parse_ok("listen: 127.0.0.1:8080\n").cors, None);
    let defaults = parse_ok("cors:\n  max_age: 30\n").cors.expect("cors on").settings;
    assert_eq!(defaults.max_age, Duration::from_secs(30));
    assert!(defaults.allow_origins.is_empty());
    assert_eq!(defaults.allow_headers, None);
    assert_ne!(DEFAULT_MAX_AGE, defaults.max_age);
}

#[test]
fn http2_limits_are_read_checked_and_default() {
    let c = parse_ok(
        "limits:\n  http2_max_concurrent_streams: 2\n  http2_keep_alive_interval: 10s\n  \
         http2_keep_alive_timeout: 500ms\n",
    );
    assert_eq!(c.limits.http2_max_concurrent_streams, 2);
    assert_eq!(c.limits.http2_keep_alive_interval, Some(Duration::from_secs(10)));
    assert_eq!(c.limits.http2_keep_alive_timeout, Duration::from_millis(500));
    assert_eq!(parse_ok("limits:\n  http2_keep_alive_interval: off\n").limits.http2_keep_alive_interval, None);
    assert_eq!(
        parse_ok("limits:\n  http2_keep_alive_interval: 45\n").limits.http2_keep_alive_interval,
        Some(Duration::from_secs(45))
    );

    let defaults = parse_ok("limits:\n  max_body: 1MiB\n").limits;
    assert_eq!(defaults.http2_max_concurrent_streams, 256);
    assert_eq!(defaults.http2_keep_alive_interval, Some(Duration::from_secs(30)));
    assert_eq!(defaults.http2_keep_alive_timeout, Duration::from_secs(20));

    let example = from_yaml(include_str!("../../protogate.example.yaml"), Path::new("protogate.example.yaml")).unwrap();
    let shown = &example.limits;
    assert_eq!(
        (shown.http2_max_concurrent_streams, shown.http2_keep_alive_interval, shown.http2_keep_alive_timeout),
        (defaults.http2_max_concurrent_streams, defaults.http2_keep_alive_interval, defaults.http2_keep_alive_timeout),
        "the example shows the defaults"
    );

    let cases: &[(&str, &str, &str, usize)] = &[
        ("limits:\n  http2_max_concurrent_streams: 0\n", "limits", "at least 1", 2),
        ("limits:\n  max_body: 1\n  http2_max_concurrent_streams: -1\n", "limits.http2_max_concurrent_streams", "", 3),
        ("limits:\n  http2_max_concurrent_streams: lots\n", "limits.http2_max_concurrent_streams", "", 2),
        ("limits:\n  http2_max_concurrent_streams: 5000000000\n", "limits.http2_max_concurrent_streams", "", 2),
        ("limits:\n  http2_keep_alive_interval: 0\n", "limits.http2_keep_alive_interval", "greater than zero", 2),
        ("limits:\n  http2_keep_alive_interval: never\n", "limits.http2_keep_alive_interval", "invalid duration", 2),
        ("limits:\n  http2_keep_alive_interval: 1.5\n", "limits.http2_keep_alive_interval", "needs a unit", 2),
        ("limits:\n  http2_keep_alive_timeout: off\n", "limits.http2_keep_alive_timeout", "invalid duration", 2),
        ("limits:\n  http2_keep_alive_timeout: 0s\n", "limits.http2_keep_alive_timeout", "greater than zero", 2),
        ("limits:\n  http2_max_streams: 2\n", "limits: unknown field `http2_max_streams`", "", 2),
    ];
    for (text, key, problem, line) in cases {
        assert_rejected(text, key, problem, *line);
    }
}

#[test]
fn tls_sections_are_read_with_paths_from_the_file_folder() {
    let config = parse_ok(
        "tls: { cert: certs/gw.pem, key: /secrets/gw.key, client_ca: ca.pem, client_auth: optional }
upstream_tls:
  - { match: \"*\", ca: ca.pem }
  - { match: acme.users.v1, cert: u.pem, key: u.key, server_name: users.internal }
auth: { mtls: {} }
",
    );
    let tls = config.tls.expect("tls");
    assert_eq!(tls.cert, Path::new("conf/certs/gw.pem"));
    assert_eq!(tls.key, Path::new("/secrets/gw.key"));
    assert_eq!(tls.client_ca.as_deref(), Some(Path::new("conf/ca.pem")));
    assert_eq!(tls.client_auth, tls::ClientAuth::Optional);
    assert_eq!(config.upstream_tls.len(), 2);
    let users = &config.upstream_tls[1];
    assert_eq!(users.pattern, "acme.users.v1");
    assert_eq!(users.files().collect::<Vec<_>>(), [Path::new("conf/u.pem"), Path::new("conf/u.key")]);
    assert_eq!(users.server_name.as_deref(), Some("users.internal"));
    assert_eq!(config.auth.mtls.expect("mtls").name, "mtls");
    let required = parse_ok("tls: { cert: a.pem, key: a.key, client_ca: ca.pem }\n").tls.expect("tls");
    assert_eq!(required.client_auth, tls::ClientAuth::Required);
}

#[test]
fn tls_sections_are_checked() {
    assert_rejected("tls:\n  cert: a.pem\n", "tls", "both `cert` and `key`", 2);
    assert_rejected("tls:\n  cert: a.pem\n  key: a.key\n  client_auth: optional\n", "tls", "needs `client_ca`", 2);
    assert_rejected("tls: { cert: a, key: b, client_auth: sometimes }\n", "tls.client_auth", "sometimes", 1);
    assert_rejected("upstream_tls:\n  - { match: \"acme users\", ca: a.pem }\n", "upstream_tls[0].match", "pattern", 2);
    assert_rejected(
        "upstream_tls:\n  - { match: \"*\", cert: a.pem }\n",
        "upstream_tls[0]",
        "both `cert` and `key`",
        2,
    );
    assert_rejected("upstream_tls:\n  - { match: \"*\" }\n", "upstream_tls[0]", "changes nothing", 2);
    assert_rejected(
        "upstream_tls:\n  - { match: \"*\", server_name: \"bad name!\" }\n",
        "upstream_tls[0].server_name",
        "neither a DNS name",
        2,
    );
    assert_rejected(
        "upstream_tls:\n  - { match: acme, ca: a.pem }\n  - { match: acme, ca: b.pem }\n",
        "upstream_tls[1].match",
        "one entry per pattern",
        3,
    );
    assert_rejected("auth:\n  mtls: {}\n", "auth.mtls", "tls.client_ca", 2);
    assert_rejected(
        "tls: { cert: a, key: b, client_ca: c }\nauth:\n  api_keys: { name: corp, keys: [] }\n  mtls: { name: corp }\n",
        "auth.mtls.name",
        "used by another provider",
        4,
    );
}

#[test]
fn the_upstream_long_form_is_read_with_its_defaults() {
    use super::upstreams::{Balance, HealthCheck, Outlier, Retries};
    let config = parse_ok(
        "upstreams:
  acme.users.v1: http://users:50051
  acme.orders.v1:
    url: http://orders:50051
    dns_refresh: 2s
    balance: round_robin
    connections: 3
    health_check: { interval: 2s, timeout: 500ms, unhealthy: 4, healthy: 1 }
    outlier: { consecutive_failures: 2, ejection: 10s, max_ejected: \"25%\" }
    retries: { attempts: 3, backoff: 10ms, max_backoff: 1s, budget: \"100%\" }
    max_concurrent_requests: 100
  acme.billing.v1: { endpoints: [\"http://10.0.0.5:50051\", \"http://10.0.0.6:50051\"] }
versions:
  v2: { upstream: { url: http://users-v2:50051, balance: round_robin } }
",
    );
    let short = &config.upstreams[0].settings;
    assert_eq!(*short, super::upstreams::UpstreamSettings::default());
    assert_eq!((short.balance, short.connections, short.retries.attempts), (Balance::LeastRequest, 1, 2));
    let orders = &config.upstreams[1].settings;
    assert_eq!(config.upstreams[1].url, uri("http://orders:50051/"));
    assert_eq!(orders.dns_refresh, Duration::from_secs(2));
    assert_eq!((orders.balance, orders.connections), (Balance::RoundRobin, 3));
    let health =
        HealthCheck { interval: Duration::from_secs(2), timeout: Duration::from_millis(500), unhealthy: 4, healthy: 1 };
    assert_eq!(orders.health_check, Some(health));
    let outlier = Outlier { consecutive_failures: 2, ejection: Duration::from_secs(10), max_ejected_percent: 25 };
    assert_eq!(orders.outlier, Some(outlier));
    let retries = Retries {
        attempts: 3,
        backoff: Duration::from_millis(10),
        max_backoff: Duration::from_secs(1),
        budget_percent: 100,
    };
    assert_eq!(orders.retries, retries);
    assert_eq!(orders.max_concurrent_requests.map(|n| n.get()), Some(100));
    let billing = &config.upstreams[2];
    assert_eq!(billing.url, uri("http://10.0.0.5:50051/"), "the first endpoint labels the upstream");
    assert_eq!(billing.settings.endpoints.len(), 2);
    assert_eq!(config.versions["v2"].upstream_settings.balance, Balance::RoundRobin);
}

#[test]
fn the_upstream_long_form_is_checked() {
    let at = |yaml: &str| format!("upstreams:\n  \"*\":\n{yaml}");
    assert_rejected(&at("    balance: fastest\n"), "upstreams.*", "fastest", 3);
    assert_rejected(&at("    dns_refresh: 5s\n"), "upstreams.*", "give `url`", 3);
    assert_rejected(&at("    url: http://a:1\n    endpoints: [\"http://b:1\"]\n"), "upstreams.*", "not both", 3);
    assert_rejected(&at("    endpoints: [\"http://a:1\", \"https://b:1\"]\n"), "upstreams.*", "same scheme", 3);
    assert_rejected(&at("    endpoints: [\"http://a:1\", \"http://a:1\"]\n"), "upstreams.*", "listed twice", 3);
    assert_rejected(
        &at("    url: http://a:1\n    outlier: { max_ejected: half }\n"),
        "max_ejected",
        "not a percentage",
        4,
    );
    assert_rejected(
        &at("    url: http://a:1\n    retries: { backoff: 1s, max_backoff: 10ms }\n"),
        "retries",
        "`max_backoff` must not be shorter",
        4,
    );
    assert_rejected(&at("    url: http://a:1\n    retries: { attempts: 9 }\n"), "retries", "at most 5", 4);
    assert_rejected(
        &at("    url: http://a:1\n    health_check: { interval: 1s, timeout: 2s }\n"),
        "health_check",
        "`timeout` must not be longer",
        4,
    );
    assert_rejected(&at("    url: http://a:1\n    connections: 0\n"), "connections", "", 4);
}

/// The example's commented long form of an upstream is valid.
#[test]
fn the_shipped_examples_upstream_long_form_is_valid() {
    let text = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/protogate.example.yaml")).expect("example");
    let start = text.find("  # acme.billing.v1:").expect("a long-form block in the example");
    // `  # key: value` → `  key: value`, under `upstreams:`.
    let block: String = text[start..]
        .lines()
        .take_while(|line| line.starts_with("  # "))
        .map(|line| format!("  {}\n", &line[4..]))
        .collect();
    let config = parse_ok(&format!("upstreams:\n{block}"));
    let billing = &config.upstreams[0].settings;
    assert!(billing.health_check.is_some() && billing.outlier.is_some());
    assert_eq!(billing.max_concurrent_requests.map(|n| n.get()), Some(1000));
}
