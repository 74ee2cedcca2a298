//! A private Dovecot instance per test, on free loopback ports.

use super::*;

/// The Dovecot configuration template (shared with scripts/demo.sh).
pub const DOVECOT_CONF_TEMPLATE: &str = include_str!("dovecot.conf.in");

/// What [`Dovecot::start_for_mail`] appends to the template: LMTP and SASL for the test Postfix,
/// and Dovecot's own submission service.
const DOVECOT_MAIL_CONF_TEMPLATE: &str = include_str!("dovecot.mail.conf.in");

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

/// The ports a Dovecot listens on.
#[derive(Debug, Clone, Copy)]
pub struct DovecotPorts {
    pub imap: u16,
    pub imap_haproxy: u16,
    pub imaps: u16,
    pub pop3: u16,
    pub pop3s: u16,
    pub sieve: u16,
    pub sieve_haproxy: u16,
}

impl DovecotPorts {
    /// Ports of [`free_port`]'s: free on 127.0.0.1 and on the wildcard address, so on every
    /// loopback address.
    pub fn free() -> DovecotPorts {
        DovecotPorts {
            imap: free_port(),
            imap_haproxy: free_port(),
            imaps: free_port(),
            pop3: free_port(),
            pop3s: free_port(),
            sieve: free_port(),
            sieve_haproxy: free_port(),
        }
    }
}

/// How a member of a shared-storage cluster (`support::cluster`) differs from a private
/// Dovecot: a loopback address of its own, the ports and the mail homes every member shares,
/// users besides [`USERS`], and configuration lines of its own.
#[derive(Debug, Clone)]
pub struct ClusterMember {
    /// Where every listener of this member listens (instead of 127.0.0.1).
    pub ip: std::net::Ipv4Addr,
    /// The same on every member: a pool names its servers by address and port.
    pub ports: DovecotPorts,
    /// The directory holding every user's home (`HOMES/USER`), shared by the members.
    pub homes: PathBuf,
    /// Users (name, password) besides [`USERS`].
    pub users: Vec<(String, String)>,
    /// Appended to the rendered configuration.
    pub extra_conf: String,
}

