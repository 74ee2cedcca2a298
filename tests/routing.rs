//! Per-user routing, seen from where a user ends up: two Dovecot back ends, and each test
//! checks which one logged `Login: user=<...>` (and that the other did not). Native TOML maps
//! (`popmap-re`, flat `popmap`), the user-name rules, failover, Perdition mode with its map
//! library, and Debian's own perdition given the same flags and the same popmap.re.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use support::*;

/// Perdition 2.2 as Debian ships it, and its popmap.re map library.
const PERDITION: &str = "/usr/sbin/perdition";
const POSIX_REGEX: &str = "/usr/lib/x86_64-linux-gnu/libperditiondb_posix_regex.so.0";

// ---------------------------------------------------------------------------------------------
// Where did the user land?
// ---------------------------------------------------------------------------------------------

/// The user names Dovecot logged in, in order (`Login: user=<NAME>, ...` lines).
fn logged_in_users(dc: &Dovecot) -> Vec<String> {
    dc.log_text()
        .lines()
        .filter_map(|l| l.split_once("Login: user=<"))
        .filter_map(|(_, rest)| rest.split_once(">,").map(|(user, _)| user.to_string()))
        .collect()
}

/// The two back ends of a test, by name for messages.
struct Backends {
    dc1: Dovecot,
    dc2: Dovecot,
}

impl Backends {
    fn start() -> Backends {
        Backends {
            dc1: Dovecot::start(),
            dc2: Dovecot::start(),
        }
    }

    /// How many logins each back end has logged so far.
    fn counts(&self) -> (usize, usize) {
        (
            logged_in_users(&self.dc1).len(),
            logged_in_users(&self.dc2).len(),
        )
    }

    /// Waits for the one login after `before` (from [`Backends::counts`]) and says where it
    /// landed: `(1 or 2, the user name Dovecot saw)`. Panics if none or both got one.
    fn landed_since(&self, before: (usize, usize)) -> (u8, String) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (one, two) = (logged_in_users(&self.dc1), logged_in_users(&self.dc2));
            let new1 = &one[before.0.min(one.len())..];
            let new2 = &two[before.1.min(two.len())..];
            match (new1, new2) {
                ([user], []) => return (1, user.clone()),
                ([], [user]) => return (2, user.clone()),
                ([], []) if Instant::now() < deadline => sleep(Duration::from_millis(25)),
                _ => panic!(
                    "expected one new login on one back end; dc1 got {new1:?}, dc2 got {new2:?}\n\
                     dc1 log:\n{}\ndc2 log:\n{}",
                    self.dc1.log_text(),
                    self.dc2.log_text()
                ),
            }
        }
    }

    /// LOGIN on `port` must succeed and land on back end `on` (1 or 2) as `seen_as`.
    fn assert_lands(&self, port: u16, user: &str, pass: &str, on: u8, seen_as: &str) -> Client {
        let before = self.counts();
        let mut c = Client::plain(port);
        c.expect_line("* OK");
        imap_login(&mut c, "a", user, pass);
        let landed = self.landed_since(before);
        assert_eq!(
            landed,
            (on, seen_as.to_string()),
            "{user:?} should have landed on dc{on} as {seen_as:?}"
        );
        c
    }

    /// Where a LOGIN on `port` ends up: the tagged answer, and the back end (1 or 2) and user
    /// name Dovecot logged when the answer was OK.
    fn try_login(&self, port: u16, user: &str, pass: &str) -> (String, Option<(u8, String)>) {
        let before = self.counts();
        let mut c = Client::plain(port);
        c.expect_line("* OK");
        let answer = login_answer(&mut c, "a", user, pass);
        let landed = answer
            .starts_with("a OK")
            .then(|| self.landed_since(before));
        c.send_line("z LOGOUT");
        let _ = c.is_closed();
        (answer, landed)
    }
}

/// LOGIN and return the tagged answer, whatever it is.
fn login_answer(c: &mut Client, tag: &str, user: &str, pass: &str) -> String {
    c.send_line(&format!("{tag} LOGIN \"{user}\" \"{pass}\""));
    c.read_until_tagged(tag).pop().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Configuration helpers
// ---------------------------------------------------------------------------------------------

fn server(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// A directory for map files, readable by everyone (Debian's perdition reads as `nobody`).
fn map_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("portcullis-routing-")
        .tempdir()
        .unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn write_map(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    path
}

/// One IMAP listener on `port`; `backend` is the body of `[listener.backend]`, `rest` any
/// further tables (`[listener.map]`, `[listener.users]`).
fn config(port: u16, backend: &str, rest: &str) -> String {
    format!(
        "[log]\ndestination = \"-\"\n\n[[listener]]\nprotocol = \"imap\"\n\
         bind = [\"127.0.0.1:{port}\"]\n\n[listener.backend]\n{backend}\n\n{rest}\n"
    )
}

fn backend_at(port: u16) -> String {
    format!("host = \"127.0.0.1\"\nport = {port}")
}

fn map_table(kind: &str, path: &Path) -> String {
    format!(
        "[listener.map]\nkind = \"{kind}\"\npath = \"{}\"\n",
        path.display()
    )
}

/// The `Auth:` lines of `log` for `user`.
fn auth_lines(log: &str, user: &str) -> Vec<String> {
    let id = format!("authentication_id=\"{user}\"");
    log.lines()
        .filter(|l| l.contains("Auth: ") && l.contains(&id))
        .map(str::to_string)
        .collect()
}

/// Polls `log` until it has `n` Auth lines for `user`; returns them.
fn wait_auth_lines(log: impl Fn() -> String, user: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = auth_lines(&log(), user);
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        sleep(Duration::from_millis(50));
    }
}

/// The `NAME="..."` value of an Auth line.
fn field(auth: &str, name: &str) -> String {
    auth.split_once(&format!(" {name}=\""))
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(value, _)| value.to_string())
        .unwrap_or_else(|| panic!("no {name}= in {auth:?}"))
}

fn server_of(auth: &str) -> String {
    field(auth, "server")
}

fn status_of(auth: &str) -> String {
    field(auth, "status")
}

