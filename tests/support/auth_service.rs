//! A small real HTTP service speaking nginx's `auth_http` protocol, for the tests of the
//! `http` map: each request's headers are recorded, and a closure decides the reply.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// The request headers of one call, names lower-cased.
pub type Headers = HashMap<String, String>;

/// Decides the reply headers for a request.
pub type Decide = dyn Fn(&Headers, usize) -> Vec<(String, String)> + Send + Sync;

/// A minimal HTTP/1.1 service with keep-alive, recording every request it gets.
pub struct AuthService {
    pub port: u16,
    requests: Arc<Mutex<Vec<Headers>>>,
}

impl AuthService {
    pub fn start(
        decide: impl Fn(&Headers, usize) -> Vec<(String, String)> + Send + Sync + 'static,
    ) -> AuthService {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let decide: Arc<Decide> = Arc::new(decide);
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (seen, decide) = (seen.clone(), decide.clone());
                std::thread::spawn(move || serve(stream, &seen, &*decide));
            }
        });
        AuthService { port, requests }
    }

    /// A service that is not there: its port is closed.
    pub fn dead() -> AuthService {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        AuthService {
            port,
            requests: Default::default(),
        }
    }

    pub fn requests(&self) -> Vec<Headers> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, seen: &Mutex<Vec<Headers>>, decide: &Decide) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut first = String::new();
        if reader.read_line(&mut first).unwrap_or(0) == 0 {
            return;
        }
        assert!(first.starts_with("GET /auth HTTP/1.1"), "{first:?}");
        let mut headers = Headers::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
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
        if stream.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

pub fn ok(port: u16) -> Vec<(String, String)> {
    vec![
        ("Auth-Status".into(), "OK".into()),
        ("Auth-Server".into(), "localhost".into()),
        ("Auth-Port".into(), port.to_string()),
    ]
}
