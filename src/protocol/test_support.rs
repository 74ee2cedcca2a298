//! Helpers shared by the protocol machines' unit tests.

use super::{ClientAddress, ClientEvent, ClientSettings, ClientSide, Credentials, PreLoginLimits};

/// Settings with small bounds, STARTTLS offered and not yet active.
pub fn settings() -> ClientSettings {
    ClientSettings {
        capability: None,
        starttls_offered: true,
        tls_required: false,
        pass_non_utf8_names: false,
        tls_active: false,
        login_disabled: false,
        oauth: false,
        ok_line: None,
        greeting_host: "proxy.test".into(),
        product: "Portcullis".into(),
        limits: PreLoginLimits {
            max_line_length: 100,
            max_literal_size: 50,
            max_commands: 10,
            max_failed_logins: 2,
        },
    }
}

/// Feed bytes and collect every event until the machine needs input, or until an event that
/// hands control to the session (login, close, STARTTLS).
pub fn feed<M: ClientSide + ?Sized>(m: &mut M, bytes: &[u8]) -> Vec<ClientEvent> {
    m.receive(bytes);
    let mut events = Vec::new();
    loop {
        match m.next_event() {
            ClientEvent::NeedInput => return events,
            e @ (ClientEvent::Login(_) | ClientEvent::Close(_) | ClientEvent::StartTls(_)) => {
                events.push(e);
                return events;
            }
            e => events.push(e),
        }
    }
}

/// Everything the events would put on the wire, as text; other events as `<Debug>`.
pub fn text(events: &[ClientEvent]) -> String {
    events
        .iter()
        .map(|e| match e {
            ClientEvent::Send(b)
            | ClientEvent::Close(b)
            | ClientEvent::StartTls(b)
            | ClientEvent::LoginRefused { reply: b, .. } => String::from_utf8_lossy(b).into_owned(),
            other => format!("<{other:?}>"),
        })
        .collect()
}

/// The login event for these credentials.
pub fn creds(user: &str, pass: &str) -> ClientEvent {
    ClientEvent::Login(Credentials {
        user: user.into(),
        user_bytes: None,
        secret: pass.as_bytes().to_vec().into(),
        bearer: None,
    })
}

/// A reproducible stream of garbage (xorshift), for the never-panics tests of every machine.
pub struct Garbage {
    seed: u64,
}

impl Default for Garbage {
    fn default() -> Self {
        Garbage {
            seed: 0x2545_f491_4f6c_dd1d,
        }
    }
}

impl Garbage {
    fn next(&mut self) -> u64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed
    }

    /// Up to `max_len` bytes drawn from `alphabet`.
    pub fn bytes(&mut self, max_len: usize, alphabet: &[u8]) -> Vec<u8> {
        let len = (self.next() % max_len as u64) as usize;
        (0..len)
            .map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize])
            .collect()
    }
}

/// A client at 192.0.2.7:51000 that reached 198.51.100.1:143, as told to a back end.
pub fn client_address() -> ClientAddress {
    ClientAddress {
        peer: "192.0.2.7:51000".parse().unwrap(),
        local: "198.51.100.1:143".parse().unwrap(),
        session: "s1".into(),
        ttl: 5,
    }
}
