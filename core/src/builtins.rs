//! The `internal` services: echo (RFC 862), discard (RFC 863), chargen
//! (RFC 864), daytime (RFC 867) and time (RFC 868).
//!
//! Each runs in a forked child of the core that has already dropped to the
//! service's user and holds exactly one descriptor: the accepted connection
//! ([`serve_stream`]) or the bound datagram socket ([`serve_dgram`]). The
//! functions return the child's exit status; the caller `_exit`s with it.
//! Nothing here logs (the child has no stderr) or panics (the release
//! profile aborts).
//!
//! Exit status: 0 when the service ended normally, including a client that
//! went away (reset, broken pipe); 1 on a local error (a failing socket call,
//! an unconvertible local time).
//!
//! UDP builtins answer only sources that pass [`udp_reply_allowed`] (no
//! reflection towards privileged or builtin ports, broadcast, multicast or
//! unspecified sources) and, for the builtins whose answer can be larger
//! than the request (chargen, daytime, time), only within a per-source and
//! a per-child reply rate (see [`ReplyLimiter`]), so a spoofed source cannot
//! turn the child into a traffic amplifier (CVE-1999-0103, US-CERT
//! TA14-017A). echo is not rate-limited: its answer is the request itself,
//! so it amplifies nothing, and capping it would only slow honest clients.

#![forbid(unsafe_code)]

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant, SystemTime};

use inetd_protocol::Builtin;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    getsockname, recv, recvmmsg, send, sendto, shutdown, MsgFlags, MultiHeaders, Shutdown,
    SockaddrStorage,
};

use crate::sys::clock;

/// The child's exit status when the service ended as it should.
const EXIT_OK: i32 = 0;
/// The child's exit status after a local error.
const EXIT_FAILED: i32 = 1;

/// Local ports that UDP builtins never answer, besides those below 1024.
/// 2049 is NFS, the classic target of reflected traffic (OpenBSD inetd).
const NFS_PORT: u16 = 2049;

/// Seconds from 1900-01-01 to 1970-01-01 (RFC 868).
const RFC868_EPOCH_OFFSET: i64 = 2_208_988_800;

/// chargen: characters per line, before CRLF (RFC 864).
const CHARGEN_WIDTH: usize = 72;
/// chargen: one line as sent, CRLF included.
const CHARGEN_LINE: usize = CHARGEN_WIDTH + 2;
/// chargen: the printable ASCII characters 0x20..=0x7E; the pattern repeats
/// after this many lines.
const CHARGEN_RING: usize = 95;
/// chargen: one full period of the stream (95 lines, 7030 bytes).
const CHARGEN_PERIOD: usize = CHARGEN_RING * CHARGEN_LINE;

/// Read buffer of the stream services.
const STREAM_BUF: usize = 64 * 1024;
/// Receive buffer of the datagram services: larger than any UDP payload
/// without IPv6 jumbograms (65507 over IPv4, 65527 over IPv6), so a datagram
/// is always echoed whole.
const DGRAM_BUF: usize = 64 * 1024;
/// Datagrams taken from the socket per receive call: enough for every
/// client of a busy child to have one request queued, small enough that the
/// slots (one [`DGRAM_BUF`] each, 1 MiB in all, touched only where datagrams
/// land) stay cheap.
const DGRAM_BATCH: usize = 16;

/// daytime and time over TCP: after the answer and our FIN, how long we keep
/// reading away what the client sends, so that closing with unread input does
/// not turn into a reset that could destroy the answer in flight. Bounded in
/// time and bytes: the child never lingers longer than this.
const CLOSE_LINGER: Duration = Duration::from_secs(1);
const CLOSE_LINGER_BYTES: usize = 64 * 1024;

/// What a UDP builtin child must know about the whole configuration to judge
/// a source: the local ports of every configured UDP builtin listener, so that
/// two builtins (here or on another inetd) never answer each other.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UdpGuard {
    pub builtin_ports: Vec<u16>,
}

/// Serve one accepted stream connection; returns the exit code.
///
/// echo, discard and chargen run until the client goes away; daytime and
/// time answer, send FIN and wait at most [`CLOSE_LINGER`] for the client's.
/// `conn` may be blocking or not: every call passes MSG_DONTWAIT and waits in
/// poll, and the descriptor's flags are left as they are.
pub fn serve_stream(b: Builtin, conn: OwnedFd) -> i32 {
    let fd = conn.as_fd();
    let result = match b {
        Builtin::Echo => echo_stream(fd),
        Builtin::Discard => discard_stream(fd),
        Builtin::Chargen => chargen_stream(fd),
        Builtin::Daytime => match daytime_line(unix_now()) {
            Some(line) => answer_and_close(fd, line.as_bytes()),
            // RFC 868's advice for a server that cannot tell the time,
            // applied to daytime too: close without sending anything.
            None => Err(Failure::Clock),
        },
        Builtin::Time => answer_and_close(fd, &time_bytes(unix_now())),
    };
    drop(conn);
    exit_code(result)
}

/// Serve datagrams on the bound `sock` until no datagram arrived for `idle`;
/// returns the exit code.
///
/// `sock` shares its open file description with the core's copy, so its
/// flags (O_NONBLOCK) are left as they are. Replies go only to sources that
/// pass [`udp_reply_allowed`] and fit the [`ReplyLimiter`] budget; discard
/// never replies.
pub fn serve_dgram(b: Builtin, sock: OwnedFd, idle: Duration, guard: &UdpGuard) -> i32 {
    let fd = sock.as_fd();
    let result = dgram_loop(b, fd, idle, guard);
    drop(sock);
    exit_code(result)
}

/// True when a UDP builtin may answer `src` (DESIGN.md guards).
///
/// Refused: source ports below 1024, 2049 (NFS) and the port of any
/// configured UDP builtin (`guard`); IPv4 sources in 0.0.0.0/8 (the
/// unspecified address included), 255.0.0.0/8 (the limited broadcast
/// included) and 224.0.0.0/4 (multicast); IPv6 sources `::`, ff00::/8
/// (multicast) and the deprecated IPv4-compatible ::a.b.c.d. An IPv4-mapped
/// IPv6 source (::ffff:a.b.c.d, from a dual-stack socket) is judged as the
/// IPv4 address it carries. Loopback (127.0.0.0/8, ::1) is answered.
///
/// A local subnet's directed broadcast address is not checked here: the
/// kernel refuses to send to it (EACCES) because builtin sockets never set
/// SO_BROADCAST.
pub fn udp_reply_allowed(src: SocketAddr, guard: &UdpGuard) -> bool {
    let port = src.port();
    if port < 1024 || port == NFS_PORT || guard.builtin_ports.contains(&port) {
        return false;
    }
    match canonical_ip(src.ip()) {
        IpAddr::V4(a) => ipv4_source_ok(a),
        IpAddr::V6(a) => ipv6_source_ok(a),
    }
}

