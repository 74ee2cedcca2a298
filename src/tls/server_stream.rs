//! The TLS side of a client's connection, on rustls' unbuffered API: the proxy owns the
//! buffers, and holds none while the session is quiet.
//!
//! Why not `tokio-rustls`: its connection keeps rustls' own receive buffer (4 KiB at least,
//! once a record has been read) for the session's whole life, which for an IMAP session parked
//! in IDLE for hours is most of what the session costs. Here an idle session keeps the keys
//! and the connection state only; ciphertext and plaintext exist while bytes flow and are
//! freed as soon as the socket has nothing more.
//!
//! Reads and writes stay independent: a read never waits for the client to take what was
//! written (a client busy sending a large APPEND while answers pile up must not deadlock).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::server::{ServerConfig, ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError,
    UnbufferedStatus, WriteTraffic,
};
use rustls::ProtocolVersion;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Room for one read of ciphertext: a whole record (16 KiB of plaintext, header, padding and
/// tag) and a bit.
const READ_ROOM: usize = 18 * 1024 + 64;
/// Received ciphertext not yet made into records is refused beyond this: rustls joins a
/// handshake message of at most 64 KiB, and no record is larger than a read.
const MAX_INCOMING: usize = 0x1_0000 + READ_ROOM;
/// Plaintext taken per write: one record's worth (four per system call bought nothing
/// measurable in the FETCH benchmark, and a stalled client would hold four times as much).
const WRITE_CHUNK: usize = 16 * 1024;
/// What a record adds to its plaintext at most (header, content type, tag), with room.
const RECORD_OVERHEAD: usize = 64;

/// What processing the received records came to.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Application data may be written (the handshake may still await the client's Finished).
    Traffic,
    /// The handshake needs more bytes from the client.
    NeedBytes,
    /// Both sides said close_notify.
    Closed,
}

/// Something to do with the connection once application data may be written.
type TrafficAction<'a> =
    &'a mut dyn FnMut(&mut WriteTraffic<'_, ServerConnectionData>, &mut Vec<u8>) -> io::Result<()>;

/// A client's TLS connection; see the module's comment.
pub struct ServerTlsStream {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// Ciphertext read and not yet made into records (a record's beginning, while quiet).
    incoming: Vec<u8>,
    /// Plaintext decrypted and not yet read, from `plaintext_read` on.
    plaintext: Vec<u8>,
    plaintext_read: usize,
    /// Ciphertext to send, from `outgoing_written` on; it goes before anything else.
    outgoing: Vec<u8>,
    outgoing_written: usize,
    /// The client said close_notify, or its connection ended.
    read_ended: bool,
    close_queued: bool,
    /// What is in `outgoing` is what the handshake left (TLS 1.3's session tickets): the first
    /// write joins it rather than waiting for it.
    join_first_write: bool,
}

impl std::fmt::Debug for ServerTlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTlsStream")
            .field("peer", &self.tcp.peer_addr().ok())
            .finish_non_exhaustive()
    }
}

/// What a TLS listener accepts clients with: its rustls configuration.
#[derive(Clone)]
pub struct Acceptor(Arc<ServerConfig>);

impl From<Arc<ServerConfig>> for Acceptor {
    fn from(config: Arc<ServerConfig>) -> Self {
        Acceptor(config)
    }
}

impl Acceptor {
    /// The server side of a handshake on `tcp`.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<ServerTlsStream> {
        accept(self.0.clone(), tcp).await
    }
}

/// The server side of a handshake on `tcp`.
pub async fn accept(config: Arc<ServerConfig>, tcp: TcpStream) -> io::Result<ServerTlsStream> {
    let conn = UnbufferedServerConnection::new(config).map_err(invalid)?;
    let mut stream = ServerTlsStream {
        tcp,
        conn,
        incoming: Vec::new(),
        plaintext: Vec::new(),
        plaintext_read: 0,
        outgoing: Vec::new(),
        outgoing_written: 0,
        read_ended: false,
        close_queued: false,
        join_first_write: false,
    };
    match std::future::poll_fn(|cx| stream.poll_handshake(cx)).await {
        Ok(()) => Ok(stream),
        Err(e) => {
            stream.send_alert();
            Err(e)
        }
    }
}

impl ServerTlsStream {
    /// The negotiated parameters (version, cipher suite, ALPN).
    pub fn tls(&self) -> &rustls::CommonState {
        &self.conn
    }

