//! Debian's HAProxy in front of one or more proxies, sending each a PROXY v2 header
//! (`send-proxy-v2`), round robin: the first connection goes to the first server, the next to
//! the next.

use std::fs::File;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::{free_port, port_listening};

/// A running HAProxy, stopped when dropped.
pub struct HaProxy {
    child: Child,
    /// Where clients connect.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl HaProxy {
    /// Starts HAProxy in front of `servers`; panics with its own words when it does not come
    /// up (three tries, each on a new port).
    pub fn start(servers: &[u16]) -> HaProxy {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::try_start(servers) {
                Ok(h) => return h,
                Err(e) => failures.push(e),
            }
        }
        panic!("haproxy did not start:\n{}", failures.join("\n-----\n"));
    }

    fn try_start(servers: &[u16]) -> Result<HaProxy, String> {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("haproxy.cfg");
        let mut text = format!(
            "global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 5s\n  \
             timeout client 30s\n  timeout server 30s\n\
             frontend mail\n  bind 127.0.0.1:{port}\n  default_backend fleet\n\
             backend fleet\n  balance roundrobin\n"
        );
        for (n, server) in servers.iter().enumerate() {
            text += &format!("  server p{n} 127.0.0.1:{server} send-proxy-v2\n");
        }
        std::fs::write(&config, text).expect("haproxy.cfg");
        let output = dir.path().join("haproxy.out");
        let out = File::create(&output).expect("haproxy.out");
        let mut child = Command::new("/usr/sbin/haproxy")
            .args(["-db", "-f", config.to_str().expect("utf-8 path")])
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("run haproxy (install haproxy)");
        let said = || std::fs::read_to_string(&output).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(10);
        // Not by connecting: a probe connection would take the first server's turn.
        while !port_listening(port) {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "haproxy exited ({status}) on port {port}:\n{}",
                    said()
                ));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("haproxy not listening on {port}:\n{}", said()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(HaProxy {
            child,
            port,
            _dir: dir,
        })
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
