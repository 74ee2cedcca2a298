//! The SQL map against real PostgreSQL, MariaDB and SQLite, with Perdition's table: users
//! land where their row says, Perdition's MySQL and PostgreSQL option strings work, the login
//! name is a bound parameter (Perdition's PostgreSQL library splices it into the query), and a
//! database that is down makes logins unavailable.

mod support;

use std::process::Command;

use support::databases::{mariadb_database, postgres_database};
use support::*;

/// Perdition's table (`perditiondb_*_makedb`), with rows sending alice and bob to `port1` and
/// `port2` (bob's port inside `servername`, as Perdition allows).
fn perdition_table(port1: u16, port2: u16, user_column: &str) -> String {
    format!(
        "CREATE TABLE tblPerdition ({user_column} varchar(128) NOT NULL PRIMARY KEY, \
         servername varchar(255) NOT NULL, port varchar(8) DEFAULT NULL);\n\
         INSERT INTO tblPerdition VALUES ('alice', '127.0.0.1', '{port1}');\n\
         INSERT INTO tblPerdition VALUES ('bob', '127.0.0.1:{port2}', NULL);\n"
    )
}

fn sql_listener(port: u16, url: &str, backend: &str) -> String {
    format!(
        "[log]\ndestination = \"-\"\n\n[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{port}\"]\n\
         [listener.backend]\n{backend}\n\
         [listener.map]\nkind = \"sql\"\nurl = \"{url}\"\ntimeout = 3\n"
    )
}

fn login(port: u16, user: &str, pass: &str) -> String {
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    c.send_line(&format!("a LOGIN {user} {pass}"));
    c.read_until_tagged("a").pop().unwrap()
}

/// Whether `user` logged in at `dc` (no waiting: for "never landed there" checks).
fn logged_in_at(dc: &Dovecot, user: &str) -> bool {
    dc.log_text().contains(&format!("Login: user=<{user}>"))
}

/// alice and bob land where the rows say, and nowhere else.
fn assert_routes(port: u16, dc1: &Dovecot, dc2: &Dovecot) {
    assert!(login(port, "alice", "alicepw").starts_with("a OK"));
    assert!(login(port, "bob", "bobpw").starts_with("a OK"));
    assert!(dc1.saw_login("alice") && !logged_in_at(dc2, "alice"));
    assert!(dc2.saw_login("bob") && !logged_in_at(dc1, "bob"));
}

#[test]
fn postgresql_rows_route_users() {
    let (dc1, dc2) = (Dovecot::start(), Dovecot::start());
    let url = postgres_database(&perdition_table(dc1.imap, dc2.imap, "\"user\""));
    let port = free_port();
    let _proxy = Proxy::start_toml(&sql_listener(port, &url, "host = \"\""), &[port]);
    assert_routes(port, &dc1, &dc2);
}

/// Perdition's own PostgreSQL table (`perditiondb_postgresql_makedb`) keeps every column as
/// `char(n)`: PostgreSQL answers with the value padded with blanks to its width. Perdition
/// trims them; so must the map, or alice's server is "127.0.0.1" and 246 blanks.
#[test]
fn postgresql_on_perditions_blank_padded_char_columns() {
    let (dc1, dc2) = (Dovecot::start(), Dovecot::start());
    let setup = format!(
        "CREATE TABLE tblPerdition (\"user\" char(128) NOT NULL PRIMARY KEY, \
         servername char(255) NOT NULL, port char(8) DEFAULT NULL);\n\
         INSERT INTO tblPerdition VALUES ('alice', '127.0.0.1', '{}');\n\
         INSERT INTO tblPerdition VALUES ('bob', '127.0.0.1:{}', NULL);\n",
        dc1.imap, dc2.imap
    );
    let url = postgres_database(&setup);
    let port = free_port();
    let proxy = Proxy::start_toml(&sql_listener(port, &url, "host = \"\""), &[port]);
    let answer = login(port, "alice", "alicepw");
    assert!(answer.starts_with("a OK"), "{answer}\n{}", proxy.log_text());
    assert!(
        login(port, "bob", "bobpw").starts_with("a OK"),
        "{}",
        proxy.log_text()
    );
    assert!(dc1.saw_login("alice") && !logged_in_at(&dc2, "alice"));
    assert!(dc2.saw_login("bob") && !logged_in_at(&dc1, "bob"));
    // Nobody's row: no server, and the listener has no fallback.
    assert!(login(port, "carol", "carolpw").starts_with("a NO"));
}

