//! The core's code pages: the ones start-up ran are not kept.
//!
//! A process holds (maps, and counts in its resident set) every page of
//! its binary and libraries it has run or read, and, on each such fault,
//! up to 15 neighbours already in the page cache (the kernel's
//! "fault-around", 64 KiB). Much of what the core holds after start-up is
//! start-up's: parsing the command line, the checks of its directories,
//! the capability cut, the C library's own initialisation, and the
//! neighbours of all of it. Once, at the end of start-up, the core drops
//! the page-table entries of its read-only file mappings (`MADV_DONTNEED`:
//! its own text and rodata, the C library's, the loader's); from then on
//! it maps again only what it runs (with the kernel's fault-around, which
//! a process cannot turn off for its mappings). The pages stay in the
//! page cache, shared with every other process that maps them: this
//! lowers what the core holds, not what the system caches.
//!
//! Only mappings that are not writable and hold no private copy of a page
//! (`Anonymous: 0 kB` in `smaps`: the relocated parts, `.data.rel.ro`
//! after `mprotect`, do, and dropping them would lose their relocations)
//! are touched: their pages are exactly the file's, so dropping the
//! entries loses nothing. The core is single-threaded, so no other thread
//! can copy a page of them meanwhile. The kernel unmaps such clean pages
//! itself under memory pressure and maps them again on the next fault:
//! doing it once here adds no new way to fail.

use std::io;

/// Read-only file mappings with no private pages: (start, length).
fn clean_file_mappings(smaps: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if let Some((a, b)) = first.split_once('-') {
            // A mapping's first line: `start-end perms offset dev inode path`.
            let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            else {
                current = None;
                continue;
            };
            let perms = words.next().unwrap_or("");
            let inode = words.nth(2).unwrap_or("0");
            let path = words.next().unwrap_or("");
            let read_only = perms.starts_with('r') && perms.get(1..2) == Some("-");
            current = (read_only && inode != "0" && path.starts_with('/')).then_some((a, b - a));
        } else if first == "Anonymous:" {
            if let Some(m) = current.take() {
                if words.next() == Some("0") {
                    out.push(m);
                }
            }
        }
    }
    out
}

/// See the module's header. Errors are returned for the caller to log:
/// nothing depends on this but the core's resident size.
pub fn drop_code_pages() -> io::Result<()> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    for (start, len) in clean_file_mappings(&smaps) {
        // SAFETY: a whole mapping of the process, read-only and without
        // private pages (see the module's header): nothing is lost.
        let r = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_read_only_file_mappings() {
        let smaps = "\
55d0a0000000-55d0a0010000 r--p 00000000 fd:01 1234   /usr/sbin/inetd-core
Anonymous:             0 kB
55d0a0010000-55d0a0100000 r-xp 00010000 fd:01 1234   /usr/sbin/inetd-core
Anonymous:             0 kB
55d0a0100000-55d0a0108000 r--p 00100000 fd:01 1234   /usr/sbin/inetd-core
Anonymous:            32 kB
55d0a0108000-55d0a0109000 rw-p 00108000 fd:01 1234   /usr/sbin/inetd-core
Anonymous:             4 kB
55d0a1000000-55d0a1100000 rw-p 00000000 00:00 0      [heap]
Anonymous:           100 kB
7f0000000000-7f0000001000 r--p 00000000 00:00 0
Anonymous:             0 kB
7fff00000000-7fff00002000 r-xp 00000000 00:00 0      [vdso]
Anonymous:             0 kB
";
        assert_eq!(
            clean_file_mappings(smaps),
            [(0x55d0a0000000, 0x10000), (0x55d0a0010000, 0xf0000)]
        );
    }

    /// Run for real on the test process: its code still runs after.
    #[test]
    fn the_process_runs_on_after_its_code_pages_are_dropped() {
        drop_code_pages().unwrap();
        let v: Vec<String> = (0..100).map(|i| format!("{i:x}")).collect();
        assert_eq!(v[99], "63");
    }
}
