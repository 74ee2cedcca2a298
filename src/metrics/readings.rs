//! Figures read from the running process when Prometheus scrapes, rather than counted as they
//! happen: the certificates the listeners serve now (a reload or ACME swaps them under a
//! running listener: a figure kept from the start would alert on a certificate long replaced),
//! and the count of log lines the log writer dropped (the log keeps it; see `log/queue.rs`).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::certificates::ServedCertificates;

/// One certificate of a listener.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct CertificateLabels {
    listener: String,
    /// The first name the certificate is for.
    name: String,
    /// `ecdsa`, `rsa`...: a dual set holds one of each for the same names.
    key: &'static str,
}

/// What is read at every scrape.
#[derive(Default)]
pub struct Readings {
    /// The running listeners' certificates, each with its listener's label; replaced by
    /// every start and reload.
    certificates: RwLock<Vec<(String, Arc<dyn ServedCertificates>)>>,
    /// The log's count of the lines it dropped, once the log is known.
    log_lines_dropped: OnceLock<Counter>,
}

impl std::fmt::Debug for Readings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readings").finish_non_exhaustive()
    }
}

impl Readings {
    /// The listeners that run now, with the certificates each serves (listeners without TLS
    /// are left out).
    pub fn set_certificates(&self, listeners: Vec<(String, Arc<dyn ServedCertificates>)>) {
        *self.certificates.write().unwrap_or_else(|e| e.into_inner()) = listeners;
    }

    /// Where the log counts the lines it dropped; the first one given stays.
    pub fn set_log_lines_dropped(&self, counter: Counter) {
        let _ = self.log_lines_dropped.set(counter);
    }

    /// Every certificate served now, with when it expires (Unix seconds). Two pairs with the
    /// same labels (one listener, one name, one key kind) show as the one expiring first:
    /// that is the one to renew.
    fn expiries(&self) -> BTreeMap<CertificateLabels, i64> {
        let listeners = self.certificates.read().unwrap_or_else(|e| e.into_inner());
        let mut expiries = BTreeMap::new();
        for (listener, certificates) in listeners.iter() {
            for served in certificates.served() {
                let labels = CertificateLabels {
                    listener: listener.clone(),
                    name: served.name,
                    key: served.key,
                };
                expiries
                    .entry(labels)
                    .and_modify(|at: &mut i64| *at = (*at).min(served.not_after))
                    .or_insert(served.not_after);
            }
        }
        expiries
    }
}

impl Collector for Readings {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "certificate_expiry_timestamp_seconds",
            "When a certificate a listener serves expires (Unix seconds), by listener, name and \
             key kind.",
            None,
            MetricType::Gauge,
        )?;
        for (labels, not_after) in self.expiries() {
            ConstGauge::new(not_after).encode(family.encode_family(&labels)?)?;
        }
        let dropped = self.log_lines_dropped.get().map_or(0, Counter::get);
        let counter = ConstCounter::new(dropped);
        counter.encode(encoder.encode_descriptor(
            "log_lines_dropped",
            "Log lines dropped because the log's destination did not keep up.",
            None,
            counter.metric_type(),
        )?)
    }
}
