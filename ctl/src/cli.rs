//! The command lines of `inetd-controller` and `inetctl`. They live in the
//! library, not in the binaries, so that the packaging's generator renders
//! the man pages' option sections and the shell completions from the same
//! definitions the binaries parse with.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{access, SourcePrefix};

#[derive(Parser, Debug)]
#[command(
    name = "inetd-controller",
    version,
    about = "The unprivileged half of inetd: reads inetd.conf, drives inetd-core, serves inetctl"
)]
pub struct ControllerArgs {
    /// A configuration file or directory (its *.conf files); repeatable.
    /// Default: /etc/inetd.conf and /etc/inetd.d.
    #[arg(long = "config", value_name = "PATH")]
    pub config: Vec<PathBuf>,
    /// The core's socket. Default: RUN/core.sock.
    #[arg(long, value_name = "PATH", conflicts_with = "core_fd")]
    pub core_socket: Option<PathBuf>,
    /// An inherited socket to the core (one-command mode).
    #[arg(long, value_name = "N")]
    pub core_fd: Option<i32>,
    /// The control socket. Default: RUN/control/control.sock.
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,
    /// Members of this group may reload.
    #[arg(long, value_name = "GROUP", default_value = "inetd-admin")]
    pub admin_group: String,
    /// error, warn, info, debug or trace.
    #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = crate::logger::parse_level)]
    pub log_level: log::LevelFilter,
    /// Log to the local syslog (/dev/log, facility daemon, ident
    /// inetd-controller) instead of stderr.
    #[arg(long)]
    pub syslog: bool,
    /// Read service names from FILE instead of /etc/services.
    #[arg(long, value_name = "FILE")]
    pub services: Option<PathBuf>,
    /// Read users from FILE instead of NSS.
    #[arg(long, value_name = "FILE")]
    pub passwd: Option<PathBuf>,
    /// Read groups from FILE instead of NSS.
    #[arg(long, value_name = "FILE")]
    pub group: Option<PathBuf>,
    /// Per-source limits group clients by these prefix lengths (IPv4,IPv6),
    /// so one client cannot dodge them by rotating addresses in its network.
    #[arg(long, value_name = "V4,V6", default_value = "32,128")]
    pub source_prefix: SourcePrefix,
    /// The tcpwrappers allow file (hosts_access(5)); missing means empty.
    #[arg(long, value_name = "FILE", default_value = access::DEFAULT_HOSTS_ALLOW)]
    pub hosts_allow: PathBuf,
    /// The tcpwrappers deny file (hosts_access(5)); missing means empty.
    #[arg(long, value_name = "FILE", default_value = access::DEFAULT_HOSTS_DENY)]
    pub hosts_deny: PathBuf,
}

#[derive(Parser, Debug)]
#[command(name = "inetctl", version, about = "Control and inspect inetd")]
pub struct InetctlArgs {
    /// The controller's control socket. Default: your own instance's if it
    /// exists, else /run/inetd/control/control.sock.
    #[arg(long, value_name = "PATH", global = true)]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    pub command: InetctlCommand,
}

#[derive(Subcommand, Debug)]
pub enum InetctlCommand {
    /// One row per listener, rejected entries included.
    List {
        /// Print the stable JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The controller's and the core's state.
    Status {
        /// Print the stable JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Reread the configuration and apply it (admins only). Nothing changes
    /// if any entry is bad, unless --partial.
    Reload {
        /// Apply the good entries even if some are bad (still exits 1).
        #[arg(long)]
        partial: bool,
    },
    /// Check configuration files locally. Default: the files the running
    /// controller uses when one answers, else the default configuration.
    /// When a controller answers, entries its running core would refuse
    /// (users, groups, root, unix directories) are errors too.
    Check {
        /// Configuration files or directories (their *.conf files) to
        /// check instead of the default configuration.
        #[arg(value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// The tcpwrappers allow file to compile the access lists from.
        #[arg(long, value_name = "FILE", default_value = access::DEFAULT_HOSTS_ALLOW)]
        hosts_allow: PathBuf,
        /// The tcpwrappers deny file to compile the access lists from.
        #[arg(long, value_name = "FILE", default_value = access::DEFAULT_HOSTS_DENY)]
        hosts_deny: PathBuf,
    },
    /// The live children, one per connection: pid, service, client, user,
    /// start time and age (admins only).
    Connections {
        /// Print the stable JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Counters and states in the Prometheus text format, for
    /// node_exporter's textfile collector.
    Metrics,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_definitions_are_consistent() {
        ControllerArgs::command().debug_assert();
        InetctlArgs::command().debug_assert();
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        let e = ControllerArgs::try_parse_from(["inetd-controller", "--log-level", "loud"])
            .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = ControllerArgs::try_parse_from([
            "inetd-controller",
            "--core-socket",
            "/a",
            "--core-fd",
            "3",
        ])
        .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let a = InetctlArgs::try_parse_from(["inetctl", "reload", "--partial", "--socket", "/s"])
            .unwrap();
        assert!(matches!(
            a.command,
            InetctlCommand::Reload { partial: true }
        ));
        assert_eq!(a.socket, Some(PathBuf::from("/s")));
    }

    #[test]
    fn limits_and_access_flags() {
        let a = ControllerArgs::try_parse_from(["inetd-controller"]).unwrap();
        assert_eq!(a.source_prefix, SourcePrefix { v4: 32, v6: 128 });
        assert_eq!(a.hosts_allow, PathBuf::from("/etc/hosts.allow"));
        assert_eq!(a.hosts_deny, PathBuf::from("/etc/hosts.deny"));
        let a = ControllerArgs::try_parse_from([
            "inetd-controller",
            "--source-prefix",
            "24,64",
            "--hosts-allow",
            "/a",
            "--hosts-deny",
            "/d",
        ])
        .unwrap();
        assert_eq!(a.source_prefix, SourcePrefix { v4: 24, v6: 64 });
        assert_eq!(a.hosts_allow, PathBuf::from("/a"));
        assert_eq!(a.hosts_deny, PathBuf::from("/d"));
        for bad in [
            "33,64", "24,129", "0,64", "24", "24,64,1", "+24,64", "a,b", "",
        ] {
            let e = ControllerArgs::try_parse_from(["inetd-controller", "--source-prefix", bad])
                .unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
        let a = InetctlArgs::try_parse_from(["inetctl", "check", "--hosts-deny", "/d", "x.conf"])
            .unwrap();
        match a.command {
            InetctlCommand::Check {
                paths,
                hosts_allow,
                hosts_deny,
            } => {
                assert_eq!(paths, vec![PathBuf::from("x.conf")]);
                assert_eq!(hosts_allow, PathBuf::from("/etc/hosts.allow"));
                assert_eq!(hosts_deny, PathBuf::from("/d"));
            }
            other => panic!("{other:?}"),
        }
    }
}
