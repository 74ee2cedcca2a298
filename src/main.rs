//! The `portcullis` command: `run`, `check`, and `perdition` (Perdition's own flags).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use portcullis::config::{debian_defaults, perdition, Config};
use portcullis::log::Logger;
use portcullis::server;
use portcullis::server::services::Services;

const USAGE: &str = "\
Usage:
  portcullis run --config FILE        serve with the native TOML configuration
  portcullis check --config FILE [--probe | --offline]
                                      validate FILE and print the effective configuration;
                                      --probe: reach every back end and map server instead,
                                      and report on each (non-zero exit when one is broken);
                                      --offline: reach nothing, print only problems
  portcullis perdition [FLAGS]        behave like a Perdition instance with the same flags
                                      (e.g. -f /etc/perdition/perdition.imap4s.conf -P IMAP4S);
                                      also when started as perdition.imaps etc. (a link)
  portcullis perdition --debian-defaults [FILE]
                                      serve every protocol /etc/default/perdition (or FILE)
                                      enables, with its flags, from one process
  portcullis sessions (--config FILE | --admin ADDR) [--token T]
                                      list the live sessions (from the admin endpoint)
  portcullis kick (--config FILE | --admin ADDR) [--token T] (--user U | --backend HOST:PORT)
                                      end a user's or a back end's sessions
  portcullis reload (--config FILE | --admin ADDR) [--token T]
                                      read the configuration again (as SIGHUP does) and say
                                      what changed, or why nothing did
  portcullis upgrade (--config FILE | --admin ADDR) [--token T]
                                      start the binary on disk with the listening sockets and
                                      let this process drain (as SIGUSR2 does)
  portcullis --version

See the README for the configuration reference.";

/// How long the process waits at exit for a slow log destination to take the last lines.
const LOG_FLUSH_AT_EXIT: Duration = Duration::from_secs(5);

enum AdminAsk {
    Sessions,
    Reload,
    Upgrade,
    Kick(portcullis::server::registry::Kick),
}

/// How `run` serves its listeners.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Serving {
    /// Bound sockets, until stopped.
    Listeners,
    /// Perdition's inetd mode: the one connection on standard input.
    Inetd,
}

enum Command {
    Run(Config, Vec<String>, server::listener::ConfigSource, Serving),
    /// The configuration, its warnings, `--probe`, `--offline`.
    Check(Config, Vec<String>, bool, bool),
    /// Ask the admin endpoint of a running instance.
    Admin(portcullis::admin::client::Endpoint, AdminAsk),
    /// The configuration file could not be read as a configuration.
    Invalid(String),
}

