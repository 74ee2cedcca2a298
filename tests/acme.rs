//! ACME against Debian's pebble: a listener with `certificates = "acme"` obtains its
//! certificate (tls-alpn-01, answered by the listener itself; http-01, by the answerer on
//! `http_listen`), renews it in place at two thirds of its lifetime, and keeps serving the
//! one it has when a challenge fails or the CA is down, retrying until it is back.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use support::admin::{get, sample};
use support::pebble::{require_pebble, ChallTestSrv, Pebble, PebbleSettings};
use support::ports::free_port;
use support::*;

const DOMAIN: &str = "imap.acme.test";
/// An order's validation and issuance, on a busy machine.
const ORDER_TIME: Duration = Duration::from_secs(60);

/// Pebble, its DNS, and a proxy with one IMAPS listener whose certificates ACME obtains.
struct Site {
    dir: PathBuf,
    dns: ChallTestSrv,
    pebble: Pebble,
    proxy: Proxy,
    imaps: u16,
    admin: u16,
}

/// How a test's site differs.
struct Setup<'a> {
    /// Lines added to `[acme]`.
    acme: &'a str,
    /// Where http-01 is answered (pebble's httpPort), if it is.
    http_port: Option<u16>,
    validity_seconds: u64,
}

fn configuration(dir: &Path, directory: &str, admin: u16, setup: &Setup) -> String {
    let ca = certs().ca.display();
    let state = dir.join("acme").display().to_string();
    let extra = setup.acme;
    format!(
        r#"
[admin]
listen = "127.0.0.1:{admin}"

[[listener]]
protocol = "imap"
bind = ["127.0.0.1:0"]
tls = "implicit"
certificates = "acme"
backend = {{ host = "127.0.0.1", port = 9 }}

[acme]
directory = "{directory}"
contact = ["mailto:postmaster@acme.test"]
domains = ["{DOMAIN}"]
state_dir = "{state}"
ca_file = "{ca}"
retry_min_ms = 300
retry_max_ms = 1000
{extra}
"#
    )
}

impl Site {
    /// The proxy first (pebble must know its port), pointed at a port pebble then takes;
    /// both again on other ports when pebble finds it taken.
    fn start(dir: &Path, dns: ChallTestSrv, setup: Setup) -> Site {
        for _ in 0..5 {
            let (pebble_port, admin) = (free_port(), free_port());
            let directory = format!("https://127.0.0.1:{pebble_port}/dir");
            let toml = configuration(dir, &directory, admin, &setup);
            let (proxy, ports) = Proxy::start_toml_anywhere(&toml, 1);
            let settings = PebbleSettings {
                http_port: setup.http_port.unwrap_or(9),
                tls_port: ports[0],
                validity_seconds: setup.validity_seconds,
            };
            if let Some(pebble) = Pebble::start(dir, &dns, Some(pebble_port), settings) {
                return Site {
                    dir: dir.to_path_buf(),
                    dns,
                    pebble,
                    proxy,
                    imaps: ports[0],
                    admin,
                };
            }
        }
        panic!("pebble: no free port in 5 attempts");
    }

    fn logs(&self) -> String {
        format!(
            "{}\npebble:\n{}\nchalltestsrv:\n{}",
            self.proxy.everything_logged(),
            self.pebble.log(),
            self.dns.log()
        )
    }

