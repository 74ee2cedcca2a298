//! The one thread that writes log lines to the destination.
//!
//! Every line of the process goes through here, so a destination that stops draining blocks
//! only this thread: sessions push into the bounded [`LineQueue`] and go on. The thread owns the
//! destination (stdout, stderr, a file, the syslog socket), reopens the file on request and
//! says how many lines were dropped once the destination drains again.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

use super::queue::{dropped_notice, Batch, Class, LineQueue};
use super::{LineFormat, Severity};

/// Bytes written to a stream or file at once.
const WRITE_CHUNK: usize = 64 * 1024;

/// Where the local syslog daemon (rsyslog, or journald's compatibility socket) listens.
pub const SYSLOG_SOCKET: &str = "/dev/log";

/// The destination, owned by the writer thread.
pub enum Sink {
    Stdout,
    Stderr,
    /// The path is kept so that the file can be reopened after log rotation (SIGHUP).
    File {
        path: String,
        file: File,
    },
    /// Connected to [`SYSLOG_SOCKET`] (or a test's socket, kept in `path`).
    Syslog {
        path: String,
        socket: UnixDatagram,
    },
}

/// The log file could not be opened (at start, or to reopen it after rotation).
#[derive(Debug, thiserror::Error)]
#[error("cannot open log file {path}: {source}")]
pub struct OpenFileError {
    path: String,
    #[source]
    source: std::io::Error,
}

pub fn open_append(path: &str) -> Result<File, OpenFileError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| OpenFileError {
            path: path.to_string(),
            source,
        })
}

pub fn connect_syslog(path: &str) -> std::io::Result<UnixDatagram> {
    let socket = UnixDatagram::unbound()?;
    socket.connect(path)?;
    Ok(socket)
}

impl Sink {
    /// A failed write has nowhere better to be reported; the line is lost, the process goes on.
    fn write(&mut self, line: &str) {
        let _ = match self {
            Sink::Stdout => std::io::stdout().lock().write_all(line.as_bytes()),
            Sink::Stderr => std::io::stderr().lock().write_all(line.as_bytes()),
            Sink::File { file, .. } => file.write_all(line.as_bytes()),
            Sink::Syslog { path, socket } => {
                // A restarted syslog daemon has a new socket: reconnect once and retry.
                socket.send(line.as_bytes()).map(drop).or_else(|_| {
                    *socket = connect_syslog(path)?;
                    socket.send(line.as_bytes()).map(drop)
                })
            }
        };
    }

    /// Many lines: one datagram each for syslog, a few large writes for a stream or file
    /// (a shutdown ends thousands of sessions at once).
    fn write_all(&mut self, lines: &std::collections::VecDeque<String>) {
        if let Sink::Syslog { .. } = self {
            lines.iter().for_each(|line| self.write(line));
            return;
        }
        let mut chunk = String::with_capacity(WRITE_CHUNK);
        for line in lines {
            if !chunk.is_empty() && chunk.len() + line.len() > WRITE_CHUNK {
                self.write(&chunk);
                chunk.clear();
            }
            chunk.push_str(line);
        }
        if !chunk.is_empty() {
            self.write(&chunk);
        }
    }

    fn reopen(&mut self) -> Option<Result<(), OpenFileError>> {
        match self {
            Sink::File { path, file } => Some(open_append(path).map(|new| *file = new)),
            _ => None,
        }
    }
}

/// What the sessions and the writer thread share.
struct Shared {
    state: Mutex<State>,
    /// Every line dropped since the start (the queue counts those of one batch only).
    dropped: Counter,
    /// Signalled when there is something for the writer to do.
    wake: Condvar,
    /// Signalled when the writer has written everything queued.
    idle: Condvar,
}

struct State {
    queue: LineQueue,
    /// The writer holds a batch it has not finished writing.
    writing: bool,
    /// SIGHUP asked for the log file to be reopened.
    reopen: bool,
    /// The logger is gone: write what is left, then stop.
    closed: bool,
    /// The writer sleeps on `wake`: only then does a push pay for a wake-up (a futex call
    /// and a thread switch per log line, a tenth of a plain login's CPU, before this).
    writer_sleeping: bool,
    /// The writer waits for more lines (`LINGER`): a push wakes it only if the queue fills.
    writer_lingering: bool,
    /// Callers of `flush` waiting on `idle`: only then does the writer signal it.
    flushers: usize,
}

