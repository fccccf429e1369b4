//! The listener table: every listener the core runs, by id (and, for the
//! length of an apply, by bind key: [`Keyed`]), and each listener's state
//! machine. Invariants, kept here alone:
//! * while a [`Keyed`] view exists, `by_key[k] == id` exactly when
//!   `by_id[id]` exists with key `k`: only its `insert` and `remove` change
//!   the set, and `change` keeps the key; no two listeners share a key;
//! * ids are never reused, so an id held elsewhere names this listener or
//!   none;
//! * a listener's socket, once bound, is never replaced until the listener
//!   is removed (only a listener without one binds), so its id, which is
//!   also its epoll token (`events`), names that one socket;
//! * `udp_builtin_ports` holds the ports of the UDP builtin listeners,
//!   recomputed whenever the table changes;
//! * a listener is polled only `Listening` or `Paused` with a socket (and
//!   below its children limits, which the loop checks); it is `Waiting`
//!   while a child holds its socket, until that child is reaped.
//!
//! The states of the limits: `Paused` when the service's rate limit is
//! reached (still polled: each connection is accepted and closed at once,
//! counted) until the pause is over; `Resting` after failed wait servers,
//! not polled until its backoff is over. Both go back to `Listening` by
//! themselves ([`ListenerTable::retry_due`]).
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Instant;

use inetd_protocol::{
    escape_log, Acl, Action, Bind, BindKey, Counters, Credentials, Limits, ListenerSpec, SocketType,
};
use log::{info, warn};

use crate::backoff;
use crate::limits::{Knobs, ListenerLimits};
use crate::plan::{Current, Sameness};
use crate::sys;
use crate::sys::net;
use crate::sys::unixsock::{self, SocketFile, UnixError};
use crate::validate::{Prepared, Program};

/// How long labels may get in log lines.
const LOG_LABEL: usize = 200;

/// A label as it goes into log lines: escaped, cut at [`LOG_LABEL`].
pub fn log_label(label: &str) -> String {
    escape_log(label, LOG_LABEL).into_owned()
}

/// A listener's name in the table; never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(u64);

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
    label: Rc<str>,
    /// [`log_label`] of the label, only where it differs from the label
    /// (a long label, or one with characters to escape).
    log_label: Option<Rc<str>>,
    /// The supplementary groups as the controller sent them, only where
    /// they differ from the prepared identity's (which are sorted, without
    /// duplicates, and none on a core that is not root).
    groups: Option<Box<[u32]>>,
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
    spec: Spec,
    prep: Prepared,
    sock: Option<OwnedFd>,
    /// Whether the socket is O_NONBLOCK now (see [`Listener::set_blocking_for`]).
    nonblocking: bool,
    /// Boxed: only unix listeners have one.
    file: Option<Box<SocketFile>>,
    state: State,
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

    fn is_udp_builtin(&self) -> bool {
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

    fn close(&mut self) {
        self.sock = None;
        if let Some(f) = self.file.take() {
            f.unlink();
        }
    }
}

#[derive(Default)]
pub struct ListenerTable {
    /// Boxed: a B-tree node holds up to 11 values and is often half full,
    /// so an inline `Listener` would cost about twice its size.
    by_id: BTreeMap<ListenerId, Box<Listener>>,
    next_id: u64,
    udp_builtin_ports: Vec<u16>,
}

/// The table with its listeners indexed by bind key, for the length of
/// an apply: the only time the core looks a listener up by key. The index
/// is built from the table and dropped with the view; kept between
/// applies it would cost about as much as a listener's spec.
pub struct Keyed<'a> {
    table: &'a mut ListenerTable,
    by_key: HashMap<BindKey, ListenerId>,
}

impl ListenerTable {
    /// The table indexed by key (see [`Keyed`]).
    pub fn keyed(&mut self) -> Keyed<'_> {
        let by_key = self
            .by_id
            .iter()
            .map(|(id, l)| (l.spec.key(), *id))
            .collect();
        Keyed {
            table: self,
            by_key,
        }
    }
}

