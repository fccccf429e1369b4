//! Every answer fits in one frame. Requests are at most
//! [`MAX_REQUEST`](inetd_protocol::MAX_REQUEST), half a frame, so the specs
//! an answer repeats leave room for the rest; what is not bounded by the
//! request (the reasons, the last errors, the live children) is cut when
//! the whole would not fit: first every such text to [`SHORT_TEXT`] bytes,
//! then the tail of the list of children (each listener's
//! `counters.children` stays exact). A restarted controller can therefore
//! always read what the core runs.
#![forbid(unsafe_code)]

use inetd_protocol::{encode_frame, CoreResponse, ListenerState, Outcome, ProtocolError};

/// Length, in bytes, a text of an answer is cut to when the whole answer
/// would not fit in a frame.
pub const SHORT_TEXT: usize = 200;

/// `resp` as a frame of at most `MAX_FRAME` bytes, cut as the module says
/// if needed; an error answer if even that does not fit.
pub fn frame(mut resp: CoreResponse) -> Vec<u8> {
    let first = match encode_frame(&resp) {
        Ok(f) => return f,
        Err(e) => e,
    };
    shorten(&mut resp);
    if let Ok(f) = encode_frame(&resp) {
        return f;
    }
    if let CoreResponse::Status(mut s) = resp {
        while !s.children.is_empty() {
            let keep = s.children.len() / 2;
            s.children.truncate(keep);
            let r = CoreResponse::Status(s);
            if let Ok(f) = encode_frame(&r) {
                return f;
            }
            let CoreResponse::Status(back) = r else {
                unreachable!()
            };
            s = back;
        }
    }
    too_large(&first)
}

fn too_large(e: &ProtocolError) -> Vec<u8> {
    encode_frame(&CoreResponse::Error {
        reason: format!("the answer does not fit in one frame: {e}"),
    })
    .unwrap_or_default()
}

/// Cuts every text of `resp` that the request did not bound.
fn shorten(resp: &mut CoreResponse) {
    match resp {
        CoreResponse::Applied(r) => {
            for o in &mut r.outcomes {
                if let Outcome::Rejected { reason } | Outcome::Failed { reason, .. } = o {
                    cut(reason);
                }
            }
            for rm in &mut r.removed {
                cut(&mut rm.label);
            }
        }
        CoreResponse::Status(s) => {
            for l in &mut s.listeners {
                if let ListenerState::Paused { reason, .. } | ListenerState::Failed { reason, .. } =
                    &mut l.state
                {
                    cut(reason);
                }
                if let Some(e) = &mut l.last_error {
                    cut(e);
                }
            }
            for c in &mut s.children {
                if let Some(p) = &mut c.peer {
                    cut(p);
                }
            }
        }
        CoreResponse::Error { reason } => cut(reason),
        CoreResponse::Hello(_) => {}
    }
}

/// Cuts `s` to [`SHORT_TEXT`] bytes at a character boundary, marking the cut.
fn cut(s: &mut String) {
    if s.len() <= SHORT_TEXT {
        return;
    }
    let mut at = SHORT_TEXT - 3;
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    s.truncate(at);
    s.push_str("...");
}

#[cfg(test)]
mod tests {
    use super::*;
    use inetd_protocol::{
        decode_payload, ApplyReport, ChildInfo, Counters, ListenerSpec, ListenerStatus, Policy,
        Removed, StatusReport, MAX_FRAME, MAX_LISTENERS, MAX_REASON,
    };

    fn decode(frame: &[u8]) -> CoreResponse {
        assert!(
            frame.len() <= 4 + MAX_FRAME as usize,
            "{} bytes",
            frame.len()
        );
        decode_payload(&frame[4..]).unwrap()
    }

    fn spec() -> ListenerSpec {
        crate::validate::tests::spec(7)
    }

    #[test]
    fn a_small_answer_is_left_as_it_is() {
        let r = CoreResponse::Error {
            reason: "é".repeat(MAX_REASON / 2),
        };
        assert_eq!(decode(&frame(r.clone())), r);
    }

