//! Configuration: the native TOML format (this file's types *are* the schema) and the
//! Perdition-compatible reader in `perdition/`. Both produce a [`Config`] that
//! [`Config::validate`] checks before anything listens.

pub mod acme;
mod admin;
pub mod database;
pub mod debian_defaults;
mod error;
mod fleet;
mod guard;
pub mod perdition;
mod pool;
mod process;
mod tls_settings;
pub mod users;

pub use acme::{AcmeChallenge, AcmeConfig, KeyType};
pub use admin::AdminConfig;
pub use error::{BindError, Problems, TomlError};
pub use fleet::{FleetConfig, StoreSettings};
pub use guard::GuardConfig;
pub use pool::PoolServer;
pub use process::{DiagnosticsOutput, ProcessConfig};
pub use tls_settings::{CertificateFlaw, TlsVersion};

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::value::{HostPort, IpAddress, Network, PreLoginLimits, Protocol, Secret};
use users::{LowerCase, UserNames};

/// The longest time any setting may name: ten years is as good as forever, and larger values
/// would overflow the clock.
pub const MAX_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// Everything Portcullis needs to run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub guard: GuardConfig,
    /// The store a fleet of instances shares.
    #[serde(default)]
    pub fleet: FleetConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub process: ProcessConfig,
    /// Certificates obtained and renewed by ACME, for listeners with `certificates = "acme"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme: Option<AcmeConfig>,
    #[serde(rename = "listener", default)]
    pub listeners: Vec<Listener>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `-` stdout, `+` stderr, `/path` a file, anything else a syslog facility name.
    pub destination: String,
    /// The syslog ident (`perdition.imaps` in Perdition mode).
    pub ident: String,
    /// When to put the password in Auth lines: never, fail, ok, always (Perdition's
    /// `log_passwd`).
    pub log_passwd: LogPasswd,
    /// Extra diagnostic lines. Never includes passwords; `log_passwd` alone controls that.
    pub debug: bool,
    /// Lines held in memory while the destination is slow; beyond three quarters of it,
    /// Connect and diagnostic lines are dropped so that Auth and Fatal lines still fit.
    pub queue_lines: usize,
    /// Where diagnostic lines go (the Connect/Auth/Closing lines stay here, byte for byte):
    /// log (with them), json (stderr), journald.
    pub diagnostics: process::DiagnosticsOutput,
    /// The diagnostic lines wanted: a level (error, warn, info, debug) or `RUST_LOG` directives
    /// (`RUST_LOG` itself, when set, wins).
    pub level: String,
    /// Repeat a logged-in session's Auth line this often, in seconds, for as long as it lasts
    /// (0: never), for POP- and IMAP-before-SMTP scripts that read the log (Perdition's
    /// `connect_relog`). The repeated line never carries the password.
    #[serde(skip_serializing_if = "is_default")]
    pub auth_relog: u64,
    /// Errors only: no Connect, Auth or Closing lines either (Perdition's `quiet`); `debug`
    /// overrides it. fail2ban sees nothing then.
    #[serde(skip_serializing_if = "is_default")]
    pub quiet: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            destination: "mail".into(),
            ident: "portcullis".into(),
            log_passwd: LogPasswd::Never,
            debug: false,
            queue_lines: 4096,
            diagnostics: Default::default(),
            level: "info".into(),
            auth_relog: 0,
            quiet: false,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogPasswd {
    Never,
    Fail,
    Ok,
    Always,
}

impl LogPasswd {
    /// Whether the password goes into the log line for a login that `succeeded` or not.
    pub fn applies(self, succeeded: bool) -> bool {
        match self {
            LogPasswd::Never => false,
            LogPasswd::Fail => !succeeded,
            LogPasswd::Ok => succeeded,
            LogPasswd::Always => true,
        }
    }
}

const DEFAULT_BACKEND_CONNECT_TIMEOUT: u64 = 5;
const DEFAULT_BACKEND_LOGIN_TIMEOUT: u64 = 30;

/// Limits; all times in seconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Simultaneous client connections for the whole process; 0 means no limit.
    pub connection_limit: usize,
    /// Time a client has to log in (Perdition's `authenticate_timeout`).
    pub login_timeout: u64,
    /// Silence allowed once logged in (Perdition's `timeout`).
    pub idle_timeout: u64,
    /// Time to open the TCP connection to a back end (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_connect_timeout: Option<u64>,
    /// Time for the back end's greeting, TLS and its answer to the login (default 30): longer
    /// than Dovecot's largest auth failure penalty (15 s), which the proxy's address may be
    /// given when many logins fail through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_login_timeout: Option<u64>,
    /// The former single back-end timeout: sets both of the above where they are not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_timeout: Option<u64>,
    /// Time live sessions get to finish after SIGTERM before the process exits.
    pub shutdown_grace: u64,
    pub max_line_length: usize,
    pub max_literal_size: usize,
    pub max_commands: u32,
    pub max_failed_logins: u32,
    /// Logged-in sessions one user may hold at once, per protocol (across the fleet with
    /// `[fleet] store`); 0: no cap.
    pub max_sessions_per_user: u32,
    /// The same, per user and client address (Dovecot's `mail_max_userip_connections`).
    pub max_sessions_per_user_address: u32,
}

