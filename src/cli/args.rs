//! The native command line, as clap reads it: the subcommands, their options and their
//! `--help`. Perdition's own flags are not read here: `portcullis perdition FLAGS` hands them,
//! untouched, to Perdition's option reader (`config::perdition`), which accepts Perdition's
//! syntax exactly.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The whole command line.
#[derive(Debug, Parser)]
#[command(
    name = "portcullis",
    version,
    about = "A mail-access reverse proxy for IMAP, POP3 and ManageSieve",
    after_help = "The manual, every configuration key included: /usr/share/doc/portcullis/manual/ \
                  (docs/src/ in the source).",
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What the process is asked to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve with the native TOML configuration
    Run(ConfigFile),
    /// Validate FILE and print the effective configuration
    Check(Check),
    /// Behave like a Perdition instance with the same flags
    ///
    /// For example `-f /etc/perdition/perdition.imap4s.conf -P IMAP4S`; also when started as
    /// perdition.imaps etc. (a link). `portcullis perdition --debian-defaults [FILE]` serves
    /// every protocol /etc/default/perdition (or FILE) enables, with its flags, from one
    /// process. `portcullis perdition --help` shows Perdition's own flags.
    #[command(disable_help_flag = true)]
    Perdition(PerditionFlags),
    /// List the live sessions (from the admin endpoint)
    Sessions(AdminEndpoint),
    /// End a user's or a back end's sessions
    Kick(Kick),
    /// List the pools' servers: health, drained or not, users and sessions
    Backends(AdminEndpoint),
    /// Drain a pool's server (no new users), or let it take users again
    #[command(subcommand)]
    Backend(BackendAction),
    /// Move a user (its lookup key) to a pool's server: its sessions end, it comes back there
    Move(Move),
    /// Read the configuration again (as SIGHUP does) and say what changed, or why nothing did
    Reload(AdminEndpoint),
    /// Start the binary on disk with the listening sockets and let this process drain (as
    /// SIGUSR2 does)
    Upgrade(AdminEndpoint),
    /// Write another proxy's configuration as the native TOML, on standard output
    ///
    /// `portcullis import nginx /etc/nginx/nginx.conf > portcullis.toml`. A directive whose
    /// meaning would be lost is refused (exit 1, each named with its file and line); a line
    /// that means something else here has a comment above it.
    #[command(subcommand)]
    Import(ImportFrom),
    /// Print the shell completions for portcullis
    Completions {
        /// The shell they are for
        shell: clap_complete::Shell,
    },
}

/// The native configuration file.
#[derive(Debug, Args)]
pub struct ConfigFile {
    /// The TOML configuration
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub path: PathBuf,
}

/// `check`'s options.
#[derive(Debug, Args)]
pub struct Check {
    #[command(flatten)]
    pub config: ConfigFile,
    /// Reach every back end and map server instead, and report on each (non-zero exit when
    /// one is broken)
    #[arg(long)]
    pub probe: bool,
    /// Reach nothing, print only problems (the unit's ExecStartPre)
    #[arg(long)]
    pub offline: bool,
}

/// What `import` reads.
#[derive(Debug, Subcommand)]
pub enum ImportFrom {
    /// nginx's mail {} block, with the files it includes
    Nginx {
        /// nginx's main configuration file
        #[arg(value_name = "FILE", default_value = "/etc/nginx/nginx.conf")]
        file: PathBuf,
    },
    /// Perdition's configuration directory, and Debian's /etc/default/perdition when there
    /// is one: what `portcullis perdition` serves from them
    Perdition {
        /// Perdition's configuration directory
        #[arg(value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Debian's defaults file naming the instances (default: /etc/default/perdition when
        /// it exists; without one, perdition.conf alone)
        #[arg(long, value_name = "FILE")]
        defaults: Option<PathBuf>,
    },
}

/// Perdition's flags, as given: Perdition's option reader makes sense of them.
#[derive(Debug, Args)]
pub struct PerditionFlags {
    /// Perdition 2.2's flags, read as Perdition reads them
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PERDITION FLAGS"
    )]
    pub flags: Vec<String>,
}

