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
//! sorted groups and the program's strings when the listener was applied
//! (the [`Identity`] and [`ExecImage`] that validation alone constructs,
//! the only inputs accepted here), the argv and environment pointer arrays
//! and a scratch buffer for the group check per spawn, and what every child is
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

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};

use super::inherit::ForChild;
use super::owned;
use super::raw;
pub use super::status::{read_status, ChildStatus, Spawned, StatusPipe, Step};
use crate::validate::Identity;

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

/// Most descriptors a child is given (0, 1, 2, ...).
pub(super) const MAX_FDS: usize = 8;

/// Where a failing child reports the step and errno.
#[derive(Clone, Copy)]
pub(super) enum Report {
    /// The write end of a close-on-exec status pipe (a forked child); kept
    /// open past the descriptor set-up when `keep`.
    Pipe { fd: RawFd, keep: bool },
    /// Memory the core shares with the child until exec (see `spawn.rs`).
    Shared(*const SharedReport),
}

/// A failure report in memory shared with the core: `step` 0 until the
/// child fails.
#[repr(C)]
pub(super) struct SharedReport {
    pub step: AtomicU32,
    pub errno: AtomicI32,
}

/// Everything the child path needs, as plain values and pointers into
/// memory that stays valid and unchanged until the child execs or exits:
/// the parent's copy after `fork`, or the spawn slot (`spawn.rs`) after
/// `clone`.
pub(super) struct Plan {
    pub uid: u32,
    pub gid: u32,
    pub groups: *const libc::gid_t,
    pub ngroups: usize,
    pub change_ids: bool,
    pub no_new_privs: bool,
    pub fds: [RawFd; MAX_FDS],
    pub nfds: usize,
    /// Room for `ngroups + 1` entries, for the read-back check.
    pub got_groups: *mut libc::gid_t,
    pub base: &'static ForChild,
    pub report: Report,
    /// Tests only: how long to wait right after the id change.
    pub delay_ns: u64,
}

impl Plan {
    /// A plan whose groups are `id`'s own (a forked child's copy).
    pub(super) fn new(
        id: &Identity,
        fds: &[RawFd],
        got_groups: *mut libc::gid_t,
        report: Report,
    ) -> io::Result<Plan> {
        if fds.len() > MAX_FDS {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut f = [-1; MAX_FDS];
        f[..fds.len()].copy_from_slice(fds);
        Ok(Plan {
            uid: id.uid(),
            gid: id.gid(),
            groups: id.groups().as_ptr(),
            ngroups: id.groups().len(),
            change_ids: id.change_ids(),
            no_new_privs: id.no_new_privs(),
            fds: f,
            nfds: fds.len(),
            got_groups,
            base: super::inherit::for_child(),
            report,
            delay_ns: 0,
        })
    }
}

/// Starts a child that runs `serve` as `id` with `fd` as its descriptor 0
/// (and no other), then `_exit`s with what it returns. The closure runs
/// after the ids are dropped and every other descriptor is closed, and
/// never returns into the core. It is ordinary Rust code after fork, hence
/// the [`SingleThreaded`] token, and `fork` rather than the clone of
/// `spawn.rs`: it needs an address space of its own.
pub fn spawn_builtin<F: FnOnce(OwnedFd) -> i32>(
    id: &Identity,
    fd: RawFd,
    serve: F,
    pipe: Option<StatusPipe>,
    _single: &SingleThreaded,
) -> io::Result<Spawned> {
    let (pid, rd, _) = fork_child(id, &[fd], pipe, false)?;
    if pid == 0 {
        // Closed by the child path already (see `fork_child`).
        std::mem::forget(rd);
        // SAFETY: descriptor 0 was just set up by the child path and
        // nothing else in this process owns it.
        let fd = unsafe { owned(0) };
        let code = serve(fd);
        // SAFETY: leaving the child without running the parent's
        // destructors or atexit handlers.
        unsafe { libc::_exit(code) }
    }
    Ok(Spawned { pid, status: rd })
}

/// Forks; the child runs the steps and returns (pid 0) only if they all
/// succeeded, with its descriptors in place; the parent gets the pid and
/// the status pipe's read end (and the child where to report). `keep`: the
/// pipe stays open in the child (close-on-exec) for a report after the
/// steps.
pub(super) fn fork_child(
    id: &Identity,
    fds: &[RawFd],
    pipe: Option<StatusPipe>,
    keep: bool,
) -> io::Result<(i32, OwnedFd, Report)> {
    // Room for what getgroups may return (one more than asked, to see an
    // extra group), allocated before fork.
    let mut got_groups: Vec<libc::gid_t> = vec![0; id.groups().len() + 1];
    let StatusPipe { rd, wr } = match pipe {
        Some(p) => p,
        None => StatusPipe::new()?,
    };
    let report = Report::Pipe {
        fd: wr.as_raw_fd(),
        keep,
    };
    let mut plan = Plan::new(id, fds, got_groups.as_mut_ptr(), report)?;
    // The child runs only the steps (raw system calls) and then what the
    // caller does with pid 0: a builtin, reached only with a
    // `SingleThreaded` token (see the module's fork contract), or exec.
    // SAFETY: as just said, the fork contract holds.
    let pid = unsafe { libc::fork() };
    if pid == -1 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        if let Err((step, errno)) = run_steps(&mut plan) {
            fail(plan.report, step, errno);
        }
        // The steps closed every descriptor but the planned ones: the
        // pipe's ends must not be closed again here.
        std::mem::forget(wr);
        return Ok((0, rd, plan.report));
    }
    drop(wr);
    Ok((pid, rd, plan.report))
}

