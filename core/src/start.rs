//! Start-up, in the order that matters: resolve the controller user and
//! the users and groups services may run as (the only names the core ever
//! resolves, from its own command line), make the
//! runtime directories and the core socket (these need CAP_CHOWN and
//! CAP_SETGID-as-root), then cut the capabilities, raise the descriptor
//! limit, then block the handled signals and make the signalfd.
//! Everything after that is the poll loop.
#![forbid(unsafe_code)]

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use inetd_protocol::{AllowedGroup, Policy};
use log::{info, warn};

use crate::cli::Cli;
use crate::daemon::{Mode, Setup};
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

/// Makes `path` a directory if it is missing. `private` directories (a
/// normal user's runtime directory) must be the user's and closed to others
/// if they already exist: /tmp is shared, and someone else may have made it.
fn ensure_dir(path: &Path, mode: u32, private_uid: Option<u32>) -> Result<(), StartError> {
    match std::fs::create_dir(path) {
        Ok(()) => std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .or_else(|e| fail(1, format!("cannot set the mode of {}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let m = std::fs::symlink_metadata(path)
                .or_else(|e| fail(1, format!("cannot stat {}: {e}", path.display())))?;
            if !m.file_type().is_dir() {
                return fail(
                    1,
                    format!("{} exists and is not a directory", path.display()),
                );
            }
            if let Some(uid) = private_uid {
                if m.uid() != uid || m.mode() & 0o077 != 0 {
                    return fail(
                        1,
                        format!(
                            "runtime directory {} is not private (owner uid {}, mode {:04o}); remove it or use another path",
                            path.display(),
                            m.uid(),
                            m.mode() & 0o7777
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
    let uid = sys::geteuid();
    let root = uid == 0;
    // 1. The only names the core resolves, from its own command line.
    let ctl = resolve_controller(cli, root, uid)?;
    let (users, groups) = allowed_ids(cli, root, &ctl)?;
    warn_unused_flags(cli);
    // 2. Directories and the core socket (or the controller's plan), while
    //    CAP_CHOWN and CAP_SETGID-as-root are still there.
    let run = inetd_protocol::runtime_dir(uid, std::env::var_os("XDG_RUNTIME_DIR").as_deref());
    sys::umask(0o022);
    let mode = if cli.config.is_empty() {
        packaged_mode(cli, &ctl, &run, uid)?
    } else {
        one_command_mode(cli, &ctl, &run, uid)?
    };
    sys::chdir_root().or_else(|e| fail(1, format!("chdir /: {e}")))?;
    // 3. The capability cut.
    cut_capabilities(cli, root, uid)?;
    // 4. Room for many listeners; children get the old limit back.
    raise_nofile();
    // 5. Signals through a signalfd: nothing runs asynchronously.
    let sigfd = sys::signal_fd().or_else(|e| fail(1, format!("cannot set up signals: {e}")))?;
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
            unix_dirs: Vec::new(),
        },
        uid,
        dgram_idle: Duration::from_secs(cli.dgram_idle),
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

/// Makes RUN if it is missing: root's is 0755, a normal user's private.
fn ensure_run(run: &Path, uid: u32) -> Result<(), StartError> {
    if uid == 0 {
        ensure_dir(run, 0o755, None)
    } else {
        ensure_dir(run, 0o700, Some(uid))
    }
}

/// Packaged mode: the core socket.
fn packaged_mode(cli: &Cli, ctl: &UserInfo, run: &Path, uid: u32) -> Result<Mode, StartError> {
    let path = match &cli.core_socket {
        Some(p) => absolute(p)?,
        None => {
            ensure_run(run, uid)?;
            run.join("core.sock")
        }
    };
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

/// One-command mode: the control directory and how to start the
/// controller.
fn one_command_mode(cli: &Cli, ctl: &UserInfo, run: &Path, uid: u32) -> Result<Mode, StartError> {
    let root = uid == 0;
    // The child runs in `/`: relative paths are made absolute here.
    let configs = cli
        .config
        .iter()
        .map(|p| absolute(p))
        .collect::<Result<Vec<_>, _>>()?;
    let control_socket = match &cli.control_socket {
        Some(p) => absolute(p)?,
        None => control_dir(run, ctl, uid)?.join("control.sock"),
    };
    let ctl_path = controller_beside_us()?;
    let argv = controller_argv(
        &configs,
        &control_socket,
        cli.log_level,
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
    let (identity, image) = crate::validate::controller(ids, root, cstr(&ctl_path)?, argv);
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
/// capability cut: this needs CAP_CHOWN).
fn control_dir(run: &Path, ctl: &UserInfo, uid: u32) -> Result<PathBuf, StartError> {
    ensure_run(run, uid)?;
    let dir = run.join("control");
    ensure_dir(&dir, 0o755, None)?;
    if uid == 0 {
        sys::chown(&dir, ctl.uid, ctl.gid)
            .or_else(|e| fail(1, format!("cannot chown {}: {e}", dir.display())))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .or_else(|e| fail(1, format!("cannot chmod {}: {e}", dir.display())))?;
    }
    Ok(dir)
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

/// Cuts the capabilities (trust rule 5); a core that is not root has none.
fn cut_capabilities(cli: &Cli, root: bool, uid: u32) -> Result<(), StartError> {
    if !root {
        info!("running as uid {uid}, not root: no capabilities to drop; every service runs as uid {uid}");
        return Ok(());
    }
    let root_services = cli.allow_root_services || !cli.allow_root_commands.is_empty();
    let r = sys::caps::cut(root_services)
        .or_else(|e| fail(1, format!("cannot cut capabilities: {e}")))?;
    if r.bounding_skipped {
        info!("capability bounding set left as it is (--allow-root-services or --allow-root-command: root services take their capabilities from it)");
    } else if let Some(why) = &r.bounding_not_cut {
        warn!(
            "cannot cut the capability bounding set ({why}); cut it in the service manager instead"
        );
    }
    info!("capabilities kept: {}", r.permitted.join(" "));
    Ok(())
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
