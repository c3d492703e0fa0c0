//! Hot reload (DESIGN §2): the descriptor folder is the control plane. Files
//! that arrive, change or go away change the routes of a running gateway
//! without a restart; a folder that does not validate changes nothing that
//! serves, and says why in the reload status. Every wait here polls with a
//! deadline: the watcher reacts to file events within a debounce, and a
//! 2 s fingerprint poll catches anything the events miss.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::api::ReloadStatus;
use common::fixtures::{compile_source, test_service_descriptor_set, CLASH_PROTO, CORRUPT_SET, OTHER_PROTO};
use common::{assert_error, config_for, eventually, metrics, Backend, Descriptors, Reply, TestGateway};

/// How long a change may take to go live (or be refused).
const DEADLINE: Duration = Duration::from_secs(15);

/// A small generated service of its own package, `GET /gen/{n}/ping`.
fn generated_proto(n: usize) -> String {
    format!(
        r#"syntax = "proto3";
package gen{n}.v1;
import "google/api/annotations.proto";

service Gen{n} {{
  rpc Ping(PingRequest) returns (PingReply) {{
    option (google.api.http) = {{ get: "/gen/{n}/ping" }};
  }}
}}
message PingRequest {{}}
message PingReply {{}}
"#
    )
}

/// A gateway on its own (initially given) descriptor folder in front of the
/// test backend.
async fn live(with_test_set: bool) -> TestGateway {
    let backend = Backend::test_service().await;
    let descriptors = if with_test_set { Descriptors::test_service() } else { Descriptors::empty() };
    common::start(descriptors, config_for(&backend), vec![backend]).await
}

fn problems(status: &ReloadStatus) -> String {
    status.last_error.as_ref().map(|e| e.problems.join("\n")).unwrap_or_default()
}

#[tokio::test]
async fn routes_follow_the_files_in_the_folder() {
    let live = live(false).await;
    let first = live.status();
    assert!(first.files.is_empty() && first.routes == 0, "{first:?}");
    assert_error(&live.get("/test/metadata").await, 404, 5);

    live.descriptors.write("test.binpb", test_service_descriptor_set());
    let reply = live.get_until("/test/metadata", 200, DEADLINE).await;
    assert!(reply.json()["headers"].is_object(), "{}", reply.text());
    let status = live.status();
    assert!(status.generation > first.generation, "{status:?}");
    assert_eq!(status.files.len(), 1, "{status:?}");
    assert_eq!(status.files[0].path, Path::new("test.binpb"));
    assert!(status.routes > 0);

    live.descriptors.remove("test.binpb");
    assert_error(&live.get_until("/test/metadata", 404, DEADLINE).await, 404, 5);
    let status = live.status_until("the status shows no files", DEADLINE, |s| s.files.is_empty()).await;
    assert_eq!(status.routes, 0, "{status:?}");
    live.shutdown().await;
}

