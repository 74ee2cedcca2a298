//! `[guard]`: the brute-force guard's numbers. All times in milliseconds, so that tests can
//! make them short; the defaults follow Dovecot's auth penalty (a delay doubling to 15 s) and
//! fail2ban's stock jail (a 10-minute ban).

use serde::{Deserialize, Serialize};

use crate::value::{Network, Secret};

use super::StoreSettings;

/// No guard time is longer than a year; beyond that a typo is more likely than a wish.
const MAX_MS: u64 = 366 * 24 * 3600 * 1000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    /// On by default in the native configuration; off in Perdition mode, which has none.
    pub enabled: bool,
    /// The delay before answering the first failed login from an address; it doubles with
    /// every further failure.
    pub penalty_initial_ms: u64,
    /// The delay never grows beyond this.
    pub penalty_max_ms: u64,
    /// An address without a failure for this long starts from zero again.
    pub forget_after_ms: u64,
    /// Failures that earn a ban (a repeated wrong password counts once); 0: never ban.
    pub ban_after: u32,
    /// How long a ban lasts: the address is turned away right after accept.
    pub ban_ms: u64,
    /// Networks never delayed nor banned (addresses or CIDRs). None by default, loopback
    /// included.
    #[schemars(with = "Vec<String>")]
    pub trusted: Vec<Network>,
    /// Addresses remembered at most (the least used are forgotten first); as many users.
    pub max_sources: u64,
    /// Failed logins for one user, from any address, before that user's logins wait before
    /// they are tried (credential stuffing from many addresses); 0: no per-user wait.
    pub user_failures_before_wait: u32,
    /// An address that logged in as a user is exempt from that user's wait for this long.
    pub known_good_ms: u64,
    /// Connections one address (IPv6: one /64) may have open at once before they log in,
    /// and one user at one address after; 0: no limit. Generous, for an office behind one
    /// NAT address.
    pub max_connections_per_address: u32,
    /// Logged-in connections one address (IPv6: one /64) may hold at once, all its users
    /// together; 0: no limit. A connection beyond it keeps counting among those waiting.
    pub max_logged_in_per_address: u32,
    /// New connections per second for the whole process, with bursts of twice as many;
    /// beyond it, clients are turned away right after accept. 0: no limit (the default: what
    /// a proxy can take depends on its machine; `connection_limit` and the per-address limit
    /// bound a flood's memory either way).
    pub new_connections_per_second: u32,
    /// A Valkey/Redis server whose state the guards of a fleet of proxies share (failures,
    /// bans, known-good addresses): `redis://[:password@]host:port[/db]`, `rediss://…`,
    /// `unix:///path`. None: each process on its own.
    pub store: Option<String>,
    /// Prefix of the store's keys, so that fleets (or tests) can share one server.
    pub store_prefix: String,
    /// A secret the fleet's instances share: it keys the hashes of user names in the store,
    /// and only with it are wrong passwords fingerprinted there, so that an old password
    /// retried through several instances counts once across the fleet.
    /// Not shown by `portcullis check`, nor by `Debug`.
    #[serde(skip_serializing)]
    #[schemars(with = "Option<String>")]
    pub store_secret: Option<Secret<String>>,
    /// How long one question to the store may take; beyond it the guard goes on with what
    /// this process knows.
    pub store_timeout_ms: u64,
    /// How long the store is left alone after it failed to answer.
    pub store_retry_ms: u64,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            enabled: true,
            penalty_initial_ms: 2_000,
            penalty_max_ms: 15_000,
            forget_after_ms: 300_000,
            ban_after: 10,
            ban_ms: 600_000,
            trusted: Vec::new(),
            max_sources: 100_000,
            user_failures_before_wait: 5,
            known_good_ms: 30 * 24 * 3600 * 1000,
            max_connections_per_address: 100,
            max_logged_in_per_address: 1000,
            new_connections_per_second: 0,
            store: None,
            store_prefix: "portcullis:guard:".into(),
            store_secret: None,
            store_timeout_ms: 250,
            store_retry_ms: 2_000,
        }
    }
}

impl GuardConfig {
    /// The store `[guard] store` names, with the guard's own settings for it.
    pub fn settings(&self) -> Option<StoreSettings> {
        Some(StoreSettings {
            url: self.store.clone()?,
            prefix: self.store_prefix.clone(),
            secret: self.store_secret.clone(),
            timeout_ms: self.store_timeout_ms,
            retry_ms: self.store_retry_ms,
        })
    }

    /// Turned off (Perdition mode's default).
    pub fn off() -> Self {
        GuardConfig {
            enabled: false,
            ..GuardConfig::default()
        }
    }

    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.enabled && self.penalty_max_ms < self.penalty_initial_ms {
            problems.push("guard.penalty_max_ms is below guard.penalty_initial_ms".into());
        }
        for (name, value) in [
            ("penalty_initial_ms", self.penalty_initial_ms),
            ("penalty_max_ms", self.penalty_max_ms),
            ("forget_after_ms", self.forget_after_ms),
            ("ban_ms", self.ban_ms),
            ("known_good_ms", self.known_good_ms),
            ("store_timeout_ms", self.store_timeout_ms),
            ("store_retry_ms", self.store_retry_ms),
        ] {
            if value > MAX_MS {
                problems.push(format!("guard.{name} is more than a year"));
            }
        }
        if self.enabled && self.max_sources == 0 {
            problems.push("guard.max_sources must be at least 1".into());
        }
        if let Some(url) = &self.store {
            let secret = self.store_secret.as_ref().map(|s| s.expose().as_str());
            let timing = (self.store_timeout_ms, self.store_retry_ms);
            problems.extend(super::fleet::store_problems("guard", url, timing, secret));
        }
        for network in &self.trusted {
            if network.net().is_none() {
                problems.push(format!("guard.trusted: {network:?} is not a network"));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_sound_and_nonsense_is_named() {
        assert!(GuardConfig::default().problems().is_empty());
        let nonsense = GuardConfig {
            penalty_initial_ms: 5_000,
            penalty_max_ms: 1_000,
            ban_ms: u64::MAX,
            trusted: vec!["10.0.0.0/33".into()],
            ..GuardConfig::default()
        };
        let problems = nonsense.problems().join("\n");
        assert!(problems.contains("penalty_max_ms is below"), "{problems}");
        assert!(
            problems.contains("guard.ban_ms is more than a year"),
            "{problems}"
        );
        assert!(
            problems.contains("\"10.0.0.0/33\" is not a network"),
            "{problems}"
        );
    }
}