/// Where a running instance's admin endpoint is, and how to be let in.
#[derive(Debug, Args)]
#[command(args_override_self = true)]
pub struct AdminEndpoint {
    /// The admin endpoint's address:port
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
    /// The admin endpoint's token (else PORTCULLIS_ADMIN_TOKEN, else the configuration's)
    #[arg(long, value_name = "T")]
    pub token: Option<String>,
    /// A configuration whose [admin] section names the endpoint
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `kick`'s options: the endpoint, and whose sessions end.
#[derive(Debug, Args)]
#[command(args_override_self = true)]
#[group(id = "whom", required = true, multiple = false, args = ["user", "backend"])]
pub struct Kick {
    #[command(flatten)]
    pub endpoint: AdminEndpoint,
    /// End this user's sessions
    #[arg(long, value_name = "U", overrides_with = "backend")]
    pub user: Option<String>,
    /// End the sessions on this back end
    #[arg(long, value_name = "HOST:PORT", overrides_with = "user")]
    pub backend: Option<String>,
}

/// `backend down` and `backend up`.
#[derive(Debug, Subcommand)]
pub enum BackendAction {
    /// No new users on the server; with --kick its sessions end too, spread over the pool's
    /// kick_spread_ms
    Down {
        /// The server, as `portcullis backends` names it
        #[arg(value_name = "HOST:PORT")]
        server: String,
        /// End the server's live sessions as well
        #[arg(long)]
        kick: bool,
        #[command(flatten)]
        endpoint: AdminEndpoint,
    },
    /// The server takes new users again
    Up {
        /// The server, as `portcullis backends` names it
        #[arg(value_name = "HOST:PORT")]
        server: String,
        #[command(flatten)]
        endpoint: AdminEndpoint,
    },
}

/// `move`'s arguments.
#[derive(Debug, Args)]
pub struct Move {
    /// The user, as the pool's lookup key
    #[arg(value_name = "USER")]
    pub user: String,
    /// The server it moves to
    #[arg(value_name = "HOST:PORT")]
    pub server: String,
    #[command(flatten)]
    pub endpoint: AdminEndpoint,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("portcullis").chain(args.iter().copied()))
    }

    #[test]
    fn perdition_flags_reach_perditions_reader_as_given() {
        let given = [
            "-f",
            "",
            "--",
            "-h",
            "--help",
            "-V",
            "--version",
            "-P",
            "IMAP4",
            "--",
        ];
        let all: Vec<&str> = std::iter::once("perdition").chain(given).collect();
        match parse(&all).unwrap().command {
            Command::Perdition(p) => assert_eq!(p.flags, given),
            other => panic!("{other:?}"),
        }
        for given in [&["--help"][..], &["--debian-defaults"], &["-h"], &[]] {
            let all: Vec<&str> = std::iter::once("perdition")
                .chain(given.iter().copied())
                .collect();
            match parse(&all).unwrap().command {
                Command::Perdition(p) => assert_eq!(p.flags, given),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn config_is_taken_in_every_spelling() {
        for args in [
            &["run", "--config", "a.toml"][..],
            &["run", "-c", "a.toml"],
            &["run", "--config=a.toml"],
        ] {
            match parse(args).unwrap().command {
                Command::Run(c) => assert_eq!(c.path, PathBuf::from("a.toml")),
                other => panic!("{other:?}"),
            }
        }
        match parse(&["check", "--probe", "--config", "a.toml", "--offline"])
            .unwrap()
            .command
        {
            Command::Check(c) => assert!(c.probe && c.offline),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["run"]).is_err());
        assert!(parse(&["run", "--config", "a", "--probe"]).is_err());
    }

    #[test]
    fn import_takes_a_file_or_a_directory() {
        match parse(&["import", "nginx"]).unwrap().command {
            Command::Import(ImportFrom::Nginx { file }) => {
                assert_eq!(file, PathBuf::from("/etc/nginx/nginx.conf"))
            }
            other => panic!("{other:?}"),
        }
        match parse(&["import", "perdition", "/srv/p", "--defaults", "/srv/d"])
            .unwrap()
            .command
        {
            Command::Import(ImportFrom::Perdition { dir, defaults }) => {
                assert_eq!(dir, Some(PathBuf::from("/srv/p")));
                assert_eq!(defaults, Some(PathBuf::from("/srv/d")));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["import"]).is_err());
        assert!(parse(&["import", "haproxy"]).is_err());
    }

    #[test]
    fn the_last_of_kicks_user_and_backend_counts() {
        match parse(&["kick", "--admin", "x", "--user", "a", "--backend", "b:1"])
            .unwrap()
            .command
        {
            Command::Kick(k) => assert_eq!((k.user, k.backend), (None, Some("b:1".into()))),
            other => panic!("{other:?}"),
        }
        match parse(&["kick", "--admin", "x", "--admin", "y", "--user", "a"])
            .unwrap()
            .command
        {
            Command::Kick(k) => {
                assert_eq!(k.endpoint.admin.as_deref(), Some("y"));
                assert_eq!(k.user.as_deref(), Some("a"));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["kick", "--admin", "x"]).is_err());
        assert!(parse(&["sessions", "--user", "a"]).is_err());
    }
}
