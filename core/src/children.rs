//! The child table: every child the core started, from fork until it is
//! reaped, with its status pipe until it reaches exec.
//!
//! Invariants, kept here:
//! * a child is in the table from the moment `fork` returns its pid (the
//!   table itself spawns) until `waitpid` reports its end, so a pid the
//!   core signals (only the controller's) cannot have been reused;
//! * `per_listener[id]` is the number of live children of listener `id`,
//!   changed only where a child enters or leaves the table.
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

/// Whose child it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A server or builtin of a listener.
    Server(ListenerId),
    /// The controller (one-command mode).
    Controller,
}

struct Child {
    kind: Kind,
    label: String,
    peer: Option<String>,
    uid: u32,
    started_at: u64,
    started: Instant,
    /// The status pipe until the child reaches exec (end of file) or
    /// reports a failure.
    status: Option<OwnedFd>,
}

/// A child that failed before exec (or its builtin), as its status pipe
/// said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupFailure {
    pub pid: i32,
    pub kind: Kind,
    pub label: String,
    pub step: Step,
    pub errno: i32,
}

impl SetupFailure {
    /// What failed, for the log and a listener's last error:
    /// `exec failed at execve: No such file or directory (os error 2)`.
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

/// A reaped child.
#[derive(Debug)]
pub struct Reaped {
    pub pid: i32,
    pub kind: Kind,
    pub label: String,
    pub started: Instant,
    pub status: ExitStatus,
    /// What its status pipe said, if it failed and that was not read yet.
    pub failure: Option<SetupFailure>,
}

pub struct ChildTable {
    children: HashMap<i32, Child>,
    per_listener: HashMap<ListenerId, u32>,
    /// The core runs one thread: builtins may run after fork.
    single: SingleThreaded,
    /// How long a dgram builtin waits for a datagram before it exits.
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

    /// Starts a child of listener `id` with `fd` as its connection (or its
    /// socket) and records it. `udp_ports` are the configured UDP builtin
    /// ports, which a dgram builtin never answers.
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

    /// Starts the controller (one-command mode) with `fds` on 0, 1, 2, ...
    /// and records it.
    pub fn spawn_controller(
        &mut self,
        identity: &Identity,
        image: &ExecImage,
        fds: &[RawFd],
    ) -> io::Result<i32> {
        let sp = child::spawn_exec(identity, image, &[], fds, None)?;
        Ok(self.record(
            sp,
            Kind::Controller,
            "inetd-controller",
            None,
            identity.uid(),
        ))
    }

    fn record(
        &mut self,
        sp: Spawned,
        kind: Kind,
        label: &str,
        peer: Option<String>,
        uid: u32,
    ) -> i32 {
        self.children.insert(
            sp.pid,
            Child {
                kind,
                label: label.to_owned(),
                peer,
                uid,
                started_at: unix_now(),
                started: Instant::now(),
                status: Some(sp.status),
            },
        );
        sp.pid
    }

    /// The status pipes still open, to poll.
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
        match status {
            ChildStatus::Failed { step, errno } => Some(SetupFailure {
                pid,
                kind: c.kind,
                label: c.label.clone(),
                step,
                errno,
            }),
            ChildStatus::Pending | ChildStatus::Started => None,
        }
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
                if let Some(n) = self.per_listener.get_mut(&id) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.per_listener.remove(&id);
                    }
                }
            }
            let failure = c
                .status
                .take()
                .and_then(|fd| match child::read_status(&fd) {
                    ChildStatus::Failed { step, errno } => Some(SetupFailure {
                        pid,
                        kind: c.kind,
                        label: c.label.clone(),
                        step,
                        errno,
                    }),
                    ChildStatus::Pending | ChildStatus::Started => None,
                });
            out.push(Reaped {
                pid,
                kind: c.kind,
                label: c.label,
                started: c.started,
                status,
                failure,
            });
        }
        out
    }

    /// Live children of listener `id`.
    pub fn count_for(&self, id: ListenerId) -> u32 {
        self.per_listener.get(&id).copied().unwrap_or(0)
    }

    /// The live servers for the status report, by pid; `index` maps a
    /// listener to its place in the report.
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
