//! SMTP submission back ends that misbehave: one that never greets, one that answers EHLO with
//! garbage, one that hangs up on AUTH, one that answers AUTH "try later". No real server does
//! these on demand, so each is a few lines of `std::net` here, on a port the kernel picks. The
//! client is told `454 4.7.0` (try later) every time, never `535` (wrong password), within the
//! configured `backend_login_timeout`, and the guard counts none of it.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

/// The proxy's `[limits] backend_login_timeout`, in seconds: a back end that says nothing is
/// given up on after this.
const LOGIN_TIMEOUT_SECS: u64 = 1;

/// What the proxy answers an AUTH when the back end fails it.
const TRY_LATER: &str = "454 4.7.0 Temporary authentication failure, try again later\n";

/// How a fake back end misbehaves; otherwise it greets and lists AUTH in its EHLO answer.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// Accepts the connection and never says a word.
    NeverGreets,
    /// Greets, then answers EHLO with something that is no SMTP reply.
    GarbageToEhlo,
    /// Greets, answers EHLO, and closes the connection on AUTH.
    DropsOnAuth,
    /// Greets, answers EHLO, and answers AUTH with this line.
    AnswersAuth(&'static str),
}

/// A fake SMTP back end on 127.0.0.1, serving every connection with its [`Behaviour`] on a
/// thread of its own; it records the lines it was sent.
struct FakeBackend {
    port: u16,
    heard: Arc<Mutex<Vec<String>>>,
}

impl FakeBackend {
    fn start(behaviour: Behaviour) -> FakeBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let heard: Arc<Mutex<Vec<String>>> = Arc::default();
        let record = Arc::clone(&heard);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let record = Arc::clone(&record);
                std::thread::spawn(move || serve(stream, behaviour, &record));
            }
        });
        FakeBackend { port, heard }
    }

    /// What it was sent, for a failure message.
    fn log(&self) -> String {
        format!(
            "fake back end on {} heard: {:?}",
            self.port,
            self.heard.lock().unwrap()
        )
    }
}

fn serve(stream: TcpStream, behaviour: Behaviour, heard: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut say = |text: &str| {
        let _ = writer.write_all(format!("{text}\r\n").as_bytes());
    };
    if !matches!(behaviour, Behaviour::NeverGreets) {
        say("220 fake.portcullis.test ESMTP");
    }
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        heard.lock().unwrap().push(line.trim_end().to_string());
        let verb = line.split_whitespace().next().unwrap_or_default();
        match (behaviour, verb.to_ascii_uppercase().as_str()) {
            (Behaviour::NeverGreets, _) => {}
            (Behaviour::GarbageToEhlo, "EHLO") => say("HTTP/1.1 400 Bad Request"),
            (_, "EHLO") => {
                say("250-fake.portcullis.test\r\n250-PIPELINING\r\n250 AUTH PLAIN LOGIN")
            }
            (Behaviour::DropsOnAuth, "AUTH") => return,
            (Behaviour::AnswersAuth(answer), "AUTH") => say(answer),
            (_, "QUIT") => return say("221 2.0.0 Bye"),
            _ => say("502 5.5.2 Not here"),
        }
    }
}

/// Portcullis with one plaintext submission listener per back end (in that order), `tables`
/// added to its configuration; the listeners' ports.
fn proxy(backends: &[&FakeBackend], tables: &str) -> (Proxy, Vec<u16>) {
    let ports: Vec<u16> = backends.iter().map(|_| free_port()).collect();
    let mut toml = format!(
        "[log]\ndestination = \"-\"\n\n[limits]\nbackend_login_timeout = {LOGIN_TIMEOUT_SECS}\n\n\
         {tables}\n"
    );
    for (port, backend) in ports.iter().zip(backends) {
        // The extensions are configured: nothing is learned from the fake at start-up.
        toml += &listener_toml(
            "submission",
            *port,
            "none",
            &format!("host = \"127.0.0.1\", port = {}", backend.port),
        );
        toml += "capability = \"PIPELINING\"\n";
    }
    (Proxy::start_toml(&toml, &ports), ports)
}

/// One AUTH PLAIN as alice from `source` (a 127.0.0.x address) on `port`.
struct Tried {
    /// The proxy's answer.
    answer: String,
    /// How long it took.
    took: Duration,
    /// The client's address, as the proxy's log lines name it.
    client: std::net::SocketAddr,
}

fn auth_from(source: &str, port: u16, password: &str, logs: &dyn Fn() -> String) -> Tried {
    let mut c = Client::from_stream(connect_from(source, port).unwrap());
    let greeting = smtp_reply(&mut c);
    assert_eq!(greeting.code, 220, "{}{}", greeting.text(), logs());
    let ehlo = smtp_command(&mut c, &format!("EHLO {CLIENT_HELO}"));
    assert_eq!(ehlo.code, 250, "{}{}", ehlo.text(), logs());
    let started = Instant::now();
    let answer = smtp_command(&mut c, &auth_plain_line("alice", password)).text();
    Tried {
        answer,
        took: started.elapsed(),
        client: c.local_addr(),
    }
}

