//! The access-file parser and compiler: every pattern form, `EXCEPT`
//! nesting, IPv6 forms, unsupported forms, options, and line numbers; the
//! compiled list checked address by address against the rule-by-rule
//! reference.

use std::net::IpAddr;

use super::compile::{acl_allows, client_set, daemon_list_matches};
use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn allow(text: &str) -> HostsFile {
    parse("hosts.allow", text.as_bytes(), Verdict::Allow)
}

fn deny(text: &str) -> HostsFile {
    parse("hosts.deny", text.as_bytes(), Verdict::Deny)
}

/// The client set of the only rule of `clients` (as `ALL: clients`).
fn set(clients: &str) -> Result<AddrSet, String> {
    let f = allow(&format!("ALL: {clients}\n"));
    assert_eq!(f.rules.len(), 1, "{clients}");
    client_set(&f.rules[0].clients)
}

fn prefixes(clients: &str) -> Vec<String> {
    set(clients)
        .unwrap_or_else(|e| panic!("{clients}: {e}"))
        .prefixes()
        .into_iter()
        .map(|(n, l)| format!("{n}/{l}"))
        .collect()
}

fn problem(clients: &str) -> String {
    match set(clients) {
        Err(p) => p,
        Ok(s) => panic!("{clients}: expected a problem, got {s:?}"),
    }
}

#[test]
fn every_supported_client_form() {
    assert_eq!(prefixes("ALL"), ["0.0.0.0/0", "::/0"]);
    assert_eq!(
        prefixes("all"),
        ["0.0.0.0/0", "::/0"],
        "keywords have no case"
    );
    assert_eq!(prefixes("192.0.2.7"), ["192.0.2.7/32"]);
    assert_eq!(prefixes("10."), ["10.0.0.0/8"]);
    assert_eq!(prefixes("192.168."), ["192.168.0.0/16"]);
    assert_eq!(prefixes("192.168.1."), ["192.168.1.0/24"]);
    assert_eq!(prefixes("192.168.1.0/24"), ["192.168.1.0/24"]);
    assert_eq!(prefixes("192.168.1.0/255.255.255.0"), ["192.168.1.0/24"]);
    assert_eq!(prefixes("10.0.0.0/255.0.0.0"), ["10.0.0.0/8"]);
    assert_eq!(prefixes("0.0.0.0/0"), ["0.0.0.0/0"]);
    assert_eq!(prefixes("0.0.0.0/0.0.0.0"), ["0.0.0.0/0"]);
    assert_eq!(prefixes("192.0.2.1/32"), ["192.0.2.1/32"]);
}

#[test]
fn ipv6_forms() {
    assert_eq!(prefixes("[::1]"), ["::1/128"]);
    assert_eq!(prefixes("[2001:db8::5]"), ["2001:db8::5/128"]);
    assert_eq!(
        prefixes("[2001:DB8:0::5]"),
        ["2001:db8::5/128"],
        "as an address"
    );
    assert_eq!(prefixes("[2001:db8::]/32"), ["2001:db8::/32"]);
    assert_eq!(prefixes("[2001:db8:1::]/64"), ["2001:db8:1::/64"]);
    assert_eq!(prefixes("[2001:db8::/32]"), ["2001:db8::/32"]);
    assert_eq!(prefixes("[::]/0"), ["::/0"]);
    // IPv4-mapped patterns are IPv4: the core checks mapped peers as IPv4.
    assert_eq!(prefixes("[::ffff:192.0.2.1]"), ["192.0.2.1/32"]);
    assert_eq!(prefixes("[::ffff:192.0.2.0]/120"), ["192.0.2.0/24"]);
    // A colon inside brackets does not end the client list.
    let f = allow("in.fingerd: [2001:db8::1], [fe80::]/10 : deny\n");
    assert_eq!(f.rules[0].verdict, Verdict::Deny);
    let s = client_set(&f.rules[0].clients).unwrap();
    assert!(s.contains(ip("2001:db8::1")));
    assert!(s.contains(ip("fe80::1234")));
    assert!(!s.contains(ip("2001:db8::2")));
    assert!(problem("[2001:db8::1]/129").contains("prefix length of at most 128"));
    assert!(problem("[2001:db8::1]/64").contains("host bits"));
    assert!(problem("[2001:db8::zz]").contains("not an IPv6 address"));
}

