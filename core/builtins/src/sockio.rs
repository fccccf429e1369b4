//! Socket calls of the builtins: nonblocking, waiting in poll.
#![forbid(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, shutdown, MsgFlags, Shutdown};

use crate::client_gone;

/// Receive into `buf`, waiting in poll while nothing is there.
///
/// Every socket call here passes MSG_DONTWAIT and waits in poll instead of
/// blocking, whatever O_NONBLOCK says: that flag belongs to the open file
/// description, which the core's copy of a datagram socket shares, so the
/// child never changes it.
///
/// `idle`: a wait that long without data ends with ETIMEDOUT (the client
/// made no progress).
pub(crate) fn recv_wait(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    idle: Duration,
) -> Result<usize, Errno> {
    loop {
        match recv(fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
            Err(Errno::EINTR) => {}
            // POLLHUP and POLLERR end the wait too; the next recv reports them.
            Err(Errno::EAGAIN) => {
                wait_progress(fd, PollFlags::POLLIN, idle)?;
            }
            other => return other,
        }
    }
}

/// Waits up to `idle` for `events`; ETIMEDOUT when none came.
pub(crate) fn wait_progress(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    idle: Duration,
) -> Result<PollFlags, Errno> {
    let ready = wait_for(fd, events, poll_timeout(idle))?;
    if ready.is_empty() {
        return Err(Errno::ETIMEDOUT);
    }
    Ok(ready)
}

/// Send all of `data`, waiting in poll while the socket is full.
/// MSG_NOSIGNAL: a client that went away gives EPIPE, never SIGPIPE (which
/// is at its default in the child). ETIMEDOUT after `idle` without room.
pub(crate) fn send_all(fd: BorrowedFd<'_>, mut data: &[u8], idle: Duration) -> Result<(), Errno> {
    while !data.is_empty() {
        match send(
            fd.as_raw_fd(),
            data,
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(n) => data = data.get(n..).unwrap_or_default(),
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                wait_progress(fd, PollFlags::POLLOUT, idle)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One nonblocking receive, retried on EINTR.
pub(crate) fn recv_now(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<usize, Errno> {
    loop {
        match recv(fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
            Err(Errno::EINTR) => {}
            other => return other,
        }
    }
}

/// Shut down our sending side; a peer that is already gone is not an error.
pub(crate) fn shutdown_write(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    match shutdown(fd.as_raw_fd(), Shutdown::Write) {
        Err(e) if client_gone(e) => Ok(()),
        other => other,
    }
}

/// A poll timeout for `d`, rounded up to whole milliseconds so that a wait
/// never ends just before its deadline, and capped at poll's maximum.
pub(crate) fn poll_timeout(d: Duration) -> PollTimeout {
    let ms = d.as_nanos().div_ceil(1_000_000);
    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
}

/// Wait for `events` on `fd` for at most `timeout`, retrying on EINTR.
/// Returns the events that occurred (empty on timeout).
pub(crate) fn wait_for(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    timeout: PollTimeout,
) -> Result<PollFlags, Errno> {
    loop {
        let mut fds = [PollFd::new(fd, events)];
        match poll(&mut fds, timeout) {
            Ok(0) => return Ok(PollFlags::empty()),
            Ok(_) => {
                let revents = fds[0].revents().unwrap_or(PollFlags::empty());
                // Not an open descriptor: no call on it can succeed, so
                // report it rather than spin on an event nobody consumes.
                if revents.contains(PollFlags::POLLNVAL) {
                    return Err(Errno::EBADF);
                }
                return Ok(revents);
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}
