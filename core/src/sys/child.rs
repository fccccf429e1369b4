//! The child path: fork, and between fork and exec exactly the steps of
//! trust rule 6 (children get exactly what they should), in this order:
//!
//! 1. `setsid`: the child leads its own session, so a signal to the core's
//!    process group never reaches servers and a server's terminal games
//!    never reach the core.
//! 2. Every signal back to its default disposition, SIGPIPE included (the
//!    Rust runtime ignores SIGPIPE, and an ignored signal survives exec),
//!    then an empty signal mask (the core blocks the signals it reads
//!    through its signalfd, and a mask survives exec too).
//! 3. A fresh anonymous session keyring, so that no child possesses the
//!    keys of the core's session or of another service. Joined while still
//!    root: the new keyring is charged to the uid that makes it, and the
//!    per-uid quota (200 keys by default) would refuse it past about 200
//!    children of one service user, while root's is far larger. Skipped
//!    where the kernel refuses keyrings to the core (found out once at
//!    start) and on a core that is not root (see `start.rs`).
//! 4. `setgroups` → `setresgid` → `setresuid`, each checked. Groups first
//!    and gid before uid because each of those calls needs privilege that
//!    the uid change takes away. Then the ids are read back and compared,
//!    and for a non-root uid we check that uid 0 cannot be regained and,
//!    with `capget`, that no capability survived the change (the core locks
//!    the securebits that would keep them at start; this is the check that
//!    it worked, and it matters most to builtins, which never exec).
//! 5. `no_new_privs` when asked.
//! 6. umask 022 and working directory `/`.
//! 7. The planned descriptors onto 0, 1, 2, ... (close-on-exec cleared),
//!    every other descriptor closed; then the resource limits the core was
//!    started with, where it has changed its own.
//! 8. `execve` with the prepared argv and environment, or the builtin.
//!
//! Any failure writes the step and errno to a close-on-exec pipe and calls
//! `_exit(127)`: the child never returns into the core's code, never unwinds
//! (the workspace builds with `panic = "abort"`) and never logs; the parent
//! reads the pipe from its poll loop and logs. A successful exec closes the
//! pipe, so the parent sees end-of-file.
//!
//! Everything the exec path needs is prepared before `fork`: the ids with
//! sorted groups and argv's pointer array when the listener was applied
//! (the [`Identity`] and [`ExecImage`] that validation alone constructs,
//! the only inputs accepted here), the environment's pointer array and a
//! scratch buffer for the group check per spawn, and what every child is
//! given back of the core's start (the limits and the keyring decision,
//! settled once at start in [`super::inherit`]). So the exec path does not
//! allocate between fork and exec, and makes only async-signal-safe calls.
//!
//! The fork contract. After `fork` the child has one thread, and any lock
//! another thread of the parent held (the allocator's, stdio's) stays
//! locked in it forever. The exec path takes no lock. A builtin runs
//! ordinary Rust code after fork, which allocates: [`spawn_builtin`] is
//! therefore only callable with a [`SingleThreaded`] token, which the core
//! takes once at start (sudo-rs marks its `fork` "must not be called in
//! multithreaded programs"; here the type system says it).

use std::ffi::CString;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use super::inherit::ForChild;
use super::owned;
pub use super::status::{read_status, ChildStatus, Spawned, StatusPipe, Step};
use crate::validate::{ExecImage, Identity};

/// Proof that this process runs a single thread: the condition for running
/// Rust code that allocates between `fork` and `_exit` (see the module's
/// fork contract). Neither `Send` nor `Sync`, so it stays on the thread that
/// took it; taken at most once.
pub struct SingleThreaded {
    _this_thread: PhantomData<*const ()>,
}

static TAKEN: AtomicBool = AtomicBool::new(false);

impl SingleThreaded {
    /// Takes the token, once per process, after checking that the process
    /// has exactly one thread (where `/proc` can say). The core starts no
    /// thread afterwards (`core/clippy.toml` disallows spawning one), so the
    /// condition holds for the token's whole life.
    pub fn take() -> Result<SingleThreaded, String> {
        if TAKEN.swap(true, Ordering::SeqCst) {
            return Err("the single-threaded token was already taken".into());
        }
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            let n = tasks.count();
            if n != 1 {
                return Err(format!("the process runs {n} threads, not one"));
            }
        }
        Ok(SingleThreaded {
            _this_thread: PhantomData,
        })
    }
}

