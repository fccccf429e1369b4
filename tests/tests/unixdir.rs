//! Where unix sockets may be made, and whom the two daemons trust about
//! the filesystem: a root core makes unix listeners only directly in its
//! `--unix-dir`s and never replaces a socket something listens on; it
//! refuses system directories as `--unix-dir` and a runtime directory
//! others could write; it never follows a link at `RUN/control`; the
//! controller talks only to a core socket served by root or itself, and
//! shows the entries the core would refuse as rejected.
//!
//! The "system" directories here are root-owned directories of the test's
//! own under /run standing in for /run/dbus and the like: nothing of the
//! host's is touched. Tests that need a runtime directory of a given owner
//! run the core in a mount namespace of its own, over a fresh /run.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use inetd_protocol::{CoreResponse, Outcome, SocketType, UnixDirs};
use inetd_tests::*;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ino(p: &Path) -> Option<u64> {
    fs::symlink_metadata(p).ok().map(|m| m.ino())
}

fn rejected_with(o: &Outcome, words: &str) -> bool {
    matches!(o, Outcome::Rejected { reason } if reason.contains(words))
}

/// A core started with `args`, not waited for: one expected to exit at
/// start, or one that serves no core socket (one-command mode).
fn start_no_wait(args: Vec<String>) -> Core {
    Core::start_with(CoreOptions {
        args,
        no_wait: true,
        ..CoreOptions::default()
    })
}

#[test]
fn a_hostile_apply_can_neither_take_over_a_socket_nor_plant_one() {
    require_root!("root-owned directories standing in for the system's");
    let unix_dir = TempDir::secure("ud-hostile");
    // Stands in for /run/dbus: root's, 0755, with a live socket.
    let system = TempDir::secure("ud-system");
    let bus_path = system.join("system_bus_socket");
    let bus = UnixListener::bind(&bus_path).unwrap();
    bus.set_nonblocking(true).unwrap();
    // A root-owned directory the core was not given, and a subdirectory of
    // the one it was.
    let other = TempDir::secure("ud-other");
    let sub = unix_dir.join("sub");
    fs::create_dir(&sub).unwrap();
    // In the unix directory: a live socket of ours, a lock file, and a
    // stale socket of another type than the listener that asks for it.
    let live_path = unix_dir.join("live.sock");
    let _live = UnixListener::bind(&live_path).unwrap();
    let lock = unix_dir.join("lock-frontend");
    fs::write(&lock, "").unwrap();
    let stale = unix_dir.join("stale.sock");
    drop(UnixDatagram::bind(&stale).unwrap());
    let dpkg_lock = Path::new("/var/lib/dpkg/lock-frontend");

    let core = Core::start_unix(&unix_dir);
    let core_sock = core.socket_path().to_owned();
    let before = [&bus_path, &live_path, &lock, &core_sock].map(|p| ino(p));
    let dpkg_before = fs::symlink_metadata(dpkg_lock)
        .ok()
        .map(|m| (m.ino(), m.mode()));
    let port = free_port();
    let r = core.apply(vec![
        unix_stream(&bus_path),
        unix_stream(&core_sock),
        unix_stream(Path::new("/run/inetd/planted.sock")),
        unix_stream(&other.join("s.sock")),
        unix_stream(&sub.join("s.sock")),
        unix_stream(&lock),
        unix_stream(dpkg_lock),
        unix_stream(&live_path),
        unix_stream(&stale),
        tcp4(port),
    ]);
    let o = &r.outcomes;
    for (i, what) in [
        "the system bus",
        "the core socket",
        "a path under RUN",
        "a directory not named",
        "a subdirectory of a unix dir",
    ]
    .iter()
    .enumerate()
    {
        assert!(rejected_with(&o[i], "--unix-dir"), "{what}: {:?}", o[i]);
    }
    assert!(
        rejected_with(&o[5], "not a socket"),
        "lock file: {:?}",
        o[5]
    );
    assert!(
        rejected_with(&o[6], "--unix-dir"),
        "dpkg's lock: {:?}",
        o[6]
    );
    assert!(
        rejected_with(&o[7], "something listens"),
        "live: {:?}",
        o[7]
    );
    assert_eq!(o[8..], [Outcome::Added, Outcome::Added]);

    // Nothing was replaced or planted.
    assert_eq!(
        [&bus_path, &live_path, &lock, &core_sock].map(|p| ino(p)),
        before
    );
    assert_eq!(
        fs::symlink_metadata(dpkg_lock)
            .ok()
            .map(|m| (m.ino(), m.mode())),
        dpkg_before
    );
    assert_eq!(fs::read(&lock).unwrap(), b"");
    for p in [
        Path::new("/run/inetd/planted.sock"),
        &other.join("s.sock"),
        &sub.join("s.sock"),
    ] {
        assert!(fs::symlink_metadata(p).is_err(), "{} was made", p.display());
    }
    // The bus still answers its own server, which never heard from the
    // core (the core does not even probe outside its directories).
    assert!(bus.accept().is_err(), "something connected to the bus");
    let _client = UnixStream::connect(&bus_path).unwrap();
    assert!(bus.accept().is_ok(), "the bus lost its socket");
    // The core keeps serving: the stale socket is its own now, the TCP
    // listener answers, and core.sock is still the core's.
    let mut c = UnixStream::connect(&stale).unwrap();
    c.set_read_timeout(Some(secs(5))).unwrap();
    assert!(Report::read_from(&mut c).complete);
    assert!(Report::read_from(&mut connect4(port).unwrap()).complete);
    let st = core.status();
    assert_eq!(st.listeners.len(), 2, "{:?}", st.listeners);
    assert!(core.is_alive());
}

