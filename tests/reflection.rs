//! gRPC server reflection as a descriptor source, end to end: the example
//! backends describe themselves over `grpc.reflection.v1`, and the gateway,
//! configured with `descriptors.reflection` in the YAML an operator would
//! write, routes what they list — talked to over real HTTP.
//!
//! What could break and is checked here: the `google.api.http` options
//! surviving the trip (a reflected method gets its annotated routes, not an
//! automatic one), reflected services reaching the upstream that listed them
//! (even when an `upstreams` pattern names another backend), a folder file
//! and a reflected file of one name that disagree being refused while the
//! folder keeps serving, a source that is down at start joining once it
//! comes up, and a source that goes away keeping its routes.

#[path = "../examples/backends/mod.rs"]
mod backends;
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::{assert_error, http_client, Reply};
use protogate::config::values::parse_upstream_url;
use protogate::gateway::Gateway;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::Routes;

/// How long a test waits for the gateway to pick up a change before it
/// gives up: a bound on a hang, not a measurement.
const PATIENCE: Duration = Duration::from_secs(10);

/// The refresh interval of the tests whose source changes after start.
const INTERVAL: &str = "200ms";

/// One example backend, on its own listener.
struct Backend {
    url: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Backend {
    async fn start(routes: Routes) -> Self {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await.expect("bind backend"), routes)
    }

    fn start_on(listener: TcpListener, routes: Routes) -> Self {
        let addr = listener.local_addr().expect("backend local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(backends::serve(listener, routes, async {
            let _ = stopped.await;
        }));
        Self { url: upstream_url(addr), stop, task }
    }

    async fn shutdown(self) {
        let _ = self.stop.send(());
        self.task.await.expect("backend task panicked").expect("backend server failed");
    }
}

/// The URL as the gateway writes it (normalized by the config's own rules),
/// for comparing with the route table and error messages.
fn upstream_url(addr: SocketAddr) -> String {
    parse_upstream_url(&format!("http://{addr}")).expect("backend url").to_string()
}

/// Users v1 that also answers reflection about itself.
fn users_v1_reflecting() -> Routes {
    let reflection = backends::reflection(&[backends::USERS_V1_SET]).expect("users v1 reflection");
    Routes::new(backends::users_v1()).add_service(reflection)
}

