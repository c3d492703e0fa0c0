//! One JWT provider: where its tokens are, which keys and algorithms verify
//! them, and which claims must hold. Everything that does not depend on the
//! token (the `Validation`, the key set, the token's location) is built at
//! load.

use std::borrow::Cow;
use std::sync::Arc;

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, HeaderName, Uri};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::jwks::{JwksCache, JwksSource, Lookup, VerifyKey};
use super::{single_header, single_query_param, Rejection, Several};
use crate::config::auth::{JwtProviderConfig, TokenLocation};
use crate::http::Identity;

/// Where a provider reads its token, resolved at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// `Authorization: Bearer <token>` (or another header, where a
    /// `Bearer ` prefix is optional).
    Header(HeaderName),
    Query(String),
    Cookie(String),
}

enum Keys {
    Static(Arc<VerifyKey>),
    Jwks(Arc<JwksCache>),
}

pub struct JwtProvider {
    pub name: String,
    pub place: Place,
    issuer: Option<String>,
    algorithms: Vec<Algorithm>,
    /// One per accepted algorithm: jsonwebtoken wants every algorithm of
    /// a `Validation` to be of the verifying key's family.
    validations: Vec<(Algorithm, Validation)>,
    keys: Keys,
    refresh: std::time::Duration,
}

impl JwtProvider {
    /// Reads the secret or the JWKS file. The error says what is wrong,
    /// the caller says with which provider. What `validate` refuses, the
    /// config file has already refused with key and line; it is checked
    /// again for providers built in code.
    pub fn new(config: &JwtProviderConfig) -> Result<Self, String> {
        config.validate()?;
        let algorithms = config.accepted_algorithms();

        let keys = if let Some(secret) = &config.secret {
            let bytes = secret.read().map_err(|e| format!("secret: {e}"))?;
            Keys::Static(Arc::new(VerifyKey::hmac(&bytes)))
        } else if let Some(url) = &config.jwks_url {
            let source = JwksSource::url(url.clone()).map_err(|e| format!("jwks_url: {e}"))?;
            Keys::Jwks(Arc::new(JwksCache::new(config.name.clone(), source, false, config.jwks_cooldown)))
        } else if let Some(path) = &config.jwks_file {
            let cache = JwksCache::new(config.name.clone(), JwksSource::File(path.clone()), true, config.jwks_cooldown);
            cache.load_file_now().map_err(|e| format!("jwks_file: {e}"))?;
            Keys::Jwks(Arc::new(cache))
        } else {
            return Err("no key source".into());
        };

        let place = match (config.from, &config.param) {
            (TokenLocation::Header, None) => Place::Header(AUTHORIZATION),
            (TokenLocation::Header, Some(name)) => Place::Header(
                HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                    .map_err(|_| format!("param {name:?} is not a header name"))?,
            ),
            (TokenLocation::Query, name) => Place::Query(name.clone().unwrap_or_else(|| "access_token".into())),
            (TokenLocation::Cookie, name) => Place::Cookie(name.clone().unwrap_or_else(|| "access_token".into())),
        };

        let mut validation = Validation::new(algorithms[0]);
        validation.leeway = config.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        if config.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&config.audiences);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        let validations = algorithms
            .iter()
            .map(|alg| {
                let mut v = validation.clone();
                v.algorithms = vec![*alg];
                (*alg, v)
            })
            .collect();