    /// Bytes of buffers held now: none while the session is quiet (but the beginning of a
    /// record the client has not finished sending).
    pub fn buffered(&self) -> usize {
        self.incoming.capacity() + self.plaintext.capacity() + self.outgoing.capacity()
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let step = self.process(None)?;
            if step == Step::Traffic && !self.conn.is_handshaking() {
                // TLS 1.3 leaves the session tickets, which the client does not wait for: they
                // wait for the first write, so that they and the greeting leave in one
                // segment (a read sends them too: after STARTTLS the client speaks first).
                // TLS 1.2 leaves the server's Finished, which the client does wait for.
                if self.conn.protocol_version() == Some(ProtocolVersion::TLSv1_3) {
                    self.join_first_write = true;
                } else {
                    ready!(self.poll_send(cx))?;
                }
                return Poll::Ready(Ok(()));
            }
            // Our flight goes out before we wait for the client's.
            ready!(self.poll_send(cx))?;
            if step == Step::Closed {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            if ready!(self.poll_receive(cx))? == 0 {
                let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof");
                return Poll::Ready(Err(eof));
            }
        }
    }

    /// A failed handshake's alert (rustls queues one for most failures, after whatever it had
    /// queued before), if the socket takes it at once.
    fn send_alert(&mut self) {
        loop {
            let status = self.conn.process_tls_records(&mut []);
            let Ok(ConnectionState::EncodeTlsData(mut data)) = status.state else {
                break;
            };
            if encode(&mut data, &mut self.outgoing).is_err() {
                break;
            }
        }
        let _ = self.tcp.try_write(&self.outgoing[self.outgoing_written..]);
    }