impl Default for Limits {
    fn default() -> Self {
        let prelogin = PreLoginLimits::default();
        Limits {
            connection_limit: 0,
            login_timeout: 30,
            idle_timeout: 1800,
            backend_connect_timeout: None,
            backend_login_timeout: None,
            backend_timeout: None,
            shutdown_grace: 10,
            max_line_length: prelogin.max_line_length,
            max_literal_size: prelogin.max_literal_size,
            max_commands: prelogin.max_commands,
            max_failed_logins: prelogin.max_failed_logins,
            max_sessions_per_user: 0,
            max_sessions_per_user_address: 0,
        }
    }
}

impl Limits {
    pub fn prelogin(&self) -> PreLoginLimits {
        PreLoginLimits {
            max_line_length: self.max_line_length,
            max_literal_size: self.max_literal_size,
            max_commands: self.max_commands,
            max_failed_logins: self.max_failed_logins,
        }
    }

    pub fn login_timeout(&self) -> Duration {
        Duration::from_secs(self.login_timeout)
    }

    /// 0 means no idle timeout, as in Perdition.
    pub fn idle_timeout(&self) -> Duration {
        match self.idle_timeout {
            0 => Duration::from_secs(MAX_SECONDS),
            s => Duration::from_secs(s),
        }
    }

    /// The same limits with the back-end timeouts spelled out, as `portcullis check` shows
    /// them.
    pub fn effective(&self) -> Limits {
        Limits {
            backend_connect_timeout: Some(self.backend_connect_timeout().as_secs()),
            backend_login_timeout: Some(self.backend_login_timeout().as_secs()),
            backend_timeout: None,
            ..self.clone()
        }
    }

    pub fn backend_connect_timeout(&self) -> Duration {
        let seconds = self.backend_connect_timeout.or(self.backend_timeout);
        Duration::from_secs(seconds.unwrap_or(DEFAULT_BACKEND_CONNECT_TIMEOUT))
    }

    pub fn backend_login_timeout(&self) -> Duration {
        let seconds = self.backend_login_timeout.or(self.backend_timeout);
        Duration::from_secs(seconds.unwrap_or(DEFAULT_BACKEND_LOGIN_TIMEOUT))
    }
}

/// How clients reach a listener.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ListenerTls {
    /// Plaintext only.
    None,
    /// Plaintext with STARTTLS offered.
    Starttls,
    /// Plaintext with STARTTLS, and no login before it.
    StarttlsRequired,
    /// TLS from the first byte (IMAPS, POP3S).
    Implicit,
}

/// How Portcullis reaches a back end.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BackendTls {
    None,
    Starttls,
    Implicit,
}

/// A certificate chain (PEM) and its private key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificatePair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A listener's `certificates`: files, or the ones `[acme]` obtains.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(
    untagged,
    expecting = "a list of { cert, key } tables, or \"acme\" (the certificates [acme] obtains)"
)]
pub enum Certificates {
    Files(Vec<CertificatePair>),
    Obtained(CertificateSource),
}

/// Who provides a listener's certificates when no file does.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CertificateSource {
    Acme,
}

impl Default for Certificates {
    fn default() -> Self {
        Certificates::Files(Vec::new())
    }
}

impl Certificates {
    /// The pairs of files (none for `"acme"`).
    pub fn files(&self) -> &[CertificatePair] {
        match self {
            Certificates::Files(pairs) => pairs,
            Certificates::Obtained(_) => &[],
        }
    }

    pub fn is_acme(&self) -> bool {
        matches!(self, Certificates::Obtained(CertificateSource::Acme))
    }

    fn is_empty(&self) -> bool {
        matches!(self, Certificates::Files(pairs) if pairs.is_empty())
    }
}

