//! After login: bytes both ways, unparsed, until either side closes or the session idles out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// Per-direction buffer. Small: thousands of sessions sit idle in IMAP IDLE.
const BUFFER: usize = 16 * 1024;

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

/// Copy both ways. When one side closes, the other is told (half-close) and the relay ends once
/// both directions are done; `idle` without a byte in either direction ends it too.
pub async fn relay<C, S>(client: C, server: S, idle: Duration) -> Traffic
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    // Milliseconds since `start` of the last byte seen; shared by the two copy loops.
    let last_activity = AtomicU64::new(0);
    let received = AtomicU64::new(0);
    let sent = AtomicU64::new(0);
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut server_read, mut server_write) = tokio::io::split(server);

    let upstream = copy(
        &mut client_read,
        &mut server_write,
        &received,
        &last_activity,
        start,
    );
    let downstream = copy(
        &mut server_read,
        &mut client_write,
        &sent,
        &last_activity,
        start,
    );
    let watchdog = async {
        loop {
            let last = Duration::from_millis(last_activity.load(Ordering::Relaxed));
            let deadline = start + last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    let timed_out = tokio::select! {
        _ = async { tokio::join!(upstream, downstream) } => false,
        _ = watchdog => true,
    };
    Traffic {
        received: received.load(Ordering::Relaxed),
        sent: sent.load(Ordering::Relaxed),
        timed_out,
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
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() || to.flush().await.is_err() {
            break;
        }
        counter.fetch_add(n as u64, Ordering::Relaxed);
        last_activity.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
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
        let relay = tokio::spawn(relay(client_proxy, server_proxy, Duration::from_secs(5)));
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

    #[tokio::test(start_paused = true)]
    async fn silence_ends_the_relay() {
        let (client_proxy, _client) = duplex(1024);
        let (server_proxy, _server) = duplex(1024);
        let traffic = relay(client_proxy, server_proxy, Duration::from_secs(30)).await;
        assert_eq!(
            traffic,
            Traffic {
                timed_out: true,
                ..Traffic::default()
            }
        );
    }
}
