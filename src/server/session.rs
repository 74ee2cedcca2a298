//! One client connection, from accept to close: the only place where protocol machines meet
//! sockets, timers, the back-end login and the log.
//!
//! A [`Session`] goes through three phases, one method each: [`Session::until_logged_in`]
//! opens the connection (implicit TLS), [`Session::converse`] drives the client-side machine
//! until credentials are in and a back end has accepted them (or the client leaves), and
//! `Relaying::run` copies bytes until either side closes. [`Session::run`] chains them, with
//! the first two boxed so that a relaying session keeps none of their state.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{timeout, timeout_at, Instant};

use crate::guard::Slot;
use crate::log::{AuthRecord, Logger};
use crate::map::Connection;
use crate::metrics::{HandshakeSide, TurnedAway};
use crate::protocol::named_client::PROXY_TTL;
use crate::protocol::{loggable_user, ClientEvent, ClientSide, LoginOutcome, Refusal, Security};
use crate::tls;

use super::backend::LoggedIn;
use super::builder::ListenerState;
use super::proxy_header;
use super::registry::Registered;
use super::relay::relay;
use super::services::Services;
use super::stream::{write, ClientStream, MaybeTls};
use super::{reached, Phase};

mod guarding;
mod login;
mod named;

/// Bytes read from a client at a time before login.
const READ_CHUNK: usize = 4096;

/// How long a last message (BYE, -ERR) may take to leave before the connection is dropped.
const GOODBYE_TIME: Duration = Duration::from_secs(5);

pub struct Session {
    /// The listener's configuration, TLS, map and machine settings.
    listener: Arc<ListenerState>,
    /// The log (and, next, the guard and the metrics).
    services: Arc<Services>,
    peer: SocketAddr,
    local: SocketAddr,
    /// `login_timeout` after accept, pushed back by the time the back end takes: a client
    /// that floods, trickles or stops reading cannot hold its slot longer than that.
    deadline: Instant,
    /// How far `deadline` may be pushed back: one back-end wait's worth, however many logins
    /// the client tries against a back end that hangs.
    ceiling: Instant,
    /// How the client leg is protected so far.
    security: Security,
    /// Logins tried on this connection (a map may want the number).
    attempts: u32,
    /// Names the session to the back end when the client is forwarded to it.
    id: String,
    /// Shutdown: BYE before login, the end of the relay after the grace period.
    phase: watch::Receiver<Phase>,
    /// A balancer's health check (a PROXY header without a client): its comings and goings
    /// are not a client's, so they write none of the lines fail2ban counts, which would get
    /// the balancer itself banned.
    health_check: bool,
    /// Proxy hops left: lowered by one from what a trusted peer said, or the start value.
    proxy_ttl: u32,
    /// The session's line in the table of live sessions, for as long as it lives.
    registered: Registered,
    /// The guard's count of this connection: for its address until it logs in, then for its
    /// user at that address, held for the session's life.
    slot: Option<Slot>,
}

/// A session logged in, about to relay: all the relay needs and nothing of the pre-login state.
struct Relaying {
    session: Session,
    client: ClientStream,
    backend: LoggedIn,
    record: AuthRecord,
    /// What the client sent after its login command; it belongs to the back end.
    pipelined: Vec<u8>,
}

