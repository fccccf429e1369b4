//! Starting a server without copying the core: `clone(CLONE_VM)` on a stack
//! of its own, the child path of `child.rs` in raw system calls, then
//! `execve`. What glibc's `posix_spawn` and Go's `forkAndExecInChild` do,
//! except that the core never waits for the child (no `CLONE_VFORK`).
//!
//! # A spawn slot
//!
//! Each child gets a slot: one mapping with a guard page, the child's stack,
//! a header and the data it needs, all written before the clone: the plan
//! (ids, groups, descriptors), the path, argv, the environment (the fixed
//! part, then the per-connection variables the caller formatted into its
//! reused buffer) and their pointer arrays. The child reads nothing else of
//! the core's memory but `'static` values (what it is given back of the
//! core's start), so the core may change or drop a listener while a child
//! of it is still starting. A failure is written to the header (step and
//! errno) before the child exits with 127.
//!
//! The header also holds the word the kernel clears when the child's
//! memory stops being the core's (`CLONE_CHILD_CLEARTID`: at exec, or at
//! exit): from then on the slot is free, unless it holds a failure, which
//! is read (and the slot freed) when the child is reaped. Slots are reused;
//! the core makes another when every slot is taken by a child that has not
//! reached exec yet, so a child stopped on its way (after the id change any
//! process of its uid may SIGSTOP it) stalls neither the core nor other
//! spawns. That is why there is no `CLONE_VFORK`: with it, the core would
//! wait for each child to exec, and freeze with a stopped one.
//!
//! # Why sharing the core's memory until exec is safe
//!
//! * Nothing runs in the child but the child path: raw system calls on its
//!   own stack, no allocation, no lock, no C library call (which could
//!   write the core's `errno`, or run the library's thread machinery, as
//!   `setresuid` does). It leaves only by `execve` or `exit_group`.
//! * Signals: no handler may run in the child before step 2 sets every
//!   disposition to its default and then empties its mask. The core
//!   installs none (signals come through its signalfd), but its runtime
//!   and the C library do (stack overflow, the library's own signals).
//!   With clone3 the kernel starts the child with every handler reset
//!   (`CLONE_CLEAR_SIGHAND`, Linux 5.5): a signal that reaches it earlier
//!   has its default action (it ends or stops the child) or is ignored,
//!   and the core's mask is not touched. Without clone3 (older kernels, a
//!   filter that refuses it, elsewhere than x86-64) every signal is
//!   blocked in the core across the clone instead, and the child inherits
//!   that mask until step 2.
//! * Other processes: when the child changes its ids, the kernel sets the
//!   shared memory's dumpable flag to `fs.suid_dumpable`. With 0 (the
//!   default) the service's uid can then neither ptrace the child nor open
//!   its `/proc/PID/mem`; with 2 only a process with CAP_SYS_PTRACE can;
//!   before the change the child is root's. The core is marked too, as a
//!   side effect, which a root daemon may as well be. With 1 ("debug",
//!   documented as insecure) the flag would make a child of the service's
//!   uid traceable by that uid while it shares the core's memory, and every
//!   other child's id change sets it again: so the core looks at the
//!   setting (at most once a second) and, when it is 1, starts children
//!   with `fork`, as it does for builtins.
//! * The core writes to a slot only while it is free, and the child only
//!   its header's report; a failure is read after the kernel cleared the
//!   word, when the child can no longer write.
//!
//! # Many listeners: the descriptor table
//!
//! A clone copies the core's descriptor table, and the child then closes
//! every listener it inherited: with 10,000 listeners both cost more than
//! the rest of the spawn. So with many listeners (see
//! [`Spawner::set_many_listeners`]) the child starts on the core's own
//! table (`CLONE_FILES`) and its first system call takes a copy of only the
//! descriptors below its highest one (`close_range` with
//! `CLOSE_RANGE_UNSHARE`); the listeners live above them, from
//! `net::LISTENER_FD_BASE` up, and connections get the lowest free numbers.
//! Until that call the core waits (it must not close the connection, or
//! reuse its number, while the table is shared): the child is still root
//! then, so no process of a service's uid can signal it, and the wait is
//! the few microseconds before its first system call. The id change, and the window in which a service's uid could stop
//! the child, come after it.
//!
//! Elsewhere than x86-64 and aarch64 (no raw system calls without the C
//! library, see `raw.rs`), the same path runs after `fork`, with the
//! status pipe.

