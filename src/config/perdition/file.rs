//! Perdition's configuration file, read as its `vanessa_config_file_read` reads it: one
//! `option value` per line, the option being the long (or one-letter) flag name without
//! dashes; `#` starts a comment anywhere outside quotes; `\` before a line end joins the next
//! line (a comment goes on too), before any other character takes it literally; `'...'` is
//! literal and `"..."` literal but for `\` escapes; quoted and unquoted pieces join.

use super::error::PerditionError;
use super::options::PerditionOption;

/// `(option, value)` pairs from a Perdition configuration file.
pub fn parse_file(text: &str) -> Result<Vec<(PerditionOption, String)>, PerditionError> {
    let mut out = Vec::new();
    for line in logical_lines(text)? {
        out.extend(setting(&line)?);
    }
    Ok(out)
}

/// One logical line of a configuration file: its characters, each marked literal when it was
/// quoted or escaped (such whitespace neither separates nor is trimmed).
struct LogicalLine {
    /// The line it starts on, for messages.
    number: usize,
    chars: Vec<(char, bool)>,
    /// It had quotes: `""` is an explicitly empty value.
    quoted: bool,
}

impl LogicalLine {
    fn new(number: usize) -> LogicalLine {
        LogicalLine {
            number,
            chars: Vec::new(),
            quoted: false,
        }
    }

    /// Its first word and the rest, blanks around both trimmed; none for a line of nothing.
    fn name_and_value(&self) -> Option<(String, String)> {
        let separator = |&(c, literal): &(char, bool)| !literal && c.is_whitespace();
        let mut chars = self.chars.as_slice();
        while chars.first().is_some_and(separator) {
            chars = &chars[1..];
        }
        while chars.last().is_some_and(separator) {
            chars = &chars[..chars.len() - 1];
        }
        if chars.is_empty() && !self.quoted {
            return None;
        }
        let key_end = chars.iter().position(separator).unwrap_or(chars.len());
        let name: String = chars[..key_end].iter().map(|(c, _)| c).collect();
        let mut rest = &chars[key_end..];
        while rest.first().is_some_and(separator) {
            rest = &rest[1..];
        }
        let value: String = rest.iter().map(|(c, _)| c).collect();
        Some((name, value))
    }
}

/// The option and value one line sets: none for a line of nothing, or for an option that
/// makes no sense in a file.
fn setting(line: &LogicalLine) -> Result<Option<(PerditionOption, String)>, PerditionError> {
    let n = line.number;
    let Some((name, value)) = line.name_and_value() else {
        return Ok(None);
    };
    let option = option_named(&name).map_err(|e| e.on_line(n))?;
    // Options that make no sense in a file are passed over, as Perdition does.
    if matches!(option, PerditionOption::ConfigFile | PerditionOption::Help) {
        return Ok(None);
    }
    let explicitly_empty = value.is_empty() && line.quoted;
    let value = match (option.takes_value(), value.is_empty()) {
        (true, true) if explicitly_empty => value,
        (true, true) => {
            return Err(PerditionError::NoValueOnLine {
                line: n,
                name: option.name(),
            })
        }
        (false, true) => "yes".to_string(),
        (_, false) => value,
    };
    Ok(Some((option, value)))
}

/// Perdition takes short names too (`P IMAP4`, `l 110`).
fn option_named(name: &str) -> Result<PerditionOption, PerditionError> {
    let mut letters = name.chars();
    let long = match (letters.next(), letters.next()) {
        (Some(letter), None) => PerditionOption::from_letter(letter).map_or(name, |o| o.name()),
        _ => name,
    };
    PerditionOption::from_name(long)
}

/// Where the reader is: outside quotes, in `'...'`, in `"..."`, or in a comment.
#[derive(PartialEq)]
enum State {
    Plain,
    Single,
    Double,
    Comment,
}

/// Perdition's reader, one character at a time.
struct Reader<'a> {
    it: std::str::Chars<'a>,
    state: State,
    /// The line of the text it is on.
    number: usize,
    /// The logical line being read.
    line: LogicalLine,
    lines: Vec<LogicalLine>,
}

/// The file as Perdition's reader sees it: comments gone, continuations joined, quotes and
/// escapes resolved.
fn logical_lines(text: &str) -> Result<Vec<LogicalLine>, PerditionError> {
    let mut reader = Reader {
        it: text.chars(),
        state: State::Plain,
        number: 1,
        line: LogicalLine::new(1),
        lines: Vec::new(),
    };
    while let Some(c) = reader.it.next() {
        if c == '\n' {
            reader.number += 1;
        }
        match reader.state {
            State::Plain => reader.plain(c),
            State::Comment => reader.comment(c),
            State::Single => reader.single_quoted(c),
            State::Double => reader.double_quoted(c),
        }
    }
    if matches!(reader.state, State::Single | State::Double) {
        return Err(PerditionError::UnclosedQuote(reader.line.number));
    }
    reader.lines.push(reader.line);
    Ok(reader.lines)
}

