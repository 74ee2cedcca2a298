//! The pre-login conversation every protocol has, whatever its dialect: the input buffer, the
//! pre-login counters, STARTTLS and the plaintext discard, the SASL continuation, the pause
//! while the back end is asked, the answers to a login outcome, and the close.
//!
//! A protocol supplies a [`Dialect`]: how its commands are parsed and how its answers are
//! worded. [`Conversation`] is the one [`ClientSide`] implementation, so a rule about what a
//! client may do before login (a security fix, a new bound) is made once, here.

use std::sync::Arc;

use super::limits::PreLoginCounters;
use super::sasl::{self, Mechanism};
use super::{
    AfterLogin, ClientEvent, ClientSettings, ClientSide, Credentials, Failure, LoginOutcome,
    LoginReply, NamedClient,
};

/// Where the conversation is.
enum Phase<P> {
    /// Reading commands.
    Commands,
    /// A SASL challenge was sent; the next line is the client's response.
    Sasl(P),
    /// Waiting for the session to report the back-end login.
    LoginPending(P),
    /// Logged in, or closing; nothing more is read.
    Done,
}

/// What a dialect reads and changes: everything the conversation knows about the connection.
pub struct Core<P> {
    pub settings: Arc<ClientSettings>,
    pub counters: PreLoginCounters,
    /// Bytes received and not yet parsed. Before login they may hold a password.
    pub input: Vec<u8>,
    /// The connection is encrypted (implicit TLS, or after STARTTLS).
    pub tls_active: bool,
    /// The peer may name the client it speaks for (a trusted webmail host or proxy).
    pub named_client_trusted: bool,
    /// The client it named.
    pub named_client: Option<NamedClient>,
    phase: Phase<P>,
    /// The SASL exchange under way (PLAIN or LOGIN).
    sasl: sasl::Exchange,
}

/// Why a login is refused before any back end is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginBlock {
    /// The listener refuses every login (Perdition's `login_disabled`).
    Disabled,
    /// TLS is required and not active yet.
    TlsRequired,
}

/// Why STARTTLS cannot be used now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartTlsBlock {
    AlreadyActive,
    NotOffered,
}

impl<P> Core<P> {
    fn new(settings: Arc<ClientSettings>) -> Core<P> {
        Core {
            counters: PreLoginCounters::new(settings.limits),
            tls_active: settings.tls_active,
            settings,
            input: Vec::new(),
            named_client_trusted: false,
            named_client: None,
            phase: Phase::Commands,
            sasl: sasl::Exchange::default(),
        }
    }

    /// Why a login would be refused now, if it would.
    pub fn login_block(&self) -> Option<LoginBlock> {
        if self.settings.login_disabled {
            Some(LoginBlock::Disabled)
        } else if self.settings.tls_required && !self.tls_active {
            Some(LoginBlock::TlsRequired)
        } else {
            None
        }
    }

    /// Whether STARTTLS could be used now; `None` when it can.
    pub fn starttls_block(&self) -> Option<StartTlsBlock> {
        if self.tls_active {
            Some(StartTlsBlock::AlreadyActive)
        } else if !self.settings.starttls_offered {
            Some(StartTlsBlock::NotOffered)
        } else {
            None
        }
    }

    /// STARTTLS offered to the client now (for capability lists).
    pub fn starttls_available(&self) -> bool {
        self.starttls_block().is_none()
    }

    /// Count one command; false when the client has used up its allowance.
    pub fn count_command(&mut self) -> bool {
        self.counters.command()
    }

    /// Send `reply`, then upgrade. Anything pipelined behind STARTTLS arrived in plaintext and
    /// must never be executed once the connection is encrypted (CVE-2011-0411).
    pub fn start_tls(&mut self, reply: Vec<u8>) -> ClientEvent {
        self.input.clear();
        ClientEvent::StartTls(reply)
    }

    /// Send `bytes`, then close; nothing more is read.
    pub fn close(&mut self, bytes: Vec<u8>) -> ClientEvent {
        self.phase = Phase::Done;
        self.input.clear();
        ClientEvent::Close(bytes)
    }

