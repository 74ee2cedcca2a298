//! Perdition compatibility: Perdition 2.2's command-line flags, configuration files and program
//! names, turned into a native [`Config`] with one listener.
//!
//! The file format is Perdition's (see [`file`]). Flags on the command line override the
//! file. Without `-f`, the file is searched for as Perdition does (see
//! [`default_config_file`]).
//!
//! Every Perdition option is known here ([`options`]): implemented, accepted with a warning that
//! says why it has no effect, or (`authenticate_in`) refused with the reason. A proxy that
//! silently ignored `add_domain` would send users to the wrong place.
//!
//! The parts: [`options`] (the table of options), [`command_line`] and [`file`] (the two
//! readers), [`build`] (the options as a native configuration, with [`values`], [`tls`],
//! [`user_names`] and [`map`] for the map library, [`sql`] for its SQL ones), [`error`].

use std::path::{Path, PathBuf};

mod build;
mod command_line;
mod error;
mod file;
mod map;
mod options;
mod sql;
mod tls;
mod user_names;
mod values;

pub use error::PerditionError;
pub use map::{DEFAULT_GDBM_PATH, DEFAULT_LDAP_URL, DEFAULT_POPMAP_RE_PATH};
pub use sql::{table_query, MapLibraryOptError, Table, TableQueryError};

use super::Config;
use crate::value::Protocol;
use build::build;
use command_line::parse_args;
use file::parse_file;
use options::{Given, PerditionOption};

/// What `portcullis perdition --help` prints.
pub const HELP: &str = "\
portcullis perdition: run with Perdition 2.2's flags and configuration file.
(Also when started as perdition, perdition.imap4, perdition.imap4s, perdition.imaps,
perdition.pop3, perdition.pop3s or perdition.managesieve: a link to portcullis.)
Options (command line --name VALUE / -X VALUE, or `name value` in the configuration file):
  -f|--config_file FILE (default: /etc/perdition/<name>.conf, perdition.<protocol>.conf,
     perdition.conf, the first that exists)
  -P|--protocol POP3|POP3S|IMAP4|IMAP4S|MANAGESIEVE (default: from the program name, else POP3)
  -b|--bind_address ADDR[:PORT][,ADDR[:PORT]]   -l|--listen_port PORT
  -s|--outgoing_server HOST[:PORT][,HOST[:PORT]]   -p|--outgoing_port PORT
  -F|--log_facility -|+|/file|FACILITY   -d|--debug   -q|--quiet   --log_passwd never|fail|ok|all
  --connect_relog SECONDS   -L|--connection_limit N
  -t|--timeout SECONDS   --authenticate_timeout SECONDS   --tcp_keepalive
  --lower_case STATE[,STATE]       -n|--no_lookup   --no_daemon   -B|--no_bind_banner
  -i|--inetd_mode (serve the one connection on standard input)   --login_disabled
  -O|--ok_line TEXT   -o|--server_resp_line   --server_ok_line
  -I|--capability, --imap_capability, --pop_capability, --managesieve_capability STRING
  --ssl_mode MODE[,MODE]  --ssl_cert_file F  --ssl_key_file F  --ssl_ca_chain_file F
  --ssl_ca_file F  --ssl_ca_path DIR  --ssl_no_cert_verify  --ssl_no_cn_verify
  --ssl_cert_accept_expired  --ssl_cert_accept_not_yet_valid  --ssl_cert_accept_self_signed
  --ssl_ca_accept_self_signed  --ssl_{listen,outgoing}_{min,max}_proto_version tlsv1.2|tlsv1.3
  --pid_file FILE (default /var/run/<name>/<name>.pid; \"\" for none)
  -u|--username USER   -g|--group GROUP (after binding, as Perdition)
  -M|--map_library \"\" | .../libperditiondb_{posix_regex,gdbm,ldap,mysql,postgresql}.so.0
  -m|--map_library_opt STRING      -U|--username_from_database  -c|--client_server_specification
  -D|--domain_delimiter STRING     -S|--strip_domain STATE[,STATE]   --query_key FORMAT[,FORMAT]
  -A|--add_domain STATE[,STATE] with -e|--explicit_domain DOMAIN
Accepted with a warning saying why they change nothing here: -C|--connection_logging,
  --ssl_dh_params_file, --ssl_{listen,outgoing}_ciphers, --ssl_{listen,outgoing}_compression,
  --ssl_no_cipher_server_preference, --ssl_no_client_cert_verify, --ssl_cert_verify_depth,
  --ssl_passphrase_fd, --ssl_passphrase_file.
Refused: -a|--authenticate_in (no local PAM check here).
portcullis perdition --debian-defaults [FILE]: serve every protocol Debian's
  /etc/default/perdition (or FILE) enables, each with its flags, from one process.";

/// Tests only: a directory that stands for `/` when Perdition mode looks for its default files
/// (`/etc/perdition/...`, the pid file under `/var/run`), so that a test can give it files
/// without touching the machine's own.
pub const ROOT_ENV: &str = "PORTCULLIS_PERDITION_ROOT";

/// One of Perdition's absolute default paths, under [`ROOT_ENV`] when that is set.
pub fn system_path(path: &str) -> PathBuf {
    match std::env::var_os(ROOT_ENV) {
        Some(root) if !root.is_empty() => Path::new(&root).join(path.trim_start_matches('/')),
        _ => PathBuf::from(path),
    }
}

/// Perdition's name when `program` (argv[0]) is one of its names: `perdition` or
/// `perdition.<anything>` (a link to portcullis, as Debian's init script starts
/// `/usr/sbin/perdition.imaps`).
pub fn invocation_name(program: &str) -> Option<String> {
    let name = Path::new(program).file_name()?.to_str()?;
    (name == "perdition" || name.starts_with("perdition.")).then(|| name.to_string())
}

/// The protocol a program name stands for, as Perdition reads its own name.
fn protocol_of_name(name: &str) -> Option<&'static str> {
    Some(match name {
        "perdition.imap4" => "IMAP4",
        "perdition.imap4s" | "perdition.imaps" => "IMAP4S",
        "perdition.pop3" => "POP3",
        "perdition.pop3s" => "POP3S",
        "perdition.managesieve" => "MANAGESIEVE",
        _ => return None,
    })
}

