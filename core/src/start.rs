//! Start-up, in the order that matters: record the resource limits the
//! core was started with (children get them back), resolve the controller
//! user and the users and groups services may run as (the only names the
//! core ever resolves, from its own command line), check the runtime
//! directory and the unix directories, make the core socket (these need
//! CAP_CHOWN and CAP_SETGID-as-root), then cut the capabilities and lock
//! the securebits, raise the descriptor limit and settle what children are
//! given back (limits, session keyring). The handled signals are blocked,
//! and read from a signalfd, before the core socket exists. Everything
//! after that is the poll loop.
#![forbid(unsafe_code)]

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use inetd_protocol::{AllowedGroup, Limits, Policy, UnixDirs};
use log::{debug, info, warn};

use crate::children::BuiltinIdle;
use crate::cli::Cli;
use crate::daemon::{Mode, Setup};
use crate::limits::Knobs;
use crate::link::CoreSocket;
use crate::supervisor::{controller_argv, ControllerPlan};
use crate::sys::{self, UserInfo};

/// A start-up failure: printed once, then the process exits with `code`
/// (1 refused or failed, 2 usage or a bad flag value).
#[derive(Debug)]
pub struct StartError {
    pub code: i32,
    pub message: String,
}

fn fail<T>(code: i32, message: impl Into<String>) -> Result<T, StartError> {
    Err(StartError {
        code,
        message: message.into(),
    })
}

/// The default controller user of a root core.
pub const DEFAULT_CONTROLLER_USER: &str = "inetd";

fn resolve_controller(cli: &Cli, root: bool, uid: u32) -> Result<UserInfo, StartError> {
    if root {
        let spec = cli
            .controller_user
            .as_deref()
            .unwrap_or(DEFAULT_CONTROLLER_USER);
        return match sys::lookup_user(spec) {
            Ok(Some(u)) if u.uid == 0 => fail(
                2,
                format!("--controller-user {spec:?} is root; the controller must run as a dedicated unprivileged user"),
            ),
            Ok(Some(u)) => Ok(u),
            Ok(None) => fail(
                2,
                format!(
                    "controller user {spec:?} does not exist: create it (useradd --system inetd) \
                     or name another dedicated user with --controller-user"
                ),
            ),
            Err(e) => fail(1, format!("cannot look up controller user {spec:?}: {e}")),
        };
    }
    let me = match sys::lookup_user(&uid.to_string()) {
        Ok(Some(u)) => u,
        _ => UserInfo {
            name: uid.to_string(),
            uid,
            gid: sys::getegid(),
            groups: sys::getgroups().unwrap_or_default(),
        },
    };
    if let Some(spec) = &cli.controller_user {
        let same = *spec == uid.to_string()
            || *spec == me.name
            || matches!(sys::lookup_user(spec), Ok(Some(u)) if u.uid == uid);
        if !same {
            return fail(
                2,
                format!(
                    "--controller-user {spec:?}: a core that is not root runs the controller as its own user \
                     (uid {uid}) and cannot name another"
                ),
            );
        }
    }
    Ok(me)
}

