//! Default paths of the runtime directory RUN (DESIGN.md "Command lines"):
//! `/run/inetd` for the system instance, `$XDG_RUNTIME_DIR/inetd` or
//! `/tmp/inetd-$UID` for a normal user's.
#![forbid(unsafe_code)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The system instance's runtime directory.
pub const SYSTEM_RUN: &str = "/run/inetd";

/// A user's runtime directory: `$XDG_RUNTIME_DIR/inetd` when that variable
/// is an absolute path, else `/tmp/inetd-UID`.
pub fn user_run(uid: u32, xdg_runtime_dir: Option<&str>) -> PathBuf {
    match xdg_runtime_dir {
        Some(x) if x.starts_with('/') => Path::new(x).join("inetd"),
        _ => PathBuf::from(format!("/tmp/inetd-{uid}")),
    }
}

/// RUN as the controller sees it. A controller with `XDG_RUNTIME_DIR` set
/// is a user's; without it, it is the system instance's when
/// `/run/inetd/control` belongs to it (a root core makes that directory
/// for its controller user), else a user's under `/tmp`.
pub fn controller_run(uid: u32, xdg_runtime_dir: Option<&str>) -> PathBuf {
    if xdg_runtime_dir.is_some_and(|x| x.starts_with('/')) {
        return user_run(uid, xdg_runtime_dir);
    }
    let system_control = Path::new(SYSTEM_RUN).join("control");
    match std::fs::metadata(&system_control) {
        Ok(m) if m.is_dir() && m.uid() == uid => PathBuf::from(SYSTEM_RUN),
        _ => user_run(uid, None),
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
    v
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
}
