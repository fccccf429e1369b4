//! inetd-controller: the unprivileged half of inetd.
//!
//! Process model: one process, never root, never forks. The main thread
//! owns the core link and all state and handles one event at a time; a
//! signal thread turns SIGHUP, SIGTERM and SIGINT (blocked in every thread)
//! into events; an accepting thread serves the control socket with one
//! short-lived thread per connection, each of which hands its request to
//! the main thread and waits for the answer.
//!
//! It reads the configuration, resolves every name, and sends the core the
//! full desired state (numbers only). If the core is down it waits and
//! retries; if the controller dies the core keeps serving, and a new
//! controller asks the core what it runs before applying anything.

use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use clap::Parser;
use log::{error, info, warn};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::{geteuid, getgid, getgroups, getuid};

use inetd_ctl::admin::{Admins, FilesDb, GroupDb};
use inetd_ctl::cli::ControllerArgs as Args;
use inetd_ctl::config::{self, AccessFiles, NameSources};
use inetd_ctl::corelink::adopt_core_fd;
use inetd_ctl::ctlserver::{self, Dispatch};
use inetd_ctl::daemon::{CoreTarget, Daemon, Event, Settings};
use inetd_ctl::logger;
use inetd_ctl::notify::Notifier;
use inetd_ctl::paths;
use inetd_ctl::plan::Identity;

fn main() -> ExitCode {
    // Taken (and removed from the environment) while this is the only
    // thread.
    let notify = Notifier::from_env();
    let args = Args::parse();
    logger::init("inetd-controller", args.log_level);

    if getuid().is_root() || geteuid().is_root() {
        error!("inetd-controller must not run as root: run it as the controller user (inetd)");
        return ExitCode::from(2);
    }
    // The inherited core descriptor is adopted before anything else opens
    // a descriptor (adopt_core_fd's safety contract).
    let core = match args.core_fd {
        Some(n) => match adopt_core_fd(n) {
            Ok(s) => CoreTarget::Fd(s),
            Err(e) => {
                error!("{e}");
                return ExitCode::from(2);
            }
        },
        None => CoreTarget::Socket(match &args.core_socket {
            Some(p) => p.clone(),
            None => match default_run() {
                Ok(run) => paths::core_socket(&run),
                Err(e) => return e,
            },
        }),
    };
    // After the core descriptor is adopted: the syslog socket is a new one.
    if args.syslog {
        if let Err(e) = logger::use_syslog("inetd-controller") {
            warn!("--syslog: {e}; logging to stderr");
        }
    }
    let control = match &args.control_socket {
        Some(p) => p.clone(),
        None => match default_run() {
            Ok(run) => paths::control_socket(&run),
            Err(e) => return e,
        },
    };
    match run(args, core, control, notify) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::from(1)
        }
    }
}

/// RUN for the socket paths not given; without one, a message and exit 2.
fn default_run() -> Result<std::path::PathBuf, ExitCode> {
    let xdg = std::env::var("XDG_RUNTIME_DIR").ok();
    paths::controller_run(getuid().as_raw(), xdg.as_deref()).map_err(|e| {
        error!("cannot tell where the core is: {e}");
        ExitCode::from(2)
    })
}

fn run(
    args: Args,
    core: CoreTarget,
    control_path: std::path::PathBuf,
    notify: Notifier,
) -> Result<(), String> {
    // Block the signals we handle before any thread starts, so every
    // thread inherits the mask and only the signal thread receives them.
    let mut sigs = SigSet::empty();
    for s in [Signal::SIGHUP, Signal::SIGTERM, Signal::SIGINT] {
        sigs.add(s);
    }
    sigs.thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;

    let uid = getuid().as_raw();
    let db: Arc<dyn GroupDb> = Arc::new(FilesDb {
        passwd: args.passwd.clone(),
        group: args.group.clone(),
    });
    let gid = getgid().as_raw();
    let me = Identity {
        uid,
        gid,
        groups: getgroups()
            .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_else(|_| vec![gid]),
        user: db.user_name(uid).unwrap_or_else(|| uid.to_string()),
        group: db.group_name(gid).unwrap_or_else(|| gid.to_string()),
    };
    let admins = Admins::new(uid, &args.admin_group, db.as_ref());
    if admins.group_gid.is_none() {
        warn!(
            "admin group {} does not exist: only root and {} (uid {uid}) may reload",
            args.admin_group, me.user
        );
    }

    let names = NameSources {
        services: args.services.clone(),
        passwd: args.passwd.clone(),
        group: args.group.clone(),
    };
    let config_paths = if args.config.is_empty() {
        config::default_paths()
    } else {
        args.config.clone()
    };
    let access = AccessFiles {
        allow: args.hosts_allow.clone(),
        deny: args.hosts_deny.clone(),
    };
    let start_config = config::load_all(&config_paths, &names, &access, args.source_prefix)
        .map_err(|e| format!("cannot read the configuration: {e}"))?;

    let listener = ctlserver::bind_control_socket(&control_path, uid)
        .map_err(|e| format!("control socket: {e}"))?;
    info!("serving inetctl on {}", control_path.display());

    let (tx, rx) = mpsc::channel::<Event>();
    let sig_tx = tx.clone();
    // A signalfd rather than sigwait: it tells who sent the signal, which
    // decides what a SIGTERM means in one-command mode.
    let sigfd = SignalFd::with_flags(&sigs, SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("cannot make a signalfd: {e}"))?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            match sigfd.read_signal() {
                Ok(Some(info)) => {
                    let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                        continue;
                    };
                    if sig_tx.send(Event::Signal(sig, info.ssi_pid)).is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(e) => warn!("reading signals: {e}"),
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    let req_tx = std::sync::Mutex::new(tx);
    let dispatch: Dispatch = Arc::new(move |r| {
        req_tx
            .lock()
            .map(|t| t.send(Event::Request(r)).is_ok())
            .unwrap_or(false)
    });
    ctlserver::spawn(listener, Arc::new(admins), Arc::clone(&db), dispatch)
        .map_err(|e| format!("cannot start the control thread: {e}"))?;

    let mut daemon = Daemon::new(
        Settings {
            config_paths,
            names,
            access,
            source_prefix: args.source_prefix,
            core,
            admin_group: args.admin_group.clone(),
            me,
            notify,
        },
        start_config,
    );
    let result = daemon.run(&rx);
    // Whatever the reason for leaving, the control socket goes with us.
    let _ = std::fs::remove_file(&control_path);
    result
}
