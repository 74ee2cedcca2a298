//! A session the back end accepted is counted before it is kept: under the user's caps
//! (`max_sessions_per_user`, `max_sessions_per_user_address`, per protocol) and under its
//! pool placement. Counted only once the password was right, so that a stranger cannot use
//! up someone's sessions; across the fleet when there is a store.

use std::net::SocketAddr;

use crate::fleet::{Count, Lease, Placement, Refused};
use crate::metrics::{CapLabels, SessionCap};
use crate::protocol::LoginOutcome;

use super::builder::ListenerState;
use super::services::Services;

pub struct Holder<'a> {
    pub listener: &'a ListenerState,
    pub services: &'a Services,
    pub peer: SocketAddr,
}

impl Holder<'_> {
    /// The session's lease (`None`: nothing counts it), or the answer for a user at its cap.
    pub async fn hold(
        &self,
        user: &str,
        placement: Option<Placement>,
    ) -> Result<Option<Lease>, LoginOutcome> {
        let (counts, caps) = self.counts(user, placement.as_ref());
        if counts.is_empty() {
            return Ok(None);
        }
        let table = &self.services.sessions;
        match table.enter(&counts, placement).await {
            Ok(lease) => Ok(Some(lease)),
            Err(Refused::Moved) => Err(LoginOutcome::unavailable(
                "the user was moved to another server during its login",
            )),
            Err(Refused::AtCap(at)) => {
                let cap = caps.get(at).copied().unwrap_or(SessionCap::User);
                let protocol = self.listener.protocol().name();
                self.services
                    .metrics
                    .over_cap
                    .get_or_create(&CapLabels {
                        protocol,
                        limit: cap,
                    })
                    .inc();
                let why = match cap {
                    SessionCap::User => "the user has max_sessions_per_user sessions",
                    SessionCap::UserAddress => {
                        "the user has max_sessions_per_user_address sessions from this address"
                    }
                };
                Err(LoginOutcome::over_session_cap(why))
            }
        }
    }

    /// The keys the session counts under, and which cap each is (the placement's has none).
    fn counts(&self, user: &str, placement: Option<&Placement>) -> (Vec<Count>, Vec<SessionCap>) {
        let limits = &self.listener.limits;
        let table = &self.services.sessions;
        let protocol = self.listener.protocol().name();
        let user = user.to_ascii_lowercase();
        let (mut counts, mut caps) = (Vec::new(), Vec::new());
        if limits.max_sessions_per_user > 0 {
            counts.push(Count {
                key: table.key_for(&format!("cap:{protocol}:u"), &[&user]),
                cap: limits.max_sessions_per_user,
            });
            caps.push(SessionCap::User);
        }
        if limits.max_sessions_per_user_address > 0 {
            let address = self.peer.ip().to_string();
            counts.push(Count {
                key: table.key_for(&format!("cap:{protocol}:a"), &[&user, &address]),
                cap: limits.max_sessions_per_user_address,
            });
            caps.push(SessionCap::UserAddress);
        }
        if let Some(placement) = placement {
            counts.push(Count {
                key: placement.sessions_key.clone(),
                cap: 0,
            });
        }
        (counts, caps)
    }
}
