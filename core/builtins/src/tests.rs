//! The builtins served in threads of the test process, over loopback.
// The builtins themselves start no thread (they run in a forked child of
// the single-threaded core; see core/clippy.toml); their tests do.
#![allow(clippy::disallowed_methods)]

use super::*;
use crate::answers::{chargen_two_periods, CHARGEN_PERIOD};
use crate::dgram::{amplifies, DGRAM_BATCH};
use crate::limiter::{SOURCE_BURST, SOURCE_INTERVAL};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown as NetShutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::Instant;

const WAIT: Duration = Duration::from_secs(10);

fn sha256_hex(data: &[u8]) -> Option<String> {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let data = data.to_vec();
    let writer = thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().ok()?;
    writer.join().ok()?.ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.split_whitespace().next()?.to_owned())
}

const PERIOD_SHA256: &str = "3cdea95b39ae39243127adde7cd303a8b8c9f25248a3fc0c483ba70b00fb8f19";

/// A connected TCP pair over 127.0.0.1: the client side and the server
/// side as the core would hand it over.
fn tcp_pair() -> (TcpStream, OwnedFd) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    client.set_read_timeout(Some(WAIT)).expect("timeout");
    client.set_write_timeout(Some(WAIT)).expect("timeout");
    (client, OwnedFd::from(server))
}

fn spawn_stream(b: Builtin, conn: OwnedFd) -> Receiver<i32> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(serve_stream(b, conn, WAIT));
    });
    rx
}

/// A UDP builtin on `bind` served in a thread; returns its address and
/// the channel its exit code arrives on.
fn spawn_dgram(
    b: Builtin,
    bind: &str,
    idle: Duration,
    guard: UdpGuard,
) -> Option<(SocketAddr, Receiver<i32>)> {
    let sock = UdpSocket::bind(bind).ok()?;
    let addr = sock.local_addr().ok()?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(serve_dgram(b, OwnedFd::from(sock), idle, &guard));
    });
    Some((addr, rx))
}

fn udp_client(bind: &str) -> UdpSocket {
    let c = UdpSocket::bind(bind).expect("client bind");
    c.set_read_timeout(Some(WAIT)).expect("timeout");
    c
}

fn ipv6_loopback() -> bool {
    let ok = UdpSocket::bind("[::1]:0").is_ok();
    if !ok {
        eprintln!("skipping the ::1 part: no IPv6 loopback here");
    }
    ok
}

fn recv_reply(c: &UdpSocket, from: SocketAddr) -> Vec<u8> {
    let mut buf = vec![0u8; 70_000];
    let (n, src) = c.recv_from(&mut buf).expect("reply");
    assert_eq!(src, from);
    buf.truncate(n);
    buf
}

fn assert_no_datagram(c: &UdpSocket) {
    c.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 16];
    match c.recv_from(&mut buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("expected no datagram, got {other:?}"),
    }
}

// ---- chargen ----

#[test]
fn chargen_lines_are_the_rfc_pattern() {
    let line0 = br##" !"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_`abcdefg"##;
    let line94 = br##"~ !"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_`abcdef"##;
    let line23 = br##"789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\]^_`abcdefghijklmnopqrstuvwxyz{|}~"##;
    for (n, want) in [(0, &line0[..]), (94, &line94[..]), (23, &line23[..])] {
        let got = chargen_line(n);
        assert_eq!(&got[..72], want, "line {n}");
        assert_eq!(&got[72..], b"\r\n");
    }
    let line1 = chargen_line(1);
    assert_eq!((line1[0], line1[71]), (b'!', b'h'));
    assert_eq!(chargen_line(95), chargen_line(0));
    let period = &chargen_two_periods()[..CHARGEN_PERIOD];
    assert_eq!(period.len(), 7030);
    match sha256_hex(period) {
        Some(h) => assert_eq!(h, PERIOD_SHA256),
        None => eprintln!("skipping the SHA-256 check: sha256sum is not available"),
    }
}

