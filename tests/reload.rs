//! Hot reload (DESIGN §2): the descriptor folder is the control plane. Files
//! that arrive, change or go away change the routes of a running gateway
//! without a restart; a folder that does not validate changes nothing that
//! serves, and says why in the reload status. Every wait here polls with a
//! deadline: the watcher reacts to file events within a debounce, and a
//! 2 s fingerprint poll catches anything the events miss.

mod common;

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{assert_error, start_backend, BackendHandle, Reply};
use protogate::config::{Config, UpstreamRule};
use protogate::gateway::reload::ReloadStatus;
use protogate::gateway::Gateway;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a change may take to go live (or be refused).
const DEADLINE: Duration = Duration::from_secs(15);

/// A service nothing collides with.
const OTHER_PROTO: &str = r#"
syntax = "proto3";
package other.v1;
import "google/api/annotations.proto";

service Other {
  rpc Ping(PingRequest) returns (PingReply) {
    option (google.api.http) = { get: "/other/ping/{name}" };
  }
}
message PingRequest { string name = 1; }
message PingReply {}
"#;

/// Binds the template of the test service's `Metadata` method again.
const CLASH_PROTO: &str = r#"
syntax = "proto3";
package clash.v1;
import "google/api/annotations.proto";

service Clash {
  rpc Get(GetRequest) returns (GetReply) {
    option (google.api.http) = { get: "/test/metadata" };
  }
}
message GetRequest {}
message GetReply {}
"#;

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

/// `OTHER_PROTO` as a serialized `FileDescriptorSet` (imports included), as
/// `buf build -o` would write it.
fn other_descriptor_set() -> Vec<u8> {
    let sources = tempfile::tempdir().expect("proto source folder");
    std::fs::write(sources.path().join("other.proto"), OTHER_PROTO).expect("write other.proto");
    let repo_protos = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    let mut compiler = protox::Compiler::new([sources.path().to_path_buf(), repo_protos]).expect("include paths");
    compiler.include_imports(true);
    compiler.open_file("other.proto").expect("other.proto compiles");
    compiler.encode_file_descriptor_set()
}

