//! Rules compiled from config, and the limits of each route resolved from
//! them once, when the catalog is built: a request only reads its route's
//! [`RouteLimits`], it never matches selectors.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use http::HeaderValue;

use super::gcra::Gcra;
use crate::catalog::{Route, RouteResolver};
pub use crate::config::rate_limits::KeyPart;
use crate::config::rate_limits::{Backend, Rate, RateLimitsConfig, RuleMatch};
use crate::config::{RouteFacts, RouteSelector};

/// A rule ready to decide.
pub struct Rule {
    /// Position in the file; separates the buckets of different rules in
    /// the local store.
    pub id: u64,
    /// Shared: it is the rule's label in metrics too.
    pub name: Arc<str>,
    selector: RouteSelector,
    pub parts: Box<[KeyPart]>,
    pub rate: Rate,
    pub gcra: Gcra,
    cost: u32,
    route_costs: Vec<(RouteSelector, u32)>,
    pub backend: Backend,
    /// `100;w=1;burst=20` (draft-ietf-httpapi-ratelimit-headers).
    pub policy: String,
    /// `RateLimit-Limit`: the bucket size.
    pub limit_header: HeaderValue,
    /// `{key_prefix}{name}`, the start of every Redis key of this rule.
    pub redis_prefix: String,
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rule")
            .field("name", &self.name)
            .field("policy", &self.policy)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Rule {
    /// The 429 message: names the limit, reveals nothing else.
    pub fn exceeded_message(&self) -> String {
        format!("rate limit {:?} exceeded ({}, burst {})", self.name, self.rate, self.gcra.burst)
    }
}

/// The compiled `rate_limits.rules`, in file order.
pub type Rules = Arc<[Arc<Rule>]>;

/// Builds every rule. The config file's checks have already refused what
/// is wrong in it, with key and line; what is checked again here only
/// guards configs built in code, and every problem is reported, each
/// naming the rule.
pub fn compile(config: &RateLimitsConfig) -> Result<Rules, Vec<String>> {
    let mut problems = Vec::new();
    let mut names = HashSet::new();
    let mut rules = Vec::with_capacity(config.rules.len());
    if config.max_keys == 0 {
        problems.push("rate_limits.max_keys: must be at least 1".to_string());
    }
    if let Some(redis) = &config.redis {
        if let Err(err) = redis::Client::open(redis.url.as_str()) {
            // The URL may hold a password: report the error, not the URL.
            problems.push(format!("rate_limits.redis.url: {}", err.category()));
        }
    }
    for (index, rule) in config.rules.iter().enumerate() {
        let name = rule.name_or_default(index);
        let at = format!("rate_limits.rules[{index}] ({name})");
        if name.is_empty() {
            problems.push(format!("{at}: name: must not be empty"));
        }
        if !names.insert(name.clone()) {
            problems.push(format!("{at}: name: another rule has the same name"));
        }
        let parts = rule.key.parts().to_vec();
        let burst = rule.bucket_size();
        if burst == 0 {
            problems.push(format!("{at}: burst: must be at least 1"));
        }
        let costs = std::iter::once(rule.cost).chain(rule.route_costs.iter().map(|c| c.cost));
        for cost in costs {
            if cost > burst {
                problems.push(format!("{at}: cost {cost} exceeds the burst {burst}: no request could ever pass"));
            }
        }
        let redis_prefix = match (rule.backend, &config.redis) {
            (Backend::Redis, None) => {
                problems.push(format!("{at}: backend: redis needs a rate_limits.redis section"));
                String::new()
            }
            (_, Some(redis)) => format!("{}{name}", redis.key_prefix),
            (Backend::Local, None) => String::new(),
        };
        let window = rule.rate.window_secs();
        let policy = format!("{};w={window};burst={burst}", rule.rate.count);
        rules.push(Arc::new(Rule {
            id: index as u64,
            selector: selector(&rule.selector),
            parts: parts.into(),
            rate: rule.rate,
            gcra: Gcra::new(rule.rate, burst),
            cost: rule.cost,
            route_costs: rule.route_costs.iter().map(|c| (selector(&c.selector), c.cost)).collect(),
            backend: rule.backend,
            policy,
            limit_header: HeaderValue::from(burst),
            redis_prefix,
            name: Arc::from(name),
        }));
    }
    if problems.is_empty() {
        Ok(rules.into())
    } else {
        Err(problems)
    }
}

fn selector(m: &RuleMatch) -> RouteSelector {
    RouteSelector {
        path_prefix: m.path_prefix.clone(),
        service: m.service.clone(),
        method: m.method.clone(),
        http_method: m.http_method.clone(),
        version: m.version.clone(),
        composition: m.composition.clone(),
    }
}

/// One rule as it applies to one route.
#[derive(Debug, Clone)]
pub struct ResolvedLimit {
    pub rule: Arc<Rule>,
    pub cost: u32,
}

/// Every limit of one route, resolved at load.
#[derive(Debug, Clone, Default)]
pub struct RouteLimits {
    pub limits: Box<[ResolvedLimit]>,
    /// `RateLimit-Policy`: every applied rule's policy, in order.
    pub policy: Option<HeaderValue>,
    /// The value of key part `route`: `GET /v1/users/{id}`.
    pub route_key: String,
}

impl RouteLimits {
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty()
    }
}

impl RouteLimits {
    /// The limits of a route whose key part `route` is `route_key`.
    pub fn new(limits: Vec<ResolvedLimit>, route_key: String) -> Self {
        let policy = (!limits.is_empty())
            .then(|| {
                let joined = limits.iter().map(|l| l.rule.policy.as_str()).collect::<Vec<_>>().join(", ");
                HeaderValue::try_from(joined).ok()
            })
            .flatten();
        Self { limits: limits.into(), policy, route_key }
    }
}

/// The compiled rules, resolved against each route at load: the route's
/// [`RouteLimits`] go to its extension slot, where the layer reads them.
pub struct RuleSet(pub Rules);

impl RouteResolver for RuleSet {
    fn attach(&self, route: &Route, facts: &RouteFacts<'_>, slot: &mut http::Extensions) -> Result<(), String> {
        let limits = resolve(&self.0, route, facts);
        if !limits.is_empty() {
            slot.insert(limits);
        }
        Ok(())
    }
}

/// The rules that select a route, with the route's cost under each.
pub fn resolve(rules: &[Arc<Rule>], route: &Route, facts: &RouteFacts<'_>) -> RouteLimits {
    let limits = rules
        .iter()
        .filter(|rule| rule.selector.selects(facts))
        .map(|rule| {
            let cost = rule
                .route_costs
                .iter()
                .find(|(selector, _)| selector.selects(facts))
                .map_or(rule.cost, |(_, cost)| *cost);
            ResolvedLimit { rule: rule.clone(), cost }
        })
        .collect();
    RouteLimits::new(limits, format!("{} {}", route.http_method, facts.template))
}
