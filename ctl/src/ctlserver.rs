//! The control socket: anyone may connect (mode 0666) and ask `list` and
//! `status`; `reload` is for admins. The caller is identified by
//! SO_PEERCRED alone (interprocess's peer credentials: the peer's effective
//! uid when it connected). One thread per connection, bounded per uid and
//! in total, with slots kept for admins, so neither one user nor a few
//! can starve the others or lock an admin out; a bad frame, or a request
//! not complete within [`REQUEST_TIMEOUT`] of the connection or of the
//! previous answer (however slowly its bytes come), ends that connection
//! only.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::fs;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::mpsc;
use std::sync::OnceLock;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use interprocess::local_socket::traits::{Listener as _, Stream as _, StreamCommon as _};
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use interprocess::os::unix::local_socket::ListenerOptionsExt;
use interprocess::os::unix::uds_local_socket::{Listener, Stream};
use log::{debug, warn};

use inetd_protocol::codec::{check_header, decode_payload, HEADER_LEN};
use inetd_protocol::control::{
    request_version, CtlCommand, CtlErrorKind, CtlRequest, CtlResponse, MAX_CTL_REQUEST,
};
use inetd_protocol::{write_message, PROTOCOL_VERSION};

use crate::admin::{Admins, GroupDb};

/// Connections one uid may hold at once.
pub const MAX_PER_UID: u32 = 32;
/// Connections in total.
pub const MAX_CONNECTIONS: u32 = 512;
/// Of [`MAX_CONNECTIONS`], the slots only admins may take: two admin uids'
/// worth, whatever other users hold.
pub const ADMIN_SLOTS: u32 = 2 * MAX_PER_UID;
/// A request must be whole within this long of the connection or of the
/// previous answer; else the connection is closed. For the whole request,
/// not per read: a byte every 29 s does not hold a slot.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A client that does not read its answer for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// [`REQUEST_TIMEOUT`], or the milliseconds in the environment variable
/// `INETD_TEST_REQUEST_TIMEOUT_MS` (for tests, which cannot wait 30 s).
fn request_timeout() -> Duration {
    static T: OnceLock<Duration> = OnceLock::new();
    *T.get_or_init(|| test_knob_ms("INETD_TEST_REQUEST_TIMEOUT_MS").unwrap_or(REQUEST_TIMEOUT))
}

/// A duration in milliseconds from the environment variable `name`, for
/// tests that cannot wait out the real one.
pub fn test_knob_ms(name: &str) -> Option<Duration> {
    let ms: u64 = std::env::var(name).ok()?.parse().ok()?;
    warn!("{name}={ms}: a setting for tests");
    Some(Duration::from_millis(ms))
}

/// A request passed to the daemon's main thread, with where to answer.
pub struct Request {
    pub uid: u32,
    /// The caller is an admin (root, the controller's uid, the admin
    /// group): it may reload, and its `list` and `status` see the core's
    /// status of now, never one a moment old.
    pub admin: bool,
    pub command: CtlCommand,
    pub reply: mpsc::Sender<CtlResponse>,
}

/// Hands a request to the main thread; false when it is gone.
pub type Dispatch = Arc<dyn Fn(Request) -> bool + Send + Sync>;

