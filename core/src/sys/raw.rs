//! Raw system calls for the child path: no C library in between, so no
//! `errno` is written. A child started with `CLONE_VM` shares the core's
//! memory and its thread's TLS until exec, and the C library's wrappers
//! would write the core's `errno` from it (and some, such as `setresuid`,
//! would run the library's own multi-thread machinery). Each call returns
//! the kernel's result: a value, or `-errno`.
//!
//! x86-64 and aarch64 issue the instruction themselves; elsewhere the
//! C library's `syscall` is used, and the core spawns with `fork` there
//! (see `spawn.rs`), where writing `errno` harms no one.

#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn syscall6(n: libc::c_long, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the caller passes a valid system call and arguments; the
    // kernel clobbers rcx and r11 only.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            in("r9") a[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

#[cfg(target_arch = "aarch64")]
#[inline(always)]
pub unsafe fn syscall6(n: libc::c_long, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the caller passes a valid system call and arguments.
    unsafe {
        std::arch::asm!(
            "svc 0",
            in("x8") n,
            inlateout("x0") a[0] as isize => ret,
            in("x1") a[1],
            in("x2") a[2],
            in("x3") a[3],
            in("x4") a[4],
            in("x5") a[5],
            options(nostack),
        );
    }
    ret
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub unsafe fn syscall6(n: libc::c_long, a: [usize; 6]) -> isize {
    // SAFETY: the caller passes a valid system call and arguments.
    let r = unsafe { libc::syscall(n, a[0], a[1], a[2], a[3], a[4], a[5]) };
    if r == -1 {
        -(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL) as isize)
    } else {
        r as isize
    }
}

/// clone3's arguments (`struct clone_args` of linux/sched.h, its first
/// version: the fields every kernel with clone3 knows).
#[repr(C)]
#[derive(Default)]
pub struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
}

/// Resets every handled signal to its default disposition in the new
/// child (Linux 5.5).
pub const CLONE_CLEAR_SIGHAND: u64 = 0x1_0000_0000;

/// Whether [`clone3`] exists here.
pub const HAS_CLONE3: bool = cfg!(target_arch = "x86_64");

/// `clone3(args)`. The child starts on the stack `args` gives and calls
/// `entry(arg)`, which must never return; the parent gets the child's
/// pid, or `-errno`.
///
/// # Safety
///
/// `args` describes a valid clone (a stack that stays mapped, a child tid
/// word that stays valid), and `entry` leaves only by exec or exit.
#[cfg(target_arch = "x86_64")]
pub unsafe fn clone3(
    args: &CloneArgs,
    entry: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: *mut libc::c_void,
) -> isize {
    let ret: isize;
    // The child returns from the instruction with rax 0 on its own stack
    // (16-byte aligned at its top), every other register as the parent's:
    // it calls entry(arg) from r12 and r13 and never comes back here.
    // SAFETY: as the caller promises; in the parent the kernel clobbers
    // rcx and r11 only.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r13",
            "call r12",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 as isize => ret,
            in("rdi") std::ptr::from_ref(args),
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") entry,
            in("r13") arg,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// Elsewhere: no clone3 (see [`HAS_CLONE3`]).
///
/// # Safety
///
/// None needed: it only fails.
#[cfg(not(target_arch = "x86_64"))]
pub unsafe fn clone3(
    _args: &CloneArgs,
    _entry: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    _arg: *mut libc::c_void,
) -> isize {
    -(libc::ENOSYS as isize)
}

/// Whether the raw calls above bypass the C library (the clone path needs
/// that).
pub const NATIVE: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

/// A system call with up to six arguments (missing ones zero): `Ok(value)`
/// or `Err(errno)`.
///
/// # Safety
///
/// The arguments must be what system call `n` expects (valid pointers
/// where it takes pointers).
#[inline(always)]
pub unsafe fn call(n: libc::c_long, args: &[usize]) -> Result<usize, i32> {
    let mut a = [0usize; 6];
    a[..args.len()].copy_from_slice(args);
    // SAFETY: as the caller promises.
    let r = unsafe { syscall6(n, a) };
    if (-4095..0).contains(&r) {
        Err(-r as i32)
    } else {
        Ok(r as usize)
    }
}
