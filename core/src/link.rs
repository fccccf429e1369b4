//! The core's links to its controller: the core socket (packaged mode) and
//! every connection, the one-command socketpair included. A connection goes
//! `AwaitHello` → `Ready` → (after a fatal answer) `Closing`; what may be
//! asked in which phase is a pure table ([`judge`]). Invariants, kept here:
//! * a core-socket peer is judged by SO_PEERCRED before a byte is read, and
//!   at most [`MAX_CORE_CONNS`] connections are open;
//! * a connection is read only when its previous answer is written out, and
//!   never past the current frame: a slow reader cannot make the core
//!   buffer more than one answer, and a peer that streams requests gets one
//!   answered per turn of the loop (the daemon asks for one);
//! * a request is at most [`MAX_REQUEST`] bytes, and the large frames being
//!   read on all connections together at most [`READ_BUDGET`]: each frame's
//!   declared length is counted against it as soon as its header is in,
//!   before a byte of payload is buffered. Past either, the request is
//!   answered with an error and the connection closed. Decoding happens
//!   one request at a time, so what a decoded request costs is bounded by
//!   one request too;
//! * every answer fits in a frame (`reply`).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use inetd_protocol::{
    decode_payload, CoreRequest, CoreResponse, FrameBuf, ProtocolError, MAX_FRAME, MAX_REQUEST,
    PROTOCOL_VERSION,
};
use log::{debug, warn};

use crate::reply;
use crate::sys;
use crate::sys::net;

/// Most simultaneous core connections; more are closed at once.
pub const MAX_CORE_CONNS: usize = 16;

/// Most payload bytes of large requests being read at once, over every
/// connection: two whole requests (an old controller's and its successor's).
pub const READ_BUDGET: usize = 2 * MAX_REQUEST as usize;

/// Requests up to this length are not counted in [`READ_BUDGET`] (at most
/// [`MAX_CORE_CONNS`] of them are buffered: 1 MiB), so a `Hello` or a
/// `Status` is read even while two large `Apply`s are.
pub const SMALL_REQUEST: usize = 64 * 1024;

pub struct CoreSocket {
    listener: UnixListener,
    path: PathBuf,
    /// (dev, ino) of the socket file, to unlink only our own at exit.
    file_id: (u64, u64),
    /// Uids served: root, the controller user, the core's own.
    allowed_uids: Vec<u32>,
}

impl CoreSocket {
    /// Binds the core socket at `path`: refuses if another core answers
    /// there, removes a stale socket (never anything else), and creates the
    /// new one mode 0660 with group `gid` by binding with that effective gid
    /// and umask 0117, so no chown is needed.
    pub fn bind(
        path: &Path,
        gid: u32,
        root: bool,
        allowed_uids: Vec<u32>,
    ) -> Result<CoreSocket, String> {
        if let Ok(m) = std::fs::symlink_metadata(path) {
            if !m.file_type().is_socket() {
                return Err(format!(
                    "{} exists and is not a socket; not removing it",
                    path.display()
                ));
            }
            if net::unix_answers(path) {
                return Err(format!(
                    "another core is running: {} answers",
                    path.display()
                ));
            }
            std::fs::remove_file(path)
                .map_err(|e| format!("cannot remove the stale socket {}: {e}", path.display()))?;
        }
        let old = sys::umask(0o117);
        let switched = root && sys::setegid(gid).is_ok();
        let r = UnixListener::bind(path);
        if switched {
            let _ = sys::setegid(0);
        }
        sys::umask(old);
        if root && !switched {
            return Err(format!(
                "cannot set the effective gid to {gid} to create the core socket"
            ));
        }
        let listener =
            r.map_err(|e| format!("cannot bind the core socket {}: {e}", path.display()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("core socket: {e}"))?;
        let m = std::fs::symlink_metadata(path)
            .map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
        Ok(CoreSocket {
            listener,
            path: path.to_owned(),
            file_id: (m.dev(), m.ino()),
            allowed_uids,
        })
    }

    /// Closes the socket; removes its file if it is still ours.
    fn close(self) {
        drop(self.listener);
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.file_id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    AwaitHello,
    Ready,
    /// A fatal answer is being written; then the connection closes.
    Closing,
}

/// A request refused in its phase: answered with `reason`, then closed.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    pub reason: String,
    /// Why, for the log.
    pub log: String,
}

/// The table of permitted requests per phase (pure): the request if it may
/// be served now.
pub fn judge(phase: Phase, req: CoreRequest) -> Result<CoreRequest, Refused> {
    let refused = |reason: &str, log: &str| Refused {
        reason: reason.into(),
        log: log.into(),
    };
    match (phase, req) {
        (_, CoreRequest::Hello { version }) if version != PROTOCOL_VERSION => {
            let e = ProtocolError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: version,
            };
            Err(refused(&e.to_string(), &e.to_string()))
        }
        (Phase::Closing, _) => Err(refused(
            "the connection is closing",
            "a request after a fatal answer",
        )),
        (Phase::AwaitHello, req @ CoreRequest::Hello { .. }) | (Phase::Ready, req) => Ok(req),
        (Phase::AwaitHello, _) => Err(refused(
            "the first message on a core connection must be Hello",
            "a request before Hello; answering with an error and closing it",
        )),
    }
}

