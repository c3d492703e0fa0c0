//! The OpenAPI 3.1 document of a live catalog (DESIGN §9): every route,
//! descriptor and composition, with its parameters, bodies and answers as
//! the catalog's JSON settings print them, the error envelope as every
//! operation's default answer, security from `auth`, `deprecated` for
//! deprecated versions and the streaming framings.
//!
//! Generated from what the catalog already resolved (plans, templates,
//! policies), never from descriptor lookups of its own. The same catalog
//! and `auth` give the same bytes: `protogate openapi` and the admin
//! `/openapi.json` print one function's output, and [`Documents`] keeps the
//! live catalog's document until a reload replaces the catalog.
//!
//! Decisions (docs/observability.md, "OpenAPI"): a variable's literal
//! segments stay in the path (`{name=shelves/*}` → `shelves/{name}`); methods
//! whose HTTP method OpenAPI has no operation for are listed in
//! `x-protogate-omitted`; operation ids are the gRPC method's full name, with
//! `_2`, `_3`… for its additional bindings.

mod operation;
mod schema;
mod security;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use http::Method;
use serde_json::{json, Map, Value};

use self::operation::{openapi_path, Operations};
use self::schema::Schemas;
use self::security::Security;
use crate::catalog::{Catalog, Target};
use crate::config::auth::AuthConfig;

/// The HTTP methods an OpenAPI path item has operations for.
const OPERATIONS: [Method; 8] = [
    Method::GET,
    Method::PUT,
    Method::POST,
    Method::DELETE,
    Method::OPTIONS,
    Method::HEAD,
    Method::PATCH,
    Method::TRACE,
];

/// The document of `catalog` under `auth`, as pretty JSON with a final
/// newline; object keys sorted, so equal inputs give equal bytes.
pub fn document(catalog: &Catalog, auth: &AuthConfig) -> Bytes {
    let value = build(catalog, auth);
    let mut out = serde_json::to_vec_pretty(&value).unwrap_or_default();
    out.push(b'\n');
    Bytes::from(out)
}

/// The document of the live catalog, made once per catalog: a reload
/// swaps the catalog, and the next request makes the new one's.
pub struct Documents {
    auth: AuthConfig,
    last: Mutex<Option<(Weak<Catalog>, Bytes)>>,
}

impl Documents {
    pub fn new(auth: AuthConfig) -> Self {
        Self { auth, last: Mutex::new(None) }
    }

    /// The document of `catalog`, from the cache when it was made for it.
    pub fn get(&self, catalog: &Arc<Catalog>) -> Bytes {
        // A `Weak` keeps the old catalog's allocation, so no new catalog can
        // share its address while the cache compares against it.
        let mut last = self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((made_for, document)) = last.as_ref() {
            if Weak::ptr_eq(made_for, &Arc::downgrade(catalog)) {
                return document.clone();
            }
        }
        let document = document(catalog, &self.auth);
        *last = Some((Arc::downgrade(catalog), document.clone()));
        document
    }
}

fn build(catalog: &Catalog, auth: &AuthConfig) -> Value {
    let mut schemas = Schemas::new(&catalog.json.options);
    let security = Security::new(auth);
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut omitted = Vec::new();
    let mut operation_ids = BTreeSet::new();
    // Bindings seen per gRPC method, for the ids of additional bindings.
    let mut bindings: BTreeMap<String, usize> = BTreeMap::new();
    let mut services = BTreeMap::new();
    let mut compositions = false;
    let mut shapes: BTreeMap<String, Vec<String>> = BTreeMap::new();

    for route in &catalog.routes {
        let template = route.template.to_string();
        let omit = |reason: &str| {
            json!({
                "method": route.http_method.as_str(),
                "path": template,
                "grpc_method": route.call().map(|c| c.grpc_method()),
                "composition": route.composition(),
                "reason": reason,
            })
        };
        if !OPERATIONS.contains(&route.http_method) {
            omitted.push(omit("OpenAPI has no operation for this HTTP method"));
            continue;
        }
        let mut path = openapi_path(&route.template);
        // `/v1/users/{id}` and `/v1/users/{user.id}` are one OpenAPI path:
        // the first route's parameter names win.
        match shapes.get(&path.shape()) {
            Some(names) => path.rename(names),
            None => {
                shapes.insert(path.shape(), path.names());
            }
        }
        let method = route.http_method.as_str().to_ascii_lowercase();
        if paths.get(&path.path).is_some_and(|item| item.contains_key(&method)) {
            omitted.push(omit("another route has the same OpenAPI path and method"));
            continue;
        }
        let base = match &route.target {
            Target::Method(call) => {
                let service = call.method.parent_service();
                services.entry(service.full_name().to_owned()).or_insert(service);
                let full = call.method.full_name().to_owned();
                let seen = bindings.entry(full.clone()).or_insert(0);
                *seen += 1;
                match *seen {
                    1 => full,
                    n => format!("{full}_{n}"),
                }
            }
            Target::Composition(plan) => {
                compositions = true;
                plan.name.to_string()
            }
        };
        let mut operation_id = base.clone();
        let mut n = 1;
        while !operation_ids.insert(operation_id.clone()) {
            n += 1;
            operation_id = format!("{base}_{n}");
        }
        let operation = Operations { schemas: &mut schemas, security: &security }.operation(route, &path, operation_id);
        paths.entry(path.path).or_default().insert(method, operation);
    }

    let mut tags = Vec::new();
    for (name, service) in &services {
        let mut tag = json!({"name": name});
        if let Some(comment) = schemas.comment(&service.parent_file(), service.path()) {
            tag["description"] = Value::String(comment);
        }
        tags.push(tag);
    }
    if compositions {
        tags.push(
            json!({"name": "compositions", "description": "Routes defined in config that compose several gRPC calls."}),
        );
    }

    let paths: Map<String, Value> = paths.into_iter().map(|(path, item)| (path, Value::Object(item))).collect();
    let mut components = json!({
        "schemas": schemas.into_components(),
        "responses": {"Status": {
            "description": "An error: the google.rpc.Status envelope, with the HTTP status of its gRPC code.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/google.rpc.Status"}}}
        }},
    });
    if !security.schemes().is_empty() {
        components["securitySchemes"] = Value::Object(security.schemes().clone());
    }
    let digest = catalog.digest.get(..12).unwrap_or(&catalog.digest);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "protogate",
            "version": digest,
            "description": format!(
                "The routes protogate serves, generated from its live catalog (descriptor digest {}).",
                catalog.digest
            ),
        },
        "paths": paths,
        "components": components,
        "tags": tags,
        "x-protogate-omitted": omitted,
    })
}
