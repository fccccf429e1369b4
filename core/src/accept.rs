//! Serving a listener that polled readable: accept (or hand the socket
//! over), admit, spawn. Out of descriptors or memory, accept (or pipe, or
//! fork) would fail again at once and the loop would spin: every listener
//! then stops being polled for 100 ms, doubling up to 1 s, logged once per
//! burst; the first child that starts ends the burst.
#![forbid(unsafe_code)]

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use inetd_protocol::Bind;
use log::{debug, info, warn};

use crate::admission;
use crate::backoff::{self, Backoff};
use crate::children::ChildTable;
use crate::listeners::{Listener, ListenerId};
use crate::peer::Peer;
use crate::sys::child::StatusPipe;
use crate::sys::net::{self, AcceptError};

/// Most connections accepted from one listener per poll round, so one busy
/// listener cannot starve the others.
const ACCEPT_BATCH: usize = 16;

pub struct Acceptor {
    pause_until: Option<Instant>,
    backoff: Backoff,
    in_burst: bool,
    /// Made before an accept that found nothing; kept for the next.
    spare_pipe: Option<StatusPipe>,
}

impl Default for Acceptor {
    fn default() -> Self {
        Acceptor {
            pause_until: None,
            backoff: Backoff::new(backoff::ACCEPT_PAUSE_FIRST, backoff::ACCEPT_PAUSE_MAX),
            in_burst: false,
            spare_pipe: None,
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
        };
        if hands {
            self.spawn_holder(&mut s);
            return;
        }
        for _ in 0..ACCEPT_BATCH {
            let Some(pipe) = self.pipe() else { return };
            let accepted = match s.l.socket() {
                Some(sock) => net::accept(sock),
                None => Err(AcceptError::Nothing),
            };
            match accepted {
                Ok(conn) => self.spare_pipe = self.serve_connection(&mut s, conn, pipe),
                Err(AcceptError::Nothing) => {
                    self.spare_pipe = Some(pipe);
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
        pipe: StatusPipe,
    ) -> Option<StatusPipe> {
        let Some(peer) = peer_of(s.l, &conn) else {
            return Some(pipe);
        };
        if let Err(r) = admission::admit(s.l.spec(), &peer) {
            info!(
                "{}: refused connection from {peer}: {}",
                s.l.label(),
                r.reason()
            );
            if r == admission::Refusal::AccessList {
                s.l.counters.refused_acl += 1;
            }
            return Some(pipe);
        }
        let what = Some((peer.log_text(), peer.env()));
        let pid = self.spawn(s, conn.as_raw_fd(), what, pipe)?;
        s.l.counters.accepted += 1;
        // The label (escaped once per apply) and the peer format into the
        // logger's stack buffer: one write, no allocation for the line.
        info!("{}: connection from {peer}, pid {pid}", s.l.label());
        None
    }

    /// A wait service (or a dgram builtin): the child gets the socket.
    fn spawn_holder(&mut self, s: &mut Serving<'_>) {
        let Some(raw) = s.l.socket().map(|fd| fd.as_raw_fd()) else {
            return;
        };
        let Some(pipe) = self.pipe() else { return };
        if let Some(pid) = self.spawn(s, raw, None, pipe) {
            s.l.hold(pid);
            s.l.counters.accepted += 1;
            info!("{}: started pid {pid}, holding the socket", s.l.label());
        }
    }

    /// Starts a child with `fd` as its connection (`conn`: its peer text
    /// and environment) or socket; its pid, or `None` (logged).
    fn spawn(
        &mut self,
        s: &mut Serving<'_>,
        fd: RawFd,
        conn: Option<(String, Vec<CString>)>,
        pipe: StatusPipe,
    ) -> Option<i32> {
        let l = &mut *s.l;
        match s
            .children
            .spawn_server(s.id, l, fd, conn, Some(pipe), s.udp_ports)
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
}

/// The peer of an accepted connection, or `None` (logged) if it is gone.
fn peer_of(l: &Listener, conn: &OwnedFd) -> Option<Peer> {
    if matches!(l.spec().bind, Bind::Unix { .. }) {
        return match net::peer_cred(conn.as_fd()) {
            Ok((pid, uid, gid)) => Some(Peer::Unix { pid, uid, gid }),
            Err(e) => {
                debug!("{}: connection without peer credentials: {e}", l.label());
                None
            }
        };
    }
    match (net::peer_inet(conn.as_fd()), net::local_inet(conn.as_fd())) {
        (Some(peer), Some(local)) => Some(Peer::Inet { peer, local }),
        _ => {
            debug!("{}: connection gone before it was served", l.label());
            None
        }
    }
}