impl Relaying {
    /// Hand over what was pipelined on either side, relay, log the Closing line.
    ///
    /// Boxed and borrowed, never moved apart: an async fn keeps its arguments and the locals
    /// moved out of them side by side, so destructuring here doubled what every idle session
    /// holds.
    async fn run(mut self: Box<Self>) {
        let this = &mut *self;
        if write(&mut this.backend.stream, &this.pipelined)
            .await
            .is_err()
            || write(&mut this.client, &this.backend.leftover)
                .await
                .is_err()
        {
            this.session.logger().closing(&this.record, 0, 0);
            return;
        }
        let (pipelined, leftover) = (this.pipelined.len(), this.backend.leftover.len());
        (this.pipelined, this.backend.leftover) = (Vec::new(), Vec::new());
        let user = this.record.user.as_deref().unwrap_or_default();
        let server_name = this.record.server.as_deref().unwrap_or_default();
        this.session.registered.proxying(user, server_name);
        let session = &this.session;
        // Ended when the shutdown grace is over, so that the Closing line is still written,
        // and by the admin's kick (the client reconnects, to a new back end if it moved).
        let mut phase = session.phase.clone();
        let live = session.registered.live.clone();
        // A pool's kick (drained, moved, its server down) ends it too.
        let fleet_kick = this.backend.lease.as_ref().map(|l| l.facts.kicked.clone());
        let stop = async {
            tokio::select! {
                _ = reached(&mut phase, Phase::Closing) => {}
                _ = live.kicked.notified() => {}
                _ = async {
                    match &fleet_kick {
                        Some(kicked) => kicked.notified().await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
        };
        let idle = session.listener.limits.idle_timeout();
        let (client, server) = (&mut this.client, &mut this.backend.stream);
        let traffic = tokio::select! {
            traffic = relay(client, server, idle, stop, &live.counts) => traffic,
            never = session.relog_auth(&this.record) => match never {},
        };
        if traffic.timed_out {
            session.logger().timeout_piping();
        }
        let received = traffic.received + pipelined as u64;
        let sent = traffic.sent + leftover as u64;
        let protocol = session.listener.protocol().name();
        session.services.metrics.relayed(protocol, received, sent);
        session.logger().closing(&this.record, received, sent);
    }
}

/// What the pre-login conversation does after one event.
enum Next {
    Continue,
    End,
    /// Logged in: relay between these.
    Relay(Box<LoggedIn>, AuthRecord),
}

impl Session {
    pub fn new(
        listener: Arc<ListenerState>,
        services: Arc<Services>,
        peer: SocketAddr,
        local: SocketAddr,
        phase: watch::Receiver<Phase>,
    ) -> Session {
        let limits = &listener.limits;
        let deadline = Instant::now() + limits.login_timeout();
        let id = format!("{:016x}", fastrand::u64(..));
        let registered = services.registry.enter(
            &services.metrics,
            listener.protocol().name(),
            &listener.label,
            peer,
            &id,
        );
        Session {
            deadline,
            ceiling: deadline + limits.backend_connect_timeout() + limits.backend_login_timeout(),
            security: listener.initial_security(),
            attempts: 0,
            id,
            registered,
            listener,
            services,
            peer,
            local,
            phase,
            health_check: false,
            proxy_ttl: PROXY_TTL,
            slot: None,
        }
    }

    fn logger(&self) -> &Logger {
        &self.services.logger
    }

    /// Whether this client is one of this proxy's own back-end connections (a loop); says so
    /// in the log when it is.
    fn is_own_connection(&self) -> bool {
        if !self.services.own_connections.is_own(self.peer, self.local) {
            return false;
        }
        let line = format!(
            "Proxy loop: {} is this proxy's own back-end connection; a back end points at one \
             of its listeners",
            self.peer
        );
        self.logger().error(&line);
        true
    }

    /// Serve the client until it disconnects.
    ///
    /// The pre-login part (buffers, machines, the back-end login with its TLS connector and
    /// map lookups) is boxed, and freed before the relay starts: the task of a session parked
    /// in IDLE for hours then holds only what the relay needs (this future was 5.4 KiB when
    /// the two phases were one state machine, every idle session paying for the largest).
    pub async fn run(self, tcp: TcpStream) {
        let logged_in = Box::pin(self.until_logged_in(tcp)).await;
        if let Some(relaying) = logged_in {
            relaying.run().await;
        }
    }

    /// Open the connection and converse until a back end has accepted the client.
    ///
    /// The caller has set the socket's options (TCP_NODELAY, keepalive): accepted sockets
    /// inherit them from the listening one.
    async fn until_logged_in(mut self, mut tcp: TcpStream) -> Option<Box<Relaying>> {
        if self.is_own_connection() {
            return None;
        }
        if self.listener.proxy_trusted.is_some() && !self.read_proxy_header(&mut tcp).await {
            return None;
        }
        let protocol = self.listener.protocol();
        if let Some(left) = self.banned_here() {
            let reason = format!("banned for {} s more", left.as_secs().max(1));
            self.turn_away(&tcp, TurnedAway::Banned, &reason, protocol.banned_message());
            return None;
        }
        if self
            .guard()
            .is_some_and(|g| !g.new_connection_allowed(self.peer.ip()))
        {
            let reason = "new connections over the process-wide rate";
            self.turn_away(
                &tcp,
                TurnedAway::Rate,
                reason,
                protocol.overloaded_message(),
            );
            return None;
        }
        // Held for the session's life.
        self.slot = match self.guard().map(|g| g.admit(self.peer.ip())) {
            Some(Err(open)) => {
                let reason = format!("{open} connections open from this address");
                let message = protocol.too_many_from_address_message();
                self.turn_away(&tcp, TurnedAway::PerAddress, &reason, message);
                return None;
            }
            Some(Ok(slot)) => slot,
            None => None,
        };
        // The fleet's word last: the cheap checks above spare the store a flood's questions.
        if let Some(left) = self.banned_elsewhere().await {
            let reason = format!("banned for {} s more", left.as_secs().max(1));
            self.turn_away(&tcp, TurnedAway::Banned, &reason, protocol.banned_message());
            return None;
        }
        if !self.health_check {
            self.logger().connect(self.peer, self.local);
        }
        let stream = if self.listener.implicit_tls() {
            self.handshake(tcp).await?
        } else {
            MaybeTls::Plain(tcp)
        };
        self.converse(stream).await
    }

    /// A balancer's PROXY header: from a trusted address, whole and well formed, or the
    /// connection is closed before the greeting. Its addresses are the session's from now on.
    async fn read_proxy_header(&mut self, tcp: &mut TcpStream) -> bool {
        let from = self.peer.ip().to_canonical();
        let trusted = self.listener.proxy_trusted.as_deref().unwrap_or_default();
        // What went wrong; its variant gives the label in the metrics.
        let refused = if !trusted.iter().any(|network| network.contains(&from)) {
            proxy_header::Refused::Untrusted
        } else {
            let mut phase = self.phase.clone();
            let read = tokio::select! {
                read = timeout_at(self.deadline, proxy_header::read(tcp)) => read,
                _ = reached(&mut phase, Phase::Draining) => return false,
            };
            match read {
                Ok(Ok(proxied)) => {
                    self.health_check = proxied.source.is_none();
                    self.peer = proxied.source.unwrap_or(self.peer);
                    self.local = proxied.destination.unwrap_or(self.local);
                    self.registered.update_client(self.peer, &self.id);
                    return true;
                }
                Ok(Err(e)) => proxy_header::Refused::Invalid(e),
                Err(_) => proxy_header::Refused::Timeout,
            }
        };
        let line = format!("PROXY header refused from {}: {refused}", self.peer);
        self.logger().warning(&line);
        self.services
            .metrics
            .refused(&self.listener.label, refused.reason());
        false
    }

    /// Drive the client-side machine until the client leaves or a back end accepts it.
    async fn converse(mut self, mut stream: ClientStream) -> Option<Box<Relaying>> {
        let settings = self.listener.client_settings();
        let mut machine = self.listener.protocol().client_side(settings);
        if self.login_trusted() {
            machine.trust_named_client();
        }
        if self.send(&mut stream, &machine.greeting()).await.is_err() {
            return None;
        }
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            // Checked on every pass, not only while waiting to read: a client whose bytes are
            // always ready would otherwise never let a read time out.
            if Instant::now() >= self.deadline {
                if !self.health_check {
                    self.logger().fatal_timeout(self.peer, self.local);
                }
                say_goodbye(&mut stream, &machine.timeout_message()).await;
                return None;
            }
            let next = match machine.next_event() {
                ClientEvent::Send(bytes) => self.reply(&mut stream, &bytes).await,
                ClientEvent::NeedInput => self.read(&mut stream, &mut *machine, &mut buf).await,
                ClientEvent::Close(bytes) => {
                    say_goodbye(&mut stream, &bytes).await;
                    if !self.health_check {
                        self.logger().closing_null(self.peer, self.local);
                    }
                    Next::End
                }
                ClientEvent::StartTls(reply) => match self.start_tls(stream, &reply).await {
                    Some(tls) => {
                        stream = tls;
                        machine.tls_established();
                        Next::Continue
                    }
                    None => return None,
                },
                ClientEvent::LoginRefused { user, reply } => {
                    self.log_refusal(user, Refusal::LoginDisabled);
                    self.reply(&mut stream, &reply).await
                }
                ClientEvent::Login(creds) => self.login(&mut stream, &mut *machine, creds).await,
            };
            match next {
                Next::Continue => {}
                Next::End => return None,
                Next::Relay(backend, record) => {
                    return Some(Box::new(Relaying {
                        pipelined: machine.take_unprocessed(),
                        session: self,
                        client: stream,
                        backend: *backend,
                        record,
                    }));
                }
            }
        }
    }

    /// Wait for the client's next bytes, or shutdown.
    async fn read(
        &mut self,
        stream: &mut ClientStream,
        machine: &mut dyn ClientSide,
        buf: &mut [u8],
    ) -> Next {
        let read = tokio::select! {
            r = timeout_at(self.deadline, stream.read(buf)) => r,
            _ = reached(&mut self.phase, Phase::Draining) => {
                say_goodbye(stream, &machine.shutdown_message()).await;
                self.logger().closing_null(self.peer, self.local);
                return Next::End;
            }
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => {
                if !self.health_check {
                    self.logger().fatal_read(self.peer, self.local);
                }
                Next::End
            }
            Ok(Ok(n)) => {
                machine.receive(&buf[..n]);
                Next::Continue
            }
            // The deadline check in `converse` says goodbye.
            Err(_) => Next::Continue,
        }
    }

    /// Repeat the session's Auth line every `auth_relog` for as long as it relays (Perdition's
    /// `connect_relog`): POP- and IMAP-before-SMTP scripts keep the client's address allowed
    /// while the session lasts. The password was dropped from the record after the first line.
    async fn relog_auth(&self, record: &AuthRecord) -> std::convert::Infallible {
        let Some(every) = self.logger().auth_relog() else {
            return std::future::pending().await;
        };
        let logged_in = LoginOutcome::Accepted {
            capabilities: None,
            text: String::new(),
        };
        let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
        loop {
            ticks.tick().await;
            self.logger().auth(record, &logged_in);
        }
    }

    /// The facts of this connection a map may use; `stream` knows the TLS parameters.
    fn connection(&self, stream: &ClientStream) -> Connection {
        let tls = self.security != Security::Plaintext;
        let (peer, local, session) = (self.peer, self.local, self.id.clone());
        let negotiated = match stream {
            MaybeTls::Tls(tls) => Some(tls.tls()),
            MaybeTls::Plain(_) => None,
        };
        Connection {
            proxy_ttl: self.proxy_ttl,
            tls_version: negotiated.and_then(|c| c.protocol_version()),
            tls_cipher: negotiated.and_then(|c| c.negotiated_cipher_suite().map(|s| s.suite())),
            ..Connection::new(self.listener.protocol(), peer, local, tls, session)
        }
    }

    /// The facts an Auth line of this session states; the server is filled in by the login.
    fn auth_record(&self, user: Option<String>) -> AuthRecord {
        AuthRecord {
            peer: self.peer,
            local: self.local,
            client_secure: self.security,
            user,
            password: None,
            server: None,
            protocol: self.listener.log_protocol(),
            server_secure: self.listener.backend_security(),
        }
    }

    fn log_refusal(&self, user: Option<String>, refusal: Refusal) {
        let user = user.map(|u| loggable_user(&u).to_string());
        let record = self.auth_record(user);
        let outcome = LoginOutcome::Refused(refusal);
        self.logger().auth(&record, &outcome);
        let protocol = self.listener.protocol().name();
        self.services.metrics.login(protocol, &outcome);
    }

    /// Write a pre-login answer, giving up at the login deadline.
    async fn send(&self, stream: &mut ClientStream, bytes: &[u8]) -> Result<(), ()> {
        match timeout_at(self.deadline, write(stream, bytes)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }

    async fn reply(&self, stream: &mut ClientStream, bytes: &[u8]) -> Next {
        match self.send(stream, bytes).await {
            Ok(()) => Next::Continue,
            Err(()) => Next::End,
        }
    }

    /// Answer STARTTLS, then run the handshake.
    async fn start_tls(&mut self, stream: ClientStream, reply: &[u8]) -> Option<ClientStream> {
        let mut stream = stream;
        self.send(&mut stream, reply).await.ok()?;
        // The machine only asks when the listener offers STARTTLS, on a plain connection.
        let MaybeTls::Plain(tcp) = stream else {
            return None;
        };
        let tls = self.handshake(tcp).await?;
        self.security = Security::Starttls;
        Some(tls)
    }

    /// The server side of a TLS handshake, bounded by the login deadline.
    async fn handshake(&self, tcp: TcpStream) -> Option<ClientStream> {
        let acceptor = self.listener.acceptor.as_ref()?;
        let handshake = timeout_at(self.deadline, acceptor.accept(tcp)).await;
        let metrics = &self.services.metrics;
        let reason = match handshake {
            // A CA's tls-alpn-01 validation: the handshake was the answer.
            Ok(Ok(tls)) if tls.tls().alpn_protocol() == Some(tls::ACME_TLS_ALPN) => {
                return None;
            }
            Ok(Ok(tls)) => {
                metrics.handshake(HandshakeSide::Client, true);
                self.registered.set_tls(true);
                return Some(MaybeTls::Tls(Box::new(tls)));
            }
            Ok(Err(e)) => tls::describe(&e),
            Err(_) => "no handshake within the login timeout".into(),
        };
        metrics.handshake(HandshakeSide::Client, false);
        if !self.health_check {
            self.logger().tls_failure(self.peer, self.local, &reason);
        }
        None
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

/// Turn away a client over the connection limit with the protocol's own words, after the TLS
/// handshake so that the client can read them. Plain listeners use [`refuse_plain`] instead.
pub async fn refuse_tls(listener: &ListenerState, tcp: TcpStream) {
    let message = listener.protocol().overloaded_message();
    let Some(acceptor) = &listener.acceptor else {
        return;
    };
    if let Ok(Ok(mut tls)) = timeout(GOODBYE_TIME, acceptor.accept(tcp)).await {
        let _ = timeout(GOODBYE_TIME, write(&mut tls, message)).await;
        let _ = timeout(GOODBYE_TIME, tls.shutdown()).await;
    }
}

/// Turn away a plain-TCP client at once, without a task: its one line fits in the fresh
/// socket's send buffer, so a burst of thousands costs a write and a close each. False when
/// the line could not be written whole (the client then only sees the close).
pub fn refuse_plain(listener: &ListenerState, tcp: TcpStream) -> bool {
    let message = listener.protocol().overloaded_message();
    // Dropping the socket afterwards closes it once the line has been sent.
    matches!(tcp.try_write(message), Ok(n) if n == message.len())
}
