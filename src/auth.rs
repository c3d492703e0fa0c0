//! Authentication and authorization (DESIGN §7, issue 4): the gateway is
//! the security layer in front of the services.
//!
//! [`AuthLayer`] sits after route match and before anything reads the body.
//! It removes identity headers the client may have sent (so an identity
//! can only come from here), finds the one credential the request carries
//! in any place a provider reads (two are refused with 400, whatever their
//! order), verifies it, and checks the route's [`policy::RoutePolicy`], resolved
//! once per route at load and attached to the route (see [`policy`]).
//! Missing or bad credentials → 401 with a `WWW-Authenticate: Bearer`
//! challenge; valid but not allowed → 403; both returned as errors for the
//! respond layer. On success the [`Identity`] goes into the request's
//! extensions, from where the proxy forwards it as metadata (see
//! [`IdentityForwarding`]).

pub mod api_key;
pub mod jwks;
pub mod jwt;
pub mod policy;

use std::borrow::Cow;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::WWW_AUTHENTICATE;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use percent_encoding::percent_decode_str;
use tonic::Code;
use tower::{Layer, Service};

use self::api_key::ApiKeys;
use self::jwt::{JwtProvider, Place};
use self::policy::{Denial, RoutePolicy};
use crate::config::auth::{check_realm, AuthConfig};
use crate::error::{Fault, GatewayError};
use crate::http::identity::{Identity, IdentityForwarding};
use crate::http::observe::Exchange;
use crate::http::{Body, MatchedRoute, ResponseFuture};
use crate::metrics::{AuthOutcome, Metrics};
use crate::tls::ClientCert;

/// A configuration the authenticator cannot work with.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// `at` is the provider's key path and name: `auth.jwt[0] (corp)`,
    /// `auth.api_keys (api_key)`.
    #[error("{at}: {reason}")]
    Provider { at: String, reason: String },
    #[error("auth.forward_claims{0}")]
    ForwardClaim(String),
    #[error("auth: provider name {0:?} is used twice")]
    DuplicateProvider(String),
    #[error("auth.realm: {0:?} cannot be used in a WWW-Authenticate header")]
    Realm(String),
}

/// Why a credential was not accepted. The descriptions go to the client,
/// so they say what is wrong without echoing anything secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Missing,
    Malformed,
    AlgorithmNotAllowed,
    UnknownKey,
    NoKid,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    MissingClaim,
    BadApiKey,
}

impl Rejection {
    pub fn description(self) -> &'static str {
        match self {
            Self::Missing => "no credentials",
            Self::Malformed => "the token is malformed or names an unsupported algorithm",
            Self::AlgorithmNotAllowed => "the token's algorithm is not accepted for its key",
            Self::UnknownKey => "the token's signing key is not known",
            Self::NoKid => "the token has no key id and the key set has several keys",
            Self::BadSignature => "the token's signature is not valid",
            Self::Expired => "the token has expired",
            Self::NotYetValid => "the token is not valid yet",
            Self::WrongIssuer => "the token's issuer is not accepted",
            Self::WrongAudience => "the token's audience is not accepted",
            Self::MissingClaim => "the token lacks a required claim (exp, sub, iss or aud)",
            Self::BadApiKey => "the API key is not valid",
        }
    }

    /// The outcome label of tracing events (and, later, metrics).
    pub fn outcome(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::AlgorithmNotAllowed => "bad_algorithm",
            Self::UnknownKey => "unknown_key",
            Self::NoKid => "no_kid",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::MissingClaim => "missing_claim",
            Self::BadApiKey => "bad_api_key",
        }
    }
}

