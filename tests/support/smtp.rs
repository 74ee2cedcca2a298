//! SMTP from the client's side: replies read off a [`Client`], test messages, and the real
//! client programs (swaks, msmtp, Python's smtplib, curl) sending one message each.

use super::*;

/// The EHLO name every client here gives.
pub const CLIENT_HELO: &str = "client.portcullis.test";

/// One SMTP reply: its code and its lines' texts (after `NNN-` / `NNN `).
#[derive(Debug, Clone)]
pub struct SmtpReply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl SmtpReply {
    /// The reply as the server sent it, one line each.
    pub fn text(&self) -> String {
        let last = self.lines.len().saturating_sub(1);
        self.lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("{}{}{l}\n", self.code, if i == last { ' ' } else { '-' }))
            .collect()
    }

    /// True if a line (an EHLO keyword and its parameters) starts with `keyword`,
    /// case-insensitively.
    pub fn has_line(&self, keyword: &str) -> bool {
        let keyword = keyword.to_ascii_uppercase();
        self.lines
            .iter()
            .any(|l| l.to_ascii_uppercase().starts_with(&keyword))
    }
}

/// Reads one (possibly multi-line) SMTP reply; panics on a line that is no reply.
pub fn smtp_reply(client: &mut Client) -> SmtpReply {
    let mut lines = Vec::new();
    loop {
        let line = client.read_line();
        let (code, rest) = line.split_at_checked(3).unwrap_or((line.as_str(), ""));
        let code: u16 = code
            .parse()
            .unwrap_or_else(|_| panic!("not an SMTP reply line: {line:?} (after {lines:?})"));
        let (separator, text) = rest.split_at_checked(1).unwrap_or(("", ""));
        lines.push(text.to_string());
        match separator {
            "-" => continue,
            " " | "" => return SmtpReply { code, lines },
            _ => panic!("not an SMTP reply line: {line:?}"),
        }
    }
}

/// Sends `line` and reads the reply.
pub fn smtp_command(client: &mut Client, line: &str) -> SmtpReply {
    client.send_line(line);
    smtp_reply(client)
}

/// Sends `line` and asserts that the reply has `code`; returns it.
pub fn smtp_expect(client: &mut Client, line: &str, code: u16) -> SmtpReply {
    let reply = smtp_command(client, line);
    assert_eq!(
        reply.code,
        code,
        "{line:?} answered\n{}(expected {code})",
        reply.text()
    );
    reply
}

/// A raw SMTP session: the greeting read and EHLO said; returns the EHLO reply too.
pub fn smtp_open(port: u16) -> (Client, SmtpReply) {
    let mut c = Client::plain(port);
    let greeting = smtp_reply(&mut c);
    assert_eq!(greeting.code, 220, "{}", greeting.text());
    let ehlo = smtp_expect(&mut c, &format!("EHLO {CLIENT_HELO}"), 250);
    (c, ehlo)
}

/// As [`smtp_open`], then STARTTLS and EHLO again; returns the EHLO reply after TLS.
pub fn smtp_open_tls(port: u16) -> (Client, SmtpReply) {
    let (mut c, _) = smtp_open(port);
    smtp_expect(&mut c, "STARTTLS", 220);
    c.starttls();
    let ehlo = smtp_expect(&mut c, &format!("EHLO {CLIENT_HELO}"), 250);
    (c, ehlo)
}

/// `AUTH PLAIN` with an initial response: the base64 of `\0user\0password`.
pub fn auth_plain_line(user: &str, password: &str) -> String {
    format!(
        "AUTH PLAIN {}",
        base64(format!("\0{user}\0{password}").as_bytes())
    )
}

/// Standard base64 (with padding) of `bytes`.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One `[[listener]]` of `protocol` on 127.0.0.1:`port` with the test certificate, and
/// `backend` (an inline table's contents).
pub fn listener_toml(protocol: &str, port: u16, tls: &str, backend: &str) -> String {
    let c = certs();
    format!(
        "\n[[listener]]\nprotocol = \"{protocol}\"\nbind = [\"127.0.0.1:{port}\"]\n\
         tls = \"{tls}\"\ncert = \"{}\"\nkey = \"{}\"\nbackend = {{ {backend} }}\n",
        c.cert.display(),
        c.key.display()
    )
}