/// Makes `path` a directory if it is missing. With `owner` (uid, mode bits
/// refused), it must belong to that uid and have none of those bits: a
/// normal user's runtime directory is private (/tmp is shared, and someone
/// else may have made it), root's is not writable by anyone else.
fn ensure_dir(path: &Path, mode: u32, owner: Option<(u32, u32)>) -> Result<(), StartError> {
    match std::fs::create_dir(path) {
        Ok(()) => std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .or_else(|e| fail(1, format!("cannot set the mode of {}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let m = std::fs::symlink_metadata(path)
                .or_else(|e| fail(1, format!("cannot stat {}: {e}", path.display())))?;
            if !m.file_type().is_dir() {
                return fail(
                    1,
                    format!(
                        "{} exists and is not a directory (a symbolic link is never followed); remove it",
                        path.display()
                    ),
                );
            }
            if let Some((uid, refused)) = owner {
                if m.uid() != uid || m.mode() & refused != 0 {
                    return fail(
                        1,
                        format!(
                            "runtime directory {} has owner uid {} and mode {:04o}; it must belong to uid {uid} and be {} by group or others: fix its owner and mode, or remove it",
                            path.display(),
                            m.uid(),
                            m.mode() & 0o7777,
                            if refused == 0o077 { "closed" } else { "not writable" }
                        ),
                    );
                }
            }
            Ok(())
        }
        Err(e) => fail(1, format!("cannot create {}: {e}", path.display())),
    }
}

fn cstr(s: impl AsRef<std::ffi::OsStr>) -> Result<CString, StartError> {
    CString::new(s.as_ref().as_bytes()).or_else(|_| fail(2, "an argument contains a NUL byte"))
}

fn absolute(p: &Path) -> Result<PathBuf, StartError> {
    std::path::absolute(p).or_else(|e| fail(2, format!("{}: {e}", p.display())))
}

/// Starts the core, in the order that matters (see the module's header).
pub fn start(cli: &Cli) -> Result<Setup, StartError> {
    // 0. Before the core raises any of its limits.
    let limits = sys::inherit::StartLimits::record();
    let uid = sys::geteuid();
    let root = uid == 0;
    // 1. The only names the core resolves, from its own command line.
    let ctl = resolve_controller(cli, root, uid)?;
    let (users, groups) = allowed_ids(cli, root, &ctl)?;
    warn_unused_flags(cli);
    // Signals through a signalfd, blocked before anything can ask the core
    // to stop: a SIGTERM once the core socket exists waits for the loop,
    // which exits cleanly, instead of killing a core half started. Nothing
    // runs asynchronously.
    let sigfd = sys::signal_fd().or_else(|e| fail(1, format!("cannot set up signals: {e}")))?;
    // 2. Directories and the core socket (or the controller's plan), while
    //    CAP_CHOWN and CAP_SETGID-as-root are still there. A root core
    //    always checks RUN: its default socket directories are there.
    let run = inetd_protocol::runtime_dir(uid, std::env::var_os("XDG_RUNTIME_DIR").as_deref());
    sys::umask(0o022);
    if root {
        ensure_run(&run, uid)?;
    }
    let (socket, default) = if cli.config.is_empty() {
        (&cli.core_socket, run.join("core.sock"))
    } else {
        (
            &cli.control_socket,
            run.join("control").join("control.sock"),
        )
    };
    let socket = socket.as_deref().map_or(Ok(default), absolute)?;
    let unix_dirs = unix_dirs(cli, &run, &socket, uid)?;
    let mode = if cli.config.is_empty() {
        packaged_mode(cli, &ctl, &run, socket, uid)?
    } else {
        one_command_mode(cli, &ctl, &run, socket, uid)?
    };
    sys::chdir_root().or_else(|e| fail(1, format!("chdir /: {e}")))?;
    // 3. The capability cut.
    cut_capabilities(cli, root, uid)?;
    // 4. Room for many listeners; children get the old limit back.
    raise_nofile();
    // 5. What every child is given back of the core's start.
    let join_keyring = session_keyrings(root)?;
    sys::inherit::settle(&limits, join_keyring);
    // Start-up's code is not the loop's: from here the core holds the code
    // pages it runs, not their neighbours (see `sys::resident`).
    if let Err(e) = sys::resident::drop_code_pages() {
        debug!("cannot drop the code pages of start-up: {e}");
    }
    // 6. Tell a service manager that the core socket is up.
    crate::notify::ready();
    Ok(Setup {
        policy: Policy {
            root,
            allow_root_services: cli.allow_root_services,
            allow_setuid_services: cli.allow_setuid_services,
            controller_uid: ctl.uid,
            controller_gid: ctl.gid,
            users,
            groups,
            root_commands: if root {
                cli.allow_root_commands.clone()
            } else {
                Vec::new()
            },
            unix_dirs,
        },
        uid,
        idle: BuiltinIdle {
            dgram: Duration::from_secs(cli.dgram_idle),
            stream: Duration::from_secs(cli.builtin_idle),
        },
        knobs: Knobs {
            max_children: Limits::get(cli.max_children),
            window: Duration::from_secs(cli.rate_window),
            pause: Duration::from_secs(cli.pause),
        },
        sigfd,
        mode,
    })
}

/// Who services may run as (trust rule 4): on a root core `nobody` and
/// each `--allow-user` with the groups NSS gives it now, and each
/// `--allow-group`; never root (only the root flags allow it) nor the
/// controller's ids. A core that is not root runs everything as itself,
/// with the gid and groups it has.
fn allowed_ids(
    cli: &Cli,
    root: bool,
    ctl: &UserInfo,
) -> Result<(Vec<UserInfo>, Vec<AllowedGroup>), StartError> {
    if !root {
        if !(cli.allow_users.is_empty()
            && cli.allow_groups.is_empty()
            && cli.allow_root_commands.is_empty())
        {
            warn!("--allow-user, --allow-group and --allow-root-command are ignored: a core that is not root runs everything as itself");
        }
        let me = UserInfo {
            gid: sys::getegid(),
            groups: sys::getgroups().unwrap_or_default(),
            ..ctl.clone()
        };
        return Ok((vec![me], Vec::new()));
    }
    // Root and the controller's ids are never allowed this way: a flag
    // naming them would not do what it says.
    let never = |flag: &str, spec: &str, id: u32, ctl_id: u32| {
        let why = match id {
            0 => "root, which only --allow-root-command or --allow-root-services allows",
            _ if id == ctl_id => {
                "the controller user's, which a service never gets (it could talk to the core)"
            }
            _ => return Ok(()),
        };
        fail(2, format!("{flag} {spec} is {why}"))
    };
    let lookup_err = |what: &str, e: std::io::Error| StartError {
        code: 1,
        message: format!("cannot look up {what}: {e}"),
    };
    let nobody = sys::lookup_user("65534")
        .map_err(|e| lookup_err("uid 65534 (nobody)", e))?
        .unwrap_or(UserInfo {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
        });
    if nobody.gid == ctl.gid || nobody.groups.contains(&ctl.gid) {
        warn!("nobody is in the controller user's group (gid {}), which no service gets: give the controller user a group of its own", ctl.gid);
    }
    let mut users = vec![nobody];
    for spec in &cli.allow_users {
        let Some(u) = sys::lookup_user(spec).map_err(|e| lookup_err(spec, e))? else {
            return fail(2, format!("--allow-user {spec}: no such user"));
        };
        never("--allow-user", spec, u.uid, ctl.uid)?;
        if !users.iter().any(|a| a.uid == u.uid) {
            users.push(u);
        }
    }
    let mut groups: Vec<AllowedGroup> = Vec::new();
    for spec in &cli.allow_groups {
        let Some((name, gid)) = sys::lookup_group(spec).map_err(|e| lookup_err(spec, e))? else {
            return fail(2, format!("--allow-group {spec}: no such group"));
        };
        never("--allow-group", spec, gid, ctl.gid)?;
        if !groups.iter().any(|a| a.gid == gid) {
            groups.push(AllowedGroup { name, gid });
        }
    }
    let shown_users: Vec<String> = users
        .iter()
        .map(|u| format!("{} {:?}", u.uid, u.groups))
        .collect();
    let gids: Vec<u32> = groups.iter().map(|g| g.gid).collect();
    let pins: Vec<String> = cli.allow_root_commands.iter().map(|c| c.line()).collect();
    info!("services may run as uids (with their groups) {shown_users:?}, with the groups {gids:?}; as root exactly {pins:?}");
    Ok((users, groups))
}

fn warn_unused_flags(cli: &Cli) {
    let one_command = !cli.config.is_empty();
    if !one_command && (cli.control_socket.is_some() || !cli.controller_args.is_empty()) {
        warn!("--control-socket and controller arguments are only used with --config; ignored");
    }
    if one_command && cli.core_socket.is_some() {
        warn!("--core-socket is not used with --config (the controller is joined by a socketpair); ignored");
    }
}

/// Makes RUN if it is missing: root's is 0755 and must stay root's and
/// not writable by anyone else, a normal user's private.
fn ensure_run(run: &Path, uid: u32) -> Result<(), StartError> {
    if uid == 0 {
        ensure_dir(run, 0o755, Some((0, 0o022)))
    } else {
        ensure_dir(run, 0o700, Some((uid, 0o077)))
    }
}

/// Directories the system or other daemons rely on: a root core's
/// `--unix-dir` may be none of them, nor hold one (`/`, `/var`), since a
/// socket could then be made beside their files.
const SYSTEM_DIRS: &str = "/bin /lib /lib64 /media /mnt /opt /run /run/lock /sbin /srv /var \
                           /var/lock /var/run";

/// Trees that belong wholly to the kernel, the system or another daemon:
/// as [`SYSTEM_DIRS`], and nothing inside one either.
const SYSTEM_TREES: &str = "/boot /dev /dev/shm /etc /home /proc /root /sys /tmp /usr /run/dbus \
                            /run/systemd /run/user /var/cache /var/lib /var/log /var/spool /var/tmp";

/// Why the canonical directory `dir` cannot be a `--unix-dir`, if it
/// cannot: it is or holds RUN or the directory of the core's own socket
/// (`socket_dir`), it is in `RUN/control`, or, for a root core, it is or
/// holds a system directory or is inside a system tree. Pure.
fn unfit_unix_dir(dir: &Path, run: &Path, socket_dir: &Path, root: bool) -> Option<String> {
    let own = [(run.to_owned(), false), (socket_dir.to_owned(), false)];
    let own = own.into_iter().chain([(run.join("control"), true)]);
    let system = SYSTEM_DIRS.split_whitespace().map(|d| (d.into(), false));
    let trees = SYSTEM_TREES.split_whitespace().map(|d| (d.into(), true));
    let mut all = own.chain(system.chain(trees).filter(|_| root));
    all.find_map(|(p, tree): (PathBuf, bool)| {
        if p.starts_with(dir) {
            Some(format!("it is or holds {}", p.display()))
        } else if tree && dir.starts_with(&p) {
            Some(format!("it is inside {}", p.display()))
        } else {
            None
        }
    })
}

fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_owned())
}

