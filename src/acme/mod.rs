//! Certificates obtained and renewed by the process itself (RFC 8555), for the listeners that
//! say `certificates = "acme"`.
//!
//! At start ([`Acme::prepare`]) the certificates kept in `state_dir` are served at once, even
//! one past its renewal point or expired: the listeners never wait, since `tls-alpn-01` is
//! answered by them. With none at all (the first start) a TLS handshake fails until the
//! first certificate arrives, seconds later. The task ([`Acme::spawn`]) then orders what is
//! missing, due (two thirds into its lifetime) or no longer for the configured domains,
//! swaps each new certificate into the running listeners, and after a failure retries from
//! `retry_min_ms`, doubling up to `retry_max_ms`, serving the old certificate meanwhile.

mod account;
mod challenge;
mod http;
mod keys;
mod order;
mod report;
mod state;

use std::sync::Arc;
use std::time::Duration;

use crate::certificates::{CertificateLoadError, CertificateSet};
use crate::config::{AcmeChallenge, AcmeConfig, KeyType};
use crate::log::Logger;
use crate::metrics::{AcmeCertificateLabels, Metrics, RenewalResult};
use crate::tls::ObtainedCertificates;

use challenge::{Challenges, HttpTokens};
pub use keys::KeyError;
pub use report::report;
pub use state::{CertificateInfo, RecordedError, StateDir, StateError};

/// The task looks at its certificates at least this often (a clock set forward, files put in
/// place by hand).
const LONGEST_SLEEP: Duration = Duration::from_secs(3600);
/// A round of orders (account, order, challenges, certificate) takes at most this.
const ROUND_TIME: Duration = Duration::from_secs(600);

