//! The login phase of a session, one short pipeline: the checks that end it before anything
//! is tried, the guard's gate, the attempt itself (the back-end login), the one observer that
//! logs, counts and judges the attempt, and the answer to the client.

use tokio::time::Instant;

use crate::guard::{Admission, Fingerprint, InFlight, Standing, Verdict};
use crate::log::AuthRecord;
use crate::map::Connection;
use crate::metrics::{GuardDecision, RefusedReason};
use crate::protocol::{AfterLogin, ClientSide, Credentials, LoginOutcome, Refusal, Secret};

use super::super::backend::{self, LoggedIn};
use super::super::stream::ClientStream;
use super::super::{reached, Phase};
use super::{say_goodbye, Next, Session};

/// What the guard said before a login is tried.
struct Gate {
    standing: Option<Standing>,
    fingerprint: Option<Fingerprint>,
    /// Refused as one too many under way from the address: answered without a try.
    too_many_at_once: bool,
    /// Counts the attempt as under way until the login phase ends.
    _in_flight: Option<InFlight>,
}

/// One login attempt, once it is over: what the observer sees.
struct Attempt {
    /// The Auth line's facts; the server is the one tried.
    record: AuthRecord,
    outcome: LoginOutcome,
    /// The back end that accepted, ready to relay.
    backend: Option<LoggedIn>,
    /// The name the client gave, as the guard judges it.
    client_user: String,
}

impl Session {
    /// Credentials are in: check them, log in at the back end, answer the client.
    pub(super) async fn login(
        &mut self,
        stream: &mut ClientStream,
        machine: &mut dyn ClientSide,
        creds: Credentials,
    ) -> Next {
        // Asked again now that a login has come: one of our own back-end connections that
        // arrived through a NAT redirect may have been accepted before its connect returned
        // and its exact address was registered; by now it has been (it sent this login).
        if self.is_own_connection() {
            return Next::End;
        }
        if self.health_check {
            return self.refuse_health_check_login(stream, machine).await;
        }
        let looping = self.adopt_named_client(machine.named_client());
        let Some(gate) = self.pass_the_guard(stream, &creds).await else {
            return Next::End;
        };
        // The connection's facts now: neither the machine nor the stream is held while the
        // back end is asked.
        let connection = Connection {
            client_id: machine.client_id(),
            ..self.connection(stream)
        };
        let mut attempt = self.attempt(connection, creds, looping, &gate).await;
        let verdict = self.observe(&mut attempt, &gate).await;
        // Judged: no longer under way. Released before the answer, so that a client that
        // comes back the moment it has its answer is not taken for a second login at once.
        drop(gate);
        self.answer(stream, machine, attempt, verdict).await
    }

    /// The guard's say before the attempt: the wait is the same whatever the answer will be,
    /// so that no answer comes sooner for being right. `None`: banned, the client was let go
    /// (connections opened before a ban earned elsewhere end at their next attempt).
    async fn pass_the_guard(
        &mut self,
        stream: &mut ClientStream,
        creds: &Credentials,
    ) -> Option<Gate> {
        let standing = self.standing(&creds.user).await;
        let fingerprint = self
            .guard()
            .map(|g| g.fingerprint(&creds.user, creds.secret.expose()));
        let (admission, in_flight) = self
            .admission(standing.as_ref(), fingerprint.as_ref())
            .await;
        let too_many_at_once = match admission {
            Admission::Banned(left) => {
                let reason = format!("banned for {} s more", left.as_secs().max(1));
                self.logger().guard_refusal(self.peer, self.local, &reason);
                self.services.metrics.guard(GuardDecision::Banned);
                say_goodbye(stream, self.listener.protocol().banned_message()).await;
                return None;
            }
            // `admission` gave up waiting for a turn.
            Admission::TooManyAtOnce | Admission::Later(_) => {
                let reason = "as many logins under way as failures left before a ban";
                self.logger().guard_refusal(self.peer, self.local, reason);
                self.services.metrics.guard(GuardDecision::TooManyAtOnce);
                true
            }
            Admission::Try { wait, failures } => {
                if !wait.is_zero() {
                    self.logger()
                        .guard_delay(self.peer, self.local, failures, wait);
                    self.services.metrics.guard(GuardDecision::Delay);
                    self.pause(wait).await;
                }
                false
            }
        };
        if let Some(standing) = &standing {
            self.wait_for_user(&creds.user, standing).await;
        }
        Some(Gate {
            standing,
            fingerprint,
            too_many_at_once,
            _in_flight: in_flight,
        })
    }

