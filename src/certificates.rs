//! A listener's certificates: several certificate/key pairs, one chosen per handshake by the
//! name the client asks for (SNI: one certificate per hosted domain), and among the pairs for a
//! name by the signatures the client can check (an ECDSA pair for clients that take ECDSA, an
//! RSA one for the others: ECDSA costs a fraction of RSA's CPU per handshake). A client that
//! names nothing, or a name no certificate carries, gets the default pair(s): the first
//! configured.
//!
//! The names come from the certificates themselves (DNS subject alternative names, else the
//! common name), so the configuration lists only files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureAlgorithm;

/// A certificate expiring sooner than this is worth a warning (`check`, start, reload).
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// One pair as loaded.
struct Pair {
    key: Arc<CertifiedKey>,
    names: Vec<String>,
    /// When its certificate expires, in Unix seconds.
    not_after: i64,
}

/// One certificate a listener serves, as the metrics show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// The first name it is for (its first DNS name, else its common name; empty if none).
    pub name: String,
    /// Its key's kind: `ecdsa`, `rsa`, `ed25519`: a dual set serves one of each per name.
    pub key: &'static str,
    /// When it expires, in Unix seconds.
    pub not_after: i64,
}

/// The certificates a listener serves now. The metrics ask at every scrape and keep nothing:
/// a running listener's certificates change (a reload builds new ones, ACME renews them in
/// place), and an alert must see the one a client gets.
pub trait ServedCertificates: Send + Sync {
    fn served(&self) -> Vec<Served>;
}

#[derive(Debug)]
pub struct CertificateSet {
    /// Exact names (lower case) → the pairs that carry them, ECDSA first.
    exact: HashMap<String, Vec<Arc<CertifiedKey>>>,
    /// `*.example.org` → keyed by `example.org`.
    wildcard: HashMap<String, Vec<Arc<CertifiedKey>>>,
    /// For clients that name nothing known: the first pair, and the pairs with its names.
    default: Vec<Arc<CertifiedKey>>,
    /// Every pair, for the metrics.
    served: Vec<Served>,
}

impl CertificateSet {
    /// Load the pairs (the first is the default, and gets the intermediates of `chain` after
    /// its own certificates); warnings (a certificate expiring soon) go to the log and to
    /// `check`.
    pub fn load(
        pairs: &[(&Path, &Path)],
        chain: Option<&Path>,
        provider: &rustls::crypto::CryptoProvider,
    ) -> Result<(CertificateSet, Vec<String>), CertificateLoadError> {
        let mut loaded = Vec::new();
        let mut warnings = Vec::new();
        for (i, (cert, key)) in pairs.iter().enumerate() {
            let chain = chain.filter(|_| i == 0);
            let (pair, warning) = load_pair(cert, key, chain, provider)?;
            loaded.push(pair);
            warnings.extend(warning);
        }
        let first = loaded.first().ok_or(CertificateLoadError::NoneConfigured)?;
        // Compared as sets: the same names in another order, an RSA pair beside an ECDSA
        // one, are the same default.
        let name_set = |names: &[String]| {
            let mut set = names.to_vec();
            set.sort();
            set.dedup();
            set
        };
        let default_names = name_set(&first.names);
        let mut set = CertificateSet {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default: Vec::new(),
            served: loaded.iter().map(Pair::served).collect(),
        };
        for pair in &loaded {
            if name_set(&pair.names) == default_names {
                set.default.push(pair.key.clone());
            }
            for name in &pair.names {
                let (table, name) = match name.strip_prefix("*.") {
                    Some(parent) => (&mut set.wildcard, parent.to_string()),
                    None => (&mut set.exact, name.clone()),
                };
                let keys = table.entry(name).or_default();
                if !keys.iter().any(|k| Arc::ptr_eq(k, &pair.key)) {
                    keys.push(pair.key.clone());
                }
            }
        }
        for keys in set
            .exact
            .values_mut()
            .chain(set.wildcard.values_mut())
            .chain(std::iter::once(&mut set.default))
        {
            // Stable: among equals, the configured order stands.
            keys.sort_by_key(|k| k.key.algorithm() != SignatureAlgorithm::ECDSA);
        }
        Ok((set, warnings))
    }

    /// The pairs for a name the client asked for.
    fn for_name(&self, name: &str) -> Option<&[Arc<CertifiedKey>]> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(keys) = self.exact.get(&name) {
            return Some(keys);
        }
        // A wildcard covers one label: `*.example.org` is `a.example.org`, not
        // `a.b.example.org` nor `example.org`.
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent).map(Vec::as_slice)
    }
}

impl ServedCertificates for CertificateSet {
    fn served(&self) -> Vec<Served> {
        self.served.clone()
    }
}

impl Pair {
    fn served(&self) -> Served {
        let key = match self.key.key.algorithm() {
            SignatureAlgorithm::ECDSA => "ecdsa",
            SignatureAlgorithm::RSA => "rsa",
            SignatureAlgorithm::ED25519 => "ed25519",
            SignatureAlgorithm::ED448 => "ed448",
            _ => "other",
        };
        Served {
            name: self.names.first().cloned().unwrap_or_default(),
            key,
            not_after: self.not_after,
        }
    }
}

