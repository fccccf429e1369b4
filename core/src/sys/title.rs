//! Names of builtin children, as `ps`, `top` and `pgrep` show them. A
//! builtin child is a fork of the core that never execs, so without this
//! it would show as `inetd-core --core-socket ...` and `pgrep -x
//! inetd-core` would find every chargen client's process too.
//!
//! Two places are set: the kernel's short name (`prctl(PR_SET_NAME)`,
//! `comm`, what `pgrep -x` and `top` match), and the command line (what
//! `ps -ef` shows), by writing over the argument area the kernel gave the
//! core at exec, as `setproctitle` does: the name, then NULs to the end.

use std::ffi::CStr;

/// Where the kernel keeps this process's arguments (`arg_start`,
/// `arg_end` of `/proc/self/stat`), read once in the core before any fork.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgArea {
    start: usize,
    end: usize,
}

impl ArgArea {
    /// This process's argument area, if `/proc` tells it.
    pub fn of_self() -> Option<ArgArea> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        ArgArea::parse(&stat)
    }

    /// Fields 48 and 49 of a `stat` line (counted after the command name,
    /// which may hold spaces and parentheses, so from its last `)`).
    fn parse(stat: &str) -> Option<ArgArea> {
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut fields = rest.split_whitespace().skip(48 - 3);
        let start = fields.next()?.parse().ok()?;
        let end = fields.next()?.parse().ok()?;
        (start != 0 && end > start).then_some(ArgArea { start, end })
    }
}

/// Names this process `name` (at most 15 bytes are kept in `comm`) and,
/// given the area, writes `name` over its command line. Only for a forked
/// builtin child, which never returns into the core's code and never reads
/// its arguments again.
pub fn set(name: &CStr, area: Option<ArgArea>) {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string, which `name` is.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0) };
    let Some(area) = area else { return };
    let bytes = name.to_bytes();
    let len = area.end - area.start;
    // [start, end) is this process's argument area as the kernel reports
    // it, on the initial stack and inherited across fork. std copied what
    // it needed from argv at start; the builtin never calls `env::args`.
    // SAFETY: the area is mapped and writable, and nothing else in this
    // single-threaded child reads it while the slice lives.
    let area = unsafe { std::slice::from_raw_parts_mut(area.start as *mut u8, len) };
    let n = bytes.len().min(len.saturating_sub(1));
    area[..n].copy_from_slice(&bytes[..n]);
    area[n..].fill(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_an_odd_command_name() {
        let mut line = String::from("42 (a) b) (c) S");
        // Fields 4 to 47, then arg_start and arg_end, then more.
        for i in 4..=47 {
            line.push_str(&format!(" {i}"));
        }
        line.push_str(" 140000 140100 140100 140200 0\n");
        assert_eq!(
            ArgArea::parse(&line),
            Some(ArgArea {
                start: 140000,
                end: 140100
            })
        );
        assert_eq!(ArgArea::parse("42 (x) S 1 2"), None);
        let me = ArgArea::of_self().expect("this process's arguments");
        assert!(me.end > me.start);
    }
}
