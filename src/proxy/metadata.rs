//! HTTP headers ↔ gRPC metadata (DESIGN §4).
//!
//! To the backend go: `authorization` (unless `auth.forward_token` is off),
//! the authenticated identity (`x-consumer-id`, `x-auth-provider`, the
//! `auth.forward_claims`; client copies of these never pass), `grpc-metadata-X` as `X`, the
//! configured `forward_headers`, `x-request-id`, and
//! `x-forwarded-for`/`x-forwarded-host`. Never hop-by-hop headers (the
//! fixed set and whatever the client names in `Connection`), never
//! reserved gRPC headers. From the backend come response metadata as
//! `grpc-metadata-X` and trailers as `grpc-trailer-X`. Binary (`-bin`)
//! values travel base64-encoded both ways, as on the gRPC wire.
//!
//! The W3C trace context is the gateway's to send (the request's
//! [`TraceContext`](crate::telemetry::TraceContext), added by
//! `request::call_metadata`): the client's `traceparent` and `tracestate`
//! never pass as they are, under any name.

use std::collections::HashSet;
use std::net::IpAddr;

use http::header::{AUTHORIZATION, CONNECTION, HOST};
use http::{HeaderMap, HeaderName, HeaderValue};
use tonic::metadata::MetadataMap;

use crate::http::identity::{Identity, IdentityForwarding, X_AUTH_PROVIDER, X_CONSUMER_ID};
use crate::http::request_id::X_REQUEST_ID;
use crate::telemetry::context::{TRACEPARENT, TRACESTATE};
use crate::upstream::CallMetadata;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const GRPC_METADATA: &str = "grpc-metadata-";

/// Headers that describe one hop, or that gRPC itself owns: never copied
/// between the two sides.
fn reserved(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
            | "content-type"
            | "content-length"
            | "user-agent"
    ) || name.starts_with("grpc-")
        || name.starts_with(':')
}

/// Which request headers become metadata; built once per catalog.
#[derive(Debug, Clone, Default)]
pub struct MetadataRules {
    forward: HashSet<HeaderName>,
    identity: IdentityForwarding,
}

impl MetadataRules {
    pub fn new(forward_headers: &[HeaderName]) -> Self {
        Self {
            forward: forward_headers.iter().filter(|h| !reserved(h.as_str())).cloned().collect(),
            identity: IdentityForwarding::default(),
        }
    }

    /// What the backend learns about the authenticated caller. Headers
    /// the auth layer owns leave `forward_headers`.
    pub fn with_identity(mut self, identity: IdentityForwarding) -> Self {
        self.forward.retain(|name| !identity.is_auth_owned(name.as_str()));
        self.identity = identity;
        self
    }

