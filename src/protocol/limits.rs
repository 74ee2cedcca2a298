//! Bounds on what a client may do before it has logged in. Shared by every client-side machine so
//! that each protocol enforces the same rules in the same way.

use super::{AfterLogin, LoginReply};
pub use crate::value::PreLoginLimits;

/// Deepest parenthesis nesting accepted in a command or a server response. Pre-login commands
/// need one level (IMAP `ID`); the cap keeps recursive token trees from exhausting the stack.
pub const MAX_NESTING: usize = 16;

/// Most literals accepted in one command, so that a whole command is bounded, not just each of
/// its lines and literals.
pub const MAX_LITERALS_PER_COMMAND: usize = 8;

/// Counts commands and failures against [`PreLoginLimits`].
#[derive(Debug, Clone)]
pub struct PreLoginCounters {
    limits: PreLoginLimits,
    commands: u32,
    failed_logins: u32,
}

impl PreLoginCounters {
    pub fn new(limits: PreLoginLimits) -> Self {
        PreLoginCounters {
            limits,
            commands: 0,
            failed_logins: 0,
        }
    }

    pub fn limits(&self) -> &PreLoginLimits {
        &self.limits
    }

    /// Count one more command; `false` when the client has used up its allowance.
    pub fn command(&mut self) -> bool {
        self.commands += 1;
        self.commands <= self.limits.max_commands
    }

    /// Count one more failed login; `false` when the client must be disconnected.
    pub fn failed_login(&mut self) -> bool {
        self.failed_logins += 1;
        self.failed_logins < self.limits.max_failed_logins
    }

    /// The answer to a rejected login: `refusal`, and when that was the last allowed failure,
    /// `farewell` too and a close.
    pub fn reply_to_rejection(&mut self, refusal: &[u8], farewell: &[u8]) -> LoginReply {
        let mut bytes = refusal.to_vec();
        let next = if self.failed_login() {
            AfterLogin::Continue
        } else {
            bytes.extend_from_slice(farewell);
            AfterLogin::Close
        };
        LoginReply { bytes, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn third_failure_of_three_ends_the_session() {
        let mut c = PreLoginCounters::new(PreLoginLimits {
            max_failed_logins: 3,
            ..Default::default()
        });
        assert!(c.failed_login());
        assert!(c.failed_login());
        assert!(!c.failed_login());
    }

    #[test]
    fn commands_beyond_the_allowance_are_refused() {
        let mut c = PreLoginCounters::new(PreLoginLimits {
            max_commands: 2,
            ..Default::default()
        });
        assert!(c.command());
        assert!(c.command());
        assert!(!c.command());
    }
}
