//! Perdition compatibility: Perdition 2.2's command-line flags, configuration files and program
//! names, turned into a native [`Config`] with one listener.
//!
//! The file format is Perdition's (read as its `vanessa_config_file_read` reads it): one
//! `option value` per line, the option being the long (or one-letter) flag name without dashes;
//! `#` starts a comment anywhere outside quotes; `\` before a line end joins the next line (a
//! comment goes on too), before any other character takes it literally; `'...'` is literal and
//! `"..."` literal but for `\` escapes; quoted and unquoted pieces join. Flags on the command
//! line override the file. Without `-f`, the file is searched for as Perdition does (see
//! [`default_config_file`]).
//!
//! Every Perdition option is known here: implemented, accepted with a warning that says why it
//! has no effect, or (`authenticate_in`) refused with the reason. A proxy that silently ignored
//! `add_domain` would send users to the wrong place.

use std::path::{Path, PathBuf};

use super::users::{Stages, UserNames};
use super::{
    Backend, BackendTls, CertificateFlaw, Config, Limits, Listener, ListenerTls, LogConfig,
    LogPasswd, MapConfig, MapKind, TlsVersion,
};
use crate::protocol::Protocol;

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

/// How Portcullis takes a Perdition option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Support {
    /// It does what Perdition's does.
    Implemented,
    /// Accepted; when given, a warning with this reason says why it changes nothing.
    NoEffect(&'static str),
    /// An error with this reason.
    Refused(&'static str),
}

use Support::{Implemented, NoEffect, Refused};

/// One Perdition 2.2 option.
#[derive(Debug)]
struct PerditionOption {
    name: &'static str,
    letter: Option<char>,
    takes_value: bool,
    support: Support,
}

const fn opt(
    name: &'static str,
    letter: Option<char>,
    takes_value: bool,
    support: Support,
) -> PerditionOption {
    PerditionOption {
        name,
        letter,
        takes_value,
        support,
    }
}

/// Every option of Perdition 2.2's man page and `--help`.
const OPTIONS: &[PerditionOption] = &[
    opt("add_domain", Some('A'), true, Implemented),
    opt(
        "authenticate_in",
        Some('a'),
        false,
        Refused(
            "Perdition's local PAM check before the back end is not available: Portcullis \
             cannot check passwords itself, and skipping the check would let in users PAM \
             refuses",
        ),
    ),
    opt("authenticate_timeout", None, true, Implemented),
    opt("bind_address", Some('b'), true, Implemented),
    opt("capability", Some('I'), true, Implemented),
    opt("client_server_specification", Some('c'), false, Implemented),
    opt("config_file", Some('f'), true, Implemented),
    opt("connect_relog", None, true, Implemented),
    opt("connection_limit", Some('L'), true, Implemented),
    opt(
        "connection_logging",
        Some('C'),
        false,
        NoEffect("the pre-login conversation holds passwords, which are not logged that way"),
    ),
    opt("debug", Some('d'), false, Implemented),
    opt("domain_delimiter", Some('D'), true, Implemented),
    opt("explicit_domain", Some('e'), true, Implemented),
    opt("group", Some('g'), true, Implemented),
    opt("help", Some('h'), false, Implemented),
    opt("imap_capability", None, true, Implemented),
    opt("inetd_mode", Some('i'), false, Implemented),
    opt("listen_port", Some('l'), true, Implemented),
    opt("log_facility", Some('F'), true, Implemented),
    opt("log_passwd", None, true, Implemented),
    opt("login_disabled", None, false, Implemented),
    opt("lower_case", None, true, Implemented),
    opt("managesieve_capability", None, true, Implemented),
    opt("map_library", Some('M'), true, Implemented),
    opt("map_library_opt", Some('m'), true, Implemented),
    // The greeting names the host, which is what -B asks for.
    opt("no_bind_banner", Some('B'), false, Implemented),
    opt("no_daemon", None, false, Implemented),
    // Portcullis never resolves client or local addresses.
    opt("no_lookup", Some('n'), false, Implemented),
    opt("ok_line", Some('O'), true, Implemented),
    opt("outgoing_port", Some('p'), true, Implemented),
    opt("outgoing_server", Some('s'), true, Implemented),
    opt("pid_file", None, true, Implemented),
    opt("pop_capability", None, true, Implemented),
    opt("protocol", Some('P'), true, Implemented),
    opt("query_key", None, true, Implemented),
    opt("quiet", Some('q'), false, Implemented),
    opt("server_ok_line", None, false, Implemented),
    opt("server_resp_line", Some('o'), false, Implemented),
    opt("ssl_ca_accept_self_signed", None, false, Implemented),
    opt("ssl_ca_chain_file", None, true, Implemented),
    opt("ssl_ca_file", None, true, Implemented),
    opt("ssl_ca_path", None, true, Implemented),
    opt("ssl_cert_accept_expired", None, false, Implemented),
    opt("ssl_cert_accept_not_yet_valid", None, false, Implemented),
    opt("ssl_cert_accept_self_signed", None, false, Implemented),
    opt("ssl_cert_file", None, true, Implemented),
    opt(
        "ssl_cert_verify_depth",
        None,
        true,
        NoEffect("rustls bounds the chains it builds itself"),
    ),
    opt(
        "ssl_dh_params_file",
        None,
        true,
        NoEffect("rustls uses ECDHE and has no finite-field DH"),
    ),
    opt("ssl_key_file", None, true, Implemented),
    opt(
        "ssl_listen_ciphers",
        None,
        true,
        NoEffect("rustls offers its own short list of strong cipher suites only"),
    ),
    opt(
        "ssl_listen_compression",
        None,
        false,
        NoEffect("rustls never compresses (CRIME)"),
    ),
    opt("ssl_listen_max_proto_version", None, true, Implemented),
    opt("ssl_listen_min_proto_version", None, true, Implemented),
    opt("ssl_mode", None, true, Implemented),
    opt("ssl_no_cert_verify", None, false, Implemented),
    opt(
        "ssl_no_cipher_server_preference",
        None,
        false,
        NoEffect("every suite rustls offers is strong; their order is rustls' own"),
    ),
    opt(
        "ssl_no_client_cert_verify",
        None,
        false,
        NoEffect("Portcullis does not ask clients for certificates"),
    ),
    opt("ssl_no_cn_verify", None, false, Implemented),
    opt(
        "ssl_outgoing_ciphers",
        None,
        true,
        NoEffect("rustls offers its own short list of strong cipher suites only"),
    ),
    opt(
        "ssl_outgoing_compression",
        None,
        false,
        NoEffect("rustls never compresses (CRIME)"),
    ),
    opt("ssl_outgoing_max_proto_version", None, true, Implemented),
    opt("ssl_outgoing_min_proto_version", None, true, Implemented),
    opt(
        "ssl_passphrase_fd",
        None,
        true,
        NoEffect("the private key is read unencrypted; an encrypted one is refused at start"),
    ),
    opt(
        "ssl_passphrase_file",
        None,
        true,
        NoEffect("the private key is read unencrypted; an encrypted one is refused at start"),
    ),
    opt("strip_domain", Some('S'), true, Implemented),
    opt("tcp_keepalive", None, false, Implemented),
    opt("timeout", Some('t'), true, Implemented),
    opt("username", Some('u'), true, Implemented),
    opt("username_from_database", Some('U'), false, Implemented),
];

fn option(name: &str) -> Result<&'static PerditionOption, String> {
    let entry = OPTIONS
        .iter()
        .find(|o| o.name == name)
        .ok_or_else(|| format!("unknown Perdition option {name:?}"))?;
    if let Refused(why) = entry.support {
        return Err(format!("Perdition option {name:?} is refused: {why}"));
    }
    Ok(entry)
}

