//! Where a user goes: the server its open sessions are on, else the one its assignment names
//! while that is usable, else the best-ranked usable server (which becomes its assignment for
//! `sticky_ms`). A server is usable when it is up and not drained; a drained server keeps
//! only the users that still have sessions on it.
//!
//! With a store the decision is one script in the store, so that every instance of the fleet
//! places a user alike whoever asks first; without one (or while it does not answer) this
//! process decides alone with [`Local`].

use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Keys: the user's sessions, its assignment. `ARGV`: how long a new assignment holds before
/// the login that made it is counted (ms), this instance, the number of up servers, the up
/// servers best first, then the drained ones. Answers `{1, host}`, `{0, ''}` when no server is
/// usable, or `{2, ''}` when the user's sessions are through other instances on a server this
/// one cannot use (down in its view, or unknown to it): placing the user elsewhere would serve
/// it from two servers at once, so the login is to wait until those sessions end or the
/// other instances move them.
pub const PLACE: &str = r"
local t = redis.call('TIME')
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t[1] * 1000 + math.floor(t[2] / 1000))
local n = tonumber(ARGV[3])
local up, drained = {}, {}
for i = 1, n do up[ARGV[3 + i]] = true end
for i = 4 + n, #ARGV do drained[ARGV[i]] = true end
local elsewhere = false
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, 63)) do
  local instance, host = string.match(m, '^(.*)/%d+@(.*)$')
  if host then
    if up[host] then return {1, host} end
    if instance ~= ARGV[2] then elsewhere = true end
  end
end
if elsewhere then return {2, ''} end
local current = redis.call('GET', KEYS[2])
if current and up[current] and not drained[current] then return {1, current} end
for i = 1, n do
  local host = ARGV[3 + i]
  if not drained[host] then
    redis.call('SET', KEYS[2], host, 'PX', ARGV[1])
    return {1, host}
  end
end
return {0, ''}
";

/// What the store's placement said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    On(String),
    NoServer,
    /// The user's sessions are through other instances on a server this one cannot use.
    HeldElsewhere,
}

impl Placed {
    /// The script's answer.
    pub fn from_answer((status, host): (i64, String)) -> Placed {
        match status {
            1 => Placed::On(host),
            2 => Placed::HeldElsewhere,
            _ => Placed::NoServer,
        }
    }
}

/// What a placement is decided from, in this process's view.
pub struct Candidates<'a> {
    /// The servers that are up, best-ranked first for this user.
    pub up: Vec<&'a str>,
    /// The servers an admin drained (no new users).
    pub drained: &'a HashSet<String>,
}

impl Candidates<'_> {
    /// The host for a user whose sessions are on `open` (if any) and whose assignment is
    /// `current` (if any); `None` when no server is usable.
    pub fn choose(&self, open: Option<&str>, current: Option<&str>) -> Option<String> {
        let up = |host: &str| self.up.contains(&host);
        if let Some(host) = open.filter(|h| up(h)) {
            return Some(host.to_string());
        }
        if let Some(host) = current.filter(|h| up(h) && !self.drained.contains(*h)) {
            return Some(host.to_string());
        }
        self.up
            .iter()
            .find(|h| !self.drained.contains(**h))
            .map(|h| h.to_string())
    }
}

/// Assignments made by this process: the whole truth without a store, the fallback with one.
/// Bounded: the least used are dropped first beyond `limit` (a dropped user is placed anew,
/// by the same ranking).
pub struct Local {
    assignments: moka::sync::Cache<String, (String, Instant)>,
}

impl Local {
    pub fn new(limit: u64) -> Local {
        Local {
            assignments: moka::sync::Cache::new(limit),
        }
    }

    /// The user's assignment, while it holds.
    pub fn current(&self, user: &str, now: Instant) -> Option<String> {
        let (host, until) = self.assignments.get(user)?;
        (until > now).then_some(host)
    }

    /// The user is on `host` for `sticky` from `now` on (again).
    pub fn assign(&self, user: &str, host: &str, now: Instant, sticky: Duration) {
        self.assignments
            .insert(user.to_string(), (host.to_string(), now + sticky));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_sessions_hold_then_the_assignment_then_the_ranking() {
        let drained = HashSet::from(["b".to_string()]);
        let candidates = Candidates {
            up: vec!["a", "b", "c"],
            drained: &drained,
        };
        // Sessions open on a drained server: the user stays with them.
        assert_eq!(
            candidates.choose(Some("b"), Some("c")).as_deref(),
            Some("b")
        );
        // No sessions: a drained assignment does not hold, a good one does.
        assert_eq!(candidates.choose(None, Some("b")).as_deref(), Some("a"));
        assert_eq!(candidates.choose(None, Some("c")).as_deref(), Some("c"));
        // Sessions on a server that is down: the user moves.
        assert_eq!(candidates.choose(Some("d"), None).as_deref(), Some("a"));
        let none_usable = Candidates {
            up: vec!["b"],
            drained: &drained,
        };
        assert_eq!(none_usable.choose(None, None), None);
    }

    #[test]
    fn assignments_expire_and_stay_bounded() {
        let (local, now) = (Local::new(100), Instant::now());
        local.assign("kate", "a", now, Duration::from_secs(10));
        assert_eq!(local.current("kate", now).as_deref(), Some("a"));
        assert_eq!(local.current("kate", now + Duration::from_secs(11)), None);
        for i in 0..1_000 {
            local.assign(&format!("user{i}"), "b", now, Duration::from_secs(10));
        }
        local.assignments.run_pending_tasks();
        assert!(local.assignments.entry_count() <= 100);
    }

    #[test]
    fn the_stores_answer_reads_as_a_placement() {
        assert_eq!(Placed::from_answer((1, "a".into())), Placed::On("a".into()));
        assert_eq!(Placed::from_answer((0, String::new())), Placed::NoServer);
        assert_eq!(
            Placed::from_answer((2, String::new())),
            Placed::HeldElsewhere
        );
    }
}
