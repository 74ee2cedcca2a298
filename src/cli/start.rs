//! Start-up: what serving needs, in the order it needs it. Sockets passed in are taken before
//! any thread exists; the configuration is built (certificates, keys, maps read once); the
//! log opened; then, on a multi-threaded runtime, the listeners bound, the admin endpoint,
//! the pid file, the privilege drop, and the server run until it is told to stop.

use std::error::Error;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::acme::Acme;
use crate::config::Config;
use crate::log::Logger;
use crate::server::builder::{self, ListenerState};
use crate::server::control::{self, ConfigSource, Control, Signals, Upgrade, UpgradeError};
use crate::server::services::Services;
use crate::service_manager::{self, InheritedSocketsError, PrivilegeError};

/// How long the process waits at exit for a slow log destination to take the last lines.
const LOG_FLUSH_AT_EXIT: Duration = Duration::from_secs(5);

/// How `run` serves its listeners.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// Bound sockets, until stopped.
    Listeners,
    /// Perdition's inetd mode: the one connection on standard input.
    Inetd,
}

/// What serving starts from.
pub struct Start {
    pub config: Config,
    /// Worth a log line, once the log is open.
    pub warnings: Vec<String>,
    /// Where a reload reads the configuration again.
    pub source: ConfigSource,
    pub serving: Serving,
}

