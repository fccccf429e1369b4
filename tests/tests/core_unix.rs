//! Unix-domain listeners and the filesystem: unsafe directories and
//! symlinks are refused at every bind (after the core checked its
//! `--unix-dir`s at start), only stale sockets are unlinked, the socket is
//! 0666, the child sees `PROTO=UNIX` and its peer's credentials, and the
//! file goes away with the listener. `unixdir.rs` has what a hostile
//! controller may ask for.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use inetd_protocol::Outcome;
use inetd_tests::*;

fn not_applied(o: &Outcome) -> bool {
    matches!(o, Outcome::Rejected { .. } | Outcome::Failed { .. })
}

fn subdir(parent: &TempDir, name: &str, mode: u32) -> std::path::PathBuf {
    let d = parent.join(name);
    std::fs::create_dir(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
    d
}

fn connect_unix(p: &Path) -> UnixStream {
    let s = UnixStream::connect(p).unwrap_or_else(|e| panic!("connect {}: {e}", p.display()));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// A core whose `--unix-dir`s are `dirs`.
fn core_for(dirs: &[&Path]) -> Core {
    let args = dirs
        .iter()
        .flat_map(|d| ["--unix-dir".to_string(), d.display().to_string()])
        .collect();
    Core::start_with(CoreOptions {
        args,
        ..CoreOptions::default()
    })
}

#[test]
fn unix_listener_in_a_writable_directory_is_refused() {
    let dir = TempDir::secure("unix-w");
    let other_w = subdir(&dir, "o", 0o755);
    let group_w = subdir(&dir, "g", 0o755);
    let core = core_for(&[&other_w, &group_w]);
    // Made writable after the core checked them at start: every bind
    // checks again.
    std::fs::set_permissions(&other_w, std::fs::Permissions::from_mode(0o757)).unwrap();
    std::fs::set_permissions(&group_w, std::fs::Permissions::from_mode(0o775)).unwrap();
    let port = free_port();
    let r = core.apply(vec![
        unix_stream(&other_w.join("s.sock")),
        unix_stream(&group_w.join("s.sock")),
        tcp4(port),
    ]);
    for i in 0..2 {
        assert!(
            matches!(&r.outcomes[i], Outcome::Rejected { reason } if reason.contains("writable")),
            "listener {i}: {:?}",
            r.outcomes[i]
        );
    }
    assert_eq!(r.outcomes[2], Outcome::Added);
    assert!(!other_w.join("s.sock").exists());
    assert!(!group_w.join("s.sock").exists());
}

#[test]
fn unix_listener_in_a_directory_of_another_user_is_refused() {
    require_root!("a directory owned by nobody");
    let dir = TempDir::secure("unix-o");
    let theirs = subdir(&dir, "theirs", 0o755);
    let core = core_for(&[&theirs]);
    nix::unistd::chown(
        &theirs,
        Some(nix::unistd::Uid::from_raw(65534)),
        Some(nix::unistd::Gid::from_raw(65534)),
    )
    .unwrap();
    let r = core.apply(vec![unix_stream(&theirs.join("s.sock"))]);
    assert!(
        matches!(&r.outcomes[0], Outcome::Rejected { reason } if reason.contains("owned by uid 65534")),
        "{:?}",
        r.outcomes[0]
    );
    assert!(!theirs.join("s.sock").exists());
}

#[test]
fn unix_listener_through_a_symlink_is_refused() {
    let dir = TempDir::secure("unix-l");
    let real = subdir(&dir, "real", 0o755);
    let sub = subdir(&dir, "sub", 0o755);
    let core = core_for(&[dir.path(), &sub]);
    // After start, `sub` becomes a symlink to a directory just like it.
    let moved = dir.join("moved");
    std::fs::rename(&sub, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &sub).unwrap();
    // The final component a symlink to where a socket could be made.
    std::os::unix::fs::symlink(real.join("target.sock"), dir.join("final.sock")).unwrap();
    let r = core.apply(vec![
        unix_stream(&sub.join("s.sock")),
        unix_stream(&dir.join("final.sock")),
    ]);
    assert!(
        matches!(&r.outcomes[0], Outcome::Rejected { reason } if reason.contains("symbolic link")),
        "symlinked directory: {:?}",
        r.outcomes[0]
    );
    assert!(not_applied(&r.outcomes[1]), "symlink: {:?}", r.outcomes[1]);
    assert!(!moved.join("s.sock").exists(), "bound through the symlink");
    assert!(!real.join("target.sock").exists(), "followed the symlink");
    let m = std::fs::symlink_metadata(dir.join("final.sock")).unwrap();
    assert!(m.file_type().is_symlink(), "the symlink was removed");
}

#[test]
fn an_existing_regular_file_is_not_unlinked() {
    let dir = TempDir::secure("unix-f");
    let path = dir.join("file.sock");
    std::fs::write(&path, "keep").unwrap();
    let core = Core::start_unix(&dir);
    let r = core.apply(vec![unix_stream(&path)]);
    assert!(not_applied(&r.outcomes[0]), "{:?}", r.outcomes[0]);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep");
}

#[test]
fn a_stale_socket_is_replaced() {
    let dir = TempDir::secure("unix-s");
    let path = dir.join("stale.sock");
    drop(UnixListener::bind(&path).unwrap());
    assert!(std::fs::symlink_metadata(&path)
        .unwrap()
        .file_type()
        .is_socket());
    let core = Core::start_unix(&dir);
    assert_eq!(
        core.apply(vec![unix_stream(&path)]).outcomes,
        vec![Outcome::Added]
    );
    Report::read_from(&mut connect_unix(&path));
}

#[test]
fn unix_stream_listener_mode_environment_and_removal() {
    let dir = TempDir::secure("unix-ok");
    let path = dir.join("s.sock");
    let core = Core::start_unix(&dir);
    assert_eq!(
        core.apply(vec![unix_stream(&path)]).outcomes,
        vec![Outcome::Added]
    );
    let m = std::fs::symlink_metadata(&path).unwrap();
    assert!(m.file_type().is_socket());
    assert_eq!(m.mode() & 0o7777, 0o666, "mode {:o}", m.mode() & 0o7777);

    let rep = Report::read_from(&mut connect_unix(&path));
    let env = rep.env();
    let keys: Vec<&str> = env.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        vec![
            "PATH",
            "PROTO",
            "UNIXREMOTEEGID",
            "UNIXREMOTEEUID",
            "UNIXREMOTEPID"
        ],
        "{env:?}"
    );
    assert_eq!(env["PROTO"], "UNIX");
    assert_eq!(env["UNIXREMOTEPID"], std::process::id().to_string());
    assert_eq!(
        env["UNIXREMOTEEUID"],
        nix::unistd::geteuid().as_raw().to_string()
    );
    assert_eq!(
        env["UNIXREMOTEEGID"],
        nix::unistd::getegid().as_raw().to_string()
    );
    assert_eq!(rep.fds(), vec![0, 1, 2]);
    assert_eq!(rep.sock(0).unwrap()["family"], "unix");

    let r = core.apply(vec![]);
    assert_eq!(r.removed.len(), 1);
    wait_for("the socket file to go", Duration::from_secs(5), || {
        std::fs::symlink_metadata(&path).is_err()
    });
}

#[test]
fn unix_seqpacket_listener_hands_over_the_connection() {
    use nix::sys::socket::{
        connect, recv, socket, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr,
    };
    use std::os::fd::AsRawFd;
    let dir = TempDir::secure("unix-sp");
    let path = dir.join("sp.sock");
    let core = Core::start_unix(&dir);
    let mut spec = unix_stream(&path);
    spec.socket_type = inetd_protocol::SocketType::Seqpacket;
    assert_eq!(core.apply(vec![spec]).outcomes, vec![Outcome::Added]);
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    connect(fd.as_raw_fd(), &UnixAddr::new(&path).unwrap()).unwrap();
    nix::sys::socket::setsockopt(
        &fd,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(5, 0),
    )
    .unwrap();
    let mut text = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).expect("recv (5 s timeout)");
        if n == 0 {
            break;
        }
        text.extend_from_slice(&buf[..n]);
    }
    let rep = Report::parse(&String::from_utf8_lossy(&text));
    assert!(rep.complete, "incomplete report");
    assert_eq!(rep.fds(), vec![0, 1, 2]);
    assert_eq!(rep.sock(0).unwrap()["type"], "seqpacket");
    assert_eq!(rep.env()["PROTO"], "UNIX");
}
