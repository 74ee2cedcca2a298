//! Placeholder until the managesieve client side lands (issue 3).

use crate::protocol::{ClientEvent, ClientSettings, ClientSide, LoginOutcome, LoginReply};

pub struct SieveClientSide;

impl SieveClientSide {
    pub fn new(_settings: ClientSettings) -> Self {
        SieveClientSide
    }
}

impl ClientSide for SieveClientSide {
    fn greeting(&mut self) -> Vec<u8> {
        unimplemented!()
    }
    fn receive(&mut self, _input: &[u8]) {}
    fn next_event(&mut self) -> ClientEvent {
        unimplemented!()
    }
    fn tls_established(&mut self) {}
    fn login_finished(&mut self, _outcome: &LoginOutcome) -> LoginReply {
        unimplemented!()
    }
    fn timeout_message(&self) -> Vec<u8> {
        unimplemented!()
    }
    fn shutdown_message(&self) -> Vec<u8> {
        unimplemented!()
    }
    fn take_unprocessed(&mut self) -> Vec<u8> {
        unimplemented!()
    }
}
