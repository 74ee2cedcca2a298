//! SMTP submission through Portcullis (issue 18), against real back ends: the test Postfix
//! (SASL through the test Dovecot, LMTP into its mailboxes, XCLIENT from loopback) and Dovecot's
//! own submission service, with the real clients swaks, msmtp, Python's smtplib and curl.
//! A message sent through the proxy is read back through the proxy's IMAP, byte for byte; the
//! client's address is found in Postfix's log (XCLIENT); a wrong password leaves an Auth line
//! that fail2ban's stock Perdition filter counts, and a guesser's address is banned; logins show
//! in the metrics.

mod support;

use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use support::auth_service::{ok, AuthService};
use support::*;

/// How long a log line may take to appear.
const LOG_WAIT: Duration = Duration::from_secs(10);

/// Debian's stock fail2ban filter for Perdition.
const STOCK_FILTER: &str = "/etc/fail2ban/filter.d/perdition.conf";

// ---------------------------------------------------------------------------------------------
// The proxy in front of the mail servers
// ---------------------------------------------------------------------------------------------

/// Portcullis in front of a test Postfix and Dovecot: four submission listeners and an IMAP one.
struct Front {
    /// `tls = "starttls-required"` (587): back end Postfix's submission by STARTTLS, XCLIENT.
    starttls: u16,
    /// `tls = "implicit"` (465): back end Postfix's submissions (implicit TLS), XCLIENT.
    implicit: u16,
    /// `tls = "none"`: back end Postfix's submission in plaintext, XCLIENT.
    plain: u16,
    /// `tls = "starttls-required"`: back end Dovecot's submission in plaintext, XCLIENT.
    dovecot: u16,
    /// IMAP to the test Dovecot: mail is read back through the proxy.
    imap: u16,
    /// The proxy's log file when it logs to a file (for fail2ban), else None (its output).
    log_file: Option<PathBuf>,
    proxy: Proxy,
    mail: MailServers,
    _dir: tempfile::TempDir,
}

/// A back end on loopback reached with `tls` (verified against the test CA), told the client
/// by XCLIENT.
fn backend(port: u16, tls: &str) -> String {
    format!(
        "host = \"localhost\", port = {port}, tls = \"{tls}\", ca_file = \"{}\", \
         forward_client = \"id\"",
        certs().ca.display()
    )
}

impl Front {
    /// Starts the mail servers and the proxy, logging to its output, or with `log_ident` to a
    /// file under that ident (e.g. `perdition.submission`, which the stock filter reads).
    fn start(log_ident: Option<&str>) -> Front {
        Front::start_configured(log_ident, "")
    }