/// The sessions' handle on the writer thread. Dropping it flushes (for a bounded time).
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// How long dropping the writer waits for the destination to take the last lines.
const FLUSH_ON_DROP: Duration = Duration::from_secs(3);

/// How long the writer waits, once woken, for more lines to write with the first, and after
/// a write for the next ones: a login makes three lines over some milliseconds, and a wake-up
/// and a write each cost more CPU than the formatting. While lines keep coming the writer
/// writes once per `LINGER`, never woken by a session; a line reaches the destination at most
/// this late. (50 ms was tried: a reader of the log right after a login, fail2ban's or a
/// test's, then missed the line.)
const LINGER: Duration = Duration::from_millis(5);

impl LogWriter {
    pub fn start(sink: Sink, capacity: usize, format: LineFormat) -> LogWriter {
        let shared = Arc::new(Shared {
            dropped: Counter::default(),
            state: Mutex::new(State {
                queue: LineQueue::new(capacity),
                writing: false,
                reopen: false,
                closed: false,
                writer_sleeping: false,
                writer_lingering: false,
                flushers: 0,
            }),
            wake: Condvar::new(),
            idle: Condvar::new(),
        });
        let thread_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || write_until_closed(&thread_shared, sink, &format));
        if let Err(e) = spawned {
            // Without a thread there is no log at all; say so where someone may see it.
            eprintln!("portcullis: cannot start the log writer: {e}");
        }
        LogWriter { shared }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queue a formatted line; never blocks on the destination.
    pub fn push(&self, line: String, class: Class) {
        let mut state = self.lock();
        let pushed = state.queue.push(line, class);
        if !pushed {
            self.shared.dropped.inc();
        }
        if pushed && (state.writer_sleeping || (state.writer_lingering && state.queue.filling())) {
            state.writer_sleeping = false;
            state.writer_lingering = false;
            drop(state);
            self.shared.wake.notify_one();
        }
    }

    /// The count of every line dropped so far.
    pub fn dropped(&self) -> Counter {
        self.shared.dropped.clone()
    }

    pub fn request_reopen(&self) {
        self.lock().reopen = true;
        self.shared.wake.notify_one();
    }

