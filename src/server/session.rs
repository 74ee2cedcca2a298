//! One client connection, from accept to close: the only place where protocol machines meet
//! sockets, timers, the map and the log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{timeout, timeout_at, Instant};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::authlog::{AuthRecord, Logger};
use crate::config::{BackendTls, Limits, Listener, ListenerTls};
use crate::map::{Map, MapError};
use crate::protocol::{
    AfterLogin, ClientEvent, ClientSettings, Credentials, LoginOutcome, Protocol, ServerEvent,
    ServerSettings,
};
use crate::tls;

use super::relay::relay;
use super::stream::{BackendStream, ClientStream, MaybeTls};
use super::{reached, Phase};

/// Bytes read from a socket at a time before login.
const READ_CHUNK: usize = 4096;

/// What every session of one listener shares; built once when the listener starts.
pub struct ListenerState {
    pub config: Listener,
    pub limits: Limits,
    pub logger: Arc<Logger>,
    /// TLS towards clients, for implicit TLS and STARTTLS.
    pub acceptor: Option<TlsAcceptor>,
    /// TLS towards the back end, when it is used.
    pub connector: Option<TlsConnector>,
    pub map: Box<dyn Map>,
    pub greeting_host: String,
    /// Capabilities learned from the back end, used when none are configured.
    pub learned_capability: std::sync::RwLock<Option<String>>,
}

impl ListenerState {
    pub fn protocol(&self) -> Protocol {
        self.config.protocol
    }

    fn log_protocol(&self) -> &'static str {
        self.protocol()
            .log_name(self.config.tls == ListenerTls::Implicit)
    }

    /// The facts every Auth line of this listener shares, for one attempt. `server` is filled
    /// in once the map has answered; Perdition prints `(null):(null)` until then.
    fn auth_record(
        &self,
        peer: SocketAddr,
        local: SocketAddr,
        client_secure: &'static str,
        user: String,
        password: Option<String>,
    ) -> AuthRecord {
        AuthRecord {
            peer,
            local,
            client_secure,
            user,
            password,
            server: "(null):(null)".into(),
            protocol: self.log_protocol(),
            server_secure: match self.config.backend.tls {
                BackendTls::None => "plaintext",
                BackendTls::Starttls => "starttls",
                BackendTls::Implicit => "ssl",
            },
        }
    }

    pub fn set_learned_capability(&self, capability: String) {
        if let Ok(mut learned) = self.learned_capability.write() {
            *learned = Some(capability);
        }
    }

    fn client_settings(&self) -> ClientSettings {
        let learned = || self.learned_capability.read().ok().and_then(|l| l.clone());
        ClientSettings {
            capability: self.config.capability.clone().or_else(learned),
            starttls_offered: matches!(
                self.config.tls,
                ListenerTls::Starttls | ListenerTls::StarttlsRequired
            ),
            tls_required: self.config.tls == ListenerTls::StarttlsRequired,
            tls_active: self.config.tls == ListenerTls::Implicit,
            login_disabled: self.config.login_disabled,
            ok_line: self.config.ok_line.clone(),
            greeting_host: self.greeting_host.clone(),
            product: self.config.greeting_name.clone(),
            limits: self.limits.prelogin(),
        }
    }
}

