//! The `portcullis` binary under test, its output captured in a log file.

use super::*;

/// Path of the `portcullis` binary built for these tests.
pub fn portcullis_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_portcullis"))
}

/// Runs `portcullis ARGS` to completion (for `check` etc.), capturing its output.
pub fn run_portcullis(args: &[&str]) -> Output {
    Command::new(portcullis_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run portcullis")
}

/// A running `portcullis` child; stdout and stderr are appended to `log`. Drop kills it.
pub struct Proxy {
    /// File receiving the child's stdout and stderr.
    pub log: PathBuf,
    /// Private temp dir (config file lives here; tests may put other files here too).
    pub dir: PathBuf,
    /// The config file written by [`Proxy::start_toml`] (None for `start_args`).
    pub config: Option<PathBuf>,
    child: Child,
    exited: Option<ExitStatus>,
    /// Log files the proxy was told to write to (`-F /path`, `destination = "/path"`, ...):
    /// where its own words about a failed start go, shown beside its output when it fails.
    named_logs: Vec<PathBuf>,
    _tmp: tempfile::TempDir,
}

/// The log files a proxy started with `args` writes to besides its standard output: the value
/// of Perdition's `-F`/`--log_facility` when it is a path, and a `destination`/`log_facility`
/// path in the configuration file it reads (`--config`, `-f`, `--config_file`).
fn named_logs(args: &[String]) -> Vec<PathBuf> {
    let is_path = |v: &str| v.starts_with('/');
    let mut logs = Vec::new();
    for pair in args.windows(2) {
        let (flag, value) = (pair[0].as_str(), pair[1].as_str());
        match flag {
            "-F" | "--log_facility" if is_path(value) => logs.push(PathBuf::from(value)),
            "--config" | "-c" | "-f" | "--config_file" if !value.is_empty() => {
                for line in read_lossy(Path::new(value)).lines() {
                    let line = line.trim();
                    let (key, rest) = line.split_once(['=', ' ', '\t']).unwrap_or((line, ""));
                    let rest = rest.trim_start_matches(['=', ' ', '\t']).trim();
                    let rest = rest.trim_matches('"');
                    if matches!(key.trim(), "destination" | "log_facility" | "F") && is_path(rest) {
                        logs.push(PathBuf::from(rest));
                    }
                }
            }
            _ => {}
        }
    }
    logs
}

fn listening_logged(log: &str, port: u16) -> bool {
    log.lines()
        .filter(|l| l.to_ascii_lowercase().contains("listening on"))
        .any(|l| {
            let pat = format!(":{port}");
            l.match_indices(&pat).any(|(i, _)| {
                !l[i + pat.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_digit())
            })
        })
}

/// The ports of the `Listening on ADDR protocol=...` lines in a proxy's log.
fn listening_ports_in(log: &str) -> Vec<u16> {
    log.lines()
        .filter_map(|l| l.split_once("Listening on ")?.1.split_whitespace().next())
        .filter_map(|addr| addr.parse::<SocketAddr>().ok())
        .map(|addr| addr.port())
        .collect()
}

impl Proxy {
    /// Writes `toml` to a temp file and starts `portcullis run --config FILE`.
    /// Waits until every `wait_ports` entry is listening (a "listening on ...:PORT" log line,
    /// or else a successful TCP connect); panics with the log if the child exits or 10 s pass.
    pub fn start_toml(toml: &str, wait_ports: &[u16]) -> Proxy {
        let tmp = Self::tempdir();
        let config = tmp.path().join("portcullis.toml");
        fs::write(&config, toml).expect("write proxy config");
        let args = vec![
            "run".to_string(),
            "--config".to_string(),
            config.display().to_string(),
        ];
        Self::spawn(tmp, Some(config), &args, wait_ports)
    }

    /// Starts `portcullis run` with `toml`, whose listeners bind port 0 (the kernel picks, and
    /// nothing can take the port between the choice and the bind); waits for `listeners`
    /// `Listening on` lines and returns the proxy with their ports, in the order logged.
    pub fn start_toml_anywhere(toml: &str, listeners: usize) -> (Proxy, Vec<u16>) {
        let mut proxy = Self::start_toml(toml, &[]);
        let deadline = Instant::now() + PROXY_START_TIMEOUT;
        loop {
            let ports = proxy.listening_ports();
            if ports.len() >= listeners {
                return (proxy, ports);
            }
            if let Ok(Some(status)) = proxy.child.try_wait() {
                proxy.exited = Some(status);
                panic!(
                    "portcullis exited early ({status}); {}",
                    proxy.everything_logged()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "portcullis: {listeners} listeners not up after {PROXY_START_TIMEOUT:?}; {}",
                    proxy.everything_logged()
                );
            }
            sleep(Duration::from_millis(25));
        }
    }

    /// Starts `portcullis ARGS` (ARGS passed verbatim, e.g. `["perdition", "-f", FILE, ...]`)
    /// and waits as [`Proxy::start_toml`] does.
    pub fn start_args(args: &[String], wait_ports: &[u16]) -> Proxy {
        Self::spawn(Self::tempdir(), None, args, wait_ports)
    }

    /// As [`Proxy::start_args`], with `env` set for the child (it wins over the harness's own
    /// `PORTCULLIS_PERDITION_ROOT`).
    pub fn start_args_env(args: &[String], wait_ports: &[u16], env: &[(&str, &str)]) -> Proxy {
        guard_off_unless_configured(args);
        let tmp = Self::tempdir();
        let mut program = Command::new(portcullis_bin());
        program.env(PERDITION_ROOT_ENV, tmp.path());
        program.envs(env.iter().copied());
        Self::spawn_command(tmp, None, program, args, wait_ports)
    }

    /// Starts `program ARGS` (a link to portcullis named like one of Perdition's programs)
    /// with `env`, and waits as [`Proxy::start_toml`] does.
    pub fn start_program(
        program: &Path,
        args: &[String],
        wait_ports: &[u16],
        env: &[(&str, &str)],
    ) -> Proxy {
        let tmp = Self::tempdir();
        let mut command = Command::new(program);
        command.env(PERDITION_ROOT_ENV, tmp.path());
        command.envs(env.iter().copied());
        Self::spawn_command(tmp, None, command, args, wait_ports)
    }

    fn tempdir() -> tempfile::TempDir {
        let tmp = tempfile::Builder::new()
            .prefix("portcullis-proxy-")
            .tempdir()
            .expect("proxy tempdir");
        let _ = fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755));
        tmp
    }

    /// As [`Proxy::start_toml`], with `command` (its program and arguments) put before
    /// `portcullis run --config FILE` and `env` set (a service manager's stand-in).
    pub fn start_toml_wrapped(
        toml: &str,
        wait_ports: &[u16],
        command: &[&str],
        env: &[(&str, &str)],
    ) -> Proxy {
        let tmp = Self::tempdir();
        let config = tmp.path().join("portcullis.toml");
        fs::write(&config, toml).expect("write proxy config");
        let mut args: Vec<String> = command[1..].iter().map(|s| s.to_string()).collect();
        args.push(portcullis_bin().display().to_string());
        args.extend([
            "run".into(),
            "--config".into(),
            config.display().to_string(),
        ]);
        guard_off_unless_configured_in(&config);
        let mut program = Command::new(command[0]);
        program.envs(env.iter().copied());
        Self::spawn_command(tmp, Some(config), program, &args, wait_ports)
    }

    fn spawn(
        tmp: tempfile::TempDir,
        config: Option<PathBuf>,
        args: &[String],
        wait_ports: &[u16],
    ) -> Proxy {
        guard_off_unless_configured(args);
        // Perdition mode's stand-in for `/`: the proxy's own directory, so that a test reads
        // none of the machine's /etc/perdition and tests side by side do not take each
        // other's default pid file.
        let mut program = Command::new(portcullis_bin());
        program.env(PERDITION_ROOT_ENV, tmp.path());
        Self::spawn_command(tmp, config, program, args, wait_ports)
    }

    fn spawn_command(
        tmp: tempfile::TempDir,
        config: Option<PathBuf>,
        mut program: Command,
        args: &[String],
        wait_ports: &[u16],
    ) -> Proxy {
        let log = tmp.path().join("portcullis.log");
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open proxy log");
        let child = program
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log fd"))
            .stderr(file)
            .spawn()
            .expect("spawn portcullis");
        let mut proxy = Proxy {
            log,
            dir: tmp.path().to_path_buf(),
            config,
            child,
            exited: None,
            named_logs: named_logs(args),
            _tmp: tmp,
        };
        let start = Instant::now();
        let deadline = start + PROXY_START_TIMEOUT;
        let mut pending: Vec<u16> = wait_ports.to_vec();
        while !pending.is_empty() {
            if let Ok(Some(status)) = proxy.child.try_wait() {
                proxy.exited = Some(status);
                panic!(
                    "portcullis {args:?} exited early ({status}); {}",
                    proxy.everything_logged()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "portcullis {args:?}: ports {pending:?} not listening after \
                     {PROXY_START_TIMEOUT:?}; {}",
                    proxy.everything_logged()
                );
            }
            let text = read_lossy(&proxy.log);
            // Prefer the "listening on" log line (no probe connection the proxy would see);
            // fall back to connecting after 1 s (log going to a file or syslog).
            let probe = start.elapsed() > Duration::from_secs(1);
            pending.retain(|p| !(listening_logged(&text, *p) || probe && port_open(*p)));
            if !pending.is_empty() {
                sleep(Duration::from_millis(25));
            }
        }
        proxy
    }

    /// Everything the child wrote to stdout/stderr so far, once the log has settled: the proxy
    /// writes its log from a thread of its own, a moment after the client got its answer.
    pub fn log_text(&self) -> String {
        settled(&self.log)
    }

    /// The child's output and every log file it was told to write to, each under its name:
    /// what a failure about this proxy shows.
    pub fn everything_logged(&self) -> String {
        let mut text = format!("output ({}):\n{}", self.log.display(), self.log_text());
        for path in &self.named_logs {
            text += &format!("\nlog file {}:\n{}", path.display(), settled(path));
        }
        text
    }

    /// The ports the proxy said it listens on (its `Listening on ADDR protocol=...` lines), in
    /// the order it said so: how a test learns the port of a listener bound to port 0.
    pub fn listening_ports(&self) -> Vec<u16> {
        listening_ports_in(&read_lossy(&self.log))
    }

    /// Polls the log until it contains `needle`; returns false after `timeout`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if read_lossy(&self.log).contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            sleep(Duration::from_millis(25));
        }
    }

    /// Process id of the child.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name ("TERM", "HUP", "INT", ...) with the `kill` command.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {} failed", self.pid());
    }

    /// Sends SIGTERM.
    pub fn signal_term(&self) {
        self.signal("TERM");
    }

    /// Waits up to `timeout` for the child to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exited.is_some() {
            return self.exited;
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `portcullis check --offline` accepts `toml` (written to `dir/imported.toml`); the refusal
/// and the file are the failure message.
#[allow(dead_code)]
pub fn assert_config_checked(dir: &std::path::Path, toml: &str) {
    let path = dir.join("imported.toml");
    std::fs::write(&path, toml).unwrap();
    let out = run_portcullis(&[
        "check",
        "--offline",
        "--config",
        &path.display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "check refuses the configuration:\n{}\n{toml}",
        String::from_utf8_lossy(&out.stderr)
    );
}