    /// Credentials are in: wait for the session to ask the back end.
    pub fn begin_login(&mut self, pending: P, creds: Credentials) -> ClientEvent {
        self.phase = Phase::LoginPending(pending);
        ClientEvent::Login(creds)
    }

    /// Start a SASL exchange; its first challenge (base64, empty for PLAIN).
    pub fn begin_sasl(&mut self, mechanism: Mechanism) -> &'static str {
        let (exchange, challenge) = sasl::Exchange::start(mechanism);
        self.sasl = exchange;
        challenge
    }

    /// The client's base64 response to the exchange under way.
    pub fn sasl_respond(&mut self, b64: &[u8]) -> sasl::Next {
        self.sasl.respond(b64)
    }

    /// Send a SASL challenge; the next line goes to [`Dialect::sasl_response`].
    pub fn await_sasl(&mut self, pending: P, challenge: Vec<u8>) -> ClientEvent {
        self.phase = Phase::Sasl(pending);
        ClientEvent::Send(challenge)
    }

    /// The SASL response has been read: back to commands, with what the challenge kept.
    pub fn finish_sasl(&mut self) -> Option<P> {
        match std::mem::replace(&mut self.phase, Phase::Commands) {
            Phase::Sasl(pending) => Some(pending),
            other => {
                self.phase = other;
                None
            }
        }
    }
}

/// The answers a dialect words the same way whatever the command.
pub struct Words {
    /// A failed login.
    pub rejected: &'static str,
    /// Sent after `rejected` when the client has no tries left.
    pub too_many_failures: &'static [u8],
    /// The back end could not be asked.
    pub unavailable: &'static str,
    /// The guard held the login back: too many under way at once from the client's address.
    pub busy: &'static str,
    /// The user has as many sessions as its cap allows (`max_sessions_per_user`...).
    pub limit: &'static str,
    /// Sent before closing when `login_timeout` is over.
    pub timeout: &'static [u8],
    /// Sent before closing when the server shuts down.
    pub shutdown: &'static [u8],
    /// Sent before closing a connection the connection limit turns away.
    pub overloaded: &'static [u8],
    /// Sent before closing a connection from an address that has all the connections it may.
    pub too_many_from_address: &'static [u8],
    /// Sent before closing a connection from an address the guard has banned.
    pub banned: &'static [u8],
}

/// A protocol's words and parsing, for the pre-login conversation.
pub trait Dialect: Send {
    const WORDS: Words;

    /// What a SASL exchange or a pending login remembers (IMAP: the command's tag).
    type Pending: Send;

    fn greeting(&mut self, core: &Core<Self::Pending>) -> Vec<u8>;
    /// Read and answer the next command in `core.input`; [`ClientEvent::NeedInput`] when there
    /// is no whole command yet. The dialect counts it with [`Core::count_command`].
    fn command(&mut self, core: &mut Core<Self::Pending>) -> ClientEvent;
    /// Read the client's answer to a SASL challenge; call [`Core::finish_sasl`] once a whole
    /// line is in.
    fn sasl_response(&mut self, core: &mut Core<Self::Pending>) -> ClientEvent;
    /// The connection is now encrypted (the input was already discarded).
    fn tls_established(&mut self, _core: &Core<Self::Pending>) {}

