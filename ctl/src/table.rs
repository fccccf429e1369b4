//! The human-readable output of `inetctl list`, `status` and `reload`.
#![forbid(unsafe_code)]

use std::fmt::Write;

use inetd_protocol::control::{
    ListReply, ReloadItem, ReloadReply, RowLimits, RowState, ServiceRow, StatusReply,
};
use inetd_protocol::{Policy, UnixDirs, DEFAULT_MAX_CHILDREN};

use crate::timefmt::rfc3339;

/// `EXEC-FAILED` counts children whose exec (or set-up) failed, so an entry
/// whose server is missing shows `listening` and its failures side by side;
/// `WARNINGS` counts the warnings printed below the row.
const HEADERS: [&str; 11] = [
    "SERVICE",
    "ADDRESS",
    "PORT/PATH",
    "PROTO",
    "USER",
    "STATE",
    "CHILDREN",
    "ACCEPTED",
    "EXEC-FAILED",
    "WARNINGS",
    "SOURCE",
];

fn cells(r: &ServiceRow) -> [String; 11] {
    let dash = || "-".to_owned();
    let user = match (r.user.is_empty(), r.group.is_empty()) {
        (true, _) => dash(),
        (false, true) => r.user.clone(),
        (false, false) => format!("{}:{}", r.user, r.group),
    };
    let source = if r.source.file.is_empty() {
        dash()
    } else {
        format!("{}:{}", r.source.file, r.source.line)
    };
    let proto = if r.socket_type.is_empty() || r.socket_type == "stream" || r.socket_type == "dgram"
    {
        r.protocol.clone()
    } else {
        format!("{}/{}", r.protocol, r.socket_type)
    };
    [
        r.service.clone(),
        r.address.clone().unwrap_or_else(dash),
        r.port
            .map(|p| p.to_string())
            .or_else(|| r.path.clone())
            .unwrap_or_else(dash),
        if proto.is_empty() { dash() } else { proto },
        user,
        r.state.as_str().to_owned(),
        r.children.to_string(),
        r.accepted.to_string(),
        r.exec_failures.to_string(),
        if r.warnings.is_empty() {
            dash()
        } else {
            r.warnings.len().to_string()
        },
        source,
    ]
}

/// Escapes control characters so a row is always one line on a terminal.
fn clean(s: &str) -> String {
    s.chars()
        .flat_map(char::escape_debug)
        .collect::<String>()
        .replace("\\\"", "\"")
        .replace("\\'", "'")
}

/// The `limits:` note of a row, when its limits are not the defaults
/// (256 children, nothing else): every limit set, and unlimited children.
pub fn limits_note(l: &RowLimits) -> Option<String> {
    let default = RowLimits {
        max_children: Some(DEFAULT_MAX_CHILDREN),
        ..RowLimits::default()
    };
    if *l == default {
        return None;
    }
    let mut parts = vec![match l.max_children {
        Some(n) => format!("{n} children"),
        None => "unlimited children".to_owned(),
    }];
    if let Some(n) = l.per_minute {
        parts.push(format!("{n} per minute"));
    }
    if let Some(n) = l.per_source_per_minute {
        parts.push(format!("{n} per minute per source"));
    }
    if let Some(n) = l.per_source_children {
        parts.push(format!("{n} children per source"));
    }
    Some(parts.join(", "))
}

/// The `refused:` note of a row, when the core refused or held anything.
fn refused_note(r: &ServiceRow) -> Option<String> {
    let f = &r.refused;
    if f.acl == 0 && f.rate == 0 && f.per_source == 0 && r.at_max_children == 0 {
        return None;
    }
    Some(format!(
        "access list {}, rate {}, per source {}; held at max children {} times",
        f.acl, f.rate, f.per_source, r.at_max_children
    ))
}

