//! The client-facing TLS stream (rustls' unbuffered API): a real rustls client over loopback
//! TCP talks to it; handshakes, data both ways at once, closes, failures, and the promise that
//! a quiet session holds no buffer, and the session tickets reach the client whoever speaks
//! first after the handshake.

mod support;

use std::sync::Arc;
use std::time::Duration;

use portcullis::tls::server_stream::{accept, ServerTlsStream};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use support::certs;

fn server_config() -> Arc<rustls::ServerConfig> {
    portcullis::tls::install_default_provider();
    let c = certs();
    let pairs = [(c.cert.as_path(), c.key.as_path())];
    portcullis::tls::server_config(&pairs, None, b"imap", &[], None)
        .expect("server config")
        .0
}

fn roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile_certs(&certs().ca) {
        roots.add(cert).expect("ca");
    }
    roots
}

fn client_config(alpn: &[&[u8]]) -> rustls::ClientConfig {
    portcullis::tls::install_default_provider();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

fn connector(alpn: &[&[u8]]) -> TlsConnector {
    TlsConnector::from(Arc::new(client_config(alpn)))
}

fn rustls_pemfile_certs(path: &std::path::Path) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_file_iter(path)
        .expect("read ca")
        .map(|c| c.expect("pem"))
        .collect()
}

/// A client and the server's stream, handshaken over loopback.
async fn pair(alpn: &[&[u8]]) -> (TlsStream<TcpStream>, std::io::Result<ServerTlsStream>) {
    pair_with(client_config(alpn)).await
}

/// [`pair`] with a client of this configuration.
async fn pair_with(
    client: rustls::ClientConfig,
) -> (TlsStream<TcpStream>, std::io::Result<ServerTlsStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = server_config();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        accept(config, tcp).await
    });
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let client = TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await;
    let server = server.await.expect("server task");
    (client.expect("client handshake"), server)
}

/// A listener that takes one connection and runs the server's handshake on it.
async fn one_handshake() -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = server_config();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        accept(config, tcp).await.map(drop)
    });
    (addr, server)
}

#[tokio::test]
async fn handshake_then_bytes_both_ways() {
    let (mut client, server) = pair(&[b"imap"]).await;
    let mut server = server.expect("server handshake");
    assert_eq!(server.tls().alpn_protocol(), Some(&b"imap"[..]));
    assert!(server.tls().protocol_version().is_some());
    send(&mut server, &mut client, b"* OK ready\r\n").await;
    send(&mut client, &mut server, b"a LOGIN u p\r\n").await;
}

#[tokio::test]
async fn a_quiet_session_holds_no_buffer() {
    let (mut client, server) = pair(&[]).await;
    let mut server = server.expect("server handshake");
    // Bytes flowed both ways, a record larger than one read among them.
    let big = vec![b'x'; 40_000];
    client.write_all(&big).await.unwrap();
    client.flush().await.unwrap();
    let mut got = vec![0u8; big.len()];
    server.read_exact(&mut got).await.unwrap();
    server.write_all(&big).await.unwrap();
    server.flush().await.unwrap();
    client.read_exact(&mut got).await.unwrap();
    // Now the client is silent: the server's read waits, holding nothing.
    let mut one = [0u8; 1];
    let waited = tokio::time::timeout(Duration::from_millis(50), server.read(&mut one)).await;
    assert!(waited.is_err(), "nothing was sent, yet the read returned");
    assert_eq!(server.buffered(), 0, "a quiet session keeps no buffer");
}

#[tokio::test]
async fn megabytes_both_ways_at_once_do_not_deadlock() {
    let (client, server) = pair(&[b"imap"]).await;
    let server = server.expect("server handshake");
    // The server echoes; the client writes 4 MiB while reading the echo.
    let echo = tokio::spawn(async move {
        let (mut r, mut w) = tokio::io::split(server);
        let n = tokio::io::copy(&mut r, &mut w).await;
        w.shutdown().await.ok();
        n
    });
    let (mut r, mut w) = tokio::io::split(client);
    let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), r.read_to_end(&mut back)).await;
    read.expect("the echo did not finish: deadlock?")
        .expect("read");
    writer.await.unwrap();
    assert_eq!(echo.await.unwrap().expect("echo"), data.len() as u64);
    assert!(back == data, "the echo differs ({} bytes back)", back.len());
}

#[tokio::test]
async fn close_notify_both_ways() {
    let (mut client, server) = pair(&[]).await;
    let mut server = server.expect("server handshake");
    client.shutdown().await.unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(
        server.read(&mut buf).await.unwrap(),
        0,
        "close_notify is the end"
    );
    server.write_all(b"* BYE\r\n").await.unwrap();
    server.shutdown().await.unwrap();
    let mut rest = Vec::new();
    // A clean end: rustls reports a missing close_notify as an error.
    client.read_to_end(&mut rest).await.expect("clean close");
    assert_eq!(rest, b"* BYE\r\n");
}

#[tokio::test]
async fn a_client_that_just_closes_is_an_end() {
    let (client, server) = pair(&[]).await;
    let mut server = server.expect("server handshake");
    let (tcp, _) = client.into_inner();
    drop(tcp);
    // The client left the session tickets unread: its kernel may answer with a reset.
    let mut buf = [0u8; 8];
    match server.read(&mut buf).await {
        Ok(n) => assert_eq!(n, 0, "bytes from a closed client"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}

#[tokio::test]
async fn another_protocol_is_refused_with_an_alert() {
    let (addr, server) = one_handshake().await;
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let client = connector(&[b"http/1.1"]).connect(name, tcp).await;
    let server = server.await.expect("server task");
    let server_error = server
        .expect_err("ALPN http/1.1 on an IMAP listener")
        .to_string();
    assert!(
        server_error.contains("protocol"),
        "server said: {server_error}"
    );
    let client_error = client
        .map(drop)
        .expect_err("the client is refused")
        .to_string();
    assert!(
        client_error
            .to_lowercase()
            .contains("noapplicationprotocol"),
        "the client got no alert naming the reason: {client_error}"
    );
}

#[tokio::test]
async fn garbage_instead_of_a_hello_is_an_error() {
    let (addr, server) = one_handshake().await;
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"a001 CAPABILITY\r\n").await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), server).await;
    let error = result
        .expect("the server waited")
        .expect("task")
        .expect_err("not TLS");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{error}");
}

