//! Each test serves reflection from a real tonic server on 127.0.0.1:0:
//! tonic-reflection's (as the example backends use), or, for answers it
//! never gives (a missing import, a listed service it cannot describe), a
//! small one here over the same generated server trait.

use std::collections::HashMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use tonic::transport::Channel;

use futures_util::{Stream, StreamExt};
use tokio::sync::oneshot;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::{Request, Response};
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse as Answer;
use tonic_reflection::pb::v1::server_reflection_server::{ServerReflection, ServerReflectionServer};
use tonic_reflection::pb::v1::{FileDescriptorResponse, ListServiceResponse, ServiceResponse};

use super::*;
use crate::descriptors::{load, DescriptorError, FileName, Origin, RawFileSet};

const GREETER: &str = r#"
    syntax = "proto3";
    package demo.v1;
    import "google/api/annotations.proto";
    service Greeter {
      rpc Hello(HelloRequest) returns (HelloReply) { option (google.api.http) = { get: "/hello/{name}" }; }
    }
    message HelloRequest { string name = 1; }
    message HelloReply { string text = 1; }
"#;

const GREETER_FILES: &[&str] = &[
    "demo/greeter.proto",
    "google/api/annotations.proto",
    "google/api/http.proto",
    "google/protobuf/descriptor.proto",
];

/// Compiles `source` as `demo/greeter.proto` into an encoded set with its
/// imports.
fn compile(source: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("demo")).expect("mkdir");
    std::fs::write(dir.path().join("demo/greeter.proto"), source).expect("write");
    let builtin = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    let mut compiler = protox::Compiler::new([dir.path(), builtin.as_path()]).expect("compiler");
    compiler.include_imports(true);
    compiler.open_file("demo/greeter.proto").expect("compile");
    compiler.encode_file_descriptor_set()
}

/// The files of an encoded set by name, as encoded.
fn raw_files(set: &[u8]) -> HashMap<String, Vec<u8>> {
    RawFileSet::decode(set)
        .expect("set")
        .file
        .into_iter()
        .map(|raw| {
            let name = FileName::decode(raw.clone()).expect("name").name;
            (name, raw.to_vec())
        })
        .collect()
}

struct Backend {
    url: String,
    shutdown: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Backend {
    async fn start(routes: Routes) -> Backend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(Server::builder().add_routes(routes).serve_with_incoming_shutdown(
            TcpIncoming::from(listener),
            async {
                let _ = stop.await;
            },
        ));
        Backend { url, shutdown, task }
    }

    fn channel(&self) -> Channel {
        Channel::from_shared(self.url.clone()).expect("url").connect_lazy()
    }

    async fn fetch(&self, limits: Limits) -> Result<Vec<(String, Bytes)>, ReflectionError> {
        fetch_with_limits(&self.url, self.channel(), limits).await
    }

    async fn stop(self) {
        let _ = self.shutdown.send(());
        self.task.await.expect("join").expect("serve");
    }
}

fn tonic_reflection_v1(set: &[u8]) -> Routes {
    let service = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(set)
        .build_v1()
        .expect("reflection");
    Routes::new(service)
}

fn names(files: &[(String, Bytes)]) -> Vec<&str> {
    files.iter().map(|(name, _)| name.as_str()).collect()
}

/// Reflection that answers with the files' original bytes: the file itself
/// for a symbol (services only), one file by name, NOT_FOUND otherwise.
struct RawReflection {
    services: Vec<String>,
    /// Service → file name.
    symbols: HashMap<String, String>,
    files: HashMap<String, Vec<u8>>,
}

impl RawReflection {
    fn answer(&self, request: ServerReflectionRequest) -> Answer {
        let file = |name: Option<&String>| match name.and_then(|name| self.files.get(name)) {
            Some(raw) => {
                Answer::FileDescriptorResponse(FileDescriptorResponse { file_descriptor_proto: vec![raw.clone()] })
            }
            None => Answer::ErrorResponse(ErrorResponse {
                error_code: Code::NotFound as i32,
                error_message: "not found".to_owned(),
            }),
        };
        match request.message_request {
            Some(MessageRequest::ListServices(_)) => Answer::ListServicesResponse(ListServiceResponse {
                service: self.services.iter().map(|name| ServiceResponse { name: name.clone() }).collect(),
            }),
            Some(MessageRequest::FileContainingSymbol(symbol)) => file(self.symbols.get(&symbol)),
            Some(MessageRequest::FileByFilename(name)) => file(Some(&name)),
            _ => file(None),
        }
    }

    fn routes(self) -> Routes {
        Routes::new(ServerReflectionServer::new(RawServer(Arc::new(self))))
    }
}

struct RawServer(Arc<RawReflection>);

