//! The other end of the admin endpoint, for `portcullis sessions` and `portcullis kick`.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::server::registry::Kick;

/// How long the endpoint may take to answer (an upgrade waits up to 30 s for its successor).
const ANSWER_TIME: Duration = Duration::from_secs(45);

/// Why the endpoint gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error(transparent)]
    Request(#[from] hyper::http::Error),
    #[error("{address}: {source}")]
    Unreachable {
        address: SocketAddr,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error(transparent)]
    Body(#[from] hyper::Error),
    /// The endpoint said no; its words, trimmed.
    #[error("{status}: {body}")]
    Refused { status: StatusCode, body: String },
    #[error("{0}: no answer in time")]
    NoAnswer(SocketAddr),
    #[error("not a session list: {0}")]
    NotASessionList(#[source] serde_json::Error),
    #[error("unexpected answer: {0}")]
    NotJson(#[source] serde_json::Error),
    /// JSON without the count of the sessions kicked; the whole answer.
    #[error("unexpected answer: {0}")]
    NoCount(String),
}

/// Where the endpoint is and how to be let in.
pub struct Endpoint {
    pub address: SocketAddr,
    pub token: Option<String>,
}

impl Endpoint {
    /// The live sessions, as a table for a terminal.
    pub async fn sessions(&self) -> Result<String, AskError> {
        let body = self.ask(Method::GET, "/sessions").await?;
        let sessions: Vec<serde_json::Value> =
            serde_json::from_str(&body).map_err(AskError::NotASessionList)?;
        Ok(table(&sessions))
    }

    /// End the sessions `kick` names; how many there were.
    pub async fn kick(&self, kick: &Kick) -> Result<u64, AskError> {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair(
                match kick {
                    Kick::User(_) => "user",
                    Kick::Backend(_) => "backend",
                },
                match kick {
                    Kick::User(v) | Kick::Backend(v) => v,
                },
            )
            .finish();
        let body = self
            .ask(Method::POST, &format!("/sessions/kick?{query}"))
            .await?;
        let answer: serde_json::Value = serde_json::from_str(&body).map_err(AskError::NotJson)?;
        answer["kicked"]
            .as_u64()
            .ok_or_else(|| AskError::NoCount(body))
    }

    /// The pools' servers, as a table for a terminal.
    pub async fn backends(&self) -> Result<String, AskError> {
        let body = self.ask(Method::GET, "/backends").await?;
        let servers: Vec<serde_json::Value> =
            serde_json::from_str(&body).map_err(AskError::NotJson)?;
        Ok(backends_table(&servers))
    }

    /// Drain `server` (no new users), `kick`: its sessions end too.
    pub async fn drain(&self, server: &str, kick: bool) -> Result<String, AskError> {
        let mut query = form(&[("server", server)]);
        if kick {
            query += "&kick=1";
        }
        self.ask(Method::POST, &format!("/backends/down?{query}"))
            .await?;
        let kicked = if kick { ", its sessions end" } else { "" };
        Ok(format!("{server} takes no new users{kicked}\n"))
    }

    /// `server` takes new users again.
    pub async fn undrain(&self, server: &str) -> Result<String, AskError> {
        let query = form(&[("server", server)]);
        self.ask(Method::POST, &format!("/backends/up?{query}"))
            .await?;
        Ok(format!("{server} takes new users again\n"))
    }

    /// Move `user` to `server`: its sessions end, it comes back there.
    pub async fn move_user(&self, user: &str, server: &str) -> Result<String, AskError> {
        let query = form(&[("user", user), ("server", server)]);
        self.ask(Method::POST, &format!("/move?{query}")).await?;
        Ok(format!("{user} moves to {server}\n"))
    }

    /// Have the server hand its sockets to the binary on disk and drain.
    pub async fn upgrade(&self) -> Result<String, AskError> {
        self.ask(Method::POST, "/upgrade").await
    }

    /// Have the server read its configuration again; what changed, or why nothing did.
    pub async fn reload(&self) -> Result<String, AskError> {
        self.ask(Method::POST, "/reload").await
    }

    async fn ask(&self, method: Method, path: &str) -> Result<String, AskError> {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.address));
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request.body(Full::new(Bytes::new()))?;
        let address = self.address;
        let unreachable = |source| AskError::Unreachable { address, source };
        let exchange = async {
            let response = client.request(request).await.map_err(unreachable)?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            let body = String::from_utf8_lossy(&body).into_owned();
            if status.is_success() {
                Ok(body)
            } else {
                let body = body.trim().to_string();
                Err(AskError::Refused { status, body })
            }
        };
        tokio::time::timeout(ANSWER_TIME, exchange)
            .await
            .map_err(|_| AskError::NoAnswer(address))?
    }
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        form.append_pair(name, value);
    }
    form.finish()
}

/// The text of field `name` of `row`, escaped for a terminal (see [`table`]).
fn field(row: &serde_json::Value, name: &str) -> String {
    let text = match &row[name] {
        serde_json::Value::String(v) => v.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    crate::log::one_line(&text).into_owned()
}

/// The pools' servers as columns of text.
fn backends_table(servers: &[serde_json::Value]) -> String {
    let mut table = format!(
        "{:<24} {:<24} {:<7} {:<6} {:>6} {:>8} {:>9}\n",
        "LISTENER", "SERVER", "HEALTH", "ADMIN", "WEIGHT", "USERS", "SESSIONS"
    );
    for s in servers {
        table += &format!(
            "{:<24} {:<24} {:<7} {:<6} {:>6} {:>8} {:>9}\n",
            field(s, "listener"),
            field(s, "server"),
            field(s, "health"),
            field(s, "admin"),
            field(s, "weight"),
            field(s, "users"),
            field(s, "sessions"),
        );
    }
    table
}

/// The sessions as columns of text. Every field is escaped as the log escapes a message: a
/// user name is the client's choice, and ESC or BEL in it would otherwise reach the admin's
/// terminal raw (retitle the window, move the cursor, rewrite the rows above).
fn table(sessions: &[serde_json::Value]) -> String {
    let mut table = format!(
        "{:<16} {:<11} {:<22} {:<24} {:<22} {:<9} {:>10} {:>10}\n",
        "SESSION", "PROTOCOL", "CLIENT", "USER", "BACK END", "STATE", "FROM", "TO"
    );
    for s in sessions {
        let field = |name: &str| field(s, name);
        table += &format!(
            "{:<16} {:<11} {:<22} {:<24} {:<22} {:<9} {:>10} {:>10}\n",
            field("id"),
            field("protocol"),
            field("client"),
            field("user"),
            field("backend"),
            field("state"),
            field("bytes_from_client"),
            field("bytes_to_client"),
        );
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_in_a_user_name_are_shown_escaped_not_sent_to_the_terminal() {
        let sessions = serde_json::json!([{
            "id": "abc", "protocol": "imap", "client": "192.0.2.1:5000",
            "user": "\u{1b}]0;pwned\u{7}eve\u{202e}", "backend": null, "state": "proxying",
            "bytes_from_client": 12, "bytes_to_client": 34,
        }]);
        let shown = table(sessions.as_array().unwrap());
        assert!(
            !shown.chars().any(|c| c.is_control() && c != '\n'),
            "{shown:?}"
        );
        assert!(shown.contains(r"\x1b]0;pwned\x07eve\u{202e}"), "{shown}");
        assert!(
            shown.contains("192.0.2.1:5000") && shown.contains(" 34\n"),
            "{shown}"
        );
    }
}
