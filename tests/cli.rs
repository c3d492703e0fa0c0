//! The `protogate` binary as an operator runs it: `routes`, `check` and
//! `serve`, their output and their exit codes (0 ok, 1 invalid input,
//! 2 usage). Every command runs in an empty working directory so that no
//! `./protogate.yaml` or `./descriptors` of the checkout is picked up.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::fixtures::{CLASH_PROTO, CORRUPT_SET, OTHER_PROTO};
use common::{Backend, Descriptors, Reply};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_protogate");

/// A working directory and a descriptor folder holding the test set.
struct Workspace {
    cwd: TempDir,
    descriptors: Descriptors,
}

impl Workspace {
    fn new() -> Self {
        Self { cwd: tempfile::tempdir().expect("working directory"), descriptors: Descriptors::test_service() }
    }

    fn dir(&self) -> &str {
        self.descriptors.path_str()
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) {
        self.descriptors.write(name, contents);
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command.args(args).current_dir(self.cwd.path()).env_remove("RUST_LOG");
        command
    }

    /// `protogate serve` of the folder on `listen` and `admin`, every
    /// service routed to `backend`, one worker thread, then `extra`.
    fn serve(&self, listen: SocketAddr, admin: SocketAddr, backend: &Backend, extra: &[&str]) -> Command {
        let (listen, admin, upstream) = (listen.to_string(), admin.to_string(), format!("*={}", backend.url()));
        let mut args = vec!["serve", "--descriptors", self.dir(), "--listen", &listen, "--admin-listen", &admin];
        args.extend(["--upstream", &upstream, "--threads", "1"]);
        args.extend(extra);
        self.command(&args)
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run protogate")
    }

    /// `protogate check` of the folder with `yaml` as `gateway.yaml`.
    fn check_config(&self, yaml: &str) -> Output {
        let config = self.cwd.path().join("gateway.yaml");
        std::fs::write(&config, yaml).expect("write config");
        let config = config.to_str().expect("UTF-8");
        self.run(&["check", "--config", config, "--descriptors", self.dir(), "--upstream", "*=http://127.0.0.1:1"])
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[track_caller]
fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "expected exit {code}\n--- stdout\n{}\n--- stderr\n{}",
        stdout(output),
        stderr(output)
    );
}

/// The cells of the table row whose first two cells are `method` and `path`.
fn row<'a>(table: &'a str, method: &str, path: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.len() >= 2 && cells[0] == method && cells[1] == path)
        .unwrap_or_else(|| panic!("no row for {method} {path} in:\n{table}"))
}

#[test]
fn routes_prints_the_route_table() {
    let ws = Workspace::new();
    let output = ws.run(&["routes", "--descriptors", ws.dir(), "--upstream", "*=http://127.0.0.1:1"]);
    assert_exit(&output, 0);
    let table = stdout(&output);
    let header = table.lines().next().unwrap_or_default();
    let mut at = 0;
    for column in ["METHOD", "PATH", "VERSION", "GRPC METHOD", "UPSTREAM", "POLICY"] {
        let found = header[at..].find(column).unwrap_or_else(|| panic!("no {column} column, in order: {header:?}"));
        at += found + column.len();
    }

    let metadata = row(&table, "GET", "/test/metadata");
    assert_eq!(metadata[2], "-", "unversioned route: {metadata:?}");
    assert_eq!(metadata[3], "protogate.test.v1.TestService/Metadata");
    assert!(metadata[4].starts_with("http://127.0.0.1:1"), "{metadata:?}");
    let echo = row(&table, "POST", "/test/echo");
    assert_eq!(echo[3], "protogate.test.v1.TestService/Echo");
    let files = row(&table, "GET", "/test/files/{string_value=**}");
    assert_eq!(files[3], "protogate.test.v1.TestService/EchoPath", "additional bindings are listed too");
    let auto = row(&table, "POST", "/protogate.test.v1.TestService/Unannotated");
    assert_eq!(auto[3], "protogate.test.v1.TestService/Unannotated");
    assert!(!table.contains("unrouted"), "every service has an upstream:\n{table}");
}

