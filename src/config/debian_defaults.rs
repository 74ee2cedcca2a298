//! Debian's `/etc/default/perdition`, read as its init script reads it, served from one
//! process (`portcullis perdition --debian-defaults [FILE]`).
//!
//! The init script sources the file (shell variables), then starts, for each of POP3, POP3S,
//! IMAP4, IMAP4S and MANAGESIEVE whose variable is `yes` (unset or empty counts as `yes`),
//! `/usr/sbin/perdition.<name>` with `$FLAGS $<NAME>_FLAGS`, split at blanks: each instance
//! then finds its own configuration file by its program name (`/etc/perdition/
//! perdition.imaps.conf`, ...). Here every instance is read exactly so, by the same code as
//! a single `portcullis perdition`, and their listeners are put together in one
//! configuration.

use std::collections::HashMap;
use std::iter::Peekable;
use std::path::{Path, PathBuf};
use std::str::Chars;

use super::perdition::{self, Compat, PerditionError};

/// Where Debian keeps the file.
pub const DEFAULT_FILE: &str = "/etc/default/perdition";

/// The instances the init script can start, in its order: the variable that enables one, and
/// the program it starts.
const INSTANCES: [(&str, &str); 5] = [
    ("POP3", "perdition.pop3"),
    ("POP3S", "perdition.pop3s"),
    ("IMAP4", "perdition.imap4"),
    ("IMAP4S", "perdition.imaps"),
    ("MANAGESIEVE", "perdition.managesieve"),
];

/// Why the defaults file cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum DebianDefaultsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Shell {
        path: PathBuf,
        #[source]
        source: ShellError,
    },
    /// An instance's flags or configuration file.
    #[error("{}: {name} ({program} {flags}): {source}", path.display())]
    Instance {
        path: PathBuf,
        name: &'static str,
        program: &'static str,
        flags: String,
        #[source]
        source: Box<PerditionError>,
    },
    #[error("{}: {name}: its flags ask for help", path.display())]
    AsksForHelp { path: PathBuf, name: &'static str },
    #[error(
        "{}: {name}: inetd_mode makes no sense for a daemon the init script starts",
        path.display()
    )]
    Inetd { path: PathBuf, name: &'static str },
    #[error("{} enables no protocol (POP3, POP3S, IMAP4, IMAP4S, MANAGESIEVE)", path.display())]
    NoProtocol { path: PathBuf },
    /// Two instances differ in what one process has once.
    #[error(
        "{first} and {other} differ in {what}, which one process has once: give them the same \
         (in FLAGS, or in both configuration files)"
    )]
    Differ {
        first: &'static str,
        other: &'static str,
        what: &'static str,
    },
    #[error("the instances name different pid files; one process has one")]
    PidFiles,
}

/// For callers that still pass errors on as text (the command line, a reload's source).
impl From<DebianDefaultsError> for String {
    fn from(e: DebianDefaultsError) -> String {
        e.to_string()
    }
}

/// A line of the file that a shell would read otherwise than as a variable.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error("line {0}: only NAME=value lines are understood, not a command")]
    NotAnAssignment(usize),
    #[error("line {line}: {name}=... is followed by a command; quote a value with blanks")]
    CommandAfter { line: usize, name: String },
    #[error("line {0}: command substitution is not understood")]
    CommandSubstitution(usize),
    #[error("line {0}: only ${{NAME}} is understood in braces")]
    Braces(usize),
    #[error("line {0}: a quote is not closed")]
    UnclosedQuote(usize),
}

/// An instance the file enables: its variable's name, its program, and what its flags make.
struct Instance {
    name: &'static str,
    program: &'static str,
    compat: Compat,
}

/// Every instance `path` enables, as one configuration.
pub fn read(path: &Path) -> Result<Compat, DebianDefaultsError> {
    read_in(path, &perdition::system_path("/etc/perdition"))
}

