//! The guard's state shared by a fleet of proxies behind one balancer, kept in Valkey/Redis:
//! failures per source and per user, bans and known-good addresses, so that a guess through
//! one instance counts on all of them and a ban earned through one holds on the others.
//!
//! The store is asked with a short timeout. When it does not answer, the guard goes on with
//! what this process knows (logins keep working), says so once in the log, leaves the store
//! alone for a while, and says so again when it answers.
//!
//! Keys, under the configured prefix, all expiring on their own; USER is a keyed hash of the
//! user name (fixed size, and no name in the store):
//! - `fail:SOURCE`: a hash of USER → failures from that source (bounded, see
//!   [`MAX_FAILED_USERS`]), so that a good login can tell its own typos from guesses at others;
//! - `seen:SOURCE`: the latest wrong user+password fingerprints from the source (keyed with
//!   `store_secret`, only when one is set), so that a repeat counts once across the fleet;
//! - `ban:SOURCE`: present while the source is banned;
//! - `user:USER`: failures for the user from any source;
//! - `good:USER`: the last [`KNOWN_GOOD`] sources that logged in as the user, scored by when.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use crate::log::Logger;

use super::record::Rules;

/// Users told apart per source in `fail:`; failures for further users count under one field.
const MAX_FAILED_USERS: usize = 16;
/// Wrong user+password fingerprints remembered per source (as the local guard does).
const RECENT_FINGERPRINTS: usize = 10;
/// Sources remembered as known good per user (as the local guard does).
const KNOWN_GOOD: usize = 8;

/// Count a failure: `{failures from the source, failures for the user, banned now (0/1),
/// a repeat (0/1)}`.
const FAILURE: &str = r"
if ARGV[7] ~= '' then
  if redis.call('ZSCORE', KEYS[4], ARGV[7]) then
    local n = 0
    for _, v in ipairs(redis.call('HVALS', KEYS[1])) do n = n + tonumber(v) end
    return {n, 0, 0, 1}
  end
  redis.call('ZADD', KEYS[4], ARGV[9], ARGV[7])
  redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -1 - tonumber(ARGV[8]))
  redis.call('PEXPIRE', KEYS[4], ARGV[1])
end
local field = ARGV[5]
if redis.call('HEXISTS', KEYS[1], field) == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[6]) then
  field = '*'
end
redis.call('HINCRBY', KEYS[1], field, 1)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local n = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do n = n + tonumber(v) end
local u = 0
if ARGV[10] == '1' then
  u = redis.call('INCR', KEYS[3])
  redis.call('PEXPIRE', KEYS[3], ARGV[1])
end
local ban_after = tonumber(ARGV[2])
local banned = 0
if ARGV[4] == '1' or (ban_after > 0 and n >= ban_after) then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
  redis.call('DEL', KEYS[1], KEYS[4])
  banned = 1
end
return {n, u, banned, 0}
";

/// A good login: the source is known good for the user, and the source's failures are
/// forgiven when they were all that user's own.
const SUCCESS: &str = r"
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -1 - tonumber(ARGV[5]))
redis.call('PEXPIRE', KEYS[2], ARGV[2])
local users = redis.call('HKEYS', KEYS[1])
if #users == 1 and users[1] == ARGV[1] then redis.call('DEL', KEYS[1], KEYS[3]) end
return 1
";

/// What the fleet says about a source before a login from it is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceStanding {
    Banned(Duration),
    Failures(u32),
}

/// What one more failure means across the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetFailure {
    pub source_failures: u32,
    pub user_failures: u32,
    pub banned: bool,
    /// The same wrong user+password came from the source lately, through any instance.
    pub repeated: bool,
}

pub struct Fleet {
    client: redis::Client,
    /// Made on first use and again after a failure; cloned per request (it multiplexes).
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    prefix: String,
    /// How long one question may take before the guard goes on without the answer.
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
    /// Keys the hashes of user names and wrong passwords: the fleet's `store_secret`, or the
    /// prefix when there is none (names then stay out of sight, but not out of a dictionary's
    /// reach; passwords are fingerprinted only with a secret).
    key: Vec<u8>,
    has_secret: bool,
    /// When a question was last refused by the store itself (not a network failure), so that
    /// the log says so once in a while rather than per login.
    last_refusal_logged: AtomicU64,
    logger: Arc<Logger>,
    failure_script: redis::Script,
    success_script: redis::Script,
}

