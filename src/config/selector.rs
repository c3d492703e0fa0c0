//! The one route selector (DESIGN §7): the same keys and the same meaning
//! wherever a selector appears — a policy rule, a rate-limit rule's
//! `match` and `route_costs`, a route override. Features resolve selectors
//! against each route once, at load; a request never matches one.

use http::Method;
use serde::{Deserialize, Deserializer};

use super::check::{self, Check};
use super::values::{HttpMethod, MethodName, PathPrefix, ServiceName};

/// Selects routes; every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteSelector {
    /// Whole segments of the path template: `/v1/admin` selects
    /// `/v1/admin`, `/v1/admin/…` and `/v1/admin:verb`, never
    /// `/v1/administrators`.
    pub path_prefix: Option<String>,
    /// Fully-qualified service, `acme.users.v1.UserService`.
    pub service: Option<String>,
    /// Fully-qualified method, `acme.users.v1.UserService/GetUser`.
    pub method: Option<String>,
    pub http_method: Option<Method>,
    /// The URL version prefix the route is mounted under (`v1`).
    pub version: Option<String>,
    /// The name of a composition (`compositions[].name`): selects that
    /// composition's route and nothing else.
    pub composition: Option<String>,
}

/// What a selector looks at: the facts of one route, as the catalog knows
/// them. Built by whoever resolves selectors; nothing here names a route
/// type, so the config knows nothing above it.
#[derive(Debug, Clone, Copy)]
pub struct RouteFacts<'a> {
    pub http_method: &'a Method,
    /// The path template as `protogate routes` prints it.
    pub template: &'a str,
    /// `package.Service/Method`.
    pub grpc_method: &'a str,
    pub version: Option<&'a str>,
    /// The composition's name when the route is one; `None` for a route
    /// of the descriptors.
    pub composition: Option<&'a str>,
}

impl RouteSelector {
    pub fn selects(&self, route: &RouteFacts<'_>) -> bool {
        let (service, _) = route.grpc_method.split_once('/').unwrap_or((route.grpc_method, ""));
        self.http_method.as_ref().is_none_or(|m| m == route.http_method)
            && self.service.as_deref().is_none_or(|s| s == service)
            && self.method.as_deref().is_none_or(|m| m == route.grpc_method)
            && self.version.as_deref().is_none_or(|v| Some(v) == route.version)
            && self.composition.as_deref().is_none_or(|c| Some(c) == route.composition)
            && self.path_prefix.as_deref().is_none_or(|p| has_path_prefix(route.template, p))
    }

    /// The problems of a selector as written, for the config's checks.
    pub fn problem(&self) -> Option<String> {
        if let Some(Err(problem)) = self.path_prefix.as_deref().map(check_path_prefix) {
            return Some(format!("path_prefix {problem}"));
        }
        if let Some(Err(problem)) = self.method.as_deref().map(check_method) {
            return Some(format!("method {problem}"));
        }
        check_method_in_service(self.service.as_deref(), self.method.as_deref()).err()
    }
}

/// A selector's `path_prefix`: compared with path templates, so it starts
/// with `/`.
pub fn check_path_prefix(prefix: &str) -> Result<(), String> {
    if prefix.starts_with('/') {
        Ok(())
    } else {
        Err(format!("{prefix:?} must start with /"))
    }
}

/// A selector's `method`: `package.Service/Method`.
pub fn check_method(method: &str) -> Result<(), String> {
    if method.contains('/') {
        Ok(())
    } else {
        Err(format!("{method:?} must be package.Service/Method"))
    }
}

/// A composition's name, and a selector's `composition`.
pub fn check_composition(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("a composition name must not be empty".into())
    } else {
        Ok(())
    }
}

/// A selector with both `service` and `method` selects nothing unless the
/// method is the service's.
pub fn check_method_in_service(service: Option<&str>, method: Option<&str>) -> Result<(), String> {
    let (Some(service), Some(method)) = (service, method) else {
        return Ok(());
    };
    match method.split_once('/') {
        Some((of, _)) if of != service => {
            Err(format!("method `{method}` is not in service `{service}`, so this selector matches nothing"))
        }
        _ => Ok(()),
    }
}

