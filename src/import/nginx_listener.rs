//! The `mail` block as read (`nginx`) written as the native configuration: `[limits]` from the
//! timeouts, a `[[listener]]` for each server (two when its `listen`s differ in `ssl` or
//! `proxy_protocol`), each with an `http` map asking the server's `auth_http`, and a comment
//! above each line that means something else here than there.

use std::collections::BTreeMap;

use super::nginx::{Given, Level, Mail, Server};
use super::nginx_values::Listen;
use super::toml_text::TomlText;
use super::Refusal;

/// nginx's defaults where they are not Portcullis's.
const NGINX_TIMEOUT: u64 = 60;
const NGINX_PROXY_TIMEOUT: u64 = 24 * 3600;
const NGINX_AUTH_HTTP_TIMEOUT: u64 = 60;
const NGINX_IMAP_CAPABILITIES: &[&str] = &["IMAP4", "IMAP4rev1", "UIDPLUS"];
const NGINX_POP3_CAPABILITIES: &[&str] = &["TOP", "USER", "UIDL"];

/// One `key = value` line and the notes above it.
struct Entry {
    key: &'static str,
    value: toml::Value,
    notes: Vec<String>,
}

fn entry(key: &'static str, value: impl Into<toml::Value>) -> Entry {
    Entry {
        key,
        value: value.into(),
        notes: Vec::new(),
    }
}

fn noted(key: &'static str, value: impl Into<toml::Value>, note: String) -> Entry {
    Entry {
        notes: vec![note],
        ..entry(key, value)
    }
}

/// A `[[listener]]` with its `backend` and `map` tables.
#[derive(Default)]
struct Plan {
    listener: Vec<Entry>,
    backend: Vec<Entry>,
    map: Vec<Entry>,
}

/// The protocol a server speaks: its `protocol`, or what nginx guesses from a listen port.
fn protocol(server: &Server) -> Option<&str> {
    if let Some(p) = &server.protocol {
        return Some(&p.value);
    }
    let port = server.listens.first()?.value.port()?;
    Some(match port {
        143 | 993 => "imap",
        110 | 995 => "pop3",
        25 | 465 | 587 => "smtp",
        _ => return None,
    })
}

fn refusal(at: &super::Location, directive: String, why: &str) -> Refusal {
    Refusal {
        at: at.clone(),
        directive,
        why: why.into(),
    }
}

/// The native configuration for `mail`, or what keeps it from being one.
pub fn render(mail: &Mail, source: &str) -> Result<String, Vec<Refusal>> {
    let mut refusals = mail.refusals.clone();
    let mut plans = Vec::new();
    let mut merged_levels = Vec::new();
    for server in &mail.servers {
        let merged = server.level.over(&mail.level);
        match server_plans(server, &merged) {
            Ok(mut more) => plans.append(&mut more),
            Err(mut why) => refusals.append(&mut why),
        }
        merged_levels.push((protocol(server).unwrap_or(""), merged));
    }
    if !refusals.is_empty() {
        refusals.sort_by(|a, b| (&a.at.file, a.at.line).cmp(&(&b.at.file, b.at.line)));
        return Err(refusals);
    }
    let mut text = TomlText::default();
    header(&mut text, mail, source);
    limits(&mut text, &merged_levels);
    for plan in plans {
        write_plan(&mut text, plan);
    }
    Ok(text.finish())
}

/// A number as TOML has them.
fn int(value: u64) -> toml::Value {
    toml::Value::Integer(i64::try_from(value).unwrap_or(i64::MAX))
}

fn header(text: &mut TomlText, mail: &Mail, source: &str) {
    text.comment(&format!(
        "Imported from {source} by `portcullis import nginx`. A line whose meaning differs \
         from nginx's has a comment above it; read them before serving."
    ));
    for note in &mail.notes {
        text.comment(note);
    }
    text.table(
        "[guard]",
        &[
            "nginx has no such thing: failed logins are delayed and addresses that keep failing \
           are banned for a while (see the manual's \"The brute-force guard\"); \
           `enabled = false` turns it off"
                .into(),
        ],
    );
    text.key("enabled", true, &[]);
}