// ---------------------------------------------------------------------------------------------
// 1. Native TOML, popmap.re
// ---------------------------------------------------------------------------------------------

#[test]
fn popmap_re_sends_each_user_to_the_server_the_map_names_and_others_to_the_backend() {
    let b = Backends::start();
    let dir = map_dir();
    let map = write_map(
        dir.path(),
        "popmap.re",
        &format!(
            "# per-user lines\n^alice$: {}\n^bob$: {}\n",
            server(b.dc1.imap),
            server(b.dc2.imap)
        ),
    );
    let port = free_port();
    // The listener's own back end is dc2: alice landing on dc1 is the map's doing.
    let toml = config(port, &backend_at(b.dc2.imap), &map_table("popmap-re", &map));
    let proxy = Proxy::start_toml(&toml, &[port]);

    b.assert_lands(port, "alice", "alicepw", 1, "alice");
    b.assert_lands(port, "bob", "bobpw", 2, "bob");
    // Not in the map: the listener's back end.
    b.assert_lands(port, "carol@example.org", "carolpw", 2, "carol@example.org");

    let log = || proxy.log_text();
    let alice = wait_auth_lines(log, "alice", 1);
    assert_eq!(server_of(&alice[0]), server(b.dc1.imap), "{alice:?}");
    let bob = wait_auth_lines(log, "bob", 1);
    assert_eq!(server_of(&bob[0]), server(b.dc2.imap), "{bob:?}");
}

#[test]
fn popmap_re_without_a_backend_host_refuses_an_unknown_user_who_may_retry() {
    let b = Backends::start();
    let dir = map_dir();
    let map = write_map(
        dir.path(),
        "popmap.re",
        &format!(
            "^alice$: {}\n^bob$: {}\n",
            server(b.dc1.imap),
            server(b.dc2.imap)
        ),
    );
    let port = free_port();
    let toml = config(port, "host = \"\"", &map_table("popmap-re", &map));
    let proxy = Proxy::start_toml(&toml, &[port]);

    let before = b.counts();
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    let answer = login_answer(&mut c, "a", "carol@example.org", "carolpw");
    assert!(answer.starts_with("a NO"), "{answer}");
    // Same connection, a user the map knows.
    imap_login(&mut c, "b", "alice", "alicepw");
    assert_eq!(b.landed_since(before), (1, "alice".to_string()));
    // carol never reached a back end, not even to be refused there.
    for dc in [&b.dc1, &b.dc2] {
        assert!(
            !dc.log_text().contains("carol"),
            "carol reached a back end:\n{}",
            dc.log_text()
        );
    }
    let carol = wait_auth_lines(|| proxy.log_text(), "carol@example.org", 1);
    assert_eq!(carol.len(), 1, "{}", proxy.log_text());
    assert!(status_of(&carol[0]).starts_with("failed"), "{carol:?}");
}

#[test]
fn a_map_answer_that_names_no_usable_server_is_unavailable_not_a_wrong_password() {
    let b = Backends::start();
    let dir = map_dir();
    let map = write_map(
        dir.path(),
        "popmap.re",
        &format!("^alice$: 127.0.0.1:99999\n^bob$: {}\n", server(b.dc2.imap)),
    );
    let port = free_port();
    let toml = config(port, "host = \"\"", &map_table("popmap-re", &map));
    let proxy = Proxy::start_toml(&toml, &[port]);

    let mut c = Client::plain(port);
    c.expect_line("* OK");
    let answer = login_answer(&mut c, "a", "alice", "alicepw");
    assert!(answer.starts_with("a NO [UNAVAILABLE]"), "{answer}");
    let auth = wait_auth_lines(|| proxy.log_text(), "alice", 1);
    assert_eq!(auth.len(), 1, "{}", proxy.log_text());
    assert!(
        !status_of(&auth[0]).contains("Re-Authentication"),
        "logged as a wrong password: {auth:?}"
    );
    // The session goes on.
    let before = b.counts();
    imap_login(&mut c, "b", "bob", "bobpw");
    assert_eq!(b.landed_since(before), (2, "bob".to_string()));
    assert!(!logged_in_users(&b.dc1).contains(&"alice".to_string()));
}

#[test]
fn a_map_answer_that_names_no_usable_server_falls_back_to_the_backend() {
    let b = Backends::start();
    let dir = map_dir();
    let map = write_map(dir.path(), "popmap.re", "^alice$: 127.0.0.1:99999\n");
    let port = free_port();
    let toml = config(port, &backend_at(b.dc1.imap), &map_table("popmap-re", &map));
    let _proxy = Proxy::start_toml(&toml, &[port]);
    // Perdition: any map error falls back to the outgoing server.
    b.assert_lands(port, "alice", "alicepw", 1, "alice");
}

// ---------------------------------------------------------------------------------------------
// 2. Flat popmap
// ---------------------------------------------------------------------------------------------

#[test]
fn flat_popmap_sends_each_user_to_their_server_and_the_listener_port_completes_it() {
    let b = Backends::start();
    let dir = map_dir();
    // carol's line names no port: the listener's back-end port completes it.
    let map = write_map(
        dir.path(),
        "popmap",
        &format!(
            "# user:server\nalice:{}\nbob:{}\ncarol@example.org:127.0.0.1\n",
            server(b.dc1.imap),
            server(b.dc2.imap)
        ),
    );
    let port = free_port();
    let backend = format!("host = \"\"\nport = {}", b.dc2.imap);
    let toml = config(port, &backend, &map_table("popmap", &map));
    let _proxy = Proxy::start_toml(&toml, &[port]);

    b.assert_lands(port, "alice", "alicepw", 1, "alice");
    b.assert_lands(port, "bob", "bobpw", 2, "bob");
    b.assert_lands(port, "carol@example.org", "carolpw", 2, "carol@example.org");
    // Keys are exact and case-sensitive: "Alice" is not in the map and there is no fallback.
    let (answer, landed) = b.try_login(port, "Alice", "alicepw");
    assert!(answer.starts_with("a NO"), "{answer}");
    assert_eq!(landed, None);
}

// ---------------------------------------------------------------------------------------------
// 3. Per-domain routing
// ---------------------------------------------------------------------------------------------

