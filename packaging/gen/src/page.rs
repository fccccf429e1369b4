//! One man page: its sections from markdown, its OPTIONS from clap.
#![forbid(unsafe_code)]

use clap::{Arg, Command};

use crate::roff;

/// What the generator knows of each page besides its text.
pub struct Spec {
    pub name: &'static str,
    pub section: u8,
    /// The one-line summary for NAME when the page is made from README.md.
    pub summary: &'static str,
    /// The README.md heading (any level, without the #s) whose section
    /// stands in for the page until docs/NAME.md exists.
    pub readme_heading: &'static str,
    pub see_also: &'static str,
}

pub const PAGES: &[Spec] = &[
    Spec {
        name: "inetd-core",
        section: 8,
        summary: "the privileged half of inetd: binds, accepts, forks, drops privileges, execs",
        readme_heading: "inetd-core",
        see_also: "inetd-controller(8), inetctl(8), inetd.conf(5), systemd.service(5)",
    },
    Spec {
        name: "inetd-controller",
        section: 8,
        summary:
            "the unprivileged half of inetd: reads inetd.conf, drives inetd-core, serves inetctl",
        readme_heading: "inetd-controller",
        see_also: "inetd-core(8), inetctl(8), inetd.conf(5), hosts_access(5), update-inetd(8)",
    },
    Spec {
        name: "inetctl",
        section: 8,
        summary: "inspect, reload and check inetd",
        readme_heading: "inetctl",
        see_also: "inetd-controller(8), inetd-core(8), inetd.conf(5), hosts_access(5)",
    },
    Spec {
        name: "inetd.conf",
        section: 5,
        summary: "services started by the privilege-separated inetd",
        readme_heading: "inetd.conf",
        see_also: "inetd-controller(8), inetctl(8), inetd-core(8), update-inetd(8), services(5), hosts_access(5)",
    },
];

pub enum Source {
    /// docs/NAME.md, whole.
    Docs(String),
    /// The README.md section standing in for it (may be empty).
    Readme(String),
}

