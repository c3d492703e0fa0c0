//! Every attack of issue 4 against one provider, with tokens signed here.

use std::path::Path;

use http::{HeaderMap, Uri};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

use super::*;
use crate::config::auth::JwtProviderConfig;

// The fixtures and signing helpers are the integration tests' own, defined once.
#[allow(dead_code)]
#[path = "../../../tests/common/jwt.rs"]
mod fixtures;
use fixtures::{b64 as base64_url, fixture, jwks, now, private_key, sign};

fn claims() -> Value {
    json!({
        "sub": "alice",
        "iss": "https://issuer.test",
        "aud": "api",
        "exp": now() + 600,
        "scope": "read write",
        "scp": ["admin"],
    })
}

fn signed(alg: Algorithm, kid: &str, claims: &Value) -> String {
    sign(alg, Some(kid), &private_key(kid), claims)
}

struct Fixture {
    _dir: tempfile::TempDir,
    provider: JwtProvider,
}

/// A provider over a JWKS file with `kids`, issuer and audience set.
fn provider(kids: &[&str], extra: &str) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(kids)).expect("write");
    let yaml = format!(
        "name: corp\nissuer: https://issuer.test\naudiences: [api]\njwks_file: {}\njwks_cooldown: 0\n{extra}",
        path.display()
    );
    let config: JwtProviderConfig = serde_yaml_ng::from_str(&yaml).expect("config");
    Fixture { provider: JwtProvider::new(&config).expect("provider"), _dir: dir }
}

fn verify(p: &JwtProvider, token: &str) -> Result<Identity, Rejection> {
    tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(p.verify(token))
}

#[test]
fn every_supported_algorithm_verifies() {
    let f = provider(&["rsa1", "ec256", "ec384", "ed25519"], "");
    for (alg, kid) in [
        (Algorithm::RS256, "rsa1"),
        (Algorithm::RS384, "rsa1"),
        (Algorithm::RS512, "rsa1"),
        (Algorithm::PS256, "rsa1"),
        (Algorithm::PS384, "rsa1"),
        (Algorithm::PS512, "rsa1"),
        (Algorithm::ES256, "ec256"),
        (Algorithm::ES384, "ec384"),
        (Algorithm::EdDSA, "ed25519"),
    ] {
        let identity = verify(&f.provider, &signed(alg, kid, &claims())).unwrap_or_else(|e| panic!("{alg:?}: {e:?}"));
        assert_eq!(identity.consumer, "alice");
        assert_eq!(identity.provider, "corp");
        assert_eq!(identity.scopes, vec!["read", "write", "admin"]);
        assert_eq!(identity.claims.get("aud"), Some(&json!("api")));
    }
}

#[test]
fn hmac_secret_provider() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("secret");
    std::fs::write(&path, "s3cret-s3cret-s3cret-s3cret-s3cret\n").expect("write");
    let yaml = format!("name: local\nsecret: {{ file: {} }}\n", path.display());
    let config: JwtProviderConfig = serde_yaml_ng::from_str(&yaml).expect("config");
    let p = JwtProvider::new(&config).expect("provider");
    let key = EncodingKey::from_secret(b"s3cret-s3cret-s3cret-s3cret-s3cret");
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        assert!(verify(&p, &sign(alg, None, &key, &claims())).is_ok(), "{alg:?}");
    }
    let wrong = EncodingKey::from_secret(b"another secret");
    assert_eq!(verify(&p, &sign(Algorithm::HS256, None, &wrong, &claims())).err(), Some(Rejection::BadSignature));
    // An RS256 token never reaches an HMAC key.
    assert_eq!(verify(&p, &signed(Algorithm::RS256, "rsa1", &claims())).err(), Some(Rejection::AlgorithmNotAllowed));
    // A secret cannot be configured for asymmetric algorithms.
    let bad = format!("name: local\nsecret: {{ file: {} }}\nalgorithms: [RS256]\n", path.display());
    let config: JwtProviderConfig = serde_yaml_ng::from_str(&bad).expect("config");
    assert!(JwtProvider::new(&config).is_err());
}

#[test]
fn time_claims_with_leeway() {
    let f = provider(&["rsa1"], "leeway: 60\n");
    let with = |patch: Value| {
        let mut c = claims();
        for (k, v) in patch.as_object().expect("object") {
            c[k] = v.clone();
        }
        verify(&f.provider, &signed(Algorithm::RS256, "rsa1", &c))
    };
    assert_eq!(with(json!({"exp": now() - 3600})).err(), Some(Rejection::Expired));
    assert!(with(json!({"exp": now() - 20})).is_ok(), "inside the leeway");
    assert_eq!(with(json!({"nbf": now() + 3600})).err(), Some(Rejection::NotYetValid));
    assert!(with(json!({"nbf": now() + 20})).is_ok(), "inside the leeway");
    assert_eq!(with(json!({"exp": "soon"})).err(), Some(Rejection::MissingClaim));
    let mut no_exp = claims();
    no_exp.as_object_mut().expect("object").remove("exp");
    assert_eq!(verify(&f.provider, &signed(Algorithm::RS256, "rsa1", &no_exp)).err(), Some(Rejection::MissingClaim));
}

