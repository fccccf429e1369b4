//! One-command mode (`--config`) of the real `inetd-core`, with a stand-in
//! `inetd-controller` (a shell script placed beside a copy of the core) that
//! sends a Hello frame on fd 3 and records what it was given. Needs root
//! (the stand-in runs as the `inetd` user).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

/// A Hello { version: 1 } frame: length 8, variant 0, version 1 (LE).
const HELLO: &str = r"\000\000\000\010\000\000\000\000\001\000\000\000";

struct Setup {
    dir: PathBuf,
    core: PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn setup(name: &str, script_body: &str) -> Setup {
    let dir = PathBuf::from(format!("/tmp/inetd-onecmd-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    // The stand-in writes here as the inetd user.
    let out = dir.join("out");
    std::fs::create_dir(&out).unwrap();
    nix::unistd::chown(&out, Some(nix::unistd::Uid::from_raw(999)), None).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let core = dir.join("inetd-core");
    std::fs::copy(env!("CARGO_BIN_EXE_inetd-core"), &core).unwrap();
    let script = format!("#!/bin/sh\nOUT={}\n{script_body}\n", out.display());
    let ctl = dir.join("inetd-controller");
    std::fs::write(&ctl, script).unwrap();
    std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("inetd.conf"), "").unwrap();
    Setup { dir, core }
}

fn start(s: &Setup, extra: &[&str]) -> Child {
    Command::new(&s.core)
        .current_dir(&s.dir)
        // Relative on purpose: the core makes it absolute for the child.
        .args(["--config", "inetd.conf", "--control-socket"])
        .arg(s.dir.join("control.sock"))
        .args(extra)
        .env("SECRET_FROM_PARENT", "x")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(s.dir.join("core.log")).unwrap())
        .spawn()
        .unwrap()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn starts_the_controller_dropped_with_fd_3_and_forwards_signals() {
    if !is_root() {
        eprintln!("skipped: needs root (the controller runs as the inetd user)");
        return;
    }
    let body = format!(
        r#"trap 'echo HUP >> $OUT/signals' HUP
trap 'echo TERM >> $OUT/signals; exit 0' TERM
printf '{HELLO}' >&3
{{ echo "args: $*"; env | cut -d= -f1 | sort | tr '\n' ' '; echo; grep -E '^(Uid|Gid|NoNewPrivs|CapEff|SigBlk)' /proc/self/status; ls -l /proc/self/fd/; }} > $OUT/info 2>&1
echo ready > $OUT/ready
while :; do sleep 0.05; done"#
    );
    let s = setup("ok", &body);
    let mut core = start(&s, &["--", "--services", "/etc/services"]);
    let out = s.dir.join("out");
    wait_for("the stand-in controller", Duration::from_secs(10), || {
        out.join("ready").exists()
    });
    let info = read(&out.join("info"));
    let conf = s.dir.join("inetd.conf");
    assert!(
        info.contains(&format!(
            "args: --core-fd 3 --config {} --control-socket {} --log-level info --services /etc/services",
            conf.display(),
            s.dir.join("control.sock").display()
        )),
        "{info}"
    );
    assert!(!info.contains("SECRET_FROM_PARENT"), "{info}");
    assert!(info.contains("Uid:\t999\t999\t999\t999"), "{info}");
    assert!(info.contains("NoNewPrivs:\t1"), "{info}");
    assert!(info.contains("CapEff:\t0000000000000000"), "{info}");
    assert!(info.contains("SigBlk:\t0000000000000000"), "{info}");
    assert!(info.contains("3 -> socket:"), "{info}");
    assert!(info.contains("0 -> /dev/null"), "{info}");
    // 0-3, and 4 is ls's own handle on the directory it lists.
    assert_eq!(info.matches(" -> ").count(), 5, "{info}");
    let core_pid = nix::unistd::Pid::from_raw(core.id() as i32);
    nix::sys::signal::kill(core_pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_for("SIGHUP at the controller", Duration::from_secs(10), || {
        read(&out.join("signals")).contains("HUP")
    });
    nix::sys::signal::kill(core_pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let st = core.wait().unwrap();
    assert_eq!(st.code(), Some(0), "{}", read(&s.dir.join("core.log")));
    assert!(read(&out.join("signals")).contains("TERM"));
}

#[test]
fn gives_up_with_exit_1_after_three_early_failures() {
    if !is_root() {
        eprintln!("skipped: needs root (the controller runs as the inetd user)");
        return;
    }
    let s = setup(
        "fail",
        "echo 'inetd-controller: cannot read the configuration' >&2; exit 1",
    );
    let mut core = start(&s, &[]);
    let t0 = Instant::now();
    let st = core.wait().unwrap();
    assert_eq!(st.code(), Some(1));
    assert!(t0.elapsed() < Duration::from_secs(20));
    let log = read(&s.dir.join("core.log"));
    assert_eq!(
        log.matches("cannot read the configuration").count(),
        3,
        "{log}"
    );
    assert!(log.contains("failed 3 times"), "{log}");
}
