//! The operating-system layer of the core: every `unsafe` block of the crate
//! lives under this module, and so do the system calls the rest of the core
//! makes. Everything above it is `#![forbid(unsafe_code)]` and works on owned
//! descriptors and plain values.
//!
//! Where nix offers a safe call it is used; raw `libc` is used where nix has
//! no wrapper or where the call happens between `fork` and `exec` (see
//! [`child`]), where only async-signal-safe calls are wanted.
#![allow(unsafe_code)]

pub mod caps;
pub mod child;
pub mod epoll;
pub mod inherit;
pub mod net;
mod raw;
pub mod resident;
mod slot;
pub mod spawn;
mod status;
pub mod title;
pub mod unixsock;

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;

/// Converts a `-1` return into the thread's errno.
fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn nix_err(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Makes sure descriptors 0, 1 and 2 are open, on `/dev/null` where they
/// were not. Run first thing: a socket opened while one of them is closed
/// would take its number, and a later `dup2` of a connection onto 0, 1 or 2
/// in a child would then be a no-op that leaves the socket unset.
pub fn ensure_std_fds() -> io::Result<()> {
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries the descriptor table; any int is a
        // valid argument.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1 {
            continue;
        }
        // Not CLOEXEC: this is meant to stay as fd 0, 1 or 2.
        // SAFETY: the path is a NUL-terminated literal.
        let n = cvt(unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) })?;
        if n != fd {
            // The lowest free number was not `fd` (cannot happen when the
            // lower ones are open, which the loop order ensures); move it.
            // SAFETY: both are descriptors of this process; dup2 then close
            // of our own temporary.
            unsafe {
                let r = libc::dup2(n, fd);
                libc::close(n);
                cvt(r)?;
            }
        }
    }
    Ok(())
}

/// Raises the soft descriptor limit to the hard one: each listener is a
/// descriptor and the core serves at least 10,000 of them, while service
/// managers start daemons with a soft limit of 1024. The core uses poll,
/// not select, so high descriptor numbers are fine. Children get the
/// limit the core was started with back (see [`inherit`]): servers that
/// use select or close descriptors up to the limit expect the usual value.
/// Returns (old soft, new soft).
pub fn raise_nofile() -> io::Result<(u64, u64)> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(nix_err)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(nix_err)?;
    }
    Ok((soft, hard))
}

/// Closes every descriptor above 2 that the core inherited: whatever its
/// parent leaked would otherwise stay open in the core for its whole life.
/// Run at the very start, before the core opens anything itself.
pub fn close_inherited_fds() {
    // SAFETY: close_range takes plain integers; at this point the process
    // owns no descriptor above 2 through any Rust object.
    let r = unsafe { libc::syscall(libc::SYS_close_range, 3u32, libc::c_uint::MAX, 0u32) };
    if r == 0 {
        return;
    }
    // Kernels before 5.9: close what /proc lists. Collect first, close after,
    // so the directory's own descriptor is not closed under the iterator.
    let fds: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(d) => d
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .filter(|fd| *fd > 2)
            .collect(),
        Err(_) => return,
    };
    for fd in fds {
        // SAFETY: as above; a number that is no longer open gives EBADF.
        unsafe { libc::close(fd) };
    }
}

/// Opens `/dev/null` read-write, close-on-exec, for children's unused stdio.
pub fn open_dev_null() -> io::Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    Ok(OwnedFd::from(f))
}

pub fn geteuid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

pub fn getegid() -> u32 {
    nix::unistd::getegid().as_raw()
}

pub fn getpid() -> u32 {
    nix::unistd::getpid().as_raw().unsigned_abs()
}

/// The process's supplementary groups.
pub fn getgroups() -> io::Result<Vec<u32>> {
    nix::unistd::getgroups()
        .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
        .map_err(nix_err)
}

/// Sets the file mode creation mask, returning the previous one.
pub fn umask(mask: u32) -> u32 {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask)).bits()
}

