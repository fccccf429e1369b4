//! What each kind of mistake reports (line, field, message) and what each
//! feature of the grammar yields (entries), with fixture name sources.

mod config_support;

use config_support::*;
use inetd_ctl::config::{load_with, LoadOptions, Severity};
use inetd_protocol::{Action, Bind, Builtin, IpMode, Limits, SocketType};

/// (config text, line of the one error, pieces its message must contain).
fn table(cases: &[(&str, u32, &[&str])]) {
    for (text, line, pieces) in cases {
        let (l, msg) = only_error(text);
        assert_eq!(l, *line, "{text:?}: {msg}");
        for p in *pieces {
            assert!(msg.contains(p), "{text:?}: {msg:?} lacks {p:?}");
        }
    }
}

#[test]
fn each_field_wrong_in_turn() {
    table(&[
        (
            "nosuch stream tcp nowait nobody /usr/sbin/present\n",
            1,
            &["field 1 (service): found \"nosuch\", expected a service name in ", "services for tcp, or a port number from 1 to 65535"],
        ),
        (
            "echo strem tcp nowait nobody internal\n",
            1,
            &["field 2 (socket-type): found \"strem\", expected stream, dgram or seqpacket; did you mean \"stream\"?"],
        ),
        (
            "echo stream tcpx nowait nobody internal\n",
            1,
            &["field 3 (protocol): found \"tcpx\", expected tcp, tcp4, tcp6, tcp46, udp, udp4, udp6, udp46 or unix"],
        ),
        (
            "echo stream tcp nowai nobody internal\n",
            1,
            &["field 4 (wait): found \"nowai\", expected wait or nowait"],
        ),
        (
            "echo stream tcp nowait nosuchuser internal\n",
            1,
            &["field 5 (user): found \"nosuchuser\", expected a user name in ", "passwd"],
        ),
        (
            "echo stream tcp nowait nobody tcpd\n",
            1,
            &["field 6 (server): found \"tcpd\", expected an absolute path or \"internal\""],
        ),
        (
            "8007 stream tcp nowait nobody internal bogus\n",
            1,
            &["field 7 (arguments): found \"bogus\", expected a builtin name: echo, discard, chargen, daytime or time"],
        ),
    ]);
}

#[test]
fn too_few_fields() {
    table(&[
        (
            "echo stream tcp nowait nobody\n",
            1,
            &["too few fields: found 5, expected at least 6"],
        ),
        ("echo\n", 1, &["too few fields: found 1"]),
    ]);
    // A whole-entry problem has no "field N" part.
    let (_, msg) = only_error("echo stream\n");
    assert!(!msg.starts_with("field"));
}

#[test]
fn bad_rate_limits() {
    for w in [
        "nowait.0",
        "nowait.",
        "nowait.x",
        "nowait.1x",
        "nowait:0",
        "nowait:-1",
        "nowait.+5",
        "nowait.99999999999",
        "wait/1/2/3/4",
        "nowait/",
        "nowait/x",
        "nowait//1",
        "nowait/-1",
        "nowait.5.5",
        "Nowait",
        "nowait5",
    ] {
        let text = format!("ftp stream tcp {w} nobody /usr/sbin/present\n");
        let (line, msg) = only_error(&text);
        assert_eq!(line, 1);
        assert!(
            msg.starts_with(&format!(
                "field 4 (wait): found {w:?}, expected wait or nowait"
            )),
            "{msg}"
        );
    }
}

#[test]
fn rate_limit_forms() {
    let limits = |w: &str| {
        let c = load_text(&format!("ftp stream tcp4 {w} nobody /usr/sbin/present\n"));
        assert!(errors(&c).is_empty(), "{w}: {:?}", c.diagnostics);
        c.entries[0].spec.limits
    };
    assert_eq!(limits("nowait"), Limits::default());
    // No hidden rate limit (OpenBSD's 256 per minute): only `.N` sets one;
    // the default bounds concurrency instead.
    assert_eq!(limits("nowait").max_per_minute, 0);
    assert_eq!(limits("nowait").max_children, 256);
    assert_eq!(limits("wait").max_per_minute, 0);
    assert_eq!(limits("nowait.20").max_children, 256);
    assert_eq!(limits("nowait.400").max_per_minute, 400);
    assert_eq!(limits("nowait:600").max_per_minute, 600);
    assert_eq!(limits("wait.1").max_per_minute, 1);
    assert_eq!(
        limits("nowait/3/10"),
        Limits {
            max_children: 3,
            max_per_source_per_minute: 10,
            max_children_per_source: 0,
            ..Limits::default()
        }
    );
    assert_eq!(
        limits("nowait/5/6/7"),
        Limits {
            max_children: 5,
            max_per_source_per_minute: 6,
            max_children_per_source: 7,
            ..Limits::default()
        }
    );
    // FreeBSD: 0 means unlimited in every position.
    assert_eq!(
        limits("nowait/0/0/0"),
        Limits {
            max_children: 0,
            max_per_source_per_minute: 0,
            max_children_per_source: 0,
            ..Limits::default()
        }
    );
    assert_eq!(limits("nowait/400").max_children, 400);
    assert_eq!(limits("nowait/400").max_per_minute, 0);
    assert_eq!(limits("nowait/0").max_children, 0, "0 = unlimited");
    let c = load_text("ftp stream tcp4 wait nobody /usr/sbin/present\n");
    assert!(c.entries[0].spec.wait);
}

