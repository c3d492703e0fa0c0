//! The gateway in process, started in one call: a descriptor folder of the
//! test's own, a config (a [`Config`] or the YAML an operator would write)
//! and the backends it routes to; the public listener (and on request the
//! admin listener) on `127.0.0.1:0`, each served until its shutdown channel
//! fires. [`TestGateway::shutdown`] stops the listeners, joins them, then
//! shuts down the backends it was given; dropping it only signals the stop.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::api::{self, Config, Gateway, ReloadStatus, UpstreamRule};
use super::backend::{bind, Backend};
use super::fixtures;
use super::pb::protogate::test::v1::StreamStatsResponse;
use super::reply::{http_client, Reply};
use super::wait::eventually;

/// The descriptor folder a gateway loads: a temporary directory of the
/// test's own, removed on drop.
#[derive(Debug)]
pub struct Descriptors(tempfile::TempDir);

impl Descriptors {
    pub fn empty() -> Descriptors {
        Descriptors(tempfile::tempdir().expect("create descriptor folder"))
    }

    /// A folder holding `test.binpb`, the test service's set.
    pub fn test_service() -> Descriptors {
        Self::empty().with("test.binpb", fixtures::test_service_descriptor_set())
    }

    /// The folder with `name` (a path inside it) holding `contents`.
    pub fn with(self, name: &str, contents: impl AsRef<[u8]>) -> Descriptors {
        self.write(name, contents);
        self
    }

    /// The folder with a copy of the committed `descriptors/{set}`, at the
    /// same relative path (`v1/users.binpb` lands in `v1/`).
    pub fn with_shipped(self, set: &str) -> Descriptors {
        let from = fixtures::repo_path("descriptors").join(set);
        let contents = std::fs::read(&from).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        self.with(set, contents)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// The folder's path as text, for flags and YAML.
    pub fn path_str(&self) -> &str {
        self.path().to_str().expect("temp path is UTF-8")
    }

    /// The path of `name` inside the folder.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }

    /// Writes `name` (a path inside the folder, its folders created).
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) {
        let path = self.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("create the folder of {name}: {e}"));
        }
        std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {name}: {e}"));
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.join(name)).unwrap_or_else(|e| panic!("remove {name}: {e}"));
    }
}

/// What the gateway's config is made from. Either way the gateway loads the
/// harness's [`Descriptors`] folder.
#[derive(Debug)]
pub enum Setup {
    /// Used as given, but for `descriptors`.
    Config(Box<Config>),
    /// The text of a config file; `{descriptors}` in it stands for the
    /// folder's path (quoted), so that it can be written where an operator
    /// would write it.
    Yaml(String),
}

impl From<Config> for Setup {
    fn from(config: Config) -> Setup {
        Setup::Config(Box::new(config))
    }
}

impl From<String> for Setup {
    fn from(yaml: String) -> Setup {
        Setup::Yaml(yaml)
    }
}

impl From<&str> for Setup {
    fn from(yaml: &str) -> Setup {
        Setup::Yaml(yaml.to_owned())
    }
}

impl Setup {
    fn resolve(self, descriptors: &Descriptors) -> Config {
        let mut config = match self {
            Setup::Config(config) => *config,
            Setup::Yaml(yaml) => {
                let yaml = yaml.replace("{descriptors}", &format!("{:?}", descriptors.path_str()));
                let origin = descriptors.join("protogate.yaml");
                api::from_yaml(&yaml, &origin).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
            }
        };
        config.descriptors = descriptors.path().to_path_buf();
        config
    }
}

/// The default config with every service routed to `backend`.
pub fn config_for(backend: &Backend) -> Config {
    Config { upstreams: vec![UpstreamRule::new("*", backend.url().parse().expect("backend url"))], ..Config::default() }
}

/// Starts the gateway over `descriptors` with `config`, serving its public
/// listener. `backends` are the gateway's to shut down after itself (a test
/// that stops or starts a backend on its own keeps it instead).
pub async fn start(descriptors: Descriptors, config: impl Into<Setup>, backends: Vec<Backend>) -> TestGateway {
    launch(descriptors, config.into(), backends, false).await
}