fn option_by_letter(letter: char) -> Option<&'static PerditionOption> {
    OPTIONS.iter().find(|o| o.letter == Some(letter))
}

/// Read the command line of a program started as `invoked_as` (`perdition` for
/// `portcullis perdition`), and the configuration file it names or Perdition would find.
/// `None` when `-h` asked for help.
pub fn from_args(invoked_as: &str, args: &[String]) -> Result<Option<Compat>, String> {
    let command_line = parse_args(args)?;
    if command_line.iter().any(|(k, _)| k == "help") {
        return Ok(None);
    }
    let last = |name: &str| {
        command_line
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let file = match last("config_file") {
        // Perdition reads no file for an empty name.
        Some("") => None,
        Some(file) => Some(PathBuf::from(file)),
        None => default_config_file(invoked_as, last("protocol"))?,
    };
    let mut all = Vec::new();
    if let Some(file) = &file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read Perdition config file {}: {e}", file.display()))?;
        all = parse_file(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    // The command line comes last so that it wins.
    all.extend(command_line);
    build(&all, invoked_as).map(Some)
}

/// Perdition's search without `-f`, in its configuration directory: `<name>.conf` for a
/// program started under another name than `perdition`, then `perdition.<protocol>.conf`, then
/// `perdition.conf`; none when none exists. The protocol is `-P`'s (as the man page says),
/// else the program name's, else POP3.
pub fn default_config_file(
    invoked_as: &str,
    protocol: Option<&str>,
) -> Result<Option<PathBuf>, String> {
    search_config_file(&system_path("/etc/perdition"), invoked_as, protocol)
}

fn search_config_file(
    dir: &Path,
    invoked_as: &str,
    protocol: Option<&str>,
) -> Result<Option<PathBuf>, String> {
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

/// What a `-P` value means, and the names Perdition derives from it.
struct ProtocolWords {
    protocol: Protocol,
    /// POP3S and IMAP4S: TLS on both legs without `ssl_mode`, and their own ports.
    implicit: bool,
    /// The syslog ident, and the name of the pid file, of an instance started by
    /// Debian's init script for this protocol.
    instance: &'static str,
    /// Its word in `perdition.<protocol>.conf`.
    file_word: &'static str,
}

fn protocol_words(value: &str) -> Result<ProtocolWords, String> {
    let (protocol, implicit, instance, file_word) = match value.to_ascii_uppercase().as_str() {
        "POP3" => (Protocol::Pop3, false, "perdition.pop3", "pop3"),
        "POP3S" => (Protocol::Pop3, true, "perdition.pop3s", "pop3s"),
        "IMAP4" | "IMAP" => (Protocol::Imap, false, "perdition.imap4", "imap4"),
        "IMAP4S" | "IMAPS" => (Protocol::Imap, true, "perdition.imaps", "imap4s"),
        "MANAGESIEVE" => (
            Protocol::Managesieve,
            false,
            "perdition.managesieve",
            "managesieve",
        ),
        other => return Err(format!("unknown protocol {other:?}")),
    };
    Ok(ProtocolWords {
        protocol,
        implicit,
        instance,
        file_word,
    })
}

/// `(option, value)` pairs from the command line; flags get the value "yes".
fn parse_args(args: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (entry, inline) = if let Some(long) = arg.strip_prefix("--") {
            let (name, value) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            (option(name)?, value)
        } else if let Some(short) = arg.strip_prefix('-').filter(|s| !s.is_empty()) {
            let letter = short.chars().next().unwrap_or('-');
            let entry = option_by_letter(letter)
                .ok_or_else(|| format!("unknown Perdition option -{letter}"))?;
            let entry = option(entry.name)?;
            let rest = &short[letter.len_utf8()..];
            (entry, (!rest.is_empty()).then(|| rest.to_string()))
        } else {
            return Err(format!("unexpected argument {arg:?}"));
        };
        let value = match (entry.takes_value, inline) {
            (true, Some(v)) => v,
            (true, None) => it
                .next()
                .cloned()
                .ok_or_else(|| format!("option --{} needs a value", entry.name))?,
            (false, None) => "yes".to_string(),
            (false, Some(_)) => return Err(format!("option --{} takes no value", entry.name)),
        };
        out.push((entry.name.to_string(), value));
    }
    Ok(out)
}

/// One logical line of a configuration file: its characters, each marked literal when it was
/// quoted or escaped (such whitespace neither separates nor is trimmed).
struct LogicalLine {
    /// The line it starts on, for messages.
    number: usize,
    chars: Vec<(char, bool)>,
    /// It had quotes: `""` is an explicitly empty value.
    quoted: bool,
}

/// The file as Perdition's reader sees it: comments gone, continuations joined, quotes and
/// escapes resolved.
fn logical_lines(text: &str) -> Result<Vec<LogicalLine>, String> {
    #[derive(PartialEq)]
    enum State {
        Plain,
        Single,
        Double,
        Comment,
    }
    let mut lines = Vec::new();
    let mut number = 1;
    let new_line = |number| LogicalLine {
        number,
        chars: Vec::new(),
        quoted: false,
    };
    let mut line = new_line(number);
    let mut state = State::Plain;
    let mut it = text.chars();
    while let Some(c) = it.next() {
        if c == '\n' {
            number += 1;
        }
        match state {
            State::Plain => match c {
                '\n' => lines.push(std::mem::replace(&mut line, new_line(number))),
                '\\' => match it.next() {
                    Some('\n') => number += 1,
                    Some(next) => line.chars.push((next, true)),
                    None => {}
                },
                '#' => state = State::Comment,
                '\'' => (state, line.quoted) = (State::Single, true),
                '"' => (state, line.quoted) = (State::Double, true),
                c => line.chars.push((c, false)),
            },
            State::Comment => match c {
                '\n' => {
                    lines.push(std::mem::replace(&mut line, new_line(number)));
                    state = State::Plain;
                }
                // A comment ending in `\` goes on on the next line (Debian's sample file
                // relies on it).
                '\\' if it.next() == Some('\n') => number += 1,
                _ => {}
            },
            State::Single => match c {
                '\'' => state = State::Plain,
                '\n' => {}
                c => line.chars.push((c, true)),
            },
            State::Double => match c {
                '"' => state = State::Plain,
                '\\' => match it.next() {
                    Some('\n') => number += 1,
                    Some(next) => line.chars.push((next, true)),
                    None => {}
                },
                '\n' => {}
                c => line.chars.push((c, true)),
            },
        }
    }
    if matches!(state, State::Single | State::Double) {
        return Err(format!("line {}: a quote is not closed", line.number));
    }
    lines.push(line);
    Ok(lines)
}

/// `(option, value)` pairs from a Perdition configuration file.
fn parse_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for line in logical_lines(text)? {
        let n = line.number;
        let separator = |&(c, literal): &(char, bool)| !literal && c.is_whitespace();
        let mut chars = line.chars.as_slice();
        while chars.first().is_some_and(separator) {
            chars = &chars[1..];
        }
        while chars.last().is_some_and(separator) {
            chars = &chars[..chars.len() - 1];
        }
        if chars.is_empty() && !line.quoted {
            continue;
        }
        let key_end = chars.iter().position(separator).unwrap_or(chars.len());
        let name: String = chars[..key_end].iter().map(|(c, _)| c).collect();
        let mut rest = &chars[key_end..];
        while rest.first().is_some_and(separator) {
            rest = &rest[1..];
        }
        let value: String = rest.iter().map(|(c, _)| c).collect();
        // Perdition takes short names too (`P IMAP4`, `l 110`).
        let mut letters = name.chars();
        let long = match (letters.next(), letters.next()) {
            (Some(letter), None) => option_by_letter(letter).map_or(name.as_str(), |o| o.name),
            _ => name.as_str(),
        };
        let entry = option(long).map_err(|e| format!("line {n}: {e}"))?;
        // Options that make no sense in a file are passed over, as Perdition does.
        if matches!(entry.name, "config_file" | "help") {
            continue;
        }
        let explicitly_empty = value.is_empty() && line.quoted;
        let value = match (entry.takes_value, value.is_empty()) {
            (true, true) if explicitly_empty => value,
            (true, true) => return Err(format!("line {n}: {} needs a value", entry.name)),
            (false, true) => "yes".to_string(),
            (_, false) => value,
        };
        out.push((entry.name.to_string(), value));
    }
    Ok(out)
}

fn flag(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "on" | "true" | "1" => Ok(true),
        "no" | "off" | "false" | "0" => Ok(false),
        other => Err(format!("expected yes or no, got {other:?}")),
    }
}

fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{name}: {value:?} is not a number"))
}

/// A port number, or a service name of `/etc/services` (`imaps`, `pop3`) as Perdition takes.
fn port(name: &str, value: &str) -> Result<u16, String> {
    if let Ok(n) = value.parse() {
        return Ok(n);
    }
    service_port(value).ok_or_else(|| {
        format!("{name}: {value:?} is neither a port number nor a service in /etc/services")
    })
}

fn service_port(service: &str) -> Option<u16> {
    let services = std::fs::read_to_string("/etc/services").ok()?;
    services.lines().find_map(|line| {
        let mut words = line.split('#').next()?.split_whitespace();
        let name = words.next()?;
        let (number, transport) = words.next()?.split_once('/')?;
        let named = name == service || words.any(|alias| alias == service);
        (transport == "tcp" && named).then(|| number.parse().ok())?
    })
}

/// Perdition's 0 means "no timeout"; ten years is as good as forever.
fn seconds(name: &str, value: &str) -> Result<u64, String> {
    let s: u64 = number(name, value)?;
    Ok(if s == 0 { super::MAX_SECONDS } else { s })
}

/// The TLS versions left between a `min` and a `max` Perdition names (`sslv3`, `tlsv1`,
/// `tlsv1.1`, `tlsv1.2`, and `tlsv1.3` which Perdition 2.2 does not know); empty means all
/// that rustls has. Versions below 1.2 cannot be had and are said so once.
fn tls_versions(
    leg: &str,
    min: Option<&str>,
    max: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<Vec<TlsVersion>, String> {
    // Perdition's versions in order; rustls has the last two.
    const ORDER: [&str; 5] = ["sslv3", "tlsv1", "tlsv1.1", "tlsv1.2", "tlsv1.3"];
    let rank = |option: &str, value: &str| {
        ORDER
            .iter()
            .position(|v| v.eq_ignore_ascii_case(value))
            .ok_or_else(|| format!("{option}: unknown protocol version {value:?}"))
    };
    let min_option = format!("ssl_{leg}_min_proto_version");
    let max_option = format!("ssl_{leg}_max_proto_version");
    let low = match min {
        Some(v) => rank(&min_option, v)?,
        None => 0,
    };
    let high = match max.filter(|v| !v.is_empty()) {
        Some(v) => rank(&max_option, v)?,
        None => ORDER.len() - 1,
    };
    if high < 3 {
        return Err(format!(
            "{max_option} {}: rustls speaks TLS 1.2 and 1.3 only, nothing would be left",
            max.unwrap_or_default()
        ));
    }
    if low > high {
        return Err(format!("{min_option} is above {max_option}"));
    }
    if min.is_some() && low < 3 {
        warnings.push(format!(
            "{min_option} {}: versions below TLS 1.2 are never used (rustls)",
            min.unwrap_or_default()
        ));
    }
    if low <= 3 && high == ORDER.len() - 1 {
        return Ok(Vec::new());
    }
    let mut versions = Vec::new();
    if low <= 3 {
        versions.push(TlsVersion::Tls12);
    }
    if high == 4 {
        versions.push(TlsVersion::Tls13);
    }
    Ok(versions)
}

fn build(settings: &[(String, String)], invoked_as: &str) -> Result<Compat, String> {
    let get = |name: &str| {
        settings
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let is_set = |name: &str| -> Result<bool, String> {
        get(name).map(flag).transpose().map(|v| v.unwrap_or(false))
    };
    let mut warnings = Vec::new();
    for entry in OPTIONS {
        if let NoEffect(why) = entry.support {
            let given = match (entry.takes_value, get(entry.name)) {
                (true, Some(value)) => Some(format!("{} {value}", entry.name)),
                (false, Some(_)) if is_set(entry.name)? => Some(entry.name.to_string()),
                _ => None,
            };
            if let Some(given) = given {
                warnings.push(format!("{given} has no effect here: {why}"));
            }
        }
    }

    let words = protocol_words(
        get("protocol")
            .or(protocol_of_name(invoked_as))
            .unwrap_or("POP3"),
    )?;
    let protocol = words.protocol;
    // A program started as perdition.<name> logs and writes its pid file under that name, as
    // Perdition does; `portcullis perdition` (and plain `perdition`) under the name Debian's
    // init script gives the protocol's instance.
    let instance = match invoked_as {
        "perdition" => words.instance.to_string(),
        name => name.to_string(),
    };

    // ssl_mode: a comma-separated list. Without it, POP3S and IMAP4S mean `ssl_all`, as in
    // Perdition: TLS on both legs.
    let (mut listen, mut outgoing) = if words.implicit {
        (ListenerTls::Implicit, BackendTls::Implicit)
    } else {
        (ListenerTls::None, BackendTls::None)
    };
    if let Some(modes) = get("ssl_mode") {
        (listen, outgoing) = (ListenerTls::None, BackendTls::None);
        for mode in modes.split(',').map(str::trim) {
            match mode {
                "none" | "" => {}
                "ssl_listen" => listen = ListenerTls::Implicit,
                "ssl_outgoing" => outgoing = BackendTls::Implicit,
                "ssl_all" => {
                    listen = ListenerTls::Implicit;
                    outgoing = BackendTls::Implicit;
                }
                "tls_listen" => listen = ListenerTls::Starttls,
                "tls_listen_force" => listen = ListenerTls::StarttlsRequired,
                // Portcullis never falls back to plaintext towards a back end it was told to
                // encrypt to, so the `_force` variants and the plain ones are the same.
                "tls_outgoing" | "tls_outgoing_force" => outgoing = BackendTls::Starttls,
                "tls_all" => {
                    listen = ListenerTls::Starttls;
                    outgoing = BackendTls::Starttls;
                }
                "tls_all_force" => {
                    listen = ListenerTls::StarttlsRequired;
                    outgoing = BackendTls::Starttls;
                }
                other => return Err(format!("unknown ssl_mode {other:?}")),
            }
        }
    }
    if listen == ListenerTls::Implicit && protocol == Protocol::Managesieve {
        return Err("ssl_listen is not available for MANAGESIEVE; use tls_listen".into());
    }

    // Perdition's default ports follow the protocol, not ssl_mode: `-P IMAP4 --ssl_mode
    // ssl_listen` listens on 143 (its "mixed mode").
    let default_port = protocol.default_port(words.implicit);
    let listen_port = match get("listen_port") {
        Some(p) => port("listen_port", p)?,
        None => default_port,
    };
    let inetd = is_set("inetd_mode")?;
    let bind = match get("bind_address") {
        // Each entry is `host[:port]` like an outgoing server; `listen_port` fills in the port.
        Some(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|a| {
                let (host, entry_port) = split_host_port(a)?;
                Ok(host_port(&host, entry_port.unwrap_or(listen_port)))
            })
            .collect::<Result<_, String>>()?,
        _ => vec![format!("0.0.0.0:{listen_port}")],
    };

    let map = map(
        get("map_library"),
        get("map_library_opt"),
        is_set("username_from_database")?,
    )?;
    // Each outgoing_server keeps its own port, if it names one; outgoing_port is the port of
    // the others and of map answers without one, as in Perdition.
    let servers: Vec<String> = get("outgoing_server")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (host, server_port) = split_host_port(s)?;
            Ok(match server_port {
                Some(p) => host_port(&host, p),
                None => s.to_string(),
            })
        })
        .collect::<Result<_, String>>()?;
    if servers.is_empty() && map.is_none() {
        return Err("outgoing_server is required without a map library (-M)".into());
    }
    let host = servers.first().cloned().unwrap_or_default();
    let failover = servers.iter().skip(1).cloned().collect();
    let backend_port = match get("outgoing_port") {
        Some(p) => port("outgoing_port", p)?,
        None => default_port,
    };
    let users = user_names(&get)?;

    let capability = match protocol {
        Protocol::Imap => get("imap_capability")
            .or(get("capability"))
            .map(str::to_string),
        // Perdition separates POP3 capabilities with dots ("TOP.UIDL.USER"); the native format
        // puts each on its own line or separates them with two spaces.
        Protocol::Pop3 => get("pop_capability")
            .or(get("capability"))
            .map(|c| c.split('.').collect::<Vec<_>>().join("  ")),
        Protocol::Managesieve => get("managesieve_capability")
            .or(get("capability"))
            .map(str::to_string),
    };

    let lower_case = stages("lower_case", get("lower_case"))?;

    let debug = is_set("debug")?;
    let log_passwd = match get("log_passwd").unwrap_or("never") {
        "never" => LogPasswd::Never,
        "fail" => LogPasswd::Fail,
        "ok" => LogPasswd::Ok,
        "all" | "always" => LogPasswd::Always,
        other => return Err(format!("unknown log_passwd value {other:?}")),
    };
    // As in Perdition, passwords are only logged when debug is on too.
    let log_passwd = if debug { log_passwd } else { LogPasswd::Never };

    if !inetd && !is_set("no_daemon")? {
        warnings.push("Portcullis does not detach from the terminal; run it under systemd".into());
    }

    let defaults = Limits::default();
    let limits = Limits {
        connection_limit: get("connection_limit")
            .map(|v| number("connection_limit", v))
            .transpose()?
            .unwrap_or(0),
        // Perdition's defaults: 1800 s before and after login.
        login_timeout: seconds(
            "authenticate_timeout",
            get("authenticate_timeout").unwrap_or("1800"),
        )?,
        idle_timeout: seconds("timeout", get("timeout").unwrap_or("1800"))?,
        ..defaults
    };

    // Perdition writes its pid file as /var/run/<name>/<name>.pid unless told otherwise
    // (an empty name: none), and none in inetd mode.
    let pid_file = match get("pid_file") {
        _ if inetd => None,
        Some("") => None,
        Some(path) => Some(path.to_string()),
        None => Some(
            system_path(&format!("/var/run/{instance}/{instance}.pid"))
                .display()
                .to_string(),
        ),
    };

    let tolerate = [
        ("ssl_cert_accept_expired", CertificateFlaw::Expired),
        (
            "ssl_cert_accept_not_yet_valid",
            CertificateFlaw::NotYetValid,
        ),
        ("ssl_cert_accept_self_signed", CertificateFlaw::SelfSigned),
        ("ssl_ca_accept_self_signed", CertificateFlaw::SelfSignedCa),
        ("ssl_no_cn_verify", CertificateFlaw::Name),
    ]
    .into_iter()
    .filter_map(|(name, flaw)| is_set(name).map(|set| set.then_some(flaw)).transpose())
    .collect::<Result<Vec<_>, _>>()?;
    let listen_versions = tls_versions(
        "listen",
        get("ssl_listen_min_proto_version"),
        get("ssl_listen_max_proto_version"),
        &mut warnings,
    )?;
    let outgoing_versions = tls_versions(
        "outgoing",
        get("ssl_outgoing_min_proto_version"),
        get("ssl_outgoing_max_proto_version"),
        &mut warnings,
    )?;
    // Perdition trusts its CA directory when it exists (OpenSSL skips a missing one).
    let default_ca_path = system_path("/etc/perdition/perdition.ca/");
    let ca_path = match get("ssl_ca_path") {
        Some("") => None,
        Some(path) => Some(PathBuf::from(path)),
        None => default_ca_path.is_dir().then_some(default_ca_path),
    };

    let tls_files = listen != ListenerTls::None;
    let default_file = |name: &str| system_path(&format!("/etc/perdition/{name}"));
    let config = Config {
        log: LogConfig {
            destination: get("log_facility").unwrap_or("mail").to_string(),
            ident: instance.clone(),
            log_passwd,
            debug,
            auth_relog: get("connect_relog")
                .map(|v| number("connect_relog", v))
                .transpose()?
                .unwrap_or(300),
            quiet: is_set("quiet")?,
            ..LogConfig::default()
        },
        limits,
        // Perdition has no guard: off unless the native configuration asks for one.
        guard: super::GuardConfig::off(),
        admin: super::AdminConfig::default(),
        process: super::ProcessConfig {
            user: get("username").map(str::to_string),
            group: get("group").map(str::to_string),
            pid_file,
        },
        listeners: vec![Listener {
            protocol,
            bind,
            tls: listen,
            cert: tls_files.then(|| {
                get("ssl_cert_file")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| default_file("perdition.crt.pem"))
            }),
            key: tls_files.then(|| {
                get("ssl_key_file")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| default_file("perdition.key.pem"))
            }),
            certificates: Vec::new(),
            ticket_keys: None,
            chain: get("ssl_ca_chain_file")
                .filter(|f| tls_files && !f.is_empty())
                .map(PathBuf::from),
            tls_versions: listen_versions,
            capability,
            ok_line: if is_set("server_resp_line")? || is_set("server_ok_line")? {
                None
            } else {
                Some(get("ok_line").unwrap_or("You are so in").to_string())
            },
            lower_case,
            login_disabled: is_set("login_disabled")?,
            oauth: false,
            proxy_protocol: false,
            proxy_trusted: Vec::new(),
            login_trusted: Vec::new(),
            greeting_name: "Portcullis".into(),
            tcp_keepalive: is_set("tcp_keepalive")?,
            backend: Backend {
                host,
                failover,
                forward_client: Default::default(),
                // Perdition picks one of its servers at random for each connection.
                random_first: true,
                port: Some(backend_port),
                tls: outgoing,
                ca_file: get("ssl_ca_file")
                    .filter(|f| !f.is_empty())
                    .map(PathBuf::from),
                ca_path,
                verify: !is_set("ssl_no_cert_verify")?,
                tolerate,
                tls_versions: outgoing_versions,
                server_name: None,
            },
            users,
            map,
            client_server_specification: is_set("client_server_specification")?,
        }],
    };
    Ok(Compat {
        config,
        warnings,
        inetd,
    })
}