/// `[limits]`: one value for the whole process, the largest of the servers'.
fn limits(text: &mut TomlText, servers: &[(&str, Level)]) {
    let largest = |values: Vec<u64>, default: u64| {
        let top = values.iter().copied().max().unwrap_or(default);
        let differ = values.iter().any(|v| *v != top);
        (top, differ)
    };
    let (login, login_differ) = largest(
        servers
            .iter()
            .map(|(_, l)| l.timeout.as_ref().map_or(NGINX_TIMEOUT, |t| t.value))
            .collect(),
        NGINX_TIMEOUT,
    );
    let (idle, idle_differ) = largest(
        servers
            .iter()
            .map(|(_, l)| {
                l.proxy_timeout
                    .as_ref()
                    .map_or(NGINX_PROXY_TIMEOUT, |t| t.value)
            })
            .collect(),
        NGINX_PROXY_TIMEOUT,
    );
    let one_for_all = " Portcullis has one value for every listener; the servers' differ, so the \
                       largest is taken.";
    text.table("[limits]", &[]);
    let mut note = "nginx's timeout (default 60s): the time a client has to log in.".to_string();
    if login_differ {
        note.push_str(one_for_all);
    }
    text.key("login_timeout", int(login), &[note]);
    let mut note = "nginx's proxy_timeout (default 24h): silence allowed once logged in \
                    (Portcullis's own default is 1800)."
        .to_string();
    if idle_differ {
        note.push_str(one_for_all);
    }
    text.key("idle_timeout", int(idle), &[note]);
    let buffers: Vec<u64> = servers
        .iter()
        .filter(|(p, _)| *p == "imap")
        .filter_map(|(_, l)| l.imap_client_buffer.as_ref().map(|b| b.value))
        .collect();
    if let Some(longest) = buffers.iter().max() {
        let note = "nginx's imap_client_buffer: here the longest command line before login, for \
                    every listener (POP3's and ManageSieve's too).";
        text.key("max_line_length", int((*longest).max(64)), &[note.into()]);
    }
}

fn write_plan(text: &mut TomlText, plan: Plan) {
    text.table("[[listener]]", &[]);
    for (header, entries) in [
        (None, plan.listener),
        (Some("[listener.backend]"), plan.backend),
        (Some("[listener.map]"), plan.map),
    ] {
        if let Some(header) = header {
            text.table(header, &[]);
        }
        for e in entries {
            text.key(e.key, e.value, &e.notes);
        }
    }
}

/// The listeners of one server: one per kind of `listen` (TLS from the first byte or not,
/// PROXY header or not).
fn server_plans(server: &Server, merged: &Level) -> Result<Vec<Plan>, Vec<Refusal>> {
    let named = |why: &str| vec![refusal(&server.at, "server".into(), why)];
    if server.listens.is_empty() {
        return Err(named("has no listen"));
    }
    let Some(protocol) = protocol(server) else {
        return Err(named(
            "has no protocol, and its port is none nginx knows one by",
        ));
    };
    let Some(auth_http) = &merged.auth_http else {
        return Err(named("has no auth_http (nginx refuses that too)"));
    };
    let mechanisms_note = mechanisms(protocol, merged)?;
    let implicit_everywhere = merged.ssl.as_ref().is_some_and(|s| s.value);
    let mut groups: BTreeMap<(bool, bool), Vec<&Given<Listen>>> = BTreeMap::new();
    for listen in &server.listens {
        let kind = (
            listen.value.ssl || implicit_everywhere,
            listen.value.proxy_protocol,
        );
        groups.entry(kind).or_default().push(listen);
    }
    let mut plans = Vec::new();
    let mut refusals = Vec::new();
    for ((implicit, proxied), listens) in groups {
        let shape = Shape {
            protocol,
            implicit,
            proxied,
            listens: &listens,
        };
        match listener(&shape, merged, mechanisms_note.clone()) {
            Ok(mut listener) => plans.push(Plan {
                listener: std::mem::take(&mut listener),
                backend: backend(protocol, merged),
                map: map(auth_http, merged),
            }),
            Err(mut why) => refusals.append(&mut why),
        }
    }
    match refusals.is_empty() {
        true => Ok(plans),
        false => Err(refusals),
    }
}

