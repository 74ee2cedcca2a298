//! The admin endpoint from a test: one HTTP request at a time, and the metrics' samples.

use std::io::{Read, Write};
use std::net::TcpStream;

use super::READ_TIMEOUT;

/// One HTTP/1.1 request to the admin endpoint on `port`; the status and the body.
pub fn http(port: u16, method: &str, path: &str, headers: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("admin endpoint");
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\n{host}{headers}Content-Length: 0\r\n\
         Connection: close\r\n\r\n",
        host = if headers.contains("Host:") {
            String::new()
        } else {
            format!("Host: 127.0.0.1:{port}\r\n")
        }
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A GET that must succeed (200); its body.
pub fn get(port: u16, path: &str) -> String {
    let (status, body) = http(port, "GET", path, "");
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// The value of the sample `name{labels}` in a metrics text; 0 when absent.
pub fn sample(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}
