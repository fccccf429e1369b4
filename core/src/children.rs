//! The child table: every child the core started, with its status pipe
//! until it reaches exec. Invariants, kept here:
//! * a child is in the table from fork (the table itself spawns) until it
//!   is reaped, so a pid the core signals cannot have been reused;
//! * `per_listener[id]` counts the live children of listener `id`.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use inetd_builtins::{serve_dgram, serve_stream, UdpGuard};
use inetd_protocol::{unix_now, ChildInfo, SocketType};

use crate::listeners::{Listener, ListenerId};
use crate::sys::child::{self, ChildStatus, SingleThreaded, Spawned, StatusPipe, Step};
use crate::sys::{self, ExitStatus};
use crate::validate::{ExecImage, Identity, Program};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Server(ListenerId),
    /// One-command mode.
    Controller,
}

struct Child {
    kind: Kind,
    label: String,
    peer: Option<String>,
    uid: u32,
    started_at: u64,
    started: Instant,
    /// Until the child reaches exec (end of file) or reports a failure.
    status: Option<OwnedFd>,
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
    pub label: String,
    pub started: Instant,
    pub status: ExitStatus,
    /// A failure its status pipe reported and nobody had read yet.
    pub failure: Option<SetupFailure>,
}

impl Child {
    fn failure(&self, pid: i32, status: ChildStatus) -> Option<SetupFailure> {
        let ChildStatus::Failed { step, errno } = status else {
            return None;
        };
        let (kind, label) = (self.kind, self.label.clone());
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
    single: SingleThreaded,
    dgram_idle: Duration,
}

impl ChildTable {
    pub fn new(single: SingleThreaded, dgram_idle: Duration) -> ChildTable {
        ChildTable {
            children: HashMap::new(),
            per_listener: HashMap::new(),
            single,
            dgram_idle,
        }
    }

    /// Starts and records a child of listener `id`, with `fd` as its
    /// connection (`conn`: peer text and environment) or socket.
    pub fn spawn_server(
        &mut self,
        id: ListenerId,
        l: &Listener,
        fd: RawFd,
        conn: Option<(String, Vec<CString>)>,
        pipe: Option<StatusPipe>,
        udp_ports: &[u16],
    ) -> io::Result<i32> {
        let prep = l.prepared();
        let identity = prep.identity();
        let (peer, env) = match conn {
            Some((peer, env)) => (Some(peer), env),
            None => (None, Vec::new()),
        };
        let sp = match prep.program() {
            Program::Exec(image) => child::spawn_exec(identity, image, &env, &[fd, fd, fd], pipe),
            // Only the socket stays open in a builtin child, on fd 0: it
            // never execs and never prints, so it needs no stdio.
            Program::Builtin(b) => {
                let b = *b;
                match l.spec().socket_type {
                    SocketType::Dgram => {
                        let guard = UdpGuard {
                            builtin_ports: udp_ports.to_vec(),
                        };
                        let idle = self.dgram_idle;
                        let serve = move |fd| serve_dgram(b, fd, idle, &guard);
                        child::spawn_builtin(identity, fd, serve, pipe, &self.single)
                    }
                    SocketType::Stream | SocketType::Seqpacket => {
                        let serve = move |fd| serve_stream(b, fd);
                        child::spawn_builtin(identity, fd, serve, pipe, &self.single)
                    }
                }
            }
        }?;
        *self.per_listener.entry(id).or_default() += 1;
        Ok(self.record(sp, Kind::Server(id), l.label(), peer, identity.uid()))
    }

    /// Starts and records the controller, `fds` on 0, 1, 2, ...
    pub fn spawn_controller(
        &mut self,
        id: &Identity,
        image: &ExecImage,
        fds: &[RawFd],
    ) -> io::Result<i32> {
        let sp = child::spawn_exec(id, image, &[], fds, None)?;
        Ok(self.record(sp, Kind::Controller, "inetd-controller", None, id.uid()))
    }

    fn record(
        &mut self,
        sp: Spawned,
        kind: Kind,
        label: &str,
        peer: Option<String>,
        uid: u32,
    ) -> i32 {
        let (started_at, started) = (unix_now(), Instant::now());
        let label = label.to_owned();
        let status = Some(sp.status);
        let c = Child {
            kind,
            label,
            peer,
            uid,
            started_at,
            started,
            status,
        };
        self.children.insert(sp.pid, c);
        sp.pid
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

    /// Reaps every child that has ended. A pid the table does not know
    /// (none is expected) is logged and skipped.
    pub fn reap(&mut self) -> Vec<Reaped> {
        let mut out = Vec::new();
        while let Some((pid, status)) = sys::reap_one() {
            let Some(mut c) = self.children.remove(&pid) else {
                log::debug!("reaped unknown child pid={pid} status={status}");
                continue;
            };
            if let Kind::Server(id) = c.kind {
                let n = self.per_listener.entry(id).or_default();
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_listener.remove(&id);
                }
            }
            let failure = c
                .status
                .take()
                .and_then(|fd| c.failure(pid, child::read_status(&fd)));
            let (kind, label, started) = (c.kind, c.label, c.started);
            out.push(Reaped {
                pid,
                kind,
                label,
                started,
                status,
                failure,
            });
        }
        out
    }

    pub fn count_for(&self, id: ListenerId) -> u32 {
        self.per_listener.get(&id).copied().unwrap_or(0)
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
                    peer: c.peer.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
