//! A listener's routing: from the client's name to a [`Target`].
//!
//! In order: a name of the form `user<delimiter>host[:port]` names its server itself when
//! `client_server_specification` allows it; otherwise the map is asked with each lookup key
//! until it knows one; a user the map does not know, or a map that fails, goes to the
//! listener's own servers when it has some (Perdition's `outgoing_server` fallback); the
//! answer is completed with the listener's port and TLS mode, and the servers that refused a
//! connection lately are tried last.

use std::time::Instant;

use crate::config::BackendTls;
use crate::protocol::Secret;

use std::borrow::Cow;

use super::local_domain::LocalDomains;
use super::rewrite::{Stages, UserNames};
use super::route::{parse_route, Route};
use super::servers::{rotate_randomly, DeadServers};
use super::{Answer, Endpoint, Login, Map, MapError, Query, Target};

/// What completes a map's answer.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub port: u16,
    pub tls: BackendTls,
}

/// A back-end master user: `<user><separator><name>` logs in as `<user>` with `password`.
pub struct Master {
    pub name: String,
    pub password: Secret<Vec<u8>>,
    pub separator: String,
}

pub struct Router {
    pub names: UserNames,
    /// `None`: every user goes to `servers`.
    /// Shared with the next configuration when its map settings are the same (a reload
    /// keeps the cache and the connections).
    pub map: Option<std::sync::Arc<dyn Map>>,
    /// The listener's own servers: the only ones without a map, the fallback with one.
    pub servers: Vec<Endpoint>,
    /// Start at a random one of `servers` (Perdition mode), else at the first.
    pub random_first: bool,
    pub defaults: Defaults,
    /// Let a client name its server (`user@host:port`). Off by default: any client could
    /// make the proxy connect anywhere it can reach.
    pub client_server_specification: bool,
    /// Log in with the user name a map answer carries (Perdition's `-U`).
    pub username_from_map: bool,
    /// Log in as this master user once the map has checked the client's password.
    pub master: Option<Master>,
    /// Kept across reloads.
    pub dead: std::sync::Arc<DeadServers>,
    /// The local addresses' reverse-DNS domains, for `add_domain` without `explicit_domain`.
    pub local_domains: std::sync::Arc<LocalDomains>,
}

impl Router {
    pub async fn route(&self, login: &Login<'_>) -> Result<Target, MapError> {
        let name = login.user;
        let names = self.names_for(login.connection).await;
        let names = names.as_ref();
        // A client naming its own server never skips a map that checks passwords: the
        // service would never be asked.
        if self.client_server_specification && !self.map_checks_passwords() {
            if let Some(target) = self.client_named(names, name) {
                return Ok(target);
            }
        }
        let found = match &self.map {
            Some(map) => self.ask(map.as_ref(), names, login).await,
            None => Err(MapError::NotFound),
        };
        let mut target = match found {
            Ok(route) => self.target_of(&route, names, name),
            // A map's refusal is final; anything else may go to the listener's servers, but
            // never past a map that checks passwords: that would skip its checks.
            Err(denied @ MapError::Denied { .. }) => return Err(denied),
            Err(MapError::Unavailable(reason)) if self.map_checks_passwords() => {
                return Err(MapError::Unavailable(reason))
            }
            Err(e) if !self.servers.is_empty() => self.fallback(e, names, name),
            Err(e) => return Err(e),
        };
        self.dead.order(&mut target.endpoints, Instant::now());
        Ok(target)
    }

    /// Where the map's answer for `name` leads, and as whom.
    fn target_of(&self, route: &Route, names: &UserNames, name: &str) -> Target {
        let (user, password, map_user) = match &self.master {
            // Only a map that checked the password gets here with a master set. The master
            // user logs in as exactly the name the service approved: its Auth-User, else the
            // name it was asked about. No rewrite: stripping the domain of
            // `victim@attacker.example`, approved with the attacker's own password, would
            // open `victim`'s mailbox.
            Some(master) => {
                let user = route.user.clone().unwrap_or_else(|| name.to_string());
                (
                    format!("{user}{}{}", master.separator, master.name),
                    Some(master.password.clone()),
                    route.user.clone(),
                )
            }
            // Perdition's -U: the map's name, rewritten for the login like the client's.
            None => match (&route.user, self.username_from_map) {
                (Some(user), true) => (
                    names.login_name(user),
                    route.password.clone(),
                    Some(user.clone()),
                ),
                _ => (names.login_name(name), route.password.clone(), None),
            },
        };
        Target {
            endpoints: vec![self.endpoint(route)],
            user,
            password,
            map_user,
            fallback_reason: None,
            placement: route.placement.clone(),
        }
    }

