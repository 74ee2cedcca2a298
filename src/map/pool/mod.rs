//! `kind = "pool"`: the servers of a shared-storage cluster, where each user must be served by
//! one server at a time (Dovecot's director did this). A user's server is chosen by
//! rendezvous hashing of its lookup key over the servers that are up ([`rendezvous`]), and it
//! stays there while it has sessions and `sticky_ms` after ([`placement`]); servers are
//! checked ([`watch`]) and can be drained and users moved ([`control`]). With a `[fleet]`
//! store every instance places alike.
//!
//! Users are placed on *hosts*: pools of several protocols naming the same hosts agree, so a
//! user's IMAP and POP3 sessions are on one machine.

pub mod control;
pub mod health;
pub mod placement;
pub mod rendezvous;
pub mod watch;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::config::MapConfig;
use crate::fleet::{Board, Placement, SessionTable};
use crate::store::{millis, Store};

use super::{Answer, Endpoint, LookupFuture, Map, MapError, MapSetupError, Query, Route};
use health::Health;
use placement::{Candidates, Local, Placed, PLACE};

/// Assignments this process keeps at most on its own.
const LOCAL_ASSIGNMENTS: u64 = 200_000;
/// How long a new assignment holds in the store before its login is counted (then it holds
/// `sticky_ms`): a guessed password does not pin a name for long.
const PENDING: Duration = Duration::from_secs(60);

/// One server of the pool.
#[derive(Debug, Clone)]
pub struct Server {
    pub host: String,
    pub port: Option<u16>,
    pub weight: u32,
}

/// A pool's timings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub health_interval: Duration,
    pub health_timeout: Duration,
    pub down_after: u32,
    pub up_after: u32,
    pub sticky: Duration,
    pub kick_spread: Duration,
}

/// Checks one server the way a login would reach it (greeting and logout; no credentials).
pub trait HealthCheck: Send + Sync {
    fn check<'a>(&'a self, server: &'a Server) -> CheckFuture<'a>;
    /// The server as logins reach it (its port filled in), for log lines and the admin.
    fn name(&self, server: &Server) -> String;
}

/// Why a check failed, as the log says it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct CheckFailed(pub String);

pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<(), CheckFailed>> + Send + 'a>>;

/// What the running process gives a pool: the fleet's sessions, how to check servers, and
/// where to say what happens.
pub struct Attachment {
    /// The fleet's word on hosts (drained, kicks), and its session table.
    pub board: Arc<Board>,
    pub checker: Arc<dyn HealthCheck>,
    pub logger: Arc<crate::log::Logger>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The listener, as metrics and the admin name it.
    pub listener: String,
    /// Where its users' placements are kept: `pool` for the protocols that open mailboxes
    /// (they must agree), another for those that do not.
    pub namespace: &'static str,
}

/// What changes as the pool runs.
struct State {
    health: Vec<Health>,
    local: Local,
}

pub struct Pool {
    /// This pool among the process's (its sessions are told apart by it).
    id: u64,
    servers: Vec<Server>,
    settings: Settings,
    state: Mutex<State>,
    /// The running process's services; replaced by each reload that keeps the pool (its
    /// checks then go through the new listener).
    attached: RwLock<Option<Arc<Attachment>>>,
    /// Its work (checks, gauges) is under way.
    running: AtomicBool,
    /// A reload replaced it: its work stops.
    retired: AtomicBool,
    /// A check of each server is under way: the next waits for it (a timeout longer than the
    /// interval does not pile checks up).
    checking: Vec<AtomicBool>,
    place_script: redis::Script,
}

impl Pool {
    pub fn new(config: &MapConfig) -> Result<Pool, MapSetupError> {
        let mut servers = Vec::new();
        for server in &config.servers {
            let (host, port, weight) = server.parts().map_err(MapSetupError::Pool)?;
            servers.push(Server { host, port, weight });
        }
        if servers.is_empty() {
            return Err(MapSetupError::Pool("a pool needs servers".into()));
        }
        let settings = Settings {
            health_interval: config.health_interval(),
            health_timeout: config.health_timeout(),
            down_after: config.down_after(),
            up_after: config.up_after(),
            sticky: config.sticky_for(),
            kick_spread: config.kick_spread(),
        };
        static POOLS: AtomicU64 = AtomicU64::new(1);
        Ok(Pool {
            id: POOLS.fetch_add(1, Ordering::Relaxed),
            state: Mutex::new(State {
                health: vec![Health::default(); servers.len()],
                local: Local::new(LOCAL_ASSIGNMENTS),
            }),
            checking: servers.iter().map(|_| AtomicBool::new(false)).collect(),
            servers,
            settings,
            attached: RwLock::new(None),
            running: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            place_script: redis::Script::new(PLACE),
        })
    }

    pub fn servers(&self) -> &[Server] {
        &self.servers
    }

