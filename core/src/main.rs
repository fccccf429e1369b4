//! inetd-core: the privileged half of inetd.
//!
//! Process model. The core is one single-threaded process that runs in the
//! foreground and logs to stderr. At start, as root, it resolves the
//! controller user (once, from its own command line), makes its runtime
//! directories and its core socket, then cuts its capabilities to
//! NET_BIND_SERVICE, SETUID, SETGID and KILL. After that it only reacts,
//! in one poll loop, to:
//!
//! * its controller: in packaged mode any number (bounded) of connections
//!   on the core socket, each checked with SO_PEERCRED before a byte is
//!   read; in one-command mode (`--config`) one socketpair to an
//!   `inetd-controller` child it starts, supervises and restarts. The
//!   controller sends the full desired state (`Apply`); the core validates
//!   every listener, diffs by bind key and binds;
//! * its listeners: for each connection (nowait) or readable socket (wait,
//!   dgram builtins) it forks a child that drops to the service's ids and
//!   execs the server, or runs the builtin, with the connection on 0, 1, 2;
//! * signals, read from a signalfd: SIGCHLD reaps, SIGTERM and SIGINT close
//!   the listeners and exit (servers keep running), SIGHUP is ignored in
//!   packaged mode and forwarded to the controller in one-command mode.
//!
//! The core never reads configuration and never resolves names on a
//! request's behalf; it trusts nothing the controller sends. All unsafe
//! code and system calls are in `sys`; every other module forbids unsafe.
#![deny(unsafe_code)]

mod accept;
mod admission;
mod apply;
mod backoff;
mod children;
mod cli;
mod daemon;
mod link;
mod listeners;
mod logger;
mod peer;
mod plan;
mod start;
mod supervisor;
mod sys;
mod validate;

fn main() {
    // First of all, so that nothing opened later lands on 0, 1 or 2.
    if sys::ensure_std_fds().is_err() {
        std::process::exit(1);
    }
    sys::close_inherited_fds();
    // Before anything could start a thread: builtins run Rust code after
    // fork, which is sound only in a single-threaded process.
    let single = match sys::child::SingleThreaded::take() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("inetd-core: {e}");
            std::process::exit(1);
        }
    };
    let cli = match cli::parse(std::env::args_os().skip(1)) {
        Ok(cli::Command::Run(cli)) => cli,
        Ok(cli::Command::Help) => {
            print!("{}", cli::help());
            std::process::exit(0);
        }
        Ok(cli::Command::Version) => {
            println!("{}", cli::version());
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("inetd-core: {e}");
            std::process::exit(2);
        }
    };
    logger::init(cli.log_level.filter());
    let code = match start::start(&cli) {
        Ok(setup) => daemon::Daemon::new(setup, single).run(),
        Err(e) => {
            log::error!("{}", e.message);
            e.code
        }
    };
    std::process::exit(code);
}
