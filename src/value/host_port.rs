//! A server as a configuration or a map writes it: `host`, `host:port`, `[v6]`, `[v6]:port` or
//! a bare IPv6 address, with a port by number or by the service names mail maps use. One
//! reader for the native configuration, the maps and the builder (imports nothing of the
//! crate: every layer may use it).

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

/// `host`, `host:port`, `[v6]`, `[v6]:port`, or a bare IPv6 address.
pub fn split_host_port(server: &str) -> Result<(String, Option<u16>), HostPortError> {
    let server = server.trim();
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .or_else(|| port_name(p))
            .filter(|&p| p != 0)
            .ok_or_else(|| HostPortError::BadPort {
                port: p.to_string(),
                server: server.to_string(),
            })
    };
    if let Some(rest) = server.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| HostPortError::UnclosedBracket(server.to_string()))?;
        return match after {
            "" => Ok((host.to_string(), None)),
            _ => match after.strip_prefix(':') {
                Some(p) => Ok((host.to_string(), Some(port(p)?))),
                None => Err(HostPortError::BadServer(server.to_string())),
            },
        };
    }
    match server.matches(':').count() {
        0 => Ok((server.to_string(), None)),
        1 => {
            let (host, p) = server.split_once(':').unwrap_or((server, ""));
            Ok((host.to_string(), Some(port(p)?)))
        }
        _ => Ok((server.to_string(), None)),
    }
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
