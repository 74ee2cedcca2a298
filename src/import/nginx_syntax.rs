//! nginx's configuration syntax, read as nginx reads it (`ngx_conf_read_token`): directives of
//! words ending in `;`, blocks in `{ }`, `#` comments, single- and double-quoted words with
//! nginx's escapes, `${name}` inside a word. Sans-I/O: text in, a tree of directives out, each
//! with the file and line it starts on; `include` is left as a directive for the loader
//! (`nginx_include`). Bounded: blocks nest at most [`MAX_DEPTH`] deep, a directive has at most
//! [`MAX_WORDS`] words.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// Blocks nested deeper than this are refused (nginx's own mail configuration needs three).
pub const MAX_DEPTH: usize = 16;
/// Words in one directive at most.
pub const MAX_WORDS: usize = 1024;

/// Where a directive starts: its file and line (from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: Arc<Path>,
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One directive: its name, its arguments, and its block's directives when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    pub block: Option<Vec<Directive>>,
    pub at: Location,
}

/// Text that nginx would not read either.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {what}")]
pub struct SyntaxError {
    pub at: Location,
    pub what: SyntaxProblem,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxProblem {
    #[error("unexpected \"{0}\"")]
    Unexpected(char),
    #[error("unexpected end of file, expecting \";\" or \"}}\"")]
    EndInDirective,
    #[error("unexpected end of file, expecting \"}}\"")]
    EndInBlock,
    #[error("unexpected end of file in a quoted string")]
    EndInQuote,
    #[error("blocks nested deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("a directive of more than {MAX_WORDS} words")]
    TooManyWords,
}

/// What ended a run of words.
enum End {
    /// `;`
    Directive,
    /// `{`
    Block,
    /// `}`
    Close,
    Eof,
}

/// The reader's position in the text.
struct Reader<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
    file: Arc<Path>,
}

/// The directives of `text`, read from `file` (named in locations and errors).
pub fn parse(text: &str, file: &Arc<Path>) -> Result<Vec<Directive>, SyntaxError> {
    let mut reader = Reader {
        chars: text.chars().peekable(),
        line: 1,
        file: file.clone(),
    };
    // The open blocks: each one's directive (without its block yet) and what it holds so far.
    let mut open: Vec<(Directive, Vec<Directive>)> = Vec::new();
    let mut top = Vec::new();
    loop {
        let (words, end, at) = reader.words()?;
        let target = match open.last_mut() {
            Some((_, inside)) => inside,
            None => &mut top,
        };
        match end {
            End::Directive | End::Block if words.is_empty() => {
                let c = if matches!(end, End::Block) { '{' } else { ';' };
                return Err(reader.error_at(at, SyntaxProblem::Unexpected(c)));
            }
            End::Directive => target.push(directive(words, at)),
            End::Block => {
                if open.len() >= MAX_DEPTH {
                    return Err(reader.error_at(at, SyntaxProblem::TooDeep));
                }
                open.push((directive(words, at), Vec::new()));
            }
            End::Close if !words.is_empty() || open.is_empty() => {
                return Err(reader.error(SyntaxProblem::Unexpected('}')));
            }
            End::Close => {
                let (mut block, inside) = open.pop().expect("an open block");
                block.block = Some(inside);
                match open.last_mut() {
                    Some((_, outer)) => outer.push(block),
                    None => top.push(block),
                }
            }
            End::Eof if !words.is_empty() => {
                return Err(reader.error(SyntaxProblem::EndInDirective))
            }
            End::Eof if !open.is_empty() => return Err(reader.error(SyntaxProblem::EndInBlock)),
            End::Eof => return Ok(top),
        }
    }
}

fn directive(mut words: Vec<String>, at: Location) -> Directive {
    let name = words.remove(0);
    Directive {
        name,
        args: words,
        block: None,
        at,
    }
}