/// What the listener of a group of `listen`s is.
struct Shape<'a> {
    protocol: &'a str,
    implicit: bool,
    proxied: bool,
    listens: &'a [&'a Given<Listen>],
}

/// The client's SASL mechanisms: those Portcullis takes, or a refusal; a note when nginx
/// offered fewer.
fn mechanisms(protocol: &str, merged: &Level) -> Result<Option<String>, Vec<Refusal>> {
    let (given, takes): (_, &[&str]) = match protocol {
        "imap" => (&merged.imap_auth, &["plain", "login"]),
        "pop3" => (&merged.pop3_auth, &["plain"]),
        _ => (&merged.smtp_auth, &["plain", "login"]),
    };
    let Some(given) = given else { return Ok(None) };
    let name = format!("{protocol}_auth");
    for word in &given.value {
        let why = match word.as_str() {
            w if takes.contains(&w) => continue,
            "none" => {
                "unauthenticated relaying (nginx's smtp_auth none, the MX on port 25) is \
                       not something Portcullis does: leave this server to nginx, or point the \
                       port at Postfix itself, and take it out of the file you import"
            }
            _ => {
                "Portcullis takes the password in the clear (PLAIN, LOGIN) to pass it on; \
                  CRAM-MD5, APOP and EXTERNAL it cannot"
            }
        };
        return Err(vec![refusal(&given.at, format!("{name} {word}"), why)]);
    }
    let mut listed: Vec<&str> = given.value.iter().map(String::as_str).collect();
    listed.sort_unstable();
    listed.dedup();
    let mut all = takes.to_vec();
    all.sort_unstable();
    Ok((listed != all).then(|| {
        format!(
            "{}: {name} {}: Portcullis offers PLAIN and LOGIN both.",
            given.at,
            given.value.join(" ")
        )
    }))
}

/// The `[[listener]]` keys.
fn listener(
    shape: &Shape,
    merged: &Level,
    mechanisms: Option<String>,
) -> Result<Vec<Entry>, Vec<Refusal>> {
    let mut keys = vec![protocol_entry(shape.protocol, merged, mechanisms)];
    keys.push(bind_entry(shape.listens));
    let tls = match (
        shape.implicit,
        merged.starttls.as_ref().map(|s| s.value.as_str()),
    ) {
        (true, _) => "implicit",
        (false, Some("on")) => "starttls",
        (false, Some("only")) => "starttls-required",
        _ => "none",
    };
    keys.push(entry("tls", tls));
    if tls != "none" {
        keys.extend(certificates(shape.listens[0], merged)?);
        keys.extend(tls_versions(merged)?);
    }
    keys.extend(capability(shape.protocol, merged));
    if let Some(name) = &merged.server_name {
        keys.push(noted(
            "greeting_name",
            name.value.clone(),
            format!(
                "{}: server_name: nginx shows it in POP3 and SMTP greetings; Portcullis in \
                 every greeting and in the IMAP ID answer.",
                name.at
            ),
        ));
    }
    if shape.proxied {
        let Some(trusted) = &merged.set_real_ip_from else {
            let at = &shape.listens[0].at;
            return Err(vec![refusal(
                at,
                "listen ... proxy_protocol".into(),
                "without set_real_ip_from nginx reads the PROXY header and keeps the balancer's \
                 address; Portcullis takes the client's address from it and needs to know whom \
                 to believe: add set_real_ip_from with the balancers' addresses",
            )]);
        };
        keys.push(entry("proxy_protocol", true));
        keys.push(entry("proxy_trusted", trusted.value.clone()));
    }
    if shape.listens.iter().any(|l| l.value.keepalive) {
        keys.push(noted(
            "tcp_keepalive",
            true,
            "listen so_keepalive: the system's keep-alive timings (nginx's own timings, if any, \
             are not carried)."
                .into(),
        ));
    }
    Ok(keys)
}

