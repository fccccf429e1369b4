//! The rows of `inetctl list`: the configuration in effect merged with
//! what the core reports, so every listener, every rejected entry and
//! anything the core runs that the configuration does not explain (a
//! restarted controller before or without its configuration) shows up.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::rc::Rc;

use inetd_protocol::control::{Refused, RowLimits, RowState, ServiceRow, SourceRef};
use inetd_protocol::{Action, Bind, ListenerSpec, ListenerState, ListenerStatus, StatusReport};

use crate::config::{Config, Entry, Label};
use crate::plan::{source_ref, Plan};

/// A configuration the core was given, with what the core made of it.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Shared with a reload that finds the configuration unchanged.
    pub config: Rc<Config>,
    pub plan: Plan,
    /// `(index into plan.send, reason)` the core refused.
    pub core_refused: Vec<(usize, String)>,
}

fn blank(source: SourceRef, service: String, protocol: String) -> ServiceRow {
    ServiceRow {
        source,
        service,
        address: None,
        port: None,
        path: None,
        socket_type: String::new(),
        protocol,
        wait: false,
        user: String::new(),
        group: String::new(),
        server: String::new(),
        argv: Vec::new(),
        state: RowState::Rejected,
        reason: None,
        until: None,
        children: 0,
        accepted: 0,
        exec_failures: 0,
        refused: Refused::default(),
        at_max_children: 0,
        limits: None,
        last_error: None,
        warnings: Vec::new(),
    }
}

/// Address, port, path, socket type, wait, server and argv from a spec.
fn fill_from_spec(row: &mut ServiceRow, spec: &ListenerSpec) {
    match &spec.bind {
        Bind::Inet { addr, port, .. } => {
            row.address = Some(addr.to_string());
            row.port = Some(*port);
        }
        Bind::Unix { path } => row.path = Some(path.clone()),
    }
    row.socket_type = spec.socket_type.to_string();
    row.wait = spec.wait;
    row.limits = Some(RowLimits::from(&spec.limits));
    match &spec.action {
        Action::Exec { path, argv } => {
            row.server = path.clone();
            row.argv = argv.clone();
        }
        Action::Builtin(b) => {
            row.server = "internal".to_owned();
            row.argv = vec![b.name().to_owned()];
        }
    }
}

fn fill_from_core(row: &mut ServiceRow, l: &ListenerStatus) {
    let (state, reason, until) = match &l.state {
        ListenerState::Listening => (RowState::Listening, None, None),
        ListenerState::Waiting => (RowState::Waiting, None, None),
        ListenerState::Paused { reason, until } => {
            (RowState::Paused, Some(reason.clone()), Some(*until))
        }
        ListenerState::Failed { reason, retry_at } => {
            (RowState::Failed, Some(reason.clone()), Some(*retry_at))
        }
    };
    row.state = state;
    row.reason = reason;
    row.until = until;
    row.children = l.counters.children;
    row.accepted = l.counters.accepted;
    row.exec_failures = l.counters.exec_failures;
    row.refused = Refused {
        acl: l.counters.refused_acl,
        rate: l.counters.refused_rate,
        per_source: l.counters.refused_per_source,
    };
    row.at_max_children = l.counters.at_max_children;
    row.last_error = l.last_error.clone();
}

fn entry_row(e: &Entry, spec: &ListenerSpec, user: &str, group: &str) -> ServiceRow {
    let mut row = blank(source_ref(&e.source), e.service.clone(), e.protocol.clone());
    fill_from_spec(&mut row, spec);
    row.user = user.to_owned();
    row.group = group.to_owned();
    row.server = e.server.clone();
    row.argv = e.argv.clone();
    row
}

/// A listener the configuration in effect does not explain, described
/// from its label (or from the spec alone if the label is not ours).
fn label_row(l: &ListenerStatus) -> ServiceRow {
    let label = Label::decode(&l.spec.label);
    let mut row = match &label {
        Some(lb) => blank(
            SourceRef {
                file: lb.file.clone(),
                line: lb.line,
            },
            lb.service.clone(),
            lb.protocol.clone(),
        ),
        None => blank(
            SourceRef {
                file: String::new(),
                line: 0,
            },
            String::new(),
            String::new(),
        ),
    };
    fill_from_spec(&mut row, &l.spec);
    match label {
        Some(lb) => {
            row.user = lb.user;
            row.group = lb.group;
        }
        None => {
            row.user = l.spec.creds.uid.to_string();
            row.group = l.spec.creds.gid.to_string();
        }
    }
    fill_from_core(&mut row, l);
    row
}