    /// The metadata of the upstream call for a request with `headers` from
    /// `peer`.
    pub fn request_metadata(
        &self,
        headers: &HeaderMap,
        authority: Option<&str>,
        peer: &HeaderValue,
        request_id: &HeaderValue,
        identity: Option<&Identity>,
    ) -> CallMetadata {
        // Room for what the gateway adds here and on the way out (request
        // id, forwarding, trace context, the timeout): no regrowth.
        let mut out = CallMetadata::with_capacity(8);
        let mut forwarded_for = None;
        let has_connection_options = headers.contains_key(CONNECTION);
        for (name, value) in headers {
            let key = name.as_str();
            if has_connection_options && named_by_connection(headers, key) {
                continue;
            }
            if *name == AUTHORIZATION {
                // A gateway that verifies forwards the verified token alone
                // (from the identity, below); one that does not passes the
                // client's on.
                if self.identity.forward_token && !self.identity.verifies {
                    out.append(name.clone(), value.clone());
                }
            } else if *name == TRACEPARENT || *name == TRACESTATE {
                continue;
            } else if !self.forward.is_empty() && self.forward.contains(name) {
                // Identity comes from authentication alone.
                if !self.identity.is_identity_header(key) {
                    out.append(name.clone(), value.clone());
                }
            } else if let Some(rest) = key.strip_prefix(GRPC_METADATA) {
                if rest.is_empty()
                    || reserved(rest)
                    || self.identity.is_auth_owned(rest)
                    || rest == TRACEPARENT.as_str()
                    || rest == TRACESTATE.as_str()
                {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(rest.as_bytes()) {
                    out.append(name, value.clone());
                }
            } else if *name == X_FORWARDED_FOR {
                forwarded_for = Some(value);
            }
        }
        // New on every request: kept out of the HPACK table (see
        // `Traceparent::to_header`).
        let mut request_id = request_id.clone();
        request_id.set_sensitive(true);
        out.insert(X_REQUEST_ID, request_id);

        // Only a chain from earlier proxies costs a new string.
        let chain = match forwarded_for.and_then(|v| v.to_str().ok()) {
            Some(previous) if !previous.is_empty() => {
                HeaderValue::try_from(format!("{previous}, {}", peer.to_str().unwrap_or_default())).ok()
            }
            _ => Some(peer.clone()),
        };
        if let Some(value) = chain {
            out.insert(X_FORWARDED_FOR, value);
        }
        let host = headers.get(HOST).cloned().or_else(|| authority.and_then(|a| HeaderValue::from_str(a).ok()));
        if let Some(host) = host {
            out.insert(X_FORWARDED_HOST, host);
        }
        if let Some(identity) = identity {
            self.identity_metadata(identity, &mut out);
        }
        out
    }

    /// `x-consumer-id`, `x-auth-provider` and the forwarded claims; a
    /// claim that is an array or object goes as its JSON text. A value a
    /// header cannot carry (gRPC ASCII metadata: printable ASCII only) is
    /// left out.
    fn identity_metadata(&self, identity: &Identity, out: &mut CallMetadata) {
        if let Some(token) = &identity.token {
            out.insert(AUTHORIZATION, token.clone());
        }
        if let Some(value) = ascii_value(&identity.consumer) {
            out.insert(X_CONSUMER_ID, value);
        }
        if let Some(value) = ascii_value(&identity.provider) {
            out.insert(X_AUTH_PROVIDER, value);
        }
        for (claim, header) in &self.identity.claims {
            let value = match identity.claims.get(claim) {
                None | Some(serde_json::Value::Null) => continue,
                Some(serde_json::Value::String(text)) => ascii_value(text),
                Some(other) => ascii_value(&other.to_string()),
            };
            match value {
                Some(value) => {
                    out.insert(header.clone(), value);
                }
                None => tracing::debug!(claim, "claim value cannot be sent as metadata"),
            }
        }
    }
}

/// Whether the client listed `name` as an option of its `Connection`
/// header: such headers describe this hop alone and an intermediary must not
/// pass them on (RFC 9110 §7.6.1).
fn named_by_connection(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|options| options.split(',').any(|option| option.trim().eq_ignore_ascii_case(name)))
}

fn ascii_value(text: &str) -> Option<HeaderValue> {
    if !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return None;
    }
    HeaderValue::from_str(text).ok()
}