use std::ffi::CString;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use super::child;
use super::slot::{data_size, fill, page, Header, Slot, STACK};
use super::status::{ChildStatus, StatusPipe, Step};
use crate::validate::{ExecImage, Identity};

/// Free slots kept for reuse; more are unmapped.
const KEEP_FREE: usize = 8;

/// The environment variable that delays, in tests only, every child of one
/// program right after its id change: `MS:PATH`.
pub const TEST_DELAY_ENV: &str = "INETD_TEST_EXEC_DELAY";

/// The first byte of `/proc/sys/fs/suid_dumpable`, read without
/// allocating.
fn suid_dumpable() -> Option<u8> {
    use nix::fcntl::{open, OFlag};
    let path = c"/proc/sys/fs/suid_dumpable";
    let fd = open(
        path,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    // SAFETY: `open` just returned this descriptor, owned by no one else.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut b = [0u8; 4];
    let n = nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut b).ok()?;
    (n > 0).then_some(b[0])
}

/// Starts exec children and keeps what tells how they went.
pub struct Spawner {
    slots: Vec<Slot>,
    /// `fs.suid_dumpable` is not 1, as of `checked`.
    clone_safe: bool,
    checked: Option<std::time::Instant>,
    delay: Option<(u64, CString)>,
    /// Children start on the core's descriptor table (see the top of this
    /// file).
    share_files: bool,
}

impl Default for Spawner {
    fn default() -> Self {
        Spawner::new(std::env::var(TEST_DELAY_ENV).ok().as_deref())
    }
}

impl Spawner {
    /// `test_delay`: the value of [`TEST_DELAY_ENV`], if set.
    pub fn new(test_delay: Option<&str>) -> Spawner {
        let delay = test_delay.and_then(|v| {
            let (ms, path) = v.split_once(':')?;
            let ms: u64 = ms.parse().ok().filter(|&m| m <= 60_000)?;
            log::warn!("{TEST_DELAY_ENV}: children of {path} wait {ms} ms after their id change (for tests)");
            Some((ms * 1_000_000, CString::new(path).ok()?))
        });
        Spawner {
            slots: Vec::new(),
            clone_safe: false,
            checked: None,
            delay,
            share_files: false,
        }
    }

    /// With many listeners, children copy only the low part of the core's
    /// descriptor table (see the top of this file).
    pub fn set_many_listeners(&mut self, many: bool) {
        self.share_files = many;
    }

    /// Starts a child that execs `image` as `id`, with `fds[i]` on
    /// descriptor `i` and the per-connection variables `conn_env` (each
    /// `NAME=value` and a NUL) after the fixed environment. Its pid, and a
    /// status pipe where the child path ran after `fork` (see the top of
    /// this file); otherwise its outcome comes from [`Spawner::outcome`].
    pub fn exec(
        &mut self,
        id: &Identity,
        image: &ExecImage,
        conn_env: &[u8],
        fds: &[RawFd],
    ) -> io::Result<(i32, Option<OwnedFd>)> {
        if !super::raw::NATIVE || !self.clone_is_safe() {
            return fork_exec(id, image, conn_env, fds);
        }
        let need = data_size(id, image, conn_env);
        let i = self.free_slot(need)?;
        let delay_ns = match &self.delay {
            Some((ns, path)) if path.as_c_str() == image.path() => *ns,
            _ => 0,
        };
        let top = fds.iter().copied().max().unwrap_or(0);
        let unshare_below = if self.share_files && top < super::net::LISTENER_FD_BASE {
            top + 1
        } else {
            0
        };
        let slot = &mut self.slots[i];
        let hdr = slot.header();
        // SAFETY: the slot is free (no child uses it), and `fill` writes
        // only within its data area, whose size `data_size` accounted for.
        unsafe { fill(hdr, slot.data_len(), id, image, conn_env, fds, delay_ns)? };
        // SAFETY: as above; the child is not started yet.
        unsafe { (*hdr).unshare_below = unshare_below };
        // SAFETY: the slot is ready (see above); `clone_child` is the child
        // path and never returns into the core.
        let pid = unsafe { clone_child(hdr, slot.base.wrapping_add(page()))? };
        slot.pid = pid;
        Ok((pid, None))
    }