#[test]
fn issuer_audience_and_subject() {
    let f = provider(&["rsa1"], "");
    let with = |key: &str, value: Value| {
        let mut c = claims();
        if value.is_null() {
            c.as_object_mut().expect("object").remove(key);
        } else {
            c[key] = value;
        }
        verify(&f.provider, &signed(Algorithm::RS256, "rsa1", &c))
    };
    assert_eq!(with("iss", json!("https://evil.test")).err(), Some(Rejection::WrongIssuer));
    assert_eq!(with("iss", Value::Null).err(), Some(Rejection::MissingClaim));
    assert_eq!(with("aud", json!("other")).err(), Some(Rejection::WrongAudience));
    assert_eq!(with("aud", json!(["other", "more"])).err(), Some(Rejection::WrongAudience));
    assert!(with("aud", json!(["other", "api"])).is_ok());
    assert_eq!(with("aud", Value::Null).err(), Some(Rejection::MissingClaim));
    assert_eq!(with("sub", Value::Null).err(), Some(Rejection::MissingClaim));
    assert_eq!(with("sub", json!(42)).err(), Some(Rejection::MissingClaim));
}

#[test]
fn tampered_tokens_fail_the_signature() {
    let f = provider(&["rsa1", "ec256"], "");
    for (alg, kid) in [(Algorithm::RS256, "rsa1"), (Algorithm::ES256, "ec256")] {
        let token = signed(alg, kid, &claims());
        let parts: Vec<&str> = token.split('.').collect();
        // Another payload under the original signature.
        let mut forged = claims();
        forged["sub"] = json!("mallory");
        let forged_payload = base64_url(&serde_json::to_vec(&forged).expect("json"));
        let swapped = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_eq!(verify(&f.provider, &swapped).err(), Some(Rejection::BadSignature));
        // A flipped character in the signature.
        let mut sig = parts[2].as_bytes().to_vec();
        sig[5] = if sig[5] == b'A' { b'B' } else { b'A' };
        let flipped = format!("{}.{}.{}", parts[0], parts[1], String::from_utf8(sig).expect("ascii"));
        assert_eq!(verify(&f.provider, &flipped).err(), Some(Rejection::BadSignature));
    }
}

