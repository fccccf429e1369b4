//! Serving a listener that polled readable: accept (or hand the socket
//! over), admit, spawn. Out of descriptors or memory, accept (or pipe, or
//! fork) would fail again at once and the loop would spin: every listener
//! then stops being polled for 100 ms, doubling up to 1 s, logged once per
//! burst; the first child that starts ends the burst.
//!
//! The limits: a connection is admitted (`admission`) after accept and
//! before fork; one refused is closed at once and counted by reason, and
//! logged once per burst. A paused service has every connection closed
//! (a wait service: its waiting connection or datagram taken away). A
//! dgram service with an access list is checked on the datagram that
//! would wake its server, read with MSG_PEEK; a refused one is read away.
//! When a child brings its listener (or the core) to the children limit,
//! the batch ends there and the hold is counted: the loop stops polling
//! the listener until a child is reaped.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use inetd_protocol::{Bind, Limits, SocketType};
use log::{debug, info, warn};

use crate::admission::{self, Refusal};
use crate::backoff::{self, Backoff};
use crate::children::ChildTable;
use crate::limits::Knobs;
use crate::listeners::{Listener, ListenerId};
use crate::peer::{unmap, Peer};
use crate::sys::child::StatusPipe;
use crate::sys::net::{self, AcceptError};

/// Most connections accepted from one listener per poll round, so one busy
/// listener cannot starve the others.
const ACCEPT_BATCH: usize = 16;

/// After a listener's queue held one connection at a time, this many
/// rounds take one connection each without the accept that would find
/// nothing; the round after drains the queue again, to see whether that
/// still holds.
const ONE_AT_A_TIME: u8 = 15;

pub struct Acceptor {
    pause_until: Option<Instant>,
    backoff: Backoff,
    in_burst: bool,
    /// Made before an accept that found nothing; kept for the next.
    spare_pipe: Option<StatusPipe>,
    /// Rounds left that take one connection and stop (see
    /// [`ONE_AT_A_TIME`]): one client at a time, whose connection is all
    /// there is when its listener reports, needs no second accept to find
    /// the queue empty. A connection left queued is not missed: the
    /// listener's registration is armed again after every round, and
    /// reports at once while its queue is not empty.
    one_at_a_time: u8,
}

impl Default for Acceptor {
    fn default() -> Self {
        Acceptor {
            pause_until: None,
            backoff: Backoff::new(backoff::ACCEPT_PAUSE_FIRST, backoff::ACCEPT_PAUSE_MAX),
            in_burst: false,
            spare_pipe: None,
            one_at_a_time: 0,
        }
    }
}

impl Acceptor {
    pub fn paused_until(&self) -> Option<Instant> {
        self.pause_until
    }

    /// Ends a pause that is over.
    pub fn tick(&mut self, now: Instant) {
        if self.pause_until.is_some_and(|t| t <= now) {
            self.pause_until = None;
        }
    }

    /// Stops polling every listener for a while (see the module's header).
    pub fn pause(&mut self, why: &str) {
        let d = self.backoff.next_delay();
        if !self.in_burst {
            warn!(
                "{why}; not accepting for {} ms (doubling up to 1 s until a child starts; logged once)",
                d.as_millis()
            );
            self.in_burst = true;
        }
        self.pause_until = Some(Instant::now() + d);
    }

    fn child_started(&mut self) {
        if self.in_burst {
            self.in_burst = false;
            self.backoff.reset();
            info!("starting children again");
        }
    }

    /// The next child's status pipe, made before accept: out of
    /// descriptors, a connection stays queued in the kernel instead of
    /// being accepted and dropped for want of a pipe.
    fn pipe(&mut self) -> Option<StatusPipe> {
        if let Some(p) = self.spare_pipe.take() {
            return Some(p);
        }
        match StatusPipe::new() {
            Ok(p) => Some(p),
            Err(e) => {
                self.pause(&format!("cannot make a status pipe: {e}"));
                None
            }
        }
    }

    /// Serves listener `id`, which polled readable.
    pub fn serve(
        &mut self,
        id: ListenerId,
        l: &mut Listener,
        udp_ports: &[u16],
        children: &mut ChildTable,
        knobs: &Knobs,
    ) {
        if l.pollable().is_none() {
            return;
        }
        let hands = l.hands_socket();
        l.set_blocking_for(hands);
        let mut s = Serving {
            id,
            l,
            udp_ports,
            children,
            knobs,
        };
        // Another listener served in this round may have reached the
        // core's total since the poll set was made.
        if at_children_limit(&s) {
            return;
        }
        if hands {
            self.spawn_holder(&mut s);
            return;
        }
        let single = self.one_at_a_time > 0;
        self.one_at_a_time = self.one_at_a_time.saturating_sub(1);
        for took in 0..ACCEPT_BATCH {
            let Some(pipe) = self.pipe() else { return };
            let accepted = match s.l.socket() {
                Some(sock) => net::accept(sock),
                None => Err(AcceptError::Nothing),
            };
            match accepted {
                Ok((conn, from)) => {
                    self.spare_pipe = self.serve_connection(&mut s, conn, from, pipe);
                    if at_children_limit(&s) {
                        held(&mut s);
                        return;
                    }
                    if single {
                        return;
                    }
                }
                Err(AcceptError::Nothing) => {
                    self.spare_pipe = Some(pipe);
                    // The queue held one connection: the next rounds take
                    // one each (see `one_at_a_time`); more: every round
                    // drains.
                    self.one_at_a_time = if took == 1 { ONE_AT_A_TIME } else { 0 };
                    return;
                }
                Err(AcceptError::Resources(e)) => {
                    self.spare_pipe = Some(pipe);
                    self.pause(&format!("accept failed: {e}"));
                    return;
                }
                Err(AcceptError::Other(e)) => {
                    self.spare_pipe = Some(pipe);
                    warn!("{}: accept failed: {e}", s.l.label());
                    s.l.last_error = Some(format!("accept: {e}"));
                    return;
                }
            }
            if self.pause_until.is_some() {
                return;
            }
        }
    }

