//! nginx's `auth_http` protocol as a map, against a small real HTTP service started by each
//! test: the requests carry nginx's headers, the replies route users (host names too), rewrite
//! the back-end user and password, refuse with words the client sees, ask to wait, and a
//! service that is down makes logins unavailable. Beside nginx's own mail proxy (IMAP, POP3 and
//! SMTP) on the same service, the requests and the clients' answers are compared.

mod support;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use support::auth_service::*;
use support::nginx::*;
use support::*;

fn proxy(port: u16, service: &AuthService) -> Proxy {
    let toml = format!(
        "[log]\ndestination = \"-\"\n\n[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{port}\"]\n\
         [listener.backend]\nhost = \"\"\n\
         [listener.map]\nkind = \"http\"\nurl = \"http://127.0.0.1:{}/auth\"\ntimeout = 3\n\
         headers = {{ \"X-Auth-Key\" = \"s3cret-key\" }}\n",
        service.port
    );
    Proxy::start_toml(&toml, &[port])
}

/// Whether `user` logged in at `dc` (no waiting: for "never landed there" checks).
fn logged_in_at(dc: &Dovecot, user: &str) -> bool {
    dc.log_text().contains(&format!("Login: user=<{user}>"))
}

#[test]
fn the_service_routes_users_and_gets_nginxs_headers() {
    let (dc1, dc2) = (Dovecot::start(), Dovecot::start());
    let (p1, p2) = (dc1.imap, dc2.imap);
    let service = AuthService::start(move |h, _| match h["auth-user"].as_str() {
        "alice" => ok(p1),
        "bob" => ok(p2),
        // With Auth-Wait the client may try again on the same connection.
        _ => vec![
            ("Auth-Status".into(), "Invalid login or password".into()),
            ("Auth-Wait".into(), "1".into()),
        ],
    });
    let port = free_port();
    let _proxy = proxy(port, &service);
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    c.send_line("a LOGIN nobody pw");
    let no = c.read_until_tagged("a").pop().unwrap();
    assert_eq!(no, "a NO [AUTHENTICATIONFAILED] Invalid login or password");
    imap_login(&mut c, "b", "alice", "alicepw");
    let mut c2 = Client::plain(port);
    c2.expect_line("* OK");
    imap_login(&mut c2, "a", "bob", "bobpw");
    assert!(dc1.saw_login("alice") && !logged_in_at(&dc2, "alice"));
    assert!(dc2.saw_login("bob"));

    let requests = service.requests();
    let alice = requests.iter().find(|h| h["auth-user"] == "alice").unwrap();
    assert_eq!(alice["auth-method"], "plain");
    assert_eq!(alice["auth-pass"], "alicepw");
    assert_eq!(alice["auth-protocol"], "imap");
    assert_eq!(
        alice["auth-login-attempt"], "2",
        "second login of the connection"
    );
    assert_eq!(alice["client-ip"], "127.0.0.1");
    assert_eq!(alice["x-auth-key"], "s3cret-key");
    assert!(!alice.contains_key("auth-ssl"));
}

#[test]
fn passwords_are_escaped_as_nginx_escapes_them_and_the_reply_can_rewrite_the_login() {
    let dc = Dovecot::start();
    let p = dc.imap;
    let service = AuthService::start(move |h, _| {
        let mut reply = ok(p);
        if h["auth-user"] == "c" {
            reply.push(("Auth-User".into(), "carol@example.org".into()));
            reply.push(("Auth-Pass".into(), "carolpw".into()));
        }
        reply
    });
    let port = free_port();
    let _proxy = proxy(port, &service);
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    imap_login(&mut c, "a", "c", "a-token");
    assert!(dc.saw_login("carol@example.org"));
    let mut d = Client::plain(port);
    d.expect_line("* OK");
    d.send_line("a LOGIN dave \"p@ss \\\"w0rd\\\" \\\\ x\"");
    let answer = d.read_until_tagged("a").pop().unwrap();
    assert!(answer.starts_with("a OK"), "{answer}");
    let requests = service.requests();
    let dave = requests.iter().find(|h| h["auth-user"] == "dave").unwrap();
    assert_eq!(dave["auth-pass"], "p@ss%20\"w0rd\"%20\\%20x");
}

