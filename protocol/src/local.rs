//! What both sides of the protocol must agree on about the local host: where
//! the runtime directory is, and how a time is written as unix seconds.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The runtime directory of the system instance (a root core).
pub const SYSTEM_RUNTIME_DIR: &str = "/run/inetd";

/// The runtime directory RUN of an instance run by `uid`: `/run/inetd` for
/// root; for anyone else `$XDG_RUNTIME_DIR/inetd` when that variable is an
/// absolute path, else `/tmp/inetd-UID`. Pure: the caller passes the
/// variable.
pub fn runtime_dir(uid: u32, xdg_runtime_dir: Option<&OsStr>) -> PathBuf {
    if uid == 0 {
        return PathBuf::from(SYSTEM_RUNTIME_DIR);
    }
    match xdg_runtime_dir.map(Path::new) {
        Some(x) if x.is_absolute() => x.join("inetd"),
        _ => PathBuf::from(format!("/tmp/inetd-{uid}")),
    }
}

/// `t` in whole seconds since the Unix epoch, rounded down like `time(2)`:
/// negative before 1970.
pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let before = e.duration();
            let secs = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
            let part = i64::from(before.subsec_nanos() > 0);
            (-secs).saturating_sub(part)
        }
    }
}

/// Now, in the unsigned unix seconds of the wire (0 if the clock is set
/// before 1970). The one place that reads the clock for timestamps.
pub fn unix_now() -> u64 {
    u64::try_from(unix_seconds(SystemTime::now())).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn runtime_dirs() {
        assert_eq!(runtime_dir(0, None), PathBuf::from("/run/inetd"));
        assert_eq!(
            runtime_dir(0, Some(OsStr::new("/run/user/0"))),
            PathBuf::from("/run/inetd")
        );
        assert_eq!(
            runtime_dir(1000, Some(OsStr::new("/run/user/1000"))),
            PathBuf::from("/run/user/1000/inetd")
        );
        assert_eq!(
            runtime_dir(1000, Some(OsStr::new("rel"))),
            PathBuf::from("/tmp/inetd-1000")
        );
        assert_eq!(runtime_dir(1000, None), PathBuf::from("/tmp/inetd-1000"));
    }

    #[test]
    fn unix_seconds_round_down() {
        assert_eq!(unix_seconds(UNIX_EPOCH), 0);
        assert_eq!(unix_seconds(UNIX_EPOCH + Duration::from_millis(1500)), 1);
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_millis(1500)), -2);
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(3)), -3);
        assert!(unix_now() > 1_700_000_000);
    }
}