    /// Whether children may share the core's memory (see the top of this
    /// file): `fs.suid_dumpable` is not 1, read at most once a second.
    fn clone_is_safe(&mut self) -> bool {
        let now = std::time::Instant::now();
        if self
            .checked
            .is_some_and(|t| now.duration_since(t).as_secs() < 1)
        {
            return self.clone_safe;
        }
        let first = self.checked.is_none();
        self.checked = Some(now);
        let value = suid_dumpable();
        let safe = value.is_some_and(|v| v != b'1');
        if !safe && (first || self.clone_safe) {
            let why = match value {
                Some(_) => "fs.suid_dumpable is 1",
                None => "/proc/sys/fs/suid_dumpable cannot be read",
            };
            log::warn!(
                "{why}: servers are started with fork, not sharing the core's memory until exec"
            );
        }
        self.clone_safe = safe;
        safe
    }

    /// A free slot with room for `need` data bytes, made if there is none;
    /// slots whose child has exec'd are freed first.
    fn free_slot(&mut self, need: usize) -> io::Result<usize> {
        for s in &mut self.slots {
            if s.pid != 0 && s.left() && s.failure().is_none() {
                s.pid = 0;
            }
        }
        if let Some(i) = self
            .slots
            .iter()
            .position(|s| s.pid == 0 && s.data_len() >= need)
        {
            return Ok(i);
        }
        self.slots.push(Slot::map(need.max(4096))?);
        Ok(self.slots.len() - 1)
    }

    /// How child `pid`, just reaped, went, if it was started here: a
    /// failure its slot holds, or `Started`. Frees its slot.
    pub fn outcome(&mut self, pid: i32) -> ChildStatus {
        let Some(i) = self.slots.iter().position(|s| s.pid == pid) else {
            return ChildStatus::Started;
        };
        let st = match self.slots[i].failure() {
            Some((step, errno)) if self.slots[i].left() => ChildStatus::Failed { step, errno },
            _ => ChildStatus::Started,
        };
        self.release(i);
        st
    }

    fn release(&mut self, i: usize) {
        if !self.slots[i].left() {
            // Reaped, so gone: the kernel cleared the word at its exit.
            // Should it not have, the slot is leaked rather than reused.
            std::mem::forget(self.slots.swap_remove(i));
            return;
        }
        self.slots[i].pid = 0;
        let free = self.slots.iter().filter(|s| s.pid == 0).count();
        if free > KEEP_FREE {
            self.slots.swap_remove(i);
        }
    }

    /// Slots in use and mapped, for tests.
    #[cfg(test)]
    pub fn slots(&self) -> (usize, usize) {
        let used = self.slots.iter().filter(|s| s.pid != 0).count();
        (used, self.slots.len())
    }
}

/// Set once clone3 with `CLONE_CLEAR_SIGHAND` was refused (a kernel before
/// 5.5, or a filter that refuses clone3): from then on children start
/// with every signal blocked across `clone` instead.
static NO_CLONE3: AtomicBool = AtomicBool::new(!super::raw::HAS_CLONE3);

/// Clones the child (`CLONE_VM`, on the stack of `STACK` bytes from
/// `stack`); its pid. No handler of the core may ever run in the child:
/// with clone3 the kernel starts it with every handler reset
/// (`CLONE_CLEAR_SIGHAND`), so a signal that reaches it before its own
/// reset has its default action or is ignored, and the core's mask is
/// left alone; without clone3 every signal is blocked in the core across
/// `clone`, and the child inherits that mask until its reset.
///
/// # Safety
///
/// `hdr` is a slot's header filled by [`fill`], and the slot stays as it
/// is until the kernel clears `tid`.
unsafe fn clone_child(hdr: *mut Header, stack: *mut u8) -> io::Result<i32> {
    // SAFETY: the header is filled and not yet shared.
    let share = unsafe { (*hdr).unshare_below } > 0;
    // SAFETY: as for this function.
    let tried = unsafe { clone3_child(hdr, stack, share) };
    let pid = match tried {
        Some(r) => r?,
        // SAFETY: as for this function.
        None => unsafe { clone_masked(hdr, stack.wrapping_add(STACK), share)? },
    };
    if share {
        // SAFETY: the header stays mapped while the child may use it.
        wait_unshared(unsafe { &(*hdr).tid });
    }
    Ok(pid)
}

