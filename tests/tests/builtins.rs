//! Black-box tests of the `internal` services through the real `inetd-core`.
//!
//! The test plays the controller: it starts `inetd-core` in packaged mode on a
//! private core socket, sends `Hello` and an `Apply` with builtin listeners on
//! 127.0.0.1 and ::1 (dynamic ports), and talks to them over loopback. Run as
//! root (as CI does), the services run as `nobody`; otherwise as the invoking
//! user, and the tests that are about other users say why they skip.

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket,
};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use inetd_protocol::{
    read_message, write_message, Action, Bind, Builtin, CoreRequest, CoreResponse, Credentials,
    IpMode, Limits, ListenerSpec, Outcome, SocketType, StatusReport, PROTOCOL_VERSION,
};

const WAIT: Duration = Duration::from_secs(10);
const NOBODY: u32 = 65534;
const NOGROUP: u32 = 65534;

/// SHA-256 of the first 95 chargen lines (notes/inetd-behaviour.md, section 2).
const CHARGEN_PERIOD_SHA256: &str =
    "3cdea95b39ae39243127adde7cd303a8b8c9f25248a3fc0c483ba70b00fb8f19";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The directory the test binaries and the workspace's binaries share:
/// `target/<profile>/deps/<test>` → `target/<profile>`, which follows
/// `CARGO_TARGET_DIR` and the profile without looking at either.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("deps dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Polls `f` until it returns `Some`, or panics with `what` at the deadline.
fn wait_until<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// A running `inetd-core`, stopped (SIGTERM, then reaped) on drop.
struct Core {
    child: Child,
    dir: PathBuf,
    sock: PathBuf,
}

static CORES: AtomicU32 = AtomicU32::new(0);

impl Core {
    fn start(dgram_idle: u32) -> Core {
        Core::start_with_env(dgram_idle, &[])
    }

    fn start_with_env(dgram_idle: u32, env: &[(&str, &str)]) -> Core {
        let bin = bin_dir().join("inetd-core");
        assert!(
            bin.exists(),
            "{} is missing: run `cargo build --workspace` first",
            bin.display()
        );
        let n = CORES.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("inetd-builtins-{}-{}", std::process::id(), n));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("test dir");
        let sock = dir.join("core.sock");
        let log = fs::File::create(dir.join("core.log")).expect("log file");
        let child = Command::new(&bin)
            .arg("--core-socket")
            .arg(&sock)
            .arg("--dgram-idle")
            .arg(dgram_idle.to_string())
            .arg("--log-level")
            .arg("debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start inetd-core");
        let mut core = Core { child, dir, sock };
        wait_until("the core socket", WAIT, || {
            if let Ok(Some(status)) = core.child.try_wait() {
                panic!("inetd-core exited early ({status}): {}", core.log());
            }
            UnixStream::connect(&core.sock).ok()
        });
        core
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("core.log")).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A core link that has said Hello.
    fn link(&self) -> UnixStream {
        let mut s = UnixStream::connect(&self.sock).expect("connect core.sock");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        write_message(
            &mut s,
            &CoreRequest::Hello {
                version: PROTOCOL_VERSION,
            },
        )
        .expect("hello");
        match read_message::<CoreResponse, _>(&mut s).expect("hello reply") {
            CoreResponse::Hello(h) => assert_eq!(h.version, PROTOCOL_VERSION),
            other => panic!("unexpected answer to Hello: {other:?}"),
        }
        s
    }

    fn apply(&self, listeners: Vec<ListenerSpec>) {
        let mut s = self.link();
        let n = listeners.len();
        write_message(&mut s, &CoreRequest::Apply { listeners }).expect("apply");
        match read_message::<CoreResponse, _>(&mut s).expect("apply reply") {
            CoreResponse::Applied(r) => {
                assert_eq!(r.outcomes.len(), n);
                for o in &r.outcomes {
                    assert!(
                        matches!(o, Outcome::Added | Outcome::Changed | Outcome::Unchanged),
                        "listener not applied: {o:?}\n{}",
                        self.log()
                    );
                }
            }
            other => panic!("apply refused: {other:?}"),
        }
    }

    fn status(&self) -> StatusReport {
        let mut s = self.link();
        write_message(&mut s, &CoreRequest::Status).expect("status");
        match read_message::<CoreResponse, _>(&mut s).expect("status reply") {
            CoreResponse::Status(r) => r,
            other => panic!("unexpected answer to Status: {other:?}"),
        }
    }
}

