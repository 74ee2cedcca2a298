//! A private Prometheus server (Debian's `prometheus`) scraping a test's admin endpoint, its
//! HTTP query API, and `promtool` (which comes with it).
//!
//! Prometheus binds `127.0.0.1:0` itself and logs the port it got (`msg="Listening on"
//! address=127.0.0.1:PORT`), so no port is chosen for it. Each one has a directory of its own:
//! its configuration, its log and a fresh TSDB.

use super::*;

use std::fs::File;

/// Said when Prometheus is missing; tests fail with it rather than pass silently.
pub const PROMETHEUS_MISSING: &str =
    "prometheus not installed: run scripts/test.sh (or apt-get install prometheus)";

/// How long Prometheus may take to start (it replays an empty TSDB: well under a second).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Panics with [`PROMETHEUS_MISSING`] unless `prometheus` and `promtool` are installed.
pub fn require_prometheus() {
    let installed = ["prometheus", "promtool"]
        .iter()
        .all(|p| cmd_stdout(p, &["--version"]).is_some());
    assert!(installed, "{PROMETHEUS_MISSING}");
}

/// One scrape target: the admin endpoint, with its bearer token.
pub struct Target<'a> {
    pub job: &'a str,
    pub address: String,
    pub token: &'a str,
}

/// A running Prometheus; killed on drop.
pub struct Prometheus {
    pub port: u16,
    pub dir: PathBuf,
    log: PathBuf,
    child: Child,
    _tmp: tempfile::TempDir,
}

impl Prometheus {
    /// Start Prometheus scraping `target` every `interval` and evaluating `rule_files` as
    /// often.
    pub fn start(target: &Target, interval: &str, rule_files: &[&Path]) -> Prometheus {
        require_prometheus();
        let tmp = tempfile::Builder::new()
            .prefix("portcullis-prometheus-")
            .tempdir()
            .expect("prometheus tempdir");
        let dir = tmp.path().to_path_buf();
        let token = dir.join("token");
        fs::write(&token, target.token).unwrap();
        let rules: String = rule_files
            .iter()
            .map(|p| format!("  - {}\n", p.display()))
            .collect();
        let config = format!(
            "global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n  \
             evaluation_interval: {interval}\nrule_files:\n{rules}scrape_configs:\n  \
             - job_name: {job}\n    authorization:\n      credentials_file: {token}\n    \
             static_configs:\n      - targets: [\"{address}\"]\n",
            job = target.job,
            token = token.display(),
            address = target.address,
        );
        let config_file = dir.join("prometheus.yml");
        fs::write(&config_file, config).unwrap();
        let log = dir.join("prometheus.log");
        let out = File::create(&log).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start prometheus ({e}): {PROMETHEUS_MISSING}"));
        end_with_this_process(child.id());
        let mut prometheus = Prometheus {
            port: 0,
            dir,
            log,
            child,
            _tmp: tmp,
        };
        prometheus.port = prometheus.wait_ready();
        prometheus
    }

    /// The port it logged once it is ready for queries.
    fn wait_ready(&mut self) -> u16 {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let log = self.log_text();
            let port = log
                .lines()
                .filter(|l| l.contains("msg=\"Listening on\""))
                .find_map(|l| {
                    l.split("address=")
                        .nth(1)?
                        .trim()
                        .parse::<SocketAddr>()
                        .ok()
                })
                .map(|a| a.port());
            if let (Some(port), true) = (port, log.contains("Server is ready")) {
                return port;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited ({status}):\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready after {START_TIMEOUT:?}:\n{log}"
            );
            sleep(Duration::from_millis(50));
        }
    }

    /// What Prometheus wrote so far.
    pub fn log_text(&self) -> String {
        read_lossy(&self.log)
    }

    /// `GET path?query` on the HTTP API; the JSON answer's `data` (panics, with the log, on
    /// an error).
    pub fn api(&self, path: &str, params: &[(&str, &str)]) -> serde_json::Value {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("prometheus");
        s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        // HTTP/1.0: the answer is the body up to the end, never chunked.
        write!(s, "GET {path}?{query} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let json: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}?{query}: {e}: {answer}"));
        assert_eq!(
            json["status"],
            "success",
            "{path}?{query}: {json}\nprometheus:\n{}",
            self.log_text()
        );
        json["data"].clone()
    }

    /// The instant vector `promql` evaluates to now.
    pub fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let data = self.api("/api/v1/query", &[("query", promql)]);
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// Evaluate `promql` until its result satisfies `ok` (at most `timeout`); the last result.
    pub fn query_until(
        &self,
        promql: &str,
        timeout: Duration,
        ok: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let result = self.query(promql);
            if ok(&result) || Instant::now() >= deadline {
                return result;
            }
            sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of one sample of an instant vector (`[time, "value"]`).
pub fn value(sample: &serde_json::Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// `promtool ARGS` in `dir`: whether it succeeded, and what it said.
pub fn promtool(dir: &Path, args: &[&str]) -> (bool, String) {
    require_prometheus();
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run promtool ({e}): {PROMETHEUS_MISSING}"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}
