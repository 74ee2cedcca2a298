//! Finding a user's back end, and the user name on the way.
//!
//! A [`Map`] answers a lookup key with a [`Route`] (Perdition's `[user@]host[:port]`), "no such
//! user" or "unavailable"; one file per kind of map. The [`router::Router`] of a listener
//! makes the keys from the client's name (`rewrite.rs`: Perdition's strip/add domain,
//! lower_case, query_key), asks its map, falls back to the listener's own servers, and
//! completes the answer into a [`Target`] with the listener's defaults.

pub mod cache;
pub mod factory;
pub mod flat_file;
pub mod gdbm;
pub mod http;
pub mod ldap;
pub mod local_domain;
pub mod pool;
pub mod popmap_re;
pub mod reload;
pub mod rewrite;
pub mod route;
pub mod router;
pub mod servers;
pub mod setup_error;
pub mod sql;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use crate::config::BackendTls;
use crate::protocol::named_client::PROXY_TTL;
use crate::protocol::{Protocol, Secret};

pub use route::Route;
pub use setup_error::MapSetupError;

/// What a map is asked with.
#[derive(Debug)]
pub struct Query<'a> {
    /// The key made from the client's name (`query_key`, by default the name itself).
    pub key: &'a str,
    /// The login being routed.
    pub login: &'a Login<'a>,
}

/// One login attempt: what the client said, on which connection.
#[derive(Debug)]
pub struct Login<'a> {
    /// The name as the client typed it (a name that is not UTF-8 escaped, `\xE9`).
    pub user: &'a str,
    /// The name's own bytes when they are not UTF-8 (only an http map's listener passes
    /// such a name on): what the service is sent, as nginx sends it.
    pub user_bytes: Option<&'a [u8]>,
    /// Only a map that checks passwords (nginx's `auth_http`) looks at it.
    pub password: &'a Secret<Vec<u8>>,
    /// 1 for the first login of the connection, 2 for the next...
    pub attempt: u32,
    pub connection: &'a Connection,
}

/// The facts of a client connection a map or a `query_key` may use.
#[derive(Debug, Clone)]
pub struct Connection {
    pub protocol: Protocol,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// The client leg is encrypted.
    pub tls: bool,
    /// The client leg's TLS version and cipher suite, once known (nginx's `auth_http`
    /// names them to its service).
    pub tls_version: Option<rustls::ProtocolVersion>,
    pub tls_cipher: Option<rustls::CipherSuite>,
    /// This session's id, also given to the back end when the client is forwarded.
    pub session: String,
    /// The client's own IMAP `ID` fields, passed on to a back end that takes `ID`.
    pub client_id: Vec<(String, String)>,
    /// Proxy hops left, for the back end's loop guard.
    pub proxy_ttl: u32,
}

impl Connection {
    /// A connection's facts before anyone named its client or sent an `ID`.
    pub fn new(
        protocol: Protocol,
        peer: SocketAddr,
        local: SocketAddr,
        tls: bool,
        session: String,
    ) -> Connection {
        Connection {
            protocol,
            peer,
            local,
            tls,
            tls_version: None,
            tls_cipher: None,
            session,
            client_id: Vec::new(),
            proxy_ttl: PROXY_TTL,
        }
    }
}

/// What the session connects to for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Tried in order; the next one only when connecting to the previous one failed, never
    /// once credentials were sent.
    pub endpoints: Vec<Endpoint>,
    /// The name to log in with at the back end.
    pub user: String,
    /// The password to log in with, when the map replaced the client's.
    pub password: Option<Secret<Vec<u8>>>,
    /// The user name the map gave, when it is the one to log in with (Perdition's `-U`):
    /// the log names the user by it, as Perdition's does.
    pub map_user: Option<String>,
    /// Why the listener's own servers are used although the listener has a map that failed
    /// (for the log).
    pub fallback_reason: Option<String>,
    /// Where a pool placed the user: the session counts there while it lasts.
    pub placement: Option<crate::fleet::Placement>,
}

