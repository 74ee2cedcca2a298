//! The brute-force guard: a failed login from an address is answered only after a delay that
//! doubles per failure, and an address that keeps failing is banned for a while, refused right
//! after accept. IPv4 addresses count one by one, IPv6 ones by /64 (one site, one bucket).
//! Trusted networks are exempt. A user logging in from an address it logged in from before
//! (a known-good pair) is judged on its own record there, never on the address's: the other
//! users behind one carrier or office address neither slow nor ban it. State lives in this
//! process, each table bounded on its own, and, for a fleet of proxies, also in a shared
//! store ([`fleet`]).

mod bans;
mod connections;
mod fleet;
mod known_good;
mod record;
mod user;

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use moka::ops::compute::Op;

use crate::config::{FleetConfig, GuardConfig};
use crate::log::per_source::source;
use crate::value::Network;

pub use connections::Slot;

pub use crate::store::StoreUrlError;
use connections::Count;
pub use fleet::Fleet;
pub use record::{Admission, Record, Rules, Verdict};
pub use user::{user_wait, UserRecord};

use bans::Bans;
use known_good::KnownGood;
use user::UserFailures;

/// Whose record a login is judged on: the source's (an IPv4 address, an IPv6 /64), or a
/// known-good user's at that source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    source: IpAddr,
    user: Option<u64>,
}

/// What the guard knows of a user before its login is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// The user's recent failures from anywhere (credential stuffing).
    pub failures: u32,
    /// The user logged in from this address lately.
    pub known_good: bool,
    key: Key,
}

