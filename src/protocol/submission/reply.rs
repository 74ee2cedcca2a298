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
}