/// Starts a child that execs `image` as `id`, with `fds[i]` on descriptor
/// `i` and the per-connection variables `env_conn` after the fixed
/// environment. `pipe` is the status pipe made in advance (`None` makes one
/// now).
pub fn spawn_exec(
    id: &Identity,
    image: &ExecImage,
    env_conn: &[CString],
    fds: &[RawFd],
    pipe: Option<StatusPipe>,
) -> io::Result<Spawned> {
    let env: Vec<*const libc::c_char> = image
        .env()
        .iter()
        .chain(env_conn)
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let run: Run<'_, fn(OwnedFd) -> i32> = Run::Exec {
        path: image.path().as_ptr(),
        argv: image.argv_ptrs(),
        env: &env,
    };
    fork_child(id, fds, pipe, run)
}

/// Starts a child that runs `serve` as `id` with `fd` as its descriptor 0
/// (and no other), then `_exit`s with what it returns. The closure runs
/// after the ids are dropped and every other descriptor is closed, and
/// never returns into the core. It is ordinary Rust code after fork, hence
/// the [`SingleThreaded`] token.
pub fn spawn_builtin<F: FnOnce(OwnedFd) -> i32>(
    id: &Identity,
    fd: RawFd,
    serve: F,
    pipe: Option<StatusPipe>,
    _single: &SingleThreaded,
) -> io::Result<Spawned> {
    fork_child(id, &[fd], pipe, Run::Builtin(serve))
}

/// What the child does once it is set up.
enum Run<'a, F> {
    /// `execve(path, argv, env)`, all made before fork.
    Exec {
        path: *const libc::c_char,
        argv: &'a [*const libc::c_char],
        env: &'a [*const libc::c_char],
    },
    Builtin(F),
}

/// Forks a child that follows the path described at the top of this file.
fn fork_child<F: FnOnce(OwnedFd) -> i32>(
    id: &Identity,
    fds: &[RawFd],
    pipe: Option<StatusPipe>,
    run: Run<'_, F>,
) -> io::Result<Spawned> {
    // Room for what getgroups may return (one more than asked, to see an
    // extra group), allocated before fork.
    let mut got_groups: Vec<libc::gid_t> = vec![0; id.groups().len() + 1];
    let StatusPipe { rd, wr } = match pipe {
        Some(p) => p,
        None => StatusPipe::new()?,
    };
    let base = super::inherit::for_child();

    // The child runs only `child_main`, which never returns and leaves with
    // `_exit` or exec; on the exec path it makes only async-signal-safe
    // calls, and the builtin path is reached only with a `SingleThreaded`
    // token (see the module's fork contract).
    // SAFETY: as just said, the fork contract holds for both paths.
    let pid = unsafe { libc::fork() };
    if pid == -1 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let ctx = ChildCtx {
            status_fd: wr.as_raw_fd(),
            id,
            got_groups: &mut got_groups,
            base,
        };
        child_main(ctx, fds, run);
    }
    drop(wr);
    Ok(Spawned { pid, status: rd })
}

struct ChildCtx<'a> {
    status_fd: RawFd,
    id: &'a Identity,
    got_groups: &'a mut [libc::gid_t],
    base: &'static ForChild,
}

