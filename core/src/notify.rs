//! Readiness for the service manager (systemd's `sd_notify` protocol): one
//! datagram, `READY=1` and a status line, to the socket named by
//! `$NOTIFY_SOCKET` (a path, or an abstract name after `@`). Sent once, when
//! the core socket listens and the capabilities are cut, so a controller
//! ordered after the core finds it up. Written by hand: it is a few lines.
//! Without `$NOTIFY_SOCKET` (started by hand, in tests) it does nothing.
//! Children never see the variable: they get an environment built from
//! scratch.
#![forbid(unsafe_code)]

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Tells the service manager the core is ready. A failure is logged, never
/// fatal: readiness is the service manager's concern.
pub fn ready() {
    let Some(addr) = std::env::var_os("NOTIFY_SOCKET").filter(|a| !a.is_empty()) else {
        return;
    };
    // The core is single-threaded: changing its environment is safe here.
    std::env::remove_var("NOTIFY_SOCKET");
    let state = "READY=1\nSTATUS=serving";
    if let Err(e) = notify_to(&addr, state) {
        log::warn!(
            "cannot notify the service manager at {}: {e}",
            addr.to_string_lossy()
        );
    }
}

/// Sends one datagram holding `state` to `addr` (`/path` or `@abstract`).
fn notify_to(addr: &OsStr, state: &str) -> io::Result<()> {
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
    if sock.send_to_addr(state.as_bytes(), &target)? != state.len() {
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
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn path_and_abstract_addresses_get_one_datagram() {
        let path = std::env::temp_dir().join(format!("inetd-core-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "READY=1").unwrap();
        assert_eq!(receive(&sock), "READY=1");
        let _ = std::fs::remove_file(&path);

        let name = format!("inetd-core-notify-{}", std::process::id());
        let sock =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "READY=1\nSTATUS=x").unwrap();
        assert_eq!(receive(&sock), "READY=1\nSTATUS=x");
    }

    #[test]
    fn other_addresses_are_errors() {
        assert!(notify_to(OsStr::new("vsock:2:1"), "READY=1").is_err());
        assert!(notify_to(OsStr::new("/nonexistent/inetd-core-notify"), "READY=1").is_err());
    }
}