/// One protocol served on one or more addresses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    #[schemars(with = "String")]
    pub protocol: Protocol,
    /// `ip:port` or `[v6]:port`.
    pub bind: Vec<String>,
    #[serde(default = "listener_tls_default")]
    pub tls: ListenerTls,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// More certificate/key pairs, chosen by the name the client asks for (SNI) and the
    /// signatures it takes (an ECDSA pair beside an RSA one); `cert`/`key`, or else the first
    /// of these, is the default. Or `"acme"`: the certificates `[acme]` obtains and renews.
    #[serde(default, skip_serializing_if = "Certificates::is_empty")]
    pub certificates: Certificates,
    /// Capabilities advertised before login; the protocol's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    /// Text of the successful-login answer; the back end's own text when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok_line: Option<String>,
    #[serde(default)]
    pub lower_case: LowerCase,
    /// Refuse all logins (maintenance).
    #[serde(default)]
    pub login_disabled: bool,
    /// Every connection starts with a PROXY protocol header (v1 or v2) from a load balancer;
    /// its client address is the client's everywhere after that.
    #[serde(default, skip_serializing_if = "is_default")]
    pub proxy_protocol: bool,
    /// The balancers allowed to send it (`10.0.0.0/24`, `2001:db8::1`); connections from
    /// anywhere else are closed before the greeting.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub proxy_trusted: Vec<Network>,
    /// Peers that may name the client they speak for (a webmail host, another proxy), as in
    /// Dovecot's `login_trusted_networks`: IMAP `ID` with `x-originating-ip`, POP3 and
    /// ManageSieve `XCLIENT`. From anyone else those words are ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub login_trusted: Vec<Network>,
    /// Offer OAUTHBEARER and XOAUTH2 to clients; the token goes to the back end unchanged,
    /// which must take it (Dovecot's oauth2 passdb).
    #[serde(default, skip_serializing_if = "is_default")]
    pub oauth: bool,
    /// Name shown in greetings and in the IMAP ID answer.
    #[serde(default = "product_default")]
    pub greeting_name: String,
    pub backend: Backend,
    /// How user names are rewritten and turned into lookup keys.
    #[serde(default, skip_serializing_if = "is_default")]
    pub users: UserNames,
    /// Where each user's server is looked up; without one, every user goes to `backend`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<MapConfig>,
    /// Let a client name its server itself, as `user@host[:port]` (Perdition's
    /// `client_server_specification`). Off by default: any client could then make the proxy
    /// connect wherever it can reach.
    #[serde(default, skip_serializing_if = "is_default")]
    pub client_server_specification: bool,
    /// Intermediate CA certificates sent after `cert`'s own, for a `cert` file that holds the
    /// server's certificate alone (Perdition's `ssl_ca_chain_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<PathBuf>,
    /// Session-ticket keys shared by a fleet (one 64-hex-digit key per line, the first seals,
    /// all open): a client the balancer sends to another instance still resumes. Unset: keys
    /// of this process, rotated every six hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket_keys: Option<PathBuf>,
    /// TLS versions offered to clients, of "1.2" and "1.3"; both when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_versions: Vec<TlsVersion>,
    /// TCP keep-alive probes on the client's connection and on the one to its back end
    /// (Perdition's `tcp_keepalive`): a peer that vanished without a word is noticed.
    #[serde(default, skip_serializing_if = "is_default")]
    pub tcp_keepalive: bool,
}

pub use crate::value::network::parse_network;

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// How the back end learns the client's address.
#[derive(
    Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardClient {
    #[default]
    None,
    /// In band before the login: IMAP `ID` with Dovecot's keys, POP3/ManageSieve `XCLIENT`.
    Id,
    ProxyV1,
    ProxyV2,
}

impl ForwardClient {
    /// The configuration's word for it.
    pub fn name(self) -> &'static str {
        match self {
            ForwardClient::None => "none",
            ForwardClient::Id => "id",
            ForwardClient::ProxyV1 => "proxy-v1",
            ForwardClient::ProxyV2 => "proxy-v2",
        }
    }
}

