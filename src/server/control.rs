//! Reload, upgrade and shutdown: what the running server is told besides serving, and how it
//! does it.
//! - **Requests**: SIGHUP and `POST /reload` ask for a reload, SIGUSR2 and `POST /upgrade` for
//!   an upgrade; SIGTERM and SIGINT for the shutdown ([`shutdown_signal`]).
//! - **Reload**: the configuration read again from its [`ConfigSource`] and built off the
//!   runtime's threads, then switched to by the listeners (`Server::apply`); requests that
//!   queued up meanwhile get the same answer.
//! - **Upgrade** (the binary without refusing a connection, for starts without systemd; under
//!   systemd, socket activation does the same: the sockets stay with systemd across
//!   `systemctl restart`). As nginx does: this process starts the binary on disk again with
//!   the same arguments, hands it its listening sockets (inherited, named in
//!   [`INHERITED_FDS`]), and waits for it to say it is ready (`READY=1` on a notification
//!   socket of its own, the systemd protocol); then it stops accepting and drains like at
//!   SIGTERM. A successor that fails to start changes nothing.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use tokio::net::UnixDatagram;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, oneshot};

use crate::config::Config;

use super::builder::ListenerState;
use super::listener::Server;
use super::reload::prepare;
pub use super::reload::{shared, ConfigSource, ReloadError, Shared};
use super::services::Services;

pub use crate::service_manager::{INHERITED_FDS, SUCCESSOR};
/// How long a successor may take to be ready.
const READY_TIME: Duration = Duration::from_secs(30);
/// How long a successor that said it is ready must stay up before this process lets go: one
/// that dies at once would leave nobody accepting.
const SETTLE_TIME: Duration = Duration::from_secs(1);

/// A request to read the configuration again (SIGHUP, `POST /reload`); the answer, when one
/// is wanted, says what changed or why nothing did.
pub struct ReloadRequest {
    pub reply: Option<oneshot::Sender<Result<String, ReloadError>>>,
}

/// A request to hand the sockets to a new binary and drain (SIGUSR2, `POST /upgrade`).
pub struct UpgradeRequest {
    pub reply: Option<oneshot::Sender<Result<String, UpgradeError>>>,
}

