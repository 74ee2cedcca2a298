//! Placeholder until the pop3 client side lands (issue 3).

use crate::protocol::{ClientEvent, ClientSettings, ClientSide, LoginOutcome, LoginReply};

pub struct Pop3ClientSide;

impl Pop3ClientSide {
    pub fn new(_settings: ClientSettings) -> Self {
        Pop3ClientSide
    }
}

impl ClientSide for Pop3ClientSide {
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
