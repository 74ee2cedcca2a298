//! The certificates of the listeners that say `certificates = "acme"`: obtained while the
//! process runs, so their resolver reads a holder the ACME task replaces atomically (every
//! handshake after the swap gets the new certificate; a connection in progress keeps its
//! own), and answers the CA's `tls-alpn-01` validation (RFC 8737) while one is pending.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::certificates::{CertificateSet, Served, ServedCertificates};

/// The ALPN protocol of a `tls-alpn-01` validation (RFC 8737 section 6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// What the ACME listeners serve now; one per process.
#[derive(Debug, Default)]
pub struct ObtainedCertificates {
    /// The certificates in use; none before the first is obtained (handshakes then fail).
    current: RwLock<Option<Arc<CertificateSet>>>,
    /// Domain (lower case) → the self-signed answer to its pending `tls-alpn-01` challenge.
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl ObtainedCertificates {
    /// The process's holder: one `[acme]` per process, and it must outlive a reload (the
    /// listeners a reload builds read the same holder), so it is not part of what a build
    /// makes.
    pub fn of_process() -> Arc<ObtainedCertificates> {
        static HOLDER: OnceLock<Arc<ObtainedCertificates>> = OnceLock::new();
        HOLDER.get_or_init(Default::default).clone()
    }

    /// Serve `set` from the next handshake on.
    pub fn replace(&self, set: CertificateSet) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        *current = Some(Arc::new(set));
    }

    /// Whether a certificate is served.
    pub fn has_certificate(&self) -> bool {
        self.current().is_some()
    }

    fn current(&self) -> Option<Arc<CertificateSet>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Answer the `tls-alpn-01` validation of `domain` with `answer` until it is withdrawn.
    pub fn add_challenge(&self, domain: &str, answer: Arc<CertifiedKey>) {
        let mut challenges = self.challenges.write().unwrap_or_else(|e| e.into_inner());
        challenges.insert(domain.to_ascii_lowercase(), answer);
    }

    pub fn remove_challenge(&self, domain: &str) {
        let mut challenges = self.challenges.write().unwrap_or_else(|e| e.into_inner());
        challenges.remove(&domain.to_ascii_lowercase());
    }

    fn challenge(&self, domain: &str) -> Option<Arc<CertifiedKey>> {
        let challenges = self.challenges.read().unwrap_or_else(|e| e.into_inner());
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        challenges.get(&domain).cloned()
    }
}

/// The resolver of an ACME listener.
#[derive(Debug)]
pub struct ObtainedResolver(pub Arc<ObtainedCertificates>);

impl ResolvesServerCert for ObtainedResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let offered: Vec<&[u8]> = hello.alpn().map(Iterator::collect).unwrap_or_default();
        // A validation offers acme-tls/1 alone (RFC 8737 section 3): it gets the answer for
        // a domain being validated and nothing else, so that this protocol never reaches a
        // mail session (the listener closes such a connection after the handshake).
        if offered == [ACME_TLS_ALPN] {
            return self.0.challenge(hello.server_name()?);
        }
        self.0.current()?.resolve(hello)
    }
}

/// The metrics read what ACME serves now: nothing before the first certificate.
impl ServedCertificates for ObtainedCertificates {
    fn served(&self) -> Vec<Served> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current.as_ref().map(|set| set.served()).unwrap_or_default()
    }
}
