//! The `pool` map (issue 19) in front of a shared-storage cluster: three (or four) real Dovecot
//! servers sharing one mail root, each on a loopback address of its own; two Portcullis
//! instances with the same pool, sharing their state through redis-server under a key prefix
//! of each test's own. Which server served a session, Dovecot itself says (see
//! `support/cluster.rs`). Every failure prints both instances' output and every Dovecot's log.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::cluster::*;
use support::redis::Redis;
use support::*;

/// Every log a failure shows: both instances' output, then every member's log.
fn everything(cluster: &Cluster, fleet: &Fleet) -> impl Fn() -> String + 'static {
    let (instances, members) = (fleet.logs(), cluster.logs());
    move || format!("{}{}", instances(), members())
}

/// How many of `placed` each of `members` members got.
fn count(placed: &[usize], members: usize) -> Vec<usize> {
    (0..members)
        .map(|m| placed.iter().filter(|p| **p == m).count())
        .collect()
}

/// Waits until `field` of `server`'s row in `/backends` is `want` on every running instance.
fn wait_backends(
    fleet: &Fleet,
    server: &str,
    field: &str,
    want: &str,
    timeout: Duration,
    logs: &dyn Fn() -> String,
) {
    let what = format!("{field} of {server} \"{want}\" in /backends of both instances");
    wait_for(&what, timeout, logs, || {
        (0..fleet.instances.len())
            .all(|i| fleet.backend(i, server).is_some_and(|b| b[field] == want))
            .then_some(())
    });
}

/// Waits until a line of instance `i`'s output holds every one of `parts`.
fn wait_log_line(fleet: &Fleet, i: usize, parts: &[&str], logs: &dyn Fn() -> String) {
    let log = fleet.at(i).proxy.log.clone();
    wait_for(
        &format!("a line with {parts:?} in the output of portcullis #{i}"),
        READ_TIMEOUT,
        logs,
        || {
            read_lossy(&log)
                .lines()
                .any(|l| parts.iter().all(|p| l.contains(p)))
                .then_some(())
        },
    );
}

/// A command's output for a failure message.
fn said(out: &std::process::Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A metric sample of instance `i` for `server`, 0 when absent.
fn server_metric(fleet: &Fleet, i: usize, name: &str, server: &str, more: &[&str]) -> f64 {
    let label = format!("server=\"{server}\"");
    let mut labels = vec![label.as_str()];
    labels.extend(more);
    metric(&fleet.metrics(i), name, &labels).unwrap_or(0.0)
}

/// Waits until a session the proxy is to end has ended; when it ended.
fn closed_by(mut client: Client, until: Instant) -> Option<Instant> {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        // Lines before the end (a BYE) are read and let go.
        if client.try_read_line(left).is_none() {
            let now = Instant::now();
            return (now < until).then_some(now);
        }
    }
}

/// The harness itself, no pool yet: each member answers ID with its own address, and what one
/// member stores, another serves (one mail root).
#[test]
fn the_cluster_members_share_their_mail_and_tell_themselves_apart() {
    let cluster = Cluster::start(3);
    let logs = cluster.logs();
    let _logs = LogsOnPanic(&logs);
    let direct = |m: usize| {
        let stream = std::net::TcpStream::connect((member_ip(m), cluster.ports.imap))
            .unwrap_or_else(|e| panic!("member {m}: {e}"));
        let mut c = Client::from_stream(stream);
        c.expect_line("* OK");
        imap_login(&mut c, "a", &cluster_user(1), CLUSTER_PASSWORD);
        c
    };
    for m in 0..3 {
        let mut c = direct(m);
        assert_eq!(served_by(&cluster, &mut c), m);
        imap_logout(c);
    }
    let message = "Subject: shared\r\n\r\nstored through the first member\r\n";
    let mut first = direct(0);
    first.send_line(&format!("b APPEND INBOX {{{}}}", message.len()));
    first.expect_line("+");
    first.send(message.as_bytes());
    first.send_line("");
    let appended = first.read_until_tagged("b");
    assert!(appended.last().unwrap().starts_with("b OK"), "{appended:?}");
    imap_logout(first);
    let mut second = direct(1);
    second.send_line("c EXAMINE INBOX");
    let examined = second.read_until_tagged("c");
    assert!(
        examined.iter().any(|l| l == "* 1 EXISTS"),
        "the second member does not see the first one's message: {examined:?}"
    );
}

