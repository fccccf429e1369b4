//! A minimal `log` backend: one line per record on stderr, with the syslog
//! priority prefix journald understands (`<3>` error, `<4>` warning, `<6>`
//! info, `<7>` debug and trace). No thread, no buffering: each line is one
//! write(2), so lines of the core and of its controller child (which shares
//! the core's stderr) do not interleave.
#![forbid(unsafe_code)]

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLog;

pub fn prefix(level: Level) -> &'static str {
    match level {
        Level::Error => "<3>",
        Level::Warn => "<4>",
        Level::Info => "<6>",
        Level::Debug | Level::Trace => "<7>",
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
        // Newlines inside a message would forge a second record: escape them.
        let msg = r.args().to_string().replace('\n', "\\n");
        let line = format!("{}inetd-core: {}\n", prefix(r.level()), msg);
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

static LOGGER: StderrLog = StderrLog;

pub fn init(level: LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Escapes text that came from outside the core (labels, and anything a
/// peer could influence) for a log line: control characters, quotes and
/// backslashes are escaped, and the result is cut at `max` characters.
pub fn escape(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max) + 2);
    for (n, c) in s.chars().enumerate() {
        if n >= max {
            out.push_str("...");
            break;
        }
        out.extend(c.escape_debug());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_control_characters_and_bounds() {
        assert_eq!(escape("a\nb\x1b[2J\"", 100), "a\\nb\\u{1b}[2J\\\"");
        assert_eq!(escape("abcdef", 3), "abc...");
        assert_eq!(prefix(Level::Warn), "<4>");
        assert_eq!(prefix(Level::Trace), "<7>");
    }
}