#[test]
fn near_misses_suggest_the_keyword_and_xinetd_syntax_is_named() {
    table(&[
        (
            "echo stream tcp nowiat nobody internal\n",
            1,
            &[
                "field 4 (wait): found \"nowiat\"",
                "did you mean \"nowait\"?",
            ],
        ),
        (
            "echo stream tcp nowiat.40 nobody internal\n",
            1,
            &["did you mean \"nowait.40\"?"],
        ),
        (
            "echo stream tcp nowait nobody internl\n",
            1,
            &[
                "field 6 (server): found \"internl\"",
                "did you mean \"internal\"?",
            ],
        ),
        (
            "echo stream tpc4 nowait nobody internal\n",
            1,
            &["did you mean \"tcp4\"?"],
        ),
    ]);
    // A file of xinetd's: each of its records says so, none guesses.
    let c = load_text("service echo\n{\n\tdisable = yes\n\ttype = INTERNAL\n}\n");
    let e = errors(&c);
    assert!(!e.is_empty() && c.entries.is_empty(), "{e:?}");
    assert_eq!(e[0].0, 1);
    for (_, msg) in &e {
        assert!(
            msg.starts_with("this is xinetd syntax")
                && msg.contains("write each service on one line"),
            "{msg}"
        );
    }
    // Far from every keyword: no guess.
    let (_, msg) = only_error("echo stream tcp sometimes nobody internal\n");
    assert!(!msg.contains("did you mean"), "{msg}");
}

#[test]
fn users_and_groups() {
    table(&[
        (
            "echo stream tcp nowait nobody:nosuchgroup internal\n",
            1,
            &[
                "field 5 (user): found group \"nosuchgroup\", expected a group name in ",
                "(the user \"nobody\" exists)",
            ],
        ),
        (
            "echo stream tcp nowait nobody.nosuchgroup internal\n",
            1,
            // Not a user as a whole, so user.group: the group is unknown.
            &["field 5 (user): found group \"nosuchgroup\", expected a group name"],
        ),
        (
            "echo stream tcp nowait :nogroup internal\n",
            1,
            &["field 5 (user): found \"\""],
        ),
        (
            "echo stream tcp nowait nobody: internal\n",
            1,
            &["field 5 (user): found group \"\", expected a group name"],
        ),
    ]);
    // Numbers are never taken as ids: not root, not anyone.
    for u in ["0day", "-1", "4294967295", "0", "65534", "+0"] {
        let (_, msg) = only_error(&format!("echo stream tcp nowait {u} internal\n"));
        assert!(
            msg.contains(&format!(
                "field 5 (user): found {u:?}, expected a user name"
            )) && msg.contains("(numeric user ids are not accepted)"),
            "{u}: {msg}"
        );
    }
}

#[test]
fn user_dot_group_and_dotted_user_names() {
    let ids = |field: &str| {
        let c = load_text(&format!("echo stream tcp4 nowait {field} internal\n"));
        assert!(errors(&c).is_empty(), "{field}: {:?}", c.diagnostics);
        let e = &c.entries[0];
        (e.user.clone(), e.group.clone(), e.spec.creds.clone())
    };
    // "first.last" is itself a user: the whole field wins over user.group
    // (user "first" and group "last" exist too).
    let (u, g, creds) = ids("first.last");
    assert_eq!((u.as_str(), g.as_str()), ("first.last", "users"));
    assert_eq!((creds.uid, creds.gid), (1000, 100));
    // "first.staff" is not a user: split at the last dot.
    let (u, g, creds) = ids("first.staff");
    assert_eq!(
        (u.as_str(), g.as_str(), creds.uid, creds.gid),
        ("first", "staff", 1001, 50)
    );
    // user:group always splits at the colon.
    let (u, g, _) = ids("first.last:staff");
    assert_eq!((u.as_str(), g.as_str()), ("first.last", "staff"));
    let (u, g, _) = ids("nobody.nogroup");
    assert_eq!((u.as_str(), g.as_str()), ("nobody", "nogroup"));
    // Supplementary groups as initgroups(user, primary) gives them: the
    // primary first, then every group listing the user.
    let (_, g, creds) = ids("alice");
    assert_eq!(g, "alice");
    assert_eq!(creds.groups, vec![1002, 50, 100]);
    let (_, _, creds) = ids("alice:staff");
    assert_eq!((creds.gid, creds.groups.clone()), (50, vec![50, 100]));
    let (_, g, creds) = ids("bob");
    assert_eq!((g.as_str(), creds.groups.clone()), ("staff", vec![50, 100]));
    let (_, _, creds) = ids("nobody");
    assert_eq!(creds.groups, vec![65534, 100]);
}

#[test]
fn login_class_is_a_warning() {
    let c = load_text("echo stream tcp4 nowait nobody:nogroup/daemon internal\n");
    assert!(errors(&c).is_empty());
    assert_eq!(c.entries[0].group, "nogroup");
    let w = warnings(&c);
    assert_eq!(w.len(), 1);
    assert!(w[0].1.contains("login class \"daemon\" is ignored"));
    assert_eq!(c.entries[0].warnings, vec![w[0].1.clone()]);
}