/// Splits markdown into its `## ` sections (title, body), outside code
/// fences; what comes before the first one is dropped.
pub fn sections(md: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut fence: Option<&str> = None;
    for line in md.lines() {
        let t = line.trim_start();
        if let Some(f) = fence {
            if t.starts_with(f) {
                fence = None;
            }
        } else if t.starts_with("```") || t.starts_with("~~~") {
            fence = Some(&t[..3]);
        } else if let Some(h) = line.strip_prefix("## ") {
            out.push((h.trim().to_owned(), String::new()));
            continue;
        }
        if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

/// The README.md section under `heading` (any level), up to the next
/// heading of the same or a higher level; its own subheadings are raised
/// to `###` so they become subsections.
pub fn readme_section(readme: &str, heading: &str) -> String {
    let mut level = None;
    let mut out = String::new();
    let mut fence = false;
    for line in readme.lines() {
        let t = line.trim_start();
        if t.starts_with("```") {
            fence = !fence;
        }
        let h = (!fence)
            .then(|| {
                let n = line.chars().take_while(|&c| c == '#').count();
                (n > 0 && line[n..].starts_with(' ')).then(|| (n, line[n..].trim()))
            })
            .flatten();
        match (level, h) {
            (None, Some((n, title))) if title == heading => level = Some(n),
            (Some(l), Some((n, _))) if n <= l => break,
            (Some(_), Some((_, title))) => out.push_str(&format!("### {title}\n")),
            (Some(_), None) => {
                out.push_str(line);
                out.push('\n');
            }
            (None, _) => {}
        }
    }
    out
}

/// The first fenced code block of `md`, for a SYNOPSIS.
fn first_code_block(md: &str) -> Option<String> {
    let start = md.find("```")?;
    let rest = &md[start + 3..];
    let rest = &rest[rest.find('\n')? + 1..];
    let end = rest.find("```")?;
    Some(format!("```\n{}```\n", &rest[..end]))
}

/// `NAME` as man(7) wants it: `name \- summary`.
fn name_line(spec: &Spec, body: &str) -> String {
    let text = body.split_whitespace().collect::<Vec<_>>().join(" ");
    let summary = ["\u{2014}", " -- ", " - ", "\u{2013}"]
        .iter()
        .find_map(|sep| text.split_once(sep).map(|(_, s)| s.trim().to_owned()))
        .unwrap_or_else(|| spec.summary.to_owned());
    format!(".SH NAME\n{} \\- {}\n", spec.name, roff::plain(&summary))
}

fn arg_head(a: &Arg) -> String {
    let mut names = Vec::new();
    if let Some(s) = a.get_short() {
        names.push(format!("\\fB\\-{}\\fR", roff::code(&s.to_string())));
    }
    if let Some(l) = a.get_long() {
        names.push(format!("\\fB\\-\\-{}\\fR", roff::code(l)));
    }
    let values = if a.get_action().takes_values() {
        a.get_value_names()
            .map(|v| {
                v.iter()
                    .map(|n| format!(" \\fI{}\\fR", roff::code(n)))
                    .collect::<String>()
            })
            .unwrap_or_default()
    } else {
        String::new()
    };
    if a.is_positional() {
        let n = a
            .get_value_names()
            .and_then(|v| v.first().map(|s| s.to_string()))
            .unwrap_or_else(|| a.get_id().to_string().to_uppercase());
        let more = if matches!(a.get_action(), clap::ArgAction::Append) {
            "..."
        } else {
            ""
        };
        return format!("\\fI{}\\fR{more}", roff::code(&n));
    }
    format!("{}{values}", names.join(", "))
}

fn arg_help(a: &Arg) -> String {
    let help = a
        .get_long_help()
        .or_else(|| a.get_help())
        .map(|h| h.to_string())
        .unwrap_or_default();
    let mut help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    // clap drops the final period of a one-line help; a man page keeps it.
    if !help.is_empty() && !help.ends_with('.') {
        help.push('.');
    }
    let mut out = roff::text(&help);
    let defaults: Vec<String> = a
        .get_default_values()
        .iter()
        .map(|v| format!("\\fB{}\\fR", roff::code(&v.to_string_lossy())))
        .collect();
    if a.get_action().takes_values() && !defaults.is_empty() && !help.contains("Default") {
        out.push_str(&format!(" Default: {}.", defaults.join(", ")));
    }
    out
}

fn write_args(out: &mut String, cmd: &Command, skip_global: bool) {
    for a in cmd.get_arguments() {
        if a.is_hide_set() || (skip_global && a.is_global_set()) {
            continue;
        }
        out.push_str(&format!(".TP\n{}\n{}\n", arg_head(a), arg_help(a)));
    }
}

/// OPTIONS from the clap definitions: the options of the command, then,
/// for a command with subcommands, each subcommand with its own.
pub fn options(cmd: Command) -> String {
    let mut cmd = cmd;
    cmd.build();
    let mut out = String::from(".SH OPTIONS\n");
    write_args(&mut out, &cmd, false);
    let subs: Vec<&Command> = cmd
        .get_subcommands()
        .filter(|s| s.get_name() != "help")
        .collect();
    if !subs.is_empty() {
        out.push_str(".SH COMMANDS\n");
        for s in subs {
            out.push_str(&format!(".SS {}\n", roff::code(s.get_name())));
            if let Some(about) = s.get_long_about().or_else(|| s.get_about()) {
                let mut about = about.to_string();
                if !about.ends_with('.') {
                    about.push('.');
                }
                out.push_str(&format!(".PP\n{}\n", roff::text(&about)));
            }
            let mut own = String::new();
            for a in s.get_arguments() {
                if a.is_global_set() || a.is_hide_set() || a.get_id() == "help" {
                    continue;
                }
                own.push_str(&format!(".TP\n{}\n{}\n", arg_head(a), arg_help(a)));
            }
            out.push_str(&own);
        }
    }
    out
}

/// The whole page.
pub fn render(spec: &Spec, source: &Source, command: Option<Command>, date: &str) -> String {
    let version = env!("CARGO_PKG_VERSION");
    let manual = if spec.section == 5 {
        "File Formats Manual"
    } else {
        "System Manager's Manual"
    };
    let origin = match source {
        Source::Docs(_) => format!("docs/{}.md", spec.name),
        Source::Readme(_) => "README.md".to_owned(),
    };
    let mut out = format!(
        ".\\\" Generated by inetd-gen-docs from {origin}; edit that, not this.\n\
         .TH {} {} {date} \"inetd {version}\" \"{manual}\"\n",
        roff::code(&spec.name.to_uppercase()),
        spec.section,
    );
    let mut options = command.map(options);
    match source {
        Source::Docs(md) => {
            let secs = sections(md);
            let has_options = secs.iter().any(|(t, _)| t.eq_ignore_ascii_case("OPTIONS"));
            for (title, body) in &secs {
                let upper = title.to_uppercase();
                match upper.as_str() {
                    "NAME" => out.push_str(&name_line(spec, body)),
                    "OPTIONS" if options.is_some() => {
                        out.push_str(&options.take().unwrap_or_default())
                    }
                    _ => {
                        out.push_str(&format!(".SH {}\n", roff::plain(&upper)));
                        out.push_str(&roff::markdown(body));
                    }
                }
                if upper == "DESCRIPTION" && !has_options {
                    if let Some(o) = options.take() {
                        out.push_str(&o);
                    }
                }
            }
            if let Some(o) = options.take() {
                out.push_str(&o);
            }
        }
        Source::Readme(md) => {
            out.push_str(&name_line(spec, ""));
            if let Some(code) = first_code_block(md) {
                out.push_str(".SH SYNOPSIS\n");
                out.push_str(&roff::markdown(&code));
            }
            out.push_str(".SH DESCRIPTION\n");
            out.push_str(&roff::markdown(md));
            if let Some(o) = options.take() {
                out.push_str(&o);
            }
            out.push_str(&format!(".SH SEE ALSO\n{}\n", roff::plain(spec.see_also)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use inetd_ctl::cli::{ControllerArgs, InetctlArgs};

    const DOC: &str = "# x(8)\n\nIntro for the repository.\n\n## NAME\n\ninetctl \u{2014} inspect, reload\nand check inetd\n\n## SYNOPSIS\n\n```\ninetctl list\n## not a heading\n```\n\n## DESCRIPTION\n\nText.\n\n## OPTIONS\n\n`--old`\n: Hand-written.\n\n## EXIT STATUS\n\n`0`\n: Fine.\n";

    #[test]
    fn docs_sections_with_generated_options() {
        let page = render(
            &PAGES[2],
            &Source::Docs(DOC.into()),
            Some(InetctlArgs::command()),
            "2026-01-02",
        );
        assert!(page.contains(".TH INETCTL 8 2026-01-02 \"inetd "), "{page}");
        assert!(page.contains(".SH NAME\ninetctl \\- inspect, reload and check inetd\n"));
        assert!(!page.contains("Intro for the repository"));
        assert!(page.contains("## not a heading"), "{page}");
        // The hand-written OPTIONS gave way to the clap definitions.
        assert!(!page.contains("Hand-written"), "{page}");
        assert!(
            page.contains(".SH OPTIONS\n.TP\n\\fB\\-\\-socket\\fR \\fIPATH\\fR\n"),
            "{page}"
        );
        assert!(page.contains(".SH COMMANDS\n.SS list\n"), "{page}");
        assert!(page.contains(".TP\n\\fB\\-\\-partial\\fR\n"), "{page}");
        assert!(page.contains(".TP\n\\fIPATH\\fR...\n"), "{page}");
        // Sections keep their order around it.
        let order: Vec<usize> = [
            ".SH SYNOPSIS",
            ".SH DESCRIPTION",
            ".SH OPTIONS",
            ".SH EXIT STATUS",
        ]
        .iter()
        .map(|s| page.find(s).unwrap())
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{page}");
    }

    #[test]
    fn every_controller_flag_is_in_its_options() {
        let o = options(ControllerArgs::command());
        for a in ControllerArgs::command().get_arguments() {
            if let Some(l) = a.get_long() {
                let want = format!("\\fB\\-\\-{}\\fR", l.replace('-', "\\-"));
                assert!(o.contains(&want), "{want} missing:\n{o}");
            }
        }
        assert!(o.contains("Default: \\fBinetd\\-admin\\fR."), "{o}");
        assert!(o.contains("\\fB\\-\\-help\\fR"), "{o}");
    }

    #[test]
    fn the_readme_stands_in_until_the_docs_page_exists() {
        let readme = "# T\n\n## inetd.conf\n\nThe grammar:\n\n```\nservice type\n```\n\n#### Sub\n\nMore.\n\n## Next\n\nNot this.\n";
        let s = readme_section(readme, "inetd.conf");
        assert_eq!(
            s,
            "\nThe grammar:\n\n```\nservice type\n```\n\n### Sub\n\nMore.\n\n"
        );
        let page = render(&PAGES[3], &Source::Readme(s), None, "2026-01-02");
        assert!(page.contains(".TH INETD.CONF 5 "), "{page}");
        assert!(
            page.contains(".SH NAME\ninetd.conf \\- services started"),
            "{page}"
        );
        assert!(
            page.contains(".SH SYNOPSIS\n.PP\n.RS 4\n.nf\nservice type\n"),
            "{page}"
        );
        assert!(page.contains(".SS Sub\n"), "{page}");
        assert!(!page.contains("Not this"), "{page}");
        assert!(page.contains(".SH SEE ALSO\n"), "{page}");
    }
}
