//! The files of `[acme] state_dir` (0700): `account.json` (the account's key and URL, 0600),
//! per key type `ecdsa-p256.pem` (the certificate chain) and `ecdsa-p256.key` (its key,
//! 0600), and `last-error` (when the last order failed and why; gone after a success).
//! Each file is written beside its place and renamed into it, so that a reader never sees
//! half of one.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use instant_acme::AccountCredentials;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::config::KeyType;

const ACCOUNT: &str = "account.json";
const LAST_ERROR: &str = "last-error";

/// Why a file of the state directory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not an account file: {source}", path.display())]
    BadAccount {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// The account as stored: the directory it belongs to, and its credentials (its private key:
/// never logged, nor shown by `check`; the type has no `Debug`).
#[derive(Serialize, Deserialize)]
pub struct StoredAccount {
    pub directory: String,
    pub credentials: AccountCredentials,
}

/// What a stored certificate says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Its DNS names, lower case.
    pub names: Vec<String>,
    /// Its validity, in Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

impl CertificateInfo {
    /// The first certificate of a PEM chain; `None` when there is none, or it cannot be read.
    pub fn of_pem(pem: &[u8]) -> Option<CertificateInfo> {
        let der = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
        let (_, certificate) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
        let names = crate::certificates::alternative_names(&certificate)
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(name) => {
                    Some(name.to_ascii_lowercase())
                }
                _ => None,
            })
            .collect();
        let validity = certificate.validity();
        Some(CertificateInfo {
            names,
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
        })
    }

    /// When it is renewed: two thirds into its lifetime (30 days before the end of a 90-day
    /// certificate, as Let's Encrypt advises).
    pub fn renewal_time(&self) -> i64 {
        let lifetime = (self.not_after - self.not_before).max(0);
        self.not_before + lifetime * 2 / 3
    }

    /// Whether it carries every one of `domains`.
    pub fn covers(&self, domains: &[String]) -> bool {
        domains.iter().all(|d| self.names.contains(d))
    }

    /// Whether it serves `domains` and is not yet due for renewal at `now`.
    pub fn good_for(&self, domains: &[String], now: i64) -> bool {
        self.covers(domains) && now < self.renewal_time()
    }
}