fn protocol_entry(protocol: &str, merged: &Level, mechanisms: Option<String>) -> Entry {
    let mut notes: Vec<String> = mechanisms.into_iter().collect();
    let name = match protocol {
        "smtp" => {
            notes.push(
                "nginx's smtp server: here SMTP submission. Clients must log in before MAIL (no \
                 relaying without it), and Portcullis logs in at the back end with the \
                 client's own credentials (AUTH PLAIN), so the back end must take and check \
                 them (nginx, with proxy_smtp_auth off, logged in nowhere and sent XCLIENT \
                 LOGIN= instead)."
                    .into(),
            );
            if merged.smtp_capabilities.is_none() {
                notes.push(
                    "nginx lists no extensions without smtp_capabilities; Portcullis lists \
                     PIPELINING, 8BITMIME and ENHANCEDSTATUSCODES."
                        .into(),
                );
            }
            "submission"
        }
        other => other,
    };
    Entry {
        notes,
        ..entry("protocol", name)
    }
}

fn bind_entry(listens: &[&Given<Listen>]) -> Entry {
    let mut addresses: Vec<String> = Vec::new();
    let mut notes = Vec::new();
    for listen in listens {
        let l = &listen.value;
        addresses.push(l.address.clone());
        if l.dual_stack {
            let v4 = format!("0.0.0.0:{}", l.port().unwrap_or_default());
            notes.push(format!(
                "{}: listen ipv6only=off: an IPv6 address listens on IPv6 only here, so {v4} \
                 is listened on too.",
                listen.at
            ));
            addresses.push(v4);
        }
        if !l.tuning.is_empty() {
            notes.push(format!(
                "{}: listen {}: not carried (the system's defaults).",
                listen.at,
                l.tuning.join(" ")
            ));
        }
    }
    addresses.dedup();
    Entry {
        notes,
        ..entry("bind", addresses)
    }
}

/// `cert`/`key`, and `certificates` for the pairs after the first (nginx picks among them by
/// the client's signature algorithms, as Portcullis does).
fn certificates(listen: &Given<Listen>, merged: &Level) -> Result<Vec<Entry>, Vec<Refusal>> {
    let certs = merged
        .certificates
        .as_ref()
        .map(|c| c.value.clone())
        .unwrap_or_default();
    let keys = merged
        .keys
        .as_ref()
        .map(|k| k.value.clone())
        .unwrap_or_default();
    if certs.is_empty() || certs.len() != keys.len() {
        let at = merged.certificates.as_ref().map_or(&listen.at, |c| &c.at);
        return Err(vec![refusal(
            at,
            "ssl_certificate".into(),
            "TLS needs as many ssl_certificate as ssl_certificate_key lines, at least one",
        )]);
    }
    let mut entries = vec![
        entry("cert", certs[0].clone()),
        entry("key", keys[0].clone()),
    ];
    if certs.len() > 1 {
        let pairs: Vec<toml::Value> = certs[1..]
            .iter()
            .zip(&keys[1..])
            .map(|(cert, key)| {
                let mut pair = toml::map::Map::new();
                pair.insert("cert".into(), cert.clone().into());
                pair.insert("key".into(), key.clone().into());
                toml::Value::Table(pair)
            })
            .collect();
        entries.push(entry("certificates", pairs));
    }
    Ok(entries)
}

