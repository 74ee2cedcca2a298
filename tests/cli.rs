//! The native command line: the man page names what clap knows and nothing else, every
//! command answers `--help`, completions are printed for the usual shells, and Perdition's
//! flags still reach Perdition's reader untouched.

use std::collections::BTreeSet;
use std::process::{Command, Output, Stdio};

use clap::CommandFactory;
use portcullis::cli::args::Cli;

const MAN_PAGE: &str = include_str!("../packaging/portcullis.8");

fn portcullis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run portcullis")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The man page's text with roff's escapes taken out: `\-` is `-`, font changes vanish.
fn man_text() -> String {
    let mut text = MAN_PAGE.replace("\\-", "-");
    for font in ["\\fB", "\\fR", "\\fI", "\\fP"] {
        text = text.replace(font, "");
    }
    text
}

/// The lines of the man page's section `name`, up to the next one.
fn section(text: &str, name: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| *l != format!(".SH {name}"))
        .skip(1)
        .take_while(|l| !l.starts_with(".SH "))
        .map(str::to_string)
        .collect()
}

/// clap's commands and every long option, its own `--help` and `--version` included.
fn known() -> (BTreeSet<String>, BTreeSet<String>) {
    let mut cli = Cli::command();
    cli.build();
    let mut commands = BTreeSet::new();
    let mut options = BTreeSet::new();
    let mut add_options = |command: &clap::Command| {
        for arg in command.get_arguments() {
            if let Some(long) = arg.get_long() {
                options.insert(format!("--{long}"));
            }
        }
    };
    add_options(&cli);
    for command in cli.get_subcommands().filter(|c| c.get_name() != "help") {
        commands.insert(command.get_name().to_string());
        add_options(command);
    }
    (commands, options)
}

/// The commands the man page names: in its synopsis (`portcullis WORD`) and as the tags of
/// its COMMANDS section (`sessions, kick, reload, upgrade` names four).
fn commands_in_man_page() -> (BTreeSet<String>, BTreeSet<String>) {
    let text = man_text();
    let synopsis = section(&text, "SYNOPSIS")
        .iter()
        .filter_map(|l| l.split_once("portcullis ")?.1.split_whitespace().next())
        .filter(|w| w.starts_with(|c: char| c.is_ascii_lowercase()))
        .map(str::to_string)
        .collect();
    let commands = section(&text, "COMMANDS");
    let tagged = commands
        .windows(2)
        .filter(|pair| pair[0] == ".TP")
        .flat_map(|pair| {
            let tag = pair[1].trim_start_matches(".B ").to_string();
            tag.split(", ")
                .filter_map(|part| part.split_whitespace().next().map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect();
    (synopsis, tagged)
}

#[test]
fn the_man_page_names_every_command_and_option_clap_knows() {
    let (commands, options) = known();
    let (synopsis, described) = commands_in_man_page();
    for command in &commands {
        assert!(synopsis.contains(command), "{command} not in the SYNOPSIS");
        assert!(described.contains(command), "{command} not in COMMANDS");
    }
    let text = man_text();
    for option in &options {
        let named = text.match_indices(option.as_str()).any(|(i, _)| {
            !text[i + option.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
        });
        assert!(named, "{option} is not in the man page");
    }
}

#[test]
fn the_man_page_names_no_command_clap_does_not_know() {
    let (commands, _) = known();
    let (synopsis, described) = commands_in_man_page();
    for named in synopsis.iter().chain(&described) {
        assert!(
            commands.contains(named),
            "the man page names {named:?}, which is no command"
        );
    }
}

#[test]
fn every_command_answers_help() {
    let (commands, options) = known();
    let top = portcullis(&["--help"]);
    assert!(top.status.success(), "{}", stderr(&top));
    for command in commands.iter().filter(|c| *c != "perdition") {
        assert!(stdout(&top).contains(command.as_str()), "{command}");
        let out = portcullis(&[command, "--help"]);
        assert!(out.status.success(), "{command}: {}", stderr(&out));
        assert!(
            stdout(&out).contains("Usage: portcullis"),
            "{}",
            stdout(&out)
        );
    }
    let help = |command: &str| stdout(&portcullis(&[command, "--help"]));
    let (check, kick) = (help("check"), help("kick"));
    for option in ["--config", "--probe", "--offline"] {
        assert!(check.contains(option), "{check}");
    }
    for option in ["--admin", "--token", "--config", "--user", "--backend"] {
        assert!(kick.contains(option), "{kick}");
        assert!(options.contains(option));
    }
}

#[test]
fn perditions_help_is_perditions_own() {
    for args in [&["perdition", "--help"][..], &["perdition", "-h"]] {
        let out = portcullis(args);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stdout(&out).starts_with("portcullis perdition: run with Perdition 2.2's flags"),
            "{}",
            stdout(&out)
        );
    }
}

#[test]
fn completions_are_printed_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let out = portcullis(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        for word in ["portcullis", "check", "probe", "kick", "backend"] {
            assert!(script.contains(word), "{shell}: {word} missing:\n{script}");
        }
    }
    let out = portcullis(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_version_and_the_exit_codes_stay() {
    for flag in ["--version", "-V"] {
        let out = portcullis(&[flag]);
        assert!(out.status.success());
        assert_eq!(
            stdout(&out),
            format!("portcullis {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
    // Usage errors: 2.
    for args in [
        &[][..],
        &["frobnicate"],
        &["run"],
        &["check", "--config"],
        &["kick", "--admin", "127.0.0.1:1"],
        &["sessions", "--user", "alice"],
        &["sessions"],
        &["sessions", "--admin", "nowhere"],
        &["perdition", "--debian-defaults", "a", "b"],
    ] {
        let out = portcullis(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let out = portcullis(&["check", "--config", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("portcullis: cannot read "),
        "{}",
        stderr(&out)
    );
    // A file that is no configuration: a configuration error, 1.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "this is not toml [").unwrap();
    for command in ["run", "check"] {
        let out = portcullis(&[command, "--config", bad.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).starts_with("portcullis: configuration error: "),
            "{}",
            stderr(&out)
        );
    }
    let out = portcullis(&["sessions"]);
    assert_eq!(
        stderr(&out),
        "portcullis: sessions needs --admin ADDR or --config FILE with [admin] listen\n"
    );
}

/// `portcullis check` prints the effective configuration with the store's password masked:
/// a `[fleet] store` (and a `[guard] store`, its older name) of
/// `redis://:s3cret@127.0.0.1:6379` is shown as `redis://:***@127.0.0.1:6379`, and `s3cret`
/// is nowhere in what the admin sees (standard output or error).
#[test]
fn check_masks_the_stores_password() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("portcullis.toml");
    let listener = "[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:1143\"]\n\
                    [listener.backend]\nhost = \"127.0.0.1\"\nport = 143\n";
    for section in ["fleet", "guard"] {
        let toml = format!("[{section}]\nstore = \"redis://:s3cret@127.0.0.1:6379\"\n\n{listener}");
        std::fs::write(&file, &toml).unwrap();
        let out = portcullis(&["check", "--config", file.to_str().unwrap()]);
        let said = format!("{}{}", stdout(&out), stderr(&out));
        assert!(out.status.success(), "[{section}] store: {said}");
        assert!(!said.contains("s3cret"), "[{section}] store: {said}");
        let shown = stdout(&out);
        let store = shown
            .lines()
            .skip_while(|l| *l != format!("[{section}]"))
            .find(|l| l.starts_with("store ="));
        assert_eq!(
            store,
            Some("store = \"redis://:***@127.0.0.1:6379\""),
            "[{section}] store: {shown}"
        );
    }
}
