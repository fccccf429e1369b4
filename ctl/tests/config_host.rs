//! Against the host's own names: /etc/services, NSS users and groups, the
//! system resolver. Debian's netbase and base-passwd (and the users CI
//! creates) are assumed; where the host lacks something, the test skips
//! through the harness (a failure in CI).

mod config_support;

use config_support::*;
use inetd_ctl::config::{load, load_with, LoadOptions, NameSources};
use inetd_protocol::{Action, Bind, Builtin};
use nix::unistd::{Group, User};

fn load_system(text: &str) -> inetd_ctl::config::Config {
    let dir = temp_dir("host");
    let path = dir.join("inetd.conf");
    std::fs::write(&path, text).unwrap();
    load(&[path], &NameSources::default()).expect("load")
}

#[test]
fn echo_as_nobody_from_the_system() {
    if !std::path::Path::new("/etc/services").exists() {
        inetd_tests::skip!("no /etc/services (netbase) on this host");
    }
    let Ok(Some(nobody)) = User::from_name("nobody") else {
        inetd_tests::skip!("no user nobody");
    };
    let c = load_system(
        "echo stream tcp4 nowait nobody internal\ntime dgram udp4 wait nobody internal\n",
    );
    assert!(c.diagnostics.is_empty(), "{:?}", c.diagnostics);
    let e = &c.entries[0];
    assert_eq!(
        e.spec.bind,
        Bind::Inet {
            addr: "0.0.0.0".parse().unwrap(),
            port: 7,
            mode: inetd_protocol::IpMode::V4
        }
    );
    assert_eq!(e.spec.action, Action::Builtin(Builtin::Echo));
    assert_eq!(e.spec.creds.uid, 65534);
    assert_eq!(e.spec.creds.uid, nobody.uid.as_raw());
    assert_eq!(e.spec.creds.gid, nobody.gid.as_raw());
    assert_eq!(e.spec.creds.groups[0], nobody.gid.as_raw());
    let group = Group::from_gid(nobody.gid).unwrap().unwrap();
    assert_eq!(e.group, group.name);
    assert_eq!(e.user, "nobody");
    let t = &c.entries[1];
    assert!(matches!(t.spec.bind, Bind::Inet { port: 37, .. }));
    check_consistency(&c);
}

/// Supplementary groups come from getgrouplist: inetd-test-peer is a member
/// of group inetd (the test users .ci/run makes).
#[test]
fn supplementary_groups_from_nss() {
    let (Ok(Some(peer)), Ok(Some(inetd))) = (
        User::from_name("inetd-test-peer"),
        Group::from_name("inetd"),
    ) else {
        inetd_tests::skip!("users inetd-test-peer / group inetd not present");
    };
    let c = load_system("8007 stream tcp4 nowait inetd-test-peer internal echo\n8008 stream tcp4 nowait inetd-test-peer:inetd internal echo\n");
    assert!(c.diagnostics.is_empty(), "{:?}", c.diagnostics);
    let creds = &c.entries[0].spec.creds;
    assert_eq!(creds.uid, peer.uid.as_raw());
    assert_eq!(creds.groups[0], peer.gid.as_raw());
    assert!(creds.groups.contains(&inetd.gid.as_raw()), "{creds:?}");
    let creds = &c.entries[1].spec.creds;
    assert_eq!(creds.gid, inetd.gid.as_raw());
    assert_eq!(creds.groups[0], inetd.gid.as_raw());
    assert_eq!(c.entries[1].group, "inetd");
}

#[test]
fn numeric_names_are_not_ids_with_nss() {
    let c = load_system("echo stream tcp4 nowait 0 internal\necho stream tcp6 nowait 0day internal\necho dgram udp4 wait nobody:0 internal\n");
    let e = errors(&c);
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(e[0]
        .1
        .contains("field 5 (user): found \"0\", expected a user name known to the system"));
    assert!(e[2]
        .1
        .contains("field 5 (user): found group \"0\", expected a group name known to the system"));
    assert!(c.entries.is_empty());
}

#[test]
fn localhost_through_the_system_resolver() {
    let opts = LoadOptions {
        ipv6: Some(true),
        ..LoadOptions::default()
    };
    let dir = temp_dir("resolver");
    let path = dir.join("inetd.conf");
    std::fs::write(
        &path,
        "localhost:8007 stream tcp4 nowait nobody internal echo\n",
    )
    .unwrap();
    let c = load_with(&[path], &NameSources::default(), &opts).unwrap();
    assert!(errors(&c).is_empty(), "{:?}", c.diagnostics);
    assert!(c
        .entries
        .iter()
        .all(|e| matches!(&e.spec.bind, Bind::Inet { addr, .. } if addr.is_loopback())));
}

/// Whatever the host's IPv6, a `*` tcp entry yields the IPv4 half and,
/// with IPv6, the IPv6 half; without, a warning.
#[test]
fn ipv6_probe() {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let has_v6 = socket(
        AddressFamily::Inet6,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .is_ok();
    let c = load_system("8007 stream tcp nowait nobody internal echo\n");
    if has_v6 {
        assert_eq!(c.entries.len(), 2);
        assert!(c.diagnostics.is_empty());
    } else {
        assert_eq!(c.entries.len(), 1);
        assert_eq!(warnings(&c).len(), 1);
    }
}
