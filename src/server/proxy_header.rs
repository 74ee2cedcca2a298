//! The PROXY protocol header (HAProxy's spec, v1 and v2) that a load balancer in front of
//! Portcullis sends before anything else, so that the client's address is known here.
//!
//! Reading it must not take a byte of what follows (a TLS ClientHello may be in the same
//! segment), so [`next_read`] says exactly how many bytes to read next, from what has been read
//! so far; [`parse`] then reads the whole header with the `ppp` crate, checks the CRC32C TLV
//! when there is one, and keeps the AUTHORITY, UNIQUE_ID and SSL TLVs. Both are sans-I/O; the
//! session's only I/O is [`read`].

use std::net::SocketAddr;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::metrics::RefusedReason;

/// A v1 header is at most 107 bytes (spec 2.1).
const MAX_V1: usize = 107;
/// A v2 header's length as accepted here; the spec allows 64 KiB, a balancer sends far less.
pub const MAX_V2: usize = 1024;

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8; 6] = b"PROXY ";

/// TLV types (spec 2.2.x).
const TLV_AUTHORITY: u8 = 0x02;
const TLV_CRC32C: u8 = 0x03;
const TLV_UNIQUE_ID: u8 = 0x05;
const TLV_SSL: u8 = 0x20;

/// What the header says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proxied {
    /// The client, for a proxied TCP connection; `None` for the balancer's own health checks
    /// (LOCAL, UNKNOWN), which keep the connection's own addresses.
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
    /// The host name the client asked for (SNI), from the AUTHORITY TLV.
    pub authority: Option<String>,
    /// The balancer's id of the connection, from the UNIQUE_ID TLV.
    pub unique_id: Option<Vec<u8>>,
    /// The client spoke TLS to the balancer (SSL TLV).
    pub ssl: bool,
}

