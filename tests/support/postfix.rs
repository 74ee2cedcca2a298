//! A private Postfix per test, beside a private Dovecot: SMTP submission into real mailboxes.
//!
//! [`MailServers::start`] starts both: a [`Dovecot`] that takes mail ([`Dovecot::start_for_mail`]:
//! LMTP, SASL for Postfix, its own submission service) and a [`Postfix`] with a configuration
//! directory, queue and data directory of its own under a temp dir, on reserved loopback ports
//! (`ports.rs`): submission (STARTTLS, AUTH through Dovecot, XCLIENT from loopback), submissions
//! (implicit TLS) and a plain smtpd that Dovecot's submission service relays to. Mail for
//! `USER@example.org` is delivered by LMTP into USER's INBOX, where IMAP reads it back; Postfix
//! logs to a file of its own ([`Postfix::log_text`]).
//!
//! Postfix's master runs only as root (as CI runs the suite): the harness runs it in the
//! foreground (`master -s`, no daemon), so that it is this process's child, stopped on drop.

use super::*;

/// Postfix's main.cf template.
const MAIN_CF_TEMPLATE: &str = include_str!("postfix.main.cf.in");
/// Postfix's master.cf template.
const MASTER_CF_TEMPLATE: &str = include_str!("postfix.master.cf.in");

/// Message printed when Postfix is missing; tests fail with it rather than pass silently.
pub const POSTFIX_MISSING: &str =
    "postfix (with swaks, msmtp, dovecot-submissiond, dovecot-lmtpd) not installed: run scripts/test.sh";

/// The mail domain the test Postfix delivers by LMTP to the test Dovecot: `USER@MAIL_DOMAIN`
/// reaches the INBOX of Dovecot's user USER (one of [`USERS`] without a domain).
pub const MAIL_DOMAIN: &str = "example.org";

/// A second mail domain, delivered into the same mailboxes by Postfix's virtual(8): for
/// messages that need SMTPUTF8, which Dovecot 2.3's LMTP does not offer.
pub const UTF8_MAIL_DOMAIN: &str = "utf8.example.org";

/// How long [`Postfix`] start-up may take before the attempt fails.
pub const POSTFIX_START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a message may take from Postfix's queue to the mailbox.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);

const POSTFIX_CMD: &str = "/usr/sbin/postfix";
const MASTER: &str = "/usr/lib/postfix/sbin/master";

/// True if Postfix is installed, with Dovecot's LMTP and submission servers beside it.
pub fn postfix_installed() -> bool {
    Path::new(POSTFIX_CMD).is_file()
        && Path::new(MASTER).is_file()
        && ["lmtp", "submission", "submission-login"].iter().all(|s| {
            Path::new("/usr/lib/dovecot").join(s).exists()
                || Path::new("/usr/libexec/dovecot").join(s).exists()
        })
}

/// Panics with [`POSTFIX_MISSING`] unless Postfix (and Dovecot with LMTP and submission) is
/// installed, and unless this is root (Postfix's master runs only as root).
pub fn require_postfix() {
    require_dovecot();
    assert!(postfix_installed(), "{POSTFIX_MISSING}");
    assert!(
        cmd_stdout("id", &["-u"]).as_deref() == Some("0"),
        "the test Postfix needs root (its master process runs only as root; CI runs as root)"
    );
}

/// A test Dovecot and a test Postfix delivering to it (see the module's documentation).
/// Dropping it stops both.
pub struct MailServers {
    /// Postfix: submission, submissions and plain SMTP (Dovecot's submission relays here).
    pub postfix: Postfix,
    /// Dovecot: IMAP and the rest as [`Dovecot::start`], plus LMTP, SASL for Postfix and its own
    /// submission service ([`Dovecot::submission`]).
    pub dovecot: Dovecot,
}

impl MailServers {
    /// Starts Dovecot and then Postfix; returns once both answer on every port.
    pub fn start() -> MailServers {
        require_postfix();
        let relay_port = free_port();
        let dovecot = Dovecot::start_for_mail(relay_port);
        let postfix = Postfix::start(&dovecot, relay_port);
        MailServers { postfix, dovecot }
    }

    /// Dovecot's submission port (a second SMTP back end, relaying through Postfix).
    pub fn dovecot_submission(&self) -> u16 {
        self.dovecot
            .submission
            .expect("Dovecot::start_for_mail starts the submission service")
    }

    /// Waits until a message containing `marker` is in `user`'s INBOX; returns it as stored
    /// (LF line ends). Panics after [`DELIVERY_TIMEOUT`] with Postfix's and Dovecot's logs.
    pub fn wait_for_mail(&self, user: &str, marker: &str) -> Vec<u8> {
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
        loop {
            if let Some(message) = self.dovecot.find_mail(user, marker) {
                return message;
            }
            assert!(
                Instant::now() < deadline,
                "no message containing {marker:?} for {user} after {DELIVERY_TIMEOUT:?}.\n\
                 postfix log:\n{}\ndovecot log:\n{}",
                self.postfix.log_text(),
                self.dovecot.log_text()
            );
            sleep(Duration::from_millis(25));
        }
    }

