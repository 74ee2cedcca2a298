//! The runtime pieces built once from a validated configuration: per listener, the TLS
//! configurations, the map and the settings every client-side machine starts from. Building
//! is where certificates are read, once; `portcullis check` runs the same step without
//! listening, and a reload will run it again and swap the result in.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::authlog::hostname;
use crate::config::{BackendTls, Config, Limits, Listener, ListenerTls};
use crate::map::static_server::StaticServer;
use crate::map::{Endpoint, Map};
use crate::protocol::{ClientSettings, Protocol, Security};
use crate::tls::{self, BackendVerification};

/// What every session of one listener shares.
pub struct ListenerState {
    pub config: Listener,
    pub limits: Limits,
    /// The addresses to listen on, resolved.
    pub addresses: Vec<SocketAddr>,
    /// TLS towards clients, for implicit TLS and STARTTLS.
    pub acceptor: Option<TlsAcceptor>,
    /// TLS towards the back ends, when they are reached over TLS.
    pub connector: Option<TlsConnector>,
    /// Who serves which user.
    pub map: Box<dyn Map>,
    /// What a new client-side machine starts from; replaced once when capabilities are
    /// learned from the back end, shared by `Arc` with every connection.
    client_settings: RwLock<Arc<ClientSettings>>,
}

/// Check the configuration and build every listener's state; all problems at once.
pub fn build(config: &Config) -> Result<Vec<Arc<ListenerState>>, Vec<String>> {
    let mut problems = config.validate().err().unwrap_or_default();
    let mut built = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        match ListenerState::build(l, &config.limits) {
            Ok(state) => built.push(Arc::new(state)),
            Err(e) => {
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
    if problems.is_empty() {
        Ok(built)
    } else {
        Err(problems)
    }
}

impl ListenerState {
    fn build(l: &Listener, limits: &Limits) -> Result<ListenerState, String> {
        let endpoint = Endpoint {
            host: l.backend.host.clone(),
            port: l.backend.port_for(l.protocol),
            tls: l.backend.tls,
            tls_name: l.backend.server_name.clone(),
        };
        Ok(ListenerState {
            addresses: l.addresses()?,
            acceptor: acceptor(l)?,
            connector: connector(l)?,
            map: Box::new(StaticServer::new(endpoint)),
            client_settings: RwLock::new(Arc::new(client_settings(l, limits))),
            config: l.clone(),
            limits: limits.clone(),
        })
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

fn acceptor(l: &Listener) -> Result<Option<TlsAcceptor>, String> {
    match (l.tls, &l.cert, &l.key) {
        (ListenerTls::None, _, _) => Ok(None),
        (_, Some(cert), Some(key)) => {
            let config = tls::server_config(cert, key, l.protocol.alpn_id())?;
            Ok(Some(TlsAcceptor::from(config)))
        }
        _ => Err("tls needs both cert and key".into()),
    }
}

fn connector(l: &Listener) -> Result<Option<TlsConnector>, String> {
    if l.backend.tls == BackendTls::None {
        return Ok(None);
    }
    let verification = if l.backend.verify {
        let ca = l.backend.ca_file.clone();
        BackendVerification::CaFile(ca.unwrap_or_else(|| tls::SYSTEM_CA_BUNDLE.into()))
    } else {
        BackendVerification::None
    };
    Ok(Some(TlsConnector::from(tls::client_config(&verification)?)))
}

fn client_settings(l: &Listener, limits: &Limits) -> ClientSettings {
    ClientSettings {
        capability: l.capability.clone(),
        starttls_offered: matches!(l.tls, ListenerTls::Starttls | ListenerTls::StarttlsRequired),
        tls_required: l.tls == ListenerTls::StarttlsRequired,
        tls_active: l.tls == ListenerTls::Implicit,
        login_disabled: l.login_disabled,
        ok_line: l.ok_line.clone(),
        greeting_host: hostname(),
        product: l.greeting_name.clone(),
        limits: limits.prelogin(),
    }
}
