//! `--syslog`: records to the local syslog daemon through the `syslog`
//! crate (RFC 3164 over `/dev/log`), facility daemon, with the priorities
//! of the stderr lines. A send that fails (syslogd restarted) reconnects
//! once; a record that still cannot be sent goes to stderr.
#![forbid(unsafe_code)]

use std::io::Write;
use std::sync::Mutex;

use log::Level;
use syslog::{Facility, Formatter3164, LoggerBackend};

type Logger = syslog::Logger<LoggerBackend, Formatter3164>;

pub struct Syslog {
    ident: &'static str,
    logger: Mutex<Logger>,
}

fn connect(ident: &'static str) -> Result<Logger, String> {
    let f = Formatter3164 {
        facility: Facility::LOG_DAEMON,
        hostname: None,
        process: ident.into(),
        pid: std::process::id(),
    };
    syslog::unix(f).map_err(|e| format!("cannot reach the local syslog (/dev/log): {e}"))
}

fn emit(l: &mut Logger, level: Level, msg: &str) -> bool {
    match level {
        Level::Error => l.err(msg),
        Level::Warn => l.warning(msg),
        Level::Info => l.info(msg),
        Level::Debug | Level::Trace => l.debug(msg),
    }
    .is_ok()
}

impl Syslog {
    pub fn open(ident: &'static str) -> Result<Syslog, String> {
        Ok(Syslog {
            ident,
            logger: Mutex::new(connect(ident)?),
        })
    }
}

/// Sends one record.
pub fn send(s: &Syslog, level: Level, msg: &str) {
    let Ok(mut l) = s.logger.lock() else { return };
    if emit(&mut l, level, msg) {
        return;
    }
    if let Ok(fresh) = connect(s.ident) {
        *l = fresh;
        if emit(&mut l, level, msg) {
            return;
        }
    }
    let line = format!("{}{}: {msg}\n", crate::logger::prefix(level), s.ident);
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
