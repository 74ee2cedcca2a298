//! Perdition compatibility: Perdition 2.2's command-line flags and configuration-file format,
//! turned into a native [`Config`] with one listener.
//!
//! The file format is Perdition's: one `option value` per line, the option being the long (or
//! one-letter) flag name without dashes, `#` comments, values optionally in double quotes
//! (`\"` and `\\` escaped) or single quotes (literal). Flags on the command
//! line override the file. Options Portcullis does not implement are errors that name the
//! option: a proxy that silently ignores `add_domain` would send users to the wrong place.

use std::path::PathBuf;

use super::{
    Backend, BackendTls, Config, Limits, Listener, ListenerTls, LogConfig, LogPasswd, MapConfig,
    MapKind,
};
use crate::map::rewrite::{Stages, UserNames};
use crate::protocol::Protocol;

/// What `portcullis perdition --help` prints.
pub const HELP: &str = "\
portcullis perdition: run with Perdition 2.2's flags and configuration file.
Supported options (command line --name VALUE / -X VALUE, or `name value` in the -f file):
  -f|--config_file FILE            -P|--protocol POP3|POP3S|IMAP4|IMAP4S|MANAGESIEVE
  -b|--bind_address ADDR[,ADDR]    -l|--listen_port PORT
  -s|--outgoing_server HOST[:PORT][,HOST[:PORT]]   -p|--outgoing_port PORT
  -F|--log_facility -|+|/file|FACILITY   -d|--debug   --log_passwd never|fail|ok|all
  -L|--connection_limit N          -t|--timeout SECONDS   --authenticate_timeout SECONDS
  --lower_case STATE[,STATE]       -n|--no_lookup   --no_daemon   --login_disabled
  -O|--ok_line TEXT  -o|--server_resp_line
  -I|--capability, --imap_capability, --pop_capability, --managesieve_capability STRING
  --ssl_mode MODE[,MODE]  --ssl_cert_file F  --ssl_key_file F  --ssl_ca_file F
  --ssl_no_cert_verify  --ssl_dh_params_file F (accepted, unused: rustls has no DH groups)
  --pid_file FILE   -u|--username USER   -g|--group GROUP (after binding, as Perdition)
  -M|--map_library \"\" | .../libperditiondb_{posix_regex,ldap,mysql,postgresql}.so.0
  -m|--map_library_opt STRING      -U|--username_from_database  -c|--client_server_specification
  -D|--domain_delimiter STRING     -S|--strip_domain STATE[,STATE]   --query_key FORMAT[,FORMAT]
  -A|--add_domain STATE[,STATE] with -e|--explicit_domain DOMAIN
Any other Perdition option is refused with an error naming it.";

/// The result of reading Perdition flags.
#[derive(Debug)]
pub struct Compat {
    pub config: Config,
    /// Things accepted but without effect, for the log.
    pub warnings: Vec<String>,
}

