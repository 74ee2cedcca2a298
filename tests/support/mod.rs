//! Shared harness for the Portcullis integration tests (`mod support;`).
//!
//! Everything here is synchronous std code (plus `rustls` for the TLS client):
//! * [`certs`]: a throw-away CA + `localhost` server certificate made with the `openssl` CLI;
//! * [`Dovecot`]: a private Dovecot instance (IMAP, IMAPS, POP3, POP3S, ManageSieve) on free
//!   loopback ports, with users alice/alicepw, bob/bobpw and carol@example.org/carolpw;
//! * [`Proxy`]: the `portcullis` binary under test, its output captured in a log file;
//! * [`Client`]: a line-oriented protocol client over plain TCP or TLS (with STARTTLS).
#![allow(dead_code)]

pub mod auth_service;
pub mod databases;
pub mod haproxy;
pub mod ports;
pub mod redis;
pub mod slapd;

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// Read timeout used by [`Client`] reads.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Proxy`] start-up may take before the test fails.
pub const PROXY_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Dovecot`] start-up may take before the attempt fails.
pub const DOVECOT_START_TIMEOUT: Duration = Duration::from_secs(20);

/// Perdition mode's stand-in for `/` (see `portcullis::config::perdition::ROOT_ENV`).
pub const PERDITION_ROOT_ENV: &str = "PORTCULLIS_PERDITION_ROOT";

/// Message printed when Dovecot is missing; tests fail with it rather than pass silently.
pub const DOVECOT_MISSING: &str = "dovecot not installed: run scripts/test.sh";

// ---------------------------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------------------------

/// Stop process `pid` (a server a test started for itself) once this test process is gone,
/// however it ends.
pub fn end_with_this_process(pid: u32) {
    let me = std::process::id();
    let script =
        format!("while kill -0 {me} 2>/dev/null; do sleep 1; done; kill {pid} 2>/dev/null");
    let _ = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

fn unique_suffix() -> String {
    static COUNTER: Mutex<u64> = Mutex::new(0);
    let mut c = COUNTER.lock().unwrap_or_else(|e| e.into_inner());
    *c += 1;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{}-{}", std::process::id(), *c, nanos)
}

/// Runs a command, panicking with its output if it cannot run or fails.
fn run_checked(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn cmd_stdout(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A log file's text once it stopped growing for a moment (at most 2 s of waiting).
fn settled(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut text = read_lossy(path);
    loop {
        sleep(Duration::from_millis(50));
        let again = read_lossy(path);
        if again == text || Instant::now() >= deadline {
            return again;
        }
        text = again;
    }
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

pub use ports::free_port;

/// True if something accepts TCP connections on 127.0.0.1:`port` right now.
pub fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// True if a socket listens on TCP `port` (any address) right now, going by the kernel's
/// tables (`/proc/net/tcp`, `/proc/net/tcp6`) rather than by connecting: for a server that
/// must not see a probe connection (a balancer's round robin would count it).
pub fn port_listening(port: u16) -> bool {
    const LISTEN: &str = "0A";
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        read_lossy(Path::new(table)).lines().skip(1).any(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1).unwrap_or_default();
            let state = fields.nth(1).unwrap_or_default();
            state == LISTEN
                && local
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                    == Some(port)
        })
    })
}

/// Polls until 127.0.0.1:`port` accepts TCP connections; false after `timeout`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if port_open(port) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// Test PKI made with the `openssl` CLI (P-256 keys, valid ten years).
pub struct Certs {
    /// Directory holding all files below.
    pub dir: PathBuf,
    /// CA certificate (PEM) that signed `cert`.
    pub ca: PathBuf,
    /// Server certificate (PEM), CN=localhost, SAN DNS:localhost, IP:127.0.0.1, IP:::1.
    pub cert: PathBuf,
    /// Private key of `cert` (PEM, PKCS#8, mode 0644).
    pub key: PathBuf,
    /// An unrelated CA certificate (PEM) that did not sign `cert` (negative verification tests).
    pub other_ca: PathBuf,
}

/// The test PKI, created once and shared (also between test processes: it lives in
/// `CARGO_TARGET_TMPDIR/portcullis-test-certs-v1`, published with an atomic rename).
pub fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(make_certs)
}

fn certs_in(dir: &Path) -> Certs {
    Certs {
        dir: dir.to_path_buf(),
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        other_ca: dir.join("other-ca.pem"),
    }
}

fn make_certs() -> Certs {
    let base = option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    fs::create_dir_all(&base).expect("create cert base dir");
    let final_dir = base.join("portcullis-test-certs-v1");
    if final_dir.join("complete").exists() {
        return certs_in(&final_dir);
    }
    let tmp = base.join(format!("portcullis-test-certs-v1.tmp-{}", unique_suffix()));
    fs::create_dir_all(&tmp).expect("create cert tmp dir");
    generate_certs(&tmp);
    fs::write(tmp.join("complete"), b"ok\n").expect("write marker");
    if fs::rename(&tmp, &final_dir).is_err() {
        // Another process won the race (or a stale dir exists).
        let _ = fs::remove_dir_all(&tmp);
        if !final_dir.join("complete").exists() {
            let _ = fs::remove_dir_all(&final_dir);
            return make_certs();
        }
    }
    let _ = fs::set_permissions(&final_dir, fs::Permissions::from_mode(0o755));
    certs_in(&final_dir)
}

fn openssl(dir: &Path, args: &[&str]) {
    run_checked(Command::new("openssl").current_dir(dir).args(args));
}

fn generate_certs(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for (name, cn) in [
        ("ca", "Portcullis Test CA"),
        ("other-ca", "Unrelated Test CA"),
    ] {
        let keyout = format!("{name}.key");
        let out = format!("{name}.pem");
        let subj = format!("/CN={cn}");
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend([
            "-keyout",
            &keyout,
            "-out",
            &out,
            "-days",
            "3650",
            "-subj",
            &subj,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir, &args);
    }
    let mut args = vec!["req", "-new"];
    args.extend(ec);
    args.extend([
        "-keyout",
        "key.pem",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &args);
    fs::write(
        dir.join("server.ext"),
        "basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\n\
         subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n",
    )
    .expect("write server.ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "3650",
            "-extfile",
            "server.ext",
        ],
    );
    // Readable by unprivileged daemons (Dovecot's config process, a demo user, ...).
    for f in ["ca.pem", "other-ca.pem", "cert.pem", "key.pem"] {
        fs::set_permissions(dir.join(f), fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod dir");
}

// ---------------------------------------------------------------------------------------------
// Dovecot
// ---------------------------------------------------------------------------------------------

/// The Dovecot configuration template (shared with scripts/demo.sh).
pub const DOVECOT_CONF_TEMPLATE: &str = include_str!("dovecot.conf.in");

/// Test users (name, password) known to every [`Dovecot`].
/// Dovecot's master user (`USER*proxymaster` with this password logs in as USER).
pub const MASTER: (&str, &str) = ("proxymaster", "masterpw");

pub const USERS: &[(&str, &str)] = &[
    ("alice", "alicepw"),
    ("bob", "bobpw"),
    ("carol@example.org", "carolpw"),
    // Passwords that need quoting, escaping or a literal on their way to the back end.
    ("dave", r#"p@ss "w0rd" \ x"#),
    ("erin", "p\u{e4}ssw\u{f6}rd"),
];

fn dovecot_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("dovecot"))
        .find(|p| p.is_file())
}

/// True if Dovecot with the IMAP, POP3 and ManageSieve servers is installed.
pub fn dovecot_installed() -> bool {
    dovecot_bin().is_some()
        && ["imap", "pop3", "managesieve"].iter().all(|s| {
            Path::new("/usr/lib/dovecot").join(s).exists()
                || Path::new("/usr/libexec/dovecot").join(s).exists()
        })
}

/// Panics with [`DOVECOT_MISSING`] unless Dovecot is installed.
pub fn require_dovecot() {
    assert!(dovecot_installed(), "{DOVECOT_MISSING}");
}

/// The three messages seeded into alice's INBOX (exact bytes, CRLF line ends). Message 1 has a
/// body line starting with "." (POP3 dot-stuffing); message 3 is a little over 1 MiB.
pub fn alice_messages() -> &'static [Vec<u8>] {
    static MSGS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    MSGS.get_or_init(|| {
        let crlf = |s: &str| s.replace('\n', "\r\n").into_bytes();
        let m1 = crlf(
            "Return-Path: <bob@example.org>\n\
             From: Bob <bob@example.org>\n\
             To: Alice <alice@example.org>\n\
             Subject: Hello Alice\n\
             Date: Mon, 20 Nov 2023 10:00:00 +0000\n\
             Message-ID: <msg1@portcullis.test>\n\
             MIME-Version: 1.0\n\
             Content-Type: text/plain; charset=us-ascii\n\
             \n\
             Hi Alice,\n\
             this is message one.\n\
             .a line starting with a dot\n\
             Bye\n",
        );
        let m2 = crlf(
            "From: Carol <carol@example.org>\n\
             To: Alice <alice@example.org>\n\
             Subject: Second message\n\
             Date: Tue, 21 Nov 2023 11:30:00 +0000\n\
             Message-ID: <msg2@portcullis.test>\n\
             \n\
             a001 OK this body line looks like an IMAP response\n\
             +OK and this one like a POP3 one\n\
             \n\
             End of message two.\n",
        );
        let mut m3 = crlf(
            "From: Bob <bob@example.org>\n\
             To: Alice <alice@example.org>\n\
             Subject: Big message\n\
             Date: Wed, 22 Nov 2023 12:00:00 +0000\n\
             Message-ID: <msg3@portcullis.test>\n\
             \n",
        );
        let mut i = 0u32;
        while m3.len() < (1 << 20) {
            i += 1;
            m3.extend_from_slice(
                format!(
                    "{i:06} The quick brown fox jumps over the lazy dog 0123456789 {:08x}\r\n",
                    i.wrapping_mul(2_654_435_761)
                )
                .as_bytes(),
            );
        }
        vec![m1, m2, m3]
    })
}

/// A private Dovecot instance on free loopback ports. Dropping it stops Dovecot and removes
/// its directory.
pub struct Dovecot {
    /// Plain IMAP (STARTTLS offered).
    pub imap: u16,
    /// Plain IMAP that takes a PROXY header first (`haproxy = yes`).
    pub imap_haproxy: u16,
    /// IMAP over implicit TLS (certs().cert).
    pub imaps: u16,
    /// Plain POP3 (STLS offered).
    pub pop3: u16,
    /// POP3 over implicit TLS.
    pub pop3s: u16,
    /// ManageSieve (STARTTLS offered).
    pub sieve: u16,
    /// ManageSieve that takes a PROXY header first (`haproxy = yes`).
    pub sieve_haproxy: u16,
    /// Instance directory: dovecot.conf, passwd, home/USER, run/ (base_dir), dovecot.log.
    pub dir: PathBuf,
    /// The rendered configuration file.
    pub conf: PathBuf,
    /// Dovecot's log file.
    pub log: PathBuf,
    child: Option<Child>,
    tmp: Option<tempfile::TempDir>,
}

struct Identity {
    mail_uid: u32,
    mail_gid: u32,
    internal_user: String,
    internal_group: String,
    login_user: String,
    root: bool,
}

fn identity() -> Identity {
    let id = |args: &[&str]| cmd_stdout("id", args).unwrap_or_default();
    let uid: u32 = id(&["-u"]).parse().expect("id -u");
    if uid == 0 {
        // Dovecot refuses to run mail processes as root: use nobody for the mail store.
        let mail_uid = id(&["-u", "nobody"]).parse().unwrap_or(65534);
        let mail_gid = id(&["-g", "nobody"]).parse().unwrap_or(65534);
        let has = |u: &str| cmd_stdout("id", &["-u", u]).is_some();
        let internal_user = if has("dovecot") { "dovecot" } else { "nobody" }.to_string();
        let internal_group = cmd_stdout("id", &["-gn", &internal_user]).unwrap_or_default();
        let login_user = if has("dovenull") {
            "dovenull"
        } else {
            "nobody"
        }
        .to_string();
        Identity {
            mail_uid,
            mail_gid,
            internal_user,
            internal_group,
            login_user,
            root: true,
        }
    } else {
        let user = id(&["-un"]);
        Identity {
            mail_uid: uid,
            mail_gid: id(&["-g"]).parse().expect("id -g"),
            internal_group: id(&["-gn"]),
            login_user: user.clone(),
            internal_user: user,
            root: false,
        }
    }
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    if path.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Substitutes `@KEY@` placeholders; panics if one is left on a non-comment line.
pub fn render_template(template: &str, vars: &[(&str, String)]) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("@{k}@"), v);
    }
    for line in out.lines() {
        let t = line.trim_start();
        if !t.starts_with('#') && t.contains('@') && !t.contains("@example") {
            panic!("unsubstituted placeholder in dovecot config line: {line}");
        }
    }
    out
}

impl Dovecot {
    /// Starts a fresh instance (panics with a clear message if Dovecot is not installed or
    /// does not come up). Returns once every port accepts connections and the plain ports
    /// have sent their real greeting (i.e. the auth process is ready).
    pub fn start() -> Dovecot {
        Self::start_with_mechanisms("plain login")
    }

    /// Like [`Dovecot::start`], offering only these SASL mechanisms (`auth_mechanisms`), e.g.
    /// `"login"` for a server that does not advertise AUTH=PLAIN.
    pub fn start_with_mechanisms(mechanisms: &str) -> Dovecot {
        Self::start_with(mechanisms, None)
    }

    /// Like [`Dovecot::start`], also taking OAUTHBEARER and XOAUTH2 tokens, which it checks at
    /// `introspection_url` (RFC 7662, POST `token=...`, an answer `{"active": true,
    /// "username": USER}`).
    pub fn start_with_oauth2(introspection_url: &str) -> Dovecot {
        Self::start_with("plain login oauthbearer xoauth2", Some(introspection_url))
    }

    fn start_with(mechanisms: &str, oauth2: Option<&str>) -> Dovecot {
        require_dovecot();
        let mut errors = Vec::new();
        for _ in 0..3 {
            match Self::try_start(mechanisms, oauth2) {
                Ok(d) => return d,
                Err(e) => errors.push(e),
            }
        }
        panic!("could not start dovecot:\n{}", errors.join("\n-----\n"));
    }

    fn try_start(mechanisms: &str, oauth2: Option<&str>) -> Result<Dovecot, String> {
        let certs = certs();
        let tmp = tempfile::Builder::new()
            .prefix("portcullis-dovecot-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let dir = tmp.path().to_path_buf();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
        let ident = identity();

        // Users.
        let passwd: String = USERS
            .iter()
            .map(|(u, p)| format!("{u}:{{PLAIN}}{p}::::::\n"))
            .collect();
        fs::write(dir.join("passwd"), passwd).map_err(|e| e.to_string())?;
        let (master, master_password) = MASTER;
        let masters = format!("{master}:{{PLAIN}}{master_password}::::::\n");
        fs::write(dir.join("masters"), masters).map_err(|e| e.to_string())?;
        fs::set_permissions(dir.join("masters"), fs::Permissions::from_mode(0o644))
            .map_err(|e| e.to_string())?;
        fs::set_permissions(dir.join("passwd"), fs::Permissions::from_mode(0o644))
            .map_err(|e| e.to_string())?;

        // Mail: alice's INBOX in Maildir.
        let home = dir.join("home");
        let maildir = home.join("alice").join("Maildir");
        for sub in ["cur", "new", "tmp"] {
            fs::create_dir_all(maildir.join(sub)).map_err(|e| e.to_string())?;
        }
        for (i, msg) in alice_messages().iter().enumerate() {
            let name = format!(
                "{}.M{}P1.portcullis,S={len},W={len}:2,",
                1_700_000_000 + i,
                i + 1,
                len = msg.len()
            );
            fs::write(maildir.join("cur").join(name), msg).map_err(|e| e.to_string())?;
        }
        for sub in [home.clone(), home.join("alice")] {
            fs::set_permissions(&sub, fs::Permissions::from_mode(0o755))
                .map_err(|e| e.to_string())?;
        }
        if ident.root {
            chown_tree(&home, ident.mail_uid, ident.mail_gid)
                .map_err(|e| format!("chown {}: {e}", home.display()))?;
        }

        let (imap, imaps, pop3, pop3s, sieve) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );
        let (imap_haproxy, sieve_haproxy) = (free_port(), free_port());
        let instance = format!("portcullis-test-{}", unique_suffix());
        let extra_passdb = match oauth2 {
            None => String::new(),
            Some(url) => {
                let ext = format!(
                    "introspection_mode = post\nintrospection_url = {url}\n\
                     username_attribute = username\nactive_attribute = active\n\
                     active_value = true\n"
                );
                fs::write(dir.join("oauth2.conf.ext"), ext).map_err(|e| e.to_string())?;
                "passdb {\n  driver = oauth2\n  mechanisms = oauthbearer xoauth2\n  \
                 args = @DIR@/oauth2.conf.ext\n}\n"
                    .to_string()
            }
        };
        let conf_text = render_template(
            DOVECOT_CONF_TEMPLATE,
            &[
                ("EXTRA_PASSDB", extra_passdb),
                ("DIR", dir.display().to_string()),
                ("INSTANCE", instance),
                ("IMAP_PORT", imap.to_string()),
                ("IMAP_HAPROXY_PORT", imap_haproxy.to_string()),
                ("SIEVE_HAPROXY_PORT", sieve_haproxy.to_string()),
                ("IMAPS_PORT", imaps.to_string()),
                ("POP3_PORT", pop3.to_string()),
                ("POP3S_PORT", pop3s.to_string()),
                ("SIEVE_PORT", sieve.to_string()),
                ("CERT", certs.cert.display().to_string()),
                ("KEY", certs.key.display().to_string()),
                ("MAIL_UID", ident.mail_uid.to_string()),
                ("MAIL_GID", ident.mail_gid.to_string()),
                ("INTERNAL_USER", ident.internal_user.clone()),
                ("INTERNAL_GROUP", ident.internal_group.clone()),
                ("LOGIN_USER", ident.login_user.clone()),
            ],
        )
        .replace(
            "auth_mechanisms = plain login",
            &format!("auth_mechanisms = {mechanisms}"),
        );
        assert!(conf_text.contains(&format!("auth_mechanisms = {mechanisms}")));
        let conf = dir.join("dovecot.conf");
        fs::write(&conf, conf_text).map_err(|e| e.to_string())?;
        let log = dir.join("dovecot.log");
        let stderr_path = dir.join("dovecot.stderr");
        let out = fs::File::create(&stderr_path).map_err(|e| e.to_string())?;
        let child = Command::new(dovecot_bin().expect(DOVECOT_MISSING))
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(|e| e.to_string())?)
            .stderr(out)
            .spawn()
            .map_err(|e| format!("spawn dovecot: {e}"))?;
        let mut d = Dovecot {
            imap,
            imap_haproxy,
            sieve_haproxy,
            imaps,
            pop3,
            pop3s,
            sieve,
            dir,
            conf,
            log,
            child: Some(child),
            tmp: Some(tmp),
        };
        let deadline = Instant::now() + DOVECOT_START_TIMEOUT;
        let mut pending = vec![imap, imaps, pop3, pop3s, sieve];
        while !pending.is_empty() {
            if let Some(status) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                d.child = None;
                return Err(format!(
                    "dovecot exited early ({status}).\noutput:\n{}\nlog:\n{}",
                    read_lossy(&stderr_path),
                    d.log_text()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "dovecot ports {pending:?} not open after {DOVECOT_START_TIMEOUT:?}.\n\
                     output:\n{}\nlog:\n{}",
                    read_lossy(&stderr_path),
                    d.log_text()
                ));
            }
            pending.retain(|p| !port_open(*p));
            if !pending.is_empty() {
                sleep(Duration::from_millis(50));
            }
        }
        // Dovecot answers "* OK Waiting for authentication process to respond.." until auth
        // is up; wait for the real greeting on each plain port.
        for port in [imap, pop3, sieve] {
            if let Err(e) = wait_greeting(port, deadline) {
                return Err(format!(
                    "dovecot port {port}: no greeting: {e}\nlog:\n{}",
                    d.log_text()
                ));
            }
        }
        Ok(d)
    }

    /// Contents of Dovecot's log so far, once it has settled: Dovecot's login process writes
    /// its `Login:` line about when the client gets its OK, not before.
    pub fn log_text(&self) -> String {
        settled(&self.log)
    }

    /// Polls the log until it contains `needle`; false after `timeout`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !read_lossy(&self.log).contains(needle) {
            if Instant::now() >= deadline {
                return false;
            }
            sleep(Duration::from_millis(25));
        }
        true
    }

    /// Whether `user` logged in here (waiting a little for the line, as it may come last).
    pub fn saw_login(&self, user: &str) -> bool {
        self.wait_log(&format!("Login: user=<{user}>"), Duration::from_secs(5))
    }

    /// Home directory of `user` (mail in `home/Maildir`, sieve scripts in `home/sieve`).
    pub fn home(&self, user: &str) -> PathBuf {
        self.dir.join("home").join(user)
    }

    /// Stops Dovecot (TERM to the master, then KILL after 5 s). Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}

