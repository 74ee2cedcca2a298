//! Perdition compatibility, told as the stories of an admin replacing Perdition 2.2 with
//! `portcullis perdition`: the Debian How-To's IMAPS configuration file works unchanged, the
//! openssl s_client session from that How-To replays, unsupported options are refused by name,
//! `portcullis check` vets a file, fail2ban's stock `perdition` filter still bans, and the log
//! lines read exactly like Perdition's.

mod support;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use support::*;

/// The configuration snippet of the seed How-To (perdition-debian-howto.txt), verbatim.
const SEED_CONF: &str = "\
outgoing_server [IP OF DOVECOT SERVER]
outgoing_port 143
lower_case all
connection_limit 100
no_lookup
timeout 30
#debug
imap_capability \"IMAP4rev1 LOGIN-REFERRALS ID ENABLE IDLE LITERAL+\"
ssl_mode ssl_listen
ssl_cert_file /path/to/cert.pem
ssl_key_file /path/to/key.pem
ssl_dh_params_file /path/to/dhparm.pem
";

const SEED_CAPABILITY: &str = "IMAP4rev1 LOGIN-REFERRALS ID ENABLE IDLE LITERAL+";

/// The seed file with only its addresses and paths changed: the Dovecot of `dc`, the test
/// certificate, and an existing (if meaningless) file as DH parameters.
fn seed_conf(dc: &Dovecot) -> String {
    let c = certs();
    let text = SEED_CONF
        .replace("[IP OF DOVECOT SERVER]", "127.0.0.1")
        .replace("outgoing_port 143", &format!("outgoing_port {}", dc.imap))
        .replace("/path/to/cert.pem", &c.cert.display().to_string())
        .replace("/path/to/key.pem", &c.key.display().to_string())
        .replace("/path/to/dhparm.pem", &c.ca.display().to_string());
    // Every other line is untouched.
    assert_eq!(text.lines().count(), SEED_CONF.lines().count());
    text
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// `portcullis perdition -f FILE -P IMAP4S --no_daemon --bind_address 127.0.0.1
/// --listen_port PORT --log_facility DEST`.
fn perdition_args(conf: &Path, protocol: &str, port: u16, log: &str) -> Vec<String> {
    args(&[
        "perdition",
        "-f",
        &conf.display().to_string(),
        "-P",
        protocol,
        "--no_daemon",
        "--bind_address",
        "127.0.0.1",
        "--listen_port",
        &port.to_string(),
        "--log_facility",
        log,
    ])
}

/// Starts `portcullis perdition` on the seed file, logging to its captured stdout (`-F -`).
/// The returned TempDir holds the configuration file.
fn start_seed_proxy(dc: &Dovecot) -> (Proxy, u16, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("perdition.imap4s.conf");
    fs::write(&conf, seed_conf(dc)).expect("write seed conf");
    let port = free_port();
    let proxy = Proxy::start_args(&perdition_args(&conf, "IMAP4S", port, "-"), &[port]);
    (proxy, port, dir)
}

/// A log line split as syslog writes it: `Mmm dd hh:mm:ss [host ]ident[pid]: message`.
struct LogLine {
    ident: String,
    pid: u32,
    message: String,
}

fn is_syslog_timestamp(s: &str) -> bool {
    // "%b %e %H:%M:%S", e.g. "Nov 25 22:33:40" or "Nov  5 22:33:40".
    let b = s.as_bytes();
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    b.len() == 15
        && MONTHS.contains(&&s[..3])
        && b[3] == b' '
        && (b[4] == b' ' || b[4].is_ascii_digit())
        && b[5].is_ascii_digit()
        && b[6] == b' '
        && b[7..9].iter().all(u8::is_ascii_digit)
        && b[9] == b':'
        && b[10..12].iter().all(u8::is_ascii_digit)
        && b[12] == b':'
        && b[13..15].iter().all(u8::is_ascii_digit)
}

fn parse_log_line(line: &str) -> Option<LogLine> {
    if line.len() < 16 || !line.is_char_boundary(15) || !is_syslog_timestamp(&line[..15]) {
        return None;
    }
    let rest = line[15..].strip_prefix(' ')?;
    let (head, message) = rest.split_once("]: ")?;
    // head = "[host ]ident[pid"
    let tag = head.rsplit(' ').next()?;
    let (ident, pid) = tag.split_once('[')?;
    if ident.is_empty() {
        return None;
    }
    Some(LogLine {
        ident: ident.to_string(),
        pid: pid.parse().ok()?,
        message: message.to_string(),
    })
}

/// The messages of all log lines, asserting every non-empty line is a well-formed
/// `timestamp [host] ident[pid]: message` line from `ident` and `pid`.
fn log_messages(text: &str, ident: &str, pid: u32) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let parsed = parse_log_line(l)
                .unwrap_or_else(|| panic!("not a syslog-style log line: {l:?}\nlog:\n{text}"));
            assert_eq!(parsed.ident, ident, "wrong ident in {l:?}");
            assert_eq!(parsed.pid, pid, "wrong pid in {l:?}");
            parsed.message
        })
        .collect()
}

fn wait_file_contains(path: &Path, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(25));
    }
}