/// A map of users to servers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MapConfig {
    pub kind: MapKind,
    /// The map file (`popmap-re`, `popmap`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// The directory (`ldap`): `ldap[s]://host[:port]/base?user,server,port?scope?filter`
    /// with `%s` in the filter where the user goes (Perdition's `-m` form); or the database
    /// (`sql`): `postgres://user:password@host/db`, `mysql://…`, `sqlite:///path.db`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Headers sent with every `http` request (nginx's `auth_http_header`), e.g. a shared
    /// secret.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
    /// The query (`sql`), with the database's placeholder for the key (`$1`, or `?`),
    /// returning `servername` and optionally `port`; Perdition's `tblPerdition` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Bind as this DN before searching (`ldap`); anonymous when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_dn: Option<String>,
    /// Not shown by `portcullis check`, nor by `Debug`.
    #[serde(default, skip_serializing)]
    #[schemars(with = "Option<String>")]
    pub bind_password: Option<Secret<String>>,
    /// CAs for `ldaps://` and StartTLS; the system store when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// StartTLS on an `ldap://` URL.
    #[serde(default, skip_serializing_if = "is_default")]
    pub starttls: bool,
    /// Seconds a lookup may take before the user is told to try later (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Seconds an answer is kept (default 60 for `ldap`, 0 = not kept, for the files, which
    /// are in memory anyway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_seconds: Option<u64>,
    /// Seconds a "no such user" is kept (default 10 for `ldap`, 0 for the files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_cache_seconds: Option<u64>,
    /// Answers kept at most, of each kind (default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_size: Option<u64>,
    /// Log in to the back end as this master user on the client's behalf, as
    /// `<user><master_separator><master_user>` with `master_password` (Dovecot's master users),
    /// once the map has checked the client's password: only an `http` map does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_user: Option<String>,
    /// Not shown by `portcullis check`, nor by `Debug`.
    #[serde(default, skip_serializing)]
    #[schemars(with = "Option<String>")]
    pub master_password: Option<Secret<String>>,
    /// Between the user and the master user (Dovecot's `auth_master_user_separator`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_separator: Option<String>,
    /// Log in with the user name a map answer carries (`jane@server`; Perdition's
    /// `username_from_database`). Otherwise only its server is used.
    #[serde(default, skip_serializing_if = "is_default")]
    pub username_from_map: bool,
    /// The servers of a `pool`: `"host:port"` or `{ host, port, weight }`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<PoolServer>,
    /// How often a pool's servers are checked (default 2000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_interval_ms: Option<u64>,
    /// How long one check may take (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_timeout_ms: Option<u64>,
    /// Failed checks before a server is down (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_after: Option<u32>,
    /// Good checks before a down server is up again (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_after: Option<u32>,
    /// How long a user stays on its server after its last session ended (default 300000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_ms: Option<u64>,
    /// How long `backend down --kick` takes to end a server's sessions (default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kick_spread_ms: Option<u64>,
    /// Local addresses the connections to this map's servers come from, in turn; instead of
    /// `backend.source` when not empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub source: Vec<IpAddress>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum MapKind {
    /// Perdition's `popmap.re`: regular expressions, first match wins.
    PopmapRe,
    /// Perdition's flat `popmap`: `user:server` lines.
    Popmap,
    /// An LDAP directory (Perdition's `libperditiondb_ldap`).
    Ldap,
    /// An SQL database: PostgreSQL, MySQL/MariaDB, SQLite (Perdition's `libperditiondb_mysql`
    /// and `_postgresql`).
    Sql,
    /// An HTTP service speaking nginx's `auth_http` protocol.
    Http,
    /// Perdition's GDBM database built by `makegdbm` (its default map).
    Gdbm,
    /// A shared-storage cluster: users placed on servers by rendezvous hashing, sticky,
    /// health-checked.
    Pool,
}

impl MapConfig {
    /// A map of `kind` with nothing else set.
    pub fn of_kind(kind: MapKind) -> MapConfig {
        MapConfig {
            kind,
            path: None,
            url: None,
            query: None,
            headers: Default::default(),
            bind_dn: None,
            bind_password: None,
            ca_file: None,
            starttls: false,
            timeout: None,
            cache_seconds: None,
            negative_cache_seconds: None,
            cache_size: None,
            master_user: None,
            master_password: None,
            master_separator: None,
            username_from_map: false,
            servers: Vec::new(),
            health_interval_ms: None,
            health_timeout_ms: None,
            down_after: None,
            up_after: None,
            sticky_ms: None,
            kick_spread_ms: None,
            source: Vec::new(),
        }
    }

    /// How long a lookup may take before the login is unavailable (default 10 s).
    pub fn lookup_timeout(&self) -> Duration {
        Duration::from_secs(self.timeout.unwrap_or(10))
    }

    /// How long an answer is kept: a minute for a directory or a database by default,
    /// nothing for the files (in memory anyway) and for a service that checks passwords.
    pub fn cache_for(&self) -> Duration {
        let default = if self.kind.asks_a_server_that_routes() {
            60
        } else {
            0
        };
        Duration::from_secs(self.cache_seconds.unwrap_or(default))
    }

    /// How long a "no such user" is kept (10 s for a directory or a database by default).
    pub fn negative_cache_for(&self) -> Duration {
        let default = if self.kind.asks_a_server_that_routes() {
            10
        } else {
            0
        };
        Duration::from_secs(self.negative_cache_seconds.unwrap_or(default))
    }

    /// Answers kept at most, of each kind.
    pub fn cache_entries(&self) -> u64 {
        self.cache_size.unwrap_or(10_000)
    }

    /// Between the user and the master user (Dovecot's default `*`).
    pub fn master_separator(&self) -> &str {
        self.master_separator.as_deref().unwrap_or("*")
    }

    /// Whether the back end is logged in to with the user name the map answers with: when
    /// asked (`username_from_map`), and always for an `http` map (nginx's Auth-User).
    pub fn logs_in_as_the_maps_user(&self) -> bool {
        self.username_from_map || self.kind == MapKind::Http
    }
}

impl MapKind {
    /// Whether the map is a file read into memory (and read anew by a reload), rather than a
    /// server asked at each lookup (whose connections a reload may keep).
    pub fn reads_a_file(self) -> bool {
        matches!(self, MapKind::PopmapRe | MapKind::Popmap | MapKind::Gdbm)
    }

