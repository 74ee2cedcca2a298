//! The ACME account: the stored one when it belongs to the configured directory, else a new
//! one, stored at once (its key is the only way back to it).

use instant_acme::{Account, AccountBuilder, NewAccount};

use crate::config::AcmeConfig;

use super::state::{StateDir, StoredAccount};
use super::AcmeError;

/// The problem type of a CA that no longer knows the account (a test CA restarted, an
/// account deactivated elsewhere).
const ACCOUNT_DOES_NOT_EXIST: &str = "urn:ietf:params:acme:error:accountDoesNotExist";

/// Whether `error` says that the CA does not know the account.
pub fn unknown_account(error: &instant_acme::Error) -> bool {
    matches!(error, instant_acme::Error::Api(problem)
        if problem.r#type.as_deref() == Some(ACCOUNT_DOES_NOT_EXIST))
}

/// A client of the directory, trusting `ca_file` when one is configured.
fn builder(config: &AcmeConfig) -> Result<AccountBuilder, instant_acme::Error> {
    match &config.ca_file {
        Some(path) => Account::builder_with_root(path),
        None => Account::builder(),
    }
}

/// The account to order with (reaching the directory either way).
pub async fn open(config: &AcmeConfig, state: &StateDir) -> Result<Account, AcmeError> {
    if let Some(stored) = state.account()? {
        if stored.directory == config.directory {
            let account = builder(config)?
                .from_credentials(stored.credentials)
                .await?;
            return Ok(account);
        }
    }
    let contact: Vec<&str> = config.contact.iter().map(String::as_str).collect();
    let new = NewAccount {
        contact: &contact,
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let (account, credentials) = builder(config)?
        .create(&new, config.directory.clone(), None)
        .await?;
    state.save_account(&StoredAccount {
        directory: config.directory.clone(),
        credentials,
    })?;
    Ok(account)
}
