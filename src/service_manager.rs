//! How the process fits its service manager: readiness, reloads, stopping and a status line
//! told to systemd (`Type=notify`), listening sockets systemd passes in (socket activation),
//! and privileges dropped once every socket is bound (`[process] user`/`group`, as Perdition
//! has). Without systemd the notifications are no-ops.

use std::net::SocketAddr;

use std::sync::atomic::{AtomicBool, Ordering};

use sd_notify::NotifyState;

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
    let successor = std::env::var_os(crate::server::upgrade::SUCCESSOR).is_some();
    std::env::var_os("INVOCATION_ID").is_some()
        || (std::env::var_os("NOTIFY_SOCKET").is_some() && !successor)
}

/// Tell systemd the service is up (after every listener is bound).
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
    if std::env::var_os(crate::server::upgrade::SUCCESSOR).is_some() {
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

/// Listening sockets passed in by systemd (`LISTEN_FDS`, a `.socket` unit) or by a predecessor
/// handing over (a binary upgrade), by address. Read
/// once, at start, before any thread exists (it clears the variables so that children do not
/// see them).
pub fn inherited_sockets() -> Result<Vec<(SocketAddr, std::net::TcpListener)>, String> {
    let mut sockets = Vec::new();
    // From a predecessor handing over (`server/upgrade.rs`): descriptor numbers that need not
    // follow each other, each taken through the systemd protocol's reader one at a time.
    if let Ok(numbers) = std::env::var(crate::server::upgrade::INHERITED_FDS) {
        std::env::remove_var(crate::server::upgrade::INHERITED_FDS);
        for number in numbers.split(',').filter(|n| !n.is_empty()) {
            let fd: u32 = number
                .parse()
                .map_err(|_| format!("inherited socket {number:?} is not a descriptor"))?;
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
    i: usize,
) -> Result<(SocketAddr, std::net::TcpListener), String> {
    let socket = fds
        .take_tcp_listener(i)
        .map_err(|e| format!("socket {i} passed in: {e}"))?
        .ok_or_else(|| format!("socket {i} passed in is not a TCP listener"))?;
    let address = socket
        .local_addr()
        .map_err(|e| format!("socket {i} passed in: {e}"))?;
    socket
        .set_nonblocking(true)
        .map_err(|e| format!("socket {address} passed in: {e}"))?;
    Ok((address, socket))
}

/// Become `user` (and `group`, else the user's own) once the sockets are bound: the rest of
/// the process's life runs without root. Only root can; anyone else is told so, unless they
/// already are that user.
pub fn drop_privileges(user: &str, group: Option<&str>) -> Result<(), String> {
    use nix::unistd::{getuid, initgroups, setgid, setuid, Uid};
    let (uid, gid) = account(user, group)?;
    if getuid() == uid && nix::unistd::getgid() == gid {
        return Ok(());
    }
    if !getuid().is_root() {
        return Err(format!(
            "cannot become user {user}: only root can (running as uid {})",
            getuid()
        ));
    }
    let name = std::ffi::CString::new(user).map_err(|_| format!("user {user:?}"))?;
    initgroups(&name, gid).map_err(|e| format!("supplementary groups of {user}: {e}"))?;
    setgid(gid).map_err(|e| format!("group {gid}: {e}"))?;
    setuid(uid).map_err(|e| format!("user {user}: {e}"))?;
    // A process that could become root again has not dropped anything.
    if setuid(Uid::from_raw(0)).is_ok() {
        return Err("still able to become root after dropping privileges".into());
    }
    Ok(())
}

/// The ids of `user` and of `group` (else the user's own group): whom the process becomes
/// ([`drop_privileges`]), and who gets what it makes before (the pid file's directory).
pub fn account(
    user: &str,
    group: Option<&str>,
) -> Result<(nix::unistd::Uid, nix::unistd::Gid), String> {
    use nix::unistd::{Group, User};
    let account = User::from_name(user)
        .map_err(|e| format!("user {user}: {e}"))?
        .ok_or_else(|| format!("no user {user}"))?;
    let gid = match group {
        Some(name) => {
            Group::from_name(name)
                .map_err(|e| format!("group {name}: {e}"))?
                .ok_or_else(|| format!("no group {name}"))?
                .gid
        }
        None => account.gid,
    };
    Ok((account.uid, gid))
}
