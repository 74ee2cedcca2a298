//! The `portcullis` command: what the command line asks for (`args`, read by clap, or
//! Perdition's flags when the program is started by one of Perdition's names), and doing it:
//! start-up (`start`), `check` (`check`), the admin endpoint's client commands (`ask`).

pub mod args;
mod ask;
mod check;
mod invocation;
mod start;

use std::process::ExitCode;

use clap::Parser;

use invocation::Wanted;

/// The program: read the command line, do what it asks.
pub fn main() -> ExitCode {
    crate::tls::install_default_provider();
    let mut argv = std::env::args();
    let program = argv.next().unwrap_or_default();
    let args: Vec<String> = argv.collect();
    // Started as perdition.imaps (a link, as Debian's init script starts it): Perdition mode,
    // its defaults from that name, every argument Perdition's.
    let wanted = match crate::config::perdition::invocation_name(&program) {
        Some(name) => invocation::perdition(&name, &args),
        None => match args::Cli::try_parse_from(std::iter::once(program).chain(args)) {
            Ok(cli) => invocation::native(cli.command),
            // Help and version on standard output (exit 0), usage errors on standard error
            // (exit 2).
            Err(e) => {
                let _ = e.print();
                return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
            }
        },
    };
    match wanted {
        Ok(wanted) => wanted.carry_out(),
        Err(e) => {
            eprintln!("portcullis: {e}");
            e.exit_code()
        }
    }
}

impl Wanted {
    fn carry_out(self) -> ExitCode {
        match self {
            Wanted::Nothing => ExitCode::SUCCESS,
            Wanted::Run(start) => start::run(start),
            Wanted::Check(check) => check::check(check),
            Wanted::Ask(endpoint, question) => ask::ask(&endpoint, question),
            Wanted::Completions(shell) => {
                let mut command = <args::Cli as clap::CommandFactory>::command();
                clap_complete::generate(shell, &mut command, "portcullis", &mut std::io::stdout());
                ExitCode::SUCCESS
            }
        }
    }
}

/// A runtime on this thread, for the commands that ask something once and end (`check`'s
/// probes, the admin client).
fn one_thread() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()
}
