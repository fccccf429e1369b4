//! The core socket (trust rules 1 and 3, docs/architecture.md): who may connect, what a
//! malformed message does, and a second core on the same path.

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::process::Output;
use std::time::Duration;

use inetd_protocol::{
    codec::encode_payload, encode_frame, CoreRequest, CoreResponse, ProtocolError, MAX_FRAME,
    PROTOCOL_VERSION,
};
use inetd_tests::*;

// ---------------------------------------------------------------------------
// Who may talk to the core

fn run_client(cmd: &mut std::process::Command) -> String {
    let Output { stdout, stderr, .. } = cmd.output().expect("run the probe client");
    let out = String::from_utf8_lossy(&stdout).into_owned();
    assert!(
        out.starts_with("connect"),
        "probe client failed: {out:?} {}",
        String::from_utf8_lossy(&stderr)
    );
    out
}

/// True when the probe client's output shows the core closed the
/// connection without answering.
fn closed_without_reply(out: &str) -> bool {
    out.starts_with("connect ok")
        && (out.contains("\neof") || out.contains("\nerr ECONNRESET"))
        && !out.contains("reply")
}

fn warnings(log: &str) -> usize {
    log.lines()
        .filter(|l| l.starts_with("<4>") || l.starts_with("<3>"))
        .count()
}

#[test]
fn core_socket_is_0660_root_and_the_controllers_group() {
    require_root!("a root core's socket");
    let ctl = user("inetd").expect("user inetd");
    let core = Core::start();
    let m = std::fs::symlink_metadata(core.socket_path()).unwrap();
    assert!(m.file_type().is_socket());
    assert_eq!(m.mode() & 0o7777, 0o660, "mode {:o}", m.mode() & 0o7777);
    assert_eq!(m.uid(), 0);
    assert_eq!(m.gid(), ctl.gid, "group of the core socket");
}

#[test]
fn only_root_and_the_controller_are_served() {
    require_root!("clients of other uids");
    require_probe_for_others!();
    let ctl = user("inetd").expect("user inetd");
    let peer = user("inetd-test-peer").expect("user inetd-test-peer");
    let core = Core::start();
    let sock = core.socket_path().display().to_string();
    let probe = probe_path();

    // The controller user is served (it can reach the socket through its
    // primary group).
    let out = run_client(command_as_user(&ctl, &probe).args(["core-client", &sock]));
    assert!(out.contains("reply Hello"), "controller: {out}");

    // nobody is not in the socket's group: the mode stops it.
    let out = run_client(command_as(65534, 65534, &probe).args(["core-client", &sock]));
    assert_eq!(out.trim(), "connect err EACCES", "nobody: {out}");

    // inetd-test-peer is in group inetd, so it connects, but SO_PEERCRED
    // says it is not the controller: closed with no reply, and logged.
    let before = warnings(&core.log());
    let out = run_client(command_as_user(&peer, &probe).args(["core-client", &sock]));
    assert!(closed_without_reply(&out), "group member: {out}");
    wait_for(
        "a log line about the refused peer",
        Duration::from_secs(5),
        || {
            let log = core.log();
            warnings(&log) > before && log.contains(&peer.uid.to_string())
        },
    );
}

#[test]
fn a_client_is_judged_by_its_uid_not_its_socket_path() {
    require_root!("clients of other uids");
    require_probe_for_others!();
    let peer = user("inetd-test-peer").expect("user inetd-test-peer");
    let core = Core::start();
    let dir = TempDir::new("forged");
    nix::unistd::chown(
        dir.path(),
        Some(nix::unistd::Uid::from_raw(peer.uid)),
        Some(nix::unistd::Gid::from_raw(peer.gid)),
    )
    .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let forged = dir.join("t;uid=0;");
    let sock = core.socket_path().display().to_string();
    let out = run_client(command_as_user(&peer, probe_path()).args([
        "core-client",
        &sock,
        &forged.display().to_string(),
    ]));
    assert!(closed_without_reply(&out), "forged path: {out}");
    assert!(forged.exists(), "the client did not bind its forged path");
}

// ---------------------------------------------------------------------------
// Malformed input