#[test]
fn lists_and_except_nesting() {
    // Commas, spaces and tabs all separate.
    assert_eq!(
        prefixes("10., 192.0.2.1\t192.0.2.2"),
        ["10.0.0.0/8", "192.0.2.1/32", "192.0.2.2/32"]
    );
    let s = set("ALL EXCEPT 10.").unwrap();
    assert!(!s.contains(ip("10.1.2.3")));
    assert!(s.contains(ip("11.1.2.3")));
    assert!(s.contains(ip("::1")));
    // a EXCEPT b EXCEPT c is a \ (b \ c).
    let s = set("10. EXCEPT 10.1. EXCEPT 10.1.2.3").unwrap();
    assert!(s.contains(ip("10.2.0.1")));
    assert!(!s.contains(ip("10.1.0.1")));
    assert!(s.contains(ip("10.1.2.3")));
    assert!(!s.contains(ip("11.0.0.1")));
    let s = set("10. except 10.1.").unwrap();
    assert!(!s.contains(ip("10.1.0.1")), "except has no case");
    // EXCEPT first: matches nothing. EXCEPT last: excepts nothing.
    assert!(set("EXCEPT 10.").unwrap().is_empty());
    assert_eq!(prefixes("10. EXCEPT"), ["10.0.0.0/8"]);
    // A problem in a nested EXCEPT is a problem of the rule.
    assert!(problem("ALL EXCEPT 10. EXCEPT .example.com").contains(".example.com"));
}

#[test]
fn daemon_patterns() {
    let m = |list: &str, name: &str| {
        let f = allow(&format!("{list}: ALL\n"));
        daemon_list_matches(&f.rules[0].daemons, name)
    };
    assert_eq!(m("in.fingerd", "in.fingerd"), Some(true));
    assert_eq!(m("IN.FINGERD", "in.fingerd"), Some(true), "no case");
    assert_eq!(m("in.fingerd", "in.telnetd"), Some(false));
    assert_eq!(m("ALL", "anything"), Some(true));
    assert_eq!(m("KNOWN", "anything"), Some(true));
    assert_eq!(m("in.", "in.telnetd"), Some(true), "prefix");
    assert_eq!(m("in.", "inx"), Some(false));
    assert_eq!(m(".d", "in.d"), Some(true), "suffix");
    assert_eq!(m(".d", ".d"), Some(false), "a suffix needs more before it");
    assert_eq!(m("in.*d", "in.fingerd"), Some(true), "wildcards");
    assert_eq!(m("echo?", "echo"), Some(false));
    assert_eq!(m("ech?", "echo"), Some(true));
    assert_eq!(m("a, b c\techo", "echo"), Some(true));
    assert_eq!(m("ALL EXCEPT in.fingerd", "in.fingerd"), Some(false));
    assert_eq!(m("ALL EXCEPT in.fingerd", "echo"), Some(true));
    assert_eq!(
        m("ALL EXCEPT in. EXCEPT in.fingerd", "in.fingerd"),
        Some(true),
        "nested"
    );
    assert_eq!(
        m("ALL EXCEPT in. EXCEPT in.fingerd", "in.telnetd"),
        Some(false)
    );
    // daemon@host cannot be checked where its daemon part matches.
    assert_eq!(m("in.fingerd@192.0.2.1", "in.fingerd"), None);
    assert_eq!(m("in.fingerd@192.0.2.1", "echo"), Some(false));
    assert_eq!(m("ALL EXCEPT echo@192.0.2.1", "echo"), None);
    assert_eq!(m("ALL EXCEPT echo@192.0.2.1", "chargen"), Some(true));
    assert_eq!(
        m("echo, ALL@192.0.2.1", "echo"),
        Some(true),
        "a match decides"
    );
}

