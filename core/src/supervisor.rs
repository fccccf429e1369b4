//! One-command mode: the core starts `inetd-controller` itself, joined by
//! a socketpair on its descriptor 3, and restarts it when it dies, by a
//! pure policy ([`RestartPolicy`]): three deaths in a row before its
//! `Hello` reached the core make the core give up (exit 1: a config it
//! cannot read, say); after Hello, restarts back off from 1 s to 30 s,
//! reset after a minute of running. Listeners keep serving meanwhile.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{error, info, warn};

use crate::backoff::{self, Backoff};
use crate::children::ChildTable;
use crate::link::{ConnId, Links};
use crate::sys::ExitStatus;
use crate::validate::{ExecImage, Identity};

const MAX_EARLY_FAILURES: u32 = 3;
/// A controller that ran this long restarts after the shortest delay.
const STABLE_RUN: Duration = Duration::from_secs(60);

/// How to start the controller child, prepared once at start.
pub struct ControllerPlan {
    pub identity: Identity,
    pub image: ExecImage,
    /// The controller's stdin and stdout.
    pub devnull: OwnedFd,
}

/// The controller's argv: `--core-fd 3`, then what is passed on.
pub fn controller_argv(
    configs: &[PathBuf],
    control_socket: &Path,
    log_level: &str,
    syslog: bool,
    extra: &[OsString],
) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec!["inetd-controller".into(), "--core-fd".into(), "3".into()];
    for c in configs {
        v.push("--config".into());
        v.push(c.as_os_str().to_owned());
    }
    v.push("--control-socket".into());
    v.push(control_socket.as_os_str().to_owned());
    v.push("--log-level".into());
    v.push(log_level.into());
    if syslog {
        v.push("--syslog".into());
    }
    v.extend(extra.iter().cloned());
    v
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It could not start, or died before its Hello reached the core.
    Early,
    /// It had reached the core and ran this long.
    AfterHello { ran_for: Duration },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Restart {
        after: Duration,
    },
    /// That many early failures in a row: give up.
    GiveUp {
        failures: u32,
    },
}

/// When to restart the controller (pure: no clock, no processes).
#[derive(Debug, Clone)]
pub struct RestartPolicy {
    failures: u32,
    backoff: Backoff,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            failures: 0,
            backoff: Backoff::new(
                backoff::CONTROLLER_RESTART_FIRST,
                backoff::CONTROLLER_RESTART_MAX,
            ),
        }
    }
}

impl RestartPolicy {
    pub fn reached(&mut self) {
        self.failures = 0;
    }

    pub fn decide(&mut self, ended: Ended) -> Decision {
        match ended {
            Ended::Early => {
                self.failures += 1;
                if self.failures >= MAX_EARLY_FAILURES {
                    return Decision::GiveUp {
                        failures: self.failures,
                    };
                }
            }
            Ended::AfterHello { ran_for } => {
                self.failures = 0;
                if ran_for >= STABLE_RUN {
                    self.backoff.reset();
                }
            }
        }
        Decision::Restart {
            after: self.backoff.next_delay(),
        }
    }
}

/// The core gives up on its controller (exit 1).
#[derive(Debug)]
pub struct GiveUp;

/// The controller child and its link.
pub struct Supervisor {
    plan: ControllerPlan,
    pid: Option<i32>,
    link: Option<ConnId>,
    reached: bool,
    policy: RestartPolicy,
    restart_at: Option<Instant>,
}

impl Supervisor {
    /// A supervisor that starts the controller at once.
    pub fn new(plan: ControllerPlan) -> Supervisor {
        Supervisor {
            plan,
            pid: None,
            link: None,
            reached: false,
            policy: RestartPolicy::default(),
            restart_at: Some(Instant::now()),
        }
    }

    pub fn restart_at(&self) -> Option<Instant> {
        self.restart_at
    }

    pub fn hello(&mut self) {
        self.reached = true;
        self.policy.reached();
    }

    /// Starts the controller: a socketpair, the core's end in `links`.
    pub fn start(&mut self, children: &mut ChildTable, links: &mut Links) -> Result<(), GiveUp> {
        self.restart_at = None;
        let (ours, theirs) = match UnixStream::pair() {
            Ok(p) => p,
            Err(e) => {
                error!("cannot make the controller's socketpair: {e}");
                return self.after(Ended::Early);
            }
        };
        if let Err(e) = ours.set_nonblocking(true) {
            error!("cannot make the controller's socketpair nonblocking: {e}");
            return self.after(Ended::Early);
        }
        let dn = self.plan.devnull.as_raw_fd();
        // stdin and stdout on /dev/null, the core's stderr, the link on 3.
        let fds = [dn, dn, 2, theirs.as_raw_fd()];
        let r = children.spawn_controller(&self.plan.identity, &self.plan.image, &fds);
        drop(theirs);
        match r {
            Ok(pid) => {
                let uid = self.plan.identity.uid();
                self.pid = Some(pid);
                self.reached = false;
                self.link = Some(links.add_controller_link(ours, pid));
                info!("started inetd-controller pid={pid} as uid {uid}");
                Ok(())
            }
            Err(e) => {
                error!("cannot start inetd-controller: {e}");
                self.after(Ended::Early)
            }
        }
    }