/// When the last order failed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedError {
    pub at: i64,
    pub text: String,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    pub fn new(path: &Path) -> StateDir {
        StateDir {
            path: path.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Make the directory when it is missing, readable by this user alone.
    pub fn create(&self) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: self.path.clone(),
            source,
        };
        fs::create_dir_all(&self.path).map_err(io)?;
        fs::set_permissions(&self.path, fs::Permissions::from_mode(0o700)).map_err(io)
    }

    /// Make the directory and its files `uid`'s (the user the process becomes after start:
    /// it renews them).
    pub fn give_to(&self, uid: u32, gid: u32) -> Result<(), StateError> {
        let chown = |path: &Path| {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|source| StateError::Io {
                path: path.to_path_buf(),
                source,
            })
        };
        chown(&self.path)?;
        let entries = fs::read_dir(&self.path).map_err(|source| StateError::Io {
            path: self.path.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            chown(&entry.path())?;
        }
        Ok(())
    }

    pub fn has_account(&self) -> bool {
        self.path.join(ACCOUNT).is_file()
    }

    /// The stored account, if any.
    pub fn account(&self) -> Result<Option<StoredAccount>, StateError> {
        let path = self.path.join(ACCOUNT);
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Io { path, source }),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|source| StateError::BadAccount { path, source })
    }

    pub fn save_account(&self, account: &StoredAccount) -> Result<(), StateError> {
        let path = self.path.join(ACCOUNT);
        let text = serde_json::to_vec_pretty(account).map_err(|source| StateError::BadAccount {
            path: path.clone(),
            source,
        })?;
        self.write(ACCOUNT, &text, 0o600)
    }

    /// Forget the account (the CA no longer knows it): the next order makes a new one.
    pub fn forget_account(&self) {
        let _ = fs::remove_file(self.path.join(ACCOUNT));
    }

    /// The chain's and the key's files of `key_type`.
    pub fn certificate_files(&self, key_type: KeyType) -> (PathBuf, PathBuf) {
        let name = key_type.name();
        (
            self.path.join(format!("{name}.pem")),
            self.path.join(format!("{name}.key")),
        )
    }

    /// The stored certificate of `key_type`, when there is a readable one.
    pub fn certificate(&self, key_type: KeyType) -> Option<CertificateInfo> {
        let (chain, key) = self.certificate_files(key_type);
        if !key.is_file() {
            return None;
        }
        CertificateInfo::of_pem(&fs::read(chain).ok()?)
    }

    /// Store a new certificate: the key first, so that a chain is never beside an older key
    /// for long (and a mismatch is refused at loading, never served).
    pub fn save_certificate(
        &self,
        key_type: KeyType,
        chain: &str,
        key: &str,
    ) -> Result<(), StateError> {
        let name = key_type.name();
        self.write(&format!("{name}.key"), key.as_bytes(), 0o600)?;
        self.write(&format!("{name}.pem"), chain.as_bytes(), 0o644)
    }

    pub fn last_error(&self) -> Option<RecordedError> {
        let text = fs::read_to_string(self.path.join(LAST_ERROR)).ok()?;
        let (at, text) = text.split_once('\n')?;
        Some(RecordedError {
            at: at.trim().parse().ok()?,
            text: text.trim_end().to_string(),
        })
    }

    pub fn record_error(&self, error: &RecordedError) -> Result<(), StateError> {
        let text = format!("{}\n{}\n", error.at, error.text);
        self.write(LAST_ERROR, text.as_bytes(), 0o644)
    }

    pub fn clear_error(&self) {
        let _ = fs::remove_file(self.path.join(LAST_ERROR));
    }

    /// Write `name` whole with `mode`, through a temporary file renamed into place.
    fn write(&self, name: &str, bytes: &[u8], mode: u32) -> Result<(), StateError> {
        let path = self.path.join(name);
        let temporary = self.path.join(format!(".{name}.new"));
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        let _ = fs::remove_file(&temporary);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temporary)
            .map_err(io)?;
        file.write_all(bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        fs::rename(&temporary, &path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `names`, valid from `days_before` days ago for
    /// `lifetime_days`, and its key.
    fn certificate(names: &[&str], days_before: i64, lifetime_days: i64) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let start = std::time::SystemTime::now()
            - std::time::Duration::from_secs(days_before as u64 * 86_400);
        params.not_before = start.into();
        params.not_after =
            (start + std::time::Duration::from_secs(lifetime_days as u64 * 86_400)).into();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_stored_certificate_is_read_back_with_its_names_and_renewal_point() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(&dir.path().join("acme"));
        state.create().unwrap();
        let mode = fs::metadata(state.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(state.certificate(KeyType::EcdsaP256), None);
        let (chain, key) = certificate(&["imap.example.org", "Mail.example.org"], 10, 90);
        state
            .save_certificate(KeyType::EcdsaP256, &chain, &key)
            .unwrap();
        let info = state.certificate(KeyType::EcdsaP256).unwrap();
        assert_eq!(info.names, ["imap.example.org", "mail.example.org"]);
        assert_eq!(info.not_after - info.not_before, 90 * 86_400);
        assert_eq!(info.renewal_time(), info.not_before + 60 * 86_400);
        let now = info.not_before + 10 * 86_400;
        let domains = |d: &[&str]| d.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(info.good_for(&domains(&["imap.example.org"]), now));
        assert!(!info.good_for(&domains(&["imap.example.org", "pop.example.org"]), now));
        assert!(!info.good_for(&domains(&["imap.example.org"]), info.renewal_time()));
        let (_, key_file) = state.certificate_files(KeyType::EcdsaP256);
        let mode = fs::metadata(key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(state.certificate(KeyType::Rsa2048), None);
    }

    #[test]
    fn the_last_error_is_kept_until_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        assert_eq!(state.last_error(), None);
        let error = RecordedError {
            at: 1_700_000_000,
            text: "validation of imap.example.org failed: connection refused".into(),
        };
        state.record_error(&error).unwrap();
        assert_eq!(state.last_error(), Some(error));
        state.clear_error();
        assert_eq!(state.last_error(), None);
    }

    #[test]
    fn a_broken_account_file_is_named_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        assert!(state.account().unwrap().is_none());
        assert!(!state.has_account());
        fs::write(dir.path().join(ACCOUNT), "{").unwrap();
        let error = state.account().err().unwrap().to_string();
        assert!(
            error.contains("account.json: not an account file"),
            "{error}"
        );
    }
}
