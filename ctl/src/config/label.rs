//! The label the controller puts in each `ListenerSpec`, so that a
//! restarted controller can show what runs before it has read its
//! configuration. The core never interprets it: it prints it as it is at the
//! head of its log lines, so the label is written to read well there.
//!
//! Format: `SERVICE PROTOCOL FILE:LINE USER:GROUP`
//! (`echo tcp4 /etc/inetd.conf:12 nobody:nogroup`): four fields separated
//! by single spaces. In each field `%`, space and every control character
//! are written as `%XX` per UTF-8 byte, and `:` too in the user and group,
//! so any file name survives, the separators are unambiguous (the line is
//! after the file's last `:`) and the core's log stays one line per record.
//! The whole label is at most [`MAX_LABEL`] bytes: the longest fields are
//! cut (at character boundaries, marked with `…`) until it fits.

use inetd_protocol::MAX_LABEL;

const CUT: char = '…';

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub service: String,
    pub file: String,
    pub line: u32,
    pub protocol: String,
    pub user: String,
    pub group: String,
}

/// Which characters a field escapes: the user and group also escape `:`,
/// their separator.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Plain,
    Id,
}

fn needs_escape(c: char, f: Field) -> bool {
    c == '%' || c == ' ' || c.is_control() || (f == Field::Id && c == ':')
}

fn escaped_len(c: char, f: Field) -> usize {
    if needs_escape(c, f) {
        3 * c.len_utf8()
    } else {
        c.len_utf8()
    }
}

fn escape_into(out: &mut String, s: &str, f: Field) {
    for c in s.chars() {
        if needs_escape(c, f) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
}

fn unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `s` cut so that its escaped form, with the cut mark, is at most `max`
/// bytes.
fn cut(s: &str, max: usize, f: Field) -> String {
    let budget = max.saturating_sub(CUT.len_utf8());
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        used += escaped_len(c, f);
        if used > budget {
            break;
        }
        out.push(c);
    }
    if max >= CUT.len_utf8() {
        out.push(CUT);
    }
    out
}

/// The fields in the order [`Label::join`] takes them, with their kinds.
const KINDS: [Field; 5] = [
    Field::Plain,
    Field::Plain,
    Field::Plain,
    Field::Id,
    Field::Id,
];

impl Label {
    /// `[service, protocol, file, user, group]` and the line, joined.
    fn join(parts: &[String; 5], line: u32) -> String {
        let mut out = String::new();
        let [service, protocol, file, user, group] = parts;
        escape_into(&mut out, service, Field::Plain);
        out.push(' ');
        escape_into(&mut out, protocol, Field::Plain);
        out.push(' ');
        escape_into(&mut out, file, Field::Plain);
        out.push(':');
        out.push_str(&line.to_string());
        out.push(' ');
        escape_into(&mut out, user, Field::Id);
        out.push(':');
        escape_into(&mut out, group, Field::Id);
        out
    }

    /// The label text, at most [`MAX_LABEL`] bytes.
    pub fn encode(&self) -> String {
        let mut parts = [
            self.service.clone(),
            self.protocol.clone(),
            self.file.clone(),
            self.user.clone(),
            self.group.clone(),
        ];
        let lens: Vec<usize> = parts
            .iter()
            .zip(KINDS)
            .map(|(p, f)| p.chars().map(|c| escaped_len(c, f)).sum())
            .collect();
        let overhead = Label::join(&Default::default(), self.line).len();
        let total: usize = lens.iter().sum();
        if overhead + total <= MAX_LABEL {
            return Label::join(&parts, self.line);
        }
        // Share the room fairly: fields shorter than an equal share keep
        // everything, the others split what is left equally.
        let mut order: Vec<usize> = (0..parts.len()).collect();
        order.sort_by_key(|&i| lens[i]);
        let mut room = MAX_LABEL.saturating_sub(overhead);
        for (k, &i) in order.iter().enumerate() {
            let share = room / (parts.len() - k);
            if lens[i] > share {
                parts[i] = cut(&parts[i], share, KINDS[i]);
                room -= share;
            } else {
                room -= lens[i];
            }
        }
        Label::join(&parts, self.line)
    }

    /// The label, if `s` is one this version wrote.
    pub fn decode(s: &str) -> Option<Label> {
        let parts: Vec<&str> = s.split(' ').collect();
        let [service, protocol, place, ids] = parts.as_slice() else {
            return None;
        };
        let (file, line) = place.rsplit_once(':')?;
        if line.is_empty() || !line.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let (user, group) = ids.split_once(':')?;
        Some(Label {
            service: unescape(service)?,
            file: unescape(file)?,
            line: line.parse().ok()?,
            protocol: unescape(protocol)?,
            user: unescape(user)?,
            group: unescape(group)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(file: &str) -> Label {
        Label {
            service: "echo".into(),
            file: file.into(),
            line: 12,
            protocol: "tcp4".into(),
            user: "nobody".into(),
            group: "nogroup".into(),
        }
    }

    #[test]
    fn reads_as_a_log_line_would_have_it() {
        assert_eq!(
            label("/etc/inetd.conf").encode(),
            "echo tcp4 /etc/inetd.conf:12 nobody:nogroup"
        );
        let mut odd = label("/etc/a b:7.conf");
        odd.user = "u:x".into();
        let text = odd.encode();
        assert_eq!(text, "echo tcp4 /etc/a%20b:7.conf:12 u%3Ax:nogroup");
        assert_eq!(Label::decode(&text), Some(odd));
    }

    #[test]
    fn round_trip_with_odd_file_names() {
        for f in [
            "/etc/inetd.conf",
            "/etc/a\tb\nc%41%",
            "/tmp/\u{1b}[31mred\u{85}",
            "",
            "ünïcödé\u{fffd}",
        ] {
            let l = label(f);
            let text = l.encode();
            assert!(!text.contains('\n'));
            assert!(text.starts_with("echo tcp4 "), "{text:?}");
            assert_eq!(Label::decode(&text), Some(l), "{text:?}");
        }
    }

    #[test]
    fn long_fields_are_cut_to_the_bound() {
        let mut l = label(&"é/\t".repeat(2000));
        l.service = "s".repeat(5000);
        l.user = "%".repeat(700);
        let text = l.encode();
        assert!(text.len() <= MAX_LABEL, "{}", text.len());
        let back = Label::decode(&text).expect("decodes");
        assert_eq!(back.line, 12);
        assert_eq!(back.protocol, "tcp4");
        assert!(back.file.ends_with(CUT) && back.file.starts_with("é/\t"));
        assert!(back.service.ends_with(CUT));
    }

    #[test]
    fn decode_refuses_garbage_without_panicking() {
        for s in [
            "",
            "x",
            "a\tb\tc:1\td:e",
            "a b c:x d:e",
            "a b c:-1 d:e",
            "a b c:99999999999 d:e",
            "a b c: d:e",
            "a b c d:e",
            "a b c:1 de",
            "% b c:1 d:e",
            "%zz b c:1 d:e",
            "%FF b c:1 d:e",
            "é% b c:1 d:e",
            "a b c:1 d:e f",
            "a b c:1",
        ] {
            assert_eq!(Label::decode(s), None, "{s:?}");
        }
    }
}