// ---------------------------------------------------------------------------------------------
// Test messages
// ---------------------------------------------------------------------------------------------

/// A unique Message-ID for a test message (`<TAG.UNIQUE@portcullis.test>`): what a test looks
/// for in the mailbox.
pub fn unique_message_id(tag: &str) -> String {
    format!("<{tag}.{}@portcullis.test>", unique_suffix())
}

/// A small message from `from` to `to` with `message_id` and `body` (LF or CRLF; the result
/// has CRLF line ends throughout and ends with one).
pub fn test_message(from: &str, to: &str, message_id: &str, subject: &str, body: &str) -> Vec<u8> {
    let text = format!(
        "From: {from}\nTo: {to}\nSubject: {subject}\nDate: Mon, 20 Nov 2023 10:00:00 +0000\n\
         Message-ID: {message_id}\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\
         Content-Transfer-Encoding: 8bit\n\n{body}"
    );
    let mut crlf = text
        .replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .into_bytes();
    if !crlf.ends_with(b"\r\n") {
        crlf.extend_from_slice(b"\r\n");
    }
    crlf
}

/// A message of at least `size` bytes (lines of 78 characters, some starting with a dot).
pub fn big_message(from: &str, to: &str, message_id: &str, size: usize) -> Vec<u8> {
    let mut message = test_message(from, to, message_id, "Big message", "");
    let mut i = 0u64;
    while message.len() < size {
        i += 1;
        let dot = if i % 1000 == 0 { "." } else { "" };
        message.extend_from_slice(
            format!(
                "{dot}{i:010} The quick brown fox jumps over the lazy dog 0123456789 ABCDEF\r\n"
            )
            .as_bytes(),
        );
    }
    message
}

/// Asserts that `stored` (a message as the mailbox has it: from [`MailServers::wait_for_mail`]
/// with LF line ends, or from IMAP with CRLF) is `sent`, byte for byte, after the trace header
/// fields that delivery puts on top (Return-Path, Delivered-To, X-Original-To, Received).
pub fn assert_arrived_intact(sent: &[u8], stored: &[u8]) {
    let crlf = stored.windows(2).any(|w| w == b"\r\n");
    // Byte for byte: a message need not be UTF-8 (8BITMIME is about octets).
    let sent: Vec<u8> = if crlf {
        sent.to_vec()
    } else {
        let mut lf = Vec::with_capacity(sent.len());
        for (i, &b) in sent.iter().enumerate() {
            if !(b == b'\r' && sent.get(i + 1) == Some(&b'\n')) {
                lf.push(b);
            }
        }
        lf
    };
    let show = |b: &[u8]| {
        let text = String::from_utf8_lossy(&b[..b.len().min(4000)]).into_owned();
        if b.len() > 4000 {
            format!("{text}…({} bytes in all)", b.len())
        } else {
            text
        }
    };
    assert!(
        stored.ends_with(&sent),
        "the stored message does not end with the sent one.\nsent:\n{}\nstored:\n{}",
        show(&sent),
        show(stored)
    );
    let trace = String::from_utf8_lossy(&stored[..stored.len() - sent.len()]).into_owned();
    for line in trace.lines() {
        let field = line.split(':').next().unwrap_or_default();
        assert!(
            line.starts_with([' ', '\t'])
                || ["Return-Path", "Delivered-To", "X-Original-To", "Received"].contains(&field),
            "delivery put {line:?} before the sent message:\n{trace}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Client programs
// ---------------------------------------------------------------------------------------------

/// The real SMTP clients the tests send with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpProgram {
    /// swaks: PLAIN or LOGIN, `--pipeline` on request.
    Swaks,
    /// msmtp: pipelines whenever the server offers PIPELINING (there is no switch).
    Msmtp,
    /// Python's smtplib: never pipelines; the only one that sends MAIL parameters
    /// ([`Submit::mail_options`], e.g. SMTPUTF8).
    Python,
    /// curl (smtp:// and smtps://): never pipelines.
    Curl,
}

/// How a client secures the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plaintext throughout.
    None,
    /// STARTTLS after the first EHLO (required: the client gives up without it).
    StartTls,
    /// TLS from the first byte (submissions, port 465).
    Implicit,
}

/// The SASL mechanism a client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpAuth {
    Plain,
    Login,
}

