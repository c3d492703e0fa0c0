//! Authentication and authorization end to end: a real tonic backend that
//! echoes the metadata it received, the gateway in front of it, a JWKS
//! served over HTTP by the test, and tokens signed here. Every case checks
//! the status, the error envelope and what the backend saw (or that it saw
//! nothing).

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::api::Config;
use common::jwt::{b64, fixture, jwks, now, rs256, rsa_key, sha256_hex, sign};
use common::unary::{ServiceName, Unary};
use common::{config_for, metrics, Backend, Descriptors, Reply, TestGateway};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tonic::service::Routes;

const PROTO: &str = r#"
syntax = "proto3";
package authtest.v1;
import "google/api/annotations.proto";

service Echo {
  rpc Get(EchoRequest) returns (EchoReply) { option (google.api.http) = { get: "/v1/items/{id}" }; }
  rpc Delete(EchoRequest) returns (EchoReply) { option (google.api.http) = { delete: "/v1/items/{id}" }; }
  rpc Ping(EchoRequest) returns (EchoReply) { option (google.api.http) = { get: "/v1/public/ping" }; }
  rpc Stats(EchoRequest) returns (EchoReply) { option (google.api.http) = { get: "/v1/admin/stats" }; }
}

message EchoRequest { string id = 1; }
message EchoReply {
  map<string, string> metadata = 1;
  string method = 2;
  string id = 3;
}
"#;

// ---- the backend -------------------------------------------------------

