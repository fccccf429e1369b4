//! Roundtrips of the control-link messages, the version peek, and the
//! error kinds' exit codes.

use inetd_protocol::control::*;
use inetd_protocol::{decode_payload, encode_frame, read_message, ProtocolError, PROTOCOL_VERSION};

fn roundtrip<T>(msg: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let frame = encode_frame(msg).unwrap();
    let back: T = decode_payload(&frame[4..]).unwrap();
    assert_eq!(&back, msg);
    let back2: T = read_message(&mut &frame[..]).unwrap();
    assert_eq!(&back2, msg);
}

fn row(state: RowState) -> ServiceRow {
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
        limits: Some(RowLimits {
            max_children: Some(256),
            per_minute: None,
            per_source_per_minute: Some(10),
            per_source_children: None,
        }),
        last_error: Some("exec failed".into()),
        warnings: vec!["w".into()],
    }
}

fn item() -> ReloadItem {
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

#[test]
fn every_request_roundtrips() {
    for c in [
        CtlCommand::List,
        CtlCommand::Status,
        CtlCommand::Reload { partial: false },
        CtlCommand::Reload { partial: true },
    ] {
        let req = CtlRequest::new(c);
        assert_eq!(req.version, PROTOCOL_VERSION);
        roundtrip(&req);
    }
}

#[test]
fn every_response_roundtrips() {
    roundtrip(&CtlResponse::List(ListReply {
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
    }));
    let controller = ControllerInfo {
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
    };
    roundtrip(&CtlResponse::Status(StatusReply {
        controller: controller.clone(),
        core: Some(CoreInfo {
            version: "0.1.0".into(),
            pid: 1,
            uid: 0,
            uptime_s: 100,
            generation: 7,
            allow_root_services: false,
            allow_setuid_services: true,
            listeners: 10,
            children: 2,
        }),
    }));
    roundtrip(&CtlResponse::Status(StatusReply {
        controller,
        core: None,
    }));
    for result in [
        ReloadResult::Ok,
        ReloadResult::Rejected,
        ReloadResult::Partial,
        ReloadResult::Failed,
    ] {
        let mut failed = item();
        failed.reason = Some("bind: address in use".into());
        roundtrip(&CtlResponse::Reload(ReloadReply {
            result,
            generation: 3,
            added: vec![item()],
            changed: vec![item(), item()],
            removed: vec![],
            failed: vec![failed],
            unchanged: 4,
            diagnostics: vec!["a.conf:2: warning: y".into()],
        }));
    }
    for kind in [
        CtlErrorKind::Failed,
        CtlErrorKind::PermissionDenied,
        CtlErrorKind::CoreUnreachable,
        CtlErrorKind::VersionMismatch,
        CtlErrorKind::Malformed,
    ] {
        roundtrip(&CtlResponse::Error {
            kind,
            message: "no".into(),
        });
    }
}

#[test]
fn version_is_readable_without_decoding_the_rest() {
    let frame = encode_frame(&CtlRequest::new(CtlCommand::Status)).unwrap();
    assert_eq!(request_version(&frame[4..]), Some(PROTOCOL_VERSION));
    // A future request whose body this version cannot decode.
    let mut other = 99u32.to_le_bytes().to_vec();
    other.extend_from_slice(&[0xff; 9]);
    assert_eq!(request_version(&other), Some(99));
    assert!(decode_payload::<CtlRequest>(&other).is_err());
    assert_eq!(request_version(&[1, 0]), None);
}

#[test]
fn unknown_command_and_trailing_bytes_are_errors() {
    let mut payload = PROTOCOL_VERSION.to_le_bytes().to_vec();
    payload.extend_from_slice(&77u32.to_le_bytes());
    assert!(matches!(
        decode_payload::<CtlRequest>(&payload),
        Err(ProtocolError::Decode(_))
    ));
    let frame = encode_frame(&CtlRequest::new(CtlCommand::List)).unwrap();
    let mut long = frame[4..].to_vec();
    long.push(0);
    assert_eq!(
        decode_payload::<CtlRequest>(&long),
        Err(ProtocolError::TrailingBytes)
    );
}

#[test]
fn error_kinds_map_to_exit_codes() {
    assert_eq!(CtlErrorKind::PermissionDenied.exit_code(), 4);
    assert_eq!(CtlErrorKind::CoreUnreachable.exit_code(), 3);
    assert_eq!(CtlErrorKind::Failed.exit_code(), 1);
    assert_eq!(CtlErrorKind::VersionMismatch.exit_code(), 1);
}

#[test]
fn names_are_the_json_words() {
    let words: Vec<&str> = [
        RowState::Listening,
        RowState::Waiting,
        RowState::Paused,
        RowState::Failed,
        RowState::Rejected,
    ]
    .iter()
    .map(|s| s.as_str())
    .collect();
    assert_eq!(
        words,
        ["listening", "waiting", "paused", "failed", "rejected"]
    );
    assert_eq!(ReloadResult::Partial.as_str(), "partial");
}