/// As [`read`], each instance's configuration file searched for in `config_dir` rather than
/// `/etc/perdition` (`portcullis import perdition DIR`).
pub fn read_in(path: &Path, config_dir: &Path) -> Result<Compat, DebianDefaultsError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|source| DebianDefaultsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let variables = shell_variables(&text).map_err(|source| DebianDefaultsError::Shell {
        path: path.to_path_buf(),
        source,
    })?;
    let value = |name: &str| variables.get(name).map(String::as_str).unwrap_or("");
    let mut notes = Vec::new();
    if value("RUN_PERDITION") != "yes" {
        notes.push(format!(
            "{shown}: RUN_PERDITION is not \"yes\" (Debian's init script would start nothing); \
             the protocols it enables are served all the same"
        ));
    }
    let mut instances = Vec::new();
    for (name, program) in INSTANCES {
        // The init script's `${POP3:=yes}`, then `[ "$POP3" = "yes" ]`.
        if !matches!(value(name), "" | "yes") {
            continue;
        }
        // `$FLAGS $POP3_FLAGS` unquoted: split at blanks, quotes inside taken literally.
        let flags = format!("{} {}", value("FLAGS"), value(&format!("{name}_FLAGS")));
        instances.push(instance(path, config_dir, name, program, &flags)?);
    }
    let mut instances = instances.into_iter();
    let Some(first) = instances.next() else {
        return Err(DebianDefaultsError::NoProtocol {
            path: path.to_path_buf(),
        });
    };
    let mut merged = merge(first, instances.collect())?;
    notes.append(&mut merged.warnings);
    merged.warnings = notes;
    Ok(merged)
}

/// `flags` as an error may show them: the map library's options (`-m`, which hold the
/// database's password) masked.
fn shown_flags(flags: &[String]) -> String {
    let mut shown = Vec::with_capacity(flags.len());
    let mut mask_next = false;
    for flag in flags {
        if std::mem::take(&mut mask_next) {
            shown.push("***".to_string());
        } else if flag == "-m" || flag == "--map_library_opt" {
            mask_next = true;
            shown.push(flag.clone());
        } else if flag.starts_with("--map_library_opt=") {
            shown.push("--map_library_opt=***".into());
        } else if flag.starts_with("-m") {
            shown.push("-m***".into());
        } else {
            shown.push(flag.clone());
        }
    }
    shown.join(" ")
}

/// The instance the init script starts as `program` with `flags`.
fn instance(
    path: &Path,
    config_dir: &Path,
    name: &'static str,
    program: &'static str,
    flags: &str,
) -> Result<Instance, DebianDefaultsError> {
    let flags: Vec<String> = flags.split_whitespace().map(str::to_string).collect();
    let compat = perdition::from_args_in(config_dir, program, &flags)
        .map_err(|source| DebianDefaultsError::Instance {
            path: path.to_path_buf(),
            name,
            program,
            flags: shown_flags(&flags),
            source: Box::new(source),
        })?
        .ok_or_else(|| DebianDefaultsError::AsksForHelp {
            path: path.to_path_buf(),
            name,
        })?;
    if compat.inetd {
        return Err(DebianDefaultsError::Inetd {
            path: path.to_path_buf(),
            name,
        });
    }
    Ok(Instance {
        name,
        program,
        compat,
    })
}

