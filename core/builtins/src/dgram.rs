//! The datagram services: one child per socket answers every datagram
//! until the socket has been idle for a while.
#![forbid(unsafe_code)]

use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use inetd_protocol::Builtin;
use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::sys::socket::{getsockname, recvmmsg, sendto, MsgFlags, MultiHeaders, SockaddrStorage};

use crate::answers::{chargen_line, daytime_line, time_bytes, CHARGEN_RING};
use crate::limiter::ReplyLimiter;
use crate::sockio::{poll_timeout, wait_for};
use crate::{canonical_ip, unix_now, Failure};

/// Local ports that UDP builtins never answer, besides those below 1024.
/// 2049 is NFS, the classic target of reflected traffic (OpenBSD inetd).
const NFS_PORT: u16 = 2049;

/// Receive buffer of the datagram services: larger than any UDP payload
/// without IPv6 jumbograms (65507 over IPv4, 65527 over IPv6), so a datagram
/// is always echoed whole.
const DGRAM_BUF: usize = 64 * 1024;
/// Datagrams taken from the socket per receive call: enough for every
/// client of a busy child to have one request queued, small enough that the
/// slots (one [`DGRAM_BUF`] each, 1 MiB in all, touched only where datagrams
/// land) stay cheap.
pub(crate) const DGRAM_BATCH: usize = 16;

/// What a UDP builtin child must know about the whole configuration to judge
/// a source: the local ports of every configured UDP builtin listener, so that
/// two builtins (here or on another inetd) never answer each other.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UdpGuard {
    pub builtin_ports: Vec<u16>,
}

/// True when a UDP builtin may answer `src` (the guards of OpenBSD inetd).
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

/// What one receive slot of [`serve`] got: the datagram's length, its
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
pub(crate) fn serve(
    b: Builtin,
    fd: BorrowedFd<'_>,
    idle: Duration,
    guard: &UdpGuard,
) -> Result<(), Failure> {
    let mut responder = Responder::new(b, fd, guard);
    // One slot of DGRAM_BUF bytes per datagram of a batch. The pages are
    // only touched where datagrams land.
    let mut slots = vec![0u8; DGRAM_BATCH * DGRAM_BUF];
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(DGRAM_BATCH, None);
    let mut received = [NOTHING_RECEIVED; DGRAM_BATCH];
    // The replies of one batch: slot index and reply length, in arrival
    // order. A reply is written into (or, for echo, already is) its
    // request's slot.
    let mut replies = [(0usize, 0usize); DGRAM_BATCH];
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
            let Some(len) = responder.reply(r, slot_mut(&mut slots, index), now) else {
                continue;
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

/// What a datagram child knows to answer a datagram.
struct Responder<'g> {
    b: Builtin,
    own_port: Option<u16>,
    guard: &'g UdpGuard,
    limiter: ReplyLimiter,
    /// chargen's position advances by one line per answered datagram for
    /// the life of this child; the first answer is line 0.
    chargen_next: usize,
}

impl<'g> Responder<'g> {
    fn new(b: Builtin, fd: BorrowedFd<'_>, guard: &'g UdpGuard) -> Self {
        Responder {
            b,
            // This socket's own port is refused even if the caller's list
            // lacks it: a request spoofed from our own address and port
            // would otherwise make the child answer itself forever.
            own_port: getsockname::<SockaddrStorage>(fd.as_raw_fd())
                .ok()
                .as_ref()
                .and_then(inet_addr)
                .map(|a| a.port()),
            guard,
            limiter: ReplyLimiter::new(Instant::now()),
            chargen_next: 0,
        }
    }

    /// The reply to the datagram `r` received in `slot`: written into the
    /// slot (for echo it already is the request), its length returned; or
    /// `None` when this source gets no answer.
    fn reply(&mut self, r: &Received, slot: &mut [u8], now: Instant) -> Option<usize> {
        // No source address (not an inet socket): nothing to answer.
        let peer = r.src.as_ref().and_then(inet_addr)?;
        if Some(peer.port()) == self.own_port
            || !udp_reply_allowed(peer, self.guard)
            || !self.limiter.allow(peer.ip(), now, amplifies(self.b))
        {
            return None;
        }
        let chargen;
        let daytime;
        let time;
        let answer: &[u8] = match self.b {
            // Cannot happen below 64 KiB (no jumbograms), but a cut
            // datagram is never echoed as if it were whole.
            Builtin::Echo if r.truncated => return None,
            // The reply is the request, already in its slot.
            Builtin::Echo => return Some(r.len),
            Builtin::Chargen => {
                chargen = chargen_line(self.chargen_next);
                self.chargen_next = (self.chargen_next + 1) % CHARGEN_RING;
                &chargen
            }
            Builtin::Daytime => {
                daytime = daytime_line(unix_now())?;
                daytime.as_bytes()
            }
            Builtin::Time => {
                time = time_bytes(unix_now());
                &time
            }
            Builtin::Discard => return None,
        };
        // Answers are at most a chargen line, far below a slot.
        slot.get_mut(..answer.len())?.copy_from_slice(answer);
        Some(answer.len())
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
/// with amplification, so only they have the child's total budget of the
/// [`ReplyLimiter`] besides the per-source one.
pub(crate) fn amplifies(b: Builtin) -> bool {
    !matches!(b, Builtin::Echo | Builtin::Discard)
}

/// The source of a datagram as an IP socket address, if it is one.
fn inet_addr(src: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = src.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    src.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}
