//! Differential tests: Portcullis's IMAP pre-login parser against `imap-codec`, an independent,
//! grammar-complete IMAP codec.
//!
//! Generated commands (LOGIN, AUTHENTICATE PLAIN with and without an initial response, ID,
//! CAPABILITY, STARTTLS, NOOP, LOGOUT; random tags and letter case; user names and passwords as
//! atoms, quoted strings with `\"` and `\\` escapes, synchronising `{n}` and non-synchronising
//! `{n+}` literals; bytes chosen to hit the edges of each form) are given whole to both:
//!
//! 1. LOGIN: whenever imap-codec decodes the command, Portcullis yields a `Login` with
//!    byte-identical user and password; whenever Portcullis yields a `Login`, imap-codec decodes
//!    the same credentials, unless the input uses one of Portcullis's documented leniencies
//!    ([`login_leniency`]).
//! 2. AUTHENTICATE PLAIN: the same authcid and password as imap-codec's decoded SASL message.
//! 3. CAPABILITY / STARTTLS / ID / NOOP / LOGOUT: Portcullis answers OK exactly when imap-codec
//!    accepts the command, leniencies aside ([`simple_leniency`]).
//!
//! Portcullis is driven through its public `ClientSide` machine, as the session drives it.
//! Each property runs 10 000 cases; `PROPTEST_CASES` overrides the count.

use std::sync::Arc;

use base64::Engine as _;
use imap_codec::decode::{CommandDecodeError, Decoder};
use imap_codec::imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_codec::imap_types::command::CommandBody;
use imap_codec::{AuthenticateDataCodec, CommandCodec};
use proptest::prelude::*;
use proptest::strategy::ValueTree as _;

use portcullis::protocol::{ClientEvent, ClientSettings, PreLoginLimits, Protocol};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000),
        max_shrink_iters: 4096,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Settings under which every command here is allowed: STARTTLS offered, logins enabled, and
