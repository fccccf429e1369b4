//! Listeners as the core runs them: wait dgram services, dual-stack and
//! single-family sockets, removal by Apply, and bind failures with retry
//! (docs/inetd-core.md: the child path, start and reload).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

use inetd_protocol::{IpMode, ListenerState, Outcome, SocketType};
use inetd_tests::*;

fn udp_client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Sends `msg` and returns the reply's pid and payload (`pid P payload`).
fn ask(s: &UdpSocket, port: u16, msg: &str) -> (u32, String) {
    s.send_to(msg.as_bytes(), ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = recv_from(s, &mut buf).unwrap_or_else(|e| panic!("no reply to {msg:?}: {e}"));
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    let rest = text.strip_prefix("pid ").expect("a probe reply");
    let (pid, payload) = rest.split_once(' ').unwrap();
    (pid.parse().unwrap(), payload.to_string())
}

#[test]
fn wait_dgram_socket_is_not_polled_while_its_child_runs() {
    let core = Core::start();
    let port = free_port();
    let spec = udp4(port).probe(&["udp-echo"]);
    let bind = spec.bind.clone();
    assert_eq!(core.apply(vec![spec]).outcomes, vec![Outcome::Added]);
    assert!(matches!(
        core.wait_state(&bind, Duration::from_secs(1), |_| true)
            .state,
        ListenerState::Listening
    ));

    let c = udp_client();
    let (pid, p) = ask(&c, port, "a");
    assert_eq!(p, "a");
    // The child holds the socket: the core shows Waiting and does not
    // start a second child for the next datagrams.
    let st = core.wait_state(&bind, Duration::from_secs(2), |s| {
        *s == ListenerState::Waiting
    });
    assert_eq!(st.counters.children, 1);
    for m in ["b", "c", "d"] {
        let (p2, payload) = ask(&c, port, m);
        assert_eq!(
            (p2, payload.as_str()),
            (pid, m),
            "answered by another child"
        );
    }
    assert_eq!(core.children().len(), 1, "{:?}", core.children());

    // The child leaves; the core polls again and the next datagram starts
    // a new child.
    assert_eq!(ask(&c, port, "quit"), (pid, "quit".to_string()));
    core.wait_state(&bind, Duration::from_secs(5), |s| {
        *s == ListenerState::Listening
    });
    let (pid2, p) = ask(&c, port, "again");
    assert_eq!(p, "again");
    assert_ne!(pid2, pid);
}

#[test]
fn wait_dgram_once_services_start_per_datagram() {
    let core = Core::start();
    let port = free_port();
    core.apply(vec![udp4(port)]);
    let c = udp_client();
    let (p1, _) = ask(&c, port, "one");
    // The core may need a moment to see the child exit and poll again; a
    // datagram sent meanwhile waits in the socket for the next child.
    let (p2, m) = ask(&c, port, "two");
    assert_eq!(m, "two");
    assert_ne!(p1, p2);
}

#[test]
fn dual_stack_listener_shows_plain_ipv4_and_ipv6_peers() {
    require_ipv6!();
    let core = Core::start();
    let port = free_port();
    assert_eq!(
        core.apply(vec![tcp_dual(port)]).outcomes,
        vec![Outcome::Added]
    );

    let mut s = connect4(port).unwrap();
    let me = s.local_addr().unwrap();
    let rep = Report::read_from(&mut s);
    let env = rep.env();
    assert_eq!(env["TCPREMOTEIP"], "127.0.0.1", "{env:?}");
    assert_eq!(env["REMOTE_ADDR"], "127.0.0.1", "{env:?}");
    assert_eq!(env["TCPLOCALIP"], "127.0.0.1", "{env:?}");

    let rep = Report::read_from(&mut connect6(port).unwrap());
    let env = rep.env();
    assert_eq!(env["TCPREMOTEIP"], "::1", "{env:?}");
    assert_eq!(env["REMOTE_ADDR"], "::1", "{env:?}");
    assert_eq!(env["TCPLOCALIP"], "::1", "{env:?}");

    // The log writes the mapped peer as plain IPv4 too.
    wait_for("the accept log line", Duration::from_secs(5), || {
        core.log().contains(&format!("127.0.0.1:{}", me.port()))
    });
    assert!(!core.log().contains("::ffff:"), "{}", core.log());
}

/// A listener bound to one address gives its children that address as
/// the local one; a wildcard listener, the address each client connected
/// to.
#[test]
fn the_local_address_is_the_one_connected_to() {
    let core = Core::start();
    let (p1, p2) = (free_port(), free_port());
    let v4 = |a: [u8; 4], port| {
        inet_spec(
            IpAddr::V4(Ipv4Addr::from(a)),
            port,
            IpMode::V4,
            SocketType::Stream,
        )
    };
    let r = core.apply(vec![v4([0, 0, 0, 0], p1), v4([127, 0, 0, 3], p2)]);
    assert_eq!(r.outcomes, vec![Outcome::Added, Outcome::Added]);
    for (ip, port) in [("127.0.0.2", p1), ("127.0.0.5", p1), ("127.0.0.3", p2)] {
        let mut s = connect_to(SocketAddr::new(ip.parse().unwrap(), port)).unwrap();
        let me = s.local_addr().unwrap();
        let env = Report::read_from(&mut s).env();
        assert_eq!(env["TCPLOCALIP"], ip, "{env:?}");
        assert_eq!(env["TCPLOCALPORT"], port.to_string(), "{env:?}");
        assert_eq!(env["TCPREMOTEIP"], me.ip().to_string(), "{env:?}");
        assert_eq!(env["TCPREMOTEPORT"], me.port().to_string(), "{env:?}");
        assert_eq!(env["REMOTE_PORT"], me.port().to_string(), "{env:?}");
    }
}

#[test]
fn ipv4_and_ipv6_only_listeners_share_a_port() {
    require_ipv6!();
    let core = Core::start();
    let port = free_port();
    let r = core.apply(vec![
        tcp4(port).probe(&["report", "v4"]),
        tcp6(port).probe(&["report", "v6"]),
    ]);
    assert_eq!(r.outcomes, vec![Outcome::Added, Outcome::Added]);
    let r4 = Report::read_from(&mut connect4(port).unwrap());
    assert_eq!(r4.all("arg")[2], "v4");
    assert_eq!(r4.sock(0).unwrap()["family"], "inet");
    let r6 = Report::read_from(&mut connect6(port).unwrap());
    assert_eq!(r6.all("arg")[2], "v6");
    assert_eq!(r6.sock(0).unwrap()["family"], "inet6");
    assert_eq!(r6.env()["TCPREMOTEIP"], "::1");
}

#[test]
fn removed_listener_refuses_new_connections_and_keeps_its_children() {
    let core = Core::start();
    let (p1, p2) = (free_port(), free_port());
    let keep = tcp4(p2);
    core.apply(vec![tcp4(p1).probe(&["echo"]), keep.clone()]);

    let mut s = connect4(p1).unwrap();
    s.write_all(b"one\n").unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"one\n");

    let r = core.apply(vec![keep]);
    assert_eq!(r.outcomes, vec![Outcome::Unchanged]);
    assert_eq!(r.removed.len(), 1, "{:?}", r.removed);
    assert_eq!(r.removed[0].key.bind, tcp4(p1).bind);

    let e = connect4(p1).expect_err("the removed listener still accepts");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);

    // The running child keeps its connection and still echoes.
    s.write_all(b"two\n").unwrap();
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"two\n");
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut s), "");
    // The other listener is untouched.
    Report::read_from(&mut connect4(p2).unwrap());
}

