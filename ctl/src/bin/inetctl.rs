//! inetctl: asks a running inetd-controller over its control socket
//! (`list`, `status`, `reload`), or checks a configuration locally
//! (`check`). Exit codes (docs/inetctl.md): 0 ok; 1 refused or failed; 2 usage;
//! 3 the daemon is not reachable; 4 permission denied.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use interprocess::local_socket::traits::Stream as _;

use inetd_ctl::cli::{InetctlArgs as Args, InetctlCommand as Command};
use inetd_ctl::config::{self, AccessFiles, NameSources, Severity, SourcePrefix};
use inetd_ctl::{connections, json, local, metrics, paths, plan, table};
use inetd_protocol::control::{CtlCommand, CtlRequest, CtlResponse, ReloadResult};
use inetd_protocol::{read_message, write_message};

fn socket_path(explicit: Option<PathBuf>) -> PathBuf {
    if let Some(p) = explicit {
        return p;
    }
    let uid = nix::unistd::getuid().as_raw();
    let xdg = std::env::var("XDG_RUNTIME_DIR").ok();
    let candidates = paths::inetctl_candidates(uid, xdg.as_deref());
    candidates
        .iter()
        .find(|p| paths::trusted_socket(p, uid))
        .unwrap_or_else(|| {
            candidates
                .last()
                .expect("the system socket is always a candidate")
        })
        .clone()
}

fn ask(path: &std::path::Path, command: CtlCommand) -> Result<CtlResponse, ExitCode> {
    let mut stream = local::connect(path).map_err(|e| {
        eprintln!(
            "inetctl: cannot reach the controller at {}: {e}",
            path.display()
        );
        ExitCode::from(3)
    })?;
    // A reload may bind many sockets; anything else answers at once.
    let _ = stream.set_recv_timeout(Some(Duration::from_secs(120)));
    write_message(&mut stream, &CtlRequest::new(command))
        .and_then(|()| read_message(&mut stream))
        .map_err(|e| {
            eprintln!("inetctl: {}: {e}", path.display());
            ExitCode::from(3)
        })
}

/// `1 error`, `2 errors`.
fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn print(out: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(out.as_bytes());
    let _ = o.flush();
}

/// The policy of the running core, if a controller answers and its core
/// is up; quietly `None` otherwise.
fn core_policy(path: &std::path::Path) -> Option<inetd_protocol::Policy> {
    let mut stream = local::connect(path).ok()?;
    let _ = stream.set_recv_timeout(Some(Duration::from_secs(10)));
    write_message(&mut stream, &CtlRequest::new(CtlCommand::Status)).ok()?;
    match read_message(&mut stream).ok()? {
        CtlResponse::Status(s) => s.core.map(|c| c.policy),
        _ => None,
    }
}

/// The configuration paths the running controller uses, if one answers.
fn controller_paths(path: &std::path::Path) -> Option<Vec<PathBuf>> {
    let mut stream = local::connect(path).ok()?;
    let _ = stream.set_recv_timeout(Some(Duration::from_secs(10)));
    write_message(&mut stream, &CtlRequest::new(CtlCommand::Status)).ok()?;
    match read_message(&mut stream).ok()? {
        CtlResponse::Status(s) if !s.controller.config_paths.is_empty() => Some(
            s.controller
                .config_paths
                .into_iter()
                .map(PathBuf::from)
                .collect(),
        ),
        _ => None,
    }
}

