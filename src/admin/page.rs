//! The live-session page (`GET /`): plain HTML rendered here, readable without JavaScript,
//! refreshing itself every few seconds.

use std::fmt::Write;

use crate::metrics::SessionState;
use crate::server::registry::SessionView;

use super::backends::Row;

/// How often the page reloads itself, in seconds.
const REFRESH: u32 = 5;

pub fn render(sessions: &[SessionView], backends: &[Row], version: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let proxying = sessions
        .iter()
        .filter(|s| s.state == SessionState::Proxying)
        .count();
    let mut html = String::with_capacity(2048 + sessions.len() * 256);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH}\">\
         <title>Portcullis: {} sessions</title>\
         <style>body{{font-family:sans-serif;margin:1em}}table{{border-collapse:collapse}}\
         th,td{{border:1px solid #bbb;padding:2px 6px;text-align:left}}\
         td.n{{text-align:right}}</style></head><body>\
         <h1>Portcullis {}</h1><p id=\"summary\">{} sessions, {proxying} logged in</p>\
         <table id=\"sessions\"><thead><tr><th>Session</th><th>Protocol</th><th>Listener</th>\
         <th>Client</th><th>User</th><th>Back end</th><th>TLS</th><th>State</th>\
         <th>For</th><th>From client</th><th>To client</th></tr></thead><tbody>\n",
        sessions.len(),
        escape(version),
        sessions.len(),
    );
    for s in sessions {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td class=\"n\">{} s</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td></tr>",
            escape(&s.id),
            s.protocol,
            escape(&s.listener),
            escape(&s.client),
            escape(s.user.as_deref().unwrap_or("")),
            escape(s.backend.as_deref().unwrap_or("")),
            if s.tls { "yes" } else { "no" },
            s.state,
            now.saturating_sub(s.started),
            s.bytes_from_client,
            s.bytes_to_client,
        );
    }
    html.push_str("</tbody></table>\n");
    if !backends.is_empty() {
        render_backends(&mut html, backends);
    }
    html.push_str("</body></html>\n");
    html
}

/// The pools' servers, below the sessions.
fn render_backends(html: &mut String, backends: &[Row]) {
    html.push_str(
        "<h2>Pools</h2><table id=\"backends\"><thead><tr><th>Listener</th><th>Server</th>\
         <th>Health</th><th>Admin</th><th>Weight</th><th>Users</th><th>Sessions</th></tr>\
         </thead><tbody>\n",
    );
    for row in backends {
        let s = &row.status;
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(&row.listener),
            escape(&s.server),
            s.health,
            s.admin,
            s.weight,
            s.users,
            s.sessions,
        );
    }
    html.push_str("</tbody></table>\n");
}

/// Text in HTML: a user name is the client's to choose.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_name_cannot_write_html() {
        let s = SessionView {
            id: "0123".into(),
            protocol: "imap",
            listener: "0.0.0.0:143".into(),
            client: "192.0.2.1:4000".into(),
            user: Some("<script>alert(1)</script>".into()),
            backend: Some("10.0.0.1:143".into()),
            tls: true,
            started: 0,
            bytes_from_client: 10,
            bytes_to_client: 20,
            state: SessionState::Proxying,
        };
        let html = render(&[s], &[], "1.0");
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("1 sessions, 1 logged in"));
        assert!(!html.contains("Pools"), "no pool, no table");
    }

    #[test]
    fn the_pools_servers_are_shown_below_the_sessions() {
        let row = Row {
            listener: "0.0.0.0:143".into(),
            status: crate::map::pool::control::ServerStatus {
                server: "10.0.0.11:143".into(),
                weight: 2,
                health: "down",
                admin: "up",
                users: 3,
                sessions: 4,
            },
        };
        let html = render(&[], &[row], "1.0");
        let table = &html[html.find("id=\"backends\"").expect("a pool table")..];
        assert!(
            table.contains("<td>10.0.0.11:143</td><td>down</td><td>up</td>"),
            "{table}"
        );
        assert!(
            table.contains("<td class=\"n\">3</td><td class=\"n\">4</td>"),
            "{table}"
        );
    }
}
