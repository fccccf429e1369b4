//! The single-threaded poll loop: it owns the parts and dispatches events to
//! them. One `poll` covers the signalfd (SIGCHLD, SIGTERM, SIGINT, SIGHUP,
//! all blocked, so nothing runs asynchronously), the core socket and its
//! connections (`link`), every listener that is polled (`listeners`,
//! `accept`), and the status pipes of children not yet at exec
//! (`children`). Timers (bind retries, the accept pause, the controller's
//! restart, the SIGKILL of children asked to stop) become the poll
//! timeout.
//!
//! Stopping (SIGTERM, SIGINT, or a fatal condition): the wait children and
//! the controller get SIGTERM, the listeners and the core socket are
//! closed, and the loop goes on, reaping, until every child asked to stop
//! has gone (SIGKILL after the grace). Only then does the core exit, so a
//! core started next binds every port at once. Nowait children are left to
//! finish.
#![forbid(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use inetd_protocol::{CoreRequest, CoreResponse};
use log::{debug, error, info, warn};
use nix::sys::signalfd::SignalFd;

use crate::accept::{self as accept, Acceptor};
use crate::apply::{self, CoreState};
use crate::children::{self, BuiltinIdle, ChildTable, Kind, Reaped, SetupFailure};
use crate::limits::Knobs;
use crate::link::{ConnId, CoreSocket, Links};
use crate::listeners::{ListenerId, ListenerTable};
use crate::supervisor::{ControllerPlan, Supervisor};
use crate::sys::child::SingleThreaded;
use crate::sys::{self, ExitStatus};

/// How long the core waits, after the SIGKILL at the end of the grace, for
/// what it killed to be reaped, before it exits all the same (a process
/// stuck in the kernel does not hold the core forever).
const AFTER_KILL_WAIT: Duration = Duration::from_secs(2);

/// Everything the daemon needs from start-up.
pub struct Setup {
    pub policy: inetd_protocol::Policy,
    /// The core's own uid.
    pub uid: u32,
    pub idle: BuiltinIdle,
    pub knobs: Knobs,
    pub sigfd: SignalFd,
    pub mode: Mode,
}

pub enum Mode {
    /// Serve the controllers that connect to the core socket.
    Packaged(CoreSocket),
    /// Start and supervise inetd-controller on a socketpair.
    OneCommand(ControllerPlan),
}

#[derive(Debug, Clone, Copy)]
enum Tok {
    Signal,
    CoreListener,
    Conn(ConnId),
    Listener(ListenerId),
    Status(i32),
}

pub struct Daemon {
    core: CoreState,
    sigfd: SignalFd,
    links: Links,
    listeners: ListenerTable,
    children: ChildTable,
    acceptor: Acceptor,
    knobs: Knobs,
    supervisor: Option<Supervisor>,
    quit: Option<i32>,
    /// Once stopping: when the core exits whatever is left.
    exit_by: Option<Instant>,
}

impl Daemon {
    pub fn new(setup: Setup, single: SingleThreaded) -> Daemon {
        let (socket, supervisor) = match setup.mode {
            Mode::Packaged(socket) => (Some(socket), None),
            Mode::OneCommand(plan) => (None, Some(Supervisor::new(plan))),
        };
        let grace = children::stop_grace(std::env::var(children::TEST_GRACE_ENV).ok().as_deref());
        Daemon {
            core: CoreState::new(setup.policy, setup.uid),
            sigfd: setup.sigfd,
            links: Links::new(socket),
            listeners: ListenerTable::default(),
            children: ChildTable::new(single, setup.idle, grace),
            acceptor: Acceptor::default(),
            knobs: setup.knobs,
            supervisor,
            quit: None,
            exit_by: None,
        }
    }

