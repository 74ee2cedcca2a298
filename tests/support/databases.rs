//! PostgreSQL and MariaDB for the SQL map tests: started once per run by `scripts/test.sh`
//! (`PORTCULLIS_TEST_POSTGRES`, `PORTCULLIS_TEST_MARIADB`), or by this process through the
//! same script (`databases.sh`) when they are not set. Each test makes a database of its own.

use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::unique_suffix;

/// Server URLs without a database.
pub struct Databases {
    /// `postgres://postgres@127.0.0.1:PORT`
    pub postgres: String,
    /// `mysql://portcullis:portcullispw@127.0.0.1:PORT`
    pub mariadb: String,
}

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/databases.sh");

pub fn databases() -> &'static Databases {
    static DATABASES: OnceLock<Databases> = OnceLock::new();
    DATABASES.get_or_init(|| {
        let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let (Some(postgres), Some(mariadb)) = (
            from_env("PORTCULLIS_TEST_POSTGRES"),
            from_env("PORTCULLIS_TEST_MARIADB"),
        ) {
            return Databases { postgres, mariadb };
        }
        start_private()
    })
}

fn start_private() -> Databases {
    let dir = std::env::temp_dir().join(format!("portcullis-db-{}", unique_suffix()));
    let dir = dir.display().to_string();
    let out = Command::new("bash")
        .args([SCRIPT, "start", &dir])
        .stderr(Stdio::inherit())
        .output()
        .expect("run databases.sh (install postgresql and mariadb-server)");
    assert!(out.status.success(), "databases.sh start failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("databases.sh said no {key}: {text}"))
            .to_string()
    };
    // Stopped when this test process is gone.
    let me = std::process::id();
    let _ = Command::new("sh")
        .args([
            "-c",
            &format!("while kill -0 {me} 2>/dev/null; do sleep 1; done; bash {SCRIPT} stop {dir}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    Databases {
        postgres: value("PORTCULLIS_TEST_POSTGRES="),
        mariadb: value("PORTCULLIS_TEST_MARIADB="),
    }
}

fn run(program: &str, args: &[&str], sql: &str) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} failed: {}\n{sql}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh PostgreSQL database with `setup` run in it; its URL.
pub fn postgres_database(setup: &str) -> String {
    let server = &databases().postgres;
    let name = format!("t_{}", unique_suffix().replace('-', "_"));
    let admin = format!("{server}/postgres");
    let create = format!("CREATE DATABASE {name}");
    run("psql", &["-q", &admin, "-c", &create], &create);
    let url = format!("{server}/{name}");
    run(
        "psql",
        &["-q", "-v", "ON_ERROR_STOP=1", &url, "-c", setup],
        setup,
    );
    url
}

/// A fresh MariaDB database with `setup` run in it; its URL.
pub fn mariadb_database(setup: &str) -> String {
    let server = &databases().mariadb;
    let rest = server.trim_start_matches("mysql://");
    let (credentials, address) = rest.split_once('@').expect("user@host");
    let (user, password) = credentials.split_once(':').expect("user:password");
    let (host, port) = address.split_once(':').expect("host:port");
    let name = format!("t_{}", unique_suffix().replace('-', "_"));
    let pass = format!("-p{password}");
    let base = [
        "--no-defaults",
        "-h",
        host,
        "-P",
        port,
        "-u",
        user,
        pass.as_str(),
    ];
    let create = format!("CREATE DATABASE {name}");
    run("mariadb", &[&base[..], &["-e", &create]].concat(), &create);
    run(
        "mariadb",
        &[&base[..], &[name.as_str(), "-e", setup]].concat(),
        setup,
    );
    format!("{server}/{name}")
}
