//! The controller's state machine, run by its main thread: it owns the core
//! link, the configuration in effect and the reload history, and handles
//! one event at a time (a signal, or a request from the control socket).
#![forbid(unsafe_code)]

use interprocess::os::unix::uds_local_socket::Stream;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use log::{error, info, warn};
use nix::sys::signal::Signal;

use inetd_protocol::control::{
    ConfigFileInfo, ControllerInfo, CoreInfo, CtlCommand, CtlErrorKind, CtlResponse, LastReload,
    ListReply, ReloadCounts, ReloadItem, ReloadReply, ReloadResult, StatusReply,
};
use inetd_protocol::{ApplyReport, CoreRequest, CoreResponse, Outcome, StatusReport};

use crate::config::{
    self, AccessFiles, Config, ConfigError, ConfigFile, NameSources, Reloaded, Severity,
    SourcePrefix,
};
use crate::corelink::{ApplyRequest, CoreLink, LinkError};
use crate::ctlserver::Request;
use crate::notify::Notifier;
use crate::plan::{plan, result_of, should_apply, summarize, with_drop_in, Identity, Mode, Plan};
use crate::rows::{build_rows, Applied};
use crate::timefmt::{unix_now, unix_secs};

/// First retry delay after the core is found down, doubled up to the max.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often an idle controller checks that the core link is still there.
const TICK: Duration = Duration::from_millis(500);
/// How long a status from the core answers `list` and `status` of users
/// who are not admins: any local user may ask, as often as they like, and
/// each fresh status is a full report the core builds. An apply or a lost
/// link drops it at once; admins always get a fresh one (and refresh it).
pub const STATUS_CACHE: Duration = Duration::from_secs(1);

/// The core could not be reached, so nothing changed.
#[derive(Debug)]
struct CoreDown;

pub enum Event {
    /// A signal and the pid that sent it (0 from the kernel).
    Signal(Signal, u32),
    Request(Request),
}

/// How a refused reload points at `--partial`; `started_without`: the
/// running set already leaves the bad entries out (a start skipped them).
pub fn partial_hint(started_without: bool) -> &'static str {
    if started_without {
        "the running services were started without the bad entries; inetctl reload --partial applies the good ones the same way"
    } else {
        "inetctl reload --partial applies the good entries and leaves the bad ones out"
    }
}

/// What the controller logs when `sig`, sent by `from`, stops it: what
/// really happens next depends on the mode. `core` is the pid of the
/// one-command core that started this controller, `None` in packaged mode.
pub fn stop_message(sig: Signal, from: u32, core: Option<u32>) -> String {
    match core {
        None => format!(
            "{sig}: stopping; the core keeps serving every listener, and the next controller re-syncs with it"
        ),
        Some(core) if from == core => format!(
            "{sig} from the core (pid {core}): stopping with it; the core closes its listeners and exits"
        ),
        Some(core) => format!(
            "{sig}: stopping; the core (pid {core}) keeps serving and starts a new controller (stop the core to stop both)"
        ),
    }
}

/// Where the core is.
pub enum CoreTarget {
    /// `core.sock`: reconnect whenever the link breaks.
    Socket(PathBuf),
    /// The socketpair of a one-command core: it cannot be reopened, so when
    /// it breaks the controller exits and the core starts a new one.
    Fd(Stream),
}

pub struct Settings {
    pub config_paths: Vec<PathBuf>,
    pub names: NameSources,
    /// hosts.allow and hosts.deny, reread with the configuration.
    pub access: AccessFiles,
    pub source_prefix: SourcePrefix,
    pub core: CoreTarget,
    pub admin_group: String,
    pub me: Identity,
    /// The service manager, told when the first apply is done and around
    /// every reload.
    pub notify: Notifier,
}

