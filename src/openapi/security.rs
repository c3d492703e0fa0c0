//! Security schemes from `auth` (a JWT provider → HTTP bearer, or an API
//! key where it reads its token; API keys → an API key in their header and,
//! when configured, their query parameter) and each route's requirement
//! from its resolved policy.

use serde_json::{json, Map, Value};

use crate::auth::policy::{Requirement, RoutePolicy};
use crate::config::auth::{AuthConfig, TokenLocation};

/// The schemes of one `auth` section, by provider.
pub struct Security {
    /// (provider name, its scheme names), in the order providers are tried.
    providers: Vec<(String, Vec<String>)>,
    schemes: Map<String, Value>,
}

impl Security {
    pub fn new(auth: &AuthConfig) -> Self {
        let mut providers = Vec::new();
        let mut schemes = Map::new();
        for jwt in &auth.jwt {
            let name = scheme_name(&jwt.name);
            let description = format!("JWT of provider `{}`.", jwt.name);
            let scheme = match (jwt.from, jwt.param.as_deref()) {
                (TokenLocation::Header, None) => bearer(&description),
                (TokenLocation::Header, Some(header)) if header.eq_ignore_ascii_case("authorization") => {
                    bearer(&description)
                }
                (TokenLocation::Header, Some(header)) => api_key("header", header, &description),
                (TokenLocation::Query, param) => api_key("query", param.unwrap_or("access_token"), &description),
                (TokenLocation::Cookie, param) => api_key("cookie", param.unwrap_or("access_token"), &description),
            };
            schemes.insert(name.clone(), scheme);
            providers.push((jwt.name.clone(), vec![name]));
        }
        if let Some(keys) = &auth.api_keys {
            let description = format!("API key of provider `{}`.", keys.name);
            let header = scheme_name(&keys.name);
            schemes.insert(header.clone(), api_key("header", &keys.header, &description));
            let mut names = vec![header];
            if let Some(query) = &keys.query {
                let name = scheme_name(&format!("{}_query", keys.name));
                schemes.insert(name.clone(), api_key("query", query, &description));
                names.push(name);
            }
            providers.push((keys.name.clone(), names));
        }
        Self { providers, schemes }
    }

    /// `components.securitySchemes`, empty without providers.
    pub fn schemes(&self) -> &Map<String, Value> {
        &self.schemes
    }

    /// An operation's `security`: `[]` for a public route, else one
    /// alternative per accepted scheme, listing the required scopes; `None`
    /// when `auth` has no provider.
    pub fn of(&self, policy: &RoutePolicy) -> Option<Value> {
        if self.providers.is_empty() {
            return None;
        }
        let Requirement::Authenticated { providers, scopes, .. } = &policy.requirement else {
            return Some(json!([]));
        };
        let alternatives: Vec<Value> = self
            .providers
            .iter()
            .filter(|(name, _)| providers.is_empty() || providers.contains(name))
            .flat_map(|(_, schemes)| schemes)
            .map(|scheme| json!({ scheme: scopes }))
            .collect();
        Some(Value::Array(alternatives))
    }
}

fn bearer(description: &str) -> Value {
    json!({"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": description})
}

fn api_key(place: &str, name: &str, description: &str) -> Value {
    json!({"type": "apiKey", "in": place, "name": name, "description": description})
}

/// Component names allow `[A-Za-z0-9._-]`.
fn scheme_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect()
}
