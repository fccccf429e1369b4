//! The core's whole input path, as the core runs it on a controller's
//! bytes: frames cut from a stream by `FrameBuf` (fed in the chunks the
//! core's reads give), each payload decoded as a `CoreRequest`, an `Apply`
//! checked as a whole (`check_apply`) and then listener by listener with
//! the core's own `validate` under a root core's and a user's policy, and
//! the answer framed as the core frames it (`reply::frame`). Nothing may
//! panic; every answer must fit in one frame and decode again; what
//! validation accepts must keep the promises the child path relies on.
//!
//! The first input byte picks the policy (bit 0) and the read size (the
//! other bits); the rest is the stream.
#![no_main]
#![allow(dead_code)]

use inetd_protocol::{
    check_apply, decode_payload, verdict, Action, ApplyReport, Bind, CoreRequest, CoreResponse,
    FrameBuf, IdNames, Outcome, Policy, MAX_FRAME, MAX_REQUEST,
};
use libfuzzer_sys::fuzz_target;

// The core's own files, compiled here as they are in the core: both use
// only std and the protocol crate.
#[path = "../../core/src/validate.rs"]
mod validate;
#[path = "../../core/src/reply.rs"]
mod reply;
#[path = "../../protocol/tests/samples/mod.rs"]
mod samples;

fn answer_fits(resp: CoreResponse) {
    let frame = reply::frame(resp);
    assert!(frame.len() >= 4 && frame.len() <= 4 + MAX_FRAME as usize);
    let _: CoreResponse = decode_payload(&frame[4..]).expect("an answer decodes");
}

fn check_accepted(spec: &inetd_protocol::ListenerSpec, p: &Policy) {
    // The ids were allowed by the same rule the controller shows.
    assert!(verdict(p, &spec.creds, &spec.action, &IdNames::default()).is_ok());
    if let Action::Exec { path, argv } = &spec.action {
        assert!(path.starts_with('/') && !path.contains('\0'));
        assert!(!argv.is_empty() && argv.iter().all(|a| !a.contains('\0')));
    }
    if let Bind::Unix { path } = &spec.bind {
        assert!(path.starts_with('/') && !path.contains('\0'));
        assert!(p.unix_dirs.check(path).is_ok());
    }
}

fn apply(listeners: Vec<inetd_protocol::ListenerSpec>, p: &Policy) {
    if let Err(e) = check_apply(&listeners) {
        answer_fits(CoreResponse::Error {
            reason: e.to_string(),
        });
        return;
    }
    let outcomes = listeners
        .iter()
        .map(|s| match validate::validate(s, p) {
            Ok(_) => {
                check_accepted(s, p);
                Outcome::Added
            }
            Err(reason) => Outcome::Rejected { reason },
        })
        .collect();
    answer_fits(CoreResponse::Applied(ApplyReport {
        generation: 1,
        outcomes,
        removed: vec![],
    }));
}

fuzz_target!(|bytes: &[u8]| {
    let Some((&first, mut stream)) = bytes.split_first() else {
        return;
    };
    let policy = if first & 1 == 0 {
        samples::policy()
    } else {
        samples::user_policy()
    };
    let chunk = usize::from(first >> 1) + 1;
    let mut buf = FrameBuf::new();
    loop {
        // As the core reads: never past the current frame.
        let want = match buf.wanted() {
            Ok(w) => w,
            Err(_) => return,
        };
        if let Some(len) = buf.declared() {
            if len > MAX_REQUEST as usize {
                return;
            }
        }
        let n = want.min(chunk).min(stream.len());
        if n == 0 {
            return;
        }
        buf.extend(&stream[..n]);
        stream = &stream[n..];
        let payload = match buf.next_payload() {
            Ok(None) => continue,
            Ok(Some(p)) => p,
            Err(_) => return,
        };
        assert!(payload.len() <= MAX_REQUEST as usize);
        match decode_payload::<CoreRequest>(&payload) {
            Err(_) => return,
            Ok(CoreRequest::Apply { listeners }) => apply(listeners, &policy),
            Ok(_) => {}
        }
    }
});
