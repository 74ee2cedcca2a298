//! The lexical layer of ManageSieve (RFC 5804 section 4), shared by both sides.
//!
//! A ManageSieve line is a run of atoms (command names, `OK`/`NO`/`BYE`), strings and, in
//! responses, parenthesised response codes. A string is either quoted (`"..."`, where only `\"`
//! and `\\` are escapes and CR, LF and NUL are not allowed) or a literal: `{n+}` (client to
//! server) or `{n}` (server to client) at the very end of a line, followed by exactly `n` raw
//! octets, after which the line goes on. Unlike IMAP there is no continuation request: a client
//! sends the literal bytes straight away, whichever form of marker it used, so both forms are read
//! the same way here and a literal that is too large can never be refused and skipped — the bytes
//! are already on their way.
//!
//! Framing reuses [`take_line`]: every line segment (the text before a literal marker, or the
//! text after a literal) is bounded on its own, every literal is bounded, and a command may hold
//! at most [`MAX_LITERALS`] literals, so that a whole command is bounded too. The segments are
//! read into tokens by the lexer IMAP uses too ([`crate::protocol::token`]).

use crate::protocol::line::{take_line, Line};
use crate::protocol::token::{Malformed, Token, Tokens};

/// Literals allowed in one command or response line. No pre-login command needs more than two.
pub const MAX_LITERALS: usize = crate::protocol::limits::MAX_LITERALS_PER_COMMAND;

/// Quoted strings longer than this are written as literals (RFC 5804 limits quoted strings to
/// 1024 octets).
const MAX_QUOTED: usize = 1024;

/// Bounds applied while framing a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Longest line segment, in bytes, without its line end.
    pub max_line: usize,
    /// Largest literal, in bytes.
    pub max_literal: usize,
}

/// Why a line could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyntaxError {
    /// A line segment is too long, or the line holds too many literals. Where the next line
    /// starts cannot be known, so the connection must end.
    LineTooLong,
    /// A literal is larger than allowed. Its bytes are already on their way (there is no
    /// continuation to withhold), so the connection must end.
    LiteralTooBig,
    /// Unbalanced quotes or parentheses, a bad escape, a stray control character, a malformed
    /// literal marker... The line has been read to its end and the peer may go on.
    Malformed,
}

/// The result of reading the front of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole line and how many bytes of the buffer it used (literals included).
    Line { tokens: Vec<Token>, consumed: usize },
    /// More bytes are needed.
    Incomplete,
    /// A bad line; `consumed` covers it (for the fatal errors, the whole buffer).
    Error { error: SyntaxError, consumed: usize },
}

/// Read the first line of `buf`, with its literals.
pub fn parse_line(buf: &[u8], bounds: Bounds) -> Parsed {
    let mut tokens = Tokens::default();
    let mut pos = 0;
    let mut literals = 0;
    loop {
        let rest = buf.get(pos..).unwrap_or_default();
        let (content, consumed) = match take_line(rest, bounds.max_line) {
            Line::Partial => return Parsed::Incomplete,
            Line::TooLong => return fatal(SyntaxError::LineTooLong, buf),
            Line::Complete { content, consumed } => (content, consumed),
        };
        let line_end = pos + consumed;
        let malformed = Parsed::Error {
            error: SyntaxError::Malformed,
            consumed: line_end,
        };
        let size = match tokens.scan(content, b"\0\r\n") {
            Err(Malformed) => return malformed,
            Ok(None) => {
                return match tokens.finish() {
                    Ok(tokens) => Parsed::Line {
                        tokens,
                        consumed: line_end,
                    },
                    Err(Malformed) => malformed,
                };
            }
            Ok(Some(open)) => match literal_size(content, open) {
                Ok(size) => size,
                Err(Malformed) => return malformed,
            },
        };
        literals += 1;
        let bytes = match literal(buf, line_end, size, literals, bounds) {
            Ok(bytes) => bytes,
            Err(parsed) => return parsed,
        };
        if tokens.push(Token::String(bytes.to_vec())).is_err() {
            return malformed;
        }
        pos = line_end + bytes.len();
    }
}

/// The bytes of the `count`th literal of a line, `size` of them from `buf[start]`; `Err` holds
/// what to hand back instead (too many literals, too big a one, or one not all here yet).
fn literal(
    buf: &[u8],
    start: usize,
    size: u64,
    count: usize,
    bounds: Bounds,
) -> Result<&[u8], Parsed> {
    if count > MAX_LITERALS {
        return Err(fatal(SyntaxError::LineTooLong, buf));
    }
    let size = match usize::try_from(size) {
        Ok(size) if size <= bounds.max_literal => size,
        _ => return Err(fatal(SyntaxError::LiteralTooBig, buf)),
    };
    buf.get(start..start + size).ok_or(Parsed::Incomplete)
}

/// An error after which where the next line starts cannot be known: all of `buf` is spent.
fn fatal(error: SyntaxError, buf: &[u8]) -> Parsed {
    Parsed::Error {
        error,
        consumed: buf.len(),
    }
}

