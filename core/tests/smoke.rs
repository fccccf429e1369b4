//! Smoke tests of the real `inetd-core` binary: start it on a private core
//! socket, speak the core protocol, connect to what it serves. The full
//! black-box suite lives in the `inetd-tests` crate; these cover the core's
//! own contract quickly. Tests that need root skip with a reason otherwise.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use inetd_protocol::{
    read_message, write_message, Action, Bind, Builtin, CoreRequest, CoreResponse, Credentials,
    IpMode, Limits, ListenerSpec, ListenerState, Outcome, SocketType, PROTOCOL_VERSION,
};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

macro_rules! need_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root (ids, the controller user, capabilities)");
            return;
        }
    };
}

static SEQ: AtomicU32 = AtomicU32::new(0);

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

struct Core {
    child: Child,
    /// The core's own pid when `child` is a wrapper that does not pass
    /// signals on (strace): killed on drop too.
    real_pid: Option<u32>,
    dir: PathBuf,
    sock: PathBuf,
    log: PathBuf,
}

impl Core {
    fn start(extra: &[&str]) -> Core {
        Core::start_as(None, extra)
    }

    /// Starts the core, as `user` (uid, gid) through setpriv if given.
    fn start_as(user: Option<(u32, u32)>, extra: &[&str]) -> Core {
        Core::start_with(user, None, extra)
    }

    /// Starts the core, as `user` (uid, gid) through setpriv if given, with
    /// at most `nofile` descriptors through prlimit if given.
    fn start_with(user: Option<(u32, u32)>, nofile: Option<&str>, extra: &[&str]) -> Core {
        let prefix: Vec<String> = match (user, nofile) {
            (None, Some(n)) => vec!["prlimit".into(), format!("--nofile={n}")],
            (None, None) => vec![],
            (Some((uid, gid)), _) => vec![
                "setpriv".into(),
                format!("--reuid={uid}"),
                format!("--regid={gid}"),
                "--clear-groups".into(),
            ],
        };
        Core::start_wrapped(&prefix, user, extra)
    }