#[test]
fn unsupported_client_forms_are_problems() {
    for (pattern, says) in [
        ("LOCAL", "LOCAL needs host names"),
        ("known", "KNOWN needs host names"),
        ("UNKNOWN", "UNKNOWN needs host names"),
        ("PARANOID", "PARANOID needs host names"),
        ("host.example.com", "a host name"),
        ("localhost", "a host name"),
        (".example.com", "a domain pattern"),
        ("www.", "a host name prefix"),
        ("@trusted", "netgroups"),
        ("root@192.0.2.1", "user@host"),
        ("%h", "% expansions"),
        ("[fe80::1%eth0]", "% expansions"),
        ("192.168.*", "wildcards"),
        ("192.0.2.?", "wildcards"),
        ("10.1", "not a complete address"),
        ("1.2.3.4.", "one to three octets"),
        ("1.2.300.", "one to three octets"),
        ("10..", "one to three octets"),
        ("192.168.1.1/24", "host bits are set past /24"),
        ("192.168.1.0/255.0.255.0", "contiguous netmask"),
        ("192.168.1.0/33", "prefix length of at most 32"),
        ("192.168.1.0/x", "netmask"),
        ("example.com/24", "the network is not an address"),
    ] {
        let p = problem(pattern);
        assert!(p.contains(says), "{pattern}: {p}");
        let shown = pattern.trim_start_matches('[').trim_end_matches(']');
        assert!(p.contains(&format!("{shown:?}")), "names the pattern: {p}");
    }
}

#[test]
fn comments_blank_lines_continuations_and_line_numbers() {
    let f = deny(concat!(
        "# hosts.deny\n",
        "\n",
        "   \t\n",
        "in.fingerd: 10.\n",
        "in.telnetd: \\\n",
        "  192.0.2.1, \\\n",
        "  192.0.2.2\n",
        "ALL: 192.0.2.3\r\n",
        "# a comment \\\n",
        "ALL: ALL\n",
        "echo: 192.0.2.4"
    ));
    let lines: Vec<u32> = f.rules.iter().map(|r| r.line).collect();
    assert_eq!(lines, [4, 5, 8, 11]);
    assert_eq!(
        client_set(&f.rules[1].clients).unwrap().prefix_count(),
        2,
        "joined"
    );
    assert!(client_set(&f.rules[2].clients)
        .unwrap()
        .contains(ip("192.0.2.3")));
    // The continued comment swallowed "ALL: ALL" (as tcpd) and says so.
    assert_eq!(f.notes.len(), 2, "{:?}", f.notes);
    assert_eq!(f.notes[0].0, 9);
    assert!(f.notes[0].1.contains("continues to line 10"));
    assert_eq!(f.notes[1].0, 11);
    assert!(f.notes[1].1.contains("no newline"));
    assert!(f.rules.iter().all(|r| r.first_problem().is_none()));
}

#[test]
fn file_ends_and_stray_brackets() {
    // A last comment or blank line without a newline is nothing to note.
    assert!(allow("ALL: ALL\n# end").notes.is_empty());
    assert!(allow("ALL: ALL\n  ").notes.is_empty());
    // A stray closing bracket does not hide the separator after it.
    let f = allow("a]: 10.\n");
    assert!(f.rules[0].first_problem().is_none());
    assert_eq!(daemon_list_matches(&f.rules[0].daemons, "a]"), Some(true));
}

#[test]
fn a_line_without_a_separator_is_a_problem_of_its_rule() {
    let f = allow("ok: ALL\nin.fingerd 192.0.2.1\n: ALL\nsshd:\n");
    assert_eq!(f.rules.len(), 4);
    assert_eq!(f.rules[1].line, 2);
    assert!(f.rules[1]
        .first_problem()
        .unwrap()
        .contains("no \":\" between"));
    // Its daemon list is still read, to know where it matters.
    assert_eq!(
        daemon_list_matches(&f.rules[1].daemons, "in.fingerd"),
        Some(true)
    );
    assert_eq!(
        f.notes,
        vec![(
            3,
            "the daemon list is empty: the rule matches nothing".to_owned()
        )]
    );
    assert_eq!(
        f.rules[3].notes,
        vec!["the client list is empty: the rule matches nothing".to_owned()]
    );
    assert!(client_set(&f.rules[3].clients).unwrap().is_empty());
}

