//! Credential stuffing tries one user from many addresses, each of which stays under the
//! per-address penalty. So failures are also counted per user, across addresses, and a login
//! for a user with recent failures waits before it is tried, unless it comes from an address
//! that logged in as that user recently ("known good", [`super::known_good`]): the attacker is
//! slowed, the real user is never locked out.
//!
//! The records are bounded on their own, and when full the least-failed go first: a flood of
//! new failing names cannot erase the record of a user under attack. Pure: time comes in as
//! an argument.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::record::{penalty, Rules};

#[derive(Debug, Clone, Copy, Default)]
pub struct UserRecord {
    failures: u32,
    last_failure: Option<Instant>,
}

impl UserRecord {
    fn quiet(&self, rules: &Rules, now: Instant) -> bool {
        self.last_failure
            .is_none_or(|last| now.saturating_duration_since(last) >= rules.forget_after)
    }

    /// The user's recent failures.
    pub fn failures(&self, rules: &Rules, now: Instant) -> u32 {
        if self.quiet(rules, now) {
            0
        } else {
            self.failures
        }
    }

    pub fn failure(&mut self, rules: &Rules, now: Instant) {
        self.failures = self.failures(rules, now).saturating_add(1);
        self.last_failure = Some(now);
    }
}

/// User (a keyed hash of its lower-cased name) → its recent failures, from any address.
pub struct UserFailures {
    records: HashMap<u64, UserRecord>,
    capacity: usize,
}

impl UserFailures {
    pub fn new(capacity: usize) -> UserFailures {
        UserFailures {
            records: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn failures(&self, user: u64, rules: &Rules, now: Instant) -> u32 {
        self.records
            .get(&user)
            .map_or(0, |r| r.failures(rules, now))
    }

    pub fn failure(&mut self, user: u64, rules: &Rules, now: Instant) {
        if !self.records.contains_key(&user) && self.records.len() >= self.capacity {
            self.make_room(rules, now);
        }
        self.records.entry(user).or_default().failure(rules, now);
    }

    /// Every record, for a new configuration to take over.
    pub fn all(&self) -> impl Iterator<Item = (u64, UserRecord)> + '_ {
        self.records.iter().map(|(k, r)| (*k, *r))
    }

    pub fn insert(&mut self, user: u64, record: UserRecord) {
        if self.records.len() < self.capacity {
            self.records.insert(user, record);
        }
    }

    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.records.len()
    }

    /// Quiet records go first; then the tenth with the fewest failures (the oldest among
    /// equals), in one go, so that a flood of new names costs one pass per many of them.
    fn make_room(&mut self, rules: &Rules, now: Instant) {
        self.records.retain(|_, r| !r.quiet(rules, now));
        if self.records.len() < self.capacity {
            return;
        }
        let mut ranked: Vec<(u32, Option<Instant>, u64)> = self
            .records
            .iter()
            .map(|(k, r)| (r.failures, r.last_failure, *k))
            .collect();
        let drop = (self.capacity / 10).max(1);
        ranked.select_nth_unstable(drop - 1);
        for (_, _, user) in &ranked[..drop] {
            self.records.remove(user);
        }
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
        let (mut users, t0) = (UserFailures::new(100), Instant::now());
        let wait = |users: &UserFailures, known: bool, at: Instant| {
            user_wait(&rules(), users.failures(1, &rules(), at), known)
        };
        for _ in 0..3 {
            assert_eq!(wait(&users, false, t0), Duration::ZERO);
            users.failure(1, &rules(), t0);
        }
        assert_eq!(wait(&users, false, t0), Duration::from_secs(2));
        users.failure(1, &rules(), t0);
        assert_eq!(wait(&users, false, t0), Duration::from_secs(4));
        // The real user, from home: not slowed at all.
        assert_eq!(wait(&users, true, t0), Duration::ZERO);
        // Quiet long enough: forgotten.
        let later = t0 + Duration::from_secs(301);
        assert_eq!(wait(&users, false, later), Duration::ZERO);
    }

    #[test]
    fn a_flood_of_failing_names_does_not_erase_a_user_under_attack() {
        let (mut users, t0) = (UserFailures::new(100), Instant::now());
        for _ in 0..6 {
            users.failure(42, &rules(), t0);
        }
        for name in 1_000..1_200 {
            users.failure(name, &rules(), t0);
        }
        assert!(users.count() <= 100);
        assert_eq!(users.failures(42, &rules(), t0), 6);
    }
}