#[tokio::test]
async fn a_corrupt_file_is_refused_and_the_old_routes_keep_serving() {
    let live = live(true).await;
    let before = live.status();
    live.descriptors.write("broken.binpb", CORRUPT_SET);
    let refused = live.status_until("the reload is refused", DEADLINE, |s| s.last_error.is_some()).await;
    assert!(problems(&refused).contains("broken.binpb"), "the error does not name the file: {refused:?}");
    assert_eq!(refused.generation, before.generation, "a refused reload went live: {refused:?}");
    assert_eq!(refused.digest, before.digest);
    assert!(refused.reloads_failed > before.reloads_failed);
    let samples = metrics::samples(&live.gateway);
    assert!(metrics::sample(&samples, r#"protogate_reloads_total{result="refused"}"#) >= 1.0, "{samples:?}");
    let routes = metrics::sample(&samples, "protogate_catalog_routes");
    assert_eq!(routes, live.gateway.catalog().routes.len() as f64, "the refused reload changed the route count");
    let reply = live.get("/test/metadata").await;
    assert_eq!(reply.status, 200, "the old catalog must keep serving: {}", reply.text());

    // Fixed in place: a valid set under the same name goes live.
    live.descriptors.write("broken.binpb", compile_source("other.proto", OTHER_PROTO));
    let fixed = live.status_until("the fixed file goes live", DEADLINE, |s| s.generation > before.generation).await;
    let fixed = if fixed.last_error.is_some() {
        // A reload may have caught the file half written; the next one sees it whole.
        live.status_until("the fixed file goes live cleanly", DEADLINE, |s| s.last_error.is_none()).await
    } else {
        fixed
    };
    assert!(fixed.last_error.is_none(), "{fixed:?}");
    assert_ne!(fixed.digest, before.digest);
    let methods = live.grpc_methods();
    assert!(methods.iter().any(|m| m == "other.v1.Other/Ping"), "{methods:?}");
    let samples = metrics::samples(&live.gateway);
    assert!(metrics::sample(&samples, r#"protogate_reloads_total{result="ok"}"#) >= 1.0, "{samples:?}");
    let routes = metrics::sample(&samples, "protogate_catalog_routes");
    assert_eq!(routes, live.gateway.catalog().routes.len() as f64, "{samples:?}");
    assert_eq!(live.get("/test/metadata").await.status, 200);
    assert_ne!(live.get("/other/ping/x").await.status, 404, "the new route is not served");
    live.shutdown().await;
}

#[tokio::test]
async fn a_colliding_file_is_refused_naming_both_methods() {
    let live = live(true).await;
    let before = live.status();
    live.descriptors.write("clash.proto", CLASH_PROTO);
    let refused =
        live.status_until("the collision is refused", DEADLINE, |s| problems(s).contains("clash.v1.Clash/Get")).await;
    let text = problems(&refused);
    for needle in ["/test/metadata", "protogate.test.v1.TestService/Metadata", "test.binpb", "clash.proto"] {
        assert!(text.contains(needle), "the collision error does not name {needle}: {text}");
    }
    assert_eq!(refused.generation, before.generation, "{refused:?}");
    assert!(!live.grpc_methods().iter().any(|m| m.starts_with("clash.")), "the colliding set went live");
    // Still the test service behind the template, not a shadowing one.
    let reply = live.get("/test/metadata").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.json()["headers"].is_object(), "{}", reply.text());

    // Taking the file away again is a valid folder: the error clears.
    live.descriptors.remove("clash.proto");
    let recovered = live.status_until("the folder is valid again", DEADLINE, |s| s.last_error.is_none()).await;
    assert!(recovered.generation > before.generation);
    assert_eq!(recovered.digest, before.digest, "same files, same digest");
    live.shutdown().await;
}

#[tokio::test]
async fn an_atomic_rename_is_picked_up_whole() {
    let live = live(false).await;
    // Written under a name the loader ignores …
    live.descriptors.write("test.tmp", test_service_descriptor_set());
    assert!(live.gateway.reloader().reload(true).await.expect("an empty folder is valid"), "forced reload");
    let status = live.status();
    assert!(status.files.is_empty(), "a .tmp file was loaded: {status:?}");
    assert_error(&live.get("/test/metadata").await, 404, 5);

    // … then renamed into place, as editors and deploy tools do.
    std::fs::rename(live.descriptors.join("test.tmp"), live.descriptors.join("test.binpb")).expect("rename into place");
    assert_eq!(live.get_until("/test/metadata", 200, DEADLINE).await.status, 200);
    let status = live.status();
    assert_eq!(status.reloads_failed, 0, "a reload saw a partial file: {status:?}");
    assert_eq!(status.files.len(), 1, "{status:?}");
    live.shutdown().await;
}

#[tokio::test]
async fn many_files_dropped_at_once_all_appear() {
    const N: usize = 20;
    let live = live(true).await;
    for n in 0..N {
        live.descriptors.write(&format!("gen{n}.proto"), generated_proto(n));
    }
    let expected: Vec<String> = (0..N).map(|n| format!("gen{n}.v1.Gen{n}/Ping")).collect();
    eventually("all generated services are routed", DEADLINE, || async {
        let methods = live.grpc_methods();
        let missing: Vec<_> = expected.iter().filter(|m| !methods.contains(m)).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("missing {missing:?}; status {:?}", live.status()))
        }
    })
    .await;
    let status = live.status();
    assert_eq!(status.files.len(), N + 1, "{status:?}");
    assert!(status.last_error.is_none(), "{status:?}");
    // Routed over HTTP too: the backend does not implement them (501, with
    // tonic's empty message passed through), but the gateway finds the route
    // and calls it instead of answering 404.
    for n in [0, N / 2, N - 1] {
        let reply = live.get(&format!("/gen/{n}/ping")).await;
        assert_eq!(reply.status, 501, "{}", reply.text());
        assert_eq!(reply.json()["code"], 12, "{}", reply.text());
    }
    assert_eq!(live.get("/test/metadata").await.status, 200);
    live.shutdown().await;
}

#[tokio::test]
async fn reloads_under_load_fail_no_request() {
    const CLIENTS: usize = 8;
    const CHANGES: usize = 6;
    let live = Arc::new(live(true).await);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));

    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (live, stop, ok, failures) = (live.clone(), stop.clone(), ok.clone(), failures.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let body = format!(r#"{{"stringValue": "c{client}-{i}", "int64Value": "{i}"}}"#);
                    let sent = live
                        .client
                        .post(format!("{}/test/echo", live.base))
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await;
                    let outcome = match sent {
                        Ok(response) => {
                            let reply = Reply::read(response).await;
                            let echoed = reply.status == 200
                                && reply.json()["stringValue"] == serde_json::json!(format!("c{client}-{i}"));
                            if echoed {
                                Ok(())
                            } else {
                                Err(format!("{} {}", reply.status, reply.text()))
                            }
                        }
                        Err(err) => Err(format!("transport: {err}")),
                    };
                    match outcome {
                        Ok(()) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(err) => failures.lock().expect("failures lock").push(err),
                    }
                }
            })
        })
        .collect();

    // Let the load build up, then change the folder several times, each time
    // waiting until the new catalog is live.
    let warm = ok.load(Ordering::Relaxed);
    eventually("the clients are running", DEADLINE, || async {
        if ok.load(Ordering::Relaxed) > warm + CLIENTS as u64 {
            Ok(())
        } else {
            Err(format!("{} ok", ok.load(Ordering::Relaxed)))
        }
    })
    .await;
    let first = live.status();
    let mut served_between = Vec::new();
    for change in 0..CHANGES {
        let generation = live.status().generation;
        let before = ok.load(Ordering::Relaxed);
        if change % 2 == 0 {
            live.descriptors.write("extra.proto", OTHER_PROTO);
        } else {
            live.descriptors.remove("extra.proto");
        }
        live.status_until(&format!("change {change} goes live"), DEADLINE, |s| {
            s.generation > generation && s.last_error.is_none()
        })
        .await;
        served_between.push(ok.load(Ordering::Relaxed) - before);
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.expect("client task panicked");
    }

    let failures = failures.lock().expect("failures lock").clone();
    let served = ok.load(Ordering::Relaxed);
    eprintln!("{served} requests over {CHANGES} reloads; during each: {served_between:?}");
    assert!(failures.is_empty(), "{} of {} requests failed, first: {:?}", failures.len(), served, &failures[..1]);
    let last = live.status();
    assert!(last.generation >= first.generation + CHANGES as u64, "{last:?}");
    assert_eq!(last.reloads_failed, 0, "{last:?}");
    assert_eq!(last.digest, first.digest, "an even number of changes restores the folder");
    assert!(served_between.iter().all(|&n| n > 0), "no requests ran during some reloads: {served_between:?}");
    match Arc::try_unwrap(live) {
        Ok(live) => live.shutdown().await,
        Err(_) => panic!("a client still holds the gateway"),
    }
}