/// What is wrong with a header, as the warning about it says.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("not a PROXY protocol header")]
    NotProxyProtocol,
    #[error("PROXY v2 header of {0} bytes (at most {MAX_V2})")]
    V2TooLong(usize),
    #[error("empty PROXY v1 header")]
    V1Empty,
    #[error("PROXY v1 header longer than 107 bytes")]
    V1TooLong,
    #[error("PROXY v1 header holds a byte that is not printable ASCII")]
    V1NotPrintable,
    #[error("PROXY v1 header is not ASCII")]
    V1NotAscii,
    #[error("PROXY v1 header is not text")]
    V1NotText,
    #[error("PROXY v1: {0}")]
    V1(#[source] ppp::v1::ParseError),
    #[error("PROXY v2: {0}")]
    V2(#[source] ppp::v2::ParseError),
    #[error("PROXY v2 TLV: {0}")]
    V2Tlv(#[source] ppp::v2::ParseError),
    #[error("PROXY v2 CRC32C TLV is not 4 bytes")]
    CrcTlvLength,
    #[error("PROXY v2 CRC32C")]
    CrcUnreadable,
    #[error("PROXY v2 CRC32C mismatch")]
    CrcMismatch,
    #[error("PROXY header: {0}")]
    Read(#[source] std::io::Error),
}

/// Why a session closed its connection instead of taking the client's address from a header.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The peer may not speak for a client.
    #[error("not in proxy_trusted")]
    Untrusted,
    #[error("no header within the login timeout")]
    Timeout,
    #[error(transparent)]
    Invalid(#[from] HeaderError),
}

impl Refused {
    /// The reason among the refused connections in the metrics.
    pub fn reason(&self) -> RefusedReason {
        match self {
            Refused::Untrusted => RefusedReason::ProxyUntrusted,
            Refused::Timeout | Refused::Invalid(_) => RefusedReason::ProxyInvalid,
        }
    }
}

/// How many bytes to read next, given those read so far; `Ok(0)` when the header is whole.
pub fn next_read(buf: &[u8]) -> Result<usize, HeaderError> {
    if buf.len() < V1_PREFIX.len() {
        return Ok(V1_PREFIX.len() - buf.len());
    }
    if buf.starts_with(V1_PREFIX) {
        return next_read_v1(buf);
    }
    if !V2_SIGNATURE.starts_with(&buf[..buf.len().min(12)]) {
        return Err(HeaderError::NotProxyProtocol);
    }
    if buf.len() < 16 {
        return Ok(16 - buf.len());
    }
    let length = 16 + u16::from_be_bytes([buf[14], buf[15]]) as usize;
    if length > MAX_V2 {
        return Err(HeaderError::V2TooLong(length));
    }
    Ok(length - buf.len())
}

/// A v1 line is read byte by byte up to its CRLF, never past it, and holds printable ASCII
/// only: anything else ends it at once (which also keeps `ppp`'s text parser on ASCII, where
/// it cannot slice inside a character).
fn next_read_v1(buf: &[u8]) -> Result<usize, HeaderError> {
    let (&last, before) = buf.split_last().ok_or(HeaderError::V1Empty)?;
    match last {
        b'\n' if before.last() == Some(&b'\r') => Ok(0),
        // The CRLF must still fit.
        b'\r' if buf.len() < MAX_V1 => Ok(1),
        0x20..=0x7e if buf.len() + 2 <= MAX_V1 => Ok(1),
        0x20..=0x7e | b'\r' => Err(HeaderError::V1TooLong),
        _ => Err(HeaderError::V1NotPrintable),
    }
}

/// Read a whole header (as [`next_read`] framed it).
pub fn parse(header: &[u8]) -> Result<Proxied, HeaderError> {
    if header.starts_with(V1_PREFIX) {
        return parse_v1(header);
    }
    let parsed = ppp::v2::Header::try_from(header).map_err(HeaderError::V2)?;
    let mut proxied = Proxied::default();
    // Addresses count for TCP over IPv4 or IPv6 only (family/protocol byte 0x11 or 0x21);
    // UDP, UNIX sockets and UNSPEC keep the connection's own, as HAProxy's receiver does.
    let stream = matches!(header.get(13), Some(0x11 | 0x21));
    if parsed.command == ppp::v2::Command::Proxy && stream {
        (proxied.source, proxied.destination) = match parsed.addresses {
            ppp::v2::Addresses::IPv4(a) => (
                Some(SocketAddr::from((a.source_address, a.source_port))),
                Some(SocketAddr::from((
                    a.destination_address,
                    a.destination_port,
                ))),
            ),
            ppp::v2::Addresses::IPv6(a) => (
                Some(SocketAddr::from((a.source_address, a.source_port))),
                Some(SocketAddr::from((
                    a.destination_address,
                    a.destination_port,
                ))),
            ),
            _ => (None, None),
        };
    }
    for tlv in parsed.tlvs() {
        let tlv = tlv.map_err(HeaderError::V2Tlv)?;
        match tlv.kind {
            TLV_AUTHORITY => proxied.authority = Some(String::from_utf8_lossy(&tlv.value).into()),
            TLV_UNIQUE_ID => proxied.unique_id = Some(tlv.value.to_vec()),
            TLV_SSL => proxied.ssl = tlv.value.first().is_some_and(|client| client & 0x01 != 0),
            TLV_CRC32C => check_crc(header)?,
            _ => {}
        }
    }
    Ok(proxied)
}

fn parse_v1(header: &[u8]) -> Result<Proxied, HeaderError> {
    // `ppp` slices the text by byte offsets: on anything but ASCII that can panic.
    if !header.is_ascii() {
        return Err(HeaderError::V1NotAscii);
    }
    let text = std::str::from_utf8(header).map_err(|_| HeaderError::V1NotText)?;
    let parsed = ppp::v1::Header::try_from(text).map_err(HeaderError::V1)?;
    let (source, destination) = match parsed.addresses {
        ppp::v1::Addresses::Tcp4(a) => (
            Some(SocketAddr::from((a.source_address, a.source_port))),
            Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        ),
        ppp::v1::Addresses::Tcp6(a) => (
            Some(SocketAddr::from((a.source_address, a.source_port))),
            Some(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            ))),
        ),
        ppp::v1::Addresses::Unknown => (None, None),
    };
    Ok(Proxied {
        source,
        destination,
        ..Proxied::default()
    })
}

/// Where the value of the CRC32C TLV starts, found by walking the TLVs from the end of the
/// address block (a value elsewhere that looks like one must not be taken for it).
fn crc_offset(header: &[u8]) -> Option<usize> {
    let addresses = match header.get(13)? >> 4 {
        0x1 => 12,
        0x2 => 36,
        0x3 => 216,
        _ => 0,
    };
    let mut at = 16 + addresses;
    while let Some(&[kind, high, low]) = header.get(at..at + 3) {
        let length = u16::from_be_bytes([high, low]) as usize;
        if kind == TLV_CRC32C {
            return (length == 4 && header.len() >= at + 7).then_some(at + 3);
        }
        at += 3 + length;
    }
    None
}

/// The CRC32C TLV holds the checksum of the whole header with its own value zeroed.
fn check_crc(header: &[u8]) -> Result<(), HeaderError> {
    let at = crc_offset(header).ok_or(HeaderError::CrcTlvLength)?;
    let expected: [u8; 4] = header[at..at + 4]
        .try_into()
        .map_err(|_| HeaderError::CrcUnreadable)?;
    let mut zeroed = header.to_vec();
    zeroed[at..at + 4].fill(0);
    if crc32c::crc32c(&zeroed).to_be_bytes() == expected {
        Ok(())
    } else {
        Err(HeaderError::CrcMismatch)
    }
}

/// Read the header from `tcp`, taking no byte beyond it.
pub async fn read(tcp: &mut TcpStream) -> Result<Proxied, HeaderError> {
    let mut buf = Vec::with_capacity(64);
    loop {
        let n = next_read(&buf)?;
        if n == 0 {
            return parse(&buf);
        }
        let start = buf.len();
        buf.resize(start + n, 0);
        tcp.read_exact(&mut buf[start..])
            .await
            .map_err(HeaderError::Read)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `bytes` through the framer as a reader would, returning the header it delimits.
    fn frame(bytes: &[u8]) -> Result<Vec<u8>, String> {
        let mut buf = Vec::new();
        loop {
            let n = next_read(&buf).map_err(|e| e.to_string())?;
            if n == 0 {
                return Ok(buf);
            }
            let from = buf.len();
            let Some(more) = bytes.get(from..from + n) else {
                return Err("ran out".into());
            };
            buf.extend_from_slice(more);
        }
    }

    fn v2(family_protocol: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x21); // version 2, PROXY
        h.push(family_protocol);
        h.extend_from_slice(&((addresses.len() + tlvs.len()) as u16).to_be_bytes());
        h.extend_from_slice(addresses);
        h.extend_from_slice(tlvs);
        h
    }

    fn ipv4_addresses() -> Vec<u8> {
        let mut a = vec![192, 0, 2, 7, 198, 51, 100, 1];
        a.extend_from_slice(&51000u16.to_be_bytes());
        a.extend_from_slice(&993u16.to_be_bytes());
        a
    }

    #[test]
    fn v1_is_framed_to_its_line_and_read() {
        let mut wire = b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 143\r\n".to_vec();
        wire.extend_from_slice(b"a LOGIN x y\r\n");
        let header = frame(&wire).unwrap();
        assert!(header.ends_with(b"143\r\n"));
        let p = parse(&header).unwrap();
        assert_eq!(p.source, Some("192.0.2.7:51000".parse().unwrap()));
        assert_eq!(p.destination, Some("198.51.100.1:143".parse().unwrap()));
        let p =
            parse(&frame(b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 993\r\n").unwrap()).unwrap();
        assert_eq!(p.source, Some("[2001:db8::7]:51000".parse().unwrap()));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap().source, None);
    }

    #[test]
    fn v2_with_tlvs_and_a_good_crc() {
        // AUTHORITY "mail.example.org", UNIQUE_ID "abc", SSL (client used TLS), CRC32C.
        let mut tlvs = vec![TLV_AUTHORITY, 0, 16];
        tlvs.extend_from_slice(b"mail.example.org");
        tlvs.extend_from_slice(&[TLV_UNIQUE_ID, 0, 3, b'a', b'b', b'c']);
        tlvs.extend_from_slice(&[TLV_SSL, 0, 5, 0x01, 0, 0, 0, 0]);
        tlvs.extend_from_slice(&[TLV_CRC32C, 0, 4, 0, 0, 0, 0]);
        let mut header = v2(0x11, &ipv4_addresses(), &tlvs);
        let crc = crc32c::crc32c(&header).to_be_bytes();
        let at = header.len() - 4;
        header[at..].copy_from_slice(&crc);
        let mut wire = header.clone();
        wire.extend_from_slice(&[0x16, 0x03, 0x01]); // a TLS ClientHello follows
        assert_eq!(frame(&wire).unwrap(), header);
        let p = parse(&header).unwrap();
        assert_eq!(p.source, Some("192.0.2.7:51000".parse().unwrap()));
        assert_eq!(p.authority.as_deref(), Some("mail.example.org"));
        assert_eq!(p.unique_id.as_deref(), Some(&b"abc"[..]));
        assert!(p.ssl);
        // One bit off: refused.
        header[20] ^= 1;
        assert!(parse(&header).unwrap_err().to_string().contains("CRC32C"));
    }

    #[test]
    fn local_commands_keep_the_connections_addresses() {
        let mut header = v2(0x00, &[], &[]);
        header[12] = 0x20; // version 2, LOCAL
        assert_eq!(parse(&header).unwrap().source, None);
    }

    #[test]
    fn garbage_oversize_and_truncation_are_refused() {
        assert!(frame(b"GET / HTTP/1.1\r\n").is_err());
        assert!(frame(&[b'P'; 200]).is_err());
        let long = [b"PROXY ".as_slice(), &[b'1'; 200]].concat();
        assert!(frame(&long).unwrap_err().contains("107"));
        let mut big = v2(0x11, &ipv4_addresses(), &[]);
        big[14..16].copy_from_slice(&5000u16.to_be_bytes());
        assert!(frame(&big).unwrap_err().contains("at most"));
        assert!(parse(b"PROXY TCP4 nonsense\r\n").is_err());
        assert!(parse(&v2(0x11, &[1, 2, 3], &[])).is_err());
    }

    #[test]
    fn v1_holds_printable_ascii_up_to_the_first_crlf() {
        // `ppp` would slice this inside the "é" and panic: the framer ends it first.
        assert!(frame(b"PROXY \r\xc3\xa9\r\n")
            .unwrap_err()
            .contains("printable"));
        assert!(frame(b"PROXY TCP4 \xc3\xa9 1.2.3.4 1 2\r\n").is_err());
        assert!(frame(b"PROXY TCP4\n").is_err());
        assert!(frame(b"PROXY TCP4 1.2.3.4\x00").is_err());
        // 107 bytes with the CRLF is the most.
        let line = |n: usize| [b"PROXY ".as_slice(), &vec![b'x'; n - 8], b"\r\n"].concat();
        assert_eq!(frame(&line(107)).unwrap().len(), 107);
        assert!(frame(&line(108)).is_err());
    }

    #[test]
    fn the_crc_tlv_is_found_where_it_is_not_where_its_bytes_appear() {
        // A UNIQUE_ID whose value imitates a CRC TLV, before the real one.
        let mut tlvs = vec![TLV_UNIQUE_ID, 0, 7, TLV_CRC32C, 0, 4, 9, 9, 9, 9];
        tlvs.extend_from_slice(&[TLV_CRC32C, 0, 4, 0, 0, 0, 0]);
        let mut header = v2(0x11, &ipv4_addresses(), &tlvs);
        let crc = crc32c::crc32c(&header).to_be_bytes();
        let at = header.len() - 4;
        header[at..].copy_from_slice(&crc);
        assert!(parse(&header).is_ok());
    }

    #[test]
    fn only_tcp_carries_a_client() {
        for (family_protocol, client) in [(0x11, true), (0x12, false), (0x10, false)] {
            let header = v2(family_protocol, &ipv4_addresses(), &[]);
            let p = parse(&header).unwrap();
            assert_eq!(p.source.is_some(), client, "{family_protocol:#x}");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..5000 {
            let len = (seed % 64) as usize;
            let mut bytes: Vec<u8> = V2_SIGNATURE.to_vec();
            bytes.extend((0..len).map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            }));
            if let Ok(header) = frame(&bytes) {
                let _ = parse(&header);
            }
        }
    }
}