/// The configured providers, ready to verify credentials.
pub struct Authenticator {
    jwt: Vec<JwtProvider>,
    api_keys: Option<ApiKeys>,
    /// `auth.mtls`: the provider name of verified client certificates.
    mtls: Option<String>,
    forwarding: IdentityForwarding,
    /// Client-sent identity headers to remove, plain and `grpc-metadata-`.
    strip: Vec<HeaderName>,
    /// Query parameters that carry credentials: removed before the
    /// transcoder sees the query (they name no field) and never forwarded.
    credential_params: Vec<String>,
    /// `Bearer realm="…"`, the challenge when no credential was sent.
    challenge: HeaderValue,
    realm: String,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("jwt", &self.jwt.iter().map(|p| &p.name).collect::<Vec<_>>())
            .field("api_keys", &self.api_keys.as_ref().map(|k| &k.name))
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Reads secrets and JWKS files, naming the provider's key path when
    /// one cannot be read. What the config text alone can be wrong about,
    /// the config file has already refused with key and line; it is
    /// checked again for configs built in code. Fetching JWKS URLs starts
    /// with [`Authenticator::start`].
    pub fn new(config: &AuthConfig) -> Result<Self, AuthError> {
        let realm = config.realm.clone().unwrap_or_else(|| "protogate".into());
        if check_realm(&realm).is_err() {
            return Err(AuthError::Realm(realm));
        }
        let challenge =
            HeaderValue::try_from(format!("Bearer realm=\"{realm}\"")).map_err(|_| AuthError::Realm(realm.clone()))?;
        let jwt = config
            .jwt
            .iter()
            .enumerate()
            .map(|(index, provider)| {
                JwtProvider::new(provider).map_err(|reason| AuthError::Provider {
                    at: format!("auth.jwt[{index}] ({})", provider.name),
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let api_keys = config
            .api_keys
            .as_ref()
            .map(|keys| {
                ApiKeys::new(keys)
                    .map_err(|reason| AuthError::Provider { at: format!("auth.api_keys ({})", keys.name), reason })
            })
            .transpose()?;
        let mtls = config.mtls.as_ref().map(|m| m.name.clone());
        let mut names: Vec<&str> = jwt.iter().map(|p| p.name.as_str()).collect();
        names.extend(api_keys.iter().map(|k| k.name.as_str()));
        names.extend(mtls.as_deref());
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                return Err(AuthError::DuplicateProvider((*name).to_string()));
            }
        }
        let forwarding = IdentityForwarding::new(config).map_err(AuthError::ForwardClaim)?;
        let mut strip = Vec::new();
        for header in forwarding.identity_headers() {
            strip.push(header.clone());
            if let Ok(prefixed) = HeaderName::try_from(format!("grpc-metadata-{header}")) {
                strip.push(prefixed);
            }
        }
        let mut credential_params: Vec<String> = jwt
            .iter()
            .filter_map(|p| match &p.place {
                Place::Query(name) => Some(name.clone()),
                _ => None,
            })
            .collect();
        credential_params.extend(api_keys.iter().filter_map(|k| k.query.clone()));
        Ok(Self { jwt, api_keys, mtls, forwarding, strip, credential_params, challenge, realm })
    }

    /// Starts the JWKS refreshers; needs a tokio runtime.
    pub fn start(&self) {
        for provider in &self.jwt {
            provider.start();
        }
    }

    pub fn forwarding(&self) -> &IdentityForwarding {
        &self.forwarding
    }

    pub fn providers(&self) -> &[JwtProvider] {
        &self.jwt
    }

    /// Whether any credential can be accepted at all.
    pub fn is_enabled(&self) -> bool {
        !self.jwt.is_empty() || self.api_keys.is_some() || self.mtls.is_some()
    }

    /// The one credential the request carries, with the provider that will
    /// judge it. Every place a provider reads is looked at, the connection's
    /// client certificate included (with `auth.mtls`): two credentials (of
    /// one kind or of two) are [`Several`], whatever their order.
    fn credential<'a>(
        &self,
        headers: &'a HeaderMap,
        uri: &'a Uri,
        client_cert: Option<&Arc<ClientCert>>,
    ) -> Result<Option<Credential<'a>>, Several> {
        let mut found: Option<Credential<'a>> = None;
        for (index, provider) in self.jwt.iter().enumerate() {
            // Several providers may read the same place: read it once.
            if self.jwt[..index].iter().any(|earlier| earlier.place == provider.place) {
                continue;
            }
            let Some(token) = provider.token(headers, uri)? else {
                continue;
            };
            if found.is_some() {
                return Err(Several);
            }
            // The token's (unverified) issuer picks among the providers
            // sharing the place.
            let sharing = self.jwt[index..].iter().filter(|p| p.place == provider.place).count();
            let chosen = if sharing > 1 {
                let issuer = jwt::peek_issuer(&token);
                self.jwt[index..]
                    .iter()
                    .position(|p| p.place == provider.place && p.accepts_issuer(issuer.as_deref()))
                    .map_or(index, |offset| index + offset)
            } else {
                index
            };
            found = Some(Credential::Jwt { provider: chosen, token });
        }
        if let Some(keys) = &self.api_keys {
            if let Some(key) = keys.credential(headers, uri)? {
                if found.is_some() {
                    return Err(Several);
                }
                found = Some(Credential::ApiKey(key));
            }
        }
        if let (Some(_), Some(cert)) = (&self.mtls, client_cert) {
            if found.is_some() {
                return Err(Several);
            }
            found = Some(Credential::Certificate(cert.clone()));
        }
        Ok(found)
    }

