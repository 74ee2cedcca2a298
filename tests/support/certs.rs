//! Test PKI made with the `openssl` CLI: a throw-away CA and server certificates.

use super::*;

/// Test PKI made with the `openssl` CLI (P-256 keys, valid ten years).
pub struct Certs {
    /// Directory holding all files below.
    pub dir: PathBuf,
    /// CA certificate (PEM) that signed `cert`.
    pub ca: PathBuf,
    /// Server certificate (PEM), CN=localhost, SAN DNS:localhost, IP:127.0.0.1, IP:::1.
    pub cert: PathBuf,
    /// Private key of `cert` (PEM, PKCS#8, mode 0644).
    pub key: PathBuf,
    /// An unrelated CA certificate (PEM) that did not sign `cert` (negative verification tests).
    pub other_ca: PathBuf,
}

/// The test PKI, created once and shared (also between test processes: it lives in
/// `CARGO_TARGET_TMPDIR/portcullis-test-certs-v1`, published with an atomic rename).
pub fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(make_certs)
}

fn certs_in(dir: &Path) -> Certs {
    Certs {
        dir: dir.to_path_buf(),
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        other_ca: dir.join("other-ca.pem"),
    }
}

fn make_certs() -> Certs {
    let base = option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    fs::create_dir_all(&base).expect("create cert base dir");
    let final_dir = base.join("portcullis-test-certs-v1");
    if final_dir.join("complete").exists() {
        return certs_in(&final_dir);
    }
    let tmp = base.join(format!("portcullis-test-certs-v1.tmp-{}", unique_suffix()));
    fs::create_dir_all(&tmp).expect("create cert tmp dir");
    generate_certs(&tmp);
    fs::write(tmp.join("complete"), b"ok\n").expect("write marker");
    if fs::rename(&tmp, &final_dir).is_err() {
        // Another process won the race (or a stale dir exists).
        let _ = fs::remove_dir_all(&tmp);
        if !final_dir.join("complete").exists() {
            let _ = fs::remove_dir_all(&final_dir);
            return make_certs();
        }
    }
    let _ = fs::set_permissions(&final_dir, fs::Permissions::from_mode(0o755));
    certs_in(&final_dir)
}

fn openssl(dir: &Path, args: &[&str]) {
    run_checked(Command::new("openssl").current_dir(dir).args(args));
}

fn generate_certs(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for (name, cn) in [
        ("ca", "Portcullis Test CA"),
        ("other-ca", "Unrelated Test CA"),
    ] {
        let keyout = format!("{name}.key");
        let out = format!("{name}.pem");
        let subj = format!("/CN={cn}");
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend([
            "-keyout",
            &keyout,
            "-out",
            &out,
            "-days",
            "3650",
            "-subj",
            &subj,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir, &args);
    }
    let mut args = vec!["req", "-new"];
    args.extend(ec);
    args.extend([
        "-keyout",
        "key.pem",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &args);
    fs::write(
        dir.join("server.ext"),
        "basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\n\
         subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\n",
    )
    .expect("write server.ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "3650",
            "-extfile",
            "server.ext",
        ],
    );
    // Readable by unprivileged daemons (Dovecot's config process, a demo user, ...).
    for f in ["ca.pem", "other-ca.pem", "cert.pem", "key.pem"] {
        fs::set_permissions(dir.join(f), fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod dir");
}

/// A certificate from the test CA (`certs()`) for `localhost` with subject `cn`, in `dir`:
/// (cert, key).
pub fn issued_by_the_test_ca(dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
    let ca = certs();
    let (cert, key, csr, ext) = (
        dir.join("issued.pem"),
        dir.join("issued.key"),
        dir.join("issued.csr"),
        dir.join("issued.ext"),
    );
    std::fs::write(&ext, "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
    let subject = format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            csr.to_str().unwrap(),
            "-subj",
            &subject,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            csr.to_str().unwrap(),
            "-CA",
            ca.ca.to_str().unwrap(),
            "-CAkey",
            ca.dir.join("ca.key").to_str().unwrap(),
            "-set_serial",
            "4242",
            "-days",
            "30",
            "-extfile",
            ext.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ],
    );
    (cert, key)
}
