//! A minimal `log` backend: one line per record on stderr, with the syslog
//! priority prefix journald understands (`<3>` error, `<4>` warning, `<6>`
//! info, `<7>` debug and trace). No thread, no buffering: each line is one
//! write(2), so lines of the core and of its controller child (which shares
//! the core's stderr) do not interleave.
#![forbid(unsafe_code)]

use std::io::Write;

use inetd_protocol::{escape_log, log_safe};
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
        // Text from outside is escaped where it is placed in a message
        // (labels and paths, once per apply). A message that still holds a
        // character a terminal would interpret (a newline would forge a
        // second record) is escaped whole rather than written raw.
        let msg = r.args().to_string();
        let msg = if log_safe(&msg) {
            msg
        } else {
            escape_log(&msg, usize::MAX).into_owned()
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_prefixes() {
        assert_eq!(prefix(Level::Warn), "<4>");
        assert_eq!(prefix(Level::Trace), "<7>");
    }
}