impl Keyed<'_> {
    /// Adds a listener, not bound yet; `None` if its key is taken (the
    /// caller planned against this table: a bug, refused, not a second
    /// listener on one key).
    pub fn insert(&mut self, spec: &ListenerSpec, prep: Prepared) -> Option<ListenerId> {
        let key = spec.key();
        if self.by_key.contains_key(&key) {
            return None;
        }
        let t = &mut *self.table;
        t.next_id += 1;
        let id = ListenerId(t.next_id);
        self.by_key.insert(key, id);
        let limits = ListenerLimits::new(&spec.limits, Instant::now());
        let l = Box::new(Listener {
            spec: Spec::new(spec, &prep),
            prep,
            sock: None,
            nonblocking: true,
            file: None,
            state: State::Listening,
            counters: Counters::default(),
            last_error: None,
            limits,
        });
        let udp = l.is_udp_builtin();
        t.by_id.insert(id, l);
        if udp {
            t.refresh_ports();
        }
        Some(id)
    }

    /// Removes the listener at `key`, closing its socket.
    pub fn remove(&mut self, key: &BindKey) -> Option<Listener> {
        let id = self.by_key.remove(key)?;
        let t = &mut *self.table;
        let mut l = *t.by_id.remove(&id)?;
        l.close();
        if l.is_udp_builtin() {
            t.refresh_ports();
        }
        Some(l)
    }

    pub fn id_of(&self, key: &BindKey) -> Option<ListenerId> {
        self.by_key.get(key).copied()
    }

    /// See [`ListenerTable::change`].
    pub fn change(&mut self, id: ListenerId, spec: &ListenerSpec, prep: Prepared) -> bool {
        self.table.change(id, spec, prep)
    }

    pub fn get_mut(&mut self, id: ListenerId) -> Option<&mut Listener> {
        self.table.get_mut(id)
    }
}

/// What runs, by key: what an apply is planned against.
impl Current for Keyed<'_> {
    fn compare(&self, key: &BindKey, new: &ListenerSpec) -> Option<Sameness> {
        let id = self.by_key.get(key)?;
        let l = self.table.by_id.get(id)?;
        Some(l.compare(new))
    }

    fn keys(&self) -> Vec<&BindKey> {
        self.by_key.keys().collect()
    }
}

impl ListenerTable {
    /// A new spec for listener `id`, with the same key (new connections get
    /// it; socket, state and counters stay); false if that cannot be.
    pub fn change(&mut self, id: ListenerId, spec: &ListenerSpec, prep: Prepared) -> bool {
        let Some(l) = self.by_id.get_mut(&id) else {
            return false;
        };
        if l.spec.bind != spec.bind || l.spec.socket_type != spec.socket_type {
            return false;
        }
        let was = l.is_udp_builtin();
        // New limits count afresh (the children of the old spec are no
        // longer charged to their sources).
        if l.spec.limits != spec.limits {
            l.limits = ListenerLimits::new(&spec.limits, Instant::now());
            if l.paused() {
                l.state = State::Listening;
            }
        }
        l.spec = Spec::new(spec, &prep);
        l.prep = prep;
        if was || l.is_udp_builtin() {
            self.refresh_ports();
        }
        true
    }

    pub fn close_all(&mut self) {
        for l in self.by_id.values_mut() {
            l.close();
        }
    }

    #[cfg(test)]
    pub fn get(&self, id: ListenerId) -> Option<&Listener> {
        self.by_id.get(&id).map(|l| &**l)
    }

    pub fn get_mut(&mut self, id: ListenerId) -> Option<&mut Listener> {
        self.by_id.get_mut(&id).map(|l| &mut **l)
    }

    /// Listener `id`, with the UDP builtin ports its children may need.
    pub fn get_mut_with_ports(&mut self, id: ListenerId) -> Option<(&mut Listener, &[u16])> {
        let l = self.by_id.get_mut(&id)?;
        Some((l, &self.udp_builtin_ports))
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// In id order, the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = (ListenerId, &Listener)> {
        self.by_id.iter().map(|(id, l)| (*id, &**l))
    }

    #[cfg(test)]
    pub fn udp_builtin_ports(&self) -> &[u16] {
        &self.udp_builtin_ports
    }

