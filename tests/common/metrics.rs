//! The gateway's metrics as a scraper sees them: every sample of the
//! Prometheus text by its series, exactly as printed.

use std::collections::HashMap;

use super::api::Gateway;

/// Every sample of `gateway`'s `/metrics` text, by series.
pub fn samples(gateway: &Gateway) -> HashMap<String, f64> {
    parse(&gateway.metrics().render(false))
}

/// The samples of Prometheus text, by series (`name{labels}`).
pub fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line:?}"));
            (series.to_owned(), value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")))
        })
        .collect()
}

/// One series' value (0 when absent).
pub fn sample(samples: &HashMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}
