//! JWT fixtures: the test-only key pairs and JWKs of `tests/fixtures/auth/`
//! (see the README there) and the helpers that sign tokens with them.
//! Depends on nothing else of the harness, so the JWT unit tests in
//! `src/auth/jwt/tests.rs` include this same file.

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The folder of the key fixtures, with a trailing slash.
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/auth/");

/// The bytes of the fixture file `name` (`rsa1.pem`, `rsa1.jwk.json`, …).
pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}{name}")).expect("fixture")
}

/// A JWKS document holding the public JWKs of `kids` (`rsa1`, `ec256`, …).
pub fn jwks(kids: &[&str]) -> String {
    let keys: Vec<String> =
        kids.iter().map(|k| String::from_utf8(fixture(&format!("{k}.jwk.json"))).expect("utf8")).collect();
    format!("{{\"keys\":[{}]}}", keys.join(","))
}

/// The private RSA key of `kid` (`rsa1`, `rsa2`).
pub fn rsa_key(kid: &str) -> EncodingKey {
    private_key(kid)
}

/// The private key of `kid`, of whichever kind its name says (`rsa…`,
/// `ec…`, else Ed25519).
pub fn private_key(kid: &str) -> EncodingKey {
    let pem = fixture(&format!("{kid}.pem"));
    match kid {
        k if k.starts_with("rsa") => EncodingKey::from_rsa_pem(&pem),
        k if k.starts_with("ec") => EncodingKey::from_ec_pem(&pem),
        _ => EncodingKey::from_ed_pem(&pem),
    }
    .expect("key")
}

/// Seconds since the epoch, as `exp` and `nbf` count them.
pub fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

/// `claims` signed with `key`, the header naming `alg` and `kid`.
pub fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, key).expect("signs")
}

/// `claims` signed RS256 with the key `rsa1`.
pub fn rs256(claims: &Value) -> String {
    sign(Algorithm::RS256, Some("rsa1"), &rsa_key("rsa1"), claims)
}

/// Unpadded base64url, as JWT segments are written.
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Lower-case hex SHA-256 of `text`, as the `api_keys` config stores keys.
pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}
