//! A minimal IMAP client: just what the benchmark sends (LOGIN, SELECT, FETCH, IDLE, LOGOUT).
//!
//! It reads responses line by line with a bounded line length, skips server literals (`{n}`)
//! by counting their bytes into a reused buffer (a FETCH of a large message must cost the client
//! as little as possible, or the client becomes what is measured), and turns every surprise into
//! a `BenchError` instead of a panic.

use crate::error::{BenchError, ErrorKind};
use crate::target::Io;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Longest response line accepted (literals excluded): far above any real line, and a bound on
/// what a misbehaving server can make the client buffer.
const MAX_LINE: usize = 64 * 1024;

pub struct Session {
    io: BufReader<Box<dyn Io>>,
    /// Scratch space literals are read into and thrown away.
    sink: Vec<u8>,
}

/// The tagged completion of a command and what came before it.
pub struct Response {
    /// The tagged line, e.g. `a OK LOGIN completed`.
    pub tagged: String,
    /// Untagged lines (without literals), kept only when the caller asked for them.
    pub untagged: Vec<String>,
    /// Bytes of all literals in the response.
    pub literal_bytes: u64,
}

impl Session {
    pub fn new(stream: Box<dyn Io>) -> Session {
        Session {
            io: BufReader::with_capacity(64 * 1024, stream),
            sink: vec![0; 64 * 1024],
        }
    }

    /// The greeting must be `* OK` (or `* PREAUTH`); a `* BYE` is a refusal.
    pub async fn greeting(&mut self) -> Result<(), BenchError> {
        let line = self.read_line().await?;
        if line.starts_with("* OK") || line.starts_with("* PREAUTH") {
            Ok(())
        } else {
            Err(BenchError::new(ErrorKind::Greeting, trim(&line)))
        }
    }

    pub async fn login(&mut self, user: &str, password: &str) -> Result<(), BenchError> {
        let cmd = format!("a LOGIN {} {}", quoted(user), quoted(password));
        let r = self.command("a", &cmd, false).await?;
        check_ok(&r, "a", ErrorKind::LoginRejected)
    }

    pub async fn select(&mut self, mailbox: &str) -> Result<(), BenchError> {
        let r = self
            .command("s", &format!("s SELECT {}", quoted(mailbox)), false)
            .await?;
        check_ok(&r, "s", ErrorKind::Command)
    }

    /// The sequence number and size of the largest message in the selected mailbox.
    pub async fn largest_message(&mut self) -> Result<(u32, u64), BenchError> {
        let r = self.command("z", "z FETCH 1:* RFC822.SIZE", true).await?;
        check_ok(&r, "z", ErrorKind::Command)?;
        let mut best: Option<(u32, u64)> = None;
        for line in &r.untagged {
            // `* 2 FETCH (RFC822.SIZE 1048610)`
            let mut words = line.split_whitespace();
            let seq = words.nth(1).and_then(|w| w.parse::<u32>().ok());
            let size = line
                .split("RFC822.SIZE ")
                .nth(1)
                .and_then(|s| s.trim_end_matches([')', '\r', '\n']).split(' ').next())
                .and_then(|s| s.trim_end_matches(')').parse::<u64>().ok());
            if let (Some(seq), Some(size)) = (seq, size) {
                if best.is_none_or(|(_, b)| size > b) {
                    best = Some((seq, size));
                }
            }
        }
        best.ok_or_else(|| BenchError::new(ErrorKind::Command, "the mailbox has no message"))
    }

    /// `FETCH seq BODY.PEEK[]`: the literal bytes received. PEEK, so the message's flags never
    /// change and every repetition gets the same response.
    pub async fn fetch_body(&mut self, tag: &str, seq: u32) -> Result<u64, BenchError> {
        let r = self
            .command(tag, &format!("{tag} FETCH {seq} BODY.PEEK[]"), false)
            .await?;
        check_ok(&r, tag, ErrorKind::Command)?;
        if r.literal_bytes == 0 {
            return Err(BenchError::new(ErrorKind::Protocol, "FETCH without a body"));
        }
        Ok(r.literal_bytes)
    }

    /// `IDLE` until the server's continuation (`+ idling`).
    pub async fn idle(&mut self) -> Result<(), BenchError> {
        self.send("i IDLE").await?;
        loop {
            let line = self.read_line().await?;
            if line.starts_with('+') {
                return Ok(());
            }
            if line.starts_with("i ") {
                return Err(BenchError::new(ErrorKind::Command, trim(&line)));
            }
        }
    }

    /// `LOGOUT`, reading to its tagged OK. A server that closes right after its `* BYE` is fine.
    pub async fn logout(&mut self) -> Result<(), BenchError> {
        match self.command("b", "b LOGOUT", false).await {
            Ok(r) => check_ok(&r, "b", ErrorKind::Command),
            Err(e) if e.kind == ErrorKind::Closed => Ok(()),
            Err(e) => Err(e),
        }?;
        let _ = self.io.get_mut().shutdown().await;
        Ok(())
    }

