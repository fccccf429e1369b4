//! The command line (fixed: scripts and packaging depend on it), parsed by
//! hand from a table of flags: `--flag value` and `--flag=value`, the
//! repeatable flags (`--config`, `--allow-user`, `--allow-group`,
//! `--allow-root-command`, `--unix-dir`) kept in order, everything after
//! `--` passed to the controller. A parser library would add far more code
//! to the root binary than these flags need. Pure: arguments in, a value or
//! a usage error (exit 2) out.
#![forbid(unsafe_code)]

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use inetd_protocol::RootCommand;

/// What the command line asks for; see [`help`] for each flag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cli {
    pub core_socket: Option<PathBuf>,
    pub controller_user: Option<String>,
    pub allow_root_services: bool,
    pub allow_setuid_services: bool,
    /// `--allow-user`, as given (resolved at start).
    pub allow_users: Vec<String>,
    /// `--allow-group`, as given (resolved at start).
    pub allow_groups: Vec<String>,
    pub allow_root_commands: Vec<RootCommand>,
    pub dgram_idle: u64,
    /// `--max-children`: live servers of all listeners together; 0 is
    /// unlimited.
    pub max_children: u32,
    /// `--rate-window`, seconds.
    pub rate_window: u64,
    /// `--pause`, seconds.
    pub pause: u64,
    /// `--builtin-idle`, seconds.
    pub builtin_idle: u64,
    /// One of [`LOG_LEVELS`].
    pub log_level: &'static str,
    /// Log to the local syslog instead of stderr.
    pub syslog: bool,
    pub config: Vec<PathBuf>,
    pub control_socket: Option<PathBuf>,
    /// The directories unix listeners may be made in, as given.
    pub unix_dirs: Vec<PathBuf>,
    /// Everything after `--`.
    pub controller_args: Vec<OsString>,
}

pub const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// The largest `--dgram-idle`, `--rate-window`, `--pause` and
/// `--builtin-idle`: a day.
const DGRAM_IDLE_MAX: u64 = 86_400;
/// The largest `--max-children` (the kernel's largest pid_max).
const MAX_CHILDREN_MAX: u32 = 4_194_304;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(Box<Cli>),
    /// Print [`help`] on stdout, exit 0.
    Help,
    /// Print [`version`] on stdout, exit 0.
    Version,
}

/// A command line that does not parse: printed with [`USAGE`], exit 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msg = &self.0;
        write!(
            f,
            "error: {msg}\n\n{USAGE}\n\nFor more information, try '--help'."
        )
    }
}

pub const USAGE: &str = "Usage: inetd-core [OPTIONS] [-- CONTROLLER-ARGS...]";

/// Each flag: its name, the name of its value (`None` for a switch), help.
/// Only those in [`REPEATABLE`] may be given more than once.
const FLAGS: [(&str, Option<&str>, &str); 17] = [
    ("core-socket", Some("PATH"), "The core socket (packaged mode). Default: RUN/core.sock"),
    ("controller-user", Some("USER"), "The controller's user, by name or uid (root only; default: inetd)"),
    ("allow-root-services", None, "Allow services that run with uid, gid or a group 0"),
    ("allow-setuid-services", None, "Let non-root services gain privileges through setuid programs (no no_new_privs)"),
    ("allow-user", Some("USER|UID"), "Allow services to run as this user, with its own groups (repeatable; nobody is always allowed)"),
    ("allow-group", Some("GROUP|GID"), "Allow services of any allowed user to run with this group (repeatable)"),
    ("allow-root-command", Some("'PATH ARG0 ARGS...'"), "Allow exactly this command, split on whitespace, to run as root (repeatable)"),
    ("unix-dir", Some("DIR"), "Unix-domain listeners may be made directly in DIR (repeatable). Default: RUN/sockets as root, else any directory outside RUN"),
    ("max-children", Some("N"), "Live servers of all services together; past it no listener is polled (0: unlimited) [default: 1024]"),
    ("dgram-idle", Some("SECONDS"), "A datagram builtin exits after this many seconds without a datagram (1-86400) [default: 30]"),
    ("rate-window", Some("SECONDS"), "The window of the per-minute limits and of failed wait servers (1-86400) [default: 60]"),
    ("pause", Some("SECONDS"), "How long a service past its rate limit is paused; the longest backoff of failed wait servers (1-86400) [default: 600]"),
    ("builtin-idle", Some("SECONDS"), "A stream builtin closes a connection without progress for this long (1-86400) [default: 300]"),
    ("log-level", Some("LEVEL"), "error, warn, info, debug or trace [default: info]"),
    ("syslog", None, "Log to the local syslog (/dev/log, facility daemon, ident inetd-core) instead of stderr; passed on to the controller"),
    ("config", Some("PATH"), "One-command mode: start inetd-controller with this configuration (repeatable; a directory means its *.conf files)"),
    ("control-socket", Some("PATH"), "One-command mode: the control socket the controller serves. Default: RUN/control/control.sock"),
];

