//! The one load sequence, shared by `serve` (first load and every reload),
//! `check` and `routes`: config → upstreams and the features' compiled
//! rules (once per gateway) → descriptors (folder + reflection) → catalog,
//! each feature attaching its per-route data through its resolver. What
//! `check` accepts is exactly what `serve` serves.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::policy::PolicySet;
use crate::auth::Authenticator;
use crate::catalog::{self, Catalog, LoadError, Reflected, RouteResolver};
use crate::config::Config;
use crate::descriptors::reflection;
use crate::http::cors::CorsRules;
use crate::ratelimit::rule::{self, RuleSet};
use crate::tls::ServerTls;
use crate::upstream::cluster::{Resolve, SystemResolver};
use crate::upstream::Upstreams;

/// How long one round of reflection calls may take.
pub const REFLECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The features' rules, compiled from config once: a reload re-resolves
/// them against the new routes but never re-reads or re-checks them.
pub struct Features {
    pub auth: Arc<Authenticator>,
    pub policies: PolicySet,
    pub limits: RuleSet,
    /// `None` when `cors` is not configured.
    pub cors: Option<Arc<CorsRules>>,
}

impl Features {
    /// Every problem of `auth`, `policies`, `rate_limits` and `cors` at once.
    pub fn compile(config: &Config) -> Result<Self, LoadError> {
        let mut problems = Vec::new();
        // Secrets and JWKS files are read here (URLs are fetched later, by
        // `Authenticator::start`).
        let auth = Authenticator::new(&config.auth).map_err(|err| problems.push(err.to_string())).ok();
        let policies =
            PolicySet::new(&config.policies, &config.auth).map_err(|err| problems.push(err.to_string())).ok();
        let limits = rule::compile(&config.rate_limits).map_err(|errors| problems.extend(errors)).ok();
        let cors = match &config.cors {
            None => Some(None),
            Some(cors) => {
                CorsRules::compile(cors).map(|rules| Some(Arc::new(rules))).map_err(|e| problems.extend(e)).ok()
            }
        };
        match (auth, policies, limits, cors) {
            (Some(auth), Some(policies), Some(limits), Some(cors)) if problems.is_empty() => {
                Ok(Self { auth: Arc::new(auth), policies, limits: RuleSet(limits), cors })
            }
            _ => Err(LoadError { problems }),
        }
    }

    fn resolvers(&self) -> Vec<&dyn RouteResolver> {
        let mut resolvers: Vec<&dyn RouteResolver> = vec![&self.policies, &self.limits];
        if let Some(cors) = &self.cors {
            resolvers.push(&**cors);
        }
        resolvers
    }
}

/// Everything a catalog is built from, except the descriptor files.
#[derive(Clone)]
pub struct Loader {
    pub config: Arc<Config>,
    pub upstreams: Upstreams,
    pub features: Arc<Features>,
    /// The listener's TLS (`tls`), its files read and checked.
    pub tls: Option<Arc<ServerTls>>,
}

impl Loader {
    /// Checks what the config alone can be wrong about. Must run inside a
    /// tokio runtime (upstream channels spawn their workers).
    pub fn new(config: Arc<Config>) -> Result<Self, LoadError> {
        Self::with_resolver(config, Arc::new(SystemResolver))
    }

    /// [`Loader::new`], with upstream names resolved by `resolver`.
    pub fn with_resolver(config: Arc<Config>, resolver: Arc<dyn Resolve>) -> Result<Self, LoadError> {
        let tls = config
            .tls
            .as_ref()
            .map(crate::tls::server)
            .transpose()
            .map_err(|err| LoadError { problems: vec![format!("tls: {err}")] })?;
        let upstreams = Upstreams::with_resolver(&config, resolver)?;
        let features = Arc::new(Features::compile(&config)?);
        Ok(Self { config, upstreams, features, tls: tls.map(Arc::new) })
    }

