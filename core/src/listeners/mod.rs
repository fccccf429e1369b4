//! The listener table: every listener the core runs, by id (and, for the
//! length of an apply, by bind key: [`Keyed`]), and each listener's state
//! machine. Invariants, kept here alone:
//! * while a [`Keyed`] view exists, `by_key[k] == id` exactly when
//!   `by_id[id]` exists with key `k`: only its `insert` and `remove` change
//!   the set, and `change` keeps the key; no two listeners share a key;
//! * ids are never reused, so an id held elsewhere names this listener or
//!   none;
//! * a listener's socket, once bound, is never replaced until the listener
//!   is removed (only a listener without one binds), so its id, which is
//!   also its epoll token (`events`), names that one socket;
//! * `udp_builtin_ports` holds the ports of the UDP builtin listeners,
//!   recomputed whenever the table changes;
//! * a listener is polled only `Listening` or `Paused` with a socket (and
//!   below its children limits, which the loop checks); it is `Waiting`
//!   while a child holds its socket, until that child is reaped.
//!
//! The states of the limits: `Paused` when the service's rate limit is
//! reached (still polled: each connection is accepted and closed at once,
//! counted) until the pause is over; `Resting` after failed wait servers,
//! not polled until its backoff is over. Both go back to `Listening` by
//! themselves ([`ListenerTable::retry_due`]).
#![forbid(unsafe_code)]

mod listener;

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use inetd_protocol::{Bind, BindKey, Counters, ListenerSpec};
use log::{info, warn};

use crate::backoff;
use crate::limits::ListenerLimits;
use crate::plan::{Current, Sameness};
use crate::validate::Prepared;

pub use listener::{describe_bind, log_label, BindError, Listener, ListenerId, Spec, State};

#[derive(Default)]
pub struct ListenerTable {
    /// Boxed: a B-tree node holds up to 11 values and is often half full,
    /// so an inline `Listener` would cost about twice its size.
    by_id: BTreeMap<ListenerId, Box<Listener>>,
    next_id: u64,
    udp_builtin_ports: Vec<u16>,
}

/// The table with its listeners indexed by bind key, for the length of
/// an apply: the only time the core looks a listener up by key. The index
/// is built from the table and dropped with the view; kept between
/// applies it would cost about as much as a listener's spec.
pub struct Keyed<'a> {
    table: &'a mut ListenerTable,
    by_key: HashMap<BindKey, ListenerId>,
}

impl ListenerTable {
    /// The table indexed by key (see [`Keyed`]).
    pub fn keyed(&mut self) -> Keyed<'_> {
        let by_key = self
            .by_id
            .iter()
            .map(|(id, l)| (l.spec.key(), *id))
            .collect();
        Keyed {
            table: self,
            by_key,
        }
    }
}

impl Keyed<'_> {
    /// Adds a listener, not bound yet; `None` if its key is taken (the
    /// caller planned against this table: a bug, refused, not a second
    /// listener on one key).
    pub fn insert(&mut self, spec: &ListenerSpec, prep: Prepared) -> Option<ListenerId> {
        let key = spec.key();
        if self.by_key.contains_key(&key) {
            return None;
        }
        let t = &mut *self.table;
        t.next_id += 1;
        let id = ListenerId(t.next_id);
        self.by_key.insert(key, id);
        let limits = ListenerLimits::new(&spec.limits, Instant::now());
        let l = Box::new(Listener {
            spec: Spec::new(spec, &prep),
            prep,
            sock: None,
            nonblocking: true,
            file: None,
            state: State::Listening,
            counters: Counters::default(),
            last_error: None,
            limits,
        });
        let udp = l.is_udp_builtin();
        t.by_id.insert(id, l);
        if udp {
            t.refresh_ports();
        }
        Some(id)
    }

    /// Removes the listener at `key`, closing its socket.
    pub fn remove(&mut self, key: &BindKey) -> Option<Listener> {
        let id = self.by_key.remove(key)?;
        let t = &mut *self.table;
        let mut l = *t.by_id.remove(&id)?;
        l.close();
        if l.is_udp_builtin() {
            t.refresh_ports();
        }
        Some(l)
    }

    pub fn id_of(&self, key: &BindKey) -> Option<ListenerId> {
        self.by_key.get(key).copied()
    }

    /// See [`ListenerTable::change`].
    pub fn change(&mut self, id: ListenerId, spec: &ListenerSpec, prep: Prepared) -> bool {
        self.table.change(id, spec, prep)
    }

    pub fn get_mut(&mut self, id: ListenerId) -> Option<&mut Listener> {
        self.table.get_mut(id)
    }
}

