//! Perdition's `add_domain` without `explicit_domain`: the domain is the reverse DNS name of
//! the local address the client connected to (one address per hosted domain), with its first
//! `strip_depth` labels dropped (`mail.example.org` → `example.org` at the default depth 1).
//! Each local address is resolved once and the answer kept, failures too: a lookup is bounded
//! by a timeout, and one that fails adds no domain and is reported once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

/// How long one reverse lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// Local addresses remembered at most (a host has a handful).
const MAX_ADDRESSES: usize = 1024;

#[derive(Default)]
pub struct LocalDomains {
    /// Local address → its domain, `None` when the lookup failed.
    known: Mutex<HashMap<IpAddr, Option<String>>>,
    /// Lookups that failed since last asked, for the log.
    failures: Mutex<Vec<String>>,
}

impl LocalDomains {
    /// The domain for a client that connected to `local`.
    pub async fn domain(&self, local: IpAddr, strip_depth: u32) -> Option<String> {
        let local = local.to_canonical();
        if let Some(known) = self.lock_known().get(&local) {
            return known.clone();
        }
        let looked_up = tokio::time::timeout(
            LOOKUP_TIMEOUT,
            tokio::task::spawn_blocking(move || dns_lookup::lookup_addr(&local)),
        )
        .await;
        let domain = match looked_up {
            Ok(Ok(Ok(name))) if name.parse::<IpAddr>().is_err() => {
                Ok(strip(name.trim_end_matches('.'), strip_depth))
            }
            Ok(Ok(Ok(_))) => Err("no reverse DNS name".to_string()),
            Ok(Ok(Err(e))) => Err(e.to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer in {} s", LOOKUP_TIMEOUT.as_secs())),
        };
        let domain = domain
            .map_err(|e| {
                let line = format!(
                    "add_domain: the reverse DNS lookup of the local address {local} failed \
                     ({e}): no domain is added for clients connecting to it"
                );
                self.failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(line);
            })
            .ok();
        let mut known = self.lock_known();
        if known.len() < MAX_ADDRESSES {
            known.insert(local, domain.clone());
        }
        domain
    }

    /// The failures since last asked, each once.
    pub fn take_failures(&self) -> Vec<String> {
        std::mem::take(&mut *self.failures.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn lock_known(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Option<String>>> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `name` without its first `depth` labels; never less than its last label.
fn strip(name: &str, depth: u32) -> String {
    let labels: Vec<&str> = name.split('.').collect();
    let drop = (depth as usize).min(labels.len().saturating_sub(1));
    labels[drop..].join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_labels_are_stripped_to_the_depth() {
        assert_eq!(strip("www.au.vergenet.net", 1), "au.vergenet.net");
        assert_eq!(strip("www.au.vergenet.net", 2), "vergenet.net");
        assert_eq!(strip("www.au.vergenet.net", 0), "www.au.vergenet.net");
        assert_eq!(strip("localhost", 1), "localhost");
    }

    #[tokio::test]
    async fn loopback_resolves_through_the_hosts_file_once() {
        let domains = LocalDomains::default();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let domain = domains.domain(local, 0).await;
        assert_eq!(
            domain.as_deref(),
            Some("localhost"),
            "/etc/hosts names 127.0.0.1"
        );
        assert_eq!(domains.lock_known().len(), 1);
    }
}
