//! One-command mode (`inetd-core --config`, docs/inetd-core.md) with
//! a stand-in `inetd-controller`: a shell script placed beside a copy of the
//! core, which sends a Hello frame on fd 3 (or fails) and records what it
//! was given. What the core does with the controller it starts: its
//! command line, ids, environment and descriptors, signal forwarding, and
//! the restart rules (three failures before Hello end the core with exit 1;
//! a controller that reached the core is restarted without limit).
//!
//! The real controller in one-command mode is tested in `controller.rs`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use inetd_tests::*;

/// A Hello frame of this protocol version, as octal escapes for printf.
fn hello() -> String {
    let frame = inetd_protocol::encode_frame(&inetd_protocol::CoreRequest::Hello {
        version: inetd_protocol::PROTOCOL_VERSION,
    })
    .expect("a Hello encodes");
    frame.iter().map(|b| format!("\\{b:03o}")).collect()
}

/// Held while files that will be executed are written and while processes
/// are spawned: a fork in one test thread while another holds a file open
/// for writing would make exec of that file fail with ETXTBSY.
static EXEC_LOCK: Mutex<()> = Mutex::new(());

/// A copy of the core with the stand-in controller beside it, an empty
/// `inetd.conf`, and `out/` where the stand-in (as user `inetd`) writes.
struct Setup {
    dir: TempDir,
    core: PathBuf,
    out: PathBuf,
}

impl Setup {
    fn new(script_body: &str) -> Setup {
        let _g = EXEC_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let ctl = user("inetd").expect("user inetd");
        let dir = TempDir::new("onecmd");
        let out = dir.join("out");
        std::fs::create_dir(&out).unwrap();
        nix::unistd::chown(&out, Some(nix::unistd::Uid::from_raw(ctl.uid)), None).unwrap();
        let core = dir.join("inetd-core");
        std::fs::copy(bin_path("inetd-core"), &core).unwrap();
        let stand_in = dir.join("inetd-controller");
        std::fs::write(
            &stand_in,
            format!("#!/bin/sh\nOUT={}\n{script_body}\n", out.display()),
        )
        .unwrap();
        std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("inetd.conf"), "").unwrap();
        Setup { dir, core, out }
    }

    /// Starts the core in one-command mode, with a relative `--config` (the
    /// core makes it absolute for the controller) and a variable in its
    /// environment that must not reach the controller.
    fn start(&self, extra: &[&str]) -> Proc {
        let _g = EXEC_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        Proc::spawn(
            Command::new(&self.core)
                .current_dir(self.dir.path())
                .args(["--config", "inetd.conf", "--control-socket"])
                .arg(self.dir.join("control.sock"))
                .args(extra)
                .env("SECRET_FROM_PARENT", "x")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(self.log_path()).unwrap()),
        )
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("core.log")
    }

    fn log(&self) -> String {
        read(&self.log_path())
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
fn starts_the_controller_dropped_with_fd_3_and_forwards_signals() {
    require_root!("the controller runs as the inetd user");
    let ctl = user("inetd").expect("user inetd");
    let hello = hello();
    let body = format!(
        r#"trap 'echo HUP >> $OUT/signals' HUP
trap 'echo TERM >> $OUT/signals; exit 0' TERM
printf '{hello}' >&3
{{ echo "args: $*"; env | cut -d= -f1 | sort | tr '\n' ' '; echo; grep -E '^(Uid|Gid|NoNewPrivs|CapEff|SigBlk)' /proc/self/status; ls -l /proc/self/fd/; }} > $OUT/info 2>&1
echo ready > $OUT/ready
while :; do sleep 0.05; done"#
    );
    let s = Setup::new(&body);
    let mut core = s.start(&["--", "--services", "/etc/services"]);
    wait_for("the stand-in controller", Duration::from_secs(10), || {
        s.out.join("ready").exists()
    });
    let info = read(&s.out.join("info"));
    assert!(
        info.contains(&format!(
            "args: --core-fd 3 --config {} --control-socket {} --log-level info --services /etc/services",
            s.dir.join("inetd.conf").display(),
            s.dir.join("control.sock").display()
        )),
        "{info}"
    );
    assert!(!info.contains("SECRET_FROM_PARENT"), "{info}");
    let id = ctl.uid;
    assert!(
        info.contains(&format!("Uid:\t{id}\t{id}\t{id}\t{id}")),
        "{info}"
    );
    assert!(info.contains("NoNewPrivs:\t1"), "{info}");
    assert!(info.contains("CapEff:\t0000000000000000"), "{info}");
    assert!(info.contains("SigBlk:\t0000000000000000"), "{info}");
    assert!(info.contains("3 -> socket:"), "{info}");
    assert!(info.contains("0 -> /dev/null"), "{info}");
    // 0-3, and 4 is ls's own handle on the directory it lists.
    assert_eq!(info.matches(" -> ").count(), 5, "{info}");
    core.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for("SIGHUP at the controller", Duration::from_secs(10), || {
        read(&s.out.join("signals")).contains("HUP")
    });
    core.signal(nix::sys::signal::Signal::SIGTERM);
    let st = core.wait_exit(Duration::from_secs(30));
    assert_eq!(st.code(), Some(0), "{}", s.log());
    assert!(read(&s.out.join("signals")).contains("TERM"));
}

#[test]
fn gives_up_with_exit_1_after_three_early_failures() {
    require_root!("the controller runs as the inetd user");
    let s = Setup::new("echo 'inetd-controller: cannot read the configuration' >&2; exit 1");
    let mut core = s.start(&[]);
    let t0 = Instant::now();
    let st = core.wait_exit(Duration::from_secs(30));
    assert_eq!(st.code(), Some(1));
    assert!(t0.elapsed() < Duration::from_secs(20));
    let log = s.log();
    assert_eq!(
        log.matches("cannot read the configuration").count(),
        3,
        "{log}"
    );
    assert!(log.contains("failed 3 times"), "{log}");
}

#[test]
fn a_controller_that_dies_after_hello_is_restarted_without_limit() {
    require_root!("the controller runs as the inetd user");
    let hello = hello();
    let body = format!("printf '{hello}' >&3\necho started >> $OUT/starts\nsleep 0.2\nexit 1");
    let s = Setup::new(&body);
    let mut core = s.start(&[]);
    // Three deaths after Hello: not "failed before reaching the core", so
    // the core restarts it again (after 1 s, 2 s, then 4 s).
    wait_for(
        "the third restart to be scheduled",
        Duration::from_secs(20),
        || s.log().contains("restarting inetd-controller in 4"),
    );
    assert_eq!(core.exit_status(), None, "{}", s.log());
    assert_eq!(read(&s.out.join("starts")).lines().count(), 3);
    assert!(s.log().contains("listeners keep serving meanwhile"));
}
