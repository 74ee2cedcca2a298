//! Every option of Perdition 2.2, as a type: its long and one-letter names, whether it takes a
//! value, and how Portcullis takes it. The readers turn names into [`PerditionOption`]s once;
//! from then on an option is a variant, so a misspelt one does not compile.

use super::error::PerditionError;

/// One Perdition 2.2 option (the options section of perdition(8) and `perdition --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerditionOption {
    AddDomain,
    AuthenticateIn,
    AuthenticateTimeout,
    BindAddress,
    Capability,
    ClientServerSpecification,
    ConfigFile,
    ConnectRelog,
    ConnectionLimit,
    ConnectionLogging,
    Debug,
    DomainDelimiter,
    ExplicitDomain,
    Group,
    Help,
    ImapCapability,
    InetdMode,
    ListenPort,
    LogFacility,
    LogPasswd,
    LoginDisabled,
    LowerCase,
    ManagesieveCapability,
    MapLibrary,
    MapLibraryOpt,
    NoBindBanner,
    NoDaemon,
    NoLookup,
    OkLine,
    OutgoingPort,
    OutgoingServer,
    PidFile,
    PopCapability,
    Protocol,
    QueryKey,
    Quiet,
    ServerOkLine,
    ServerRespLine,
    SslCaAcceptSelfSigned,
    SslCaChainFile,
    SslCaFile,
    SslCaPath,
    SslCertAcceptExpired,
    SslCertAcceptNotYetValid,
    SslCertAcceptSelfSigned,
    SslCertFile,
    SslCertVerifyDepth,
    SslDhParamsFile,
    SslKeyFile,
    SslListenCiphers,
    SslListenCompression,
    SslListenMaxProtoVersion,
    SslListenMinProtoVersion,
    SslMode,
    SslNoCertVerify,
    SslNoCipherServerPreference,
    SslNoClientCertVerify,
    SslNoCnVerify,
    SslOutgoingCiphers,
    SslOutgoingCompression,
    SslOutgoingMaxProtoVersion,
    SslOutgoingMinProtoVersion,
    SslPassphraseFd,
    SslPassphraseFile,
    StripDomain,
    TcpKeepalive,
    Timeout,
    Username,
    UsernameFromDatabase,
}

use PerditionOption as O;