/// Reports `step` and `errno` to the parent and leaves with status 127.
pub(super) fn fail(report: Report, step: Step, errno: i32) -> ! {
    match report {
        Report::Pipe { fd, .. } => {
            let mut msg = [0u8; 8];
            msg[..4].copy_from_slice(&(step as u32).to_ne_bytes());
            msg[4..].copy_from_slice(&errno.to_ne_bytes());
            // A failed write cannot be reported anywhere, and the exit
            // status says 127 anyway.
            // SAFETY: `msg` is a valid 8-byte buffer.
            let _ = unsafe { raw::call(libc::SYS_write, &[fd as usize, msg.as_ptr() as usize, 8]) };
        }
        Report::Shared(r) => {
            // SAFETY: the report lives in the spawn slot, which the core
            // keeps until this child has exited or exec'd.
            let r = unsafe { &*r };
            r.errno.store(errno, Ordering::Relaxed);
            r.step.store(step as u32, Ordering::Release);
        }
    }
    exit(127)
}

/// `exit_group`: no atexit handlers, no stdio of the parent's.
pub(super) fn exit(code: i32) -> ! {
    loop {
        // SAFETY: exit_group takes an integer and does not return.
        let _ = unsafe { raw::call(libc::SYS_exit_group, &[code as usize]) };
    }
}

/// A raw system call whose failure is `step`.
fn sys(step: Step, n: libc::c_long, args: &[usize]) -> Result<usize, (Step, i32)> {
    // SAFETY: every caller below passes the arguments system call `n`
    // expects, pointers to live values of this function's callers.
    unsafe { raw::call(n, args) }.map_err(|e| (step, e))
}

