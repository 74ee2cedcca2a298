//! The runtime pieces built once from a validated configuration: per listener, the TLS
//! configurations, the map and the settings every client-side machine starts from. Building
//! is where certificates are read, once; `portcullis check` runs the same step without
//! listening, and a reload will run it again and swap the result in.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use tokio_rustls::TlsConnector;

use crate::log::hostname;
use crate::tls::server_stream::Acceptor as TlsAcceptor;

use crate::certificates::ServedCertificates;
use crate::config::{
    Backend, BackendTls, BindError, Config, Limits, Listener, ListenerTls, MapKind, Problems,
};
use crate::map::factory;
use crate::map::router::{Defaults, Master, Router};
use crate::map::Endpoint;
use crate::map::MapSetupError;
use crate::outgoing::Sources;
use crate::protocol::Secret;
use crate::protocol::{ClientSettings, Protocol, Security};
use crate::tls::{self, BackendVerification, TlsSetupError};
use crate::value::host_port::HostPortError;
use crate::value::Network;

/// What every session of one listener shares.
pub struct ListenerState {
    pub config: Listener,
    pub limits: Limits,
    /// The addresses to listen on, resolved.
    pub addresses: Vec<SocketAddr>,
    /// TLS towards clients, for implicit TLS and STARTTLS.
    pub acceptor: Option<TlsAcceptor>,
    /// What the acceptor serves, for the metrics (read at every scrape).
    pub certificates: Option<Arc<dyn ServedCertificates>>,
    /// TLS towards the back ends, when they are reached over TLS.
    pub connector: Option<TlsConnector>,
    /// Who serves which user.
    pub router: Router,
    /// The balancers that must send a PROXY header first; `None` when the listener takes
    /// clients directly.
    pub proxy_trusted: Option<Vec<ipnet::IpNet>>,
    /// Peers that may name the client they speak for (`ID`, `XCLIENT`).
    pub login_trusted: Vec<ipnet::IpNet>,
    /// The local addresses its back-end connections come from, in turn.
    pub sources: Sources,
    /// The listener in metrics and the session view: its bind addresses.
    pub label: String,
    /// What a new client-side machine starts from; replaced once when capabilities are
    /// learned from the back end, shared by `Arc` with every connection.
    client_settings: RwLock<Arc<ClientSettings>>,
}

/// The listeners built from a configuration, and what the admin should be told about it.
pub struct Built {
    pub listeners: Vec<Arc<ListenerState>>,
    /// Accepted, but worth a log line (a map line whose meaning differs from Perdition's).
    pub warnings: Vec<String>,
}