/// The directories unix listeners may be made in: the `--unix-dir`s, each
/// canonical, fit (see [`unfit_unix_dir`]) and trusted as a bind would
/// check it; without any, `RUN/sockets` for a root core (made if missing)
/// and anywhere outside RUN for another. A flag's problem exits 2; the
/// default's, 1.
fn unix_dirs(cli: &Cli, run: &Path, socket: &Path, uid: u32) -> Result<UnixDirs, StartError> {
    let (root, given) = (uid == 0, !cli.unix_dirs.is_empty());
    let run = canonical(run);
    if !root && !given {
        return Ok(UnixDirs::AnyBut(run.to_string_lossy().into_owned()));
    }
    let dirs = if given {
        cli.unix_dirs.clone()
    } else {
        ensure_dir(&run.join("sockets"), 0o755, None)?;
        vec![run.join("sockets")]
    };
    let code = if given { 2 } else { 1 };
    let socket_dir = canonical(socket.parent().unwrap_or(Path::new("/")));
    let mut out: Vec<String> = Vec::new();
    for d in dirs {
        let shown = d.display();
        let dir = d
            .canonicalize()
            .or_else(|e| fail(code, format!("--unix-dir {shown}: {e}")))?;
        if let Some(why) = unfit_unix_dir(&dir, &run, &socket_dir, root) {
            return fail(2, format!("--unix-dir {shown} refused: {why}, which the system, another daemon or the core itself relies on; name a directory that holds only inetd's sockets, such as /run/inetd/sockets"));
        }
        let Some(text) = dir.to_str() else {
            return fail(code, format!("--unix-dir {shown}: not valid UTF-8"));
        };
        sys::unixsock::check_socket_dir(text, uid)
            .or_else(|e| fail(code, format!("--unix-dir {shown}: {e}")))?;
        if !out.iter().any(|o| o == text) {
            info!("unix listeners may be made directly in {text}");
            out.push(text.to_owned());
        }
    }
    Ok(UnixDirs::Only(out))
}

