//! Debian's `slapd` for the LDAP map tests: started once per test run by `scripts/test.sh`
//! (`PORTCULLIS_TEST_LDAP` names it), or, when that is not set, privately by the test process
//! that needs it. Each test writes its entries under an OU of its own, so tests share the
//! server without seeing each other's users.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{free_port, port_open, unique_suffix};

/// The suffix, admin and password of the test directory (`ldap/slapd.conf.in`; the tree
/// Perdition's LDAP map defaults to: `ou=…,dc=nodomain`).
pub const SUFFIX: &str = "dc=nodomain";
pub const ADMIN: &str = "cn=admin,dc=nodomain";
pub const ADMIN_PASSWORD: &str = "adminpw";

/// A running directory.
pub struct Slapd {
    /// `ldap://127.0.0.1:PORT`
    pub url: String,
}

/// The shared directory: the run's, or one started for this process.
pub fn slapd() -> &'static Slapd {
    static SLAPD: OnceLock<Slapd> = OnceLock::new();
    SLAPD.get_or_init(|| match std::env::var("PORTCULLIS_TEST_LDAP") {
        Ok(url) if !url.is_empty() => Slapd { url },
        _ => start_private(),
    })
}

/// Perdition's LDAP schema, as Debian's perdition-ldap package ships it.
fn perdition_schema() -> String {
    let gz = "/usr/share/doc/perdition-ldap/perdition.schema.gz";
    let out = Command::new("gzip")
        .args(["-dc", gz])
        .output()
        .unwrap_or_else(|e| panic!("gzip -dc {gz}: {e} (install perdition-ldap)"));
    assert!(out.status.success(), "{gz} missing: install perdition-ldap");
    String::from_utf8(out.stdout).expect("schema is text")
}

/// Write the configuration and database of a directory in `dir`; returns the config file.
pub fn prepare(dir: &Path) -> PathBuf {
    prepare_with(dir, "")
}

/// As [`prepare`], with `global` (directives that must come before the database's) added.
fn prepare_with(dir: &Path, global: &str) -> PathBuf {
    fs::create_dir_all(dir.join("db")).expect("slapd db dir");
    fs::write(dir.join("perdition.schema"), perdition_schema()).expect("schema");
    let conf = include_str!("ldap/slapd.conf.in")
        .replace("@DIR@", &dir.display().to_string())
        .replace("\npidfile ", &format!("\n{global}pidfile "));
    let path = dir.join("slapd.conf");
    fs::write(&path, conf).expect("slapd.conf");
    path
}

fn start_private() -> Slapd {
    start_private_with("", |_| None).0
}

/// A directory of this process's own that also speaks TLS, with the test certificate
/// (`certs()`: `localhost`, 127.0.0.1, signed by `certs().ca`): StartTLS on its `ldap://` URL,
/// and an `ldaps://` URL beside it.
pub struct TlsSlapd {
    /// `ldap://127.0.0.1:PORT` (StartTLS offered)
    pub slapd: Slapd,
    /// `ldaps://127.0.0.1:PORT`
    pub ldaps_url: String,
}

/// The process's directory with TLS (started on first use; the shared one has none).
pub fn slapd_with_tls() -> &'static TlsSlapd {
    static TLS: OnceLock<TlsSlapd> = OnceLock::new();
    TLS.get_or_init(|| {
        let c = super::certs();
        let global = format!(
            "TLSCACertificateFile {}\nTLSCertificateFile {}\nTLSCertificateKeyFile {}\n",
            c.ca.display(),
            c.cert.display(),
            c.key.display()
        );
        let (slapd, ldaps) = start_private_with(&global, |_| Some(free_port()));
        TlsSlapd {
            slapd,
            ldaps_url: format!("ldaps://127.0.0.1:{}", ldaps.expect("an ldaps port")),
        }
    })
}

