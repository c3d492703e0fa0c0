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

use jsonwebtoken::Algorithm;
use serde::{Deserialize, Deserializer};

use super::check::{self, Check, KeyPath, Problem};
use super::secret::Secret;
use super::selector::{check_method, check_method_in_service, check_path_prefix};

/// `auth:` — who may call, and what the backend learns about them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// JWT providers, tried in this order.
    #[serde(default)]
    pub jwt: Vec<JwtProviderConfig>,
    /// API keys, looked for after every JWT provider.
    #[serde(default)]
    pub api_keys: Option<ApiKeysConfig>,
    /// Claims sent to the backend as metadata.
    #[serde(default)]
    pub forward_claims: Vec<ForwardClaim>,
    /// Whether the client's `authorization` header reaches the backend.
    /// Default: `false` when a provider is configured (the gateway is the
    /// security layer), `true` otherwise (the backend may do its own auth).
    #[serde(default)]
    pub forward_token: Option<bool>,
    /// The `realm` of `WWW-Authenticate` challenges (default `protogate`).
    #[serde(default)]
    pub realm: Option<String>,
}

impl AuthConfig {
    /// Whether any credential can be accepted at all.
    pub fn has_providers(&self) -> bool {
        !self.jwt.is_empty() || self.api_keys.is_some()
    }

    pub fn forwards_token(&self) -> bool {
        self.forward_token.unwrap_or(!self.has_providers())
    }

    /// The names policies may list: every JWT provider's, then the API
    /// keys'.
    pub fn provider_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.jwt.iter().map(|p| p.name.as_str()).collect();
        names.extend(self.api_keys.iter().map(|k| k.name.as_str()));
        names
    }
}

/// One JWT issuer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtProviderConfig {
    /// Shown in `x-auth-provider`, logs and policies.
    pub name: String,
    /// Required value of `iss` (the claim is then required too).
    #[serde(default)]
    pub issuer: Option<String>,
    /// `aud` must contain one of these (the claim is then required too).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Exactly one of `jwks_url`, `jwks_file` and `secret`.
    #[serde(default)]
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
    #[serde(default = "default_api_key_header")]
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

/// One API key: its id and the hex SHA-256 digest of the key itself.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub id: String,
    pub sha256: String,
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// A claim forwarded to the backend: `email` (as `x-claim-email`) or
/// `{ claim: email, header: x-user-email }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ForwardClaim {
    Name(String),
    Mapped(MappedClaim),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappedClaim {
    pub claim: String,
    pub header: String,
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