/// Serve one client until it disconnects.
///
/// Everything before login (handshakes, reads, writes, the back-end login) runs under one
/// deadline, `login_timeout` after the connection was accepted: a client that floods, trickles
/// or stops reading cannot hold its slot longer than that.
pub async fn serve(
    state: Arc<ListenerState>,
    tcp: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    mut shutdown: watch::Receiver<Phase>,
) {
    let _ = tcp.set_nodelay(true);
    state.logger.connect(peer, local);
    let mut deadline = Instant::now() + state.limits.login_timeout();

    let mut stream: ClientStream = match (&state.acceptor, state.config.tls) {
        (Some(acceptor), ListenerTls::Implicit) => {
            match handshake(&state, acceptor, tcp, deadline, peer, local).await {
                Some(tls) => tls,
                None => return,
            }
        }
        _ => MaybeTls::Plain(tcp),
    };
    let mut client_secure = if stream.is_tls() { "ssl" } else { "plaintext" };

    let mut machine = state.protocol().client_side(state.client_settings());
    if send(&mut stream, &machine.greeting(), deadline)
        .await
        .is_err()
    {
        return;
    }
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        // Checked on every pass, not only while waiting to read: a client whose bytes are
        // always ready would otherwise never let a read time out.
        if Instant::now() >= deadline {
            state.logger.fatal_timeout(peer, local);
            say_goodbye(&mut stream, &machine.timeout_message()).await;
            return;
        }
        match machine.next_event() {
            ClientEvent::Send(bytes) => {
                if send(&mut stream, &bytes, deadline).await.is_err() {
                    return;
                }
            }
            ClientEvent::Close(bytes) => {
                say_goodbye(&mut stream, &bytes).await;
                state.logger.closing_null(peer, local);
                return;
            }
            ClientEvent::StartTls(reply) => {
                if send(&mut stream, &reply, deadline).await.is_err() {
                    return;
                }
                let (MaybeTls::Plain(tcp), Some(acceptor)) = (stream, &state.acceptor) else {
                    // The machine only asks when the listener offers STARTTLS.
                    return;
                };
                stream = match handshake(&state, acceptor, tcp, deadline, peer, local).await {
                    Some(tls) => tls,
                    None => return,
                };
                client_secure = "starttls";
                machine.tls_established();
            }
            ClientEvent::NeedInput => {
                let read = tokio::select! {
                    r = timeout_at(deadline, stream.read(&mut buf)) => r,
                    _ = reached(&mut shutdown, Phase::Draining) => {
                        say_goodbye(&mut stream, &machine.shutdown_message()).await;
                        state.logger.closing_null(peer, local);
                        return;
                    }
                };
                match read {
                    Ok(Ok(0)) | Ok(Err(_)) => {
                        state.logger.fatal_read(peer, local);
                        return;
                    }
                    Ok(Ok(n)) => machine.receive(&buf[..n]),
                    // The deadline check at the top of the loop says goodbye.
                    Err(_) => {}
                }
            }
            ClientEvent::LoginRefused { user, reply } => {
                let user = user.unwrap_or_else(|| "(null)".into());
                let record = state.auth_record(peer, local, client_secure, user, None);
                state.logger.auth(&record, "failed: Login Disabled");
                if send(&mut stream, &reply, deadline).await.is_err() {
                    return;
                }
            }
            ClientEvent::Login(creds) => {
                if let Err(clean_part) = creds.check_characters() {
                    // A NUL would split the SASL PLAIN message built for the back end, and a
                    // CR or LF end the command line: refused here, before any back-end contact.
                    let user = clean_part.to_string();
                    let record = state.auth_record(peer, local, client_secure, user, None);
                    state
                        .logger
                        .auth(&record, "failed: local authentication failure");
                    let reply = machine.login_finished(&LoginOutcome::Rejected {
                        text: "forbidden character in the credentials".into(),
                    });
                    if send(&mut stream, &reply.bytes, deadline).await.is_err() {
                        return;
                    }
                    if reply.next == AfterLogin::Close {
                        say_goodbye(&mut stream, &[]).await;
                        return;
                    }
                    continue;
                }
                let password = state
                    .logger
                    .may_log_passwords()
                    .then(|| String::from_utf8_lossy(creds.secret.expose()).into_owned());
                let mut record =
                    state.auth_record(peer, local, client_secure, creds.user.clone(), password);
                // The back-end steps run on their own timeouts: the time they take is not the
                // client's, and the client is answered however they end.
                let started = Instant::now();
                let (outcome, backend) = login(&state, creds, &mut record).await;
                deadline += started.elapsed();
                state.logger.auth(&record, outcome.status());
                record.password = None;
                let outcome = outcome.into_login_outcome();
                if let LoginOutcome::Unavailable { reason } = &outcome {
                    state
                        .logger
                        .warning(&format!("back end {} for {peer}: {reason}", record.server));
                }
                let reply = machine.login_finished(&outcome);
                if send(&mut stream, &reply.bytes, deadline).await.is_err() {
                    return;
                }
                match (reply.next, backend) {
                    (AfterLogin::Relay, Some((server, leftover))) => {
                        let pipelined = machine.take_unprocessed();
                        drop(buf);
                        drop(machine);
                        proxy(
                            &state, stream, server, &record, pipelined, leftover, shutdown,
                        )
                        .await;
                        return;
                    }
                    (AfterLogin::Close, _) | (AfterLogin::Relay, None) => {
                        say_goodbye(&mut stream, &[]).await;
                        return;
                    }
                    (AfterLogin::Continue, _) => {}
                }
            }
        }
    }
}

/// How long a last message (BYE, -ERR) may take to leave before the connection is dropped.
const GOODBYE_TIME: Duration = Duration::from_secs(5);

