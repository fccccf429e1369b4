//! Black-box tests of what the controller says about limits and access
//! lists: `inetctl check` with problems in inetd.conf and hosts files,
//! `inetctl list --json` with the limits in force and the counters, an
//! access list on a wait stream service rejected, and a hosts file change
//! picked up by reload. As root the controller runs as `inetd` (setpriv)
//! and services as `nobody`; otherwise everything runs as the invoking
//! user.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use inetd_tests::{bin_path, command_as_user, free_port, is_root, user, wait_for, Proc, TempDir};

/// A scratch directory with `control/` owned by the controller's user.
fn scratch(tag: &str) -> TempDir {
    let d = TempDir::new(tag);
    let control = d.join("control");
    fs::create_dir(&control).unwrap();
    fs::set_permissions(&control, fs::Permissions::from_mode(0o755)).unwrap();
    if is_root() {
        let inetd = user("inetd").expect("user inetd");
        nix::unistd::chown(
            &control,
            Some(nix::unistd::Uid::from_raw(inetd.uid)),
            Some(nix::unistd::Gid::from_raw(inetd.gid)),
        )
        .unwrap();
    }
    d
}

/// Writes a file readable by the controller, atomically.
fn write(d: &TempDir, name: &str, text: &str) -> PathBuf {
    let p = d.join(name);
    let tmp = d.join(format!(".{name}.tmp"));
    fs::write(&tmp, text).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
    fs::rename(&tmp, &p).unwrap();
    p
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn inetctl(d: &TempDir, args: &[&str]) -> Output {
    Command::new(bin_path("inetctl"))
        .arg("--socket")
        .arg(d.join("control/control.sock"))
        .args(args)
        .output()
        .unwrap()
}

fn check(args: &[&Path]) -> Output {
    Command::new(bin_path("inetctl"))
        .arg("check")
        .args(args)
        .output()
        .unwrap()
}

/// A core and a controller reading `inetd.conf`, `hosts.allow` and
/// `hosts.deny` from `d`.
fn start(d: &TempDir) -> (Proc, Proc) {
    start_with(d, &[])
}

/// [`start`], with more arguments for the core.
fn start_with(d: &TempDir, core_args: &[&str]) -> (Proc, Proc) {
    let mut core = Command::new(bin_path("inetd-core"));
    core.args(core_args)
        .arg("--core-socket")
        .arg(d.join("core.sock"))
        .stdin(Stdio::null());
    let core = Proc::spawn(&mut core);
    wait_for("the core socket", Duration::from_secs(10), || {
        d.join("core.sock").exists()
    });
    let program = bin_path("inetd-controller");
    let mut c = if is_root() {
        command_as_user(&user("inetd").expect("user inetd"), program)
    } else {
        Command::new(program)
    };
    c.arg("--core-socket")
        .arg(d.join("core.sock"))
        .arg("--control-socket")
        .arg(d.join("control/control.sock"))
        .arg("--config")
        .arg(d.join("inetd.conf"))
        .arg("--hosts-allow")
        .arg(d.join("hosts.allow"))
        .arg("--hosts-deny")
        .arg(d.join("hosts.deny"))
        .stdin(Stdio::null());
    (core, Proc::spawn(&mut c))
}

fn list_json(d: &TempDir) -> Option<serde_json::Value> {
    let out = inetctl(d, &["list", "--json"]);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn row(v: &serde_json::Value, port: u16) -> serde_json::Value {
    v["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["port"].as_u64() == Some(u64::from(port)))
        .unwrap_or_else(|| panic!("no row for {port}: {v:#}"))
        .clone()
}

/// What `/bin/cat` on 127.0.0.1:`port` sends back ("" when refused
/// before fork: the core closes the connection at once).
fn cat(port: u16) -> String {
    let mut c = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The core may close a refused connection before this is written.
    let _ = c.write_all(b"ping\n");
    let _ = c.shutdown(std::net::Shutdown::Write);
    let mut got = String::new();
    let _ = c.read_to_string(&mut got);
    got
}

#[test]
fn inetctl_check_reports_limits_and_access_list_problems_with_file_and_line() {
    let d = scratch("check-acl");
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    let conf = write(
        &d,
        "inetd.conf",
        &format!(
            "127.0.0.1:{p1} stream tcp4 nowait/20/5/2 nobody /bin/cat in.telnetd\n\
             127.0.0.1:{p2} stream tcp4 nowait.40 nobody /bin/cat cat\n\
             127.0.0.1:{p3} stream tcp4 wait nobody /bin/cat identd\n"
        ),
    );
    let allow = write(&d, "hosts.allow", "# ok\nsshd: LOCAL\ncat: 127.0.0.1\n");
    let deny = write(&d, "hosts.deny", "ALL: 192.0.2.0/24\n");
    let hosts = |a: &Path, b: &Path| {
        let mut args = vec![Path::new("--hosts-allow"), a, Path::new("--hosts-deny"), b];
        args.push(&conf);
        check(&args)
    };

    // Only a warning about a rule for another daemon; the identd entry is
    // rejected: hosts.deny refuses some clients of every daemon, and a
    // wait stream service cannot be checked.
    let out = hosts(&allow, &deny);
    let err = text(&out.stderr);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{}:2: warning: client pattern \"LOCAL\"",
            allow.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{}:3: error: an access list applies to \"identd\" ({}:1 refuses some clients) but it is a wait stream service",
            conf.display(),
            deny.display()
        )),
        "{err}"
    );
    assert!(
        stdout.contains(&format!(
            "{}:1: {p1} tcp4: limits: 20 children, 5 per minute per source, 2 children per source; access list:",
            conf.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{}:2: {p2} tcp4: limits: 256 children, 40 per minute",
            conf.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 listeners, 1 rejected entry, 1 error"),
        "{stdout}"
    );

    // An unsupported pattern where it decides something is an error at
    // its own line and at the entry's.
    let allow2 = write(
        &d,
        "hosts.allow2",
        "in.telnetd: .example.com\nidentd: ALL\n",
    );
    let out = hosts(&allow2, &deny);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{}:1: error: client pattern \".example.com\": a domain pattern needs host names: unsupported; rejects in.telnetd",
            allow2.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{}:1: error: the access list for \"in.telnetd\" cannot be checked faithfully",
            conf.display()
        )),
        "{err}"
    );

    // Missing files are empty: nothing to refuse, nothing rejected.
    let out = hosts(&d.join("absent.allow"), &d.join("absent.deny"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("3 listeners, 0 rejected entries, 0 errors"));

    // A hosts file that cannot be read is an error, never allow-all.
    let out = hosts(d.path(), &deny);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&d.path().display().to_string()),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn list_json_shows_limits_counters_and_rejects_an_access_list_on_a_wait_stream_service() {
    let d = scratch("list-acl");
    let (p1, p2, p3, p4, p5) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    write(
        &d,
        "inetd.conf",
        &format!(
            "127.0.0.1:{p1} stream tcp4 nowait nobody /bin/cat cat\n\
             127.0.0.1:{p2} stream tcp4 nowait.40 nobody /bin/cat other\n\
             127.0.0.1:{p3} stream tcp4 nowait/20/5/2 nobody /bin/cat other\n\
             127.0.0.1:{p4} stream tcp4 wait nobody /bin/cat identd\n\
             127.0.0.1:{p5} dgram udp4 wait nobody /bin/cat tftpd\n"
        ),
    );
    write(&d, "hosts.allow", "other: ALL\n");
    let deny = write(
        &d,
        "hosts.deny",
        "identd, tftpd: 192.0.2.1\ncat: 127.0.0.1\n",
    );
    let (_core, _controller) = start(&d);
    wait_for("the listeners", Duration::from_secs(15), || {
        list_json(&d).is_some_and(|v| row(&v, p1)["state"] == "listening")
    });

    // The access list refuses 127.0.0.1 before fork, and counts it.
    assert_eq!(cat(p1), "");
    assert_eq!(cat(p2), "ping\n");
    let v = list_json(&d).unwrap();
    let r1 = row(&v, p1);
    assert_eq!(
        r1["limits"],
        serde_json::json!({"max_children": 256, "per_minute": null,
                           "per_source_per_minute": null, "per_source_children": null})
    );
    assert_eq!(r1["refused"]["acl"], 1, "{r1:#}");
    assert_eq!(r1["refused"]["rate"], 0);
    assert_eq!(r1["refused"]["per_source"], 0);
    assert_eq!(r1["at_max_children"], 0);
    assert_eq!(r1["accepted"], 0);
    assert_eq!(row(&v, p2)["limits"]["per_minute"], 40);
    assert_eq!(
        row(&v, p3)["limits"],
        serde_json::json!({"max_children": 20, "per_minute": null,
                           "per_source_per_minute": 5, "per_source_children": 2})
    );
    let r4 = row(&v, p4);
    assert_eq!(r4["state"], "rejected", "{r4:#}");
    assert_eq!(r4["wait"], true, "the rejected row is shown whole");
    assert_eq!(r4["server"], "/bin/cat");
    let reason = r4["reason"].as_str().unwrap();
    assert!(reason.contains("wait stream service"), "{reason}");
    assert!(
        reason.contains(&format!("{}:1", deny.display())),
        "{reason}"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", p4)).is_err(),
        "never run unfiltered"
    );
    // A dgram service gets its list, with a warning on its row, and runs:
    // the core checks the datagram that would wake its server.
    let r5 = row(&v, p5);
    assert_eq!(r5["state"], "listening", "{r5:#}");
    assert!(
        r5["warnings"].as_array().unwrap().iter().any(|w| w
            .as_str()
            .unwrap()
            .contains("checked on the datagram that starts the server")),
        "{r5:#}"
    );
    // The documented key order around the new keys.
    let raw = text(&inetctl(&d, &["list", "--json"]).stdout);
    let keys = [
        "\"refused\"",
        "\"at_max_children\"",
        "\"limits\"",
        "\"last_error\"",
    ];
    let pos: Vec<usize> = keys.iter().map(|k| raw.find(k).unwrap()).collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{raw}");
    // The table notes what is not the default, and what was refused.
    let table = text(&inetctl(&d, &["list"]).stdout);
    assert!(
        table.contains("    limits: 20 children, 5 per minute per source, 2 children per source"),
        "{table}"
    );
    assert!(
        table.contains("    limits: 256 children, 40 per minute"),
        "{table}"
    );
    assert!(
        table.contains(
            "    refused: access list 1, rate 0, per source 0; held at max children 0 times"
        ),
        "{table}"
    );

    // A change to hosts.deny is picked up by reload: cat now answers and
    // identd, with nothing left to refuse, runs.
    write(&d, "hosts.deny", "# nothing\n");
    let out = inetctl(&d, &["reload"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(cat(p1), "ping\n");
    let v = list_json(&d).unwrap();
    assert_eq!(row(&v, p4)["state"], "listening");
}

#[test]
fn a_reload_with_an_unreadable_hosts_file_changes_nothing() {
    let d = scratch("unreadable-acl");
    let p1 = free_port();
    write(
        &d,
        "inetd.conf",
        &format!("127.0.0.1:{p1} stream tcp4 nowait nobody /bin/cat cat\n"),
    );
    write(&d, "hosts.deny", "cat: 127.0.0.1\n");
    let (_core, _controller) = start(&d);
    wait_for("the listener", Duration::from_secs(15), || {
        list_json(&d).is_some_and(|v| row(&v, p1)["state"] == "listening")
    });
    assert_eq!(cat(p1), "");
    // hosts.allow becomes a directory: it cannot be read.
    fs::create_dir(d.join("hosts.allow")).unwrap();
    let out = inetctl(&d, &["reload"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("hosts.allow"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(cat(p1), "", "the list in force stays");
}

/// A connection to `to` from the address `src`: what `/bin/cat` sends
/// back ("" when refused before fork).
fn cat_from(src: &str, to: SocketAddr) -> String {
    use nix::sys::socket::{
        bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrStorage,
    };
    use std::os::fd::AsRawFd;
    let af = if to.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(af, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
    let src: std::net::IpAddr = src.parse().unwrap();
    bind(
        fd.as_raw_fd(),
        &SockaddrStorage::from(SocketAddr::new(src, 0)),
    )
    .unwrap();
    connect(fd.as_raw_fd(), &SockaddrStorage::from(to)).unwrap();
    let mut c = TcpStream::from(fd);
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = c.write_all(b"ping\n");
    let _ = c.shutdown(std::net::Shutdown::Write);
    let mut got = String::new();
    let _ = c.read_to_string(&mut got);
    got
}

#[test]
fn allow_and_deny_with_each_pattern_form_through_the_controller() {
    let d = scratch("acl-forms");
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let v6 = inetd_tests::has_ipv6();
    let mut conf = format!(
        "127.0.0.1:{} stream tcp4 nowait nobody /bin/cat in.a\n\
         127.0.0.1:{} stream tcp4 nowait nobody /bin/cat in.b\n\
         127.0.0.1:{} stream tcp4 nowait nobody /bin/cat in.c\n",
        ports[0], ports[1], ports[2]
    );
    if v6 {
        conf.push_str(&format!(
            "[::1]:{} stream tcp6 nowait nobody /bin/cat in.v6\n\
             [::1]:{} stream tcp6 nowait nobody /bin/cat in.v6net\n",
            ports[3], ports[4]
        ));
    }
    write(&d, "inetd.conf", &conf);
    // in.a: an address, n.n.n. with EXCEPT, and a/nn; in.b: net/mask and
    // ALL EXCEPT a daemon; in.c: denied by ALL in hosts.deny unless
    // allowed; the IPv6 forms [addr] and [net]/len.
    write(
        &d,
        "hosts.allow",
        "in.a: 127.0.0.1, 127.0.2.0/24, 127.0.1. EXCEPT 127.0.1.9\n\
         in.b: 127.0.3.0/255.255.255.0\n\
         ALL EXCEPT in.a in.b in.v6net: 127.0.4.4\n\
         in.v6: [::1]\n\
         in.v6net: [2001:db8::]/32\n",
    );
    write(&d, "hosts.deny", "ALL: ALL\n");
    let (_core, _controller) = start(&d);
    wait_for("the listeners", Duration::from_secs(15), || {
        list_json(&d).is_some_and(|v| row(&v, ports[0])["state"] == "listening")
    });
    let at = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
    let cases = [
        (0, "127.0.0.1", true),
        (0, "127.0.0.2", false),
        (0, "127.0.1.5", true),
        (0, "127.0.1.9", false),
        (0, "127.0.2.200", true),
        (0, "127.0.3.1", false),
        (1, "127.0.3.7", true),
        (1, "127.0.0.1", false),
        (1, "127.0.4.4", false),
        (2, "127.0.4.4", true),
        (2, "127.0.0.1", false),
    ];
    for (i, src, allowed) in cases {
        let got = cat_from(src, at(i));
        let want = if allowed { "ping\n" } else { "" };
        assert_eq!(got, want, "service {i} from {src}");
    }
    let v = list_json(&d).unwrap();
    assert_eq!(row(&v, ports[0])["refused"]["acl"], 3);
    assert_eq!(row(&v, ports[1])["refused"]["acl"], 2);
    assert_eq!(row(&v, ports[2])["refused"]["acl"], 1);
    if v6 {
        let at6 = |i: usize| SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, ports[i]));
        assert_eq!(cat_from("::1", at6(3)), "ping\n", "[::1]");
        assert_eq!(cat_from("::1", at6(4)), "", "[2001:db8::]/32");
    } else {
        inetd_tests::skip("the IPv6 patterns: no IPv6 loopback");
    }
}

#[test]
fn list_shows_a_paused_service_and_its_counters() {
    let d = scratch("paused");
    let p = free_port();
    write(
        &d,
        "inetd.conf",
        &format!("127.0.0.1:{p} stream tcp4 nowait.3 nobody /bin/cat cat\n"),
    );
    write(&d, "hosts.allow", "");
    write(&d, "hosts.deny", "");
    let (_core, _controller) = start_with(&d, &["--pause", "30"]);
    wait_for("the listener", Duration::from_secs(15), || {
        list_json(&d).is_some_and(|v| row(&v, p)["state"] == "listening")
    });
    for _ in 0..3 {
        assert_eq!(cat(p), "ping\n");
    }
    assert_eq!(cat(p), "");
    let r = row(&list_json(&d).unwrap(), p);
    assert_eq!(r["state"], "paused", "{r:#}");
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.contains("rate limit of 3 connections per minute"),
        "{reason}"
    );
    assert!(
        r["until"].as_str().is_some_and(|u| u.ends_with('Z')),
        "{r:#}"
    );
    assert_eq!(r["refused"]["rate"], 1);
    assert_eq!(r["accepted"], 3);
    assert_eq!(r["limits"]["per_minute"], 3);
    let table = text(&inetctl(&d, &["list"]).stdout);
    assert!(table.contains("paused"), "{table}");
    assert!(
        table.contains(
            "    refused: access list 0, rate 1, per source 0; held at max children 0 times"
        ),
        "{table}"
    );
}