#[test]
fn chargen_tcp_starts_at_line_0_and_matches_the_period_hash() {
    let (mut client, conn) = tcp_pair();
    let rx = spawn_stream(Builtin::Chargen, conn);
    // Two periods: the second must repeat the first.
    let mut got = vec![0u8; 2 * CHARGEN_PERIOD];
    client.read_exact(&mut got).expect("read");
    assert_eq!(&got[..74], &chargen_line(0)[..]);
    assert_eq!(&got[74..148], &chargen_line(1)[..]);
    assert_eq!(&got[..CHARGEN_PERIOD], &got[CHARGEN_PERIOD..]);
    match sha256_hex(&got[..CHARGEN_PERIOD]) {
        Some(h) => assert_eq!(h, PERIOD_SHA256),
        None => eprintln!("skipping the SHA-256 check: sha256sum is not available"),
    }
    // Input is read and thrown away without disturbing the stream.
    client.write_all(&[b'x'; 100_000]).expect("write");
    drop(client);
    assert_eq!(rx.recv_timeout(WAIT).expect("chargen returns"), 0);
}

#[test]
fn chargen_tcp_returns_after_a_client_reset() {
    let (mut client, conn) = tcp_pair();
    let rx = spawn_stream(Builtin::Chargen, conn);
    let mut some = [0u8; 1000];
    client.read_exact(&mut some).expect("read");
    set_linger_zero(&client);
    drop(client);
    assert_eq!(rx.recv_timeout(WAIT).expect("chargen returns"), 0);
}

