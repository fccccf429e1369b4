//! One message of every kind, every variant and sub-variant, shared by the
//! roundtrip, golden-bytes and fuzz tests: a variant added to the protocol
//! belongs here, and then all three cover it.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use inetd_protocol::control::*;
use inetd_protocol::*;

/// A plain listener: a TCP exec service on 127.0.0.1:`port`.
pub fn spec(port: u16) -> ListenerSpec {
    ListenerSpec {
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
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
        },
        limits: Limits::default(),
        acl: None,
        label: "echo /etc/inetd.conf:3".into(),
    }
}

/// Listeners covering every bind, IP mode, socket type, action, builtin, an
/// access list and limits.
pub fn specs() -> Vec<ListenerSpec> {
    let mut v6 = spec(8007);
    v6.bind = Bind::Inet {
        addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
        port: 8007,
        mode: IpMode::V6Only,
    };
    v6.action = Action::Builtin(Builtin::Chargen);
    v6.acl = Some(Acl {
        rules: vec![
            AclRule {
                addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
                prefix: 128,
                allow: true,
            },
            AclRule {
                addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 0)),
                prefix: 24,
                allow: false,
            },
        ],
        default_allow: false,
    });
    let mut dual = spec(8008);
    dual.bind = Bind::Inet {
        addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        port: 8008,
        mode: IpMode::Dual,
    };
    dual.limits = Limits {
        max_per_minute: 40,
        max_children: 20,
        max_per_source_per_minute: 5,
        max_children_per_source: 2,
        source_prefix_v4: 24,
        source_prefix_v6: 64,
    };
    let mut unix = spec(0);
    unix.bind = Bind::Unix {
        path: "/run/x.sock".into(),
    };
    unix.socket_type = SocketType::Seqpacket;
    let mut dgram = spec(8009);
    dgram.socket_type = SocketType::Dgram;
    dgram.wait = true;
    let mut all = vec![spec(8000), v6, dual, unix, dgram];
    for (i, b) in Builtin::ALL.into_iter().enumerate() {
        let mut s = spec(9000 + i as u16);
        s.action = Action::Builtin(b);
        all.push(s);
    }
    all
}

/// Every core request, by name.
pub fn core_requests() -> Vec<(&'static str, CoreRequest)> {
    vec![
        (
            "hello",
            CoreRequest::Hello {
                version: PROTOCOL_VERSION,
            },
        ),
        ("status", CoreRequest::Status),
        (
            "apply-one",
            CoreRequest::Apply {
                listeners: vec![spec(7)],
            },
        ),
        (
            "apply-every-kind",
            CoreRequest::Apply { listeners: specs() },
        ),
        ("apply-empty", CoreRequest::Apply { listeners: vec![] }),
    ]
}

pub fn policy() -> Policy {
    Policy {
        root: true,
        allow_root_services: false,
        allow_setuid_services: true,
        controller_uid: 999,
        controller_gid: 995,
        users: vec![AllowedUser {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
        }],
        groups: vec![AllowedGroup {
            name: "shadow".into(),
            gid: 42,
        }],
        root_commands: vec![RootCommand {
            path: "/usr/bin/id".into(),
            argv: vec!["id".into(), "-u".into()],
        }],
        unix_dirs: UnixDirs::Only(vec!["/run/inetd/sockets".into(), "/srv/s".into()]),
    }
}

/// A normal user's core, given no `--unix-dir`: it runs everything as
/// itself.
pub fn user_policy() -> Policy {
    Policy {
        root: false,
        allow_root_services: false,
        allow_setuid_services: false,
        controller_uid: 7,
        controller_gid: 7,
        users: vec![AllowedUser {
            name: "alice".into(),
            uid: 7,
            gid: 7,
            groups: vec![7, 24],
        }],
        groups: vec![],
        root_commands: vec![],
        unix_dirs: UnixDirs::AnyBut("/run/user/7/inetd".into()),
    }
}

