//! From the command line to what is wanted: the configuration read (the native file, or
//! Perdition's flags and files), where the admin endpoint is, and where a reload reads the
//! configuration again.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::admin::client::Endpoint;
use crate::config::{debian_defaults, perdition, Config};
use crate::server::control::ConfigSource;
use crate::server::registry::Kick;

use super::args::{self, Command};
use super::ask::Question;
use super::check::Check;
use super::start::{Serving, Start};

/// What the command line asks for, everything it needs read.
pub enum Wanted {
    /// Serve.
    Run(Start),
    Check(Check),
    /// Ask the admin endpoint of a running instance.
    Ask(Endpoint, Question),
    Completions(clap_complete::Shell),
    /// Write another proxy's configuration as the native one.
    Import(args::ImportFrom),
    /// Done already (Perdition's help was printed).
    Nothing,
}

/// A command line that cannot be carried out as given.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    #[error(transparent)]
    File(#[from] ConfigFileError),
    /// A configuration file that is not one: a configuration error, not a usage error.
    #[error("configuration error: {0}")]
    InvalidConfig(#[source] ConfigFileError),
    #[error("{command} needs --admin ADDR or --config FILE with [admin] listen")]
    NoAdminAddress { command: &'static str },
    #[error("{0:?} is not an address:port")]
    NotAnAddress(String),
    #[error("--debian-defaults takes one file at most")]
    DebianDefaultsFiles,
    /// Perdition's flags or files, or Debian's defaults file, as their reader says.
    #[error(transparent)]
    Perdition(Box<dyn Error + Send + Sync>),
}

impl InvocationError {
    /// 1 for a configuration error, 2 for a usage error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            InvocationError::InvalidConfig(_) => ExitCode::FAILURE,
            _ => ExitCode::from(2),
        }
    }
}

/// A native configuration file that could not be read as one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: Box<dyn Error + Send + Sync>,
    },
}

/// The native configuration in `path`.
fn read_config(path: &Path) -> Result<Config, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    Config::from_toml(&text).map_err(|e| ConfigFileError::Invalid {
        path: path.to_path_buf(),
        source: e.into(),
    })
}

/// The native command line's subcommand, its files read.
pub fn native(command: Command) -> Result<Wanted, InvocationError> {
    let question = match command {
        Command::Run(file) => return run(file.path),
        Command::Check(check) => {
            return Ok(Wanted::Check(Check {
                config: valid_config(&check.config.path)?,
                probe: check.probe,
                offline: check.offline,
            }))
        }
        Command::Perdition(flags) => return perdition("perdition", &flags.flags),
        Command::Completions { shell } => return Ok(Wanted::Completions(shell)),
        Command::Import(from) => return Ok(Wanted::Import(from)),
        Command::Sessions(endpoint) => ("sessions", endpoint, Question::Sessions),
        Command::Reload(endpoint) => ("reload", endpoint, Question::Reload),
        Command::Upgrade(endpoint) => ("upgrade", endpoint, Question::Upgrade),
        Command::Backends(endpoint) => ("backends", endpoint, Question::Backends),
        Command::Backend(args::BackendAction::Down {
            server,
            kick,
            endpoint,
        }) => ("backend down", endpoint, Question::Drain { server, kick }),
        Command::Backend(args::BackendAction::Up { server, endpoint }) => {
            ("backend up", endpoint, Question::Undrain { server })
        }
        Command::Move(m) => (
            "move",
            m.endpoint,
            Question::Move {
                user: m.user,
                server: m.server,
            },
        ),
        Command::Kick(kick) => {
            let whom = match (kick.user, kick.backend) {
                (Some(user), _) => Kick::User(user),
                (None, Some(backend)) => Kick::Backend(backend),
                // clap insists on one of them.
                (None, None) => unreachable!("kick without --user or --backend"),
            };
            ("kick", kick.endpoint, Question::Kick(whom))
        }
    };
    let (command, given, question) = question;
    Ok(Wanted::Ask(endpoint(command, given)?, question))
}