    /// Wait until everything queued so far is written, at most `limit`; false on timeout.
    pub fn flush(&self, limit: Duration) -> bool {
        let mut state = self.lock();
        state.flushers += 1;
        // The writer may be waiting for more lines to come: no more waiting.
        self.shared.wake.notify_one();
        let (mut state, waited) = self
            .shared
            .idle
            .wait_timeout_while(state, limit, |s| {
                !s.queue.is_empty() || s.writing || s.reopen
            })
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.flushers -= 1;
        !waited.timed_out()
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        self.flush(FLUSH_ON_DROP);
        self.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

fn write_until_closed(shared: &Shared, mut sink: Sink, format: &LineFormat) {
    // Lines came in the last `LINGER`: more are likely, so the writer waits for them on its
    // own clock instead of sleeping until a push wakes it. While lines keep coming, sessions
    // never wake it; a `LINGER` without a line puts it to sleep.
    let mut awake = false;
    loop {
        let (batch, reopen) = match next_batch(shared, &mut awake) {
            Next::Closed => return,
            Next::Nothing => continue,
            Next::Write(batch, reopen) => (batch, reopen),
        };
        if reopen {
            match sink.reopen() {
                Some(Ok(())) => sink.write(&format.line(Severity::Info, "Log file reopened")),
                Some(Err(e)) => sink.write(
                    &format.line(Severity::Err, &format!("cannot reopen the log file: {e}")),
                ),
                None => {}
            }
        }
        sink.write_all(&batch.lines);
        if batch.dropped > 0 {
            sink.write(&format.line(Severity::Warning, &dropped_notice(batch.dropped)));
        }
        let mut state = lock(shared);
        state.writing = false;
        if state.queue.is_empty() && !state.reopen && state.flushers > 0 {
            shared.idle.notify_all();
        }
    }
}

/// What the writer does next.
enum Next {
    Write(Batch, bool),
    /// A `LINGER` went by without a line: back to sleep.
    Nothing,
    Closed,
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared
        .state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sleep until woken (unless `awake`), linger for more lines, then take them (and whether
/// to reopen the file first).
fn next_batch(shared: &Shared, awake: &mut bool) -> Next {
    let mut state = lock(shared);
    while !*awake && state.queue.is_empty() && !state.reopen && !state.closed {
        state.writer_sleeping = true;
        state = shared
            .wake
            .wait(state)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
    }
    state.writer_sleeping = false;
    // Pushes during the wait do not wake the writer; a flush, a reopen or the end does.
    let urgent = |s: &State| s.flushers > 0 || s.reopen || s.closed || s.queue.filling();
    if !urgent(&state) {
        state.writer_lingering = true;
        state = shared
            .wake
            .wait_timeout_while(state, LINGER, |s| !urgent(s))
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .0;
        state.writer_lingering = false;
    }
    if state.closed && state.queue.is_empty() {
        return Next::Closed;
    }
    *awake = !state.queue.is_empty() || state.reopen;
    if !*awake {
        return Next::Nothing;
    }
    state.writing = true;
    Next::Write(state.queue.take(), std::mem::take(&mut state.reopen))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn format() -> LineFormat {
        LineFormat {
            ident: "t".into(),
            hostname: "h".into(),
            pid: 1,
            syslog_facility: Some(2),
        }
    }

    /// A syslog daemon that stops reading: its socket buffer fills, and the writer thread
    /// blocks in `send`. Pushing must still return at once.
    #[test]
    fn a_destination_that_stops_reading_never_blocks_a_push() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log").to_str().unwrap().to_string();
        let daemon = UnixDatagram::bind(&path).unwrap();
        let socket = connect_syslog(&path).unwrap();
        let writer = LogWriter::start(
            Sink::Syslog {
                path: path.clone(),
                socket,
            },
            64,
            format(),
        );
        let (done_tx, done_rx) = mpsc::channel();
        let pusher = std::thread::spawn(move || {
            for i in 0..20_000 {
                writer.push(format!("connect {i} {}", "x".repeat(200)), Class::Shed);
            }
            writer.push("Auth: failed".into(), Class::Keep);
            done_tx.send(()).unwrap();
            writer
        });
        done_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("pushing blocked on a stalled destination");
        let writer = pusher.join().unwrap();

        // The daemon wakes up: the Auth line was kept, and the drop is reported.
        daemon
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let mut seen = Vec::new();
        let has = |seen: &[String], text: &str| seen.iter().any(|d| d.contains(text));
        while !(has(&seen, "Auth: failed") && has(&seen, "lines dropped")) {
            let n = daemon.recv(&mut buf).unwrap_or_else(|e| {
                panic!("the writer went quiet ({e}); got {} lines", seen.len())
            });
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        assert!(writer.flush(Duration::from_secs(10)));
        // Every drop is counted for the metrics, as many as the notices say.
        daemon.set_nonblocking(true).unwrap();
        while let Ok(n) = daemon.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        let noticed: u64 = seen
            .iter()
            .filter_map(|l| {
                l.split("too slow: ")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        assert!(noticed > 0);
        assert_eq!(writer.dropped().get(), noticed);
    }

    /// Lines wait for company a few milliseconds, never for a flush, and a burst arrives
    /// whole and in order.
    #[test]
    fn lines_reach_the_destination_without_a_flush_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log").to_str().unwrap().to_string();
        let daemon = UnixDatagram::bind(&path).unwrap();
        daemon
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let socket = connect_syslog(&path).unwrap();
        let writer = LogWriter::start(Sink::Syslog { path, socket }, 64, format());
        let mut buf = vec![0u8; 4096];
        writer.push("Connect: alone".into(), Class::Keep);
        let n = daemon
            .recv(&mut buf)
            .expect("a lone line was never written");
        assert!(String::from_utf8_lossy(&buf[..n]).contains("Connect: alone"));
        // 48 lines: all a queue of 64 takes of Shed lines.
        for i in 0..48 {
            writer.push(format!("Auth: burst {i}"), Class::Shed);
        }
        for i in 0..48 {
            let n = daemon
                .recv(&mut buf)
                .expect("a burst line was never written");
            let line = String::from_utf8_lossy(&buf[..n]).into_owned();
            assert!(line.contains(&format!("Auth: burst {i}")), "{line}");
        }
    }
}