/// SO_LINGER 0: closing the socket sends a reset.
fn set_linger_zero(s: &TcpStream) {
    nix::sys::socket::setsockopt(
        s,
        nix::sys::socket::sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .expect("linger");
}

#[test]
fn chargen_tcp_goes_on_after_the_client_half_closes() {
    let (mut client, conn) = tcp_pair();
    let rx = spawn_stream(Builtin::Chargen, conn);
    client.shutdown(NetShutdown::Write).expect("shutdown");
    let mut got = vec![0u8; 3 * CHARGEN_PERIOD];
    client.read_exact(&mut got).expect("still streaming");
    assert_eq!(&got[..74], &chargen_line(0)[..]);
    assert_eq!(&got[2 * CHARGEN_PERIOD..][..74], &chargen_line(0)[..]);
    drop(client);
    assert_eq!(rx.recv_timeout(WAIT).expect("chargen returns"), 0);
}

#[test]
fn chargen_udp_one_line_per_datagram_advancing() {
    let (addr, rx) = spawn_dgram(
        Builtin::Chargen,
        "127.0.0.1:0",
        Duration::from_millis(500),
        UdpGuard::default(),
    )
    .expect("bind");
    let c = udp_client("127.0.0.1:0");
    for n in 0..3 {
        // Empty and non-empty requests alike get one line.
        let req: &[u8] = if n == 1 { b"" } else { b"hello" };
        c.send_to(req, addr).expect("send");
        assert_eq!(recv_reply(&c, addr), chargen_line(n).to_vec(), "line {n}");
    }
    assert_eq!(rx.recv_timeout(WAIT).expect("idle exit"), 0);
}

// ---- echo ----

#[test]
fn echo_tcp_one_mebibyte_round_trip_then_close() {
    let (client, conn) = tcp_pair();
    let rx = spawn_stream(Builtin::Echo, conn);
    let data: Vec<u8> = (0..1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    let mut writer = client.try_clone().expect("clone");
    let sent = data.clone();
    let w = thread::spawn(move || {
        writer.write_all(&sent).expect("write");
        writer.shutdown(NetShutdown::Write).expect("shutdown");
    });
    let mut back = Vec::new();
    let mut reader = client;
    reader.read_to_end(&mut back).expect("read to EOF");
    w.join().expect("writer");
    assert_eq!(back.len(), data.len());
    assert!(back == data, "echoed bytes differ");
    assert_eq!(rx.recv_timeout(WAIT).expect("echo returns"), 0);
}

fn echo_udp_sizes(bind: &str) {
    let (addr, rx) = spawn_dgram(
        Builtin::Echo,
        bind,
        Duration::from_millis(500),
        UdpGuard::default(),
    )
    .expect("bind");
    let c = udp_client(bind);
    for size in [1usize, 1472, 4096, 8192, 65507, 0] {
        let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
        c.send_to(&data, addr).expect("send");
        assert!(recv_reply(&c, addr) == data, "{size} bytes over {bind}");
    }
    assert_eq!(rx.recv_timeout(WAIT).expect("idle exit"), 0);
}

#[test]
fn echo_udp_whole_datagrams_ipv4() {
    echo_udp_sizes("127.0.0.1:0");
}

#[test]
fn echo_udp_whole_datagrams_ipv6() {
    if ipv6_loopback() {
        echo_udp_sizes("[::1]:0");
    }
}

#[test]
fn echo_over_a_unix_socketpair_handed_over_nonblocking() {
    let (mut client, server) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    // The core may hand the descriptor over in either mode.
    server.set_nonblocking(true).expect("nonblocking");
    client.set_read_timeout(Some(WAIT)).expect("timeout");
    let rx = spawn_stream(Builtin::Echo, OwnedFd::from(server));
    client.write_all(b"ping over a socketpair").expect("write");
    client.shutdown(NetShutdown::Write).expect("shutdown");
    let mut back = Vec::new();
    client.read_to_end(&mut back).expect("read to EOF");
    assert_eq!(back, b"ping over a socketpair");
    assert_eq!(rx.recv_timeout(WAIT).expect("echo returns"), 0);
}

#[test]
fn echo_tcp_returns_when_the_client_resets() {
    let (mut client, conn) = tcp_pair();
    let rx = spawn_stream(Builtin::Echo, conn);
    client.write_all(b"x").expect("write");
    let mut one = [0u8; 1];
    client.read_exact(&mut one).expect("echoed");
    set_linger_zero(&client);
    drop(client);
    assert_eq!(rx.recv_timeout(WAIT).expect("echo returns"), 0);
}

// ---- discard ----

#[test]
fn discard_tcp_reads_and_sends_nothing() {
    let (mut client, conn) = tcp_pair();
    let rx = spawn_stream(Builtin::Discard, conn);
    client.write_all(&[7u8; 200_000]).expect("write");
    client.shutdown(NetShutdown::Write).expect("shutdown");
    let mut back = Vec::new();
    client.read_to_end(&mut back).expect("read to EOF");
    assert!(back.is_empty());
    assert_eq!(rx.recv_timeout(WAIT).expect("discard returns"), 0);
}

#[test]
fn discard_udp_never_replies() {
    let (addr, rx) = spawn_dgram(
        Builtin::Discard,
        "127.0.0.1:0",
        Duration::from_millis(300),
        UdpGuard::default(),
    )
    .expect("bind");
    let c = udp_client("127.0.0.1:0");
    for req in [&b""[..], b"x", &[0u8; 1000]] {
        c.send_to(req, addr).expect("send");
    }
    // Once the child has left, anything it would have sent is queued.
    assert_eq!(rx.recv_timeout(WAIT).expect("idle exit"), 0);
    assert_no_datagram(&c);
}

// ---- daytime ----

/// `^(Mon|...|Sun) (Jan|...|Dec) [ 123][0-9] [0-2][0-9]:[0-5][0-9]:[0-6][0-9] [0-9]{4}\r\n$`
fn looks_like_daytime(s: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(s) else {
        return false;
    };
    let b = s.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    b.len() == 26
        && s.get(0..3).is_some_and(|d| DAYS.contains(&d))
        && at(3, b' ')
        && s.get(4..7).is_some_and(|m| MONTHS.contains(&m))
        && at(7, b' ')
        && b.get(8).is_some_and(|c| b" 123".contains(c))
        && digit(9)
        && at(10, b' ')
        && b.get(11).is_some_and(|c| (b'0'..=b'2').contains(c))
        && digit(12)
        && at(13, b':')
        && b.get(14).is_some_and(|c| (b'0'..=b'5').contains(c))
        && digit(15)
        && at(16, b':')
        && b.get(17).is_some_and(|c| (b'0'..=b'6').contains(c))
        && digit(18)
        && at(19, b' ')
        && (20..24).all(digit)
        && s.ends_with("\r\n")
}

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The answer is the local ctime of an instant within 2 s of the test's
/// clock.
fn assert_daytime_now(answer: &[u8], before: i64, after: i64) {
    assert!(
        looks_like_daytime(answer),
        "{:?}",
        String::from_utf8_lossy(answer)
    );
    let text = String::from_utf8_lossy(answer);
    assert!(
        (before - 2..=after + 2).any(|t| daytime_line(t).as_deref() == Some(&*text)),
        "{text:?} is not within 2 s of now"
    );
}

#[test]
fn daytime_format_examples() {
    assert!(looks_like_daytime(b"Wed Nov 26 06:27:00 2025\r\n"));
    assert!(looks_like_daytime(b"Sun Nov  2 06:27:00 2025\r\n"));
    assert!(!looks_like_daytime(b"Sun Nov 2 06:27:00 2025\r\n"));
    assert!(!looks_like_daytime(b"Wed Nov 26 06:27:00 2025\n"));
    let line = daytime_line(unix_now()).expect("local time");
    assert!(looks_like_daytime(line.as_bytes()), "{line:?}");
}

#[test]
fn daytime_tcp_one_line_then_close() {
    let (mut client, conn) = tcp_pair();
    let before = unix_now();
    let rx = spawn_stream(Builtin::Daytime, conn);
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).expect("read to EOF");
    let after = unix_now();
    assert_daytime_now(&answer, before, after);
    drop(client);
    assert_eq!(rx.recv_timeout(WAIT).expect("daytime returns"), 0);
}

#[test]
fn daytime_udp_answers_each_datagram() {
    let (addr, rx) = spawn_dgram(
        Builtin::Daytime,
        "127.0.0.1:0",
        Duration::from_millis(300),
        UdpGuard::default(),
    )
    .expect("bind");
    let c = udp_client("127.0.0.1:0");
    for req in [&b""[..], b"what time is it"] {
        let before = unix_now();
        c.send_to(req, addr).expect("send");
        let answer = recv_reply(&c, addr);
        assert_daytime_now(&answer, before, unix_now());
    }
    assert_eq!(rx.recv_timeout(WAIT).expect("idle exit"), 0);
}

// ---- time ----

#[test]
fn time_vectors() {
    assert_eq!(time_bytes(0), [0x83, 0xaa, 0x7e, 0x80]);
    assert_eq!(time_bytes(1_700_000_000), [0xe8, 0xfe, 0x6f, 0x80]);
    assert_eq!(time_bytes(2_085_978_495), [0xff, 0xff, 0xff, 0xff]);
    assert_eq!(time_bytes(2_085_978_496), [0x00, 0x00, 0x00, 0x00]);
    // RFC 868's own examples.
    assert_eq!(u32::from_be_bytes(time_bytes(189_302_400)), 2_398_291_200);
    assert_eq!(u32::from_be_bytes(time_bytes(420_595_200)), 2_629_584_000);
}

fn assert_time_now(answer: &[u8]) {
    let got: [u8; 4] = answer.try_into().expect("exactly 4 bytes");
    let want = u32::from_be_bytes(time_bytes(unix_now()));
    let diff = u32::from_be_bytes(got).wrapping_sub(want) as i32;
    assert!((-2..=2).contains(&diff), "off by {diff} s");
}

#[test]
fn time_tcp_four_bytes_then_close() {
    let (mut client, conn) = tcp_pair();
    let rx = spawn_stream(Builtin::Time, conn);
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).expect("read to EOF");
    assert_time_now(&answer);
    drop(client);
    assert_eq!(rx.recv_timeout(WAIT).expect("time returns"), 0);
}