    /// As [`Front::start`], with `tables` (`[guard]`, `[admin]`...) in the configuration.
    fn start_configured(log_ident: Option<&str>, tables: &str) -> Front {
        let mail = MailServers::start();
        let dir = tempfile::tempdir().unwrap();
        let (starttls, implicit, plain, dovecot, imap) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );
        let log_file = log_ident.map(|_| dir.path().join("mail.log"));
        let log = match (&log_file, log_ident) {
            (Some(file), Some(ident)) => format!(
                "[log]\ndestination = \"{}\"\nident = \"{ident}\"\n",
                file.display()
            ),
            _ => "[log]\ndestination = \"-\"\n".to_string(),
        };
        let pf = &mail.postfix;
        let toml = log
            + tables
            + &listener_toml(
                "submission",
                starttls,
                "starttls-required",
                &backend(pf.submission, "starttls"),
            )
            + &listener_toml(
                "submission",
                implicit,
                "implicit",
                &backend(pf.submissions, "implicit"),
            )
            + &listener_toml("submission", plain, "none", &backend(pf.submission, "none"))
            + &listener_toml(
                "submission",
                dovecot,
                "starttls-required",
                &backend(mail.dovecot_submission(), "none"),
            )
            + &listener_toml(
                "imap",
                imap,
                "starttls",
                &format!("host = \"127.0.0.1\", port = {}", mail.dovecot.imap),
            );
        let ports = [starttls, implicit, plain, dovecot, imap];
        let proxy = if let Some(file) = &log_file {
            let proxy = Proxy::start_toml(&toml, &[]);
            for port in ports {
                assert!(
                    wait_file_contains(
                        file,
                        &format!("Listening on 127.0.0.1:{port} "),
                        PROXY_START_TIMEOUT
                    ),
                    "proxy not listening on {port}; {}",
                    proxy.everything_logged()
                );
            }
            proxy
        } else {
            Proxy::start_toml(&toml, &ports)
        };
        let front = Front {
            starttls,
            implicit,
            plain,
            dovecot,
            imap,
            log_file,
            proxy,
            mail,
            _dir: dir,
        };
        front.wait_for_learned_extensions();
        front
    }

    /// The three listeners whose back ends are reached without implicit TLS learn their
    /// extensions on connections of their own at start-up: a test that sees the EHLO answer
    /// (or a client that checks it, as smtplib does for SMTPUTF8) waits for all three.
    fn wait_for_learned_extensions(&self) {
        let deadline = Instant::now() + LOG_WAIT;
        let learned = |text: &str| {
            text.lines()
                .filter(|l| l.contains("Learned SUBMISSION capabilities from "))
                .count()
        };
        while learned(&self.log_text()) < 3 {
            assert!(
                Instant::now() < deadline,
                "the listeners did not learn their back ends' extensions in {LOG_WAIT:?}.\n\
                 proxy: {}\n{}",
                self.proxy.everything_logged(),
                self.mail.logs()
            );
            sleep(Duration::from_millis(25));
        }
    }

    /// What the proxy logged so far.
    fn log_text(&self) -> String {
        match &self.log_file {
            Some(file) => read_lossy(file),
            None => self.proxy.log_text(),
        }
    }

    /// Polls the proxy's log until a line contains every one of `parts`; panics with every log
    /// otherwise.
    fn expect_log_lines(&self, parts: &[&str], why: &str) -> String {
        let deadline = Instant::now() + LOG_WAIT;
        loop {
            let text = self.log_text();
            if let Some(line) = text.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "{why}: no line with {parts:?} in the proxy's log after {LOG_WAIT:?}.\nproxy: {}\n{}",
                self.proxy.everything_logged(),
                self.mail.logs()
            );
            sleep(Duration::from_millis(25));
        }
    }

    /// Polls the proxy's log until it contains `needle`; panics with every log otherwise.
    fn expect_log(&self, needle: &str, why: &str) -> String {
        self.expect_log_lines(&[needle], why)
    }

    /// Sends `submit` with `program`; asserts it was sent, reached `user`'s INBOX and reads back
    /// byte for byte through the proxy's IMAP listener.
    fn send_and_read_back(&self, program: SmtpProgram, submit: &Submit, user: &str, id: &str) {
        let run = program.send(submit);
        assert!(
            run.success,
            "{program:?} did not send through the proxy:\n{}\nproxy: {}\n{}",
            run.transcript,
            self.proxy.everything_logged(),
            self.mail.logs()
        );
        let stored = self.mail.wait_for_mail(user, id);
        assert_arrived_intact(&submit.message, &stored);
        let password = USERS.iter().find(|(u, _)| *u == user).unwrap().1;
        let fetched = imap_fetch_by_message_id(self.mail.dovecot.imap, user, password, id);
        assert_arrived_intact(&submit.message, &fetched);
        let through_proxy = imap_fetch_starttls(self.imap, user, password, id);
        assert_eq!(
            through_proxy, fetched,
            "the proxy's IMAP gave other bytes than Dovecot's"
        );
    }
}

