//! What the guard remembers about one source address, and the rules that turn failures into a
//! delay and a ban. Pure: time comes in as an argument, so every rule is tested without waiting.

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

impl Rules {
    /// The numbers a configuration's `[guard]` gives, in milliseconds there.
    pub fn of(config: &crate::config::GuardConfig) -> Rules {
        let ms = Duration::from_millis;
        Rules {
            penalty_initial: ms(config.penalty_initial_ms),
            penalty_max: ms(config.penalty_max_ms),
            forget_after: ms(config.forget_after_ms),
            ban_after: config.ban_after,
            ban_time: ms(config.ban_ms),
            user_failures_before_wait: config.user_failures_before_wait,
            known_good_for: ms(config.known_good_ms),
        }
    }
}

/// What one more failure means for its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Failures counted so far (a repeated password counted once).
    pub failures: u32,
    /// This failure earned a ban of this length.
    pub banned_for: Option<Duration>,
    /// The same user+password failed from here lately: not counted again.
    pub repeated: bool,
}

/// Whether a login from the source may be tried now, and after how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Try it after `wait` (the penalty for the failures so far and the attempts already
    /// under way: parallel guesses wait longer each).
    Try { wait: Duration, failures: u32 },
    /// As many logins are under way as `ban_after` and none has failed yet: ask again after
    /// this long (not counted as under way meanwhile).
    Later(Duration),
    /// Banned for this much longer.
    Banned(Duration),
    /// Failures and attempts under way already reach `ban_after`: one more would pass it.
    TooManyAtOnce,
}

#[derive(Debug, Clone, Default)]
pub struct Record {
    failures: u32,
    last_failure: Option<Instant>,
    /// Keyed hashes of the latest wrong user+password pairs.
    recent: Latest,
    /// Keyed hashes of the users those failures were for: a good login forgives the failures
    /// only when they were all its own user's (a typo), never someone else's.
    failed_users: Latest,
    banned_until: Option<Instant>,
    /// Logins from the source being tried right now.
    in_flight: u32,
}

impl Record {
    /// How much longer the source is banned, if it is.
    pub fn banned(&self, now: Instant) -> Option<Duration> {
        self.banned_until
            .and_then(|until| until.checked_duration_since(now))
            .filter(|left| !left.is_zero())
    }

    fn forget_if_quiet(&mut self, rules: &Rules, now: Instant) {
        let quiet = self
            .last_failure
            .is_some_and(|last| now.saturating_duration_since(last) >= rules.forget_after);
        if quiet {
            self.forgive();
        }
    }

    fn forgive(&mut self) {
        self.failures = 0;
        self.last_failure = None;
        self.recent.clear();
        self.failed_users.clear();
    }

    /// A login from the source is about to be tried: counted as under way when admitted (end
    /// it with [`Record::end`]). A source without failures is never held back, however many
    /// of its logins run at once (an office behind one address at nine in the morning).
    /// `elsewhere`: the source's failures as a fleet of proxies knows them (0 alone).
    /// `fingerprint`: the attempt's user+password; one that failed lately (a phone retrying an
    /// old password, or someone repeating it to crowd the others out) waits its penalty but
    /// is not counted as under way, so that repeats cannot hold anyone else back.
    pub fn begin(
        &mut self,
        rules: &Rules,
        now: Instant,
        elsewhere: u32,
        fingerprint: u64,
    ) -> (Admission, bool) {
        if let Some(left) = self.banned(now) {
            return (Admission::Banned(left), false);
        }
        self.forget_if_quiet(rules, now);
        let failures = self.failures.max(elsewhere);
        if self.recent.contains(&fingerprint) {
            let wait = penalty(rules, failures);
            return (Admission::Try { wait, failures }, false);
        }
        let admission = self.admit(rules, failures);
        let counted = matches!(admission, Admission::Try { .. });
        (admission, counted)
    }

    /// A new attempt, counted as under way unless it would pass `ban_after`.
    fn admit(&mut self, rules: &Rules, failures: u32) -> Admission {
        let in_flight = self.in_flight;
        if rules.ban_after > 0 && failures.saturating_add(in_flight) >= rules.ban_after {
            // Without failures yet, a crowd (an office at nine, or guesses sent all at once
            // before the first answer) waits its turn rather than being refused.
            return if failures == 0 {
                Admission::Later(rules.penalty_initial)
            } else {
                Admission::TooManyAtOnce
            };
        }
        self.in_flight = self.in_flight.saturating_add(1);
        let wait = if failures == 0 {
            Duration::ZERO
        } else {
            penalty(rules, failures.saturating_add(in_flight))
        };
        Admission::Try { wait, failures }
    }

