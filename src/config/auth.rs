//! The `auth:` and `policies:` sections of the config file, as written by
//! the operator, checked while they are read so that every problem is
//! reported with its key and line (see `check`): single values as their
//! scalar is read, a JWT provider or a policy rule as a whole once its
//! mapping is read, and what needs two places of the file (unique provider
//! names, a policy naming a provider of `auth`) once the file is read.
//! Secrets and JWKS files are read later, by `auth::Authenticator::new`,
//! which also turns these into verifiers; `auth::policy::PolicySet::new`
//! turns `policies` into per-route requirements.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;
use jsonwebtoken::Algorithm;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::check::{self, Check, KeyPath, Problem};
use super::secret::Secret;
use super::selector::{check_method, check_method_in_service, check_path_prefix};

/// `auth:` — who may call, and what the backend learns about them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// JWT providers, tried in this order. Names are unique, across
    /// `api_keys` too.
    #[serde(default, deserialize_with = "check::checked_list")]
    pub jwt: Vec<JwtProviderConfig>,
    /// API keys, looked for after every JWT provider.
    #[serde(default)]
    pub api_keys: Option<ApiKeysConfig>,
    /// Verified client certificates (`tls.client_ca`) as credentials.
    #[serde(default)]
    pub mtls: Option<MtlsConfig>,
    /// Claims sent to the backend as metadata.
    #[serde(default)]
    pub forward_claims: Vec<ForwardClaim>,
    /// Whether the client's `authorization` header reaches the backend.
    /// Default: `false` when a provider is configured (the gateway is the
    /// security layer), `true` otherwise (the backend may do its own auth).
    #[serde(default)]
    pub forward_token: Option<bool>,
    /// The `realm` of `WWW-Authenticate` challenges (default `protogate`).
    #[serde(default, deserialize_with = "realm")]
    pub realm: Option<String>,
}

impl AuthConfig {
    /// Whether any credential can be accepted at all.
    pub fn has_providers(&self) -> bool {
        !self.jwt.is_empty() || self.api_keys.is_some() || self.mtls.is_some()
    }

    pub fn forwards_token(&self) -> bool {
        self.forward_token.unwrap_or(!self.has_providers())
    }

    /// The names policies may list: every JWT provider's, then the API
    /// keys', then the client certificates'.
    pub fn provider_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.jwt.iter().map(|p| p.name.as_str()).collect();
        names.extend(self.api_keys.iter().map(|k| k.name.as_str()));
        names.extend(self.mtls.iter().map(|m| m.name.as_str()));
        names
    }
}

/// One JWT issuer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtProviderConfig {
    /// Shown in `x-auth-provider`, logs and policies. Never empty.
    #[serde(deserialize_with = "provider_name")]
    pub name: String,
    /// Required value of `iss` (the claim is then required too).
    #[serde(default)]
    pub issuer: Option<String>,
    /// `aud` must contain one of these (the claim is then required too).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Exactly one of `jwks_url`, `jwks_file` and `secret`.
    #[serde(default, deserialize_with = "jwks_url")]
    pub jwks_url: Option<String>,
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// HMAC secret for HS256/384/512.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Accepted `alg` values. Default: HS256/384/512 with a `secret`, every
    /// asymmetric algorithm with a JWKS (each key still only accepts the
    /// algorithms of its own type). `none` is not an algorithm here.
    #[serde(default)]
    pub algorithms: Vec<Algorithm>,
    /// Where the token is: `header` (default), `query` or `cookie`.
    #[serde(default)]
    pub from: TokenLocation,
    /// The header, query parameter or cookie name. Defaults:
    /// `authorization` (with the `Bearer` scheme), `access_token`,
    /// `access_token`.
    #[serde(default)]
    pub param: Option<String>,
    /// Clock skew allowed on `exp` and `nbf` (default 60 s).
    #[serde(default = "default_leeway", deserialize_with = "duration")]
    pub leeway: Duration,
    /// How often a JWKS is fetched again (default 5 min).
    #[serde(default = "default_refresh", deserialize_with = "duration")]
    pub jwks_refresh: Duration,
    /// Minimum time between two fetches caused by unknown `kid`s
    /// (default 30 s), so a flood of made-up `kid`s cannot hammer the issuer.
    #[serde(default = "default_cooldown", deserialize_with = "duration")]
    pub jwks_cooldown: Duration,
}

