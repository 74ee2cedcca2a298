//! The admin endpoint (`[admin] listen`): `GET /metrics` for Prometheus, `GET /sessions` (JSON)
//! and `GET /` (an HTML page of the same, rendered here and refreshing itself) for the live
//! sessions, `POST /sessions/kick?user=U` or `?backend=HOST:PORT` to end sessions, and
//! `POST /reload` to read the configuration again (as SIGHUP does, with the outcome). Plain
//! HTTP/1.1 for loopback or a management network, optionally behind a bearer token. Idle
//! connections cannot keep an admin out: see [`slots`].

pub mod backends;
pub mod client;
mod page;
mod slots;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::server::control::{ReloadRequest, UpgradeRequest};
use crate::server::registry::Kick;
use crate::server::services::Services;
use slots::{Slot, Slots};

/// A connection's whole life: one request and its answer (a client that does not read its
/// answer cannot hold a slot longer).
const CONNECTION_TIME: Duration = Duration::from_secs(30);

/// What the endpoint needs: the process's shared services, the token, if any, and a way to
/// ask the server for a reload.
pub struct Admin {
    services: Arc<Services>,
    token: Option<String>,
    reloads: mpsc::Sender<ReloadRequest>,
    upgrades: mpsc::Sender<UpgradeRequest>,
    /// The `Host` values a request may carry: the listen address, `localhost` for a loopback
    /// one, and the names configured. A browser led to this address under another name (DNS
    /// rebinding) carries that name, and is refused.
    hosts: Vec<String>,
    /// How long a connection may take to send its request's headers (`[admin]
    /// header_timeout_ms`): until then it holds a slot while proving nothing.
    header_time: Duration,
}

/// Why the endpoint has no socket.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot listen on {address} (admin): {source}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The socket is bound but cannot be set up for the runtime, or copied.
    #[error("admin socket: {0}")]
    Socket(#[source] std::io::Error),
}

/// Bind the endpoint's socket (before privileges are dropped, like the listeners), or take the
/// one passed in for its address (a predecessor's, or systemd's); a copy of it comes back too,
/// for a successor to take over.
pub fn bind(
    address: SocketAddr,
    inherited: Option<std::net::TcpListener>,
) -> Result<(TcpListener, std::net::TcpListener), BindError> {
    let socket = match inherited {
        Some(socket) => socket,
        None => std::net::TcpListener::bind(address)
            .map_err(|source| BindError::Listen { address, source })?,
    };
    socket.set_nonblocking(true).map_err(BindError::Socket)?;
    let copy = socket.try_clone().map_err(BindError::Socket)?;
    let socket = TcpListener::from_std(socket).map_err(BindError::Socket)?;
    Ok((socket, copy))
}

impl Admin {
    pub fn new(
        services: Arc<Services>,
        config: &crate::config::AdminConfig,
        address: SocketAddr,
        reloads: mpsc::Sender<ReloadRequest>,
        upgrades: mpsc::Sender<UpgradeRequest>,
    ) -> Admin {
        let mut hosts = vec![address.to_string()];
        if address.ip().is_loopback() {
            hosts.push(format!("localhost:{}", address.port()));
        }
        hosts.extend(config.hosts.iter().cloned());
        Admin {
            services,
            token: config.token.clone(),
            reloads,
            upgrades,
            hosts,
            header_time: config.header_timeout(),
        }
    }

    /// Serve until the task is dropped.
    pub async fn serve(self, listener: TcpListener) {
        serve(Arc::new(self), listener).await
    }
}

async fn serve(admin: Arc<Admin>, listener: TcpListener) {
    let slots = Arc::new(Slots::default());
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some((slot, closed)) = slots.enter(peer.ip()) else {
            // Every slot serves a request that was let in: said so at once rather than left
            // in the queue.
            let _ = tcp.try_write(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            continue;
        };
        tokio::spawn(serve_connection(admin.clone(), tcp, peer, slot, closed));
    }
}