/// The clone3 path of [`clone_child`]: `None` where clone3 (with
/// `CLONE_CLEAR_SIGHAND`) is refused, remembered for next time.
///
/// # Safety
///
/// As for [`clone_child`].
unsafe fn clone3_child(hdr: *mut Header, stack: *mut u8, share: bool) -> Option<io::Result<i32>> {
    use super::raw::{CloneArgs, CLONE_CLEAR_SIGHAND};
    if NO_CLONE3.load(Ordering::Relaxed) {
        return None;
    }
    let mut flags = (libc::CLONE_VM | libc::CLONE_CHILD_CLEARTID) as u64 | CLONE_CLEAR_SIGHAND;
    if share {
        flags |= libc::CLONE_FILES as u64;
    }
    // The word the kernel clears when the child execs or exits.
    // SAFETY: `hdr` is a live header (the caller's promise).
    let tid = unsafe { std::ptr::addr_of_mut!((*hdr).tid) };
    let args = CloneArgs {
        flags,
        child_tid: tid as u64,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack as u64,
        stack_size: STACK as u64,
        ..CloneArgs::default()
    };
    // Why sharing the memory until exec is safe: the top of this file.
    // SAFETY: the slot's stack and header stay as they are until the
    // kernel clears `tid`; `clone_entry` never returns into the core.
    let r = unsafe { super::raw::clone3(&args, clone_entry, hdr.cast()) };
    if r > 0 {
        return Some(Ok(r as i32));
    }
    let errno = (-r) as i32;
    if matches!(
        errno,
        libc::ENOSYS | libc::EINVAL | libc::EPERM | libc::E2BIG
    ) {
        NO_CLONE3.store(true, Ordering::Relaxed);
        log::debug!("clone3 refused (errno {errno}): children start with clone, every signal blocked across it");
        return None;
    }
    Some(Err(io::Error::from_raw_os_error(errno)))
}

/// The path of [`clone_child`] without clone3: every signal blocked
/// across `clone`.
///
/// # Safety
///
/// As for [`clone_child`]; `stack_top` is the end of the slot's stack.
unsafe fn clone_masked(hdr: *mut Header, stack_top: *mut u8, share: bool) -> io::Result<i32> {
    // SAFETY: sigfillset on a zeroed set, then sigprocmask with valid sets.
    let old = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    };
    let mut flags = libc::CLONE_VM | libc::CLONE_CHILD_CLEARTID | libc::SIGCHLD;
    if share {
        flags |= libc::CLONE_FILES;
    }
    // Why sharing the memory until exec is safe: the top of this file.
    // `tid` is the word the kernel clears when the child execs or exits.
    // SAFETY: `clone_entry` runs on the slot's stack with the slot's
    // header as its argument and never returns into the core.
    let pid = unsafe {
        libc::clone(
            clone_entry,
            stack_top.cast(),
            flags,
            hdr.cast(),
            std::ptr::null_mut::<libc::pid_t>(),
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::addr_of_mut!((*hdr).tid),
        )
    };
    let err = io::Error::last_os_error();
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    if pid == -1 {
        return Err(err);
    }
    Ok(pid)
}

/// Waits until a child that started on the core's descriptor table has
/// its own (or has gone): a short spin, then a futex wait on the word the
/// child and the kernel change and wake.
fn wait_unshared(tid: &AtomicU32) {
    for _ in 0..100 {
        if tid.load(Ordering::Acquire) != 1 {
            return;
        }
        std::hint::spin_loop();
    }
    while tid.load(Ordering::Acquire) == 1 {
        // Not the private variant: the kernel's wake at exit is not either.
        // SAFETY: FUTEX_WAIT on a live, aligned u32 with no timeout.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                tid.as_ptr(),
                libc::FUTEX_WAIT,
                1u32,
                std::ptr::null::<libc::timespec>(),
            )
        };
    }
}