    /// Where the pool's placements are kept (pools of one namespace agree).
    pub fn namespace(&self) -> &'static str {
        self.attachment().map_or("pool", |a| a.namespace)
    }

    /// How long `backend down --kick` takes to end a server's sessions.
    pub fn kick_spread(&self) -> Duration {
        self.settings.kick_spread
    }

    /// What the running process gave the pool, once it did.
    fn attachment(&self) -> Option<Arc<Attachment>> {
        self.attached
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn sessions(&self) -> Option<Arc<SessionTable>> {
        self.attachment().map(|a| a.board.sessions().clone())
    }

    /// The hosts an admin drained, `true` for those being emptied.
    fn drained(&self) -> HashMap<String, bool> {
        self.attachment()
            .map(|a| a.board.drained())
            .unwrap_or_default()
    }

    fn store(&self) -> Option<Arc<Store>> {
        self.sessions()?.store().cloned()
    }

    /// The store's keys for `user`'s sessions and assignment: a keyed hash of the name with
    /// a store (no name in the store), the name itself in this process alone.
    fn keys(&self, user: &str) -> (String, String) {
        let space = self.namespace();
        let (sessions, assignment) = (format!("{space}:s"), format!("{space}:a"));
        match self.store() {
            Some(store) => {
                let id = store.keyed_hash(&[space.as_bytes(), user.as_bytes()]);
                (store.key(&sessions, &id), store.key(&assignment, &id))
            }
            None => (format!("{sessions}:{user}"), format!("{assignment}:{user}")),
        }
    }

    /// The servers that are up, best first for `user`, and the drained ones.
    fn candidates(&self, user: &str) -> (Vec<String>, HashMap<String, bool>) {
        let drained = self.drained();
        let state = lock(&self.state);
        let up: Vec<(&str, u32)> = self
            .servers
            .iter()
            .zip(&state.health)
            .filter(|(_, health)| health.is_up())
            .map(|(s, _)| (s.host.as_str(), s.weight))
            .collect();
        let ranked = rendezvous::rank(user, &up)
            .into_iter()
            .map(|i| up[i].0.to_string())
            .collect();
        (ranked, drained)
    }

    /// The host for `user`: asked of the store when there is one, else decided here.
    async fn place(&self, user: &str) -> Result<Placement, MapError> {
        let (sessions_key, assignment_key) = self.keys(user);
        let (up, drained) = self.candidates(user);
        if let (Some(store), Some(sessions)) = (self.store(), self.sessions()) {
            let mut invocation = self.place_script.prepare_invoke();
            invocation
                .key(&sessions_key)
                .key(&assignment_key)
                .arg(millis(self.settings.sticky.min(PENDING)))
                .arg(sessions.instance())
                .arg(up.len())
                .arg(&up)
                .arg(drained_args(&drained));
            let answer: Option<(i64, String)> = store
                .ask(|mut con| async move { invocation.invoke_async(&mut con).await })
                .await;
            if let Some(answer) = answer {
                return match Placed::from_answer(answer) {
                    Placed::On(host) => {
                        // Kept here too: the fallback when the store stops answering.
                        let now = Instant::now();
                        let state = lock(&self.state);
                        state.local.assign(user, &host, now, self.settings.sticky);
                        Ok(self.placement(host, sessions_key, assignment_key))
                    }
                    Placed::NoServer => Err(no_server()),
                    Placed::HeldElsewhere => Err(held()),
                };
            }
        }
        let open = self.sessions().and_then(|s| s.local_host_of(&sessions_key));
        let state = lock(&self.state);
        let now = Instant::now();
        let candidates = Candidates {
            up: up.iter().map(String::as_str).collect(),
            drained: &drained,
        };
        let current = state.local.current(user, now);
        let host = match candidates.choose(open.as_deref(), current.as_deref()) {
            Placed::On(host) => host,
            Placed::NoServer => return Err(no_server()),
            Placed::HeldElsewhere => return Err(held()),
        };
        state.local.assign(user, &host, now, self.settings.sticky);
        Ok(self.placement(host, sessions_key, assignment_key))
    }

    fn placement(&self, host: String, sessions_key: String, assignment_key: String) -> Placement {
        Placement {
            pool: self.id,
            host,
            sessions_key,
            assignment_key,
            sticky: self.settings.sticky,
        }
    }

    fn server_of(&self, host: &str) -> Option<&Server> {
        self.servers.iter().find(|s| s.host == host)
    }

    /// The server an endpoint reaches, when it is one of the pool's.
    fn index_of(&self, endpoint: &Endpoint) -> Option<usize> {
        self.servers.iter().position(|s| {
            s.host.trim_start_matches('[').trim_end_matches(']') == endpoint.connect_host()
                && s.port.is_none_or(|p| p == endpoint.port)
        })
    }
}

/// The drained hosts as [`PLACE`] takes them: `!host` for one being emptied.
fn drained_args(drained: &HashMap<String, bool>) -> Vec<String> {
    drained
        .iter()
        .map(|(host, emptied)| match emptied {
            true => format!("!{host}"),
            false => host.clone(),
        })
        .collect()
}

fn held() -> MapError {
    MapError::Unavailable(
        "the user's sessions are on a server that cannot take it now; they are ending".into(),
    )
}

fn no_server() -> MapError {
    MapError::Unavailable("no server of the pool is up".into())
}

impl Map for Pool {
    fn lookup<'a>(&'a self, query: &'a Query<'a>) -> LookupFuture<'a> {
        Box::pin(async move {
            let user = query.key.to_ascii_lowercase();
            let placement = self.place(&user).await?;
            let server = self.server_of(&placement.host).ok_or_else(no_server)?;
            Ok(Answer::Route(Route {
                user: None,
                host: server.host.clone(),
                port: server.port,
                password: None,
                placement: Some(placement),
            }))
        })
    }

    fn describe(&self) -> String {
        let hosts: Vec<&str> = self.servers.iter().map(|s| s.host.as_str()).collect();
        format!("pool {}", hosts.join(", "))
    }

    fn connect_failed(&self, endpoint: &Endpoint) {
        if let Some(i) = self.index_of(endpoint) {
            self.observe(i, Err(CheckFailed("a login could not connect".into())));
        }
    }

    fn pool(&self) -> Option<&Pool> {
        Some(self)
    }
}

/// A poisoned lock only means a panic elsewhere while it was held; the state is still sound.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