#[test]
fn wait_asks_again_and_a_refusal_with_auth_wait_comes_late() {
    let dc = Dovecot::start();
    let p = dc.imap;
    let service = AuthService::start(move |h, n| match (h["auth-user"].as_str(), n) {
        ("alice", 1) => vec![
            ("Auth-Status".into(), "WAIT".into()),
            ("Auth-Wait".into(), "1".into()),
        ],
        ("alice", _) => ok(p),
        _ => vec![
            ("Auth-Status".into(), "Too many attempts".into()),
            ("Auth-Wait".into(), "1".into()),
        ],
    });
    let port = free_port();
    let _proxy = proxy(port, &service);
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    imap_login(&mut c, "a", "alice", "alicepw");
    let requests = service.requests();
    assert_eq!(requests.len(), 2, "the same request, asked twice");
    assert_eq!(requests[1]["auth-login-attempt"], "1");

    let mut m = Client::plain(port);
    m.expect_line("* OK");
    let start = Instant::now();
    m.send_line("a LOGIN mallory x");
    let no = m.read_until_tagged("a").pop().unwrap();
    assert_eq!(no, "a NO [AUTHENTICATIONFAILED] Too many attempts");
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    // The connection stays open: the client may try again.
    m.send_line("b NOOP");
    m.expect_line("b OK");
}

#[test]
fn a_service_that_is_down_makes_logins_unavailable() {
    let service = AuthService::dead();
    let port = free_port();
    let proxy = proxy(port, &service);
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    c.send_line("a LOGIN alice alicepw");
    let no = c.read_until_tagged("a").pop().unwrap();
    assert!(no.starts_with("a NO [UNAVAILABLE]"), "{no}");
    assert!(proxy.wait_log(
        "status=\"failed: Could not connect to server\"",
        READ_TIMEOUT
    ));
}

/// The service checks the client's password (here a one-time token Dovecot knows nothing of);
/// the proxy then logs in to Dovecot as its master user on the client's behalf.
#[test]
fn after_the_service_checks_the_password_the_proxy_logs_in_as_a_master_user() {
    let dc = Dovecot::start();
    let p = dc.imap;
    let service = AuthService::start(move |h, _| {
        if h["auth-user"] == "alice" && h["auth-pass"] == "one-time-token" {
            ok(p)
        } else {
            vec![("Auth-Status".into(), "Invalid login or password".into())]
        }
    });
    let port = free_port();
    let (master, master_password) = MASTER;
    let toml = format!(
        "[log]\ndestination = \"-\"\n\n[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{port}\"]\n\
         [listener.backend]\nhost = \"\"\n\
         [listener.map]\nkind = \"http\"\nurl = \"http://127.0.0.1:{}/auth\"\n\
         master_user = \"{master}\"\nmaster_password = \"{master_password}\"\n",
        service.port
    );
    let proxy = Proxy::start_toml(&toml, &[port]);
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    imap_login(&mut c, "a", "alice", "one-time-token");
    c.send_line("b SELECT INBOX");
    let lines = c.read_until_tagged("b");
    assert!(lines.iter().any(|l| l == "* 3 EXISTS"), "{lines:?}");
    assert!(dc.saw_login("alice"));
    // The master password appears nowhere in the proxy's log.
    assert!(!proxy.log_text().contains(master_password));
}

/// A master user behind a map that does not check passwords would let any password in.
#[test]
fn check_refuses_a_master_user_behind_a_map_that_does_not_check_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("popmap");
    std::fs::write(&map, "alice:127.0.0.1\n").unwrap();
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{}\"]\n\
             [listener.backend]\nhost = \"\"\n\
             [listener.map]\nkind = \"popmap\"\npath = \"{}\"\n\
             master_user = \"m\"\nmaster_password = \"x\"\n",
            free_port(),
            map.display()
        ),
    )
    .unwrap();
    let out = run_portcullis(&["check", "--config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("master_user needs a map that checks"),
        "{stderr}"
    );
}

/// A service that is down must not be skipped: the listener's own server is not used, or its
/// checks (bans, disabled accounts) would be bypassed by making it fail.
#[test]
fn a_failing_service_is_not_bypassed_through_the_listeners_own_server() {
    let dc = Dovecot::start();
    // Reserved for this process and never bound: nothing listens there.
    let dead_port = free_port();
    let port = free_port();
    let toml = format!(
        "[log]\ndestination = \"-\"\n\n[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{port}\"]\n\
         [listener.backend]\nhost = \"127.0.0.1:{}\"\n\
         [listener.map]\nkind = \"http\"\nurl = \"http://127.0.0.1:{dead_port}/auth\"\n",
        dc.imap
    );
    let _proxy = Proxy::start_toml(&toml, &[port]);
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    c.send_line("a LOGIN alice alicepw");
    let no = c.read_until_tagged("a").pop().unwrap();
    assert!(no.starts_with("a NO [UNAVAILABLE]"), "{no}");
    assert!(!logged_in_at(&dc, "alice"));
}

