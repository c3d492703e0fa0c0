//! API keys. Config holds only SHA-256 digests of the keys, so a leaked
//! config file does not leak keys; a presented key is hashed and compared
//! with every configured digest in constant time, so neither the answer's
//! timing nor an early exit tells an attacker how close a guess was.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, Uri};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::{single_header, single_query_param, Rejection, Several};
use crate::config::auth::{parse_sha256_digest, ApiKeysConfig};
use crate::http::Identity;

struct Key {
    id: String,
    digest: [u8; 32],
    scopes: Vec<String>,
}

pub struct ApiKeys {
    pub name: String,
    header: HeaderName,
    pub query: Option<String>,
    keys: Vec<Key>,
}

impl ApiKeys {
    /// The config file has already refused what is wrong here, with key
    /// and line; it is checked again for key sets built in code. The error
    /// says what is wrong, the caller says where.
    pub fn new(config: &ApiKeysConfig) -> Result<Self, String> {
        let header = HeaderName::from_bytes(config.header.to_ascii_lowercase().as_bytes())
            .map_err(|_| format!("header {:?} is not a header name", config.header))?;
        let mut keys: Vec<Key> = Vec::with_capacity(config.keys.len());
        for key in &config.keys {
            let digest = parse_sha256_digest(&key.sha256)
                .ok_or_else(|| format!("key {:?}: sha256 must be 64 hex digits (the SHA-256 of the key)", key.id))?;
            if key.id.is_empty() {
                return Err("every key needs an id".into());
            }
            if keys.iter().any(|k| k.id == key.id || k.digest == digest) {
                return Err(format!("key {:?} is listed twice", key.id));
            }
            keys.push(Key { id: key.id.clone(), digest, scopes: key.scopes.clone() });
        }
        Ok(Self { name: config.name.clone(), header, query: config.query.clone(), keys })
    }

    /// The presented key, from the header or the query parameter. A key in
    /// both places, a repeated header or parameter, or a comma-joined
    /// header value (which HTTP reads as two values) is [`Several`].
    pub fn credential<'a>(&self, headers: &'a HeaderMap, uri: &'a Uri) -> Result<Option<Cow<'a, str>>, Several> {
        let from_query = match (self.query.as_deref(), uri.query()) {
            (Some(param), Some(query)) => single_query_param(query, param)?,
            _ => None,
        };
        let Some(value) = single_header(headers, &self.header)? else {
            return Ok(from_query);
        };
        if from_query.is_some() {
            return Err(Several);
        }
        // A header that is there but unreadable is still a credential,
        // just a wrong one.
        let key = value.to_str().map(str::trim).unwrap_or("");
        if key.contains(',') {
            return Err(Several);
        }
        Ok(Some(Cow::Borrowed(key)))
    }

    pub fn verify(&self, presented: &str) -> Result<Identity, Rejection> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found: Option<&Key> = None;
        for key in &self.keys {
            let equal: Choice = key.digest.ct_eq(&digest);
            // Every key is compared; the branch only keeps the match.
            if bool::from(equal) {
                found = Some(key);
            }
        }
        let key = found.ok_or(Rejection::BadApiKey)?;
        Ok(Identity {
            consumer: key.id.clone(),
            provider: self.name.clone(),
            scopes: key.scopes.clone(),
            claims: serde_json::Map::new(),
            token: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::auth::ApiKeyConfig;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn keys(query: Option<&str>) -> ApiKeys {
        ApiKeys::new(&ApiKeysConfig {
            name: "api_key".into(),
            header: "X-API-Key".into(),
            query: query.map(str::to_owned),
            keys: vec![
                ApiKeyConfig {
                    id: "batch".into(),
                    sha256: hex(&Sha256::digest(b"k-batch")).to_uppercase(),
                    scopes: vec!["read".into()],
                },
                ApiKeyConfig { id: "admin".into(), sha256: hex(&Sha256::digest(b"k-admin")), scopes: vec![] },
            ],
        })
        .expect("valid")
    }

    #[test]
    fn right_key_gives_its_id_and_scopes() {
        let identity = keys(None).verify("k-batch").expect("accepted");
        assert_eq!(identity.consumer, "batch");
        assert_eq!(identity.provider, "api_key");
        assert_eq!(identity.scopes, vec!["read".to_string()]);
        assert_eq!(keys(None).verify("k-admin").expect("ok").consumer, "admin");
    }

    #[test]
    fn wrong_keys_are_rejected() {
        let set = keys(None);
        for wrong in ["", "k-batc", "k-batch ", "K-BATCH", &hex(&Sha256::digest(b"k-batch"))] {
            assert!(matches!(set.verify(wrong), Err(Rejection::BadApiKey)), "{wrong:?}");
        }
    }

    #[test]
    fn key_is_read_from_header_or_query_when_allowed_never_both() {
        let uri: Uri = "/x?api_key=k-admin".parse().expect("uri");
        let plain: Uri = "/x".parse().expect("uri");
        let mut headers = HeaderMap::new();
        assert_eq!(keys(None).credential(&headers, &uri), Ok(None));
        assert_eq!(keys(Some("api_key")).credential(&headers, &uri).expect("one").as_deref(), Some("k-admin"));
        headers.insert("x-api-key", "k-batch".parse().expect("value"));
        assert_eq!(keys(Some("api_key")).credential(&headers, &plain).expect("one").as_deref(), Some("k-batch"));
        assert_eq!(keys(Some("api_key")).credential(&headers, &uri), Err(Several));
        // Without `query`, the parameter is not a credential at all.
        assert_eq!(keys(None).credential(&headers, &uri).expect("one").as_deref(), Some("k-batch"));
    }

    #[test]
    fn bad_config_is_rejected() {
        let bad = |sha256: &str| ApiKeysConfig {
            name: "k".into(),
            header: "x-api-key".into(),
            query: None,
            keys: vec![ApiKeyConfig { id: "a".into(), sha256: sha256.into(), scopes: vec![] }],
        };
        assert!(ApiKeys::new(&bad("abc")).is_err());
        assert!(ApiKeys::new(&bad(&"zz".repeat(32))).is_err());
        assert!(ApiKeys::new(&bad(&"ab".repeat(32))).is_ok());
    }
}
