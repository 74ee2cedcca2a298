//! The ESMTP extensions offered to clients before they log in: the back end's own, learned
//! from its EHLO answer (as ManageSieve's capabilities are learned from its greeting), among
//! those a transparent relay carries; or the configured list. What depends on the connection
//! (STARTTLS, AUTH, XCLIENT) the front end adds itself.

use crate::protocol::Learned;

use super::reply::take_reply;

/// What passes through a relay untouched once the client has logged in.
const RELAYABLE: &[&str] = &[
    "SIZE",
    "PIPELINING",
    "8BITMIME",
    "ENHANCEDSTATUSCODES",
    "SMTPUTF8",
    "CHUNKING",
    "DSN",
];

/// Offered when nothing was configured or learned: what every submission server has.
const DEFAULT: &[&str] = &["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"];

/// What the proxy itself decides, per connection.
const OWN: &[&str] = &["STARTTLS", "AUTH", "XCLIENT"];

fn keyword(line: &str) -> &str {
    line.split_ascii_whitespace().next().unwrap_or_default()
}

fn is_one_of(line: &str, names: &[&str]) -> bool {
    names.iter().any(|n| keyword(line).eq_ignore_ascii_case(n))
}

/// The extension lines for an EHLO answer. A configured (or learned) list has one extension
/// per line, or per run of two spaces as Perdition separates capabilities (`SIZE 1000` keeps
/// its single space).
pub fn offered(configured: Option<&str>) -> Vec<String> {
    let Some(configured) = configured else {
        return DEFAULT.iter().map(|e| e.to_string()).collect();
    };
    configured
        .split(['\r', '\n'])
        .flat_map(|line| line.split("  "))
        .map(str::trim)
        .filter(|line| !line.is_empty() && !is_one_of(line, OWN))
        .map(str::to_string)
        .collect()
}

/// The relayable extensions of a back end's EHLO answer, one per line, once `buf` holds the
/// greeting and the EHLO answer (the capability probe sends EHLO after the greeting).
pub fn learn(buf: &[u8]) -> Learned {
    let greeting = match take_reply(buf) {
        Ok(Some((reply, used))) if reply.code == 220 => used,
        Ok(None) => return Learned::Incomplete,
        _ => return Learned::Done(None),
    };
    match take_reply(&buf[greeting..]) {
        Ok(Some((reply, _))) if reply.code == 250 => {
            let kept: Vec<&str> = reply
                .keywords()
                .iter()
                .map(String::as_str)
                .filter(|line| is_one_of(line, RELAYABLE))
                .collect();
            Learned::Done(Some(kept.join("\n")))
        }
        Ok(None) => Learned::Incomplete,
        _ => Learned::Done(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_back_ends_extensions_are_learned_among_the_relayable_ones() {
        let answer = b"220 mx ESMTP Postfix\r\n250-mx\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n\
                       250-VRFY\r\n250-ETRN\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n\
                       250-XCLIENT NAME ADDR\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n\
                       250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";
        assert_eq!(
            learn(answer),
            Learned::Done(Some(
                "PIPELINING\nSIZE 10240000\nENHANCEDSTATUSCODES\n8BITMIME\nDSN\nSMTPUTF8\nCHUNKING"
                    .into()
            ))
        );
        assert_eq!(learn(&answer[..40]), Learned::Incomplete);
        assert_eq!(learn(b"554 go away\r\n"), Learned::Done(None));
    }

    #[test]
    fn the_proxys_own_extensions_never_come_from_a_list() {
        assert_eq!(
            offered(Some("SIZE 1000  STARTTLS\nAUTH PLAIN\nDSN")),
            vec!["SIZE 1000", "DSN"]
        );
        assert_eq!(offered(None), DEFAULT);
    }
}
