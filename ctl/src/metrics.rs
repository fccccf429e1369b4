//! `inetctl metrics`: the Prometheus text exposition format (version
//! 0.0.4), for node_exporter's textfile collector. A stable interface,
//! documented metric by metric in docs/inetctl.md.
//!
//! The per-service counters are read from the list row generically: every
//! number of the row that is a counter becomes `inetd_service_<key>_total`,
//! and every object of numbers (`refused`) becomes one counter with a
//! `reason` label per key. A counter the core adds to its status, once the
//! list row carries it, appears here without a change.

use std::collections::HashSet;
use std::fmt::Write;

use inetd_protocol::control::{ListReply, RowState, ServiceRow, StatusReply};
use serde_json::Value;

/// Keys of the list row that are not counters: identity, gauges shown
/// otherwise, times, text.
const NOT_COUNTERS: [&str; 5] = ["port", "until", "children", "limits", "source"];

/// One metric family: its samples follow its HELP and TYPE lines.
struct Family {
    name: String,
    kind: &'static str,
    help: String,
    samples: Vec<String>,
}

#[derive(Default)]
struct Families(Vec<Family>);

impl Families {
    fn add(&mut self, name: &str, kind: &'static str, help: &str, labels: &str, value: u64) {
        let line = format!("{name}{labels} {value}");
        match self.0.iter_mut().find(|f| f.name == name) {
            Some(f) => f.samples.push(line),
            None => self.0.push(Family {
                name: name.to_owned(),
                kind,
                help: help.to_owned(),
                samples: vec![line],
            }),
        }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        for f in &self.0 {
            let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
            for s in &f.samples {
                out.push_str(s);
                out.push('\n');
            }
        }
        out
    }
}

/// A label value escaped as the format wants (`\\`, `\"`, `\n`).
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// `{a="x",b="y"}`.
fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Where a row listens: `ADDRESS:PORT`, `[V6]:PORT`, the socket path, or
/// nothing for an entry that did not parse.
fn listen(r: &ServiceRow) -> String {
    match (&r.address, r.port, &r.path) {
        (Some(a), Some(p), _) if a.contains(':') => format!("[{a}]:{p}"),
        (Some(a), Some(p), _) => format!("{a}:{p}"),
        (_, _, Some(path)) => path.clone(),
        _ => String::new(),
    }
}

const STATES: [RowState; 5] = [
    RowState::Listening,
    RowState::Waiting,
    RowState::Paused,
    RowState::Failed,
    RowState::Rejected,
];

/// The metrics of one row. A rejected row also carries its `source`: two
/// bad lines (or a line overlapping a good one) may share service,
/// protocol and address, and a series must be unique. Rows that still
/// collide (which a configuration cannot produce) are left out.
fn service(m: &mut Families, seen: &mut HashSet<String>, r: &ServiceRow) {
    let where_ = listen(r);
    let source = format!("{}:{}", r.source.file, r.source.line);
    let mut id = vec![
        ("service", r.service.as_str()),
        ("protocol", r.protocol.as_str()),
        ("listen", where_.as_str()),
    ];
    if r.state == RowState::Rejected {
        id.push(("source", source.as_str()));
    }
    if !seen.insert(labels(&id)) {
        return;
    }
    for st in STATES {
        let mut l = id.to_vec();
        l.push(("state", st.as_str()));
        let help =
            "1 for the state the listener is in (listening, waiting, paused, failed, rejected)";
        m.add(
            "inetd_service_state",
            "gauge",
            help,
            &labels(&l),
            u64::from(r.state == st),
        );
    }
    let help = "Children running now";
    m.add(
        "inetd_service_children",
        "gauge",
        help,
        &labels(&id),
        u64::from(r.children),
    );
    let Ok(Value::Object(row)) = serde_json::to_value(r) else {
        return;
    };
    for (key, v) in &row {
        if NOT_COUNTERS.contains(&key.as_str()) {
            continue;
        }
        let name = format!("inetd_service_{key}_total");
        match v {
            Value::Number(n) => {
                let help = format!("The listener's {key} counter, since it was added");
                m.add(
                    &name,
                    "counter",
                    &help,
                    &labels(&id),
                    n.as_u64().unwrap_or(0),
                );
            }
            Value::Object(by) if !by.is_empty() && by.values().all(Value::is_number) => {
                for (reason, n) in by {
                    let mut l = id.to_vec();
                    l.push(("reason", reason));
                    let help = format!("Connections {key} before fork, by reason");
                    m.add(
                        &name,
                        "counter",
                        &help,
                        &labels(&l),
                        n.as_u64().unwrap_or(0),
                    );
                }
            }
            _ => {}
        }
    }
}

