//! The `http-01` answerer on `[acme] http_listen`: `GET /.well-known/acme-challenge/TOKEN`
//! answers the pending token's key authorization; anything else is 404. Nothing else is
//! served there.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::challenge::HttpTokens;

const PREFIX: &str = "/.well-known/acme-challenge/";

/// A request's headers must arrive within this, and the whole exchange within twice it: a CA
/// asks once and reads a few dozen bytes.
const HEADER_TIME: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed at once. Port 80 is open to everyone, and a
/// CA's validation needs a handful.
const CONNECTIONS: usize = 64;
/// What a request may buffer (hyper's smallest), and its headers at most.
const MAX_REQUEST: usize = 8192;
const MAX_HEADERS: usize = 32;

/// Serve the answers on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, tokens: HttpTokens) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS));
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            // Out of descriptors, most likely: give it a moment.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let tokens = tokens.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let answer = answer(&tokens, &request);
                async move { Ok::<_, Infallible>(answer) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIME)
                .max_buf_size(MAX_REQUEST)
                .max_headers(MAX_HEADERS)
                .keep_alive(false)
                .serve_connection(TokioIo::new(tcp), service);
            let _ = tokio::time::timeout(HEADER_TIME * 2, connection).await;
            drop(slot);
        });
    }
}

fn answer<B>(tokens: &HttpTokens, request: &Request<B>) -> Response<Full<Bytes>> {
    let found = request
        .uri()
        .path()
        .strip_prefix(PREFIX)
        .filter(|_| request.method() == hyper::Method::GET)
        .and_then(|token| tokens.answer(token));
    let (status, body) = match found {
        Some(key_authorization) => (StatusCode::OK, key_authorization),
        None => (StatusCode::NOT_FOUND, "not found\n".to_string()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/octet-stream"),
    );
    response
}