impl Reader<'_> {
    fn error(&self, what: SyntaxProblem) -> SyntaxError {
        self.error_at(self.location(), what)
    }

    fn error_at(&self, at: Location, what: SyntaxProblem) -> SyntaxError {
        SyntaxError { at, what }
    }

    fn location(&self) -> Location {
        Location {
            file: self.file.clone(),
            line: self.line,
        }
    }

    fn next(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    /// The words up to the next `;`, `{`, `}` or the end, and where the first one starts.
    fn words(&mut self) -> Result<(Vec<String>, End, Location), SyntaxError> {
        let mut words = Vec::new();
        let mut at = self.location();
        loop {
            let Some(&c) = self.chars.peek() else {
                return Ok((words, End::Eof, at));
            };
            if words.is_empty() {
                at = self.location();
            }
            match c {
                ' ' | '\t' | '\r' | '\n' => {
                    self.next();
                }
                '#' => self.skip_comment(),
                ';' | '{' | '}' => {
                    self.next();
                    let end = match c {
                        ';' => End::Directive,
                        '{' => End::Block,
                        _ => End::Close,
                    };
                    return Ok((words, end, at));
                }
                _ => {
                    if words.len() >= MAX_WORDS {
                        return Err(self.error(SyntaxProblem::TooManyWords));
                    }
                    let word = match c {
                        '"' | '\'' => self.quoted()?,
                        _ => self.bare(),
                    };
                    words.push(word);
                }
            }
        }
    }

    fn skip_comment(&mut self) {
        while let Some(c) = self.chars.peek() {
            if *c == '\n' {
                return;
            }
            self.next();
        }
    }

    /// A word in quotes; after it, nginx wants a blank, `;` or `{`.
    fn quoted(&mut self) -> Result<String, SyntaxError> {
        let quote = self.next().expect("a quote");
        let mut word = String::new();
        loop {
            match self.next() {
                None => return Err(self.error(SyntaxProblem::EndInQuote)),
                Some('\\') => match self.next() {
                    None => return Err(self.error(SyntaxProblem::EndInQuote)),
                    Some(c) => unescape(&mut word, c),
                },
                Some(c) if c == quote => break,
                Some(c) => word.push(c),
            }
        }
        match self.chars.peek() {
            None | Some(' ' | '\t' | '\r' | '\n' | ';' | '{') => Ok(word),
            Some(&c) => Err(self.error(SyntaxProblem::Unexpected(c))),
        }
    }

    /// A word without quotes: up to a blank, `;` or `{` (a `{` right after `$` belongs to
    /// the word, as in `${name}`, up to its `}`).
    fn bare(&mut self) -> String {
        let mut word = String::new();
        let mut in_variable = false;
        while let Some(&c) = self.chars.peek() {
            match c {
                '{' if word.ends_with('$') => in_variable = true,
                '}' if in_variable => in_variable = false,
                ' ' | '\t' | '\r' | '\n' | ';' | '{' => break,
                _ => {}
            }
            self.next();
            if c == '\\' {
                match self.next() {
                    Some(escaped) => unescape(&mut word, escaped),
                    None => word.push('\\'),
                }
            } else {
                word.push(c);
            }
        }
        word
    }
}

