//! `scripts/demo.sh` on a machine where its default ports are taken: it picks free ones, says
//! which, and serves there.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

#[test]
fn the_demo_moves_to_free_ports_when_its_own_are_taken() {
    require_dovecot();
    // Taken, as another service would hold it (it may be held already: then so much the
    // better).
    let _taken = std::net::TcpListener::bind("127.0.0.1:9993");
    let dir = tempfile::tempdir().unwrap();
    let mut demo = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh"))
        .env("DEMO_DIR", dir.path().join("demo"))
        .env("PORTCULLIS_BIN", portcullis_bin())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("run scripts/demo.sh");
    let pgid = demo.id();
    let stop = || {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{pgid}")])
            .status();
    };
    let stdout = demo.stdout.take().unwrap();
    let mut ports = None;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(rest) = line.trim().strip_prefix("Ports: IMAPS ") {
            ports = Some(rest.to_string());
            break;
        }
    }
    let Some(ports) = ports else {
        stop();
        panic!("the demo printed no ports");
    };
    let imaps: u16 = ports.split(',').next().unwrap().trim().parse().unwrap();
    assert_ne!(imaps, 9993, "the demo took a port that was taken");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !port_open(imaps) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let ca = dir.path().join("demo/certs/ca.pem");
    let result = Client::try_tls_with(imaps, "localhost", &ca).map(|mut c| {
        c.expect_line("* OK");
        imap_login(&mut c, "a", "alice", "alicepw");
    });
    stop();
    let _ = demo.wait();
    result.expect("log in through the demo's IMAPS port");
}
