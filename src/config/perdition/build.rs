//! Perdition's options, the file's and the command line's, turned into a native [`Config`]
//! with one listener. The options are read in one fixed order, so that of several mistakes
//! the same one is always named.

use std::path::PathBuf;

use super::super::users::{Stages, UserNames};
use super::super::{
    AdminConfig, Backend, BackendTls, Config, GuardConfig, Limits, Listener, ListenerTls,
    LogConfig, LogPasswd, MapConfig, ProcessConfig, TlsVersion,
};
use super::error::PerditionError;
use super::map::map;
use super::options::{Given, PerditionOption};
use super::tls::{ca_path, ssl_mode, tls_versions, tolerated_flaws};
use super::tls::{LISTEN_VERSIONS, OUTGOING_VERSIONS};
use super::user_names::{stages, user_names};
use super::values::{host_port, number, port, seconds, split_host_port};
use super::{protocol_of_name, protocol_words, system_path, Compat, Family};
use crate::value::HostPort;

/// The client leg, as the protocol, `ssl_mode`, the ports and the bind addresses make it.
struct FrontEnd {
    family: &'static Family,
    /// The syslog ident and the pid file's name.
    instance: String,
    tls: ListenerTls,
    /// `ssl_mode`'s other half, for the back end.
    backend_tls: BackendTls,
    /// The protocol's port, for `listen_port` and `outgoing_port` when they are not given.
    default_port: u16,
    inetd: bool,
    bind: Vec<String>,
}

/// The first `outgoing_server`, the others, and `outgoing_port`.
struct Servers {
    host: String,
    failover: Vec<String>,
    port: u16,
}

/// Who logs in where, beside the servers: the map, the user names, and what the client is
/// told.
struct Routing {
    map: Option<MapConfig>,
    users: UserNames,
    capability: Option<String>,
    lower_case: Stages,
}

/// The configuration `settings` make (the file's, then the command line's) for a program
/// started as `invoked_as`, with the warnings for options that change nothing here.
pub fn build(
    settings: &[(PerditionOption, String)],
    invoked_as: &str,
) -> Result<Compat, PerditionError> {
    let given = Given(settings);
    let mut warnings = given.without_effect()?;
    let front = front_end(&given, invoked_as)?;
    let (servers, routing) = routing(&given, front.family, front.default_port)?;
    let (debug, log_passwd) = passwords_logged(&given)?;
    if !front.inetd && !given.is_set(PerditionOption::NoDaemon)? {
        warnings.push("Portcullis does not detach from the terminal; run it under systemd".into());
    }
    let limits = limits(&given)?;
    let process = process(&given, front.inetd, &front.instance);
    let tolerate = tolerated_flaws(&given)?;
    let listen_versions = tls_versions(&given, LISTEN_VERSIONS, &mut warnings)?;
    let outgoing_versions = tls_versions(&given, OUTGOING_VERSIONS, &mut warnings)?;
    let backend = Backend {
        host: servers.host.into(),
        failover: servers.failover.into_iter().map(HostPort::from).collect(),
        forward_client: Default::default(),
        // Perdition picks one of its servers at random for each connection.
        random_first: true,
        port: Some(servers.port),
        tls: front.backend_tls,
        ca_file: given
            .get(PerditionOption::SslCaFile)
            .filter(|f| !f.is_empty())
            .map(PathBuf::from),
        ca_path: ca_path(&given),
        // `ssl_no_cert_verify` is read with the listener's flags.
        verify: true,
        tolerate,
        tls_versions: outgoing_versions,
        server_name: None,
        source: Vec::new(),
    };
    let log = log(&given, &front.instance, debug, log_passwd)?;
    let inetd = front.inetd;
    let listener = listener(&given, front, routing, listen_versions, backend)?;
    let config = Config {
        log,
        limits,
        // Perdition has no guard: off unless the native configuration asks for one.
        guard: GuardConfig::off(),
        fleet: Default::default(),
        admin: AdminConfig::default(),
        process,
        acme: None,
        listeners: vec![listener],
    };
    Ok(Compat {
        config,
        warnings,
        inetd,
    })
}

fn front_end(given: &Given, invoked_as: &str) -> Result<FrontEnd, PerditionError> {
    let words = protocol_words(
        given
            .get(PerditionOption::Protocol)
            .or(protocol_of_name(invoked_as))
            .unwrap_or("POP3"),
    )?;
    // A program started as perdition.<name> logs and writes its pid file under that name, as
    // Perdition does; `portcullis perdition` (and plain `perdition`) under the name Debian's
    // init script gives the protocol's instance.
    let instance = match invoked_as {
        "perdition" => words.instance.to_string(),
        name => name.to_string(),
    };
    let (tls, backend_tls) = ssl_mode(words.implicit, given.get(PerditionOption::SslMode))?;
    if tls == ListenerTls::Implicit && !words.family.implicit_tls_possible {
        return Err(PerditionError::ImplicitTlsForManagesieve);
    }
    // Perdition's default ports follow the protocol, not ssl_mode: `-P IMAP4 --ssl_mode
    // ssl_listen` listens on 143 (its "mixed mode").
    let default_port = words.port;
    let listen_port = match given.get(PerditionOption::ListenPort) {
        Some(p) => port("listen_port", p)?,
        None => default_port,
    };
    let inetd = given.is_set(PerditionOption::InetdMode)?;
    Ok(FrontEnd {
        family: words.family,
        instance,
        tls,
        backend_tls,
        default_port,
        inetd,
        bind: bind_addresses(given.get(PerditionOption::BindAddress), listen_port)?,
    })
}

