//! Local time for the `daytime` builtin: a safe wrapper around
//! `localtime_r(3)` and a `ctime(3)`-style formatter that works from the
//! broken-down fields, so no static libc buffer (`ctime`, `asctime`) is used.
//!
//! The zone is the host's: `TZ` from the process environment if set, else
//! `/etc/localtime`, as libc resolves it. `tzset(3)` runs once per process,
//! on the first conversion (see [`init`]): in a builtin child, after the
//! privilege drop, so the root core never parses a zone file.
//!
//! The only unsafe code of this crate: the C library has the zone rules,
//! and Rust's standard library has no local time.
#![allow(unsafe_code)]

use std::sync::Once;

extern "C" {
    // Not exported by the libc crate for Linux targets; POSIX, in every libc.
    fn tzset();
}

static TZSET: Once = Once::new();

/// Load the local time zone once. Calling it early (before a capability cut or
/// a chroot) makes later conversions independent of file access; calling it
/// again is a no-op.
pub fn init() {
    TZSET.call_once(|| {
        // tzset reads the environment with getenv, which is only unsound
        // against a concurrent setenv; this program never modifies its
        // environment.
        // SAFETY: no arguments; it only updates libc's own zone state (under
        // its internal lock in glibc and musl).
        unsafe { tzset() };
    });
}

/// The broken-down local time, with every field range-checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    /// Full year, e.g. 2025.
    pub year: i64,
    /// 0 = January ... 11 = December.
    pub month: u8,
    /// 1..=31.
    pub mday: u8,
    pub hour: u8,
    pub minute: u8,
    /// 0..=60 (a leap second).
    pub second: u8,
    /// 0 = Sunday ... 6 = Saturday.
    pub wday: u8,
}

/// `unix_seconds` in the local time zone, or `None` if libc cannot convert it
/// (out of `time_t` range or an overflowing year) or returns fields out of
/// range.
pub fn local_time(unix_seconds: i64) -> Option<LocalTime> {
    init();
    let t = libc::time_t::try_from(unix_seconds).ok()?;
    let mut tm = std::mem::MaybeUninit::<libc::tm>::uninit();
    // localtime_r is the reentrant variant: no shared static result buffer.
    // SAFETY: `t` is a valid time_t we own and `tm` points to writable memory
    // of the right type and size; localtime_r writes only through that pointer.
    let result = unsafe { libc::localtime_r(&t, tm.as_mut_ptr()) };
    if result.is_null() {
        return None;
    }
    // SAFETY: localtime_r returned non-null, which means it filled in every
    // field of `*tm` (POSIX); tm_zone is a pointer we never dereference.
    let tm = unsafe { tm.assume_init() };
    let field = |v: libc::c_int, lo: libc::c_int, hi: libc::c_int| -> Option<u8> {
        if (lo..=hi).contains(&v) {
            u8::try_from(v).ok()
        } else {
            None
        }
    };
    Some(LocalTime {
        year: i64::from(tm.tm_year) + 1900,
        month: field(tm.tm_mon, 0, 11)?,
        mday: field(tm.tm_mday, 1, 31)?,
        hour: field(tm.tm_hour, 0, 23)?,
        minute: field(tm.tm_min, 0, 59)?,
        second: field(tm.tm_sec, 0, 60)?,
        wday: field(tm.tm_wday, 0, 6)?,
    })
}

const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

impl LocalTime {
    /// What `printf("%.24s", ctime(&t))` prints: `Wed Nov 26 06:27:00 2025`,
    /// the day of the month padded with a space (`Sun Nov  2 ...`). As with
    /// `%.24s`, a year of more than four digits is cut off at 24 characters.
    pub fn ctime24(&self) -> String {
        // Indexing cannot fail: local_time checked wday <= 6 and month <= 11.
        let day = DAYS.get(usize::from(self.wday)).copied().unwrap_or("???");
        let month = MONTHS
            .get(usize::from(self.month))
            .copied()
            .unwrap_or("???");
        let mut s = format!(
            "{} {} {:>2} {:02}:{:02}:{:02} {}",
            day, month, self.mday, self.hour, self.minute, self.second, self.year
        );
        s.truncate(24);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// The same instant formatted by date(1), which goes through the C
    /// library's strftime with the same zone rules: an independent check of
    /// our own field formatting.
    fn date_says(t: i64) -> Option<String> {
        let out = Command::new("date")
            .env("LC_ALL", "C")
            .arg("-d")
            .arg(format!("@{t}"))
            .arg("+%a %b %e %H:%M:%S %Y")
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        Some(String::from_utf8(out.stdout).ok()?.trim_end().to_owned())
    }

    #[test]
    fn ctime24_matches_date_for_fixed_instants() {
        // 0, a single-digit day (2025-11-02), 2025-11-26, a leap day, the
        // RFC 868 wrap instant.
        for t in [
            0_i64,
            1_762_056_000,
            1_764_138_420,
            1_709_208_000,
            2_085_978_496,
        ] {
            let ours = local_time(t).expect("local_time").ctime24();
            assert_eq!(ours.len(), 24, "{ours:?}");
            match date_says(t) {
                Some(theirs) => assert_eq!(ours, theirs, "t = {t}"),
                None => eprintln!("skipping the date(1) comparison: date -d is not available"),
            }
        }
    }

    #[test]
    fn ctime24_pads_the_day_with_a_space() {
        let lt = LocalTime {
            year: 2025,
            month: 10,
            mday: 2,
            hour: 6,
            minute: 7,
            second: 8,
            wday: 0,
        };
        assert_eq!(lt.ctime24(), "Sun Nov  2 06:07:08 2025");
    }

    #[test]
    fn ctime24_cuts_a_long_year_like_percent_24s() {
        let lt = LocalTime {
            year: 123_456,
            month: 0,
            mday: 10,
            hour: 0,
            minute: 0,
            second: 0,
            wday: 1,
        };
        assert_eq!(lt.ctime24(), "Mon Jan 10 00:00:00 1234");
    }

    #[test]
    fn local_time_fields_are_in_range_now() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        let lt = local_time(i64::try_from(now).expect("fits")).expect("local_time");
        assert!(lt.year >= 2024);
    }
}