#[tokio::test]
async fn many_tiny_records_in_one_read_arrive_in_order() {
    let (mut client, server) = pair(&[]).await;
    let mut server = server.expect("server handshake");
    // One record per byte, flushed together: a read of the server holds many of them.
    let sent: Vec<u8> = (0..3000u32).map(|i| b'a' + (i % 26) as u8).collect();
    for byte in &sent {
        client.write_all(std::slice::from_ref(byte)).await.unwrap();
        client.flush().await.unwrap();
    }
    let mut got = vec![0u8; sent.len()];
    server.read_exact(&mut got).await.unwrap();
    assert!(
        got == sent,
        "the bytes of tiny records came out of order or changed"
    );
}

/// A client's session store that counts the TLS 1.3 tickets it was given.
#[derive(Debug)]
struct TicketCount {
    inner: Arc<dyn rustls::client::ClientSessionStore>,
    tickets: std::sync::atomic::AtomicUsize,
    arrived: tokio::sync::Notify,
}

impl TicketCount {
    fn new() -> Arc<TicketCount> {
        Arc::new(TicketCount {
            inner: Arc::new(rustls::client::ClientSessionMemoryCache::new(8)),
            tickets: Default::default(),
            arrived: tokio::sync::Notify::new(),
        })
    }

    fn count(&self) -> usize {
        self.tickets.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl rustls::client::ClientSessionStore for TicketCount {
    fn set_kx_hint(&self, name: ServerName<'static>, group: rustls::NamedGroup) {
        self.inner.set_kx_hint(name, group)
    }
    fn kx_hint(&self, name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.inner.kx_hint(name)
    }
    fn set_tls12_session(
        &self,
        name: ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.inner.set_tls12_session(name, value)
    }
    fn tls12_session(
        &self,
        name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.inner.tls12_session(name)
    }
    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.inner.remove_tls12_session(name)
    }
    fn insert_tls13_ticket(
        &self,
        name: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.inner.insert_tls13_ticket(name, value);
        self.tickets
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.arrived.notify_one();
    }
    fn take_tls13_ticket(
        &self,
        name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(name)
    }
}

/// A client whose tickets `store` counts, and the server's stream, handshaken.
async fn pair_counting_tickets(
    store: &Arc<TicketCount>,
) -> (TlsStream<TcpStream>, ServerTlsStream) {
    let mut config = client_config(&[]);
    config.resumption = rustls::client::Resumption::store(store.clone());
    let (client, server) = pair_with(config).await;
    (client, server.expect("server handshake"))
}

/// Write `bytes` on one side and read them on the other.
async fn send(
    from: &mut (impl AsyncWriteExt + Unpin),
    to: &mut (impl AsyncReadExt + Unpin),
    bytes: &[u8],
) {
    from.write_all(bytes).await.unwrap();
    from.flush().await.unwrap();
    let mut got = vec![0u8; bytes.len()];
    to.read_exact(&mut got).await.unwrap();
    assert_eq!(got, bytes);
}

#[tokio::test]
async fn the_tickets_arrive_with_the_greeting() {
    let store = TicketCount::new();
    let (mut client, mut server) = pair_counting_tickets(&store).await;
    send(&mut server, &mut client, b"* OK ready\r\n").await;
    // They were sent before the greeting's record (in the same write): read already.
    assert_eq!(store.count(), 2, "the client has the server's two tickets");
}

#[tokio::test]
async fn the_tickets_arrive_when_the_client_speaks_first() {
    // After STARTTLS the server writes nothing until the client's command: the tickets the
    // handshake left must not wait for a write that may never come.
    let store = TicketCount::new();
    let (mut client, mut server) = pair_counting_tickets(&store).await;
    send(&mut client, &mut server, b"a CAPABILITY\r\n").await;
    let mut one = [0u8; 1];
    let waited = async {
        while store.count() < 2 {
            store.arrived.notified().await;
        }
    };
    tokio::select! {
        read = client.read(&mut one) => panic!("the server sent no data, yet the client read {read:?}"),
        _ = waited => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => {
            panic!("the client has {} of the server's two tickets after 10 s", store.count())
        }
    }
}

#[tokio::test]
async fn a_tls12_handshake_finishes_for_the_client_whatever_the_server_does_next() {
    // TLS 1.2's last flight (the server's Finished) completes the client's handshake: it must
    // leave with the handshake, not wait for the server's first read or write (a tls-alpn-01
    // validation is dropped right after the handshake; a session may wait on something else).
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = server_config();
    let (done, client_finished) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let server = accept(config, tcp).await.expect("server handshake");
        // Neither a read nor a write until the client is through (or gives up).
        let _ = client_finished.await;
        drop(server);
    });
    let config = rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
        .with_root_certificates(roots())
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let connect = TlsConnector::from(Arc::new(config)).connect(name, tcp);
    let finished = tokio::time::timeout(Duration::from_secs(10), connect).await;
    let _ = done.send(());
    server.await.expect("server task");
    let client = finished
        .expect("the client's TLS 1.2 handshake did not finish within 10 s")
        .expect("client handshake");
    assert_eq!(
        client.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
}
