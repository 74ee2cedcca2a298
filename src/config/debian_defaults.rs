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
use std::path::Path;

use super::perdition::{self, Compat};

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

/// Every instance `path` enables, as one configuration.
pub fn read(path: &Path) -> Result<Compat, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let variables = shell_variables(&text).map_err(|e| format!("{shown}: {e}"))?;
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
        let enabled = match value(name) {
            "" => "yes",
            other => other,
        };
        if enabled != "yes" {
            continue;
        }
        // `$FLAGS $POP3_FLAGS` unquoted: split at blanks, quotes inside taken literally.
        let flags_of = format!("{name}_FLAGS");
        let flags: Vec<String> = format!("{} {}", value("FLAGS"), value(&flags_of))
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let compat = perdition::from_args(program, &flags)
            .map_err(|e| format!("{shown}: {name} ({program} {}): {e}", flags.join(" ")))?
            .ok_or_else(|| format!("{shown}: {name}: its flags ask for help"))?;
        if compat.inetd {
            return Err(format!(
                "{shown}: {name}: inetd_mode makes no sense for a daemon the init script starts"
            ));
        }
        instances.push((name, program, compat));
    }
    if instances.is_empty() {
        return Err(format!(
            "{shown} enables no protocol (POP3, POP3S, IMAP4, IMAP4S, MANAGESIEVE)"
        ));
    }
    let mut merged = merge(instances)?;
    notes.append(&mut merged.warnings);
    merged.warnings = notes;
    Ok(merged)
}

/// One process for several instances: their listeners side by side. What is one per process
/// (the log, the timeouts, the user) must be the same in all; the connection limits add up.
fn merge(instances: Vec<(&str, &str, Compat)>) -> Result<Compat, String> {
    let names: Vec<&str> = instances.iter().map(|(name, _, _)| *name).collect();
    let single = instances.len() == 1;
    let mut iter = instances.into_iter();
    let (first_name, first_program, first) = iter.next().ok_or("no instance")?;
    let mut config = first.config;
    let mut warnings: Vec<(String, Vec<&str>)> = Vec::new();
    let mut note = |warning: String, name| match warnings.iter_mut().find(|(w, _)| *w == warning) {
        Some((_, names)) => names.push(name),
        None => warnings.push((warning, vec![name])),
    };
    for w in first.warnings {
        note(w, first_name);
    }
    // The pid file the instance chose itself, if it did: its default names the instance.
    let own_pid_file = |program: &str, pid_file: &Option<String>| -> Option<Option<String>> {
        let default = perdition::system_path(&format!("/var/run/{program}/{program}.pid"));
        (pid_file.as_deref() != default.to_str()).then(|| pid_file.clone())
    };
    let mut chosen_pid_files = Vec::new();
    chosen_pid_files.extend(own_pid_file(first_program, &config.process.pid_file));
    for (name, program, compat) in iter {
        let other = compat.config;
        let differs = |what: &str| {
            format!(
                "{first_name} and {name} differ in {what}, which one process has once: give \
                 them the same (in FLAGS, or in both configuration files)"
            )
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
        chosen_pid_files.extend(own_pid_file(program, &b.pid_file));
        // Each instance had its own limit; 0 (none) anywhere means none for all.
        let (limit, more) = (
            config.limits.connection_limit,
            other.limits.connection_limit,
        );
        config.limits.connection_limit = if limit == 0 || more == 0 {
            0
        } else {
            limit + more
        };
        config.listeners.extend(other.listeners);
        for w in compat.warnings {
            note(w, name);
        }
    }
    if !single {
        // One process, one name in the log (fail2ban's filter takes any perdition.*), and
        // the pid file a process started as plain `perdition` writes, unless they chose one.
        config.log.ident = "perdition".into();
        chosen_pid_files.dedup();
        config.process.pid_file = match chosen_pid_files.as_slice() {
            [] => Some(
                perdition::system_path("/var/run/perdition/perdition.pid")
                    .display()
                    .to_string(),
            ),
            [one] => one.clone(),
            _ => return Err("the instances name different pid files; one process has one".into()),
        };
    }
    let warnings = warnings
        .into_iter()
        .map(|(w, by)| match by.len() == names.len() {
            true => w,
            false => format!("{}: {w}", by.join(", ")),
        })
        .collect();
    Ok(Compat {
        config,
        warnings,
        inetd: false,
    })
}

/// The variables a shell sourcing `text` would set, for the shell that Debian's file is
/// written in: `NAME=value` lines (`export` allowed), values unquoted, `'...'` or `"..."`,
/// `$NAME` and `${NAME}` of earlier lines expanded, `#` comments. Anything that would run a
/// command is refused by line, rather than guessed at.
fn shell_variables(text: &str) -> Result<HashMap<String, String>, String> {
    let mut variables: HashMap<String, String> = HashMap::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    loop {
        // The start of a line: blanks, then a comment, an assignment or nothing.
        while chars
            .peek()
            .is_some_and(|c| *c == ' ' || *c == '\t' || *c == ';')
        {
            chars.next();
        }
        let Some(&c) = chars.peek() else { break };
        if c == '\n' {
            chars.next();
            line += 1;
            continue;
        }
        if c == '#' {
            while chars.peek().is_some_and(|c| *c != '\n') {
                chars.next();
            }
            continue;
        }
        let mut word = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                word.push(c);
                chars.next();
            } else {
                break;
            }
        }
        if word == "export" && chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            continue;
        }
        let assignment = !word.is_empty()
            && !word.starts_with(|c: char| c.is_ascii_digit())
            && chars.peek() == Some(&'=');
        if !assignment {
            return Err(format!(
                "line {line}: only NAME=value lines are understood, not a command"
            ));
        }
        chars.next();
        let value = shell_value(&mut chars, &mut line, &variables)?;
        // After the value: blanks, then a comment or the end of the line.
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        match chars.peek() {
            None | Some('\n') | Some('#') | Some(';') => {}
            Some(_) => {
                return Err(format!(
                    "line {line}: {word}=... is followed by a command; quote a value with blanks"
                ))
            }
        }
        variables.insert(word, value);
    }
    Ok(variables)
}

