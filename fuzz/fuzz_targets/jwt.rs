//! JWT verification by a provider with an HS256 secret: header and payload
//! decoding, the algorithm and key checks, the signature, and then the
//! claims (`exp`, `nbf`, `iss`, `aud`, `sub`, `scope`/`scp`).
//!
//! Input: `[mode] …`.
//! - raw: the rest is a token string; it must never verify (nobody but the
//!   target knows the secret), and `peek_issuer` must not panic;
//! - signed: the rest is `header JSON \0 payload JSON`, signed with the
//!   right secret, so verification gets past the signature to the claims;
//! - claims: the rest picks each claim from a set of right, wrong, missing
//!   and ill-typed values (times relative to now); the target knows which
//!   tokens must pass and which must fail, and why.
//!
//! Whatever passes must satisfy what the provider promises about it.

#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use protogate::auth::jwt::{peek_issuer, JwtProvider};
use protogate::auth::Rejection;
use protogate::config::auth::JwtProviderConfig;
use protogate::http::Identity;
use serde_json::{json, Map, Value};

const SECRET_VAR: &str = "PROTOGATE_FUZZ_JWT_SECRET";
const SECRET: &[u8] = b"the fuzzer's own HS256 secret";
const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "api";
/// Clock skew the strict provider allows (`leeway`).
const LEEWAY: i64 = 30;
/// Claims this close to a boundary are not judged: the clock moves while
/// the target runs.
const MARGIN: i64 = 5;

struct Providers {
    /// Issuer and audience required, 30 s leeway.
    strict: JwtProvider,
    /// No issuer or audience, default leeway.
    open: JwtProvider,
    runtime: tokio::runtime::Runtime,
}

fn providers() -> &'static Providers {
    static PROVIDERS: OnceLock<Providers> = OnceLock::new();
    PROVIDERS.get_or_init(|| {
        std::env::set_var(SECRET_VAR, std::str::from_utf8(SECRET).expect("ASCII secret"));
        let provider = |yaml: &str| {
            let config: JwtProviderConfig = serde_yaml_ng::from_str(yaml).expect("provider config");
            JwtProvider::new(&config).expect("provider")
        };
        Providers {
            strict: provider(&format!(
                "name: strict\nissuer: {ISSUER}\naudiences: [{AUDIENCE}]\nleeway: {LEEWAY}s\nsecret: {{ env: {SECRET_VAR} }}\n"
            )),
            open: provider(&format!("name: open\nalgorithms: [HS256]\nsecret: {{ env: {SECRET_VAR} }}\n")),
            runtime: tokio::runtime::Builder::new_current_thread().build().expect("runtime"),
        }
    })
}

fn verify(provider: &JwtProvider, token: &str) -> Result<Identity, Rejection> {
    providers().runtime.block_on(provider.verify(token))
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `header.payload.signature` with the right HS256 signature.
fn sign(header: &[u8], payload: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let key = EncodingKey::from_secret(SECRET);
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::HS256).expect("HS256 signs");
    format!("{input}.{signature}")
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else { return };
    let p = providers();
    match mode % 3 {
        0 => {
            let token = String::from_utf8_lossy(rest);
            let _ = peek_issuer(&token);
            for provider in [&p.strict, &p.open] {
                if let Ok(identity) = verify(provider, &token) {
                    panic!("an unsigned token verified: {token:?} as {identity:?}");
                }
            }
        }
        1 => {
            let mut parts = rest.splitn(2, |b| *b == 0);
            let header = parts.next().unwrap_or_default();
            let payload = parts.next().unwrap_or_default();
            let token = sign(header, payload);
            let _ = peek_issuer(&token);
            for (provider, strict) in [(&p.strict, true), (&p.open, false)] {
                if let Ok(identity) = verify(provider, &token) {
                    check_identity(&identity, &token, header, payload, strict);
                }
            }
        }
        _ => claims_case(rest),
    }
});