/// Every core response and every outcome and listener state in them, by
/// name.
pub fn core_responses() -> Vec<(&'static str, CoreResponse)> {
    let states = [
        ListenerState::Listening,
        ListenerState::Waiting,
        ListenerState::Paused {
            reason: "rate".into(),
            until: 5,
        },
        ListenerState::Failed {
            reason: "in use".into(),
            retry_at: 6,
        },
    ];
    vec![
        (
            "hello",
            CoreResponse::Hello(HelloReply {
                version: PROTOCOL_VERSION,
                software_version: "0.1.0".into(),
                pid: 42,
                uid: 0,
                policy: policy(),
            }),
        ),
        (
            "error",
            CoreResponse::Error {
                reason: "no".into(),
            },
        ),
        (
            "applied",
            CoreResponse::Applied(ApplyReport {
                generation: 3,
                outcomes: vec![
                    Outcome::Added,
                    Outcome::Changed,
                    Outcome::Unchanged,
                    Outcome::Rejected {
                        reason: "uid 0".into(),
                    },
                    Outcome::Failed {
                        reason: "address in use".into(),
                        retry_at: 1_800_000_000,
                    },
                ],
                removed: vec![Removed {
                    key: spec(1).key(),
                    label: "x".into(),
                }],
            }),
        ),
        (
            "status",
            CoreResponse::Status(StatusReport {
                generation: 9,
                software_version: "0.1.0".into(),
                pid: 1,
                uid: 0,
                started_at: 7,
                policy: user_policy(),
                listeners: states
                    .iter()
                    .map(|s| ListenerStatus {
                        spec: spec(7),
                        state: s.clone(),
                        counters: Counters {
                            accepted: 1,
                            exec_failures: 2,
                            refused_acl: 3,
                            refused_rate: 4,
                            refused_per_source: 5,
                            at_max_children: 6,
                            children: 7,
                        },
                        last_error: Some("exec failed".into()),
                    })
                    .collect(),
                children: vec![
                    ChildInfo {
                        pid: 100,
                        listener: Some(0),
                        peer: Some("127.0.0.1:5000".into()),
                        uid: 65534,
                        started_at: 8,
                    },
                    ChildInfo {
                        pid: 101,
                        listener: None,
                        peer: None,
                        uid: 999,
                        started_at: 9,
                    },
                ],
            }),
        ),
    ]
}

/// Every control request, by name.
pub fn ctl_requests() -> Vec<(&'static str, CtlRequest)> {
    vec![
        ("list", CtlRequest::new(CtlCommand::List)),
        ("status", CtlRequest::new(CtlCommand::Status)),
        (
            "reload",
            CtlRequest::new(CtlCommand::Reload { partial: false }),
        ),
        (
            "reload-partial",
            CtlRequest::new(CtlCommand::Reload { partial: true }),
        ),
        ("connections", CtlRequest::new(CtlCommand::Connections)),
    ]
}

/// A row in `state`; a rejected one did not parse, so it has no limits.
pub fn row(state: RowState) -> ServiceRow {
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
        state,
        reason: Some("address in use".into()),
        until: Some(1_700_000_000),
        children: 3,
        accepted: 12,
        exec_failures: 1,
        refused: Refused {
            acl: 1,
            rate: 2,
            per_source: 3,
        },
        at_max_children: 4,
        limits: (state != RowState::Rejected).then_some(RowLimits {
            max_children: Some(256),
            per_minute: None,
            per_source_per_minute: Some(10),
            per_source_children: None,
        }),
        last_error: Some("exec failed".into()),
        warnings: vec!["w".into()],
    }
}

pub fn item() -> ReloadItem {
    ReloadItem {
        source: SourceRef {
            file: "a.conf".into(),
            line: 1,
        },
        service: "x".into(),
        protocol: "unix".into(),
        bind: "/run/x.sock".into(),
        reason: None,
    }
}

