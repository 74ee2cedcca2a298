//! nginx's `auth_http` protocol as a map, so that an existing authentication service (Mailu,
//! Zimbra, a home-made one) routes Portcullis's users unchanged.
//!
//! The request is nginx's: `GET` with `Auth-Method: plain`, `Auth-User`, `Auth-Pass` (both
//! escaped as nginx escapes them), `Auth-Protocol`, `Auth-Login-Attempt`, `Client-IP`,
//! `Auth-SSL: on` on TLS connections, and the configured extra headers. The answer is read
//! from the reply headers: `Auth-Status: OK` with `Auth-Server` and `Auth-Port` (a host name
//! is accepted too, where nginx wants an IP), optionally `Auth-User` and `Auth-Pass` for the
//! back-end login; `Auth-Status: WAIT` asks again after `Auth-Wait` seconds; any other status
//! is the words the user is refused with, after `Auth-Wait` seconds when given. Connections to
//! the service are kept alive; a service that is down or slow makes the login unavailable.

use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::route::Route;
use super::{Answer, Login, LookupFuture, Map, MapError, Query};
use crate::protocol::{Protocol, Secret};

/// Requests to the service in flight at once.
const MAX_CONCURRENT: usize = 32;

/// `Auth-Status: WAIT` answers followed before the login is unavailable.
const MAX_WAITS: u32 = 3;

/// The longest `Auth-Wait` honoured, in seconds.
const MAX_WAIT_SECONDS: u64 = 30;

/// The longest refusal text shown to a client.
const MAX_MESSAGE: usize = 200;

pub struct HttpMap {
    uri: Uri,
    /// The URI as log lines show it (no password).
    shown: String,
    /// Requests in flight at once; the others wait (within the routing bound).
    in_flight: tokio::sync::Semaphore,
    /// Sent with every request (a shared secret, typically).
    headers: Vec<(HeaderName, HeaderValue)>,
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

impl HttpMap {
    pub fn new(
        url: &str,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> Result<HttpMap, String> {
        // The URL may carry a password: errors name it masked.
        let shown = super::masked_url(url);
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("auth_http URL {shown:?}: {e}"))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(format!(
                "auth_http URL {shown:?}: an http:// URL with a host"
            ));
        }
        let headers = headers
            .iter()
            .map(|(name, value)| {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|e| format!("auth_http header {name:?}: {e}"))?;
                let value = HeaderValue::from_str(value)
                    .map_err(|e| format!("auth_http header {name}: {e}"))?;
                Ok((name, value))
            })
            .collect::<Result<_, String>>()?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(MAX_CONCURRENT)
            .build(connector);
        Ok(HttpMap {
            shown: super::masked_url(&uri.to_string()),
            in_flight: tokio::sync::Semaphore::new(MAX_CONCURRENT),
            uri,
            headers,
            client,
            timeout,
        })
    }

    fn request(&self, login: &Login<'_>) -> Result<Request<Empty<Bytes>>, MapError> {
        let bad = |e: hyper::http::Error| MapError::Unavailable(format!("auth_http request: {e}"));
        let connection = login.connection;
        let mut request = Request::get(self.uri.clone())
            .header("Auth-Method", "plain")
            .header("Auth-User", escape(login.user.as_bytes()))
            .header("Auth-Pass", escape(login.password.expose()))
            .header("Auth-Protocol", protocol_name(connection.protocol))
            .header("Auth-Login-Attempt", login.attempt.to_string())
            .header("Client-IP", connection.peer.ip().to_canonical().to_string());
        if connection.tls {
            request = request.header("Auth-SSL", "on");
        }
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        request.body(Empty::new()).map_err(bad)
    }

    async fn ask(&self, login: &Login<'_>) -> Result<Answer, MapError> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| MapError::Unavailable("closing".into()))?;
        for _ in 0..=MAX_WAITS {
            let request = self.request(login)?;
            let reply = tokio::time::timeout(self.timeout, self.client.request(request))
                .await
                .map_err(|_| MapError::Unavailable(format!("{}: no answer in time", self.shown)))?
                .map_err(|e| MapError::Unavailable(format!("{}: {e}", self.shown)))?;
            match read_reply(reply.headers())? {
                Reply::Wait(seconds) => tokio::time::sleep(seconds).await,
                Reply::Denied { message, wait } => {
                    tokio::time::sleep(wait).await;
                    return Err(MapError::Denied(message));
                }
                Reply::Route(route) => return Ok(Answer::Route(route)),
            }
        }
        Err(MapError::Unavailable(format!(
            "{}: still WAIT after {MAX_WAITS} tries",
            self.shown
        )))
    }
}

impl Map for HttpMap {
    fn lookup<'a>(&'a self, query: &'a Query<'a>) -> LookupFuture<'a> {
        Box::pin(self.ask(query.login))
    }

    fn describe(&self) -> String {
        format!("auth_http {}", self.shown)
    }

    fn answers_from_password(&self) -> bool {
        true
    }
}

