//! Versioned mounts end to end (design §3): the example users service in two
//! incompatible versions, each from its own version folder of the descriptor
//! directory, each served by its own real tonic backend, side by side behind
//! one gateway, talked to over real HTTP.
//!
//! What could break and is checked here: which backend a version reaches
//! (per-package `upstreams` and `versions.vN.upstream`), the `/vN` prefix
//! being added exactly once, the deprecation headers of one version and not
//! the other, and the VERSION column of `protogate routes`.

#[path = "../examples/backends/mod.rs"]
mod backends;
mod common;

use common::{assert_error, canonical, Backend, Descriptors, Reply, TestGateway};
use serde_json::json;
use tonic::service::Routes;

/// `versions.v1.deprecated` in [`deprecated_v1`], and the headers it must
/// produce, worked out by hand: 2025-01-01T00:00:00Z is 1 735 689 600 s
/// after the epoch (RFC 9745 `@<seconds>`), and 2027-06-30 is a Wednesday
/// (RFC 8594 uses the HTTP date format).
const SINCE: &str = "2025-01-01";
const SUNSET: &str = "2027-06-30";
const DEPRECATION_HEADER: &str = "@1735689600";
const SUNSET_HEADER: &str = "Wed, 30 Jun 2027 00:00:00 GMT";

/// Users v1 and v2 backends and the gateway over a folder holding
/// `v1/users.binpb` and `v2/users.binpb`. `config` gets the v1 and v2
/// backend URLs and returns the YAML keys other than `descriptors`, so each
/// test states its wiring in the config syntax an operator would write.
async fn start(config: impl FnOnce(&str, &str) -> String) -> TestGateway {
    let v1 = Backend::start(Routes::new(backends::users_v1())).await;
    let v2 = Backend::start(Routes::new(backends::users_v2())).await;
    let descriptors = Descriptors::empty().with_shipped("v1/users.binpb").with_shipped("v2/users.binpb");
    let yaml = format!("descriptors: {{descriptors}}\n{}", config(&v1.url(), &v2.url()));
    common::start(descriptors, yaml, vec![v1, v2]).await
}

/// `[METHOD, PATH, VERSION, GRPC METHOD, UPSTREAM]` of every row of
/// `protogate routes`.
fn route_rows(env: &TestGateway) -> Vec<[String; 5]> {
    env.route_rows(["METHOD", "PATH", "VERSION", "GRPC METHOD", "UPSTREAM"])
}

/// Each version's package to its own backend, the way `--upstream` does it.
fn per_package(v1: &str, v2: &str) -> String {
    format!("upstreams:\n  acme.users.v1: {v1}\n  acme.users.v2: {v2}\n")
}

/// [`per_package`], with v1 deprecated.
fn deprecated_v1(v1: &str, v2: &str) -> String {
    format!("{}versions:\n  v1:\n    deprecated: {{ since: {SINCE}, sunset: {SUNSET} }}\n", per_package(v1, v2))
}

#[tokio::test]
async fn each_version_answers_in_its_own_shape_from_its_own_backend() {
    let env = start(per_package).await;

    let v1 = env.get("/v1/users/1001").await;
    assert_eq!(v1.status, 200, "{}", v1.text());
    let v1 = v1.json();
    assert_eq!(v1["id"], "1001", "{v1}");
    assert_eq!(v1["displayName"], "Ada Lovelace", "{v1}");
    assert_eq!(v1["role"], "ROLE_ADMIN", "{v1}");
    assert!(v1.get("givenName").is_none() && v1.get("accessLevel").is_none(), "v1 answered in v2's shape: {v1}");

    // Had the gateway sent this to the v1 backend, the call to
    // acme.users.v2.UserService would have been UNIMPLEMENTED.
    let v2 = env.get("/v2/users/1001").await;
    assert_eq!(v2.status, 200, "{}", v2.text());
    let v2 = v2.json();
    assert_eq!(v2["id"], "1001", "{v2}");
    assert_eq!(v2["givenName"], "Ada", "{v2}");
    assert_eq!(v2["familyName"], "Lovelace", "{v2}");
    assert_eq!(v2["accessLevel"], "ACCESS_LEVEL_OWNER", "{v2}");
    assert!(v2.get("displayName").is_none() && v2.get("role").is_none(), "v2 answered in v1's shape: {v2}");

    // Separate backends, separate stores: a user created through v2 exists
    // only there.
    let created = env
        .post_json(
            "/v2/users",
            r#"{"givenName": "Barbara", "familyName": "Liskov", "email": "barbara@example.com",
                "accessLevel": "ACCESS_LEVEL_EDITOR"}"#,
        )
        .await;
    assert_eq!(created.status, 200, "{}", created.text());
    let created = created.json();
    let id = created["id"].as_str().unwrap_or_else(|| panic!("no id in {created}"));
    assert_eq!(created["familyName"], "Liskov", "{created}");
    assert_eq!(created["accessLevel"], "ACCESS_LEVEL_EDITOR", "{created}");
    let fetched = env.get(&format!("/v2/users/{id}")).await;
    assert_eq!(fetched.status, 200, "{}", fetched.text());
    assert_eq!(fetched.json()["givenName"], "Barbara");
    assert_error(&env.get(&format!("/v1/users/{id}")).await, 404, 5);

    let page = env.get("/v2/users?page_size=2").await;
    assert_eq!(page.status, 200, "{}", page.text());
    let page = page.json();
    assert_eq!(page["users"].as_array().map(Vec::len), Some(2), "{page}");
    assert_eq!(page["users"][1]["givenName"], "Grace", "{page}");
    assert!(page["nextPageToken"].as_str().is_some_and(|t| !t.is_empty()), "{page}");

    env.shutdown().await;
}

