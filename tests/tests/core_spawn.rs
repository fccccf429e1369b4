//! How the core starts exec children (docs/core-internals.md, "The spawn
//! path"): a child stopped on its way to exec stalls neither the core nor
//! other children, the memory it shares with the core is out of reach of
//! the service's uid once the ids are changed, and with many listeners a
//! child still gets exactly its connection.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use inetd_protocol::{Bind, IpMode, Outcome};
use inetd_tests::*;

const DELAY_ENV: &str = "INETD_TEST_EXEC_DELAY";

fn sigstop(pid: i32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
}

/// A child held between its id change and exec (the core's test-only
/// delay), then stopped there, as any process of the service's uid could:
/// the core goes on serving, other children start and exec, and the held
/// child's memory (the core's, until exec) is not the service uid's to read.
#[test]
fn a_child_stopped_between_its_id_change_and_exec_stalls_nothing() {
    require_root!("children change to nobody");
    let env = vec![
        (
            "PATH".to_string(),
            "/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ),
        (DELAY_ENV.to_string(), "10000:/bin/cat".to_string()),
    ];
    let core = Core::start_with(CoreOptions {
        env: Some(env),
        ..CoreOptions::default()
    });
    let (held, other) = (free_port(), free_port());
    let r = core.apply(vec![tcp4(held).exec("/bin/cat", &["cat"]), tcp4(other)]);
    assert_eq!(r.outcomes, vec![Outcome::Added; 2], "log:\n{}", core.log());

    let mut h = connect4(held).unwrap();
    h.write_all(b"x").unwrap();
    // The held child: the core's only child, already nobody.
    let mut pid = 0;
    wait_for(
        "the held child to change ids",
        Duration::from_secs(5),
        || {
            let kids = core.children();
            pid = kids.first().map_or(0, |k| k.0);
            pid != 0
                && proc_status(pid)
                    .is_some_and(|st| st["Uid"].split_whitespace().next() == Some("65534"))
        },
    );
    sigstop(pid, nix::sys::signal::Signal::SIGSTOP);
    wait_for("the held child to stop", Duration::from_secs(5), || {
        proc_status(pid).is_some_and(|st| st["State"].starts_with('T'))
    });
    let st = proc_status(pid).unwrap();
    assert_eq!(st["Name"], "inetd-core", "it has not exec'd yet");
    // Non-dumpable since the id change: its /proc files belong to root
    // (the directory itself always shows the effective uid), so the
    // service's uid can neither ptrace it nor open its memory.
    let dumpable = std::fs::read_to_string("/proc/sys/fs/suid_dumpable").unwrap();
    if dumpable.trim() != "1" {
        for f in ["mem", "status"] {
            let owner = std::fs::metadata(format!("/proc/{pid}/{f}")).unwrap().uid();
            assert_eq!(owner, 0, "/proc/{pid}/{f} of a child running as nobody");
        }
    }

    // Meanwhile: other connections are served, each child starting and
    // exec'ing while the held one stays stopped.
    let t0 = Instant::now();
    for _ in 0..20 {
        let rep = Report::read_from(&mut connect4(other).unwrap());
        assert_eq!(rep.fds(), vec![0, 1, 2]);
    }
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "20 connections took {:?} beside a stopped child",
        t0.elapsed()
    );
    assert!(core.status().listeners.len() == 2);
    assert!(
        proc_status(pid).is_some_and(|st| st["State"].starts_with('T')),
        "the held child is still stopped"
    );
    sigstop(pid, nix::sys::signal::Signal::SIGKILL);
}

/// With many listeners a child starts on the core's descriptor table and
/// copies only its low part: it still gets its connection on 0, 1 and 2
/// and nothing else, and the core keeps every listener.
#[test]
fn with_many_listeners_a_child_gets_only_its_connection() {
    let core = Core::start();
    let port = free_port();
    let addr = |i: u32| Ipv4Addr::new(127, 3, (i / 250) as u8, (i % 250 + 1) as u8);
    let specs: Vec<_> = (0..300u32)
        .map(|i| {
            let mut sp = tcp4(port);
            sp.bind = Bind::Inet {
                addr: addr(i).into(),
                port,
                mode: IpMode::V4,
            };
            sp
        })
        .collect();
    let r = core.apply(specs);
    assert!(
        r.outcomes.iter().all(|o| *o == Outcome::Added),
        "log:\n{}",
        core.log()
    );
    for i in [0, 150, 299, 7, 299] {
        let to = SocketAddr::from((addr(i), port));
        let mut s = connect_to(to).unwrap();
        let me = s.local_addr().unwrap();
        let rep = Report::read_from(&mut s);
        assert_eq!(
            rep.fds(),
            vec![0, 1, 2],
            "listener {i}: {:?}",
            rep.all("fd")
        );
        for fd in 0..3 {
            let sock = rep.sock(fd).unwrap();
            assert_eq!(sock["local"], to.to_string(), "fd {fd}");
            assert_eq!(sock["peer"], me.to_string(), "fd {fd}");
        }
    }
    assert_eq!(core.status().listeners.len(), 300);
}

/// Connections one at a time, then many at once: after the serial ones
/// the core takes one connection per round without looking for more, and
/// every connection queued meanwhile is still served.
#[test]
fn a_burst_after_serial_connections_is_served_whole() {
    let core = Core::start();
    let port = free_port();
    assert_eq!(core.apply(vec![tcp4(port)]).outcomes, vec![Outcome::Added]);
    for _ in 0..20 {
        let rep = Report::read_from(&mut connect4(port).unwrap());
        assert_eq!(rep.env()["TCPLOCALPORT"], port.to_string());
    }
    let burst: Vec<_> = (0..40).map(|_| connect4(port).unwrap()).collect();
    for mut c in burst {
        let me = c.local_addr().unwrap();
        let rep = Report::read_from(&mut c);
        assert_eq!(rep.env()["TCPREMOTEPORT"], me.port().to_string());
    }
}

/// A child the core did not start, inherited from the process it replaced
/// (`sleep & exec inetd-core`), is reaped when it ends, though the core's
/// table of children is empty.
#[test]
fn an_inherited_child_is_reaped() {
    let core = Core::start_with(CoreOptions {
        shell_prefix: Some("sleep 0.5 &".into()),
        ..CoreOptions::default()
    });
    let pid = core.pid();
    wait_for(
        "the inherited child to end and be reaped",
        Duration::from_secs(10),
        || children_of(pid).is_empty(),
    );
    assert!(
        core.log().contains("reaped unknown child"),
        "{}",
        core.log()
    );
}
