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
//!   pause; a `wait` listener is `Waiting` from the fork of its child until
//!   that child is reaped;
//! * every child is in `children` from fork until it is reaped, so a pid
//!   the core signals (only the controller) cannot have been reused;
//! * a core connection is read only when its previous answer has been
//!   written out: one request, one response, and a slow reader cannot make
//!   the core buffer more than one answer.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use inetd_builtins::{self as builtins, UdpGuard};
use inetd_protocol::{
    check_apply, decode_payload, encode_frame, escape_log, unix_now, ApplyReport, Bind, BindKey,
    ChildInfo, CoreRequest, CoreResponse, Counters, FrameBuf, HelloReply, IpMode, ListenerSpec,
    ListenerState, ListenerStatus, Outcome, Policy, ProtocolError, Removed, SocketType,
    StatusReport, PROTOCOL_VERSION,
};
use log::{debug, error, info, warn};
use nix::sys::signalfd::SignalFd;

use crate::backoff::{self, Backoff};
use crate::peer;
use crate::plan::{self, Step};
use crate::sys::child::{self, ChildStatus, SingleThreaded, StatusPipe};
use crate::sys::net::{self, AcceptError, Family, Kind};
use crate::sys::unixsock::{self, SocketFile, UnixError};
use crate::sys::{self, ExitStatus};
use crate::validate::{validate, CorePolicy, ExecImage, Identity, Prepared, Program};

/// Most simultaneous core connections; more are accepted and closed at
/// once with a log line.
pub const MAX_CORE_CONNS: usize = 16;

/// Most connections accepted from one listener per poll round, so one busy
/// listener cannot starve the others.
const ACCEPT_BATCH: usize = 16;

/// How long labels may get in log lines.
const LOG_LABEL: usize = 200;

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
    Packaged {
        listener: UnixListener,
        path: PathBuf,
        /// (dev, ino) of the socket file, to unlink only our own at exit.
        file_id: (u64, u64),
        /// Uids served: root, the controller user, the core's own.
        allowed_uids: Vec<u32>,
    },
    /// Start and supervise inetd-controller on a socketpair.
    OneCommand(ControllerPlan),
}

/// How to start the controller child (one-command mode), prepared once.
pub struct ControllerPlan {
    pub identity: Identity,
    pub image: ExecImage,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum LState {
    Listening,
    Waiting(i32),
    Failed {
        reason: String,
        retry_at: Instant,
        attempt: u32,
    },
}

struct Listener {
    spec: ListenerSpec,
    prep: Prepared,
    sock: Option<OwnedFd>,
    file: Option<SocketFile>,
    state: LState,
    counters: Counters,
    last_error: Option<String>,
    /// Whether the socket is O_NONBLOCK now (see [`Listener::set_blocking_for`]).
    nonblocking: bool,
    /// The label as logged (escaped and cut), made once per apply rather
    /// than on every connection.
    log_label: String,
}

impl Listener {
    /// Puts the socket in the mode its next use needs: nonblocking when the
    /// core accepts from it, blocking when a child gets it (servers expect
    /// the classic blocking socket; the flag is shared with the core's copy,
    /// which is not polled while a child holds it). A child may change the
    /// flag itself, so it is set every time a child gets the socket.
    fn set_blocking_for(&mut self, child_gets_it: bool) {
        let want_nb = !child_gets_it;
        if self.nonblocking == want_nb && !child_gets_it {
            return;
        }
        if let Some(s) = &self.sock {
            match sys::set_nonblocking(s.as_fd(), want_nb) {
                Ok(()) => self.nonblocking = want_nb,
                Err(e) => warn!(
                    "service=\"{}\": cannot change O_NONBLOCK: {e}",
                    self.label()
                ),
            }
        }
    }

    /// Whether the child gets the listening socket itself (`wait`
    /// services, and every dgram builtin) rather than one connection.
    fn hands_socket(&self) -> bool {
        self.prep.hands_socket()
    }

    fn label(&self) -> &str {
        &self.log_label
    }

