//! IMAP (RFC 9051 / 3501): the pre-login part only. After login the proxy relays bytes untouched.

pub mod back;
pub mod command;
mod descriptor;
pub mod front;

pub use descriptor::DESCRIPTOR;

/// Whether `tag` is a valid IMAP tag: one or more ASTRING-CHARs other than `+`.
pub fn is_valid_tag(tag: &[u8]) -> bool {
    !tag.is_empty() && tag.iter().all(|&b| is_astring_char(b) && b != b'+')
}

/// ATOM-CHAR plus `]` (RFC 9051 `ASTRING-CHAR`).
pub fn is_astring_char(b: u8) -> bool {
    b.is_ascii_graphic() && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\')
}

/// Write `value` as an IMAP string a server will accept: a quoted string when it can be one,
/// otherwise a literal (non-synchronising when `literal_plus`, else synchronising).
pub fn string_argument(value: &[u8], literal_plus: bool) -> StringArgument {
    let quotable = value
        .iter()
        .all(|&b| b.is_ascii() && b != b'\r' && b != b'\n' && b != 0);
    if quotable {
        let mut out = Vec::new();
        crate::protocol::quoted::write(&mut out, value);
        StringArgument::Quoted(out)
    } else {
        let plus = if literal_plus { "+" } else { "" };
        StringArgument::Literal {
            header: format!("{{{}{}}}", value.len(), plus).into_bytes(),
            synchronising: !literal_plus,
        }
    }
}

/// How one string argument goes on the wire.
#[derive(Debug, PartialEq, Eq)]
pub enum StringArgument {
    Quoted(Vec<u8>),
    /// `{n}` or `{n+}`, followed by CRLF and the raw bytes.
    Literal {
        header: Vec<u8>,
        synchronising: bool,
    },
}

/// A response line from an IMAP server, split into its parts.
#[derive(Debug, PartialEq, Eq)]
pub struct ResponseLine<'a> {
    /// `*`, `+` or the tag.
    pub tag: &'a str,
    /// `OK`, `NO`, `BAD`, `BYE`, `PREAUTH`, `CAPABILITY`... upper-cased by the caller's needs.
    pub keyword: &'a str,
    /// The bracketed response code without brackets, if any.
    pub code: Option<&'a str>,
    /// The human-readable rest.
    pub text: &'a str,
}

/// Split a server response line. Returns `None` for lines that are not UTF-8.
pub fn parse_response(line: &[u8]) -> Option<ResponseLine<'_>> {
    let line = std::str::from_utf8(line).ok()?;
    let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
    let (keyword, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let (code, text) = match rest.strip_prefix('[') {
        Some(inner) => match inner.split_once(']') {
            Some((code, text)) => (Some(code), text.trim_start()),
            None => (None, rest),
        },
        None => (None, rest),
    };
    Some(ResponseLine {
        tag,
        keyword,
        code,
        text,
    })
}

/// The capability list inside a `CAPABILITY ...` response code, if that is what `code` is.
pub fn capability_code(code: Option<&str>) -> Option<&str> {
    let code = code?;
    let (name, rest) = code.split_once(' ').unwrap_or((code, ""));
    name.eq_ignore_ascii_case("CAPABILITY").then_some(rest)
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn tags_exclude_specials_and_plus() {
        assert!(is_valid_tag(b"a001"));
        assert!(is_valid_tag(b"A.1]"));
        assert!(!is_valid_tag(b""));
        assert!(!is_valid_tag(b"a+1"));
        assert!(!is_valid_tag(b"a*"));
        assert!(!is_valid_tag(b"a{1"));
        assert!(!is_valid_tag("\u{e9}".as_bytes()));
    }

    #[test]
    fn strings_are_quoted_or_literal() {
        assert_eq!(
            string_argument(br#"pa"ss\"#, false),
            StringArgument::Quoted(br#""pa\"ss\\""#.to_vec())
        );
        assert_eq!(
            string_argument("p\u{e4}ss".as_bytes(), true),
            StringArgument::Literal {
                header: b"{5+}".to_vec(),
                synchronising: false
            }
        );
    }

    #[test]
    fn response_lines_split_into_parts() {
        let r = parse_response(b"a OK [CAPABILITY IMAP4rev1 IDLE] Logged in").unwrap();
        assert_eq!(r.tag, "a");
        assert_eq!(r.keyword, "OK");
        assert_eq!(capability_code(r.code), Some("IMAP4rev1 IDLE"));
        assert_eq!(r.text, "Logged in");
        let r = parse_response(b"* OK Dovecot ready.").unwrap();
        assert_eq!(r.code, None);
        assert_eq!(r.text, "Dovecot ready.");
    }
}
