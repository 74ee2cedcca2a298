//! Listening sockets and the accept loop, in the shape of tokio's `mini-redis`: one accept
//! loop per socket, a process-wide semaphore for `connection_limit`, a watch channel for the
//! shutdown phases and an mpsc sender that every session holds, so that "all senders dropped"
//! means "all sessions ended". A reload swaps what the accept loops hand to new sessions
//! (watch channels), binds new addresses and stops removed ones, without touching live
//! sessions or the sockets of unchanged addresses.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::config::Config;
use crate::guard::Guard;

use crate::metrics::{ListenerLabels, RefusedReason};

use super::builder::ListenerState;
use super::reload::{shared, Prepared, ReloadError};
use super::services::Services;
use super::session::{self, Session};
use super::{capability_probe, reached, Phase};

/// Implicit-TLS clients over the connection limit that are told so at the same time, per
/// listener: each needs a handshake, so a flood beyond this is closed without a word (and
/// logged). Plain clients are all answered, at once, in the accept loop.
const MAX_TLS_REFUSALS_IN_FLIGHT: usize = 64;

/// How long sessions still relaying at the end of the grace period get to write their
/// Closing lines.
const CLOSING_TIME: Duration = Duration::from_secs(2);

/// A listener's state with one of its bound sockets.
pub type Bound = Vec<(Arc<ListenerState>, TcpListener)>;

/// Which listener each address serves.
type Serves = HashMap<SocketAddr, Arc<ListenerState>>;

// Where the admin endpoint finds them.