/// What runs, by key: what an apply is planned against.
impl Current for Keyed<'_> {
    fn compare(&self, key: &BindKey, new: &ListenerSpec) -> Option<Sameness> {
        let id = self.by_key.get(key)?;
        let l = self.table.by_id.get(id)?;
        Some(l.compare(new))
    }

    fn keys(&self) -> Vec<&BindKey> {
        self.by_key.keys().collect()
    }
}

impl ListenerTable {
    /// A new spec for listener `id`, with the same key (new connections get
    /// it; socket, state and counters stay); false if that cannot be.
    pub fn change(&mut self, id: ListenerId, spec: &ListenerSpec, prep: Prepared) -> bool {
        let Some(l) = self.by_id.get_mut(&id) else {
            return false;
        };
        if l.spec.bind != spec.bind || l.spec.socket_type != spec.socket_type {
            return false;
        }
        let was = l.is_udp_builtin();
        // New limits count afresh (the children of the old spec are no
        // longer charged to their sources).
        if l.spec.limits != spec.limits {
            l.limits = ListenerLimits::new(&spec.limits, Instant::now());
            if l.paused() {
                l.state = State::Listening;
            }
        }
        l.spec = Spec::new(spec, &prep);
        l.prep = prep;
        if was || l.is_udp_builtin() {
            self.refresh_ports();
        }
        true
    }

    pub fn close_all(&mut self) {
        for l in self.by_id.values_mut() {
            l.close();
        }
    }

    #[cfg(test)]
    pub fn get(&self, id: ListenerId) -> Option<&Listener> {
        self.by_id.get(&id).map(|l| &**l)
    }

    pub fn get_mut(&mut self, id: ListenerId) -> Option<&mut Listener> {
        self.by_id.get_mut(&id).map(|l| &mut **l)
    }

    /// Listener `id`, with the UDP builtin ports its children may need.
    pub fn get_mut_with_ports(&mut self, id: ListenerId) -> Option<(&mut Listener, &[u16])> {
        let l = self.by_id.get_mut(&id)?;
        Some((l, &self.udp_builtin_ports))
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// In id order, the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = (ListenerId, &Listener)> {
        self.by_id.iter().map(|(id, l)| (*id, &**l))
    }

    #[cfg(test)]
    pub fn udp_builtin_ports(&self) -> &[u16] {
        &self.udp_builtin_ports
    }

    /// The earliest bind retry, end of a pause or of a backoff (the loop
    /// folds each listener's [`Listener::wake_at`] in as it looks at it).
    #[cfg(test)]
    pub fn next_retry(&self) -> Option<Instant> {
        self.by_id.values().filter_map(|l| l.wake_at()).min()
    }

    /// Binds again the failed listeners whose retry is due at `now`, and
    /// ends the pauses and backoffs that are over.
    pub fn retry_due(&mut self, now: Instant, core_uid: u32) {
        for l in self.by_id.values_mut() {
            let attempt = match l.state {
                State::Failed {
                    retry_at, attempt, ..
                } if retry_at <= now => attempt + 1,
                State::Paused { until } if until <= now => {
                    l.state = State::Listening;
                    l.limits.reset_rate();
                    info!("{}: resumed: its pause is over", l.label());
                    continue;
                }
                State::Resting { until, .. } if until <= now => {
                    l.state = State::Listening;
                    info!("{}: retrying after failed wait servers", l.label());
                    continue;
                }
                _ => continue,
            };
            match l.bind(core_uid, attempt) {
                Ok(()) => info!("{}: listening again after {attempt} retries", l.label()),
                Err(e) => warn!(
                    "{}: bind failed again: {}; next retry in {} s",
                    l.label(),
                    e.reason(),
                    backoff::bind_retry_delay(attempt).as_secs()
                ),
            }
        }
    }

