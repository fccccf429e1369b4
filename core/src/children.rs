//! The child table: every child the core started, with its status pipe
//! until it reaches exec, and the stopping of the children that go with
//! their listener. Invariants, kept here:
//! * a child is in the table from fork (the table itself spawns) until it
//!   is reaped, so a pid the core signals cannot have been reused;
//! * only this table reaps; while any child is being stopped, only a child
//!   it has looked at first while it was still a zombie (see
//!   [`ChildTable::reap`]);
//! * `per_listener[id]` counts the live children of listener `id`;
//! * `stopping` holds the children asked to stop and not reaped yet.
//!
//! Stopping. A child that holds its listener's socket (a wait server, a
//! dgram builtin) goes with it. It is a session leader, so its process
//! group holds its helpers too (tftpd's per-transfer children): the group
//! gets SIGTERM, then SIGKILL when the grace is over. `killpg` is safe only
//! while the leader is unreaped (its pid, and so the group's id, cannot be
//! reused before), so when a leader asked to stop has ended, what is left
//! of its group gets SIGKILL before the leader is reaped. Helpers of a
//! leader that ended on its own, and processes that left the group, are
//! not tracked. Single processes go through pidfds.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use inetd_builtins::{serve_dgram, serve_stream, UdpGuard};
use inetd_protocol::{unix_now, Builtin, ChildInfo, SocketType};
use log::{debug, info, warn};

use crate::listeners::{Listener, ListenerId};
use crate::peer::Peer;
use crate::sys::child::{self, ChildStatus, SingleThreaded, Spawned, StatusPipe, Step};
use crate::sys::spawn::Spawner;
use crate::sys::title::{self, ArgArea};
use crate::sys::{self, ExitStatus};
use crate::validate::{ExecImage, Identity, Program};

/// From SIGTERM to SIGKILL, for a child asked to stop.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// The environment variable that shortens [`STOP_GRACE`], for tests only:
/// milliseconds, 1 to 5,000.
pub const TEST_GRACE_ENV: &str = "INETD_TEST_STOP_GRACE_MS";

/// The grace the core uses: [`STOP_GRACE`], or what [`TEST_GRACE_ENV`]
/// (`value`) asks for, which can only shorten it; an unusable value is
/// logged and ignored.
pub fn stop_grace(value: Option<&str>) -> Duration {
    let Some(v) = value else {
        return STOP_GRACE;
    };
    match v.parse::<u64>().map(Duration::from_millis) {
        Ok(d) if !d.is_zero() && d <= STOP_GRACE => {
            warn!(
                "{TEST_GRACE_ENV}={v}: children asked to stop are killed after {v} ms (for tests)"
            );
            d
        }
        _ => {
            warn!("{TEST_GRACE_ENV}={v:?} ignored: milliseconds from 1 to 5000");
            STOP_GRACE
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Server(ListenerId),
    /// One-command mode.
    Controller,
}

struct Child {
    kind: Kind,
    label: Rc<str>,
    peer: Option<Peer>,
    uid: u32,
    started_at: u64,
    started: Instant,
    /// Until the child reaches exec (end of file) or reports a failure.
    status: Option<OwnedFd>,
    /// It holds its listener's socket (a wait server, a dgram builtin).
    holder: bool,
    /// For the children the core may signal (holders, the controller);
    /// `None` where the kernel gave none.
    pidfd: Option<OwnedFd>,
}

/// A child that failed before exec (or its builtin), as its pipe said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupFailure {
    pub pid: i32,
    pub kind: Kind,
    pub label: String,
    pub step: Step,
    pub errno: i32,
}

impl SetupFailure {
    pub fn what(&self) -> &'static str {
        if self.step == Step::Exec {
            "exec failed"
        } else {
            "child set-up failed"
        }
    }

    /// `: <error>`, or nothing when the step carries no errno.
    pub fn err_text(&self) -> String {
        if self.errno == 0 {
            String::new()
        } else {
            format!(": {}", io::Error::from_raw_os_error(self.errno))
        }
    }
}

#[derive(Debug)]
pub struct Reaped {
    pub pid: i32,
    pub kind: Kind,
    pub label: Rc<str>,
    pub started: Instant,
    pub status: ExitStatus,
    /// A failure its status pipe reported and nobody had read yet.
    pub failure: Option<SetupFailure>,
    /// The core had asked it to stop (its listener went, or the core stops).
    pub stopped: bool,
}

impl Child {
    fn failure(&self, pid: i32, status: ChildStatus) -> Option<SetupFailure> {
        let ChildStatus::Failed { step, errno } = status else {
            return None;
        };
        let (kind, label) = (self.kind, self.label.to_string());
        Some(SetupFailure {
            pid,
            kind,
            label,
            step,
            errno,
        })
    }
}

