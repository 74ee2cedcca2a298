//! The SMTP submission back ends of the harness, proved without Portcullis: the test Postfix
//! (SASL through the test Dovecot, LMTP into its mailboxes, XCLIENT from loopback) and Dovecot's
//! own submission service (relaying through that Postfix), driven by the real client programs
//! the submission tests use (swaks, msmtp, Python's smtplib, curl). A message sent is read back
//! byte for byte, from the Maildir and through IMAP.

mod support;

use std::time::Duration;

use support::*;

/// How long a log line may take to appear.
const LOG_WAIT: Duration = Duration::from_secs(10);

/// Sends `submit` with `program`, waits for it in `user`'s INBOX and checks it arrived byte for
/// byte (Maildir and IMAP).
fn send_and_read_back(
    mail: &MailServers,
    program: SmtpProgram,
    submit: &Submit,
    user: &str,
    message_id: &str,
) {
    let run = program.send(submit);
    assert!(
        run.success,
        "{program:?} did not send:\n{}\n{}",
        run.transcript,
        mail.logs()
    );
    if submit.pipelining || program == SmtpProgram::Msmtp {
        assert!(
            run.pipelined(),
            "{program:?} did not pipeline:\n{}",
            run.transcript
        );
    }
    let stored = mail.wait_for_mail(user, message_id);
    assert_arrived_intact(&submit.message, &stored);
    let password = USERS.iter().find(|(u, _)| *u == user).unwrap().1;
    let fetched = imap_fetch_by_message_id(mail.dovecot.imap, user, password, message_id);
    assert_arrived_intact(&submit.message, &fetched);
}

/// Each client program submits to Postfix with another TLS mode and mechanism (swaks
/// pipelining over STARTTLS with PLAIN, msmtp over implicit TLS with LOGIN, smtplib in plaintext
/// with LOGIN, curl over STARTTLS with PLAIN); each message reaches bob's INBOX intact, and
/// Postfix logged each login.
#[test]
fn postfix_takes_plain_and_login_from_every_client_and_delivers_intact() {
    let mail = MailServers::start();
    let cases = [
        (SmtpProgram::Swaks, SmtpTls::StartTls, SmtpAuth::Plain, true),
        (
            SmtpProgram::Msmtp,
            SmtpTls::Implicit,
            SmtpAuth::Login,
            false,
        ),
        (SmtpProgram::Python, SmtpTls::None, SmtpAuth::Login, false),
        (SmtpProgram::Curl, SmtpTls::StartTls, SmtpAuth::Plain, false),
    ];
    for (program, tls, auth, pipelining) in cases {
        let id = unique_message_id(&format!("{program:?}").to_lowercase());
        let to = format!("bob@{MAIL_DOMAIN}");
        let body = format!(
            "Sent by {program:?} ({tls:?}, {auth:?}).\n.a line that starts with a dot\n\
             Gr\u{fc}\u{df}e, 8 bit.\n"
        );
        let message = test_message("Alice <alice@example.org>", &to, &id, "Harness", &body);
        let port = match tls {
            SmtpTls::Implicit => mail.postfix.submissions,
            _ => mail.postfix.submission,
        };
        let mut submit = Submit::new(port, "alice", "alicepw", &to, message);
        submit.tls = tls;
        submit.auth = auth;
        submit.pipelining = pipelining;
        send_and_read_back(&mail, program, &submit, "bob", &id);
    }
    let log = mail.postfix.log_text();
    for method in ["PLAIN", "LOGIN"] {
        assert!(
            log.contains(&format!("sasl_method={method}, sasl_username=alice")),
            "no {method} login in Postfix's log:\n{log}"
        );
    }
}

/// An SMTPUTF8 message (UTF-8 in the envelope sender and the header fields) is taken and
/// delivered, through virtual(8), to the UTF-8 domain; a 20 MiB message arrives intact.
#[test]
fn postfix_delivers_smtputf8_and_20_mib_messages() {
    let mail = MailServers::start();
    let to = format!("alice@{UTF8_MAIL_DOMAIN}");
    let id = unique_message_id("smtputf8");
    let message = test_message(
        "J\u{f6}rg <j\u{f6}rg@example.org>",
        &to,
        &id,
        "Gr\u{fc}\u{df}e \u{2713}",
        "Gr\u{fc}\u{df}e aus M\u{fc}nchen \u{2713}\n",
    );
    let mut submit = Submit::new(mail.postfix.submission, "bob", "bobpw", &to, message);
    submit.from = "j\u{f6}rg@example.org".to_string();
    submit.mail_options = vec!["SMTPUTF8".into(), "BODY=8BITMIME".into()];
    submit.tls = SmtpTls::StartTls;
    send_and_read_back(&mail, SmtpProgram::Python, &submit, "alice", &id);

    let to = format!("alice@{MAIL_DOMAIN}");
    let id = unique_message_id("big");
    let message = big_message("bob@example.org", &to, &id, 20 << 20);
    let mut submit = Submit::new(mail.postfix.submission, "bob", "bobpw", &to, message);
    submit.tls = SmtpTls::StartTls;
    send_and_read_back(&mail, SmtpProgram::Swaks, &submit, "alice", &id);
}

