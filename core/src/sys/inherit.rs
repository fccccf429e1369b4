//! What a child gets back of the core's own start (the child contract):
//! the resource limits the core was started with, not the ones it raised
//! for itself, and whether it joins a fresh session keyring. Both are
//! settled once at start, before the poll loop, into a `'static` value
//! that the child path reads: nothing is computed or allocated for them
//! between fork and exec.

use std::io;
use std::sync::OnceLock;

/// Every resource limit Linux has: RLIMIT_CPU (0) to RLIMIT_RTTIME (15).
const RESOURCES: std::ops::RangeInclusive<libc::__rlimit_resource_t> = 0..=libc::RLIMIT_RTTIME;
const COUNT: usize = libc::RLIMIT_RTTIME as usize + 1;

const UNSET: libc::rlimit = libc::rlimit {
    rlim_cur: 0,
    rlim_max: 0,
};

fn getrlimit(res: libc::__rlimit_resource_t) -> io::Result<libc::rlimit> {
    let mut rl = UNSET;
    // SAFETY: a valid out-pointer to an rlimit.
    super::cvt(unsafe { libc::getrlimit(res, &mut rl) })?;
    Ok(rl)
}

fn same(a: &libc::rlimit, b: &libc::rlimit) -> bool {
    a.rlim_cur == b.rlim_cur && a.rlim_max == b.rlim_max
}

/// The core's resource limits as it was started with them: recorded
/// before it raises any. A limit that cannot be read is left out (the
/// child then keeps the core's, which the core did not change either).
pub struct StartLimits([Option<libc::rlimit>; COUNT]);

impl StartLimits {
    pub fn record() -> StartLimits {
        let mut out = [None; COUNT];
        for (res, slot) in RESOURCES.zip(&mut out) {
            *slot = getrlimit(res).ok();
        }
        StartLimits(out)
    }
}

/// What every child is given back, settled at start.
pub(super) struct ForChild {
    /// The start values of the limits the core changed since, `n` used.
    limits: [(libc::__rlimit_resource_t, libc::rlimit); COUNT],
    n: usize,
    join_keyring: bool,
}

impl ForChild {
    pub(super) fn limits(&self) -> &[(libc::__rlimit_resource_t, libc::rlimit)] {
        &self.limits[..self.n]
    }

    pub(super) fn join_keyring(&self) -> bool {
        self.join_keyring
    }
}

static FOR_CHILD: OnceLock<ForChild> = OnceLock::new();

/// Before [`settle`] (the unit tests of the child path): nothing to give.
static NOTHING: ForChild = ForChild {
    limits: [(0, UNSET); COUNT],
    n: 0,
    join_keyring: false,
};

/// What children are given, for the child path (before fork).
pub(super) fn for_child() -> &'static ForChild {
    FOR_CHILD.get().unwrap_or(&NOTHING)
}

/// Settles what every child is given: the start value of each limit the
/// core has changed since `start` was recorded, and whether a child joins
/// a fresh session keyring. Called once, at the end of start-up, after the
/// core has raised what it raises.
pub fn settle(start: &StartLimits, join_keyring: bool) {
    let mut out = ForChild {
        limits: NOTHING.limits,
        n: 0,
        join_keyring,
    };
    for (res, was) in RESOURCES.zip(&start.0) {
        let Some(was) = was else { continue };
        if getrlimit(res).is_ok_and(|now| same(&now, was)) {
            continue;
        }
        out.limits[out.n] = (res, *was);
        out.n += 1;
    }
    let _ = FOR_CHILD.set(out);
}

/// Whether the kernel refuses keyrings to the core (a seccomp filter, or a
/// kernel built without them): the error of a `keyctl` call that changes
/// nothing, if it is a refusal (see [`is_refusal`]). Any other answer
/// means keyrings work: asking for a thread keyring the core does not have
/// gives ENOKEY.
pub fn keyrings_refused() -> Option<io::Error> {
    // GET_KEYRING_ID(id, create = 0): looks up, creates nothing.
    let thread = libc::c_long::from(libc::KEY_SPEC_THREAD_KEYRING);
    keyctl(libc::KEYCTL_GET_KEYRING_ID, thread, 0)
        .err()
        .filter(is_refusal)
}

/// Joins a fresh anonymous session keyring (the calling process only).
/// Async-signal-safe: the child path calls it between fork and exec.
pub fn join_session_keyring() -> io::Result<()> {
    // JOIN_SESSION_KEYRING(name): a null name asks for a new anonymous
    // keyring.
    keyctl(libc::KEYCTL_JOIN_SESSION_KEYRING, 0, 0)
}

/// ENOSYS or EPERM from `keyctl`: what a seccomp filter (or a kernel
/// without keyrings) answers.
pub fn is_refusal(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM))
}

fn keyctl(op: u32, arg2: libc::c_long, arg3: libc::c_long) -> io::Result<()> {
    // SAFETY: only the two operations above reach here, with integer
    // arguments; the one that could be a pointer (JOIN's name) is null.
    let r = unsafe { libc::syscall(libc::SYS_keyctl, op, arg2, arg3) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