/// The child: the child path, then exec. Never returns.
extern "C" fn clone_entry(arg: *mut libc::c_void) -> libc::c_int {
    let hdr: *mut Header = arg.cast();
    // SAFETY: the core filled the header before the clone and leaves the
    // slot alone until this child has exec'd or exited.
    let h = unsafe { &mut *hdr };
    if h.unshare_below > 0 {
        unshare_files(h);
    }
    if let Err((step, errno)) = child::run_steps(&mut h.plan) {
        child::fail(h.plan.report, step, errno);
    }
    let errno = child::exec(h.path, h.argv, h.envp);
    child::fail(h.plan.report, Step::Exec, errno)
}

/// In the child, first thing: a descriptor table of its own with only the
/// descriptors below `unshare_below`, then the core is told (it waits).
fn unshare_files(h: &Header) {
    const CLOSE_RANGE_UNSHARE: usize = 2;
    let below = h.unshare_below as usize;
    let args = [below, u32::MAX as usize, CLOSE_RANGE_UNSHARE];
    // SAFETY: close_range takes integers.
    let mut r = unsafe { super::raw::call(libc::SYS_close_range, &args) };
    if r.is_err() {
        // Kernels before 5.9: a copy of the whole table.
        let flags = [libc::CLONE_FILES as usize];
        // SAFETY: unshare takes integers.
        r = unsafe { super::raw::call(libc::SYS_unshare, &flags) };
    }
    h.tid.store(2, Ordering::Release);
    let wake = [h.tid.as_ptr() as usize, libc::FUTEX_WAKE as usize, 1];
    // SAFETY: FUTEX_WAKE on the header's live, aligned word.
    let _ = unsafe { super::raw::call(libc::SYS_futex, &wake) };
    if let Err(errno) = r {
        // Still on the core's table: nothing may be closed from here.
        child::fail(h.plan.report, Step::Descriptors, errno);
    }
}