/// A connection's name; never reused.
pub type ConnId = u64;

struct Conn {
    stream: UnixStream,
    buf: FrameBuf,
    /// The declared length of the frame being read, counted in the budget.
    charged: usize,
    out: Vec<u8>,
    sent: usize,
    phase: Phase,
    /// The one-command socketpair: trusted by construction.
    controller_link: bool,
    /// Who is on the other end, for the log.
    who: String,
}

impl Conn {
    fn new(stream: UnixStream, controller_link: bool, who: String) -> Conn {
        Conn {
            stream,
            buf: FrameBuf::new(),
            charged: 0,
            out: Vec::new(),
            sent: 0,
            phase: Phase::AwaitHello,
            controller_link,
            who,
        }
    }

    fn pending(&self) -> bool {
        self.sent < self.out.len()
    }
}

pub struct Links {
    socket: Option<CoreSocket>,
    conns: BTreeMap<ConnId, Conn>,
    next: ConnId,
    rbuf: Vec<u8>,
    /// The sum of every connection's `charged`.
    charged: usize,
}

impl Links {
    pub fn new(socket: Option<CoreSocket>) -> Links {
        Links {
            socket,
            conns: BTreeMap::new(),
            next: 1,
            rbuf: vec![0; 64 * 1024],
            charged: 0,
        }
    }

    pub fn socket_fd(&self) -> Option<RawFd> {
        self.socket.as_ref().map(|s| s.listener.as_raw_fd())
    }

