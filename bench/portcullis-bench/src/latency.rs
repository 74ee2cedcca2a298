//! Latency recording in an HDR histogram and its summary.
//!
//! Microsecond resolution, three significant digits: p99.9 of a login is meaningful from about
//! 10 µs to an hour, and histograms of several clients merge exactly.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::Duration;

pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            // 1 µs .. 1 h, auto-resize beyond; cannot fail with these bounds.
            hist: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .map(|mut h| {
                    h.auto(true);
                    h
                })
                .unwrap_or_else(|_| Histogram::new(3).expect("3 significant digits is valid")),
        }
    }
}

impl Latency {
    pub fn record(&mut self, d: Duration) {
        let us = d.as_micros().clamp(1, u64::MAX as u128) as u64;
        // With auto-resize on, recording only fails on overflow of the count: ignore that one.
        let _ = self.hist.record(us);
    }

    pub fn merge(&mut self, other: &Latency) {
        let _ = self.hist.add(&other.hist);
    }

    pub fn summary(&self) -> LatencySummary {
        let ms = |q: f64| {
            if self.hist.is_empty() {
                None
            } else {
                Some(self.hist.value_at_quantile(q) as f64 / 1000.0)
            }
        };
        LatencySummary {
            count: self.hist.len(),
            mean_ms: (!self.hist.is_empty()).then(|| self.hist.mean() / 1000.0),
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: (!self.hist.is_empty()).then(|| self.hist.max() as f64 / 1000.0),
        }
    }
}

/// Percentiles in milliseconds; `None` when nothing was recorded.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
}