/// limits far above anything generated (the bounds themselves are tested elsewhere).
fn settings() -> Arc<ClientSettings> {
    Arc::new(ClientSettings {
        capability: None,
        starttls_offered: true,
        tls_required: false,
        tls_active: false,
        login_disabled: false,
        oauth: false,
        pass_non_utf8_names: false,
        ok_line: None,
        greeting_host: "proxy.test".into(),
        product: "Portcullis".into(),
        limits: PreLoginLimits {
            max_line_length: 8192,
            max_literal_size: 8192,
            max_commands: 1000,
            max_failed_logins: 100,
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Portcullis's side.

/// What Portcullis made of one whole command.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Login {
        user: Vec<u8>,
        pass: Vec<u8>,
    },
    /// A tagged (or TLS / logout) OK.
    Ok,
    /// A tagged or untagged BAD.
    Bad,
    /// A tagged NO.
    No,
    /// A SASL challenge (`+ ...`) is awaited.
    Challenge,
    /// Nothing yet: the machine wants more input.
    Waiting,
    Other(String),
}

/// Feed `input` at once and report the last answer, skipping `+` literal continuations.
fn portcullis(input: &[u8]) -> Verdict {
    let mut m = Protocol::Imap.client_side(settings());
    m.greeting();
    m.receive(input);
    let mut last = Verdict::Waiting;
    loop {
        match m.next_event() {
            ClientEvent::NeedInput => return last,
            ClientEvent::Login(creds) => {
                return Verdict::Login {
                    user: creds.user.into_bytes(),
                    pass: creds.secret.expose().clone(),
                }
            }
            ClientEvent::StartTls(_) => return Verdict::Ok,
            ClientEvent::Close(bytes) => return classify(&bytes),
            ClientEvent::Send(bytes) if bytes == b"+ Ready for literal data\r\n" => {}
            ClientEvent::Send(bytes) => last = classify(&bytes),
            ClientEvent::LoginRefused { reply, .. } => return classify(&reply),
        }
    }
}

fn classify(bytes: &[u8]) -> Verdict {
    let text = String::from_utf8_lossy(bytes);
    // The status is on the last line: the tagged one (after the BYE of a LOGOUT).
    let Some(line) = text.lines().last() else {
        return Verdict::Other(text.into_owned());
    };
    let mut words = line.split(' ');
    let _tag = words.next();
    match words.next() {
        _ if line.starts_with("+ ") || line == "+" => Verdict::Challenge,
        Some("OK") => Verdict::Ok,
        Some("BAD") => Verdict::Bad,
        Some("NO") => Verdict::No,
        _ => Verdict::Other(text.into_owned()),
    }
}

// ---------------------------------------------------------------------------------------------
// imap-codec's side.

/// imap-codec's reading of a whole command; `None` unless exactly all of `input` is one
/// command. `LiteralFound` (a literal announced but not yet sent) cannot happen on a whole
/// command unless it is cut short, and counts as a refusal like `Incomplete`.
fn codec(input: &[u8]) -> Option<CommandBody<'_>> {
    match CommandCodec::default().decode(input) {
        Ok((&[], command)) => Some(command.body),
        Ok(_)
        | Err(CommandDecodeError::Incomplete)
        | Err(CommandDecodeError::LiteralFound { .. })
        | Err(CommandDecodeError::Failed) => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Generators.

/// How an astring is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Atom,
    Quoted,
    Literal { synchronising: bool },
}

#[derive(Debug, Clone)]
struct Value {
    form: Form,
    bytes: Vec<u8>,
}

impl Value {
    fn write(&self, out: &mut Vec<u8>) {
        match self.form {
            Form::Atom => out.extend_from_slice(&self.bytes),
            Form::Quoted => {
                out.push(b'"');
                for &b in &self.bytes {
                    if b == b'"' || b == b'\\' {
                        out.push(b'\\');
                    }
                    out.push(b);
                }
                out.push(b'"');
            }
            Form::Literal { synchronising } => {
                let plus = if synchronising { "" } else { "+" };
                out.extend_from_slice(format!("{{{}{plus}}}\r\n", self.bytes.len()).as_bytes());
                out.extend_from_slice(&self.bytes);
            }
        }
    }
}

/// Bytes for a credential: mostly ordinary, with every kind of awkward byte now and then.
fn value_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        8 => prop::sample::select(b"abcXYZ019._-@!#&'+,/:;<=>?^`|~$".to_vec()),
        2 => prop::sample::select(b"\"\\ ".to_vec()),
        1 => prop::sample::select(b"(){}[]%*".to_vec()),
        1 => prop::sample::select(vec![0u8, b'\r', b'\n', b'\t', 0x7f, 0x01]),
        1 => prop::sample::select(vec![0x80u8, 0xc3, 0xa9, 0xff, 0xe2, 0x82, 0xac]),
    ];
    prop_oneof![
        1 => Just(Vec::new()),
        12 => prop::collection::vec(byte, 1..12),
        // A whole UTF-8 name.
        1 => Just("jos\u{e9}".as_bytes().to_vec()),
    ]
}

fn form() -> impl Strategy<Value = Form> {
    prop_oneof![
        3 => Just(Form::Atom),
        3 => Just(Form::Quoted),
        1 => Just(Form::Literal { synchronising: true }),
        1 => Just(Form::Literal { synchronising: false }),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    (form(), value_bytes()).prop_map(|(mut form, mut bytes)| {
        // A space would make several atoms of one, and an empty atom is no argument at all;
        // spacing is generated on its own.
        if form == Form::Atom {
            bytes.retain(|&b| b != b' ');
            if bytes.is_empty() {
                form = Form::Quoted;
            }
        }
        Value { form, bytes }
    })
}

/// A tag: mostly valid, sometimes with a character no tag may hold.
fn tag() -> impl Strategy<Value = Vec<u8>> {
    let ch = prop_oneof![
        20 => prop::sample::select(b"aA0zZ9.-_!#]&'".to_vec()),
        1 => prop::sample::select(b"+*%{(\"\\".to_vec()),
    ];
    prop::collection::vec(ch, 1..6)
}

/// `name` in random letter case (IMAP command names are case-insensitive).
fn cased(name: &'static str) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<bool>(), name.len()).prop_map(move |upper| {
        name.chars()
            .zip(upper)
            .map(|(c, u)| if u { c } else { c.to_ascii_lowercase() })
            .collect()
    })
}