/// One process for several instances: their listeners side by side. What is one per process
/// (the log, the timeouts, the user) must be the same in all; the connection limits add up.
fn merge(first: Instance, others: Vec<Instance>) -> Result<Compat, DebianDefaultsError> {
    let single = others.is_empty();
    let mut warnings = Warnings::default();
    warnings.note(first.compat.warnings, first.name);
    let mut config = first.compat.config;
    let mut chosen_pid_files = Vec::new();
    chosen_pid_files.extend(own_pid_file(first.program, &config.process.pid_file));
    for other in others {
        let (name, compat) = (other.name, other.compat);
        same_per_process(&config, first.name, &compat.config, name)?;
        chosen_pid_files.extend(own_pid_file(other.program, &compat.config.process.pid_file));
        // Each instance had its own limit; 0 (none) anywhere means none for all.
        let (limit, more) = (
            config.limits.connection_limit,
            compat.config.limits.connection_limit,
        );
        config.limits.connection_limit = if limit == 0 || more == 0 {
            0
        } else {
            limit + more
        };
        config.listeners.extend(compat.config.listeners);
        warnings.note(compat.warnings, name);
    }
    if !single {
        // One process, one name in the log (fail2ban's filter takes any perdition.*), and
        // the pid file a process started as plain `perdition` writes, unless they chose one.
        config.log.ident = "perdition".into();
        config.process.pid_file = shared_pid_file(chosen_pid_files)?;
    }
    Ok(Compat {
        config,
        warnings: warnings.lines(),
        inetd: false,
    })
}

/// What one process has once, the same in `other` (of the instance `name`) as in `config`
/// (of `first`).
fn same_per_process(
    config: &super::Config,
    first: &'static str,
    other: &super::Config,
    name: &'static str,
) -> Result<(), DebianDefaultsError> {
    let differs = |what| DebianDefaultsError::Differ {
        first,
        other: name,
        what,
    };
    let log_without_ident = |log: &super::LogConfig| super::LogConfig {
        ident: String::new(),
        ..log.clone()
    };
    if log_without_ident(&other.log) != log_without_ident(&config.log) {
        return Err(differs(
            "their logging (log_facility, debug, quiet, log_passwd, connect_relog)",
        ));
    }
    let (a, b) = (&config.limits, &other.limits);
    if (a.login_timeout, a.idle_timeout) != (b.login_timeout, b.idle_timeout) {
        return Err(differs("their timeouts (timeout, authenticate_timeout)"));
    }
    let (a, b) = (&config.process, &other.process);
    if (&a.user, &a.group) != (&b.user, &b.group) {
        return Err(differs("the user or group they run as"));
    }
    Ok(())
}

/// The pid file the instance chose itself, if it did: its default names the instance.
fn own_pid_file(program: &str, pid_file: &Option<String>) -> Option<Option<String>> {
    let default = perdition::system_path(&format!("/var/run/{program}/{program}.pid"));
    (pid_file.as_deref() != default.to_str()).then(|| pid_file.clone())
}

/// The one pid file of the process: plain `perdition`'s, unless the instances chose one.
fn shared_pid_file(mut chosen: Vec<Option<String>>) -> Result<Option<String>, DebianDefaultsError> {
    chosen.dedup();
    match chosen.as_slice() {
        [] => Ok(Some(
            perdition::system_path("/var/run/perdition/perdition.pid")
                .display()
                .to_string(),
        )),
        [one] => Ok(one.clone()),
        _ => Err(DebianDefaultsError::PidFiles),
    }
}

/// The instances' warnings, each once, with the instances that gave it.
#[derive(Default)]
struct Warnings {
    lines: Vec<(String, Vec<&'static str>)>,
    /// The instances noted.
    instances: usize,
}

impl Warnings {
    fn note(&mut self, warnings: Vec<String>, name: &'static str) {
        self.instances += 1;
        for warning in warnings {
            match self.lines.iter_mut().find(|(w, _)| *w == warning) {
                Some((_, names)) => names.push(name),
                None => self.lines.push((warning, vec![name])),
            }
        }
    }