    /// The record as a new configuration takes it over: the logins under way end in the
    /// old one, so they are not counted here.
    pub fn taken_over(&self) -> Record {
        Record {
            in_flight: 0,
            ..self.clone()
        }
    }

    /// A login admitted by [`Record::begin`] has been answered.
    pub fn end(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Count a failed login for the user hashing to `user` whose user+password hash to
    /// `fingerprint`.
    pub fn failure(&mut self, rules: &Rules, now: Instant, fingerprint: u64, user: u64) -> Verdict {
        self.forget_if_quiet(rules, now);
        let repeated = self.recent.contains(&fingerprint);
        // A repeat neither counts nor keeps the record fresh: an old password retried for
        // ever must not hold the address's failures (and its neighbours' logins) for ever.
        if !repeated {
            self.last_failure = Some(now);
            self.failures = self.failures.saturating_add(1);
            self.recent.push(fingerprint);
            self.failed_users.push(user);
        }
        let failures = self.failures;
        let earned_ban =
            rules.ban_after > 0 && failures >= rules.ban_after && self.banned(now).is_none();
        if earned_ban {
            self.ban(rules, now);
        }
        Verdict {
            failures,
            banned_for: earned_ban.then_some(rules.ban_time),
            repeated,
        }
    }

    /// Banned from `now` on, here or by the fleet; a ban served is a fresh start.
    pub fn ban(&mut self, rules: &Rules, now: Instant) {
        // A ban too long for the clock is as good as forever.
        self.banned_until = now
            .checked_add(rules.ban_time)
            .or(Some(now + Duration::from_secs(366 * 24 * 3600)));
        self.forgive();
    }

    /// A good login for the user hashing to `user`: the failures are forgiven when they were
    /// all that user's own. Someone else's failures stay, or an attacker with an account of
    /// its own could wipe its record between guesses.
    pub fn success(&mut self, user: u64) {
        if self.failed_users.iter().all(|u| *u == user) {
            self.forgive();
        }
    }

    /// Whether nothing is left worth remembering.
    pub fn is_clear(&self, now: Instant) -> bool {
        self.failures == 0 && self.in_flight == 0 && self.banned(now).is_none()
    }
}

/// The last [`RECENT_FINGERPRINTS`] hashes, in place: a record is one allocation however
/// many failures it saw (a hundred thousand of them are remembered at once).
#[derive(Debug, Clone, Default)]
struct Latest {
    hashes: [u64; RECENT_FINGERPRINTS],
    len: u8,
    /// Where the next one goes once full (the oldest).
    next: u8,
}

impl Latest {
    fn as_slice(&self) -> &[u64] {
        &self.hashes[..usize::from(self.len)]
    }

    fn contains(&self, hash: &u64) -> bool {
        self.as_slice().contains(hash)
    }

    fn iter(&self) -> impl Iterator<Item = &u64> {
        self.as_slice().iter()
    }

    fn clear(&mut self) {
        (self.len, self.next) = (0, 0);
    }