#[test]
fn two_unix_listeners_on_one_path_are_refused_as_a_whole() {
    let dir = TempDir::secure("ud-two");
    let core = Core::start_unix(&dir);
    let (port, other_port) = (free_port(), free_port());
    let keep = dir.join("keep.sock");
    let r = core.apply(vec![tcp4(port), unix_stream(&keep)]);
    assert_eq!(r.outcomes, vec![Outcome::Added; 2]);
    let generation = core.status().generation;
    let path = dir.join("x.sock");
    for t in [SocketType::Dgram, SocketType::Seqpacket] {
        let mut second = unix_stream(&path).wait(true);
        second.socket_type = t;
        let resp = core.client().try_apply(vec![
            tcp4(port),
            unix_stream(&keep),
            tcp4(other_port),
            unix_stream(&path),
            second,
        ]);
        assert!(
            matches!(&resp, CoreResponse::Error { reason } if reason.contains("one path")),
            "{t}: {resp:?}"
        );
        assert!(
            fs::symlink_metadata(&path).is_err(),
            "{t}: a socket was made"
        );
    }
    let st = core.status();
    assert_eq!(st.generation, generation, "something changed");
    assert_eq!(st.listeners.len(), 2);
    assert!(connect4(other_port).is_err());
    assert!(UnixStream::connect(&keep).is_ok());
}

#[test]
fn system_directories_and_their_like_are_refused_as_unix_dirs() {
    require_root!("the rule of a root core");
    let dirs = [
        "/",
        "/run",
        "/var/run",
        "/dev",
        "/etc",
        "/tmp",
        "/var",
        "/usr",
        "/home",
        "/root",
        "/proc",
        "/sys",
        "/run/inetd",
        "/run/inetd/control",
        "/run/systemd",
        "/run/dbus",
        "/run/user",
        "/var/lib",
        "/var/lib/dpkg",
        "/var/tmp",
        "/dev/shm",
    ];
    // The directory of the core's own socket, one open to others, and one
    // that does not exist.
    let own = TempDir::secure("ud-own");
    let open = TempDir::secure("ud-open");
    fs::set_permissions(open.path(), fs::Permissions::from_mode(0o757)).unwrap();
    let missing = own.join("missing");
    let mut cores: Vec<(String, Core)> = dirs
        .iter()
        .map(|d| {
            (
                d.to_string(),
                start_no_wait(vec!["--unix-dir".into(), d.to_string()]),
            )
        })
        .collect();
    cores.push((
        own.path().display().to_string(),
        Core::start_with(CoreOptions {
            args: own.unix_dir_args(),
            socket: Some(own.join("core.sock")),
            no_wait: true,
            ..CoreOptions::default()
        }),
    ));
    for d in [open.path(), &missing] {
        let args = vec!["--unix-dir".into(), d.display().to_string()];
        cores.push((d.display().to_string(), start_no_wait(args)));
    }
    for (dir, core) in &mut cores {
        let st = core.wait_exit(secs(10));
        assert_eq!(
            st.and_then(|s| s.code()),
            Some(2),
            "--unix-dir {dir}; log:\n{}",
            core.log()
        );
        let log = core.log();
        assert!(log.contains(&format!("--unix-dir {dir}")), "{dir}: {log}");
        if Path::new(dir).is_dir() && dir != &open.path().display().to_string() {
            assert!(log.contains("refused"), "{dir}: {log}");
        }
    }
    assert!(cores[cores.len() - 2].1.log().contains("writable"));
    // A directory of its own is fine, and the Hello reply says so.
    let fine = TempDir::secure("ud-fine");
    let core = Core::start_unix(&fine);
    let shown = fine.path().display().to_string();
    assert!(core
        .log()
        .contains(&format!("unix listeners may be made directly in {shown}")));
    assert_eq!(
        core.client().hello.policy.unix_dirs,
        UnixDirs::Only(vec![shown])
    );
    // Without the flag, RUN/sockets, made if missing.
    let core = Core::start();
    assert_eq!(
        core.client().hello.policy.unix_dirs,
        UnixDirs::Only(vec!["/run/inetd/sockets".into()])
    );
    let m = fs::symlink_metadata("/run/inetd/sockets").unwrap();
    assert!(m.is_dir() && m.uid() == 0 && m.mode() & 0o022 == 0);
}

