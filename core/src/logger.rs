//! A minimal `log` backend: one line per record on stderr, with the syslog
//! priority prefix journald understands (`<3>` error, `<4>` warning, `<6>`
//! info, `<7>` debug and trace). No thread.
//!
//! Lines are formatted into one buffer that is kept, so a record allocates
//! nothing, and written out together: a warning or an error at once (with
//! whatever came before it), info and debug lines when the buffer holds
//! 2 KiB, and otherwise at the end of each turn of the event loop, before
//! it waits ([`flush`]), and when the core exits. So a line is out before
//! the core waits for anything else, and under load one `write` carries the
//! lines of many connections instead of two writes per connection. Each
//! write holds whole lines and stays under `PIPE_BUF` (4 KiB), so the
//! core's lines and those of its controller child (which shares the core's
//! stderr) do not interleave within a line.
#![forbid(unsafe_code)]

use std::io::Write;
use std::sync::Mutex;

use inetd_protocol::{escape_log, log_safe};
use log::{Level, LevelFilter, Log, Metadata, Record};

/// Written out once the buffer holds this much.
const FLUSH_AT: usize = 2048;

/// Never more in one write (`PIPE_BUF`): a longer line is written alone.
const WRITE_MAX: usize = 4096;

struct Buffer {
    bytes: Vec<u8>,
}

static BUF: Mutex<Buffer> = Mutex::new(Buffer { bytes: Vec::new() });

struct StderrLog;

pub fn prefix(level: Level) -> &'static str {
    match level {
        Level::Error => "<3>",
        Level::Warn => "<4>",
        Level::Info => "<6>",
        Level::Debug | Level::Trace => "<7>",
    }
}

/// Appends one record's line to `out`. Text from outside is escaped where
/// it is placed in a message (labels and paths, once per apply). A message
/// that still holds a character a terminal would interpret (a newline
/// would forge a second record) is escaped whole rather than written raw.
fn format_line(out: &mut Vec<u8>, level: Level, args: &std::fmt::Arguments<'_>) {
    let start = out.len();
    out.extend_from_slice(prefix(level).as_bytes());
    out.extend_from_slice(b"inetd-core: ");
    let msg_at = out.len();
    if write!(out, "{args}").is_err() {
        out.truncate(start);
        return;
    }
    let safe = std::str::from_utf8(&out[msg_at..]).is_ok_and(log_safe);
    if !safe {
        let msg = String::from_utf8_lossy(&out[msg_at..]).into_owned();
        out.truncate(msg_at);
        out.extend_from_slice(escape_log(&msg, usize::MAX).as_bytes());
    }
    out.push(b'\n');
}

/// Writes out `bytes` (whole lines) in writes of at most [`WRITE_MAX`]
/// bytes, each ending at a line's end; a failed write is dropped: there is
/// nowhere to report it.
fn write_out(bytes: &[u8]) {
    let mut err = std::io::stderr().lock();
    let mut rest = bytes;
    while !rest.is_empty() {
        let cut = if rest.len() <= WRITE_MAX {
            rest.len()
        } else {
            match rest[..WRITE_MAX].iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None => rest
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(rest.len(), |i| i + 1),
            }
        };
        let _ = err.write_all(&rest[..cut]);
        rest = &rest[cut..];
    }
}

impl Buffer {
    fn flush(&mut self) {
        if !self.bytes.is_empty() {
            write_out(&self.bytes);
            self.bytes.clear();
        }
    }
}

impl Log for StderrLog {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let Ok(mut b) = BUF.lock() else {
            return;
        };
        format_line(&mut b.bytes, r.level(), r.args());
        if r.level() <= Level::Warn || b.bytes.len() >= FLUSH_AT {
            b.flush();
        }
    }

    fn flush(&self) {
        if let Ok(mut b) = BUF.lock() {
            b.flush();
        }
    }
}

static LOGGER: StderrLog = StderrLog;

pub fn init(level: LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Writes out every buffered line: at the end of each turn of the event
/// loop, and before the core exits.
pub fn flush() {
    LOGGER.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_prefixes() {
        assert_eq!(prefix(Level::Warn), "<4>");
        assert_eq!(prefix(Level::Trace), "<7>");
    }

    #[test]
    fn a_line_is_formatted_and_escaped_in_place() {
        let mut out = b"<6>inetd-core: before\n".to_vec();
        let cap = {
            out.reserve(256);
            out.capacity()
        };
        format_line(
            &mut out,
            Level::Info,
            &format_args!("accept peer={}", "1.2.3.4:5"),
        );
        format_line(&mut out, Level::Error, &format_args!("x{}y", "\nforged"));
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "<6>inetd-core: before\n<6>inetd-core: accept peer=1.2.3.4:5\n<3>inetd-core: x\\nforgedy\n"
        );
        assert_eq!(out.capacity(), cap, "formatted into the buffer kept");
    }
}
