//! `[fleet]`: the store a fleet of proxies shares (the guard's failures and bans, the pool's
//! placements and everyone's session counts). `[guard] store` stays accepted: it names the
//! same store when `[fleet]` names none.

use serde::{Deserialize, Serialize};

use crate::value::Secret;

use super::GuardConfig;

/// A login may ask the store a few questions; each waits at most this long.
const MAX_STORE_TIMEOUT_MS: u64 = 2_000;
/// A vanished instance's sessions stop counting after this long; an hour is plenty.
const MAX_SESSION_TTL_MS: u64 = 3_600_000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// A Valkey/Redis server every instance of the fleet shares:
    /// `redis://[:password@]host:port[/db]`, `rediss://…`, `unix:///path`. None: each
    /// process on its own (or `[guard] store`'s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// Prefix of the store's keys, so that fleets (or tests) can share one server.
    pub store_prefix: String,
    /// A secret the instances share: it keys the hashes of user names in the store. Not shown
    /// by `portcullis check`, nor by `Debug`.
    #[serde(skip_serializing)]
    #[schemars(with = "Option<String>")]
    pub store_secret: Option<Secret<String>>,
    /// How long one question to the store may take; beyond it the instance goes on with its
    /// own view.
    pub store_timeout_ms: u64,
    /// How long the store is left alone after it failed to answer.
    pub store_retry_ms: u64,
    /// How long the sessions of an instance that vanished (killed, its machine gone) still
    /// count: every instance renews its own sessions three times within it.
    pub session_ttl_ms: u64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            store: None,
            store_prefix: "portcullis:".into(),
            store_secret: None,
            store_timeout_ms: 250,
            store_retry_ms: 2_000,
            session_ttl_ms: 30_000,
        }
    }
}

/// Where the fleet's shared state is kept, settled from `[fleet]` and `[guard]`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreSettings {
    pub url: String,
    pub prefix: String,
    pub secret: Option<Secret<String>>,
    pub timeout_ms: u64,
    pub retry_ms: u64,
}

impl FleetConfig {
    /// The store of the fleet: `[fleet]`'s, else the one `[guard]` names (its alias).
    pub fn settings(&self, guard: &GuardConfig) -> Option<StoreSettings> {
        match (&self.store, &guard.store) {
            (Some(url), _) => Some(StoreSettings {
                url: url.clone(),
                prefix: self.store_prefix.clone(),
                secret: self.store_secret.clone(),
                timeout_ms: self.store_timeout_ms,
                retry_ms: self.store_retry_ms,
            }),
            // The older name: its keys stay under the guard's prefix, so that fleets that
            // share a server by their guard prefixes stay apart.
            (None, Some(url)) => Some(StoreSettings {
                url: url.clone(),
                prefix: guard.store_prefix.clone(),
                secret: guard.store_secret.clone(),
                timeout_ms: guard.store_timeout_ms,
                retry_ms: guard.store_retry_ms,
            }),
            (None, None) => None,
        }
    }

    /// The guard's store when `[guard]` names none itself: `[fleet]`'s, its keys under
    /// `guard:` within the fleet's prefix.
    pub fn guard_settings(&self) -> Option<StoreSettings> {
        let url = self.store.clone()?;
        Some(StoreSettings {
            url,
            prefix: format!("{}guard:", self.store_prefix),
            secret: self.store_secret.clone(),
            timeout_ms: self.store_timeout_ms,
            retry_ms: self.store_retry_ms,
        })
    }

    pub fn problems(&self, guard: &GuardConfig) -> Vec<String> {
        let mut problems = Vec::new();
        if let (Some(fleet), Some(alias)) = (&self.store, &guard.store) {
            if fleet != alias {
                problems.push(
                    "fleet.store and guard.store name different stores: give one (guard.store \
                     is the older name of fleet.store)"
                        .into(),
                );
            }
        }
        if !(1..=MAX_SESSION_TTL_MS).contains(&self.session_ttl_ms) {
            problems.push(format!(
                "fleet.session_ttl_ms must be 1 to {MAX_SESSION_TTL_MS}"
            ));
        }
        if let Some(url) = &self.store {
            let secret = self.store_secret.as_ref().map(|s| s.expose().as_str());
            let timing = (self.store_timeout_ms, self.store_retry_ms);
            problems.extend(store_problems("fleet", url, timing, secret));
        }
        problems
    }
}

/// What is wrong with a store's settings in `section` (`fleet`, `guard`): its URL, its
/// timeout (`timing`: timeout and retry, in ms), its secret.
pub(super) fn store_problems(
    section: &str,
    url: &str,
    (timeout_ms, retry_ms): (u64, u64),
    secret: Option<&str>,
) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = redis::Client::open(url) {
        problems.push(format!("{section}.store: {e}"));
    }
    if !(1..=MAX_STORE_TIMEOUT_MS).contains(&timeout_ms) {
        problems.push(format!(
            "{section}.store_timeout_ms must be 1 to {MAX_STORE_TIMEOUT_MS}: every login may \
             wait that long for the store"
        ));
    }
    if retry_ms < timeout_ms.max(100) {
        problems.push(format!(
            "{section}.store_retry_ms must be at least 100 and at least store_timeout_ms"
        ));
    }
    if secret.is_some_and(|s| s.len() < 16) {
        problems.push(format!(
            "{section}.store_secret must be at least 16 characters"
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_store_is_the_fleet_store_by_its_older_name() {
        let guard = GuardConfig {
            store: Some("redis://127.0.0.1:6379".into()),
            ..GuardConfig::default()
        };
        let fleet = FleetConfig::default();
        let settings = fleet.settings(&guard).expect("the alias names a store");
        assert_eq!(settings.url, "redis://127.0.0.1:6379");
        assert_eq!(settings.prefix, "portcullis:guard:");
        assert!(fleet.problems(&guard).is_empty());
        assert_eq!(
            FleetConfig::default().settings(&GuardConfig::default()),
            None
        );
    }

    #[test]
    fn two_different_stores_are_refused() {
        let guard = GuardConfig {
            store: Some("redis://127.0.0.1:6379".into()),
            ..GuardConfig::default()
        };
        let fleet = FleetConfig {
            store: Some("redis://127.0.0.2:6379".into()),
            ..FleetConfig::default()
        };
        let problems = fleet.problems(&guard).join("\n");
        assert!(problems.contains("different stores"), "{problems}");
        let same = FleetConfig {
            store: guard.store.clone(),
            ..FleetConfig::default()
        };
        assert!(same.problems(&guard).is_empty());
    }

    #[test]
    fn the_guard_keeps_its_keys_apart_in_the_fleet_store() {
        let fleet = FleetConfig {
            store: Some("redis://127.0.0.1:6379".into()),
            store_prefix: "site-a:".into(),
            ..FleetConfig::default()
        };
        let guard = fleet.guard_settings().unwrap();
        assert_eq!(guard.prefix, "site-a:guard:");
    }
}