/// `host:port`, with an IPv6 address in brackets.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Perdition's states (`servername_lookup`, `remote_login`, `local_authentication`, `all`).
fn stages(name: &str, value: Option<&str>) -> Result<Stages, String> {
    let Some(states) = value else {
        return Ok(Stages::None);
    };
    let (mut lookup, mut login) = (false, false);
    for state in states.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match state {
            "all" => (lookup, login) = (true, true),
            "servername_lookup" => lookup = true,
            "remote_login" => login = true,
            // Portcullis never authenticates locally.
            "local_authentication" => {}
            other => return Err(format!("unknown {name} state {other:?}")),
        }
    }
    Ok(Stages::from_flags(lookup, login))
}

/// The user-name options: domain delimiter, strip and add domain, query keys.
fn user_names<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> Result<UserNames, String> {
    let defaults = UserNames::default();
    // A trailing number is the strip depth of a domain derived from reverse DNS (with
    // explicit_domain it has no effect).
    let mut domain_strip_depth = defaults.domain_strip_depth;
    let add_domain = get("add_domain").map(|value| {
        let mut states = Vec::new();
        for part in value.split(',').map(str::trim) {
            match part.parse::<u32>() {
                Ok(depth) => domain_strip_depth = depth,
                Err(_) => states.push(part),
            }
        }
        states.join(",")
    });
    Ok(UserNames {
        domain_delimiter: get("domain_delimiter")
            .map(str::to_string)
            .unwrap_or(defaults.domain_delimiter),
        strip_domain: stages("strip_domain", get("strip_domain"))?,
        add_domain: stages("add_domain", add_domain.as_deref())?,
        explicit_domain: get("explicit_domain")
            .filter(|d| !d.is_empty())
            .map(str::to_string),
        domain_strip_depth,
        lower_case: Stages::None,
        query_key: get("query_key")
            .map(|formats| {
                formats
                    .split(',')
                    .map(str::to_string)
                    .filter(|f| !f.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// The map library named by `-M`, read with `-m`, as Perdition would.
fn map(
    library: Option<&str>,
    option: Option<&str>,
    username_from_database: bool,
) -> Result<Option<MapConfig>, String> {
    let library = match library {
        Some("") => return Ok(None),
        // No -M: Perdition's default, its GDBM database.
        None => "libperditiondb_gdbm.so.0",
        Some(l) => l,
    };
    let file = library.rsplit('/').next().unwrap_or(library);
    for (library, postgres) in [
        ("libperditiondb_mysql", false),
        ("libperditiondb_postgresql", true),
    ] {
        if file.starts_with(library) {
            let (url, table) = crate::map::sql::perdition_options(option.unwrap_or(""), postgres)?;
            return Ok(Some(MapConfig {
                kind: MapKind::Sql,
                path: None,
                query: Some(crate::map::sql::table_query(&url, &table)?),
                headers: Default::default(),
                url: Some(url),
                bind_dn: None,
                bind_password: None,
                ca_file: None,
                starttls: false,
                timeout: None,
                cache_seconds: None,
                negative_cache_seconds: None,
                cache_size: None,
                master_user: None,
                master_password: None,
                master_separator: None,
                username_from_map: username_from_database,
            }));
        }
    }
    if file.starts_with("libperditiondb_ldap") {
        return Ok(Some(MapConfig {
            kind: MapKind::Ldap,
            path: None,
            url: Some(
                option
                    .filter(|o| !o.is_empty())
                    .unwrap_or(crate::map::ldap::PERDITION_DEFAULT_URL)
                    .to_string(),
            ),
            query: None,
            headers: Default::default(),
            bind_dn: None,
            bind_password: None,
            ca_file: None,
            starttls: false,
            timeout: None,
            cache_seconds: None,
            negative_cache_seconds: None,
            cache_size: None,
            master_user: None,
            master_password: None,
            master_separator: None,
            username_from_map: username_from_database,
        }));
    }
    let (kind, default_path) = if file.starts_with("libperditiondb_posix_regex") {
        (MapKind::PopmapRe, "/etc/perdition/popmap.re")
    } else if file.starts_with("libperditiondb_gdbm") {
        (MapKind::Gdbm, crate::map::gdbm::PERDITION_DEFAULT_PATH)
    } else {
        let instead = match file.split('.').next().unwrap_or(file) {
            "libperditiondb_bdb" => {
                "the Berkeley DB database is not read; build the GDBM one (makegdbm) or use the \
                 flat popmap text with the native [listener.map] kind = \"popmap\""
            }
            "libperditiondb_nis" => "NIS is not supported; export the map to a popmap file",
            "libperditiondb_daemon" | "libperditiondb_daemon_base" => {
                "the external map daemon is not supported"
            }
            _ => "unknown map library",
        };
        return Err(format!("map_library {library:?}: {instead}"));
    };
    Ok(Some(MapConfig {
        kind,
        path: Some(PathBuf::from(
            option.filter(|o| !o.is_empty()).unwrap_or(default_path),
        )),
        url: None,
        query: None,
        headers: Default::default(),
        bind_dn: None,
        bind_password: None,
        ca_file: None,
        starttls: false,
        timeout: None,
        cache_seconds: None,
        negative_cache_seconds: None,
        cache_size: None,
        master_user: None,
        master_password: None,
        master_separator: None,
        username_from_map: username_from_database,
    }))
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("bad server {s:?}"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(port("server port", p)?),
            None => None,
        };
        return Ok((host.to_string(), port));
    }
    match s.matches(':').count() {
        0 => Ok((s.to_string(), None)),
        1 => {
            let (h, p) = s.split_once(':').unwrap_or((s, ""));
            Ok((h.to_string(), Some(port("server port", p)?)))
        }
        // A bare IPv6 address.
        _ => Ok((s.to_string(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"outgoing_server 192.0.2.10
outgoing_port 143
lower_case all
connection_limit 100
no_lookup
timeout 30
#debug
imap_capability "IMAP4rev1 LOGIN-REFERRALS ID ENABLE IDLE LITERAL+"
ssl_mode ssl_listen
ssl_cert_file /path/to/cert.pem
ssl_key_file /path/to/key.pem
ssl_dh_params_file /path/to/dhparm.pem
"#;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_seed_snippet_reads_as_an_imaps_listener() {
        let mut s = parse_file(SEED).unwrap();
        s.extend(parse_args(&args(&["-P", "IMAP4S", "--no_daemon"])).unwrap());
        let c = build(&s, "perdition").unwrap();
        let l = &c.config.listeners[0];
        assert_eq!(l.protocol, Protocol::Imap);
        assert_eq!(l.tls, ListenerTls::Implicit);
        assert_eq!(l.bind, vec!["0.0.0.0:993".to_string()]);
        assert_eq!(l.backend.host, "192.0.2.10");
        assert_eq!(l.backend.port, Some(143));
        assert_eq!(l.lower_case, Stages::All);
        assert_eq!(
            l.capability.as_deref(),
            Some("IMAP4rev1 LOGIN-REFERRALS ID ENABLE IDLE LITERAL+")
        );
        assert_eq!(l.ok_line.as_deref(), Some("You are so in"));
        assert_eq!(c.config.limits.connection_limit, 100);
        assert_eq!(c.config.limits.idle_timeout, 30);
        assert_eq!(c.config.log.ident, "perdition.imaps");
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("ssl_dh_params_file"));
    }

    #[test]
    fn command_line_overrides_the_file_and_accepts_both_flag_styles() {
        let mut s = parse_file(SEED).unwrap();
        s.extend(
            parse_args(&args(&[
                "--bind_address=127.0.0.1,::1",
                "--listen_port",
                "10993",
                "-F-",
                "-t",
                "60",
            ]))
            .unwrap(),
        );
        let c = build(&s, "perdition").unwrap().config;
        assert_eq!(
            c.listeners[0].bind,
            vec!["127.0.0.1:10993".to_string(), "[::1]:10993".to_string()]
        );
        assert_eq!(c.log.destination, "-");
        assert_eq!(c.limits.idle_timeout, 60);
    }

    #[test]
    fn unsupported_and_unknown_options_are_named() {
        let e = parse_file("authenticate_in\n").unwrap_err();
        assert!(e.contains("authenticate_in") && e.contains("line 1"), "{e}");
        let e = parse_args(&args(&["--frobnicate"])).unwrap_err();
        assert!(e.contains("frobnicate"), "{e}");
    }

    #[test]
    fn ssl_modes_map_to_listener_and_backend_tls() {
        let build_mode = |mode: &str| {
            let s = parse_args(&args(&["-s", "mail", "--ssl_mode", mode, "-P", "IMAP4"])).unwrap();
            let c = build(&s, "perdition").unwrap().config;
            (c.listeners[0].tls, c.listeners[0].backend.tls)
        };
        assert_eq!(build_mode("none"), (ListenerTls::None, BackendTls::None));
        assert_eq!(
            build_mode("ssl_all"),
            (ListenerTls::Implicit, BackendTls::Implicit)
        );
        assert_eq!(
            build_mode("ssl_outgoing"),
            (ListenerTls::None, BackendTls::Implicit)
        );
        assert_eq!(
            build_mode("tls_listen"),
            (ListenerTls::Starttls, BackendTls::None)
        );
        assert_eq!(
            build_mode("tls_listen_force,tls_outgoing"),
            (ListenerTls::StarttlsRequired, BackendTls::Starttls)
        );
        assert!(parse_args(&args(&["--ssl_mode", "bogus"]))
            .map(|s| build(&s, "perdition"))
            .unwrap()
            .is_err());
    }

    #[test]
    fn secure_protocols_without_ssl_mode_mean_ssl_all() {
        let s = parse_args(&args(&["-s", "mail", "-P", "POP3S"])).unwrap();
        let c = build(&s, "perdition").unwrap().config;
        assert_eq!(c.listeners[0].tls, ListenerTls::Implicit);
        assert_eq!(c.listeners[0].backend.tls, BackendTls::Implicit);
        assert_eq!(c.listeners[0].backend.port_for(Protocol::Pop3), 995);
        assert_eq!(c.log.ident, "perdition.pop3s");
    }

    #[test]
    fn pop_capability_is_dot_separated_as_in_perdition() {
        let s = parse_args(&args(&["-s", "m", "--pop_capability", "TOP.UIDL.USER"])).unwrap();
        let c = build(&s, "perdition").unwrap().config;
        assert_eq!(
            c.listeners[0].capability.as_deref(),
            Some("TOP  UIDL  USER")
        );
    }

    #[test]
    fn log_passwd_needs_debug_as_in_perdition() {
        let s = parse_args(&args(&["-s", "m", "--log_passwd", "fail"])).unwrap();
        assert_eq!(
            build(&s, "perdition").unwrap().config.log.log_passwd,
            LogPasswd::Never
        );
        let s = parse_args(&args(&["-s", "m", "--log_passwd", "fail", "-d"])).unwrap();
        assert_eq!(
            build(&s, "perdition").unwrap().config.log.log_passwd,
            LogPasswd::Fail
        );
    }

    #[test]
    fn bind_addresses_may_carry_their_own_port() {
        let s = parse_args(&args(&["-s", "m", "-b", "127.0.0.1:1995,::1", "-l", "110"])).unwrap();
        let c = build(&s, "perdition").unwrap().config;
        assert_eq!(c.listeners[0].bind, vec!["127.0.0.1:1995", "[::1]:110"]);
    }

    #[test]
    fn no_map_library_and_quoting_as_perdition_writes_them() {
        let settings = parse_file(
            "map_library \"\"\nimap_capability 'IMAP4 IMAP4REV1 LITERAL+'\noutgoing_server m\nP IMAP4\nl 20152\n",
        )
        .unwrap();
        let c = build(&settings, "perdition").unwrap().config;
        assert_eq!(c.listeners[0].bind, vec!["0.0.0.0:20152"]);
        assert_eq!(
            c.listeners[0].capability.as_deref(),
            Some("IMAP4 IMAP4REV1 LITERAL+")
        );
        let s = build(
            &parse_args(&args(&["-M", "libperditiondb_bdb.so.0", "-s", "m"])).unwrap(),
            "perdition",
        )
        .unwrap_err();
        assert!(s.contains("map_library") && s.contains("Berkeley"), "{s}");
        let s = build(
            &parse_args(&args(&["-M", "/usr/lib/libperditiondb_nis.so.0"])).unwrap(),
            "perdition",
        )
        .unwrap_err();
        assert!(s.contains("NIS"), "{s}");
    }

    #[test]
    fn perdition_defaults_and_the_options_that_shape_answers() {
        let s = parse_args(&args(&["-s", "m", "-P", "IMAP4"])).unwrap();
        let c = build(&s, "perdition").unwrap().config;
        assert_eq!(c.limits.login_timeout, 1800);
        assert_eq!(c.limits.idle_timeout, 1800);
        assert!(!c.listeners[0].login_disabled);

        let file = "outgoing_server m\nprotocol MANAGESIEVE\nauthenticate_timeout 2\nlogin_disabled\nok_line \"Welcome aboard\"\nmanagesieve_capability \"\\\"SIEVE\\\" \\\"fileinto\\\"  \\\"VERSION\\\" \\\"1.0\\\"\"\n";
        let c = build(&parse_file(file).unwrap(), "perdition")
            .unwrap()
            .config;
        let l = &c.listeners[0];
        assert_eq!(c.limits.login_timeout, 2);
        assert!(l.login_disabled);
        assert_eq!(l.ok_line.as_deref(), Some("Welcome aboard"));
        assert_eq!(
            l.capability.as_deref(),
            Some("\"SIEVE\" \"fileinto\"  \"VERSION\" \"1.0\"")
        );

        let s = parse_args(&args(&["-s", "m", "-o", "-O", "ignored"])).unwrap();
        assert_eq!(
            build(&s, "perdition").unwrap().config.listeners[0].ok_line,
            None
        );
    }

    #[test]
    fn servers_with_ports_and_ipv6() {
        assert_eq!(
            split_host_port("mail:1143").unwrap(),
            ("mail".into(), Some(1143))
        );
        assert_eq!(
            split_host_port("[::1]:143").unwrap(),
            ("::1".into(), Some(143))
        );
        assert_eq!(
            split_host_port("2001:db8::1").unwrap(),
            ("2001:db8::1".into(), None)
        );
    }

    fn config_of(invoked_as: &str, a: &[&str]) -> Compat {
        build(&parse_args(&args(a)).unwrap(), invoked_as).unwrap()
    }

    /// The file options of `text`, by name.
    fn file_values(text: &str) -> Vec<(String, String)> {
        parse_file(text).unwrap()
    }

    #[test]
    fn debians_sample_file_with_its_continued_comment_reads_as_no_option() {
        // The end of /etc/perdition/perdition.conf as Debian ships it: a commented-out option
        // whose value goes on over continued lines, each of which starts with a quote.
        let sample = "#imap_capability IMAP4 IMAP4REV1 LITERAL+\n\
            \n\
            #managesieve_capability \\\n\
            \"\\\"IMPLEMENTATION\\\" \\\"perdition\\\"  \"\\\n\
            \"\\\"SIEVE\\\" \\\"comparator-i;octet \"\\\n\
            \"copy i\"\\\n\
            \"nclude \"\\\n\
            \"\\\"VERSION\\\" \\\"1.18\\\"\"\n\
            \n\
            # i|inetd_mode: \n\
            #inetd_mode\n";
        assert_eq!(file_values(sample), Vec::<(String, String)>::new());
        // Uncommented, the same lines are one value.
        let value = file_values(&sample.replace("#managesieve", "managesieve"));
        assert_eq!(
            value,
            [(
                "managesieve_capability".to_string(),
                "\"IMPLEMENTATION\" \"perdition\"  \"SIEVE\" \"comparator-i;octet copy include \
                 \"VERSION\" \"1.18\""
                    .to_string()
            )]
        );
    }

    #[test]
    fn quotes_escapes_and_comments_as_debians_perdition_reads_them() {
        // Each expected value is what perdition 2.2 logged (-d) for the same line.
        let file = "ok_line   Hello   world  # trailing comment\n\
            imap_capability \"IMAP4 \\\"x\\\" y\"z'a\\b' \\#q\n\
            pop_capability A.\\\nB.C\n\
            # comment \\\n\
            explicit_domain notread\n\
            domain_delimiter '#'\n\
            query_key \\u,\\D\\d\n\
            map_library_opt \"a\\\\b\\nc\" d\\\\e\n\
            lower_case 'it''s'   \"x\"'y'\n\
            strip_domain ab#cd\n\
            add_domain \"a  \" \n";
        let values = file_values(file);
        let get = |name: &str| {
            values
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("ok_line"), Some("Hello   world"));
        assert_eq!(get("imap_capability"), Some("IMAP4 \"x\" yza\\b #q"));
        assert_eq!(get("pop_capability"), Some("A.B.C"));
        assert_eq!(get("explicit_domain"), None);
        assert_eq!(get("domain_delimiter"), Some("#"));
        // An unquoted backslash is dropped: Perdition's users quote their query keys.
        assert_eq!(get("query_key"), Some("u,Dd"));
        assert_eq!(get("map_library_opt"), Some("a\\bnc d\\e"));
        assert_eq!(get("lower_case"), Some("its   xy"));
        assert_eq!(get("strip_domain"), Some("ab"));
        assert_eq!(get("add_domain"), Some("a  "));
        let e = parse_file("ok_line \"never closed\n").unwrap_err();
        assert!(e.contains("line 1") && e.contains("quote"), "{e}");
    }

    #[test]
    fn options_that_make_no_sense_in_a_file_are_passed_over() {
        assert_eq!(
            file_values("config_file /elsewhere.conf\nhelp\nl 110\n"),
            [("listen_port".to_string(), "110".to_string())]
        );
    }

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

    #[test]
    fn default_ports_follow_the_protocol_and_ports_may_be_service_names() {
        // Perdition's "mixed mode": IMAP4 with SSL listening stays on 143, both legs.
        let c = config_of(
            "perdition",
            &["-s", "m", "-P", "IMAP4", "--ssl_mode", "ssl_all"],
        );
        let l = &c.config.listeners[0];
        assert_eq!(l.tls, ListenerTls::Implicit);
        assert_eq!(l.bind, ["0.0.0.0:143"]);
        assert_eq!(l.backend.port, Some(143));
        let c = config_of(
            "perdition",
            &["-s", "m:pop3s,n", "-l", "imaps", "-p", "pop3"],
        );
        let l = &c.config.listeners[0];
        assert_eq!(l.bind, ["0.0.0.0:993"]);
        assert_eq!(
            (l.backend.host.as_str(), l.backend.port),
            ("m:995", Some(110))
        );
        let e = build(
            &parse_args(&args(&["-s", "m", "-l", "no-such-service"])).unwrap(),
            "perdition",
        )
        .unwrap_err();
        assert!(
            e.contains("listen_port") && e.contains("no-such-service"),
            "{e}"
        );
    }

    #[test]
    fn logging_options_map_to_the_log_settings() {
        let c = config_of("perdition", &["-s", "m"]).config;
        assert_eq!(
            c.log.auth_relog, 300,
            "Perdition relogs every 300 s by default"
        );
        assert!(!c.log.quiet);
        let c = config_of("perdition", &["-s", "m", "--connect_relog", "0", "-q"]).config;
        assert_eq!(c.log.auth_relog, 0);
        assert!(c.log.quiet);
        assert!(build(
            &parse_args(&args(&["-s", "m", "--connect_relog", "5m"])).unwrap(),
            "perdition"
        )
        .is_err());
    }

    #[test]
    fn server_ok_line_is_the_old_name_of_server_resp_line() {
        let c = config_of("perdition", &["-s", "m", "--server_ok_line"]).config;
        assert_eq!(c.listeners[0].ok_line, None);
        let c = config_of("perdition", &["-s", "m"]).config;
        assert_eq!(c.listeners[0].ok_line.as_deref(), Some("You are so in"));
    }

    #[test]
    fn tcp_keepalive_and_the_bind_banner() {
        let c = config_of("perdition", &["-s", "m", "--tcp_keepalive", "-B"]);
        assert!(c.config.listeners[0].tcp_keepalive);
        assert!(c.warnings.iter().all(|w| !w.contains("no_bind_banner")));
        assert!(!config_of("perdition", &["-s", "m"]).config.listeners[0].tcp_keepalive);
    }

    #[test]
    fn certificate_leniencies_map_to_the_flaws_forgiven() {
        let c = config_of(
            "perdition",
            &[
                "-s",
                "m",
                "--ssl_cert_accept_expired",
                "--ssl_cert_accept_not_yet_valid",
                "--ssl_cert_accept_self_signed",
                "--ssl_ca_accept_self_signed",
                "--ssl_no_cn_verify",
                "--ssl_ca_path",
                "/etc/ssl/certs",
            ],
        )
        .config;
        let b = &c.listeners[0].backend;
        assert_eq!(
            b.tolerate,
            [
                CertificateFlaw::Expired,
                CertificateFlaw::NotYetValid,
                CertificateFlaw::SelfSigned,
                CertificateFlaw::SelfSignedCa,
                CertificateFlaw::Name
            ]
        );
        assert!(b.verify);
        assert_eq!(b.ca_path.as_deref(), Some(Path::new("/etc/ssl/certs")));
        let b = &config_of("perdition", &["-s", "m"]).config.listeners[0].backend;
        assert!(b.tolerate.is_empty());
    }

    #[test]
    fn the_chain_file_goes_with_a_tls_listener() {
        let c = config_of(
            "perdition",
            &[
                "-s",
                "m",
                "-P",
                "IMAP4S",
                "--ssl_ca_chain_file",
                "/c/chain.pem",
            ],
        )
        .config;
        assert_eq!(
            c.listeners[0].chain.as_deref(),
            Some(Path::new("/c/chain.pem"))
        );
        let c = config_of(
            "perdition",
            &["-s", "m", "--ssl_ca_chain_file", "/c/chain.pem"],
        )
        .config;
        assert_eq!(
            c.listeners[0].chain, None,
            "no TLS listener, no chain to send"
        );
    }

    #[test]
    fn protocol_versions_map_to_what_rustls_has() {
        let versions = |a: &[&str]| {
            let mut all = vec!["-s", "m", "--no_daemon"];
            all.extend(a);
            let c = build(&parse_args(&args(&all)).unwrap(), "perdition")?;
            let l = &c.config.listeners[0];
            Ok::<_, String>((
                l.tls_versions.clone(),
                l.backend.tls_versions.clone(),
                c.warnings,
            ))
        };
        let (listen, outgoing, warnings) = versions(&[]).unwrap();
        assert!(listen.is_empty() && outgoing.is_empty() && warnings.is_empty());
        let (listen, _, _) = versions(&["--ssl_listen_max_proto_version", "tlsv1.2"]).unwrap();
        assert_eq!(listen, [TlsVersion::Tls12]);
        let (_, outgoing, _) = versions(&["--ssl_outgoing_min_proto_version", "TLSv1.3"]).unwrap();
        assert_eq!(outgoing, [TlsVersion::Tls13]);
        // Perdition's default minimum, said out loud: rustls has nothing below 1.2.
        let (listen, _, warnings) = versions(&["--ssl_listen_min_proto_version", "tlsv1"]).unwrap();
        assert!(listen.is_empty());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("ssl_listen_min_proto_version"),
            "{warnings:?}"
        );
        let e = versions(&["--ssl_outgoing_max_proto_version", "tlsv1.1"]).unwrap_err();
        assert!(
            e.contains("ssl_outgoing_max_proto_version") && e.contains("1.2"),
            "{e}"
        );
        let e = versions(&["--ssl_listen_min_proto_version", "tls2"]).unwrap_err();
        assert!(e.contains("tls2"), "{e}");
    }

    #[test]
    fn options_without_effect_say_why_in_one_line_each() {
        let given = [
            "--ssl_listen_ciphers",
            "HIGH",
            "--ssl_outgoing_ciphers",
            "HIGH",
            "--ssl_listen_compression",
            "--ssl_outgoing_compression",
            "--ssl_no_cipher_server_preference",
            "--ssl_no_client_cert_verify",
            "--ssl_cert_verify_depth",
            "3",
            "--ssl_passphrase_fd",
            "0",
            "--ssl_passphrase_file",
            "/p",
            "--ssl_dh_params_file",
            "/dh.pem",
            "-C",
            "--no_daemon",
        ];
        let mut all = vec!["-s", "m"];
        all.extend(given);
        let c = config_of("perdition", &all);
        let options: Vec<&str> = given
            .iter()
            .filter_map(|a| a.strip_prefix("--"))
            .filter(|a| *a != "no_daemon")
            .chain(["connection_logging"])
            .collect();
        assert_eq!(c.warnings.len(), options.len(), "{:#?}", c.warnings);
        for option in options {
            let line = c.warnings.iter().find(|w| w.starts_with(option));
            let line = line.unwrap_or_else(|| panic!("no warning for {option}: {:#?}", c.warnings));
            assert!(
                line.contains("no effect here: ") && !line.contains('\n'),
                "{line}"
            );
        }
        // Not given, not mentioned.
        assert!(config_of("perdition", &["-s", "m", "--no_daemon"])
            .warnings
            .is_empty());
    }

    #[test]
    fn authenticate_in_is_refused_with_the_reason() {
        let e = parse_args(&args(&["-a"])).unwrap_err();
        assert!(e.contains("authenticate_in") && e.contains("PAM"), "{e}");
    }

    #[test]
    fn every_option_of_perditions_man_page_is_known() {
        // The options section of perdition(8) and `perdition --help`, 2.2.
        let man_page = "add_domain authenticate_timeout authenticate_in no_bind_banner \
            bind_address connection_logging connect_relog client_server_specification \
            domain_delimiter debug explicit_domain log_facility config_file group help \
            capability imap_capability inetd_mode connection_limit listen_port login_disabled \
            log_passwd lower_case managesieve_capability map_library map_library_opt no_daemon \
            no_lookup ok_line server_ok_line server_resp_line protocol outgoing_port \
            outgoing_server pid_file pop_capability strip_domain timeout tcp_keepalive username \
            username_from_database quiet query_key ssl_mode ssl_ca_chain_file ssl_ca_file \
            ssl_ca_path ssl_ca_accept_self_signed ssl_cert_file ssl_dh_params_file \
            ssl_cert_accept_self_signed ssl_cert_accept_expired ssl_cert_accept_not_yet_valid \
            ssl_cert_verify_depth ssl_key_file ssl_listen_ciphers ssl_outgoing_ciphers \
            ssl_no_cert_verify ssl_no_client_cert_verify ssl_no_cn_verify ssl_passphrase_fd \
            ssl_passphrase_file ssl_listen_min_proto_version ssl_outgoing_min_proto_version \
            ssl_listen_max_proto_version ssl_outgoing_max_proto_version ssl_listen_compression \
            ssl_outgoing_compression ssl_no_cipher_server_preference";
        for name in man_page.split_whitespace() {
            let entry = OPTIONS.iter().find(|o| o.name == name);
            let entry = entry.unwrap_or_else(|| panic!("{name} is not in OPTIONS"));
            if name != "authenticate_in" {
                assert!(!matches!(entry.support, Refused(_)), "{name}");
            }
        }
        assert_eq!(OPTIONS.len(), man_page.split_whitespace().count());
    }
}