/// A gateway on its own (initially given) descriptor folder in front of the
/// test backend, with the [`Gateway`] kept for its reload status.
struct Live {
    gateway: Gateway,
    base: String,
    client: reqwest::Client,
    dir: TempDir,
    backend: Option<BackendHandle>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Live {
    async fn start(with_test_set: bool) -> Live {
        let (backend_addr, backend) = start_backend().await;
        let dir = tempfile::tempdir().expect("descriptor folder");
        if with_test_set {
            std::fs::write(dir.path().join("test.binpb"), common::test_service_descriptor_set())
                .expect("write test.binpb");
        }
        let config = Config {
            descriptors: dir.path().to_path_buf(),
            upstreams: vec![UpstreamRule {
                pattern: "*".into(),
                url: format!("http://{backend_addr}").parse().expect("backend url"),
            }],
            ..Config::default()
        };
        let gateway = Gateway::load(config).unwrap_or_else(|e| panic!("gateway refused the folder: {e}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind gateway");
        let base = format!("http://{}", listener.local_addr().expect("gateway addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway.clone().serve(listener, async move {
            let _ = stopped.await;
        }));
        Live {
            gateway,
            base,
            client: common::http_client(),
            dir,
            backend: Some(backend),
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) {
        std::fs::write(self.path(name), contents).unwrap_or_else(|e| panic!("write {name}: {e}"));
    }

    fn remove(&self, name: &str) {
        std::fs::remove_file(self.path(name)).unwrap_or_else(|e| panic!("remove {name}: {e}"));
    }

    fn status(&self) -> Arc<ReloadStatus> {
        self.gateway.reloader().status()
    }

    fn grpc_methods(&self) -> Vec<String> {
        self.gateway.catalog().routes.iter().map(|r| r.grpc_method().to_owned()).collect()
    }

    async fn get(&self, path: &str) -> Reply {
        let response =
            self.client.get(format!("{}{path}", self.base)).send().await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
        Reply::read(response).await
    }

    /// Polls `GET path` until it answers `status`.
    async fn until_status(&self, path: &str, status: u16) -> Reply {
        eventually(&format!("GET {path} answers {status}"), || async {
            let reply = self.get(path).await;
            if reply.status.as_u16() == status {
                Ok(reply)
            } else {
                Err(format!("{} {}", reply.status, reply.text()))
            }
        })
        .await
    }

    /// Polls the reload status until `check` accepts it.
    async fn until(&self, what: &str, check: impl Fn(&ReloadStatus) -> bool) -> Arc<ReloadStatus> {
        eventually(what, || async {
            let status = self.status();
            if check(&status) {
                Ok(status)
            } else {
                Err(format!("{status:?}"))
            }
        })
        .await
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("gateway task panicked").expect("gateway server failed");
        }
        if let Some(backend) = self.backend.take() {
            backend.shutdown().await;
        }
    }
}

/// Runs `attempt` until it succeeds, or panics with its last complaint once
/// [`DEADLINE`] has passed.
async fn eventually<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(last) => {
                assert!(start.elapsed() < DEADLINE, "not within {DEADLINE:?}: {what}; last seen: {last}");
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn problems(status: &ReloadStatus) -> String {
    status.last_error.as_ref().map(|e| e.problems.join("\n")).unwrap_or_default()
}

#[tokio::test]
async fn routes_follow_the_files_in_the_folder() {
    let live = Live::start(false).await;
    let first = live.status();
    assert!(first.files.is_empty() && first.routes == 0, "{first:?}");
    assert_error(&live.get("/test/metadata").await, 404, 5);

    live.write("test.binpb", common::test_service_descriptor_set());
    let reply = live.until_status("/test/metadata", 200).await;
    assert!(reply.json()["headers"].is_object(), "{}", reply.text());
    let status = live.status();
    assert!(status.generation > first.generation, "{status:?}");
    assert_eq!(status.files.len(), 1, "{status:?}");
    assert_eq!(status.files[0].path, Path::new("test.binpb"));
    assert!(status.routes > 0);

    live.remove("test.binpb");
    assert_error(&live.until_status("/test/metadata", 404).await, 404, 5);
    let status = live.until("the status shows no files", |s| s.files.is_empty()).await;
    assert_eq!(status.routes, 0, "{status:?}");
    live.shutdown().await;
}

#[tokio::test]
async fn a_corrupt_file_is_refused_and_the_old_routes_keep_serving() {
    let live = Live::start(true).await;
    let before = live.status();
    live.write("broken.binpb", b"\x0a\xff\xff\xff\xff\x0fthis is not a descriptor set");
    let refused = live.until("the reload is refused", |s| s.last_error.is_some()).await;
    assert!(problems(&refused).contains("broken.binpb"), "the error does not name the file: {refused:?}");
    assert_eq!(refused.generation, before.generation, "a refused reload went live: {refused:?}");
    assert_eq!(refused.digest, before.digest);
    assert!(refused.reloads_failed > before.reloads_failed);
    let reply = live.get("/test/metadata").await;
    assert_eq!(reply.status, 200, "the old catalog must keep serving: {}", reply.text());

    // Fixed in place: a valid set under the same name goes live.
    live.write("broken.binpb", other_descriptor_set());
    let fixed = live.until("the fixed file goes live", |s| s.generation > before.generation).await;
    let fixed = if fixed.last_error.is_some() {
        // A reload may have caught the file half written; the next one sees it whole.
        live.until("the fixed file goes live cleanly", |s| s.last_error.is_none()).await
    } else {
        fixed
    };
    assert!(fixed.last_error.is_none(), "{fixed:?}");
    assert_ne!(fixed.digest, before.digest);
    let methods = live.grpc_methods();
    assert!(methods.iter().any(|m| m == "other.v1.Other/Ping"), "{methods:?}");
    assert_eq!(live.get("/test/metadata").await.status, 200);
    assert_ne!(live.get("/other/ping/x").await.status, 404, "the new route is not served");
    live.shutdown().await;
}

#[tokio::test]
async fn a_colliding_file_is_refused_naming_both_methods() {
    let live = Live::start(true).await;
    let before = live.status();
    live.write("clash.proto", CLASH_PROTO);
    let refused = live.until("the collision is refused", |s| problems(s).contains("clash.v1.Clash/Get")).await;
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
    live.remove("clash.proto");
    let recovered = live.until("the folder is valid again", |s| s.last_error.is_none()).await;
    assert!(recovered.generation > before.generation);
    assert_eq!(recovered.digest, before.digest, "same files, same digest");
    live.shutdown().await;
}

#[tokio::test]
async fn an_atomic_rename_is_picked_up_whole() {
    let live = Live::start(false).await;
    // Written under a name the loader ignores …
    live.write("test.tmp", common::test_service_descriptor_set());
    assert!(live.gateway.reloader().reload(true).await.expect("an empty folder is valid"), "forced reload");
    let status = live.status();
    assert!(status.files.is_empty(), "a .tmp file was loaded: {status:?}");
    assert_error(&live.get("/test/metadata").await, 404, 5);

    // … then renamed into place, as editors and deploy tools do.
    std::fs::rename(live.path("test.tmp"), live.path("test.binpb")).expect("rename into place");
    assert_eq!(live.until_status("/test/metadata", 200).await.status, 200);
    let status = live.status();
    assert_eq!(status.reloads_failed, 0, "a reload saw a partial file: {status:?}");
    assert_eq!(status.files.len(), 1, "{status:?}");
    live.shutdown().await;
}

#[tokio::test]
async fn many_files_dropped_at_once_all_appear() {
    const N: usize = 20;
    let live = Live::start(true).await;
    for n in 0..N {
        live.write(&format!("gen{n}.proto"), generated_proto(n));
    }
    let expected: Vec<String> = (0..N).map(|n| format!("gen{n}.v1.Gen{n}/Ping")).collect();
    eventually("all generated services are routed", || async {
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
    let live = Arc::new(Live::start(true).await);
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
    eventually("the clients are running", || async {
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
            live.write("extra.proto", OTHER_PROTO);
        } else {
            live.remove("extra.proto");
        }
        live.until(&format!("change {change} goes live"), |s| s.generation > generation && s.last_error.is_none())
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
    let live = Live::start(true).await;
    let first = live.status();
    assert_eq!(first.digest.len(), 64, "{first:?}");
    assert!(first.digest.bytes().all(|b| b.is_ascii_hexdigit()), "{first:?}");
    assert_eq!(first.files[0].size, common::test_service_descriptor_set().len() as u64);

    // Nothing changed: nothing to do; forced: a new generation, same digest.
    let reloader = live.gateway.reloader();
    assert!(!reloader.reload(false).await.expect("valid folder"), "reloaded an unchanged folder");
    assert_eq!(live.status().generation, first.generation);
    assert!(reloader.reload(true).await.expect("valid folder"));
    let forced = live.status();
    assert_eq!(forced.generation, first.generation + 1);
    assert_eq!(forced.digest, first.digest, "same files, same digest");

    live.write("other.proto", OTHER_PROTO);
    let changed = live.until("other.proto goes live", |s| s.files.len() == 2).await;
    assert_ne!(changed.digest, first.digest);
    let edited = OTHER_PROTO.replace("/other/ping/{name}", "/other/pong/{name}");
    live.write("other.proto", &edited);
    let edited = live.until("the edit goes live", |s| s.generation > changed.generation).await;
    assert_ne!(edited.digest, changed.digest, "same size, other content, other digest");
    live.remove("other.proto");
    let restored = live.until("other.proto is gone", |s| s.files.len() == 1).await;
    assert_eq!(restored.digest, first.digest, "the digest depends on the files alone");
    live.shutdown().await;
}