#[derive(Clone, PartialEq, prost::Message)]
struct EchoRequest {
    #[prost(string, tag = "1")]
    id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EchoReply {
    #[prost(map = "string, string", tag = "1")]
    metadata: HashMap<String, String>,
    #[prost(string, tag = "2")]
    method: String,
    #[prost(string, tag = "3")]
    id: String,
}

/// `authtest.v1.Echo`: every method answers with the metadata it got.
struct EchoName;

impl ServiceName for EchoName {
    const NAME: &'static str = "authtest.v1.Echo";
}

fn echo_server() -> Unary<EchoName, EchoRequest, EchoReply> {
    Unary::new(|method, req: tonic::Request<EchoRequest>| {
        let mut metadata: HashMap<String, String> = HashMap::new();
        for (name, value) in req.metadata().clone().into_headers().iter() {
            let entry = metadata.entry(name.as_str().to_owned()).or_default();
            if !entry.is_empty() {
                entry.push_str(", ");
            }
            entry.push_str(value.to_str().unwrap_or("<binary>"));
        }
        EchoReply { metadata, method: method.to_owned(), id: req.into_inner().id }
    })
}

// ---- the JWKS endpoint ---------------------------------------------------

/// Serves whatever `document` holds, with `status`; counts fetches.
#[derive(Clone)]
struct JwksEndpoint {
    document: Arc<Mutex<(u16, String)>>,
    hits: Arc<AtomicUsize>,
    addr: SocketAddr,
}

impl JwksEndpoint {
    async fn start(kids: &[&str]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = Self {
            document: Arc::new(Mutex::new((200, jwks(kids)))),
            hits: Arc::new(AtomicUsize::new(0)),
            addr: listener.local_addr().expect("addr"),
        };
        let state = endpoint.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| {
                        let state = state.clone();
                        async move {
                            state.hits.fetch_add(1, Ordering::SeqCst);
                            let (status, body) = state.document.lock().expect("lock").clone();
                            let mut response = http::Response::new(Full::new(Bytes::from(body)));
                            *response.status_mut() = http::StatusCode::from_u16(status).expect("status");
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        endpoint
    }

    fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    fn serve(&self, status: u16, body: String) {
        *self.document.lock().expect("lock") = (status, body);
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

// ---- tokens ------------------------------------------------------------

fn claims() -> Value {
    json!({
        "sub": "alice",
        "iss": "https://issuer.test",
        "aud": "api",
        "exp": now() + 600,
        "email": "alice@example.com",
        "groups": ["eng", "ops"],
        "scope": "read",
    })
}

fn with(patch: Value) -> Value {
    let mut c = claims();
    for (k, v) in patch.as_object().expect("object") {
        if v.is_null() {
            c.as_object_mut().expect("object").remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

// ---- the harness -------------------------------------------------------

/// The gateway in front of the echo backend, and the JWKS endpoint its
/// `corp` provider fetches keys from.
struct Harness {
    gw: TestGateway,
    jwks: JwksEndpoint,
    _secret: tempfile::TempDir,
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Value,
}

impl From<Reply> for Answer {
    fn from(reply: Reply) -> Answer {
        Answer { status: reply.status.as_u16(), body: reply.json(), headers: reply.headers }
    }
}

impl Answer {
    /// What the backend received (only for 200s).
    fn metadata(&self, name: &str) -> Option<&str> {
        self.body["metadata"][name].as_str()
    }

    fn challenge(&self) -> &str {
        self.headers.get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The one error envelope: `google.rpc.Status` JSON.
    fn assert_error(&self, status: u16, code: i64) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.body["code"], json!(code), "{}", self.body);
        assert!(self.body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
}

/// `{jwks}` in `auth` is replaced with the JWKS endpoint's URL, `{secret}`
/// with a file holding the HMAC secret `local-secret`.
async fn start(auth: &str, policies: &str, kids: &[&str]) -> Harness {
    let secret_dir = tempfile::tempdir().expect("tempdir");
    let secret = secret_dir.path().join("hs.secret");
    std::fs::write(&secret, "local-secret\n").expect("write secret");

    let jwks = JwksEndpoint::start(kids).await;
    let backend = Backend::start(Routes::new(echo_server())).await;

    let auth = auth.replace("{jwks}", &jwks.url()).replace("{secret}", &secret.display().to_string());
    let config = Config {
        auth: serde_yaml_ng::from_str(&auth).expect("auth config"),
        policies: serde_yaml_ng::from_str(policies).expect("policies config"),
        ..config_for(&backend)
    };
    let gw = common::start(Descriptors::empty().with("echo.proto", PROTO), config, vec![backend]).await;
    Harness { gw, jwks, _secret: secret_dir }
}

impl Harness {
    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        self.gw.request(method, path, headers, None).await.into()
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.send("GET", path, headers).await
    }

    async fn bearer(&self, path: &str, token: &str) -> Answer {
        self.get(path, &[("authorization", &format!("Bearer {token}"))]).await
    }

    fn backend_calls(&self) -> u64 {
        self.gw.backend_calls()
    }

    async fn shutdown(self) {
        self.gw.shutdown().await;
    }
}

const AUTH: &str = r#"
jwt:
  - name: corp
    issuer: https://issuer.test
    audiences: [api]
    jwks_url: "{jwks}"
    jwks_cooldown: 0
  - name: local
    issuer: https://local.test
    secret: { file: "{secret}" }
api_keys:
  query: api_key
  keys:
    - { id: batch, sha256: SHA_BATCH, scopes: [read] }
forward_claims: [email, groups]
"#;

const POLICIES: &str = r#"
rules:
  - name: open
    path_prefix: /v1/public
    allow: public
  - name: admin
    path_prefix: /v1/admin
    scopes: [admin]
    claims: { role: admin }
  - name: deletes
    http_method: DELETE
    providers: [corp]
"#;

fn auth_config() -> String {
    AUTH.replace("SHA_BATCH", &sha256_hex("batch-key-1"))
}

// ---- the cases -----------------------------------------------------------

#[tokio::test]
async fn valid_token_reaches_the_backend_with_identity_and_without_spoofs() {
    let h = start(&auth_config(), POLICIES, &["rsa1"]).await;
    let token = rs256(&claims());
    let auth = format!("Bearer {token}");
    let answer = h
        .get(
            "/v1/items/7",
            &[
                ("authorization", &auth),
                ("x-consumer-id", "mallory"),
                ("grpc-metadata-x-consumer-id", "mallory"),
                ("x-auth-provider", "admin"),
                ("grpc-metadata-x-claim-email", "root@example.com"),
            ],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["method"], "Get");
    assert_eq!(answer.body["id"], "7");
    assert_eq!(answer.metadata("x-consumer-id"), Some("alice"));
    assert_eq!(answer.metadata("x-auth-provider"), Some("corp"));
    assert_eq!(answer.metadata("x-claim-email"), Some("alice@example.com"));
    assert_eq!(answer.metadata("x-claim-groups"), Some(r#"["eng","ops"]"#));
    // auth is on and forward_token is not set: the token stays here.
    assert_eq!(answer.metadata("authorization"), None);
    h.shutdown().await;
}

#[tokio::test]
async fn missing_and_invalid_tokens_are_401_and_never_reach_the_backend() {
    let h = start(&auth_config(), POLICIES, &["rsa1"]).await;

    let none = h.get("/v1/items/7", &[]).await;
    none.assert_error(401, 16);
    assert_eq!(none.challenge(), "Bearer realm=\"protogate\"");

    let rsa_public_key = fixture("rsa1.pub.pem");
    let header_none = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(&serde_json::to_vec(&claims()).expect("json"));
    let valid = rs256(&claims());
    let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
    parts[1] = b64(&serde_json::to_vec(&with(json!({"sub": "root"}))).expect("json"));
    let tampered = parts.join(".");

    let cases: Vec<(&str, String)> = vec![
        ("expired", rs256(&with(json!({"exp": now() - 3600})))),
        ("not yet valid", rs256(&with(json!({"nbf": now() + 3600})))),
        ("wrong issuer", rs256(&with(json!({"iss": "https://evil.test"})))),
        ("wrong audience", rs256(&with(json!({"aud": "other"})))),
        ("no subject", rs256(&with(json!({"sub": null})))),
        ("tampered", tampered),
        ("alg none", format!("{header_none}.{payload}.")),
        (
            "HS256 with the RSA public key",
            sign(Algorithm::HS256, Some("rsa1"), &EncodingKey::from_secret(&rsa_public_key), &claims()),
        ),
        ("unknown kid", sign(Algorithm::RS256, Some("nope"), &rsa_key("rsa1"), &claims())),
        ("malformed", "not-a-jwt".into()),
        (
            "HS256 with the wrong secret",
            sign(
                Algorithm::HS256,
                None,
                &EncodingKey::from_secret(b"guess"),
                &with(json!({"iss": "https://local.test"})),
            ),
        ),
    ];
    for (what, token) in &cases {
        let answer = h.bearer("/v1/items/7", token).await;
        answer.assert_error(401, 16);
        let challenge = answer.challenge();
        assert!(challenge.starts_with("Bearer realm=\"protogate\", error=\"invalid_token\""), "{what}: {challenge}");
        assert!(!challenge.contains(token.as_str()), "{what}: token echoed");
        assert!(!answer.body.to_string().contains("local-secret"), "{what}: secret leaked");
    }
    assert_eq!(h.backend_calls(), 0);

    // The HMAC provider accepts its own tokens.
    let local = sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(b"local-secret"),
        &with(json!({"iss": "https://local.test"})),
    );
    let ok = h.bearer("/v1/items/7", &local).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.metadata("x-auth-provider"), Some("local"));
    h.shutdown().await;
}

#[tokio::test]
async fn token_in_a_place_not_allowed_is_not_a_credential() {
    let h = start(&auth_config(), POLICIES, &["rsa1"]).await;
    let token = rs256(&claims());
    let in_query = h.get(&format!("/v1/items/7?access_token={token}"), &[]).await;
    in_query.assert_error(401, 16);
    assert_eq!(in_query.challenge(), "Bearer realm=\"protogate\"");
    let in_cookie = h.get("/v1/items/7", &[("cookie", &format!("access_token={token}"))]).await;
    in_cookie.assert_error(401, 16);
    let wrong_scheme = h.get("/v1/items/7", &[("authorization", &format!("Basic {token}"))]).await;
    wrong_scheme.assert_error(401, 16);
    assert_eq!(h.backend_calls(), 0);
    h.shutdown().await;
}

#[tokio::test]
async fn jwks_rotation_is_picked_up_and_failures_keep_old_keys() {
    let h = start(&auth_config(), POLICIES, &["rsa1"]).await;
    let rotated = sign(Algorithm::RS256, Some("rsa2"), &rsa_key("rsa2"), &claims());
    h.bearer("/v1/items/1", &rotated).await.assert_error(401, 16);

    h.jwks.serve(200, jwks(&["rsa1", "rsa2"]));
    let answer = h.bearer("/v1/items/1", &rotated).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.metadata("x-consumer-id"), Some("alice"));

    // The issuer breaks: known keys keep working.
    h.jwks.serve(500, "down".into());
    let unknown = sign(Algorithm::RS256, Some("rsa9"), &rsa_key("rsa1"), &claims());
    h.bearer("/v1/items/1", &unknown).await.assert_error(401, 16);
    assert_eq!(h.bearer("/v1/items/1", &rotated).await.status, 200);
    assert_eq!(h.bearer("/v1/items/1", &rs256(&claims())).await.status, 200);
    h.shutdown().await;
}

#[tokio::test]
async fn unknown_kid_flood_is_held_back_by_the_cooldown() {
    let auth = auth_config().replace("jwks_cooldown: 0", "jwks_cooldown: 1h");
    let h = start(&auth, POLICIES, &["rsa1"]).await;
    // The first valid request makes sure the initial fetch has happened.
    assert_eq!(h.bearer("/v1/items/1", &rs256(&claims())).await.status, 200);
    let before = h.jwks.hits();
    for i in 0..20 {
        let kid = format!("made-up-{i}");
        let token = sign(Algorithm::RS256, Some(&kid), &rsa_key("rsa1"), &claims());
        h.bearer("/v1/items/1", &token).await.assert_error(401, 16);
    }
    // At most one on-demand fetch for the whole flood.
    assert!(h.jwks.hits() <= before + 1, "{} fetches", h.jwks.hits() - before);
    h.shutdown().await;
}

#[tokio::test]
async fn api_keys_right_wrong_absent() {
    let h = start(&auth_config(), POLICIES, &["rsa1"]).await;
    let right = h.get("/v1/items/3", &[("x-api-key", "batch-key-1")]).await;
    assert_eq!(right.status, 200, "{}", right.body);
    assert_eq!(right.metadata("x-consumer-id"), Some("batch"));
    assert_eq!(right.metadata("x-auth-provider"), Some("api_key"));
    assert_eq!(right.metadata("x-api-key"), None);

    let from_query = h.get("/v1/items/3?api_key=batch-key-1", &[]).await;
    assert_eq!(from_query.status, 200, "{}", from_query.body);
    assert_eq!(from_query.metadata("x-consumer-id"), Some("batch"));

    let calls = h.backend_calls();
    let wrong = h.get("/v1/items/3", &[("x-api-key", "batch-key-2")]).await;
    wrong.assert_error(401, 16);
    assert!(wrong.challenge().contains("error=\"invalid_token\""));
    h.get("/v1/items/3", &[]).await.assert_error(401, 16);
    assert_eq!(h.backend_calls(), calls);

    // Every decision is counted by provider and outcome.
    let samples = metrics::samples(&h.gw.gateway);
    let decisions = |provider: &str, outcome: &str| {
        let series = format!(r#"protogate_auth_decisions_total{{provider="{provider}",outcome="{outcome}"}}"#);
        metrics::sample(&samples, &series)
    };
    assert_eq!(decisions("api_key", "allowed"), 2.0, "{samples:?}");
    assert_eq!(decisions("api_key", "unauthenticated"), 1.0, "{samples:?}");
    assert_eq!(decisions("none", "unauthenticated"), 1.0, "{samples:?}");
    h.shutdown().await;
}

#[tokio::test]
async fn policies_select_by_prefix_and_method_and_check_scopes_and_claims() {
    let h = start(&auth_config(), POLICIES, &["rsa1"]).await;

    // Public prefix: no credential needed, and spoofed identity still
    // never reaches the backend.
    let public = h.get("/v1/public/ping", &[("grpc-metadata-x-consumer-id", "mallory")]).await;
    assert_eq!(public.status, 200, "{}", public.body);
    assert_eq!(public.metadata("x-consumer-id"), None);
    // A bad token on a public route is ignored, not fatal.
    let stale = rs256(&with(json!({"exp": now() - 3600})));
    assert_eq!(h.bearer("/v1/public/ping", &stale).await.status, 200);

    // Admin prefix: scope and claim both required.
    let no_scope = h.bearer("/v1/admin/stats", &rs256(&claims())).await;
    no_scope.assert_error(403, 7);
    assert!(no_scope.challenge().contains("error=\"insufficient_scope\""));
    let wrong_role = h.bearer("/v1/admin/stats", &rs256(&with(json!({"scope": "read admin", "role": "user"})))).await;
    wrong_role.assert_error(403, 7);
    let admin = h.bearer("/v1/admin/stats", &rs256(&with(json!({"scope": "read admin", "role": "admin"})))).await;
    assert_eq!(admin.status, 200, "{}", admin.body);
    assert_eq!(admin.body["method"], "Stats");

    // DELETE accepts corp tokens only; the same path under GET does not
    // need it.
    let by_key = h.send("DELETE", "/v1/items/9", &[("x-api-key", "batch-key-1")]).await;
    by_key.assert_error(403, 7);
    let corp = format!("Bearer {}", rs256(&claims()));
    let by_token = h.send("DELETE", "/v1/items/9", &[("authorization", &corp)]).await;
    assert_eq!(by_token.status, 200, "{}", by_token.body);
    assert_eq!(by_token.body["method"], "Delete");
    assert_eq!(h.get("/v1/items/9", &[("x-api-key", "batch-key-1")]).await.status, 200);

    // Unmatched routes fall to the default: authenticated.
    h.get("/v1/items/9", &[]).await.assert_error(401, 16);
    h.shutdown().await;
}

#[tokio::test]
async fn forward_token_sends_authorization_on() {
    let auth = format!("{}forward_token: true\n", auth_config());
    let h = start(&auth, "default: authenticated", &["rsa1"]).await;
    let token = rs256(&claims());
    let answer = h.bearer("/v1/items/1", &token).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let expected = format!("Bearer {token}");
    assert_eq!(answer.metadata("authorization"), Some(expected.as_str()));
    h.shutdown().await;
}

#[tokio::test]
async fn without_auth_everything_is_public_as_before() {
    let h = start("{}", "{}", &["rsa1"]).await;
    let answer = h
        .get("/v1/admin/stats", &[("authorization", "Bearer whatever"), ("grpc-metadata-x-consumer-id", "mallory")])
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // No auth configured: the backend may do its own, so the token passes;
    // an identity header from the client still does not.
    assert_eq!(answer.metadata("authorization"), Some("Bearer whatever"));
    assert_eq!(answer.metadata("x-consumer-id"), None);
    h.shutdown().await;
}

#[tokio::test]
async fn more_than_one_credential_is_refused_whatever_the_order() {
    let h = start(&auth_config(), POLICIES, &["rsa1"]).await;
    let alice = format!("Bearer {}", rs256(&claims()));
    let bob = format!("Bearer {}", rs256(&with(json!({"sub": "bob"}))));
    let joined = format!("{alice}, Bearer garbage");
    let calls = h.backend_calls();
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("/v1/items/1", vec![("authorization", &alice), ("authorization", "Bearer garbage")]),
        ("/v1/items/1", vec![("authorization", "Bearer garbage"), ("authorization", &alice)]),
        ("/v1/items/1", vec![("authorization", &alice), ("authorization", &bob)]),
        ("/v1/items/1", vec![("authorization", &joined)]),
        ("/v1/items/1", vec![("x-api-key", "batch-key-1"), ("x-api-key", "wrong")]),
        ("/v1/items/1", vec![("x-api-key", "wrong"), ("x-api-key", "batch-key-1")]),
        ("/v1/items/1", vec![("x-api-key", "batch-key-1, wrong")]),
        ("/v1/items/1?api_key=batch-key-1", vec![("x-api-key", "batch-key-1")]),
        ("/v1/items/1?api_key=batch-key-1&api_key=wrong", vec![]),
        ("/v1/items/1", vec![("authorization", &alice), ("x-api-key", "batch-key-1")]),
        // Not resolved on a public route either.
        ("/v1/public/ping", vec![("authorization", &alice), ("authorization", &bob)]),
    ];
    for (path, headers) in &cases {
        let answer = h.get(path, headers).await;
        answer.assert_error(400, 3);
        assert!(
            answer.body["message"].as_str().is_some_and(|m| m.contains("more than one credential")),
            "{path} {headers:?}: {}",
            answer.body
        );
        assert!(answer.challenge().contains("error=\"invalid_request\""), "{path}: {}", answer.challenge());
    }
    assert_eq!(h.backend_calls(), calls, "no ambiguous request reaches the backend");
    // One credential of each kind still passes.
    assert_eq!(h.get("/v1/items/1", &[("authorization", &alice)]).await.metadata("x-consumer-id"), Some("alice"));
    assert_eq!(h.get("/v1/items/1", &[("x-api-key", "batch-key-1")]).await.metadata("x-consumer-id"), Some("batch"));
    h.shutdown().await;
}

#[tokio::test]
async fn credentials_cannot_be_smuggled_as_grpc_metadata() {
    let alice = rs256(&claims());
    let bearer = format!("Bearer {alice}");
    let smuggled = [
        ("authorization", bearer.as_str()),
        ("grpc-metadata-authorization", "Bearer forged"),
        ("grpc-metadata-x-api-key", "forged"),
    ];
    for forward in [false, true] {
        let auth = format!("{}forward_token: {forward}\n", auth_config());
        let h = start(&auth, POLICIES, &["rsa1"]).await;
        let answer = h.get("/v1/items/1", &smuggled).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        // Exactly the verified token, or nothing.
        let expected = forward.then_some(bearer.as_str());
        assert_eq!(answer.metadata("authorization"), expected, "forward_token: {forward}: {}", answer.body);
        assert_eq!(answer.metadata("x-api-key"), None);
        // Anonymous on a public route: no token of the client's passes.
        let public = h.get("/v1/public/ping", &smuggled[1..]).await;
        assert_eq!(public.status, 200, "{}", public.body);
        assert_eq!(public.metadata("authorization"), None, "forward_token: {forward}");
        h.shutdown().await;
    }
}