/// The whole exposition. `list` is `None` when the core cannot be reached
/// (the controller answers `list` only with the core).
pub fn exposition(status: &StatusReply, list: Option<&ListReply>) -> String {
    let mut m = Families::default();
    let c = &status.controller;
    m.add(
        "inetd_controller_up",
        "gauge",
        "1 when the controller answers",
        "",
        1,
    );
    let help = "Seconds since the controller started";
    m.add(
        "inetd_controller_uptime_seconds",
        "gauge",
        help,
        "",
        c.uptime_s,
    );
    for (result, n) in c.reloads.by_result() {
        let help = "Loads of the configuration (start, reload, re-sync) by result";
        let l = labels(&[("result", result.as_str())]);
        m.add("inetd_reloads_total", "counter", help, &l, n);
    }
    if let Some(last) = &c.last_reload {
        let help = "When the last load of the configuration ended, unix seconds";
        m.add(
            "inetd_last_reload_timestamp_seconds",
            "gauge",
            help,
            "",
            last.at,
        );
        for (result, _) in c.reloads.by_result() {
            let help = "1 for the result of the last load of the configuration";
            let l = labels(&[("result", result.as_str())]);
            m.add(
                "inetd_last_reload",
                "gauge",
                help,
                &l,
                u64::from(last.result == result),
            );
        }
    }
    let help = "1 when the controller reaches the core";
    m.add(
        "inetd_core_up",
        "gauge",
        help,
        "",
        u64::from(status.core.is_some()),
    );
    if let Some(k) = &status.core {
        let help = "Seconds since the core started";
        m.add("inetd_core_uptime_seconds", "gauge", help, "", k.uptime_s);
        let help = "The core's generation: it rises with every change applied";
        m.add("inetd_core_generation", "gauge", help, "", k.generation);
        let help = "Listeners in the core";
        m.add(
            "inetd_core_listeners",
            "gauge",
            help,
            "",
            u64::from(k.listeners),
        );
        let help = "Children of the core's listeners running now";
        m.add(
            "inetd_core_children",
            "gauge",
            help,
            "",
            u64::from(k.children),
        );
    }
    let mut seen = HashSet::new();
    for r in list.map(|l| l.services.as_slice()).unwrap_or_default() {
        service(&mut m, &mut seen, r);
    }
    m.text()
}

/// What `inetctl metrics` prints when the controller does not answer.
pub fn controller_down() -> String {
    let mut m = Families::default();
    m.add(
        "inetd_controller_up",
        "gauge",
        "1 when the controller answers",
        "",
        0,
    );
    m.text()
}

#[cfg(test)]
mod tests {
    use super::*;
    use inetd_protocol::control::*;

    fn row(state: RowState) -> ServiceRow {
        ServiceRow {
            state,
            until: Some(1_700_000_000),
            children: 2,
            accepted: 12,
            exec_failures: 1,
            refused: Refused {
                acl: 3,
                rate: 4,
                per_source: 5,
            },
            at_max_children: 6,
            ..crate::testutil::echo_row()
        }
    }