    /// The attempt itself. The back-end steps run on their own timeouts: the time they take
    /// is not the client's, and the client is answered however they end.
    async fn attempt(
        &mut self,
        connection: Connection,
        creds: Credentials,
        looping: bool,
        gate: &Gate,
    ) -> Attempt {
        let mut record = self.auth_record(Some(creds.user.clone()));
        let client_user = creds.user.clone();
        let started = Instant::now();
        let (outcome, backend) = match creds.check_characters() {
            Err(clean_part) => {
                record.user = Some(clean_part.to_string());
                (LoginOutcome::Refused(Refusal::ForbiddenCharacters), None)
            }
            Ok(()) if looping => (
                LoginOutcome::unavailable("proxies appear to be looping (TTL reached zero)"),
                None,
            ),
            Ok(()) if gate.too_many_at_once => (LoginOutcome::too_many_at_once(), None),
            Ok(()) => {
                if self.logger().may_log_passwords() {
                    let password = String::from_utf8_lossy(creds.secret.expose()).into_owned();
                    record.password = Some(Secret::new(password));
                }
                self.log_in_at_the_back_end(&connection, creds, &mut record)
                    .await
            }
        };
        self.deadline = (self.deadline + started.elapsed()).min(self.ceiling);
        Attempt {
            record,
            outcome,
            backend,
            client_user,
        }
    }

    /// The back-end login. One still waiting for its back end when the grace period is over
    /// is answered (unavailable) and logged, then the conversation says goodbye.
    async fn log_in_at_the_back_end(
        &mut self,
        connection: &Connection,
        creds: Credentials,
        record: &mut AuthRecord,
    ) -> (LoginOutcome, Option<LoggedIn>) {
        let mut phase = self.phase.clone();
        self.attempts += 1;
        let (listener, services, attempt) = (&self.listener, &self.services, self.attempts);
        tokio::select! {
            done = backend::login(listener, services, connection, attempt, creds, record) => done,
            _ = reached(&mut phase, Phase::Closing) => {
                (LoginOutcome::unavailable("server shutting down"), None)
            }
        }
    }

    /// The one observer of an attempt: the Auth line, the metrics, the forwarding line, the
    /// warning for a back end that failed, and the guard's verdict. The password, when the
    /// log may show it, leaves the record here.
    async fn observe(&mut self, attempt: &mut Attempt, gate: &Gate) -> Option<Verdict> {
        let (record, outcome) = (&mut attempt.record, &attempt.outcome);
        self.logger().auth(record, outcome);
        let protocol = self.listener.protocol().name();
        self.services.metrics.login(protocol, outcome);
        self.log_forwarding(record, outcome);
        record.password = None;
        if let LoginOutcome::Failed { reason, .. } = outcome {
            let server = record.server.as_deref().unwrap_or("(none)");
            let message = format!("back end {server} for {}: {reason}", self.peer);
            self.logger().warning(&message);
        }
        let verdict = match (&gate.fingerprint, &gate.standing) {
            (Some(f), Some(standing)) => {
                self.judge(outcome, &attempt.client_user, standing, f).await
            }
            _ => None,
        };
        if let Some(verdict) = &verdict {
            self.note_verdict(verdict);
        }
        verdict
    }

    /// Answer the client under its own words, and say what the conversation does next.
    async fn answer(
        &mut self,
        stream: &mut ClientStream,
        machine: &mut dyn ClientSide,
        attempt: Attempt,
        verdict: Option<Verdict>,
    ) -> Next {
        let reply = machine.login_finished(&attempt.outcome);
        if self.send(stream, &reply.bytes).await.is_err() {
            return Next::End;
        }
        // Banned now: the client is let go with the reason, unless the answer already did.
        let banned = verdict.is_some_and(|v| v.banned_for.is_some());
        if banned && reply.next != AfterLogin::Close {
            say_goodbye(stream, self.listener.protocol().banned_message()).await;
            return Next::End;
        }
        match (reply.next, attempt.backend) {
            (AfterLogin::Relay, Some(backend)) => Next::Relay(Box::new(backend), attempt.record),
            (AfterLogin::Continue, _) => Next::Continue,
            (AfterLogin::Close, _) | (AfterLogin::Relay, None) => {
                say_goodbye(stream, &[]).await;
                Next::End
            }
        }
    }

    /// A balancer's health check (PROXY v2 LOCAL, v1 UNKNOWN) has no client address to guard
    /// or ban, so it may not try a password at all: answered unavailable and closed, logged
    /// as a warning naming the balancer (no Auth line, which fail2ban would count against it).
    async fn refuse_health_check_login(
        &mut self,
        stream: &mut ClientStream,
        machine: &mut dyn ClientSide,
    ) -> Next {
        let line = format!(
            "Login refused on a health-check connection from {} (PROXY header without a \
             client): health checks may only greet and log out",
            self.peer
        );
        self.logger().warning(&line);
        self.services
            .metrics
            .refused(&self.listener.label, RefusedReason::HealthCheckLogin);
        let outcome = LoginOutcome::unavailable("login on a health-check connection");
        let reply = machine.login_finished(&outcome);
        say_goodbye(stream, &reply.bytes).await;
        Next::End
    }
}