/// `/v1/admin` selects `/v1/admin` and `/v1/admin/…` (and `/v1/admin:verb`)
/// but not `/v1/administrators`: a prefix ends at a segment boundary.
fn has_path_prefix(template: &str, prefix: &str) -> bool {
    let Some(rest) = template.strip_prefix(prefix) else {
        return false;
    };
    rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/') || rest.starts_with(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(method: &'a Method, template: &'a str) -> RouteFacts<'a> {
        RouteFacts {
            http_method: method,
            template,
            grpc_method: "a.v1.Admin/List",
            version: Some("v1"),
            composition: None,
        }
    }

    #[test]
    fn path_prefix_matches_whole_segments() {
        let get = Method::GET;
        let admin = RouteSelector { path_prefix: Some("/v1/admin".into()), ..RouteSelector::default() };
        assert!(admin.selects(&facts(&get, "/v1/admin")));
        assert!(admin.selects(&facts(&get, "/v1/admin/users/{id}")));
        assert!(admin.selects(&facts(&get, "/v1/admin:purge")));
        assert!(!admin.selects(&facts(&get, "/v1/administrators")));
        let slash = RouteSelector { path_prefix: Some("/v1/".into()), ..RouteSelector::default() };
        assert!(slash.selects(&facts(&get, "/v1/administrators")));
    }

    #[test]
    fn every_set_field_must_match() {
        let get = Method::GET;
        let all = RouteSelector {
            path_prefix: Some("/v1".into()),
            service: Some("a.v1.Admin".into()),
            method: Some("a.v1.Admin/List".into()),
            http_method: Some(Method::GET),
            version: Some("v1".into()),
            composition: None,
        };
        assert!(all.selects(&facts(&get, "/v1/admin")));
        assert!(!RouteSelector { version: Some("v2".into()), ..all.clone() }.selects(&facts(&get, "/v1/admin")));
        assert!(!all.selects(&facts(&Method::POST, "/v1/admin")));
        assert!(!RouteSelector { service: Some("a.v1.Other".into()), ..all.clone() }.selects(&facts(&get, "/v1/x")));
    }

    #[test]
    fn composition_selects_only_that_composition() {
        let get = Method::GET;
        let overview = RouteSelector { composition: Some("user-overview".into()), ..RouteSelector::default() };
        let route = RouteFacts { composition: Some("user-overview"), ..facts(&get, "/v1/users/{id}/overview") };
        assert!(overview.selects(&route));
        assert!(!overview.selects(&RouteFacts { composition: Some("other"), ..route }));
        // A route of the descriptors is no composition.
        assert!(!overview.selects(&facts(&get, "/v1/users/{id}/overview")));
        // Selectors without the key select compositions like any route.
        let prefix = RouteSelector { path_prefix: Some("/v1/users".into()), ..RouteSelector::default() };
        assert!(prefix.selects(&route));
    }
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with path_prefix, service, method, http_method, version, composition"
)]
/// A selector as written in the config (`match`, `routes.overrides[]`):
/// checked, then [`SelectorRaw::resolve`]d.
pub(super) struct SelectorRaw {
    path_prefix: Option<PathPrefix>,
    service: Option<ServiceName>,
    method: Option<MethodName>,
    http_method: Option<HttpMethod>,
    version: Option<String>,
    #[serde(default, deserialize_with = "composition")]
    pub(super) composition: Option<String>,
}

fn composition<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    check::opt_str_rule(d, check_composition)
}

impl Check for SelectorRaw {
    fn check(&self) -> Result<(), String> {
        if self.path_prefix.is_none()
            && self.service.is_none()
            && self.method.is_none()
            && self.http_method.is_none()
            && self.version.is_none()
            && self.composition.is_none()
        {
            return Err(
                "needs at least one of path_prefix, service, method, http_method, version or composition".into()
            );
        }
        check_method_in_service(self.service.as_ref().map(|s| s.0.as_str()), self.method.as_ref().map(|m| m.0.as_str()))
    }
}

impl SelectorRaw {
    pub(super) fn resolve(self) -> RouteSelector {
        RouteSelector {
            path_prefix: self.path_prefix.map(|v| v.0),
            service: self.service.map(|v| v.0),
            method: self.method.map(|v| v.0),
            http_method: self.http_method.map(|v| v.0),
            version: self.version,
            composition: self.composition,
        }
    }
}
