//! Line framing shared by the protocol machines.
//!
//! Mail protocols end lines with CRLF, but interactive clients (`openssl s_client` without
//! `-crlf`, `nc`) send a bare LF, and Dovecot and Perdition accept it; so do we.

/// Result of looking for one line at the start of a buffer.
#[derive(PartialEq, Eq)]
pub enum Line<'a> {
    /// A whole line: its content without the line end, and the bytes consumed including it.
    Complete { content: &'a [u8], consumed: usize },
    /// No line end yet, and the line is still within bounds.
    Partial,
    /// The line is longer than allowed (with or without its end having arrived).
    TooLong,
}

/// A line may be `PASS <password>`: `Debug` shows its length only.
impl std::fmt::Debug for Line<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Line::Complete { content, consumed } => write!(
                f,
                "Complete {{ content: <{} bytes>, consumed: {consumed} }}",
                content.len()
            ),
            Line::Partial => f.write_str("Partial"),
            Line::TooLong => f.write_str("TooLong"),
        }
    }
}

/// Find the first line in `buf`, refusing lines longer than `max` bytes of content.
pub fn take_line(buf: &[u8], max: usize) -> Line<'_> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(lf) => {
            let end = if lf > 0 && buf[lf - 1] == b'\r' {
                lf - 1
            } else {
                lf
            };
            if end > max {
                Line::TooLong
            } else {
                Line::Complete {
                    content: &buf[..end],
                    consumed: lf + 1,
                }
            }
        }
        // A trailing CR may be the first half of the line end, so it does not count.
        None if buf.len() > max + 1 => Line::TooLong,
        None => Line::Partial,
    }
}

/// Remove the first line from `input` and return its content; `Err(Line::Partial)` or
/// `Err(Line::TooLong)` when there is no acceptable line yet (nothing is removed then).
pub fn pop_line(input: &mut Vec<u8>, max: usize) -> Result<Vec<u8>, Line<'static>> {
    let (line, consumed) = match take_line(input, max) {
        Line::Partial => return Err(Line::Partial),
        Line::TooLong => return Err(Line::TooLong),
        Line::Complete { content, consumed } => (content.to_vec(), consumed),
    };
    input.drain(..consumed);
    Ok(line)
}

/// Split off the first word of a line (up to the first space) and the rest after it.
pub fn split_word(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|&b| b == b' ') {
        Some(sp) => (&line[..sp], &line[sp + 1..]),
        None => (line, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_and_bare_lf_both_end_a_line() {
        assert_eq!(
            take_line(b"a NOOP\r\nb", 100),
            Line::Complete {
                content: b"a NOOP",
                consumed: 8
            }
        );
        assert_eq!(
            take_line(b"a NOOP\nb", 100),
            Line::Complete {
                content: b"a NOOP",
                consumed: 7
            }
        );
    }

    #[test]
    fn a_line_without_its_end_is_partial_until_too_long() {
        assert_eq!(take_line(b"a NOO", 10), Line::Partial);
        assert_eq!(take_line(b"0123456789\r", 10), Line::Partial);
        assert_eq!(take_line(b"0123456789ab", 10), Line::TooLong);
        assert_eq!(take_line(b"0123456789a\r\n", 10), Line::TooLong);
    }

    #[test]
    fn popping_a_line_removes_it_and_its_end() {
        let mut input = b"+OK hi\r\nrest".to_vec();
        assert_eq!(pop_line(&mut input, 10), Ok(b"+OK hi".to_vec()));
        assert_eq!(input, b"rest");
        assert_eq!(pop_line(&mut input, 10), Err(Line::Partial));
        assert_eq!(input, b"rest");
    }

    #[test]
    fn first_word_is_split_at_the_first_space() {
        assert_eq!(split_word(b"PASS a b c"), (&b"PASS"[..], &b"a b c"[..]));
        assert_eq!(split_word(b"QUIT"), (&b"QUIT"[..], &b""[..]));
    }
}
