//! Splits a file into records.
//!
//! Rules (docs/inetd.conf.md):
//! * a line whose first byte is `#` is a comment; an empty line or one of
//!   only spaces and tabs is blank; both end the entry above;
//! * fields are separated by runs of spaces and tabs;
//! * a line that starts with a space or tab and has a field continues the
//!   entry above; with no entry above (first line, or after a blank or a
//!   comment) it is an error, since it is most likely a fragment of an
//!   entry someone commented out or split;
//! * a record of one field ending in `:` is a default bind address.
//!
//! A line longer than [`MAX_LINE`], with a control character other than
//! tab, or not valid UTF-8 makes its entry an error. Comment lines are not
//! inspected at all.

use super::MAX_LINE;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    /// An entry: its first line and its fields, continuation lines joined.
    Entry { line: u32, fields: Vec<String> },
    /// `addr:` alone: `host` is the text before the final `:`.
    DefaultAddr { line: u32, host: String },
    /// An entry that cannot be read as fields. `first` is its first field
    /// when one could be read.
    Bad {
        line: u32,
        first: String,
        message: String,
    },
}

struct Pending {
    line: u32,
    fields: Vec<String>,
    error: Option<String>,
}

impl Pending {
    fn finish(self) -> Record {
        if let Some(message) = self.error {
            return Record::Bad {
                line: self.line,
                first: self.fields.into_iter().next().unwrap_or_default(),
                message,
            };
        }
        if self.fields.len() == 1 {
            if let Some(host) = self.fields[0].strip_suffix(':') {
                return Record::DefaultAddr {
                    line: self.line,
                    host: host.to_owned(),
                };
            }
        }
        Record::Entry {
            line: self.line,
            fields: self.fields,
        }
    }
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Why this (non-comment) line cannot be read as fields, if it cannot.
fn line_error(n: u32, raw: &[u8]) -> Option<String> {
    if raw.len() > MAX_LINE {
        return Some(format!(
            "line {n} is longer than {MAX_LINE} bytes ({} bytes)",
            raw.len()
        ));
    }
    if let Some(&b) = raw.iter().find(|&&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        let hint = if b == b'\r' {
            " (a DOS line ending? convert the file with dos2unix)"
        } else {
            ""
        };
        return Some(format!(
            "line {n} contains the control character 0x{b:02x}{hint}"
        ));
    }
    if let Err(e) = std::str::from_utf8(raw) {
        return Some(format!(
            "line {n} is not valid UTF-8 (at byte {})",
            e.valid_up_to() + 1
        ));
    }
    None
}

/// The first field of a bad line, if it is printable text of a sane
/// length: it names the entry in the rejected list.
fn first_field(raw: &[u8]) -> Option<String> {
    let end = raw.iter().position(|&b| !is_blank(b))?;
    let rest = &raw[end..];
    let len = rest.iter().position(|&b| is_blank(b)).unwrap_or(rest.len());
    let field = std::str::from_utf8(&rest[..len]).ok()?;
    (len <= 256 && !field.chars().any(char::is_control)).then(|| field.to_owned())
}

/// The records of one file, in order.
#[cfg(test)]
pub(crate) fn records(data: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    each_record(data, |r| out.push(r));
    out
}

/// Gives `out` the records of one file, in order, one at a time: a large
/// file's records are never all held at once.
pub(crate) fn each_record(data: &[u8], mut out: impl FnMut(Record)) {
    let mut pending: Option<Pending> = None;
    // A final newline does not start another line.
    let data = data.strip_suffix(b"\n").unwrap_or(data);
    let lines = (!data.is_empty()).then(|| data.split(|&b| b == b'\n'));
    for (i, raw) in lines.into_iter().flatten().enumerate() {
        let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
        if raw.first() == Some(&b'#') || raw.iter().all(|&b| is_blank(b)) {
            if let Some(p) = pending.take() {
                out(p.finish());
            }
            continue;
        }
        let current = if is_blank(raw[0]) {
            match pending.as_mut() {
                Some(p) => p,
                None => pending.insert(Pending {
                    line: n,
                    fields: Vec::new(),
                    error: Some(format!(
                        "line {n} starts with a space or tab, which continues an entry, \
                         but there is no entry above it"
                    )),
                }),
            }
        } else {
            if let Some(p) = pending.take() {
                out(p.finish());
            }
            pending.insert(Pending {
                line: n,
                fields: Vec::new(),
                error: None,
            })
        };
        if current.error.is_none() {
            current.error = line_error(n, raw);
        }
        if current.error.is_some() {
            // One error per entry: the rest of it is only read for its
            // first field, which names it in the rejected list.
            if current.fields.is_empty() {
                current.fields.extend(first_field(raw));
            }
            continue;
        }
        // line_error checked that the line is UTF-8.
        let text = String::from_utf8_lossy(raw);
        current.fields.extend(
            text.split([' ', '\t'])
                .filter(|f| !f.is_empty())
                .map(str::to_owned),
        );
    }
    if let Some(p) = pending.take() {
        out(p.finish());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(line: u32, fields: &[&str]) -> Record {
        Record::Entry {
            line,
            fields: fields.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn comments_blanks_and_continuations() {
        let text = b"# c\n\necho stream\n\t tcp nowait\n \t\nx y\n#z\n  w\n";
        let r = records(text);
        assert_eq!(r[0], entry(3, &["echo", "stream", "tcp", "nowait"]));
        assert_eq!(r[1], entry(6, &["x", "y"]));
        assert!(matches!(&r[2], Record::Bad { line: 8, first, .. } if first == "w"));
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn default_address_lines() {
        let r = records(b"127.0.0.1:\n*:\n[::1]:\n127.0.0.1: echo\n");
        assert_eq!(
            r[0],
            Record::DefaultAddr {
                line: 1,
                host: "127.0.0.1".into()
            }
        );
        assert_eq!(
            r[1],
            Record::DefaultAddr {
                line: 2,
                host: "*".into()
            }
        );
        assert_eq!(
            r[2],
            Record::DefaultAddr {
                line: 3,
                host: "[::1]".into()
            }
        );
        assert_eq!(r[3], entry(4, &["127.0.0.1:", "echo"]));
    }

    #[test]
    fn bad_bytes_make_one_bad_record() {
        let r = records(b"echo\x00 stream\n\tmore\nok x\n");
        assert!(
            matches!(&r[0], Record::Bad { line: 1, message, .. } if message.contains("0x00")),
            "{r:?}"
        );
        assert_eq!(r[1], entry(3, &["ok", "x"]));
        let r = records(b"echo stream\r\n");
        assert!(matches!(&r[0], Record::Bad { message, .. } if message.contains("DOS")));
        let r = records(b"echo \xff\n");
        assert!(matches!(&r[0], Record::Bad { message, .. } if message.contains("UTF-8")));
        let mut long = b"echo ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_LINE));
        let r = records(&long);
        assert!(matches!(&r[0], Record::Bad { first, message, .. }
            if message.contains("longer") && first == "echo"));
    }

    #[test]
    fn no_final_newline_and_empty_input() {
        assert_eq!(records(b"a b"), vec![entry(1, &["a", "b"])]);
        assert!(records(b"").is_empty());
        assert!(records(b"\n\n").is_empty());
    }
}
