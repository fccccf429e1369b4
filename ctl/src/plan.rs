//! What to send to the core for a configuration, whether to send it at
//! all, and how to read the core's answer. Pure: no sockets, no clock.
#![forbid(unsafe_code)]

use inetd_protocol::control::{ReloadItem, ReloadResult, SourceRef};
use inetd_protocol::{verdict, ApplyReport, Bind, IdNames, ListenerSpec, Outcome, Policy, Removed};

use crate::config::{Config, Diagnostic, Entry, Label, Severity, Source};

/// The controller's own ids and names: what every entry runs as when the
/// core is not root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub user: String,
    pub group: String,
}

/// One entry as it goes to the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Index into `Config::entries`.
    pub entry: usize,
    /// What the core is given instead of the entry's own, when it differs
    /// (a core that is not root); `None`, the usual case, keeps one copy of
    /// each service in the controller rather than two.
    adapted: Option<Box<Adapted>>,
}

/// An entry as a core that is not root runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Adapted {
    spec: ListenerSpec,
    /// The user and group it runs as (the controller's).
    user: String,
    group: String,
    /// The entry's warnings and the controller's about this entry.
    warnings: Vec<String>,
}

impl Planned {
    /// The spec sent; `entries` are the ones the plan was made from.
    pub fn spec<'a>(&'a self, entries: &'a [Entry]) -> &'a ListenerSpec {
        match &self.adapted {
            Some(a) => &a.spec,
            None => &entries[self.entry].spec,
        }
    }

    /// The user and group it runs as (the entry's, or the controller's).
    pub fn user_group<'a>(&'a self, entries: &'a [Entry]) -> (&'a str, &'a str) {
        match &self.adapted {
            Some(a) => (&a.user, &a.group),
            None => (&entries[self.entry].user, &entries[self.entry].group),
        }
    }

    /// The entry's warnings and the controller's about this entry.
    pub fn warnings<'a>(&'a self, entries: &'a [Entry]) -> &'a [String] {
        match &self.adapted {
            Some(a) => &a.warnings,
            None => &entries[self.entry].warnings,
        }
    }
}

/// An entry held back because the core would refuse it anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub entry: usize,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub send: Vec<Planned>,
    pub refused: Vec<Refusal>,
}

impl Plan {
    pub fn specs(&self, entries: &[Entry]) -> Vec<ListenerSpec> {
        self.send.iter().map(|p| p.spec(entries).clone()).collect()
    }
}

/// Adapts the good entries to the core's policy (from its Hello):
///
/// * a core that is not root runs everything as itself, so every entry
///   runs as the controller's user (the same uid in one-command mode), with
///   a warning where that differs from the configured user;
/// * an entry whose ids the core does not allow (the shared
///   [`verdict`]: users and groups outside its allowlist, root unless
///   allowed or pinned, the controller's own ids), and a unix entry outside
///   the core's unix directories (`--unix-dir`, the shared
///   [`UnixDirs::check`](inetd_protocol::UnixDirs::check)), is held back
///   and shown rejected with the core's reason, its ids named as `names`
///   has them, instead of being sent.
pub fn plan(entries: &[Entry], names: &IdNames, policy: &Policy, me: &Identity) -> Plan {
    let mut out = Plan::default();
    for (i, e) in entries.iter().enumerate() {
        if let Some(reason) = unix_refusal(&e.spec, policy) {
            out.refused.push(Refusal { entry: i, reason });
            continue;
        }
        let adapted = (!policy.root).then(|| Box::new(as_controller(e, me)));
        let spec = adapted.as_ref().map_or(&e.spec, |a| &a.spec);
        if let Err(reason) = verdict(policy, &spec.creds, &spec.action, names) {
            out.refused.push(Refusal { entry: i, reason });
            continue;
        }
        out.send.push(Planned { entry: i, adapted });
    }
    out
}

/// `e` as a core that is not root runs it: as the controller's user.
fn as_controller(e: &Entry, me: &Identity) -> Adapted {
    let mut spec = e.spec.clone();
    let mut warnings = e.warnings.clone();
    if spec.creds.uid != me.uid || spec.creds.gid != me.gid {
        warnings.push(format!(
            "runs as {} ({}:{}) instead of {}:{}: the core is not root",
            me.user, me.uid, me.gid, e.user, e.group
        ));
    }
    spec.creds.uid = me.uid;
    spec.creds.gid = me.gid;
    spec.creds.groups = me.groups.clone();
    if let Some(mut label) = Label::decode(&spec.label) {
        label.user = me.user.clone();
        label.group = me.group.clone();
        spec.label = label.encode();
    }
    Adapted {
        spec,
        user: me.user.clone(),
        group: me.group.clone(),
        warnings,
    }
}