#[test]
fn options_decide_the_verdict() {
    let v = |line: &str| {
        let f = allow(&format!("{line}\n"));
        (f.rules[0].verdict, f.rules[0].notes.clone())
    };
    assert_eq!(v("ALL: ALL").0, Verdict::Allow);
    assert_eq!(v("ALL: ALL: deny").0, Verdict::Deny);
    assert_eq!(v("ALL: ALL : DENY").0, Verdict::Deny);
    assert_eq!(deny("ALL: ALL: allow\n").rules[0].verdict, Verdict::Allow);
    let (verdict, notes) = v("ALL: ALL: spawn (echo %h) &: severity auth.info: allow");
    assert_eq!(verdict, Verdict::Allow);
    assert_eq!(
        notes,
        ["options ignored (only allow, deny and twist change what is decided): spawn, severity"]
    );
    let (verdict, notes) = v("ALL: ALL: twist /bin/echo go away");
    assert_eq!(verdict, Verdict::Deny);
    assert!(notes[0].contains("twist"), "{notes:?}");
    let (verdict, notes) = v("ALL: ALL: allow: severity auth.info");
    assert_eq!(verdict, Verdict::Deny, "allow not last: tcpd refuses");
    assert!(
        notes.iter().any(|n| n.contains("not the last")),
        "{notes:?}"
    );
    let (verdict, notes) = v("ALL: ALL: (safe_finger -l @%h | mail root) &");
    assert_eq!(verdict, Verdict::Deny, "unknown option: tcpd refuses");
    assert!(notes[0].contains("not one tcpd knows"), "{notes:?}");
    // An escaped colon stays inside its option.
    let (verdict, notes) = v(r"ALL: ALL: spawn echo a\:b: deny");
    assert_eq!(verdict, Verdict::Deny);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(v("ALL: ALL:").0, Verdict::Allow, "an empty options field");
    assert_eq!(deny("ALL: ALL: allow:\n").rules[0].verdict, Verdict::Allow);
    assert_eq!(v("ALL: ALL: :: deny").0, Verdict::Deny);
    assert!(v("ALL: ALL: :: deny").1.is_empty());
}

/// hosts.allow then hosts.deny, first match, default allow.
fn files(allow_text: &str, deny_text: &str) -> Vec<HostsFile> {
    vec![allow(allow_text), deny(deny_text)]
}

fn decide(files: &[HostsFile], name: &str, peer: &str) -> bool {
    let c = compile(files, name, Families::Both).unwrap();
    acl_allows(c.acl.as_ref(), ip(peer))
}

#[test]
fn allow_first_then_deny_then_default_allow() {
    let f = files(
        "in.fingerd: 192.0.2.0/24 EXCEPT 192.0.2.66\n",
        "in.fingerd: ALL\nALL EXCEPT echo: 10.\n",
    );
    assert!(decide(&f, "in.fingerd", "192.0.2.1"));
    assert!(!decide(&f, "in.fingerd", "192.0.2.66"));
    assert!(!decide(&f, "in.fingerd", "198.51.100.1"));
    assert!(!decide(&f, "in.fingerd", "::1"));
    assert!(decide(&f, "echo", "10.0.0.1"), "EXCEPT in the daemon list");
    assert!(!decide(&f, "chargen", "10.0.0.1"));
    assert!(decide(&f, "chargen", "11.0.0.1"), "no match allows");
    assert_eq!(compile(&f, "echo", Families::Both).unwrap().acl, None);
    let fing = compile(&f, "in.fingerd", Families::Both).unwrap();
    assert_eq!(
        fing.used,
        [RuleRef { file: 0, rule: 0 }, RuleRef { file: 1, rule: 0 }]
    );
    assert_eq!(fing.first_deny, Some(RuleRef { file: 1, rule: 0 }));
}

#[test]
fn the_shorter_of_the_two_forms_is_sent() {
    // Deny one address: one deny rule, default allow.
    let c = compile(&files("", "ALL: 192.0.2.1\n"), "x", Families::V4).unwrap();
    let acl = c.acl.unwrap();
    assert!(acl.default_allow);
    assert_eq!(acl.rules.len(), 1);
    assert!(!acl.rules[0].allow);
    // Allow one network, deny the rest: one allow rule, default deny.
    let c = compile(&files("x: 10.\n", "ALL: ALL\n"), "x", Families::Both).unwrap();
    let acl = c.acl.unwrap();
    assert!(!acl.default_allow);
    assert_eq!(acl.rules.len(), 1);
    assert!(acl.rules[0].allow);
    // Deny all: no rule at all.
    let c = compile(&files("", "ALL: ALL\n"), "x", Families::V6).unwrap();
    let acl = c.acl.unwrap();
    assert_eq!((acl.rules.len(), acl.default_allow), (0, false));
    // Rules of the other family do not matter to a one-family listener.
    let c = compile(&files("", "ALL: [2001:db8::]/32\n"), "x", Families::V4).unwrap();
    assert_eq!(c.acl, None);
    let c = compile(&files("", "ALL: [2001:db8::]/32\n"), "x", Families::V6).unwrap();
    assert!(c.acl.is_some());
}