/// A connection's peer address as an `x-forwarded-for` entry, made once per
/// connection.
pub fn peer_value(ip: IpAddr) -> HeaderValue {
    HeaderValue::try_from(ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Copies backend response metadata and trailers onto the HTTP response.
pub fn response_headers(headers: &MetadataMap, trailers: &MetadataMap, out: &mut HeaderMap) {
    copy_prefixed(headers, "grpc-metadata-", out);
    copy_prefixed(trailers, "grpc-trailer-", out);
}

fn copy_prefixed(from: &MetadataMap, prefix: &'static str, out: &mut HeaderMap) {
    for (name, value) in from.as_ref() {
        if reserved(name.as_str()) {
            continue;
        }
        if let Some(full) = prefixed(prefix, name) {
            out.append(full, value.clone());
        }
    }
}

/// How many prefixed names each thread keeps.
const PREFIXED_KEPT: usize = 64;

thread_local! {
    /// Prefixed names made lately, by prefix and backend name: a backend
    /// sends the same few names on every call, each is built once.
    static PREFIXED: std::cell::RefCell<Vec<(&'static str, HeaderName, HeaderName)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// `prefix` + `name` as a header name (`None` if it is not one).
fn prefixed(prefix: &'static str, name: &HeaderName) -> Option<HeaderName> {
    PREFIXED.with_borrow_mut(|kept| {
        if let Some((_, _, full)) = kept.iter().find(|(p, n, _)| *p == prefix && n == name) {
            return Some(full.clone());
        }
        let mut full = String::with_capacity(prefix.len() + name.as_str().len());
        full.push_str(prefix);
        full.push_str(name.as_str());
        let full = HeaderName::try_from(full).ok()?;
        if kept.len() < PREFIXED_KEPT {
            kept.push((prefix, name.clone(), full.clone()));
        }
        Some(full)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(HeaderName::from_bytes(k.as_bytes()).expect("name"), HeaderValue::from_str(v).expect("value"));
        }
        map
    }

    #[test]
    fn forwards_what_the_design_lists_and_nothing_else() {
        let rules = MetadataRules::new(&[HeaderName::from_static("x-tenant"), HeaderName::from_static("connection")]);
        let incoming = headers(&[
            ("authorization", "Bearer t"),
            ("grpc-metadata-user", "alice"),
            ("grpc-metadata-blob-bin", "AQI="),
            ("grpc-metadata-grpc-timeout", "1S"),
            ("grpc-metadata-connection", "close"),
            ("x-tenant", "acme"),
            ("connection", "keep-alive"),
            ("cookie", "secret"),
            ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            ("x-forwarded-for", "10.0.0.1"),
            ("host", "api.example.com"),
            ("x-request-id", "client-chosen"),
        ]);
        let id = HeaderValue::from_static("rid-1");
        let md = rules
            .request_metadata(&incoming, None, &peer_value("127.0.0.9".parse().expect("ip")), &id, None)
            .into_headers();
        assert_eq!(md.get("authorization").map(|v| v.as_bytes()), Some(&b"Bearer t"[..]));
        assert_eq!(md.get("user").map(|v| v.as_bytes()), Some(&b"alice"[..]));
        assert_eq!(md.get("blob-bin").map(|v| v.as_bytes()), Some(&b"AQI="[..]));
        assert_eq!(md.get("x-tenant").map(|v| v.as_bytes()), Some(&b"acme"[..]));
        assert!(md.get("traceparent").is_none(), "the trace context is added from the request's, not copied");
        assert_eq!(md.get("x-request-id").map(|v| v.as_bytes()), Some(&b"rid-1"[..]));
        assert_eq!(md.get("x-forwarded-for").map(|v| v.as_bytes()), Some(&b"10.0.0.1, 127.0.0.9"[..]));
        assert_eq!(md.get("x-forwarded-host").map(|v| v.as_bytes()), Some(&b"api.example.com"[..]));
        for absent in ["grpc-timeout", "connection", "cookie", "host"] {
            assert!(md.get(absent).is_none(), "{absent} must not be forwarded");
        }
    }

    #[test]
    fn identity_replaces_client_copies_and_token_follows_the_setting() {
        let auth: crate::config::auth::AuthConfig =
            serde_yaml_ng::from_str("api_keys: { keys: [] }\nforward_claims: [email, groups, name]").expect("config");
        let forwarding = IdentityForwarding::new(&auth).expect("valid");
        let rules = MetadataRules::new(&[HeaderName::from_static("x-consumer-id")]).with_identity(forwarding);
        let incoming = headers(&[
            ("authorization", "Bearer t"),
            ("x-consumer-id", "mallory"),
            ("grpc-metadata-x-auth-provider", "forged"),
            ("grpc-metadata-x-claim-email", "root@example.com"),
        ]);
        let identity = Identity {
            consumer: "alice".into(),
            provider: "corp".into(),
            scopes: vec![],
            claims: serde_json::json!({"email": "a@example.com", "groups": ["a", "b"], "name": "Zoë"})
                .as_object()
                .cloned()
                .expect("object"),
            token: None,
        };
        let id = HeaderValue::from_static("rid");
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let md = rules.request_metadata(&incoming, None, &peer_value(ip), &id, Some(&identity)).into_headers();
        let get = |n: &str| md.get_all(n).iter().map(|v| v.as_bytes().to_vec()).collect::<Vec<_>>();
        assert_eq!(get("x-consumer-id"), vec![b"alice".to_vec()]);
        assert_eq!(get("x-auth-provider"), vec![b"corp".to_vec()]);
        assert_eq!(get("x-claim-email"), vec![b"a@example.com".to_vec()]);
        assert_eq!(get("x-claim-groups"), vec![br#"["a","b"]"#.to_vec()]);
        assert!(get("x-claim-name").is_empty(), "non-ASCII is left out");
        assert!(get("authorization").is_empty(), "forward_token is off");
        // Without an identity, nothing identity-like passes at all.
        let md = rules.request_metadata(&incoming, None, &peer_value(ip), &id, None).into_headers();
        for name in ["x-consumer-id", "x-auth-provider", "x-claim-email"] {
            assert!(md.get(name).is_none(), "{name}");
        }
    }

    #[test]
    fn only_the_verified_token_reaches_the_backend() {
        let auth: crate::config::auth::AuthConfig =
            serde_yaml_ng::from_str("forward_token: true\napi_keys: { header: X-Key, keys: [] }").expect("config");
        let forwarding = IdentityForwarding::new(&auth).expect("valid");
        let rules = MetadataRules::new(&[HeaderName::from_static("x-key")]).with_identity(forwarding);
        let incoming = headers(&[
            ("authorization", "Bearer client"),
            ("grpc-metadata-authorization", "Bearer forged"),
            ("grpc-metadata-x-key", "forged"),
            ("x-key", "k"),
        ]);
        let identity = Identity {
            consumer: "alice".into(),
            provider: "corp".into(),
            scopes: vec![],
            claims: serde_json::Map::new(),
            token: Some(HeaderValue::from_static("Bearer verified")),
        };
        let id = HeaderValue::from_static("rid");
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let md = rules.request_metadata(&incoming, None, &peer_value(ip), &id, Some(&identity)).into_headers();
        let get = |md: &HeaderMap, n: &str| md.get_all(n).iter().map(|v| v.as_bytes().to_vec()).collect::<Vec<_>>();
        assert_eq!(get(&md, "authorization"), vec![b"Bearer verified".to_vec()]);
        assert!(get(&md, "x-key").is_empty(), "the API key header is the auth layer's, forward_headers or not");
        let anonymous = rules.request_metadata(&incoming, None, &peer_value(ip), &id, None).into_headers();
        assert!(get(&anonymous, "authorization").is_empty(), "no verified token, no authorization");

        // A gateway that verifies nothing passes the client's own header,
        // never one smuggled as metadata.
        let open = MetadataRules::new(&[]);
        let smuggled = headers(&[("grpc-metadata-authorization", "Bearer forged")]);
        assert!(get(
            &open.request_metadata(&smuggled, None, &peer_value(ip), &id, None).into_headers(),
            "authorization"
        )
        .is_empty());
        let plain = headers(&[("authorization", "Bearer client")]);
        let md = open.request_metadata(&plain, None, &peer_value(ip), &id, None).into_headers();
        assert_eq!(get(&md, "authorization"), vec![b"Bearer client".to_vec()]);
    }

    #[test]
    fn headers_named_in_connection_stay_on_this_hop() {
        let rules = MetadataRules::new(&[HeaderName::from_static("x-tenant"), HeaderName::from_static("x-hop")]);
        let incoming = headers(&[
            ("connection", "keep-alive, X-Hop"),
            ("connection", "grpc-metadata-secret"),
            ("x-hop", "1"),
            ("x-tenant", "acme"),
            ("grpc-metadata-secret", "s"),
            ("grpc-metadata-user", "alice"),
        ]);
        let id = HeaderValue::from_static("rid");
        let md = rules
            .request_metadata(&incoming, None, &peer_value("127.0.0.1".parse().expect("ip")), &id, None)
            .into_headers();
        assert!(md.get("x-hop").is_none());
        assert!(md.get("secret").is_none());
        assert_eq!(md.get("x-tenant").map(|v| v.as_bytes()), Some(&b"acme"[..]));
        assert_eq!(md.get("user").map(|v| v.as_bytes()), Some(&b"alice"[..]));
    }

    #[test]
    fn backend_metadata_comes_back_prefixed() {
        let mut h = MetadataMap::new();
        h.insert("x-served-by", "b1".parse().expect("v"));
        h.insert("content-type", "application/grpc".parse().expect("v"));
        let mut t = MetadataMap::new();
        t.insert("x-cost", "3".parse().expect("v"));
        t.insert("grpc-status", "0".parse().expect("v"));
        // Twice: the second time the names are the ones kept from the first.
        for _ in 0..2 {
            let mut out = HeaderMap::new();
            response_headers(&h, &t, &mut out);
            assert_eq!(out.get("grpc-metadata-x-served-by").map(|v| v.as_bytes()), Some(&b"b1"[..]));
            assert_eq!(out.get("grpc-trailer-x-cost").map(|v| v.as_bytes()), Some(&b"3"[..]));
            assert_eq!(out.len(), 2);
        }
        // The same name under the other prefix is another name.
        let mut out = HeaderMap::new();
        response_headers(&t, &h, &mut out);
        assert_eq!(out.get("grpc-metadata-x-cost").map(|v| v.as_bytes()), Some(&b"3"[..]));
        assert_eq!(out.get("grpc-trailer-x-served-by").map(|v| v.as_bytes()), Some(&b"b1"[..]));
    }
}