fn default_leeway() -> Duration {
    Duration::from_secs(60)
}

fn default_refresh() -> Duration {
    Duration::from_secs(300)
}

fn default_cooldown() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenLocation {
    #[default]
    Header,
    Query,
    Cookie,
}

/// `auth.api_keys:`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeysConfig {
    /// Provider name for `x-auth-provider` and policies (default `api_key`).
    #[serde(default = "default_api_key_name")]
    pub name: String,
    /// Header carrying the key (default `x-api-key`).
    #[serde(default = "default_api_key_header", deserialize_with = "api_key_header")]
    pub header: String,
    /// Query parameter carrying the key; keys are not read from the query
    /// unless this is set.
    #[serde(default)]
    pub query: Option<String>,
    pub keys: Vec<ApiKeyConfig>,
}

fn default_api_key_name() -> String {
    "api_key".into()
}

fn default_api_key_header() -> String {
    "x-api-key".into()
}

/// `auth.mtls:` — the verified client certificate of the connection is the
/// credential: its subject's common name (or, without one, the whole
/// subject) is the consumer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MtlsConfig {
    /// Provider name for `x-auth-provider` and policies (default `mtls`).
    #[serde(default = "default_mtls_name", deserialize_with = "provider_name")]
    pub name: String,
}

fn default_mtls_name() -> String {
    "mtls".into()
}

/// One API key: its id and the hex SHA-256 digest of the key itself.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Never empty; unique.
    #[serde(deserialize_with = "api_key_id")]
    pub id: String,
    /// 64 hex digits, either case; unique.
    #[serde(deserialize_with = "api_key_digest")]
    pub sha256: String,
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// A claim forwarded to the backend: `email` (as `x-claim-email`) or
/// `{ claim: email, header: x-user-email }`.
#[derive(Debug, Clone, PartialEq)]
pub enum ForwardClaim {
    Name(String),
    Mapped(MappedClaim),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappedClaim {
    pub claim: String,
    /// A header name the gateway does not use itself (see
    /// [`parse_claim_header`]).
    #[serde(deserialize_with = "claim_header")]
    pub header: String,
}

impl<'de> Deserialize<'de> for ForwardClaim {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ForwardClaim;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a claim name, or a mapping with claim and header")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ForwardClaim, E> {
                Ok(ForwardClaim::Name(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ForwardClaim, A::Error> {
                MappedClaim::deserialize(MapAccessDeserializer::new(map)).map(ForwardClaim::Mapped)
            }
        }
        d.deserialize_any(V)
    }
}

/// The consumer id sent to the backend: JWT `sub` or the API key's id.
pub const X_CONSUMER_ID: HeaderName = HeaderName::from_static("x-consumer-id");
/// The name of the provider that authenticated the request.
pub const X_AUTH_PROVIDER: HeaderName = HeaderName::from_static("x-auth-provider");

impl ForwardClaim {
    /// The claim's name (or dotted path).
    pub fn claim(&self) -> &str {
        match self {
            Self::Name(name) => name,
            Self::Mapped(m) => &m.claim,
        }
    }