/// The line of the proxy's log that starts, after the syslog prefix, with `start`; panics with
/// every log after [`READ_TIMEOUT`].
fn logged(proxy: &Proxy, start: &str, logs: &dyn Fn() -> String) -> String {
    let needle = format!("]: {start}");
    assert!(
        proxy.wait_log(&needle, READ_TIMEOUT),
        "no {needle:?} in the proxy's log:\n{}",
        logs()
    );
    let log = proxy.log_text();
    let line = log.lines().find(|l| l.contains(&needle)).unwrap();
    line.split_once(&needle).unwrap().1.to_string()
}

/// The status of the Auth line for `tried`'s client.
fn auth_status(proxy: &Proxy, tried: &Tried, logs: &dyn Fn() -> String) -> String {
    let line = logged(proxy, &format!("Auth: {}->", tried.client), logs);
    line.split_once(" status=").unwrap().1.to_string()
}

/// What the proxy logged about `backend` for `tried`'s client: why the login failed there.
fn backend_said(
    proxy: &Proxy,
    backend: &FakeBackend,
    tried: &Tried,
    logs: &dyn Fn() -> String,
) -> String {
    let start = format!("back end 127.0.0.1:{} for {}: ", backend.port, tried.client);
    logged(proxy, &start, logs)
}

/// The Auth line's status for a back end that failed the login (not the password).
const NEGOTIATION_FAILED: &str = "\"failed: Connection Negotiation Failure\"";

/// A back end that accepts and never greets: the client's AUTH is answered `454 4.7.0` once
/// `backend_login_timeout` (1 s) has passed, not the default 30 s; the Auth line says the
/// login failed at the back end, and the proxy's diagnostic says why.
#[test]
fn a_back_end_that_never_greets_is_given_up_on_at_the_login_timeout() {
    let silent = FakeBackend::start(Behaviour::NeverGreets);
    let (proxy, ports) = proxy(&[&silent], "");
    let logs = || format!("{}\n{}", proxy.everything_logged(), silent.log());
    let _logs_on_panic = LogsOnPanic(&logs);
    let tried = auth_from("127.0.0.1", ports[0], "alicepw", &logs);
    assert_eq!(tried.answer, TRY_LATER, "{}", logs());
    // Answered because the timeout ended, not earlier; the upper bound only tells a hang
    // from an answer (a loaded machine may take a few seconds more).
    let timeout = Duration::from_secs(LOGIN_TIMEOUT_SECS);
    assert!(
        tried.took >= timeout - Duration::from_millis(100) && tried.took < timeout * 15,
        "answered after {:?}, the timeout being {timeout:?}\n{}",
        tried.took,
        logs()
    );
    assert_eq!(
        auth_status(&proxy, &tried, &logs),
        NEGOTIATION_FAILED,
        "{}",
        logs()
    );
    assert_eq!(
        backend_said(&proxy, &silent, &tried, &logs),
        "timed out after 1 s waiting for the login answer",
        "{}",
        logs()
    );
}

/// A back end that answers EHLO with garbage, and one that hangs up when it gets the AUTH: both
/// "try later" (454), never a wrong password (535); the proxy says what went wrong.
#[test]
fn garbage_to_ehlo_and_a_hang_up_on_auth_are_try_later() {
    let garbage = FakeBackend::start(Behaviour::GarbageToEhlo);
    let hangs_up = FakeBackend::start(Behaviour::DropsOnAuth);
    let (proxy, ports) = proxy(&[&garbage, &hangs_up], "");
    let logs = || {
        format!(
            "{}\n{}\n{}",
            proxy.everything_logged(),
            garbage.log(),
            hangs_up.log()
        )
    };
    let _logs_on_panic = LogsOnPanic(&logs);
    let tried = auth_from("127.0.0.2", ports[0], "alicepw", &logs);
    assert_eq!(tried.answer, TRY_LATER, "garbage to EHLO\n{}", logs());
    assert_eq!(
        auth_status(&proxy, &tried, &logs),
        NEGOTIATION_FAILED,
        "{}",
        logs()
    );
    assert_eq!(
        backend_said(&proxy, &garbage, &tried, &logs),
        "not an SMTP reply: HTTP/1.1 400 Bad Request",
        "{}",
        logs()
    );

    let tried = auth_from("127.0.0.3", ports[1], "alicepw", &logs);
    assert_eq!(tried.answer, TRY_LATER, "a hang-up on AUTH\n{}", logs());
    assert!(
        hangs_up.log().contains("AUTH PLAIN "),
        "the AUTH never reached the back end\n{}",
        logs()
    );
    assert_eq!(
        auth_status(&proxy, &tried, &logs),
        NEGOTIATION_FAILED,
        "{}",
        logs()
    );
    assert_eq!(
        backend_said(&proxy, &hangs_up, &tried, &logs),
        "connection closed by server",
        "{}",
        logs()
    );
}

