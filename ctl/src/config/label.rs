//! The label the controller puts in each `ListenerSpec`, so that a
//! restarted controller can show what runs before it has read its
//! configuration. The core never interprets it.
//!
//! Format: `inetd-label-1` and the six fields (service, file, line,
//! protocol, user, group), separated by single spaces; in each field `%`,
//! space and every control character are written as `%XX` per UTF-8 byte,
//! so any file name survives, the separator is unambiguous, and the core's
//! log, which shows the label, stays readable
//! (`inetd-label-1 echo /etc/inetd.conf 12 tcp4 nobody nogroup`). The whole label is at most [`MAX_LABEL`] bytes: the longest
//! fields are cut (at character boundaries, marked with `…`) until it fits.

use inetd_protocol::MAX_LABEL;

const TAG: &str = "inetd-label-1";
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

fn needs_escape(c: char) -> bool {
    c == '%' || c == ' ' || c.is_control()
}

fn escaped_len(c: char) -> usize {
    if needs_escape(c) {
        3 * c.len_utf8()
    } else {
        c.len_utf8()
    }
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        if needs_escape(c) {
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
fn cut(s: &str, max: usize) -> String {
    let budget = max.saturating_sub(CUT.len_utf8());
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        used += escaped_len(c);
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

impl Label {
    fn join(parts: &[String; 5], line: u32) -> String {
        let mut out = String::from(TAG);
        for (i, p) in parts.iter().enumerate() {
            out.push(' ');
            escape_into(&mut out, p);
            if i == 1 {
                out.push(' ');
                out.push_str(&line.to_string());
            }
        }
        out
    }

    /// The label text, at most [`MAX_LABEL`] bytes.
    pub fn encode(&self) -> String {
        let mut parts = [
            self.service.clone(),
            self.file.clone(),
            self.protocol.clone(),
            self.user.clone(),
            self.group.clone(),
        ];
        let lens: Vec<usize> = parts
            .iter()
            .map(|p| p.chars().map(escaped_len).sum())
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
                parts[i] = cut(&parts[i], share);
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
        let [tag, service, file, line, protocol, user, group] = parts.as_slice() else {
            return None;
        };
        if *tag != TAG || line.is_empty() || !line.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
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
            "inetd-label-1\ta\tb\tc\td\te\tf",
            "inetd-label-1\ta\tb\t-1\td\te\tf",
            "inetd-label-1\ta\tb\t99999999999\td\te\tf",
            "inetd-label-1\t%\tb\t1\td\te\tf",
            "inetd-label-1\t%zz\tb\t1\td\te\tf",
            "inetd-label-1\t%FF\tb\t1\td\te\tf",
            "inetd-label-1\té%\tb\t1\td\te\tf",
            "inetd-label-1\ta\tb\t1\td\te\tf\tg",
            "inetd-label-2\ta\tb\t1\td\te\tf",
        ] {
            assert_eq!(Label::decode(s), None, "{s:?}");
        }
    }
}
