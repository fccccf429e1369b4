//! The core's state and its single-threaded poll loop.
//!
//! One `poll` covers: the signalfd (SIGCHLD, SIGTERM, SIGINT, SIGHUP, all
//! blocked, so nothing runs asynchronously), the core socket's listener and
//! connections (packaged mode) or the controller's socketpair (one-command
//! mode), every listener that is `Listening`, and the status pipe of every
//! child that has not reached exec yet. Timers (bind retries, the accept
//! pause, the controller restart) become the poll timeout.
//!
//! Invariants:
//! * a listener is polled only in state `Listening` and outside an accept
//!   pause (see `listeners` and `accept`);
//! * every child is in the child table from fork until it is reaped (see
//!   `children`);
//! * a core connection is read only when its previous answer has been
//!   written out: one request, one response, and a slow reader cannot make
//!   the core buffer more than one answer.
#![forbid(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use inetd_protocol::CoreResponse;
use log::{error, info, warn};
use nix::sys::signalfd::SignalFd;

use crate::accept::Acceptor;
use crate::apply::{self, CoreState};
use crate::backoff::{self, Backoff};
use crate::children::{ChildTable, Kind, Reaped, SetupFailure};
use crate::link::{ConnId, CoreSocket, Links, Request};
use crate::listeners::{ListenerId, ListenerTable};
use crate::sys::child::SingleThreaded;
use crate::sys::{self, ExitStatus};
use crate::validate::{CorePolicy, ExecImage, Identity};

/// A controller that dies this many times in a row before its Hello makes
/// a one-command core give up.
const CONTROLLER_MAX_EARLY_FAILURES: u32 = 3;

/// How long a one-command core waits for its controller to exit at
/// shutdown before killing it.
const CONTROLLER_STOP_WAIT: Duration = Duration::from_secs(5);

/// Everything the daemon needs from start-up.
pub struct Setup {
    pub policy: CorePolicy,
    pub dgram_idle: Duration,
    pub devnull: OwnedFd,
    pub sigfd: SignalFd,
    pub mode: Mode,
}

pub enum Mode {
    /// Serve the controllers that connect to the core socket.
    Packaged(CoreSocket),
    /// Start and supervise inetd-controller on a socketpair.
    OneCommand(ControllerPlan),
}

/// How to start the controller child (one-command mode), prepared once.
pub struct ControllerPlan {
    pub identity: Identity,
    pub image: ExecImage,
}

struct CtlState {
    plan: ControllerPlan,
    pid: Option<i32>,
    conn: Option<ConnId>,
    reached: bool,
    failures: u32,
    restart_at: Option<Instant>,
    backoff: Backoff,
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
    devnull: OwnedFd,
    sigfd: SignalFd,
    links: Links,
    listeners: ListenerTable,
    children: ChildTable,
    acceptor: Acceptor,
    ctl: Option<CtlState>,
    quit: Option<i32>,
}

impl Daemon {
    pub fn new(setup: Setup, single: SingleThreaded) -> Daemon {
        let (socket, ctl) = match setup.mode {
            Mode::Packaged(socket) => (Some(socket), None),
            Mode::OneCommand(plan) => (
                None,
                Some(CtlState {
                    plan,
                    pid: None,
                    conn: None,
                    reached: false,
                    failures: 0,
                    restart_at: Some(Instant::now()),
                    backoff: Backoff::new(
                        backoff::CONTROLLER_RESTART_FIRST,
                        backoff::CONTROLLER_RESTART_MAX,
                    ),
                }),
            ),
        };
        Daemon {
            core: CoreState::new(setup.policy),
            devnull: setup.devnull,
            sigfd: setup.sigfd,
            links: Links::new(socket),
            listeners: ListenerTable::default(),
            children: ChildTable::new(single, setup.dgram_idle),
            acceptor: Acceptor::default(),
            ctl,
            quit: None,
        }
    }

