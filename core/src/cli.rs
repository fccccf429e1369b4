//! The command line, exactly as DESIGN.md "Command lines" fixes it.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
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

/// The privileged half of inetd: binds, accepts, forks, drops privileges,
/// execs. Without --config it serves the controller that connects to its
/// core socket; with --config it starts inetd-controller itself.
#[derive(Debug, Parser)]
#[command(name = "inetd-core", version)]
pub struct Cli {
    /// The core socket (packaged mode). Default: RUN/core.sock.
    #[arg(long, value_name = "PATH")]
    pub core_socket: Option<PathBuf>,

    /// The controller's user, by name or uid (root only; default: inetd).
    #[arg(long, value_name = "USER")]
    pub controller_user: Option<String>,

    /// Allow services that run with uid, gid or a group 0.
    #[arg(long)]
    pub allow_root_services: bool,

    /// Let non-root services gain privileges through setuid programs
    /// (no no_new_privs).
    #[arg(long)]
    pub allow_setuid_services: bool,

    /// A datagram builtin exits after this many seconds without a datagram.
    #[arg(long, value_name = "SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub dgram_idle: u64,

    /// error, warn, info, debug or trace.
    #[arg(long, value_name = "LEVEL", value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,

    /// One-command mode: start inetd-controller with this configuration
    /// (repeatable; a directory means its *.conf files).
    #[arg(long, value_name = "PATH")]
    pub config: Vec<PathBuf>,

    /// One-command mode: the control socket the controller serves.
    /// Default: RUN/control/control.sock.
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,

    /// One-command mode: further arguments for inetd-controller.
    #[arg(last = true, value_name = "CONTROLLER-ARGS")]
    pub controller_args: Vec<OsString>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_flag() {
        let c = Cli::try_parse_from([
            "inetd-core",
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
        assert_eq!(c.dgram_idle, 5);
        assert_eq!(c.log_level, LogLevel::Debug);
        assert_eq!(c.config.len(), 2);
        assert_eq!(
            c.controller_args,
            vec![OsString::from("--services"), OsString::from("/s")]
        );
        assert!(c.allow_root_services && c.allow_setuid_services);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["inetd-core", "--dgram-idle", "0"][..],
            &["inetd-core", "--dgram-idle", "x"],
            &["inetd-core", "--log-level", "loud"],
            &["inetd-core", "--nope"],
        ] {
            let e = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn defaults() {
        let c = Cli::try_parse_from(["inetd-core"]).unwrap();
        assert_eq!(c.dgram_idle, 30);
        assert_eq!(c.log_level, LogLevel::Info);
        assert!(c.config.is_empty() && c.core_socket.is_none());
    }
}
