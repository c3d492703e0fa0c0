//! Authorization: which routes need what. The `policies` rules are matched
//! against every route once, when the catalog is built, so each route
//! carries its resolved [`RoutePolicy`]; a request only checks its
//! identity against it.

use std::fmt;
use std::sync::Arc;

use http::Method;
use serde_json::Value;

use crate::catalog::{Route, RouteResolver};
use crate::config::auth::{Access, AuthConfig, PoliciesConfig, PolicyRule};
use crate::config::{RouteFacts, RouteSelector};
use crate::http::Identity;

/// What a route requires, resolved at catalog build.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutePolicy {
    /// `default` or the rule's name (`rule N` when unnamed).
    pub source: String,
    pub requirement: Requirement,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Requirement {
    Public,
    Authenticated {
        /// Accepted providers; empty accepts any.
        providers: Vec<String>,
        /// All required.
        scopes: Vec<String>,
        /// All required.
        claims: Vec<ClaimRequirement>,
    },
}

/// A claim that must hold one of `accepted` (or, when the claim is an
/// array, contain one of them).
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimRequirement {
    pub name: String,
    pub accepted: Vec<Value>,
}

/// Why a valid identity may not call a route (→ 403).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    Provider,
    /// The missing scopes, for the `scope` of the challenge.
    Scope(String),
    Claim(String),
}

impl Denial {
    pub fn message(&self) -> String {
        match self {
            Self::Provider => "this route does not accept credentials of this kind".into(),
            Self::Scope(missing) => format!("insufficient scope: requires {missing}"),
            Self::Claim(name) => format!("the token's {name:?} claim does not allow this route"),
        }
    }
}

impl RoutePolicy {
    pub fn public() -> Self {
        Self { source: "default".into(), requirement: Requirement::Public }
    }

    pub fn is_public(&self) -> bool {
        self.requirement == Requirement::Public
    }

    /// Whether `identity` satisfies an `authenticated` requirement.
    pub fn check(&self, identity: &Identity) -> Result<(), Denial> {
        let Requirement::Authenticated { providers, scopes, claims } = &self.requirement else {
            return Ok(());
        };
        if !providers.is_empty() && !providers.contains(&identity.provider) {
            return Err(Denial::Provider);
        }
        let missing: Vec<&str> = scopes.iter().filter(|s| !identity.scopes.contains(s)).map(String::as_str).collect();
        if !missing.is_empty() {
            return Err(Denial::Scope(missing.join(" ")));
        }
        for claim in claims {
            if !claim_holds(identity, claim) {
                return Err(Denial::Claim(claim.name.clone()));
            }
        }
        Ok(())
    }
}

fn claim_holds(identity: &Identity, requirement: &ClaimRequirement) -> bool {
    let Some(value) = claim(&identity.claims, &requirement.name) else {
        return false;
    };
    match value {
        Value::Array(items) => items.iter().any(|v| requirement.accepted.contains(v)),
        other => requirement.accepted.contains(other),
    }
}

/// A claim by its exact name, or else by a dotted path into nested objects
/// (`realm_access.roles`).
fn claim<'a>(claims: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    let mut parts = name.split('.');
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

impl fmt::Display for RoutePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.requirement {
            Requirement::Public => f.write_str("public")?,
            Requirement::Authenticated { providers, scopes, claims } => {
                f.write_str("authenticated")?;
                if !providers.is_empty() {
                    write!(f, " by {}", providers.join("|"))?;
                }
                if !scopes.is_empty() {
                    write!(f, " scopes={}", scopes.join(","))?;
                }
                if !claims.is_empty() {
                    let names: Vec<&str> = claims.iter().map(|c| c.name.as_str()).collect();
                    write!(f, " claims={}", names.join(","))?;
                }
            }
        }
        write!(f, " ({})", self.source)
    }
}

/// A policy that cannot be used. The config file's checks refuse all of
/// these with key and line first; this guards configs built in code.
#[derive(Debug, thiserror::Error)]
#[error("{at}: {reason}")]
pub struct PolicyError {
    /// `policies.default`, or `policies.rules[N] (name)`.
    pub at: String,
    pub reason: String,
}

/// The rules of `policies`, ready to resolve routes.
#[derive(Debug, Clone)]
pub struct PolicySet {
    rules: Vec<(RouteSelector, Arc<RoutePolicy>)>,
    default: Arc<RoutePolicy>,
}

