//! The user name on its way, as Perdition rewrites it: the name looked up in the map
//! (`servername_lookup`) and the name sent to the back end (`remote_login`) may each have the
//! domain stripped (`strip_domain`), a domain added (`add_domain` with `explicit_domain`), and
//! be lower-cased (`lower_case`); the lookup may use `query_key` formats instead of the name.

use serde::{Deserialize, Serialize};

use super::Connection;

/// The moments a name is used, after Perdition's states: `lookup` is `servername_lookup`,
/// `login` is `remote_login` (`local_authentication` has no meaning here).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Stages {
    #[default]
    None,
    /// Only for the map lookup.
    Lookup,
    /// Only for the back-end login.
    Login,
    /// Everywhere.
    All,
}

impl Stages {
    pub fn lookup(self) -> bool {
        matches!(self, Stages::Lookup | Stages::All)
    }

    pub fn login(self) -> bool {
        matches!(self, Stages::Login | Stages::All)
    }

    pub fn from_flags(lookup: bool, login: bool) -> Stages {
        match (lookup, login) {
            (true, true) => Stages::All,
            (true, false) => Stages::Lookup,
            (false, true) => Stages::Login,
            (false, false) => Stages::None,
        }
    }
}

/// The user-name settings of a listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct UserNames {
    /// Between the user and the domain (Perdition's `domain_delimiter`, `@`).
    pub domain_delimiter: String,
    /// Drop `<delimiter>domain` from the name.
    pub strip_domain: Stages,
    /// Append `<delimiter><explicit_domain>` to a name without a domain.
    pub add_domain: Stages,
    /// Without it, `add_domain` adds the reverse DNS name of the local address the client
    /// connected to, less its first `domain_strip_depth` labels (Perdition's hosting of
    /// several domains by address).
    pub explicit_domain: Option<String>,
    /// Perdition's `-A STATES,DEPTH`: default 1 (`mail.example.org` → `example.org`).
    pub domain_strip_depth: u32,
    /// Lower-case the name (the listener's `lower_case`).
    #[serde(skip)]
    pub lower_case: Stages,
    /// Keys to look up, tried in order until the map knows one: Perdition's `query_key`
    /// formats (`\U` name, `\u` user part, `\d` domain, `\D` delimiter, `\i`/`\I` client and
    /// local address, `\p`/`\P` their ports, `\\` a backslash). Empty: the name itself.
    pub query_key: Vec<String>,
}

impl Default for UserNames {
    fn default() -> Self {
        UserNames {
            domain_delimiter: "@".into(),
            strip_domain: Stages::None,
            add_domain: Stages::None,
            explicit_domain: None,
            domain_strip_depth: 1,
            lower_case: Stages::None,
            query_key: Vec::new(),
        }
    }
}

