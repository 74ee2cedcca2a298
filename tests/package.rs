//! The Debian package (`cargo deb`), as `scripts/test.sh` builds and installs it: the binary, the
//! manual, the units, the configuration file and the system user are in place, and the service,
//! started as its unit says (its command lines, its user), serves a login.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

const UNIT: &str = "/usr/lib/systemd/system/portcullis.service";

fn installed() {
    assert!(
        std::path::Path::new("/usr/bin/portcullis").exists(),
        "the package is not installed: scripts/test.sh builds it (cargo deb) and installs it"
    );
}

fn output(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_package_installs_the_binary_manual_units_configuration_and_user() {
    installed();
    let version = output("/usr/bin/portcullis", &["--version"]);
    assert_eq!(
        version.trim(),
        format!("portcullis {}", env!("CARGO_PKG_VERSION"))
    );
    assert!(output("man", &["-w", "portcullis"]).contains("man8/portcullis.8"));
    assert!(output("getent", &["passwd", "portcullis"]).starts_with("portcullis:"));
    let conffiles = output("dpkg-query", &["-W", "-f=${Conffiles}", "portcullis"]);
    assert!(
        conffiles.contains("/etc/portcullis/portcullis.toml"),
        "{conffiles}"
    );
    for file in [
        UNIT,
        "/usr/lib/systemd/system/portcullis.socket",
        "/usr/share/doc/portcullis/examples/fail2ban/jail.d/portcullis.conf",
        "/usr/share/doc/portcullis/README.md",
    ] {
        assert!(std::path::Path::new(file).exists(), "{file} missing");
    }
    let unit = std::fs::read_to_string(UNIT).unwrap();
    assert!(
        unit.contains("Type=notify") && unit.contains("User=portcullis"),
        "{unit}"
    );
}

/// The unit's own command lines, run as its user, with a configuration in front of a test
/// Dovecot in place of /etc/portcullis/portcullis.toml.
#[test]
fn the_packaged_service_started_as_its_unit_says_serves_a_login() {
    installed();
    let dc = Dovecot::start();
    let port = free_port();
    let dir = tempfile::Builder::new()
        .prefix("portcullis-pkg-")
        .tempdir()
        .unwrap();
    let _ = Command::new("chmod").arg("755").arg(dir.path()).status();
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "[log]\ndestination = \"+\"\n\n[[listener]]\nprotocol = \"imap\"\n\
             bind = [\"127.0.0.1:{port}\"]\n[listener.backend]\nhost = \"127.0.0.1\"\nport = {}\n",
            dc.imap
        ),
    )
    .unwrap();
    let _ = Command::new("chmod").arg("644").arg(&config).status();
    let unit = std::fs::read_to_string(UNIT).unwrap();
    let setting = |name: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name}= not in the unit"))
            .replace("/etc/portcullis/portcullis.toml", config.to_str().unwrap())
    };
    let user = setting("User");
    let account = nix::unistd::User::from_name(&user)
        .unwrap()
        .expect("the unit's user");
    // As the unit's user directly: a wrapper (runuser) killed at the end would orphan the
    // service it started.
    let as_user = |line: &str| {
        use std::os::unix::process::CommandExt;
        let mut words = line.split_whitespace();
        let mut command = Command::new(words.next().unwrap());
        command
            .args(words)
            .uid(account.uid.as_raw())
            .gid(account.gid.as_raw());
        command
    };
    let check = as_user(&setting("ExecStartPre")).output().unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mut service = as_user(&setting("ExecStart"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let served = wait_for_port(port, Duration::from_secs(10)).then(|| {
        let mut c = Client::plain(port);
        c.expect_line("* OK");
        imap_login(&mut c, "a", "alice", "alicepw");
    });
    let _ = service.kill();
    let _ = service.wait();
    // And whatever else runs on this test's configuration (the service must not outlive it).
    let _ = Command::new("pkill")
        .args(["-KILL", "-f", config.to_str().unwrap()])
        .status();
    assert!(served.is_some(), "the service did not listen on {port}");
}