    /// A directory or a database: asked per lookup, worth caching by default.
    fn asks_a_server_that_routes(self) -> bool {
        matches!(self, MapKind::Ldap | MapKind::Sql)
    }

    /// The kind as the configuration spells it (and the metrics label it).
    pub fn name(self) -> &'static str {
        match self {
            MapKind::PopmapRe => "popmap-re",
            MapKind::Popmap => "popmap",
            MapKind::Ldap => "ldap",
            MapKind::Sql => "sql",
            MapKind::Http => "http",
            MapKind::Gdbm => "gdbm",
            MapKind::Pool => "pool",
        }
    }
}

fn listener_tls_default() -> ListenerTls {
    ListenerTls::None
}

fn product_default() -> String {
    "Portcullis".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// IP address or host name, optionally with its own port (`host:port`, `[v6]:port`); may
    /// be empty when a map names every server.
    #[serde(default)]
    #[schemars(with = "String")]
    pub host: HostPort,
    /// More servers, `host[:port]`, tried in order when connecting to the one before fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub failover: Vec<HostPort>,
    /// How the back end learns the client's address: `none`, `id` (IMAP `ID` with Dovecot's
    /// `x-originating-ip`...), `proxy-v1` or `proxy-v2` (a PROXY header first).
    #[serde(default, skip_serializing_if = "is_default")]
    pub forward_client: ForwardClient,
    /// Start at a random one of `host` and `failover` for each login (Perdition spreads
    /// logins over its `outgoing_server` list that way); the others follow.
    #[serde(default, skip_serializing_if = "is_default")]
    pub random_first: bool,
    /// The protocol's standard port when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default = "backend_tls_default")]
    pub tls: BackendTls,
    /// CAs to trust for the back end; the system store when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Check the back end's certificate (on by default; turning it off is an explicit choice).
    #[serde(default = "yes")]
    pub verify: bool,
    /// The name the certificate must carry; `host` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// A directory of CA certificates (PEM files; an OpenSSL hashed directory does), trusted
    /// with `ca_file` (Perdition's `ssl_ca_path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_path: Option<PathBuf>,
    /// Flaws of the back end's certificate that are forgiven while everything else is still
    /// checked: "expired", "not-yet-valid", "self-signed" (the server's own certificate),
    /// "self-signed-ca" (a chain ending at a self-signed CA nobody configured), "name" (made
    /// out for another name). Perdition's `ssl_cert_accept_*`, `ssl_ca_accept_self_signed`
    /// and `ssl_no_cn_verify`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerate: Vec<CertificateFlaw>,
    /// TLS versions used towards the back end, of "1.2" and "1.3"; both when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_versions: Vec<TlsVersion>,
    /// Local addresses (configured on this host) the connections to the back ends come from,
    /// in turn, as Dovecot's `login_source_ips`: the kernel has some 28,000 ports for one
    /// source and server, and each address adds as many. Empty: the kernel chooses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub source: Vec<IpAddress>,
}

fn backend_tls_default() -> BackendTls {
    BackendTls::None
}

fn yes() -> bool {
    true
}

impl Backend {
    /// The name the back end's certificate must carry: `server_name`, else `host`'s name.
    pub fn tls_name(&self) -> String {
        match &self.server_name {
            Some(name) => name.clone(),
            None => self
                .host
                .get()
                .map(|(host, _)| host.to_string())
                .unwrap_or_default(),
        }
    }
}

impl Listener {
    /// The local addresses back-end connections come from: the map's when it names any, else
    /// the back end's (a text that is no address is a problem `validate` has named).
    pub fn sources(&self) -> Vec<IpAddr> {
        let source = match &self.map {
            Some(map) if !map.source.is_empty() => &map.source,
            _ => &self.backend.source,
        };
        source.iter().filter_map(IpAddress::ip).collect()
    }

    /// The addresses to bind, resolved.
    pub fn addresses(&self) -> Result<Vec<SocketAddr>, BindError> {
        let mut out = Vec::new();
        for spec in &self.bind {
            let found: Vec<SocketAddr> = spec
                .to_socket_addrs()
                .map_err(|source| BindError::Resolve {
                    spec: spec.clone(),
                    source,
                })?
                .collect();
            if found.is_empty() {
                return Err(BindError::Nothing(spec.clone()));
            }
            out.extend(found);
        }
        Ok(out)
    }
}

/// Whether two listening addresses would claim the same socket: equal, or the same port with
/// a wildcard of the same family (an IPv6 wildcard is IPv6-only here).
fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

impl Config {
    /// Parse the native TOML format.
    /// A mistake is named by its line and column, without the line itself: the line may hold a
    /// password, and the message goes to the log and to `POST /reload`'s answer.
    pub fn from_toml(text: &str) -> Result<Config, TomlError> {
        toml::from_str(text).map_err(|e: toml::de::Error| {
            let message = e.message().trim_end().to_string();
            match e.span() {
                Some(span) => {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    TomlError::At {
                        line,
                        column,
                        message,
                    }
                }
                None => TomlError::Unplaced(message),
            }
        })
    }

