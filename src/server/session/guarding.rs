//! The session's side of the brute-force guard: turning a client away before the greeting,
//! the admission and wait before a login is tried, and the verdict after it.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::guard::{Admission, Fingerprint, Guard, InFlight, Standing, Verdict};
use crate::metrics::{GuardDecision, TurnedAway};
use crate::protocol::{leading_response_code, LoginOutcome, Refusal};

use super::Session;
use crate::server::{reached, Phase};

impl Session {
    /// The guard turns the client away before the greeting: logged (a few lines per address and
    /// minute), and told in the protocol's words, except on a TLS listener, where the words
    /// would cost a handshake and the close says enough.
    /// `label` names the reason in the metrics.
    pub(super) fn turn_away(
        &self,
        tcp: &TcpStream,
        label: TurnedAway,
        reason: &str,
        message: &[u8],
    ) {
        self.logger().guard_refusal(self.peer, self.local, reason);
        self.services
            .metrics
            .refused(&self.listener.label, label.reason());
        self.services.metrics.guard(label.decision());
        if !self.listener.implicit_tls() {
            let _ = tcp.try_write(message);
        }
    }

    /// The guard, for a client's session; a balancer's health check is not a client, and
    /// what it does must not count against the balancer.
    pub(super) fn guard(&self) -> Option<Arc<Guard>> {
        self.services.guard().filter(|_| !self.health_check)
    }

    /// How much longer the client's address is banned, as this process knows (an address
    /// with known-good users is greeted all the same: they may log in).
    pub(super) fn banned_here(&self) -> Option<Duration> {
        self.guard()?.turned_away_here(self.peer.ip())
    }

    /// How much longer the client's address is banned through another proxy of the fleet.
    pub(super) async fn banned_elsewhere(&self) -> Option<Duration> {
        self.guard()?.turned_away_elsewhere(self.peer.ip()).await
    }

    /// What the guard knows of `user` logging in from the client's address.
    pub(super) async fn standing(&self, user: &str) -> Option<Standing> {
        Some(self.guard()?.standing(self.peer.ip(), user).await)
    }

    /// Tell the guard how a login went; a failure the client caused comes back as a verdict.
    /// A back end that is down is nobody's failure.
    pub(super) async fn judge(
        &mut self,
        outcome: &LoginOutcome,
        user: &str,
        standing: &Standing,
        fingerprint: &Fingerprint,
    ) -> Option<Verdict> {
        let guard = self.guard()?;
        let ip = self.peer.ip();
        match outcome {
            LoginOutcome::Accepted { .. } => {
                guard.success(ip, user).await;
                // From now on the connection counts for its user at the address.
                self.slot = guard.logged_in(self.slot.take(), ip, user);
                None
            }
            // A routing service that says "try later" in its own words is down, not refusing.
            LoginOutcome::Denied { message, .. } if says_try_later(message) => None,
            LoginOutcome::Rejected { .. } | LoginOutcome::Denied { .. } => {
                guard.failure(ip, user, standing, fingerprint, true).await
            }
            // Nothing said about the user: a name nobody knows, or bytes no name holds.
            LoginOutcome::Refused(Refusal::ForbiddenCharacters | Refusal::NoServer) => {
                guard.failure(ip, user, standing, fingerprint, false).await
            }
            LoginOutcome::Refused(Refusal::LoginDisabled) | LoginOutcome::Failed { .. } => None,
        }
    }

    /// A user failing from many addresses (credential stuffing): its logins wait before they
    /// are tried, except from addresses it logged in from.
    pub(super) async fn wait_for_user(&mut self, user: &str, standing: &Standing) {
        let Some(guard) = self.guard() else {
            return;
        };
        let wait = guard.user_wait(self.peer.ip(), standing);
        if wait.is_zero() {
            return;
        }
        self.logger()
            .guard_user_wait(self.peer, self.local, user, wait);
        self.services.metrics.guard(GuardDecision::UserWait);
        self.pause(wait).await;
    }

    /// Sleep for the guard, moving the deadlines with it (the time is the guard's, not the
    /// client's); shutdown cuts it short.
    pub(super) async fn pause(&mut self, wait: Duration) {
        self.deadline += wait;
        self.ceiling += wait;
        let mut phase = self.phase.clone();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = reached(&mut phase, Phase::Draining) => {}
        }
    }

    /// The guard's admission for a login, after waiting out any turns a crowd of logins from
    /// the same address must take (a few at most; then it is refused as too many at once).
    pub(super) async fn admission(
        &mut self,
        standing: Option<&Standing>,
        fingerprint: Option<&Fingerprint>,
    ) -> (Admission, Option<InFlight>) {
        const TURNS: usize = 8;
        for _ in 0..TURNS {
            let answer = match (self.guard(), standing, fingerprint) {
                (Some(guard), Some(standing), Some(fingerprint)) => {
                    guard.begin(self.peer.ip(), standing, fingerprint).await
                }
                _ => {
                    return (
                        Admission::Try {
                            wait: Duration::ZERO,
                            failures: 0,
                        },
                        None,
                    )
                }
            };
            match answer {
                (Admission::Later(wait), _) => self.pause(wait).await,
                other => return other,
            }
        }
        (Admission::TooManyAtOnce, None)
    }

    /// Log a ban the failure earned.
    pub(super) fn note_verdict(&self, verdict: &Verdict) {
        if let Some(ban) = verdict.banned_for {
            self.logger()
                .guard_ban(self.peer, self.local, verdict.failures, ban);
            self.services.metrics.guard(GuardDecision::Ban);
        }
    }
}

/// Whether a refusal text starts with a temporary-failure code (IMAP `[UNAVAILABLE]`, POP3
/// `[SYS/TEMP]`, ManageSieve `(TRYLATER)`): nobody's failure, as from a back end.
fn says_try_later(message: &str) -> bool {
    ['[', '('].into_iter().any(|open| {
        leading_response_code(message, open).is_some_and(|(code, _)| {
            let word = code[1..code.len() - 1]
                .split(' ')
                .next()
                .unwrap_or_default();
            ["UNAVAILABLE", "SYS/TEMP", "TRYLATER"]
                .iter()
                .any(|temporary| word.eq_ignore_ascii_case(temporary))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::says_try_later;

    #[test]
    fn temporary_codes_are_recognised_in_every_protocols_brackets() {
        assert!(says_try_later("[UNAVAILABLE] Temporary server problem"));
        assert!(says_try_later("[SYS/TEMP] down"));
        assert!(says_try_later("(TRYLATER) later"));
        assert!(!says_try_later("[AUTHENTICATIONFAILED] Invalid login"));
        assert!(!says_try_later("Invalid login or password"));
        assert!(!says_try_later("UNAVAILABLE without brackets"));
    }
}