#[test]
fn time_udp_answers_an_empty_datagram() {
    let (addr, rx) = spawn_dgram(
        Builtin::Time,
        "127.0.0.1:0",
        Duration::from_millis(300),
        UdpGuard::default(),
    )
    .expect("bind");
    let c = udp_client("127.0.0.1:0");
    c.send_to(b"", addr).expect("send");
    assert_time_now(&recv_reply(&c, addr));
    assert_eq!(rx.recv_timeout(WAIT).expect("idle exit"), 0);
}

// ---- UDP guards, rate cap, idle ----

#[test]
fn udp_guard_table() {
    let guard = UdpGuard {
        builtin_ports: vec![7, 20007, 20019],
    };
    let v4 = |s: &str, port| SocketAddr::new(s.parse().expect("ip"), port);
    let cases: &[(SocketAddr, bool)] = &[
        (v4("192.0.2.1", 20), false),
        (v4("192.0.2.1", 1023), false),
        (v4("192.0.2.1", 1024), true),
        (v4("192.0.2.1", 2049), false),
        (v4("192.0.2.1", 2048), true),
        (v4("192.0.2.1", 20007), false),
        (v4("192.0.2.1", 20019), false),
        (v4("192.0.2.1", 20008), true),
        (v4("255.255.255.255", 40000), false),
        (v4("255.1.2.3", 40000), false),
        (v4("224.0.0.1", 40000), false),
        (v4("239.255.255.250", 40000), false),
        (v4("0.0.0.0", 40000), false),
        (v4("0.1.2.3", 40000), false),
        (v4("127.0.0.1", 40000), true),
        (v4("127.0.0.2", 40000), true),
        (v4("10.1.2.3", 40000), true),
        (v4("::", 40000), false),
        (v4("ff02::1", 40000), false),
        (v4("::1", 40000), true),
        (v4("::1", 2049), false),
        (v4("::1", 80), false),
        (v4("2001:db8::1", 40000), true),
        (v4("fe80::1", 40000), true),
        (v4("::ffff:127.0.0.1", 40000), true),
        (v4("::ffff:127.0.0.1", 20019), false),
        (v4("::ffff:224.0.0.1", 40000), false),
        (v4("::ffff:255.255.255.255", 40000), false),
        (v4("::ffff:0.0.0.0", 40000), false),
        (v4("::ffff:192.0.2.1", 40000), true),
        (v4("::192.0.2.1", 40000), false),
    ];
    for &(src, want) in cases {
        assert_eq!(udp_reply_allowed(src, &guard), want, "{src}");
    }
}

