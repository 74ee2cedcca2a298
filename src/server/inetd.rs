//! Perdition's inetd mode: inetd (or xinetd, or systemd's `Accept=yes` sockets) accepted the
//! connection and started this process with it as standard input and output; serve that one
//! session, then exit.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::watch;

use super::builder::ListenerState;
use super::services::Services;
use super::session::Session;
use super::Phase;

/// How long the session gets to say goodbye and log once the process is told to stop.
const CLOSING_TIME: Duration = Duration::from_secs(2);

/// Why standard input cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum InetdError {
    #[error("inetd mode: standard input: {0}")]
    Stdin(#[source] std::io::Error),
    /// A pipe or a terminal: inetd passes a socket.
    #[error("inetd mode: standard input is not a network connection (inetd passes one)")]
    NotNetwork,
    #[error("inetd mode: standard input has no peer: {0}")]
    NoPeer(#[source] std::io::Error),
}

/// Serve the client on standard input until the session ends or `stop` completes.
pub async fn serve_stdin(
    listener: Arc<ListenerState>,
    services: Arc<Services>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), InetdError> {
    let tcp = stdin_connection()?;
    // Set here: not accepted from a listening socket of ours, it inherited nothing from one.
    let _ = tcp.set_nodelay(true);
    if listener.config.tcp_keepalive {
        let _ = socket2::SockRef::from(&tcp).set_keepalive(true);
    }
    let peer = tcp.peer_addr().map_err(InetdError::NoPeer)?;
    let local = tcp.local_addr().unwrap_or(peer);
    // Perdition names inetd in the Connect line, which tells these sessions apart in the log.
    let inetd = std::os::unix::process::parent_id();
    services
        .logger
        .note_on_connect(format!(" inetd_pid={inetd}"));
    let (phase_tx, phase) = watch::channel(Phase::Serving);
    let mut session = tokio::spawn(Session::new(listener, services, peer, local, phase).run(tcp));
    tokio::select! {
        _ = &mut session => {}
        _ = stop => {
            // Told at once that the grace period is over: BYE before login, the end of the
            // relay (and its Closing line) after.
            let _ = phase_tx.send(Phase::Closing);
            let _ = tokio::time::timeout(CLOSING_TIME, session).await;
        }
    }
    Ok(())
}

/// Standard input as a TCP connection (a duplicate: standard input stays open).
fn stdin_connection() -> Result<TcpStream, InetdError> {
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(InetdError::Stdin)?;
    let tcp = std::net::TcpStream::from(fd);
    // A pipe or a terminal makes a "TCP stream" that has no peer: refused here, plainly.
    tcp.peer_addr().map_err(|_| InetdError::NotNetwork)?;
    tcp.set_nonblocking(true).map_err(InetdError::Stdin)?;
    TcpStream::from_std(tcp).map_err(InetdError::Stdin)
}