    /// The earliest bind retry, end of a pause or of a backoff (the loop
    /// folds each listener's [`Listener::wake_at`] in as it looks at it).
    #[cfg(test)]
    pub fn next_retry(&self) -> Option<Instant> {
        self.by_id.values().filter_map(|l| l.wake_at()).min()
    }

    /// Binds again the failed listeners whose retry is due at `now`, and
    /// ends the pauses and backoffs that are over.
    pub fn retry_due(&mut self, now: Instant, core_uid: u32) {
        for l in self.by_id.values_mut() {
            let attempt = match l.state {
                State::Failed {
                    retry_at, attempt, ..
                } if retry_at <= now => attempt + 1,
                State::Paused { until } if until <= now => {
                    l.state = State::Listening;
                    l.limits.reset_rate();
                    info!("{}: resumed: its pause is over", l.label());
                    continue;
                }
                State::Resting { until, .. } if until <= now => {
                    l.state = State::Listening;
                    info!("{}: retrying after failed wait servers", l.label());
                    continue;
                }
                _ => continue,
            };
            match l.bind(core_uid, attempt) {
                Ok(()) => info!("{}: listening again after {attempt} retries", l.label()),
                Err(e) => warn!(
                    "{}: bind failed again: {}; next retry in {} s",
                    l.label(),
                    e.reason(),
                    backoff::bind_retry_delay(attempt).as_secs()
                ),
            }
        }
    }