#[tokio::test]
async fn the_digest_follows_the_files() {
    let live = live(true).await;
    let first = live.status();
    assert_eq!(first.digest.len(), 64, "{first:?}");
    assert!(first.digest.bytes().all(|b| b.is_ascii_hexdigit()), "{first:?}");
    assert_eq!(first.files[0].size, test_service_descriptor_set().len() as u64);

    // Nothing changed: nothing to do; forced: a new generation, same digest.
    let reloader = live.gateway.reloader();
    assert!(!reloader.reload(false).await.expect("valid folder"), "reloaded an unchanged folder");
    assert_eq!(live.status().generation, first.generation);
    assert!(reloader.reload(true).await.expect("valid folder"));
    let forced = live.status();
    assert_eq!(forced.generation, first.generation + 1);
    assert_eq!(forced.digest, first.digest, "same files, same digest");

    live.descriptors.write("other.proto", OTHER_PROTO);
    let changed = live.status_until("other.proto goes live", DEADLINE, |s| s.files.len() == 2).await;
    assert_ne!(changed.digest, first.digest);
    let edited = OTHER_PROTO.replace("/other/ping/{name}", "/other/pong/{name}");
    live.descriptors.write("other.proto", &edited);
    let edited = live.status_until("the edit goes live", DEADLINE, |s| s.generation > changed.generation).await;
    assert_ne!(edited.digest, changed.digest, "same size, other content, other digest");
    live.descriptors.remove("other.proto");
    let restored = live.status_until("other.proto is gone", DEADLINE, |s| s.files.len() == 1).await;
    assert_eq!(restored.digest, first.digest, "the digest depends on the files alone");
    live.shutdown().await;
}
