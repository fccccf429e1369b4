//! Readiness for the service manager (`Type=notify`): the real binaries
//! started with `NOTIFY_SOCKET` naming an abstract datagram socket of the
//! test, as systemd does. The core says `READY=1` once its core socket
//! accepts; the controller once the first apply is done, and
//! `RELOADING=1` ... `READY=1` around every reload, `STOPPING=1` on
//! SIGTERM. As root the controller runs as user `inetd` (setpriv), as the
//! packaged unit runs it; otherwise everything runs as the invoking user.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use inetd_tests::{bin_path, free_port, is_root, user, TempDir};

/// An abstract datagram socket standing in for systemd's notify socket.
struct NotifySocket {
    sock: UnixDatagram,
    name: String,
}

impl NotifySocket {
    fn new(tag: &str) -> NotifySocket {
        let name = format!("inetd-tests-notify-{tag}-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        NotifySocket {
            sock,
            name: format!("@{name}"),
        }
    }

    /// The next datagram, or a panic naming what was awaited.
    fn next(&self, what: &str) -> String {
        let mut buf = [0u8; 4096];
        let n = self
            .sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification ({what}): {e}"));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

/// A child killed and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(p: &Proc, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(p.0.id()).unwrap());
    nix::sys::signal::kill(pid, sig).unwrap();
}

fn echo_answers(port: u16) -> bool {
    let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    if c.write_all(b"ping\n").is_err() || c.shutdown(std::net::Shutdown::Write).is_err() {
        return false;
    }
    let mut got = String::new();
    let _ = c.read_to_string(&mut got);
    got == "ping\n"
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("inetd.conf");
    let tmp = dir.join(".inetd.conf.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&tmp, &p).unwrap();
    p
}

#[test]
fn core_and_controller_tell_the_service_manager_when_they_are_ready_and_reloading() {
    let dir = TempDir::new("notify");
    let control_dir = dir.join("control");
    std::fs::create_dir(&control_dir).unwrap();
    let controller_user = if is_root() {
        let u = user("inetd").expect("user inetd (made by .ci/run)");
        nix::unistd::chown(
            &control_dir,
            Some(nix::unistd::Uid::from_raw(u.uid)),
            Some(nix::unistd::Gid::from_raw(u.gid)),
        )
        .unwrap();
        Some(u)
    } else {
        None
    };
    let core_sock = dir.join("core.sock");
    let control = control_dir.join("control.sock");

    // The core: READY=1 comes when its socket already accepts.
    let core_notify = NotifySocket::new("core");
    let core = Proc(
        Command::new(bin_path("inetd-core"))
            .arg("--core-socket")
            .arg(&core_sock)
            .env("NOTIFY_SOCKET", &core_notify.name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("core.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let msg = core_notify.next("the core's READY=1");
    assert!(msg.starts_with("READY=1\n"), "{msg:?}");
    assert!(msg.contains("\nSTATUS="), "{msg:?}");
    assert!(
        UnixStream::connect(&core_sock).is_ok(),
        "the core said READY=1 before its socket accepted"
    );

    // The controller: READY=1 only once the configuration is applied.
    let port = free_port();
    let config = write_config(
        dir.path(),
        &format!("127.0.0.1:{port} stream tcp4 nowait nobody /bin/cat cat\n"),
    );
    let ctl_notify = NotifySocket::new("controller");
    let mut cmd = match &controller_user {
        Some(u) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={}", u.uid))
                .arg(format!("--regid={}", u.gid))
                .arg("--init-groups")
                .arg("--")
                .arg(bin_path("inetd-controller"));
            c
        }
        None => Command::new(bin_path("inetd-controller")),
    };
    let controller = Proc(
        cmd.arg("--core-socket")
            .arg(&core_sock)
            .arg("--control-socket")
            .arg(&control)
            .arg("--config")
            .arg(&config)
            .env("NOTIFY_SOCKET", &ctl_notify.name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("controller.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let msg = ctl_notify.next("the controller's READY=1");
    assert!(msg.starts_with("READY=1\nSTATUS=start: ok"), "{msg:?}");
    assert!(
        echo_answers(port),
        "the controller said READY=1 before its first apply was done"
    );

    // A reload by inetctl: RELOADING=1 (with the monotonic time), then
    // READY=1 with the outcome.
    let port2 = free_port();
    write_config(
        dir.path(),
        &format!(
            "127.0.0.1:{port} stream tcp4 nowait nobody /bin/cat cat\n\
             127.0.0.1:{port2} stream tcp4 nowait nobody /bin/cat cat\n"
        ),
    );
    let out = Command::new(bin_path("inetctl"))
        .arg("--socket")
        .arg(&control)
        .arg("reload")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let msg = ctl_notify.next("RELOADING=1 for inetctl reload");
    assert!(msg.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{msg:?}");
    let msg = ctl_notify.next("READY=1 after inetctl reload");
    assert!(msg.starts_with("READY=1\nSTATUS=reload: ok"), "{msg:?}");
    assert!(msg.contains("2 listeners"), "{msg:?}");
    assert!(echo_answers(port2));

    // SIGHUP is a reload too; a rejected one still ends with READY=1.
    write_config(dir.path(), "this is not an entry\n");
    signal(&controller, nix::sys::signal::Signal::SIGHUP);
    let msg = ctl_notify.next("RELOADING=1 for SIGHUP");
    assert!(msg.starts_with("RELOADING=1\n"), "{msg:?}");
    let msg = ctl_notify.next("READY=1 after SIGHUP");
    assert!(
        msg.starts_with("READY=1\nSTATUS=reload: rejected"),
        "{msg:?}"
    );
    assert!(echo_answers(port) && echo_answers(port2));

    signal(&controller, nix::sys::signal::Signal::SIGTERM);
    let msg = ctl_notify.next("STOPPING=1");
    assert_eq!(msg, "STOPPING=1");
    drop(controller);
    drop(core);
}