/// Packaged mode: the core socket at `path`.
fn packaged_mode(
    cli: &Cli,
    ctl: &UserInfo,
    run: &Path,
    path: PathBuf,
    uid: u32,
) -> Result<Mode, StartError> {
    if cli.core_socket.is_none() {
        ensure_run(run, uid)?;
    }
    let mut allowed_uids = vec![0, ctl.uid, uid];
    allowed_uids.sort_unstable();
    allowed_uids.dedup();
    let shown = format!("{allowed_uids:?}");
    let socket =
        CoreSocket::bind(&path, ctl.gid, uid == 0, allowed_uids).or_else(|e| fail(1, e))?;
    info!(
        "core socket {} (mode 0660, group {}); serving uids {shown}",
        path.display(),
        ctl.gid,
    );
    Ok(Mode::Packaged(socket))
}

/// One-command mode: the control directory (for the control socket at
/// `control_socket`) and how to start the controller.
fn one_command_mode(
    cli: &Cli,
    ctl: &UserInfo,
    run: &Path,
    control_socket: PathBuf,
    uid: u32,
) -> Result<Mode, StartError> {
    let root = uid == 0;
    // The child runs in `/`: relative paths are made absolute here.
    let configs = cli
        .config
        .iter()
        .map(|p| absolute(p))
        .collect::<Result<Vec<_>, _>>()?;
    if cli.control_socket.is_none() {
        control_dir(run, ctl, uid)?;
    }
    let ctl_path = controller_beside_us()?;
    let argv = controller_argv(
        &configs,
        &control_socket,
        cli.log_level,
        cli.syslog,
        &cli.controller_args,
    )
    .iter()
    .map(cstr)
    .collect::<Result<Vec<_>, _>>()?;
    // A core that is not root cannot change ids: the child keeps the
    // core's own, which is what the child path checks it has.
    let ids = if root {
        (ctl.uid, ctl.gid, &ctl.groups[..])
    } else {
        (uid, sys::getegid(), &[][..])
    };
    let (identity, image) = crate::validate::controller(ids, root, &cstr(&ctl_path)?, &argv);
    let devnull =
        sys::open_dev_null().or_else(|e| fail(1, format!("cannot open /dev/null: {e}")))?;
    info!(
        "one-command mode: the controller runs as {} (uid {}), control socket {}",
        ctl.name,
        ctl.uid,
        control_socket.display()
    );
    Ok(Mode::OneCommand(ControllerPlan {
        identity,
        image,
        devnull,
    }))
}

