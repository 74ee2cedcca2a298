//! The brute-force guard: a failed login from an address is answered only after a delay that
//! doubles per failure, and an address that keeps failing is banned for a while, refused right
//! after accept. IPv4 addresses count one by one, IPv6 ones by /64 (one site, one bucket).
//! Trusted networks are exempt. State lives in this process, bounded in size, and, for a
//! fleet of proxies, also in a shared store ([`fleet`]).

mod connections;
mod fleet;
mod record;
mod user;

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::ops::compute::Op;

use crate::authlog::per_source::source;
use crate::config::GuardConfig;

pub use connections::Slot;
pub use fleet::Fleet;
pub use record::{Admission, Record, Rules, Verdict};
pub use user::{user_wait, UserRecord};

/// Longest user name kept as a key; longer ones share the key of their first bytes.
const MAX_USER_KEY: usize = 256;

pub struct Guard {
    rules: Rules,
    /// Addresses never delayed nor banned (a webmail host, a monitoring probe).
    trusted: Vec<ipnet::IpNet>,
    /// Source (IPv4 address, IPv6 /64) → what it did; forgotten when idle longer than any
    /// rule looks back, and bounded so that a spread-out attack cannot grow it without end.
    sources: moka::sync::Cache<IpAddr, Record>,
    /// Banned sources, apart from the failure records: so that a flood of new sources, which
    /// pushes the least used records out, cannot push a ban out with them.
    bans: moka::sync::Cache<IpAddr, Instant>,
    /// User (lower-cased) → its failures from any address and its known-good addresses.
    users: moka::sync::Cache<String, UserRecord>,
    /// Connections open now per source, and how many one source may have; 0: no limit.
    connections: connections::OpenConnections,
    max_connections: u32,
    /// New connections per second for the whole process; `None`: no limit.
    new_connections: Option<governor::DefaultDirectRateLimiter>,
    /// Keyed per process, so that the remembered password fingerprints mean nothing outside.
    fingerprint_key: std::collections::hash_map::RandomState,
    /// Failures, bans and known-good addresses shared with the other proxies of a fleet.
    fleet: Option<Arc<Fleet>>,
}

impl Guard {
    /// The guard a configuration asks for; `None` when it is turned off.
    pub fn new(config: &GuardConfig) -> Option<Guard> {
        if !config.enabled {
            return None;
        }
        let rules = config.rules();
        let remember = rules.forget_after.max(rules.ban_time);
        Some(Guard {
            rules,
            trusted: config
                .trusted
                .iter()
                .filter_map(|n| crate::config::parse_network(n))
                .collect(),
            sources: moka::sync::Cache::builder()
                .max_capacity(config.max_sources)
                .time_to_idle(remember)
                .build(),
            bans: moka::sync::Cache::builder()
                .max_capacity(config.max_sources)
                .time_to_live(rules.ban_time.max(Duration::from_millis(1)))
                .build(),
            users: moka::sync::Cache::builder()
                .max_capacity(config.max_sources)
                .time_to_idle(remember.max(rules.known_good_for))
                .build(),
            connections: Default::default(),
            new_connections: std::num::NonZeroU32::new(config.new_connections_per_second).map(
                |rate| {
                    let burst = rate.saturating_mul(std::num::NonZeroU32::MIN.saturating_add(1));
                    governor::RateLimiter::direct(
                        governor::Quota::per_second(rate).allow_burst(burst),
                    )
                },
            ),
            max_connections: config.max_connections_per_address,
            fingerprint_key: Default::default(),
            fleet: None,
        })
    }

    /// The guard a configuration asks for, sharing its state through the store it names;
    /// `Ok(None)` when it is turned off.
    pub fn from_config(
        config: &GuardConfig,
        logger: &std::sync::Arc<crate::authlog::Logger>,
    ) -> Result<Option<Guard>, String> {
        let Some(guard) = Guard::new(config) else {
            return Ok(None);
        };
        let Some(url) = &config.store else {
            return Ok(Some(guard));
        };
        let fleet = Fleet::new(
            url,
            &config.store_prefix,
            config.store_secret.as_ref().map(|s| s.expose().as_str()),
            Duration::from_millis(config.store_timeout_ms),
            Duration::from_millis(config.store_retry_ms),
            logger.clone(),
        )?;
        Ok(Some(guard.shared_through(fleet)))
    }

