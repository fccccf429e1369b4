//! A minimal `log` backend: one line per record on stderr, with the syslog
//! priority prefix journald understands (`<3>` error, `<4>` warning, `<6>`
//! info, `<7>` debug and trace). No thread.
//!
//! Each line is formatted on the stack (no allocation for a connection's
//! lines) and appended to one buffer that is kept, written out together: a
//! warning or an error at once (with whatever came before it), info and
//! debug lines when the buffer holds 2 KiB, and otherwise at the end of
//! each turn of the event loop, before it waits ([`flush`]), and when the
//! core exits; during start-up, before the loop runs, each line at once. So a line is out before the core waits for anything else,
//! and under load one `write` carries the lines of many connections
//! instead of two writes per connection. Each write holds whole lines and
//! stays under `PIPE_BUF` (4 KiB), so the core's lines and those of its
//! controller child (which shares the core's stderr) do not interleave
//! within a line.
//!
//! With `--syslog`, records go to the local syslog instead (`/dev/log`,
//! facility daemon, ident `inetd-core`, the same priorities), through the
//! `syslog` crate; messages are escaped as for stderr.
#![forbid(unsafe_code)]

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use inetd_protocol::{escape_log, log_safe};
use std::fmt::Arguments;
use std::sync::OnceLock;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Written out once the buffer holds this much.
const FLUSH_AT: usize = 2048;

/// Never more in one write (`PIPE_BUF`): a longer line is written alone.
const WRITE_MAX: usize = 4096;

struct Buffer {
    bytes: Vec<u8>,
}

static BUF: Mutex<Buffer> = Mutex::new(Buffer { bytes: Vec::new() });

/// Lines are written a turn at a time only once the event loop runs;
/// before (start-up), each as it comes.
static PER_TURN: AtomicBool = AtomicBool::new(false);

/// From now on the event loop calls [`flush`] at the end of each turn.
pub fn per_turn() {
    PER_TURN.store(true, Ordering::Relaxed);
}

impl Buffer {
    fn flush(&mut self) {
        if !self.bytes.is_empty() {
            write_out(&self.bytes);
            self.bytes.clear();
        }
    }
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

/// Writes out every buffered line: at the end of each turn of the event
/// loop, and before the core exits.
pub fn flush() {
    LOGGER.flush();
}

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
        if let Some(sys) = SYSLOG.get() {
            crate::syslog::send(sys, r.level(), &safe_message(r.args()));
            return;
        }
        let Ok(mut b) = BUF.lock() else {
            return;
        };
        let mut buf = [0u8; LINE_BUF];
        match format_line(&mut buf, r.level(), r.args()) {
            Some(line) => b.bytes.extend_from_slice(line),
            None => b
                .bytes
                .extend_from_slice(slow_line(r.level(), r.args()).as_bytes()),
        }
        if r.level() <= Level::Warn
            || b.bytes.len() >= FLUSH_AT
            || !PER_TURN.load(Ordering::Relaxed)
        {
            b.flush();
        }
    }

    fn flush(&self) {
        if let Ok(mut b) = BUF.lock() {
            b.flush();
        }
    }
}

/// Room for one line on the stack: a connection's line (a label cut for the
/// log, and a peer) fits,
/// so the per-connection lines are formatted without allocating.
const LINE_BUF: usize = 2048;

const TAG: &str = "inetd-core: ";

/// `<N>inetd-core: MESSAGE\n` formatted into `buf`; `None` if it does not
/// fit or the message holds a character a terminal would interpret (the
/// slow path escapes it).
fn format_line<'a>(buf: &'a mut [u8], level: Level, args: &Arguments<'_>) -> Option<&'a [u8]> {
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    write!(cur, "{}{TAG}", prefix(level)).ok()?;
    let start = usize::try_from(cur.position()).ok()?;
    write!(cur, "{args}").ok()?;
    let end = usize::try_from(cur.position()).ok()?;
    cur.write_all(b"\n").ok()?;
    let msg = std::str::from_utf8(&buf[start..end]).ok()?;
    if !log_safe(msg) {
        return None;
    }
    Some(&buf[..=end])
}