/// A root core in a mount namespace of its own, over a fresh /run that the
/// shell commands `prepare` set up; exits at start unless `wait`.
fn core_over_own_run(prepare: &str, args: &[&str], wait: bool) -> Core {
    let script =
        format!("mount -t tmpfs -o mode=0755 inetd-test /run && {prepare} && exec \"$0\" \"$@\"");
    Core::start_with(CoreOptions {
        wrapper: [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ]
        .map(String::from)
        .to_vec(),
        args: args.iter().map(|s| s.to_string()).collect(),
        no_wait: !wait,
        ..CoreOptions::default()
    })
}

#[test]
fn a_runtime_directory_of_another_user_or_open_to_writes_refuses_to_start() {
    require_root!("a mount namespace over /run");
    // The same core starts where RUN is root's and closed to writes.
    let fine = core_over_own_run("mkdir -m 0755 /run/inetd", &[], true);
    assert!(fine.is_alive());
    for (prepare, what) in [
        (
            "mkdir -m 0755 /run/inetd && chown 65534:65534 /run/inetd",
            "uid 65534",
        ),
        ("mkdir -m 0775 /run/inetd", "mode 0775"),
        ("mkdir -m 0757 /run/inetd", "mode 0757"),
    ] {
        let mut core = core_over_own_run(prepare, &[], false);
        let st = core.wait_exit(secs(10));
        let log = core.log();
        assert_eq!(st.and_then(|s| s.code()), Some(1), "{prepare}: {log}");
        assert!(
            log.contains("runtime directory /run/inetd") && log.contains(what),
            "{prepare}: {log}"
        );
    }
}

#[test]
fn a_symlinked_run_control_is_not_followed() {
    require_root!("a mount namespace over /run");
    let s = TempDir::new("ud-control");
    let conf = s.join("inetd.conf");
    fs::write(&conf, "").unwrap();
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o644)).unwrap();
    let args = ["--config", conf.to_str().unwrap()];
    // A real RUN/control is given to the controller user, which then
    // serves its control socket there.
    let fine = core_over_own_run("mkdir -m 0755 /run/inetd /run/inetd/control", &args, false);
    let control = PathBuf::from(format!("/proc/{}/root/run/inetd/control", fine.pid()));
    wait_for("the controller's control socket", secs(15), || {
        control.join("control.sock").exists()
    });
    let inetd = user("inetd").expect("user inetd");
    assert_eq!(fs::metadata(&control).unwrap().uid(), inetd.uid);
    drop(fine);
    // A link there is neither followed nor replaced: the core refuses to
    // start, and what it points to keeps its owner and mode.
    let target = TempDir::new("ud-target");
    fs::set_permissions(target.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let prepare = format!(
        "mkdir -m 0755 /run/inetd && ln -s {} /run/inetd/control",
        target.path().display()
    );
    let mut core = core_over_own_run(&prepare, &args, false);
    let st = core.wait_exit(secs(10));
    let log = core.log();
    assert_eq!(st.and_then(|s| s.code()), Some(1), "{log}");
    assert!(log.contains("symbolic link"), "{log}");
    let m = fs::metadata(target.path()).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 0, 0o700));
}

/// A directory for a controller: `control/` owned by user `inetd`, and an
/// inetd.conf of `conf`, readable by it.
fn controller_scratch(tag: &str, conf: &str) -> TempDir {
    let s = TempDir::new(tag);
    let control = s.join("control");
    fs::create_dir(&control).unwrap();
    let inetd = user("inetd").expect("user inetd");
    nix::unistd::chown(
        &control,
        Some(nix::unistd::Uid::from_raw(inetd.uid)),
        Some(nix::unistd::Gid::from_raw(inetd.gid)),
    )
    .unwrap();
    fs::write(s.join("inetd.conf"), conf).unwrap();
    fs::set_permissions(s.join("inetd.conf"), fs::Permissions::from_mode(0o644)).unwrap();
    s
}