/// With a cache and a lookup key shared by many users (the domain), one user's answer is
/// never given to another user with the same password.
#[test]
fn the_cache_never_gives_one_users_answer_to_another() {
    let dc = Dovecot::start();
    let p = dc.imap;
    let service = AuthService::start(move |h, _| match h["auth-user"].as_str() {
        "bob@x.test" => {
            let mut reply = ok(p);
            reply.push(("Auth-User".into(), "bob".into()));
            reply.push(("Auth-Pass".into(), "bobpw".into()));
            reply
        }
        _ => vec![("Auth-Status".into(), "Invalid login or password".into())],
    });
    let port = free_port();
    let toml = format!(
        "[log]\ndestination = \"-\"\n\n[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{port}\"]\n\
         [listener.backend]\nhost = \"\"\n\
         [listener.users]\nquery_key = ['\\d']\n\
         [listener.map]\nkind = \"http\"\nurl = \"http://127.0.0.1:{}/auth\"\ncache_seconds = 60\n",
        service.port
    );
    let _proxy = Proxy::start_toml(&toml, &[port]);
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    imap_login(&mut c, "a", "bob@x.test", "same-password");
    let mut m = Client::plain(port);
    m.expect_line("* OK");
    m.send_line("a LOGIN mallory@x.test same-password");
    let no = m.read_until_tagged("a").pop().unwrap();
    assert_eq!(no, "a NO [AUTHENTICATIONFAILED] Invalid login or password");
    assert_eq!(
        service.requests().len(),
        2,
        "mallory's login was asked, not cached"
    );
    // bob again, same password: from the cache.
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    imap_login(&mut c, "a", "bob@x.test", "same-password");
    assert_eq!(service.requests().len(), 2);
}

/// `check` shows the effective configuration without the secrets in it.
#[test]
fn check_does_not_show_map_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{}\"]\n\
             [listener.backend]\nhost = \"\"\n\
             [listener.map]\nkind = \"http\"\nurl = \"http://u:url-secret@127.0.0.1:9/auth\"\n\
             headers = {{ \"X-Auth-Key\" = \"header-secret\" }}\n",
            free_port()
        ),
    )
    .unwrap();
    let out = run_portcullis(&["check", "--config", config.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("[listener.map]"), "{stdout}");
    assert!(
        !stdout.contains("url-secret") && !stdout.contains("header-secret"),
        "{stdout}"
    );
}

// ---------------------------------------------------------------------------------------------
// Side by side with nginx's mail proxy, against the same service
// ---------------------------------------------------------------------------------------------

/// nginx's mail proxy on IMAP, POP3, IMAPS, IMAPS with TLS 1.2 alone and SMTP (AUTH PLAIN and
/// LOGIN, no TLS), asking `service`. Its sockets are bound here (port 0, read back) and handed to
/// it as nginx hands them to its next binary (`NGINX`).
struct Nginx {
    imap: u16,
    pop3: u16,
    imaps: u16,
    imaps12: u16,
    smtp: u16,
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Nginx {
    fn start(service: &AuthService) -> Nginx {
        assert!(
            std::path::Path::new(NGINX).exists() && std::path::Path::new(NGINX_MAIL).exists(),
            "nginx's mail proxy is not installed ({NGINX}, {NGINX_MAIL}): \
             apt-get install nginx libnginx-mod-mail; these tests compare Portcullis with it"
        );
        let sockets: Vec<TcpListener> = (0..5)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let port = |i: usize| sockets[i].local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(
            &conf,
            nginx_conf(dir.path(), service, [0, 1, 2, 3, 4].map(port)),
        )
        .unwrap();
        let child = spawn_nginx_with_sockets(&conf, dir.path(), sockets.iter());
        let nginx = Nginx {
            imap: port(0),
            pop3: port(1),
            imaps: port(2),
            imaps12: port(3),
            smtp: port(4),
            child,
            dir,
        };
        // The sockets listen already: a greeting proves nginx took them.
        let mut c = Client::plain(nginx.imap);
        let greeting = c.try_read_line(READ_TIMEOUT).unwrap_or_default();
        assert!(
            greeting.starts_with("* OK"),
            "{greeting:?}: {}",
            nginx.log()
        );
        nginx
    }

    fn log(&self) -> String {
        let read = |name| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let (log, stderr) = (read("error.log"), read("stderr.log"));
        format!("nginx's error log:\n{log}{stderr}")
    }
}

impl Drop for Nginx {
    /// nginx's fast shutdown (TERM) ends its worker too; a KILL would leave the worker behind.
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let _ = self.child.wait();
    }
}