/// Steps 1 to 7 of the child path (see the top of this file), with raw
/// system calls only.
pub(super) fn run_steps(p: &mut Plan) -> Result<(), (Step, i32)> {
    // 1. New session.
    sys(Step::Setsid, libc::SYS_setsid, &[])?;
    // 2. Default dispositions for every signal, then an empty mask.
    reset_signals();
    let empty: u64 = 0;
    let set = &empty as *const u64 as usize;
    sys(
        Step::Signals,
        libc::SYS_rt_sigprocmask,
        &[libc::SIG_SETMASK as usize, set, 0, 8],
    )?;
    // 3. A fresh session keyring, before the id change (see above).
    if p.base.join_keyring() {
        let join = libc::KEYCTL_JOIN_SESSION_KEYRING as usize;
        sys(Step::Keyring, libc::SYS_keyctl, &[join, 0])?;
    }
    // 4. Ids: groups, then gid, then uid; each checked, then read back.
    if p.change_ids {
        sys(
            Step::Setgroups,
            libc::SYS_setgroups,
            &[p.ngroups, p.groups as usize],
        )?;
        let g = p.gid as usize;
        sys(Step::Setgid, libc::SYS_setresgid, &[g, g, g])?;
        let u = p.uid as usize;
        sys(Step::Setuid, libc::SYS_setresuid, &[u, u, u])?;
    }
    if p.delay_ns > 0 {
        let ts = libc::timespec {
            tv_sec: (p.delay_ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (p.delay_ns % 1_000_000_000) as libc::c_long,
        };
        let _ = sys(
            Step::Unknown,
            libc::SYS_nanosleep,
            &[&ts as *const _ as usize, 0],
        );
    }
    verify_ids(p)?;
    if p.change_ids && p.uid != 0 {
        verify_no_capabilities()?;
    }
    // 5. no_new_privs: setuid binaries cannot lift the child any more.
    if p.no_new_privs {
        sys(
            Step::NoNewPrivs,
            libc::SYS_prctl,
            &[libc::PR_SET_NO_NEW_PRIVS as usize, 1, 0, 0, 0],
        )?;
    }
    // 6. umask and working directory, whatever the core was started with.
    sys(Step::Chdir, libc::SYS_umask, &[0o022])?;
    sys(Step::Chdir, libc::SYS_chdir, &[c"/".as_ptr() as usize])?;
    // 7. Descriptors, then the resource limits the core was started with:
    //    after the descriptors are closed, so that the fallback close loop
    //    sees the core's raised descriptor limit.
    setup_fds(p)?;
    for (res, rl) in p.base.limits() {
        let rl = rl as *const libc::rlimit as usize;
        sys(
            Step::Limits,
            libc::SYS_prlimit64,
            &[0, *res as usize, rl, 0],
        )?;
    }
    Ok(())
}

/// `execve` with pointer arrays made before the child started; returns
/// only on failure, with the errno.
pub(super) fn exec(
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) -> i32 {
    let args = [path as usize, argv as usize, envp as usize];
    match sys(Step::Exec, libc::SYS_execve, &args) {
        Ok(_) => 0,
        Err((_, e)) => e,
    }
}

/// Checks, after the change to a non-root uid, that the permitted,
/// effective and inheritable sets are empty. The ambient set needs no call
/// of its own: the kernel keeps it a subset of permitted and inheritable
/// (capabilities(7)), so it is empty when they are.
fn verify_no_capabilities() -> Result<(), (Step, i32)> {
    // `linux/capability.h`, version 3: a header (version, pid 0 for this
    // process), then two data structures (capabilities 0-31 and 32-63) of
    // three words each: effective, permitted, inheritable.
    let mut header: [u32; 2] = [0x2008_0522, 0];
    let mut sets = [0u32; 6];
    let args = [header.as_mut_ptr() as usize, sets.as_mut_ptr() as usize];
    sys(Step::Capabilities, libc::SYS_capget, &args)?;
    if sets.iter().any(|&w| w != 0) {
        return Err((Step::Capabilities, 0));
    }
    Ok(())
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
    let act = &dfl as *const KernelSigaction as usize;
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // The size argument is the kernel's sigset size (8 bytes on Linux).
        let _ = sys(
            Step::Signals,
            libc::SYS_rt_sigaction,
            &[sig as usize, act, 0, 8],
        );
    }
}

/// Reads the ids back and compares them with what was asked for.
fn verify_ids(p: &mut Plan) -> Result<(), (Step, i32)> {
    let bad = (Step::VerifyIds, libc::EPERM);
    let (mut r, mut e, mut sv) = (0u32, 0u32, 0u32);
    let out = [
        &mut r as *mut u32 as usize,
        &mut e as *mut u32 as usize,
        &mut sv as *mut u32 as usize,
    ];
    sys(Step::VerifyIds, libc::SYS_getresuid, &out)?;
    if r != p.uid || e != p.uid || sv != p.uid {
        return Err(bad);
    }
    sys(Step::VerifyIds, libc::SYS_getresgid, &out)?;
    if r != p.gid || e != p.gid || sv != p.gid {
        return Err(bad);
    }
    if p.change_ids {
        // SAFETY: the plan's maker gives `ngroups` groups and room for
        // `ngroups + 1` read back, both alive until exec.
        let (want, room) = unsafe {
            (
                std::slice::from_raw_parts(p.groups, p.ngroups),
                std::slice::from_raw_parts_mut(p.got_groups, p.ngroups + 1),
            )
        };
        let n = sys(
            Step::VerifyIds,
            libc::SYS_getgroups,
            &[room.len(), room.as_mut_ptr() as usize],
        )?;
        let got = &mut room[..n.min(p.ngroups + 1)];
        got.sort_unstable();
        let mut k = 0;
        for (i, g) in got.iter().enumerate() {
            if i > 0 && got[i - 1] == *g {
                continue;
            }
            if want.get(k) != Some(g) {
                return Err(bad);
            }
            k += 1;
        }
        if k != want.len() {
            return Err(bad);
        }
    }
    if p.uid != 0 {
        // Both must fail for a non-root child; success would mean the drop
        // is not permanent.
        let keep = u32::MAX as usize;
        if sys(Step::RegainRoot, libc::SYS_setuid, &[0]).is_ok()
            || sys(Step::RegainRoot, libc::SYS_setresuid, &[keep, 0, keep]).is_ok()
        {
            return Err((Step::RegainRoot, 0));
        }
    }
    Ok(())
}