    /// The effective configuration in the native format (for `portcullis check`).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot print configuration: {e}\n"))
    }

    /// Every problem found, so that an admin can fix them all in one go.
    pub fn validate(&self) -> Result<(), Problems> {
        let mut problems = Vec::new();
        if self.listeners.is_empty() {
            problems.push("no [[listener]] configured".to_string());
        }
        problems.extend(self.guard.problems());
        problems.extend(self.fleet.problems(&self.guard));
        problems.extend(self.admin.problems());
        problems.extend(self.process.problems());
        problems.extend(log_level_problems(&self.log.level));
        problems.extend(limits_problems(&self.limits));
        problems.extend(self.acme_problems());
        // Every address once: two listeners cannot share a socket (a reload would otherwise
        // silently give one of them the port).
        let mut taken: Vec<(SocketAddr, String)> = Vec::new();
        if let Some(admin) = self.admin.address() {
            taken.push((admin, "[admin] listen".into()));
        }
        if let Some(http) = self.acme.as_ref().and_then(AcmeConfig::http_address) {
            if taken.iter().any(|(a, _)| overlap(*a, http)) {
                problems.push(format!("acme.http_listen {http} is also [admin] listen's"));
            }
            taken.push((http, "acme.http_listen".into()));
        }
        for (i, l) in self.listeners.iter().enumerate() {
            problems.extend(listener_problems(i, l, &mut taken));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Problems(problems))
        }
    }
}

impl Config {
    /// `[acme]`'s own problems, and listeners that want its certificates without it.
    fn acme_problems(&self) -> Vec<String> {
        let wanting = self
            .listeners
            .iter()
            .filter(|l| l.certificates.is_acme())
            .count();
        match &self.acme {
            Some(acme) => {
                let mut problems = acme.problems();
                if wanting == 0 {
                    problems.push(
                        "[acme] is configured but no listener says certificates = \"acme\"".into(),
                    );
                }
                problems
            }
            None if wanting > 0 => {
                vec!["listeners say certificates = \"acme\" but there is no [acme] section".into()]
            }
            None => Vec::new(),
        }
    }
}

/// A bare word is a level; anything else must be RUST_LOG directives (`target=level`):
/// `warning`, read as a target, would silence everything.
fn log_level_problems(level: &str) -> Option<String> {
    let lower = level.to_ascii_lowercase();
    let known = matches!(
        lower.as_str(),
        "error" | "warn" | "info" | "debug" | "trace" | "off"
    );
    let usable =
        (known || lower.contains('=')) && tracing_subscriber::EnvFilter::try_new(level).is_ok();
    (!usable).then(|| {
        format!(
            "log.level {level:?}: not a level (error, warn, info, debug) nor RUST_LOG directives"
        )
    })
}

fn limits_problems(l: &Limits) -> Vec<String> {
    let mut problems = Vec::new();
    if l.max_line_length < 64 {
        problems.push("limits.max_line_length must be at least 64".into());
    }
    if l.max_failed_logins == 0 || l.max_commands == 0 {
        problems.push("limits.max_failed_logins and limits.max_commands must be at least 1".into());
    }
    for (name, value) in [
        ("login_timeout", l.login_timeout),
        (
            "backend_connect_timeout",
            l.backend_connect_timeout.unwrap_or(1),
        ),
        (
            "backend_login_timeout",
            l.backend_login_timeout.unwrap_or(1),
        ),
        ("backend_timeout", l.backend_timeout.unwrap_or(1)),
    ] {
        if value == 0 {
            problems.push(format!("limits.{name} must be at least 1"));
        }
    }
    for (name, value) in [
        ("login_timeout", l.login_timeout),
        ("idle_timeout", l.idle_timeout),
        (
            "backend_connect_timeout",
            l.backend_connect_timeout.unwrap_or(0),
        ),
        (
            "backend_login_timeout",
            l.backend_login_timeout.unwrap_or(0),
        ),
        ("backend_timeout", l.backend_timeout.unwrap_or(0)),
        ("shutdown_grace", l.shutdown_grace),
    ] {
        if value > MAX_SECONDS {
            problems.push(format!(
                "limits.{name} must be at most {MAX_SECONDS} seconds"
            ));
        }
    }
    problems
}

