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

use std::time::Duration;

use common::fixtures::{compile_set, repo_path};
use common::{assert_error, canonical, eventually, upstream_url, Backend, Descriptors, Reply, TestGateway};
use tokio::net::TcpListener;
use tonic::service::Routes;

/// How long a test waits for the gateway to pick up a change before it
/// gives up: a bound on a hang, not a measurement.
const PATIENCE: Duration = Duration::from_secs(10);

/// The refresh interval of the tests whose source changes after start.
const INTERVAL: &str = "200ms";

/// Users v1 that also answers reflection about itself.
fn users_v1_reflecting() -> Routes {
    let reflection = backends::reflection(&[backends::USERS_V1_SET]).expect("users v1 reflection");
    Routes::new(backends::users_v1()).add_service(reflection)
}

/// The gateway over `descriptors` with the config file `yaml`; the backends
/// are the test's, which stops and starts them on its own.
async fn start(descriptors: Descriptors, yaml: &str) -> TestGateway {
    common::start(descriptors, yaml, vec![]).await
}

/// `[METHOD, PATH, GRPC METHOD, UPSTREAM]` of every route of
/// `protogate routes`.
fn routes(env: &TestGateway) -> Vec<[String; 4]> {
    env.route_rows(["METHOD", "PATH", "GRPC METHOD", "UPSTREAM"])
}

