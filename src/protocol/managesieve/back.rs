//! Placeholder until the managesieve server side lands (issue 3).

use crate::protocol::{Credentials, ServerEvent, ServerSettings, ServerSide};

pub struct SieveServerSide;

impl SieveServerSide {
    pub fn new(_creds: Credentials, _settings: ServerSettings) -> Self {
        SieveServerSide
    }
}

impl ServerSide for SieveServerSide {
    fn receive(&mut self, _input: &[u8]) {}
    fn next_event(&mut self) -> ServerEvent {
        unimplemented!()
    }
    fn tls_established(&mut self) {}
    fn take_unprocessed(&mut self) -> Vec<u8> {
        unimplemented!()
    }
}
