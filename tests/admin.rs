//! The admin endpoint: metrics that change after a login, the live sessions as JSON, as a page
//! read by headless Chromium, and from `portcullis sessions`; kicks (by user, by back end, from
//! `portcullis kick`) that end exactly those sessions; moving a user to a new back end by
//! changing the map, reloading and kicking; and the bearer token.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use support::admin::{get, http, sample};
use support::*;

/// A proxy with an admin endpoint on `admin`, `extra` added to `[admin]`, one IMAP listener on
/// `port` in front of `backend`, and `map` lines for a `[listener.map]` when given.
fn config(port: u16, admin: u16, backend: u16, extra: &str, map: Option<&Path>) -> String {
    let mut toml = format!(
        "[log]\ndestination = \"-\"\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n{extra}\n\n\
         [[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{port}\"]\n\
         [listener.backend]\nhost = \"127.0.0.1\"\nport = {backend}\n"
    );
    if let Some(map) = map {
        toml += &format!(
            "[listener.map]\nkind = \"popmap\"\npath = \"{}\"\n",
            map.display()
        );
    }
    toml
}

fn sessions(admin: u16) -> Vec<serde_json::Value> {
    serde_json::from_str(&get(admin, "/sessions")).expect("JSON")
}

/// Wait until the session list satisfies `ok`.
fn wait_sessions(admin: u16, ok: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + READ_TIMEOUT;
    loop {
        let list = sessions(admin);
        if ok(&list) || std::time::Instant::now() > deadline {
            return list;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn logged_in(port: u16, user: &str, pass: &str) -> Client {
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    imap_login(&mut c, "a", user, pass);
    c
}

#[test]
fn metrics_change_after_a_login_and_the_sessions_say_who_is_where() {
    let dc = Dovecot::start();
    let (port, admin) = (free_port(), free_port());
    let _proxy = Proxy::start_toml(&config(port, admin, dc.imap, "", None), &[port, admin]);
    let ok = "portcullis_logins_total{protocol=\"imap\",result=\"ok\"}";
    let failed = "portcullis_logins_total{protocol=\"imap\",result=\"auth_failed\"}";
    let proxying = "portcullis_sessions_current{protocol=\"imap\",state=\"proxying\"}";
    let before = get(admin, "/metrics");
    assert!(
        before.contains("portcullis_build_info{version=\""),
        "{before}"
    );
    assert_eq!(sample(&before, ok), 0.0);

    let mut alice = logged_in(port, "alice", "alicepw");
    let mut wrong = Client::plain(port);
    wrong.expect_line("* OK");
    wrong.send_line("b LOGIN bob wrong");
    assert!(wrong
        .read_until_tagged("b")
        .last()
        .unwrap()
        .starts_with("b NO"));

    let after = get(admin, "/metrics");
    assert_eq!(sample(&after, ok), 1.0, "{after}");
    assert_eq!(sample(&after, failed), 1.0, "{after}");
    assert_eq!(sample(&after, proxying), 1.0, "{after}");
    let accepted = format!(
        "portcullis_connections_accepted_total{{listener=\"127.0.0.1:{port}\",protocol=\"imap\"}}"
    );
    // (The harness may have knocked once to see the port open.)
    assert!(sample(&after, &accepted) >= 2.0, "{after}");
    assert!(
        sample(
            &after,
            "portcullis_backend_connect_duration_seconds_count{protocol=\"imap\"}"
        ) >= 2.0,
        "{after}"
    );
    assert!(!after.contains("alice"), "no user in the metrics");

    let list = sessions(admin);
    let session = list
        .iter()
        .find(|s| s["user"] == "alice")
        .unwrap_or_else(|| panic!("alice not listed: {list:?}"));
    assert_eq!(session["state"], "proxying");
    assert_eq!(session["backend"], format!("127.0.0.1:{}", dc.imap));
    assert_eq!(session["client"], alice.local_addr().to_string());
    assert_eq!(session["protocol"], "imap");
    // Bytes relayed show as they pass.
    alice.send_line("c NOOP");
    alice.read_until_tagged("c");
    let list = wait_sessions(admin, |l| {
        l.iter()
            .any(|s| s["user"] == "alice" && s["bytes_to_client"].as_u64() > Some(0))
    });
    assert!(list
        .iter()
        .any(|s| s["user"] == "alice" && s["bytes_from_client"].as_u64() >= Some(8)));
    alice.send_line("d LOGOUT");
    alice.read_until_tagged("d");
    let list = wait_sessions(admin, |l| !l.iter().any(|s| s["user"] == "alice"));
    assert!(!list.iter().any(|s| s["user"] == "alice"), "{list:?}");
    let relayed = get(admin, "/metrics");
    assert!(
        sample(
            &relayed,
            "portcullis_relayed_bytes_total{protocol=\"imap\",direction=\"to_client\"}"
        ) > 0.0,
        "{relayed}"
    );
}

#[test]
fn a_kick_ends_that_users_sessions_only_and_the_commands_speak_to_the_endpoint() {
    let dc = Dovecot::start();
    let (port, admin) = (free_port(), free_port());
    let proxy = Proxy::start_toml(&config(port, admin, dc.imap, "", None), &[port, admin]);
    let mut alice = logged_in(port, "alice", "alicepw");
    let mut bob = logged_in(port, "bob", "bobpw");
    let address = format!("127.0.0.1:{admin}");

    let out = run_portcullis(&["sessions", "--admin", &address]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    assert!(table.contains("alice") && table.contains("bob"), "{table}");

    // A browser's cross-site form cannot kick, nor can a page under another host name.
    let (status, _) = http(
        admin,
        "POST",
        "/sessions/kick?user=alice",
        "Origin: http://evil\r\n",
    );
    assert_eq!(status, 403);
    let rebound = "Host: evil.example:80\r\n";
    assert_eq!(
        http(admin, "POST", "/sessions/kick?user=alice", rebound).0,
        421
    );
    assert_eq!(http(admin, "GET", "/sessions", rebound).0, 421);
    assert_eq!(
        http(
            admin,
            "GET",
            "/sessions",
            &format!("Host: localhost:{admin}\r\n")
        )
        .0,
        200
    );
    alice.send_line("x NOOP");
    assert!(
        alice
            .read_until_tagged("x")
            .last()
            .unwrap()
            .starts_with("x OK"),
        "alice's session ended without a kick"
    );

    let out = run_portcullis(&["kick", "--admin", &address, "--user", "ALICE"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1 sessions ended\n");
    assert!(alice.is_closed(), "alice's session still open");
    assert!(proxy.wait_log("Closing session: 127.0.0.1:", READ_TIMEOUT));
    assert!(proxy.wait_log("Admin kick user=ALICE from 127.0.0.1:", READ_TIMEOUT));
    assert!(proxy.wait_log(": 1 sessions ended", READ_TIMEOUT));
    // Bob is still there.
    bob.send_line("b NOOP");
    assert!(bob
        .read_until_tagged("b")
        .last()
        .unwrap()
        .starts_with("b OK"));
    // By back end: bob's goes too.
    let (status, body) = http(
        admin,
        "POST",
        &format!("/sessions/kick?backend=127.0.0.1:{}", dc.imap),
        "",
    );
    assert_eq!((status, body.trim()), (200, "{\"kicked\":1}"));
    assert!(bob.is_closed());
    // A browser's cross-site form cannot kick; nonsense is refused.
    let (status, _) = http(
        admin,
        "POST",
        "/sessions/kick?user=bob",
        "Origin: http://evil\r\n",
    );
    assert_eq!(status, 403);
    assert_eq!(http(admin, "POST", "/sessions/kick?everyone=1", "").0, 400);
    assert_eq!(http(admin, "GET", "/sessions/kick?user=bob", "").0, 405);
}

/// Moving a user: change the map, reload (SIGHUP), kick; the client reconnects and lands on
/// the new back end.
#[test]
fn moving_a_user_is_change_the_map_reload_and_kick() {
    let (old, new) = (Dovecot::start(), Dovecot::start());
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("popmap");
    std::fs::write(&map, format!("alice:127.0.0.1:{}\n", old.imap)).unwrap();
    let (port, admin) = (free_port(), free_port());
    let proxy = Proxy::start_toml(
        &config(port, admin, old.imap, "", Some(&map)),
        &[port, admin],
    );
    let mut alice = logged_in(port, "alice", "alicepw");
    assert!(old.wait_log("Login: user=<alice>", READ_TIMEOUT));

    std::fs::write(&map, format!("alice:127.0.0.1:{}\n", new.imap)).unwrap();
    proxy.signal("HUP");
    assert!(proxy.wait_log("Reloaded: 1 listeners", READ_TIMEOUT));
    let out = run_portcullis(&[
        "kick",
        "--admin",
        &format!("127.0.0.1:{admin}"),
        "--user",
        "alice",
    ]);
    assert!(out.status.success());
    assert!(alice.is_closed());

    let _alice = logged_in(port, "alice", "alicepw");
    assert!(
        new.wait_log("Login: user=<alice>", READ_TIMEOUT),
        "alice did not land on the new back end:\n{}",
        new.log_text()
    );
    let list = wait_sessions(admin, |l| l.len() == 1);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["backend"], format!("127.0.0.1:{}", new.imap));
}

#[test]
fn with_a_token_nothing_is_shown_without_it() {
    let dc = Dovecot::start();
    let (port, admin) = (free_port(), free_port());
    let extra = "token = \"s3cret\"";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("portcullis.toml");
    std::fs::write(&file, config(port, admin, dc.imap, extra, None)).unwrap();
    let _proxy = Proxy::start_toml(&config(port, admin, dc.imap, extra, None), &[port, admin]);
    assert_eq!(http(admin, "GET", "/metrics", "").0, 401);
    assert_eq!(
        http(admin, "GET", "/sessions", "Authorization: Bearer s3cre\r\n").0,
        401
    );
    assert_eq!(http(admin, "POST", "/sessions/kick?user=a", "").0, 401);
    let (status, body) = http(admin, "GET", "/metrics", "Authorization: Bearer s3cret\r\n");
    assert_eq!(status, 200);
    assert!(body.contains("portcullis_build_info"));
    // The commands find the address and the token in the configuration file.
    let out = run_portcullis(&["sessions", "--config", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("SESSION"));
    // And `check` does not show it.
    let out = run_portcullis(&["check", "--config", file.to_str().unwrap()]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cret"));
}

/// The page as a browser renders it: Debian's Chromium, headless, reading the DOM.
#[test]
fn the_session_page_reads_in_headless_chromium() {
    let dc = Dovecot::start();
    let (port, admin) = (free_port(), free_port());
    let _proxy = Proxy::start_toml(&config(port, admin, dc.imap, "", None), &[port, admin]);
    let _alice = logged_in(port, "alice", "alicepw");
    let profile = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.path().display()),
            "--dump-dom",
            &format!("http://127.0.0.1:{admin}/"),
        ])
        .output()
        .expect("run chromium (install chromium)");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("<p id=\"summary\">1 sessions, 1 logged in</p>"),
        "{dom}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = dom
        .lines()
        .find(|l| l.contains("<td>alice</td>"))
        .unwrap_or_else(|| panic!("no row for alice:\n{dom}"));
    assert!(
        row.contains(&format!("<td>127.0.0.1:{}</td>", dc.imap)),
        "{row}"
    );
    assert!(row.contains("<td>proxying</td>"), "{row}");
}

/// An IMAP back end that lets anyone in, whatever the name: greets offering SASL-IR and
/// answers every command OK. Dovecot checks a name's characters (`auth_username_chars`)
/// before any password, and refuses control characters; a proxied session's user is the name
/// its client logged in with.
fn lenient_backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut out = stream.try_clone().unwrap();
                let greeting = b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] lenient\r\n";
                let _ = out.write_all(greeting);
                let mut reader = BufReader::new(stream);
                let mut line = Vec::new();
                while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                    let tag = String::from_utf8_lossy(&line)
                        .split(' ')
                        .next()
                        .unwrap_or("*")
                        .to_string();
                    let answer = format!("{tag} OK [CAPABILITY IMAP4rev1] done\r\n");
                    let _ = out.write_all(answer.as_bytes());
                    line.clear();
                }
            });
        }
    });
    port
}

