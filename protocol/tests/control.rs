//! Roundtrips of the control-link messages, the version peek, and the
//! error kinds' exit codes.

mod samples;

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

#[test]
fn every_request_roundtrips() {
    for (_, req) in samples::ctl_requests() {
        assert_eq!(req.version, PROTOCOL_VERSION);
        roundtrip(&req);
    }
}

#[test]
fn every_response_roundtrips() {
    for (_, resp) in samples::ctl_responses() {
        roundtrip(&resp);
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