pub struct Daemon {
    config_paths: Vec<PathBuf>,
    names: NameSources,
    access: AccessFiles,
    source_prefix: SourcePrefix,
    core_path: Option<PathBuf>,
    core_fd: Option<Stream>,
    admin_group: String,
    me: Identity,
    link: Option<CoreLink>,
    /// The configuration the core was last given, and its outcome.
    applied: Option<Applied>,
    /// The core runs `applied`'s plan as it was sent, over the current
    /// link: the last `Apply` on it had every listener added, changed or
    /// unchanged (none refused, none failing to bind). A reload whose plan
    /// is the same then sends nothing: see [`Daemon::request_apply`].
    in_step: bool,
    /// The configuration replaced by the last apply, dropped once the
    /// reply is on its way: freeing 10,000 entries need not delay it.
    retired: Option<Applied>,
    /// The configuration read at start, taken at the first sync.
    start_config: Option<Config>,
    /// A reload was asked for while the core was down.
    reload_pending: bool,
    files: Vec<ConfigFileInfo>,
    last_reload: Option<LastReload>,
    reloads: ReloadCounts,
    generation: u64,
    /// The last status the core gave, and when: see [`STATUS_CACHE`].
    cached: Option<(Instant, StatusReport)>,
    /// [`STATUS_CACHE`], or `INETD_TEST_STATUS_CACHE_MS` for tests.
    status_cache: Duration,
    started: Instant,
    backoff: Duration,
    next_attempt: Instant,
    down_logged: bool,
    /// A socket served by someone else has been logged (an error, once,
    /// even after the core was logged down).
    untrusted_logged: bool,
    notify: Notifier,
    /// Started by a one-command core (on its socketpair): the core is the
    /// parent.
    one_command: bool,
}

fn link_down(what: &str) -> CtlResponse {
    CtlResponse::Error {
        kind: CtlErrorKind::CoreUnreachable,
        message: format!("the core is not reachable; {what} (the controller keeps retrying)"),
    }
}

/// What a loaded configuration says about itself.
struct Found {
    has_errors: bool,
    /// Its errors, one line each.
    errors: Vec<String>,
    /// Its errors and warnings, one line each.
    diagnostics: Vec<String>,
}

impl Found {
    fn of(config: &Config) -> Found {
        let line = |d: &config::Diagnostic| d.to_string();
        Found {
            has_errors: config.has_errors(),
            errors: config
                .diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .map(line)
                .collect(),
            diagnostics: config.diagnostics.iter().map(line).collect(),
        }
    }
}

/// The reply to a reload that changed nothing.
fn nothing_changed(result: ReloadResult, generation: u64, diagnostics: Vec<String>) -> ReloadReply {
    ReloadReply {
        result,
        generation,
        added: vec![],
        changed: vec![],
        removed: vec![],
        rejected: vec![],
        failed: vec![],
        unchanged: 0,
        diagnostics,
    }
}

fn failure_line(i: &ReloadItem) -> String {
    let mut s = format!("{} {} {}", i.service, i.bind, i.protocol);
    if !i.source.file.is_empty() {
        s = format!("{}:{}: {s}", i.source.file, i.source.line);
    }
    format!("{s}: {}", i.reason.as_deref().unwrap_or("failed"))
}

impl Daemon {
    /// `start_config` is the configuration read at start (an unreadable
    /// one has already made the controller exit).
    pub fn new(settings: Settings, start_config: Config) -> Daemon {
        let (core_path, core_fd) = match settings.core {
            CoreTarget::Socket(p) => (Some(p), None),
            CoreTarget::Fd(s) => (None, Some(s)),
        };
        let files = file_infos(&start_config.files);
        let one_command = core_fd.is_some();
        Daemon {
            one_command,
            config_paths: settings.config_paths,
            names: settings.names,
            access: settings.access,
            source_prefix: settings.source_prefix,
            core_path,
            core_fd,
            admin_group: settings.admin_group,
            me: settings.me,
            link: None,
            applied: None,
            in_step: false,
            retired: None,
            start_config: Some(start_config),
            reload_pending: false,
            files,
            last_reload: None,
            reloads: ReloadCounts::default(),
            generation: 0,
            cached: None,
            status_cache: crate::ctlserver::test_knob_ms("INETD_TEST_STATUS_CACHE_MS")
                .unwrap_or(STATUS_CACHE),
            started: Instant::now(),
            backoff: BACKOFF_MIN,
            next_attempt: Instant::now(),
            down_logged: false,
            untrusted_logged: false,
            notify: settings.notify,
        }
    }