/// One request on `tcp`, ended early when a newcomer needs the slot while this one still
/// waits to be let in, or when its header time is over before it was.
async fn serve_connection(
    admin: Arc<Admin>,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    slot: Arc<Slot>,
    closed: oneshot::Receiver<()>,
) {
    let header_time = admin.header_time;
    let held = slot.clone();
    let service = hyper::service::service_fn(move |request| {
        let (admin, slot) = (admin.clone(), slot.clone());
        async move { Ok::<_, Infallible>(admin.answer(request, peer, &slot).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_time)
        .keep_alive(false)
        .serve_connection(TokioIo::new(tcp), service);
    let waited_too_long = async {
        tokio::time::sleep(header_time).await;
        if held.admitted() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = connection => {}
        // A sender dropped unsent (the request was let in) closes nothing.
        Ok(()) = closed => {}
        _ = waited_too_long => {}
        _ = tokio::time::sleep(CONNECTION_TIME) => {}
    }
}

impl Admin {
    /// The gate: the request must name this endpoint and carry the token; then it is let in
    /// and routed.
    async fn answer(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
        slot: &Slot,
    ) -> Response<Full<Bytes>> {
        let host = request
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok());
        if !host.is_some_and(|h| {
            self.hosts
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(h))
        }) {
            return text(StatusCode::MISDIRECTED_REQUEST, "unknown host name\n");
        }
        if !self.authorized(&request) {
            let mut response = text(StatusCode::UNAUTHORIZED, "a bearer token is needed\n");
            response.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
            return response;
        }
        // Let in: the connection no longer counts as one that may be idle. One that lost its
        // slot to a newcomer meanwhile is not served: its connection is closing.
        if !slot.admit() {
            return text(StatusCode::SERVICE_UNAVAILABLE, "too many connections\n");
        }
        // A browser sends Origin with a cross-site form: a page elsewhere must not be able to
        // kick, reload or upgrade through an admin's browser.
        if request.method() == Method::POST && request.headers().contains_key(hyper::header::ORIGIN)
        {
            return text(StatusCode::FORBIDDEN, "not from a browser\n");
        }
        self.route(&request, peer).await
    }

    async fn route(&self, request: &Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let registry = &self.services.registry;
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/metrics") => {
                let mut response = text(StatusCode::OK, &self.services.metrics.encode());
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                response
            }
            (&Method::GET, "/sessions") => {
                let json = serde_json::to_string_pretty(&registry.list()).unwrap_or_default();
                with_type(StatusCode::OK, json + "\n", "application/json")
            }
            (&Method::GET, "/") => with_type(
                StatusCode::OK,
                page::render(
                    &registry.list(),
                    &backends::list(&self.services),
                    env!("CARGO_PKG_VERSION"),
                ),
                "text/html; charset=utf-8",
            ),
            (&Method::POST, "/sessions/kick") => {
                self.kick(request.uri().query().unwrap_or_default(), peer)
            }
            (&Method::GET, "/backends") => {
                let json = serde_json::to_string_pretty(&backends::list(&self.services))
                    .unwrap_or_default();
                with_type(StatusCode::OK, json + "\n", "application/json")
            }
            (&Method::POST, "/backends/down" | "/backends/up" | "/move") => {
                self.pool_word(request, peer).await
            }
            (&Method::POST, "/reload") => self.reload(peer).await,
            (&Method::POST, "/upgrade") => self.upgrade(peer).await,
            (
                _,
                "/metrics" | "/sessions" | "/" | "/sessions/kick" | "/reload" | "/upgrade"
                | "/backends" | "/backends/down" | "/backends/up" | "/move",
            ) => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    fn kick(&self, query: &str, peer: SocketAddr) -> Response<Full<Bytes>> {
        let kick = match kick_from_query(query) {
            Ok(kick) => kick,
            Err(e) => return text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
        };
        // The client comes back at once: its route is to be asked anew.
        self.services.forget_map_answers();
        let kicked = self.services.registry.kick(&kick);
        let what = match &kick {
            Kick::User(u) => format!("user={u}"),
            Kick::Backend(b) => format!("backend={b}"),
        };
        self.services.logger.info(&format!(
            "Admin kick {what} from {peer}: {kicked} sessions ended"
        ));
        let json = serde_json::json!({ "kicked": kicked }).to_string();
        with_type(StatusCode::OK, json + "\n", "application/json")
    }

    /// Drain a pool's server, bring it back, or move a user; logged with who asked.
    async fn pool_word(
        &self,
        request: &Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Full<Bytes>> {
        let query = request.uri().query().unwrap_or_default();
        let services = &self.services;
        let done = match request.uri().path() {
            "/move" => backends::move_user(services, query)
                .await
                .map(|(user, server)| format!("move user={user:?} to {server:?}")),
            path => {
                let drained = path == "/backends/down";
                backends::drain(services, query, drained)
                    .await
                    .map(|server| {
                        let what = if drained { "down" } else { "up" };
                        format!("backend {what} {server:?}")
                    })
            }
        };
        match done {
            Ok(what) => {
                let line = format!("Admin {what} from {peer}");
                self.services.logger.info(&crate::log::one_line(&line));
                let json = serde_json::json!({ "ok": true }).to_string();
                with_type(StatusCode::OK, json + "\n", "application/json")
            }
            Err(e @ backends::BackendsError::Unknown(_)) => {
                text(StatusCode::NOT_FOUND, &format!("{e}\n"))
            }
            Err(e @ backends::BackendsError::NotTaken(_)) => {
                text(StatusCode::SERVICE_UNAVAILABLE, &format!("{e}\n"))
            }
            Err(e) => text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
        }
    }

    async fn reload(&self, peer: SocketAddr) -> Response<Full<Bytes>> {
        self.services
            .logger
            .info(&format!("Admin reload asked from {peer}"));
        let (reply, answer) = oneshot::channel();
        let asked = self
            .reloads
            .send(ReloadRequest { reply: Some(reply) })
            .await;
        match (asked, answer.await) {
            (Ok(()), Ok(Ok(summary))) => text(StatusCode::OK, &format!("reloaded: {summary}\n")),
            (Ok(()), Ok(Err(why))) => text(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("not reloaded, the running configuration stays: {why}\n"),
            ),
            _ => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
        }
    }

    async fn upgrade(&self, peer: SocketAddr) -> Response<Full<Bytes>> {
        self.services
            .logger
            .info(&format!("Admin upgrade asked from {peer}"));
        let (reply, answer) = oneshot::channel();
        let asked = self
            .upgrades
            .send(UpgradeRequest { reply: Some(reply) })
            .await;
        match (asked, answer.await) {
            (Ok(()), Ok(Ok(line))) => text(StatusCode::OK, &format!("{line}\n")),
            (Ok(()), Ok(Err(why))) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("not upgraded, this process goes on: {why}\n"),
            ),
            _ => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
        }
    }

    fn authorized(&self, request: &Request<Incoming>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let given = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then_some(token.trim())
            })
            .unwrap_or_default();
        same(given.as_bytes(), token.as_bytes())
    }
}

