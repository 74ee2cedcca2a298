//! TLS configuration for both directions, built once per listener from PEM files.
//!
//! rustls with the aws-lc-rs provider (ring with `--no-default-features`): no OpenSSL, TLS 1.2
//! and 1.3 only. Perdition's `ssl_dh_params_file` has no meaning here (rustls has no
//! finite-field DH) and is ignored with a warning by the configuration reader.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::certificates::{read_certs, CertificateLoadError, CertificateSet};
use crate::config::{CertificateFlaw, TlsVersion};

mod obtained;
pub mod server_stream;
mod shared_tickets;
mod tolerant;

pub use obtained::{ObtainedCertificates, ACME_TLS_ALPN};
pub use shared_tickets::TicketKeyError;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// Where Debian keeps the system's trusted CAs; used when no `ca_file` is configured.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[cfg(not(feature = "aws-lc-rs"))]
use rustls::crypto::ring as crypto;

#[cfg(feature = "aws-lc-rs")]
use rustls::crypto::aws_lc_rs as crypto;

/// The process's crypto provider (the ACME task loads its keys with it too).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(crypto::default_provider())
}

/// Libraries that build their own TLS configuration (the LDAP and SQL clients) ask rustls for
/// the process's provider, and with both ring and aws-lc-rs compiled in rustls will not pick
/// one itself: ours, for the whole process, before anything else runs.
pub fn install_default_provider() {
    let _ = crypto::default_provider().install_default();
}

/// Why a TLS configuration could not be built (start, reload, `check`).
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A certificate, key or CA file.
    #[error(transparent)]
    Certificates(#[from] CertificateLoadError),
    #[error(transparent)]
    TicketKeys(#[from] TicketKeyError),
    #[error("cannot read {}: {source}", path.display())]
    UnreadableDirectory {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The CA files and directories, by name.
    #[error("{0}: no usable CA certificate")]
    NoUsableCa(String),
    /// The configured versions, as rustls refuses them.
    #[error(transparent)]
    Versions(rustls::Error),
    #[error("TLS session tickets: {0}")]
    Tickets(#[source] rustls::Error),
    /// The verifier that forgives certificate flaws.
    #[error(transparent)]
    Verifier(#[from] rustls::client::VerifierBuilderError),
}

/// A listener's TLS configuration, the certificates it serves, warnings for the log.
pub type ServerTls = (Arc<ServerConfig>, Arc<CertificateSet>, Vec<String>);

/// The server side, for implicit TLS and STARTTLS listeners: certificate/key pairs, the first
/// the default, one chosen per handshake by the name the client asks for and the signatures
/// it takes ([`crate::certificates`]); `chain` holds intermediates for the first pair whose
/// file has its certificate alone. Also the certificates served (the metrics read them) and
/// the warnings (a certificate expiring soon, a ticket key file others may read) for the log.
///
/// `alpn` is the listener's protocol id (RFC 7301): a client that names protocols but not this
/// one is refused at the handshake, so that a TLS connection meant for another service cannot
/// be redirected here (the ALPACA attack). Clients that name none are served as before.
pub fn server_config(
    pairs: &[(&Path, &Path)],
    chain: Option<&Path>,
    alpn: &[u8],
    versions: &[TlsVersion],
    ticket_keys: Option<&Path>,
) -> Result<ServerTls, TlsSetupError> {
    let provider = provider();
    let (certificates, mut warnings) = CertificateSet::load(pairs, chain, &provider)?;
    let certificates = Arc::new(certificates);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&protocol_versions(versions))
        .map_err(TlsSetupError::Versions)?
        .with_no_client_auth()
        .with_cert_resolver(certificates.clone());
    config.alpn_protocols = vec![alpn.to_vec()];
    let fingerprint = pairs_fingerprint(pairs);
    warnings.extend(set_resumption(&mut config, &fingerprint, ticket_keys)?);
    Ok((Arc::new(config), certificates, warnings))
}

/// [`server_config`] for a listener whose certificates ACME obtains: they come from
/// `obtained`, replaced while the listener runs. Besides the listener's protocol it names
/// `acme-tls/1`, which the resolver answers only for a domain being validated.
pub fn obtained_server_config(
    obtained: Arc<ObtainedCertificates>,
    alpn: &[u8],
    versions: &[TlsVersion],
    ticket_keys: Option<&Path>,
) -> Result<(Arc<ServerConfig>, Vec<String>), TlsSetupError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&protocol_versions(versions))
        .map_err(TlsSetupError::Versions)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(obtained::ObtainedResolver(obtained)));
    // Ours first: a client that offers both is a mail client.
    config.alpn_protocols = vec![alpn.to_vec(), ACME_TLS_ALPN.to_vec()];
    // One resumption set for whatever ACME serves: renewed, it is for the same names.
    let warnings = set_resumption(&mut config, "acme", ticket_keys)?;
    Ok((Arc::new(config), warnings))
}

/// Session resumption for the certificate set `certificates` names, with the fleet's
/// `ticket_keys` when given; the warnings are the ticket key file's.
fn set_resumption(
    config: &mut ServerConfig,
    certificates: &str,
    ticket_keys: Option<&Path>,
) -> Result<Vec<String>, TlsSetupError> {
    let (ticketer, cache) = resumption(certificates)?;
    let mut warnings = Vec::new();
    config.ticketer = match ticket_keys {
        // Read anew by every reload: a rotation is a new key put first, then a reload.
        Some(path) => {
            let (tickets, lax) =
                shared_tickets::SharedTickets::load(path, certificates.as_bytes())?;
            warnings.extend(lax);
            Arc::new(tickets)
        }
        None => ticketer,
    };
    config.session_storage = cache;
    Ok(warnings)
}

