//! Prometheus for real: Debian's `prometheus` scrapes a Portcullis admin endpoint in front of a
//! real Dovecot while clients log in (well and badly, over TLS, through a map, a pool and a
//! back end that is down), and its query API shows the series with their types and labels;
//! the shipped rules load, and the alerts that can fire at once (a certificate expiring in
//! five days, a failed reload) do; every query of the shipped Grafana dashboard finds data.
//! `promtool` checks the shipped rules and runs their unit tests.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::admin::http;
use support::prometheus::{promtool, value, Prometheus, Target};
use support::*;

const TOKEN: &str = "a-long-random-token-for-prometheus";

/// How long a scrape (every 200 ms) and a rule evaluation may take to show what happened.
const SEEN_WITHIN: Duration = Duration::from_secs(20);

fn packaging(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("packaging")
        .join(path)
}

#[test]
fn promtool_checks_the_shipped_rules_and_their_tests_pass() {
    let dir = packaging("prometheus");
    let (ok, said) = promtool(&dir, &["check", "rules", "portcullis.rules.yml"]);
    assert!(ok, "promtool check rules:\n{said}");
    assert!(said.contains("SUCCESS"), "{said}");
    let (ok, said) = promtool(&dir, &["test", "rules", "portcullis.rules.test.yml"]);
    assert!(ok, "promtool test rules:\n{said}");
    // Every alert is exercised by the unit tests.
    let rules = std::fs::read_to_string(dir.join("portcullis.rules.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("portcullis.rules.test.yml")).unwrap();
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {alert}\n")),
            "{alert} has no promtool test"
        );
    }
}

/// The Debian package ships the rules, their tests and the dashboard under
/// /usr/share/portcullis (`cargo deb` reads the assets from Cargo.toml).
#[test]
fn the_package_ships_the_rules_and_the_dashboard() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
    let manifest: toml::Table = manifest.unwrap().parse().unwrap();
    let assets = manifest["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .unwrap();
    let shipped: Vec<(&str, &str)> = assets
        .iter()
        .filter_map(|a| Some((a.get(0)?.as_str()?, a.get(1)?.as_str()?)))
        .collect();
    for (source, target) in [
        (
            "packaging/prometheus/portcullis.rules.yml",
            "usr/share/portcullis/prometheus/",
        ),
        (
            "packaging/prometheus/portcullis.rules.test.yml",
            "usr/share/portcullis/prometheus/",
        ),
        (
            "packaging/grafana/portcullis.json",
            "usr/share/portcullis/grafana/",
        ),
    ] {
        assert!(
            shipped
                .iter()
                .any(|(s, t)| *s == source && t.starts_with(target)),
            "{source} is not shipped under /{target}: {shipped:?}"
        );
    }
}