fn nginx_conf(dir: &std::path::Path, service: &AuthService, ports: [u16; 5]) -> String {
    let auth = match &service.socket {
        Some(path) => format!("unix:{}:/auth", path.display()),
        None => format!("127.0.0.1:{}/auth", service.port),
    };
    let (dir, c) = (dir.display(), certs());
    let (cert, key) = (c.cert.display(), c.key.display());
    // The worker reaches the test's private unix socket as the test's own user.
    let user = if nix::unistd::getuid().is_root() {
        "user root;\n"
    } else {
        ""
    };
    // A master and one worker: nginx alone (master_process off) leaves inherited sockets
    // unwatched.
    format!(
        "load_module {NGINX_MAIL};\n{user}daemon off;\nworker_processes 1;\npid {dir}/nginx.pid;\n\
         error_log {dir}/error.log info;\nevents {{ worker_connections 64; }}\n\
         mail {{\n  server_name localhost;\n  auth_http {auth};\n\
           auth_http_header X-Auth-Key s3cret-key;\n  proxy_pass_error_message on;\n\
           ssl_certificate {cert};\n  ssl_certificate_key {key};\n\
           server {{ listen 127.0.0.1:{}; protocol imap; }}\n\
           server {{ listen 127.0.0.1:{}; protocol pop3; }}\n\
           server {{ listen 127.0.0.1:{} ssl; protocol imap; ssl_protocols TLSv1.2 TLSv1.3; }}\n\
           server {{ listen 127.0.0.1:{} ssl; protocol imap; ssl_protocols TLSv1.2; }}\n\
           server {{ listen 127.0.0.1:{}; protocol smtp; smtp_auth plain login; }}\n}}\n",
        ports[0], ports[1], ports[2], ports[3], ports[4]
    )
}

/// Portcullis on `protocol` asking `service`, with nginx's settings; with `tls`, implicit TLS
/// of those versions.
fn portcullis(protocol: &str, service: &AuthService, tls: Option<&str>) -> (Proxy, u16) {
    let port = free_port();
    let url = match &service.socket {
        Some(path) => format!("unix:{}:/auth", path.display()),
        None => format!("http://127.0.0.1:{}/auth", service.port),
    };
    let c = certs();
    let tls = match tls {
        Some(versions) => format!(
            "tls = \"implicit\"\ntls_versions = {versions}\ncert = \"{}\"\nkey = \"{}\"\n",
            c.cert.display(),
            c.key.display()
        ),
        None => String::new(),
    };
    let toml = format!(
        "[log]\ndestination = \"-\"\n\n[[listener]]\nprotocol = \"{protocol}\"\n\
         bind = [\"127.0.0.1:{port}\"]\n{tls}[listener.backend]\nhost = \"\"\n\
         [listener.map]\nkind = \"http\"\nurl = \"{url}\"\ntimeout = 3\n\
         headers = {{ \"X-Auth-Key\" = \"s3cret-key\" }}\n"
    );
    (Proxy::start_toml(&toml, &[port]), port)
}

fn refusal(text: &str, wait: Option<&str>) -> Vec<(String, String)> {
    let mut reply = vec![("Auth-Status".to_string(), text.to_string())];
    if let Some(wait) = wait {
        reply.push(("Auth-Wait".into(), wait.into()));
    }
    reply
}

/// A login's answer and whether the connection is still open after it (a NOOP is answered),
/// over IMAP.
fn imap_refused(port: u16, user: &str) -> (String, bool) {
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    c.send_line(&format!("a LOGIN {user} secret"));
    let answer = c.read_until_tagged("a").pop().unwrap();
    (answer, still_open(&mut c, "b NOOP", "b OK"))
}

/// The same over POP3.
fn pop3_refused(port: u16, user: &str) -> (String, bool) {
    let mut c = Client::plain(port);
    c.expect_line("+OK");
    c.send_line(&format!("USER {user}"));
    c.expect_line("+OK");
    c.send_line("PASS secret");
    let answer = c.read_line();
    (answer, still_open(&mut c, "NOOP", "+OK"))
}

fn still_open(c: &mut Client, command: &str, answer: &str) -> bool {
    if c.try_send(format!("{command}\r\n").as_bytes()).is_err() {
        return false;
    }
    c.try_read_line(Duration::from_secs(3))
        .is_some_and(|line| line.starts_with(answer))
}