    /// Runs until SIGTERM or SIGINT (exit code 0) or a fatal condition.
    pub fn run(mut self) -> i32 {
        let mut entries = Vec::new();
        let mut toks = Vec::new();
        while self.quit.is_none() {
            let now = Instant::now();
            self.run_timers(now);
            if self.quit.is_some() {
                break;
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
                if self.quit.is_some() {
                    break;
                }
            }
        }
        let code = self.quit.unwrap_or(0);
        self.shutdown();
        code
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
            for (id, l) in self.listeners.iter() {
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
        [
            self.acceptor.paused_until(),
            self.listeners.next_retry(),
            self.ctl.as_ref().and_then(|c| c.restart_at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn run_timers(&mut self, now: Instant) {
        self.acceptor.tick(now);
        for (id, attempt) in self.listeners.due_retries(now) {
            self.retry_bind(id, attempt);
        }
        if self
            .ctl
            .as_ref()
            .is_some_and(|c| c.restart_at.is_some_and(|t| t <= now))
        {
            self.start_controller();
        }
    }

    // ---- listeners -------------------------------------------------------

    fn retry_bind(&mut self, id: ListenerId, attempt: u32) {
        let uid = self.core.policy.uid;
        let Some(l) = self.listeners.get_mut(id) else {
            return;
        };
        match l.bind(uid, attempt) {
            Ok(()) => info!(
                "listening again service=\"{}\" after {attempt} retries",
                l.label()
            ),
            Err(e) => {
                let next = backoff::bind_retry_delay(attempt).as_secs();
                warn!(
                    "bind failed again service=\"{}\": {}; next retry in {next} s",
                    l.label(),
                    e.reason()
                );
            }
        }
    }

    fn on_listener(&mut self, id: ListenerId) {
        if let Some((l, ports)) = self.listeners.get_mut_with_ports(id) {
            self.acceptor.serve(id, l, ports, &mut self.children);
        }
    }

    // ---- children --------------------------------------------------------

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
        error!(
            "{what} service=\"{}\" pid={pid} step={step}{err_text}",
            f.label
        );
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
            Kind::Controller => self.controller_exited(pid, status, r.started),
            Kind::Server(id) => {
                info!("exit service=\"{}\" pid={pid} status={status}", r.label);
                if let Some(l) = self.listeners.get_mut(id) {
                    l.release(pid);
                }
            }
        }
    }

    // ---- the controller child (one-command mode) -------------------------

    fn start_controller(&mut self) {
        let Some(ctl) = self.ctl.as_mut() else { return };
        ctl.restart_at = None;
        let (ours, theirs) = match UnixStream::pair() {
            Ok(p) => p,
            Err(e) => {
                error!("cannot make the controller's socketpair: {e}");
                self.controller_failed_early();
                return;
            }
        };
        if let Err(e) = ours.set_nonblocking(true) {
            error!("cannot make the controller's socketpair nonblocking: {e}");
            self.controller_failed_early();
            return;
        }
        let dn = self.devnull.as_raw_fd();
        // stdin and stdout on /dev/null, the core's stderr, the link on 3.
        let fds = [dn, dn, 2, theirs.as_raw_fd()];
        let r = self
            .children
            .spawn_controller(&ctl.plan.identity, &ctl.plan.image, &fds);
        drop(theirs);
        match r {
            Ok(pid) => {
                let uid = ctl.plan.identity.uid();
                ctl.pid = Some(pid);
                ctl.reached = false;
                ctl.conn = Some(self.links.add_controller_link(ours, pid));
                info!("started inetd-controller pid={pid} as uid {uid}");
            }
            Err(e) => {
                error!("cannot start inetd-controller: {e}");
                self.controller_failed_early();
            }
        }
    }

    /// The controller died (or could not start) before its Hello.
    fn controller_failed_early(&mut self) {
        let Some(ctl) = self.ctl.as_mut() else { return };
        ctl.failures += 1;
        if ctl.failures >= CONTROLLER_MAX_EARLY_FAILURES {
            error!(
                "inetd-controller failed {} times in a row before reaching the core; giving up",
                ctl.failures
            );
            self.quit = Some(1);
            return;
        }
        let d = ctl.backoff.next_delay();
        ctl.restart_at = Some(Instant::now() + d);
        warn!("restarting inetd-controller in {} s", d.as_secs_f32());
    }

    fn controller_exited(&mut self, pid: i32, status: ExitStatus, started: Instant) {
        let Some(ctl) = self.ctl.as_mut() else { return };
        if ctl.pid != Some(pid) {
            return;
        }
        ctl.pid = None;
        let cid = ctl.conn.take();
        let reached = ctl.reached;
        if let Some(cid) = cid {
            self.links.remove(cid);
        }
        if self.quit.is_some() {
            return;
        }
        warn!("inetd-controller pid={pid} ended: {status}");
        if !reached {
            self.controller_failed_early();
            return;
        }
        let ctl = self.ctl.as_mut().expect("checked");
        ctl.failures = 0;
        if started.elapsed() >= Duration::from_secs(60) {
            ctl.backoff.reset();
        }
        let d = ctl.backoff.next_delay();
        ctl.restart_at = Some(Instant::now() + d);
        info!(
            "restarting inetd-controller in {} s; listeners keep serving meanwhile",
            d.as_secs_f32()
        );
    }

    // ---- signals ---------------------------------------------------------

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
                libc::SIGTERM | libc::SIGINT => {
                    info!("signal {s}: closing listeners and exiting; running servers are left alone");
                    self.quit = Some(0);
                }
                libc::SIGHUP => match self.ctl.as_ref().and_then(|c| c.pid) {
                    Some(pid) => {
                        info!("SIGHUP: forwarded to inetd-controller pid={pid} (reload)");
                        if let Err(e) = sys::kill(pid, libc::SIGHUP) {
                            warn!("cannot forward SIGHUP to the controller: {e}");
                        }
                    }
                    None if self.ctl.is_some() => {
                        warn!("SIGHUP: no controller running to reload");
                    }
                    None => info!(
                        "SIGHUP ignored: reloading is the controller's job (inetctl reload, or SIGHUP to inetd-controller)"
                    ),
                },
                _ => {}
            }
        }
    }

    fn shutdown(&mut self) {
        if let Some(pid) = self.ctl.as_ref().and_then(|c| c.pid) {
            let _ = sys::kill(pid, libc::SIGTERM);
            let deadline = Instant::now() + CONTROLLER_STOP_WAIT;
            let mut gone = false;
            while Instant::now() < deadline {
                self.reap();
                if self.ctl.as_ref().and_then(|c| c.pid).is_none() {
                    gone = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !gone {
                warn!("inetd-controller pid={pid} did not stop; killing it");
                let _ = sys::kill(pid, libc::SIGKILL);
                while self.ctl.as_ref().and_then(|c| c.pid).is_some()
                    && Instant::now() < deadline + CONTROLLER_STOP_WAIT
                {
                    self.reap();
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        self.listeners.close_all();
        self.links.close_all();
        info!("exiting");
    }

    // ---- the core socket -------------------------------------------------

    fn on_core_listener(&mut self) {
        if let Err(why) = self.links.accept() {
            self.acceptor.pause(&why);
        }
    }

    fn on_conn(&mut self, cid: ConnId, rev: i16) {
        let mut readable = rev & (sys::POLLIN | sys::POLLHUP | sys::POLLERR | sys::POLLNVAL) != 0;
        while let Some(req) = self.links.next_request(cid, readable) {
            let resp = self.answer(req);
            self.links.answer(cid, &resp);
            readable = true;
        }
    }

    fn answer(&mut self, req: Request) -> CoreResponse {
        match req {
            Request::Hello { controller_link } => {
                if controller_link {
                    if let Some(ctl) = self.ctl.as_mut() {
                        ctl.reached = true;
                        ctl.failures = 0;
                    }
                }
                CoreResponse::Hello(self.core.hello_reply())
            }
            Request::Apply(requested) => apply::apply(
                &mut self.core,
                &mut self.listeners,
                &self.children,
                requested,
            ),
            Request::Status => CoreResponse::Status(apply::status(
                &self.core,
                &self.listeners,
                &self.children,
                self.acceptor.paused_until(),
            )),
        }
    }
}