/// A listening socket that could not be had.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("socket {address} from the service manager: {source}")]
    Inherited {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Bind every listener's sockets, or take the one the service manager passed in for that
/// address (socket activation); errors name the address. Passed-in sockets no listener wants
/// are closed, with a warning.
pub fn bind(
    listeners: &[Arc<ListenerState>],
    mut inherited: Vec<(SocketAddr, std::net::TcpListener)>,
) -> Result<(Bound, Vec<String>), BindError> {
    let mut bound = Vec::new();
    for state in listeners {
        for &address in &state.addresses {
            let listener = match inherited.iter().position(|(a, _)| *a == address) {
                Some(i) => TcpListener::from_std(inherited.swap_remove(i).1)
                    .map_err(|source| BindError::Inherited { address, source })?,
                None => listen(address).map_err(|source| BindError::Listen { address, source })?,
            };
            bound.push((state.clone(), listener));
        }
    }
    let unused = inherited
        .iter()
        .map(|(addr, _)| {
            format!("socket {addr} from the service manager matches no listener; closed")
        })
        .collect();
    Ok((bound, unused))
}

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // `[::]:993` must not also claim IPv4, so that `0.0.0.0:993` can be listed beside it.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// "No limit": more connections than any process can hold open (its file descriptors run out
/// long before), and few enough that a reload can take them back from the semaphore.
const UNLIMITED: usize = 1 << 20;

/// The listening sockets and what every accept loop shares; a reload changes it in place.
pub(super) struct Server {
    /// One accept loop per address, each with the listener state new sessions get.
    sockets: HashMap<SocketAddr, Running>,
    /// The running configuration, and the listeners built from it.
    config: Config,
    pub(super) listeners: Vec<Arc<ListenerState>>,
    /// `connection_limit`, shared by every listener of the process, and its size now.
    limit: Arc<Semaphore>,
    limit_now: usize,
    pub(super) services: watch::Sender<Arc<Services>>,
    phase_tx: watch::Sender<Phase>,
    phase_rx: watch::Receiver<Phase>,
    /// Every session holds a clone; when all are dropped, `recv` returns None (mini-redis).
    done_tx: mpsc::Sender<()>,
    done_rx: mpsc::Receiver<()>,
}

/// One address's accept loop.
struct Running {
    /// What its new sessions get: replaced by a reload, kept by live sessions.
    state: watch::Sender<Arc<ListenerState>>,
    task: tokio::task::JoinHandle<()>,
    /// A copy of the listening socket, for a successor to take over.
    socket: std::net::TcpListener,
}

impl Server {
    /// Stop accepting, tell pre-login clients, give live sessions `grace` to end, and end the
    /// rest so that they log their Closing lines.
    pub(super) async fn drain(mut self) {
        // The copies kept for a successor close with the accept loops' sockets: nothing may
        // hold a listening socket open (queueing clients nobody accepts) while this one drains.
        self.sockets.clear();
        let grace = Duration::from_secs(self.config.limits.shutdown_grace);
        let Server {
            services,
            phase_tx,
            done_tx,
            done_rx,
            ..
        } = self;
        drop(done_tx);
        shut_down(&services.borrow(), phase_tx, done_rx, grace).await;
    }

    pub(super) fn start(
        bound: Vec<(Arc<ListenerState>, TcpListener)>,
        services: Arc<Services>,
        config: Config,
    ) -> Server {
        let limit_now = effective_limit(config.limits.connection_limit);
        let (phase_tx, phase_rx) = watch::channel(Phase::Serving);
        let (done_tx, done_rx) = mpsc::channel::<()>(1);
        let mut listeners: Vec<Arc<ListenerState>> = Vec::new();
        for (state, _) in &bound {
            if !listeners.iter().any(|l| Arc::ptr_eq(l, state)) {
                listeners.push(state.clone());
            }
        }
        start_probes(&listeners, &services);
        crate::fleet::keep_renewing(&services.sessions);
        crate::fleet::keep_hearing(&services.board);
        services.set_maps(&listeners);
        show_certificates(&listeners, &services);
        let metrics = &services.metrics;
        metrics.configured(true);
        metrics
            .connection_limit
            .set(limit_gauge(config.limits.connection_limit));
        let mut server = Server {
            sockets: HashMap::new(),
            config,
            listeners,
            limit: Arc::new(Semaphore::new(limit_now)),
            limit_now,
            services: watch::channel(services).0,
            phase_tx,
            phase_rx,
            done_tx,
            done_rx,
        };
        for (state, listener) in bound {
            server.spawn(state, listener);
        }
        server
    }

    fn spawn(&mut self, state: Arc<ListenerState>, listener: TcpListener) {
        let Ok(addr) = listener.local_addr() else {
            return;
        };
        // A copy kept for a binary upgrade; the loop gets the socket back registered.
        let copied = listener.into_std().and_then(|std| {
            let copy = std.try_clone()?;
            Ok((TcpListener::from_std(std)?, copy))
        });
        let (listener, socket) = match copied {
            Ok(both) => both,
            Err(e) => {
                let logger = &self.services.borrow().logger;
                logger.error(&format!("listening socket {addr}: {e}"));
                return;
            }
        };
        let services = self.services.borrow().clone();
        let protocol = state.log_protocol();
        services
            .logger
            .info(&format!("Listening on {addr} protocol={protocol}"));
        set_inherited_options(&socket, &state, &services);
        let accepted = accepted_counter(&services, &state);
        let (state_tx, state_rx) = watch::channel(state);
        let accept = AcceptLoop {
            local: accepted_local_address(&socket, addr),
            accepted,
            tls_refusals: Arc::new(Semaphore::new(MAX_TLS_REFUSALS_IN_FLIGHT)),
            state: state_rx,
            services: self.services.subscribe(),
            listener,
            limit: self.limit.clone(),
            phase: self.phase_rx.clone(),
            done: self.done_tx.clone(),
        };
        let task = tokio::spawn(accept.run());
        self.sockets.insert(
            addr,
            Running {
                state: state_tx,
                task,
                socket,
            },
        );
    }

    /// Copies of every listening socket, for a successor.
    pub(super) fn sockets_to_hand_over(&self) -> Vec<(SocketAddr, std::net::TcpListener)> {
        self.sockets
            .iter()
            .filter_map(|(addr, running)| Some((*addr, running.socket.try_clone().ok()?)))
            .collect()
    }

    /// Log how a reload went and tell systemd it is over.
    pub(super) fn reloaded(&self, outcome: &Result<String, ReloadError>) {
        let services = self.services.borrow().clone();
        let logger = services.logger.clone();
        crate::service_manager::ready(&services.registry.status());
        services.metrics.configured(outcome.is_ok());
        match outcome {
            Ok(summary) => logger.info(&format!("Reloaded: {summary}")),
            Err(why) => logger.error(&format!(
                "Reload failed, the running configuration stays: {why}"
            )),
        }
        // Log files are reopened either way (logrotate's SIGHUP).
        logger.reopen();
    }

    /// Switch to a prepared configuration, all of it or (an address cannot be bound) none of
    /// it: listeners on unchanged addresses keep their sockets (no connection refused
    /// meanwhile) and give new sessions the new settings, new ones are bound, removed ones stop
    /// accepting; live sessions keep what they started with.
    pub(super) fn apply(&mut self, next: Prepared) -> Result<String, ReloadError> {
        let Prepared {
            config,
            built,
            warnings,
        } = next;
        let services = self.services.borrow().clone();
        let guard = self.next_guard(&config, &services)?;
        // Bind the new addresses before anything changes: one that cannot be had fails the
        // whole reload (the sockets bound so far close as they drop).
        let (wanted, fresh) = self.bind_new(&built.listeners)?;
        for w in &warnings {
            services.logger.warning(w);
        }
        self.warn_about_restart_only(&config, &services);
        if config.guard != self.config.guard {
            services.set_guard(guard);
        }
        let (kept, removed) = self.keep_or_stop(&wanted);
        let added = fresh.len();
        for (state, socket) in fresh {
            self.spawn(state, socket);
        }
        self.set_limit(config.limits.connection_limit);
        start_probes(&built.listeners, &self.services.borrow());
        self.services.borrow().set_maps(&built.listeners);
        show_certificates(&built.listeners, &self.services.borrow());
        self.listeners = built.listeners;
        self.config = config;
        Ok(format!(
            "{} listeners; addresses kept {kept}, added {added}, removed {removed}",
            self.listeners.len()
        ))
    }

    /// The guard a reload to `new` gives sessions: the running one when its configuration is
    /// unchanged, else a new one that takes over what the running one learnt (its store too,
    /// when that is the same).
    fn next_guard(
        &self,
        new: &Config,
        services: &Services,
    ) -> Result<Option<Arc<Guard>>, ReloadError> {
        let old = &self.config;
        if (&new.guard, &new.fleet) == (&old.guard, &old.fleet) {
            return Ok(services.guard());
        }
        let store = |c: &Config| c.guard.settings().or_else(|| c.fleet.guard_settings());
        let same_store = store(old) == store(new);
        let fresh = Guard::from_config(&new.guard, &new.fleet, &services.logger)
            .map_err(|e| ReloadError::Guard(shared(e)))?;
        Ok(match (fresh, &services.guard()) {
            (Some(fresh), Some(previous)) => Some(Arc::new(fresh.succeed(previous, same_store))),
            (fresh, _) => fresh.map(Arc::new),
        })
    }

    /// Which listener each address of `listeners` is to serve, and sockets bound for the
    /// addresses not listened on yet.
    fn bind_new(&self, listeners: &[Arc<ListenerState>]) -> Result<(Serves, Bound), ReloadError> {
        let mut wanted = Serves::new();
        let mut fresh = Vec::new();
        for state in listeners {
            for &address in &state.addresses {
                if wanted.insert(address, state.clone()).is_none()
                    && !self.sockets.contains_key(&address)
                {
                    let socket = listen(address).map_err(|e| ReloadError::Listen {
                        address,
                        source: Arc::new(e),
                    })?;
                    fresh.push((state.clone(), socket));
                }
            }
        }
        Ok((wanted, fresh))
    }

    /// Sections a reload reads but does not apply.
    fn warn_about_restart_only(&self, config: &Config, services: &Services) {
        if config.log != self.config.log {
            services
                .logger
                .warning("[log] changes take effect at the next start; log files were reopened");
        }
        if config.admin != self.config.admin {
            services
                .logger
                .warning("[admin] changes take effect at the next start");
        }
        let store = |c: &Config| c.fleet.settings(&c.guard);
        if store(config) != store(&self.config)
            || config.fleet.session_ttl_ms != self.config.fleet.session_ttl_ms
        {
            services.logger.warning(
                "[fleet] changes take effect at the next start for the pools and the session \
                 caps (the guard has taken them already)",
            );
        }
    }

    /// Accept loops on `wanted` addresses go on with their new listener state, the others
    /// stop; how many of each.
    fn keep_or_stop(&mut self, wanted: &Serves) -> (usize, usize) {
        let (mut kept, mut removed) = (0, 0);
        self.sockets.retain(|addr, running| match wanted.get(addr) {
            Some(state) => {
                set_inherited_options(&running.socket, state, &self.services.borrow());
                running.state.send_replace(state.clone());
                kept += 1;
                true
            }
            None => {
                running.task.abort();
                removed += 1;
                false
            }
        });
        (kept, removed)
    }

    /// The connection limit follows the configuration: raised at once, lowered as sessions
    /// end (the slots are taken back as they come free; nobody is cut off).
    fn set_limit(&mut self, limit: usize) {
        let services = self.services.borrow().clone();
        services.metrics.connection_limit.set(limit_gauge(limit));
        let limit = effective_limit(limit);
        if limit > self.limit_now {
            self.limit.add_permits(limit - self.limit_now);
        } else if limit < self.limit_now {
            let surplus = u32::try_from(self.limit_now - limit).unwrap_or(u32::MAX);
            let semaphore = self.limit.clone();
            tokio::spawn(async move {
                if let Ok(permits) = semaphore.acquire_many_owned(surplus).await {
                    permits.forget();
                }
            });
        }
        self.limit_now = limit;
    }
}

/// Set on the listening socket the options its sessions want, TCP_NODELAY and (when
/// configured) SO_KEEPALIVE: every accepted socket inherits them from it, which spares a
/// `setsockopt` or two per connection. Again at each reload, which may change keepalive.
fn set_inherited_options(
    socket: &std::net::TcpListener,
    state: &ListenerState,
    services: &Services,
) {
    if let Err(e) = inherited_options(socket, state.config.tcp_keepalive) {
        let address = socket
            .local_addr()
            .map_or_else(|_| "?".into(), |a| a.to_string());
        services
            .logger
            .error(&format!("listening socket {address}: socket options: {e}"));
    }
}

fn inherited_options(socket: &std::net::TcpListener, keepalive: bool) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(socket);
    socket.set_tcp_nodelay(true)?;
    socket.set_keepalive(keepalive)
}