/// (1) The admin sees (`portcullis backends`, `/backends`) three servers up, weights 1, 1 and 2;
/// users who logged in once each are about a quarter on each of the first two servers and half
/// on the third (within ±20 %).
///
/// 1200 users rather than the 300: the servers' ports, and with them the hashes, change
/// from run to run, and with 300 users a server of weight 1 (75 ± 7.5 by chance alone) would
/// leave ±20 % (±15) in about one run in 13; with 1200 (300 ± 15, allowed ±60) never in
/// practice.
#[test]
fn users_spread_by_the_weights() {
    let cluster = Cluster::start(3);
    let fleet = Fleet::start(&cluster, Pool::new(&[1, 1, 2]));
    let logs = everything(&cluster, &fleet);
    let _logs = LogsOnPanic(&logs);

    let placed = place_users(&cluster, &fleet, 0..CLUSTER_USERS, 6);
    let counts = count(&placed, 3);
    let quarter = CLUSTER_USERS as f64 / 4.0;
    for (m, expected) in [quarter, quarter, 2.0 * quarter].into_iter().enumerate() {
        let got = counts[m] as f64;
        assert!(
            (got - expected).abs() <= expected * 0.2,
            "member {m} has {got} users, not {expected} ± 20 %: {counts:?}"
        );
    }

    for i in 0..2 {
        let rows = fleet.backends(i);
        for (m, weight) in [1, 1, 2].into_iter().enumerate() {
            let server = cluster.imap_server(m);
            let row = rows
                .iter()
                .find(|b| b["server"] == server)
                .unwrap_or_else(|| panic!("instance {i}: no row for {server}: {rows:?}"));
            assert_eq!(row["health"], "up", "{row}");
            assert_eq!(row["admin"], "up", "{row}");
            assert_eq!(row["weight"], weight, "{row}");
        }
    }
    let out = fleet.cli(1, &["backends"]);
    assert!(out.status.success(), "{}", said(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    let header = table.lines().next().unwrap_or_default();
    for column in ["SERVER", "HEALTH", "ADMIN", "WEIGHT", "USERS", "SESSIONS"] {
        assert!(
            header.contains(column),
            "no {column} in the header: {table}"
        );
    }
    for m in 0..3 {
        let server = cluster.imap_server(m);
        let row = table.lines().find(|l| l.contains(&server));
        assert!(
            row.is_some_and(|r| r.split_whitespace().filter(|w| *w == "up").count() == 2),
            "no row for {server} up and up: {table}"
        );
    }
}

/// (2) One user logging in again and again, through either instance, is always on the same
/// server. While it holds one session through each instance, each instance's `/backends`
/// shows one user with one session on that server and nothing on the others.
#[test]
fn one_user_through_both_instances_is_always_on_one_server() {
    let cluster = Cluster::start(3);
    let fleet = Fleet::start(&cluster, Pool::new(&[1, 1, 1]));
    let logs = everything(&cluster, &fleet);
    let _logs = LogsOnPanic(&logs);
    let user = cluster_user(42);

    let mut seen = BTreeSet::new();
    for n in 0..20 {
        let (client, member) = imap_session(&cluster, fleet.at(n % 2).ports.imap, &user);
        imap_logout(client);
        seen.insert(member);
    }
    let (_one, on_one) = imap_session(&cluster, fleet.at(0).ports.imap, &user);
    let (_two, on_two) = imap_session(&cluster, fleet.at(1).ports.imap, &user);
    seen.extend([on_one, on_two]);
    assert_eq!(seen.len(), 1, "{user} was served by members {seen:?}");

    let home = cluster.imap_server(on_one);
    for i in 0..2 {
        wait_for(
            &format!("instance {i}: one user, one session on {home} only"),
            READ_TIMEOUT,
            &logs,
            || {
                fleet
                    .backends(i)
                    .iter()
                    .all(|b| {
                        let n = u64::from(b["server"] == home.as_str());
                        b["sessions"] == n && b["users"] == n
                    })
                    .then_some(())
            },
        );
    }
}

/// (3) A server that hangs (SIGSTOP: it accepts connections and never greets) is down within
/// `down_after` checks on both instances: `/backends` says health "down", the metric
/// `portcullis_pool_server_up` is 0, the log says "pool ... HOST:PORT ... down", its remaining
/// sessions are ended. Only its users move. After SIGCONT it is "up" again; a moved user with
/// a session open elsewhere stays there; users with no session, whose sticky time is over,
/// are back on it.
#[test]
fn a_hung_server_is_down_in_time_and_only_its_users_move() {
    let mut cluster = Cluster::start(3);
    let mut pool = Pool::new(&[1, 1, 1]);
    pool.sticky_ms = 500;
    let sticky = Duration::from_millis(pool.sticky_ms + 200);
    let fleet = Fleet::start(&cluster, pool);
    let logs = everything(&cluster, &fleet);
    let _logs = LogsOnPanic(&logs);
    let users = 0..60;
    let (victim, server) = (0, cluster.imap_server(0));

    let before = place_users(&cluster, &fleet, users.clone(), 4);
    let placed_at = Instant::now();
    let on_victim: Vec<usize> = users.clone().filter(|n| before[*n] == victim).collect();
    assert!(
        on_victim.len() >= 3,
        "too few users on member 0: {before:?}"
    );
    let (held, on) = imap_session(
        &cluster,
        fleet.at(1).ports.imap,
        &cluster_user(on_victim[0]),
    );
    assert_eq!(on, victim);

    cluster.freeze(victim);
    let frozen = Instant::now();
    wait_backends(
        &fleet,
        &server,
        "health",
        "down",
        fleet.pool.down_within(),
        &logs,
    );
    let took = frozen.elapsed();
    for i in 0..2 {
        wait_log_line(&fleet, i, &["pool", &server, "down"], &logs);
        let metrics = fleet.metrics(i);
        let label = format!("server=\"{server}\"");
        assert_eq!(
            metric(&metrics, "portcullis_pool_server_up", &[&label]),
            Some(0.0),
            "instance {i}: {metrics}"
        );
        let changes = "portcullis_pool_health_changes_total";
        assert!(
            metric(&metrics, changes, &[&label, "to=\"down\""]).unwrap_or(0.0) >= 1.0,
            "instance {i}: {metrics}"
        );
    }
    let until = Instant::now() + READ_TIMEOUT;
    assert!(
        closed_by(held, until).is_some(),
        "the session on the hung server was not ended (down after {took:?})"
    );

    // Users whose sticky time is over are placed afresh: the others' stay put, the victim's
    // go elsewhere. (Their sticky time is not something to poll for: a login renews it.)
    std::thread::sleep(sticky.saturating_sub(placed_at.elapsed()));
    let after = place_users(&cluster, &fleet, users.clone(), 4);
    let after_at = Instant::now();
    for n in users.clone() {
        if before[n] == victim {
            assert_ne!(after[n], victim, "user{n} still on the hung server");
        } else {
            assert_eq!(after[n], before[n], "user{n} moved off a healthy server");
        }
    }

    // A moved user with a session open on its new server when the victim comes back.
    let mover = cluster_user(on_victim[1]);
    let (open, new_home) = imap_session(&cluster, fleet.at(0).ports.imap, &mover);
    assert_eq!(new_home, after[on_victim[1]]);
    cluster.thaw(victim);
    wait_backends(&fleet, &server, "health", "up", READ_TIMEOUT, &logs);
    for i in 0..2 {
        wait_log_line(&fleet, i, &["pool", &server, "up"], &logs);
        assert_eq!(
            server_metric(&fleet, i, "portcullis_pool_server_up", &server, &[]),
            1.0
        );
        let changes = "portcullis_pool_health_changes_total";
        assert!(server_metric(&fleet, i, changes, &server, &["to=\"up\""]) >= 1.0);
    }
    let (again, on) = imap_session(&cluster, fleet.at(1).ports.imap, &mover);
    assert_eq!(
        on, new_home,
        "{mover} moved back while a session was open elsewhere"
    );
    imap_logout(again);
    imap_logout(open);

    // The victim's other users, with no session and their sticky time over, are back on it.
    std::thread::sleep(sticky.saturating_sub(after_at.elapsed()));
    for n in &on_victim[2..] {
        let (client, on) = imap_session(&cluster, fleet.at(n % 2).ports.imap, &cluster_user(*n));
        imap_logout(client);
        assert_eq!(on, victim, "user{n} not back on its server");
    }
}

/// (3b) A server that is stopped for good (connections refused) is down just as soon, and its
/// users' logins go on elsewhere without a failure they would see.
#[test]
fn a_stopped_server_is_down_and_its_users_log_in_elsewhere() {
    let mut cluster = Cluster::start(3);
    let fleet = Fleet::start(&cluster, Pool::new(&[1, 1, 1]));
    let logs = everything(&cluster, &fleet);
    let _logs = LogsOnPanic(&logs);
    let (dead, server) = (2, cluster.imap_server(2));
    let before = place_users(&cluster, &fleet, 0..30, 3);
    let orphans: Vec<usize> = (0..30).filter(|n| before[*n] == dead).collect();
    assert!(!orphans.is_empty(), "no user on member 2: {before:?}");

    cluster.stop(dead);
    wait_backends(
        &fleet,
        &server,
        "health",
        "down",
        fleet.pool.down_within(),
        &logs,
    );
    for i in 0..2 {
        wait_log_line(&fleet, i, &["pool", &server, "down"], &logs);
    }
    for n in orphans {
        let (c, on) = imap_session(&cluster, fleet.at(n % 2).ports.imap, &cluster_user(n));
        imap_logout(c);
        assert_ne!(on, dead);
    }
}

/// (4) A fourth server added (all weights 1) takes about a quarter of the users (±8 points) and
/// no more: every user who moved, moved to it. Two fleets on fresh key prefixes, one with three
/// servers and one with four, compared user by user.
#[test]
fn a_fourth_server_takes_about_a_quarter_of_the_users_and_no_more() {
    // 75 ± 7.5 of them move by chance: ±8 points (±24) is more than 3 of those.
    const USERS: usize = 300;
    let cluster = Cluster::start(4);
    let three = {
        let fleet = Fleet::start(&cluster, Pool::new(&[1, 1, 1, 0]));
        let logs = everything(&cluster, &fleet);
        let _logs = LogsOnPanic(&logs);
        place_users(&cluster, &fleet, 0..USERS, 6)
    };
    let fleet = Fleet::start(&cluster, Pool::new(&[1, 1, 1, 1]));
    let logs = everything(&cluster, &fleet);
    let _logs = LogsOnPanic(&logs);
    let four = place_users(&cluster, &fleet, 0..USERS, 6);

    assert!(!three.contains(&3), "the three-server pool used the fourth");
    let moved: Vec<usize> = (0..USERS).filter(|n| three[*n] != four[*n]).collect();
    let wrong: Vec<usize> = moved.iter().copied().filter(|n| four[*n] != 3).collect();
    assert!(
        wrong.is_empty(),
        "users moved between the old servers: {wrong:?}"
    );
    let share = moved.len() as f64 / USERS as f64;
    assert!(
        (0.17..=0.33).contains(&share),
        "{} of {USERS} users moved to the fourth server",
        moved.len()
    );
}

/// (5a) `portcullis backend down S` (no kick): within a second both instances show S "down"
/// under ADMIN (health still "up"); a user with a session open on S keeps it, and its next
/// login still goes to S; a user new to the fleet whose place is S goes elsewhere.
/// `portcullis backend up S`: the next new user whose place is S lands on it.
#[test]
fn backend_down_takes_no_new_users_and_backend_up_takes_them_again() {
    let cluster = Cluster::start(3);
    // Where users land while every server is up, learnt through a fleet of its own (its own
    // key prefix): to the fleet under test they are new users.
    let expected = {
        let oracle = Fleet::start(&cluster, Pool::new(&[1, 1, 1]));
        place_users(&cluster, &oracle, 0..60, 4)
    };
    let fleet = Fleet::start(&cluster, Pool::new(&[1, 1, 1]));
    let logs = everything(&cluster, &fleet);
    let _logs = LogsOnPanic(&logs);
    let (s, server) = (0, cluster.imap_server(0));
    let on_s: Vec<usize> = (0..60).filter(|n| expected[*n] == s).collect();
    assert!(on_s.len() >= 3, "too few users on member 0: {expected:?}");
    let (kept, new, later) = (
        cluster_user(on_s[0]),
        cluster_user(on_s[1]),
        cluster_user(on_s[2]),
    );

    let (mut open, on) = imap_session(&cluster, fleet.at(0).ports.imap, &kept);
    assert_eq!(on, s);
    let out = fleet.cli(1, &["backend", "down", &server]);
    assert!(out.status.success(), "{}", said(&out));
    wait_backends(
        &fleet,
        &server,
        "admin",
        "down",
        Duration::from_secs(2),
        &logs,
    );
    for i in 0..2 {
        assert_eq!(fleet.backend(i, &server).unwrap()["health"], "up");
    }
    let table = String::from_utf8_lossy(&fleet.cli(0, &["backends"]).stdout).into_owned();
    let row = table
        .lines()
        .find(|l| l.contains(&server))
        .unwrap_or_default();
    assert!(row.contains("down"), "{table}");

    open.send_line("n NOOP");
    let noop = open.read_until_tagged("n");
    assert!(noop.last().unwrap().starts_with("n OK"), "{noop:?}");
    let (second, on) = imap_session(&cluster, fleet.at(1).ports.imap, &kept);
    assert_eq!(
        on, s,
        "{kept}, with a session open on {server}, was sent elsewhere"
    );
    let (newcomer, on) = imap_session(&cluster, fleet.at(0).ports.imap, &new);
    assert_ne!(on, s, "{new}, new, was let on {server} while it is down");
    for c in [second, newcomer, open] {
        imap_logout(c);
    }

    // Unknown servers are refused.
    let admin = fleet.at(0).ports.admin;
    let (status, body) = admin::http(admin, "POST", "/backends/down?server=127.0.0.99:1", "");
    assert_eq!(status, 404, "{body}");
    let out = fleet.cli(0, &["backend", "down", "127.0.0.99:1"]);
    assert!(!out.status.success(), "{}", said(&out));

    let out = fleet.cli(0, &["backend", "up", &server]);
    assert!(out.status.success(), "{}", said(&out));
    wait_backends(
        &fleet,
        &server,
        "admin",
        "up",
        Duration::from_secs(2),
        &logs,
    );
    let (client, on) = imap_session(&cluster, fleet.at(1).ports.imap, &later);
    imap_logout(client);
    assert_eq!(on, s, "{later}, new, not on {server} once it is up again");
}

/// (5b) `portcullis backend down S --kick` with 20 sessions open on S (through both
/// instances): the sessions end spread over `kick_spread_ms` (2 s: the first and the last end
/// at least 1 s apart, all within the spread and some slack); both instances show S "down"
/// under ADMIN and no sessions on it; those users' next logins go elsewhere.
#[test]
fn backend_down_with_kick_drains_the_server_spread_over_time() {
    let cluster = Cluster::start(3);
    let fleet = Fleet::start(&cluster, Pool::new(&[1, 1, 1]));
    let logs = everything(&cluster, &fleet);
    let _logs = LogsOnPanic(&logs);
    let (s, server) = (0, cluster.imap_server(0));
    let spread = Duration::from_millis(fleet.pool.kick_spread_ms);

    let placed = place_users(&cluster, &fleet, 0..120, 6);
    let on_s: Vec<usize> = (0..120).filter(|n| placed[*n] == s).take(20).collect();
    assert_eq!(
        on_s.len(),
        20,
        "fewer than 20 of 120 users on member 0: {placed:?}"
    );
    let sessions: Vec<Client> = on_s
        .iter()
        .map(|n| {
            let (c, on) = imap_session(&cluster, fleet.at(n % 2).ports.imap, &cluster_user(*n));
            assert_eq!(on, s, "user{n} is no longer on {server}");
            c
        })
        .collect();
    wait_for("20 sessions on S in /backends", READ_TIMEOUT, &logs, || {
        let open: u64 = (0..2)
            .filter_map(|i| fleet.backend(i, &server)?["sessions"].as_u64())
            .sum();
        (open == 20).then_some(())
    });

    let until = Instant::now() + spread + Duration::from_secs(5);
    let (kicked, ends) = std::thread::scope(|scope| {
        let watchers: Vec<_> = sessions
            .into_iter()
            .map(|c| scope.spawn(move || closed_by(c, until)))
            .collect();
        let kicked = Instant::now();
        let out = fleet.cli(0, &["backend", "down", &server, "--kick"]);
        assert!(out.status.success(), "{}", said(&out));
        let ends: Vec<Option<Instant>> = watchers.into_iter().map(|w| w.join().unwrap()).collect();
        (kicked, ends)
    });
    let ends: Vec<Duration> = ends
        .iter()
        .map(|e| {
            e.expect("a kicked session still open")
                .duration_since(kicked)
        })
        .collect();
    let (first, last) = (ends.iter().min().unwrap(), ends.iter().max().unwrap());
    assert!(
        *last - *first >= spread / 2,
        "the 20 sessions ended between {first:?} and {last:?}: not spread over {spread:?}"
    );
    wait_backends(
        &fleet,
        &server,
        "admin",
        "down",
        Duration::from_secs(2),
        &logs,
    );
    wait_for("no sessions on S in /backends", READ_TIMEOUT, &logs, || {
        (0..2)
            .all(|i| {
                fleet
                    .backend(i, &server)
                    .is_some_and(|b| b["sessions"] == 0)
            })
            .then_some(())
    });
    for n in &on_s {
        let (c, on) = imap_session(&cluster, fleet.at(1 - n % 2).ports.imap, &cluster_user(*n));
        imap_logout(c);
        assert_ne!(on, s, "user{n} back on the drained server");
    }
}

/// (6) `portcullis move USER S` (given to the instance that does not hold the user's session):
/// the user's open session ends, and its next login lands on S through either instance. The
/// same through `POST /move`; an unknown server is a 404.
#[test]
fn move_ends_the_users_session_and_its_next_login_lands_on_the_new_server() {
    let cluster = Cluster::start(3);
    let fleet = Fleet::start(&cluster, Pool::new(&[1, 1, 1]));
    let logs = everything(&cluster, &fleet);
    let _logs = LogsOnPanic(&logs);
    let user = cluster_user(7);

    let (open, was) = imap_session(&cluster, fleet.at(0).ports.imap, &user);
    let to = (was + 1) % 3;
    let out = fleet.cli(1, &["move", &user, &cluster.imap_server(to)]);
    assert!(out.status.success(), "{}", said(&out));
    let until = Instant::now() + READ_TIMEOUT;
    assert!(
        closed_by(open, until).is_some(),
        "{user}'s session was not ended"
    );
    for i in [0, 1] {
        let (c, on) = imap_session(&cluster, fleet.at(i).ports.imap, &user);
        imap_logout(c);
        assert_eq!(on, to, "{user} not on its new server through instance {i}");
    }

    let admin = fleet.at(0).ports.admin;
    let back = format!("/move?user={user}&server={}", cluster.imap_server(was));
    let (status, body) = admin::http(admin, "POST", &back, "");
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer["ok"], true, "{body}");
    // Asked of an instance's endpoint: that instance sends the user there at once.
    let (c, on) = imap_session(&cluster, fleet.at(0).ports.imap, &user);
    imap_logout(c);
    assert_eq!(on, was, "{user} not moved back through POST /move");

    let unknown = format!("/move?user={user}&server=127.0.0.99:1");
    assert_eq!(admin::http(admin, "POST", &unknown, "").0, 404);
    let out = fleet.cli(0, &["move", &user, "127.0.0.99:1"]);
    assert!(!out.status.success(), "{}", said(&out));
}

/// (7a) IMAP caps across both instances: with `max_sessions_per_user = 3` the fourth session
/// (wherever the others are) gets `NO [LIMIT]`, and `portcullis_sessions_over_cap_total
/// {protocol="imap",limit="user"}` counts it; a wrong password at the cap is still a wrong
/// password; once one session ends a new one gets in. With `max_sessions_per_user_address = 2`
/// a user's third session from one address gets `NO [LIMIT]` (limit="user_address").
#[test]
fn imap_session_caps_hold_across_both_instances() {
    let cluster = Cluster::start(3);
    let mut pool = Pool::new(&[1, 1, 1]);
    pool.max_sessions_per_user = 3;
    pool.max_sessions_per_user_address = 2;
    let fleet = Fleet::start(&cluster, pool);
    let logs = everything(&cluster, &fleet);
    let _logs = LogsOnPanic(&logs);
    let port = |i: usize| fleet.at(i).ports.imap;
    let user = cluster_user(5);

    // Three from three addresses, through both instances.
    let mut open: Vec<Client> = [(0, "127.0.0.21"), (1, "127.0.0.22"), (0, "127.0.0.23")]
        .iter()
        .map(|(i, source)| {
            let (c, answer) = imap_try_login(port(*i), source, &user, CLUSTER_PASSWORD);
            assert!(answer.starts_with("a OK"), "{source}: {answer}");
            c
        })
        .collect();
    let (_, answer) = imap_try_login(port(1), "127.0.0.24", &user, CLUSTER_PASSWORD);
    assert!(
        answer.starts_with("a NO [LIMIT]"),
        "a fourth session: {answer}"
    );
    let (_, answer) = imap_try_login(port(0), "127.0.0.24", &user, "wrong");
    assert!(
        answer.starts_with("a NO") && !answer.contains("[LIMIT]"),
        "a wrong password at the cap: {answer}"
    );
    let over = |i: usize, limit: &str| {
        let limit = format!("limit=\"{limit}\"");
        metric(
            &fleet.metrics(i),
            "portcullis_sessions_over_cap_total",
            &["protocol=\"imap\"", &limit],
        )
        .unwrap_or(0.0)
    };
    assert!(over(1, "user") >= 1.0, "{}", fleet.metrics(1));

    imap_logout(open.remove(0));
    let _fourth = wait_for("a session once one ended", READ_TIMEOUT, &logs, || {
        let (c, answer) = imap_try_login(port(1), "127.0.0.25", &user, CLUSTER_PASSWORD);
        answer.starts_with("a OK").then_some(c)
    });

    // Per user and address: all from 127.0.0.1.
    let other = cluster_user(6);
    let _two: Vec<Client> = [0, 1]
        .iter()
        .map(|i| imap_session(&cluster, port(*i), &other).0)
        .collect();
    let (_, answer) = imap_try_login(port(0), "127.0.0.1", &other, CLUSTER_PASSWORD);
    assert!(
        answer.starts_with("a NO [LIMIT]"),
        "a third from one address: {answer}"
    );
    assert!(over(0, "user_address") >= 1.0, "{}", fleet.metrics(0));
}

/// (7b) POP3 caps: the fourth POP3 session of a user, through either instance, gets
/// `-ERR [IN-USE]`; the caps count each protocol apart, so the same user's IMAP login still
/// gets in; once a POP3 session ends a new one does too.
#[test]
fn pop3_session_caps_hold_across_both_instances_and_count_apart_from_imap() {
    let cluster = Cluster::start(3);
    let mut pool = Pool::new(&[1, 1, 1]);
    pool.max_sessions_per_user = 3;
    pool.pop3 = true;
    let fleet = Fleet::start(&cluster, pool);
    let logs = everything(&cluster, &fleet);
    let _logs = LogsOnPanic(&logs);
    let pop3 = |i: usize| fleet.at(i).ports.pop3.expect("a POP3 listener");
    let user = cluster_user(8);

    let mut open: Vec<Client> = [(0, "127.0.0.41"), (1, "127.0.0.42"), (1, "127.0.0.43")]
        .iter()
        .map(|(i, source)| {
            let (c, answer) = pop3_try_login(pop3(*i), source, &user, CLUSTER_PASSWORD);
            assert!(answer.starts_with("+OK"), "{source}: {answer}");
            c
        })
        .collect();
    let (_, answer) = pop3_try_login(pop3(0), "127.0.0.44", &user, CLUSTER_PASSWORD);
    assert!(
        answer.starts_with("-ERR [IN-USE]"),
        "a fourth session: {answer}"
    );
    let (_, answer) = pop3_try_login(pop3(1), "127.0.0.44", &user, "wrong");
    assert!(
        answer.starts_with("-ERR") && !answer.contains("[IN-USE]"),
        "a wrong password at the cap: {answer}"
    );
    let (imap, answer) = imap_try_login(
        fleet.at(0).ports.imap,
        "127.0.0.45",
        &user,
        CLUSTER_PASSWORD,
    );
    assert!(
        answer.starts_with("a OK"),
        "IMAP counted with POP3: {answer}"
    );
    imap_logout(imap);

    let mut first = open.remove(0);
    first.send_line("QUIT");
    first.expect_line("+OK");
    let _again = wait_for("a POP3 session once one ended", READ_TIMEOUT, &logs, || {
        let (c, answer) = pop3_try_login(pop3(0), "127.0.0.46", &user, CLUSTER_PASSWORD);
        answer.starts_with("+OK").then_some(c)
    });
}

/// (7c) An instance killed with SIGKILL while it holds sessions: its sessions count against the
/// cap for at most `session_ttl_ms` (1 s) and some slack, then the other instance lets new
/// sessions in, up to the cap again (the survivor's own session still counts).
#[test]
fn after_an_instance_is_killed_its_sessions_stop_counting() {
    let cluster = Cluster::start(3);
    let mut pool = Pool::new(&[1, 1, 1]);
    pool.max_sessions_per_user = 3;
    pool.session_ttl_ms = Some(1_000);
    let mut fleet = Fleet::start(&cluster, pool);
    let logs = everything(&cluster, &fleet);
    let _logs = LogsOnPanic(&logs);
    let (survivor, doomed) = (fleet.at(0).ports.imap, fleet.at(1).ports.imap);
    let user = cluster_user(9);
    let login = |port: u16, source: &str| imap_try_login(port, source, &user, CLUSTER_PASSWORD);

    let mut open = Vec::new();
    for (port, source) in [
        (doomed, "127.0.0.31"),
        (doomed, "127.0.0.32"),
        (survivor, "127.0.0.33"),
    ] {
        let (c, answer) = login(port, source);
        assert!(answer.starts_with("a OK"), "{source}: {answer}");
        open.push(c);
    }
    let (_, answer) = login(survivor, "127.0.0.34");
    assert!(
        answer.starts_with("a NO [LIMIT]"),
        "a fourth session: {answer}"
    );

    fleet.kill(1);
    let killed = Instant::now();
    let ttl = Duration::from_millis(1_000);
    let within = ttl + Duration::from_secs(4);
    // Each of the killed instance's sessions expires on its own: one opened after the last
    // renewal before the kill lasts up to a third of the ttl longer than one renewed then.
    let new_session = |what: &str, source: &str| {
        wait_for(what, within.saturating_sub(killed.elapsed()), &logs, || {
            let (c, answer) = login(survivor, source);
            answer.starts_with("a OK").then_some(c)
        })
    };
    let first = new_session(
        "a new session once one of the killed instance's expired",
        "127.0.0.35",
    );
    let second = new_session("a second once both of them expired", "127.0.0.36");
    let (_, answer) = login(survivor, "127.0.0.37");
    assert!(
        answer.starts_with("a NO [LIMIT]"),
        "the cap is gone rather than recounted: {answer}"
    );
    drop((first, second, open));
}

/// (8) The store down and up again: while redis is gone each instance goes on with its own view
/// (logins work through both, a user still lands on one server), and each says once in its log
/// that the store is unreachable; the admin's word cannot be given meanwhile: `portcullis move`
/// fails (non-zero exit; the endpoint answers 503 "the fleet store did not answer") and
/// nothing moves. Once redis is back, a `move USER S` through one instance holds through the
/// other at the user's next login: S, not the server the hashing (and that instance's own
/// memory of the user) would give.
#[test]
fn with_the_store_down_the_instances_go_on_and_share_again_once_it_is_back() {
    let cluster = Cluster::start(3);
    let redis = Redis::start_anywhere();
    let store_port = redis.port;
    let mut pool = Pool::new(&[1, 1, 1]);
    pool.store = format!("redis://127.0.0.1:{store_port}");
    let fleet = Fleet::start(&cluster, pool);
    let logs = everything(&cluster, &fleet);
    let _logs = LogsOnPanic(&logs);
    let port = |i: usize| fleet.at(i).ports.imap;
    let on = |i: usize, user: &str| {
        let (c, on) = imap_session(&cluster, port(i), user);
        imap_logout(c);
        on
    };

    // Shared: a move through instance 0 is seen through instance 1.
    let first = cluster_user(10);
    let to = (on(0, &first) + 1) % 3;
    let out = fleet.cli(0, &["move", &first, &cluster.imap_server(to)]);
    assert!(out.status.success(), "{}", said(&out));
    assert_eq!(
        on(1, &first),
        to,
        "{first} moved, not seen through instance 1"
    );

    drop(redis);
    for n in 20..26 {
        let user = cluster_user(n);
        let (a, on_a) = imap_session(&cluster, port(0), &user);
        let (b, on_b) = imap_session(&cluster, port(1), &user);
        assert_eq!(on_a, on_b, "{user} on two servers with the store down");
        imap_logout(a);
        imap_logout(b);
    }
    let unreachable = |line: &str| {
        let line = line.to_lowercase();
        line.contains("store")
            && [
                "unreachable",
                "unavailable",
                "cannot reach",
                "not reachable",
            ]
            .iter()
            .any(|w| line.contains(w))
    };
    for i in 0..2 {
        let log = fleet.at(i).proxy.log.clone();
        wait_for(
            &format!("portcullis #{i} saying the store is unreachable"),
            READ_TIMEOUT,
            &logs,
            || read_lossy(&log).lines().any(unreachable).then_some(()),
        );
        let said = fleet.at(i).proxy.log_text();
        let times = said.lines().filter(|l| unreachable(l)).count();
        assert_eq!(times, 1, "portcullis #{i} said it {times} times");
    }

    // No move while the store is down: refused, and nothing moved.
    let user = cluster_user(11);
    let was = on(1, &user);
    let target = cluster.imap_server((was + 1) % 3);
    let out = fleet.cli(0, &["move", &user, &target]);
    assert!(
        !out.status.success(),
        "a move with the store down: {}",
        said(&out)
    );
    let query = format!("/move?user={user}&server={target}");
    let (status, body) = admin::http(fleet.at(0).ports.admin, "POST", &query, "");
    assert_eq!(status, 503, "POST {query} with the store down: {body}");
    assert!(body.contains("the fleet store did not answer"), "{body}");
    for i in 0..2 {
        assert_eq!(on(i, &user), was, "{user} moved by a refused move");
    }

    // Back: a move through instance 0 holds through instance 1, whose own memory (and the
    // hashing) says `was`.
    let _redis = Redis::start(store_port);
    for i in 0..2 {
        wait_log_line(&fleet, i, &["Fleet store", "answers again"], &logs);
    }
    let out = fleet.cli(0, &["move", &user, &target]);
    assert!(
        out.status.success(),
        "a move with the store back: {}",
        said(&out)
    );
    assert_eq!(
        on(1, &user),
        (was + 1) % 3,
        "{user}, moved to {target} through instance 0, not there through instance 1"
    );
}

/// Every row of instance `i`'s `/backends` for `servers` has `field` = `want`.
fn all_rows(fleet: &Fleet, i: usize, servers: &[String], field: &str, want: &str) -> bool {
    let rows = fleet.backends(i);
    servers.iter().all(|s| {
        rows.iter()
            .any(|b| b["server"] == s.as_str() && b[field] == want)
    })
}

/// (9a) A reload of one instance that keeps its pool's settings but changes how its listener
/// reaches the servers (`[listener.backend] tls = "starttls"`, trusting only a CA that did
/// not sign the Dovecots' certificate): the pool's checks go through the new listener. Before
/// the reload the admin sees every server "up" in that instance's `/backends` (checked by
/// then); within `down_within()` after it, every server "down" there, and its log says
/// "pool server HOST:PORT is down" for each; logins through it are told to try later
/// (`NO [UNAVAILABLE]`), never that the password is wrong. The other instance, not
/// reloaded, still has them all up.
#[test]
fn a_reload_that_changes_the_listener_takes_the_health_checks_with_it() {
    let cluster = Cluster::start(3);
    let mut fleet = Fleet::start(&cluster, Pool::new(&[1, 1, 1]));
    let logs = everything(&cluster, &fleet);
    let _logs = LogsOnPanic(&logs);
    let servers: Vec<String> = (0..3).map(|m| cluster.imap_server(m)).collect();
    let user = cluster_user(3);

    // Checked, and up: each member saw several checks of both instances.
    wait_for("checks on every member", READ_TIMEOUT, &logs, || {
        (0..3)
            .all(|m| cluster.unauthenticated(m, None) >= 8)
            .then_some(())
    });
    assert!(
        all_rows(&fleet, 0, &servers, "health", "up"),
        "{:?}",
        fleet.backends(0)
    );
    let downs = |text: &str| {
        text.lines()
            .filter(|l| l.contains("pool server") && l.contains("is down"))
            .count()
    };
    assert_eq!(
        downs(&fleet.at(0).proxy.log_text()),
        0,
        "a server down already"
    );
    let (c, _) = imap_session(&cluster, fleet.at(0).ports.imap, &user);
    imap_logout(c);

    let mut pool = fleet.pool.clone();
    pool.backend = format!(
        "tls = \"starttls\"\nca_file = \"{}\"\n",
        certs().other_ca.display()
    );
    let out = fleet.reload(0, &cluster, pool);
    assert!(out.status.success(), "{}", said(&out));
    wait_for(
        "every server down in the reloaded instance's /backends",
        fleet.pool.down_within(),
        &logs,
        || all_rows(&fleet, 0, &servers, "health", "down").then_some(()),
    );
    for server in &servers {
        wait_log_line(&fleet, 0, &["pool server", server, "is down"], &logs);
    }
    let (_, answer) = imap_try_login(fleet.at(0).ports.imap, "127.0.0.1", &user, CLUSTER_PASSWORD);
    assert!(
        answer.starts_with("a NO [UNAVAILABLE]"),
        "a login with every server down: {answer}"
    );
    assert!(
        all_rows(&fleet, 1, &servers, "health", "up"),
        "the instance not reloaded: {:?}",
        fleet.backends(1)
    );
    assert_eq!(downs(&fleet.at(1).proxy.log_text()), 0);
}

/// (9b) Reloads that change the pool's own settings (`sticky_ms`, three times) replace the
/// pool each time, and the replaced pool's checks stop: member 0 is checked by that instance
/// as often after them as before (one set of checks, not one more per reload), and still
/// checked; `/backends` has every server up. The instance's checks are told apart in
/// Dovecot's log by their source address (`[listener.backend] source`): connections that
/// never tried to log in.
#[test]
fn reloads_that_replace_the_pool_leave_one_set_of_health_checks() {
    const SOURCE: &str = "127.0.0.51";
    let cluster = Cluster::start(3);
    let mut pool = Pool::new(&[1, 1, 1]);
    pool.backend = format!("source = [\"{SOURCE}\"]\n");
    let other = Pool {
        backend: String::new(),
        ..pool.clone()
    };
    let mut fleet = Fleet::start_each(&cluster, vec![pool, other]);
    let logs = everything(&cluster, &fleet);
    let _logs = LogsOnPanic(&logs);
    let servers: Vec<String> = (0..3).map(|m| cluster.imap_server(m)).collect();
    let window = Duration::from_secs(4);
    let expected = window.as_millis() / u128::from(fleet.pool.health_interval_ms);
    let checks = || cluster.unauthenticated(0, Some(SOURCE));
    // Checks of member 0 from the instance in `window` (a rate: there is nothing to wait
    // for but the time itself).
    let rate = || {
        let from = checks();
        std::thread::sleep(window);
        checks() - from
    };

    wait_for("the first checks", READ_TIMEOUT, &logs, || {
        (checks() > 0).then_some(())
    });
    let before = rate();
    assert!(
        before as u128 >= expected / 2,
        "{before} checks in {window:?}, not about {expected}"
    );
    for n in 1..=3 {
        let mut pool = fleet.pool.clone();
        pool.sticky_ms += 1;
        let out = fleet.reload(0, &cluster, pool);
        assert!(out.status.success(), "reload {n}: {}", said(&out));
    }
    let after = rate();
    assert!(
        after * 2 <= before * 3,
        "{after} checks in {window:?} after three reloads, {before} before: the replaced pools' \
         checks go on"
    );
    assert!(
        after * 2 >= before,
        "{after} checks in {window:?} after three reloads, {before} before"
    );
    assert!(
        all_rows(&fleet, 0, &servers, "health", "up"),
        "{:?}",
        fleet.backends(0)
    );
}

/// (10) Two views during a rolling change: instance A has servers 0-2, instance B 0-3 (the
/// same store and prefix). A user whose place through B is member 3, with a session open
/// there through B: its logins through A, which does not know member 3, are told to try
/// later (`NO [UNAVAILABLE]`), never placed on 0-2 beside that session, and the session
/// through B goes on, on member 3. Once it has ended (LOGOUT), A's login gets in, on one of
/// 0-2.
#[test]
fn a_user_held_on_a_server_another_instance_does_not_know_waits_for_it() {
    let cluster = Cluster::start(4);
    let wide = Pool::new(&[1, 1, 1, 1]);
    let narrow = Pool {
        weights: vec![1, 1, 1, 0],
        ..wide.clone()
    };
    let fleet = Fleet::start_each(&cluster, vec![narrow, wide]);
    let logs = everything(&cluster, &fleet);
    let _logs = LogsOnPanic(&logs);
    let (a, b) = (fleet.at(0).ports.imap, fleet.at(1).ports.imap);

    // The first user whose place through B is member 3 keeps that session open.
    let (user, mut held) = (0..40)
        .find_map(|n| {
            let user = cluster_user(n);
            let (c, on) = imap_session(&cluster, b, &user);
            if on == 3 {
                return Some((user, c));
            }
            imap_logout(c);
            None
        })
        .expect("none of 40 users placed on member 3 through B");

    for attempt in 0..3 {
        let (_, answer) = imap_try_login(a, "127.0.0.1", &user, CLUSTER_PASSWORD);
        assert!(
            answer.starts_with("a NO [UNAVAILABLE]"),
            "{user}, with a session on member 3 through B, through A (attempt {attempt}): \
             {answer}"
        );
    }
    assert_eq!(
        served_by(&cluster, &mut held),
        3,
        "{user}'s session through B"
    );

    imap_logout(held);
    let (client, on) = wait_for(
        "A's login once the session through B has ended",
        READ_TIMEOUT,
        &logs,
        || {
            let (mut c, answer) = imap_try_login(a, "127.0.0.1", &user, CLUSTER_PASSWORD);
            if !answer.starts_with("a OK") {
                return None;
            }
            let on = served_by(&cluster, &mut c);
            Some((c, on))
        },
    );
    imap_logout(client);
    assert!(on < 3, "{user} through A on member {on}");
}
