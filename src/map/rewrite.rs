//! The user name on its way, as Perdition rewrites it: the name looked up in the map
//! (`servername_lookup`) and the name sent to the back end (`remote_login`) may each have the
//! domain stripped (`strip_domain`), a domain added (`add_domain` with `explicit_domain`), and
//! be lower-cased (`lower_case`); the lookup may use `query_key` formats instead of the name.

use super::Connection;

pub use crate::config::users::{Stages, UserNames};

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