pub struct ChildTable {
    children: HashMap<i32, Child>,
    per_listener: HashMap<ListenerId, u32>,
    /// When SIGKILL is due; `None` once sent.
    stopping: HashMap<i32, Option<Instant>>,
    single: SingleThreaded,
    idle: BuiltinIdle,
    grace: Duration,
    /// Starts the exec children; reused for every one.
    spawner: Spawner,
    /// The per-connection environment, formatted anew for each connection.
    env: Vec<u8>,
    /// The core's argument area, where a builtin child writes its name.
    args: Option<ArgArea>,
    /// The core had children when the table was made (inherited across
    /// the exec that started it): the table may be empty while children
    /// are left to reap.
    strangers: bool,
}

/// What a builtin child is called in `ps` and `pgrep`.
fn builtin_name(b: Builtin) -> &'static CStr {
    match b {
        Builtin::Echo => c"inetd-echo",
        Builtin::Discard => c"inetd-discard",
        Builtin::Chargen => c"inetd-chargen",
        Builtin::Daytime => c"inetd-daytime",
        Builtin::Time => c"inetd-time",
    }
}

/// How long a builtin child waits for its client: a datagram builtin
/// exits after `dgram` without a datagram; a stream builtin closes its
/// connection after `stream` without progress.
#[derive(Debug, Clone, Copy)]
pub struct BuiltinIdle {
    pub dgram: Duration,
    pub stream: Duration,
}

impl ChildTable {
    pub fn new(single: SingleThreaded, idle: BuiltinIdle, grace: Duration) -> ChildTable {
        ChildTable {
            children: HashMap::new(),
            per_listener: HashMap::new(),
            stopping: HashMap::new(),
            single,
            idle,
            grace,
            spawner: Spawner::default(),
            env: Vec::with_capacity(512),
            args: title::ArgArea::of_self(),
            strangers: sys::has_children(),
        }
    }

    /// Whether the core has many listeners: its exec children then copy
    /// only the low part of its descriptor table (see `sys::spawn`).
    pub fn set_many_listeners(&mut self, many: bool) {
        self.spawner.set_many_listeners(many);
    }

    /// Starts and records a child of listener `id`, with `fd` as its
    /// connection (from `peer`) or socket. A builtin child takes `pipe` as
    /// its status pipe; an exec child needs none (see `sys::spawn`).
    pub fn spawn_server(
        &mut self,
        id: ListenerId,
        l: &Listener,
        fd: RawFd,
        peer: Option<Peer>,
        pipe: &mut Option<StatusPipe>,
        udp_ports: &[u16],
    ) -> io::Result<i32> {
        let prep = l.prepared();
        let identity = prep.identity();
        let sp = match prep.program() {
            Program::Exec(image) => {
                self.env.clear();
                if let Some(p) = &peer {
                    p.write_env(&mut self.env);
                }
                let fds = [fd, fd, fd];
                self.spawner.exec(identity, image, &self.env, &fds)?
            }
            // Only the socket stays open in a builtin child, on fd 0: it
            // never execs and never prints, so it needs no stdio.
            Program::Builtin(b) => {
                let b = *b;
                let args = self.args;
                let named = move || title::set(builtin_name(b), args);
                match l.spec().socket_type {
                    SocketType::Dgram => {
                        let guard = UdpGuard {
                            builtin_ports: udp_ports.to_vec(),
                        };
                        let idle = self.idle.dgram;
                        let serve = move |fd| {
                            named();
                            serve_dgram(b, fd, idle, &guard)
                        };
                        child::spawn_builtin(identity, fd, serve, pipe.take(), &self.single)
                    }
                    SocketType::Stream | SocketType::Seqpacket => {
                        let idle = self.idle.stream;
                        let serve = move |fd| {
                            named();
                            serve_stream(b, fd, idle)
                        };
                        child::spawn_builtin(identity, fd, serve, pipe.take(), &self.single)
                    }
                }
                .map(|Spawned { pid, status }| (pid, Some(status)))?
            }
        };
        *self.per_listener.entry(id).or_default() += 1;
        let holder = l.hands_socket();
        let kind = Kind::Server(id);
        let label = l.shared_label();
        Ok(self.record(sp, kind, label, peer, identity.uid(), holder))
    }

    /// Starts and records the controller, `fds` on 0, 1, 2, ...
    pub fn spawn_controller(
        &mut self,
        id: &Identity,
        image: &ExecImage,
        fds: &[RawFd],
    ) -> io::Result<i32> {
        let sp = self.spawner.exec(id, image, &[], fds)?;
        let kind = Kind::Controller;
        Ok(self.record(sp, kind, "inetd-controller".into(), None, id.uid(), true))
    }