/// What is wrong with a kick's query; the answer's body says it.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum KickQueryError {
    /// No user or back end, an empty one, or another parameter.
    #[error("give user=U or backend=HOST:PORT")]
    NoneNamed,
    #[error("give one of user=U or backend=HOST:PORT")]
    SeveralNamed,
}

/// `user=U` or `backend=HOST:PORT`, exactly one.
fn kick_from_query(query: &str) -> Result<Kick, KickQueryError> {
    let mut kick = None;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let this = match name.as_ref() {
            "user" if !value.is_empty() => Kick::User(value.into_owned()),
            "backend" if !value.is_empty() => Kick::Backend(value.into_owned()),
            _ => return Err(KickQueryError::NoneNamed),
        };
        if kick.replace(this).is_some() {
            return Err(KickQueryError::SeveralNamed);
        }
    }
    kick.ok_or(KickQueryError::NoneNamed)
}

/// Compare without returning early, so that the time taken does not tell how much matched.
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut differ = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        differ |= x ^ b.get(i).copied().unwrap_or(!x);
    }
    differ == 0
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    with_type(status, body.to_string(), "text/plain; charset=utf-8")
}

fn with_type(
    status: StatusCode,
    body: String,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kick_names_one_user_or_one_back_end() {
        assert_eq!(
            kick_from_query("user=alice%40example.org"),
            Ok(Kick::User("alice@example.org".into()))
        );
        assert_eq!(
            kick_from_query("backend=10.0.0.1:143"),
            Ok(Kick::Backend("10.0.0.1:143".into()))
        );
        assert!(kick_from_query("").is_err());
        assert!(kick_from_query("user=").is_err());
        assert!(kick_from_query("user=a&backend=b").is_err());
        assert!(kick_from_query("everyone=1").is_err());
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secre", b"secret"));
        assert!(!same(b"secret!", b"secret"));
        assert!(!same(b"", b"secret"));
        assert!(!same(b"Secret", b"secret"));
    }
}
