//! Debian's `pebble` ACME test server and its `pebble-challtestsrv`, used as pebble's DNS
//! server: every name resolves to 127.0.0.1 unless a test says otherwise
//! ([`ChallTestSrv::point`]). Pebble validates on the ports a test names (its `httpPort` and
//! `tlsPort`: the proxy's listeners), serves its API with the test PKI's `localhost`
//! certificate (so `[acme] ca_file` is the test CA), and hands out its issuing root at
//! `/roots/0` of its management port. Neither can bind port 0 and say which it got, so both
//! take ports from [`super::ports::free_port`] and try again on a bind failure.

use super::ports::free_port;
use super::*;

pub const PEBBLE_MISSING: &str =
    "pebble not installed: apt-get install pebble (scripts/test.sh installs it)";

/// Binding attempts before a start gives up.
const ATTEMPTS: usize = 5;

/// Panics with [`PEBBLE_MISSING`] unless pebble and its challenge server are installed.
pub fn require_pebble() {
    for program in ["/usr/bin/pebble", "/usr/bin/pebble-challtestsrv"] {
        assert!(Path::new(program).exists(), "{PEBBLE_MISSING}");
    }
}

/// A child process with its output in `log`; killed when dropped.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `program` with `args` (and `env`), its output in `log`; wait until the log holds
/// every one of `ready`. `None` when it exited saying that an address was taken (try other
/// ports); a panic with its log for any other end.
fn start(
    program: &str,
    args: &[String],
    env: &[(&str, &str)],
    log: &Path,
    ready: &[&str],
) -> Option<Running> {
    let file = fs::File::create(log).expect("create log");
    let child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("clone log"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}; {PEBBLE_MISSING}"));
    let mut running = Running {
        child,
        log: log.to_path_buf(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = read_lossy(log);
        if ready.iter().all(|r| text.contains(r)) {
            return Some(running);
        }
        if let Ok(Some(status)) = running.child.try_wait() {
            if text.contains("address already in use") {
                return None;
            }
            panic!("{program} exited ({status}):\n{text}");
        }
        assert!(
            Instant::now() < deadline,
            "{program} not ready after 20 s:\n{text}"
        );
        sleep(Duration::from_millis(25));
    }
}

/// pebble-challtestsrv as a DNS server alone (its challenge answerers off).
pub struct ChallTestSrv {
    pub dns_port: u16,
    pub management_port: u16,
    _running: Running,
}

impl ChallTestSrv {
    pub fn start(dir: &Path) -> ChallTestSrv {
        for _ in 0..ATTEMPTS {
            let (dns_port, management_port) = (free_port(), free_port());
            let args: Vec<String> = [
                "-dns01",
                &format!("127.0.0.1:{dns_port}"),
                "-management",
                &format!("127.0.0.1:{management_port}"),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-defaultIPv6",
                "",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let log = dir.join("challtestsrv.log");
            let ready = ["Starting management server"];
            if let Some(running) = start("pebble-challtestsrv", &args, &[], &log, &ready) {
                assert!(wait_for_port(management_port, Duration::from_secs(10)));
                return ChallTestSrv {
                    dns_port,
                    management_port,
                    _running: running,
                };
            }
        }
        panic!("pebble-challtestsrv: no free ports in {ATTEMPTS} attempts");
    }

    /// Make `host` resolve to `address` alone (A record).
    pub fn point(&self, host: &str, address: &str) {
        let body = format!("{{\"host\":\"{host}.\",\"addresses\":[\"{address}\"]}}");
        curl(&[
            "-sf",
            "-d",
            &body,
            &format!("http://127.0.0.1:{}/add-a", self.management_port),
        ]);
    }

    pub fn log(&self) -> String {
        read_lossy(&self._running.log)
    }
}

/// What pebble validates against and how long its certificates last.
#[derive(Clone, Copy)]
pub struct PebbleSettings {
    /// Where pebble connects for http-01.
    pub http_port: u16,
    /// Where pebble connects for tls-alpn-01.
    pub tls_port: u16,
    /// Each certificate's lifetime.
    pub validity_seconds: u64,
}

pub struct Pebble {
    /// The ACME API's port (its directory: [`Pebble::directory`]).
    pub port: u16,
    pub management_port: u16,
    dir: PathBuf,
    settings: PebbleSettings,
    dns_port: u16,
    running: Option<Running>,
}

impl Pebble {
    /// Start pebble on `port` (any free one when `None`), using `dns` as its resolver.
    /// `None` when `port` was given and is taken.
    pub fn start(
        dir: &Path,
        dns: &ChallTestSrv,
        port: Option<u16>,
        settings: PebbleSettings,
    ) -> Option<Pebble> {
        let mut pebble = Pebble {
            port: port.unwrap_or_else(free_port),
            management_port: 0,
            dir: dir.to_path_buf(),
            settings,
            dns_port: dns.dns_port,
            running: None,
        };
        for _ in 0..ATTEMPTS {
            pebble.management_port = free_port();
            if pebble.run() {
                return Some(pebble);
            }
            if port.is_some() {
                return None;
            }
            pebble.port = free_port();
        }
        panic!("pebble: no free ports in {ATTEMPTS} attempts");
    }

    /// Start it (again) on its ports; false when one is taken.
    fn run(&mut self) -> bool {
        let certs = certs();
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{}", self.port),
                "managementListenAddress": format!("127.0.0.1:{}", self.management_port),
                "certificate": certs.cert,
                "privateKey": certs.key,
                "httpPort": self.settings.http_port,
                "tlsPort": self.settings.tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "certificateValidityPeriod": self.settings.validity_seconds,
            }
        });
        let path = self.dir.join("pebble.json");
        fs::write(&path, config.to_string()).expect("write pebble config");
        let args = [
            "-config".to_string(),
            path.display().to_string(),
            "-dnsserver".into(),
            format!("127.0.0.1:{}", self.dns_port),
        ];
        // No random sleeps, no refused nonces, a new validation for every order.
        let env = [
            ("PEBBLE_VA_NOSLEEP", "1"),
            ("PEBBLE_WFE_NONCEREJECT", "0"),
            ("PEBBLE_AUTHZREUSE", "0"),
        ];
        let log = self.dir.join("pebble.log");
        let ready = ["ACME directory available at"];
        self.running = start("pebble", &args, &env, &log, &ready);
        self.running.is_some()
    }

    /// Stop it (its accounts and CA are gone with it).
    pub fn stop(&mut self) {
        self.running = None;
    }

    /// Start it again on the same ports: a new CA, no accounts.
    pub fn restart(&mut self) {
        assert!(self.run(), "pebble: its port was taken while it was down");
    }

    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// The root of the chains pebble issues now, written to `path`.
    pub fn save_root(&self, path: &Path) {
        let url = format!("https://127.0.0.1:{}/roots/0", self.management_port);
        let ca = certs().ca.display().to_string();
        let pem = curl(&["-sf", "--cacert", &ca, &url]);
        assert!(pem.contains("BEGIN CERTIFICATE"), "pebble's root: {pem}");
        fs::write(path, pem).expect("write root");
    }

    pub fn log(&self) -> String {
        read_lossy(&self.dir.join("pebble.log"))
    }
}

/// `curl ARGS`: its output; a panic with its error when it fails.
fn curl(args: &[&str]) -> String {
    let out = Command::new("curl").args(args).output().expect("run curl");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
