//! An LDAP directory as the map, as Perdition's `libperditiondb_ldap` uses one: an RFC 4516 URL
//! `ldap[s]://host[:port]/base?user,host,port?scope?filter` whose filter's `%s` is the lookup
//! key, escaped as RFC 4515 says (so `*)(uid=*` or `\2a` are only ever text to match), and
//! whose three attributes are the back-end user name (optional), the server and its port.
//!
//! One connection is opened on first use and shared by every lookup (LDAP multiplexes
//! requests); it is reopened after an error. Every operation has a timeout, and at most
//! [`MAX_CONCURRENT`] lookups are in flight, so a slow directory answers `UNAVAILABLE` rather
//! than holding sessions.

use std::time::Duration;

use std::panic::AssertUnwindSafe;

use ldap3::{
    ldap_escape, Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry,
    SearchOptions,
};
use tokio::sync::{Mutex, Semaphore};
use url::Url;

use super::route::Route;
use super::{Answer, LookupFuture, Map, MapError, ProbeFuture, Query};
use crate::protocol::Secret;
use crate::tls::{self, BackendVerification, TlsSetupError};

/// Lookups in flight at once; the others wait (within their session's own timeouts).
const MAX_CONCURRENT: usize = 32;

/// The longest key sent to the directory; longer names are not looked up.
const MAX_KEY: usize = 1024;

/// Why an LDAP map could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LdapSetupError {
    /// `url` without its password.
    #[error("LDAP URL {url:?}: {problem}")]
    Url {
        url: String,
        #[source]
        problem: UrlProblem,
    },
    /// The TLS client for `ldaps://` or StartTLS.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
}

/// What is wrong with an LDAP URL.
#[derive(Debug, thiserror::Error)]
pub enum UrlProblem {
    #[error(transparent)]
    Unparsable(url::ParseError),
    #[error("the scheme must be ldap or ldaps")]
    Scheme,
    #[error(transparent)]
    Parameters(Box<LdapError>),
    #[error("the filter has no %s for the user")]
    NoKeyInFilter,
    #[error("name the attributes user,server[,port] (e.g. username,mailhost,port)")]
    NoServerAttribute,
}

/// Why the directory could not be reached: every lookup meanwhile is unavailable.
#[derive(Debug, thiserror::Error)]
pub enum LdapConnectError {
    #[error("cannot connect to {server}: {source}")]
    Connect {
        server: String,
        #[source]
        source: LdapError,
    },
    #[error("bind as {dn} on {server}: {source}")]
    Bind {
        dn: String,
        server: String,
        #[source]
        source: LdapError,
    },
}

/// How to reach and read the directory.
pub struct LdapSettings {
    /// Bind as this DN (with the password) before searching; anonymous when `None`. The URL's
    /// `bindname` and `x-bindpw` extensions are used when these are not given.
    pub bind_dn: Option<String>,
    pub bind_password: Option<Secret<String>>,
    /// CAs for `ldaps://` or StartTLS; the system store when `None`.
    pub ca_file: Option<std::path::PathBuf>,
    /// StartTLS on an `ldap://` URL.
    pub starttls: bool,
    pub timeout: Duration,
}

pub struct LdapMap {
    /// The server part of the URL.
    server: String,
    base: String,
    /// User, server, port.
    attributes: [Option<String>; 3],
    scope: Scope,
    /// With `%s` where the key goes.
    filter: String,
    bind: Option<(String, Secret<String>)>,
    settings: LdapConnSettings,
    timeout: Duration,
    connection: Mutex<Option<Ldap>>,
    in_flight: Semaphore,
    /// The last connection failure and when it happened.
    failed: std::sync::Mutex<Option<(std::time::Instant, String)>>,
}

/// How long after a failed connection lookups fail at once.
const FAIL_FAST: Duration = Duration::from_secs(5);

/// LDAP's sizeLimitExceeded result code.
const SIZE_LIMIT_EXCEEDED: u32 = 4;