    fn push(&mut self, hash: u64) {
        if usize::from(self.len) < RECENT_FINGERPRINTS {
            self.hashes[usize::from(self.len)] = hash;
            self.len += 1;
        } else {
            self.hashes[usize::from(self.next)] = hash;
            self.next = (self.next + 1) % RECENT_FINGERPRINTS as u8;
        }
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

    /// One attempt after another: begin, fail, end.
    fn fail(r: &mut Record, at: Instant, fingerprint: u64, user: u64) -> (Admission, Verdict) {
        let (admission, counted) = r.begin(&rules(), at, 0, fingerprint);
        let verdict = r.failure(&rules(), at, fingerprint, user);
        if counted {
            r.end();
        }
        (admission, verdict)
    }

    /// An attempt with a password not tried before.
    const NEW: u64 = u64::MAX;

    fn wait(a: Admission) -> u64 {
        match a {
            Admission::Try { wait, .. } => wait.as_secs(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_wait_before_the_next_try_doubles_up_to_the_cap() {
        let (mut r, t0) = (Record::default(), Instant::now());
        let waits: Vec<u64> = (0..6)
            .map(|i| wait(fail(&mut r, t0 + secs(i), i, 1).0))
            .collect();
        assert_eq!(waits, [0, 2, 4, 8, 15, 15]);
    }

    #[test]
    fn parallel_tries_wait_longer_each_and_stop_short_of_a_ban() {
        let (mut r, t0) = (Record::default(), Instant::now());
        // No failures yet: up to ban_after at once, none held back; more wait their turn.
        for _ in 0..6 {
            assert_eq!(wait(r.begin(&rules(), t0, 0, NEW).0), 0);
        }
        assert_eq!(r.begin(&rules(), t0, 0, NEW).0, Admission::Later(secs(2)));
        r.end();
        assert_eq!(wait(r.begin(&rules(), t0, 0, NEW).0), 0);
        for _ in 0..6 {
            r.end();
        }
        fail(&mut r, t0, 1, 1);
        let waits: Vec<u64> = (0..5)
            .map(|_| wait(r.begin(&rules(), t0, 0, NEW).0))
            .collect();
        assert_eq!(waits, [2, 4, 8, 15, 15]);
        // One failure and five under way reach ban_after (6): no sixth at once.
        assert_eq!(r.begin(&rules(), t0, 0, NEW).0, Admission::TooManyAtOnce);
    }

    #[test]
    fn the_same_wrong_password_counts_once() {
        let (mut r, t0) = (Record::default(), Instant::now());
        for i in 0..20 {
            let (_, v) = fail(&mut r, t0 + secs(i), 42, 1);
            assert_eq!((v.failures, v.banned_for, v.repeated), (1, None, i > 0));
        }
        assert_eq!(fail(&mut r, t0 + secs(21), 43, 1).1.failures, 2);
        assert_eq!(fail(&mut r, t0 + secs(22), 42, 1).1.failures, 2);
    }

    #[test]
    fn a_good_login_forgives_its_own_typos_but_not_others_failures() {
        let (mut r, t0) = (Record::default(), Instant::now());
        fail(&mut r, t0, 1, 7);
        fail(&mut r, t0, 2, 7);
        r.success(7);
        assert!(r.is_clear(t0));
        // Guesses at a victim's password, then the attacker's own good login: nothing forgiven.
        fail(&mut r, t0, 3, 8);
        fail(&mut r, t0, 4, 8);
        r.success(9);
        assert_eq!(fail(&mut r, t0, 5, 8).1.failures, 3);
        // And a quiet period forgets.
        assert_eq!(fail(&mut r, t0 + secs(301), 6, 8).1.failures, 1);
    }

    #[test]
    fn enough_failures_earn_a_ban_that_ends() {
        let (mut r, t0) = (Record::default(), Instant::now());
        for i in 0..5 {
            assert_eq!(fail(&mut r, t0 + secs(i), i, 1).1.banned_for, None);
        }
        let (_, v) = fail(&mut r, t0 + secs(5), 5, 1);
        assert_eq!((v.failures, v.banned_for), (6, Some(secs(600))));
        assert_eq!(
            r.begin(&rules(), t0 + secs(6), 0, NEW).0,
            Admission::Banned(secs(599))
        );
        assert!(!r.is_clear(t0 + secs(6)));
        assert_eq!(wait(r.begin(&rules(), t0 + secs(605), 0, NEW).0), 0);
        r.end();
        assert!(r.is_clear(t0 + secs(605)));
        let never = Rules {
            ban_after: 0,
            ..rules()
        };
        let mut r = Record::default();
        for i in 0..100 {
            assert_eq!(r.failure(&never, t0 + secs(i), i, 1).banned_for, None);
        }
    }

    #[test]
    fn repeats_of_a_failed_password_wait_but_do_not_crowd_others_out() {
        let (mut r, t0) = (Record::default(), Instant::now());
        fail(&mut r, t0, 42, 1);
        // Nine repeats of the failed password under way at once: none counts as under way.
        for _ in 0..9 {
            let (admission, counted) = r.begin(&rules(), t0, 0, 42);
            assert_eq!(wait(admission), 2);
            assert!(!counted);
        }
        // The real user's new attempt is not refused as one too many.
        assert_eq!(wait(r.begin(&rules(), t0, 0, NEW).0), 2);
    }
}