#[test]
fn a_problem_blocks_only_where_it_could_decide() {
    let f = files(
        "in.telnetd: .example.com\nALL EXCEPT in.telnetd: ALL\nin.rshd@192.0.2.1: 10.\n",
        "in.telnetd: ALL\nzzz: LOCAL\n",
    );
    match compile(&f, "in.telnetd", Families::Both) {
        Err(Blocked::Rule { rule, problem }) => {
            assert_eq!(rule, RuleRef { file: 0, rule: 0 });
            assert!(problem.contains(".example.com"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
    // Rule 2 allows every client of every other daemon first: nothing
    // after it is read, so the problems there do not matter.
    let c = compile(&f, "in.rshd", Families::Both).unwrap();
    assert_eq!(c.acl, None);
    // zzz is decided by its own unsupported rule... after rule 2 allowed
    // everything: nothing left to decide.
    assert!(compile(&f, "zzz", Families::Both).is_ok());
    // Without the allow-all rule, daemon@host blocks in.rshd.
    let f = files("in.rshd@192.0.2.1: 10.\n", "");
    assert!(matches!(
        compile(&f, "in.rshd", Families::Both),
        Err(Blocked::Rule { .. })
    ));
    // ... but not for clients it cannot match.
    let f = files("in.rshd@192.0.2.1: 10.\n", "");
    assert_eq!(compile(&f, "in.rshd", Families::V6).unwrap().acl, None);
    let f = files("", "in.fingerd 10.0.0.1\n");
    assert!(matches!(
        compile(&f, "in.fingerd", Families::Both),
        Err(Blocked::Rule { .. })
    ));
    assert!(compile(&f, "echo", Families::Both).is_ok());
}

#[test]
fn too_many_prefixes_block() {
    // Every other address of a range: 4200 separate hosts, so both the
    // denied prefixes and their complement are over the core's bound.
    let mut list = String::new();
    for i in 0..4200u32 {
        let a = std::net::Ipv4Addr::from(0x0a00_0000 + 2 * i);
        list.push_str(&format!("{a} "));
    }
    let f = files("", &format!("ALL: {list}\n"));
    assert!(matches!(
        compile(&f, "x", Families::V4),
        Err(Blocked::TooLarge { rules }) if rules > inetd_protocol::MAX_ACL_RULES
    ));
}

/// A deterministic generator for the property test (no dependency).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 17
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() as usize) % items.len()]
    }
}

