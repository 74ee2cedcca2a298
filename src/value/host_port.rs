//! A server as a configuration or a map writes it: `host`, `host:port`, `[v6]`, `[v6]:port` or
//! a bare IPv6 address, with a port by number or by the service names mail maps use. One
//! reader for the native configuration, the maps and the builder (imports nothing of the
//! crate: every layer may use it).

use std::fmt;

/// A server (`host[:port]`) as a configuration writes it, read once when the configuration
/// is. A text that is not one is kept as written, with why, for validation to name with every
/// other problem at once; the empty text is no server.
#[derive(Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(from = "String", into = "String")]
pub struct HostPort {
    text: String,
    read: Result<(String, Option<u16>), HostPortError>,
}

impl HostPort {
    /// The host and its own port, if it names one; the error when the text is no server.
    pub fn get(&self) -> Result<(&str, Option<u16>), &HostPortError> {
        match &self.read {
            Ok((host, port)) => Ok((host, *port)),
            Err(e) => Err(e),
        }
    }

    /// As it was written.
    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

impl Default for HostPort {
    fn default() -> HostPort {
        HostPort::from(String::new())
    }
}

impl From<String> for HostPort {
    fn from(text: String) -> HostPort {
        let read = split_host_port(&text);
        HostPort { text, read }
    }
}

impl From<&str> for HostPort {
    fn from(text: &str) -> HostPort {
        HostPort::from(text.to_string())
    }
}

impl From<HostPort> for String {
    fn from(server: HostPort) -> String {
        server.text
    }
}

/// As written: `"mail:143"`.
impl fmt::Debug for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

/// What is wrong with a server as written (each names the whole, trimmed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostPortError {
    /// Not a number from 1 to 65535, nor a mail service's name.
    #[error("bad port {port:?} in {server:?}")]
    BadPort { port: String, server: String },
    #[error("unclosed [ in {0:?}")]
    UnclosedBracket(String),
    /// Something other than `:port` after `[v6]`.
    #[error("bad server {0:?}")]
    BadServer(String),
}

/// A server's parts as written, before its port is read: the one reader of the `host:port`
/// forms, for the native configuration and the maps ([`split_host_port`]) and for Perdition's
/// options (which read the port their own way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts<'a> {
    pub host: &'a str,
    /// The port's text, when one is written.
    pub port: Option<&'a str>,
    /// What follows `[v6]` when it is not `:port` (empty when nothing does).
    pub after_bracket: &'a str,
}

/// A `[` with no `]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnclosedBracket;

/// `host`, `host:port`, `[v6]`, `[v6]:port`, or a bare IPv6 address (more than one colon, no
/// brackets: no port), trimmed.
pub fn parts(server: &str) -> Result<Parts<'_>, UnclosedBracket> {
    let server = server.trim();
    if let Some(rest) = server.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or(UnclosedBracket)?;
        return Ok(match after.strip_prefix(':') {
            Some(port) => Parts {
                host,
                port: Some(port),
                after_bracket: "",
            },
            None => Parts {
                host,
                port: None,
                after_bracket: after,
            },
        });
    }
    let (host, port) = match server.split_once(':') {
        Some((host, port)) if !port.contains(':') => (host, Some(port)),
        _ => (server, None),
    };
    Ok(Parts {
        host,
        port,
        after_bracket: "",
    })
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`, or a bare IPv6 address; a port by number (1 to
/// 65535) or by a mail service's name.
pub fn split_host_port(server: &str) -> Result<(String, Option<u16>), HostPortError> {
    let server = server.trim();
    let parts = parts(server).map_err(|_| HostPortError::UnclosedBracket(server.to_string()))?;
    if !parts.after_bracket.is_empty() {
        return Err(HostPortError::BadServer(server.to_string()));
    }
    let port = match parts.port {
        None => None,
        Some(p) => Some(
            p.parse::<u16>()
                .ok()
                .or_else(|| port_name(p))
                .filter(|&p| p != 0)
                .ok_or_else(|| HostPortError::BadPort {
                    port: p.to_string(),
                    server: server.to_string(),
                })?,
        ),
    };
    Ok((parts.host.to_string(), port))
}

/// The service names Perdition's maps use for ports (it asks `/etc/services`; these are the
/// ones a mail map can mean).
fn port_name(name: &str) -> Option<u16> {
    Some(match name {
        "imap" | "imap2" => 143,
        "imaps" => 993,
        "pop3" => 110,
        "pop3s" => 995,
        "sieve" | "managesieve" => 4190,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_splits_the_same_way_for_every_reader() {
        let p = |s| parts(s).unwrap();
        assert_eq!((p("mail").host, p("mail").port), ("mail", None));
        assert_eq!(
            (p(" mail:1143 ").host, p("mail:1143").port),
            ("mail", Some("1143"))
        );
        assert_eq!(
            (p("[::1]:143").host, p("[::1]:143").port),
            ("::1", Some("143"))
        );
        assert_eq!((p("[::1]").host, p("[::1]").port), ("::1", None));
        assert_eq!(
            (p("2001:db8::1").host, p("2001:db8::1").port),
            ("2001:db8::1", None)
        );
        assert_eq!(p("[::1]x").after_bracket, "x");
        assert_eq!(parts("[::1"), Err(UnclosedBracket));
    }

    #[test]
    fn the_native_reader_takes_mail_service_names_and_refuses_port_zero() {
        assert_eq!(split_host_port("m:imaps"), Ok(("m".into(), Some(993))));
        assert_eq!(split_host_port("m:sieve"), Ok(("m".into(), Some(4190))));
        assert_eq!(
            split_host_port("m:0").unwrap_err().to_string(),
            "bad port \"0\" in \"m:0\""
        );
        assert_eq!(
            split_host_port("[::1]x").unwrap_err().to_string(),
            "bad server \"[::1]x\""
        );
        assert_eq!(
            split_host_port("[::1").unwrap_err().to_string(),
            "unclosed [ in \"[::1\""
        );
    }
}