/// The parent pid of `pid`, from /proc.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state, ppid, ...
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

impl Drop for Core {
    fn drop(&mut self) {
        // The core leaves running services alone when it stops; a dgram
        // builtin child would linger until its idle timeout. End the ones
        // this core started, checked by parentage just before the signal.
        let children: Vec<u32> = if let Ok(mut s) = UnixStream::connect(&self.sock) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let hello = CoreRequest::Hello {
                version: PROTOCOL_VERSION,
            };
            match (
                write_message(&mut s, &hello),
                read_message::<CoreResponse, _>(&mut s),
                write_message(&mut s, &CoreRequest::Status),
                read_message::<CoreResponse, _>(&mut s),
            ) {
                (Ok(()), Ok(_), Ok(()), Ok(CoreResponse::Status(st))) => {
                    st.children.iter().map(|c| c.pid).collect()
                }
                _ => Vec::new(),
            }
        } else {
            Vec::new()
        };
        for pid in children {
            if parent_of(pid) == Some(self.child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let end = Instant::now() + WAIT;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The ids builtins run with: nobody as root, else the invoking user (a
/// non-root core refuses any other uid).
fn service_creds() -> Credentials {
    if is_root() {
        Credentials {
            uid: NOBODY,
            gid: NOGROUP,
            groups: vec![NOGROUP],
        }
    } else {
        Credentials {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            groups: nix::unistd::getgroups()
                .unwrap_or_default()
                .into_iter()
                .map(|g| g.as_raw())
                .collect(),
        }
    }
}

fn spec(addr: IpAddr, port: u16, socket_type: SocketType, b: Builtin) -> ListenerSpec {
    ListenerSpec {
        bind: Bind::Inet {
            addr,
            port,
            mode: if addr.is_ipv4() {
                IpMode::V4
            } else {
                IpMode::V6Only
            },
        },
        socket_type,
        // As an operator writes them; the core serves builtins its own way
        // whatever this says.
        wait: socket_type == SocketType::Dgram,
        action: Action::Builtin(b),
        creds: service_creds(),
        limits: Limits::default(),
        acl: None,
        label: format!("{} builtin test", b.name()),
    }
}

/// A port that was free a moment ago on `addr` for `socket_type`.
fn free_port(addr: IpAddr, socket_type: SocketType) -> u16 {
    let at = SocketAddr::new(addr, 0);
    match socket_type {
        SocketType::Dgram => UdpSocket::bind(at).expect("bind").local_addr(),
        _ => TcpListener::bind(at).expect("bind").local_addr(),
    }
    .expect("local_addr")
    .port()
}

fn loopbacks() -> Vec<IpAddr> {
    let mut v = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    if UdpSocket::bind("[::1]:0").is_ok() {
        v.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
    } else {
        eprintln!("skipping ::1: no IPv6 loopback on this host");
    }
    v
}

/// Listeners for all five builtins of `socket_type` on every loopback
/// address: (address, builtin) → port.
struct Layout {
    entries: Vec<(IpAddr, Builtin, u16)>,
}

impl Layout {
    fn new(socket_type: SocketType) -> Layout {
        let mut entries = Vec::new();
        for addr in loopbacks() {
            for b in Builtin::ALL {
                entries.push((addr, b, free_port(addr, socket_type)));
            }
        }
        Layout { entries }
    }

    fn specs(&self, socket_type: SocketType) -> Vec<ListenerSpec> {
        self.entries
            .iter()
            .map(|&(a, b, p)| spec(a, p, socket_type, b))
            .collect()
    }

    fn at(&self, addr: IpAddr, b: Builtin) -> SocketAddr {
        let &(a, _, p) = self
            .entries
            .iter()
            .find(|(a, bb, _)| *a == addr && *bb == b)
            .expect("listener");
        SocketAddr::new(a, p)
    }
}

/// Connects, retrying while the core sets the listener up.
fn connect(to: SocketAddr) -> TcpStream {
    let s = wait_until("a TCP connection", WAIT, || TcpStream::connect(to).ok());
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.set_write_timeout(Some(WAIT)).expect("timeout");
    s
}

fn chargen_line(n: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..72).map(|i| b' ' + ((n + i) % 95) as u8).collect();
    v.extend_from_slice(b"\r\n");
    v
}

fn sha256_hex(data: &[u8]) -> Option<String> {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(data).ok()?;
    let out = child.wait_with_output().ok()?;
    Some(
        String::from_utf8(out.stdout)
            .ok()?
            .split_whitespace()
            .next()?
            .to_owned(),
    )
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// `Www Mmm dd hh:mm:ss yyyy\r\n`, and the same instant as date(1) prints
/// it in this host's zone (the core's), within 2 s of now.
fn assert_daytime(answer: &[u8]) {
    assert_daytime_in(answer, None);
}

/// As [`assert_daytime`], in the zone `tz` (a TZ value) if given.
fn assert_daytime_in(answer: &[u8], tz: Option<&str>) {
    let text = String::from_utf8(answer.to_vec()).expect("ASCII");
    assert_eq!(text.len(), 26, "{text:?}");
    assert!(text.ends_with("\r\n"), "{text:?}");
    let now = unix_now();
    let near: Vec<String> = (now - 2..=now + 2)
        .filter_map(|t| {
            let mut date = Command::new("date");
            if let Some(tz) = tz {
                date.env("TZ", tz);
            }
            let out = date
                .env("LC_ALL", "C")
                .arg("-d")
                .arg(format!("@{t}"))
                .arg("+%a %b %e %H:%M:%S %Y")
                .output()
                .ok()?;
            Some(String::from_utf8(out.stdout).ok()?.trim_end().to_owned())
        })
        .collect();
    if near.is_empty() {
        eprintln!("skipping the daytime value check: date -d is not available");
        return;
    }
    assert!(
        near.iter().any(|d| *d == text[..24]),
        "{text:?} not within 2 s of {near:?}"
    );
}

fn assert_time(answer: &[u8]) {
    let got: [u8; 4] = answer.try_into().expect("exactly 4 bytes");
    let want = (unix_now() + 2_208_988_800) as u32;
    let diff = u32::from_be_bytes(got).wrapping_sub(want) as i32;
    assert!((-2..=2).contains(&diff), "off by {diff} s");
}

#[test]
fn stream_builtins_over_ipv4_and_ipv6() {
    let core = Core::start(30);
    let layout = Layout::new(SocketType::Stream);
    core.apply(layout.specs(SocketType::Stream));
    for addr in loopbacks() {
        // echo: bytes back, and EOF after our shutdown.
        let mut s = connect(layout.at(addr, Builtin::Echo));
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = s.try_clone().expect("clone");
        let sent = data.clone();
        let writer = std::thread::spawn(move || {
            w.write_all(&sent).expect("write");
            w.shutdown(Shutdown::Write).expect("shutdown");
        });
        let mut back = Vec::new();
        s.read_to_end(&mut back).expect("echo to EOF");
        writer.join().expect("writer");
        assert!(back == data, "echo over {addr}");

        // discard: nothing back, EOF after ours.
        let mut s = connect(layout.at(addr, Builtin::Discard));
        s.write_all(&[1u8; 10_000]).expect("write");
        s.shutdown(Shutdown::Write).expect("shutdown");
        let mut back = Vec::new();
        s.read_to_end(&mut back).expect("discard to EOF");
        assert!(back.is_empty(), "discard over {addr}");

        // chargen: from line 0, the RFC pattern.
        let mut s = connect(layout.at(addr, Builtin::Chargen));
        let mut got = vec![0u8; 95 * 74];
        s.read_exact(&mut got).expect("chargen");
        assert_eq!(&got[..74], &chargen_line(0)[..], "chargen over {addr}");
        assert_eq!(&got[94 * 74..], &chargen_line(94)[..]);
        if let Some(h) = sha256_hex(&got) {
            assert_eq!(h, CHARGEN_PERIOD_SHA256);
        }
        drop(s);

        // daytime: one line, then EOF.
        let mut s = connect(layout.at(addr, Builtin::Daytime));
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).expect("daytime to EOF");
        assert_daytime(&answer);

        // time: four bytes, then EOF.
        let mut s = connect(layout.at(addr, Builtin::Time));
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).expect("time to EOF");
        assert_time(&answer);
    }
}

fn udp_client(addr: IpAddr) -> UdpSocket {
    let c = UdpSocket::bind(SocketAddr::new(addr, 0)).expect("client bind");
    c.set_read_timeout(Some(WAIT)).expect("timeout");
    c
}

fn udp_ask(c: &UdpSocket, to: SocketAddr, req: &[u8]) -> Vec<u8> {
    c.send_to(req, to).expect("send");
    let mut buf = vec![0u8; 70_000];
    let (n, from) = c.recv_from(&mut buf).expect("UDP reply");
    assert_eq!(from, to);
    buf.truncate(n);
    buf
}

#[test]
fn dgram_builtins_over_ipv4_and_ipv6() {
    let core = Core::start(30);
    let layout = Layout::new(SocketType::Dgram);
    core.apply(layout.specs(SocketType::Dgram));
    for addr in loopbacks() {
        let c = udp_client(addr);
        for size in [0usize, 1, 1472, 8192] {
            let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
            let back = udp_ask(&c, layout.at(addr, Builtin::Echo), &data);
            assert!(back == data, "echo of {size} bytes over {addr}");
        }
        for n in 0..3 {
            let line = udp_ask(&c, layout.at(addr, Builtin::Chargen), b"");
            assert_eq!(line, chargen_line(n), "chargen line {n} over {addr}");
        }
        assert_daytime(&udp_ask(&c, layout.at(addr, Builtin::Daytime), b""));
        assert_time(&udp_ask(&c, layout.at(addr, Builtin::Time), b""));
    }
}

#[test]
fn dgram_builtins_refuse_the_port_of_another_builtin() {
    // CVE-1999-0103: a request "from" chargen's port to echo must not start
    // an echo/chargen loop.
    let core = Core::start(30);
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let echo_port = free_port(lo, SocketType::Dgram);
    // The client takes the port the chargen listener is configured on; the
    // chargen listener itself lives on another address of 127/8 so both can
    // bind it.
    let spoofer = udp_client(lo);
    let chargen_port = spoofer.local_addr().expect("addr").port();
    let other_lo = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    core.apply(vec![
        spec(lo, echo_port, SocketType::Dgram, Builtin::Echo),
        spec(other_lo, chargen_port, SocketType::Dgram, Builtin::Chargen),
    ]);
    let echo = SocketAddr::new(lo, echo_port);
    let honest = udp_client(lo);
    // Let the echo listener come up: an honest request is answered.
    assert_eq!(udp_ask(&honest, echo, b"first"), b"first");
    spoofer.send_to(b"loop?", echo).expect("send");
    // Served in arrival order by the same child: once this is answered, the
    // spoofed one was judged.
    assert_eq!(udp_ask(&honest, echo, b"second"), b"second");
    spoofer.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 64];
    match spoofer.recv_from(&mut buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("echo answered a builtin's port: {other:?}"),
    }
}

/// The pid of the one child the core runs for `b` (stream), once it runs.
fn builtin_child(core: &Core, b: Builtin) -> (u32, u32) {
    wait_until("the builtin's child", WAIT, || {
        let st = core.status();
        let index = st
            .listeners
            .iter()
            .position(|l| l.spec.action == Action::Builtin(b))?;
        let index = u32::try_from(index).ok()?;
        st.children
            .iter()
            .find(|c| c.listener == Some(index))
            .map(|c| (c.pid, c.uid))
    })
}

/// The real, effective, saved and filesystem uids of `pid`.
fn proc_uids(pid: u32) -> Option<Vec<u32>> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect()
}