    /// One connection of a nowait (or builtin stream) service: admitted,
    /// its child started. Returns the pipe if no child took it.
    fn serve_connection(
        &mut self,
        s: &mut Serving<'_>,
        conn: OwnedFd,
        from: Option<SocketAddr>,
        pipe: StatusPipe,
    ) -> Option<StatusPipe> {
        let Some(peer) = peer_of(s.l, &conn, from) else {
            return Some(pipe);
        };
        let now = Instant::now();
        let paused = s.l.paused();
        let admitted = admission::admit(s.l.spec(), &peer).and_then(|()| {
            if paused {
                return Err(Refusal::Rate);
            }
            let (spec, limits) = s.l.spec_and_limits();
            admission::admit_limits(spec, limits, &peer, now, s.knobs)
        });
        let source = match admitted {
            Ok(source) => source,
            Err(r) => {
                refused(s, r, &peer, now);
                return Some(pipe);
            }
        };
        let mut pipe = Some(pipe);
        let Some(pid) = self.spawn(s, conn.as_raw_fd(), Some(peer), &mut pipe) else {
            return pipe;
        };
        if let Some(key) = source {
            s.l.limits.child_started(pid, key);
        }
        s.l.counters.accepted += 1;
        // The label (escaped once per apply) and the peer format into the
        // logger's stack buffer: no allocation for the line.
        info!("{}: connection from {peer}, pid {pid}", s.l.label());
        pipe
    }

    /// A wait service (or a dgram builtin): the child gets the socket,
    /// unless the service is paused, the waking datagram is refused by
    /// the access list, or this server is one too many for the rate.
    fn spawn_holder(&mut self, s: &mut Serving<'_>) {
        let Some(raw) = s.l.socket().map(|fd| fd.as_raw_fd()) else {
            return;
        };
        let now = Instant::now();
        if s.l.paused() {
            refuse_waiting(s, now, ACCEPT_BATCH);
            return;
        }
        if s.l.spec().socket_type == SocketType::Dgram
            && s.l.spec().acl.is_some()
            && !first_datagram_admitted(s, now)
        {
            return;
        }
        if !s
            .l
            .limits
            .count_rate(s.l.spec().limits.max_per_minute, now, s.knobs.window)
        {
            refuse_waiting(s, now, 1);
            return;
        }
        let mut pipe = self.pipe();
        if pipe.is_none() {
            return;
        }
        let pid = self.spawn(s, raw, None, &mut pipe);
        if pipe.is_some() {
            self.spare_pipe = pipe;
        }
        if let Some(pid) = pid {
            s.l.hold(pid);
            s.l.counters.accepted += 1;
            info!("{}: started pid {pid}, holding the socket", s.l.label());
        }
    }

    /// Starts a child with `fd` as its connection (from `peer`) or socket;
    /// its pid, or `None` (logged). A child that needs the status pipe
    /// takes it from `pipe`.
    fn spawn(
        &mut self,
        s: &mut Serving<'_>,
        fd: RawFd,
        peer: Option<Peer>,
        pipe: &mut Option<StatusPipe>,
    ) -> Option<i32> {
        let l = &mut *s.l;
        match s
            .children
            .spawn_server(s.id, l, fd, peer, pipe, s.udp_ports)
        {
            Ok(pid) => {
                self.child_started();
                Some(pid)
            }
            Err(e) => {
                l.last_error = Some(format!("cannot start a child: {e}"));
                // Out of processes, descriptors or memory: the socket stays
                // readable, so back off as for a failed accept.
                self.pause(&format!("{}: cannot start a child: {e}", l.label()));
                None
            }
        }
    }
}

/// A listener being served, with what its children need.
struct Serving<'a> {
    id: ListenerId,
    l: &'a mut Listener,
    udp_ports: &'a [u16],
    children: &'a mut ChildTable,
    knobs: &'a Knobs,
}

/// Whether the listener's children, or the core's, are at their limit.
pub fn children_limit_reached(
    limits: &Limits,
    of_listener: u32,
    total: u32,
    knobs: &Knobs,
) -> bool {
    Limits::get(limits.max_children).is_some_and(|m| of_listener >= m)
        || knobs.max_children.is_some_and(|m| total >= m)
}