#[test]
fn the_controller_refuses_a_core_socket_served_by_another_uid() {
    require_root!("a fake core run as another user");
    require_probe_for_others!();
    let peer = require_user!("inetd-test-peer");
    let inetd = require_user!("inetd");
    let fake_dir = TempDir::new("ud-fake");
    nix::unistd::chown(
        fake_dir.path(),
        Some(nix::unistd::Uid::from_raw(peer.uid)),
        None,
    )
    .unwrap();
    let sock = fake_dir.join("core.sock");
    let mut fake = Proc::spawn(
        command_as(peer.uid, peer.gid, probe_path())
            .arg("fake-core")
            .arg(&sock)
            .stdout(Stdio::piped()),
    );
    let mut said = BufReader::new(fake.child_mut().stdout.take().unwrap()).lines();
    assert_eq!(said.next().unwrap().unwrap(), "listening");

    let s = controller_scratch("ud-fake-ctl", "");
    let log_path = s.join("controller.log");
    let _controller = Proc::spawn(
        command_as_user(&inetd, bin_path("inetd-controller"))
            .arg("--core-socket")
            .arg(&sock)
            .arg("--control-socket")
            .arg(s.join("control/control.sock"))
            .arg("--config")
            .arg(s.join("inetd.conf"))
            .stdin(Stdio::null())
            .stderr(fs::File::create(&log_path).unwrap()),
    );
    // It connected, looked at who answers, and left without a byte.
    assert_eq!(said.next().unwrap().unwrap(), "eof");
    let log = || fs::read_to_string(&log_path).unwrap_or_default();
    wait_for("the controller's refusal", secs(10), || {
        log().contains("refusing the core socket")
    });
    let log = log();
    assert!(log.contains(&format!("uid {}", peer.uid)), "{log}");
    assert!(!log.contains("connected to the core"), "{log}");
}

#[test]
fn the_controller_needs_its_socket_paths_when_run_is_not_its_own() {
    require_root!("a controller run as another user");
    let peer = require_user!("inetd-test-peer");
    let s = TempDir::new("ud-nofallback");
    let conf = s.join("inetd.conf");
    fs::write(&conf, "").unwrap();
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o644)).unwrap();
    // Without XDG_RUNTIME_DIR, and /run/inetd/control not its own: no
    // guess at /tmp/inetd-UID, which anyone could have made first.
    let err_path = s.join("controller.err");
    let mut controller = Proc::spawn(
        command_as(peer.uid, peer.gid, bin_path("inetd-controller"))
            .arg("--config")
            .arg(&conf)
            .env_remove("XDG_RUNTIME_DIR")
            .stdin(Stdio::null())
            .stderr(fs::File::create(&err_path).unwrap()),
    );
    let st = controller.wait_exit(secs(10));
    let err = fs::read_to_string(&err_path).unwrap();
    assert_eq!(st.code(), Some(2), "{err}");
    assert!(err.contains("--core-socket"), "{err}");
    assert!(!err.contains("/tmp/inetd-"), "{err}");
}

#[test]
fn the_controller_shows_a_unix_entry_outside_the_unix_dirs_as_rejected() {
    require_root!("the controller as user inetd");
    let unix_dir = TempDir::secure("ud-ctl-ok");
    let elsewhere = TempDir::secure("ud-ctl-no");
    let (ok, no) = (unix_dir.join("ok.sock"), elsewhere.join("no.sock"));
    let line = |p: &Path| format!("{} stream unix nowait nobody /bin/cat cat\n", p.display());
    let s = controller_scratch("ud-ctl", &(line(&ok) + &line(&no)));
    let control = s.join("control/control.sock");
    let mut args = unix_dir.unix_dir_args();
    args.extend([
        "--config".into(),
        s.join("inetd.conf").display().to_string(),
        "--control-socket".into(),
        control.display().to_string(),
    ]);
    let _core = start_no_wait(args);
    let list = || {
        let out = Command::new(bin_path("inetctl"))
            .arg("--socket")
            .arg(&control)
            .args(["list", "--json"])
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).ok()
    };
    let mut rows = Vec::new();
    wait_for("both rows", secs(15), || {
        rows = list()
            .and_then(|v| v["services"].as_array().cloned())
            .unwrap_or_default();
        rows.len() == 2 && rows[0]["state"] == "listening"
    });
    assert_eq!(rows[0]["path"], ok.display().to_string());
    assert_eq!(rows[1]["path"], no.display().to_string());
    assert_eq!(rows[1]["state"], "rejected", "{:?}", rows[1]);
    let reason = rows[1]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("--unix-dir") && reason.contains(&unix_dir.path().display().to_string()),
        "{reason}"
    );
    assert!(fs::symlink_metadata(&no).is_err());
    assert!(UnixStream::connect(&ok).is_ok());
}