/// Sets the effective gid (the core keeps CAP_SETGID for this).
pub fn setegid(gid: u32) -> io::Result<()> {
    nix::unistd::setegid(nix::unistd::Gid::from_raw(gid)).map_err(nix_err)
}

pub fn chdir_root() -> io::Result<()> {
    nix::unistd::chdir("/").map_err(nix_err)
}

/// Gives the directory `path` to `uid`:`gid` with `mode` (at start, before
/// the capability cut, for `RUN/control`), through a descriptor opened with
/// `O_NOFOLLOW | O_DIRECTORY`: a symbolic link there is refused (ELOOP or
/// ENOTDIR), never followed.
pub fn own_dir(path: &std::path::Path, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(path)?;
    std::os::unix::fs::fchown(&dir, Some(uid), Some(gid))?;
    dir.set_permissions(std::fs::Permissions::from_mode(mode))
}

/// A user as NSS gives it: resolved once at start, from the core's own
/// command line (trust rule 2 allows exactly this).
pub use inetd_protocol::AllowedUser as UserInfo;

/// Looks a user up by name, or by number when `spec` is all digits, in a
/// child forked for it (see [`in_child`]).
pub fn lookup_user(spec: &str) -> io::Result<Option<UserInfo>> {
    let out = in_child(|| {
        let r = lookup_user_here(spec).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO));
        inetd_protocol::codec::encode_payload(&r).unwrap_or_default()
    })?;
    let r: Result<Option<UserInfo>, i32> = inetd_protocol::codec::decode_payload(&out)
        .map_err(|e| io::Error::other(format!("the lookup child answered badly: {e}")))?;
    r.map_err(io::Error::from_raw_os_error)
}

fn lookup_user_here(spec: &str) -> io::Result<Option<UserInfo>> {
    use nix::unistd::{Uid, User};
    let user = if !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit()) {
        let uid: u32 = spec
            .parse()
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        User::from_uid(Uid::from_raw(uid)).map_err(nix_err)?
    } else {
        User::from_name(spec).map_err(nix_err)?
    };
    let Some(user) = user else { return Ok(None) };
    let cname = CString::new(user.name.clone())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let groups = nix::unistd::getgrouplist(&cname, user.gid)
        .map_err(nix_err)?
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    Ok(Some(UserInfo {
        name: user.name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups,
    }))
}

/// Looks a group up by name, or by number when `spec` is all digits: its
/// name and gid. A number NSS does not know is still a gid (named by it).
/// In a child forked for it (see [`in_child`]).
pub fn lookup_group(spec: &str) -> io::Result<Option<(String, u32)>> {
    let out = in_child(|| {
        let r = lookup_group_here(spec).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO));
        inetd_protocol::codec::encode_payload(&r).unwrap_or_default()
    })?;
    let r: Result<Option<(String, u32)>, i32> = inetd_protocol::codec::decode_payload(&out)
        .map_err(|e| io::Error::other(format!("the lookup child answered badly: {e}")))?;
    r.map_err(io::Error::from_raw_os_error)
}

/// Runs `f` in a child forked for it and returns the bytes it wrote. The
/// NSS modules a lookup loads (`libnss_systemd`, and `libm` and `libcap`
/// with it: about 650 KiB resident) stay mapped for the life of the
/// process that loads them; loaded in a child, they never enter the core.
/// Only at start-up, a few times: the cost of a fork of a small process.
fn in_child(f: impl FnOnce() -> Vec<u8>) -> io::Result<Vec<u8>> {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::ForkResult;
    use std::io::{Read, Write};
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(nix_err)?;
    // The core resolves names only at start-up, and never starts a thread.
    // SAFETY: single-threaded, so the child may run `f`; it writes its
    // answer and leaves with `_exit`, running none of the parent's exit code.
    match unsafe { nix::unistd::fork() }.map_err(nix_err)? {
        ForkResult::Child => {
            drop(r);
            let out = f();
            let ok = std::fs::File::from(w).write_all(&out).is_ok();
            // SAFETY: ends this child at once; nothing of the parent's
            // (buffers, destructors, atexit handlers) runs twice.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        ForkResult::Parent { child } => {
            drop(w);
            let mut out = Vec::new();
            let read = std::fs::File::from(r).read_to_end(&mut out);
            let status = loop {
                match waitpid(child, None) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => break other.map_err(nix_err)?,
                }
            };
            read?;
            match status {
                WaitStatus::Exited(_, 0) => Ok(out),
                other => Err(io::Error::other(format!(
                    "the lookup child ended: {other:?}"
                ))),
            }
        }
    }
}

