//! Peers: how they are written in logs and in the children's environment
//! (pure).
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};

/// The other end of an accepted connection, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Inet {
        peer: SocketAddr,
        local: SocketAddr,
    },
    /// A unix peer's credentials (SO_PEERCRED).
    Unix {
        pid: i32,
        uid: u32,
        gid: u32,
    },
}

impl Peer {
    /// The peer as the status report and a refusal write it:
    /// `192.0.2.1:4000`, `[2001:db8::1]:4000`, `unix:pid=P,uid=U,gid=G`.
    pub fn log_text(&self) -> String {
        match *self {
            Peer::Inet { peer, .. } => SocketAddr::new(unmap(peer.ip()), peer.port()).to_string(),
            Peer::Unix { pid, uid, gid } => format!("unix:pid={pid},uid={uid},gid={gid}"),
        }
    }

    /// Appends the per-connection variables to `out`, each `NAME=value`
    /// and a NUL, without allocating beyond `out`'s growth (the child
    /// table keeps one such buffer).
    pub fn write_env(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        // Names and values are built from numbers and addresses here: no
        // NUL inside, and writing to a Vec cannot fail.
        let _ = match *self {
            Peer::Inet { peer, local } => {
                let (rip, rport) = (unmap(peer.ip()), peer.port());
                let (lip, lport) = (unmap(local.ip()), local.port());
                write!(
                    out,
                    "PROTO=TCP\0TCPREMOTEIP={rip}\0TCPREMOTEPORT={rport}\0\
                     TCPLOCALIP={lip}\0TCPLOCALPORT={lport}\0\
                     REMOTE_ADDR={rip}\0REMOTE_PORT={rport}\0"
                )
            }
            Peer::Unix { pid, uid, gid } => write!(
                out,
                "PROTO=UNIX\0UNIXREMOTEPID={pid}\0UNIXREMOTEEUID={uid}\0UNIXREMOTEEGID={gid}\0"
            ),
        };
    }
}

/// The peer as the per-connection log lines write it: `192.0.2.1:4000`,
/// `[2001:db8::1]:4000`, or a unix peer's `uid 1000 gid 1000 (pid 7)`
/// (its uid first: who it is matters more than which process);
/// formatted in place, without allocating.
impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Peer::Inet { peer, .. } => {
                std::fmt::Display::fmt(&SocketAddr::new(unmap(peer.ip()), peer.port()), f)
            }
            Peer::Unix { pid, uid, gid } => write!(f, "uid {uid} gid {gid} (pid {pid})"),
        }
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`) as plain IPv4; any
/// other address unchanged.
pub fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    impl Peer {
        fn env(&self) -> Vec<CString> {
            let mut buf = Vec::new();
            self.write_env(&mut buf);
            buf.split(|&b| b == 0)
                .filter(|v| !v.is_empty())
                .map(|v| CString::new(v).unwrap_or_default())
                .collect()
        }
    }

    fn fmt_addr(sa: SocketAddr) -> String {
        let local = sa;
        Peer::Inet { peer: sa, local }.log_text()
    }

    fn fmt_unix(pid: i32, uid: u32, gid: u32) -> String {
        Peer::Unix { pid, uid, gid }.log_text()
    }

    fn tcp_env(peer: SocketAddr, local: SocketAddr) -> Vec<CString> {
        Peer::Inet { peer, local }.env()
    }

    fn unix_env(pid: i32, uid: u32, gid: u32) -> Vec<CString> {
        Peer::Unix { pid, uid, gid }.env()
    }

    fn strs(v: &[CString]) -> Vec<&str> {
        v.iter().map(|c| c.to_str().unwrap()).collect()
    }

    #[test]
    fn v4_mapped_peers_are_written_as_ipv4() {
        let sa: SocketAddr = "[::ffff:192.0.2.1]:4000".parse().unwrap();
        assert_eq!(fmt_addr(sa), "192.0.2.1:4000");
        let sa: SocketAddr = "[2001:db8::1]:4000".parse().unwrap();
        assert_eq!(fmt_addr(sa), "[2001:db8::1]:4000");
        assert_eq!(
            unmap("::1".parse().unwrap()),
            "::1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn peers_in_log_lines() {
        let local = "127.0.0.1:7".parse().unwrap();
        let p = |s: &str| Peer::Inet {
            peer: s.parse().unwrap(),
            local,
        };
        assert_eq!(p("[::ffff:192.0.2.1]:4000").to_string(), "192.0.2.1:4000");
        assert_eq!(p("[2001:db8::1]:4000").to_string(), "[2001:db8::1]:4000");
        let u = Peer::Unix {
            pid: 7,
            uid: 1000,
            gid: 100,
        };
        assert_eq!(u.to_string(), "uid 1000 gid 100 (pid 7)");
    }

    #[test]
    fn tcp_environment() {
        let env = tcp_env(
            "[::ffff:10.0.0.2]:5555".parse().unwrap(),
            "[::ffff:10.0.0.1]:79".parse().unwrap(),
        );
        assert_eq!(
            strs(&env),
            vec![
                "PROTO=TCP",
                "TCPREMOTEIP=10.0.0.2",
                "TCPREMOTEPORT=5555",
                "TCPLOCALIP=10.0.0.1",
                "TCPLOCALPORT=79",
                "REMOTE_ADDR=10.0.0.2",
                "REMOTE_PORT=5555",
            ]
        );
        let env = tcp_env("[::1]:1".parse().unwrap(), "[::1]:2".parse().unwrap());
        assert_eq!(strs(&env)[1], "TCPREMOTEIP=::1");
    }

    #[test]
    fn unix_environment() {
        assert_eq!(
            strs(&unix_env(42, 1000, 100)),
            vec![
                "PROTO=UNIX",
                "UNIXREMOTEPID=42",
                "UNIXREMOTEEUID=1000",
                "UNIXREMOTEEGID=100"
            ]
        );
        assert_eq!(fmt_unix(1, 2, 3), "unix:pid=1,uid=2,gid=3");
        let p = Peer::Unix {
            pid: 1,
            uid: 2,
            gid: 3,
        };
        assert_eq!(p.log_text(), "unix:pid=1,uid=2,gid=3");
        assert_eq!(p.env().len(), 4);
    }
}
