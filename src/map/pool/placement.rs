//! Where a user goes: the server its open sessions are on, else the one its assignment names
//! while that is usable, else the best-ranked usable server (which becomes its assignment for
//! `sticky_ms`). A server is usable when it is up and not drained; a drained server keeps
//! only the users that still have sessions on it.
//!
//! With a store the decision is one script in the store, so that every instance of the fleet
//! places a user alike whoever asks first; without one (or while it does not answer) this
//! process decides alone with [`Local`].

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Keys: the user's sessions, its assignment. `ARGV`: now (ms, wall clock), sticky (ms), the
/// number of up servers, the up servers best first, then the drained ones. Answers the host,
/// or false when no server is usable.
pub const PLACE: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local n = tonumber(ARGV[3])
local up, drained = {}, {}
for i = 1, n do up[ARGV[3 + i]] = true end
for i = 4 + n, #ARGV do drained[ARGV[i]] = true end
local open = redis.call('ZRANGE', KEYS[1], 0, 0)
if open[1] then
  local host = string.match(open[1], '@(.*)$')
  if host and up[host] then return host end
end
local current = redis.call('GET', KEYS[2])
if current and up[current] and not drained[current] then
  if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
  end
  return current
end
for i = 1, n do
  local host = ARGV[3 + i]
  if not drained[host] then
    redis.call('SET', KEYS[2], host, 'PX', ARGV[2])
    return host
  end
end
return false
";

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
/// Bounded: the oldest are dropped first beyond `limit` (a dropped user is placed anew, by
/// the same ranking).
pub struct Local {
    assignments: HashMap<String, (String, Instant)>,
    limit: usize,
}

impl Local {
    pub fn new(limit: usize) -> Local {
        Local {
            assignments: HashMap::new(),
            limit,
        }
    }

    /// The user's assignment, while it holds.
    pub fn current(&self, user: &str, now: Instant) -> Option<&str> {
        let (host, until) = self.assignments.get(user)?;
        (*until > now).then_some(host.as_str())
    }

    /// The user is on `host` for `sticky` from `now` on (again).
    pub fn assign(&mut self, user: &str, host: &str, now: Instant, sticky: Duration) {
        if self.assignments.len() >= self.limit && !self.assignments.contains_key(user) {
            self.assignments.retain(|_, (_, until)| *until > now);
            if self.assignments.len() >= self.limit {
                let oldest = self
                    .assignments
                    .iter()
                    .min_by_key(|(_, (_, until))| *until)
                    .map(|(user, _)| user.clone());
                if let Some(oldest) = oldest {
                    self.assignments.remove(&oldest);
                }
            }
        }
        let until = now + sticky;
        self.assignments
            .insert(user.to_string(), (host.to_string(), until));
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
        let (mut local, now) = (Local::new(2), Instant::now());
        local.assign("kate", "a", now, Duration::from_secs(10));
        assert_eq!(local.current("kate", now), Some("a"));
        assert_eq!(local.current("kate", now + Duration::from_secs(11)), None);
        local.assign("bob", "b", now, Duration::from_secs(20));
        local.assign("eve", "c", now, Duration::from_secs(30));
        assert_eq!(local.current("kate", now), None, "the oldest went first");
        assert_eq!(local.current("eve", now), Some("c"));
    }
}