type Answers = Pin<Box<dyn Stream<Item = Result<ServerReflectionResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ServerReflection for RawServer {
    type ServerReflectionInfoStream = Answers;

    async fn server_reflection_info(
        &self,
        request: Request<Streaming<ServerReflectionRequest>>,
    ) -> Result<Response<Answers>, Status> {
        let state = self.0.clone();
        let answers = request.into_inner().map(move |request| {
            request.map(|request| ServerReflectionResponse {
                message_response: Some(state.answer(request)),
                ..Default::default()
            })
        });
        Ok(Response::new(Box::pin(answers)))
    }
}

fn raw_greeter(files: HashMap<String, Vec<u8>>) -> RawReflection {
    RawReflection {
        services: vec!["demo.v1.Greeter".to_owned()],
        symbols: HashMap::from([("demo.v1.Greeter".to_owned(), "demo/greeter.proto".to_owned())]),
        files,
    }
}

#[tokio::test]
async fn fetches_files_and_imports_over_v1() {
    let set = compile(GREETER);
    let backend = Backend::start(tonic_reflection_v1(&set)).await;
    let files = backend.fetch(Limits::default()).await.expect("fetch");
    // The reflection service's own file is listed but not fetched.
    assert_eq!(names(&files), GREETER_FILES);
    let served = raw_files(&set);
    for (name, raw) in &files {
        assert_eq!(raw.as_ref(), served[name].as_slice(), "{name} re-encoded");
    }

    let empty = tempfile::tempdir().expect("tempdir");
    let loaded = load(empty.path(), &[(backend.url.clone(), files)]).expect("load");
    let service = loaded.pool.get_service_by_name("demo.v1.Greeter").expect("service");
    assert_eq!(loaded.origin("demo/greeter.proto"), &Origin::Reflection(backend.url.clone()));
    assert!(loaded.sources.is_empty());
    let http = loaded.pool.get_extension_by_name("google.api.http").expect("extension");
    let method = service.methods().next().expect("method");
    assert!(method.options().has_extension(&http));
    backend.stop().await;
}

#[tokio::test]
async fn falls_back_to_v1alpha() {
    let set = compile(GREETER);
    let service = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(&set)
        .build_v1alpha()
        .expect("reflection");
    let backend = Backend::start(Routes::new(service)).await;
    let files = backend.fetch(Limits::default()).await.expect("fetch");
    assert_eq!(names(&files), GREETER_FILES);
    backend.stop().await;
}

#[tokio::test]
async fn server_without_reflection_is_a_clear_error() {
    let backend = Backend::start(Routes::default()).await;
    let err = backend.fetch(Limits::default()).await.expect_err("no reflection");
    assert!(matches!(err.problem, Problem::Unimplemented), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("upstream {} does not serve gRPC reflection (neither grpc.reflection.v1 nor v1alpha)", backend.url)
    );
    backend.stop().await;
}

#[tokio::test]
async fn unreachable_upstream_is_a_call_failure() {
    // A port nothing listens on: bound, then released.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let channel = Channel::from_shared(url.clone()).expect("url").connect_lazy();
    let err = fetch(&url, channel, Duration::from_secs(10)).await.expect_err("nothing listens");
    assert!(matches!(err.problem, Problem::Call(_)), "{err:?}");
    assert!(err.to_string().starts_with(&format!("upstream {url} failed the reflection call: Unavailable")), "{err}");
}

#[tokio::test]
async fn imports_the_upstream_lacks_come_from_the_built_in_files() {
    let set = compile(GREETER);
    let mut served = raw_files(&set);
    served.retain(|name, _| name == "demo/greeter.proto");
    let backend = Backend::start(raw_greeter(served).routes()).await;
    let files = backend.fetch(Limits::default()).await.expect("fetch");
    assert_eq!(names(&files), ["demo/greeter.proto"]);

    let empty = tempfile::tempdir().expect("tempdir");
    let loaded = load(empty.path(), &[(backend.url.clone(), files)]).expect("load");
    assert!(loaded.pool.get_service_by_name("demo.v1.Greeter").is_some());
    assert_eq!(loaded.origin("google/api/http.proto"), &Origin::Builtin);
    backend.stop().await;
}

#[tokio::test]
async fn a_listed_service_the_server_cannot_describe_is_named() {
    let set = compile(GREETER);
    let mut reflection = raw_greeter(raw_files(&set));
    reflection.services.push("demo.v1.Ghost".to_owned());
    let backend = Backend::start(reflection.routes()).await;
    let err = backend.fetch(Limits::default()).await.expect_err("ghost");
    match &err.problem {
        Problem::Refused { request, code, .. } => {
            assert_eq!(request, "file_containing_symbol demo.v1.Ghost");
            assert_eq!(*code, Code::NotFound);
        }
        other => panic!("unexpected {other:?}"),
    }
    backend.stop().await;
}

