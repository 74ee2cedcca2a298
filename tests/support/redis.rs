//! Debian's `redis-server` for the fleet tests: started once per test run by `scripts/test.sh`
//! (`PORTCULLIS_TEST_REDIS` names it), or, when that is not set, privately by the test process
//! that needs it. Each test gives its proxies a key prefix of its own ([`key_prefix`]), so tests
//! share the server without seeing each other's failures and bans.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{free_port, port_open, unique_suffix};

/// The shared store's URL: the run's, or one started for this process.
pub fn redis_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("PORTCULLIS_TEST_REDIS") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            // Kept for the whole test process, and stopped when it ends.
            let server = Redis::start_anywhere();
            let port = server.port;
            super::end_with_this_process(server.child.id());
            std::mem::forget(server);
            format!("redis://127.0.0.1:{port}")
        }
    })
}

/// A key prefix no other test uses.
pub fn key_prefix() -> String {
    format!("test-{}:", unique_suffix())
}

/// A private `redis-server` on `port`, stopped when dropped (and when the test process ends).
pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    /// A server on a port of [`free_port`]'s (three tries, each on a new port); panics with
    /// its own words when it does not come up.
    pub fn start_anywhere() -> Redis {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::try_start(free_port()) {
                Ok(r) => return r,
                Err(e) => failures.push(e),
            }
        }
        panic!(
            "redis-server did not start:\n{}",
            failures.join("\n-----\n")
        );
    }

    /// A server on `port`; panics with its own words when it does not come up.
    pub fn start(port: u16) -> Redis {
        Self::try_start(port).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_start(port: u16) -> Result<Redis, String> {
        let dir = std::env::temp_dir();
        let output = tempfile::NamedTempFile::new().expect("redis output file");
        let out = output.reopen().expect("reopen");
        let mut child = Command::new("redis-server")
            .args(redis_args(port, &dir))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("run redis-server (install redis-server)");
        let said = || std::fs::read_to_string(output.path()).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !port_open(port) {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "redis-server exited ({status}) on port {port}:\n{}",
                    said()
                ));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("redis-server not listening on {port}:\n{}", said()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Redis { child, port })
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throw-away server: loopback only, nothing saved, and gone with its parent.
fn redis_args(port: u16, dir: &Path) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}