/// One shell word: the value of an assignment.
fn shell_value(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    line: &mut usize,
    variables: &HashMap<String, String>,
) -> Result<String, String> {
    let mut value = String::new();
    let mut quote = None;
    while let Some(&c) = chars.peek() {
        match (quote, c) {
            (None, ' ' | '\t' | '\n' | ';') => break,
            (None, '#') if value.is_empty() => break,
            (None, '\'') | (None, '"') => {
                quote = Some(c);
                chars.next();
            }
            (Some(q), c) if c == q => {
                quote = None;
                chars.next();
            }
            (Some('\''), c) => {
                if c == '\n' {
                    *line += 1;
                }
                value.push(c);
                chars.next();
            }
            (_, '\\') => {
                chars.next();
                match chars.next() {
                    // A continued line.
                    Some('\n') => *line += 1,
                    // In double quotes, `\` escapes only these; before others it stays.
                    Some(next) if quote.is_none() || "$`\"\\".contains(next) => value.push(next),
                    Some(next) => {
                        value.push('\\');
                        value.push(next);
                    }
                    None => {}
                }
            }
            (_, '`') => {
                return Err(format!(
                    "line {line}: command substitution is not understood"
                ))
            }
            (_, '$') => {
                chars.next();
                let braced = chars.peek() == Some(&'{');
                if braced {
                    chars.next();
                }
                if chars.peek() == Some(&'(') {
                    return Err(format!(
                        "line {line}: command substitution is not understood"
                    ));
                }
                let mut name = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        name.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if braced && chars.next() != Some('}') {
                    return Err(format!(
                        "line {line}: only ${{NAME}} is understood in braces"
                    ));
                }
                if name.is_empty() {
                    value.push('$');
                } else {
                    value.push_str(variables.get(&name).map_or("", String::as_str));
                }
            }
            (_, c) => {
                if c == '\n' {
                    *line += 1;
                }
                value.push(c);
                chars.next();
            }
        }
    }
    if quote.is_some() {
        return Err(format!("line {line}: a quote is not closed"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let e = shell_variables(text).unwrap_err();
            assert!(e.contains(&format!("line {line}")), "{text:?}: {e}");
        }
    }
}