    /// This guard, with new settings, taking over what `previous` knows: failures, bans,
    /// per-user records and the connections open now (a reload that changes `[guard]` must
    /// release nobody), and `previous`'s store connection when the store is the same.
    pub fn succeed(self, previous: &Guard, same_store: bool) -> Guard {
        let now = Instant::now();
        for (key, record) in previous.sources.iter() {
            self.sources.insert(*key, record);
        }
        for (key, until) in previous.bans.iter() {
            if until > now {
                self.bans.insert(*key, until);
            }
        }
        for (key, record) in previous.users.iter() {
            self.users.insert(key.as_ref().clone(), record);
        }
        Guard {
            connections: previous.connections.clone(),
            fleet: if same_store {
                previous.fleet.clone()
            } else {
                self.fleet.clone()
            },
            ..self
        }
    }

    /// The guard shares its state with the other proxies of a fleet through `fleet`.
    pub fn shared_through(self, fleet: Fleet) -> Guard {
        Guard {
            fleet: Some(Arc::new(fleet)),
            ..self
        }
    }

    fn exempt(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|network| network.contains(&ip))
    }

    /// Whether one more new connection fits the process-wide rate (exempt addresses always
    /// do, and do not count).
    pub fn new_connection_allowed(&self, ip: IpAddr) -> bool {
        match &self.new_connections {
            Some(rate) if !self.exempt(ip) => rate.check().is_ok(),
            _ => true,
        }
    }

    /// A slot for one more connection from `ip`, held for the session's life; `Err` with the
    /// number already open when the address has all it may have. Always a slot for an exempt
    /// address, or without a limit.
    pub fn admit(&self, ip: IpAddr) -> Result<Option<Slot>, u32> {
        if self.max_connections == 0 || self.exempt(ip) {
            return Ok(None);
        }
        self.connections
            .admit(source(ip), self.max_connections)
            .map(Some)
    }

    /// How much longer `ip` is banned, as this process knows.
    pub fn banned_here(&self, ip: IpAddr) -> Option<Duration> {
        if self.exempt(ip) {
            return None;
        }
        self.ban_left(source(ip), Instant::now())
    }

    /// How much longer `ip` is banned through another proxy of the fleet (asked after the
    /// cheap local checks, so that a flood does not become a flood of questions).
    pub async fn banned_elsewhere(&self, ip: IpAddr) -> Option<Duration> {
        if self.exempt(ip) {
            return None;
        }
        let key = source(ip);
        let left = self.fleet.as_ref()?.ban_left(key).await?;
        self.remember_ban(key, left);
        Some(left)
    }

    /// A ban the fleet knows of, kept here too, so that the next question is answered here.
    fn remember_ban(&self, key: IpAddr, left: Duration) {
        if let Some(until) = Instant::now().checked_add(left) {
            self.bans.insert(key, until);
        }
    }

    fn ban_left(&self, key: IpAddr, now: Instant) -> Option<Duration> {
        let until = self.bans.get(&key)?;
        until
            .checked_duration_since(now)
            .filter(|left| !left.is_zero())
    }

    /// What identifies a user+password pair among an address's recent failures, without
    /// keeping the password.
    pub fn fingerprint(&self, user: &str, password: &[u8]) -> Fingerprint {
        Fingerprint {
            here: self.fingerprint_key.hash_one((user.as_bytes(), password)),
            fleet: self
                .fleet
                .as_ref()
                .and_then(|f| f.fingerprint(&user_key(user), password)),
        }
    }

    /// How long a login for `user` from `ip` waits before it is tried: long when the user
    /// has failed a lot lately from anywhere, nothing from an address it logged in from.
    /// For a fleet, the user's failures and known-good addresses are the fleet's as well.
    pub async fn user_wait(&self, ip: IpAddr, user: &str) -> Duration {
        if self.exempt(ip) {
            return Duration::ZERO;
        }
        let (now, key) = (Instant::now(), user_key(user));
        let (mut failures, mut known) = (0, false);
        self.users
            .entry(key.clone())
            .and_compute_with(|entry| match entry {
                None => Op::Nop,
                Some(entry) => {
                    let mut record = entry.into_value();
                    (failures, known) = record.standing(&self.rules, now, source(ip));
                    Op::Put(record)
                }
            });
        if let Some(fleet) = &self.fleet {
            let standing = fleet.user_standing(&self.rules, source(ip), &key).await;
            if let Some((elsewhere, known_elsewhere)) = standing {
                failures = failures.max(elsewhere);
                known |= known_elsewhere;
            }
        }
        user_wait(&self.rules, failures, known)
    }

    /// A login from `ip` is about to be tried: whether it may be, after how long, and a token
    /// that counts it as under way until dropped. Exempt addresses always may, at once.
    pub async fn begin(&self, ip: IpAddr) -> (Admission, Option<InFlight>) {
        let go = Admission::Try {
            wait: Duration::ZERO,
            failures: 0,
        };
        if self.exempt(ip) {
            return (go, None);
        }
        let key = source(ip);
        if let Some(left) = self.ban_left(key, Instant::now()) {
            return (Admission::Banned(left), None);
        }
        let mut elsewhere = 0;
        if let Some(fleet) = &self.fleet {
            match fleet.standing(key).await {
                Some(fleet::SourceStanding::Banned(left)) => {
                    self.remember_ban(key, left);
                    return (Admission::Banned(left), None);
                }
                Some(fleet::SourceStanding::Failures(n)) => elsewhere = n,
                None => {}
            }
        }
        let now = Instant::now();
        let mut admission = go;
        self.sources.entry(key).and_compute_with(|entry| {
            let mut record = entry.map(|e| e.into_value()).unwrap_or_default();
            admission = record.begin(&self.rules, now, elsewhere);
            Op::Put(record)
        });
        let token = matches!(admission, Admission::Try { .. }).then(|| InFlight {
            sources: self.sources.clone(),
            key,
        });
        (admission, token)
    }

    /// A login for `user` from `ip` failed: whether it earned a ban (here, or for a fleet,
    /// counted with the failures through the other proxies). `user_known`: the failure says
    /// something about the user (a wrong password), not only about the address (a user no
    /// map knows, forbidden characters), and counts for the user too. `None` for an exempt
    /// address.
    pub async fn failure(
        &self,
        ip: IpAddr,
        user: &str,
        fingerprint: &Fingerprint,
        user_known: bool,
    ) -> Option<Verdict> {
        if self.exempt(ip) {
            return None;
        }
        let (now, key, user) = (Instant::now(), source(ip), user_key(user));
        let user_hash = self.fingerprint_key.hash_one(&user);
        let mut verdict = None;
        self.sources.entry(key).and_compute_with(|entry| {
            let mut record = entry.map(|e| e.into_value()).unwrap_or_default();
            verdict = Some(record.failure(&self.rules, now, fingerprint.here, user_hash));
            Op::Put(record)
        });
        let mut verdict = verdict?;
        if verdict.repeated {
            return Some(verdict);
        }
        if let Some(fleet) = &self.fleet {
            let banned_here = verdict.banned_for.is_some();
            let fleet_print = fingerprint.fleet.as_deref();
            let shared = fleet
                .failure(
                    &self.rules,
                    key,
                    &user,
                    fleet_print,
                    user_known,
                    banned_here,
                )
                .await;
            if let Some(shared) = shared {
                if shared.repeated {
                    // Through another instance: a repeat all the same; counted here once.
                    verdict.repeated = true;
                    return Some(verdict);
                }
                verdict.failures = verdict.failures.max(shared.source_failures);
                if shared.banned && !banned_here {
                    verdict.banned_for = Some(self.rules.ban_time);
                    // As a ban earned here: served, it is a fresh start.
                    self.sources
                        .entry(key)
                        .and_compute_with(|entry| match entry {
                            None => Op::Nop,
                            Some(entry) => {
                                let mut record = entry.into_value();
                                record.ban(&self.rules, now);
                                Op::Put(record)
                            }
                        });
                }
            }
        }
        if user_known {
            self.users.entry(user).and_compute_with(|entry| {
                let mut record = entry.map(|e| e.into_value()).unwrap_or_default();
                record.failure(&self.rules, now);
                Op::Put(record)
            });
        }
        if let Some(ban) = verdict.banned_for {
            self.remember_ban(key, ban);
        }
        Some(verdict)
    }

    /// A login for `user` from `ip` succeeded: the address's failures are forgiven if they were
    /// all that user's own, and the address is known good for the user.
    pub async fn success(&self, ip: IpAddr, user: &str) {
        if self.exempt(ip) {
            return;
        }
        let (now, user) = (Instant::now(), user_key(user));
        if let Some(fleet) = &self.fleet {
            fleet.success(&self.rules, source(ip), &user).await;
        }
        self.users.entry(user.clone()).and_compute_with(|entry| {
            let mut record = entry.map(|e| e.into_value()).unwrap_or_default();
            record.success(now, source(ip));
            Op::Put(record)
        });
        self.sources
            .entry(source(ip))
            .and_compute_with(|entry| match entry {
                None => Op::Nop,
                Some(entry) => {
                    let mut record = entry.into_value();
                    record.success(self.fingerprint_key.hash_one(&user));
                    if record.is_clear(now) {
                        Op::Remove
                    } else {
                        Op::Put(record)
                    }
                }
            });
    }
}