#[tokio::test]
async fn limits_stop_a_server_that_sends_too_much() {
    let set = compile(GREETER);
    let backend = Backend::start(tonic_reflection_v1(&set)).await;

    let few_files = Limits { max_files: 2, ..Limits::default() };
    let err = backend.fetch(few_files).await.expect_err("files");
    assert!(matches!(err.problem, Problem::TooManyFiles(2)), "{err:?}");

    // Every response fits (one file each), their sum does not.
    let all = backend.fetch(Limits::default()).await.expect("fetch");
    let total: usize = all.iter().map(|(_, raw)| raw.len()).sum();
    let few_bytes = Limits { max_bytes: total - 1, ..Limits::default() };
    let err = backend.fetch(few_bytes).await.expect_err("bytes");
    assert!(matches!(err.problem, Problem::TooLarge(n) if n == total - 1), "{err:?}");

    // A response over the bound is refused while decoding: every file
    // response is, the service list is smaller than any file.
    let smallest = all.iter().map(|(_, raw)| raw.len()).min().expect("files");
    let tiny = Limits { max_bytes: smallest - 1, ..Limits::default() };
    let err = backend.fetch(tiny).await.expect_err("message");
    assert!(matches!(err.problem, Problem::Call(_)), "{err:?}");

    let no_services = Limits { max_files: 0, ..Limits::default() };
    let err = backend.fetch(no_services).await.expect_err("services");
    assert!(matches!(err.problem, Problem::TooManyServices(0)), "{err:?}");
    backend.stop().await;
}

#[tokio::test]
async fn a_silent_upstream_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    // Accepts connections and never says a word.
    let (held, hold) = oneshot::channel::<()>();
    let silent = tokio::spawn(async move {
        let mut sockets = Vec::new();
        tokio::select! {
            _ = hold => {}
            _ = async {
                while let Ok((socket, _)) = listener.accept().await {
                    sockets.push(socket);
                }
            } => {}
        }
    });
    let channel = Channel::from_shared(url.clone()).expect("url").connect_lazy();
    let err = fetch(&url, channel, Duration::from_millis(300)).await.expect_err("silent");
    assert!(matches!(err.problem, Problem::Timeout(_)), "{err:?}");
    let _ = held.send(());
    silent.await.expect("join");
}

#[tokio::test]
async fn a_folder_file_and_a_reflected_file_of_one_name_conflict() {
    let set = compile(GREETER);
    let backend = Backend::start(tonic_reflection_v1(&set)).await;
    let files = backend.fetch(Limits::default()).await.expect("fetch");

    let folder = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(folder.path().join("demo")).expect("mkdir");
    std::fs::write(
        folder.path().join("demo/greeter.proto"),
        GREETER.replace("string text = 1;", "string text = 1; int32 count = 2;"),
    )
    .expect("write");
    let err = load(folder.path(), &[(backend.url.clone(), files)]).expect_err("conflict");
    assert!(matches!(err, DescriptorError::Conflict { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("demo/greeter.proto is defined differently in demo/greeter.proto and {} (reflection)", backend.url)
    );
    backend.stop().await;
}

#[tokio::test]
async fn the_same_file_in_the_folder_and_upstream_loads_once_with_its_options() {
    let set = compile(GREETER);
    let backend = Backend::start(tonic_reflection_v1(&set)).await;
    let files = backend.fetch(Limits::default()).await.expect("fetch");

    let folder = tempfile::tempdir().expect("tempdir");
    std::fs::write(folder.path().join("greeter.binpb"), &set).expect("write");
    let loaded = load(folder.path(), &[(backend.url.clone(), files)]).expect("load");
    // One file, credited to the folder, which is merged first.
    assert_eq!(loaded.origin("demo/greeter.proto"), &Origin::Folder("greeter.binpb".into()));
    let http = loaded.pool.get_extension_by_name("google.api.http").expect("extension");
    let method = loaded.pool.get_service_by_name("demo.v1.Greeter").expect("service").methods().next().expect("method");
    assert!(method.options().has_extension(&http));
    backend.stop().await;
}

#[test]
fn reflection_paths_name_the_services() {
    use tonic_reflection::pb::{v1, v1alpha};
    type ServerV1 = v1::server_reflection_server::ServerReflectionServer<RawServer>;
    type ServerV1Alpha =
        v1alpha::server_reflection_server::ServerReflectionServer<tonic_reflection::server::v1alpha::ReflectionService>;
    assert_eq!(V1, format!("/{}/ServerReflectionInfo", ServerV1::NAME));
    assert_eq!(V1ALPHA, format!("/{}/ServerReflectionInfo", ServerV1Alpha::NAME));
}
