//! JSON Web Key Sets: parsing into verification keys, each bound to the
//! algorithms its key type allows, and a cache that refreshes from a URL or
//! file on an interval and when a token names a `kid` it does not know.
//!
//! Binding every key to its algorithms here is what defeats algorithm
//! confusion: an RSA key never verifies an HMAC signature, whatever the
//! token's header says. A refresh that fails keeps the keys already held;
//! refreshes caused by unknown `kid`s are spaced by a cooldown so that a
//! flood of made-up `kid`s cannot turn the gateway against the issuer.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::time::Instant;

const HMAC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
const RSA: &[Algorithm] =
    &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::PS384, Algorithm::PS512];

/// A JWKS document larger than this is refused: real sets are a few KiB.
const MAX_JWKS_BYTES: usize = 1 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// One key that may verify signatures, and with which algorithms.
pub struct VerifyKey {
    pub kid: Option<String>,
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
}

impl VerifyKey {
    /// An HMAC secret: HS256/384/512 only.
    pub fn hmac(secret: &[u8]) -> Self {
        Self { kid: None, algorithms: HMAC.to_vec(), key: DecodingKey::from_secret(secret) }
    }

    pub fn allows(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(&alg)
    }
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material: an HMAC key is a secret.
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// The usable keys of one JWKS.
#[derive(Debug, Default)]
pub struct KeySet {
    pub keys: Vec<Arc<VerifyKey>>,
}

/// What a key lookup for a token found.
pub enum Lookup {
    Found(Arc<VerifyKey>),
    /// No key with this `kid`: a refresh may bring it.
    UnknownKid,
    /// No `kid` in the token and several keys for its algorithm: not
    /// guessed between.
    Ambiguous,
    /// No `kid` in the token and no key for its algorithm.
    NoneFits,
}

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("JWKS is not valid JSON with a \"keys\" array: {0}")]
    Json(serde_json::Error),
    #[error("JWKS holds no usable signature key")]
    NoKeys,
    #[error("reading {path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error("fetching {url}: {message}")]
    Fetch { url: String, message: String },
}

impl KeySet {
    /// Parses a JWKS document. Keys that cannot verify signatures
    /// (encryption keys, unknown types or curves, malformed parameters) are
    /// skipped; HMAC (`oct`) keys only count when `allow_symmetric` is set,
    /// since a published key set has no business holding secrets.
    pub fn parse(json: &[u8], allow_symmetric: bool) -> Result<Self, JwksError> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document = serde_json::from_slice(json).map_err(JwksError::Json)?;
        let mut keys = Vec::with_capacity(document.keys.len());
        for raw in document.keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(raw) else {
                tracing::debug!("skipping a JWK that does not parse");
                continue;
            };
            if let Some(key) = verify_key(&jwk, allow_symmetric) {
                keys.push(Arc::new(key));
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoKeys);
        }
        Ok(Self { keys })
    }

    pub fn find(&self, kid: Option<&str>, alg: Algorithm) -> Lookup {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .map_or(Lookup::UnknownKid, |k| Lookup::Found(k.clone())),
            None => {
                let mut fitting = self.keys.iter().filter(|k| k.allows(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(key), None) => Lookup::Found(key.clone()),
                    (Some(_), Some(_)) => Lookup::Ambiguous,
                    (None, _) => Lookup::NoneFits,
                }
            }
        }
    }
}

fn verify_key(jwk: &Jwk, allow_symmetric: bool) -> Option<VerifyKey> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let family: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA.to_vec(),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
            _ => return None,
        },
        AlgorithmParameters::OctetKey(_) if allow_symmetric => HMAC.to_vec(),
        AlgorithmParameters::OctetKey(_) => return None,
    };
    // A key that names its algorithm accepts that one alone.
    let algorithms = match jwk.common.key_algorithm {
        None => family,
        Some(named) => match key_algorithm(named) {
            Some(alg) if family.contains(&alg) => vec![alg],
            _ => return None,
        },
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerifyKey { kid: jwk.common.key_id.clone(), algorithms, key })
}