/// The `i`-th listener's problems; its addresses join `taken`, where another's are.
fn listener_problems(i: usize, l: &Listener, taken: &mut Vec<(SocketAddr, String)>) -> Vec<String> {
    let name = format!(
        "listener {} ({:?} on {})",
        i + 1,
        l.protocol,
        l.bind.join(", ")
    );
    let mut problems = Vec::new();
    if l.bind.is_empty() {
        problems.push("bind is empty".to_string());
    }
    match l.addresses() {
        Err(e) => problems.push(e.to_string()),
        Ok(addresses) => {
            for address in addresses {
                if let Some((_, other)) = taken.iter().find(|(a, _)| overlap(*a, address)) {
                    problems.push(format!("{address} is also {other}'s"));
                }
                taken.push((address, format!("listener {}", i + 1)));
            }
        }
    }
    problems.extend(tls_problems(l));
    problems.extend(backend_problems(l));
    if let Some(map) = &l.map {
        problems.extend(map_problems(l, map));
    }
    problems.extend(trust_problems(l));
    problems.extend(
        l.users
            .problems()
            .into_iter()
            .map(|p| format!("users: {p}")),
    );
    problems
        .into_iter()
        .map(|problem| format!("{name}: {problem}"))
        .collect()
}

/// The client leg's TLS. The files themselves are read once, by `server::builder::build`.
fn tls_problems(l: &Listener) -> Vec<String> {
    let mut problems = Vec::new();
    if l.cert.is_some() != l.key.is_some() {
        problems.push("cert and key go together".to_string());
    } else if l.tls != ListenerTls::None && l.cert.is_none() && l.certificates.is_empty() {
        problems.push("tls needs a cert and key (or certificates)".to_string());
    } else if l.certificates.is_acme() && (l.cert.is_some() || l.chain.is_some()) {
        problems.push("certificates = \"acme\" comes without cert, key and chain".to_string());
    }
    if l.certificates.is_acme() && l.tls == ListenerTls::None {
        problems.push("certificates = \"acme\" is for a listener with tls".to_string());
    }
    if l.chain.is_some() && l.cert.is_none() {
        problems.push("chain needs cert".to_string());
    }
    problems
}

/// The listener's own back-end servers and how they are reached.
fn backend_problems(l: &Listener) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = l.backend.host.get() {
        problems.push(format!("backend.host: {e}"));
    }
    if l.backend.host.is_empty() && l.backend.failover.is_empty() && l.map.is_none() {
        problems.push("backend.host is empty".to_string());
    }
    for server in &l.backend.failover {
        if let Err(e) = server.get() {
            problems.push(format!("backend.failover: {e}"));
        }
    }
    problems.extend(source_problems("backend.source", &l.backend.source));
    if l.backend.tls != BackendTls::None {
        let tls_name = l.backend.tls_name();
        if let (true, Err(e)) = (
            !tls_name.is_empty(),
            crate::value::server_name::server_name(&tls_name),
        ) {
            problems.push(e.to_string());
        }
        // The CA file itself is read once, by `server::builder::build`.
    }
    problems
}

/// Each source that is not an IP address, named under `key`.
fn source_problems(key: &str, source: &[IpAddress]) -> Vec<String> {
    source
        .iter()
        .filter(|address| address.ip().is_none())
        .map(|address| format!("{key}: {address:?} is not an IP address"))
        .collect()
}

/// The listener's map, and what may stand beside it.
fn map_problems(l: &Listener, map: &MapConfig) -> Vec<String> {
    let mut problems = Vec::new();
    problems.extend(pool::pool_problems(l, map));
    let needs = if map.kind == MapKind::Pool {
        None
    } else if map.kind.reads_a_file() {
        map.path.is_none().then_some("path")
    } else {
        map.url.is_none().then_some("url")
    };
    if let Some(missing) = needs {
        problems.push(format!("map.{missing} is required for this kind"));
    }
    if map.master_user.is_some() && map.kind != MapKind::Http {
        problems.push(
            "map.master_user needs a map that checks the client's password (kind = \"http\"); \
             with this map any password would log in"
                .to_string(),
        );
    }
    // The master user logs in as the name the service approved; a rewrite at the login
    // stage would log in as someone else.
    let login_rewrites = [
        ("strip_domain", l.users.strip_domain.login()),
        ("add_domain", l.users.add_domain.login()),
        ("lower_case", l.lower_case.login()),
    ];
    for (key, rewrites) in login_rewrites {
        if map.master_user.is_some() && rewrites {
            problems.push(format!(
                "map.master_user with {key} at the login stage would log in as another name \
                 than the one the service approved: use \"lookup\" or \"none\""
            ));
        }
    }
    if map.kind == MapKind::Http && l.client_server_specification {
        problems.push(
            "client_server_specification with an http map would let a client name its own \
             server and skip the service's password check"
                .to_string(),
        );
    }
    if map.master_user.is_some() != map.master_password.is_some() {
        problems.push("map.master_user and map.master_password go together".to_string());
    }
    problems.extend(source_problems("map.source", &map.source));
    problems
}