/// Every row, in configuration order (files as read, then lines), then the
/// core's listeners that the configuration in effect does not explain.
pub fn build_rows(applied: Option<&Applied>, status: &StatusReport) -> Vec<ServiceRow> {
    // Core listeners by bind key; each is used by at most one row.
    let mut by_key: HashMap<_, usize> = status
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| (l.spec.key(), i))
        .collect();
    let mut keyed: Vec<((usize, u32, usize), ServiceRow)> = Vec::new();
    if let Some(a) = applied {
        let cfg = &a.config;
        let ranks: HashMap<String, usize> = cfg
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.path.to_string_lossy().into_owned(), i))
            .collect();
        let rank = |file: &str| ranks.get(file).copied().unwrap_or(usize::MAX);
        let refused: HashMap<usize, &str> = a
            .core_refused
            .iter()
            .map(|(i, r)| (*i, r.as_str()))
            .collect();
        for (i, p) in a.plan.send.iter().enumerate() {
            let e = &cfg.entries[p.entry];
            let spec = p.spec(&cfg.entries);
            let (user, group) = p.user_group(&cfg.entries);
            let mut row = entry_row(e, spec, user, group);
            row.warnings = p.warnings(&cfg.entries).to_vec();
            let key = spec.key();
            let core = by_key
                .get(&key)
                .map(|&j| &status.listeners[j])
                .filter(|l| &l.spec == spec);
            if let Some(l) = core {
                fill_from_core(&mut row, l);
                by_key.remove(&key);
            } else if let Some(reason) = refused.get(&i) {
                row.state = RowState::Rejected;
                row.reason = Some((*reason).to_owned());
            } else {
                // Not (or not yet) in the core, e.g. a core restarted
                // since the last apply, before the controller re-synced.
                row.state = RowState::Failed;
                row.reason = Some("not running in the core".to_owned());
            }
            keyed.push(((rank(&e.source.file), e.source.line, p.entry), row));
        }
        for r in &a.plan.refused {
            let e = &cfg.entries[r.entry];
            let mut row = entry_row(e, &e.spec, &e.user, &e.group);
            row.warnings = e.warnings.clone();
            row.reason = Some(r.reason.clone());
            keyed.push(((rank(&e.source.file), e.source.line, r.entry), row));
        }
        for (k, r) in cfg.rejected.iter().enumerate() {
            let mut row = match &r.entry {
                // Rejected for what it would run (an access list that
                // cannot be checked): shown whole.
                Some(e) => {
                    let mut row = entry_row(e, &e.spec, &e.user, &e.group);
                    row.warnings = e.warnings.clone();
                    row
                }
                None => {
                    let mut row =
                        blank(source_ref(&r.source), r.service.clone(), r.protocol.clone());
                    if r.service.starts_with('/') {
                        row.path = Some(r.service.clone());
                    }
                    row
                }
            };
            row.reason = Some(r.reason.clone());
            keyed.push((
                (rank(&r.source.file), r.source.line, cfg.entries.len() + k),
                row,
            ));
        }
    }
    keyed.sort_by_key(|(k, _)| *k);
    let mut rows: Vec<ServiceRow> = keyed.into_iter().map(|(_, r)| r).collect();
    let mut rest: Vec<usize> = by_key.into_values().collect();
    rest.sort_unstable();
    rows.extend(rest.into_iter().map(|j| label_row(&status.listeners[j])));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{plan, Identity};
    use crate::testutil::*;

    fn me() -> Identity {
        Identity {
            uid: 101,
            gid: 101,
            groups: vec![101],
            user: "inetd".into(),
            group: "inetd".into(),
        }
    }

    fn applied(config: Config, refused_by_core: Vec<(usize, String)>) -> Applied {
        let plan = plan(&config.entries, &config.names, &root_core(), &me());
        Applied {
            config: Rc::new(config),
            plan,
            core_refused: refused_by_core,
        }
    }

    #[test]
    fn rows_merge_configuration_and_core_in_file_order() {
        let a1 = entry("a", 8001, 65534, "/etc/inetd.conf", 3);
        let b = entry("b", 8002, 65534, "/etc/inetd.d/x.conf", 1);
        let root = entry("r", 8003, 0, "/etc/inetd.conf", 7);
        let refused = entry("c", 8004, 65534, "/etc/inetd.conf", 9);
        let missing = entry("d", 8005, 65534, "/etc/inetd.conf", 11);
        let cfg = config(
            &["/etc/inetd.conf", "/etc/inetd.d/x.conf"],
            vec![b.clone(), a1.clone(), root, refused, missing],
            vec![rejected(
                "bogus",
                "/etc/inetd.conf",
                5,
                "field 3 (protocol): found \"tcq\", expected tcp",
            )],
        );
        // The plan sends b, a, c, d (r is root); the core refused c (index 2).
        let app = applied(cfg, vec![(2, "unsafe".into())]);
        let stranger = entry("old", 9000, 65534, "/etc/old.conf", 4);
        let st = status(
            7,
            vec![
                listening(&stranger.spec, 1),
                listening(&a1.spec, 12),
                listening(&b.spec, 2),
            ],
        );
        let rows = build_rows(Some(&app), &st);
        let seen: Vec<(&str, RowState)> =
            rows.iter().map(|r| (r.service.as_str(), r.state)).collect();
        assert_eq!(
            seen,
            vec![
                ("a", RowState::Listening),
                ("bogus", RowState::Rejected),
                ("r", RowState::Rejected),
                ("c", RowState::Rejected),
                ("d", RowState::Failed),
                ("b", RowState::Listening),
                ("old", RowState::Listening),
            ]
        );
        assert_eq!(rows[0].accepted, 12);
        assert_eq!(rows[0].address.as_deref(), Some("127.0.0.1"));
        assert_eq!(rows[0].port, Some(8001));
        assert_eq!(rows[0].user, "nobody");
        assert!(rows[1].reason.as_deref().unwrap().contains("protocol"));
        assert!(rows[2]
            .reason
            .as_deref()
            .unwrap()
            .contains("--allow-root-services"));
        assert_eq!(rows[2].user, "root");
        assert_eq!(rows[3].reason.as_deref(), Some("unsafe"));
        // The stranger is shown from its label.
        let old = &rows[6];
        assert_eq!(old.source.file, "/etc/old.conf");
        assert_eq!(old.source.line, 4);
        assert_eq!(old.user, "nobody");
        assert_eq!(old.server, "/bin/cat");
        assert_eq!(old.accepted, 1);
    }

    #[test]
    fn without_a_configuration_every_core_listener_shows_from_its_label() {
        let e = entry("echo", 7, 65534, "/etc/inetd.conf", 12);
        let mut l = listening(&e.spec, 0);
        l.state = ListenerState::Failed {
            reason: "Address already in use".into(),
            retry_at: 1_700_000_000,
        };
        let rows = build_rows(None, &status(3, vec![l]));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].service, "echo");
        assert_eq!(rows[0].state, RowState::Failed);
        assert_eq!(rows[0].until, Some(1_700_000_000));
        assert_eq!(rows[0].protocol, "tcp4");
    }

    #[test]
    fn a_listener_whose_spec_differs_is_not_taken_for_the_entry() {
        let e = entry("a", 8001, 65534, "/etc/inetd.conf", 3);
        let app = applied(
            config(&["/etc/inetd.conf"], vec![e.clone()], vec![]),
            vec![],
        );
        let mut other = e.spec.clone();
        other.action = Action::Exec {
            path: "/bin/true".into(),
            argv: vec!["true".into()],
        };
        let rows = build_rows(Some(&app), &status(1, vec![listening(&other, 0)]));
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].state, RowState::Failed);
        assert_eq!(rows[1].server, "/bin/true");
    }
}