/// The local address of every connection accepted on `socket`, when it is known without
/// asking the kernel: the address bound, unless that is a wildcard (a connection then has the
/// address it reached) or the socket is transparent (a service manager's `Transparent=yes`:
/// it accepts connections to any address). `None`: ask for each connection.
fn accepted_local_address(socket: &std::net::TcpListener, bound: SocketAddr) -> Option<SocketAddr> {
    if bound.ip().is_unspecified() {
        return None;
    }
    let socket = socket2::SockRef::from(socket);
    let transparent = match bound {
        SocketAddr::V4(_) => socket.ip_transparent_v4(),
        SocketAddr::V6(_) => socket.ip_transparent_v6(),
    };
    match transparent {
        Ok(false) => Some(bound),
        _ => None,
    }
}

/// The listener's count of accepted connections, as the metrics name it.
fn accepted_counter(
    services: &Services,
    state: &ListenerState,
) -> prometheus_client::metrics::counter::Counter {
    services
        .metrics
        .accepted
        .get_or_create_owned(&ListenerLabels {
            listener: state.label.clone(),
            protocol: state.protocol().name(),
        })
}

/// The configured limit as the metrics show it.
fn limit_gauge(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The certificates the running listeners serve, for the metrics to read at each scrape.
fn show_certificates(listeners: &[Arc<ListenerState>], services: &Services) {
    let served = listeners
        .iter()
        .filter_map(|l| Some((l.label.clone(), l.certificates.clone()?)))
        .collect();
    services.metrics.readings.set_certificates(served);
}

fn effective_limit(limit: usize) -> usize {
    match limit {
        0 => UNLIMITED,
        n => n.min(UNLIMITED),
    }
}

/// Learn capabilities from the back ends of the listeners that want it, once per listener.
fn start_probes(listeners: &[Arc<ListenerState>], services: &Arc<Services>) {
    for state in listeners {
        if capability_probe::wanted(state) {
            tokio::spawn(capability_probe::learn_capability(
                state.clone(),
                services.clone(),
            ));
        }
    }
}

/// The shutdown phases: draining for `grace`, then closing for [`CLOSING_TIME`].
async fn shut_down(
    services: &Services,
    phase: watch::Sender<Phase>,
    mut done: mpsc::Receiver<()>,
    grace: Duration,
) {
    let logger = &services.logger;
    logger.info("Shutting down: no new connections");
    let _ = phase.send(Phase::Draining);
    if tokio::time::timeout(grace, done.recv()).await.is_ok() {
        return;
    }
    logger.info("Shutdown grace period over; closing remaining sessions");
    let _ = phase.send(Phase::Closing);
    if tokio::time::timeout(CLOSING_TIME, done.recv())
        .await
        .is_err()
    {
        logger.warning("Some sessions did not end in time; they are cut without a log line");
    }
}

/// A connection's slot under `connection_limit`, counted as open while it is held (a session
/// that panics gives it back too).
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: prometheus_client::metrics::gauge::Gauge,
}