/// The result of reading Perdition flags.
#[derive(Debug)]
pub struct Compat {
    pub config: Config,
    /// Things accepted but without effect, for the log.
    pub warnings: Vec<String>,
    /// `inetd_mode`: serve the one connection on standard input, then exit.
    pub inetd: bool,
}

/// Read the command line of a program started as `invoked_as` (`perdition` for
/// `portcullis perdition`), and the configuration file it names or Perdition would find.
/// `None` when `-h` asked for help.
pub fn from_args(invoked_as: &str, args: &[String]) -> Result<Option<Compat>, PerditionError> {
    from_args_in(&system_path("/etc/perdition"), invoked_as, args)
}

/// As [`from_args`], with Perdition's configuration directory at `config_dir` rather than
/// `/etc/perdition` (`portcullis import perdition DIR`).
pub fn from_args_in(
    config_dir: &Path,
    invoked_as: &str,
    args: &[String],
) -> Result<Option<Compat>, PerditionError> {
    let command_line = parse_args(args)?;
    if command_line
        .iter()
        .any(|(o, _)| *o == PerditionOption::Help)
    {
        return Ok(None);
    }
    let given = Given(&command_line);
    let file = match given.get(PerditionOption::ConfigFile) {
        // Perdition reads no file for an empty name.
        Some("") => None,
        Some(file) => Some(PathBuf::from(file)),
        None => search_config_file(config_dir, invoked_as, given.get(PerditionOption::Protocol))?,
    };
    let mut all = match &file {
        Some(file) => read_file(file)?,
        None => Vec::new(),
    };
    // The command line comes last so that it wins.
    all.extend(command_line);
    build(&all, invoked_as).map(Some)
}