    /// Each connection with its poll events: writable while an answer is
    /// pending, else readable.
    pub fn conn_fds(&self) -> impl Iterator<Item = (ConnId, RawFd, i16)> + '_ {
        self.conns.iter().map(|(id, c)| {
            let ev = if c.pending() {
                sys::POLLOUT
            } else {
                sys::POLLIN
            };
            (*id, c.stream.as_raw_fd(), ev)
        })
    }

    /// Accepts what waits on the core socket; `Err` when descriptors or
    /// memory ran out (the caller pauses accepting).
    pub fn accept(&mut self) -> Result<(), String> {
        loop {
            let Some(sock) = &self.socket else {
                return Ok(());
            };
            let stream = match sock.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("core socket: accept failed: {e}");
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) {
                        return Err(format!("core socket: accept failed: {e}"));
                    }
                    return Ok(());
                }
            };
            // Judge the peer by the kernel's record before reading a byte.
            let (pid, uid, gid) = match net::peer_cred(stream.as_fd()) {
                Ok(c) => c,
                Err(e) => {
                    warn!("core socket: no peer credentials ({e}); closing the connection");
                    continue;
                }
            };
            if !sock.allowed_uids.contains(&uid) {
                warn!("core socket: refused a connection from uid {uid} (pid {pid}, gid {gid}): not root, the controller user or the core's uid");
                continue;
            }
            if self.conns.len() >= MAX_CORE_CONNS {
                warn!("core socket: refused a connection from uid {uid} (pid {pid}): already {MAX_CORE_CONNS} connections");
                continue;
            }
            if let Err(e) = stream.set_nonblocking(true) {
                warn!("core socket: {e}");
                continue;
            }
            let cid = self.add(stream, false, format!("uid {uid} pid {pid}"));
            debug!("core connection {cid} from uid {uid} pid {pid}");
        }
    }

    /// Adds the (nonblocking) socketpair to the controller child `pid`.
    pub fn add_controller_link(&mut self, stream: UnixStream, pid: i32) -> ConnId {
        self.add(stream, true, format!("controller pid {pid}"))
    }

    fn add(&mut self, stream: UnixStream, controller_link: bool, who: String) -> ConnId {
        let cid = self.next;
        self.next += 1;
        self.conns
            .insert(cid, Conn::new(stream, controller_link, who));
        cid
    }

    pub fn remove(&mut self, cid: ConnId) {
        if let Some(c) = self.conns.remove(&cid) {
            self.charged -= c.charged;
        }
    }

    fn drop_conn(&mut self, cid: ConnId, reason: Option<&str>) {
        if let Some(c) = self.conns.remove(&cid) {
            self.charged -= c.charged;
            match reason {
                Some(r) => warn!("core connection from {}: {r}; closing it", c.who),
                None => debug!("core connection from {} closed", c.who),
            }
        }
    }

    /// Writes what is pending; false if the connection is gone (or closed,
    /// its fatal answer written).
    fn flush(&mut self, cid: ConnId) -> bool {
        let Some(c) = self.conns.get_mut(&cid) else {
            return false;
        };
        while c.pending() {
            match c.stream.write(&c.out[c.sent..]) {
                Ok(0) => {
                    self.drop_conn(cid, Some("write returned 0"));
                    return false;
                }
                Ok(n) => c.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let r = format!("write failed: {e}");
                    self.drop_conn(cid, Some(&r));
                    return false;
                }
            }
        }
        c.out = Vec::new();
        c.sent = 0;
        if c.phase == Phase::Closing {
            self.drop_conn(cid, None);
            return false;
        }
        true
    }

    /// Writes what is pending on connection `cid` and, when nothing is and
    /// `readable`, reads until a whole request is there: the next request
    /// for the daemon to answer (with [`Links::answer`]) and whether it
    /// came on the controller's socketpair; `None` when there is none yet
    /// or the connection is gone. Requests out of turn and bad frames are
    /// dealt with here.
    pub fn next_request(&mut self, cid: ConnId, readable: bool) -> Option<(CoreRequest, bool)> {
        if !self.flush(cid) || !readable {
            return None;
        }
        let payload = self.read_frame(cid)?;
        let req: CoreRequest = match decode_payload(&payload) {
            Ok(r) => r,
            Err(e) => {
                let r = format!("undecodable message: {e}");
                self.drop_conn(cid, Some(&r));
                return None;
            }
        };
        let c = self.conns.get_mut(&cid)?;
        match judge(c.phase, req) {
            Ok(req) => {
                c.phase = Phase::Ready;
                Some((req, c.controller_link))
            }
            Err(Refused { reason, log }) => {
                warn!("core connection from {}: {log}", c.who);
                c.phase = Phase::Closing;
                self.answer(cid, CoreResponse::Error { reason });
                None
            }
        }
    }

    /// Reads up to the end of the current frame: its payload once whole;
    /// `None` when it would block or the connection ended (dropped).
    fn read_frame(&mut self, cid: ConnId) -> Option<Vec<u8>> {
        loop {
            let c = self.conns.get_mut(&cid)?;
            if c.pending() || c.phase == Phase::Closing {
                return None;
            }
            // Never read past the current frame: at most one frame buffered.
            let want = match c.buf.wanted() {
                Ok(w) => w,
                Err(e) => {
                    let r = format!("bad frame: {e}");
                    self.drop_conn(cid, Some(&r));
                    return None;
                }
            };
            let n = want.min(self.rbuf.len());
            match c.stream.read(&mut self.rbuf[..n]) {
                Ok(0) => {
                    let buffered = c.buf.pending();
                    let r = format!("connection closed inside a frame ({buffered} bytes buffered)");
                    self.drop_conn(cid, (buffered > 0).then_some(r.as_str()));
                    return None;
                }
                Ok(got) => c.buf.extend(&self.rbuf[..got]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let r = format!("read failed: {e}");
                    self.drop_conn(cid, Some(&r));
                    return None;
                }
            }
            if c.charged == 0 {
                if let Some(len) = c.buf.declared() {
                    if let Err(why) = charge(c, &mut self.charged, len) {
                        self.refuse(cid, why);
                        return None;
                    }
                }
            }
            let c = self.conns.get_mut(&cid)?;
            match c.buf.next_payload() {
                Ok(None) => {}
                Ok(Some(p)) => {
                    self.charged -= c.charged;
                    c.charged = 0;
                    return Some(p);
                }
                Err(e) => {
                    let r = format!("bad frame: {e}");
                    self.drop_conn(cid, Some(&r));
                    return None;
                }
            }
        }
    }

    /// Answers a request that will not be read with an error, then closes
    /// the connection.
    fn refuse(&mut self, cid: ConnId, reason: String) {
        let Some(c) = self.conns.get_mut(&cid) else {
            return;
        };
        warn!(
            "core connection from {}: {reason}; answering with an error and closing it",
            c.who
        );
        c.phase = Phase::Closing;
        self.charged -= c.charged;
        c.charged = 0;
        c.buf = FrameBuf::new();
        self.answer(cid, CoreResponse::Error { reason });
    }

    pub fn answer(&mut self, cid: ConnId, resp: CoreResponse) {
        let frame = reply::frame(resp);
        if let Some(c) = self.conns.get_mut(&cid) {
            c.out = frame;
            c.sent = 0;
        }
        self.flush(cid);
    }

    pub fn close_all(&mut self) {
        self.conns.clear();
        self.charged = 0;
        if let Some(s) = self.socket.take() {
            s.close();
        }
    }
}

