//! A small real HTTP service speaking nginx's `auth_http` protocol, for the tests of the
//! `http` map: each request's headers are recorded, and a closure decides the reply.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The request headers of one call, names lower-cased.
pub type Headers = HashMap<String, String>;

/// Decides the reply headers for a request.
pub type Decide = dyn Fn(&Headers, usize) -> Vec<(String, String)> + Send + Sync;

/// A minimal HTTP/1.1 service with keep-alive, recording every request it gets.
pub struct AuthService {
    pub port: u16,
    /// The socket of a service on a unix socket ([`AuthService::start_unix`]).
    pub socket: Option<PathBuf>,
    requests: Arc<Mutex<Vec<Headers>>>,
    /// Connections accepted (keep-alive shows as fewer connections than requests).
    connections: Arc<AtomicUsize>,
    _dir: Option<tempfile::TempDir>,
}

impl AuthService {
    pub fn start(
        decide: impl Fn(&Headers, usize) -> Vec<(String, String)> + Send + Sync + 'static,
    ) -> AuthService {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let service = AuthService::empty(port);
        let accept = service.acceptor(Arc::new(decide));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let reader = stream.try_clone().unwrap();
                accept(Box::new(reader), Box::new(stream));
            }
        });
        service
    }

    /// The same service on a unix socket in a directory of its own (nginx's
    /// `auth_http unix:/path:/uri`).
    pub fn start_unix(
        decide: impl Fn(&Headers, usize) -> Vec<(String, String)> + Send + Sync + 'static,
    ) -> AuthService {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let mut service = AuthService::empty(0);
        let accept = service.acceptor(Arc::new(decide));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let reader = stream.try_clone().unwrap();
                accept(Box::new(reader), Box::new(stream));
            }
        });
        service.socket = Some(path);
        service._dir = Some(dir);
        service
    }

    fn empty(port: u16) -> AuthService {
        AuthService {
            port,
            socket: None,
            requests: Default::default(),
            connections: Default::default(),
            _dir: None,
        }
    }

    /// What serves each accepted connection, on a thread of its own.
    fn acceptor(
        &self,
        decide: Arc<Decide>,
    ) -> impl Fn(Box<dyn Read + Send>, Box<dyn Write + Send>) {
        let (seen, connections) = (self.requests.clone(), self.connections.clone());
        move |reader, writer| {
            connections.fetch_add(1, Ordering::SeqCst);
            let (seen, decide) = (seen.clone(), decide.clone());
            std::thread::spawn(move || serve(reader, writer, &seen, &*decide));
        }
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// A service that is not there: its port is closed.
    pub fn dead() -> AuthService {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        AuthService::empty(port)
    }

    pub fn requests(&self) -> Vec<Headers> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(
    reader: Box<dyn Read + Send>,
    mut stream: Box<dyn Write + Send>,
    seen: &Mutex<Vec<Headers>>,
    decide: &Decide,
) {
    let mut reader = BufReader::new(reader);
    loop {
        let mut first = String::new();
        if reader.read_line(&mut first).unwrap_or(0) == 0 {
            return;
        }
        // Portcullis keeps the connection (HTTP/1.1); nginx asks once per connection (1.0).
        assert!(first.starts_with("GET /auth HTTP/1."), "{first:?}");
        let once = first.starts_with("GET /auth HTTP/1.0");
        // Header values as bytes (a name that is not UTF-8 comes as it is, as nginx sends it),
        // shown here as Rust would escape them.
        let mut headers = Headers::new();
        loop {
            let mut line = Vec::new();
            reader.read_until(b'\n', &mut line).unwrap();
            let line = shown(&line);
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.insert(name.to_ascii_lowercase(), value.trim().to_string());
        }
        let count = {
            let mut seen = seen.lock().unwrap();
            seen.push(headers.clone());
            seen.len()
        };
        let mut reply = String::from("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n");
        for (name, value) in decide(&headers, count) {
            reply.push_str(&format!("{name}: {value}\r\n"));
        }
        reply.push_str("\r\n");
        if stream.write_all(reply.as_bytes()).is_err() || once {
            return;
        }
    }
}

/// Bytes as text: UTF-8 as it is, any other byte as `\xNN`.
pub fn shown(bytes: &[u8]) -> String {
    bytes
        .utf8_chunks()
        .map(|chunk| {
            let bad: String = chunk
                .invalid()
                .iter()
                .map(|b| format!("\\x{b:02X}"))
                .collect();
            format!("{}{bad}", chunk.valid())
        })
        .collect()
}

pub fn ok(port: u16) -> Vec<(String, String)> {
    vec![
        ("Auth-Status".into(), "OK".into()),
        ("Auth-Server".into(), "localhost".into()),
        ("Auth-Port".into(), port.to_string()),
    ]
}