/// A user name that would retitle the admin's terminal (OSC 0 ... BEL) reaches `portcullis
/// sessions` escaped as the log escapes it, never raw (issue 16).
#[test]
fn a_user_name_with_terminal_escapes_is_listed_escaped() {
    let backend = lenient_backend();
    let (port, admin) = (free_port(), free_port());
    let proxy = Proxy::start_toml(&config(port, admin, backend, "", None), &[port, admin]);
    let _eve = logged_in(port, "\x1b]0;pwned\x07eve", "pw");
    let listed = wait_sessions(admin, |l| l.iter().any(|s| s["state"] == "proxying"));
    assert!(
        listed.iter().any(|s| s["user"] == "\x1b]0;pwned\x07eve"),
        "{listed:?}\n{}",
        proxy.log_text()
    );
    let out = run_portcullis(&["sessions", "--admin", &format!("127.0.0.1:{admin}")]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}\n{}", proxy.log_text());
    assert!(
        !out.stdout.iter().any(|&b| b == 0x1b || b == 0x07),
        "raw control characters reach the terminal: {table:?}"
    );
    assert!(table.contains(r"\x1b]0;pwned\x07eve"), "{table}");
}

/// How many of `held` the endpoint has closed (EOF or reset) by now.
fn closed_by_the_endpoint(held: &[TcpStream]) -> usize {
    held.iter()
        .filter(|s| {
            let mut s: &TcpStream = s;
            s.set_nonblocking(true).unwrap();
            let mut byte = [0u8; 1];
            let closed = match s.read(&mut byte) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            };
            s.set_nonblocking(false).unwrap();
            closed
        })
        .count()
}

