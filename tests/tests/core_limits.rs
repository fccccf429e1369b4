//! The limits the core enforces after accept and before fork: children per
//! service and in total (the listener is held, connections wait in the
//! backlog), the service's rate (paused, resumes by itself), per-source
//! rate and children (grouped by prefix, IPv4 and an IPv6 /64), failed
//! wait servers (no fork loop), and that the defaults serve a burst. Short
//! windows come from the core's `--rate-window` and `--pause`.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Command;
use std::time::Duration;

use inetd_protocol::{Builtin, IpMode, Limits, ListenerState, SocketType};
use inetd_tests::*;
use nix::errno::Errno;
use nix::sys::socket::{
    bind, connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage,
};

const T: Duration = Duration::from_secs(10);

/// A TCP connection to `to` from the address `src` (any port); with
/// `freebind`, `src` need not be configured on an interface (an address of
/// a local route). `nonblocking`: the connect is started, not waited for.
fn socket_from(src: IpAddr, to: SocketAddr, freebind: bool, nonblocking: bool) -> OwnedFd {
    let af = match to {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let mut flags = SockFlag::SOCK_CLOEXEC;
    if nonblocking {
        flags |= SockFlag::SOCK_NONBLOCK;
    }
    let fd = socket(af, SockType::Stream, flags, None).expect("socket");
    if freebind {
        setsockopt(&fd, sockopt::IpFreebind, &true).expect("IP_FREEBIND");
    }
    bind(
        fd.as_raw_fd(),
        &SockaddrStorage::from(SocketAddr::new(src, 0)),
    )
    .unwrap_or_else(|e| panic!("bind {src}: {e}"));
    match connect(fd.as_raw_fd(), &SockaddrStorage::from(to)) {
        Ok(()) => {}
        Err(Errno::EINPROGRESS) if nonblocking => {}
        Err(e) => panic!("connect {to} from {src}: {e}"),
    }
    fd
}

fn connect_from(src: &str, to: SocketAddr) -> TcpStream {
    let s = TcpStream::from(socket_from(src.parse().unwrap(), to, false, false));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

fn lo(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// What daytime sends to a client from `src`: a line, or "" when the
/// connection was refused before fork (closed at once).
fn daytime_from(src: &str, to: SocketAddr) -> String {
    read_all(&mut connect_from(src, to))
}

/// An echo round trip on `s`: whether the byte came back.
fn echoes(s: &mut TcpStream) -> bool {
    if s.write_all(b"x").is_err() {
        return false;
    }
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(1))
}

fn with_limits(
    spec: inetd_protocol::ListenerSpec,
    f: impl FnOnce(&mut Limits),
) -> inetd_protocol::ListenerSpec {
    let mut l = Limits::default();
    f(&mut l);
    spec.limits(l)
}

fn counters(core: &Core, port: u16) -> inetd_protocol::Counters {
    core.status()
        .listeners
        .into_iter()
        .find(|l| matches!(l.spec.bind, inetd_protocol::Bind::Inet { port: p, .. } if p == port))
        .expect("the listener")
        .counters
}

#[test]
fn idle_connections_past_max_child_wait_in_the_backlog() {
    let _g = serial();
    let core = Core::start();
    let port = free_port();
    let spec = with_limits(tcp4(port).builtin(Builtin::Echo), |l| l.max_children = 20);
    assert_all_applied(&core.apply(vec![spec]));
    // 300 clients that connect and send nothing.
    let clients: Vec<OwnedFd> = (0..300)
        .map(|_| socket_from("127.0.0.1".parse().unwrap(), lo(port), false, true))
        .collect();
    wait_for("20 children, held at the limit", T, || {
        let c = counters(&core, port);
        c.children == 20 && c.at_max_children >= 1
    });
    // The listener is not polled: nothing more is accepted, nothing forks.
    for _ in 0..3 {
        let c = counters(&core, port);
        assert_eq!((c.children, c.accepted), (20, 20));
        assert_eq!(core.children().len(), 20);
        assert_eq!(
            (c.refused_rate, c.refused_per_source, c.refused_acl),
            (0, 0, 0)
        );
    }
    // Recovers by itself: the clients go, their children end, the backlog
    // is served, and a new client is answered.
    drop(clients);
    wait_for("every child to end", T, || core.children().is_empty());
    let mut s = connect4(port).unwrap();
    assert!(echoes(&mut s));
    assert!(core.log().matches("at its children limit").count() <= 2);
}

#[test]
fn the_core_total_holds_every_listener() {
    let core = Core::start_args(&["--max-children", "4"]);
    let (a, b) = (free_port(), free_port());
    assert_all_applied(&core.apply(vec![
        tcp4(a).builtin(Builtin::Echo),
        tcp4(b).builtin(Builtin::Echo),
    ]));
    let mut held = Vec::new();
    for p in [a, a, a, b, b, b] {
        held.push(TcpStream::from(socket_from(
            "127.0.0.1".parse().unwrap(),
            lo(p),
            false,
            false,
        )));
    }
    wait_for("4 children in all", T, || core.children().len() == 4);
    let total = |core: &Core| {
        let (ca, cb) = (counters(core, a), counters(core, b));
        (
            ca.children + cb.children,
            ca.at_max_children + cb.at_max_children,
        )
    };
    for _ in 0..3 {
        let (children, holds) = total(&core);
        assert_eq!(children, 4);
        assert!(holds >= 1);
        assert_eq!(core.children().len(), 4);
    }
    // One goes: a waiting connection is served.
    held.remove(0);
    wait_for("the next connection served", T, || {
        let (ca, cb) = (counters(&core, a), counters(&core, b));
        ca.accepted + cb.accepted == 5
    });
    assert_eq!(total(&core).0, 4);
}

#[test]
fn the_rate_limit_pauses_at_exactly_its_number_and_resumes() {
    let core = Core::start_args(&["--pause", "2"]);
    let port = free_port();
    let spec = with_limits(tcp4(port).builtin(Builtin::Daytime), |l| {
        l.max_per_minute = 5
    });
    assert_all_applied(&core.apply(vec![spec]));
    for i in 0..5 {
        assert!(!daytime_from("127.0.0.1", lo(port)).is_empty(), "{i}");
    }
    // The sixth pauses the service; every connection meanwhile is closed
    // at once and never forks.
    assert_eq!(daytime_from("127.0.0.1", lo(port)), "");
    assert_eq!(daytime_from("127.0.0.1", lo(port)), "");
    let st = core.status().listeners.remove(0);
    match &st.state {
        ListenerState::Paused { reason, until } => {
            assert!(reason.contains("rate limit of 5"), "{reason}");
            assert!(*until >= now_unix() && *until <= now_unix() + 3, "{until}");
        }
        other => panic!("not paused: {other:?}"),
    }
    assert_eq!((st.counters.accepted, st.counters.refused_rate), (5, 2));
    // A paused listener keeps its port: nobody else can bind it meanwhile.
    let squat = std::net::TcpListener::bind(lo(port));
    assert!(
        squat.as_ref().err().map(|e| e.kind()) == Some(std::io::ErrorKind::AddrInUse),
        "the paused port could be bound: {squat:?}"
    );
    // It resumes by itself.
    core.wait_state(&st.spec.bind, T, |s| *s == ListenerState::Listening);
    assert!(!daytime_from("127.0.0.1", lo(port)).is_empty());
    assert_eq!(counters(&core, port).accepted, 6);
    core.wait_log(": resumed: its pause is over", T);
}

#[test]
fn per_source_rate_counts_each_source_and_its_window_ends() {
    let core = Core::start_args(&["--rate-window", "2"]);
    let port = free_port();
    let spec = with_limits(tcp4(port).builtin(Builtin::Daytime), |l| {
        l.max_per_source_per_minute = 3
    });
    assert_all_applied(&core.apply(vec![spec]));
    for i in 0..3 {
        assert!(!daytime_from("127.0.0.1", lo(port)).is_empty(), "{i}");
    }
    assert_eq!(daytime_from("127.0.0.1", lo(port)), "");
    // Another source is served meanwhile.
    assert!(!daytime_from("127.0.0.2", lo(port)).is_empty());
    let c = counters(&core, port);
    assert_eq!(
        (c.accepted, c.refused_per_source, c.refused_rate),
        (4, 1, 0)
    );
    // The window ends by itself.
    wait_for("the first source served again", T, || {
        !daytime_from("127.0.0.1", lo(port)).is_empty()
    });
}

#[test]
fn per_source_children_refuse_that_source_only() {
    let core = Core::start();
    let port = free_port();
    let spec = with_limits(tcp4(port).builtin(Builtin::Echo), |l| {
        l.max_children_per_source = 2
    });
    assert_all_applied(&core.apply(vec![spec]));
    let mut first = connect_from("127.0.0.1", lo(port));
    let mut second = connect_from("127.0.0.1", lo(port));
    assert!(echoes(&mut first) && echoes(&mut second));
    let mut third = connect_from("127.0.0.1", lo(port));
    assert!(!echoes(&mut third), "a third child for one source");
    let mut other = connect_from("127.0.0.3", lo(port));
    assert!(echoes(&mut other));
    let c = counters(&core, port);
    assert_eq!((c.accepted, c.refused_per_source, c.children), (3, 1, 3));
    drop(first);
    wait_for("a child of the first source to end", T, || {
        counters(&core, port).children == 2
    });
    let mut again = connect_from("127.0.0.1", lo(port));
    assert!(echoes(&mut again));
}

#[test]
fn per_source_children_are_released_when_a_child_fails() {
    let core = Core::start();
    let port = free_port();
    let spec = with_limits(tcp4(port).exec("/bin/false", &["false"]), |l| {
        l.max_children_per_source = 2
    });
    assert_all_applied(&core.apply(vec![spec]));
    for i in 0..10 {
        read_all(&mut connect_from("127.0.0.1", lo(port)));
        wait_for("the child to be reaped", T, || {
            counters(&core, port).children == 0
        });
        assert_eq!(counters(&core, port).accepted, i + 1);
    }
    assert_eq!(counters(&core, port).refused_per_source, 0);
}

#[test]
fn sources_are_grouped_by_an_ipv4_prefix() {
    let core = Core::start();
    let port = free_port();
    let spec = with_limits(tcp4(port).builtin(Builtin::Daytime), |l| {
        l.max_per_source_per_minute = 2;
        l.source_prefix_v4 = 24;
    });
    assert_all_applied(&core.apply(vec![spec]));
    assert!(!daytime_from("127.0.0.1", lo(port)).is_empty());
    assert!(!daytime_from("127.0.0.2", lo(port)).is_empty());
    assert_eq!(daytime_from("127.0.0.3", lo(port)), "", "same /24");
    assert!(
        !daytime_from("127.0.1.1", lo(port)).is_empty(),
        "another /24"
    );
    assert_eq!(counters(&core, port).refused_per_source, 1);
}

#[test]
fn sources_are_grouped_by_an_ipv6_slash_64() {
    require_root!("a network namespace with local IPv6 routes");
    require_ipv6!();
    in_private_netns(|| {
        for net in ["2001:db8:1::/64", "2001:db8:2::/64"] {
            let st = Command::new("ip")
                .args([
                    "-6", "route", "add", "local", net, "dev", "lo", "table", "local",
                ])
                .status()
                .expect("ip");
            assert!(st.success(), "ip -6 route add local {net}: {st}");
        }
        let core = Core::start();
        let port = free_port();
        let spec = inet_spec(
            "::".parse().unwrap(),
            port,
            IpMode::V6Only,
            SocketType::Stream,
        )
        .builtin(Builtin::Daytime);
        let spec = with_limits(spec, |l| {
            l.max_per_source_per_minute = 2;
            l.source_prefix_v6 = 64;
        });
        assert_all_applied(&core.apply(vec![spec]));
        let to: SocketAddr = format!("[::1]:{port}").parse().unwrap();
        let ask = |src: &str| {
            let fd = socket_from(src.parse().unwrap(), to, true, false);
            let mut s = TcpStream::from(fd);
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            read_all(&mut s)
        };
        assert!(!ask("2001:db8:1::1").is_empty());
        assert!(!ask("2001:db8:1::2").is_empty());
        assert_eq!(ask("2001:db8:1:0:ffff::3"), "", "same /64, another address");
        assert!(!ask("2001:db8:2::1").is_empty(), "another /64");
        let c = counters(&core, port);
        assert_eq!((c.accepted, c.refused_per_source), (3, 1));
    });
}

#[test]
fn a_flood_at_a_limited_service_leaves_another_answering() {
    let _g = serial();
    let core = Core::start();
    let (limited, other) = (free_port(), free_port());
    let spec = with_limits(tcp4(limited).builtin(Builtin::Daytime), |l| {
        l.max_per_minute = 10
    });
    assert_all_applied(&core.apply(vec![spec, tcp4(other).builtin(Builtin::Daytime)]));
    const FLOOD: u64 = 1000;
    let answered = std::thread::scope(|scope| {
        let flood = scope.spawn(|| {
            for _ in 0..FLOOD {
                if let Ok(mut s) = connect4(limited) {
                    read_all(&mut s);
                }
            }
        });
        let answered = (0..20)
            .filter(|_| !daytime_from("127.0.0.1", lo(other)).is_empty())
            .count();
        flood.join().unwrap();
        answered
    });
    assert_eq!(answered, 20);
    let c = counters(&core, limited);
    assert_eq!(c.accepted, 10);
    assert_eq!(c.refused_rate, FLOOD - 10);
    // Logged once per burst, not per connection.
    let log = core.log();
    let lines = log
        .lines()
        .filter(|l| l.contains(": refused connection from ") || l.contains(": paused: "))
        .count();
    assert!(lines <= 3, "{lines} lines about refusals:\n{log}");
}

#[test]
fn a_wait_stream_server_that_never_accepts_does_not_loop() {
    let core = Core::start_args(&["--pause", "2"]);
    let port = free_port();
    let spec = tcp4(port).wait(true).exec("/bin/true", &["true"]);
    assert_all_applied(&core.apply(vec![spec.clone()]));
    // One client waits in the backlog; each server exits without it.
    let _client = connect4(port).unwrap();
    let st = core.wait_state(&spec.bind, T, |s| matches!(s, ListenerState::Failed { .. }));
    match &st.state {
        ListenerState::Failed { reason, .. } => {
            assert!(reason.contains("wait servers failed"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(st.counters.accepted, 10, "ten servers, then it rests");
    // While it rests nothing forks; then it tries again by itself.
    let resting = core.status().listeners.remove(0);
    if matches!(resting.state, ListenerState::Failed { .. }) {
        assert_eq!(resting.counters.accepted, 10);
    }
    wait_for("a retry after the backoff", T, || {
        counters(&core, port).accepted > 10
    });
    core.wait_log(": failed: ", T);
}

#[test]
fn a_wait_dgram_server_that_fails_does_not_loop() {
    let core = Core::start_args(&["--pause", "2"]);
    let port = free_port();
    let spec = udp4(port).exec("/bin/false", &["false"]);
    assert_all_applied(&core.apply(vec![spec.clone()]));
    let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    c.send_to(b"x", lo(port)).unwrap();
    let st = core.wait_state(&spec.bind, T, |s| matches!(s, ListenerState::Failed { .. }));
    assert_eq!(st.counters.accepted, 10);
}

#[test]
fn the_defaults_serve_a_burst_of_1500_from_32_clients() {
    let _g = serial();
    let core = Core::start();
    let port = free_port();
    // Limits::default() is what the controller sends for a bare `nowait`.
    let spec = tcp4(port).builtin(Builtin::Daytime);
    assert_eq!(spec.limits, Limits::default());
    assert_all_applied(&core.apply(vec![spec]));
    const CLIENTS: usize = 32;
    const TOTAL: usize = 1500;
    let served: usize = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..CLIENTS)
            .map(|i| {
                scope.spawn(move || {
                    let mine = TOTAL / CLIENTS + usize::from(i < TOTAL % CLIENTS);
                    (0..mine)
                        .filter(|_| {
                            connect4(port)
                                .map(|mut s| !read_all(&mut s).is_empty())
                                .unwrap_or(false)
                        })
                        .count()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    });
    assert_eq!(served, TOTAL);
    let c = counters(&core, port);
    assert_eq!(c.accepted, TOTAL as u64);
    assert_eq!(
        (c.refused_rate, c.refused_per_source, c.refused_acl),
        (0, 0, 0)
    );
}

#[test]
fn the_core_bounds_the_source_tables_of_all_listeners() {
    let _g = serial();
    let core = Core::start();
    let port = free_port();
    let specs: Vec<_> = (0..1025u32)
        .map(|i| {
            let mut sp = with_limits(tcp4(port).builtin(Builtin::Daytime), |l| {
                l.max_per_source_per_minute = 5
            });
            sp.bind = inetd_protocol::Bind::Inet {
                addr: IpAddr::V4(Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8)),
                port,
                mode: IpMode::V4,
            };
            sp
        })
        .collect();
    let r = core.client().apply(specs);
    let added = r
        .outcomes
        .iter()
        .filter(|o| matches!(o, inetd_protocol::Outcome::Added))
        .count();
    assert_eq!(added, 1024);
    match r.outcomes.last() {
        Some(inetd_protocol::Outcome::Rejected { reason }) => {
            assert!(reason.contains("per-source limit"), "{reason}")
        }
        other => panic!("the 1,025th: {other:?}"),
    }
    // The tables are allocated: a source past its limit on one of them is
    // refused there.
    let to = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 1, 4, 24)), port);
    for _ in 0..5 {
        assert!(!daytime_from("127.0.0.1", to).is_empty());
    }
    assert_eq!(daytime_from("127.0.0.1", to), "");
}

#[test]
fn a_changed_entry_ends_the_backoff_of_failed_wait_servers() {
    let core = Core::start();
    let port = free_port();
    let spec = udp4(port).exec("/bin/false", &["false"]);
    assert_all_applied(&core.apply(vec![spec.clone()]));
    let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.send_to(b"x", lo(port)).unwrap();
    core.wait_state(&spec.bind, T, |s| matches!(s, ListenerState::Failed { .. }));
    // The fix, by reload: served at once, not after the 10 s backoff.
    let fixed = udp4(port).probe(&["udp-echo-once"]);
    assert_all_applied(&core.apply(vec![fixed]));
    let st = core.status().listeners.remove(0);
    assert!(
        !matches!(st.state, ListenerState::Failed { .. }),
        "{:?}",
        st.state
    );
    // The datagram that waited is served by the fixed server, then a new
    // one by the next.
    let mut buf = [0u8; 256];
    let (n, _) = c.recv_from(&mut buf).expect("an answer");
    assert!(String::from_utf8_lossy(&buf[..n]).ends_with(" x"));
    c.send_to(b"hello", lo(port)).unwrap();
    let (n, _) = c.recv_from(&mut buf).expect("an answer");
    assert!(String::from_utf8_lossy(&buf[..n]).ends_with(" hello"));
}