#[test]
fn services_and_ports() {
    table(&[
        (
            "nosuch dgram udp wait nobody /usr/sbin/present\n",
            1,
            &["found \"nosuch\"", "for udp"],
        ),
        // telnet is tcp only in /etc/services.
        (
            "telnet dgram udp wait nobody /usr/sbin/present\n",
            1,
            &["found \"telnet\"", "for udp"],
        ),
        (
            "0 stream tcp nowait nobody /usr/sbin/present\n",
            1,
            &["found \"0\", expected a port number from 1 to 65535"],
        ),
        (
            "65536 stream tcp nowait nobody /usr/sbin/present\n",
            1,
            &["found \"65536\""],
        ),
        (
            "rstatd/1-3 dgram udp wait nobody /usr/sbin/present\n",
            1,
            &["RPC services (NAME/VERSION) are unsupported"],
        ),
        (
            "/run/x.sock stream tcp nowait nobody /usr/sbin/present\n",
            1,
            &[
                "found \"/run/x.sock\"",
                "(a socket path needs protocol unix)",
            ],
        ),
        (
            "127.0.0.1: stream tcp nowait nobody /usr/sbin/present\n",
            1,
            &["field 1 (service): found \"127.0.0.1:\", expected a service after the address"],
        ),
    ]);
    let c = load_text("65535 stream tcp4 nowait nobody /usr/sbin/present\nwww stream tcp4 nowait nobody /usr/sbin/present\n");
    assert_eq!(
        rows(&c),
        vec![
            "inetd.conf:1 65535 tcp4 0.0.0.0:65535 nobody:nogroup",
            "inetd.conf:2 www tcp4 0.0.0.0:80 nobody:nogroup"
        ]
    );
}

#[test]
fn unsupported_kinds() {
    table(&[
        ("rstatd/1-3 dgram rpc/udp wait nobody /usr/sbin/present\n", 1, &["field 3 (protocol): found \"rpc/udp\"", "(RPC services are unsupported)"]),
        ("echo stream tli nowait nobody /usr/sbin/present\n", 1, &["field 3 (protocol): found \"tli\"", "(TLI is unsupported)"]),
        ("echo tli tcp nowait nobody /usr/sbin/present\n", 1, &["field 2 (socket-type): found \"tli\"", "unsupported"]),
        ("echo raw tcp nowait nobody /usr/sbin/present\n", 1, &["field 2 (socket-type): found \"raw\", expected stream, dgram or seqpacket (raw is unsupported)"]),
        ("echo rdm tcp nowait nobody /usr/sbin/present\n", 1, &["(rdm is unsupported)"]),
        ("tcpmux stream tcp nowait nobody internal\n", 1, &["field 1 (service): found \"tcpmux\"", "(tcpmux is unsupported)"]),
        ("101 stream tcp nowait nobody internal tcpmux\n", 1, &["field 7 (arguments): found \"tcpmux\"", "(tcpmux is unsupported)"]),
        (":nobody:nogroup:0600:/run/x.sock stream unix nowait nobody /usr/sbin/present\n", 1, &["field 1 (service)", "FreeBSD's :user:group:mode:/path form is unsupported"]),
    ]);
}

#[test]
fn socket_type_must_fit_the_protocol() {
    table(&[
        ("echo stream udp nowait nobody internal\n", 1, &["field 3 (protocol): found \"udp\", expected tcp, tcp4, tcp6, tcp46 or unix for a stream socket"]),
        ("echo dgram tcp wait nobody internal\n", 1, &["field 3 (protocol): found \"tcp\", expected udp, udp4, udp6, udp46 or unix for a dgram socket"]),
        ("echo seqpacket tcp nowait nobody internal\n", 1, &["field 3 (protocol): found \"tcp\", expected unix for a seqpacket socket"]),
        ("echo seqpacket udp6 nowait nobody internal\n", 1, &["found \"udp6\", expected unix"]),
    ]);
}

#[test]
fn builtins() {
    table(&[(
        "ssh stream tcp nowait nobody internal\n",
        1,
        &["field 1 (service): found \"ssh\", expected a builtin service: echo, discard, chargen, daytime or time, or an alias of one in "],
    ), (
        "8007 stream tcp nowait nobody internal\n",
        1,
        &["field 7 (arguments): found \"\", expected the builtin's name (a port number names none): echo, discard, chargen, daytime or time"],
    )]);
    let c = load_text(concat!(
        "8007 stream tcp4 nowait nobody internal echo\n",
        "ttytst stream tcp4 nowait nobody internal\n",
        "sink dgram udp4 wait nobody internal\n",
        "8019 stream tcp4 nowait nobody internal source\n",
        "timserver stream tcp4 nowait nobody internal\n",
    ));
    assert!(c.diagnostics.is_empty(), "{:?}", c.diagnostics);
    let got: Vec<(u16, Builtin, Vec<String>)> = c
        .entries
        .iter()
        .map(|e| match (&e.spec.bind, &e.spec.action) {
            (Bind::Inet { port, .. }, Action::Builtin(b)) => (*port, *b, e.argv.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (8007, Builtin::Echo, vec!["echo".to_owned()]),
            (19, Builtin::Chargen, vec!["chargen".to_owned()]),
            (9, Builtin::Discard, vec!["discard".to_owned()]),
            (8019, Builtin::Chargen, vec!["source".to_owned()]),
            (37, Builtin::Time, vec!["time".to_owned()]),
        ]
    );
    assert!(c.entries.iter().all(|e| e.server == "internal"));
}

#[test]
fn builtin_wait_mismatch_is_a_warning() {
    let c = load_text("echo dgram udp4 nowait nobody internal\necho stream tcp4 wait nobody internal\ndaytime stream tcp4 nowait nobody internal extra\n");
    assert!(errors(&c).is_empty(), "{:?}", c.diagnostics);
    let w = warnings(&c);
    assert_eq!(w.len(), 3, "{w:?}");
    assert_eq!(w[0].0, 1);
    assert!(w[0].1.contains("the dgram builtin echo ignores \"nowait\""));
    assert_eq!(w[1].0, 2);
    assert!(w[1].1.contains("the stream builtin echo ignores \"wait\""));
    assert!(w[2]
        .1
        .contains("arguments of the daytime builtin are ignored"));
    // The spec carries how builtins actually run.
    assert!(c.entries[0].spec.wait);
    assert!(!c.entries[1].spec.wait);
}

#[test]
fn dgram_exec_must_be_wait() {
    table(&[(
        "tftp dgram udp nowait nobody /usr/sbin/present\n",
        1,
        &["field 4 (wait): found \"nowait\", expected wait: a datagram server is handed the socket itself"],
    ), (
        "tftp dgram udp nowait.10 nobody /usr/sbin/present\n",
        1,
        &["field 4 (wait): found \"nowait.10\""],
    )]);
    let c = load_text("tftp dgram udp4 wait nobody /usr/sbin/present\nident stream tcp4 wait nobody /usr/sbin/present\n");
    assert!(c.diagnostics.is_empty(), "{:?}", c.diagnostics);
    assert!(c.entries.iter().all(|e| e.spec.wait));
}

#[test]
fn continuation_lines() {
    let c = load_text("echo stream\n\ttcp4 nowait\n  nobody internal\n\n\tdiscard stream tcp4 nowait nobody internal\n");
    assert_eq!(
        rows(&c)[0],
        "inetd.conf:1 echo tcp4 0.0.0.0:7 nobody:nogroup"
    );
    // After a blank line, an indented line has no entry to continue.
    let e = errors(&c);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].0, 5);
    assert!(e[0].1.contains("starts with a space or tab"));
    assert_eq!(c.rejected[0].service, "discard");
    // A problem in a continuation line is reported at the entry's first line.
    let (line, msg) = only_error("# x\necho stream tcp\n nowait nosuch\n internal\n");
    assert_eq!(line, 2);
    assert!(msg.contains("field 5 (user): found \"nosuch\""));
    // Arguments can continue too.
    let c = load_text("ftp stream tcp4 nowait nobody /usr/sbin/present ftpd\n\t-l\n  -v\nx");
    assert_eq!(c.entries[0].argv, vec!["ftpd", "-l", "-v"]);
    // A whitespace-only line is blank: it ends the entry.
    let c = load_text("ftp stream tcp4 nowait nobody /usr/sbin/present ftpd\n \t \n\t-l\n");
    assert_eq!(c.entries[0].argv, vec!["ftpd"]);
    assert_eq!(errors(&c)[0].0, 3);
}