fn lookup_group_here(spec: &str) -> io::Result<Option<(String, u32)>> {
    use nix::unistd::{Gid, Group};
    if !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit()) {
        let gid: u32 = spec
            .parse()
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let name = Group::from_gid(Gid::from_raw(gid)).map_err(nix_err)?;
        return Ok(Some((
            name.map_or_else(|| spec.to_owned(), |g| g.name),
            gid,
        )));
    }
    Ok(Group::from_name(spec)
        .map_err(nix_err)?
        .map(|g| (g.name, g.gid.as_raw())))
}

/// Gives the free pages of the heap back to the system (glibc's
/// `malloc_trim`): called after an `Apply`, whose request and plan are
/// freed in one go, never on the per-connection path.
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks and shrinks the allocator's own free
    // lists; it touches no memory the program holds.
    unsafe { libc::malloc_trim(0) };
}

/// One entry of a poll set (a one-off look at a descriptor; the event
/// loop itself uses epoll). `revents` is filled by [`poll`].
pub type PollEntry = libc::pollfd;

/// Poll events; also the interest of a core-socket connection (`link`):
/// readable, or writable while an answer is pending.
pub const POLLIN: i16 = libc::POLLIN;
pub const POLLOUT: i16 = libc::POLLOUT;

pub fn poll_entry(fd: RawFd, events: i16) -> PollEntry {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Waits for events on `fds`, at most `timeout_ms` (-1: no limit). EINTR is
/// reported as zero events.
pub fn poll(fds: &mut [PollEntry], timeout_ms: i32) -> io::Result<usize> {
    let n = libc::nfds_t::try_from(fds.len())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `fds` is a valid, exclusively borrowed array of `n` pollfd
    // structures for the duration of the call.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), n, timeout_ms) };
    if r == -1 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(r as usize)
}

/// The signals the core handles through its signalfd.
pub const HANDLED_SIGNALS: [Signal; 4] = [
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
];

/// Blocks [`HANDLED_SIGNALS`] and returns a nonblocking, close-on-exec
/// signalfd for them. The core has no signal handlers at all: signals are
/// read in the poll loop like any other event, so no code runs
/// asynchronously (the regreSSHion class of bugs cannot happen here).
pub fn signal_fd() -> io::Result<SignalFd> {
    let mut set = SigSet::empty();
    for s in HANDLED_SIGNALS {
        set.add(s);
    }
    set.thread_block().map_err(nix_err)?;
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).map_err(nix_err)
}

/// Appends every pending signal number from the signalfd to `out`.
pub fn read_signals(sfd: &SignalFd, out: &mut Vec<i32>) -> io::Result<()> {
    loop {
        match sfd.read_signal() {
            Ok(Some(info)) => out.push(i32::try_from(info.ssi_signo).unwrap_or(0)),
            Ok(None) => return Ok(()),
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(nix_err(e)),
        }
    }
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Exited(c) => write!(f, "exit {c}"),
            ExitStatus::Signaled(s) => write!(f, "signal {s}"),
        }
    }
}

