//! The logged-in sessions of the fleet, counted by key: a user's sessions per protocol for
//! the caps, a pool user's sessions for its stickiness. Each session holds a [`Lease`] on
//! its keys while it lasts.
//!
//! With a store, a key is a sorted set of `instance/session` members scored by when they
//! expire; every instance renews its own members well within `session_ttl_ms`, so that the
//! sessions of an instance that died (SIGKILL, its machine gone) stop counting on their own.
//! Without a store, or while it does not answer, the counts are this process's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use crate::store::{millis, Store};

use super::scripts::{ENTER, LEAVE, RENEW};

/// One key a session counts under, and the most sessions it may hold (0: no cap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    pub key: String,
    pub cap: u32,
}

/// Why a session was not counted (and is not kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The key at this index is at its cap.
    AtCap(usize),
    /// The user was moved to another host while this login was under way.
    Moved,
}

/// Where a pool placed a user: its host, the store's keys for the user's sessions and its
/// assignment, and how long the assignment outlives the last session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Which pool of this process placed it (a number of its own).
    pub pool: u64,
    pub host: String,
    pub sessions_key: String,
    pub assignment_key: String,
    pub sticky: Duration,
}

/// What the table knows of one live session of this process.
pub struct LeaseFacts {
    pub keys: Vec<String>,
    /// Where a pool placed the session.
    pub placed: Option<Placement>,
    /// The session in the store's sets: `instance/number`, then `@host` when placed (so
    /// that the user's host is known from its sessions alone).
    member: String,
    /// Woken to end the session (a kick, a move, its server gone).
    pub kicked: Arc<Notify>,
}

pub struct SessionTable {
    store: Option<Arc<Store>>,
    /// This process among the fleet's: members are `instance/number`.
    instance: String,
    ttl: Duration,
    next: AtomicU64,
    /// This process's sessions per key, and each live lease.
    local: Mutex<Local>,
    enter_script: redis::Script,
    renew_script: redis::Script,
    leave_script: redis::Script,
    /// A question went unanswered: the next renewal puts back what the store may lack.
    unsure: AtomicBool,
}

#[derive(Default)]
struct Local {
    counts: HashMap<String, u32>,
    leases: HashMap<u64, Arc<LeaseFacts>>,
    /// A placed user's host and its sessions there, by its sessions' key.
    hosts: HashMap<String, (String, u32)>,
}

/// A session's place in the counts; dropping it takes the session out.
pub struct Lease {
    table: Weak<SessionTable>,
    id: u64,
    pub facts: Arc<LeaseFacts>,
}

impl SessionTable {
    pub fn new(store: Option<Arc<Store>>, ttl: Duration) -> Arc<SessionTable> {
        Arc::new(SessionTable {
            store,
            instance: instance_id(),
            ttl,
            next: AtomicU64::new(1),
            local: Mutex::new(Local::default()),
            enter_script: redis::Script::new(ENTER),
            renew_script: redis::Script::new(RENEW),
            leave_script: redis::Script::new(LEAVE),
            unsure: AtomicBool::new(false),
        })
    }

    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// This process among the fleet's, as its sessions' members name it.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The key `kind:…` for `parts` (a user, an address): in the store a keyed hash of them
    /// (no name in the store), in this process alone the parts themselves.
    pub fn key_for(&self, kind: &str, parts: &[&str]) -> String {
        match &self.store {
            Some(store) => {
                let bytes: Vec<&[u8]> = std::iter::once(kind.as_bytes())
                    .chain(parts.iter().map(|p| p.as_bytes()))
                    .collect();
                store.key(kind, &store.keyed_hash(&bytes))
            }
            None => format!("{kind}:{}", parts.join("\n")),
        }
    }