    /// Records a new child; `signalled`: the core may signal it (it gets a
    /// pidfd), true for holders and the controller.
    fn record(
        &mut self,
        (pid, status): (i32, Option<OwnedFd>),
        kind: Kind,
        label: Rc<str>,
        peer: Option<Peer>,
        uid: u32,
        signalled: bool,
    ) -> i32 {
        let (started_at, started) = (unix_now(), Instant::now());
        // Taken now, while the child cannot have been reaped.
        let pidfd = signalled.then(|| sys::pidfd_open(pid).ok()).flatten();
        let holder = signalled && kind != Kind::Controller;
        let c = Child {
            kind,
            label,
            peer,
            uid,
            started_at,
            started,
            status,
            holder,
            pidfd,
        };
        self.children.insert(pid, c);
        pid
    }

    pub fn status_fds(&self) -> impl Iterator<Item = (i32, RawFd)> + '_ {
        self.children
            .iter()
            .filter_map(|(pid, c)| c.status.as_ref().map(|fd| (*pid, fd.as_raw_fd())))
    }

    /// Reads child `pid`'s status pipe: the failure it reports, if any.
    pub fn on_status(&mut self, pid: i32) -> Option<SetupFailure> {
        let c = self.children.get_mut(&pid)?;
        let status = child::read_status(c.status.as_ref()?);
        if status != ChildStatus::Pending {
            c.status = None;
        }
        c.failure(pid, status)
    }

    /// Reaps every child that has ended. While any child is being
    /// stopped, each is looked at while it is still a zombie: a leader that
    /// was asked to stop takes what is left of its group with it (SIGKILL)
    /// before it is reaped, the last moment its group can be named safely.
    /// Otherwise no child needs that look, and each is reaped in one call.
    /// A pid the table does not know (none is expected: the table records
    /// every child the core starts) is logged and reaped.
    /// What was reaped is appended to `out`, which the caller keeps.
    pub fn reap(&mut self, out: &mut Vec<Reaped>) {
        // Every child the core starts is in the table from its clone on,
        // so once the table is empty there is nothing left to reap (unless
        // the core inherited children from before its exec): no call to
        // find none.
        while !self.children.is_empty() || self.strangers {
            let (pid, status) = if self.stopping.is_empty() {
                match sys::reap_any() {
                    Some(r) => r,
                    None => break,
                }
            } else {
                let Some(pid) = sys::ended_child() else { break };
                if let (Some(c), Some(Some(_))) = (self.children.get(&pid), self.stopping.get(&pid))
                {
                    if c.holder {
                        let _ = signal(pid, c, libc::SIGKILL);
                    }
                }
                let Some(status) = sys::reap(pid) else {
                    // Not ours to reap after all (cannot happen): stop here
                    // rather than loop on it.
                    warn!("could not reap pid={pid}");
                    break;
                };
                (pid, status)
            };
            let stopped = self.stopping.remove(&pid).is_some();
            let Some(mut c) = self.children.remove(&pid) else {
                debug!("reaped unknown child pid={pid} status={status}");
                continue;
            };
            if let Kind::Server(id) = c.kind {
                let n = self.per_listener.entry(id).or_default();
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_listener.remove(&id);
                }
            }
            // A child that never had a pipe reports in its spawn slot.
            let slot = self.spawner.outcome(pid);
            let said = match c.status.take() {
                Some(fd) => child::read_status(&fd),
                None => slot,
            };
            let failure = c.failure(pid, said);
            let (kind, label, started) = (c.kind, c.label, c.started);
            out.push(Reaped {
                pid,
                kind,
                label,
                started,
                status,
                failure,
                stopped,
            });
        }
    }

    /// Asks child `pid` to stop, if it is in the table and the core may
    /// signal it (a holder, the controller): SIGTERM now, to its process
    /// group for a server, SIGKILL when the grace is over. False if it is
    /// not such a child; true if it is stopping (already, or now).
    pub fn stop(&mut self, pid: i32) -> bool {
        let Some(c) = self.children.get(&pid) else {
            return false;
        };
        if !(c.holder || c.kind == Kind::Controller) {
            return false;
        }
        if self.stopping.contains_key(&pid) {
            return true;
        }
        let ms = self.grace.as_millis();
        info!(
            "{}: stopping pid {pid}: SIGTERM, SIGKILL in {ms} ms",
            c.label
        );
        if let Err(e) = signal(pid, c, libc::SIGTERM) {
            warn!("cannot send SIGTERM to pid={pid}: {e}");
        }
        self.stopping.insert(pid, Some(Instant::now() + self.grace));
        true
    }

    /// Asks every holder and the controller to stop (the core stops);
    /// nowait children are left to finish.
    pub fn stop_all(&mut self) {
        let pids: Vec<i32> = self.children.keys().copied().collect();
        for pid in pids {
            self.stop(pid);
        }
    }

    /// From SIGTERM to SIGKILL.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// How many children were asked to stop and have not been reaped.
    pub fn stopping(&self) -> usize {
        self.stopping.len()
    }

    /// When the next SIGKILL is due.
    pub fn next_kill(&self) -> Option<Instant> {
        self.stopping.values().flatten().min().copied()
    }

    /// SIGKILL to each child asked to stop whose grace is over at `now`
    /// (every one with `now` = `None`).
    pub fn kill_due(&mut self, now: Option<Instant>) {
        for (pid, kill_at) in &mut self.stopping {
            match (*kill_at, now) {
                (None, _) => continue,
                (Some(at), Some(now)) if at > now => continue,
                _ => {}
            }
            let Some(c) = self.children.get(pid) else {
                continue;
            };
            warn!(
                "{}: pid {pid} has not stopped after SIGTERM; SIGKILL",
                c.label
            );
            if let Err(e) = signal(*pid, c, libc::SIGKILL) {
                warn!("cannot send SIGKILL to pid={pid}: {e}");
            }
            *kill_at = None;
        }
    }

    /// Sends `sig` to child `pid` alone (the controller's SIGHUP).
    pub fn signal(&self, pid: i32, sig: i32) -> io::Result<()> {
        match self.children.get(&pid) {
            Some(c) => signal_process(pid, c, sig),
            None => Err(io::Error::from_raw_os_error(libc::ESRCH)),
        }
    }

    pub fn count_for(&self, id: ListenerId) -> u32 {
        self.per_listener.get(&id).copied().unwrap_or(0)
    }

    /// The live servers of every listener together (the controller aside).
    pub fn live_servers(&self) -> u32 {
        self.per_listener.values().sum()
    }

    /// The live servers for the status report; `index` maps a listener to
    /// its place in it.
    pub fn servers(&self, index: impl Fn(ListenerId) -> Option<u32>) -> Vec<ChildInfo> {
        let mut v: Vec<ChildInfo> = self
            .children
            .iter()
            .filter_map(|(pid, c)| match c.kind {
                Kind::Server(id) => Some(ChildInfo {
                    pid: pid.unsigned_abs(),
                    listener: index(id),
                    peer: c.peer.map(|p| p.log_text()),
                    uid: c.uid,
                    started_at: c.started_at,
                }),
                Kind::Controller => None,
            })
            .collect();
        v.sort_by_key(|c| c.pid);
        v
    }
}

