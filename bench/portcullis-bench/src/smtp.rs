//! A minimal SMTP submission client: just what the benchmark sends (EHLO, AUTH PLAIN with an
//! initial response, MAIL, RCPT, DATA, QUIT).
//!
//! Replies are read line by line with a bounded line length (a multi-line reply ends at the
//! line whose code is followed by a space); the message is built once and sent as it is, so
//! that sending costs the client as little as possible. Every surprise is a `BenchError`.

use crate::error::{BenchError, ErrorKind};
use crate::imap::trim;
use crate::target::Io;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Longest reply line accepted: far above any real line (RFC 5321 says 512).
const MAX_LINE: usize = 64 * 1024;

/// The name the client greets with.
const HELO_NAME: &str = "bench.portcullis.test";

pub struct Session {
    io: BufReader<Box<dyn Io>>,
}

/// A reply: its code and its last line (for error messages).
struct Reply {
    code: u16,
    last: String,
}

impl Session {
    pub fn new(stream: Box<dyn Io>) -> Session {
        Session {
            io: BufReader::with_capacity(16 * 1024, stream),
        }
    }

    /// The greeting must be `220`; anything else (a `421`, `554`) is a refusal.
    pub async fn greeting(&mut self) -> Result<(), BenchError> {
        let r = self.read_reply().await?;
        expect(&r, 220, ErrorKind::Greeting)
    }

    pub async fn ehlo(&mut self) -> Result<(), BenchError> {
        let r = self.command(&format!("EHLO {HELO_NAME}")).await?;
        expect(&r, 250, ErrorKind::Command)
    }

    /// `AUTH PLAIN` with its initial response (RFC 4954): `235` or `LoginRejected`.
    pub async fn auth_plain(&mut self, user: &str, password: &str) -> Result<(), BenchError> {
        let mut creds = Vec::with_capacity(user.len() + password.len() + 2);
        creds.push(0);
        creds.extend_from_slice(user.as_bytes());
        creds.push(0);
        creds.extend_from_slice(password.as_bytes());
        let r = self
            .command(&format!("AUTH PLAIN {}", base64(&creds)))
            .await?;
        expect(&r, 235, ErrorKind::LoginRejected)
    }

    /// One transaction: MAIL, RCPT, DATA, `message` (CRLF lines, dot-stuffed, ending in CRLF),
    /// the final dot, and its `250`. Returns the message's size in bytes.
    pub async fn send(&mut self, from: &str, to: &str, message: &[u8]) -> Result<u64, BenchError> {
        let r = self.command(&format!("MAIL FROM:<{from}>")).await?;
        expect(&r, 250, ErrorKind::Command)?;
        let r = self.command(&format!("RCPT TO:<{to}>")).await?;
        expect(&r, 250, ErrorKind::Command)?;
        let r = self.command("DATA").await?;
        expect(&r, 354, ErrorKind::Command)?;
        let w = self.io.get_mut();
        w.write_all(message).await.map_err(BenchError::io)?;
        w.write_all(b".\r\n").await.map_err(BenchError::io)?;
        w.flush().await.map_err(BenchError::io)?;
        let r = self.read_reply().await?;
        expect(&r, 250, ErrorKind::Command)?;
        Ok(message.len() as u64)
    }

    /// `QUIT`, reading its `221`; a server that closes first is fine. Then shuts the write side.
    pub async fn quit(&mut self) -> Result<(), BenchError> {
        match self.command("QUIT").await {
            Ok(r) => expect(&r, 221, ErrorKind::Command),
            Err(e) if e.kind == ErrorKind::Closed => Ok(()),
            Err(e) => Err(e),
        }?;
        let _ = self.io.get_mut().shutdown().await;
        Ok(())
    }

    async fn command(&mut self, line: &str) -> Result<Reply, BenchError> {
        let w = self.io.get_mut();
        let mut buf = Vec::with_capacity(line.len() + 2);
        buf.extend_from_slice(line.as_bytes());
        buf.extend_from_slice(b"\r\n");
        w.write_all(&buf).await.map_err(BenchError::io)?;
        w.flush().await.map_err(BenchError::io)?;
        self.read_reply().await
    }