#[test]
fn default_address_lines() {
    let c = load_text(concat!(
        "127.0.0.1:\n",
        "echo stream tcp nowait nobody internal\n",
        "[::1]:\n",
        "discard stream tcp nowait nobody internal\n",
        "192.0.2.1:daytime stream tcp nowait nobody internal\n",
        "*:\n",
        "time stream tcp nowait nobody internal\n",
        "/run/inetd-test-x.sock stream unix nowait nobody internal echo\n",
    ));
    assert!(errors(&c).is_empty(), "{:?}", c.diagnostics);
    let r = rows(&c);
    assert_eq!(
        &r[..5],
        &[
            "inetd.conf:2 echo tcp4 127.0.0.1:7 nobody:nogroup",
            "inetd.conf:4 discard tcp6 [::1]:9 nobody:nogroup",
            "inetd.conf:5 daytime tcp4 192.0.2.1:13 nobody:nogroup",
            "inetd.conf:7 time tcp4 0.0.0.0:37 nobody:nogroup",
            "inetd.conf:7 time tcp6 [::]:37 nobody:nogroup",
        ]
    );
    // The default address does not apply to unix sockets.
    assert!(r[5].contains("inetd-test-x.sock unix"), "{r:?}");
    // A default that does not fit the protocol, and one that does not
    // resolve: the entries that use it are refused, never widened to *.
    let c = load_text(concat!(
        "127.0.0.1:\n",
        "echo stream tcp6 nowait nobody internal\n",
        "nosuch.example:\n",
        "discard stream tcp nowait nobody internal\n",
        "*:\n",
        "daytime stream tcp4 nowait nobody internal\n",
    ));
    let e = errors(&c);
    assert_eq!(e.len(), 3, "{e:?}");
    assert_eq!(e[0].0, 2);
    assert!(e[0].1.contains("found \"127.0.0.1\", expected an IPv6 address for tcp6 (the default address set at line 1)"));
    assert_eq!(e[1].0, 3);
    assert!(e[1]
        .1
        .starts_with("default address line: found \"nosuch.example\""));
    assert_eq!(e[2].0, 4);
    assert!(e[2]
        .1
        .contains("the default address set at line 3 is invalid"));
    assert_eq!(
        rows(&c),
        vec!["inetd.conf:6 daytime tcp4 0.0.0.0:13 nobody:nogroup"]
    );
    assert_eq!(c.rejected.len(), 2);
    assert!(c.has_errors());
}

#[test]
fn default_address_is_per_file() {
    let dir = temp_dir("perfile");
    std::fs::write(
        dir.join("a.conf"),
        "127.0.0.1:\necho stream tcp nowait nobody internal\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("b.conf"),
        "discard stream tcp4 nowait nobody internal\n",
    )
    .unwrap();
    let c = load_with(std::slice::from_ref(&dir), &names(), &options()).unwrap();
    assert_eq!(
        rows(&c),
        vec![
            "a.conf:2 echo tcp4 127.0.0.1:7 nobody:nogroup",
            "b.conf:1 discard tcp4 0.0.0.0:9 nobody:nogroup"
        ]
    );
}