/// nginx closes the connection after a refusal without `Auth-Wait` (the client must come
/// back), and keeps it after one with it (the client may try again at once); so does
/// Portcullis, over IMAP and POP3.
#[test]
fn a_refusal_closes_the_connection_unless_the_service_said_auth_wait_as_in_nginx() {
    let service = AuthService::start(|h, _| match h["auth-user"].as_str() {
        "waiter" => refusal("Invalid login or password", Some("1")),
        _ => refusal("Invalid login or password", None),
    });
    let nginx = Nginx::start(&service);
    let (imap, imap_port) = portcullis("imap", &service, None);
    let (pop3, pop3_port) = portcullis("pop3", &service, None);
    let logs = || {
        format!(
            "{}\nPortcullis:\n{}{}",
            nginx.log(),
            imap.log_text(),
            pop3.log_text()
        )
    };
    for (user, kept) in [("closer", false), ("waiter", true)] {
        let ours = imap_refused(imap_port, user);
        let theirs = imap_refused(nginx.imap, user);
        assert_eq!(
            (ours.1, theirs.1),
            (kept, kept),
            "IMAP {user}: {ours:?} {theirs:?}\n{}",
            logs()
        );
        assert_eq!(
            ours.0,
            "a NO [AUTHENTICATIONFAILED] Invalid login or password"
        );
        let ours = pop3_refused(pop3_port, user);
        let theirs = pop3_refused(nginx.pop3, user);
        assert_eq!(
            (ours.1, theirs.1),
            (kept, kept),
            "POP3 {user}: {ours:?} {theirs:?}\n{}",
            logs()
        );
        assert_eq!(ours.0, "-ERR [AUTH] Invalid login or password");
    }
}

/// A service that words its refusal with a response code (try later) has it shown once, in
/// front, as nginx shows it: the client retries instead of asking for a new password.
#[test]
fn a_services_own_response_code_is_shown_once_as_nginx_shows_it() {
    let service = AuthService::start(|h, _| match h["auth-protocol"].as_str() {
        "imap" => refusal("[UNAVAILABLE] Temporary server problem", Some("1")),
        "pop3" => refusal("[SYS/TEMP] Temporary server problem", Some("1")),
        _ => refusal("(TRYLATER) Temporary server problem", Some("1")),
    });
    let nginx = Nginx::start(&service);
    let (imap, imap_port) = portcullis("imap", &service, None);
    let (pop3, pop3_port) = portcullis("pop3", &service, None);
    let (sieve, sieve_port) = portcullis("managesieve", &service, None);
    let logs = || {
        format!(
            "{}\nPortcullis:\n{}{}",
            nginx.log(),
            imap.log_text(),
            pop3.log_text()
        )
    };
    let theirs = imap_refused(nginx.imap, "alice");
    let ours = imap_refused(imap_port, "alice");
    assert_eq!(ours, theirs, "{}", logs());
    assert_eq!(ours.0, "a NO [UNAVAILABLE] Temporary server problem");
    let theirs = pop3_refused(nginx.pop3, "alice");
    let ours = pop3_refused(pop3_port, "alice");
    assert_eq!(ours, theirs, "{}", logs());
    assert_eq!(ours.0, "-ERR [SYS/TEMP] Temporary server problem");
    // nginx has no ManageSieve; RFC 5804 puts the code outside the quoted text.
    let mut c = Client::plain(sieve_port);
    sieve_read_response(&mut c);
    c.send_line("AUTHENTICATE \"PLAIN\" \"AHNpZXZlAHNlY3JldA==\"");
    let answer = c.read_line();
    let log = sieve.log_text();
    assert_eq!(
        answer, "NO (TRYLATER) \"Temporary server problem\"",
        "{log}"
    );
}

