//! The user-name settings of a listener (Perdition's `strip_domain`, `add_domain`,
//! `explicit_domain`, `domain_delimiter`, `lower_case` and `query_key`): plain data, checked
//! here; `map/rewrite.rs` applies them to a name.

use serde::{Deserialize, Serialize};

/// The moments a name is used, after Perdition's states: `lookup` is `servername_lookup`,
/// `login` is `remote_login` (`local_authentication` has no meaning here).
#[derive(
    Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema,
)]
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
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

/// When the user name is lower-cased, after Perdition's `lower_case` states.
pub type LowerCase = Stages;