    fn close(&mut self) {
        self.sock = None;
        if let Some(f) = self.file.take() {
            f.unlink();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChildKind {
    Server,
    Controller,
}

struct Child {
    kind: ChildKind,
    listener: Option<u64>,
    label: String,
    peer: Option<String>,
    uid: u32,
    started_at: u64,
    started: Instant,
    /// The status pipe until the child reaches exec (end of file) or
    /// reports a failure.
    status: Option<OwnedFd>,
}

struct Conn {
    stream: UnixStream,
    buf: FrameBuf,
    out: Vec<u8>,
    sent: usize,
    hello: bool,
    /// Close once `out` is written (after a fatal answer).
    closing: bool,
    /// The one-command socketpair: trusted by construction.
    controller_link: bool,
    /// Who is on the other end, for the log.
    who: String,
}

struct CtlState {
    plan: ControllerPlan,
    pid: Option<i32>,
    conn: Option<u64>,
    reached: bool,
    failures: u32,
    restart_at: Option<Instant>,
    backoff: Backoff,
}

#[derive(Debug, Clone, Copy)]
enum Tok {
    Signal,
    CoreListener,
    Conn(u64),
    Listener(u64),
    Status(i32),
}

/// The core socket (packaged mode): listener, path, (dev, ino) of the
/// file, and the uids served.
type CoreListener = (UnixListener, PathBuf, (u64, u64), Vec<u32>);

pub struct Daemon {
    policy: CorePolicy,
    dgram_idle: Duration,
    devnull: OwnedFd,
    sigfd: SignalFd,
    core_listener: Option<CoreListener>,
    listeners: BTreeMap<u64, Listener>,
    by_key: HashMap<BindKey, u64>,
    next_id: u64,
    children: HashMap<i32, Child>,
    conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    generation: u64,
    started_at: u64,
    pause_until: Option<Instant>,
    pause_backoff: Backoff,
    in_burst: bool,
    ctl: Option<CtlState>,
    quit: Option<i32>,
    rbuf: Vec<u8>,
    /// A status pipe made before an accept that found nothing, kept for
    /// the next one.
    spare_pipe: Option<StatusPipe>,
    /// The core runs one thread: builtins may run after fork.
    single: SingleThreaded,
}

/// Unix seconds of a future monotonic instant.
fn unix_at(at: Instant) -> u64 {
    unix_now() + at.saturating_duration_since(Instant::now()).as_secs()
}

fn kind_of(t: SocketType) -> Kind {
    match t {
        SocketType::Stream => Kind::Stream,
        SocketType::Dgram => Kind::Dgram,
        SocketType::Seqpacket => Kind::Seqpacket,
    }
}

/// How a bind failed.
enum BindError {
    /// Refused by policy (an unsafe unix path): the listener is rejected.
    Refused(String),
    /// The system said no (address in use...): retried later.
    Io(String),
}

fn describe_bind(b: &Bind, t: SocketType) -> String {
    match b {
        Bind::Inet { addr, port, mode } => {
            format!("{} {t}/{mode}", std::net::SocketAddr::new(*addr, *port))
        }
        Bind::Unix { path } => format!("{} {t}/unix", escape_log(path, 200)),
    }
}

fn bind_spec(
    spec: &ListenerSpec,
    core_uid: u32,
) -> Result<(OwnedFd, Option<SocketFile>), BindError> {
    let kind = kind_of(spec.socket_type);
    match &spec.bind {
        Bind::Inet { addr, port, mode } => {
            let family = match mode {
                IpMode::V4 => Family::V4,
                IpMode::V6Only => Family::V6Only,
                IpMode::Dual => Family::Dual,
            };
            net::bind_inet(*addr, *port, family, kind)
                .map(|s| (s, None))
                .map_err(|e| {
                    BindError::Io(format!(
                        "bind {}: {e}",
                        describe_bind(&spec.bind, spec.socket_type)
                    ))
                })
        }
        Bind::Unix { path } => match unixsock::bind_unix(path, kind, core_uid) {
            Ok((s, f)) => Ok((s, Some(f))),
            Err(e @ UnixError::Unsafe(_)) => Err(BindError::Refused(e.to_string())),
            Err(e) => Err(BindError::Io(e.to_string())),
        },
    }
}

impl Daemon {
    pub fn new(setup: Setup, single: SingleThreaded) -> Daemon {
        let (core_listener, ctl) = match setup.mode {
            Mode::Packaged {
                listener,
                path,
                file_id,
                allowed_uids,
            } => (Some((listener, path, file_id, allowed_uids)), None),
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
            policy: setup.policy,
            dgram_idle: setup.dgram_idle,
            devnull: setup.devnull,
            sigfd: setup.sigfd,
            core_listener,
            listeners: BTreeMap::new(),
            by_key: HashMap::new(),
            next_id: 1,
            children: HashMap::new(),
            conns: BTreeMap::new(),
            next_conn: 1,
            generation: 0,
            started_at: unix_now(),
            pause_until: None,
            pause_backoff: Backoff::new(backoff::ACCEPT_PAUSE_FIRST, backoff::ACCEPT_PAUSE_MAX),
            in_burst: false,
            ctl,
            quit: None,
            rbuf: vec![0; 64 * 1024],
            spare_pipe: None,
            single,
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
        if let Some((l, ..)) = &self.core_listener {
            entries.push(sys::poll_entry(l.as_raw_fd(), sys::POLLIN));
            toks.push(Tok::CoreListener);
        }
        for (id, c) in &self.conns {
            let ev = if c.sent < c.out.len() {
                sys::POLLOUT
            } else {
                sys::POLLIN
            };
            entries.push(sys::poll_entry(c.stream.as_raw_fd(), ev));
            toks.push(Tok::Conn(*id));
        }
        if self.pause_until.is_none() {
            for (id, l) in &self.listeners {
                if let (LState::Listening, Some(s)) = (&l.state, &l.sock) {
                    entries.push(sys::poll_entry(s.as_raw_fd(), sys::POLLIN));
                    toks.push(Tok::Listener(*id));
                }
            }
        }
        for (pid, c) in &self.children {
            if let Some(fd) = &c.status {
                entries.push(sys::poll_entry(fd.as_raw_fd(), sys::POLLIN));
                toks.push(Tok::Status(*pid));
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut d = self.pause_until;
        let mut take = |t: Instant| {
            d = Some(d.map_or(t, |x: Instant| x.min(t)));
        };
        for l in self.listeners.values() {
            if let LState::Failed { retry_at, .. } = l.state {
                take(retry_at);
            }
        }
        if let Some(t) = self.ctl.as_ref().and_then(|c| c.restart_at) {
            take(t);
        }
        d
    }

    fn run_timers(&mut self, now: Instant) {
        if self.pause_until.is_some_and(|t| t <= now) {
            self.pause_until = None;
        }
        let due: Vec<u64> = self
            .listeners
            .iter()
            .filter(|(_, l)| matches!(l.state, LState::Failed { retry_at, .. } if retry_at <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.retry_bind(id);
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

    /// Tries to bind listener `id` now. On failure it is (or stays) failed
    /// with the next retry time, and the error is returned.
    fn bind_now(&mut self, id: u64, attempt: u32) -> Result<(), BindError> {
        let uid = self.policy.uid;
        let Some(l) = self.listeners.get_mut(&id) else {
            return Ok(());
        };
        match bind_spec(&l.spec, uid) {
            Ok((sock, file)) => {
                l.sock = Some(sock);
                l.file = file;
                l.state = LState::Listening;
                l.nonblocking = true;
                Ok(())
            }
            Err(e) => {
                let reason = match &e {
                    BindError::Refused(r) | BindError::Io(r) => r.clone(),
                };
                l.state = LState::Failed {
                    reason: reason.clone(),
                    retry_at: Instant::now() + backoff::bind_retry_delay(attempt),
                    attempt,
                };
                l.last_error = Some(reason);
                Err(e)
            }
        }
    }

    fn retry_bind(&mut self, id: u64) {
        let attempt = match self.listeners.get(&id).map(|l| &l.state) {
            Some(LState::Failed { attempt, .. }) => attempt + 1,
            _ => return,
        };
        let label = self.listeners[&id].label().to_owned();
        match self.bind_now(id, attempt) {
            Ok(()) => info!("listening again service=\"{label}\" after {attempt} retries"),
            Err(BindError::Refused(r) | BindError::Io(r)) => {
                let next = backoff::bind_retry_delay(attempt).as_secs();
                warn!("bind failed again service=\"{label}\": {r}; next retry in {next} s");
            }
        }
    }

    fn on_listener(&mut self, id: u64) {
        let Some(l) = self.listeners.get_mut(&id) else {
            return;
        };
        if l.state != LState::Listening || l.sock.is_none() {
            return;
        }
        let hands = l.hands_socket();
        l.set_blocking_for(hands);
        if hands {
            self.spawn_wait(id);
            return;
        }
        for _ in 0..ACCEPT_BATCH {
            // The child's status pipe first: out of descriptors, the
            // connection stays queued in the kernel instead of being
            // accepted and then dropped for want of a pipe.
            let pipe = match self.spare_pipe.take() {
                Some(p) => p,
                None => match StatusPipe::new() {
                    Ok(p) => p,
                    Err(e) => {
                        self.pause_accepts(&format!("cannot make a status pipe: {e}"));
                        return;
                    }
                },
            };
            let Some(sock) = self.listeners.get(&id).and_then(|l| l.sock.as_ref()) else {
                self.spare_pipe = Some(pipe);
                return;
            };
            match net::accept(sock.as_fd()) {
                Ok(conn) => self.spare_pipe = self.serve_connection(id, conn, pipe),
                Err(AcceptError::Nothing) => {
                    self.spare_pipe = Some(pipe);
                    return;
                }
                Err(AcceptError::Resources(e)) => {
                    self.spare_pipe = Some(pipe);
                    self.pause_accepts(&format!("accept failed: {e}"));
                    return;
                }
                Err(AcceptError::Other(e)) => {
                    self.spare_pipe = Some(pipe);
                    let l = self.listeners.get_mut(&id).expect("checked above");
                    warn!("accept failed service=\"{}\": {e}", l.label());
                    l.last_error = Some(format!("accept: {e}"));
                    return;
                }
            }
            if self.pause_until.is_some() {
                return;
            }
        }
    }

    /// A child started: a burst of resource failures, if any, is over.
    fn end_burst(&mut self) {
        if self.in_burst {
            self.in_burst = false;
            self.pause_backoff.reset();
            info!("starting children again");
        }
    }

    /// Stops polling every listener for a while: out of descriptors or
    /// memory, accept would fail again at once and the loop would spin.
    fn pause_accepts(&mut self, why: &str) {
        let d = self.pause_backoff.next_delay();
        if !self.in_burst {
            warn!(
                "{why}; not accepting for {} ms (doubling up to 1 s until a child starts; logged once)",
                d.as_millis()
            );
            self.in_burst = true;
        }
        self.pause_until = Some(Instant::now() + d);
    }

    /// One accepted connection of a nowait (or builtin stream) service.
    /// Returns the status pipe if no child was started with it.
    fn serve_connection(&mut self, id: u64, conn: OwnedFd, pipe: StatusPipe) -> Option<StatusPipe> {
        let l = &self.listeners[&id];
        let (peer_text, env) = match &l.spec.bind {
            Bind::Inet { .. } => {
                let (Some(p), Some(local)) =
                    (net::peer_inet(conn.as_fd()), net::local_inet(conn.as_fd()))
                else {
                    debug!(
                        "connection to service=\"{}\" gone before it was served",
                        l.label()
                    );
                    return Some(pipe);
                };
                if p.port() == 20 {
                    // OpenBSD's gettcp(): an ftp-data source port means an
                    // FTP bounce attempt; nothing legitimate comes from it.
                    info!(
                        "refused service=\"{}\" peer={}: source port 20 (ftp bounce)",
                        l.label(),
                        peer::fmt_addr(p)
                    );
                    return Some(pipe);
                }
                if let Some(acl) = &l.spec.acl {
                    if !crate::validate::acl_allows(acl, peer::unmap(p.ip())) {
                        info!(
                            "refused service=\"{}\" peer={}: access list",
                            l.label(),
                            peer::fmt_addr(p)
                        );
                        let l = self.listeners.get_mut(&id).expect("present");
                        l.counters.refused_acl += 1;
                        return Some(pipe);
                    }
                }
                (peer::fmt_addr(p), peer::tcp_env(p, local))
            }
            Bind::Unix { .. } => match net::peer_cred(conn.as_fd()) {
                Ok((pid, uid, gid)) => {
                    (peer::fmt_unix(pid, uid, gid), peer::unix_env(pid, uid, gid))
                }
                Err(e) => {
                    debug!(
                        "connection to service=\"{}\": no peer credentials: {e}",
                        l.label()
                    );
                    return Some(pipe);
                }
            },
        };
        if let Some(pid) = self.spawn_for(
            id,
            conn.as_raw_fd(),
            &env,
            Some(peer_text.clone()),
            Some(pipe),
        ) {
            let l = self.listeners.get_mut(&id).expect("present");
            l.counters.accepted += 1;
            info!(
                "accept service=\"{}\" peer={} pid={pid}",
                l.label(),
                peer_text
            );
        }
        // The parent's copy of the connection is closed here.
        None
    }

    /// A wait service (or a dgram builtin): the child gets the socket.
    fn spawn_wait(&mut self, id: u64) {
        let raw = match self.listeners.get(&id).and_then(|l| l.sock.as_ref()) {
            Some(s) => s.as_raw_fd(),
            None => return,
        };
        let pipe = match self.spare_pipe.take() {
            Some(p) => p,
            None => match StatusPipe::new() {
                Ok(p) => p,
                Err(e) => {
                    self.pause_accepts(&format!("cannot make a status pipe: {e}"));
                    return;
                }
            },
        };
        if let Some(pid) = self.spawn_for(id, raw, &[], None, Some(pipe)) {
            let l = self.listeners.get_mut(&id).expect("present");
            l.state = LState::Waiting(pid);
            l.counters.accepted += 1;
            info!(
                "start service=\"{}\" pid={pid} (holds the socket)",
                l.label()
            );
        }
    }

    /// Forks the child of listener `id` with `fd` as its connection or
    /// socket. Returns its pid, or `None` (logged) if it could not start.
    fn spawn_for(
        &mut self,
        id: u64,
        fd: RawFd,
        env_conn: &[CString],
        peer: Option<String>,
        pipe: Option<StatusPipe>,
    ) -> Option<i32> {
        let l = &self.listeners[&id];
        let prep = &l.prep;
        let result = match prep.program() {
            Program::Exec(image) => {
                child::spawn_exec(prep.identity(), image, env_conn, &[fd, fd, fd], pipe)
            }
            // Only the socket stays open in a builtin child, on fd 0: it
            // never execs and never prints, so it needs no stdio.
            Program::Builtin(b) => match l.spec.socket_type {
                SocketType::Dgram => {
                    let guard = UdpGuard {
                        builtin_ports: self.udp_builtin_ports(),
                    };
                    let (b, idle) = (*b, self.dgram_idle);
                    let serve = move |fd| builtins::serve_dgram(b, fd, idle, &guard);
                    child::spawn_builtin(prep.identity(), fd, serve, pipe, &self.single)
                }
                SocketType::Stream | SocketType::Seqpacket => {
                    let b = *b;
                    let serve = move |fd| builtins::serve_stream(b, fd);
                    child::spawn_builtin(prep.identity(), fd, serve, pipe, &self.single)
                }
            },
        };
        let label = l.label().to_owned();
        let uid = prep.identity().uid();
        match result {
            Ok(sp) => {
                self.end_burst();
                let l = self.listeners.get_mut(&id).expect("present");
                l.counters.children += 1;
                self.children.insert(
                    sp.pid,
                    Child {
                        kind: ChildKind::Server,
                        listener: Some(id),
                        label,
                        peer,
                        uid,
                        started_at: unix_now(),
                        started: Instant::now(),
                        status: Some(sp.status),
                    },
                );
                Some(sp.pid)
            }
            Err(e) => {
                // Logged once per burst (by pause_accepts) and kept as the
                // listener's last error.
                let l = self.listeners.get_mut(&id).expect("present");
                l.last_error = Some(format!("cannot start a child: {e}"));
                // Out of processes, descriptors or memory: the socket stays
                // readable, so back off like an accept that fails for lack
                // of resources.
                self.pause_accepts(&format!(
                    "cannot start a child for service=\"{label}\": {e}"
                ));
                None
            }
        }
    }

    /// The ports of every configured UDP builtin listener: a UDP builtin
    /// never answers a datagram from one of them (no ping-pong).
    fn udp_builtin_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .listeners
            .values()
            .filter(|l| {
                matches!(l.prep.program(), Program::Builtin(_))
                    && l.spec.socket_type == SocketType::Dgram
            })
            .filter_map(|l| match l.spec.bind {
                Bind::Inet { port, .. } => Some(port),
                Bind::Unix { .. } => None,
            })
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    // ---- children --------------------------------------------------------

    fn on_status(&mut self, pid: i32) {
        let Some(c) = self.children.get_mut(&pid) else {
            return;
        };
        let Some(fd) = &c.status else { return };
        match child::read_status(fd) {
            ChildStatus::Pending => {}
            ChildStatus::Started => c.status = None,
            ChildStatus::Failed { step, errno } => {
                c.status = None;
                let (kind, label, listener) = (c.kind, c.label.clone(), c.listener);
                self.child_failed(pid, kind, &label, listener, step, errno);
            }
        }
    }

    fn child_failed(
        &mut self,
        pid: i32,
        kind: ChildKind,
        label: &str,
        listener: Option<u64>,
        step: child::Step,
        errno: i32,
    ) {
        let err = io::Error::from_raw_os_error(errno);
        let what = if step == child::Step::Exec {
            "exec failed"
        } else {
            "child set-up failed"
        };
        let err_text = if errno == 0 {
            String::new()
        } else {
            format!(": {err}")
        };
        if kind == ChildKind::Controller {
            error!(
                "cannot start inetd-controller (pid {pid}): {what} at {}{err_text}",
                step.name()
            );
            return;
        }
        error!(
            "{what} service=\"{label}\" pid={pid} step={}{err_text}",
            step.name()
        );
        if let Some(l) = listener.and_then(|id| self.listeners.get_mut(&id)) {
            l.counters.exec_failures += 1;
            l.last_error = Some(format!("{what} at {}{err_text}", step.name()));
            // A wait server that never ran leaves what woke it queued: read
            // the datagram (or take the connection) away, so the socket does
            // not start a failing child for it again and again.
            if l.hands_socket() {
                if l.spec.socket_type == SocketType::Dgram {
                    if let Some(s) = &l.sock {
                        net::discard_datagram(s.as_fd());
                    }
                } else {
                    l.set_blocking_for(false);
                    if let Some(s) = &l.sock {
                        drop(net::accept(s.as_fd()));
                    }
                }
            }
        }
    }

    fn reap(&mut self) {
        while let Some((pid, status)) = sys::reap_one() {
            let Some(mut c) = self.children.remove(&pid) else {
                debug!("reaped unknown child pid={pid} status={status}");
                continue;
            };
            if let Some(fd) = c.status.take() {
                if let ChildStatus::Failed { step, errno } = child::read_status(&fd) {
                    self.child_failed(pid, c.kind, &c.label, c.listener, step, errno);
                }
            }
            match c.kind {
                ChildKind::Controller => self.controller_exited(pid, status, c.started),
                ChildKind::Server => {
                    info!("exit service=\"{}\" pid={pid} status={status}", c.label);
                    if let Some(l) = c.listener.and_then(|id| self.listeners.get_mut(&id)) {
                        l.counters.children = l.counters.children.saturating_sub(1);
                        if l.state == LState::Waiting(pid) {
                            l.state = LState::Listening;
                        }
                    }
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
        let r = child::spawn_exec(&ctl.plan.identity, &ctl.plan.image, &[], &fds, None);
        drop(theirs);
        match r {
            Ok(sp) => {
                let uid = ctl.plan.identity.uid();
                ctl.pid = Some(sp.pid);
                ctl.reached = false;
                let cid = self.next_conn;
                self.next_conn += 1;
                ctl.conn = Some(cid);
                self.conns.insert(
                    cid,
                    Conn {
                        stream: ours,
                        buf: FrameBuf::new(),
                        out: Vec::new(),
                        sent: 0,
                        hello: false,
                        closing: false,
                        controller_link: true,
                        who: format!("controller pid {}", sp.pid),
                    },
                );
                self.children.insert(
                    sp.pid,
                    Child {
                        kind: ChildKind::Controller,
                        listener: None,
                        label: "inetd-controller".into(),
                        peer: None,
                        uid,
                        started_at: unix_now(),
                        started: Instant::now(),
                        status: Some(sp.status),
                    },
                );
                info!("started inetd-controller pid={} as uid {uid}", sp.pid);
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
            self.conns.remove(&cid);
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
        for l in self.listeners.values_mut() {
            l.close();
        }
        self.conns.clear();
        if let Some((listener, path, (dev, ino), _)) = self.core_listener.take() {
            drop(listener);
            use std::os::unix::fs::MetadataExt;
            if let Ok(m) = std::fs::symlink_metadata(&path) {
                if m.dev() == dev && m.ino() == ino {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        info!("exiting");
    }

    // ---- the core socket -------------------------------------------------

    fn on_core_listener(&mut self) {
        loop {
            let Some((l, _, _, allowed)) = &self.core_listener else {
                return;
            };
            let stream = match l.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("core socket: accept failed: {e}");
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) {
                        self.pause_accepts(&format!("core socket: accept failed: {e}"));
                    }
                    return;
                }
            };
            // Judge the peer by the kernel's record before reading a byte.
            let (pid, uid, gid) = match net::peer_cred(stream.as_fd()) {
                Ok(c) => c,
                Err(e) => {
                    warn!("core socket: no peer credentials ({e}); closing the connection");
                    continue;
                }
            };
            if !allowed.contains(&uid) {
                warn!("core socket: refused a connection from uid {uid} (pid {pid}, gid {gid}): not root, the controller user or the core's uid");
                continue;
            }
            if self.conns.len() >= MAX_CORE_CONNS {
                warn!("core socket: refused a connection from uid {uid} (pid {pid}): already {MAX_CORE_CONNS} connections");
                continue;
            }
            if let Err(e) = stream.set_nonblocking(true) {
                warn!("core socket: {e}");
                continue;
            }
            let cid = self.next_conn;
            self.next_conn += 1;
            debug!("core connection {cid} from uid {uid} pid {pid}");
            self.conns.insert(
                cid,
                Conn {
                    stream,
                    buf: FrameBuf::new(),
                    out: Vec::new(),
                    sent: 0,
                    hello: false,
                    closing: false,
                    controller_link: false,
                    who: format!("uid {uid} pid {pid}"),
                },
            );
        }
    }

    fn drop_conn(&mut self, cid: u64, reason: Option<&str>) {
        if let Some(c) = self.conns.remove(&cid) {
            match reason {
                Some(r) => warn!("core connection from {}: {r}; closing it", c.who),
                None => debug!("core connection from {} closed", c.who),
            }
            if let Some(ctl) = self.ctl.as_mut() {
                if ctl.conn == Some(cid) {
                    ctl.conn = None;
                }
            }
        }
    }

    /// Writes what is pending; false if the connection is gone.
    fn flush(&mut self, cid: u64) -> bool {
        let Some(c) = self.conns.get_mut(&cid) else {
            return false;
        };
        while c.sent < c.out.len() {
            match c.stream.write(&c.out[c.sent..]) {
                Ok(0) => {
                    self.drop_conn(cid, Some("write returned 0"));
                    return false;
                }
                Ok(n) => c.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let r = format!("write failed: {e}");
                    self.drop_conn(cid, Some(&r));
                    return false;
                }
            }
        }
        c.out = Vec::new();
        c.sent = 0;
        if c.closing {
            self.drop_conn(cid, None);
            return false;
        }
        true
    }

    fn on_conn(&mut self, cid: u64, rev: i16) {
        if !self.flush(cid) {
            return;
        }
        let pending = self.conns.get(&cid).is_some_and(|c| c.sent < c.out.len());
        if pending {
            return;
        }
        if rev & (sys::POLLIN | sys::POLLHUP | sys::POLLERR | sys::POLLNVAL) != 0 {
            self.conn_read(cid);
        }
    }

    fn conn_read(&mut self, cid: u64) {
        loop {
            let Some(c) = self.conns.get_mut(&cid) else {
                return;
            };
            if c.sent < c.out.len() || c.closing {
                return;
            }
            // Never read past the current frame: at most one frame buffered.
            let want = match c.buf.wanted() {
                Ok(w) => w,
                Err(e) => {
                    let r = format!("bad frame: {e}");
                    self.drop_conn(cid, Some(&r));
                    return;
                }
            };
            let n = want.min(self.rbuf.len());
            match c.stream.read(&mut self.rbuf[..n]) {
                Ok(0) => {
                    if c.buf.pending() > 0 {
                        let r = format!(
                            "connection closed inside a frame ({} bytes buffered)",
                            c.buf.pending()
                        );
                        self.drop_conn(cid, Some(&r));
                    } else {
                        self.drop_conn(cid, None);
                    }
                    return;
                }
                Ok(got) => c.buf.extend(&self.rbuf[..got]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let r = format!("read failed: {e}");
                    self.drop_conn(cid, Some(&r));
                    return;
                }
            }
            match c.buf.next_payload() {
                Ok(None) => {}
                Ok(Some(p)) => {
                    self.handle_payload(cid, &p);
                    if !self.flush(cid) {
                        return;
                    }
                }
                Err(e) => {
                    let r = format!("bad frame: {e}");
                    self.drop_conn(cid, Some(&r));
                    return;
                }
            }
        }
    }

    fn handle_payload(&mut self, cid: u64, payload: &[u8]) {
        let req: CoreRequest = match decode_payload(payload) {
            Ok(r) => r,
            Err(e) => {
                let r = format!("undecodable message: {e}");
                self.drop_conn(cid, Some(&r));
                return;
            }
        };
        let (hello, link) = match self.conns.get(&cid) {
            Some(c) => (c.hello, c.controller_link),
            None => return,
        };
        let (resp, close) = match req {
            CoreRequest::Hello { version } if version != PROTOCOL_VERSION => {
                let e = ProtocolError::VersionMismatch {
                    ours: PROTOCOL_VERSION,
                    theirs: version,
                };
                warn!("core connection: {e}");
                (
                    CoreResponse::Error {
                        reason: e.to_string(),
                    },
                    true,
                )
            }
            CoreRequest::Hello { .. } => {
                if link {
                    if let Some(ctl) = self.ctl.as_mut() {
                        ctl.reached = true;
                        ctl.failures = 0;
                    }
                }
                if let Some(c) = self.conns.get_mut(&cid) {
                    c.hello = true;
                }
                (CoreResponse::Hello(self.hello_reply()), false)
            }
            _ if !hello => {
                let who = self
                    .conns
                    .get(&cid)
                    .map(|c| c.who.clone())
                    .unwrap_or_default();
                warn!("core connection from {who}: a request before Hello; answering with an error and closing it");
                (
                    CoreResponse::Error {
                        reason: "the first message on a core connection must be Hello".into(),
                    },
                    true,
                )
            }
            CoreRequest::Apply { listeners } => (self.apply(listeners), false),
            CoreRequest::Status => (CoreResponse::Status(self.status()), false),
        };
        let frame = encode_frame(&resp).unwrap_or_else(|e| {
            encode_frame(&CoreResponse::Error {
                reason: format!("cannot encode the answer: {e}"),
            })
            .unwrap_or_default()
        });
        if let Some(c) = self.conns.get_mut(&cid) {
            c.out = frame;
            c.sent = 0;
            c.closing = close;
        }
    }

    fn policy_wire(&self) -> Policy {
        Policy {
            root: self.policy.root,
            allow_root_services: self.policy.allow_root_services,
            allow_setuid_services: self.policy.allow_setuid_services,
        }
    }

    fn hello_reply(&self) -> HelloReply {
        HelloReply {
            version: PROTOCOL_VERSION,
            software_version: env!("CARGO_PKG_VERSION").into(),
            pid: sys::getpid(),
            uid: self.policy.uid,
            policy: self.policy_wire(),
        }
    }

    // ---- Apply and Status ------------------------------------------------

    fn apply(&mut self, requested: Vec<ListenerSpec>) -> CoreResponse {
        if let Err(e) = check_apply(&requested) {
            warn!("apply refused as a whole: {e}");
            return CoreResponse::Error {
                reason: e.to_string(),
            };
        }
        let prepared: Vec<Result<Prepared, String>> = requested
            .iter()
            .map(|s| validate(s, &self.policy))
            .collect();
        let verdicts: Vec<Result<(), String>> = prepared
            .iter()
            .map(|r| r.as_ref().map(|_| ()).map_err(Clone::clone))
            .collect();
        let the_plan = {
            let current: HashMap<BindKey, &ListenerSpec> = self
                .by_key
                .iter()
                .map(|(k, id)| (k.clone(), &self.listeners[id].spec))
                .collect();
            plan::plan(&current, &requested, &verdicts)
        };
        let named: HashSet<BindKey> = requested.iter().map(ListenerSpec::key).collect();
        let mut changed = false;
        let mut removed = Vec::new();
        // Removals first, so a port or path can move in one apply.
        for key in the_plan.removals {
            let Some(id) = self.by_key.remove(&key) else {
                continue;
            };
            let Some(mut l) = self.listeners.remove(&id) else {
                continue;
            };
            l.close();
            changed = true;
            info!(
                "removed service=\"{}\" ({}); {} running children left alone",
                l.label(),
                describe_bind(&key.bind, key.socket_type),
                l.counters.children
            );
            if !named.contains(&key) {
                removed.push(Removed {
                    key,
                    label: l.spec.label.clone(),
                });
            }
        }
        let mut outcomes = Vec::with_capacity(requested.len());
        let (mut n_add, mut n_chg, mut n_same, mut n_rej, mut n_fail) = (0, 0, 0, 0, 0);
        for ((spec, prep), step) in requested.into_iter().zip(prepared).zip(the_plan.steps) {
            let label = escape_log(&spec.label, LOG_LABEL).into_owned();
            let outcome = match (step, prep) {
                (Step::Reject(reason), _) | (_, Err(reason)) => {
                    warn!("rejected service=\"{label}\": {reason}");
                    n_rej += 1;
                    Outcome::Rejected { reason }
                }
                (Step::Add, Ok(prep)) => {
                    changed = true;
                    let id = self.next_id;
                    self.next_id += 1;
                    let key = spec.key();
                    self.listeners.insert(
                        id,
                        Listener {
                            spec,
                            prep,
                            sock: None,
                            file: None,
                            state: LState::Listening,
                            counters: Counters::default(),
                            last_error: None,
                            nonblocking: true,
                            log_label: label.clone(),
                        },
                    );
                    match self.bind_now(id, 0) {
                        Ok(()) => {
                            self.by_key.insert(key.clone(), id);
                            info!(
                                "added service=\"{label}\" ({})",
                                describe_bind(&key.bind, key.socket_type)
                            );
                            n_add += 1;
                            Outcome::Added
                        }
                        Err(BindError::Refused(reason)) => {
                            self.listeners.remove(&id);
                            warn!("rejected service=\"{label}\": {reason}");
                            n_rej += 1;
                            Outcome::Rejected { reason }
                        }
                        Err(BindError::Io(reason)) => {
                            self.by_key.insert(key, id);
                            n_fail += 1;
                            self.failed_outcome(id, &label, reason)
                        }
                    }
                }
                (step @ (Step::Change | Step::Unchanged), Ok(prep)) => {
                    let id = self.by_key[&spec.key()];
                    let l = self.listeners.get_mut(&id).expect("indexed");
                    let is_change = step == Step::Change;
                    if is_change {
                        changed = true;
                        l.spec = spec;
                        l.prep = prep;
                        l.log_label = label.clone();
                        info!("changed service=\"{label}\": new connections get the new spec");
                    }
                    let failed = matches!(l.state, LState::Failed { .. });
                    let result = if failed { self.bind_now(id, 0) } else { Ok(()) };
                    match result {
                        Ok(()) => {
                            if is_change {
                                n_chg += 1;
                                Outcome::Changed
                            } else {
                                n_same += 1;
                                Outcome::Unchanged
                            }
                        }
                        Err(BindError::Refused(r) | BindError::Io(r)) => {
                            n_fail += 1;
                            self.failed_outcome(id, &label, r)
                        }
                    }
                }
            };
            outcomes.push(outcome);
        }
        if changed {
            self.generation += 1;
        }
        info!(
            "apply: generation {}: {n_add} added, {n_chg} changed, {n_same} unchanged, {} removed, {n_rej} rejected, {n_fail} failed",
            self.generation,
            removed.len()
        );
        CoreResponse::Applied(ApplyReport {
            generation: self.generation,
            outcomes,
            removed,
        })
    }

    fn failed_outcome(&self, id: u64, label: &str, reason: String) -> Outcome {
        let retry_at = match self.listeners.get(&id).map(|l| &l.state) {
            Some(LState::Failed { retry_at, .. }) => *retry_at,
            _ => Instant::now(),
        };
        let secs = retry_at.saturating_duration_since(Instant::now()).as_secs();
        warn!("bind failed service=\"{label}\": {reason}; retrying in {secs} s");
        Outcome::Failed {
            reason,
            retry_at: unix_at(retry_at),
        }
    }

    fn status(&self) -> StatusReport {
        let mut index = HashMap::new();
        let mut listeners = Vec::with_capacity(self.listeners.len());
        for (i, (id, l)) in self.listeners.iter().enumerate() {
            index.insert(*id, u32::try_from(i).unwrap_or(u32::MAX));
            let state = match &l.state {
                LState::Listening => ListenerState::Listening,
                LState::Waiting(_) => ListenerState::Waiting,
                LState::Failed {
                    reason, retry_at, ..
                } => ListenerState::Failed {
                    reason: reason.clone(),
                    retry_at: unix_at(*retry_at),
                },
            };
            let state = match (state, self.pause_until) {
                (ListenerState::Listening, Some(until)) => ListenerState::Paused {
                    reason: "out of descriptors or memory".into(),
                    until: unix_at(until),
                },
                (s, _) => s,
            };
            listeners.push(ListenerStatus {
                spec: l.spec.clone(),
                state,
                counters: l.counters,
                last_error: l.last_error.clone(),
            });
        }
        let mut children: Vec<ChildInfo> = self
            .children
            .iter()
            .filter(|(_, c)| c.kind == ChildKind::Server)
            .map(|(pid, c)| ChildInfo {
                pid: pid.unsigned_abs(),
                listener: c.listener.and_then(|id| index.get(&id).copied()),
                peer: c.peer.clone(),
                uid: c.uid,
                started_at: c.started_at,
            })
            .collect();
        children.sort_by_key(|c| c.pid);
        StatusReport {
            generation: self.generation,
            software_version: env!("CARGO_PKG_VERSION").into(),
            pid: sys::getpid(),
            uid: self.policy.uid,
            started_at: self.started_at,
            policy: self.policy_wire(),
            listeners,
            children,
        }
    }
}