    /// A UDP builtin never answers a datagram from one of these ports (no
    /// ping-pong between builtins). Recomputed only when a UDP builtin
    /// comes, changes or goes: an `Apply` of n other listeners stays
    /// linear in n.
    fn refresh_ports(&mut self) {
        let mut ports: Vec<u16> = self
            .by_id
            .values()
            .filter(|l| l.is_udp_builtin())
            .filter_map(|l| match l.spec.bind {
                Bind::Inet { port, .. } => Some(port),
                Bind::Unix { .. } => None,
            })
            .collect();
        ports.sort_unstable();
        ports.dedup();
        self.udp_builtin_ports = ports;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::tests::{root_policy, spec};
    use crate::validate::validate;
    use inetd_protocol::{Action, Builtin};

    fn prep(s: &ListenerSpec) -> Prepared {
        validate(s, &root_policy()).unwrap()
    }

    fn udp_builtin(port: u16) -> ListenerSpec {
        let mut s = spec(port);
        s.socket_type = SocketType::Dgram;
        s.action = Action::Builtin(Builtin::Echo);
        s
    }

    /// Both maps name the same listeners, each under its own key.
    fn consistent(k: &Keyed<'_>) {
        let t = &k.table;
        assert_eq!(t.by_id.len(), k.by_key.len());
        for (key, id) in &k.by_key {
            assert_eq!(&t.by_id[id].spec.key(), key);
        }
        for (id, l) in &t.by_id {
            assert_eq!(k.by_key[&l.spec.key()], *id);
        }
    }

    /// One-off uses of a keyed view, for the tests that are not about it.
    impl ListenerTable {
        pub(crate) fn insert(&mut self, spec: &ListenerSpec, prep: Prepared) -> Option<ListenerId> {
            self.keyed().insert(spec, prep)
        }

        fn remove(&mut self, key: &BindKey) -> Option<Listener> {
            self.keyed().remove(key)
        }

        fn id_of(&mut self, key: &BindKey) -> Option<ListenerId> {
            self.keyed().id_of(key)
        }
    }

    #[test]
    fn ids_and_keys_stay_consistent() {
        let mut t = ListenerTable::default();
        let (a, b) = (spec(7001), spec(7002));
        let mut k = t.keyed();
        let ia = k.insert(&a, prep(&a)).unwrap();
        let ib = k.insert(&b, prep(&b)).unwrap();
        consistent(&k);
        assert_ne!(ia, ib);
        assert_eq!(k.id_of(&a.key()), Some(ia));
        // A second listener on one key is refused, and nothing changes.
        assert!(k.insert(&a, prep(&a)).is_none());
        consistent(&k);
        assert_eq!(k.table.len(), 2);
        // Removed, then added again: a new id, never the old one.
        assert!(k.remove(&a.key()).is_some());
        assert!(k.remove(&a.key()).is_none());
        consistent(&k);
        assert!(k.table.get(ia).is_none());
        let ia2 = k.insert(&a, prep(&a)).unwrap();
        assert!(ia2 != ia && ia2 != ib);
        consistent(&k);
        assert_eq!(k.keys().len(), 2);
        // The next apply's view: the same keys, and still no reuse.
        let mut k = t.keyed();
        consistent(&k);
        assert_eq!(k.id_of(&b.key()), Some(ib));
        assert!(k.insert(&b, prep(&b)).is_none());
        assert_eq!(t.iter().map(|(id, _)| id).collect::<Vec<_>>(), [ib, ia2]);
    }

    #[test]
    fn a_change_keeps_the_key() {
        let mut t = ListenerTable::default();
        let a = spec(7001);
        let id = t.insert(&a, prep(&a)).unwrap();
        let mut a2 = a.clone();
        a2.label = "new\nlabel".into();
        assert!(t.change(id, &a2, prep(&a2)));
        assert_eq!(t.get(id).unwrap().label(), "new\\nlabel");
        let other = spec(7002);
        assert!(!t.change(id, &other, prep(&other)), "another key");
        assert_eq!(t.get(id).unwrap().to_spec(), a2);
        consistent(&t.keyed());
    }

    /// Each string is kept once, but the spec a status reports is the one
    /// sent, and an apply of the same spec finds it the same.
    #[test]
    fn the_kept_spec_is_the_one_sent() {
        use inetd_protocol::{Acl, AclRule, Builtin};
        let mut a = spec(7001);
        a.label = "tab\there \"quoted\"".into();
        a.creds.groups = vec![65534, 65534];
        a.acl = Some(Acl {
            rules: vec![AclRule {
                addr: "10.0.0.0".parse().unwrap(),
                prefix: 8,
                allow: true,
            }],
            default_allow: false,
        });
        a.action = Action::Exec {
            path: "/usr/bin/env".into(),
            argv: vec!["env".into(), "".into(), "-i".into()],
        };
        let mut b = spec(7002);
        b.action = Action::Builtin(Builtin::Daytime);
        let mut t = ListenerTable::default();
        for s in [&a, &b] {
            let id = t.insert(s, prep(s)).unwrap();
            let l = t.get(id).unwrap();
            assert_eq!(&l.to_spec(), s);
            assert_eq!(l.compare(s), Sameness::Same);
            let mut relabelled = s.clone();
            relabelled.label.push('x');
            assert_eq!(l.compare(&relabelled), Sameness::LabelOnly);
            let mut other = relabelled.clone();
            other.creds.groups.push(1);
            assert_eq!(l.compare(&other), Sameness::Different, "{s:?}");
        }
        // The escaped label is kept beside the label only where it differs.
        let id = t.id_of(&a.key()).unwrap();
        let l = t.get(id).unwrap();
        assert_eq!(l.label(), "tab\\there \\\"quoted\\\"");
        let id = t.id_of(&b.key()).unwrap();
        let l = t.get(id).unwrap();
        assert!(l.spec.log_label.is_none() && l.label() == b.label);
        assert!(Rc::ptr_eq(&l.shared_label(), &l.spec.label));
        let mut argv = a.clone();
        argv.action = Action::Exec {
            path: "/usr/bin/env".into(),
            argv: vec!["env".into(), "-i".into()],
        };
        let id = t.id_of(&a.key()).unwrap();
        let l = t.get(id).unwrap();
        assert_eq!(l.compare(&argv), Sameness::Different);
    }

    /// Each listener is a heap block of its own: its size is most of what
    /// a listener costs (docs/benchmarks.md, "Memory").
    #[test]
    fn a_listener_stays_small() {
        assert!(std::mem::size_of::<Listener>() <= 368);
        assert!(std::mem::size_of::<ListenerLimits>() <= 56);
    }

    /// A bound listener keeps its socket: its epoll token names that one.
    #[test]
    fn a_socket_is_the_listeners_for_its_life() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let a = spec(port);
        let mut t = ListenerTable::default();
        let id = t.insert(&a, prep(&a)).unwrap();
        let uid = nix::unistd::geteuid().as_raw();
        let l = t.get_mut(id).unwrap();
        l.bind(uid, 0).unwrap();
        let fd = l.socket().unwrap().as_raw_fd();
        l.bind(uid, 0).unwrap();
        assert_eq!(l.socket().unwrap().as_raw_fd(), fd);
        assert_eq!(l.state(), &State::Listening);
    }

