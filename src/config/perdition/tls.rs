//! Perdition's TLS options: `ssl_mode`, the protocol versions, the certificate leniencies and
//! the CA directory.

use std::path::PathBuf;

use super::super::{BackendTls, CertificateFlaw, ListenerTls, TlsVersion};
use super::error::PerditionError;
use super::options::{Given, PerditionOption};
use super::system_path;

/// The client leg's and the back end's TLS. `ssl_mode` is a comma-separated list; without
/// it, POP3S and IMAP4S (`implicit`) mean `ssl_all`, as in Perdition: TLS on both legs.
pub fn ssl_mode(
    implicit: bool,
    modes: Option<&str>,
) -> Result<(ListenerTls, BackendTls), PerditionError> {
    let Some(modes) = modes else {
        return Ok(if implicit {
            (ListenerTls::Implicit, BackendTls::Implicit)
        } else {
            (ListenerTls::None, BackendTls::None)
        });
    };
    let (mut listen, mut outgoing) = (ListenerTls::None, BackendTls::None);
    for mode in modes.split(',').map(str::trim) {
        match mode {
            "none" | "" => {}
            "ssl_listen" => listen = ListenerTls::Implicit,
            "ssl_outgoing" => outgoing = BackendTls::Implicit,
            "ssl_all" => {
                listen = ListenerTls::Implicit;
                outgoing = BackendTls::Implicit;
            }
            "tls_listen" => listen = ListenerTls::Starttls,
            "tls_listen_force" => listen = ListenerTls::StarttlsRequired,
            // Portcullis never falls back to plaintext towards a back end it was told to
            // encrypt to, so the `_force` variants and the plain ones are the same.
            "tls_outgoing" | "tls_outgoing_force" => outgoing = BackendTls::Starttls,
            "tls_all" => {
                listen = ListenerTls::Starttls;
                outgoing = BackendTls::Starttls;
            }
            "tls_all_force" => {
                listen = ListenerTls::StarttlsRequired;
                outgoing = BackendTls::Starttls;
            }
            other => return Err(PerditionError::UnknownSslMode(other.to_string())),
        }
    }
    Ok((listen, outgoing))
}

/// One leg's `ssl_*_min_proto_version` and `ssl_*_max_proto_version`.
pub struct VersionOptions {
    pub min: PerditionOption,
    pub max: PerditionOption,
}

pub const LISTEN_VERSIONS: VersionOptions = VersionOptions {
    min: PerditionOption::SslListenMinProtoVersion,
    max: PerditionOption::SslListenMaxProtoVersion,
};

pub const OUTGOING_VERSIONS: VersionOptions = VersionOptions {
    min: PerditionOption::SslOutgoingMinProtoVersion,
    max: PerditionOption::SslOutgoingMaxProtoVersion,
};

/// The TLS versions left between a `min` and a `max` Perdition names (`sslv3`, `tlsv1`,
/// `tlsv1.1`, `tlsv1.2`, and `tlsv1.3` which Perdition 2.2 does not know); empty means all
/// that rustls has. Versions below 1.2 cannot be had and are said so once.
pub fn tls_versions(
    given: &Given,
    leg: VersionOptions,
    warnings: &mut Vec<String>,
) -> Result<Vec<TlsVersion>, PerditionError> {
    // Perdition's versions in order; rustls has the last two.
    const ORDER: [&str; 5] = ["sslv3", "tlsv1", "tlsv1.1", "tlsv1.2", "tlsv1.3"];
    let rank = |option: PerditionOption, value: &str| {
        ORDER
            .iter()
            .position(|v| v.eq_ignore_ascii_case(value))
            .ok_or_else(|| PerditionError::UnknownTlsVersion {
                option: option.name(),
                value: value.to_string(),
            })
    };
    let (min, max) = (given.get(leg.min), given.get(leg.max));
    let low = min.map_or(Ok(0), |v| rank(leg.min, v))?;
    let high = match max.filter(|v| !v.is_empty()) {
        Some(v) => rank(leg.max, v)?,
        None => ORDER.len() - 1,
    };
    if high < 3 {
        return Err(PerditionError::NoTlsVersionLeft {
            option: leg.max.name(),
            value: max.unwrap_or_default().to_string(),
        });
    }
    if low > high {
        return Err(PerditionError::TlsVersionsCrossed {
            min: leg.min.name(),
            max: leg.max.name(),
        });
    }
    if min.is_some() && low < 3 {
        warnings.push(format!(
            "{} {}: versions below TLS 1.2 are never used (rustls)",
            leg.min.name(),
            min.unwrap_or_default()
        ));
    }
    Ok(match (low <= 3, high == ORDER.len() - 1) {
        (true, true) => Vec::new(),
        (true, false) => vec![TlsVersion::Tls12],
        (false, true) => vec![TlsVersion::Tls13],
        (false, false) => Vec::new(),
    })
}

/// The back end's certificate flaws forgiven, by the `ssl_*_accept_*` and `ssl_no_cn_verify`
/// flags.
pub fn tolerated_flaws(given: &Given) -> Result<Vec<CertificateFlaw>, PerditionError> {
    [
        (
            PerditionOption::SslCertAcceptExpired,
            CertificateFlaw::Expired,
        ),
        (
            PerditionOption::SslCertAcceptNotYetValid,
            CertificateFlaw::NotYetValid,
        ),
        (
            PerditionOption::SslCertAcceptSelfSigned,
            CertificateFlaw::SelfSigned,
        ),
        (
            PerditionOption::SslCaAcceptSelfSigned,
            CertificateFlaw::SelfSignedCa,
        ),
        (PerditionOption::SslNoCnVerify, CertificateFlaw::Name),
    ]
    .into_iter()
    .filter_map(|(option, flaw)| {
        given
            .is_set(option)
            .map(|set| set.then_some(flaw))
            .transpose()
    })
    .collect()
}

/// `ssl_ca_path`; without it, Perdition trusts its CA directory when it exists (OpenSSL skips
/// a missing one).
pub fn ca_path(given: &Given) -> Option<PathBuf> {
    let default_ca_path = system_path("/etc/perdition/perdition.ca/");
    match given.get(PerditionOption::SslCaPath) {
        Some("") => None,
        Some(path) => Some(PathBuf::from(path)),
        None => default_ca_path.is_dir().then_some(default_ca_path),
    }
}