/// What resumes a client's session: the ticket maker and the session-id cache.
type Resumption = (
    Arc<dyn rustls::server::ProducesTickets>,
    Arc<dyn rustls::server::StoresServerSessions>,
);

/// Sessions remembered for clients that resume by id (TLS 1.2 without tickets); each entry is
/// a few hundred bytes.
const RESUMPTION_CACHE: usize = 20_000;

/// Session resumption: stateless tickets (TLS 1.3 and 1.2; a resumed handshake costs a
/// fraction of a full one) under keys that rotate every six hours, and a cache for clients
/// that resume by session id. One set per certificate set, made once per process: the
/// listeners that serve the same certificates take each other's tickets, a reload keeps them
/// valid, and a session proven with one certificate never resumes where another is served.
fn resumption(certificates: &str) -> Result<Resumption, TlsSetupError> {
    static MADE: std::sync::Mutex<Vec<(String, Resumption)>> = std::sync::Mutex::new(Vec::new());
    let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, resumption)) = made.iter().find(|(key, _)| key == certificates) {
        return Ok(resumption.clone());
    }
    let ticketer = crypto::Ticketer::new().map_err(TlsSetupError::Tickets)?;
    let cache: Arc<dyn rustls::server::StoresServerSessions> =
        rustls::server::ServerSessionMemoryCache::new(RESUMPTION_CACHE);
    made.push((certificates.to_string(), (ticketer.clone(), cache.clone())));
    Ok((ticketer, cache))
}

/// What identifies a certificate set: a SHA-256 of the certificates' own bytes (the same
/// files renewed are another set; the same set on two listeners, or on two instances of a
/// fleet, is one).
fn pairs_fingerprint(pairs: &[(&Path, &Path)]) -> String {
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    for (cert, _) in pairs {
        let bytes = fs::read(cert).unwrap_or_default();
        digest.update(&(bytes.len() as u64).to_be_bytes());
        digest.update(&bytes);
    }
    hex::encode(digest.finish())
}

/// rustls' versions for the configured ones; all it has when none are named.
fn protocol_versions(versions: &[TlsVersion]) -> Vec<&'static rustls::SupportedProtocolVersion> {
    let all = [
        (TlsVersion::Tls13, &rustls::version::TLS13),
        (TlsVersion::Tls12, &rustls::version::TLS12),
    ];
    all.iter()
        .filter(|(v, _)| versions.is_empty() || versions.contains(v))
        .map(|(_, version)| *version)
        .collect()
}

/// How the proxy checks a back end's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendVerification {
    /// Check the chain against these CAs (PEM file) and the name against the host.
    CaFile(PathBuf),
    /// Check the chain against the CAs of these files and directories, and the name, except
    /// for the flaws the admin chose to forgive.
    Trust {
        ca_files: Vec<PathBuf>,
        ca_dirs: Vec<PathBuf>,
        tolerate: Vec<CertificateFlaw>,
    },
    /// Accept any certificate: the admin opted out explicitly.
    None,
}

/// The client side, used to reach a back end over TLS.
pub fn client_config(
    verification: &BackendVerification,
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    client_config_for(verification, &[])
}

/// [`client_config`] limited to `versions` (all rustls has when empty).
pub fn client_config_for(
    verification: &BackendVerification,
    versions: &[TlsVersion],
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&protocol_versions(versions))
        .map_err(TlsSetupError::Versions)?;
    let config = match verification {
        BackendVerification::CaFile(path) => builder
            .with_root_certificates(roots(std::slice::from_ref(path), &[])?)
            .with_no_client_auth(),
        BackendVerification::Trust {
            ca_files,
            ca_dirs,
            tolerate,
        } => {
            let roots = roots(ca_files, ca_dirs)?;
            if tolerate.is_empty() {
                builder.with_root_certificates(roots).with_no_client_auth()
            } else {
                let verifier = tolerant::Tolerant::new(roots, tolerate, provider)?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier))
                    .with_no_client_auth()
            }
        }
        BackendVerification::None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The trusted CAs: every certificate of `files`, and of every file in `dirs`.
fn roots(files: &[PathBuf], dirs: &[PathBuf]) -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    for path in files {
        for cert in read_certs(path)? {
            // A bundle may hold certificates rustls cannot parse; skip those, as OpenSSL does.
            let _ = roots.add(cert);
        }
    }
    for dir in dirs {
        let entries = fs::read_dir(dir).map_err(|source| TlsSetupError::UnreadableDirectory {
            path: dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            // A hashed directory also holds CRLs (`*.r0`) and whatever else was put there:
            // files that are not PEM certificates are passed over, as OpenSSL does.
            let Ok(pem) = fs::read(entry.path()) else {
                continue;
            };
            for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        let named: Vec<String> = files
            .iter()
            .chain(dirs)
            .map(|p| p.display().to_string())
            .collect();
        return Err(TlsSetupError::NoUsableCa(named.join(", ")));
    }
    Ok(roots)
}

pub use crate::value::server_name::{server_name, InvalidServerName};

/// Verifier for `verify = false`: signatures are still checked, the certificate is not.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Turn a TLS I/O error into the short reason shown in logs.
pub fn describe(e: &io::Error) -> String {
    match e.get_ref() {
        Some(inner) => inner.to_string(),
        None => e.to_string(),
    }
}
