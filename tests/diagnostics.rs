//! Diagnostic lines through `tracing`: as JSON on stderr when asked, filtered by `[log] level`
//! or `RUST_LOG`, while the Connect/Auth/Closing lines keep Perdition's format on the log's own
//! destination whatever is chosen; to journald (a socket of the test's own in journald's place,
//! in a mount namespace of the proxy's own) with priority and identifier.

mod support;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

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

/// `diagnostics = "journald"` sends to `/run/systemd/journal/socket`, a path tracing-journald
/// fixes. The proxy runs in a mount namespace of its own (`unshare`: root, or unprivileged
/// user namespaces) whose `/run` is empty but for the test's own datagram socket in that
/// place: the real crate, the real path, nothing else on the machine touched. `journal`: the
/// directory that becomes `/run/systemd/journal` (None: none, journald absent).
fn in_a_namespace_with_journal(journal: Option<&Path>) -> Vec<String> {
    let mut script = "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal".to_string();
    if let Some(dir) = journal {
        script += &format!(" && mount --bind '{}' /run/systemd/journal", dir.display());
    }
    script += " && exec \"$@\"";
    let mut command = vec!["unshare".to_string(), "--mount".into()];
    if nix::unistd::getuid().as_raw() != 0 {
        command.push("--map-root-user".into());
    }
    command.extend(["--propagation", "private", "sh", "-c", &script, "sh"].map(String::from));
    command
}

/// One journald native-protocol datagram: `KEY=value` lines, or `KEY`, a little-endian 64-bit
/// length and that many bytes for values with a newline.
fn journal_fields(mut datagram: &[u8]) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    while !datagram.is_empty() {
        let end = datagram
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(datagram.len());
        let line = &datagram[..end];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            let key = String::from_utf8_lossy(&line[..eq]).into_owned();
            fields.insert(key, String::from_utf8_lossy(&line[eq + 1..]).into_owned());
            datagram = datagram.get(end + 1..).unwrap_or_default();
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let rest = &datagram[end + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            let value = String::from_utf8_lossy(&rest[8..8 + len]).into_owned();
            fields.insert(key, value);
            datagram = rest.get(8 + len + 1..).unwrap_or_default();
        }
    }
    fields
}

/// Diagnostics reach journald with their priority, identifier and target, while fail2ban's
/// Connect and Auth lines stay on the log's own destination in Perdition's format.
#[test]
fn journald_diagnostics_carry_priority_and_identifier_and_auth_lines_stay() {
    let dc = Dovecot::start();
    let journal = tempfile::tempdir().unwrap();
    std::fs::set_permissions(journal.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = UnixDatagram::bind(journal.path().join("socket")).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let port = free_port();
    let wrapper = in_a_namespace_with_journal(Some(journal.path()));
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let toml = config(port, dc.imap, "diagnostics = \"journald\"");
    let proxy = Proxy::start_toml_wrapped(&toml, &[port], &wrapper, &[]);
    login(port);
    assert!(
        proxy.wait_log("Auth: 127.0.0.1:", READ_TIMEOUT),
        "{}",
        proxy.everything_logged()
    );

    let mut received = Vec::new();
    let mut buf = vec![0u8; 65536];
    let deadline = std::time::Instant::now() + READ_TIMEOUT;
    while std::time::Instant::now() < deadline {
        match socket.recv(&mut buf) {
            Ok(0) => {}
            Ok(n) => received.push(journal_fields(&buf[..n])),
            Err(_) if received.iter().any(|f| f.contains_key("MESSAGE")) => break,
            Err(_) => {}
        }
    }
    let listening = format!("Listening on 127.0.0.1:{port}");
    let entry = received
        .iter()
        .find(|f| f.get("MESSAGE").is_some_and(|m| m.starts_with(&listening)))
        .unwrap_or_else(|| {
            panic!(
                "no {listening:?} in the journal: {received:?}\n{}",
                proxy.everything_logged()
            )
        });
    assert_eq!(
        entry.get("PRIORITY").map(String::as_str),
        Some("6"),
        "{entry:?}"
    );
    assert_eq!(
        entry.get("SYSLOG_IDENTIFIER").map(String::as_str),
        Some("portcullis"),
        "{entry:?}"
    );
    assert_eq!(
        entry.get("TARGET").map(String::as_str),
        Some("portcullis"),
        "{entry:?}"
    );
    // fail2ban's lines: in the log's own destination, Perdition's format, not in the journal.
    let log = proxy.log_text();
    assert!(!log.contains(&listening), "{log}");
    for kind in ["Connect:  127.0.0.1:", "Auth: 127.0.0.1:"] {
        assert!(log.contains(kind), "{kind}: {log}");
        assert!(
            !received
                .iter()
                .any(|f| f.get("MESSAGE").is_some_and(|m| m.contains(kind))),
            "{kind} went to the journal"
        );
    }
}

/// Asked for journald where there is none, the proxy does not start, and says why.
#[test]
fn journald_diagnostics_without_a_journal_refuse_to_start() {
    let port = free_port();
    let wrapper = in_a_namespace_with_journal(None);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let toml = config(port, free_port(), "diagnostics = \"journald\"");
    let failure = std::panic::catch_unwind(|| {
        Proxy::start_toml_wrapped(&toml, &[port], &wrapper, &[]);
    })
    .expect_err("the proxy started without a journal");
    let message = failure
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("exited early")
            && message.contains("log.diagnostics: journald is not reachable"),
        "{message}"
    );
}