impl UserNames {
    /// `name` before and after its last delimiter (the domain is empty when there is none),
    /// as Perdition splits it.
    pub fn split<'a>(&self, name: &'a str) -> (&'a str, &'a str) {
        match name.rsplit_once(self.domain_delimiter.as_str()) {
            Some((user, domain)) if !self.domain_delimiter.is_empty() => (user, domain),
            _ => (name, ""),
        }
    }

    /// The name for one stage: domain stripped or added, then lower-cased, as configured.
    fn for_stage(&self, name: &str, strip: bool, add: bool, lower: bool) -> String {
        let mut out = if strip {
            self.split(name).0.to_string()
        } else {
            name.to_string()
        };
        // Perdition adds a domain only to a name without any delimiter.
        if add && !out.contains(self.domain_delimiter.as_str()) {
            if let Some(domain) = &self.explicit_domain {
                out.push_str(&self.domain_delimiter);
                out.push_str(domain);
            }
        }
        if lower {
            out = out.to_lowercase();
        }
        out
    }

    /// The name the back end is logged in with (`name` is the client's, or the one a map
    /// answered with under `username_from_map`).
    pub fn login_name(&self, name: &str) -> String {
        self.for_stage(
            name,
            self.strip_domain.login(),
            self.add_domain.login(),
            self.lower_case.login(),
        )
    }

    /// The keys to ask the map, in order.
    pub fn lookup_keys(&self, name: &str, connection: &Connection) -> Vec<String> {
        let name = self.for_stage(
            name,
            self.strip_domain.lookup(),
            self.add_domain.lookup(),
            self.lower_case.lookup(),
        );
        if self.query_key.is_empty() {
            return vec![name];
        }
        self.query_key
            .iter()
            .map(|format| self.expand(format, &name, connection))
            .collect()
    }

    fn expand(&self, format: &str, name: &str, connection: &Connection) -> String {
        let (user, domain) = self.split(name);
        let mut out = String::new();
        let mut chars = format.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('U') => out.push_str(name),
                Some('u') => out.push_str(user),
                Some('d') => out.push_str(domain),
                Some('D') => out.push_str(&self.domain_delimiter),
                Some('i') => out.push_str(&connection.peer.ip().to_canonical().to_string()),
                Some('I') => out.push_str(&connection.local.ip().to_canonical().to_string()),
                Some('p') => out.push_str(&connection.peer.port().to_string()),
                Some('P') => out.push_str(&connection.local.port().to_string()),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        }
        out
    }

    /// Problems `portcullis check` reports.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.domain_delimiter.is_empty() {
            problems.push("domain_delimiter is empty".to_string());
        }
        if self.query_key.iter().any(|f| f.is_empty()) {
            problems.push("query_key has an empty format".to_string());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Protocol;

    fn connection() -> Connection {
        let (peer, local) = (
            "192.0.2.7:51000".parse().unwrap(),
            "198.51.100.1:993".parse().unwrap(),
        );
        Connection::new(Protocol::Imap, peer, local, true, "t".into())
    }

    #[test]
    fn by_default_the_name_is_used_as_it_is() {
        let n = UserNames::default();
        assert_eq!(
            n.lookup_keys("Alice@Example.org", &connection()),
            ["Alice@Example.org"]
        );
        assert_eq!(n.login_name("Alice@Example.org"), "Alice@Example.org");
    }

    #[test]
    fn strip_add_and_lower_case_apply_only_where_asked() {
        let n = UserNames {
            strip_domain: Stages::Lookup,
            add_domain: Stages::Login,
            explicit_domain: Some("example.org".into()),
            lower_case: Stages::All,
            ..UserNames::default()
        };
        assert_eq!(n.lookup_keys("Alice@Other.net", &connection()), ["alice"]);
        assert_eq!(n.login_name("Alice"), "alice@example.org");
        assert_eq!(n.login_name("Alice@Other.net"), "alice@other.net");
    }

    #[test]
    fn query_key_formats() {
        let n = UserNames {
            query_key: vec![
                "\\u".into(),
                "\\D\\d".into(),
                "\\i-\\I:\\P".into(),
                "\\u\\da_domain".into(),
                "\\\\x".into(),
            ],
            ..UserNames::default()
        };
        assert_eq!(
            n.lookup_keys("bob@example.org", &connection()),
            [
                "bob",
                "@example.org",
                "192.0.2.7-198.51.100.1:993",
                "bobexample.orga_domain",
                "\\x"
            ]
        );
    }

    #[test]
    fn multi_character_delimiters() {
        let n = UserNames {
            domain_delimiter: "%%".into(),
            strip_domain: Stages::All,
            ..UserNames::default()
        };
        assert_eq!(n.login_name("joe%%site"), "joe");
    }

    #[test]
    fn add_domain_without_an_explicit_domain_is_no_problem_any_more() {
        // The domain then comes from the local address's reverse DNS (local_domain.rs).
        let n = UserNames {
            add_domain: Stages::All,
            ..UserNames::default()
        };
        assert!(n.problems().is_empty(), "{:?}", n.problems());
    }
}