/// The store's URL cannot be used (its scheme, its form).
#[derive(Debug, thiserror::Error)]
#[error("guard.store: {0}")]
pub struct StoreUrlError(#[source] redis::RedisError);

impl Fleet {
    /// A store at `url` (`redis://[:password@]host:port[/db]`, `rediss://`, `unix://`); nothing
    /// is connected yet. `Err` names what is wrong with the URL.
    pub fn new(
        url: &str,
        prefix: &str,
        secret: Option<&str>,
        timeout: Duration,
        rest: Duration,
        logger: Arc<Logger>,
    ) -> Result<Fleet, StoreUrlError> {
        let client = redis::Client::open(url).map_err(StoreUrlError)?;
        let name = client.get_connection_info().addr().to_string();
        Ok(Fleet {
            client,
            connection: tokio::sync::Mutex::new(None),
            prefix: prefix.to_string(),
            timeout,
            rest,
            resting_until: AtomicU64::new(0),
            epoch: Instant::now(),
            answering: AtomicBool::new(true),
            name,
            key: secret.unwrap_or(prefix).as_bytes().to_vec(),
            has_secret: secret.is_some(),
            last_refusal_logged: AtomicU64::new(0),
            logger,
            failure_script: redis::Script::new(FAILURE),
            success_script: redis::Script::new(SUCCESS),
        })
    }

    fn key(&self, kind: &str, rest: &str) -> String {
        format!("{}{kind}:{rest}", self.prefix)
    }

    fn keyed_hash(&self, parts: &[&[u8]]) -> String {
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

    /// The user (already lower-cased and bounded) as the store knows it.
    fn user_id(&self, user: &str) -> String {
        self.keyed_hash(&[b"user", user.as_bytes()])
    }

    /// What identifies a wrong user+password across the fleet; only with a secret, so that
    /// the store never holds something a dictionary could turn back into a password.
    pub fn fingerprint(&self, user: &str, password: &[u8]) -> Option<String> {
        self.has_secret
            .then(|| self.keyed_hash(&[b"password", user.as_bytes(), password]))
    }

    /// The source's ban, or its failures, as the fleet knows them.
    pub async fn standing(&self, source: IpAddr) -> Option<SourceStanding> {
        let (ban, fail) = (
            self.key("ban", &source.to_string()),
            self.key("fail", &source.to_string()),
        );
        let (ban_ms, counts): (i64, Vec<u64>) = self
            .ask(|mut con| async move {
                redis::pipe()
                    .pttl(ban)
                    .hvals(fail)
                    .query_async(&mut con)
                    .await
            })
            .await?;
        if ban_ms > 0 {
            return Some(SourceStanding::Banned(Duration::from_millis(ban_ms as u64)));
        }
        let failures = counts.iter().sum::<u64>().min(u64::from(u32::MAX)) as u32;
        Some(SourceStanding::Failures(failures))
    }

    /// How much longer the source is banned across the fleet, if it is.
    pub async fn ban_left(&self, source: IpAddr) -> Option<Duration> {
        let key = self.key("ban", &source.to_string());
        let ms: i64 = self
            .ask(|mut con| async move { redis::cmd("PTTL").arg(key).query_async(&mut con).await })
            .await?;
        (ms > 0).then(|| Duration::from_millis(ms as u64))
    }

    /// Count a failed login for `user` from `source`; `banned_here`: this instance banned the
    /// source for it, and the fleet must hold the ban too.
    /// `fingerprint`: from [`Fleet::fingerprint`]; `count_user`: the failure says something
    /// about the user (a wrong password), not only about the source (a user nobody knows).
    pub async fn failure(
        &self,
        rules: &Rules,
        source: IpAddr,
        user: &str,
        fingerprint: Option<&str>,
        count_user: bool,
        banned_here: bool,
    ) -> Option<FleetFailure> {
        let (src, user) = (source.to_string(), self.user_id(user));
        let mut invocation = self.failure_script.prepare_invoke();
        invocation
            .key(self.key("fail", &src))
            .key(self.key("ban", &src))
            .key(self.key("user", &user))
            .key(self.key("seen", &src))
            .arg(millis(rules.forget_after))
            .arg(rules.ban_after)
            .arg(millis(rules.ban_time))
            .arg(if banned_here { "1" } else { "0" })
            .arg(&user)
            .arg(MAX_FAILED_USERS)
            .arg(fingerprint.unwrap_or_default())
            .arg(RECENT_FINGERPRINTS)
            .arg(wall_clock_ms())
            .arg(if count_user { "1" } else { "0" });
        let (source_failures, user_failures, banned, repeated): (u64, u64, u8, u8) = self
            .ask(|mut con| async move { invocation.invoke_async(&mut con).await })
            .await?;
        Some(FleetFailure {
            source_failures: source_failures.min(u64::from(u32::MAX)) as u32,
            user_failures: user_failures.min(u64::from(u32::MAX)) as u32,
            banned: banned == 1,
            repeated: repeated == 1,
        })
    }

    /// A wrong password for `user` that counts for no address (a known-good user's own
    /// failure at an address it logged in from): only the user's fleet-wide count rises.
    pub async fn user_failure(&self, rules: &Rules, user: &str, _fingerprint: Option<&str>) {
        let key = self.key("user", &self.user_id(user));
        let forget = millis(rules.forget_after);
        let _: Option<(u64, u8)> = self
            .ask(|mut con| async move {
                redis::pipe()
                    .incr(&key, 1)
                    .pexpire(&key, forget as i64)
                    .query_async(&mut con)
                    .await
            })
            .await;
    }

    /// A good login for `user` from `source`.
    pub async fn success(&self, rules: &Rules, source: IpAddr, user: &str) {
        let (src, user) = (source.to_string(), self.user_id(user));
        let mut invocation = self.success_script.prepare_invoke();
        invocation
            .key(self.key("fail", &src))
            .key(self.key("good", &user))
            .key(self.key("seen", &src))
            .arg(&user)
            .arg(millis(rules.known_good_for))
            .arg(wall_clock_ms())
            .arg(&src)
            .arg(KNOWN_GOOD);
        let _: Option<u8> = self
            .ask(|mut con| async move { invocation.invoke_async(&mut con).await })
            .await;
    }

    /// The user's failures across the fleet, and whether `source` is known good for it.
    pub async fn user_standing(
        &self,
        rules: &Rules,
        source: IpAddr,
        user: &str,
    ) -> Option<(u32, bool)> {
        let user = self.user_id(user);
        let (failures, good) = (self.key("user", &user), self.key("good", &user));
        let (failures, since): (Option<u64>, Option<f64>) = self
            .ask(|mut con| async move {
                redis::pipe()
                    .get(failures)
                    .zscore(good, source.to_string())
                    .query_async(&mut con)
                    .await
            })
            .await?;
        let failures = failures.unwrap_or(0).min(u64::from(u32::MAX)) as u32;
        let oldest_good = wall_clock_ms().saturating_sub(millis(rules.known_good_for));
        let known = since.is_some_and(|when| when as u64 >= oldest_good);
        Some((failures, known))
    }

    /// One question to the store, within the timeout; `None` when it did not answer (and then
    /// it is left alone for a while).
    async fn ask<T, F, Fut>(&self, question: F) -> Option<T>
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
                // A late answer from before the store went quiet says nothing new.
                let resting = self.now_ms() < self.resting_until.load(Ordering::Relaxed);
                if !resting && !self.answering.swap(true, Ordering::Relaxed) {
                    self.logger.warning(&format!(
                        "Guard store {} answers again: failures and bans are shared again",
                        self.name
                    ));
                }
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
                self.stopped_answering(&format!(
                    "no answer within {} ms",
                    self.timeout.as_millis()
                ))
                .await;
                None
            }
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
                "Guard store {} refused a question ({e}); the guard goes on with what this \
                 process knows",
                self.name
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
                "Guard store {} unavailable ({why}): the guard counts in this process alone \
                 until it answers; logins go on",
                self.name
            ));
        }
    }

    fn now_ms(&self) -> u64 {
        millis(self.epoch.elapsed())
    }
}

/// Milliseconds since the Unix epoch: known-good times are compared across the fleet's
/// machines (whose clocks agree well enough for a month-long window).
fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
