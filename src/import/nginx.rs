//! nginx's `mail {}` block read into what Portcullis needs: the settings of the block and of
//! each `server` in it (a server's own setting wins, as nginx merges them; a list such as
//! `auth_http_header` or `ssl_certificate` given in a server replaces the block's whole), the
//! notes on directives that are not carried because Portcullis does the same without them or
//! has no such thing, and the refusals of directives whose meaning would be lost.
//! `nginx_listener` turns the result into the native configuration.

use super::nginx_syntax::{Directive, Location};
use super::nginx_values::{self, Listen};
use super::Refusal;

/// A value and the directive it came from.
#[derive(Debug, Clone)]
pub struct Given<T> {
    pub value: T,
    pub at: Location,
}

/// The settings of the `mail` block or of one `server`; `None` is "not given here".
#[derive(Debug, Clone, Default)]
pub struct Level {
    pub server_name: Option<Given<String>>,
    pub auth_http: Option<Given<String>>,
    pub auth_http_headers: Option<Given<Vec<(String, String)>>>,
    pub auth_http_timeout: Option<Given<u64>>,
    pub timeout: Option<Given<u64>>,
    pub proxy_timeout: Option<Given<u64>>,
    pub starttls: Option<Given<String>>,
    pub ssl: Option<Given<bool>>,
    pub certificates: Option<Given<Vec<String>>>,
    pub keys: Option<Given<Vec<String>>>,
    pub ssl_protocols: Option<Given<Vec<String>>>,
    pub imap_capabilities: Option<Given<Vec<String>>>,
    pub pop3_capabilities: Option<Given<Vec<String>>>,
    pub smtp_capabilities: Option<Given<Vec<String>>>,
    pub imap_auth: Option<Given<Vec<String>>>,
    pub pop3_auth: Option<Given<Vec<String>>>,
    pub smtp_auth: Option<Given<Vec<String>>>,
    pub xclient: Option<Given<bool>>,
    pub proxy_protocol: Option<Given<bool>>,
    pub imap_client_buffer: Option<Given<u64>>,
    pub set_real_ip_from: Option<Given<Vec<String>>>,
}

macro_rules! over {
    ($inner:expr, $outer:expr; $($field:ident),*) => {
        Level { $($field: $inner.$field.clone().or_else(|| $outer.$field.clone()),)* }
    };
}

impl Level {
    /// This level's settings, the outer level's where this one has none.
    pub fn over(&self, outer: &Level) -> Level {
        over!(self, outer; server_name, auth_http, auth_http_headers, auth_http_timeout, timeout,
            proxy_timeout, starttls, ssl, certificates, keys, ssl_protocols, imap_capabilities,
            pop3_capabilities, smtp_capabilities, imap_auth, pop3_auth, smtp_auth, xclient,
            proxy_protocol, imap_client_buffer, set_real_ip_from)
    }
}

/// One `server` of the block.
#[derive(Debug, Clone)]
pub struct Server {
    pub at: Location,
    pub level: Level,
    pub protocol: Option<Given<String>>,
    pub listens: Vec<Given<Listen>>,
}

/// What the `mail` block holds.
#[derive(Debug, Default)]
pub struct Mail {
    pub level: Level,
    pub servers: Vec<Server>,
    /// Directives not carried, each with the reason (comments at the top of the output).
    pub notes: Vec<String>,
    pub refusals: Vec<Refusal>,
}

/// The `mail` block's directives read.
pub fn read_mail(block: &[Directive]) -> Mail {
    let mut mail = Mail::default();
    for d in block {
        match d.name.as_str() {
            "server" => match &d.block {
                Some(inside) => {
                    let server = read_server(d, inside, &mut mail);
                    mail.servers.push(server);
                }
                None => mail.refuse(d, "server needs a block"),
            },
            "listen" | "protocol" => mail.refuse(d, "allowed in a server only, as in nginx"),
            _ => {
                let mut level = std::mem::take(&mut mail.level);
                mail.apply(&mut level, d);
                mail.level = level;
            }
        }
    }
    mail
}