/// Each entry is `host[:port]` like an outgoing server; `listen_port` fills in the port.
fn bind_addresses(list: Option<&str>, listen_port: u16) -> Result<Vec<String>, PerditionError> {
    match list {
        Some(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|a| {
                let (host, entry_port) = split_host_port(a)?;
                Ok(host_port(&host, entry_port.unwrap_or(listen_port)))
            })
            .collect(),
        _ => Ok(vec![format!("0.0.0.0:{listen_port}")]),
    }
}

fn routing(
    given: &Given,
    family: &'static Family,
    default_port: u16,
) -> Result<(Servers, Routing), PerditionError> {
    let map = map(
        given.get(PerditionOption::MapLibrary),
        given.get(PerditionOption::MapLibraryOpt),
        given.is_set(PerditionOption::UsernameFromDatabase)?,
    )?;
    let servers = outgoing_servers(given.get(PerditionOption::OutgoingServer))?;
    if servers.is_empty() && map.is_none() {
        return Err(PerditionError::NoServer);
    }
    let port = match given.get(PerditionOption::OutgoingPort) {
        Some(p) => port("outgoing_port", p)?,
        None => default_port,
    };
    let mut servers = servers.into_iter();
    let servers = Servers {
        host: servers.next().unwrap_or_default(),
        failover: servers.collect(),
        port,
    };
    let routing = Routing {
        map,
        users: user_names(given)?,
        capability: capability(given, family),
        lower_case: stages(
            PerditionOption::LowerCase,
            given.get(PerditionOption::LowerCase),
        )?,
    };
    Ok((servers, routing))
}

/// Each outgoing_server keeps its own port, if it names one; outgoing_port is the port of the
/// others and of map answers without one, as in Perdition.
fn outgoing_servers(list: Option<&str>) -> Result<Vec<String>, PerditionError> {
    list.unwrap_or("")
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
        .collect()
}

fn capability(given: &Given, family: &Family) -> Option<String> {
    let given = given
        .get(family.capability_option)
        .or(given.get(PerditionOption::Capability))?;
    Some(if family.dotted_capabilities {
        // The native format puts each on its own line or separates them with two spaces.
        given.split('.').collect::<Vec<_>>().join("  ")
    } else {
        given.to_string()
    })
}

/// `debug`, and the passwords `log_passwd` logs.
fn passwords_logged(given: &Given) -> Result<(bool, LogPasswd), PerditionError> {
    let debug = given.is_set(PerditionOption::Debug)?;
    let log_passwd = match given.get(PerditionOption::LogPasswd).unwrap_or("never") {
        "never" => LogPasswd::Never,
        "fail" => LogPasswd::Fail,
        "ok" => LogPasswd::Ok,
        "all" | "always" => LogPasswd::Always,
        other => return Err(PerditionError::UnknownLogPasswd(other.to_string())),
    };
    // As in Perdition, passwords are only logged when debug is on too.
    let log_passwd = if debug { log_passwd } else { LogPasswd::Never };
    Ok((debug, log_passwd))
}

fn limits(given: &Given) -> Result<Limits, PerditionError> {
    Ok(Limits {
        connection_limit: given
            .get(PerditionOption::ConnectionLimit)
            .map(|v| number("connection_limit", v))
            .transpose()?
            .unwrap_or(0),
        // Perdition's defaults: 1800 s before and after login.
        login_timeout: seconds(
            "authenticate_timeout",
            given
                .get(PerditionOption::AuthenticateTimeout)
                .unwrap_or("1800"),
        )?,
        idle_timeout: seconds(
            "timeout",
            given.get(PerditionOption::Timeout).unwrap_or("1800"),
        )?,
        ..Limits::default()
    })
}

/// The user and group, and the pid file: Perdition writes it as /var/run/<name>/<name>.pid
/// unless told otherwise (an empty name: none), and none in inetd mode.
fn process(given: &Given, inetd: bool, instance: &str) -> ProcessConfig {
    let pid_file = match given.get(PerditionOption::PidFile) {
        _ if inetd => None,
        Some("") => None,
        Some(path) => Some(path.to_string()),
        None => Some(
            system_path(&format!("/var/run/{instance}/{instance}.pid"))
                .display()
                .to_string(),
        ),
    };
    ProcessConfig {
        user: given.get(PerditionOption::Username).map(str::to_string),
        group: given.get(PerditionOption::Group).map(str::to_string),
        pid_file,
    }
}