/// A private Dovecot instance on free loopback ports. Dropping it stops Dovecot and removes
/// its directory.
pub struct Dovecot {
    /// The address every listener listens on: 127.0.0.1 but for a [`ClusterMember`].
    pub ip: std::net::Ipv4Addr,
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
    /// Dovecot's SMTP submission service (STARTTLS offered, AUTH PLAIN LOGIN, XCLIENT from
    /// loopback), relaying to a test Postfix: only with [`Dovecot::start_for_mail`].
    pub submission: Option<u16>,
    /// Instance directory: dovecot.conf, passwd, home/USER, run/ (base_dir), dovecot.log.
    pub dir: PathBuf,
    /// The rendered configuration file.
    pub conf: PathBuf,
    /// Dovecot's log file.
    pub log: PathBuf,
    /// The directory holding every user's home (`DIR/home` but for a [`ClusterMember`]).
    homes: PathBuf,
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
        Self::start_with(mechanisms, None, None)
    }

    /// Like [`Dovecot::start`], also taking mail for a test Postfix (`support::postfix`): LMTP
    /// delivery on [`Dovecot::lmtp_socket`] (recipient `USER@example.org` to USER's INBOX), SASL
    /// on [`Dovecot::auth_socket`] (`smtpd_sasl_type = dovecot`), and Dovecot's own submission
    /// service on [`Dovecot::submission`], relaying to 127.0.0.1:`relay_port` (a port reserved
    /// for that Postfix's plain smtpd, which may start after this). Everything the other
    /// constructors offer stays as it is.
    pub fn start_for_mail(relay_port: u16) -> Dovecot {
        Self::start_with("plain login", None, Some(relay_port))
    }

    /// Like [`Dovecot::start`], also taking OAUTHBEARER and XOAUTH2 tokens, which it checks at
    /// `introspection_url` (RFC 7662, POST `token=...`, an answer `{"active": true,
    /// "username": USER}`).
    pub fn start_with_oauth2(introspection_url: &str) -> Dovecot {
        Self::start_with(
            "plain login oauthbearer xoauth2",
            Some(introspection_url),
            None,
        )
    }

    /// A member of a shared-storage cluster, as `member` says, offering what [`Dovecot::start`]
    /// offers (on `member.ports`, each try: the cluster chose them).
    pub fn start_member(member: &ClusterMember) -> Dovecot {
        Self::start_any("plain login", None, None, Some(member))
    }

    fn start_with(mechanisms: &str, oauth2: Option<&str>, relay_port: Option<u16>) -> Dovecot {
        Self::start_any(mechanisms, oauth2, relay_port, None)
    }

    fn start_any(
        mechanisms: &str,
        oauth2: Option<&str>,
        relay_port: Option<u16>,
        member: Option<&ClusterMember>,
    ) -> Dovecot {
        require_dovecot();
        let mut errors = Vec::new();
        for _ in 0..3 {
            match Self::try_start(mechanisms, oauth2, relay_port, member) {
                Ok(d) => return d,
                Err(e) => errors.push(e),
            }
        }
        panic!("could not start dovecot:\n{}", errors.join("\n-----\n"));
    }

    fn try_start(
        mechanisms: &str,
        oauth2: Option<&str>,
        relay_port: Option<u16>,
        member: Option<&ClusterMember>,
    ) -> Result<Dovecot, String> {
        let certs = certs();
        let tmp = tempfile::Builder::new()
            .prefix("portcullis-dovecot-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let dir = tmp.path().to_path_buf();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
        let ident = identity();

        // Users.
        let extra_users = member.map(|m| m.users.as_slice()).unwrap_or_default();
        let passwd: String = USERS
            .iter()
            .map(|(u, p)| (*u, *p))
            .chain(extra_users.iter().map(|(u, p)| (u.as_str(), p.as_str())))
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
        let home = member.map_or_else(|| dir.join("home"), |m| m.homes.clone());
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

        let ports = member.map_or_else(DovecotPorts::free, |m| m.ports);
        let DovecotPorts {
            imap,
            imap_haproxy,
            imaps,
            pop3,
            pop3s,
            sieve,
            sieve_haproxy,
        } = ports;
        let ip = member.map_or(std::net::Ipv4Addr::LOCALHOST, |m| m.ip);
        let submission = relay_port.map(|_| free_port());
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
        let conf_text = match member {
            None => conf_text,
            Some(m) => member_conf(conf_text, &dir, m),
        };
        let conf_text = match (relay_port, submission) {
            (Some(relay), Some(submission)) => {
                conf_text
                    + &render_template(
                        DOVECOT_MAIL_CONF_TEMPLATE,
                        &[
                            ("SUBMISSION_PORT", submission.to_string()),
                            ("RELAY_PORT", relay.to_string()),
                        ],
                    )
            }
            _ => conf_text,
        };
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
            ip,
            imap,
            imap_haproxy,
            sieve_haproxy,
            imaps,
            pop3,
            pop3s,
            sieve,
            submission,
            dir,
            conf,
            log,
            homes: home,
            child: Some(child),
            tmp: Some(tmp),
        };
        let deadline = Instant::now() + DOVECOT_START_TIMEOUT;
        let mut pending = vec![imap, imaps, pop3, pop3s, sieve];
        pending.extend(submission);
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
            pending.retain(|p| !ip_port_open(ip, *p));
            if !pending.is_empty() {
                sleep(Duration::from_millis(50));
            }
        }
        // Dovecot answers "* OK Waiting for authentication process to respond.." until auth
        // is up; wait for the real greeting on each plain port.
        for port in [imap, pop3, sieve].into_iter().chain(submission) {
            if let Err(e) = wait_greeting(ip, port, deadline) {
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
        wait_file_contains(&self.log, needle, timeout)
    }

    /// Whether `user` logged in here (waiting a little for the line, as it may come last).
    pub fn saw_login(&self, user: &str) -> bool {
        self.wait_log(&format!("Login: user=<{user}>"), Duration::from_secs(5))
    }

    /// Home directory of `user` (mail in `home/Maildir`, sieve scripts in `home/sieve`).
    pub fn home(&self, user: &str) -> PathBuf {
        self.homes.join(user)
    }

    /// The directory holding every user's home (`home/USER`).
    pub fn homes(&self) -> PathBuf {
        self.homes.clone()
    }

    /// The uid and gid owning the mail homes (never root: Dovecot refuses to run mail
    /// processes as root).
    pub fn mail_owner(&self) -> (u32, u32) {
        let ident = identity();
        (ident.mail_uid, ident.mail_gid)
    }

    /// The socket where Postfix asks this Dovecot for SASL (only with
    /// [`Dovecot::start_for_mail`]).
    pub fn auth_socket(&self) -> PathBuf {
        self.dir.join("run").join("postfix-auth")
    }

    /// The LMTP socket where Postfix delivers (only with [`Dovecot::start_for_mail`]).
    pub fn lmtp_socket(&self) -> PathBuf {
        self.dir.join("run").join("postfix-lmtp")
    }

    /// The message in `user`'s Maildir (new or cur) whose text contains `marker` (a unique
    /// Message-ID, say), as stored: Dovecot's Maildir keeps LF line ends, IMAP serves CRLF.
    pub fn find_mail(&self, user: &str, marker: &str) -> Option<Vec<u8>> {
        let maildir = self.home(user).join("Maildir");
        ["new", "cur"].iter().find_map(|sub| {
            fs::read_dir(maildir.join(sub))
                .ok()?
                .filter_map(|entry| fs::read(entry.ok()?.path()).ok())
                .find(|bytes| contains_bytes(bytes, marker.as_bytes()))
        })
    }

    /// Process id of the master process, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
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

/// True if `needle` occurs in `haystack`.
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// A cluster member's configuration: its listeners on its own address, the shared homes, and
/// its own lines.
fn member_conf(conf_text: String, dir: &Path, member: &ClusterMember) -> String {
    let ip = member.ip.to_string();
    let own_home = format!("home={}/home/%u", dir.display());
    assert!(conf_text.contains(&own_home), "the template's userdb moved");
    conf_text
        .replace("listen = 127.0.0.1", &format!("listen = {ip}"))
        .replace("address = 127.0.0.1", &format!("address = {ip}"))
        .replace(&own_home, &format!("home={}/%u", member.homes.display()))
        + "\n"
        + &member.extra_conf
        + "\n"
}

fn ip_port_open(ip: std::net::Ipv4Addr, port: u16) -> bool {
    let addr = SocketAddr::from((ip, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

fn wait_greeting(ip: std::net::Ipv4Addr, port: u16, deadline: Instant) -> Result<(), String> {
    let mut sock = TcpStream::connect((ip, port)).map_err(|e| e.to_string())?;
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
