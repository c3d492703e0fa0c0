//! Who is calling, as authentication established it, and what the backend
//! is told about it. Defined here, below the features, because the auth
//! layer fills it and the proxy forwards it: neither names the other.

use http::header::AUTHORIZATION;
use http::{HeaderName, HeaderValue};

use crate::config::auth::{AuthConfig, TokenLocation};
/// Defined with the config, whose checks keep claims off these headers.
pub use crate::config::auth::{X_AUTH_PROVIDER, X_CONSUMER_ID};

/// Who is calling, as established by authentication; put in the request's
/// extensions for authorization, rate limiting (key `consumer`) and the
/// metadata sent to the backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// JWT `sub` or the API key's id.
    pub consumer: String,
    /// The JWT provider's or API key set's configured name.
    pub provider: String,
    /// From the JWT `scope`/`scp` claim or the API key's scopes.
    pub scopes: Vec<String>,
    /// All claims of a JWT (empty for API keys).
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// The verified token as the `authorization` value the backend gets:
    /// set by the auth layer only with `auth.forward_token` on, so exactly
    /// the credential that was checked is forwarded.
    pub token: Option<HeaderValue>,
}

/// What the backend is told about the caller, built once from config and
/// used by the proxy's metadata rules.
#[derive(Debug, Clone)]
pub struct IdentityForwarding {
    /// Whether a token is forwarded as `authorization`: with providers,
    /// the verified one ([`Identity::token`]); without, the client's.
    pub forward_token: bool,
    /// Whether the gateway verifies credentials (any provider configured):
    /// then the places credentials are read from belong to it.
    pub verifies: bool,
    /// Claim name → metadata name.
    pub claims: Vec<(String, HeaderName)>,
    /// Headers other than `authorization` that carry credentials (JWT
    /// providers reading a header, the API key header).
    pub credential_headers: Vec<HeaderName>,
}

impl Default for IdentityForwarding {
    /// Without auth config: the token goes through (the backend may check
    /// it), no claims.
    fn default() -> Self {
        Self { forward_token: true, verifies: false, claims: Vec::new(), credential_headers: Vec::new() }
    }
}

impl IdentityForwarding {
    pub fn new(config: &AuthConfig) -> Result<Self, String> {
        let mut claims = Vec::with_capacity(config.forward_claims.len());
        // The config file has already refused a bad header with key and
        // line; this guards configs built in code.
        for (index, claim) in config.forward_claims.iter().enumerate() {
            let header =
                claim.header().map_err(|problem| format!("[{index}] (claim {:?}): {problem}", claim.claim()))?;
            claims.push((claim.claim().to_owned(), header));
        }
        let mut credential_headers: Vec<HeaderName> = Vec::new();
        let jwt_headers =
            config.jwt.iter().filter(|p| p.from == TokenLocation::Header).filter_map(|p| p.param.as_deref());
        for name in jwt_headers.chain(config.api_keys.iter().map(|k| k.header.as_str())) {
            if let Ok(header) = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
                if header != AUTHORIZATION && !credential_headers.contains(&header) {
                    credential_headers.push(header);
                }
            }
        }
        Ok(Self {
            forward_token: config.forwards_token(),
            verifies: config.has_providers(),
            claims,
            credential_headers,
        })
    }

    /// Every header that carries identity: client copies are never trusted.
    pub fn identity_headers(&self) -> impl Iterator<Item = &HeaderName> {
        static FIXED: [HeaderName; 2] = [X_CONSUMER_ID, X_AUTH_PROVIDER];
        FIXED.iter().chain(self.claims.iter().map(|(_, h)| h))
    }

    pub fn is_identity_header(&self, name: &str) -> bool {
        self.identity_headers().any(|h| h.as_str() == name)
    }

    /// Whether only the auth layer may say what the backend gets under
    /// `name`: `authorization`, the credential headers, the identity
    /// headers. A client can set none of them through `grpc-metadata-*`
    /// or `forward_headers`.
    pub fn is_auth_owned(&self, name: &str) -> bool {
        name == AUTHORIZATION.as_str()
            || self.is_identity_header(name)
            || self.credential_headers.iter().any(|h| h.as_str() == name)
    }
}
