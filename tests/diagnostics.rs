//! Diagnostic lines through `tracing`: as JSON on stderr when asked, filtered by `[log] level`
//! or `RUST_LOG`, while the Connect/Auth/Closing lines keep Perdition's format on the log's own
//! destination whatever is chosen.

mod support;

use support::*;

fn config(port: u16, backend: u16, log: &str) -> String {
    format!(
        "[log]\ndestination = \"-\"\n{log}\n\n[[listener]]\nprotocol = \"imap\"\n\
         bind = [\"127.0.0.1:{port}\"]\n[listener.backend]\nhost = \"127.0.0.1\"\nport = {backend}\n"
    )
}

fn login(port: u16) {
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    imap_login(&mut c, "a", "alice", "alicepw");
}

#[test]
fn json_diagnostics_beside_perdition_lines() {
    let dc = Dovecot::start();
    let port = free_port();
    let proxy = Proxy::start_toml(&config(port, dc.imap, "diagnostics = \"json\""), &[port]);
    login(port);
    assert!(proxy.wait_log("Auth: 127.0.0.1:", READ_TIMEOUT));
    let log = proxy.log_text();
    let listening = log
        .lines()
        .find(|l| l.contains("Listening on 127.0.0.1"))
        .unwrap_or_else(|| panic!("{log}"));
    let json: serde_json::Value = serde_json::from_str(listening).expect(listening);
    assert_eq!(json["level"], "INFO");
    assert_eq!(json["target"], "portcullis");
    assert!(json["fields"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Listening on 127.0.0.1"));
    // fail2ban's lines are untouched: Perdition's format, not JSON.
    let auth = log
        .lines()
        .find(|l| l.contains("Auth: 127.0.0.1:"))
        .unwrap();
    assert!(!auth.starts_with('{'), "{auth}");
    assert!(auth.contains("authentication_id=\"alice\""), "{auth}");
    // As are the Connect and Closing lines fail2ban and admins read.
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    c.send_line("z LOGOUT");
    c.read_until_tagged("z");
    for kind in ["Connect:  127.0.0.1:", "Closing NULL session: 127.0.0.1:"] {
        assert!(
            proxy.wait_log(kind, READ_TIMEOUT),
            "{kind}:\n{}",
            proxy.log_text()
        );
        let log = proxy.log_text();
        let line = log.lines().find(|l| l.contains(kind)).unwrap();
        assert!(!line.starts_with('{'), "{line}");
    }
}

#[test]
fn the_level_and_rust_log_hold_back_diagnostics_but_never_auth_lines() {
    let dc = Dovecot::start();
    let port = free_port();
    let proxy = Proxy::start_toml(&config(port, dc.imap, "level = \"warn\""), &[port]);
    login(port);
    assert!(proxy.wait_log("Auth: 127.0.0.1:", READ_TIMEOUT));
    let log = proxy.log_text();
    assert!(!log.contains("Listening on"), "{log}");
    assert!(
        log.contains("Connect:  127.0.0.1:"),
        "fail2ban's Connect line went: {log}"
    );

    // RUST_LOG wins over the file.
    let port = free_port();
    let proxy = Proxy::start_toml_wrapped(
        &config(port, dc.imap, "level = \"info\""),
        &[port],
        &["env"],
        &[("RUST_LOG", "error")],
    );
    login(port);
    assert!(proxy.wait_log("Auth: 127.0.0.1:", READ_TIMEOUT));
    assert!(!proxy.log_text().contains("Listening on"));

    // And a level that is none is a configuration error.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("portcullis.toml");
    for level in ["portcullis=loud", "warning"] {
        let toml = config(free_port(), dc.imap, &format!("level = \"{level}\""));
        std::fs::write(&file, toml).unwrap();
        let out = run_portcullis(&["check", "--config", file.to_str().unwrap()]);
        assert!(!out.status.success(), "{level}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("log.level \"{level}\"")),
            "{stderr}"
        );
    }
}
