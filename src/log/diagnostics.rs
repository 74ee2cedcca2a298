//! Diagnostic lines (starting, listening, a back end that failed, a reload) as opposed to the
//! lines fail2ban and admins parse (Connect, Auth, Closing, Fatal, Guard), which keep
//! Perdition's format and destination whatever is chosen here. Diagnostics go through `tracing`
//! with a level filter (`[log] level`, or `RUST_LOG` in its syntax): to the log's own
//! destination in its line format (the default), or as JSON lines on stderr, or to journald.

use tracing_subscriber::filter::ParseError;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use super::Severity;
pub use crate::config::DiagnosticsOutput;

/// Why diagnostics cannot go where they were asked to, at the level asked.
#[derive(Debug, thiserror::Error)]
pub enum DiagnosticsError {
    #[error("RUST_LOG: {0}")]
    RustLog(#[source] ParseError),
    #[error("log.level {level:?}: {source}")]
    Level {
        level: String,
        #[source]
        source: ParseError,
    },
    #[error("journald is not reachable: {0}")]
    JournaldUnreachable(#[source] std::io::Error),
    /// A subscriber was installed already.
    #[error(transparent)]
    Install(Box<dyn std::error::Error + Send + Sync>),
}

/// The filter in force: `RUST_LOG` when set, else `[log] level` (`debug` when `[log] debug`).
pub fn filter(level: &str, debug: bool) -> Result<EnvFilter, DiagnosticsError> {
    if let Ok(directives) = std::env::var("RUST_LOG") {
        if !directives.is_empty() {
            return EnvFilter::try_new(&directives).map_err(DiagnosticsError::RustLog);
        }
    }
    let level = if debug { "debug" } else { level };
    EnvFilter::try_new(level).map_err(|source| DiagnosticsError::Level {
        level: level.to_string(),
        source,
    })
}

/// The most verbose severity a filter lets through for Portcullis' own lines.
pub fn max_severity(filter: &EnvFilter) -> Severity {
    match filter.max_level_hint() {
        Some(l) if l >= tracing::level_filters::LevelFilter::DEBUG => Severity::Debug,
        Some(l) if l >= tracing::level_filters::LevelFilter::INFO => Severity::Info,
        Some(l) if l >= tracing::level_filters::LevelFilter::WARN => Severity::Warning,
        Some(_) => Severity::Err,
        None => Severity::Info,
    }
}

/// Install the subscriber for JSON or journald output; the log's own destination needs none.
pub fn install(output: DiagnosticsOutput, filter: EnvFilter) -> Result<(), DiagnosticsError> {
    match output {
        DiagnosticsOutput::Log => Ok(()),
        DiagnosticsOutput::Json => tracing_subscriber::fmt()
            .json()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .try_init()
            .map_err(DiagnosticsError::Install),
        DiagnosticsOutput::Journald => {
            // The syslog severities these lines have with a syslog destination: the crate's
            // default puts `info` at notice (5) and `debug` at info (6).
            use tracing_journald::{Priority, PriorityMappings};
            let priorities = PriorityMappings {
                info: Priority::Informational,
                debug: Priority::Debug,
                trace: Priority::Debug,
                ..PriorityMappings::new()
            };
            let journald = tracing_journald::layer()
                .map_err(DiagnosticsError::JournaldUnreachable)?
                .with_syslog_identifier("portcullis".into())
                .with_priority_mappings(priorities);
            tracing_subscriber::registry()
                .with(filter)
                .with(journald)
                .try_init()
                .map_err(|e| DiagnosticsError::Install(e.into()))
        }
    }
}

/// One diagnostic line as a `tracing` event.
pub fn emit(severity: Severity, message: &str) {
    match severity {
        Severity::Err => tracing::error!(target: "portcullis", "{message}"),
        Severity::Warning => tracing::warn!(target: "portcullis", "{message}"),
        Severity::Notice | Severity::Info => tracing::info!(target: "portcullis", "{message}"),
        Severity::Debug => tracing::debug!(target: "portcullis", "{message}"),
    }
}