fn read_server(d: &Directive, inside: &[Directive], mail: &mut Mail) -> Server {
    let mut server = Server {
        at: d.at.clone(),
        level: Level::default(),
        protocol: None,
        listens: Vec::new(),
    };
    for d in inside {
        match d.name.as_str() {
            "listen" => match nginx_values::listen(&d.args) {
                Ok(value) => server.listens.push(Given {
                    value,
                    at: d.at.clone(),
                }),
                Err(why) => mail.refuse(d, &why.to_string()),
            },
            "protocol" => match mail.one(d) {
                Some(p @ ("imap" | "pop3" | "smtp")) => server.protocol = Some(given(d, p.into())),
                Some(_) => mail.refuse(d, "nginx's mail protocols are imap, pop3 and smtp"),
                None => {}
            },
            "server" => mail.refuse(d, "a server inside a server"),
            _ => mail.apply(&mut server.level, d),
        }
    }
    server
}

fn given<T>(d: &Directive, value: T) -> Given<T> {
    Given {
        value,
        at: d.at.clone(),
    }
}

/// Appends `value` to the list `slot` holds at this level.
fn push<T: Clone>(slot: &mut Option<Given<Vec<T>>>, d: &Directive, value: T) {
    match slot {
        Some(list) => list.value.push(value),
        None => *slot = Some(given(d, vec![value])),
    }
}

impl Mail {
    fn refuse(&mut self, d: &Directive, why: &str) {
        self.refusals.push(Refusal {
            at: d.at.clone(),
            directive: std::iter::once(d.name.as_str())
                .chain(d.args.iter().map(String::as_str))
                .collect::<Vec<_>>()
                .join(" "),
            why: why.to_string(),
        });
    }

    fn note(&mut self, d: &Directive, why: &str) {
        self.notes.push(format!("{}: {}: {why}", d.at, d.name));
    }

