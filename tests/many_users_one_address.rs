//! Many users behind one address (a carrier's NAT, an office): 200 users who logged in before
//! log in again at once through real Dovecot while some mistype and an attacker at the same
//! address guesses another user's password. Every right password gets in, none is delayed or
//! refused for the others' failures, the logged-in sessions outnumber the per-address
//! connection cap, and the attacker is held and banned as before.

mod support;

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;

use support::*;

const NAT: &str = "127.0.0.50";
const USERS: usize = 200;
const WAVE: usize = 50;

fn add_users(dc: &Dovecot) {
    let mut passwd = OpenOptions::new()
        .append(true)
        .open(dc.dir.join("passwd"))
        .unwrap();
    for n in 0..USERS {
        writeln!(passwd, "user{n}:{{PLAIN}}pw{n}::::::").unwrap();
    }
}

fn client(port: u16) -> Client {
    let mut c = Client::from_stream(connect_from(NAT, port).expect("connect from the NAT"));
    c.expect_line("* OK");
    c
}

/// Log in as `user{n}`, mistyping first when `mistype`; the client's port and the answers.
fn log_in(port: u16, n: usize, mistype: bool) -> (Client, u16, Vec<String>) {
    let mut c = client(port);
    let client_port = c.local_addr().port();
    let mut answers = Vec::new();
    if mistype {
        c.send_line(&format!("w LOGIN user{n} typo{n}"));
        answers.push(c.read_until_tagged("w").pop().unwrap());
    }
    c.send_line(&format!("a LOGIN user{n} pw{n}"));
    answers.push(c.read_until_tagged("a").pop().unwrap());
    (c, client_port, answers)
}

/// The attacker guesses `victim`'s password from the NAT until it is turned away; the
/// answers it got.
fn attack(port: u16) -> Vec<String> {
    let mut answers = Vec::new();
    for guess in 0..30 {
        let Ok(stream) = connect_from(NAT, port) else {
            break;
        };
        let mut c = Client::from_stream(stream);
        let greeting = c.read_line();
        if !greeting.starts_with("* OK") {
            answers.push(greeting);
            break;
        }
        c.send_line(&format!("g LOGIN victim guess{guess}"));
        // A tagged answer, or the ban's BYE instead of one.
        let answer = c.read_line();
        answers.push(answer.clone());
        if !answer.starts_with("g ") {
            break;
        }
        c.send_line("z LOGOUT");
    }
    answers
}

#[test]
fn users_behind_one_address_are_not_held_back_by_each_others_failures() {
    let dc = Dovecot::start();
    add_users(&dc);
    let port = free_port();
    let toml = format!(
        "[log]\ndestination = \"-\"\n\n[guard]\npenalty_initial_ms = 500\npenalty_max_ms = 1000\n\
         ban_after = 5\nban_ms = 60000\n\n\
         [[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{port}\"]\n\
         [listener.backend]\nhost = \"127.0.0.1\"\nport = {}\n",
        dc.imap
    );
    let proxy = Proxy::start_toml(&toml, &[port]);
    // Each user logs in once from the NAT: known good there from now on.
    for n in 0..USERS {
        let (mut c, _, answers) = log_in(port, n, false);
        assert!(answers[0].starts_with("a OK"), "user{n}: {answers:?}");
        c.send_line("z LOGOUT");
    }
    let attacker = thread::spawn(move || attack(port));
    // Back again, 50 at a time, each wave all at once; every 20th mistypes first. The
    // sessions stay open: 200 logged in from one address, twice the per-address cap.
    let open = Arc::new(Mutex::new(Vec::new()));
    for wave in 0..USERS / WAVE {
        let barrier = Arc::new(Barrier::new(WAVE));
        let threads: Vec<_> = (wave * WAVE..(wave + 1) * WAVE)
            .map(|n| {
                let (barrier, open) = (barrier.clone(), open.clone());
                thread::spawn(move || {
                    barrier.wait();
                    let (c, client_port, answers) = log_in(port, n, n % 20 == 0);
                    open.lock().unwrap().push((n, c, client_port, answers));
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
    let mut open = std::mem::take(&mut *open.lock().unwrap());
    let log = proxy.log_text();
    for (n, c, client_port, answers) in &mut open {
        let right = answers.last().unwrap();
        assert!(
            right.starts_with("a OK"),
            "user{n}: {answers:?}\nlog:\n{log}"
        );
        if *n % 20 == 0 {
            assert!(answers[0].starts_with("w NO"), "user{n}: {answers:?}");
        } else {
            // Never slowed nor refused for the others' failures.
            let own = format!("{NAT}:{client_port}->");
            let held = log
                .lines()
                .find(|l| l.contains("Guard:") && l.contains(&own));
            assert!(
                held.is_none(),
                "user{n} was held back: {held:?}\nlog:\n{log}"
            );
        }
        c.send_line("n NOOP");
        let noop = c.read_until_tagged("n").pop().unwrap();
        assert!(noop.starts_with("n OK"), "user{n}'s session: {noop}");
    }
    assert_eq!(open.len(), USERS);
    // The attacker: held back, then banned, as before.
    let answers = attacker.join().unwrap();
    // Guesses the back end judged; "too many at once" refusals were never tried.
    let refused = answers
        .iter()
        .filter(|a| a.starts_with("g NO [AUTHENTICATIONFAILED]"))
        .count();
    assert!(refused <= 5, "{refused} guesses answered: {answers:?}");
    assert!(
        answers.last().unwrap().contains("Too many failed logins"),
        "the attacker was not banned: {answers:?}\nlog:\n{}",
        proxy.log_text()
    );
    assert!(
        proxy
            .log_text()
            .contains("banned for 60 s after 5 failed logins"),
        "{}",
        proxy.log_text()
    );
}