/// Why the core would refuse a unix listener at its path (outside its
/// unix directories), by the rule the core applies.
fn unix_refusal(spec: &ListenerSpec, policy: &Policy) -> Option<String> {
    match &spec.bind {
        Bind::Unix { path } => policy.unix_dirs.check(path).err(),
        Bind::Inet { .. } => None,
    }
}

/// What a core with `policy` would refuse of `config`, one diagnostic per
/// entry, for `inetctl check`: the reasons [`plan`] holds entries back
/// with. On a core that is not root only the unix directories count: the
/// controller runs every entry as itself, which such a core allows.
pub fn refusals(config: &Config, policy: &Policy) -> Vec<Diagnostic> {
    let mut out: Vec<Diagnostic> = Vec::new();
    for e in &config.entries {
        let ids = || {
            let v = verdict(policy, &e.spec.creds, &e.spec.action, &config.names);
            v.err().filter(|_| policy.root)
        };
        let Some(reason) = unix_refusal(&e.spec, policy).or_else(ids) else {
            continue;
        };
        let d = Diagnostic {
            file: e.source.file.clone(),
            line: e.source.line,
            severity: Severity::Error,
            message: format!("refused by the running core: {reason}"),
        };
        // The two halves of a `tcp` entry are refused alike: once.
        if !out.contains(&d) {
            out.push(d);
        }
    }
    out
}

/// How a configuration is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The core runs nothing yet (or the configuration was accepted
    /// before): the good entries run, the bad ones are listed as rejected.
    Start,
    /// All or nothing, unless `partial`.
    Reload { partial: bool },
}

/// Whether a configuration is applied at all.
pub fn should_apply(config_has_errors: bool, mode: Mode) -> bool {
    match mode {
        Mode::Start => true,
        Mode::Reload { partial } => partial || !config_has_errors,
    }
}

/// The result of a reload: `rejected` when nothing was applied, `failed`
/// when the core refused or could not bind something (policy refusals
/// included), `partial` when only the configuration's good entries were
/// applied, `ok` otherwise.
pub fn result_of(applied: bool, config_errors: bool, failures: bool) -> ReloadResult {
    if !applied {
        ReloadResult::Rejected
    } else if failures {
        ReloadResult::Failed
    } else if config_errors {
        ReloadResult::Partial
    } else {
        ReloadResult::Ok
    }
}

/// Where the packaged core's flags go: a systemd drop-in, of which the
/// package ships examples.
pub const DROP_IN_DIR: &str = "/etc/systemd/system/inetd-core.service.d";
pub const DROP_IN_EXAMPLES: &str = "/usr/share/doc/inetd-privsep/examples/inetd-core.service.d";

/// A refusal that names a flag of the core, with where that flag goes for
/// the packaged service (whose command line is in its unit); any other
/// reason unchanged.
pub fn with_drop_in(reason: String) -> String {
    if reason.contains("(packaged: ") {
        return reason;
    }
    // Where the flag goes, and the shipped example that shows how.
    let (file, example) = if reason.contains("--allow-user") || reason.contains("--allow-group") {
        (
            format!("{DROP_IN_DIR}/allow-users.conf"),
            format!("{DROP_IN_EXAMPLES}/allow-users.conf"),
        )
    } else if reason.contains("--allow-root-command") {
        (
            format!("a drop-in in {DROP_IN_DIR}/"),
            format!("{DROP_IN_EXAMPLES}/tftpd-hpa.conf"),
        )
    } else if reason.contains("--unix-dir") {
        (
            format!("a drop-in in {DROP_IN_DIR}/"),
            format!("the examples in {DROP_IN_EXAMPLES}/"),
        )
    } else {
        return reason;
    };
    format!(
        "{reason} (packaged: put it on the ExecStart= line of {file}, as {example} shows; then systemctl daemon-reload && systemctl restart inetd-core)"
    )
}

/// `ADDRESS:PORT`, `[V6]:PORT`, or the socket path.
pub fn bind_text(bind: &Bind) -> String {
    match bind {
        Bind::Inet { addr, port, .. } if addr.is_ipv6() => format!("[{addr}]:{port}"),
        Bind::Inet { addr, port, .. } => format!("{addr}:{port}"),
        Bind::Unix { path } => path.clone(),
    }
}

pub fn source_ref(s: &Source) -> SourceRef {
    SourceRef {
        file: s.file.clone(),
        line: s.line,
    }
}

