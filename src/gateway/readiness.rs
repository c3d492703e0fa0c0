//! Readiness (DESIGN §1, §9): whether every upstream that serves a route
//! answers. Probed in the background, never per `/readyz` call: a TCP
//! connect to each distinct upstream of the live catalog every
//! [`INTERVAL`], with a deadline of [`TIMEOUT`]. A connect is what the
//! gateway's own channel needs first, costs the backend nothing, and works
//! for every backend whether or not it serves `grpc.health.v1`.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::Uri;

use crate::catalog::{Catalog, Target};

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
            let urls = upstream_urls(&live.load());
            drop(live);
            let results = futures_util::future::join_all(urls.iter().map(reach)).await;
            let unreachable = urls
                .into_iter()
                .zip(results)
                .filter_map(|(url, result)| result.err().map(|reason| (url.to_string(), reason)))
                .collect();
            self.state.store(Arc::new(Probed { done: true, unreachable }));
            tokio::time::sleep(INTERVAL).await;
        }
    }
}

/// Every upstream a route of `catalog` calls, once each.
fn upstream_urls(catalog: &Catalog) -> Vec<Uri> {
    let mut urls = BTreeSet::new();
    for route in &catalog.routes {
        match &route.target {
            Target::Method(call) => {
                urls.insert(call.upstream.url.to_string());
            }
            Target::Composition(plan) => urls.extend(plan.calls.iter().map(|call| call.upstream.url.to_string())),
        }
    }
    urls.into_iter().filter_map(|url| url.parse().ok()).collect()
}

/// Connects to `url`'s host and port.
async fn reach(url: &Uri) -> Result<(), String> {
    let host = url.host().ok_or("the URL has no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_u16().unwrap_or(if url.scheme_str() == Some("https") { 443 } else { 80 });
    match tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(format!("unreachable: {err}")),
        Err(_) => Err(format!("unreachable: no connection within {} ms", TIMEOUT.as_millis())),
    }
}