/// Every Perdition 2.2 option: long name, short letter, whether it takes a value, and whether
/// Portcullis implements it.
const OPTIONS: &[(&str, Option<char>, bool, bool)] = &[
    ("add_domain", Some('A'), true, true),
    ("authenticate_in", Some('a'), false, false),
    ("authenticate_timeout", None, true, true),
    ("bind_address", Some('b'), true, true),
    ("capability", Some('I'), true, true),
    ("client_server_specification", Some('c'), false, true),
    ("config_file", Some('f'), true, true),
    ("connect_relog", None, true, false),
    ("connection_limit", Some('L'), true, true),
    ("connection_logging", Some('C'), false, false),
    ("debug", Some('d'), false, true),
    ("domain_delimiter", Some('D'), true, true),
    ("explicit_domain", Some('e'), true, true),
    ("group", Some('g'), true, true),
    ("help", Some('h'), false, true),
    ("imap_capability", None, true, true),
    ("inetd_mode", Some('i'), false, false),
    ("listen_port", Some('l'), true, true),
    ("log_facility", Some('F'), true, true),
    ("log_passwd", None, true, true),
    ("login_disabled", None, false, true),
    ("lower_case", None, true, true),
    ("managesieve_capability", None, true, true),
    ("map_library", Some('M'), true, true),
    ("map_library_opt", Some('m'), true, true),
    ("no_bind_banner", Some('B'), false, false),
    ("no_daemon", None, false, true),
    ("no_lookup", Some('n'), false, true),
    ("ok_line", Some('O'), true, true),
    ("outgoing_port", Some('p'), true, true),
    ("outgoing_server", Some('s'), true, true),
    ("pid_file", None, true, true),
    ("pop_capability", None, true, true),
    ("protocol", Some('P'), true, true),
    ("query_key", None, true, true),
    ("quiet", Some('q'), false, false),
    ("server_ok_line", None, false, false),
    ("server_resp_line", Some('o'), false, true),
    ("ssl_ca_accept_self_signed", None, false, false),
    ("ssl_ca_chain_file", None, true, false),
    ("ssl_ca_file", None, true, true),
    ("ssl_ca_path", None, true, false),
    ("ssl_cert_accept_expired", None, false, false),
    ("ssl_cert_accept_not_yet_valid", None, false, false),
    ("ssl_cert_accept_self_signed", None, false, false),
    ("ssl_cert_file", None, true, true),
    ("ssl_cert_verify_depth", None, true, false),
    ("ssl_dh_params_file", None, true, true),
    ("ssl_key_file", None, true, true),
    ("ssl_listen_ciphers", None, true, false),
    ("ssl_listen_compression", None, false, false),
    ("ssl_listen_max_proto_version", None, true, false),
    ("ssl_listen_min_proto_version", None, true, false),
    ("ssl_mode", None, true, true),
    ("ssl_no_cert_verify", None, false, true),
    ("ssl_no_cipher_server_preference", None, false, false),
    ("ssl_no_client_cert_verify", None, false, false),
    ("ssl_no_cn_verify", None, false, false),
    ("ssl_outgoing_ciphers", None, true, false),
    ("ssl_outgoing_compression", None, false, false),
    ("ssl_outgoing_max_proto_version", None, true, false),
    ("ssl_outgoing_min_proto_version", None, true, false),
    ("ssl_passphrase_fd", None, true, false),
    ("ssl_passphrase_file", None, true, false),
    ("strip_domain", Some('S'), true, true),
    ("tcp_keepalive", None, false, false),
    ("timeout", Some('t'), true, true),
    ("username", Some('u'), true, true),
    ("username_from_database", Some('U'), false, true),
];

fn option(name: &str) -> Result<&'static (&'static str, Option<char>, bool, bool), String> {
    let entry = OPTIONS
        .iter()
        .find(|o| o.0 == name)
        .ok_or_else(|| format!("unknown Perdition option {name:?}"))?;
    if !entry.3 {
        return Err(format!(
            "Perdition option {name:?} is not supported by Portcullis (see `portcullis perdition --help`)"
        ));
    }
    Ok(entry)
}

/// Read the command line, and the `-f` file it names. `None` when `-h` asked for help.
pub fn from_args(args: &[String]) -> Result<Option<Compat>, String> {
    let settings = parse_args(args)?;
    if settings.iter().any(|(k, _)| k == "help") {
        return Ok(None);
    }
    let mut all = Vec::new();
    if let Some((_, file)) = settings.iter().rev().find(|(k, _)| k == "config_file") {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read Perdition config file {file}: {e}"))?;
        all = parse_file(&text).map_err(|e| format!("{file}: {e}"))?;
    }
    // The command line comes last so that it wins.
    all.extend(settings);
    build(&all).map(Some)
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
            let entry = OPTIONS
                .iter()
                .find(|o| o.1 == Some(letter))
                .ok_or_else(|| format!("unknown Perdition option -{letter}"))?;
            let entry = option(entry.0)?;
            let rest = &short[letter.len_utf8()..];
            (entry, (!rest.is_empty()).then(|| rest.to_string()))
        } else {
            return Err(format!("unexpected argument {arg:?}"));
        };
        let value = match (entry.2, inline) {
            (true, Some(v)) => v,
            (true, None) => it
                .next()
                .cloned()
                .ok_or_else(|| format!("option --{} needs a value", entry.0))?,
            (false, None) => "yes".to_string(),
            (false, Some(_)) => return Err(format!("option --{} takes no value", entry.0)),
        };
        out.push((entry.0.to_string(), value));
    }
    Ok(out)
}