fn log(
    given: &Given,
    instance: &str,
    debug: bool,
    log_passwd: LogPasswd,
) -> Result<LogConfig, PerditionError> {
    Ok(LogConfig {
        destination: given
            .get(PerditionOption::LogFacility)
            .unwrap_or("mail")
            .to_string(),
        ident: instance.to_string(),
        log_passwd,
        debug,
        auth_relog: given
            .get(PerditionOption::ConnectRelog)
            .map(|v| number("connect_relog", v))
            .transpose()?
            .unwrap_or(300),
        quiet: given.is_set(PerditionOption::Quiet)?,
        ..LogConfig::default()
    })
}

fn listener(
    given: &Given,
    front: FrontEnd,
    routing: Routing,
    tls_versions: Vec<TlsVersion>,
    mut backend: Backend,
) -> Result<Listener, PerditionError> {
    let tls_files = front.tls != ListenerTls::None;
    let file = |option, default: &str| {
        tls_files.then(|| {
            given
                .get(option)
                .map(PathBuf::from)
                .unwrap_or_else(|| system_path(&format!("/etc/perdition/{default}")))
        })
    };
    let ok_line = ok_line(given)?;
    let login_disabled = given.is_set(PerditionOption::LoginDisabled)?;
    let tcp_keepalive = given.is_set(PerditionOption::TcpKeepalive)?;
    backend.verify = !given.is_set(PerditionOption::SslNoCertVerify)?;
    Ok(Listener {
        protocol: front.family.protocol,
        bind: front.bind,
        tls: front.tls,
        cert: file(PerditionOption::SslCertFile, "perdition.crt.pem"),
        key: file(PerditionOption::SslKeyFile, "perdition.key.pem"),
        certificates: Default::default(),
        ticket_keys: None,
        chain: given
            .get(PerditionOption::SslCaChainFile)
            .filter(|f| tls_files && !f.is_empty())
            .map(PathBuf::from),
        tls_versions,
        capability: routing.capability,
        ok_line,
        lower_case: routing.lower_case,
        login_disabled,
        oauth: false,
        proxy_protocol: false,
        proxy_trusted: Vec::new(),
        login_trusted: Vec::new(),
        greeting_name: "Portcullis".into(),
        tcp_keepalive,
        backend,
        users: routing.users,
        map: routing.map,
        client_server_specification: given.is_set(PerditionOption::ClientServerSpecification)?,
    })
}

/// The line a successful login answers with: `ok_line`, or the back end's own with
/// `server_resp_line` (whose old name is `server_ok_line`).
fn ok_line(given: &Given) -> Result<Option<String>, PerditionError> {
    let server_resp_line = given.is_set(PerditionOption::ServerRespLine)?;
    Ok(
        if server_resp_line || given.is_set(PerditionOption::ServerOkLine)? {
            None
        } else {
            Some(
                given
                    .get(PerditionOption::OkLine)
                    .unwrap_or("You are so in")
                    .to_string(),
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::super::{CertificateFlaw, LogPasswd};
    use super::super::command_line::parse_args;
    use super::super::file::parse_file;
    use super::super::testing::{args, config_of};
    use super::*;
    use crate::value::Protocol;

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

    #[test]
    fn the_seed_snippet_reads_as_an_imaps_listener() {
        let mut s = parse_file(SEED).unwrap();
        s.extend(parse_args(&args(&["-P", "IMAP4S", "--no_daemon"])).unwrap());
        let c = build(&s, "perdition").unwrap();
        let l = &c.config.listeners[0];
        assert_eq!(l.protocol, Protocol::Imap);
        assert_eq!(l.tls, ListenerTls::Implicit);
        assert_eq!(l.bind, vec!["0.0.0.0:993".to_string()]);
        assert_eq!(l.backend.host.text(), "192.0.2.10");
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
        assert_eq!(c.listeners[0].backend.port, Some(995));
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
        .unwrap_err()
        .to_string();
        assert!(s.contains("map_library") && s.contains("Berkeley"), "{s}");
        let s = build(
            &parse_args(&args(&["-M", "/usr/lib/libperditiondb_nis.so.0"])).unwrap(),
            "perdition",
        )
        .unwrap_err()
        .to_string();
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
            (l.backend.host.text(), l.backend.port),
            ("m:995", Some(110))
        );
        let e = build(
            &parse_args(&args(&["-s", "m", "-l", "no-such-service"])).unwrap(),
            "perdition",
        )
        .unwrap_err()
        .to_string();
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
            Ok::<_, PerditionError>((
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
        let e = versions(&["--ssl_outgoing_max_proto_version", "tlsv1.1"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ssl_outgoing_max_proto_version") && e.contains("1.2"),
            "{e}"
        );
        let e = versions(&["--ssl_listen_min_proto_version", "tls2"])
            .unwrap_err()
            .to_string();
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
}