    /// The successful login answer; `text` is the configured `ok_line` or the back end's.
    fn accepted(
        &self,
        pending: Option<Self::Pending>,
        capabilities: Option<&str>,
        text: &str,
    ) -> Vec<u8>;
    /// `text` as the answer to the command `pending` remembers (IMAP puts its tag first).
    fn answer(&self, pending: Option<Self::Pending>, text: &str) -> Vec<u8>;
    /// A failed login with words from the routing service (printable, one line).
    fn denied(&self, pending: Option<Self::Pending>, message: &str) -> Vec<u8>;
    /// The client's own identification to pass on (IMAP `ID`); none by default.
    fn client_id(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// The client side of every protocol: the shared conversation driven in a dialect.
pub struct Conversation<D: Dialect> {
    core: Core<D::Pending>,
    dialect: D,
}

impl<D: Dialect + Default> Conversation<D> {
    pub fn new(settings: impl Into<Arc<ClientSettings>>) -> Self {
        Conversation {
            core: Core::new(settings.into()),
            dialect: D::default(),
        }
    }
}

impl<D: Dialect> Conversation<D> {
    pub fn dialect(&self) -> &D {
        &self.dialect
    }

    /// Answer a failed login with `refusal`. It counts as a failure either way; without
    /// `retry` the connection is closed after it, as nginx closes it after a service's
    /// refusal that came without `Auth-Wait` (no farewell: nginx sends none).
    fn refuse(&mut self, refusal: Vec<u8>, retry: bool) -> LoginReply {
        let farewell = D::WORDS.too_many_failures;
        let counted = self.core.counters.reply_to_rejection(&refusal, farewell);
        let reply = if retry {
            counted
        } else {
            LoginReply {
                bytes: refusal,
                next: AfterLogin::Close,
            }
        };
        if reply.next == AfterLogin::Close {
            self.core.phase = Phase::Done;
            self.core.input.clear();
        }
        reply
    }
}

impl<D: Dialect> ClientSide for Conversation<D> {
    fn greeting(&mut self) -> Vec<u8> {
        self.dialect.greeting(&self.core)
    }

    fn receive(&mut self, input: &[u8]) {
        if !matches!(self.core.phase, Phase::Done) {
            self.core.input.extend_from_slice(input);
        }
    }

    fn next_event(&mut self) -> ClientEvent {
        match self.core.phase {
            Phase::Done | Phase::LoginPending(_) => ClientEvent::NeedInput,
            Phase::Sasl(_) => self.dialect.sasl_response(&mut self.core),
            Phase::Commands => self.dialect.command(&mut self.core),
        }
    }

    fn client_id(&self) -> Vec<(String, String)> {
        self.dialect.client_id()
    }

    fn trust_named_client(&mut self) {
        self.core.named_client_trusted = true;
    }

    fn named_client(&self) -> Option<NamedClient> {
        self.core.named_client.clone()
    }

    fn tls_established(&mut self) {
        // Only a STARTTLS answered in the command phase leads here; a closed or pending
        // conversation stays as it is.
        if !matches!(self.core.phase, Phase::Commands) {
            return;
        }
        self.core.tls_active = true;
        self.core.input.clear();
        self.dialect.tls_established(&self.core);
    }

    fn login_finished(&mut self, outcome: &LoginOutcome) -> LoginReply {
        let pending = match std::mem::replace(&mut self.core.phase, Phase::Commands) {
            Phase::LoginPending(pending) => Some(pending),
            other => {
                self.core.phase = other;
                None
            }
        };
        match outcome {
            LoginOutcome::Accepted { capabilities, text } => {
                self.core.phase = Phase::Done;
                let text = self.core.settings.ok_line.as_deref().unwrap_or(text);
                LoginReply {
                    bytes: self
                        .dialect
                        .accepted(pending, capabilities.as_deref(), text),
                    next: AfterLogin::Relay,
                }
            }
            LoginOutcome::Rejected { .. } | LoginOutcome::Refused(_) => {
                let refusal = self.dialect.answer(pending, D::WORDS.rejected);
                self.refuse(refusal, true)
            }
            LoginOutcome::Denied { message, retry } => {
                let refusal = self.dialect.denied(pending, message);
                self.refuse(refusal, *retry)
            }
            LoginOutcome::Failed { failure, .. } => LoginReply {
                bytes: match failure {
                    Failure::TooManyAtOnce => self.dialect.answer(pending, D::WORDS.busy),
                    Failure::OverSessionCap => self.dialect.answer(pending, D::WORDS.limit),
                    _ => self.dialect.answer(pending, D::WORDS.unavailable),
                },
                next: AfterLogin::Continue,
            },
        }
    }

    fn timeout_message(&self) -> Vec<u8> {
        D::WORDS.timeout.to_vec()
    }

    fn shutdown_message(&self) -> Vec<u8> {
        D::WORDS.shutdown.to_vec()
    }

    fn take_unprocessed(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.core.input)
    }
}
