//! Incremental parsing of one IMAP command from the front of a buffer.
//!
//! Framing and tokenising are two passes: framing finds the lines and the literals that follow
//! `{n}` / `{n+}` markers, enforcing the length bounds; tokenising turns the pieces into atoms,
//! strings and lists (with the lexer ManageSieve uses too, [`crate::protocol::token`]). Only the
//! handful of commands allowed before login are interpreted later, so the grammar here is
//! deliberately lenient about spacing.

use crate::protocol::limits::MAX_LITERALS_PER_COMMAND;
use crate::protocol::line::{take_line, Line};
use crate::protocol::token::{Malformed, Token, Tokens};
use crate::protocol::PreLoginLimits;

use super::is_valid_tag;

/// A whole command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub tag: String,
    /// The command name, upper-cased.
    pub name: String,
    pub args: Vec<Token>,
}

/// Why a command could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandError {
    /// A line is longer than the pre-login limit. The connection must be closed: we cannot know
    /// where the next command starts.
    LineTooLong,
    /// A literal is larger than the limit. A synchronising literal was never sent by the client,
    /// so the session can go on; a non-synchronising one is on its way and forces a close.
    LiteralTooBig { synchronising: bool },
    /// The tag is missing or malformed.
    BadTag,
    /// Unbalanced quotes or parentheses, a bad literal marker...
    Syntax,
}

/// The result of trying to parse the front of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A command, and how many bytes of the buffer it used.
    Command { command: Command, consumed: usize },
    /// More bytes are needed. `literal` names the literal being waited for: its index in the
    /// command and whether it is synchronising (the client then waits for `+`).
    Incomplete { literal: Option<(usize, bool)> },
    /// A malformed command. `consumed` covers the bad command; `tag` is given when one could be
    /// read so that the answer can be tagged.
    Error {
        error: CommandError,
        consumed: usize,
        tag: Option<String>,
    },
}

