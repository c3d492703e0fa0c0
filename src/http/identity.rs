//! Who is calling, as authentication established it, and what the backend
//! is told about it. Defined here, below the features, because the auth
//! layer fills it and the proxy forwards it: neither names the other.

use http::HeaderName;

use crate::config::auth::{AuthConfig, ForwardClaim};

/// The consumer id sent to the backend: JWT `sub` or the API key's id.
pub const X_CONSUMER_ID: HeaderName = HeaderName::from_static("x-consumer-id");
/// The name of the provider that authenticated the request.
pub const X_AUTH_PROVIDER: HeaderName = HeaderName::from_static("x-auth-provider");

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
}

/// What the backend is told about the caller, built once from config and
/// used by the proxy's metadata rules.
#[derive(Debug, Clone)]
pub struct IdentityForwarding {
    /// Whether the client's `authorization` header is forwarded.
    pub forward_token: bool,
    /// Claim name → metadata name.
    pub claims: Vec<(String, HeaderName)>,
}

impl Default for IdentityForwarding {
    /// Without auth config: the token goes through (the backend may check
    /// it), no claims.
    fn default() -> Self {
        Self { forward_token: true, claims: Vec::new() }
    }
}

impl IdentityForwarding {
    pub fn new(config: &AuthConfig) -> Result<Self, String> {
        let mut claims = Vec::with_capacity(config.forward_claims.len());
        for claim in &config.forward_claims {
            let (claim, header) = match claim {
                ForwardClaim::Name(name) => (name.clone(), claim_header(name)),
                ForwardClaim::Mapped(m) => (m.claim.clone(), m.header.to_ascii_lowercase()),
            };
            let header = HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| format!("{header:?} (for claim {claim:?}) is not a header name"))?;
            let reserved = header == X_CONSUMER_ID
                || header == X_AUTH_PROVIDER
                || header == http::header::AUTHORIZATION
                || header.as_str().starts_with("grpc-");
            if reserved {
                return Err(format!("claim {claim:?} cannot be sent as {header}"));
            }
            claims.push((claim, header));
        }
        Ok(Self { forward_token: config.forwards_token(), claims })
    }

    /// Every header that carries identity: client copies are never trusted.
    pub fn identity_headers(&self) -> impl Iterator<Item = &HeaderName> {
        static FIXED: [HeaderName; 2] = [X_CONSUMER_ID, X_AUTH_PROVIDER];
        FIXED.iter().chain(self.claims.iter().map(|(_, h)| h))
    }

    pub fn is_identity_header(&self, name: &str) -> bool {
        self.identity_headers().any(|h| h.as_str() == name)
    }
}

/// `email` → `x-claim-email`; characters a header name cannot hold become
/// `-`.
fn claim_header(claim: &str) -> String {
    let mut out = String::with_capacity(8 + claim.len());
    out.push_str("x-claim-");
    out.extend(claim.chars().map(|c| {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            c
        } else {
            '-'
        }
    }));
    out
}