impl LdapMap {
    /// Read the URL (Perdition's `-m` string may start with its protocol version, `2:` or
    /// `3:`; Portcullis always speaks LDAPv3).
    pub fn new(url: &str, settings: LdapSettings) -> Result<LdapMap, LdapSetupError> {
        let url = url
            .strip_prefix("3:")
            .or_else(|| url.strip_prefix("2:"))
            .unwrap_or(url);
        let shown = super::masked_url(url);
        let bad = |problem| LdapSetupError::Url {
            url: shown.clone(),
            problem,
        };
        let parsed = Url::parse(url).map_err(|e| bad(UrlProblem::Unparsable(e)))?;
        if !matches!(parsed.scheme(), "ldap" | "ldaps") {
            return Err(bad(UrlProblem::Scheme));
        }
        let params =
            ldap3::get_url_params(&parsed).map_err(|e| bad(UrlProblem::Parameters(Box::new(e))))?;
        if !params.filter.contains("%s") {
            return Err(bad(UrlProblem::NoKeyInFilter));
        }
        let mut attrs = params.attrs.iter().map(|a| a.to_string());
        let mut attribute = || attrs.next().filter(|a| !a.is_empty() && a != "*");
        let attributes = [attribute(), attribute(), attribute()];
        if attributes[1].is_none() {
            return Err(bad(UrlProblem::NoServerAttribute));
        }
        let host = parsed.host_str().unwrap_or("localhost");
        let server = match parsed.port() {
            Some(port) => format!("{}://{host}:{port}", parsed.scheme()),
            None => format!("{}://{host}", parsed.scheme()),
        };
        Ok(LdapMap {
            server,
            base: params.base.to_string(),
            attributes,
            scope: params.scope,
            filter: params.filter.to_string(),
            bind: bind(
                &params,
                settings.bind_dn.clone(),
                settings.bind_password.clone(),
            ),
            settings: connection_settings(&parsed, &params, &settings)?,
            timeout: settings.timeout,
            connection: Mutex::new(None),
            in_flight: Semaphore::new(MAX_CONCURRENT),
            failed: std::sync::Mutex::new(None),
        })
    }

    /// The shared connection, opened (and bound) if there is none.
    async fn connection(&self) -> Result<Ldap, LdapConnectError> {
        let mut slot = self.connection.lock().await;
        if let Some(ldap) = slot.as_ref() {
            return Ok(ldap.clone());
        }
        let (conn, mut ldap) = LdapConnAsync::with_settings(self.settings.clone(), &self.server)
            .await
            .map_err(|source| LdapConnectError::Connect {
                server: self.server.clone(),
                source,
            })?;
        // The connection is driven by its own task; it ends when every handle is dropped.
        tokio::spawn(async move {
            let _ = conn.drive().await;
        });
        if let Some((dn, password)) = &self.bind {
            ldap.with_timeout(self.timeout)
                .simple_bind(dn, password.expose())
                .await
                .and_then(|r| r.success())
                .map_err(|source| LdapConnectError::Bind {
                    dn: dn.clone(),
                    server: self.server.clone(),
                    source,
                })?;
        }
        *slot = Some(ldap.clone());
        Ok(ldap)
    }

    /// [`LdapMap::search_now`] within the map's timeout, all waiting included.
    async fn search(&self, key: &str) -> Result<Answer, MapError> {
        if key.len() > MAX_KEY {
            return Err(MapError::NotFound);
        }
        if let Some(e) = self.recently_failed() {
            return Err(MapError::Unavailable(e));
        }
        tokio::time::timeout(self.timeout, self.search_now(key))
            .await
            .unwrap_or_else(|_| {
                Err(MapError::Unavailable(format!(
                    "{}: no answer in {} s",
                    self.server,
                    self.timeout.as_secs()
                )))
            })
    }

    /// A connection failure of the last [`FAIL_FAST`]: lookups meanwhile fail at once
    /// instead of each waiting for the same timeout.
    fn recently_failed(&self) -> Option<String> {
        let failed = self.failed.lock().ok()?;
        let (at, e) = failed.as_ref()?;
        (at.elapsed() < FAIL_FAST).then(|| e.clone())
    }

