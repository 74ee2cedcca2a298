//! From credentials to a logged-in back-end connection: ask the map, connect (trying the
//! target's endpoints in order while connecting fails), run TLS and the protocol's server-side
//! machine. Each step has its own timeout; every way this can end is a [`LoginOutcome`].

use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

use crate::config::BackendTls;
use crate::fleet::Lease;
use crate::log::AuthRecord;
use crate::map::router::Router;
use crate::map::{Connection, Endpoint, Login, MapError, Target};
use crate::metrics::{HandshakeSide, LookupResult, Metrics, ProtocolLabels};
use crate::protocol::{Credentials, LoginOutcome, Refusal, ServerEvent, ServerSettings};
use crate::tls;

use super::builder::{security, ListenerState};
use super::forward;
use super::holding;
use super::loop_guard::Registration;
use super::services::Services;
use super::stream::{write, BackendStream, MaybeTls};

/// Bytes read from a back end at a time before login.
const READ_CHUNK: usize = 4096;

/// A back end that accepted the login.
pub struct LoggedIn {
    pub stream: BackendStream,
    /// What the back end sent after its answer; it belongs to the client.
    pub leftover: Vec<u8>,
    /// The session's place in the fleet's counts (caps, pools), for as long as it lasts.
    pub lease: Option<Lease>,
}

impl LoggedIn {
    fn new(stream: BackendStream, leftover: Vec<u8>) -> LoggedIn {
        LoggedIn {
            stream,
            leftover,
            lease: None,
        }
    }
}

/// The back end as the metrics name it: a server of the configuration (the listener's own,
/// a pool's) by its name, any other (a map's answer, which a login name may shape) as `map`,
/// so that no client can make series without end.
fn metric_name(router: &Router, endpoint: &Endpoint) -> String {
    let same = |host: &str, port: u16| host == endpoint.host && port == endpoint.port;
    let own = router.servers.iter().any(|s| same(&s.host, s.port));
    let pooled = router
        .map
        .as_ref()
        .and_then(|m| m.pool())
        .is_some_and(|pool| {
            let port = router.defaults.port;
            pool.servers()
                .iter()
                .any(|s| same(&s.host, s.port.unwrap_or(port)))
        });
    match own || pooled {
        true => endpoint.log_name(),
        false => "map".to_string(),
    }
}

/// Route the user, connect and log in. `record` learns the server and its security.
pub async fn login(
    listener: &ListenerState,
    services: &Services,
    connection: &Connection,
    attempt: u32,
    creds: Credentials,
    record: &mut AuthRecord,
) -> (LoginOutcome, Option<LoggedIn>) {
    let login = Login {
        user: &creds.user,
        user_bytes: creds.user_bytes.as_deref(),
        password: &creds.secret,
        attempt,
        connection,
    };
    let target = match route(listener, services, &login).await {
        Ok(target) => target,
        Err(MapError::Denied { message, retry }) => {
            return (LoginOutcome::Denied { message, retry }, None)
        }
        Err(MapError::NotFound) => {
            // Perdition's line: the port is known, the server is not.
            record.server = Some(format!("(null):{}", listener.router.defaults.port));
            return (LoginOutcome::Refused(Refusal::NoServer), None);
        }
        Err(MapError::Unavailable(reason)) => {
            return (LoginOutcome::no_connection(format!("map: {reason}")), None)
        }
    };
    let placement = target.placement.clone();
    let (creds, endpoints) = match credentials_for(creds, target, record) {
        Ok(prepared) => prepared,
        Err(refused) => return (refused, None),
    };
    let user = creds.user.clone();
    let done = try_endpoints(listener, services, connection, &endpoints, creds, record).await;
    match done {
        (outcome, Some(mut backend)) if outcome.is_accepted() => {
            let holding = holding::Holder {
                listener,
                services,
                peer: connection.peer,
            };
            match holding.hold(&user, placement).await {
                Ok(lease) => {
                    backend.lease = lease;
                    (outcome, Some(backend))
                }
                // The back-end connection closes unused.
                Err(over) => (over, None),
            }
        }
        done => done,
    }
}

/// Ask the listener's router, within `backend_login_timeout` (a map that queues or stalls
/// answers unavailable in time); the lookup is counted and what the router noticed logged.
async fn route(
    listener: &ListenerState,
    services: &Services,
    login: &Login<'_>,
) -> Result<Target, MapError> {
    let router = &listener.router;
    let wait = listener.limits.backend_login_timeout();
    let asked = std::time::Instant::now();
    let routed = tokio::time::timeout(wait, router.route(login))
        .await
        .unwrap_or_else(|_| {
            let reason = format!("no answer from the map in {} s", wait.as_secs());
            Err(MapError::Unavailable(reason))
        });
    if let Some(map) = &listener.config.map {
        let result = match &routed {
            // The map failed and the listener's own servers stood in.
            Ok(target) if target.fallback_reason.is_some() => LookupResult::Error,
            Ok(_) => LookupResult::Found,
            Err(MapError::NotFound) => LookupResult::NotFound,
            Err(MapError::Denied { .. }) => LookupResult::Denied,
            Err(MapError::Unavailable(_)) => LookupResult::Error,
        };
        services
            .metrics
            .map_lookup(map.kind.name(), result, asked.elapsed());
    }
    for line in router.local_domains.take_failures() {
        services.logger.warning(&line);
    }
    if let Ok(Target {
        fallback_reason: Some(reason),
        ..
    }) = &routed
    {
        services.logger.warning(&format!(
            "map failed for {}: {reason}; using the listener's servers",
            login.connection.peer
        ));
    }
    routed
}

