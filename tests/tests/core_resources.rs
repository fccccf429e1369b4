//! Resources under load and at the edges (docs/security.md):
//! descriptors and zombies after many connections, the descriptor limit,
//! closed stdio at start, a client reset between poll and accept, SIGTERM.
//!
//! These tests measure time or CPU, so they take [`serial`] and run one at
//! a time.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use inetd_protocol::{ListenerState, Outcome};
use inetd_tests::*;

fn zombies(core: &Core) -> Vec<i32> {
    core.children()
        .into_iter()
        .filter(|(_, s)| *s == 'Z')
        .map(|(p, _)| p)
        .collect()
}

#[test]
fn a_thousand_connections_leak_no_descriptor_and_no_zombie() {
    let _g = serial();
    let core = Core::start();
    let port = free_port();
    core.apply(vec![tcp4(port)
        .exec("/bin/true", &["true"])
        .limits(no_limits())]);
    // One connection first, so anything opened lazily is open.
    read_all(&mut connect4(port).unwrap());
    wait_for(
        "the first child to be reaped",
        Duration::from_secs(5),
        || core.children().is_empty(),
    );
    let fds_before = core.fd_count();

    for i in 0..1000 {
        let mut s = connect4(port).unwrap_or_else(|e| panic!("connection {i}: {e}"));
        read_all(&mut s);
    }
    let ok = wait_until(Duration::from_secs(10), || {
        core.children().is_empty() && core.fd_count() == fds_before
    });
    assert!(
        ok,
        "after 1000 connections: {} descriptors (before {fds_before}: {:?}), children {:?}",
        core.fd_count(),
        open_fds(core.pid()),
        core.children()
    );
    let st = core.status();
    assert_eq!(st.listeners[0].counters.accepted, 1001);
    assert!(st.children.is_empty(), "{:?}", st.children);
}

#[test]
fn parallel_connections_leave_no_zombies() {
    let _g = serial();
    let core = Core::start();
    let port = free_port();
    core.apply(vec![tcp4(port)
        .exec("/bin/true", &["true"])
        .limits(no_limits())]);
    let conns: Vec<TcpStream> = (0..200)
        .map(|i| connect4(port).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    for mut c in conns {
        read_all(&mut c);
    }
    // Every child has closed its connection; within 2 s none is a zombie.
    let ok = wait_until(Duration::from_secs(2), || zombies(&core).is_empty());
    assert!(ok, "zombies after 2 s: {:?}", zombies(&core));
    wait_for("all children reaped", Duration::from_secs(5), || {
        core.children().is_empty()
    });
}

/// Descriptors of `pid` below `limit`: the ones RLIMIT_NOFILE counts
/// against (a descriptor inherited above it does not stop the core from
/// opening more below).
fn fds_below(pid: i32, limit: usize) -> usize {
    open_fds(pid)
        .into_iter()
        .filter(|&f| usize::try_from(f).is_ok_and(|f| f < limit))
        .count()
}

/// Starts a core with 64 descriptors, fills its table until `spare` are
/// left (with listeners and held core connections), makes 10 clients of a
/// `sleep` service wait, and checks the core neither spins nor floods its
/// log; then frees the table and checks the service is served again.
/// Returns the waiting clients and the core, for checks of their own.
fn at_the_limit(spare: usize) -> (Core, Vec<TcpStream>, u16) {
    const LIMIT: usize = 64;
    let core = Core::start_with(CoreOptions {
        wrapper: vec![
            "prlimit".into(),
            format!("--nofile={LIMIT}:{LIMIT}"),
            "--".into(),
        ],
        ..CoreOptions::default()
    });
    let port = free_port();
    let service = tcp4(port).probe(&["sleep", "30"]).limits(no_limits());
    core.apply(vec![service.clone()]);
    wait_for(
        "the apply connection to close",
        Duration::from_secs(5),
        || fds_below(core.pid(), LIMIT) < LIMIT - 20,
    );
    let base = fds_below(core.pid(), LIMIT);
    // Fill most of the table with listeners, the rest with held core
    // connections, whose count we can watch one by one.
    let fillers = LIMIT.saturating_sub(base + 1 + 6);
    let mut specs = vec![service];
    specs.extend((0..fillers).map(|_| tcp4(free_port()).limits(no_limits())));
    let r = core.apply(specs);
    for (i, o) in r.outcomes.iter().enumerate() {
        assert!(
            matches!(o, Outcome::Unchanged | Outcome::Added),
            "listener {i}: {o:?}"
        );
    }
    let mut held: Vec<CoreClient> = Vec::new();
    while fds_below(core.pid(), LIMIT) < LIMIT - spare {
        assert!(
            held.len() < 12,
            "cannot fill the descriptor table: {:?}",
            open_fds(core.pid())
        );
        held.push(core.client());
    }
    assert_eq!(fds_below(core.pid(), LIMIT), LIMIT - spare);

    // Clients of the sleep service wait: the core cannot serve them.
    let clients: Vec<TcpStream> = (0..10).map(|_| connect4(port).unwrap()).collect();
    let log_lines = core.log().lines().count();
    let ticks_before = cpu_ticks(core.pid()).unwrap();
    let t0 = Instant::now();
    // A measurement window, not synchronisation.
    std::thread::sleep(Duration::from_secs(3));
    let ticks = cpu_ticks(core.pid()).unwrap() - ticks_before;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = ticks as f64 / clock_ticks() as f64 / secs;
    let log = core.log();
    let new: Vec<&str> = log.lines().skip(log_lines).collect();
    assert!(
        cpu < 0.10,
        "the core used {:.0}% CPU at its descriptor limit",
        cpu * 100.0
    );
    assert!(
        new.len() <= 5,
        "{} log lines in {secs:.1} s at the limit ({spare} spare):\n{}",
        new.len(),
        new.join("\n")
    );
    drop(held);
    (core, clients, port)
}

#[test]
fn at_the_descriptor_limit_the_core_does_not_spin_and_recovers() {
    let _g = serial();
    let (core, mut clients, _) = at_the_limit(0);
    // The pause was logged (and, by at_the_limit, not repeated).
    assert!(core.log().contains("not accepting"), "{}", core.log());
    // Descriptors came back: the waiting clients are served.
    for (i, c) in clients.iter_mut().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("client {i} never served: {e}; log:\n{}", core.log()));
        assert_eq!(&buf, b"pid ");
    }
}