#[test]
fn addresses() {
    let c = load_text(concat!(
        "[::1]:echo stream tcp nowait nobody internal\n",
        "::1:discard stream tcp nowait nobody internal\n",
        "127.0.0.1,[::1],192.0.2.7:daytime stream tcp nowait nobody internal\n",
        "localhost:time stream tcp nowait nobody internal\n",
        "dual.example:chargen stream tcp4 nowait nobody internal\n",
        "[2001:db8::1]:7 stream tcp46 nowait nobody internal echo\n",
        "*:8 stream tcp46 nowait nobody internal echo\n",
        "dual.example,*:9 dgram udp wait nobody internal discard\n",
    ));
    assert!(c.diagnostics.is_empty(), "{:?}", c.diagnostics);
    assert_eq!(
        rows(&c),
        vec![
            "inetd.conf:1 echo tcp6 [::1]:7 nobody:nogroup",
            "inetd.conf:2 discard tcp6 [::1]:9 nobody:nogroup",
            "inetd.conf:3 daytime tcp4 127.0.0.1:13 nobody:nogroup",
            "inetd.conf:3 daytime tcp6 [::1]:13 nobody:nogroup",
            "inetd.conf:3 daytime tcp4 192.0.2.7:13 nobody:nogroup",
            "inetd.conf:4 time tcp4 127.0.0.1:37 nobody:nogroup",
            "inetd.conf:4 time tcp6 [::1]:37 nobody:nogroup",
            "inetd.conf:5 chargen tcp4 192.0.2.10:19 nobody:nogroup",
            "inetd.conf:6 7 tcp46 [2001:db8::1]:7 nobody:nogroup",
            "inetd.conf:7 8 tcp46 [::]:8 nobody:nogroup",
            "inetd.conf:8 9 udp4 192.0.2.10:9 nobody:nogroup",
            "inetd.conf:8 9 udp6 [2001:db8::10]:9 nobody:nogroup",
            "inetd.conf:8 9 udp4 0.0.0.0:9 nobody:nogroup",
            "inetd.conf:8 9 udp6 [::]:9 nobody:nogroup",
        ]
    );
    assert!(matches!(
        c.entries[0].spec.bind,
        Bind::Inet {
            mode: IpMode::V6Only,
            ..
        }
    ));
    assert!(matches!(
        c.entries[9].spec.bind,
        Bind::Inet {
            mode: IpMode::Dual,
            ..
        }
    ));
    table(&[
        ("[::1]:echo stream tcp4 nowait nobody internal\n", 1, &["found \"::1\", expected an IPv4 address for tcp4"]),
        ("127.0.0.1:echo stream tcp6 nowait nobody internal\n", 1, &["found \"127.0.0.1\", expected an IPv6 address for tcp6"]),
        ("127.0.0.1:echo stream tcp46 nowait nobody internal\n", 1, &["expected an IPv6 address for tcp46"]),
        ("v6only.example:echo stream tcp4 nowait nobody internal\n", 1, &["found \"v6only.example\", expected a host name with IPv4 address for tcp4 (it resolves to 2001:db8::30)"]),
        ("nosuch.example:echo stream tcp nowait nobody internal\n", 1, &["found \"nosuch.example\", expected an address or a host name that resolves"]),
        ("127.0.0.1,,::1:echo stream tcp nowait nobody internal\n", 1, &["without empty items"]),
        ("127.0.0.1,127.0.0.1:echo stream tcp nowait nobody internal\n", 1, &["each address once (127.0.0.1 is given twice)"]),
        ("localhost,::1:echo stream tcp nowait nobody internal\n", 1, &["(::1 is given twice)"]),
        ("[fe80::1%eth0]:echo stream tcp nowait nobody internal\n", 1, &["zone index"]),
        ("a/b:echo stream tcp nowait nobody internal\n", 1, &["found \"a/b\", expected an IPv4 address, an [IPv6] address, a host name or *"]),
    ]);
}

#[test]
fn ipv6_half_skipped_without_ipv6() {
    let opts = LoadOptions {
        ipv6: Some(false),
        ..options()
    };
    let c = load_bytes_with(b"echo stream tcp nowait nobody internal\n[::1]:discard stream tcp nowait nobody internal\n", &opts);
    assert_eq!(
        rows(&c),
        vec![
            "inetd.conf:1 echo tcp4 0.0.0.0:7 nobody:nogroup",
            "inetd.conf:2 discard tcp6 [::1]:9 nobody:nogroup"
        ]
    );
    let w = warnings(&c);
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].0, 1);
    assert!(w[0]
        .1
        .contains("no IPv6: only the IPv4 half of tcp is served"));
}

#[test]
fn twins_split() {
    // OpenBSD's tcp/tcp6 twins, in both orders, at * and at [::] / 0.0.0.0.
    for text in [
        "echo stream tcp nowait nobody internal\necho stream tcp6 nowait nobody internal\n",
        "echo stream tcp6 nowait nobody internal\necho stream tcp nowait nobody internal\n",
        "echo stream tcp nowait nobody internal\n[::]:echo stream tcp6 nowait nobody internal\n",
    ] {
        let c = load_text(text);
        assert!(c.diagnostics.is_empty(), "{text}: {:?}", c.diagnostics);
        let mut r = rows(&c);
        r.sort();
        let plain = if text.starts_with("echo stream tcp ") {
            1
        } else {
            2
        };
        let mut want = vec![
            format!("inetd.conf:{plain} echo tcp4 0.0.0.0:7 nobody:nogroup"),
            format!("inetd.conf:{} echo tcp6 [::]:7 nobody:nogroup", 3 - plain),
        ];
        want.sort();
        assert_eq!(r, want, "{text}");
        check_consistency(&c);
    }
    let c = load_text(
        "echo dgram udp wait nobody internal\n0.0.0.0:echo dgram udp4 wait daemon internal\n",
    );
    assert_eq!(
        rows(&c),
        vec![
            "inetd.conf:1 echo udp6 [::]:7 nobody:nogroup",
            "inetd.conf:2 echo udp4 0.0.0.0:7 daemon:daemon"
        ]
    );
    // Both halves taken: the plain entry serves nothing and says so.
    let c = load_text("echo stream tcp nowait nobody internal\necho stream tcp4 nowait nobody internal\necho stream tcp6 nowait nobody internal\n");
    assert_eq!(c.entries.len(), 2);
    assert!(c.entries.iter().all(|e| e.source.line != 1));
    let w = warnings(&c);
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].0, 1);
    assert!(w[0].1.contains("no listener of its own"));
}