/// The credentials to log in to the back end with, from the client's and the map's answer,
/// and the servers to try; `Err` with the outcome when they cannot be sent.
fn credentials_for(
    creds: Credentials,
    target: Target,
    record: &mut AuthRecord,
) -> Result<(Credentials, Vec<Endpoint>), LoginOutcome> {
    // A name that is not UTF-8 logs in only as the name the service gave for it
    // (Auth-User): its escaped form is nobody's name.
    if creds.user_bytes.is_some() && target.map_user.is_none() {
        return Err(LoginOutcome::Denied {
            message: "Invalid user name".to_string(),
            retry: true,
        });
    }
    if let Some(user) = target.map_user {
        record.user = Some(user);
    }
    // A bearer token goes to the back end as the client sent it, unless the map gave a
    // password (or a master user) to log in with instead.
    let bearer = match target.password {
        Some(_) => None,
        None => creds.bearer,
    };
    let creds = Credentials {
        user: target.user,
        user_bytes: None,
        secret: target.password.unwrap_or(creds.secret),
        bearer,
    };
    // What a map answered goes into a login command: held to the client's own rule.
    if creds.check_characters().is_err() {
        let reason = "the map's user name or password holds a NUL, CR or LF";
        return Err(LoginOutcome::no_connection(reason));
    }
    Ok((creds, target.endpoints))
}

/// Connect to each server in turn until one answers, then log in there. Failover happens
/// here only: once credentials are sent, the attempt is what it is.
async fn try_endpoints(
    listener: &ListenerState,
    services: &Services,
    connection: &Connection,
    endpoints: &[Endpoint],
    creds: Credentials,
    record: &mut AuthRecord,
) -> (LoginOutcome, Option<LoggedIn>) {
    let router = &listener.router;
    let metrics = &services.metrics;
    let labels = ProtocolLabels {
        protocol: listener.protocol().name(),
    };
    let mut outcome = LoginOutcome::no_connection("no server to connect to");
    for endpoint in endpoints {
        record.server = Some(endpoint.log_name());
        record.server_secure = security(endpoint.tls);
        let started = std::time::Instant::now();
        match connect(listener, services, endpoint).await {
            Ok((tcp, _ours)) => {
                router.dead.connected(endpoint);
                metrics.backend_connection(&listener.label, metric_name(router, endpoint), true);
                let connected = std::time::Instant::now();
                metrics
                    .backend_connect
                    .get_or_create(&labels)
                    .observe((connected - started).as_secs_f64());
                let done =
                    converse_in_time(listener, services, endpoint, connection, tcp, creds).await;
                metrics
                    .backend_login
                    .get_or_create(&labels)
                    .observe(connected.elapsed().as_secs_f64());
                return done;
            }
            Err(failed) => {
                metrics.backend_connect_errors.get_or_create(&labels).inc();
                metrics.backend_connection(&listener.label, metric_name(router, endpoint), false);
                if let (Some(map), true) = (&router.map, failed.servers_fault) {
                    map.connect_failed(endpoint);
                }
                router
                    .dead
                    .connect_failed(endpoint, std::time::Instant::now());
                outcome = failed.outcome;
            }
        }
    }
    (outcome, None)
}

/// Open the TCP connection, from the listener's next source address, within
/// `backend_connect_timeout`. The socket's own address is registered before it connects, so
/// that a connection to one of our own listeners is known as ours however soon it is
/// accepted.
async fn connect<'s>(
    listener: &ListenerState,
    services: &'s Services,
    endpoint: &Endpoint,
) -> Result<(TcpStream, Registration<'s>), NotConnected> {
    let wait = listener.limits.backend_connect_timeout();
    let keepalive = listener.config.tcp_keepalive;
    // Bound, not yet connected: known by its port until it is dropped (see loop_guard).
    let register = |socket: &TcpSocket, target| {
        services
            .own_connections
            .register(socket.local_addr().ok(), target)
    };
    let (host, port) = (endpoint.connect_host(), endpoint.port);
    let attempt = listener.sources.connect(host, port, keepalive, register);
    match timeout(wait, attempt).await {
        Ok(Ok((tcp, ours))) => {
            // Also by its real address: a host reaching itself at another of its addresses
            // (127.0.0.2) speaks from the route's, not the one it reached.
            let ours = ours.and(tcp.local_addr().ok());
            let _ = tcp.set_nodelay(true);
            Ok((tcp, ours))
        }
        Ok(Err(e)) => Err(NotConnected {
            servers_fault: servers_fault(&e),
            outcome: LoginOutcome::no_connection(e.to_string()),
        }),
        Err(_) => Err(NotConnected {
            servers_fault: true,
            outcome: LoginOutcome::no_connection(format!(
                "timed out after {} s connecting",
                wait.as_secs()
            )),
        }),
    }
}

