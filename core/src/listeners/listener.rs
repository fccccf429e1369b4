//! One listener: its spec as the core keeps it, its socket and its state
//! machine (see the table's header in `listeners` for the states and the
//! invariants the table keeps over all of them).
#![forbid(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Instant;

use inetd_protocol::{
    escape_log, Acl, Action, Bind, BindKey, Counters, Credentials, Limits, ListenerSpec, SocketType,
};
use log::warn;

use crate::backoff;
use crate::limits::{Knobs, ListenerLimits};
use crate::plan::Sameness;
use crate::sys::unixsock::{self, SocketFile, UnixError};
use crate::sys::{self, net};
use crate::validate::{Prepared, Program};

/// How long labels may get in log lines.
const LOG_LABEL: usize = 200;

/// A label as it goes into log lines: escaped, cut at [`LOG_LABEL`].
pub fn log_label(label: &str) -> String {
    escape_log(label, LOG_LABEL).into_owned()
}

/// A listener's name in the table; never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(pub(super) u64);

impl ListenerId {
    /// Its number, for an epoll token (`events`).
    pub fn get(self) -> u64 {
        self.0
    }

    /// The id an epoll token names; looked up like any other, so it
    /// names a listener or none.
    pub fn from_token(n: u64) -> ListenerId {
        ListenerId(n)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Bound; polled unless the core pauses every accept.
    Listening,
    /// A child holds the socket (`wait` services, dgram builtins).
    Waiting { pid: i32 },
    /// Not bound, for `reason`; retried at `retry_at`.
    Failed {
        reason: Box<str>,
        retry_at: Instant,
        attempt: u32,
    },
    /// The rate limit was reached: every connection is closed at once
    /// until `until`.
    Paused { until: Instant },
    /// [`crate::limits::WAIT_FAILURES`] wait servers failed within the
    /// rate window of `window_s` seconds: not polled until `until`.
    Resting { until: Instant, window_s: u64 },
}

impl State {
    /// Why a `Resting` listener rests, as the status shows it.
    pub fn resting_reason(window_s: u64) -> String {
        format!(
            "{} wait servers failed within {window_s} s; retrying with backoff",
            crate::limits::WAIT_FAILURES
        )
    }
}

/// How a bind failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindError {
    /// Refused by policy (an unsafe unix path): the listener is rejected.
    Refused(String),
    /// The system said no (address in use...): retried later.
    Io(String),
}

impl BindError {
    pub fn reason(&self) -> &str {
        match self {
            BindError::Refused(r) | BindError::Io(r) => r,
        }
    }
}

/// A listener's spec as the core keeps it: what a connection needs at
/// hand, each string once. The program and the ids are held by the
/// [`Prepared`] value alone (as the child path needs them), and the
/// [`ListenerSpec`] a status reports is rebuilt from both
/// ([`Listener::to_spec`]).
pub struct Spec {
    pub bind: Bind,
    pub socket_type: SocketType,
    pub wait: bool,
    pub limits: Limits,
    /// Boxed: most listeners have none.
    pub acl: Option<Box<Acl>>,
    /// Shared with the listener's children (their exit lines name it).
    pub(super) label: Rc<str>,
    /// [`log_label`] of the label, only where it differs from the label
    /// (a long label, or one with characters to escape).
    pub(super) log_label: Option<Rc<str>>,
    /// The supplementary groups as the controller sent them, only where
    /// they differ from the prepared identity's (which are sorted, without
    /// duplicates, and none on a core that is not root).
    pub(super) groups: Option<Box<[u32]>>,
}

