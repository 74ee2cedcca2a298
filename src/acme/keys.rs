//! A certificate's new key, and the request (CSR) that asks the CA to certify it.

use rcgen::{CertificateParams, DistinguishedName, KeyPair};

use crate::config::KeyType;

/// Why a key or a request could not be made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot make a key or request: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("cannot make an RSA key: {0}")]
    Rsa(String),
    #[error("cannot use the challenge's key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A fresh key of `key_type` (a new key with every certificate).
pub fn new_key(key_type: KeyType) -> Result<KeyPair, KeyError> {
    match key_type {
        KeyType::EcdsaP256 => Ok(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?),
        // ring signs with RSA keys but makes none: the key comes from the `rsa` crate.
        KeyType::Rsa2048 => {
            use rsa::pkcs8::EncodePrivateKey;
            let mut random = rsa::rand_core::OsRng;
            let key = rsa::RsaPrivateKey::new(&mut random, 2048)
                .map_err(|e| KeyError::Rsa(e.to_string()))?;
            let der = key
                .to_pkcs8_der()
                .map_err(|e| KeyError::Rsa(e.to_string()))?;
            let der = rustls::pki_types::PrivatePkcs8KeyDer::from(der.as_bytes());
            Ok(KeyPair::from_pkcs8_der_and_sign_algo(
                &der,
                &rcgen::PKCS_RSA_SHA256,
            )?)
        }
    }
}

/// The DER request for a certificate of `domains` with `key` (the names in the subject
/// alternative names; no subject: the CA takes none from it).
pub fn request(key: &KeyPair, domains: &[String]) -> Result<Vec<u8>, KeyError> {
    let mut params = CertificateParams::new(domains.to_vec())?;
    params.distinguished_name = DistinguishedName::new();
    Ok(params.serialize_request(key)?.der().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::FromDer;

    #[test]
    fn each_key_type_signs_a_request_for_the_domains() {
        let domains = vec!["imap.example.org".to_string(), "mail.example.org".into()];
        for key_type in [KeyType::EcdsaP256, KeyType::Rsa2048] {
            let key = new_key(key_type).unwrap();
            let der = request(&key, &domains).unwrap();
            let (_, csr) =
                x509_parser::certification_request::X509CertificationRequest::from_der(&der)
                    .unwrap();
            let text = format!(
                "{:?}",
                csr.requested_extensions().map(|e| e.collect::<Vec<_>>())
            );
            assert!(text.contains("imap.example.org") && text.contains("mail.example.org"));
        }
    }
}
