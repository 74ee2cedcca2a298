//! The user-name options: lower case, domain delimiter, strip and add domain, query keys, and
//! the stages (`servername_lookup`, `remote_login`) each applies to.

use super::super::users::{Stages, UserNames};
use super::error::PerditionError;
use super::options::{Given, PerditionOption};

/// Perdition's states (`servername_lookup`, `remote_login`, `local_authentication`, `all`).
pub fn stages(option: PerditionOption, value: Option<&str>) -> Result<Stages, PerditionError> {
    let Some(states) = value else {
        return Ok(Stages::None);
    };
    let (mut lookup, mut login) = (false, false);
    for state in states.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match state {
            "all" => (lookup, login) = (true, true),
            "servername_lookup" => lookup = true,
            "remote_login" => login = true,
            // Portcullis never authenticates locally.
            "local_authentication" => {}
            other => {
                return Err(PerditionError::UnknownState {
                    option: option.name(),
                    value: other.to_string(),
                })
            }
        }
    }
    Ok(Stages::from_flags(lookup, login))
}

/// The user-name options: domain delimiter, strip and add domain, query keys.
pub fn user_names(given: &Given) -> Result<UserNames, PerditionError> {
    let defaults = UserNames::default();
    // A trailing number is the strip depth of a domain derived from reverse DNS (with
    // explicit_domain it has no effect).
    let mut domain_strip_depth = defaults.domain_strip_depth;
    let add_domain = given.get(PerditionOption::AddDomain).map(|value| {
        let mut states = Vec::new();
        for part in value.split(',').map(str::trim) {
            match part.parse::<u32>() {
                Ok(depth) => domain_strip_depth = depth,
                Err(_) => states.push(part),
            }
        }
        states.join(",")
    });
    Ok(UserNames {
        domain_delimiter: given
            .get(PerditionOption::DomainDelimiter)
            .map(str::to_string)
            .unwrap_or(defaults.domain_delimiter),
        strip_domain: stages(
            PerditionOption::StripDomain,
            given.get(PerditionOption::StripDomain),
        )?,
        add_domain: stages(PerditionOption::AddDomain, add_domain.as_deref())?,
        explicit_domain: given
            .get(PerditionOption::ExplicitDomain)
            .filter(|d| !d.is_empty())
            .map(str::to_string),
        domain_strip_depth,
        lower_case: Stages::None,
        query_key: query_keys(given.get(PerditionOption::QueryKey)),
    })
}

/// `query_key`'s comma-separated formats.
fn query_keys(value: Option<&str>) -> Vec<String> {
    value
        .map(|formats| {
            formats
                .split(',')
                .map(str::to_string)
                .filter(|f| !f.is_empty())
                .collect()
        })
        .unwrap_or_default()
}
