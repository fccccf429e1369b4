//! Black-box tests of the `internal` services through the real `inetd-core`.
//!
//! The test plays the controller: it starts `inetd-core` in packaged mode on a
//! private core socket, sends an `Apply` with builtin listeners on 127.0.0.1
//! and ::1 (dynamic ports), and talks to them over loopback. Run as root (as
//! CI does), the services run as `nobody`; otherwise as the invoking user,
//! and the tests that are about other users say why they skip.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use inetd_tests::protocol::{Action, Builtin, IpMode, ListenerSpec, ListenerState, SocketType};
use inetd_tests::{
    assert_all_applied, connect_to, free_port, has_ipv6, in_private_netns, inet_spec, open_fds,
    proc_status, recv_from, require_root, root_or_skip, service_creds, skip, wait_for, wait_until,
    Core, CoreOptions, SpecExt,
};

const WAIT: Duration = Duration::from_secs(10);
const NOBODY: &str = "65534";

/// SHA-256 of the first 95 chargen lines (RFC 864's pattern, as the classic inetds send it).
const CHARGEN_PERIOD_SHA256: &str =
    "3cdea95b39ae39243127adde7cd303a8b8c9f25248a3fc0c483ba70b00fb8f19";

/// A core whose dgram builtin children leave after `dgram_idle` seconds
/// without a datagram, with `env` added to the tests' environment.
fn start_core(dgram_idle: u32, env: &[(&str, &str)]) -> Core {
    let env = (!env.is_empty()).then(|| {
        std::env::vars()
            .chain(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .collect()
    });
    Core::start_with(CoreOptions {
        args: vec!["--dgram-idle".into(), dgram_idle.to_string()],
        env,
        ..CoreOptions::default()
    })
}

/// A builtin listener on `addr:port`, as an operator writes it (dgram
/// `wait`, stream `nowait`; the core serves builtins its own way whatever
/// the field says), running as [`service_creds`].
fn builtin_spec(addr: IpAddr, port: u16, socket_type: SocketType, b: Builtin) -> ListenerSpec {
    let mode = if addr.is_ipv4() {
        IpMode::V4
    } else {
        IpMode::V6Only
    };
    inet_spec(addr, port, mode, socket_type)
        .builtin(b)
        .wait(socket_type == SocketType::Dgram)
        .creds(service_creds())
        .label(&format!("{} builtin test", b.name()))
}

/// Applies one builtin listener on 127.0.0.1 and returns its port.
fn one_builtin(core: &Core, socket_type: SocketType, b: Builtin) -> u16 {
    let port = free_port();
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    assert_all_applied(&core.apply(vec![builtin_spec(lo, port, socket_type, b)]));
    port
}

fn loopbacks() -> Vec<IpAddr> {
    let mut v = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    if has_ipv6() {
        v.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
    } else {
        skip("::1: no IPv6 loopback on this host");
    }
    v
}

/// All five builtins of `socket_type` on every loopback address.
struct Layout {
    entries: Vec<(IpAddr, Builtin, u16)>,
}

impl Layout {
    fn new() -> Layout {
        let mut entries = Vec::new();
        for addr in loopbacks() {
            for b in Builtin::ALL {
                entries.push((addr, b, free_port()));
            }
        }
        Layout { entries }
    }

    fn specs(&self, socket_type: SocketType) -> Vec<ListenerSpec> {
        self.entries
            .iter()
            .map(|&(a, b, p)| builtin_spec(a, p, socket_type, b))
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

fn connect(to: SocketAddr) -> TcpStream {
    let s = connect_to(to).unwrap_or_else(|e| panic!("connect {to}: {e}"));
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.set_write_timeout(Some(WAIT)).expect("timeout");
    s
}

fn chargen_line(n: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..72).map(|i| b' ' + ((n + i) % 95) as u8).collect();
    v.extend_from_slice(b"\r\n");
    v
}

/// SHA-256 of `data` in hex, through coreutils' sha256sum.
fn sha256_hex(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum (coreutils)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(data)
        .expect("write to sha256sum");
    let out = child.wait_with_output().expect("sha256sum");
    String::from_utf8(out.stdout)
        .expect("sha256sum output")
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_owned()
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// `Www Mmm dd hh:mm:ss yyyy\r\n`, equal to what date(1) prints for an
/// instant within 2 s of now, in the zone `tz` (a TZ value) or the host's.
fn assert_daytime(answer: &[u8], tz: Option<&str>) {
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
        skip("the daytime value check: date -d is not available");
        return;
    }
    assert!(
        near.iter().any(|d| *d == text[..24]),
        "{text:?} not within 2 s of {near:?}"
    );
}

/// Four bytes, RFC 868 seconds since 1900 within 2 s of now.
fn assert_time(answer: &[u8]) {
    let got: [u8; 4] = answer.try_into().expect("exactly 4 bytes");
    let want = (unix_now() + 2_208_988_800) as u32;
    let diff = u32::from_be_bytes(got).wrapping_sub(want) as i32;
    assert!((-2..=2).contains(&diff), "off by {diff} s");
}

fn udp_client(addr: IpAddr) -> UdpSocket {
    let c = UdpSocket::bind(SocketAddr::new(addr, 0)).expect("client bind");
    c.set_read_timeout(Some(WAIT)).expect("timeout");
    c
}

fn udp_ask(c: &UdpSocket, to: SocketAddr, req: &[u8]) -> Vec<u8> {
    c.send_to(req, to).expect("send");
    let mut buf = vec![0u8; 70_000];
    let (n, from) = recv_from(c, &mut buf).expect("UDP reply");
    assert_eq!(from, to);
    buf.truncate(n);
    buf
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

/// The pid and uid of the (first) child the core runs for builtin `b`,
/// once it runs.
fn builtin_child(core: &Core, b: Builtin) -> (u32, u32) {
    let mut found = None;
    wait_for("the builtin's child", WAIT, || {
        let st = core.status();
        let Some(index) = st
            .listeners
            .iter()
            .position(|l| l.spec.action == Action::Builtin(b))
            .and_then(|i| u32::try_from(i).ok())
        else {
            return false;
        };
        found = st
            .children
            .iter()
            .find(|c| c.listener == Some(index))
            .map(|c| (c.pid, c.uid));
        found.is_some()
    });
    found.expect("found")
}

fn gone(pid: u32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Asserts the real, effective, saved and filesystem uids of `pid` are
/// nobody's; the caller makes sure it still runs.
fn assert_runs_as_nobody(pid: u32) {
    let st = proc_status(pid as i32).unwrap_or_else(|| panic!("pid {pid} is gone"));
    let uids: Vec<&str> = st.get("Uid").expect("Uid").split_whitespace().collect();
    assert_eq!(uids, [NOBODY; 4], "pid {pid} does not run as nobody");
}

#[test]
fn stream_builtins_over_ipv4_and_ipv6() {
    let core = start_core(30, &[]);
    let layout = Layout::new();
    assert_all_applied(&core.apply(layout.specs(SocketType::Stream)));
    for addr in loopbacks() {
        // echo: 1 MiB back, and EOF after our shutdown.
        let mut s = connect(layout.at(addr, Builtin::Echo));
        let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
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
        assert_eq!(sha256_hex(&got), CHARGEN_PERIOD_SHA256);
        drop(s);

        // daytime: one line, then EOF.
        let mut s = connect(layout.at(addr, Builtin::Daytime));
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).expect("daytime to EOF");
        assert_daytime(&answer, None);

        // time: four bytes, then EOF.
        let mut s = connect(layout.at(addr, Builtin::Time));
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).expect("time to EOF");
        assert_time(&answer);
    }
}

#[test]
fn dgram_builtins_over_ipv4_and_ipv6() {
    let core = start_core(30, &[]);
    let layout = Layout::new();
    assert_all_applied(&core.apply(layout.specs(SocketType::Dgram)));
    for addr in loopbacks() {
        let c = udp_client(addr);
        for size in [0usize, 1, 1472, 8192, 65_507] {
            let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
            let back = udp_ask(&c, layout.at(addr, Builtin::Echo), &data);
            assert!(back == data, "echo of {size} bytes over {addr}");
        }
        for n in 0..3 {
            let line = udp_ask(&c, layout.at(addr, Builtin::Chargen), b"");
            assert_eq!(line, chargen_line(n), "chargen line {n} over {addr}");
        }
        assert_daytime(&udp_ask(&c, layout.at(addr, Builtin::Daytime), b""), None);
        assert_time(&udp_ask(&c, layout.at(addr, Builtin::Time), b""));
    }
}

#[test]
fn dgram_builtins_refuse_the_port_of_another_builtin() {
    // CVE-1999-0103: a request "from" chargen's port to echo must not start
    // an echo/chargen loop.
    let core = start_core(30, &[]);
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let echo_port = free_port();
    // The client takes the port the chargen listener is configured on; the
    // chargen listener itself lives on another address of 127/8 so both can
    // bind it.
    let spoofer = udp_client(lo);
    let chargen_port = spoofer.local_addr().expect("addr").port();
    let other_lo = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    assert_all_applied(&core.apply(vec![
        builtin_spec(lo, echo_port, SocketType::Dgram, Builtin::Echo),
        builtin_spec(other_lo, chargen_port, SocketType::Dgram, Builtin::Chargen),
    ]));
    let echo = SocketAddr::new(lo, echo_port);
    let honest = udp_client(lo);
    assert_eq!(udp_ask(&honest, echo, b"first"), b"first");
    spoofer.send_to(b"loop?", echo).expect("send");
    // Served in arrival order by the same child: once this is answered, the
    // spoofed one was judged.
    assert_eq!(udp_ask(&honest, echo, b"second"), b"second");
    assert!(drain(&spoofer).is_empty(), "echo answered a builtin's port");
}

#[test]
fn dgram_builtins_refuse_nfs_and_privileged_source_ports() {
    // Its own network namespace: the test needs ports 2049 and 1023 free,
    // whatever the host runs (an NFS server holds 2049).
    require_root!("a network namespace of its own, and privileged source ports");
    in_private_netns(|| {
        let core = start_core(30, &[]);
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let port = one_builtin(&core, SocketType::Dgram, Builtin::Echo);
        let echo = SocketAddr::new(lo, port);
        let refused: Vec<UdpSocket> = [2049, 1023, 1]
            .into_iter()
            .map(|p| {
                UdpSocket::bind((Ipv4Addr::LOCALHOST, p))
                    .unwrap_or_else(|e| panic!("bind source port {p}: {e}"))
            })
            .collect();
        let honest = udp_client(lo);
        assert_eq!(udp_ask(&honest, echo, b"first"), b"first");
        for s in &refused {
            s.send_to(b"reflect me", echo).expect("send");
        }
        // Same child, arrival order: once this is answered the others were
        // judged.
        assert_eq!(udp_ask(&honest, echo, b"second"), b"second");
        for s in &refused {
            let from = s.local_addr().expect("addr");
            assert!(
                drain(s).is_empty(),
                "echo answered source port {}",
                from.port()
            );
        }
    });
}

#[test]
fn udp_chargen_one_line_per_request_and_a_per_source_cap() {
    // TA14-017A: an empty datagram gets exactly one reply of at most 512
    // bytes, and one source cannot draw an unbounded stream of them.
    let core = start_core(1, &[]);
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let port = one_builtin(&core, SocketType::Dgram, Builtin::Chargen);
    let to = SocketAddr::new(lo, port);
    let c = udp_client(lo);
    assert_eq!(udp_ask(&c, to, b""), chargen_line(0));
    let (pid, _) = builtin_child(&core, Builtin::Chargen);
    let sent = 200usize;
    let start = Instant::now();
    for _ in 0..sent {
        c.send_to(b"", to).expect("send");
    }
    let sending = start.elapsed();
    // The child leaves (--dgram-idle 1) only after reading every request:
    // all its answers are queued by then.
    wait_for("the idle chargen child to leave", WAIT, || gone(pid));
    let replies = drain(&c);
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(
            *r,
            chargen_line(i + 1),
            "line {}: one 74-byte line each",
            i + 1
        );
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
fn chargen_child_runs_as_nobody_and_leaves_after_a_reset() {
    require_root!("the service runs as nobody only under a root core");
    let core = start_core(30, &[]);
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let port = one_builtin(&core, SocketType::Stream, Builtin::Chargen);
    let mut s = connect(SocketAddr::new(lo, port));
    let mut some = [0u8; 7030];
    s.read_exact(&mut some).expect("chargen");
    // The child runs until the reset below: it blocks writing to us.
    let (pid, uid) = builtin_child(&core, Builtin::Chargen);
    assert_ne!(pid as i32, core.pid());
    assert_eq!(uid, 65534, "the core's view of the child");
    assert_runs_as_nobody(pid);
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
    wait_for("the chargen child to end and be reaped", WAIT, || gone(pid));
    // Ended, not killed (SIGPIPE is at its default in children): the core
    // logs each reaped child's status.
    let exit = format!(": pid {pid} ");
    wait_for("the exit line", WAIT, || {
        core.log()
            .lines()
            .any(|l| l.contains(&exit) && (l.contains("ended") || l.contains("failed")))
    });
    let log = core.log();
    let line = log
        .lines()
        .find(|l| l.contains(&exit) && (l.contains("ended") || l.contains("failed")))
        .expect("exit line");
    assert!(line.contains(": exit "), "{line}");
    // The core itself is unaffected and serves the next client.
    let mut s = connect(SocketAddr::new(lo, port));
    let mut line = [0u8; 74];
    s.read_exact(&mut line).expect("chargen again");
    assert_eq!(&line[..], &chargen_line(0)[..]);
}

#[test]
fn a_dgram_child_runs_as_nobody_holding_only_its_socket_while_the_listener_waits() {
    // Idle children leave after 30 s here: the child is there for every
    // check.
    let core = start_core(30, &[]);
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let time_port = one_builtin(&core, SocketType::Dgram, Builtin::Time);
    let c = udp_client(lo);
    assert_time(&udp_ask(&c, SocketAddr::new(lo, time_port), b""));
    let (time_pid, uid) = builtin_child(&core, Builtin::Time);
    if root_or_skip("the dgram child runs as nobody only under a root core") {
        assert_eq!(uid, 65534);
        assert_runs_as_nobody(time_pid);
    }
    // While the child runs the listener is not polled, and the child holds
    // its socket as its only descriptor, with no capabilities.
    let st = core.status();
    assert!(
        st.children.iter().any(|c| c.pid == time_pid),
        "the child left: {st:?}"
    );
    let l = st
        .listeners
        .iter()
        .find(|l| l.spec.action == Action::Builtin(Builtin::Time))
        .expect("the time listener");
    assert_eq!(l.state, ListenerState::Waiting);
    let fds = open_fds(time_pid as i32);
    assert_eq!(fds, [0], "the dgram child's descriptors");
    let st = proc_status(time_pid as i32).expect("the dgram child runs");
    assert_eq!(st["CapEff"], "0000000000000000");
    // It goes on answering from the same socket.
    assert_time(&udp_ask(&c, SocketAddr::new(lo, time_port), b"again"));
    assert_eq!(builtin_child(&core, Builtin::Time).0, time_pid);
}

#[test]
fn discard_stays_silent_and_idle_dgram_children_leave() {
    let core = start_core(1, &[]);
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let time_port = free_port();
    let discard_port = free_port();
    assert_all_applied(&core.apply(vec![
        builtin_spec(lo, time_port, SocketType::Dgram, Builtin::Time),
        builtin_spec(lo, discard_port, SocketType::Dgram, Builtin::Discard),
    ]));
    let c = udp_client(lo);
    assert_time(&udp_ask(&c, SocketAddr::new(lo, time_port), b""));
    let (time_pid, _) = builtin_child(&core, Builtin::Time);
    let d = udp_client(lo);
    d.send_to(b"drop me", SocketAddr::new(lo, discard_port))
        .expect("send");
    // The discard child runs once the core has seen the datagram, and
    // leaves (--dgram-idle 1) only after reading it: any reply would be
    // queued by then.
    let (discard_pid, _) = builtin_child(&core, Builtin::Discard);
    for pid in [time_pid, discard_pid] {
        wait_for("an idle dgram child to leave", WAIT, || gone(pid));
    }
    let leftover = drain(&d);
    assert!(leftover.is_empty(), "discard answered: {leftover:?}");
    // The core polls the socket again and starts a new child.
    assert_time(&udp_ask(&c, SocketAddr::new(lo, time_port), b"again"));
    let (again, _) = builtin_child(&core, Builtin::Time);
    assert_ne!(again, time_pid, "a new child");
}

#[test]
fn daytime_follows_the_cores_time_zone() {
    // A POSIX TZ string needs no zone files: UTC+05:30, which differs from
    // any whole-hour host zone.
    let tz = "XST-05:30";
    let core = start_core(30, &[("TZ", tz)]);
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let port = one_builtin(&core, SocketType::Stream, Builtin::Daytime);
    let mut s = connect(SocketAddr::new(lo, port));
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).expect("daytime to EOF");
    assert_daytime(&answer, Some(tz));
}

#[test]
fn no_builtin_child_is_left_once_clients_are_done() {
    // Stream builtins end with their connection; nothing lingers.
    let core = start_core(30, &[]);
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let entries: Vec<(Builtin, u16)> = Builtin::ALL.iter().map(|&b| (b, free_port())).collect();
    assert_all_applied(
        &core.apply(
            entries
                .iter()
                .map(|&(b, p)| builtin_spec(lo, p, SocketType::Stream, b))
                .collect(),
        ),
    );
    for &(b, port) in &entries {
        // Connect and close at once, before the service said anything: the
        // child finds its client gone, whatever the service.
        let s = connect(SocketAddr::new(lo, port));
        drop(s);
        // And a client that waits for the service to end (daytime, time)
        // or ends it (echo, discard, chargen: reset with data unread).
        let mut s = connect(SocketAddr::new(lo, port));
        if matches!(b, Builtin::Daytime | Builtin::Time) {
            let mut answer = Vec::new();
            s.read_to_end(&mut answer).expect("answer to EOF");
            assert!(!answer.is_empty());
        } else {
            s.write_all(b"x").expect("write");
        }
    }
    assert!(
        wait_until(WAIT, || core.children().is_empty()),
        "children left: {:?}; log:\n{}",
        core.children(),
        core.log()
    );
}

#[test]
fn builtin_children_are_named_for_ps_and_pgrep() {
    let core = start_core(30, &[]);
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let chargen = one_builtin(&core, SocketType::Stream, Builtin::Chargen);
    let mut s = connect(SocketAddr::new(lo, chargen));
    let mut some = [0u8; 74];
    s.read_exact(&mut some).expect("chargen");
    let (pid, _) = builtin_child(&core, Builtin::Chargen);
    let pid = i32::try_from(pid).unwrap();
    assert_eq!(inetd_tests::comm(pid).as_deref(), Some("inetd-chargen"));
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let shown: Vec<&[u8]> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .collect();
    assert_eq!(
        shown,
        [&b"inetd-chargen"[..]],
        "ps shows the builtin's name"
    );
    // `pgrep -x inetd-core` finds the core and not its builtin children.
    let out = Command::new("pgrep")
        .args(["-x", "inetd-core"])
        .output()
        .expect("pgrep");
    let pids: Vec<i32> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert!(pids.contains(&core.pid()), "{pids:?}");
    assert!(!pids.contains(&pid), "{pids:?}");
    // The core's own name and command line are untouched.
    assert_eq!(inetd_tests::comm(core.pid()).as_deref(), Some("inetd-core"));
    let own = std::fs::read(format!("/proc/{}/cmdline", core.pid())).unwrap();
    assert!(own.windows(13).any(|w| w == b"--core-socket"), "{own:?}");
}

#[test]
fn stream_builtins_close_a_connection_without_progress() {
    // 50 chargen clients that never read held 50 children forever, each
    // with megabytes queued; now each is closed after --builtin-idle.
    let core = Core::start_args(&["--builtin-idle", "1"]);
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let (chargen, echo) = (free_port(), free_port());
    assert_all_applied(&core.apply(vec![
        builtin_spec(lo, chargen, SocketType::Stream, Builtin::Chargen),
        builtin_spec(lo, echo, SocketType::Stream, Builtin::Echo),
    ]));
    let silent: Vec<TcpStream> = (0..5)
        .map(|_| connect(SocketAddr::new(lo, chargen)))
        .chain((0..5).map(|_| connect(SocketAddr::new(lo, echo))))
        .collect();
    wait_for("ten children", WAIT, || core.children().len() == 10);
    wait_for("every idle connection closed", WAIT, || {
        core.children().is_empty()
    });
    // The echo clients see the end of the stream.
    for mut s in silent.into_iter().skip(5) {
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).expect("end of file"), 0);
    }
    // A client that makes progress is served past the idle time.
    let mut s = connect(SocketAddr::new(lo, echo));
    for _ in 0..3 {
        s.write_all(b"ping").expect("write");
        let mut b = [0u8; 4];
        s.read_exact(&mut b).expect("echo");
        assert_eq!(&b, b"ping");
        // Still open 600 ms later (a read times out, no end of file).
        s.set_read_timeout(Some(Duration::from_millis(600)))
            .expect("timeout");
        assert!(s.read(&mut b).is_err(), "closed while making progress");
    }
}