/// The separator between words: one space, or (rarely) a sloppy one.
fn space() -> impl Strategy<Value = &'static [u8]> {
    prop_oneof![
        30 => Just(&b" "[..]),
        1 => Just(&b"  "[..]),
        1 => Just(&b""[..]),
    ]
}

// ---------------------------------------------------------------------------------------------
// Property 1: LOGIN.

#[derive(Debug, Clone)]
struct Login {
    tag: Vec<u8>,
    name: String,
    seps: [&'static [u8]; 3],
    user: Value,
    pass: Value,
    /// A third argument, which LOGIN does not take.
    extra: Option<Value>,
    trailing: &'static [u8],
}

impl Login {
    fn bytes(&self) -> Vec<u8> {
        let mut out = self.tag.clone();
        out.extend_from_slice(self.seps[0]);
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(self.seps[1]);
        self.user.write(&mut out);
        out.extend_from_slice(self.seps[2]);
        self.pass.write(&mut out);
        if let Some(extra) = &self.extra {
            out.push(b' ');
            extra.write(&mut out);
        }
        out.extend_from_slice(self.trailing);
        out.extend_from_slice(b"\r\n");
        out
    }
}

fn login() -> impl Strategy<Value = Login> {
    (
        tag(),
        cased("LOGIN"),
        [space(), space(), space()],
        value(),
        value(),
        prop_oneof![20 => Just(None), 1 => value().prop_map(Some)],
        prop_oneof![20 => Just(&b""[..]), 1 => Just(&b" "[..])],
    )
        .prop_map(|(tag, name, seps, user, pass, extra, trailing)| Login {
            tag,
            name,
            seps,
            user,
            pass,
            extra,
            trailing,
        })
}

/// IMAP4rev1's `ASTRING-CHAR`: an atom's characters.
fn astring_char(b: u8) -> bool {
    b.is_ascii_graphic() && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\')
}

/// What Portcullis reads as part of an atom (command.rs, `tokenise_text`).
fn portcullis_atom_char(b: u8) -> bool {
    !b.is_ascii_control() && !matches!(b, b' ' | b'(' | b')' | b'"' | b'{')
}

/// Why Portcullis may accept a LOGIN that imap-codec refuses: its deliberate leniencies. `None`
/// when the command is strict IMAP4rev1 as far as these go, and the two must agree.
fn login_leniency(login: &Login, user: &[u8], pass: &[u8]) -> Option<&'static str> {
    // "The grammar here is deliberately lenient about spacing" (command.rs): doubled, missing
    // and trailing spaces are read as one.
    if login.seps.iter().any(|s| *s != b" ") || !login.trailing.is_empty() {
        return Some("lenient spacing");
    }
    // An empty "atom" as a third argument is no argument: a trailing space.
    if login
        .extra
        .as_ref()
        .is_some_and(|v| v.form == Form::Atom && v.bytes.is_empty())
    {
        return Some("lenient spacing");
    }
    // Tokens run together: an "atom" holding `"`, `(` or `)` is split there by Portcullis
    // (`a"b c"` is the atom `a` and the string `b c`), the missing space being forgiven.
    if [Some(&login.user), Some(&login.pass), login.extra.as_ref()]
        .into_iter()
        .flatten()
        .any(|v| v.form == Form::Atom && v.bytes.iter().any(|b| b"\"()".contains(b)))
    {
        return Some("lenient spacing: tokens run together");
    }
    // A bare LF ends a line for Portcullis (as for many servers): an atom holding one cuts the
    // command short there, `a LOGIN u p x\n` being read as `a LOGIN u p`.
    if [Some(&login.user), Some(&login.pass), login.extra.as_ref()]
        .into_iter()
        .flatten()
        .any(|v| v.form == Form::Atom && v.bytes.contains(&b'\n'))
    {
        return Some("a bare LF ends a line");
    }
    // NUL, CR and LF: Portcullis passes them on in the credentials (literals and quoted
    // strings) and every login path refuses them afterwards (`Credentials::check_characters`).
    if user
        .iter()
        .chain(pass)
        .any(|b| matches!(b, 0 | b'\r' | b'\n'))
    {
        return Some("NUL/CR/LF, refused later by check_characters");
    }
    for v in [&login.user, &login.pass] {
        match v.form {
            // 8-bit bytes in quoted strings: UTF-8 passwords from clients that do not use
            // literals (RFC 9051 allows UTF-8 in quoted strings; imap-codec without `ext_utf8`
            // does not).
            Form::Quoted if !v.bytes.is_ascii() => return Some("8-bit quoted string"),
            // Atoms: Portcullis takes any run of non-control bytes but `(`, `)`, `"`, `{` and
            // space: `%`, `*`, `\` and 8-bit bytes too. (Only an atom that stays one token is
            // excused: one that breaks into several must not give a login.)
            Form::Atom
                if !v.bytes.is_empty()
                    && v.bytes.iter().all(|&b| portcullis_atom_char(b))
                    && !v.bytes.iter().all(|&b| astring_char(b)) =>
            {
                return Some("lenient atom characters")
            }
            _ => {}
        }
    }
    None
}

