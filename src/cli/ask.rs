//! `sessions`, `kick`, `backends`, `backend`, `move`, `reload` and `upgrade`: one question to the admin endpoint of a running
//! instance, its answer on the terminal.

use std::process::ExitCode;

use crate::admin::client::Endpoint;
use crate::server::registry::Kick;

/// What the admin endpoint is asked.
pub enum Question {
    Sessions,
    Reload,
    Upgrade,
    Kick(Kick),
    Backends,
    Drain { server: String, kick: bool },
    Undrain { server: String },
    Move { user: String, server: String },
}

/// Ask `endpoint`, print its answer.
pub fn ask(endpoint: &Endpoint, question: Question) -> ExitCode {
    let Some(runtime) = super::one_thread() else {
        eprintln!("portcullis: cannot start a runtime");
        return ExitCode::FAILURE;
    };
    let answer = runtime.block_on(async {
        match question {
            Question::Sessions => endpoint.sessions().await,
            Question::Reload => endpoint.reload().await,
            Question::Upgrade => endpoint.upgrade().await,
            Question::Kick(kick) => endpoint
                .kick(&kick)
                .await
                .map(|n| format!("{n} sessions ended\n")),
            Question::Backends => endpoint.backends().await,
            Question::Drain { server, kick } => endpoint.drain(&server, kick).await,
            Question::Undrain { server } => endpoint.undrain(&server).await,
            Question::Move { user, server } => endpoint.move_user(&user, &server).await,
        }
    });
    // Whatever the endpoint (or whoever answers on its port) says reaches the terminal one
    // line at a time, free of control characters.
    let shown = crate::log::one_line;
    match answer {
        Ok(text) => {
            for line in text.lines() {
                println!("{}", shown(line));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portcullis: {}", shown(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}