/// The pid of a child that has ended, left unreaped (`WNOWAIT`): until
/// [`reap`] takes it, it stays a zombie, so neither its pid nor its
/// process group's id can be given to another process, and its group can
/// still be signalled safely.
pub fn ended_child() -> Option<i32> {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value of that plain C
        // struct (and what waitid leaves when no child has ended).
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        // SAFETY: `info` is a valid, exclusively borrowed siginfo_t.
        if unsafe { libc::waitid(libc::P_ALL, 0, &mut info, flags) } == -1 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // ECHILD: no children at all.
            return None;
        }
        // SAFETY: waitid filled `info` for a SIGCHLD, or left it zero.
        let pid = unsafe { info.si_pid() };
        return (pid != 0).then_some(pid);
    }
}

/// Reaps child `pid`, which [`ended_child`] reported. Decoded by hand, so
/// a child killed by a signal nix has no name for (a real-time one) is
/// reaped like any other.
pub fn reap(pid: i32) -> Option<ExitStatus> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid int for waitpid to fill.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == -1 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if r != pid {
            return None;
        }
        return Some(if libc::WIFSIGNALED(status) {
            ExitStatus::Signaled(libc::WTERMSIG(status))
        } else {
            ExitStatus::Exited(libc::WEXITSTATUS(status))
        });
    }
}

/// Sends `sig` to a child that has not been reaped yet (so the pid cannot
/// have been reused), where no pidfd could be had for it.
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    let sig = Signal::try_from(sig).map_err(nix_err)?;
    nix::sys::signal::kill(Pid::from_raw(pid), sig).map_err(nix_err)
}

/// Sends `sig` to process group `pgid`: only ever the group of a child
/// that has not been reaped yet, whose id cannot have been reused.
pub fn killpg(pgid: i32, sig: i32) -> io::Result<()> {
    let sig = Signal::try_from(sig).map_err(nix_err)?;
    nix::sys::signal::killpg(Pid::from_raw(pgid), sig).map_err(nix_err)
}

/// A pidfd (close-on-exec) for child `pid`, taken while the child is
/// unreaped, so it names that child and no other, for good.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: a system call with integer arguments only.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(r).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: a descriptor the kernel has just made for this process.
    Ok(unsafe { owned(fd) })
}

/// Sends `sig` to the process `pidfd` names: never to another one, even
/// after its pid has been reused.
pub fn pidfd_signal(pidfd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    let null: *const libc::siginfo_t = std::ptr::null();
    // SAFETY: a valid descriptor, a signal number, a null siginfo (filled
    // as kill(2) would) and no flags.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), sig, null, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Nonblocking read into `buf`; `Ok(None)` when it would block.
pub fn read_nb(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        match nix::unistd::read(fd.as_raw_fd(), buf) {
            Ok(n) => return Ok(Some(n)),
            Err(nix::Error::EAGAIN) => return Ok(None),
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(nix_err(e)),
        }
    }
}

/// Sets or clears O_NONBLOCK.
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(nix_err)?;
    let mut flags = OFlag::from_bits_truncate(flags);
    flags.set(OFlag::O_NONBLOCK, on);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags)).map_err(nix_err)?;
    Ok(())
}

/// Wraps a descriptor this process just received from the kernel.
///
/// # Safety
///
/// `fd` must be an open descriptor that nothing else owns.
unsafe fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: the caller guarantees exclusive ownership of an open fd.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[cfg(test)]
pub mod counting {
    //! The unit tests' global allocator: the system's, counting this
    //! thread's allocations, so a test can show that a path allocates
    //! nothing.
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static COUNT: Cell<u64> = const { Cell::new(0) };
    }

    pub struct Counting;

    // SAFETY: every call goes to the system allocator unchanged; the only
    // addition is a const-initialised thread-local counter, which neither
    // allocates nor has a destructor.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
            // SAFETY: the caller keeps GlobalAlloc's contract, System's too.
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: as for alloc; `ptr` came from System.alloc above.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;

    /// Allocations made by this thread so far.
    pub fn allocations() -> u64 {
        COUNT.try_with(Cell::get).unwrap_or(0)
    }
}
