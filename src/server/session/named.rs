//! The session's side of who the client is: a trusted peer naming the client it speaks for
//! (and the hop count), and the line that ties our session id to the back end's.

use std::net::SocketAddr;

use crate::config::ForwardClient;
use crate::log::AuthRecord;
use crate::protocol::{LoginOutcome, NamedClient};

use super::Session;

impl Session {
    /// When the back end was told who the client is, the session id it was given, so that an
    /// admin can follow one session from this log into the back end's.
    pub(super) fn log_forwarding(&self, record: &AuthRecord, outcome: &LoginOutcome) {
        let forward = self.listener.config.backend.forward_client;
        let answered = matches!(
            outcome,
            LoginOutcome::Accepted { .. } | LoginOutcome::Rejected { .. }
        );
        if forward != ForwardClient::None && answered {
            let server = record.server.as_deref().unwrap_or("(none)");
            self.logger().info(&format!(
                "Forwarded: {}->{} session={} server={server} forward_client={}",
                self.peer.ip().to_canonical(),
                self.local.ip().to_canonical(),
                self.id,
                forward.name()
            ));
        }
    }

    pub(super) fn login_trusted(&self) -> bool {
        let ip = self.peer.ip().to_canonical();
        self.listener.login_trusted.iter().any(|n| n.contains(&ip))
    }

    /// A trusted peer named its client: from now on that is the session's client (logs, guard,
    /// maps, forwarding), its session id ours, and the hops left one fewer than it said.
    /// True when no hop is left: a loop.
    pub(super) fn adopt_named_client(&mut self, named: Option<NamedClient>) -> bool {
        let Some(named) = named else {
            return false;
        };
        let client = SocketAddr::new(named.ip, named.port.unwrap_or(0));
        if client != self.peer {
            self.logger().info(&format!(
                "Client named by {}: {client}",
                self.peer.ip().to_canonical()
            ));
            self.peer = client;
        }
        if let Some(session) = named.session {
            self.id = session;
        }
        self.registered.update_client(self.peer, &self.id);
        match named.ttl {
            Some(ttl) if ttl <= 1 => {
                self.logger().error(&format!(
                    "Proxy loop: the peer naming {client} says TTL {ttl}; refusing to proxy"
                ));
                true
            }
            Some(ttl) => {
                self.proxy_ttl = ttl - 1;
                false
            }
            None => false,
        }
    }
}
