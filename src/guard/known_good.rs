//! Known-good user+address pairs: an address a user logged in from lately. Such a pair is
//! judged on its own record, never on the address's: behind a carrier's NAT or an office's
//! one address, the users who logged in from there before are neither slowed nor banned for
//! the others' failures. Apart from the failure records, so that failing names and sources
//! cannot push them out; only a good login adds one, and one user keeps at most
//! [`PER_USER`] addresses, so that one account logging in from everywhere cannot crowd the
//! others' out. Each pair keeps the time of its good login: a reload carries it over as it is.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use moka::ops::compute::Op;

/// Addresses remembered as known good per user (a phone roaming a carrier's pool of NAT
/// addresses, a laptop, the office); the oldest is forgotten first.
const PER_USER: usize = 16;

pub struct KnownGood {
    /// User → the sources it logged in from, with when.
    users: moka::sync::Cache<u64, Vec<(IpAddr, Instant)>>,
    /// Source → when a user last logged in from it: a ban of such an address greets the
    /// client and decides at its login, instead of turning it away before the greeting.
    sources: moka::sync::Cache<IpAddr, Instant>,
    known_good_for: Duration,
}

impl KnownGood {
    pub fn new(capacity: u64, known_good_for: Duration) -> KnownGood {
        let keep = known_good_for.max(Duration::from_millis(1));
        KnownGood {
            users: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(keep)
                .build(),
            sources: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(keep)
                .build(),
            known_good_for,
        }
    }

    fn fresh(&self, when: Instant, now: Instant) -> bool {
        now.saturating_duration_since(when) < self.known_good_for
    }

    pub fn is_known(&self, user: u64, source: IpAddr, now: Instant) -> bool {
        self.users.get(&user).is_some_and(|sources| {
            sources
                .iter()
                .any(|(ip, when)| *ip == source && self.fresh(*when, now))
        })
    }

    pub fn has_users(&self, source: IpAddr, now: Instant) -> bool {
        self.sources
            .get(&source)
            .is_some_and(|when| self.fresh(when, now))
    }

    pub fn remember(&self, user: u64, source: IpAddr, now: Instant) {
        self.users.entry(user).and_compute_with(|entry| {
            let mut sources = entry.map(|e| e.into_value()).unwrap_or_default();
            sources.retain(|(ip, when)| *ip != source && self.fresh(*when, now));
            if sources.len() >= PER_USER {
                sources.remove(0);
            }
            sources.push((source, now));
            Op::Put(sources)
        });
        self.sources.insert(source, now);
    }

    /// Take over what `previous` knows (a reload), each pair with its own time.
    pub fn take_over(&self, previous: &KnownGood) {
        for (user, sources) in previous.users.iter() {
            self.users.insert(*user, sources);
        }
        for (source, when) in previous.sources.iter() {
            self.sources.insert(*source, when);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_user_keeps_its_latest_addresses_and_they_expire() {
        let t0 = Instant::now();
        let known = KnownGood::new(1000, Duration::from_secs(3600));
        for n in 0..40u8 {
            known.remember(7, IpAddr::from([10, 0, 0, n]), t0);
        }
        assert!(known.is_known(7, IpAddr::from([10, 0, 0, 39]), t0));
        assert!(
            !known.is_known(7, IpAddr::from([10, 0, 0, 0]), t0),
            "kept more than 16"
        );
        assert!(
            !known.is_known(8, IpAddr::from([10, 0, 0, 39]), t0),
            "another user"
        );
        let later = t0 + Duration::from_secs(3600);
        assert!(!known.is_known(7, IpAddr::from([10, 0, 0, 39]), later));
        assert!(!known.has_users(IpAddr::from([10, 0, 0, 39]), later));
    }

    #[test]
    fn a_reload_keeps_each_pairs_own_time() {
        let t0 = Instant::now();
        let old = KnownGood::new(1000, Duration::from_secs(3600));
        old.remember(7, IpAddr::from([10, 0, 0, 1]), t0);
        let new = KnownGood::new(1000, Duration::from_secs(3600));
        new.take_over(&old);
        let later = t0 + Duration::from_secs(3600);
        assert!(new.is_known(7, IpAddr::from([10, 0, 0, 1]), t0));
        assert!(!new.is_known(7, IpAddr::from([10, 0, 0, 1]), later));
    }
}