/// The options of the configuration file `path`.
fn read_file(path: &Path) -> Result<Vec<(PerditionOption, String)>, PerditionError> {
    let text = std::fs::read_to_string(path).map_err(|source| PerditionError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    parse_file(&text).map_err(|e| PerditionError::InFile {
        path: path.to_path_buf(),
        source: Box::new(e),
    })
}

/// Perdition's search without `-f`, in its configuration directory: `<name>.conf` for a
/// program started under another name than `perdition`, then `perdition.<protocol>.conf`, then
/// `perdition.conf`; none when none exists. The protocol is `-P`'s (as the man page says),
/// else the program name's, else POP3.
pub fn default_config_file(
    invoked_as: &str,
    protocol: Option<&str>,
) -> Result<Option<PathBuf>, PerditionError> {
    search_config_file(&system_path("/etc/perdition"), invoked_as, protocol)
}

fn search_config_file(
    dir: &Path,
    invoked_as: &str,
    protocol: Option<&str>,
) -> Result<Option<PathBuf>, PerditionError> {
    let protocol = match protocol.or(protocol_of_name(invoked_as)) {
        Some(p) => protocol_words(p)?.file_word,
        None => "pop3",
    };
    let mut candidates = Vec::new();
    if invoked_as != "perdition" {
        candidates.push(dir.join(format!("{invoked_as}.conf")));
    }
    candidates.push(dir.join(format!("perdition.{protocol}.conf")));
    candidates.push(dir.join("perdition.conf"));
    Ok(candidates.into_iter().find(|c| c.is_file()))
}

/// What a `-P` value means, and the names and defaults Perdition derives from it: Perdition's
/// own table of its protocols (it has no SMTP), not the proxy's protocol descriptors.
pub(super) struct ProtocolWords {
    /// The `-P` values that name it, upper case.
    names: &'static [&'static str],
    /// POP3S and IMAP4S: TLS on both legs without `ssl_mode`, and their own ports.
    pub(super) implicit: bool,
    /// Perdition's default port for it (`listen_port`, `outgoing_port`).
    pub(super) port: u16,
    /// The syslog ident, and the name of the pid file, of an instance started by
    /// Debian's init script for this protocol.
    pub(super) instance: &'static str,
    /// Its word in `perdition.<protocol>.conf`.
    file_word: &'static str,
    pub(super) family: &'static Family,
}

/// What the plain and the TLS form of a protocol share in Perdition's options.
pub(super) struct Family {
    pub(super) protocol: Protocol,
    /// `ssl_listen` is possible (not for ManageSieve).
    pub(super) implicit_tls_possible: bool,
    /// Its own capability option (`imap_capability`…), before the general `capability`.
    pub(super) capability_option: PerditionOption,
    /// Perdition separates POP3 capabilities with dots ("TOP.UIDL.USER").
    pub(super) dotted_capabilities: bool,
}

static IMAP: Family = Family {
    protocol: Protocol::Imap,
    implicit_tls_possible: true,
    capability_option: PerditionOption::ImapCapability,
    dotted_capabilities: false,
};

static POP3: Family = Family {
    protocol: Protocol::Pop3,
    implicit_tls_possible: true,
    capability_option: PerditionOption::PopCapability,
    dotted_capabilities: true,
};

static MANAGESIEVE: Family = Family {
    protocol: Protocol::Managesieve,
    implicit_tls_possible: false,
    capability_option: PerditionOption::ManagesieveCapability,
    dotted_capabilities: false,
};

const fn words(
    names: &'static [&'static str],
    (implicit, port): (bool, u16),
    instance: &'static str,
    file_word: &'static str,
    family: &'static Family,
) -> ProtocolWords {
    ProtocolWords {
        names,
        implicit,
        port,
        instance,
        file_word,
        family,
    }
}

static PROTOCOL_WORDS: [ProtocolWords; 5] = [
    words(&["POP3"], (false, 110), "perdition.pop3", "pop3", &POP3),
    words(&["POP3S"], (true, 995), "perdition.pop3s", "pop3s", &POP3),
    words(
        &["IMAP4", "IMAP"],
        (false, 143),
        "perdition.imap4",
        "imap4",
        &IMAP,
    ),
    words(
        &["IMAP4S", "IMAPS"],
        (true, 993),
        "perdition.imaps",
        "imap4s",
        &IMAP,
    ),
    words(
        &["MANAGESIEVE"],
        (false, 4190),
        "perdition.managesieve",
        "managesieve",
        &MANAGESIEVE,
    ),
];

fn protocol_words(value: &str) -> Result<&'static ProtocolWords, PerditionError> {
    let value = value.to_ascii_uppercase();
    PROTOCOL_WORDS
        .iter()
        .find(|w| w.names.contains(&value.as_str()))
        .ok_or(PerditionError::UnknownProtocol(value))
}

#[cfg(test)]
mod testing {
    use super::*;