/// nginx's escapes: `\"`, `\'`, `\\`, `\t`, `\r`, `\n`; any other backslash stays.
fn unescape(word: &mut String, c: char) {
    match c {
        '"' | '\'' | '\\' => word.push(c),
        't' => word.push('\t'),
        'r' => word.push('\r'),
        'n' => word.push('\n'),
        other => {
            word.push('\\');
            word.push(other);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> Arc<Path> {
        Arc::from(Path::new("nginx.conf"))
    }

    fn read(text: &str) -> Vec<Directive> {
        parse(text, &file()).unwrap()
    }

    fn problem(text: &str) -> (usize, SyntaxProblem) {
        let e = parse(text, &file()).unwrap_err();
        (e.at.line, e.what)
    }

    #[test]
    fn blocks_nest_and_every_directive_knows_its_line() {
        let tree = read(
            "events { worker_connections 64; }\n\
             mail {\n  server_name mail.example.org;\n  server {\n    listen 993 ssl;\n  }\n}\n",
        );
        assert_eq!(tree.len(), 2);
        let mail = &tree[1];
        assert_eq!((mail.name.as_str(), mail.at.line), ("mail", 2));
        let inside = mail.block.as_ref().unwrap();
        assert_eq!(inside[0].args, ["mail.example.org"]);
        assert_eq!(inside[0].at.line, 3);
        let listen = &inside[1].block.as_ref().unwrap()[0];
        assert_eq!(
            (listen.args.clone(), listen.at.line),
            (vec!["993".into(), "ssl".into()], 5)
        );
        assert_eq!(listen.at.to_string(), "nginx.conf:5");
        assert_eq!(inside[1].block.as_ref().unwrap().len(), 1);
        assert!(tree[0].block.is_some() && listen.block.is_none());
    }

    #[test]
    fn quotes_escapes_and_comments_are_nginxs() {
        let tree = read(
            "# a comment; { not a block\n\
             a \"two words\" 'single \\'quoted\\'' \"tab\\there\" back\\slash;  # trailing\n\
             b x#y \"#not a comment\";\n\
             c \"\";\n",
        );
        assert_eq!(
            tree[0].args,
            ["two words", "single 'quoted'", "tab\there", "back\\slash"]
        );
        assert_eq!(tree[0].at.line, 2);
        assert_eq!(tree[1].args, ["x#y", "#not a comment"]);
        assert_eq!(tree[2].args, [""]);
    }

    #[test]
    fn a_variable_in_braces_stays_in_its_word() {
        let tree = read("set $a ${b}c;\n");
        assert_eq!(tree[0].args, ["$a", "${b}c"]);
    }

    #[test]
    fn a_word_spans_lines_only_in_quotes() {
        let tree = read("a \"one\ntwo\";\nb;\n");
        assert_eq!(tree[0].args, ["one\ntwo"]);
        assert_eq!(tree[1].at.line, 3);
    }

    #[test]
    fn mistakes_are_named_with_their_line() {
        assert_eq!(problem("a;\n;\n"), (2, SyntaxProblem::Unexpected(';')));
        assert_eq!(problem("a;\n{ }\n"), (2, SyntaxProblem::Unexpected('{')));
        assert_eq!(problem("a;\n}\n"), (2, SyntaxProblem::Unexpected('}')));
        assert_eq!(
            problem("mail {\n a b }\n"),
            (2, SyntaxProblem::Unexpected('}'))
        );
        assert_eq!(problem("mail {\n a;\n"), (3, SyntaxProblem::EndInBlock));
        assert_eq!(problem("a b\n"), (2, SyntaxProblem::EndInDirective));
        assert_eq!(problem("a \"b;\n"), (2, SyntaxProblem::EndInQuote));
        assert_eq!(problem("a \"b\"c;\n"), (1, SyntaxProblem::Unexpected('c')));
    }

    #[test]
    fn input_is_bounded() {
        let deep = "a {".repeat(MAX_DEPTH + 1) + &"}".repeat(MAX_DEPTH + 1);
        assert_eq!(problem(&deep).1, SyntaxProblem::TooDeep);
        let fine = "a {".repeat(MAX_DEPTH) + &"}".repeat(MAX_DEPTH);
        assert!(parse(&fine, &file()).is_ok());
        let wide = format!("a{};", " w".repeat(MAX_WORDS + 1));
        assert_eq!(problem(&wide).1, SyntaxProblem::TooManyWords);
    }

    #[test]
    fn nothing_is_nothing() {
        assert!(read("").is_empty());
        assert!(read("# only a comment").is_empty());
    }
}
