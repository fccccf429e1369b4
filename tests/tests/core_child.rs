//! What a server started by the core is given (docs/inetd-core.md,
//! the child path, and trust rules 4-6): the connection on 0-2 and nothing else, ids and
//! groups, capabilities, `no_new_privs`, signals, environment, umask, cwd.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::Duration;

use inetd_protocol::{Credentials, Outcome};
use inetd_tests::*;

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn keys(r: &Report) -> BTreeSet<String> {
    r.env().keys().cloned().collect()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

const TCP_ENV: [&str; 8] = [
    "PATH",
    "PROTO",
    "TCPREMOTEIP",
    "TCPREMOTEPORT",
    "TCPLOCALIP",
    "TCPLOCALPORT",
    "REMOTE_ADDR",
    "REMOTE_PORT",
];

#[test]
fn nowait_stream_child_gets_the_connection_and_a_clean_process() {
    let core = Core::start();
    let port = free_port();
    let r = core.apply(vec![tcp4(port)]);
    assert_eq!(r.outcomes, vec![Outcome::Added]);

    let mut s = connect4(port).unwrap();
    let me = s.local_addr().unwrap();
    let rep = Report::read_from(&mut s);

    // Exactly 0, 1, 2, each the accepted connection.
    assert_eq!(
        rep.fds(),
        vec![0, 1, 2],
        "open descriptors: {:?}",
        rep.all("fd")
    );
    for fd in 0..3 {
        let sock = rep
            .sock(fd)
            .unwrap_or_else(|| panic!("fd {fd} is not a socket: {:?}", rep.all("fd")));
        assert_eq!(sock["type"], "stream", "fd {fd}");
        assert_eq!(sock["local"], format!("127.0.0.1:{port}"), "fd {fd}");
        assert_eq!(sock["peer"], me.to_string(), "fd {fd}");
    }

    // Ids: nobody as root, ourselves otherwise.
    let c = service_creds();
    let ids = |id: u32| format!("{id} {id} {id} {id}");
    assert_eq!(rep.value("uid"), ids(c.uid));
    assert_eq!(rep.value("gid"), ids(c.gid));
    if root_or_skip("nobody's groups only under a root core") {
        assert_eq!(rep.value("groups"), "65534");
    }

    // A new session led by the server; nothing blocked.
    assert_eq!(rep.num("sid"), rep.num("pid"), "not a session leader");
    assert_eq!(rep.value("sigblk"), "0000000000000000", "signal mask");

    // umask 022 and cwd / whatever the core was started with.
    assert_eq!(rep.value("umask"), "0022");
    assert_eq!(rep.value("cwd"), "/");

    // Exactly PATH and the per-connection variables of both conventions.
    assert_eq!(keys(&rep), set(&TCP_ENV), "environment: {:?}", rep.env());
    let env = rep.env();
    assert_eq!(env["PATH"], PATH);
    assert_eq!(env["PROTO"], "TCP");
    assert_eq!(env["TCPREMOTEIP"], "127.0.0.1");
    assert_eq!(env["TCPREMOTEPORT"], me.port().to_string());
    assert_eq!(env["TCPLOCALIP"], "127.0.0.1");
    assert_eq!(env["TCPLOCALPORT"], port.to_string());
    assert_eq!(env["REMOTE_ADDR"], "127.0.0.1");
    assert_eq!(env["REMOTE_PORT"], me.port().to_string());

    // argv as given.
    assert_eq!(rep.all("arg"), vec!["inetd-test-probe", "report"]);
}

/// The probe is a Rust program and its runtime changes SIGPIPE before
/// `main`, so dispositions are read from a C program: `cat`.
#[test]
fn child_signal_dispositions_are_default_and_mask_empty() {
    let core = Core::start();
    let port = free_port();
    core.apply(vec![tcp4(port).exec("/bin/cat", &["cat"])]);
    let mut s = connect4(port).unwrap();
    // Once the echo comes back, cat runs.
    s.write_all(b"ping\n").unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping\n");
    let kids = core.children();
    assert_eq!(kids.len(), 1, "children of the core: {kids:?}");
    let st = proc_status(kids[0].0).expect("cat's status");
    assert_eq!(st["Name"], "cat");
    assert_eq!(
        st["SigIgn"],
        "0000000000000000",
        "ignored signals: {:?}",
        signals_in_mask(&st["SigIgn"])
    );
    assert_eq!(
        st["SigBlk"],
        "0000000000000000",
        "blocked signals: {:?}",
        signals_in_mask(&st["SigBlk"])
    );
    assert_eq!(
        st["SigCgt"],
        "0000000000000000",
        "caught signals: {:?}",
        signals_in_mask(&st["SigCgt"])
    );
    // End of input ends cat.
    drop(s);
    wait_for("cat to exit", Duration::from_secs(5), || {
        core.children().is_empty()
    });
}

#[test]
fn child_environment_and_umask_do_not_come_from_the_core() {
    // CVE-2001-1322 (umask 0, TMPDIR), CVE-2007-0882 class (inherited env).
    let core = Core::start_with(CoreOptions {
        shell_prefix: Some("umask 000;".into()),
        env: Some(vec![
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("TMPDIR".into(), "/root/tmp".into()),
            ("LD_PRELOAD".into(), "/nonexistent/libinetd-test.so".into()),
            ("FOO".into(), "1".into()),
            ("TZ".into(), "UTC".into()),
        ]),
        ..CoreOptions::default()
    });
    // The core may set its own umask; its environment is as given.
    let environ = std::fs::read(format!("/proc/{}/environ", core.pid())).unwrap();
    assert!(
        String::from_utf8_lossy(&environ).contains("TMPDIR=/root/tmp"),
        "the core was not started with TMPDIR"
    );
    let port = free_port();
    core.apply(vec![tcp4(port)]);
    let rep = Report::read_from(&mut connect4(port).unwrap());
    assert_eq!(rep.value("umask"), "0022");
    assert_eq!(keys(&rep), set(&TCP_ENV), "environment: {:?}", rep.env());
    assert_eq!(rep.env()["PATH"], PATH);
}

#[test]
fn wait_stream_child_gets_the_listening_socket_and_accepts_itself() {
    let core = Core::start();
    let port = free_port();
    let spec = tcp4(port).wait(true).probe(&["accept-once"]);
    assert_eq!(core.apply(vec![spec]).outcomes, vec![Outcome::Added]);

    let mut s = connect4(port).unwrap();
    let rep = Report::read_from(&mut s);
    assert_eq!(rep.fds(), vec![0, 1, 2], "descriptors: {:?}", rep.all("fd"));
    for fd in 0..3 {
        let sock = rep
            .sock(fd)
            .unwrap_or_else(|| panic!("fd {fd} not a socket"));
        assert_eq!(sock["type"], "stream");
        assert_eq!(sock["local"], format!("127.0.0.1:{port}"));
        assert!(
            sock["peer"].starts_with("none"),
            "fd {fd} should be the listening socket, has a peer: {sock:?}"
        );
    }
    // No per-connection variables for wait services.
    assert_eq!(keys(&rep), set(&["PATH"]), "environment: {:?}", rep.env());
    let first = rep.num("pid");

    // After that child exits, the core polls the socket again and starts
    // another one for the next connection.
    let rep2 = Report::read_from(&mut connect4(port).unwrap());
    assert_ne!(rep2.num("pid"), first);
}

#[test]
fn child_runs_as_the_given_user_and_groups_without_capabilities() {
    require_root!("switching to nobody and other groups");
    require_probe_for_others!();
    // Group 100 is not one of nobody's: the core must be told to allow it.
    let core = Core::start_args(&["--allow-group", "100"]);
    let port = free_port();
    let creds = Credentials {
        uid: 65534,
        gid: 65534,
        groups: vec![65534, 100],
    };
    assert_eq!(
        core.apply(vec![tcp4(port).creds(creds)]).outcomes,
        vec![Outcome::Added]
    );
    let rep = Report::read_from(&mut connect4(port).unwrap());
    assert_eq!(rep.value("uid"), "65534 65534 65534 65534");
    assert_eq!(rep.value("gid"), "65534 65534 65534 65534");
    let groups: BTreeSet<&str> = rep.value("groups").split(' ').collect();
    assert_eq!(groups, BTreeSet::from(["100", "65534"]));
    for c in ["capeff", "capprm", "capinh", "capamb"] {
        assert_eq!(rep.value(c), "0000000000000000", "{c}");
    }
    assert_eq!(rep.value("nonewprivs"), "1");
}

#[test]
fn child_gets_only_the_specs_groups_when_the_core_has_more() {
    require_root!("starting the core with supplementary groups 0,4,27");
    require_probe_for_others!();
    let core = Core::start_with(CoreOptions {
        wrapper: vec!["setpriv".into(), "--groups=0,4,27".into(), "--".into()],
        ..CoreOptions::default()
    });
    let core_groups = proc_status(core.pid()).unwrap()["Groups"].clone();
    assert!(
        core_groups.split(' ').any(|g| g == "27"),
        "the wrapper did not give the core groups 0,4,27: {core_groups}"
    );
    let port = free_port();
    core.apply(vec![tcp4(port)]);
    let rep = Report::read_from(&mut connect4(port).unwrap());
    assert_eq!(rep.value("groups"), "65534");
    assert_eq!(rep.value("gid"), "65534 65534 65534 65534");
}

fn rejected(o: &Outcome) -> bool {
    matches!(o, Outcome::Rejected { .. })
}

#[test]
fn root_ids_are_refused_without_allow_root_services() {
    require_root!("a root core decides about root services");
    let core = Core::start();
    let mut c = core.client();
    assert!(c.hello.policy.root);
    assert!(!c.hello.policy.allow_root_services);
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let r = c.apply(vec![
        tcp4(ports[0]),
        tcp4(ports[1]).creds(Credentials {
            uid: 0,
            gid: 65534,
            groups: vec![65534],
        }),
        tcp4(ports[2]).creds(Credentials {
            uid: 65534,
            gid: 0,
            groups: vec![65534],
        }),
        tcp4(ports[3]).creds(Credentials {
            uid: 65534,
            gid: 65534,
            groups: vec![65534, 0],
        }),
    ]);
    assert_eq!(r.outcomes[0], Outcome::Added);
    for i in 1..4 {
        assert!(
            rejected(&r.outcomes[i]),
            "listener {i}: {:?}",
            r.outcomes[i]
        );
    }
    assert!(
        matches!(&r.outcomes[1], Outcome::Rejected { reason } if reason.contains("--allow-root-services")),
        "the reason does not name the flag: {:?}",
        r.outcomes[1]
    );
    // The good one serves, the refused ones are not bound.
    let rep = Report::read_from(&mut connect4(ports[0]).unwrap());
    assert_eq!(rep.value("uid"), "65534 65534 65534 65534");
    for p in &ports[1..] {
        let e = connect4(*p).expect_err("a refused listener is bound");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    }
    assert_eq!(c.status().listeners.len(), 1);
}

#[test]
fn root_ids_are_accepted_with_allow_root_services() {
    require_root!("root services");
    let core = Core::start_args(&["--allow-root-services"]);
    let mut c = core.client();
    assert!(c.hello.policy.allow_root_services);
    let port = free_port();
    let root = Credentials {
        uid: 0,
        gid: 0,
        groups: vec![0],
    };
    assert_eq!(
        c.apply(vec![tcp4(port).creds(root)]).outcomes,
        vec![Outcome::Added]
    );
    let rep = Report::read_from(&mut connect4(port).unwrap());
    assert_eq!(rep.value("uid"), "0 0 0 0");
    assert_eq!(rep.value("gid"), "0 0 0 0");
    // Root services take their capabilities back at exec: no no_new_privs,
    // and the bounding set as the core was given it (not cut), so they get
    // all of it back.
    assert_eq!(rep.value("nonewprivs"), "0");
    let ours = format!(
        "{:016x}",
        proc_caps(std::process::id() as i32, "CapBnd").unwrap()
    );
    assert_eq!(
        format!("{:016x}", proc_caps(core.pid(), "CapBnd").unwrap()),
        ours,
        "the core cut its bounding set although it runs root services"
    );
    assert_eq!(rep.value("capbnd"), ours);
    assert_eq!(rep.value("capeff"), ours);
    // The core's own effective set is still cut to the four.
    let four = cap::mask(&[cap::NET_BIND_SERVICE, cap::SETUID, cap::SETGID, cap::KILL]);
    assert_eq!(proc_caps(core.pid(), "CapEff"), Some(four));
}

#[test]
fn a_listener_as_the_controller_user_is_refused() {
    require_root!("the controller user only matters to a root core");
    let ctl = require_user!("inetd");
    let core = Core::start();
    let (p1, p2) = (free_port(), free_port());
    let r = core.apply(vec![
        tcp4(p1),
        tcp4(p2).creds(Credentials {
            uid: ctl.uid,
            gid: ctl.gid,
            groups: vec![ctl.gid],
        }),
    ]);
    assert_eq!(r.outcomes[0], Outcome::Added);
    assert!(
        matches!(&r.outcomes[1], Outcome::Rejected { reason } if reason.contains("controller")),
        "{:?}",
        r.outcomes[1]
    );
}

#[test]
fn core_keeps_exactly_four_capabilities() {
    require_root!("capabilities of a root core");
    let core = Core::start();
    // The core binds its socket before the cut: a Hello answered means
    // start-up, and so the cut, is done.
    core.client();
    let want = cap::mask(&[cap::NET_BIND_SERVICE, cap::SETUID, cap::SETGID, cap::KILL]);
    for f in ["CapEff", "CapPrm", "CapBnd"] {
        let got = proc_caps(core.pid(), f).unwrap();
        assert_eq!(got, want, "{f} is {got:016x}, expected {want:016x}");
    }
    for f in ["CapInh", "CapAmb"] {
        assert_eq!(proc_caps(core.pid(), f), Some(0), "{f}");
    }
}

#[test]
fn a_core_given_fewer_capabilities_drops_only_what_is_present() {
    require_root!("capabilities of a root core");
    require_probe_for_others!();
    // A unit that already took CAP_KILL and CAP_SETPCAP away: the bounding
    // set cannot be cut (no CAP_SETPCAP), which the core must say, and it
    // runs with the three that are left.
    let core = Core::start_with(CoreOptions {
        wrapper: vec![
            "setpriv".into(),
            "--bounding-set=-kill,-setpcap".into(),
            "--".into(),
        ],
        ..CoreOptions::default()
    });
    // A Hello answered: start-up, and so the cut, is done.
    core.client();
    let want = cap::mask(&[cap::NET_BIND_SERVICE, cap::SETUID, cap::SETGID]);
    for f in ["CapEff", "CapPrm"] {
        let got = proc_caps(core.pid(), f).unwrap();
        assert_eq!(got, want, "{f} is {got:016x}, expected {want:016x}");
    }
    let bnd = proc_caps(core.pid(), "CapBnd").unwrap();
    assert_eq!(bnd & cap::mask(&[cap::KILL, cap::SETPCAP]), 0);
    assert!(
        core.log()
            .lines()
            .any(|l| l.to_lowercase().contains("bounding")),
        "the core does not say it could not cut the bounding set:\n{}",
        core.log()
    );
    // And it still serves as nobody.
    let port = free_port();
    core.apply(vec![tcp4(port)]);
    let rep = Report::read_from(&mut connect4(port).unwrap());
    assert_eq!(rep.value("uid"), "65534 65534 65534 65534");
}

#[test]
fn child_gets_the_descriptor_limit_the_core_was_started_with() {
    // The core may raise its own soft limit for many listeners; servers
    // (some still use select) get the limit the core was given.
    let core = Core::start_with(CoreOptions {
        wrapper: vec!["prlimit".into(), "--nofile=1000:4000".into(), "--".into()],
        ..CoreOptions::default()
    });
    let port = free_port();
    core.apply(vec![tcp4(port)]);
    let rep = Report::read_from(&mut connect4(port).unwrap());
    assert_eq!(rep.value("nofile"), "1000 4000");
}