/// Why no successor serves (and this process goes on).
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpgradeError {
    /// One started by hand would be killed with this process's cgroup.
    #[error("started by systemd: use portcullis.socket and systemctl restart")]
    UnderSystemd,
    /// One started as this user could not bind nor read what a start needs.
    #[error("privileges were dropped to {0}: restart instead")]
    PrivilegesDropped(String),
    #[error("no program name in the arguments")]
    NoProgramName,
    #[error("{}: {source}", path.display())]
    Program {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("{} not found in PATH", .0.display())]
    NotInPath(PathBuf),
    #[error("{}: {source}", path.display())]
    Directory {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("notification socket {}: {source}", path.display())]
    NotifySocket {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("notification socket: {0}")]
    Notification(#[source] Arc<std::io::Error>),
    #[error("socket {address}: {source}")]
    Socket {
        address: SocketAddr,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("socket {address}: {source}")]
    Inheritable {
        address: SocketAddr,
        #[source]
        source: nix::Error,
    },
    #[error("cannot start {}: {source}", program.display())]
    Start {
        program: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("the new process (pid {pid}) was not ready within {} s", READY_TIME.as_secs())]
    NotReady { pid: u32 },
    #[error("the new process (pid {pid}) exited: {status}")]
    Exited { pid: u32, status: ExitStatus },
    #[error("the new process (pid {pid}) exited right after it was ready: {status}")]
    ExitedAfterReady { pid: u32, status: ExitStatus },
}

/// What the server is told while it runs, besides the shutdown signal.
pub struct Control {
    pub reloads: mpsc::Receiver<ReloadRequest>,
    pub upgrades: mpsc::Receiver<UpgradeRequest>,
    /// Where a reload's configuration comes from.
    pub source: ConfigSource,
    pub upgrade: Upgrade,
    /// Tasks that end with serving (the admin endpoint): a draining process must not answer
    /// for its successor.
    pub end_with_serving: Vec<tokio::task::AbortHandle>,
}

/// What starting a successor takes: this process's command line, its sockets, its binary.
pub struct Upgrade {
    /// The command line a successor is started with (this process's own).
    pub args: Vec<String>,
    /// Sockets a successor takes over besides the listeners' (the admin endpoint's).
    pub other_sockets: Vec<(SocketAddr, TcpListener)>,
    /// The binary a successor is started from, found at start; or why there is no successor
    /// here ([`refusal`]).
    pub program: Result<PathBuf, UpgradeError>,
    /// Rewritten with this process's id when a successor that wrote its own fails.
    pub pid_file: Option<String>,
}

impl Control {
    /// Answer requests until `shutdown_signal` completes or a successor serves; then end what
    /// ends with serving, ready for the drain.
    pub(super) async fn serve(
        self,
        server: &mut Server,
        shutdown_signal: impl Future<Output = ()>,
    ) {
        let Control {
            mut reloads,
            mut upgrades,
            source,
            upgrade,
            end_with_serving,
        } = self;
        let source = Arc::new(source);
        tokio::pin!(shutdown_signal);
        loop {
            tokio::select! {
                _ = &mut shutdown_signal => break,
                Some(first) = reloads.recv() => {
                    let mut waiting = vec![first];
                    // Requests that queued up meanwhile get the same answer: one reload for all.
                    while let Ok(more) = reloads.try_recv() {
                        waiting.push(more);
                    }
                    if !reload(server, &source, waiting, &mut shutdown_signal).await {
                        break;
                    }
                }
                Some(request) = upgrades.recv() => {
                    if upgrade.upgrade(server, request).await {
                        break;
                    }
                }
            }
        }
        for task in end_with_serving {
            task.abort();
        }
        drop(upgrade.other_sockets);
    }
}

/// Serve until `shutdown_signal` completes (or a successor serves), then stop accepting, tell
/// pre-login clients, give live sessions `grace` to end, and end the rest so that they log
/// their Closing lines. Until then, `control` answers reload and upgrade requests.
pub async fn run(
    bound: Vec<(Arc<ListenerState>, tokio::net::TcpListener)>,
    services: Arc<Services>,
    config: Config,
    shutdown_signal: impl std::future::Future<Output = ()>,
    control: Control,
) {
    let mut server = Server::start(bound, services, config);
    control.serve(&mut server, shutdown_signal).await;
    server.drain().await;
}

/// Read the configuration again and switch to it, answering every request in `waiting`;
/// false when the shutdown came first.
async fn reload(
    server: &mut Server,
    source: &Arc<ConfigSource>,
    waiting: Vec<ReloadRequest>,
    shutdown_signal: &mut Pin<&mut impl Future<Output = ()>>,
) -> bool {
    crate::service_manager::reloading();
    // Reading files, compiling maps and resolving names block: off the runtime's threads,
    // and never in the way of a shutdown.
    let prepared = {
        let (source, previous) = (source.clone(), server.listeners.clone());
        tokio::task::spawn_blocking(move || prepare(&source, &previous))
    };
    let outcome = tokio::select! {
        _ = shutdown_signal => {
            for request in waiting {
                answer(request.reply, Err(ReloadError::ShuttingDown));
            }
            return false;
        }
        joined = prepared => match joined {
            Ok(Ok(next)) => server.apply(next),
            Ok(Err(why)) => Err(why),
            Err(_) => Err(ReloadError::Failed),
        },
    };
    server.reloaded(&outcome);
    for request in waiting {
        answer(request.reply, outcome.clone());
    }
    true
}

/// Tell whoever asked for a reload or an upgrade how it went.
fn answer<E>(reply: Option<oneshot::Sender<Result<String, E>>>, outcome: Result<String, E>) {
    if let Some(reply) = reply {
        let _ = reply.send(outcome);
    }
}

impl Upgrade {
    /// Hand the sockets to a successor; true when it serves and this process is to drain.
    async fn upgrade(&self, server: &mut Server, request: UpgradeRequest) -> bool {
        let logger = server.services.borrow().logger.clone();
        let program = match &self.program {
            Err(why) => {
                logger.error(&format!("Upgrade refused: {why}"));
                answer(request.reply, Err(why.clone()));
                return false;
            }
            Ok(program) => program,
        };
        let mut sockets = server.sockets_to_hand_over();
        let others = self.other_sockets.iter();
        sockets.extend(others.filter_map(|(a, s)| Some((*a, s.try_clone().ok()?))));
        match hand_over(program, &self.args, &sockets).await {
            Ok(pid) => {
                let line = format!("Upgrade: the new process (pid {pid}) serves; this one drains");
                logger.info(&line);
                answer(request.reply, Ok(line));
                true
            }
            Err(why) => {
                logger.error(&format!("Upgrade failed, this process goes on: {why}"));
                // The successor may have written its id there before it failed.
                if let Some(path) = &self.pid_file {
                    crate::pid_file::take_back(Path::new(path));
                }
                answer(request.reply, Err(why));
                false
            }
        }
    }
}

/// Why an upgrade cannot be done here, when it cannot: a successor started by hand under
/// systemd would be killed with this process's cgroup; one started as `user` (privileges
/// dropped) could not bind nor read what a start needs.
pub fn refusal(user: Option<&str>) -> Option<UpgradeError> {
    if crate::service_manager::under_systemd() {
        return Some(UpgradeError::UnderSystemd);
    }
    user.map(|user| UpgradeError::PrivilegesDropped(user.to_string()))
}

/// The signals that ask for a reload (SIGHUP) and an upgrade (SIGUSR2), handled from the
/// moment they are taken: before anything announces this process, a signal then must not
/// kill it.
pub struct Signals {
    hangup: Signal,
    usr2: Signal,
}

impl Signals {
    pub fn take() -> std::io::Result<Signals> {
        Ok(Signals {
            hangup: signal(SignalKind::hangup())?,
            usr2: signal(SignalKind::user_defined2())?,
        })
    }

    /// From now on each arrival becomes a request to the server: SIGHUP a reload
    /// (configuration, certificates and maps read again, log files reopened: logrotate)
    /// instead of the default death, SIGUSR2 a binary upgrade (the sockets handed to the
    /// binary on disk, as nginx).
    pub fn forward(
        self,
        reloads: mpsc::Sender<ReloadRequest>,
        upgrades: mpsc::Sender<UpgradeRequest>,
    ) {
        tokio::spawn(forward_signal(self.hangup, reloads, || ReloadRequest {
            reply: None,
        }));
        tokio::spawn(forward_signal(self.usr2, upgrades, || UpgradeRequest {
            reply: None,
        }));
    }
}

async fn forward_signal<R>(mut signal: Signal, requests: mpsc::Sender<R>, request: fn() -> R) {
    while signal.recv().await.is_some() {
        if requests.send(request()).await.is_err() {
            return;
        }
    }
}

/// SIGTERM (systemd, `kill`) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Start the binary this process was started as, with `args`, handing it `sockets`; wait
/// until it is ready. Its process id.
async fn hand_over(
    program: &Path,
    args: &[String],
    sockets: &[(SocketAddr, TcpListener)],
) -> Result<u32, UpgradeError> {
    // A directory of this process alone (0700, a name nobody can guess, never one that
    // already exists): nobody else can take the socket's place nor send it READY.
    let dir = std::env::temp_dir().join(format!(
        "portcullis-upgrade-{}-{:016x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| UpgradeError::Directory {
                path: dir.clone(),
                source: Arc::new(e),
            })?;
    }
    let notify_path = dir.join("notify");
    let notify = UnixDatagram::bind(&notify_path).map_err(|e| UpgradeError::NotifySocket {
        path: notify_path.clone(),
        source: Arc::new(e),
    })?;
    let outcome = start_and_wait(program, args, sockets, &notify_path, &notify).await;
    let _ = std::fs::remove_file(&notify_path);
    let _ = std::fs::remove_dir(&dir);
    outcome
}

