//! After login: bytes both ways, unparsed, until either side closes or the session idles out.
//!
//! One hand-written future per session rather than two copy loops under a `select!`: an IMAP
//! session parked in IDLE for hours holds only the two streams, two small direction states and
//! a timer. Nothing is buffered per session while it is quiet ("hibernation"): each read goes
//! into a buffer on the poller's stack and is written on at once; only what the other side
//! will not take yet is copied to the heap, and that copy is freed as soon as it is written.

use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The stack buffer of one read: a large FETCH moves in reads this big (a TLS record is at
/// most 16 KiB of plaintext).
const READ_SIZE: usize = 32 * 1024;
/// Reads per direction in one poll before yielding to the other sessions on this thread.
const READS_PER_POLL: usize = 16;

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
pub fn relay<C, S, Stop>(
    client: C,
    server: S,
    idle: Duration,
    stop: Stop,
    counts: &Counts,
) -> Relay<'_, C, S, Stop>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
    Stop: Future<Output = ()>,
{
    let now = Instant::now();
    Relay {
        client,
        server,
        upstream: Direction::default(),
        downstream: Direction::default(),
        idle,
        last_activity: now,
        silence: Box::pin(tokio::time::sleep_until(now + idle)),
        stop: Box::pin(stop),
        counts,
    }
}

/// The relay of one session; see [`relay`].
pub struct Relay<'a, C, S, Stop> {
    client: C,
    server: S,
    /// Client to server.
    upstream: Direction,
    /// Server to client.
    downstream: Direction,
    idle: Duration,
    last_activity: Instant,
    /// Fires at `last_activity + idle` or earlier (it is moved on only when it fires, not at
    /// every byte).
    silence: Pin<Box<Sleep>>,
    stop: Pin<Box<Stop>>,
    counts: &'a Counts,
}

/// One direction's progress.
#[derive(Default)]
struct Direction {
    /// Bytes read that the writer has not taken yet. No allocation unless the writer has been
    /// slower than the reader since the reader last had nothing to give.
    backlog: Vec<u8>,
    /// How much of `backlog` is written.
    written: usize,
    /// Written bytes the writer may still hold (TLS: a record not yet sent).
    unflushed: bool,
    phase: DirectionPhase,
    /// Bytes written on.
    moved: u64,
}

#[derive(Default, PartialEq, Eq)]
enum DirectionPhase {
    #[default]
    Copying,
    /// The reader ended (or the writer failed): shut the writer down, then done.
    ShuttingDown,
    Done,
}