#[tokio::test]
async fn the_version_prefix_is_added_exactly_once() {
    let env = start(per_package).await;

    // `/users:search` in the proto, mounted by the v2 folder.
    let found = env.get("/v2/users:search?query=HOP").await;
    assert_eq!(found.status, 200, "{}", found.text());
    let found = found.json();
    assert_eq!(found["users"], json!([found["users"][0]]), "exactly one match expected: {found}");
    assert_eq!(found["users"][0]["familyName"], "Hopper", "{found}");
    assert_error(&env.get("/users:search?query=hop").await, 404, 5);

    // `/v2/users/{id}` in the proto already carries the prefix.
    assert_eq!(env.get("/v2/users/1002").await.status, 200);
    assert_error(&env.get("/v2/v2/users/1002").await, 404, 5);
    assert_error(&env.get("/v2/v2/users:search?query=hop").await, 404, 5);
    assert_error(&env.get("/v1/v1/users/1002").await, 404, 5);

    // The backend's own validation still arrives through the mount.
    let empty = assert_error(&env.get("/v2/users:search?query=").await, 400, 3);
    assert_eq!(empty["details"][0]["fieldViolations"][0]["field"], "query", "{empty}");

    env.shutdown().await;
}

#[tokio::test]
async fn a_deprecated_version_says_so_on_every_response_and_the_other_does_not() {
    let env = start(deprecated_v1).await;
    let deprecated = |reply: &Reply, what: &str| {
        assert_eq!(reply.header("deprecation"), Some(DEPRECATION_HEADER), "{what}: {:?}", reply.headers);
        assert_eq!(reply.header("sunset"), Some(SUNSET_HEADER), "{what}: {:?}", reply.headers);
    };
    let current = |reply: &Reply, what: &str| {
        assert!(
            reply.header("deprecation").is_none() && reply.header("sunset").is_none(),
            "{what}: {:?}",
            reply.headers
        );
    };

    let ok = env.get("/v1/users/1001").await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    deprecated(&ok, "v1 success");
    // The backend's error (NOT_FOUND) and the gateway's own (bad JSON).
    let missing = env.get("/v1/users/9999").await;
    assert_error(&missing, 404, 5);
    deprecated(&missing, "v1 backend error");
    let bad = env.post_json("/v1/users", "{").await;
    assert_error(&bad, 400, 3);
    deprecated(&bad, "v1 gateway error");

    let ok = env.get("/v2/users/1001").await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    current(&ok, "v2 success");
    let missing = env.get("/v2/users/9999").await;
    assert_error(&missing, 404, 5);
    current(&missing, "v2 backend error");

    env.shutdown().await;
}

/// [`deprecated_v1`], with v1 behind an API key and limited to one call a
/// minute, v2 public and unlimited.
fn deprecated_v1_guarded(v1: &str, v2: &str) -> String {
    // The key is "let-me-in" (`printf %s let-me-in | sha256sum`).
    format!(
        "{}auth:\n  api_keys:\n    keys:\n      - id: tester\n        sha256: \
         a3ee786b5707c27d42570785081ec17f5c7db9262a01366af362a1aa61a420b9\n\
         policies:\n  rules:\n    - version: v2\n      allow: public\n\
         rate_limits:\n  rules:\n    - match: {{ version: v1 }}\n      key: consumer\n      rate: 1/min\n      burst: 1\n",
        deprecated_v1(v1, v2)
    )
}