/// A piece of a framed command: command text, or the raw bytes of a literal.
#[derive(Debug)]
enum Piece<'a> {
    Text(&'a [u8]),
    Literal(&'a [u8]),
}

/// Parse the first command in `buf`.
pub fn parse_command(buf: &[u8], limits: &PreLoginLimits) -> Parsed {
    let mut pieces = Vec::new();
    let mut pos = 0;
    loop {
        let (content, consumed) = match take_line(&buf[pos..], limits.max_line_length) {
            Line::Partial => return Parsed::Incomplete { literal: None },
            Line::TooLong => {
                return Parsed::Error {
                    error: CommandError::LineTooLong,
                    consumed: buf.len(),
                    tag: first_tag(&pieces, buf),
                }
            }
            Line::Complete { content, consumed } => (content, consumed),
        };
        let line_end = pos + consumed;
        match literal_marker(content) {
            None => {
                pieces.push(Piece::Text(content));
                return finish(pieces, line_end);
            }
            Some(Err(())) => {
                pieces.push(Piece::Text(content));
                return Parsed::Error {
                    error: CommandError::Syntax,
                    consumed: line_end,
                    tag: tag_of(&pieces),
                };
            }
            Some(Ok((text_len, size, synchronising))) => {
                pieces.push(Piece::Text(&content[..text_len]));
                let literals = pieces
                    .iter()
                    .filter(|p| matches!(p, Piece::Literal(_)))
                    .count();
                if size > limits.max_literal_size || literals >= MAX_LITERALS_PER_COMMAND {
                    return Parsed::Error {
                        error: CommandError::LiteralTooBig { synchronising },
                        consumed: if synchronising { line_end } else { buf.len() },
                        tag: tag_of(&pieces),
                    };
                }
                if buf.len() - line_end < size {
                    return Parsed::Incomplete {
                        literal: Some((literals, synchronising)),
                    };
                }
                pieces.push(Piece::Literal(&buf[line_end..line_end + size]));
                pos = line_end + size;
            }
        }
    }
}

/// The tag of a command whose first line is too long to frame, for a tagged answer.
fn first_tag(pieces: &[Piece<'_>], buf: &[u8]) -> Option<String> {
    if !pieces.is_empty() {
        return tag_of(pieces);
    }
    let end = buf.iter().position(|&b| b == b' ')?;
    let tag = &buf[..end];
    is_valid_tag(tag).then(|| String::from_utf8_lossy(tag).into_owned())
}

/// If a line ends with `{n}` or `{n+}`, the length of the text before it, `n`, and whether the
/// literal is synchronising. `Some(Err)` for a marker that is malformed.
#[allow(clippy::type_complexity)]
fn literal_marker(line: &[u8]) -> Option<Result<(usize, usize, bool), ()>> {
    if line.last() != Some(&b'}') {
        return None;
    }
    let open = line.iter().rposition(|&b| b == b'{')?;
    let inner = &line[open + 1..line.len() - 1];
    let (digits, synchronising) = match inner.strip_suffix(b"+") {
        Some(d) => (d, false),
        None => (inner, true),
    };
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        // `{` inside a quoted string at the end of a line is not a literal, but no pre-login
        // command ends that way; treat it as malformed.
        return Some(Err(()));
    }
    let size = std::str::from_utf8(digits).ok()?.parse::<usize>().ok()?;
    Some(Ok((open, size, synchronising)))
}

fn tag_of(pieces: &[Piece<'_>]) -> Option<String> {
    let Some(Piece::Text(first)) = pieces.first() else {
        return None;
    };
    let end = first.iter().position(|&b| b == b' ').unwrap_or(first.len());
    let tag = &first[..end];
    is_valid_tag(tag).then(|| String::from_utf8_lossy(tag).into_owned())
}

fn finish(pieces: Vec<Piece<'_>>, consumed: usize) -> Parsed {
    let error = |error| Parsed::Error {
        error,
        consumed,
        tag: tag_of(&pieces),
    };
    let Ok(tokens) = tokenise(&pieces) else {
        return error(CommandError::Syntax);
    };
    let mut it = tokens.into_iter();
    let tag = match it.next() {
        Some(Token::Atom(t)) if is_valid_tag(&t) => String::from_utf8_lossy(&t).into_owned(),
        _ => return error(CommandError::BadTag),
    };
    let name = match it.next() {
        Some(Token::Atom(n)) if n.iter().all(u8::is_ascii_alphanumeric) => {
            String::from_utf8_lossy(&n).to_ascii_uppercase()
        }
        _ => return error(CommandError::Syntax),
    };
    Parsed::Command {
        command: Command {
            tag,
            name,
            args: it.collect(),
        },
        consumed,
    }
}

/// The command's tokens. A literal is a string; a `{` anywhere else is an error, as no
/// pre-login command has a use for one.
fn tokenise(pieces: &[Piece<'_>]) -> Result<Vec<Token>, Malformed> {
    let mut tokens = Tokens::default();
    for piece in pieces {
        match piece {
            Piece::Literal(bytes) => tokens.push(Token::String(bytes.to_vec()))?,
            Piece::Text(text) => {
                if tokens.scan(text, &[])?.is_some() {
                    return Err(Malformed);
                }
            }
        }
    }
    tokens.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::token::shorthand::{a, s};

    fn limits() -> PreLoginLimits {
        PreLoginLimits {
            max_line_length: 64,
            max_literal_size: 16,
            ..Default::default()
        }
    }

    fn command(buf: &[u8]) -> (Command, usize) {
        match parse_command(buf, &limits()) {
            Parsed::Command { command, consumed } => (command, consumed),
            other => panic!("expected a command, got {other:?}"),
        }
    }

    #[test]
    fn login_with_atoms() {
        let (c, n) = command(b"a1 login alice secret\r\nrest");
        assert_eq!(c.tag, "a1");
        assert_eq!(c.name, "LOGIN");
        assert_eq!(c.args, vec![a("alice"), a("secret")]);
        assert_eq!(n, 23);
    }

    #[test]
    fn quoted_strings_unescape_quote_and_backslash() {
        let (c, _) = command(b"a LOGIN \"al ice\" \"p\\\"w\\\\d\"\r\n");
        assert_eq!(c.args, vec![s("al ice"), s("p\"w\\d")]);
    }

    #[test]
    fn synchronising_literals_wait_then_complete() {
        let limits = limits();
        assert_eq!(
            parse_command(b"a LOGIN {5}\r\n", &limits),
            Parsed::Incomplete {
                literal: Some((0, true))
            }
        );
        assert_eq!(
            parse_command(b"a LOGIN {5}\r\nalice {3+}\r\npw", &limits),
            Parsed::Incomplete {
                literal: Some((1, false))
            }
        );
        let (c, n) = command(b"a LOGIN {5}\r\nalice {3+}\r\npw!\r\nb NOOP\r\n");
        assert_eq!(c.args, vec![s("alice"), s("pw!")]);
        assert_eq!(n, 30);
    }

    #[test]
    fn literal_bytes_are_opaque() {
        let (c, _) = command(b"a LOGIN {4}\r\n\"{}\" {2}\r\n\r\n\r\n");
        assert_eq!(c.args, vec![s("\"{}\""), s("\r\n")]);
    }

    #[test]
    fn lists_nest_and_may_hold_literals() {
        let (c, _) = command(b"t ID (\"name\" {3}\r\nmua \"os\" NIL)\r\n");
        assert_eq!(c.name, "ID");
        assert_eq!(
            c.args,
            vec![Token::List(vec![s("name"), s("mua"), s("os"), a("NIL")])]
        );
    }

    #[test]
    fn bounds_are_enforced() {
        let limits = limits();
        let long = [b'x'; 80];
        assert!(matches!(
            parse_command(&long, &limits),
            Parsed::Error {
                error: CommandError::LineTooLong,
                ..
            }
        ));
        assert_eq!(
            parse_command(b"a LOGIN {17}\r\n", &limits),
            Parsed::Error {
                error: CommandError::LiteralTooBig {
                    synchronising: true
                },
                consumed: 14,
                tag: Some("a".into())
            }
        );
        assert!(matches!(
            parse_command(b"a LOGIN {99999999999}\r\n", &limits),
            Parsed::Error {
                error: CommandError::Syntax,
                ..
            }
        ));
    }

    #[test]
    fn malformed_commands_are_errors_with_their_tag() {
        assert_eq!(
            parse_command(b"a LOGIN \"unterminated\r\n", &limits()),
            Parsed::Error {
                error: CommandError::Syntax,
                consumed: 23,
                tag: Some("a".into())
            }
        );
        assert_eq!(
            parse_command(b"a+ NOOP\r\n", &limits()),
            Parsed::Error {
                error: CommandError::BadTag,
                consumed: 9,
                tag: None
            }
        );
        assert!(matches!(
            parse_command(b"\r\n", &limits()),
            Parsed::Error {
                error: CommandError::BadTag,
                ..
            }
        ));
        assert!(matches!(
            parse_command(b"a LOGIN (x\r\n", &limits()),
            Parsed::Error {
                error: CommandError::Syntax,
                ..
            }
        ));
    }

    #[test]
    fn deep_nesting_and_many_literals_are_refused_not_recursed() {
        let deep = format!("a ID {}{}\r\n", "(".repeat(5000), ")".repeat(5000));
        let limits = PreLoginLimits {
            max_line_length: 20_000,
            ..Default::default()
        };
        assert!(matches!(
            parse_command(deep.as_bytes(), &limits),
            Parsed::Error {
                error: CommandError::Syntax,
                ..
            }
        ));
        let many = format!(
            "a LOGIN {}\r\n",
            "{1+}\r\nx ".repeat(MAX_LITERALS_PER_COMMAND + 1)
        );
        assert!(matches!(
            parse_command(many.as_bytes(), &limits),
            Parsed::Error {
                error: CommandError::LiteralTooBig {
                    synchronising: false
                },
                ..
            }
        ));
    }

    #[test]
    fn every_split_point_gives_the_same_command() {
        let full = b"a LOGIN {5}\r\nalice \"pw\"\r\n";
        for cut in 0..full.len() {
            assert!(
                matches!(
                    parse_command(&full[..cut], &limits()),
                    Parsed::Incomplete { .. }
                ),
                "cut at {cut}"
            );
        }
        let (c, _) = command(full);
        assert_eq!(c.args, vec![s("alice"), s("pw")]);
    }
}