    async fn search_now(&self, key: &str) -> Result<Answer, MapError> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| MapError::Unavailable("closing".into()))?;
        let mut ldap = match self.connection().await {
            Ok(ldap) => ldap,
            Err(e) => {
                let e = e.to_string();
                if let Ok(mut failed) = self.failed.lock() {
                    *failed = Some((std::time::Instant::now(), e.clone()));
                }
                return Err(MapError::Unavailable(e));
            }
        };
        let filter = self.filter.replace("%s", &ldap_escape(key));
        let attrs: Vec<&str> = self
            .attributes
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        // Two entries are enough to know the key is ambiguous.
        let found = ldap
            .with_timeout(self.timeout)
            .with_search_options(SearchOptions::new().sizelimit(2))
            .search(&self.base, self.scope, &filter, attrs)
            .await
            .and_then(|r| r.success());
        let entries = match found {
            Ok((entries, _)) => entries,
            Err(LdapError::LdapResult { result }) if result.rc == SIZE_LIMIT_EXCEEDED => {
                return Err(self.ambiguous("several", &filter))
            }
            Err(e) => {
                // The next lookup opens a fresh connection.
                *self.connection.lock().await = None;
                return Err(MapError::Unavailable(format!("{}: {e}", self.server)));
            }
        };
        match entries.len() {
            0 => Err(MapError::NotFound),
            1 => self.answer_of(entries.into_iter().next().expect("one")),
            n => Err(self.ambiguous(&n.to_string(), &filter)),
        }
    }

    /// More than one entry matches the key: which is meant is anyone's guess.
    fn ambiguous(&self, how_many: &str, filter: &str) -> MapError {
        MapError::Unavailable(format!(
            "{how_many} entries match {filter:?} in {}; expected one",
            self.base
        ))
    }

    /// [`LdapMap::answer`] for the one entry found, as the directory sent it.
    fn answer_of(&self, entry: ldap3::ResultEntry) -> Result<Answer, MapError> {
        // ldap3 panics on an entry that is not well formed (a DN that is not UTF-8): a
        // hostile directory must not end the session without an answer.
        match std::panic::catch_unwind(AssertUnwindSafe(|| SearchEntry::construct(entry))) {
            Ok(entry) => self.answer(entry),
            Err(_) => Err(MapError::Unavailable(format!(
                "{}: a malformed entry",
                self.server
            ))),
        }
    }

    /// The entry's user, server and port attributes as a route.
    fn answer(&self, entry: SearchEntry) -> Result<Answer, MapError> {
        let value = |i: usize| -> Option<String> {
            let name = self.attributes[i].as_deref()?;
            entry
                .attrs
                .iter()
                .find(|(attr, _)| attr.eq_ignore_ascii_case(name))
                .and_then(|(_, values)| values.first().cloned())
                .filter(|v| !v.is_empty())
        };
        let Some(server) = value(1) else {
            return Err(MapError::NotFound);
        };
        let bad = |e: String| MapError::Unavailable(format!("entry {}: {e}", entry.dn));
        let (host, mut port) =
            super::route::split_host_port(&server).map_err(|e| bad(e.to_string()))?;
        if let Some(p) = value(2) {
            port = Some(
                p.trim()
                    .parse()
                    .map_err(|_| bad(format!("bad port {p:?}")))?,
            );
        }
        Ok(Answer::Route(Route {
            user: value(0),
            host,
            port,
            password: None,
            placement: None,
        }))
    }
}

/// Whom to bind as: the settings' DN, else the URL's `bindname` (with its `x-bindpw`), else
/// nobody (anonymous).
fn bind(
    params: &ldap3::LdapUrlParams<'_>,
    dn: Option<String>,
    password: Option<Secret<String>>,
) -> Option<(String, Secret<String>)> {
    if let Some(dn) = dn {
        return Some((dn, password.unwrap_or_default()));
    }
    let mut bind = None;
    for ext in &params.extensions {
        if let ldap3::LdapUrlExt::Bindname(dn) = ext {
            let password = params.extensions.iter().find_map(|e| match e {
                ldap3::LdapUrlExt::XBindpw(pw) => Some(pw.to_string()),
                _ => None,
            });
            bind = Some((dn.to_string(), Secret::new(password.unwrap_or_default())));
        }
    }
    bind
}