/// A connect that failed: the outcome, and whether the server is to blame (refused,
/// unreachable, no answer) rather than this host (out of descriptors or ports, a source
/// address it lacks): only the server's failures count against a pool server's health.
struct NotConnected {
    outcome: LoginOutcome,
    servers_fault: bool,
}

fn servers_fault(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionReset | HostUnreachable | NetworkUnreachable | TimedOut
    )
}

/// [`converse`] within `backend_login_timeout`.
async fn converse_in_time(
    listener: &ListenerState,
    services: &Services,
    endpoint: &Endpoint,
    connection: &Connection,
    tcp: TcpStream,
    creds: Credentials,
) -> (LoginOutcome, Option<LoggedIn>) {
    let wait = listener.limits.backend_login_timeout();
    let conversation = converse(listener, services, endpoint, connection, tcp, creds);
    match timeout(wait, conversation).await {
        Ok(Ok((outcome, logged_in))) if outcome.is_accepted() => (outcome, Some(logged_in)),
        Ok(Ok((outcome, _))) | Ok(Err(outcome)) => (outcome, None),
        Err(_) => {
            let reason = format!(
                "timed out after {} s waiting for the login answer",
                wait.as_secs()
            );
            (LoginOutcome::unavailable(reason), None)
        }
    }
}

/// Greeting, TLS and login on an open connection, driven by the protocol's server side.
async fn converse(
    listener: &ListenerState,
    services: &Services,
    endpoint: &Endpoint,
    connection: &Connection,
    mut tcp: TcpStream,
    creds: Credentials,
) -> Result<(LoginOutcome, LoggedIn), LoginOutcome> {
    let forward_client = listener.config.backend.forward_client;
    // The client's address first, before TLS or the greeting.
    if let Some(header) = forward::header(forward_client, connection) {
        write(&mut tcp, &header)
            .await
            .map_err(|e| LoginOutcome::unavailable(format!("PROXY header: {e}")))?;
    }
    let mut stream: BackendStream = match endpoint.tls {
        BackendTls::Implicit => start_tls(listener, &services.metrics, endpoint, tcp).await?,
        _ => MaybeTls::Plain(tcp),
    };
    let settings = ServerSettings {
        starttls: endpoint.tls == BackendTls::Starttls,
        client: forward::in_band(forward_client, connection),
        client_id: connection.client_id.clone(),
    };
    let mut machine = listener.protocol().server_side(creds, settings);
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match machine.next_event() {
            ServerEvent::Send(bytes) => write(&mut stream, &bytes)
                .await
                .map_err(|e| LoginOutcome::unavailable(e.to_string()))?,
            ServerEvent::StartTls => {
                let MaybeTls::Plain(tcp) = stream else {
                    return Err(LoginOutcome::unavailable("STARTTLS requested twice"));
                };
                stream = start_tls(listener, &services.metrics, endpoint, tcp).await?;
                machine.tls_established();
            }
            ServerEvent::NeedInput => match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Ok((machine.eof(), LoggedIn::new(stream, Vec::new()))),
                Ok(n) => machine.receive(&buf[..n]),
            },
            ServerEvent::Note(text) => services
                .logger
                .warning(&format!("back end {}: {text}", endpoint.log_name())),
            ServerEvent::Finished(outcome) => {
                let leftover = machine.take_unprocessed();
                return Ok((outcome, LoggedIn::new(stream, leftover)));
            }
        }
    }
}

async fn start_tls(
    listener: &ListenerState,
    metrics: &Metrics,
    endpoint: &Endpoint,
    tcp: TcpStream,
) -> Result<BackendStream, LoginOutcome> {
    let connector = listener
        .connector
        .as_ref()
        .ok_or_else(|| LoginOutcome::unavailable("back-end TLS is not configured"))?;
    let name = tls::server_name(endpoint.tls_name())
        .map_err(|e| LoginOutcome::unavailable(e.to_string()))?;
    let handshake = connector.connect(name, tcp).await;
    metrics.handshake(HandshakeSide::Backend, handshake.is_ok());
    match handshake {
        Ok(tls) => Ok(MaybeTls::Tls(Box::new(tls))),
        Err(e) => Err(LoginOutcome::unavailable(format!(
            "TLS: {}",
            tls::describe(&e)
        ))),
    }
}
