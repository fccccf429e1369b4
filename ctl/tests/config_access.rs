//! Access lists from hosts.allow and hosts.deny compiled into a parsed
//! configuration: daemon names, which services get a list, which are
//! rejected and why, and the diagnostics with FILE:LINE.

mod config_support;

use config_support::*;
use inetd_ctl::config::access::{self, daemon_name, AccessFiles};
use inetd_ctl::config::{Config, Severity, SourcePrefix};
use inetd_ctl::hosts::{self, acl_allows, Verdict};
use inetd_protocol::{Action, Builtin, IpMode};

fn with_access(conf: &str, allow: &str, deny: &str) -> Config {
    let mut c = load_text(conf);
    let files = vec![
        hosts::parse("hosts.allow", allow.as_bytes(), Verdict::Allow),
        hosts::parse("hosts.deny", deny.as_bytes(), Verdict::Deny),
    ];
    access::apply(&mut c, &files);
    c
}

fn diags(c: &Config) -> Vec<String> {
    c.diagnostics.iter().map(|d| d.to_string()).collect()
}

fn allows(c: &Config, entry: usize, peer: &str) -> bool {
    acl_allows(c.entries[entry].spec.acl.as_ref(), peer.parse().unwrap())
}

#[test]
fn daemon_names_are_what_tcpd_sees() {
    let exec = |path: &str, argv: &[&str]| Action::Exec {
        path: path.into(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
    };
    assert_eq!(
        daemon_name(&exec("/usr/sbin/tcpd", &["/usr/sbin/in.fingerd"])),
        "in.fingerd"
    );
    assert_eq!(daemon_name(&exec("/bin/cat", &["cat", "-u"])), "cat");
    assert_eq!(daemon_name(&exec("/usr/sbin/x", &[])), "x");
    assert_eq!(daemon_name(&Action::Builtin(Builtin::Echo)), "echo");
    // A numeric builtin entry runs the builtin its argument names.
    let c = load_text("8007 stream tcp4 nowait nobody internal echo\n");
    assert_eq!(daemon_name(&c.entries[0].spec.action), "echo");
}

#[test]
fn nowait_stream_services_get_their_list_per_family() {
    let c = with_access(
        concat!(
            "9001 stream tcp nowait nobody /usr/sbin/present cat\n",
            "9002 stream tcp4 nowait nobody /usr/sbin/present other\n",
        ),
        "cat: 192.0.2.0/24 [2001:db8::]/32\n",
        "cat: ALL\n",
    );
    assert!(
        diags(&c).iter().all(|d| !d.contains("error")),
        "{:?}",
        diags(&c)
    );
    assert_eq!(c.entries.len(), 3, "two halves and one");
    let v4 = c
        .entries
        .iter()
        .position(|e| e.protocol == "tcp4" && e.service == "9001")
        .unwrap();
    let v6 = c.entries.iter().position(|e| e.protocol == "tcp6").unwrap();
    assert!(allows(&c, v4, "192.0.2.9"));
    assert!(!allows(&c, v4, "198.51.100.1"));
    assert!(allows(&c, v6, "2001:db8::9"));
    assert!(!allows(&c, v6, "2001:db9::9"));
    // Each half carries only its own family's rules.
    let acl4 = c.entries[v4].spec.acl.as_ref().unwrap();
    assert!(acl4.rules.iter().all(|r| r.addr.is_ipv4()), "{acl4:?}");
    let acl6 = c.entries[v6].spec.acl.as_ref().unwrap();
    assert!(acl6.rules.iter().all(|r| r.addr.is_ipv6()), "{acl6:?}");
    // "other" is not named anywhere: no list at all.
    let other = c.entries.iter().position(|e| e.service == "9002").unwrap();
    assert_eq!(c.entries[other].spec.acl, None);
}

#[test]
fn wait_stream_and_unix_services_with_a_list_are_rejected() {
    let c = with_access(
        concat!(
            "9003 stream tcp4 wait nobody /usr/sbin/present identd\n",
            "9004 stream tcp4 wait nobody /usr/sbin/present free\n",
            "/run/x.sock stream unix nowait nobody /usr/sbin/present sock\n",
            "9005 stream tcp4 nowait nobody /usr/sbin/present identd\n",
        ),
        "free: ALL\n",
        "\n# refuse one network\nidentd, sock: 10.\n",
    );
    let d = diags(&c);
    let errors: Vec<&String> = d.iter().filter(|x| x.contains(": error: ")).collect();
    assert_eq!(errors.len(), 2, "{d:#?}");
    assert!(errors[0].contains(":1: error: an access list applies to \"identd\" (hosts.deny:3 refuses some clients) but it is a wait stream service"), "{}", errors[0]);
    assert!(errors[0].contains("\"identd: ALL\" in hosts.allow"));
    assert!(errors[1].contains(":3: error: "), "{}", errors[1]);
    assert!(errors[1].contains("unix socket"), "{}", errors[1]);
    // The rejected entries keep everything they parsed, for their rows.
    assert_eq!(c.rejected.len(), 2);
    let r = &c.rejected[0];
    assert_eq!(r.source.line, 1);
    assert!(r.entry.as_ref().unwrap().spec.wait);
    // An allow-all list (and the nowait identd) run.
    let served: Vec<&str> = c.entries.iter().map(|e| e.service.as_str()).collect();
    assert_eq!(served, ["9004", "9005"]);
    assert_eq!(c.entries[0].spec.acl, None);
    assert!(c.entries[1].spec.acl.is_some());
    assert!(c.has_errors());
}

#[test]
fn dgram_services_are_checked_on_the_first_datagram_with_a_warning() {
    let c = with_access(
        concat!(
            "9006 dgram udp4 wait nobody /usr/sbin/present in.tftpd\n",
            "echo dgram udp4 wait nobody internal\n",
        ),
        "",
        "in.tftpd, echo: 192.0.2.0/24\n",
    );
    assert!(!c.has_errors(), "{:?}", diags(&c));
    assert_eq!(c.entries.len(), 2);
    for e in &c.entries {
        assert!(e.spec.acl.is_some(), "{}", e.service);
        assert!(
            e.warnings
                .iter()
                .any(|w| w.contains("checked on the datagram that starts the server")),
            "{:?}",
            e.warnings
        );
    }
    assert!(!allows(&c, 0, "192.0.2.5"));
    assert!(allows(&c, 0, "127.0.0.1"));
    let d = diags(&c);
    assert_eq!(
        d.iter().filter(|x| x.contains("starts the server")).count(),
        2,
        "one warning per entry: {d:#?}"
    );
}

#[test]
fn unsupported_patterns_reject_what_they_could_decide_and_warn_elsewhere() {
    let c = with_access(
        concat!(
            "9007 stream tcp4 nowait nobody /usr/sbin/present in.telnetd\n",
            "9008 stream tcp4 nowait nobody /usr/sbin/present in.rlogind\n",
            "9009 stream tcp4 nowait nobody /usr/sbin/tcpd in.fingerd\n",
        ),
        "in.telnetd: .example.com\nsshd: LOCAL\nin.fingerd: KNOWN\n",
        "ALL: ALL\n",
    );
    let d = diags(&c);
    assert!(
        d.contains(&"hosts.allow:1: error: client pattern \".example.com\": a domain pattern needs host names: unsupported; rejects in.telnetd".to_owned()),
        "{d:#?}"
    );
    assert!(d.iter().any(
        |x| x.starts_with("hosts.allow:2: warning: client pattern \"LOCAL\"")
            && x.ends_with("(it decides nothing for the services configured here)")
    ));
    assert!(d
        .iter()
        .any(|x| x.starts_with("hosts.allow:3: warning: ")
            && x.ends_with("left to tcpd for in.fingerd")));
    let entry_error = d
        .iter()
        .find(|x| x.contains(":1: error: the access list for \"in.telnetd\""))
        .expect("the entry's error");
    assert!(entry_error.contains("hosts.allow:1: client pattern \".example.com\""));
    // in.rlogind: hosts.deny ALL: ALL, compiled into "deny everything".
    let rlogin = c.entries.iter().find(|e| e.service == "9008").unwrap();
    let acl = rlogin.spec.acl.as_ref().unwrap();
    assert!(acl.rules.is_empty() && !acl.default_allow);
    // tcpd checks in.fingerd itself: no list in the core, a warning.
    let finger = c.entries.iter().find(|e| e.service == "9009").unwrap();
    assert_eq!(finger.spec.acl, None);
    assert!(finger
        .warnings
        .iter()
        .any(|w| w.contains("tcpd, the server")));
    assert_eq!(c.rejected.len(), 1);
    // The entry's error sits with the configuration's diagnostics, the
    // access files' after them.
    let first_hosts = d.iter().position(|x| x.starts_with("hosts.")).unwrap();
    let entry_pos = d.iter().position(|x| x == entry_error).unwrap();
    assert!(entry_pos < first_hosts, "{d:#?}");
}

#[test]
fn notes_of_rules_that_decide_are_warnings() {
    let c = with_access(
        "9010 stream tcp4 nowait nobody /usr/sbin/present cat\n",
        "cat: 127.0.0.1: spawn (echo %h) &: allow\nzzz: ALL: twist /bin/false\n",
        "ALL: ALL",
    );
    let d = diags(&c);
    assert!(
        d.iter()
            .any(|x| x.starts_with("hosts.allow:1: warning: options ignored")),
        "{d:#?}"
    );
    assert!(
        !d.iter().any(|x| x.starts_with("hosts.allow:2:")),
        "zzz decides nothing here: {d:#?}"
    );
    assert!(d
        .iter()
        .any(|x| x.starts_with("hosts.deny:1: warning: the last line has no newline")));
    assert!(allows(&c, 0, "127.0.0.1"));
    assert!(!allows(&c, 0, "127.0.0.2"));
}

#[test]
fn missing_files_are_empty_and_unreadable_ones_are_errors() {
    let dir = temp_dir("access");
    let files = AccessFiles {
        allow: dir.join("absent.allow"),
        deny: dir.join("absent.deny"),
    };
    let read = access::read(&files).expect("missing means empty");
    assert!(read.iter().all(|f| f.rules.is_empty()));
    // A directory cannot be read as a file: never an empty list.
    let files = AccessFiles {
        allow: dir.clone(),
        deny: dir.join("absent.deny"),
    };
    let e = access::read(&files).unwrap_err().to_string();
    assert!(e.starts_with(&dir.display().to_string()), "{e}");
    let conf = dir.join("inetd.conf");
    std::fs::write(&conf, "9011 stream tcp4 nowait nobody /bin/cat cat\n").unwrap();
    let e = inetd_ctl::config::load_all(
        std::slice::from_ref(&conf),
        &names(),
        &files,
        SourcePrefix::default(),
    );
    assert!(e.is_err());
    std::fs::write(dir.join("deny"), "cat: 10.\n").unwrap();
    let files = AccessFiles {
        allow: dir.join("absent.allow"),
        deny: dir.join("deny"),
    };
    let c =
        inetd_ctl::config::load_all(&[conf], &names(), &files, "24,64".parse().unwrap()).unwrap();
    assert!(c.entries[0].spec.acl.is_some());
    assert_eq!(c.entries[0].spec.limits.source_prefix_v4, 24);
    assert_eq!(c.entries[0].spec.limits.source_prefix_v6, 64);
    assert_eq!(
        c.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count(),
        0
    );
}

#[test]
fn source_prefix_values() {
    let p = |s: &str| s.parse::<SourcePrefix>();
    assert_eq!(p("32,128"), Ok(SourcePrefix { v4: 32, v6: 128 }));
    assert_eq!(p("24,64"), Ok(SourcePrefix { v4: 24, v6: 64 }));
    assert_eq!(SourcePrefix::default(), SourcePrefix { v4: 32, v6: 128 });
    for bad in [
        "", "24", "24,", ",64", "33,64", "24,129", "0,64", "24,0", "a,b", "24,64,1", "+24,64",
    ] {
        assert!(p(bad).is_err(), "{bad}");
    }
}

#[test]
fn dual_stack_listeners_see_both_families() {
    let c = with_access(
        "9012 stream tcp46 nowait nobody /usr/sbin/present cat\n",
        "",
        "cat: 10. [2001:db8::]/32\n",
    );
    let e = &c.entries[0];
    assert!(matches!(
        e.spec.bind,
        inetd_protocol::Bind::Inet {
            mode: IpMode::Dual,
            ..
        }
    ));
    assert!(!allows(&c, 0, "10.1.1.1"));
    assert!(!allows(&c, 0, "::ffff:10.1.1.1"));
    assert!(!allows(&c, 0, "2001:db8::1"));
    assert!(allows(&c, 0, "::1"));
}