    #[test]
    fn a_status_of_the_most_listeners_with_the_longest_texts_fits() {
        let long = "x".repeat(MAX_REASON);
        let listeners = (0..MAX_LISTENERS)
            .map(|_| ListenerStatus {
                spec: spec(),
                state: ListenerState::Failed {
                    reason: long.clone(),
                    retry_at: 1,
                },
                counters: Counters::default(),
                last_error: Some(long.clone()),
            })
            .collect();
        let children = (0..200_000)
            .map(|pid| ChildInfo {
                pid,
                listener: Some(pid % 7),
                peer: Some(format!("[2001:db8::{pid:x}]:65535")),
                uid: 65534,
                started_at: 1,
            })
            .collect();
        let s = StatusReport {
            generation: 1,
            software_version: "0".into(),
            pid: 1,
            uid: 0,
            started_at: 1,
            policy: Policy::default(),
            listeners,
            children,
        };
        let CoreResponse::Status(got) = decode(&frame(CoreResponse::Status(s))) else {
            panic!("not a status");
        };
        assert_eq!(got.listeners.len(), MAX_LISTENERS, "every listener is kept");
        let ListenerState::Failed { reason, .. } = &got.listeners[0].state else {
            panic!("state changed");
        };
        assert!(
            reason.len() <= SHORT_TEXT && reason.ends_with("..."),
            "{reason}"
        );
        assert!(!got.children.is_empty() && got.children.len() < 200_000);
    }

    #[test]
    fn an_apply_report_of_long_reasons_fits() {
        let long = "é".repeat(MAX_REASON / 2);
        let r = ApplyReport {
            generation: 2,
            outcomes: vec![
                Outcome::Rejected {
                    reason: long.clone()
                };
                MAX_LISTENERS
            ],
            removed: vec![
                Removed {
                    key: spec().key(),
                    label: long.clone(),
                };
                MAX_LISTENERS
            ],
        };
        let CoreResponse::Applied(got) = decode(&frame(CoreResponse::Applied(r))) else {
            panic!("not a report");
        };
        assert_eq!(got.outcomes.len(), MAX_LISTENERS);
        assert_eq!(got.removed.len(), MAX_LISTENERS);
        let Outcome::Rejected { reason } = &got.outcomes[9] else {
            panic!()
        };
        assert!(
            reason.len() <= SHORT_TEXT && reason.starts_with('é'),
            "{reason}"
        );
    }

    /// xorshift64*: deterministic, so a failure reproduces.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// The stable-toolchain pass of the `core_input` fuzz target: mutated
    /// sample requests through decode, the whole-message checks, the
    /// core's validation under a root and a user policy, and the framing
    /// of the answer. Nothing panics and every answer fits.
    #[test]
    fn mutated_requests_through_the_core_input_path() {
        use crate::samples;
        use inetd_protocol::{check_apply, codec::encode_payload, CoreRequest};
        let seeds: Vec<Vec<u8>> = samples::core_requests()
            .iter()
            .map(|(_, r)| encode_payload(r).unwrap())
            .collect();
        let policies = [samples::policy(), samples::user_policy()];
        let mut rng = Rng(0x1d2c_3b4a_5968_7f01);
        let (mut applies, mut accepted) = (0, 0);
        for round in 0..20_000 {
            let mut p = seeds[round % seeds.len()].clone();
            for _ in 0..=rng.below(4) {
                let i = rng.below(p.len());
                p[i] = match rng.below(3) {
                    0 => rng.next() as u8,
                    1 => p[i] ^ (1 << rng.below(8)),
                    _ => [0, 1, 0xff, b'/', b'.', 0x1b][rng.below(6)],
                };
            }
            let Ok(CoreRequest::Apply { listeners }) = decode_payload::<CoreRequest>(&p) else {
                continue;
            };
            applies += 1;
            if let Err(e) = check_apply(&listeners) {
                decode(&frame(CoreResponse::Error {
                    reason: e.to_string(),
                }));
                continue;
            }
            let policy = &policies[round % 2];
            let outcomes = listeners
                .iter()
                .map(|s| match crate::validate::validate(s, policy) {
                    Ok(_) => {
                        accepted += 1;
                        Outcome::Added
                    }
                    Err(reason) => Outcome::Rejected { reason },
                })
                .collect();
            decode(&frame(CoreResponse::Applied(ApplyReport {
                generation: 1,
                outcomes,
                removed: vec![],
            })));
        }
        assert!(applies > 1000 && accepted > 100, "{applies} {accepted}");
    }
}