impl ResolvesServerCert for CertificateSet {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let candidates = hello
            .server_name()
            .and_then(|name| self.for_name(name))
            .unwrap_or(&self.default);
        let schemes = hello.signature_schemes();
        // With TLS 1.2 the cipher suite names the key type too: an ECDSA key only for a
        // client that offers an ECDHE-ECDSA suite (or TLS 1.3, whose suites name none).
        let suites = hello.cipher_suites();
        let takes_ecdsa = suites.iter().any(|s| {
            use rustls::CipherSuite::*;
            matches!(
                s,
                TLS13_AES_128_GCM_SHA256
                    | TLS13_AES_256_GCM_SHA384
                    | TLS13_CHACHA20_POLY1305_SHA256
                    | TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                    | TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
                    | TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            )
        });
        candidates
            .iter()
            .filter(|k| takes_ecdsa || k.key.algorithm() != SignatureAlgorithm::ECDSA)
            .find(|k| k.key.choose_scheme(schemes).is_some())
            .or(candidates.first())
            .cloned()
    }
}

/// Why a listener's certificates could not be loaded; each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum CertificateLoadError {
    #[error("no certificate configured")]
    NoneConfigured,
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: bad PEM certificate: {source}", path.display())]
    BadPem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{}: no certificate found", path.display())]
    NoCertificate { path: PathBuf },
    /// There is no passphrase to ask for at start (Perdition's ssl_passphrase_*): the key is
    /// stored decrypted, readable by root and the service only.
    #[error(
        "{}: the private key is encrypted; decrypt it once (openssl pkey -in KEY -out \
         PLAIN) and keep the result readable by root only",
        path.display()
    )]
    EncryptedKey { path: PathBuf },
    #[error("{}: cannot load private key: {source}", path.display())]
    BadKey {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{}: certificate and key do not match: {source}", path.display())]
    KeyMismatch {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{}: unreadable certificate: {source}", path.display())]
    Unparsable {
        path: PathBuf,
        #[source]
        source: x509_parser::nom::Err<x509_parser::error::X509Error>,
    },
}

/// Every certificate of the PEM file `path`; a file without one is an error.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertificateLoadError> {
    let pem = std::fs::read(path).map_err(|source| CertificateLoadError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|source| CertificateLoadError::BadPem {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(CertificateLoadError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn load_pair(
    cert: &Path,
    key: &Path,
    intermediates: Option<&Path>,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<(Pair, Option<String>), CertificateLoadError> {
    let mut chain = read_certs(cert)?;
    let leaf = chain[0].clone();
    if let Some(path) = intermediates {
        chain.extend(read_certs(path)?);
    }
    let private = private_key(key)?;
    let certified = CertifiedKey::from_der(chain, private, provider).map_err(|source| {
        CertificateLoadError::KeyMismatch {
            path: cert.to_path_buf(),
            source,
        }
    })?;
    let (names, not_after) =
        names_and_expiry(leaf.as_ref()).map_err(|source| CertificateLoadError::Unparsable {
            path: cert.to_path_buf(),
            source,
        })?;
    let left = Duration::from_secs(not_after.saturating_sub(unix_now()).max(0) as u64);
    let warning = (left < EXPIRY_WARNING).then(|| {
        format!(
            "certificate {} ({}) expires in {} days",
            cert.display(),
            names.join(", "),
            left.as_secs() / 86_400
        )
    });
    Ok((
        Pair {
            key: Arc::new(certified),
            names,
            not_after,
        },
        warning,
    ))
}

/// The private key of the PEM file `key`; an encrypted one is named as such.
fn private_key(key: &Path) -> Result<PrivateKeyDer<'static>, CertificateLoadError> {
    PrivateKeyDer::from_pem_file(key).map_err(|source| {
        let encrypted = std::fs::read(key)
            .map(|pem| pem.windows(9).any(|w| w == b"ENCRYPTED"))
            .unwrap_or(false);
        let path = key.to_path_buf();
        if encrypted {
            CertificateLoadError::EncryptedKey { path }
        } else {
            CertificateLoadError::BadKey { path, source }
        }
    })
}

/// The DNS names a certificate is for (lower case; the common name when it lists none), and
/// when it expires (Unix seconds).
fn names_and_expiry(
    der: &[u8],
) -> Result<(Vec<String>, i64), x509_parser::nom::Err<x509_parser::error::X509Error>> {
    use x509_parser::extensions::GeneralName;
    let (_, certificate) = x509_parser::parse_x509_certificate(der)?;
    let mut names: Vec<String> = alternative_names(&certificate)
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    if names.is_empty() {
        names.extend(
            certificate
                .subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    Ok((names, certificate.validity().not_after.timestamp()))
}

/// The subject alternative names of `certificate` (none when it has no such extension, or a
/// broken one); `check --probe` lists them for back ends' certificates too.
pub fn alternative_names<'a>(
    certificate: &'a x509_parser::certificate::X509Certificate<'_>,
) -> &'a [x509_parser::extensions::GeneralName<'a>] {
    certificate
        .subject_alternative_name()
        .ok()
        .flatten()
        .map_or(&[], |san| san.value.general_names.as_slice())
}

/// How long `certificate` has left (nothing once it has expired); `check --probe` says it of
/// back ends' certificates too.
pub fn time_left(certificate: &x509_parser::certificate::X509Certificate<'_>) -> Duration {
    let left = certificate
        .validity()
        .not_after
        .timestamp()
        .saturating_sub(unix_now());
    Duration::from_secs(left.max(0) as u64)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