/// Why the start ended before the log was open: told on standard error.
#[derive(Debug, thiserror::Error)]
enum EarlyError {
    #[error(transparent)]
    Inherited(#[from] InheritedSocketsError),
    #[error("configuration error: {}", .0.join("; "))]
    Config(Vec<String>),
    #[error(transparent)]
    Acme(#[from] crate::acme::AcmeError),
    #[error(transparent)]
    Log(Box<dyn Error + Send + Sync>),
    /// Not through the logger: its diagnostics were to go where this failed.
    #[error("log.diagnostics: {0}")]
    Diagnostics(#[source] Box<dyn Error + Send + Sync>),
}

impl EarlyError {
    fn report(&self, ident: &str) {
        match self {
            EarlyError::Config(problems) => {
                for p in problems {
                    eprintln!("portcullis: configuration error: {p}");
                }
            }
            EarlyError::Log(_) => Logger::stderr(ident).error(&self.to_string()),
            _ => eprintln!("portcullis: {self}"),
        }
    }
}

/// Why the start ended once the log was open: told in the log.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Guard(Box<dyn Error + Send + Sync>),
    #[error("cannot handle signals: {0}")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Bind(#[from] crate::server::listener::BindError),
    #[error(transparent)]
    Admin(Box<dyn Error + Send + Sync>),
    #[error(transparent)]
    PidFile(#[from] crate::pid_file::PidFileError),
    #[error("cannot drop privileges: {0}")]
    Privileges(#[from] PrivilegeError),
    #[error(transparent)]
    Inetd(Box<dyn Error + Send + Sync>),
}

/// What is open before the runtime starts.
struct Opened {
    inherited: Vec<(SocketAddr, std::net::TcpListener)>,
    built: builder::Built,
    logger: Arc<Logger>,
    /// `[acme]`: its certificates served, its task yet to start; and its words for the log.
    acme: Option<(Acme, Vec<String>)>,
}

/// Serve: `run`, `perdition`. Failure when the start fails.
pub fn run(start: Start) -> ExitCode {
    let Start {
        config,
        warnings,
        source,
        serving,
    } = start;
    let Opened {
        inherited,
        built,
        logger,
        acme,
    } = match open(&config) {
        Ok(opened) => opened,
        Err(e) => {
            e.report(&config.log.ident);
            return ExitCode::FAILURE;
        }
    };
    let acme = say_what_was_found(&logger, &warnings, &built.warnings, acme);
    let listeners = built.listeners;
    let started = runtime_and_services(&config, &logger);
    let (runtime, services) = match started {
        Ok(both) => both,
        Err(e) => {
            logger.error(&e.to_string());
            return ExitCode::FAILURE;
        }
    };
    if serving == Serving::Inetd {
        return runtime.block_on(serve_inetd(&config, listeners, services));
    }
    // Found now: after a package upgrade the name may lead elsewhere, and after a privilege
    // drop this process may no longer be able to look.
    let program = match control::refusal(config.process.user.as_deref()) {
        Some(why) => Err(why),
        None => control::invoked_program(),
    };
    let pid_file = config.process.pid_file.clone();
    let serving = SocketsAndControl {
        listeners,
        inherited,
        source,
        program,
        acme,
    };
    if let Err(e) = runtime.block_on(serve(config, serving, services)) {
        logger.error(&e.to_string());
        return ExitCode::FAILURE;
    }
    // A successor has written its own pid there by now: that one stays.
    if let Some(path) = &pid_file {
        crate::pid_file::remove(path.as_ref());
    }
    logger.info("Stopped");
    // The last lines (Closing lines of the sessions shutdown ended) must reach the log.
    logger.flush(LOG_FLUSH_AT_EXIT);
    ExitCode::SUCCESS
}

/// The start's warnings and `[acme]`'s words go to the log; the ACME task to start, if any.
fn say_what_was_found(
    logger: &Logger,
    read: &[String],
    built: &[String],
    acme: Option<(Acme, Vec<String>)>,
) -> Option<Acme> {
    for w in read.iter().chain(built) {
        logger.warning(w);
    }
    acme.map(|(acme, said)| {
        said.iter().for_each(|line| logger.info(line));
        acme
    })
}

/// The sockets passed in, the configuration built, the log open.
fn open(config: &Config) -> Result<Opened, EarlyError> {
    // Before any thread exists: taking them clears the environment variables that name them.
    let inherited = service_manager::inherited_sockets()?;
    // Certificates, keys and maps are read here, once.
    let built = builder::build(config).map_err(|p| EarlyError::Config(p.0))?;
    // Before the listeners take clients: they serve what state_dir holds.
    let owner = config.process.user.as_deref();
    let owner = owner.map(|user| (user, config.process.group.as_deref()));
    let acme = match &config.acme {
        Some(acme) => Some(Acme::prepare(acme, owner)?),
        None => None,
    };
    let logger = Logger::open(&config.log).map_err(|e| EarlyError::Log(e.into()))?;
    // Diagnostics to JSON or journald: the subscriber before the first of them.
    let filter = crate::log::diagnostics::filter(&config.log.level, config.log.debug)
        .map_err(|e| EarlyError::Diagnostics(e.into()))?;
    crate::log::diagnostics::install(config.log.diagnostics, filter)
        .map_err(|e| EarlyError::Diagnostics(e.into()))?;
    Ok(Opened {
        inherited,
        built,
        logger: Arc::new(logger),
        acme,
    })
}

fn runtime_and_services(
    config: &Config,
    logger: &Arc<Logger>,
) -> Result<(tokio::runtime::Runtime, Arc<Services>), StartError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    let guard = crate::guard::Guard::from_config(&config.guard, &config.fleet, logger)
        .map_err(|e| StartError::Guard(e.into()))?;
    let sessions =
        crate::fleet::session_table(config, logger).map_err(|e| StartError::Guard(e.into()))?;
    Ok((runtime, Services::new(logger.clone(), guard, sessions)))
}

/// Become `[process] user`, when one is configured: the user become.
fn drop_privileges(config: &Config) -> Result<Option<&str>, StartError> {
    let Some(user) = config.process.user.as_deref() else {
        return Ok(None);
    };
    service_manager::drop_privileges(user, config.process.group.as_deref())?;
    Ok(Some(user))
}

/// `[process] pid_file`, when one is configured, for the user the process becomes.
fn write_pid_file(config: &Config) -> Result<(), StartError> {
    let process = &config.process;
    if let Some(path) = &process.pid_file {
        let (owner, group) = (process.user.as_deref(), process.group.as_deref());
        crate::pid_file::write(path.as_ref(), owner, group)?;
    }
    Ok(())
}

/// Perdition's inetd mode: one session on standard input, as the configured user, then exit.
async fn serve_inetd(
    config: &Config,
    listeners: Vec<Arc<ListenerState>>,
    services: Arc<Services>,
) -> ExitCode {
    let logger = services.logger.clone();
    if let Err(e) = drop_privileges(config) {
        logger.error(&e.to_string());
        return ExitCode::FAILURE;
    }
    let Some(listener) = listeners.into_iter().next() else {
        return ExitCode::FAILURE;
    };
    let served = crate::server::inetd::serve_stdin(listener, services, control::shutdown_signal())
        .await
        .map_err(|e| StartError::Inetd(e.into()));
    let code = match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            logger.error(&e.to_string());
            ExitCode::FAILURE
        }
    };
    logger.flush(LOG_FLUSH_AT_EXIT);
    code
}

/// What serving bound sockets starts from, besides the configuration.
struct SocketsAndControl {
    listeners: Vec<Arc<ListenerState>>,
    /// Passed in by the service manager or a predecessor.
    inherited: Vec<(SocketAddr, std::net::TcpListener)>,
    source: ConfigSource,
    /// The binary a successor is started from, or why there is none.
    program: Result<std::path::PathBuf, UpgradeError>,
    /// Started once the listeners are bound (tls-alpn-01 is answered by them).
    acme: Option<Acme>,
}

/// Bind, announce, and serve until told to stop.
async fn serve(
    config: Config,
    start: SocketsAndControl,
    services: Arc<Services>,
) -> Result<(), StartError> {
    let SocketsAndControl {
        listeners,
        mut inherited,
        source,
        program,
        acme,
    } = start;
    let logger = services.logger.clone();
    // Before anything announces this process: a signal then must not kill it.
    let signals = Signals::take().map_err(StartError::Signals)?;
    // The admin endpoint's socket, when one was passed in, is the endpoint's.
    let admin_inherited = config.admin.address().and_then(|address| {
        let i = inherited.iter().position(|(a, _)| *a == address)?;
        Some(inherited.swap_remove(i).1)
    });
    let (bound, unused) = crate::server::bind(&listeners, inherited)?;
    for u in unused {
        logger.warning(&u);
    }
    let version = env!("CARGO_PKG_VERSION");
    logger.info(&format!("Starting portcullis version={version}"));
    let (reload_tx, reloads) = mpsc::channel(4);
    let (upgrade_tx, upgrades) = mpsc::channel(1);
    let requests = (reload_tx.clone(), upgrade_tx.clone());
    let admin = start_admin(&config, admin_inherited, &services, requests)?;
    // Every socket is bound: the pid file, then the user the rest runs as.
    write_pid_file(&config)?;
    if let Some(user) = drop_privileges(&config)? {
        logger.info(&format!("Running as user {user}"));
    }
    signals.forward(reload_tx, upgrade_tx);
    start_acme(acme, &services);
    let registry = services.registry.clone();
    tokio::spawn(service_manager::report_status(move || registry.status()));
    service_manager::ready(&services.registry.status());
    let stopping = async {
        control::shutdown_signal().await;
        service_manager::stopping();
    };
    let control = Control {
        reloads,
        upgrades,
        source,
        upgrade: Upgrade {
            args: std::env::args().skip(1).collect(),
            other_sockets: admin.sockets,
            program,
            pid_file: config.process.pid_file.clone(),
        },
        end_with_serving: admin.tasks,
    };
    crate::server::run(bound, services, config, stopping, control).await;
    Ok(())
}

/// The ACME task, when `[acme]` is configured.
fn start_acme(acme: Option<Acme>, services: &Services) {
    if let Some(acme) = acme {
        acme.spawn(services.logger.clone(), services.metrics.clone());
    }
}

/// The admin endpoint, when one is configured: its socket (for a successor) and its task
/// (which ends with serving).
#[derive(Default)]
struct AdminStarted {
    sockets: Vec<(SocketAddr, std::net::TcpListener)>,
    tasks: Vec<tokio::task::AbortHandle>,
}

fn start_admin(
    config: &Config,
    inherited: Option<std::net::TcpListener>,
    services: &Arc<Services>,
    (reloads, upgrades): (
        mpsc::Sender<control::ReloadRequest>,
        mpsc::Sender<control::UpgradeRequest>,
    ),
) -> Result<AdminStarted, StartError> {
    let mut started = AdminStarted::default();
    let Some(address) = config.admin.address() else {
        return Ok(started);
    };
    let (socket, copy) =
        crate::admin::bind(address, inherited).map_err(|e| StartError::Admin(e.into()))?;
    started.sockets.push((address, copy));
    let logger = &services.logger;
    logger.info(&format!("Admin endpoint on http://{address}/"));
    for w in config.admin.warnings() {
        logger.warning(&w);
    }
    let admin =
        crate::admin::Admin::new(services.clone(), &config.admin, address, reloads, upgrades);
    started
        .tasks
        .push(tokio::spawn(admin.serve(socket)).abort_handle());
    Ok(started)
}
