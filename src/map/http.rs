//! nginx's `auth_http` protocol as a map, so that an existing authentication service (Mailu,
//! Zimbra, a home-made one) routes Portcullis's users unchanged.
//!
//! The request is nginx's: `GET` with `Auth-Method: plain`, `Auth-User`, `Auth-Pass` (both
//! escaped as nginx escapes them; a name that is not UTF-8 as its bytes), `Auth-Protocol`,
//! `Auth-Login-Attempt`, `Client-IP` (for SMTP `Client-Host: [UNAVAILABLE]` too, as nginx
//! without a resolver), `Auth-SSL: on` with `Auth-SSL-Protocol` and `Auth-SSL-Cipher`
//! (OpenSSL's names) on TLS connections, and the configured extra headers,
//! to an `http://` URL or nginx's `unix:/path:/uri`. The answer is read from the reply headers:
//! `Auth-Status: OK` with `Auth-Server` and `Auth-Port` (a host name is accepted too, where
//! nginx wants an IP), optionally `Auth-User` and `Auth-Pass` for the back-end login;
//! `Auth-Status: WAIT` asks again after `Auth-Wait` seconds; any other status is the words the
//! user is refused with, after `Auth-Wait` seconds when given (then the client may retry on the
//! connection; without, nginx closes it and so does Portcullis). A header of those named twice
//! makes the reply malformed. Connections to the service are kept alive; a service that is
//! down or slow, or a malformed reply, makes the login unavailable.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::{CipherSuite, ProtocolVersion};

use super::route::Route;
use super::{Answer, Login, LookupFuture, Map, MapError, Query};
use crate::protocol::Secret;

/// Requests to the service in flight at once.
const MAX_CONCURRENT: usize = 32;

/// `Auth-Status: WAIT` answers followed before the login is unavailable.
const MAX_WAITS: u32 = 3;

/// The longest `Auth-Wait` honoured, in seconds.
const MAX_WAIT_SECONDS: u64 = 30;

/// The longest refusal text shown to a client.
const MAX_MESSAGE: usize = 200;

/// The longest path a unix socket address holds (`sun_path`, with its NUL).
const MAX_SOCKET_PATH: usize = 107;

pub struct HttpMap {
    uri: Uri,
    /// The URL as log lines show it (no password).
    shown: String,
    /// Requests in flight at once; the others wait (within the routing bound).
    in_flight: tokio::sync::Semaphore,
    /// Sent with every request (a shared secret, typically).
    headers: Vec<(HeaderName, HeaderValue)>,
    client: Transport,
    timeout: Duration,
}

/// How the service is reached; either way its connections are kept alive.
enum Transport {
    Tcp(Client<HttpConnector, Empty<Bytes>>),
    /// nginx's `auth_http unix:/path:/uri`.
    Unix(Client<UnixConnector, Empty<Bytes>>),
}

/// Connects every request to the one unix socket, whatever the request's URI says.
#[derive(Clone)]
struct UnixConnector {
    path: Arc<PathBuf>,
}

type Connecting =
    Pin<Box<dyn Future<Output = std::io::Result<TokioIo<tokio::net::UnixStream>>> + Send>>;