/// The line for a message that does not fit the stack buffer or must be
/// escaped: text from outside is escaped where it is placed in a message
/// (labels and paths, once per apply), and a message that still holds a
/// character a terminal would interpret (a newline would forge a second
/// record) is escaped whole rather than written raw.
fn slow_line(level: Level, args: &Arguments<'_>) -> String {
    format!("{}{TAG}{}\n", prefix(level), safe_message(args))
}

/// The message, escaped whole if it still holds a character a terminal
/// would interpret (stderr's slow path and syslog records alike).
fn safe_message(args: &Arguments<'_>) -> String {
    let msg = args.to_string();
    if log_safe(&msg) {
        msg
    } else {
        escape_log(&msg, usize::MAX).into_owned()
    }
}

static LOGGER: StderrLog = StderrLog;

/// The syslog connection, with `--syslog`.
static SYSLOG: OnceLock<crate::syslog::Syslog> = OnceLock::new();

/// Installs the logger; with `syslog`, on the local syslog if it can be
/// reached (else on stderr, saying so).
pub fn init(level: LevelFilter, syslog: bool) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
    if syslog {
        match crate::syslog::Syslog::open("inetd-core") {
            Ok(s) => {
                let _ = SYSLOG.set(s);
            }
            Err(e) => log::warn!("--syslog: {e}; logging to stderr"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(level: Level, args: Arguments<'_>) -> String {
        let mut buf = [0u8; LINE_BUF];
        match format_line(&mut buf, level, &args) {
            Some(l) => String::from_utf8(l.to_vec()).unwrap(),
            None => slow_line(level, &args),
        }
    }

    #[test]
    fn lines_fit_the_stack_or_take_the_slow_path_escaped() {
        let mut buf = [0u8; LINE_BUF];
        let label = "echo tcp4 /etc/inetd.conf:12 nobody:nogroup";
        let fast = format_line(&mut buf, Level::Info, &format_args!("{label}: connection"));
        assert_eq!(
            fast,
            Some(&b"<6>inetd-core: echo tcp4 /etc/inetd.conf:12 nobody:nogroup: connection\n"[..])
        );
        let long = "x".repeat(LINE_BUF * 2);
        assert_eq!(
            format_line(&mut buf, Level::Info, &format_args!("{long}")),
            None
        );
        assert_eq!(
            line(Level::Warn, format_args!("{long}")).len(),
            long.len() + 16
        );
        let forged = line(Level::Info, format_args!("a\n<3>inetd-core: forged"));
        assert_eq!(forged, "<6>inetd-core: a\\n<3>inetd-core: forged\n");
    }

    #[test]
    fn a_connection_line_is_formatted_without_allocating() {
        let peer = crate::peer::Peer::Inet {
            peer: "[::ffff:192.0.2.7]:50412".parse().unwrap(),
            local: "127.0.0.1:79".parse().unwrap(),
        };
        let label = "finger tcp4 /etc/inetd.conf:25 nobody:nogroup";
        let pid = 4242;
        let mut buf = [0u8; LINE_BUF];
        let before = crate::sys::counting::allocations();
        let line = format_line(
            &mut buf,
            Level::Info,
            &format_args!("{label}: connection from {peer}, pid {pid}"),
        )
        .map(<[u8]>::len);
        let allocated = crate::sys::counting::allocations() - before;
        assert_eq!(allocated, 0, "the connection line allocated");
        let want = "<6>inetd-core: finger tcp4 /etc/inetd.conf:25 nobody:nogroup: connection from 192.0.2.7:50412, pid 4242\n";
        assert_eq!(line, Some(want.len()));
        assert_eq!(&buf[..want.len()], want.as_bytes());
        // The counter counts: the slow path allocates.
        let before = crate::sys::counting::allocations();
        let _ = slow_line(Level::Info, &format_args!("{label}"));
        assert!(crate::sys::counting::allocations() > before);
    }

    #[test]
    fn priority_prefixes() {
        assert_eq!(prefix(Level::Warn), "<4>");
        assert_eq!(prefix(Level::Trace), "<7>");
    }
}