/// Waits for `child` to exit; kills it and panics after `timeout`.
fn wait_child(child: &mut std::process::Child, timeout: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still running after {timeout:?}");
        }
        sleep(Duration::from_millis(25));
    }
}

/// Runs `portcullis ARGS` that is expected to terminate by itself (a refused configuration
/// must not start serving); returns (status, stdout, stderr).
fn run_to_exit(args: &[String]) -> (ExitStatus, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new(portcullis_bin())
        .args(args)
        .env(PERDITION_ROOT_ENV, dir.path())
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).expect("stdout file"))
        .stderr(fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("spawn portcullis");
    let status = wait_child(&mut child, Duration::from_secs(10), "portcullis");
    (
        status,
        fs::read_to_string(out).unwrap_or_default(),
        fs::read_to_string(err).unwrap_or_default(),
    )
}

/// Reads IMAP lines until the tagged one, returning them with the number of bytes they
/// occupied on the wire (CRLF included).
fn read_tagged_counting(c: &mut Client, tag: &str) -> (Vec<String>, usize) {
    let lines = c.read_until_tagged(tag);
    let bytes = lines.iter().map(|l| l.len() + 2).sum();
    (lines, bytes)
}

// ---------------------------------------------------------------------------------------------
// The How-To, replayed
// ---------------------------------------------------------------------------------------------

#[test]
fn seed_config_file_serves_the_howto_session() {
    let dc = Dovecot::start();
    let (proxy, port, _dir) = start_seed_proxy(&dc);

    // The DH parameters file is accepted, and the admin is told it has no effect.
    let log = proxy.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("ssl_dh_params_file")
                && l.contains(&certs().ca.display().to_string())),
        "no warning about ssl_dh_params_file; log:\n{log}"
    );

    // openssl s_client -connect host:imaps, as in the How-To.
    let mut c = Client::tls(port);
    let greeting = c.read_line();
    let caps_prefix = format!("* OK [CAPABILITY {SEED_CAPABILITY}");
    assert!(greeting.starts_with(&caps_prefix), "greeting: {greeting:?}");
    let after = &greeting[caps_prefix.len()..];
    assert!(
        after.starts_with(']') || after.starts_with(' '),
        "configured capability string not followed by ']' or another word: {greeting:?}"
    );
    let (_, text) = after.split_once("] ").expect("greeting text after ]");
    assert!(text.contains(" ready on "), "greeting: {greeting:?}");

    // The user types the name in capitals; `lower_case all` makes the back end see "alice"
    // (the harness Dovecot does not lower-case names itself).
    c.send_line("a login ALICE alicepw");
    let lines = c.read_until_tagged("a");
    let ok = lines.last().unwrap();
    assert!(
        ok.starts_with("a OK [CAPABILITY ") && ok.ends_with("] You are so in"),
        "login answer: {lines:?}"
    );
    // The capabilities are the back end's, now that the user is logged in there.
    assert!(ok.contains("IMAP4rev1") && ok.contains(" IDLE"), "{ok}");
    assert!(
        dc.saw_login("alice"),
        "Dovecot did not see alice log in:\n{}",
        dc.log_text()
    );

    // The session is Dovecot's: alice's mailbox is there.
    c.send_line("s SELECT INBOX");
    let sel = c.read_until_tagged("s");
    assert!(sel.iter().any(|l| l == "* 3 EXISTS"), "{sel:?}");
    assert!(sel.last().unwrap().starts_with("s OK"), "{sel:?}");

    c.send_line("a logout");
    c.expect_line("* BYE ");
    let done = c.expect_line("a OK Logout completed");
    // Dovecot's own answer carries its timing, e.g. "(0.001 + 0.000 secs)."; Portcullis'
    // pre-login LOGOUT answer would not.
    assert!(
        done.contains("secs)"),
        "not Dovecot's logout answer: {done:?}"
    );
    assert!(c.is_closed(), "connection not closed after logout");
    // The client hangs up too, as s_client does (a client that lingers is server.rs' story).
    drop(c);

    // Perdition logs the name as typed.
    assert!(
        proxy.wait_log("Closing session:", Duration::from_secs(5)),
        "no Closing line; log:\n{}",
        proxy.log_text()
    );
    let log = proxy.log_text();
    let auth: Vec<&str> = log.lines().filter(|l| l.contains("Auth:")).collect();
    assert_eq!(auth.len(), 1, "{log}");
    assert!(
        auth[0].contains("authentication_id=\"ALICE\"")
            && auth[0].contains("protocol=IMAP4S")
            && auth[0].ends_with("status=\"ok\""),
        "{}",
        auth[0]
    );
}