impl PolicySet {
    pub fn new(policies: &PoliciesConfig, auth: &AuthConfig) -> Result<Self, PolicyError> {
        let provider_names = auth.provider_names();
        let has_providers = auth.has_providers();
        let default_access =
            policies.default.unwrap_or(if has_providers { Access::Authenticated } else { Access::Public });
        if default_access == Access::Authenticated && !has_providers {
            return Err(PolicyError {
                at: "policies.default".into(),
                reason: "authenticated, but auth configures no provider".into(),
            });
        }
        let default = Arc::new(RoutePolicy {
            source: "default".into(),
            requirement: match default_access {
                Access::Public => Requirement::Public,
                Access::Authenticated => {
                    Requirement::Authenticated { providers: Vec::new(), scopes: Vec::new(), claims: Vec::new() }
                }
            },
        });
        let mut rules = Vec::with_capacity(policies.rules.len());
        for (index, rule) in policies.rules.iter().enumerate() {
            let name = rule.name_or_default(index);
            let fail = |reason: String| PolicyError { at: format!("policies.rules[{index}] ({name})"), reason };
            let selector = selector(rule).map_err(fail)?;
            let requirement = requirement(rule, &provider_names, has_providers).map_err(fail)?;
            rules.push((selector, Arc::new(RoutePolicy { source: name.clone(), requirement })));
        }
        Ok(Self { rules, default })
    }

    /// The first rule that selects the route, else the default.
    pub fn resolve(&self, route: &RouteFacts<'_>) -> Arc<RoutePolicy> {
        self.rules
            .iter()
            .find(|(selector, _)| selector.selects(route))
            .map_or_else(|| self.default.clone(), |(_, policy)| policy.clone())
    }
}

/// Attaches each route's policy to its extension slot, where the auth
/// layer reads it: `Arc<RoutePolicy>`.
impl RouteResolver for PolicySet {
    fn attach(&self, _route: &Route, facts: &RouteFacts<'_>, slot: &mut http::Extensions) -> Result<(), String> {
        slot.insert(self.resolve(facts));
        Ok(())
    }
}

fn selector(rule: &PolicyRule) -> Result<RouteSelector, String> {
    let http_method = match &rule.http_method {
        None => None,
        Some(text) => Some(
            Method::from_bytes(text.to_ascii_uppercase().as_bytes())
                .map_err(|_| format!("http_method {text:?} is not an HTTP method"))?,
        ),
    };
    let selector = RouteSelector {
        path_prefix: rule.path_prefix.clone(),
        service: rule.service.clone(),
        method: rule.method.clone(),
        http_method,
        version: rule.version.clone(),
        composition: rule.composition.clone(),
    };
    match selector.problem() {
        Some(problem) => Err(problem),
        None => Ok(selector),
    }
}