#[test]
fn a_failed_bind_is_reported_and_retried() {
    let core = Core::start();
    let (p1, p2) = (free_port(), free_port());
    let holder = TcpListener::bind(("127.0.0.1", p1)).unwrap();
    let busy = tcp4(p1);
    let r = core.apply(vec![busy.clone(), tcp4(p2)]);
    match &r.outcomes[0] {
        Outcome::Failed { reason, retry_at } => {
            assert!(
                reason.to_lowercase().contains("in use"),
                "reason does not give the bind error: {reason}"
            );
            assert!(*retry_at >= now_unix(), "retry_at in the past: {retry_at}");
            assert!(
                *retry_at <= now_unix() + 11,
                "the first retry is not in about 10 s: {retry_at}"
            );
        }
        other => panic!("a busy port should fail: {other:?}"),
    }
    assert_eq!(r.outcomes[1], Outcome::Added);
    Report::read_from(&mut connect4(p2).unwrap());
    core.wait_state(&busy.bind, Duration::from_secs(1), |s| {
        matches!(s, ListenerState::Failed { .. })
    });

    drop(holder);
    // Retried every 10 s.
    core.wait_state(&busy.bind, Duration::from_secs(16), |s| {
        *s == ListenerState::Listening
    });
    Report::read_from(&mut connect4(p1).unwrap());
}