    /// Runs until SIGTERM or SIGINT (Ok) or a fatal link problem (Err).
    pub fn run(&mut self, events: &Receiver<Event>) -> Result<(), String> {
        loop {
            if self.link.is_none() && Instant::now() >= self.next_attempt {
                self.connect()?;
            }
            let wait = match self.link {
                Some(_) => TICK,
                None => self
                    .next_attempt
                    .saturating_duration_since(Instant::now())
                    .clamp(Duration::from_millis(10), TICK),
            };
            match events.recv_timeout(wait) {
                Ok(Event::Signal(Signal::SIGHUP, _)) => self.sighup(),
                Ok(Event::Signal(sig, from)) => {
                    let core = self.one_command.then(|| nix::unistd::getppid().as_raw());
                    let core = core.and_then(|p| u32::try_from(p).ok());
                    info!("{}", stop_message(sig, from, core));
                    self.notify.send("STOPPING=1");
                    return Ok(());
                }
                Ok(Event::Request(r)) => {
                    let answer = self.handle(r.command, r.uid, r.admin);
                    let _ = r.reply.send(answer);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            self.retired = None;
            if self.link.as_ref().is_some_and(CoreLink::is_closed) {
                self.lost("the core closed the link");
            }
            if self.link.is_none() && self.core_path.is_none() && self.core_fd.is_none() {
                return Err("the core closed the link".into());
            }
        }
    }

    fn lost(&mut self, why: &str) {
        self.link = None;
        self.in_step = false;
        self.cached = None;
        if self.core_path.is_some() {
            warn!("lost the core: {why}; reconnecting");
            self.down_logged = true;
            self.notify
                .status(&format!("lost the core ({why}); reconnecting"));
        }
        self.backoff = BACKOFF_MIN;
        self.next_attempt = Instant::now();
    }

    fn connect(&mut self) -> Result<(), String> {
        let attempt = match (&self.core_path, self.core_fd.take()) {
            (_, Some(stream)) => CoreLink::handshake(stream),
            (Some(path), None) => CoreLink::connect(path, self.me.uid),
            (None, None) => return Err("the core closed the link".into()),
        };
        match attempt {
            Ok(link) => {
                let h = &link.hello;
                info!(
                    "connected to the core: pid {}, uid {}, version {}, root: {}, root services: {}, setuid services: {}",
                    h.pid,
                    h.uid,
                    h.software_version,
                    if h.policy.root { "yes" } else { "no" },
                    crate::table::root_services_word(h.policy.allow_root_services),
                    crate::table::setuid_word(h.policy.allow_setuid_services),
                );
                if h.policy.root {
                    let p = &h.policy;
                    let users: Vec<String> = p
                        .users
                        .iter()
                        .map(|u| format!("{} ({})", u.name, u.uid))
                        .collect();
                    let groups: Vec<String> = p
                        .groups
                        .iter()
                        .map(|g| format!("{} ({})", g.name, g.gid))
                        .collect();
                    let pins: Vec<String> = p.root_commands.iter().map(|c| c.line()).collect();
                    info!(
                        "the core allows services as {} with their groups; other groups: {}; root only for: {}",
                        users.join(", "),
                        if groups.is_empty() { "none".into() } else { groups.join(", ") },
                        match (p.allow_root_services, pins.is_empty()) {
                            (true, _) => "every entry (--allow-root-services)".into(),
                            (false, true) => "nothing".into(),
                            (false, false) => pins.join("; "),
                        },
                    );
                } else {
                    warn!(
                        "the core is not root: every service runs as {} (uid {})",
                        self.me.user, self.me.uid
                    );
                }
                self.link = Some(link);
                self.in_step = false;
                self.down_logged = false;
                self.untrusted_logged = false;
                self.backoff = BACKOFF_MIN;
                self.sync();
                Ok(())
            }
            Err(e @ (LinkError::Down(_) | LinkError::Untrusted(_))) if self.core_path.is_some() => {
                if matches!(e, LinkError::Untrusted(_)) && !self.untrusted_logged {
                    error!("{e}; retrying with backoff");
                    self.untrusted_logged = true;
                    self.down_logged = true;
                } else if !self.down_logged {
                    warn!("{e}; retrying with backoff");
                    self.down_logged = true;
                }
                self.next_attempt = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// The core's status for `list` and `status`: for an admin a new one;
    /// for anyone else the one fetched within [`STATUS_CACHE`] if there is
    /// one, else a new one.
    fn status_for(&mut self, admin: bool) -> Option<StatusReport> {
        if let (false, Some((at, s))) = (admin, &self.cached) {
            if at.elapsed() < self.status_cache {
                return Some(s.clone());
            }
        }
        let s = self.core_status()?;
        self.cached = Some((Instant::now(), s.clone()));
        Some(s)
    }

    fn core_status(&mut self) -> Option<StatusReport> {
        self.cached = None;
        let link = self.link.as_mut()?;
        match link.request(&CoreRequest::Status) {
            Ok(CoreResponse::Status(s)) => {
                self.generation = s.generation;
                Some(s)
            }
            Ok(other) => {
                warn!("the core answered Status with {other:?}");
                None
            }
            Err(e) => {
                self.lost(&e.to_string());
                None
            }
        }
    }

    /// After (re)connecting: learn what the core runs, then give it the
    /// desired set. A configuration applied before is applied again as it
    /// was; otherwise the configuration is read and taken with start
    /// semantics if the core runs nothing, reload semantics if it does.
    fn sync(&mut self) {
        let Some(status) = self.core_status() else {
            return;
        };
        info!(
            "the core runs {} listeners (generation {})",
            status.listeners.len(),
            status.generation
        );
        if let (Some(a), false) = (&self.applied, self.reload_pending) {
            let config = Rc::clone(&a.config);
            if let Ok(r) = self.apply(config, None, Mode::Start, "re-sync") {
                self.announce("re-sync", &r);
            }
            return;
        }
        self.reload_pending = false;
        let mode = if status.listeners.is_empty() {
            Mode::Start
        } else {
            Mode::Reload { partial: false }
        };
        let loaded = match self.start_config.take() {
            Some(c) => Ok((Rc::new(c), None)),
            None => self.load(),
        };
        let what = if mode == Mode::Start {
            "start"
        } else {
            "reload"
        };
        match loaded {
            Ok((c, files)) => {
                if let Ok(r) = self.apply(c, files, mode, what) {
                    self.announce(what, &r);
                }
            }
            Err(e) => {
                let r = self.refuse_unreadable(&e);
                self.announce(what, &r);
            }
        }
    }

    /// Tells the service manager the outcome of a start, reload or
    /// re-sync. The first one is readiness: the controller is up and the
    /// core has been given its configuration.
    fn announce(&self, what: &str, r: &ReloadReply) {
        let running = r.added.len() + r.changed.len() + r.unchanged as usize;
        self.notify.ready(&format!(
            "{what}: {}, generation {}, {running} listeners, {} rejected, {} failed",
            r.result.as_str(),
            r.generation,
            r.rejected.len(),
            r.failed.len()
        ));
    }

    /// Reads the configuration: the one in effect when nothing it was made
    /// from has changed (with its files' modification times now), else a
    /// new one.
    fn load(&self) -> Result<(Rc<Config>, Option<Vec<ConfigFile>>), ConfigError> {
        let (paths, names, access) = (&self.config_paths, &self.names, &self.access);
        let Some(a) = &self.applied else {
            let c = config::load_all(paths, names, access, self.source_prefix)?;
            return Ok((Rc::new(c), None));
        };
        Ok(
            match config::load_all_again(&a.config, paths, names, access, self.source_prefix)? {
                Reloaded::Same(files) => (Rc::clone(&a.config), Some(files)),
                Reloaded::New(c) => (Rc::new(c), None),
            },
        )
    }

    fn refuse_unreadable(&mut self, e: &ConfigError) -> ReloadReply {
        error!("reload refused, nothing changed: {e}");
        self.record(ReloadResult::Rejected, vec![e.to_string()]);
        nothing_changed(ReloadResult::Rejected, self.generation, vec![e.to_string()])
    }

    /// Remembers the outcome of a load for `status` and `metrics`.
    fn record(&mut self, result: ReloadResult, errors: Vec<String>) {
        self.reloads.count(result);
        self.last_reload = Some(LastReload {
            at: unix_now(),
            result,
            errors,
        });
    }

    /// Takes a configuration by `mode`; `files`, when given, are its files
    /// as they are now (a reload that found them unchanged but touched).
    /// `Err` only when the core could not be reached (nothing changed).
    fn apply(
        &mut self,
        config: Rc<Config>,
        files: Option<Vec<ConfigFile>>,
        mode: Mode,
        what: &str,
    ) -> Result<ReloadReply, CoreDown> {
        let found = Found::of(&config);
        if what != "re-sync" {
            for d in &config.diagnostics {
                match d.severity {
                    Severity::Error => error!("{d}"),
                    Severity::Warning => warn!("{d}"),
                }
            }
        }
        self.files = file_infos(files.as_deref().unwrap_or(&config.files));
        if !should_apply(found.has_errors, mode) {
            let started_without = self.applied.as_ref().is_some_and(|a| a.config.has_errors());
            error!(
                "{what} rejected: {} errors in the configuration; nothing changed ({})",
                found.errors.len(),
                partial_hint(started_without)
            );
            self.record(ReloadResult::Rejected, found.errors);
            return Ok(nothing_changed(
                ReloadResult::Rejected,
                self.generation,
                found.diagnostics,
            ));
        }
        self.cached = None;
        let Some(link) = self.link.as_ref() else {
            return Err(CoreDown);
        };
        let mut plan = plan(&config.entries, &config.names, &link.hello.policy, &self.me);
        if self.core_path.is_some() {
            for r in &mut plan.refused {
                r.reason = with_drop_in(std::mem::take(&mut r.reason));
            }
        }
        match self.request_apply(&config.entries, &plan, mode) {
            Ok(CoreResponse::Applied(report)) => {
                Ok(self.applied_reply(config, plan, &report, found, what))
            }
            Ok(other) => {
                let reason = match other {
                    CoreResponse::Error { reason } => reason,
                    o => format!("unexpected answer {o:?}"),
                };
                error!("{what} failed: the core refused the request: {reason}; nothing changed");
                let (mut errs, mut diags) = (found.errors, found.diagnostics);
                errs.push(format!("the core refused the request: {reason}"));
                diags.push(format!("the core refused the request: {reason}"));
                self.record(ReloadResult::Failed, errs);
                Ok(nothing_changed(
                    ReloadResult::Failed,
                    self.generation,
                    diags,
                ))
            }
            Err(e) => {
                self.lost(&e.to_string());
                Err(CoreDown)
            }
        }
    }

    /// Sends `plan` to the core and returns its answer, or, for a reload
    /// whose plan is the one the core already runs as sent (see
    /// [`Daemon::in_step`]), the answer the core would give without asking
    /// it: every listener unchanged, the same generation. The core does
    /// nothing with such an `Apply` (it rebinds only listeners whose bind
    /// failed, and there are none), and building, encoding and checking
    /// 10,000 specs twice was most of an unchanged reload's time.
    fn request_apply(
        &mut self,
        entries: &[config::Entry],
        plan: &Plan,
        mode: Mode,
    ) -> Result<CoreResponse, LinkError> {
        let same = matches!(mode, Mode::Reload { .. })
            && self.in_step
            && self.applied.as_ref().is_some_and(|a| {
                let old = &a.config.entries;
                a.plan.send.len() == plan.send.len()
                    && (a.plan.send.iter().zip(&plan.send))
                        .all(|(a, b)| a.spec(old) == b.spec(entries))
            });
        if same {
            return Ok(CoreResponse::Applied(ApplyReport {
                generation: self.generation,
                outcomes: vec![Outcome::Unchanged; plan.send.len()],
                removed: Vec::new(),
            }));
        }
        self.in_step = false;
        let Some(link) = self.link.as_mut() else {
            return Err(LinkError::Down("the core is not connected".into()));
        };
        let answer = link.request(&ApplyRequest::Apply {
            listeners: plan.send.iter().map(|p| p.spec(entries)).collect(),
        });
        if let Ok(CoreResponse::Applied(r)) = &answer {
            self.in_step = r.outcomes.len() == plan.send.len()
                && r.outcomes
                    .iter()
                    .all(|o| matches!(o, Outcome::Added | Outcome::Changed | Outcome::Unchanged));
        }
        answer
    }

    /// What the core did with an Apply: logged, recorded, the reply.
    fn applied_reply(
        &mut self,
        config: Rc<Config>,
        plan: crate::plan::Plan,
        report: &inetd_protocol::ApplyReport,
        found: Found,
        what: &str,
    ) -> ReloadReply {
        self.generation = report.generation;
        let mut summary = summarize(&config.entries, &plan, report);
        if self.core_path.is_some() {
            for (_, reason) in &mut summary.core_refused {
                *reason = with_drop_in(std::mem::take(reason));
            }
            for i in &mut summary.rejected {
                i.reason = i.reason.take().map(with_drop_in);
            }
        }
        let refused = !summary.failed.is_empty() || !summary.rejected.is_empty();
        let result = result_of(true, found.has_errors, refused);
        for i in summary.rejected.iter().chain(&summary.failed) {
            warn!("{}", failure_line(i));
        }
        info!(
            "{what}: {}, generation {}: {} added, {} changed, {} removed, {} rejected, {} failed, {} unchanged, {} bad entries left out",
            result.as_str(),
            report.generation,
            summary.added.len(),
            summary.changed.len(),
            summary.removed.len(),
            summary.rejected.len(),
            summary.failed.len(),
            summary.unchanged,
            config.rejected.len()
        );
        let mut errs = found.errors;
        errs.extend(summary.rejected.iter().map(failure_line));
        errs.extend(summary.failed.iter().map(failure_line));
        self.record(result, errs);
        self.retired = self.applied.replace(Applied {
            config,
            plan,
            core_refused: summary.core_refused,
        });
        ReloadReply {
            result,
            generation: report.generation,
            added: summary.added,
            changed: summary.changed,
            removed: summary.removed,
            rejected: summary.rejected,
            failed: summary.failed,
            unchanged: summary.unchanged,
            diagnostics: found.diagnostics,
        }
    }

    fn reload(&mut self, partial: bool) -> Result<ReloadReply, CoreDown> {
        if self.link.is_none() {
            return Err(CoreDown);
        }
        self.notify.reloading();
        let r = match self.load() {
            Ok((c, files)) => self.apply(c, files, Mode::Reload { partial }, "reload"),
            Err(e) => Ok(self.refuse_unreadable(&e)),
        };
        // READY=1 ends the reload for the service manager, whatever came
        // of it.
        match &r {
            Ok(reply) => self.announce("reload", reply),
            Err(CoreDown) => self
                .notify
                .ready("reload not done: the core is not reachable; retrying"),
        }
        r
    }

    fn sighup(&mut self) {
        info!("SIGHUP: reloading");
        if self.link.is_none() {
            warn!("the core is not reachable: reloading once it is");
            self.reload_pending = true;
            return;
        }
        if self.reload(false).is_err() {
            warn!("the core went away during the reload: reloading once it is back");
            self.reload_pending = true;
        }
    }

    /// Answers a control request; a caller who is not an admin gets the
    /// core's status of the last [`STATUS_CACHE`] if there is one.
    fn handle(&mut self, command: CtlCommand, uid: u32, admin: bool) -> CtlResponse {
        match command {
            CtlCommand::List => match self.status_for(admin) {
                Some(status) => CtlResponse::List(ListReply {
                    generation: status.generation,
                    services: build_rows(self.applied.as_ref(), &status),
                }),
                None => link_down("cannot tell what runs"),
            },
            CtlCommand::Status => {
                let core = self.status_for(admin).map(|s| CoreInfo {
                    version: s.software_version.clone(),
                    pid: s.pid,
                    uid: s.uid,
                    uptime_s: unix_now().saturating_sub(s.started_at),
                    generation: s.generation,
                    policy: s.policy.clone(),
                    listeners: u32::try_from(s.listeners.len()).unwrap_or(u32::MAX),
                    children: u32::try_from(s.children.len()).unwrap_or(u32::MAX),
                });
                CtlResponse::Status(StatusReply {
                    controller: ControllerInfo {
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        pid: std::process::id(),
                        uptime_s: self.started.elapsed().as_secs(),
                        admin_group: self.admin_group.clone(),
                        config: self.files.clone(),
                        last_reload: self.last_reload.clone(),
                        config_paths: self
                            .config_paths
                            .iter()
                            .map(|p| p.to_string_lossy().into_owned())
                            .collect(),
                        reloads: self.reloads,
                    },
                    core,
                })
            }
            CtlCommand::Connections => match self.status_for(admin) {
                Some(status) => CtlResponse::Connections(crate::connections::connections(&status)),
                None => link_down("cannot tell what runs"),
            },
            CtlCommand::Reload { partial } => {
                info!(
                    "reload{} asked by uid {uid}",
                    if partial { " --partial" } else { "" }
                );
                match self.reload(partial) {
                    Ok(r) => CtlResponse::Reload(r),
                    Err(CoreDown) => link_down("nothing changed"),
                }
            }
        }
    }
}

fn file_infos(files: &[ConfigFile]) -> Vec<ConfigFileInfo> {
    files
        .iter()
        .map(|f| ConfigFileInfo {
            path: f.path.to_string_lossy().into_owned(),
            mtime: f.mtime.and_then(unix_secs),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stop_line_says_what_happens_in_each_mode() {
        let packaged = stop_message(Signal::SIGTERM, 1, None);
        assert!(packaged.contains("the core keeps serving"), "{packaged}");
        let with_core = stop_message(Signal::SIGTERM, 42, Some(42));
        assert!(
            with_core.starts_with("SIGTERM from the core (pid 42): stopping with it")
                && with_core.contains("closes its listeners and exits"),
            "{with_core}"
        );
        let alone = stop_message(Signal::SIGINT, 7, Some(42));
        assert!(
            alone.contains("the core (pid 42) keeps serving and starts a new controller"),
            "{alone}"
        );
    }
}