    /// The metadata the claim is sent as: `x-claim-NAME`, or the mapped
    /// header lowercased.
    pub fn header(&self) -> Result<HeaderName, String> {
        match self {
            Self::Name(name) => parse_claim_header(&default_claim_header(name)),
            Self::Mapped(m) => parse_claim_header(&m.header),
        }
    }
}

/// `email` → `x-claim-email`; characters a header name cannot hold become
/// `-`.
fn default_claim_header(claim: &str) -> String {
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

/// A header a claim is forwarded as: a header name, and none the gateway
/// sends itself (the caller's identity, the token) or gRPC reserves.
pub fn parse_claim_header(text: &str) -> Result<HeaderName, String> {
    let header = HeaderName::from_bytes(text.to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("{text:?} is not a header name"))?;
    if header == X_CONSUMER_ID || header == X_AUTH_PROVIDER || header == http::header::AUTHORIZATION {
        return Err(format!("a claim cannot be sent as {header}: the gateway sets it"));
    }
    if header.as_str().starts_with("grpc-") {
        return Err(format!("a claim cannot be sent as {header}: grpc-* is reserved by gRPC"));
    }
    Ok(header)
}

/// A `realm` that fits in `WWW-Authenticate: Bearer realm="…"` as is.
pub fn check_realm(realm: &str) -> Result<(), String> {
    if realm.contains(['"', '\\']) || realm.chars().any(|c| !c.is_ascii() || c.is_ascii_control()) {
        return Err(format!(
            "{realm:?} cannot be used in a WWW-Authenticate header: no quotes, backslashes, \
             control or non-ASCII characters"
        ));
    }
    Ok(())
}

/// The 32 bytes of a hex SHA-256 digest (either case, surrounding blanks
/// ignored).
pub fn parse_sha256_digest(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A JWKS URL: `http://` or `https://`.
pub fn check_jwks_url(url: &str) -> Result<(), String> {
    let parsed: http::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    if !matches!(parsed.scheme_str(), Some("http" | "https")) {
        return Err(format!("{url:?} must be http:// or https://"));
    }
    Ok(())
}

/// Every algorithm a provider may accept: HMAC first, then asymmetric.
pub const JWT_ALGORITHMS: &[Algorithm] = &[
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];
pub const HMAC_ALGORITHMS: &[Algorithm] = JWT_ALGORITHMS.split_at(3).0;
pub const ASYMMETRIC_ALGORITHMS: &[Algorithm] = JWT_ALGORITHMS.split_at(3).1;

impl JwtProviderConfig {
    /// The algorithms the provider accepts: `algorithms`, else HS256/384/512
    /// with a `secret` and every asymmetric one with a JWKS.
    pub fn accepted_algorithms(&self) -> Vec<Algorithm> {
        if !self.algorithms.is_empty() {
            self.algorithms.clone()
        } else if self.secret.is_some() {
            HMAC_ALGORITHMS.to_vec()
        } else {
            ASYMMETRIC_ALGORITHMS.to_vec()
        }
    }

    /// Everything that can be wrong with the provider as written (its
    /// secret and JWKS file are read later).
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("name must not be empty".into());
        }
        let sources = [self.jwks_url.is_some(), self.jwks_file.is_some(), self.secret.is_some()];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err("set exactly one of jwks_url, jwks_file and secret".into());
        }
        if let Some(url) = &self.jwks_url {
            check_jwks_url(url).map_err(|p| format!("jwks_url {p}"))?;
        }
        let allowed_family = match (&self.secret, &self.jwks_file) {
            (Some(_), _) => HMAC_ALGORITHMS,
            // A local file may hold `oct` keys; a published JWKS may not.
            (None, Some(_)) => JWT_ALGORITHMS,
            (None, None) => ASYMMETRIC_ALGORITHMS,
        };
        if let Some(bad) = self.accepted_algorithms().iter().find(|a| !allowed_family.contains(a)) {
            return Err(if self.secret.is_some() {
                format!("algorithm {bad:?} needs a public key; a secret only verifies HS256/384/512")
            } else {
                format!("algorithm {bad:?} needs a shared secret; a JWKS URL publishes public keys")
            });
        }
        if let (TokenLocation::Header, Some(name)) = (self.from, &self.param) {
            if HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).is_err() {
                return Err(format!("param {name:?} is not a header name (from: header)"));
            }
        }
        Ok(())
    }
}

/// A provider as a whole, once its mapping is read.
impl Check for JwtProviderConfig {
    fn check(&self) -> Result<(), String> {
        self.validate()
    }
}