/// How Portcullis takes a Perdition option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// It does what Perdition's does.
    Implemented,
    /// Accepted; when given, a warning with this reason says why it changes nothing.
    NoEffect(&'static str),
    /// An error with this reason.
    Refused(&'static str),
}

use Support::{Implemented, NoEffect, Refused};

/// What Perdition says of one option, and what Portcullis does with it.
#[derive(Debug)]
pub struct OptionSpec {
    pub option: PerditionOption,
    /// Its long name: `--name` on the command line, `name` in the file.
    pub name: &'static str,
    pub letter: Option<char>,
    pub takes_value: bool,
    pub support: Support,
}

const fn opt(
    option: PerditionOption,
    name: &'static str,
    letter: Option<char>,
    takes_value: bool,
    support: Support,
) -> OptionSpec {
    OptionSpec {
        option,
        name,
        letter,
        takes_value,
        support,
    }
}

const CIPHERS: Support = NoEffect("rustls offers its own short list of strong cipher suites only");
const COMPRESSION: Support = NoEffect("rustls never compresses (CRIME)");
const PASSPHRASE: Support =
    NoEffect("the private key is read unencrypted; an encrypted one is refused at start");

/// Every option, in the order of [`PerditionOption`] (checked when compiling, below).
pub const OPTIONS: &[OptionSpec] = &[
    opt(O::AddDomain, "add_domain", Some('A'), true, Implemented),
    opt(
        O::AuthenticateIn,
        "authenticate_in",
        Some('a'),
        false,
        Refused(
            "Perdition's local PAM check before the back end is not available: Portcullis \
             cannot check passwords itself, and skipping the check would let in users PAM \
             refuses",
        ),
    ),
    opt(
        O::AuthenticateTimeout,
        "authenticate_timeout",
        None,
        true,
        Implemented,
    ),
    opt(O::BindAddress, "bind_address", Some('b'), true, Implemented),
    opt(O::Capability, "capability", Some('I'), true, Implemented),
    opt(
        O::ClientServerSpecification,
        "client_server_specification",
        Some('c'),
        false,
        Implemented,
    ),
    opt(O::ConfigFile, "config_file", Some('f'), true, Implemented),
    opt(O::ConnectRelog, "connect_relog", None, true, Implemented),
    opt(
        O::ConnectionLimit,
        "connection_limit",
        Some('L'),
        true,
        Implemented,
    ),
    opt(
        O::ConnectionLogging,
        "connection_logging",
        Some('C'),
        false,
        NoEffect("the pre-login conversation holds passwords, which are not logged that way"),
    ),
    opt(O::Debug, "debug", Some('d'), false, Implemented),
    opt(
        O::DomainDelimiter,
        "domain_delimiter",
        Some('D'),
        true,
        Implemented,
    ),
    opt(
        O::ExplicitDomain,
        "explicit_domain",
        Some('e'),
        true,
        Implemented,
    ),
    opt(O::Group, "group", Some('g'), true, Implemented),
    opt(O::Help, "help", Some('h'), false, Implemented),
    opt(
        O::ImapCapability,
        "imap_capability",
        None,
        true,
        Implemented,
    ),
    opt(O::InetdMode, "inetd_mode", Some('i'), false, Implemented),
    opt(O::ListenPort, "listen_port", Some('l'), true, Implemented),
    opt(O::LogFacility, "log_facility", Some('F'), true, Implemented),
    opt(O::LogPasswd, "log_passwd", None, true, Implemented),
    opt(O::LoginDisabled, "login_disabled", None, false, Implemented),
    opt(O::LowerCase, "lower_case", None, true, Implemented),
    opt(
        O::ManagesieveCapability,
        "managesieve_capability",
        None,
        true,
        Implemented,
    ),
    opt(O::MapLibrary, "map_library", Some('M'), true, Implemented),
    opt(
        O::MapLibraryOpt,
        "map_library_opt",
        Some('m'),
        true,
        Implemented,
    ),
    // The greeting names the host, which is what -B asks for.
    opt(
        O::NoBindBanner,
        "no_bind_banner",
        Some('B'),
        false,
        Implemented,
    ),
    opt(O::NoDaemon, "no_daemon", None, false, Implemented),
    // Portcullis never resolves client or local addresses.
    opt(O::NoLookup, "no_lookup", Some('n'), false, Implemented),
    opt(O::OkLine, "ok_line", Some('O'), true, Implemented),
    opt(
        O::OutgoingPort,
        "outgoing_port",
        Some('p'),
        true,
        Implemented,
    ),
    opt(
        O::OutgoingServer,
        "outgoing_server",
        Some('s'),
        true,
        Implemented,
    ),
    opt(O::PidFile, "pid_file", None, true, Implemented),
    opt(O::PopCapability, "pop_capability", None, true, Implemented),
    opt(O::Protocol, "protocol", Some('P'), true, Implemented),
    opt(O::QueryKey, "query_key", None, true, Implemented),
    opt(O::Quiet, "quiet", Some('q'), false, Implemented),
    opt(O::ServerOkLine, "server_ok_line", None, false, Implemented),
    opt(
        O::ServerRespLine,
        "server_resp_line",
        Some('o'),
        false,
        Implemented,
    ),
    opt(
        O::SslCaAcceptSelfSigned,
        "ssl_ca_accept_self_signed",
        None,
        false,
        Implemented,
    ),
    opt(
        O::SslCaChainFile,
        "ssl_ca_chain_file",
        None,
        true,
        Implemented,
    ),
    opt(O::SslCaFile, "ssl_ca_file", None, true, Implemented),
    opt(O::SslCaPath, "ssl_ca_path", None, true, Implemented),
    opt(
        O::SslCertAcceptExpired,
        "ssl_cert_accept_expired",
        None,
        false,
        Implemented,
    ),
    opt(
        O::SslCertAcceptNotYetValid,
        "ssl_cert_accept_not_yet_valid",
        None,
        false,
        Implemented,
    ),
    opt(
        O::SslCertAcceptSelfSigned,
        "ssl_cert_accept_self_signed",
        None,
        false,
        Implemented,
    ),
    opt(O::SslCertFile, "ssl_cert_file", None, true, Implemented),
    opt(
        O::SslCertVerifyDepth,
        "ssl_cert_verify_depth",
        None,
        true,
        NoEffect("rustls bounds the chains it builds itself"),
    ),
    opt(
        O::SslDhParamsFile,
        "ssl_dh_params_file",
        None,
        true,
        NoEffect("rustls uses ECDHE and has no finite-field DH"),
    ),
    opt(O::SslKeyFile, "ssl_key_file", None, true, Implemented),
    opt(
        O::SslListenCiphers,
        "ssl_listen_ciphers",
        None,
        true,
        CIPHERS,
    ),
    opt(
        O::SslListenCompression,
        "ssl_listen_compression",
        None,
        false,
        COMPRESSION,
    ),
    opt(
        O::SslListenMaxProtoVersion,
        "ssl_listen_max_proto_version",
        None,
        true,
        Implemented,
    ),
    opt(
        O::SslListenMinProtoVersion,
        "ssl_listen_min_proto_version",
        None,
        true,
        Implemented,
    ),
    opt(O::SslMode, "ssl_mode", None, true, Implemented),
    opt(
        O::SslNoCertVerify,
        "ssl_no_cert_verify",
        None,
        false,
        Implemented,
    ),
    opt(
        O::SslNoCipherServerPreference,
        "ssl_no_cipher_server_preference",
        None,
        false,
        NoEffect("every suite rustls offers is strong; their order is rustls' own"),
    ),
    opt(
        O::SslNoClientCertVerify,
        "ssl_no_client_cert_verify",
        None,
        false,
        NoEffect("Portcullis does not ask clients for certificates"),
    ),
    opt(
        O::SslNoCnVerify,
        "ssl_no_cn_verify",
        None,
        false,
        Implemented,
    ),
    opt(
        O::SslOutgoingCiphers,
        "ssl_outgoing_ciphers",
        None,
        true,
        CIPHERS,
    ),
    opt(
        O::SslOutgoingCompression,
        "ssl_outgoing_compression",
        None,
        false,
        COMPRESSION,
    ),
    opt(
        O::SslOutgoingMaxProtoVersion,
        "ssl_outgoing_max_proto_version",
        None,
        true,
        Implemented,
    ),
    opt(
        O::SslOutgoingMinProtoVersion,
        "ssl_outgoing_min_proto_version",
        None,
        true,
        Implemented,
    ),
    opt(
        O::SslPassphraseFd,
        "ssl_passphrase_fd",
        None,
        true,
        PASSPHRASE,
    ),
    opt(
        O::SslPassphraseFile,
        "ssl_passphrase_file",
        None,
        true,
        PASSPHRASE,
    ),
    opt(O::StripDomain, "strip_domain", Some('S'), true, Implemented),
    opt(O::TcpKeepalive, "tcp_keepalive", None, false, Implemented),
    opt(O::Timeout, "timeout", Some('t'), true, Implemented),
    opt(O::Username, "username", Some('u'), true, Implemented),
    opt(
        O::UsernameFromDatabase,
        "username_from_database",
        Some('U'),
        false,
        Implemented,
    ),
];

// The table holds each option once, at its own index: `spec` can index it, and an option
// left out or listed twice does not compile.
const _: () = {
    assert!(OPTIONS.len() == O::UsernameFromDatabase as usize + 1);
    let mut i = 0;
    while i < OPTIONS.len() {
        assert!(OPTIONS[i].option as usize == i);
        i += 1;
    }
};

impl PerditionOption {
    pub fn spec(self) -> &'static OptionSpec {
        &OPTIONS[self as usize]
    }

    /// Its long name, as Perdition writes it.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    pub fn takes_value(self) -> bool {
        self.spec().takes_value
    }

    /// The option of a long name; an error when it is unknown or refused.
    pub fn from_name(name: &str) -> Result<PerditionOption, PerditionError> {
        let spec = OPTIONS
            .iter()
            .find(|o| o.name == name)
            .ok_or_else(|| PerditionError::UnknownOption(name.to_string()))?;
        if let Refused(why) = spec.support {
            return Err(PerditionError::Refused {
                name: spec.name,
                why,
            });
        }
        Ok(spec.option)
    }

    /// The option of a one-letter name, refused or not.
    pub fn from_letter(letter: char) -> Option<PerditionOption> {
        OPTIONS
            .iter()
            .find(|o| o.letter == Some(letter))
            .map(|o| o.option)
    }
}