    /// Child `pid` ended; if it was the controller, its link is closed and,
    /// unless the core is `stopping`, a restart planned.
    pub fn exited(
        &mut self,
        pid: i32,
        status: ExitStatus,
        started: Instant,
        links: &mut Links,
        stopping: bool,
    ) -> Result<(), GiveUp> {
        if self.pid != Some(pid) {
            return Ok(());
        }
        self.pid = None;
        if let Some(cid) = self.link.take() {
            links.remove(cid);
        }
        if stopping {
            return Ok(());
        }
        warn!("inetd-controller pid={pid} ended: {status}");
        if self.reached {
            self.after(Ended::AfterHello {
                ran_for: started.elapsed(),
            })
        } else {
            self.after(Ended::Early)
        }
    }

    fn after(&mut self, ended: Ended) -> Result<(), GiveUp> {
        match self.policy.decide(ended) {
            Decision::GiveUp { failures } => {
                error!(
                    "inetd-controller failed {failures} times in a row before reaching the core; giving up"
                );
                Err(GiveUp)
            }
            Decision::Restart { after } => {
                self.restart_at = Some(Instant::now() + after);
                match ended {
                    Ended::Early => {
                        warn!("restarting inetd-controller in {} s", after.as_secs_f32())
                    }
                    Ended::AfterHello { .. } => info!(
                        "restarting inetd-controller in {} s; listeners keep serving meanwhile",
                        after.as_secs_f32()
                    ),
                }
                Ok(())
            }
        }
    }

    /// SIGHUP to the core: the controller reloads.
    pub fn forward_hup(&self, children: &ChildTable) {
        match self.pid {
            Some(pid) => {
                info!("SIGHUP: forwarded to inetd-controller pid={pid} (reload)");
                if let Err(e) = children.signal(pid, libc::SIGHUP) {
                    warn!("cannot forward SIGHUP to the controller: {e}");
                }
            }
            None => warn!("SIGHUP: no controller running to reload"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(d: Decision) -> f32 {
        match d {
            Decision::Restart { after } => after.as_secs_f32(),
            Decision::GiveUp { .. } => panic!("{d:?}"),
        }
    }

    #[test]
    fn three_early_failures_in_a_row_give_up() {
        let mut p = RestartPolicy::default();
        assert_eq!(secs(p.decide(Ended::Early)), 1.0);
        assert_eq!(secs(p.decide(Ended::Early)), 2.0);
        assert_eq!(p.decide(Ended::Early), Decision::GiveUp { failures: 3 });
    }

    #[test]
    fn reaching_the_core_resets_the_early_count() {
        let mut p = RestartPolicy::default();
        p.decide(Ended::Early);
        p.decide(Ended::Early);
        p.reached();
        assert!(matches!(p.decide(Ended::Early), Decision::Restart { .. }));
        assert!(matches!(p.decide(Ended::Early), Decision::Restart { .. }));
        assert!(matches!(p.decide(Ended::Early), Decision::GiveUp { .. }));
    }

    #[test]
    fn restarts_back_off_to_30s_and_reset_after_a_stable_run() {
        let mut p = RestartPolicy::default();
        let short = Ended::AfterHello {
            ran_for: Duration::from_secs(5),
        };
        let got: Vec<f32> = (0..7).map(|_| secs(p.decide(short))).collect();
        assert_eq!(got, [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]);
        let stable = Ended::AfterHello {
            ran_for: STABLE_RUN,
        };
        assert_eq!(secs(p.decide(stable)), 1.0);
        // A death after Hello never counts towards giving up.
        for _ in 0..10 {
            assert!(matches!(p.decide(short), Decision::Restart { .. }));
        }
    }

    #[test]
    fn controller_arguments() {
        let v = controller_argv(
            &[PathBuf::from("/a.conf"), PathBuf::from("/d")],
            Path::new("/run/inetd/control/control.sock"),
            "debug",
            false,
            &["--services".into(), "/s".into()],
        );
        let v: Vec<&str> = v.iter().map(|s| s.to_str().unwrap()).collect();
        assert_eq!(
            v,
            vec![
                "inetd-controller",
                "--core-fd",
                "3",
                "--config",
                "/a.conf",
                "--config",
                "/d",
                "--control-socket",
                "/run/inetd/control/control.sock",
                "--log-level",
                "debug",
                "--services",
                "/s"
            ]
        );
        let v = controller_argv(&[], Path::new("/c.sock"), "info", true, &[]);
        let v: Vec<&str> = v.iter().map(|s| s.to_str().unwrap()).collect();
        assert_eq!(v[v.len() - 3..], ["--log-level", "info", "--syslog"]);
    }
}