fn wait_greeting(port: u16, deadline: Instant) -> Result<(), String> {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("timeout; got {:?}", String::from_utf8_lossy(&got)));
        }
        sock.set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        match sock.read(&mut buf) {
            Ok(0) => return Err(format!("EOF; got {:?}", String::from_utf8_lossy(&got))),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("{e}; got {:?}", String::from_utf8_lossy(&got))),
        }
        let text = String::from_utf8_lossy(&got);
        if text
            .lines()
            .any(|l| l.contains(" ready.") || l.contains(" ready.\""))
        {
            return Ok(());
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
        if let Some(tmp) = self.tmp.take() {
            if std::env::var_os("PORTCULLIS_KEEP_TEST_DIRS").is_some() {
                let _ = tmp.keep();
            } else {
                let _ = tmp.close();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The proxy under test
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Test client
// ---------------------------------------------------------------------------------------------

/// rustls client config trusting only the CA certificates in `ca` (PEM file).
pub fn tls_client_config(ca: &Path) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(ca).unwrap_or_else(|e| panic!("read {}: {e:?}", ca.display()))
    {
        roots
            .add(cert.expect("parse CA PEM"))
            .expect("add CA to root store");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn tls_handshake(
    mut sock: TcpStream,
    sni: &str,
    ca: &Path,
) -> io::Result<StreamOwned<ClientConnection, TcpStream>> {
    let name = ServerName::try_from(sni.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut conn = ClientConnection::new(tls_client_config(ca), name).map_err(io::Error::other)?;
    sock.set_read_timeout(Some(READ_TIMEOUT))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    Ok(StreamOwned::new(conn, sock))
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    Gone,
}

/// Line-oriented client over plain TCP or TLS. Reads panic after [`READ_TIMEOUT`] with what was
/// received so far.
pub struct Client {
    conn: Conn,
    buf: Vec<u8>,
    /// Port connected to.
    pub port: u16,
}

enum Fill {
    Data,
    Eof,
    Timeout,
    Error(io::Error),
}

impl Client {
    /// Connects over plain TCP to 127.0.0.1:`port` (panics on failure).
    pub fn plain(port: u16) -> Client {
        Self::try_plain(port).unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"))
    }

    /// Connects over plain TCP to 127.0.0.1:`port`.
    /// A client on a connection the test opened itself (and may have written to already).
    pub fn from_stream(sock: TcpStream) -> Client {
        let port = sock.peer_addr().map(|a| a.port()).unwrap_or(0);
        let _ = sock.set_nodelay(true);
        Client {
            conn: Conn::Plain(sock),
            buf: Vec::new(),
            port,
        }
    }

    pub fn try_plain(port: u16) -> io::Result<Client> {
        let sock = TcpStream::connect(("127.0.0.1", port))?;
        sock.set_nodelay(true)?;
        Ok(Client {
            conn: Conn::Plain(sock),
            buf: Vec::new(),
            port,
        })
    }

    /// Connects with implicit TLS (SNI "localhost", trusting certs().ca); panics on failure.
    pub fn tls(port: u16) -> Client {
        Self::try_tls_with(port, "localhost", &certs().ca)
            .unwrap_or_else(|e| panic!("TLS connect 127.0.0.1:{port}: {e}"))
    }

    /// Connects with implicit TLS, server name `sni`, trusting only the CAs in `ca`.
    /// Handshake / verification errors are returned.
    pub fn try_tls_with(port: u16, sni: &str, ca: &Path) -> io::Result<Client> {
        let sock = TcpStream::connect(("127.0.0.1", port))?;
        sock.set_nodelay(true)?;
        let tls = tls_handshake(sock, sni, ca)?;
        Ok(Client {
            conn: Conn::Tls(Box::new(tls)),
            buf: Vec::new(),
            port,
        })
    }

    /// Upgrades the plain connection to TLS in place (after the server's go-ahead to
    /// STARTTLS/STLS has been read). Panics if unread bytes are buffered (those would be
    /// plaintext injected before the handshake) or if the handshake fails.
    pub fn starttls(&mut self) {
        self.try_starttls_with("localhost", &certs().ca.clone())
            .unwrap_or_else(|e| panic!("STARTTLS handshake failed: {e}"));
    }

    /// Like [`Client::starttls`] with an explicit server name and CA file; returns errors.
    pub fn try_starttls_with(&mut self, sni: &str, ca: &Path) -> io::Result<()> {
        assert!(
            self.buf.is_empty(),
            "unread data before TLS handshake: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        let sock = match std::mem::replace(&mut self.conn, Conn::Gone) {
            Conn::Plain(s) => s,
            Conn::Tls(_) => panic!("starttls on a TLS connection"),
            Conn::Gone => panic!("starttls on a closed connection"),
        };
        let tls = tls_handshake(sock, sni, ca)?;
        self.conn = Conn::Tls(Box::new(tls));
        Ok(())
    }

    /// The certificate the server presented (its leaf, DER), on a TLS connection.
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        match &self.conn {
            Conn::Tls(t) => t
                .conn
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| leaf.as_ref().to_vec()),
            _ => None,
        }
    }

    /// True if the connection is (now) TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.conn, Conn::Tls(_))
    }

    fn sock(&self) -> &TcpStream {
        match &self.conn {
            Conn::Plain(s) => s,
            Conn::Tls(t) => &t.sock,
            Conn::Gone => panic!("connection is gone"),
        }
    }

    /// Local address of the connection (e.g. to match the proxy's log lines).
    pub fn local_addr(&self) -> SocketAddr {
        self.sock().local_addr().expect("local_addr")
    }

    /// Writes all bytes, returning I/O errors.
    pub fn try_send(&mut self, data: &[u8]) -> io::Result<()> {
        match &mut self.conn {
            Conn::Plain(s) => {
                s.write_all(data)?;
                s.flush()
            }
            Conn::Tls(t) => {
                t.write_all(data)?;
                t.flush()
            }
            Conn::Gone => Err(io::Error::new(io::ErrorKind::NotConnected, "gone")),
        }
    }

    /// Writes all bytes (panics on error).
    pub fn send(&mut self, data: &[u8]) {
        self.try_send(data)
            .unwrap_or_else(|e| panic!("send to port {}: {e}", self.port));
    }

    /// Writes `line` followed by CRLF.
    pub fn send_line(&mut self, line: &str) {
        let mut data = Vec::with_capacity(line.len() + 2);
        data.extend_from_slice(line.as_bytes());
        data.extend_from_slice(b"\r\n");
        self.send(&data);
    }

    /// Half-closes the sending direction (plain TCP) / sends close_notify (TLS).
    pub fn shutdown_write(&mut self) {
        match &mut self.conn {
            Conn::Plain(s) => {
                let _ = s.shutdown(std::net::Shutdown::Write);
            }
            Conn::Tls(t) => {
                t.conn.send_close_notify();
                let _ = t.flush();
            }
            Conn::Gone => {}
        }
    }

    fn fill(&mut self, deadline: Instant) -> Fill {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Fill::Timeout;
        }
        if let Err(e) = self.sock().set_read_timeout(Some(left)) {
            return Fill::Error(e);
        }
        let mut tmp = [0u8; 16384];
        let r = match &mut self.conn {
            Conn::Plain(s) => s.read(&mut tmp),
            Conn::Tls(t) => t.read(&mut tmp),
            Conn::Gone => return Fill::Eof,
        };
        match r {
            Ok(0) => Fill::Eof,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Fill::Data
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Fill::Timeout
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Fill::Data,
            Err(e) => Fill::Error(e),
        }
    }

    fn fail(&self, what: &str, why: &str) -> ! {
        panic!(
            "port {}: {why} while waiting for {what}; unread data: {:?}",
            self.port,
            String::from_utf8_lossy(&self.buf)
        );
    }

    fn fill_or_panic(&mut self, deadline: Instant, what: &str) {
        match self.fill(deadline) {
            Fill::Data => {}
            Fill::Eof => self.fail(what, "connection closed"),
            Fill::Timeout => self.fail(what, "read timeout"),
            Fill::Error(e) => self.fail(what, &format!("read error {e}")),
        }
    }

    /// Reads one line (up to LF), without its CRLF/LF. Panics on EOF or timeout.
    pub fn read_line(&mut self) -> String {
        String::from_utf8_lossy(&self.read_line_raw()).into_owned()
    }

    /// Like [`Client::read_line`] but returns the raw bytes (line end stripped).
    pub fn read_line_raw(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return line;
            }
            self.fill_or_panic(deadline, "a line");
        }
    }

    /// Reads one line within `timeout`; `None` when the peer closed (or went silent) first.
    pub fn try_read_line(&mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let line = String::from_utf8_lossy(&line);
                return Some(line.trim_end_matches(['\r', '\n']).to_string());
            }
            if !matches!(self.fill(deadline), Fill::Data) {
                return None;
            }
        }
    }

    /// Reads one line and asserts it starts with `prefix`; returns it.
    pub fn expect_line(&mut self, prefix: &str) -> String {
        let line = self.read_line();
        assert!(
            line.starts_with(prefix),
            "port {}: expected a line starting with {prefix:?}, got {line:?}",
            self.port
        );
        line
    }

    /// IMAP: reads lines until one starting with "`tag` " (included as the last element).
    pub fn read_until_tagged(&mut self, tag: &str) -> Vec<String> {
        let prefix = format!("{tag} ");
        let mut lines = Vec::new();
        loop {
            let line = self.read_line();
            let done = line.starts_with(&prefix);
            lines.push(line);
            if done {
                return lines;
            }
        }
    }

    /// Reads exactly `n` bytes.
    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let deadline = Instant::now() + READ_TIMEOUT;
        while self.buf.len() < n {
            self.fill_or_panic(deadline, &format!("{n} bytes"));
        }
        self.buf.drain(..n).collect()
    }

    /// Reads until the peer closes (EOF or reset). Panics if that does not happen in time.
    pub fn read_to_end_or_eof(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            match self.fill(deadline) {
                Fill::Data => {}
                Fill::Eof | Fill::Error(_) => return std::mem::take(&mut self.buf),
                Fill::Timeout => self.fail("EOF", "read timeout"),
            }
        }
    }

    /// True if the peer closes the connection within 5 s. Unread and newly arriving data are
    /// discarded (read what you want to check first).
    pub fn is_closed(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        self.buf.clear();
        loop {
            match self.fill(deadline) {
                Fill::Data => self.buf.clear(),
                Fill::Eof | Fill::Error(_) => return true,
                Fill::Timeout => return false,
            }
        }
    }

    /// Bytes received but not yet consumed.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }
}

