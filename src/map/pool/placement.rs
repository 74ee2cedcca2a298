//! Where a user goes: the server its open sessions are on, else the one its assignment names
//! while that is usable, else the best-ranked usable server (which becomes its assignment for
//! `sticky_ms`). A server is usable when it is up and not drained; a drained server keeps
//! only the users that still have sessions on it.
//!
//! With a store the decision is one script in the store, so that every instance of the fleet
//! places a user alike whoever asks first; without one (or while it does not answer) this
//! process decides alone with [`Local`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Keys: the user's sessions, its assignment. `ARGV`: how long a new assignment holds before
/// the login that made it is counted (ms), this instance (unused: every instance's sessions
/// hold alike), the number of up servers, the up servers best first, then the drained ones
/// (`!host` for one being emptied by `--kick`). Answers `{1, host}`, `{0, ''}` when no server
/// is usable, or `{2, ''}` when the user's sessions are on a server that cannot take it now
/// (down in this instance's view, unknown to it, or being emptied): placing it elsewhere
/// would serve it from two servers at once, so the login is to wait until those sessions
/// have ended (they are being ended, or their instances will end them).
pub const PLACE: &str = r"
local t = redis.call('TIME')
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t[1] * 1000 + math.floor(t[2] / 1000))
local n = tonumber(ARGV[3])
local up, drained, emptied = {}, {}, {}
for i = 1, n do up[ARGV[3 + i]] = true end
for i = 4 + n, #ARGV do
  local host = ARGV[i]
  if string.sub(host, 1, 1) == '!' then
    host = string.sub(host, 2)
    emptied[host] = true
  end
  drained[host] = true
end
local held = false
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, 63)) do
  local host = string.match(m, '@(.*)$')
  if host then
    if up[host] and not emptied[host] then return {1, host} end
    held = true
  end
end
if held then return {2, ''} end
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
    /// The user's sessions are on a server that cannot take it now.
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
    /// The servers an admin drained (no new users), `true` for those being emptied.
    pub drained: &'a HashMap<String, bool>,
}

impl Candidates<'_> {
    /// Where a user whose sessions are on `open` (if any) and whose assignment is `current`
    /// (if any) goes: the same rule as [`PLACE`].
    pub fn choose(&self, open: Option<&str>, current: Option<&str>) -> Placed {
        let up = |host: &str| self.up.contains(&host);
        let emptied = |host: &str| self.drained.get(host).copied().unwrap_or(false);
        if let Some(host) = open {
            return if up(host) && !emptied(host) {
                Placed::On(host.to_string())
            } else {
                Placed::HeldElsewhere
            };
        }
        if let Some(host) = current.filter(|h| up(h) && !self.drained.contains_key(*h)) {
            return Placed::On(host.to_string());
        }
        match self.up.iter().find(|h| !self.drained.contains_key(**h)) {
            Some(host) => Placed::On(host.to_string()),
            None => Placed::NoServer,
        }
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
        let drained = HashMap::from([("b".to_string(), false), ("e".to_string(), true)]);
        let candidates = Candidates {
            up: vec!["a", "b", "c", "e"],
            drained: &drained,
        };
        let on = |host: &str| Placed::On(host.to_string());
        // Sessions open on a drained server: the user stays with them.
        assert_eq!(candidates.choose(Some("b"), Some("c")), on("b"));
        // No sessions: a drained assignment does not hold, a good one does.
        assert_eq!(candidates.choose(None, Some("b")), on("a"));
        assert_eq!(candidates.choose(None, Some("c")), on("c"));
        // Sessions on a server that is down, or being emptied: the user waits for them to end.
        assert_eq!(candidates.choose(Some("d"), None), Placed::HeldElsewhere);
        assert_eq!(candidates.choose(Some("e"), None), Placed::HeldElsewhere);
        let none_usable = Candidates {
            up: vec!["b"],
            drained: &drained,
        };
        assert_eq!(none_usable.choose(None, None), Placed::NoServer);
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
