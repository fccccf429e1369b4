//! The command line (fixed: scripts and packaging depend on it), parsed by
//! hand: a table of flags, `--flag value` and `--flag=value`, repeatable
//! flags collected in order, everything after `--` passed to the
//! controller. A parser library would add far more code to the root
//! binary than these few flags need. Pure: takes the arguments, returns a
//! value or a usage error (exit 2).
#![forbid(unsafe_code)]

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    const ALL: [LogLevel; 5] = [
        LogLevel::Error,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
    ];

    pub fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// The largest `--dgram-idle`: a day.
const DGRAM_IDLE_MAX: u64 = 86_400;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cli {
    /// The core socket (packaged mode).
    pub core_socket: Option<PathBuf>,
    /// The controller's user, by name or uid (root only; default: inetd).
    pub controller_user: Option<String>,
    pub allow_root_services: bool,
    pub allow_setuid_services: bool,
    /// Seconds without a datagram after which a dgram builtin exits.
    pub dgram_idle: u64,
    pub log_level: LogLevel,
    /// One-command mode: the controller's configuration (repeatable).
    pub config: Vec<PathBuf>,
    /// One-command mode: the control socket the controller serves.
    pub control_socket: Option<PathBuf>,
    /// One-command mode: everything after `--`.
    pub controller_args: Vec<OsString>,
}

impl Default for Cli {
    fn default() -> Self {
        Cli {
            core_socket: None,
            controller_user: None,
            allow_root_services: false,
            allow_setuid_services: false,
            dgram_idle: 30,
            log_level: LogLevel::Info,
            config: Vec::new(),
            control_socket: None,
            controller_args: Vec::new(),
        }
    }
}

/// The outcome of a command line that parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(Cli),
    /// `--help`: print [`help`] on stdout, exit 0.
    Help,
    /// `--version`: print [`version`] on stdout, exit 0.
    Version,
}

/// A command line that does not parse: printed with [`USAGE`], exit 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "error: {}\n\n{USAGE}\n\nFor more information, try '--help'.",
            self.0
        )
    }
}

pub const USAGE: &str = "Usage: inetd-core [OPTIONS] [-- CONTROLLER-ARGS...]";

/// One flag: its name, the name of its value (`None` for a switch),
/// whether it may be given more than once, and its help line.
struct Flag {
    name: &'static str,
    value: Option<&'static str>,
    repeatable: bool,
    help: &'static str,
}

const fn flag(name: &'static str, value: Option<&'static str>, help: &'static str) -> Flag {
    Flag {
        name,
        value,
        repeatable: false,
        help,
    }
}

const FLAGS: [Flag; 8] = [
    flag(
        "core-socket",
        Some("PATH"),
        "The core socket (packaged mode). Default: RUN/core.sock",
    ),
    flag(
        "controller-user",
        Some("USER"),
        "The controller's user, by name or uid (root only; default: inetd)",
    ),
    flag(
        "allow-root-services",
        None,
        "Allow services that run with uid, gid or a group 0",
    ),
    flag(
        "allow-setuid-services",
        None,
        "Let non-root services gain privileges through setuid programs (no no_new_privs)",
    ),
    flag(
        "dgram-idle",
        Some("SECONDS"),
        "A datagram builtin exits after this many seconds without a datagram (1-86400) [default: 30]",
    ),
    flag(
        "log-level",
        Some("LEVEL"),
        "error, warn, info, debug or trace [default: info]",
    ),
    Flag {
        repeatable: true,
        ..flag(
            "config",
            Some("PATH"),
            "One-command mode: start inetd-controller with this configuration (repeatable; a directory means its *.conf files)",
        )
    },
    flag(
        "control-socket",
        Some("PATH"),
        "One-command mode: the control socket the controller serves. Default: RUN/control/control.sock",
    ),
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
    for f in &FLAGS {
        let left = match f.value {
            Some(v) => format!("--{} {v}", f.name),
            None => format!("--{}", f.name),
        };
        s.push_str(&format!("  {left:<28}{}\n", f.help));
    }
    for (left, what) in [
        (
            "-- CONTROLLER-ARGS...",
            "One-command mode: further arguments for inetd-controller",
        ),
        ("-h, --help", "Print this help"),
        ("-V, --version", "Print the version"),
    ] {
        s.push_str(&format!("  {left:<28}{what}\n"));
    }
    s
}

/// The `--version` text.
pub fn version() -> String {
    format!("inetd-core {}", env!("CARGO_PKG_VERSION"))
}

fn err<T>(msg: impl Into<String>) -> Result<T, UsageError> {
    Err(UsageError(msg.into()))
}

fn text(name: &str, v: &OsStr) -> Result<String, UsageError> {
    v.to_str()
        .map(str::to_owned)
        .ok_or_else(|| UsageError(format!("the value of --{name} is not valid UTF-8")))
}

