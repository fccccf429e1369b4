//! Default paths of the runtime directory RUN (docs/inetd-core.md):
//! `/run/inetd` for the system instance, `$XDG_RUNTIME_DIR/inetd` or
//! `/tmp/inetd-$UID` for a normal user's.
#![forbid(unsafe_code)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The system instance's runtime directory.
pub use inetd_protocol::SYSTEM_RUNTIME_DIR as SYSTEM_RUN;

/// The runtime directory of `uid`'s own instance (the protocol crate's
/// rule, shared with the core).
pub fn user_run(uid: u32, xdg_runtime_dir: Option<&str>) -> PathBuf {
    inetd_protocol::runtime_dir(uid, xdg_runtime_dir.map(std::ffi::OsStr::new))
}

/// RUN as the controller sees it, for the socket paths it was not given.
/// A controller with `XDG_RUNTIME_DIR` set is a user's; without it, it is
/// the system instance's when `/run/inetd/control` belongs to it (a root
/// core or tmpfiles.d makes that directory for the controller user).
/// Anything else is an error that says what to do: a user's `/tmp/inetd-UID`
/// is not guessed, since anyone could have made it first and put a fake
/// core there.
pub fn controller_run(uid: u32, xdg_runtime_dir: Option<&str>) -> Result<PathBuf, String> {
    if xdg_runtime_dir.is_some_and(|x| x.starts_with('/')) {
        return Ok(user_run(uid, xdg_runtime_dir));
    }
    let system_control = Path::new(SYSTEM_RUN).join("control");
    match std::fs::symlink_metadata(&system_control) {
        Ok(m) if m.is_dir() && m.uid() == uid => Ok(PathBuf::from(SYSTEM_RUN)),
        Ok(m) => Err(format!(
            "{} belongs to uid {}, not to this controller (uid {uid}): run the controller as the \
             system instance's controller user, or give --core-socket and --control-socket",
            system_control.display(),
            m.uid()
        )),
        Err(e) => Err(format!(
            "{}: {e}: give --core-socket and --control-socket, or set XDG_RUNTIME_DIR \
             (a user's own instance)",
            system_control.display()
        )),
    }
}

pub fn core_socket(run: &Path) -> PathBuf {
    run.join("core.sock")
}

pub fn control_socket(run: &Path) -> PathBuf {
    run.join("control").join("control.sock")
}

/// The control sockets `inetctl` tries without `--socket`, in order: the
/// caller's own (XDG, then /tmp), then the system one. The first that
/// exists wins; the system one is the answer when none does.
pub fn inetctl_candidates(uid: u32, xdg_runtime_dir: Option<&str>) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if xdg_runtime_dir.is_some_and(|x| x.starts_with('/')) {
        v.push(control_socket(&user_run(uid, xdg_runtime_dir)));
    }
    v.push(control_socket(&user_run(uid, None)));
    v.push(control_socket(Path::new(SYSTEM_RUN)));
    // For root all three are the system's.
    v.dedup();
    v
}

/// Whether `inetctl` may trust the control socket at `sock`: it exists and
/// the runtime directory two levels up belongs to the caller or root. In
/// `/tmp` anyone could have made `/tmp/inetd-UID` first and put a fake
/// controller there.
pub fn trusted_socket(sock: &Path, uid: u32) -> bool {
    let run_owned = sock
        .parent()
        .and_then(Path::parent)
        .and_then(|run| std::fs::symlink_metadata(run).ok())
        .is_some_and(|m| m.is_dir() && (m.uid() == uid || m.uid() == 0));
    run_owned && sock.exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_runtime_dirs() {
        assert_eq!(
            user_run(1000, Some("/run/user/1000")),
            PathBuf::from("/run/user/1000/inetd")
        );
        assert_eq!(user_run(1000, None), PathBuf::from("/tmp/inetd-1000"));
        assert_eq!(
            user_run(1000, Some("relative")),
            PathBuf::from("/tmp/inetd-1000")
        );
        assert_eq!(
            control_socket(Path::new("/run/inetd")),
            PathBuf::from("/run/inetd/control/control.sock")
        );
        assert_eq!(
            inetctl_candidates(7, Some("/run/user/7")),
            vec![
                PathBuf::from("/run/user/7/inetd/control/control.sock"),
                PathBuf::from("/tmp/inetd-7/control/control.sock"),
                PathBuf::from("/run/inetd/control/control.sock"),
            ]
        );
    }

    #[test]
    fn the_controller_never_guesses_a_directory_under_tmp() {
        assert_eq!(
            controller_run(7, Some("/run/user/7")),
            Ok(PathBuf::from("/run/user/7/inetd"))
        );
        // Nobody's uid owns /run/inetd/control on any test host.
        let e = controller_run(4_000_000_000, None).unwrap_err();
        assert!(e.contains("--core-socket"), "{e}");
        assert!(!e.contains("/tmp"), "{e}");
    }

    #[test]
    fn inetctl_trusts_only_a_runtime_directory_of_the_caller_or_root() {
        let base = std::env::temp_dir().join(format!("inetd-paths-{}", std::process::id()));
        let sock = base.join("control").join("control.sock");
        std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
        std::fs::write(&sock, b"").unwrap();
        let me = nix::unistd::getuid().as_raw();
        let owner = if me == 0 {
            // Root: give the directory to someone else to see the refusal.
            nix::unistd::chown(&base, Some(nix::unistd::Uid::from_raw(12345)), None).unwrap();
            12345
        } else {
            me
        };
        assert!(trusted_socket(&sock, owner));
        assert!(
            !trusted_socket(&sock, owner + 1),
            "someone else's directory"
        );
        assert!(!trusted_socket(&base.join("control/missing.sock"), owner));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