    /// The one argument of `d`, or a refusal.
    fn one<'d>(&mut self, d: &'d Directive) -> Option<&'d str> {
        match d.args.as_slice() {
            [one] => Some(one),
            _ => {
                self.refuse(d, "takes one argument");
                None
            }
        }
    }

    fn seconds(&mut self, d: &Directive) -> Option<Given<u64>> {
        let value = nginx_values::seconds(self.one(d)?);
        if value.is_none() {
            self.refuse(d, "not a time nginx would take");
        }
        Some(given(d, value?))
    }

    fn flag(&mut self, d: &Directive) -> Option<Given<bool>> {
        let value = nginx_values::flag(self.one(d)?);
        if value.is_none() {
            self.refuse(d, "takes on or off");
        }
        Some(given(d, value?))
    }

    fn words(&mut self, d: &Directive) -> Option<Given<Vec<String>>> {
        if d.args.is_empty() {
            self.refuse(d, "takes at least one argument");
            return None;
        }
        Some(given(d, d.args.clone()))
    }

    /// `d` applied to `level`; anything not known is refused.
    fn apply(&mut self, level: &mut Level, d: &Directive) {
        if d.block.is_some() {
            return self.refuse(d, "a block nginx's mail module does not have");
        }
        let known = self.auth_directive(level, d)
            || self.tls_directive(level, d)
            || self.protocol_directive(level, d)
            || self.not_carried(d);
        if !known {
            self.refuse(
                d,
                "not a directive of nginx's mail module that Portcullis knows",
            );
        }
    }

    fn auth_directive(&mut self, level: &mut Level, d: &Directive) -> bool {
        match d.name.as_str() {
            "auth_http" => {
                let Some(text) = self.one(d) else { return true };
                match nginx_values::auth_url(text) {
                    Some(url) => level.auth_http = Some(given(d, url)),
                    None => self.refuse(d, "not an address nginx's auth_http takes"),
                }
            }
            "auth_http_header" => match d.args.as_slice() {
                [name, value] => push(
                    &mut level.auth_http_headers,
                    d,
                    (name.clone(), value.clone()),
                ),
                _ => self.refuse(d, "takes a name and a value"),
            },
            "auth_http_timeout" => level.auth_http_timeout = self.seconds(d),
            "auth_http_pass_client_cert" => {
                if self.flag(d).is_some_and(|f| f.value) {
                    self.refuse(
                        d,
                        "Portcullis asks for no client certificates, so it has none to pass",
                    );
                }
            }
            "set_real_ip_from" => {
                let Some(text) = self.one(d) else { return true };
                match crate::config::parse_network(text) {
                    Some(_) => push(&mut level.set_real_ip_from, d, text.to_string()),
                    None => self.refuse(d, "an address or network (CIDR) only; no unix: here"),
                }
            }
            _ => return false,
        }
        true
    }

    fn tls_directive(&mut self, level: &mut Level, d: &Directive) -> bool {
        match d.name.as_str() {
            "ssl_certificate" | "ssl_certificate_key" => {
                let Some(path) = self.one(d) else { return true };
                if path.starts_with("data:") || path.starts_with("engine:") || path.contains('$') {
                    self.refuse(d, "a file name only (no data:, engine: or variables)");
                } else if d.name == "ssl_certificate" {
                    push(&mut level.certificates, d, path.to_string());
                } else {
                    push(&mut level.keys, d, path.to_string());
                }
            }
            "ssl_protocols" => level.ssl_protocols = self.words(d),
            "starttls" => match self.one(d) {
                Some(w @ ("on" | "off" | "only")) => level.starttls = Some(given(d, w.to_string())),
                Some(_) => self.refuse(d, "takes on, off or only"),
                None => {}
            },
            "ssl" => level.ssl = self.flag(d),
            "ssl_verify_client" => match self.one(d) {
                Some("off") | None => {}
                Some(_) => self.refuse(d, "Portcullis asks clients for no certificates"),
            },
            "ssl_password_file" => self.refuse(d, "Portcullis reads keys that are not encrypted"),
            "ssl_session_ticket_key" => self.refuse(
                d,
                "nginx's key files are not Portcullis's: write 64 hex digits a line into a file \
                 and name it in the listener's ticket_keys",
            ),
            _ => return false,
        }
        true
    }

    fn protocol_directive(&mut self, level: &mut Level, d: &Directive) -> bool {
        match d.name.as_str() {
            "server_name" => level.server_name = self.one(d).map(|n| given(d, n.to_string())),
            "timeout" => level.timeout = self.seconds(d),
            "proxy_timeout" => level.proxy_timeout = self.seconds(d),
            "xclient" => level.xclient = self.flag(d),
            "proxy_protocol" => level.proxy_protocol = self.flag(d),
            "imap_capabilities" => level.imap_capabilities = self.words(d),
            "pop3_capabilities" => level.pop3_capabilities = self.words(d),
            "smtp_capabilities" => level.smtp_capabilities = self.words(d),
            "imap_auth" => level.imap_auth = self.words(d),
            "pop3_auth" => level.pop3_auth = self.words(d),
            "smtp_auth" => level.smtp_auth = self.words(d),
            "imap_client_buffer" => {
                let size = self.one(d).map(nginx_values::bytes);
                match size {
                    Some(Some(size)) => level.imap_client_buffer = Some(given(d, size)),
                    Some(None) => self.refuse(d, "not a size nginx would take"),
                    None => {}
                }
            }
            "smtp_greeting_delay" => {
                if self.seconds(d).is_some_and(|t| t.value > 0) {
                    self.refuse(d, "Portcullis greets at once; it has no greeting delay");
                }
            }
            _ => return false,
        }
        true
    }

    /// Directives Portcullis does without, each noted with the reason.
    fn not_carried(&mut self, d: &Directive) -> bool {
        let why = match d.name.as_str() {
            "proxy_pass_error_message" => {
                "not needed: the auth_http service's refusal text is shown to the client always"
            }
            "proxy_smtp_auth" => {
                "not needed: Portcullis always logs in at the SMTP back end with the client's \
                 credentials (AUTH PLAIN)"
            }
            "resolver" | "resolver_timeout" => {
                "not carried: host names (an Auth-Server name) are resolved by the system's \
                 resolver; Client-Host is always [UNAVAILABLE]"
            }
            "ssl_ciphers" | "ssl_prefer_server_ciphers" | "ssl_ecdh_curve" | "ssl_conf_command" => {
                "not carried: rustls offers its own modern suites and groups, the server's \
                 preference first"
            }
            "ssl_dhparam" => "not carried: rustls has no finite-field Diffie-Hellman",
            "ssl_session_cache" | "ssl_session_timeout" | "ssl_session_tickets" => {
                "not carried: Portcullis resumes TLS sessions by tickets of its own (rotated \
                 every six hours; a fleet shares them with ticket_keys) and a cache in memory"
            }
            "ssl_client_certificate"
            | "ssl_trusted_certificate"
            | "ssl_crl"
            | "ssl_verify_depth" => "not carried: Portcullis asks clients for no certificates",
            "error_log" => {
                "not carried: Portcullis writes Perdition's Connect/Auth/Closing lines to [log] \
                 destination (syslog's mail facility by default)"
            }
            "proxy_buffer" | "smtp_client_buffer" => {
                "not carried: Portcullis's relay and line buffers are its own"
            }
            "max_errors" => {
                "not carried: Portcullis closes after [limits] max_commands commands or \
                 max_failed_logins failed logins before login"
            }
            _ => return false,
        };
        self.note(d, why);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::Arc;

    fn mail(text: &str) -> Mail {
        let file: Arc<Path> = Arc::from(Path::new("nginx.conf"));
        let tree = super::super::nginx_syntax::parse(text, &file).unwrap();
        read_mail(tree[0].block.as_ref().unwrap())
    }

    #[test]
    fn a_servers_own_settings_win_and_its_lists_replace_the_blocks() {
        let m = mail(
            "mail {\n auth_http a:1/auth;\n auth_http_header X-A 1;\n auth_http_header X-B 2;\n\
             timeout 30s;\n server { listen 143; auth_http_header X-C 3; timeout 5m; }\n\
             server { listen 110; }\n}\n",
        );
        assert!(m.refusals.is_empty(), "{:?}", m.refusals);
        let first = m.servers[0].level.over(&m.level);
        let headers = first.auth_http_headers.unwrap().value;
        assert_eq!(headers, [("X-C".to_string(), "3".to_string())]);
        assert_eq!(first.timeout.unwrap().value, 300);
        assert_eq!(first.auth_http.unwrap().value, "http://a:1/auth");
        let second = m.servers[1].level.over(&m.level);
        assert_eq!(second.auth_http_headers.unwrap().value.len(), 2);
        assert_eq!(second.timeout.unwrap().value, 30);
    }

    #[test]
    fn what_cannot_be_carried_is_refused_with_its_line() {
        let m = mail(
            "mail {\n auth_http a/auth;\n frobnicate on;\n server {\n listen 993 ssl;\n \
             ssl_verify_client on;\n smtp_greeting_delay 1s;\n auth_http_pass_client_cert on;\n \
             listen unix:/x;\n protocol lmtp;\n }\n listen 1;\n}\n",
        );
        let shown: Vec<String> = m.refusals.iter().map(|r| r.to_string()).collect();
        let lines: Vec<usize> = m.refusals.iter().map(|r| r.at.line).collect();
        assert_eq!(lines, [3, 6, 7, 8, 9, 10, 12], "{shown:#?}");
        assert!(
            shown[0].starts_with("nginx.conf:3: frobnicate on: "),
            "{shown:?}"
        );
        assert!(shown[1].contains("ssl_verify_client on"), "{shown:?}");
    }

    #[test]
    fn what_portcullis_does_without_is_noted_not_refused() {
        let m = mail(
            "mail {\n ssl_ciphers HIGH;\n resolver 127.0.0.1 valid=30s;\n \
             proxy_pass_error_message on;\n ssl_session_cache shared:M:10m;\n}\n",
        );
        assert!(m.refusals.is_empty());
        assert_eq!(m.notes.len(), 4);
        assert!(
            m.notes[0].starts_with("nginx.conf:2: ssl_ciphers: not carried"),
            "{:?}",
            m.notes
        );
    }
}