#[test]
fn popmap_re_per_domain_line_routes_a_whole_domain() {
    let b = Backends::start();
    let dir = map_dir();
    let map = write_map(
        dir.path(),
        "popmap.re",
        &format!(
            "^alice$: {}\n@example\\.org$: {}\n",
            server(b.dc1.imap),
            server(b.dc2.imap)
        ),
    );
    let port = free_port();
    // The fallback would be dc1: carol landing on dc2 is the domain line's doing.
    let toml = config(port, &backend_at(b.dc1.imap), &map_table("popmap-re", &map));
    let proxy = Proxy::start_toml(&toml, &[port]);

    b.assert_lands(port, "carol@example.org", "carolpw", 2, "carol@example.org");
    b.assert_lands(port, "alice", "alicepw", 1, "alice");
    b.assert_lands(port, "bob", "bobpw", 1, "bob");
    // The line is unanchored: where Perdition would differ, the admin is told at start-up.
    let log = proxy.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("line 2") && l.contains("not anchored")),
        "no warning for the unanchored line; log:\n{log}"
    );
}

#[test]
fn popmap_re_anchored_domain_line_with_perditions_quoting() {
    let b = Backends::start();
    let dir = map_dir();
    // Single quotes keep the backslash, so `\.` is a literal dot.
    let map = write_map(
        dir.path(),
        "popmap.re",
        &format!("'^[^@]+@example\\.org$': {}\n", server(b.dc2.imap)),
    );
    let port = free_port();
    let toml = config(port, &backend_at(b.dc1.imap), &map_table("popmap-re", &map));
    let proxy = Proxy::start_toml(&toml, &[port]);

    b.assert_lands(port, "carol@example.org", "carolpw", 2, "carol@example.org");
    b.assert_lands(port, "alice", "alicepw", 1, "alice");
    let log = proxy.log_text();
    assert!(
        !log.contains("not anchored"),
        "anchored line warned about; log:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Failover
// ---------------------------------------------------------------------------------------------

#[test]
fn failover_logs_in_on_the_next_server_within_one_login() {
    let b = Backends::start();
    let dead = free_port(); // nothing listens there
    let port = free_port();
    let backend = format!(
        "{}\nfailover = [\"{}\", \"{}\"]",
        backend_at(dead),
        server(b.dc1.imap),
        server(b.dc2.imap)
    );
    let toml = config(port, &backend, "");
    let proxy = Proxy::start_toml(&toml, &[port]);

    let before = b.counts();
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    c.send_line("a LOGIN alice alicepw");
    let answer = c.read_until_tagged("a");
    assert_eq!(answer.len(), 1, "one tagged answer only: {answer:?}");
    assert!(answer[0].starts_with("a OK"), "{answer:?}");
    // The first server that answers, in order: dc1, not dc2.
    assert_eq!(b.landed_since(before), (1, "alice".to_string()));

    let auth = wait_auth_lines(|| proxy.log_text(), "alice", 1);
    assert_eq!(auth.len(), 1, "one Auth line per login: {auth:?}");
    assert_eq!(server_of(&auth[0]), server(b.dc1.imap), "{auth:?}");
    assert_eq!(status_of(&auth[0]), "ok", "{auth:?}");

    // The next login as well (the dead server is tried last for a while).
    drop(c);
    b.assert_lands(port, "bob", "bobpw", 1, "bob");
}

// ---------------------------------------------------------------------------------------------
// 5. User-name rules
// ---------------------------------------------------------------------------------------------

#[test]
fn add_domain_at_login_sends_the_domain_to_the_back_end_but_looks_up_the_bare_name() {
    let b = Backends::start();
    let dir = map_dir();
    let map = write_map(
        dir.path(),
        "popmap.re",
        &format!("^carol$: {}\n", server(b.dc2.imap)),
    );
    let port = free_port();
    let rest = map_table("popmap-re", &map)
        + "\n[listener.users]\nadd_domain = \"login\"\nexplicit_domain = \"example.org\"\n";
    let toml = config(port, &backend_at(b.dc1.imap), &rest);
    let proxy = Proxy::start_toml(&toml, &[port]);

    b.assert_lands(port, "carol", "carolpw", 2, "carol@example.org");
    // A name that has a domain keeps it (Perdition adds one only where there is none).
    b.assert_lands(port, "carol@example.org", "carolpw", 1, "carol@example.org");
    // The log names the user as typed.
    let auth = wait_auth_lines(|| proxy.log_text(), "carol", 1);
    assert_eq!(server_of(&auth[0]), server(b.dc2.imap), "{auth:?}");
}

#[test]
fn strip_domain_at_login_sends_the_bare_user_but_looks_up_the_full_name() {
    let b = Backends::start();
    let dir = map_dir();
    let map = write_map(
        dir.path(),
        "popmap.re",
        &format!("^alice@example\\.net$: {}\n", server(b.dc2.imap)),
    );
    let port = free_port();
    let rest = map_table("popmap-re", &map) + "\n[listener.users]\nstrip_domain = \"login\"\n";
    let toml = config(port, &backend_at(b.dc1.imap), &rest);
    let _proxy = Proxy::start_toml(&toml, &[port]);

    b.assert_lands(port, "alice@example.net", "alicepw", 2, "alice");
    b.assert_lands(port, "bob@elsewhere", "bobpw", 1, "bob");
}

#[test]
fn domain_delimiter_changes_where_the_domain_starts() {
    let b = Backends::start();
    let port = free_port();
    let rest = "[listener.users]\ndomain_delimiter = \"%\"\nstrip_domain = \"all\"\n";
    let toml = config(port, &backend_at(b.dc1.imap), rest);
    let _proxy = Proxy::start_toml(&toml, &[port]);

    b.assert_lands(port, "alice%example.net", "alicepw", 1, "alice");
    // `@` is no delimiter now: carol's name goes through whole.
    b.assert_lands(port, "carol@example.org", "carolpw", 1, "carol@example.org");
}

#[test]
fn query_key_by_domain_routes_a_domain_and_falls_back_for_the_rest() {
    let b = Backends::start();
    let dir = map_dir();
    let map = write_map(
        dir.path(),
        "popmap",
        &format!("example.org:{}\n", server(b.dc2.imap)),
    );
    let port = free_port();
    let rest = map_table("popmap", &map) + "\n[listener.users]\nquery_key = [\"\\\\d\"]\n";
    let toml = config(port, &backend_at(b.dc1.imap), &rest);
    let _proxy = Proxy::start_toml(&toml, &[port]);

    b.assert_lands(port, "carol@example.org", "carolpw", 2, "carol@example.org");
    // alice has no domain, so her key is empty and unknown: the listener's back end.
    b.assert_lands(port, "alice", "alicepw", 1, "alice");
}

#[test]
fn query_keys_are_tried_in_order_until_the_map_knows_one() {
    let b = Backends::start();
    let dir = map_dir();
    let map = write_map(
        dir.path(),
        "popmap",
        &format!(
            "bob:{}\nexample.org:{}\n",
            server(b.dc1.imap),
            server(b.dc2.imap)
        ),
    );
    let port = free_port();
    let rest =
        map_table("popmap", &map) + "\n[listener.users]\nquery_key = [\"\\\\u\", \"\\\\d\"]\n";
    let toml = config(port, "host = \"\"", &rest);
    let _proxy = Proxy::start_toml(&toml, &[port]);

    // User part first: bob is known by name.
    b.assert_lands(port, "bob", "bobpw", 1, "bob");
    // carol is not, her domain is.
    b.assert_lands(port, "carol@example.org", "carolpw", 2, "carol@example.org");
    // Neither key known, no fallback.
    let (answer, landed) = b.try_login(port, "alice", "alicepw");
    assert!(answer.starts_with("a NO"), "{answer}");
    assert_eq!(landed, None);
}

// ---------------------------------------------------------------------------------------------
// 6. The user name from the map
// ---------------------------------------------------------------------------------------------

#[test]
fn username_from_map_logs_in_with_the_maps_name() {
    let b = Backends::start();
    let dir = map_dir();
    let map = write_map(
        dir.path(),
        "popmap.re",
        &format!("^c$: carol@example.org@{}\n", server(b.dc2.imap)),
    );
    let port = free_port();
    let rest = map_table("popmap-re", &map) + "username_from_map = true\n";
    let toml = config(port, &backend_at(b.dc1.imap), &rest);
    let proxy = Proxy::start_toml(&toml, &[port]);

    b.assert_lands(port, "c", "carolpw", 2, "carol@example.org");
    // The log names the user by the map's name, as Perdition's does with -U.
    let auth = wait_auth_lines(|| proxy.log_text(), "carol@example.org", 1);
    assert_eq!(auth.len(), 1, "{}", proxy.log_text());
    assert_eq!(server_of(&auth[0]), server(b.dc2.imap), "{auth:?}");
}

#[test]
fn without_username_from_map_only_the_server_of_the_answer_is_used() {
    let b = Backends::start();
    let dir = map_dir();
    let map = write_map(
        dir.path(),
        "popmap.re",
        &format!("^alice$: someoneelse@{}\n", server(b.dc2.imap)),
    );
    let port = free_port();
    let toml = config(port, &backend_at(b.dc1.imap), &map_table("popmap-re", &map));
    let _proxy = Proxy::start_toml(&toml, &[port]);

    b.assert_lands(port, "alice", "alicepw", 2, "alice");
}

// ---------------------------------------------------------------------------------------------
// 7. Perdition mode
// ---------------------------------------------------------------------------------------------

/// Perdition's command line for an IMAP4 listener on `port` logging to `log`, with `extra`.
fn perdition_flags(port: u16, log: &Path, extra: &[String]) -> Vec<String> {
    let mut flags: Vec<String> = [
        "-f",
        "/dev/null",
        "--no_daemon",
        "-n",
        "--pid_file",
        "",
        "-P",
        "IMAP4",
        "--bind_address",
        "127.0.0.1",
        "--listen_port",
        &port.to_string(),
        "-F",
        &log.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    flags.extend(extra.iter().cloned());
    flags
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// `portcullis perdition FLAGS`, logging to `dir/portcullis.log`; returns it, its port and log.
fn start_ours(dir: &Path, extra: &[String]) -> (Proxy, u16, PathBuf) {
    let log = dir.join("portcullis.log");
    let port = free_port();
    let mut args = vec!["perdition".to_string()];
    args.extend(perdition_flags(port, &log, extra));
    let proxy = Proxy::start_args(&args, &[port]);
    assert!(wait_for_port(port, Duration::from_secs(10)), "port {port}");
    (proxy, port, log)
}

#[test]
fn perdition_mode_routes_with_the_posix_regex_map_and_falls_back_to_the_outgoing_server() {
    let b = Backends::start();
    let dir = map_dir();
    // bob's line has no port: Perdition's -p completes it.
    let map = write_map(
        dir.path(),
        "popmap.re",
        &format!("^alice$: {}\n^bob$: 127.0.0.1\n", server(b.dc2.imap)),
    );
    let extra = strings(&[
        "-M",
        POSIX_REGEX,
        "-m",
        &map.display().to_string(),
        "-s",
        "127.0.0.1",
        "-p",
        &b.dc1.imap.to_string(),
    ]);
    let (_proxy, port, log) = start_ours(dir.path(), &extra);

    b.assert_lands(port, "alice", "alicepw", 2, "alice");
    b.assert_lands(port, "bob", "bobpw", 1, "bob");
    // Not in the map: -s/-p.
    b.assert_lands(port, "carol@example.org", "carolpw", 1, "carol@example.org");
    let alice = wait_auth_lines(|| read(&log), "alice", 1);
    assert_eq!(server_of(&alice[0]), server(b.dc2.imap), "{alice:?}");
}

#[test]
fn perdition_mode_user_name_options_reach_the_back_end() {
    let b = Backends::start();
    let dir = map_dir();
    let map = write_map(
        dir.path(),
        "popmap.re",
        &format!("^carol$: {}\n", server(b.dc2.imap)),
    );
    // -A remote_login with -e: the domain is added for the back end only.
    let extra = strings(&[
        "-M",
        POSIX_REGEX,
        "-m",
        &map.display().to_string(),
        "-s",
        &server(b.dc1.imap),
        "-A",
        "remote_login",
        "-e",
        "example.org",
    ]);
    let (_proxy, port, _log) = start_ours(dir.path(), &extra);
    b.assert_lands(port, "carol", "carolpw", 2, "carol@example.org");

    // -S remote_login with -D %: the part after % is dropped for the back end.
    let dir2 = map_dir();
    let extra = strings(&["-s", &server(b.dc1.imap), "-S", "remote_login", "-D", "%"]);
    let (_proxy2, port2, _log2) = start_ours(dir2.path(), &extra);
    b.assert_lands(port2, "alice%example.net", "alicepw", 1, "alice");
}

#[test]
fn perdition_mode_username_from_database_and_query_key() {
    let b = Backends::start();
    let dir = map_dir();
    let map = write_map(
        dir.path(),
        "popmap.re",
        &format!(
            "^c$: carol@example.org@{}\n^example.org$: {}\n",
            server(b.dc2.imap),
            server(b.dc1.imap)
        ),
    );
    let extra = strings(&["-M", POSIX_REGEX, "-m", &map.display().to_string(), "-U"]);
    let (_proxy, port, _log) = start_ours(dir.path(), &extra);
    b.assert_lands(port, "c", "carolpw", 2, "carol@example.org");

    // --query_key '\d': the domain is the key.
    let dir2 = map_dir();
    let map2 = write_map(
        dir2.path(),
        "popmap.re",
        &format!("^example.org$: {}\n", server(b.dc2.imap)),
    );
    let extra = strings(&[
        "-M",
        POSIX_REGEX,
        "-m",
        &map2.display().to_string(),
        "--query_key",
        "\\d",
        "-s",
        &server(b.dc1.imap),
    ]);
    let (_proxy2, port2, _log2) = start_ours(dir2.path(), &extra);
    b.assert_lands(
        port2,
        "carol@example.org",
        "carolpw",
        2,
        "carol@example.org",
    );
    b.assert_lands(port2, "alice", "alicepw", 1, "alice");
}

#[test]
fn perdition_mode_several_outgoing_servers_fail_over_within_one_login() {
    let b = Backends::start();
    let dir = map_dir();
    let dead = free_port();
    // Perdition picks one at random per connection; Portcullis then tries the others.
    let extra = strings(&["-s", &format!("{},{}", server(dead), server(b.dc1.imap))]);
    let (_proxy, port, log) = start_ours(dir.path(), &extra);
    for _ in 0..6 {
        b.assert_lands(port, "alice", "alicepw", 1, "alice");
    }
    let auth = wait_auth_lines(|| read(&log), "alice", 6);
    assert_eq!(auth.len(), 6, "{auth:?}");
    for line in &auth {
        assert_eq!(server_of(line), server(b.dc1.imap), "{line}");
        assert_eq!(status_of(line), "ok", "{line}");
    }
}

#[test]
fn perdition_mode_outgoing_servers_without_a_port_use_outgoing_port() {
    let b = Backends::start();
    let dir = map_dir();
    let dead = free_port();
    // The first server names its own (dead) port; the second names none, so -p is its port,
    // as Perdition's man page has it for `outgoing_server`.
    let extra = strings(&[
        "-s",
        &format!("{},127.0.0.1", server(dead)),
        "-p",
        &b.dc1.imap.to_string(),
    ]);
    let (_proxy, port, log) = start_ours(dir.path(), &extra);
    let (answer, landed) = b.try_login(port, "alice", "alicepw");
    let auth = wait_auth_lines(|| read(&log), "alice", 1);
    assert_eq!(
        landed,
        Some((1, "alice".to_string())),
        "answer {answer:?}; {auth:?}"
    );
}

#[test]
fn client_server_specification_lets_the_client_name_its_server_only_when_asked() {
    let b = Backends::start();
    let dir = map_dir();
    let named = format!("alice@{}", server(b.dc2.imap));
    // Without -c the whole name goes to the -s server, which does not know it.
    let extra = strings(&["-s", &server(b.dc1.imap)]);
    let (_proxy, port, _log) = start_ours(dir.path(), &extra);
    let (answer, landed) = b.try_login(port, &named, "alicepw");
    assert!(answer.starts_with("a NO"), "{answer}");
    assert_eq!(landed, None);

    let dir2 = map_dir();
    let extra = strings(&["-s", &server(b.dc1.imap), "-c"]);
    let (_proxy2, port2, _log2) = start_ours(dir2.path(), &extra);
    b.assert_lands(port2, &named, "alicepw", 2, "alice");
    b.assert_lands(port2, "bob", "bobpw", 1, "bob");
}

// ---------------------------------------------------------------------------------------------
// 8. Side by side with Debian's perdition
// ---------------------------------------------------------------------------------------------

/// Kills the real perdition (and its per-session children) when the test ends.
struct Perdition(Child);

impl Drop for Perdition {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-KILL", "-P", &self.0.id().to_string()])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Debian's perdition and `portcullis perdition`, started with the same flags.
struct SideBySide {
    _real: Perdition,
    _ours: Proxy,
    real_port: u16,
    our_port: u16,
    real_log: PathBuf,
    our_log: PathBuf,
    _dir: tempfile::TempDir,
}

impl SideBySide {
    fn start(extra: &[String]) -> SideBySide {
        assert!(
            Path::new(PERDITION).exists(),
            "perdition is not installed: run scripts/test.sh"
        );
        let dir = map_dir();
        // perdition drops to user nobody, then (re)opens its log file.
        let real_log = dir.path().join("perdition.log");
        fs::write(&real_log, "").unwrap();
        fs::set_permissions(&real_log, fs::Permissions::from_mode(0o666)).unwrap();
        let real_port = free_port();
        let child = Command::new(PERDITION)
            .args(perdition_flags(real_port, &real_log, extra))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let real = Perdition(child);
        let (ours, our_port, our_log) = start_ours(dir.path(), extra);
        assert!(
            wait_for_port(real_port, Duration::from_secs(10)),
            "perdition not listening on {real_port}; log:\n{}",
            read(&real_log)
        );
        SideBySide {
            _real: real,
            _ours: ours,
            real_port,
            our_port,
            real_log,
            our_log,
            _dir: dir,
        }
    }

    /// The same LOGIN through perdition, then through Portcullis: what each did.
    fn both(&self, b: &Backends, user: &str, pass: &str) -> (Seen, Seen) {
        let real = Seen::login(b, self.real_port, &self.real_log, user, pass);
        let ours = Seen::login(b, self.our_port, &self.our_log, user, pass);
        (real, ours)
    }

    /// The same LOGIN through both must land on the same back end as the same user, get the
    /// same kind of answer, and be logged with the same server= value. Returns what each did.
    fn same_landing(&self, b: &Backends, user: &str, pass: &str) -> (Seen, Seen) {
        let (real, ours) = self.both(b, user, pass);
        let differ = format!("{user:?}:\nperdition  {real:?}\nPortcullis {ours:?}");
        assert_eq!(ours.landed, real.landed, "{differ}");
        assert_eq!(ours.ok(), real.ok(), "{differ}");
        assert_eq!(server_of(&ours.auth), server_of(&real.auth), "{differ}");
        (real, ours)
    }
}

/// What one program did with one LOGIN.
#[derive(Debug)]
struct Seen {
    /// The tagged answer.
    answer: String,
    /// Back end (1 or 2) and the user name Dovecot logged.
    landed: Option<(u8, String)>,
    /// The Auth line written for it.
    auth: String,
}

impl Seen {
    fn login(b: &Backends, port: u16, log: &Path, user: &str, pass: &str) -> Seen {
        let auth_count = || read(log).lines().filter(|l| l.contains("Auth: ")).count();
        let before = auth_count();
        let (answer, landed) = b.try_login(port, user, pass);
        let deadline = Instant::now() + Duration::from_secs(10);
        while auth_count() <= before && Instant::now() < deadline {
            sleep(Duration::from_millis(50));
        }
        let text = read(log);
        let new: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("Auth: "))
            .skip(before)
            .collect();
        assert_eq!(
            new.len(),
            1,
            "one Auth line for {user:?} expected; log:\n{text}"
        );
        Seen {
            answer,
            landed,
            auth: new[0].to_string(),
        }
    }

    fn ok(&self) -> bool {
        self.answer.starts_with("a OK")
    }
}

#[test]
fn popmap_re_routes_as_debians_perdition_does() {
    let b = Backends::start();
    let dir = map_dir();
    let map = write_map(
        dir.path(),
        "popmap.re",
        &format!(
            "# alice and bob on different servers\n^alice$: {}\n^bob$: {}\n",
            server(b.dc2.imap),
            server(b.dc1.imap)
        ),
    );
    let extra = strings(&[
        "-M",
        POSIX_REGEX,
        "-m",
        &map.display().to_string(),
        "-s",
        "127.0.0.1",
        "-p",
        &b.dc1.imap.to_string(),
    ]);
    let both = SideBySide::start(&extra);
    let (_, alice) = both.same_landing(&b, "alice", "alicepw");
    assert_eq!(alice.landed, Some((2, "alice".to_string())));
    assert_eq!(server_of(&alice.auth), server(b.dc2.imap));
    let (_, bob) = both.same_landing(&b, "bob", "bobpw");
    assert_eq!(bob.landed, Some((1, "bob".to_string())));
    assert_eq!(server_of(&bob.auth), server(b.dc1.imap));
    // Not in the map: the outgoing server, from both.
    let (_, carol) = both.same_landing(&b, "carol@example.org", "carolpw");
    assert_eq!(carol.landed, Some((1, "carol@example.org".to_string())));
}

#[test]
fn map_entries_without_a_port_use_outgoing_port_as_in_debians_perdition() {
    let b = Backends::start();
    let dir = map_dir();
    let map = write_map(dir.path(), "popmap.re", "^alice$: 127.0.0.1\n");
    // -s names its own port (dc1); -p (dc2) is the port for map entries that name none.
    let extra = strings(&[
        "-M",
        POSIX_REGEX,
        "-m",
        &map.display().to_string(),
        "-s",
        &server(b.dc1.imap),
        "-p",
        &b.dc2.imap.to_string(),
    ]);
    let both = SideBySide::start(&extra);
    // Not in the map: -s with its own port.
    let (_, carol) = both.same_landing(&b, "carol@example.org", "carolpw");
    assert_eq!(carol.landed, Some((1, "carol@example.org".to_string())));
    let (_, alice) = both.same_landing(&b, "alice", "alicepw");
    assert_eq!(alice.landed, Some((2, "alice".to_string())));
}

#[test]
fn add_domain_as_in_debians_perdition() {
    let b = Backends::start();
    let dir = map_dir();
    let map = write_map(
        dir.path(),
        "popmap.re",
        &format!("^carol$: {}\n", server(b.dc2.imap)),
    );
    // -A remote_login -e example.org: looked up as carol, logged in as carol@example.org.
    let extra = strings(&[
        "-M",
        POSIX_REGEX,
        "-m",
        &map.display().to_string(),
        "-s",
        &server(b.dc1.imap),
        "-A",
        "remote_login",
        "-e",
        "example.org",
    ]);
    let both = SideBySide::start(&extra);
    let (_, carol) = both.same_landing(&b, "carol", "carolpw");
    assert_eq!(carol.landed, Some((2, "carol@example.org".to_string())));
    let (_, full) = both.same_landing(&b, "carol@example.org", "carolpw");
    assert_eq!(full.landed, Some((1, "carol@example.org".to_string())));
}

#[test]
fn strip_domain_and_domain_delimiter_as_in_debians_perdition() {
    let b = Backends::start();
    // -S remote_login -D %: alice%example.net logs in as alice.
    let extra = strings(&["-s", &server(b.dc1.imap), "-S", "remote_login", "-D", "%"]);
    let both = SideBySide::start(&extra);
    let (_, alice) = both.same_landing(&b, "alice%example.net", "alicepw");
    assert_eq!(alice.landed, Some((1, "alice".to_string())));
}

#[test]
fn username_from_database_as_in_debians_perdition() {
    let b = Backends::start();
    let dir = map_dir();
    let map = write_map(
        dir.path(),
        "popmap.re",
        &format!("^c$: carol@example.org@{}\n", server(b.dc2.imap)),
    );
    let extra = strings(&[
        "-M",
        POSIX_REGEX,
        "-m",
        &map.display().to_string(),
        "-s",
        &server(b.dc1.imap),
        "-U",
    ]);
    let both = SideBySide::start(&extra);
    let (_, c) = both.same_landing(&b, "c", "carolpw");
    assert_eq!(c.landed, Some((2, "carol@example.org".to_string())));
    assert_eq!(status_of(&c.auth), "ok");
}

#[test]
fn username_from_database_logs_the_same_user_as_debians_perdition() {
    let b = Backends::start();
    let dir = map_dir();
    let map = write_map(
        dir.path(),
        "popmap.re",
        &format!("^c$: carol@example.org@{}\n", server(b.dc2.imap)),
    );
    let extra = strings(&["-M", POSIX_REGEX, "-m", &map.display().to_string(), "-U"]);
    let both = SideBySide::start(&extra);
    let (real, ours) = both.same_landing(&b, "c", "carolpw");
    // Perdition names the map's user in its Auth line (and Closing line).
    assert_eq!(
        field(&ours.auth, "authentication_id"),
        field(&real.auth, "authentication_id"),
        "perdition:  {}\nPortcullis: {}",
        real.auth,
        ours.auth
    );
}

#[test]
fn query_key_as_in_debians_perdition() {
    let b = Backends::start();
    let dir = map_dir();
    let map = write_map(
        dir.path(),
        "popmap.re",
        &format!("^example.org$: {}\n", server(b.dc2.imap)),
    );
    let extra = strings(&[
        "-M",
        POSIX_REGEX,
        "-m",
        &map.display().to_string(),
        "--query_key",
        "\\d",
        "-s",
        &server(b.dc1.imap),
    ]);
    let both = SideBySide::start(&extra);
    let (_, carol) = both.same_landing(&b, "carol@example.org", "carolpw");
    assert_eq!(carol.landed, Some((2, "carol@example.org".to_string())));
    let (_, alice) = both.same_landing(&b, "alice", "alicepw");
    assert_eq!(alice.landed, Some((1, "alice".to_string())));
}

/// Perdition with a map and no outgoing server, and a popmap.re that knows only alice.
fn map_without_outgoing_server(b: &Backends) -> (SideBySide, tempfile::TempDir) {
    let dir = map_dir();
    let map = write_map(
        dir.path(),
        "popmap.re",
        &format!("^alice$: {}\n", server(b.dc2.imap)),
    );
    let extra = strings(&["-M", POSIX_REGEX, "-m", &map.display().to_string()]);
    (SideBySide::start(&extra), dir)
}

#[test]
fn unknown_user_without_outgoing_server_is_refused_as_by_debians_perdition() {
    let b = Backends::start();
    let (both, _dir) = map_without_outgoing_server(&b);
    let (real, ours) = both.both(&b, "bob", "bobpw");
    assert!(real.answer.starts_with("a NO"), "{real:?}");
    assert!(ours.answer.starts_with("a NO"), "{ours:?}");
    assert_eq!((real.landed, ours.landed), (None, None));
    // Both keep the connection for another try.
    for port in [both.real_port, both.our_port] {
        let mut c = Client::plain(port);
        c.expect_line("* OK");
        let answer = login_answer(&mut c, "a", "bob", "bobpw");
        assert!(answer.starts_with("a NO"), "{answer}");
        let before = b.counts();
        imap_login(&mut c, "b", "alice", "alicepw");
        assert_eq!(b.landed_since(before), (2, "alice".to_string()));
    }
}

#[test]
fn unknown_user_without_outgoing_server_is_logged_as_by_debians_perdition() {
    let b = Backends::start();
    let (both, _dir) = map_without_outgoing_server(&b);
    let (real, ours) = both.both(&b, "bob", "bobpw");
    for name in ["server", "status"] {
        assert_eq!(
            field(&ours.auth, name),
            field(&real.auth, name),
            "{name}=\nperdition:  {}\nPortcullis: {}",
            real.auth,
            ours.auth
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 9. Map problems reported by `portcullis check`
// ---------------------------------------------------------------------------------------------

fn check(toml: &str) -> (bool, String) {
    let dir = map_dir();
    let file = dir.path().join("portcullis.toml");
    fs::write(&file, toml).unwrap();
    let out = run_portcullis(&["check", "--config", &file.display().to_string()]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_reports_an_unreadable_map_file() {
    let dir = map_dir();
    let missing = dir.path().join("no-such-popmap.re");
    let toml = config(
        free_port(),
        &backend_at(143),
        &map_table("popmap-re", &missing),
    );
    let (ok, stderr) = check(&toml);
    assert!(!ok, "check passed with a missing map file:\n{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains(&missing.display().to_string()))
        .unwrap_or_else(|| panic!("the file is not named:\n{stderr}"));
    assert!(
        line.starts_with("error:") && line.contains("cannot read"),
        "{line}"
    );

    // A directory where the file should be, with the flat kind.
    let toml = config(
        free_port(),
        &backend_at(143),
        &map_table("popmap", dir.path()),
    );
    let (ok, stderr) = check(&toml);
    assert!(!ok, "check passed with a directory as map:\n{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("error:") && l.contains(&dir.path().display().to_string())),
        "{stderr}"
    );
}

#[test]
fn check_reports_a_bad_regex_with_its_line_number() {
    let dir = map_dir();
    let map = write_map(
        dir.path(),
        "popmap.re",
        "# comment\n^alice$: 127.0.0.1\n^(unclosed: 127.0.0.2\n",
    );
    let toml = config(free_port(), &backend_at(143), &map_table("popmap-re", &map));
    let (ok, stderr) = check(&toml);
    assert!(!ok, "check passed with a bad regex:\n{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("line 3"))
        .unwrap_or_else(|| panic!("no line number:\n{stderr}"));
    assert!(
        line.starts_with("error:")
            && line.contains(&map.display().to_string())
            && line.contains("bad regular expression"),
        "{line}"
    );
}

#[test]
fn check_lists_every_listeners_map_problem_and_warns_about_lines_it_reads_differently() {
    let dir = map_dir();
    let missing = dir.path().join("missing");
    let bad = write_map(dir.path(), "bad.re", "^ok$: h\n[z-a]: h\n");
    let toml = config(
        free_port(),
        &backend_at(143),
        &map_table("popmap-re", &missing),
    ) + &format!(
        "[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{}\"]\n\n\
             [listener.backend]\nhost = \"\"\n\n{}",
        free_port(),
        map_table("popmap-re", &bad)
    );
    let (ok, stderr) = check(&toml);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains(&missing.display().to_string()),
        "missing file not named:\n{stderr}"
    );
    assert!(stderr.contains("line 2"), "bad line not named:\n{stderr}");

    // A file that loads but reads differently from Perdition: valid, with warnings.
    let warned = write_map(
        dir.path(),
        "warned.re",
        "flim: 127.0.0.1\n^a|ab$: 127.0.0.1\nlonely\n",
    );
    let toml = config(
        free_port(),
        &backend_at(143),
        &map_table("popmap-re", &warned),
    );
    let (ok, stderr) = check(&toml);
    assert!(ok, "{stderr}");
    for n in ["line 1", "line 2", "line 3"] {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("warning:") && l.contains(n)),
            "no warning for {n}:\n{stderr}"
        );
    }
}

#[test]
fn perdition_mode_with_a_missing_map_file_stops_with_a_clear_line() {
    let dir = map_dir();
    let missing = dir.path().join("popmap.re");
    let log = dir.path().join("log");
    let mut args = vec!["perdition".to_string()];
    args.extend(perdition_flags(
        free_port(),
        &log,
        &strings(&["-M", POSIX_REGEX, "-m", &missing.display().to_string()]),
    ));
    let mut child = Command::new(portcullis_bin())
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("portcullis perdition kept running with a missing map file");
        }
        sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&missing.display().to_string()) && stderr.contains("cannot read"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// Reading the map again
// ---------------------------------------------------------------------------------------------

#[test]
fn sighup_reads_the_map_again_and_a_broken_file_keeps_the_old_one() {
    let b = Backends::start();
    let dir = map_dir();
    let map = write_map(
        dir.path(),
        "popmap.re",
        &format!("^alice$: {}\n", server(b.dc1.imap)),
    );
    let port = free_port();
    let toml = config(port, "host = \"\"", &map_table("popmap-re", &map));
    let proxy = Proxy::start_toml(&toml, &[port]);
    b.assert_lands(port, "alice", "alicepw", 1, "alice");

    // alice moves to dc2.
    write_map(
        dir.path(),
        "popmap.re",
        &format!("^alice$: {}\n", server(b.dc2.imap)),
    );
    proxy.signal("HUP");
    assert!(proxy.wait_log("Reloaded: 1 listeners", READ_TIMEOUT));
    b.assert_lands(port, "alice", "alicepw", 2, "alice");

    // A typo: the map stays as it was, and the log says why.
    write_map(dir.path(), "popmap.re", "^(alice: 127.0.0.1\n");
    proxy.signal("HUP");
    assert!(proxy.wait_log(
        "Reload failed, the running configuration stays",
        READ_TIMEOUT
    ));
    assert!(proxy.log_text().contains("line 1: bad regular expression"));
    b.assert_lands(port, "alice", "alicepw", 2, "alice");
}

// ---------------------------------------------------------------------------------------------
// Perdition's default map: the GDBM database makegdbm builds
// ---------------------------------------------------------------------------------------------

/// `makegdbm DB < popmap`, as Perdition's Makefile does.
fn makegdbm(dir: &Path, popmap: &str) -> PathBuf {
    let text = write_map(dir, "popmap", popmap);
    let db = dir.join("popmap.gdbm.db");
    let status = std::process::Command::new("makegdbm")
        .arg(&db)
        .stdin(fs::File::open(&text).unwrap())
        .status()
        .expect("run makegdbm (Debian's perdition)");
    assert!(status.success());
    fs::set_permissions(&db, fs::Permissions::from_mode(0o644)).unwrap();
    db
}

#[test]
fn gdbm_map_built_by_makegdbm_routes_as_debians_perdition_does() {
    let b = Backends::start();
    let dir = map_dir();
    let db = makegdbm(
        dir.path(),
        &format!("alice:{}\nbob:127.0.0.1\n", server(b.dc2.imap)),
    );
    // No -M: GDBM is Perdition's default map library.
    let extra = strings(&[
        "-m",
        &db.display().to_string(),
        "-s",
        "127.0.0.1",
        "-p",
        &b.dc1.imap.to_string(),
    ]);
    let both = SideBySide::start(&extra);
    let (_, alice) = both.same_landing(&b, "alice", "alicepw");
    assert_eq!(alice.landed, Some((2, "alice".to_string())));
    let (_, bob) = both.same_landing(&b, "bob", "bobpw");
    assert_eq!(bob.landed, Some((1, "bob".to_string())));
    let (_, carol) = both.same_landing(&b, "carol@example.org", "carolpw");
    assert_eq!(carol.landed, Some((1, "carol@example.org".to_string())));
}

#[test]
fn gdbm_map_is_read_at_each_lookup_so_a_rebuild_takes_effect_at_once() {
    let b = Backends::start();
    let dir = map_dir();
    let db = makegdbm(dir.path(), &format!("alice:{}\n", server(b.dc1.imap)));
    let port = free_port();
    let table = format!(
        "[listener.map]\nkind = \"gdbm\"\npath = \"{}\"\n",
        db.display()
    );
    let _proxy = Proxy::start_toml(&config(port, "host = \"\"", &table), &[port]);
    b.assert_lands(port, "alice", "alicepw", 1, "alice");
    makegdbm(dir.path(), &format!("alice:{}\n", server(b.dc2.imap)));
    b.assert_lands(port, "alice", "alicepw", 2, "alice");
}