#[tokio::test]
async fn a_deprecated_version_says_so_on_refusals_before_the_backend_too() {
    let env = start(deprecated_v1_guarded).await;
    let deprecated = |reply: &Reply, what: &str| {
        assert_eq!(reply.header("deprecation"), Some(DEPRECATION_HEADER), "{what}: {:?}", reply.headers);
        assert_eq!(reply.header("sunset"), Some(SUNSET_HEADER), "{what}: {:?}", reply.headers);
    };
    let get_with_key =
        |path: &'static str| env.request(reqwest::Method::GET, path, &[("x-api-key", "let-me-in")], None);

    // Refused by authentication, before any backend call.
    let unauthenticated = env.get("/v1/users/1001").await;
    assert_error(&unauthenticated, 401, 16);
    deprecated(&unauthenticated, "v1 401");
    // The one call the bucket holds, then a refusal by the rate limiter.
    let ok = get_with_key("/v1/users/1001").await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    deprecated(&ok, "v1 success");
    let limited = get_with_key("/v1/users/1001").await;
    assert_error(&limited, 429, 8);
    deprecated(&limited, "v1 429");

    let current = env.get("/v2/users/1001").await;
    assert_eq!(current.status, 200, "{}", current.text());
    assert!(current.header("deprecation").is_none(), "v2: {:?}", current.headers);

    env.shutdown().await;
}

#[tokio::test]
async fn the_route_table_shows_each_routes_version() {
    let env = start(per_package).await;
    let rows: Vec<[String; 4]> = route_rows(&env)
        .into_iter()
        .map(|[method, path, version, grpc, _]| [method, canonical(&path), version, grpc])
        .collect();
    let expected: Vec<[String; 4]> = [
        ["GET", "/v1/users/{id}", "v1", "acme.users.v1.UserService/GetUser"],
        ["GET", "/v1/accounts/{id}", "v1", "acme.users.v1.UserService/GetUser"],
        ["GET", "/v1/users", "v1", "acme.users.v1.UserService/ListUsers"],
        ["POST", "/v1/users", "v1", "acme.users.v1.UserService/CreateUser"],
        ["PATCH", "/v1/users/{user.id}", "v1", "acme.users.v1.UserService/UpdateUser"],
        ["DELETE", "/v1/users/{id}", "v1", "acme.users.v1.UserService/DeleteUser"],
        ["POST", "/v1/users/{id}:deactivate", "v1", "acme.users.v1.UserService/DeactivateUser"],
        ["POST", "/v1/users:import", "v1", "acme.users.v1.UserService/ImportUsers"],
        ["GET", "/v2/users/{id}", "v2", "acme.users.v2.UserService/GetUser"],
        ["GET", "/v2/users", "v2", "acme.users.v2.UserService/ListUsers"],
        ["POST", "/v2/users", "v2", "acme.users.v2.UserService/CreateUser"],
        ["GET", "/v2/users:search", "v2", "acme.users.v2.UserService/SearchUsers"],
    ]
    .iter()
    .map(|row| row.map(str::to_owned))
    .collect();
    let sorted = |mut rows: Vec<[String; 4]>| {
        rows.sort();
        rows
    };
    assert_eq!(sorted(rows), sorted(expected));

    // The same facts straight from the catalog the table is printed from.
    for route in &env.gateway.catalog().routes {
        let version = route.version.as_deref().unwrap_or_else(|| panic!("{} has no version", route.grpc_method()));
        let package_version = route
            .call()
            .expect("a method route")
            .method
            .parent_service()
            .package_name()
            .rsplit('.')
            .next()
            .unwrap_or_default();
        assert_eq!(version, package_version, "{} mounted under the wrong folder", route.grpc_method());
        let template = route.template.to_string();
        assert!(template.starts_with(&format!("/{version}/")), "{template} of {}", route.grpc_method());
        assert!(!template.starts_with(&format!("/{version}/{version}/")), "{template} prefixed twice");
    }

    env.shutdown().await;
}

#[tokio::test]
async fn versions_upstream_sends_a_whole_version_to_its_own_backend() {
    // `*` would send v2 to the v1 backend too; `versions.v2.upstream` wins.
    let env = start(|v1, v2| format!("upstreams:\n  \"*\": {v1}\nversions:\n  v2:\n    upstream: {v2}\n")).await;

    let v1 = env.get("/v1/users/1002").await;
    assert_eq!(v1.status, 200, "{}", v1.text());
    assert_eq!(v1.json()["displayName"], "Grace Hopper");
    let v2 = env.get("/v2/users/1002").await;
    assert_eq!(v2.status, 200, "{}", v2.text());
    let v2 = v2.json();
    assert_eq!((&v2["givenName"], &v2["familyName"]), (&json!("Grace"), &json!("Hopper")), "{v2}");
    assert_eq!(env.get("/v2/users:search?query=lovelace").await.json()["users"][0]["id"], "1001");

    let upstream_of = |version: &str| -> Vec<String> {
        let mut urls: Vec<String> = route_rows(&env)
            .into_iter()
            .filter(|row| row[2] == version)
            .map(|row| row[4].trim_end_matches('/').to_owned())
            .collect();
        urls.dedup();
        urls
    };
    assert_eq!(upstream_of("v1"), [env.backends()[0].url()]);
    assert_eq!(upstream_of("v2"), [env.backends()[1].url()]);

    env.shutdown().await;
}
