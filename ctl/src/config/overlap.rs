//! Bind keys across every file of a configuration.
//!
//! The key is (address, port or path, socket type, v6only), as
//! `ListenerSpec::key()` gives it. Entries are taken in order:
//!
//! * a `*` `tcp`/`udp` entry gives two "plain" halves; an explicit entry
//!   with exactly the key of a plain half (`tcp6` at `*` or `[::]`, `tcp4`
//!   at `*` or `0.0.0.0`) takes that half, whichever comes first, so the
//!   classic OpenBSD `tcp`/`tcp6` twins work unchanged;
//! * any other overlap is an error on the later entry that names the first:
//!   the same key twice, a dual-stack `tcp46` socket beside an IPv4 or
//!   IPv6-only socket on the same port and address (`::` counts as
//!   `0.0.0.0`, `::ffff:a.b.c.d` as `a.b.c.d`), or one unix path twice
//!   whatever the socket type.
//!
//! A wildcard and a specific address on one port (`0.0.0.0:7` and
//! `127.0.0.1:7`) are not checked here: whether they conflict is the
//! kernel's decision, and the core reports a failed bind.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use inetd_protocol::{Bind, BindKey, IpMode};

use super::entry::{Parsed, Pool};

/// The keys a listener cannot share a port with, its own first.
fn clashing_keys(key: &BindKey) -> Vec<BindKey> {
    let mut out = vec![key.clone()];
    let Bind::Inet { addr, port, mode } = &key.bind else {
        return out;
    };
    let with = |addr: IpAddr, mode: IpMode| BindKey {
        bind: Bind::Inet {
            addr,
            port: *port,
            mode,
        },
        socket_type: key.socket_type,
    };
    match (mode, addr) {
        (IpMode::Dual, IpAddr::V6(a)) => {
            out.push(with(*addr, IpMode::V6Only));
            if a.is_unspecified() {
                out.push(with(IpAddr::V4(Ipv4Addr::UNSPECIFIED), IpMode::V4));
            } else if let Some(v4) = a.to_ipv4_mapped() {
                out.push(with(IpAddr::V4(v4), IpMode::V4));
            }
        }
        (IpMode::V6Only, _) => out.push(with(*addr, IpMode::Dual)),
        (IpMode::V4, IpAddr::V4(a)) => {
            let v6 = if a.is_unspecified() {
                Ipv6Addr::UNSPECIFIED
            } else {
                a.to_ipv6_mapped()
            };
            out.push(with(IpAddr::V6(v6), IpMode::Dual));
        }
        _ => {}
    }
    out
}

/// What a listener's place is known by: its bind key, except that a unix
/// path is one place whatever the socket type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Place {
    Key(BindKey),
    Path(String),
}

fn place(key: &BindKey) -> Place {
    match &key.bind {
        Bind::Unix { path } => Place::Path(path.clone()),
        Bind::Inet { .. } => Place::Key(key.clone()),
    }
}

/// Splits twins and rejects overlapping entries, in place: a rejected
/// entry gets `Err(message)`, a half taken by a twin is no longer live in
/// `pool`.
pub(crate) fn resolve(parsed: &mut [Parsed], pool: &mut Pool) {
    // Place → (entry index, listener index in the pool).
    let mut taken: HashMap<Place, (usize, usize)> = HashMap::new();
    for pi in 0..parsed.len() {
        let Ok(listeners) = &parsed[pi].result else {
            continue;
        };
        let listeners = listeners.clone();
        let mut take_over: Vec<(usize, usize)> = Vec::new();
        let mut give_up: Vec<usize> = Vec::new();
        let mut conflict: Option<String> = None;
        'listeners: for li in listeners.clone() {
            if !pool.live[li] {
                continue;
            }
            let entry = &pool.entries[li];
            let key = entry.spec.key();
            for other_key in clashing_keys(&key) {
                let Some(&(oe, ol)) = taken.get(&place(&other_key)) else {
                    continue;
                };
                if parsed[oe].result.is_err() {
                    continue;
                }
                let other_plain = pool.plain[ol];
                let other_source = &pool.entries[ol].source;
                let other = pool.live[ol].then(|| &pool.entries[ol]);
                let exact = other.is_some_and(|e| e.spec.key() == key);
                let plain = pool.plain[li];
                if exact && other_plain && !plain {
                    take_over.push((oe, ol));
                } else if exact && plain && !other_plain {
                    give_up.push(li);
                } else {
                    conflict = Some(format!(
                        "{} overlaps the entry at {}{}",
                        describe(&key, &entry.protocol),
                        other_source,
                        match other {
                            Some(e) if e.spec.key() != key => {
                                format!(" ({})", describe(&e.spec.key(), &e.protocol))
                            }
                            _ => String::new(),
                        }
                    ));
                    break 'listeners;
                }
            }
        }
        if let Some(message) = conflict {
            parsed[pi].result = Err(message);
            parsed[pi].warnings.clear();
            continue;
        }
        for (oe, ol) in take_over {
            if parsed[oe].result.is_ok() && pool.live[ol] {
                pool.live[ol] = false;
                taken.remove(&place(&pool.entries[ol].spec.key()));
            }
            note_if_fully_taken(parsed, pool, oe);
        }
        for li in give_up {
            pool.live[li] = false;
        }
        for li in listeners {
            if pool.live[li] {
                taken.insert(place(&pool.entries[li].spec.key()), (pi, li));
            }
        }
        note_if_fully_taken(parsed, pool, pi);
    }
}

/// A plain entry whose two halves both went to twins serves nothing of its
/// own: say so rather than drop it silently.
fn note_if_fully_taken(parsed: &mut [Parsed], pool: &Pool, pi: usize) {
    let p = &mut parsed[pi];
    let Ok(listeners) = &p.result else { return };
    if listeners.is_empty() || pool.live_in(listeners) > 0 {
        return;
    }
    let note = "both halves of this entry are served by other entries (tcp4/tcp6 or udp4/udp6 twins): it has no listener of its own".to_owned();
    if !p.warnings.contains(&note) {
        p.warnings.push(note);
    }
}

fn describe(key: &BindKey, protocol: &str) -> String {
    let st = key.socket_type;
    match &key.bind {
        Bind::Inet { addr, port, .. } => {
            let a = match addr {
                IpAddr::V4(a) => a.to_string(),
                IpAddr::V6(a) => format!("[{a}]"),
            };
            format!("{st} {protocol} {a}:{port}")
        }
        Bind::Unix { path } => format!("{st} unix {path}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inetd_protocol::SocketType;

    fn key(addr: &str, mode: IpMode) -> BindKey {
        BindKey {
            bind: Bind::Inet {
                addr: addr.parse().unwrap(),
                port: 7,
                mode,
            },
            socket_type: SocketType::Stream,
        }
    }

    #[test]
    fn dual_clashes_with_both_families_at_the_wildcard() {
        let k = clashing_keys(&key("::", IpMode::Dual));
        assert!(k.contains(&key("::", IpMode::V6Only)));
        assert!(k.contains(&key("0.0.0.0", IpMode::V4)));
        let k = clashing_keys(&key("0.0.0.0", IpMode::V4));
        assert_eq!(k, vec![key("0.0.0.0", IpMode::V4), key("::", IpMode::Dual)]);
        let k = clashing_keys(&key("127.0.0.1", IpMode::V4));
        assert!(k.contains(&key("::ffff:127.0.0.1", IpMode::Dual)));
        // IPv4 and IPv6-only sockets on one port do not clash.
        assert!(!clashing_keys(&key("::", IpMode::V6Only)).contains(&key("0.0.0.0", IpMode::V4)));
    }
}