#[test]
fn mariadb_through_perditions_mysql_option_string() {
    let (dc1, dc2) = (Dovecot::start(), Dovecot::start());
    let url = mariadb_database(&perdition_table(dc1.imap, dc2.imap, "user"));
    // mysql://portcullis:portcullispw@127.0.0.1:PORT/DB → Perdition's host:port:db:table:user:pw
    let rest = url.trim_start_matches("mysql://");
    let (credentials, rest) = rest.split_once('@').unwrap();
    let (user, password) = credentials.split_once(':').unwrap();
    let (address, db) = rest.split_once('/').unwrap();
    let (host, db_port) = address.split_once(':').unwrap();
    let option = format!("{host}:{db_port}:{db}:tblPerdition:{user}:{password}");
    let port = free_port();
    let args: Vec<String> = [
        "perdition",
        "-f",
        "/dev/null",
        "--no_daemon",
        "-n",
        "-P",
        "IMAP4",
        "--bind_address",
        "127.0.0.1",
        "--listen_port",
        &port.to_string(),
        "-F",
        "-",
        "-M",
        "/usr/lib/x86_64-linux-gnu/libperditiondb_mysql.so.0",
        "-m",
        &option,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let _proxy = Proxy::start_args(&args, &[port]);
    assert_routes(port, &dc1, &dc2);
}

#[test]
fn sqlite_with_a_query_of_its_own() {
    let (dc1, dc2) = (Dovecot::start(), Dovecot::start());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("routes.db");
    let setup = format!(
        "CREATE TABLE mailboxes (login TEXT PRIMARY KEY, host TEXT, imap_port INTEGER);\n\
         INSERT INTO mailboxes VALUES ('alice', '127.0.0.1', {});\n\
         INSERT INTO mailboxes VALUES ('bob', '127.0.0.1', {});\n",
        dc1.imap, dc2.imap
    );
    let status = Command::new("sqlite3")
        .arg(&db)
        .arg(&setup)
        .status()
        .expect("run sqlite3 (install sqlite3)");
    assert!(status.success());
    let port = free_port();
    let toml = format!(
        "[log]\ndestination = \"-\"\n\n[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{port}\"]\n\
         [listener.backend]\nhost = \"\"\n\
         [listener.map]\nkind = \"sql\"\nurl = \"sqlite://{}?mode=ro\"\n\
         query = \"SELECT host AS servername, imap_port AS port FROM mailboxes WHERE login = ?\"\n",
        db.display()
    );
    let _proxy = Proxy::start_toml(&toml, &[port]);
    assert_routes(port, &dc1, &dc2);
}

#[test]
fn the_login_name_is_a_parameter_never_sql() {
    let (dc_alice, dc_default) = (Dovecot::start(), Dovecot::start());
    let url = postgres_database(&perdition_table(dc_alice.imap, dc_alice.imap, "\"user\""));
    let port = free_port();
    let backend = format!("host = \"127.0.0.1\"\nport = {}", dc_default.imap);
    let proxy = Proxy::start_toml(&sql_listener(port, &url, &backend), &[port]);
    let hostile = [
        "\"x' OR '1'='1\"",
        "\"alice' --\"",
        "\"\\\"; --\"",
        "\"alice\\\\\"",
        "\"%\"",
    ];
    for name in hostile {
        let answer = login(port, name, "alicepw");
        assert!(answer.starts_with("a NO"), "{name}: {answer}");
    }
    let log = proxy.log_text();
    let alices = format!("server=\"127.0.0.1:{}\"", dc_alice.imap);
    assert!(
        !log.contains(&alices),
        "a hostile name was routed to alice's server:\n{log}"
    );
    let fallback = format!("server=\"127.0.0.1:{}\"", dc_default.imap);
    assert_eq!(log.matches(&fallback).count(), hostile.len(), "{log}");
    assert!(login(port, "alice", "alicepw").starts_with("a OK"));
}

#[test]
fn a_database_that_is_down_makes_logins_unavailable() {
    let port = free_port();
    let url = format!("postgres://postgres@127.0.0.1:{}/nothing", free_port());
    let proxy = Proxy::start_toml(&sql_listener(port, &url, "host = \"\""), &[port]);
    let answer = login(port, "alice", "alicepw");
    assert!(answer.starts_with("a NO [UNAVAILABLE]"), "{answer}");
    assert!(proxy.wait_log(
        "status=\"failed: Could not connect to server\"",
        READ_TIMEOUT
    ));
}

#[test]
fn check_says_when_the_database_or_its_table_cannot_be_used() {
    let dir = tempfile::tempdir().unwrap();
    let check = |url: &str| {
        let path = dir.path().join("portcullis.toml");
        std::fs::write(
            &path,
            sql_listener(free_port(), url, "host = \"127.0.0.1\""),
        )
        .unwrap();
        run_portcullis(&["check", "--config", path.to_str().unwrap()])
    };
    let url = postgres_database(&perdition_table(1143, 2143, "\"user\""));
    let out = check(&url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A database without Perdition's table: the query cannot run.
    let empty = postgres_database("SELECT 1");
    let out = check(&empty);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("tblperdition"),
        "{stderr}"
    );
    // Nothing listening.
    let out = check(&format!("postgres://postgres@127.0.0.1:{}/x", free_port()));
    assert!(!out.status.success());
}