/// The size a literal marker announces: `{n}` or `{n+}` at `text[open]`, ending the segment.
fn literal_size(text: &[u8], open: usize) -> Result<u64, Malformed> {
    let inner = text
        .get(open + 1..)
        .and_then(|t| t.strip_suffix(b"}"))
        .ok_or(Malformed)?;
    let digits = inner.strip_suffix(b"+").unwrap_or(inner);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(Malformed);
    }
    if digits.len() > 18 {
        return Ok(u64::MAX);
    }
    Ok(digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Write `value` as a ManageSieve string: quoted when it can be, otherwise a server-to-client
/// literal `{n}` CRLF followed by the bytes.
pub fn string(value: &[u8]) -> Vec<u8> {
    let quotable =
        value.len() <= MAX_QUOTED && !value.iter().any(|&b| matches!(b, 0 | b'\r' | b'\n'));
    let mut out = Vec::with_capacity(value.len() + 8);
    if quotable {
        crate::protocol::quoted::write(&mut out, value);
    } else {
        out.extend_from_slice(format!("{{{}}}\r\n", value.len()).as_bytes());
        out.extend_from_slice(value);
    }
    out
}

/// The human-readable text of a response: the first string after the keyword outside any
/// response code, as UTF-8 (lossy).
pub fn response_text(tokens: &[Token]) -> Option<String> {
    tokens.iter().skip(1).find_map(|t| match t {
        Token::String(s) => Some(String::from_utf8_lossy(s).into_owned()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::token::shorthand::{a, s};

    const BOUNDS: Bounds = Bounds {
        max_line: 40,
        max_literal: 10,
    };

    fn line(buf: &[u8]) -> (Vec<Token>, usize) {
        match parse_line(buf, BOUNDS) {
            Parsed::Line { tokens, consumed } => (tokens, consumed),
            other => panic!("expected a line, got {other:?}"),
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!("X {}{}\r\n", "(".repeat(60_000), ")".repeat(60_000));
        let bounds = Bounds {
            max_line: 200_000,
            max_literal: 10,
        };
        assert!(!matches!(
            parse_line(deep.as_bytes(), bounds),
            Parsed::Line { .. }
        ));
    }

    #[test]
    fn atoms_quoted_strings_and_escapes() {
        let (t, n) = line(b"Authenticate \"PLAIN\" \"a\\\"b\\\\c\"\r\nNEXT");
        assert_eq!(t, vec![a("Authenticate"), s("PLAIN"), s("a\"b\\c")]);
        assert_eq!(n, 32);
        assert_eq!(line(b"NOOP\n").0, vec![a("NOOP")]);
        assert_eq!(line(b"\r\n").0, vec![]);
    }

    #[test]
    fn both_literal_forms_are_read_without_continuation() {
        let (t, n) = line(b"AUTHENTICATE {5+}\r\nPLAIN {3}\r\nx\"y\r\nrest");
        assert_eq!(t, vec![a("AUTHENTICATE"), s("PLAIN"), s("x\"y")]);
        assert_eq!(n, 35);
        assert_eq!(parse_line(b"X {5+}\r\nPLA", BOUNDS), Parsed::Incomplete);
        let (t, _) = line(b"X {2+}\r\n\r\n\r\n");
        assert_eq!(t, vec![a("X"), s("\r\n")]);
        let (t, _) = line(b"X {0+}\r\n\r\n");
        assert_eq!(t, vec![a("X"), s("")]);
    }

    #[test]
    fn response_codes_are_lists() {
        let (t, _) = line(b"OK (TAG \"x\") \"Done\"\r\n");
        assert_eq!(
            t,
            vec![a("OK"), Token::List(vec![a("TAG"), s("x")]), s("Done")]
        );
        assert_eq!(response_text(&t), Some("Done".into()));
    }

    #[test]
    fn malformed_lines_are_consumed_to_their_end() {
        for bad in [
            &b"NOOP \"open\r\n"[..],
            b"NOOP \"a\\x\"\r\n",
            b"NOOP (x\r\n",
            b"NOOP x)\r\n",
            b"NOOP {5+} x\r\n",
            b"NOOP {+}\r\n",
            b"NOOP {x}\r\n",
            b"NO\x01OP\r\n",
        ] {
            assert_eq!(
                parse_line(bad, BOUNDS),
                Parsed::Error {
                    error: SyntaxError::Malformed,
                    consumed: bad.len()
                },
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn bounds() {
        assert!(matches!(
            parse_line(&[b'x'; 50], BOUNDS),
            Parsed::Error {
                error: SyntaxError::LineTooLong,
                ..
            }
        ));
        for marker in [
            &b"X {11+}\r\n"[..],
            b"X {11}\r\n",
            b"X {99999999999999999999999}\r\n",
        ] {
            assert!(matches!(
                parse_line(marker, BOUNDS),
                Parsed::Error {
                    error: SyntaxError::LiteralTooBig,
                    ..
                }
            ));
        }
        let many = "X {0+}\r\n".repeat(MAX_LITERALS + 1);
        assert!(matches!(
            parse_line(many.as_bytes(), BOUNDS),
            Parsed::Error {
                error: SyntaxError::LineTooLong,
                ..
            }
        ));
    }

    #[test]
    fn every_split_point_is_incomplete() {
        let full = b"AUTHENTICATE {5+}\r\nPLAIN \"x y\"\r\n";
        for cut in 0..full.len() {
            assert_eq!(
                parse_line(&full[..cut], BOUNDS),
                Parsed::Incomplete,
                "{cut}"
            );
        }
        assert_eq!(line(full).1, full.len());
    }

    #[test]
    fn strings_are_quoted_or_literal() {
        assert_eq!(string(b"a\"b\\"), b"\"a\\\"b\\\\\"".to_vec());
        assert_eq!(string(b"a\r\nb"), b"{4}\r\na\r\nb".to_vec());
    }
}