// ---------------------------------------------------------------------------------------------
// Protocol helpers
// ---------------------------------------------------------------------------------------------

/// IMAP `TAG LOGIN user pass` (quoted strings); asserts the tagged response is OK and
/// returns it.
pub fn imap_login(client: &mut Client, tag: &str, user: &str, pass: &str) -> String {
    client.send_line(&format!("{tag} LOGIN \"{user}\" \"{pass}\""));
    let lines = client.read_until_tagged(tag);
    let last = lines.last().unwrap().clone();
    assert!(
        last.starts_with(&format!("{tag} OK")),
        "IMAP login as {user} failed: {lines:?}"
    );
    last
}

/// IMAP `TAG FETCH seq BODY.PEEK[]` (a mailbox must be SELECTed/EXAMINEd first); returns
/// exactly the message bytes of the literal and
/// asserts the tagged response is OK.
pub fn imap_fetch_raw(client: &mut Client, tag: &str, seq: u32) -> Vec<u8> {
    client.send_line(&format!("{tag} FETCH {seq} BODY.PEEK[]"));
    let prefix = format!("{tag} ");
    let mut body = None;
    loop {
        let line = client.read_line();
        if line.starts_with(&prefix) {
            assert!(
                line.starts_with(&format!("{tag} OK")),
                "FETCH {seq} failed: {line}"
            );
            return body.unwrap_or_else(|| panic!("FETCH {seq}: no literal before {line:?}"));
        }
        if body.is_none() && line.starts_with('*') && line.contains("FETCH") {
            if let Some(n) = line
                .strip_suffix('}')
                .and_then(|l| l.rsplit_once('{'))
                .and_then(|(_, n)| n.trim_end_matches('+').parse::<usize>().ok())
            {
                body = Some(client.read_exact(n));
                // The rest of the FETCH response (e.g. ")") follows on the next line.
            }
        }
    }
}

