//! Roundtrips for every message, the bounds, and the frozen encoding.

mod samples;

use inetd_protocol::codec::{check_header, encode_payload, read_payload, FrameBuf};
use inetd_protocol::*;
use samples::spec;

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
    for (_, req) in samples::core_requests() {
        roundtrip(&req);
    }
}

#[test]
fn every_response_roundtrips() {
    for (_, resp) in samples::core_responses() {
        roundtrip(&resp);
    }
}

/// Frozen encoding of version 3. If this fails, the wire format changed:
/// bump PROTOCOL_VERSION and update these bytes together.
///
/// Version 2: the Hello reply and the status carry the core's policy
/// (allowed identities, root pins, unix directories); `Limits::default()`
/// is 256 children and no rate limit (the bytes after the credentials);
/// `Counters.refused_max_children` became `at_max_children`; the list row
/// carries `at_max_children` and `limits`, and `Refused` lost
/// `max_children`.
///
/// Version 3 (the control link only; the core link's bytes are as in 2):
/// the `connections` request and reply, the reload reply's `rejected` apart
/// from `failed`, and the controller's configuration paths and reload
/// counts in the status.
#[test]
fn golden_bytes() {
    assert_eq!(PROTOCOL_VERSION, 3);
    let hello = encode_frame(&CoreRequest::Hello {
        version: PROTOCOL_VERSION,
    })
    .unwrap();
    assert_eq!(hello, [0, 0, 0, 8, 0, 0, 0, 0, 3, 0, 0, 0]);
    let status = encode_frame(&CoreRequest::Status).unwrap();
    assert_eq!(status, [0, 0, 0, 4, 2, 0, 0, 0]);
    let apply = encode_payload(&CoreRequest::Apply {
        listeners: vec![spec(7)],
    })
    .unwrap();
    let hex: String = apply.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, GOLDEN_APPLY);
}

/// Every message in `samples` (core and control, requests and responses,
/// each variant) against its frozen payload in `golden-v3.txt`. If this
/// fails, the wire format changed: bump PROTOCOL_VERSION and write a new
/// file together (the failure prints the lines).
#[test]
fn golden_bytes_of_every_message() {
    assert_eq!(PROTOCOL_VERSION, 3);
    fn line<T: serde::Serialize>(kind: &str, name: &str, msg: &T) -> String {
        let bytes = encode_payload(msg).unwrap();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("{kind}/{name} {hex}")
    }
    let mut got = Vec::new();
    got.extend(
        samples::core_requests()
            .iter()
            .map(|(n, m)| line("core-request", n, m)),
    );
    got.extend(
        samples::core_responses()
            .iter()
            .map(|(n, m)| line("core-response", n, m)),
    );
    got.extend(
        samples::ctl_requests()
            .iter()
            .map(|(n, m)| line("ctl-request", n, m)),
    );
    got.extend(
        samples::ctl_responses()
            .iter()
            .map(|(n, m)| line("ctl-response", n, m)),
    );
    let want: Vec<&str> = include_str!("golden-v3.txt")
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let differ: Vec<&String> = got.iter().filter(|g| !want.contains(&g.as_str())).collect();
    assert!(
        differ.is_empty() && got.len() == want.len(),
        "{} of {} messages differ from golden-v3.txt ({} frozen); now:\n{}",
        differ.len(),
        got.len(),
        want.len(),
        got.join("\n")
    );
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

#[test]
fn check_apply_refuses_two_unix_listeners_on_one_path_whatever_their_types() {
    let unix = |path: &str, t: SocketType| {
        let mut s = spec(1);
        s.bind = Bind::Unix { path: path.into() };
        s.socket_type = t;
        s
    };
    let (a, b) = ("/run/inetd/sockets/a", "/run/inetd/sockets/b");
    let distinct = [unix(a, SocketType::Stream), unix(b, SocketType::Stream)];
    assert_eq!(check_apply(&distinct), Ok(()));
    for t in [SocketType::Dgram, SocketType::Seqpacket] {
        assert_eq!(
            check_apply(&[unix(a, SocketType::Stream), spec(2), unix(a, t)]),
            Err(ProtocolError::SharedUnixPath {
                first: 0,
                second: 2
            })
        );
    }
    let e = ProtocolError::SharedUnixPath {
        first: 0,
        second: 2,
    };
    assert!(e.to_string().contains("one path"));
}