impl AuthConfig {
    /// What needs more than one place of the section: provider names are
    /// unique (the API keys' too), and so are API keys. The path is relative
    /// to `auth`.
    pub(super) fn problem(&self) -> Option<Problem> {
        for (index, provider) in self.jwt.iter().enumerate() {
            if let Some(first) = self.jwt[..index].iter().position(|p| p.name == provider.name) {
                return Some(
                    KeyPath::new()
                        .key("jwt")
                        .index(index)
                        .key("name")
                        .problem(format!("provider name {:?} is used by auth.jwt[{first}] too", provider.name)),
                );
            }
        }
        if let Some(mtls) = &self.mtls {
            let others: Vec<&str> =
                self.jwt.iter().map(|p| p.name.as_str()).chain(self.api_keys.iter().map(|k| k.name.as_str())).collect();
            if others.contains(&mtls.name.as_str()) {
                return Some(
                    KeyPath::new()
                        .key("mtls")
                        .key("name")
                        .problem(format!("provider name {:?} is used by another provider too", mtls.name)),
                );
            }
        }
        let keys = self.api_keys.as_ref()?;
        if let Some(first) = self.jwt.iter().position(|p| p.name == keys.name) {
            let default = if keys.name == default_api_key_name() {
                " (the API keys are named api_key unless api_keys.name says otherwise)"
            } else {
                ""
            };
            // At `name` when it is written, else at `api_keys`.
            return Some(
                KeyPath::new()
                    .key("api_keys")
                    .key("name")
                    .problem(format!("provider name {:?} is used by auth.jwt[{first}] too{default}", keys.name)),
            );
        }
        let digests: Vec<Option<[u8; 32]>> = keys.keys.iter().map(|k| parse_sha256_digest(&k.sha256)).collect();
        for (index, key) in keys.keys.iter().enumerate() {
            let at = || KeyPath::new().key("api_keys").key("keys").index(index);
            if let Some(first) = keys.keys[..index].iter().position(|k| k.id == key.id) {
                return Some(at().key("id").problem(format!("key id {:?} is used by keys[{first}] too", key.id)));
            }
            if let Some(first) = digests[..index].iter().position(|d| d.is_some() && *d == digests[index]) {
                return Some(at().key("sha256").problem(format!("key {:?} is the same key as keys[{first}]", key.id)));
            }
        }
        None
    }
}

fn realm<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    check::opt_str_rule(d, check_realm)
}

fn provider_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    check::str_rule(d, |name| if name.is_empty() { Err("must not be empty".into()) } else { Ok(()) })
}

fn jwks_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    check::opt_str_rule(d, check_jwks_url)
}

fn api_key_header<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    check::str_rule(d, |header| match HeaderName::from_bytes(header.to_ascii_lowercase().as_bytes()) {
        Ok(_) => Ok(()),
        Err(_) => Err(format!("{header:?} is not a header name")),
    })
}

fn api_key_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    check::str_rule(d, |id| if id.is_empty() { Err("must not be empty: every key needs an id".into()) } else { Ok(()) })
}

fn api_key_digest<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    check::str_rule(d, |text| match parse_sha256_digest(text) {
        Some(_) => Ok(()),
        None => Err("must be 64 hex digits (the SHA-256 of the key, never the key itself)".into()),
    })
}

fn claim_header<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    check::str_rule(d, |text| parse_claim_header(text).map(|_| ()))
}

/// `policies:` — ordered rules, the first that selects a route decides.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoliciesConfig {
    /// For routes no rule selects. Default: `authenticated` when any auth
    /// provider is configured, `public` otherwise.
    #[serde(default)]
    pub default: Option<Access>,
    #[serde(default, deserialize_with = "check::checked_list")]
    pub rules: Vec<PolicyRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Public,
    Authenticated,
}

