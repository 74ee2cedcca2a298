//! Debian's HAProxy in front of one or more proxies, sending each a PROXY v2 header
//! (`send-proxy-v2`), round robin: the first connection goes to the first server, the next to
//! the next.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_for_port};

/// A running HAProxy, stopped when dropped.
pub struct HaProxy {
    child: Child,
    /// Where clients connect.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl HaProxy {
    pub fn start(servers: &[u16]) -> HaProxy {
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
        let child = Command::new("/usr/sbin/haproxy")
            .args(["-db", "-f", config.to_str().expect("utf-8 path")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run haproxy (install haproxy)");
        assert!(
            wait_for_port(port, Duration::from_secs(10)),
            "haproxy not listening"
        );
        HaProxy {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