impl Slot {
    fn take(permit: OwnedSemaphorePermit, open: &prometheus_client::metrics::gauge::Gauge) -> Slot {
        open.inc();
        Slot {
            _permit: permit,
            open: open.clone(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// One listening socket's accept loop.
struct AcceptLoop {
    /// What new sessions get; a reload replaces it.
    state: watch::Receiver<Arc<ListenerState>>,
    services: watch::Receiver<Arc<Services>>,
    listener: TcpListener,
    /// `connection_limit`, shared by every listener of the process.
    limit: Arc<Semaphore>,
    /// Stop accepting once shutdown starts; sessions get a clone to watch.
    phase: watch::Receiver<Phase>,
    /// Given to every session; see [`run`].
    done: mpsc::Sender<()>,
    /// Handshakes for refusals on an implicit-TLS listener.
    tls_refusals: Arc<Semaphore>,
    /// Connections accepted here (`portcullis_connections_accepted_total`).
    accepted: prometheus_client::metrics::counter::Counter,
    /// The local address of every connection accepted here, when the bound one says it.
    local: Option<SocketAddr>,
}

impl AcceptLoop {
    async fn run(mut self) {
        let mut backoff = Duration::from_millis(10);
        loop {
            let accepted = tokio::select! {
                a = self.listener.accept() => a,
                _ = reached(&mut self.phase, Phase::Draining) => return,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    backoff = Duration::from_millis(10);
                    self.take(tcp, peer);
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    let services = self.services.borrow().clone();
                    services.logger.error(&format!("accept failed: {e}"));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// An accepted connection: counted, then served, or refused over the connection limit.
    fn take(&mut self, tcp: TcpStream, peer: SocketAddr) {
        let services = self.services.borrow().clone();
        if self.state.has_changed().unwrap_or(false) {
            // A reload: the counter follows the listener's new labels.
            let state = self.state.borrow_and_update().clone();
            self.accepted = accepted_counter(&services, &state);
        }
        self.accepted.inc();
        let state = self.state.borrow().clone();
        match self.limit.clone().try_acquire_owned() {
            Ok(permit) => self.start_session(state, services, tcp, peer, permit),
            Err(_) => self.refuse(&state, &services, tcp, peer),
        }
    }

    fn start_session(
        &self,
        state: Arc<ListenerState>,
        services: Arc<Services>,
        tcp: TcpStream,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
    ) {
        let local = match self.local {
            Some(local) => local,
            None => tcp.local_addr().unwrap_or(peer),
        };
        let slot = Slot::take(permit, &services.metrics.connections_open);
        let session = Session::new(state, services, peer, local, self.phase.clone());
        let done = self.done.clone();
        tokio::spawn(async move {
            session.run(tcp).await;
            // Dropping these frees the slot and tells shutdown this session is over.
            drop(slot);
            drop(done);
        });
    }

    /// A client over the connection limit: told so in the protocol's words, then closed.
    fn refuse(
        &self,
        state: &Arc<ListenerState>,
        services: &Services,
        tcp: TcpStream,
        peer: SocketAddr,
    ) {
        services.metrics.refused(&state.label, RefusedReason::Limit);
        // Behind a balancer the client's address is in a header not read yet, and TLS would
        // start on the header's bytes: a plain listener still answers, a TLS one just closes.
        let behind_balancer = state.proxy_trusted.is_some();
        let answered = if behind_balancer && state.implicit_tls() {
            drop(tcp);
            false
        } else if !state.implicit_tls() {
            session::refuse_plain(state, tcp)
        } else if let Ok(permit) = self.tls_refusals.clone().try_acquire_owned() {
            let state = state.clone();
            tokio::spawn(async move {
                session::refuse_tls(&state, tcp).await;
                drop(permit);
            });
            true
        } else {
            drop(tcp);
            false
        };
        let via = if behind_balancer {
            " (a balancer: its client is named in the PROXY header, which was not read)"
        } else {
            ""
        };
        let message = if answered {
            format!("Connection limit reached: refusing {peer}{via}")
        } else {
            format!("Connection limit reached: closing {peer} without an answer{via}")
        };
        services.logger.warning(&message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel picks a port free on IPv4 for `0.0.0.0:0` (IPv4 is where a busy machine's
    /// ports are taken: its outgoing connections), and `[::]:PORT`, v6 only, must bind beside it.
    /// Another program may still hold that port on IPv6: that `AddrInUse` says nothing about
    /// this code, and the pair is tried again on a new port. Any other error fails, and so does
    /// a pair that never binds (as it would if `[::]` also claimed IPv4).
    #[tokio::test]
    async fn ipv4_and_ipv6_wildcards_share_a_port() {
        let mut taken = Vec::new();
        for _ in 0..20 {
            let v4 = listen(SocketAddr::from(([0, 0, 0, 0], 0))).expect("listen on 0.0.0.0:0");
            let port = v4.local_addr().unwrap().port();
            match listen(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port))) {
                Ok(_) => return,
                // A machine without IPv6 cannot have the conflict this test is about.
                Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => return,
                Err(e) if e.raw_os_error() == Some(nix::libc::EAFNOSUPPORT) => return,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => taken.push(port),
                Err(e) => panic!("[::]:{port} beside 0.0.0.0:{port}: {e}"),
            }
        }
        panic!("[::]:PORT never bound beside 0.0.0.0:PORT; ports tried: {taken:?}");
    }

    /// What the accept loop takes for granted instead of asking for each connection: the
    /// options set on the listening socket are the accepted socket's, and so is the address
    /// of a listener on a specific one.
    #[tokio::test]
    async fn accepted_sockets_inherit_the_options_and_the_address() {
        let listener = listen(SocketAddr::from(([127, 0, 0, 1], 0))).expect("listen");
        let bound = listener.local_addr().unwrap();
        let socket = listener.into_std().unwrap();
        for keepalive in [true, false] {
            inherited_options(&socket, keepalive).expect("options on the listening socket");
            let _client = std::net::TcpStream::connect(bound).expect("connect");
            let (accepted, _) = socket.accept().expect("accept");
            let accepted = socket2::SockRef::from(&accepted);
            assert!(accepted.tcp_nodelay().unwrap(), "TCP_NODELAY not inherited");
            assert_eq!(accepted.keepalive().unwrap(), keepalive, "SO_KEEPALIVE");
            let local = accepted.local_addr().unwrap().as_socket().unwrap();
            assert_eq!(accepted_local_address(&socket, bound), Some(local));
        }
        let wildcard = listen(SocketAddr::from(([0, 0, 0, 0], 0))).expect("listen");
        let wildcard_bound = wildcard.local_addr().unwrap();
        let wildcard = wildcard.into_std().unwrap();
        assert_eq!(accepted_local_address(&wildcard, wildcard_bound), None);
    }
}