#[test]
fn one_descriptor_short_of_fork_the_core_backs_off() {
    // One spare descriptor: accept succeeds, the child set-up (which needs
    // two more) fails. The core must back off as it does when accept
    // fails, not loop accept/fail every 100 ms.
    let _g = serial();
    let (core, _clients, port) = at_the_limit(1);
    let mut s = connect4(port).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("not served after the limit: {e}; log:\n{}", core.log()));
    assert_eq!(&buf, b"pid ");
}

#[test]
fn a_core_started_with_stdio_closed_still_serves() {
    let _g = serial();
    let core = Core::start_with(CoreOptions {
        shell_prefix: Some("exec 0<&- 1>&- 2>&-;".into()),
        ..CoreOptions::default()
    });
    let (tp, up) = (free_port(), free_port());
    let r = core.apply(vec![tcp4(tp), udp4(up)]);
    assert_eq!(r.outcomes, vec![Outcome::Added, Outcome::Added]);
    // The core put something (/dev/null) on 0-2 itself.
    let fds = open_fds(core.pid());
    assert!(fds.starts_with(&[0, 1, 2]), "core descriptors: {fds:?}");
    let rep = Report::read_from(&mut connect4(tp).unwrap());
    assert_eq!(rep.fds(), vec![0, 1, 2]);
    for fd in 0..3 {
        assert_eq!(
            rep.sock(fd).unwrap()["local"],
            format!("127.0.0.1:{tp}"),
            "fd {fd}"
        );
    }
    let reply = udp_request(([127, 0, 0, 1], up).into(), b"hi", Duration::from_secs(5))
        .expect("no udp reply");
    let reply = String::from_utf8_lossy(&reply).into_owned();
    assert!(
        reply.starts_with("pid ") && reply.ends_with(" hi"),
        "{reply:?}"
    );
    // And again (the socket was not closed with a stray descriptor).
    assert!(udp_request(
        ([127, 0, 0, 1], up).into(),
        b"again",
        Duration::from_secs(5)
    )
    .is_some());
}