    fn status(core: bool) -> StatusReply {
        StatusReply {
            controller: ControllerInfo {
                version: "0.1.0".into(),
                pid: 42,
                uptime_s: 30,
                admin_group: "inetd-admin".into(),
                config: vec![],
                last_reload: Some(LastReload {
                    at: 99,
                    result: ReloadResult::Partial,
                    errors: vec![],
                }),
                config_paths: vec![],
                reloads: ReloadCounts {
                    ok: 1,
                    rejected: 2,
                    partial: 3,
                    failed: 0,
                },
            },
            core: core.then(|| CoreInfo {
                version: "0.1.0".into(),
                pid: 1,
                uid: 0,
                uptime_s: 100,
                generation: 7,
                policy: inetd_protocol::Policy::default(),
                listeners: 1,
                children: 2,
            }),
        }
    }

    #[test]
    fn every_counter_state_and_uptime_in_the_text_format() {
        let list = ListReply {
            generation: 7,
            services: vec![row(RowState::Listening)],
        };
        let text = exposition(&status(true), Some(&list));
        let id = r#"service="echo",protocol="tcp4",listen="127.0.0.1:7""#;
        for want in [
            "inetd_controller_up 1".to_owned(),
            "inetd_controller_uptime_seconds 30".into(),
            "inetd_core_up 1".into(),
            "inetd_core_uptime_seconds 100".into(),
            "inetd_core_generation 7".into(),
            "inetd_core_children 2".into(),
            r#"inetd_reloads_total{result="rejected"} 2"#.into(),
            r#"inetd_last_reload{result="partial"} 1"#.into(),
            r#"inetd_last_reload{result="ok"} 0"#.into(),
            "inetd_last_reload_timestamp_seconds 99".into(),
            format!(r#"inetd_service_state{{{id},state="listening"}} 1"#),
            format!(r#"inetd_service_state{{{id},state="paused"}} 0"#),
            format!("inetd_service_children{{{id}}} 2"),
            format!("inetd_service_accepted_total{{{id}}} 12"),
            format!("inetd_service_exec_failures_total{{{id}}} 1"),
            format!("inetd_service_at_max_children_total{{{id}}} 6"),
            format!(r#"inetd_service_refused_total{{{id},reason="acl"}} 3"#),
            format!(r#"inetd_service_refused_total{{{id},reason="rate"}} 4"#),
            format!(r#"inetd_service_refused_total{{{id},reason="per_source"}} 5"#),
        ] {
            assert!(text.lines().any(|l| l == want), "no {want:?} in\n{text}");
        }
        // Times and identities are not counters.
        assert!(!text.contains("until"), "{text}");
        assert!(!text.contains("inetd_service_port"), "{text}");
        // Each family once, HELP and TYPE before its samples.
        let mut seen = std::collections::HashSet::new();
        let mut current = String::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                current = rest.split(' ').next().unwrap().to_owned();
                assert!(seen.insert(current.clone()), "{current} twice");
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                assert_eq!(name, current, "{l}");
            }
        }
    }

    #[test]
    fn rejected_rows_that_share_a_listener_stay_distinct_series() {
        let mut overlap = row(RowState::Rejected);
        overlap.source.line = 13;
        let mut unparsed = row(RowState::Rejected);
        unparsed.address = None;
        unparsed.port = None;
        let mut unparsed2 = unparsed.clone();
        unparsed2.source.line = 14;
        let list = ListReply {
            generation: 7,
            services: vec![row(RowState::Listening), overlap, unparsed, unparsed2],
        };
        let text = exposition(&status(true), Some(&list));
        let samples: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.rsplit_once(' ').unwrap().0)
            .collect();
        let unique: HashSet<&&str> = samples.iter().collect();
        assert_eq!(unique.len(), samples.len(), "duplicate series:\n{text}");
        assert!(
            text.contains(r#"source="/etc/inetd.conf:13",state="rejected"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"listen="",source="/etc/inetd.conf:14""#),
            "{text}"
        );
    }

    #[test]
    fn core_down_and_controller_down() {
        let text = exposition(&status(false), None);
        assert!(text.lines().any(|l| l == "inetd_core_up 0"), "{text}");
        assert!(!text.contains("inetd_service_"), "{text}");
        assert!(controller_down()
            .lines()
            .any(|l| l == "inetd_controller_up 0"));
        assert_eq!(escape("a\"b\\c\nd"), r#"a\"b\\c\nd"#);
    }
}