#[test]
fn alg_none_is_never_accepted() {
    let f = provider(&["rsa1"], "");
    let payload = base64_url(&serde_json::to_vec(&claims()).expect("json"));
    for header in [
        json!({"alg": "none", "typ": "JWT"}),
        json!({"alg": "none", "kid": "rsa1"}),
        json!({"alg": "None", "kid": "rsa1"}),
        json!({"alg": "NONE"}),
        json!({"kid": "rsa1"}),
    ] {
        let header = base64_url(&serde_json::to_vec(&header).expect("json"));
        for token in [format!("{header}.{payload}."), format!("{header}.{payload}")] {
            assert_eq!(verify(&f.provider, &token).err(), Some(Rejection::Malformed), "{token}");
        }
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_rejected() {
    let public_pem = fixture("rsa1.pub.pem");
    let jwk: Value = serde_json::from_slice(&fixture("rsa1.jwk.json")).expect("jwk");
    // Every form an attacker might HMAC with: the PEM, and the raw modulus.
    let secrets = vec![public_pem.clone(), jwk["n"].as_str().expect("n").as_bytes().to_vec()];
    // Default algorithms (asymmetric only)…
    let f = provider(&["rsa1"], "");
    // …and a misconfigured provider that also lists HS256: the RSA key
    // still refuses to act as an HMAC secret.
    let lax = provider(&["rsa1"], "algorithms: [RS256, HS256]\n");
    for secret in &secrets {
        let key = EncodingKey::from_secret(secret);
        for kid in [Some("rsa1"), None] {
            let token = sign(Algorithm::HS256, kid, &key, &claims());
            assert_eq!(verify(&f.provider, &token).err(), Some(Rejection::AlgorithmNotAllowed));
            assert_eq!(verify(&lax.provider, &token).err(), Some(Rejection::AlgorithmNotAllowed));
        }
    }
}

#[test]
fn key_type_binds_the_algorithm() {
    let f = provider(&["rsa1", "ec256"], "algorithms: [RS256, ES256]\n");
    // An ES256 header pointing at the RSA key.
    let token = sign(Algorithm::ES256, Some("rsa1"), &private_key("ec256"), &claims());
    assert_eq!(verify(&f.provider, &token).err(), Some(Rejection::AlgorithmNotAllowed));
    // An algorithm the provider does not list.
    let token = signed(Algorithm::PS256, "rsa1", &claims());
    assert_eq!(verify(&f.provider, &token).err(), Some(Rejection::AlgorithmNotAllowed));
    // A JWKS URL provider refuses HMAC in its algorithm list.
    let config: JwtProviderConfig =
        serde_yaml_ng::from_str("name: x\njwks_url: https://issuer.test/jwks\nalgorithms: [HS256]\n").expect("config");
    assert!(JwtProvider::new(&config).is_err());
}

#[test]
fn unknown_kid_and_missing_kid() {
    let f = provider(&["rsa1", "rsa2"], "");
    let token = sign(Algorithm::RS256, Some("rsa9"), &private_key("rsa1"), &claims());
    assert_eq!(verify(&f.provider, &token).err(), Some(Rejection::UnknownKey));
    let token = sign(Algorithm::RS256, None, &private_key("rsa1"), &claims());
    assert_eq!(verify(&f.provider, &token).err(), Some(Rejection::NoKid));
    // With a single key, a token without kid uses it.
    let single = provider(&["rsa1"], "");
    assert!(verify(&single.provider, &token).is_ok());
    // Signed by rsa2 but claiming rsa1.
    let token = sign(Algorithm::RS256, Some("rsa1"), &private_key("rsa2"), &claims());
    assert_eq!(verify(&f.provider, &token).err(), Some(Rejection::BadSignature));
}

#[test]
fn malformed_tokens() {
    let f = provider(&["rsa1"], "");
    for token in ["", "abc", "a.b.c", "a.b", "....", "eyJhbGciOiJSUzI1NiJ9.e30", "eyJhbGciOiJSUzI1NiJ9.!!!.sig"] {
        let rejection = verify(&f.provider, token).err();
        assert!(
            matches!(
                rejection,
                Some(Rejection::Malformed | Rejection::NoKid | Rejection::UnknownKey | Rejection::BadSignature)
            ),
            "{token:?}: {rejection:?}"
        );
        assert!(rejection.is_some());
    }
    assert_eq!(verify(&f.provider, "abc").err(), Some(Rejection::Malformed));
}

#[test]
fn jwks_file_rotation_is_picked_up_on_unknown_kid() {
    let f = provider(&["rsa1"], "");
    let token = signed(Algorithm::RS256, "rsa2", &claims());
    assert_eq!(verify(&f.provider, &token).err(), Some(Rejection::UnknownKey));
    std::fs::write(f._dir.path().join("jwks.json"), jwks(&["rsa1", "rsa2"])).expect("write");
    assert!(verify(&f.provider, &token).is_ok());
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(http::HeaderName::from_bytes(k.as_bytes()).expect("name"), v.parse().expect("value"));
    }
    map
}

#[test]
fn token_places() {
    let uri: Uri = "/x?a=1&access_token=q.q.q&tok=t%2Et".parse().expect("uri");
    let header = provider(&["rsa1"], "");
    let p = &header.provider;
    assert_eq!(p.token(&headers(&[("authorization", "Bearer h.h.h")]), &uri).expect("one").as_deref(), Some("h.h.h"));
    assert_eq!(p.token(&headers(&[("authorization", "bearer  h.h.h")]), &uri).expect("one").as_deref(), Some("h.h.h"));
    assert_eq!(p.token(&headers(&[("authorization", "Basic dXNlcg==")]), &uri), Ok(None));
    assert_eq!(p.token(&headers(&[("authorization", "Bearer ")]), &uri), Ok(None));
    // The query is not a place this provider reads.
    assert_eq!(p.token(&HeaderMap::new(), &uri), Ok(None));

    let query = provider(&["rsa1"], "from: query\n");
    assert_eq!(query.provider.token(&HeaderMap::new(), &uri).expect("one").as_deref(), Some("q.q.q"));
    let named = provider(&["rsa1"], "from: query\nparam: tok\n");
    assert_eq!(named.provider.token(&HeaderMap::new(), &uri).expect("one").as_deref(), Some("t.t"));
    assert_eq!(
        query.provider.token(&headers(&[("authorization", "Bearer h.h.h")]), &"/x".parse().expect("uri")),
        Ok(None)
    );

    let cookie = provider(&["rsa1"], "from: cookie\nparam: session\n");
    let h = headers(&[("cookie", "a=1; session=c.c.c; b=2")]);
    assert_eq!(cookie.provider.token(&h, &uri).expect("one").as_deref(), Some("c.c.c"));
    assert_eq!(cookie.provider.token(&headers(&[("cookie", "sessionx=1")]), &uri), Ok(None));

    let custom = provider(&["rsa1"], "param: X-Token\n");
    assert_eq!(custom.provider.token(&headers(&[("x-token", "k.k.k")]), &uri).expect("one").as_deref(), Some("k.k.k"));
    assert!(Path::new(fixtures::FIXTURES).exists());
}
