//! Several certificates on one listener: chosen by the name the client asks for (SNI, exact and
//! wildcard), with the first as the default; for one name an ECDSA and an RSA pair, the ECDSA one
//! for clients that take it and the RSA one for the others. Checked with OpenSSL's own client.
//! A certificate about to expire is named by `check`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::*;

/// A CA in `dir`, and a certificate from it for `names` with an `ec` (P-256) or RSA-2048 key,
/// valid `days`; the (cert, key) files.
fn issue(dir: &Path, file: &str, names: &[&str], ec: bool, days: u32) -> (PathBuf, PathBuf) {
    let ca_key = dir.join("ca.key");
    let ca = dir.join("ca.pem");
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    if !ca.exists() {
        run(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "30",
            "-subj",
            "/CN=SNI CA",
        ]);
    }
    let key = dir.join(format!("{file}.key"));
    let cert = dir.join(format!("{file}.pem"));
    let key_kind: Vec<&str> = if ec {
        vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    } else {
        vec!["-newkey", "rsa:2048"]
    };
    let csr = format!("{file}.csr");
    let mut req = vec!["req", "-new", "-nodes", "-keyout"];
    let key_name = format!("{file}.key");
    let subject = format!("/CN={}", names[0]);
    req.extend([
        key_name.as_str(),
        "-out",
        csr.as_str(),
        "-subj",
        subject.as_str(),
    ]);
    req.extend(key_kind);
    run(&req);
    let ext = dir.join(format!("{file}.ext"));
    let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    std::fs::write(&ext, format!("subjectAltName={}\n", san.join(","))).unwrap();
    let days = days.to_string();
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        ca.to_str().unwrap(),
        "-CAkey",
        ca_key.to_str().unwrap(),
        "-CAcreateserial",
        "-out",
        cert.to_str().unwrap(),
        "-days",
        &days,
        "-extfile",
        ext.to_str().unwrap(),
    ]);
    (cert, key)
}

/// What OpenSSL's client sees when it asks `port` for `name` (none: no SNI), offering only
/// `sigalgs` when given: the certificate's subject line and the server key's size line.
fn presented(port: u16, name: Option<&str>, sigalgs: Option<&str>) -> String {
    let mut args = vec![
        "s_client".to_string(),
        "-connect".into(),
        format!("127.0.0.1:{port}"),
        "-tls1_3".into(),
    ];
    match name {
        Some(n) => args.extend(["-servername".into(), n.to_string()]),
        None => args.push("-noservername".into()),
    }
    if let Some(s) = sigalgs {
        args.extend(["-sigalgs".into(), s.to_string()]);
    }
    let out = Command::new("openssl")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .filter(|l| l.starts_with("subject=") || l.starts_with("Server public key is"))
        .collect::<Vec<_>>()
        .join(" | ")
}

#[test]
fn the_certificate_follows_the_name_and_the_clients_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let default = issue(d, "default", &["imap.example.com"], true, 30);
    let rsa = issue(d, "org-rsa", &["mail.example.org"], false, 30);
    let ecdsa = issue(d, "org-ec", &["mail.example.org"], true, 30);
    let wildcard = issue(d, "net", &["*.example.net"], true, 30);
    let dc = Dovecot::start();
    let port = free_port();
    let pair = |(c, k): &(PathBuf, PathBuf)| {
        format!(
            "{{ cert = \"{}\", key = \"{}\" }}",
            c.display(),
            k.display()
        )
    };
    let toml = format!(
        "[log]\ndestination = \"-\"\n\n[[listener]]\nprotocol = \"imap\"\n\
         bind = [\"127.0.0.1:{port}\"]\ntls = \"implicit\"\ncert = \"{}\"\nkey = \"{}\"\n\
         certificates = [{}, {}, {}]\n[listener.backend]\nhost = \"127.0.0.1\"\nport = {}\n",
        default.0.display(),
        default.1.display(),
        pair(&rsa),
        pair(&ecdsa),
        pair(&wildcard),
        dc.imap
    );
    let _proxy = Proxy::start_toml(&toml, &[port]);

    let seen = presented(port, Some("mail.example.org"), None);
    assert!(seen.contains("CN = mail.example.org"), "{seen}");
    assert!(
        seen.contains("256 bit"),
        "an ECDSA-capable client got {seen}"
    );
    let seen = presented(
        port,
        Some("MAIL.example.org"),
        Some("rsa_pss_rsae_sha256:rsa_pss_rsae_sha384"),
    );
    assert!(seen.contains("CN = mail.example.org"), "{seen}");
    assert!(seen.contains("2048 bit"), "an RSA-only client got {seen}");
    let seen = presented(port, Some("imap.example.net"), None);
    assert!(seen.contains("CN = *.example.net"), "{seen}");
    // A wildcard covers one label only; unknown names and no name get the default.
    for name in [Some("a.b.example.net"), Some("elsewhere.test"), None] {
        let seen = presented(port, name, None);
        assert!(seen.contains("CN = imap.example.com"), "{name:?}: {seen}");
    }
}

#[test]
fn check_names_a_certificate_about_to_expire() {
    let dir = tempfile::tempdir().unwrap();
    let soon = issue(dir.path(), "soon", &["soon.example.org"], true, 3);
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{}\"]\ntls = \"implicit\"\n\
             cert = \"{}\"\nkey = \"{}\"\n[listener.backend]\nhost = \"127.0.0.1\"\n",
            free_port(),
            soon.0.display(),
            soon.1.display()
        ),
    )
    .unwrap();
    let out = run_portcullis(&["check", "--config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("(soon.example.org) expires in 2 days")
            || stderr.contains("(soon.example.org) expires in 3 days"),
        "{stderr}"
    );
}
