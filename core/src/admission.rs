//! Admission: whether an accepted connection may start a child, decided
//! after accept and before fork (pure): the ftp-bounce guard, the access
//! list, the per-source limits and the service's rate, in that order. A
//! connection refused by one check is not counted by the next, so a
//! refused flood does not use up the rate of the clients that are let in.
//! The children limits are not decided here: past them the listener is
//! not polled at all (`daemon`), so nothing is accepted to be refused.
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::time::Instant;

use inetd_protocol::Acl;

use crate::limits::{Knobs, ListenerLimits, SourceKey, SourceRefusal};
use crate::listeners::Spec;
use crate::peer::{unmap, Peer};

/// Why a connection is closed without a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A TCP source port of 20 (ftp-data): an FTP bounce attempt.
    FtpBounce,
    /// The listener's access list does not admit the peer.
    AccessList,
    /// The service is paused by its rate limit, or this connection is one
    /// too many in its window (the caller then pauses it).
    Rate,
    /// Too many connections from the peer's source in the window.
    SourceRate,
    /// Too many children of the peer's source.
    SourceChildren,
}

impl Refusal {
    /// The reason as logged: `refused service="..." peer=...: REASON`.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::FtpBounce => "source port 20 (ftp bounce)",
            Refusal::AccessList => "access list",
            Refusal::Rate => "rate limit of the service",
            Refusal::SourceRate => "connections per minute from one source",
            Refusal::SourceChildren => "children of one source",
        }
    }
}

/// The limits of one connection that passed [`admit`]: the per-source
/// counts, then the service's rate. `Ok` carries the source to charge the
/// child to, when sources are counted.
pub fn admit_limits(
    spec: &Spec,
    state: &mut ListenerLimits,
    peer: &Peer,
    now: Instant,
    knobs: &Knobs,
) -> Result<Option<SourceKey>, Refusal> {
    let source = match peer {
        Peer::Inet { peer, .. } => state
            .admit_source(peer.ip(), &spec.limits, now, knobs.window)
            .map_err(|r| match r {
                SourceRefusal::Rate => Refusal::SourceRate,
                SourceRefusal::Children | SourceRefusal::TableFull => Refusal::SourceChildren,
            })?,
        Peer::Unix { .. } => None,
    };
    if !state.count_rate(spec.limits.max_per_minute, now, knobs.window) {
        return Err(Refusal::Rate);
    }
    Ok(source)
}

/// Whether the access list of `spec` admits a datagram from `ip` (a dgram
/// service's waking datagram).
pub fn acl_admits(spec: &Spec, ip: IpAddr) -> bool {
    spec.acl
        .as_ref()
        .is_none_or(|acl| acl_allows(acl, unmap(ip)))
}

/// Whether `peer` may start a child of the listener `spec`.
pub fn admit(spec: &Spec, peer: &Peer) -> Result<(), Refusal> {
    let Peer::Inet { peer, .. } = peer else {
        // Unix peers are judged by the socket's mode and directory.
        return Ok(());
    };
    // OpenBSD's gettcp(): an ftp-data source port means an FTP bounce
    // attempt; nothing legitimate comes from it.
    if peer.port() == 20 {
        return Err(Refusal::FtpBounce);
    }
    match &spec.acl {
        Some(acl) if !acl_allows(acl, unmap(peer.ip())) => Err(Refusal::AccessList),
        _ => Ok(()),
    }
}

/// Whether an access list admits `peer` (already unmapped from
/// IPv4-mapped IPv6): the first rule whose prefix matches decides.
fn acl_allows(acl: &Acl, peer: IpAddr) -> bool {
    for r in &acl.rules {
        if prefix_match(r.addr, r.prefix, peer) {
            return r.allow;
        }
    }
    acl.default_allow
}