    /// The catalog of the descriptor folder plus `reflected`.
    pub fn build(&self, reflected: &[Reflected]) -> Result<Catalog, LoadError> {
        catalog::load(&self.config, &self.upstreams, reflected, &self.features.resolvers())
    }

    /// Asks every reflection source for its files, concurrently: the files
    /// of those that answered, and what went wrong with the others.
    pub async fn reflect(&self) -> (Vec<Reflected>, Vec<String>) {
        let calls = self.upstreams.reflection_sources().iter().map(|(url, upstream)| async move {
            let fetched = match upstream.connection() {
                Some(connection) => reflection::fetch(url, connection, REFLECTION_TIMEOUT).await,
                None => Err(reflection::ReflectionError {
                    upstream: url.clone(),
                    problem: reflection::Problem::Call("no endpoint (its name did not resolve)".into()),
                }),
            };
            (url.clone(), fetched)
        });
        let mut files = Vec::new();
        let mut problems = Vec::new();
        for (url, result) in futures_util::future::join_all(calls).await {
            match result {
                Ok(reflected) => files.push((url, reflected)),
                Err(err) => problems.push(err.to_string()),
            }
        }
        (files, problems)
    }

    /// `check` and `routes`: reflection included, a source that does not
    /// answer is a problem like any other.
    pub async fn inspect(config: Config) -> Result<Catalog, LoadError> {
        let loader = Self::new(Arc::new(config))?;
        let (reflected, problems) = loader.reflect().await;
        if !problems.is_empty() {
            return Err(LoadError { problems });
        }
        loader.build(&reflected)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::auth::policy::RoutePolicy;
    use crate::ratelimit::rule::RouteLimits;

    const ADMIN_PROTO: &str = r#"
syntax = "proto3";
package acme.admin.v1;
import "google/api/annotations.proto";

service Admin {
  rpc Purge(Empty) returns (Empty) { option (google.api.http) = { post: "/v1/admin/purge" }; }
  rpc ListAdministrators(Empty) returns (Empty) { option (google.api.http) = { get: "/v1/administrators" }; }
}
message Empty {}
"#;

    /// One selector everywhere: a rate-limit rule, a route override and a
    /// policy with `path_prefix: /v1/admin` select `/v1/admin/purge` but
    /// not `/v1/administrators`.
    #[tokio::test]
    async fn path_prefix_selects_whole_segments_for_every_feature() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("admin.proto"), ADMIN_PROTO).expect("write proto");
        let yaml = format!(
            r#"
descriptors: {{ path: {path} }}
upstreams: {{ "*": "http://127.0.0.1:1" }}
routes:
  timeout: 5s
  overrides:
    - match: {{ path_prefix: /v1/admin }}
      timeout: 1s
auth:
  api_keys:
    keys:
      - {{ id: ops, sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 }}
policies:
  default: public
  rules:
    - name: admins
      path_prefix: /v1/admin
      allow: authenticated
rate_limits:
  rules:
    - name: admin
      match: {{ path_prefix: /v1/admin }}
      key: ip
      rate: 10/s
"#,
            path = dir.path().display()
        );
        let config = crate::config::from_yaml(&yaml, Path::new("test.yaml")).expect("config");
        let catalog = Loader::inspect(config).await.expect("catalog");
        let route = |path: &str| {
            catalog
                .routes
                .iter()
                .find(|r| r.template.to_string() == path)
                .unwrap_or_else(|| panic!("no route {path}"))
                .clone()
        };
        let purge = route("/v1/admin/purge");
        let others = route("/v1/administrators");

        assert_eq!(purge.timeout, Duration::from_secs(1));
        assert_eq!(others.timeout, Duration::from_secs(5));

        assert!(purge.extensions.get::<RouteLimits>().is_some());
        assert!(others.extensions.get::<RouteLimits>().is_none());

        let policy = |r: &crate::catalog::Route| r.extensions.get::<Arc<RoutePolicy>>().expect("policy").source.clone();
        assert_eq!(policy(&purge), "admins");
        assert_eq!(policy(&others), "default");
    }
}