#[test]
fn overlaps_are_errors_naming_the_first() {
    let cases: &[(&str, &str)] = &[
        // The same key twice.
        ("echo stream tcp4 nowait nobody internal\necho stream tcp4 nowait nobody internal\n", "stream tcp4 0.0.0.0:7 overlaps the entry at "),
        // Two plain entries: no twin rule between them.
        ("echo stream tcp nowait nobody internal\n7 stream tcp nowait nobody internal echo\n", "overlaps the entry at "),
        // tcp46 beside tcp4 or tcp6 at the same port and address.
        ("echo stream tcp4 nowait nobody internal\necho stream tcp46 nowait nobody internal\n", "stream tcp46 [::]:7 overlaps the entry at "),
        ("echo stream tcp46 nowait nobody internal\necho stream tcp4 nowait nobody internal\n", "stream tcp4 0.0.0.0:7 overlaps the entry at "),
        ("[::1]:echo stream tcp6 nowait nobody internal\n[::1]:echo stream tcp46 nowait nobody internal\n", "overlaps the entry at "),
        ("echo stream tcp nowait nobody internal\necho stream tcp46 nowait nobody internal\n", "overlaps the entry at "),
        ("127.0.0.1:echo stream tcp4 nowait nobody internal\n[::ffff:127.0.0.1]:echo stream tcp46 nowait nobody internal\n", "overlaps the entry at "),
        // One unix path, whatever the socket type.
        ("/run/inetd-t.sock stream unix nowait nobody internal echo\n/var/run/inetd-t.sock dgram unix wait nobody internal echo\n", "overlaps the entry at "),
    ];
    for (text, piece) in cases {
        let c = load_text(text);
        let e = errors(&c);
        assert_eq!(e.len(), 1, "{text}: {e:?}");
        assert_eq!(e[0].0, 2, "{text}");
        assert!(e[0].1.contains(piece), "{text}: {}", e[0].1);
        assert!(e[0].1.contains("inetd.conf:1"), "{text}: {}", e[0].1);
        assert!(c.entries.iter().all(|x| x.source.line == 1), "{text}");
        check_consistency(&c);
    }
    // An entry rejected for an overlap, found only once every entry is
    // parsed, still shows its fields as written, whatever lines come
    // before it (a continued entry, a comment, a bad line, an addr: line).
    let c = load_text(
        "# comment\nnosuch\n127.0.0.1:\necho stream\n tcp4 nowait nobody internal\n\
         7 stream tcp4,sndbuf=1k nowait nobody internal echo\ndaytime stream tcp4 nowait nobody internal\n",
    );
    let r: Vec<_> = (c.rejected.iter())
        .map(|r| (r.source.line, r.service.as_str(), r.protocol.as_str()))
        .collect();
    assert_eq!(
        r,
        [(2, "nosuch", ""), (6, "7", "tcp4,sndbuf=1k")],
        "{:?}",
        c.diagnostics
    );
    assert_eq!(c.entries.len(), 2);
    check_consistency(&c);
    // Different socket types and ports do not overlap; IPv4 and IPv6-only
    // sockets on one port do not either.
    let c = load_text("echo stream tcp4 nowait nobody internal\necho dgram udp4 wait nobody internal\necho stream tcp6 nowait nobody internal\n");
    assert!(c.diagnostics.is_empty(), "{:?}", c.diagnostics);
    // The error on a bad later entry does not take the good earlier one's
    // half: the first entry keeps both.
    let c = load_text(
        "echo stream tcp nowait nobody internal\necho stream tcp6 nowait nosuchuser internal\n",
    );
    assert_eq!(c.entries.len(), 2);
}

#[test]
fn overlap_across_files_names_the_other_file() {
    let dir = temp_dir("across");
    std::fs::write(
        dir.join("10-a.conf"),
        "\n\necho stream tcp4 nowait nobody internal\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("20-b.conf"),
        "echo stream tcp4 nowait nobody internal\n",
    )
    .unwrap();
    let c = load_with(std::slice::from_ref(&dir), &names(), &options()).unwrap();
    let e = &c.diagnostics[0];
    assert_eq!(e.severity, Severity::Error);
    assert_eq!(e.file, dir.join("20-b.conf").display().to_string());
    assert_eq!(e.line, 1);
    assert!(
        e.message
            .ends_with(&format!("{}:3", dir.join("10-a.conf").display())),
        "{}",
        e.message
    );
    assert_eq!(
        e.to_string(),
        format!(
            "{}:1: error: {}",
            dir.join("20-b.conf").display(),
            e.message
        )
    );
}