#[test]
fn dgram_child_answers_from_the_listening_socket() {
    let core = Core::start();
    let port = free_port();
    // The probe answers on fd 0: a reply from the listener's own address
    // means fd 0 is the bound socket itself.
    core.apply(vec![udp4(port)]);
    let c = udp_client();
    c.send_to(b"x", ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 64];
    let (_, from) = recv_from(&c, &mut buf).unwrap();
    assert_eq!(from, SocketAddr::from(([127, 0, 0, 1], port)));
}

#[test]
fn wait_stream_socket_is_not_polled_while_its_child_runs() {
    let core = Core::start();
    let port = free_port();
    // A child that never accepts: the connections wait in the backlog and
    // the core must not start a second child for them.
    let spec = tcp4(port).wait(true).probe(&["sleep", "30"]);
    let bind = spec.bind.clone();
    core.apply(vec![spec]);
    let _a = connect4(port).unwrap();
    let st = core.wait_state(&bind, Duration::from_secs(5), |s| {
        *s == ListenerState::Waiting
    });
    assert_eq!(st.counters.children, 1);
    let _b = connect4(port).unwrap();
    let _c = connect4(port).unwrap();
    let kids = core.children();
    assert_eq!(kids.len(), 1, "{kids:?}");
    // When it leaves, the core polls again and the next child accepts.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(kids[0].0),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    core.wait_state(&bind, Duration::from_secs(5), |s| {
        *s == ListenerState::Waiting
    });
    wait_for("a second wait child", Duration::from_secs(5), || {
        core.children().iter().any(|(p, _)| *p != kids[0].0)
    });
}

#[test]
fn wait_dgram_over_ipv6_and_dual_stack() {
    require_ipv6!();
    let core = Core::start();
    let (p6, pd) = (free_port(), free_port());
    let r = core.apply(vec![udp6(p6), udp_dual(pd)]);
    assert_eq!(r.outcomes, vec![Outcome::Added, Outcome::Added]);
    let ask = |to: SocketAddr| {
        let reply = udp_request(to, b"x", Duration::from_secs(5))
            .unwrap_or_else(|| panic!("no reply from {to}"));
        String::from_utf8_lossy(&reply).into_owned()
    };
    assert!(ask(format!("[::1]:{p6}").parse().unwrap()).ends_with(" x"));
    assert!(ask(format!("[::1]:{pd}").parse().unwrap()).ends_with(" x"));
    assert!(ask(format!("127.0.0.1:{pd}").parse().unwrap()).ends_with(" x"));
    // The IPv6-only socket is not reachable over IPv4.
    assert!(udp_request(
        format!("127.0.0.1:{p6}").parse().unwrap(),
        b"x",
        Duration::from_millis(300)
    )
    .is_none());
}