/// nginx (since 1.21.2) tells the service the client's TLS version and cipher suite, named
/// as OpenSSL names them; Portcullis tells the same for the same client, TLS 1.3 and 1.2.
#[test]
fn the_service_learns_the_clients_tls_version_and_cipher_as_nginx_tells_it() {
    let dc = Dovecot::start();
    let p = dc.imap;
    let service = AuthService::start(move |_, _| {
        let mut reply = ok(p);
        reply[1].1 = "127.0.0.1".into(); // nginx takes an address only
        reply
    });
    let nginx = Nginx::start(&service);
    let (proxy13, port13) = portcullis("imap", &service, Some(r#"["1.2", "1.3"]"#));
    let (proxy12, port12) = portcullis("imap", &service, Some(r#"["1.2"]"#));
    let logs = || {
        let ours = proxy13.log_text() + &proxy12.log_text();
        format!("{}\nPortcullis:\n{ours}", nginx.log())
    };
    let told = |port: u16| {
        let mut c = Client::tls(port);
        c.expect_line("* OK");
        imap_login(&mut c, "a", "alice", "alicepw");
        let h = service.requests().pop().unwrap();
        let get = |name: &str| h.get(name).cloned().unwrap_or_default();
        (
            get("auth-ssl"),
            get("auth-ssl-protocol"),
            get("auth-ssl-cipher"),
        )
    };
    let (theirs, ours) = (told(nginx.imaps), told(port13));
    assert_eq!(ours, theirs, "{}", logs());
    assert_eq!((ours.0.as_str(), ours.1.as_str()), ("on", "TLSv1.3"));
    assert!(ours.2.starts_with("TLS_AES_"), "{ours:?}");
    let (theirs, ours) = (told(nginx.imaps12), told(port12));
    assert_eq!(ours, theirs, "{}", logs());
    assert_eq!(ours.1, "TLSv1.2");
    assert!(ours.2.starts_with("ECDHE-ECDSA-"), "{ours:?}");
}

/// nginx's `auth_http unix:/path:/uri`: the same service on a unix socket, asked the same
/// way (`Host: localhost`), its connection kept for the next login.
#[test]
fn a_service_on_a_unix_socket_is_asked_as_nginx_asks_it() {
    let dc = Dovecot::start();
    let p = dc.imap;
    let service = AuthService::start_unix(move |_, _| {
        let mut reply = ok(p);
        reply[1].1 = "127.0.0.1".into();
        reply
    });
    let (proxy, port) = portcullis("imap", &service, None);
    for _ in 0..2 {
        let mut c = Client::plain(port);
        c.expect_line("* OK");
        imap_login(&mut c, "a", "alice", "alicepw");
    }
    assert_eq!(service.connections(), 1, "kept alive: {}", proxy.log_text());
    let nginx = Nginx::start(&service);
    let mut c = Client::plain(nginx.imap);
    c.expect_line("* OK");
    imap_login(&mut c, "a", "alice", "alicepw");
    let requests = service.requests();
    assert_eq!(requests.len(), 3, "{}", nginx.log());
    assert_eq!(requests[0]["host"], requests[2]["host"]);
    assert_eq!(requests[0]["auth-user"], requests[2]["auth-user"]);
}

/// A reply that names where to go twice, or that is no HTTP at all, makes the login
/// unavailable, and the log says what was malformed.
#[test]
fn a_malformed_reply_is_unavailable_and_logged_as_malformed() {
    let service = AuthService::start(|h, _| {
        let mut reply = ok(143);
        match h["auth-user"].as_str() {
            "twice" => reply.push(("Auth-Server".into(), "10.9.9.9".into())),
            _ => reply.push(("Not a header".into(), "x".into())),
        }
        reply
    });
    let (proxy, port) = portcullis("imap", &service, None);
    for (user, said) in [
        (
            "twice",
            "auth_http reply malformed: two Auth-Server headers",
        ),
        (
            "broken",
            "auth_http reply malformed: invalid HTTP header parsed",
        ),
    ] {
        let mut c = Client::plain(port);
        c.expect_line("* OK");
        c.send_line(&format!("a LOGIN {user} pw"));
        let no = c.read_until_tagged("a").pop().unwrap();
        assert!(no.starts_with("a NO [UNAVAILABLE]"), "{no}");
        assert!(
            proxy.wait_log(said, READ_TIMEOUT),
            "{said}: {}",
            proxy.log_text()
        );
    }
}

/// nginx passes a login name that is not UTF-8 to its service (escaped as it escapes every
/// name, other bytes as they are); so does Portcullis behind an http map, and the service
/// decides: with its Auth-User the user logs in as that, without one the name (nobody's) is
/// refused. The log shows the name escaped, never its raw bytes.
#[test]
fn a_name_that_is_not_utf8_goes_to_the_service_as_nginx_sends_it() {
    let dc = Dovecot::start();
    let p = dc.pop3;
    let service = AuthService::start(move |h, _| {
        let mut reply = ok(p);
        reply[1].1 = "127.0.0.1".into();
        if h["auth-user"] == "caf\\xE9" {
            reply.push(("Auth-User".into(), "alice".into()));
        }
        reply
    });
    let nginx = Nginx::start(&service);
    let (proxy, port) = portcullis("pop3", &service, None);
    let login = |port: u16, name: &[u8]| {
        let mut c = Client::plain(port);
        c.expect_line("+OK");
        c.send(&[&b"USER "[..], name, b"\r\n"].concat());
        c.expect_line("+OK");
        c.send_line("PASS alicepw");
        c.read_line()
    };
    let logs = || format!("{}\nPortcullis:\n{}", nginx.log(), proxy.log_text());
    let theirs = login(nginx.pop3, b"caf\xe9");
    let ours = login(port, b"caf\xe9");
    assert!(
        theirs.starts_with("+OK") && ours.starts_with("+OK"),
        "{theirs} {ours}: {}",
        logs()
    );
    let requests = service.requests();
    assert_eq!(
        requests[0]["auth-user"],
        requests[1]["auth-user"],
        "{}",
        logs()
    );
    let ours = login(port, b"\xff\xfe");
    assert_eq!(ours, "-ERR [AUTH] Invalid user name", "{}", logs());
    assert_eq!(service.requests().len(), 3, "the service was asked");
    // The Auth line quotes the name, its backslashes doubled.
    let shown = r#"authentication_id="\\xFF\\xFE""#;
    assert!(proxy.wait_log(shown, READ_TIMEOUT), "{}", logs());
    let raw = std::fs::read(&proxy.log).unwrap();
    assert!(!raw.contains(&0xff) && !raw.contains(&0xe9), "{}", logs());
}

/// A service that says "try later" in its own words ([UNAVAILABLE]) is down, not refusing:
/// as a back end that is down, it counts for neither the address nor the user, so the
/// client is neither slowed nor banned for retrying.
#[test]
fn a_service_saying_try_later_is_nobodys_failure_for_the_guard() {
    let service =
        AuthService::start(|_, _| refusal("[UNAVAILABLE] Temporary server problem", None));
    let port = free_port();
    let toml = format!(
        "[log]\ndestination = \"-\"\n\n[guard]\npenalty_initial_ms = 2000\nban_after = 2\n\n\
         [[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{port}\"]\n\
         [listener.backend]\nhost = \"\"\n\
         [listener.map]\nkind = \"http\"\nurl = \"http://127.0.0.1:{}/auth\"\n",
        service.port
    );
    let proxy = Proxy::start_toml(&toml, &[port]);
    for attempt in 0..4 {
        let mut c = Client::from_stream(connect_from("127.0.0.61", port).unwrap());
        let greeting = c.read_line();
        assert!(
            greeting.starts_with("* OK"),
            "attempt {attempt}: {greeting}\n{}",
            proxy.log_text()
        );
        c.send_line("a LOGIN alice alicepw");
        let answer = c.read_until_tagged("a").pop().unwrap();
        assert_eq!(answer, "a NO [UNAVAILABLE] Temporary server problem");
    }
    let log = proxy.log_text();
    assert!(!log.contains("Guard:"), "the guard counted it:\n{log}");
}

/// Logins the service refused with a long `Auth-Wait` sit out their wait without holding a
/// place among the requests in flight (32): a crowd of them cannot keep another user's login
/// from being asked.
#[test]
fn logins_waiting_out_an_auth_wait_do_not_hold_up_other_users() {
    let dc = Dovecot::start();
    let backend = dc.imap;
    let service = AuthService::start(move |h, _| match h["auth-user"].as_str() {
        "alice" => ok(backend),
        _ => refusal("Invalid login or password", Some("30")),
    });
    let port = free_port();
    let toml = format!(
        "[log]\ndestination = \"-\"\n\n[limits]\nbackend_login_timeout = 10\n\n\
         [[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{port}\"]\n[listener.backend]\nhost = \"\"\n\
         [listener.map]\nkind = \"http\"\nurl = \"http://127.0.0.1:{}/auth\"\n",
        service.port
    );
    let proxy = Proxy::start_toml(&toml, &[port]);
    let crowd: Vec<Client> = (0..40)
        .map(|n| {
            let mut c = Client::plain(port);
            c.expect_line("* OK");
            c.send_line(&format!("a LOGIN guesser{n} wrong"));
            c
        })
        .collect();
    let deadline = Instant::now() + READ_TIMEOUT;
    while service.requests().len() < 40 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(service.requests().len(), 40, "{}", proxy.log_text());
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    c.send_line("b LOGIN alice alicepw");
    let answer = c.read_until_tagged("b").pop().unwrap();
    assert!(
        answer.starts_with("b OK"),
        "{answer}; log:\n{}",
        proxy.log_text()
    );
    drop(crowd);
}

// ---------------------------------------------------------------------------------------------
// SMTP submission beside nginx's SMTP proxy, against the same service
// ---------------------------------------------------------------------------------------------

/// An AUTH PLAIN in plaintext after EHLO: the answer, and whether the connection is still open
/// after it (a NOOP is answered).
fn smtp_auth_plain(port: u16, user: &str, password: &str) -> (String, bool) {
    let (mut c, _) = smtp_open(port);
    let answer = smtp_command(&mut c, &auth_plain_line(user, password)).text();
    (answer, still_open(&mut c, "NOOP", "250"))
}

/// RCPT's answer after AUTH PLAIN as alice and MAIL.
fn recipient_after_auth(port: u16) -> SmtpReply {
    let (mut c, _) = smtp_open(port);
    smtp_expect(&mut c, &auth_plain_line("alice", "alicepw"), 235);
    smtp_expect(&mut c, "MAIL FROM:<alice@example.org>", 250);
    smtp_command(&mut c, "RCPT TO:<bob@example.org>")
}

/// A request's headers but `Host` (nginx names the service without its port, hyper with it).
fn without_host(mut headers: Headers) -> Headers {
    headers.remove("host");
    headers
}

/// nginx's SMTP proxy (`smtp_auth plain login`) and Portcullis's submission listener, asked the
/// same AUTH PLAIN by the same client, ask the same service with the same headers: no
/// `Auth-SMTP-Helo/From/To` (nginx sends them only with `smtp_auth none`), `Client-Host:
/// [UNAVAILABLE]` (nginx without a resolver). Both answer the service's refusal with `535 5.7.0
/// <its words>` and close. Both answer its OK with 235 and are then logged in at the test
/// Postfix (a recipient is taken): Portcullis's 235 is Postfix's own, which checked the
/// password by AUTH; nginx answers its own `235 2.0.0 OK` and names the user to Postfix by
/// XCLIENT LOGIN, checking nothing further.
#[test]
fn smtp_auth_asks_the_service_as_nginxs_smtp_proxy_asks_it() {
    let mail = MailServers::start();
    let submission = mail.postfix.submission;
    let service = AuthService::start(move |h, _| match h["auth-user"].as_str() {
        "alice" => {
            let mut reply = ok(submission);
            reply[1].1 = "127.0.0.1".into(); // nginx takes an address only
            reply
        }
        _ => refusal("Invalid login or password", None),
    });
    let nginx = Nginx::start(&service);
    let (proxy, port) = portcullis("submission", &service, None);
    let logs = || {
        format!(
            "{}\nPortcullis:\n{}\n{}",
            nginx.log(),
            proxy.log_text(),
            mail.logs()
        )
    };
    let _logs_on_panic = LogsOnPanic(&logs);

    let theirs = smtp_auth_plain(nginx.smtp, "alice", "alicepw");
    let ours = smtp_auth_plain(port, "alice", "alicepw");
    assert_eq!(theirs, ("235 2.0.0 OK\n".into(), true), "{}", logs());
    assert_eq!(
        ours,
        ("235 2.7.0 Authentication successful\n".into(), true),
        "{}",
        logs()
    );
    let requests = service.requests();
    assert_eq!(requests.len(), 2, "{requests:?}\n{}", logs());
    let (theirs, ours) = (
        without_host(requests[0].clone()),
        without_host(requests[1].clone()),
    );
    assert_eq!(ours, theirs, "{}", logs());
    for (name, value) in [
        ("auth-method", "plain"),
        ("auth-user", "alice"),
        ("auth-pass", "alicepw"),
        ("auth-protocol", "smtp"),
        ("auth-login-attempt", "1"),
        ("client-ip", "127.0.0.1"),
        ("client-host", "[UNAVAILABLE]"),
        ("x-auth-key", "s3cret-key"),
    ] {
        assert_eq!(ours.get(name).map(String::as_str), Some(value), "{ours:?}");
    }
    assert_eq!(ours.len(), 8, "{ours:?}");

    // Both sessions are logged in at Postfix: it takes a recipient.
    let theirs = recipient_after_auth(nginx.smtp);
    let ours = recipient_after_auth(port);
    assert_eq!(
        (ours.code, theirs.code),
        (250, 250),
        "{ours:?} {theirs:?}\n{}",
        logs()
    );

    let theirs = smtp_auth_plain(nginx.smtp, "mallory", "guess");
    let ours = smtp_auth_plain(port, "mallory", "guess");
    assert_eq!(ours, theirs, "{}", logs());
    assert_eq!(
        ours,
        ("535 5.7.0 Invalid login or password\n".into(), false),
        "{}",
        logs()
    );
}
