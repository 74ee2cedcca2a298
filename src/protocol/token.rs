//! The words IMAP commands and ManageSieve lines share: atoms, quoted strings (see
//! [`super::quoted`]) and parenthesised lists, and the lexer that reads them from one line
//! segment. How literals are framed differs (IMAP waits for `+`, ManageSieve does not), so each
//! protocol frames its lines and hands the segments and literals to this one lexer.

use super::limits::MAX_NESTING;
use super::quoted;

/// One item of a command or response line.
#[derive(Clone, PartialEq, Eq)]
pub enum Token {
    /// A bare word (`AUTHENTICATE`, `OK`, `NIL`, `PLAIN`, an unquoted user name...).
    Atom(Vec<u8>),
    /// A quoted string or a literal, unescaped.
    String(Vec<u8>),
    /// A parenthesised list (IMAP `ID` fields, ManageSieve response codes such as `(TAG "x")`).
    List(Vec<Token>),
}

impl Token {
    /// The value of a string or atom (an IMAP `astring`); lists have none.
    pub fn text(&self) -> Option<&[u8]> {
        match self {
            Token::Atom(v) | Token::String(v) => Some(v),
            Token::List(_) => None,
        }
    }
}

/// Tokens may hold a password (a LOGIN argument, a SASL PLAIN blob): `Debug` shows their shape
/// and lengths only.
impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Token::Atom(v) => write!(f, "Atom(<{} bytes>)", v.len()),
            Token::String(v) => write!(f, "String(<{} bytes>)", v.len()),
            Token::List(items) => f.debug_list().entries(items).finish(),
        }
    }
}

/// A line's tokens while it is read: the line itself at the bottom, one list on top of it for
/// each parenthesis still open.
pub struct Tokens {
    stack: Vec<Vec<Token>>,
}

/// A line that does not read as tokens: unbalanced parentheses or quotes, a bad escape, a stray
/// control character or `{`, lists nested too deep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

impl Default for Tokens {
    fn default() -> Self {
        Tokens {
            stack: vec![Vec::new()],
        }
    }
}

impl Tokens {
    /// Add `token` to the innermost open list (or the line).
    pub fn push(&mut self, token: Token) -> Result<(), Malformed> {
        self.stack.last_mut().ok_or(Malformed)?.push(token);
        Ok(())
    }

    /// Read the tokens of one line segment, `text`. A quoted string may not hold a byte of
    /// `forbidden`. Stops at a `{` (in a ManageSieve line, a literal marker) and returns its
    /// index; the caller decides what it means.
    pub fn scan(&mut self, text: &[u8], forbidden: &[u8]) -> Result<Option<usize>, Malformed> {
        let mut i = 0;
        while let Some(&c) = text.get(i) {
            match c {
                b' ' => i += 1,
                b'(' => {
                    if self.stack.len() > MAX_NESTING {
                        return Err(Malformed);
                    }
                    self.stack.push(Vec::new());
                    i += 1;
                }
                b')' => {
                    if self.stack.len() < 2 {
                        return Err(Malformed);
                    }
                    let list = self.stack.pop().ok_or(Malformed)?;
                    self.push(Token::List(list))?;
                    i += 1;
                }
                b'"' => {
                    let (value, next) = quoted::read(text, i, forbidden).ok_or(Malformed)?;
                    i = next;
                    self.push(Token::String(value))?;
                }
                b'{' => return Ok(Some(i)),
                c if is_atom_char(c) => {
                    let start = i;
                    while text.get(i).is_some_and(|&b| is_atom_char(b)) {
                        i += 1;
                    }
                    let atom = text.get(start..i).ok_or(Malformed)?;
                    self.push(Token::Atom(atom.to_vec()))?;
                }
                _ => return Err(Malformed),
            }
        }
        Ok(None)
    }

    /// The line's tokens, once every list is closed.
    pub fn finish(mut self) -> Result<Vec<Token>, Malformed> {
        match (self.stack.pop(), self.stack.is_empty()) {
            (Some(tokens), true) => Ok(tokens),
            _ => Err(Malformed),
        }
    }
}

/// Characters allowed in an atom: printable, not space, and none of `"(){`. Bytes above 0x7f are
/// let through so that a UTF-8 word does not turn a command into a syntax error.
fn is_atom_char(b: u8) -> bool {
    (b > b' ' && b != 0x7f) && !matches!(b, b'"' | b'(' | b')' | b'{')
}

/// Test shorthands for the expected tokens.
#[cfg(test)]
pub mod shorthand {
    use super::Token;

    pub fn a(v: &str) -> Token {
        Token::Atom(v.as_bytes().to_vec())
    }

    pub fn s(v: &str) -> Token {
        Token::String(v.as_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::shorthand::{a, s};
    use super::*;

    fn scan(text: &[u8], forbidden: &[u8]) -> Result<Vec<Token>, Malformed> {
        let mut tokens = Tokens::default();
        match tokens.scan(text, forbidden)? {
            Some(_) => Err(Malformed),
            None => tokens.finish(),
        }
    }

    #[test]
    fn atoms_strings_and_nested_lists() {
        assert_eq!(
            scan(b"ID (\"a b\" x (NIL)) y\x80", &[]),
            Ok(vec![
                a("ID"),
                Token::List(vec![s("a b"), a("x"), Token::List(vec![a("NIL")])]),
                Token::Atom(b"y\x80".to_vec()),
            ])
        );
    }

    #[test]
    fn unbalanced_stray_and_forbidden_are_malformed() {
        for bad in [&b"(x"[..], b"x)", b"a\x01b", b"a\x7fb", b"a\tb", b"\"open"] {
            assert_eq!(scan(bad, &[]), Err(Malformed), "{bad:?}");
        }
        assert_eq!(scan(b"\"a\rb\"", b"\r"), Err(Malformed));
        assert_eq!(scan(b"\"a\rb\"", &[]), Ok(vec![s("a\rb")]));
    }

    #[test]
    fn a_brace_stops_the_scan_where_it_stands() {
        let mut tokens = Tokens::default();
        assert_eq!(tokens.scan(b"X a{5}", &[]), Ok(Some(3)));
        assert_eq!(tokens.finish(), Ok(vec![a("X"), a("a")]));
    }
}