    /// Waits until the proxy has said `needle` `times` times.
    fn wait_said(&self, needle: &str, times: usize, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while self.proxy.log_text().matches(needle).count() < times {
            assert!(
                std::time::Instant::now() < deadline,
                "{needle:?} not said {times} times in {timeout:?}; {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The certificate an IMAPS client trusting `root` alone is shown for `name`, after
    /// checking it and reading the greeting.
    fn served(&self, name: &str, root: &Path) -> Vec<u8> {
        let mut client = Client::try_tls_with(self.imaps, name, root)
            .unwrap_or_else(|e| panic!("IMAPS to {name}: {e}; {}", self.logs()));
        client.expect_line("* OK");
        client.peer_certificate().expect("a certificate")
    }

    fn metrics(&self) -> String {
        get(self.admin, "/metrics")
    }

    /// `portcullis check`'s standard error for the site's configuration.
    fn check(&self) -> String {
        let config = self.proxy.config.as_ref().expect("a configuration file");
        let out = run_portcullis(&["check", "--config", &config.display().to_string()]);
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

fn site_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("portcullis-acme-")
        .tempdir()
        .expect("test dir")
}

#[test]
fn tls_alpn_01_obtains_a_certificate_clients_trust_and_renews_it_in_place() {
    require_pebble();
    let tmp = site_dir();
    let dns = ChallTestSrv::start(tmp.path());
    let setup = Setup {
        acme: "",
        http_port: None,
        validity_seconds: 24,
    };
    let site = Site::start(tmp.path(), dns, setup);
    let _logs = LogsOnPanic(|| site.logs());
    let obtained = format!("ACME: obtained a ecdsa-p256 certificate for {DOMAIN}");
    site.wait_said(&obtained, 1, ORDER_TIME);
    let root = site.dir.join("root.pem");
    site.pebble.save_root(&root);
    let first = site.served(DOMAIN, &root);
    let metrics = site.metrics();
    let expiry = format!(
        "portcullis_acme_certificate_expiry_timestamp_seconds{{domain=\"{DOMAIN}\",key_type=\"ecdsa-p256\"}}"
    );
    assert!(sample(&metrics, &expiry) > unix_now(), "{metrics}");
    assert!(
        sample(
            &metrics,
            "portcullis_acme_renewals_total{result=\"success\"}"
        ) >= 1.0
    );

    // Two thirds into its 24 s, without a reload: new clients get the new one.
    site.wait_said(&obtained, 2, ORDER_TIME);
    let second = site.served(DOMAIN, &root);
    assert_ne!(first, second, "the renewed certificate is served");
    assert!(
        !site.proxy.log_text().contains("Reload"),
        "no reload happened"
    );

    // acme-tls/1 alone, with no validation pending, gets no certificate (ALPACA).
    let out = Command::new("openssl")
        .args(["s_client", "-alpn", "acme-tls/1", "-servername", DOMAIN])
        .arg("-connect")
        .arg(format!("127.0.0.1:{}", site.imaps))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        !said.contains("BEGIN CERTIFICATE") && !out.status.success(),
        "a lone acme-tls/1 client was served: {said}"
    );
}

#[test]
fn http_01_obtains_a_dual_set_and_check_shows_it_without_the_account_key() {
    require_pebble();
    let tmp = site_dir();
    let dns = ChallTestSrv::start(tmp.path());
    let http = free_port();
    let acme = format!(
        "challenge = \"http-01\"\nhttp_listen = \"127.0.0.1:{http}\"\n\
         key_type = [\"ecdsa-p256\", \"rsa-2048\"]\n"
    );
    let setup = Setup {
        acme: &acme,
        http_port: Some(http),
        validity_seconds: 3600,
    };
    let site = Site::start(tmp.path(), dns, setup);
    let _logs = LogsOnPanic(|| site.logs());
    assert!(site.proxy.wait_log(
        &format!("answering http-01 challenges on 127.0.0.1:{http}"),
        ORDER_TIME
    ));
    site.wait_said(
        &format!("obtained a ecdsa-p256 certificate for {DOMAIN}"),
        1,
        ORDER_TIME,
    );
    site.wait_said(
        &format!("obtained a rsa-2048 certificate for {DOMAIN}"),
        1,
        ORDER_TIME,
    );
    let root = site.dir.join("root.pem");
    site.pebble.save_root(&root);
    site.served(DOMAIN, &root);

    let said = site.check();
    for needle in [
        "acme: account: present",
        &format!("acme: ecdsa-p256 certificate for {DOMAIN}: expires "),
        &format!("acme: rsa-2048 certificate for {DOMAIN}: expires "),
        "acme: last error: none",
    ] {
        assert!(said.contains(needle), "{needle} in {said}");
    }
    let account = fs::read_to_string(site.dir.join("acme/account.json")).unwrap();
    let key: serde_json::Value = serde_json::from_str(&account).unwrap();
    let key = key["credentials"]["key_pkcs8"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!said.contains(&key) && !site.proxy.log_text().contains(&key));
    // Anything but a pending token is not found there.
    let (status, _) = support::admin::http(http, "GET", "/.well-known/acme-challenge/x", "");
    assert_eq!(status, 404);
}

/// A certificate for `name` from a CA of the test's own, that began 60 days ago and ends in
/// 30 (past two thirds of its life: due); written where ACME keeps its ECDSA one. The CA's
/// file, for a client to trust.
fn seed_due_certificate(dir: &Path, name: &str) -> PathBuf {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    let day = Duration::from_secs(86_400);
    params.not_before = (SystemTime::now() - day * 60).into();
    params.not_after = (SystemTime::now() + day * 30).into();
    let leaf = params.signed_by(&key, &ca).unwrap();
    let state = dir.join("acme");
    fs::create_dir_all(&state).unwrap();
    fs::write(state.join("ecdsa-p256.pem"), leaf.pem()).unwrap();
    fs::write(state.join("ecdsa-p256.key"), key.serialize_pem()).unwrap();
    let ca_file = dir.join("own-ca.pem");
    fs::write(&ca_file, ca.pem()).unwrap();
    ca_file
}

#[test]
fn a_failing_challenge_is_logged_and_counted_and_the_old_certificate_keeps_serving() {
    require_pebble();
    let tmp = site_dir();
    let own_ca = seed_due_certificate(tmp.path(), DOMAIN);
    let dns = ChallTestSrv::start(tmp.path());
    // The CA finds nothing of ours there.
    dns.point(DOMAIN, "127.0.0.2");
    let setup = Setup {
        acme: "",
        http_port: None,
        validity_seconds: 3600,
    };
    let site = Site::start(tmp.path(), dns, setup);
    let _logs = LogsOnPanic(|| site.logs());
    assert!(site
        .proxy
        .wait_log("ACME: serving the certificates kept in", ORDER_TIME));
    let before = site.served(DOMAIN, &own_ca);
    let failed = "Failed to connect to 127.0.0.2:";
    site.wait_said(failed, 1, ORDER_TIME);
    assert!(site
        .proxy
        .log_text()
        .contains("the one served stays, next try in"));
    assert_eq!(
        site.served(DOMAIN, &own_ca),
        before,
        "the old certificate still serves"
    );
    let metrics = site.metrics();
    assert!(
        sample(
            &metrics,
            "portcullis_acme_renewals_total{result=\"failure\"}"
        ) >= 1.0
    );
    let last_error = sample(&metrics, "portcullis_acme_last_error_timestamp_seconds");
    assert!(last_error > unix_now() - 120.0, "{metrics}");
    // Retried, and failing again: never obtained.
    site.wait_said(failed, 2, ORDER_TIME);
    assert!(!site.proxy.log_text().contains("ACME: obtained"));
    let said = site.check();
    assert!(said.contains("acme: last error at "), "{said}");
    assert!(said.contains("; due now"), "{said}");
}

#[test]
fn with_the_ca_down_at_renewal_the_old_certificate_serves_until_the_retry_succeeds() {
    require_pebble();
    let tmp = site_dir();
    let dns = ChallTestSrv::start(tmp.path());
    let setup = Setup {
        acme: "",
        http_port: None,
        validity_seconds: 36,
    };
    let mut site = Site::start(tmp.path(), dns, setup);
    let obtained = format!("ACME: obtained a ecdsa-p256 certificate for {DOMAIN}");
    site.wait_said(&obtained, 1, ORDER_TIME);
    let first_root = site.dir.join("root-1.pem");
    site.pebble.save_root(&first_root);
    let first = site.served(DOMAIN, &first_root);
    site.pebble.stop();
    // Due at 24 s: the CA does not answer.
    site.wait_said(
        &format!("ACME: no certificate for {DOMAIN}: ACME server: "),
        1,
        ORDER_TIME,
    );
    assert_eq!(
        site.served(DOMAIN, &first_root),
        first,
        "the old one serves"
    );
    // Back (a new CA that knows no account): the next retry succeeds.
    site.pebble.restart();
    site.wait_said(&obtained, 2, ORDER_TIME);
    let second_root = site.dir.join("root-2.pem");
    site.pebble.save_root(&second_root);
    assert_ne!(site.served(DOMAIN, &second_root), first);
    let metrics = site.metrics();
    assert!(
        sample(
            &metrics,
            "portcullis_acme_renewals_total{result=\"failure\"}"
        ) >= 1.0
    );
    assert!(
        sample(
            &metrics,
            "portcullis_acme_renewals_total{result=\"success\"}"
        ) >= 2.0
    );
}