    /// Count a session under `counts` unless one of them is at its cap (or, placed, the user
    /// was moved meanwhile).
    pub async fn enter(
        self: &Arc<Self>,
        counts: &[Count],
        placed: Option<Placement>,
    ) -> Result<Lease, Refused> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let member = match &placed {
            Some(placement) => format!("{}/{id}@{}", self.instance, placement.host),
            None => format!("{}/{id}", self.instance),
        };
        let shared = match &self.store {
            Some(store) => {
                self.enter_store(store, counts, &member, placed.as_ref())
                    .await
            }
            None => None,
        };
        let mut local = lock(&self.local);
        match shared {
            Some(Err(refused)) => return Err(refused),
            Some(Ok(())) => {}
            // This process's own view: the store is not there to ask.
            None => {
                let full = |c: &Count| {
                    c.cap > 0 && local.counts.get(&c.key).copied().unwrap_or(0) >= c.cap
                };
                if let Some(i) = counts.iter().position(full) {
                    return Err(Refused::AtCap(i));
                }
            }
        }
        let facts = Arc::new(LeaseFacts {
            keys: counts.iter().map(|c| c.key.clone()).collect(),
            placed,
            member,
            kicked: Arc::new(Notify::new()),
        });
        local.add(id, &facts);
        Ok(Lease {
            table: Arc::downgrade(self),
            id,
            facts,
        })
    }

    /// `Some(Ok)`: entered; `Some(Err)`: refused; `None`: no answer.
    async fn enter_store(
        &self,
        store: &Store,
        counts: &[Count],
        member: &str,
        placed: Option<&Placement>,
    ) -> Option<Result<(), Refused>> {
        let mut invocation = self.enter_script.prepare_invoke();
        for count in counts {
            invocation.key(&count.key);
        }
        invocation
            .arg(millis(self.ttl))
            .arg(member)
            .arg(counts.len());
        for count in counts {
            invocation.arg(count.cap);
        }
        if let Some(placement) = placed {
            invocation
                .key(&placement.assignment_key)
                .arg(&placement.host)
                .arg(millis(placement.sticky));
        }
        let answer: Option<i64> = store
            .ask(|mut con| async move { invocation.invoke_async(&mut con).await })
            .await;
        let Some(answer) = answer else {
            self.unsure.store(true, Ordering::Relaxed);
            return None;
        };
        Some(match answer {
            0 => Ok(()),
            -1 => Err(Refused::Moved),
            i => Err(Refused::AtCap(usize::try_from(i - 1).unwrap_or(0))),
        })
    }

    /// This process's sessions under `key`.
    pub fn local_count(&self, key: &str) -> u32 {
        lock(&self.local).counts.get(key).copied().unwrap_or(0)
    }

    /// The live sessions of this process for which `pick` says yes.
    pub fn leases(&self, pick: impl Fn(&LeaseFacts) -> bool) -> Vec<Arc<LeaseFacts>> {
        let local = lock(&self.local);
        local
            .leases
            .values()
            .filter(|facts| pick(facts))
            .cloned()
            .collect()
    }

    /// Renew every session of this process in the store; after a question went unanswered,
    /// put back what the store lacks too. Run every third of the ttl.
    pub async fn renew(&self) {
        let Some(store) = &self.store else {
            return;
        };
        let full = self.unsure.swap(false, Ordering::Relaxed);
        let leases: Vec<Arc<LeaseFacts>> = lock(&self.local).leases.values().cloned().collect();
        for chunk in leases.chunks(1000) {
            let mut invocation = self.renew_script.prepare_invoke();
            invocation
                .arg(millis(self.ttl))
                .arg(if full { "0" } else { "1" });
            for facts in chunk {
                for key in &facts.keys {
                    invocation.key(key).arg(&facts.member);
                }
            }
            let done: Option<i64> = store
                .ask(|mut con| async move { invocation.invoke_async(&mut con).await })
                .await;
            if done.is_none() {
                self.unsure.store(true, Ordering::Relaxed);
                return;
            }
        }
    }

    /// How often [`SessionTable::renew`] runs.
    pub fn renew_every(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_millis(10))
    }

    /// The host this process's live sessions under `sessions_key` were placed on.
    pub fn local_host_of(&self, sessions_key: &str) -> Option<String> {
        let local = lock(&self.local);
        local.hosts.get(sessions_key).map(|(host, _)| host.clone())
    }

    fn leave(&self, id: u64) {
        let Some(facts) = lock(&self.local).remove(id) else {
            return;
        };
        let (Some(store), Ok(runtime)) = (&self.store, tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let (store, script) = (store.clone(), self.leave_script.clone());
        runtime.spawn(async move {
            let mut invocation = script.prepare_invoke();
            for key in &facts.keys {
                invocation.key(key);
            }
            invocation.arg(&facts.member);
            if let Some(placed) = &facts.placed {
                invocation
                    .key(&placed.sessions_key)
                    .key(&placed.assignment_key)
                    .arg(&placed.host)
                    .arg(millis(placed.sticky));
            }
            let _: Option<i64> = store
                .ask(|mut con| async move { invocation.invoke_async(&mut con).await })
                .await;
        });
    }
}

