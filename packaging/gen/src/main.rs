//! inetd-gen-docs: writes the package's man pages and inetctl's shell
//! completions. Run by packaging/build-deb.sh at build time; not shipped.
//!
//! Each page's text comes from its markdown page in docs/
//! (`docs/inetd-core.md`, ...: `## NAME`, `## SYNOPSIS`, `## DESCRIPTION`
//! and so on; anything before the first `##` heading is an introduction for
//! readers of the repository and is left out). Where that page does not
//! exist yet, the matching section of README.md stands in as the
//! DESCRIPTION. For `inetd-controller` and `inetctl`, whose command lines
//! are clap definitions, the OPTIONS section is generated from those
//! definitions, so it cannot drift from what the binaries accept.
#![forbid(unsafe_code)]

mod page;
mod roff;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use clap_complete::Shell;
use inetd_ctl::cli::{ControllerArgs, InetctlArgs};

#[derive(Parser, Debug)]
#[command(
    name = "inetd-gen-docs",
    about = "Write the man pages and shell completions"
)]
struct Args {
    /// Output directory: man pages go to OUT/man, completions to
    /// OUT/completions.
    #[arg(long, value_name = "OUT")]
    out: PathBuf,
    /// The repository's top directory (holding docs/ and README.md).
    #[arg(long, value_name = "DIR", default_value = ".")]
    source: PathBuf,
    /// The date on the pages, YYYY-MM-DD. Default: from SOURCE_DATE_EPOCH,
    /// else today.
    #[arg(long, value_name = "DATE")]
    date: Option<String>,
}

fn date(arg: Option<String>) -> String {
    if let Some(d) = arg {
        return d;
    }
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(inetd_ctl::timefmt::unix_now);
    inetd_ctl::timefmt::rfc3339(secs)[..10].to_owned()
}

fn run(args: Args) -> Result<(), String> {
    let date = date(args.date);
    let man = args.out.join("man");
    let comp = args.out.join("completions");
    for d in [&man, &comp] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let readme = std::fs::read_to_string(args.source.join("README.md")).unwrap_or_default();
    for spec in page::PAGES {
        let docs = args.source.join("docs").join(format!("{}.md", spec.name));
        let text = match std::fs::read_to_string(&docs) {
            Ok(t) => page::Source::Docs(t),
            Err(_) => page::Source::Readme(page::readme_section(&readme, spec.readme_heading)),
        };
        let command = match spec.name {
            "inetd-controller" => Some(ControllerArgs::command()),
            "inetctl" => Some(InetctlArgs::command()),
            _ => None,
        };
        let roff = page::render(spec, &text, command, &date);
        let path = man.join(format!("{}.{}", spec.name, spec.section));
        std::fs::write(&path, roff).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("{}", path.display());
    }
    let mut cmd = InetctlArgs::command();
    for (shell, file) in [
        (Shell::Bash, "inetctl"),
        (Shell::Zsh, "_inetctl"),
        (Shell::Fish, "inetctl.fish"),
    ] {
        let path = comp.join(file);
        let mut f = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        clap_complete::generate(shell, &mut cmd, "inetctl", &mut f);
        println!("{}", path.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inetd-gen-docs: {e}");
            ExitCode::from(1)
        }
    }
}
