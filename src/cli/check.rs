//! `check`: the configuration built as `run` would build it, then shown (secrets masked),
//! probed (`--probe`: every back end and map server) or only judged (`--offline`).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::server::builder::{self, ListenerState};

/// How long a map server may take to answer `check`.
const MAP_ANSWER_TIME: Duration = Duration::from_secs(15);

/// `check --config FILE [--probe | --offline]`.
pub struct Check {
    pub config: Config,
    /// Reach every back end and map server, and report on each.
    pub probe: bool,
    /// Reach nothing and print nothing but problems (the unit's ExecStartPre: a map server
    /// down must not keep the proxy from starting, nor secrets reach the journal).
    pub offline: bool,
}

pub fn check(check: Check) -> ExitCode {
    let Check {
        config,
        probe,
        offline,
    } = check;
    for w in config.admin.warnings() {
        eprintln!("warning: {w}");
    }
    let built = match builder::build(&config) {
        Ok(built) => built,
        Err(problems) => {
            for p in problems.0 {
                eprintln!("error: {p}");
            }
            return ExitCode::FAILURE;
        }
    };
    for w in &built.warnings {
        eprintln!("warning: {w}");
    }
    // The ACME state: to standard output with the probes' reports, else beside the
    // problems (standard output is the configuration).
    let acme = config
        .acme
        .as_ref()
        .map(crate::acme::report)
        .unwrap_or_default();
    if probe {
        acme.iter().for_each(|line| println!("{line}"));
        return probe_backends(&built.listeners);
    }
    if !offline {
        acme.iter().for_each(|line| eprintln!("{line}"));
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
    print!("{}", shown(config).to_toml());
    eprintln!("configuration is valid");
    ExitCode::SUCCESS
}

/// The effective configuration as `check` prints it: passwords in map URLs and header
/// values, and the admin token, are not shown.
fn shown(config: Config) -> Config {
    let mut shown = Config {
        limits: config.limits.effective(),
        ..config
    };
    if shown.admin.token.is_some() {
        shown.admin.token = Some("***".into());
    }
    shown.guard.store = shown.guard.store.as_deref().map(crate::map::masked_url);
    shown.fleet.store = shown.fleet.store.as_deref().map(crate::map::masked_url);
    for map in shown.listeners.iter_mut().filter_map(|l| l.map.as_mut()) {
        map.url = map.url.as_deref().map(crate::map::masked_url);
        map.headers.values_mut().for_each(|v| *v = "***".into());
    }
    shown
}

/// `check --probe`: every listener's map server and back ends, one report each; failure when
/// one of them is broken.
fn probe_backends(listeners: &[Arc<ListenerState>]) -> ExitCode {
    let mut broken = probe_maps(listeners);
    let Some(runtime) = super::one_thread() else {
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
                let report = crate::server::backend_probe::probe(listener, endpoint).await;
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
fn probe_maps(listeners: &[Arc<ListenerState>]) -> Vec<String> {
    let Some(runtime) = super::one_thread() else {
        return vec!["cannot start a runtime to reach the maps".into()];
    };
    runtime.block_on(async {
        let mut problems = Vec::new();
        for (i, listener) in listeners.iter().enumerate() {
            let Some(map) = &listener.router.map else {
                continue;
            };
            let problem = match tokio::time::timeout(MAP_ANSWER_TIME, map.probe()).await {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer in {} s", MAP_ANSWER_TIME.as_secs()),
            };
            problems.push(format!("listener {}: {}: {problem}", i + 1, map.describe()));
        }
        problems
    })
}