#[test]
fn serve_dgram_refuses_a_builtin_source_port_and_answers_others() {
    let refused = udp_client("127.0.0.1:0");
    let refused_port = refused.local_addr().expect("addr").port();
    let guard = UdpGuard {
        builtin_ports: vec![refused_port],
    };
    let (addr, rx) = spawn_dgram(
        Builtin::Echo,
        "127.0.0.1:0",
        Duration::from_millis(300),
        guard,
    )
    .expect("bind");
    let allowed = udp_client("127.0.0.1:0");
    refused.send_to(b"loop?", addr).expect("send");
    allowed.send_to(b"hello", addr).expect("send");
    // The child serves in arrival order: once the second is answered,
    // the first was judged.
    assert_eq!(recv_reply(&allowed, addr), b"hello");
    assert_eq!(rx.recv_timeout(WAIT).expect("idle exit"), 0);
    assert_no_datagram(&refused);
}

#[test]
fn serve_dgram_never_answers_its_own_port() {
    // The guard's list is empty: the socket's own port is refused anyway.
    let (addr, rx) = spawn_dgram(
        Builtin::Echo,
        "127.0.0.1:0",
        Duration::from_millis(300),
        UdpGuard::default(),
    )
    .expect("bind");
    // Same port on another loopback address: what a spoofed request
    // from a twin inetd, or from ourselves, looks like.
    let Ok(twin) = UdpSocket::bind(("127.0.0.2", addr.port())) else {
        eprintln!("skipping: cannot bind 127.0.0.2:{}", addr.port());
        return;
    };
    let honest = udp_client("127.0.0.1:0");
    twin.send_to(b"loop?", addr).expect("send");
    honest.send_to(b"hello", addr).expect("send");
    assert_eq!(recv_reply(&honest, addr), b"hello");
    assert_eq!(rx.recv_timeout(WAIT).expect("idle exit"), 0);
    assert_no_datagram(&twin);
}