fn item(e: &Entry, spec: &ListenerSpec, reason: Option<String>) -> ReloadItem {
    ReloadItem {
        source: source_ref(&e.source),
        service: e.service.clone(),
        protocol: e.protocol.clone(),
        bind: bind_text(&spec.bind),
        reason,
    }
}

/// A removed listener, described from its label.
pub fn removed_item(r: &Removed) -> ReloadItem {
    let label = Label::decode(&r.label);
    ReloadItem {
        source: SourceRef {
            file: label.as_ref().map(|l| l.file.clone()).unwrap_or_default(),
            line: label.as_ref().map_or(0, |l| l.line),
        },
        service: label
            .as_ref()
            .map(|l| l.service.clone())
            .unwrap_or_default(),
        protocol: label.map(|l| l.protocol).unwrap_or_default(),
        bind: bind_text(&r.key.bind),
        reason: None,
    }
}

/// The core's answer to an `Apply`, sorted for the reload report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub added: Vec<ReloadItem>,
    pub changed: Vec<ReloadItem>,
    pub removed: Vec<ReloadItem>,
    /// Refused by the core's policy (as the controller applies it) or by
    /// the core: not retried.
    pub rejected: Vec<ReloadItem>,
    /// Failed binds: the core retries them.
    pub failed: Vec<ReloadItem>,
    pub unchanged: u32,
    /// `(index into plan.send, reason)` of what the core refused: those
    /// listeners do not exist in the core.
    pub core_refused: Vec<(usize, String)>,
}