impl Spec {
    /// The spec of `s` as kept; its action and ids are left to `prep`,
    /// which validation made from `s`.
    pub fn new(s: &ListenerSpec, prep: &Prepared) -> Spec {
        let label: Rc<str> = s.label.as_str().into();
        let log_label = match escape_log(&label, LOG_LABEL) {
            std::borrow::Cow::Borrowed(_) => None,
            std::borrow::Cow::Owned(e) => Some(e.into()),
        };
        let groups =
            (s.creds.groups != prep.identity().groups()).then(|| s.creds.groups[..].into());
        Spec {
            bind: s.bind.clone(),
            socket_type: s.socket_type,
            wait: s.wait,
            limits: s.limits,
            acl: s.acl.clone().map(Box::new),
            label,
            log_label,
            groups,
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn key(&self) -> BindKey {
        BindKey {
            bind: self.bind.clone(),
            socket_type: self.socket_type,
        }
    }
}

pub struct Listener {
    pub(super) spec: Spec,
    pub(super) prep: Prepared,
    pub(super) sock: Option<OwnedFd>,
    /// Whether the socket is O_NONBLOCK now (see [`Listener::set_blocking_for`]).
    pub(super) nonblocking: bool,
    /// Boxed: only unix listeners have one.
    pub(super) file: Option<Box<SocketFile>>,
    pub(super) state: State,
    /// `children` is filled in from the child table for the status.
    pub counters: Counters,
    pub last_error: Option<String>,
    /// What the limits remember between connections.
    pub limits: ListenerLimits,
}

impl Listener {
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The spec, and what its limits remember, to admit a connection.
    pub fn spec_and_limits(&mut self) -> (&Spec, &mut ListenerLimits) {
        (&self.spec, &mut self.limits)
    }

    pub fn prepared(&self) -> &Prepared {
        &self.prep
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// The label for log lines (see [`log_label`]).
    pub fn label(&self) -> &str {
        self.spec.log_label.as_ref().unwrap_or(&self.spec.label)
    }

    /// The same label, shared: a child records it without copying it.
    pub fn shared_label(&self) -> Rc<str> {
        Rc::clone(self.spec.log_label.as_ref().unwrap_or(&self.spec.label))
    }

    /// The spec as the controller sent it, rebuilt (for a status).
    pub fn to_spec(&self) -> ListenerSpec {
        let s = &self.spec;
        let id = self.prep.identity();
        let action = match self.prep.program() {
            Program::Exec(image) => Action::Exec {
                path: image.path().to_string_lossy().into_owned(),
                argv: image
                    .argv()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect(),
            },
            Program::Builtin(b) => Action::Builtin(*b),
        };
        ListenerSpec {
            bind: s.bind.clone(),
            socket_type: s.socket_type,
            wait: s.wait,
            action,
            creds: Credentials {
                uid: id.uid(),
                gid: id.gid(),
                groups: s.groups.as_deref().unwrap_or(id.groups()).to_vec(),
            },
            limits: s.limits,
            acl: s.acl.as_deref().cloned(),
            label: s.label.to_string(),
        }
    }

    /// How this listener compares with `new`, field by field with the
    /// spec it keeps, without rebuilding it.
    pub fn compare(&self, new: &ListenerSpec) -> Sameness {
        let s = &self.spec;
        let id = self.prep.identity();
        let action = match (self.prep.program(), &new.action) {
            (Program::Exec(image), Action::Exec { path, argv }) => {
                image.path().to_bytes() == path.as_bytes()
                    && image.argv().len() == argv.len()
                    && image
                        .argv()
                        .zip(argv)
                        .all(|(a, b)| a.to_bytes() == b.as_bytes())
            }
            (Program::Builtin(a), Action::Builtin(b)) => a == b,
            _ => false,
        };
        let same = action
            && s.bind == new.bind
            && s.socket_type == new.socket_type
            && s.wait == new.wait
            && s.limits == new.limits
            && s.acl.as_deref() == new.acl.as_ref()
            && id.uid() == new.creds.uid
            && id.gid() == new.creds.gid
            && s.groups.as_deref().unwrap_or(id.groups()) == &new.creds.groups[..];
        match (same, *s.label == *new.label) {
            (true, true) => Sameness::Same,
            (true, false) => Sameness::LabelOnly,
            (false, _) => Sameness::Different,
        }
    }

    pub fn socket(&self) -> Option<BorrowedFd<'_>> {
        self.sock.as_ref().map(|s| s.as_fd())
    }

    /// Whether the child gets the socket itself, not one connection.
    pub fn hands_socket(&self) -> bool {
        self.prep.hands_socket()
    }

    /// The socket, if the loop should poll this listener now (its
    /// children limits aside).
    pub fn pollable(&self) -> Option<RawFd> {
        match (&self.state, &self.sock) {
            (State::Listening | State::Paused { .. }, Some(s)) => Some(s.as_raw_fd()),
            _ => None,
        }
    }

    /// When [`ListenerTable::retry_due`] has something to do for this
    /// listener: a bind retry, the end of a pause or of a rest.
    pub fn wake_at(&self) -> Option<Instant> {
        match self.state {
            State::Failed { retry_at, .. } => Some(retry_at),
            State::Paused { until } | State::Resting { until, .. } => Some(until),
            _ => None,
        }
    }

    /// Whether the rate limit holds the service now.
    pub fn paused(&self) -> bool {
        matches!(self.state, State::Paused { .. })
    }

    /// The rate limit was reached: paused until `until`.
    pub fn pause(&mut self, until: Instant) {
        if self.state == State::Listening {
            self.state = State::Paused { until };
        }
    }

    /// Why the service is paused, as the status shows it.
    pub fn pause_reason(&self) -> String {
        format!(
            "rate limit of {} connections per minute reached",
            self.spec.limits.max_per_minute
        )
    }

    /// A changed spec gets a fresh start: a service resting after failed
    /// wait servers listens again at once (the change may be the fix).
    pub fn fresh_start(&mut self) {
        if matches!(self.state, State::Resting { .. }) {
            self.state = State::Listening;
            self.limits.wait_served();
        }
    }

    /// Whether child `pid` holds the socket.
    pub fn held_by(&self, pid: i32) -> bool {
        self.state == (State::Waiting { pid })
    }

    pub(super) fn is_udp_builtin(&self) -> bool {
        matches!(self.prep.program(), Program::Builtin(_))
            && self.spec.socket_type == SocketType::Dgram
    }

    /// A child now holds the socket: not polled until it is reaped.
    pub fn hold(&mut self, pid: i32) {
        self.state = State::Waiting { pid };
    }

    /// The wait server `pid` was reaped, `failed` or not (exited with a
    /// status other than 0, or left a connection waiting): listening
    /// again, or `Resting` when that made too many failures in the window.
    /// Returns the backoff when it rests.
    pub fn wait_ended(
        &mut self,
        pid: i32,
        failed: bool,
        now: Instant,
        knobs: &Knobs,
    ) -> Option<std::time::Duration> {
        if self.state != (State::Waiting { pid }) {
            return None;
        }
        self.state = State::Listening;
        if !failed {
            self.limits.wait_served();
            return None;
        }
        if !self.limits.wait_failed(now, knobs.window) {
            return None;
        }
        let attempt = self.limits.next_failed_attempt();
        let d = knobs.wait_backoff(attempt);
        self.state = State::Resting {
            until: now + d,
            window_s: knobs.window.as_secs(),
        };
        Some(d)
    }

    /// Whether a connection waits on a stream socket (a wait server that
    /// ends leaving one has not served it).
    pub fn connection_waiting(&self) -> bool {
        if self.spec.socket_type == SocketType::Dgram {
            return false;
        }
        let Some(s) = &self.sock else { return false };
        let mut e = [sys::poll_entry(s.as_raw_fd(), sys::POLLIN)];
        matches!(sys::poll(&mut e, 0), Ok(n) if n > 0) && e[0].revents & sys::POLLIN != 0
    }

    /// Binds now; on failure the listener is `Failed`, to be retried after
    /// the delay for `attempt`.
    pub fn bind(&mut self, core_uid: u32, attempt: u32) -> Result<(), BindError> {
        // Bound already: the socket stays the listener's (see the header).
        if self.sock.is_some() {
            return Ok(());
        }
        match bind_spec(&self.spec.bind, self.spec.socket_type, core_uid) {
            Ok((sock, file)) => {
                self.sock = Some(sock);
                self.file = file.map(Box::new);
                self.state = State::Listening;
                self.nonblocking = true;
                Ok(())
            }
            Err(e) => {
                self.state = State::Failed {
                    reason: e.reason().into(),
                    retry_at: Instant::now() + backoff::bind_retry_delay(attempt),
                    attempt,
                };
                self.last_error = Some(e.reason().to_owned());
                Err(e)
            }
        }
    }

    /// Puts the socket in the mode its next use needs: nonblocking when the
    /// core accepts from it, blocking when a child gets it (servers expect
    /// the classic blocking socket; the flag is shared with the core's copy,
    /// which is not polled while a child holds it). A child may change the
    /// flag itself, so it is set every time a child gets the socket.
    pub fn set_blocking_for(&mut self, child_gets_it: bool) {
        let want_nb = !child_gets_it;
        if self.nonblocking == want_nb && !child_gets_it {
            return;
        }
        if let Some(s) = &self.sock {
            match sys::set_nonblocking(s.as_fd(), want_nb) {
                Ok(()) => self.nonblocking = want_nb,
                Err(e) => warn!("{}: cannot change O_NONBLOCK: {e}", self.label()),
            }
        }
    }

    /// A wait server that never ran leaves what woke it queued: read the
    /// datagram (or take the connection) away, so the socket does not
    /// start a failing child for it again and again.
    pub fn discard_pending(&mut self) {
        if !self.hands_socket() {
            return;
        }
        if self.spec.socket_type == SocketType::Dgram {
            if let Some(s) = &self.sock {
                net::discard_datagram(s.as_fd());
            }
        } else {
            self.set_blocking_for(false);
            if let Some(s) = &self.sock {
                drop(net::accept(s.as_fd()));
            }
        }
    }

    pub(super) fn close(&mut self) {
        self.sock = None;
        if let Some(f) = self.file.take() {
            f.unlink();
        }
    }
}

/// A bind key for the log: `127.0.0.1:7 stream/4`, `/run/x dgram/unix`.
pub fn describe_bind(b: &Bind, t: SocketType) -> String {
    match b {
        Bind::Inet { addr, port, mode } => {
            format!("{} {t}/{mode}", std::net::SocketAddr::new(*addr, *port))
        }
        Bind::Unix { path } => format!("{} {t}/unix", escape_log(path, LOG_LABEL)),
    }
}

fn bind_spec(
    bind: &Bind,
    t: SocketType,
    core_uid: u32,
) -> Result<(OwnedFd, Option<SocketFile>), BindError> {
    match bind {
        Bind::Inet { addr, port, mode } => net::bind_inet(*addr, *port, *mode, t)
            .map(|s| (s, None))
            .map_err(|e| BindError::Io(format!("bind {}: {e}", describe_bind(bind, t)))),
        Bind::Unix { path } => match unixsock::bind_unix(path, t, core_uid) {
            Ok((s, f)) => Ok((s, Some(f))),
            Err(e @ UnixError::Unsafe(_)) => Err(BindError::Refused(e.to_string())),
            Err(e) => Err(BindError::Io(e.to_string())),
        },
    }
}
