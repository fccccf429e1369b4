//! A deterministic fuzz pass over the frame decoder: random and mutated
//! frames must produce an error or a message, never a panic, an abort or a
//! large allocation. (The release profile aborts on panic, so a panic here
//! would be a remote crash of the core.)

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

fn seeds() -> Vec<Vec<u8>> {
    let hello = encode_frame(&CoreRequest::Hello { version: 1 }).unwrap();
    let status = encode_frame(&CoreRequest::Status).unwrap();
    let err = encode_frame(&CoreResponse::Error {
        reason: "x".repeat(40),
    })
    .unwrap();
    vec![hello, status, err]
}

fn feed(bytes: &[u8]) {
    let mut buf = FrameBuf::new();
    buf.extend(bytes);
    while let Ok(Some(p)) = buf.next_payload() {
        let _ = decode_payload::<CoreRequest>(&p);
        let _ = decode_payload::<CoreResponse>(&p);
    }
    if bytes.len() > 4 {
        let _ = decode_payload::<CoreRequest>(&bytes[4..]);
        let _ = decode_payload::<CoreResponse>(&bytes[4..]);
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
