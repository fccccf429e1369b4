//! Unix-domain listeners, bound without CAP_DAC_OVERRIDE, CAP_FOWNER or
//! CAP_CHOWN and without following any link an unprivileged user could
//! plant.
//!
//! The path (already checked to be absolute and canonical) is walked from
//! `/` with `openat(O_PATH | O_DIRECTORY | O_NOFOLLOW)` one directory at a
//! time; each directory must be owned by root (or by the core's own uid
//! when the core is not root) and not writable by group or others, so no
//! one else can swap anything in between the check and the bind. The bind
//! happens relative to the opened parent (the core `fchdir`s there for the
//! one call, being single-threaded, and goes back to `/`), with umask 0111
//! so the socket is mode 0666. A socket already at the path is replaced
//! only when a connect to it is refused (stale), never one something
//! listens on. The parent stays open for the unlink at removal or exit,
//! which removes the name only if it is still our socket.

use std::ffi::{CStr, CString};
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::socket::{self, AddressFamily, UnixAddr};
use nix::unistd::UnlinkatFlags;

use inetd_protocol::SocketType;

use super::net::{connected, listen, new_socket};
use super::{cvt, nix_err, owned};

/// Why a unix listener could not be set up.
#[derive(Debug)]
pub enum UnixError {
    /// The path is unsafe: refused by policy, not retried.
    Unsafe(String),
    /// A system call failed (for example EADDRINUSE): retried later.
    Io(String, io::Error),
}

impl fmt::Display for UnixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnixError::Unsafe(s) => f.write_str(s),
            UnixError::Io(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

/// The name a unix listener was bound at, kept to unlink it later.
#[derive(Debug)]
pub struct SocketFile {
    dir: OwnedFd,
    name: CString,
    dev: u64,
    ino: u64,
}

const DIR_FLAGS: libc::c_int =
    libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    nix::sys::stat::fstat(fd).map_err(nix_err)
}

/// Stats `name` in `dir` without following a symbolic link.
fn fstatat(dir: RawFd, name: &CStr) -> io::Result<libc::stat> {
    nix::sys::stat::fstatat(Some(dir), name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(nix_err)
}

fn unlinkat(dir: RawFd, name: &CStr) -> io::Result<()> {
    nix::unistd::unlinkat(Some(dir), name, UnlinkatFlags::NoRemoveDir).map_err(nix_err)
}

fn is_sock(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFSOCK
}

/// Checks one opened directory against the ownership rule.
fn check_dir(fd: RawFd, shown: &str, core_uid: u32) -> Result<(), UnixError> {
    let st = fstat(fd).map_err(|e| UnixError::Io(format!("stat {shown}"), e))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(UnixError::Unsafe(format!("{shown} is not a directory")));
    }
    let owner_ok = st.st_uid == 0 || (core_uid != 0 && st.st_uid == core_uid);
    if !owner_ok {
        return Err(UnixError::Unsafe(format!(
            "unsafe socket directory {shown}: owned by uid {}, not by {}",
            st.st_uid,
            if core_uid == 0 {
                "root".to_string()
            } else {
                format!("root or uid {core_uid}")
            }
        )));
    }
    if st.st_mode & 0o022 != 0 {
        return Err(UnixError::Unsafe(format!(
            "unsafe socket directory {shown}: writable by group or others (mode {:04o})",
            st.st_mode & 0o7777
        )));
    }
    Ok(())
}

fn nul(s: &str) -> Result<CString, UnixError> {
    CString::new(s).map_err(|_| UnixError::Unsafe("NUL in path".into()))
}

/// Opens the directory whose components below `/` are `dirs`, one at a
/// time from `/`, checking each.
fn open_dir(dirs: &[&str], core_uid: u32) -> Result<OwnedFd, UnixError> {
    // SAFETY: NUL-terminated literal; the result is checked.
    let root = cvt(unsafe { libc::open(c"/".as_ptr(), DIR_FLAGS) })
        .map_err(|e| UnixError::Io("open /".into(), e))?;
    // SAFETY: open succeeded; the descriptor is ours alone.
    let mut dir = unsafe { owned(root) };
    check_dir(dir.as_raw_fd(), "/", core_uid)?;
    let mut shown = String::new();
    for d in dirs {
        shown.push('/');
        shown.push_str(d);
        let c = nul(d)?;
        // SAFETY: valid dir fd and NUL-terminated name; result checked.
        let fd =
            cvt(unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), DIR_FLAGS) }).map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::ENOTDIR)
                {
                    UnixError::Unsafe(format!(
                        "unsafe socket directory {shown}: not a directory (or a symbolic link)"
                    ))
                } else {
                    UnixError::Io(format!("open {shown}"), e)
                }
            })?;
        // SAFETY: openat succeeded; ours alone.
        dir = unsafe { owned(fd) };
        check_dir(dir.as_raw_fd(), &shown, core_uid)?;
    }
    Ok(dir)
}