fn tls_versions(merged: &Level) -> Result<Option<Entry>, Vec<Refusal>> {
    let Some(given) = &merged.ssl_protocols else {
        return Ok(None);
    };
    let mut versions = Vec::new();
    let mut older = Vec::new();
    for p in &given.value {
        match p.as_str() {
            "TLSv1.2" => versions.push("1.2".to_string()),
            "TLSv1.3" => versions.push("1.3".to_string()),
            other => older.push(other.to_string()),
        }
    }
    if versions.is_empty() {
        return Err(vec![refusal(
            &given.at,
            format!("ssl_protocols {}", given.value.join(" ")),
            "rustls speaks TLS 1.2 and 1.3 only",
        )]);
    }
    let mut e = entry("tls_versions", versions);
    if !older.is_empty() {
        e.notes.push(format!(
            "{}: ssl_protocols {}: not carried: rustls has nothing older than TLS 1.2.",
            given.at,
            older.join(" ")
        ));
    }
    Ok(Some(e))
}

fn capability(protocol: &str, merged: &Level) -> Option<Entry> {
    let default_note = |d: &str| format!("nginx's default {d}_capabilities.");
    match protocol {
        "imap" => Some(match &merged.imap_capabilities {
            Some(c) => entry("capability", c.value.join(" ")),
            None => noted(
                "capability",
                NGINX_IMAP_CAPABILITIES.join(" "),
                default_note("imap"),
            ),
        }),
        "pop3" => {
            let (mut words, mut notes) = match &merged.pop3_capabilities {
                Some(c) => (c.value.clone(), vec![]),
                None => (
                    NGINX_POP3_CAPABILITIES
                        .iter()
                        .map(|c| c.to_string())
                        .collect(),
                    vec![default_note("pop3")],
                ),
            };
            words.push("SASL PLAIN LOGIN".into());
            notes.push(
                "Capabilities are separated by two spaces here; SASL PLAIN LOGIN is what \
                 Portcullis takes (nginx lists pop3_auth's mechanisms itself)."
                    .into(),
            );
            Some(Entry {
                notes,
                ..entry("capability", words.join("  "))
            })
        }
        _ => merged.smtp_capabilities.as_ref().map(|c| {
            noted(
                "capability",
                c.value.join("  "),
                "Extensions are separated by two spaces here.".into(),
            )
        }),
    }
}

fn backend(protocol: &str, merged: &Level) -> Vec<Entry> {
    let mut entries = vec![noted(
        "host",
        "",
        "Every user's server comes from the auth_http service (Auth-Server, Auth-Port), as in \
         nginx; connections to it are plain TCP, as nginx's."
            .into(),
    )];
    let proxy = merged.proxy_protocol.as_ref().is_some_and(|p| p.value);
    let xclient = merged.xclient.as_ref().is_none_or(|x| x.value);
    if proxy {
        entries.push(entry("forward_client", "proxy-v1"));
    } else if protocol == "smtp" && xclient {
        entries.push(noted(
            "forward_client",
            "id",
            "nginx's xclient (on by default): XCLIENT with the client's ADDR and HELO when the \
             back end offers it, before logging in with the client's credentials; never \
             LOGIN=."
                .into(),
        ));
    }
    entries
}

fn map(auth_http: &Given<String>, merged: &Level) -> Vec<Entry> {
    let mut entries = vec![entry("kind", "http"), entry("url", auth_http.value.clone())];
    if let Some(headers) = &merged.auth_http_headers {
        let mut table = toml::map::Map::new();
        for (name, value) in &headers.value {
            table.insert(name.clone(), value.clone().into());
        }
        entries.push(entry("headers", toml::Value::Table(table)));
    }
    entries.push(match &merged.auth_http_timeout {
        Some(t) => entry("timeout", int(t.value)),
        None => noted(
            "timeout",
            int(NGINX_AUTH_HTTP_TIMEOUT),
            "nginx's default auth_http_timeout (Portcullis's own is 10).".into(),
        ),
    });
    entries
}
