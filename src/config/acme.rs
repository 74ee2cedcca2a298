//! `[acme]`: certificates obtained and renewed by the process itself (RFC 8555), for the
//! listeners that say `certificates = "acme"`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Let's Encrypt's production directory: what `directory` is when left out.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// The first retry after a failed order waits this long by default, doubling up to
/// [`RETRY_MAX_MS`]: the CA's rate limits (Let's Encrypt allows five failed validations
/// per hour) must not be spent in a loop.
const RETRY_MIN_MS: u64 = 60_000;
const RETRY_MAX_MS: u64 = 6 * 3_600_000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// The ACME server's directory URL.
    #[serde(default = "directory_default")]
    pub directory: String,
    /// How the CA may reach the admin (`mailto:`), told when the account is made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contact: Vec<String>,
    /// The names the certificate is for; the first is its subject.
    #[serde(default)]
    pub domains: Vec<String>,
    /// How the CA checks that this host answers for the domains.
    #[serde(default)]
    pub challenge: AcmeChallenge,
    /// Where `http-01` challenges are answered (`0.0.0.0:80` in production).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_listen: Option<String>,
    /// The account key and the certificates (made 0700 at start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    /// One key type, or a list of them: one certificate each (a dual ECDSA + RSA set).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub key_type: KeyTypes,
    /// CA certificate(s) trusted for the ACME server itself, for a private directory
    /// (pebble, step-ca); the system's CAs when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The first retry after a failure waits this long; each next one twice as long.
    #[serde(default = "retry_min_default")]
    pub retry_min_ms: u64,
    /// The longest wait between retries.
    #[serde(default = "retry_max_default")]
    pub retry_max_ms: u64,
}

fn directory_default() -> String {
    LETS_ENCRYPT.into()
}

fn retry_min_default() -> u64 {
    RETRY_MIN_MS
}

fn retry_max_default() -> u64 {
    RETRY_MAX_MS
}

/// The challenge the CA is asked to check (RFC 8555 section 8, RFC 8737).
#[derive(
    Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum AcmeChallenge {
    /// Answered by the TLS listeners themselves, on the port the CA connects to (443).
    #[default]
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// Answered by a small HTTP server on `http_listen` (port 80 for the CA).
    #[serde(rename = "http-01")]
    Http01,
}

/// A certificate's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    EcdsaP256,
    Rsa2048,
}

impl KeyType {
    /// The name in the configuration, and of the key's files in `state_dir`.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::Rsa2048 => "rsa-2048",
        }
    }

    fn from_name(name: &str) -> Option<KeyType> {
        [KeyType::EcdsaP256, KeyType::Rsa2048]
            .into_iter()
            .find(|k| k.name() == name)
    }
}

/// `key_type` as written: one name or a list (kept as text, so that `check` names an unknown
/// one among every other problem).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(from = "OneOrMany", into = "Vec<String>")]
pub struct KeyTypes(pub Vec<String>);

#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "a key type (\"ecdsa-p256\", \"rsa-2048\") or a list of them"
)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl From<OneOrMany> for KeyTypes {
    fn from(written: OneOrMany) -> KeyTypes {
        match written {
            OneOrMany::One(name) => KeyTypes(vec![name]),
            OneOrMany::Many(names) => KeyTypes(names),
        }
    }
}

impl From<KeyTypes> for Vec<String> {
    fn from(types: KeyTypes) -> Vec<String> {
        types.0
    }
}

impl Default for KeyTypes {
    fn default() -> Self {
        KeyTypes(vec![KeyType::EcdsaP256.name().into()])
    }
}

impl AcmeConfig {
    /// The key types asked for, each once, in the order written (unknown names left out:
    /// [`AcmeConfig::problems`] names them).
    pub fn key_types(&self) -> Vec<KeyType> {
        let mut types = Vec::new();
        for t in self.key_type.0.iter().filter_map(|n| KeyType::from_name(n)) {
            if !types.contains(&t) {
                types.push(t);
            }
        }
        types
    }

    /// The `http-01` answerer's address, when one is configured and valid.
    pub fn http_address(&self) -> Option<SocketAddr> {
        self.http_listen.as_deref()?.parse().ok()
    }

    /// The domains in lower case, without a final dot: how certificates name them.
    pub fn domain_names(&self) -> Vec<String> {
        self.domains
            .iter()
            .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
            .collect()
    }