    pub fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    pub fn config_of(invoked_as: &str, a: &[&str]) -> Compat {
        build(&parse_args(&args(a)).unwrap(), invoked_as).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::super::ListenerTls;
    use super::testing::config_of;
    use super::*;

    #[test]
    fn the_configuration_file_is_searched_for_as_perdition_does() {
        let dir = tempfile::tempdir().unwrap();
        let search = |invoked_as: &str, protocol: Option<&str>| {
            search_config_file(dir.path(), invoked_as, protocol)
                .unwrap()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        };
        assert_eq!(search("perdition.imaps", None), None);
        std::fs::write(dir.path().join("perdition.conf"), "").unwrap();
        assert_eq!(search("perdition", None).as_deref(), Some("perdition.conf"));
        std::fs::write(dir.path().join("perdition.imap4s.conf"), "").unwrap();
        // perdition.imaps stands for IMAP4S, whose file is named imap4s.
        assert_eq!(
            search("perdition.imaps", None).as_deref(),
            Some("perdition.imap4s.conf")
        );
        // -P names the protocol for `portcullis perdition`; without it, POP3.
        assert_eq!(
            search("perdition", Some("imaps")).as_deref(),
            Some("perdition.imap4s.conf")
        );
        assert_eq!(search("perdition", None).as_deref(), Some("perdition.conf"));
        // The program's own name comes first.
        std::fs::write(dir.path().join("perdition.imaps.conf"), "").unwrap();
        assert_eq!(
            search("perdition.imaps", None).as_deref(),
            Some("perdition.imaps.conf")
        );
        // ... except for plain `perdition`, whose own file is perdition.conf, searched last.
        std::fs::write(dir.path().join("perdition.pop3.conf"), "").unwrap();
        assert_eq!(
            search("perdition", None).as_deref(),
            Some("perdition.pop3.conf")
        );
    }

    #[test]
    fn program_names_are_perditions_and_set_protocol_ident_and_pid_file() {
        assert_eq!(
            invocation_name("/usr/sbin/perdition.imaps").as_deref(),
            Some("perdition.imaps")
        );
        assert_eq!(invocation_name("perdition").as_deref(), Some("perdition"));
        assert_eq!(invocation_name("/usr/bin/portcullis"), None);
        assert_eq!(invocation_name("/usr/bin/perditionx"), None);

        for (name, protocol, tls, port) in [
            ("perdition.imap4", Protocol::Imap, ListenerTls::None, 143),
            (
                "perdition.imap4s",
                Protocol::Imap,
                ListenerTls::Implicit,
                993,
            ),
            (
                "perdition.imaps",
                Protocol::Imap,
                ListenerTls::Implicit,
                993,
            ),
            ("perdition.pop3", Protocol::Pop3, ListenerTls::None, 110),
            (
                "perdition.pop3s",
                Protocol::Pop3,
                ListenerTls::Implicit,
                995,
            ),
            (
                "perdition.managesieve",
                Protocol::Managesieve,
                ListenerTls::None,
                4190,
            ),
        ] {
            let c = config_of(name, &["-s", "m"]).config;
            let l = &c.listeners[0];
            assert_eq!((l.protocol, l.tls), (protocol, tls), "{name}");
            assert_eq!(l.bind, [format!("0.0.0.0:{port}")], "{name}");
            assert_eq!(c.log.ident, name);
            assert_eq!(
                c.process.pid_file,
                Some(format!("/var/run/{name}/{name}.pid")),
                "{name}"
            );
        }
        // -P wins over the name, which still names the log and the pid file, as in Perdition.
        let c = config_of("perdition.imap4", &["-s", "m", "-P", "POP3"]).config;
        assert_eq!(c.listeners[0].protocol, Protocol::Pop3);
        assert_eq!(c.log.ident, "perdition.imap4");
        // Plain perdition, as `portcullis perdition`: POP3, named after -P's instance.
        let c = config_of("perdition", &["-s", "m"]).config;
        assert_eq!(c.listeners[0].protocol, Protocol::Pop3);
        assert_eq!(
            c.process.pid_file.as_deref(),
            Some("/var/run/perdition.pop3/perdition.pop3.pid")
        );
        let c = config_of("perdition", &["-s", "m", "-P", "IMAP4S"]).config;
        assert_eq!(
            c.process.pid_file.as_deref(),
            Some("/var/run/perdition.imaps/perdition.imaps.pid")
        );
    }

    #[test]
    fn an_empty_pid_file_or_inetd_mode_means_none() {
        let c = config_of("perdition", &["-s", "m", "--pid_file", ""]).config;
        assert_eq!(c.process.pid_file, None);
        let c = config_of("perdition", &["-s", "m", "--pid_file", "/run/p.pid"]).config;
        assert_eq!(c.process.pid_file.as_deref(), Some("/run/p.pid"));
        let c = config_of("perdition", &["-s", "m", "-i"]);
        assert!(c.inetd);
        assert_eq!(c.config.process.pid_file, None);
        // inetd starts it for each connection: detaching is no question then.
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }
}
