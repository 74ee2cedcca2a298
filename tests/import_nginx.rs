//! `portcullis import nginx`: real nginx mail configurations (the one bench/compare.sh runs, a
//! Mailu-shaped and a mailcow-shaped front, in tests/fixtures/nginx/) imported; the output is
//! accepted by `portcullis check`; then nginx's own mail proxy (from the fixture) and
//! Portcullis (from what was imported) run side by side in front of one auth_http service, and
//! the same logins land on the same Dovecot, with the same client address where a PROXY
//! header carries it. What cannot be carried is refused, named with its file and line.

mod support;

use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::auth_service::*;
use support::nginx::*;
use support::*;

fn require_nginx() {
    assert!(
        Path::new(NGINX).exists() && Path::new(NGINX_MAIL).exists(),
        "nginx's mail proxy is not installed ({NGINX}, {NGINX_MAIL}): \
         apt-get install nginx libnginx-mod-mail (scripts/test.sh installs them)"
    );
}

fn fixtures(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/nginx")
        .join(name)
}

/// Every file of a fixture, by its path inside it.
fn fixture_files(name: &str) -> Vec<(PathBuf, String)> {
    let root = fixtures(name);
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let text = std::fs::read_to_string(&path).unwrap();
                files.push((path.strip_prefix(&root).unwrap().to_path_buf(), text));
            }
        }
    }
    files
}

