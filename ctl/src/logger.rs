//! The daemon's logger: one line per record on stderr, with the syslog
//! priority prefix journald understands (`<3>` error, `<4>` warning, `<6>`
//! info, `<7>` debug and trace).
#![forbid(unsafe_code)]

use std::io::Write;

use inetd_protocol::{escape_log, log_safe};
use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLogger {
    prefix: &'static str,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let pri = match record.level() {
            Level::Error => 3,
            Level::Warn => 4,
            Level::Info => 6,
            Level::Debug | Level::Trace => 7,
        };
        // Text from outside is escaped where it is placed in a message;
        // a message that still holds a character a terminal would
        // interpret is escaped whole rather than written raw.
        let msg = record.args().to_string();
        let msg = if log_safe(&msg) {
            msg
        } else {
            escape_log(&msg, usize::MAX).into_owned()
        };
        // One write per line so lines of different threads do not mix.
        let line = format!("<{pri}>{}: {msg}\n", self.prefix);
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Parses `--log-level`.
pub fn parse_level(s: &str) -> Result<LevelFilter, String> {
    match s {
        "error" => Ok(LevelFilter::Error),
        "warn" => Ok(LevelFilter::Warn),
        "info" => Ok(LevelFilter::Info),
        "debug" => Ok(LevelFilter::Debug),
        "trace" => Ok(LevelFilter::Trace),
        _ => Err(format!(
            "invalid log level \"{s}\": expected error, warn, info, debug or trace"
        )),
    }
}

/// Installs the logger once for the process.
pub fn init(prefix: &'static str, level: LevelFilter) {
    if log::set_boxed_logger(Box::new(StderrLogger { prefix })).is_ok() {
        log::set_max_level(level);
    }
}