/// The socket's directory and the one above it must be ours or root's and
/// not writable by group or others (unless sticky), or someone else could
/// replace the socket under the users who trust it.
fn check_dir(dir: &Path, uid: u32) -> Result<(), String> {
    let m = fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !m.is_dir() {
        return Err(format!("{}: not a directory", dir.display()));
    }
    if m.uid() != uid && m.uid() != 0 {
        return Err(format!(
            "{}: owned by uid {}, expected {uid} or root",
            dir.display(),
            m.uid()
        ));
    }
    // A sticky directory (like /tmp) is fine: others cannot rename or
    // remove what we own in it.
    if m.mode() & 0o022 != 0 && m.mode() & 0o1000 == 0 {
        return Err(format!(
            "{}: writable by group or others (mode {:o})",
            dir.display(),
            m.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Creates the control socket at `path` with mode 0666, making its
/// directory (0755) and the runtime directory above it (0700) when they are
/// missing and it can. Refuses to take over a socket another controller
/// still answers on. The caller removes the socket when it leaves.
pub fn bind_control_socket(path: &Path, uid: u32) -> Result<Listener, String> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| format!("{}: not a path in a directory", path.display()))?;
    if !dir.exists() {
        if let Some(run) = dir.parent().filter(|r| !r.exists()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(run)
                .map_err(|e| format!("cannot create {}: {e}", run.display()))?;
        }
        fs::DirBuilder::new()
            .mode(0o755)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    check_dir(dir, uid)?;
    if let Some(run) = dir.parent().filter(|r| *r != Path::new("/")) {
        check_dir(run, uid)?;
    }
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if crate::local::connect(path).is_ok() {
                return Err(format!(
                    "{}: another controller is already serving this socket",
                    path.display()
                ));
            }
            fs::remove_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(_) => return Err(format!("{}: exists and is not a socket", path.display())),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    let name = path
        .to_fs_name::<GenericFilePath>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // The stale-socket rule above is ours (interprocess's try_overwrite
    // would unlink whatever is there); the name is removed by the caller at
    // exit, whatever thread holds the listener then.
    let listener = ListenerOptions::new()
        .name(name)
        .mode(0o666)
        .try_overwrite(false)
        .reclaim_name(false)
        .create_sync_as::<Listener>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // interprocess sets the mode before bind, where the umask still narrows
    // it; anyone must be able to connect, so set it again on the name.
    fs::set_permissions(path, fs::Permissions::from_mode(0o666))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(listener)
}

/// Per-uid and total connection counts; a slot is released when its guard
/// drops, whatever way the connection ends.
#[derive(Default)]
struct Counts {
    per_uid: HashMap<u32, u32>,
    total: u32,
}

struct Slot {
    counts: Arc<Mutex<Counts>>,
    uid: u32,
}

impl Slot {
    /// A slot for `uid`, if it may have one: at most [`MAX_PER_UID`] per
    /// uid, and the last [`ADMIN_SLOTS`] of [`MAX_CONNECTIONS`] only when
    /// `is_admin` says so (asked only then: it may read the group file).
    fn take(
        counts: &Arc<Mutex<Counts>>,
        uid: u32,
        is_admin: impl FnOnce() -> bool,
    ) -> Option<Slot> {
        let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = c.per_uid.get(&uid).copied().unwrap_or(0);
        if n >= MAX_PER_UID || c.total >= MAX_CONNECTIONS {
            return None;
        }
        if c.total >= MAX_CONNECTIONS - ADMIN_SLOTS && !is_admin() {
            return None;
        }
        c.per_uid.insert(uid, n + 1);
        c.total += 1;
        Some(Slot {
            counts: Arc::clone(counts),
            uid,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total -= 1;
        if let Some(n) = c.per_uid.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                c.per_uid.remove(&self.uid);
            }
        }
    }
}

/// Starts the accepting thread.
pub fn spawn(
    listener: Listener,
    admins: Arc<Admins>,
    db: Arc<dyn GroupDb>,
    dispatch: Dispatch,
) -> std::io::Result<()> {
    let counts = Arc::new(Mutex::new(Counts::default()));
    thread::Builder::new()
        .name("control-accept".into())
        .spawn(move || {
            loop {
                let stream = match listener.accept() {
                    Ok(s) => s,
                    Err(e) => {
                        // EMFILE and the like: back off instead of spinning.
                        warn!("control socket: accept: {e}");
                        thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                };
                let uid = match stream.peer_creds().map(|c| c.euid()) {
                    Ok(Some(uid)) => uid,
                    Ok(None) => {
                        debug!("control socket: the peer's uid is unknown");
                        continue;
                    }
                    Err(e) => {
                        debug!("control socket: SO_PEERCRED: {e}");
                        continue;
                    }
                };
                let Some(slot) = Slot::take(&counts, uid, || admins.is_admin(uid, db.as_ref()))
                else {
                    debug!("control socket: uid {uid} is over its connection limit");
                    continue;
                };
                let (admins, db, dispatch) =
                    (Arc::clone(&admins), Arc::clone(&db), Arc::clone(&dispatch));
                let spawned = thread::Builder::new()
                    .name("control-conn".into())
                    .stack_size(256 * 1024)
                    .spawn(move || {
                        serve(stream, uid, &admins, db.as_ref(), &dispatch);
                        drop(slot);
                    });
                if let Err(e) = spawned {
                    warn!("control socket: cannot start a connection thread: {e}");
                }
            }
        })
        .map(|_| ())
}

fn error(kind: CtlErrorKind, message: String) -> CtlResponse {
    CtlResponse::Error { kind, message }
}

/// Answers requests on one connection until the peer closes it, takes too
/// long over a request, or sends something that is not a request.
fn serve(mut stream: Stream, uid: u32, admins: &Admins, db: &dyn GroupDb, dispatch: &Dispatch) {
    if stream.set_send_timeout(Some(WRITE_TIMEOUT)).is_err() {
        return;
    }
    loop {
        let deadline = Instant::now() + request_timeout();
        let payload = match read_request(&mut stream, deadline) {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(e) => {
                debug!("control socket: uid {uid}: {e}; closing the connection");
                return;
            }
        };
        let (answer, keep) = match request_version(&payload) {
            Some(v) if v != PROTOCOL_VERSION => (
                error(
                    CtlErrorKind::VersionMismatch,
                    format!(
                        "protocol version mismatch: inetctl speaks version {v}, the controller speaks version {PROTOCOL_VERSION}"
                    ),
                ),
                false,
            ),
            _ => match decode_payload::<CtlRequest>(&payload) {
                Err(e) => {
                    debug!("control socket: uid {uid}: {e}; closing the connection");
                    (error(CtlErrorKind::Malformed, e.to_string()), false)
                }
                Ok(req) => (answer(req.command, uid, admins, db, dispatch), true),
            },
        };
        if write_message(&mut stream, &answer).is_err() || !keep {
            return;
        }
    }
}

/// A stream whose reads can be bounded in time.
trait TimedRead: Read {
    fn set_read_timeout(&mut self, t: Duration) -> std::io::Result<()>;
}

impl TimedRead for Stream {
    fn set_read_timeout(&mut self, t: Duration) -> std::io::Result<()> {
        self.set_recv_timeout(Some(t))
    }
}

/// Reads into `buf` from `stream` until it is full, each read bounded by
/// what is left until `deadline`; the count read (short only at end of
/// file).
fn read_by(
    stream: &mut impl TimedRead,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<usize, String> {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "no whole request within {} ms",
                request_timeout().as_millis()
            ));
        }
        stream.set_read_timeout(left).map_err(|e| e.to_string())?;
        match stream.read(&mut buf[got..]) {
            Ok(0) => return Ok(got),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(got)
}

/// Reads one request frame, whole by `deadline`; `Ok(None)` on a clean
/// close between frames. The declared length is checked against
/// [`MAX_CTL_REQUEST`] before the payload buffer exists.
fn read_request(stream: &mut impl TimedRead, deadline: Instant) -> Result<Option<Vec<u8>>, String> {
    let mut header = [0u8; HEADER_LEN];
    match read_by(stream, &mut header, deadline)? {
        0 => return Ok(None),
        HEADER_LEN => {}
        _ => return Err("truncated frame header".into()),
    }
    let len = check_header(header).map_err(|e| e.to_string())?;
    if len > MAX_CTL_REQUEST as usize {
        return Err(format!(
            "request of {len} bytes exceeds the maximum of {MAX_CTL_REQUEST} bytes"
        ));
    }
    let mut payload = vec![0u8; len];
    if read_by(stream, &mut payload, deadline)? < len {
        return Err("truncated request".into());
    }
    Ok(Some(payload))
}

fn answer(
    command: CtlCommand,
    uid: u32,
    admins: &Admins,
    db: &dyn GroupDb,
    dispatch: &Dispatch,
) -> CtlResponse {
    let admin = admins.is_admin(uid, db);
    let admins_only = match command {
        CtlCommand::Reload { .. } => Some("reload"),
        CtlCommand::Connections => Some("connections"),
        CtlCommand::List | CtlCommand::Status => None,
    };
    if let Some(what) = admins_only {
        if !admin {
            warn!("control socket: {what} refused to uid {uid}: not an admin");
            return error(
                CtlErrorKind::PermissionDenied,
                format!(
                    "permission denied: {what} is for root, the controller's user and members of group {}",
                    admins.group_name
                ),
            );
        }
    }
    let (tx, rx) = mpsc::channel();
    if !dispatch(Request {
        uid,
        admin,
        command,
        reply: tx,
    }) {
        return error(CtlErrorKind::Failed, "the controller is stopping".into());
    }
    rx.recv()
        .unwrap_or_else(|_| error(CtlErrorKind::Failed, "the controller is stopping".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_per_uid_and_released() {
        let counts = Arc::new(Mutex::new(Counts::default()));
        let held: Vec<Slot> = (0..MAX_PER_UID)
            .map(|_| Slot::take(&counts, 1000, || false).unwrap())
            .collect();
        assert!(
            Slot::take(&counts, 1000, || true).is_none(),
            "33rd connection of one uid"
        );
        let other = Slot::take(&counts, 1001, || false);
        assert!(other.is_some(), "another uid still gets in");
        drop(held);
        assert!(Slot::take(&counts, 1000, || false).is_some());
        drop(other);
        let c = counts.lock().unwrap();
        assert_eq!(c.total, 0);
        assert!(c.per_uid.is_empty());
    }

    #[test]
    fn sixteen_users_filling_every_slot_leave_the_admins_theirs() {
        let counts = Arc::new(Mutex::new(Counts::default()));
        let mut held = Vec::new();
        for uid in 1000..1016 {
            held.extend((0..MAX_PER_UID).filter_map(|_| Slot::take(&counts, uid, || false)));
        }
        assert_eq!(held.len() as u32, MAX_CONNECTIONS - ADMIN_SLOTS);
        let mut asked = false;
        assert!(Slot::take(&counts, 1017, || {
            asked = true;
            false
        })
        .is_none());
        assert!(
            asked,
            "the admin check is made once the open slots are gone"
        );
        let admins: Vec<Slot> = (0..ADMIN_SLOTS)
            .map(|i| Slot::take(&counts, i / MAX_PER_UID, || true).expect("an admin slot"))
            .collect();
        assert!(
            Slot::take(&counts, 2, || true).is_none(),
            "all 512 are taken"
        );
        drop(admins);
        assert!(Slot::take(&counts, 0, || true).is_some());
    }

    /// Gives one byte per read, each after `gap`, forever.
    struct Dribble {
        gap: Duration,
        timeout: Duration,
    }

    impl Read for Dribble {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.gap > self.timeout {
                thread::sleep(self.timeout);
                return Err(ErrorKind::WouldBlock.into());
            }
            thread::sleep(self.gap);
            buf[0] = 0;
            Ok(1)
        }
    }

    impl TimedRead for Dribble {
        fn set_read_timeout(&mut self, t: Duration) -> std::io::Result<()> {
            self.timeout = t;
            Ok(())
        }
    }

    #[test]
    fn the_time_limit_is_for_the_whole_request_not_each_read() {
        let mut d = Dribble {
            gap: Duration::from_millis(20),
            timeout: Duration::ZERO,
        };
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_millis(300);
        let mut buf = [0u8; 1024];
        let e = read_by(&mut d, &mut buf, deadline).unwrap_err();
        assert!(e.contains("no whole request"), "{e}");
        assert!(
            t0.elapsed() < Duration::from_millis(400),
            "{:?}",
            t0.elapsed()
        );
    }

    #[test]
    fn control_socket_is_0666_and_not_taken_over_while_served() {
        let base = std::env::temp_dir().join(format!("inetd-ctl-bind-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let path = base.join("control").join("control.sock");
        let uid = nix::unistd::getuid().as_raw();
        let l = bind_control_socket(&path, uid).unwrap();
        let mode = fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o666);
        assert_eq!(fs::metadata(&base).unwrap().mode() & 0o777, 0o700);
        let err = bind_control_socket(&path, uid).unwrap_err();
        assert!(err.contains("another controller"), "{err}");
        drop(l);
        // A stale socket file is replaced.
        let _l2 = bind_control_socket(&path, uid).unwrap();
        fs::remove_dir_all(&base).unwrap();
    }
}