fn prefix_match(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let p = u32::from(prefix.min(32));
            let mask = u32::MAX.checked_shl(32 - p).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let p = u32::from(prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - p).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::tests::{root_policy, spec};
    use inetd_protocol::ListenerSpec;

    /// `s` as the listener table keeps it.
    fn kept(s: &ListenerSpec) -> Spec {
        let prep = crate::validate::validate(s, &root_policy()).unwrap();
        Spec::new(s, &prep)
    }
    use inetd_protocol::AclRule;

    fn rule(addr: &str, prefix: u8, allow: bool) -> AclRule {
        AclRule {
            addr: addr.parse().unwrap(),
            prefix,
            allow,
        }
    }

    fn inet(peer: &str) -> Peer {
        Peer::Inet {
            peer: peer.parse().unwrap(),
            local: "127.0.0.1:7".parse().unwrap(),
        }
    }

    #[test]
    fn access_lists_first_match_decides() {
        let acl = Acl {
            rules: vec![
                rule("10.1.0.0", 16, false),
                rule("10.0.0.0", 8, true),
                rule("2001:db8::", 32, true),
            ],
            default_allow: false,
        };
        assert!(!acl_allows(&acl, "10.1.2.3".parse().unwrap()));
        assert!(acl_allows(&acl, "10.2.2.3".parse().unwrap()));
        assert!(acl_allows(&acl, "2001:db8::5".parse().unwrap()));
        assert!(!acl_allows(&acl, "2001:db9::5".parse().unwrap()));
        assert!(!acl_allows(&acl, "192.0.2.1".parse().unwrap()));
        let all = Acl {
            rules: vec![rule("0.0.0.0", 0, true)],
            default_allow: false,
        };
        assert!(acl_allows(&all, "192.0.2.1".parse().unwrap()));
        assert!(!acl_allows(&all, "::1".parse().unwrap()), "other family");
    }

    #[test]
    fn admission() {
        let mut s = spec(7000);
        assert_eq!(admit(&kept(&s), &inet("192.0.2.1:4000")), Ok(()));
        assert_eq!(
            admit(&kept(&s), &inet("192.0.2.1:20")),
            Err(Refusal::FtpBounce)
        );
        s.acl = Some(Acl {
            rules: vec![rule("192.0.2.0", 24, true)],
            default_allow: false,
        });
        assert_eq!(admit(&kept(&s), &inet("192.0.2.1:4000")), Ok(()));
        // An IPv4-mapped peer of a dual-stack socket is judged as IPv4.
        assert_eq!(admit(&kept(&s), &inet("[::ffff:192.0.2.1]:4000")), Ok(()));
        assert_eq!(
            admit(&kept(&s), &inet("198.51.100.1:4000")),
            Err(Refusal::AccessList)
        );
        // The ftp-bounce guard comes first.
        assert_eq!(
            admit(&kept(&s), &inet("192.0.2.1:20")),
            Err(Refusal::FtpBounce)
        );
        let unix = Peer::Unix {
            pid: 1,
            uid: 2,
            gid: 3,
        };
        assert_eq!(admit(&kept(&s), &unix), Ok(()));
        assert_eq!(Refusal::AccessList.reason(), "access list");
    }

    #[test]
    fn limits_after_the_access_list() {
        let mut s = spec(7000);
        s.limits.max_per_minute = 3;
        s.limits.max_per_source_per_minute = 2;
        let knobs = Knobs::default();
        let t0 = Instant::now();
        let mut st = ListenerLimits::new(&s.limits, t0);
        let (a, b) = (inet("192.0.2.1:4000"), inet("192.0.2.2:4000"));
        assert!(admit_limits(&kept(&s), &mut st, &a, t0, &knobs)
            .unwrap()
            .is_some());
        assert!(admit_limits(&kept(&s), &mut st, &a, t0, &knobs).is_ok());
        // The source's refusal does not use up the service's rate.
        assert_eq!(
            admit_limits(&kept(&s), &mut st, &a, t0, &knobs),
            Err(Refusal::SourceRate)
        );
        assert!(admit_limits(&kept(&s), &mut st, &b, t0, &knobs).is_ok());
        assert_eq!(
            admit_limits(&kept(&s), &mut st, &b, t0, &knobs),
            Err(Refusal::Rate)
        );
        // Unix peers have no source.
        let unix = Peer::Unix {
            pid: 1,
            uid: 2,
            gid: 3,
        };
        let mut u = spec(7001);
        u.limits.max_per_source_per_minute = 1;
        let mut st = ListenerLimits::new(&u.limits, t0);
        for _ in 0..5 {
            assert_eq!(
                admit_limits(&kept(&u), &mut st, &unix, t0, &knobs),
                Ok(None)
            );
        }
    }

    #[test]
    fn a_waking_datagram_is_judged_by_the_list() {
        let mut s = spec(7000);
        assert!(acl_admits(&kept(&s), "198.51.100.1".parse().unwrap()));
        s.acl = Some(Acl {
            rules: vec![rule("127.0.0.0", 8, true)],
            default_allow: false,
        });
        assert!(acl_admits(&kept(&s), "127.0.0.2".parse().unwrap()));
        assert!(acl_admits(&kept(&s), "::ffff:127.0.0.2".parse().unwrap()));
        assert!(!acl_admits(&kept(&s), "198.51.100.1".parse().unwrap()));
    }
}