/// The compiled list decides every address exactly as the rule-by-rule
/// reference does, for random files built from every supported form.
#[test]
fn compiled_lists_agree_with_the_reference() {
    let daemons = ["ALL", "a", "b", "in.", ".d", "ALL EXCEPT a", "a EXCEPT b"];
    let clients = [
        "ALL",
        "10.",
        "10.1.",
        "10.1.2.3",
        "10.1.0.0/16",
        "10.0.0.0/255.0.0.0",
        "192.0.2.0/25",
        "[2001:db8::]/32",
        "[2001:db8::1]",
        "[::ffff:10.9.0.0]/112",
        "ALL EXCEPT 10.",
        "10. EXCEPT 10.1. EXCEPT 10.1.2.3",
        "[::]/1 EXCEPT [2001:db8::]/33",
    ];
    let options = ["", ": allow", ": deny", ": spawn x: deny", ": twist y"];
    let peers = [
        "10.0.0.1",
        "10.1.0.1",
        "10.1.2.3",
        "10.9.1.1",
        "11.0.0.1",
        "192.0.2.1",
        "192.0.2.200",
        "2001:db8::1",
        "2001:db8::2",
        "2001:db8:8000::1",
        "::1",
        "fe80::1",
        "::ffff:10.1.2.3",
    ];
    let names = ["a", "b", "in.d", "zz"];
    let mut rng = Lcg(7);
    for _ in 0..300 {
        let mut text = [String::new(), String::new()];
        for t in &mut text {
            for _ in 0..(rng.next() % 5) {
                t.push_str(&format!(
                    "{}: {} {}\n",
                    rng.pick(&daemons),
                    rng.pick(&clients),
                    rng.pick(&options)
                ));
            }
        }
        let f = files(&text[0], &text[1]);
        for name in names {
            for fam in [Families::V4, Families::V6, Families::Both] {
                let c = compile(&f, name, fam).expect("only supported forms");
                for peer in peers {
                    let p = ip(peer);
                    let family_ok = !matches!(
                        (fam, addrset::unmap(p)),
                        (Families::V4, IpAddr::V6(_)) | (Families::V6, IpAddr::V4(_))
                    );
                    if !family_ok {
                        continue;
                    }
                    assert_eq!(
                        Some(acl_allows(c.acl.as_ref(), p)),
                        evaluate(&f, name, p),
                        "{name} {peer} {fam:?}\n{}---\n{}",
                        text[0],
                        text[1]
                    );
                }
            }
        }
    }
}

#[test]
fn long_lists_and_deep_except_nesting_stay_cheap() {
    // 50,000 addresses in one list: one sort, not a union per item.
    let list: String = (0..50_000u32)
        .map(|i| format!("{} ", std::net::Ipv4Addr::from(0x0a00_0000 + 3 * i)))
        .collect();
    let f = deny(&format!("ALL: {list}\n"));
    assert_eq!(
        client_set(&f.rules[0].clients).unwrap().prefix_count(),
        50_000
    );
    // 100,000 nested EXCEPTs would overflow a thread's stack: past the
    // bound the rule is a problem, and its lists stay shallow.
    let deep = "ALL EXCEPT ".repeat(100_000);
    let f = deny(&format!("{deep}a: {deep}10.\n"));
    let p = f.rules[0].first_problem().unwrap();
    assert!(p.contains("more than 32 EXCEPTs"), "{p}");
    let mut depth = 0;
    let mut l = Some(&f.rules[0].clients);
    while let Some(x) = l {
        depth += 1;
        l = x.except.as_deref();
    }
    assert_eq!(depth, MAX_EXCEPT + 1);
    assert!(matches!(
        compile(&[f], "a", Families::Both),
        Err(Blocked::Rule { .. })
    ));
    // Exactly the bound is fine.
    let ok = "ALL EXCEPT ".repeat(MAX_EXCEPT);
    let f = deny(&format!("a: {ok}10.\n"));
    assert!(f.rules[0].first_problem().is_none());
}

#[test]
fn glob_matches_like_fnmatch() {
    assert!(glob("*", ""));
    assert!(glob("in.*", "in.fingerd"));
    assert!(glob("*d", "in.fingerd"));
    assert!(glob("i*n*d", "in.fingerd"));
    assert!(!glob("i*x*d", "in.fingerd"));
    assert!(glob("?n.f*", "in.fingerd"));
    assert!(!glob("?", ""));
    assert!(glob("a**b", "ab"));
}

#[test]
fn any_bytes_parse_without_panicking() {
    let mut rng = Lcg(99);
    let alphabet = b"ALLEXCPT:,. \t\n\\#[]/@%*?0123456789abcdef";
    for _ in 0..2000 {
        let len = (rng.next() % 80) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| alphabet[(rng.next() as usize) % alphabet.len()])
            .collect();
        let f = parse("f", &bytes, Verdict::Deny);
        let files = vec![f];
        for fam in [Families::V4, Families::V6, Families::Both] {
            let _ = compile(&files, "a", fam);
        }
    }
    // Invalid UTF-8 is read lossily: the bad bytes end up in a pattern
    // that matches nothing or is a problem, never an error of the file.
    let f = parse("f", b"\xff\xfe: ALL\nALL: \xff\n", Verdict::Deny);
    assert_eq!(f.rules.len(), 2);
    assert!(f.rules[1].first_problem().is_some());
}
