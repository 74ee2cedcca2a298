//! A logged-in session of either protocol the benchmark speaks: what the `logins` and `fetch`
//! modes (and their SMTP twins `smtp-logins` and `smtp-send`) share, so that each mode is written
//! once and only the protocol steps differ.

use crate::error::BenchError;
use crate::modes::Ctx;
use crate::target::Io;
use crate::{imap, smtp};

/// Which protocol the modes speak to the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Imap,
    /// SMTP submission (RFC 6409), AUTH PLAIN.
    Smtp,
}

pub enum Session {
    Imap(imap::Session),
    Smtp(smtp::Session),
}

impl Session {
    /// Greeting and login, each step under `--timeout`: IMAP `* OK` and `LOGIN`; SMTP `220`,
    /// `EHLO` and `AUTH PLAIN` with an initial response, up to its `235`.
    pub async fn log_in(
        ctx: &Ctx,
        stream: Box<dyn Io>,
        user: &str,
        password: &str,
    ) -> Result<Session, BenchError> {
        match ctx.protocol {
            Protocol::Imap => {
                let mut s = imap::Session::new(stream);
                ctx.step("greeting", s.greeting()).await?;
                ctx.step("LOGIN", s.login(user, password)).await?;
                Ok(Session::Imap(s))
            }
            Protocol::Smtp => {
                let mut s = smtp::Session::new(stream);
                ctx.step("greeting", s.greeting()).await?;
                ctx.step("EHLO", s.ehlo()).await?;
                ctx.step("AUTH", s.auth_plain(user, password)).await?;
                Ok(Session::Smtp(s))
            }
        }
    }

    /// IMAP `LOGOUT` or SMTP `QUIT`, under `--timeout`, then the write side is shut.
    pub async fn log_out(&mut self, ctx: &Ctx) -> Result<(), BenchError> {
        match self {
            Session::Imap(s) => ctx.step("LOGOUT", s.logout()).await,
            Session::Smtp(s) => ctx.step("QUIT", s.quit()).await,
        }
    }
}
