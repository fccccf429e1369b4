//! Roundtrips for every message, the bounds, and the frozen encoding.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use inetd_protocol::codec::{check_header, encode_payload, read_payload, FrameBuf};
use inetd_protocol::*;

fn spec(port: u16) -> ListenerSpec {
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

fn roundtrip<T>(msg: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let frame = encode_frame(msg).unwrap();
    let mut buf = FrameBuf::new();
    buf.extend(&frame);
    let payload = buf.next_payload().unwrap().unwrap();
    assert_eq!(buf.pending(), 0);
    let back: T = decode_payload(&payload).unwrap();
    assert_eq!(&back, msg);
    let back2: T = read_message(&mut &frame[..]).unwrap();
    assert_eq!(&back2, msg);
}

#[test]
fn every_request_roundtrips() {
    roundtrip(&CoreRequest::Hello {
        version: PROTOCOL_VERSION,
    });
    roundtrip(&CoreRequest::Status);
    let mut v6 = spec(8007);
    v6.bind = Bind::Inet {
        addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
        port: 8007,
        mode: IpMode::V6Only,
    };
    v6.action = Action::Builtin(Builtin::Chargen);
    v6.acl = Some(Acl {
        rules: vec![AclRule {
            addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
            prefix: 128,
            allow: true,
        }],
        default_allow: false,
    });
    let mut dual = spec(8008);
    dual.bind = Bind::Inet {
        addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        port: 8008,
        mode: IpMode::Dual,
    };
    let mut unix = spec(0);
    unix.bind = Bind::Unix {
        path: "/run/x.sock".into(),
    };
    unix.socket_type = SocketType::Seqpacket;
    let mut dgram = spec(8009);
    dgram.socket_type = SocketType::Dgram;
    dgram.wait = true;
    for b in Builtin::ALL {
        let mut s = spec(9000);
        s.action = Action::Builtin(b);
        roundtrip(&CoreRequest::Apply { listeners: vec![s] });
    }
    roundtrip(&CoreRequest::Apply {
        listeners: vec![spec(8000), v6, dual, unix, dgram],
    });
}

#[test]
fn every_response_roundtrips() {
    let policy = Policy {
        root: true,
        allow_root_services: false,
        allow_setuid_services: true,
    };
    roundtrip(&CoreResponse::Hello(HelloReply {
        version: PROTOCOL_VERSION,
        software_version: "0.1.0".into(),
        pid: 42,
        uid: 0,
        policy,
    }));
    roundtrip(&CoreResponse::Error {
        reason: "no".into(),
    });
    roundtrip(&CoreResponse::Applied(ApplyReport {
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
    }));
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
    roundtrip(&CoreResponse::Status(StatusReport {
        generation: 9,
        software_version: "0.1.0".into(),
        pid: 1,
        uid: 0,
        started_at: 7,
        policy,
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
        children: vec![ChildInfo {
            pid: 100,
            listener: Some(0),
            peer: Some("127.0.0.1:5000".into()),
            uid: 65534,
            started_at: 8,
        }],
    }));
}

/// Frozen encoding of version 2. If this fails, the wire format changed:
/// bump PROTOCOL_VERSION and update these bytes together.
///
/// Version 2: `Limits::default()` is 256 children and no rate limit (the
/// bytes after the credentials), the list row carries `at_max_children`
/// and `limits`, and `Refused` lost `max_children`.
#[test]
fn golden_bytes() {
    assert_eq!(PROTOCOL_VERSION, 2);
    let hello = encode_frame(&CoreRequest::Hello { version: 2 }).unwrap();
    assert_eq!(hello, [0, 0, 0, 8, 0, 0, 0, 0, 2, 0, 0, 0]);
    let status = encode_frame(&CoreRequest::Status).unwrap();
    assert_eq!(status, [0, 0, 0, 4, 2, 0, 0, 0]);
    let apply = encode_payload(&CoreRequest::Apply {
        listeners: vec![spec(7)],
    })
    .unwrap();
    let hex: String = apply.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, GOLDEN_APPLY);
}

const GOLDEN_APPLY: &str = "01000000010000000000000000000000000000007f00000107000000000000000000000000000008000000000000002f62696e2f63617401000000000000000300000000000000636174feff0000feff00000100000000000000feff00000000000000010000000000000000000020800016000000000000006563686f202f6574632f696e6574642e636f6e663a33";

