//! One order (RFC 8555 section 7.4): the domains' challenges answered, the key made, the
//! certificate fetched.

use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, Order, OrderStatus,
    RetryPolicy,
};

use crate::config::{AcmeChallenge, AcmeConfig, KeyType};

use super::challenge::Challenges;
use super::{keys, AcmeError};

/// How long the CA may take to validate, and then to issue.
const VALIDATION_TIME: Duration = Duration::from_secs(90);

/// A certificate obtained: its chain and its key, both PEM.
pub struct Obtained {
    pub chain: String,
    pub key: String,
}

/// Order a certificate of `key_type` for the configured domains.
pub async fn obtain(
    account: &Account,
    config: &AcmeConfig,
    key_type: KeyType,
    challenges: &Challenges,
) -> Result<Obtained, AcmeError> {
    let domains = config.domain_names();
    let identifiers: Vec<Identifier> = domains.iter().cloned().map(Identifier::Dns).collect();
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    // The answers stay up until the order is settled.
    let _pending = answer_challenges(&mut order, config.challenge, challenges).await?;
    let retries = RetryPolicy::new().timeout(VALIDATION_TIME);
    let status = order.poll_ready(&retries).await?;
    if status != OrderStatus::Ready {
        return Err(AcmeError::Invalid(why_invalid(&mut order).await));
    }
    // An RSA key takes a while to find: not on a thread that serves sessions.
    let key = tokio::task::spawn_blocking(move || keys::new_key(key_type))
        .await
        .map_err(|e| AcmeError::Invalid(format!("key generation stopped: {e}")))??;
    order.finalize_csr(&keys::request(&key, &domains)?).await?;
    let chain = order.poll_certificate(&retries).await?;
    Ok(Obtained {
        chain,
        key: key.serialize_pem(),
    })
}

/// Answer the challenge of every authorization still pending, and tell the CA to check.
async fn answer_challenges(
    order: &mut Order,
    kind: AcmeChallenge,
    challenges: &Challenges,
) -> Result<Vec<super::challenge::Pending>, AcmeError> {
    let wanted = match kind {
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        AcmeChallenge::Http01 => ChallengeType::Http01,
    };
    let mut pending = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization?;
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            status => {
                return Err(AcmeError::Invalid(format!(
                    "{}: authorization {status:?}",
                    authorization.identifier()
                )))
            }
        }
        let domain = authorization.identifier().to_string();
        let mut challenge =
            authorization
                .challenge(wanted.clone())
                .ok_or_else(|| AcmeError::NoChallenge {
                    domain: domain.clone(),
                    kind,
                })?;
        let key_authorization = challenge.key_authorization();
        pending.push(challenges.answer(kind, &domain, &challenge.token, &key_authorization)?);
        challenge.set_ready().await?;
    }
    Ok(pending)
}

/// What the CA said of the failed validations, for the log line.
async fn why_invalid(order: &mut Order) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authorization)) = authorizations.next().await {
        let Ok(state) = authorization.refresh().await else {
            continue;
        };
        for challenge in &state.challenges {
            if let Some(problem) = &challenge.error {
                let detail = problem.detail.as_deref().unwrap_or("no detail");
                reasons.push(format!("{}: {detail}", state.identifier()));
            }
        }
    }
    if reasons.is_empty() {
        "the CA refused the order".into()
    } else {
        reasons.join("; ")
    }
}
