//! `descriptors/vN/*.binpb` are build outputs committed so that the gateway
//! and the quickstart run on a fresh clone without compiling anything; this
//! test keeps them identical to what `proto/` compiles to today. Each lives
//! in the folder of its URL version, which is what mounts it under `/vN`.
//!
//! After changing a proto, regenerate them with
//! `PROTOGATE_BLESS=1 cargo test --test descriptors_fresh`.

mod common;

use std::path::PathBuf;

use common::fixtures::{compile_set, repo_path};
use prost_reflect::{DescriptorPool, Value};

/// Each committed set and the proto file it is compiled from (under `proto/`).
const SETS: &[(&str, &str)] = &[
    ("descriptors/v1/orders.binpb", "acme/orders/v1/orders.proto"),
    ("descriptors/v1/users.binpb", "acme/users/v1/users.proto"),
    ("descriptors/v2/users.binpb", "acme/users/v2/users.proto"),
];

/// What `protoc --include_imports --descriptor_set_out` writes: the file and
/// everything it imports, without source info.
fn compile(proto: &str) -> Vec<u8> {
    compile_set(&[], proto)
}

#[test]
fn committed_descriptor_sets_match_the_proto_sources() {
    let bless = std::env::var_os("PROTOGATE_BLESS").is_some_and(|v| v == "1");
    for (set, proto) in SETS {
        let path: PathBuf = repo_path(set);
        let fresh = compile(proto);
        if bless {
            std::fs::write(&path, &fresh).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
            continue;
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "reading {}: {e}; create it with PROTOGATE_BLESS=1 cargo test --test descriptors_fresh",
                path.display()
            )
        });
        assert!(
            committed == fresh,
            "{set} is stale against proto/{proto}; regenerate it with PROTOGATE_BLESS=1 cargo test --test descriptors_fresh"
        );
    }
}

/// The gateway builds its routes from the `google.api.http` option, so a set
/// compiled without the annotations imported would load but route nothing.
/// Checks the compiled bytes (equal to the committed ones, see above) so it
/// does not race the other test's rewrite under `PROTOGATE_BLESS=1`.
#[test]
fn committed_sets_carry_the_http_annotations() {
    // (proto file, service, [(method, has a google.api.http rule)])
    type Expectation<'a> = (&'a str, &'a str, &'a [(&'a str, bool)]);
    let expectations: &[Expectation] = &[
        (
            "acme/users/v1/users.proto",
            "acme.users.v1.UserService",
            &[
                ("GetUser", true),
                ("ListUsers", true),
                ("CreateUser", true),
                ("UpdateUser", true),
                ("DeleteUser", true),
                ("DeactivateUser", true),
                ("ImportUsers", true),
            ],
        ),
        (
            "acme/orders/v1/orders.proto",
            "acme.orders.v1.OrderService",
            &[
                ("GetOrder", true),
                ("ListOrders", true),
                ("CreateOrder", true),
                ("WatchOrders", true),
                ("Track", true),
                ("Ping", false),
            ],
        ),
        (
            "acme/users/v2/users.proto",
            "acme.users.v2.UserService",
            &[("GetUser", true), ("ListUsers", true), ("CreateUser", true), ("SearchUsers", true)],
        ),
    ];
    for (proto, service, methods) in expectations {
        let bytes = compile(proto);
        let pool = DescriptorPool::decode(bytes.as_slice()).expect("a valid FileDescriptorSet");
        let http = pool.get_extension_by_name("google.api.http").expect("google/api/annotations.proto is included");
        let service = pool.get_service_by_name(service).expect("service in set");
        let found: Vec<(String, bool)> = service
            .methods()
            .map(|m| {
                let options = m.options();
                let annotated = options.has_extension(&http)
                    && matches!(&*options.get_extension(&http), Value::Message(rule) if rule.fields().next().is_some());
                (m.name().to_owned(), annotated)
            })
            .collect();
        let expected: Vec<(String, bool)> = methods.iter().map(|(m, a)| ((*m).to_owned(), *a)).collect();
        assert_eq!(found, expected, "{proto}: methods and whether each has a google.api.http rule");
    }
}
