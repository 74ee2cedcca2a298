//! What can be wrong with a native configuration: the file as TOML, a listener's addresses,
//! and the problems `validate` finds.

/// A mistake in a native configuration file, named by its line and column. Only toml's
/// message is kept, not its error, whose text quotes the line: the line may hold a password,
/// and the message goes to the log and to `POST /reload`'s answer.
#[derive(Debug, thiserror::Error)]
pub enum TomlError {
    #[error("line {line}, column {column}: {message}")]
    At {
        line: usize,
        column: usize,
        message: String,
    },
    /// A mistake toml cannot place.
    #[error("{0}")]
    Unplaced(String),
}

/// Why a listener's bind addresses cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("bind address {spec:?}: {source}")]
    Resolve {
        spec: String,
        #[source]
        source: std::io::Error,
    },
    #[error("bind address {0:?} resolves to nothing")]
    Nothing(String),
}

/// Every problem [`super::Config::validate`] found, one sentence each, in the order found:
/// `portcullis check` lists them one a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct Problems(pub Vec<String>);