/// One rule: a selector (every field that is set must match; none set
/// matches every route) and what the selected routes require.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    /// Shown by `protogate routes` (default `rule N`, counting from 1).
    #[serde(default)]
    pub name: Option<String>,
    /// Compared, segment by segment, with the route's path template.
    #[serde(default, deserialize_with = "path_prefix")]
    pub path_prefix: Option<String>,
    /// Fully-qualified gRPC service.
    #[serde(default)]
    pub service: Option<String>,
    /// `package.Service/Method`.
    #[serde(default, deserialize_with = "method")]
    pub method: Option<String>,
    /// Any case (`get` is `GET`).
    #[serde(default, deserialize_with = "http_method")]
    pub http_method: Option<String>,
    /// URL version prefix (`v1`, `v2beta1`).
    #[serde(default)]
    pub version: Option<String>,
    /// A composition's name: selects that composition's route only.
    #[serde(default, deserialize_with = "composition")]
    pub composition: Option<String>,
    /// Default: `authenticated`.
    #[serde(default)]
    pub allow: Option<Access>,
    /// Only these providers' credentials are accepted (default: any).
    #[serde(default)]
    pub providers: Vec<String>,
    /// Every one of these scopes is required.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Claim name (or dotted path) → required value, or a list of values
    /// of which one is required.
    #[serde(default)]
    pub claims: BTreeMap<String, serde_json::Value>,
}

impl PolicyRule {
    /// `name`, or `rule N` (N from 1) for the rule at `index`.
    pub fn name_or_default(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| format!("rule {}", index + 1))
    }

    /// `allow`, `authenticated` when not given.
    pub fn access(&self) -> Access {
        self.allow.unwrap_or(Access::Authenticated)
    }

    /// Whether the rule asks more of a caller than being authenticated.
    pub fn is_constrained(&self) -> bool {
        !self.providers.is_empty() || !self.scopes.is_empty() || !self.claims.is_empty()
    }

    /// `problem`, prefixed with the rule's name when it has one.
    fn named(&self, problem: String) -> String {
        match &self.name {
            Some(name) => format!("rule {name:?}: {problem}"),
            None => problem,
        }
    }
}

/// What is wrong with a rule on its own, as a whole (its values are checked
/// as they are read; its providers against `auth` once the file is read).
impl Check for PolicyRule {
    fn check(&self) -> Result<(), String> {
        check_method_in_service(self.service.as_deref(), self.method.as_deref()).map_err(|p| self.named(p))?;
        if self.access() == Access::Public && self.is_constrained() {
            return Err(self.named("a public rule cannot require providers, scopes or claims".into()));
        }
        Ok(())
    }
}

impl PoliciesConfig {
    /// What needs `auth` as well: an `authenticated` default or rule needs
    /// a provider, and a rule's providers must be configured ones. The path
    /// is relative to `policies`.
    pub(super) fn problem(&self, auth: &AuthConfig) -> Option<Problem> {
        let names = auth.provider_names();
        if self.default == Some(Access::Authenticated) && names.is_empty() {
            return Some(
                KeyPath::new()
                    .key("default")
                    .problem("authenticated, but auth configures no provider (auth.jwt or auth.api_keys)"),
            );
        }
        for (index, rule) in self.rules.iter().enumerate() {
            let at = || KeyPath::new().key("rules").index(index);
            if rule.access() != Access::Authenticated {
                continue;
            }
            let name = rule.name_or_default(index);
            if names.is_empty() {
                // At `allow` when it is written, else at the rule.
                return Some(at().key("allow").problem(format!(
                    "rule {name:?} requires authentication, but auth configures no provider \
                     (auth.jwt or auth.api_keys); public routes need `allow: public`"
                )));
            }
            for (k, provider) in rule.providers.iter().enumerate() {
                if !names.contains(&provider.as_str()) {
                    return Some(at().key("providers").index(k).problem(format!(
                        "rule {name:?}: unknown provider {provider:?}; auth configures {}",
                        names.join(", ")
                    )));
                }
            }
        }
        None
    }
}

fn path_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    check::opt_str_rule(d, check_path_prefix)
}

fn composition<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    check::opt_str_rule(d, super::selector::check_composition)
}

fn method<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    check::opt_str_rule(d, check_method)
}

fn http_method<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    check::opt_str_rule(d, |text| match http::Method::from_bytes(text.to_ascii_uppercase().as_bytes()) {
        Ok(_) => Ok(()),
        Err(_) => Err(format!("{text:?} is not an HTTP method")),
    })
}

