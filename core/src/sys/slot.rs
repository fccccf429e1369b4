//! A spawn slot: the mapping an exec child starts in, with its guard page,
//! its stack, a header the core and the child share, and everything the
//! child reads, copied in before the clone (see `spawn.rs`).

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

use super::child::{Plan, Report, SharedReport};
use super::status::Step;
use crate::validate::{ExecImage, Identity};

/// The child's stack: the child path needs a few KiB; the rest is margin
/// (pages never touched are never backed).
pub(super) const STACK: usize = 64 * 1024;

#[repr(C)]
pub(super) struct Header {
    /// 1 from the clone; 2 once the child has its own descriptor table
    /// (when it started on the core's); 0 when the kernel cleared it, as
    /// the child exec'd or exited.
    pub(super) tid: AtomicU32,
    /// Nonzero: the child shares the core's descriptor table and first
    /// copies the descriptors below this one.
    pub(super) unshare_below: i32,
    pub(super) report: SharedReport,
    pub(super) plan: Plan,
    pub(super) path: *const libc::c_char,
    pub(super) argv: *const *const libc::c_char,
    pub(super) envp: *const *const libc::c_char,
}

pub(super) struct Slot {
    pub(super) base: *mut u8,
    pub(super) len: usize,
    /// The child using it; 0 when free.
    pub(super) pid: i32,
}

impl Slot {
    pub(super) fn header(&self) -> *mut Header {
        // The header follows the guard page and the stack.
        // SAFETY (of the arithmetic): within the mapping, see `Slot::map`.
        self.base.wrapping_add(page() + STACK).cast()
    }

    pub(super) fn data_len(&self) -> usize {
        self.len - page() - STACK - std::mem::size_of::<Header>()
    }

    /// Maps a slot with room for `data` bytes after the header.
    pub(super) fn map(data: usize) -> io::Result<Slot> {
        let len = round_up(
            page() + STACK + std::mem::size_of::<Header>() + data,
            page(),
        );
        // SAFETY: an anonymous private mapping; no existing memory is
        // touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // The guard page: a stack overflow in the child faults instead of
        // writing over other memory.
        // SAFETY: the first page of the mapping just made.
        if unsafe { libc::mprotect(p, page(), libc::PROT_NONE) } == -1 {
            let e = io::Error::last_os_error();
            // SAFETY: the mapping just made, used by no one.
            unsafe { libc::munmap(p, len) };
            return Err(e);
        }
        Ok(Slot {
            base: p.cast(),
            len,
            pid: 0,
        })
    }

    /// The child has left the slot (exec'd or exited).
    pub(super) fn left(&self) -> bool {
        // SAFETY: the header lies within the mapping, and `tid` is only
        // written atomically (by the core, or by the kernel).
        unsafe { (*self.header()).tid.load(Ordering::Acquire) == 0 }
    }