pub fn summarize(entries: &[Entry], plan: &Plan, report: &ApplyReport) -> Summary {
    let mut s = Summary::default();
    for r in &plan.refused {
        let e = &entries[r.entry];
        s.rejected.push(item(e, &e.spec, Some(r.reason.clone())));
    }
    for (i, p) in plan.send.iter().enumerate() {
        let e = &entries[p.entry];
        let spec = p.spec(entries);
        match report.outcomes.get(i) {
            Some(Outcome::Added) => s.added.push(item(e, spec, None)),
            Some(Outcome::Changed) => s.changed.push(item(e, spec, None)),
            Some(Outcome::Unchanged) => s.unchanged += 1,
            Some(Outcome::Rejected { reason }) => {
                s.rejected.push(item(e, spec, Some(reason.clone())));
                s.core_refused.push((i, reason.clone()));
            }
            Some(Outcome::Failed { reason, .. }) => {
                s.failed.push(item(e, spec, Some(reason.clone())))
            }
            None => {
                let reason = "the core gave no outcome for this listener".to_owned();
                s.rejected.push(item(e, spec, Some(reason.clone())));
                s.core_refused.push((i, reason));
            }
        }
    }
    s.removed = report.removed.iter().map(removed_item).collect();
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use inetd_protocol::{BindKey, Credentials, UnixDirs};

    fn me() -> Identity {
        Identity {
            uid: 1000,
            gid: 1000,
            groups: vec![1000, 27],
            user: "alice".into(),
            group: "alice".into(),
        }
    }

    #[test]
    fn a_core_that_is_not_root_runs_everything_as_the_controller() {
        let entries = vec![entry("a", 8000, 65534, "f", 1), entry("b", 8001, 0, "f", 2)];
        let alice = inetd_protocol::AllowedUser {
            name: "alice".into(),
            uid: 1000,
            gid: 1000,
            groups: vec![1000, 27],
        };
        let p = plan(
            &entries,
            &IdNames::default(),
            &Policy {
                users: vec![alice],
                unix_dirs: UnixDirs::AnyBut("/run/user/1000/inetd".into()),
                ..Policy::default()
            },
            &me(),
        );
        assert!(p.refused.is_empty(), "root entries too: they run as alice");
        assert_eq!(p.send.len(), 2);
        for s in &p.send {
            assert_eq!(
                s.spec(&entries).creds,
                Credentials {
                    uid: 1000,
                    gid: 1000,
                    groups: vec![1000, 27]
                }
            );
            assert_eq!(s.user_group(&entries).0, "alice");
            let warnings = s.warnings(&entries);
            assert_eq!(warnings.len(), 1);
            assert!(warnings[0].contains("the core is not root"), "{warnings:?}");
            let label = Label::decode(&s.spec(&entries).label).unwrap();
            assert_eq!(label.user, "alice");
            assert_eq!(label.line, entries[s.entry].source.line);
        }
    }

    #[test]
    fn root_services_are_held_back_unless_the_core_allows_them() {
        let mut grp0 = entry("c", 8002, 65534, "f", 3);
        grp0.spec.creds.groups.push(0);
        let entries = vec![
            entry("a", 8000, 65534, "f", 1),
            entry("b", 8001, 0, "f", 2),
            grp0,
        ];
        let p = plan(&entries, &IdNames::default(), &root_core(), &me());
        assert_eq!(p.send.len(), 1);
        assert_eq!(p.send[0].spec(&entries), &entries[0].spec, "sent unchanged");
        assert_eq!(
            p.refused.iter().map(|r| r.entry).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!(p.refused[0].reason.contains("--allow-root-services"));
        assert!(p.refused[0]
            .reason
            .ends_with("--allow-root-command '/bin/cat cat'"));
        let allow = Policy {
            allow_root_services: true,
            ..root_core()
        };
        let p = plan(&entries, &IdNames::default(), &allow, &me());
        assert_eq!(p.send.len(), 3);
        assert!(p.refused.is_empty());
    }

    #[test]
    fn ids_the_core_does_not_allow_are_held_back_with_its_reason_and_names() {
        let mut shadow = entry("s", 8003, 65534, "f", 4);
        shadow.spec.creds.gid = 42;
        shadow.spec.creds.groups = vec![42];
        let mut ctl = entry("c", 8004, 65534, "f", 5);
        ctl.spec.creds.groups.push(101);
        let entries = vec![entry("a", 8000, 65534, "f", 1), shadow, ctl];
        let names = IdNames {
            groups: [(42, "shadow".to_owned())].into_iter().collect(),
            ..IdNames::default()
        };
        let p = plan(&entries, &names, &root_core(), &me());
        assert_eq!(p.send.len(), 1);
        assert_eq!(p.refused[0].entry, 1);
        assert!(
            p.refused[0].reason.ends_with("--allow-group shadow"),
            "{}",
            p.refused[0].reason
        );
        assert!(p.refused[1].reason.contains("controller"));
        // The reason is the core's own, but for the names.
        let core_reason = verdict(
            &root_core(),
            &entries[1].spec.creds,
            &entries[1].spec.action,
            &IdNames::default(),
        )
        .unwrap_err();
        assert_eq!(
            core_reason.replace("gid 42", "shadow (gid 42)"),
            p.refused[0]
                .reason
                .replace("--allow-group shadow", "--allow-group 42")
        );
    }

    #[test]
    fn check_lists_what_a_running_core_refuses_once_per_entry() {
        let mut half = entry("a", 8000, 0, "f", 1);
        let mut twin = half.clone();
        twin.spec.bind = Bind::Inet {
            addr: "::1".parse().unwrap(),
            port: 8000,
            mode: inetd_protocol::IpMode::V6Only,
        };
        half.protocol = "tcp4".into();
        let cfg = config(
            &["f"],
            vec![half, twin, entry("b", 8001, 65534, "f", 2)],
            vec![],
        );
        let d = refusals(&cfg, &root_core());
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].line, d[0].severity), (1, Severity::Error));
        assert!(d[0]
            .to_string()
            .starts_with("f:1: error: refused by the running core: runs as root"));
        assert!(refusals(&cfg, &Policy::default()).is_empty(), "not root");
    }

    #[test]
    fn reload_decision() {
        assert!(
            should_apply(true, Mode::Start),
            "start runs the good entries"
        );
        assert!(should_apply(false, Mode::Reload { partial: false }));
        assert!(
            !should_apply(true, Mode::Reload { partial: false }),
            "all or nothing"
        );
        assert!(should_apply(true, Mode::Reload { partial: true }));
        assert_eq!(result_of(false, true, false), ReloadResult::Rejected);
        assert_eq!(result_of(true, false, false), ReloadResult::Ok);
        assert_eq!(result_of(true, true, false), ReloadResult::Partial);
        assert_eq!(result_of(true, false, true), ReloadResult::Failed);
        assert_eq!(result_of(true, true, true), ReloadResult::Failed);
    }

    #[test]
    fn unix_entries_outside_the_cores_unix_dirs_are_held_back_with_its_reason() {
        let unix = |path: &str, line| {
            let mut e = entry("u", 1, 65534, "f", line);
            e.spec.bind = Bind::Unix { path: path.into() };
            e
        };
        let entries = vec![
            unix("/run/inetd/sockets/a.sock", 1),
            unix("/run/dbus/system_bus_socket", 2),
            unix("/run/inetd/sockets/sub/b.sock", 3),
            entry("t", 8000, 65534, "f", 4),
        ];
        let policy = Policy {
            unix_dirs: UnixDirs::Only(vec!["/run/inetd/sockets".into()]),
            ..root_core()
        };
        let p = plan(&entries, &IdNames::default(), &policy, &me());
        let sent: Vec<usize> = p.send.iter().map(|s| s.entry).collect();
        assert_eq!(sent, [0, 3]);
        let refused: Vec<usize> = p.refused.iter().map(|r| r.entry).collect();
        assert_eq!(refused, [1, 2]);
        for r in &p.refused {
            let path = match &entries[r.entry].spec.bind {
                Bind::Unix { path } => path.clone(),
                Bind::Inet { .. } => unreachable!(),
            };
            assert_eq!(Err(r.reason.clone()), policy.unix_dirs.check(&path));
            assert!(r.reason.contains("--unix-dir"), "{}", r.reason);
        }
    }

    #[test]
    fn check_lists_unix_entries_outside_the_unix_dirs_on_any_core() {
        let mut sock = entry("u", 1, 65534, "f", 1);
        sock.spec.bind = Bind::Unix {
            path: "/run/dbus/system_bus_socket".into(),
        };
        let cfg = config(&["f"], vec![sock, entry("t", 8000, 65534, "f", 2)], vec![]);
        let root = Policy {
            unix_dirs: UnixDirs::Only(vec!["/run/inetd/sockets".into()]),
            ..root_core()
        };
        let user = Policy {
            unix_dirs: UnixDirs::AnyBut("/run/dbus".into()),
            ..Policy::default()
        };
        for policy in [root, user] {
            let d = refusals(&cfg, &policy);
            assert_eq!(d.len(), 1, "{d:?}");
            assert_eq!(d[0].line, 1);
            assert!(d[0].message.contains("--unix-dir"), "{}", d[0].message);
        }
    }

    #[test]
    fn flags_of_the_packaged_core_name_their_drop_in() {
        let r = with_drop_in(
            "runs as identd (uid 104), which the core does not allow: start the core with --allow-user identd".into(),
        );
        assert!(
            r.contains("--allow-user identd (packaged: put it on the ExecStart= line of /etc/systemd/system/inetd-core.service.d/allow-users.conf, as /usr/share/doc/inetd-privsep/examples/inetd-core.service.d/allow-users.conf shows"),
            "{r}"
        );
        let r = with_drop_in("start the core with --allow-root-command '/bin/x x'".into());
        assert!(r.contains("tftpd-hpa.conf"), "{r}");
        let r = with_drop_in("allow another with --unix-dir DIR".into());
        assert!(
            r.contains(
                "a drop-in in /etc/systemd/system/inetd-core.service.d/, as the examples in"
            ),
            "{r}"
        );
        assert_eq!(with_drop_in("address in use".into()), "address in use");
        assert_eq!(with_drop_in(r.clone()), r, "once");
    }

    #[test]
    fn the_core_report_is_sorted_into_the_reload_summary() {
        let entries: Vec<Entry> = (0..5)
            .map(|i| {
                entry(
                    &format!("s{i}"),
                    8000 + i,
                    if i == 4 { 0 } else { 65534 },
                    "f",
                    u32::from(i) + 1,
                )
            })
            .collect();
        let p = plan(&entries, &IdNames::default(), &root_core(), &me());
        assert_eq!(p.send.len(), 4);
        let gone = entry("old", 7000, 65534, "g", 9);
        let report = ApplyReport {
            generation: 4,
            outcomes: vec![
                Outcome::Added,
                Outcome::Changed,
                Outcome::Unchanged,
                Outcome::Failed {
                    reason: "Address in use".into(),
                    retry_at: 5,
                },
            ],
            removed: vec![Removed {
                key: BindKey {
                    bind: gone.spec.bind.clone(),
                    socket_type: gone.spec.socket_type,
                },
                label: gone.spec.label.clone(),
            }],
        };
        let s = summarize(&entries, &p, &report);
        assert_eq!(s.added.len(), 1);
        assert_eq!(s.added[0].service, "s0");
        assert_eq!(s.added[0].bind, "127.0.0.1:8000");
        assert_eq!(s.changed[0].service, "s1");
        assert_eq!(s.unchanged, 1);
        assert_eq!(s.rejected.len(), 1, "the policy refusal, not retried");
        assert_eq!(s.rejected[0].service, "s4");
        assert_eq!(s.failed.len(), 1, "the failed bind, retried");
        assert_eq!(s.failed[0].reason.as_deref(), Some("Address in use"));
        assert!(
            s.core_refused.is_empty(),
            "a failed bind is in the core, retrying"
        );
        assert_eq!(s.removed[0].service, "old");
        assert_eq!(s.removed[0].source.file, "g");
        assert_eq!(s.removed[0].source.line, 9);
    }
}