/// Checks a directory for unix sockets (a `--unix-dir`, absolute and
/// canonical) at start, as [`bind_unix`] checks the directories of a path.
pub fn check_socket_dir(path: &str, core_uid: u32) -> Result<(), UnixError> {
    let dirs: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    open_dir(&dirs, core_uid).map(drop)
}

/// Opens the directories of `path` and checks each; returns the parent
/// and the last component.
fn open_parent(path: &str, core_uid: u32) -> Result<(OwnedFd, CString), UnixError> {
    let comps: Vec<&str> = path.split('/').skip(1).collect();
    let Some((last, dirs)) = comps.split_last() else {
        return Err(UnixError::Unsafe(format!("{path}: no file name")));
    };
    Ok((open_dir(dirs, core_uid)?, nul(last)?))
}

/// Binds (and for connected kinds, listens on) a unix socket at `path`.
pub fn bind_unix(
    path: &str,
    t: SocketType,
    core_uid: u32,
) -> Result<(OwnedFd, SocketFile), UnixError> {
    let (dir, name) = open_parent(path, core_uid)?;
    let io = |what: &str| {
        let what = format!("{what} {path}");
        move |e| UnixError::Io(what, e)
    };
    let exists = match fstatat(dir.as_raw_fd(), &name) {
        Ok(st) if is_sock(&st) => true,
        Ok(_) => {
            return Err(UnixError::Unsafe(format!(
                "{path} exists and is not a socket; not removing it"
            )))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => false,
        Err(e) => return Err(io("stat")(e)),
    };
    let sock = super::net::move_high(new_socket(AddressFamily::Unix, t).map_err(io("socket for"))?);
    let name_str = name
        .to_str()
        .map_err(|_| UnixError::Unsafe("path is not UTF-8".into()))?;
    let addr = UnixAddr::new(name_str).map_err(|e| io("address")(nix_err(e)))?;
    // Single-threaded: the working directory and umask are changed for
    // these calls and restored before anything else runs.
    nix::unistd::fchdir(dir.as_raw_fd())
        .map_err(|e| io("chdir to the directory of")(nix_err(e)))?;
    let r = (|| {
        if exists && is_stale(&addr, t, path)? {
            unlinkat(dir.as_raw_fd(), &name).map_err(io("unlink stale socket"))?;
        }
        let old = super::umask(0o111);
        let r = socket::bind(sock.as_raw_fd(), &addr);
        super::umask(old);
        r.map_err(|e| io("bind")(nix_err(e)))
    })();
    let back = super::chdir_root();
    r?;
    back.map_err(io("chdir / after binding"))?;
    let st = fstatat(dir.as_raw_fd(), &name).map_err(io("stat new socket"))?;
    let file = SocketFile {
        dir,
        name,
        dev: st.st_dev,
        ino: st.st_ino,
    };
    if connected(t) {
        if let Err(e) = listen(&sock) {
            file.unlink();
            return Err(io("listen on")(e));
        }
    }
    Ok((sock, file))
}

/// Whether the socket at `addr` (in the working directory) is stale: a
/// connect to it is refused, so nothing is bound there (`false`: it went
/// away meanwhile). Anything else (a connection, a full backlog, another
/// socket type, no permission) means something may listen there, and the
/// path is refused.
fn is_stale(addr: &UnixAddr, t: SocketType, path: &str) -> Result<bool, UnixError> {
    let probe = new_socket(AddressFamily::Unix, t)
        .map_err(|e| UnixError::Io(format!("socket for {path}"), e))?;
    match socket::connect(probe.as_raw_fd(), addr) {
        Err(Errno::ECONNREFUSED) => Ok(true),
        Err(Errno::ENOENT) => Ok(false),
        Ok(()) => Err(UnixError::Unsafe(format!(
            "something listens on {path}; the core replaces only a stale socket"
        ))),
        Err(e) => Err(UnixError::Unsafe(format!(
            "{path}: cannot tell whether something listens there ({}); not replacing it",
            e.desc()
        ))),
    }
}

impl SocketFile {
    /// Removes the socket's name, if it is still the socket we made.
    pub fn unlink(&self) {
        if let Ok(st) = fstatat(self.dir.as_raw_fd(), &self.name) {
            if is_sock(&st) && st.st_dev == self.dev && st.st_ino == self.ino {
                let _ = unlinkat(self.dir.as_raw_fd(), &self.name);
            }
        }
    }
}
