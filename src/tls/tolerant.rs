//! Checking a back end's certificate while forgiving the flaws the admin named (Perdition's
//! `ssl_cert_accept_expired`, `ssl_cert_accept_not_yet_valid`, `ssl_cert_accept_self_signed`,
//! `ssl_ca_accept_self_signed` and `ssl_no_cn_verify`), and only those: the rest of the
//! verification still runs. Each forgiveness is a second verification under changed terms, not
//! a skipped one: an expired chain is checked as of a moment its server certificate was
//! valid, a chain ending at an unknown self-signed CA is checked with that CA trusted.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{VerifierBuilderError, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

use crate::config::CertificateFlaw;

/// A verifier that forgives some flaws; see the module's documentation.
#[derive(Debug)]
pub struct Tolerant {
    roots: RootCertStore,
    strict: Arc<WebPkiServerVerifier>,
    tolerate: Vec<CertificateFlaw>,
    provider: Arc<CryptoProvider>,
}

impl Tolerant {
    pub fn new(
        roots: RootCertStore,
        tolerate: &[CertificateFlaw],
        provider: Arc<CryptoProvider>,
    ) -> Result<Tolerant, VerifierBuilderError> {
        let strict = verifier(roots.clone(), &provider)?;
        Ok(Tolerant {
            roots,
            strict,
            tolerate: tolerate.to_vec(),
            provider,
        })
    }

    fn tolerates(&self, flaw: CertificateFlaw) -> bool {
        self.tolerate.contains(&flaw)
    }

