//! The `internal` services of inetd: echo (RFC 862), discard (RFC 863),
//! chargen (RFC 864), daytime (RFC 867) and time (RFC 868).
//!
//! This crate runs only as the service's user. The core forks a child,
//! drops it to the service's ids, closes everything but one descriptor,
//! and only then calls in here: with the accepted connection
//! ([`serve_stream`]) or the bound datagram socket ([`serve_dgram`]). The
//! functions return the child's exit status; the caller `_exit`s with it.
//! The crate depends on nothing of the core, so none of the root-only code
//! can be reached from here, and a root audit need not read it. Nothing
//! here logs (the child has no stderr) or panics (the release profile
//! aborts).
//!
//! Exit status: 0 when the service ended normally, including a client that
//! went away (reset, broken pipe); 1 on a local error (a failing socket call,
//! an unconvertible local time).
//!
//! UDP builtins answer only sources that pass [`udp_reply_allowed`] (no
//! reflection towards privileged or builtin ports, broadcast, multicast or
//! unspecified sources) and only within a per-source reply budget (see the
//! `limiter` module): two reflectors on high ports (echo against another
//! host's echo or chargen) cannot ping-pong forever, since the loop's
//! datagram is dropped once the budget is spent. The builtins whose answer
//! can be larger than the request (chargen, daytime, time) have a
//! per-child budget too, so a spoofed source cannot turn the child into a
//! traffic amplifier (CVE-1999-0103, US-CERT TA14-017A); echo amplifies
//! nothing and has none, so many honest clients are not slowed together.
//!
//! Unsafe code: none, but in `clock` (the C library's local time, which
//! needs `localtime_r` and `tzset`); every other module forbids it.
#![deny(unsafe_code)]

mod answers;
pub mod clock;
mod dgram;
mod limiter;
mod sockio;
mod stream;

use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, SystemTime};

use inetd_protocol::Builtin;
use nix::errno::Errno;

pub use answers::{chargen_line, daytime_line, time_bytes};
pub use dgram::{udp_reply_allowed, UdpGuard};

/// The child's exit status when the service ended as it should.
const EXIT_OK: i32 = 0;
/// The child's exit status after a local error.
const EXIT_FAILED: i32 = 1;

/// Serve one accepted stream connection; returns the exit code.
///
/// echo, discard and chargen run until the client goes away; daytime and
/// time answer, send FIN and wait a moment for the client's (see
/// `stream::CLOSE_LINGER`). `conn` may be blocking or not: every call passes
/// MSG_DONTWAIT and waits in poll, and the descriptor's flags are left as
/// they are. A connection without progress (nothing read, nothing
/// written) for `idle` is closed: a client that never reads cannot hold
/// a child and its queued data forever.
pub fn serve_stream(b: Builtin, conn: OwnedFd, idle: Duration) -> i32 {
    let fd = conn.as_fd();
    let result = match b {
        Builtin::Echo => stream::echo(fd, idle),
        Builtin::Discard => stream::discard(fd, idle),
        Builtin::Chargen => stream::chargen(fd, idle),
        Builtin::Daytime => match daytime_line(unix_now()) {
            Some(line) => stream::answer_and_close(fd, line.as_bytes(), idle),
            // RFC 868's advice for a server that cannot tell the time,
            // applied to daytime too: close without sending anything.
            None => Err(Failure::Clock),
        },
        Builtin::Time => stream::answer_and_close(fd, &time_bytes(unix_now()), idle),
    };
    drop(conn);
    exit_code(result)
}

/// Serve datagrams on the bound `sock` until no datagram arrived for `idle`;
/// returns the exit code.
///
/// `sock` shares its open file description with the core's copy, so its
/// flags (O_NONBLOCK) are left as they are. Replies go only to sources that
/// pass [`udp_reply_allowed`] and fit the reply budget; discard never
/// replies.
pub fn serve_dgram(b: Builtin, sock: OwnedFd, idle: Duration, guard: &UdpGuard) -> i32 {
    let fd = sock.as_fd();
    let result = dgram::serve(b, fd, idle, guard);
    drop(sock);
    exit_code(result)
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(a),
        },
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// The current time in whole seconds since the Unix epoch, rounded down like
/// `time(2)`, negative before 1970 (RFC 868 still has an answer then).
fn unix_now() -> i64 {
    inetd_protocol::unix_seconds(SystemTime::now())
}

/// Why a service ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// A socket call failed.
    Sys(Errno),
    /// The local time could not be computed.
    Clock,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Sys(e) => write!(f, "socket call failed: {e}"),
            Failure::Clock => f.write_str("the local time is not available"),
        }
    }
}

impl From<Errno> for Failure {
    fn from(e: Errno) -> Self {
        Failure::Sys(e)
    }
}

/// Errors that mean the client went away (or the path to it did): the normal
/// end of a chargen or echo stream, not a failure of the service.
pub(crate) fn client_gone(e: Errno) -> bool {
    matches!(
        e,
        Errno::EPIPE
            | Errno::ECONNRESET
            | Errno::ECONNABORTED
            | Errno::ETIMEDOUT
            | Errno::EHOSTUNREACH
            | Errno::ENETUNREACH
            | Errno::ENOTCONN
    )
}

fn exit_code(result: Result<(), Failure>) -> i32 {
    match result {
        Ok(()) => EXIT_OK,
        Err(Failure::Sys(e)) if client_gone(e) => EXIT_OK,
        Err(_) => EXIT_FAILED,
    }
}

#[cfg(test)]
mod tests;
