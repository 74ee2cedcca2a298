//! The `portcullis` command: what the command line asks for (`args`, read by clap, or
//! Perdition's flags when the program is started by one of Perdition's names), and doing it:
//! start-up (`start`), `check` (`check`), `import` (`import`), the admin endpoint's client
//! commands (`ask`).

pub mod args;
mod ask;
mod check;
mod import;
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
    let wanted = match perditions(&program, &args) {
        Some((name, flags)) => invocation::perdition(&name, flags),
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

/// The command lines Perdition's reader takes whole, with the name its defaults come from:
/// a program started as perdition.imaps (a link, as Debian's init script starts it), and
/// `portcullis perdition FLAGS`. Clap never sees them, so that Perdition's syntax is taken
/// exactly (clap would take a leading `--` as its own).
fn perditions<'a>(program: &str, args: &'a [String]) -> Option<(String, &'a [String])> {
    if let Some(name) = crate::config::perdition::invocation_name(program) {
        return Some((name, args));
    }
    match args.split_first() {
        Some((first, flags)) if first == "perdition" => Some(("perdition".into(), flags)),
        _ => None,
    }
}

impl Wanted {
    fn carry_out(self) -> ExitCode {
        match self {
            Wanted::Nothing => ExitCode::SUCCESS,
            Wanted::Run(start) => start::run(start),
            Wanted::Check(check) => check::check(check),
            Wanted::Import(from) => import::import(from),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn perditions_command_lines_never_reach_clap() {
        let args = strings(&["perdition", "--", "-P", "IMAP4"]);
        let (name, flags) = perditions("/usr/sbin/portcullis", &args).unwrap();
        assert_eq!((name.as_str(), flags), ("perdition", &args[1..]));
        let args = strings(&["--", "-s", "x"]);
        let (name, flags) = perditions("/usr/sbin/perdition.imaps", &args).unwrap();
        assert_eq!((name.as_str(), flags), ("perdition.imaps", &args[..]));
        assert!(perditions("portcullis", &strings(&["run", "-c", "x"])).is_none());
        assert!(perditions("portcullis", &[]).is_none());
    }
}