    /// Every problem of the section, each starting with `acme.`.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.directory.starts_with("https://") {
            problems.push(format!(
                "acme.directory {:?}: an https:// URL (Let's Encrypt's is {LETS_ENCRYPT})",
                self.directory
            ));
        }
        problems.extend(self.domain_problems());
        for contact in &self.contact {
            if !contact.starts_with("mailto:") {
                problems.push(format!(
                    "acme.contact {contact:?}: a mailto: URL (\"mailto:postmaster@example.org\")"
                ));
            }
        }
        problems.extend(self.challenge_problems());
        match &self.state_dir {
            None => problems.push(
                "acme.state_dir is required: where the account key and the certificates are \
                 kept (e.g. \"/var/lib/portcullis/acme\")"
                    .into(),
            ),
            Some(dir) if !dir.is_absolute() => problems.push(format!(
                "acme.state_dir {}: an absolute path",
                dir.display()
            )),
            Some(_) => {}
        }
        problems.extend(self.key_type_problems());
        if self.retry_min_ms == 0 || self.retry_min_ms > self.retry_max_ms {
            problems.push("acme.retry_min_ms must be at least 1 and at most retry_max_ms".into());
        }
        problems
    }

    fn domain_problems(&self) -> Vec<String> {
        if self.domains.is_empty() {
            return vec!["acme.domains is empty: name the host names clients connect to".into()];
        }
        let mut problems = Vec::new();
        for domain in &self.domains {
            let name = domain.trim_end_matches('.');
            if name.starts_with("*.") {
                problems.push(format!(
                    "acme.domains {domain:?}: a wildcard needs the dns-01 challenge, which \
                     Portcullis does not answer"
                ));
            } else if rustls::pki_types::DnsName::try_from(name).is_err() || !name.contains('.') {
                problems.push(format!("acme.domains {domain:?}: not a DNS name"));
            }
        }
        problems
    }

    fn challenge_problems(&self) -> Option<String> {
        match (self.challenge, &self.http_listen) {
            (AcmeChallenge::Http01, None) => Some(
                "acme.challenge = \"http-01\" needs acme.http_listen (e.g. \"0.0.0.0:80\")".into(),
            ),
            (AcmeChallenge::TlsAlpn01, Some(_)) => Some(
                "acme.http_listen is for challenge = \"http-01\"; tls-alpn-01 is answered by \
                 the TLS listeners"
                    .into(),
            ),
            (_, Some(listen)) if self.http_address().is_none() => Some(format!(
                "acme.http_listen {listen:?}: not an address:port (e.g. \"0.0.0.0:80\")"
            )),
            _ => None,
        }
    }

    fn key_type_problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = self
            .key_type
            .0
            .iter()
            .filter(|n| KeyType::from_name(n).is_none())
            .map(|n| format!("acme.key_type {n:?}: give \"ecdsa-p256\" or \"rsa-2048\" (or both)"))
            .collect();
        if self.key_type.0.is_empty() {
            problems.push("acme.key_type is empty: give \"ecdsa-p256\" or \"rsa-2048\"".into());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme(text: &str) -> AcmeConfig {
        toml::from_str(text).unwrap()
    }

    const MINIMAL: &str = "domains = [\"imap.example.org\"]\nstate_dir = \"/var/lib/x\"\n";

    #[test]
    fn the_minimal_section_is_lets_encrypt_tls_alpn_and_ecdsa() {
        let a = acme(MINIMAL);
        assert!(a.problems().is_empty(), "{:?}", a.problems());
        assert_eq!(a.directory, LETS_ENCRYPT);
        assert_eq!(a.challenge, AcmeChallenge::TlsAlpn01);
        assert_eq!(a.key_types(), [KeyType::EcdsaP256]);
    }

    #[test]
    fn key_type_is_one_name_or_a_list_and_unknown_names_are_named() {
        let a = acme(&format!(
            "{MINIMAL}key_type = [\"ecdsa-p256\", \"rsa-2048\"]\n"
        ));
        assert_eq!(a.key_types(), [KeyType::EcdsaP256, KeyType::Rsa2048]);
        assert!(a.problems().is_empty());
        let a = acme(&format!("{MINIMAL}key_type = \"rsa-2048\"\n"));
        assert_eq!(a.key_types(), [KeyType::Rsa2048]);
        let a = acme(&format!("{MINIMAL}key_type = \"ed25519\"\n"));
        assert_eq!(
            a.problems(),
            ["acme.key_type \"ed25519\": give \"ecdsa-p256\" or \"rsa-2048\" (or both)"]
        );
    }

    #[test]
    fn http_01_needs_an_address_and_tls_alpn_01_none() {
        let a = acme(&format!("{MINIMAL}challenge = \"http-01\"\n"));
        assert_eq!(
            a.problems(),
            ["acme.challenge = \"http-01\" needs acme.http_listen (e.g. \"0.0.0.0:80\")"]
        );
        let a = acme(&format!(
            "{MINIMAL}challenge = \"http-01\"\nhttp_listen = \"port 80\"\n"
        ));
        assert_eq!(
            a.problems(),
            ["acme.http_listen \"port 80\": not an address:port (e.g. \"0.0.0.0:80\")"]
        );
        let a = acme(&format!("{MINIMAL}http_listen = \"0.0.0.0:80\"\n"));
        assert!(a.problems()[0].contains("is for challenge = \"http-01\""));
        let parsed: Result<AcmeConfig, _> =
            toml::from_str(&format!("{MINIMAL}challenge = \"dns-01\"\n"));
        let error = parsed.unwrap_err().to_string();
        assert!(
            error.contains("expected `tls-alpn-01` or `http-01`"),
            "{error}"
        );
    }

    #[test]
    fn state_dir_domains_and_contact_are_checked() {
        let a = acme(
            "contact = [\"postmaster@example.org\"]\ndomains = [\"*.example.org\", \"bad name\"]\n",
        );
        let problems = a.problems().join("\n");
        for needle in [
            "acme.state_dir is required",
            "\"*.example.org\": a wildcard needs the dns-01 challenge",
            "\"bad name\": not a DNS name",
            "acme.contact \"postmaster@example.org\": a mailto: URL",
        ] {
            assert!(problems.contains(needle), "{needle} in {problems}");
        }
        assert_eq!(
            acme("domains = []\nstate_dir = \"relative\"\n").problems(),
            [
                "acme.domains is empty: name the host names clients connect to",
                "acme.state_dir relative: an absolute path"
            ]
        );
    }
}