/// The balancers that may send a PROXY header, the hosts that may name their clients.
fn trust_problems(l: &Listener) -> Vec<String> {
    let mut problems = Vec::new();
    if l.proxy_protocol && l.proxy_trusted.is_empty() {
        problems
            .push("proxy_protocol needs proxy_trusted, the balancers that may send it".to_string());
    }
    for (key, networks) in [
        ("proxy_trusted", &l.proxy_trusted),
        ("login_trusted", &l.login_trusted),
    ] {
        for network in networks {
            if network.net().is_none() {
                problems.push(format!("{key}: {network:?} is not a network"));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_file_gets_defaults() {
        let c = Config::from_toml(
            r#"
            [[listener]]
            protocol = "imap"
            bind = ["127.0.0.1:1143"]
            backend = { host = "127.0.0.1" }
            "#,
        )
        .unwrap();
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.listeners[0].tls, ListenerTls::None);
        assert_eq!(c.listeners[0].backend.port, None);
        assert!(c.listeners[0].backend.verify);
        assert_eq!(c.validate(), Ok(()));
        // What `check` prints reads back to the same configuration.
        assert_eq!(Config::from_toml(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = Config::from_toml("[limits]\nconection_limit = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("conection_limit"), "{e}");
    }

    #[test]
    fn validation_lists_every_problem() {
        let c = Config::from_toml(
            r#"
            [[listener]]
            protocol = "imap"
            bind = ["not an address"]
            tls = "implicit"
            backend = { host = "" }
            "#,
        )
        .unwrap();
        let Problems(problems) = c.validate().unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    /// A listener with `backend` and `map` (tables' insides; no map when empty).
    fn with_sources(backend: &str, map: &str) -> Config {
        let map = if map.is_empty() {
            String::new()
        } else {
            format!("[listener.map]\nkind = \"popmap\"\npath = \"/etc/popmap\"\n{map}\n")
        };
        Config::from_toml(&format!(
            "[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:1143\"]\n\
             [listener.backend]\nhost = \"127.0.0.1\"\n{backend}\n{map}"
        ))
        .unwrap()
    }

    #[test]
    fn source_addresses_are_read_checked_and_printed_back() {
        let c = with_sources(r#"source = ["127.0.0.2", "::1"]"#, "");
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(
            c.listeners[0].sources(),
            [
                "127.0.0.2".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        let printed = c.to_toml();
        assert!(
            printed.contains(r#"source = ["127.0.0.2", "::1"]"#),
            "{printed}"
        );
        assert_eq!(Config::from_toml(&printed).unwrap(), c);

        // Each bad one named, under its key.
        let c = with_sources(
            r#"source = ["10.0.1.x", "10.0.1.2"]"#,
            r#"source = ["10.0.2.1:143"]"#,
        );
        let Problems(problems) = c.validate().unwrap_err();
        assert_eq!(
            problems,
            [
                "listener 1 (Imap on 127.0.0.1:1143): backend.source: \"10.0.1.x\" is not an \
                 IP address",
                "listener 1 (Imap on 127.0.0.1:1143): map.source: \"10.0.2.1:143\" is not an \
                 IP address"
            ]
        );
    }

    #[test]
    fn a_maps_sources_stand_in_for_the_back_ends() {
        let backend = r#"source = ["127.0.0.2"]"#;
        let c = with_sources(backend, r#"source = ["127.0.0.3"]"#);
        assert_eq!(
            c.listeners[0].sources(),
            ["127.0.0.3".parse::<IpAddr>().unwrap()]
        );
        let c = with_sources(backend, "");
        assert_eq!(
            c.listeners[0].sources(),
            ["127.0.0.2".parse::<IpAddr>().unwrap()]
        );
        let c = with_sources("", "");
        assert!(c.listeners[0].sources().is_empty());
    }

    #[test]
    fn a_maps_defaults_are_its_configurations_own() {
        let map = |kind: &str, url: &str| {
            let c = Config::from_toml(&format!(
                "[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:1143\"]\n\
                 [listener.backend]\nhost = \"\"\n[listener.map]\nkind = \"{kind}\"\n{url}\n"
            ))
            .unwrap();
            c.listeners[0].map.clone().unwrap()
        };
        let ldap = map("ldap", "url = \"ldap://h/dc=x\"");
        assert_eq!(ldap.lookup_timeout(), Duration::from_secs(10));
        assert_eq!(
            (
                ldap.cache_for(),
                ldap.negative_cache_for(),
                ldap.cache_entries()
            ),
            (Duration::from_secs(60), Duration::from_secs(10), 10_000)
        );
        assert!(!ldap.kind.reads_a_file() && !ldap.logs_in_as_the_maps_user());
        let http = map("http", "url = \"http://h/auth\"\nmaster_separator = \"%\"");
        assert_eq!(
            http.cache_for(),
            Duration::ZERO,
            "answers depend on the password"
        );
        assert!(http.logs_in_as_the_maps_user());
        assert_eq!(http.master_separator(), "%");
        let file = map("popmap", "path = \"/etc/perdition/popmap\"");
        assert!(file.kind.reads_a_file());
        assert_eq!(
            (file.cache_for(), file.master_separator()),
            (Duration::ZERO, "*")
        );
    }
}