fn controller_info() -> ControllerInfo {
    ControllerInfo {
        version: "0.1.0".into(),
        pid: 42,
        uptime_s: 5,
        admin_group: "inetd-admin".into(),
        config: vec![
            ConfigFileInfo {
                path: "/etc/inetd.conf".into(),
                mtime: Some(1),
            },
            ConfigFileInfo {
                path: "/etc/inetd.d/x.conf".into(),
                mtime: None,
            },
        ],
        last_reload: Some(LastReload {
            at: 9,
            result: ReloadResult::Partial,
            errors: vec!["a.conf:1: error: x".into()],
        }),
        config_paths: vec!["/etc/inetd.conf".into(), "/etc/inetd.d".into()],
        reloads: ReloadCounts {
            ok: 1,
            rejected: 2,
            partial: 3,
            failed: 4,
        },
    }
}

/// Every control response, every row state, reload result and error kind,
/// by name.
pub fn ctl_responses() -> Vec<(&'static str, CtlResponse)> {
    let mut v = vec![
        (
            "list",
            CtlResponse::List(ListReply {
                generation: 7,
                services: [
                    RowState::Listening,
                    RowState::Waiting,
                    RowState::Paused,
                    RowState::Failed,
                    RowState::Rejected,
                ]
                .into_iter()
                .map(row)
                .collect(),
            }),
        ),
        (
            "status",
            CtlResponse::Status(StatusReply {
                controller: controller_info(),
                core: Some(CoreInfo {
                    version: "0.1.0".into(),
                    pid: 1,
                    uid: 0,
                    uptime_s: 100,
                    generation: 7,
                    policy: policy(),
                    listeners: 10,
                    children: 2,
                }),
            }),
        ),
        (
            "status-core-down",
            CtlResponse::Status(StatusReply {
                controller: ControllerInfo {
                    last_reload: None,
                    ..controller_info()
                },
                core: None,
            }),
        ),
    ];
    for (name, result) in [
        ("reload-ok", ReloadResult::Ok),
        ("reload-rejected", ReloadResult::Rejected),
        ("reload-partial", ReloadResult::Partial),
        ("reload-failed", ReloadResult::Failed),
    ] {
        let mut failed = item();
        failed.reason = Some("bind: address in use".into());
        v.push((
            name,
            CtlResponse::Reload(ReloadReply {
                result,
                generation: 3,
                added: vec![item()],
                changed: vec![item(), item()],
                removed: vec![],
                rejected: vec![item(), item()],
                failed: vec![failed],
                unchanged: 4,
                diagnostics: vec!["a.conf:2: warning: y".into()],
            }),
        ));
    }
    let conn = |pid: u32, wait: bool, client: Client| ConnectionRow {
        pid,
        service: "echo".into(),
        protocol: "tcp4".into(),
        source: SourceRef {
            file: "/etc/inetd.conf".into(),
            line: 12,
        },
        wait,
        client,
        uid: 65534,
        user: (pid != 3).then(|| "nobody".into()),
        started_at: 1_700_000_000,
    };
    v.push((
        "connections",
        CtlResponse::Connections(ConnectionsReply {
            generation: 7,
            now: 1_700_000_005,
            connections: vec![
                conn(
                    1,
                    false,
                    Client::Inet {
                        address: "127.0.0.1".into(),
                        port: 5000,
                    },
                ),
                conn(
                    2,
                    false,
                    Client::Unix {
                        pid: 9,
                        uid: 1000,
                        gid: 100,
                    },
                ),
                conn(3, true, Client::None),
            ],
        }),
    ));
    for (name, kind) in [
        ("error-failed", CtlErrorKind::Failed),
        ("error-permission-denied", CtlErrorKind::PermissionDenied),
        ("error-core-unreachable", CtlErrorKind::CoreUnreachable),
        ("error-version-mismatch", CtlErrorKind::VersionMismatch),
        ("error-malformed", CtlErrorKind::Malformed),
    ] {
        v.push((
            name,
            CtlResponse::Error {
                kind,
                message: "no".into(),
            },
        ));
    }
    v
}