    /// The listener's own servers, for a user the map does not know or a map that failed.
    fn fallback(&self, why: MapError, names: &UserNames, name: &str) -> Target {
        let mut servers = self.servers.clone();
        if self.random_first {
            rotate_randomly(&mut servers);
        }
        Target {
            endpoints: servers,
            user: names.login_name(name),
            password: None,
            map_user: None,
            fallback_reason: match why {
                MapError::Unavailable(reason) => Some(reason),
                _ => None,
            },
            placement: None,
        }
    }

    /// The listener's name rules, with the domain of the local address the client reached
    /// when `add_domain` has no `explicit_domain` (Perdition's reverse-DNS domains).
    async fn names_for(&self, connection: &super::Connection) -> Cow<'_, UserNames> {
        if self.names.add_domain == Stages::None || self.names.explicit_domain.is_some() {
            return Cow::Borrowed(&self.names);
        }
        let depth = self.names.domain_strip_depth;
        let domain = self
            .local_domains
            .domain(connection.local.ip(), depth)
            .await;
        Cow::Owned(UserNames {
            explicit_domain: domain,
            ..self.names.clone()
        })
    }

    fn map_checks_passwords(&self) -> bool {
        self.map.as_ref().is_some_and(|m| m.answers_from_password())
    }

    /// Each lookup key in turn, until the map knows one; the first failure ends the search.
    async fn ask(
        &self,
        map: &dyn Map,
        names: &UserNames,
        login: &Login<'_>,
    ) -> Result<Route, MapError> {
        for key in names.lookup_keys(login.user, login.connection) {
            let query = Query { key: &key, login };
            match map.lookup(&query).await {
                Ok(Answer::Route(route)) => return Ok(route),
                Ok(Answer::Text(value)) => {
                    return parse_route(&value, &names.domain_delimiter)
                        .map_err(|e| MapError::Unavailable(format!("{}: {e}", map.describe())))
                }
                Err(MapError::NotFound) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(MapError::NotFound)
    }

    /// `user<delimiter>host[:port]` from the client itself.
    fn client_named(&self, names: &UserNames, name: &str) -> Option<Target> {
        let (_, server) = names.split(name);
        if server.is_empty() {
            return None;
        }
        let route = parse_route(name, &names.domain_delimiter).ok()?;
        let user = names.login_name(route.user.as_deref()?);
        Some(Target {
            endpoints: vec![self.endpoint(&route)],
            user,
            password: None,
            map_user: None,
            fallback_reason: None,
            placement: None,
        })
    }

    /// Where `route` leads, completed with the listener's port and TLS.
    pub fn endpoint(&self, route: &Route) -> Endpoint {
        Endpoint {
            host: route.host.clone(),
            port: route.port.unwrap_or(self.defaults.port),
            tls: self.defaults.tls,
            tls_name: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::{Connection, LookupFuture};
    use crate::protocol::Protocol;

    /// A map that knows `alice` and fails for `broken`.
    struct Fixed;

    impl Map for Fixed {
        fn lookup<'a>(&'a self, query: &'a Query<'a>) -> LookupFuture<'a> {
            let answer = match query.key {
                "alice" => Ok(Answer::Text("10.0.0.1".to_string())),
                "carol" => Ok(Answer::Text("carl@10.0.0.3:1143".to_string())),
                "bad" => Ok(Answer::Text("no server here:x".to_string())),
                "broken" => Err(MapError::Unavailable("down".into())),
                _ => Err(MapError::NotFound),
            };
            Box::pin(async move { answer })
        }

        fn describe(&self) -> String {
            "fixed".into()
        }
    }

    /// A map that checks passwords (nginx's auth_http) and refuses everyone.
    struct RefusesEveryone;

    impl Map for RefusesEveryone {
        fn lookup<'a>(&'a self, _: &'a Query<'a>) -> LookupFuture<'a> {
            Box::pin(async {
                Err(MapError::Denied {
                    message: "Account disabled".into(),
                    retry: true,
                })
            })
        }

        fn describe(&self) -> String {
            "refuses everyone".into()
        }

        fn answers_from_password(&self) -> bool {
            true
        }
    }

    fn endpoint(host: &str, port: u16) -> Endpoint {
        Endpoint {
            host: host.into(),
            port,
            tls: BackendTls::None,
            tls_name: None,
        }
    }

    fn router(servers: Vec<Endpoint>) -> Router {
        Router {
            names: UserNames::default(),
            map: Some(std::sync::Arc::new(Fixed)),
            servers,
            random_first: false,
            defaults: Defaults {
                port: 143,
                tls: BackendTls::None,
            },
            client_server_specification: false,
            username_from_map: false,
            master: None,
            dead: Default::default(),
            local_domains: Default::default(),
        }
    }

    fn connection() -> Connection {
        let (peer, local) = (
            "192.0.2.7:51000".parse().unwrap(),
            "198.51.100.1:143".parse().unwrap(),
        );
        Connection::new(Protocol::Imap, peer, local, false, "t".into())
    }

    async fn route(r: &Router, name: &str) -> Result<Target, MapError> {
        let password = Secret::new(b"pw".to_vec());
        let connection = connection();
        let login = Login {
            user: name,
            user_bytes: None,
            password: &password,
            attempt: 1,
            connection: &connection,
        };
        r.route(&login).await
    }

    #[tokio::test]
    async fn the_map_decides_and_the_listener_completes() {
        let r = router(vec![]);
        let t = route(&r, "alice").await.unwrap();
        assert_eq!(t.endpoints, [endpoint("10.0.0.1", 143)]);
        assert_eq!(t.user, "alice");
        let t = route(&r, "carol").await.unwrap();
        assert_eq!(t.endpoints, [endpoint("10.0.0.3", 1143)]);
        assert_eq!(
            t.user, "carol",
            "the map's user only with username_from_map"
        );
        assert_eq!(route(&r, "dave").await, Err(MapError::NotFound));
        assert!(matches!(
            route(&r, "broken").await,
            Err(MapError::Unavailable(_))
        ));
        assert!(matches!(
            route(&r, "bad").await,
            Err(MapError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn username_from_map() {
        let mut r = router(vec![]);
        r.username_from_map = true;
        assert_eq!(route(&r, "carol").await.unwrap().user, "carl");
        assert_eq!(route(&r, "alice").await.unwrap().user, "alice");
    }

    #[tokio::test]
    async fn unknown_users_and_failing_maps_fall_back_to_the_listeners_servers() {
        let r = router(vec![endpoint("10.9.9.9", 143), endpoint("10.9.9.8", 143)]);
        for name in ["dave", "broken"] {
            let t = route(&r, name).await.unwrap();
            assert_eq!(t.endpoints.len(), 2);
            assert_eq!(t.endpoints[0].host, "10.9.9.9");
        }
        // A server that came from the map does not fall back.
        assert_eq!(route(&r, "alice").await.unwrap().endpoints.len(), 1);
    }

    #[tokio::test]
    async fn dead_servers_go_last() {
        let r = router(vec![endpoint("10.9.9.9", 143), endpoint("10.9.9.8", 143)]);
        r.dead
            .connect_failed(&endpoint("10.9.9.9", 143), Instant::now());
        let t = route(&r, "dave").await.unwrap();
        assert_eq!(t.endpoints[0].host, "10.9.9.8");
    }

    #[tokio::test]
    async fn query_keys_are_tried_in_order() {
        let mut r = router(vec![]);
        r.names.query_key = vec!["\\u".into(), "\\d".into()];
        // "x@alice": user part "x" unknown, domain "alice" known.
        let t = route(&r, "x@alice").await.unwrap();
        assert_eq!(t.endpoints, [endpoint("10.0.0.1", 143)]);
        assert_eq!(t.user, "x@alice");
    }

    #[tokio::test]
    async fn clients_name_their_server_only_when_allowed() {
        let mut r = router(vec![]);
        assert_eq!(
            route(&r, "henry@10.0.0.7:110").await,
            Err(MapError::NotFound)
        );
        r.client_server_specification = true;
        let t = route(&r, "henry@10.0.0.7:110").await.unwrap();
        assert_eq!(t.endpoints, [endpoint("10.0.0.7", 110)]);
        assert_eq!(t.user, "henry");
        r.names.lower_case = Stages::All;
        assert_eq!(route(&r, "Henry@h").await.unwrap().user, "henry");
    }

    #[tokio::test]
    async fn a_client_naming_its_server_never_skips_a_map_that_checks_passwords() {
        let mut r = router(vec![]);
        r.map = Some(std::sync::Arc::new(RefusesEveryone));
        r.client_server_specification = true;
        assert_eq!(
            route(&r, "henry@10.0.0.7:110").await,
            Err(MapError::Denied {
                message: "Account disabled".into(),
                retry: true,
            })
        );
    }

    #[tokio::test]
    async fn a_master_user_logs_in_as_the_name_the_map_approved_unrewritten() {
        let mut r = router(vec![]);
        r.names.strip_domain = Stages::All;
        r.names.lower_case = Stages::All;
        r.master = Some(Master {
            name: "m".into(),
            password: Secret::new(b"mpw".to_vec()),
            separator: "*".into(),
        });
        // Looked up as "alice" (lookup stage), but logs in unchanged.
        let t = route(&r, "Alice@Attacker.example").await.unwrap();
        assert_eq!(t.user, "Alice@Attacker.example*m");
        let t = route(&r, "carol").await.unwrap();
        assert_eq!(t.user, "carl*m", "the map's user, as it gave it");
    }
}