#[test]
fn routes_lists_services_without_an_upstream_as_unrouted() {
    let ws = Workspace::new();
    ws.write("other.proto", OTHER_PROTO);
    let output = ws.run(&["routes", "--descriptors", ws.dir(), "--upstream", "other.v1=http://127.0.0.1:1"]);
    assert_exit(&output, 0);
    let table = stdout(&output);
    let other = row(&table, "GET", "/other/ping/{name}");
    assert_eq!(other[3], "other.v1.Other/Ping");
    assert!(!table.contains("/test/metadata"), "TestService has no upstream but is routed:\n{table}");
    let (_, unrouted) = table.split_once("unrouted:").unwrap_or_else(|| panic!("no unrouted section:\n{table}"));
    let line = unrouted
        .lines()
        .find(|l| l.contains("protogate.test.v1.TestService"))
        .unwrap_or_else(|| panic!("TestService not listed as unrouted:\n{table}"));
    assert!(line.contains("no upstream"), "no reason given: {line:?}");
}

#[test]
fn check_accepts_the_good_folder() {
    let ws = Workspace::new();
    let output = ws.run(&["check", "--descriptors", ws.dir(), "--upstream", "*=http://127.0.0.1:1"]);
    assert_exit(&output, 0);
    assert!(stdout(&output).starts_with("ok:"), "{}", stdout(&output));
}

#[test]
fn check_names_a_corrupt_descriptor_set() {
    let ws = Workspace::new();
    ws.write("broken.binpb", CORRUPT_SET);
    let output = ws.run(&["check", "--descriptors", ws.dir(), "--upstream", "*=http://127.0.0.1:1"]);
    assert_exit(&output, 1);
    let errors = stderr(&output);
    assert!(errors.contains("broken.binpb"), "the corrupt file is not named: {errors}");
    assert!(!errors.contains("test.binpb"), "the good file is blamed: {errors}");
}

#[test]
fn check_names_both_sides_of_a_route_collision() {
    let ws = Workspace::new();
    ws.write("clash.proto", CLASH_PROTO);
    let output = ws.run(&["check", "--descriptors", ws.dir(), "--upstream", "*=http://127.0.0.1:1"]);
    assert_exit(&output, 1);
    let errors = stderr(&output);
    for needle in
        ["/test/metadata", "protogate.test.v1.TestService/Metadata", "test.binpb", "clash.v1.Clash/Get", "clash.proto"]
    {
        assert!(errors.contains(needle), "collision error does not name {needle}: {errors}");
    }
}

#[test]
fn check_names_an_unknown_config_key_and_its_line() {
    let ws = Workspace::new();
    let output = ws.check_config("listen: 127.0.0.1:8080\njson:\n  pretty: true\n  emit_unpopulatd: true\n");
    assert_exit(&output, 1);
    let errors = stderr(&output);
    assert!(errors.contains("emit_unpopulatd"), "the key is not named: {errors}");
    assert!(errors.contains("line 4"), "the line is not named: {errors}");
    assert!(errors.contains("gateway.yaml"), "the file is not named: {errors}");

    // The default file in the working directory is read too.
    std::fs::write(ws.cwd.path().join("protogate.yaml"), "listn: 127.0.0.1:8080\n").expect("write config");
    let output = ws.run(&["check", "--descriptors", ws.dir()]);
    assert_exit(&output, 1);
    let errors = stderr(&output);
    assert!(errors.contains("listn") && errors.contains("line 1"), "{errors}");
}

#[test]
fn check_names_a_bad_rate_limit_rule_with_its_key_and_line() {
    let ws = Workspace::new();
    let output = ws.check_config(
        "rate_limits:\n  rules:\n    - name: search\n      key: ip\n      rate: 10/s\n      burst: 2\n      cost: 3\n",
    );
    assert_exit(&output, 1);
    let errors = stderr(&output);
    assert!(errors.contains("gateway.yaml: rate_limits.rules[0].cost: "), "the key path is not named: {errors}");
    assert!(errors.contains("cost 3 exceeds the burst 2"), "the problem is not named: {errors}");
    assert!(errors.contains("at line 7 column"), "the line is not named: {errors}");
}