/// Write a pre-login answer, giving up at the login deadline.
async fn send(stream: &mut ClientStream, bytes: &[u8], deadline: Instant) -> Result<(), ()> {
    match timeout_at(deadline, write(stream, bytes)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Write a last message and close, within [`GOODBYE_TIME`].
async fn say_goodbye(stream: &mut ClientStream, bytes: &[u8]) {
    let _ = timeout(GOODBYE_TIME, async {
        let _ = write(stream, bytes).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// The server side of a TLS handshake with a client, bounded by the login deadline.
async fn handshake(
    state: &ListenerState,
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    deadline: Instant,
    peer: SocketAddr,
    local: SocketAddr,
) -> Option<ClientStream> {
    match timeout_at(deadline, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Some(MaybeTls::Tls(Box::new(tls))),
        Ok(Err(e)) => {
            state.logger.tls_failure(peer, local, &tls::describe(&e));
            None
        }
        Err(_) => {
            state
                .logger
                .tls_failure(peer, local, "no handshake within the login timeout");
            None
        }
    }
}

/// After a successful login: hand over what was pipelined on either side, relay, and log the
/// Closing line.
async fn proxy(
    state: &ListenerState,
    mut client: ClientStream,
    mut server: BackendStream,
    record: &AuthRecord,
    pipelined: Vec<u8>,
    leftover: Vec<u8>,
    mut shutdown: watch::Receiver<Phase>,
) {
    if write(&mut server, &pipelined).await.is_err() || write(&mut client, &leftover).await.is_err()
    {
        state.logger.closing(record, 0, 0);
        return;
    }
    // Ended when the shutdown grace is over, so that the Closing line is still written.
    let closing = async move { reached(&mut shutdown, Phase::Closing).await };
    let traffic = relay(client, server, state.limits.idle_timeout(), closing).await;
    if traffic.timed_out {
        state.logger.info("Timeout piping data.");
    }
    state.logger.closing(
        record,
        traffic.received + pipelined.len() as u64,
        traffic.sent + leftover.len() as u64,
    );
}

/// How a login attempt ended, as precisely as Perdition's log needs it.
enum Attempt {
    Accepted {
        capabilities: Option<String>,
        text: String,
    },
    Rejected {
        text: String,
    },
    /// TCP connect failed or the back end did not answer in time.
    NoConnection(String),
    /// The back end answered but the exchange failed (bad greeting, TLS handshake...).
    Negotiation(String),
    /// The back end does not offer, or refused, the STARTTLS it must be reached with.
    NoTls(String),
}

impl Attempt {
    fn from_outcome(outcome: LoginOutcome) -> Attempt {
        match outcome {
            LoginOutcome::Accepted { capabilities, text } => {
                Attempt::Accepted { capabilities, text }
            }
            LoginOutcome::Rejected { text } => Attempt::Rejected { text },
            LoginOutcome::Unavailable { reason } => Attempt::Negotiation(reason),
            LoginOutcome::NoTls { reason } => Attempt::NoTls(reason),
        }
    }

    /// Perdition's status texts, so that its log scrapers and fail2ban filter keep working.
    fn status(&self) -> &'static str {
        match self {
            Attempt::Accepted { .. } => "ok",
            Attempt::Rejected { .. } => "failed: Re-Authentication Failure",
            Attempt::NoConnection(_) => "failed: Could not connect to server",
            Attempt::NoTls(_) => "failed: TLS not present",
            Attempt::Negotiation(_) => "failed: Connection Negotiation Failure",
        }
    }

    fn into_login_outcome(self) -> LoginOutcome {
        match self {
            Attempt::Accepted { capabilities, text } => {
                LoginOutcome::Accepted { capabilities, text }
            }
            Attempt::Rejected { text } => LoginOutcome::Rejected { text },
            Attempt::NoConnection(reason)
            | Attempt::Negotiation(reason)
            | Attempt::NoTls(reason) => LoginOutcome::Unavailable { reason },
        }
    }
}

async fn write<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    w.write_all(bytes).await?;
    w.flush().await
}

/// Look the user up, connect to the back end and log in there.
async fn login(
    state: &ListenerState,
    creds: Credentials,
    record: &mut AuthRecord,
) -> (Attempt, Option<(BackendStream, Vec<u8>)>) {
    let lower_case = state.config.lower_case;
    let target = match state.map.lookup(&lower_case.for_lookup(&creds.user)).await {
        Ok(t) => t,
        Err(MapError::NotFound) => {
            return (
                Attempt::Rejected {
                    text: "unknown user".into(),
                },
                None,
            )
        }
        Err(MapError::Unavailable(reason)) => return (Attempt::NoConnection(reason), None),
    };
    record.server = if target.host.contains(':') {
        format!("[{}]:{}", target.host, target.port)
    } else {
        format!("{}:{}", target.host, target.port)
    };
    let creds = Credentials {
        user: lower_case.for_login(&creds.user),
        secret: creds.secret,
    };
    let tcp = match connect(state, &target.host, target.port).await {
        Ok(tcp) => tcp,
        Err(attempt) => return (attempt, None),
    };
    let wait = state.limits.backend_login_timeout();
    match timeout(wait, backend_login(state, tcp, creds)).await {
        Ok(Ok((LoginOutcome::Accepted { capabilities, text }, stream, leftover))) => (
            Attempt::Accepted { capabilities, text },
            Some((stream, leftover)),
        ),
        Ok(Ok((outcome, _, _))) => (Attempt::from_outcome(outcome), None),
        Ok(Err(attempt)) => (attempt, None),
        Err(_) => (
            Attempt::Negotiation(format!(
                "timed out after {} s waiting for the login answer",
                wait.as_secs()
            )),
            None,
        ),
    }
}

/// Open the TCP connection to the back end, within `backend_connect_timeout`.
async fn connect(state: &ListenerState, host: &str, port: u16) -> Result<TcpStream, Attempt> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let wait = state.limits.backend_connect_timeout();
    match timeout(wait, TcpStream::connect((host, port))).await {
        Ok(Ok(tcp)) => {
            let _ = tcp.set_nodelay(true);
            Ok(tcp)
        }
        Ok(Err(e)) => Err(Attempt::NoConnection(e.to_string())),
        Err(_) => Err(Attempt::NoConnection(format!(
            "timed out after {} s connecting",
            wait.as_secs()
        ))),
    }
}

/// Greeting, TLS and login on an open connection to the back end.
async fn backend_login(
    state: &ListenerState,
    tcp: TcpStream,
    creds: Credentials,
) -> Result<(LoginOutcome, BackendStream, Vec<u8>), Attempt> {
    let backend = &state.config.backend;
    let mut stream: BackendStream = match backend.tls {
        BackendTls::Implicit => MaybeTls::Tls(Box::new(
            start_tls(state, tcp).await.map_err(Attempt::Negotiation)?,
        )),
        _ => MaybeTls::Plain(tcp),
    };
    let mut machine = state.protocol().server_side(
        creds,
        ServerSettings {
            starttls: backend.tls == BackendTls::Starttls,
        },
    );
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match machine.next_event() {
            ServerEvent::Send(bytes) => write(&mut stream, &bytes)
                .await
                .map_err(|e| Attempt::Negotiation(e.to_string()))?,
            ServerEvent::StartTls => {
                let MaybeTls::Plain(tcp) = stream else {
                    return Err(Attempt::Negotiation("STARTTLS requested twice".into()));
                };
                stream = MaybeTls::Tls(Box::new(
                    start_tls(state, tcp).await.map_err(Attempt::Negotiation)?,
                ));
                machine.tls_established();
            }
            ServerEvent::NeedInput => match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Ok((machine.eof(), stream, Vec::new())),
                Ok(n) => machine.receive(&buf[..n]),
            },
            ServerEvent::Finished(outcome) => {
                let leftover = machine.take_unprocessed();
                return Ok((outcome, stream, leftover));
            }
        }
    }
}

