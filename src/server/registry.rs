//! The sessions open now, for the admin endpoint: who is connected where, how much each has
//! relayed, and a way to end a user's or a back end's sessions (moving a user to a new back
//! end = change the map, reload, kick: the client reconnects and lands on the new one).
//!
//! A session registers when it starts and is gone from the table when its [`Registered`]
//! handle drops; the table holds only a few facts and two counters per session.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use tokio::sync::Notify;

use crate::metrics::{Metrics, SessionState};

use super::relay::Counts;

/// What can change in a session's life.
#[derive(Debug, Clone, Default)]
struct Facts {
    id: String,
    client: Option<SocketAddr>,
    user: Option<String>,
    backend: Option<String>,
    tls: bool,
    proxying: bool,
}

/// One live session.
pub struct LiveSession {
    protocol: &'static str,
    listener: String,
    started: SystemTime,
    facts: Mutex<Facts>,
    /// Bytes from the client and to it, counted by the relay as they pass.
    pub counts: Counts,
    /// Woken to end the session's relay.
    pub kicked: Notify,
}

/// A session as `GET /sessions` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SessionView {
    pub id: String,
    pub protocol: &'static str,
    pub listener: String,
    pub client: String,
    pub user: Option<String>,
    pub backend: Option<String>,
    pub tls: bool,
    /// Seconds since the Unix epoch.
    pub started: u64,
    pub bytes_from_client: u64,
    pub bytes_to_client: u64,
    /// `preauth` or `proxying`.
    pub state: SessionState,
}

/// Which sessions a kick ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kick {
    /// The user as logged in with (compared without case).
    User(String),
    /// A back end, `host:port` as the session shows it.
    Backend(String),
}

#[derive(Default)]
pub struct Registry {
    next: AtomicU64,
    sessions: Mutex<HashMap<u64, Arc<LiveSession>>>,
}

/// A session's place in the registry; dropping it takes the session out.
pub struct Registered {
    registry: Arc<Registry>,
    key: u64,
    pub live: Arc<LiveSession>,
    /// The gauge this session counts in now (pre-login, then proxying).
    gauge: Gauge,
    metrics: Arc<Metrics>,
}

