//! How the process fits its service manager: readiness, reloads, stopping and a status line
//! told to systemd (`Type=notify`), listening sockets systemd passes in (socket activation),
//! and privileges dropped once every socket is bound (`[process] user`/`group`, as Perdition
//! has). Without systemd the notifications are no-ops.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

/// Names the inherited sockets' descriptor numbers for a successor (a binary upgrade,
/// `server/control.rs`).
pub const INHERITED_FDS: &str = "PORTCULLIS_INHERITED_FDS";
/// Tells a successor that its `NOTIFY_SOCKET` is its predecessor's, to be forgotten once it
/// said READY (the path is gone then, and someone else could take it).
pub const SUCCESSOR: &str = "PORTCULLIS_SUCCESSOR";

/// A successor's notifications went to its predecessor, which only waits for READY: after
/// it, nothing more is sent (the predecessor's socket is gone, and its path could be anyone's).
static SILENT: AtomicBool = AtomicBool::new(false);

fn notify(states: &[NotifyState]) {
    if !SILENT.load(Ordering::Relaxed) {
        let _ = sd_notify::notify(false, states);
    }
}

/// Whether this process was started by systemd (its notifications and cgroup are systemd's),
/// and not by a predecessor handing over.
pub fn under_systemd() -> bool {
    let successor = std::env::var_os(SUCCESSOR).is_some();
    std::env::var_os("INVOCATION_ID").is_some()
        || (std::env::var_os("NOTIFY_SOCKET").is_some() && !successor)
}

/// Tell systemd the service is up (after every listener is bound).
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
    if std::env::var_os(SUCCESSOR).is_some() {
        SILENT.store(true, Ordering::Relaxed);
    }
}

/// A reload starts (systemd ≥ 253 wants the monotonic time with it).
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    notify(&states);
}

/// Shutdown has begun.
pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// The line `systemctl status` shows.
pub fn status(text: &str) {
    notify(&[NotifyState::Status(text)]);
}

/// The status line `systemctl status` shows, kept current from `now` (the live sessions).
pub async fn report_status(now: impl Fn() -> String) {
    let period = Duration::from_secs(10);
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        every.tick().await;
        status(&now());
    }
}

/// A listening socket passed in that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum InheritedSocketsError {
    #[error("inherited socket {0:?} is not a descriptor")]
    NotADescriptor(String),
    #[error("socket {index} passed in: {source}")]
    Unusable {
        index: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("socket {0} passed in is not a TCP listener")]
    NotTcp(usize),
    #[error("socket {address} passed in: {source}")]
    Blocking {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Listening sockets passed in by systemd (`LISTEN_FDS`, a `.socket` unit) or by a predecessor
/// handing over (a binary upgrade), by address. Read
/// once, at start, before any thread exists (it clears the variables so that children do not
/// see them).
pub fn inherited_sockets() -> Result<Vec<(SocketAddr, std::net::TcpListener)>, InheritedSocketsError>
{
    let mut sockets = Vec::new();
    // From a predecessor handing over (`server/control.rs`): descriptor numbers that need not
    // follow each other, each taken through the systemd protocol's reader one at a time.
    if let Ok(numbers) = std::env::var(INHERITED_FDS) {
        std::env::remove_var(INHERITED_FDS);
        for number in numbers.split(',').filter(|n| !n.is_empty()) {
            let fd: u32 = number
                .parse()
                .map_err(|_| InheritedSocketsError::NotADescriptor(number.to_string()))?;
            std::env::set_var("LISTEN_FDS", "1");
            std::env::set_var("LISTEN_FDS_FIRST_FD", fd.to_string());
            std::env::remove_var("LISTEN_PID");
            let mut one = listenfd::ListenFd::from_env();
            std::env::remove_var("LISTEN_FDS_FIRST_FD");
            sockets.push(taken(&mut one, 0)?);
        }
        return Ok(sockets);
    }
    let mut fds = listenfd::ListenFd::from_env();
    for i in 0..fds.len() {
        sockets.push(taken(&mut fds, i)?);
    }
    Ok(sockets)
}

fn taken(
    fds: &mut listenfd::ListenFd,
    index: usize,
) -> Result<(SocketAddr, std::net::TcpListener), InheritedSocketsError> {
    let unusable = |source| InheritedSocketsError::Unusable { index, source };
    let socket = fds
        .take_tcp_listener(index)
        .map_err(unusable)?
        .ok_or(InheritedSocketsError::NotTcp(index))?;
    let address = socket.local_addr().map_err(unusable)?;
    socket
        .set_nonblocking(true)
        .map_err(|source| InheritedSocketsError::Blocking { address, source })?;
    Ok((address, socket))
}

/// Why the process could not become the configured user.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error("cannot become user {user}: only root can (running as uid {uid})")]
    NotRoot { user: String, uid: nix::unistd::Uid },
    #[error("user {0:?}")]
    BadName(String),
    #[error("supplementary groups of {user}: {source}")]
    Groups {
        user: String,
        #[source]
        source: nix::Error,
    },
    #[error("group {gid}: {source}")]
    Group {
        gid: nix::unistd::Gid,
        #[source]
        source: nix::Error,
    },
    #[error("user {user}: {source}")]
    User {
        user: String,
        #[source]
        source: nix::Error,
    },
    #[error("still able to become root after dropping privileges")]
    StillRoot,
}

