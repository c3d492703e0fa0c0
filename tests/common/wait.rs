//! Polling with a deadline, for what the gateway does in the background
//! (reloads, reflection, a server coming up).

use std::future::Future;
use std::time::{Duration, Instant};

/// Runs `attempt` until it succeeds, or panics with its last complaint once
/// `within` has passed.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(last) => {
                assert!(start.elapsed() < within, "not within {within:?}: {what}; last seen: {last}");
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
