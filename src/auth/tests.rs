//! The authenticator's own decisions: which credential wins, what is
//! stripped, what the challenges say.

use http::{HeaderMap, Uri};
use sha2::{Digest, Sha256};

use super::*;
use crate::config::auth::{ForwardClaim, MappedClaim};

fn authenticator(yaml: &str) -> Authenticator {
    let config: AuthConfig = serde_yaml_ng::from_str(yaml).expect("config");
    Authenticator::new(&config).expect("valid")
}

fn hex_sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn jwks_file(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("jwks.json");
    let jwk = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/auth/rsa1.jwk.json"))
        .expect("fixture");
    std::fs::write(&path, format!("{{\"keys\":[{jwk}]}}")).expect("write");
    path.display().to_string()
}

/// A token whose payload names `iss`; the signature does not matter for
/// picking a provider.
fn token_from(iss: &str) -> String {
    use base64::Engine;
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
    };
    format!(
        "{}.{}.sig",
        b64(&serde_json::json!({"alg": "RS256", "kid": "rsa1"})),
        b64(&serde_json::json!({"iss": iss, "sub": "x"}))
    )
}

#[test]
fn providers_sharing_a_header_are_picked_by_issuer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = jwks_file(&dir);
    let auth = authenticator(&format!(
        "jwt:\n  - {{ name: a, issuer: https://a.test, jwks_file: {file} }}\n  - {{ name: b, issuer: https://b.test, jwks_file: {file} }}\n"
    ));
    let uri: Uri = "/x".parse().expect("uri");
    let pick = |iss: &str| {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", format!("Bearer {}", token_from(iss)).parse().expect("value"));
        match auth.credential(&headers, &uri, None) {
            Ok(Some(Credential::Jwt { provider, .. })) => auth.jwt[provider].name.clone(),
            _ => String::new(),
        }
    };
    assert_eq!(pick("https://a.test"), "a");
    assert_eq!(pick("https://b.test"), "b");
    // An unknown issuer goes to the first, which rejects it.
    assert_eq!(pick("https://evil.test"), "a");
}

#[test]
fn two_credentials_are_refused_whatever_their_places() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = jwks_file(&dir);
    let auth = authenticator(&format!(
        "jwt:\n  - {{ name: q, jwks_file: {file}, from: query }}\napi_keys:\n  query: key\n  keys: [{{ id: svc, sha256: {} }}]\n",
        hex_sha256("k1")
    ));
    let headers = HeaderMap::new();
    let both: Uri = "/x?key=k1&access_token=t.t.t&page=2".parse().expect("uri");
    assert!(matches!(auth.credential(&headers, &both, None), Err(Several)));
    let key_only: Uri = "/x?key=k1".parse().expect("uri");
    assert!(matches!(
        auth.credential(&headers, &key_only, None),
        Ok(Some(Credential::ApiKey(k))) if k == "k1"
    ));
    let token_only: Uri = "/x?access_token=t.t.t".parse().expect("uri");
    assert!(matches!(auth.credential(&headers, &token_only, None), Ok(Some(Credential::Jwt { .. }))));
    for twice in ["/x?key=k1&key=k1", "/x?access_token=a.b.c&access_token=a.b.c", "/x?key=k1&key="] {
        let uri: Uri = twice.parse().expect("uri");
        assert!(matches!(auth.credential(&headers, &uri, None), Err(Several)), "{twice}");
    }
    assert_eq!(auth.strip_credential_params(&both).map(|u| u.to_string()), Some("/x?page=2".to_string()));
    assert_eq!(auth.strip_credential_params(&key_only).map(|u| u.to_string()), Some("/x".to_string()));
    let clean: Uri = "/x?page=2&keys=1".parse().expect("uri");
    assert!(auth.strip_credential_params(&clean).is_none());
}

#[test]
fn client_identity_headers_are_stripped() {
    let auth = authenticator(&format!(
        "api_keys: {{ keys: [{{ id: a, sha256: {} }}] }}\nforward_claims: [email, {{ claim: groups, header: X-Groups }}]\n",
        hex_sha256("k")
    ));
    let mut headers = HeaderMap::new();
    for name in [
        "x-consumer-id",
        "x-auth-provider",
        "x-claim-email",
        "x-groups",
        "grpc-metadata-x-consumer-id",
        "grpc-metadata-x-auth-provider",
        "grpc-metadata-x-claim-email",
        "grpc-metadata-x-groups",
    ] {
        headers.append(name, "spoofed".parse().expect("value"));
    }
    headers.append("x-other", "kept".parse().expect("value"));
    auth.strip_identity_headers(&mut headers);
    assert_eq!(headers.len(), 1);
    assert!(headers.contains_key("x-other"));
}