/// Puts `fds[i]` on descriptor `i`, keeps a status pipe that asks for it
/// (close-on-exec, right above them), and closes everything else.
fn setup_fds(p: &mut Plan) -> Result<(), (Step, i32)> {
    let n = p.nfds;
    let fds = p.fds;
    let report_fd = match p.report {
        Report::Pipe { fd, .. } => Some(fd),
        Report::Shared(_) => None,
    };
    // Close everything but the sources and the status pipe first: the core
    // may be at its descriptor limit, and the copies below need room.
    let mut keep = [-1 as libc::c_int; MAX_FDS + 1];
    keep[..n].copy_from_slice(&fds[..n]);
    let mut nkeep = n;
    if let Some(fd) = report_fd {
        keep[n] = fd;
        nkeep += 1;
    }
    let keep = &mut keep[..nkeep];
    keep.sort_unstable();
    let mut from: libc::c_int = 3;
    for &k in keep.iter() {
        if k >= from {
            close_between(from, k - 1);
            from = k + 1;
        }
    }
    close_between(from, libc::c_int::MAX);
    let top = n as libc::c_int;
    let dupfd = |fd: RawFd| {
        let args = [
            fd as usize,
            libc::F_DUPFD_CLOEXEC as usize,
            (top + 1) as usize,
        ];
        sys(Step::Descriptors, libc::SYS_fcntl, &args).map(|h| h as libc::c_int)
    };
    // Then copy every source (and the status pipe) above the target range,
    // so that placing one target can never overwrite a source not yet placed.
    let mut high = [0 as libc::c_int; MAX_FDS];
    for i in 0..n {
        high[i] = dupfd(fds[i])?;
    }
    let mut first = top;
    if let (Some(fd), Report::Pipe { keep, .. }) = (report_fd, p.report) {
        // Only now, with every source safe above `n`, may `n` be reused.
        let st = dupfd(fd)?;
        let args = [st as usize, top as usize, libc::O_CLOEXEC as usize];
        if let Err((_, e)) = sys(Step::Descriptors, libc::SYS_dup3, &args) {
            fail(Report::Pipe { fd: st, keep }, Step::Descriptors, e);
        }
        p.report = Report::Pipe { fd: top, keep };
        if keep {
            first = top + 1;
        }
    }
    for (i, &h) in high[..n].iter().enumerate() {
        // dup3 onto a different number, without O_CLOEXEC: the copy stays
        // open across exec.
        sys(Step::Descriptors, libc::SYS_dup3, &[h as usize, i, 0])?;
    }
    close_between(first, libc::c_int::MAX);
    Ok(())
}

/// Closes the descriptors `first..=last` (nothing if `first > last`); only
/// for a child before exec, whose copies of the core's descriptors are
/// never used again.
fn close_between(first: libc::c_int, last: libc::c_int) {
    if first > last || first < 0 {
        return;
    }
    let range = [first as usize, last as libc::c_uint as usize, 0];
    if sys(Step::Descriptors, libc::SYS_close_range, &range).is_ok() {
        return;
    }
    // Kernels before 5.9: close one by one, up to the descriptor limit.
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    let get = [
        0,
        libc::RLIMIT_NOFILE as usize,
        0,
        &mut rl as *mut libc::rlimit as usize,
    ];
    let max = match sys(Step::Descriptors, libc::SYS_prlimit64, &get) {
        Ok(_) => rl.rlim_cur.min(1 << 20) as libc::c_int,
        Err(_) => 1024,
    };
    for fd in first..=last.min(max) {
        let _ = sys(Step::Descriptors, libc::SYS_close, &[fd as usize]);
    }
}

#[cfg(test)]
impl SingleThreaded {
    /// For unit tests that never start a builtin (the harness runs
    /// threads of its own).
    pub fn for_tests() -> SingleThreaded {
        SingleThreaded {
            _this_thread: PhantomData,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
