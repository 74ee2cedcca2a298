//! What `check` says of ACME, read from `state_dir` alone: the domains, each certificate's
//! expiry and renewal point, whether there is an account (never its key), the last error.

use crate::config::{AcmeConfig, KeyType};

use super::state::StateDir;

/// `check`'s lines about `[acme]`.
pub fn report(config: &AcmeConfig) -> Vec<String> {
    let Some(dir) = &config.state_dir else {
        return Vec::new();
    };
    let state = StateDir::new(dir);
    let domains = config.domain_names();
    let mut lines = vec![
        format!("acme: directory {}", config.directory),
        format!(
            "acme: domains {} (challenge {}, state in {})",
            domains.join(", "),
            challenge_name(config),
            dir.display()
        ),
        if state.has_account() {
            "acme: account: present".to_string()
        } else {
            "acme: account: none yet (made with the first order)".to_string()
        },
    ];
    let now = super::now();
    for key_type in config.key_types() {
        lines.push(certificate_line(&state, key_type, &domains, now));
    }
    lines.push(match state.last_error() {
        Some(error) => format!("acme: last error at {}: {}", date(error.at), error.text),
        None => "acme: last error: none since the last certificate obtained".to_string(),
    });
    lines
}

fn challenge_name(config: &AcmeConfig) -> &'static str {
    match config.challenge {
        crate::config::AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
        crate::config::AcmeChallenge::Http01 => "http-01",
    }
}

fn certificate_line(state: &StateDir, key_type: KeyType, domains: &[String], now: i64) -> String {
    let name = key_type.name();
    let Some(c) = state.certificate(key_type) else {
        return format!("acme: {name} certificate: none yet (ordered at start)");
    };
    let days_left = (c.not_after - now).max(0) / 86_400;
    let mut line = format!(
        "acme: {name} certificate for {}: expires {} ({days_left} days left), renewal {}",
        c.names.join(", "),
        date(c.not_after),
        date(c.renewal_time()),
    );
    if !c.covers(domains) {
        line.push_str("; not for every configured domain: ordered anew at start");
    } else if c.renewal_time() <= now {
        line.push_str("; due now");
    }
    line
}

/// A Unix time as `2027-03-01 12:00:00 UTC`.
pub fn date(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0).map_or_else(
        || unix.to_string(),
        |d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}