/// What every verified token has: an HS256 header, an object payload with
/// a non-empty `sub` (the consumer), a live `exp` and `nbf`, and for the
/// strict provider the right `iss` and `aud`.
fn check_identity(identity: &Identity, token: &str, header: &[u8], payload: &[u8], strict: bool) {
    let header: Value = serde_json::from_slice(header).expect("a verified token has a JSON header");
    assert_eq!(header["alg"], json!("HS256"), "verified with the alg {}", header["alg"]);
    let claims: Map<String, Value> = serde_json::from_slice(payload).expect("a verified token has an object payload");
    assert_eq!(identity.claims, claims);
    assert_eq!(claims.get("sub").and_then(Value::as_str), Some(identity.consumer.as_str()));
    assert!(!identity.consumer.is_empty());
    let leeway = if strict { LEEWAY } else { 60 };
    let exp = claims.get("exp").and_then(Value::as_f64).expect("a verified token has a numeric exp");
    assert!(exp >= (now() - leeway - MARGIN) as f64, "expired token verified: exp {exp}");
    if let Some(nbf) = claims.get("nbf") {
        let nbf = nbf.as_f64().expect("a verified token's nbf is a number");
        assert!(nbf <= (now() + leeway + MARGIN) as f64, "immature token verified: nbf {nbf}");
    }
    if strict {
        assert_eq!(peek_issuer(token).as_deref(), Some(ISSUER), "the issuer a verified token names");
        assert_eq!(claims.get("iss"), Some(&json!(ISSUER)));
        let aud = claims.get("aud").expect("a verified token has aud");
        let audiences: Vec<&str> = match aud {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            other => panic!("verified with aud {other}"),
        };
        assert!(audiences.contains(&AUDIENCE), "verified with aud {aud}");
    }
    assert_eq!(identity.scopes, scopes(&claims));
}