impl Direction {
    /// Copy until the reader would block (`Pending`) or ends (`Ready`, the writer shut down).
    /// `activity` is set when a byte moved.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
        counter: &AtomicU64,
        activity: &mut bool,
    ) -> Poll<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut reads = 0;
        loop {
            match self.phase {
                DirectionPhase::Done => return Poll::Ready(()),
                DirectionPhase::ShuttingDown => return self.poll_shut_down(cx, to),
                DirectionPhase::Copying => {}
            }
            // What the writer has not taken yet goes first: nothing more is read meanwhile.
            if ready!(self.poll_drain(cx, to, counter, activity)).is_err() {
                self.phase = DirectionPhase::ShuttingDown;
                continue;
            }
            if reads == READS_PER_POLL {
                // A direction that always has bytes ready must not keep the thread.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            reads += 1;
            ready!(self.poll_read_once(cx, from, to, counter, activity));
        }
    }

    /// The reader ended (or the writer failed): shut the writer down, then this direction is
    /// done, whatever the shutdown's outcome.
    fn poll_shut_down<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        to: &mut W,
    ) -> Poll<()> {
        self.backlog = Vec::new();
        let _ = ready!(Pin::new(&mut *to).poll_shutdown(cx));
        self.phase = DirectionPhase::Done;
        Poll::Ready(())
    }

    /// Write the backlog, then flush what the writer may hold. `Ready(Err)` when the writer
    /// failed.
    fn poll_drain<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        to: &mut W,
        counter: &AtomicU64,
        activity: &mut bool,
    ) -> Poll<Result<(), ()>> {
        if self.written < self.backlog.len() {
            ready!(self.write(cx, to, None, counter, activity))?;
        }
        if self.unflushed {
            ready!(Pin::new(&mut *to).poll_flush(cx)).map_err(drop)?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    /// One read into a buffer on the stack, written on at once; `Pending` when the reader has
    /// nothing. The end of the stream or a failure moves the direction to shutting down.
    fn poll_read_once<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
        counter: &AtomicU64,
        activity: &mut bool,
    ) -> Poll<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut stack = [MaybeUninit::<u8>::uninit(); READ_SIZE];
        let mut read = ReadBuf::uninit(&mut stack);
        let Poll::Ready(result) = Pin::new(&mut *from).poll_read(cx, &mut read) else {
            // Quiet: the heap copy a slow writer needed goes back now, not at every
            // drain of a large transfer.
            self.backlog = Vec::new();
            return Poll::Pending;
        };
        match result {
            Ok(()) if !read.filled().is_empty() => {
                if self.write(cx, to, Some(read.filled()), counter, activity)
                    == Poll::Ready(Err(()))
                {
                    self.phase = DirectionPhase::ShuttingDown;
                }
            }
            // The end of the stream, or a broken one: the same to the other side.
            Ok(()) | Err(_) => self.phase = DirectionPhase::ShuttingDown,
        }
        Poll::Ready(())
    }

    /// Write `fresh` (just read) or else the backlog, as far as the writer takes it now; what
    /// it does not take of `fresh` becomes the backlog. `Ready(Ok)` when all is written.
    fn write<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        to: &mut W,
        fresh: Option<&[u8]>,
        counter: &AtomicU64,
        activity: &mut bool,
    ) -> Poll<Result<(), ()>> {
        let mut offset = 0;
        loop {
            let rest = match fresh {
                Some(bytes) => &bytes[offset..],
                None => &self.backlog[self.written..],
            };
            if rest.is_empty() {
                if fresh.is_none() {
                    // Written; the room is kept while bytes flow (see `poll_copy`).
                    self.backlog.clear();
                    self.written = 0;
                }
                return Poll::Ready(Ok(()));
            }
            match Pin::new(&mut *to).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Err(())),
                Poll::Ready(Ok(n)) => {
                    match fresh {
                        Some(_) => offset += n,
                        None => self.written += n,
                    }
                    self.moved += n as u64;
                    self.unflushed = true;
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                    *activity = true;
                }
                Poll::Pending => {
                    if let Some(bytes) = fresh {
                        // Exactly the room needed: doubling would let it reach twice a read.
                        self.backlog.clear();
                        self.backlog.reserve_exact(bytes.len() - offset);
                        self.backlog.extend_from_slice(&bytes[offset..]);
                        self.written = 0;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<C, S, Stop> Future for Relay<'_, C, S, Stop>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
    Stop: Future<Output = ()>,
{
    type Output = Traffic;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Traffic> {
        let this = self.get_mut();
        if this.stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(this.traffic(false));
        }
        let mut activity = false;
        let counts = this.counts;
        // Once the client has closed, the server is only waited for: a client that half-closes
        // after LOGOUT still gets the server's answer.
        let _ = this.upstream.poll_copy(
            cx,
            &mut this.client,
            &mut this.server,
            &counts.from_client,
            &mut activity,
        );
        // The session is over when the server side is: nothing more can happen.
        let server_done = this
            .downstream
            .poll_copy(
                cx,
                &mut this.server,
                &mut this.client,
                &counts.to_client,
                &mut activity,
            )
            .is_ready();
        if server_done {
            return Poll::Ready(this.traffic(false));
        }
        if activity {
            this.last_activity = Instant::now();
        }
        while this.silence.as_mut().poll(cx).is_ready() {
            let deadline = this.last_activity + this.idle;
            if Instant::now() >= deadline {
                return Poll::Ready(this.traffic(true));
            }
            this.silence.as_mut().reset(deadline);
        }
        Poll::Pending
    }
}

impl<C, S, Stop> Relay<'_, C, S, Stop> {
    fn traffic(&self, timed_out: bool) -> Traffic {
        Traffic {
            received: self.upstream.moved,
            sent: self.downstream.moved,
            timed_out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

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

    /// Pipes of 7 bytes: every write is partial and most find the other side full, so the
    /// bytes go through the backlog, in order, both ways at once.
    #[tokio::test]
    async fn a_slow_reader_on_either_side_loses_and_reorders_nothing() {
        let (client_proxy, client) = duplex(7);
        let (server_proxy, server) = duplex(7);
        let relay = tokio::spawn(async move {
            let counts = Counts::default();
            let traffic = relay(
                client_proxy,
                server_proxy,
                Duration::from_secs(5),
                std::future::pending(),
                &counts,
            )
            .await;
            let seen = (
                counts.from_client.load(Ordering::Relaxed),
                counts.to_client.load(Ordering::Relaxed),
            );
            (traffic, seen)
        });
        let up: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
        let down: Vec<u8> = (0..70_000u32).map(|i| (i * 3 % 241) as u8).collect();
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let (mut server_read, mut server_write) = tokio::io::split(server);
        let (up2, down2) = (up.clone(), down.clone());
        let sending = tokio::spawn(async move {
            client_write.write_all(&up2).await.unwrap();
            client_write.shutdown().await.unwrap();
            client_write
        });
        let answering = tokio::spawn(async move {
            let mut got = Vec::new();
            server_read.read_to_end(&mut got).await.unwrap();
            server_write.write_all(&down2).await.unwrap();
            drop((server_read, server_write));
            got
        });
        let mut got = Vec::new();
        client_read.read_to_end(&mut got).await.unwrap();
        // The server saw everything the client sent, and the end of it (the half-close);
        // its answer, sent after, reached the client whole.
        assert_eq!(answering.await.unwrap(), up);
        assert_eq!(got, down);
        drop(sending.await.unwrap());
        let (traffic, seen) = relay.await.unwrap();
        assert_eq!((traffic.received, traffic.sent), (50_000, 70_000));
        assert_eq!(seen, (50_000, 70_000));
        assert!(!traffic.timed_out);
    }

    /// Bytes keep the session alive: silence is counted from the last of them.
    #[tokio::test(start_paused = true)]
    async fn traffic_holds_off_the_idle_timeout() {
        let (client_proxy, mut client) = duplex(1024);
        let (server_proxy, mut server) = duplex(1024);
        let relay = tokio::spawn(async move {
            relay(
                client_proxy,
                server_proxy,
                Duration::from_secs(30),
                std::future::pending(),
                &Counts::default(),
            )
            .await
        });
        let mut buf = [0u8; 8];
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_secs(20)).await;
            client.write_all(b"a NOOP\r\n").await.unwrap();
            server.read_exact(&mut buf).await.unwrap();
        }
        assert!(!relay.is_finished());
        let traffic = relay.await.unwrap();
        assert_eq!(
            traffic,
            Traffic {
                received: 32,
                sent: 0,
                timed_out: true
            }
        );
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