/// A UDP builtin on 127.0.0.1 that starts serving only after `queue`
/// has sent its datagrams, so they are all queued when it first reads.
fn serve_after(b: Builtin, guard: UdpGuard, queue: impl FnOnce(SocketAddr)) -> Receiver<i32> {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    queue(sock.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let idle = Duration::from_millis(300);
        let _ = tx.send(serve_dgram(b, OwnedFd::from(sock), idle, &guard));
    });
    rx
}

#[test]
fn echo_answers_a_queued_burst_in_order_across_batches() {
    // Two sources (each within its reply budget).
    let a = udp_client("127.0.0.1:0");
    let c = udp_client("127.0.0.2:0");
    let guarded = udp_client("127.0.0.1:0");
    let guard = UdpGuard {
        builtin_ports: vec![guarded.local_addr().expect("addr").port()],
    };
    // More than two batches, the guarded source in the middle of each.
    let rounds = DGRAM_BATCH + 2;
    let mut server = None;
    let rx = serve_after(Builtin::Echo, guard, |addr| {
        server = Some(addr);
        for i in 0..rounds {
            a.send_to(format!("a{i}").as_bytes(), addr).expect("send");
            guarded.send_to(b"loop?", addr).expect("send");
            c.send_to(&vec![b'c'; 1 + i * 100], addr).expect("send");
        }
    });
    let addr = server.expect("bound");
    for i in 0..rounds {
        assert_eq!(recv_reply(&a, addr), format!("a{i}").as_bytes());
        assert_eq!(recv_reply(&c, addr), vec![b'c'; 1 + i * 100]);
    }
    assert_eq!(rx.recv_timeout(WAIT).expect("idle exit"), 0);
    assert_no_datagram(&a);
    assert_no_datagram(&c);
    assert_no_datagram(&guarded);
}

#[test]
fn chargen_answers_a_queued_burst_line_by_line() {
    let c = udp_client("127.0.0.1:0");
    // Within the per-source burst, and across a batch boundary.
    let sent = DGRAM_BATCH + 4;
    assert!(sent <= SOURCE_BURST as usize);
    let mut server = None;
    let rx = serve_after(Builtin::Chargen, UdpGuard::default(), |addr| {
        server = Some(addr);
        for _ in 0..sent {
            c.send_to(b"?", addr).expect("send");
        }
    });
    let addr = server.expect("bound");
    for n in 0..sent {
        assert_eq!(recv_reply(&c, addr), chargen_line(n), "line {n}");
    }
    assert_eq!(rx.recv_timeout(WAIT).expect("idle exit"), 0);
    assert_no_datagram(&c);
}

#[test]
fn serve_dgram_leaves_after_idle() {
    let idle = Duration::from_millis(200);
    // Without any datagram.
    let start = Instant::now();
    let (_, rx) =
        spawn_dgram(Builtin::Echo, "127.0.0.1:0", idle, UdpGuard::default()).expect("bind");
    assert_eq!(rx.recv_timeout(WAIT).expect("idle exit"), 0);
    assert!(start.elapsed() >= idle);
    // `idle` counts from the last datagram.
    let (addr, rx) =
        spawn_dgram(Builtin::Echo, "127.0.0.1:0", idle, UdpGuard::default()).expect("bind");
    let c = udp_client("127.0.0.1:0");
    let sent = Instant::now();
    c.send_to(b"a", addr).expect("send");
    assert_eq!(recv_reply(&c, addr), b"a");
    assert_eq!(rx.recv_timeout(WAIT).expect("idle exit"), 0);
    assert!(sent.elapsed() >= idle);
}