/// Counts a frame of `len` declared bytes on `c` against the request limit
/// and the budget `total`; the reason it may not be read otherwise. A
/// header the codec refuses (empty, over a frame) is left to it.
fn charge(c: &mut Conn, total: &mut usize, len: usize) -> Result<(), String> {
    if len > MAX_FRAME as usize || len <= SMALL_REQUEST {
        return Ok(());
    }
    if len > MAX_REQUEST as usize {
        return Err(format!(
            "a request of {len} bytes is longer than the core reads ({MAX_REQUEST} bytes), so that its answer fits in a frame"
        ));
    }
    if *total + len > READ_BUDGET {
        return Err(format!(
            "a request of {len} bytes does not fit in what the core reads at once ({READ_BUDGET} bytes, {} of them taken by other connections)",
            *total
        ));
    }
    c.charged = len;
    *total += len;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(version: u32) -> CoreRequest {
        CoreRequest::Hello { version }
    }

    fn refusal(phase: Phase, req: CoreRequest) -> String {
        judge(phase, req).expect_err("should be refused").reason
    }

    #[test]
    fn hello_comes_first() {
        assert_eq!(
            judge(Phase::AwaitHello, hello(PROTOCOL_VERSION)),
            Ok(hello(PROTOCOL_VERSION))
        );
        for req in [
            CoreRequest::Status,
            CoreRequest::Apply { listeners: vec![] },
        ] {
            assert!(refusal(Phase::AwaitHello, req).contains("must be Hello"));
        }
    }

    #[test]
    fn ready_serves_apply_status_and_another_hello() {
        for req in [
            CoreRequest::Status,
            CoreRequest::Apply { listeners: vec![] },
            hello(PROTOCOL_VERSION),
        ] {
            assert_eq!(judge(Phase::Ready, req.clone()), Ok(req));
        }
    }

    #[test]
    fn a_version_mismatch_names_both_and_closes() {
        for phase in [Phase::AwaitHello, Phase::Ready] {
            let r = refusal(phase, hello(PROTOCOL_VERSION + 1));
            assert!(r.contains(&PROTOCOL_VERSION.to_string()), "{r}");
            assert!(r.contains(&(PROTOCOL_VERSION + 1).to_string()), "{r}");
        }
    }

    #[test]
    fn nothing_is_served_while_closing() {
        for req in [hello(PROTOCOL_VERSION), CoreRequest::Status] {
            assert!(refusal(Phase::Closing, req).contains("closing"));
        }
    }

    #[test]
    fn one_request_one_answer_over_a_socketpair() {
        use inetd_protocol::{read_message, write_message};
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut links = Links::new(None);
        let cid = links.add_controller_link(ours, 1);
        assert!(links.next_request(cid, true).is_none(), "nothing sent yet");
        // A request before Hello: answered here with an error, then closed.
        write_message(&mut theirs, &CoreRequest::Status).unwrap();
        assert!(links.next_request(cid, true).is_none());
        let r: CoreResponse = read_message(&mut theirs).unwrap();
        assert!(matches!(r, CoreResponse::Error { .. }), "{r:?}");
        assert_eq!(links.conns.len(), 0, "closed after the answer");

        let (ours, mut theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let cid = links.add_controller_link(ours, 2);
        write_message(&mut theirs, &hello(PROTOCOL_VERSION)).unwrap();
        write_message(&mut theirs, &CoreRequest::Status).unwrap();
        let (req, controller_link) = links.next_request(cid, true).unwrap();
        assert!(matches!(req, CoreRequest::Hello { .. }) && controller_link);
        let answer = CoreResponse::Error { reason: "h".into() };
        links.answer(cid, answer.clone());
        let got: CoreResponse = read_message(&mut theirs).unwrap();
        assert_eq!(got, answer);
        // Not readable: nothing is read.
        assert!(links.next_request(cid, false).is_none());
        let (req, _) = links.next_request(cid, true).unwrap();
        assert_eq!(req, CoreRequest::Status);
    }
}
