//! The bounds on what a client may do before it has logged in, as the configuration sets them
//! (`[limits]`); the protocol machines count against them (`protocol::limits`).

/// The configured bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreLoginLimits {
    /// Longest command line accepted, in bytes, not counting literals.
    pub max_line_length: usize,
    /// Largest literal (IMAP `{n}`, ManageSieve `{n+}`) accepted before login.
    pub max_literal_size: usize,
    /// Commands accepted before login; the next one closes the connection.
    pub max_commands: u32,
    /// Failed logins before the connection is closed.
    pub max_failed_logins: u32,
}

impl Default for PreLoginLimits {
    fn default() -> Self {
        PreLoginLimits {
            max_line_length: 8192,
            max_literal_size: 8192,
            max_commands: 50,
            max_failed_logins: 3,
        }
    }
}