#[cfg(test)]
mod listener_tests {
    use crate::config::Config;

    fn problems(text: &str) -> String {
        let config = Config::from_toml(text).unwrap();
        config
            .validate()
            .err()
            .map(|p| p.0.join("\n"))
            .unwrap_or_default()
    }

    const LISTENER: &str = "[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:993\"]\n\
        tls = \"implicit\"\ncertificates = \"acme\"\nbackend = { host = \"mail\" }\n";

    #[test]
    fn acme_listeners_need_the_section_and_the_section_needs_them() {
        let said = problems(LISTENER);
        assert!(
            said.contains("listeners say certificates = \"acme\" but there is no [acme] section"),
            "{said}"
        );
        let with =
            format!("{LISTENER}[acme]\ndomains = [\"imap.example.org\"]\nstate_dir = \"/x\"\n");
        assert_eq!(problems(&with), "");
        let without_listener =
            with.replace("certificates = \"acme\"\n", "cert = \"/c\"\nkey = \"/k\"\n");
        assert!(problems(&without_listener).contains("no listener says certificates = \"acme\""));
    }

    #[test]
    fn certificates_is_a_list_of_files_or_acme_and_nothing_else() {
        let error = Config::from_toml(&LISTENER.replace("\"acme\"", "\"letsencrypt\""))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("a list of { cert, key } tables, or \"acme\""),
            "{error}"
        );
        let files = LISTENER.replace("\"acme\"", "[{ cert = \"/c\", key = \"/k\" }]");
        let config = Config::from_toml(&files).unwrap();
        assert_eq!(config.listeners[0].certificates.files().len(), 1);
        let plain =
            format!("{LISTENER}[acme]\ndomains = [\"imap.example.org\"]\nstate_dir = \"/x\"\n")
                .replace("tls = \"implicit\"", "tls = \"none\"");
        assert!(problems(&plain).contains("certificates = \"acme\" is for a listener with tls"));
    }
}