/// Sends `sig` to child `pid`, which is in the table (unreaped): a
/// server's whole process group, the controller alone.
fn signal(pid: i32, c: &Child, sig: i32) -> io::Result<()> {
    if c.kind != Kind::Controller {
        match sys::killpg(pid, sig) {
            // No such group yet: the child has not reached `setsid`, so it
            // has no helpers either. The signal to it alone stays pending
            // (the core's mask blocks it) until the child resets its
            // dispositions and clears its mask.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            r => return r,
        }
    }
    signal_process(pid, c, sig)
}

/// Sends `sig` to child `pid` alone: through its pidfd, or, where there
/// is none, by its pid, which cannot have been reused while the child is
/// in the table.
fn signal_process(pid: i32, c: &Child, sig: i32) -> io::Result<()> {
    match &c.pidfd {
        Some(fd) => sys::pidfd_signal(fd.as_fd(), sig),
        None => sys::kill(pid, sig),
    }
}

#[cfg(test)]
impl ChildTable {
    /// Children in the table.
    pub fn live(&self) -> usize {
        self.children.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grace_can_only_be_shortened() {
        assert_eq!(stop_grace(None), STOP_GRACE);
        assert_eq!(stop_grace(Some("800")), Duration::from_millis(800));
        assert_eq!(stop_grace(Some("5000")), STOP_GRACE);
        for bad in ["0", "5001", "-1", "", "1s", "99999999999999999999"] {
            assert_eq!(stop_grace(Some(bad)), STOP_GRACE, "{bad:?}");
        }
    }

    #[test]
    fn setup_failures_read_well() {
        let f = SetupFailure {
            pid: 7,
            kind: Kind::Controller,
            label: "inetd-controller".into(),
            step: Step::Exec,
            errno: libc::ENOENT,
        };
        assert_eq!(f.what(), "exec failed");
        assert!(
            f.err_text().starts_with(": No such file"),
            "{}",
            f.err_text()
        );
        let f = SetupFailure {
            step: Step::RegainRoot,
            errno: 0,
            ..f
        };
        assert_eq!(
            (f.what(), f.err_text()),
            ("child set-up failed", String::new())
        );
    }
}