#[test]
fn oversized_and_empty_headers_are_refused_before_allocation() {
    assert_eq!(
        check_header((MAX_FRAME + 1).to_be_bytes()),
        Err(ProtocolError::FrameTooLarge { len: MAX_FRAME + 1 })
    );
    assert_eq!(
        check_header(u32::MAX.to_be_bytes()),
        Err(ProtocolError::FrameTooLarge { len: u32::MAX })
    );
    assert_eq!(check_header([0; 4]), Err(ProtocolError::EmptyFrame));
    assert_eq!(
        check_header(MAX_FRAME.to_be_bytes()),
        Ok(MAX_FRAME as usize)
    );
    let mut buf = FrameBuf::new();
    buf.extend(&u32::MAX.to_be_bytes());
    assert!(buf.wanted().is_err());
    assert!(buf.next_payload().is_err());
}

#[test]
fn truncated_frames_are_errors() {
    let frame = encode_frame(&CoreRequest::Status).unwrap();
    let cut = &frame[..frame.len() - 1];
    assert!(matches!(
        read_payload(&mut &cut[..]),
        Err(ProtocolError::Truncated { .. })
    ));
    assert!(matches!(
        read_payload(&mut &frame[..2]),
        Err(ProtocolError::Truncated { .. })
    ));
    assert_eq!(read_payload(&mut &[][..]), Ok(None));
    let mut buf = FrameBuf::new();
    buf.extend(cut);
    assert_eq!(buf.next_payload(), Ok(None));
    assert_eq!(buf.wanted(), Ok(1));
}

#[test]
fn unknown_tags_garbage_and_trailing_bytes_are_errors() {
    assert!(matches!(
        decode_payload::<CoreRequest>(&[9, 0, 0, 0]),
        Err(ProtocolError::Decode(_))
    ));
    assert!(decode_payload::<CoreRequest>(&[0xff; 3]).is_err());
    assert_eq!(
        decode_payload::<CoreRequest>(&[2, 0, 0, 0, 0]),
        Err(ProtocolError::TrailingBytes)
    );
}

#[test]
fn a_huge_declared_length_inside_a_small_frame_does_not_allocate() {
    // Apply (tag 1) claiming 2^62 listeners, and a Hello-sized frame whose
    // string claims 2^62 bytes: both must fail fast, not abort.
    let mut p = vec![1, 0, 0, 0];
    p.extend_from_slice(&(1u64 << 62).to_le_bytes());
    assert!(decode_payload::<CoreRequest>(&p).is_err());
    let mut p = vec![3, 0, 0, 0];
    p.extend_from_slice(&(1u64 << 62).to_le_bytes());
    assert!(decode_payload::<CoreResponse>(&p).is_err());
}

#[test]
fn frames_split_anywhere_reassemble() {
    let a = encode_frame(&CoreRequest::Hello { version: 1 }).unwrap();
    let b = encode_frame(&CoreRequest::Status).unwrap();
    let all: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
    for split in 0..all.len() {
        let mut buf = FrameBuf::new();
        let mut out = Vec::new();
        for chunk in [&all[..split], &all[split..]] {
            buf.extend(chunk);
            while let Some(p) = buf.next_payload().unwrap() {
                out.push(decode_payload::<CoreRequest>(&p).unwrap());
            }
        }
        assert_eq!(
            out,
            vec![CoreRequest::Hello { version: 1 }, CoreRequest::Status]
        );
    }
}

#[test]
fn check_apply_refuses_duplicates_and_too_many() {
    assert_eq!(check_apply(&[spec(1), spec(2)]), Ok(()));
    assert_eq!(
        check_apply(&[spec(1), spec(2), spec(1)]),
        Err(ProtocolError::DuplicateBindKey {
            first: 0,
            second: 2
        })
    );
    let many: Vec<_> = (0..=MAX_LISTENERS).map(|i| spec(i as u16)).collect();
    assert!(matches!(
        check_apply(&many),
        Err(ProtocolError::TooManyListeners { .. })
    ));
    // 10,000 distinct listeners are within bounds and fit in a frame.
    let ok: Vec<_> = (0..10_000u16).map(|i| spec(10_000 + i)).collect();
    assert_eq!(check_apply(&ok), Ok(()));
    assert!(encode_frame(&CoreRequest::Apply { listeners: ok }).is_ok());
}
