//! The static map: every user goes to the same server (Perdition's `outgoing_server` with
//! `no_lookup`, or a native listener's `[listener.backend]`).

use super::{Endpoint, LookupFuture, Map, Target};

pub struct StaticServer {
    target: Target,
}

impl StaticServer {
    pub fn new(endpoint: Endpoint) -> Self {
        StaticServer {
            target: Target {
                endpoints: vec![endpoint],
                user: None,
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
