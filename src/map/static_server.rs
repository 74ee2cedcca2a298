//! The static map: every user goes to the same server (Perdition's `outgoing_server` with
//! `no_lookup`, or a native listener's `[listener.backend]`).

use super::{LookupFuture, Map, Target};

pub struct StaticServer {
    target: Target,
}

impl StaticServer {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        StaticServer {
            target: Target {
                host: host.into(),
                port,
            },
        }
    }
}

impl Map for StaticServer {
    fn lookup<'a>(&'a self, _user: &'a str) -> LookupFuture<'a> {
        let target = self.target.clone();
        Box::pin(async move { Ok(target) })
    }
}