/// RUN/control, owned by the controller user as root (before the
/// capability cut: this needs CAP_CHOWN), never through a symbolic link.
fn control_dir(run: &Path, ctl: &UserInfo, uid: u32) -> Result<(), StartError> {
    ensure_run(run, uid)?;
    let dir = run.join("control");
    ensure_dir(&dir, 0o755, None)?;
    if uid == 0 {
        sys::own_dir(&dir, ctl.uid, ctl.gid, 0o755).or_else(|e| {
            fail(
                1,
                format!("cannot give {} to the controller user: {e}", dir.display()),
            )
        })?;
    }
    Ok(())
}

/// inetd-controller, found beside the core's own executable.
fn controller_beside_us() -> Result<PathBuf, StartError> {
    let exe = std::env::current_exe()
        .or_else(|e| fail(1, format!("cannot find the core's own executable: {e}")))?;
    let path = exe
        .parent()
        .map(|d| d.join("inetd-controller"))
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/inetd-controller"));
    if !path.is_file() {
        return fail(
            1,
            format!(
                "inetd-controller not found beside the core: {} is missing",
                path.display()
            ),
        );
    }
    Ok(path)
}

/// Whether any service may run as root (`--allow-root-services`, or a
/// command pinned with `--allow-root-command`): such services take their
/// capabilities back from the bounding set at exec, so the core leaves it
/// as the service manager gave it.
fn root_services_possible(cli: &Cli) -> bool {
    cli.allow_root_services || !cli.allow_root_commands.is_empty()
}

/// Cuts the capabilities and locks the securebits (trust rule 5); a core
/// that is not root has none.
fn cut_capabilities(cli: &Cli, root: bool, uid: u32) -> Result<(), StartError> {
    if !root {
        info!("running as uid {uid}, not root: no capabilities to drop; every service runs as uid {uid}");
        return Ok(());
    }
    let r = sys::caps::cut(root_services_possible(cli))
        .or_else(|e| fail(1, format!("cannot cut capabilities: {e}")))?;
    if r.bounding_skipped {
        info!("capability bounding set left as it is (--allow-root-services or --allow-root-command: root services may run, and take their capabilities from it)");
    } else if let Some(why) = &r.bounding_not_cut {
        warn!(
            "cannot cut the capability bounding set ({why}); cut it in the service manager instead"
        );
    }
    let how = if r.securebits_locked {
        "clear and locked"
    } else {
        "clear (not locked: no CAP_SETPCAP)"
    };
    info!("securebits keep-caps and no-setuid-fixup {how}");
    info!("capabilities kept: {}", r.permitted.join(" "));
    Ok(())
}