/// A wrong user+password, as the guard remembers it: keyed per process, and for a fleet with
/// its `store_secret`, never the password itself.
#[derive(Clone)]
pub struct Fingerprint {
    here: u64,
    fleet: Option<String>,
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fingerprint(..)")
    }
}

/// A login under way from one source; dropping it ends it.
pub struct InFlight {
    sources: moka::sync::Cache<IpAddr, Record>,
    key: IpAddr,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.sources
            .entry(self.key)
            .and_compute_with(|entry| match entry {
                None => Op::Nop,
                Some(entry) => {
                    let mut record = entry.into_value();
                    record.end();
                    Op::Put(record)
                }
            });
    }
}

/// User names compare without case (Dovecot's default) and are cut to a bounded key.
fn user_key(user: &str) -> String {
    let mut end = user.len().min(MAX_USER_KEY);
    while !user.is_char_boundary(end) {
        end -= 1;
    }
    user[..end].to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn new_settings_take_over_failures_bans_and_open_connections() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let old = guard(&[]);
        for n in 0..3u8 {
            old.failure(ip("192.0.2.1"), "a", &old.fingerprint("a", &[n]), true)
                .await;
        }
        old.failure(ip("192.0.2.2"), "a", &old.fingerprint("a", b"x"), true)
            .await;
        let _slot = old.admit(ip("192.0.2.3")).unwrap();
        let config = GuardConfig {
            ban_after: 3,
            max_connections_per_address: 1,
            penalty_initial_ms: 1_000,
            ..GuardConfig::default()
        };
        let new = Guard::new(&config).unwrap().succeed(&old, true);
        assert!(
            new.banned_here(ip("192.0.2.1")).is_some(),
            "the ban was lost"
        );
        let (admission, _) = new.begin(ip("192.0.2.2")).await;
        assert_eq!(
            admission,
            Admission::Try {
                wait: Duration::from_secs(1),
                failures: 1
            },
            "the failure was lost"
        );
        assert_eq!(
            new.admit(ip("192.0.2.3")).err(),
            Some(1),
            "the open connection was lost"
        );
    }

    fn guard(trusted: &[&str]) -> Guard {
        let config = GuardConfig {
            ban_after: 3,
            trusted: trusted.iter().map(|s| s.to_string()).collect(),
            ..GuardConfig::default()
        };
        Guard::new(&config).unwrap()
    }

    #[tokio::test]
    async fn ipv6_neighbours_share_a_bucket_ipv4_ones_do_not() {
        let g = guard(&[]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        g.failure(ip("2001:db8:1:2::1"), "a", &g.fingerprint("a", b"1"), true)
            .await;
        g.failure(ip("2001:db8:1:2::ff"), "a", &g.fingerprint("a", b"2"), true)
            .await;
        let v = g
            .failure(
                ip("2001:db8:1:2:aaaa::3"),
                "a",
                &g.fingerprint("a", b"3"),
                true,
            )
            .await
            .unwrap();
        assert!(v.banned_for.is_some());
        assert!(g.banned_here(ip("2001:db8:1:2::77")).is_some());
        assert!(g.banned_here(ip("2001:db8:1:3::1")).is_none());
        g.failure(ip("192.0.2.1"), "a", &g.fingerprint("a", b"1"), true)
            .await;
        g.failure(ip("192.0.2.2"), "a", &g.fingerprint("a", b"2"), true)
            .await;
        assert_eq!(
            g.failure(ip("192.0.2.3"), "a", &g.fingerprint("a", b"3"), true)
                .await
                .unwrap()
                .failures,
            1
        );
        // An IPv4 client on an IPv6 socket is the same IPv4 source.
        assert_eq!(
            g.failure(ip("::ffff:192.0.2.3"), "a", &g.fingerprint("a", b"4"), true)
                .await
                .unwrap()
                .failures,
            2
        );
    }

    #[tokio::test]
    async fn a_user_failing_from_many_addresses_waits_except_from_home() {
        let g = guard(&[]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        g.success(ip("192.0.2.50"), "Alice").await;
        for n in 1..=5 {
            let attacker = ip(&format!("198.51.100.{n}"));
            assert_eq!(g.user_wait(attacker, "alice").await, Duration::ZERO);
            g.failure(attacker, "ALICE", &g.fingerprint("alice", &[n]), true)
                .await;
        }
        assert!(g.user_wait(ip("198.51.100.99"), "alice").await > Duration::ZERO);
        assert_eq!(g.user_wait(ip("192.0.2.50"), "alice").await, Duration::ZERO);
        assert_eq!(
            g.user_wait(ip("198.51.100.99"), "bob").await,
            Duration::ZERO
        );
    }

    #[tokio::test]
    async fn new_connections_beyond_the_rate_and_its_burst_are_refused() {
        let config = GuardConfig {
            new_connections_per_second: 2,
            trusted: vec!["10.0.0.1".into()],
            ..GuardConfig::default()
        };
        let g = Guard::new(&config).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let allowed = (0..10)
            .filter(|_| g.new_connection_allowed(ip("192.0.2.1")))
            .count();
        assert_eq!(allowed, 4, "a burst of twice the rate, then no more");
        assert!(g.new_connection_allowed(ip("10.0.0.1")));
        let unlimited = Guard::new(&GuardConfig::default()).unwrap();
        assert!((0..10_000).all(|_| unlimited.new_connection_allowed(ip("192.0.2.1"))));
    }

    #[tokio::test]
    async fn a_flood_of_new_sources_does_not_push_a_ban_out() {
        let config = GuardConfig {
            ban_after: 2,
            max_sources: 100,
            ..GuardConfig::default()
        };
        let g = Guard::new(&config).unwrap();
        let banned: IpAddr = "192.0.2.1".parse().unwrap();
        g.failure(banned, "a", &g.fingerprint("a", b"1"), true)
            .await;
        g.failure(banned, "a", &g.fingerprint("a", b"2"), true)
            .await;
        for n in 0..5_000u32 {
            let ip = IpAddr::from(std::net::Ipv6Addr::from(
                (0x2001_0db8_u128 << 96) | (u128::from(n) << 64),
            ));
            g.failure(ip, "a", &g.fingerprint("a", b"1"), true).await;
        }
        g.sources.run_pending_tasks();
        assert!(g.banned_here(banned).is_some());
    }

    #[tokio::test]
    async fn trusted_networks_are_exempt_and_success_forgives() {
        let g = guard(&["10.0.0.0/8"]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            g.failure(ip("10.1.2.3"), "a", &g.fingerprint("a", b"x"), true)
                .await,
            None
        );
        g.failure(ip("192.0.2.9"), "a", &g.fingerprint("a", b"1"), true)
            .await;
        g.failure(ip("192.0.2.9"), "a", &g.fingerprint("a", b"2"), true)
            .await;
        g.success(ip("192.0.2.9"), "a").await;
        assert_eq!(
            g.failure(ip("192.0.2.9"), "a", &g.fingerprint("a", b"3"), true)
                .await
                .unwrap()
                .failures,
            1
        );
    }
}
