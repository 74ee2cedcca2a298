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
            let port = free_port();
            // Kept for the whole test process, and stopped when it ends.
            let server = Redis::start(port);
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
    pub fn start(port: u16) -> Redis {
        let dir = std::env::temp_dir();
        let child = Command::new("redis-server")
            .args(redis_args(port, &dir))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run redis-server (install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !port_open(port) {
            assert!(
                Instant::now() < deadline,
                "redis-server not listening on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, port }
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