fn frame_with_len(len: u32, body: &[u8]) -> Vec<u8> {
    let mut f = len.to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

fn frame(payload: &[u8]) -> Vec<u8> {
    frame_with_len(u32::try_from(payload.len()).unwrap(), payload)
}

fn hello(version: u32) -> Vec<u8> {
    encode_frame(&CoreRequest::Hello { version }).unwrap()
}

/// After a bad frame the connection must end: EOF or reset, not a timeout.
fn assert_closed(s: &mut UnixStream, case: &str) {
    match inetd_protocol::read_payload(s) {
        Ok(None) => {}
        Err(ProtocolError::Io(e)) if e.contains("reset") => {}
        other => panic!("{case}: the connection was not closed: {other:?}"),
    }
}

/// Sends `bytes` and checks the answer is an error or a close, and that
/// the connection ends. Problems with the logging are returned, so one
/// missing log line does not hide the other cases.
fn refused(
    core: &Core,
    case: &str,
    setup_hello: bool,
    bytes: &[u8],
    shutdown: bool,
) -> Result<(), String> {
    let before = warnings(&core.log());
    let mut s = core.connect_raw();
    if setup_hello {
        let r = raw_exchange(&mut s, &hello(PROTOCOL_VERSION)).unwrap();
        assert!(matches!(r, Some(CoreResponse::Hello(_))), "{case}: {r:?}");
    }
    s.write_all(bytes)
        .unwrap_or_else(|e| panic!("{case}: write: {e}"));
    if shutdown {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    match raw_exchange(&mut s, &[]) {
        Ok(None) => {}
        Ok(Some(CoreResponse::Error { reason })) => {
            assert!(!reason.is_empty(), "{case}: empty reason");
            assert_closed(&mut s, case);
        }
        Ok(Some(other)) => panic!("{case}: answered {other:?}"),
        Err(e) => panic!("{case}: neither an error nor a close: {e}"),
    }
    assert!(core.is_alive(), "{case}: the core died");
    if wait_until(Duration::from_secs(3), || warnings(&core.log()) > before) {
        Ok(())
    } else {
        Err(format!("{case}: no warning or error logged"))
    }
}

#[test]
fn malformed_frames_end_the_connection_and_the_core_keeps_serving() {
    let core = Core::start();
    let port = free_port();
    core.apply(vec![tcp4(port)]);
    let rss_before = rss_kib(core.pid()).unwrap();

    let mut problems = Vec::new();
    let mut refused = |case: &str, hello: bool, bytes: &[u8], shutdown: bool| {
        if let Err(e) = refused(&core, case, hello, bytes, shutdown) {
            problems.push(e);
        }
    };
    refused(
        "length 0xFFFFFFFF",
        false,
        &frame_with_len(u32::MAX, &[]),
        false,
    );
    refused(
        "length MAX_FRAME+1",
        false,
        &frame_with_len(MAX_FRAME + 1, &[]),
        false,
    );
    refused("zero length", false, &frame_with_len(0, &[]), false);
    refused("garbage", false, &frame(&[0xff; 16]), false);
    refused("garbage after hello", true, &frame(&[0xff; 16]), false);
    refused("unknown tag", true, &frame(&[9, 0, 0, 0]), false);
    refused(
        "truncated frame",
        false,
        &frame_with_len(100, &[0; 10]),
        true,
    );
    refused("truncated header", false, &[0, 0], true);
    let mut trailing = encode_payload(&CoreRequest::Hello {
        version: PROTOCOL_VERSION,
    })
    .unwrap();
    trailing.extend_from_slice(&[0, 0, 0]);
    refused("trailing bytes", false, &frame(&trailing), false);
    // A Vec of 2^62 listeners, declared inside a small frame.
    let mut huge = 1u32.to_le_bytes().to_vec();
    huge.extend_from_slice(&(1u64 << 62).to_le_bytes());
    huge.extend_from_slice(&[0; 32]);
    refused("Vec of 2^62", true, &frame(&huge), false);

    // Apply before Hello: refused, and nothing is applied.
    let p2 = free_port();
    let apply = encode_frame(&CoreRequest::Apply {
        listeners: vec![tcp4(port), tcp4(p2)],
    })
    .unwrap();
    refused("apply before hello", false, &apply, false);
    assert!(connect4(p2).is_err(), "an Apply before Hello was applied");
    // Any request before Hello is answered with an Error.
    let mut s = core.connect_raw();
    let status = encode_frame(&CoreRequest::Status).unwrap();
    assert!(
        matches!(
            raw_exchange(&mut s, &status),
            Ok(Some(CoreResponse::Error { .. }))
        ),
        "a Status before Hello was not answered with an Error"
    );

    // The core still serves its listener and a new control connection.
    Report::read_from(&mut connect4(port).unwrap());
    let mut c = core.client();
    assert_eq!(c.status().listeners.len(), 1);

    let rss_after = rss_kib(core.pid()).unwrap();
    assert!(
        rss_after < rss_before + 4096,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert!(problems.is_empty(), "{problems:#?}\nlog:\n{}", core.log());
}

#[test]
fn a_wrong_version_hello_is_an_error_naming_both_versions() {
    let core = Core::start();
    let before = warnings(&core.log());
    let mut s = core.connect_raw();
    let wrong = PROTOCOL_VERSION + 998;
    match raw_exchange(&mut s, &hello(wrong)) {
        Ok(None) => {}
        Ok(Some(CoreResponse::Error { reason })) => {
            assert!(
                reason.contains(&wrong.to_string())
                    && reason.contains(&PROTOCOL_VERSION.to_string()),
                "the reason does not name both versions: {reason}"
            );
        }
        other => panic!("a wrong version was answered with {other:?}"),
    }
    // Nothing more is served on that connection.
    match raw_exchange(&mut s, &encode_frame(&CoreRequest::Status).unwrap()) {
        Ok(None) | Ok(Some(CoreResponse::Error { .. })) => {}
        other => panic!("served after a version mismatch: {other:?}"),
    }
    wait_for("a logged reason", Duration::from_secs(5), || {
        let log = core.log();
        warnings(&log) > before && log.contains(&wrong.to_string())
    });
    core.client();
}

#[test]
fn a_second_core_on_the_same_socket_exits_1() {
    let first = Core::start();
    let mut second = Core::start_with(CoreOptions {
        socket: Some(first.socket_path().to_path_buf()),
        no_wait: true,
        ..CoreOptions::default()
    });
    let st = second
        .wait_exit(Duration::from_secs(10))
        .expect("the second core kept running");
    assert_eq!(st.code(), Some(1), "log:\n{}", second.log());
    assert!(
        second.log().contains("another core"),
        "no message about the first core: {}",
        second.log()
    );
    // The first one still owns and serves its socket.
    assert!(first.socket_path().exists());
    first.client().status();
}

#[test]
fn a_sigterm_as_soon_as_the_socket_exists_stops_the_core_cleanly() {
    // A service manager may stop the core while it starts. Once the core
    // socket exists the handled signals are already blocked, so the SIGTERM
    // waits for the loop, which exits 0 and removes the socket, instead of
    // killing a core half started. strace widens the window: every capset
    // (the capability cut, after the socket is made) waits 300 ms.
    require_root!("the capability cut happens only in a root core");
    let mut core = Core::start_with(CoreOptions {
        wrapper: vec![
            "strace".into(),
            "-f".into(),
            "-qq".into(),
            "-o".into(),
            "/dev/null".into(),
            "-e".into(),
            "trace=capset".into(),
            "-e".into(),
            "inject=capset:delay_enter=300000".into(),
            "--".into(),
        ],
        no_wait: true,
        ..CoreOptions::default()
    });
    let socket = core.socket_path().to_path_buf();
    wait_for("the core socket", Duration::from_secs(10), || {
        socket.exists() || core.exit_status().is_some()
    });
    core.signal(nix::sys::signal::Signal::SIGTERM);
    // strace exits as its tracee did: with its code, or by its signal.
    let st = core
        .wait_exit(Duration::from_secs(10))
        .expect("the core kept running after SIGTERM");
    assert_eq!(st.code(), Some(0), "{st:?}; log:\n{}", core.log());
    assert!(!socket.exists(), "the socket stayed; log:\n{}", core.log());
}

#[test]
fn the_core_has_no_abstract_socket() {
    // CVE-2020-15257: an abstract socket has no file mode; anyone in the
    // network namespace could connect.
    let dir = TempDir::secure("abstract");
    let core = Core::start_unix(&dir);
    core.apply(vec![tcp4(free_port()), unix_stream(&dir.join("s.sock"))]);
    let _held = core.client();
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", core.pid()))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|t| {
            let t = t.display().to_string();
            Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    assert!(inodes.len() >= 3, "{inodes:?}");
    let table = std::fs::read_to_string("/proc/net/unix").unwrap();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 8 && inodes.iter().any(|i| i == f[6]) {
            assert!(!f[7].starts_with('@'), "abstract socket: {line}");
        }
    }
}

#[test]
fn a_stale_core_socket_is_replaced() {
    let dir = TempDir::new("stale");
    let path = dir.join("core.sock");
    let mut first = Core::start_with(CoreOptions {
        socket: Some(path.clone()),
        ..CoreOptions::default()
    });
    first.signal(nix::sys::signal::Signal::SIGKILL);
    first.wait_exit(Duration::from_secs(5)).expect("killed");
    assert!(path.exists(), "SIGKILL left no socket file to test with");
    let second = Core::start_with(CoreOptions {
        socket: Some(path.clone()),
        ..CoreOptions::default()
    });
    second.client().status();
}

#[test]
fn a_core_refuses_to_remove_a_file_that_is_not_a_socket() {
    let dir = TempDir::new("notsock");
    let path = dir.join("core.sock");
    std::fs::write(&path, "keep").unwrap();
    let mut core = Core::start_with(CoreOptions {
        socket: Some(path.clone()),
        no_wait: true,
        ..CoreOptions::default()
    });
    let st = core
        .wait_exit(Duration::from_secs(10))
        .expect("the core started over a regular file");
    assert_eq!(st.code(), Some(1), "log:\n{}", core.log());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep");
}

#[test]
fn random_frames_on_300_connections_change_nothing() {
    // The malformed cases above, at random: a deterministic xorshift
    // stream gives frames with random lengths (some huge, some zero) and
    // random payloads, a third of them after a valid Hello.
    let core = Core::start();
    let port = free_port();
    let applied = core.apply(vec![tcp4(port)]);
    let before = rss_kib(core.pid()).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..300 {
        let mut c = core.connect_raw();
        let mut bytes = Vec::new();
        if i % 3 == 0 {
            bytes.extend_from_slice(&hello(PROTOCOL_VERSION));
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
        let _ = std::io::Read::read_to_end(&mut c, &mut sink);
    }
    // Still serving, on both planes, with the same listener.
    let st = core.status();
    assert_eq!(st.listeners.len(), 1);
    assert_eq!(st.generation, applied.generation);
    Report::read_from(&mut connect4(port).unwrap());
    let after = rss_kib(core.pid()).unwrap();
    assert!(
        after < before + 8 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}
