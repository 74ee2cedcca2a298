//! What the admin sees of a pool and the move of a user (as `doveadm director status` and
//! `move`); draining and kicks are the fleet's word on hosts ([`crate::fleet::Board`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::fleet::LeaseFacts;

use super::{lock, Pool, Server};

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
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("{0} is not a server of any pool")]
    UnknownServer(String),
    #[error("{0} is down: a user cannot be moved there")]
    ServerDown(String),
    #[error("{0} is drained: a user cannot be moved there (backend up first)")]
    Drained(String),
    #[error(transparent)]
    NotTaken(#[from] crate::fleet::NotTaken),
}

impl Pool {
    /// The pool's server named `name` (`host:port` as the admin sees it, or the host).
    pub fn find(&self, name: &str) -> Option<&Server> {
        let attached = self.attachment();
        self.servers.iter().find(|server| {
            let full = attached.as_ref().map(|a| a.checker.name(server));
            full.as_deref() == Some(name) || server.host.eq_ignore_ascii_case(name)
        })
    }

    /// Every server, its health, whether drained, and this instance's load there.
    pub fn status(&self) -> Vec<ServerStatus> {
        let load = self.load();
        let drained = self.drained();
        let state = lock(&self.state);
        let attached = self.attachment();
        self.servers
            .iter()
            .zip(&state.health)
            .zip(load)
            .map(|((server, health), load)| ServerStatus {
                server: attached
                    .as_ref()
                    .map(|a| a.checker.name(server))
                    .unwrap_or_else(|| server.host.clone()),
                weight: server.weight,
                health: if health.is_up() { "up" } else { "down" },
                admin: if drained.contains_key(&server.host) {
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

    /// Whether `host`, one of this pool's, is up to take a user.
    pub fn can_take(&self, host: &str) -> Result<(), ControlError> {
        let index = self
            .servers
            .iter()
            .position(|s| s.host == host)
            .ok_or_else(|| ControlError::UnknownServer(host.to_string()))?;
        if !lock(&self.state).health[index].is_up() {
            return Err(ControlError::ServerDown(host.to_string()));
        }
        if self.drained().contains_key(host) {
            return Err(ControlError::Drained(host.to_string()));
        }
        Ok(())
    }

    /// Put `user` (its lookup key) on `host` and end its sessions: it comes back there. The
    /// `others` pools with the host remember it too (without a store, each its own).
    pub async fn move_user(
        &self,
        user: &str,
        host: &str,
        others: &[&Pool],
    ) -> Result<(), ControlError> {
        let user = user.to_ascii_lowercase();
        let (sessions_key, assignment_key) = self.keys(&user);
        let sticky = self.settings.sticky;
        if let Some(attached) = self.attachment() {
            let board = &attached.board;
            board
                .move_user(&sessions_key, &assignment_key, host, sticky)
                .await?;
        }
        for pool in std::iter::once(self).chain(others.iter().copied()) {
            lock(&pool.state)
                .local
                .assign(&user, host, Instant::now(), pool.settings.sticky);
        }
        Ok(())
    }
}
