//! Readiness and status for the service manager (systemd's `sd_notify`
//! protocol): one datagram of `KEY=VALUE` lines to the socket named by
//! `$NOTIFY_SOCKET`, a path or, with a leading `@`, an abstract name.
//! Written by hand: it is a few lines, and libsystemd is not a dependency
//! worth having for them. Without `$NOTIFY_SOCKET` (started by hand, in
//! tests, in one-command mode, whose core gives its children a clean
//! environment) every call does nothing.
#![forbid(unsafe_code)]

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::time::{clock_gettime, ClockId};

/// Where the service manager listens, taken from the environment once.
pub struct Notifier {
    addr: Option<OsString>,
    warned: AtomicBool,
}

impl Notifier {
    /// Takes `$NOTIFY_SOCKET` and removes it from the environment, so that
    /// nothing started later speaks for this process. Call it before any
    /// thread starts: the environment is not safe to change after that.
    pub fn from_env() -> Notifier {
        let addr = std::env::var_os("NOTIFY_SOCKET").filter(|a| !a.is_empty());
        if addr.is_some() {
            std::env::remove_var("NOTIFY_SOCKET");
        }
        Notifier {
            addr,
            warned: AtomicBool::new(false),
        }
    }

    /// A notifier that never sends (tests, a controller started by hand).
    pub fn none() -> Notifier {
        Notifier {
            addr: None,
            warned: AtomicBool::new(false),
        }
    }

    /// Sends `state` (newline-separated `KEY=VALUE` lines). A failure is
    /// logged once: readiness is the service manager's concern, never a
    /// reason to stop serving.
    pub fn send(&self, state: &str) {
        let Some(addr) = &self.addr else {
            return;
        };
        if let Err(e) = notify_to(addr, state) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                log::warn!(
                    "cannot notify the service manager at {}: {e}",
                    addr.to_string_lossy()
                );
            }
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `RELOADING=1`, with the monotonic timestamp newer service managers
    /// ask for; a [`Notifier::ready`] must follow when the reload is done.
    pub fn reloading(&self) {
        let usec = clock_gettime(ClockId::CLOCK_MONOTONIC)
            .map(|t| {
                u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000
                    + u64::try_from(t.tv_nsec()).unwrap_or(0) / 1_000
            })
            .unwrap_or(0);
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading"
        ));
    }

    /// A `STATUS=` line alone.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }
}

/// A status is one line: a newline would start another assignment.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// Sends one datagram holding `state` to `addr` (`/path` or `@abstract`).
pub fn notify_to(addr: &OsStr, state: &str) -> io::Result<()> {
    let bytes = addr.as_bytes();
    let target = match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(addr)?,
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..])?,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a unix socket address (a path or @name)",
            ))
        }
    };
    let sock = UnixDatagram::unbound()?;
    let sent = sock.send_to_addr(state.as_bytes(), &target)?;
    if sent != state.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short datagram"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receive(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn a_path_address_gets_the_whole_state_in_one_datagram() {
        let dir = std::env::temp_dir().join(format!("inetd-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "READY=1\nSTATUS=ok").unwrap();
        assert_eq!(receive(&sock), "READY=1\nSTATUS=ok");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_at_address_is_abstract() {
        let name = format!("inetd-notify-test-{}", std::process::id());
        let sock =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let n = Notifier {
            addr: Some(format!("@{name}").into()),
            warned: AtomicBool::new(false),
        };
        n.ready("start ok\nforged=1");
        assert_eq!(receive(&sock), "READY=1\nSTATUS=start ok forged=1");
        n.reloading();
        let r = receive(&sock);
        assert!(r.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{r}");
        let usec: u64 = r.lines().nth(1).unwrap()["MONOTONIC_USEC=".len()..]
            .parse()
            .unwrap();
        assert!(usec > 0);
    }

    #[test]
    fn other_addresses_and_no_listener_are_errors_not_panics() {
        assert!(notify_to(OsStr::new("vsock:2:1"), "READY=1").is_err());
        assert!(notify_to(OsStr::new("/nonexistent/inetd-notify"), "READY=1").is_err());
        // Without an address nothing is sent and nothing fails.
        Notifier::none().ready("x");
    }
}