impl Local {
    fn add(&mut self, id: u64, facts: &Arc<LeaseFacts>) {
        for key in &facts.keys {
            *self.counts.entry(key.clone()).or_default() += 1;
        }
        if let Some(placed) = &facts.placed {
            let entry = self
                .hosts
                .entry(placed.sessions_key.clone())
                .or_insert_with(|| (placed.host.clone(), 0));
            // The latest placement's host (they agree but after a move).
            entry.0 = placed.host.clone();
            entry.1 += 1;
        }
        self.leases.insert(id, facts.clone());
    }

    fn remove(&mut self, id: u64) -> Option<Arc<LeaseFacts>> {
        let facts = self.leases.remove(&id)?;
        for key in &facts.keys {
            if let Some(n) = self.counts.get_mut(key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.counts.remove(key);
                }
            }
        }
        if let Some(placed) = &facts.placed {
            if let Some(entry) = self.hosts.get_mut(&placed.sessions_key) {
                entry.1 = entry.1.saturating_sub(1);
                if entry.1 == 0 {
                    self.hosts.remove(&placed.sessions_key);
                }
            }
        }
        Some(facts)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(table) = self.table.upgrade() {
            table.leave(self.id);
        }
    }
}

/// A name for this process unlikely to be any other's: host, pid and a random part.
fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!(
        "{}:{}:{:08x}",
        host.trim(),
        std::process::id(),
        fastrand::u32(..)
    )
}

/// A poisoned lock only means a panic elsewhere while it was held; the counts are still
/// sound.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(key: &str, cap: u32) -> Count {
        Count {
            key: key.into(),
            cap,
        }
    }

    #[tokio::test]
    async fn a_cap_refuses_the_session_beyond_it_and_a_leaving_one_makes_room() {
        let table = SessionTable::new(None, Duration::from_secs(30));
        let keys = [count("imap:u:kate", 2), count("imap:a:kate:10.0.0.1", 0)];
        let first = table.enter(&keys, None).await.unwrap();
        let _second = table.enter(&keys, None).await.unwrap();
        assert_eq!(
            table.enter(&keys, None).await.err(),
            Some(Refused::AtCap(0))
        );
        // Another user is not touched by kate's cap.
        assert!(table.enter(&[count("imap:u:bob", 2)], None).await.is_ok());
        assert_eq!(table.local_count("imap:u:kate"), 2);
        drop(first);
        assert_eq!(table.local_count("imap:u:kate"), 1);
        assert!(table.enter(&keys, None).await.is_ok());
    }

    #[tokio::test]
    async fn leases_are_found_by_their_placement() {
        let table = SessionTable::new(None, Duration::from_secs(30));
        let placed = Some(Placement {
            pool: 1,
            host: "10.0.0.11".into(),
            sessions_key: "pool:s:1".into(),
            assignment_key: "pool:a:1".into(),
            sticky: Duration::from_secs(1),
        });
        let _a = table.enter(&[count("pool:s:1", 0)], placed).await.unwrap();
        let _b = table.enter(&[count("pool:s:2", 0)], None).await.unwrap();
        let on_11 = table.leases(|f| f.placed.as_ref().is_some_and(|p| p.host == "10.0.0.11"));
        assert_eq!(on_11.len(), 1);
        assert_eq!(
            table.local_host_of("pool:s:1").as_deref(),
            Some("10.0.0.11")
        );
        assert_eq!(table.local_host_of("pool:s:2"), None);
    }
}
