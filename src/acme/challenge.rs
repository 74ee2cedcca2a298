//! The answers to the CA's challenges while an order is pending: for `tls-alpn-01` a
//! self-signed certificate carrying the key authorization's digest (RFC 8737), served by the
//! TLS listeners to a client that offers `acme-tls/1` alone; for `http-01` the key
//! authorization itself at `/.well-known/acme-challenge/TOKEN` (RFC 8555 section 8.3).
//! Each answer is withdrawn when its [`Pending`] is dropped.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use instant_acme::KeyAuthorization;
use rcgen::{CertificateParams, CustomExtension, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use crate::config::AcmeChallenge;
use crate::tls::ObtainedCertificates;

use super::keys::KeyError;

/// The `http-01` answers: token → key authorization.
#[derive(Debug, Clone, Default)]
pub struct HttpTokens(Arc<RwLock<HashMap<String, String>>>);

impl HttpTokens {
    pub fn answer(&self, token: &str) -> Option<String> {
        let tokens = self.0.read().unwrap_or_else(|e| e.into_inner());
        tokens.get(token).cloned()
    }

    fn set(&self, token: &str, answer: Option<String>) {
        let mut tokens = self.0.write().unwrap_or_else(|e| e.into_inner());
        match answer {
            Some(answer) => tokens.insert(token.to_string(), answer),
            None => tokens.remove(token),
        };
    }
}

/// Where the answers are given.
#[derive(Clone)]
pub struct Challenges {
    pub obtained: Arc<ObtainedCertificates>,
    pub tokens: HttpTokens,
}

/// One answer given; withdrawn when dropped.
pub struct Pending {
    challenges: Challenges,
    kind: AcmeChallenge,
    /// The domain (`tls-alpn-01`) or the token (`http-01`).
    key: String,
}

impl Drop for Pending {
    fn drop(&mut self) {
        match self.kind {
            AcmeChallenge::TlsAlpn01 => self.challenges.obtained.remove_challenge(&self.key),
            AcmeChallenge::Http01 => self.challenges.tokens.set(&self.key, None),
        }
    }
}

impl Challenges {
    /// Give the answer to `domain`'s challenge of `kind`.
    pub fn answer(
        &self,
        kind: AcmeChallenge,
        domain: &str,
        token: &str,
        key_authorization: &KeyAuthorization,
    ) -> Result<Pending, KeyError> {
        let key = match kind {
            AcmeChallenge::TlsAlpn01 => {
                let answer = alpn_certificate(domain, key_authorization)?;
                self.obtained.add_challenge(domain, answer);
                domain.to_string()
            }
            AcmeChallenge::Http01 => {
                let answer = key_authorization.as_str().to_string();
                self.tokens.set(token, Some(answer));
                token.to_string()
            }
        };
        Ok(Pending {
            challenges: self.clone(),
            kind,
            key,
        })
    }
}

/// The `tls-alpn-01` answer for `domain`: a self-signed certificate for it alone, with the
/// critical acmeIdentifier extension holding the SHA-256 of the key authorization.
fn alpn_certificate(
    domain: &str,
    key_authorization: &KeyAuthorization,
) -> Result<Arc<CertifiedKey>, KeyError> {
    let mut params = CertificateParams::new(vec![domain.to_string()])?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(
        key_authorization.digest().as_ref(),
    )];
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let certificate = params.self_signed(&key)?;
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    // Not `from_der`: its check of the pair parses the certificate with webpki, which refuses
    // the critical extension the answer is made of.
    let signing = crate::tls::provider()
        .key_provider
        .load_private_key(private)?;
    let certified = CertifiedKey::new(vec![certificate.der().clone()], signing);
    Ok(Arc::new(certified))
}
