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

struct Reg {
    fd: RawFd,
    token: u64,
    /// The events it is armed for; 0 once it reported (one-shot).
    armed: u32,
}

pub struct Events {
    ep: Epoll,
    regs: HashMap<Tok, Reg>,
    toks: HashMap<u64, Tok>,
    next_token: u64,
    buf: Vec<Event>,
}

/// Most events taken from one wait.
const BATCH: usize = 64;

impl Events {
    pub fn new() -> io::Result<Events> {
        Ok(Events {
            ep: Epoll::new()?,
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
        let token = match self.regs.get_mut(&tok) {
            Some(r) if r.fd == fd => {
                if r.armed == events || events == 0 {
                    return Ok(());
                }
                match self.ep.modify(fd, events, r.token) {
                    Ok(()) => {
                        r.armed = events;
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
        self.regs.insert(
            tok,
            Reg {
                fd,
                token,
                armed: events,
            },
        );
        Ok(())
    }

    fn new_token(&mut self, tok: Tok) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        self.toks.insert(token, tok);
        token
    }

    /// `tok` went away (its descriptor is closed, or about to be): forgotten
    /// here, see the module's header.
    pub fn forget(&mut self, tok: Tok) {
        if let Some(r) = self.regs.remove(&tok) {
            self.toks.remove(&r.token);
        }
    }

    /// The sources known, for a caller that drops the ones it no longer has.
    pub fn known(&self) -> impl Iterator<Item = Tok> + '_ {
        self.regs.keys().copied()
    }

    /// Waits at most `timeout_ms` (-1: no limit) and appends what reported
    /// to `out`, each now disarmed. Unknown tokens are left out.
    pub fn wait(&mut self, timeout_ms: i32, out: &mut Vec<(Tok, u32)>) -> io::Result<()> {
        let n = self.ep.wait(&mut self.buf, timeout_ms)?;
        for e in &self.buf[..n] {
            let (token, events) = epoll::event_parts(e);
            let Some(tok) = self.toks.get(&token) else {
                continue;
            };
            if let Some(r) = self.regs.get_mut(tok) {
                r.armed = 0;
            }
            out.push((*tok, events));
        }
        Ok(())
    }
}