const REPEATABLE: [&str; 5] = [
    "config",
    "allow-user",
    "allow-group",
    "allow-root-command",
    "unix-dir",
];

/// The `--help` text.
pub fn help() -> String {
    let mut s = String::from(
        "The privileged half of inetd: binds, accepts, forks, drops privileges, execs.\n\
         Without --config it serves the controller that connects to its core socket;\n\
         with --config it starts inetd-controller itself.\n\n",
    );
    s.push_str(USAGE);
    s.push_str("\n\nOptions:\n");
    let rest = [
        (
            "-- CONTROLLER-ARGS...".to_owned(),
            "One-command mode: further arguments for inetd-controller",
        ),
        ("-h, --help".to_owned(), "Print this help"),
        ("-V, --version".to_owned(), "Print the version"),
    ];
    let flags = FLAGS.iter().map(|(name, value, help)| match value {
        Some(v) => (format!("--{name} {v}"), *help),
        None => (format!("--{name}"), *help),
    });
    for (left, what) in flags.chain(rest) {
        match left.len() {
            n if n < 28 => s.push_str(&format!("  {left:<28}{what}\n")),
            _ => s.push_str(&format!("  {left}\n  {:<28}{what}\n", "")),
        }
    }
    s
}

/// The `--version` text.
pub fn version() -> String {
    format!("inetd-core {}", env!("CARGO_PKG_VERSION"))
}

fn err<T>(msg: String) -> Result<T, UsageError> {
    Err(UsageError(msg))
}

/// A number of seconds from 1 to a day, the value of `--name`.
fn seconds(name: &str, t: &str) -> Result<u64, UsageError> {
    match t.parse::<u64>() {
        Ok(n) if (1..=DGRAM_IDLE_MAX).contains(&n) => Ok(n),
        _ => err(format!(
            "invalid value '{t}' for --{name}: a number of seconds from 1 to {DGRAM_IDLE_MAX}"
        )),
    }
}