/// [`start`], with the admin listener too ([`TestGateway::admin_url`]).
pub async fn start_with_admin(
    descriptors: Descriptors,
    config: impl Into<Setup>,
    backends: Vec<Backend>,
) -> TestGateway {
    launch(descriptors, config.into(), backends, true).await
}

/// The gateway over the test service's set in front of a fresh test service
/// backend, with the default config.
pub async fn start_test_service() -> TestGateway {
    start_test_service_with(|_| {}).await
}

/// Like [`start_test_service`], with `configure` applied to the config last.
pub async fn start_test_service_with(configure: impl FnOnce(&mut Config)) -> TestGateway {
    let backend = Backend::test_service().await;
    let mut config = config_for(&backend);
    configure(&mut config);
    start(Descriptors::test_service(), config, vec![backend]).await
}

/// [`start_test_service`] with the connection deadlines of `limits` set.
pub async fn start_test_service_with_timeouts(header_read: Duration, idle: Duration) -> TestGateway {
    start_test_service_with(|config| {
        config.limits.header_read_timeout = header_read;
        config.limits.idle_timeout = idle;
    })
    .await
}

async fn launch(descriptors: Descriptors, setup: Setup, backends: Vec<Backend>, admin: bool) -> TestGateway {
    let gateway =
        Gateway::load(setup.resolve(&descriptors)).unwrap_or_else(|e| panic!("gateway refused to start: {e}"));
    let public = bind().await;
    let base = format!("http://{}", public.local_addr().expect("gateway local addr"));
    let mut started = TestGateway {
        base,
        admin: None,
        client: http_client(),
        gateway: gateway.clone(),
        descriptors,
        backends,
        stop: Vec::new(),
        tasks: Vec::new(),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    started.stop.push(stop);
    started.tasks.push(tokio::spawn(gateway.clone().serve(public, async move {
        let _ = stopped.await;
    })));
    if admin {
        let listener = bind().await;
        started.admin = Some(format!("http://{}", listener.local_addr().expect("admin local addr")));
        let (stop, stopped) = oneshot::channel::<()>();
        started.stop.push(stop);
        started.tasks.push(tokio::spawn(api::serve_admin(gateway, listener, async move {
            let _ = stopped.await;
        })));
    }
    started
}

/// A running gateway; see the module documentation.
pub struct TestGateway {
    /// `http://127.0.0.1:PORT` of the public listener.
    pub base: String,
    admin: Option<String>,
    pub client: reqwest::Client,
    /// The gateway itself, for its catalog, reload status and limiter.
    pub gateway: Gateway,
    /// The folder the gateway loads and watches.
    pub descriptors: Descriptors,
    backends: Vec<Backend>,
    stop: Vec<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
}

impl TestGateway {
    /// Full URL of `path_and_query` on the public listener.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.base, path_and_query)
    }

    /// Full URL of `path` on the admin listener ([`start_with_admin`]).
    pub fn admin_url(&self, path: &str) -> String {
        let admin = self.admin.as_deref().expect("the admin listener runs only with start_with_admin");
        format!("{admin}{path}")
    }

    /// `127.0.0.1:PORT` of the public listener.
    pub fn authority(&self) -> &str {
        self.base.trim_start_matches("http://")
    }

    pub async fn get(&self, path_and_query: &str) -> Reply {
        self.request(reqwest::Method::GET, path_and_query, &[], None).await
    }

    pub async fn post_json(&self, path: &str, body: &str) -> Reply {
        self.request(
            reqwest::Method::POST,
            path,
            &[("content-type", "application/json")],
            Some(body.as_bytes().to_vec()),
        )
        .await
    }

    /// A request to `path` on the public listener.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        self.request_url(method, &self.url(path), headers, body).await
    }

    /// A request to any `url` (the admin listener's, say).
    pub async fn request_url(
        &self,
        method: reqwest::Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut builder = self.client.request(method.clone(), url);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        if let Some(body) = body {
            builder = builder.body(body);
        }
        let response = builder.send().await.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        Reply::read(response).await
    }

    /// Polls `GET path` until it answers `status`, for at most `within`.
    pub async fn get_until(&self, path: &str, status: u16, within: Duration) -> Reply {
        eventually(&format!("GET {path} answers {status}"), within, || async {
            let reply = self.get(path).await;
            if reply.status.as_u16() == status {
                Ok(reply)
            } else {
                Err(format!("{} {}; routes:\n{}", reply.status, reply.text(), self.route_table()))
            }
        })
        .await
    }

    /// The first backend the gateway was given.
    pub fn backend(&self) -> &Backend {
        self.backends.first().expect("the gateway was started with a backend")
    }

    /// The backends the gateway was given, in order.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// What the first backend counted (for the test service: what its
    /// `Count` answers, calls it received, `Count` excluded).
    pub fn backend_calls(&self) -> u64 {
        self.backend().calls()
    }

    /// The first backend's stream counters (the test service's `StreamStats`).
    pub async fn stream_stats(&self) -> StreamStatsResponse {
        self.backend().stream_stats().await
    }

    /// Polls the first backend's stream counters until `check` accepts them.
    pub async fn stream_stats_until(
        &self,
        what: &str,
        check: impl Fn(&StreamStatsResponse) -> bool,
    ) -> StreamStatsResponse {
        self.backend().stream_stats_until(what, check).await
    }

    /// The reload status: generation, files, digest, last error.
    pub fn status(&self) -> Arc<ReloadStatus> {
        self.gateway.reloader().status()
    }

    /// Polls the reload status until `check` accepts it, for at most `within`.
    pub async fn status_until(
        &self,
        what: &str,
        within: Duration,
        check: impl Fn(&ReloadStatus) -> bool,
    ) -> Arc<ReloadStatus> {
        eventually(what, within, || async {
            let status = self.status();
            if check(&status) {
                Ok(status)
            } else {
                Err(format!("{status:?}"))
            }
        })
        .await
    }

    /// The gRPC method of every route being served.
    pub fn grpc_methods(&self) -> Vec<String> {
        self.gateway.catalog().routes.iter().map(|r| r.grpc_method().to_owned()).collect()
    }

    /// The route table as `protogate routes` prints it.
    pub fn route_table(&self) -> String {
        api::route_table(&self.gateway.catalog())
    }

    /// The cells of `columns` (header names of `protogate routes`) of every
    /// route, read back from the printed table by the header's column
    /// positions (cells may contain single spaces, and the table may have
    /// other columns).
    pub fn route_rows<const N: usize>(&self, columns: [&str; N]) -> Vec<[String; N]> {
        let table = self.route_table();
        let mut lines = table.lines();
        let header = lines.next().unwrap_or_default();
        // Columns are padded and separated by at least two spaces.
        let mut starts = Vec::new();
        let mut names = Vec::new();
        let mut rest = header;
        while !rest.is_empty() {
            let start = header.len() - rest.len();
            let end = rest.find("  ").unwrap_or(rest.len());
            starts.push(start);
            names.push(&rest[..end]);
            rest = rest[end..].trim_start();
        }
        let column = |name: &str| -> (usize, Option<usize>) {
            let i = names.iter().position(|n| *n == name).unwrap_or_else(|| panic!("no {name} column in\n{table}"));
            (starts[i], starts.get(i + 1).copied())
        };
        let wanted = columns.map(column);
        lines
            .take_while(|line| !line.is_empty())
            .map(|line| {
                wanted.map(|(start, end)| {
                    let cell = match end {
                        Some(end) => line.get(start..end.min(line.len())),
                        None => line.get(start..),
                    };
                    cell.unwrap_or_default().trim().to_owned()
                })
            })
            .collect()
    }

    /// Stops the listeners and joins them (each must exit cleanly), then
    /// shuts down the backends the gateway was given.
    pub async fn shutdown(mut self) {
        for stop in self.stop.drain(..) {
            let _ = stop.send(());
        }
        for task in self.tasks.drain(..) {
            task.await.expect("gateway task panicked").expect("gateway server failed");
        }
        for backend in self.backends.drain(..) {
            backend.shutdown().await;
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        for stop in self.stop.drain(..) {
            let _ = stop.send(());
        }
    }
}

/// `{id}` and `{id=*}` are the same template (http.proto); compare either.
pub fn canonical(template: &str) -> String {
    template.replace("=*}", "}")
}