    /// Feed rustls what was received until it needs more bytes or application data may be
    /// written (then `action`, if any, runs); decrypted bytes go to `plaintext`, what rustls
    /// has to send to `outgoing`.
    fn process(&mut self, mut action: Option<TrafficAction<'_>>) -> io::Result<Step> {
        // Records taken are dropped from `incoming` once, at the end: shifting the rest after
        // each record would copy a read of tiny records over and over.
        let mut consumed = 0;
        loop {
            let UnbufferedStatus { mut discard, state } = self
                .conn
                .process_tls_records(&mut self.incoming[consumed..]);
            let step = match state.map_err(invalid)? {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(invalid)?;
                        discard += record.discard;
                        self.plaintext.extend_from_slice(record.payload);
                    }
                    None
                }
                ConnectionState::EncodeTlsData(mut data) => {
                    encode(&mut data, &mut self.outgoing)?;
                    None
                }
                // Queued in `outgoing`, which goes out before anything written later.
                ConnectionState::TransmitTlsData(data) => {
                    data.done();
                    None
                }
                ConnectionState::PeerClosed => {
                    self.read_ended = true;
                    None
                }
                ConnectionState::BlockedHandshake => Some(Step::NeedBytes),
                ConnectionState::Closed => Some(Step::Closed),
                ConnectionState::WriteTraffic(mut traffic) => {
                    if let Some(action) = action.take() {
                        action(&mut traffic, &mut self.outgoing)?;
                    }
                    Some(Step::Traffic)
                }
                // Early data is never accepted (the configuration allows none).
                _ => return Err(invalid("unexpected TLS state")),
            };
            consumed += discard;
            if let Some(step) = step {
                self.release_consumed(consumed);
                return Ok(step);
            }
        }
    }

    /// Drop the `consumed` bytes of `incoming` that made whole records. When nothing is left,
    /// the room (18 KiB) goes back at once, not at the next read that finds the socket empty:
    /// sessions between two reads hold none, which measured 7 % less memory per idle TLS
    /// session (the heap's high-water mark while many open at once).
    fn release_consumed(&mut self, consumed: usize) {
        if consumed == self.incoming.len() {
            self.incoming = Vec::new();
        } else {
            self.incoming.drain(..consumed);
        }
    }

    /// Read ciphertext into `incoming`; `Ready(0)` at the end of the connection. The room is
    /// made only once the socket is readable, and given back when it has nothing more.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.tcp.poll_read_ready(cx))?;
            if self.incoming.len() >= MAX_INCOMING {
                return Poll::Ready(Err(invalid("TLS record or handshake message too large")));
            }
            self.incoming.reserve(READ_ROOM);
            match self.tcp.try_read_buf(&mut self.incoming) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Quiet: keep only the beginning of a record, if any.
                    self.incoming.shrink_to_fit();
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Send what is queued in `outgoing`; its room goes back once it is all sent.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.outgoing_written < self.outgoing.len() {
            let rest = &self.outgoing[self.outgoing_written..];
            match ready!(Pin::new(&mut self.tcp).poll_write(cx, rest)) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.outgoing_written += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.outgoing = Vec::new();
        self.outgoing_written = 0;
        Poll::Ready(Ok(()))
    }

    /// Copy decrypted bytes into `buf`; true when some were.
    fn take_plaintext(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let pending = &self.plaintext[self.plaintext_read..];
        if pending.is_empty() || buf.remaining() == 0 {
            return false;
        }
        let n = pending.len().min(buf.remaining());
        buf.put_slice(&pending[..n]);
        self.plaintext_read += n;
        if self.plaintext_read == self.plaintext.len() {
            self.plaintext = Vec::new();
            self.plaintext_read = 0;
        }
        true
    }

    /// Encrypt `data` into `outgoing` (rustls cuts it into records).
    fn encrypt(&mut self, data: &[u8]) -> io::Result<()> {
        let mut encrypt = |traffic: &mut WriteTraffic<'_, ServerConnectionData>,
                           outgoing: &mut Vec<u8>| {
            let records = data.len() / (16 * 1024) + 1;
            append(outgoing, data.len() + records * RECORD_OVERHEAD, |out| {
                room_needed(traffic.encrypt(data, out))
            })
        };
        self.traffic(&mut encrypt)
    }

    /// Run `action` once application data may be written.
    fn traffic(&mut self, action: TrafficAction<'_>) -> io::Result<()> {
        match self.process(Some(action))? {
            Step::Traffic => Ok(()),
            Step::NeedBytes | Step::Closed => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

/// A handshake record (or an alert) rustls has for the client, at the end of `outgoing`.
fn encode(
    data: &mut EncodeTlsData<'_, ServerConnectionData>,
    outgoing: &mut Vec<u8>,
) -> io::Result<()> {
    append(outgoing, 1024, |out| match data.encode(out) {
        Ok(n) => Ok(n),
        Err(EncodeError::InsufficientSize(size)) => Err(Some(size)),
        Err(EncodeError::AlreadyEncoded) => Err(None),
    })
}

/// An encryption's result as [`append`] takes it.
fn room_needed(
    result: Result<usize, EncryptError>,
) -> Result<usize, Option<InsufficientSizeError>> {
    match result {
        Ok(n) => Ok(n),
        Err(EncryptError::InsufficientSize(size)) => Err(Some(size)),
        Err(EncryptError::EncryptExhausted) => Err(None),
    }
}

/// Let `put` write at the end of `out`, with `guess` bytes of room, or the room it says it
/// needs (`Err(Some)`); `Err(None)` is a failure.
fn append(
    out: &mut Vec<u8>,
    guess: usize,
    mut put: impl FnMut(&mut [u8]) -> Result<usize, Option<InsufficientSizeError>>,
) -> io::Result<()> {
    let start = out.len();
    out.resize(start + guess, 0);
    let written = match put(&mut out[start..]) {
        Ok(n) => n,
        Err(Some(InsufficientSizeError { required_size })) => {
            out.resize(start + required_size, 0);
            match put(&mut out[start..]) {
                Ok(n) => n,
                Err(_) => {
                    out.truncate(start);
                    return Err(invalid("TLS output did not fit"));
                }
            }
        }
        Err(None) => {
            out.truncate(start);
            return Err(invalid("TLS connection can encrypt no more"));
        }
    };
    out.truncate(start + written);
    Ok(())
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl AsyncRead for ServerTlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Nothing could be handed over: reading on would only pile up plaintext.
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.take_plaintext(buf) || this.read_ended {
                return Poll::Ready(Ok(()));
            }
            // Answers rustls owes the client (a key update's) go when the socket takes them;
            // a read never waits for that.
            if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
            if ready!(this.poll_receive(cx))? == 0 {
                // The end without close_notify: mail clients often just close.
                this.read_ended = true;
                continue;
            }
            if this.process(None)? == Step::Closed {
                this.read_ended = true;
            }
        }
    }
}

impl AsyncWrite for ServerTlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // What was written before goes first: at most one record waits here (the first write's
        // with the tickets before it). Only what the handshake left is joined (joining records
        // of a large transfer measured slower).
        if !std::mem::take(&mut this.join_first_write) {
            ready!(this.poll_send(cx))?;
        }
        if this.close_queued {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let data = &data[..data.len().min(WRITE_CHUNK)];
        this.encrypt(data)?;
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_queued {
            ready!(this.poll_send(cx))?;
            let mut close = |traffic: &mut WriteTraffic<'_, ServerConnectionData>,
                             outgoing: &mut Vec<u8>| {
                append(outgoing, 64, |out| {
                    room_needed(traffic.queue_close_notify(out))
                })
            };
            // A connection that cannot say close_notify any more is closed all the same.
            let _ = this.traffic(&mut close);
            this.close_queued = true;
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}