/// Whether each child joins a fresh session keyring of its own (so that
/// none possesses the keys of the session that started the core, or of
/// another service). Keyrings refused to the core (a seccomp filter) are
/// logged once and skipped. A core that is not root joins a fresh one
/// itself instead: its children all run as its own uid, so a keyring each
/// would separate nothing that uid does not share, and would be charged to
/// its key quota (200 keys by default), failing past about 200 children.
fn session_keyrings(root: bool) -> Result<bool, StartError> {
    let refused = |e: &std::io::Error| {
        warn!(
            "keyrings are refused to the core: {e} (a seccomp filter, or a kernel without \
             them); children do not join a session keyring of their own"
        );
    };
    if root {
        if let Some(e) = sys::inherit::keyrings_refused() {
            refused(&e);
            return Ok(false);
        }
        return Ok(true);
    }
    match sys::inherit::join_session_keyring() {
        Ok(()) => debug!("joined a fresh session keyring, which the services share"),
        Err(e) if sys::inherit::is_refusal(&e) => refused(&e),
        Err(e) => return fail(1, format!("cannot join a fresh session keyring: {e}")),
    }
    Ok(false)
}

fn raise_nofile() {
    match sys::raise_nofile() {
        Ok((old, new)) if old < new => {
            info!("descriptor limit raised from {old} to {new} for listeners; children get {old}")
        }
        Ok(_) => {}
        Err(e) => warn!("cannot raise the descriptor limit: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_keeps_the_bounding_set_as_allow_root_services_does() {
        let cli = |args: &[&str]| match crate::cli::parse(args.iter().map(Into::into)) {
            Ok(crate::cli::Command::Run(c)) => *c,
            other => panic!("{other:?}"),
        };
        assert!(!root_services_possible(&cli(&[])));
        assert!(!root_services_possible(&cli(&["--allow-user", "109"])));
        assert!(root_services_possible(&cli(&["--allow-root-services"])));
        assert!(root_services_possible(&cli(&[
            "--allow-root-command",
            "/usr/sbin/in.tftpd in.tftpd -s /srv/tftp"
        ])));
    }

    fn unfit(dir: &str, root: bool) -> Option<String> {
        let run = Path::new("/run/inetd");
        unfit_unix_dir(Path::new(dir), run, run, root)
    }

    #[test]
    fn a_root_core_refuses_system_directories_and_their_like() {
        for dir in [
            "/",
            "/run",
            "/var/run",
            "/dev",
            "/etc",
            "/tmp",
            "/var",
            "/usr",
            "/home",
            "/root",
            "/proc",
            "/sys",
            "/run/inetd",
            "/run/systemd",
            "/run/systemd/journal",
            "/run/dbus",
            "/run/user/1000",
            "/var/lib",
            "/var/lib/dpkg",
            "/var/tmp",
            "/dev/shm",
            "/etc/ssh",
            "/run/inetd/control",
            "/run/inetd/control/x",
        ] {
            assert!(unfit(dir, true).is_some(), "{dir} accepted");
        }
        for dir in [
            "/run/inetd/sockets",
            "/run/inetd-tests-x",
            "/srv/inetd",
            "/opt/x/sockets",
        ] {
            assert_eq!(unfit(dir, true), None, "{dir}");
        }
        let why = unfit("/run", true).unwrap();
        assert!(why.contains("/run/inetd"), "{why}");
        let why = unfit("/var/lib/dpkg", true).unwrap();
        assert!(why.contains("inside /var/lib"), "{why}");
        let why = unfit("/run/inetd/control/x", true).unwrap();
        assert!(why.contains("inside /run/inetd/control"), "{why}");
    }

    #[test]
    fn any_core_refuses_its_runtime_and_socket_directories_only() {
        let run = Path::new("/run/user/7/inetd");
        let sock = Path::new("/home/u/c");
        let f = |d: &str| unfit_unix_dir(Path::new(d), run, sock, false);
        for dir in [
            "/run/user/7/inetd",
            "/run/user/7",
            "/",
            "/run/user/7/inetd/control",
            "/home/u/c",
            "/home/u",
        ] {
            assert!(f(dir).is_some(), "{dir} accepted");
        }
        for dir in [
            "/run/user/7/inetd/sockets",
            "/run/user/7/s",
            "/home/u/s",
            "/tmp/x",
        ] {
            assert_eq!(f(dir), None, "{dir}");
        }
    }
}