/// Reports `step` and `errno` to the parent and leaves.
fn fail(fd: RawFd, step: Step, errno: i32) -> ! {
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&(step as u32).to_ne_bytes());
    msg[4..].copy_from_slice(&errno.to_ne_bytes());
    // A failed write cannot be reported anywhere, and the exit status says
    // 127 anyway. `_exit` skips atexit handlers and stdio flushing that
    // belong to the parent.
    // SAFETY: `msg` is a valid 8-byte buffer and `fd` a descriptor we own.
    unsafe {
        libc::write(fd, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
    }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The child side of [`fork_child`]. Never returns.
fn child_main<F: FnOnce(OwnedFd) -> i32>(mut c: ChildCtx<'_>, fds: &[RawFd], run: Run<'_, F>) -> ! {
    // 1. New session.
    // SAFETY: plain system call.
    if unsafe { libc::setsid() } == -1 {
        fail(c.status_fd, Step::Setsid, errno());
    }

    // 2. Default dispositions for every signal, then an empty mask.
    reset_signals();
    // SAFETY: a zeroed sigset emptied by sigemptyset is a valid argument.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) == -1 {
            fail(c.status_fd, Step::Signals, errno());
        }
    }

    // 3. A fresh session keyring, before the id change (see above).
    if c.base.join_keyring() {
        if let Err(e) = super::inherit::join_session_keyring() {
            fail(c.status_fd, Step::Keyring, e.raw_os_error().unwrap_or(0));
        }
    }

    // 4. Ids: groups, then gid, then uid; each checked, then read back.
    if c.id.change_ids() {
        change_ids(c.status_fd, c.id);
    }
    verify_ids(&mut c);
    if c.id.change_ids() && c.id.uid() != 0 {
        verify_no_capabilities(c.status_fd);
    }

    // 5. no_new_privs: setuid binaries cannot lift the child any more.
    if c.id.no_new_privs() {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } == -1 {
            fail(c.status_fd, Step::NoNewPrivs, errno());
        }
    }

    // 6. umask and working directory, whatever the core was started with.
    // SAFETY: plain system calls; the path is a NUL-terminated literal.
    unsafe {
        libc::umask(0o022);
        if libc::chdir(c"/".as_ptr()) == -1 {
            fail(c.status_fd, Step::Chdir, errno());
        }
    }

    // 7. Descriptors, then the resource limits the core was started with:
    //    after the descriptors are closed, so that the fallback close loop
    //    sees the core's raised descriptor limit.
    let keep_status = matches!(run, Run::Exec { .. });
    setup_fds(&mut c, fds, keep_status);
    restore_limits(&c);

    // 8. Run.
    match run {
        Run::Exec { path, argv, env } => {
            // path, argv and env were built before fork and are alive in this
            // (copied) address space.
            // SAFETY: NUL-terminated pointer arrays of NUL-terminated strings.
            unsafe { libc::execve(path, argv.as_ptr(), env.as_ptr()) };
            fail(c.status_fd, Step::Exec, errno());
        }
        Run::Builtin(serve) => {
            // SAFETY: descriptor 0 was just set up by `setup_fds` and
            // nothing else in this process owns it.
            let fd = unsafe { owned(0) };
            let code = serve(fd);
            // SAFETY: leaving the child without running the parent's
            // destructors or atexit handlers.
            unsafe { libc::_exit(code) }
        }
    }
}

/// `setgroups` → `setresgid` → `setresuid`: groups first and gid before uid
/// because each of those calls needs privilege that the uid change takes
/// away.
fn change_ids(status_fd: RawFd, id: &Identity) {
    let groups = id.groups();
    // SAFETY: `groups` is a valid slice of gid_t-sized values.
    if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } == -1 {
        fail(status_fd, Step::Setgroups, errno());
    }
    // SAFETY: plain system calls with integer arguments.
    if unsafe { libc::setresgid(id.gid(), id.gid(), id.gid()) } == -1 {
        fail(status_fd, Step::Setgid, errno());
    }
    // SAFETY: as above.
    if unsafe { libc::setresuid(id.uid(), id.uid(), id.uid()) } == -1 {
        fail(status_fd, Step::Setuid, errno());
    }
}

/// Gives the child the resource limits the core was started with, where
/// the core changed its own (it raises its soft descriptor limit). Lowering
/// a soft limit back needs no privilege.
fn restore_limits(c: &ChildCtx<'_>) {
    for (res, rl) in c.base.limits() {
        // SAFETY: a valid pointer to an initialised rlimit.
        if unsafe { libc::setrlimit(*res, rl) } == -1 {
            fail(c.status_fd, Step::Limits, errno());
        }
    }
}

/// Checks, after the change to a non-root uid, that the permitted,
/// effective and inheritable sets are empty. The ambient set needs no call
/// of its own: the kernel keeps it a subset of permitted and inheritable
/// (capabilities(7)), so it is empty when they are.
fn verify_no_capabilities(status_fd: RawFd) {
    // `linux/capability.h`, version 3: a header (version, pid 0 for this
    // process), then two data structures (capabilities 0-31 and 32-63) of
    // three words each: effective, permitted, inheritable.
    let mut header: [u32; 2] = [0x2008_0522, 0];
    let mut sets = [0u32; 6];
    // SAFETY: a valid header and room for the two data structures that
    // version 3 fills.
    if unsafe { libc::syscall(libc::SYS_capget, header.as_mut_ptr(), sets.as_mut_ptr()) } == -1 {
        fail(status_fd, Step::Capabilities, errno());
    }
    if sets.iter().any(|&w| w != 0) {
        fail(status_fd, Step::Capabilities, 0);
    }
}