/// Timeouts and TLS (`ldaps://`, or StartTLS asked by the settings or the URL).
fn connection_settings(
    parsed: &Url,
    params: &ldap3::LdapUrlParams<'_>,
    settings: &LdapSettings,
) -> Result<LdapConnSettings, TlsSetupError> {
    let starttls = settings.starttls
        || params
            .extensions
            .iter()
            .any(|e| matches!(e, ldap3::LdapUrlExt::StartTLS));
    let mut conn = LdapConnSettings::new()
        .set_conn_timeout(settings.timeout)
        .set_starttls(starttls && parsed.scheme() == "ldap");
    if parsed.scheme() == "ldaps" || starttls {
        let ca = settings
            .ca_file
            .clone()
            .unwrap_or_else(|| tls::SYSTEM_CA_BUNDLE.into());
        let config = tls::client_config(&BackendVerification::CaFile(ca))?;
        conn = conn.set_config(config);
    }
    Ok(conn)
}

impl Map for LdapMap {
    fn lookup<'a>(&'a self, query: &'a Query<'a>) -> LookupFuture<'a> {
        Box::pin(self.search(query.key))
    }

    fn describe(&self) -> String {
        format!("LDAP {}/{}", self.server, self.base)
    }

    fn probe(&self) -> ProbeFuture<'_> {
        Box::pin(async move {
            self.connection()
                .await
                .map(drop)
                .map_err(|e| MapError::Unavailable(e.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LdapSettings {
        LdapSettings {
            bind_dn: None,
            bind_password: None,
            ca_file: None,
            starttls: false,
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn perditions_default_url() {
        let m = LdapMap::new(crate::config::perdition::DEFAULT_LDAP_URL, settings()).unwrap();
        assert_eq!(m.server, "ldap://localhost");
        assert_eq!(m.base, "ou=mailbox,dc=nodomain");
        assert_eq!(
            m.attributes,
            [
                Some("username".to_string()),
                Some("mailhost".to_string()),
                Some("port".to_string())
            ]
        );
        assert_eq!(m.filter, "(uid=%s)");
        assert!(matches!(m.scope, Scope::OneLevel));
    }

    #[test]
    fn version_prefix_and_bind_extensions() {
        let m = LdapMap::new(
            "3:ldap://127.0.0.1:3890/dc=x??sub?(mail=%s)?bindname=cn=reader%2cdc=x,x-bindpw=pw",
            settings(),
        );
        // No attributes: the server attribute must be named.
        assert!(m.is_err());
        let m = LdapMap::new(
            "3:ldap://127.0.0.1:3890/dc=x?uid,host?sub?(mail=%s)?bindname=cn=reader%2cdc=x,x-bindpw=pw",
            settings(),
        )
        .unwrap();
        assert_eq!(m.server, "ldap://127.0.0.1:3890");
        let (dn, pw) = m.bind.as_ref().unwrap();
        assert_eq!(
            (dn.as_str(), pw.expose().as_str()),
            ("cn=reader,dc=x", "pw")
        );
    }

    #[test]
    fn bad_urls_are_refused_with_a_reason() {
        for url in [
            "http://x/dc=x?a,b?one?(uid=%s)",
            "ldap://x/dc=x?a,b?one?(uid=bob)",
            "ldap://x/dc=x?a,b?galaxy?(uid=%s)",
            "not a url",
        ] {
            assert!(LdapMap::new(url, settings()).is_err(), "{url}");
        }
    }

    #[test]
    fn keys_are_escaped_into_the_filter() {
        assert_eq!(ldap_escape("*)(uid=*"), "\\2a\\29\\28uid=\\2a");
        assert_eq!(ldap_escape("a\\2a"), "a\\5c2a");
    }
}