/// `(option, value)` pairs from a Perdition configuration file.
fn parse_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = match line.split_once(char::is_whitespace) {
            Some((name, value)) => (name, value.trim()),
            None => (line, ""),
        };
        // Perdition takes short names too (`P IMAP4`, `l 110`).
        let long = match name.chars().collect::<Vec<_>>()[..] {
            [letter] => OPTIONS
                .iter()
                .find(|o| o.1 == Some(letter))
                .map_or(name, |o| o.0),
            _ => name,
        };
        let entry = option(long).map_err(|e| format!("line {}: {e}", n + 1))?;
        let name = entry.0;
        let explicitly_empty = value == "\"\"" || value == "''";
        let value = unquote(value);
        let value = match (entry.2, value.is_empty()) {
            (true, true) if explicitly_empty => value,
            (true, true) => return Err(format!("line {}: {name} needs a value", n + 1)),
            (false, true) => "yes".to_string(),
            (_, false) => value,
        };
        out.push((name.to_string(), value));
    }
    Ok(out)
}

/// Perdition's quoting: `'...'` is taken literally, `"..."` with `\"` and `\\` unescaped.
fn unquote(value: &str) -> String {
    if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        return inner.to_string();
    }
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => value.to_string(),
    }
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

/// Perdition's 0 means "no timeout"; ten years is as good as forever.
fn seconds(name: &str, value: &str) -> Result<u64, String> {
    let s: u64 = number(name, value)?;
    Ok(if s == 0 { super::MAX_SECONDS } else { s })
}