/// A live, non-zombie process.
fn running(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name.
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

#[test]
fn chargen_child_runs_as_nobody_and_leaves_after_a_reset() {
    if !is_root() {
        eprintln!("skipping: needs root to run the service as nobody");
        return;
    }
    let core = Core::start(30);
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let port = free_port(lo, SocketType::Stream);
    core.apply(vec![spec(lo, port, SocketType::Stream, Builtin::Chargen)]);
    let mut s = connect(SocketAddr::new(lo, port));
    let mut some = [0u8; 7030];
    s.read_exact(&mut some).expect("chargen");
    let (pid, uid) = builtin_child(&core, Builtin::Chargen);
    assert_ne!(pid, core.pid());
    assert_eq!(uid, NOBODY, "the core's view of the child");
    assert_eq!(
        proc_uids(pid).expect("/proc status"),
        vec![NOBODY; 4],
        "the answering process is not nobody"
    );
    // A rude abort: RST, with chargen's data still in flight.
    nix::sys::socket::setsockopt(
        &s,
        nix::sys::socket::sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .expect("SO_LINGER");
    drop(s);
    wait_until("the chargen child to end and be reaped", WAIT, || {
        (!running(pid) && !std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
    // The core itself is unaffected and serves the next client.
    let mut s = connect(SocketAddr::new(lo, port));
    let mut line = [0u8; 74];
    s.read_exact(&mut line).expect("chargen again");
    assert_eq!(&line[..], &chargen_line(0)[..]);
}

#[test]
fn dgram_children_run_as_nobody_discard_stays_silent_and_idle_children_leave() {
    let core = Core::start(1);
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let time_port = free_port(lo, SocketType::Dgram);
    let discard_port = free_port(lo, SocketType::Dgram);
    core.apply(vec![
        spec(lo, time_port, SocketType::Dgram, Builtin::Time),
        spec(lo, discard_port, SocketType::Dgram, Builtin::Discard),
    ]);
    let c = udp_client(lo);
    assert_time(&udp_ask(&c, SocketAddr::new(lo, time_port), b""));
    let (time_pid, uid) = builtin_child(&core, Builtin::Time);
    if is_root() {
        assert_eq!(uid, NOBODY);
        if let Some(uids) = proc_uids(time_pid) {
            assert_eq!(uids, vec![NOBODY; 4]);
        }
    }
    let d = udp_client(lo);
    d.send_to(b"drop me", SocketAddr::new(lo, discard_port))
        .expect("send");
    // The discard child runs once the core has seen the datagram, and
    // leaves (--dgram-idle 1) only after reading it: any reply would be
    // queued by then.
    let (discard_pid, _) = builtin_child(&core, Builtin::Discard);
    for pid in [time_pid, discard_pid] {
        wait_until("an idle dgram child to leave", WAIT, || {
            (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
        });
    }
    d.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 64];
    match d.recv_from(&mut buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("discard answered: {other:?}"),
    }
    // The core polls the socket again and starts a new child.
    assert_time(&udp_ask(&c, SocketAddr::new(lo, time_port), b"again"));
}

/// Every datagram queued on `c` now, without waiting.
fn drain(c: &UdpSocket) -> Vec<Vec<u8>> {
    c.set_nonblocking(true).expect("nonblocking");
    let mut out = Vec::new();
    let mut buf = vec![0u8; 70_000];
    while let Ok((n, _)) = c.recv_from(&mut buf) {
        out.push(buf[..n].to_vec());
    }
    c.set_nonblocking(false).expect("blocking");
    out
}

/// Waits until the dgram child of `b` has started and left again (idle).
fn wait_for_idle_exit(core: &Core, b: Builtin) {
    let (pid, _) = builtin_child(core, b);
    wait_until("the idle dgram child to leave", WAIT, || {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
}

#[test]
fn dgram_builtins_refuse_nfs_and_privileged_source_ports() {
    let core = Core::start(1);
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let port = free_port(lo, SocketType::Dgram);
    core.apply(vec![spec(lo, port, SocketType::Dgram, Builtin::Echo)]);
    let echo = SocketAddr::new(lo, port);
    let mut refused = Vec::new();
    match UdpSocket::bind((Ipv4Addr::LOCALHOST, 2049)) {
        Ok(s) => refused.push(s),
        Err(e) => eprintln!("skipping source port 2049: {e}"),
    }
    if is_root() {
        // Some privileged port that is free here.
        if let Some(s) = (600..1024).find_map(|p| UdpSocket::bind((Ipv4Addr::LOCALHOST, p)).ok()) {
            refused.push(s);
        }
    } else {
        eprintln!("skipping a privileged source port: needs root");
    }
    let honest = udp_client(lo);
    assert_eq!(udp_ask(&honest, echo, b"first"), b"first");
    for s in &refused {
        s.send_to(b"reflect me", echo).expect("send");
    }
    // Same child, arrival order: once this is answered the others were judged.
    assert_eq!(udp_ask(&honest, echo, b"second"), b"second");
    for s in &refused {
        let from = s.local_addr().expect("addr");
        assert!(
            drain(s).is_empty(),
            "echo answered source port {}",
            from.port()
        );
    }
}

#[test]
fn udp_chargen_one_line_per_request_and_a_per_source_cap() {
    // TA14-017A: an empty datagram gets exactly one reply of at most 512
    // bytes, and one source cannot draw an unbounded stream of them.
    let core = Core::start(1);
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let port = free_port(lo, SocketType::Dgram);
    core.apply(vec![spec(lo, port, SocketType::Dgram, Builtin::Chargen)]);
    let to = SocketAddr::new(lo, port);
    let c = udp_client(lo);
    assert_eq!(udp_ask(&c, to, b""), chargen_line(0));
    let sent = 200usize;
    let start = Instant::now();
    for _ in 0..sent {
        c.send_to(b"", to).expect("send");
    }
    let sending = start.elapsed();
    // The child leaves (--dgram-idle 1) only after reading every request:
    // all its answers are queued by then.
    wait_for_idle_exit(&core, Builtin::Chargen);
    let replies = drain(&c);
    assert!(
        replies.iter().all(|r| r.len() == 74),
        "one 74-byte line each"
    );
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(*r, chargen_line(i + 1), "line {}", i + 1);
    }
    // Burst of 32 per source (one used above), then 16 per second.
    let allowed = 31 + (sending.as_millis() as usize) * 16 / 1000 + 1;
    assert!(replies.len() >= 16, "{} replies", replies.len());
    assert!(
        replies.len() <= allowed && replies.len() < sent,
        "{} replies to {sent} requests in {sending:?}: not capped",
        replies.len()
    );
}

#[test]
fn daytime_follows_the_cores_time_zone() {
    // A POSIX TZ string needs no zone files: UTC+05:30, which differs from
    // any whole-hour host zone.
    let tz = "XST-05:30";
    let core = Core::start_with_env(30, &[("TZ", tz)]);
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let port = free_port(lo, SocketType::Stream);
    core.apply(vec![spec(lo, port, SocketType::Stream, Builtin::Daytime)]);
    let mut s = connect(SocketAddr::new(lo, port));
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).expect("daytime to EOF");
    assert_daytime_in(&answer, Some(tz));
}