/// A self-signed RSA certificate for `imap.example.test` that expires in five days.
fn expiring_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("expiring.pem"), dir.join("expiring.key"));
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "5",
        ])
        .args(["-subj", "/CN=imap.example.test"])
        .args(["-addext", "subjectAltName=DNS:imap.example.test"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// The proxy: implicit TLS on 127.0.0.1 (the test CA's certificate and one expiring soon),
/// a listener on 127.0.0.2 that routes by a popmap only (alice), a pool of one Dovecot on 127.0.0.3, and a
/// listener whose back end is down on 127.0.0.4; the guard bans after 3 failures.
fn config(dir: &Path, admin: u16, dc: &Dovecot, dead: u16) -> String {
    let popmap = dir.join("popmap");
    std::fs::write(&popmap, format!("alice:127.0.0.1:{}\n", dc.imap)).unwrap();
    let (expiring, expiring_key) = expiring_certificate(dir);
    let certs = certs();
    format!(
        "[log]\ndestination = \"-\"\n\n\
         [admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken = \"{TOKEN}\"\n\n\
         [limits]\nconnection_limit = 50\n\n\
         [guard]\npenalty_initial_ms = 50\npenalty_max_ms = 100\nban_after = 3\nban_ms = 60000\n\n\
         [[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:0\"]\ntls = \"implicit\"\n\
         cert = \"{cert}\"\nkey = \"{key}\"\n\
         certificates = [{{ cert = \"{expiring}\", key = \"{expiring_key}\" }}]\n\
         [listener.backend]\nhost = \"127.0.0.1\"\nport = {imap}\n\n\
         [[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.2:0\"]\n\
         [listener.backend]\nhost = \"\"\n\
         [listener.map]\nkind = \"popmap\"\npath = \"{popmap}\"\n\n\
         [[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.3:0\"]\n\
         [listener.backend]\nhost = \"\"\n\
         [listener.map]\nkind = \"pool\"\nservers = [\"127.0.0.1:{imap}\"]\n\
         health_interval_ms = 200\n\n\
         [[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.4:0\"]\n\
         [listener.backend]\nhost = \"127.0.0.1\"\nport = {dead}\n",
        cert = certs.cert.display(),
        key = certs.key.display(),
        expiring = expiring.display(),
        expiring_key = expiring_key.display(),
        popmap = popmap.display(),
        imap = dc.imap,
    )
}

/// The ports of the `Listening on 127.0.0.N:PORT` lines, by address.
fn ports_by_address(log: &str) -> BTreeMap<String, u16> {
    log.lines()
        .filter_map(|l| l.split_once("Listening on ")?.1.split_whitespace().next())
        .filter_map(|a| a.parse::<std::net::SocketAddr>().ok())
        .map(|a| (a.ip().to_string(), a.port()))
        .collect()
}

/// A client of the listener on `address:port`, connected from `source`.
fn connect_from_to(source: &str, address: &str, port: u16) -> Client {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let source: std::net::IpAddr = source.parse().unwrap();
    socket
        .bind(&std::net::SocketAddr::new(source, 0).into())
        .unwrap();
    let target: std::net::SocketAddr = format!("{address}:{port}").parse().unwrap();
    socket.connect(&target.into()).unwrap();
    Client::from_stream(socket.into())
}

/// An IMAP client of the listener on `address:port`, from `source`, greeted.
fn imap_from(source: &str, address: &str, port: u16) -> Client {
    let mut client = connect_from_to(source, address, port);
    client.expect_line("* OK");
    client
}

fn logout(mut client: Client) {
    client.send_line("z LOGOUT");
    client.read_until_tagged("z");
}

/// `LOGIN` with a wrong password (one per tag: the guard counts a password tried again
/// once); the tagged answer.
fn wrong_login(client: &mut Client, tag: &str) -> String {
    client.send_line(&format!("{tag} LOGIN alice wrong-{tag}"));
    client
        .read_until_tagged(tag)
        .last()
        .cloned()
        .unwrap_or_default()
}

/// What the users do: good and bad logins on every listener, a failed TLS handshake, and an
/// address the guard bans.
fn traffic(ports: &BTreeMap<String, u16>) {
    let port = |a: &str| ports[a];
    let mut tls = Client::tls(port("127.0.0.1"));
    tls.expect_line("* OK");
    imap_login(&mut tls, "a", "alice", "alicepw");
    logout(tls);
    // Plain text at a TLS listener: a failed handshake.
    let mut garbage = TcpStream::connect(("127.0.0.1", port("127.0.0.1"))).unwrap();
    std::io::Write::write_all(&mut garbage, b"a LOGIN alice alicepw\r\n").unwrap();
    drop(garbage);

    let mut mapped = imap_from("127.0.0.1", "127.0.0.2", port("127.0.0.2"));
    imap_login(&mut mapped, "a", "alice", "alicepw");
    logout(mapped);
    // Not in the map, and the listener has no server of its own.
    let mut unmapped = imap_from("127.0.0.1", "127.0.0.2", port("127.0.0.2"));
    unmapped.send_line("a LOGIN bob bobpw");
    let answer = unmapped.read_until_tagged("a").last().cloned();
    assert!(
        answer.unwrap_or_default().starts_with("a NO"),
        "a user no map knows"
    );
    let mut pooled = imap_from("127.0.0.1", "127.0.0.3", port("127.0.0.3"));
    imap_login(&mut pooled, "a", "alice", "alicepw");
    logout(pooled);
    let mut down = imap_from("127.0.0.1", "127.0.0.4", port("127.0.0.4"));
    down.send_line("a LOGIN alice alicepw");
    let answer = down.read_until_tagged("a").last().cloned();
    assert!(
        answer.unwrap_or_default().starts_with("a NO"),
        "a back end down"
    );

    // Three wrong passwords from 127.0.0.9 earn it a ban; it is then turned away.
    let mut guessing = imap_from("127.0.0.9", "127.0.0.2", port("127.0.0.2"));
    for tag in ["g1", "g2", "g3"] {
        assert!(wrong_login(&mut guessing, tag).starts_with(&format!("{tag} NO")));
    }
    let again = connect_from_to("127.0.0.9", "127.0.0.2", port("127.0.0.2")).read_line();
    assert!(again.contains("BYE"), "a banned address: {again}");
}

#[test]
fn prometheus_scrapes_typed_labelled_series_fires_alerts_and_feeds_the_dashboard() {
    let dc = Dovecot::start();
    let dir = tempfile::tempdir().unwrap();
    let (admin, dead) = (free_port(), free_port());
    let (proxy, _) = Proxy::start_toml_anywhere(&config(dir.path(), admin, &dc, dead), 4);
    let ports = ports_by_address(&proxy.log_text());
    let rules = packaging("prometheus/portcullis.rules.yml");
    let target = Target {
        job: "portcullis",
        address: format!("127.0.0.1:{admin}"),
        token: TOKEN,
    };
    let prometheus = Prometheus::start(&target, "200ms", &[&rules]);
    let prom = &prometheus;
    let _logs = LogsOnPanic(|| {
        format!(
            "portcullis:\n{}\nprometheus:\n{}",
            proxy.everything_logged(),
            prom.log_text()
        )
    });

    // Scraped twice before anything happens, so that rates see every change after.
    let scrapes = prom.query_until(
        "count_over_time(portcullis_build_info[1m]) >= 2",
        SEEN_WITHIN,
        |r| !r.is_empty(),
    );
    assert!(
        !scrapes.is_empty(),
        "never scraped twice: {:?}",
        targets(prom)
    );
    wait_pool_up(prom);
    open_connections_are_counted(prom, ports["127.0.0.1"]);
    traffic(&ports);
    wait_seen(prom);

    series_have_their_types(prom);
    series_have_their_labels(prom);
    certificates_show_and_alert(prom);
    dashboard_queries_find_data(prom, admin);
    a_failed_reload_shows_and_alerts(prom, &proxy, admin);
}

/// A logged-in session holds a connection (and is proxying) while it lasts, not after.
fn open_connections_are_counted(prom: &Prometheus, tls_port: u16) {
    let mut client = Client::tls(tls_port);
    client.expect_line("* OK");
    imap_login(&mut client, "a", "alice", "alicepw");
    for promql in [
        "portcullis_connections_open == 1",
        "portcullis_sessions_current{state=\"proxying\"} == 1",
    ] {
        let r = prom.query_until(promql, SEEN_WITHIN, |r| !r.is_empty());
        assert!(
            !r.is_empty(),
            "{promql}: {:?}",
            prom.query("portcullis_connections_open")
        );
    }
    logout(client);
    let r = prom.query_until("portcullis_connections_open == 0", SEEN_WITHIN, |r| {
        !r.is_empty()
    });
    assert!(
        !r.is_empty(),
        "the connection is still counted after it closed"
    );
}

fn targets(prom: &Prometheus) -> Value {
    prom.api("/api/v1/targets", &[])
}

fn wait_pool_up(prom: &Prometheus) {
    let up = prom.query_until("portcullis_pool_server_up == 1", SEEN_WITHIN, |r| {
        r.len() == 1
    });
    assert_eq!(up.len(), 1, "the pool's server never came up: {up:?}");
}

/// Until Prometheus has scraped what the traffic did.
fn wait_seen(prom: &Prometheus) {
    for promql in [
        "portcullis_logins_total{result=\"connect_failed\"}",
        "portcullis_guard_decisions_total{decision=\"banned\"}",
        "portcullis_connections_refused_total{reason=\"banned\"}",
        "sum(portcullis_relayed_bytes_total)",
        "portcullis_tls_handshakes_total{side=\"client\",result=\"failed\"}",
        "sum(portcullis_pool_server_sessions) == 0",
    ] {
        let r = prom.query_until(promql, SEEN_WITHIN, |r| {
            r.iter().any(|s| value(s) > 0.0 || promql.ends_with("== 0"))
        });
        assert!(
            !r.is_empty(),
            "{promql}: never seen; targets {}",
            targets(prom)
        );
    }
}

/// The type Prometheus recorded for each family (`/api/v1/metadata`), as a scraper sees it.
fn series_have_their_types(prom: &Prometheus) {
    let metadata = prom.api("/api/v1/metadata", &[]);
    let type_of = |family: &str| -> String {
        // OpenMetrics names a counter's family without `_total`, an info's without `_info`.
        let entry = metadata
            .get(family)
            .or_else(|| metadata.get(family.trim_end_matches("_total")))
            .or_else(|| metadata.get(family.trim_end_matches("_info")));
        entry
            .and_then(|e| e[0]["type"].as_str())
            .unwrap_or("")
            .to_string()
    };
    let expected = [
        ("portcullis_build_info", "info"),
        ("portcullis_connections_accepted_total", "counter"),
        ("portcullis_connections_refused_total", "counter"),
        ("portcullis_sessions_current", "gauge"),
        ("portcullis_logins_total", "counter"),
        ("portcullis_backend_connect_errors_total", "counter"),
        ("portcullis_backend_connections_total", "counter"),
        ("portcullis_backend_connect_duration_seconds", "histogram"),
        ("portcullis_backend_login_duration_seconds", "histogram"),
        ("portcullis_map_lookups_total", "counter"),
        ("portcullis_map_lookup_duration_seconds", "histogram"),
        ("portcullis_tls_handshakes_total", "counter"),
        ("portcullis_relayed_bytes_total", "counter"),
        ("portcullis_guard_decisions_total", "counter"),
        ("portcullis_pool_server_up", "gauge"),
        ("portcullis_pool_server_sessions", "gauge"),
        ("portcullis_pool_server_users", "gauge"),
        ("portcullis_connection_limit", "gauge"),
        ("portcullis_connections_open", "gauge"),
        ("portcullis_reload_failures_total", "counter"),
        ("portcullis_config_last_reload_successful", "gauge"),
        (
            "portcullis_config_last_reload_success_timestamp_seconds",
            "gauge",
        ),
        ("portcullis_certificate_expiry_timestamp_seconds", "gauge"),
        ("portcullis_log_lines_dropped_total", "counter"),
    ];
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(family, kind)| type_of(family) != *kind)
        .map(|(family, kind)| format!("{family}: {kind} expected, {:?}", type_of(family)))
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}\nmetadata: {metadata:#}");
}

/// The label names of every series of `metric`, and the values of `label` among them.
fn labels_of(prom: &Prometheus, metric: &str, label: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let series = prom.query(metric);
    assert!(!series.is_empty(), "no {metric}");
    let names = series
        .iter()
        .flat_map(|s| s["metric"].as_object().unwrap().keys().cloned())
        .collect();
    let values = series
        .iter()
        .filter_map(|s| s["metric"][label].as_str().map(str::to_string))
        .collect();
    (names, values)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn series_have_their_labels(prom: &Prometheus) {
    let scrape = ["__name__", "instance", "job"];
    let cases: [(&str, &[&str], &str, &[&str]); 7] = [
        (
            "portcullis_logins_total",
            &["protocol", "result"],
            "result",
            &["ok", "auth_failed", "connect_failed", "no_server"],
        ),
        (
            "portcullis_backend_connections_total",
            &["listener", "backend", "result"],
            "result",
            &["ok", "failed"],
        ),
        (
            "portcullis_tls_handshakes_total",
            &["side", "result"],
            "result",
            &["ok", "failed"],
        ),
        (
            "portcullis_guard_decisions_total",
            &["decision"],
            "decision",
            &["delay", "ban", "banned"],
        ),
        (
            "portcullis_map_lookups_total",
            &["map", "result"],
            "result",
            &["found", "not_found"],
        ),
        (
            "portcullis_pool_server_up",
            &["listener", "server"],
            "listener",
            &["127.0.0.3:0"],
        ),
        (
            "portcullis_connections_refused_total",
            &["listener", "reason"],
            "reason",
            &["banned"],
        ),
    ];
    for (metric, labels, label, values) in cases {
        let (names, seen) = labels_of(prom, metric, label);
        let mut expected = set(labels);
        expected.extend(set(&scrape));
        assert_eq!(names, expected, "{metric}'s labels");
        assert!(
            set(values).is_subset(&seen),
            "{metric}: {values:?} among {seen:?}"
        );
    }
    // The back end that is down, by the listener whose sessions tried it.
    let failed = prom.query("portcullis_backend_connections_total{result=\"failed\"}");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["metric"]["listener"], "127.0.0.4:0");
    assert!(failed[0]["metric"]["backend"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    // A back end a map named (a login name may shape it) is `map`, never its name; the
    // pool's server, from the configuration, keeps its name.
    let by = |listener: &str| {
        let found = prom.query(&format!(
            "portcullis_backend_connections_total{{listener=\"{listener}\",result=\"ok\"}}"
        ));
        assert_eq!(found.len(), 1, "{listener}: {found:?}");
        found[0]["metric"]["backend"].as_str().unwrap().to_string()
    };
    assert_eq!(by("127.0.0.2:0"), "map");
    assert!(by("127.0.0.3:0").starts_with("127.0.0.1:"));
    // No label names a user or a client address, in any series.
    let all = prom.api(
        "/api/v1/series",
        &[("match[]", "{__name__=~\"portcullis_.*\"}")],
    );
    let text = all.to_string();
    for secret in ["alice", "bob", "127.0.0.9"] {
        assert!(!text.contains(secret), "{secret} in a label: {text}");
    }
    let limit = prom.query("portcullis_connection_limit");
    assert_eq!(value(&limit[0]), 50.0, "{limit:?}");
}

/// The certificates of the TLS listener, their expiry as the certificates say, and the
/// shipped alert on the one that expires in five days (and not on the other).
fn certificates_show_and_alert(prom: &Prometheus) {
    let series = prom.query("portcullis_certificate_expiry_timestamp_seconds");
    let by_name: BTreeMap<String, (String, String, f64)> = series
        .iter()
        .map(|s| {
            let m = &s["metric"];
            let text = |k: &str| m[k].as_str().unwrap_or("").to_string();
            (text("name"), (text("listener"), text("key"), value(s)))
        })
        .collect();
    let five_days = unix_now() + 5.0 * 86400.0;
    let (listener, key, at) = &by_name["imap.example.test"];
    assert_eq!((listener.as_str(), key.as_str()), ("127.0.0.1:0", "rsa"));
    assert!(
        (at - five_days).abs() < 600.0,
        "expires at {at}, not in five days"
    );
    let (_, key, at) = &by_name["localhost"];
    assert_eq!(key, "ecdsa");
    assert!(
        *at > unix_now() + 300.0 * 86400.0,
        "the test CA's certificate: {at}"
    );

    let firing = wait_alert(prom, "PortcullisCertificateExpiringSoon");
    let names: Vec<&str> = firing
        .iter()
        .filter_map(|a| a["labels"]["name"].as_str())
        .collect();
    assert_eq!(names, ["imap.example.test"], "{firing:?}");
    assert_eq!(firing[0]["labels"]["severity"], "warning");
    assert!(
        wait_alert_quiet(prom, "PortcullisCertificateExpiring"),
        "five days left is not critical yet"
    );
}

/// The alerts named `name` once one fires (at most [`SEEN_WITHIN`]).
fn wait_alert(prom: &Prometheus, name: &str) -> Vec<Value> {
    let deadline = std::time::Instant::now() + SEEN_WITHIN;
    loop {
        let firing = firing(prom, name);
        if !firing.is_empty() || std::time::Instant::now() > deadline {
            assert!(
                !firing.is_empty(),
                "{name} never fired: {}",
                prom.api("/api/v1/alerts", &[])
            );
            return firing;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn firing(prom: &Prometheus, name: &str) -> Vec<Value> {
    let alerts = prom.api("/api/v1/alerts", &[]);
    alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["labels"]["alertname"] == name && a["state"] == "firing")
        .cloned()
        .collect()
}

/// Whether `name` is quiet after the rules were evaluated a few times.
fn wait_alert_quiet(prom: &Prometheus, name: &str) -> bool {
    let evaluated = prom.api("/api/v1/rules", &[("type", "alert")]);
    let rule_seen = evaluated.to_string().contains(name);
    rule_seen && firing(prom, name).is_empty()
}

/// Every query of every panel of the shipped dashboard, with Grafana's variables given fixed
/// values, returns data from this Prometheus.
fn dashboard_queries_find_data(prom: &Prometheus, admin: u16) {
    let text = std::fs::read_to_string(packaging("grafana/portcullis.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    let mut panels = Vec::new();
    collect_panels(&dashboard["panels"], &mut panels);
    let mut queried = 0;
    for panel in &panels {
        let title = panel["title"].as_str().unwrap_or("?");
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        for target in panel["targets"].as_array().into_iter().flatten() {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            let expr = grafana_variables(target["expr"].as_str().unwrap());
            // A series born during the traffic needs a second scrape for a rate.
            let result = prom.query_until(&expr, SEEN_WITHIN, |r| {
                r.iter().any(|s| value(s).is_finite())
            });
            assert!(
                result.iter().any(|s| value(s).is_finite()),
                "panel {title:?}: {expr} found no data: {result:?}"
            );
            queried += 1;
        }
    }
    assert!(queried >= 20, "only {queried} queries in the dashboard");
    // The instance variable's choices come from this series.
    let instances = prom.api(
        "/api/v1/label/instance/values",
        &[("match[]", "portcullis_build_info")],
    );
    assert_eq!(instances, serde_json::json!([format!("127.0.0.1:{admin}")]));
}

/// The panels, those inside rows too.
fn collect_panels(list: &Value, out: &mut Vec<Value>) {
    for panel in list.as_array().into_iter().flatten() {
        if panel["type"] == "row" {
            collect_panels(&panel["panels"], out);
        } else {
            out.push(panel.clone());
        }
    }
}

/// Grafana's own variables as a fixed window; the dashboard's as "any value".
fn grafana_variables(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$__range", "1m")
        .replace("${instance}", ".*")
        .replace("$instance", ".*")
}

/// A reload of a file that does not parse: refused, and Prometheus sees it.
fn a_failed_reload_shows_and_alerts(prom: &Prometheus, proxy: &Proxy, admin: u16) {
    let config = proxy.config.as_ref().unwrap();
    std::fs::write(config, "[[listener]\nthis is not TOML\n").unwrap();
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let (status, body) = http(admin, "POST", "/reload", &auth);
    assert_ne!(status, 200, "a broken file reloaded: {body}");
    let successful = prom.query_until(
        "portcullis_config_last_reload_successful == 0",
        SEEN_WITHIN,
        |r| !r.is_empty(),
    );
    assert_eq!(successful.len(), 1, "{successful:?}");
    let failures = prom.query("portcullis_reload_failures_total");
    assert_eq!(value(&failures[0]), 1.0, "{failures:?}");
    wait_alert(prom, "PortcullisReloadFailed");
}
