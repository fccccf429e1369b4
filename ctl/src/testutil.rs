//! Fixtures for the unit tests: entries, configurations and core reports
//! built by hand, as the parser and the core would give them.
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr};

use inetd_protocol::{
    Action, Bind, Counters, Credentials, IpMode, Limits, ListenerSpec, ListenerState,
    ListenerStatus, Policy, SocketType, StatusReport, UnixDirs,
};

use crate::config::{Config, ConfigFile, Entry, Label, RejectedEntry, Source};

pub fn entry(service: &str, port: u16, uid: u32, file: &str, line: u32) -> Entry {
    let user = if uid == 0 { "root" } else { "nobody" };
    let group = if uid == 0 { "root" } else { "nogroup" };
    let label = Label {
        service: service.into(),
        file: file.into(),
        line,
        protocol: "tcp4".into(),
        user: user.into(),
        group: group.into(),
    };
    Entry {
        source: Source {
            file: file.into(),
            line,
        },
        service: service.into(),
        protocol: "tcp4".into(),
        user: user.into(),
        group: group.into(),
        server: "/bin/cat".into(),
        argv: vec!["cat".into()],
        warnings: vec![],
        spec: ListenerSpec {
            bind: Bind::Inet {
                addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                port,
                mode: IpMode::V4,
            },
            socket_type: SocketType::Stream,
            wait: false,
            action: Action::Exec {
                path: "/bin/cat".into(),
                argv: vec!["cat".into()],
            },
            creds: Credentials {
                uid,
                gid: uid,
                groups: vec![uid],
            },
            limits: Limits::default(),
            acl: None,
            label: label.encode(),
        },
    }
}

pub fn rejected(service: &str, file: &str, line: u32, reason: &str) -> RejectedEntry {
    RejectedEntry {
        source: Source {
            file: file.into(),
            line,
        },
        service: service.into(),
        protocol: "tcp".into(),
        reason: reason.into(),
        entry: None,
    }
}

pub fn config(files: &[&str], entries: Vec<Entry>, rejected: Vec<RejectedEntry>) -> Config {
    Config {
        files: files
            .iter()
            .map(|f| ConfigFile {
                path: f.into(),
                mtime: None,
            })
            .collect(),
        entries,
        rejected,
        diagnostics: vec![],
        names: inetd_protocol::IdNames::default(),
        inputs: None,
    }
}

/// A root core as it starts by default: nobody and its groups; the
/// controller is uid 101, gid 101. It allows no unix listener anywhere.
pub fn root_core() -> Policy {
    Policy {
        root: true,
        controller_uid: 101,
        controller_gid: 101,
        users: vec![inetd_protocol::AllowedUser {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
        }],
        unix_dirs: UnixDirs::Only(Vec::new()),
        ..Policy::default()
    }
}

pub fn listening(spec: &ListenerSpec, accepted: u64) -> ListenerStatus {
    ListenerStatus {
        spec: spec.clone(),
        state: ListenerState::Listening,
        counters: Counters {
            accepted,
            ..Counters::default()
        },
        last_error: None,
    }
}

pub fn status(generation: u64, listeners: Vec<ListenerStatus>) -> StatusReport {
    StatusReport {
        generation,
        software_version: "0.1.0".into(),
        pid: 10,
        uid: 0,
        started_at: 0,
        policy: root_core(),
        listeners,
        children: vec![],
    }
}

/// A row of `inetctl list` for an `echo` builtin on 127.0.0.1:7 as
/// /etc/inetd.conf:12 gives it, listening, with every count 0; tests set
/// what they look at with `..echo_row()`.
pub fn echo_row() -> inetd_protocol::control::ServiceRow {
    use inetd_protocol::control::{Refused, RowState, ServiceRow, SourceRef};
    ServiceRow {
        source: SourceRef {
            file: "/etc/inetd.conf".into(),
            line: 12,
        },
        service: "echo".into(),
        address: Some("127.0.0.1".into()),
        port: Some(7),
        path: None,
        socket_type: "stream".into(),
        protocol: "tcp4".into(),
        wait: false,
        user: "nobody".into(),
        group: "nogroup".into(),
        server: "internal".into(),
        argv: vec!["echo".into()],
        state: RowState::Listening,
        reason: None,
        until: None,
        children: 0,
        accepted: 0,
        exec_failures: 0,
        refused: Refused::default(),
        at_max_children: 0,
        limits: None,
        last_error: None,
        warnings: vec![],
    }
}