impl tower_service::Service<Uri> for UnixConnector {
    type Response = TokioIo<tokio::net::UnixStream>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let path = self.path.clone();
        Box::pin(async move {
            let stream = tokio::net::UnixStream::connect(path.as_path()).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// Why an http map could not be made; the URL is named without its password.
#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    /// `why`: what the URL must be.
    #[error("auth_http URL {url:?}: {why}")]
    Url { url: String, why: &'static str },
    #[error("auth_http URL {url:?}: {source}")]
    BadUri {
        url: String,
        #[source]
        source: hyper::http::uri::InvalidUri,
    },
    #[error("auth_http header {name:?}: {source}")]
    HeaderName {
        name: String,
        #[source]
        source: hyper::header::InvalidHeaderName,
    },
    #[error("auth_http header {name}: {source}")]
    HeaderValue {
        name: String,
        #[source]
        source: hyper::header::InvalidHeaderValue,
    },
}

/// Where the service is: a TCP URL, or nginx's `unix:/path[:/uri]`.
enum Place {
    Tcp(Uri),
    Unix { path: PathBuf, uri: Uri },
}

/// nginx's forms: `http://host[:port]/uri`, or `unix:/path:/uri` (the first `:` after the
/// path ends it; no URI means `/`). A unix socket's requests say `Host: localhost`, as nginx's.
fn place(url: &str, shown: &str) -> Result<Place, HttpSetupError> {
    let bad = |why| HttpSetupError::Url {
        url: shown.to_string(),
        why,
    };
    let bad_uri = |source| HttpSetupError::BadUri {
        url: shown.to_string(),
        source,
    };
    if let Some(rest) = url.strip_prefix("unix:") {
        let (path, uri) = rest.split_once(':').unwrap_or((rest, "/"));
        if path.is_empty() || path.len() > MAX_SOCKET_PATH {
            return Err(bad("a unix socket path of 1 to 107 bytes"));
        }
        if !uri.starts_with('/') {
            return Err(bad("the URI after the socket path starts with /"));
        }
        let uri = format!("http://localhost{uri}").parse().map_err(bad_uri)?;
        return Ok(Place::Unix {
            path: path.into(),
            uri,
        });
    }
    let uri: Uri = url.parse().map_err(bad_uri)?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(bad("an http:// URL with a host, or unix:/path:/uri"));
    }
    Ok(Place::Tcp(uri))
}

impl HttpMap {
    pub fn new(
        url: &str,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> Result<HttpMap, HttpSetupError> {
        // The URL may carry a password: errors name it masked.
        let shown = super::masked_url(url);
        let place = place(url, &shown)?;
        let headers = headers
            .iter()
            .map(|(name, value)| {
                let name = HeaderName::from_bytes(name.as_bytes()).map_err(|source| {
                    HttpSetupError::HeaderName {
                        name: name.clone(),
                        source,
                    }
                })?;
                let value =
                    HeaderValue::from_str(value).map_err(|source| HttpSetupError::HeaderValue {
                        name: name.to_string(),
                        source,
                    })?;
                Ok((name, value))
            })
            .collect::<Result<_, HttpSetupError>>()?;
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(MAX_CONCURRENT);
        let (uri, client) = match place {
            Place::Tcp(uri) => {
                let mut connector = HttpConnector::new();
                connector.set_connect_timeout(Some(timeout));
                (uri, Transport::Tcp(builder.build(connector)))
            }
            Place::Unix { path, uri } => {
                let connector = UnixConnector {
                    path: Arc::new(path),
                };
                (uri, Transport::Unix(builder.build(connector)))
            }
        };
        Ok(HttpMap {
            shown,
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
            .header(
                "Auth-User",
                escape(login.user_bytes.unwrap_or(login.user.as_bytes())),
            )
            .header("Auth-Pass", escape(login.password.expose()))
            .header(
                "Auth-Protocol",
                connection.protocol.descriptor().auth_http_name,
            )
            .header("Auth-Login-Attempt", login.attempt.to_string())
            .header("Client-IP", connection.peer.ip().to_canonical().to_string());
        for (name, value) in connection.protocol.descriptor().auth_http_headers {
            request = request.header(*name, *value);
        }
        if connection.tls {
            request = request.header("Auth-SSL", "on");
            // nginx >= 1.21.2 names them as OpenSSL does, and leaves out what it lacks.
            if let Some(version) = connection.tls_version.and_then(openssl_version) {
                request = request.header("Auth-SSL-Protocol", version);
            }
            if let Some(cipher) = connection.tls_cipher.and_then(openssl_cipher) {
                request = request.header("Auth-SSL-Cipher", cipher);
            }
        }
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        request.body(Empty::new()).map_err(bad)
    }

    /// One request and its reply's head, within the map's timeout.
    async fn send(&self, login: &Login<'_>) -> Result<Response<hyper::body::Incoming>, MapError> {
        let request = self.request(login)?;
        let sent = match &self.client {
            Transport::Tcp(client) => tokio::time::timeout(self.timeout, client.request(request)),
            Transport::Unix(client) => tokio::time::timeout(self.timeout, client.request(request)),
        };
        sent.await
            .map_err(|_| MapError::Unavailable(format!("{}: no answer in time", self.shown)))?
            .map_err(|e| MapError::Unavailable(format!("{}: {}", self.shown, failure(&e))))
    }

    async fn ask(&self, login: &Login<'_>) -> Result<Answer, MapError> {
        for _ in 0..=MAX_WAITS {
            let read = self.ask_once(login).await?;
            // The waits that follow hold no place among the requests in flight: logins that
            // must wait out a penalty cannot keep everyone else's from being asked.
            match read {
                Reply::Wait(seconds) => tokio::time::sleep(seconds).await,
                Reply::Denied { message, wait } => {
                    tokio::time::sleep(wait).await;
                    // nginx: a refusal with Auth-Wait lets the client try again, one without
                    // closes the connection.
                    let retry = !wait.is_zero();
                    return Err(MapError::Denied { message, retry });
                }
                Reply::Route(route) => return Ok(Answer::Route(route)),
            }
        }
        Err(MapError::Unavailable(format!(
            "{}: still WAIT after {MAX_WAITS} tries",
            self.shown
        )))
    }

    /// One request and its reply, holding one of the places in flight while it lasts.
    async fn ask_once(&self, login: &Login<'_>) -> Result<Reply, MapError> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| MapError::Unavailable("closing".into()))?;
        let reply = self.send(login).await?;
        read_reply(reply.headers()).map_err(|e| match e {
            MapError::Unavailable(why) => MapError::Unavailable(format!("{}: {why}", self.shown)),
            other => other,
        })
    }
}

/// Why a request failed, for the log: hyper's own words for a reply it could not parse
/// ("auth_http reply malformed: invalid HTTP header parsed"), else the whole chain of causes
/// (the client's outer error alone says only "client error (SendRequest)").
fn failure(error: &hyper_util::client::legacy::Error) -> String {
    let mut causes = vec![error.to_string()];
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
            if hyper.is_parse() || hyper.is_parse_status() || hyper.is_parse_too_large() {
                return format!("auth_http reply malformed: {hyper}");
            }
        }
        causes.push(cause.to_string());
        source = cause.source();
    }
    causes.join(": ")
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

/// The one value of header `name`, trimmed: a reply naming it twice is malformed (which one
/// would be meant is anyone's guess, and the service's and a proxy's guesses may differ).
fn header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, MapError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(malformed(&format!("two {name} headers")));
    }
    Ok(first.and_then(|v| v.to_str().ok()).map(str::trim))
}

fn malformed(what: &str) -> MapError {
    MapError::Unavailable(format!("auth_http reply malformed: {what}"))
}

fn read_reply(headers: &HeaderMap) -> Result<Reply, MapError> {
    // nginx waits only for a whole number of seconds above 0; anything else is no wait.
    let wait = header(headers, "Auth-Wait")?
        .and_then(|w| w.parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(MAX_WAIT_SECONDS)))
        .unwrap_or_default();
    match header(headers, "Auth-Status")?.ok_or_else(|| malformed("no Auth-Status"))? {
        "OK" => {}
        "WAIT" => return Ok(Reply::Wait(wait.max(Duration::from_secs(1)))),
        other => {
            return Ok(Reply::Denied {
                message: printable(other),
                wait,
            })
        }
    }
    let host =
        header(headers, "Auth-Server")?.ok_or_else(|| malformed("OK without Auth-Server"))?;
    let port = header(headers, "Auth-Port")?
        .ok_or_else(|| malformed("OK without Auth-Port"))?
        .parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| malformed("bad Auth-Port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(malformed("bad Auth-Server"));
    }
    // nginx takes Auth-User and Auth-Pass as they come (not unescaped); so does Portcullis.
    let raw = |name: &str| -> Result<Option<Vec<u8>>, MapError> {
        header(headers, name)?;
        let value = headers.get(name).map(|v| v.as_bytes().to_vec());
        Ok(value.filter(|v| !v.is_empty()))
    };
    Ok(Reply::Route(Route {
        user: raw("Auth-User")?.map(|u| String::from_utf8_lossy(&u).into_owned()),
        host: host.to_string(),
        port: Some(port),
        password: raw("Auth-Pass")?.map(Secret::new),
        placement: None,
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

/// The TLS version as OpenSSL's `SSL_get_version` names it (nginx's `$ssl_protocol`).
fn openssl_version(version: ProtocolVersion) -> Option<&'static str> {
    match version {
        ProtocolVersion::TLSv1_3 => Some("TLSv1.3"),
        ProtocolVersion::TLSv1_2 => Some("TLSv1.2"),
        ProtocolVersion::TLSv1_1 => Some("TLSv1.1"),
        ProtocolVersion::TLSv1_0 => Some("TLSv1"),
        _ => None,
    }
}

/// The cipher suite as OpenSSL's `SSL_get_cipher_name` names it (nginx's `$ssl_cipher`):
/// TLS 1.3's by their RFC names, TLS 1.2's by OpenSSL's own; the suites rustls offers.
fn openssl_cipher(suite: CipherSuite) -> Option<&'static str> {
    Some(match suite {
        CipherSuite::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        CipherSuite::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => {
            "ECDHE-ECDSA-CHACHA20-POLY1305"
        }
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        _ => return None,
    })
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

    fn appended(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn a_header_named_twice_is_malformed() {
        let ok = [
            ("Auth-Status", "OK"),
            ("Auth-Server", "10.0.0.1"),
            ("Auth-Port", "143"),
        ];
        for twice in [("Auth-Server", "10.0.0.2"), ("Auth-Port", "993")] {
            let mut pairs = ok.to_vec();
            pairs.push(twice);
            let e = read_reply(&appended(&pairs)).unwrap_err();
            let said = format!("auth_http reply malformed: two {} headers", twice.0);
            assert_eq!(e, MapError::Unavailable(said));
        }
        assert!(read_reply(&appended(&ok)).is_ok());
        let e = read_reply(&appended(&[("Auth-Server", "10.0.0.1")])).unwrap_err();
        let said = "auth_http reply malformed: no Auth-Status".to_string();
        assert_eq!(e, MapError::Unavailable(said));
    }

    #[test]
    fn a_refusal_waits_only_for_a_whole_number_of_seconds() {
        for (given, wait) in [("2", 2), ("0", 0), ("x", 0), ("-1", 0), ("900", 30)] {
            let r = read_reply(&headers(&[("Auth-Status", "No"), ("Auth-Wait", given)]));
            let wait = Duration::from_secs(wait);
            let message = "No".to_string();
            assert_eq!(r.unwrap(), Reply::Denied { message, wait }, "{given}");
        }
    }

    #[test]
    fn tls_facts_are_named_as_openssl_names_them() {
        assert_eq!(openssl_version(ProtocolVersion::TLSv1_3), Some("TLSv1.3"));
        assert_eq!(openssl_version(ProtocolVersion::TLSv1_2), Some("TLSv1.2"));
        let suites = [
            (
                CipherSuite::TLS13_AES_256_GCM_SHA384,
                "TLS_AES_256_GCM_SHA384",
            ),
            (
                CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                "ECDHE-RSA-AES128-GCM-SHA256",
            ),
            (
                CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                "ECDHE-ECDSA-CHACHA20-POLY1305",
            ),
        ];
        for (suite, name) in suites {
            assert_eq!(openssl_cipher(suite), Some(name));
        }
    }

    #[test]
    fn urls_are_nginxs() {
        let Ok(Place::Unix { path, uri }) = place("unix:/run/auth.sock:/auth?x=1", "u") else {
            panic!("unix URL not taken")
        };
        assert_eq!(path, PathBuf::from("/run/auth.sock"));
        assert_eq!(uri.to_string(), "http://localhost/auth?x=1");
        let Ok(Place::Unix { uri, .. }) = place("unix:/run/auth.sock", "u") else {
            panic!("unix URL without a URI not taken")
        };
        assert_eq!(uri.path(), "/");
        assert!(matches!(
            place("http://a:9000/auth", "u"),
            Ok(Place::Tcp(_))
        ));
        for bad in ["unix::/auth", "unix:/s:auth", "https://a/auth", "ftp://a/"] {
            assert!(place(bad, "u").is_err(), "{bad}");
        }
    }

    #[test]
    fn a_name_that_is_not_utf8_goes_to_the_service_as_nginx_sends_it() {
        let map = HttpMap::new("http://127.0.0.1:9/auth", &[], Duration::from_secs(1)).unwrap();
        let connection = super::super::Connection::new(
            crate::value::Protocol::Pop3,
            "192.0.2.1:1000".parse().unwrap(),
            "192.0.2.2:110".parse().unwrap(),
            false,
            "s".into(),
        );
        let password = Secret::new(b"pw".to_vec());
        let login = Login {
            user: "caf\\xE9 x",
            user_bytes: Some(b"caf\xe9 x"),
            password: &password,
            attempt: 1,
            connection: &connection,
        };
        let request = map.request(&login).unwrap();
        assert_eq!(request.headers()["Auth-User"].as_bytes(), b"caf\xe9%20x");
    }

    #[test]
    fn refusal_words_are_tamed() {
        assert_eq!(printable("bad\u{7}\tpass\u{202e}"), "bad  pass");
        assert_eq!(printable(""), "Authentication failed.");
        assert_eq!(printable(&"x".repeat(500)).len(), MAX_MESSAGE);
    }
}
