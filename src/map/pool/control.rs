//! The admin's hand on a pool (as `doveadm director` was): drain a server (no new users),
//! bring it back, end its sessions spread over `kick_spread_ms`, move a user. With a store the
//! word goes through it, and every instance hears it within a second ([`Pool::hear_the_fleet`]);
//! without one it holds in this process.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::fleet::LeaseFacts;

use super::{lock, Pool, Server};

/// Kicks and moves remembered in the store for the instances to hear.
const EVENTS_KEPT: usize = 1_000;

/// A pool server as `GET /backends` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ServerStatus {
    pub server: String,
    pub weight: u32,
    /// `up` or `down`: what the checks say.
    pub health: &'static str,
    /// `up`, or `down` when drained.
    pub admin: &'static str,
    /// This instance's users and sessions there.
    pub users: usize,
    pub sessions: usize,
}

/// This instance's sessions on one server.
#[derive(Debug, Default, Clone, Copy)]
pub struct Load {
    pub sessions: usize,
    pub users: usize,
}

/// Why an admin's word was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0} is not a server of any pool")]
    UnknownServer(String),
    #[error("{0} is down: a user cannot be moved there")]
    ServerDown(String),
}

impl Pool {
    /// The pool's server named `name` (`host:port` as the admin sees it, or the host).
    pub fn find(&self, name: &str) -> Option<&Server> {
        let attached = self.attached.get();
        self.servers.iter().find(|server| {
            let full = attached.map(|a| a.checker.name(server));
            full.as_deref() == Some(name) || server.host.eq_ignore_ascii_case(name)
        })
    }

    /// Every server, its health, whether drained, and this instance's load there.
    pub fn status(&self) -> Vec<ServerStatus> {
        let load = self.load();
        let state = lock(&self.state);
        let attached = self.attached.get();
        self.servers
            .iter()
            .zip(&state.health)
            .zip(load)
            .map(|((server, health), load)| ServerStatus {
                server: attached
                    .map(|a| a.checker.name(server))
                    .unwrap_or_else(|| server.host.clone()),
                weight: server.weight,
                health: if health.is_up() { "up" } else { "down" },
                admin: if state.drained.contains(&server.host) {
                    "down"
                } else {
                    "up"
                },
                users: load.users,
                sessions: load.sessions,
            })
            .collect()
    }

    /// This instance's sessions placed by this pool, per server.
    pub(super) fn load(&self) -> Vec<Load> {
        let mut users: HashMap<&str, HashSet<String>> = HashMap::new();
        let mut sessions: HashMap<&str, usize> = HashMap::new();
        for facts in self.my_leases(|_| true) {
            let Some(placed) = &facts.placed else {
                continue;
            };
            if let Some(server) = self.servers.iter().find(|s| s.host == placed.host) {
                *sessions.entry(server.host.as_str()).or_default() += 1;
                users
                    .entry(server.host.as_str())
                    .or_default()
                    .insert(placed.sessions_key.clone());
            }
        }
        self.servers
            .iter()
            .map(|s| Load {
                sessions: sessions.get(s.host.as_str()).copied().unwrap_or(0),
                users: users.get(s.host.as_str()).map_or(0, HashSet::len),
            })
            .collect()
    }

    /// The live sessions this pool placed for which `pick` says yes.
    fn my_leases(&self, pick: impl Fn(&LeaseFacts) -> bool) -> Vec<Arc<LeaseFacts>> {
        let Some(sessions) = self.sessions() else {
            return Vec::new();
        };
        sessions
            .leases(|facts| facts.placed.as_ref().is_some_and(|p| p.pool == self.id) && pick(facts))
    }

    /// End this instance's sessions on `host`, spread over `spread`.
    pub(super) fn kick_host(&self, host: &str, spread: Duration) {
        let leases = self.my_leases(|f| f.placed.as_ref().is_some_and(|p| p.host == host));
        kick_spread(leases, spread);
    }

    /// End this instance's sessions of the user whose sessions are counted under `key`.
    fn kick_user(&self, sessions_key: &str) {
        let leases = self.my_leases(|f| {
            f.placed
                .as_ref()
                .is_some_and(|p| p.sessions_key == sessions_key)
        });
        kick_spread(leases, Duration::ZERO);
    }