/// The upstream of the route `METHOD PATH`, if there is one.
fn upstream_of(env: &TestGateway, method: &str, path: &str) -> Option<String> {
    routes(env).into_iter().find(|[m, p, ..]| m == method && canonical(p) == path).map(|[.., upstream]| upstream)
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

#[tokio::test]
async fn reflection_discovers_a_backends_services_with_no_file_at_all() {
    let users = Backend::start(users_v1_reflecting()).await;
    // No `upstreams` at all: the reflection source is the only backend.
    let env = start(
        Descriptors::empty(),
        &format!("descriptors:\n  path: {{descriptors}}\n  reflection: [{}]\n", users.upstream_url()),
    )
    .await;

    let ada = env.get_until("/v1/users/1001", 200, PATIENCE).await;
    assert_ada_v1(&ada);
    // An additional binding: the reflected file kept its google.api.http
    // option whole.
    let grace = env.get("/v1/accounts/1002").await;
    assert_eq!(grace.status, 200, "{}", grace.text());
    assert_eq!(grace.json()["displayName"], "Grace Hopper");
    // The backend's own errors come through as usual.
    assert_error(&env.get("/v1/users/9999").await, 404, 5);

    let routes = routes(&env);
    assert!(
        routes.iter().any(|[m, p, g, _]| m == "GET"
            && canonical(p) == "/v1/users/{id}"
            && g == "acme.users.v1.UserService/GetUser"),
        "GetUser is not routed at GET /v1/users/{{id}}:\n{}",
        env.route_table()
    );
    for [method, path, grpc, upstream] in &routes {
        assert_eq!(upstream, &users.upstream_url(), "{method} {path} goes elsewhere:\n{}", env.route_table());
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
    let source = std::fs::read_to_string(repo_path("proto/acme/users/v1/users.proto")).expect("read users.proto");
    let changed = source.replace("\"/v1/accounts/{id}\"", "\"/v1/people/{id}\"");
    assert_ne!(changed, source, "users.proto no longer has the /v1/accounts binding this test changes");
    let include = Descriptors::empty().with("acme/users/v1/users.proto", changed);
    // The changed copy first, so it shadows the original; imports from proto/.
    compile_set(&[include.path()], "acme/users/v1/users.proto")
}

#[tokio::test]
async fn a_folder_file_and_a_reflected_file_of_one_name_must_agree() {
    let users = Backend::start(users_v1_reflecting()).await;
    let descriptors = Descriptors::empty().with("users.binpb", divergent_users_v1());
    let yaml = format!(
        "descriptors:\n  path: {{descriptors}}\n  reflection: [{url}]\n  reflection_interval: {INTERVAL}\nupstreams:\n  acme.users.v1: {url}\n",
        url = users.upstream_url()
    );
    let env = start(descriptors, &yaml).await;

    let refused = eventually("a reload is refused", PATIENCE, || async {
        env.status().last_error.clone().ok_or_else(|| format!("{:?}", env.status()))
    })
    .await;
    assert_eq!(
        refused.problems,
        vec![format!(
            "acme/users/v1/users.proto is defined differently in users.binpb and {} (reflection)",
            users.upstream_url()
        )],
    );

    // The folder's catalog is still the live one, whole.
    let status = env.gateway.reloader().status();
    assert_eq!(status.generation, 1, "{status:?}");
    assert!(status.reloads_failed >= 1, "{status:?}");
    let people = env.get("/v1/people/1001").await;
    assert_eq!(people.status, 200, "{}", people.text());
    assert_ada_v1(&people);
    assert_error(&env.get("/v1/accounts/1001").await, 404, 5);
    assert!(upstream_of(&env, "GET", "/v1/people/{id}").is_some(), "{}", env.route_table());
    assert!(upstream_of(&env, "GET", "/v1/accounts/{id}").is_none(), "{}", env.route_table());

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
    let descriptors = Descriptors::empty().with_shipped("v1/orders.binpb");
    let yaml = format!(
        "descriptors:\n  path: {{descriptors}}\n  reflection: [{users_url}]\n  reflection_interval: {INTERVAL}\nupstreams:\n  \"*\": {}\n",
        orders.upstream_url()
    );
    let env = start(descriptors, &yaml).await;

    let order = env.get("/v1/orders/5001").await;
    assert_eq!(order.status, 200, "{}", order.text());
    assert_eq!(order.json()["id"], "5001");
    assert_error(&env.get("/v1/users/1001").await, 404, 5);

    let users =
        Backend::start_on(TcpListener::bind(users_addr).await.expect("bind the reserved port"), users_v1_reflecting());
    let ada = env.get_until("/v1/users/1001", 200, PATIENCE).await;
    assert_ada_v1(&ada);
    let order = env.get("/v1/orders/5001").await;
    assert_eq!(order.status, 200, "{}", order.text());

    assert_eq!(upstream_of(&env, "GET", "/v1/users/{id}"), Some(users_url), "{}", env.route_table());
    assert_eq!(upstream_of(&env, "GET", "/v1/orders/{id}"), Some(orders.upstream_url()), "{}", env.route_table());

    env.shutdown().await;
    users.shutdown().await;
    orders.shutdown().await;
}

#[tokio::test]
async fn a_source_that_goes_away_keeps_its_routes() {
    let users = Backend::start(users_v1_reflecting()).await;
    let users_url = users.upstream_url();
    let env =
        start(Descriptors::empty(), &format!("descriptors:\n  path: {{descriptors}}\n  reflection: [{users_url}]\n"))
            .await;
    assert_ada_v1(&env.get_until("/v1/users/1001", 200, PATIENCE).await);

    users.shutdown().await;
    // Asked again by hand (the interval is the default 30s): the failure
    // changes nothing, and a forced reload rebuilds the same routes from the
    // files the source gave last.
    let reloader = env.gateway.reloader();
    assert!(!reloader.refresh_reflection().await, "a failed source changed the reflected files");
    assert!(reloader.reload(true).await.unwrap_or_else(|e| panic!("reload refused: {e}")));
    assert_eq!(reloader.status().generation, 3, "{:?}", reloader.status());
    assert_eq!(upstream_of(&env, "GET", "/v1/users/{id}"), Some(users_url), "{}", env.route_table());
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
    let env = start(
        Descriptors::empty(),
        &format!("descriptors:\n  path: {{descriptors}}\n  reflection: [{}]\n", users.upstream_url()),
    )
    .await;

    let found = env.get_until("/v2/users:search?query=ada", 200, PATIENCE).await;
    assert!(found.text().contains("Lovelace"), "{}", found.text());
    // Templates that already start with /v2 are not prefixed twice.
    assert_eq!(env.get_until("/v2/users/1001", 200, PATIENCE).await.json()["givenName"], "Ada");
    assert_eq!(env.get("/users:search?query=ada").await.status, 404);
    assert_eq!(env.get("/v2/v2/users/1001").await.status, 404);

    env.shutdown().await;
    users.shutdown().await;
}
