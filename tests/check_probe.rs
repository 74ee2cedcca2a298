//! `portcullis check --probe`: every back end reached as a login would reach it (plain, TLS,
//! STARTTLS), with its greeting, capabilities and certificate reported, and a non-zero exit
//! when one of them is broken.

mod support;

use support::*;

fn listener(protocol: &str, port: u16, backend: &str) -> String {
    format!(
        "[[listener]]\nprotocol = \"{protocol}\"\nbind = [\"127.0.0.1:{}\"]\n\
         [listener.backend]\nhost = \"127.0.0.1\"\nport = {port}\n{backend}\n\n",
        free_port()
    )
}

fn check_probe(toml: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("portcullis.toml");
    std::fs::write(&file, toml).unwrap();
    let out = run_portcullis(&["check", "--config", file.to_str().unwrap(), "--probe"]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_back_end_is_reached_as_a_login_would_and_reported() {
    let dc = Dovecot::start();
    let tls = format!(
        "ca_file = \"{}\"\nserver_name = \"localhost\"\n",
        certs().ca.display()
    );
    let toml = listener("imap", dc.imaps, &format!("tls = \"implicit\"\n{tls}"))
        + &listener("pop3", dc.pop3, &format!("tls = \"starttls\"\n{tls}"))
        + &listener(
            "managesieve",
            dc.sieve,
            &format!("tls = \"starttls\"\n{tls}"),
        )
        + &listener("imap", dc.imap, "");
    let (ok, out, err) = check_probe(&toml);
    assert!(ok, "{out}\n{err}");
    assert!(err.contains("every back end answers"), "{err}");
    for port in [dc.imaps, dc.pop3, dc.sieve, dc.imap] {
        assert!(
            out.contains(&format!("back end 127.0.0.1:{port}: ok")),
            "{port}:\n{out}"
        );
    }
    assert_eq!(out.matches("TLS: TLSv1_3, certificate").count(), 3, "{out}");
    assert!(out.contains("for [DNSName(localhost)"), "{out}");
    assert!(out.contains("greeting: * OK"), "{out}");
    assert!(out.contains("greeting: +OK"), "{out}");
    assert!(out.contains("capabilities: IMAP4rev1"), "{out}");
    assert!(out.contains("SIEVE"), "{out}");
    assert!(out.contains("reachable: connected in"), "{out}");
}

#[test]
fn a_broken_back_end_fails_the_probe_and_says_why() {
    let dc = Dovecot::start();
    let dead = free_port();
    let wrong_ca = format!(
        "tls = \"implicit\"\nca_file = \"{}\"\nserver_name = \"localhost\"\n",
        certs().other_ca.display()
    );
    // Answers that never come are waited for this long.
    let toml = "[limits]\nbackend_login_timeout = 2\n\n".to_string()
        + &listener(
            "imap",
            dc.imap,
            &format!("failover = [\"127.0.0.1:{dead}\"]"),
        )
        + &listener("imap", dc.imaps, &wrong_ca)
        + &listener("pop3", dc.pop3s, "tls = \"starttls\"\nverify = false");
    let (ok, out, err) = check_probe(&toml);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("back end 127.0.0.1:{}: ok", dc.imap)),
        "{out}"
    );
    assert!(
        out.contains(&format!("back end 127.0.0.1:{dead}: BROKEN: unreachable")),
        "{out}"
    );
    assert!(
        out.contains(&format!("back end 127.0.0.1:{}: BROKEN: TLS:", dc.imaps)),
        "{out}"
    );
    // STARTTLS asked of a port that speaks TLS from the first byte: no greeting to read.
    assert!(
        out.contains(&format!("back end 127.0.0.1:{}: BROKEN", dc.pop3s)),
        "{out}"
    );
    assert!(
        err.contains(&format!("error: listener 1: 127.0.0.1:{dead}")),
        "{err}"
    );
}

/// A submission listener's back end: the test Postfix's submission by STARTTLS, greeted with
/// EHLO; the report shows its greeting, the TLS it got and the extensions it lists after TLS
/// (AUTH's mechanisms, SIZE). Its relay port offers no STARTTLS: that back end is BROKEN, and
/// the report says why.
#[test]
fn a_submission_back_end_is_probed_with_ehlo_and_starttls() {
    let mail = MailServers::start();
    let tls = format!(
        "tls = \"starttls\"\nca_file = \"{}\"\nserver_name = \"localhost\"\n",
        certs().ca.display()
    );
    let (ok, out, err) = check_probe(&listener("submission", mail.postfix.submission, &tls));
    let shown = || format!("{out}\n{err}\n{}", mail.logs());
    assert!(ok, "{}", shown());
    let report = format!("back end 127.0.0.1:{}: ok", mail.postfix.submission);
    assert!(out.contains(&report), "{}", shown());
    assert!(
        out.contains("greeting: 220 postfix.portcullis.test ESMTP Postfix"),
        "{}",
        shown()
    );
    assert!(
        out.contains("TLS: TLSv1_3, certificate CN=localhost"),
        "{}",
        shown()
    );
    let capabilities = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("capabilities: "))
        .unwrap_or_else(|| panic!("no capabilities line: {}", shown()));
    for extension in ["AUTH PLAIN LOGIN", "SIZE 52428800"] {
        assert!(capabilities.contains(extension), "{extension}: {}", shown());
    }
    assert!(err.contains("every back end answers"), "{}", shown());

    let (ok, out, err) = check_probe(&listener("submission", mail.postfix.smtp, &tls));
    let shown = || format!("{out}\n{err}\n{}", mail.logs());
    assert!(!ok, "{}", shown());
    let broken = format!("back end 127.0.0.1:{}: BROKEN: ", mail.postfix.smtp);
    let reason = out
        .lines()
        .find_map(|l| l.trim().strip_prefix(broken.trim_start()))
        .unwrap_or_else(|| panic!("not BROKEN: {}", shown()));
    assert_eq!(
        reason,
        "STARTTLS is configured but the back end does not offer it",
        "{}",
        shown()
    );
}