fn ipv4_source_ok(a: Ipv4Addr) -> bool {
    let first = a.octets()[0];
    !(first == 0 || first == 255 || a.is_multicast())
}

fn ipv6_source_ok(a: Ipv6Addr) -> bool {
    if a.is_unspecified() || a.is_multicast() {
        return false;
    }
    // ::a.b.c.d (IPv4-compatible, deprecated by RFC 4291) never legitimately
    // appears as a source; ::1 has the same prefix and stays allowed.
    let s = a.segments();
    let v4_compatible = s[..6].iter().all(|&x| x == 0) && !a.is_loopback();
    !v4_compatible
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

/// The RFC 868 answer for `unix_seconds`: seconds since 1900 modulo 2^32,
/// big-endian (the 32-bit field wraps in February 2036).
pub fn time_bytes(unix_seconds: i64) -> [u8; 4] {
    // Truncating to the low 32 bits is the modulo 2^32 RFC 868 implies.
    (unix_seconds.wrapping_add(RFC868_EPOCH_OFFSET) as u32).to_be_bytes()
}

/// The RFC 867 answer for `unix_seconds`: `ctime()` in local time as
/// `"%.24s\r\n"` (26 bytes), or `None` if the local time is unavailable.
pub fn daytime_line(unix_seconds: i64) -> Option<String> {
    clock::local_time(unix_seconds).map(|lt| format!("{}\r\n", lt.ctime24()))
}

/// chargen line `n` (RFC 864): characters `n mod 95` through `n + 71 mod 95`
/// of the printable ASCII ring starting at space, then CRLF.
pub fn chargen_line(n: usize) -> [u8; CHARGEN_LINE] {
    let mut line = [b'\r'; CHARGEN_LINE];
    let start = n % CHARGEN_RING;
    for (i, c) in line.iter_mut().take(CHARGEN_WIDTH).enumerate() {
        // < 95 by the modulo, so the sum stays within 0x20..=0x7E.
        *c = b' ' + ((start + i) % CHARGEN_RING) as u8;
    }
    line[CHARGEN_LINE - 1] = b'\n';
    line
}

/// Two full chargen periods back to back, so that a whole period starting
/// at any offset below [`CHARGEN_PERIOD`] is one contiguous slice.
fn chargen_two_periods() -> Vec<u8> {
    let mut v = Vec::with_capacity(2 * CHARGEN_PERIOD);
    for n in 0..2 * CHARGEN_RING {
        v.extend_from_slice(&chargen_line(n));
    }
    v
}

/// The current time in whole seconds since the Unix epoch, rounded down like
/// `time(2)`, negative before 1970 (RFC 868 still has an answer then).
fn unix_now() -> i64 {
    inetd_protocol::unix_seconds(SystemTime::now())
}

/// Why a service ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
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
fn client_gone(e: Errno) -> bool {
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

/// Receive into `buf`, waiting in poll while nothing is there.
///
/// Every socket call here passes MSG_DONTWAIT and waits in poll instead of
/// blocking, whatever O_NONBLOCK says: that flag belongs to the open file
/// description, which the core's copy of a datagram socket shares, so the
/// child never changes it.
fn recv_wait(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<usize, Errno> {
    loop {
        match recv(fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
            Err(Errno::EINTR) => {}
            // POLLHUP and POLLERR end the wait too; the next recv reports them.
            Err(Errno::EAGAIN) => {
                wait_for(fd, PollFlags::POLLIN, PollTimeout::NONE)?;
            }
            other => return other,
        }
    }
}

/// Send all of `data`, waiting in poll while the socket is full.
/// MSG_NOSIGNAL: a client that went away gives EPIPE, never SIGPIPE (which
/// is at its default in the child).
fn send_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> Result<(), Errno> {
    while !data.is_empty() {
        match send(
            fd.as_raw_fd(),
            data,
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(n) => data = data.get(n..).unwrap_or_default(),
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                wait_for(fd, PollFlags::POLLOUT, PollTimeout::NONE)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One nonblocking receive, retried on EINTR.
fn recv_now(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<usize, Errno> {
    loop {
        match recv(fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
            Err(Errno::EINTR) => {}
            other => return other,
        }
    }
}

/// Shut down our sending side; a peer that is already gone is not an error.
fn shutdown_write(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    match shutdown(fd.as_raw_fd(), Shutdown::Write) {
        Err(e) if client_gone(e) => Ok(()),
        other => other,
    }
}

/// A poll timeout for `d`, rounded up to whole milliseconds so that a wait
/// never ends just before its deadline, and capped at poll's maximum.
fn poll_timeout(d: Duration) -> PollTimeout {
    let ms = d.as_nanos().div_ceil(1_000_000);
    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
}

/// Wait for `events` on `fd` for at most `timeout`, retrying on EINTR.
/// Returns the events that occurred (empty on timeout).
fn wait_for(
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

/// echo over a stream: everything back until the client shuts down its
/// sending side, then our FIN. Each read is sent back whole before the next
/// read, so everything received before the client's FIN is echoed.
fn echo_stream(fd: BorrowedFd<'_>) -> Result<(), Failure> {
    let mut buf = vec![0u8; STREAM_BUF];
    loop {
        let n = recv_wait(fd, &mut buf)?;
        if n == 0 {
            break;
        }
        send_all(fd, buf.get(..n).unwrap_or_default())?;
    }
    shutdown_write(fd)?;
    Ok(())
}

/// discard over a stream: read and drop until the client's FIN.
fn discard_stream(fd: BorrowedFd<'_>) -> Result<(), Failure> {
    let mut buf = vec![0u8; STREAM_BUF];
    while recv_wait(fd, &mut buf)? != 0 {}
    shutdown_write(fd)?;
    Ok(())
}

/// chargen over a stream: the pattern from line 0 until the client goes
/// away, reading away (and dropping) whatever it sends so that it never
/// blocks on a full window. Returns through `Err(EPIPE | ECONNRESET)` in the
/// normal case, which [`exit_code`] treats as success.
fn chargen_stream(fd: BorrowedFd<'_>) -> Result<(), Failure> {
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
        let ready = wait_for(fd, events, PollTimeout::NONE)?;
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
fn answer_and_close(fd: BorrowedFd<'_>, answer: &[u8]) -> Result<(), Failure> {
    send_all(fd, answer)?;
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

/// What one receive slot of [`dgram_loop`] got: the datagram's length, its
/// source and whether it was cut to fit the slot.
#[derive(Clone, Copy)]
struct Received {
    len: usize,
    src: Option<SockaddrStorage>,
    truncated: bool,
}

const NOTHING_RECEIVED: Received = Received {
    len: 0,
    src: None,
    truncated: false,
};

/// The datagram loop: take whatever is queued in batches of up to
/// [`DGRAM_BATCH`], answer each datagram in arrival order, then wait; leave
/// when no datagram arrived for `idle` (the core then polls the socket
/// again).
///
/// System calls per batch: one recvmmsg, one send per reply, and one poll
/// when the batch was not full. A batch shorter than [`DGRAM_BATCH`] means
/// the queue was empty when the receive returned, so the loop waits in poll
/// rather than paying for a receive that would only say EAGAIN; a datagram
/// that arrives in between keeps the socket readable, and poll returns at
/// once.
fn dgram_loop(
    b: Builtin,
    fd: BorrowedFd<'_>,
    idle: Duration,
    guard: &UdpGuard,
) -> Result<(), Failure> {
    // This socket's own port is refused even if the caller's list lacks it:
    // a request spoofed from our own address and port would otherwise make
    // the child answer itself forever.
    let own_port = getsockname::<SockaddrStorage>(fd.as_raw_fd())
        .ok()
        .as_ref()
        .and_then(inet_addr)
        .map(|a| a.port());
    // One slot of DGRAM_BUF bytes per datagram of a batch. The pages are
    // only touched where datagrams land.
    let mut slots = vec![0u8; DGRAM_BATCH * DGRAM_BUF];
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(DGRAM_BATCH, None);
    let mut received = [NOTHING_RECEIVED; DGRAM_BATCH];
    // The replies of one batch: slot index and reply length, in arrival
    // order. A reply is written into (or, for echo, already is) its
    // request's slot.
    let mut replies = [(0usize, 0usize); DGRAM_BATCH];
    let mut limiter = ReplyLimiter::new(Instant::now());
    // chargen's position advances by one line per answered datagram for the
    // life of this child; the first answer is line 0.
    let mut chargen_next = 0usize;
    let mut last_datagram = Instant::now();
    // Whether the last receive found the queue empty: then wait in poll.
    let mut drained = true;
    loop {
        if drained {
            let left = idle.saturating_sub(last_datagram.elapsed());
            let ready = wait_for(fd, PollFlags::POLLIN, poll_timeout(left))?;
            if ready.is_empty() {
                if last_datagram.elapsed() >= idle {
                    return Ok(());
                }
                continue;
            }
        }
        let count = match recv_batch(fd, &mut headers, &mut slots, &mut received) {
            Ok(n) => n,
            // Errors queued by ICMP for an earlier reply, or transient
            // memory pressure: the socket is still good, go back to poll.
            Err(
                Errno::EAGAIN
                | Errno::ECONNREFUSED
                | Errno::EHOSTUNREACH
                | Errno::ENETUNREACH
                | Errno::ENOBUFS
                | Errno::ENOMEM,
            ) => {
                drained = true;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        drained = count < DGRAM_BATCH;
        if count == 0 {
            continue;
        }
        let now = Instant::now();
        last_datagram = now;
        if b == Builtin::Discard {
            continue;
        }
        let mut reply_count = 0usize;
        for (index, r) in received.iter().take(count).enumerate() {
            // No source address (not an inet socket): nothing to answer.
            let Some(peer) = r.src.as_ref().and_then(inet_addr) else {
                continue;
            };
            if Some(peer.port()) == own_port
                || !udp_reply_allowed(peer, guard)
                || (amplifies(b) && !limiter.allow(peer.ip(), now))
            {
                continue;
            }
            let chargen;
            let daytime;
            let time;
            let answer: &[u8] = match b {
                // Cannot happen below 64 KiB (no jumbograms), but a cut
                // datagram is never echoed as if it were whole.
                Builtin::Echo if r.truncated => continue,
                // The reply is the request, already in its slot.
                Builtin::Echo => &[],
                Builtin::Chargen => {
                    chargen = chargen_line(chargen_next);
                    chargen_next = (chargen_next + 1) % CHARGEN_RING;
                    &chargen
                }
                Builtin::Daytime => match daytime_line(unix_now()) {
                    Some(line) => {
                        daytime = line;
                        daytime.as_bytes()
                    }
                    None => continue,
                },
                Builtin::Time => {
                    time = time_bytes(unix_now());
                    &time
                }
                Builtin::Discard => continue,
            };
            let len = if b == Builtin::Echo {
                r.len
            } else {
                // Answers are at most a chargen line, far below a slot.
                let Some(dst) = slot_mut(&mut slots, index).get_mut(..answer.len()) else {
                    continue;
                };
                dst.copy_from_slice(answer);
                answer.len()
            };
            if let Some(reply) = replies.get_mut(reply_count) {
                *reply = (index, len);
                reply_count += 1;
            }
        }
        send_replies(
            fd,
            &slots,
            &received,
            replies.get(..reply_count).unwrap_or_default(),
        );
    }
}

/// Slot `index` of the batch buffer (empty if out of range).
fn slot_mut(slots: &mut [u8], index: usize) -> &mut [u8] {
    slots.chunks_mut(DGRAM_BUF).nth(index).unwrap_or_default()
}

/// Receive up to [`DGRAM_BATCH`] queued datagrams without blocking, one per
/// slot of `slots`; their lengths and sources go to `received`. Returns how
/// many came (EAGAIN when none). EINTR is retried.
///
/// `headers` is reused from call to call: each header's address length is
/// left as the previous receive set it, which is the size of this socket's
/// address family (an AF_INET6 socket reports IPv4 sources as mapped
/// addresses of the same size), so no source is ever cut short.
fn recv_batch(
    fd: BorrowedFd<'_>,
    headers: &mut MultiHeaders<SockaddrStorage>,
    slots: &mut [u8],
    received: &mut [Received; DGRAM_BATCH],
) -> Result<usize, Errno> {
    loop {
        let mut chunks = slots.chunks_mut(DGRAM_BUF);
        let mut iovs: [[IoSliceMut<'_>; 1]; DGRAM_BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(chunks.next().unwrap_or_default())]);
        match recvmmsg(
            fd.as_raw_fd(),
            headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            Ok(results) => {
                let mut count = 0;
                for (slot, m) in received.iter_mut().zip(results) {
                    *slot = Received {
                        len: m.bytes,
                        src: m.address,
                        truncated: m.flags.contains(MsgFlags::MSG_TRUNC),
                    };
                    count += 1;
                }
                return Ok(count);
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Send each reply (slot index, length) to the source of its request.
/// MSG_NOSIGNAL: never SIGPIPE. A reply that cannot be sent (full send
/// buffer, ICMP error, EMSGSIZE) is dropped like a lost datagram; the
/// service goes on.
fn send_replies(
    fd: BorrowedFd<'_>,
    slots: &[u8],
    received: &[Received; DGRAM_BATCH],
    replies: &[(usize, usize)],
) {
    for &(index, len) in replies {
        let Some(Some(dst)) = received.get(index).map(|r| r.src.as_ref()) else {
            continue;
        };
        let Some(data) = slots
            .chunks(DGRAM_BUF)
            .nth(index)
            .and_then(|s| s.get(..len))
        else {
            continue;
        };
        let _ = sendto(
            fd.as_raw_fd(),
            data,
            dst,
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        );
    }
}

/// Whether a UDP answer of `b` can be larger than the request that asked
/// for it: those are the ones a spoofed source could use for reflection
/// with amplification, so only they go through the [`ReplyLimiter`].
fn amplifies(b: Builtin) -> bool {
    !matches!(b, Builtin::Echo | Builtin::Discard)
}

/// The source of a datagram as an IP socket address, if it is one.
fn inet_addr(src: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = src.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    src.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// Per source (an IPv4 address, or an IPv6 /64, the smallest block one
/// customer usually holds): bursts of 32 replies, then 16 per second.
const SOURCE_BURST: u32 = 32;
const SOURCE_INTERVAL: Duration = Duration::from_micros(62_500);
/// All sources of one child together: bursts of 256 replies, then 512 per
/// second. This bounds what one child sends whatever the number of spoofed
/// sources (chargen: at most 512 x 74 bytes, about 38 KB/s).
const TOTAL_BURST: u32 = 256;
const TOTAL_INTERVAL: Duration = Duration::from_micros(1_953);
/// Sources remembered: 256 sets of 4, 1024 in all, a fixed table allocated
/// once (about 40 KiB).
const LIMITER_SETS: usize = 256;
const LIMITER_WAYS: usize = 4;

/// A fixed-size table of per-source reply budgets plus one budget for the
/// whole child, as GCRA ("virtual scheduling"), the integer form of a token
/// bucket: each budget is a theoretical arrival time `tat`; a reply at `now`
/// is allowed when `tat - now <= (burst - 1) * interval`, and moves `tat` to
/// `max(tat, now) + interval`.
///
/// Memory is bounded: a new source takes a free slot in its set, else the
/// slot with the earliest `tat`. An entry whose `tat` has passed is in the
/// same state as a fresh one, so evicting it loses nothing; under a flood of
/// spoofed sources an evicted source may get a fresh burst, which the total
/// budget still bounds.
struct ReplyLimiter {
    slots: Vec<Option<Slot>>,
    total_tat: Instant,
    hasher: RandomState,
}

#[derive(Clone, Copy)]
struct Slot {
    key: u128,
    tat: Instant,
}

impl ReplyLimiter {
    fn new(now: Instant) -> Self {
        ReplyLimiter {
            slots: vec![None; LIMITER_SETS * LIMITER_WAYS],
            total_tat: now,
            hasher: RandomState::new(),
        }
    }

    /// Charge one reply to `ip` at `now`; false if over either budget (then
    /// nothing is charged).
    fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let Some(total_next) = gcra(self.total_tat, now, TOTAL_INTERVAL, TOTAL_BURST) else {
            return false;
        };
        let key = source_key(ip);
        let set = (self.hasher.hash_one(key) % LIMITER_SETS as u64) as usize;
        let start = set * LIMITER_WAYS;
        let Some(ways) = self.slots.get_mut(start..start + LIMITER_WAYS) else {
            return false;
        };
        let index = ways
            .iter()
            .position(|s| matches!(s, Some(s) if s.key == key))
            .or_else(|| ways.iter().position(Option::is_none))
            .or_else(|| {
                ways.iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.map(|s| s.tat))
                    .map(|(i, _)| i)
            });
        let Some(slot) = index.and_then(|i| ways.get_mut(i)) else {
            return false;
        };
        let tat = match slot {
            Some(s) if s.key == key => s.tat,
            // A new or evicted entry starts with its full burst.
            _ => now,
        };
        let Some(source_next) = gcra(tat, now, SOURCE_INTERVAL, SOURCE_BURST) else {
            return false;
        };
        *slot = Some(Slot {
            key,
            tat: source_next,
        });
        self.total_tat = total_next;
        true
    }
}

/// One GCRA step: the new theoretical arrival time if a reply at `now` fits
/// the budget, `None` if it does not.
fn gcra(tat: Instant, now: Instant, interval: Duration, burst: u32) -> Option<Instant> {
    let tolerance = interval.saturating_mul(burst.saturating_sub(1));
    let base = tat.max(now);
    if base.saturating_duration_since(now) > tolerance {
        return None;
    }
    base.checked_add(interval)
}

/// The rate-limiting key of a source: an IPv4 address (mapped or not) whole,
/// an IPv6 address by its /64.
fn source_key(ip: IpAddr) -> u128 {
    match canonical_ip(ip) {
        IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
        IpAddr::V6(a) => u128::from(a) & !u128::from(u64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{ErrorKind, Read, Write};
    use std::net::{Shutdown as NetShutdown, TcpListener, TcpStream, UdpSocket};
    use std::process::{Command, Stdio};
    use std::sync::mpsc::{self, Receiver};
    use std::thread;

    const WAIT: Duration = Duration::from_secs(10);

    fn sha256_hex(data: &[u8]) -> Option<String> {
        let mut child = Command::new("sha256sum")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        let mut stdin = child.stdin.take()?;
        let data = data.to_vec();
        let writer = thread::spawn(move || stdin.write_all(&data));
        let out = child.wait_with_output().ok()?;
        writer.join().ok()?.ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        Some(text.split_whitespace().next()?.to_owned())
    }

    const PERIOD_SHA256: &str = "3cdea95b39ae39243127adde7cd303a8b8c9f25248a3fc0c483ba70b00fb8f19";

    /// A connected TCP pair over 127.0.0.1: the client side and the server
    /// side as the core would hand it over.
    fn tcp_pair() -> (TcpStream, OwnedFd) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        client.set_read_timeout(Some(WAIT)).expect("timeout");
        client.set_write_timeout(Some(WAIT)).expect("timeout");
        (client, OwnedFd::from(server))
    }

    fn spawn_stream(b: Builtin, conn: OwnedFd) -> Receiver<i32> {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(serve_stream(b, conn));
        });
        rx
    }

    /// A UDP builtin on `bind` served in a thread; returns its address and
    /// the channel its exit code arrives on.
    fn spawn_dgram(
        b: Builtin,
        bind: &str,
        idle: Duration,
        guard: UdpGuard,
    ) -> Option<(SocketAddr, Receiver<i32>)> {
        let sock = UdpSocket::bind(bind).ok()?;
        let addr = sock.local_addr().ok()?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(serve_dgram(b, OwnedFd::from(sock), idle, &guard));
        });
        Some((addr, rx))
    }

    fn udp_client(bind: &str) -> UdpSocket {
        let c = UdpSocket::bind(bind).expect("client bind");
        c.set_read_timeout(Some(WAIT)).expect("timeout");
        c
    }

    fn ipv6_loopback() -> bool {
        let ok = UdpSocket::bind("[::1]:0").is_ok();
        if !ok {
            eprintln!("skipping the ::1 part: no IPv6 loopback here");
        }
        ok
    }

    fn recv_reply(c: &UdpSocket, from: SocketAddr) -> Vec<u8> {
        let mut buf = vec![0u8; 70_000];
        let (n, src) = c.recv_from(&mut buf).expect("reply");
        assert_eq!(src, from);
        buf.truncate(n);
        buf
    }

    fn assert_no_datagram(c: &UdpSocket) {
        c.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 16];
        match c.recv_from(&mut buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("expected no datagram, got {other:?}"),
        }
    }

    // ---- chargen ----

    #[test]
    fn chargen_lines_are_the_rfc_pattern() {
        let line0 =
            br##" !"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_`abcdefg"##;
        let line94 =
            br##"~ !"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_`abcdef"##;
        let line23 =
            br##"789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_`abcdefghijklmnopqrstuvwxyz{|}~"##;
        for (n, want) in [(0, &line0[..]), (94, &line94[..]), (23, &line23[..])] {
            let got = chargen_line(n);
            assert_eq!(&got[..72], want, "line {n}");
            assert_eq!(&got[72..], b"\r\n");
        }
        let line1 = chargen_line(1);
        assert_eq!((line1[0], line1[71]), (b'!', b'h'));
        assert_eq!(chargen_line(95), chargen_line(0));
        let period = &chargen_two_periods()[..CHARGEN_PERIOD];
        assert_eq!(period.len(), 7030);
        match sha256_hex(period) {
            Some(h) => assert_eq!(h, PERIOD_SHA256),
            None => eprintln!("skipping the SHA-256 check: sha256sum is not available"),
        }
    }

    #[test]
    fn chargen_tcp_starts_at_line_0_and_matches_the_period_hash() {
        let (mut client, conn) = tcp_pair();
        let rx = spawn_stream(Builtin::Chargen, conn);
        // Two periods: the second must repeat the first.
        let mut got = vec![0u8; 2 * CHARGEN_PERIOD];
        client.read_exact(&mut got).expect("read");
        assert_eq!(&got[..74], &chargen_line(0)[..]);
        assert_eq!(&got[74..148], &chargen_line(1)[..]);
        assert_eq!(&got[..CHARGEN_PERIOD], &got[CHARGEN_PERIOD..]);
        match sha256_hex(&got[..CHARGEN_PERIOD]) {
            Some(h) => assert_eq!(h, PERIOD_SHA256),
            None => eprintln!("skipping the SHA-256 check: sha256sum is not available"),
        }
        // Input is read and thrown away without disturbing the stream.
        client.write_all(&[b'x'; 100_000]).expect("write");
        drop(client);
        assert_eq!(rx.recv_timeout(WAIT).expect("chargen returns"), 0);
    }

    #[test]
    fn chargen_tcp_returns_after_a_client_reset() {
        let (mut client, conn) = tcp_pair();
        let rx = spawn_stream(Builtin::Chargen, conn);
        let mut some = [0u8; 1000];
        client.read_exact(&mut some).expect("read");
        set_linger_zero(&client);
        drop(client);
        assert_eq!(rx.recv_timeout(WAIT).expect("chargen returns"), 0);
    }

    /// SO_LINGER 0: closing the socket sends a reset.
    fn set_linger_zero(s: &TcpStream) {
        nix::sys::socket::setsockopt(
            s,
            nix::sys::socket::sockopt::Linger,
            &libc::linger {
                l_onoff: 1,
                l_linger: 0,
            },
        )
        .expect("linger");
    }

    #[test]
    fn chargen_tcp_goes_on_after_the_client_half_closes() {
        let (mut client, conn) = tcp_pair();
        let rx = spawn_stream(Builtin::Chargen, conn);
        client.shutdown(NetShutdown::Write).expect("shutdown");
        let mut got = vec![0u8; 3 * CHARGEN_PERIOD];
        client.read_exact(&mut got).expect("still streaming");
        assert_eq!(&got[..74], &chargen_line(0)[..]);
        assert_eq!(&got[2 * CHARGEN_PERIOD..][..74], &chargen_line(0)[..]);
        drop(client);
        assert_eq!(rx.recv_timeout(WAIT).expect("chargen returns"), 0);
    }

    #[test]
    fn chargen_udp_one_line_per_datagram_advancing() {
        let (addr, rx) = spawn_dgram(
            Builtin::Chargen,
            "127.0.0.1:0",
            Duration::from_millis(500),
            UdpGuard::default(),
        )
        .expect("bind");
        let c = udp_client("127.0.0.1:0");
        for n in 0..3 {
            // Empty and non-empty requests alike get one line.
            let req: &[u8] = if n == 1 { b"" } else { b"hello" };
            c.send_to(req, addr).expect("send");
            assert_eq!(recv_reply(&c, addr), chargen_line(n).to_vec(), "line {n}");
        }
        assert_eq!(rx.recv_timeout(WAIT).expect("idle exit"), 0);
    }

    // ---- echo ----

    #[test]
    fn echo_tcp_one_mebibyte_round_trip_then_close() {
        let (client, conn) = tcp_pair();
        let rx = spawn_stream(Builtin::Echo, conn);
        let data: Vec<u8> = (0..1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
        let mut writer = client.try_clone().expect("clone");
        let sent = data.clone();
        let w = thread::spawn(move || {
            writer.write_all(&sent).expect("write");
            writer.shutdown(NetShutdown::Write).expect("shutdown");
        });
        let mut back = Vec::new();
        let mut reader = client;
        reader.read_to_end(&mut back).expect("read to EOF");
        w.join().expect("writer");
        assert_eq!(back.len(), data.len());
        assert!(back == data, "echoed bytes differ");
        assert_eq!(rx.recv_timeout(WAIT).expect("echo returns"), 0);
    }

    fn echo_udp_sizes(bind: &str) {
        let (addr, rx) = spawn_dgram(
            Builtin::Echo,
            bind,
            Duration::from_millis(500),
            UdpGuard::default(),
        )
        .expect("bind");
        let c = udp_client(bind);
        for size in [1usize, 1472, 4096, 8192, 65507, 0] {
            let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
            c.send_to(&data, addr).expect("send");
            assert!(recv_reply(&c, addr) == data, "{size} bytes over {bind}");
        }
        assert_eq!(rx.recv_timeout(WAIT).expect("idle exit"), 0);
    }

    #[test]
    fn echo_udp_whole_datagrams_ipv4() {
        echo_udp_sizes("127.0.0.1:0");
    }

    #[test]
    fn echo_udp_whole_datagrams_ipv6() {
        if ipv6_loopback() {
            echo_udp_sizes("[::1]:0");
        }
    }

    #[test]
    fn echo_over_a_unix_socketpair_handed_over_nonblocking() {
        let (mut client, server) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        // The core may hand the descriptor over in either mode.
        server.set_nonblocking(true).expect("nonblocking");
        client.set_read_timeout(Some(WAIT)).expect("timeout");
        let rx = spawn_stream(Builtin::Echo, OwnedFd::from(server));
        client.write_all(b"ping over a socketpair").expect("write");
        client.shutdown(NetShutdown::Write).expect("shutdown");
        let mut back = Vec::new();
        client.read_to_end(&mut back).expect("read to EOF");
        assert_eq!(back, b"ping over a socketpair");
        assert_eq!(rx.recv_timeout(WAIT).expect("echo returns"), 0);
    }

    #[test]
    fn echo_tcp_returns_when_the_client_resets() {
        let (mut client, conn) = tcp_pair();
        let rx = spawn_stream(Builtin::Echo, conn);
        client.write_all(b"x").expect("write");
        let mut one = [0u8; 1];
        client.read_exact(&mut one).expect("echoed");
        set_linger_zero(&client);
        drop(client);
        assert_eq!(rx.recv_timeout(WAIT).expect("echo returns"), 0);
    }

    // ---- discard ----

    #[test]
    fn discard_tcp_reads_and_sends_nothing() {
        let (mut client, conn) = tcp_pair();
        let rx = spawn_stream(Builtin::Discard, conn);
        client.write_all(&[7u8; 200_000]).expect("write");
        client.shutdown(NetShutdown::Write).expect("shutdown");
        let mut back = Vec::new();
        client.read_to_end(&mut back).expect("read to EOF");
        assert!(back.is_empty());
        assert_eq!(rx.recv_timeout(WAIT).expect("discard returns"), 0);
    }

    #[test]
    fn discard_udp_never_replies() {
        let (addr, rx) = spawn_dgram(
            Builtin::Discard,
            "127.0.0.1:0",
            Duration::from_millis(300),
            UdpGuard::default(),
        )
        .expect("bind");
        let c = udp_client("127.0.0.1:0");
        for req in [&b""[..], b"x", &[0u8; 1000]] {
            c.send_to(req, addr).expect("send");
        }
        // Once the child has left, anything it would have sent is queued.
        assert_eq!(rx.recv_timeout(WAIT).expect("idle exit"), 0);
        assert_no_datagram(&c);
    }

    // ---- daytime ----

    /// `^(Mon|...|Sun) (Jan|...|Dec) [ 123][0-9] [0-2][0-9]:[0-5][0-9]:[0-6][0-9] [0-9]{4}\r\n$`
    fn looks_like_daytime(s: &[u8]) -> bool {
        let Ok(s) = std::str::from_utf8(s) else {
            return false;
        };
        let b = s.as_bytes();
        let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
        let at = |i: usize, c: u8| b.get(i) == Some(&c);
        b.len() == 26
            && s.get(0..3).is_some_and(|d| DAYS.contains(&d))
            && at(3, b' ')
            && s.get(4..7).is_some_and(|m| MONTHS.contains(&m))
            && at(7, b' ')
            && b.get(8).is_some_and(|c| b" 123".contains(c))
            && digit(9)
            && at(10, b' ')
            && b.get(11).is_some_and(|c| (b'0'..=b'2').contains(c))
            && digit(12)
            && at(13, b':')
            && b.get(14).is_some_and(|c| (b'0'..=b'5').contains(c))
            && digit(15)
            && at(16, b':')
            && b.get(17).is_some_and(|c| (b'0'..=b'6').contains(c))
            && digit(18)
            && at(19, b' ')
            && (20..24).all(digit)
            && s.ends_with("\r\n")
    }

    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];

    /// The answer is the local ctime of an instant within 2 s of the test's
    /// clock.
    fn assert_daytime_now(answer: &[u8], before: i64, after: i64) {
        assert!(
            looks_like_daytime(answer),
            "{:?}",
            String::from_utf8_lossy(answer)
        );
        let text = String::from_utf8_lossy(answer);
        assert!(
            (before - 2..=after + 2).any(|t| daytime_line(t).as_deref() == Some(&*text)),
            "{text:?} is not within 2 s of now"
        );
    }

    #[test]
    fn daytime_format_examples() {
        assert!(looks_like_daytime(b"Wed Nov 26 06:27:00 2025\r\n"));
        assert!(looks_like_daytime(b"Sun Nov  2 06:27:00 2025\r\n"));
        assert!(!looks_like_daytime(b"Sun Nov 2 06:27:00 2025\r\n"));
        assert!(!looks_like_daytime(b"Wed Nov 26 06:27:00 2025\n"));
        let line = daytime_line(unix_now()).expect("local time");
        assert!(looks_like_daytime(line.as_bytes()), "{line:?}");
    }

    #[test]
    fn daytime_tcp_one_line_then_close() {
        let (mut client, conn) = tcp_pair();
        let before = unix_now();
        let rx = spawn_stream(Builtin::Daytime, conn);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).expect("read to EOF");
        let after = unix_now();
        assert_daytime_now(&answer, before, after);
        drop(client);
        assert_eq!(rx.recv_timeout(WAIT).expect("daytime returns"), 0);
    }

    #[test]
    fn daytime_udp_answers_each_datagram() {
        let (addr, rx) = spawn_dgram(
            Builtin::Daytime,
            "127.0.0.1:0",
            Duration::from_millis(300),
            UdpGuard::default(),
        )
        .expect("bind");
        let c = udp_client("127.0.0.1:0");
        for req in [&b""[..], b"what time is it"] {
            let before = unix_now();
            c.send_to(req, addr).expect("send");
            let answer = recv_reply(&c, addr);
            assert_daytime_now(&answer, before, unix_now());
        }
        assert_eq!(rx.recv_timeout(WAIT).expect("idle exit"), 0);
    }

    // ---- time ----

    #[test]
    fn time_vectors() {
        assert_eq!(time_bytes(0), [0x83, 0xaa, 0x7e, 0x80]);
        assert_eq!(time_bytes(1_700_000_000), [0xe8, 0xfe, 0x6f, 0x80]);
        assert_eq!(time_bytes(2_085_978_495), [0xff, 0xff, 0xff, 0xff]);
        assert_eq!(time_bytes(2_085_978_496), [0x00, 0x00, 0x00, 0x00]);
        // RFC 868's own examples.
        assert_eq!(u32::from_be_bytes(time_bytes(189_302_400)), 2_398_291_200);
        assert_eq!(u32::from_be_bytes(time_bytes(420_595_200)), 2_629_584_000);
    }

    fn assert_time_now(answer: &[u8]) {
        let got: [u8; 4] = answer.try_into().expect("exactly 4 bytes");
        let want = u32::from_be_bytes(time_bytes(unix_now()));
        let diff = u32::from_be_bytes(got).wrapping_sub(want) as i32;
        assert!((-2..=2).contains(&diff), "off by {diff} s");
    }

    #[test]
    fn time_tcp_four_bytes_then_close() {
        let (mut client, conn) = tcp_pair();
        let rx = spawn_stream(Builtin::Time, conn);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).expect("read to EOF");
        assert_time_now(&answer);
        drop(client);
        assert_eq!(rx.recv_timeout(WAIT).expect("time returns"), 0);
    }

    #[test]
    fn time_udp_answers_an_empty_datagram() {
        let (addr, rx) = spawn_dgram(
            Builtin::Time,
            "127.0.0.1:0",
            Duration::from_millis(300),
            UdpGuard::default(),
        )
        .expect("bind");
        let c = udp_client("127.0.0.1:0");
        c.send_to(b"", addr).expect("send");
        assert_time_now(&recv_reply(&c, addr));
        assert_eq!(rx.recv_timeout(WAIT).expect("idle exit"), 0);
    }

    // ---- UDP guards, rate cap, idle ----

    #[test]
    fn udp_guard_table() {
        let guard = UdpGuard {
            builtin_ports: vec![7, 20007, 20019],
        };
        let v4 = |s: &str, port| SocketAddr::new(s.parse().expect("ip"), port);
        let cases: &[(SocketAddr, bool)] = &[
            (v4("192.0.2.1", 20), false),
            (v4("192.0.2.1", 1023), false),
            (v4("192.0.2.1", 1024), true),
            (v4("192.0.2.1", 2049), false),
            (v4("192.0.2.1", 2048), true),
            (v4("192.0.2.1", 20007), false),
            (v4("192.0.2.1", 20019), false),
            (v4("192.0.2.1", 20008), true),
            (v4("255.255.255.255", 40000), false),
            (v4("255.1.2.3", 40000), false),
            (v4("224.0.0.1", 40000), false),
            (v4("239.255.255.250", 40000), false),
            (v4("0.0.0.0", 40000), false),
            (v4("0.1.2.3", 40000), false),
            (v4("127.0.0.1", 40000), true),
            (v4("127.0.0.2", 40000), true),
            (v4("10.1.2.3", 40000), true),
            (v4("::", 40000), false),
            (v4("ff02::1", 40000), false),
            (v4("::1", 40000), true),
            (v4("::1", 2049), false),
            (v4("::1", 80), false),
            (v4("2001:db8::1", 40000), true),
            (v4("fe80::1", 40000), true),
            (v4("::ffff:127.0.0.1", 40000), true),
            (v4("::ffff:127.0.0.1", 20019), false),
            (v4("::ffff:224.0.0.1", 40000), false),
            (v4("::ffff:255.255.255.255", 40000), false),
            (v4("::ffff:0.0.0.0", 40000), false),
            (v4("::ffff:192.0.2.1", 40000), true),
            (v4("::192.0.2.1", 40000), false),
        ];
        for &(src, want) in cases {
            assert_eq!(udp_reply_allowed(src, &guard), want, "{src}");
        }
    }

    #[test]
    fn serve_dgram_refuses_a_builtin_source_port_and_answers_others() {
        let refused = udp_client("127.0.0.1:0");
        let refused_port = refused.local_addr().expect("addr").port();
        let guard = UdpGuard {
            builtin_ports: vec![refused_port],
        };
        let (addr, rx) = spawn_dgram(
            Builtin::Echo,
            "127.0.0.1:0",
            Duration::from_millis(300),
            guard,
        )
        .expect("bind");
        let allowed = udp_client("127.0.0.1:0");
        refused.send_to(b"loop?", addr).expect("send");
        allowed.send_to(b"hello", addr).expect("send");
        // The child serves in arrival order: once the second is answered,
        // the first was judged.
        assert_eq!(recv_reply(&allowed, addr), b"hello");
        assert_eq!(rx.recv_timeout(WAIT).expect("idle exit"), 0);
        assert_no_datagram(&refused);
    }

    #[test]
    fn serve_dgram_never_answers_its_own_port() {
        // The guard's list is empty: the socket's own port is refused anyway.
        let (addr, rx) = spawn_dgram(
            Builtin::Echo,
            "127.0.0.1:0",
            Duration::from_millis(300),
            UdpGuard::default(),
        )
        .expect("bind");
        // Same port on another loopback address: what a spoofed request
        // from a twin inetd, or from ourselves, looks like.
        let Ok(twin) = UdpSocket::bind(("127.0.0.2", addr.port())) else {
            eprintln!("skipping: cannot bind 127.0.0.2:{}", addr.port());
            return;
        };
        let honest = udp_client("127.0.0.1:0");
        twin.send_to(b"loop?", addr).expect("send");
        honest.send_to(b"hello", addr).expect("send");
        assert_eq!(recv_reply(&honest, addr), b"hello");
        assert_eq!(rx.recv_timeout(WAIT).expect("idle exit"), 0);
        assert_no_datagram(&twin);
    }

    /// A UDP builtin on 127.0.0.1 that starts serving only after `queue`
    /// has sent its datagrams, so they are all queued when it first reads.
    fn serve_after(b: Builtin, guard: UdpGuard, queue: impl FnOnce(SocketAddr)) -> Receiver<i32> {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        queue(sock.local_addr().expect("addr"));
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let idle = Duration::from_millis(300);
            let _ = tx.send(serve_dgram(b, OwnedFd::from(sock), idle, &guard));
        });
        rx
    }

    #[test]
    fn echo_answers_a_queued_burst_in_order_across_batches() {
        let a = udp_client("127.0.0.1:0");
        let c = udp_client("127.0.0.1:0");
        let guarded = udp_client("127.0.0.1:0");
        let guard = UdpGuard {
            builtin_ports: vec![guarded.local_addr().expect("addr").port()],
        };
        // More than two batches, the guarded source in the middle of each.
        let rounds = DGRAM_BATCH + 2;
        let mut server = None;
        let rx = serve_after(Builtin::Echo, guard, |addr| {
            server = Some(addr);
            for i in 0..rounds {
                a.send_to(format!("a{i}").as_bytes(), addr).expect("send");
                guarded.send_to(b"loop?", addr).expect("send");
                c.send_to(&vec![b'c'; 1 + i * 100], addr).expect("send");
            }
        });
        let addr = server.expect("bound");
        for i in 0..rounds {
            assert_eq!(recv_reply(&a, addr), format!("a{i}").as_bytes());
            assert_eq!(recv_reply(&c, addr), vec![b'c'; 1 + i * 100]);
        }
        assert_eq!(rx.recv_timeout(WAIT).expect("idle exit"), 0);
        assert_no_datagram(&a);
        assert_no_datagram(&c);
        assert_no_datagram(&guarded);
    }

    #[test]
    fn chargen_answers_a_queued_burst_line_by_line() {
        let c = udp_client("127.0.0.1:0");
        // Within the per-source burst, and across a batch boundary.
        let sent = DGRAM_BATCH + 4;
        assert!(sent <= SOURCE_BURST as usize);
        let mut server = None;
        let rx = serve_after(Builtin::Chargen, UdpGuard::default(), |addr| {
            server = Some(addr);
            for _ in 0..sent {
                c.send_to(b"?", addr).expect("send");
            }
        });
        let addr = server.expect("bound");
        for n in 0..sent {
            assert_eq!(recv_reply(&c, addr), chargen_line(n), "line {n}");
        }
        assert_eq!(rx.recv_timeout(WAIT).expect("idle exit"), 0);
        assert_no_datagram(&c);
    }

    #[test]
    fn serve_dgram_leaves_after_idle() {
        let idle = Duration::from_millis(200);
        // Without any datagram.
        let start = Instant::now();
        let (_, rx) =
            spawn_dgram(Builtin::Echo, "127.0.0.1:0", idle, UdpGuard::default()).expect("bind");
        assert_eq!(rx.recv_timeout(WAIT).expect("idle exit"), 0);
        assert!(start.elapsed() >= idle);
        // `idle` counts from the last datagram.
        let (addr, rx) =
            spawn_dgram(Builtin::Echo, "127.0.0.1:0", idle, UdpGuard::default()).expect("bind");
        let c = udp_client("127.0.0.1:0");
        let sent = Instant::now();
        c.send_to(b"a", addr).expect("send");
        assert_eq!(recv_reply(&c, addr), b"a");
        assert_eq!(rx.recv_timeout(WAIT).expect("idle exit"), 0);
        assert!(sent.elapsed() >= idle);
    }

    #[test]
    fn serve_dgram_leaves_the_shared_file_flags_alone() {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let flags = |s: &UdpSocket| {
            OFlag::from_bits_retain(fcntl(s.as_raw_fd(), FcntlArg::F_GETFL).expect("F_GETFL"))
        };
        for nonblocking in [false, true] {
            let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
            sock.set_nonblocking(nonblocking).expect("set");
            // The core's copy: same open file description.
            let cores_copy = sock.try_clone().expect("dup");
            let before = flags(&cores_copy);
            let addr = sock.local_addr().expect("addr");
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                let guard = UdpGuard::default();
                let idle = Duration::from_millis(200);
                let _ = tx.send(serve_dgram(
                    Builtin::Echo,
                    OwnedFd::from(sock),
                    idle,
                    &guard,
                ));
            });
            let c = udp_client("127.0.0.1:0");
            c.send_to(b"x", addr).expect("send");
            assert_eq!(recv_reply(&c, addr), b"x");
            assert_eq!(flags(&cores_copy), before, "nonblocking = {nonblocking}");
            assert_eq!(rx.recv_timeout(WAIT).expect("idle exit"), 0);
        }
    }

    #[test]
    fn udp_echo_is_not_rate_limited() {
        assert!(!amplifies(Builtin::Echo));
        assert!(amplifies(Builtin::Chargen) && amplifies(Builtin::Time));
        let (addr, rx) = spawn_dgram(
            Builtin::Echo,
            "127.0.0.1:0",
            Duration::from_millis(300),
            UdpGuard::default(),
        )
        .expect("bind");
        let c = udp_client("127.0.0.1:0");
        // Far past the per-source burst: one request in flight at a time,
        // every one answered.
        for i in 0..(4 * SOURCE_BURST) {
            let msg = i.to_be_bytes();
            c.send_to(&msg, addr).expect("send");
            assert_eq!(recv_reply(&c, addr), msg);
        }
        assert_eq!(rx.recv_timeout(WAIT).expect("idle exit"), 0);
    }

    #[test]
    fn serve_dgram_caps_replies_to_one_source() {
        let (addr, rx) = spawn_dgram(
            Builtin::Time,
            "127.0.0.1:0",
            Duration::from_millis(300),
            UdpGuard::default(),
        )
        .expect("bind");
        let c = udp_client("127.0.0.1:0");
        let sent = 100;
        let start = Instant::now();
        for _ in 0..sent {
            c.send_to(b"", addr).expect("send");
        }
        let sending = start.elapsed();
        assert_eq!(rx.recv_timeout(WAIT).expect("idle exit"), 0);
        c.set_nonblocking(true).expect("nonblocking");
        let mut replies = 0u32;
        let mut buf = [0u8; 8];
        while c.recv_from(&mut buf).is_ok() {
            replies += 1;
        }
        // The burst, plus what the refill allows while the requests came in.
        let refill = (sending.as_micros() / SOURCE_INTERVAL.as_micros()) as u32 + 1;
        assert!(replies >= SOURCE_BURST.min(sent), "{replies} replies");
        assert!(replies <= SOURCE_BURST + refill, "{replies} replies");
        assert!(replies < sent, "{replies} replies: no cap");
    }

    #[test]
    fn limiter_per_source_burst_then_rate() {
        let t0 = Instant::now();
        let mut l = ReplyLimiter::new(t0);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        for i in 0..SOURCE_BURST {
            assert!(l.allow(a, t0), "reply {i}");
        }
        assert!(!l.allow(a, t0));
        // The same host through a dual-stack socket shares the budget.
        assert!(!l.allow("::ffff:192.0.2.1".parse().expect("ip"), t0));
        // Other sources are not affected.
        assert!(l.allow(b, t0));
        // One interval later, exactly one more.
        let t1 = t0 + SOURCE_INTERVAL;
        assert!(l.allow(a, t1));
        assert!(!l.allow(a, t1));
        // A long pause refills the whole burst, not more.
        let t2 = t1 + SOURCE_INTERVAL * 1000;
        for i in 0..SOURCE_BURST {
            assert!(l.allow(a, t2), "reply {i} after the pause");
        }
        assert!(!l.allow(a, t2));
    }

    #[test]
    fn limiter_groups_ipv6_by_slash_64() {
        let t0 = Instant::now();
        let mut l = ReplyLimiter::new(t0);
        for i in 0..SOURCE_BURST {
            let ip: IpAddr = format!("2001:db8:1:2::{:x}", i + 1).parse().expect("ip");
            assert!(l.allow(ip, t0));
        }
        assert!(!l.allow("2001:db8:1:2:ffff::1".parse().expect("ip"), t0));
        assert!(l.allow("2001:db8:1:3::1".parse().expect("ip"), t0));
    }

    #[test]
    fn limiter_total_cap_across_many_sources_and_fixed_memory() {
        let t0 = Instant::now();
        let mut l = ReplyLimiter::new(t0);
        let slots = l.slots.len();
        let mut allowed = 0u32;
        for i in 0..10_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            if l.allow(ip, t0) {
                allowed += 1;
            }
        }
        assert_eq!(allowed, TOTAL_BURST);
        assert_eq!(l.slots.len(), slots);
        assert_eq!(slots, LIMITER_SETS * LIMITER_WAYS);
        // After a pause the total budget is a full burst again, never more.
        let t1 = t0 + Duration::from_secs(1);
        let mut later = 0u32;
        for i in 0..10_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i));
            if l.allow(ip, t1) {
                later += 1;
            }
        }
        assert_eq!(later, TOTAL_BURST);
        // Then exactly one more per TOTAL_INTERVAL, whoever asks.
        let t2 = t1 + TOTAL_INTERVAL;
        assert!(l.allow(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), t2));
        assert!(!l.allow(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)), t2));
    }
}
