//! Access lists checked by the core after accept, before fork (docs/limits.md;
//! docs/security.md: CVE-2003-0211 and openSUSE/xinetd PR #7).

use std::time::Duration;

use inetd_protocol::{Acl, AclRule, Outcome};
use inetd_tests::*;

fn rule(addr: &str, prefix: u8, allow: bool) -> AclRule {
    AclRule {
        addr: addr.parse().unwrap(),
        prefix,
        allow,
    }
}

fn acl(rules: Vec<AclRule>, default_allow: bool) -> Option<Acl> {
    Some(Acl {
        rules,
        default_allow,
    })
}

#[test]
fn access_lists_decide_before_a_child_starts() {
    let core = Core::start();
    let (deny_all, allow_lo, deny_lo) = (free_port(), free_port(), free_port());
    let mut specs = vec![tcp4(deny_all), tcp4(allow_lo), tcp4(deny_lo)];
    specs[0].acl = acl(vec![], false);
    specs[1].acl = acl(vec![rule("127.0.0.1", 32, true)], false);
    specs[2].acl = acl(
        vec![rule("127.0.0.0", 8, false), rule("0.0.0.0", 0, true)],
        true,
    );
    let r = core.apply(specs);
    assert_eq!(r.outcomes, vec![Outcome::Added; 3]);

    assert_eq!(read_all(&mut connect4(deny_all).unwrap()), "");
    Report::read_from(&mut connect4(allow_lo).unwrap());
    assert_eq!(read_all(&mut connect4(deny_lo).unwrap()), "");

    let st = core.status();
    let c: Vec<(u64, u64)> = st
        .listeners
        .iter()
        .map(|l| (l.counters.accepted, l.counters.refused_acl))
        .collect();
    let by_port = |p: u16| {
        st.listeners
            .iter()
            .position(|l| l.spec.bind == tcp4(p).bind)
            .unwrap()
    };
    assert_eq!(c[by_port(deny_all)], (0, 1));
    assert_eq!(c[by_port(allow_lo)], (1, 0));
    assert_eq!(c[by_port(deny_lo)], (0, 1));
}

#[test]
fn a_dual_stack_access_list_sees_mapped_peers_as_ipv4() {
    require_ipv6!();
    let core = Core::start();
    let port = free_port();
    let mut spec = tcp_dual(port);
    spec.acl = acl(vec![rule("127.0.0.1", 32, true)], false);
    assert_eq!(core.apply(vec![spec]).outcomes, vec![Outcome::Added]);
    Report::read_from(&mut connect4(port).unwrap());
    assert_eq!(read_all(&mut connect6(port).unwrap()), "");
}

#[test]
fn an_access_list_where_no_peer_can_be_checked_is_refused() {
    let dir = TempDir::secure("acl-unix");
    let core = Core::start_unix(&dir);
    let t = free_port();
    let mut wait_stream = tcp4(t).wait(true).probe(&["accept-once"]);
    wait_stream.acl = acl(vec![], false);
    let mut unix = unix_stream(&dir.join("acl.sock"));
    unix.acl = acl(vec![], false);
    let r = core.apply(vec![wait_stream, unix]);
    for (i, o) in r.outcomes.iter().enumerate() {
        assert!(
            matches!(o, Outcome::Rejected { reason } if reason.contains("access list")),
            "listener {i} would run unfiltered: {o:?}"
        );
    }
}

/// A dgram wait service is checked on the datagram that would wake its
/// server: a refused one is read away unanswered and never starts a
/// child; an admitted one is served.
#[test]
fn a_dgram_service_is_checked_on_its_waking_datagram() {
    let core = Core::start();
    let port = free_port();
    let mut spec = udp4(port).probe(&["udp-echo-once"]);
    spec.acl = acl(vec![rule("127.0.0.2", 32, true)], false);
    assert_eq!(core.apply(vec![spec]).outcomes, vec![Outcome::Added]);
    let to: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let refused = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..5 {
        refused.send_to(b"let me in", to).unwrap();
    }
    wait_for("the refusals to be counted", Duration::from_secs(5), || {
        core.status().listeners[0].counters.refused_acl == 5
    });
    assert!(
        core.children().is_empty(),
        "a refused datagram started a child"
    );
    assert_eq!(core.status().listeners[0].counters.accepted, 0);
    // From an allowed address: served by a server the datagram woke.
    let allowed = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
    allowed
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    allowed.send_to(b"hello", to).unwrap();
    let mut buf = [0u8; 256];
    let (n, _) = allowed.recv_from(&mut buf).expect("an answer");
    assert!(String::from_utf8_lossy(&buf[..n]).ends_with(" hello"));
    // The refused datagrams were read away: never answered.
    refused.set_nonblocking(true).unwrap();
    assert!(refused.recv_from(&mut buf).is_err());
    let st = core.status();
    assert_eq!(st.listeners[0].counters.accepted, 1);
    assert_eq!(st.listeners[0].counters.refused_acl, 5);
}

#[test]
fn refused_connections_cost_no_memory() {
    let _g = serial();
    let core = Core::start();
    let port = free_port();
    let mut spec = tcp4(port).limits(no_limits());
    spec.acl = acl(vec![], false);
    core.apply(vec![spec]);
    for _ in 0..200 {
        read_all(&mut connect4(port).unwrap());
    }
    let rss_before = rss_kib(core.pid()).unwrap();
    const N: u64 = 3000;
    for _ in 0..N {
        read_all(&mut connect4(port).unwrap());
    }
    wait_for(
        "the refusals to be counted",
        Duration::from_secs(10),
        || core.status().listeners[0].counters.refused_acl == N + 200,
    );
    let rss_after = rss_kib(core.pid()).unwrap();
    assert!(
        rss_after < rss_before + 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB over {N} refused connections"
    );
    assert!(core.children().is_empty());
}