/// POP3 `RETR n`: asserts "+OK", reads the multi-line body, undoes dot-stuffing and returns
/// the message bytes with CRLF line ends.
pub fn pop3_retr(client: &mut Client, n: u32) -> Vec<u8> {
    client.send_line(&format!("RETR {n}"));
    client.expect_line("+OK");
    let mut out = Vec::new();
    loop {
        let line = client.read_line_raw();
        if line == b"." {
            return out;
        }
        let line = line.strip_prefix(b".").unwrap_or(&line);
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
}

/// ManageSieve: reads lines until a status response (OK / NO / BYE), returned last.
pub fn sieve_read_response(client: &mut Client) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let line = client.read_line();
        let upper = line.to_ascii_uppercase();
        let done = ["OK", "NO", "BYE"]
            .iter()
            .any(|s| upper == *s || upper.starts_with(&format!("{s} ")));
        lines.push(line);
        if done {
            return lines;
        }
    }
}

/// The guard is on by default; a test not about it must not have its failed logins delayed or
/// its address banned by another step, so a native configuration without a `[guard]` table
/// gets one that turns it off.
fn guard_off_unless_configured(args: &[String]) {
    let Some(path) = args
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| args.get(i + 1))
    else {
        return;
    };
    guard_off_unless_configured_in(Path::new(path));
}

/// Turn the guard off in a native configuration file that does not configure it.
pub fn guard_off_unless_configured_in(path: &Path) {
    let Ok(text) = fs::read_to_string(path) else {
        return;
    };
    if !text.contains("[guard]") {
        fs::write(path, format!("[guard]\nenabled = false\n\n{text}")).expect("write config");
    }
}

/// A TCP connection to 127.0.0.1:`port` from `source` (any 127.x.y.z on Linux's loopback), so
/// that tests about per-address rules each have addresses of their own.
pub fn connect_from(source: &str, port: u16) -> io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let source: std::net::IpAddr = source
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())?;
    Ok(socket.into())
}