/// What the service decided.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Route(Route),
    Wait(Duration),
    Denied { message: String, wait: Duration },
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn read_reply(headers: &HeaderMap) -> Result<Reply, MapError> {
    let bad = |what: &str| MapError::Unavailable(format!("auth_http reply: {what}"));
    let wait = header(headers, "Auth-Wait")
        .and_then(|w| w.parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(MAX_WAIT_SECONDS)))
        .unwrap_or_default();
    match header(headers, "Auth-Status").ok_or_else(|| bad("no Auth-Status"))? {
        "OK" => {}
        "WAIT" => return Ok(Reply::Wait(wait.max(Duration::from_secs(1)))),
        other => {
            return Ok(Reply::Denied {
                message: printable(other),
                wait,
            })
        }
    }
    let host = header(headers, "Auth-Server").ok_or_else(|| bad("OK without Auth-Server"))?;
    let port = header(headers, "Auth-Port")
        .ok_or_else(|| bad("OK without Auth-Port"))?
        .parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| bad("bad Auth-Port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(bad("bad Auth-Server"));
    }
    // nginx takes Auth-User and Auth-Pass as they come (not unescaped); so does Portcullis.
    let raw = |name: &str| {
        headers
            .get(name)
            .map(|v| v.as_bytes().to_vec())
            .filter(|v| !v.is_empty())
    };
    Ok(Reply::Route(Route {
        user: raw("Auth-User").map(|u| String::from_utf8_lossy(&u).into_owned()),
        host: host.to_string(),
        port: Some(port),
        password: raw("Auth-Pass").map(Secret::new),
    }))
}

/// nginx's `NGX_ESCAPE_MAIL_AUTH`: control bytes, space and `%` as `%XX`; DEL too, which an
/// HTTP header cannot carry.
fn escape(bytes: &[u8]) -> HeaderValue {
    let mut out = Vec::with_capacity(bytes.len());
    for &b in bytes {
        if b <= b' ' || b == b'%' || b == 0x7f {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A refusal text fit to show a client: printable ASCII on one line, bounded.
fn printable(text: &str) -> String {
    let text: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                ' '
            }
        })
        .take(MAX_MESSAGE)
        .collect();
    match text.trim() {
        "" => "Authentication failed.".to_string(),
        t => t.to_string(),
    }
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Imap => "imap",
        Protocol::Pop3 => "pop3",
        Protocol::Managesieve => "managesieve",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn escaping_is_nginxs() {
        assert_eq!(escape(b"a b%c\r\n\x7f\xc3\xa9"), "a%20b%25c%0D%0A%7F\u{e9}");
        assert_eq!(escape(b"p@ss\"w0rd\\"), "p@ss\"w0rd\\");
    }

    #[test]
    fn ok_replies_become_routes() {
        let r = read_reply(&headers(&[
            ("Auth-Status", "OK"),
            ("Auth-Server", "mail2.internal"),
            ("Auth-Port", "143"),
            ("Auth-User", "real@example.org"),
            ("Auth-Pass", "master"),
        ]))
        .unwrap();
        let Reply::Route(route) = r else {
            panic!("{r:?}")
        };
        assert_eq!(
            (route.host.as_str(), route.port, route.user.as_deref()),
            ("mail2.internal", Some(143), Some("real@example.org"))
        );
        assert_eq!(route.password.unwrap().expose(), b"master");
    }

    #[test]
    fn other_statuses() {
        assert_eq!(
            read_reply(&headers(&[("Auth-Status", "WAIT"), ("Auth-Wait", "2")])).unwrap(),
            Reply::Wait(Duration::from_secs(2))
        );
        assert_eq!(
            read_reply(&headers(&[
                ("Auth-Status", "Invalid login or password"),
                ("Auth-Wait", "3")
            ]))
            .unwrap(),
            Reply::Denied {
                message: "Invalid login or password".into(),
                wait: Duration::from_secs(3)
            }
        );
        for bad in [
            vec![("Auth-Server", "10.0.0.1")],
            vec![("Auth-Status", "OK"), ("Auth-Server", "10.0.0.1")],
            vec![
                ("Auth-Status", "OK"),
                ("Auth-Server", "10.0.0.1"),
                ("Auth-Port", "0"),
            ],
            vec![("Auth-Status", "OK"), ("Auth-Port", "143")],
        ] {
            assert!(read_reply(&headers(&bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refusal_words_are_tamed() {
        assert_eq!(printable("bad\u{7}\tpass\u{202e}"), "bad  pass");
        assert_eq!(printable(""), "Authentication failed.");
        assert_eq!(printable(&"x".repeat(500)).len(), MAX_MESSAGE);
    }
}