/// Puts the value of flag `name` into `cli`.
fn set(cli: &mut Cli, name: &str, v: OsString) -> Result<(), UsageError> {
    match name {
        "core-socket" => cli.core_socket = Some(v.into()),
        "controller-user" => cli.controller_user = Some(text(name, &v)?),
        "control-socket" => cli.control_socket = Some(v.into()),
        "config" => cli.config.push(v.into()),
        "dgram-idle" => {
            let t = text(name, &v)?;
            cli.dgram_idle = match t.parse::<u64>() {
                Ok(n) if (1..=DGRAM_IDLE_MAX).contains(&n) => n,
                _ => {
                    return err(format!(
                        "invalid value '{t}' for --dgram-idle: a number of seconds from 1 to {DGRAM_IDLE_MAX}"
                    ))
                }
            }
        }
        "log-level" => {
            let t = text(name, &v)?;
            cli.log_level = LogLevel::ALL
                .into_iter()
                .find(|l| l.as_str() == t)
                .ok_or_else(|| {
                    UsageError(format!(
                        "invalid value '{t}' for --log-level: one of error, warn, info, debug, trace"
                    ))
                })?;
        }
        "allow-root-services" => cli.allow_root_services = true,
        "allow-setuid-services" => cli.allow_setuid_services = true,
        _ => return err(format!("unexpected argument '--{name}'")),
    }
    Ok(())
}

/// Parses the arguments after the program name.
pub fn parse<I>(args: I) -> Result<Command, UsageError>
where
    I: IntoIterator<Item = OsString>,
{
    let mut cli = Cli::default();
    let mut seen: Vec<&'static str> = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let bytes = arg.as_bytes();
        match bytes {
            b"--" => {
                cli.controller_args.extend(args);
                break;
            }
            b"-h" | b"--help" => return Ok(Command::Help),
            b"-V" | b"--version" => return Ok(Command::Version),
            _ => {}
        }
        let Some(body) = bytes.strip_prefix(b"--") else {
            return err(format!("unexpected argument '{}'", arg.to_string_lossy()));
        };
        let (name, inline) = match body.iter().position(|&b| b == b'=') {
            Some(i) => (&body[..i], Some(OsStr::from_bytes(&body[i + 1..]))),
            None => (body, None),
        };
        let Some(f) = FLAGS.iter().find(|f| f.name.as_bytes() == name) else {
            return err(format!("unexpected argument '{}'", arg.to_string_lossy()));
        };
        if !f.repeatable && seen.contains(&f.name) {
            return err(format!("--{} cannot be given more than once", f.name));
        }
        seen.push(f.name);
        let value = match (f.value, inline) {
            (None, None) => OsString::new(),
            (None, Some(_)) => return err(format!("--{} takes no value", f.name)),
            (Some(_), Some(v)) => v.to_owned(),
            // A separate value never starts with '-', so a forgotten value
            // is not filled with the next flag; `--flag=-x` passes one.
            (Some(meta), None) => match args.next() {
                Some(v) if !v.as_bytes().starts_with(b"-") => v,
                _ => return err(format!("--{} needs a value ({meta})", f.name)),
            },
        };
        if f.value.is_some() && value.is_empty() {
            return err(format!("--{} needs a value, not an empty one", f.name));
        }
        set(&mut cli, f.name, value)?;
    }
    Ok(Command::Run(cli))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Cli, UsageError> {
        match parse(args.iter().map(OsString::from))? {
            Command::Run(c) => Ok(c),
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
            "--",
            "--services",
            "/s",
        ])
        .unwrap();
        assert_eq!(c.core_socket, Some(PathBuf::from("/tmp/c.sock")));
        assert_eq!(c.controller_user.as_deref(), Some("inetd"));
        assert_eq!(c.dgram_idle, 5);
        assert_eq!(c.log_level, LogLevel::Debug);
        assert_eq!(c.config, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(c.control_socket, Some(PathBuf::from("/tmp/x")));
        assert_eq!(
            c.controller_args,
            vec![OsString::from("--services"), OsString::from("/s")]
        );
        assert!(c.allow_root_services && c.allow_setuid_services);
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
        assert_eq!(c, Cli::default());
        assert_eq!(c.dgram_idle, 30);
        assert_eq!(c.log_level, LogLevel::Info);
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
        for f in &FLAGS {
            assert!(h.contains(&format!("--{}", f.name)), "{}", f.name);
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
    fn repeatable_flags_keep_their_order() {
        let c = run(&["--config", "/b", "--config=/a", "--config", "/c"]).unwrap();
        assert_eq!(
            c.config,
            ["/b", "/a", "/c"].map(PathBuf::from).to_vec(),
            "order is the controller's reading order"
        );
    }
}