/// Wait until at least `at_least` of `held` were closed by the endpoint; how many were.
fn wait_closed(held: &[TcpStream], at_least: usize) -> usize {
    let deadline = std::time::Instant::now() + READ_TIMEOUT;
    loop {
        let closed = closed_by_the_endpoint(held);
        if closed >= at_least || std::time::Instant::now() > deadline {
            return closed;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the endpoint said on each connection before closing it (`None`: still open), once
/// `closed` of them are closed or the read timeout is over.
fn said_and_closed(streams: &[TcpStream], closed: usize) -> Vec<Option<String>> {
    let mut said = vec![Vec::new(); streams.len()];
    let mut ended = vec![false; streams.len()];
    let deadline = std::time::Instant::now() + READ_TIMEOUT;
    loop {
        for (i, stream) in streams.iter().enumerate() {
            if ended[i] {
                continue;
            }
            let mut stream: &TcpStream = stream;
            stream.set_nonblocking(true).unwrap();
            let mut chunk = [0u8; 256];
            loop {
                match stream.read(&mut chunk) {
                    Ok(0) => break ended[i] = true,
                    Ok(n) => said[i].extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => break ended[i] = true,
                }
            }
        }
        let done = ended.iter().filter(|e| **e).count() >= closed;
        if done || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    said.iter()
        .zip(&ended)
        .map(|(s, e)| e.then(|| String::from_utf8_lossy(s).into_owned()))
        .collect()
}

/// Idle connections (issue 16) from loopback, however many of its addresses they come from,
/// do not keep an authorised request out. Loopback is one network, which holds 4 waiting
/// connections: the others are refused at once (503). A waiting connection is safe from being
/// pushed out for its first second (an admin's request, sent as it connects, is let in well
/// within it); after that, the authorised request takes the oldest idle one's place and is
/// answered 200. The header time is long here, so that it is not what lets the request in.
#[test]
fn idle_connections_from_one_address_or_many_do_not_keep_an_authorised_request_out() {
    let (port, admin) = (free_port(), free_port());
    let extra = "token = \"s3cret\"\nheader_timeout_ms = 30000";
    let proxy = Proxy::start_toml(&config(port, admin, 1, extra, None), &[admin]);
    let authorised = "Authorization: Bearer s3cret\r\n";
    let idle: Vec<TcpStream> = (0..20u8)
        .map(|n| connect_from(&format!("127.0.0.{}", 1 + n % 9), admin).unwrap())
        .collect();
    // At most four wait (fewer while the harness's own probe of the port still holds one);
    // the others are told at once.
    let said = said_and_closed(&idle, 16);
    let refused: Vec<&String> = said.iter().flatten().collect();
    assert!(
        (16..20).contains(&refused.len()),
        "{said:?}\n{}",
        proxy.log_text()
    );
    assert!(
        refused.iter().all(|r| r.starts_with("HTTP/1.1 503")),
        "{refused:?}"
    );
    let waiting: Vec<TcpStream> = idle
        .into_iter()
        .zip(&said)
        .filter(|(_, s)| s.is_none())
        .map(|(stream, _)| stream)
        .collect();
    std::thread::sleep(Duration::from_millis(1100));
    let (status, body) = http(admin, "GET", "/metrics", authorised);
    assert_eq!(status, 200, "{body}\n{}", proxy.log_text());
    assert!(body.contains("portcullis_build_info"), "{body}");
    // When all four places were taken, one idle connection made room for it; the others
    // still wait.
    let made_room = usize::from(waiting.len() == 4);
    let after = said_and_closed(&waiting, made_room);
    assert_eq!(after.iter().flatten().count(), made_room, "{after:?}");
}

/// An idle connection, and one that sends half its headers, are closed once the header time
/// (`header_timeout_ms`) is over, not before.
#[test]
fn an_idle_admin_connection_is_closed_after_the_header_time() {
    let (port, admin) = (free_port(), free_port());
    let extra = "token = \"s3cret\"\nheader_timeout_ms = 500";
    let proxy = Proxy::start_toml(&config(port, admin, 1, extra, None), &[admin]);
    let started = std::time::Instant::now();
    let idle = TcpStream::connect(("127.0.0.1", admin)).unwrap();
    let mut half = TcpStream::connect(("127.0.0.1", admin)).unwrap();
    write!(half, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{admin}\r\n").unwrap();
    let held = [idle, half];
    assert_eq!(wait_closed(&held, 2), 2, "{}", proxy.log_text());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "closed after {waited:?}"
    );
    // A request that is on time is answered as ever.
    let (status, _) = http(admin, "GET", "/metrics", "Authorization: Bearer s3cret\r\n");
    assert_eq!(status, 200, "{}", proxy.log_text());
}

/// Without a token, loopback is no protection: every local account may kick, reload and
/// upgrade. Said at start and by `check`; not said with a token.
#[test]
fn without_a_token_the_start_and_check_say_every_local_account_may_use_the_endpoint() {
    let (port, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("portcullis.toml");
    let said = format!(
        "admin endpoint on 127.0.0.1:{admin} without a token: every local account can see \
         every session, kick users, reload and upgrade; set [admin] token"
    );
    let check = |extra: &str| {
        std::fs::write(&file, config(port, admin, 1, extra, None)).unwrap();
        let out = run_portcullis(&["check", "--offline", "--config", file.to_str().unwrap()]);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let checked = check("");
    assert!(checked.contains(&format!("warning: {said}")), "{checked}");
    let checked = check("token = \"s3cret\"");
    assert!(!checked.contains("without a token"), "{checked}");

    // At warning level, so that it is there when only warnings are (info lines are not).
    let toml = config(port, admin, 1, "", None).replace(
        "destination = \"-\"\n",
        "destination = \"-\"\nlevel = \"warn\"\n",
    );
    let proxy = Proxy::start_toml(&toml, &[admin]);
    assert!(proxy.wait_log(&said, READ_TIMEOUT), "{}", proxy.log_text());
    assert!(
        !proxy.log_text().contains("Admin endpoint on http://"),
        "info lines are logged too: {}",
        proxy.log_text()
    );
}
