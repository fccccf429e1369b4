//! The daemon's logger: one line per record on stderr, with the syslog
//! priority prefix journald understands (`<3>` error, `<4>` warning, `<6>`
//! info, `<7>` debug and trace). With `--syslog`, the local syslog instead
//! (`/dev/log` through the `syslog` crate, facility daemon, the same
//! priorities); a send that fails reconnects once, then goes to stderr.
#![forbid(unsafe_code)]

use std::io::Write;
use std::sync::{Mutex, OnceLock};

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
        if let Some(sys) = SYSLOG.get() {
            if sys.send(record.level(), &msg) {
                return;
            }
        }
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

type SyslogLogger = syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>;

struct Syslog {
    ident: &'static str,
    logger: Mutex<SyslogLogger>,
}

static SYSLOG: OnceLock<Syslog> = OnceLock::new();

fn connect(ident: &'static str) -> Result<SyslogLogger, String> {
    let f = syslog::Formatter3164 {
        facility: syslog::Facility::LOG_DAEMON,
        hostname: None,
        process: ident.into(),
        pid: std::process::id(),
    };
    syslog::unix(f).map_err(|e| format!("cannot reach the local syslog (/dev/log): {e}"))
}

fn emit(l: &mut SyslogLogger, level: Level, msg: &str) -> bool {
    match level {
        Level::Error => l.err(msg),
        Level::Warn => l.warning(msg),
        Level::Info => l.info(msg),
        Level::Debug | Level::Trace => l.debug(msg),
    }
    .is_ok()
}

impl Syslog {
    /// Sends one record; false if it could not, even after reconnecting.
    fn send(&self, level: Level, msg: &str) -> bool {
        let Ok(mut l) = self.logger.lock() else {
            return false;
        };
        if emit(&mut l, level, msg) {
            return true;
        }
        match connect(self.ident) {
            Ok(fresh) => {
                *l = fresh;
                emit(&mut l, level, msg)
            }
            Err(_) => false,
        }
    }
}

/// From now on, records go to the local syslog as `ident`; an error (and
/// stderr stays) if it cannot be reached.
pub fn use_syslog(ident: &'static str) -> Result<(), String> {
    let logger = Mutex::new(connect(ident)?);
    let _ = SYSLOG.set(Syslog { ident, logger });
    Ok(())
}

/// Installs the logger once for the process.
pub fn init(prefix: &'static str, level: LevelFilter) {
    if log::set_boxed_logger(Box::new(StderrLogger { prefix })).is_ok() {
        log::set_max_level(level);
    }
}
