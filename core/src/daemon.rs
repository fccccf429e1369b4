//! The single-threaded event loop: it owns the parts and dispatches events
//! to them. One epoll set (`events`) covers the signalfd (SIGCHLD, SIGTERM,
//! SIGINT, SIGHUP, all blocked, so nothing runs asynchronously), the core
//! socket and its connections (`link`), every listener that is served
//! (`listeners`, `accept`), and the status pipes of children not yet at
//! exec (`children`). Timers (bind retries, the accept pause, the
//! controller's restart, the SIGKILL of children asked to stop) become the
//! wait's timeout.
//!
//! A turn of the loop costs the same whatever the number of listeners:
//! a listener's registration is looked at only when something may have
//! changed it (it reported, a child of it ended, an apply, a bind retry,
//! the end of an accept pause), and the next bind retry is kept, not
//! searched for.
//!
//! Stopping (SIGTERM, SIGINT, or a fatal condition): the wait children and
//! the controller get SIGTERM, the listeners and the core socket are
//! closed, and the loop goes on, reaping, until every child asked to stop
//! has gone (SIGKILL after the grace). Only then does the core exit, so a
//! core started next binds every port at once. Nowait children are left to
//! finish.
#![forbid(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, Instant};

use inetd_protocol::{CoreRequest, CoreResponse};
use log::{debug, error, info, warn};
use nix::sys::signalfd::SignalFd;

use crate::accept::{self as accept, Acceptor};
use crate::apply::{self, CoreState};
use crate::children::{self, BuiltinIdle, ChildTable, Kind, Reaped, SetupFailure};
use crate::events::{self, Events, Tok};
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

/// From this many listeners on, exec children start on the core's
/// descriptor table and copy only its low part (see `sys::spawn`).
const MANY_LISTENERS: usize = 64;

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
    events: Events,
    /// Listeners whose registration may be out of date.
    dirty: Vec<ListenerId>,
    /// Every listener's may be (after an apply, a retry, a pause).
    all_dirty: bool,
    /// The earliest bind retry, as of the last look at every listener.
    retry_at: Option<Instant>,
    /// Accepting was paused at the end of the last turn.
    was_paused: bool,
    /// The core's total of children was reached at the end of the last turn.
    was_at_total: bool,
    /// The connections and status pipes registered, to forget the ones
    /// that went away.
    conns: Vec<(Tok, RawFd)>,
    statuses: Vec<(Tok, RawFd)>,
    scratch: Vec<(Tok, RawFd, u32)>,
    /// Kept for every SIGCHLD: the signals read, the children reaped.
    signals: Vec<i32>,
    reaped: Vec<Reaped>,
}

/// The sources looked at every turn.
#[derive(Clone, Copy)]
enum Watched {
    Conns,
    Statuses,
}

impl Daemon {
    pub fn new(setup: Setup, single: SingleThreaded) -> std::io::Result<Daemon> {
        let (socket, supervisor) = match setup.mode {
            Mode::Packaged(socket) => (Some(socket), None),
            Mode::OneCommand(plan) => (None, Some(Supervisor::new(plan))),
        };
        let grace = children::stop_grace(std::env::var(children::TEST_GRACE_ENV).ok().as_deref());
        Ok(Daemon {
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
            events: Events::new()?,
            dirty: Vec::new(),
            all_dirty: true,
            retry_at: None,
            was_paused: false,
            was_at_total: false,
            conns: Vec::new(),
            statuses: Vec::new(),
            scratch: Vec::new(),
            signals: Vec::with_capacity(8),
            reaped: Vec::with_capacity(16),
        })
    }

