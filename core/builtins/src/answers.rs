//! The answers of chargen, daytime and time (pure, but for the local time).
#![forbid(unsafe_code)]

use crate::clock;

/// Seconds from 1900-01-01 to 1970-01-01 (RFC 868).
const RFC868_EPOCH_OFFSET: i64 = 2_208_988_800;

/// chargen: characters per line, before CRLF (RFC 864).
const CHARGEN_WIDTH: usize = 72;
/// chargen: one line as sent, CRLF included.
pub const CHARGEN_LINE: usize = CHARGEN_WIDTH + 2;
/// chargen: the printable ASCII characters 0x20..=0x7E; the pattern repeats
/// after this many lines.
pub(crate) const CHARGEN_RING: usize = 95;
/// chargen: one full period of the stream (95 lines, 7030 bytes).
pub(crate) const CHARGEN_PERIOD: usize = CHARGEN_RING * CHARGEN_LINE;

/// The RFC 868 answer for `unix_seconds`: seconds since 1900 modulo 2^32,
/// big-endian (the 32-bit field wraps in February 2036).
pub fn time_bytes(unix_seconds: i64) -> [u8; 4] {
    // Truncating to the low 32 bits is the modulo 2^32 RFC 868 implies.
    (unix_seconds.wrapping_add(RFC868_EPOCH_OFFSET) as u32).to_be_bytes()
}

/// The RFC 867 answer for `unix_seconds`: `ctime()` in local time as
/// `"%.24s\r\n"` (26 bytes), or `None` if the local time is unavailable.
pub fn daytime_line(unix_seconds: i64) -> Option<String> {
    clock::local_time(unix_seconds).map(|lt| format!("{}\r\n", lt.ctime24()))
}

/// chargen line `n` (RFC 864): characters `n mod 95` through `n + 71 mod 95`
/// of the printable ASCII ring starting at space, then CRLF.
pub fn chargen_line(n: usize) -> [u8; CHARGEN_LINE] {
    let mut line = [b'\r'; CHARGEN_LINE];
    let start = n % CHARGEN_RING;
    for (i, c) in line.iter_mut().take(CHARGEN_WIDTH).enumerate() {
        // < 95 by the modulo, so the sum stays within 0x20..=0x7E.
        *c = b' ' + ((start + i) % CHARGEN_RING) as u8;
    }
    line[CHARGEN_LINE - 1] = b'\n';
    line
}

/// Two full chargen periods back to back, so that a whole period starting
/// at any offset below [`CHARGEN_PERIOD`] is one contiguous slice.
pub(crate) fn chargen_two_periods() -> Vec<u8> {
    let mut v = Vec::with_capacity(2 * CHARGEN_PERIOD);
    for n in 0..2 * CHARGEN_RING {
        v.extend_from_slice(&chargen_line(n));
    }
    v
}
