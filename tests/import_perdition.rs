//! `portcullis import perdition`: what Perdition mode reads from a configuration directory
//! (and Debian's defaults file) written in the native format, which `check` accepts and which
//! serves as `portcullis perdition` would.

mod support;

use std::path::Path;

use support::*;

/// `portcullis import perdition ARGS` with Perdition's `/` at `root`: (success, out, err).
fn import(root: &Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(portcullis_bin())
        .args(["import", "perdition"])
        .args(args)
        .env(PERDITION_ROOT_ENV, root)
        .output()
        .expect("run portcullis");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_directory_and_debians_defaults_are_written_as_the_native_configuration() {
    require_dovecot();
    let dc = Dovecot::start();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("srv/perdition");
    std::fs::create_dir_all(&dir).unwrap();
    let (imap, pop3) = (free_port(), free_port());
    std::fs::write(
        dir.join("perdition.imap4.conf"),
        format!(
            "bind_address 127.0.0.1\nlisten_port {imap}\noutgoing_server 127.0.0.1:{}\n\
             log_facility -\nssl_mode none\n",
            dc.imap
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("perdition.pop3.conf"),
        format!(
            "bind_address 127.0.0.1\nlisten_port {pop3}\noutgoing_server 127.0.0.1:{}\n\
             log_facility -\nssl_mode none\n",
            dc.pop3
        ),
    )
    .unwrap();
    // Without a defaults file: plain `perdition`, whose file for POP3 is perdition.pop3.conf.
    let (ok, toml, stderr) = import(root.path(), &[dir.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(toml.starts_with("# Imported from"), "{toml}");
    assert_eq!(toml.matches("[[listener]]").count(), 1, "{toml}");
    assert_config_checked(root.path(), &toml);

    // Debian's defaults enabling IMAP4 and POP3: both, from one process.
    let defaults = root.path().join("default-perdition");
    std::fs::write(
        &defaults,
        "RUN_PERDITION=yes\nPOP3=yes\nPOP3S=no\nIMAP4=yes\nIMAP4S=no\nMANAGESIEVE=no\n",
    )
    .unwrap();
    let args = [
        dir.to_str().unwrap(),
        "--defaults",
        defaults.to_str().unwrap(),
    ];
    let (ok, toml, stderr) = import(root.path(), &args);
    assert!(ok, "{stderr}");
    assert_eq!(toml.matches("[[listener]]").count(), 2, "{toml}");
    assert_config_checked(root.path(), &toml);
    // It serves as Perdition mode does: alice logs in through both.
    let proxy = Proxy::start_toml(&toml, &[imap, pop3]);
    let mut c = Client::plain(imap);
    c.expect_line("* OK");
    imap_login(&mut c, "a", "alice", "alicepw");
    let mut c = Client::plain(pop3);
    c.expect_line("+OK");
    c.send_line("USER bob");
    c.expect_line("+OK");
    c.send_line("PASS bobpw");
    c.expect_line("+OK");
    assert!(
        dc.wait_log("Login: user=<bob>", READ_TIMEOUT) && dc.saw_login("alice"),
        "{}\n{}",
        proxy.log_text(),
        dc.log_text()
    );

    // A defaults file that is not there is named.
    let (ok, _, stderr) = import(root.path(), &["--defaults", "/nonexistent/defaults"]);
    assert!(!ok && stderr.contains("/nonexistent/defaults"), "{stderr}");
}