fn build(settings: &[(String, String)]) -> Result<Compat, String> {
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

    let (protocol, implicit_by_protocol, ident) = match get("protocol")
        .unwrap_or("POP3")
        .to_ascii_uppercase()
        .as_str()
    {
        "POP3" => (Protocol::Pop3, false, "perdition.pop3"),
        "POP3S" => (Protocol::Pop3, true, "perdition.pop3s"),
        "IMAP4" | "IMAP" => (Protocol::Imap, false, "perdition.imap4"),
        "IMAP4S" | "IMAPS" => (Protocol::Imap, true, "perdition.imaps"),
        "MANAGESIEVE" => (Protocol::Managesieve, false, "perdition.managesieve"),
        other => return Err(format!("unknown protocol {other:?}")),
    };

    // ssl_mode: a comma-separated list. Without it, POP3S and IMAP4S mean `ssl_all`, as in
    // Perdition: TLS on both legs.
    let (mut listen, mut outgoing) = if implicit_by_protocol {
        (ListenerTls::Implicit, BackendTls::Implicit)
    } else {
        (ListenerTls::None, BackendTls::None)
    };
    if let Some(modes) = get("ssl_mode") {
        (listen, outgoing) = (ListenerTls::None, BackendTls::None);
        for mode in modes.split(',').map(str::trim) {
            match mode {
                "none" => {}
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

    let port = match get("listen_port") {
        Some(p) => number("listen_port", p)?,
        None => protocol.default_port(listen == ListenerTls::Implicit),
    };
    let bind = match get("bind_address") {
        // Each entry is `host[:port]` like an outgoing server; `listen_port` fills in the port.
        Some(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|a| {
                let (host, entry_port) = split_host_port(a)?;
                let port = entry_port.unwrap_or(port);
                Ok(if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                })
            })
            .collect::<Result<_, String>>()?,
        _ => vec![format!("0.0.0.0:{port}")],
    };

    let map = map(
        get("map_library"),
        get("map_library_opt"),
        is_set("username_from_database")?,
    )?;
    let servers: Vec<&str> = get("outgoing_server")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if servers.is_empty() && map.is_none() {
        return Err("outgoing_server is required without a map library (-M)".into());
    }
    // Each outgoing_server keeps its own port, if it names one; outgoing_port is the port of
    // the others and of map answers without one, as in Perdition.
    for server in &servers {
        split_host_port(server)?;
    }
    let host = servers.first().map(|s| s.to_string()).unwrap_or_default();
    let failover = servers.iter().skip(1).map(|s| s.to_string()).collect();
    let backend_port = get("outgoing_port")
        .map(|p| number("outgoing_port", p))
        .transpose()?;
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

    if let Some(dh) = get("ssl_dh_params_file") {
        warnings.push(format!(
            "ssl_dh_params_file {dh} ignored: rustls uses ECDHE and has no finite-field DH"
        ));
    }
    if !is_set("no_daemon")? {
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

    let tls_files = listen != ListenerTls::None;
    let config = Config {
        log: LogConfig {
            destination: get("log_facility").unwrap_or("mail").to_string(),
            ident: ident.into(),
            log_passwd,
            debug,
            ..LogConfig::default()
        },
        limits,
        // Perdition has no guard: off unless the native configuration asks for one.
        guard: super::GuardConfig::off(),
        admin: super::AdminConfig::default(),
        process: super::ProcessConfig {
            user: get("username").map(str::to_string),
            group: get("group").map(str::to_string),
            // Perdition writes none for an empty name.
            pid_file: get("pid_file")
                .filter(|p| !p.is_empty())
                .map(str::to_string),
        },
        listeners: vec![Listener {
            protocol,
            bind,
            tls: listen,
            cert: tls_files.then(|| {
                PathBuf::from(get("ssl_cert_file").unwrap_or("/etc/perdition/perdition.crt.pem"))
            }),
            key: tls_files.then(|| {
                PathBuf::from(get("ssl_key_file").unwrap_or("/etc/perdition/perdition.key.pem"))
            }),
            certificates: Vec::new(),
            capability,
            ok_line: if is_set("server_resp_line")? {
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
            backend: Backend {
                host,
                failover,
                forward_client: Default::default(),
                // Perdition picks one of its servers at random for each connection.
                random_first: true,
                port: backend_port,
                tls: outgoing,
                ca_file: get("ssl_ca_file").map(PathBuf::from),
                verify: !is_set("ssl_no_cert_verify")?,
                server_name: None,
            },
            users,
            map,
            client_server_specification: is_set("client_server_specification")?,
        }],
    };
    Ok(Compat { config, warnings })
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
    let add_domain = get("add_domain").map(|value| {
        // A trailing number is the strip depth for a domain derived from reverse DNS, which
        // Portcullis does not do; with explicit_domain it has no effect.
        let states: Vec<&str> = value
            .split(',')
            .map(str::trim)
            .filter(|s| s.parse::<u32>().is_err())
            .collect();
        states.join(",")
    });
    let defaults = UserNames::default();
    Ok(UserNames {
        domain_delimiter: get("domain_delimiter")
            .map(str::to_string)
            .unwrap_or(defaults.domain_delimiter),
        strip_domain: stages("strip_domain", get("strip_domain"))?,
        add_domain: stages("add_domain", add_domain.as_deref())?,
        explicit_domain: get("explicit_domain")
            .filter(|d| !d.is_empty())
            .map(str::to_string),
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
            Some(p) => Some(number("outgoing_server port", p)?),
            None => None,
        };
        return Ok((host.to_string(), port));
    }
    match s.matches(':').count() {
        0 => Ok((s.to_string(), None)),
        1 => {
            let (h, p) = s.split_once(':').unwrap_or((s, ""));
            Ok((h.to_string(), Some(number("outgoing_server port", p)?)))
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
        let c = build(&s).unwrap();
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
        let c = build(&s).unwrap().config;
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
            let c = build(&s).unwrap().config;
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
            .map(|s| build(&s))
            .unwrap()
            .is_err());
    }

    #[test]
    fn secure_protocols_without_ssl_mode_mean_ssl_all() {
        let s = parse_args(&args(&["-s", "mail", "-P", "POP3S"])).unwrap();
        let c = build(&s).unwrap().config;
        assert_eq!(c.listeners[0].tls, ListenerTls::Implicit);
        assert_eq!(c.listeners[0].backend.tls, BackendTls::Implicit);
        assert_eq!(c.listeners[0].backend.port_for(Protocol::Pop3), 995);
        assert_eq!(c.log.ident, "perdition.pop3s");
    }

    #[test]
    fn pop_capability_is_dot_separated_as_in_perdition() {
        let s = parse_args(&args(&["-s", "m", "--pop_capability", "TOP.UIDL.USER"])).unwrap();
        let c = build(&s).unwrap().config;
        assert_eq!(
            c.listeners[0].capability.as_deref(),
            Some("TOP  UIDL  USER")
        );
    }

    #[test]
    fn log_passwd_needs_debug_as_in_perdition() {
        let s = parse_args(&args(&["-s", "m", "--log_passwd", "fail"])).unwrap();
        assert_eq!(build(&s).unwrap().config.log.log_passwd, LogPasswd::Never);
        let s = parse_args(&args(&["-s", "m", "--log_passwd", "fail", "-d"])).unwrap();
        assert_eq!(build(&s).unwrap().config.log.log_passwd, LogPasswd::Fail);
    }

    #[test]
    fn bind_addresses_may_carry_their_own_port() {
        let s = parse_args(&args(&["-s", "m", "-b", "127.0.0.1:1995,::1", "-l", "110"])).unwrap();
        let c = build(&s).unwrap().config;
        assert_eq!(c.listeners[0].bind, vec!["127.0.0.1:1995", "[::1]:110"]);
    }

    #[test]
    fn no_map_library_and_quoting_as_perdition_writes_them() {
        let settings = parse_file(
            "map_library \"\"\nimap_capability 'IMAP4 IMAP4REV1 LITERAL+'\noutgoing_server m\nP IMAP4\nl 20152\n",
        )
        .unwrap();
        let c = build(&settings).unwrap().config;
        assert_eq!(c.listeners[0].bind, vec!["0.0.0.0:20152"]);
        assert_eq!(
            c.listeners[0].capability.as_deref(),
            Some("IMAP4 IMAP4REV1 LITERAL+")
        );
        let s = build(&parse_args(&args(&["-M", "libperditiondb_bdb.so.0", "-s", "m"])).unwrap())
            .unwrap_err();
        assert!(s.contains("map_library") && s.contains("Berkeley"), "{s}");
        let s = build(&parse_args(&args(&["-M", "/usr/lib/libperditiondb_nis.so.0"])).unwrap())
            .unwrap_err();
        assert!(s.contains("NIS"), "{s}");
    }

    #[test]
    fn perdition_defaults_and_the_options_that_shape_answers() {
        let s = parse_args(&args(&["-s", "m", "-P", "IMAP4"])).unwrap();
        let c = build(&s).unwrap().config;
        assert_eq!(c.limits.login_timeout, 1800);
        assert_eq!(c.limits.idle_timeout, 1800);
        assert!(!c.listeners[0].login_disabled);

        let file = "outgoing_server m\nprotocol MANAGESIEVE\nauthenticate_timeout 2\nlogin_disabled\nok_line \"Welcome aboard\"\nmanagesieve_capability \"\\\"SIEVE\\\" \\\"fileinto\\\"  \\\"VERSION\\\" \\\"1.0\\\"\"\n";
        let c = build(&parse_file(file).unwrap()).unwrap().config;
        let l = &c.listeners[0];
        assert_eq!(c.limits.login_timeout, 2);
        assert!(l.login_disabled);
        assert_eq!(l.ok_line.as_deref(), Some("Welcome aboard"));
        assert_eq!(
            l.capability.as_deref(),
            Some("\"SIEVE\" \"fileinto\"  \"VERSION\" \"1.0\"")
        );

        let s = parse_args(&args(&["-s", "m", "-o", "-O", "ignored"])).unwrap();
        assert_eq!(build(&s).unwrap().config.listeners[0].ok_line, None);
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
}