    async fn verify(&self, credential: &Credential<'_>) -> (String, Result<Identity, Rejection>) {
        match credential {
            Credential::Jwt { provider, token } => match self.jwt.get(*provider) {
                Some(p) => {
                    let mut verified = p.verify(token).await;
                    if let (true, Ok(identity)) = (self.forwarding.forward_token, &mut verified) {
                        // The token as checked, never another copy the
                        // client sent alongside.
                        identity.token = HeaderValue::try_from(format!("Bearer {token}")).ok();
                    }
                    (p.name.clone(), verified)
                }
                None => (String::new(), Err(Rejection::Malformed)),
            },
            Credential::ApiKey(key) => match &self.api_keys {
                Some(keys) => (keys.name.clone(), keys.verify(key)),
                None => (String::new(), Err(Rejection::BadApiKey)),
            },
            // Verified by the TLS handshake against `tls.client_ca`.
            Credential::Certificate(cert) => {
                let provider = self.mtls.clone().unwrap_or_default();
                (provider.clone(), Ok(certificate_identity(cert, provider)))
            }
        }
    }

    fn strip_identity_headers(&self, headers: &mut HeaderMap) {
        // A request seldom carries any of them: one pass over its few
        // headers costs less than a hashed lookup for each stripped name.
        if !headers.keys().any(|name| self.strip.contains(name)) {
            return;
        }
        for name in &self.strip {
            headers.remove(name);
        }
    }

    /// The request URI without the credential query parameters.
    fn strip_credential_params(&self, uri: &Uri) -> Option<Uri> {
        let query = uri.query()?;
        let is_credential = |pair: &str| {
            let name = pair.split_once('=').map_or(pair, |(n, _)| n);
            self.credential_params.iter().any(|p| p == name)
        };
        if !query.split('&').any(is_credential) {
            return None;
        }
        let kept: Vec<&str> = query.split('&').filter(|p| !is_credential(p)).collect();
        let path_and_query =
            if kept.is_empty() { uri.path().to_owned() } else { format!("{}?{}", uri.path(), kept.join("&")) };
        let mut parts = uri.clone().into_parts();
        parts.path_and_query = PathAndQuery::try_from(path_and_query).ok();
        Uri::from_parts(parts).ok()
    }

    fn unauthenticated(&self, rejection: Rejection) -> GatewayError {
        let challenge = if rejection == Rejection::Missing {
            self.challenge.clone()
        } else {
            HeaderValue::try_from(format!(
                "Bearer realm=\"{}\", error=\"invalid_token\", error_description=\"{}\"",
                self.realm,
                rejection.description()
            ))
            .unwrap_or_else(|_| self.challenge.clone())
        };
        let message = match rejection {
            Rejection::Missing => "authentication required".to_string(),
            other => format!("invalid credentials: {}", other.description()),
        };
        GatewayError::new(Code::Unauthenticated, Fault::Client, message)
            .with_status(StatusCode::UNAUTHORIZED)
            .with_header(WWW_AUTHENTICATE, challenge)
    }