    /// Runs until SIGTERM or SIGINT (exit code 0) or a fatal condition,
    /// and then until the children asked to stop have gone.
    pub fn run(mut self) -> i32 {
        crate::logger::per_turn();
        let mut ready = Vec::new();
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
            self.sync_events();
            let timeout = self.next_deadline().map_or(-1, |d| {
                let ms = d.saturating_duration_since(Instant::now()).as_millis();
                // Round up so a timer is never woken for a little early.
                i32::try_from(ms + 1).unwrap_or(i32::MAX)
            });
            crate::logger::flush();
            ready.clear();
            if let Err(e) = self.events.wait(timeout, &mut ready) {
                error!("epoll_wait failed: {e}");
                self.quit = Some(1);
                break;
            }
            for &(tok, rev) in &ready {
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

    /// Brings the registrations up to date with what changed since the
    /// last turn (see the module's header).
    fn sync_events(&mut self) {
        let fd = self.sigfd.as_fd().as_raw_fd();
        self.want(Tok::Signal, Some(fd), events::IN);
        let fd = self.links.socket_fd();
        self.want(Tok::CoreListener, fd, events::IN);
        self.sync_conns();
        self.sync_statuses();
        let paused = self.acceptor.paused_until().is_some();
        // The core's total of children reached or left: every listener's
        // registration may change (rarely: at the total, 1,024 by default).
        let live = self.children.live_servers();
        let at_total = self.knobs.max_children.is_some_and(|m| live >= m);
        if paused != self.was_paused || at_total != self.was_at_total {
            self.was_paused = paused;
            self.was_at_total = at_total;
            self.all_dirty = true;
        }
        if self.all_dirty {
            self.all_dirty = false;
            self.dirty.clear();
            self.sync_all_listeners(paused);
        }
        while let Some(id) = self.dirty.pop() {
            self.sync_listener(id, paused);
        }
    }

    fn want(&mut self, tok: Tok, fd: Option<RawFd>, ev: u32) {
        let Some(fd) = fd else {
            self.events.forget(tok);
            return;
        };
        if let Err(e) = self.events.want(tok, fd, ev) {
            // Out of memory for the registration: the source is not watched
            // until it is wanted again, as after a failed accept.
            self.acceptor
                .pause(&format!("cannot watch a descriptor: {e}"));
        }
    }

    fn sync_listener(&mut self, id: ListenerId, paused: bool) {
        let total = self.children.live_servers();
        let mine = self.children.count_for(id);
        let Some(l) = self.listeners.get_mut(id) else {
            // Gone (closed): forgotten.
            self.events.forget(Tok::Listener(id));
            return;
        };
        // Its state may have changed: a pause or a rest to end in time.
        if let Some(t) = l.wake_at() {
            self.retry_at = Some(self.retry_at.map_or(t, |r| r.min(t)));
        }
        // At a children limit the listener is not served: its connections
        // wait in the kernel's backlog.
        let limited = accept::children_limit_reached(&l.spec().limits, mine, total, &self.knobs);
        match l.pollable() {
            // Not served now (a child holds it, or it failed): forgotten.
            None => self.events.forget(Tok::Listener(id)),
            // Accepting is paused, or a limit holds it: left disarmed.
            Some(fd) => {
                let ev = if paused || limited { 0 } else { events::IN };
                self.want(Tok::Listener(id), Some(fd), ev);
            }
        }
    }

    fn sync_all_listeners(&mut self, paused: bool) {
        let gone: Vec<Tok> = self
            .events
            .known()
            .filter(|t| match t {
                Tok::Listener(id) => self.listeners.get_mut(*id).is_none(),
                _ => false,
            })
            .collect();
        for t in gone {
            self.events.forget(t);
        }
        let ids: Vec<ListenerId> = self.listeners.iter().map(|(id, _)| id).collect();
        // Each listener's next wake-up is folded in as it is looked at.
        self.retry_at = None;
        for id in ids {
            self.sync_listener(id, paused);
        }
        let many = self.listeners.iter().nth(MANY_LISTENERS).is_some();
        self.children.set_many_listeners(many);
    }

    /// The core socket's connections: few, looked at every turn.
    fn sync_conns(&mut self) {
        let mut now = std::mem::take(&mut self.scratch);
        now.clear();
        now.extend(self.links.conn_fds().map(|(id, fd, ev)| {
            let ev = if ev & sys::POLLOUT != 0 {
                events::OUT
            } else {
                events::IN
            };
            (Tok::Conn(id), fd, ev)
        }));
        self.replace_watched(Watched::Conns, &now);
        self.scratch = now;
    }

    /// The status pipes of children not yet at exec: as many as children
    /// are starting, looked at every turn.
    fn sync_statuses(&mut self) {
        let mut now = std::mem::take(&mut self.scratch);
        now.clear();
        now.extend(
            self.children
                .status_fds()
                .map(|(pid, fd)| (Tok::Status(pid), fd, events::IN)),
        );
        self.replace_watched(Watched::Statuses, &now);
        self.scratch = now;
    }

    /// Watches exactly `now` among the connections or the status pipes.
    fn replace_watched(&mut self, which: Watched, now: &[(Tok, RawFd, u32)]) {
        let mut was = std::mem::take(match which {
            Watched::Conns => &mut self.conns,
            Watched::Statuses => &mut self.statuses,
        });
        for &(tok, fd) in &was {
            if !now.iter().any(|&(t, f, _)| t == tok && f == fd) {
                self.events.forget(tok);
            }
        }
        was.clear();
        for &(tok, fd, ev) in now {
            was.push((tok, fd));
            self.want(tok, Some(fd), ev);
        }
        match which {
            Watched::Conns => self.conns = was,
            Watched::Statuses => self.statuses = was,
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
            self.retry_at,
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
        if self.retry_at.is_some_and(|t| t <= now) {
            self.listeners.retry_due(now, self.core.uid);
            self.all_dirty = true;
        }
        if let Some(sup) = &mut self.supervisor {
            if sup.restart_at().is_some_and(|t| t <= now)
                && sup.start(&mut self.children, &mut self.links).is_err()
            {
                self.quit = Some(1);
            }
        }
    }

    fn on_listener(&mut self, id: ListenerId) {
        self.dirty.push(id);
        if self.acceptor.paused_until().is_some() {
            return;
        }
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
        self.dirty.push(id);
        if let Some(l) = self.listeners.get_mut(id) {
            l.counters.exec_failures += 1;
            l.last_error = Some(format!("{what} at {step}{err_text}"));
            l.discard_pending();
        }
    }

    fn reap(&mut self) {
        let mut reaped = std::mem::take(&mut self.reaped);
        self.children.reap(&mut reaped);
        for r in reaped.drain(..) {
            if let Some(f) = &r.failure {
                self.child_failed(f);
            }
            self.child_ended(r);
        }
        self.reaped = reaped;
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
                // Its children limit, or its state, may have changed.
                self.dirty.push(id);
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
        let mut sigs = std::mem::take(&mut self.signals);
        sigs.clear();
        if let Err(e) = sys::read_signals(&self.sigfd, &mut sigs) {
            error!("reading the signalfd failed: {e}");
        }
        for &s in &sigs {
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
        self.signals = sigs;
    }

    /// The core stops: the children that must go with it (wait children,
    /// the controller) get SIGTERM, the listeners and the core socket are
    /// closed. Returns (and keeps) when the core exits whatever is left.
    fn begin_stop(&mut self) -> Instant {
        self.children.stop_all();
        self.listeners.close_all();
        self.all_dirty = true;
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
    /// listeners, and the next request is read when epoll says so again
    /// (the registration is armed again after each turn).
    fn on_conn(&mut self, cid: ConnId, rev: u32) {
        let readable = rev & (events::IN | events::ERR_HUP) != 0;
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
            CoreRequest::Apply { listeners } => {
                self.all_dirty = true;
                let r = apply::apply(
                    &mut self.core,
                    &mut self.listeners,
                    &mut self.children,
                    listeners,
                );
                // The request, the plan and the old specs are freed now:
                // their pages go back to the system instead of staying
                // resident in the free lists until the next `Apply`.
                sys::release_free_memory();
                r
            }
            CoreRequest::Status => CoreResponse::Status(apply::status(
                &self.core,
                &self.listeners,
                &self.children,
                self.acceptor.paused_until(),
            )),
        }
    }
}
