//! `portcullis import perdition [DIR] [--defaults FILE]`: what Perdition mode would serve,
//! written in the native format. The reader is Perdition mode's own (`config::perdition`,
//! and `config::debian_defaults` for Debian's `/etc/default/perdition`), so the file written
//! serves exactly what `portcullis perdition` serves today; its warnings become comments.

use std::path::Path;

use crate::config::debian_defaults::{self, DebianDefaultsError};
use crate::config::perdition::{self as reader, PerditionError};

use super::toml_text::TomlText;
use super::ImportError;

/// Why Perdition's files cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PerditionImportError {
    #[error(transparent)]
    Defaults(#[from] DebianDefaultsError),
    #[error(transparent)]
    Perdition(#[from] PerditionError),
}

/// The native configuration for Perdition's directory `dir` (default `/etc/perdition`):
/// every instance Debian's defaults file enables (`defaults`, else `/etc/default/perdition`
/// when there is one), else the one plain `perdition` would be (`perdition.conf`).
pub fn perdition(dir: Option<&Path>, defaults: Option<&Path>) -> Result<String, ImportError> {
    let dir = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| reader::system_path("/etc/perdition"));
    let defaults = defaults.map(Path::to_path_buf).or_else(|| {
        let file = reader::system_path(debian_defaults::DEFAULT_FILE);
        file.is_file().then_some(file)
    });
    let (compat, source) = match &defaults {
        Some(file) => (
            debian_defaults::read_in(file, &dir).map_err(PerditionImportError::from)?,
            format!(
                "{} (its configuration files in {})",
                file.display(),
                dir.display()
            ),
        ),
        None => {
            let compat = reader::from_args_in(&dir, "perdition", &[])
                .map_err(PerditionImportError::from)?
                .expect("no flags ask for no help");
            (compat, format!("{}", dir.display()))
        }
    };
    let mut text = TomlText::default();
    text.comment(&format!(
        "Imported from {source} by `portcullis import perdition`: what `portcullis perdition` \
         serves from these files, in the native format (Perdition's defaults spelled out)."
    ));
    for warning in &compat.warnings {
        text.comment(warning);
    }
    if compat.inetd {
        text.comment("inetd_mode is not carried: `portcullis run` listens itself.");
    }
    for missing in secrets_not_written(&compat.config) {
        text.comment(&missing);
    }
    text.blank();
    let written = text.finish() + &compat.config.to_toml();
    super::valid(&written)?;
    Ok(written)
}

/// The secrets `to_toml` leaves out (it never shows them), each named so the admin adds it.
fn secrets_not_written(config: &crate::config::Config) -> Vec<String> {
    let mut missing = Vec::new();
    for (i, listener) in config.listeners.iter().enumerate() {
        let Some(map) = &listener.map else { continue };
        if map.bind_password.is_some() {
            missing.push(format!(
                "listener {}: map.bind_password is not written here: add it by hand.",
                i + 1
            ));
        }
        if map.master_password.is_some() {
            missing.push(format!(
                "listener {}: map.master_password is not written here: add it by hand.",
                i + 1
            ));
        }
    }
    missing
}