#[test]
fn protocol_buffer_options() {
    let c = load_text("echo stream tcp4,sndbuf=64k nowait nobody internal\ndiscard stream tcp,rcvbuf=1m,sndbuf=8192 nowait nobody internal\n");
    assert!(errors(&c).is_empty(), "{:?}", c.diagnostics);
    let w = warnings(&c);
    assert_eq!(w.len(), 2);
    assert!(w[0]
        .1
        .contains("protocol options \"sndbuf=64k\" are ignored"));
    assert_eq!(c.entries[0].protocol, "tcp4");
    assert_eq!(c.entries.len(), 3);
    table(&[
        ("echo stream tcp,foo=1 nowait nobody internal\n", 1, &["field 3 (protocol): found \"tcp,foo=1\", expected a protocol optionally followed by ,sndbuf=SIZE"]),
        ("echo stream tcp,sndbuf=12q nowait nobody internal\n", 1, &["field 3 (protocol)"]),
        ("echo stream tcp,sndbuf= nowait nobody internal\n", 1, &["field 3 (protocol)"]),
        ("/run/x.sock stream unix,sndbuf=1k nowait nobody internal echo\n", 1, &["field 3 (protocol)"]),
    ]);
}

#[test]
fn servers_and_arguments() {
    let c = load_text(concat!(
        "ftp stream tcp4 nowait nobody /usr/sbin/present\n",
        "telnet stream tcp4 nowait nobody /usr/sbin/missing in.telnetd -h\n",
        "smtp stream tcp4 nowait nobody /usr/sbin/noexec\n",
        "finger stream tcp4 nowait nobody /usr/sbin/adir\n",
    ));
    assert!(errors(&c).is_empty());
    assert_eq!(c.entries[0].argv, vec!["present"]);
    assert_eq!(c.entries[1].argv, vec!["in.telnetd", "-h"]);
    let w = warnings(&c);
    assert_eq!(
        w,
        vec![
            (2, "server \"/usr/sbin/missing\" does not exist".to_owned()),
            (
                3,
                "server \"/usr/sbin/noexec\" is not executable".to_owned()
            ),
            (
                4,
                "server \"/usr/sbin/adir\" is not a regular file".to_owned()
            ),
        ]
    );
    assert_eq!(c.entries[1].warnings, vec![w[0].1.clone()]);
    // Bounds on argv, from the protocol crate.
    let many = vec!["a"; 300].join(" ");
    let (_, msg) = only_error(&format!(
        "ftp stream tcp4 nowait nobody /usr/sbin/present {many}\n"
    ));
    assert!(
        msg.starts_with(
            "field 7 (arguments): found \"300 arguments\", expected at most 256 arguments"
        ),
        "{msg}"
    );
    let long = "a".repeat(5000);
    let (_, msg) = only_error(&format!(
        "ftp stream tcp4 nowait nobody /usr/sbin/present x {long}\n"
    ));
    assert!(
        msg.contains("expected arguments of at most 4096 bytes"),
        "{msg}"
    );
    let (_, msg) = only_error(&format!(
        "ftp stream tcp4 nowait nobody /{}\n",
        "b".repeat(5000)
    ));
    assert!(msg.starts_with("field 6 (server)"), "{msg}");
}

#[test]
fn unix_paths() {
    let dir = temp_dir("unix");
    std::fs::create_dir(dir.join("real")).unwrap();
    std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).unwrap();
    let canon = dir.canonicalize().unwrap().join("real/s.sock");
    let text = format!(
        "{}/link/s.sock stream unix nowait nobody /usr/sbin/present\n{}/real/../real/t.sock seqpacket unix nowait nobody /usr/sbin/present\n",
        dir.display(),
        dir.display()
    );
    let c = load_text(&text);
    assert!(c.diagnostics.is_empty(), "{:?}", c.diagnostics);
    assert_eq!(
        c.entries[0].spec.bind,
        Bind::Unix {
            path: canon.display().to_string()
        }
    );
    assert_eq!(
        c.entries[0].service,
        format!("{}/link/s.sock", dir.display())
    );
    assert_eq!(c.entries[0].protocol, "unix");
    assert_eq!(c.entries[1].spec.socket_type, SocketType::Seqpacket);
    // /var/run is a link to /run on Debian: one key.
    if std::fs::canonicalize("/var/run").ok() == Some("/run".into()) {
        let c = load_text("/var/run/inetd-x.sock stream unix nowait nobody /usr/sbin/present\n");
        assert_eq!(
            c.entries[0].spec.bind,
            Bind::Unix {
                path: "/run/inetd-x.sock".into()
            }
        );
    }
    table(&[
        ("run/x.sock stream unix nowait nobody /usr/sbin/present\n", 1, &["field 1 (service): found \"run/x.sock\", expected an absolute socket path (a unix service has no address prefix)"]),
        ("127.0.0.1:/run/x.sock stream unix nowait nobody /usr/sbin/present\n", 1, &["no address prefix"]),
        ("/run/ stream unix nowait nobody /usr/sbin/present\n", 1, &["field 1 (service)"]),
        ("/ stream unix nowait nobody /usr/sbin/present\n", 1, &["field 1 (service)"]),
        ("/nonexistent-dir/../x.sock stream unix nowait nobody /usr/sbin/present\n", 1, &["a socket path whose directory exists"]),
    ]);
    let (_, msg) = only_error(&format!(
        "/tmp/{}.sock stream unix nowait nobody /usr/sbin/present\n",
        "s".repeat(120)
    ));
    assert!(msg.contains("at most 107 bytes"), "{msg}");
    // dgram unix exec must be wait too.
    let (_, msg) = only_error("/run/x.sock dgram unix nowait nobody /usr/sbin/present\n");
    assert!(msg.starts_with("field 4 (wait)"));
    // A builtin on a socket path is named by the first argument.
    let c = load_text("/run/inetd-e.sock stream unix nowait nobody internal echo\n");
    assert_eq!(c.entries[0].spec.action, Action::Builtin(Builtin::Echo));
    let (_, msg) = only_error("/run/inetd-e.sock stream unix nowait nobody internal\n");
    assert!(msg.contains("(a socket path names none)"), "{msg}");
}