fn requirement(rule: &PolicyRule, provider_names: &[&str], has_providers: bool) -> Result<Requirement, String> {
    match rule.access() {
        Access::Public if rule.is_constrained() => {
            Err("a public rule cannot require providers, scopes or claims".into())
        }
        Access::Public => Ok(Requirement::Public),
        Access::Authenticated => {
            if !has_providers {
                return Err("requires authentication but auth configures no provider".into());
            }
            if let Some(unknown) = rule.providers.iter().find(|p| !provider_names.contains(&p.as_str())) {
                return Err(format!("unknown provider {unknown:?}"));
            }
            let claims = rule
                .claims
                .iter()
                .map(|(name, value)| ClaimRequirement {
                    name: name.clone(),
                    accepted: match value {
                        Value::Array(items) => items.clone(),
                        other => vec![other.clone()],
                    },
                })
                .collect();
            Ok(Requirement::Authenticated { providers: rule.providers.clone(), scopes: rule.scopes.clone(), claims })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn auth() -> AuthConfig {
        serde_yaml_ng::from_str("jwt: [{ name: corp, secret: { env: X } }]\napi_keys: { keys: [] }").expect("auth")
    }

    fn set(yaml: &str) -> PolicySet {
        let policies: PoliciesConfig = serde_yaml_ng::from_str(yaml).expect("policies");
        PolicySet::new(&policies, &auth()).expect("valid")
    }

    fn facts<'a>(method: &'a Method, template: &'a str, grpc: &'a str) -> RouteFacts<'a> {
        RouteFacts { http_method: method, template, grpc_method: grpc, version: None, composition: None }
    }

    fn identity(provider: &str, scopes: &[&str], claims: Value) -> Identity {
        Identity {
            consumer: "alice".into(),
            provider: provider.into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            claims: claims.as_object().cloned().unwrap_or_default(),
            token: None,
        }
    }

    const RULES: &str = r#"
rules:
  - name: health
    service: acme.health.v1.Health
    allow: public
  - name: admin-delete
    path_prefix: /v1/admin
    http_method: delete
    scopes: [admin]
  - name: admin
    path_prefix: /v1/admin
    providers: [corp]
  - name: v2-reads
    version: v2
    http_method: GET
    allow: public
"#;

    #[test]
    fn first_selecting_rule_wins_and_default_is_authenticated() {
        let set = set(RULES);
        let get = Method::GET;
        let delete = Method::DELETE;
        let src = |f: RouteFacts<'_>| set.resolve(&f).source.clone();
        assert_eq!(src(facts(&get, "/health", "acme.health.v1.Health/Check")), "health");
        assert_eq!(src(facts(&delete, "/v1/admin/users/{id}", "a.Admin/Del")), "admin-delete");
        assert_eq!(src(facts(&get, "/v1/admin/users/{id}", "a.Admin/Get")), "admin");
        assert_eq!(src(facts(&get, "/v1/admin", "a.Admin/Root")), "admin");
        // Segment boundary: not a prefix of /v1/administrators.
        let other = set.resolve(&facts(&get, "/v1/administrators", "a.X/Y"));
        assert_eq!(other.source, "default");
        assert!(!other.is_public());
        let v2 = RouteFacts { version: Some("v2"), ..facts(&get, "/v2/users/{id}", "a.U/Get") };
        assert_eq!(set.resolve(&v2).source, "v2-reads");
        let v2_post = RouteFacts { version: Some("v2"), ..facts(&Method::POST, "/v2/users", "a.U/Create") };
        assert_eq!(set.resolve(&v2_post).source, "default");
    }

    #[test]
    fn defaults_without_auth_are_public() {
        let p = PolicySet::new(&PoliciesConfig::default(), &AuthConfig::default()).expect("ok");
        assert!(p.resolve(&facts(&Method::GET, "/x", "a.B/C")).is_public());
        let explicit: PoliciesConfig = serde_yaml_ng::from_str("default: public").expect("p");
        let p = PolicySet::new(&explicit, &auth()).expect("ok");
        assert!(p.resolve(&facts(&Method::GET, "/x", "a.B/C")).is_public());
    }

    #[test]
    fn invalid_rules_are_load_errors() {
        // What the rules alone show is refused while they are read (with
        // key and line, see config::tests)...
        for yaml in [
            "rules: [{ allow: public, scopes: [a] }]",
            "rules: [{ method: NoSlash }]",
            "rules: [{ path_prefix: v1 }]",
            "rules: [{ http_method: \"GE T\" }]",
        ] {
            assert!(serde_yaml_ng::from_str::<PoliciesConfig>(yaml).is_err(), "{yaml}");
        }
        let built = PoliciesConfig {
            default: None,
            rules: vec![PolicyRule { path_prefix: Some("v1".into()), ..PolicyRule::default() }],
        };
        assert!(PolicySet::new(&built, &auth()).is_err());
        // ...and what needs `auth` as well is refused here too.
        let unknown: PoliciesConfig = serde_yaml_ng::from_str("rules: [{ providers: [nobody] }]").expect("p");
        let err = PolicySet::new(&unknown, &auth()).expect_err("unknown provider");
        assert_eq!(err.to_string(), "policies.rules[0] (rule 1): unknown provider \"nobody\"");
        let no_auth: PoliciesConfig = serde_yaml_ng::from_str("default: authenticated").expect("p");
        let err = PolicySet::new(&no_auth, &AuthConfig::default()).expect_err("no provider");
        assert!(err.to_string().starts_with("policies.default: "), "{err}");
    }

    #[test]
    fn providers_scopes_and_claims_are_checked() {
        let policies: PoliciesConfig = serde_yaml_ng::from_str(
            r#"
rules:
  - providers: [corp]
    scopes: [read, write]
    claims: { role: [admin, owner], "realm.tier": gold, verified: true }
"#,
        )
        .expect("parses");
        let set = PolicySet::new(&policies, &auth()).expect("valid");
        let policy = set.resolve(&facts(&Method::GET, "/x", "a.B/C"));
        let good = json!({"role": "owner", "realm": {"tier": "gold"}, "verified": true});
        assert_eq!(policy.check(&identity("corp", &["read", "write", "x"], good.clone())), Ok(()));
        assert_eq!(policy.check(&identity("api_key", &["read", "write"], good.clone())), Err(Denial::Provider));
        assert_eq!(policy.check(&identity("corp", &["read"], good)), Err(Denial::Scope("write".into())));
        let array_role = json!({"role": ["user", "admin"], "realm": {"tier": "gold"}, "verified": true});
        assert_eq!(policy.check(&identity("corp", &["read", "write"], array_role)), Ok(()));
        for bad in [
            json!({"role": "user", "realm": {"tier": "gold"}, "verified": true}),
            json!({"role": "admin", "realm": {"tier": "silver"}, "verified": true}),
            json!({"role": "admin", "realm": {"tier": "gold"}, "verified": "true"}),
            json!({"realm": {"tier": "gold"}, "verified": true}),
        ] {
            assert!(
                matches!(policy.check(&identity("corp", &["read", "write"], bad.clone())), Err(Denial::Claim(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn display_for_the_route_table() {
        let set = set(RULES);
        let admin = set.resolve(&facts(&Method::GET, "/v1/admin/x", "a.B/C"));
        assert_eq!(admin.to_string(), "authenticated by corp (admin)");
        let delete = set.resolve(&facts(&Method::DELETE, "/v1/admin/x", "a.B/C"));
        assert_eq!(delete.to_string(), "authenticated scopes=admin (admin-delete)");
        assert_eq!(RoutePolicy::public().to_string(), "public (default)");
    }
}