/// One message for a client program to submit. TLS is verified against certs().ca, the
/// server named 127.0.0.1 (the test certificate has that IP address).
#[derive(Debug, Clone)]
pub struct Submit {
    pub port: u16,
    pub tls: SmtpTls,
    pub auth: SmtpAuth,
    pub user: String,
    pub password: String,
    pub from: String,
    pub to: String,
    /// The message, CRLF line ends (the client does the dot-stuffing).
    pub message: Vec<u8>,
    /// Ask the client to pipeline (swaks only; msmtp always does when offered).
    pub pipelining: bool,
    /// MAIL FROM parameters such as `SMTPUTF8` or `BODY=8BITMIME` (Python only).
    pub mail_options: Vec<String>,
    /// Connect from this loopback address (127.x.y.z) rather than 127.0.0.1.
    pub source: Option<String>,
}

impl Submit {
    /// A plaintext, AUTH PLAIN submission of `message` from `user` to `to`, envelope sender
    /// `USER@example.org`.
    pub fn new(port: u16, user: &str, password: &str, to: &str, message: Vec<u8>) -> Submit {
        Submit {
            port,
            tls: SmtpTls::None,
            auth: SmtpAuth::Plain,
            user: user.to_string(),
            password: password.to_string(),
            from: format!("{user}@{MAIL_DOMAIN}"),
            to: to.to_string(),
            message,
            pipelining: false,
            mail_options: Vec::new(),
            source: None,
        }
    }
}

/// What a client program did: whether it says the message was sent, and everything it printed
/// (its SMTP transcript).
#[derive(Debug)]
pub struct ClientRun {
    pub program: SmtpProgram,
    pub success: bool,
    pub transcript: String,
}

impl ClientRun {
    /// True if the transcript shows DATA sent before the answer to MAIL came (swaks' and
    /// msmtp's transcripts: a `> DATA` line right before a `250` reply line).
    pub fn pipelined(&self) -> bool {
        let lines: Vec<&str> = self.transcript.lines().collect();
        lines.windows(2).any(|w| {
            w[0].trim_end().ends_with("> DATA")
                && w[1].starts_with('<')
                && w[1]
                    .trim_start_matches(['<', '-', '~', ' '])
                    .starts_with("250")
        })
    }

    /// Panics with the transcript unless the client sent the message.
    pub fn assert_sent(&self) {
        assert!(
            self.success,
            "{:?} did not send the message:\n{}",
            self.program, self.transcript
        );
    }
}

/// How long a client program may run (a 20 MiB message through two hops included).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

impl SmtpProgram {
    /// Every client program.
    pub const ALL: [SmtpProgram; 4] = [
        SmtpProgram::Swaks,
        SmtpProgram::Msmtp,
        SmtpProgram::Python,
        SmtpProgram::Curl,
    ];

    /// Runs the program to submit `submit` (in a temp dir of its own); never panics on the
    /// server's refusal, only if the program cannot run or hangs past [`CLIENT_TIMEOUT`].
    pub fn send(self, submit: &Submit) -> ClientRun {
        assert!(
            submit.mail_options.is_empty() || self == SmtpProgram::Python,
            "{self:?} cannot send MAIL parameters {:?}: use Python",
            submit.mail_options
        );
        let dir = tempfile::Builder::new()
            .prefix("portcullis-smtp-client-")
            .tempdir()
            .expect("client tempdir");
        let message = dir.path().join("message.eml");
        let mut data = submit.message.clone();
        if self == SmtpProgram::Swaks {
            // swaks ends DATA with CRLF "." CRLF after the data unless the data ends with its
            // own "." line: without one, the message would gain an empty last line.
            data.extend_from_slice(b".\r\n");
        }
        fs::write(&message, data).expect("write message");
        let mut command = match self {
            SmtpProgram::Swaks => swaks_command(submit, &message),
            SmtpProgram::Msmtp => msmtp_command(submit, &message, dir.path()),
            SmtpProgram::Python => python_command(submit, &message),
            SmtpProgram::Curl => curl_command(submit, &message),
        };
        let (status, transcript) = run_with_timeout(&mut command, dir.path(), CLIENT_TIMEOUT)
            .unwrap_or_else(|e| panic!("{self:?}: {e}"));
        ClientRun {
            program: self,
            success: status.success(),
            transcript: format!("$ {command:?}\n{transcript}"),
        }
    }
}