    /// A whole reply: lines `NNN-...` up to the line `NNN ...`.
    async fn read_reply(&mut self) -> Result<Reply, BenchError> {
        loop {
            let line = self.read_line().await?;
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| BenchError::new(ErrorKind::Protocol, trim(&line)))?;
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply {
                    code,
                    last: trim(&line),
                });
            }
        }
    }

    /// One line up to LF (kept), at most `MAX_LINE` bytes, lossily decoded.
    async fn read_line(&mut self) -> Result<String, BenchError> {
        let mut line = Vec::new();
        loop {
            let buf = self.io.fill_buf().await.map_err(BenchError::io)?;
            if buf.is_empty() {
                return Err(BenchError::new(
                    ErrorKind::Closed,
                    "connection closed by the server",
                ));
            }
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            line.extend_from_slice(&buf[..take]);
            self.io.consume(take);
            if line.len() > MAX_LINE {
                return Err(BenchError::new(ErrorKind::Protocol, "reply line too long"));
            }
            if done {
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
        }
    }
}

fn expect(r: &Reply, code: u16, kind: ErrorKind) -> Result<(), BenchError> {
    if r.code == code {
        Ok(())
    } else {
        Err(BenchError::new(kind, r.last.clone()))
    }
}

/// A message of at least `size` bytes: a few headers, then lines of 76 letters (no line starts
/// with a dot, so nothing needs stuffing), CRLF line ends, ending in CRLF.
pub fn message(size: usize, from: &str, to: &str) -> Vec<u8> {
    let mut m = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: portcullis-bench\r\n\
         Message-ID: <bench@portcullis.test>\r\nDate: Thu, 1 Jan 2026 00:00:00 +0000\r\n\r\n"
    )
    .into_bytes();
    let line = [b'x'; 76];
    while m.len() < size {
        m.extend_from_slice(&line);
        m.extend_from_slice(b"\r\n");
    }
    m
}

/// Base64 (RFC 4648, padded), as AUTH PLAIN wants it.
fn base64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(b"\0alice\0alicepw"), "AGFsaWNlAGFsaWNlcHc=");
    }

    #[test]
    fn the_message_needs_no_dot_stuffing() {
        let m = message(10_000, "a@b", "c@d");
        assert!(m.len() >= 10_000);
        assert!(m.ends_with(b"\r\n"));
        assert!(!m.windows(3).any(|w| w == b"\n.\r" || w == b"\n.."));
    }

    #[tokio::test]
    async fn a_session_logs_in_sends_and_quits() {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let mut s = Session::new(Box::new(client));
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1 << 16];
            server.write_all(b"220 hi\r\n").await.unwrap();
            let replies: [&[u8]; 7] = [
                b"250-x\r\n250 AUTH PLAIN\r\n",
                b"235 ok\r\n",
                b"250 ok\r\n",
                b"250 ok\r\n",
                b"354 go\r\n",
                b"250 queued\r\n",
                b"221 bye\r\n",
            ];
            let mut seen = Vec::new();
            for r in replies {
                // Each command (and the message with its dot) is one write by the client.
                loop {
                    let n = server.read(&mut buf).await.unwrap();
                    seen.extend_from_slice(&buf[..n]);
                    if seen.ends_with(b"\r\n") {
                        break;
                    }
                }
                if r.starts_with(b"250 queued") {
                    while !seen.ends_with(b"\r\n.\r\n") {
                        let n = server.read(&mut buf).await.unwrap();
                        seen.extend_from_slice(&buf[..n]);
                    }
                }
                seen.clear();
                server.write_all(r).await.unwrap();
            }
        });
        s.greeting().await.unwrap();
        s.ehlo().await.unwrap();
        s.auth_plain("alice", "alicepw").await.unwrap();
        let m = message(1000, "a@b", "c@d");
        assert_eq!(s.send("a@b", "c@d", &m).await.unwrap(), m.len() as u64);
        s.quit().await.unwrap();
    }

    #[tokio::test]
    async fn a_535_is_a_rejected_login() {
        let (client, mut server) = tokio::io::duplex(1 << 12);
        let mut s = Session::new(Box::new(client));
        tokio::spawn(async move {
            let mut buf = [0u8; 256];
            let _ = server.read(&mut buf).await;
            server.write_all(b"535 5.7.8 no\r\n").await.unwrap();
        });
        let e = s.auth_plain("alice", "wrong").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::LoginRejected);
    }
}
