//! The values a metric's label may take, as enums: each value's text is written once, here, so
//! that a call site cannot misspell one (a typo would make a new time series that no dashboard
//! or alert looks at). The texts are what scrapers, dashboards and the packaging's alerts
//! match on: they never change.

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// An enum of label values: the type, its text per variant (`as_str`, `Display`) and its
/// encoding as a Prometheus label value.
macro_rules! label_values {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$variant_meta:meta])* $variant:ident => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
        pub enum $name {
            $( $(#[$variant_meta])* $variant, )+
        }

        impl $name {
            /// The label value as Prometheus shows it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                EncodeLabelValue::encode(&self.as_str(), encoder)
            }
        }
    };
}

label_values! {
    /// Why a connection was turned away before the greeting (`connections_refused`).
    pub enum RefusedReason {
        /// The listener's connection limit was reached.
        Limit => "limit",
        /// The guard has banned the client's address.
        Banned => "banned",
        /// New connections over the process-wide rate.
        Rate => "rate",
        /// Too many connections open from the client's address.
        PerAddress => "per_address",
        /// A balancer's health check tried to log in.
        HealthCheckLogin => "health_check_login",
        /// A PROXY header from an address not in `proxy_trusted`.
        ProxyUntrusted => "proxy_untrusted",
        /// A PROXY header that was malformed, or did not come in time.
        ProxyInvalid => "proxy_invalid",
    }
}

label_values! {
    /// What the brute-force guard decided (`guard_decisions`).
    pub enum GuardDecision {
        /// A client turned away, or a login refused, because its address is banned.
        Banned => "banned",
        /// A client turned away: new connections over the process-wide rate.
        Rate => "rate",
        /// A client turned away: too many connections open from its address.
        PerAddress => "per_address",
        /// A login waited for the user's earlier attempts to be decided.
        UserWait => "user_wait",
        /// A failure earned its address a ban.
        Ban => "ban",
        /// A login refused: as many under way as failures left before a ban.
        TooManyAtOnce => "too_many_at_once",
        /// A login delayed after earlier failures.
        Delay => "delay",
    }
}

label_values! {
    /// Why the guard turned a client away before the greeting: counted both as a refused
    /// connection and as a guard decision, under the same word.
    pub enum TurnedAway {
        Banned => "banned",
        Rate => "rate",
        PerAddress => "per_address",
    }
}

impl TurnedAway {
    /// The reason among the refused connections.
    pub fn reason(self) -> RefusedReason {
        match self {
            TurnedAway::Banned => RefusedReason::Banned,
            TurnedAway::Rate => RefusedReason::Rate,
            TurnedAway::PerAddress => RefusedReason::PerAddress,
        }
    }

    /// The decision among the guard's.
    pub fn decision(self) -> GuardDecision {
        match self {
            TurnedAway::Banned => GuardDecision::Banned,
            TurnedAway::Rate => GuardDecision::Rate,
            TurnedAway::PerAddress => GuardDecision::PerAddress,
        }
    }
}

label_values! {
    /// The result of a login (`logins`), after Dovecot's `login_aborted` reasons where one fits.
    pub enum LoginResult {
        Ok => "ok",
        AuthFailed => "auth_failed",
        Denied => "denied",
        NoServer => "no_server",
        LoginDisabled => "login_disabled",
        ProtocolFailure => "protocol_failure",
        ConnectFailed => "connect_failed",
        TooManyAtOnce => "too_many_at_once",
        OverSessionCap => "over_session_cap",
        RemoteFailure => "remote_failure",
    }
}

label_values! {
    /// Which side of the proxy a TLS handshake was with (`tls_handshakes`).
    pub enum HandshakeSide {
        Client => "client",
        Backend => "backend",
    }
}

label_values! {
    /// How a TLS handshake ended (`tls_handshakes`).
    pub enum HandshakeResult {
        Ok => "ok",
        Failed => "failed",
    }
}

label_values! {
    /// How an attempt to connect to a back end ended (`backend_connections`).
    pub enum ConnectResult {
        Ok => "ok",
        Failed => "failed",
    }
}

label_values! {
    /// Which way relayed bytes went (`relayed_bytes`).
    pub enum RelayDirection {
        FromClient => "from_client",
        ToClient => "to_client",
    }
}

label_values! {
    /// What a map lookup found (`map_lookups`).
    pub enum LookupResult {
        Found => "found",
        NotFound => "not_found",
        Denied => "denied",
        /// The map failed (the listener's own servers may have stood in).
        Error => "error",
    }
}

label_values! {
    /// Where a session is in its life (`sessions_current`, and the admin's session table).
    pub enum SessionState {
        /// Not logged in yet.
        Preauth => "preauth",
        /// Logged in, relaying.
        Proxying => "proxying",
    }
}

/// The session table (`GET /sessions`) shows the state by the same word.
impl serde::Serialize for SessionState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turned_away_counts_under_the_same_word_twice() {
        for t in [TurnedAway::Banned, TurnedAway::Rate, TurnedAway::PerAddress] {
            assert_eq!(t.as_str(), t.reason().as_str());
            assert_eq!(t.as_str(), t.decision().as_str());
        }
    }

    #[test]
    fn the_session_state_shows_as_its_label() {
        let json = serde_json::to_string(&SessionState::Proxying).unwrap();
        assert_eq!(json, "\"proxying\"");
        assert_eq!(SessionState::Preauth.to_string(), "preauth");
    }
}

label_values! {
    /// What a pool's server became.
    pub enum HealthState {
        Up => "up",
        Down => "down",
    }
}

label_values! {
    /// Which cap refused a session.
    pub enum SessionCap {
        User => "user",
        UserAddress => "user_address",
    }
}

label_values! {
    /// How an ACME order for a certificate ended (`acme_renewals`).
    pub enum RenewalResult {
        Success => "success",
        Failure => "failure",
    }
}