/// `rows` under `headers`, columns aligned (two spaces apart), the last
/// column unpadded; cells cleaned of control characters.
pub fn aligned(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| clean(c)).collect())
        .collect();
    let mut width: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let heads: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for cols in std::iter::once(&heads).chain(&rows) {
        let mut l = String::new();
        for (i, c) in cols.iter().enumerate() {
            if i + 1 == cols.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ", w = width[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    }
    out
}

/// One line per listener, columns aligned; below a row, indented, its
/// reason (with the retry time), its limits when they are not the
/// defaults, what the core refused, and its warnings.
pub fn list_table(reply: &ListReply) -> String {
    let rows: Vec<[String; 11]> = reply
        .services
        .iter()
        .map(|r| cells(r).map(|c| clean(&c)))
        .collect();
    let mut width = HEADERS.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cols: &[String]| {
        let mut l = String::new();
        for (i, c) in cols.iter().enumerate() {
            if i + 1 == cols.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ", w = width[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut out, &HEADERS.map(str::to_owned));
    for (r, c) in reply.services.iter().zip(&rows) {
        line(&mut out, c);
        if let Some(reason) = &r.reason {
            let until = match (r.state, r.until) {
                (RowState::Paused | RowState::Failed, Some(t)) => {
                    format!(" (until {})", rfc3339(t))
                }
                _ => String::new(),
            };
            let _ = writeln!(out, "    reason: {}{until}", clean(reason));
        }
        if let Some(note) = r.limits.as_ref().and_then(limits_note) {
            let _ = writeln!(out, "    limits: {note}");
        }
        if let Some(note) = refused_note(r) {
            let _ = writeln!(out, "    refused: {note}");
        }
        if let Some(e) = &r.last_error {
            let _ = writeln!(out, "    last error: {}", clean(e));
        }
        for w in &r.warnings {
            let _ = writeln!(out, "    warning: {}", clean(w));
        }
    }
    out
}

pub fn status_text(s: &StatusReply) -> String {
    let c = &s.controller;
    let mut out = String::new();
    let _ = writeln!(out, "controller");
    let _ = writeln!(out, "  version:          {}", c.version);
    let _ = writeln!(out, "  pid:              {}", c.pid);
    let _ = writeln!(out, "  uptime:           {}s", c.uptime_s);
    let _ = writeln!(out, "  admin group:      {}", c.admin_group);
    for f in &c.config {
        let m = f.mtime.map_or_else(|| "-".to_owned(), rfc3339);
        let _ = writeln!(out, "  config:           {} (modified {m})", clean(&f.path));
    }
    match &c.last_reload {
        Some(l) => {
            let _ = writeln!(
                out,
                "  last reload:      {} at {}",
                l.result.as_str(),
                rfc3339(l.at)
            );
            for e in &l.errors {
                let _ = writeln!(out, "    {}", clean(e));
            }
        }
        None => {
            let _ = writeln!(out, "  last reload:      none");
        }
    }
    let _ = writeln!(out, "core");
    match &s.core {
        Some(k) => {
            let _ = writeln!(out, "  reachable:        yes");
            let _ = writeln!(out, "  version:          {}", k.version);
            let _ = writeln!(out, "  pid:              {}", k.pid);
            let _ = writeln!(out, "  uid:              {}", k.uid);
            let _ = writeln!(out, "  uptime:           {}s", k.uptime_s);
            let _ = writeln!(out, "  generation:       {}", k.generation);
            policy_text(&mut out, &k.policy);
            let _ = writeln!(out, "  listeners:        {}", k.listeners);
            let _ = writeln!(out, "  children:         {}", k.children);
        }
        None => {
            let _ = writeln!(out, "  reachable:        no");
        }
    }
    out
}

/// How the status and the controller's log both say whether setuid
/// programs take effect: `allowed`, or `no_new_privs` (their setuid bits
/// are ignored).
pub fn setuid_word(allowed: bool) -> &'static str {
    if allowed {
        "allowed"
    } else {
        "no_new_privs"
    }
}

/// Whether entries may run as root: `allowed` or `refused`.
pub fn root_services_word(allowed: bool) -> &'static str {
    if allowed {
        "allowed"
    } else {
        "refused"
    }
}

/// What the core allows services to run as (trust rule 4), one item a
/// line under its heading.
fn policy_text(out: &mut String, p: &Policy) {
    let yes = |b: bool, y: &'static str, n: &'static str| if b { y } else { n };
    let _ = writeln!(out, "  root:             {}", yes(p.root, "yes", "no"));
    let root = root_services_word(p.allow_root_services);
    let _ = writeln!(out, "  root services:    {root}");
    let setuid = setuid_word(p.allow_setuid_services);
    let _ = writeln!(out, "  setuid services:  {setuid}");
    let users = p.users.iter().map(|u| {
        let groups: Vec<String> = u.groups.iter().map(u32::to_string).collect();
        format!(
            "{} (uid {}, gid {}, groups {})",
            u.name,
            u.uid,
            u.gid,
            groups.join(" ")
        )
    });
    let groups = p
        .groups
        .iter()
        .map(|g| format!("{} (gid {})", g.name, g.gid));
    let pins = p.root_commands.iter().map(|c| c.line());
    let dirs: Vec<String> = match &p.unix_dirs {
        UnixDirs::Only(dirs) => dirs.clone(),
        UnixDirs::AnyBut(run) => vec![format!("any but {run} and below")],
    };
    let lists: [(&str, Vec<String>); 4] = [
        ("allowed users:", users.collect()),
        ("allowed groups:", groups.collect()),
        ("root commands:", pins.collect()),
        ("unix dirs:", dirs),
    ];
    for (heading, items) in lists {
        if items.is_empty() {
            let _ = writeln!(out, "  {heading:<18}none");
        }
        for (i, item) in items.iter().enumerate() {
            let h = if i == 0 { heading } else { "" };
            let _ = writeln!(out, "  {h:<18}{}", clean(item));
        }
    }
}

fn item_line(verb: &str, i: &ReloadItem) -> String {
    let mut l = format!(
        "{verb:<8} {} {} {}",
        clean(&i.service),
        clean(&i.bind),
        clean(&i.protocol)
    );
    if !i.source.file.is_empty() {
        let _ = write!(l, " ({}:{})", clean(&i.source.file), i.source.line);
    }
    if let Some(r) = &i.reason {
        let _ = write!(l, ": {}", clean(r));
    }
    l
}

/// What `inetctl reload` prints on stdout: one line per added, changed,
/// removed and failed listener, then a count line.
pub fn reload_text(r: &ReloadReply) -> String {
    let mut out = String::new();
    for (verb, items) in [
        ("added", &r.added),
        ("changed", &r.changed),
        ("removed", &r.removed),
        ("rejected", &r.rejected),
        ("failed", &r.failed),
    ] {
        for i in items {
            out.push_str(&item_line(verb, i));
            out.push('\n');
        }
    }
    let _ = writeln!(
        out,
        "{}: generation {}, {} added, {} changed, {} removed, {} rejected, {} failed, {} unchanged",
        r.result.as_str(),
        r.generation,
        r.added.len(),
        r.changed.len(),
        r.removed.len(),
        r.rejected.len(),
        r.failed.len(),
        r.unchanged
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use inetd_protocol::control::*;

    fn row(service: &str, state: RowState) -> ServiceRow {
        ServiceRow {
            source: SourceRef {
                file: "/etc/inetd.conf".into(),
                line: 3,
            },
            service: service.into(),
            address: Some("127.0.0.1".into()),
            port: Some(8007),
            path: None,
            socket_type: "stream".into(),
            protocol: "tcp4".into(),
            wait: false,
            user: "nobody".into(),
            group: "nogroup".into(),
            server: "/bin/cat".into(),
            argv: vec!["cat".into()],
            state,
            reason: None,
            until: None,
            children: 1,
            accepted: 22,
            exec_failures: 0,
            refused: Refused::default(),
            at_max_children: 0,
            limits: Some(RowLimits {
                max_children: Some(256),
                ..RowLimits::default()
            }),
            last_error: None,
            warnings: vec![],
        }
    }

    #[test]
    fn table_columns_align_and_reasons_follow_their_row() {
        let mut bad = row("a-very-long-service\nname", RowState::Rejected);
        bad.address = None;
        bad.port = None;
        bad.path = Some("/run/x.sock".into());
        bad.reason = Some("nope".into());
        bad.warnings = vec!["careful".into()];
        let out = list_table(&ListReply {
            generation: 1,
            services: vec![row("echo", RowState::Listening), bad],
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 5, "{out}");
        assert!(lines[0].starts_with("SERVICE "));
        assert!(lines[0].ends_with("SOURCE"));
        fn col<'a>(header: &str, l: &'a str, h: &str) -> Option<&'a str> {
            header.find(h).map(|i| &l[i..])
        }
        let col = |l, h| col(lines[0], l, h);
        assert!(col(lines[1], "STATE").unwrap().starts_with("listening"));
        assert!(col(lines[2], "STATE").unwrap().starts_with("rejected"));
        assert!(col(lines[2], "PORT/PATH")
            .unwrap()
            .starts_with("/run/x.sock"));
        assert!(col(lines[1], "USER").unwrap().starts_with("nobody:nogroup"));
        assert!(
            lines[2].starts_with("a-very-long-service\\nname "),
            "escaped: {}",
            lines[2]
        );
        assert_eq!(lines[3], "    reason: nope");
        assert_eq!(lines[4], "    warning: careful");
    }

    #[test]
    fn status_text_shows_what_the_core_allows() {
        let policy = inetd_protocol::Policy {
            root: true,
            users: vec![
                inetd_protocol::AllowedUser {
                    name: "nobody".into(),
                    uid: 65534,
                    gid: 65534,
                    groups: vec![65534],
                },
                inetd_protocol::AllowedUser {
                    name: "identd".into(),
                    uid: 104,
                    gid: 65534,
                    groups: vec![65534, 4],
                },
            ],
            root_commands: vec![
                inetd_protocol::RootCommand::parse("/usr/bin/id id -u").unwrap(),
                inetd_protocol::RootCommand::parse("/bin/true true").unwrap(),
            ],
            ..inetd_protocol::Policy::default()
        };
        let s = StatusReply {
            controller: ControllerInfo {
                version: "0.1.0".into(),
                pid: 1,
                uptime_s: 2,
                admin_group: "inetd-admin".into(),
                config: vec![],
                last_reload: None,
                config_paths: vec![],
                reloads: Default::default(),
            },
            core: Some(CoreInfo {
                version: "0.1.0".into(),
                pid: 3,
                uid: 0,
                uptime_s: 4,
                generation: 5,
                policy,
                listeners: 6,
                children: 7,
            }),
        };
        let out = status_text(&s);
        let want = "  root:             yes\n  \
                    root services:    refused\n  \
                    setuid services:  no_new_privs\n  \
                    allowed users:    nobody (uid 65534, gid 65534, groups 65534)\n                    \
                    identd (uid 104, gid 65534, groups 65534 4)\n  \
                    allowed groups:   none\n  \
                    root commands:    /usr/bin/id id -u\n                    \
                    /bin/true true\n  \
                    unix dirs:        none\n  \
                    listeners:        6\n";
        assert!(out.contains(want), "{out}");
        // Every value starts in the same column, continuation lines too.
        for line in out.lines().filter(|l| l.starts_with("  ")) {
            assert!(
                line.len() > 20 && line[..20].ends_with(' ') && !line[20..].starts_with(' '),
                "out of alignment: {line:?}"
            );
        }
        let mut s = s;
        let k = s.core.as_mut().unwrap();
        k.policy.unix_dirs = UnixDirs::Only(vec!["/run/inetd/sockets".into(), "/srv/s".into()]);
        let out = status_text(&s);
        let want = "  unix dirs:        /run/inetd/sockets\n                    /srv/s\n";
        assert!(out.contains(want), "{out}");
        s.core.as_mut().unwrap().policy.unix_dirs = UnixDirs::AnyBut("/run/user/7/inetd".into());
        let out = status_text(&s);
        assert!(
            out.contains("  unix dirs:        any but /run/user/7/inetd and below\n"),
            "{out}"
        );
    }

    #[test]
    fn limits_and_refusals_show_below_their_row_only_when_set() {
        let mut limited = row("ftp", RowState::Paused);
        limited.limits = Some(RowLimits {
            max_children: Some(20),
            per_minute: Some(40),
            per_source_per_minute: Some(5),
            per_source_children: Some(2),
        });
        limited.refused = Refused {
            acl: 1,
            rate: 2,
            per_source: 3,
        };
        limited.at_max_children = 4;
        let mut unlimited = row("big", RowState::Listening);
        unlimited.limits = Some(RowLimits::default());
        let mut unparsed = row("bad", RowState::Rejected);
        unparsed.limits = None;
        let out = list_table(&ListReply {
            generation: 1,
            services: vec![
                row("echo", RowState::Listening),
                limited,
                unlimited,
                unparsed,
            ],
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 8, "{out}");
        assert!(lines[1].starts_with("echo "), "defaults add no note: {out}");
        assert!(lines[2].starts_with("ftp "));
        assert_eq!(
            lines[3],
            "    limits: 20 children, 40 per minute, 5 per minute per source, 2 children per source"
        );
        assert_eq!(
            lines[4],
            "    refused: access list 1, rate 2, per source 3; held at max children 4 times"
        );
        assert!(lines[5].starts_with("big "));
        assert_eq!(lines[6], "    limits: unlimited children");
        assert!(lines[7].starts_with("bad "));
    }

    #[test]
    fn reload_text_names_every_change() {
        let item = |s: &str, reason: Option<&str>| ReloadItem {
            source: SourceRef {
                file: "f".into(),
                line: 2,
            },
            service: s.into(),
            protocol: "tcp4".into(),
            bind: "127.0.0.1:9".into(),
            reason: reason.map(str::to_owned),
        };
        let out = reload_text(&ReloadReply {
            result: ReloadResult::Failed,
            generation: 9,
            added: vec![item("new", None)],
            changed: vec![item("argv", None)],
            removed: vec![item("gone", None)],
            rejected: vec![item("root", Some("runs as root"))],
            failed: vec![item("busy", Some("Address already in use"))],
            unchanged: 3,
            diagnostics: vec![],
        });
        assert_eq!(
            out,
            "added    new 127.0.0.1:9 tcp4 (f:2)\n\
             changed  argv 127.0.0.1:9 tcp4 (f:2)\n\
             removed  gone 127.0.0.1:9 tcp4 (f:2)\n\
             rejected root 127.0.0.1:9 tcp4 (f:2): runs as root\n\
             failed   busy 127.0.0.1:9 tcp4 (f:2): Address already in use\n\
             failed: generation 9, 1 added, 1 changed, 1 removed, 1 rejected, 1 failed, 3 unchanged\n"
        );
    }
}