#[test]
fn forwarding_rules() {
    let f = IdentityForwarding::new(
        &serde_yaml_ng::from_str("api_keys: { keys: [] }\nforward_claims: [email, \"https://acme.test/Roles\"]")
            .expect("config"),
    )
    .expect("valid");
    assert!(!f.forward_token, "auth on: the token stays at the gateway");
    let names: Vec<&str> = f.claims.iter().map(|(_, h)| h.as_str()).collect();
    assert_eq!(names, vec!["x-claim-email", "x-claim-https---acme-test-roles"]);
    for reserved in ["x-consumer-id", "authorization", "grpc-status"] {
        // Refused while the config is read (with key and line, see
        // config::tests), and again for a config built in code.
        let yaml = format!("forward_claims: [{{ claim: c, header: {reserved} }}]");
        assert!(serde_yaml_ng::from_str::<AuthConfig>(&yaml).is_err(), "{reserved}");
        let config = AuthConfig {
            forward_claims: vec![ForwardClaim::Mapped(MappedClaim { claim: "c".into(), header: reserved.into() })],
            ..AuthConfig::default()
        };
        let err = IdentityForwarding::new(&config).expect_err(reserved);
        assert!(err.starts_with("[0] (claim \"c\"): a claim cannot be sent as"), "{err}");
    }
}

#[test]
fn challenges_name_the_error_without_secrets() {
    let auth = authenticator(&format!("realm: acme\napi_keys: {{ keys: [{{ id: a, sha256: {} }}] }}", hex_sha256("k")));
    let missing = auth.unauthenticated(Rejection::Missing);
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.headers[0].1, "Bearer realm=\"acme\"");
    let expired = auth.unauthenticated(Rejection::Expired);
    assert_eq!(
        expired.headers[0].1,
        "Bearer realm=\"acme\", error=\"invalid_token\", error_description=\"the token has expired\""
    );
    let scope = auth.forbidden(&Denial::Scope("admin write".into()));
    assert_eq!(scope.status, StatusCode::FORBIDDEN);
    assert_eq!(scope.code, Code::PermissionDenied);
    assert!(scope.headers[0]
        .1
        .to_str()
        .expect("ascii")
        .contains("error=\"insufficient_scope\", scope=\"admin write\""));
}

#[test]
fn duplicate_names_and_bad_realms_are_config_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("s");
    std::fs::write(&secret, "x").expect("write");
    let dup = format!("jwt: [{{ name: api_key, secret: {{ file: {} }} }}]\napi_keys: {{ keys: [] }}", secret.display());
    // The section alone reads; the config file refuses it as a whole (see
    // config::tests), and so does the authenticator.
    let config: AuthConfig = serde_yaml_ng::from_str(&dup).expect("config");
    assert!(matches!(
        Authenticator::new(&config),
        Err(AuthError::DuplicateProvider(name)) if name == "api_key"
    ));
    assert!(serde_yaml_ng::from_str::<AuthConfig>("realm: 'a\"b'\napi_keys: { keys: [] }").is_err());
    let config = AuthConfig { realm: Some("a\"b".into()), ..AuthConfig::default() };
    assert!(matches!(Authenticator::new(&config), Err(AuthError::Realm(_))));
}

#[test]
fn unreadable_secrets_name_the_provider_key_path() {
    let config: AuthConfig =
        serde_yaml_ng::from_str("jwt:\n  - name: corp\n    secret: { env: PROTOGATE_TEST_SURELY_UNSET_VAR }\n")
            .expect("config");
    let err = Authenticator::new(&config).expect_err("unset secret").to_string();
    assert_eq!(err, "auth.jwt[0] (corp): secret: environment variable PROTOGATE_TEST_SURELY_UNSET_VAR is not set");
    let config: AuthConfig =
        serde_yaml_ng::from_str("jwt:\n  - name: a\n    jwks_url: https://x.test/jwks\n  - name: files\n    jwks_file: /nonexistent/jwks.json\n")
            .expect("config");
    let err = Authenticator::new(&config).expect_err("missing file").to_string();
    assert!(err.starts_with("auth.jwt[1] (files): jwks_file: reading /nonexistent/jwks.json: "), "{err}");
}