    /// Drain `host` (no new users; `kick`: its sessions end too, spread) or bring it back.
    pub async fn set_drained(&self, host: &str, drained: bool, kick: bool) {
        let shared = match self.store() {
            Some(store) => {
                let key = store.key("pool", "drained");
                let mut pipe = redis::pipe();
                if drained {
                    pipe.cmd("HSET").arg(&key).arg(host).arg(1).ignore();
                } else {
                    pipe.cmd("HDEL").arg(&key).arg(host).ignore();
                }
                if kick {
                    self.event(&mut pipe, "host", host);
                }
                store
                    .ask(|mut con| async move { pipe.query_async::<()>(&mut con).await })
                    .await
                    .is_some()
            }
            None => false,
        };
        let mut state = lock(&self.state);
        if drained {
            state.drained.insert(host.to_string());
        } else {
            state.drained.remove(host);
        }
        drop(state);
        // Through the store, every instance (this one too) hears the kick.
        if kick && !shared {
            self.kick_host(host, self.settings.kick_spread);
        }
    }

    /// Put `user` (its lookup key) on `host` and end its sessions: it comes back there.
    pub async fn move_user(&self, user: &str, host: &str) -> Result<(), ControlError> {
        let user = user.to_ascii_lowercase();
        let index = self
            .servers
            .iter()
            .position(|s| s.host == host)
            .ok_or_else(|| ControlError::UnknownServer(host.to_string()))?;
        if !lock(&self.state).health[index].is_up() {
            return Err(ControlError::ServerDown(host.to_string()));
        }
        let (sessions_key, assignment_key) = self.keys(&user);
        let sticky = self.settings.sticky;
        let shared = match self.store() {
            Some(store) => {
                let mut pipe = redis::pipe();
                let ms = crate::store::millis(sticky);
                pipe.cmd("SET")
                    .arg(&assignment_key)
                    .arg(host)
                    .arg("PX")
                    .arg(ms)
                    .ignore();
                // Its sessions end now: the next login must not find them there.
                pipe.cmd("DEL").arg(&sessions_key).ignore();
                self.event(&mut pipe, "user", &sessions_key);
                store
                    .ask(|mut con| async move { pipe.query_async::<()>(&mut con).await })
                    .await
                    .is_some()
            }
            None => false,
        };
        lock(&self.state)
            .local
            .assign(&user, host, Instant::now(), sticky);
        if !shared {
            self.kick_user(&sessions_key);
        }
        Ok(())
    }

    /// A kick for every instance to hear: `host` (spread) or `user` (its sessions' key).
    fn event(&self, pipe: &mut redis::Pipeline, kind: &str, what: &str) {
        if let Some(store) = self.store() {
            pipe.cmd("XADD")
                .arg(store.key("pool", "events"))
                .arg("MAXLEN")
                .arg("~")
                .arg(EVENTS_KEPT)
                .arg("*")
                .arg(kind)
                .arg(what)
                .ignore();
        }
    }

    /// What the fleet said since last time: the drained servers, kicks and moves.
    pub(super) async fn hear_the_fleet(&self) {
        let Some(store) = self.store() else {
            return;
        };
        let drained_key = store.key("pool", "drained");
        let events_key = store.key("pool", "events");
        let since = lock(&self.heard).clone();
        let mut pipe = redis::pipe();
        pipe.cmd("HKEYS").arg(&drained_key);
        match &since {
            Some(id) => pipe
                .cmd("XRANGE")
                .arg(&events_key)
                .arg(format!("({id}"))
                .arg("+")
                .arg("COUNT")
                .arg(EVENTS_KEPT),
            // The first time: only what comes from now on.
            None => pipe
                .cmd("XREVRANGE")
                .arg(&events_key)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1),
        };
        type Events = Vec<(String, Vec<(String, String)>)>;
        let heard: Option<(Vec<String>, Events)> = store
            .ask(|mut con| async move { pipe.query_async(&mut con).await })
            .await;
        let Some((drained, events)) = heard else {
            return;
        };
        lock(&self.state).drained = drained.into_iter().collect();
        let last = events.last().map(|(id, _)| id.clone());
        if since.is_some() {
            for (_, fields) in &events {
                for (kind, what) in fields {
                    match kind.as_str() {
                        "host" => self.kick_host(what, self.settings.kick_spread),
                        "user" => self.kick_user(what),
                        _ => {}
                    }
                }
            }
        }
        let mut heard = lock(&self.heard);
        match last {
            Some(last) => *heard = Some(last),
            None if heard.is_none() => *heard = Some("0-0".into()),
            None => {}
        }
    }
}

/// Wake each session's end, the first now and the last after `spread`, evenly between:
/// fifty thousand clients must not all reconnect in the same second.
fn kick_spread(leases: Vec<Arc<LeaseFacts>>, spread: Duration) {
    if leases.is_empty() {
        return;
    }
    if spread.is_zero() || leases.len() == 1 {
        for lease in &leases {
            lease.kicked.notify_one();
        }
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let started = tokio::time::Instant::now();
        let last = (leases.len() - 1) as u32;
        for (i, lease) in leases.iter().enumerate() {
            tokio::time::sleep_until(started + spread * i as u32 / last).await;
            lease.kicked.notify_one();
        }
    });
}
