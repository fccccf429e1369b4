//! Policy edges of the core: a core run by a normal user, setuid services,
//! failing id changes in the child (CVE-2023-40303), the ftp-data source
//! port guard, and descriptors of wait and reloaded services (CVE-2002-0871).

use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use inetd_protocol::{Credentials, Outcome};
use inetd_tests::*;

#[test]
fn a_normal_users_core_runs_everything_as_itself() {
    require_root!("starting the core as nobody");
    require_probe_for_others!();
    let core = Core::start_with(CoreOptions {
        wrapper: vec![
            "setpriv".into(),
            "--reuid=65534".into(),
            "--regid=65534".into(),
            "--clear-groups".into(),
            "--".into(),
        ],
        dir_owner: Some((65534, 65534)),
        ..CoreOptions::default()
    });
    let mut c = core.client();
    assert_eq!(c.hello.uid, 65534);
    assert!(!c.hello.policy.root);
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let me = Credentials {
        uid: 65534,
        gid: 65534,
        groups: vec![],
    };
    let r = c.apply(vec![
        tcp4(p1).creds(me),
        tcp4(p2).creds(Credentials {
            uid: 995,
            gid: 995,
            groups: vec![],
        }),
        tcp4(p3).creds(Credentials {
            uid: 0,
            gid: 0,
            groups: vec![],
        }),
    ]);
    assert_eq!(r.outcomes[0], Outcome::Added);
    assert!(
        matches!(&r.outcomes[1], Outcome::Rejected { reason } if reason.contains("itself")),
        "another uid: {:?}",
        r.outcomes[1]
    );
    assert!(
        matches!(r.outcomes[2], Outcome::Rejected { .. }),
        "root: {:?}",
        r.outcomes[2]
    );
    let rep = Report::read_from(&mut connect4(p1).unwrap());
    assert_eq!(rep.value("uid"), "65534 65534 65534 65534");
    assert_eq!(rep.value("nonewprivs"), "1");
    assert_eq!(rep.fds(), vec![0, 1, 2]);
}

#[test]
fn allow_setuid_services_leaves_no_new_privs_off() {
    require_root!("a root core running nobody's services");
    require_probe_for_others!();
    let core = Core::start_args(&["--allow-setuid-services"]);
    let mut c = core.client();
    assert!(c.hello.policy.allow_setuid_services);
    let port = free_port();
    c.apply(vec![tcp4(port)]);
    let rep = Report::read_from(&mut connect4(port).unwrap());
    assert_eq!(rep.value("uid"), "65534 65534 65534 65534");
    assert_eq!(rep.value("nonewprivs"), "0");
    assert_eq!(rep.value("capeff"), "0000000000000000");
}

/// Starts a core under strace that makes the named system calls fail with
/// EPERM in every process, and checks that a service as nobody never runs,
/// that the failure is counted and that the log names the child's `step`.
fn id_change_fails(syscalls: &str, step: &str) {
    let core = Core::start_with(CoreOptions {
        wrapper: vec![
            "strace".into(),
            "-f".into(),
            "-qq".into(),
            "-o".into(),
            "/dev/null".into(),
            "-e".into(),
            format!("trace={syscalls}"),
            "-e".into(),
            format!("inject={syscalls}:error=EPERM"),
            "--".into(),
        ],
        ..CoreOptions::default()
    });
    // strace is the spawned process here; the core is its child.
    let port = free_port();
    let r = core.apply(vec![tcp4(port)]);
    assert_eq!(r.outcomes, vec![Outcome::Added], "log:\n{}", core.log());
    let mut s = connect4(port).unwrap();
    let got = read_all(&mut s);
    assert_eq!(
        got,
        "",
        "the server ran although {syscalls} failed; log:\n{}",
        core.log()
    );
    wait_for(
        "a logged set-up failure naming EPERM",
        Duration::from_secs(5),
        || {
            core.log().lines().any(|l| {
                (l.starts_with("<3>") || l.starts_with("<4>"))
                    && (l.contains("EPERM") || l.to_lowercase().contains("not permitted"))
            })
        },
    );
    assert!(
        core.log().contains(&format!("step={step}")),
        "no step={step}:\n{}",
        core.log()
    );
    wait_for("the failure to be counted", Duration::from_secs(5), || {
        core.status().listeners[0].counters.exec_failures == 1
    });
}

#[test]
fn a_failing_setuid_in_the_child_stops_the_server() {
    require_root!("the child changes ids only under a root core");
    require_probe_for_others!();
    id_change_fails("setuid,setreuid,setresuid", "setuid");
}

#[test]
fn a_failing_setgroups_in_the_child_stops_the_server() {
    require_root!("the child changes ids only under a root core");
    require_probe_for_others!();
    id_change_fails("setgroups", "setgroups");
}