async fn start_and_wait(
    program: &Path,
    args: &[String],
    sockets: &[(SocketAddr, TcpListener)],
    notify_path: &Path,
    notify: &UnixDatagram,
) -> Result<u32, UpgradeError> {
    let mut child = spawn(program, args, sockets, notify_path)?;
    let pid = child.id();
    let outcome = wait_until_settled(&mut child, notify).await;
    if outcome.is_err() {
        // Not to be left half started, nor unreaped.
        let _ = child.kill();
        let _ = child.wait();
    }
    outcome.map(|()| pid)
}

/// READY from the child, and the child still up a moment later.
async fn wait_until_settled(child: &mut Child, notify: &UnixDatagram) -> Result<(), UpgradeError> {
    let pid = child.id();
    let ready = async {
        let mut buf = [0u8; 4096];
        loop {
            let n = notify.recv(&mut buf).await?;
            let message = String::from_utf8_lossy(&buf[..n]);
            if message.lines().any(|l| l == "READY=1") {
                return Ok::<(), std::io::Error>(());
            }
        }
    };
    let exited = async {
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::pin!(exited);
    tokio::select! {
        ready = tokio::time::timeout(READY_TIME, ready) => match ready {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(UpgradeError::Notification(Arc::new(e))),
            Err(_) => return Err(UpgradeError::NotReady { pid }),
        },
        status = &mut exited => return Err(UpgradeError::Exited { pid, status }),
    }
    tokio::select! {
        _ = tokio::time::sleep(SETTLE_TIME) => Ok(()),
        status = &mut exited => Err(UpgradeError::ExitedAfterReady { pid, status }),
    }
}

fn spawn(
    program: &Path,
    args: &[String],
    sockets: &[(SocketAddr, TcpListener)],
    notify_path: &Path,
) -> Result<Child, UpgradeError> {
    // Copies that the child inherits (the originals stay close-on-exec); closed here once it
    // has started.
    let mut inheritable = Vec::new();
    for &(address, ref socket) in sockets {
        let copy = socket.try_clone().map_err(|e| UpgradeError::Socket {
            address,
            source: Arc::new(e),
        })?;
        fcntl(&copy, FcntlArg::F_SETFD(FdFlag::empty()))
            .map_err(|source| UpgradeError::Inheritable { address, source })?;
        inheritable.push(copy);
    }
    let numbers: Vec<String> = inheritable
        .iter()
        .map(|s| s.as_raw_fd().to_string())
        .collect();
    let child = std::process::Command::new(program)
        .args(args)
        .env(INHERITED_FDS, numbers.join(","))
        .env("NOTIFY_SOCKET", notify_path)
        .env(SUCCESSOR, "1")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| UpgradeError::Start {
            program: program.to_path_buf(),
            source: Arc::new(e),
        });
    drop(inheritable);
    child
}

/// The binary on disk as this process was started, as an absolute path found once at start
/// (after a package upgrade it holds the new binary; the running image may be deleted by
/// then). Relative PATH entries are not searched: they depend on the working directory.
pub fn invoked_program() -> Result<PathBuf, UpgradeError> {
    let first = std::env::args_os()
        .next()
        .ok_or(UpgradeError::NoProgramName)?;
    let named = PathBuf::from(&first);
    if named.components().count() > 1 {
        // The directory resolved, the name kept: started through a link named like one of
        // Perdition's programs (perdition.imaps), the successor must be started by that name.
        let resolved = match (named.parent(), named.file_name()) {
            (Some(dir), Some(name)) if !dir.as_os_str().is_empty() => {
                std::fs::canonicalize(dir).map(|dir| dir.join(name))
            }
            _ => std::fs::canonicalize(&named),
        };
        return resolved.map_err(|e| UpgradeError::Program {
            path: named,
            source: Arc::new(e),
        });
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(&named))
        .find(|candidate| candidate.is_file())
        .ok_or(UpgradeError::NotInPath(named))
}
