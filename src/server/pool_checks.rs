//! A pool's health checks, made the way a login reaches its servers: the listener's port,
//! TLS, PROXY header and source addresses, then the greeting and a logout (the probe of
//! `check --probe`). No credentials are sent.

use std::sync::{Arc, Weak};

use crate::map::pool::{CheckFailed, CheckFuture, HealthCheck, Server};
use crate::map::{Endpoint, Route};

use super::backend_probe;
use super::builder::ListenerState;

pub struct ListenerChecks {
    /// Weak: the listener holds the pool that holds this.
    listener: Weak<ListenerState>,
}

impl ListenerChecks {
    pub fn new(listener: &Arc<ListenerState>) -> ListenerChecks {
        ListenerChecks {
            listener: Arc::downgrade(listener),
        }
    }

    fn endpoint(listener: &ListenerState, server: &Server) -> Endpoint {
        listener.router.endpoint(&Route {
            user: None,
            host: server.host.clone(),
            port: server.port,
            password: None,
            placement: None,
        })
    }
}

impl HealthCheck for ListenerChecks {
    fn check<'a>(&'a self, server: &'a Server) -> CheckFuture<'a> {
        Box::pin(async move {
            let Some(listener) = self.listener.upgrade() else {
                return Err(CheckFailed("the listener is gone".into()));
            };
            let endpoint = Self::endpoint(&listener, server);
            match backend_probe::probe(&listener, &endpoint).await.broken {
                None => Ok(()),
                Some(why) => Err(CheckFailed(why)),
            }
        })
    }

    fn name(&self, server: &Server) -> String {
        match self.listener.upgrade() {
            Some(listener) => Self::endpoint(&listener, server).log_name(),
            None => server.host.clone(),
        }
    }
}
