//! The stream services: echo, discard, chargen, and the one answer of
//! daytime and time.
#![forbid(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::sys::socket::{send, MsgFlags};

use crate::answers::{chargen_two_periods, CHARGEN_PERIOD};
use crate::sockio::{
    poll_timeout, recv_now, recv_wait, send_all, shutdown_write, wait_for, wait_progress,
};
use crate::Failure;

/// Read buffer of the stream services.
const STREAM_BUF: usize = 64 * 1024;

/// daytime and time over TCP: after the answer and our FIN, how long we keep
/// reading away what the client sends, so that closing with unread input does
/// not turn into a reset that could destroy the answer in flight. Bounded in
/// time and bytes: the child never lingers longer than this.
const CLOSE_LINGER: Duration = Duration::from_secs(1);
const CLOSE_LINGER_BYTES: usize = 64 * 1024;

/// echo over a stream: everything back until the client shuts down its
/// sending side, then our FIN. Each read is sent back whole before the next
/// read, so everything received before the client's FIN is echoed.
pub(crate) fn echo(fd: BorrowedFd<'_>, idle: Duration) -> Result<(), Failure> {
    let mut buf = vec![0u8; STREAM_BUF];
    loop {
        let n = recv_wait(fd, &mut buf, idle)?;
        if n == 0 {
            break;
        }
        send_all(fd, buf.get(..n).unwrap_or_default(), idle)?;
    }
    shutdown_write(fd)?;
    Ok(())
}

/// discard over a stream: read and drop until the client's FIN.
pub(crate) fn discard(fd: BorrowedFd<'_>, idle: Duration) -> Result<(), Failure> {
    let mut buf = vec![0u8; STREAM_BUF];
    while recv_wait(fd, &mut buf, idle)? != 0 {}
    shutdown_write(fd)?;
    Ok(())
}

/// chargen over a stream: the pattern from line 0 until the client goes
/// away, reading away (and dropping) whatever it sends so that it never
/// blocks on a full window. Returns through `Err(EPIPE | ECONNRESET)` in the
/// normal case, which [`exit_code`] treats as success; a client that
/// neither reads nor sends for `idle` ends it with ETIMEDOUT.
pub(crate) fn chargen(fd: BorrowedFd<'_>, idle: Duration) -> Result<(), Failure> {
    let ring = chargen_two_periods();
    let mut sink = vec![0u8; STREAM_BUF];
    // Invariant: pos < CHARGEN_PERIOD, so pos..pos + CHARGEN_PERIOD lies
    // within `ring`.
    let mut pos = 0usize;
    let mut client_sending = true;
    loop {
        let mut events = PollFlags::POLLOUT;
        if client_sending {
            events |= PollFlags::POLLIN;
        }
        let ready = wait_progress(fd, events, idle)?;
        if ready.contains(PollFlags::POLLIN) {
            match recv_now(fd, &mut sink) {
                // Half-closed by the client: keep sending (RFC 864 runs until
                // the client closes the connection), stop watching input.
                Ok(0) => client_sending = false,
                Ok(_) | Err(Errno::EAGAIN) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // POLLERR and POLLHUP come without POLLOUT: the send below then
        // returns the pending error (ECONNRESET, EPIPE) and ends the loop.
        if ready.intersects(PollFlags::POLLOUT | PollFlags::POLLERR | PollFlags::POLLHUP) {
            let chunk = ring.get(pos..pos + CHARGEN_PERIOD).unwrap_or_default();
            match send(
                fd.as_raw_fd(),
                chunk,
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(n) => pos = (pos + n) % CHARGEN_PERIOD,
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// daytime and time over a stream: the answer, our FIN, then a bounded wait
/// for the client's FIN (see [`CLOSE_LINGER`]). Nothing the client sends is
/// interpreted.
pub(crate) fn answer_and_close(
    fd: BorrowedFd<'_>,
    answer: &[u8],
    idle: Duration,
) -> Result<(), Failure> {
    send_all(fd, answer, idle)?;
    shutdown_write(fd)?;
    let deadline = Instant::now() + CLOSE_LINGER;
    let mut sink = vec![0u8; STREAM_BUF];
    let mut drained = 0usize;
    while drained < CLOSE_LINGER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || wait_for(fd, PollFlags::POLLIN, poll_timeout(left))?.is_empty() {
            break;
        }
        match recv_now(fd, &mut sink) {
            Ok(0) => break,
            Ok(n) => drained += n,
            Err(Errno::EAGAIN) => {}
            // The client reset after reading the answer: nothing left to do.
            Err(_) => break,
        }
    }
    Ok(())
}