fn swaks_command(s: &Submit, message: &Path) -> Command {
    let mut c = Command::new("swaks");
    c.args(["--server", "127.0.0.1", "--port", &s.port.to_string()])
        .args(["--helo", CLIENT_HELO])
        .args(["--from", &s.from, "--to", &s.to])
        .args(["--auth-user", &s.user, "--auth-password", &s.password])
        .arg("--auth")
        .arg(match s.auth {
            SmtpAuth::Plain => "PLAIN",
            SmtpAuth::Login => "LOGIN",
        })
        .arg("--data")
        .arg(format!("@{}", message.display()))
        .args(["--timeout", "60"])
        .stdin(Stdio::null());
    match s.tls {
        SmtpTls::None => {}
        SmtpTls::StartTls => {
            c.arg("--tls");
        }
        SmtpTls::Implicit => {
            c.arg("--tls-on-connect");
        }
    }
    if s.tls != SmtpTls::None {
        c.arg("--tls-verify").arg("--tls-ca-path").arg(&certs().ca);
    }
    if s.pipelining {
        c.arg("--pipeline");
    }
    if s.message.len() > 64 << 10 {
        // The transcript names the DATA part's size instead of echoing every line.
        c.arg("--suppress-data");
    }
    if let Some(source) = &s.source {
        c.args(["--local-interface", source]);
    }
    c
}

fn msmtp_command(s: &Submit, message: &Path, dir: &Path) -> Command {
    use std::os::unix::fs::OpenOptionsExt;
    let (tls, starttls) = match s.tls {
        SmtpTls::None => ("off", "on"),
        SmtpTls::StartTls => ("on", "on"),
        SmtpTls::Implicit => ("on", "off"),
    };
    let quote = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
    let mut conf = format!(
        "account test\nhost 127.0.0.1\nport {}\ndomain {CLIENT_HELO}\nfrom {}\n\
         auth {}\nuser {}\npassword {}\ntls {tls}\ntls_starttls {starttls}\n\
         tls_trust_file {}\nadd_missing_from_header off\nadd_missing_date_header off\n\
         remove_bcc_headers off\ntimeout 60\n",
        s.port,
        quote(&s.from),
        match s.auth {
            SmtpAuth::Plain => "plain",
            SmtpAuth::Login => "login",
        },
        quote(&s.user),
        quote(&s.password),
        certs().ca.display(),
    );
    if let Some(source) = &s.source {
        conf += &format!("source_ip {source}\n");
    }
    let path = dir.join("msmtprc");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .expect("create msmtprc");
    file.write_all(conf.as_bytes()).expect("write msmtprc");
    let mut c = Command::new("msmtp");
    c.arg("-C")
        .arg(&path)
        .args(["-a", "test", "--debug", "--"])
        .arg(&s.to)
        .stdin(fs::File::open(message).expect("open message"));
    c
}

/// The smtplib script: its arguments in the environment (`PORTCULLIS_SMTP_*`).
const PYTHON_SMTP: &str = r#"
import os, smtplib, ssl, sys
e = os.environ
port, tls, auth = int(e["PORTCULLIS_SMTP_PORT"]), e["PORTCULLIS_SMTP_TLS"], e["PORTCULLIS_SMTP_AUTH"]
source = e.get("PORTCULLIS_SMTP_SOURCE")
source = (source, 0) if source else None
ctx = ssl.create_default_context(cafile=e["PORTCULLIS_SMTP_CA"])
if tls == "implicit":
    s = smtplib.SMTP_SSL("127.0.0.1", port, local_hostname=e["PORTCULLIS_SMTP_HELO"],
                         source_address=source, timeout=60, context=ctx)
else:
    s = smtplib.SMTP("127.0.0.1", port, local_hostname=e["PORTCULLIS_SMTP_HELO"],
                     source_address=source, timeout=60)
s.set_debuglevel(1)
s.ehlo()
if tls == "starttls":
    s.starttls(context=ctx)
    s.ehlo()
s.user, s.password = e["PORTCULLIS_SMTP_USER"], e["PORTCULLIS_SMTP_PASSWORD"]
if auth == "PLAIN":
    s.auth("PLAIN", s.auth_plain)
else:
    s.auth("LOGIN", s.auth_login, initial_response_ok=False)
with open(e["PORTCULLIS_SMTP_MESSAGE"], "rb") as f:
    message = f.read()