    /// A UDP builtin never answers a datagram from one of these ports (no
    /// ping-pong between builtins). Recomputed only when a UDP builtin
    /// comes, changes or goes: an `Apply` of n other listeners stays
    /// linear in n.
    fn refresh_ports(&mut self) {
        let mut ports: Vec<u16> = self
            .by_id
            .values()
            .filter(|l| l.is_udp_builtin())
            .filter_map(|l| match l.spec.bind {
                Bind::Inet { port, .. } => Some(port),
                Bind::Unix { .. } => None,
            })
            .collect();
        ports.sort_unstable();
        ports.dedup();
        self.udp_builtin_ports = ports;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Knobs;
    use crate::validate::tests::{root_policy, spec};
    use crate::validate::validate;
    use inetd_protocol::{Action, Builtin, SocketType};
    use std::os::fd::AsRawFd;
    use std::rc::Rc;

    fn prep(s: &ListenerSpec) -> Prepared {
        validate(s, &root_policy()).unwrap()
    }

    fn udp_builtin(port: u16) -> ListenerSpec {
        let mut s = spec(port);
        s.socket_type = SocketType::Dgram;
        s.action = Action::Builtin(Builtin::Echo);
        s
    }

    /// Both maps name the same listeners, each under its own key.
    fn consistent(k: &Keyed<'_>) {
        let t = &k.table;
        assert_eq!(t.by_id.len(), k.by_key.len());
        for (key, id) in &k.by_key {
            assert_eq!(&t.by_id[id].spec.key(), key);
        }
        for (id, l) in &t.by_id {
            assert_eq!(k.by_key[&l.spec.key()], *id);
        }
    }

    /// One-off uses of a keyed view, for the tests that are not about it.
    impl ListenerTable {
        pub(crate) fn insert(&mut self, spec: &ListenerSpec, prep: Prepared) -> Option<ListenerId> {
            self.keyed().insert(spec, prep)
        }

        fn remove(&mut self, key: &BindKey) -> Option<Listener> {
            self.keyed().remove(key)
        }

        fn id_of(&mut self, key: &BindKey) -> Option<ListenerId> {
            self.keyed().id_of(key)
        }
    }

    #[test]
    fn ids_and_keys_stay_consistent() {
        let mut t = ListenerTable::default();
        let (a, b) = (spec(7001), spec(7002));
        let mut k = t.keyed();
        let ia = k.insert(&a, prep(&a)).unwrap();
        let ib = k.insert(&b, prep(&b)).unwrap();
        consistent(&k);
        assert_ne!(ia, ib);
        assert_eq!(k.id_of(&a.key()), Some(ia));
        // A second listener on one key is refused, and nothing changes.
        assert!(k.insert(&a, prep(&a)).is_none());
        consistent(&k);
        assert_eq!(k.table.len(), 2);
        // Removed, then added again: a new id, never the old one.
        assert!(k.remove(&a.key()).is_some());
        assert!(k.remove(&a.key()).is_none());
        consistent(&k);
        assert!(k.table.get(ia).is_none());
        let ia2 = k.insert(&a, prep(&a)).unwrap();
        assert!(ia2 != ia && ia2 != ib);
        consistent(&k);
        assert_eq!(k.keys().len(), 2);
        // The next apply's view: the same keys, and still no reuse.
        let mut k = t.keyed();
        consistent(&k);
        assert_eq!(k.id_of(&b.key()), Some(ib));
        assert!(k.insert(&b, prep(&b)).is_none());
        assert_eq!(t.iter().map(|(id, _)| id).collect::<Vec<_>>(), [ib, ia2]);
    }

    #[test]
    fn a_change_keeps_the_key() {
        let mut t = ListenerTable::default();
        let a = spec(7001);
        let id = t.insert(&a, prep(&a)).unwrap();
        let mut a2 = a.clone();
        a2.label = "new\nlabel".into();
        assert!(t.change(id, &a2, prep(&a2)));
        assert_eq!(t.get(id).unwrap().label(), "new\\nlabel");
        let other = spec(7002);
        assert!(!t.change(id, &other, prep(&other)), "another key");
        assert_eq!(t.get(id).unwrap().to_spec(), a2);
        consistent(&t.keyed());
    }

    /// Each string is kept once, but the spec a status reports is the one
    /// sent, and an apply of the same spec finds it the same.
    #[test]
    fn the_kept_spec_is_the_one_sent() {
        use inetd_protocol::{Acl, AclRule, Builtin};
        let mut a = spec(7001);
        a.label = "tab\there \"quoted\"".into();
        a.creds.groups = vec![65534, 65534];
        a.acl = Some(Acl {
            rules: vec![AclRule {
                addr: "10.0.0.0".parse().unwrap(),
                prefix: 8,
                allow: true,
            }],
            default_allow: false,
        });
        a.action = Action::Exec {
            path: "/usr/bin/env".into(),
            argv: vec!["env".into(), "".into(), "-i".into()],
        };
        let mut b = spec(7002);
        b.action = Action::Builtin(Builtin::Daytime);
        let mut t = ListenerTable::default();
        for s in [&a, &b] {
            let id = t.insert(s, prep(s)).unwrap();
            let l = t.get(id).unwrap();
            assert_eq!(&l.to_spec(), s);
            assert_eq!(l.compare(s), Sameness::Same);
            let mut relabelled = s.clone();
            relabelled.label.push('x');
            assert_eq!(l.compare(&relabelled), Sameness::LabelOnly);
            let mut other = relabelled.clone();
            other.creds.groups.push(1);
            assert_eq!(l.compare(&other), Sameness::Different, "{s:?}");
        }
        // The escaped label is kept beside the label only where it differs.
        let id = t.id_of(&a.key()).unwrap();
        let l = t.get(id).unwrap();
        assert_eq!(l.label(), "tab\\there \\\"quoted\\\"");
        let id = t.id_of(&b.key()).unwrap();
        let l = t.get(id).unwrap();
        assert!(l.spec.log_label.is_none() && l.label() == b.label);
        assert!(Rc::ptr_eq(&l.shared_label(), &l.spec.label));
        let mut argv = a.clone();
        argv.action = Action::Exec {
            path: "/usr/bin/env".into(),
            argv: vec!["env".into(), "-i".into()],
        };
        let id = t.id_of(&a.key()).unwrap();
        let l = t.get(id).unwrap();
        assert_eq!(l.compare(&argv), Sameness::Different);
    }

    /// Each listener is a heap block of its own: its size is most of what
    /// a listener costs (docs/benchmarks.md, "Memory").
    #[test]
    fn a_listener_stays_small() {
        assert!(std::mem::size_of::<Listener>() <= 368);
        assert!(std::mem::size_of::<ListenerLimits>() <= 56);
    }

    /// A bound listener keeps its socket: its epoll token names that one.
    #[test]
    fn a_socket_is_the_listeners_for_its_life() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let a = spec(port);
        let mut t = ListenerTable::default();
        let id = t.insert(&a, prep(&a)).unwrap();
        let uid = nix::unistd::geteuid().as_raw();
        let l = t.get_mut(id).unwrap();
        l.bind(uid, 0).unwrap();
        let fd = l.socket().unwrap().as_raw_fd();
        l.bind(uid, 0).unwrap();
        assert_eq!(l.socket().unwrap().as_raw_fd(), fd);
        assert_eq!(l.state(), &State::Listening);
    }

