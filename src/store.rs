//! The Valkey/Redis store a fleet of proxies shares, as each user of it sees it: one question
//! at a time, each within a short timeout. When the store does not answer, the asker goes on
//! with what this process knows, says so once in the log, leaves the store alone for a
//! while, and says so again when it answers. The guard and the pool each hold one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use crate::config::StoreSettings;
use crate::log::Logger;

/// What the log says about the store, in its user's words.
pub struct Words {
    /// Who asks: `Guard store`, `Fleet store`.
    pub who: &'static str,
    /// What goes on without it: `the guard counts in this process alone until it answers`.
    pub without: &'static str,
    /// What it gives again once back: `failures and bans are shared again`.
    pub again: &'static str,
}

/// The store's URL cannot be used (its scheme, its form).
#[derive(Debug, thiserror::Error)]
#[error("{key}: {source}")]
pub struct StoreUrlError {
    key: &'static str,
    #[source]
    source: redis::RedisError,
}

pub struct Store {
    client: redis::Client,
    /// Made on first use and again after a failure; cloned per request (it multiplexes).
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    prefix: String,
    /// How long one question may take before the asker goes on without the answer.
    timeout: Duration,
    /// How long the store is left alone after it failed to answer.
    rest: Duration,
    /// The store is not asked before this many milliseconds after `epoch`.
    resting_until: AtomicU64,
    epoch: Instant,
    /// Whether the store answered last time: the log says when that changes.
    answering: AtomicBool,
    /// `host:port` for the log, without any password the URL holds.
    name: String,
    /// Keys the hashes of user names: the fleet's secret, or the prefix when there is none
    /// (names then stay out of sight, but not out of a dictionary's reach).
    key: Vec<u8>,
    has_secret: bool,
    /// When a question was last refused by the store itself (not a network failure), so that
    /// the log says so once in a while rather than per question.
    last_refusal_logged: AtomicU64,
    logger: Arc<Logger>,
    words: Words,
}

/// Where the store is and how it is asked.
struct StoreParameters<'a> {
    url: &'a str,
    /// The configuration key naming it, for errors (`guard.store`, `fleet.store`).
    url_key: &'static str,
    prefix: &'a str,
    secret: Option<&'a str>,
    timeout: Duration,
    rest: Duration,
}

impl Store {
    /// A store at `url` (`redis://[:password@]host:port[/db]`, `rediss://`, `unix://`); nothing
    /// is connected yet. `Err` names what is wrong with the URL.
    fn new(
        parameters: StoreParameters<'_>,
        words: Words,
        logger: Arc<Logger>,
    ) -> Result<Store, StoreUrlError> {
        let client = redis::Client::open(parameters.url).map_err(|source| StoreUrlError {
            key: parameters.url_key,
            source,
        })?;
        let name = client.get_connection_info().addr().to_string();
        Ok(Store {
            client,
            connection: tokio::sync::Mutex::new(None),
            prefix: parameters.prefix.to_string(),
            timeout: parameters.timeout,
            rest: parameters.rest,
            resting_until: AtomicU64::new(0),
            epoch: Instant::now(),
            answering: AtomicBool::new(true),
            name,
            key: parameters
                .secret
                .unwrap_or(parameters.prefix)
                .as_bytes()
                .to_vec(),
            has_secret: parameters.secret.is_some(),
            last_refusal_logged: AtomicU64::new(0),
            logger,
            words,
        })
    }

    /// A store as the configuration's settings name it (`url_key`: the key that named it).
    pub fn from_settings(
        settings: &StoreSettings,
        url_key: &'static str,
        words: Words,
        logger: Arc<Logger>,
    ) -> Result<Store, StoreUrlError> {
        let parameters = StoreParameters {
            url: &settings.url,
            url_key,
            prefix: &settings.prefix,
            secret: settings.secret.as_ref().map(|s| s.expose().as_str()),
            timeout: Duration::from_millis(settings.timeout_ms),
            rest: Duration::from_millis(settings.retry_ms),
        };
        Store::new(parameters, words, logger)
    }

    /// The key `kind:rest` under the prefix.
    pub fn key(&self, kind: &str, rest: &str) -> String {
        format!("{}{kind}:{rest}", self.prefix)
    }

    /// A keyed hash of `parts`, 32 hex digits: what the store holds instead of a name.
    pub fn keyed_hash(&self, parts: &[&[u8]]) -> String {
        use hmac::Mac;
        // Any key length is accepted by HMAC.
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key) else {
            return String::new();
        };
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    pub fn has_secret(&self) -> bool {
        self.has_secret
    }

    /// Whether the store answered the last question asked.
    pub fn answering(&self) -> bool {
        self.answering.load(Ordering::Relaxed)
    }

    /// One question to the store, within the timeout; `None` when it did not answer (and then
    /// it is left alone for a while).
    pub async fn ask<T, F, Fut>(&self, question: F) -> Option<T>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if self.now_ms() < self.resting_until.load(Ordering::Relaxed) {
            return None;
        }
        let answer = tokio::time::timeout(self.timeout, async {
            let connection = self.connection().await?;
            question(connection).await
        })
        .await;
        match answer {
            Ok(Ok(value)) => {
                self.answered();
                Some(value)
            }
            Ok(Err(e))
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout() =>
            {
                self.stopped_answering(&e.to_string()).await;
                None
            }
            Ok(Err(e)) => {
                // The store is there but refused this one (out of memory, read-only replica,
                // no permission): this question goes without, the next ones are asked.
                self.refused(&e);
                None
            }
            Err(_) => {
                let why = format!("no answer within {} ms", self.timeout.as_millis());
                self.stopped_answering(&why).await;
                None
            }
        }
    }

    fn answered(&self) {
        // A late answer from before the store went quiet says nothing new.
        let resting = self.now_ms() < self.resting_until.load(Ordering::Relaxed);
        if !resting && !self.answering.swap(true, Ordering::Relaxed) {
            self.logger.warning(&format!(
                "{} {} answers again: {}",
                self.words.who, self.name, self.words.again
            ));
        }
    }

    async fn connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let connection = self.client.get_multiplexed_async_connection().await?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    fn refused(&self, e: &redis::RedisError) {
        let now = self.now_ms();
        let last = self.last_refusal_logged.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= millis(self.rest).max(10_000);
        if due
            && self
                .last_refusal_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.logger.warning(&format!(
                "{} {} refused a question ({e}); {}",
                self.words.who, self.name, self.words.without
            ));
        }
    }

    async fn stopped_answering(&self, why: &str) {
        // Others stop asking at once; then a fresh connection next time: this one may be
        // half dead.
        let until = self.now_ms() + millis(self.rest);
        self.resting_until.store(until, Ordering::Relaxed);
        *self.connection.lock().await = None;
        if self.answering.swap(false, Ordering::Relaxed) {
            self.logger.warning(&format!(
                "{} {} unavailable ({why}): {}; logins go on",
                self.words.who, self.name, self.words.without
            ));
        }
    }

    fn now_ms(&self) -> u64 {
        millis(self.epoch.elapsed())
    }
}

/// Milliseconds since the Unix epoch: times compared across the fleet's machines (whose
/// clocks agree well enough for what is compared).
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
}

pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
