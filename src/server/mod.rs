//! The server: listeners, the connection limit and graceful shutdown, in the shape of tokio's
//! `mini-redis` (accept loop, semaphore, shutdown broadcast, wait for sessions to drain).

pub mod capability_probe;
pub mod relay;
pub mod session;
pub mod stream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::authlog::{hostname, Logger};
use crate::config::{BackendTls, Config, ListenerTls};
use crate::map::static_server::StaticServer;
use crate::tls::{self, BackendVerification};

use session::ListenerState;

/// Implicit-TLS clients over the connection limit that are told so at the same time, per
/// listener: each needs a handshake, so a flood beyond this is closed without a word (and
/// logged). Plain clients are all answered, at once, in the accept loop.
const MAX_TLS_REFUSALS_IN_FLIGHT: usize = 64;

/// How long sessions still relaying at the end of the grace period get to write their
/// Closing lines.
const CLOSING_TIME: Duration = Duration::from_secs(2);

/// Where the process is in its life; every session watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Serving,
    /// Shutdown asked: no new connections; clients that have not logged in are told BYE.
    Draining,
    /// The grace period is over: relays end and log their Closing lines.
    Closing,
}

/// Wait until the process reaches `phase` (or the server is gone).
pub async fn reached(watch: &mut watch::Receiver<Phase>, phase: Phase) {
    let _ = watch.wait_for(|p| *p >= phase).await;
}

/// Build every listener's shared state and bind its sockets; errors name the culprit.
pub async fn bind(
    config: &Config,
    logger: Arc<Logger>,
) -> Result<Vec<(Arc<ListenerState>, TcpListener)>, String> {
    let mut bound = Vec::new();
    for l in &config.listeners {
        let acceptor = match (l.tls, &l.cert, &l.key) {
            (ListenerTls::None, _, _) => None,
            (_, Some(cert), Some(key)) => Some(TlsAcceptor::from(tls::server_config(
                cert,
                key,
                l.protocol.alpn_id(),
            )?)),
            _ => return Err("a TLS listener needs cert and key".into()),
        };
        let connector = match l.backend.tls {
            BackendTls::None => None,
            _ => {
                let verification = if l.backend.verify {
                    BackendVerification::CaFile(
                        l.backend
                            .ca_file
                            .clone()
                            .unwrap_or_else(|| tls::SYSTEM_CA_BUNDLE.into()),
                    )
                } else {
                    BackendVerification::None
                };
                Some(TlsConnector::from(tls::client_config(&verification)?))
            }
        };
        let state = Arc::new(ListenerState {
            map: Box::new(StaticServer::new(
                l.backend.host.clone(),
                l.backend.port_for(l.protocol),
            )),
            config: l.clone(),
            limits: config.limits.clone(),
            logger: logger.clone(),
            acceptor,
            connector,
            greeting_host: hostname(),
            learned_capability: Default::default(),
        });
        if l.protocol.learns_capability() && l.capability.is_none() {
            tokio::spawn(capability_probe::learn_capability(state.clone()));
        }
        for addr in l.addresses()? {
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

/// Serve until `shutdown_signal` completes, then stop accepting, tell pre-login clients, and
/// give live sessions `grace` to end.
pub async fn run(
    bound: Vec<(Arc<ListenerState>, TcpListener)>,
    connection_limit: usize,
    grace: Duration,
    logger: Arc<Logger>,
    shutdown_signal: impl std::future::Future<Output = ()>,
) {
    let limit = Arc::new(Semaphore::new(if connection_limit == 0 {
        Semaphore::MAX_PERMITS
    } else {
        connection_limit
    }));
    let (phase_tx, phase_rx) = watch::channel(Phase::Serving);
    // Every session holds a clone; when all are dropped, `recv` returns None (mini-redis).
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    for (state, listener) in bound {
        if let Ok(addr) = listener.local_addr() {
            logger.info(&format!(
                "Listening on {addr} protocol={}",
                state
                    .protocol()
                    .log_name(state.config.tls == ListenerTls::Implicit)
            ));
        }
        tokio::spawn(accept_loop(
            state,
            listener,
            limit.clone(),
            phase_rx.clone(),
            done_tx.clone(),
        ));
    }
    drop(done_tx);
    shutdown_signal.await;
    logger.info("Shutting down: no new connections");
    let _ = phase_tx.send(Phase::Draining);
    if tokio::time::timeout(grace, done_rx.recv()).await.is_err() {
        logger.info("Shutdown grace period over; closing remaining sessions");
        let _ = phase_tx.send(Phase::Closing);
        if tokio::time::timeout(CLOSING_TIME, done_rx.recv())
            .await
            .is_err()
        {
            logger.warning("Some sessions did not end in time; they are cut without a log line");
        }
    }
}

async fn accept_loop(
    state: Arc<ListenerState>,
    listener: TcpListener,
    limit: Arc<Semaphore>,
    mut shutdown: watch::Receiver<Phase>,
    done: mpsc::Sender<()>,
) {
    let tls_refusals = Arc::new(Semaphore::new(MAX_TLS_REFUSALS_IN_FLIGHT));
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = reached(&mut shutdown, Phase::Draining) => return,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(10);
                a
            }
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning, keep serving.
                state.logger.error(&format!("accept failed: {e}"));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let local = tcp.local_addr().unwrap_or(peer);
        match limit.clone().try_acquire_owned() {
            Ok(permit) => {
                let state = state.clone();
                let shutdown = shutdown.clone();
                let done = done.clone();
                tokio::spawn(async move {
                    session::serve(state, tcp, peer, local, shutdown).await;
                    drop(permit);
                    drop(done);
                });
            }
            Err(_) => refuse(&state, tcp, peer, &tls_refusals),
        }
    }
}

/// A client over the connection limit: told so in the protocol's words, then closed.
fn refuse(
    state: &Arc<ListenerState>,
    tcp: TcpStream,
    peer: SocketAddr,
    tls_budget: &Arc<Semaphore>,
) {
    let answered = if state.config.tls != ListenerTls::Implicit {
        session::refuse_plain(state, tcp)
    } else if let Ok(permit) = tls_budget.clone().try_acquire_owned() {
        let state = state.clone();
        tokio::spawn(async move {
            session::refuse_tls(state, tcp).await;
            drop(permit);
        });
        true
    } else {
        drop(tcp);
        false
    };
    let message = if answered {
        format!("Connection limit reached: refusing {peer}")
    } else {
        format!("Connection limit reached: closing {peer} without an answer")
    };
    state.logger.warning(&message);
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