    /// RFC 6750 §3.1: a request that "uses more than one method for
    /// including an access token" is an `invalid_request`, answered 400.
    fn several(&self) -> GatewayError {
        const WHY: &str = "more than one credential was sent; send exactly one";
        let challenge = HeaderValue::try_from(format!(
            "Bearer realm=\"{}\", error=\"invalid_request\", error_description=\"{WHY}\"",
            self.realm
        ))
        .unwrap_or_else(|_| self.challenge.clone());
        GatewayError::new(Code::InvalidArgument, Fault::Client, format!("invalid credentials: {WHY}"))
            .with_status(StatusCode::BAD_REQUEST)
            .with_header(WWW_AUTHENTICATE, challenge)
    }

    fn forbidden(&self, denial: &Denial) -> GatewayError {
        let err = GatewayError::new(Code::PermissionDenied, Fault::Client, denial.message())
            .with_status(StatusCode::FORBIDDEN);
        match denial {
            Denial::Scope(missing) => match HeaderValue::try_from(format!(
                "Bearer realm=\"{}\", error=\"insufficient_scope\", scope=\"{missing}\"",
                self.realm
            )) {
                Ok(value) => err.with_header(WWW_AUTHENTICATE, value),
                Err(_) => err,
            },
            _ => err,
        }
    }
}

enum Credential<'a> {
    Jwt { provider: usize, token: Cow<'a, str> },
    ApiKey(Cow<'a, str>),
    Certificate(Arc<ClientCert>),
}

impl Credential<'_> {
    fn into_owned(self) -> Credential<'static> {
        match self {
            Self::Jwt { provider, token } => Credential::Jwt { provider, token: Cow::Owned(token.into_owned()) },
            Self::ApiKey(key) => Credential::ApiKey(Cow::Owned(key.into_owned())),
            Self::Certificate(cert) => Credential::Certificate(cert),
        }
    }
}

/// A verified client certificate as a caller: its common name (else its
/// subject) is the consumer; `subject`, `cn` and `alt_names` are claims
/// policies can require.
fn certificate_identity(cert: &ClientCert, provider: String) -> Identity {
    let mut claims = serde_json::Map::new();
    claims.insert("subject".into(), cert.subject.clone().into());
    if let Some(cn) = &cert.common_name {
        claims.insert("cn".into(), cn.clone().into());
    }
    claims.insert("alt_names".into(), cert.alt_names.clone().into());
    Identity { consumer: cert.consumer().to_owned(), provider, scopes: Vec::new(), claims, token: None }
}

/// More than one credential where one is expected: refused, never resolved
/// by which came first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Several;

/// The one value of header `name`; a repeated header is [`Several`].
pub(crate) fn single_header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a HeaderValue>, Several> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(Several);
    }
    Ok(first)
}

/// The one value of query parameter `name`, percent-decoded (`+` as space)
/// when needed; a repeated parameter is [`Several`]. A value that is not
/// UTF-8 once decoded reads as empty: present, and wrong.
pub(crate) fn single_query_param<'a>(query: &'a str, name: &str) -> Result<Option<Cow<'a, str>>, Several> {
    let mut values = query.split('&').filter_map(|pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        (n == name).then_some(v)
    });
    let Some(raw) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Several);
    }
    if !raw.contains(['%', '+']) {
        return Ok(Some(Cow::Borrowed(raw)));
    }
    let spaced = raw.replace('+', " ");
    let decoded = percent_decode_str(&spaced).decode_utf8().map(|s| s.into_owned()).unwrap_or_default();
    Ok(Some(Cow::Owned(decoded)))
}

/// One connection's authentication layer: `client_cert` is the
/// certificate its TLS handshake verified, if any.
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
    metrics: Arc<Metrics>,
    client_cert: Option<Arc<ClientCert>>,
}