impl Reader<'_> {
    fn end_line(&mut self) {
        let next = LogicalLine::new(self.number);
        self.lines.push(std::mem::replace(&mut self.line, next));
    }

    /// After `\`: a continued line, or the next character taken literally.
    fn escaped(&mut self) {
        match self.it.next() {
            Some('\n') => self.number += 1,
            Some(next) => self.line.chars.push((next, true)),
            None => {}
        }
    }

    fn plain(&mut self, c: char) {
        match c {
            '\n' => self.end_line(),
            '\\' => self.escaped(),
            '#' => self.state = State::Comment,
            '\'' => (self.state, self.line.quoted) = (State::Single, true),
            '"' => (self.state, self.line.quoted) = (State::Double, true),
            c => self.line.chars.push((c, false)),
        }
    }

    fn comment(&mut self, c: char) {
        match c {
            '\n' => {
                self.end_line();
                self.state = State::Plain;
            }
            // A comment ending in `\` goes on on the next line (Debian's sample file relies
            // on it).
            '\\' if self.it.next() == Some('\n') => self.number += 1,
            _ => {}
        }
    }

    fn single_quoted(&mut self, c: char) {
        match c {
            '\'' => self.state = State::Plain,
            '\n' => {}
            c => self.line.chars.push((c, true)),
        }
    }

    fn double_quoted(&mut self, c: char) {
        match c {
            '"' => self.state = State::Plain,
            '\\' => self.escaped(),
            '\n' => {}
            c => self.line.chars.push((c, true)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file options of `text`, by name.
    fn file_values(text: &str) -> Vec<(String, String)> {
        parse_file(text)
            .unwrap()
            .into_iter()
            .map(|(option, value)| (option.name().to_string(), value))
            .collect()
    }

    #[test]
    fn debians_sample_file_with_its_continued_comment_reads_as_no_option() {
        // The end of /etc/perdition/perdition.conf as Debian ships it: a commented-out option
        // whose value goes on over continued lines, each of which starts with a quote.
        let sample = "#imap_capability IMAP4 IMAP4REV1 LITERAL+\n\
            \n\
            #managesieve_capability \\\n\
            \"\\\"IMPLEMENTATION\\\" \\\"perdition\\\"  \"\\\n\
            \"\\\"SIEVE\\\" \\\"comparator-i;octet \"\\\n\
            \"copy i\"\\\n\
            \"nclude \"\\\n\
            \"\\\"VERSION\\\" \\\"1.18\\\"\"\n\
            \n\
            # i|inetd_mode: \n\
            #inetd_mode\n";
        assert_eq!(file_values(sample), Vec::<(String, String)>::new());
        // Uncommented, the same lines are one value.
        let value = file_values(&sample.replace("#managesieve", "managesieve"));
        assert_eq!(
            value,
            [(
                "managesieve_capability".to_string(),
                "\"IMPLEMENTATION\" \"perdition\"  \"SIEVE\" \"comparator-i;octet copy include \
                 \"VERSION\" \"1.18\""
                    .to_string()
            )]
        );
    }

    #[test]
    fn quotes_escapes_and_comments_as_debians_perdition_reads_them() {
        // Each expected value is what perdition 2.2 logged (-d) for the same line.
        let file = "ok_line   Hello   world  # trailing comment\n\
            imap_capability \"IMAP4 \\\"x\\\" y\"z'a\\b' \\#q\n\
            pop_capability A.\\\nB.C\n\
            # comment \\\n\
            explicit_domain notread\n\
            domain_delimiter '#'\n\
            query_key \\u,\\D\\d\n\
            map_library_opt \"a\\\\b\\nc\" d\\\\e\n\
            lower_case 'it''s'   \"x\"'y'\n\
            strip_domain ab#cd\n\
            add_domain \"a  \" \n";
        let values = file_values(file);
        let get = |name: &str| {
            values
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("ok_line"), Some("Hello   world"));
        assert_eq!(get("imap_capability"), Some("IMAP4 \"x\" yza\\b #q"));
        assert_eq!(get("pop_capability"), Some("A.B.C"));
        assert_eq!(get("explicit_domain"), None);
        assert_eq!(get("domain_delimiter"), Some("#"));
        // An unquoted backslash is dropped: Perdition's users quote their query keys.
        assert_eq!(get("query_key"), Some("u,Dd"));
        assert_eq!(get("map_library_opt"), Some("a\\bnc d\\e"));
        assert_eq!(get("lower_case"), Some("its   xy"));
        assert_eq!(get("strip_domain"), Some("ab"));
        assert_eq!(get("add_domain"), Some("a  "));
        let e = parse_file("ok_line \"never closed\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("quote"), "{e}");
    }

    #[test]
    fn options_that_make_no_sense_in_a_file_are_passed_over() {
        assert_eq!(
            file_values("config_file /elsewhere.conf\nhelp\nl 110\n"),
            [("listen_port".to_string(), "110".to_string())]
        );
    }
}