#[test]
fn openssl_s_client_session_through_the_seed_config() {
    let dc = Dovecot::start();
    let (proxy, port, _dir) = start_seed_proxy(&dc);

    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-CAfile",
            &certs().ca.display().to_string(),
            "-verify_return_error",
            "-quiet",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl s_client");
    {
        // openssl sends the typed lines with bare LF line ends.
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"a login ALICE alicepw\n").unwrap();
        stdin.flush().unwrap();
        sleep(Duration::from_millis(1500));
        stdin.write_all(b"a logout\n").unwrap();
        stdin.flush().unwrap();
        // EOF on stdin: with -quiet (ign_eof) s_client waits for the server to close.
    }
    let status = wait_child(&mut child, Duration::from_secs(20), "openssl s_client");
    let out = child.wait_with_output().expect("s_client output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ctx = format!(
        "status {status}\nstdout:\n{stdout}\nstderr:\n{stderr}\nproxy log:\n{}",
        proxy.log_text()
    );
    let lines: Vec<&str> = stdout.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("* OK [CAPABILITY {SEED_CAPABILITY}"))),
        "no greeting; {ctx}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("a OK ") && l.ends_with("You are so in")),
        "no login OK; {ctx}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("* BYE")),
        "no BYE; {ctx}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("a OK Logout completed") && l.contains("secs)")),
        "no logout answer from Dovecot; {ctx}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains(" BAD ") || l.contains(" NO ")),
        "an error answer; {ctx}"
    );
}

// ---------------------------------------------------------------------------------------------
// Options Portcullis does not implement
// ---------------------------------------------------------------------------------------------

/// Perdition's hosting of several domains by address: `--add_domain` without an explicit domain
/// appends the reverse DNS name of the local address the client reached (here 127.0.0.1,
/// `localhost` in /etc/hosts; depth 0 keeps every label), and the back end gets that name.
#[test]
fn add_domain_without_an_explicit_domain_appends_the_local_addresss_reverse_dns_name() {
    let dc = Dovecot::start();
    let mut passwd = fs::OpenOptions::new()
        .append(true)
        .open(dc.dir.join("passwd"))
        .unwrap();
    std::io::Write::write_all(&mut passwd, b"dora@localhost:{PLAIN}dorapw::::::\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    let port = free_port();
    let extra = ["--add_domain", "remote_login,0"];
    let proxy = Proxy::start_args(&imap4_args(&dc, port, &log, &extra), &[port]);
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    c.send_line("a LOGIN dora dorapw");
    let answer = c.read_until_tagged("a").pop().unwrap();
    assert!(
        answer.starts_with("a OK"),
        "{answer}; proxy:\n{}\nDovecot:\n{}",
        proxy.log_text(),
        dc.log_text()
    );
    assert!(dc.saw_login("dora@localhost"), "{}", dc.log_text());
}

#[test]
fn unsupported_option_in_the_config_file_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("perdition.conf");
    fs::write(
        &conf,
        "outgoing_server 127.0.0.1\nno_lookup\nauthenticate_in\n",
    )
    .unwrap();
    let port = free_port();
    let (status, _, stderr) = run_to_exit(&perdition_args(&conf, "IMAP4", port, "-"));
    assert!(!status.success(), "accepted authenticate_in: {stderr}");
    assert!(
        stderr.contains("authenticate_in"),
        "error does not name it: {stderr}"
    );
    assert!(
        stderr.contains("line 3"),
        "error does not say where: {stderr}"
    );
    assert!(!port_open(port), "a refused configuration is listening");
}