#[test]
fn a_wait_dgram_server_that_cannot_start_does_not_loop() {
    // OpenBSD inetd reads the datagram away when the server cannot start;
    // otherwise the socket stays readable and the core forks forever.
    let core = Core::start();
    let port = free_port();
    let spec = udp4(port).exec("/nonexistent/inetd-test-server", &["server"]);
    let bind = spec.bind.clone();
    core.apply(vec![spec]);
    let c = udp_client();
    c.send_to(b"x", ("127.0.0.1", port)).unwrap();
    wait_for("the exec failure", Duration::from_secs(5), || {
        core.status().listeners[0].counters.exec_failures >= 1
    });
    core.wait_state(&bind, Duration::from_secs(5), |s| {
        *s == ListenerState::Listening
    });
    // A measurement window: a looping core would fail again and again.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(core.status().listeners[0].counters.exec_failures, 1);
    c.send_to(b"y", ("127.0.0.1", port)).unwrap();
    wait_for("the second exec failure", Duration::from_secs(5), || {
        core.status().listeners[0].counters.exec_failures >= 2
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(core.status().listeners[0].counters.exec_failures, 2);
}

#[test]
fn removing_a_wait_dgram_listener_stops_its_child() {
    let core = Core::start();
    let port = free_port();
    core.apply(vec![udp4(port).probe(&["udp-echo"])]);
    let c = udp_client();
    let (pid, _) = ask(&c, port, "a");
    let r = core.apply(vec![]);
    assert_eq!(r.removed.len(), 1);
    assert!(core.status().listeners.is_empty());
    // The child holds the listener's socket, so it goes with it: SIGTERM,
    // well within the 5 s grace; then nothing holds the port.
    wait_for("the port to be free", Duration::from_secs(5), || {
        UdpSocket::bind(("127.0.0.1", port)).is_ok()
    });
    core.wait_log(
        &format!("pid {pid} stopped: signal 15"),
        Duration::from_secs(5),
    );
    assert!(
        proc_stat(i32::try_from(pid).unwrap()).is_none(),
        "the wait child is still there"
    );
}

#[test]
fn a_failed_listener_that_is_removed_is_not_retried() {
    let core = Core::start();
    let port = free_port();
    let holder = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let r = core.apply(vec![tcp4(port)]);
    let retry_at = match &r.outcomes[0] {
        Outcome::Failed { retry_at, .. } => *retry_at,
        other => panic!("a busy port should fail: {other:?}"),
    };
    let r = core.apply(vec![]);
    assert!(core.status().listeners.is_empty(), "{r:?}");
    drop(holder);
    // Past the retry time the port must still be free.
    wait_for("the retry time to pass", Duration::from_secs(20), || {
        now_unix() > retry_at + 1
    });
    let e = connect4(port).expect_err("a removed listener was bound by its retry");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(TcpListener::bind(("127.0.0.1", port)).is_ok());
}

#[test]
fn a_wait_stream_server_that_cannot_start_does_not_loop() {
    // The pending connection stays in the backlog when the server cannot
    // start, so the socket stays readable: the core must not fork again
    // and again for it.
    let core = Core::start();
    let port = free_port();
    let spec = tcp4(port)
        .wait(true)
        .exec("/nonexistent/inetd-test-server", &["server"]);
    assert_eq!(core.apply(vec![spec]).outcomes, vec![Outcome::Added]);
    let _c = connect4(port).unwrap();
    core.wait_log("exec failed", Duration::from_secs(5));
    core.wait_log("failed: exit", Duration::from_secs(5));
    // A measurement window: a looping core would fail again and again.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        core.log().matches("exec failed").count(),
        1,
        "{}",
        core.log()
    );
    assert_eq!(core.status().listeners[0].counters.exec_failures, 1);
}
