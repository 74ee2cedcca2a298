//! Ports for the servers a test starts (the proxy, Dovecot, HAProxy, slapd, Redis).
//!
//! A test writes a port into a server's configuration and the server binds it a moment later,
//! in another process. Two things can take the port in between, and both did (issue 16):
//!
//! * **The kernel**, for any program's outgoing connection or `bind(port 0)`: it hands out
//!   ports from `/proc/sys/net/ipv4/ip_local_port_range` (typically 32768–60999). Picking a
//!   port by binding port 0 and letting go of it therefore picks exactly from the range the
//!   kernel keeps handing out. [`free_port`] picks **below that range** instead (10000 up to
//!   its start; above its end when it starts too low), where the kernel never allocates.
//! * **Another test process** (cargo-nextest runs every test as a process of its own, and
//!   other suites may run on the machine at the same time). [`free_port`] **reserves** each
//!   port it hands out: an exclusive `flock` on `$TMPDIR/portcullis-test-ports-UID/PORT` (a
//!   directory private to the user, so that no other account can plant links there), held
//!   until the test process ends (the kernel drops it then, however the process ends, so a
//!   killed test leaves nothing stale behind). A port whose lock another process holds is
//!   skipped; so is one this process handed out already (a second lock on the same file
//!   conflicts too).
//!
//! A reserved port is handed out only if it binds right now on 127.0.0.1, on 0.0.0.0 and on
//! `[::]`, so that a test may also listen on the wildcards, and so that a program outside the
//! test suite listening there (a fixed port, not the kernel's choice) is skipped. What is left
//! is a program that binds a fixed port in that gap between the check and the server's own
//! bind: not something the suite can rule out, and not something seen here.
//!
//! `PORTCULLIS_TEST_PORTS=LOW-HIGH` overrides the range (e.g. on a machine whose ephemeral
//! range covers everything). Where a server under test can bind port 0 itself and say which
//! port it got, that is better still: the proxy logs `Listening on ADDR`, which
//! [`super::Proxy::listening_ports`] reads.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use nix::fcntl::{Flock, FlockArg};

/// The lowest port handed out below the kernel's ephemeral range.
const LOWEST: u16 = 10_000;

/// Returns a loopback TCP port that nothing listens on, that the kernel will not hand to an
/// outgoing connection, and that no other test process (of this or another run) gets while
/// this one lives. See the module's documentation.
pub fn free_port() -> u16 {
    static HELD: Mutex<Vec<Flock<File>>> = Mutex::new(Vec::new());
    let range = test_range();
    let dir = lock_dir();
    let span = u32::from(*range.end()) - u32::from(*range.start()) + 1;
    let first = fastrand::u32(0..span);
    for i in 0..span {
        let port = (u32::from(*range.start()) + (first + i) % span) as u16;
        let Some(lock) = reserve(&dir, port) else {
            continue;
        };
        if bindable(port) {
            HELD.lock().unwrap_or_else(|e| e.into_inner()).push(lock);
            return port;
        }
        // In use by someone outside the suite: the lock goes, the port stays theirs.
    }
    panic!(
        "no free port in {range:?} (ports reserved under {}; set PORTCULLIS_TEST_PORTS=LOW-HIGH)",
        dir.display()
    );
}

/// The ports [`free_port`] chooses from: `PORTCULLIS_TEST_PORTS`, else those below the
/// kernel's ephemeral range, else those above it.
pub fn test_range() -> RangeInclusive<u16> {
    static RANGE: OnceLock<RangeInclusive<u16>> = OnceLock::new();
    RANGE
        .get_or_init(|| {
            if let Ok(text) = std::env::var("PORTCULLIS_TEST_PORTS") {
                let parsed = text
                    .split_once('-')
                    .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
                match parsed {
                    Some((low, high)) if low <= high && low > 0 => return low..=high,
                    _ => panic!("PORTCULLIS_TEST_PORTS={text:?}: want LOW-HIGH"),
                }
            }
            let (low, high) = ephemeral_range();
            if low >= LOWEST + 1000 {
                LOWEST..=low - 1
            } else if high <= u16::MAX - 1000 {
                high + 1..=u16::MAX
            } else {
                panic!(
                    "the kernel's ephemeral port range {low}-{high} leaves no room for test \
                     ports: set PORTCULLIS_TEST_PORTS=LOW-HIGH"
                )
            }
        })
        .clone()
}

/// `/proc/sys/net/ipv4/ip_local_port_range` (Linux's default where it cannot be read).
pub fn ephemeral_range() -> (u16, u16) {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut words = text.split_whitespace().map(|w| w.parse::<u16>().ok());
            Some((words.next()??, words.next()??))
        })
        .unwrap_or((32768, 60999))
}

/// The directory of the per-port lock files, shared by every test process of this user: its
/// own (mode 0700, checked to be a directory it owns, not a link), so that another account
/// cannot plant links in it or lock every port.
fn lock_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        let me = nix::unistd::geteuid().as_raw();
        let dir = std::env::temp_dir().join(format!("portcullis-test-ports-{me}"));
        let _ = fs::DirBuilder::new().mode(0o700).create(&dir);
        let meta = fs::symlink_metadata(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        assert!(
            meta.is_dir() && meta.uid() == me && meta.mode() & 0o022 == 0,
            "{} is not a private directory of this user: remove it",
            dir.display()
        );
        dir
    })
    .clone()
}

/// An exclusive lock on `port`'s file, or None if another holder has it.
fn reserve(dir: &std::path::Path, port: u16) -> Option<Flock<File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(port.to_string());
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    Flock::lock(file, FlockArg::LockExclusiveNonblock).ok()
}

/// True if `port` binds now on 127.0.0.1, 0.0.0.0 and (where there is IPv6) `[::]`.
fn bindable(port: u16) -> bool {
    let v4 = [Ipv4Addr::LOCALHOST, Ipv4Addr::UNSPECIFIED]
        .into_iter()
        .all(|ip| TcpListener::bind(SocketAddr::from((ip, port))).is_ok());
    v4 && match TcpListener::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))) {
        Ok(_) => true,
        Err(e) => {
            e.kind() == io::ErrorKind::AddrNotAvailable
                || e.raw_os_error() == Some(nix::libc::EAFNOSUPPORT)
        }
    }
}
