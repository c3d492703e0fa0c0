//! Readiness (DESIGN §1, §4b, §9): whether every upstream that serves a
//! route has an endpoint in the rotation that answers. Probed in the
//! background, never per `/readyz` call: a TCP connect to each endpoint of
//! each distinct upstream of the live catalog every [`INTERVAL`], with a
//! deadline of [`TIMEOUT`]. A connect is what the gateway's own channel
//! needs first, costs the backend nothing, and works for every backend
//! whether or not it serves `grpc.health.v1`; an upstream with health
//! checks is judged by them instead.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::catalog::Catalog;
use crate::upstream::Upstream;

/// How often the upstreams are probed.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// How long one connect may take before the upstream counts as down.
const TIMEOUT: Duration = Duration::from_secs(1);

/// What the last probe found.
#[derive(Debug, Default)]
pub struct Readiness {
    state: ArcSwap<Probed>,
}

#[derive(Debug, Default)]
struct Probed {
    /// Whether a probe has finished at all.
    done: bool,
    /// URL and reason of each upstream that did not answer.
    unreachable: Vec<(String, String)>,
}

impl Readiness {
    /// Ready, or why not: one sentence per unreachable upstream.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let probed = self.state.load();
        if !probed.done {
            return Err(vec!["the upstreams have not been probed yet".to_owned()]);
        }
        match probed.unreachable.is_empty() {
            true => Ok(()),
            false => Err(probed.unreachable.iter().map(|(url, reason)| format!("upstream {url}: {reason}")).collect()),
        }
    }

    /// Probes the upstreams of whatever catalog is live, now and every
    /// [`INTERVAL`], until the catalog's owner is gone.
    pub async fn probe(self: Arc<Self>, catalog: Weak<ArcSwap<Catalog>>) {
        loop {
            let Some(live) = catalog.upgrade() else { return };
            let upstreams = live.load().upstreams();
            drop(live);
            let results = futures_util::future::join_all(upstreams.iter().map(|u| probe(u))).await;
            let unreachable = upstreams
                .iter()
                .zip(results)
                .filter_map(|(upstream, result)| result.err().map(|reason| (upstream.label.to_string(), reason)))
                .collect();
            self.state.store(Arc::new(Probed { done: true, unreachable }));
            tokio::time::sleep(INTERVAL).await;
        }
    }
}

/// Ready when an endpoint in the rotation is reachable: connected to now
/// (each endpoint is probed), or passing its health checks when the
/// upstream has them.
async fn probe(upstream: &Upstream) -> Result<(), String> {
    let cluster = &upstream.cluster;
    let endpoints = cluster.endpoints();
    if endpoints.is_empty() {
        return Err("no endpoint: its name did not resolve".to_owned());
    }
    let mut first_error = None;
    if !cluster.health_checked() {
        let probes = endpoints.iter().map(|endpoint| reach(endpoint.addr));
        for (endpoint, result) in endpoints.iter().zip(futures_util::future::join_all(probes).await) {
            endpoint.set_reachable(result.is_ok());
            if let Err(err) = result {
                first_error.get_or_insert(err);
            }
        }
    }
    if cluster.has_ready_endpoint() {
        return Ok(());
    }
    Err(first_error.unwrap_or_else(|| "no endpoint in the rotation is reachable or passing its health checks".into()))
}

/// Connects to `addr`.
async fn reach(addr: SocketAddr) -> Result<(), String> {
    match tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(format!("unreachable: {err}")),
        Err(_) => Err(format!("unreachable: no connection within {} ms", TIMEOUT.as_millis())),
    }
}
