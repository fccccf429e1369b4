//! hosts.allow / hosts.deny: the parser never panics on any bytes, and the
//! compiled access list decides every address exactly as the rule-by-rule
//! reference does, whenever it compiles.
#![no_main]

use std::net::IpAddr;

use inetd_ctl::hosts::{self, acl_allows, compile, evaluate, Families, Verdict};
use libfuzzer_sys::fuzz_target;

/// Addresses to decide: fixed ones near the usual patterns, and some taken
/// from the input so the fuzzer can aim at its own prefixes' edges.
fn peers(data: &[u8]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = [
        "10.0.0.1",
        "10.1.2.3",
        "127.0.0.1",
        "192.0.2.1",
        "192.168.1.255",
        "0.0.0.0",
        "255.255.255.255",
        "::1",
        "::",
        "2001:db8::1",
        "fe80::1",
        "::ffff:10.1.2.3",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    for c in data.chunks_exact(16).take(8) {
        let b: [u8; 16] = c.try_into().unwrap();
        out.push(IpAddr::from(b));
        let v4: [u8; 4] = c[..4].try_into().unwrap();
        out.push(IpAddr::from(v4));
    }
    out
}

fuzz_target!(|data: &[u8]| {
    // Split the input: the first part is hosts.allow, the rest hosts.deny.
    let cut = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (a, d) = data.split_at(cut);
    let files = vec![
        hosts::parse("hosts.allow", a, Verdict::Allow),
        hosts::parse("hosts.deny", d.get(1..).unwrap_or(&[]), Verdict::Deny),
    ];
    let peers = peers(data);
    for name in ["in.fingerd", "echo", "a"] {
        for fam in [Families::V4, Families::V6, Families::Both] {
            let Ok(c) = compile(&files, name, fam) else {
                continue;
            };
            for &p in &peers {
                let v4 = matches!(hosts::addrset::unmap(p), IpAddr::V4(_));
                if (fam == Families::V4 && !v4) || (fam == Families::V6 && v4) {
                    continue;
                }
                assert_eq!(
                    Some(acl_allows(c.acl.as_ref(), p)),
                    evaluate(&files, name, p),
                    "{name} {p} {fam:?}"
                );
            }
        }
    }
});
