//! What the process counts, for `GET /metrics` (Prometheus text format, `prometheus-client`).
//! Names follow Prometheus' conventions (one prefix, base units, `_total` counters) and never
//! carry a user or a client address as a label: a label per client would make every
//! attacker a new time series.

mod labels;
mod readings;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::protocol::{LoginOutcome, Refusal};

pub use labels::{
    ConnectResult, GuardDecision, HandshakeResult, HandshakeSide, HealthState, LoginResult,
    LookupResult, RefusedReason, RelayDirection, RenewalResult, SessionCap, SessionState,
    TurnedAway,
};
pub use readings::Readings;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: String,
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub listener: String,
    pub reason: RefusedReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub protocol: &'static str,
    pub state: SessionState,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub protocol: &'static str,
    pub result: LoginResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    pub protocol: &'static str,
}

/// One back end of a listener, as its sessions connect to it (`host:port`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub listener: String,
    pub backend: String,
    pub result: ConnectResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MapLabels {
    pub map: &'static str,
    pub result: LookupResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MapKindLabels {
    pub map: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    pub side: HandshakeSide,
    pub result: HandshakeResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    pub protocol: &'static str,
    pub direction: RelayDirection,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub decision: GuardDecision,
}

/// One server of a listener's pool.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolServerLabels {
    pub listener: String,
    pub server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolChangeLabels {
    pub listener: String,
    pub server: String,
    pub to: HealthState,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CapLabels {
    pub protocol: &'static str,
    pub limit: SessionCap,
}

/// One certificate ACME obtained: a domain it is for, and its key type.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AcmeCertificateLabels {
    pub domain: String,
    pub key_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RenewalLabels {
    pub result: RenewalResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latencies from a millisecond to half a minute.
fn latency() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

/// Every figure the process keeps; cheap to bump (an atomic add), encoded on demand.
pub struct Metrics {
    registry: Registry,
    pub accepted: Family<ListenerLabels, Counter>,
    pub refused: Family<RefusalLabels, Counter>,
    pub sessions: Family<StateLabels, Gauge>,
    pub logins: Family<ResultLabels, Counter>,
    pub backend_connect_errors: Family<ProtocolLabels, Counter>,
    pub backend_connections: Family<BackendLabels, Counter>,
    pub backend_connect: Histograms<ProtocolLabels>,
    pub backend_login: Histograms<ProtocolLabels>,
    pub map_lookups: Family<MapLabels, Counter>,
    pub map_lookup: Histograms<MapKindLabels>,
    pub tls_handshakes: Family<HandshakeLabels, Counter>,
    pub bytes: Family<BytesLabels, Counter>,
    pub guard: Family<DecisionLabels, Counter>,
    pub pool_up: Family<PoolServerLabels, Gauge>,
    pub pool_sessions: Family<PoolServerLabels, Gauge>,
    pub pool_users: Family<PoolServerLabels, Gauge>,
    pub pool_changes: Family<PoolChangeLabels, Counter>,
    pub over_cap: Family<CapLabels, Counter>,
    /// `connection_limit` (0: none), and the connections holding one of its slots now.
    pub connection_limit: Gauge,
    pub connections_open: Gauge,
    pub reload_failures: Counter,
    /// 1 while the configuration last read (at start or by a reload) is the one in force.
    pub reload_successful: Gauge,
    pub reload_success_time: Gauge,
    /// What is read when Prometheus scrapes (certificates, the log's drops).
    pub readings: Arc<Readings>,
    /// ACME: when each served certificate expires (Unix time).
    pub acme_expiry: Family<AcmeCertificateLabels, Gauge>,
    pub acme_renewals: Family<RenewalLabels, Counter>,
    /// ACME: the last failed and the last successful order (Unix time; 0: none yet).
    pub acme_last_error: Gauge,
    pub acme_last_success: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("portcullis");
        let histograms = || Histograms::new_with_constructor(latency as fn() -> Histogram);
        let metrics = Metrics {
            accepted: Family::default(),
            refused: Family::default(),
            sessions: Family::default(),
            logins: Family::default(),
            backend_connect_errors: Family::default(),
            backend_connections: Family::default(),
            backend_connect: histograms(),
            backend_login: histograms(),
            map_lookups: Family::default(),
            map_lookup: Histograms::new_with_constructor(latency as fn() -> Histogram),
            tls_handshakes: Family::default(),
            bytes: Family::default(),
            guard: Family::default(),
            pool_up: Family::default(),
            pool_sessions: Family::default(),
            pool_users: Family::default(),
            pool_changes: Family::default(),
            over_cap: Family::default(),
            connection_limit: Gauge::default(),
            connections_open: Gauge::default(),
            reload_failures: Counter::default(),
            reload_successful: Gauge::default(),
            reload_success_time: Gauge::default(),
            readings: Arc::default(),
            acme_expiry: Family::default(),
            acme_renewals: Family::default(),
            acme_last_error: Gauge::default(),
            acme_last_success: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "build",
            "Portcullis' version",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        metrics.register_clients(&mut registry);
        metrics.register_backends(&mut registry);
        metrics.register_services(&mut registry);
        metrics.register_pools(&mut registry);
        metrics.register_process(&mut registry);
        metrics.register_acme(&mut registry);
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The client side: connections, sessions, logins.
    fn register_clients(&self, registry: &mut Registry) {
        registry.register(
            "connections_accepted",
            "Connections accepted, by listener",
            self.accepted.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections turned away before the greeting, by listener and reason",
            self.refused.clone(),
        );
        registry.register(
            "sessions_current",
            "Sessions open now, by protocol and state (preauth, proxying)",
            self.sessions.clone(),
        );
        registry.register(
            "logins",
            "Login attempts, by protocol and result",
            self.logins.clone(),
        );
    }

    /// The back ends: connections and logins.
    fn register_backends(&self, registry: &mut Registry) {
        registry.register(
            "backend_connect_errors",
            "Back-end connections that could not be made",
            self.backend_connect_errors.clone(),
        );
        registry.register(
            "backend_connections",
            "Connections to a back end attempted, by listener, back end (host:port) and result",
            self.backend_connections.clone(),
        );
        registry.register(
            "backend_connect_duration_seconds",
            "Time to connect to a back end (TCP, and TLS when it is used)",
            self.backend_connect.clone(),
        );
        registry.register(
            "backend_login_duration_seconds",
            "Time from connected to the back end's answer to the login",
            self.backend_login.clone(),
        );
    }

    /// The maps, TLS, the relay and the guard.
    fn register_services(&self, registry: &mut Registry) {
        registry.register(
            "map_lookups",
            "User lookups in a map, by map kind and result",
            self.map_lookups.clone(),
        );
        registry.register(
            "map_lookup_duration_seconds",
            "Time a map lookup took",
            self.map_lookup.clone(),
        );
        registry.register(
            "tls_handshakes",
            "TLS handshakes, by side (client, backend) and result",
            self.tls_handshakes.clone(),
        );
        registry.register(
            "relayed_bytes",
            "Bytes relayed after login, by protocol and direction",
            self.bytes.clone(),
        );
        registry.register(
            "guard_decisions",
            "What the brute-force guard decided, by decision",
            self.guard.clone(),
        );
    }

    /// The pools' servers and the session caps.
    fn register_pools(&self, registry: &mut Registry) {
        registry.register(
            "pool_server_up",
            "Whether a pool's server is up (1) or down (0), as this instance sees it",
            self.pool_up.clone(),
        );
        registry.register(
            "pool_server_sessions",
            "Logged-in sessions of this instance on a pool's server",
            self.pool_sessions.clone(),
        );
        registry.register(
            "pool_server_users",
            "Users with sessions of this instance on a pool's server",
            self.pool_users.clone(),
        );
        registry.register(
            "pool_health_changes",
            "A pool's server went down or came up, by what it became",
            self.pool_changes.clone(),
        );
        registry.register(
            "sessions_over_cap",
            "Logins refused for a user's sessions cap, by protocol and cap",
            self.over_cap.clone(),
        );
    }

    /// The process: its limit, its configuration, and what is read at scrape time.
    fn register_process(&self, registry: &mut Registry) {
        registry.register(
            "connection_limit",
            "The configured connection_limit for the whole process (0: none)",
            self.connection_limit.clone(),
        );
        registry.register(
            "connections_open",
            "Client connections open now, each holding a slot under connection_limit",
            self.connections_open.clone(),
        );
        registry.register(
            "reload_failures",
            "Reloads that failed (the running configuration stayed)",
            self.reload_failures.clone(),
        );
        registry.register(
            "config_last_reload_successful",
            "Whether the last reload succeeded (1) or failed (0); 1 from the start",
            self.reload_successful.clone(),
        );
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "When the configuration in force was read (at start or by a reload), Unix seconds",
            self.reload_success_time.clone(),
        );
        registry.register_collector(Box::new(self.readings.clone()));
    }

    /// The configuration read at start or by a reload is in force now (`ok`), or the reload
    /// failed and the one before stays.
    pub fn configured(&self, ok: bool) {
        if ok {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            self.reload_success_time.set(now);
        } else {
            self.reload_failures.inc();
        }
        self.reload_successful.set(i64::from(ok));
    }

    /// A connection to `backend` was made (`ok`) or could not be.
    pub fn backend_connection(&self, listener: &str, backend: String, ok: bool) {
        let result = if ok {
            ConnectResult::Ok
        } else {
            ConnectResult::Failed
        };
        self.backend_connections
            .get_or_create(&BackendLabels {
                listener: listener.to_string(),
                backend,
                result,
            })
            .inc();
    }

    /// The certificates ACME obtains (shown when `[acme]` is configured; zero otherwise).
    fn register_acme(&self, registry: &mut Registry) {
        registry.register(
            "acme_certificate_expiry_timestamp_seconds",
            "When the certificate ACME obtained for a domain expires (Unix time), by key type",
            self.acme_expiry.clone(),
        );
        registry.register(
            "acme_renewals",
            "ACME orders for a certificate, by result",
            self.acme_renewals.clone(),
        );
        registry.register(
            "acme_last_error_timestamp_seconds",
            "When an ACME order last failed (Unix time; 0 if none has)",
            self.acme_last_error.clone(),
        );
        registry.register(
            "acme_last_success_timestamp_seconds",
            "When an ACME order last succeeded (Unix time; 0 if none has)",
            self.acme_last_success.clone(),
        );
    }

    /// An ACME order ended at `at` (Unix time).
    pub fn acme_renewal(&self, result: RenewalResult, at: i64) {
        self.acme_renewals
            .get_or_create(&RenewalLabels { result })
            .inc();
        match result {
            RenewalResult::Success => self.acme_last_success.set(at),
            RenewalResult::Failure => self.acme_last_error.set(at),
        };
    }

    /// The text a Prometheus server scrapes.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    pub fn refused(&self, listener: &str, reason: RefusedReason) {
        self.refused
            .get_or_create(&RefusalLabels {
                listener: listener.to_string(),
                reason,
            })
            .inc();
    }

    pub fn login(&self, protocol: &'static str, outcome: &LoginOutcome) {
        self.logins
            .get_or_create(&ResultLabels {
                protocol,
                result: login_result(outcome),
            })
            .inc();
    }

    pub fn handshake(&self, side: HandshakeSide, ok: bool) {
        let result = if ok {
            HandshakeResult::Ok
        } else {
            HandshakeResult::Failed
        };
        self.tls_handshakes
            .get_or_create(&HandshakeLabels { side, result })
            .inc();
    }

    pub fn guard(&self, decision: GuardDecision) {
        self.guard.get_or_create(&DecisionLabels { decision }).inc();
    }

    pub fn relayed(&self, protocol: &'static str, from_client: u64, to_client: u64) {
        let directions = [
            (RelayDirection::FromClient, from_client),
            (RelayDirection::ToClient, to_client),
        ];
        for (direction, n) in directions {
            self.bytes
                .get_or_create(&BytesLabels {
                    protocol,
                    direction,
                })
                .inc_by(n);
        }
    }

    pub fn map_lookup(&self, map: &'static str, result: LookupResult, took: Duration) {
        self.map_lookups
            .get_or_create(&MapLabels { map, result })
            .inc();
        self.map_lookup
            .get_or_create(&MapKindLabels { map })
            .observe(took.as_secs_f64());
    }

    /// The gauge of sessions in `state`.
    pub fn sessions_in(&self, protocol: &'static str, state: SessionState) -> Gauge {
        self.sessions
            .get_or_create_owned(&StateLabels { protocol, state })
    }
}

/// The result label of a login, after Dovecot's `login_aborted` reasons where one fits.
pub fn login_result(outcome: &LoginOutcome) -> LoginResult {
    use crate::protocol::Failure;
    match outcome {
        LoginOutcome::Accepted { .. } => LoginResult::Ok,
        LoginOutcome::Rejected { .. } => LoginResult::AuthFailed,
        LoginOutcome::Denied { .. } => LoginResult::Denied,
        LoginOutcome::Refused(Refusal::NoServer) => LoginResult::NoServer,
        LoginOutcome::Refused(Refusal::LoginDisabled) => LoginResult::LoginDisabled,
        LoginOutcome::Refused(Refusal::ForbiddenCharacters) => LoginResult::ProtocolFailure,
        LoginOutcome::Failed {
            failure: Failure::NoConnection,
            ..
        } => LoginResult::ConnectFailed,
        LoginOutcome::Failed {
            failure: Failure::TooManyAtOnce,
            ..
        } => LoginResult::TooManyAtOnce,
        LoginOutcome::Failed {
            failure: Failure::OverSessionCap,
            ..
        } => LoginResult::OverSessionCap,
        LoginOutcome::Failed { .. } => LoginResult::RemoteFailure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_logins_show_in_the_text_without_users_or_addresses() {
        let m = Metrics::new();
        m.login("imap", &LoginOutcome::Rejected { text: "no".into() });
        m.refused("0.0.0.0:993", RefusedReason::Banned);
        m.sessions_in("imap", SessionState::Proxying).inc();
        let text = m.encode();
        assert!(
            text.contains("portcullis_logins_total{protocol=\"imap\",result=\"auth_failed\"} 1"),
            "{text}"
        );
        assert!(text.contains(
            "portcullis_connections_refused_total{listener=\"0.0.0.0:993\",reason=\"banned\"} 1"
        ));
        assert!(
            text.contains("portcullis_sessions_current{protocol=\"imap\",state=\"proxying\"} 1")
        );
        assert!(text.contains("portcullis_build_info{version=\""));
    }

    #[test]
    fn enum_labels_scrape_as_their_words() {
        let m = Metrics::new();
        m.handshake(HandshakeSide::Backend, false);
        m.relayed("pop3", 3, 4);
        m.guard(GuardDecision::TooManyAtOnce);
        m.map_lookup("popmap", LookupResult::NotFound, Duration::ZERO);
        let text = m.encode();
        for line in [
            "portcullis_tls_handshakes_total{side=\"backend\",result=\"failed\"} 1",
            "portcullis_relayed_bytes_total{protocol=\"pop3\",direction=\"from_client\"} 3",
            "portcullis_relayed_bytes_total{protocol=\"pop3\",direction=\"to_client\"} 4",
            "portcullis_guard_decisions_total{decision=\"too_many_at_once\"} 1",
            "portcullis_map_lookups_total{map=\"popmap\",result=\"not_found\"} 1",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn back_end_connections_show_by_listener_back_end_and_result() {
        let m = Metrics::new();
        m.backend_connection("127.0.0.1:143", "10.0.0.3:143".into(), true);
        m.backend_connection("127.0.0.1:143", "10.0.0.4:143".into(), false);
        m.backend_connection("127.0.0.1:143", "10.0.0.4:143".into(), false);
        let text = m.encode();
        for line in [
            "# TYPE portcullis_backend_connections counter",
            "portcullis_backend_connections_total{listener=\"127.0.0.1:143\",\
             backend=\"10.0.0.3:143\",result=\"ok\"} 1",
            "portcullis_backend_connections_total{listener=\"127.0.0.1:143\",\
             backend=\"10.0.0.4:143\",result=\"failed\"} 2",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn a_failed_reload_shows_until_one_succeeds() {
        let m = Metrics::new();
        m.configured(true);
        let started = sample(
            &m.encode(),
            "portcullis_config_last_reload_success_timestamp_seconds",
        );
        assert!(started > 1.7e9, "a Unix time: {started}");
        m.configured(false);
        let text = m.encode();
        assert_eq!(
            sample(&text, "portcullis_config_last_reload_successful"),
            0.0
        );
        assert_eq!(sample(&text, "portcullis_reload_failures_total"), 1.0);
        assert_eq!(
            sample(
                &text,
                "portcullis_config_last_reload_success_timestamp_seconds"
            ),
            started,
            "a failed reload is not a success"
        );
        m.configured(true);
        let text = m.encode();
        assert_eq!(
            sample(&text, "portcullis_config_last_reload_successful"),
            1.0
        );
        assert_eq!(sample(&text, "portcullis_reload_failures_total"), 1.0);
    }

    #[test]
    fn the_limit_and_the_log_drops_show_as_gauge_and_counter() {
        let m = Metrics::new();
        m.connection_limit.set(500);
        m.connections_open.inc();
        let dropped = Counter::default();
        m.readings.set_log_lines_dropped(dropped.clone());
        dropped.inc_by(7);
        let text = m.encode();
        for line in [
            "# TYPE portcullis_connection_limit gauge",
            "portcullis_connection_limit 500",
            "portcullis_connections_open 1",
            "# TYPE portcullis_log_lines_dropped counter",
            "portcullis_log_lines_dropped_total 7",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    /// A listener's certificates, as a renewal would change them under it.
    struct Renewed(std::sync::Mutex<i64>);

    impl crate::certificates::ServedCertificates for Renewed {
        fn served(&self) -> Vec<crate::certificates::Served> {
            let not_after = *self.0.lock().unwrap();
            let served = |key| crate::certificates::Served {
                name: "imap.example.org".into(),
                key,
                not_after,
            };
            // An older RSA pair for the same name: the sooner expiry shows.
            let mut older = served("rsa");
            older.not_after -= 100;
            vec![served("ecdsa"), served("rsa"), older]
        }
    }

    #[test]
    fn certificates_are_read_at_each_scrape() {
        let m = Metrics::new();
        let listener = Arc::new(Renewed(std::sync::Mutex::new(1_800_000_000)));
        m.readings
            .set_certificates(vec![("0.0.0.0:993".into(), listener.clone())]);
        let name = "portcullis_certificate_expiry_timestamp_seconds";
        let ecdsa =
            format!("{name}{{listener=\"0.0.0.0:993\",name=\"imap.example.org\",key=\"ecdsa\"}}");
        let rsa = ecdsa.replace("ecdsa", "rsa");
        let text = m.encode();
        assert!(text.contains(&format!("# TYPE {name} gauge")), "{text}");
        assert_eq!(sample(&text, &ecdsa), 1_800_000_000.0, "{text}");
        assert_eq!(sample(&text, &rsa), 1_799_999_900.0, "{text}");
        *listener.0.lock().unwrap() = 1_900_000_000;
        assert_eq!(sample(&m.encode(), &ecdsa), 1_900_000_000.0);
        m.readings.set_certificates(Vec::new());
        assert!(
            !m.encode().contains(&ecdsa),
            "a listener gone shows nothing"
        );
    }

    /// The value of the sample `name_and_labels` (exactly) in `text`; NaN when absent.
    fn sample(text: &str, name_and_labels: &str) -> f64 {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name_and_labels)?
                    .strip_prefix(' ')?
                    .parse()
                    .ok()
            })
            .unwrap_or(f64::NAN)
    }
}
