//! The target: where to connect, with or without implicit TLS, and how a connection is opened.
//!
//! TLS uses rustls with the ring provider (as the proxy does). Without `--resume` every
//! connection makes a full handshake (resumption disabled); with it, each simulated client owns a
//! `ClientConfig` with its own session cache, so a client resumes its own earlier session as a real
//! returning mail client would, and never one from another client.
//!
//! With `--source` addresses, each connection binds to the next one (round robin) before
//! connecting; without, the kernel picks the source as usual.

use crate::error::{BenchError, ErrorKind};
use rustls::client::Resumption;
use rustls::{ClientConfig, HandshakeKind, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

/// A plain or TLS byte stream; sessions do not care which.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub struct Target {
    /// `host:port` as given; resolved at each connect (loopback in practice, so it is cheap).
    pub addr: String,
    /// TLS settings when the target speaks implicit TLS.
    pub tls: Option<TlsTarget>,
    /// Local addresses to bind to, round robin (`--source`); empty: the kernel's choice.
    sources: Vec<IpAddr>,
    /// The round robin's counter: connection `n` binds to `sources[n % len]`.
    next_source: AtomicUsize,
}

pub struct TlsTarget {
    /// The name checked against the certificate (a DNS name or an IP address).
    pub server_name: ServerName<'static>,
    /// The base configuration: roots from `--ca`, resumption disabled.
    pub base: Arc<ClientConfig>,
}

/// What one simulated client carries between its connections: its own TLS configuration (and so
/// its own session cache when resuming).
#[derive(Clone)]
pub struct ClientIdentity {
    tls: Option<Arc<ClientConfig>>,
}

/// A connection and whether its TLS handshake resumed a session (`None` for plain TCP).
pub struct Connected {
    pub stream: Box<dyn Io>,
    pub resumed: Option<bool>,
}

impl Target {
    pub fn new(
        addr: &str,
        tls: bool,
        ca: Option<&Path>,
        server_name: Option<&str>,
        sources: Vec<IpAddr>,
    ) -> Result<Target, String> {
        if !addr.contains(':') {
            return Err(format!("--target {addr}: expected HOST:PORT"));
        }
        // A literal target address is checked now: a source of the other family could never
        // reach it, and would otherwise fail every connection it is picked for.
        if let Ok(a) = addr.parse::<SocketAddr>() {
            if let Some(s) = sources.iter().find(|s| s.is_ipv4() != a.is_ipv4()) {
                return Err(format!("--source {s} cannot reach --target {addr}"));
            }
        }
        let tls = if tls {
            let host = match server_name {
                Some(n) => n.to_string(),
                None => host_of(addr),
            };
            let server_name = ServerName::try_from(host.clone())
                .map_err(|e| format!("server name {host:?}: {e}"))?;
            Some(TlsTarget {
                server_name,
                base: Arc::new(client_config(ca)?),
            })
        } else {
            None
        };
        Ok(Target {
            addr: addr.to_string(),
            tls,
            sources,
            next_source: AtomicUsize::new(0),
        })
    }

    /// A new simulated client. With `resume`, it gets a session cache of its own.
    pub fn identity(&self, resume: bool) -> ClientIdentity {
        let tls = self.tls.as_ref().map(|t| {
            if resume {
                let mut cfg = (*t.base).clone();
                // A few entries: one server, but TLS 1.3 servers send several tickets.
                cfg.resumption = Resumption::in_memory_sessions(8);
                Arc::new(cfg)
            } else {
                t.base.clone()
            }
        });
        ClientIdentity { tls }
    }

    pub async fn connect(&self, who: &ClientIdentity) -> Result<Connected, BenchError> {
        let tcp = self.tcp().await?;
        // Commands are small and latency is what we measure: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        match (&self.tls, &who.tls) {
            (Some(t), Some(cfg)) => {
                let tls = TlsConnector::from(cfg.clone())
                    .connect(t.server_name.clone(), tcp)
                    .await
                    .map_err(|e| BenchError::new(ErrorKind::Tls, e.to_string()))?;
                let resumed = tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
                Ok(Connected {
                    stream: Box::new(tls),
                    resumed: Some(resumed),
                })
            }
            _ => Ok(Connected {
                stream: Box::new(tcp),
                resumed: None,
            }),
        }
    }

    /// The `--source` addresses, expanded (for the report).
    pub fn sources(&self) -> &[IpAddr] {
        &self.sources
    }

    /// The TCP connection, from the next `--source` address when there are some.
    async fn tcp(&self) -> Result<TcpStream, BenchError> {
        let fail =
            |e: std::io::Error| BenchError::new(ErrorKind::Connect, format!("{}: {e}", self.addr));
        if self.sources.is_empty() {
            return TcpStream::connect(&self.addr).await.map_err(fail);
        }
        let n = self.next_source.fetch_add(1, Ordering::Relaxed);
        let source = self.sources[n % self.sources.len()];
        // Resolved at each connect, as without sources (a literal address costs no lookup);
        // the first address of the source's family is the one connected to.
        let dest = tokio::net::lookup_host(&self.addr)
            .await
            .map_err(fail)?
            .find(|a| a.is_ipv4() == source.is_ipv4())
            .ok_or_else(|| {
                BenchError::new(
                    ErrorKind::Connect,
                    format!(
                        "{}: no address of the family of --source {source}",
                        self.addr
                    ),
                )
            })?;
        let socket = if source.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(fail)?;
        // Port 0: the kernel picks a free port of that address (EADDRNOTAVAIL here when the
        // address is not local, EADDRINUSE when its ports are exhausted: both counted `connect`).
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| BenchError::new(ErrorKind::Connect, format!("bind {source}: {e}")))?;
        socket.connect(dest).await.map_err(fail)
    }
}

/// The host part of `host:port` or `[v6]:port`.
fn host_of(addr: &str) -> String {
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

/// rustls with ring, TLS 1.2 and 1.3, roots from the CA file, no resumption (per-client configs
/// turn it on).
fn client_config(ca: Option<&Path>) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    let ca = ca.ok_or("--tls needs --ca FILE (the CA that signed the target's certificate)")?;
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("{}: {e}", ca.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", ca.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", ca.display()));
    }
    for c in certs {
        roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.resumption = Resumption::disabled();
    Ok(cfg)
}