        Ok(Self {
            name: config.name.clone(),
            place,
            issuer: config.issuer.clone(),
            algorithms,
            validations,
            keys,
            refresh: config.jwks_refresh,
        })
    }

    /// Starts the periodic JWKS refresh (URL and file sources).
    pub fn start(&self) {
        if let Keys::Jwks(cache) = &self.keys {
            cache.spawn_refresher(self.refresh);
        }
    }

    /// The key cache, for tests that count fetches.
    pub fn jwks(&self) -> Option<&Arc<JwksCache>> {
        match &self.keys {
            Keys::Jwks(cache) => Some(cache),
            Keys::Static(_) => None,
        }
    }

    /// The token in this provider's place, if there is one; more than one
    /// (a repeated header, query parameter or cookie, or a comma-joined
    /// header value: no JWT contains a comma) is [`Several`].
    pub fn token<'a>(&self, headers: &'a HeaderMap, uri: &'a Uri) -> Result<Option<Cow<'a, str>>, Several> {
        match &self.place {
            Place::Header(name) => {
                let Some(value) = single_header(headers, name)? else {
                    return Ok(None);
                };
                let Ok(value) = value.to_str().map(str::trim) else {
                    return Ok(None);
                };
                if value.contains(',') {
                    return Err(Several);
                }
                let token = match bearer(value) {
                    Some(token) => token,
                    // Only `Bearer` credentials are ours in `Authorization`.
                    None if *name == AUTHORIZATION => return Ok(None),
                    None => value,
                };
                Ok((!token.is_empty()).then_some(Cow::Borrowed(token)))
            }
            Place::Query(param) => match uri.query() {
                Some(query) => Ok(single_query_param(query, param)?.filter(|t| !t.is_empty())),
                None => Ok(None),
            },
            Place::Cookie(cookie) => {
                let mut found = headers
                    .get_all(COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(';'))
                    .filter_map(|pair| pair.trim().split_once('='))
                    .filter(|(name, _)| name == cookie)
                    .map(|(_, value)| value.trim_matches('"'));
                let Some(value) = found.next() else {
                    return Ok(None);
                };
                if found.next().is_some() {
                    return Err(Several);
                }
                Ok((!value.is_empty()).then_some(Cow::Borrowed(value)))
            }
        }
    }

    /// Whether this provider is the one for `issuer` among several that
    /// read the same place.
    pub fn accepts_issuer(&self, issuer: Option<&str>) -> bool {
        match (&self.issuer, issuer) {
            (None, _) => true,
            (Some(mine), Some(theirs)) => mine == theirs,
            (Some(_), None) => false,
        }
    }

    /// Verifies `token` and returns who it identifies.
    pub async fn verify(&self, token: &str) -> Result<Identity, Rejection> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
        if !self.algorithms.contains(&header.alg) {
            return Err(Rejection::AlgorithmNotAllowed);
        }
        let key = match &self.keys {
            Keys::Static(key) => key.clone(),
            Keys::Jwks(cache) => {
                let kid = header.kid.as_deref();
                let set = cache.keys();
                match set.find(kid, header.alg) {
                    Lookup::Found(key) => key,
                    Lookup::UnknownKid => cache.refresh_for_kid(kid, header.alg).await.ok_or(Rejection::UnknownKey)?,
                    Lookup::NoneFits if set.keys.is_empty() => {
                        cache.refresh_for_kid(None, header.alg).await.ok_or(Rejection::UnknownKey)?
                    }
                    Lookup::NoneFits => return Err(Rejection::AlgorithmNotAllowed),
                    Lookup::Ambiguous => return Err(Rejection::NoKid),
                }
            }
        };
        // The key decides which algorithms it verifies, not the token: this
        // is what stops HS256 "signed" with an RSA public key.
        if !key.allows(header.alg) {
            return Err(Rejection::AlgorithmNotAllowed);
        }
        let validation = self
            .validations
            .iter()
            .find_map(|(alg, v)| (*alg == header.alg).then_some(v))
            .ok_or(Rejection::AlgorithmNotAllowed)?;
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation).map_err(|e| rejection(e.kind()))?;
        let claims = data.claims;
        let consumer = match claims.get("sub") {
            Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
            _ => return Err(Rejection::MissingClaim),
        };
        Ok(Identity { consumer, provider: self.name.clone(), scopes: scopes(&claims), claims, token: None })
    }
}

/// `Bearer <token>`, the scheme matched case-insensitively.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim_start())
}

fn rejection(kind: &ErrorKind) -> Rejection {
    match kind {
        ErrorKind::InvalidSignature => Rejection::BadSignature,
        ErrorKind::ExpiredSignature => Rejection::Expired,
        ErrorKind::ImmatureSignature => Rejection::NotYetValid,
        ErrorKind::InvalidIssuer => Rejection::WrongIssuer,
        ErrorKind::InvalidAudience => Rejection::WrongAudience,
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => Rejection::MissingClaim,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => Rejection::AlgorithmNotAllowed,
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => Rejection::BadSignature,
        _ => Rejection::Malformed,
    }
}

/// The OAuth `scope` claim (space-separated) and the `scp` claim (array or
/// string), merged.
fn scopes(claims: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    for name in ["scope", "scp"] {
        match claims.get(name) {
            Some(Value::String(text)) => out.extend(text.split_whitespace().map(str::to_owned)),
            Some(Value::Array(items)) => out.extend(items.iter().filter_map(Value::as_str).map(str::to_owned)),
            _ => {}
        }
    }
    out
}

/// The unverified `iss` of a token: only used to pick which of several
/// providers reading the same place verifies it.
pub fn peek_issuer(token: &str) -> Option<String> {
    let data = jsonwebtoken::dangerous::insecure_decode::<Map<String, Value>>(token).ok()?;
    data.claims.get("iss")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests;
