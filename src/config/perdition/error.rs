//! What can be wrong with Perdition's flags or configuration file; each message names the
//! option or the line, as Perdition's users read them in the log or on the terminal.

use std::path::PathBuf;

use super::sql::{MapLibraryOptError, TableQueryError};

#[derive(Debug, thiserror::Error)]
pub enum PerditionError {
    #[error("unknown Perdition option {0:?}")]
    UnknownOption(String),
    #[error("unknown Perdition option -{0}")]
    UnknownLetter(char),
    #[error("Perdition option {name:?} is refused: {why}")]
    Refused {
        name: &'static str,
        why: &'static str,
    },
    #[error("unexpected argument {0:?}")]
    UnexpectedArgument(String),
    #[error("option --{0} needs a value")]
    NeedsValue(&'static str),
    #[error("option --{0} takes no value")]
    TakesNoValue(&'static str),

    #[error("cannot read Perdition config file {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A mistake in the configuration file, after its name.
    #[error("{}: {source}", path.display())]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<PerditionError>,
    },
    /// A mistake on one line of the configuration file.
    #[error("line {line}: {source}")]
    OnLine {
        line: usize,
        #[source]
        source: Box<PerditionError>,
    },
    #[error("line {0}: a quote is not closed")]
    UnclosedQuote(usize),
    #[error("line {line}: {name} needs a value")]
    NoValueOnLine { line: usize, name: &'static str },

    #[error("unknown protocol {0:?}")]
    UnknownProtocol(String),
    #[error("expected yes or no, got {0:?}")]
    NotAFlag(String),
    #[error("{option}: {value:?} is not a number")]
    NotANumber { option: &'static str, value: String },
    #[error("{option}: {value:?} is neither a port number nor a service in /etc/services")]
    NotAPort { option: &'static str, value: String },
    #[error("bad server {0:?}")]
    BadServer(String),
    #[error("unknown {option} state {value:?}")]
    UnknownState { option: &'static str, value: String },
    #[error("unknown ssl_mode {0:?}")]
    UnknownSslMode(String),
    #[error("ssl_listen is not available for MANAGESIEVE; use tls_listen")]
    ImplicitTlsForManagesieve,
    #[error("{option}: unknown protocol version {value:?}")]
    UnknownTlsVersion { option: &'static str, value: String },
    #[error("{option} {value}: rustls speaks TLS 1.2 and 1.3 only, nothing would be left")]
    NoTlsVersionLeft { option: &'static str, value: String },
    #[error("{min} is above {max}")]
    TlsVersionsCrossed {
        min: &'static str,
        max: &'static str,
    },
    #[error("unknown log_passwd value {0:?}")]
    UnknownLogPasswd(String),
    #[error("outgoing_server is required without a map library (-M)")]
    NoServer,
    #[error("map_library {library:?}: {why}")]
    MapLibrary { library: String, why: &'static str },
    #[error(transparent)]
    MapLibraryOpt(#[from] MapLibraryOptError),
    #[error(transparent)]
    TableQuery(#[from] TableQueryError),
}

impl PerditionError {
    pub(super) fn on_line(self, line: usize) -> PerditionError {
        PerditionError::OnLine {
            line,
            source: Box::new(self),
        }
    }
}

/// For callers that still pass errors on as text (the command line, a reload's source).
impl From<PerditionError> for String {
    fn from(e: PerditionError) -> String {
        e.to_string()
    }
}
