//! After login: bytes both ways, unparsed, until either side closes or the session idles out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// Per-direction buffer while bytes are flowing (a FETCH of a large message).
const BIG_BUFFER: usize = 32 * 1024;
/// Per-direction buffer while the session is quiet. Thousands of sessions sit in IMAP IDLE for
/// hours, so an idle session must not pin the big one.
const SMALL_BUFFER: usize = 1024;

/// Byte counts of a finished relay, named as in Perdition's Closing line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    /// From the client.
    pub received: u64,
    /// To the client.
    pub sent: u64,
    /// The session ended because it was silent for too long.
    pub timed_out: bool,
}

/// Bytes relayed so far, each way, readable while the relay runs (the admin's session view).
#[derive(Debug, Default)]
pub struct Counts {
    pub from_client: AtomicU64,
    pub to_client: AtomicU64,
}

/// Copy both ways. When the client closes, the server is told (half-close) and the relay ends
/// once the server has closed too; when the server closes, the relay ends at once. `idle`
/// without a byte in either direction ends it as well, and so does `stop` (the end of the
/// shutdown grace period); the counts are those of the bytes relayed until then.
pub async fn relay<C, S>(
    client: C,
    server: S,
    idle: Duration,
    stop: impl std::future::Future<Output = ()>,
    counts: &Counts,
) -> Traffic
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    // Milliseconds since `start` of the last byte seen; shared by the two copy loops.
    let last_activity = AtomicU64::new(0);
    let (received, sent) = (&counts.from_client, &counts.to_client);
    let (received_before, sent_before) = (
        received.load(Ordering::Relaxed),
        sent.load(Ordering::Relaxed),
    );
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut server_read, mut server_write) = tokio::io::split(server);

    let upstream = copy(
        &mut client_read,
        &mut server_write,
        received,
        &last_activity,
        start,
    );
    let downstream = copy(
        &mut server_read,
        &mut client_write,
        sent,
        &last_activity,
        start,
    );
    let watchdog = silence(&last_activity, start, idle);
    // The session is over when the server side is: a client that half-closes after LOGOUT
    // still gets the server's answer, but once the server has closed nothing more can happen.
    tokio::pin!(upstream, downstream, watchdog, stop);
    let mut upstream_done = false;
    let timed_out = loop {
        tokio::select! {
            _ = &mut upstream, if !upstream_done => upstream_done = true,
            _ = &mut downstream => break false,
            _ = &mut watchdog => break true,
            _ = &mut stop => break false,
        }
    };
    Traffic {
        received: received.load(Ordering::Relaxed) - received_before,
        sent: sent.load(Ordering::Relaxed) - sent_before,
        timed_out,
    }
}

/// Completes once `idle` has passed since the last byte (`last_activity`, in milliseconds
/// since `start`).
async fn silence(last_activity: &AtomicU64, start: Instant, idle: Duration) {
    loop {
        let last = Duration::from_millis(last_activity.load(Ordering::Relaxed));
        let deadline = start + last + idle;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

async fn copy<R, W>(
    from: &mut R,
    to: &mut W,
    counter: &AtomicU64,
    last_activity: &AtomicU64,
    start: Instant,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; SMALL_BUFFER];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Grow when a read fills the buffer (a bulk transfer), shrink back after a short one
        // (interactive traffic, or the end of the transfer).
        let grow = n == buf.len() && buf.len() < BIG_BUFFER;
        let shrink = n < SMALL_BUFFER && buf.len() > SMALL_BUFFER;
        if to.write_all(&buf[..n]).await.is_err() || to.flush().await.is_err() {
            break;
        }
        counter.fetch_add(n as u64, Ordering::Relaxed);
        last_activity.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        if grow {
            buf.resize(BIG_BUFFER, 0);
        } else if shrink {
            buf = vec![0u8; SMALL_BUFFER];
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    #[tokio::test]
    async fn bytes_flow_both_ways_and_are_counted() {
        let (client_proxy, mut client) = duplex(1024);
        let (server_proxy, mut server) = duplex(1024);
        let relay = tokio::spawn(async move {
            let counts = Counts::default();
            relay(
                client_proxy,
                server_proxy,
                Duration::from_secs(5),
                std::future::pending(),
                &counts,
            )
            .await
        });
        client.write_all(b"a NOOP\r\n").await.unwrap();
        let mut buf = [0u8; 8];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"a NOOP\r\n");
        server.write_all(b"a OK\r\n").await.unwrap();
        let mut buf = [0u8; 6];
        client.read_exact(&mut buf).await.unwrap();
        drop(server);
        drop(client);
        let traffic = relay.await.unwrap();
        assert_eq!(
            traffic,
            Traffic {
                received: 8,
                sent: 6,
                timed_out: false
            }
        );
    }

    #[tokio::test]
    async fn bulk_transfers_larger_than_every_buffer_arrive_intact() {
        let (client_proxy, mut client) = duplex(64 * 1024);
        let (server_proxy, mut server) = duplex(64 * 1024);
        let relay = tokio::spawn(async move {
            let counts = Counts::default();
            relay(
                client_proxy,
                server_proxy,
                Duration::from_secs(5),
                std::future::pending(),
                &counts,
            )
            .await
        });
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let writer = {
            let payload = payload.clone();
            tokio::spawn(async move {
                server.write_all(&payload).await.unwrap();
                server.write_all(b"x").await.unwrap();
                server
            })
        };
        let mut got = vec![0u8; payload.len() + 1];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..payload.len()], &payload[..]);
        drop(writer.await.unwrap());
        drop(client);
        assert_eq!(relay.await.unwrap().sent, payload.len() as u64 + 1);
    }

    #[tokio::test]
    async fn stop_ends_the_relay_with_the_counts_so_far() {
        let (client_proxy, mut client) = duplex(1024);
        let (server_proxy, mut server) = duplex(1024);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let relay = tokio::spawn(async move {
            let counts = Counts::default();
            let stop = async move {
                let _ = stop_rx.await;
            };
            relay(
                client_proxy,
                server_proxy,
                Duration::from_secs(30),
                stop,
                &counts,
            )
            .await
        });
        client.write_all(b"a IDLE\r\n").await.unwrap();
        let mut buf = [0u8; 8];
        server.read_exact(&mut buf).await.unwrap();
        stop_tx.send(()).unwrap();
        let traffic = relay.await.unwrap();
        assert_eq!((traffic.received, traffic.sent), (8, 0));
        // The relay let go of both connections.
        assert_eq!(client.read(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn silence_ends_the_relay() {
        let (client_proxy, _client) = duplex(1024);
        let (server_proxy, _server) = duplex(1024);
        let traffic = relay(
            client_proxy,
            server_proxy,
            Duration::from_secs(30),
            std::future::pending(),
            &Counts::default(),
        )
        .await;
        assert_eq!(
            traffic,
            Traffic {
                timed_out: true,
                ..Traffic::default()
            }
        );
    }
}