    /// The failure the child reported, if any; only meaningful once it left.
    pub(super) fn failure(&self) -> Option<(Step, i32)> {
        // SAFETY: as in `left`; the report is written atomically.
        let r = unsafe { &(*self.header()).report };
        let step = r.step.load(Ordering::Acquire);
        (step != 0).then(|| (Step::from_u32(step), r.errno.load(Ordering::Relaxed)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Only free slots are dropped (see `Spawner::release`), and a slot
        // that a starting child may still use is leaked instead.
        // SAFETY: the mapping made in `Slot::map`, no longer used.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

pub(super) fn page() -> usize {
    // SAFETY: sysconf with a valid name.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).ok().filter(|&p| p > 0).unwrap_or(4096)
}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// The data bytes a child of `image` needs (with room for alignment).
pub(super) fn data_size(id: &Identity, image: &ExecImage, conn_env: &[u8]) -> usize {
    let strings: usize = image.path().to_bytes_with_nul().len()
        + image
            .argv()
            .map(|a| a.to_bytes_with_nul().len())
            .sum::<usize>()
        + image
            .env()
            .iter()
            .map(|e| e.to_bytes_with_nul().len())
            .sum::<usize>()
        + conn_env.len();
    let nconn = conn_env.iter().filter(|&&b| b == 0).count();
    let ptrs = (image.argv().len() + 1 + image.env().len() + nconn + 1) * 8;
    let groups = (2 * id.groups().len() + 1) * 4;
    strings + ptrs + groups + 64
}

/// A cursor over a slot's data area.
struct Writer {
    at: *mut u8,
    left: usize,
}

impl Writer {
    /// Reserves `n` bytes aligned to `align`; `None` past the end.
    fn take(&mut self, n: usize, align: usize) -> Option<*mut u8> {
        let pad = self.at.align_offset(align);
        if pad + n > self.left {
            return None;
        }
        let p = self.at.wrapping_add(pad);
        self.at = p.wrapping_add(n);
        self.left -= pad + n;
        Some(p)
    }

    /// Copies `bytes`; where they start.
    fn bytes(&mut self, bytes: &[u8]) -> Option<*const libc::c_char> {
        let p = self.take(bytes.len(), 1)?;
        // SAFETY: `take` reserved `bytes.len()` bytes at `p`, within the
        // slot and apart from `bytes`.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len()) };
        Some(p.cast_const().cast())
    }

    /// A NULL-terminated pointer array of `items`.
    fn ptrs(&mut self, items: &[*const libc::c_char]) -> Option<*const *const libc::c_char> {
        let n = items.len() + 1;
        let p: *mut *const libc::c_char = self.take(n * 8, 8)?.cast();
        for (k, &it) in items
            .iter()
            .chain(std::iter::once(&std::ptr::null()))
            .enumerate()
        {
            // SAFETY: `take` reserved `n` aligned pointers at `p`.
            unsafe { p.add(k).write(it) };
        }
        Some(p.cast_const())
    }
}

/// Most argv and environment entries a child may have (the pointers are
/// gathered on the core's stack before they are copied to the slot).
const MAX_ENTRIES: usize = 512;

/// Writes the header and data of a slot for one child.
///
/// # Safety
///
/// `hdr` is the header of a free slot with `data_len` bytes after it.
pub(super) unsafe fn fill(
    hdr: *mut Header,
    data_len: usize,
    id: &Identity,
    image: &ExecImage,
    conn_env: &[u8],
    fds: &[RawFd],
    delay_ns: u64,
) -> io::Result<()> {
    let too_big = || io::Error::from_raw_os_error(libc::E2BIG);
    let mut w = Writer {
        at: hdr.wrapping_add(1).cast(),
        left: data_len,
    };
    let ng = id.groups().len();
    let groups: *mut libc::gid_t = w.take(ng * 4, 4).ok_or_else(too_big)?.cast();
    // SAFETY: room for `ng` groups was just reserved at `groups`.
    unsafe { std::ptr::copy_nonoverlapping(id.groups().as_ptr(), groups, ng) };
    let got_groups = w.take((ng + 1) * 4, 4).ok_or_else(too_big)?.cast();
    let path = w
        .bytes(image.path().to_bytes_with_nul())
        .ok_or_else(too_big)?;
    let mut list = [std::ptr::null::<libc::c_char>(); MAX_ENTRIES];
    let mut n = 0;
    for a in image.argv() {
        *list.get_mut(n).ok_or_else(too_big)? =
            w.bytes(a.to_bytes_with_nul()).ok_or_else(too_big)?;
        n += 1;
    }
    let argv = w.ptrs(&list[..n]).ok_or_else(too_big)?;
    n = 0;
    for e in image.env() {
        *list.get_mut(n).ok_or_else(too_big)? =
            w.bytes(e.to_bytes_with_nul()).ok_or_else(too_big)?;
        n += 1;
    }
    let conn = w.bytes(conn_env).ok_or_else(too_big)?;
    let mut off = 0;
    for var in conn_env.split_inclusive(|&b| b == 0) {
        *list.get_mut(n).ok_or_else(too_big)? = conn.wrapping_add(off);
        off += var.len();
        n += 1;
    }
    let envp = w.ptrs(&list[..n]).ok_or_else(too_big)?;
    let mut plan = Plan::new(id, fds, got_groups, Report::Shared(std::ptr::null()))?;
    plan.groups = groups;
    plan.delay_ns = delay_ns;
    // SAFETY: `hdr` is the free slot's header; nothing else uses it.
    unsafe {
        hdr.write(Header {
            tid: AtomicU32::new(1),
            unshare_below: 0,
            report: SharedReport {
                step: AtomicU32::new(0),
                errno: AtomicI32::new(0),
            },
            plan,
            path,
            argv,
            envp,
        });
        (*hdr).plan.report = Report::Shared(&(*hdr).report);
    }
    Ok(())
}