/// Why imap-codec may accept a LOGIN that Portcullis does not turn into a `Login`.
fn login_strictness(body_user: &[u8], login: &Login) -> Option<&'static str> {
    // The user name must be UTF-8 (it becomes a `String`); Portcullis answers NO.
    if std::str::from_utf8(body_user).is_err() {
        return Some("non-UTF-8 user name");
    }
    // A line ending in `}` is read as a literal marker even when that `}` ends an atom and the
    // `{` is inside a quoted string (`a LOGIN "{" p}`): Portcullis answers BAD.
    let input = login.bytes();
    let body = &input[..input.len() - 2];
    let last_line = body.rsplit(|&b| b == b'\n').next().unwrap_or(body);
    if last_line.ends_with(b"}") && last_line.contains(&b'{') {
        return Some("line ending in `}`");
    }
    None
}

fn check_login(login: &Login) -> Result<(), TestCaseError> {
    let input = login.bytes();
    let ours = portcullis(&input);
    match codec(&input) {
        Some(CommandBody::Login { username, password }) => {
            let user = username.as_ref().to_vec();
            let pass = password.declassify().as_ref().to_vec();
            match &ours {
                Verdict::Login { user: u, pass: p } => {
                    prop_assert_eq!(
                        u,
                        &user,
                        "user differs on {:?}",
                        String::from_utf8_lossy(&input)
                    );
                    prop_assert_eq!(
                        p,
                        &pass,
                        "password differs on {:?}",
                        String::from_utf8_lossy(&input)
                    );
                }
                other => {
                    let why = login_strictness(&user, login);
                    prop_assert!(
                        why.is_some(),
                        "imap-codec reads LOGIN {:?} {:?}, Portcullis says {:?}, on {:?}",
                        String::from_utf8_lossy(&user),
                        String::from_utf8_lossy(&pass),
                        other,
                        String::from_utf8_lossy(&input)
                    );
                    if why == Some("non-UTF-8 user name") {
                        prop_assert_eq!(other, &Verdict::No);
                    }
                }
            }
        }
        Some(body) => prop_assert!(false, "imap-codec read {:?}", body.name()),
        None => {
            if let Verdict::Login { user, pass } = &ours {
                prop_assert!(
                    login_leniency(login, user, pass).is_some(),
                    "Portcullis logs in as {:?} / {:?} where imap-codec refuses {:?}",
                    String::from_utf8_lossy(user),
                    String::from_utf8_lossy(pass),
                    String::from_utf8_lossy(&input)
                );
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Property 2: AUTHENTICATE PLAIN.

#[derive(Debug, Clone)]
struct Plain {
    tag: Vec<u8>,
    name: String,
    mechanism: String,
    /// The SASL message, `authzid NUL authcid NUL passwd` or something else.
    message: Vec<u8>,
    /// How its base64 is spoiled, if it is.
    mangle: u8,
    /// Sent with the command (SASL-IR) or after the `+` challenge.
    initial: bool,
}

impl Plain {
    fn b64(&self) -> Vec<u8> {
        let mut b64 = base64::engine::general_purpose::STANDARD
            .encode(&self.message)
            .into_bytes();
        match self.mangle {
            // Padding dropped.
            1 => b64.retain(|&b| b != b'='),
            // A character outside the alphabet.
            2 => b64.insert(b64.len() / 2, b'*'),
            // A stray padding character in the middle.
            3 => b64.insert(b64.len() / 2, b'='),
            _ => {}
        }
        b64
    }

    /// The command line, and the response line when there is no initial response.
    fn lines(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        let mut line = self.tag.clone();
        line.push(b' ');
        line.extend_from_slice(self.name.as_bytes());
        line.push(b' ');
        line.extend_from_slice(self.mechanism.as_bytes());
        let b64 = self.b64();
        if self.initial {
            line.push(b' ');
            // RFC 4959: an empty initial response is sent as `=`.
            line.extend_from_slice(if b64.is_empty() { b"=" } else { &b64 });
            line.extend_from_slice(b"\r\n");
            (line, None)
        } else {
            line.extend_from_slice(b"\r\n");
            let mut response = b64;
            response.extend_from_slice(b"\r\n");
            (line, Some(response))
        }
    }
}

fn plain() -> impl Strategy<Value = Plain> {
    let name = prop::collection::vec(
        prop_oneof![8 => prop::sample::select(b"abcXYZ019.@-".to_vec()), 1 => prop::sample::select(vec![0x80u8, 0xc3, 0xa9, 0xff])],
        0..10,
    );
    let message =
        (name.clone(), value_bytes(), 0u8..4, name).prop_map(|(authcid, pass, zid, other)| {
            let authzid = match zid {
                0 | 1 => Vec::new(),
                2 => authcid.clone(),
                _ => other,
            };
            [authzid, authcid, pass].join(&0u8)
        });
    let message = prop_oneof![
        12 => message,
        // Not PLAIN's shape: too few NULs, or nothing.
        1 => value_bytes(),
    ];
    (
        tag(),
        cased("AUTHENTICATE"),
        cased("PLAIN"),
        message,
        prop_oneof![12 => Just(0u8), 1 => 1u8..4],
        any::<bool>(),
    )
        .prop_map(|(tag, name, mechanism, message, mangle, initial)| Plain {
            tag,
            name,
            mechanism,
            message,
            mangle,
            initial,
        })
}

/// imap-codec's decoded SASL message, if it reads the exchange.
fn codec_plain(plain: &Plain) -> Option<Vec<u8>> {
    let (line, response) = plain.lines();
    let CommandBody::Authenticate {
        mechanism: AuthMechanism::Plain,
        initial_response,
    } = codec(&line)?
    else {
        return None;
    };
    match (initial_response, response) {
        (Some(ir), None) => Some(ir.declassify().to_vec()),
        (None, Some(response)) => match AuthenticateDataCodec::default().decode(&response) {
            Ok((&[], AuthenticateData::Continue(data))) => Some(data.declassify().to_vec()),
            _ => None,
        },
        _ => None,
    }
}

fn check_plain(plain: &Plain) -> Result<(), TestCaseError> {
    let (line, response) = plain.lines();
    let mut input = line.clone();
    if let Some(r) = &response {
        // Where imap-codec reads the command, Portcullis answers it with a challenge.
        if codec(&line).is_some() {
            prop_assert_eq!(portcullis(&line), Verdict::Challenge);
        }
        input.extend_from_slice(r);
    }
    let ours = portcullis(&input);
    let shown = String::from_utf8_lossy(&input).into_owned();
    match codec_plain(plain) {
        Some(message) => {
            let mut parts = message.splitn(3, |&b| b == 0);
            let (z, c, p) = (parts.next(), parts.next(), parts.next());
            match (z, c, p) {
                // RFC 4616's rules, which imap-codec leaves to the application: authcid is
                // `1*SAFE` (not empty), passwd has no NUL, authzid is empty or (a proxy cannot
                // act for someone else) the authcid. One deliberate leniency: RFC 4616's passwd
                // is `1*SAFE`, Portcullis lets an empty one go to the back end to be refused.
                (Some(z), Some(c), Some(p))
                    if (z.is_empty() || z == c)
                        && !c.is_empty()
                        && !p.contains(&0)
                        && std::str::from_utf8(c).is_ok()
                        && std::str::from_utf8(z).is_ok() =>
                {
                    prop_assert_eq!(
                        ours,
                        Verdict::Login {
                            user: c.to_vec(),
                            pass: p.to_vec()
                        },
                        "on {:?}",
                        shown
                    );
                }
                // Not PLAIN's shape, a non-UTF-8 name or a foreign authzid: refused.
                _ => prop_assert_eq!(ours, Verdict::No, "on {:?}", shown),
            }
        }
        None => prop_assert!(
            !matches!(ours, Verdict::Login { .. }),
            "Portcullis logs in where imap-codec refuses {:?}",
            shown
        ),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Property 3: CAPABILITY, STARTTLS, ID, NOOP, LOGOUT.

#[derive(Debug, Clone)]
enum IdArg {
    Nil(String),
    /// `(k v k v ...)`: keys as quoted strings or literals, values the same or NIL.
    List(Vec<(Value, Option<Value>)>),
    /// A list with one element too many.
    OddList(Vec<Value>),
    /// Some other single argument.
    Other(Value),
}

#[derive(Debug, Clone)]
struct Simple {
    tag: Vec<u8>,
    name: String,
    /// For ID: its argument. For the others: an argument they do not take, if any.
    id: Option<IdArg>,
    extra: Option<Value>,
    sep: &'static [u8],
    trailing: &'static [u8],
}

fn string_value() -> impl Strategy<Value = Value> {
    let form = prop_oneof![
        4 => Just(Form::Quoted),
        1 => Just(Form::Literal { synchronising: true }),
        1 => Just(Form::Literal { synchronising: false }),
    ];
    let bytes = prop::collection::vec(prop::sample::select(b"abcXYZ019 .-_/\"".to_vec()), 0..8);
    (form, bytes).prop_map(|(form, bytes)| Value { form, bytes })
}

fn id_arg() -> impl Strategy<Value = IdArg> {
    prop_oneof![
        2 => cased("NIL").prop_map(IdArg::Nil),
        6 => prop::collection::vec((string_value(), prop::option::of(string_value())), 0..4)
            .prop_map(IdArg::List),
        1 => prop::collection::vec(string_value(), 1..4).prop_map(IdArg::OddList),
        1 => value().prop_map(IdArg::Other),
    ]
}

fn simple() -> impl Strategy<Value = Simple> {
    let name = prop_oneof![
        cased("CAPABILITY"),
        cased("STARTTLS"),
        cased("NOOP"),
        cased("LOGOUT"),
        cased("ID"),
    ];
    (
        tag(),
        name,
        prop_oneof![9 => Just(None), 1 => id_arg().prop_map(Some)],
        id_arg(),
        prop_oneof![9 => Just(None), 1 => value().prop_map(Some)],
        space(),
        prop_oneof![20 => Just(&b""[..]), 1 => Just(&b" "[..])],
    )
        .prop_map(|(tag, name, maybe_id, id, extra, sep, trailing)| {
            let id = if name.eq_ignore_ascii_case("ID") {
                // ID takes exactly one argument; `extra` may add a second.
                Some(id)
            } else {
                maybe_id
            };
            Simple {
                tag,
                name,
                id,
                extra,
                sep,
                trailing,
            }
        })
}

impl Simple {
    fn bytes(&self) -> Vec<u8> {
        let mut out = self.tag.clone();
        out.push(b' ');
        out.extend_from_slice(self.name.as_bytes());
        if let Some(id) = &self.id {
            out.extend_from_slice(self.sep);
            match id {
                IdArg::Nil(nil) => out.extend_from_slice(nil.as_bytes()),
                IdArg::List(pairs) => {
                    out.push(b'(');
                    for (i, (k, v)) in pairs.iter().enumerate() {
                        if i > 0 {
                            out.push(b' ');
                        }
                        k.write(&mut out);
                        out.push(b' ');
                        match v {
                            Some(v) => v.write(&mut out),
                            None => out.extend_from_slice(b"NIL"),
                        }
                    }
                    out.push(b')');
                }
                IdArg::OddList(items) => {
                    out.push(b'(');
                    for (i, v) in items.iter().enumerate() {
                        if i > 0 {
                            out.push(b' ');
                        }
                        v.write(&mut out);
                    }
                    out.push(b')');
                }
                IdArg::Other(v) => v.write(&mut out),
            }
        }
        if let Some(extra) = &self.extra {
            out.push(b' ');
            extra.write(&mut out);
        }
        out.extend_from_slice(self.trailing);
        out.extend_from_slice(b"\r\n");
        out
    }

    /// Why Portcullis may answer OK where imap-codec refuses.
    fn leniency(&self) -> Option<&'static str> {
        if self.sep != b" " || !self.trailing.is_empty() {
            return Some("lenient spacing");
        }
        // An empty value written as an atom is no token at all: `NOOP ` with a trailing space.
        // (An atom of spaces alone is no token either.)
        if self
            .extra
            .as_ref()
            .is_some_and(|v| v.form == Form::Atom && v.bytes.iter().all(|&b| b == b' '))
        {
            return Some("lenient spacing");
        }
        // A bare LF ends a line for Portcullis (as for many servers): an atom or quoted string
        // holding one cuts the command short there, `a LOGOUT x\n` being read as `a LOGOUT`.
        let other = match &self.id {
            Some(IdArg::Other(v)) => Some(v),
            _ => None,
        };
        if [other, self.extra.as_ref()]
            .into_iter()
            .flatten()
            .any(|v| matches!(v.form, Form::Atom | Form::Quoted) && v.bytes.contains(&b'\n'))
        {
            return Some("a bare LF ends a line");
        }
        match &self.id {
            // ID's argument is read only for the fields worth passing on; any one argument is
            // answered OK (an odd list, an atom...). (imap-codec takes `()` as well.)
            Some(IdArg::OddList(_) | IdArg::Other(_)) => Some("ID with any one argument"),
            _ => None,
        }
    }
}

fn check_simple(simple: &Simple) -> Result<(), TestCaseError> {
    let input = simple.bytes();
    let shown = String::from_utf8_lossy(&input).into_owned();
    let ours = portcullis(&input);
    let theirs = codec(&input);
    prop_assert!(
        matches!(ours, Verdict::Ok | Verdict::Bad),
        "Portcullis answers {:?} to {:?}",
        ours,
        shown
    );
    match theirs {
        Some(body) => prop_assert_eq!(
            ours,
            Verdict::Ok,
            "imap-codec reads {} from {:?}",
            body.name(),
            shown
        ),
        None => {
            if ours == Verdict::Ok {
                prop_assert!(
                    simple.leniency().is_some(),
                    "Portcullis answers OK to {:?}, which imap-codec refuses",
                    shown
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn login_credentials_agree(login in login()) {
        check_login(&login)?;
    }

    #[test]
    fn authenticate_plain_credentials_agree(plain in plain()) {
        check_plain(&plain)?;
    }

    #[test]
    fn simple_commands_ok_exactly_when_well_formed(simple in simple()) {
        check_simple(&simple)?;
    }
}

// ---------------------------------------------------------------------------------------------
// The properties are not vacuous: the generators reach every outcome often.

fn sample<S: Strategy>(strategy: S, n: usize) -> Vec<S::Value> {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    (0..n)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

#[test]
fn generators_reach_every_outcome() {
    let n = 4000;
    let logins = sample(login(), n);
    let count = |f: &dyn Fn(&Login) -> bool| logins.iter().filter(|l| f(l)).count();
    let accepted = count(&|l| codec(&l.bytes()).is_some());
    let with_literal =
        count(&|l| matches!(l.pass.form, Form::Literal { .. }) && codec(&l.bytes()).is_some());
    let with_escape = count(&|l| {
        l.user.form == Form::Quoted
            && l.user.bytes.iter().any(|b| b"\"\\".contains(b))
            && codec(&l.bytes()).is_some()
    });
    let refused_by_both = count(&|l| {
        codec(&l.bytes()).is_none() && !matches!(portcullis(&l.bytes()), Verdict::Login { .. })
    });
    assert!(accepted > n / 8, "{accepted} LOGINs read by imap-codec");
    assert!(
        with_literal > n / 50,
        "{with_literal} with a literal password"
    );
    assert!(
        with_escape > n / 100,
        "{with_escape} with an escape in the user"
    );
    assert!(refused_by_both > n / 5, "{refused_by_both} refused by both");

    let plains = sample(plain(), n);
    let logged_in = plains
        .iter()
        .filter(|p| {
            let (mut input, response) = p.lines();
            input.extend(response.unwrap_or_default());
            matches!(portcullis(&input), Verdict::Login { .. })
        })
        .count();
    assert!(logged_in > n / 5, "{logged_in} PLAIN logins");

    let simples = sample(simple(), n);
    let ok = simples
        .iter()
        .filter(|s| codec(&s.bytes()).is_some())
        .count();
    assert!(
        ok > n / 3 && ok < n * 9 / 10,
        "{ok} simple commands read by imap-codec"
    );
}

// ---------------------------------------------------------------------------------------------
// The differences found, pinned: each is deliberate (or harmless) and excused above.

#[test]
fn known_differences() {
    let login = |user: &str, pass: &str| Verdict::Login {
        user: user.as_bytes().to_vec(),
        pass: pass.as_bytes().to_vec(),
    };
    // Portcullis looser: spacing.
    for input in [
        &b"a LOGIN  u p\r\n"[..],
        b"a LOGIN u p \r\n",
        b"a LOGIN \"u\"\"p\"\r\n",
        b"a LOGIN u\"p\"\r\n",
        b"a LOGIN {1}\r\nu\"p\"\r\n",
    ] {
        assert!(codec(input).is_none(), "{input:?}");
        assert_eq!(portcullis(input), login("u", "p"), "{input:?}");
    }
    // Portcullis looser: a bare LF ends a line.
    assert!(codec(b"a LOGIN u p\n").is_none());
    assert_eq!(portcullis(b"a LOGIN u p\n"), login("u", "p"));
    // Portcullis looser: atom characters (`%`, `*`, `\`, 8-bit), 8-bit bytes, CR and NUL in
    // quoted strings, NUL in literals; NUL/CR/LF are refused later by `Credentials::check_characters`.
    for (input, user, pass) in [
        (&b"a LOGIN u% p*\\\r\n"[..], "u%", "p*\\"),
        ("a LOGIN jos\u{e9} p\r\n".as_bytes(), "jos\u{e9}", "p"),
        ("a LOGIN u \"p\u{e9}\"\r\n".as_bytes(), "u", "p\u{e9}"),
        (b"a LOGIN u \"p\rq\"\r\n", "u", "p\rq"),
        (b"a LOGIN u {3}\r\np\0q\r\n", "u", "p\0q"),
    ] {
        assert!(codec(input).is_none(), "{input:?}");
        assert_eq!(portcullis(input), login(user, pass), "{input:?}");
    }
    // Portcullis stricter: a user name must be UTF-8.
    let input = b"a LOGIN {2}\r\n\xff\xfe p\r\n";
    assert!(codec(input).is_some());
    assert_eq!(portcullis(input), Verdict::No);
    // Portcullis looser: ID takes any one argument.
    for input in [&b"a ID (\"k\")\r\n"[..], b"a ID x\r\n"] {
        assert!(codec(input).is_none(), "{input:?}");
        assert_eq!(portcullis(input), Verdict::Ok, "{input:?}");
    }
}

/// Portcullis stricter: a line ending in `}` is taken for a literal marker even when the `{`
/// before it is inside a quoted string and the `}` ends an atom. Valid IMAP, answered BAD;
/// no client writes it (a password ending in `}` is sent quoted or as a literal by clients).
#[test]
fn brace_at_line_end_is_read_as_a_marker() {
    let input = b"a LOGIN \"{\" p}\r\n";
    assert!(matches!(codec(input), Some(CommandBody::Login { .. })));
    assert_eq!(portcullis(input), Verdict::Bad);
}
