//! `portcullis import`: another proxy's configuration written as the native one.
//!
//! * `import nginx FILE`: nginx's `mail {}` block (`nginx_syntax` reads nginx's syntax,
//!   `nginx_include` its files, `nginx` the block's directives, `nginx_listener` writes the
//!   listeners). What cannot be carried is refused, every such directive named with its file
//!   and line; what means something else here gets a comment in the output.
//! * `import perdition` (`perdition`): what Perdition mode reads, written out.
//!
//! Whatever is written is read back and validated before it is given out.

mod nginx;
mod nginx_include;
mod nginx_listener;
pub mod nginx_syntax;
mod nginx_values;
pub mod perdition;
mod toml_text;

use std::path::{Path, PathBuf};

pub use nginx_include::{Disk, Files, LoadError};
pub use nginx_syntax::Location;

use crate::config::Config;

/// A directive whose meaning would be lost here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {directive}: {why}")]
pub struct Refusal {
    pub at: Location,
    /// The directive as written (its name and arguments).
    pub directive: String,
    pub why: String,
}

/// Why there is no configuration to give out.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{}: no mail {{}} block, nor in the files it includes", .0.display())]
    NoMail(PathBuf),
    #[error("{0}: a second mail block (nginx takes one)")]
    SecondMail(Location),
    #[error("{0}: the mail block has no server: there is nothing to serve")]
    NoServer(Location),
    #[error("{} cannot be carried:\n{}", directives(.0.len()), lines(.0))]
    Refused(Vec<Refusal>),
    /// What was written does not read back as a valid configuration: the importer's mistake,
    /// or a listen address that does not resolve here.
    #[error("the configuration written is not valid:\n{0}")]
    NotValid(String),
    #[error(transparent)]
    Perdition(#[from] perdition::PerditionImportError),
}

fn directives(count: usize) -> String {
    match count {
        1 => "a directive".into(),
        n => format!("{n} directives"),
    }
}

fn lines(refusals: &[Refusal]) -> String {
    let shown: Vec<String> = refusals.iter().map(|r| format!("  {r}")).collect();
    shown.join("\n")
}

/// `portcullis import nginx FILE`: the native configuration for nginx's `mail {}` block in
/// `main` (and the files it includes).
pub fn nginx(main: &Path) -> Result<String, ImportError> {
    nginx_from(main, &mut Disk)
}

/// The same, with the files read through `files`.
pub fn nginx_from(main: &Path, files: &mut dyn Files) -> Result<String, ImportError> {
    let tree = nginx_include::load(main, files)?;
    let mut mails = tree.iter().filter(|d| d.name == "mail");
    let Some(mail) = mails.next() else {
        return Err(ImportError::NoMail(main.to_path_buf()));
    };
    if let Some(second) = mails.next() {
        return Err(ImportError::SecondMail(second.at.clone()));
    }
    let read = nginx::read_mail(mail.block.as_deref().unwrap_or_default());
    if read.servers.is_empty() && read.refusals.is_empty() {
        return Err(ImportError::NoServer(mail.at.clone()));
    }
    let text =
        nginx_listener::render(&read, &main.display().to_string()).map_err(ImportError::Refused)?;
    valid(&text)?;
    Ok(text)
}

/// `text` read back as the native configuration, and valid.
fn valid(text: &str) -> Result<Config, ImportError> {
    let config = Config::from_toml(text).map_err(|e| ImportError::NotValid(e.to_string()))?;
    config
        .validate()
        .map_err(|e| ImportError::NotValid(e.to_string()))?;
    Ok(config)
}