    /// Postfix's and Dovecot's logs, for a failure message.
    pub fn logs(&self) -> String {
        format!(
            "postfix log ({}):\n{}\ndovecot log ({}):\n{}",
            self.postfix.log.display(),
            self.postfix.log_text(),
            self.dovecot.log.display(),
            self.dovecot.log_text()
        )
    }
}

/// A private Postfix on loopback delivering to a test [`Dovecot`] started with
/// [`Dovecot::start_for_mail`]. Dropping it stops Postfix and removes its directory.
pub struct Postfix {
    /// Submission (RFC 6409): STARTTLS offered (certs().cert), AUTH PLAIN and LOGIN through
    /// Dovecot, sending only after AUTH, XCLIENT from 127.0.0.0/8.
    pub submission: u16,
    /// Submissions (RFC 8314): implicit TLS, otherwise as `submission`.
    pub submissions: u16,
    /// Plain SMTP: no AUTH, takes mail from 127.0.0.0/8 (`mynetworks`), STARTTLS offered.
    pub smtp: u16,
    /// Instance directory: conf/ (main.cf, master.cf), queue/, data/, maillog.
    pub dir: PathBuf,
    /// Postfix's log file (`maillog_file`).
    pub log: PathBuf,
    child: Option<Child>,
    tmp: Option<tempfile::TempDir>,
}

/// The ports one Postfix instance listens on.
#[derive(Clone, Copy)]
struct Ports {
    smtp: u16,
    submission: u16,
    submissions: u16,
}

impl Postfix {
    /// Starts Postfix delivering to `dovecot`, its plain smtpd on `smtp_port` (a port from
    /// [`free_port`]: the one `dovecot` relays to, for [`MailServers`]). Returns once every
    /// port greets. Panics with the log if Postfix does not come up.
    pub fn start(dovecot: &Dovecot, smtp_port: u16) -> Postfix {
        require_postfix();
        let mut errors = Vec::new();
        for attempt in 0..2 {
            let ports = Ports {
                // The plain port is the caller's; a second attempt keeps it.
                smtp: smtp_port,
                submission: free_port(),
                submissions: free_port(),
            };
            match Self::try_start(dovecot, ports) {
                Ok(postfix) => return postfix,
                Err(e) => errors.push(format!("attempt {}: {e}", attempt + 1)),
            }
        }
        panic!("could not start postfix:\n{}", errors.join("\n-----\n"));
    }