/// The configuration in `path`; a file that is not one is a configuration error.
fn valid_config(path: &Path) -> Result<Config, InvocationError> {
    read_config(path).map_err(|e| match e {
        ConfigFileError::Invalid { .. } => InvocationError::InvalidConfig(e),
        unreadable => InvocationError::File(unreadable),
    })
}

/// `run --config FILE`.
fn run(path: PathBuf) -> Result<Wanted, InvocationError> {
    let config = valid_config(&path)?;
    // A reload reads the same file again.
    let source: ConfigSource = Box::new(move || Ok((read_config(&path)?, vec![])));
    Ok(Wanted::Run(Start {
        config,
        warnings: vec![],
        source,
        serving: Serving::Listeners,
    }))
}

/// Where the admin endpoint is (`--admin`, or a configuration's `[admin]`) and its token
/// (`--token`, `PORTCULLIS_ADMIN_TOKEN`, the configuration's).
fn endpoint(
    command: &'static str,
    given: args::AdminEndpoint,
) -> Result<Endpoint, InvocationError> {
    let mut address = given.admin;
    // Kept out of `ps`: the token may come from the environment instead.
    let mut token = given
        .token
        .or_else(|| std::env::var("PORTCULLIS_ADMIN_TOKEN").ok());
    if let Some(path) = given.config {
        let config = read_config(&path)?;
        address = address.or(config.admin.listen);
        token = token.or(config.admin.token);
    }
    let address = address.ok_or(InvocationError::NoAdminAddress { command })?;
    let address = address
        .parse()
        .map_err(|_| InvocationError::NotAnAddress(address))?;
    Ok(Endpoint { address, token })
}

/// `portcullis perdition FLAGS`, or a program started as `invoked_as` (perdition.imaps ...):
/// the flags as Perdition reads them.
pub fn perdition(invoked_as: &str, args: &[String]) -> Result<Wanted, InvocationError> {
    if args.first().is_some_and(|a| a == "--debian-defaults") {
        return debian(&args[1..]);
    }
    let found =
        perdition::from_args(invoked_as, args).map_err(|e| InvocationError::Perdition(e.into()))?;
    let Some(compat) = found else {
        println!("{}", perdition::HELP);
        return Ok(Wanted::Nothing);
    };
    // A reload reads the flags' configuration file again, as Perdition does.
    let (name, flags) = (invoked_as.to_string(), args.to_vec());
    let source: ConfigSource = Box::new(move || match perdition::from_args(&name, &flags) {
        Ok(Some(compat)) => Ok((compat.config, compat.warnings)),
        Ok(None) => Err("the flags ask for help, not a configuration".into()),
        Err(e) => Err(e.into()),
    });
    let serving = match compat.inetd {
        true => Serving::Inetd,
        false => Serving::Listeners,
    };
    Ok(Wanted::Run(Start {
        config: compat.config,
        warnings: compat.warnings,
        source,
        serving,
    }))
}

/// `portcullis perdition --debian-defaults [FILE]`.
fn debian(args: &[String]) -> Result<Wanted, InvocationError> {
    let file = match args {
        [] => PathBuf::from(debian_defaults::DEFAULT_FILE),
        [file] => PathBuf::from(file),
        _ => return Err(InvocationError::DebianDefaultsFiles),
    };
    let compat = debian_defaults::read(&file).map_err(|e| InvocationError::Perdition(e.into()))?;
    // A reload reads the defaults file, and the configuration files, again.
    let source: ConfigSource = Box::new(move || {
        let compat = debian_defaults::read(&file)?;
        Ok((compat.config, compat.warnings))
    });
    Ok(Wanted::Run(Start {
        config: compat.config,
        warnings: compat.warnings,
        source,
        serving: Serving::Listeners,
    }))
}