    #[test]
    fn udp_builtin_ports_follow_the_table() {
        let mut t = ListenerTable::default();
        let (u1, u2, tcp) = (udp_builtin(7), udp_builtin(19), spec(13));
        t.insert(&u2, prep(&u2));
        t.insert(&tcp, prep(&tcp));
        let id = t.insert(&u1, prep(&u1)).unwrap();
        assert_eq!(t.udp_builtin_ports(), &[7, 19]);
        // Changed into an exec service: no longer a builtin port.
        let mut exec = u1.clone();
        exec.action = Action::Exec {
            path: "/bin/cat".into(),
            argv: vec!["cat".into()],
        };
        exec.wait = true;
        assert!(t.change(id, &exec, prep(&exec)));
        assert_eq!(t.udp_builtin_ports(), &[19]);
        t.remove(&u2.key());
        assert!(t.udp_builtin_ports().is_empty());
    }

    #[test]
    fn the_state_machine() {
        let mut t = ListenerTable::default();
        let a = spec(7001);
        let id = t.insert(&a, prep(&a)).unwrap();
        let l = t.get_mut(id).unwrap();
        assert_eq!(l.state(), &State::Listening);
        // Not bound yet: nothing to poll.
        assert_eq!(l.pollable(), None);
        l.hold(42);
        assert_eq!(l.state(), &State::Waiting { pid: 42 });
        let knobs = Knobs::default();
        let now = Instant::now();
        l.wait_ended(41, true, now, &knobs);
        assert_eq!(l.state(), &State::Waiting { pid: 42 }, "another child");
        l.wait_ended(42, false, now, &knobs);
        assert_eq!(l.state(), &State::Listening);
        // Failed wait servers: the tenth within the window rests the
        // listener, which is not polled until its backoff is over.
        for i in 0..10 {
            l.hold(100 + i);
            let rest = l.wait_ended(100 + i, true, now, &knobs);
            assert_eq!(rest.is_some(), i == 9, "{i}");
        }
        assert!(matches!(l.state(), State::Resting { .. }));
        assert_eq!(l.pollable(), None);
        assert_eq!(t.next_retry(), Some(now + knobs.wait_backoff(0)));
        t.retry_due(now + knobs.wait_backoff(0), 0);
        let l = t.get_mut(id).unwrap();
        assert_eq!(l.state(), &State::Listening);
        // Paused by the rate limit until its end.
        l.pause(now);
        assert!(l.paused());
        t.retry_due(now, 0);
        let l = t.get_mut(id).unwrap();
        assert_eq!(l.state(), &State::Listening);
        // A failed listener waits for its retry.
        l.state = State::Failed {
            reason: "in use".into(),
            retry_at: now,
            attempt: 2,
        };
        assert_eq!(t.next_retry(), Some(now));
        // Not due yet: untouched.
        t.retry_due(now - std::time::Duration::from_secs(1), 0);
        assert!(matches!(
            t.get(id).unwrap().state(),
            State::Failed { attempt: 2, .. }
        ));
        // Due: bound now, or failed again with the next attempt's delay.
        t.retry_due(now, nix::unistd::geteuid().as_raw());
        match t.get(id).unwrap().state() {
            State::Listening => assert!(t.get(id).unwrap().socket().is_some()),
            State::Failed {
                attempt, retry_at, ..
            } => assert!(*attempt == 3 && *retry_at > now),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bind_keys_for_the_log() {
        let s = spec(7001);
        assert_eq!(
            describe_bind(&s.bind, s.socket_type),
            "127.0.0.1:7001 stream/4"
        );
        let b = Bind::Unix {
            path: "/run/a\"b".into(),
        };
        assert_eq!(
            describe_bind(&b, SocketType::Dgram),
            "/run/a\\\"b dgram/unix"
        );
    }
}
