//! What the guard remembers about one source address, and the rules that turn failures into a
//! delay and a ban. Pure: time comes in as an argument, so every rule is tested without waiting.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How many recent wrong passwords are remembered per source, so that a phone retrying an
/// old password counts once (Dovecot keeps 10 too).
const RECENT_FINGERPRINTS: usize = 10;

/// The guard's numbers (see the README's guard chapter for the defaults and why).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// The delay after the first failure; it doubles with every further one.
    pub penalty_initial: Duration,
    /// The delay never grows beyond this.
    pub penalty_max: Duration,
    /// A source quiet this long since its last failure starts from zero again.
    pub forget_after: Duration,
    /// Failures (without an intervening success or quiet period) that earn a ban; 0: never.
    pub ban_after: u32,
    /// How long a ban lasts.
    pub ban_time: Duration,
    /// Failures for one user, from any address, before its logins wait (credential stuffing).
    pub user_failures_before_wait: u32,
    /// How long an address that logged in as a user stays exempt from that user's wait.
    pub known_good_for: Duration,
}

/// What one more failure means for its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Failures counted so far (a repeated password counted once).
    pub failures: u32,
    /// How long to wait before answering the failed login.
    pub delay: Duration,
    /// This failure earned a ban of this length.
    pub banned_for: Option<Duration>,
    /// The same user+password failed from here lately: not counted again.
    pub repeated: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Record {
    failures: u32,
    last_failure: Option<Instant>,
    /// Keyed hashes of the latest wrong user+password pairs, newest last.
    recent: VecDeque<u64>,
    banned_until: Option<Instant>,
}

impl Record {
    /// How much longer the source is banned, if it is.
    pub fn banned(&self, now: Instant) -> Option<Duration> {
        self.banned_until
            .and_then(|until| until.checked_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    /// Count a failed login whose user+password hash to `fingerprint`.
    pub fn failure(&mut self, rules: &Rules, now: Instant, fingerprint: u64) -> Verdict {
        let quiet = self
            .last_failure
            .is_some_and(|last| now.saturating_duration_since(last) >= rules.forget_after);
        if quiet {
            self.failures = 0;
            self.recent.clear();
        }
        self.last_failure = Some(now);
        let repeated = self.recent.contains(&fingerprint);
        if !repeated {
            self.failures = self.failures.saturating_add(1);
            if self.recent.len() == RECENT_FINGERPRINTS {
                self.recent.pop_front();
            }
            self.recent.push_back(fingerprint);
        }
        let failures = self.failures;
        let earned_ban =
            rules.ban_after > 0 && failures >= rules.ban_after && self.banned(now).is_none();
        if earned_ban {
            // A ban too long for the clock is as good as forever.
            self.banned_until = now
                .checked_add(rules.ban_time)
                .or(Some(now + Duration::from_secs(366 * 24 * 3600)));
            // A ban served is a fresh start.
            self.failures = 0;
            self.recent.clear();
        }
        Verdict {
            failures,
            delay: penalty(rules, failures),
            banned_for: earned_ban.then_some(rules.ban_time),
            repeated,
        }
    }

    /// A good login from the source: its failures are forgiven (not a ban, which a banned
    /// source cannot reach a login to lift).
    pub fn success(&mut self) {
        self.failures = 0;
        self.last_failure = None;
        self.recent.clear();
    }

    /// Whether nothing is left worth remembering.
    pub fn is_clear(&self, now: Instant) -> bool {
        self.failures == 0 && self.banned(now).is_none()
    }
}

/// The delay for the `failures`-th failure: the initial delay, doubled per further failure,
/// capped.
pub(super) fn penalty(rules: &Rules, failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let doublings = (failures - 1).min(16);
    rules
        .penalty_initial
        .saturating_mul(1 << doublings)
        .min(rules.penalty_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            penalty_initial: Duration::from_secs(2),
            penalty_max: Duration::from_secs(15),
            forget_after: Duration::from_secs(300),
            ban_after: 6,
            ban_time: Duration::from_secs(600),
            user_failures_before_wait: 3,
            known_good_for: Duration::from_secs(3600),
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn the_delay_doubles_up_to_the_cap() {
        let (mut r, t0) = (Record::default(), Instant::now());
        let delays: Vec<u64> = (0..5)
            .map(|i| r.failure(&rules(), t0 + secs(i), i).delay.as_secs())
            .collect();
        assert_eq!(delays, [2, 4, 8, 15, 15]);
    }

    #[test]
    fn the_same_wrong_password_counts_once() {
        let (mut r, t0) = (Record::default(), Instant::now());
        for i in 0..20 {
            let v = r.failure(&rules(), t0 + secs(i), 42);
            assert_eq!((v.failures, v.delay, v.banned_for), (1, secs(2), None));
            assert_eq!(v.repeated, i > 0);
        }
        // A new one counts, and the old one is still remembered.
        assert_eq!(r.failure(&rules(), t0 + secs(21), 43).failures, 2);
        assert_eq!(r.failure(&rules(), t0 + secs(22), 42).failures, 2);
    }

    #[test]
    fn a_quiet_period_or_a_success_forgets_the_failures() {
        let (mut r, t0) = (Record::default(), Instant::now());
        r.failure(&rules(), t0, 1);
        r.failure(&rules(), t0 + secs(1), 2);
        let v = r.failure(&rules(), t0 + secs(1 + 300), 3);
        assert_eq!((v.failures, v.delay), (1, secs(2)));
        r.success();
        assert!(r.is_clear(t0 + secs(302)));
        assert_eq!(r.failure(&rules(), t0 + secs(303), 3).failures, 1);
    }

    #[test]
    fn enough_failures_earn_a_ban_that_ends() {
        let (mut r, t0) = (Record::default(), Instant::now());
        for i in 0..5 {
            assert_eq!(r.failure(&rules(), t0 + secs(i), i).banned_for, None);
        }
        let v = r.failure(&rules(), t0 + secs(5), 5);
        assert_eq!((v.failures, v.banned_for), (6, Some(secs(600))));
        assert_eq!(r.banned(t0 + secs(6)), Some(secs(599)));
        assert!(!r.is_clear(t0 + secs(6)));
        assert_eq!(r.banned(t0 + secs(605)), None);
        assert!(r.is_clear(t0 + secs(605)));
        // Never banned when ban_after is 0.
        let never = Rules {
            ban_after: 0,
            ..rules()
        };
        let mut r = Record::default();
        for i in 0..100 {
            assert_eq!(r.failure(&never, t0 + secs(i), i).banned_for, None);
        }
    }
}