fn key_algorithm(named: KeyAlgorithm) -> Option<Algorithm> {
    Some(match named {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Where a key set comes from.
pub enum JwksSource {
    Url { url: String, client: reqwest::Client },
    File(PathBuf),
}

impl JwksSource {
    pub fn url(url: String) -> Result<Self, JwksError> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| JwksError::Fetch { url: url.clone(), message: e.to_string() })?;
        Ok(Self::Url { url, client })
    }

    fn describe(&self) -> String {
        match self {
            Self::Url { url, .. } => url.clone(),
            Self::File(path) => path.display().to_string(),
        }
    }

    async fn read(&self) -> Result<Vec<u8>, JwksError> {
        match self {
            Self::File(path) => {
                tokio::fs::read(path).await.map_err(|source| JwksError::File { path: path.clone(), source })
            }
            Self::Url { url, client } => {
                let fail = |message: String| JwksError::Fetch { url: url.clone(), message };
                let mut response = client
                    .get(url)
                    .header(http::header::ACCEPT, "application/json")
                    .send()
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                if !response.status().is_success() {
                    return Err(fail(format!("HTTP status {}", response.status())));
                }
                let mut body = Vec::new();
                while let Some(chunk) = response.chunk().await.map_err(|e| fail(e.to_string()))? {
                    if body.len() + chunk.len() > MAX_JWKS_BYTES {
                        return Err(fail(format!("larger than {MAX_JWKS_BYTES} bytes")));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(body)
            }
        }
    }
}

/// The current keys of one provider, swapped whole on refresh.
pub struct JwksCache {
    provider: String,
    source: JwksSource,
    allow_symmetric: bool,
    keys: ArcSwap<KeySet>,
    cooldown: Duration,
    /// When the last fetch caused by an unknown `kid` started.
    last_on_demand: Mutex<Option<Instant>>,
    /// One fetch at a time: concurrent requests with the same new `kid`
    /// wait for the one fetch instead of each starting their own.
    fetching: tokio::sync::Mutex<()>,
    fetches: AtomicU64,
}

impl JwksCache {
    pub fn new(provider: String, source: JwksSource, allow_symmetric: bool, cooldown: Duration) -> Self {
        Self {
            provider,
            source,
            allow_symmetric,
            keys: ArcSwap::from_pointee(KeySet::default()),
            cooldown,
            last_on_demand: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            fetches: AtomicU64::new(0),
        }
    }

    /// Loads a file source synchronously, so that a broken file is a load
    /// error rather than a gateway answering 401 to everyone.
    pub fn load_file_now(&self) -> Result<(), JwksError> {
        if let JwksSource::File(path) = &self.source {
            let bytes = std::fs::read(path).map_err(|source| JwksError::File { path: path.clone(), source })?;
            self.keys.store(Arc::new(KeySet::parse(&bytes, self.allow_symmetric)?));
        }
        Ok(())
    }

    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// How many fetches were started (for tests and, later, metrics).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Fetches and swaps in the key set; on failure the old keys stay.
    pub async fn refresh(&self) -> Result<(), JwksError> {
        let _one_at_a_time = self.fetching.lock().await;
        self.fetch_and_store().await
    }

    async fn fetch_and_store(&self) -> Result<(), JwksError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let result = match self.source.read().await {
            Ok(bytes) => KeySet::parse(&bytes, self.allow_symmetric),
            Err(err) => Err(err),
        };
        match result {
            Ok(set) => {
                tracing::debug!(provider = %self.provider, keys = set.keys.len(), "JWKS refreshed");
                self.keys.store(Arc::new(set));
                Ok(())
            }
            Err(err) => {
                tracing::warn!(
                    provider = %self.provider,
                    source = %self.source.describe(),
                    error = %err,
                    "JWKS refresh failed; keeping the previous keys"
                );
                Err(err)
            }
        }
    }

    /// Called when a token names `kid` and the set has no such key: fetches
    /// again unless the cooldown since the last such fetch has not passed.
    /// Returns the key if it is there afterwards.
    /// `kid` is `None` only while the set is still empty (before the first
    /// fetch has succeeded).
    pub async fn refresh_for_kid(&self, kid: Option<&str>, alg: Algorithm) -> Option<Arc<VerifyKey>> {
        let _one_at_a_time = self.fetching.lock().await;
        // Another request may have fetched it while this one waited.
        if let Lookup::Found(key) = self.keys().find(kid, alg) {
            return Some(key);
        }
        {
            let now = Instant::now();
            let mut last = self.last_on_demand.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|at| now.duration_since(at) < self.cooldown) {
                return None;
            }
            *last = Some(now);
        }
        let _ = self.fetch_and_store().await;
        match self.keys().find(kid, alg) {
            Lookup::Found(key) => Some(key),
            _ => None,
        }
    }

    /// Fetches now and then every `interval`, for as long as the cache is
    /// alive (the task holds only a weak reference).
    pub fn spawn_refresher(self: &Arc<Self>, interval: Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(provider = %self.provider, "no async runtime: JWKS will only be fetched on demand");
            return;
        };
        let weak: Weak<Self> = Arc::downgrade(self);
        let interval = interval.max(Duration::from_secs(1));
        runtime.spawn(async move {
            let mut first = true;
            loop {
                if !first {
                    tokio::time::sleep(interval).await;
                }
                first = false;
                let Some(cache) = weak.upgrade() else { return };
                let _ = cache.refresh().await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_JWK: &str = r#"{"kty":"RSA","kid":"r1","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"}"#;
    const EC_JWK: &str = r#"{"kty":"EC","kid":"e1","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;

    fn set(keys: &[&str]) -> String {
        format!("{{\"keys\":[{}]}}", keys.join(","))
    }

    #[test]
    fn keys_are_bound_to_their_type_algorithms() {
        let parsed = KeySet::parse(set(&[RSA_JWK, EC_JWK]).as_bytes(), false).expect("parses");
        assert_eq!(parsed.keys.len(), 2);
        let rsa = &parsed.keys[0];
        assert!(rsa.allows(Algorithm::RS256) && rsa.allows(Algorithm::PS512));
        assert!(!rsa.allows(Algorithm::HS256) && !rsa.allows(Algorithm::ES256));
        let ec = &parsed.keys[1];
        assert_eq!(ec.algorithms, vec![Algorithm::ES256]);
    }

    #[test]
    fn named_alg_narrows_and_unusable_keys_are_skipped() {
        let rs384 = RSA_JWK.replacen("\"kid\":\"r1\"", "\"kid\":\"r2\",\"alg\":\"RS384\"", 1);
        let enc = RSA_JWK.replacen("\"kid\":\"r1\"", "\"kid\":\"r3\",\"use\":\"enc\"", 1);
        let oaep = RSA_JWK.replacen("\"kid\":\"r1\"", "\"kid\":\"r4\",\"alg\":\"RSA-OAEP\"", 1);
        let oct = r#"{"kty":"oct","kid":"h1","k":"c2VjcmV0"}"#;
        let unknown = r#"{"kty":"XYZ","kid":"u1"}"#;
        let doc = set(&[&rs384, &enc, &oaep, oct, unknown]);
        let parsed = KeySet::parse(doc.as_bytes(), false).expect("one usable key");
        assert_eq!(parsed.keys.len(), 1);
        assert_eq!(parsed.keys[0].algorithms, vec![Algorithm::RS384]);
        let with_oct = KeySet::parse(doc.as_bytes(), true).expect("parses");
        assert_eq!(with_oct.keys.len(), 2);
        assert!(with_oct.keys[1].allows(Algorithm::HS256));
    }

    #[test]
    fn empty_or_broken_sets_are_errors() {
        assert!(matches!(KeySet::parse(b"{\"keys\":[]}", false), Err(JwksError::NoKeys)));
        assert!(matches!(KeySet::parse(b"not json", false), Err(JwksError::Json(_))));
        assert!(matches!(KeySet::parse(b"{\"keys\":[{\"kty\":\"oct\",\"k\":\"AA\"}]}", false), Err(JwksError::NoKeys)));
    }

    #[test]
    fn lookup_by_kid_and_without_kid() {
        let parsed = KeySet::parse(set(&[RSA_JWK, EC_JWK]).as_bytes(), false).expect("parses");
        assert!(
            matches!(parsed.find(Some("e1"), Algorithm::ES256), Lookup::Found(k) if k.kid.as_deref() == Some("e1"))
        );
        assert!(matches!(parsed.find(Some("nope"), Algorithm::RS256), Lookup::UnknownKid));
        // Without a kid, the one key that fits the algorithm is used…
        assert!(matches!(parsed.find(None, Algorithm::ES256), Lookup::Found(_)));
        // …and two candidates are not guessed between.
        let two = RSA_JWK.replacen("\"kid\":\"r1\"", "\"kid\":\"r2\"", 1);
        let parsed = KeySet::parse(set(&[RSA_JWK, &two]).as_bytes(), false).expect("parses");
        assert!(matches!(parsed.find(None, Algorithm::RS256), Lookup::Ambiguous));
    }

    #[tokio::test]
    async fn file_rotation_and_cooldown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, set(&[RSA_JWK])).expect("write");
        let cache = JwksCache::new("corp".into(), JwksSource::File(path.clone()), false, Duration::from_secs(3600));
        cache.load_file_now().expect("loads");
        assert!(matches!(cache.keys().find(Some("r1"), Algorithm::RS256), Lookup::Found(_)));

        // Rotation: the new kid is picked up by the first on-demand fetch.
        std::fs::write(&path, set(&[EC_JWK])).expect("write");
        let before = cache.fetches();
        assert!(cache.refresh_for_kid(Some("e1"), Algorithm::ES256).await.is_some());
        assert_eq!(cache.fetches(), before + 1);

        // Within the cooldown, unknown kids cause no further fetch.
        assert!(cache.refresh_for_kid(Some("made-up-1"), Algorithm::ES256).await.is_none());
        assert!(cache.refresh_for_kid(Some("made-up-2"), Algorithm::ES256).await.is_none());
        assert_eq!(cache.fetches(), before + 1);

        // A failed refresh keeps the previous keys.
        std::fs::write(&path, "garbage").expect("write");
        assert!(cache.refresh().await.is_err());
        assert!(matches!(cache.keys().find(Some("e1"), Algorithm::ES256), Lookup::Found(_)));
    }

    #[tokio::test]
    async fn zero_cooldown_fetches_on_every_unknown_kid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, set(&[RSA_JWK])).expect("write");
        let cache = JwksCache::new("corp".into(), JwksSource::File(path), false, Duration::ZERO);
        cache.load_file_now().expect("loads");
        assert!(cache.refresh_for_kid(Some("x"), Algorithm::RS256).await.is_none());
        assert!(cache.refresh_for_kid(Some("y"), Algorithm::RS256).await.is_none());
        assert_eq!(cache.fetches(), 2);
    }
}