    /// Closes without LOGOUT: shuts the write side down (a TLS close_notify first, so the server
    /// sees an orderly end and keeps the session resumable).
    pub async fn close(&mut self) -> Result<(), BenchError> {
        self.io.get_mut().shutdown().await.map_err(BenchError::io)
    }

    /// Sends one command line and reads up to its tagged response.
    pub async fn command(
        &mut self,
        tag: &str,
        line: &str,
        keep_untagged: bool,
    ) -> Result<Response, BenchError> {
        self.send(line).await?;
        let mut untagged = Vec::new();
        let mut literal_bytes = 0u64;
        let prefix = format!("{tag} ");
        loop {
            let line = self.read_line().await?;
            let mut line_text = line;
            // A line may announce literals, each followed by the rest of the line.
            while let Some(n) = literal_len(&line_text) {
                self.skip(n).await?;
                literal_bytes += n;
                let rest = self.read_line().await?;
                if keep_untagged {
                    line_text.truncate(line_text.rfind('{').unwrap_or(line_text.len()));
                    line_text.push_str(&rest);
                } else {
                    line_text = rest;
                }
            }
            if line_text.starts_with(&prefix) {
                return Ok(Response {
                    tagged: trim(&line_text),
                    untagged,
                    literal_bytes,
                });
            }
            if keep_untagged && untagged.len() < 100_000 {
                untagged.push(trim(&line_text));
            }
        }
    }

    async fn send(&mut self, line: &str) -> Result<(), BenchError> {
        let w = self.io.get_mut();
        let mut buf = Vec::with_capacity(line.len() + 2);
        buf.extend_from_slice(line.as_bytes());
        buf.extend_from_slice(b"\r\n");
        w.write_all(&buf).await.map_err(BenchError::io)?;
        w.flush().await.map_err(BenchError::io)
    }

    /// One line up to LF (kept), at most `MAX_LINE` bytes, lossily decoded: the benchmark only
    /// looks at ASCII parts of responses.
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
                return Err(BenchError::new(
                    ErrorKind::Protocol,
                    "response line too long",
                ));
            }
            if done {
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
        }
    }

    /// Reads and discards `n` bytes of a literal.
    async fn skip(&mut self, mut n: u64) -> Result<(), BenchError> {
        while n > 0 {
            let want = n.min(self.sink.len() as u64) as usize;
            let got = self
                .io
                .read(&mut self.sink[..want])
                .await
                .map_err(BenchError::io)?;
            if got == 0 {
                return Err(BenchError::new(
                    ErrorKind::Closed,
                    "closed inside a literal",
                ));
            }
            n -= got as u64;
        }
        Ok(())
    }
}

fn check_ok(r: &Response, tag: &str, kind: ErrorKind) -> Result<(), BenchError> {
    if r.tagged.starts_with(&format!("{tag} OK")) {
        Ok(())
    } else {
        Err(BenchError::new(kind, r.tagged.clone()))
    }
}

/// The size of a literal announced at the end of a line: `... {1234}\r\n`.
fn literal_len(line: &str) -> Option<u64> {
    let body = line.trim_end_matches(['\r', '\n']);
    let inner = body.strip_suffix('}')?;
    let open = inner.rfind('{')?;
    inner[open + 1..].trim_end_matches('+').parse().ok()
}

/// An IMAP quoted string (user names and passwords may contain spaces or quotes).
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A server's line for a message: without CRLF, and cut short (IMAP's and SMTP's).
pub(crate) fn trim(line: &str) -> String {
    let t = line.trim_end_matches(['\r', '\n']);
    t.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_sizes() {
        assert_eq!(
            literal_len("* 1 FETCH (BODY[] {1048610}\r\n"),
            Some(1048610)
        );
        assert_eq!(literal_len("* 1 FETCH (BODY[] {12+}\r\n"), Some(12));
        assert_eq!(literal_len("* OK ready\r\n"), None);
        assert_eq!(literal_len("* 1 FETCH {x}\r\n"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(quoted(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[tokio::test]
    async fn fetch_counts_literal_bytes_and_finds_the_tag() {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let mut s = Session::new(Box::new(client));
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let _ = server.read(&mut buf).await;
            let body = vec![b'x'; 100_000];
            server
                .write_all(b"* 1 FETCH (BODY[] {100000}\r\n")
                .await
                .unwrap();
            server.write_all(&body).await.unwrap();
            server.write_all(b")\r\nf OK done\r\n").await.unwrap();
        });
        assert_eq!(s.fetch_body("f", 1).await.unwrap(), 100_000);
    }

    #[tokio::test]
    async fn a_closed_server_is_an_error_not_a_panic() {
        let (client, server) = tokio::io::duplex(64);
        drop(server);
        let mut s = Session::new(Box::new(client));
        let e = s.greeting().await.unwrap_err();
        assert!(matches!(e.kind, ErrorKind::Closed | ErrorKind::Io));
    }
}