#[test]
fn unknown_option_is_refused_by_name() {
    let port = free_port();
    let (status, _, stderr) = run_to_exit(&args(&[
        "perdition",
        "-P",
        "IMAP4",
        "-s",
        "127.0.0.1",
        "--no_daemon",
        "--listen_port",
        &port.to_string(),
        "--frobnicate_the_mail",
    ]));
    assert!(!status.success(), "accepted an unknown option: {stderr}");
    assert!(
        stderr.contains("frobnicate_the_mail"),
        "error does not name it: {stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("perdition.conf");
    fs::write(&conf, "outgoing_server 127.0.0.1\nfrobnicate yes\n").unwrap();
    let (status, _, stderr) = run_to_exit(&perdition_args(&conf, "IMAP4", port, "-"));
    assert!(
        !status.success(),
        "accepted an unknown file option: {stderr}"
    );
    assert!(
        stderr.contains("frobnicate"),
        "error does not name it: {stderr}"
    );
    assert!(!port_open(port), "a refused configuration is listening");
}

// ---------------------------------------------------------------------------------------------
// portcullis check
// ---------------------------------------------------------------------------------------------

fn native_imaps_toml(cert: &Path, key: &Path, extra_listener_line: &str) -> String {
    format!(
        "[log]\ndestination = \"-\"\n\n[limits]\nconnection_limit = 7\n\n\
         [[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:10993\"]\ntls = \"implicit\"\n\
         cert = \"{}\"\nkey = \"{}\"\n{extra_listener_line}\n\
         [listener.backend]\nhost = \"127.0.0.1\"\nport = 10143\n",
        cert.display(),
        key.display()
    )
}

#[test]
fn check_prints_the_effective_configuration_of_a_good_file() {
    let c = certs();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("portcullis.toml");
    fs::write(&file, native_imaps_toml(&c.cert, &c.key, "")).unwrap();
    let (status, stdout, stderr) =
        run_to_exit(&args(&["check", "--config", &file.display().to_string()]));
    assert_eq!(
        status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    // What was written...
    assert!(stdout.contains("connection_limit = 7"), "{stdout}");
    assert!(stdout.contains("127.0.0.1:10993"), "{stdout}");
    assert!(stdout.contains("port = 10143"), "{stdout}");
    // ...and the defaults that were not.
    assert!(stdout.contains("login_timeout = 30"), "{stdout}");
    assert!(stdout.contains("verify = true"), "{stdout}");
    // It is itself a configuration `check` accepts.
    let again = dir.path().join("effective.toml");
    fs::write(&again, &stdout).unwrap();
    let (status, stdout2, stderr2) =
        run_to_exit(&args(&["check", "--config", &again.display().to_string()]));
    assert_eq!(status.code(), Some(0), "{stderr2}");
    assert_eq!(stdout2, stdout);
}

#[test]
fn check_names_a_missing_certificate_file() {
    let c = certs();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-cert.pem");
    let file = dir.path().join("portcullis.toml");
    fs::write(&file, native_imaps_toml(&missing, &c.key, "")).unwrap();
    let (status, stdout, stderr) =
        run_to_exit(&args(&["check", "--config", &file.display().to_string()]));
    assert_eq!(
        status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stderr.contains("no-such-cert.pem"),
        "the problem is not named: {stderr}"
    );
}

#[test]
fn check_names_an_unknown_key() {
    let c = certs();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("portcullis.toml");
    // A typo an admin could make: "ok_lines" for "ok_line".
    fs::write(
        &file,
        native_imaps_toml(&c.cert, &c.key, "ok_lines = \"You are so in\"\n"),
    )
    .unwrap();
    let (status, stdout, stderr) =
        run_to_exit(&args(&["check", "--config", &file.display().to_string()]));
    assert!(
        stderr.contains("ok_lines"),
        "the key is not named: {stderr}"
    );
    // A bad configuration file is exit status 1, like a file with a missing certificate; it is
    // not a usage error.
    assert_eq!(
        status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// fail2ban and the log
// ---------------------------------------------------------------------------------------------

/// Runs fail2ban-regex with the stock perdition filter; returns (matched, total) from its
/// "Lines: N lines, I ignored, M matched, X missed" summary, and its full output.
fn fail2ban_matches(log: &Path) -> (usize, usize, String) {
    support::fail2ban::matched_and_lines(log, Path::new("/etc/fail2ban/filter.d/perdition.conf"))
}

#[test]
fn fail2ban_stock_filter_catches_failed_logins() {
    let dc = Dovecot::start();
    let dir = tempfile::tempdir().unwrap();
    let logfile = dir.path().join("mail.log");
    let conf = dir.path().join("perdition.imap4.conf");
    fs::write(
        &conf,
        format!("outgoing_server 127.0.0.1\noutgoing_port {}\n", dc.imap),
    )
    .unwrap();
    let port = free_port();
    let log_arg = logfile.display().to_string();
    // Wait on the log file ourselves: a probe connection would add a log line.
    let _proxy = Proxy::start_args(&perdition_args(&conf, "IMAP4", port, &log_arg), &[]);
    assert!(
        wait_file_contains(
            &logfile,
            &format!("Listening on 127.0.0.1:{port}"),
            PROXY_START_TIMEOUT
        ),
        "proxy not listening; log:\n{}",
        fs::read_to_string(&logfile).unwrap_or_default()
    );

    // A password guesser: two wrong passwords...
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    for (tag, user, pass) in [("a", "alice", "guess-one"), ("b", "bob", "guess-two")] {
        c.send_line(&format!("{tag} LOGIN {user} {pass}"));
        let last = c.read_until_tagged(tag).pop().unwrap();
        assert!(last.starts_with(&format!("{tag} NO")), "{last}");
    }
    // (it leaves politely: that is no "Fatal Error reading" line)
    c.send_line("z LOGOUT");
    c.expect_line("* BYE");
    assert!(c.is_closed());
    // ...a scanner that hangs up without logging in...
    let mut s = Client::plain(port);
    s.expect_line("* OK");
    drop(s);
    // ...and a real user, who must not count.
    let mut u = Client::plain(port);
    u.expect_line("* OK");
    imap_login(&mut u, "a", "alice", "alicepw");
    u.send_line("z LOGOUT");
    u.expect_line("* BYE");
    assert!(u.is_closed());
    drop(u);
    assert!(
        wait_file_contains(&logfile, "Closing session:", Duration::from_secs(5))
            && wait_file_contains(
                &logfile,
                "Fatal Error reading authentication information",
                Duration::from_secs(5)
            ),
        "log:\n{}",
        fs::read_to_string(&logfile).unwrap_or_default()
    );

    let (matched, lines, output) = fail2ban_matches(&logfile);
    let log = fs::read_to_string(&logfile).unwrap();
    assert!(
        lines >= 5,
        "fail2ban-regex read too few lines:\n{output}\nlog:\n{log}"
    );
    assert_eq!(
        matched, 3,
        "expected the 2 failed logins and the hang-up to match, nothing else:\n{output}\nlog:\n{log}"
    );
    let failregex_total = output
        .lines()
        .find_map(|l| l.trim().strip_prefix("Failregex: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<usize>().ok());
    assert_eq!(failregex_total, Some(3), "{output}");

    // Passwords never reach the log by default.
    for secret in ["guess-one", "guess-two", "alicepw", "passwd="] {
        assert!(!log.contains(secret), "{secret:?} is in the log:\n{log}");
    }
}

#[test]
fn log_passwd_fail_with_debug_logs_only_the_failed_password() {
    let dc = Dovecot::start();
    let dir = tempfile::tempdir().unwrap();
    let logfile = dir.path().join("mail.log");
    let port = free_port();
    let toml = format!(
        "[log]\ndestination = \"{}\"\nident = \"perdition.imap4\"\nlog_passwd = \"fail\"\n\
         debug = true\n\n[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{port}\"]\n\n\
         [listener.backend]\nhost = \"127.0.0.1\"\nport = {}\n",
        logfile.display(),
        dc.imap
    );
    let _proxy = Proxy::start_toml(&toml, &[]);
    assert!(
        wait_file_contains(
            &logfile,
            &format!("Listening on 127.0.0.1:{port}"),
            PROXY_START_TIMEOUT
        ),
        "proxy not listening; log:\n{}",
        fs::read_to_string(&logfile).unwrap_or_default()
    );
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    c.send_line("a LOGIN bob Typo-Passw0rd");
    let last = c.read_until_tagged("a").pop().unwrap();
    assert!(last.starts_with("a NO"), "{last}");
    imap_login(&mut c, "b", "bob", "bobpw");
    c.send_line("z LOGOUT");
    c.expect_line("* BYE");
    assert!(c.is_closed());
    drop(c);
    assert!(
        wait_file_contains(&logfile, "Closing session:", Duration::from_secs(5)),
        "log:\n{}",
        fs::read_to_string(&logfile).unwrap_or_default()
    );
    let log = fs::read_to_string(&logfile).unwrap();
    let auth: Vec<&str> = log.lines().filter(|l| l.contains(" Auth: ")).collect();
    assert_eq!(auth.len(), 2, "{log}");
    assert!(
        auth[0].contains(" authentication_id=\"bob\" passwd=\"Typo-Passw0rd\" server=")
            && auth[0].ends_with("status=\"failed: Re-Authentication Failure\""),
        "failed login line: {}",
        auth[0]
    );
    assert!(auth[1].ends_with("status=\"ok\""), "{}", auth[1]);
    assert!(
        !log.contains("bobpw"),
        "the good password is logged:\n{log}"
    );
}

#[test]
fn log_lines_read_like_perditions() {
    let dc = Dovecot::start();
    let (proxy, port, _dir) = start_seed_proxy(&dc);

    let mut c = Client::tls(port);
    let cport = c.local_addr().port();
    c.expect_line("* OK");
    imap_login(&mut c, "a", "alice", "alicepw");
    // After login, count exactly what goes each way.
    let commands = ["b SELECT INBOX", "c LOGOUT"];
    let mut received = 0;
    let mut sent = 0;
    for cmd in commands {
        c.send_line(cmd);
        received += cmd.len() + 2;
        let (lines, n) = read_tagged_counting(&mut c, &cmd[..1]);
        assert!(lines.last().unwrap().contains(" OK "), "{lines:?}");
        sent += n;
    }
    sent += c.read_to_end_or_eof().len();
    drop(c);
    assert!(
        proxy.wait_log("Closing session:", Duration::from_secs(5)),
        "log:\n{}",
        proxy.log_text()
    );

    // Every line of the log: timestamp, ident[pid]:, message; ident as Perdition's IMAPS
    // daemon names itself.
    let text = proxy.log_text();
    let messages = log_messages(&text, "perdition.imaps", proxy.pid());
    let from_to = format!("127.0.0.1:{cport}->127.0.0.1:{port}");

    let connect = format!("Connect:  {from_to}");
    assert!(messages.contains(&connect), "no {connect:?} in:\n{text}");
    let auth = format!(
        "Auth: {from_to} client-secure=ssl authorisation_id=NONE authentication_id=\"alice\" \
         server=\"127.0.0.1:{}\" protocol=IMAP4S server-secure=plaintext status=\"ok\"",
        dc.imap
    );
    assert!(messages.contains(&auth), "no {auth:?} in:\n{text}");
    let closing_prefix =
        format!("Closing session: {from_to} authorisation_id=NONE authentication_id=\"alice\" ");
    let closing = messages
        .iter()
        .find(|m| m.starts_with(&closing_prefix))
        .unwrap_or_else(|| panic!("no {closing_prefix:?}... in:\n{text}"));
    let counts = &closing[closing_prefix.len()..];
    let (r, s) = counts
        .strip_prefix("received=")
        .and_then(|x| x.split_once(" sent="))
        .unwrap_or_else(|| panic!("bad Closing line {closing:?}"));
    let (r, s): (usize, usize) = (r.parse().unwrap(), s.parse().unwrap());
    assert!(r > 0 && s > 0, "{closing}");
    // The counts are the bytes relayed after the login, each way.
    assert_eq!(
        (r, s),
        (received, sent),
        "Closing line counts (received, sent) differ from the bytes on the wire: {closing}"
    );
}

// ---------------------------------------------------------------------------------------------
// Program names, the configuration file Perdition would find, its pid file
// ---------------------------------------------------------------------------------------------

/// A directory standing for `/` in Perdition mode (`PORTCULLIS_PERDITION_ROOT`), with
/// `etc/perdition/` in it.
fn fake_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    fs::create_dir_all(root.path().join("etc/perdition")).expect("etc/perdition");
    root
}

#[test]
fn a_link_named_perdition_imaps_serves_imaps_from_its_own_file_and_writes_its_pid_file() {
    let dc = Dovecot::start();
    let root = fake_root();
    let etc = root.path().join("etc/perdition");
    let port = free_port();
    // Debian's init script starts /usr/sbin/perdition.imaps without -f or -P: the program
    // name says IMAP4S, and IMAP4S's file says the rest.
    let conf = format!(
        "{}bind_address 127.0.0.1\nlisten_port {port}\nlog_facility -\nno_daemon\n",
        seed_conf(&dc)
    );
    fs::write(etc.join("perdition.imap4s.conf"), conf).unwrap();
    // Searched after it, so never read here (it would be refused).
    fs::write(etc.join("perdition.conf"), "frobnicate yes\n").unwrap();
    let link = root.path().join("perdition.imaps");
    std::os::unix::fs::symlink(portcullis_bin(), &link).unwrap();
    let root_dir = root.path().display().to_string();
    let env = [(PERDITION_ROOT_ENV, root_dir.as_str())];
    let mut proxy = Proxy::start_program(&link, &[], &[port], &env);

    let mut c = Client::tls(port);
    c.expect_line("* OK");
    c.send_line("a login alice alicepw");
    let lines = c.read_until_tagged("a");
    assert!(lines.last().unwrap().starts_with("a OK"), "{lines:?}");
    c.send_line("b logout");
    c.read_until_tagged("b");

    let pid_file = root
        .path()
        .join("var/run/perdition.imaps/perdition.imaps.pid");
    assert_eq!(
        fs::read_to_string(&pid_file).unwrap(),
        format!("{}\n", proxy.pid())
    );
    assert!(proxy.wait_log("Closing session", Duration::from_secs(5)));
    let log = proxy.log_text();
    let messages = log_messages(&log, "perdition.imaps", proxy.pid());
    assert!(
        messages.iter().any(|m| m.starts_with("Auth:")
            && m.contains("authentication_id=\"alice\"")
            && m.contains("protocol=IMAP4S")
            && m.ends_with("status=\"ok\"")),
        "{log}"
    );

    proxy.signal_term();
    assert!(proxy.wait_exit(Duration::from_secs(15)).is_some());
    assert!(!pid_file.exists(), "the pid file outlived the process");
}

#[test]
fn a_second_instance_with_the_same_pid_file_is_refused() {
    let dc = Dovecot::start();
    let (first, _port, dir) = start_seed_proxy(&dc);
    let pid_file = dir.path().join("p.pid");
    fs::write(&pid_file, format!("{}\n", first.pid())).unwrap();
    let conf = dir.path().join("perdition.imap4s.conf");
    let mut args = perdition_args(&conf, "IMAP4S", free_port(), "-");
    args.extend(["--pid_file".to_string(), pid_file.display().to_string()]);
    let (status, stdout, stderr) = run_to_exit(&args);
    let output = format!("{stdout}{stderr}");
    assert!(!status.success(), "{output}");
    assert!(
        output.contains(&pid_file.display().to_string())
            && output.contains(&first.pid().to_string()),
        "{output}"
    );
    assert_eq!(
        fs::read_to_string(&pid_file).unwrap(),
        format!("{}\n", first.pid()),
        "the running instance's pid file was touched"
    );
}

// ---------------------------------------------------------------------------------------------
// Debian's /etc/default/perdition, served from one process
// ---------------------------------------------------------------------------------------------

#[test]
fn debian_defaults_serves_every_protocol_it_enables_from_one_process() {
    let dc = Dovecot::start();
    let root = fake_root();
    let (imap, pop3) = (free_port(), free_port());
    let log = root.path().join("mail.log");
    // IMAP4's instance finds its own file by its program name, perdition.imap4.
    fs::write(
        root.path().join("etc/perdition/perdition.imap4.conf"),
        format!(
            "listen_port {imap}\noutgoing_port {}\nok_line \"IMAP4 from its own file\"\n",
            dc.imap
        ),
    )
    .unwrap();
    let defaults = root.path().join("etc/default/perdition");
    fs::create_dir_all(defaults.parent().unwrap()).unwrap();
    fs::write(
        &defaults,
        format!(
            "RUN_PERDITION=yes\n\
             # for every instance\n\
             FLAGS=\"-b 127.0.0.1 -s 127.0.0.1 -F {log}\"\n\
             POP3=yes\n\
             POP3_FLAGS=\"-l {pop3} -p {dovecot_pop3}\"\n\
             POP3S=no\n\
             IMAP4=yes\n\
             IMAP4_FLAGS=\n\
             IMAP4S=no\n\
             # the init script starts only what says \"yes\"\n\
             MANAGESIEVE=on\n",
            log = log.display(),
            dovecot_pop3 = dc.pop3
        ),
    )
    .unwrap();
    let args = args(&[
        "perdition",
        "--debian-defaults",
        &defaults.display().to_string(),
    ]);
    let root_dir = root.path().display().to_string();
    let proxy = Proxy::start_args_env(&args, &[imap, pop3], &[(PERDITION_ROOT_ENV, &root_dir)]);

    let mut i = Client::plain(imap);
    i.expect_line("* OK");
    i.send_line("a LOGIN alice alicepw");
    let lines = i.read_until_tagged("a");
    let ok = lines.last().unwrap();
    assert!(
        ok.starts_with("a OK") && ok.ends_with("IMAP4 from its own file"),
        "{lines:?}"
    );
    let mut p = Client::plain(pop3);
    p.expect_line("+OK");
    p.send_line("USER bob");
    p.expect_line("+OK");
    p.send_line("PASS bobpw");
    assert_eq!(p.read_line(), "+OK You are so in");

    assert!(wait_file_contains(
        &log,
        "protocol=POP3 ",
        Duration::from_secs(5)
    ));
    let text = fs::read_to_string(&log).unwrap();
    // One process, one name in the log.
    let messages = log_messages(&text, "perdition", proxy.pid());
    for (user, protocol) in [("alice", "IMAP4"), ("bob", "POP3")] {
        assert!(
            messages.iter().any(|m| m.starts_with("Auth:")
                && m.contains(&format!("authentication_id=\"{user}\""))
                && m.contains(&format!("protocol={protocol} "))
                && m.ends_with("status=\"ok\"")),
            "no Auth line for {user} over {protocol}:\n{text}"
        );
    }
    let listening = messages
        .iter()
        .filter(|m| m.starts_with("Listening on"))
        .count();
    assert_eq!(listening, 2, "MANAGESIEVE=on is not yes:\n{text}");
    let pid_file = root.path().join("var/run/perdition/perdition.pid");
    assert_eq!(
        fs::read_to_string(pid_file).unwrap(),
        format!("{}\n", proxy.pid())
    );
}

#[test]
fn debian_defaults_names_the_instances_that_disagree_and_what_about() {
    let dir = tempfile::tempdir().unwrap();
    let (pop3, imap) = (free_port(), free_port());
    let defaults = dir.path().join("perdition");
    fs::write(
        &defaults,
        format!(
            "FLAGS=\"-b 127.0.0.1 -s 127.0.0.1 --no_daemon\"\n\
             POP3_FLAGS=\"-l {pop3}\"\n\
             IMAP4_FLAGS=\"-l {imap} -t 60\"\n\
             POP3S=no\nIMAP4S=no\nMANAGESIEVE=no\n"
        ),
    )
    .unwrap();
    let (status, _, stderr) = run_to_exit(&args(&[
        "perdition",
        "--debian-defaults",
        &defaults.display().to_string(),
    ]));
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("POP3 and IMAP4") && stderr.contains("timeout"),
        "{stderr}"
    );
    assert!(!port_open(pop3) && !port_open(imap));

    fs::write(&defaults, "POP3=yes\nPOP3_FLAGS=$(cat /etc/passwd)\n").unwrap();
    let (status, _, stderr) = run_to_exit(&args(&[
        "perdition",
        "--debian-defaults",
        &defaults.display().to_string(),
    ]));
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("line 2"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// Options that were missing
// ---------------------------------------------------------------------------------------------

/// `portcullis perdition` for IMAP4 on `port` in front of `dc`, logging to `log`, with `extra`.
fn imap4_args(dc: &Dovecot, port: u16, log: &Path, extra: &[&str]) -> Vec<String> {
    let mut all = args(&[
        "perdition",
        "-f",
        "",
        "-P",
        "IMAP4",
        "--no_daemon",
        "-b",
        "127.0.0.1",
        "-l",
        &port.to_string(),
        "-s",
        "127.0.0.1",
        "-p",
        &dc.imap.to_string(),
        "-F",
        &log.display().to_string(),
    ]);
    all.extend(extra.iter().map(|s| s.to_string()));
    all
}

fn auth_ok_lines(log: &Path) -> Vec<String> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once("]: ").map(|(_, m)| m.to_string()))
        .filter(|m| m.starts_with("Auth:") && m.ends_with("status=\"ok\""))
        .collect()
}

#[test]
fn connect_relog_repeats_the_auth_line_while_the_session_lasts_without_the_password() {
    let dc = Dovecot::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    let port = free_port();
    let extra = ["--connect_relog", "1", "-d", "--log_passwd", "ok"];
    let _proxy = Proxy::start_args(&imap4_args(&dc, port, &log, &extra), &[port]);
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    c.send_line("a LOGIN alice alicepw");
    c.read_until_tagged("a");
    sleep(Duration::from_millis(2600));
    let during = auth_ok_lines(&log);
    assert!(during.len() >= 3, "{during:#?}");
    // The first line is the login's own, with the password log_passwd asked for.
    assert!(during[0].contains(" passwd=\"alicepw\""), "{during:#?}");
    for again in &during[1..] {
        assert_eq!(*again, during[0].replace(" passwd=\"alicepw\"", ""));
    }
    c.send_line("b LOGOUT");
    c.read_until_tagged("b");
    sleep(Duration::from_millis(300));
    let at_end = auth_ok_lines(&log).len();
    sleep(Duration::from_millis(1500));
    assert_eq!(auth_ok_lines(&log).len(), at_end, "relogged after the end");
}

#[test]
fn quiet_logs_errors_only() {
    let dc = Dovecot::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    let port = free_port();
    let _proxy = Proxy::start_args(&imap4_args(&dc, port, &log, &["-q"]), &[port]);
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    c.send_line("a LOGIN alice wrong");
    c.read_until_tagged("a");
    drop(c);
    assert!(wait_file_contains(
        &log,
        "Fatal Error",
        Duration::from_secs(5)
    ));
    let text = fs::read_to_string(&log).unwrap();
    let messages: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once("]: ").map(|(_, m)| m))
        .collect();
    assert!(!messages.is_empty());
    assert!(
        messages.iter().all(|m| m.starts_with("Fatal Error")),
        "{text}"
    );
}

/// The `ss -tno` lines of the established TCP connections matching `filter`, once no data
/// is in flight on them: ss shows one timer per socket, and the retransmission timer
/// (`timer:(on,...)`) hides the keep-alive one.
fn sockets(filter: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = Command::new("ss")
            .args(["-tnoH", "state", "established", filter])
            .output()
            .expect("ss (iproute2) is installed");
        let lines = String::from_utf8_lossy(&out.stdout).into_owned();
        if !lines.contains("timer:(on") || Instant::now() > deadline {
            return lines;
        }
        sleep(Duration::from_millis(100));
    }
}

#[test]
fn tcp_keepalive_probes_both_connections_of_a_session() {
    let dc = Dovecot::start();
    for keepalive in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("mail.log");
        let port = free_port();
        let extra: &[&str] = if keepalive { &["--tcp_keepalive"] } else { &[] };
        let _proxy = Proxy::start_args(&imap4_args(&dc, port, &log, extra), &[port]);
        let mut c = Client::plain(port);
        c.expect_line("* OK");
        c.send_line("a LOGIN alice alicepw");
        c.read_until_tagged("a");
        // The proxy's end of the client's connection, and its connection to Dovecot.
        let client_side = sockets(&format!("( sport = :{port} )"));
        let backend_side = sockets(&format!("( dport = :{} )", dc.imap));
        assert!(!client_side.is_empty() && !backend_side.is_empty());
        for (side, lines) in [("client", &client_side), ("back end", &backend_side)] {
            assert_eq!(
                lines.contains("keepalive"),
                keepalive,
                "{side} connection with --tcp_keepalive {keepalive}:\n{lines}"
            );
        }
        c.send_line("b LOGOUT");
        c.read_until_tagged("b");
    }
}

/// `openssl s_client` to `port` with `flags`; its output (stdout and stderr).
fn s_client(port: u16, flags: &[&str]) -> String {
    let out = Command::new("timeout")
        .args(["10", "openssl", "s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(flags)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is installed");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_chain_file_is_sent_and_the_highest_tls_version_holds() {
    let dc = Dovecot::start();
    let c = certs();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    let port = free_port();
    let extra = [
        "--ssl_mode",
        "ssl_listen",
        "--ssl_cert_file",
        &c.cert.display().to_string(),
        "--ssl_key_file",
        &c.key.display().to_string(),
        "--ssl_ca_chain_file",
        &c.ca.display().to_string(),
        "--ssl_listen_max_proto_version",
        "tlsv1.2",
    ]
    .map(str::to_string);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let _proxy = Proxy::start_args(&imap4_args(&dc, port, &log, &extra), &[port]);

    let tls12 = s_client(port, &["-showcerts", "-tls1_2"]);
    // cert.pem holds the server's certificate alone; the CA comes from the chain file.
    assert_eq!(
        tls12.matches("-----BEGIN CERTIFICATE-----").count(),
        2,
        "{tls12}"
    );
    assert!(tls12.contains("TLSv1.2"), "{tls12}");
    let tls13 = s_client(port, &["-tls1_3"]);
    assert!(
        tls13.contains("no peer certificate available") && tls13.contains("protocol version"),
        "{tls13}"
    );
}

#[test]
fn the_back_ends_certificate_is_checked_against_ssl_ca_path() {
    let dc = Dovecot::start();
    let c = certs();
    for (ca, logs_in) in [(&c.ca, true), (&c.other_ca, false)] {
        let dir = tempfile::tempdir().unwrap();
        let cas = dir.path().join("perdition.ca");
        fs::create_dir(&cas).unwrap();
        fs::copy(ca, cas.join("ca.pem")).unwrap();
        let log = dir.path().join("mail.log");
        let port = free_port();
        let mut flags = imap4_args(&dc, port, &log, &["--ssl_mode", "ssl_outgoing"]);
        let dovecot_imaps = dc.imaps.to_string();
        let cas = cas.display().to_string();
        flags.extend(args(&["-p", &dovecot_imaps, "--ssl_ca_path", &cas]));
        let _proxy = Proxy::start_args(&flags, &[port]);
        let mut client = Client::plain(port);
        client.expect_line("* OK");
        client.send_line("a LOGIN alice alicepw");
        let answer = client.read_until_tagged("a");
        assert_eq!(
            answer.last().unwrap().starts_with("a OK"),
            logs_in,
            "CA {}: {answer:?}",
            ca.display()
        );
    }
}
