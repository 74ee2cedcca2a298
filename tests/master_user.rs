//! A master user logs in at the back end (real Dovecot, its `master = yes` passdb) as exactly
//! the name the `auth_http` service approved, never as a rewrite of it: the service says yes
//! to `alice@attacker.example` with the attacker's own password, and the proxy must not log
//! in as `alice`. And a client naming its own server never skips the service.

mod support;

use support::auth_service::*;
use support::*;

/// Approves `alice@attacker.example` with the attacker's password (a multi-domain service
/// whose attacker owns `attacker.example`), and `token-user` with Auth-User `bob`.
fn attackers_service(backend: u16) -> AuthService {
    AuthService::start(
        move |h, _| match (h["auth-user"].as_str(), h["auth-pass"].as_str()) {
            ("alice@attacker.example", "attackerpw") => ok(backend),
            ("token-user", "one-time") => {
                let mut reply = ok(backend);
                reply.push(("Auth-User".into(), "bob".into()));
                reply
            }
            _ => vec![("Auth-Status".into(), "Invalid login or password".into())],
        },
    )
}

fn config(port: u16, service: &AuthService, users: &str) -> String {
    let (master, master_password) = MASTER;
    format!(
        "[log]\ndestination = \"-\"\n\n[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{port}\"]\n\
         {users}\n\
         [listener.backend]\nhost = \"\"\n\
         [listener.map]\nkind = \"http\"\nurl = \"http://127.0.0.1:{}/auth\"\n\
         master_user = \"{master}\"\nmaster_password = \"{master_password}\"\n",
        service.port
    )
}

fn check(toml: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portcullis.toml");
    std::fs::write(&path, toml).unwrap();
    let out = run_portcullis(&["check", "--config", path.to_str().unwrap()]);
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.success(), text)
}

#[test]
fn check_refuses_a_login_stage_rewrite_beside_a_master_user() {
    let service = attackers_service(1);
    for users in [
        "[listener.users]\nstrip_domain = \"login\"",
        "[listener.users]\nstrip_domain = \"all\"",
        "[listener.users]\nadd_domain = \"login\"\nexplicit_domain = \"example.org\"",
        "lower_case = \"login\"",
    ] {
        let (ok, text) = check(&config(free_port(), &service, users));
        assert!(!ok, "{users}: {text}");
        assert!(text.contains("login stage"), "{users}: {text}");
    }
    // At the lookup stage the name the service is asked about does not change.
    let lookup = "[listener.users]\nstrip_domain = \"lookup\"";
    let (ok, text) = check(&config(free_port(), &service, lookup));
    assert!(ok, "{text}");
}

#[test]
fn the_master_user_logs_in_as_the_approved_name_only() {
    let dc = Dovecot::start();
    let service = attackers_service(dc.imap);
    let port = free_port();
    // Allowed (lookup stage): must still log in as the name the service approved.
    let toml = config(
        port,
        &service,
        "[listener.users]\nstrip_domain = \"lookup\"",
    );
    let proxy = Proxy::start_toml(&toml, &[port]);
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    c.send_line("a LOGIN alice@attacker.example attackerpw");
    let answer = c.read_until_tagged("a").pop().unwrap();
    assert!(
        answer.starts_with("a NO"),
        "{answer}; proxy log:\n{}",
        proxy.log_text()
    );
    assert!(
        dc.wait_log(
            "user=<alice@attacker.example*proxymaster>",
            std::time::Duration::from_secs(5)
        ) || dc.log_text().contains("alice@attacker.example"),
        "Dovecot was not asked about the approved name; its log:\n{}",
        dc.log_text()
    );
    assert!(
        !dc.log_text().contains("Login: user=<alice>"),
        "someone else's mailbox opened:\n{}",
        dc.log_text()
    );
    // The service's Auth-User names the back-end user.
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    imap_login(&mut c, "a", "token-user", "one-time");
    assert!(dc.saw_login("bob"), "{}", dc.log_text());
}

#[test]
fn check_refuses_a_client_naming_its_server_beside_a_password_checking_map() {
    // A service that refuses everyone.
    let service =
        AuthService::start(|_, _| vec![("Auth-Status".into(), "Account disabled".into())]);
    let port = free_port();
    let toml = format!(
        "[log]\ndestination = \"-\"\n\n[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{port}\"]\n\
         client_server_specification = true\n\
         [listener.backend]\nhost = \"\"\n\
         [listener.map]\nkind = \"http\"\nurl = \"http://127.0.0.1:{}/auth\"\n",
        service.port
    );
    let (ok, text) = check(&toml);
    assert!(!ok, "{text}");
    assert!(text.contains("client_server_specification"), "{text}");
}