fn at_children_limit(s: &Serving<'_>) -> bool {
    children_limit_reached(
        &s.l.spec().limits,
        s.children.count_for(s.id),
        s.children.live_servers(),
        s.knobs,
    )
}

/// The listener stopped accepting at the children limit: counted, logged
/// once per burst.
fn held(s: &mut Serving<'_>) {
    s.l.counters.at_max_children += 1;
    let now = Instant::now();
    if let Some(before) = s.l.limits.holds.note(now) {
        let mine = s.children.count_for(s.id);
        let total = s.children.live_servers();
        warn!(
            "{}: at its children limit ({mine} children, {total} in the core): new connections wait in the backlog until a child exits (logged once per burst{})",
            s.l.label(),
            earlier(before)
        );
    }
}

fn earlier(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!("; {n} more in the burst before")
    }
}

/// A connection (or a wait service's waiting connection or datagram)
/// refused for `r`: counted by reason, logged once per burst; reaching the
/// rate limit pauses the service.
fn refused(s: &mut Serving<'_>, r: Refusal, peer: &Peer, now: Instant) {
    let c = &mut s.l.counters;
    match r {
        Refusal::FtpBounce => {}
        Refusal::AccessList => c.refused_acl += 1,
        Refusal::Rate => c.refused_rate += 1,
        Refusal::SourceRate | Refusal::SourceChildren => c.refused_per_source += 1,
    }
    if r == Refusal::Rate && !s.l.paused() {
        let until = now + s.knobs.pause;
        s.l.pause(until);
        warn!(
            "{}: paused: {}; every connection is closed for {} s, then it resumes by itself",
            s.l.label(),
            s.l.pause_reason(),
            s.knobs.pause.as_secs()
        );
    }
    if let Some(before) = s.l.limits.refusals.note(now) {
        info!(
            "{}: refused connection from {peer}: {} (further refusals are counted, logged once per burst{})",
            s.l.label(),
            r.reason(),
            earlier(before)
        );
    }
}

/// A paused (or rate-limited) wait service: up to `max` waiting
/// connections or datagrams taken away unserved, each counted.
fn refuse_waiting(s: &mut Serving<'_>, now: Instant, max: usize) {
    let dgram = s.l.spec().socket_type == SocketType::Dgram;
    if !dgram {
        s.l.set_blocking_for(false);
    }
    for _ in 0..max {
        let Some(fd) = s.l.socket() else { return };
        let peer = if dgram {
            let Some(src) = net::peek_source(fd) else {
                return;
            };
            net::discard_datagram(fd);
            src
        } else {
            let Ok((_conn, from)) = net::accept(fd) else {
                return;
            };
            match from {
                Some(p) => p,
                None => continue,
            }
        };
        refused(s, Refusal::Rate, &source_peer(peer), now);
    }
}

/// A datagram's (or a refused connection's) source as a peer, for the log.
fn source_peer(src: SocketAddr) -> Peer {
    Peer::Inet {
        peer: src,
        local: src,
    }
}

/// A dgram service with an access list: the datagrams that would wake
/// its server are peeked at; each refused one is read away and counted.
/// True when the next one is admitted (its server may start).
fn first_datagram_admitted(s: &mut Serving<'_>, now: Instant) -> bool {
    for _ in 0..ACCEPT_BATCH {
        let Some(fd) = s.l.socket() else { return false };
        let Some(src) = net::peek_source(fd) else {
            return false;
        };
        if admission::acl_admits(s.l.spec(), src.ip()) {
            return true;
        }
        net::discard_datagram(fd);
        refused(s, Refusal::AccessList, &source_peer(src), now);
    }
    false
}

/// The peer of an accepted connection (`from`: its address as accept
/// gave it), or `None` (logged) if it is gone.
fn peer_of(l: &Listener, conn: &OwnedFd, from: Option<SocketAddr>) -> Option<Peer> {
    let bound = match l.spec().bind {
        Bind::Unix { .. } => {
            return match net::peer_cred(conn.as_fd()) {
                Ok((pid, uid, gid)) => Some(Peer::Unix { pid, uid, gid }),
                Err(e) => {
                    debug!("{}: connection without peer credentials: {e}", l.label());
                    None
                }
            };
        }
        Bind::Inet { addr, port, .. } => SocketAddr::new(addr, port),
    };
    let peer = from.or_else(|| net::peer_inet(conn.as_fd()));
    match (peer, local_of(bound, conn)) {
        (Some(peer), Some(local)) => Some(Peer::Inet { peer, local }),
        _ => {
            debug!("{}: connection gone before it was served", l.label());
            None
        }
    }
}

/// The local address of a connection accepted on a listener bound to
/// `bound`: that address itself, unless it is a wildcard (`0.0.0.0`,
/// `::`, or `::ffff:0.0.0.0`), whose connections each have their own,
/// asked of the kernel.
fn local_of(bound: SocketAddr, conn: &OwnedFd) -> Option<SocketAddr> {
    if unmap(bound.ip()).is_unspecified() {
        net::local_inet(conn.as_fd())
    } else {
        Some(bound)
    }
}