/// The ports a fixture listens on (`@PUBLIC@:PORT`, `@LOOPBACK@:PORT`).
fn listen_ports(files: &[(PathBuf, String)]) -> Vec<u16> {
    let mut ports = Vec::new();
    for (_, text) in files {
        for marker in ["@PUBLIC@:", "@LOOPBACK@:"] {
            for (i, _) in text.match_indices(marker) {
                let digits: String = text[i + marker.len()..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                ports.push(digits.parse().unwrap());
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// `text` with its placeholders filled, each listen port `ports[port]` on 127.0.0.1, and the
/// IPv6 listens left out (the test runs on loopback IPv4).
fn filled(text: &str, vars: &[(&str, String)], ports: &HashMap<u16, u16>) -> String {
    let mut out = String::new();
    for line in text.lines().filter(|l| !l.contains("listen [::]")) {
        let mut line = line.to_string();
        for (name, value) in vars {
            line = line.replace(&format!("@{name}@"), value);
        }
        for (from, to) in ports {
            for marker in ["@PUBLIC@", "@LOOPBACK@"] {
                for end in [" ", ";"] {
                    line = line.replace(
                        &format!("{marker}:{from}{end}"),
                        &format!("127.0.0.1:{to}{end}"),
                    );
                }
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The fixture's files written into `dir`, filled in.
fn write_fixture(
    dir: &Path,
    files: &[(PathBuf, String)],
    vars: &[(&str, String)],
    ports: &HashMap<u16, u16>,
    edit: &dyn Fn(&Path, String) -> String,
) {
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, edit(name, filled(text, vars, ports))).unwrap();
    }
}

/// The `server { ... }` block holding `listen` at `port` taken out (as an admin does with one
/// that the import refuses).
fn without_server(text: &str, port: u16) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let listen = lines
        .iter()
        .position(|l| l.contains(&format!(":{port} ")) || l.contains(&format!(":{port};")))
        .unwrap_or_else(|| panic!("no listen on {port}"));
    let start = (0..=listen)
        .rev()
        .find(|&i| lines[i].trim() == "server {")
        .unwrap();
    let end = (listen..lines.len())
        .find(|&i| lines[i] == "    }")
        .unwrap();
    let kept: Vec<&str> = lines[..start]
        .iter()
        .chain(&lines[end + 1..])
        .copied()
        .collect();
    kept.join("\n") + "\n"
}

/// `portcullis import nginx FILE`: (exit success, stdout, stderr).
fn import(file: &Path) -> (bool, String, String) {
    let out = run_portcullis(&["import", "nginx", &file.display().to_string()]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// nginx, from the fixture
// ---------------------------------------------------------------------------------------------

/// nginx's mail proxy from a fixture's files, its listening sockets bound here (port 0, read
/// back) and handed to it as nginx hands them to its next binary (`NGINX`).
struct Nginx {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Nginx {
    fn log(&self) -> String {
        let read = |name| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "nginx's error log:\n{}{}",
            read("error.log"),
            read("stderr.log")
        )
    }
}

impl Drop for Nginx {
    /// nginx's fast shutdown (TERM) ends its worker too.
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// The lines that run nginx here instead of the fixture's own (user, pid, logs, modules).
fn run_here(dir: &Path, main: String) -> String {
    let dropped = [
        "user ",
        "pid ",
        "error_log ",
        "load_module ",
        "daemon ",
        "worker_processes ",
    ];
    let kept: Vec<&str> = main
        .lines()
        .filter(|l| !dropped.iter().any(|d| l.starts_with(d)))
        .filter(|l| !l.starts_with("include /etc/nginx/modules-enabled"))
        // nginx would ask a resolver that is not there for every client's name.
        .filter(|l| !l.trim_start().starts_with("resolver"))
        .collect();
    let user = if nix::unistd::getuid().is_root() {
        "user root;\n"
    } else {
        ""
    };
    format!(
        "load_module {NGINX_MAIL};\n{user}daemon off;\nworker_processes 1;\npid {0}/nginx.pid;\n\
         error_log {0}/error.log info;\n{1}\n",
        dir.display(),
        kept.join("\n")
    )
}

/// nginx on the fixture's files (as `edit` leaves them) with `sockets` open in it.
fn start_nginx(
    files: &[(PathBuf, String)],
    vars: &[(&str, String)],
    sockets: &HashMap<u16, TcpListener>,
    edit: &dyn Fn(&Path, String) -> String,
) -> Nginx {
    require_nginx();
    let dir = tempfile::tempdir().unwrap();
    let ports: HashMap<u16, u16> = sockets
        .iter()
        .map(|(p, s)| (*p, s.local_addr().unwrap().port()))
        .collect();
    let here = dir.path().to_path_buf();
    write_fixture(dir.path(), files, vars, &ports, &|name, text| {
        let text = edit(name, text);
        match name == Path::new("nginx.conf") {
            true => run_here(&here, text),
            false => text,
        }
    });
    std::fs::write(dir.path().join("mime.types"), "types { }\n").unwrap();
    let child =
        spawn_nginx_with_sockets(&dir.path().join("nginx.conf"), dir.path(), sockets.values());
    let nginx = Nginx { child, dir };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !nginx.log().contains("start worker process") {
        assert!(
            Instant::now() < deadline,
            "nginx did not start: {}",
            nginx.log()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    nginx
}

// ---------------------------------------------------------------------------------------------
// Logging in, and where it landed
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Tls {
    Plain,
    Starttls,
    Implicit,
}

/// A connection to `port`, a PROXY header from `client` first when given, TLS when asked.
fn connect(port: u16, tls: Tls, client: Option<&str>) -> Client {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    if let Some(ip) = client {
        use std::io::Write;
        // One write: nginx takes the header from its first read, and `write!` on a bare
        // socket sends each piece on its own.
        let header = format!("PROXY TCP4 {ip} 127.0.0.1 40000 {port}\r\n");
        sock.write_all(header.as_bytes()).unwrap();
    }
    let mut c = Client::from_stream(sock);
    if tls == Tls::Implicit {
        c.starttls();
    }
    c
}

fn imap_login_at(port: u16, tls: Tls, client: Option<&str>, user: &str) {
    let mut c = connect(port, tls, client);
    c.expect_line("* OK");
    if tls == Tls::Starttls {
        c.send_line("s STARTTLS");
        let answer = c.read_until_tagged("s");
        assert!(answer.last().unwrap().starts_with("s OK"), "{answer:?}");
        c.starttls();
    }
    imap_login(&mut c, "a", user, &format!("{user}pw"));
    c.send_line("z LOGOUT");
    c.read_until_tagged("z");
}

fn pop3_login_at(port: u16, tls: Tls, user: &str) {
    let mut c = connect(port, tls, None);
    c.expect_line("+OK");
    if tls == Tls::Starttls {
        c.send_line("STLS");
        c.expect_line("+OK");
        c.starttls();
    }
    c.send_line(&format!("USER {user}"));
    c.expect_line("+OK");
    c.send_line(&format!("PASS {user}pw"));
    c.expect_line("+OK");
    c.send_line("QUIT");
}

/// Dovecot's login lines for `user`.
fn logins<'a>(log: &'a str, user: &str) -> Vec<&'a str> {
    let needle = format!("Login: user=<{user}>");
    log.lines().filter(|l| l.contains(&needle)).collect()
}

/// Waits for `user`'s `n`-th login at `dc` and returns that line; no other Dovecot of `all`
/// saw more than `others` logins of `user`.
fn landed(dc: &Dovecot, user: &str, n: usize, logs: &dyn Fn() -> String) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = dc.log_text();
        if let Some(line) = logins(&log, user).get(n - 1) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "{user}'s login {n} never reached its Dovecot:\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn ok_at(port: u16) -> Vec<(String, String)> {
    vec![
        ("Auth-Status".into(), "OK".into()),
        // nginx takes an address, not a name.
        ("Auth-Server".into(), "127.0.0.1".into()),
        ("Auth-Port".into(), port.to_string()),
    ]
}

/// Ports for Portcullis's listeners, one per fixture port.
fn portcullis_ports(ports: &[u16]) -> HashMap<u16, u16> {
    ports.iter().map(|p| (*p, free_port())).collect()
}

fn nginx_sockets(ports: &[u16]) -> HashMap<u16, TcpListener> {
    ports
        .iter()
        .map(|p| (*p, TcpListener::bind("127.0.0.1:0").unwrap()))
        .collect()
}

/// The imported configuration of a fixture filled in for Portcullis's ports, checked, and
/// Portcullis started on it (its log on standard output).
fn import_and_start(
    name: &str,
    files: &[(PathBuf, String)],
    vars: &[(&str, String)],
    ours: &HashMap<u16, u16>,
    edit: &dyn Fn(&Path, String) -> String,
) -> (Proxy, String) {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path(), files, vars, ours, edit);
    let (ok, toml, stderr) = import(&dir.path().join("nginx.conf"));
    assert!(ok, "import of {name} refused:\n{stderr}");
    assert_config_checked(dir.path(), &toml);
    let run = format!("{toml}\n[log]\ndestination = \"-\"\n");
    let wait: Vec<u16> = ours.values().copied().collect();
    (Proxy::start_toml(&run, &wait), toml)
}

fn keep(_: &Path, text: String) -> String {
    text
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

/// bench/compare.sh's nginx: auth_http answered by nginx's own http server (which Portcullis
/// then asks too), every login to the one Dovecot, IMAP plain and IMAPS.
#[test]
fn the_benchmarks_nginx_configuration_is_imported_and_serves_alike() {
    require_dovecot();
    let dc = Dovecot::start();
    let files = fixture_files("bench");
    let ports: Vec<u16> = listen_ports(&files);
    let auth = TcpListener::bind("127.0.0.1:0").unwrap();
    let auth_at = format!("127.0.0.1:{}", auth.local_addr().unwrap().port());
    let c = certs();
    let temp_paths = tempfile::tempdir().unwrap();
    let vars = vec![
        ("AUTH", auth_at),
        ("DC_IMAP", dc.imap.to_string()),
        ("PF_SUB", "1".to_string()),
        ("CERT", c.cert.display().to_string()),
        ("KEY", c.key.display().to_string()),
        ("NGINX_MAIL", NGINX_MAIL.to_string()),
        ("DIR", temp_paths.path().display().to_string()),
    ];
    let mut sockets = nginx_sockets(&ports);
    sockets.insert(0, auth);
    let nginx = start_nginx(&files, &vars, &sockets, &keep);
    let ours = portcullis_ports(&ports);
    let (proxy, toml) = import_and_start("bench", &files, &vars, &ours, &keep);
    let logs = || {
        format!(
            "{}\nPortcullis:\n{}\nDovecot:\n{}",
            nginx.log(),
            proxy.log_text(),
            dc.log_text()
        )
    };
    let _on_panic = LogsOnPanic(logs);
    assert!(toml.contains("protocol = \"submission\""), "{toml}");
    assert!(!toml.contains("forward_client"), "xclient off: {toml}");
    let theirs = |p: u16| sockets[&p].local_addr().unwrap().port();
    let mut n = 0;
    for (port, tls) in [(143, Tls::Plain), (993, Tls::Implicit)] {
        for user in ["alice", "bob"] {
            n += usize::from(user == "alice");
            imap_login_at(theirs(port), tls, None, user);
            imap_login_at(ours[&port], tls, None, user);
        }
        landed(&dc, "alice", 2 * n, &logs);
        landed(&dc, "bob", 2 * n, &logs);
    }
}

/// A Mailu-shaped front: its port-25 server is refused (unauthenticated relaying), the rest
/// imported; IMAP goes to each user's Dovecot with a PROXY header carrying the client's
/// address, which a balancer gave in its own PROXY header.
#[test]
fn a_mailu_front_is_imported_and_sends_the_same_users_to_the_same_dovecots() {
    require_dovecot();
    let (dc1, dc2) = (Dovecot::start(), Dovecot::start());
    let (p1, p2) = (dc1.imap_haproxy, dc2.imap_haproxy);
    let service = AuthService::start(move |h, _| match h["auth-user"].as_str() {
        "alice" => ok_at(p1),
        "bob" => ok_at(p2),
        _ => vec![("Auth-Status".into(), "Invalid login or password".into())],
    });
    let files = fixture_files("mailu");
    let (ecdsa_cert, ecdsa_key) = issued_by_the_test_ca(&tempdir_kept(), "mailu-ecdsa");
    let c = certs();
    let vars = vec![
        ("AUTH", format!("127.0.0.1:{}", service.port)),
        ("CERT", c.cert.display().to_string()),
        ("KEY", c.key.display().to_string()),
        ("ECDSA_CERT", ecdsa_cert.display().to_string()),
        ("ECDSA_KEY", ecdsa_key.display().to_string()),
        ("DHPARAM", "/usr/share/dovecot/dh.pem".to_string()),
    ];
    // As the import asks: the port-25 server is left to nginx or Postfix, not imported.
    let edit = |name: &Path, text: String| match name == Path::new("nginx.conf") {
        true => without_server(&text, 25),
        false => text,
    };
    let ports: Vec<u16> = listen_ports(&files)
        .into_iter()
        .filter(|p| *p != 25)
        .collect();
    let sockets = nginx_sockets(&ports);
    let nginx = start_nginx(&files, &vars, &sockets, &edit);
    // Port 80 is nginx's http server, which is not imported.
    let mail_ports: Vec<u16> = ports.iter().copied().filter(|p| *p != 80).collect();
    let ours = portcullis_ports(&mail_ports);
    let (proxy, toml) = import_and_start("mailu", &files, &vars, &ours, &edit);
    let logs = || {
        format!(
            "{}\nPortcullis:\n{}\nDovecot 1:\n{}\nDovecot 2:\n{}",
            nginx.log(),
            proxy.log_text(),
            dc1.log_text(),
            dc2.log_text()
        )
    };
    let _on_panic = LogsOnPanic(logs);
    assert!(toml.contains("forward_client = \"proxy-v1\""), "{toml}");
    assert!(toml.contains("certificates = [{"), "the ECDSA pair: {toml}");
    let theirs = |p: u16| sockets[&p].local_addr().unwrap().port();
    // The webmail's IMAP (no TLS, no PROXY header in) and IMAPS behind the balancer.
    let mut n = 0;
    for (port, tls, client) in [
        (10143, Tls::Plain, None),
        (993, Tls::Implicit, Some("203.0.113.7")),
        (143, Tls::Starttls, Some("203.0.113.8")),
    ] {
        n += 2;
        let rip = format!("rip={}", client.unwrap_or("127.0.0.1"));
        for (user, dc) in [("alice", &dc1), ("bob", &dc2)] {
            imap_login_at(theirs(port), tls, client, user);
            let line = landed(dc, user, n - 1, &logs);
            assert!(line.contains(&rip), "nginx: {line}");
            imap_login_at(ours[&port], tls, client, user);
            let line = landed(dc, user, n, &logs);
            assert!(line.contains(&rip), "Portcullis: {line}");
        }
    }
    assert!(
        logins(&dc1.log_text(), "bob").is_empty() && logins(&dc2.log_text(), "alice").is_empty()
    );
    // The service heard the same Auth-Port from both, server by server.
    let asked: Vec<String> = service
        .requests()
        .iter()
        .map(|h| h["auth-port"].clone())
        .collect();
    let pairs: Vec<_> = asked
        .chunks(2)
        .map(|two| (two[0].clone(), two[1].clone()))
        .collect();
    assert!(pairs.iter().all(|(a, b)| a == b), "{asked:?}");
}

/// A mailcow-shaped DMZ proxy: includes by wildcard, a shared key to the auth script, IMAP
/// and POP3 with STARTTLS and implicit TLS, to each user's Dovecot.
#[test]
fn a_mailcow_proxy_is_imported_and_sends_the_same_users_to_the_same_dovecots() {
    require_dovecot();
    let (dc1, dc2) = (Dovecot::start(), Dovecot::start());
    let ports_of = |dc: &Dovecot| (dc.imap, dc.pop3);
    let (at1, at2) = (ports_of(&dc1), ports_of(&dc2));
    let service = AuthService::start(move |h, _| {
        if h.get("x-auth-key").map(String::as_str) != Some("mailcow-proxy-key") {
            return vec![("Auth-Status".into(), "no key".into())];
        }
        let (imap, pop3) = match h["auth-user"].as_str() {
            "alice" => at1,
            "bob" => at2,
            _ => return vec![("Auth-Status".into(), "Invalid login or password".into())],
        };
        ok_at(if h["auth-protocol"] == "pop3" {
            pop3
        } else {
            imap
        })
    });
    let files = fixture_files("mailcow");
    let c = certs();
    let vars = vec![
        ("AUTH", format!("127.0.0.1:{}", service.port)),
        ("CERT", c.cert.display().to_string()),
        ("KEY", c.key.display().to_string()),
    ];
    let ports = listen_ports(&files);
    let sockets = nginx_sockets(&ports);
    let nginx = start_nginx(&files, &vars, &sockets, &keep);
    let ours = portcullis_ports(&ports);
    let (proxy, toml) = import_and_start("mailcow", &files, &vars, &ours, &keep);
    let logs = || {
        format!(
            "{}\nPortcullis:\n{}\nDovecot 1:\n{}\nDovecot 2:\n{}",
            nginx.log(),
            proxy.log_text(),
            dc1.log_text(),
            dc2.log_text()
        )
    };
    let _on_panic = LogsOnPanic(logs);
    for expected in [
        "idle_timeout = 3600",
        "login_timeout = 120",
        "max_line_length = 65536",
        "tls_versions = [\"1.2\", \"1.3\"]",
        "tcp_keepalive = true",
        "forward_client = \"id\"",
        "headers = { X-Auth-Key = \"mailcow-proxy-key\" }",
        "timeout = 15",
    ] {
        assert!(toml.contains(expected), "{expected}: {toml}");
    }
    let theirs = |p: u16| sockets[&p].local_addr().unwrap().port();
    let mut n = 0;
    for (port, tls, imap) in [
        (143, Tls::Starttls, true),
        (993, Tls::Implicit, true),
        (110, Tls::Starttls, false),
        (995, Tls::Implicit, false),
    ] {
        n += 2;
        for (user, dc) in [("alice", &dc1), ("bob", &dc2)] {
            for at in [theirs(port), ours[&port]] {
                match imap {
                    true => imap_login_at(at, tls, None, user),
                    false => pop3_login_at(at, tls, user),
                }
            }
            landed(dc, user, n, &logs);
        }
    }
    assert!(
        logins(&dc1.log_text(), "bob").is_empty() && logins(&dc2.log_text(), "alice").is_empty()
    );
}

/// What cannot be carried is refused: non-zero exit, nothing on standard output, and each
/// directive named on standard error with its file and line.
#[test]
fn what_cannot_be_carried_is_refused_by_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let files = fixture_files("mailu");
    let ports: HashMap<u16, u16> = listen_ports(&files).into_iter().map(|p| (p, p)).collect();
    let vars = [
        ("AUTH", "127.0.0.1:1".into()),
        ("DHPARAM", "/dh.pem".into()),
    ];
    write_fixture(dir.path(), &files, &vars, &ports, &keep);
    let main = dir.path().join("nginx.conf");
    let line = std::fs::read_to_string(&main)
        .unwrap()
        .lines()
        .position(|l| l.contains("smtp_auth none;"))
        .unwrap()
        + 1;
    let (ok, stdout, stderr) = import(&main);
    assert!(!ok && stdout.is_empty(), "{stdout}");
    let expected = format!(
        "{}:{line}: smtp_auth none: unauthenticated relaying",
        main.display()
    );
    assert!(stderr.contains(&expected), "{expected}\n{stderr}");

    let bad = dir.path().join("bad.conf");
    std::fs::write(
        &bad,
        "mail {\n  auth_http 127.0.0.1:9/auth;\n  server {\n    listen 127.0.0.1:1993 ssl;\n    \
         protocol imap;\n    ssl_certificate /c.pem;\n    ssl_certificate_key /k.pem;\n    \
         ssl_verify_client on;\n    imap_auth cram-md5;\n  }\n  mail_frobnicate on;\n}\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = import(&bad);
    assert!(!ok && stdout.is_empty(), "{stdout}");
    let shown = bad.display();
    for expected in [
        format!("{shown}:8: ssl_verify_client on: "),
        format!("{shown}:11: mail_frobnicate on: "),
    ] {
        assert!(stderr.contains(&expected), "{expected}\n{stderr}");
    }
    // A syntax mistake is named the same way.
    std::fs::write(&bad, "mail {\n  server {\n    listen 1143\n  }\n}\n").unwrap();
    let (ok, _, stderr) = import(&bad);
    assert!(
        !ok && stderr.contains(&format!("{shown}:4: unexpected \"}}\"")),
        "{stderr}"
    );
    // No mail block at all.
    std::fs::write(&bad, "events { }\n").unwrap();
    let (ok, _, stderr) = import(&bad);
    assert!(!ok && stderr.contains("no mail {} block"), "{stderr}");
}

/// A fixture as it is, IPv6 listens and all, reads into listeners on both families.
#[test]
fn ipv6_listens_become_binds_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<(PathBuf, String)> = fixture_files("mailu")
        .into_iter()
        .map(|(p, t)| {
            (
                p,
                t.replace("@PUBLIC@", "0.0.0.0")
                    .replace("@LOOPBACK@", "127.0.0.1"),
            )
        })
        .collect();
    for (name, text) in &files {
        let text = if name == Path::new("nginx.conf") {
            without_server(text, 25)
        } else {
            text.clone()
        };
        let text = text
            .replace("@AUTH@", "admin:8080")
            .replace("@CERT@", "/certs/cert.pem");
        let text = text
            .replace("@KEY@", "/certs/key.pem")
            .replace("@ECDSA_CERT@", "/certs/ec.pem");
        let text = text
            .replace("@ECDSA_KEY@", "/certs/ec.key")
            .replace("@DHPARAM@", "/dh.pem");
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let (ok, toml, stderr) = import(&dir.path().join("nginx.conf"));
    assert!(ok, "{stderr}");
    assert!(
        toml.contains("bind = [\"0.0.0.0:993\", \"[::]:993\"]"),
        "{toml}"
    );
    assert!(toml.contains("url = \"http://admin:8080/auth\""), "{toml}");
    assert!(
        toml.contains("proxy_trusted = [\"192.168.203.0/24\", \"127.0.0.1\"]"),
        "{toml}"
    );
}

/// A directory that outlives the test's own (the certificate files an import names).
fn tempdir_kept() -> PathBuf {
    let dir = tempfile::tempdir().unwrap();
    dir.keep()
}
