//! What the event loop waits on, kept in one epoll registration per
//! source: a source is registered when it first matters, armed again after
//! it reported (every registration is one-shot, see `sys::epoll`), and
//! left alone otherwise. A turn of the loop costs the same whatever the
//! number of listeners.
//!
//! The table never removes a registration by descriptor number: the number
//! may have been closed and given to another source already, and removing
//! it would silently unregister that one. A source that went away is only
//! forgotten here; the kernel drops its registration with the last copy of
//! its file, and anything it reports meanwhile carries a token that is no
//! longer known (tokens are never reused) and is ignored.
//!
//! Listeners, the many sources, cost one small entry each: a listener's
//! token is its id (odd tokens; the others are even), which is never
//! reused, and a listener's socket is its own for its life, so the token
//! names that one socket. The few other sources have tokens of a counter.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;

use crate::link::ConnId;
use crate::listeners::ListenerId;
use crate::sys::epoll::{self, Epoll, Event};

pub use crate::sys::epoll::{ERR_HUP, IN, OUT};

/// A source of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tok {
    Signal,
    CoreListener,
    Conn(ConnId),
    Listener(ListenerId),
    Status(i32),
}

#[derive(Clone, Copy)]
struct Reg {
    fd: RawFd,
    token: u64,
    /// The events it is armed for; 0 once it reported (one-shot).
    armed: u32,
}

/// A listener's registration: its token is its id's.
struct ListenerReg {
    fd: RawFd,
    armed: u32,
}

pub struct Events {
    ep: Epoll,
    listeners: HashMap<ListenerId, ListenerReg>,
    /// The other sources, and their tokens.
    regs: HashMap<Tok, Reg>,
    toks: HashMap<u64, Tok>,
    next_token: u64,
    buf: Vec<Event>,
}

/// The token of listener `id`: odd.
fn listener_token(id: ListenerId) -> u64 {
    (id.get() << 1) | 1
}

/// Most events taken from one wait.
const BATCH: usize = 64;

impl Events {
    pub fn new() -> io::Result<Events> {
        Ok(Events {
            ep: Epoll::new()?,
            listeners: HashMap::new(),
            regs: HashMap::new(),
            toks: HashMap::new(),
            next_token: 1,
            buf: vec![epoll::empty_event(); BATCH],
        })
    }