/// A wrong password is refused with 535 5.7.8, by hand and with swaks; MAIL without AUTH is
/// refused at RCPT (submission sends only after AUTH).
#[test]
fn postfix_refuses_a_wrong_password_with_535() {
    let mail = MailServers::start();
    let mut c = Client::plain(mail.postfix.submission);
    assert_eq!(smtp_reply(&mut c).code, 220);
    let ehlo = smtp_expect(&mut c, &format!("EHLO {CLIENT_HELO}"), 250);
    for keyword in [
        "AUTH PLAIN LOGIN",
        "STARTTLS",
        "XCLIENT",
        "PIPELINING",
        "SIZE 52428800",
    ] {
        assert!(ehlo.has_line(keyword), "no {keyword} in\n{}", ehlo.text());
    }
    let refused = smtp_command(&mut c, &auth_plain_line("alice", "wrong"));
    assert_eq!(refused.code, 535, "{}", refused.text());
    assert!(refused.lines[0].starts_with("5.7.8"), "{}", refused.text());
    smtp_expect(&mut c, "MAIL FROM:<alice@example.org>", 250);
    let rcpt = smtp_command(&mut c, "RCPT TO:<bob@example.org>");
    assert_eq!(rcpt.code, 554, "RCPT without AUTH: {}", rcpt.text());
    smtp_expect(&mut c, "QUIT", 221);

    let message = test_message("a@example.org", "b@example.org", "<x@y>", "x", "x\n");
    let mut submit = Submit::new(
        mail.postfix.submission,
        "alice",
        "wrong",
        "bob@example.org",
        message,
    );
    submit.auth = SmtpAuth::Login;
    let run = SmtpProgram::Swaks.send(&submit);
    assert!(
        !run.success,
        "swaks sent with a wrong password:\n{}",
        run.transcript
    );
    assert!(run.transcript.contains("535 5.7.8"), "{}", run.transcript);
}

/// XCLIENT from loopback is taken: the address and port it names are what Postfix logs for the
/// message, which is how a test sees the proxy's client in Postfix's log.
#[test]
fn postfix_takes_xclient_from_loopback_and_logs_the_named_client() {
    let mail = MailServers::start();
    let mut c = Client::plain(mail.postfix.submission);
    assert_eq!(smtp_reply(&mut c).code, 220);
    smtp_expect(&mut c, &format!("EHLO {CLIENT_HELO}"), 250);
    smtp_expect(
        &mut c,
        "XCLIENT ADDR=127.0.0.77 PORT=4242 PROTO=ESMTP HELO=far.example",
        220,
    );
    smtp_expect(&mut c, &format!("EHLO {CLIENT_HELO}"), 250);
    smtp_expect(&mut c, &auth_plain_line("alice", "alicepw"), 235);
    let id = unique_message_id("xclient");
    let message = test_message(
        "alice@example.org",
        "bob@example.org",
        &id,
        "XCLIENT",
        "hi\n",
    );
    smtp_expect(&mut c, "MAIL FROM:<alice@example.org>", 250);
    smtp_expect(&mut c, "RCPT TO:<bob@example.org>", 250);
    smtp_expect(&mut c, "DATA", 354);
    c.send(&message);
    smtp_expect(&mut c, ".", 250);
    smtp_expect(&mut c, "QUIT", 221);
    assert_arrived_intact(&message, &mail.wait_for_mail("bob", &id));
    let needle = "client=unknown[127.0.0.77]:4242, sasl_method=PLAIN, sasl_username=alice";
    assert!(
        mail.postfix.wait_log(needle, LOG_WAIT),
        "no {needle:?} in Postfix's log:\n{}",
        mail.postfix.log_text()
    );
}

/// Dovecot's own submission service (the second back end): swaks and msmtp log in with PLAIN and
/// LOGIN, Dovecot relays through Postfix (telling it the login by XCLIENT) and the messages
/// arrive intact; a wrong password is refused with 535.
#[test]
fn dovecot_submission_relays_through_postfix_and_refuses_a_wrong_password() {
    let mail = MailServers::start();
    let port = mail.dovecot_submission();
    for (program, auth) in [
        (SmtpProgram::Swaks, SmtpAuth::Plain),
        (SmtpProgram::Msmtp, SmtpAuth::Login),
    ] {
        let id = unique_message_id("dovecot-submission");
        let to = format!("alice@{MAIL_DOMAIN}");
        let message = test_message("bob@example.org", &to, &id, "Via Dovecot", "Hello.\n");
        let mut submit = Submit::new(port, "bob", "bobpw", &to, message);
        submit.tls = SmtpTls::StartTls;
        submit.auth = auth;
        send_and_read_back(&mail, program, &submit, "alice", &id);
    }
    let needle = "sasl_method=XCLIENT, sasl_username=bob";
    assert!(
        mail.postfix.wait_log(needle, LOG_WAIT),
        "Dovecot's relay did not name bob by XCLIENT:\n{}",
        mail.logs()
    );

    let mut c = Client::plain(port);
    assert_eq!(smtp_reply(&mut c).code, 220);
    let ehlo = smtp_expect(&mut c, &format!("EHLO {CLIENT_HELO}"), 250);
    assert!(ehlo.has_line("XCLIENT"), "{}", ehlo.text());
    let refused = smtp_command(&mut c, &auth_plain_line("bob", "wrong"));
    assert_eq!(refused.code, 535, "{}", refused.text());
}
