//! epoll, for the event loop: one registration per descriptor, made when it
//! starts to matter and changed only when its interest changes, so a turn
//! of the loop costs the same with one listener as with ten thousand.
//!
//! Every registration is one-shot (`EPOLLONESHOT`): after it reports once it
//! stays disarmed until the loop arms it again. A registration outlives the
//! descriptor it was made with while a child still holds a copy of the same
//! open file (a child between clone and exec, a wait server); one-shot, such
//! a leftover reports at most once, under a token the loop no longer knows,
//! instead of making every wait return at once.
//!
//! The one exception is a descriptor the loop never closes while it runs
//! (the signalfd): no leftover of it can outlive its number, so it may stay
//! armed (`Mode::Persistent`, level-triggered) and costs no `epoll_ctl` per
//! report. Its reader must empty it each time it reports.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Readable.
pub const IN: u32 = libc::EPOLLIN as u32;
/// Writable.
pub const OUT: u32 = libc::EPOLLOUT as u32;
/// Error or hang-up (always reported, never asked for).
pub const ERR_HUP: u32 = (libc::EPOLLERR | libc::EPOLLHUP) as u32;

const ONESHOT: u32 = libc::EPOLLONESHOT as u32;

/// How a registration behaves after it reported (see the top of this
/// file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Disarmed until armed again.
    OneShot,
    /// Still armed: only for a descriptor never closed while registered.
    Persistent,
}

/// What one wait reported: a token and its events.
pub type Event = libc::epoll_event;

/// The token and events of a reported [`Event`].
pub fn event_parts(e: &Event) -> (u64, u32) {
    // Copies out of the (packed on x86-64) structure.
    let (data, events) = (e.u64, e.events);
    (data, events)
}

/// An empty event buffer entry, for the caller's reused buffer.
pub fn empty_event() -> Event {
    libc::epoll_event { events: 0, u64: 0 }
}

pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// A close-on-exec epoll instance.
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain system call with a flag argument.
        let fd = super::cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by the kernel and is owned by no one
        // else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, ev: (u32, Mode), token: u64) -> io::Result<()> {
        let (events, mode) = ev;
        let mut ev = libc::epoll_event {
            events: if mode == Mode::OneShot {
                events | ONESHOT
            } else {
                events
            },
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        super::cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) }).map(|_| ())
    }

    /// Registers `fd`, armed for `events`, reported as `token`.
    pub fn add(&self, fd: RawFd, events: u32, mode: Mode, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, (events, mode), token)
    }

    /// Arms `fd` again (or for other events); `events` 0 leaves it
    /// registered but disarmed.
    pub fn modify(&self, fd: RawFd, events: u32, mode: Mode, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, (events, mode), token)
    }

    /// Waits at most `timeout_ms` (-1: no limit) and fills `out`; returns how
    /// many entries were filled. EINTR is zero events.
    pub fn wait(&self, out: &mut [Event], timeout_ms: i32) -> io::Result<usize> {
        let max = libc::c_int::try_from(out.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `out` is a valid, exclusively borrowed array of at least
        // `max` epoll_event structures.
        let r = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), out.as_mut_ptr(), max, timeout_ms) };
        if r == -1 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(e);
        }
        Ok(r as usize)
    }
}
