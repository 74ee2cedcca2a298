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
use std::sync::Arc;
use std::time::Duration;

use crate::config::StoreSettings;
use crate::log::Logger;
use crate::store::{millis, wall_clock_ms, Store, StoreUrlError, Words};

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
    store: Store,
    failure_script: redis::Script,
    success_script: redis::Script,
}

impl Fleet {
    /// A store as `settings` name it; nothing is connected yet. `Err` names what is wrong
    /// with the URL.
    pub fn new(
        settings: &StoreSettings,
        url_key: &'static str,
        logger: Arc<Logger>,
    ) -> Result<Fleet, StoreUrlError> {
        let words = Words {
            who: "Guard store",
            without: "the guard counts in this process alone until it answers",
            again: "failures and bans are shared again",
        };
        Ok(Fleet {
            store: Store::from_settings(settings, url_key, words, logger)?,
            failure_script: redis::Script::new(FAILURE),
            success_script: redis::Script::new(SUCCESS),
        })
    }

    fn key(&self, kind: &str, rest: &str) -> String {
        self.store.key(kind, rest)
    }

    fn keyed_hash(&self, parts: &[&[u8]]) -> String {
        self.store.keyed_hash(parts)
    }

    /// The user (already lower-cased and bounded) as the store knows it.
    fn user_id(&self, user: &str) -> String {
        self.keyed_hash(&[b"user", user.as_bytes()])
    }

    /// What identifies a wrong user+password across the fleet; only with a secret, so that
    /// the store never holds something a dictionary could turn back into a password.
    pub fn fingerprint(&self, user: &str, password: &[u8]) -> Option<String> {
        self.store
            .has_secret()
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

    async fn ask<T, F, Fut>(&self, question: F) -> Option<T>
    where
        F: FnOnce(redis::aio::MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.store.ask(question).await
    }
}