    /// A server certificate that signed itself: no chain to check, so its dates and name are
    /// checked here (unless forgiven too). Its signature over itself is not: anyone can make
    /// one, and the handshake proves the server holds the certificate's key.
    fn self_signed_server(
        &self,
        end_entity: &CertificateDer<'_>,
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let (not_before, not_after) = validity(end_entity)?;
        let now = now.as_secs();
        if now > not_after && !self.tolerates(CertificateFlaw::Expired) {
            return Err(Error::InvalidCertificate(CertificateError::Expired));
        }
        if now < not_before && !self.tolerates(CertificateFlaw::NotYetValid) {
            return Err(Error::InvalidCertificate(CertificateError::NotValidYet));
        }
        if !self.tolerates(CertificateFlaw::Name) {
            let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_name(&parsed, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }
}

fn verifier(
    roots: RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, VerifierBuilderError> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()
}

/// A certificate's validity window, in seconds since the epoch.
fn validity(certificate: &CertificateDer<'_>) -> Result<(u64, u64), Error> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref())
        .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let seconds = |t: x509_parser::time::ASN1Time| u64::try_from(t.timestamp()).unwrap_or(0);
    Ok((
        seconds(parsed.validity().not_before),
        seconds(parsed.validity().not_after),
    ))
}

/// Whether a certificate names itself as its issuer.
fn self_signed(certificate: &CertificateDer<'_>) -> bool {
    x509_parser::parse_x509_certificate(certificate.as_ref())
        .map(|(_, c)| c.issuer().as_raw() == c.subject().as_raw())
        .unwrap_or(false)
}

fn at(seconds: u64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(seconds))
}

impl ServerCertVerifier for Tolerant {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let mut now = now;
        let mut verifier = self.strict.clone();
        // Each kind of flaw is forgiven once, so that a chain with two of a kind (an expired
        // CA besides an expired server certificate) still fails, and this ends.
        let mut forgiven = Vec::new();
        loop {
            let flaw = match verifier.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Ok(verified) => return Ok(verified),
                Err(Error::InvalidCertificate(flaw)) => flaw,
                Err(other) => return Err(other),
            };
            let refuse = || Err(Error::InvalidCertificate(flaw.clone()));
            let Some(kind) = flaw_of(&flaw, end_entity, intermediates) else {
                return refuse();
            };
            if !self.tolerates(kind) || forgiven.contains(&kind) {
                return refuse();
            }
            forgiven.push(kind);
            match kind {
                // The chain is checked as of the last (first) second the server's certificate
                // was valid; a CA that was not valid then still fails it.
                CertificateFlaw::Expired => now = at(validity(end_entity)?.1),
                CertificateFlaw::NotYetValid => now = at(validity(end_entity)?.0),
                // rustls checks the name last, once the chain has passed.
                CertificateFlaw::Name => return Ok(ServerCertVerified::assertion()),
                CertificateFlaw::SelfSigned => {
                    return self.self_signed_server(end_entity, server_name, now)
                }
                CertificateFlaw::SelfSignedCa => {
                    let mut roots = self.roots.clone();
                    if let Some(ca) = intermediates.last() {
                        roots.add(ca.clone().into_owned())?;
                    }
                    verifier = verifier_or_error(roots, &self.provider)?;
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.strict.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.strict.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.strict.supported_verify_schemes()
    }
}

/// Which of the flaws an admin may forgive `error` is, if any.
fn flaw_of(
    error: &CertificateError,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Option<CertificateFlaw> {
    Some(match error {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            CertificateFlaw::Expired
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            CertificateFlaw::NotYetValid
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            CertificateFlaw::Name
        }
        // webpki calls a self-signed certificate made as a CA (openssl req -x509 makes them
        // so) a CA used as a server certificate, before it finds no issuer.
        CertificateError::UnknownIssuer | CertificateError::Other(_) if self_signed(end_entity) => {
            CertificateFlaw::SelfSigned
        }
        CertificateError::UnknownIssuer if intermediates.last().is_some_and(|c| self_signed(c)) => {
            CertificateFlaw::SelfSignedCa
        }
        _ => return None,
    })
}

fn verifier_or_error(
    roots: RootCertStore,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, Error> {
    verifier(roots, provider).map_err(|e| Error::General(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use std::path::Path;
    use std::process::Command;

    fn openssl(dir: &Path, args: &[&str]) {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl is installed (scripts/test.sh)");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    }

    fn cert(dir: &Path, name: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(dir.join(name)).unwrap()
    }

    /// A self-signed P-256 certificate `NAME.pem` with its key `NAME.key`.
    fn self_signed(dir: &Path, name: &str, days: &str, subject: &str, extra: &[&str]) {
        let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
        let mut args = vec![
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            days,
            "-subj",
            subject,
        ];
        args.extend_from_slice(extra);
        openssl(dir, &args);
    }

    /// A CA, a server certificate for localhost it signed, a self-signed one for localhost,
    /// and a server certificate another (self-signed) CA signed.
    struct Pki {
        _dir: tempfile::TempDir,
        ca: CertificateDer<'static>,
        server: CertificateDer<'static>,
        self_signed: CertificateDer<'static>,
        other_ca: CertificateDer<'static>,
        other_server: CertificateDer<'static>,
    }

    fn pki() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ext = d.join("ext");
        std::fs::write(
            &ext,
            "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        let ext = ext.to_str().unwrap();
        for ca in ["ca", "other-ca"] {
            self_signed(d, ca, "3650", &format!("/CN={ca}"), &[]);
            let server = format!("{ca}-server");
            openssl(
                d,
                &[
                    "req",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-keyout",
                    &format!("{server}.key"),
                    "-out",
                    &format!("{server}.csr"),
                    "-subj",
                    "/CN=localhost",
                ],
            );
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{server}.csr"),
                    "-CA",
                    &format!("{ca}.pem"),
                    "-CAkey",
                    &format!("{ca}.key"),
                    "-CAcreateserial",
                    "-days",
                    "30",
                    "-extfile",
                    ext,
                    "-out",
                    &format!("{server}.pem"),
                ],
            );
        }
        let san = ["-addext", "subjectAltName=DNS:localhost"];
        self_signed(d, "self", "30", "/CN=localhost", &san);
        Pki {
            ca: cert(d, "ca.pem"),
            server: cert(d, "ca-server.pem"),
            self_signed: cert(d, "self.pem"),
            other_ca: cert(d, "other-ca.pem"),
            other_server: cert(d, "other-ca-server.pem"),
            _dir: dir,
        }
    }

    fn tolerant(pki: &Pki, tolerate: &[CertificateFlaw]) -> Tolerant {
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Tolerant::new(roots, tolerate, provider).unwrap()
    }

    /// The flaw a verification found, or None when it passed.
    fn verify(
        verifier: &Tolerant,
        server: &CertificateDer<'_>,
        chain: &[CertificateDer<'_>],
        name: &str,
        now: u64,
    ) -> Option<CertificateError> {
        let name = ServerName::try_from(name.to_string()).unwrap();
        match verifier.verify_server_cert(server, chain, &name, &[], at(now)) {
            Ok(_) => None,
            Err(Error::InvalidCertificate(e)) => Some(e),
            Err(e) => panic!("not a certificate error: {e}"),
        }
    }

    fn now() -> u64 {
        UnixTime::now().as_secs()
    }

    #[test]
    fn nothing_forgiven_is_strict_verification() {
        let pki = pki();
        let strict = tolerant(&pki, &[]);
        assert_eq!(verify(&strict, &pki.server, &[], "localhost", now()), None);
        assert!(verify(&strict, &pki.server, &[], "mail.example", now()).is_some());
        assert!(verify(&strict, &pki.self_signed, &[], "localhost", now()).is_some());
        assert!(verify(&strict, &pki.other_server, &[], "localhost", now()).is_some());
    }

    #[test]
    fn an_expired_certificate_is_forgiven_only_when_asked_and_its_chain_is_still_checked() {
        let pki = pki();
        let later = validity(&pki.server).unwrap().1 + 86_400;
        let strict = tolerant(&pki, &[CertificateFlaw::NotYetValid]);
        assert!(matches!(
            verify(&strict, &pki.server, &[], "localhost", later),
            Some(CertificateError::Expired | CertificateError::ExpiredContext { .. })
        ));
        let lenient = tolerant(&pki, &[CertificateFlaw::Expired]);
        assert_eq!(verify(&lenient, &pki.server, &[], "localhost", later), None);
        // Expired, and from a CA nobody trusts: still refused.
        assert!(verify(&lenient, &pki.other_server, &[], "localhost", later).is_some());
        // Expired, and for another name: still refused.
        assert!(verify(&lenient, &pki.server, &[], "mail.example", later).is_some());
    }

    #[test]
    fn a_certificate_not_yet_valid_is_forgiven_only_when_asked() {
        let pki = pki();
        let earlier = validity(&pki.server).unwrap().0 - 60;
        assert!(verify(&tolerant(&pki, &[]), &pki.server, &[], "localhost", earlier).is_some());
        let lenient = tolerant(&pki, &[CertificateFlaw::NotYetValid]);
        assert_eq!(
            verify(&lenient, &pki.server, &[], "localhost", earlier),
            None
        );
    }

    #[test]
    fn another_name_is_forgiven_but_not_an_unknown_issuer() {
        let pki = pki();
        let lenient = tolerant(&pki, &[CertificateFlaw::Name]);
        assert_eq!(
            verify(&lenient, &pki.server, &[], "mail.example", now()),
            None
        );
        assert_eq!(
            verify(&lenient, &pki.other_server, &[], "mail.example", now()),
            Some(CertificateError::UnknownIssuer)
        );
    }

    #[test]
    fn a_self_signed_server_certificate_still_needs_its_name_and_dates() {
        let pki = pki();
        let lenient = tolerant(&pki, &[CertificateFlaw::SelfSigned]);
        assert_eq!(
            verify(&lenient, &pki.self_signed, &[], "localhost", now()),
            None
        );
        assert!(verify(&lenient, &pki.self_signed, &[], "mail.example", now()).is_some());
        let later = validity(&pki.self_signed).unwrap().1 + 1;
        assert!(matches!(
            verify(&lenient, &pki.self_signed, &[], "localhost", later),
            Some(CertificateError::Expired | CertificateError::ExpiredContext { .. })
        ));
        let expired_too = tolerant(
            &pki,
            &[CertificateFlaw::SelfSigned, CertificateFlaw::Expired],
        );
        assert_eq!(
            verify(&expired_too, &pki.self_signed, &[], "localhost", later),
            None
        );
        // A certificate some unknown CA signed is not self-signed.
        assert_eq!(
            verify(&lenient, &pki.other_server, &[], "localhost", now()),
            Some(CertificateError::UnknownIssuer)
        );
        let both = tolerant(&pki, &[CertificateFlaw::SelfSigned, CertificateFlaw::Name]);
        assert_eq!(
            verify(&both, &pki.self_signed, &[], "mail.example", now()),
            None
        );
    }

    #[test]
    fn a_chain_ending_at_an_unknown_self_signed_ca_is_checked_with_that_ca_trusted() {
        let pki = pki();
        let lenient = tolerant(&pki, &[CertificateFlaw::SelfSignedCa]);
        let chain = [pki.other_ca.clone()];
        assert_eq!(
            verify(&lenient, &pki.other_server, &chain, "localhost", now()),
            None
        );
        assert!(verify(&lenient, &pki.other_server, &chain, "mail.example", now()).is_some());
        // Without the CA in the chain there is nothing to trust.
        assert!(verify(&lenient, &pki.other_server, &[], "localhost", now()).is_some());
        // The wrong CA in the chain does not vouch for the certificate.
        let wrong = [pki.ca.clone()];
        assert!(verify(&lenient, &pki.other_server, &wrong, "localhost", now()).is_some());
        let leaf_only = tolerant(&pki, &[CertificateFlaw::SelfSigned]);
        assert!(verify(&leaf_only, &pki.other_server, &chain, "localhost", now()).is_some());
    }
}