#[test]
fn a_connection_from_source_port_20_is_closed_at_once() {
    require_root!("binding source port 20");
    let core = Core::start();
    let port = free_port();
    core.apply(vec![tcp4(port)]);
    use nix::sys::socket::{
        bind, connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    setsockopt(&fd, sockopt::ReuseAddr, &true).unwrap();
    bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 20)).unwrap();
    connect(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, port)).unwrap();
    let mut s = TcpStream::from(fd);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(read_all(&mut s), "", "a client from port 20 was served");
    // No child ran for it, and the listener still serves others.
    Report::read_from(&mut connect4(port).unwrap());
    let st = core.status();
    assert!(
        st.listeners[0].counters.accepted <= 2,
        "{:?}",
        st.listeners[0].counters
    );
    assert_eq!(
        core.log()
            .matches("connection from 127.0.0.1:20, pid")
            .count(),
        0,
        "a server was started for port 20:\n{}",
        core.log()
    );
}

#[test]
fn wait_and_reloaded_services_see_only_their_descriptors() {
    // CVE-2002-0871: no core descriptor (core socket, control connections,
    // other listeners, signalfd) reaches a server, for wait dgram services
    // and after a reload, while a control connection is open.
    let dir = TempDir::secure("fds");
    let core = Core::start_unix(&dir);
    let (t, u, t2) = (free_port(), free_port(), free_port());
    let mut held = core.client();
    let set = |arg: &str| {
        vec![
            tcp4(t).probe(&["report", arg]),
            udp4(u).probe(&["udp-report", arg]),
            tcp4(t2).wait(true).probe(&["accept-once", arg]),
            unix_stream(&dir.join("s.sock")),
        ]
    };
    held.apply(set("first"));
    let mut reports = Vec::new();
    for round in ["first", "second"] {
        if round == "second" {
            let r = held.apply(set("second"));
            assert!(
                r.outcomes.iter().take(3).all(|o| *o == Outcome::Changed),
                "{r:?}"
            );
        }
        for _ in 0..20 {
            read_all(&mut connect4(t).unwrap());
        }
        reports.push(Report::read_from(&mut connect4(t).unwrap()));
        reports.push(Report::read_from(&mut connect4(t2).unwrap()));
        let reply = udp_request(
            SocketAddr::from(([127, 0, 0, 1], u)),
            b"report",
            Duration::from_secs(5),
        )
        .expect("no report from the udp service");
        let rep = Report::parse(&String::from_utf8_lossy(&reply));
        assert!(rep.complete, "incomplete udp report");
        reports.push(rep);
    }
    for rep in &reports {
        assert_eq!(
            rep.fds(),
            vec![0, 1, 2],
            "{:?}: descriptors {:?}",
            rep.all("arg"),
            rep.all("fd")
        );
    }
    let udp = &reports[2];
    assert_eq!(udp.sock(0).unwrap()["type"], "dgram");
    assert_eq!(udp.sock(0).unwrap()["local"], format!("127.0.0.1:{u}"));
    assert_eq!(udp.env().len(), 1, "{:?}", udp.env());
}

#[test]
fn the_core_resolves_no_names_for_a_request() {
    // Trust rule 2: numbers in, no NSS, DNS or /etc/services on behalf of
    // a request. Traced from after start-up (which may resolve the
    // controller user) through an Apply and connections.
    let dir = TempDir::new("nss");
    let trace = dir.join("trace");
    let unix_dir = TempDir::secure("nss-unix");
    let core = Core::start_with(CoreOptions {
        args: unix_dir.unix_dir_args(),
        wrapper: vec![
            "strace".into(),
            "-f".into(),
            "-qq".into(),
            "-o".into(),
            trace.display().to_string(),
            "-e".into(),
            "trace=open,openat,connect".into(),
            "--".into(),
        ],
        ..CoreOptions::default()
    });
    let started = std::fs::read_to_string(&trace).unwrap_or_default().len();
    let port = free_port();
    // A listener refused for its group is judged and explained by numbers
    // alone, too.
    let r = core.apply(vec![
        tcp4(port).exec("/bin/true", &["true"]),
        unix_stream(&unix_dir.join("s.sock")),
        tcp4(free_port()).creds(Credentials {
            uid: 65534,
            gid: 42,
            groups: vec![42],
        }),
    ]);
    assert_eq!(r.outcomes[..2], [Outcome::Added, Outcome::Added]);
    assert!(
        matches!(&r.outcomes[2], Outcome::Rejected { reason } if reason.ends_with("--allow-group 42")),
        "{:?}",
        r.outcomes[2]
    );
    for _ in 0..3 {
        read_all(&mut connect4(port).unwrap());
    }
    Report::read_from(
        &mut std::os::unix::net::UnixStream::connect(unix_dir.join("s.sock")).unwrap(),
    );
    core.status();
    let text = std::fs::read_to_string(&trace).unwrap();
    let after = &text[started.min(text.len())..];
    let names = [
        "/etc/passwd",
        "/etc/group",
        "/etc/shadow",
        "/etc/services",
        "/etc/hosts",
        "/etc/nsswitch.conf",
        "/etc/resolv.conf",
        "/etc/host.conf",
        "nscd",
        "/run/systemd/userdb",
        "htons(53)",
    ];
    let hits: Vec<&str> = after
        .lines()
        .filter(|l| names.iter().any(|n| l.contains(n)))
        .collect();
    assert!(
        hits.is_empty(),
        "name resolution for a request:\n{}",
        hits.join("\n")
    );
    assert!(
        after.contains("openat") || after.contains("connect"),
        "empty trace"
    );
}