#[test]
fn unreadable_lines_are_errors_not_panics() {
    let mut long = b"echo stream tcp nowait nobody internal ".to_vec();
    long.extend(std::iter::repeat_n(b'x', 70_000));
    long.extend(b"\necho stream tcp4 nowait nobody internal\n");
    let c = load_bytes_with(&long, &options());
    let e = errors(&c);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].0, 1);
    assert!(e[0].1.contains("line 1 is longer than 65536 bytes"));
    assert_eq!(c.rejected[0].service, "echo");
    assert_eq!(c.entries.len(), 1);

    for (bytes, piece) in [
        (
            &b"echo stream tcp nowait nobody\x00 internal\n"[..],
            "control character 0x00",
        ),
        (
            b"echo stream tcp nowait nobody internal\r\n",
            "DOS line ending",
        ),
        (b"echo stream tcp nowait \x1b[31mnobody internal\n", "0x1b"),
        (
            b"echo stream tcp nowait nob\xffdy internal\n",
            "not valid UTF-8",
        ),
        (
            b"echo stream tcp\n nowait\x7f nobody internal\n",
            "line 2 contains the control character 0x7f",
        ),
    ] {
        let c = load_bytes_with(bytes, &options());
        let e = errors(&c);
        assert_eq!(e.len(), 1, "{bytes:?}");
        assert_eq!(e[0].0, 1);
        assert!(e[0].1.contains(piece), "{}", e[0].1);
        assert_eq!(c.rejected.len(), 1);
        // One diagnostic is one line, whatever the input.
        assert!(!c.diagnostics[0].to_string().contains('\n'));
    }
    // Comments are not inspected.
    let c = load_bytes_with(b"#\x00\xff\x1b\r\n", &options());
    assert!(c.diagnostics.is_empty());
}

/// Random bytes and random recombinations of valid fields: never a panic,
/// every rejected entry has its error, every entry is consistent.
#[test]
fn garbage_never_panics() {
    let words = [
        "echo",
        "stream",
        "dgram",
        "tcp",
        "udp6",
        "tcp46",
        "unix",
        "nowait",
        "wait.0",
        "wait/1/2",
        "nobody",
        "nobody.nogroup",
        "internal",
        "/usr/sbin/present",
        "[::1]:",
        "127.0.0.1:",
        "*:",
        "1",
        ":",
        "[",
        "]",
        ",",
        "/run/x.sock",
        "\t",
        " ",
        "\n",
        "#",
        "\u{e9}",
        "%",
        "rpc/udp",
        "\\",
        "\"",
        "8007",
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..200 {
        let mut text = Vec::new();
        for _ in 0..(next() % 60) {
            if round % 4 == 0 {
                text.push((next() % 256) as u8);
            } else {
                text.extend(words[(next() as usize) % words.len()].as_bytes());
                if next() % 3 == 0 {
                    text.push(b' ');
                }
            }
        }
        let c = load_bytes_with(&text, &options());
        let n_err = errors(&c).len();
        assert!(n_err >= c.rejected.len(), "{text:?}");
        check_consistency(&c);
    }
}

#[test]
fn diagnostics_are_in_file_and_line_order() {
    let c = load_text(concat!(
        "ftp stream tcp4 nowait nobody /usr/sbin/missing\n",
        "echo stream tcp4 nowait nobody internal\n",
        "bad\n",
        "echo stream tcp4 nowait nobody internal\n",
    ));
    let lines: Vec<(u32, Severity)> = c.diagnostics.iter().map(|d| (d.line, d.severity)).collect();
    assert_eq!(
        lines,
        vec![
            (1, Severity::Warning),
            (3, Severity::Error),
            (4, Severity::Error)
        ]
    );
    let shown = c.diagnostics[1].to_string();
    assert!(shown.ends_with("inetd.conf:3: error: too few fields: found 1, expected at least 6 (service socket-type protocol wait user server [arguments])"), "{shown}");
    assert!(c.diagnostics[0]
        .to_string()
        .contains("inetd.conf:1: warning: server"));
}

#[test]
fn bracket_without_service() {
    table(&[(
        "[::1] stream tcp nowait nobody internal\n",
        1,
        &["field 1 (service): found \"[::1]\", expected [IPV6-ADDRESS]:SERVICE"],
    )]);
}

/// The core refuses an Apply over MAX_LISTENERS as a whole: the entries
/// past the bound are rejected, the others run.
#[test]
fn listener_bound() {
    let max = inetd_protocol::MAX_LISTENERS;
    let mut text = String::new();
    for port in 1..=(max + 2) {
        text.push_str(&format!("{port} stream tcp4 nowait nobody internal echo\n"));
    }
    let c = load_text(&text);
    assert_eq!(c.entries.len(), max);
    let e = errors(&c);
    assert_eq!(e.len(), 2);
    assert_eq!(e[0].0 as usize, max + 1);
    assert!(e[0].1.contains("too many listeners"));
}

#[test]
fn field_order_of_the_one_error() {
    // Fields 4 and 5 both wrong: field 4 is reported.
    let (_, msg) = only_error("tftp dgram udp nowait nosuchuser /usr/sbin/present\n");
    assert!(msg.starts_with("field 4 (wait)"), "{msg}");
    // Fields 5 and 6 both wrong: field 5.
    let (_, msg) = only_error("ftp stream tcp nowait nosuchuser tcpd\n");
    assert!(msg.starts_with("field 5 (user)"), "{msg}");
    // Builtins are bounded like servers.
    let many = vec!["echo"; 300].join(" ");
    let (_, msg) = only_error(&format!("8007 stream tcp nowait nobody internal {many}\n"));
    assert!(msg.starts_with("field 7 (arguments)"), "{msg}");
}