/// The gateway over `descriptors`, serving on an ephemeral port.
struct Env {
    base: String,
    client: reqwest::Client,
    gateway: Gateway,
    _descriptors: tempfile::TempDir,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Env {
    /// `yaml` is every key but `descriptors.path`, which is the folder's.
    async fn start(descriptors: tempfile::TempDir, yaml: &str) -> Self {
        let yaml = yaml.replace("{path}", &format!("{:?}", descriptors.path().display().to_string()));
        let origin = descriptors.path().join("protogate.yaml");
        let config = protogate::config::from_yaml(&yaml, &origin).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let gateway = Gateway::load(config).unwrap_or_else(|e| panic!("gateway refused to start: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind gateway");
        let base = format!("http://{}", listener.local_addr().expect("gateway local addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway.clone().serve(listener, async {
            let _ = stopped.await;
        }));
        Self { base, client: http_client(), gateway, _descriptors: descriptors, stop, task }
    }

    async fn get(&self, path: &str) -> Reply {
        let response = self.client.get(format!("{}{path}", self.base)).send().await;
        Reply::read(response.unwrap_or_else(|e| panic!("GET {path}: {e}"))).await
    }

    /// GETs `path` until it answers 200, within [`PATIENCE`].
    async fn get_once_ok(&self, path: &str) -> Reply {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let reply = self.get(path).await;
            if reply.status == 200 {
                return reply;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "GET {path} still answers {} {} after {PATIENCE:?}; routes:\n{}",
                    reply.status,
                    reply.text(),
                    self.route_table()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn route_table(&self) -> String {
        protogate::cli::route_table(&self.gateway.catalog())
    }

    /// `[METHOD, PATH, GRPC METHOD, UPSTREAM]` of every route of
    /// `protogate routes` (no cell of these columns contains a space).
    fn routes(&self) -> Vec<[String; 4]> {
        let table = self.route_table();
        let mut lines = table.lines();
        let header: Vec<&str> =
            lines.next().unwrap_or_default().split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
        let column =
            |name: &str| header.iter().position(|c| *c == name).unwrap_or_else(|| panic!("no {name} in\n{table}"));
        let wanted = ["METHOD", "PATH", "GRPC METHOD", "UPSTREAM"].map(column);
        lines
            .take_while(|line| !line.is_empty())
            .map(|line| {
                let cells: Vec<&str> = line.split_whitespace().collect();
                wanted.map(|i| cells.get(i).copied().unwrap_or_default().to_owned())
            })
            .collect()
    }

    /// The upstream of the route `METHOD PATH`, if there is one.
    fn upstream_of(&self, method: &str, path: &str) -> Option<String> {
        self.routes().into_iter().find(|[m, p, ..]| m == method && canonical(p) == path).map(|[.., upstream]| upstream)
    }

    async fn shutdown(self) {
        let _ = self.stop.send(());
        self.task.await.expect("gateway task panicked").expect("gateway server failed");
    }
}

/// `{id}` and `{id=*}` are the same template (http.proto); compare either.
fn canonical(template: &str) -> String {
    template.replace("=*}", "}")
}

/// v1's JSON for user 1001, as the users v1 backend seeds it.
#[track_caller]
fn assert_ada_v1(reply: &Reply) {
    let json = reply.json();
    assert_eq!(json["id"], "1001", "{json}");
    assert_eq!(json["displayName"], "Ada Lovelace", "{json}");
    assert_eq!(json["role"], "ROLE_ADMIN", "{json}");
    // int64 as a string: the response was rendered with v1's descriptor.
    assert_eq!(json["loginCount"], "42", "{json}");
}

/// Copies a committed descriptor set into the test's folder.
fn copy_shipped(descriptors: &Path, set: &str) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("descriptors").join(set);
    let to = descriptors.join(set);
    std::fs::create_dir_all(to.parent().expect("set in a folder")).expect("create folder");
    std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
}

#[tokio::test]
async fn reflection_discovers_a_backends_services_with_no_file_at_all() {
    let users = Backend::start(users_v1_reflecting()).await;
    let empty = tempfile::tempdir().expect("create descriptor folder");
    // No `upstreams` at all: the reflection source is the only backend.
    let env = Env::start(empty, &format!("descriptors:\n  path: {{path}}\n  reflection: [{}]\n", users.url)).await;

    let ada = env.get_once_ok("/v1/users/1001").await;
    assert_ada_v1(&ada);
    // An additional binding: the reflected file kept its google.api.http
    // option whole.
    let grace = env.get("/v1/accounts/1002").await;
    assert_eq!(grace.status, 200, "{}", grace.text());
    assert_eq!(grace.json()["displayName"], "Grace Hopper");
    // The backend's own errors come through as usual.
    assert_error(&env.get("/v1/users/9999").await, 404, 5);

    let routes = env.routes();
    assert!(
        routes.iter().any(|[m, p, g, _]| m == "GET"
            && canonical(p) == "/v1/users/{id}"
            && g == "acme.users.v1.UserService/GetUser"),
        "GetUser is not routed at GET /v1/users/{{id}}:\n{}",
        env.route_table()
    );
    for [method, path, grpc, upstream] in &routes {
        assert_eq!(upstream, &users.url, "{method} {path} goes elsewhere:\n{}", env.route_table());
        assert!(
            !grpc.starts_with("grpc.reflection."),
            "the reflection service itself is routed:\n{}",
            env.route_table()
        );
        // Annotated methods only: an automatic `/pkg.Service/Method` route
        // would mean the http options were lost on the way.
        assert!(path.starts_with("/v1/users") || path.starts_with("/v1/accounts"), "unexpected route {method} {path}");
    }
    assert!(env.gateway.reloader().status().last_error.is_none(), "{:?}", env.gateway.reloader().status());

    env.shutdown().await;
    users.shutdown().await;
}

/// users.proto as the users v1 backend knows it, but with its additional
/// binding at `/v1/people/{id}`: the same file name, another definition.
fn divergent_users_v1() -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    let source = std::fs::read_to_string(root.join("acme/users/v1/users.proto")).expect("read users.proto");
    let changed = source.replace("\"/v1/accounts/{id}\"", "\"/v1/people/{id}\"");
    assert_ne!(changed, source, "users.proto no longer has the /v1/accounts binding this test changes");
    let include = tempfile::tempdir().expect("create include folder");
    let file = include.path().join("acme/users/v1/users.proto");
    std::fs::create_dir_all(file.parent().expect("parent")).expect("create proto folder");
    std::fs::write(&file, changed).expect("write users.proto");
    // The changed copy first, so it shadows the original; imports from proto/.
    let mut compiler = protox::Compiler::new([include.path().to_path_buf(), root]).expect("include roots");
    compiler.include_imports(true).include_source_info(false);
    compiler.open_file("acme/users/v1/users.proto").unwrap_or_else(|e| panic!("compile users.proto: {e}"));
    compiler.encode_file_descriptor_set()
}

#[tokio::test]
async fn a_folder_file_and_a_reflected_file_of_one_name_must_agree() {
    let users = Backend::start(users_v1_reflecting()).await;
    let descriptors = tempfile::tempdir().expect("create descriptor folder");
    std::fs::write(descriptors.path().join("users.binpb"), divergent_users_v1()).expect("write users.binpb");
    let yaml = format!(
        "descriptors:\n  path: {{path}}\n  reflection: [{url}]\n  reflection_interval: {INTERVAL}\nupstreams:\n  acme.users.v1: {url}\n",
        url = users.url
    );
    let env = Env::start(descriptors, &yaml).await;

    let deadline = tokio::time::Instant::now() + PATIENCE;
    let refused = loop {
        if let Some(refused) = env.gateway.reloader().status().last_error.clone() {
            break refused;
        }
        assert!(tokio::time::Instant::now() < deadline, "no reload was refused within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        refused.problems,
        vec![format!("acme/users/v1/users.proto is defined differently in users.binpb and {} (reflection)", users.url)],
    );

    // The folder's catalog is still the live one, whole.
    let status = env.gateway.reloader().status();
    assert_eq!(status.generation, 1, "{status:?}");
    assert!(status.reloads_failed >= 1, "{status:?}");
    let people = env.get("/v1/people/1001").await;
    assert_eq!(people.status, 200, "{}", people.text());
    assert_ada_v1(&people);
    assert_error(&env.get("/v1/accounts/1001").await, 404, 5);
    assert!(env.upstream_of("GET", "/v1/people/{id}").is_some(), "{}", env.route_table());
    assert!(env.upstream_of("GET", "/v1/accounts/{id}").is_none(), "{}", env.route_table());

    env.shutdown().await;
    users.shutdown().await;
}

#[tokio::test]
async fn a_reflection_source_that_is_down_at_start_joins_when_it_comes_up() {
    // The users backend's port, chosen now and left closed until later.
    let reserved = TcpListener::bind("127.0.0.1:0").await.expect("reserve a port");
    let users_addr = reserved.local_addr().expect("reserved addr");
    drop(reserved);
    let users_url = upstream_url(users_addr);

    // `*` names the orders backend: had the gateway routed reflected
    // services by pattern, users calls would reach orders (UNIMPLEMENTED).
    let orders = Backend::start(Routes::new(backends::orders_v1())).await;
    let descriptors = tempfile::tempdir().expect("create descriptor folder");
    copy_shipped(descriptors.path(), "v1/orders.binpb");
    let yaml = format!(
        "descriptors:\n  path: {{path}}\n  reflection: [{users_url}]\n  reflection_interval: {INTERVAL}\nupstreams:\n  \"*\": {}\n",
        orders.url
    );
    let env = Env::start(descriptors, &yaml).await;

    let order = env.get("/v1/orders/5001").await;
    assert_eq!(order.status, 200, "{}", order.text());
    assert_eq!(order.json()["id"], "5001");
    assert_error(&env.get("/v1/users/1001").await, 404, 5);

    let users =
        Backend::start_on(TcpListener::bind(users_addr).await.expect("bind the reserved port"), users_v1_reflecting());
    let ada = env.get_once_ok("/v1/users/1001").await;
    assert_ada_v1(&ada);
    let order = env.get("/v1/orders/5001").await;
    assert_eq!(order.status, 200, "{}", order.text());

    assert_eq!(env.upstream_of("GET", "/v1/users/{id}"), Some(users_url), "{}", env.route_table());
    assert_eq!(env.upstream_of("GET", "/v1/orders/{id}"), Some(orders.url.clone()), "{}", env.route_table());

    env.shutdown().await;
    users.shutdown().await;
    orders.shutdown().await;
}

#[tokio::test]
async fn a_source_that_goes_away_keeps_its_routes() {
    let users = Backend::start(users_v1_reflecting()).await;
    let users_url = users.url.clone();
    let empty = tempfile::tempdir().expect("create descriptor folder");
    let env = Env::start(empty, &format!("descriptors:\n  path: {{path}}\n  reflection: [{users_url}]\n")).await;
    assert_ada_v1(&env.get_once_ok("/v1/users/1001").await);

    users.shutdown().await;
    // Asked again by hand (the interval is the default 30s): the failure
    // changes nothing, and a forced reload rebuilds the same routes from the
    // files the source gave last.
    let reloader = env.gateway.reloader();
    assert!(!reloader.refresh_reflection().await, "a failed source changed the reflected files");
    assert!(reloader.reload(true).await.unwrap_or_else(|e| panic!("reload refused: {e}")));
    assert_eq!(reloader.status().generation, 3, "{:?}", reloader.status());
    assert_eq!(env.upstream_of("GET", "/v1/users/{id}"), Some(users_url), "{}", env.route_table());
    // Routed, and the backend is gone: 503, not 404.
    assert_error(&env.get("/v1/users/1001").await, 503, 14);

    env.shutdown().await;
}

/// A reflected service has no folder to take a version from: the last
/// segment of its package names it, so v2's `/users:search` is mounted at
/// `/v2/users:search`, as it is from `descriptors/v2/`.
#[tokio::test]
async fn a_reflected_package_version_mounts_its_routes() {
    let reflection = backends::reflection(&[backends::USERS_V2_SET]).expect("users v2 reflection");
    let users = Backend::start(Routes::new(backends::users_v2()).add_service(reflection)).await;
    let empty = tempfile::tempdir().expect("create descriptor folder");
    let env = Env::start(empty, &format!("descriptors:\n  path: {{path}}\n  reflection: [{}]\n", users.url)).await;

    let found = env.get_once_ok("/v2/users:search?query=ada").await;
    assert!(found.text().contains("Lovelace"), "{}", found.text());
    // Templates that already start with /v2 are not prefixed twice.
    assert_eq!(env.get_once_ok("/v2/users/1001").await.json()["givenName"], "Ada");
    assert_eq!(env.get("/users:search?query=ada").await.status, 404);
    assert_eq!(env.get("/v2/v2/users/1001").await.status, 404);

    env.shutdown().await;
    users.shutdown().await;
}
