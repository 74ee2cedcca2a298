//! Learning the back end's ManageSieve capabilities, so that clients (webmail filter editors)
//! are offered exactly the Sieve extensions the real server supports.
//!
//! The result is in the configured-capability format (one `"NAME" "value"` item per line, see
//! [`super::front::parse_configured_capability`]), so a learned list and an admin-written one
//! take the same path. Lines, not Perdition's double spaces, separate the items: a value may
//! itself contain two spaces. What the proxy itself decides is left out: STARTTLS
//! (per connection), SASL (the proxy offers PLAIN and LOGIN, which carry the password it
//! forwards) and
//! Dovecot's XCLIENT (meant for trusted proxies, not for clients).

use crate::protocol::line::{take_line, Line};

/// Longest capability line accepted from a back end.
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum Learned {
    /// The greeting is not complete yet.
    Incomplete,
    /// The capability list, or `None` if the greeting was not a ManageSieve one.
    Done(Option<String>),
}

/// Read a back end's greeting (the capability block and its `OK` line) from `buf`.
pub fn capability_from_greeting(buf: &[u8]) -> Learned {
    let mut items = Vec::new();
    let mut rest = buf;
    loop {
        let (line, consumed) = match take_line(rest, MAX_LINE) {
            Line::Partial => return Learned::Incomplete,
            Line::TooLong => return Learned::Done(None),
            Line::Complete { content, consumed } => (content, consumed),
        };
        rest = &rest[consumed..];
        let Ok(line) = std::str::from_utf8(line) else {
            return Learned::Done(None);
        };
        let upper = line.to_ascii_uppercase();
        if upper == "OK" || upper.starts_with("OK ") {
            items.push("\"SASL\" \"PLAIN LOGIN\"".to_string());
            return Learned::Done(Some(items.join("\n")));
        }
        if !line.starts_with('"') {
            return Learned::Done(None);
        }
        let name = line[1..]
            .split('"')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        if !matches!(name.as_str(), "STARTTLS" | "SASL" | "XCLIENT") {
            items.push(line.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOVECOT: &[u8] = b"\"IMPLEMENTATION\" \"Dovecot Pigeonhole\"\r\n\"SIEVE\" \"fileinto reject envelope\"\r\n\"NOTIFY\" \"mailto\"\r\n\"SASL\" \"PLAIN LOGIN\"\r\n\"STARTTLS\"\r\n\"XCLIENT\"\r\n\"VERSION\" \"1.0\"\r\nOK \"Dovecot (Debian) ready.\"\r\n";

    #[test]
    fn dovecot_greeting_gives_its_extensions_and_our_sasl() {
        assert_eq!(
            capability_from_greeting(DOVECOT),
            Learned::Done(Some(
                "\"IMPLEMENTATION\" \"Dovecot Pigeonhole\"\n\"SIEVE\" \"fileinto reject envelope\"\n\"NOTIFY\" \"mailto\"\n\"VERSION\" \"1.0\"\n\"SASL\" \"PLAIN LOGIN\"".into()
            ))
        );
    }

    #[test]
    fn partial_and_foreign_greetings() {
        assert_eq!(
            capability_from_greeting(&DOVECOT[..40]),
            Learned::Incomplete
        );
        assert_eq!(
            capability_from_greeting(b"* OK IMAP ready\r\n"),
            Learned::Done(None)
        );
        assert_eq!(
            capability_from_greeting(b"BYE \"busy\"\r\n"),
            Learned::Done(None)
        );
    }
}
