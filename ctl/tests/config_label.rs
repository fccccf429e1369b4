//! Labels through the public API: what the parser puts in each spec, and
//! encode/decode on arbitrary text.

mod config_support;

use config_support::*;
use inetd_ctl::config::{load_with, Label};
use inetd_protocol::MAX_LABEL;

#[test]
fn entries_carry_their_label() {
    let c = load_text("127.0.0.1:8007 stream tcp nowait nobody:users internal echo\n");
    let l = Label::decode(&c.entries[0].spec.label).unwrap();
    assert_eq!(
        l,
        Label {
            service: "8007".into(),
            file: c.entries[0].source.file.clone(),
            line: 1,
            protocol: "tcp4".into(),
            user: "nobody".into(),
            group: "users".into(),
        }
    );
}

/// A file name with a newline, a tab and an escape sequence: the label
/// round-trips it, and a diagnostic stays on one line.
#[test]
fn odd_file_names() {
    let dir = temp_dir("odd");
    let name = "a\nb\t\u{1b}[1m%.conf";
    std::fs::write(
        dir.join(name),
        "echo stream tcp4 nowait nobody internal\nbad\n",
    )
    .unwrap();
    let c = load_with(std::slice::from_ref(&dir), &names(), &options()).unwrap();
    let l = Label::decode(&c.entries[0].spec.label).unwrap();
    assert_eq!(l.file, dir.join(name).display().to_string());
    assert!(!c.entries[0].spec.label.contains('\n'));
    let shown = c.diagnostics[0].to_string();
    assert!(
        !shown.contains('\n') && !shown.contains('\u{1b}'),
        "{shown:?}"
    );
    assert!(
        shown.contains("a\\x0ab\\x09\\x1b[1m%.conf:2: error: too few fields"),
        "{shown:?}"
    );
}

#[test]
fn random_text_round_trips_within_the_bound() {
    let seed = std::cell::Cell::new(0x2545_f491_4f6c_dd1d_u64);
    let next = || {
        let mut s = seed.get();
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        seed.set(s);
        s
    };
    let alphabet: Vec<char> = "ab%\t\n\u{0}\u{7f}\u{85}é…€\u{10ffff}:/ 9"
        .chars()
        .collect();
    for _ in 0..500 {
        let field = |max: u64| -> String {
            (0..(next() % max))
                .map(|_| alphabet[(next() as usize) % alphabet.len()])
                .collect()
        };
        let l = Label {
            service: field(40),
            file: field(if next() % 8 == 0 { 3000 } else { 100 }),
            line: next() as u32,
            protocol: field(8),
            user: field(40),
            group: field(40),
        };
        let text = l.encode();
        assert!(text.len() <= MAX_LABEL, "{}", text.len());
        let back = Label::decode(&text).expect("decodes");
        if text.len() < MAX_LABEL - 4 * 20 {
            assert_eq!(back, l);
        } else {
            assert_eq!(back.line, l.line);
        }
        // Decoding arbitrary text never panics.
        let junk: String = (0..(next() % 64))
            .map(|_| alphabet[(next() as usize) % alphabet.len()])
            .collect();
        let _ = Label::decode(&junk);
        let _ = Label::decode(&format!("{junk} {junk} {junk}:1 x:{junk}"));
    }
}