/// A back end answering AUTH `454 4.7.0 Temporary authentication failure` (Postfix when
/// Dovecot's auth is down): the client gets 454, and the guard (a ban after 2 failures) counts
/// none of it: four tries from one address are each answered 454, no Guard line names it, it
/// is greeted still. A back end answering 535 to the same tries gets its client banned after
/// two. The Auth lines tell the two apart.
#[test]
fn a_back_ends_454_is_try_later_and_no_failure_for_the_guard() {
    let later = FakeBackend::start(Behaviour::AnswersAuth(
        "454 4.7.0 Temporary authentication failure",
    ));
    let wrong = FakeBackend::start(Behaviour::AnswersAuth(
        "535 5.7.8 Error: authentication failed: authentication failure",
    ));
    let guard = "[guard]\npenalty_initial_ms = 50\npenalty_max_ms = 100\nban_after = 2\n\
                 ban_ms = 60000\n";
    let (proxy, ports) = proxy(&[&later, &wrong], guard);
    let logs = || {
        format!(
            "{}\n{}\n{}",
            proxy.everything_logged(),
            later.log(),
            wrong.log()
        )
    };
    let _logs_on_panic = LogsOnPanic(&logs);
    for attempt in 0..4 {
        let tried = auth_from("127.0.0.4", ports[0], &format!("guess{attempt}"), &logs);
        assert_eq!(tried.answer, TRY_LATER, "attempt {attempt}\n{}", logs());
        assert_eq!(
            auth_status(&proxy, &tried, &logs),
            NEGOTIATION_FAILED,
            "{}",
            logs()
        );
        assert_eq!(
            backend_said(&proxy, &later, &tried, &logs),
            "server said: 454 4.7.0 Temporary authentication failure",
            "{}",
            logs()
        );
    }
    for attempt in 0..2 {
        let tried = auth_from("127.0.0.5", ports[1], &format!("guess{attempt}"), &logs);
        assert_eq!(
            tried.answer,
            "535 5.7.8 Authentication credentials invalid\n",
            "attempt {attempt}\n{}",
            logs()
        );
        assert_eq!(
            auth_status(&proxy, &tried, &logs),
            "\"failed: Re-Authentication Failure\"",
            "{}",
            logs()
        );
    }
    logged(&proxy, "Guard: 127.0.0.5:", &|| {
        format!("a ban after 2 wrong passwords\n{}", logs())
    });
    let mut banned = Client::from_stream(connect_from("127.0.0.5", ports[1]).unwrap());
    assert_eq!(
        banned.read_line(),
        "421 4.7.0 Too many failed logins, try again later",
        "{}",
        logs()
    );
    let mut greeted = Client::from_stream(connect_from("127.0.0.4", ports[0]).unwrap());
    assert_eq!(smtp_reply(&mut greeted).code, 220, "{}", logs());
    assert!(
        !proxy.log_text().contains("Guard: 127.0.0.4:"),
        "the guard counted a 454:\n{}",
        logs()
    );
}

/// Behind a load balancer: a PROXY header names the client, whose address the Auth line
/// then carries; and a client that does not log in within `login_timeout` is told
/// `421 4.4.2` and let go, as on the other protocols.
#[test]
fn a_proxy_header_names_the_client_and_the_login_timeout_ends_a_silent_one() {
    let refusing = FakeBackend::start(Behaviour::AnswersAuth("535 5.7.8 No"));
    let port = free_port();
    let toml = format!(
        "[log]\ndestination = \"-\"\n\n[limits]\nlogin_timeout = 1\n\n\
         [[listener]]\nprotocol = \"submission\"\nbind = [\"127.0.0.1:{port}\"]\n\
         proxy_protocol = true\nproxy_trusted = [\"127.0.0.0/8\"]\n\
         capability = \"PIPELINING\"\n\
         [listener.backend]\nhost = \"127.0.0.1\"\nport = {}\n",
        refusing.port
    );
    let proxy = Proxy::start_toml(&toml, &[port]);
    let logs = || format!("{}\n{}", proxy.everything_logged(), refusing.log());
    let _logs_on_panic = LogsOnPanic(&logs);

    let mut c = Client::plain(port);
    c.send(b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 587\r\n");
    assert_eq!(smtp_reply(&mut c).code, 220, "{}", logs());
    smtp_expect(&mut c, &format!("EHLO {CLIENT_HELO}"), 250);
    let refused = smtp_command(&mut c, &auth_plain_line("alice", "wrong"));
    assert_eq!(refused.code, 535, "{}{}", refused.text(), logs());
    assert!(
        proxy.wait_log("Auth: 192.0.2.7:51000->", Duration::from_secs(10)),
        "the Auth line does not name the balancer's client:\n{}",
        logs()
    );

    let mut silent = Client::plain(port);
    silent.send(b"PROXY TCP4 192.0.2.8 198.51.100.1 51001 587\r\n");
    assert_eq!(smtp_reply(&mut silent).code, 220, "{}", logs());
    let farewell = silent.try_read_line(Duration::from_secs(10));
    assert_eq!(
        farewell.as_deref().map(str::trim_end),
        Some("421 4.4.2 Timeout exceeded"),
        "{}",
        logs()
    );
}
