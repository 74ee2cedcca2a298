//! `import`: another proxy's configuration written as the native one, on standard output;
//! what keeps it from being written on standard error, with exit status 1.

use std::io::Write;
use std::process::ExitCode;

use super::args::ImportFrom;

pub fn import(from: ImportFrom) -> ExitCode {
    let written = match &from {
        ImportFrom::Nginx { file } => crate::import::nginx(file),
        ImportFrom::Perdition { dir, defaults } => {
            crate::import::perdition::perdition(dir.as_deref(), defaults.as_deref())
        }
    };
    match written {
        Ok(text) => match std::io::stdout().write_all(text.as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("portcullis: cannot write the configuration: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("portcullis: {e}");
            ExitCode::FAILURE
        }
    }
}
