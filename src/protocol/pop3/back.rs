//! Placeholder until the pop3 server side lands (issue 3).

use crate::protocol::{Credentials, ServerEvent, ServerSettings, ServerSide};

pub struct Pop3ServerSide;

impl Pop3ServerSide {
    pub fn new(_creds: Credentials, _settings: ServerSettings) -> Self {
        Pop3ServerSide
    }
}

impl ServerSide for Pop3ServerSide {
    fn receive(&mut self, _input: &[u8]) {}
    fn next_event(&mut self) -> ServerEvent {
        unimplemented!()
    }
    fn tls_established(&mut self) {}
    fn take_unprocessed(&mut self) -> Vec<u8> {
        unimplemented!()
    }
}