impl AuthLayer {
    pub fn new(auth: Arc<Authenticator>, metrics: Arc<Metrics>, client_cert: Option<Arc<ClientCert>>) -> Self {
        Self { auth, metrics, client_cert }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth { auth: self.auth.clone(), metrics: self.metrics.clone(), client_cert: self.client_cert.clone(), inner }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    auth: Arc<Authenticator>,
    metrics: Arc<Metrics>,
    client_cert: Option<Arc<ClientCert>>,
    inner: S,
}

/// The provider label of a refusal that no provider judged (no
/// credential, or several).
const NO_PROVIDER: &str = "none";

impl<S, B> Service<Request<B>> for Auth<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = GatewayError, Future = ResponseFuture>
        + Clone
        + Send
        + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let auth = self.auth.clone();
        auth.strip_identity_headers(req.headers_mut());
        let Some(matched) = req.extensions().get::<MatchedRoute>() else {
            // Route match always runs first; the proxy refuses a request
            // without a route with its own error.
            return self.inner.call(req);
        };
        if !auth.is_enabled() {
            return self.inner.call(req);
        }
        let Some(policy) = matched.route.extensions.get::<Arc<RoutePolicy>>().cloned() else {
            // Every route gets a policy at load; one without is a bug, and
            // a bug must not open a route.
            return Box::pin(std::future::ready(Err(GatewayError::internal("route has no policy"))));
        };
        // For log fields: the route's name without copying it.
        let matched_route = matched.route.clone();
        let credential = match auth.credential(req.headers(), req.uri(), self.client_cert.as_ref()) {
            Ok(credential) => credential.map(Credential::into_owned),
            // Refused on public routes too: which of two credentials
            // counts is never guessed.
            Err(Several) => {
                tracing::info!(route = matched_route.name(), outcome = "several", "auth: denied");
                self.metrics.auth_decision(NO_PROVIDER, AuthOutcome::Unauthenticated);
                return Box::pin(std::future::ready(Err(auth.several())));
            }
        };
        if let Some(uri) = auth.strip_credential_params(req.uri()) {
            *req.uri_mut() = uri;
        }
        let Some(credential) = credential else {
            if policy.is_public() {
                return self.inner.call(req);
            }
            tracing::info!(route = matched_route.name(), outcome = "missing", "auth: denied");
            self.metrics.auth_decision(NO_PROVIDER, AuthOutcome::Unauthenticated);
            return Box::pin(std::future::ready(Err(auth.unauthenticated(Rejection::Missing))));
        };
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let route = matched_route.name();
            let (provider, verified) = auth.verify(&credential).await;
            let identity = match verified {
                Ok(identity) => identity,
                Err(rejection) if policy.is_public() => {
                    // A public route serves anonymous callers; a stale
                    // token should not lock a client out of it.
                    tracing::debug!(
                        route,
                        provider,
                        outcome = rejection.outcome(),
                        "auth: ignored bad credential on public route"
                    );
                    return inner.call(req).await;
                }
                Err(rejection) => {
                    tracing::info!(route, provider, outcome = rejection.outcome(), "auth: denied");
                    metrics.auth_decision(&provider, AuthOutcome::Unauthenticated);
                    return Err(auth.unauthenticated(rejection));
                }
            };
            if let Err(denial) = policy.check(&identity) {
                tracing::info!(route, provider, consumer = %identity.consumer, policy = %policy.source, outcome = "forbidden", "auth: denied");
                metrics.auth_decision(&provider, AuthOutcome::Forbidden);
                return Err(auth.forbidden(&denial));
            }
            tracing::debug!(route, provider, consumer = %identity.consumer, policy = %policy.source, outcome = "allowed", "auth: allowed");
            metrics.auth_decision(&provider, AuthOutcome::Allowed);
            if let Some(exchange) = req.extensions().get::<Arc<Exchange>>() {
                exchange.set_consumer(&identity.consumer);
            }
            req.extensions_mut().insert(identity);
            inner.call(req).await
        })
    }
}

#[cfg(test)]
mod tests;
