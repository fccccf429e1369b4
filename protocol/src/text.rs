//! Text from outside a process, made safe for one log line or a terminal.
//!
//! Both daemons log to stderr, one record per line, and journald or a
//! terminal reads what they write. A label, a path or an error text that
//! carries a newline would forge a second record; an escape sequence would
//! drive the terminal of whoever reads the log; a bidirectional override
//! would make the line read differently from what it says. So every piece
//! of text that came from outside the process goes through [`escape_log`]
//! before it is placed in a line, and each logger checks the finished line
//! with [`log_safe`] as a last defence.

use std::borrow::Cow;

/// Whether a terminal (or a log viewer) would interpret `c` rather than
/// show it: C0 controls and DEL, C1 controls (U+0080..U+009F: U+009B is a
/// CSI on some terminals), line and paragraph separators, and the
/// invisible format characters that reorder or hide text (bidirectional
/// embeddings, overrides and isolates, zero-width characters, the BOM).
pub fn interpreted(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
        )
}

/// Whether `line` can be written as it is: nothing in it is [`interpreted`].
pub fn log_safe(line: &str) -> bool {
    !line.chars().any(interpreted)
}

/// `s` escaped for a log line and cut at `max` characters (then `...`).
///
/// Every [`interpreted`] character becomes an escape (`\n`, `\r`, `\t`, or
/// `\u{1b}` for the others); a backslash becomes `\\` and a double quote
/// `\"`, so an escape cannot be faked and a field written as `name="..."`
/// cannot be closed early. Text that needs nothing is returned as it is.
pub fn escape_log(s: &str, max: usize) -> Cow<'_, str> {
    let plain = |c: char| !interpreted(c) && c != '\\' && c != '"';
    let too_long = s.chars().nth(max).is_some();
    if !too_long && s.chars().all(plain) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len().min(max.saturating_mul(4)) + 8);
    for (n, c) in s.chars().enumerate() {
        if n >= max {
            out.push_str("...");
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if interpreted(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_a_terminal_would_interpret() {
        assert_eq!(
            escape_log("a\nb\x1b[2J\"c\\", 100),
            "a\\nb\\u{1b}[2J\\\"c\\\\"
        );
        assert_eq!(escape_log("\r\t\0\x7f", 100), "\\r\\t\\u{0}\\u{7f}");
        // C1 CSI, a right-to-left override, a line separator, a BOM.
        assert_eq!(
            escape_log("\u{9b}\u{202e}\u{2028}\u{feff}", 100),
            "\\u{9b}\\u{202e}\\u{2028}\\u{feff}"
        );
        // Printable text beyond ASCII stays as it is.
        assert_eq!(escape_log("café ü 東京", 100), "café ü 東京");
        assert!(matches!(escape_log("plain text", 100), Cow::Borrowed(_)));
    }

    #[test]
    fn cuts_at_max_characters() {
        assert_eq!(escape_log("abcdef", 3), "abc...");
        assert_eq!(escape_log("abc", 3), "abc");
        assert_eq!(escape_log("ééééé", 2), "éé...");
        assert_eq!(escape_log("a\nb", 1), "a...");
    }

    #[test]
    fn escaped_text_is_always_log_safe() {
        for s in ["a\nb", "\u{1b}[31m", "\u{85}", "x\u{2066}y", "ok"] {
            assert!(log_safe(&escape_log(s, 100)), "{s:?}");
        }
        assert!(!log_safe("a\nb"));
        assert!(log_safe("service=\"x\" peer=127.0.0.1:1"));
    }
}