fn check(paths: Vec<PathBuf>, access: AccessFiles, socket: Option<PathBuf>) -> ExitCode {
    let socket = socket_path(socket);
    let paths = if !paths.is_empty() {
        paths
    } else if let Some(running) = controller_paths(&socket) {
        let shown: Vec<String> = running.iter().map(|p| p.display().to_string()).collect();
        println!(
            "checking what the running controller uses: {}",
            shown.join(" ")
        );
        running
    } else {
        config::default_paths()
    };
    match config::load_all(
        &paths,
        &NameSources::default(),
        &access,
        SourcePrefix::default(),
    ) {
        Err(e) => {
            eprintln!("inetctl: {e}");
            ExitCode::from(1)
        }
        Ok(c) => {
            for d in &c.diagnostics {
                eprintln!("{d}");
            }
            print(&check_notes(&c));
            let errors = c
                .diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count();
            let warnings = c.diagnostics.len() - errors;
            // What a running core would refuse, as reload would show it.
            let policy = core_policy(&socket);
            let refused = policy.map(|p| plan::refusals(&c, &p));
            for d in refused.iter().flatten() {
                eprintln!("{d}");
            }
            let by_core = match &refused {
                Some(r) => format!(", {} refused by the running core", r.len()),
                None => String::new(),
            };
            println!(
                "{}, {}, {}, {}{by_core}",
                plural(c.entries.len(), "listener", "listeners"),
                plural(c.rejected.len(), "rejected entry", "rejected entries"),
                plural(errors, "error", "errors"),
                plural(warnings, "warning", "warnings"),
            );
            if c.has_errors() || refused.is_some_and(|r| !r.is_empty()) {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}

/// What `check` says about the good entries beyond their diagnostics: the
/// limits that are not the defaults and the access lists, one line per
/// entry (its listeners share them), then the defaults.
fn check_notes(c: &config::Config) -> String {
    use inetd_protocol::control::RowLimits;
    let mut out = String::new();
    let mut seen = std::collections::BTreeSet::new();
    for e in &c.entries {
        let mut notes = Vec::new();
        if let Some(n) = table::limits_note(&RowLimits::from(&e.spec.limits)) {
            notes.push(format!("limits: {n}"));
        }
        if let Some(acl) = &e.spec.acl {
            notes.push(format!(
                "access list: {} address rules, {} by default",
                acl.rules.len(),
                if acl.default_allow { "allow" } else { "deny" }
            ));
        }
        if notes.is_empty() || !seen.insert((e.source.file.clone(), e.source.line, notes.clone())) {
            continue;
        }
        out.push_str(&format!(
            "{}: {} {}: {}\n",
            e.source,
            e.service,
            e.protocol,
            notes.join("; ")
        ));
    }
    out.push_str(&format!(
        "limits not shown are the defaults: {} children per listener, no rate or per-source limit\n",
        inetd_protocol::DEFAULT_MAX_CHILDREN
    ));
    out
}

/// `inetctl metrics`: the status and, when the core is up, the list. A
/// controller that does not answer still gives `inetd_controller_up 0`
/// (and exit 3), so a textfile collector shows it down rather than stale.
fn metrics(path: &std::path::Path) -> ExitCode {
    let status = match ask_quietly(path, CtlCommand::Status) {
        Ok(CtlResponse::Status(s)) => s,
        Ok(other) => {
            eprintln!("inetctl: unexpected answer to status: {other:?}");
            print(&metrics::controller_down());
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!(
                "inetctl: cannot reach the controller at {}: {e}",
                path.display()
            );
            print(&metrics::controller_down());
            return ExitCode::from(3);
        }
    };
    let list = match ask_quietly(path, CtlCommand::List) {
        Ok(CtlResponse::List(l)) => Some(l),
        _ => None,
    };
    print(&metrics::exposition(&status, list.as_ref()));
    ExitCode::SUCCESS
}

/// One request and its answer, errors returned rather than printed.
fn ask_quietly(path: &std::path::Path, command: CtlCommand) -> Result<CtlResponse, String> {
    let mut stream = local::connect(path).map_err(|e| e.to_string())?;
    let _ = stream.set_recv_timeout(Some(Duration::from_secs(30)));
    write_message(&mut stream, &CtlRequest::new(command))
        .and_then(|()| read_message(&mut stream))
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (command, as_json) = match args.command {
        Command::Check {
            paths,
            hosts_allow,
            hosts_deny,
        } => {
            let access = AccessFiles {
                allow: hosts_allow,
                deny: hosts_deny,
            };
            return check(paths, access, args.socket);
        }
        Command::List { json } => (CtlCommand::List, json),
        Command::Status { json } => (CtlCommand::Status, json),
        Command::Reload { partial } => (CtlCommand::Reload { partial }, false),
        Command::Connections { json } => (CtlCommand::Connections, json),
        Command::Metrics => return metrics(&socket_path(args.socket)),
    };
    let path = socket_path(args.socket);
    let answer = match ask(&path, command) {
        Ok(a) => a,
        Err(code) => return code,
    };
    match answer {
        CtlResponse::List(l) => {
            print(&if as_json {
                json::list_json(&l) + "\n"
            } else {
                table::list_table(&l)
            });
            ExitCode::SUCCESS
        }
        CtlResponse::Status(s) => {
            print(&if as_json {
                json::status_json(&s) + "\n"
            } else {
                table::status_text(&s)
            });
            ExitCode::SUCCESS
        }
        CtlResponse::Reload(r) => {
            for d in &r.diagnostics {
                eprintln!("{d}");
            }
            if r.result != ReloadResult::Rejected {
                print(&table::reload_text(&r));
            } else if r.diagnostics.iter().any(|d| d.contains(": error: ")) {
                eprintln!(
                    "inetctl: reload rejected: nothing changed; `inetctl reload --partial` applies the good entries and leaves the bad ones out"
                );
            } else {
                eprintln!("inetctl: reload rejected: nothing changed");
            }
            if r.result == ReloadResult::Ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        CtlResponse::Connections(c) => {
            print(&if as_json {
                connections::connections_json(&c) + "\n"
            } else {
                connections::connections_table(&c)
            });
            ExitCode::SUCCESS
        }
        CtlResponse::Error { kind, message } => {
            eprintln!("inetctl: {message}");
            ExitCode::from(u8::try_from(kind.exit_code()).unwrap_or(1))
        }
    }
}
