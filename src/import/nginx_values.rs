//! The values of nginx's directives: times (`30s`, `1h30m`), sizes (`64k`), flags (`on`),
//! `listen`'s address and parameters, `auth_http`'s address.

use std::fmt;

/// Seconds in nginx's time units; `ms` is rounded up to whole seconds.
pub fn seconds(text: &str) -> Option<u64> {
    let mut millis: u64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => 1,
            "" | "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "M" => 30 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        millis = millis.checked_add(number.checked_mul(unit)?)?;
    }
    Some(millis.div_ceil(1000))
}

/// Bytes in nginx's size units (`k`, `m`, `g`, either case).
pub fn bytes(text: &str) -> Option<u64> {
    let (number, unit) = match text.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&text[..i], c.to_ascii_lowercase()),
        _ => (text, ' '),
    };
    let factor = match unit {
        ' ' => 1,
        'k' => 1 << 10,
        'm' => 1 << 20,
        'g' => 1 << 30,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(factor)
}

/// `on` or `off`.
pub fn flag(text: &str) -> Option<bool> {
    match text {
        "on" => Some(true),
        "off" => Some(false),
        _ => None,
    }
}

/// `auth_http`'s address as the `http` map's `url`: nginx takes `host[:port][/uri]` with or
/// without `http://`, and `unix:/path[:/uri]`.
pub fn auth_url(text: &str) -> Option<String> {
    if text.starts_with("unix:") {
        return Some(text.to_string());
    }
    let rest = text.strip_prefix("http://").unwrap_or(text);
    if rest.is_empty() || rest.contains("://") {
        return None;
    }
    Some(format!("http://{rest}"))
}

/// One `listen` directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// As the native `bind` takes it: `0.0.0.0:993`, `[::]:993`, `host:993`.
    pub address: String,
    pub ssl: bool,
    pub proxy_protocol: bool,
    /// `so_keepalive=on` (or with timings).
    pub keepalive: bool,
    /// `ipv6only=off` on an IPv6 wildcard: nginx takes IPv4 there too.
    pub dual_stack: bool,
    /// Parameters that tune the socket and are not carried (`backlog=`, `rcvbuf=`, ...).
    pub tuning: Vec<String>,
}

impl Listen {
    /// The port.
    pub fn port(&self) -> Option<u16> {
        self.address.rsplit_once(':')?.1.parse().ok()
    }
}

/// Why a `listen` cannot be carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenProblem {
    Unix,
    NoPort(String),
    Parameter(String),
}

impl fmt::Display for ListenProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenProblem::Unix => write!(f, "a unix socket: Portcullis listens on TCP only"),
            ListenProblem::NoPort(a) => write!(f, "{a:?} has no port"),
            ListenProblem::Parameter(p) => write!(f, "the parameter {p:?} is not known here"),
        }
    }
}

/// `listen ADDRESS [PARAMETERS]`.
pub fn listen(args: &[String]) -> Result<Listen, ListenProblem> {
    let (address, parameters) = args
        .split_first()
        .ok_or(ListenProblem::Parameter(String::new()))?;
    let mut listen = Listen {
        address: bind_address(address)?,
        ssl: false,
        proxy_protocol: false,
        keepalive: false,
        dual_stack: false,
        tuning: Vec::new(),
    };
    for p in parameters {
        let (name, value) = p.split_once('=').unwrap_or((p, ""));
        match name {
            "ssl" => listen.ssl = true,
            "proxy_protocol" => listen.proxy_protocol = true,
            "so_keepalive" => listen.keepalive = value != "off",
            "ipv6only" => listen.dual_stack = value == "off",
            "bind" | "backlog" | "rcvbuf" | "sndbuf" | "reuseport" | "fastopen" | "deferred"
            | "setfib" | "accept_filter" => listen.tuning.push(p.clone()),
            _ => return Err(ListenProblem::Parameter(p.clone())),
        }
    }
    Ok(listen)
}

/// nginx's `993`, `*:993`, `1.2.3.4:993`, `[::]:993`, `name:993` as a `bind` entry.
fn bind_address(text: &str) -> Result<String, ListenProblem> {
    if text.starts_with("unix:") {
        return Err(ListenProblem::Unix);
    }
    if text.parse::<u16>().is_ok() {
        return Ok(format!("0.0.0.0:{text}"));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(ListenProblem::NoPort(text.to_string()));
    };
    if port.parse::<u16>().is_err() || (host.starts_with('[') && !host.ends_with(']')) {
        return Err(ListenProblem::NoPort(text.to_string()));
    }
    let host = if host == "*" { "0.0.0.0" } else { host };
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_sizes_read_as_nginx_reads_them() {
        assert_eq!(seconds("60"), Some(60));
        assert_eq!(seconds("60s"), Some(60));
        assert_eq!(seconds("1h30m"), Some(5400));
        assert_eq!(seconds("24h"), Some(86400));
        assert_eq!(seconds("500ms"), Some(1));
        assert_eq!(seconds("1x"), None);
        assert_eq!(seconds(""), None);
        assert_eq!(seconds("99999999999999999999"), None);
        assert_eq!(bytes("64k"), Some(65536));
        assert_eq!(bytes("8K"), Some(8192));
        assert_eq!(bytes("1m"), Some(1 << 20));
        assert_eq!(bytes("100"), Some(100));
        assert_eq!(bytes("1q"), None);
        assert_eq!(flag("on"), Some(true));
        assert_eq!(flag("yes"), None);
    }

    #[test]
    fn auth_http_addresses_become_urls() {
        assert_eq!(
            auth_url("127.0.0.1:8000/auth").unwrap(),
            "http://127.0.0.1:8000/auth"
        );
        assert_eq!(
            auth_url("http://admin/internal/auth/email").unwrap(),
            "http://admin/internal/auth/email"
        );
        assert_eq!(
            auth_url("unix:/run/auth.sock:/auth").unwrap(),
            "unix:/run/auth.sock:/auth"
        );
        assert_eq!(auth_url("https://a/b"), None);
    }

    #[test]
    fn listen_takes_nginxs_addresses_and_parameters() {
        let l = listen(&["993".into(), "ssl".into(), "proxy_protocol".into()]).unwrap();
        assert_eq!(l.address, "0.0.0.0:993");
        assert!(l.ssl && l.proxy_protocol && !l.keepalive);
        assert_eq!(l.port(), Some(993));
        let l = listen(&[
            "[::]:143".into(),
            "ipv6only=off".into(),
            "backlog=10".into(),
        ])
        .unwrap();
        assert_eq!(l.address, "[::]:143");
        assert!(l.dual_stack);
        assert_eq!(l.tuning, ["backlog=10"]);
        assert_eq!(listen(&["*:110".into()]).unwrap().address, "0.0.0.0:110");
        assert_eq!(
            listen(&["10.0.0.1:25".into()]).unwrap().address,
            "10.0.0.1:25"
        );
        let keep = listen(&["25".into(), "so_keepalive=30m::10".into()]).unwrap();
        assert!(keep.keepalive);
        assert_eq!(listen(&["unix:/x".into()]), Err(ListenProblem::Unix));
        assert!(matches!(
            listen(&["10.0.0.1".into()]),
            Err(ListenProblem::NoPort(_))
        ));
        assert!(matches!(
            listen(&["25".into(), "http2".into()]),
            Err(ListenProblem::Parameter(_))
        ));
    }
}
