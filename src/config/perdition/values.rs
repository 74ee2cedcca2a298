//! Perdition's values: numbers, seconds, ports (by number or service name) and servers.

use super::error::PerditionError;
use crate::value::host_port::parts;

pub fn number<T: std::str::FromStr>(
    option: &'static str,
    value: &str,
) -> Result<T, PerditionError> {
    value.parse().map_err(|_| PerditionError::NotANumber {
        option,
        value: value.to_string(),
    })
}

/// Perdition's 0 means "no timeout"; ten years is as good as forever.
pub fn seconds(option: &'static str, value: &str) -> Result<u64, PerditionError> {
    let s: u64 = number(option, value)?;
    Ok(if s == 0 { super::super::MAX_SECONDS } else { s })
}

/// A port number, or a service name of `/etc/services` (`imaps`, `pop3`) as Perdition takes.
pub fn port(option: &'static str, value: &str) -> Result<u16, PerditionError> {
    if let Ok(n) = value.parse() {
        return Ok(n);
    }
    service_port(value).ok_or_else(|| PerditionError::NotAPort {
        option,
        value: value.to_string(),
    })
}

fn service_port(service: &str) -> Option<u16> {
    let services = std::fs::read_to_string("/etc/services").ok()?;
    services.lines().find_map(|line| {
        let mut words = line.split('#').next()?.split_whitespace();
        let name = words.next()?;
        let (number, transport) = words.next()?.split_once('/')?;
        let named = name == service || words.any(|alias| alias == service);
        (transport == "tcp" && named).then(|| number.parse().ok())?
    })
}

/// `host:port`, with an IPv6 address in brackets.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`, as Perdition reads its servers and bind
/// addresses: the forms as [`crate::value::host_port::parts`] reads them for every reader, the
/// port as Perdition does (any port in `/etc/services`, and port 0), and what follows `[v6]`
/// when it is not `:port` passed over.
pub fn split_host_port(s: &str) -> Result<(String, Option<u16>), PerditionError> {
    let s = s.trim();
    let parts = parts(s).map_err(|_| PerditionError::BadServer(s.to_string()))?;
    let port = match parts.port {
        Some(p) => Some(port("server port", p)?),
        None => None,
    };
    Ok((parts.host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_with_ports_and_ipv6() {
        assert_eq!(
            split_host_port("mail:1143").unwrap(),
            ("mail".into(), Some(1143))
        );
        assert_eq!(
            split_host_port("[::1]:143").unwrap(),
            ("::1".into(), Some(143))
        );
        assert_eq!(
            split_host_port("2001:db8::1").unwrap(),
            ("2001:db8::1".into(), None)
        );
    }
}