/// One back-end server and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// IP address or host name; an IPv6 address may come in brackets.
    pub host: String,
    pub port: u16,
    pub tls: BackendTls,
    /// The name its certificate must carry; `host` when `None`.
    pub tls_name: Option<String>,
}

impl Endpoint {
    /// `host:port` as the log shows it (`[v6]:port` for IPv6).
    pub fn log_name(&self) -> String {
        let host = self.connect_host();
        if host.contains(':') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The host as the resolver wants it (no brackets).
    pub fn connect_host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }

    pub fn tls_name(&self) -> &str {
        self.tls_name.as_deref().unwrap_or(self.connect_host())
    }
}

/// A map URL fit for a log line or `check`'s output: a password in it (`user:password@`,
/// LDAP's `x-bindpw=`) is replaced by `***`, also when the URL does not parse.
pub fn masked_url(url: &str) -> String {
    let mut out = match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_string(),
        // Unparsable: hide everything between "://" and the last "@" before the path.
        Err(_) => match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}***{}", &url[..scheme + 3], &url[at..])
            }
            _ => url.to_string(),
        },
    };
    if let Some(at) = out.to_ascii_lowercase().find("x-bindpw=") {
        let start = at + "x-bindpw=".len();
        let end = out[start..].find(',').map_or(out.len(), |i| start + i);
        out.replace_range(start..end, "***");
    }
    out
}

/// Why a lookup produced no route. A map that is slow or down is `Unavailable`, never
/// `NotFound` nor `Denied`: the user is told to try later, not that the login is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The map has no entry for this key.
    #[error("not found")]
    NotFound,
    /// The map itself failed (directory down, bad answer...): the user is told to try later.
    #[error("{0}")]
    Unavailable(String),
    /// The map refused the login, with words for the user (nginx's `Auth-Status: <text>`).
    /// `retry`: the client may try again on this connection (nginx keeps it only when the
    /// service sent `Auth-Wait`, and closes it otherwise).
    #[error("{message}")]
    Denied { message: String, retry: bool },
}

/// What a map knows about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Perdition's `[user<delimiter>]host[:port]` text, read with the listener's delimiter.
    Text(String),
    /// Already in parts (a directory's attributes).
    Route(Route),
}

pub type LookupFuture<'a> = Pin<Box<dyn Future<Output = Result<Answer, MapError>> + Send + 'a>>;

/// What reaching a map's server found: `Err` is what a lookup would have met.
pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Result<(), MapError>> + Send + 'a>>;

/// A key → server lookup.
pub trait Map: Send + Sync {
    fn lookup<'a>(&'a self, query: &'a Query<'a>) -> LookupFuture<'a>;
    /// What the map is, for log lines (`popmap.re /etc/perdition/popmap.re`).
    fn describe(&self) -> String;
    /// Whether an answer depends on the password too (then a cache must key on it).
    fn answers_from_password(&self) -> bool {
        false
    }
    /// Read the map's file again (SIGHUP); the warnings are for the log. An `Err` leaves the
    /// map as it was. Maps without a file have nothing to do.
    fn reload(&self) -> Result<Vec<String>, MapSetupError> {
        Ok(Vec::new())
    }
    /// Drop any answers kept (a user moved: the admin's kick wants the next login asked anew).
    fn forget_answers(&self) {}
    /// A login could not connect to `endpoint`, which this map named (a pool counts it
    /// against the server's health).
    fn connect_failed(&self, _endpoint: &Endpoint) {}
    /// The map as a pool, for the admin's commands and the health checks.
    fn pool(&self) -> Option<&pool::Pool> {
        None
    }
    /// Reach the map's server once, for `portcullis check`; files are read already.
    fn probe(&self) -> ProbeFuture<'_> {
        Box::pin(async { Ok(()) })
    }
}

pub use crate::config::users::LowerCase;