#[test]
fn check_reads_the_tls_files_and_names_a_bad_one() {
    let ws = Workspace::new();
    std::fs::write(ws.cwd.path().join("gw.pem"), "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n").expect("write");
    std::fs::write(ws.cwd.path().join("gw-key.pem"), "no key here").expect("write");
    let output = ws.check_config("tls: { cert: gw.pem, key: gw-key.pem }\n");
    assert_exit(&output, 1);
    let errors = stderr(&output);
    assert!(errors.contains("gw.pem") && errors.contains("tls"), "the file is not named: {errors}");
    assert!(!errors.contains("bm90IGEgY2VydA"), "file contents leaked: {errors}");
}

#[test]
fn usage_errors_exit_2() {
    let ws = Workspace::new();
    for args in [&["frobnicate"][..], &["routes", "--no-such-flag"], &["serve", "--listen", "not-an-address"], &[]] {
        let output = ws.run(args);
        assert_exit(&output, 2);
        assert!(!stderr(&output).is_empty(), "no usage message for {args:?}");
    }
    // Help is not an error.
    assert_exit(&ws.run(&["--help"]), 0);
}

/// Two distinct ports that were free a moment ago.
fn free_ports() -> (SocketAddr, SocketAddr) {
    let bind = || TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    // Both held at once, so they differ.
    let (a, b) = (bind(), bind());
    (a.local_addr().expect("local addr"), b.local_addr().expect("local addr"))
}