impl Registry {
    /// A new session of `protocol` on `listener`, from `client`.
    pub fn enter(
        self: &Arc<Self>,
        metrics: &Arc<Metrics>,
        protocol: &'static str,
        listener: &str,
        client: SocketAddr,
        id: &str,
    ) -> Registered {
        let live = Arc::new(LiveSession {
            protocol,
            listener: listener.to_string(),
            started: SystemTime::now(),
            facts: Mutex::new(Facts {
                id: id.to_string(),
                client: Some(client),
                ..Facts::default()
            }),
            counts: Counts::default(),
            kicked: Notify::new(),
        });
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.sessions).insert(key, live.clone());
        let gauge = metrics.sessions_in(protocol, SessionState::Preauth);
        gauge.inc();
        Registered {
            registry: self.clone(),
            key,
            live,
            gauge,
            metrics: metrics.clone(),
        }
    }

    /// Every live session, oldest first.
    pub fn list(&self) -> Vec<SessionView> {
        let sessions: Vec<(u64, Arc<LiveSession>)> = lock(&self.sessions)
            .iter()
            .map(|(k, s)| (*k, s.clone()))
            .collect();
        let mut views: Vec<(u64, SessionView)> =
            sessions.into_iter().map(|(k, s)| (k, s.view())).collect();
        views.sort_by_key(|(k, _)| *k);
        views.into_iter().map(|(_, v)| v).collect()
    }

    /// End the relays of the sessions `kick` names; how many.
    pub fn kick(&self, kick: &Kick) -> usize {
        let sessions: Vec<Arc<LiveSession>> = lock(&self.sessions).values().cloned().collect();
        let mut kicked = 0;
        for session in sessions {
            let facts = lock(&session.facts).clone();
            let hit = facts.proxying
                && match kick {
                    Kick::User(user) => facts
                        .user
                        .as_deref()
                        .is_some_and(|u| u.eq_ignore_ascii_case(user)),
                    Kick::Backend(backend) => facts.backend.as_deref() == Some(backend.as_str()),
                };
            if hit {
                session.kicked.notify_one();
                kicked += 1;
            }
        }
        kicked
    }

    /// A line for `systemctl status`: how many sessions, how many logged in.
    pub fn status(&self) -> String {
        let sessions: Vec<Arc<LiveSession>> = lock(&self.sessions).values().cloned().collect();
        let proxying = sessions.iter().filter(|s| lock(&s.facts).proxying).count();
        format!("{} sessions, {proxying} logged in", sessions.len())
    }

    pub fn len(&self) -> usize {
        lock(&self.sessions).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Registered {
    /// The client is known by another address (a PROXY header, a trusted peer's word) or the
    /// session by another id.
    pub fn update_client(&self, client: SocketAddr, id: &str) {
        let mut facts = lock(&self.live.facts);
        facts.client = Some(client);
        facts.id = id.to_string();
    }

    pub fn set_tls(&self, tls: bool) {
        lock(&self.live.facts).tls = tls;
    }

    /// Logged in as `user` at `backend`: relaying from now on.
    pub fn proxying(&mut self, user: &str, backend: &str) {
        {
            let mut facts = lock(&self.live.facts);
            facts.user = Some(user.to_string());
            facts.backend = Some(backend.to_string());
            facts.proxying = true;
        }
        self.gauge.dec();
        self.gauge = self
            .metrics
            .sessions_in(self.live.protocol, SessionState::Proxying);
        self.gauge.inc();
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.gauge.dec();
        lock(&self.registry.sessions).remove(&self.key);
    }
}

impl LiveSession {
    fn view(&self) -> SessionView {
        let facts = lock(&self.facts).clone();
        SessionView {
            id: facts.id,
            protocol: self.protocol,
            listener: self.listener.clone(),
            client: facts.client.map(|c| c.to_string()).unwrap_or_default(),
            user: facts.user,
            backend: facts.backend,
            tls: facts.tls,
            started: self
                .started
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            bytes_from_client: self.counts.from_client.load(Ordering::Relaxed),
            bytes_to_client: self.counts.to_client.load(Ordering::Relaxed),
            state: if facts.proxying {
                SessionState::Proxying
            } else {
                SessionState::Preauth
            },
        }
    }
}

/// A poisoned lock only means a panic elsewhere while it was held; the table is still sound.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_come_and_go_and_a_kick_finds_its_user_only() {
        let (registry, metrics) = (Arc::new(Registry::default()), Arc::new(Metrics::new()));
        let client: SocketAddr = "192.0.2.1:40000".parse().unwrap();
        let mut alice = registry.enter(&metrics, "imap", "0.0.0.0:143", client, "a1");
        let mut bob = registry.enter(&metrics, "imap", "0.0.0.0:143", client, "b1");
        let waiting = registry.enter(&metrics, "pop3", "0.0.0.0:110", client, "c1");
        alice.proxying("Alice", "10.0.0.1:143");
        bob.proxying("bob", "10.0.0.2:143");
        let list = registry.list();
        assert_eq!(list.len(), 3);
        assert_eq!(list[0].user.as_deref(), Some("Alice"));
        assert_eq!(list[2].state.as_str(), "preauth");
        assert_eq!(registry.kick(&Kick::User("alice".into())), 1);
        assert_eq!(registry.kick(&Kick::Backend("10.0.0.2:143".into())), 1);
        assert_eq!(registry.kick(&Kick::User("carol".into())), 0);
        let text = metrics.encode();
        assert!(text.contains("state=\"proxying\"} 2"), "{text}");
        drop((alice, bob, waiting));
        assert!(registry.is_empty());
        let text = metrics.encode();
        assert!(text.contains("state=\"proxying\"} 0"), "{text}");
    }
}