/// Why obtaining or serving a certificate failed.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("acme.state_dir {0}")]
    State(#[from] StateError),
    #[error("ACME server: {0}")]
    Server(#[from] instant_acme::Error),
    #[error("the CA offers no {kind:?} challenge for {domain}")]
    NoChallenge { domain: String, kind: AcmeChallenge },
    #[error("validation failed: {0}")]
    Invalid(String),
    #[error("no answer from the CA within {0} s")]
    Stalled(u64),
    #[error(
        "the certificate obtained is due for renewal at once (is the clock right? does it name \
         every domain?)"
    )]
    DueAtOnce,
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("cannot serve the certificate obtained: {0}")]
    Load(#[from] CertificateLoadError),
    #[error("acme.state_dir: {0}")]
    Owner(#[from] crate::service_manager::AccountError),
    #[error("acme.http_listen {address}: {source}")]
    HttpListen {
        address: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The ACME side of the process.
pub struct Acme {
    config: AcmeConfig,
    state: StateDir,
    challenges: Challenges,
    /// The `http-01` answerer's socket, bound at start (port 80 needs the privileges the
    /// process drops afterwards).
    http: Option<std::net::TcpListener>,
}

impl Acme {
    /// Before serving: the state directory made (and given to `owner`, the user the process
    /// becomes, when it runs as root now), the certificates it holds served, the `http-01`
    /// socket bound. The lines are for the log.
    pub fn prepare(
        config: &AcmeConfig,
        owner: Option<(&str, Option<&str>)>,
    ) -> Result<(Acme, Vec<String>), AcmeError> {
        let state_dir = config
            .state_dir
            .as_deref()
            .unwrap_or(std::path::Path::new("."));
        let state = StateDir::new(state_dir);
        state.create()?;
        if let Some((user, group)) = owner.filter(|_| nix::unistd::getuid().is_root()) {
            let (uid, gid) = crate::service_manager::account(user, group)?;
            state.give_to(uid.as_raw(), gid.as_raw())?;
        }
        let http = match (config.challenge, config.http_address()) {
            (AcmeChallenge::Http01, Some(address)) => Some(bind(address)?),
            _ => None,
        };
        let acme = Acme {
            config: config.clone(),
            state,
            challenges: Challenges {
                obtained: ObtainedCertificates::of_process(),
                tokens: HttpTokens::default(),
            },
            http,
        };
        let said = match acme.serve_stored() {
            Ok(true) => format!(
                "ACME: serving the certificates kept in {}",
                state_dir.display()
            ),
            Ok(false) => format!(
                "ACME: no certificate in {} yet: TLS handshakes fail until one is obtained",
                state_dir.display()
            ),
            Err(e) => format!("ACME: the certificates kept are not served: {e}"),
        };
        let mut lines = vec![said];
        if let Some(address) = acme.http.as_ref().and_then(|s| s.local_addr().ok()) {
            lines.push(format!("ACME: answering http-01 challenges on {address}"));
        }
        Ok((acme, lines))
    }

    /// Run the renewals (and the `http-01` answerer) until the runtime ends.
    pub fn spawn(self, logger: Arc<Logger>, metrics: Arc<Metrics>) {
        if let Some(socket) = &self.http {
            let socket = socket.try_clone().and_then(|s| {
                s.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(s)
            });
            match socket {
                Ok(socket) => {
                    tokio::spawn(http::serve(socket, self.challenges.tokens.clone()));
                }
                Err(e) => logger.error(&format!("ACME: http_listen: {e}")),
            }
        }
        self.show_expiry(&metrics);
        tokio::spawn(self.run(logger, metrics));
    }

    async fn run(self, logger: Arc<Logger>, metrics: Arc<Metrics>) {
        let mut failures = 0u32;
        loop {
            let wait = self.until_due();
            if !wait.is_zero() {
                tokio::time::sleep(wait.min(LONGEST_SLEEP)).await;
                continue;
            }
            match self.attempt(&logger).await {
                Ok(()) => {
                    failures = 0;
                    self.state.clear_error();
                    metrics.acme_renewal(RenewalResult::Success, now());
                    self.show_expiry(&metrics);
                }
                Err(e) => {
                    failures += 1;
                    let retry = self.backoff(failures);
                    let text = with_causes(&e);
                    let meanwhile = if self.challenges.obtained.has_certificate() {
                        "the one served stays"
                    } else {
                        "TLS handshakes fail until then"
                    };
                    logger.error(&format!(
                        "ACME: no certificate for {}: {text}; {meanwhile}, next try in {} s",
                        self.config.domain_names().join(", "),
                        retry.as_secs_f64().ceil()
                    ));
                    let at = now();
                    metrics.acme_renewal(RenewalResult::Failure, at);
                    let _ = self.state.record_error(&RecordedError { at, text });
                    tokio::time::sleep(retry).await;
                }
            }
        }
    }

    /// One round of orders, bounded in time (the ACME client sets no timeout of its own: a CA
    /// that stalls must not stop renewals for good). A round that leaves a certificate due at
    /// once (the host's clock far ahead, the CA leaving out a name) is a failure, so that it
    /// backs off instead of ordering again and again into the CA's rate limits.
    async fn attempt(&self, logger: &Logger) -> Result<(), AcmeError> {
        match tokio::time::timeout(ROUND_TIME, self.renew(logger)).await {
            Err(_) => Err(AcmeError::Stalled(ROUND_TIME.as_secs())),
            Ok(Err(e)) => Err(e),
            Ok(Ok(())) if !self.due().is_empty() => Err(AcmeError::DueAtOnce),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// The wait before the `failures`-th retry.
    fn backoff(&self, failures: u32) -> Duration {
        let doubled = self
            .config
            .retry_min_ms
            .saturating_mul(1u64 << failures.saturating_sub(1).min(32));
        Duration::from_millis(doubled.min(self.config.retry_max_ms))
    }

    /// The key types whose certificate is missing, due, or not for the configured domains.
    fn due(&self) -> Vec<KeyType> {
        let domains = self.config.domain_names();
        let now = now();
        self.config
            .key_types()
            .into_iter()
            .filter(|k| {
                !self
                    .state
                    .certificate(*k)
                    .is_some_and(|c| c.good_for(&domains, now))
            })
            .collect()
    }

    /// How long until a certificate is due (zero: now).
    fn until_due(&self) -> Duration {
        let first = self
            .config
            .key_types()
            .into_iter()
            .map(|k| match self.state.certificate(k) {
                Some(c) if c.covers(&self.config.domain_names()) => c.renewal_time(),
                _ => 0,
            })
            .min()
            .unwrap_or(0);
        Duration::from_secs(first.saturating_sub(now()).max(0) as u64)
    }

    /// Order every due certificate, then serve them. A CA that no longer knows the account
    /// (a test CA restarted) gets a new one, once.
    async fn renew(&self, logger: &Logger) -> Result<(), AcmeError> {
        let mut account = account::open(&self.config, &self.state).await?;
        for key_type in self.due() {
            let challenges = &self.challenges;
            let obtained = match order::obtain(&account, &self.config, key_type, challenges).await {
                Err(AcmeError::Server(e)) if account::unknown_account(&e) => {
                    logger.warning("ACME: the CA does not know the account: making a new one");
                    self.state.forget_account();
                    account = account::open(&self.config, &self.state).await?;
                    order::obtain(&account, &self.config, key_type, challenges).await?
                }
                other => other?,
            };
            self.state
                .save_certificate(key_type, &obtained.chain, &obtained.key)?;
            let until = self
                .state
                .certificate(key_type)
                .map_or_else(|| "?".into(), |c| report::date(c.not_after));
            logger.info(&format!(
                "ACME: obtained a {} certificate for {}, valid until {until}",
                key_type.name(),
                self.config.domain_names().join(", "),
            ));
            // Served at once: a dual set's second order must not hold back the first.
            self.serve_stored()?;
        }
        Ok(())
    }

    /// Serve the certificates of `state_dir` (ECDSA first: the default); false when there
    /// is none.
    fn serve_stored(&self) -> Result<bool, AcmeError> {
        let files: Vec<_> = [KeyType::EcdsaP256, KeyType::Rsa2048]
            .into_iter()
            .filter(|k| self.state.certificate(*k).is_some())
            .map(|k| self.state.certificate_files(k))
            .collect();
        if files.is_empty() {
            return Ok(false);
        }
        let pairs: Vec<_> = files
            .iter()
            .map(|(c, k)| (c.as_path(), k.as_path()))
            .collect();
        let (set, _expiring) = CertificateSet::load(&pairs, None, &crate::tls::provider())?;
        self.challenges.obtained.replace(set);
        Ok(true)
    }

    /// The expiry of each certificate served, by domain, for `/metrics`.
    fn show_expiry(&self, metrics: &Metrics) {
        for key_type in [KeyType::EcdsaP256, KeyType::Rsa2048] {
            let Some(certificate) = self.state.certificate(key_type) else {
                continue;
            };
            for domain in &certificate.names {
                let labels = AcmeCertificateLabels {
                    domain: domain.clone(),
                    key_type: key_type.name(),
                };
                metrics
                    .acme_expiry
                    .get_or_create(&labels)
                    .set(certificate.not_after);
            }
        }
    }
}

/// The `http-01` answerer's socket.
fn bind(address: std::net::SocketAddr) -> Result<std::net::TcpListener, AcmeError> {
    std::net::TcpListener::bind(address).map_err(|source| AcmeError::HttpListen { address, source })
}

/// `error` and its causes, each once (an HTTP client's "client error (Connect)" says little
/// without "connection refused").
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let said = e.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        cause = e.source();
    }
    text
}

/// Unix time, in seconds.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme(min: u64, max: u64) -> Acme {
        let config: AcmeConfig = toml::from_str(&format!(
            "domains = [\"imap.example.org\"]\nstate_dir = \"/nonexistent\"\n\
             retry_min_ms = {min}\nretry_max_ms = {max}\n"
        ))
        .unwrap();
        Acme {
            state: StateDir::new(std::path::Path::new("/nonexistent")),
            config,
            challenges: Challenges {
                obtained: Default::default(),
                tokens: HttpTokens::default(),
            },
            http: None,
        }
    }

    #[test]
    fn retries_double_from_the_least_wait_up_to_the_longest() {
        let a = acme(1_000, 5_000);
        let waits: Vec<u64> = (1..=5).map(|n| a.backoff(n).as_millis() as u64).collect();
        assert_eq!(waits, [1_000, 2_000, 4_000, 5_000, 5_000]);
        assert_eq!(a.backoff(200).as_millis(), 5_000);
    }

    #[test]
    fn without_a_certificate_the_order_is_due_now() {
        let a = acme(1_000, 5_000);
        assert_eq!(a.until_due(), Duration::ZERO);
        assert_eq!(a.due(), [KeyType::EcdsaP256]);
    }
}
