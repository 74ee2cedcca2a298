//! A line-oriented protocol client over plain TCP or TLS (with STARTTLS).

use super::*;

/// rustls client config trusting only the CA certificates in `ca` (PEM file).
pub fn tls_client_config(ca: &Path) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(ca).unwrap_or_else(|e| panic!("read {}: {e:?}", ca.display()))
    {
        roots
            .add(cert.expect("parse CA PEM"))
            .expect("add CA to root store");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn tls_handshake(
    mut sock: TcpStream,
    sni: &str,
    ca: &Path,
) -> io::Result<StreamOwned<ClientConnection, TcpStream>> {
    let name = ServerName::try_from(sni.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut conn = ClientConnection::new(tls_client_config(ca), name).map_err(io::Error::other)?;
    sock.set_read_timeout(Some(READ_TIMEOUT))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    Ok(StreamOwned::new(conn, sock))
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    Gone,
}

/// Line-oriented client over plain TCP or TLS. Reads panic after [`READ_TIMEOUT`] with what was
/// received so far.
pub struct Client {
    conn: Conn,
    buf: Vec<u8>,
    /// Port connected to.
    pub port: u16,
}

enum Fill {
    Data,
    Eof,
    Timeout,
    Error(io::Error),
}

impl Client {
    /// Connects over plain TCP to 127.0.0.1:`port` (panics on failure).
    pub fn plain(port: u16) -> Client {
        Self::try_plain(port).unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"))
    }

    /// Connects over plain TCP to 127.0.0.1:`port`.
    /// A client on a connection the test opened itself (and may have written to already).
    pub fn from_stream(sock: TcpStream) -> Client {
        let port = sock.peer_addr().map(|a| a.port()).unwrap_or(0);
        let _ = sock.set_nodelay(true);
        Client {
            conn: Conn::Plain(sock),
            buf: Vec::new(),
            port,
        }
    }

    pub fn try_plain(port: u16) -> io::Result<Client> {
        let sock = TcpStream::connect(("127.0.0.1", port))?;
        sock.set_nodelay(true)?;
        Ok(Client {
            conn: Conn::Plain(sock),
            buf: Vec::new(),
            port,
        })
    }

    /// Connects with implicit TLS (SNI "localhost", trusting certs().ca); panics on failure.
    pub fn tls(port: u16) -> Client {
        Self::try_tls_with(port, "localhost", &certs().ca)
            .unwrap_or_else(|e| panic!("TLS connect 127.0.0.1:{port}: {e}"))
    }

    /// Connects with implicit TLS, server name `sni`, trusting only the CAs in `ca`.
    /// Handshake / verification errors are returned.
    pub fn try_tls_with(port: u16, sni: &str, ca: &Path) -> io::Result<Client> {
        let sock = TcpStream::connect(("127.0.0.1", port))?;
        sock.set_nodelay(true)?;
        let tls = tls_handshake(sock, sni, ca)?;
        Ok(Client {
            conn: Conn::Tls(Box::new(tls)),
            buf: Vec::new(),
            port,
        })
    }

    /// Upgrades the plain connection to TLS in place (after the server's go-ahead to
    /// STARTTLS/STLS has been read). Panics if unread bytes are buffered (those would be
    /// plaintext injected before the handshake) or if the handshake fails.
    pub fn starttls(&mut self) {
        self.try_starttls_with("localhost", &certs().ca.clone())
            .unwrap_or_else(|e| panic!("STARTTLS handshake failed: {e}"));
    }

    /// Like [`Client::starttls`] with an explicit server name and CA file; returns errors.
    pub fn try_starttls_with(&mut self, sni: &str, ca: &Path) -> io::Result<()> {
        assert!(
            self.buf.is_empty(),
            "unread data before TLS handshake: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        let sock = match std::mem::replace(&mut self.conn, Conn::Gone) {
            Conn::Plain(s) => s,
            Conn::Tls(_) => panic!("starttls on a TLS connection"),
            Conn::Gone => panic!("starttls on a closed connection"),
        };
        let tls = tls_handshake(sock, sni, ca)?;
        self.conn = Conn::Tls(Box::new(tls));
        Ok(())
    }

    /// The certificate the server presented (its leaf, DER), on a TLS connection.
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        match &self.conn {
            Conn::Tls(t) => t
                .conn
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| leaf.as_ref().to_vec()),
            _ => None,
        }
    }

    /// True if the connection is (now) TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.conn, Conn::Tls(_))
    }

    fn sock(&self) -> &TcpStream {
        match &self.conn {
            Conn::Plain(s) => s,
            Conn::Tls(t) => &t.sock,
            Conn::Gone => panic!("connection is gone"),
        }
    }

    /// Local address of the connection (e.g. to match the proxy's log lines).
    pub fn local_addr(&self) -> SocketAddr {
        self.sock().local_addr().expect("local_addr")
    }

    /// Writes all bytes, returning I/O errors.
    pub fn try_send(&mut self, data: &[u8]) -> io::Result<()> {
        match &mut self.conn {
            Conn::Plain(s) => {
                s.write_all(data)?;
                s.flush()
            }
            Conn::Tls(t) => {
                t.write_all(data)?;
                t.flush()
            }
            Conn::Gone => Err(io::Error::new(io::ErrorKind::NotConnected, "gone")),
        }
    }

    /// Writes all bytes (panics on error).
    pub fn send(&mut self, data: &[u8]) {
        self.try_send(data)
            .unwrap_or_else(|e| panic!("send to port {}: {e}", self.port));
    }

    /// Writes `line` followed by CRLF.
    pub fn send_line(&mut self, line: &str) {
        let mut data = Vec::with_capacity(line.len() + 2);
        data.extend_from_slice(line.as_bytes());
        data.extend_from_slice(b"\r\n");
        self.send(&data);
    }

    /// Half-closes the sending direction (plain TCP) / sends close_notify (TLS).
    pub fn shutdown_write(&mut self) {
        match &mut self.conn {
            Conn::Plain(s) => {
                let _ = s.shutdown(std::net::Shutdown::Write);
            }
            Conn::Tls(t) => {
                t.conn.send_close_notify();
                let _ = t.flush();
            }
            Conn::Gone => {}
        }
    }

    fn fill(&mut self, deadline: Instant) -> Fill {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Fill::Timeout;
        }
        if let Err(e) = self.sock().set_read_timeout(Some(left)) {
            return Fill::Error(e);
        }
        let mut tmp = [0u8; 16384];
        let r = match &mut self.conn {
            Conn::Plain(s) => s.read(&mut tmp),
            Conn::Tls(t) => t.read(&mut tmp),
            Conn::Gone => return Fill::Eof,
        };
        match r {
            Ok(0) => Fill::Eof,
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Fill::Data
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Fill::Timeout
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Fill::Data,
            Err(e) => Fill::Error(e),
        }
    }

    fn fail(&self, what: &str, why: &str) -> ! {
        panic!(
            "port {}: {why} while waiting for {what}; unread data: {:?}",
            self.port,
            String::from_utf8_lossy(&self.buf)
        );
    }

    fn fill_or_panic(&mut self, deadline: Instant, what: &str) {
        match self.fill(deadline) {
            Fill::Data => {}
            Fill::Eof => self.fail(what, "connection closed"),
            Fill::Timeout => self.fail(what, "read timeout"),
            Fill::Error(e) => self.fail(what, &format!("read error {e}")),
        }
    }

    /// Reads one line (up to LF), without its CRLF/LF. Panics on EOF or timeout.
    pub fn read_line(&mut self) -> String {
        String::from_utf8_lossy(&self.read_line_raw()).into_owned()
    }

    /// Like [`Client::read_line`] but returns the raw bytes (line end stripped).
    pub fn read_line_raw(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return line;
            }
            self.fill_or_panic(deadline, "a line");
        }
    }

    /// Reads one line within `timeout`; `None` when the peer closed (or went silent) first.
    pub fn try_read_line(&mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let line = String::from_utf8_lossy(&line);
                return Some(line.trim_end_matches(['\r', '\n']).to_string());
            }
            if !matches!(self.fill(deadline), Fill::Data) {
                return None;
            }
        }
    }

    /// Reads one line and asserts it starts with `prefix`; returns it.
    pub fn expect_line(&mut self, prefix: &str) -> String {
        let line = self.read_line();
        assert!(
            line.starts_with(prefix),
            "port {}: expected a line starting with {prefix:?}, got {line:?}",
            self.port
        );
        line
    }

    /// IMAP: reads lines until one starting with "`tag` " (included as the last element).
    pub fn read_until_tagged(&mut self, tag: &str) -> Vec<String> {
        let prefix = format!("{tag} ");
        let mut lines = Vec::new();
        loop {
            let line = self.read_line();
            let done = line.starts_with(&prefix);
            lines.push(line);
            if done {
                return lines;
            }
        }
    }

    /// Reads exactly `n` bytes.
    pub fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let deadline = Instant::now() + READ_TIMEOUT;
        while self.buf.len() < n {
            self.fill_or_panic(deadline, &format!("{n} bytes"));
        }
        self.buf.drain(..n).collect()
    }

    /// Reads until the peer closes (EOF or reset). Panics if that does not happen in time.
    pub fn read_to_end_or_eof(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            match self.fill(deadline) {
                Fill::Data => {}
                Fill::Eof | Fill::Error(_) => return std::mem::take(&mut self.buf),
                Fill::Timeout => self.fail("EOF", "read timeout"),
            }
        }
    }

    /// True if the peer closes the connection within 5 s. Unread and newly arriving data are
    /// discarded (read what you want to check first).
    pub fn is_closed(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        self.buf.clear();
        loop {
            match self.fill(deadline) {
                Fill::Data => self.buf.clear(),
                Fill::Eof | Fill::Error(_) => return true,
                Fill::Timeout => return false,
            }
        }
    }

    /// Bytes received but not yet consumed.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }
}