/// The serving child; killed if the test fails before it exits on its own.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// GETs `url` until it answers (the server needs a moment to start), or
/// panics after `deadline`.
async fn get_when_up(client: &reqwest::Client, url: &str, child: &mut Served, deadline: Duration) -> Reply {
    let start = Instant::now();
    loop {
        if let Ok(response) = client.get(url).send().await {
            return Reply::read(response).await;
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("protogate exited early with {status}");
        }
        assert!(start.elapsed() < deadline, "{url} did not answer within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn serve_answers_and_exits_cleanly_on_sigterm() {
    let backend = Backend::test_service().await;
    let ws = Workspace::new();
    let (listen, admin) = free_ports();
    let mut child = Served(
        ws.serve(listen, admin, &backend, &[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn protogate serve"),
    );
    let client = common::http_client();

    let reply =
        get_when_up(&client, &format!("http://{listen}/test/metadata"), &mut child, Duration::from_secs(30)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.json()["headers"].is_object(), "{}", reply.text());
    let reply = get_when_up(&client, &format!("http://{admin}/healthz"), &mut child, Duration::from_secs(10)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    let pid = child.0.id().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
    assert!(kill.success(), "kill -TERM {pid} failed");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait for protogate") {
            break status;
        }
        assert!(Instant::now() < deadline, "protogate did not exit within 20 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {status}");
    // Both listeners are closed.
    assert!(client.get(format!("http://{listen}/test/metadata")).send().await.is_err());
    assert!(client.get(format!("http://{admin}/healthz")).send().await.is_err());
    backend.shutdown().await;
}

#[test]
fn serve_refuses_an_invalid_folder_with_exit_1() {
    let ws = Workspace::new();
    ws.write("clash.proto", CLASH_PROTO);
    let (listen, admin) = free_ports();
    let (listen, admin) = (listen.to_string(), admin.to_string());
    let output = ws.run(&[
        "serve",
        "--descriptors",
        ws.dir(),
        "--listen",
        &listen,
        "--admin-listen",
        &admin,
        "--upstream",
        "*=http://127.0.0.1:1",
    ]);
    assert_exit(&output, 1);
    assert!(stderr(&output).contains("clash.v1.Clash/Get"), "{}", stderr(&output));
}

#[test]
fn check_finds_a_collision_without_any_upstream() {
    // With no upstream nothing is served, but every annotated method is
    // still compiled: what `check` accepts is what `serve` accepts.
    let ws = Workspace::new();
    ws.write("clash.proto", CLASH_PROTO);
    let output = ws.run(&["check", "--descriptors", ws.dir()]);
    assert_exit(&output, 1);
    let errors = stderr(&output);
    for needle in ["/test/metadata", "protogate.test.v1.TestService/Metadata", "clash.v1.Clash/Get", "clash.proto"] {
        assert!(errors.contains(needle), "collision error does not name {needle}: {errors}");
    }
}

/// Serves with `yaml` as the config, sends `requests` (path, headers) to
/// the public listener, stops with SIGTERM and returns stderr's lines.
async fn serve_and_log(yaml: &str, requests: &[(&str, &[(&str, &str)])]) -> Vec<String> {
    let backend = Backend::test_service().await;
    let ws = Workspace::new();
    let (listen, admin) = free_ports();
    let config = ws.cwd.path().join("gateway.yaml");
    std::fs::write(&config, yaml).expect("write config");
    let mut child = Served(
        ws.serve(listen, admin, &backend, &["--config", config.to_str().expect("UTF-8")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn protogate serve"),
    );
    let client = common::http_client();
    get_when_up(&client, &format!("http://{admin}/healthz"), &mut child, Duration::from_secs(30)).await;
    for (path, headers) in requests {
        let mut request = client.get(format!("http://{listen}{path}"));
        for (name, value) in *headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("request");
    }
    let pid = child.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("run kill").success());
    let mut stderr = child.0.stderr.take().expect("stderr");
    let mut text = String::new();
    let read = tokio::task::spawn_blocking(move || {
        use std::io::Read as _;
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let text = tokio::time::timeout(Duration::from_secs(30), read).await.expect("protogate exits").expect("read");
    backend.shutdown().await;
    text.lines().map(str::to_owned).collect()
}

/// The JSON access events among `lines`.
fn access_events(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["target"] == "protogate::access")
        .collect()
}

#[tokio::test]
async fn the_access_log_has_one_json_event_per_request_and_no_secret() {
    let secret = "Bearer s3cr3t-t0ken-never-logged";
    let lines = serve_and_log(
        "logging:\n  format: json\n",
        &[
            ("/test/path/a/7/n/RED", &[("x-request-id", "req-1"), ("authorization", secret)]),
            ("/no/such/route", &[("x-request-id", "req-2")]),
        ],
    )
    .await;
    let events = access_events(&lines);
    assert_eq!(events.len(), 2, "one event per request: {lines:#?}");
    let ok = &events[0];
    for field in [
        "timestamp",
        "request_id",
        "peer",
        "method",
        "route",
        "grpc_method",
        "status",
        "grpc_code",
        "latency_ms",
        "upstream",
        "consumer",
        "bytes_in",
        "bytes_out",
    ] {
        assert!(ok.get(field).is_some(), "access event lacks {field}: {ok}");
    }
    assert_eq!(ok["request_id"], "req-1", "{ok}");
    assert_eq!(ok["method"], "GET", "{ok}");
    assert_eq!(ok["route"], "/test/path/{string_value}/{int64_value}/{nested.name}/{color}", "{ok}");
    assert_eq!(ok["grpc_method"], "protogate.test.v1.TestService/EchoPath", "{ok}");
    assert_eq!(ok["status"], 200, "{ok}");
    assert_eq!(ok["grpc_code"], "OK", "{ok}");
    assert!(ok["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{ok}");
    assert!(ok["bytes_out"].as_u64().is_some_and(|n| n > 0), "{ok}");
    assert!(ok["peer"].as_str().is_some_and(|peer| peer.starts_with("127.0.0.1:")), "{ok}");
    assert!(ok["upstream"].as_str().is_some_and(|url| url.starts_with("http://127.0.0.1:")), "{ok}");
    let missing = &events[1];
    assert_eq!(missing["route"], "unmatched", "{missing}");
    assert_eq!(missing["status"], 404, "{missing}");
    assert_eq!(missing["request_id"], "req-2", "{missing}");
    assert!(!lines.iter().any(|line| line.contains("s3cr3t")), "a credential reached the log");
}

#[tokio::test]
async fn logging_access_false_turns_the_access_log_off() {
    let lines = serve_and_log("logging:\n  format: json\n  access: false\n", &[("/test/path/a/7/n/RED", &[])]).await;
    assert!(!lines.is_empty(), "the gateway logs its start");
    assert!(access_events(&lines).is_empty(), "{lines:#?}");
}

/// A method whose additional binding breaks http.proto (a second `:verb`
/// after a variable, as grpc-gateway's examples write it).
const LEGACY_PROTO: &str = r#"
syntax = "proto3";
package legacy.v1;
import "google/api/annotations.proto";

service Legacy {
  rpc Get(GetRequest) returns (GetReply) {
    option (google.api.http) = {
      get: "/legacy/{id}"
      additional_bindings { get: "/legacy/{id}:custom:custom" }
    };
  }
}
message GetRequest { string id = 1; }
message GetReply {}
"#;

/// `protogate COMMAND --config` with `yaml` as the config file, then `extra`.
fn run_with_config(ws: &Workspace, command: &str, yaml: &str, extra: &[&str]) -> Output {
    let config = ws.cwd.path().join("gateway.yaml");
    std::fs::write(&config, yaml).expect("write config");
    let config = config.to_str().expect("UTF-8");
    let mut args = vec![command, "--config", config, "--descriptors", ws.dir(), "--upstream", "*=http://127.0.0.1:1"];
    args.extend(extra);
    ws.run(&args)
}

#[test]
fn check_refuses_a_binding_that_breaks_http_proto_and_quotes_the_rule() {
    let ws = Workspace::new();
    ws.write("legacy.proto", LEGACY_PROTO);
    let output = run_with_config(&ws, "check", "routes: { invalid_bindings: reject }\n", &[]);
    assert_exit(&output, 1);
    let errors = stderr(&output);
    assert!(
        errors.starts_with(
            "error: legacy.proto: legacy.v1.Legacy.Get: GET /legacy/{id}:custom:custom: a variable must be a whole \
             segment (http.proto"
        ),
        "{errors}"
    );
}

#[test]
fn check_warns_of_skipped_bindings_and_strict_makes_warnings_fatal() {
    let ws = Workspace::new();
    ws.write("legacy.proto", LEGACY_PROTO);
    let skip = "routes: { invalid_bindings: skip }\n";
    let output = run_with_config(&ws, "check", skip, &[]);
    assert_exit(&output, 0);
    let warning = "protogate: warning: binding skipped (routes.invalid_bindings: skip): legacy.proto: \
                   legacy.v1.Legacy/Get GET /legacy/{id}:custom:custom: a variable must be a whole segment";
    assert!(stderr(&output).starts_with(warning), "{}", stderr(&output));
    assert!(stdout(&output).starts_with("ok:"), "{}", stdout(&output));

    let output = run_with_config(&ws, "check", skip, &["--strict"]);
    assert_exit(&output, 1);
    assert!(stderr(&output).starts_with(warning), "{}", stderr(&output));
    assert!(stderr(&output).contains("error: 1 warnings, and --strict makes warnings fatal"), "{}", stderr(&output));
    assert!(stdout(&output).is_empty(), "{}", stdout(&output));

    // Without warnings, --strict changes nothing.
    let ws = Workspace::new();
    let output = run_with_config(&ws, "check", skip, &["--strict"]);
    assert_exit(&output, 0);
}

#[test]
fn routes_lists_skipped_bindings_with_their_reason() {
    let ws = Workspace::new();
    ws.write("legacy.proto", LEGACY_PROTO);
    let output = run_with_config(&ws, "routes", "routes: { invalid_bindings: skip }\n", &[]);
    assert_exit(&output, 0);
    let table = stdout(&output);
    assert_eq!(row(&table, "GET", "/legacy/{id}")[3], "legacy.v1.Legacy/Get");
    let (_, skipped) = table
        .split_once("skipped bindings (routes.invalid_bindings: skip):\n")
        .unwrap_or_else(|| panic!("no skipped section:\n{table}"));
    assert!(
        skipped.starts_with(
            "  legacy.v1.Legacy/Get GET /legacy/{id}:custom:custom (legacy.proto): a variable must be a whole segment"
        ),
        "{table}"
    );
}