    /// Starts the core under the command `prefix` (empty: directly); the
    /// private directory is given to `owner` if set.
    fn start_wrapped(prefix: &[String], owner: Option<(u32, u32)>, extra: &[&str]) -> Core {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let dir = PathBuf::from(format!("/run/inetd-core-smoke-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        if let Some((uid, gid)) = owner {
            nix::unistd::chown(
                &dir,
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .unwrap();
        }
        let sock = dir.join("core.sock");
        let log = dir.join("core.log");
        let core_exe = env!("CARGO_BIN_EXE_inetd-core");
        let mut cmd = match prefix.split_first() {
            None => Command::new(core_exe),
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(core_exe);
                c
            }
        };
        let child = cmd
            .arg("--core-socket")
            .arg(&sock)
            .arg("--log-level")
            .arg("debug")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let core = Core {
            child,
            real_pid: None,
            dir,
            sock,
            log,
        };
        wait_for("the core socket", Duration::from_secs(10), || {
            UnixStream::connect(&core.sock).is_ok()
        });
        core
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn connect(&self) -> UnixStream {
        let mut s = UnixStream::connect(&self.sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        match call(
            &mut s,
            &CoreRequest::Hello {
                version: PROTOCOL_VERSION,
            },
        ) {
            CoreResponse::Hello(h) => assert_eq!(h.version, PROTOCOL_VERSION),
            other => panic!("unexpected {other:?}"),
        }
        s
    }

    fn stop(mut self) -> i32 {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let st = self.child.wait().unwrap();
        st.code().unwrap_or(-1)
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        if let Some(pid) = self.real_pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn call(s: &mut UnixStream, req: &CoreRequest) -> CoreResponse {
    write_message(s, req).unwrap();
    read_message(s).unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn nobody() -> Credentials {
    Credentials {
        uid: 65534,
        gid: 65534,
        groups: vec![65534],
    }
}

fn exec_spec(port: u16, script: &str) -> ListenerSpec {
    ListenerSpec {
        bind: Bind::Inet {
            addr: "127.0.0.1".parse().unwrap(),
            port,
            mode: IpMode::V4,
        },
        socket_type: SocketType::Stream,
        wait: false,
        action: Action::Exec {
            path: "/bin/sh".into(),
            argv: vec!["sh".into(), "-c".into(), script.into()],
        },
        creds: nobody(),
        limits: Limits::default(),
        acl: None,
        label: format!("test-{port}"),
    }
}

fn apply(s: &mut UnixStream, l: Vec<ListenerSpec>) -> inetd_protocol::ApplyReport {
    match call(s, &CoreRequest::Apply { listeners: l }) {
        CoreResponse::Applied(r) => r,
        other => panic!("unexpected {other:?}"),
    }
}

fn read_all(port: u16) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn serves_a_tcp_service_as_nobody_with_a_clean_environment() {
    need_root!();
    let core = Core::start(&[]);
    let mut s = core.connect();
    let port = free_port();
    let script = "echo ip=$TCPREMOTEIP rp=$REMOTE_PORT lp=$TCPLOCALPORT proto=$PROTO; id -u; id -g; id -G; umask; pwd; \
                  ls /proc/self/fd | wc -l; env | sort | cut -d= -f1 | tr '\\n' ' '; echo; grep -E '^(NoNewPrivs|CapEff|SigIgn|SigBlk)' /proc/self/status";
    let r = apply(&mut s, vec![exec_spec(port, script)]);
    assert_eq!(r.outcomes, vec![Outcome::Added]);
    assert_eq!(r.generation, 1);
    let out = read_all(port);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("ip=127.0.0.1 rp="), "{out}");
    assert!(lines[0].ends_with(&format!("lp={port} proto=TCP")), "{out}");
    assert_eq!(lines[1], "65534", "{out}");
    assert_eq!(lines[2], "65534", "{out}");
    assert_eq!(lines[3], "65534", "{out}");
    assert_eq!(lines[4], "0022", "{out}");
    assert_eq!(lines[5], "/", "{out}");
    // ls itself holds one descriptor for the directory: 0, 1, 2 and that.
    assert_eq!(lines[6].trim(), "4", "{out}");
    assert!(lines[7].contains("PATH PROTO"), "{out}");
    assert!(!lines[7].contains("HOME"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("SigIgn:\t0000000000000000"), "{out}");
    assert!(out.contains("SigBlk:\t0000000000000000"), "{out}");
    wait_for("the exit log line", Duration::from_secs(10), || {
        core.log().contains("exit service=\"test-")
    });
    assert!(core
        .log()
        .contains(&format!("accept service=\"test-{port}\" peer=127.0.0.1:")));
    assert_eq!(core.stop(), 0);
}

#[test]
fn diff_by_bind_key_and_status() {
    need_root!();
    let core = Core::start(&[]);
    let mut s = core.connect();
    let (p1, p2) = (free_port(), free_port());
    let a = exec_spec(p1, "echo one");
    let b = exec_spec(p2, "echo two");
    let r = apply(&mut s, vec![a.clone(), b.clone()]);
    assert_eq!(r.outcomes, vec![Outcome::Added, Outcome::Added]);
    let g = r.generation;
    // Same again: nothing changes, the generation stays.
    let r = apply(&mut s, vec![a.clone(), b.clone()]);
    assert_eq!(r.outcomes, vec![Outcome::Unchanged, Outcome::Unchanged]);
    assert_eq!(r.generation, g);
    // Change one, drop the other, reject a root service.
    let a2 = exec_spec(p1, "echo changed");
    let mut root = exec_spec(free_port(), "id");
    root.creds.uid = 0;
    let r = apply(&mut s, vec![a2, root]);
    assert_eq!(r.outcomes[0], Outcome::Changed);
    assert!(
        matches!(&r.outcomes[1], Outcome::Rejected { reason } if reason.contains("--allow-root-services"))
    );
    assert_eq!(r.removed.len(), 1);
    assert_eq!(r.generation, g + 1);
    assert_eq!(read_all(p1), "changed\n");
    assert!(
        TcpStream::connect(("127.0.0.1", p2)).is_err(),
        "removed listener still open"
    );
    match call(&mut s, &CoreRequest::Status) {
        CoreResponse::Status(st) => {
            assert_eq!(st.listeners.len(), 1);
            assert_eq!(st.listeners[0].state, ListenerState::Listening);
            assert_eq!(st.listeners[0].counters.accepted, 1);
            assert_eq!(st.uid, 0);
            assert!(st.policy.root);
        }
        other => panic!("unexpected {other:?}"),
    }
    // A listener as the controller user is refused by a root core.
    let mut ctl = exec_spec(free_port(), "id");
    ctl.creds = Credentials {
        uid: 999,
        gid: 995,
        groups: vec![],
    };
    let r = apply(&mut s, vec![ctl]);
    assert!(
        matches!(&r.outcomes[0], Outcome::Rejected { reason } if reason.contains("controller"))
    );
}

#[test]
fn a_failed_bind_is_reported_and_the_others_apply() {
    need_root!();
    let core = Core::start(&[]);
    let mut s = core.connect();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    let ok = free_port();
    let r = apply(
        &mut s,
        vec![exec_spec(busy, "echo x"), exec_spec(ok, "echo ok")],
    );
    assert!(
        matches!(&r.outcomes[0], Outcome::Failed { reason, .. } if reason.contains("in use")),
        "{r:?}"
    );
    assert_eq!(r.outcomes[1], Outcome::Added);
    assert_eq!(read_all(ok), "ok\n");
    match call(&mut s, &CoreRequest::Status) {
        CoreResponse::Status(st) => {
            assert!(st
                .listeners
                .iter()
                .any(|l| matches!(l.state, ListenerState::Failed { .. })));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn exec_failures_are_counted_and_logged() {
    need_root!();
    let core = Core::start(&[]);
    let mut s = core.connect();
    let port = free_port();
    let mut spec = exec_spec(port, "");
    spec.action = Action::Exec {
        path: "/nonexistent/server".into(),
        argv: vec!["server".into()],
    };
    apply(&mut s, vec![spec]);
    assert_eq!(read_all(port), "");
    wait_for("the exec failure", Duration::from_secs(10), || {
        core.log().contains("exec failed service=")
    });
    match call(&mut s, &CoreRequest::Status) {
        CoreResponse::Status(st) => {
            assert_eq!(st.listeners[0].counters.exec_failures, 1);
            assert!(st.listeners[0]
                .last_error
                .as_deref()
                .unwrap_or("")
                .contains("execve"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn builtins_echo_over_tcp_and_udp() {
    need_root!();
    // A short idle time, so the dgram child does not outlive the test long.
    let core = Core::start(&["--dgram-idle", "1"]);
    let mut s = core.connect();
    let tport = free_port();
    let uport = free_udp_port();
    let mut t = exec_spec(tport, "");
    t.action = Action::Builtin(Builtin::Echo);
    let mut u = exec_spec(uport, "");
    u.action = Action::Builtin(Builtin::Echo);
    u.socket_type = SocketType::Dgram;
    let r = apply(&mut s, vec![t, u]);
    assert_eq!(r.outcomes, vec![Outcome::Added, Outcome::Added]);
    let mut c = TcpStream::connect(("127.0.0.1", tport)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"hello\n").unwrap();
    let mut buf = [0u8; 6];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello\n");
    drop(c);
    let cu = UdpSocket::bind("127.0.0.1:0").unwrap();
    cu.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    cu.send_to(b"ping", ("127.0.0.1", uport)).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = cu.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    match call(&mut s, &CoreRequest::Status) {
        CoreResponse::Status(st) => {
            let (i, udp) = st
                .listeners
                .iter()
                .enumerate()
                .find(|(_, l)| l.spec.socket_type == SocketType::Dgram)
                .unwrap();
            assert_eq!(udp.state, ListenerState::Waiting);
            // The dgram builtin child: the service's user, no capabilities,
            // and its socket as its only descriptor.
            let child = st
                .children
                .iter()
                .find(|c| c.listener == Some(i as u32))
                .unwrap();
            let fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", child.pid))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(fds, vec!["0".to_string()]);
            let status = std::fs::read_to_string(format!("/proc/{}/status", child.pid)).unwrap();
            assert!(
                status.contains("Uid:\t65534\t65534\t65534\t65534"),
                "{status}"
            );
            assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn bad_frames_end_only_that_connection() {
    need_root!();
    let core = Core::start(&[]);
    for bad in [
        &[0u8, 0, 0, 0][..],
        &[0xff, 0xff, 0xff, 0xff],
        &[0, 0, 0, 3, 9, 9, 9],
    ] {
        let mut c = UnixStream::connect(&core.sock).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(bad).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(
            c.read(&mut buf).unwrap_or(0),
            0,
            "connection not closed for {bad:?}"
        );
    }
    // Not Hello first: an Error, then close.
    let mut c = UnixStream::connect(&core.sock).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(matches!(
        call(&mut c, &CoreRequest::Status),
        CoreResponse::Error { .. }
    ));
    // Wrong version: an Error naming both.
    let mut c = UnixStream::connect(&core.sock).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    match call(&mut c, &CoreRequest::Hello { version: 999 }) {
        CoreResponse::Error { reason } => {
            assert!(reason.contains("999") && reason.contains(&PROTOCOL_VERSION.to_string()))
        }
        other => panic!("unexpected {other:?}"),
    }
    // Still serving.
    let _ = core.connect();
    assert!(core.log().contains("bad frame"));
}

#[test]
fn a_second_core_on_the_same_socket_exits_1() {
    need_root!();
    let core = Core::start(&[]);
    let st = Command::new(env!("CARGO_BIN_EXE_inetd-core"))
        .arg("--core-socket")
        .arg(&core.sock)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&st.stderr).contains("another core"));
    let _ = core.connect();
    let sock = core.sock.clone();
    assert_eq!(core.stop(), 0);
    assert!(!Path::new(&sock).exists(), "core socket left behind");
}

#[test]
fn core_socket_is_0660_with_the_controller_group() {
    need_root!();
    use std::os::unix::fs::MetadataExt;
    let core = Core::start(&[]);
    let m = std::fs::symlink_metadata(&core.sock).unwrap();
    assert_eq!(m.mode() & 0o777, 0o660);
    assert_eq!(m.uid(), 0);
    assert_eq!(m.gid(), 995, "the inetd user's primary group");
    // The core itself keeps only the four capabilities. It binds the core
    // socket before the cut, so wait for the cut rather than race it.
    let status_path = format!("/proc/{}/status", core.child.id());
    wait_for("the capability cut", Duration::from_secs(10), || {
        std::fs::read_to_string(&status_path)
            .unwrap()
            .contains("CapEff:\t00000000000004e0")
    });
    let status = std::fs::read_to_string(&status_path).unwrap();
    // NET_BIND_SERVICE (10), SETUID (7), SETGID (6), KILL (5).
    for set in ["CapPrm", "CapEff", "CapBnd"] {
        assert!(
            status.contains(&format!("{set}:\t00000000000004e0")),
            "{set}: {status}"
        );
    }
    assert!(status.contains("CapInh:\t0000000000000000"), "{status}");
    assert!(status.contains("CapAmb:\t0000000000000000"), "{status}");
}

#[test]
fn missing_controller_user_and_bad_flags_exit_2() {
    need_root!();
    let out = Command::new(env!("CARGO_BIN_EXE_inetd-core"))
        .args([
            "--controller-user",
            "no-such-user-xyz",
            "--core-socket",
            "/run/x-never.sock",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("useradd --system inetd"));
    let out = Command::new(env!("CARGO_BIN_EXE_inetd-core"))
        .args(["--dgram-idle", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // A normal user's core runs the controller as itself and nobody else.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_inetd-core"))
        .args([
            "--controller-user",
            "inetd",
            "--core-socket",
            "/tmp/never-bound.sock",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot name another"));
}

#[test]
fn unix_listener_in_a_safe_directory_and_refused_in_tmp() {
    need_root!();
    let core = Core::start(&[]);
    let mut s = core.connect();
    let path = core.dir.join("svc.sock");
    let mut spec = exec_spec(
        1,
        "echo pid=$UNIXREMOTEPID uid=$UNIXREMOTEEUID proto=$PROTO",
    );
    spec.bind = Bind::Unix {
        path: path.to_str().unwrap().into(),
    };
    let mut bad = spec.clone();
    bad.bind = Bind::Unix {
        path: format!("/tmp/inetd-smoke-{}.sock", std::process::id()),
    };
    let r = apply(&mut s, vec![spec, bad]);
    assert_eq!(r.outcomes[0], Outcome::Added);
    assert!(
        matches!(&r.outcomes[1], Outcome::Rejected { reason } if reason.contains("writable")),
        "{r:?}"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::symlink_metadata(&path).unwrap().mode() & 0o777,
        0o666
    );
    let mut c = UnixStream::connect(&path).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    assert_eq!(
        out,
        format!("pid={} uid=0 proto=UNIX\n", std::process::id())
    );
    // Removal unlinks the socket file.
    apply(&mut s, vec![]);
    assert!(!path.exists());
}

#[test]
fn access_lists_refuse_before_fork() {
    need_root!();
    use inetd_protocol::{Acl, AclRule};
    let core = Core::start(&[]);
    let mut s = core.connect();
    let port = free_port();
    let mut spec = exec_spec(port, "echo served");
    spec.acl = Some(Acl {
        rules: vec![AclRule {
            addr: "127.0.0.0".parse().unwrap(),
            prefix: 8,
            allow: false,
        }],
        default_allow: true,
    });
    assert_eq!(apply(&mut s, vec![spec]).outcomes, vec![Outcome::Added]);
    assert_eq!(read_all(port), "");
    match call(&mut s, &CoreRequest::Status) {
        CoreResponse::Status(st) => {
            assert_eq!(st.listeners[0].counters.refused_acl, 1);
            assert_eq!(st.listeners[0].counters.accepted, 0);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_user_core_runs_services_as_itself() {
    need_root!();
    let core = Core::start_as(Some((65534, 65534)), &[]);
    let mut s = core.connect();
    let port = free_port();
    let mut spec = exec_spec(port, "id -u; id -g; grep NoNewPrivs /proc/self/status");
    let r = apply(&mut s, vec![spec.clone()]);
    assert_eq!(r.outcomes, vec![Outcome::Added]);
    assert_eq!(read_all(port), "65534\n65534\nNoNewPrivs:\t1\n");
    spec.creds.uid = 1;
    let r = apply(&mut s, vec![spec]);
    assert!(
        matches!(&r.outcomes[0], Outcome::Rejected { reason } if reason.contains("itself")),
        "{r:?}"
    );
}

/// Acts as a core client when started by `a_peer_that_is_not_allowed_is_closed`
/// (as another uid); a no-op otherwise.
#[test]
fn peer_client_helper() {
    let Ok(path) = std::env::var("INETD_SMOKE_CLIENT") else {
        return;
    };
    let mut c = UnixStream::connect(path).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = write_message(
        &mut c,
        &CoreRequest::Hello {
            version: PROTOCOL_VERSION,
        },
    );
    let mut buf = [0u8; 64];
    let n = c.read(&mut buf).unwrap_or(0);
    println!("CLIENT-READ={n}");
}

#[test]
fn a_peer_that_is_not_allowed_is_closed() {
    need_root!();
    use std::os::unix::process::CommandExt;
    let core = Core::start(&[]);
    // uid 995 (inetd-test-peer) with gid 995 (group inetd): the socket's
    // mode lets it connect, SO_PEERCRED must not let it talk.
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "peer_client_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("INETD_SMOKE_CLIENT", &core.sock)
        .uid(995)
        .gid(995)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CLIENT-READ=0"), "{text}");
    wait_for("the refusal in the log", Duration::from_secs(10), || {
        core.log().contains("refused a connection from uid 995")
    });
    let _ = core.connect();
}

#[test]
fn wait_services_get_the_listening_socket() {
    need_root!();
    let core = Core::start(&[]);
    let mut s = core.connect();
    let tport = free_port();
    let uport = free_udp_port();
    let mut t = exec_spec(tport, "");
    t.wait = true;
    t.action = Action::Exec {
        path: "/usr/bin/perl".into(),
        argv: vec![
            "perl".into(),
            "-e".into(),
            "open(L, '+<&=0') or die; accept(C, L) or die; syswrite(C, \"waited\\n\"); close C;"
                .into(),
        ],
    };
    let mut u = t.clone();
    u.bind = Bind::Inet {
        addr: "127.0.0.1".parse().unwrap(),
        port: uport,
        mode: IpMode::V4,
    };
    u.socket_type = SocketType::Dgram;
    u.action = Action::Exec {
        path: "/usr/bin/perl".into(),
        argv: vec![
            "perl".into(),
            "-e".into(),
            "open(S, '+<&=0') or die; my $p = recv(S, my $b, 100, 0); send(S, \"got $b\", 0, $p);"
                .into(),
        ],
    };
    assert_eq!(
        apply(&mut s, vec![t, u]).outcomes,
        vec![Outcome::Added, Outcome::Added]
    );
    assert_eq!(read_all(tport), "waited\n");
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.send_to(b"x", ("127.0.0.1", uport)).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = c.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"got x");
    // Both children exit; the listeners are polled again and serve again.
    wait_for("two exits", Duration::from_secs(10), || {
        core.log().matches("exit service=").count() >= 2
    });
    assert_eq!(read_all(tport), "waited\n");
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ")".
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn out_of_descriptors_pauses_accepting_without_spinning() {
    need_root!();
    // 0-2, core socket, /dev/null, signalfd, this client, the listener:
    // eight descriptors, so accept fails with EMFILE.
    let core = Core::start_with(None, Some("8"), &[]);
    let mut s = core.connect();
    let port = free_port();
    assert_eq!(
        apply(&mut s, vec![exec_spec(port, "echo x")]).outcomes,
        vec![Outcome::Added]
    );
    let _c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    wait_for("the pause", Duration::from_secs(10), || {
        core.log().contains("not accepting")
    });
    let before = cpu_ticks(core.child.id());
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let used = cpu_ticks(core.child.id()) - before;
    assert!(
        used < 20,
        "the core used {used} ticks in 2 s while out of descriptors"
    );
    assert_eq!(
        core.log().matches("not accepting").count(),
        1,
        "{}",
        core.log()
    );
    // The core socket still answers.
    match call(&mut s, &CoreRequest::Status) {
        CoreResponse::Status(st) => assert!(matches!(
            st.listeners[0].state,
            ListenerState::Paused { .. } | ListenerState::Listening
        )),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_failing_wait_server_does_not_loop() {
    need_root!();
    let core = Core::start(&[]);
    let mut s = core.connect();
    let port = free_port();
    let mut spec = exec_spec(port, "");
    spec.wait = true;
    spec.action = Action::Exec {
        path: "/nonexistent/server".into(),
        argv: vec!["server".into()],
    };
    apply(&mut s, vec![spec]);
    let _c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    wait_for("the exec failure", Duration::from_secs(10), || {
        core.log().contains("exec failed")
    });
    wait_for("the exit", Duration::from_secs(10), || {
        core.log().contains("exit service=")
    });
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(300) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        core.log().matches("exec failed").count(),
        1,
        "{}",
        core.log()
    );
}

#[test]
fn dual_stack_peers_are_written_as_ipv4() {
    need_root!();
    let core = Core::start(&[]);
    let mut s = core.connect();
    let port = TcpListener::bind("[::]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut spec = exec_spec(port, "echo $TCPREMOTEIP $TCPLOCALIP");
    spec.bind = Bind::Inet {
        addr: "::".parse().unwrap(),
        port,
        mode: IpMode::Dual,
    };
    assert_eq!(apply(&mut s, vec![spec]).outcomes, vec![Outcome::Added]);
    assert_eq!(read_all(port), "127.0.0.1 127.0.0.1\n");
    wait_for("the accept line", Duration::from_secs(10), || {
        core.log().contains("peer=127.0.0.1:")
    });
    assert!(!core.log().contains("::ffff:"), "{}", core.log());
}

#[test]
fn ten_thousand_listeners() {
    need_root!();
    // A service manager's usual soft limit: the core raises its own to the
    // hard limit and gives children the original back.
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    if hard < 10_100 {
        eprintln!("skipped: the hard descriptor limit ({hard}) is below 10,100");
        return;
    }
    let core = Core::start_with(None, Some(&format!("1024:{hard}")), &[]);
    let mut s = core.connect();
    let port = free_port();
    let specs: Vec<ListenerSpec> = (0..10_000u32)
        .map(|i| {
            let mut sp = exec_spec(port, "echo many $(ulimit -n)");
            sp.bind = Bind::Inet {
                addr: std::net::Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8).into(),
                port,
                mode: IpMode::V4,
            };
            sp
        })
        .collect();
    let t0 = Instant::now();
    let r = apply(&mut s, specs.clone());
    assert!(
        r.outcomes.iter().all(|o| *o == Outcome::Added),
        "{:?}",
        r.outcomes.iter().find(|o| **o != Outcome::Added)
    );
    let t_apply = t0.elapsed();
    let t0 = Instant::now();
    let r = apply(&mut s, specs);
    assert!(r.outcomes.iter().all(|o| *o == Outcome::Unchanged));
    let t_same = t0.elapsed();
    let mut c = TcpStream::connect(("127.1.39.250", port)).unwrap();
    let mut out = String::new();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.read_to_string(&mut out).unwrap();
    assert_eq!(out, "many 1024\n");
    match call(&mut s, &CoreRequest::Status) {
        CoreResponse::Status(st) => assert_eq!(st.listeners.len(), 10_000),
        other => panic!("unexpected {other:?}"),
    }
    let r = apply(&mut s, vec![]);
    assert_eq!(r.removed.len(), 10_000);
    eprintln!("apply 10k: {t_apply:?}, unchanged: {t_same:?}");
    assert!(t_apply < Duration::from_secs(20) && t_same < Duration::from_secs(10));
}

#[test]
fn root_services_only_with_allow_root_services() {
    need_root!();
    let core = Core::start(&["--allow-root-services"]);
    let mut s = core.connect();
    let port = free_port();
    let mut spec = exec_spec(
        port,
        "id -u; grep -E '^(NoNewPrivs|CapBnd)' /proc/self/status",
    );
    spec.creds = Credentials {
        uid: 0,
        gid: 0,
        groups: vec![0],
    };
    assert_eq!(apply(&mut s, vec![spec]).outcomes, vec![Outcome::Added]);
    let out = read_all(port);
    assert!(out.starts_with("0\n"), "{out}");
    assert!(out.contains("NoNewPrivs:\t0"), "{out}");
    // The bounding set is left as the core got it (not cut to the four).
    assert!(!out.contains("CapBnd:\t00000000000004e0"), "{out}");
    // The core's own permitted set is still cut.
    let status = std::fs::read_to_string(format!("/proc/{}/status", core.child.id())).unwrap();
    assert!(status.contains("CapEff:\t00000000000004e0"), "{status}");
    match call(&mut s, &CoreRequest::Status) {
        CoreResponse::Status(st) => assert!(st.policy.allow_root_services),
        other => panic!("unexpected {other:?}"),
    }
}

fn zombies_of(pid: u32) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        if f.len() > 1 && f[0] == "Z" && f[1] == pid.to_string() {
            n += 1;
        }
    }
    n
}

#[test]
fn a_thousand_connections_leave_no_zombies() {
    need_root!();
    let core = Core::start(&[]);
    let mut s = core.connect();
    let port = free_port();
    let mut spec = exec_spec(port, "");
    spec.action = Action::Exec {
        path: "/bin/true".into(),
        argv: vec!["true".into()],
    };
    assert_eq!(apply(&mut s, vec![spec]).outcomes, vec![Outcome::Added]);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..125 {
                    if let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) {
                        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                        let mut b = Vec::new();
                        let _ = c.read_to_end(&mut b);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let pid = core.child.id();
    wait_for(
        "all children reaped",
        Duration::from_secs(10),
        || match call(&mut s, &CoreRequest::Status) {
            CoreResponse::Status(st) => {
                st.children.is_empty() && st.listeners[0].counters.accepted == 1000
            }
            _ => false,
        },
    );
    assert_eq!(zombies_of(pid), 0);
    assert_eq!(core.log().matches("exit service=").count(), 1000);
}

#[test]
fn a_failing_setuid_stops_the_child_before_exec() {
    need_root!();
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("skipped: no strace");
        return;
    }
    // The core itself never calls setresuid or setgroups; its children do.
    for (syscall, step) in [
        ("setresuid", "step=setuid"),
        ("setgroups", "step=setgroups"),
    ] {
        let prefix: Vec<String> = vec![
            "strace".into(),
            "-f".into(),
            "-qq".into(),
            "-o".into(),
            "/dev/null".into(),
            "-e".into(),
            format!("inject={syscall}:error=EPERM"),
        ];
        let mut core = Core::start_wrapped(&prefix, None, &[]);
        let mut s = UnixStream::connect(&core.sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let core_pid = match call(
            &mut s,
            &CoreRequest::Hello {
                version: PROTOCOL_VERSION,
            },
        ) {
            CoreResponse::Hello(h) => h.pid,
            other => panic!("unexpected {other:?}"),
        };
        core.real_pid = Some(core_pid);
        let port = free_port();
        apply(&mut s, vec![exec_spec(port, "echo the server ran")]);
        assert_eq!(read_all(port), "", "the server must not run");
        wait_for("the failure", Duration::from_secs(10), || {
            core.log().contains(step)
        });
        match call(&mut s, &CoreRequest::Status) {
            CoreResponse::Status(st) => assert_eq!(st.listeners[0].counters.exec_failures, 1),
            other => panic!("unexpected {other:?}"),
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(core_pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn garbage_on_the_core_socket_changes_nothing() {
    need_root!();
    let core = Core::start(&[]);
    let mut s = core.connect();
    let port = free_port();
    apply(&mut s, vec![exec_spec(port, "echo still")]);
    let pid = core.child.id();
    let before = rss_kib(pid);
    // A deterministic xorshift stream: frames with random lengths (some
    // huge, some zero) and random payloads, 300 connections.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..300 {
        let Ok(mut c) = UnixStream::connect(&core.sock) else {
            continue;
        };
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut bytes = Vec::new();
        if i % 3 == 0 {
            // A valid Hello first, then garbage.
            bytes.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0, 1, 0, 0, 0]);
        }
        let len = (next() % 64) as u32;
        let declared = match i % 4 {
            0 => len,
            1 => u32::MAX,
            2 => 0,
            _ => 16 * 1024 * 1024,
        };
        bytes.extend_from_slice(&declared.to_be_bytes());
        for _ in 0..len {
            bytes.push(next() as u8);
        }
        let _ = c.write_all(&bytes);
        let _ = c.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = c.read_to_end(&mut sink);
    }
    // Still serving, on both planes, with the same listener.
    let mut s2 = core.connect();
    match call(&mut s2, &CoreRequest::Status) {
        CoreResponse::Status(st) => {
            assert_eq!(st.listeners.len(), 1);
            assert_eq!(st.generation, 1);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(read_all(port), "still\n");
    let after = rss_kib(pid);
    assert!(
        after < before + 8 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}