/// The child path after `fork`, where raw system calls go through the C
/// library (see the top of this file); the status pipe reports.
fn fork_exec(
    id: &Identity,
    image: &ExecImage,
    conn_env: &[u8],
    fds: &[RawFd],
) -> io::Result<(i32, Option<OwnedFd>)> {
    let mut env: Vec<*const libc::c_char> = image.env().iter().map(|c| c.as_ptr()).collect();
    let mut off = 0;
    for var in conn_env.split_inclusive(|&b| b == 0) {
        env.push(conn_env[off..].as_ptr().cast());
        off += var.len();
    }
    env.push(std::ptr::null());
    let argv: Vec<*const libc::c_char> = image
        .argv()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let (pid, rd, report) = child::fork_child(id, fds, Some(StatusPipe::new()?), true)?;
    if pid == 0 {
        // Closed by the child path already (see `fork_child`).
        std::mem::forget(rd);
        let errno = child::exec(image.path().as_ptr(), argv.as_ptr(), env.as_ptr());
        child::fail(report, Step::Exec, errno);
    }
    Ok((pid, Some(rd)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;
    use std::io::Read;
    use std::os::fd::AsRawFd;

    /// Runs `argv` through the child path as the current user with a pipe
    /// on 0, 1 and 2; returns the outcome, the exit status and the output.
    fn run(sp: &mut Spawner, path: &CStr, argv: &[&str]) -> (ChildStatus, i32, String) {
        let (r, w) = nix::unistd::pipe().unwrap();
        let argv: Vec<CString> = argv.iter().map(|a| CString::new(*a).unwrap()).collect();
        // What a core that is not root prepares for its controller: the
        // same ids, no change.
        let (id, image) = crate::validate::controller(
            (super::super::geteuid(), super::super::getegid(), &[]),
            false,
            path,
            &argv,
        );
        let fds = [w.as_raw_fd(), w.as_raw_fd(), w.as_raw_fd()];
        let (pid, status) = sp.exec(&id, &image, b"TCPREMOTEPORT=7\0", &fds).unwrap();
        drop(w);
        let mut out = String::new();
        std::fs::File::from(r).read_to_string(&mut out).unwrap();
        let st = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
        let code = match st {
            nix::sys::wait::WaitStatus::Exited(_, c) => c,
            other => panic!("{other:?}"),
        };
        let slot = sp.outcome(pid);
        let said = status.map_or(slot, |fd| super::super::status::read_status(&fd));
        (said, code, out)
    }

    #[test]
    fn exec_reports_success() {
        let mut sp = Spawner::new(None);
        let (st, code, out) = run(
            &mut sp,
            c"/bin/sh",
            &["sh", "-c", "echo $PATH $TCPREMOTEPORT; ls /proc/self/fd | wc -l; grep NoNewPrivs /proc/self/status; umask; pwd"],
        );
        assert_eq!(st, ChildStatus::Started);
        assert_eq!(code, 0);
        let lines: Vec<&str> = out.lines().collect();
        let path = crate::validate::PATH_ENV
            .to_str()
            .unwrap()
            .strip_prefix("PATH=")
            .unwrap();
        assert_eq!(lines[0], format!("{path} 7"), "fixed, then per-connection");
        // 0, 1, 2 and ls's handle on the directory.
        assert_eq!(lines[1].trim(), "4");
        assert_eq!(lines[2], "NoNewPrivs:\t1");
        assert_eq!(lines[3], "0022");
        assert_eq!(lines[4], "/");
    }

    fn signal_mask() -> libc::sigset_t {
        // SAFETY: a zeroed sigset_t is valid; pthread_sigmask with a null
        // new set only reads the thread's mask into it.
        unsafe {
            let mut m: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut m);
            m
        }
    }

    fn same_mask(a: &libc::sigset_t, b: &libc::sigset_t) -> bool {
        // SAFETY: both are initialised sigsets; sigismember only reads.
        (1..=64).all(|s| unsafe { libc::sigismember(a, s) == libc::sigismember(b, s) })
    }

    /// clone3 (where the kernel has it) and the masked clone both start
    /// children, and neither leaves the caller's signal mask changed. Both
    /// paths are correct, so other tests running meanwhile may take either.
    #[test]
    fn both_clone_paths_start_children_and_leave_the_mask_alone() {
        let before = signal_mask();
        let had_clone3 = !NO_CLONE3.load(Ordering::Relaxed);
        for masked in [false, true] {
            if masked {
                NO_CLONE3.store(true, Ordering::Relaxed);
            }
            let mut sp = Spawner::new(None);
            let (st, code, out) = run(&mut sp, c"/bin/sh", &["sh", "-c", "echo $TCPREMOTEPORT"]);
            assert_eq!((st, code, out.as_str()), (ChildStatus::Started, 0, "7\n"));
            assert!(same_mask(&before, &signal_mask()), "masked={masked}");
        }
        NO_CLONE3.store(!had_clone3, Ordering::Relaxed);
    }

    #[test]
    fn exec_failure_reaches_the_parent() {
        let mut sp = Spawner::new(None);
        let (st, code, out) = run(&mut sp, c"/nonexistent/server", &["server"]);
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

    #[test]
    fn slots_are_reused_and_a_failure_is_read_once() {
        let mut sp = Spawner::new(None);
        for _ in 0..20 {
            let (st, _, _) = run(&mut sp, c"/bin/true", &["true"]);
            assert_eq!(st, ChildStatus::Started);
            let (st, _, _) = run(&mut sp, c"/nonexistent", &["x"]);
            assert!(matches!(st, ChildStatus::Failed { .. }), "{st:?}");
        }
        let (used, mapped) = sp.slots();
        assert_eq!(used, 0, "every slot is free once its child is reaped");
        if super::super::raw::NATIVE {
            assert_eq!(mapped, 1, "one child at a time needs one slot");
        }
        // Unknown pids (a child started otherwise) count as started.
        assert_eq!(sp.outcome(1), ChildStatus::Started);
    }

    /// The path taken where the memory may not be shared (or elsewhere
    /// than x86-64 and aarch64): fork, the same steps, the status pipe.
    #[test]
    fn the_fork_path_execs_and_reports_too() {
        let (id, image) = crate::validate::controller(
            (super::super::geteuid(), super::super::getegid(), &[]),
            false,
            c"/bin/sh",
            &["sh", "-c", "echo $TCPREMOTEPORT; ls /proc/self/fd | wc -l"]
                .iter()
                .map(|a| CString::new(*a).unwrap())
                .collect::<Vec<_>>(),
        );
        let (r, w) = nix::unistd::pipe().unwrap();
        let fds = [w.as_raw_fd(); 3];
        let (pid, status) = fork_exec(&id, &image, b"TCPREMOTEPORT=7\0", &fds).unwrap();
        drop(w);
        let mut out = String::new();
        std::fs::File::from(r).read_to_string(&mut out).unwrap();
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
        let said = super::super::status::read_status(&status.unwrap());
        assert_eq!(said, ChildStatus::Started);
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        assert_eq!(lines, ["7", "4"], "{out}");

        let (_, image) = crate::validate::controller(
            (super::super::geteuid(), super::super::getegid(), &[]),
            false,
            c"/nonexistent",
            &[CString::new("x").unwrap()],
        );
        let null = super::super::open_dev_null().unwrap();
        let (pid, status) = fork_exec(&id, &image, b"", &[null.as_raw_fd(); 3]).unwrap();
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
        let said = super::super::status::read_status(&status.unwrap());
        assert_eq!(
            said,
            ChildStatus::Failed {
                step: Step::Exec,
                errno: libc::ENOENT
            }
        );
    }

    #[test]
    fn a_child_on_the_cores_table_copies_only_the_low_part() {
        if !super::super::raw::NATIVE {
            return;
        }
        // A listener's place: high up, as `net::move_high` puts them.
        let high = nix::fcntl::fcntl(
            super::super::open_dev_null().unwrap().as_raw_fd(),
            nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(super::super::net::LISTENER_FD_BASE + 44),
        )
        .unwrap();
        let mut sp = Spawner::new(None);
        sp.set_many_listeners(true);
        for _ in 0..3 {
            let (st, code, out) = run(
                &mut sp,
                c"/bin/sh",
                &["sh", "-c", "ls /proc/self/fd | tr '\\n' ' '"],
            );
            assert_eq!((st, code), (ChildStatus::Started, 0));
            // 0, 1, 2 and ls's handle on the directory.
            assert_eq!(out.split_whitespace().count(), 4, "{out}");
            // The child's closing happened in its own table.
            assert!(nix::fcntl::fcntl(high, nix::fcntl::FcntlArg::F_GETFD).is_ok());
        }
        let (st, code, _) = run(&mut sp, c"/nonexistent", &["x"]);
        assert!(
            matches!(
                st,
                ChildStatus::Failed {
                    step: Step::Exec,
                    ..
                }
            ),
            "{st:?}"
        );
        assert_eq!(code, 127);
        nix::unistd::close(high).unwrap();
    }

    #[test]
    fn a_child_slow_to_exec_holds_its_slot_and_others_get_their_own() {
        if !super::super::raw::NATIVE {
            return;
        }
        let mut sp = Spawner::new(Some("300:/bin/sh"));
        let (id, image) = crate::validate::controller(
            (super::super::geteuid(), super::super::getegid(), &[]),
            false,
            c"/bin/sh",
            &[
                CString::new("sh").unwrap(),
                CString::new("-c").unwrap(),
                CString::new("exit 3").unwrap(),
            ],
        );
        let null = super::super::open_dev_null().unwrap();
        let fds = [null.as_raw_fd(); 3];
        let (slow, _) = sp.exec(&id, &image, b"", &fds).unwrap();
        // Meanwhile, others start and finish, each in another slot.
        let (st, code, _) = run(&mut sp, c"/bin/true", &["true"]);
        assert_eq!((st, code), (ChildStatus::Started, 0));
        let (used, mapped) = sp.slots();
        assert_eq!((used, mapped), (1, 2), "the slow child keeps its slot");
        let st = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(slow), None).unwrap();
        assert_eq!(
            st,
            nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(slow), 3)
        );
        assert_eq!(sp.outcome(slow), ChildStatus::Started);
        assert_eq!(sp.slots().0, 0);
    }
}
