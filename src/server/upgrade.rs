//! Upgrading the binary without refusing a connection (SIGUSR2, `portcullis upgrade`), for
//! starts without systemd (under systemd, socket activation does the same: the sockets stay
//! with systemd across `systemctl restart`). As nginx does: this process starts the binary on
//! disk again with the same arguments, hands it its listening sockets (inherited, named in
//! `PORTCULLIS_INHERITED_FDS`), and waits for it to say it is ready (`READY=1` on a
//! notification socket of its own, the systemd protocol); then it stops accepting and drains
//! like at SIGTERM. A successor that fails to start changes nothing.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use tokio::net::UnixDatagram;

/// Names the inherited sockets' descriptor numbers for the successor.
pub const INHERITED_FDS: &str = "PORTCULLIS_INHERITED_FDS";
/// Tells a successor that its `NOTIFY_SOCKET` is its predecessor's, to be forgotten once it
/// said READY (the path is gone then, and someone else could take it).
pub const SUCCESSOR: &str = "PORTCULLIS_SUCCESSOR";
/// How long a successor may take to be ready.
const READY_TIME: Duration = Duration::from_secs(30);
/// How long a successor that said it is ready must stay up before this process lets go: one
/// that dies at once would leave nobody accepting.
const SETTLE_TIME: Duration = Duration::from_secs(1);

/// A successor that is ready: its process id.
pub struct Successor {
    pub pid: u32,
}

/// Start the binary this process was started as, with `args`, handing it `sockets`; wait
/// until it is ready.
pub async fn hand_over(
    program: &std::path::Path,
    args: &[String],
    sockets: &[(SocketAddr, TcpListener)],
) -> Result<Successor, String> {
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
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let notify_path = dir.join("notify");
    let notify = UnixDatagram::bind(&notify_path)
        .map_err(|e| format!("notification socket {}: {e}", notify_path.display()))?;
    let outcome = start_and_wait(program, args, sockets, &notify_path, &notify).await;
    let _ = std::fs::remove_file(&notify_path);
    let _ = std::fs::remove_dir(&dir);
    outcome
}

async fn start_and_wait(
    program: &std::path::Path,
    args: &[String],
    sockets: &[(SocketAddr, TcpListener)],
    notify_path: &std::path::Path,
    notify: &UnixDatagram,
) -> Result<Successor, String> {
    let mut child = spawn(program, args, sockets, notify_path)?;
    let pid = child.id();
    let outcome = wait_until_settled(&mut child, notify).await;
    if outcome.is_err() {
        // Not to be left half started, nor unreaped.
        let _ = child.kill();
        let _ = child.wait();
    }
    outcome.map(|()| Successor { pid })
}

/// READY from the child, and the child still up a moment later.
async fn wait_until_settled(child: &mut Child, notify: &UnixDatagram) -> Result<(), String> {
    let pid = child.id();
    let ready = async {
        let mut buf = [0u8; 4096];
        loop {
            let n = notify.recv(&mut buf).await.map_err(|e| e.to_string())?;
            let message = String::from_utf8_lossy(&buf[..n]);
            if message.lines().any(|l| l == "READY=1") {
                return Ok::<(), String>(());
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
            Ok(Err(e)) => return Err(format!("notification socket: {e}")),
            Err(_) => {
                return Err(format!(
                    "the new process (pid {pid}) was not ready within {} s",
                    READY_TIME.as_secs()
                ))
            }
        },
        status = &mut exited => return Err(format!("the new process (pid {pid}) exited: {status}")),
    }
    tokio::select! {
        _ = tokio::time::sleep(SETTLE_TIME) => Ok(()),
        status = &mut exited => Err(format!(
            "the new process (pid {pid}) exited right after it was ready: {status}"
        )),
    }
}

fn spawn(
    program: &std::path::Path,
    args: &[String],
    sockets: &[(SocketAddr, TcpListener)],
    notify_path: &std::path::Path,
) -> Result<Child, String> {
    // Copies that the child inherits (the originals stay close-on-exec); closed here once it
    // has started.
    let mut inheritable = Vec::new();
    for (address, socket) in sockets {
        let copy = socket
            .try_clone()
            .map_err(|e| format!("socket {address}: {e}"))?;
        fcntl(&copy, FcntlArg::F_SETFD(FdFlag::empty()))
            .map_err(|e| format!("socket {address}: {e}"))?;
        inheritable.push(copy);
    }
    let numbers: Vec<String> = inheritable
        .iter()
        .map(|s| s.as_raw_fd().to_string())
        .collect();
    let child = Command::new(program)
        .args(args)
        .env(INHERITED_FDS, numbers.join(","))
        .env("NOTIFY_SOCKET", notify_path)
        .env(SUCCESSOR, "1")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()));
    drop(inheritable);
    child
}

/// The binary on disk as this process was started, as an absolute path found once at start
/// (after a package upgrade it holds the new binary; the running image may be deleted by
/// then). Relative PATH entries are not searched: they depend on the working directory.
pub fn invoked_program() -> Result<PathBuf, String> {
    let first = std::env::args_os()
        .next()
        .ok_or("no program name in the arguments")?;
    let named = PathBuf::from(&first);
    let found = if named.components().count() > 1 {
        // The directory resolved, the name kept: started through a link named like one of
        // Perdition's programs (perdition.imaps), the successor must be started by that name.
        let resolved = match (named.parent(), named.file_name()) {
            (Some(dir), Some(name)) if !dir.as_os_str().is_empty() => {
                std::fs::canonicalize(dir).map(|dir| dir.join(name))
            }
            _ => std::fs::canonicalize(&named),
        };
        resolved.map_err(|e| format!("{}: {e}", named.display()))?
    } else {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .filter(|dir| dir.is_absolute())
            .map(|dir| dir.join(&named))
            .find(|candidate| candidate.is_file())
            .ok_or_else(|| format!("{} not found in PATH", named.display()))?
    };
    Ok(found)
}