/// Become `user` (and `group`, else the user's own) once the sockets are bound: the rest of
/// the process's life runs without root. Only root can; anyone else is told so, unless they
/// already are that user.
pub fn drop_privileges(user: &str, group: Option<&str>) -> Result<(), PrivilegeError> {
    use nix::unistd::{getuid, initgroups, setgid, setuid, Uid};
    let (uid, gid) = account(user, group)?;
    if getuid() == uid && nix::unistd::getgid() == gid {
        return Ok(());
    }
    if !getuid().is_root() {
        return Err(PrivilegeError::NotRoot {
            user: user.to_string(),
            uid: getuid(),
        });
    }
    let name = std::ffi::CString::new(user).map_err(|_| PrivilegeError::BadName(user.into()))?;
    initgroups(&name, gid).map_err(|source| PrivilegeError::Groups {
        user: user.into(),
        source,
    })?;
    setgid(gid).map_err(|source| PrivilegeError::Group { gid, source })?;
    setuid(uid).map_err(|source| PrivilegeError::User {
        user: user.into(),
        source,
    })?;
    // A process that could become root again has not dropped anything.
    if setuid(Uid::from_raw(0)).is_ok() {
        return Err(PrivilegeError::StillRoot);
    }
    Ok(())
}

/// A user or group that cannot be looked up.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("user {user}: {source}")]
    UserLookup {
        user: String,
        #[source]
        source: nix::Error,
    },
    #[error("no user {0}")]
    NoUser(String),
    #[error("group {group}: {source}")]
    GroupLookup {
        group: String,
        #[source]
        source: nix::Error,
    },
    #[error("no group {0}")]
    NoGroup(String),
}

/// The ids of `user` and of `group` (else the user's own group): whom the process becomes
/// ([`drop_privileges`]), and who gets what it makes before (the pid file's directory).
pub fn account(
    user: &str,
    group: Option<&str>,
) -> Result<(nix::unistd::Uid, nix::unistd::Gid), AccountError> {
    use nix::unistd::{Group, User};
    let account = User::from_name(user)
        .map_err(|source| AccountError::UserLookup {
            user: user.into(),
            source,
        })?
        .ok_or_else(|| AccountError::NoUser(user.into()))?;
    let gid = match group {
        Some(name) => {
            Group::from_name(name)
                .map_err(|source| AccountError::GroupLookup {
                    group: name.into(),
                    source,
                })?
                .ok_or_else(|| AccountError::NoGroup(name.into()))?
                .gid
        }
        None => account.gid,
    };
    Ok((account.uid, gid))
}