/// The message with Message-ID `id` in `user`'s INBOX, through an IMAP port that wants
/// STARTTLS first (the proxy's IMAP listener).
fn imap_fetch_starttls(port: u16, user: &str, password: &str, id: &str) -> Vec<u8> {
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    c.send_line("t STARTTLS");
    c.expect_line("t OK");
    c.starttls();
    imap_login(&mut c, "l", user, password);
    c.send_line("s EXAMINE INBOX");
    let examined = c.read_until_tagged("s");
    assert!(examined.last().unwrap().starts_with("s OK"), "{examined:?}");
    c.send_line(&format!("f SEARCH HEADER Message-ID \"{id}\""));
    let found = c.read_until_tagged("f");
    let seq: u32 = found
        .iter()
        .find_map(|l| l.strip_prefix("* SEARCH "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{id} not found through the proxy: {found:?}"));
    imap_fetch_raw(&mut c, "g", seq)
}

/// A message from alice to `USER@example.org` with a unique Message-ID; returns (id, message).
fn message_to(user: &str, tag: &str, body: &str) -> (String, Vec<u8>) {
    let id = unique_message_id(tag);
    let to = format!("{user}@{MAIL_DOMAIN}");
    let message = test_message("Alice <alice@example.org>", &to, &id, tag, body);
    (id, message)
}

// ---------------------------------------------------------------------------------------------
// Sending mail
// ---------------------------------------------------------------------------------------------

/// Every client program logs in with PLAIN and with LOGIN on the 587 listener (STARTTLS
/// required), swaks with and without pipelining; each message reaches bob's INBOX and reads back
/// byte for byte through the proxy's IMAP; the proxy logged each login as SUBMISSION.
#[test]
fn every_client_submits_with_plain_and_login_and_the_message_reads_back_intact() {
    let front = Front::start(None);
    for program in SmtpProgram::ALL {
        for auth in [SmtpAuth::Plain, SmtpAuth::Login] {
            for pipelining in [false, true] {
                if pipelining && program != SmtpProgram::Swaks {
                    continue; // only swaks can be told; msmtp always pipelines
                }
                let tag = format!("{program:?}-{auth:?}-{pipelining}").to_lowercase();
                let (id, message) = message_to("bob", &tag, "Hello Bob.\n.dot line\n");
                let mut submit = Submit::new(
                    front.starttls,
                    "alice",
                    "alicepw",
                    &format!("bob@{MAIL_DOMAIN}"),
                    message,
                );
                submit.tls = SmtpTls::StartTls;
                submit.auth = auth;
                submit.pipelining = pipelining;
                front.send_and_read_back(program, &submit, "bob", &id);
            }
        }
    }
    let line = front.expect_log(
        "protocol=SUBMISSION server-secure=starttls status=\"ok\"",
        "a successful login",
    );
    assert!(line.contains("authentication_id=\"alice\""), "{line}");
}

/// The 465 listener (implicit TLS) takes curl's smtps://, msmtp's and smtplib's submissions,
/// logged as SUBMISSIONS; the back end is reached by implicit TLS too.
#[test]
fn the_implicit_tls_listener_takes_submissions() {
    let front = Front::start(None);
    for program in [SmtpProgram::Curl, SmtpProgram::Msmtp, SmtpProgram::Python] {
        let (id, message) = message_to("bob", &format!("{program:?}-465"), "Over 465.\n");
        let mut submit = Submit::new(
            front.implicit,
            "alice",
            "alicepw",
            &format!("bob@{MAIL_DOMAIN}"),
            message,
        );
        submit.tls = SmtpTls::Implicit;
        front.send_and_read_back(program, &submit, "bob", &id);
    }
    front.expect_log(
        "protocol=SUBMISSIONS server-secure=ssl status=\"ok\"",
        "a login on the implicit-TLS listener",
    );
}

/// Dovecot's submission service as the back end (plaintext, XCLIENT): swaks and msmtp send,
/// Dovecot relays through Postfix, the messages arrive intact.
#[test]
fn dovecot_submission_as_the_back_end() {
    let front = Front::start(None);
    for (program, auth) in [
        (SmtpProgram::Swaks, SmtpAuth::Login),
        (SmtpProgram::Msmtp, SmtpAuth::Plain),
    ] {
        let (id, message) = message_to("alice", &format!("{program:?}-dovecot"), "Via Dovecot.\n");
        let mut submit = Submit::new(
            front.dovecot,
            "bob",
            "bobpw",
            &format!("alice@{MAIL_DOMAIN}"),
            message,
        );
        submit.tls = SmtpTls::StartTls;
        submit.auth = auth;
        front.send_and_read_back(program, &submit, "alice", &id);
    }
}

/// An 8BITMIME message (BODY=8BITMIME, Latin-1 and UTF-8 bytes in the body) and an SMTPUTF8
/// message (UTF-8 sender, header fields and body) go through unchanged.
#[test]
fn eight_bit_and_smtputf8_messages_arrive_intact() {
    let front = Front::start(None);
    let (id, mut message) = message_to("bob", "8bitmime", "Gr\u{fc}\u{df}e \u{2713}\n");
    // A Latin-1 byte too: 8BITMIME is about octets, not UTF-8.
    let end = message.len() - 2;
    message.splice(end..end, [b' ', 0xe9]);
    let mut submit = Submit::new(
        front.starttls,
        "alice",
        "alicepw",
        &format!("bob@{MAIL_DOMAIN}"),
        message,
    );
    submit.tls = SmtpTls::StartTls;
    submit.mail_options = vec!["BODY=8BITMIME".into()];
    front.send_and_read_back(SmtpProgram::Python, &submit, "bob", &id);

    let to = format!("bob@{UTF8_MAIL_DOMAIN}");
    let id = unique_message_id("smtputf8");
    let message = test_message(
        "J\u{f6}rg <j\u{f6}rg@example.org>",
        &to,
        &id,
        "Gr\u{fc}\u{df}e \u{2713}",
        "Gr\u{fc}\u{df}e aus M\u{fc}nchen.\n",
    );
    let mut submit = Submit::new(front.starttls, "alice", "alicepw", &to, message);
    submit.from = "j\u{f6}rg@example.org".into();
    submit.tls = SmtpTls::StartTls;
    submit.mail_options = vec!["SMTPUTF8".into(), "BODY=8BITMIME".into()];
    front.send_and_read_back(SmtpProgram::Python, &submit, "bob", &id);
}

/// A 20 MiB message (Postfix's SIZE is 50 MiB) goes through with curl and with swaks
/// (pipelining), and arrives byte for byte.
#[test]
fn a_20_mib_message_arrives_intact() {
    let front = Front::start(None);
    for (program, pipelining) in [(SmtpProgram::Curl, false), (SmtpProgram::Swaks, true)] {
        let to = format!("bob@{MAIL_DOMAIN}");
        let id = unique_message_id(&format!("{program:?}-20mib"));
        let message = big_message("alice@example.org", &to, &id, 20 << 20);
        let mut submit = Submit::new(front.starttls, "alice", "alicepw", &to, message);
        submit.tls = SmtpTls::StartTls;
        submit.pipelining = pipelining;
        front.send_and_read_back(program, &submit, "bob", &id);
    }
}

/// Commands pipelined after AUTH (MAIL, RCPT, RCPT, DATA in one write) are answered in order.
#[test]
fn pipelined_commands_are_answered_in_order() {
    let front = Front::start(None);
    let (mut c, ehlo) = smtp_open_tls(front.starttls);
    assert!(ehlo.has_line("PIPELINING"), "{}", ehlo.text());
    smtp_expect(&mut c, &auth_plain_line("alice", "alicepw"), 235);
    let (id, message) = message_to("bob", "pipelined", "Pipelined.\n");
    c.send(
        b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\n\
          RCPT TO:<nobody@example.org>\r\nDATA\r\n",
    );
    let answers: Vec<u16> = (0..4).map(|_| smtp_reply(&mut c).code).collect();
    // The second recipient is unknown to Postfix (550 5.1.1): 5xx in its place.
    assert_eq!(answers[..2], [250, 250], "{answers:?}");
    assert!((500..600).contains(&answers[2]), "{answers:?}");
    assert_eq!(answers[3], 354, "{answers:?}");
    c.send(&message);
    smtp_expect(&mut c, ".", 250);
    smtp_expect(&mut c, "QUIT", 221);
    assert_arrived_intact(&message, &front.mail.wait_for_mail("bob", &id));
}

// ---------------------------------------------------------------------------------------------
// Before authentication
// ---------------------------------------------------------------------------------------------

/// MAIL, RCPT, DATA, BDAT and VRFY before AUTH get `530 5.7.0 Authentication required`, and
/// none of them reaches the back end.
#[test]
fn mail_before_auth_is_refused_with_530() {
    let front = Front::start(None);
    for (port, tls) in [(front.plain, false), (front.starttls, true)] {
        let (mut c, _) = if tls {
            smtp_open_tls(port)
        } else {
            smtp_open(port)
        };
        for command in [
            "MAIL FROM:<alice@example.org>",
            "RCPT TO:<bob@example.org>",
            "DATA",
            "BDAT 0 LAST",
            "VRFY bob",
        ] {
            let reply = smtp_command(&mut c, command);
            assert_eq!(
                reply.text(),
                "530 5.7.0 Authentication required\n",
                "{command} before AUTH on port {port}"
            );
        }
        smtp_expect(&mut c, "QUIT", 221);
    }
    let log = front.mail.postfix.log_text();
    assert!(
        !log.contains("from=<alice@example.org>"),
        "a pre-authentication MAIL reached Postfix:\n{log}"
    );
}

/// On the starttls-required listener AUTH before STARTTLS gets `530 5.7.0 Must issue a
/// STARTTLS command first` (and the credentials go nowhere); after STARTTLS it works.
#[test]
fn auth_before_starttls_is_refused_on_a_starttls_required_listener() {
    let front = Front::start(None);
    let (mut c, ehlo) = smtp_open(front.starttls);
    assert!(ehlo.has_line("STARTTLS"), "{}", ehlo.text());
    let reply = smtp_command(&mut c, &auth_plain_line("alice", "alicepw"));
    assert_eq!(
        reply.text(),
        "530 5.7.0 Must issue a STARTTLS command first\n"
    );
    smtp_expect(&mut c, "STARTTLS", 220);
    c.starttls();
    let ehlo = smtp_expect(&mut c, &format!("EHLO {CLIENT_HELO}"), 250);
    assert!(
        !ehlo.has_line("STARTTLS"),
        "STARTTLS offered twice:\n{}",
        ehlo.text()
    );
    assert!(ehlo.has_line("AUTH PLAIN LOGIN"), "{}", ehlo.text());
    smtp_expect(&mut c, &auth_plain_line("alice", "alicepw"), 235);
}

/// The EHLO answer lists what the back end really offers among what a relay can carry: SIZE
/// with Postfix's limit, SMTPUTF8 and DSN from Postfix, none of the two from Dovecot (2.3 offers
/// neither), never XCLIENT, VRFY's ETRN or the back end's AUTH line as such.
#[test]
fn ehlo_lists_what_the_back_end_offers() {
    let front = Front::start(None);
    let (_, postfix) = smtp_open_tls(front.starttls);
    for keyword in [
        "SIZE 52428800",
        "PIPELINING",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
        "CHUNKING",
        "DSN",
        "AUTH PLAIN LOGIN",
    ] {
        assert!(
            postfix.has_line(keyword),
            "no {keyword} in\n{}",
            postfix.text()
        );
    }
    for keyword in ["XCLIENT", "ETRN", "STARTTLS"] {
        assert!(
            !postfix.has_line(keyword),
            "{keyword} in\n{}",
            postfix.text()
        );
    }
    let (_, dovecot) = smtp_open_tls(front.dovecot);
    for keyword in ["SMTPUTF8", "DSN", "XCLIENT", "BURL"] {
        assert!(
            !dovecot.has_line(keyword),
            "{keyword} in\n{}",
            dovecot.text()
        );
    }
    assert!(dovecot.has_line("SIZE 52428800"), "{}", dovecot.text());
}

/// Plaintext pipelined behind STARTTLS is discarded (the CVE-2011-0411 command injection): the
/// first answer after the handshake is the one to the client's own EHLO.
#[test]
fn plaintext_after_starttls_is_discarded() {
    let front = Front::start(None);
    let (mut c, _) = smtp_open(front.starttls);
    c.send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<injected@example.org>\r\n");
    let reply = smtp_reply(&mut c);
    assert_eq!(reply.code, 220, "{}", reply.text());
    c.starttls();
    c.send_line("NOOP");
    // Had the injected RSET and MAIL been taken, their answers (250, 530) would come first and
    // the NOOP's after them.
    let reply = smtp_reply(&mut c);
    assert_eq!(reply.code, 250, "{}", reply.text());
    let more = c.try_read_line(Duration::from_millis(300));
    assert!(
        more.is_none(),
        "the injected plaintext was answered: {more:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Failures and what is logged about them
// ---------------------------------------------------------------------------------------------

/// A wrong password: the back end's 535 reaches the client, the proxy writes a Perdition-format
/// Auth line with `protocol=SUBMISSION`, and fail2ban's stock Perdition filter counts it
/// against the client's address.
#[test]
fn a_wrong_password_is_refused_logged_and_counted_by_fail2ban() {
    let front = Front::start(Some("perdition.submission"));
    let (mut c, _) = smtp_open_tls(front.starttls);
    let refused = smtp_command(&mut c, &auth_plain_line("alice", "guessed-wrong"));
    assert_eq!(refused.code, 535, "{}", refused.text());
    smtp_expect(&mut c, "QUIT", 221);
    let from = format!(
        "Auth: 127.0.0.1:{}->127.0.0.1:{} ",
        c.local_addr().port(),
        front.starttls
    );
    let line = front.expect_log(&from, "a wrong password");
    for part in [
        "authentication_id=\"alice\"",
        " protocol=SUBMISSION ",
        "status=\"failed: ",
    ] {
        assert!(line.contains(part), "no {part:?} in {line}");
    }

    // And with a real client: swaks with LOGIN.
    let (_, message) = message_to("bob", "wrong-password", "x\n");
    let mut submit = Submit::new(
        front.starttls,
        "alice",
        "guessed-wrong",
        &format!("bob@{MAIL_DOMAIN}"),
        message,
    );
    submit.tls = SmtpTls::StartTls;
    submit.auth = SmtpAuth::Login;
    let run = SmtpProgram::Swaks.send(&submit);
    assert!(
        !run.success,
        "sent with a wrong password:\n{}",
        run.transcript
    );
    assert!(run.transcript.contains("535"), "{}", run.transcript);

    let log = front.log_file.as_ref().unwrap();
    let failures = front
        .log_text()
        .lines()
        .filter(|l| l.contains("]: Auth: ") && l.contains("status=\"failed: "))
        .count();
    assert_eq!(failures, 2, "{}", front.log_text());
    let (matched, _, _) = support::fail2ban::matched_and_lines(log, Path::new(STOCK_FILTER));
    assert_eq!(
        matched,
        failures,
        "the stock filter's count:\n{}",
        front.log_text()
    );
}

/// XCLIENT: a client connecting from 127.0.0.2 is what Postfix logs for its message (address
/// and port), and what Dovecot's submission logs for its login (`rip=`).
#[test]
fn xclient_names_the_client_to_postfix_and_to_dovecot() {
    let front = Front::start(None);
    let sock = connect_from("127.0.0.2", front.starttls).unwrap();
    let client_port = sock.local_addr().unwrap().port();
    let mut c = Client::from_stream(sock);
    assert_eq!(smtp_reply(&mut c).code, 220);
    smtp_expect(&mut c, &format!("EHLO {CLIENT_HELO}"), 250);
    smtp_expect(&mut c, "STARTTLS", 220);
    c.starttls();
    smtp_expect(&mut c, &format!("EHLO {CLIENT_HELO}"), 250);
    smtp_expect(&mut c, &auth_plain_line("alice", "alicepw"), 235);
    let (id, message) = message_to("bob", "xclient", "From 127.0.0.2.\n");
    smtp_expect(&mut c, "MAIL FROM:<alice@example.org>", 250);
    smtp_expect(&mut c, "RCPT TO:<bob@example.org>", 250);
    smtp_expect(&mut c, "DATA", 354);
    c.send(&message);
    smtp_expect(&mut c, ".", 250);
    smtp_expect(&mut c, "QUIT", 221);
    assert_arrived_intact(&message, &front.mail.wait_for_mail("bob", &id));
    let needle =
        format!("client=unknown[127.0.0.2]:{client_port}, sasl_method=PLAIN, sasl_username=alice");
    assert!(
        front.mail.postfix.wait_log(&needle, LOG_WAIT),
        "no {needle:?} in Postfix's log:\n{}",
        front.mail.postfix.log_text()
    );

    let sock = connect_from("127.0.0.2", front.dovecot).unwrap();
    let mut c = Client::from_stream(sock);
    assert_eq!(smtp_reply(&mut c).code, 220);
    smtp_expect(&mut c, &format!("EHLO {CLIENT_HELO}"), 250);
    smtp_expect(&mut c, "STARTTLS", 220);
    c.starttls();
    smtp_expect(&mut c, &format!("EHLO {CLIENT_HELO}"), 250);
    smtp_expect(&mut c, &auth_plain_line("bob", "bobpw"), 235);
    smtp_expect(&mut c, "QUIT", 221);
    assert!(
        front.mail.dovecot.wait_log("rip=127.0.0.2", LOG_WAIT),
        "Dovecot's submission did not take the client's address:\n{}",
        front.mail.dovecot.log_text()
    );
}

// ---------------------------------------------------------------------------------------------
// The guard and the metrics
// ---------------------------------------------------------------------------------------------

/// The guard on submission: wrong passwords (each another, as a guesser's are) through the
/// proxy to Postfix get the client's address banned after `ban_after`: the failing connection
/// is told why it is let go, the next one is turned away at once with `421 4.7.0 Too many
/// failed logins, try again later`, on every listener; another address still logs in.
#[test]
fn wrong_passwords_through_to_postfix_get_the_client_banned() {
    // Connections are not closed for their failures alone (3 by default): the ban closes it.
    let guard = "[limits]\nmax_failed_logins = 10\n\n[guard]\npenalty_initial_ms = 50\n\
                 penalty_max_ms = 100\nban_after = 3\nban_ms = 60000\n";
    let front = Front::start_configured(None, guard);
    let logs = || {
        format!(
            "proxy: {}\n{}",
            front.proxy.everything_logged(),
            front.mail.logs()
        )
    };
    let _logs_on_panic = LogsOnPanic(&logs);
    let from = |source: &str, port: u16| Client::from_stream(connect_from(source, port).unwrap());
    let mut c = from("127.0.0.31", front.plain);
    assert_eq!(smtp_reply(&mut c).code, 220, "{}", logs());
    smtp_command(&mut c, &format!("EHLO {CLIENT_HELO}"));
    for guess in ["guess1", "guess2", "guess3"] {
        let refused = smtp_command(&mut c, &auth_plain_line("alice", guess));
        assert_eq!(
            refused.text(),
            "535 5.7.8 Authentication credentials invalid\n",
            "{guess}\n{}",
            logs()
        );
    }
    let told = c.try_read_line(READ_TIMEOUT);
    assert_eq!(
        told.as_deref(),
        Some("421 4.7.0 Too many failed logins, try again later"),
        "{}",
        logs()
    );
    assert!(c.is_closed(), "{}", logs());
    front.expect_log("Guard: 127.0.0.31:", "a ban after three wrong passwords");
    assert!(
        front
            .log_text()
            .contains("banned for 60 s after 3 failed logins"),
        "{}",
        logs()
    );
    for port in [front.plain, front.starttls] {
        let mut again = from("127.0.0.31", port);
        assert_eq!(
            again.try_read_line(READ_TIMEOUT).as_deref(),
            Some("421 4.7.0 Too many failed logins, try again later"),
            "port {port}\n{}",
            logs()
        );
        assert!(again.is_closed(), "{}", logs());
    }
    let mut other = from("127.0.0.32", front.plain);
    assert_eq!(smtp_reply(&mut other).code, 220, "{}", logs());
    smtp_command(&mut other, &format!("EHLO {CLIENT_HELO}"));
    let accepted = smtp_command(&mut other, &auth_plain_line("alice", "alicepw"));
    assert_eq!(accepted.code, 235, "{}{}", accepted.text(), logs());
}

/// After a submission login and a wrong password, the admin endpoint's metrics count them
/// under `protocol="submission"`, and the session being relayed.
#[test]
fn submission_logins_show_in_the_metrics() {
    use support::admin::{get, sample};
    let admin = free_port();
    let front =
        Front::start_configured(None, &format!("[admin]\nlisten = \"127.0.0.1:{admin}\"\n"));
    let logs = || {
        format!(
            "proxy: {}\n{}",
            front.proxy.everything_logged(),
            front.mail.logs()
        )
    };
    let _logs_on_panic = LogsOnPanic(&logs);
    assert!(wait_for_port(admin, PROXY_START_TIMEOUT), "{}", logs());
    let ok = "portcullis_logins_total{protocol=\"submission\",result=\"ok\"}";
    let failed = "portcullis_logins_total{protocol=\"submission\",result=\"auth_failed\"}";
    let proxying = "portcullis_sessions_current{protocol=\"submission\",state=\"proxying\"}";
    assert_eq!(sample(&get(admin, "/metrics"), ok), 0.0, "{}", logs());

    let (mut alice, _) = smtp_open_tls(front.starttls);
    smtp_expect(&mut alice, &auth_plain_line("alice", "alicepw"), 235);
    let (mut wrong, _) = smtp_open_tls(front.starttls);
    let refused = smtp_command(&mut wrong, &auth_plain_line("bob", "wrong"));
    assert_eq!(refused.code, 535, "{}{}", refused.text(), logs());

    let deadline = Instant::now() + LOG_WAIT;
    let counted = |metrics: &str| {
        sample(metrics, ok) == 1.0
            && sample(metrics, failed) == 1.0
            && sample(metrics, proxying) == 1.0
    };
    let mut metrics = get(admin, "/metrics");
    while !counted(&metrics) && Instant::now() < deadline {
        sleep(Duration::from_millis(25));
        metrics = get(admin, "/metrics");
    }
    assert!(counted(&metrics), "{metrics}\n{}", logs());
    assert!(
        !metrics.contains("alice"),
        "no user in the metrics: {metrics}"
    );
    smtp_expect(&mut alice, "QUIT", 221);
}

/// With an http map and a master user, as the IMAP master-user rules say: the service approves
/// the client's credentials and names the back-end user (Auth-User), and the proxy logs in to
/// Postfix as `USER*master` with the master password, which Dovecot's SASL takes as USER; the
/// client sends as that user. Credentials the service refuses never reach Postfix.
#[test]
fn a_master_user_logs_in_to_postfix_as_the_user_the_service_named() {
    let mail = MailServers::start();
    let submission = mail.postfix.submission;
    let service =
        AuthService::start(
            move |h, _| match (h["auth-user"].as_str(), h["auth-pass"].as_str()) {
                ("token-user", "one-time") => {
                    let mut reply = ok(submission);
                    reply.push(("Auth-User".into(), "bob".into()));
                    reply
                }
                _ => vec![("Auth-Status".into(), "Invalid login or password".into())],
            },
        );
    let (master, master_password) = MASTER;
    let port = free_port();
    let toml = format!(
        "[log]\ndestination = \"-\"\n\n[[listener]]\nprotocol = \"submission\"\n\
         bind = [\"127.0.0.1:{port}\"]\n[listener.backend]\nhost = \"\"\n\
         [listener.map]\nkind = \"http\"\nurl = \"http://127.0.0.1:{}/auth\"\n\
         master_user = \"{master}\"\nmaster_password = \"{master_password}\"\n",
        service.port
    );
    let proxy = Proxy::start_toml(&toml, &[port]);
    let (mut c, _) = smtp_open(port);
    let refused = smtp_command(&mut c, &auth_plain_line("bob", "bobpw"));
    assert_eq!(
        refused.text(),
        "535 5.7.0 Invalid login or password\n",
        "{}",
        proxy.everything_logged()
    );
    let (mut c, _) = smtp_open(port);
    let accepted = smtp_command(&mut c, &auth_plain_line("token-user", "one-time"));
    assert_eq!(
        accepted.code,
        235,
        "{}\nproxy: {}\n{}",
        accepted.text(),
        proxy.everything_logged(),
        mail.logs()
    );
    let (id, message) = message_to("alice", "master-user", "Sent as bob.\n");
    smtp_expect(&mut c, "MAIL FROM:<bob@example.org>", 250);
    smtp_expect(&mut c, "RCPT TO:<alice@example.org>", 250);
    smtp_expect(&mut c, "DATA", 354);
    c.send(&message);
    smtp_expect(&mut c, ".", 250);
    smtp_expect(&mut c, "QUIT", 221);
    assert_arrived_intact(&message, &mail.wait_for_mail("alice", &id));
    let log = mail.postfix.log_text();
    assert!(
        log.contains("sasl_username=bob"),
        "Postfix did not see bob logged in:\n{log}\n{}",
        mail.logs()
    );
    assert!(
        !log.contains("sasl_username=token-user"),
        "the client's own name reached Postfix:\n{log}"
    );
}
