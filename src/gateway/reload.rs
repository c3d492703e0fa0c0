//! Hot reload: the descriptor folder is the control plane.
//!
//! A watcher (filesystem events, debounced, plus a slow fingerprint poll as
//! a safety net for missing folders and file systems without events) and
//! SIGHUP trigger a rebuild. The new catalog is built on a blocking thread,
//! off the request path, validated as a whole, and swapped in atomically;
//! requests in flight finish on the snapshot they started with. A refused
//! reload changes nothing that serves: the error is logged once and kept in
//! [`ReloadStatus`] for `/descriptors`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::{mpsc, Mutex};

use super::load::Loader;
use crate::catalog::{Catalog, LoadError, Reflected, SkippedBinding};
use crate::descriptors;
use crate::metrics::{Metrics, ReloadResult};

/// Quiet time after the last file event before a reload: editors and `cp`
/// write in several steps.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// How often the folder is checked even without events.
const POLL: Duration = Duration::from_secs(2);

/// What is live and how the last reload went; shown at `/descriptors`.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadStatus {
    /// Increments on every catalog swapped in (the first load is 1).
    pub generation: u64,
    /// SHA-256 of the live descriptor files.
    pub digest: String,
    pub files: Vec<LiveFile>,
    pub routes: usize,
    /// Unix seconds of the live catalog's load.
    pub loaded_at: u64,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    /// The last refused reload, if it came after the live catalog.
    pub last_error: Option<RefusedReload>,
    /// Bindings of the live catalog left out under
    /// `routes.invalid_bindings: skip`.
    pub skipped_bindings: Vec<SkippedBinding>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LiveFile {
    pub path: PathBuf,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RefusedReload {
    /// Unix seconds.
    pub at: u64,
    pub problems: Vec<String>,
}

/// Rebuilds and swaps the catalog.
pub struct Reloader {
    loader: Loader,
    catalog: Arc<ArcSwap<Catalog>>,
    status: ArcSwap<ReloadStatus>,
    /// One reload at a time; holds the fingerprint of the last attempt.
    attempt: Mutex<Vec<(PathBuf, u64, SystemTime)>>,
    /// The latest files from each reflection source.
    reflected: ArcSwap<Vec<Reflected>>,
    ok: AtomicU64,
    failed: AtomicU64,
    metrics: Arc<Metrics>,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Reloader {
    /// The first load; an invalid folder at start-up is an error (exit 1),
    /// a missing or empty one is not.
    pub fn start(loader: Loader, metrics: Arc<Metrics>) -> Result<Self, LoadError> {
        let fingerprint = descriptors::fingerprint(&loader.config.descriptors);
        let catalog = loader.build(&[])?;
        log_skipped(&catalog);
        let status = live_status(&catalog, 1, 1, 0, None);
        metrics.catalog_routes(catalog.routes.len());
        Ok(Self {
            reflected: ArcSwap::from_pointee(Vec::new()),
            catalog: Arc::new(ArcSwap::from_pointee(catalog)),
            status: ArcSwap::from_pointee(status),
            attempt: Mutex::new(fingerprint),
            ok: AtomicU64::new(1),
            failed: AtomicU64::new(0),
            loader,
            metrics,
        })
    }

    /// The upstream channels (made once, at start).
    pub fn upstreams(&self) -> &crate::upstream::Upstreams {
        &self.loader.upstreams
    }

    pub fn catalog(&self) -> &Arc<ArcSwap<Catalog>> {
        &self.catalog
    }

    pub fn status(&self) -> Arc<ReloadStatus> {
        self.status.load_full()
    }

    /// Reloads if the folder changed since the last attempt (or always, when
    /// `force`). Returns whether a new catalog went live.
    pub async fn reload(&self, force: bool) -> Result<bool, LoadError> {
        let mut last = self.attempt.lock().await;
        let dir = self.loader.config.descriptors.clone();
        let fingerprint = tokio::task::spawn_blocking(move || descriptors::fingerprint(&dir)).await.unwrap_or_default();
        if !force && fingerprint == *last {
            return Ok(false);
        }
        *last = fingerprint;

        let loader = self.loader.clone();
        let reflected = self.reflected.load_full();
        let built = tokio::task::spawn_blocking(move || loader.build(&reflected))
            .await
            .unwrap_or_else(|err| Err(LoadError { problems: vec![format!("reload task failed: {err}")] }));
        let previous = self.status.load();
        match built {
            Ok(catalog) => {
                log_skipped(&catalog);
                let ok = self.ok.fetch_add(1, Ordering::Relaxed) + 1;
                let failed = self.failed.load(Ordering::Relaxed);
                let status = live_status(&catalog, previous.generation + 1, ok, failed, None);
                tracing::info!(
                    generation = status.generation,
                    routes = status.routes,
                    files = status.files.len(),
                    digest = %status.digest,
                    "descriptor reload: new catalog live"
                );
                self.metrics.reload(ReloadResult::Ok);
                self.metrics.catalog_routes(catalog.routes.len());
                self.catalog.store(Arc::new(catalog));
                self.status.store(Arc::new(status));
                Ok(true)
            }
            Err(err) => {
                let failed = self.failed.fetch_add(1, Ordering::Relaxed) + 1;
                self.metrics.reload(ReloadResult::Refused);
                tracing::error!(
                    error = %err,
                    live_digest = %previous.digest,
                    "descriptor reload refused; the previous catalog keeps serving"
                );
                let mut status = (**previous).clone();
                status.reloads_failed = failed;
                status.last_error = Some(RefusedReload { at: unix_now(), problems: err.problems.clone() });
                self.status.store(Arc::new(status));
                Err(err)
            }
        }
    }

    /// Asks every reflection source again; a source that fails keeps its
    /// previous files (logged). Returns whether anything changed.
    pub async fn refresh_reflection(&self) -> bool {
        let previous = self.reflected.load_full();
        let (mut next, problems) = self.loader.reflect().await;
        for problem in problems {
            tracing::error!(error = %problem, "gRPC reflection failed; keeping the files it gave last");
        }
        // Keep, in source order, the last files of the sources that failed.
        for (url, _) in self.loader.upstreams.reflection_sources() {
            if !next.iter().any(|(u, _)| u == url) {
                if let Some(old) = previous.iter().find(|(u, _)| u == url) {
                    next.push(old.clone());
                }
            }
        }
        let order = |url: &str| self.loader.upstreams.reflection_sources().iter().position(|(u, _)| u == url);
        next.sort_by_key(|(url, _)| order(url));
        if next == *previous {
            return false;
        }
        self.reflected.store(Arc::new(next));
        true
    }

    /// Watches the folder and SIGHUP until `shutdown` resolves.
    pub async fn watch(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let (tx, mut events) = mpsc::channel::<()>(1);
        let mut watcher = FolderWatcher::new(self.loader.config.descriptors.clone(), tx);
        let mut hangup = hangup_signal();
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let reflecting = !self.loader.upstreams.reflection_sources().is_empty();
        // The first tick fires at once: reflected services appear right
        // after start.
        let mut reflection = tokio::time::interval(self.loader.config.reflection_interval);
        reflection.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            let force = tokio::select! {
                () = &mut shutdown => return,
                Some(()) = events.recv() => {
                    // Debounce: wait until the folder has been quiet a moment.
                    while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, events.recv()).await {}
                    false
                }
                _ = poll.tick() => {
                    watcher.ensure();
                    false
                }
                _ = reflection.tick(), if reflecting => self.refresh_reflection().await,
                Some(()) = hangup.recv() => {
                    tracing::info!("SIGHUP: reloading descriptors");
                    if reflecting {
                        self.refresh_reflection().await;
                    }
                    true
                }
            };
            // Errors are logged and kept in the status by `reload`.
            let _ = self.reload(force).await;
        }
    }
}