    /// `tok` is wanted on `fd` for `events`: registers it, arms it again, or
    /// leaves it as it is. `events` 0 (not now) leaves a registration
    /// disarmed once it has reported. Errors are returned for the caller to
    /// log; the source is then not watched.
    pub fn want(&mut self, tok: Tok, fd: RawFd, events: u32) -> io::Result<()> {
        let token = match self.reg(tok) {
            Some(r) if r.fd == fd => {
                if r.armed == events || events == 0 {
                    return Ok(());
                }
                match self.ep.modify(fd, events, r.token) {
                    Ok(()) => {
                        self.set_armed(tok, events);
                        return Ok(());
                    }
                    // The number now names another file (the old one was
                    // closed): register that one.
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => r.token,
                    Err(e) => return Err(e),
                }
            }
            Some(_) => {
                self.forget(tok);
                self.new_token(tok)
            }
            None if events == 0 => return Ok(()),
            None => self.new_token(tok),
        };
        let added = match self.ep.add(fd, events, token) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => self.ep.modify(fd, events, token),
            r => r,
        };
        if let Err(e) = added {
            self.forget(tok);
            return Err(e);
        }
        let reg = Reg {
            fd,
            token,
            armed: events,
        };
        match tok {
            Tok::Listener(id) => {
                self.listeners.insert(id, ListenerReg { fd, armed: events });
            }
            _ => {
                self.regs.insert(tok, reg);
            }
        }
        Ok(())
    }

    /// The registration of `tok`, if it has one.
    fn reg(&self, tok: Tok) -> Option<Reg> {
        match tok {
            Tok::Listener(id) => self.listeners.get(&id).map(|r| Reg {
                fd: r.fd,
                token: listener_token(id),
                armed: r.armed,
            }),
            _ => self.regs.get(&tok).copied(),
        }
    }

    fn set_armed(&mut self, tok: Tok, events: u32) {
        match tok {
            Tok::Listener(id) => {
                if let Some(r) = self.listeners.get_mut(&id) {
                    r.armed = events;
                }
            }
            _ => {
                if let Some(r) = self.regs.get_mut(&tok) {
                    r.armed = events;
                }
            }
        }
    }

    fn new_token(&mut self, tok: Tok) -> u64 {
        if let Tok::Listener(id) = tok {
            return listener_token(id);
        }
        let token = self.next_token << 1;
        self.next_token += 1;
        self.toks.insert(token, tok);
        token
    }

    /// `tok` went away (its descriptor is closed, or about to be): forgotten
    /// here, see the module's header.
    pub fn forget(&mut self, tok: Tok) {
        if let Tok::Listener(id) = tok {
            self.listeners.remove(&id);
        } else if let Some(r) = self.regs.remove(&tok) {
            self.toks.remove(&r.token);
        }
    }

    /// The sources known, for a caller that drops the ones it no longer has.
    pub fn known(&self) -> impl Iterator<Item = Tok> + '_ {
        self.listeners
            .keys()
            .map(|id| Tok::Listener(*id))
            .chain(self.regs.keys().copied())
    }

    /// Waits at most `timeout_ms` (-1: no limit) and appends what reported
    /// to `out`, each now disarmed. Unknown tokens are left out.
    pub fn wait(&mut self, timeout_ms: i32, out: &mut Vec<(Tok, u32)>) -> io::Result<()> {
        let n = self.ep.wait(&mut self.buf, timeout_ms)?;
        for e in &self.buf[..n] {
            let (token, events) = epoll::event_parts(e);
            let tok = if token & 1 == 1 {
                let id = ListenerId::from_token(token >> 1);
                let Some(r) = self.listeners.get_mut(&id) else {
                    continue;
                };
                r.armed = 0;
                Tok::Listener(id)
            } else {
                let Some(&tok) = self.toks.get(&token) else {
                    continue;
                };
                if let Some(r) = self.regs.get_mut(&tok) {
                    r.armed = 0;
                }
                tok
            };
            out.push((tok, events));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn ready(e: &mut Events) -> Vec<(Tok, u32)> {
        let mut out = Vec::new();
        e.wait(0, &mut out).unwrap();
        out
    }

    #[test]
    fn listener_tokens_and_the_others_come_back_as_their_sources() {
        let mut e = Events::new().unwrap();
        let (mut a_in, a) = UnixStream::pair().unwrap();
        let (mut b_in, b) = UnixStream::pair().unwrap();
        a_in.write_all(b"x").unwrap();
        b_in.write_all(b"x").unwrap();
        let l = Tok::Listener(ListenerId::from_token(5));
        let s = Tok::Status(42);
        e.want(l, a.as_raw_fd(), IN).unwrap();
        e.want(s, b.as_raw_fd(), IN).unwrap();
        let mut got = ready(&mut e);
        got.sort_by_key(|(t, _)| matches!(t, Tok::Status(_)));
        assert_eq!(got.iter().map(|(t, _)| *t).collect::<Vec<_>>(), [l, s]);
        // One-shot: nothing more until armed again.
        assert!(ready(&mut e).is_empty());
        e.want(l, a.as_raw_fd(), IN).unwrap();
        assert_eq!(ready(&mut e).len(), 1);
        // Forgotten while armed: its report is no longer known, ignored.
        e.want(l, a.as_raw_fd(), IN).unwrap();
        e.forget(l);
        assert!(ready(&mut e).is_empty());
        assert_eq!(e.known().collect::<Vec<_>>(), [s]);
        // Wanted again: registered again under the same token.
        e.want(l, a.as_raw_fd(), IN).unwrap();
        assert_eq!(ready(&mut e), [(l, IN)]);
    }
}