pub struct Guard {
    rules: Rules,
    /// Addresses never delayed nor banned (a webmail host, a monitoring probe).
    trusted: Vec<ipnet::IpNet>,
    /// Source, or known-good user at a source → what it did; forgotten when idle longer than
    /// any rule looks back, and bounded so that a spread-out attack cannot grow it without end.
    sources: moka::sync::Cache<Key, Record>,
    /// Banned sources, apart from the failure records and never evicted before they end
    /// (widened to their network when full).
    bans: Mutex<Bans>,
    /// User → its failures from any address; when full, the least-failed go first.
    users: Mutex<UserFailures>,
    /// User+address pairs that logged in lately.
    known_good: KnownGood,
    /// Connections open now per source (before login) or per user at a source (after), and
    /// how many one may have; 0: no limit.
    connections: connections::OpenConnections,
    max_connections: u32,
    /// Logged-in connections one source may hold in all; 0: no limit.
    max_logged_in: u32,
    /// New connections per second for the whole process; `None`: no limit.
    new_connections: Option<governor::DefaultDirectRateLimiter>,
    /// Keyed per process, so that the remembered password fingerprints mean nothing outside.
    fingerprint_key: std::collections::hash_map::RandomState,
    /// Failures, bans and known-good addresses shared with the other proxies of a fleet.
    fleet: Option<Arc<Fleet>>,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Guard {
    /// The guard a configuration asks for; `None` when it is turned off.
    pub fn new(config: &GuardConfig) -> Option<Guard> {
        if !config.enabled {
            return None;
        }
        let rules = Rules::of(config);
        let remember = rules.forget_after.max(rules.ban_time);
        let capacity = usize::try_from(config.max_sources).unwrap_or(usize::MAX);
        Some(Guard {
            rules,
            // Validated: every text is a network.
            trusted: config.trusted.iter().filter_map(Network::net).collect(),
            sources: moka::sync::Cache::builder()
                .max_capacity(config.max_sources)
                .time_to_idle(remember)
                .build(),
            bans: Mutex::new(Bans::new(capacity)),
            users: Mutex::new(UserFailures::new(capacity)),
            known_good: KnownGood::new(config.max_sources, rules.known_good_for),
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
            max_logged_in: config.max_logged_in_per_address,
            fingerprint_key: Default::default(),
            fleet: None,
        })
    }

    /// The guard a configuration asks for, sharing its state through the store it names;
    /// `Ok(None)` when it is turned off.
    pub fn from_config(
        config: &GuardConfig,
        fleet: &FleetConfig,
        logger: &std::sync::Arc<crate::log::Logger>,
    ) -> Result<Option<Guard>, StoreUrlError> {
        let Some(guard) = Guard::new(config) else {
            return Ok(None);
        };
        let (settings, key) = match (config.settings(), fleet.guard_settings()) {
            (Some(own), _) => (own, "guard.store"),
            (None, Some(fleet)) => (fleet, "fleet.store"),
            (None, None) => return Ok(Some(guard)),
        };
        let fleet = Fleet::new(&settings, key, logger.clone())?;
        Ok(Some(guard.shared_through(fleet)))
    }

    /// This guard, with new settings, taking over what `previous` knows: failures, bans,
    /// per-user records, known-good pairs and the connections open now (a reload that changes
    /// `[guard]` must release nobody), and `previous`'s store connection when the store is
    /// the same. The user keys are `previous`'s, so its fingerprint key is kept too.
    pub fn succeed(self, previous: &Guard, same_store: bool) -> Guard {
        let now = Instant::now();
        for (key, record) in previous.sources.iter() {
            self.sources.insert(*key, record.taken_over());
        }
        {
            let mut bans = locked(&self.bans);
            for (network, until) in locked(&previous.bans).all().filter(|(_, u)| *u > now) {
                bans.insert(network, until, now);
            }
            let mut users = locked(&self.users);
            for (user, record) in locked(&previous.users).all() {
                users.insert(user, record);
            }
        }
        self.known_good.take_over(&previous.known_good);
        Guard {
            connections: previous.connections.clone(),
            fingerprint_key: previous.fingerprint_key.clone(),
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

    fn user_hash(&self, user: &str) -> u64 {
        self.fingerprint_key.hash_one(user_key(user))
    }

    /// Whether one more new connection fits the process-wide rate (exempt addresses always
    /// do, and do not count).
    pub fn new_connection_allowed(&self, ip: IpAddr) -> bool {
        match &self.new_connections {
            Some(rate) if !self.exempt(ip) => rate.check().is_ok(),
            _ => true,
        }
    }

    /// A slot for one more connection from `ip` that has not logged in, held until it logs in
    /// or goes; `Err` with the number already open when the address has all it may have.
    /// Always a slot for an exempt address, or without a limit.
    pub fn admit(&self, ip: IpAddr) -> Result<Option<Slot>, u32> {
        if self.max_connections == 0 || self.exempt(ip) {
            return Ok(None);
        }
        let count = Count::Waiting(source(ip));
        self.connections
            .admit(&[(count, self.max_connections)])
            .map(Some)
    }

    /// A client of `ip` logged in as `user`: its connection now counts for that user at the
    /// address (up to `max_connections_per_address`) and among the address's logged-in ones
    /// (up to `max_logged_in_per_address`), no longer among those waiting to log in: hundreds
    /// of phones idling behind one carrier address leave room for new connections. The
    /// waiting slot is kept when either count is full.
    pub fn logged_in(&self, slot: Option<Slot>, ip: IpAddr, user: &str) -> Option<Slot> {
        let slot = slot?;
        let src = source(ip);
        let counts = [
            (Count::User(src, self.user_hash(user)), self.max_connections),
            (Count::LoggedIn(src), self.max_logged_in),
        ];
        match self.connections.admit(&counts) {
            Ok(own) => Some(own),
            Err(_) => Some(slot),
        }
    }

    /// How much longer `ip` is to be turned away before the greeting, as this process knows:
    /// a banned address where users logged in lately is greeted all the same, and its
    /// known-good users log in (the others are refused at their login).
    pub fn turned_away_here(&self, ip: IpAddr) -> Option<Duration> {
        if self.exempt(ip) || self.known_good.has_users(source(ip), Instant::now()) {
            return None;
        }
        locked(&self.bans).left(source(ip), Instant::now())
    }

    /// As [`Guard::turned_away_here`], through another proxy of the fleet (asked after the
    /// cheap local checks, so that a flood does not become a flood of questions).
    pub async fn turned_away_elsewhere(&self, ip: IpAddr) -> Option<Duration> {
        if self.exempt(ip) || self.known_good.has_users(source(ip), Instant::now()) {
            return None;
        }
        let key = source(ip);
        let left = self.fleet.as_ref()?.ban_left(key).await?;
        self.remember_ban(key, left);
        Some(left)
    }

    /// A ban the fleet knows of, kept here too, so that the next question is answered here.
    fn remember_ban(&self, key: IpAddr, left: Duration) {
        let now = Instant::now();
        if let Some(until) = now.checked_add(left) {
            // When the table is full and nothing merges, the source's own record holds the ban.
            let _ = locked(&self.bans).ban(key, until, now);
        }
    }

    fn ban_left(&self, key: IpAddr, now: Instant) -> Option<Duration> {
        locked(&self.bans).left(key, now)
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

    /// What the guard knows of `user` logging in from `ip`: its failures from anywhere lately,
    /// and whether it logged in from here lately (for a fleet, through any proxy of it).
    pub async fn standing(&self, ip: IpAddr, user: &str) -> Standing {
        let (now, key, hash) = (Instant::now(), user_key(user), self.user_hash(user));
        let src = source(ip);
        let mut failures = locked(&self.users).failures(hash, &self.rules, now);
        let mut known = self.known_good.is_known(hash, src, now);
        if let Some(fleet) = &self.fleet {
            if let Some((elsewhere, known_elsewhere)) =
                fleet.user_standing(&self.rules, src, &key).await
            {
                failures = failures.max(elsewhere);
                known |= known_elsewhere;
            }
        }
        Standing {
            failures,
            known_good: known,
            key: Key {
                source: src,
                user: known.then_some(hash),
            },
        }
    }

    /// How long a login for a user in this standing waits before it is tried: long when the
    /// user has failed a lot lately from anywhere, nothing from an address it logged in from.
    /// Nothing from an exempt address.
    pub fn user_wait(&self, ip: IpAddr, standing: &Standing) -> Duration {
        if self.exempt(ip) {
            return Duration::ZERO;
        }
        user_wait(&self.rules, standing.failures, standing.known_good)
    }

    /// A login from `ip` in this standing is about to be tried: whether it may be, after how
    /// long, and a token that counts it as under way until dropped. A known-good user is
    /// judged on its own record at the address, not on the address's. Exempt addresses
    /// always may, at once.
    pub async fn begin(
        &self,
        ip: IpAddr,
        standing: &Standing,
        fingerprint: &Fingerprint,
    ) -> (Admission, Option<InFlight>) {
        let go = Admission::Try {
            wait: Duration::ZERO,
            failures: 0,
        };
        if self.exempt(ip) {
            return (go, None);
        }
        let key = standing.key;
        let mut elsewhere = 0;
        if key.user.is_none() {
            if let Some(left) = self.ban_left(key.source, Instant::now()) {
                return (Admission::Banned(left), None);
            }
            match self.fleet_standing(key.source).await {
                Err(left) => return (Admission::Banned(left), None),
                Ok(n) => elsewhere = n,
            }
        }
        let now = Instant::now();
        let (mut admission, mut counted) = (go, false);
        self.sources.entry(key).and_compute_with(|entry| {
            let mut record = entry.map(|e| e.into_value()).unwrap_or_default();
            (admission, counted) = record.begin(&self.rules, now, elsewhere, fingerprint.here);
            Op::Put(record)
        });
        let token = counted.then(|| InFlight {
            sources: self.sources.clone(),
            key,
        });
        (admission, token)
    }

    /// The source's failures through the fleet, or `Err` with its ban there.
    async fn fleet_standing(&self, key: IpAddr) -> Result<u32, Duration> {
        let Some(fleet) = &self.fleet else {
            return Ok(0);
        };
        match fleet.standing(key).await {
            Some(fleet::SourceStanding::Banned(left)) => {
                self.remember_ban(key, left);
                Err(left)
            }
            Some(fleet::SourceStanding::Failures(n)) => Ok(n),
            None => Ok(0),
        }
    }

    /// A login for `user` from `ip`, in this standing, failed: whether it earned a ban (here,
    /// or for a fleet, counted with the failures through the other proxies). `user_known`:
    /// the failure says something about the user (a wrong password), not only about the
    /// address (a user no map knows, forbidden characters), and counts for the user too. A
    /// known-good user's failure counts for it at the address, not for the address. `None`
    /// for an exempt address.
    pub async fn failure(
        &self,
        ip: IpAddr,
        user: &str,
        standing: &Standing,
        fingerprint: &Fingerprint,
        user_known: bool,
    ) -> Option<Verdict> {
        if self.exempt(ip) {
            return None;
        }
        let (now, key) = (Instant::now(), standing.key);
        let user_hash = self.user_hash(user);
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
        if key.user.is_some() && user_known {
            // The pair's own count stays here; the fleet still learns of the user's failure,
            // so that its per-user wait holds across the fleet.
            if let Some(fleet) = &self.fleet {
                let name = user_key(user);
                let print = fingerprint.fleet.as_deref();
                let _ = fleet.user_failure(&self.rules, &name, print).await;
            }
        }
        if key.user.is_none() {
            let shared = self
                .share_failure(key.source, user, fingerprint, user_known, &mut verdict)
                .await;
            if shared {
                return Some(verdict);
            }
            if let Some(ban) = verdict.banned_for {
                self.remember_ban(key.source, ban);
            }
        }
        if user_known {
            locked(&self.users).failure(user_hash, &self.rules, now);
        }
        Some(verdict)
    }

    /// Tell the fleet of an address's failure, and take its count and ban into `verdict`;
    /// `true` when the fleet had seen the same wrong password (then it is not counted again).
    async fn share_failure(
        &self,
        key: IpAddr,
        user: &str,
        fingerprint: &Fingerprint,
        user_known: bool,
        verdict: &mut Verdict,
    ) -> bool {
        let Some(fleet) = &self.fleet else {
            return false;
        };
        let banned_here = verdict.banned_for.is_some();
        let fleet_print = fingerprint.fleet.as_deref();
        let user = user_key(user);
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
        let Some(shared) = shared else {
            return false;
        };
        if shared.repeated {
            // Through another instance: a repeat all the same; counted here once.
            verdict.repeated = true;
            return true;
        }
        verdict.failures = verdict.failures.max(shared.source_failures);
        if shared.banned && !banned_here {
            verdict.banned_for = Some(self.rules.ban_time);
            // As a ban earned here: served, it is a fresh start.
            let now = Instant::now();
            let source_key = Key {
                source: key,
                user: None,
            };
            self.sources
                .entry(source_key)
                .and_compute_with(|entry| match entry {
                    None => Op::Nop,
                    Some(entry) => {
                        let mut record = entry.into_value();
                        record.ban(&self.rules, now);
                        Op::Put(record)
                    }
                });
        }
        false
    }

    /// A login for `user` from `ip` succeeded: the address's failures are forgiven if they were
    /// all that user's own, and the address is known good for the user.
    pub async fn success(&self, ip: IpAddr, user: &str) {
        if self.exempt(ip) {
            return;
        }
        let (now, key) = (Instant::now(), user_key(user));
        let hash = self.user_hash(user);
        if let Some(fleet) = &self.fleet {
            fleet.success(&self.rules, source(ip), &key).await;
        }
        self.known_good.remember(hash, source(ip), now);
        let forgive = |key: Key| {
            self.sources
                .entry(key)
                .and_compute_with(|entry| match entry {
                    None => Op::Nop,
                    Some(entry) => {
                        let mut record = entry.into_value();
                        record.success(hash);
                        if record.is_clear(now) {
                            Op::Remove
                        } else {
                            Op::Put(record)
                        }
                    }
                });
        };
        forgive(Key {
            source: source(ip),
            user: None,
        });
        forgive(Key {
            source: source(ip),
            user: Some(hash),
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
    sources: moka::sync::Cache<Key, Record>,
    key: Key,
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

/// User names compare without ASCII case, as Dovecot's `%Lu` lower-cases them, and whole:
/// Unicode's rules would make names a back end keeps apart one (the Kelvin sign and `k`), and
/// a cut one names that share their start. The tables keep keyed hashes of it, not the name.
fn user_key(user: &str) -> String {
    user.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed login, judged in the user's standing as the session does.
    async fn fail(
        g: &Guard,
        ip: IpAddr,
        user: &str,
        fingerprint: &Fingerprint,
        user_known: bool,
    ) -> Option<Verdict> {
        let standing = g.standing(ip, user).await;
        g.failure(ip, user, &standing, fingerprint, user_known)
            .await
    }

    async fn begin(g: &Guard, ip: IpAddr, user: &str) -> Admission {
        let standing = g.standing(ip, user).await;
        let fingerprint = g.fingerprint(user, b"a password not tried before");
        g.begin(ip, &standing, &fingerprint).await.0
    }

    #[tokio::test]
    async fn new_settings_take_over_failures_bans_and_open_connections() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let old = guard(&[]);
        for n in 0..3u8 {
            fail(
                &old,
                ip("192.0.2.1"),
                "a",
                &old.fingerprint("a", &[n]),
                true,
            )
            .await;
        }
        fail(
            &old,
            ip("192.0.2.2"),
            "a",
            &old.fingerprint("a", b"x"),
            true,
        )
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
            new.turned_away_here(ip("192.0.2.1")).is_some(),
            "the ban was lost"
        );
        let admission = begin(&new, ip("192.0.2.2"), "a").await;
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
            trusted: trusted.iter().map(|s| Network::from(*s)).collect(),
            ..GuardConfig::default()
        };
        Guard::new(&config).unwrap()
    }

    #[tokio::test]
    async fn ipv6_neighbours_share_a_bucket_ipv4_ones_do_not() {
        let g = guard(&[]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        fail(
            &g,
            ip("2001:db8:1:2::1"),
            "a",
            &g.fingerprint("a", b"1"),
            true,
        )
        .await;
        fail(
            &g,
            ip("2001:db8:1:2::ff"),
            "a",
            &g.fingerprint("a", b"2"),
            true,
        )
        .await;
        let v = fail(
            &g,
            ip("2001:db8:1:2:aaaa::3"),
            "a",
            &g.fingerprint("a", b"3"),
            true,
        )
        .await
        .unwrap();
        assert!(v.banned_for.is_some());
        assert!(g.turned_away_here(ip("2001:db8:1:2::77")).is_some());
        assert!(g.turned_away_here(ip("2001:db8:1:3::1")).is_none());
        fail(&g, ip("192.0.2.1"), "a", &g.fingerprint("a", b"1"), true).await;
        fail(&g, ip("192.0.2.2"), "a", &g.fingerprint("a", b"2"), true).await;
        assert_eq!(
            fail(&g, ip("192.0.2.3"), "a", &g.fingerprint("a", b"3"), true)
                .await
                .unwrap()
                .failures,
            1
        );
        // An IPv4 client on an IPv6 socket is the same IPv4 source.
        assert_eq!(
            fail(
                &g,
                ip("::ffff:192.0.2.3"),
                "a",
                &g.fingerprint("a", b"4"),
                true
            )
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
            assert_eq!(
                g.user_wait(attacker, &g.standing(attacker, "alice").await),
                Duration::ZERO
            );
            fail(&g, attacker, "ALICE", &g.fingerprint("alice", &[n]), true).await;
        }
        assert!(
            g.user_wait(
                ip("198.51.100.99"),
                &g.standing(ip("198.51.100.99"), "alice").await
            ) > Duration::ZERO
        );
        assert_eq!(
            g.user_wait(
                ip("192.0.2.50"),
                &g.standing(ip("192.0.2.50"), "alice").await
            ),
            Duration::ZERO
        );
        assert_eq!(
            g.user_wait(
                ip("198.51.100.99"),
                &g.standing(ip("198.51.100.99"), "bob").await
            ),
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
        fail(&g, banned, "a", &g.fingerprint("a", b"1"), true).await;
        fail(&g, banned, "a", &g.fingerprint("a", b"2"), true).await;
        for n in 0..5_000u32 {
            let ip = IpAddr::from(std::net::Ipv6Addr::from(
                (0x2001_0db8_u128 << 96) | (u128::from(n) << 64),
            ));
            fail(&g, ip, "a", &g.fingerprint("a", b"1"), true).await;
        }
        g.sources.run_pending_tasks();
        assert!(g.turned_away_here(banned).is_some());
    }

    #[tokio::test]
    async fn trusted_networks_are_exempt_and_success_forgives() {
        let g = guard(&["10.0.0.0/8"]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            fail(&g, ip("10.1.2.3"), "a", &g.fingerprint("a", b"x"), true).await,
            None
        );
        fail(&g, ip("192.0.2.9"), "a", &g.fingerprint("a", b"1"), true).await;
        fail(&g, ip("192.0.2.9"), "a", &g.fingerprint("a", b"2"), true).await;
        g.success(ip("192.0.2.9"), "a").await;
        assert_eq!(
            fail(&g, ip("192.0.2.9"), "a", &g.fingerprint("a", b"3"), true)
                .await
                .unwrap()
                .failures,
            1
        );
    }

    #[tokio::test]
    async fn known_good_users_are_judged_on_their_own_record_at_a_failing_address() {
        let g = guard(&[]);
        let nat: IpAddr = "192.0.2.100".parse().unwrap();
        g.success(nat, "alice").await;
        g.success(nat, "bob").await;
        // Strangers at the same address fail until the address is banned.
        for n in 0..3u8 {
            fail(
                &g,
                nat,
                &format!("guess{n}"),
                &g.fingerprint("x", &[n]),
                true,
            )
            .await;
        }
        assert!(matches!(
            begin(&g, nat, "mallory").await,
            Admission::Banned(_)
        ));
        // The address is greeted (it has known-good users); they log in at once.
        assert_eq!(g.turned_away_here(nat), None);
        for user in ["alice", "Bob"] {
            assert_eq!(
                begin(&g, nat, user).await,
                Admission::Try {
                    wait: Duration::ZERO,
                    failures: 0
                }
            );
        }
        // Alice's own mistakes count for her there, and do not touch Bob.
        for n in 0..3u8 {
            fail(&g, nat, "alice", &g.fingerprint("alice", &[n]), true).await;
        }
        assert!(matches!(
            begin(&g, nat, "alice").await,
            Admission::Banned(_)
        ));
        assert!(matches!(begin(&g, nat, "bob").await, Admission::Try { .. }));
        // An address without known-good users is turned away before the greeting.
        let other: IpAddr = "192.0.2.101".parse().unwrap();
        for n in 0..3u8 {
            fail(&g, other, "alice", &g.fingerprint("alice", &[n + 10]), true).await;
        }
        assert!(g.turned_away_here(other).is_some());
    }

    #[tokio::test]
    async fn failing_names_do_not_erase_a_users_credential_stuffing_wait() {
        let config = GuardConfig {
            max_sources: 100,
            user_failures_before_wait: 5,
            ..GuardConfig::default()
        };
        let g = Guard::new(&config).unwrap();
        for n in 0..8u8 {
            let attacker = IpAddr::from([198, 51, 100, n]);
            fail(&g, attacker, "victim", &g.fingerprint("victim", &[n]), true).await;
        }
        for n in 0..200u32 {
            let attacker = IpAddr::from([203, 0, (n / 250) as u8, (n % 250) as u8]);
            let name = format!("user{n}");
            fail(&g, attacker, &name, &g.fingerprint(&name, b"x"), true).await;
        }
        let fresh: IpAddr = "198.18.0.1".parse().unwrap();
        assert!(g.user_wait(fresh, &g.standing(fresh, "victim").await) > Duration::ZERO);
    }

    #[test]
    fn logged_in_connections_leave_room_for_new_ones_up_to_the_addresss_own_cap() {
        let config = GuardConfig {
            max_connections_per_address: 2,
            max_logged_in_per_address: 3,
            ..GuardConfig::default()
        };
        let g = Guard::new(&config).unwrap();
        let nat: IpAddr = "192.0.2.9".parse().unwrap();
        let mut sessions = Vec::new();
        for user in ["a", "b", "c"] {
            let waiting = g.admit(nat).unwrap();
            sessions.push(g.logged_in(waiting, nat, user));
        }
        // Three logged in, none waiting: two more may connect.
        let (one, two) = (g.admit(nat).unwrap(), g.admit(nat).unwrap());
        assert_eq!(g.admit(nat).err(), Some(2), "the waiting cap holds");
        // A fourth login finds the address's logged-in count full: it keeps its waiting slot.
        let kept = g.logged_in(one, nat, "d");
        assert_eq!(g.admit(nat).err(), Some(2));
        drop((kept, two, sessions));
        assert!(g.admit(nat).is_ok(), "every place was given back");
    }

    #[tokio::test]
    async fn names_that_only_unicode_case_folding_would_join_stay_apart() {
        let g = guard(&[]);
        let nat: IpAddr = "192.0.2.77".parse().unwrap();
        // The attacker's own account, "\u{212A}ate" (Kelvin sign), logs in: "kate" is not
        // made known good there, nor are failures for "kate" forgiven.
        fail(&g, nat, "kate", &g.fingerprint("kate", b"1"), true).await;
        fail(&g, nat, "kate", &g.fingerprint("kate", b"2"), true).await;
        g.success(nat, "\u{212A}ate").await;
        assert!(!g.standing(nat, "kate").await.known_good);
        let v = fail(&g, nat, "kate", &g.fingerprint("kate", b"3"), true).await;
        assert!(
            v.unwrap().banned_for.is_some(),
            "the failures were forgiven"
        );
        // Long names are compared whole.
        let (a, b) = ("x".repeat(300) + "a", "x".repeat(300) + "b");
        g.success(nat, &a).await;
        assert!(!g.standing(nat, &b).await.known_good);
    }
}

#[cfg(test)]
mod memory {
    use super::*;

    fn resident_kib() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4
    }

    /// Measures what a remembered source costs (run by hand: `cargo test --release --lib
    /// guard::memory -- --ignored --nocapture`).
    #[tokio::test]
    #[ignore]
    async fn bytes_per_remembered_source() {
        let g = Guard::new(&GuardConfig::default()).unwrap();
        let before = resident_kib();
        let n = 100_000u32;
        for i in 0..n {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            fail(
                &g,
                ip,
                "alice",
                &g.fingerprint("alice", &i.to_be_bytes()),
                true,
            )
            .await;
        }
        g.sources.run_pending_tasks();
        let after = resident_kib();
        println!(
            "{} sources: {} bytes each",
            g.sources.entry_count(),
            (after - before) * 1024 / u64::from(n)
        );
    }

    async fn fail(g: &Guard, ip: IpAddr, user: &str, f: &Fingerprint, known: bool) {
        let standing = g.standing(ip, user).await;
        g.failure(ip, user, &standing, f, known).await;
    }
}
