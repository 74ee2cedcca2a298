//! Credential stuffing tries one user from many addresses, each of which stays under the
//! per-address penalty. So failures are also counted per user, across addresses, and a login
//! for a user with recent failures waits before it is tried, unless it comes from an address
//! that logged in as that user recently ("known good"): the attacker is slowed, the real user
//! is never locked out. Pure, like the per-address record.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::record::{penalty, Rules};

/// Addresses remembered as known good per user (a phone, a laptop, the office).
const KNOWN_GOOD: usize = 8;

#[derive(Debug, Clone, Default)]
pub struct UserRecord {
    failures: u32,
    last_failure: Option<Instant>,
    /// Sources that logged in as this user, with when; the oldest is forgotten first.
    known_good: Vec<(IpAddr, Instant)>,
}

impl UserRecord {
    fn forget_if_quiet(&mut self, rules: &Rules, now: Instant) {
        let quiet = self
            .last_failure
            .is_some_and(|last| now.saturating_duration_since(last) >= rules.forget_after);
        if quiet {
            self.failures = 0;
            self.last_failure = None;
        }
    }

    /// How long a login for this user from `source` waits before it is tried.
    pub fn wait(&mut self, rules: &Rules, now: Instant, source: IpAddr) -> Duration {
        let (failures, known) = self.standing(rules, now, source);
        user_wait(rules, failures, known)
    }

    /// The user's recent failures, and whether `source` is known good for it.
    pub fn standing(&mut self, rules: &Rules, now: Instant, source: IpAddr) -> (u32, bool) {
        self.forget_if_quiet(rules, now);
        let known = self.known_good.iter().any(|(ip, when)| {
            *ip == source && now.saturating_duration_since(*when) < rules.known_good_for
        });
        (self.failures, known)
    }

    pub fn failure(&mut self, rules: &Rules, now: Instant) {
        self.forget_if_quiet(rules, now);
        self.failures = self.failures.saturating_add(1);
        self.last_failure = Some(now);
    }

    /// A good login from `source`: it is known good for this user from now on. The failures
    /// stay: they are someone else's.
    pub fn success(&mut self, now: Instant, source: IpAddr) {
        self.known_good.retain(|(ip, _)| *ip != source);
        if self.known_good.len() == KNOWN_GOOD {
            self.known_good.remove(0);
        }
        self.known_good.push((source, now));
    }
}

/// How long a login waits for a user with `failures` lately, from an address known good for
/// it or not.
pub fn user_wait(rules: &Rules, failures: u32, known_good: bool) -> Duration {
    let off = rules.user_failures_before_wait == 0;
    if off || known_good || failures < rules.user_failures_before_wait {
        return Duration::ZERO;
    }
    penalty(rules, failures + 1 - rules.user_failures_before_wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            penalty_initial: Duration::from_secs(2),
            penalty_max: Duration::from_secs(15),
            forget_after: Duration::from_secs(300),
            ban_after: 10,
            ban_time: Duration::from_secs(600),
            user_failures_before_wait: 3,
            known_good_for: Duration::from_secs(30 * 24 * 3600),
        }
    }

    #[test]
    fn failures_from_many_addresses_slow_the_next_try_but_not_from_a_known_good_one() {
        let (mut u, t0) = (UserRecord::default(), Instant::now());
        let home: IpAddr = "192.0.2.1".parse().unwrap();
        let attacker = |n: u8| IpAddr::from([198, 51, 100, n]);
        u.success(t0, home);
        for n in 0..3 {
            assert_eq!(u.wait(&rules(), t0, attacker(n)), Duration::ZERO);
            u.failure(&rules(), t0);
        }
        assert_eq!(u.wait(&rules(), t0, attacker(9)), Duration::from_secs(2));
        u.failure(&rules(), t0);
        assert_eq!(u.wait(&rules(), t0, attacker(10)), Duration::from_secs(4));
        // The real user, from home: not slowed at all.
        assert_eq!(u.wait(&rules(), t0, home), Duration::ZERO);
        // Quiet long enough: forgotten.
        let later = t0 + Duration::from_secs(301);
        assert_eq!(u.wait(&rules(), later, attacker(11)), Duration::ZERO);
    }

    #[test]
    fn known_good_addresses_are_bounded_and_expire() {
        let (mut u, t0) = (UserRecord::default(), Instant::now());
        for n in 0..20 {
            u.success(t0, IpAddr::from([10, 0, 0, n]));
        }
        assert_eq!(u.known_good.len(), KNOWN_GOOD);
        for _ in 0..5 {
            u.failure(&rules(), t0);
        }
        let newest = IpAddr::from([10, 0, 0, 19]);
        assert_eq!(u.wait(&rules(), t0, newest), Duration::ZERO);
        assert!(u.wait(&rules(), t0, IpAddr::from([10, 0, 0, 0])) > Duration::ZERO);
        let expired = t0 + Duration::from_secs(30 * 24 * 3600);
        for _ in 0..3 {
            u.failure(&rules(), expired); // still failing, a month on
        }
        assert!(u.wait(&rules(), expired, newest) > Duration::ZERO);
    }
}