options = [o for o in e["PORTCULLIS_SMTP_MAIL_OPTIONS"].split(" ") if o]
refused = s.sendmail(e["PORTCULLIS_SMTP_FROM"], [e["PORTCULLIS_SMTP_TO"]], message,
                     mail_options=options)
s.quit()
sys.exit(1 if refused else 0)
"#;

fn python_command(s: &Submit, message: &Path) -> Command {
    let mut c = Command::new("python3");
    c.args(["-c", PYTHON_SMTP])
        .env("PORTCULLIS_SMTP_PORT", s.port.to_string())
        .env(
            "PORTCULLIS_SMTP_TLS",
            match s.tls {
                SmtpTls::None => "none",
                SmtpTls::StartTls => "starttls",
                SmtpTls::Implicit => "implicit",
            },
        )
        .env(
            "PORTCULLIS_SMTP_AUTH",
            match s.auth {
                SmtpAuth::Plain => "PLAIN",
                SmtpAuth::Login => "LOGIN",
            },
        )
        .env("PORTCULLIS_SMTP_CA", &certs().ca)
        .env("PORTCULLIS_SMTP_HELO", CLIENT_HELO)
        .env("PORTCULLIS_SMTP_USER", &s.user)
        .env("PORTCULLIS_SMTP_PASSWORD", &s.password)
        .env("PORTCULLIS_SMTP_FROM", &s.from)
        .env("PORTCULLIS_SMTP_TO", &s.to)
        .env("PORTCULLIS_SMTP_MESSAGE", message)
        .env("PORTCULLIS_SMTP_MAIL_OPTIONS", s.mail_options.join(" "))
        .env(
            "PORTCULLIS_SMTP_SOURCE",
            s.source.clone().unwrap_or_default(),
        )
        .stdin(Stdio::null());
    c
}

fn curl_command(s: &Submit, message: &Path) -> Command {
    let scheme = if s.tls == SmtpTls::Implicit {
        "smtps"
    } else {
        "smtp"
    };
    let mut c = Command::new("curl");
    c.args(["--silent", "--show-error", "--verbose", "--max-time", "60"])
        .arg("--url")
        .arg(format!("{scheme}://127.0.0.1:{}/{CLIENT_HELO}", s.port))
        .args(["--mail-from", &s.from, "--mail-rcpt", &s.to])
        .arg("--user")
        .arg(format!("{}:{}", s.user, s.password))
        .arg("--login-options")
        .arg(match s.auth {
            SmtpAuth::Plain => "AUTH=PLAIN",
            SmtpAuth::Login => "AUTH=LOGIN",
        })
        .arg("--upload-file")
        .arg(message)
        .arg("--cacert")
        .arg(&certs().ca)
        .stdin(Stdio::null());
    if s.tls == SmtpTls::StartTls {
        c.arg("--ssl-reqd");
    }
    if let Some(source) = &s.source {
        c.args(["--interface", source]);
    }
    c
}

/// `text`, or its first and last 64 KiB when it is longer (a client that echoes a 20 MiB
/// message).
fn shortened(text: String) -> String {
    const KEEP: usize = 64 << 10;
    if text.len() <= 2 * KEEP {
        return text;
    }
    let bytes = text.as_bytes();
    format!(
        "{}\n[… {} bytes left out …]\n{}",
        String::from_utf8_lossy(&bytes[..KEEP]),
        bytes.len() - 2 * KEEP,
        String::from_utf8_lossy(&bytes[bytes.len() - KEEP..])
    )
}

/// Runs `command` (its stdin set) with stdout and stderr into one file in `dir`; kills it after
/// `timeout`.
fn run_with_timeout(
    command: &mut Command,
    dir: &Path,
    timeout: Duration,
) -> Result<(ExitStatus, String), String> {
    let out_path = dir.join("client.out");
    let out = fs::File::create(&out_path).map_err(|e| e.to_string())?;
    let mut child = command
        .stdout(out.try_clone().map_err(|e| e.to_string())?)
        .stderr(out)
        .spawn()
        .map_err(|e| format!("cannot run {command:?} (scripts/test.sh installs it): {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok((status, shortened(read_lossy(&out_path))));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "still running after {timeout:?}, killed; output:\n{}",
                read_lossy(&out_path)
            ));
        }
        sleep(Duration::from_millis(20));
    }
}
