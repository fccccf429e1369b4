//! A child's status pipe: how a child tells the core which step of the
//! child path failed (and with which errno), or, by closing it at exec,
//! that it started. The write end is close-on-exec in the child; the read
//! end is nonblocking in the core, polled until end of file.
#![forbid(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, OwnedFd};

/// A child's status pipe, made before the child is needed: the core makes
/// it before it accepts a connection, so that running out of descriptors
/// shows before a connection is taken (and would have to be dropped), not
/// after.
#[derive(Debug)]
pub struct StatusPipe {
    pub(super) rd: OwnedFd,
    pub(super) wr: OwnedFd,
}

impl StatusPipe {
    /// A close-on-exec pipe; the read end nonblocking.
    pub fn new() -> io::Result<StatusPipe> {
        let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(super::nix_err)?;
        super::set_nonblocking(rd.as_fd(), true)?;
        Ok(StatusPipe { rd, wr })
    }
}

/// A started child and the read end of its status pipe (nonblocking): end
/// of file means it reached exec (or its builtin); eight bytes mean it
/// failed, see [`read_status`].
pub struct Spawned {
    pub pid: i32,
    pub status: OwnedFd,
}

/// The step of the child path that failed, as sent over the status pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    Setsid = 1,
    Signals = 2,
    Setgroups = 3,
    Setgid = 4,
    Setuid = 5,
    VerifyIds = 6,
    RegainRoot = 7,
    NoNewPrivs = 8,
    Chdir = 9,
    Descriptors = 10,
    Exec = 11,
    Keyring = 12,
    Capabilities = 13,
    Limits = 14,
    Unknown = 0,
}

impl Step {
    pub(super) fn from_u32(n: u32) -> Step {
        match n {
            1 => Step::Setsid,
            2 => Step::Signals,
            3 => Step::Setgroups,
            4 => Step::Setgid,
            5 => Step::Setuid,
            6 => Step::VerifyIds,
            7 => Step::RegainRoot,
            8 => Step::NoNewPrivs,
            9 => Step::Chdir,
            10 => Step::Descriptors,
            11 => Step::Exec,
            12 => Step::Keyring,
            13 => Step::Capabilities,
            14 => Step::Limits,
            _ => Step::Unknown,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Step::Setsid => "setsid",
            Step::Signals => "signal reset",
            Step::Setgroups => "setgroups",
            Step::Setgid => "setgid",
            Step::Setuid => "setuid",
            Step::VerifyIds => "id check",
            Step::RegainRoot => "uid 0 could be regained",
            Step::NoNewPrivs => "no_new_privs",
            Step::Chdir => "chdir /",
            Step::Descriptors => "descriptor set-up",
            Step::Exec => "execve",
            Step::Keyring => "session keyring",
            Step::Capabilities => "capabilities left after the id change",
            Step::Limits => "resource limits",
            Step::Unknown => "unknown step",
        }
    }
}

/// What the status pipe said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildStatus {
    /// Nothing yet.
    Pending,
    /// End of file: the child reached exec or its builtin.
    Started,
    /// The child failed at `step` with `errno` and exits 127.
    Failed { step: Step, errno: i32 },
}

/// Reads the status pipe without blocking.
pub fn read_status(fd: &OwnedFd) -> ChildStatus {
    let mut buf = [0u8; 8];
    let mut got = 0;
    // The 8 bytes are written by one write(2) of less than PIPE_BUF, so they
    // arrive together; loop only for EINTR.
    while got < buf.len() {
        match super::read_nb(fd.as_fd(), &mut buf[got..]) {
            Ok(None) => {
                if got == 0 {
                    return ChildStatus::Pending;
                }
            }
            Ok(Some(0)) => break,
            Ok(Some(n)) => got += n,
            Err(_) => return ChildStatus::Started,
        }
    }
    if got < buf.len() {
        return ChildStatus::Started;
    }
    let step = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
    ChildStatus::Failed {
        step: Step::from_u32(step),
        errno,
    }
}