/// Puts the value `v` of flag `name` into `cli`.
fn set(cli: &mut Cli, name: &str, v: OsString) -> Result<(), UsageError> {
    let text = || {
        v.to_str()
            .ok_or_else(|| UsageError(format!("the value of --{name} is not valid UTF-8")))
    };
    match name {
        "core-socket" => cli.core_socket = Some(v.clone().into()),
        "controller-user" => cli.controller_user = Some(text()?.to_owned()),
        "control-socket" => cli.control_socket = Some(v.clone().into()),
        "config" => cli.config.push(v.clone().into()),
        "unix-dir" => cli.unix_dirs.push(v.clone().into()),
        "allow-root-services" => cli.allow_root_services = true,
        "allow-setuid-services" => cli.allow_setuid_services = true,
        "syslog" => cli.syslog = true,
        "allow-user" => cli.allow_users.push(text()?.to_owned()),
        "allow-group" => cli.allow_groups.push(text()?.to_owned()),
        "allow-root-command" => cli.allow_root_commands.push(
            RootCommand::parse(text()?)
                .map_err(|e| UsageError(format!("--allow-root-command {e}")))?,
        ),
        "dgram-idle" => cli.dgram_idle = seconds(name, text()?)?,
        "rate-window" => cli.rate_window = seconds(name, text()?)?,
        "pause" => cli.pause = seconds(name, text()?)?,
        "builtin-idle" => cli.builtin_idle = seconds(name, text()?)?,
        "max-children" => match text()?.parse::<u32>() {
            Ok(n) if n <= MAX_CHILDREN_MAX => cli.max_children = n,
            _ => {
                let t = text()?;
                return err(format!("invalid value '{t}' for --max-children: a number from 0 (unlimited) to {MAX_CHILDREN_MAX}"));
            }
        },
        "log-level" => {
            let t = text()?;
            let Some(level) = LOG_LEVELS.into_iter().find(|l| *l == t) else {
                return err(format!(
                    "invalid value '{t}' for --log-level: one of error, warn, info, debug, trace"
                ));
            };
            cli.log_level = level;
        }
        _ => return err(format!("unexpected argument '--{name}'")),
    }
    Ok(())
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, UsageError> {
    let mut cli = Cli {
        dgram_idle: 30,
        max_children: 1024,
        rate_window: 60,
        pause: 600,
        builtin_idle: 300,
        log_level: "info",
        ..Cli::default()
    };
    let mut seen: Vec<&str> = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_bytes() {
            b"--" => {
                cli.controller_args.extend(args);
                break;
            }
            b"-h" | b"--help" => return Ok(Command::Help),
            b"-V" | b"--version" => return Ok(Command::Version),
            _ => {}
        }
        let unexpected = || UsageError(format!("unexpected argument '{}'", arg.to_string_lossy()));
        let body = arg.as_bytes().strip_prefix(b"--").ok_or_else(unexpected)?;
        let (name, inline) = match body.iter().position(|&b| b == b'=') {
            Some(i) => (&body[..i], Some(OsStr::from_bytes(&body[i + 1..]))),
            None => (body, None),
        };
        let &(flag, meta, _) = FLAGS
            .iter()
            .find(|f| f.0.as_bytes() == name)
            .ok_or_else(unexpected)?;
        if !REPEATABLE.contains(&flag) && seen.contains(&flag) {
            return err(format!("--{flag} cannot be given more than once"));
        }
        seen.push(flag);
        let value = match (meta, inline) {
            (None, None) => OsString::new(),
            (None, Some(_)) => return err(format!("--{flag} takes no value")),
            (Some(_), Some(v)) if v.is_empty() => {
                return err(format!("--{flag} needs a value, not an empty one"))
            }
            (Some(_), Some(v)) => v.to_owned(),
            // A separate value never starts with '-', so a forgotten value
            // is not filled with the next flag; `--flag=-x` passes one.
            (Some(meta), None) => match args.next() {
                Some(v) if !v.is_empty() && !v.as_bytes().starts_with(b"-") => v,
                _ => return err(format!("--{flag} needs a value ({meta})")),
            },
        };
        set(&mut cli, flag, value)?;
    }
    Ok(Command::Run(Box::new(cli)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Cli, UsageError> {
        match parse(args.iter().map(OsString::from))? {
            Command::Run(c) => Ok(*c),
            other => panic!("{other:?}"),
        }
    }

    fn usage(args: &[&str]) -> String {
        run(args).expect_err("should be a usage error").0
    }

    #[test]
    fn parses_every_flag() {
        let c = run(&[
            "--core-socket",
            "/tmp/c.sock",
            "--controller-user",
            "inetd",
            "--allow-root-services",
            "--allow-setuid-services",
            "--dgram-idle",
            "5",
            "--log-level",
            "debug",
            "--config",
            "/a",
            "--config",
            "/b",
            "--control-socket",
            "/tmp/x",
            "--unix-dir",
            "/run/a",
            "--unix-dir=/run/b",
            "--",
            "--services",
            "/s",
        ])
        .unwrap();
        assert_eq!(c.core_socket, Some(PathBuf::from("/tmp/c.sock")));
        assert_eq!(c.controller_user.as_deref(), Some("inetd"));
        assert_eq!(c.dgram_idle, 5);
        assert_eq!(c.log_level, "debug");
        assert_eq!(c.config, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(c.control_socket, Some(PathBuf::from("/tmp/x")));
        assert_eq!(
            c.unix_dirs,
            ["/run/a", "/run/b"].map(PathBuf::from).to_vec()
        );
        assert_eq!(
            c.controller_args,
            vec![OsString::from("--services"), OsString::from("/s")]
        );
        assert!(c.allow_root_services && c.allow_setuid_services);
    }

    #[test]
    fn the_limit_knobs() {
        let c = run(&[
            "--max-children=0",
            "--rate-window",
            "2",
            "--pause=3",
            "--builtin-idle",
            "4",
        ])
        .unwrap();
        assert_eq!(
            (c.max_children, c.rate_window, c.pause, c.builtin_idle),
            (0, 2, 3, 4)
        );
        for (flag, bad) in [
            ("--max-children", "x"),
            ("--max-children", "4194305"),
            ("--rate-window", "0"),
            ("--pause", "86401"),
            ("--builtin-idle", "1s"),
        ] {
            let e = usage(&[flag, bad]);
            assert!(e.contains(&format!("for {flag}")), "{flag} {bad}: {e}");
        }
    }

    #[test]
    fn equals_form_and_separate_form_agree() {
        let a = run(&["--config=/a", "--log-level=warn", "--dgram-idle=7"]).unwrap();
        let b = run(&["--config", "/a", "--log-level", "warn", "--dgram-idle", "7"]).unwrap();
        assert_eq!(a, b);
        // Only the first '=' splits; a value may start with '-' this way.
        let c = run(&["--config=/a=b", "--controller-user=-1"]).unwrap();
        assert_eq!(c.config, vec![PathBuf::from("/a=b")]);
        assert_eq!(c.controller_user.as_deref(), Some("-1"));
    }

    #[test]
    fn defaults() {
        let c = run(&[]).unwrap();
        assert_eq!(c.dgram_idle, 30);
        assert_eq!(
            (c.max_children, c.rate_window, c.pause, c.builtin_idle),
            (1024, 60, 600, 300)
        );
        assert_eq!(c.log_level, "info");
        assert!(c.config.is_empty() && c.core_socket.is_none() && !c.allow_root_services);
    }

    #[test]
    fn everything_after_the_separator_goes_to_the_controller() {
        let c = run(&["--", "--config", "/x", "--", "plain"]).unwrap();
        assert!(c.config.is_empty());
        assert_eq!(c.controller_args.len(), 4);
        assert_eq!(run(&["--"]).unwrap().controller_args.len(), 0);
    }

    #[test]
    fn non_utf8_paths_pass_through() {
        use std::os::unix::ffi::OsStringExt;
        let raw = OsString::from_vec(b"/tmp/\xff.conf".to_vec());
        let got = parse([OsString::from("--config"), raw.clone()]).unwrap();
        match got {
            Command::Run(c) => assert_eq!(c.config, vec![PathBuf::from(raw)]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn help_and_version() {
        for a in ["--help", "-h"] {
            assert_eq!(parse([OsString::from(a)]).unwrap(), Command::Help);
        }
        for a in ["--version", "-V"] {
            assert_eq!(parse([OsString::from(a)]).unwrap(), Command::Version);
        }
        // Even after other flags, as with any tool.
        let args = ["--config", "/a", "--help"].map(OsString::from);
        assert_eq!(parse(args).unwrap(), Command::Help);
        let h = help();
        for (name, ..) in FLAGS {
            assert!(h.contains(&format!("--{name}")), "{name}");
        }
        assert!(h.contains("--version") && h.contains("CONTROLLER-ARGS"));
        assert!(version().starts_with("inetd-core "));
    }

    #[test]
    fn usage_errors_say_what_is_wrong() {
        let cases: &[(&[&str], &str)] = &[
            (&["--dgram-idle", "0"], "--dgram-idle"),
            (&["--dgram-idle", "86401"], "1 to 86400"),
            (&["--dgram-idle", "x"], "invalid value 'x'"),
            (&["--log-level", "loud"], "one of error"),
            (&["--nope"], "unexpected argument '--nope'"),
            (&["--help=yes"], "unexpected argument"),
            (&["stray"], "unexpected argument 'stray'"),
            (&["-x"], "unexpected argument '-x'"),
            (&["--config"], "--config needs a value (PATH)"),
            (
                &["--config", "--log-level", "info"],
                "--config needs a value",
            ),
            (&["--config="], "not an empty one"),
            (&["--allow-root-services=yes"], "takes no value"),
            (
                &["--core-socket", "/a", "--core-socket", "/b"],
                "more than once",
            ),
            (
                &["--log-level=info", "--log-level", "info"],
                "more than once",
            ),
        ];
        for (args, want) in cases {
            let e = usage(args);
            assert!(e.contains(want), "{args:?}: {e}");
        }
        let shown = UsageError("x".into()).to_string();
        assert!(shown.starts_with("error: x\n") && shown.contains(USAGE));
    }

    #[test]
    fn allowed_identities_and_root_commands() {
        let c = run(&[
            "--allow-user",
            "postgres",
            "--allow-user=109",
            "--allow-group",
            "shadow",
            "--allow-root-command",
            "/usr/sbin/in.tftpd in.tftpd -s /srv/tftp -u tftp",
            "--allow-root-command=/usr/bin/id id -u",
        ])
        .unwrap();
        assert_eq!(c.allow_users, ["postgres", "109"]);
        assert_eq!(c.allow_groups, ["shadow"]);
        let lines: Vec<String> = c.allow_root_commands.iter().map(|r| r.line()).collect();
        assert_eq!(
            lines,
            [
                "/usr/sbin/in.tftpd in.tftpd -s /srv/tftp -u tftp",
                "/usr/bin/id id -u"
            ]
        );
        assert_eq!(c.allow_root_commands[1].argv, ["id", "-u"]);
        for (args, want) in [
            (&["--allow-root-command=id id"][..], "absolute"),
            (&["--allow-root-command", "/usr/bin/id"][..], "argv[0]"),
            (&["--allow-root-command=   "][..], "absolute"),
            (&["--allow-root-command", "./id id"][..], "absolute"),
            (&["--allow-user"][..], "needs a value"),
        ] {
            let e = usage(args);
            assert!(e.contains(want) && e.contains("--allow-"), "{args:?}: {e}");
        }
        assert!(help().contains("--allow-root-command 'PATH ARG0 ARGS...'\n"));
    }

    #[test]
    fn repeatable_flags_keep_their_order() {
        let c = run(&["--config", "/b", "--config=/a", "--config", "/c"]).unwrap();
        assert_eq!(
            c.config,
            ["/b", "/a", "/c"].map(PathBuf::from).to_vec(),
            "order is the controller's reading order"
        );
    }
}