    /// Runs until SIGTERM or SIGINT (exit code 0) or a fatal condition,
    /// and then until the children asked to stop have gone.
    pub fn run(mut self) -> i32 {
        let mut entries = Vec::new();
        let mut toks = Vec::new();
        loop {
            let now = Instant::now();
            self.run_timers(now);
            if self.quit.is_some() {
                let exit_by = match self.exit_by {
                    Some(t) => t,
                    None => self.begin_stop(),
                };
                if self.children.stopping() == 0 {
                    break;
                }
                if now >= exit_by {
                    warn!(
                        "{} children asked to stop have not been reaped after SIGKILL; exiting all the same",
                        self.children.stopping()
                    );
                    break;
                }
            }
            entries.clear();
            toks.clear();
            self.build_poll_set(&mut entries, &mut toks);
            let timeout = self.next_deadline().map_or(-1, |d| {
                let ms = d.saturating_duration_since(Instant::now()).as_millis();
                // Round up so a timer is never woken for a little early.
                i32::try_from(ms + 1).unwrap_or(i32::MAX)
            });
            match sys::poll(&mut entries, timeout) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(e) => {
                    error!("poll failed: {e}");
                    self.quit = Some(1);
                    break;
                }
            }
            let ready: Vec<(Tok, i16)> = entries
                .iter()
                .zip(toks.iter())
                .filter(|(e, _)| e.revents != 0)
                .map(|(e, t)| (*t, e.revents))
                .collect();
            for (tok, rev) in ready {
                match tok {
                    Tok::Signal => self.on_signals(),
                    Tok::CoreListener => self.on_core_listener(),
                    Tok::Conn(id) => self.on_conn(id, rev),
                    Tok::Listener(id) => self.on_listener(id),
                    Tok::Status(pid) => self.on_status(pid),
                }
                // Stopping starts at the top of the loop: nothing more is
                // accepted or answered in this round.
                if self.quit.is_some() && self.exit_by.is_none() {
                    break;
                }
            }
        }
        self.finish();
        self.quit.unwrap_or(0)
    }

    fn build_poll_set(&self, entries: &mut Vec<sys::PollEntry>, toks: &mut Vec<Tok>) {
        entries.push(sys::poll_entry(self.sigfd.as_fd().as_raw_fd(), sys::POLLIN));
        toks.push(Tok::Signal);
        if let Some(fd) = self.links.socket_fd() {
            entries.push(sys::poll_entry(fd, sys::POLLIN));
            toks.push(Tok::CoreListener);
        }
        for (id, fd, ev) in self.links.conn_fds() {
            entries.push(sys::poll_entry(fd, ev));
            toks.push(Tok::Conn(id));
        }
        if self.acceptor.paused_until().is_none() {
            let total = self.children.live_servers();
            for (id, l) in self.listeners.iter() {
                // At a children limit the listener is not polled: its
                // connections wait in the kernel's backlog.
                let mine = self.children.count_for(id);
                if accept::children_limit_reached(&l.spec().limits, mine, total, &self.knobs) {
                    continue;
                }
                if let Some(fd) = l.pollable() {
                    entries.push(sys::poll_entry(fd, sys::POLLIN));
                    toks.push(Tok::Listener(id));
                }
            }
        }
        for (pid, fd) in self.children.status_fds() {
            entries.push(sys::poll_entry(fd, sys::POLLIN));
            toks.push(Tok::Status(pid));
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        if self.exit_by.is_some() {
            return [self.children.next_kill(), self.exit_by]
                .into_iter()
                .flatten()
                .min();
        }
        [
            self.acceptor.paused_until(),
            self.listeners.next_retry(),
            self.supervisor.as_ref().and_then(Supervisor::restart_at),
            self.children.next_kill(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn run_timers(&mut self, now: Instant) {
        self.children.kill_due(Some(now));
        if self.quit.is_some() {
            return;
        }
        self.acceptor.tick(now);
        self.listeners.retry_due(now, self.core.uid);
        if let Some(sup) = &mut self.supervisor {
            if sup.restart_at().is_some_and(|t| t <= now)
                && sup.start(&mut self.children, &mut self.links).is_err()
            {
                self.quit = Some(1);
            }
        }
    }

    fn on_listener(&mut self, id: ListenerId) {
        if let Some((l, ports)) = self.listeners.get_mut_with_ports(id) {
            self.acceptor
                .serve(id, l, ports, &mut self.children, &self.knobs);
        }
    }

    fn on_status(&mut self, pid: i32) {
        if let Some(f) = self.children.on_status(pid) {
            self.child_failed(&f);
        }
    }

    /// A child failed before exec (or its builtin): logged, counted.
    fn child_failed(&mut self, f: &SetupFailure) {
        let (pid, what, err_text) = (f.pid, f.what(), f.err_text());
        let step = f.step.name();
        let id = match f.kind {
            Kind::Controller => {
                error!("cannot start inetd-controller (pid {pid}): {what} at {step}{err_text}");
                return;
            }
            Kind::Server(id) => id,
        };
        error!("{}: {what}, pid {pid}, step={step}{err_text}", f.label);
        if let Some(l) = self.listeners.get_mut(id) {
            l.counters.exec_failures += 1;
            l.last_error = Some(format!("{what} at {step}{err_text}"));
            l.discard_pending();
        }
    }

    fn reap(&mut self) {
        for r in self.children.reap() {
            if let Some(f) = &r.failure {
                self.child_failed(f);
            }
            self.child_ended(r);
        }
    }

    fn child_ended(&mut self, r: Reaped) {
        let (pid, status) = (r.pid, r.status);
        match r.kind {
            Kind::Controller => {
                let stopping = self.quit.is_some();
                if let Some(sup) = &mut self.supervisor {
                    if sup
                        .exited(pid, status, r.started, &mut self.links, stopping)
                        .is_err()
                    {
                        self.quit = Some(1);
                    }
                }
            }
            Kind::Server(id) => {
                // A normal exit is routine (the connection line said what
                // matters); a failure is worth a look; one the core asked
                // for (SIGTERM to a wait server whose listener went) is
                // neither.
                if status == ExitStatus::Exited(0) {
                    debug!("{}: pid {pid} ended: {status}", r.label);
                } else if r.stopped {
                    info!("{}: pid {pid} stopped: {status}", r.label);
                } else {
                    warn!("{}: pid {pid} failed: {status}", r.label);
                }
                if let Some(l) = self.listeners.get_mut(id) {
                    l.limits.child_ended(pid);
                    if !l.held_by(pid) {
                        return;
                    }
                    // A wait server failed if it exited with a status other
                    // than 0, or left a connection waiting on its socket.
                    let failed =
                        !matches!(status, sys::ExitStatus::Exited(0)) || l.connection_waiting();
                    if let Some(d) = l.wait_ended(pid, failed, Instant::now(), &self.knobs) {
                        warn!(
                            "{}: failed: {} wait servers failed within {} s; not started again for {} s",
                            l.label(),
                            crate::limits::WAIT_FAILURES,
                            self.knobs.window.as_secs(),
                            d.as_secs()
                        );
                    }
                }
            }
        }
    }

    fn on_signals(&mut self) {
        let sigs = match sys::read_signals(&self.sigfd) {
            Ok(s) => s,
            Err(e) => {
                error!("reading the signalfd failed: {e}");
                return;
            }
        };
        for s in sigs {
            match s {
                libc::SIGCHLD => self.reap(),
                libc::SIGTERM | libc::SIGINT if self.quit.is_none() => {
                    info!("signal {s}: closing listeners and exiting; wait servers go with their listeners, nowait servers are left to finish");
                    self.quit = Some(0);
                }
                libc::SIGTERM | libc::SIGINT => info!("signal {s}: already stopping"),
                libc::SIGHUP => match &self.supervisor {
                    Some(sup) => sup.forward_hup(&self.children),
                    None => info!(
                        "SIGHUP ignored: reloading is the controller's job (inetctl reload, or SIGHUP to inetd-controller)"
                    ),
                },
                _ => {}
            }
        }
    }

    /// The core stops: the children that must go with it (wait children,
    /// the controller) get SIGTERM, the listeners and the core socket are
    /// closed. Returns (and keeps) when the core exits whatever is left.
    fn begin_stop(&mut self) -> Instant {
        self.children.stop_all();
        self.listeners.close_all();
        self.links.close_all();
        let left = self.children.stopping();
        if left > 0 {
            info!("stopping: waiting for {left} children (wait servers, the controller); nowait servers are left to finish");
        }
        let exit_by = Instant::now() + self.children.grace() + AFTER_KILL_WAIT;
        self.exit_by = Some(exit_by);
        exit_by
    }

    /// After the loop: whatever was asked to stop and is still there gets
    /// SIGKILL (after a poll failure, the grace is not waited for).
    fn finish(&mut self) {
        if self.exit_by.is_none() {
            self.begin_stop();
        }
        self.children.kill_due(None);
        info!("exiting");
    }

    fn on_core_listener(&mut self) {
        if let Err(why) = self.links.accept() {
            self.acceptor.pause(&why);
        }
    }

    /// Serves at most one request of the connection per turn of the loop:
    /// a controller that streams requests waits its turn behind the
    /// listeners, and the next request is read when poll says so again.
    fn on_conn(&mut self, cid: ConnId, rev: i16) {
        let readable = rev & (sys::POLLIN | sys::POLLHUP | sys::POLLERR | sys::POLLNVAL) != 0;
        if let Some((req, controller_link)) = self.links.next_request(cid, readable) {
            let resp = self.answer(req, controller_link);
            self.links.answer(cid, resp);
        }
    }

    fn answer(&mut self, req: CoreRequest, controller_link: bool) -> CoreResponse {
        match req {
            CoreRequest::Hello { .. } => {
                if controller_link {
                    if let Some(sup) = &mut self.supervisor {
                        sup.hello();
                    }
                }
                CoreResponse::Hello(self.core.hello_reply())
            }
            CoreRequest::Apply { listeners } => apply::apply(
                &mut self.core,
                &mut self.listeners,
                &mut self.children,
                listeners,
            ),
            CoreRequest::Status => CoreResponse::Status(apply::status(
                &self.core,
                &self.listeners,
                &self.children,
                self.acceptor.paused_until(),
            )),
        }
    }
}
