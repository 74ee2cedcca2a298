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
/// How long a successor may take to be ready.
const READY_TIME: Duration = Duration::from_secs(30);

/// A successor that is ready: its process id.
pub struct Successor {
    pub pid: u32,
}

/// Start the binary this process was started as, with `args`, handing it `sockets`; wait
/// until it is ready.
pub async fn hand_over(
    args: &[String],
    sockets: &[(SocketAddr, TcpListener)],
) -> Result<Successor, String> {
    let program = invoked_program()?;
    let dir = std::env::temp_dir().join(format!("portcullis-upgrade-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let notify_path = dir.join("notify");
    let _ = std::fs::remove_file(&notify_path);
    let notify = UnixDatagram::bind(&notify_path)
        .map_err(|e| format!("notification socket {}: {e}", notify_path.display()))?;
    let outcome = start_and_wait(&program, args, sockets, &notify_path, &notify).await;
    let _ = std::fs::remove_file(&notify_path);
    let _ = std::fs::remove_dir(&dir);
    outcome
}

async fn start_and_wait(
    program: &PathBuf,
    args: &[String],
    sockets: &[(SocketAddr, TcpListener)],
    notify_path: &std::path::Path,
    notify: &UnixDatagram,
) -> Result<Successor, String> {
    let mut child = spawn(program, args, sockets, notify_path)?;
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
    tokio::select! {
        ready = tokio::time::timeout(READY_TIME, ready) => match ready {
            Ok(Ok(())) => Ok(Successor { pid }),
            Ok(Err(e)) => Err(format!("notification socket: {e}")),
            Err(_) => {
                let _ = child.kill();
                Err(format!("the new process (pid {pid}) was not ready within {} s", READY_TIME.as_secs()))
            }
        },
        status = exited => Err(format!("the new process (pid {pid}) exited: {status}")),
    }
}

fn spawn(
    program: &PathBuf,
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
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()));
    drop(inheritable);
    child
}

/// The binary on disk as this process was started (after a package upgrade, the new one; the
/// running image may be deleted by then).
fn invoked_program() -> Result<PathBuf, String> {
    let first = std::env::args_os()
        .next()
        .ok_or("no program name in the arguments")?;
    let named = PathBuf::from(&first);
    if named.components().count() > 1 {
        return Ok(named);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(&named))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| format!("{} not found in PATH", named.display()))
}
