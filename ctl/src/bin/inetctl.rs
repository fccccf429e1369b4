//! inetctl: asks a running inetd-controller over its control socket
//! (`list`, `status`, `reload`), or checks a configuration locally
//! (`check`). Exit codes (DESIGN.md): 0 ok; 1 refused or failed; 2 usage;
//! 3 the daemon is not reachable; 4 permission denied.
#![forbid(unsafe_code)]

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use inetd_ctl::config::{self, AccessFiles, NameSources, Severity, SourcePrefix};
use inetd_ctl::{json, paths, table};
use inetd_protocol::control::{CtlCommand, CtlRequest, CtlResponse, ReloadResult};
use inetd_protocol::{read_message, write_message};

#[derive(Parser, Debug)]
#[command(name = "inetctl", version, about = "Control and inspect inetd")]
struct Args {
    /// The controller's control socket. Default: your own instance's if it
    /// exists, else /run/inetd/control/control.sock.
    #[arg(long, value_name = "PATH", global = true)]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// One row per listener, rejected entries included.
    List {
        /// Print the stable JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The controller's and the core's state.
    Status {
        /// Print the stable JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Reread the configuration and apply it (admins only). Nothing changes
    /// if any entry is bad, unless --partial.
    Reload {
        /// Apply the good entries even if some are bad (still exits 1).
        #[arg(long)]
        partial: bool,
    },
    /// Check configuration files locally, without a daemon. Default: the
    /// default configuration.
    Check {
        #[arg(value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// The tcpwrappers allow file to check with them.
        #[arg(long, value_name = "FILE", default_value = config::access::DEFAULT_HOSTS_ALLOW)]
        hosts_allow: PathBuf,
        /// The tcpwrappers deny file to check with them.
        #[arg(long, value_name = "FILE", default_value = config::access::DEFAULT_HOSTS_DENY)]
        hosts_deny: PathBuf,
    },
}

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

fn ask(path: &PathBuf, command: CtlCommand) -> Result<CtlResponse, ExitCode> {
    let mut stream = UnixStream::connect(path).map_err(|e| {
        eprintln!(
            "inetctl: cannot reach the controller at {}: {e}",
            path.display()
        );
        ExitCode::from(3)
    })?;
    // A reload may bind many sockets; anything else answers at once.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    write_message(&mut stream, &CtlRequest::new(command))
        .and_then(|()| read_message(&mut stream))
        .map_err(|e| {
            eprintln!("inetctl: {}: {e}", path.display());
            ExitCode::from(3)
        })
}

fn print(out: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(out.as_bytes());
    let _ = o.flush();
}

fn check(paths: Vec<PathBuf>, access: AccessFiles) -> ExitCode {
    let paths = if paths.is_empty() {
        config::default_paths()
    } else {
        paths
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
            println!(
                "{} listeners, {} rejected entries, {errors} errors, {warnings} warnings",
                c.entries.len(),
                c.rejected.len()
            );
            if c.has_errors() {
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

fn main() -> ExitCode {
    let args = Args::parse();
    let (command, as_json) = match args.command {
        Command::Check {
            paths,
            hosts_allow,
            hosts_deny,
        } => {
            return check(
                paths,
                AccessFiles {
                    allow: hosts_allow,
                    deny: hosts_deny,
                },
            )
        }
        Command::List { json } => (CtlCommand::List, json),
        Command::Status { json } => (CtlCommand::Status, json),
        Command::Reload { partial } => (CtlCommand::Reload { partial }, false),
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
            } else {
                eprintln!("inetctl: reload rejected: nothing changed");
            }
            if r.result == ReloadResult::Ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        CtlResponse::Error { kind, message } => {
            eprintln!("inetctl: {message}");
            ExitCode::from(u8::try_from(kind.exit_code()).unwrap_or(1))
        }
    }
}
