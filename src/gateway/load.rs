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
use crate::ratelimit::rule::{self, RuleSet};
use crate::upstream::Upstreams;

/// How long one round of reflection calls may take.
pub const REFLECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The features' rules, compiled from config once: a reload re-resolves
/// them against the new routes but never re-reads or re-checks them.
pub struct Features {
    pub auth: Arc<Authenticator>,
    pub policies: PolicySet,
    pub limits: RuleSet,
}

impl Features {
    /// Every problem of `auth`, `policies` and `rate_limits` at once.
    pub fn compile(config: &Config) -> Result<Self, LoadError> {
        let mut problems = Vec::new();
        // Secrets and JWKS files are read here (URLs are fetched later, by
        // `Authenticator::start`).
        let auth = Authenticator::new(&config.auth).map_err(|err| problems.push(err.to_string())).ok();
        let policies =
            PolicySet::new(&config.policies, &config.auth).map_err(|err| problems.push(err.to_string())).ok();
        let limits = rule::compile(&config.rate_limits).map_err(|errors| problems.extend(errors)).ok();
        match (auth, policies, limits) {
            (Some(auth), Some(policies), Some(limits)) if problems.is_empty() => {
                Ok(Self { auth: Arc::new(auth), policies, limits: RuleSet(limits) })
            }
            _ => Err(LoadError { problems }),
        }
    }

    fn resolvers(&self) -> [&dyn RouteResolver; 2] {
        [&self.policies, &self.limits]
    }
}

/// Everything a catalog is built from, except the descriptor files.
#[derive(Clone)]
pub struct Loader {
    pub config: Arc<Config>,
    pub upstreams: Upstreams,
    pub features: Arc<Features>,
}

impl Loader {
    /// Checks what the config alone can be wrong about. Must run inside a
    /// tokio runtime (upstream channels spawn their workers).
    pub fn new(config: Arc<Config>) -> Result<Self, LoadError> {
        let upstreams = Upstreams::new(&config)?;
        let features = Arc::new(Features::compile(&config)?);
        Ok(Self { config, upstreams, features })
    }

    /// The catalog of the descriptor folder plus `reflected`.
    pub fn build(&self, reflected: &[Reflected]) -> Result<Catalog, LoadError> {
        catalog::load(&self.config, &self.upstreams, reflected, &self.features.resolvers())
    }

    /// Asks every reflection source for its files, concurrently: the files
    /// of those that answered, and what went wrong with the others.
    pub async fn reflect(&self) -> (Vec<Reflected>, Vec<String>) {
        let calls = self.upstreams.reflection_sources().iter().map(|(url, upstream)| async move {
            (url.clone(), reflection::fetch(url, upstream.channel(), REFLECTION_TIMEOUT).await)
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