#[test]
fn repeated_or_comma_joined_headers_are_several() {
    let auth = authenticator(&format!(
        "jwt:\n  - {{ name: h, secret: {{ env: PATH }} }}\n  - {{ name: c, secret: {{ env: PATH }}, from: cookie }}\napi_keys:\n  keys: [{{ id: svc, sha256: {} }}]\n",
        hex_sha256("k1")
    ));
    let uri: Uri = "/x".parse().expect("uri");
    let credential = |pairs: &[(&'static str, &str)]| {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(HeaderName::from_static(name), value.parse().expect("value"));
        }
        match auth.credential(&headers, &uri, None) {
            Ok(None) => "none",
            Ok(Some(Credential::Jwt { .. })) => "jwt",
            Ok(Some(Credential::ApiKey(_))) => "key",
            Ok(Some(Credential::Certificate(_))) => "certificate",
            Err(Several) => "several",
        }
    };
    assert_eq!(credential(&[("authorization", "Bearer a.b.c")]), "jwt");
    assert_eq!(credential(&[("authorization", "Basic dXNlcg==")]), "none");
    assert_eq!(credential(&[("authorization", "Bearer a.b.c"), ("authorization", "Bearer x")]), "several");
    assert_eq!(credential(&[("authorization", "Bearer a.b.c, Bearer d.e.f")]), "several");
    assert_eq!(credential(&[("x-api-key", "k1")]), "key");
    assert_eq!(credential(&[("x-api-key", "k1"), ("x-api-key", "wrong")]), "several");
    assert_eq!(credential(&[("x-api-key", "k1, wrong")]), "several");
    assert_eq!(credential(&[("x-api-key", "k1"), ("authorization", "Bearer a.b.c")]), "several");
    assert_eq!(credential(&[("cookie", "access_token=a.b.c")]), "jwt");
    assert_eq!(credential(&[("cookie", "access_token=a.b.c; access_token=d.e.f")]), "several");
    assert_eq!(credential(&[("cookie", "access_token=a.b.c"), ("authorization", "Bearer a.b.c")]), "several");
}

#[test]
fn query_params_are_decoded() {
    fn one(query: &'static str, name: &str) -> Option<String> {
        single_query_param(query, name).expect("one").map(|v| v.into_owned())
    }
    assert_eq!(one("a=1&k=x%2By+z", "k").as_deref(), Some("x+y z"));
    assert_eq!(one("a=1&k", "k").as_deref(), Some(""));
    assert_eq!(one("ka=1", "k"), None);
    assert_eq!(single_query_param("k=1&k=1", "k"), Err(Several));
}

#[test]
fn a_client_certificate_is_a_credential_only_with_auth_mtls_and_never_a_second_one() {
    let cert = Arc::new(ClientCert {
        subject: "CN=alice, O=Acme".into(),
        common_name: Some("alice".into()),
        alt_names: vec!["alice.acme.test".into()],
    });
    let uri: Uri = "/x".parse().expect("uri");
    let key = |auth: &Authenticator, with_key: bool| {
        let mut headers = HeaderMap::new();
        if with_key {
            headers.insert("x-api-key", "k1".parse().expect("value"));
        }
        match auth.credential(&headers, &uri, Some(&cert)) {
            Ok(None) => "none",
            Ok(Some(Credential::Certificate(_))) => "certificate",
            Ok(Some(_)) => "other",
            Err(Several) => "several",
        }
    };
    let keys = format!("api_keys:\n  keys: [{{ id: svc, sha256: {} }}]\n", hex_sha256("k1"));
    let without = authenticator(&keys);
    assert_eq!(key(&without, false), "none");
    assert_eq!(key(&without, true), "other");
    let with = authenticator(&format!("mtls: {{ name: corp-ca }}\n{keys}"));
    assert_eq!(key(&with, false), "certificate");
    assert_eq!(key(&with, true), "several");

    let identity = certificate_identity(&cert, "corp-ca".into());
    assert_eq!((identity.consumer.as_str(), identity.provider.as_str()), ("alice", "corp-ca"));
    assert_eq!(identity.claims["subject"], "CN=alice, O=Acme");
    assert_eq!(identity.claims["alt_names"][0], "alice.acme.test");
    let anonymous = ClientCert { subject: "O=Acme, OU=Robots".into(), common_name: None, alt_names: Vec::new() };
    assert_eq!(certificate_identity(&anonymous, "corp-ca".into()).consumer, "O=Acme, OU=Robots");
}