/// The options given, the file's then the command line's: the last of each wins.
pub struct Given<'a>(pub &'a [(PerditionOption, String)]);

impl<'a> Given<'a> {
    pub fn get(&self, option: PerditionOption) -> Option<&'a str> {
        self.0
            .iter()
            .rev()
            .find(|(o, _)| *o == option)
            .map(|(_, v)| v.as_str())
    }

    /// A flag's state: given as `yes` (or on, true, 1), `no` (off, false, 0), or not given.
    pub fn is_set(&self, option: PerditionOption) -> Result<bool, PerditionError> {
        self.get(option)
            .map(flag)
            .transpose()
            .map(|v| v.unwrap_or(false))
    }

    /// One line for each option without effect that is given (a flag: set), saying why.
    pub fn without_effect(&self) -> Result<Vec<String>, PerditionError> {
        let mut warnings = Vec::new();
        for spec in OPTIONS {
            if let NoEffect(why) = spec.support {
                let given = match (spec.takes_value, self.get(spec.option)) {
                    (true, Some(value)) => Some(format!("{} {value}", spec.name)),
                    (false, Some(_)) if self.is_set(spec.option)? => Some(spec.name.to_string()),
                    _ => None,
                };
                if let Some(given) = given {
                    warnings.push(format!("{given} has no effect here: {why}"));
                }
            }
        }
        Ok(warnings)
    }
}

fn flag(value: &str) -> Result<bool, PerditionError> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "on" | "true" | "1" => Ok(true),
        "no" | "off" | "false" | "0" => Ok(false),
        other => Err(PerditionError::NotAFlag(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::super::command_line::parse_args;
    use super::super::file::parse_file;
    use super::super::testing::args;
    use super::*;

    #[test]
    fn unsupported_and_unknown_options_are_named() {
        let e = parse_file("authenticate_in\n").unwrap_err().to_string();
        assert!(e.contains("authenticate_in") && e.contains("line 1"), "{e}");
        let e = parse_args(&args(&["--frobnicate"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("frobnicate"), "{e}");
    }

    #[test]
    fn authenticate_in_is_refused_with_the_reason() {
        let e = parse_args(&args(&["-a"])).unwrap_err().to_string();
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