    /// A warning all instances gave as it is; the others after the names of theirs.
    fn lines(self) -> Vec<String> {
        self.lines
            .into_iter()
            .map(|(w, by)| match by.len() == self.instances {
                true => w,
                false => format!("{}: {w}", by.join(", ")),
            })
            .collect()
    }
}

/// The variables a shell sourcing `text` would set, for the shell that Debian's file is
/// written in: `NAME=value` lines (`export` allowed), values unquoted, `'...'` or `"..."`,
/// `$NAME` and `${NAME}` of earlier lines expanded, `#` comments. Anything that would run a
/// command is refused by line, rather than guessed at.
fn shell_variables(text: &str) -> Result<HashMap<String, String>, ShellError> {
    let mut variables: HashMap<String, String> = HashMap::new();
    let mut shell = Shell {
        chars: text.chars().peekable(),
        line: 1,
    };
    while let Some(name) = shell.next_assignment()? {
        let value = shell.value(&variables)?;
        shell.end_of_assignment(&name)?;
        variables.insert(name, value);
    }
    Ok(variables)
}

/// The shell's reading of the text, where it is.
struct Shell<'a> {
    chars: Peekable<Chars<'a>>,
    line: usize,
}

impl Shell<'_> {
    /// Take characters while `take` says so.
    fn skip_while(&mut self, take: impl Fn(char) -> bool) {
        while self.chars.peek().is_some_and(|c| take(*c)) {
            self.chars.next();
        }
    }

    /// A name: letters, digits and `_`.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(&c) = self.chars.peek() {
            if !(c.is_ascii_alphanumeric() || c == '_') {
                break;
            }
            name.push(c);
            self.chars.next();
        }
        name
    }

    /// Past blank lines and comments, the name of the next `NAME=` (its `=` taken); none at
    /// the end.
    fn next_assignment(&mut self) -> Result<Option<String>, ShellError> {
        loop {
            // The start of a line: blanks, then a comment, an assignment or nothing.
            self.skip_while(|c| c == ' ' || c == '\t' || c == ';');
            let Some(&c) = self.chars.peek() else {
                return Ok(None);
            };
            if c == '\n' {
                self.chars.next();
                self.line += 1;
                continue;
            }
            if c == '#' {
                self.skip_while(|c| c != '\n');
                continue;
            }
            let word = self.name();
            if word == "export" && self.chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                continue;
            }
            let assignment = !word.is_empty()
                && !word.starts_with(|c: char| c.is_ascii_digit())
                && self.chars.peek() == Some(&'=');
            if !assignment {
                return Err(ShellError::NotAnAssignment(self.line));
            }
            self.chars.next();
            return Ok(Some(word));
        }
    }

    /// After the value: blanks, then a comment or the end of the line.
    fn end_of_assignment(&mut self, name: &str) -> Result<(), ShellError> {
        self.skip_while(|c| c == ' ' || c == '\t');
        match self.chars.peek() {
            None | Some('\n') | Some('#') | Some(';') => Ok(()),
            Some(_) => Err(ShellError::CommandAfter {
                line: self.line,
                name: name.to_string(),
            }),
        }
    }

    /// One shell word: the value of an assignment.
    fn value(&mut self, variables: &HashMap<String, String>) -> Result<String, ShellError> {
        let mut value = String::new();
        let mut quote = None;
        while let Some(&c) = self.chars.peek() {
            match (quote, c) {
                (None, ' ' | '\t' | '\n' | ';') => break,
                (None, '#') if value.is_empty() => break,
                (None, '\'') | (None, '"') => {
                    quote = Some(c);
                    self.chars.next();
                }
                (Some(q), c) if c == q => {
                    quote = None;
                    self.chars.next();
                }
                (Some('\''), c) => self.literal(c, &mut value),
                (_, '\\') => self.escaped(quote.is_some(), &mut value),
                (_, '`') => return Err(ShellError::CommandSubstitution(self.line)),
                (_, '$') => value.push_str(&self.expansion(variables)?),
                (_, c) => self.literal(c, &mut value),
            }
        }
        if quote.is_some() {
            return Err(ShellError::UnclosedQuote(self.line));
        }
        Ok(value)
    }

    /// `c`, taken as it is.
    fn literal(&mut self, c: char, value: &mut String) {
        if c == '\n' {
            self.line += 1;
        }
        value.push(c);
        self.chars.next();
    }

    /// After `\`, outside single quotes.
    fn escaped(&mut self, in_double_quotes: bool, value: &mut String) {
        self.chars.next();
        match self.chars.next() {
            // A continued line.
            Some('\n') => self.line += 1,
            // In double quotes, `\` escapes only these; before others it stays.
            Some(next) if !in_double_quotes || "$`\"\\".contains(next) => value.push(next),
            Some(next) => {
                value.push('\\');
                value.push(next);
            }
            None => {}
        }
    }

    /// `$NAME` or `${NAME}`: the value of an earlier line's variable (empty when unset); a
    /// `$` before anything else is itself.
    fn expansion(&mut self, variables: &HashMap<String, String>) -> Result<String, ShellError> {
        self.chars.next();
        let braced = self.chars.peek() == Some(&'{');
        if braced {
            self.chars.next();
        }
        if self.chars.peek() == Some(&'(') {
            return Err(ShellError::CommandSubstitution(self.line));
        }
        let name = self.name();
        if braced && self.chars.next() != Some('}') {
            return Err(ShellError::Braces(self.line));
        }
        Ok(match name.is_empty() {
            true => "$".to_string(),
            false => variables.get(&name).cloned().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instances_flags_are_shown_without_the_database_password() {
        let flags: Vec<String> = ["-M", "/x.so", "-m", "h:3306:db:t:u:secret", "-P", "IMAP4"]
            .map(String::from)
            .into();
        assert_eq!(shown_flags(&flags), "-M /x.so -m *** -P IMAP4");
        let flags: Vec<String> = ["--map_library_opt=h:1:d:t:u:secret", "-mh:1:d:t:u:secret"]
            .map(String::from)
            .into();
        assert_eq!(shown_flags(&flags), "--map_library_opt=*** -m***");
    }

    #[test]
    fn debians_shipped_file_reads_as_its_init_script_reads_it() {
        let shipped = "\
# Run perdition
RUN_PERDITION=yes
# Command line parameters to pass to perdition when run in any mode.
#FLAGS=
POP3=yes
POP3_FLAGS=
IMAP4S=yes
IMAP4S_FLAGS=\"--ssl_mode ssl_listen -p 143\"
MANAGESIEVE=no
";
        let v = shell_variables(shipped).unwrap();
        assert_eq!(v["RUN_PERDITION"], "yes");
        assert_eq!(v["POP3_FLAGS"], "");
        assert_eq!(v["IMAP4S_FLAGS"], "--ssl_mode ssl_listen -p 143");
        assert_eq!(v["MANAGESIEVE"], "no");
        assert!(!v.contains_key("FLAGS"));
    }

    #[test]
    fn quoting_expansion_and_comments_as_a_shell_has_them() {
        let v = shell_variables(
            "export FLAGS='-n  -F /var/log/p.log' # comment\n\
             IMAP4_FLAGS=\"$FLAGS --ok_line \\\"hi\\\"\"\n\
             POP3_FLAGS=${FLAGS}\\ -d\n\
             MULTI=\"a\nb\"; X=1\n",
        )
        .unwrap();
        assert_eq!(v["FLAGS"], "-n  -F /var/log/p.log");
        assert_eq!(v["IMAP4_FLAGS"], "-n  -F /var/log/p.log --ok_line \"hi\"");
        assert_eq!(v["POP3_FLAGS"], "-n  -F /var/log/p.log -d");
        assert_eq!(v["MULTI"], "a\nb");
        assert_eq!(v["X"], "1");
    }

    #[test]
    fn lines_that_would_run_commands_are_refused_by_number() {
        for (text, line) in [
            ("A=1\nif [ -x /bin/true ]; then B=2; fi\n", 2),
            ("A=$(hostname)\n", 1),
            ("A=`hostname`\n", 1),
            ("A=1 /bin/true\n", 1),
            ("\n\nA=\"open\n", 4),
        ] {
            let e = shell_variables(text).unwrap_err().to_string();
            assert!(e.contains(&format!("line {line}")), "{text:?}: {e}");
        }
    }
}
