//! An SMTP reply as a server sends it (RFC 5321 section 4.2): one or more lines of a three-digit
//! code, `-` on every line but the last, and text. Read whole, bounded, from a buffer.

use crate::protocol::line::{take_line, Line};

/// Longest reply line accepted from a server: RFC 5321 allows 512 bytes; this is generous,
/// and with [`MAX_LINES`] bounds what a reply may make the proxy hold (1 MiB).
const MAX_LINE: usize = 4096;
/// Most lines in one reply.
const MAX_LINES: usize = 256;

/// A whole reply: its code and the text of each line (without the code and separator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// The text of the last line, as a refusal or an answer is worded.
    pub fn text(&self) -> &str {
        self.lines.last().map(String::as_str).unwrap_or_default()
    }

    /// The EHLO keywords (every line after the first, which names the server).
    pub fn keywords(&self) -> &[String] {
        self.lines.get(1..).unwrap_or_default()
    }

    /// The EHLO keyword `name` (any case), with its parameters; `None` when not listed.
    pub fn keyword(&self, name: &str) -> Option<Vec<&str>> {
        self.keywords().iter().find_map(|line| {
            let mut words = line.split_ascii_whitespace();
            let first = words.next()?;
            first.eq_ignore_ascii_case(name).then(|| words.collect())
        })
    }
}

/// Finds where a reply may end as its bytes arrive, looking at each byte once, so that a back
/// end trickling a long reply costs no re-parsing of what came before ([`take_reply`] reads the
/// whole reply once it is worth reading).
#[derive(Debug, Default)]
pub struct Scanner {
    /// Bytes already looked at: whole lines that did not end a reply.
    scanned: usize,
    lines: usize,
}

impl Scanner {
    /// Whether `buf` holds a line that ends a reply, or more than a reply may hold: either
    /// way [`take_reply`] has something to say.
    pub fn worth_parsing(&mut self, buf: &[u8]) -> bool {
        while let Some(at) = buf
            .get(self.scanned..)
            .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
        {
            let line = &buf[self.scanned..self.scanned + at];
            self.scanned += at + 1;
            self.lines += 1;
            if line.get(3) != Some(&b'-') || self.lines > MAX_LINES || line.len() > MAX_LINE {
                return true;
            }
        }
        buf.len().saturating_sub(self.scanned) > MAX_LINE
    }

    /// The reply was taken, or the bytes thrown away: look from the start again.
    pub fn reset(&mut self) {
        *self = Scanner::default();
    }
}

/// Why bytes are not an SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("a reply line too long")]
    TooLong,
    #[error("a reply of too many lines")]
    TooManyLines,
    #[error("not an SMTP reply: {0}")]
    NotAReply(String),
    #[error("a reply whose lines disagree on the code: {0}")]
    MixedCodes(String),
}

/// The reply at the start of `buf` and the bytes it takes; `Ok(None)` until it is whole.
pub fn take_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, Malformed> {
    let mut consumed = 0;
    let mut reply: Option<Reply> = None;
    loop {
        let (content, used) = match take_line(&buf[consumed..], MAX_LINE) {
            Line::Partial => return Ok(None),
            Line::TooLong => return Err(Malformed::TooLong),
            Line::Complete { content, consumed } => (content, consumed),
        };
        consumed += used;
        let (code, last, text) = reply_line(content)?;
        let reply = reply.get_or_insert_with(|| Reply {
            code,
            lines: Vec::new(),
        });
        if reply.code != code {
            return Err(Malformed::MixedCodes(
                String::from_utf8_lossy(content).into(),
            ));
        }
        reply.lines.push(text);
        if reply.lines.len() > MAX_LINES {
            return Err(Malformed::TooManyLines);
        }
        if last {
            return Ok(Some((reply.clone(), consumed)));
        }
    }
}

/// `250-text`, `250 text` or `250`: the code, whether it is the last line, the text.
fn reply_line(line: &[u8]) -> Result<(u16, bool, String), Malformed> {
    let bad = || Malformed::NotAReply(String::from_utf8_lossy(line).into_owned());
    let digits = line.get(..3).filter(|d| d.iter().all(u8::is_ascii_digit));
    let code = digits
        .and_then(|d| std::str::from_utf8(d).ok()?.parse::<u16>().ok())
        .filter(|c| (200..600).contains(c))
        .ok_or_else(bad)?;
    let text = String::from_utf8_lossy(line.get(4..).unwrap_or_default()).into_owned();
    match line.get(3) {
        None | Some(b' ') => Ok((code, true, text)),
        Some(b'-') => Ok((code, false, text)),
        Some(_) => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_replies_are_read_whole_and_only_whole() {
        let buf = b"250-mx.example Hello\r\n250-SIZE 10240000\r\n250 PIPELINING\r\nrest";
        let (reply, used) = take_reply(buf).unwrap().unwrap();
        assert_eq!(reply.code, 250);
        assert_eq!(&buf[used..], b"rest");
        assert_eq!(reply.keyword("size"), Some(vec!["10240000"]));
        assert_eq!(reply.keyword("PIPELINING"), Some(vec![]));
        assert_eq!(reply.keyword("STARTTLS"), None);
        assert_eq!(take_reply(b"250-mx\r\n250-SIZE").unwrap(), None);
        assert_eq!(take_reply(b"220").unwrap(), None);
        let (reply, _) = take_reply(b"235\r\n").unwrap().unwrap();
        assert_eq!((reply.code, reply.text()), (235, ""));
    }

    #[test]
    fn what_is_not_a_reply_says_so() {
        assert!(matches!(
            take_reply(b"hello\r\n"),
            Err(Malformed::NotAReply(_))
        ));
        assert!(matches!(
            take_reply(b"099 x\r\n"),
            Err(Malformed::NotAReply(_))
        ));
        assert!(matches!(
            take_reply(b"250x\r\n"),
            Err(Malformed::NotAReply(_))
        ));
        assert!(matches!(
            take_reply(b"250-a\r\n554 b\r\n"),
            Err(Malformed::MixedCodes(_))
        ));
        let many = "250-x\r\n".repeat(300);
        assert_eq!(take_reply(many.as_bytes()), Err(Malformed::TooManyLines));
    }

    #[test]
    fn the_scanner_looks_at_each_line_once_and_says_when_a_reply_may_be_whole() {
        let mut scanner = Scanner::default();
        let mut buf = b"250-mx\r\n250-SIZE".to_vec();
        assert!(!scanner.worth_parsing(&buf));
        buf.extend_from_slice(b" 1\r\n250 ");
        assert!(!scanner.worth_parsing(&buf));
        buf.extend_from_slice(b"DSN\r\n");
        assert!(scanner.worth_parsing(&buf));
        assert!(take_reply(&buf).unwrap().is_some());
        scanner.reset();
        assert!(scanner.worth_parsing(b"garbage\r\n"));
        scanner.reset();
        let many = "250-x\r\n".repeat(MAX_LINES + 1);
        assert!(scanner.worth_parsing(many.as_bytes()));
        scanner.reset();
        assert!(scanner.worth_parsing(&vec![b'2'; MAX_LINE + 1]));
    }
}
