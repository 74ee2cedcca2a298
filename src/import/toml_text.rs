//! The native configuration as text an admin reads: keys in the order the reference lists
//! them, each value written by the `toml` crate (so that quoting is right), and `#` comments
//! above the lines that need one.

/// Comments are wrapped at this width.
const WIDTH: usize = 98;

/// A TOML document being written, top to bottom.
#[derive(Default)]
pub struct TomlText {
    text: String,
}

impl TomlText {
    /// A comment, wrapped; each of its lines starts with `# `.
    pub fn comment(&mut self, text: &str) {
        for line in wrap(text, WIDTH - 2) {
            self.text.push_str("# ");
            self.text.push_str(&line);
            self.text.push('\n');
        }
    }

    pub fn blank(&mut self) {
        self.text.push('\n');
    }

    /// `[name]` or `[[name]]` (give the brackets), after a blank line.
    pub fn table(&mut self, header: &str, notes: &[String]) {
        if !self.text.is_empty() {
            self.blank();
        }
        for note in notes {
            self.comment(note);
        }
        self.text.push_str(header);
        self.text.push('\n');
    }

    /// `key = value`, with its notes above it.
    pub fn key(&mut self, key: &str, value: impl Into<toml::Value>, notes: &[String]) {
        for note in notes {
            self.comment(note);
        }
        let value: toml::Value = value.into();
        self.text.push_str(&format!("{key} = {value}\n"));
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// `text` in lines of at most `width` characters, broken at spaces (a longer word keeps its
/// own line); line breaks in `text` are kept.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.lines() {
        let mut line = String::new();
        for word in paragraph.split(' ') {
            if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_by_toml_and_notes_go_above_their_key() {
        let mut t = TomlText::default();
        t.comment("made by a test");
        t.table("[[listener]]", &[]);
        t.key("protocol", "imap", &[]);
        t.key(
            "bind",
            vec!["0.0.0.0:993".to_string()],
            &["one\nnote".into()],
        );
        t.key("capability", "say \"hi\"\\", &[]);
        t.key("timeout", 60, &[]);
        let text = t.finish();
        assert_eq!(
            text,
            "# made by a test\n\n[[listener]]\nprotocol = \"imap\"\n# one\n# note\n\
             bind = [\"0.0.0.0:993\"]\ncapability = 'say \"hi\"\\'\ntimeout = 60\n"
        );
        let read: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(
            read["listener"][0]["capability"].as_str(),
            Some("say \"hi\"\\")
        );
    }

    #[test]
    fn long_notes_are_wrapped_at_spaces() {
        let long = "word ".repeat(40);
        let lines = wrap(long.trim(), 20);
        assert!(lines.iter().all(|l| l.len() <= 20), "{lines:?}");
        assert_eq!(lines.join(" "), long.trim());
        assert_eq!(wrap(&"x".repeat(30), 20), ["x".repeat(30)]);
    }
}