fn live_status(
    catalog: &Catalog,
    generation: u64,
    ok: u64,
    failed: u64,
    last_error: Option<RefusedReload>,
) -> ReloadStatus {
    ReloadStatus {
        generation,
        digest: catalog.digest.clone(),
        files: catalog.sources.iter().map(|s| LiveFile { path: s.path.clone(), size: s.size }).collect(),
        routes: catalog.routes.len(),
        loaded_at: unix_now(),
        reloads_ok: ok,
        reloads_failed: failed,
        last_error,
        skipped_bindings: catalog.skipped.clone(),
    }
}

/// Each skipped binding, once per load that goes live.
fn log_skipped(catalog: &Catalog) {
    for skipped in &catalog.skipped {
        tracing::warn!(
            method = %skipped.method,
            binding = %skipped.binding,
            source = %skipped.source,
            reason = %skipped.reason,
            "binding skipped (routes.invalid_bindings: skip)"
        );
    }
}

/// A notify watcher on the folder, (re)created once the folder exists.
struct FolderWatcher {
    dir: PathBuf,
    tx: mpsc::Sender<()>,
    inner: Option<notify::RecommendedWatcher>,
}

impl FolderWatcher {
    fn new(dir: PathBuf, tx: mpsc::Sender<()>) -> Self {
        let mut this = Self { dir, tx, inner: None };
        this.ensure();
        this
    }

    /// Starts watching if not yet watching and the folder exists now.
    fn ensure(&mut self) {
        use notify::Watcher;
        if self.inner.is_some() || !self.dir.is_dir() {
            return;
        }
        let tx = self.tx.clone();
        let handler = move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| !e.kind.is_access()) {
                // A full channel already holds a wake-up; dropping is fine.
                let _ = tx.try_send(());
            }
        };
        match notify::recommended_watcher(handler) {
            Ok(mut watcher) => match watcher.watch(&self.dir, notify::RecursiveMode::Recursive) {
                Ok(()) => self.inner = Some(watcher),
                Err(err) => {
                    tracing::warn!(error = %err, dir = %self.dir.display(), "cannot watch descriptor folder; polling")
                }
            },
            Err(err) => tracing::warn!(error = %err, "no file watcher available; polling"),
        }
    }
}

/// SIGHUP as a stream of wake-ups (never fires where there is no SIGHUP).
fn hangup_signal() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(1);
    #[cfg(unix)]
    {
        if let Ok(mut signal) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            tokio::spawn(async move {
                while signal.recv().await.is_some() {
                    if tx.send(()).await.is_err() {
                        break;
                    }
                }
            });
        }
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}