/// Connects and closes with a reset; false when either failed.
fn rst_connect(port: u16) -> bool {
    let Ok(s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::Linger, &linger).is_ok()
}

#[test]
fn resets_between_poll_and_accept_never_wedge_another_service() {
    let _g = serial();
    let core = Core::start();
    let (pa, pb) = (free_port(), free_port());
    core.apply(vec![
        tcp4(pa).exec("/bin/true", &["true"]).limits(no_limits()),
        tcp4(pb).exec("/bin/true", &["true"]).limits(no_limits()),
    ]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attacker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if rst_connect(pa) {
                    n += 1;
                }
            }
            n
        })
    };
    let mut worst = Duration::ZERO;
    let mut slow = Vec::new();
    let t0 = Instant::now();
    let mut probes = 0;
    while t0.elapsed() < Duration::from_secs(3) {
        let start = Instant::now();
        let mut s = connect4(pb).expect("service B refused");
        // The service closes at once: end of file means B was accepted,
        // forked and served.
        let mut buf = [0u8; 1];
        let n = s
            .read(&mut buf)
            .expect("service B did not answer within 5 s");
        assert_eq!(n, 0);
        let took = start.elapsed();
        worst = worst.max(took);
        if took > Duration::from_millis(100) {
            slow.push(took);
        }
        probes += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let resets = attacker.join().unwrap();
    assert!(resets > 100, "only {resets} resets sent");
    // Each probe of B pays a fork and an exec, which a loaded 2-core machine
    // can stretch past 100 ms now and then; a wedged loop delays probes
    // again and again. So: almost every probe under 100 ms, none over 1 s.
    assert!(
        slow.len() * 50 <= probes && worst < Duration::from_secs(1),
        "{} of {probes} probes of B took over 100 ms (worst {worst:?}) during {resets} resets on A",
        slow.len()
    );
    assert!(core.is_alive());
}