/// The kernel's `struct sigaction` (asm-generic layout), for the raw
/// system call: the C library's wrapper refuses to touch the signals it
/// reserves for itself (32 and 33 in glibc), yet an ignored 32 or 33
/// inherited from whoever started the core would survive exec. SIG_DFL is
/// 0, so the value used is all zeros, which means "default, no flags,
/// empty mask" whatever the architecture's field order.
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// Sets every signal but SIGKILL and SIGSTOP to its default disposition.
fn reset_signals() {
    let dfl = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // The size argument is the kernel's sigset size (8 bytes on Linux).
        // SAFETY: rt_sigaction with a valid, fully initialised kernel
        // sigaction for SIG_DFL and a null old-action pointer.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &dfl as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            );
        }
    }
}

/// Reads the ids back and compares them with what was asked for.
fn verify_ids(c: &mut ChildCtx<'_>) {
    let ids = c.id;
    let (mut r, mut e, mut sv) = (0, 0, 0);
    // SAFETY: three valid out-pointers.
    if unsafe { libc::getresuid(&mut r, &mut e, &mut sv) } == -1
        || r != ids.uid()
        || e != ids.uid()
        || sv != ids.uid()
    {
        fail(c.status_fd, Step::VerifyIds, libc::EPERM);
    }
    // SAFETY: as above.
    if unsafe { libc::getresgid(&mut r, &mut e, &mut sv) } == -1
        || r != ids.gid()
        || e != ids.gid()
        || sv != ids.gid()
    {
        fail(c.status_fd, Step::VerifyIds, libc::EPERM);
    }
    if ids.change_ids() {
        let want = ids.groups();
        let cap = i32::try_from(c.got_groups.len()).unwrap_or(i32::MAX);
        // SAFETY: `got_groups` has room for `cap` entries.
        let n = unsafe { libc::getgroups(cap, c.got_groups.as_mut_ptr()) };
        if n < 0 {
            fail(c.status_fd, Step::VerifyIds, errno());
        }
        let got = &mut c.got_groups[..n as usize];
        got.sort_unstable();
        let mut ok = true;
        let mut k = 0;
        for (i, g) in got.iter().enumerate() {
            if i > 0 && got[i - 1] == *g {
                continue;
            }
            if want.get(k) != Some(g) {
                ok = false;
                break;
            }
            k += 1;
        }
        if !ok || k != want.len() {
            fail(c.status_fd, Step::VerifyIds, libc::EPERM);
        }
    }
    if ids.uid() != 0 {
        // SAFETY: plain system calls. Both must fail for a non-root child;
        // success would mean the drop is not permanent.
        if unsafe { libc::setuid(0) } != -1 || unsafe { libc::seteuid(0) } != -1 {
            fail(c.status_fd, Step::RegainRoot, 0);
        }
    }
}

/// Puts `fds[i]` on descriptor `i`, keeps the status pipe (close-on-exec,
/// right above them) when `keep_status`, and closes everything else.
fn setup_fds(c: &mut ChildCtx<'_>, fds: &[RawFd], keep_status: bool) {
    let n = fds.len() as libc::c_int;
    let mut high = [0 as libc::c_int; 8];
    if fds.len() > high.len() {
        fail(c.status_fd, Step::Descriptors, libc::EINVAL);
    }
    // Close everything but the sources and the status pipe first: the core
    // may be at its descriptor limit, and the copies below need room.
    let mut keep = [0 as libc::c_int; 9];
    keep[..fds.len()].copy_from_slice(fds);
    keep[fds.len()] = c.status_fd;
    let keep = &mut keep[..=fds.len()];
    keep.sort_unstable();
    // SAFETY: in the child between fork and exec, see `close_between`.
    unsafe {
        let mut from: libc::c_int = 3;
        for &k in keep.iter() {
            if k >= from {
                close_between(from, k - 1);
                from = k + 1;
            }
        }
        close_between(from, libc::c_int::MAX);
    }
    // Then copy every source (and the status pipe) above the target range,
    // so that placing one target can never overwrite a source not yet placed.
    // SAFETY: fcntl/dup3 on descriptors of this process; failures reported.
    unsafe {
        for (i, &fd) in fds.iter().enumerate() {
            let h = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, n + 1);
            if h == -1 {
                fail(c.status_fd, Step::Descriptors, errno());
            }
            high[i] = h;
        }
        // Only now, with every source safe above `n`, may `n` be reused.
        let st = libc::fcntl(c.status_fd, libc::F_DUPFD_CLOEXEC, n + 1);
        if st == -1 {
            fail(c.status_fd, Step::Descriptors, errno());
        }
        if libc::dup3(st, n, libc::O_CLOEXEC) == -1 {
            fail(st, Step::Descriptors, errno());
        }
        c.status_fd = n;
        for (i, &h) in high[..fds.len()].iter().enumerate() {
            // dup2 onto a different number clears close-on-exec on the copy.
            if libc::dup2(h, i as libc::c_int) == -1 {
                fail(c.status_fd, Step::Descriptors, errno());
            }
        }
        let first = if keep_status { n + 1 } else { n };
        close_from(first);
    }
}

