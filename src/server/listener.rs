//! Listening sockets and the accept loop, in the shape of tokio's `mini-redis`: one accept
//! loop per socket, a process-wide semaphore for `connection_limit`, a watch channel for the
//! shutdown phases and an mpsc sender that every session holds, so that "all senders dropped"
//! means "all sessions ended".

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::metrics::ListenerLabels;

use super::runtime::ListenerState;
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

/// Bind every listener's sockets; errors name the address.
pub fn bind(
    listeners: &[Arc<ListenerState>],
) -> Result<Vec<(Arc<ListenerState>, TcpListener)>, String> {
    let mut bound = Vec::new();
    for state in listeners {
        for &addr in &state.addresses {
            let listener = listen(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            bound.push((state.clone(), listener));
        }
    }
    Ok(bound)
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

/// Serve until `shutdown_signal` completes, then stop accepting, tell pre-login clients, give
/// live sessions `grace` to end, and end the rest so that they log their Closing lines.
pub async fn run(
    bound: Vec<(Arc<ListenerState>, TcpListener)>,
    services: Arc<Services>,
    connection_limit: usize,
    grace: Duration,
    shutdown_signal: impl std::future::Future<Output = ()>,
) {
    let limit = Arc::new(Semaphore::new(match connection_limit {
        0 => Semaphore::MAX_PERMITS,
        n => n,
    }));
    let (phase_tx, phase_rx) = watch::channel(Phase::Serving);
    // Every session holds a clone; when all are dropped, `recv` returns None (mini-redis).
    let (done_tx, done_rx) = mpsc::channel::<()>(1);
    start_probes(&bound, &services);
    for (state, listener) in bound {
        if let Ok(addr) = listener.local_addr() {
            let protocol = state.log_protocol();
            let line = format!("Listening on {addr} protocol={protocol}");
            services.logger.info(&line);
        }
        let accepted = services
            .metrics
            .accepted
            .get_or_create_owned(&ListenerLabels {
                listener: state.label.clone(),
                protocol: state.protocol().name(),
            });
        let accept = AcceptLoop {
            accepted,
            tls_refusals: Arc::new(Semaphore::new(MAX_TLS_REFUSALS_IN_FLIGHT)),
            state,
            services: services.clone(),
            listener,
            limit: limit.clone(),
            phase: phase_rx.clone(),
            done: done_tx.clone(),
        };
        tokio::spawn(accept.run());
    }
    drop(done_tx);
    shutdown_signal.await;
    shut_down(&services, phase_tx, done_rx, grace).await;
}

/// Learn capabilities from the back ends of the listeners that want it, once per listener.
fn start_probes(bound: &[(Arc<ListenerState>, TcpListener)], services: &Arc<Services>) {
    let mut probed: Vec<&Arc<ListenerState>> = Vec::new();
    for (state, _) in bound {
        if capability_probe::wanted(state) && !probed.iter().any(|p| Arc::ptr_eq(p, state)) {
            probed.push(state);
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

/// One listening socket's accept loop.
struct AcceptLoop {
    state: Arc<ListenerState>,
    services: Arc<Services>,
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
                    self.accepted.inc();
                    match self.limit.clone().try_acquire_owned() {
                        Ok(permit) => self.start_session(tcp, peer, permit),
                        Err(_) => self.refuse(tcp, peer),
                    }
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    self.services.logger.error(&format!("accept failed: {e}"));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    fn start_session(&self, tcp: TcpStream, peer: SocketAddr, permit: OwnedSemaphorePermit) {
        let local = tcp.local_addr().unwrap_or(peer);
        let session = Session::new(
            self.state.clone(),
            self.services.clone(),
            peer,
            local,
            self.phase.clone(),
        );
        let done = self.done.clone();
        tokio::spawn(async move {
            session.run(tcp).await;
            // Dropping these frees the slot and tells shutdown this session is over.
            drop(permit);
            drop(done);
        });
    }

    /// A client over the connection limit: told so in the protocol's words, then closed.
    fn refuse(&self, tcp: TcpStream, peer: SocketAddr) {
        self.services.metrics.refused(&self.state.label, "limit");
        // Behind a balancer the client's address is in a header not read yet, and TLS would
        // start on the header's bytes: a plain listener still answers, a TLS one just closes.
        let behind_balancer = self.state.proxy_trusted.is_some();
        let answered = if behind_balancer && self.state.implicit_tls() {
            drop(tcp);
            false
        } else if !self.state.implicit_tls() {
            session::refuse_plain(&self.state, tcp)
        } else if let Ok(permit) = self.tls_refusals.clone().try_acquire_owned() {
            let state = self.state.clone();
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
        self.services.logger.warning(&message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ipv4_and_ipv6_wildcards_share_a_port() {
        let v6 = match listen("[::]:0".parse().unwrap()) {
            Ok(l) => l,
            // A machine without IPv6 cannot have the conflict this test is about.
            Err(_) => return,
        };
        let port = v6.local_addr().unwrap().port();
        let v4 = listen(SocketAddr::from(([0, 0, 0, 0], port)));
        assert!(v4.is_ok(), "{v4:?}");
    }
}