/// A private directory with `global` in its configuration, listening on a free port for
/// `ldap://` and, when `ldaps` names one, on that port for `ldaps://`.
fn start_private_with(global: &str, ldaps: impl Fn(u16) -> Option<u16>) -> (Slapd, Option<u16>) {
    let dir = std::env::temp_dir().join(format!("portcullis-slapd-{}", unique_suffix()));
    let conf = prepare_with(&dir, global);
    // Three tries, each on new ports: slapd binds after the ports were chosen.
    let mut failures = Vec::new();
    let (url, ldaps) = loop {
        let port = free_port();
        let ldaps = ldaps(port);
        match start_slapd(&conf, port, ldaps) {
            Ok(url) => break (url, ldaps),
            Err(e) if failures.len() < 2 => failures.push(e),
            Err(e) => {
                failures.push(e);
                panic!("slapd did not start:\n{}", failures.join("\n-----\n"));
            }
        }
    };
    let slapd = Slapd { url };
    slapd.add(include_str!("ldap/base.ldif"));
    // A process-private server ends with the test process: slapd daemonized, so it is
    // stopped from its pid file when the process exits.
    let pidfile = dir.join("slapd.pid");
    std::thread::spawn(move || watch_parent(pidfile));
    (slapd, ldaps)
}

/// Starts slapd with `conf` on 127.0.0.1:`port`, and for ldaps:// on `ldaps` (it daemonizes
/// once listening); its ldap:// URL, or slapd's own words.
fn start_slapd(conf: &Path, port: u16, ldaps: Option<u16>) -> Result<String, String> {
    let url = format!("ldap://127.0.0.1:{port}");
    let mut urls = format!("{url}/");
    if let Some(ldaps) = ldaps {
        urls += &format!(" ldaps://127.0.0.1:{ldaps}/");
    }
    let out = Command::new("/usr/sbin/slapd")
        .args(["-f", &conf.display().to_string(), "-h", &urls])
        .stdin(Stdio::null())
        .output()
        .expect("run slapd (install slapd)");
    if !out.status.success() {
        return Err(format!(
            "slapd on {port} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(port_open(port) && ldaps.is_none_or(port_open)) {
        if Instant::now() >= deadline {
            return Err(format!("slapd not listening on {port} {ldaps:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(url)
}

/// Stop the private slapd once this test process is gone.
fn watch_parent(pidfile: PathBuf) {
    if let Some(pid) = fs::read_to_string(&pidfile)
        .ok()
        .and_then(|pid| pid.trim().parse().ok())
    {
        super::end_with_this_process(pid);
    }
}

impl Slapd {
    /// Add LDIF entries as the admin; panics with ldapadd's words when it fails.
    pub fn add(&self, ldif: &str) {
        self.run("ldapadd", ldif);
    }

    /// Apply an LDIF change record (`changetype: modify`...) as the admin.
    pub fn modify(&self, ldif: &str) {
        self.run("ldapmodify", ldif);
    }

    fn run(&self, tool: &str, ldif: &str) {
        let mut child = Command::new(tool)
            .args(["-x", "-H", &self.url, "-D", ADMIN, "-w", ADMIN_PASSWORD])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {tool} (install ldap-utils): {e}"));
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(ldif.as_bytes())
            .expect("write ldif");
        let out = child.wait_with_output().expect(tool);
        assert!(
            out.status.success(),
            "{tool} failed: {}\n{ldif}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A fresh OU for one test: `ou=<name>-<unique>,dc=nodomain`.
    pub fn new_ou(&self, name: &str) -> String {
        let ou = format!("{name}-{}", unique_suffix());
        self.add(&format!(
            "dn: ou={ou},{SUFFIX}\nobjectClass: organizationalUnit\nou: {ou}\n"
        ));
        format!("ou={ou},{SUFFIX}")
    }

    /// A Perdition popmap entry under `base`: `uid`, `mailhost`, optional `port` and
    /// `username`.
    pub fn add_user(
        &self,
        base: &str,
        uid: &str,
        mailhost: &str,
        port: Option<u16>,
        username: Option<&str>,
    ) {
        let mut ldif = format!(
            "dn: uid={uid},{base}\nobjectClass: perditionPopmap\nuid: {uid}\nmailhost: {mailhost}\n"
        );
        if let Some(port) = port {
            ldif.push_str(&format!("port: {port}\n"));
        }
        if let Some(username) = username {
            ldif.push_str(&format!("username: {username}\n"));
        }
        self.add(&ldif);
    }
}