fn main() -> ExitCode {
    portcullis::tls::install_default_provider();
    let mut argv = std::env::args();
    let program = argv.next().unwrap_or_default();
    let args: Vec<String> = argv.collect();
    // Started as perdition.imaps (a link, as Debian's init script starts it): Perdition mode,
    // its defaults from that name.
    let parsed = match perdition::invocation_name(&program) {
        Some(name) => parse_perdition(&name, &args),
        None => parse(&args),
    };
    let command = match parsed {
        Ok(Some(c)) => c,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis: {e}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Invalid(problem) => {
            eprintln!("portcullis: configuration error: {problem}");
            ExitCode::FAILURE
        }
        Command::Check(config, warnings, probe, offline) => {
            for w in warnings.iter().chain(&config.admin.warnings()) {
                eprintln!("warning: {w}");
            }
            match server::builder::build(&config) {
                Ok(built) => {
                    for w in &built.warnings {
                        eprintln!("warning: {w}");
                    }
                    if probe {
                        return probe_backends(&built.listeners);
                    }
                    if offline {
                        eprintln!("configuration is valid");
                        return ExitCode::SUCCESS;
                    }
                    let unreachable = probe_maps(&built.listeners);
                    if !unreachable.is_empty() {
                        for p in unreachable {
                            eprintln!("error: {p}");
                        }
                        return ExitCode::FAILURE;
                    }
                    let mut shown = Config {
                        limits: config.limits.effective(),
                        ..config
                    };
                    // Passwords in map URLs and header values, and the admin token, are not
                    // shown.
                    if shown.admin.token.is_some() {
                        shown.admin.token = Some("***".into());
                    }
                    shown.guard.store = shown
                        .guard
                        .store
                        .as_deref()
                        .map(portcullis::map::masked_url);
                    for map in shown.listeners.iter_mut().filter_map(|l| l.map.as_mut()) {
                        map.url = map.url.as_deref().map(portcullis::map::masked_url);
                        map.headers.values_mut().for_each(|v| *v = "***".into());
                    }
                    print!("{}", shown.to_toml());
                    eprintln!("configuration is valid");
                    ExitCode::SUCCESS
                }
                Err(problems) => {
                    for p in problems {
                        eprintln!("error: {p}");
                    }
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run(config, warnings, source, serving) => run(config, warnings, source, serving),
        Command::Admin(endpoint, ask) => ask_admin(&endpoint, ask),
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

fn ask_admin(endpoint: &portcullis::admin::client::Endpoint, ask: AdminAsk) -> ExitCode {
    let Some(runtime) = one_thread() else {
        eprintln!("portcullis: cannot start a runtime");
        return ExitCode::FAILURE;
    };
    let answer = runtime.block_on(async {
        match ask {
            AdminAsk::Sessions => endpoint.sessions().await,
            AdminAsk::Reload => endpoint.reload().await,
            AdminAsk::Upgrade => endpoint.upgrade().await,
            AdminAsk::Kick(kick) => endpoint
                .kick(&kick)
                .await
                .map(|n| format!("{n} sessions ended\n")),
        }
    });
    // Whatever the endpoint (or whoever answers on its port) says reaches the terminal one
    // line at a time, free of control characters.
    let shown = portcullis::log::one_line;
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

/// `sessions` and `kick`: where the admin endpoint is (`--admin`, or a configuration's
/// `[admin]`), its token, and for a kick whom.
fn parse_admin(command: &str, args: &[String]) -> Result<Command, String> {
    let mut address = None;
    let mut token = None;
    let mut config_file = None;
    let mut kick = None;
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let mut value = || {
            rest.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--admin" => address = Some(value()?),
            "--token" => token = Some(value()?),
            "--config" | "-c" => config_file = Some(value()?),
            "--user" if command == "kick" => {
                kick = Some(portcullis::server::registry::Kick::User(value()?))
            }
            "--backend" if command == "kick" => {
                kick = Some(portcullis::server::registry::Kick::Backend(value()?))
            }
            other => return Err(format!("unknown flag {other:?} for {command}\n{USAGE}")),
        }
    }
    // Kept out of `ps`: the token may come from the environment instead.
    token = token.or_else(|| std::env::var("PORTCULLIS_ADMIN_TOKEN").ok());
    if let Some(path) = config_file {
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
        let config = Config::from_toml(&text).map_err(|e| format!("{path}: {e}"))?;
        address = address.or(config.admin.listen);
        token = token.or(config.admin.token);
    }
    let address = address.ok_or_else(|| {
        format!("{command} needs --admin ADDR or --config FILE with [admin] listen")
    })?;
    let address = address
        .parse()
        .map_err(|_| format!("{address:?} is not an address:port"))?;
    let endpoint = portcullis::admin::client::Endpoint { address, token };
    let ask = match command {
        "reload" => AdminAsk::Reload,
        "upgrade" => AdminAsk::Upgrade,
        "kick" => AdminAsk::Kick(
            kick.ok_or_else(|| format!("kick needs --user U or --backend HOST:PORT\n{USAGE}"))?,
        ),
        _ => AdminAsk::Sessions,
    };
    Ok(Command::Admin(endpoint, ask))
}

fn parse(args: &[String]) -> Result<Option<Command>, String> {
    let Some(first) = args.first() else {
        return Err(format!("no command given\n{USAGE}"));
    };
    match first.as_str() {
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(None)
        }
        "-V" | "--version" => {
            println!("portcullis {}", env!("CARGO_PKG_VERSION"));
            Ok(None)
        }
        "run" | "check" => {
            // `check --probe` also reaches every back end; `check --offline` reaches nothing
            // and prints nothing but problems (the unit's ExecStartPre: a map server down
            // must not keep the proxy from starting, nor secrets reach the journal).
            let probe = first == "check" && args[1..].iter().any(|a| a == "--probe");
            let offline = first == "check" && args[1..].iter().any(|a| a == "--offline");
            let rest: Vec<String> = args[1..]
                .iter()
                .filter(|a| !(first == "check" && (*a == "--probe" || *a == "--offline")))
                .cloned()
                .collect();
            let path = match &rest[..] {
                [flag, path] if flag == "--config" || flag == "-c" => PathBuf::from(path),
                [flag] if flag.starts_with("--config=") => {
                    PathBuf::from(&flag["--config=".len()..])
                }
                _ => return Err(format!("{first} needs --config FILE\n{USAGE}")),
            };
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let config = match Config::from_toml(&text) {
                Ok(c) => c,
                // A bad file is a configuration error (exit 1), not a usage error (exit 2).
                Err(e) => return Ok(Some(Command::Invalid(format!("{}: {e}", path.display())))),
            };
            Ok(Some(if first == "run" {
                // A reload reads the same file again.
                let source: server::listener::ConfigSource = Box::new(move || {
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                    let config =
                        Config::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
                    Ok((config, vec![]))
                });
                Command::Run(config, vec![], source, Serving::Listeners)
            } else {
                Command::Check(config, vec![], probe, offline)
            }))
        }
        "sessions" | "kick" | "reload" | "upgrade" => parse_admin(first, &args[1..]).map(Some),
        "perdition" => parse_perdition("perdition", &args[1..]),
        other => Err(format!("unknown command {other:?}\n{USAGE}")),
    }
}

/// `portcullis perdition FLAGS`, or a program started as `invoked_as` (perdition.imaps ...).
fn parse_perdition(invoked_as: &str, args: &[String]) -> Result<Option<Command>, String> {
    if args.first().is_some_and(|a| a == "--debian-defaults") {
        let file = match &args[1..] {
            [] => PathBuf::from(debian_defaults::DEFAULT_FILE),
            [file] => PathBuf::from(file),
            _ => return Err(format!("--debian-defaults takes one file at most\n{USAGE}")),
        };
        let compat = debian_defaults::read(&file)?;
        // A reload reads the defaults file, and the configuration files, again.
        let source: server::listener::ConfigSource = Box::new(move || {
            let compat = debian_defaults::read(&file)?;
            Ok((compat.config, compat.warnings))
        });
        return Ok(Some(Command::Run(
            compat.config,
            compat.warnings,
            source,
            Serving::Listeners,
        )));
    }
    let Some(compat) = perdition::from_args(invoked_as, args)? else {
        println!("{}", perdition::HELP);
        return Ok(None);
    };
    // A reload reads the flags' configuration file again, as Perdition does.
    let (name, flags) = (invoked_as.to_string(), args.to_vec());
    let source: server::listener::ConfigSource =
        Box::new(move || match perdition::from_args(&name, &flags)? {
            Some(compat) => Ok((compat.config, compat.warnings)),
            None => Err("the flags ask for help, not a configuration".into()),
        });
    let serving = match compat.inetd {
        true => Serving::Inetd,
        false => Serving::Listeners,
    };
    Ok(Some(Command::Run(
        compat.config,
        compat.warnings,
        source,
        serving,
    )))
}

fn run(
    config: Config,
    warnings: Vec<String>,
    source: server::listener::ConfigSource,
    serving: Serving,
) -> ExitCode {
    // Before any thread exists: taking them clears the environment variables that name them.
    let mut inherited = match portcullis::service_manager::inherited_sockets() {
        Ok(sockets) => sockets,
        Err(e) => {
            eprintln!("portcullis: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Certificates, keys and maps are read here, once.
    let built = match server::builder::build(&config) {
        Ok(built) => built,
        Err(problems) => {
            for p in problems {
                eprintln!("portcullis: configuration error: {p}");
            }
            return ExitCode::FAILURE;
        }
    };
    let logger = match Logger::open(&config.log) {
        Ok(l) => Arc::new(l),
        Err(e) => {
            Logger::stderr(&config.log.ident).error(&e);
            return ExitCode::FAILURE;
        }
    };
    // Diagnostics to JSON or journald: the subscriber before the first of them.
    let installed = portcullis::log::diagnostics::filter(&config.log.level, config.log.debug)
        .and_then(|f| portcullis::log::diagnostics::install(config.log.diagnostics, f));
    if let Err(e) = installed {
        // Not through the logger: its diagnostics were to go where this failed.
        eprintln!("portcullis: log.diagnostics: {e}");
        return ExitCode::FAILURE;
    }
    for w in warnings.iter().chain(&built.warnings) {
        logger.warning(w);
    }
    let listeners = built.listeners;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            logger.error(&format!("cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let guard = match portcullis::guard::Guard::from_config(&config.guard, &logger) {
        Ok(guard) => guard,
        Err(e) => {
            logger.error(&e);
            return ExitCode::FAILURE;
        }
    };
    let services = Services::new(logger.clone(), guard);
    if serving == Serving::Inetd {
        return runtime.block_on(serve_inetd(&config, listeners, services));
    }
    // Found now: after a package upgrade the name may lead elsewhere, and after a privilege
    // drop this process may no longer be able to look.
    let program = server::upgrade::invoked_program();
    runtime.block_on(async {
        // Before anything announces this process: a signal then must not kill it.
        use tokio::signal::unix::{signal, SignalKind};
        let (hangup, usr2) = match (
            signal(SignalKind::hangup()),
            signal(SignalKind::user_defined2()),
        ) {
            (Ok(hangup), Ok(usr2)) => (hangup, usr2),
            (Err(e), _) | (_, Err(e)) => {
                logger.error(&format!("cannot handle signals: {e}"));
                return ExitCode::FAILURE;
            }
        };
        // The admin endpoint's socket, when one was passed in, is the endpoint's.
        let admin_inherited = config.admin.address().and_then(|address| {
            let i = inherited.iter().position(|(a, _)| *a == address)?;
            Some(inherited.swap_remove(i).1)
        });
        let bound = match server::bind(&listeners, inherited) {
            Ok((bound, unused)) => {
                for u in unused {
                    logger.warning(&u);
                }
                bound
            }
            Err(e) => {
                logger.error(&e);
                return ExitCode::FAILURE;
            }
        };
        logger.info(&format!(
            "Starting portcullis version={}",
            env!("CARGO_PKG_VERSION")
        ));
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
        let (upgrade_tx, upgrade_rx) = tokio::sync::mpsc::channel(1);
        let mut other_sockets = Vec::new();
        let mut end_with_serving = Vec::new();
        if let Some(address) = config.admin.address() {
            match portcullis::admin::bind(address, admin_inherited) {
                Ok((socket, copy)) => {
                    other_sockets.push((address, copy));
                    logger.info(&format!("Admin endpoint on http://{address}/"));
                    for w in config.admin.warnings() {
                        logger.warning(&w);
                    }
                    let admin = portcullis::admin::Admin::new(
                        services.clone(),
                        &config.admin,
                        address,
                        reload_tx.clone(),
                        upgrade_tx.clone(),
                    );
                    end_with_serving.push(tokio::spawn(admin.serve(socket)).abort_handle());
                }
                Err(e) => {
                    logger.error(&e);
                    return ExitCode::FAILURE;
                }
            }
        }
        // Every socket is bound: the pid file, then the user the rest runs as.
        let pid_file = config.process.pid_file.clone();
        if let Some(path) = &pid_file {
            let owner = config.process.user.as_deref();
            let group = config.process.group.as_deref();
            if let Err(e) = portcullis::pid_file::write(path.as_ref(), owner, group) {
                logger.error(&e);
                return ExitCode::FAILURE;
            }
        }
        if let Some(user) = &config.process.user {
            match portcullis::service_manager::drop_privileges(
                user,
                config.process.group.as_deref(),
            ) {
                Ok(()) => logger.info(&format!("Running as user {user}")),
                Err(e) => {
                    logger.error(&format!("cannot drop privileges: {e}"));
                    return ExitCode::FAILURE;
                }
            }
        }
        tokio::spawn(forward_signal(hangup, reload_tx, || {
            server::listener::ReloadRequest { reply: None }
        }));
        tokio::spawn(forward_signal(usr2, upgrade_tx, || {
            server::listener::UpgradeRequest { reply: None }
        }));
        // A successor started as this user could not bind nor read what a start needs; one
        // started by hand under systemd would be killed with this process's cgroup.
        let upgrade_refused = if portcullis::service_manager::under_systemd() {
            Some("started by systemd: use portcullis.socket and systemctl restart".to_string())
        } else {
            config
                .process
                .user
                .as_ref()
                .map(|user| format!("privileges were dropped to {user}: restart instead"))
        };
        tokio::spawn(report_status(services.registry.clone()));
        portcullis::service_manager::ready(&services.registry.status());
        let stopping = async {
            shutdown_signal().await;
            portcullis::service_manager::stopping();
        };
        let control = server::listener::Control {
            reloads: reload_rx,
            upgrades: upgrade_rx,
            source,
            args: std::env::args().skip(1).collect(),
            other_sockets,
            program,
            upgrade_refused,
            pid_file: pid_file.clone(),
            end_with_serving,
        };
        server::run(bound, services, config, stopping, control).await;
        // A successor has written its own pid there by now: that one stays.
        if let Some(path) = &pid_file {
            portcullis::pid_file::remove(path.as_ref());
        }
        logger.info("Stopped");
        // The last lines (Closing lines of the sessions shutdown ended) must reach the log.
        logger.flush(LOG_FLUSH_AT_EXIT);
        ExitCode::SUCCESS
    })
}

/// Perdition's inetd mode: one session on standard input, as the configured user, then exit.
async fn serve_inetd(
    config: &Config,
    listeners: Vec<Arc<server::builder::ListenerState>>,
    services: Arc<Services>,
) -> ExitCode {
    let logger = services.logger.clone();
    if let Some(user) = &config.process.user {
        if let Err(e) =
            portcullis::service_manager::drop_privileges(user, config.process.group.as_deref())
        {
            logger.error(&format!("cannot drop privileges: {e}"));
            return ExitCode::FAILURE;
        }
    }
    let Some(listener) = listeners.into_iter().next() else {
        return ExitCode::FAILURE;
    };
    let served = server::inetd::serve_stdin(listener, services, shutdown_signal()).await;
    let code = match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            logger.error(&e);
            ExitCode::FAILURE
        }
    };
    logger.flush(LOG_FLUSH_AT_EXIT);
    code
}

/// `check --probe`: every listener's map server and back ends, one report each; failure when
/// one of them is broken.
fn probe_backends(listeners: &[Arc<server::builder::ListenerState>]) -> ExitCode {
    let mut broken = probe_maps(listeners);
    let Some(runtime) = one_thread() else {
        eprintln!("portcullis: cannot start a runtime");
        return ExitCode::FAILURE;
    };
    runtime.block_on(async {
        for (i, listener) in listeners.iter().enumerate() {
            println!(
                "listener {} ({} on {}):",
                i + 1,
                listener.protocol().name(),
                listener.label
            );
            if listener.router.servers.is_empty() {
                println!("  no back end of its own (every user is routed by its map)");
            }
            for endpoint in &listener.router.servers {
                let report = server::backend_probe::probe(listener, endpoint).await;
                print!("{}", report.render());
                if let Some(why) = report.broken {
                    broken.push(format!("listener {}: {}: {why}", i + 1, report.server));
                }
            }
        }
    });
    if broken.is_empty() {
        eprintln!("every back end answers");
        ExitCode::SUCCESS
    } else {
        for b in broken {
            eprintln!("error: {b}");
        }
        ExitCode::FAILURE
    }
}

/// Reach every listener's map server once (LDAP, SQL), so that `check` says which is down.
fn probe_maps(listeners: &[Arc<server::builder::ListenerState>]) -> Vec<String> {
    let Some(runtime) = one_thread() else {
        return vec!["cannot start a runtime to reach the maps".into()];
    };
    runtime.block_on(async {
        let mut problems = Vec::new();
        for (i, listener) in listeners.iter().enumerate() {
            let Some(map) = &listener.router.map else {
                continue;
            };
            let reached = tokio::time::timeout(Duration::from_secs(15), map.probe()).await;
            let problem = match reached {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(_) => "no answer in 15 s".to_string(),
            };
            problems.push(format!("listener {}: {}: {problem}", i + 1, map.describe()));
        }
        problems
    })
}

/// Each arrival of `signal` becomes a request to the server: SIGHUP a reload (configuration,
/// certificates and maps read again, log files reopened: logrotate) instead of the default
/// death, SIGUSR2 a binary upgrade (the sockets handed to the binary on disk, as nginx).
async fn forward_signal<R>(
    mut signal: tokio::signal::unix::Signal,
    requests: tokio::sync::mpsc::Sender<R>,
    request: fn() -> R,
) {
    while signal.recv().await.is_some() {
        if requests.send(request()).await.is_err() {
            return;
        }
    }
}

/// The status line `systemctl status` shows, kept current.
async fn report_status(registry: Arc<portcullis::server::registry::Registry>) {
    let period = Duration::from_secs(10);
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        every.tick().await;
        portcullis::service_manager::status(&registry.status());
    }
}

/// SIGTERM (systemd, `kill`) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
