//! Markdown (CommonMark with tables and definition lists, as the pages in
//! docs/ are written) to man(7) roff. Only what manual pages need: section
//! and subsection headings, paragraphs, bullet and numbered lists,
//! definition lists (`term` / `: text`, the OPTIONS and FILES style),
//! tables (one tagged paragraph per row), code blocks (no filling),
//! inline code (bold), emphasis. Everything is escaped so that no text
//! from a page can become a roff request.
#![forbid(unsafe_code)]

use pulldown_cmark::{CodeBlockKind, Event, HeadingLevel, Options, Parser, Tag, TagEnd};

/// Escapes text for roff: backslashes, hyphens as minus signs where they
/// are options or code (`\-`, so copying `--config` from a terminal works),
/// and characters outside ASCII as groff glyph names.
fn escape(s: &str, code: bool) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev = ' ';
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            // In code every hyphen is an ASCII minus; in prose only a
            // leading one (an option named in running text).
            '-' if code || prev.is_whitespace() || prev == '-' || prev == '(' || prev == '[' => {
                out.push_str("\\-")
            }
            '\u{2014}' => out.push_str("\\(em"),
            '\u{2013}' => out.push_str("\\(en"),
            '\u{2192}' => out.push_str("\\(->"),
            '\u{2190}' => out.push_str("\\(<-"),
            '\u{2026}' => out.push_str("..."),
            '\u{2018}' | '\u{2019}' => out.push_str("\\(aq"),
            '\u{201c}' => out.push_str("\\(lq"),
            '\u{201d}' => out.push_str("\\(rq"),
            '\u{2264}' => out.push_str("\\(<="),
            '\u{2265}' => out.push_str("\\(>="),
            '\u{00d7}' => out.push_str("\\(mu"),
            '\u{00a0}' => out.push_str("\\ "),
            c if !c.is_ascii() => out.push_str(&format!("\\[u{:04X}]", c as u32)),
            c => out.push(c),
        }
        prev = c;
    }
    out
}

#[derive(Default)]
struct Writer {
    out: String,
    /// Nested lists: `None` for bullets, `Some(n)` for the next number.
    lists: Vec<Option<u64>>,
    /// The next paragraph continues a tag (.IP/.TP) just written.
    fresh: bool,
    /// Inside a block that has already had a paragraph: the next one is
    /// indented with it.
    in_item: usize,
    heading: Option<String>,
    code_block: Option<String>,
    table: Option<Table>,
}

#[derive(Default)]
struct Table {
    rows: Vec<Vec<String>>,
    cell: Option<String>,
    head: bool,
}

impl Writer {
    fn at_line_start(&self) -> bool {
        self.out.is_empty() || self.out.ends_with('\n')
    }

    fn request(&mut self, r: &str) {
        if !self.at_line_start() {
            self.out.push('\n');
        }
        self.out.push_str(r);
        self.out.push('\n');
    }

    /// Inline text: into the current table cell or heading, or the page.
    fn inline(&mut self, s: &str) {
        if let Some(t) = self.table.as_mut() {
            if let Some(c) = t.cell.as_mut() {
                c.push_str(s);
            }
            return;
        }
        if let Some(h) = self.heading.as_mut() {
            h.push_str(s);
            return;
        }
        for (i, line) in s.split('\n').enumerate() {
            if i > 0 {
                self.out.push('\n');
            }
            let line = if self.at_line_start() {
                line.trim_start()
            } else {
                line
            };
            // A line that starts with . or ' would be a request.
            if self.at_line_start() && (line.starts_with('.') || line.starts_with('\'')) {
                self.out.push_str("\\&");
            }
            self.out.push_str(line);
        }
    }

    fn paragraph(&mut self) {
        if self.fresh {
            self.fresh = false;
        } else if self.in_item > 0 {
            self.request(".IP");
        } else {
            self.request(".PP");
        }
    }

    fn event(&mut self, e: Event) {
        match e {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(t) => {
                if let Some(c) = self.code_block.as_mut() {
                    c.push_str(&t);
                } else {
                    let s = escape(&t, false);
                    self.inline(&s);
                }
            }
            Event::Code(t) => {
                // \% keeps groff from hyphenating a path or a name.
                let s = format!("\\fB\\%{}\\fR", escape(&t, true));
                self.inline(&s);
            }
            Event::SoftBreak => self.inline("\n"),
            Event::HardBreak => {
                self.inline("\n");
                self.request(".br");
            }
            Event::Rule
            | Event::Html(_)
            | Event::InlineHtml(_)
            | Event::FootnoteReference(_)
            | Event::TaskListMarker(_)
            | Event::InlineMath(_)
            | Event::DisplayMath(_) => {}
        }
    }