#[test]
fn serve_dgram_leaves_the_shared_file_flags_alone() {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = |s: &UdpSocket| {
        OFlag::from_bits_retain(fcntl(s.as_raw_fd(), FcntlArg::F_GETFL).expect("F_GETFL"))
    };
    for nonblocking in [false, true] {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_nonblocking(nonblocking).expect("set");
        // The core's copy: same open file description.
        let cores_copy = sock.try_clone().expect("dup");
        let before = flags(&cores_copy);
        let addr = sock.local_addr().expect("addr");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let guard = UdpGuard::default();
            let idle = Duration::from_millis(200);
            let _ = tx.send(serve_dgram(
                Builtin::Echo,
                OwnedFd::from(sock),
                idle,
                &guard,
            ));
        });
        let c = udp_client("127.0.0.1:0");
        c.send_to(b"x", addr).expect("send");
        assert_eq!(recv_reply(&c, addr), b"x");
        assert_eq!(flags(&cores_copy), before, "nonblocking = {nonblocking}");
        assert_eq!(rx.recv_timeout(WAIT).expect("idle exit"), 0);
    }
}

#[test]
fn udp_echo_has_a_per_source_budget_so_a_reflector_loop_ends() {
    assert!(!amplifies(Builtin::Echo));
    assert!(amplifies(Builtin::Chargen) && amplifies(Builtin::Time));
    let (addr, rx) = spawn_dgram(
        Builtin::Echo,
        "127.0.0.1:0",
        Duration::from_millis(500),
        UdpGuard::default(),
    )
    .expect("bind");
    // Another echo that answers at once, as a reflector on a high port
    // would: each reply is the next request. The loop must end.
    let c = udp_client("127.0.0.1:0");
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let start = Instant::now();
    let mut answered = 0u32;
    let mut buf = [0u8; 16];
    c.send_to(b"ping", addr).expect("send");
    while let Ok((n, _)) = c.recv_from(&mut buf) {
        answered += 1;
        c.send_to(&buf[..n], addr).expect("send");
    }
    let refill = (start.elapsed().as_micros() / SOURCE_INTERVAL.as_micros()) as u32 + 1;
    assert!(answered >= SOURCE_BURST, "{answered} answers");
    assert!(answered <= SOURCE_BURST + refill, "{answered} answers");
    // Other sources are answered meanwhile.
    let other = udp_client("127.0.0.1:0");
    other.send_to(b"hello", addr).expect("send");
    assert_eq!(recv_reply(&other, addr), b"hello");
    assert_eq!(rx.recv_timeout(WAIT).expect("idle exit"), 0);
}

#[test]
fn a_stream_builtin_closes_a_connection_without_progress() {
    let idle = Duration::from_millis(300);
    // chargen to a client that never reads: the send buffer fills, then
    // nothing moves.
    let (client, conn) = tcp_pair();
    let start = Instant::now();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(serve_stream(Builtin::Chargen, conn, idle));
    });
    assert_eq!(rx.recv_timeout(WAIT).expect("chargen gives up"), 0);
    assert!(start.elapsed() >= idle);
    drop(client);
    // echo to a client that sends nothing.
    let (client, conn) = tcp_pair();
    let start = Instant::now();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(serve_stream(Builtin::Echo, conn, idle));
    });
    assert_eq!(rx.recv_timeout(WAIT).expect("echo gives up"), 0);
    assert!(start.elapsed() >= idle);
    drop(client);
}

#[test]
fn serve_dgram_caps_replies_to_one_source() {
    let (addr, rx) = spawn_dgram(
        Builtin::Time,
        "127.0.0.1:0",
        Duration::from_millis(300),
        UdpGuard::default(),
    )
    .expect("bind");
    let c = udp_client("127.0.0.1:0");
    let sent = 100;
    let start = Instant::now();
    for _ in 0..sent {
        c.send_to(b"", addr).expect("send");
    }
    let sending = start.elapsed();
    assert_eq!(rx.recv_timeout(WAIT).expect("idle exit"), 0);
    c.set_nonblocking(true).expect("nonblocking");
    let mut replies = 0u32;
    let mut buf = [0u8; 8];
    while c.recv_from(&mut buf).is_ok() {
        replies += 1;
    }
    // The burst, plus what the refill allows while the requests came in.
    let refill = (sending.as_micros() / SOURCE_INTERVAL.as_micros()) as u32 + 1;
    assert!(replies >= SOURCE_BURST.min(sent), "{replies} replies");
    assert!(replies <= SOURCE_BURST + refill, "{replies} replies");
    assert!(replies < sent, "{replies} replies: no cap");
}