async fn start_tls(
    state: &ListenerState,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let connector = state
        .connector
        .as_ref()
        .ok_or("back-end TLS is not configured")?;
    let name = tls::server_name(state.config.backend.tls_name())?;
    connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {}", tls::describe(&e)))
}

/// Turn away a client over the connection limit with the protocol's own words, after the TLS
/// handshake so that the client can read them. Plain listeners use [`refuse_plain`] instead.
pub async fn refuse_tls(state: Arc<ListenerState>, tcp: TcpStream) {
    let message = state.protocol().overloaded_message();
    let limit = Duration::from_secs(5);
    if let Some(acceptor) = &state.acceptor {
        if let Ok(Ok(mut tls)) = timeout(limit, acceptor.accept(tcp)).await {
            let _ = timeout(limit, write(&mut tls, message)).await;
            let _ = timeout(limit, tls.shutdown()).await;
        }
    }
}

/// Turn away a plain-TCP client at once, without a task: its one line fits in the fresh
/// socket's send buffer, so a burst of thousands costs a write and a close each. False when
/// the line could not be written whole (the client then only sees the close).
pub fn refuse_plain(state: &ListenerState, tcp: TcpStream) -> bool {
    let message = state.protocol().overloaded_message();
    let written = matches!(tcp.try_write(message), Ok(n) if n == message.len());
    // Dropping the socket closes it after the line has been sent.
    drop(tcp);
    written
}