    fn start(&mut self, tag: Tag) {
        match tag {
            Tag::Paragraph => self.paragraph(),
            Tag::Heading { .. } => self.heading = Some(String::new()),
            Tag::BlockQuote(_) => self.request(".RS 4"),
            Tag::CodeBlock(kind) => {
                let _ = matches!(kind, CodeBlockKind::Fenced(_));
                self.code_block = Some(String::new());
            }
            Tag::List(start) => {
                if !self.lists.is_empty() {
                    self.request(".RS");
                }
                self.lists.push(start);
            }
            Tag::Item => {
                let mark = match self.lists.last_mut() {
                    Some(Some(n)) => {
                        let m = format!(".IP {n}. 4");
                        *n += 1;
                        m
                    }
                    _ => ".IP \\(bu 2".to_owned(),
                };
                self.request(&mark);
                self.fresh = true;
                self.in_item += 1;
            }
            Tag::DefinitionList => {}
            Tag::DefinitionListTitle => {
                self.request(".TP");
                self.fresh = false;
            }
            Tag::DefinitionListDefinition => {
                self.request("");
                self.out.pop();
                self.fresh = true;
                self.in_item += 1;
            }
            Tag::Table(_) => self.table = Some(Table::default()),
            Tag::TableHead => {
                if let Some(t) = self.table.as_mut() {
                    t.head = true;
                    t.rows.push(Vec::new());
                }
            }
            Tag::TableRow => {
                if let Some(t) = self.table.as_mut() {
                    t.rows.push(Vec::new());
                }
            }
            Tag::TableCell => {
                if let Some(t) = self.table.as_mut() {
                    t.cell = Some(String::new());
                }
            }
            Tag::Emphasis => self.inline("\\fI"),
            Tag::Strong => self.inline("\\fB"),
            Tag::Strikethrough
            | Tag::Link { .. }
            | Tag::Image { .. }
            | Tag::FootnoteDefinition(_)
            | Tag::HtmlBlock
            | Tag::MetadataBlock(_)
            | Tag::Superscript
            | Tag::Subscript => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Paragraph => {}
            TagEnd::Heading(level) => {
                let h = self.heading.take().unwrap_or_default();
                // Fonts in a heading are dropped: .SS sets its own.
                let h = h
                    .replace("\\fB", "")
                    .replace("\\fR", "")
                    .replace("\\fI", "");
                let r = if level <= HeadingLevel::H2 {
                    ".SH"
                } else {
                    ".SS"
                };
                self.request(&format!("{r} {h}"));
                self.fresh = false;
            }
            TagEnd::BlockQuote(_) => self.request(".RE"),
            TagEnd::CodeBlock => {
                let code = self.code_block.take().unwrap_or_default();
                self.paragraph();
                self.request(".RS 4");
                self.request(".nf");
                for line in code.trim_end_matches('\n').split('\n') {
                    let l = escape(line, true);
                    if l.starts_with('.') || l.starts_with('\'') {
                        self.out.push_str("\\&");
                    }
                    self.out.push_str(&l);
                    self.out.push('\n');
                }
                self.request(".fi");
                self.request(".RE");
            }
            TagEnd::List(_) => {
                self.lists.pop();
                if !self.lists.is_empty() {
                    self.request(".RE");
                }
            }
            TagEnd::Item => self.in_item = self.in_item.saturating_sub(1),
            TagEnd::DefinitionListDefinition => self.in_item = self.in_item.saturating_sub(1),
            TagEnd::DefinitionList | TagEnd::DefinitionListTitle => {}
            TagEnd::TableCell => {
                if let Some(t) = self.table.as_mut() {
                    if let (Some(c), Some(row)) = (t.cell.take(), t.rows.last_mut()) {
                        row.push(c.trim().to_owned());
                    }
                }
            }
            TagEnd::TableHead | TagEnd::TableRow => {}
            TagEnd::Table => {
                if let Some(t) = self.table.take() {
                    self.write_table(t);
                }
            }
            TagEnd::Emphasis | TagEnd::Strong => self.inline("\\fR"),
            _ => {}
        }
    }