/// What keeps one listener from being built; `check` prints it after the listener's name.
#[derive(Debug, thiserror::Error)]
pub enum ListenerProblem {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("tls needs a cert and key (or certificates)")]
    NoCertificate,
    /// The client leg's certificates.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// The back-end leg's trust (its CA files).
    #[error("backend CA: {0}")]
    BackendCa(#[source] TlsSetupError),
    #[error(transparent)]
    Server(#[from] HostPortError),
    #[error(transparent)]
    Map(#[from] MapSetupError),
    #[error("{title} has no implicit-TLS mode; use starttls")]
    NoImplicitTls { title: &'static str },
    #[error("{title} back ends have no implicit TLS; use starttls")]
    NoImplicitTlsBackEnd { title: &'static str },
}

/// Check the configuration and build every listener's state; all problems at once.
pub fn build(config: &Config) -> Result<Built, Problems> {
    build_next(config, &[])
}

/// [`build`] for a reload: a listener on the same addresses as one of `previous` keeps that
/// one's memory of dead servers, and its map (cache, connections) when the map's settings
/// are the same; a map read from a file is read anew all the same.
pub fn build_next(config: &Config, previous: &[Arc<ListenerState>]) -> Result<Built, Problems> {
    let mut problems = config.validate().err().map(|p| p.0).unwrap_or_default();
    let mut built = Vec::new();
    let mut warnings = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        match ListenerState::build(l, &config.limits, &mut warnings) {
            Ok(mut state) => {
                state.carry_over(previous);
                built.push(Arc::new(state))
            }
            Err(errors) => {
                for e in errors {
                    let problem = format!(
                        "listener {} ({:?} on {}): {e}",
                        i + 1,
                        l.protocol,
                        l.bind.join(", ")
                    );
                    // `validate` may have said it already (an unresolvable address).
                    if !problems.contains(&problem) {
                        problems.push(problem);
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(Built {
            listeners: built,
            warnings,
        })
    } else {
        Err(Problems(problems))
    }
}

impl ListenerState {
    fn carry_over(&mut self, previous: &[Arc<ListenerState>]) {
        let Some(old) = previous.iter().find(|p| p.config.bind == self.config.bind) else {
            return;
        };
        self.router.dead = old.router.dead.clone();
        // Capabilities learned from the same back end still hold: new clients need not see
        // the defaults until it is asked again.
        let same_backend = old.config.backend == self.config.backend
            && old.config.protocol == self.config.protocol
            && old.config.capability.is_none()
            && self.config.capability.is_none();
        if same_backend {
            if let Some(learned) = old.client_settings().capability.clone() {
                self.set_learned_capability(learned);
            }
        }
        if let (Some(map), Some(settings)) = (&old.router.map, &self.config.map) {
            if old.config.map.as_ref() == Some(settings) && !settings.kind.reads_a_file() {
                self.router.map = Some(map.clone());
            }
        }
    }

    /// Every problem of the listener at once (`portcullis check` lists them all).
    fn build(
        l: &Listener,
        limits: &Limits,
        warnings: &mut Vec<String>,
    ) -> Result<ListenerState, Vec<ListenerProblem>> {
        let addresses = l.addresses().map_err(ListenerProblem::from);
        let tls = acceptor(l, warnings);
        let connector = connector(l).map_err(ListenerProblem::BackendCa);
        let router = router(l, warnings);
        let misfits = misfits(l);
        match (addresses, tls, connector, router) {
            (Ok(addresses), Ok(tls), Ok(connector), Ok(router)) if misfits.is_empty() => {
                let (acceptor, certificates) = tls.unzip();
                Ok(ListenerState {
                    addresses,
                    acceptor,
                    certificates,
                    connector,
                    router,
                    proxy_trusted: l.proxy_protocol.then(|| networks(&l.proxy_trusted)),
                    login_trusted: networks(&l.login_trusted),
                    client_settings: RwLock::new(Arc::new(client_settings(l, limits))),
                    sources: Sources::new(&l.sources()),
                    label: l.bind.join(","),
                    config: l.clone(),
                    limits: limits.clone(),
                })
            }
            (addresses, tls, connector, router) => {
                Err([addresses.err(), tls.err(), connector.err(), router.err()]
                    .into_iter()
                    .flatten()
                    .chain(misfits)
                    .collect())
            }
        }
    }

    /// How the listener's own back end is reached, for log lines written before a server is
    /// chosen.
    pub fn backend_security(&self) -> Security {
        security(self.config.backend.tls)
    }

    pub fn protocol(&self) -> Protocol {
        self.config.protocol
    }

    pub fn implicit_tls(&self) -> bool {
        self.config.tls == ListenerTls::Implicit
    }

    /// `IMAP4S`, `POP3`... as Perdition's log lines name the listener's protocol.
    pub fn log_protocol(&self) -> &'static str {
        self.protocol().log_name(self.implicit_tls())
    }

    /// How a client is protected from its first byte on.
    pub fn initial_security(&self) -> Security {
        if self.implicit_tls() {
            Security::Ssl
        } else {
            Security::Plaintext
        }
    }

    pub fn client_settings(&self) -> Arc<ClientSettings> {
        match self.client_settings.read() {
            Ok(settings) => settings.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Offer `capability`, learned from the back end, to clients from now on, unless the admin
    /// configured capabilities.
    pub fn set_learned_capability(&self, capability: String) {
        if self.config.capability.is_some() {
            return;
        }
        if let Ok(mut settings) = self.client_settings.write() {
            let mut updated = ClientSettings::clone(&settings);
            updated.capability = Some(capability);
            *settings = Arc::new(updated);
        }
    }
}

/// The networks of a validated listener (a text that is no network is a problem `validate`
/// has named: the listener is not built).
fn networks(list: &[Network]) -> Vec<ipnet::IpNet> {
    list.iter().filter_map(Network::net).collect()
}

/// What the listener's protocol cannot do: implicit TLS where it has none (ManageSieve), on
/// either leg; both at once when both are asked for.
fn misfits(l: &Listener) -> Vec<ListenerProblem> {
    let protocol = l.protocol.descriptor();
    let mut problems = Vec::new();
    if protocol.ports.implicit_tls.is_some() {
        return problems;
    }
    let title = protocol.title;
    if l.tls == ListenerTls::Implicit {
        problems.push(ListenerProblem::NoImplicitTls { title });
    }
    if l.backend.tls == BackendTls::Implicit {
        problems.push(ListenerProblem::NoImplicitTlsBackEnd { title });
    }
    problems
}

/// The port of the listener's own back-end servers: `backend.port`, else the protocol's.
fn backend_port(backend: &Backend, protocol: Protocol) -> u16 {
    backend
        .port
        .unwrap_or_else(|| protocol.default_port(backend.tls == BackendTls::Implicit))
}

/// The listener's routing: its map (read now), its own servers, the user-name rules.
fn router(l: &Listener, warnings: &mut Vec<String>) -> Result<Router, ListenerProblem> {
    let backend = &l.backend;
    let port = backend_port(backend, l.protocol);
    let mut servers = Vec::new();
    if !backend.host.is_empty() {
        // `host` may carry its own port; `port` is then the one of the others.
        let (host, own_port) = backend.host.get().map_err(|e| e.clone())?;
        servers.push(Endpoint {
            host: host.to_string(),
            port: own_port.unwrap_or(port),
            tls: backend.tls,
            tls_name: backend.server_name.clone(),
        });
    }
    for server in &backend.failover {
        let (host, server_port) = server.get().map_err(|e| e.clone())?;
        servers.push(Endpoint {
            host: host.to_string(),
            port: server_port.unwrap_or(port),
            tls: backend.tls,
            tls_name: None,
        });
    }
    let map = match &l.map {
        None => None,
        Some(m) => Some(std::sync::Arc::from(factory::build(m, warnings)?)),
    };
    let mut names = l.users.clone();
    names.lower_case = l.lower_case;
    Ok(Router {
        names,
        map,
        servers,
        random_first: backend.random_first,
        defaults: Defaults {
            port,
            tls: backend.tls,
        },
        client_server_specification: l.client_server_specification,
        master: l.map.as_ref().and_then(|m| {
            let (name, password) = (m.master_user.clone()?, m.master_password.clone()?);
            Some(Master {
                name,
                password: Secret::new(password.expose().as_bytes().to_vec()),
                separator: m.master_separator().to_string(),
            })
        }),
        // nginx's Auth-User always names the back-end user.
        username_from_map: l.map.as_ref().is_some_and(|m| m.logs_in_as_the_maps_user()),
        dead: Default::default(),
        local_domains: Default::default(),
    })
}

/// TLS towards clients, and the certificates it serves.
type Serving = (TlsAcceptor, Arc<dyn ServedCertificates>);

fn acceptor(l: &Listener, warnings: &mut Vec<String>) -> Result<Option<Serving>, ListenerProblem> {
    if l.tls == ListenerTls::None {
        return Ok(None);
    }
    if l.certificates.is_acme() {
        let obtained = tls::ObtainedCertificates::of_process();
        let (config, lax) = tls::obtained_server_config(
            obtained.clone(),
            l.protocol.alpn_id(),
            &l.tls_versions,
            l.ticket_keys.as_deref(),
        )?;
        warnings.extend(lax);
        return Ok(Some((TlsAcceptor::from(config), obtained)));
    }
    let mut pairs: Vec<(&std::path::Path, &std::path::Path)> = Vec::new();
    if let (Some(cert), Some(key)) = (&l.cert, &l.key) {
        pairs.push((cert, key));
    }
    pairs.extend(
        l.certificates
            .files()
            .iter()
            .map(|p| (p.cert.as_path(), p.key.as_path())),
    );
    if pairs.is_empty() {
        return Err(ListenerProblem::NoCertificate);
    }
    let (config, certificates, expiring) = tls::server_config(
        &pairs,
        l.chain.as_deref(),
        l.protocol.alpn_id(),
        &l.tls_versions,
        l.ticket_keys.as_deref(),
    )?;
    warnings.extend(expiring);
    Ok(Some((TlsAcceptor::from(config), certificates)))
}

fn connector(l: &Listener) -> Result<Option<TlsConnector>, TlsSetupError> {
    if l.backend.tls == BackendTls::None {
        return Ok(None);
    }
    let b = &l.backend;
    let verification = if b.verify {
        // The system's CAs unless the admin named others.
        let ca_files = match (&b.ca_file, &b.ca_path) {
            (None, None) => vec![tls::SYSTEM_CA_BUNDLE.into()],
            (file, _) => file.iter().cloned().collect(),
        };
        BackendVerification::Trust {
            ca_files,
            ca_dirs: b.ca_path.iter().cloned().collect(),
            tolerate: b.tolerate.clone(),
        }
    } else {
        BackendVerification::None
    };
    let config = tls::client_config_for(&verification, &b.tls_versions)?;
    Ok(Some(TlsConnector::from(config)))
}

fn client_settings(l: &Listener, limits: &Limits) -> ClientSettings {
    ClientSettings {
        capability: l.capability.clone(),
        starttls_offered: matches!(l.tls, ListenerTls::Starttls | ListenerTls::StarttlsRequired),
        tls_required: l.tls == ListenerTls::StarttlsRequired,
        tls_active: l.tls == ListenerTls::Implicit,
        login_disabled: l.login_disabled,
        oauth: l.oauth,
        // An http map's service decides about a name that is not UTF-8 (nginx passes it);
        // the other maps never see one.
        pass_non_utf8_names: l.map.as_ref().is_some_and(|m| m.kind == MapKind::Http),
        ok_line: l.ok_line.clone(),
        greeting_host: hostname(),
        product: l.greeting_name.clone(),
        limits: limits.prelogin(),
    }
}

/// The `server-secure=` of a back-end TLS mode.
pub fn security(tls: BackendTls) -> Security {
    match tls {
        BackendTls::None => Security::Plaintext,
        BackendTls::Starttls => Security::Starttls,
        BackendTls::Implicit => Security::Ssl,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener of `protocol` with `backend` (an inline table's inside).
    fn listener(protocol: &str, backend: &str) -> Listener {
        let text = format!(
            "[[listener]]\nprotocol = {protocol:?}\nbind = [\"127.0.0.1:1\"]\nbackend = {{ {backend} }}\n"
        );
        Config::from_toml(&text).unwrap().listeners.remove(0)
    }

    #[test]
    fn a_back_end_without_a_port_gets_the_protocols_own() {
        let l = listener("pop3", r#"host = "mail", tls = "implicit""#);
        assert_eq!(backend_port(&l.backend, l.protocol), 995);
        let l = listener("imap", r#"host = "mail""#);
        assert_eq!(backend_port(&l.backend, l.protocol), 143);
    }

    #[test]
    fn managesieve_has_no_implicit_tls_on_either_leg() {
        let said =
            |l: &Listener| -> Vec<String> { misfits(l).iter().map(|p| p.to_string()).collect() };
        let mut l = listener("managesieve", r#"host = "mail", tls = "implicit""#);
        assert_eq!(
            said(&l),
            ["ManageSieve back ends have no implicit TLS; use starttls"]
        );
        l.tls = ListenerTls::Implicit;
        assert_eq!(
            said(&l),
            [
                "ManageSieve has no implicit-TLS mode; use starttls",
                "ManageSieve back ends have no implicit TLS; use starttls"
            ]
        );
        l.backend.tls = BackendTls::Starttls;
        l.tls = ListenerTls::Starttls;
        assert!(said(&l).is_empty());
        let l = listener("submission", r#"host = "mail", tls = "implicit""#);
        assert!(said(&l).is_empty());
    }
}
