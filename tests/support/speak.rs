//! Small conversations every test repeats: an IMAP login, a FETCH, a POP3 RETR...

use super::*;

/// IMAP `TAG LOGIN user pass` (quoted strings); asserts the tagged response is OK and
/// returns it.
pub fn imap_login(client: &mut Client, tag: &str, user: &str, pass: &str) -> String {
    client.send_line(&format!("{tag} LOGIN \"{user}\" \"{pass}\""));
    let lines = client.read_until_tagged(tag);
    let last = lines.last().unwrap().clone();
    assert!(
        last.starts_with(&format!("{tag} OK")),
        "IMAP login as {user} failed: {lines:?}"
    );
    last
}

/// IMAP `TAG FETCH seq BODY.PEEK[]` (a mailbox must be SELECTed/EXAMINEd first); returns
/// exactly the message bytes of the literal and
/// asserts the tagged response is OK.
pub fn imap_fetch_raw(client: &mut Client, tag: &str, seq: u32) -> Vec<u8> {
    client.send_line(&format!("{tag} FETCH {seq} BODY.PEEK[]"));
    let prefix = format!("{tag} ");
    let mut body = None;
    loop {
        let line = client.read_line();
        if line.starts_with(&prefix) {
            assert!(
                line.starts_with(&format!("{tag} OK")),
                "FETCH {seq} failed: {line}"
            );
            return body.unwrap_or_else(|| panic!("FETCH {seq}: no literal before {line:?}"));
        }
        if body.is_none() && line.starts_with('*') && line.contains("FETCH") {
            if let Some(n) = line
                .strip_suffix('}')
                .and_then(|l| l.rsplit_once('{'))
                .and_then(|(_, n)| n.trim_end_matches('+').parse::<usize>().ok())
            {
                body = Some(client.read_exact(n));
                // The rest of the FETCH response (e.g. ")") follows on the next line.
            }
        }
    }
}

/// Logs in to the plain IMAP port `port` (Dovecot's, or a proxy's) as `user`, finds the INBOX
/// message with the Message-ID `message_id` and returns it exactly as FETCH BODY.PEEK[] gives
/// it (CRLF line ends); panics if there is not exactly one.
pub fn imap_fetch_by_message_id(
    port: u16,
    user: &str,
    password: &str,
    message_id: &str,
) -> Vec<u8> {
    let mut client = Client::plain(port);
    client.expect_line("* OK");
    imap_login(&mut client, "l", user, password);
    client.send_line("s EXAMINE INBOX");
    let examined = client.read_until_tagged("s");
    assert!(examined.last().unwrap().starts_with("s OK"), "{examined:?}");
    client.send_line(&format!("f SEARCH HEADER Message-ID \"{message_id}\""));
    let found = client.read_until_tagged("f");
    let seqs: Vec<u32> = found
        .iter()
        .filter_map(|l| l.strip_prefix("* SEARCH"))
        .flat_map(|l| l.split_whitespace().filter_map(|n| n.parse().ok()))
        .collect();
    assert_eq!(
        seqs.len(),
        1,
        "IMAP SEARCH for Message-ID {message_id} in {user}'s INBOX: {found:?}"
    );
    let message = imap_fetch_raw(&mut client, "g", seqs[0]);
    client.send_line("z LOGOUT");
    message
}

/// POP3 `RETR n`: asserts "+OK", reads the multi-line body, undoes dot-stuffing and returns
/// the message bytes with CRLF line ends.
pub fn pop3_retr(client: &mut Client, n: u32) -> Vec<u8> {
    client.send_line(&format!("RETR {n}"));
    client.expect_line("+OK");
    let mut out = Vec::new();
    loop {
        let line = client.read_line_raw();
        if line == b"." {
            return out;
        }
        let line = line.strip_prefix(b".").unwrap_or(&line);
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
}

/// ManageSieve: reads lines until a status response (OK / NO / BYE), returned last.
pub fn sieve_read_response(client: &mut Client) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let line = client.read_line();
        let upper = line.to_ascii_uppercase();
        let done = ["OK", "NO", "BYE"]
            .iter()
            .any(|s| upper == *s || upper.starts_with(&format!("{s} ")));
        lines.push(line);
        if done {
            return lines;
        }
    }
}

/// The guard is on by default; a test not about it must not have its failed logins delayed or
/// its address banned by another step, so a native configuration without a `[guard]` table
/// gets one that turns it off.
pub(super) fn guard_off_unless_configured(args: &[String]) {
    let Some(path) = args
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| args.get(i + 1))
    else {
        return;
    };
    guard_off_unless_configured_in(Path::new(path));
}

/// Turn the guard off in a native configuration file that does not configure it.
pub fn guard_off_unless_configured_in(path: &Path) {
    let Ok(text) = fs::read_to_string(path) else {
        return;
    };
    if !text.contains("[guard]") {
        fs::write(path, format!("[guard]\nenabled = false\n\n{text}")).expect("write config");
    }
}

/// A TCP connection to 127.0.0.1:`port` from `source` (any 127.x.y.z on Linux's loopback), so
/// that tests about per-address rules each have addresses of their own.
pub fn connect_from(source: &str, port: u16) -> io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let source: std::net::IpAddr = source
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())?;
    Ok(socket.into())
}