    fn try_start(dovecot: &Dovecot, ports: Ports) -> Result<Postfix, String> {
        let tmp = tempfile::Builder::new()
            .prefix("portcullis-postfix-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let dir = tmp.path().to_path_buf();
        // The postfix user walks into the queue; the instance directory is root's.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
        write_config(&dir, dovecot, ports)?;
        let log = dir.join("maillog");
        // Creates the queue's directories with their owners and modes (post-install), and
        // checks the rest.
        let check = Command::new(POSTFIX_CMD)
            .arg("-c")
            .arg(dir.join("conf"))
            .arg("check")
            .output()
            .map_err(|e| format!("run postfix check: {e}"))?;
        if !check.status.success() {
            return Err(format!(
                "postfix check failed ({}):\n{}{}\nlog:\n{}",
                check.status,
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr),
                read_lossy(&log)
            ));
        }
        let stderr_path = dir.join("master.stderr");
        let out = fs::File::create(&stderr_path).map_err(|e| e.to_string())?;
        // `-s`: stay in the foreground (our child) without a terminal; `-d` would keep stdin.
        let child = Command::new(MASTER)
            .arg("-c")
            .arg(dir.join("conf"))
            .arg("-s")
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(|e| e.to_string())?)
            .stderr(out)
            .spawn()
            .map_err(|e| format!("spawn postfix master: {e}"))?;
        end_with_this_process(child.id());
        let mut postfix = Postfix {
            submission: ports.submission,
            submissions: ports.submissions,
            smtp: ports.smtp,
            dir,
            log,
            child: Some(child),
            tmp: Some(tmp),
        };
        postfix.wait_ready(&stderr_path)?;
        Ok(postfix)
    }

    /// Waits until master listens on every port and the plain ports greet (smtpd runs).
    fn wait_ready(&mut self, stderr_path: &Path) -> Result<(), String> {
        let deadline = Instant::now() + POSTFIX_START_TIMEOUT;
        let mut pending = vec![self.smtp, self.submission, self.submissions];
        while !pending.is_empty() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "postfix master exited early ({status}).\noutput:\n{}\nlog:\n{}",
                    read_lossy(stderr_path),
                    self.log_text()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "postfix ports {pending:?} not listening after {POSTFIX_START_TIMEOUT:?}.\n\
                     output:\n{}\nlog:\n{}",
                    read_lossy(stderr_path),
                    self.log_text()
                ));
            }
            // The kernel's tables: no probe connection in Postfix's log.
            pending.retain(|p| !port_listening(*p));
            if !pending.is_empty() {
                sleep(Duration::from_millis(25));
            }
        }
        for port in [self.smtp, self.submission] {
            smtp_greeting(port, deadline).map_err(|e| {
                format!(
                    "postfix port {port}: no greeting: {e}\nlog:\n{}",
                    self.log_text()
                )
            })?;
        }
        Ok(())
    }

    /// Postfix's log so far, once it has settled.
    pub fn log_text(&self) -> String {
        settled(&self.log)
    }

    /// Polls the log until it contains `needle`; false after `timeout`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_file_contains(&self.log, needle, timeout)
    }

    /// Stops Postfix: TERM to the master, which passes it to its children (its process group)
    /// and exits without waiting for them; then waits until the group is gone, so that no
    /// child still writes into the instance directory. KILL to the group after 5 s.
    /// Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The master is a session and process group leader (setsid): its pid is the group's.
        let group = child.id();
        let _ = Command::new("kill")
            .args(["-TERM", &group.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let exited = matches!(child.try_wait(), Ok(Some(_)) | Err(_));
            if exited && !process_group_alive(group) {
                return;
            }
            if Instant::now() >= deadline {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{group}")])
                    .status();
                let _ = child.wait();
                return;
            }
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Postfix {
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

/// True if a live process (not a zombie) is in process group `group`, going by /proc.
fn process_group_alive(group: u32) -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries.filter_map(Result::ok).any(|entry| {
        let stat = read_lossy(&entry.path().join("stat"));
        // "PID (COMM) STATE PPID PGRP ...": COMM may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.len() > 2 && fields[0] != "Z" && fields[2] == group.to_string()
    })
}

/// Writes conf/main.cf and conf/master.cf, and makes the queue and data directories.
fn write_config(dir: &Path, dovecot: &Dovecot, ports: Ports) -> Result<(), String> {
    let certs = certs();
    let (mail_uid, mail_gid) = dovecot.mail_owner();
    let instance = format!("postfix-test-{}", unique_suffix());
    // virtual(8) finds a mailbox only through virtual_mailbox_maps, and smtpd checks
    // recipients in both domains against it: every user without a domain, in both.
    let mailboxes: Vec<String> = USERS
        .iter()
        .map(|(user, _)| *user)
        .filter(|user| !user.contains('@'))
        .flat_map(|user| {
            [MAIL_DOMAIN, UTF8_MAIL_DOMAIN].map(|domain| format!("{user}@{domain}={user}/Maildir/"))
        })
        .collect();
    let vars = [
        ("DIR", dir.display().to_string()),
        ("INSTANCE", instance),
        ("CERT", certs.cert.display().to_string()),
        ("KEY", certs.key.display().to_string()),
        ("AUTH_SOCKET", dovecot.auth_socket().display().to_string()),
        ("LMTP_SOCKET", dovecot.lmtp_socket().display().to_string()),
        ("HOMES", dovecot.homes().display().to_string()),
        ("MAILBOXES", mailboxes.join(", ")),
        ("MAIL_UID", mail_uid.to_string()),
        ("MAIL_GID", mail_gid.to_string()),
        ("SMTP_PORT", ports.smtp.to_string()),
        ("SUBMISSION_PORT", ports.submission.to_string()),
        ("SUBMISSIONS_PORT", ports.submissions.to_string()),
    ];
    let conf = dir.join("conf");
    for sub in ["conf", "queue", "data"] {
        fs::create_dir_all(dir.join(sub)).map_err(|e| format!("mkdir {sub}: {e}"))?;
    }
    for (name, template) in [
        ("main.cf", MAIN_CF_TEMPLATE),
        ("master.cf", MASTER_CF_TEMPLATE),
    ] {
        let path = conf.join(name);
        fs::write(&path, render_template(template, &vars)).map_err(|e| e.to_string())?;
        // Postfix waits (300 ms at a time, up to seconds) while a configuration file is younger
        // than a second or two, in case an editor is still writing it: make it a minute old.
        let a_minute_ago = SystemTime::now() - Duration::from_secs(60);
        fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(a_minute_ago))
            .map_err(|e| format!("{}: set mtime: {e}", path.display()))?;
    }
    // Postfix wants its data directory its own (the queue's subdirectories `postfix check`
    // makes itself).
    let postfix_uid: u32 = cmd_stdout("id", &["-u", "postfix"])
        .and_then(|s| s.parse().ok())
        .ok_or("no postfix user (package postfix)")?;
    std::os::unix::fs::chown(dir.join("data"), Some(postfix_uid), None)
        .map_err(|e| format!("chown data: {e}"))?;
    Ok(())
}

/// Reads the 220 greeting of the SMTP server on `port`, then says QUIT.
fn smtp_greeting(port: u16, deadline: Instant) -> Result<(), String> {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"\r\n") {
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
    }
    if !got.starts_with(b"220 ") {
        return Err(format!("greeting {:?}", String::from_utf8_lossy(&got)));
    }
    let _ = sock.write_all(b"QUIT\r\n");
    Ok(())
}