fn scopes(claims: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(Value::String(text)) = claims.get("scope") {
        out.extend(text.split_whitespace().map(str::to_owned));
    } else if let Some(Value::Array(items)) = claims.get("scope") {
        out.extend(items.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    match claims.get("scp") {
        Some(Value::String(text)) => out.extend(text.split_whitespace().map(str::to_owned)),
        Some(Value::Array(items)) => out.extend(items.iter().filter_map(Value::as_str).map(str::to_owned)),
        _ => {}
    }
    out
}

/// One claim as the fuzzer chose it.
enum Claim {
    Missing,
    Right,
    /// Present but wrong (value or type), or too close to a boundary to
    /// judge: `None` means "not judged".
    Wrong(Option<Rejection>),
    Unjudged,
}

fn time_claim(pick: u8, delta: i8, future_is_bad: bool) -> (Option<Value>, Claim) {
    let offset = i64::from(delta) * 3;
    let at = now() + offset;
    let leeway = LEEWAY;
    match pick % 6 {
        0 => (None, Claim::Missing),
        1 | 2 => {
            // Where the leeway ends: inside it is fine, past it is not.
            let bad = if future_is_bad { offset > leeway + MARGIN } else { offset < -leeway - MARGIN };
            let good = if future_is_bad { offset < leeway - MARGIN } else { offset > -leeway + MARGIN };
            let verdict = if bad {
                Claim::Wrong(Some(if future_is_bad { Rejection::NotYetValid } else { Rejection::Expired }))
            } else if good {
                Claim::Right
            } else {
                Claim::Unjudged
            };
            (Some(json!(at)), verdict)
        }
        3 => (Some(json!(at.to_string())), Claim::Wrong(None)),
        4 => (Some(json!(at as f64 + 0.5)), Claim::Unjudged),
        // A null `nbf` may fairly count as none; a null `exp` may not.
        _ => (Some(json!(null)), if future_is_bad { Claim::Unjudged } else { Claim::Wrong(None) }),
    }
}

fn claims_case(rest: &[u8]) {
    let byte = |i: usize| rest.get(i).copied().unwrap_or(0);
    let text = rest.get(10..).map(String::from_utf8_lossy).unwrap_or_default().into_owned();
    let mut claims = Map::new();
    let mut verdicts = Vec::new();
    let mut put = |name: &str, value: Option<Value>, claim: Claim| {
        if let Some(value) = value {
            claims.insert(name.to_owned(), value);
        }
        verdicts.push((name.to_owned(), claim));
    };

    let (exp, exp_claim) = time_claim(byte(0), byte(1) as i8, false);
    // A missing exp is a missing required claim.
    let exp_claim = match exp_claim {
        Claim::Missing => Claim::Wrong(Some(Rejection::MissingClaim)),
        other => other,
    };
    put("exp", exp, exp_claim);
    let (nbf, nbf_claim) = time_claim(byte(2), byte(3) as i8, true);
    let nbf_claim = match nbf_claim {
        Claim::Missing => Claim::Right,
        other => other,
    };
    put("nbf", nbf, nbf_claim);
    let (iss, iss_claim) = match byte(4) % 4 {
        0 => (None, Claim::Wrong(Some(Rejection::MissingClaim))),
        1 => (Some(json!(ISSUER)), Claim::Right),
        2 => (Some(json!(format!("{ISSUER}/"))), Claim::Wrong(Some(Rejection::WrongIssuer))),
        _ => (Some(json!(7)), Claim::Wrong(None)),
    };
    put("iss", iss, iss_claim);
    let (aud, aud_claim) = match byte(5) % 6 {
        0 => (None, Claim::Wrong(Some(Rejection::MissingClaim))),
        1 => (Some(json!(AUDIENCE)), Claim::Right),
        2 => (Some(json!(["other", AUDIENCE])), Claim::Right),
        3 => (Some(json!("other")), Claim::Wrong(Some(Rejection::WrongAudience))),
        4 => (Some(json!([])), Claim::Wrong(None)),
        _ => (Some(json!({"aud": AUDIENCE})), Claim::Wrong(None)),
    };
    put("aud", aud, aud_claim);
    let (sub, sub_claim) = match byte(6) % 5 {
        0 => (None, Claim::Wrong(Some(Rejection::MissingClaim))),
        1 => (Some(json!("")), Claim::Wrong(Some(Rejection::MissingClaim))),
        2 => (Some(json!(42)), Claim::Wrong(None)),
        3 if !text.is_empty() => (Some(json!(text)), Claim::Right),
        _ => (Some(json!("alice")), Claim::Right),
    };
    put("sub", sub, sub_claim);
    match byte(7) % 4 {
        0 => {}
        1 => put("scope", Some(json!(text)), Claim::Right),
        2 => put("scp", Some(json!(text.split(' ').collect::<Vec<_>>())), Claim::Right),
        _ => put("scp", Some(json!(text)), Claim::Right),
    }
    let header = match byte(8) % 4 {
        0 => json!({"alg": "HS256", "typ": "JWT"}),
        1 => json!({"alg": "HS256", "kid": text}),
        2 => json!({"alg": "HS256", "typ": text}),
        _ => json!({"alg": "HS256", "crit": [text]}),
    };
    let header_unjudged = byte(8) % 4 == 3;

    let payload = serde_json::to_vec(&claims).expect("claims serialize");
    let header = serde_json::to_vec(&header).expect("header serializes");
    let token = sign(&header, &payload);
    let result = verify(&providers().strict, &token);
    if let Ok(identity) = &result {
        check_identity(identity, &token, &header, &payload, true);
    }
    if header_unjudged || verdicts.iter().any(|(_, c)| matches!(c, Claim::Unjudged)) {
        return;
    }
    let wrong: Vec<&(String, Claim)> = verdicts.iter().filter(|(_, c)| matches!(c, Claim::Wrong(_))).collect();
    if wrong.is_empty() {
        assert!(result.is_ok(), "a token with every claim right was refused: {result:?}\n{claims:?}");
    } else {
        let Err(rejection) = result else {
            panic!("a token with a wrong {:?} verified\n{claims:?}", wrong.iter().map(|(n, _)| n).collect::<Vec<_>>());
        };
        // With a single wrong claim the reason is known.
        if let [(_, Claim::Wrong(Some(expected)))] = wrong.as_slice() {
            assert_eq!(rejection, *expected, "{claims:?}");
        }
    }
}
