//! inetd-core: the privileged half of inetd.
//!
//! Process model. The core is one single-threaded process that runs in the
//! foreground and logs to stderr. At start, as root, it resolves the
//! controller user (once, from its own command line), makes its runtime
//! directories and its core socket, then cuts its capabilities to
//! NET_BIND_SERVICE, SETUID, SETGID and KILL. After that it only reacts,
//! in one epoll loop, to:
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
//!   the listeners and exit once the wait children have gone (SIGTERM to
//!   their process groups, SIGKILL after 5 s; nowait servers keep
//!   running), SIGHUP is ignored in packaged mode and forwarded to the
//!   controller in one-command mode.
//!
//! A wait child holds its listener, so it goes with it: on removal, on a
//! change, and when the core stops (`children` says how a group is
//! signalled without ever reaching a reused id).
//!
//! The core never reads configuration and never resolves names on a
//! request's behalf; it trusts nothing the controller sends. All unsafe
//! code and system calls are in `sys`; every other module forbids unsafe.
//! docs/core-internals.md describes the modules and what each owns.
//!
//! Root audit. A review of what runs as root reads the files below; the
//! numbers are non-test lines (each file up to its `#[cfg(test)]`), and a
//! test holds the list to the tree. Start with `sys/` (every unsafe block
//! and system call) and `validate.rs` (everything taken from the
//! controller), then `daemon.rs`, the loop that dispatches to the rest.
//! The builtins run only in a child that has dropped to the service's ids,
//! in a crate of their own that cannot reach the code of this one.
//!
//! root, this process: core/src: 9422 lines
//!     accept.rs 481, admission.rs 124, apply.rs 336, backoff.rs 56
//!     children.rs 535, cli.rs 264, daemon.rs 579, events.rs 242
//!     exec_path.rs 4, limits.rs 402, link.rs 497, logger.rs 203, main.rs 134
//!     notify.rs 53, peer.rs 84, plan.rs 88, reply.rs 99, start.rs 593
//!     supervisor.rs 263, syslog.rs 63, validate.rs 373
//!     listeners/listener.rs 470, listeners/mod.rs 266, sys/caps.rs 176
//!     sys/child.rs 574, sys/epoll.rs 110, sys/inherit.rs 134, sys/mod.rs 557
//!     sys/net.rs 219, sys/raw.rs 171, sys/resident.rs 72, sys/slot.rs 259
//!     sys/spawn.rs 496, sys/status.rs 138, sys/title.rs 59
//!     sys/unixsock.rs 248
//! root too, shared with the controller (pure, fuzzed): protocol/src: 1190 lines
//!     codec.rs 225, error.rs 68, lib.rs 88, local.rs 44, policy.rs 257
//!     text.rs 69, types.rs 439
//! the service user only, after the privilege drop: core/builtins/src: 1042 lines
//!     answers.rs 53, clock.rs 113, dgram.rs 346, lib.rs 159, limiter.rs 126
//!     sockio.rs 122, stream.rs 123
#![deny(unsafe_code)]

mod accept;
mod admission;
mod apply;
mod backoff;
mod children;
mod cli;
mod daemon;
mod events;
mod exec_path;
mod limits;
mod link;
mod listeners;
mod logger;
mod notify;
mod peer;
mod plan;
mod reply;
mod start;
mod supervisor;
mod sys;
mod syslog;
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
    logger::init(
        cli.log_level.parse().unwrap_or(log::LevelFilter::Info),
        cli.syslog,
    );
    let code = match start::start(&cli) {
        Ok(setup) => match daemon::Daemon::new(setup, single) {
            Ok(d) => d.run(),
            Err(e) => {
                log::error!("cannot make the epoll set: {e}");
                1
            }
        },
        Err(e) => {
            log::error!("{}", e.message);
            e.code
        }
    };
    logger::flush();
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Non-test lines of every `.rs` file under `dir` but `skip`, by path
    /// relative to it (top level first): the lines before the first
    /// `#[cfg(test)]`.
    fn counts(dir: &Path, skip: &[&str]) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    todo.push(p);
                    continue;
                }
                let rel = p.strip_prefix(dir).unwrap().to_str().unwrap().to_owned();
                if !rel.ends_with(".rs") || skip.contains(&rel.as_str()) {
                    continue;
                }
                let text = std::fs::read_to_string(&p).unwrap();
                let n = text
                    .lines()
                    .take_while(|l| !l.starts_with("#[cfg(test)]"))
                    .count();
                out.push((rel, n));
            }
        }
        out.sort_by(|a, b| (a.0.matches('/').count(), &a.0).cmp(&(b.0.matches('/').count(), &b.0)));
        out
    }

    /// The audit list as the header must hold it, from the tree.
    fn expected() -> String {
        let core = Path::new(env!("CARGO_MANIFEST_DIR"));
        let sections = [
            ("root, this process: core/src", core.join("src"), &[][..]),
            (
                "root too, shared with the controller (pure, fuzzed): protocol/src",
                core.join("../protocol/src"),
                &["control.rs"][..],
            ),
            (
                "the service user only, after the privilege drop: core/builtins/src",
                core.join("builtins/src"),
                &["tests.rs"][..],
            ),
        ];
        let mut out = String::new();
        for (title, dir, skip) in sections {
            let files = counts(&dir, skip);
            let total: usize = files.iter().map(|f| f.1).sum();
            out.push_str(&format!("//! {title}: {total} lines\n"));
            let mut line = String::from("//!    ");
            for (name, n) in files {
                let item = format!("{name} {n}");
                if line.len() + item.len() + 2 > 79 {
                    out.push_str(line.trim_end_matches(','));
                    out.push('\n');
                    line = String::from("//!    ");
                }
                line.push_str(&format!(" {item},"));
            }
            out.push_str(line.trim_end_matches(','));
            out.push('\n');
        }
        out
    }

    #[test]
    fn the_audit_list_adds_up() {
        let header: String = include_str!("main.rs")
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .skip_while(|l| !l.starts_with("//! root, this process"))
            .map(|l| format!("{l}\n"))
            .collect();
        let want = expected();
        assert!(
            header == want,
            "the audit list in core/src/main.rs is out of date; it should read:\n{want}"
        );
    }
}

/// The protocol tests' samples: one message of every kind.
#[cfg(test)]
#[path = "../../protocol/tests/samples/mod.rs"]
mod samples;