    /// A table as one tagged paragraph per row: the first cell is the tag,
    /// the others follow it, separated by dashes. The header row names the
    /// columns once, before the rows.
    fn write_table(&mut self, t: Table) {
        let mut rows = t.rows.into_iter();
        if t.head {
            // Two columns read as term and text; more need their names.
            if let Some(head) = rows.next().filter(|h| h.len() > 2) {
                let names: Vec<&str> = head.iter().map(String::as_str).collect();
                self.paragraph();
                self.inline(&format!("Columns: {}.", names.join(", ")));
            }
        }
        for row in rows {
            let mut cells = row.into_iter();
            let tag = cells.next().unwrap_or_default();
            self.request(".TP");
            self.inline(&tag);
            let rest: Vec<String> = cells.filter(|c| !c.is_empty()).collect();
            self.request("");
            self.out.pop();
            self.inline(&rest.join(" \\(em "));
        }
        self.fresh = false;
    }
}

/// The roff of a piece of markdown (the body of one section or more).
pub fn markdown(md: &str) -> String {
    let mut opts = Options::empty();
    opts.insert(Options::ENABLE_TABLES);
    opts.insert(Options::ENABLE_DEFINITION_LIST);
    let mut w = Writer::default();
    for e in Parser::new_ext(md, opts) {
        w.event(e);
    }
    if !w.at_line_start() {
        w.out.push('\n');
    }
    w.out
}

/// Plain text for a NAME line or a heading: escaped, one line.
pub fn plain(s: &str) -> String {
    escape(
        s.split_whitespace().collect::<Vec<_>>().join(" ").as_str(),
        false,
    )
}

/// Escapes literal text (an option name, a value) as code.
pub fn code(s: &str) -> String {
    escape(s, true)
}

/// Prose from a clap help string, escaped, with `--flags` as minus signs.
pub fn text(s: &str) -> String {
    escape(s, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_paragraphs_and_inline_fonts() {
        let r = markdown(
            "## DESCRIPTION\n\n`inetctl` asks *the* **controller**.\n.dot at line start\n\n### list\n\nRows.\n",
        );
        assert_eq!(
            r,
            ".SH DESCRIPTION\n.PP\n\\fB\\%inetctl\\fR asks \\fIthe\\fR \\fBcontroller\\fR.\n\\&.dot at line start\n.SS list\n.PP\nRows.\n"
        );
    }

    #[test]
    fn definition_lists_are_tagged_paragraphs() {
        let r = markdown(
            "`--socket PATH`\n: The control socket.\n\n  More about it.\n\n`-x`\n: Other.\n",
        );
        assert_eq!(
            r,
            ".TP\n\\fB\\%\\-\\-socket PATH\\fR\n.PP\nThe control socket.\n.IP\nMore about it.\n.TP\n\\fB\\%\\-x\\fR\n.PP\nOther.\n"
                .replace(".PP\nThe", "The")
                .replace(".PP\nOther", "Other")
        );
    }

    #[test]
    fn code_blocks_keep_their_lines_and_escape_requests() {
        let r = markdown("```\ninetctl --socket P list\n.hidden\nback\\slash\n```\n");
        assert_eq!(
            r,
            ".PP\n.RS 4\n.nf\ninetctl \\-\\-socket P list\n\\&.hidden\nback\\eslash\n.fi\n.RE\n"
        );
    }

    #[test]
    fn lists_and_nested_lists() {
        let r = markdown("- one\n- two\n  1. a\n  2. b\n");
        assert_eq!(
            r,
            ".IP \\(bu 2\none\n.IP \\(bu 2\ntwo\n.RS\n.IP 1. 4\na\n.IP 2. 4\nb\n.RE\n"
        );
    }

    #[test]
    fn tables_become_tagged_rows() {
        let r =
            markdown("| key | type | meaning |\n|---|---|---|\n| `a.b` | int | what — it is |\n");
        assert_eq!(
            r,
            ".PP\nColumns: key, type, meaning.\n.TP\n\\fB\\%a.b\\fR\nint \\(em what \\(em it is\n"
        );
    }

    #[test]
    fn prose_hyphens_stay_hyphens_and_options_become_minus_signs() {
        assert_eq!(
            text("privilege-separated, see --config"),
            "privilege-separated, see \\-\\-config"
        );
        assert_eq!(
            plain("inetctl — inspect\n  and reload"),
            "inetctl \\(em inspect and reload"
        );
        assert_eq!(code("a-b"), "a\\-b");
        assert_eq!(text("x\u{2603}"), "x\\[u2603]");
    }
}