#[test]
fn sigterm_closes_listeners_and_sockets_and_leaves_servers_running() {
    let _g = serial();
    let dir = TempDir::secure("term");
    let unix_path = dir.join("u.sock");
    let mut core = Core::start_unix(&dir);
    let (tp, up) = (free_port(), free_port());
    let r = core.apply(vec![
        tcp4(tp).probe(&["sleep", "30"]),
        udp4(up),
        unix_stream(&unix_path),
    ]);
    assert_eq!(r.outcomes, vec![Outcome::Added; 3]);
    let mut conn = connect4(tp).unwrap();
    let mut line = String::new();
    let mut buf = [0u8; 64];
    while !line.ends_with('\n') {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "the server closed at once");
        line.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let server: i32 = line.trim().strip_prefix("pid ").unwrap().parse().unwrap();
    let server_start = start_time(server);
    let core_sock = core.socket_path().to_path_buf();

    core.signal(nix::sys::signal::Signal::SIGTERM);
    let st = core
        .wait_exit(Duration::from_secs(5))
        .expect("the core did not exit on SIGTERM");
    assert!(st.success(), "exit status {st}; log:\n{}", core.log());

    assert!(!core_sock.exists(), "core.sock left behind");
    assert!(
        !unix_path.exists(),
        "the unix listener's socket left behind"
    );
    assert!(connect4(tp).is_err(), "the tcp listener still accepts");
    assert!(
        UdpSocket::bind(("127.0.0.1", up)).is_ok(),
        "the udp listener's port is still bound"
    );
    assert!(UnixStream::connect(&unix_path).is_err());

    // The server keeps running with its connection open.
    assert_eq!(start_time(server), server_start, "the server is gone");
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    match conn.read(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the server's connection ended: {other:?}"),
    }
    let _ = conn.write_all(b"x");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[test]
fn the_status_report_shows_listeners_and_live_children() {
    let core = Core::start();
    let port = free_port();
    let spec = tcp4(port).probe(&["sleep", "30"]);
    core.apply(vec![spec.clone()]);
    let st = core.status();
    assert_eq!(st.listeners.len(), 1);
    assert_eq!(st.listeners[0].spec, spec);
    assert_eq!(st.listeners[0].state, ListenerState::Listening);
    assert_eq!(st.pid, u32::try_from(core.pid()).unwrap());
    assert!(st.started_at <= now_unix() && st.started_at + 60 > now_unix());

    let mut s = connect4(port).unwrap();
    let me = s.local_addr().unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    let pid: u32 = String::from_utf8_lossy(&buf[..n])
        .trim()
        .strip_prefix("pid ")
        .unwrap()
        .parse()
        .unwrap();
    let st = core.status();
    assert_eq!(st.children.len(), 1, "{:?}", st.children);
    let c = &st.children[0];
    assert_eq!(c.pid, pid);
    assert_eq!(c.listener, Some(0));
    assert_eq!(c.uid, service_creds().uid);
    assert_eq!(c.peer.as_deref(), Some(me.to_string().as_str()));
    assert_eq!(st.listeners[0].counters.children, 1);
    assert_eq!(st.listeners[0].counters.accepted, 1);
}

#[test]
fn sighup_is_ignored_in_packaged_mode() {
    let mut core = Core::start();
    let port = free_port();
    core.apply(vec![tcp4(port)]);
    core.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for("a log line about SIGHUP", Duration::from_secs(5), || {
        core.log().contains("SIGHUP")
    });
    assert!(core.exit_status().is_none(), "the core exited on SIGHUP");
    Report::read_from(&mut connect4(port).unwrap());
    assert_eq!(core.status().listeners.len(), 1);
}

#[test]
fn listeners_past_fd_setsize_serve() {
    // samhocevar/rinetd#1: select() with descriptors >= FD_SETSIZE.
    let _g = serial();
    let core = Core::start();
    let ports: Vec<u16> = (0..1100).map(|_| free_port()).collect();
    let specs = ports.iter().map(|&p| tcp4(p)).collect();
    let r = core.apply(specs);
    assert!(r.outcomes.iter().all(|o| *o == Outcome::Added));
    assert!(
        open_fds(core.pid()).iter().any(|&f| f >= 1024),
        "no descriptor above FD_SETSIZE"
    );
    Report::read_from(&mut connect4(*ports.last().unwrap()).unwrap());
    Report::read_from(&mut connect4(ports[0]).unwrap());
}

#[test]
fn signals_applies_and_exits_at_once_leave_a_consistent_core() {
    // CVE-2006-5051 / CVE-2024-6387, cups#1072, keepalived#209: signal
    // handling that does real work breaks under load. 1000 SIGHUPs, 100
    // applies and 500 connections whose children exit at once, together.
    let _g = serial();
    let core = Core::start();
    let stable = free_port();
    let extra: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let set = |n: usize| {
        let mut v = vec![tcp4(stable)
            .exec("/bin/true", &["true"])
            .limits(no_limits())];
        v.extend(extra.iter().take(n % 5).map(|&p| tcp4(p)));
        v
    };
    core.apply(set(0));
    let pid = core.pid();
    let hup = std::thread::spawn(move || {
        for _ in 0..1000 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGHUP,
            );
            std::thread::sleep(Duration::from_micros(500));
        }
    });
    let sock = core.socket_path().to_path_buf();
    let sets: Vec<_> = (0..100).map(set).collect();
    let applier = std::thread::spawn(move || {
        let mut c = CoreClient::connect(&sock).unwrap();
        let mut last = None;
        for s in sets {
            last = Some(c.apply(s).generation);
        }
        last
    });
    for i in 0..500 {
        let mut s = connect4(stable).unwrap_or_else(|e| panic!("connection {i}: {e}"));
        read_all(&mut s);
    }
    hup.join().unwrap();
    let last_gen = applier.join().unwrap().unwrap();

    assert!(core.is_alive(), "the core died; log:\n{}", core.log());
    let st = core.status();
    assert_eq!(st.generation, last_gen);
    // The last set was set(99): the stable listener and 99 % 5 = 4 others.
    assert_eq!(st.listeners.len(), 5);
    assert_eq!(
        st.listeners
            .iter()
            .find(|l| l.spec.bind == tcp4(stable).bind)
            .unwrap()
            .counters
            .accepted,
        500
    );
    let ok = wait_until(Duration::from_secs(2), || zombies(&core).is_empty());
    assert!(ok, "zombies: {:?}", zombies(&core));
    wait_for("all children reaped", Duration::from_secs(5), || {
        core.children().is_empty() && core.status().children.is_empty()
    });
}