/// Closes the descriptors `first..=last` (nothing if `first > last`).
///
/// # Safety
///
/// As for [`close_from`].
unsafe fn close_between(first: libc::c_int, last: libc::c_int) {
    if first > last || first < 0 {
        return;
    }
    // SAFETY: close_range takes plain integers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            last as libc::c_uint,
            0,
        )
    };
    if r == 0 {
        return;
    }
    // Kernels before 5.9: close one by one, up to the descriptor limit.
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer.
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0 {
        rl.rlim_cur.min(1 << 20) as libc::c_int
    } else {
        1024
    };
    for fd in first..=last.min(max) {
        // SAFETY: closing descriptors of this child; see the contract.
        unsafe { libc::close(fd) };
    }
}

/// Closes every descriptor from `first` up.
///
/// # Safety
///
/// Only for the child between fork and exec: it closes descriptors that
/// Rust objects of the parent's copy still believe they own, which is fine
/// only because those objects are never used again in this process.
unsafe fn close_from(first: libc::c_int) {
    // SAFETY: same contract as ours.
    unsafe { close_between(first, libc::c_int::MAX) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;
    use std::io::Read;

    /// Runs `argv` through the child path as the current user with a pipe
    /// on 0, 1 and 2; returns the status pipe's verdict, the exit status
    /// and the output.
    fn run(path: &CStr, argv: &[&str]) -> (ChildStatus, i32, String) {
        let (r, w) = nix::unistd::pipe().unwrap();
        let argv: Vec<CString> = argv.iter().map(|a| CString::new(*a).unwrap()).collect();
        // What a core that is not root prepares for its controller: the
        // same ids, no change.
        let (id, image) = crate::validate::controller(
            (super::super::geteuid(), super::super::getegid(), &[]),
            false,
            path.to_owned(),
            argv,
        );
        let conn = [CString::new("TCPREMOTEPORT=7").unwrap()];
        let sp = spawn_exec(
            &id,
            &image,
            &conn,
            &[w.as_raw_fd(), w.as_raw_fd(), w.as_raw_fd()],
            None,
        )
        .unwrap();
        drop(w);
        let mut out = String::new();
        std::fs::File::from(r).read_to_string(&mut out).unwrap();
        let st = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(sp.pid), None).unwrap();
        let code = match st {
            nix::sys::wait::WaitStatus::Exited(_, c) => c,
            other => panic!("{other:?}"),
        };
        (read_status(&sp.status), code, out)
    }

    #[test]
    fn exec_reports_success_by_end_of_file() {
        let (st, code, out) = run(
            c"/bin/sh",
            &["sh", "-c", "echo $PATH $TCPREMOTEPORT; ls /proc/self/fd | wc -l; grep NoNewPrivs /proc/self/status; umask; pwd"],
        );
        assert_eq!(st, ChildStatus::Started);
        assert_eq!(code, 0);
        let lines: Vec<&str> = out.lines().collect();
        let path = crate::validate::PATH_ENV.strip_prefix("PATH=").unwrap();
        assert_eq!(lines[0], format!("{path} 7"), "fixed, then per-connection");
        // 0, 1, 2 and ls's handle on the directory.
        assert_eq!(lines[1].trim(), "4");
        assert_eq!(lines[2], "NoNewPrivs:\t1");
        assert_eq!(lines[3], "0022");
        assert_eq!(lines[4], "/");
    }

    #[test]
    fn the_single_threaded_token_is_taken_once() {
        // The test harness may run more than one thread, so the first take
        // may fail for that reason; the second fails whatever happens.
        let first = SingleThreaded::take();
        if let Err(e) = &first {
            assert!(e.contains("threads"), "{e}");
        }
        let again = SingleThreaded::take().err().unwrap_or_default();
        assert!(again.contains("already taken"), "{again}");
    }

    #[test]
    fn exec_failure_reaches_the_parent() {
        let (st, code, out) = run(c"/nonexistent/server", &["server"]);
        assert_eq!(
            st,
            ChildStatus::Failed {
                step: Step::Exec,
                errno: libc::ENOENT
            }
        );
        assert_eq!(code, 127);
        assert_eq!(out, "", "nothing is written to the peer");
    }
}