/// A duration as whole seconds (`60`) or with a unit (`500ms`, `60s`,
/// `5m`, `1h`).
fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(u64),
        Text(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Seconds(s) => Ok(Duration::from_secs(s)),
        Raw::Text(text) => parse_duration(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("invalid duration {text:?} (expected e.g. 60, 500ms, 60s, 5m, 1h)"))
        }),
    }
}

pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_auth_section_parses() {
        let yaml = r#"
jwt:
  - name: corp
    issuer: https://issuer.example
    audiences: [api]
    jwks_url: https://issuer.example/.well-known/jwks.json
    algorithms: [RS256, ES256]
    leeway: 30s
    jwks_refresh: 10m
  - name: local
    secret: { env: LOCAL_JWT_SECRET }
    from: cookie
    param: session
api_keys:
  header: x-key
  query: key
  keys:
    - id: batch
      sha256: 2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae
      scopes: [read]
forward_claims: [email, { claim: groups, header: x-groups }]
forward_token: true
"#;
        let auth: AuthConfig = serde_yaml_ng::from_str(yaml).expect("parses");
        assert_eq!(auth.jwt.len(), 2);
        assert_eq!(auth.jwt[0].leeway, Duration::from_secs(30));
        assert_eq!(auth.jwt[0].jwks_refresh, Duration::from_secs(600));
        assert_eq!(auth.jwt[0].jwks_cooldown, Duration::from_secs(30));
        assert_eq!(auth.jwt[0].algorithms, vec![Algorithm::RS256, Algorithm::ES256]);
        assert_eq!(auth.jwt[1].from, TokenLocation::Cookie);
        assert_eq!(auth.jwt[1].leeway, Duration::from_secs(60));
        assert_eq!(auth.jwt[1].secret, Some(Secret::Env("LOCAL_JWT_SECRET".into())));
        let keys = auth.api_keys.as_ref().expect("api keys");
        assert_eq!(keys.name, "api_key");
        assert_eq!(keys.query.as_deref(), Some("key"));
        assert_eq!(
            auth.forward_claims[1],
            ForwardClaim::Mapped(MappedClaim { claim: "groups".into(), header: "x-groups".into() })
        );
        assert!(auth.forwards_token());
    }

    #[test]
    fn unknown_keys_and_alg_none_are_rejected() {
        let typo = "jwt:\n  - name: a\n    secret: { env: X }\n    issuers: [x]\n";
        assert!(serde_yaml_ng::from_str::<AuthConfig>(typo).is_err());
        let none = "jwt:\n  - name: a\n    secret: { env: X }\n    algorithms: [none]\n";
        assert!(serde_yaml_ng::from_str::<AuthConfig>(none).is_err());
        let bad_secret = "jwt:\n  - name: a\n    secret: { env: X, file: y }\n";
        assert!(serde_yaml_ng::from_str::<AuthConfig>(bad_secret).is_err());
    }

    #[test]
    fn forward_token_defaults_follow_whether_auth_is_on() {
        assert!(AuthConfig::default().forwards_token());
        let on: AuthConfig = serde_yaml_ng::from_str("api_keys: { keys: [] }").expect("parses");
        assert!(!on.forwards_token());
    }

    #[test]
    fn policies_parse() {
        let yaml = r#"
default: public
rules:
  - name: admin
    path_prefix: /v1/admin
    http_method: DELETE
    providers: [corp]
    scopes: [admin]
    claims: { role: admin, tenant: [a, b] }
  - service: acme.health.v1.Health
    allow: public
"#;
        let p: PoliciesConfig = serde_yaml_ng::from_str(yaml).expect("parses");
        assert_eq!(p.default, Some(Access::Public));
        assert_eq!(p.rules.len(), 2);
        assert_eq!(p.rules[1].allow, Some(Access::Public));
        assert_eq!(p.rules[0].claims.len(), 2);
        assert!(serde_yaml_ng::from_str::<PoliciesConfig>("default: open").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        for bad in ["", "s", "1.5s", "-1s", "3d"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }
}
