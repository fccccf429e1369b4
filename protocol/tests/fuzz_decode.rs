//! A deterministic fuzz pass over the frame decoder: random and mutated
//! frames must produce an error or a message, never a panic, an abort or a
//! large allocation. (The release profile aborts on panic, so a panic here
//! would be a remote crash of the core.)

mod samples;

use inetd_protocol::control::{CtlRequest, CtlResponse};
use inetd_protocol::{decode_payload, encode_frame, CoreRequest, CoreResponse, FrameBuf};

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

/// One frame of every message and variant there is (`samples`): Apply
/// with every kind of listener, every response, and the control link's
/// messages, which anyone on the host may send to the controller.
fn seeds() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    v.extend(
        samples::core_requests()
            .iter()
            .map(|(_, m)| encode_frame(m).unwrap()),
    );
    v.extend(
        samples::core_responses()
            .iter()
            .map(|(_, m)| encode_frame(m).unwrap()),
    );
    v.extend(
        samples::ctl_requests()
            .iter()
            .map(|(_, m)| encode_frame(m).unwrap()),
    );
    v.extend(
        samples::ctl_responses()
            .iter()
            .map(|(_, m)| encode_frame(m).unwrap()),
    );
    v
}

/// Decodes `p` as every message type; true when one of them took it.
fn decode_any(p: &[u8]) -> bool {
    decode_payload::<CoreRequest>(p).is_ok()
        | decode_payload::<CoreResponse>(p).is_ok()
        | decode_payload::<CtlRequest>(p).is_ok()
        | decode_payload::<CtlResponse>(p).is_ok()
}

fn feed(bytes: &[u8]) {
    let mut buf = FrameBuf::new();
    buf.extend(bytes);
    while let Ok(Some(p)) = buf.next_payload() {
        decode_any(&p);
    }
    if bytes.len() > 4 {
        decode_any(&bytes[4..]);
    }
}

#[test]
fn every_seed_decodes_unmutated() {
    // Otherwise the mutations below would start from frames the decoder
    // refuses anyway, and exercise only its first checks.
    for s in seeds() {
        assert!(decode_any(&s[4..]), "{s:02x?}");
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let len = rng.below(64);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        feed(&bytes);
    }
}

#[test]
fn mutated_frames_never_panic() {
    let mut rng = Rng(42);
    let seeds = seeds();
    for _ in 0..50_000 {
        let mut f = seeds[rng.below(seeds.len())].clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(f.len());
            match rng.below(4) {
                0 => f[i] = rng.next() as u8,
                1 => f[i] ^= 1 << rng.below(8),
                2 => f.insert(i, rng.next() as u8),
                _ => {
                    f.remove(i);
                    if f.is_empty() {
                        f.push(0);
                    }
                }
            }
        }
        // Keep the header consistent half of the time so the payload
        // decoder itself is exercised, not only the header check.
        if rng.below(2) == 0 && f.len() >= 4 {
            let len = (f.len() - 4) as u32;
            f[..4].copy_from_slice(&len.to_be_bytes());
        }
        feed(&f);
    }
}