    #[test]
    fn udp_builtin_ports_follow_the_table() {
        let mut t = ListenerTable::default();
        let (u1, u2, tcp) = (udp_builtin(7), udp_builtin(19), spec(13));
        t.insert(&u2, prep(&u2));
        t.insert(&tcp, prep(&tcp));
        let id = t.insert(&u1, prep(&u1)).unwrap();
        assert_eq!(t.udp_builtin_ports(), &[7, 19]);
        // Changed into an exec service: no longer a builtin port.
        let mut exec = u1.clone();
        exec.action = Action::Exec {
            path: "/bin/cat".into(),
            argv: vec!["cat".into()],
        };
        exec.wait = true;
        assert!(t.change(id, &exec, prep(&exec)));
        assert_eq!(t.udp_builtin_ports(), &[19]);
        t.remove(&u2.key());
        assert!(t.udp_builtin_ports().is_empty());
    }

    #[test]
    fn the_state_machine() {
        let mut t = ListenerTable::default();
        let a = spec(7001);
        let id = t.insert(&a, prep(&a)).unwrap();
        let l = t.get_mut(id).unwrap();
        assert_eq!(l.state(), &State::Listening);
        // Not bound yet: nothing to poll.
        assert_eq!(l.pollable(), None);
        l.hold(42);
        assert_eq!(l.state(), &State::Waiting { pid: 42 });
        let knobs = Knobs::default();
        let now = Instant::now();
        l.wait_ended(41, true, now, &knobs);
        assert_eq!(l.state(), &State::Waiting { pid: 42 }, "another child");
        l.wait_ended(42, false, now, &knobs);
        assert_eq!(l.state(), &State::Listening);
        // Failed wait servers: the tenth within the window rests the
        // listener, which is not polled until its backoff is over.
        for i in 0..10 {
            l.hold(100 + i);
            let rest = l.wait_ended(100 + i, true, now, &knobs);
            assert_eq!(rest.is_some(), i == 9, "{i}");
        }
        assert!(matches!(l.state(), State::Resting { .. }));
        assert_eq!(l.pollable(), None);
        assert_eq!(t.next_retry(), Some(now + knobs.wait_backoff(0)));
        t.retry_due(now + knobs.wait_backoff(0), 0);
        let l = t.get_mut(id).unwrap();
        assert_eq!(l.state(), &State::Listening);
        // Paused by the rate limit until its end.
        l.pause(now);
        assert!(l.paused());
        t.retry_due(now, 0);
        let l = t.get_mut(id).unwrap();
        assert_eq!(l.state(), &State::Listening);
        // A failed listener waits for its retry.
        l.state = State::Failed {
            reason: "in use".into(),
            retry_at: now,
            attempt: 2,
        };
        assert_eq!(t.next_retry(), Some(now));
        // Not due yet: untouched.
        t.retry_due(now - std::time::Duration::from_secs(1), 0);
        assert!(matches!(
            t.get(id).unwrap().state(),
            State::Failed { attempt: 2, .. }
        ));
        // Due: bound now, or failed again with the next attempt's delay.
        t.retry_due(now, nix::unistd::geteuid().as_raw());
        match t.get(id).unwrap().state() {
            State::Listening => assert!(t.get(id).unwrap().socket().is_some()),
            State::Failed {
                attempt, retry_at, ..
            } => assert!(*attempt == 3 && *retry_at > now),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bind_keys_for_the_log() {
        let s = spec(7001);
        assert_eq!(
            describe_bind(&s.bind, s.socket_type),
            "127.0.0.1:7001 stream/4"
        );
        let b = Bind::Unix {
            path: "/run/a\"b".into(),
        };
        assert_eq!(
            describe_bind(&b, SocketType::Dgram),
            "/run/a\\\"b dgram/unix"
        );
    }
}
