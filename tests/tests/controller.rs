//! Black-box tests of inetd-controller and inetctl: the real binaries, a
//! temporary configuration on 127.0.0.1 ports picked at run time, and
//! `/bin/cat` as the server. As root, the core runs as root and the
//! controller as user `inetd` (setpriv), services as `nobody`; otherwise
//! everything runs as the invoking user (the controller then runs every
//! service as that user), and the tests that need other users skip.

use std::fs;
use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use inetd_tests::{
    bin_path, children_of, comm, command_as, free_port, holds_inode, is_root, listen_inode,
    probe_path, require_root, root_or_skip, user, wait_for, Proc, TempDir,
};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The layout a controller is started in: `core.sock` and
/// `control/control.sock`, with `control/` owned by the controller's user
/// (when root), as tmpfiles.d makes it.
struct Scratch(TempDir);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        Scratch::owned_by(tag, "inetd")
    }

    /// `control/` belongs to `owner` when root (the controller's user).
    fn owned_by(tag: &str, owner: &str) -> Scratch {
        let d = TempDir::new(tag);
        let control = d.join("control");
        fs::create_dir(&control).unwrap();
        fs::set_permissions(&control, fs::Permissions::from_mode(0o755)).unwrap();
        if is_root() {
            let u = user(owner).unwrap_or_else(|| panic!("no user {owner}"));
            nix::unistd::chown(
                &control,
                Some(nix::unistd::Uid::from_raw(u.uid)),
                Some(nix::unistd::Gid::from_raw(u.gid)),
            )
            .unwrap();
        }
        Scratch(d)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    fn control(&self) -> PathBuf {
        self.0.join("control/control.sock")
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        let tmp = self.path(&format!(".{name}.tmp"));
        fs::write(&tmp, text).unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
        fs::rename(&tmp, &p).unwrap();
        p
    }
}

/// `program` as `user` (setpriv, with that user's groups) when root, else
/// as is.
fn as_user(name: Option<&str>, program: &Path) -> Command {
    match name {
        Some(n) if is_root() => {
            let u = user(n).unwrap_or_else(|| panic!("no user {n}"));
            inetd_tests::command_as_user(&u, program)
        }
        _ => Command::new(program),
    }
}

/// A packaged-mode core on `s`'s core socket, as `who` when root (else as
/// ourselves), once its socket exists.
fn start_core_as(s: &Scratch, who: Option<&str>) -> Proc {
    let p = Proc::spawn(
        as_user(who, &bin_path("inetd-core"))
            .arg("--core-socket")
            .arg(s.path("core.sock"))
            .stdin(Stdio::null()),
    );
    wait_for("the core socket", secs(10), || s.path("core.sock").exists());
    p
}

fn start_core(s: &Scratch) -> Proc {
    start_core_as(s, None)
}

/// A core for `s` with `extra` flags, its log in `core.log` of `s`.
fn start_core_logging(s: &Scratch, extra: &[&str]) -> (Proc, PathBuf) {
    let log = s.path("core.log");
    let p = Proc::spawn(
        Command::new(bin_path("inetd-core"))
            .arg("--core-socket")
            .arg(s.path("core.sock"))
            .args(extra)
            .stdin(Stdio::null())
            .stderr(fs::File::create(&log).unwrap()),
    );
    wait_for("the core socket", secs(10), || s.path("core.sock").exists());
    (p, log)
}

/// The controller for `s` and `config`, as `who` when root.
fn controller_command(s: &Scratch, config: &Path, who: Option<&str>) -> Command {
    let mut c = as_user(who, &bin_path("inetd-controller"));
    c.arg("--core-socket")
        .arg(s.path("core.sock"))
        .arg("--control-socket")
        .arg(s.control())
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null());
    c
}

fn start_controller(s: &Scratch, config: &Path) -> Proc {
    Proc::spawn(&mut controller_command(s, config, Some("inetd")))
}

fn inetctl_as(user: Option<&str>, s: &Scratch, args: &[&str]) -> Output {
    let mut c = as_user(user, &bin_path("inetctl"));
    c.arg("--socket").arg(s.control()).args(args);
    c.output().unwrap()
}

fn inetctl(s: &Scratch, args: &[&str]) -> Output {
    inetctl_as(None, s, args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn list_json(s: &Scratch) -> Option<serde_json::Value> {
    let out = inetctl(s, &["list", "--json"]);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// The state of the row for `port` in `inetctl list --json`.
fn state_of(s: &Scratch, port: u16) -> Option<String> {
    let v = list_json(s)?;
    v["services"]
        .as_array()?
        .iter()
        .find(|r| r["port"].as_u64() == Some(u64::from(port)))
        .and_then(|r| r["state"].as_str().map(str::to_owned))
}

fn echo(port: u16) -> std::io::Result<String> {
    let mut c = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    c.write_all(b"ping\n")?;
    c.shutdown(std::net::Shutdown::Write)?;
    let mut got = String::new();
    c.read_to_string(&mut got)?;
    Ok(got)
}

fn answers(port: u16) -> bool {
    echo(port).map(|s| s == "ping\n").unwrap_or(false)
}

fn refuses(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_err()
}

fn cat_line(port: u16, extra: &str) -> String {
    format!("127.0.0.1:{port} stream tcp4 nowait nobody /bin/cat cat{extra}\n")
}

struct Setup {
    s: Scratch,
    config: PathBuf,
    core: Proc,
    controller: Proc,
}

fn setup(tag: &str, conf: &str, ports: &[u16]) -> Setup {
    setup_env(tag, conf, ports, &[])
}

/// [`setup`], with `env` in the controller's environment.
fn setup_env(tag: &str, conf: &str, ports: &[u16], env: &[(&str, &str)]) -> Setup {
    let s = Scratch::new(tag);
    let config = s.write("inetd.conf", conf);
    let core = start_core(&s);
    let controller = Proc::spawn(
        controller_command(&s, &config, Some("inetd")).envs(env.iter().map(|&(k, v)| (k, v))),
    );
    for &p in ports {
        wait_for("the listener", secs(15), || {
            state_of(&s, p).as_deref() == Some("listening")
        });
    }
    Setup {
        s,
        config,
        core,
        controller,
    }
}

// ---------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------

#[test]
fn controller_list_shows_every_listener_as_a_table_and_json() {
    let (p1, p2) = (free_port(), free_port());
    let conf = format!(
        "{}{}127.0.0.1:{} stream tcp4 nowait nobody\n",
        cat_line(p1, ""),
        cat_line(p2, " -u"),
        free_port()
    );
    let t = setup("list", &conf, &[p1, p2]);
    assert!(answers(p1));
    assert!(answers(p2));

    let out = inetctl(&t.s, &["list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let header = table.lines().next().unwrap();
    for col in [
        "SERVICE",
        "ADDRESS",
        "PORT/PATH",
        "PROTO",
        "USER",
        "STATE",
        "CHILDREN",
        "ACCEPTED",
        "SOURCE",
    ] {
        assert!(header.contains(col), "{header}");
    }
    assert!(table.contains(&format!("{p1}")), "{table}");
    assert!(table.contains("listening"), "{table}");
    assert!(
        table.contains("rejected"),
        "the bad line is listed: {table}"
    );
    assert!(
        table.contains(&format!("{}:3", t.config.display())),
        "{table}"
    );

    let out = inetctl(&t.s, &["list", "--json"]);
    let raw = text(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert!(v["generation"].as_u64().unwrap() >= 1);
    let rows = v["services"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{raw}");
    let r1 = &rows[0];
    assert_eq!(r1["port"], p1);
    assert_eq!(r1["address"], "127.0.0.1");
    assert_eq!(r1["path"], serde_json::Value::Null);
    assert_eq!(r1["protocol"], "tcp4");
    assert_eq!(r1["socket_type"], "stream");
    assert_eq!(r1["server"], "/bin/cat");
    assert_eq!(r1["argv"], serde_json::json!(["cat"]));
    assert_eq!(r1["source"]["line"], 1);
    assert!(r1["accepted"].as_u64().unwrap() >= 1);
    assert_eq!(rows[1]["argv"], serde_json::json!(["cat", "-u"]));
    assert_eq!(rows[2]["state"], "rejected");
    assert!(rows[2]["reason"].is_string());
    // The documented key order, in the raw text of the first row.
    let keys = [
        "\"source\"",
        "\"service\"",
        "\"address\"",
        "\"port\"",
        "\"path\"",
        "\"socket_type\"",
        "\"protocol\"",
        "\"wait\"",
        "\"user\"",
        "\"group\"",
        "\"server\"",
        "\"argv\"",
        "\"state\"",
        "\"reason\"",
        "\"until\"",
        "\"children\"",
        "\"accepted\"",
        "\"exec_failures\"",
        "\"refused\"",
        "\"last_error\"",
        "\"warnings\"",
    ];
    let pos: Vec<usize> = keys.iter().map(|k| raw.find(k).unwrap()).collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "key order: {raw}");

    let out = inetctl(&t.s, &["status", "--json"]);
    assert!(out.status.success());
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["core"]["reachable"], true);
    assert_eq!(st["core"]["listeners"], 2);
    assert_eq!(st["controller"]["last_reload"]["result"], "partial");
    assert_eq!(
        st["controller"]["config"][0]["path"],
        t.config.to_str().unwrap()
    );
    assert!(st["controller"]["config"][0]["mtime"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert_eq!(st["controller"]["pid"], t.controller.pid());
    assert_eq!(st["core"]["pid"], t.core.pid());
}

#[test]
fn controller_reload_adds_changes_and_removes_without_disturbing_connections() {
    let (pa, pb, pc, pd) = (free_port(), free_port(), free_port(), free_port());
    let mut t = setup("reload", &(cat_line(pa, "") + &cat_line(pb, "")), &[pa, pb]);
    // A client connected across the reload.
    let mut held = TcpStream::connect(("127.0.0.1", pa)).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    held.write_all(b"before\n").unwrap();
    let mut buf = [0u8; 7];
    held.read_exact(&mut buf).unwrap();
    let inode = listen_inode(pa).unwrap();

    t.s.write("inetd.conf", &(cat_line(pa, " -u") + &cat_line(pc, "")));
    let out = inetctl(&t.s, &["reload"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!("added    {pc}")) || stdout.contains("added"),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("127.0.0.1:{pc}")), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("changed") && l.contains(&format!(":{pa}"))),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("removed") && l.contains(&format!(":{pb}"))),
        "{stdout}"
    );
    assert!(answers(pc));
    assert!(refuses(pb));
    assert_eq!(
        listen_inode(pa),
        Some(inode),
        "a changed listener keeps its socket"
    );
    held.write_all(b"after\n").unwrap();
    let mut buf = [0u8; 6];
    held.read_exact(&mut buf).unwrap();
    assert_eq!(
        &buf, b"after\n",
        "the connection made before the reload still works"
    );
    let v = list_json(&t.s).unwrap();
    let row = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["port"] == pa)
        .unwrap()
        .clone();
    assert_eq!(row["argv"], serde_json::json!(["cat", "-u"]));

    // SIGHUP does the same.
    t.s.write(
        "inetd.conf",
        &(cat_line(pa, " -u") + &cat_line(pc, "") + &cat_line(pd, "")),
    );
    t.controller.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for("the port added by SIGHUP", secs(10), || answers(pd));
    let st: serde_json::Value =
        serde_json::from_slice(&inetctl(&t.s, &["status", "--json"]).stdout).unwrap();
    assert_eq!(st["controller"]["last_reload"]["result"], "ok");
}

#[test]
fn controller_reload_of_a_broken_file_changes_nothing_and_reports_every_error() {
    let (pa, pnew) = (free_port(), free_port());
    let t = setup("broken", &cat_line(pa, ""), &[pa]);
    let gen0 = list_json(&t.s).unwrap()["generation"].as_u64().unwrap();
    let broken = format!(
        "{}127.0.0.1:{} stream tcq nowait nobody /bin/cat cat\n{}127.0.0.1:{} stream tcp4 nowait no-such-user-x /bin/cat cat\n",
        cat_line(pnew, ""),
        free_port(),
        cat_line(pa, ""),
        free_port()
    );
    t.s.write("inetd.conf", &broken);
    let out = inetctl(&t.s, &["reload"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let file = t.config.display().to_string();
    assert!(stderr.contains(&format!("{file}:2: error")), "{stderr}");
    assert!(stderr.contains(&format!("{file}:4: error")), "{stderr}");
    assert!(refuses(pnew), "nothing was applied");
    assert!(answers(pa));
    assert_eq!(
        list_json(&t.s).unwrap()["generation"].as_u64().unwrap(),
        gen0
    );
    let st: serde_json::Value =
        serde_json::from_slice(&inetctl(&t.s, &["status", "--json"]).stdout).unwrap();
    assert_eq!(st["controller"]["last_reload"]["result"], "rejected");
    assert_eq!(
        st["controller"]["last_reload"]["errors"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // --partial applies the good entries and still says it failed.
    let out = inetctl(&t.s, &["reload", "--partial"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(answers(pnew));
    assert!(answers(pa));
}

#[test]
fn controller_restart_resyncs_without_dropping_a_connection() {
    let pa = free_port();
    let mut t = setup("restart", &cat_line(pa, ""), &[pa]);
    let inode = listen_inode(pa).unwrap();
    assert!(holds_inode(t.core.pid(), inode));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let stream = {
        let (stop, ok, bad) = (stop.clone(), ok.clone(), bad.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if answers(pa) {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    wait_for("a few connections", secs(10), || {
        ok.load(Ordering::Relaxed) >= 5
    });
    t.controller.signal(nix::sys::signal::Signal::SIGKILL);
    t.controller.wait_exit(secs(5));
    let before = ok.load(Ordering::Relaxed);
    wait_for("connections with no controller", secs(10), || {
        ok.load(Ordering::Relaxed) >= before + 5
    });
    t.controller = start_controller(&t.s, &t.config);
    wait_for("the new controller", secs(15), || {
        state_of(&t.s, pa).as_deref() == Some("listening")
    });
    let after = ok.load(Ordering::Relaxed);
    wait_for("connections after the restart", secs(10), || {
        ok.load(Ordering::Relaxed) >= after + 5
    });
    stop.store(true, Ordering::Relaxed);
    stream.join().unwrap();
    assert_eq!(bad.load(Ordering::Relaxed), 0, "no connection failed");
    assert_eq!(listen_inode(pa), Some(inode), "same listening socket");
    assert!(holds_inode(t.core.pid(), inode));
    let v = list_json(&t.s).unwrap();
    assert_eq!(v["services"].as_array().unwrap().len(), 1);
}

#[test]
fn controller_waits_for_a_core_that_is_down() {
    let pa = free_port();
    let s = Scratch::new("down");
    let config = s.write("inetd.conf", &cat_line(pa, ""));
    let _controller = start_controller(&s, &config);
    wait_for("the control socket", secs(10), || s.control().exists());
    let out = inetctl(&s, &["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["core"]["reachable"], false);
    assert_eq!(st["core"]["pid"], serde_json::Value::Null);
    assert_eq!(inetctl(&s, &["list"]).status.code(), Some(3));
    let _core = start_core(&s);
    wait_for("the listener once the core is up", secs(15), || answers(pa));
}

#[test]
fn controller_exits_1_on_an_unreadable_config_and_2_on_a_bad_flag() {
    let s = Scratch::new("flags");
    let out = as_user(Some("inetd"), &bin_path("inetd-controller"))
        .arg("--config")
        .arg(s.path("missing.conf"))
        .arg("--core-socket")
        .arg(s.path("core.sock"))
        .arg("--control-socket")
        .arg(s.control())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let out = as_user(Some("inetd"), &bin_path("inetd-controller"))
        .arg("--no-such-flag")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = as_user(Some("inetd"), &bin_path("inetd-controller"))
        .args(["--log-level", "loud"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(bin_path("inetctl"))
        .arg("frobnicate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(bin_path("inetctl"))
        .args(["--socket"])
        .arg(s.path("nothing.sock"))
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "no daemon");
    if root_or_skip("the controller refuses root") {
        let out = Command::new(bin_path("inetd-controller")).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "refuses root");
        assert!(text(&out.stderr).contains("root"));
    }
}

#[test]
fn inetctl_check_fails_only_on_errors() {
    let s = Scratch::new("check");
    let good = s.write("good.conf", &cat_line(free_port(), ""));
    let out = Command::new(bin_path("inetctl"))
        .arg("check")
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let bad = s.write(
        "bad.conf",
        &format!(
            "{}127.0.0.1:{} stream tcq nowait nobody /bin/cat cat\n",
            cat_line(free_port(), ""),
            free_port()
        ),
    );
    let out = Command::new(bin_path("inetctl"))
        .arg("check")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("{}:2: error", bad.display())),
        "{}",
        text(&out.stderr)
    );
    let out = Command::new(bin_path("inetctl"))
        .arg("check")
        .arg(s.path("absent.conf"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn controller_reload_is_for_admins_only() {
    require_root!("inetctl as other users");
    let pa = free_port();
    let t = setup("admins", &cat_line(pa, ""), &[pa]);
    let out = inetctl_as(Some("nobody"), &t.s, &["reload"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("permission denied"));
    let out = inetctl_as(Some("nobody"), &t.s, &["list"]);
    assert_eq!(out.status.code(), Some(0), "anyone may list");
    let out = inetctl_as(Some("inetd-test-peer"), &t.s, &["reload"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "member of group inetd is not an admin"
    );
    let out = inetctl_as(Some("inetd-test-admin"), &t.s, &["reload"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = inetctl_as(Some("inetd"), &t.s, &["reload"]);
    assert_eq!(out.status.code(), Some(0), "the controller's own user");
    assert_eq!(inetctl(&t.s, &["reload"]).status.code(), Some(0), "root");
}

fn controller_child(core: i32) -> Option<i32> {
    children_of(core)
        .into_iter()
        .map(|(pid, _)| pid)
        .find(|&c| comm(c).as_deref() == Some("inetd-controlle"))
}

#[test]
fn one_command_mode_restarts_a_killed_controller() {
    let pa = free_port();
    let s = Scratch::new("onecmd");
    let config = s.write("inetd.conf", &cat_line(pa, ""));
    let log = s.path("log");
    let mut c = Command::new(bin_path("inetd-core"));
    c.arg("--config")
        .arg(&config)
        .arg("--control-socket")
        .arg(s.control())
        .stdin(Stdio::null())
        .stderr(fs::File::create(&log).unwrap());
    let mut core = Proc::spawn(&mut c);
    wait_for("the service", secs(15), || answers(pa));
    assert_eq!(state_of(&s, pa).as_deref(), Some("listening"));
    let first = controller_child(core.pid()).expect("a controller child");
    // The adopted socketpair end is close-on-exec (fdinfo flags, octal).
    let fdinfo = fs::read_to_string(format!("/proc/{first}/fdinfo/3")).unwrap();
    let flags = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
        .unwrap();
    assert_ne!(flags & libc::O_CLOEXEC as u32, 0, "fd 3 flags {flags:o}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(answers(pa), "the service answers without a controller");
    wait_for("a new controller child", secs(15), || {
        controller_child(core.pid()).is_some_and(|c| c != first)
    });
    wait_for("inetctl list again", secs(15), || {
        state_of(&s, pa).as_deref() == Some("listening")
    });
    assert!(answers(pa));
    // SIGTERM to the controller alone: it says the core restarts it.
    let second = controller_child(core.pid()).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(second),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let restarts = format!(
        "SIGTERM: stopping; the core (pid {}) keeps serving and starts a new controller",
        core.pid()
    );
    wait_for("the controller's SIGTERM line", secs(10), || {
        fs::read_to_string(&log).unwrap().contains(&restarts)
    });
    wait_for("a third controller child", secs(15), || {
        controller_child(core.pid()).is_some_and(|c| c != second)
    });
    wait_for("inetctl list again", secs(15), || {
        state_of(&s, pa).as_deref() == Some("listening")
    });
    // SIGTERM to the core: the controller says it goes with the core.
    core.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(core.wait_exit(secs(10)).success());
    let text = fs::read_to_string(&log).unwrap();
    let with_core = format!(
        "SIGTERM from the core (pid {}): stopping with it; the core closes its listeners and exits",
        core.pid()
    );
    assert!(text.contains(&with_core), "{text}");
    assert!(!text.contains("the core keeps serving\n"), "{text}");
}

#[test]
fn controller_restarted_with_a_broken_file_keeps_what_runs() {
    let pa = free_port();
    let mut t = setup("restart-broken", &cat_line(pa, ""), &[pa]);
    t.controller.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(t.controller.wait_exit(secs(5)).success(), "SIGTERM exits 0");
    assert!(!t.s.control().exists(), "the control socket is removed");
    assert!(answers(pa), "the core keeps serving");
    t.s.write(
        "inetd.conf",
        &format!(
            "{}127.0.0.1:{} stream tcq nowait nobody /bin/cat cat\n",
            cat_line(free_port(), ""),
            free_port()
        ),
    );
    t.controller = start_controller(&t.s, &t.config);
    wait_for("the new controller's last reload", secs(15), || {
        let out = inetctl(&t.s, &["status", "--json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .is_ok_and(|v| v["controller"]["last_reload"]["result"] == "rejected")
    });
    assert!(answers(pa), "all or nothing: the running set is unchanged");
    let v = list_json(&t.s).unwrap();
    let rows = v["services"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{v}");
    assert_eq!(rows[0]["port"], pa);
    assert_eq!(rows[0]["state"], "listening");
    assert_eq!(rows[0]["source"]["line"], 1, "shown from the core's label");
    assert_eq!(rows[0]["server"], "/bin/cat");
}

#[test]
fn controller_survives_bad_frames_and_answers_other_versions() {
    use std::os::unix::net::UnixStream;
    let pa = free_port();
    let t = setup("frames", &cat_line(pa, ""), &[pa]);
    // Garbage, a huge length, and a truncated frame: each ends only that
    // connection.
    for bytes in [
        &b"\xff\xff\xff\xffxxxx"[..],
        b"\x00\x00\x00\x00",
        b"\x00\x00\x00\x09abc",
    ] {
        let mut c = UnixStream::connect(t.s.control()).unwrap();
        c.write_all(bytes).unwrap();
        let _ = c.shutdown(std::net::Shutdown::Write);
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut sink = Vec::new();
        // Closed (a reset when the controller left bytes unread), not
        // timed out.
        match c.read_to_end(&mut sink) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("{bytes:02x?}: the connection was not closed: {e}"),
        }
    }
    // A header declaring 1 MiB is refused at once, before any payload.
    let mut c = UnixStream::connect(t.s.control()).unwrap();
    c.write_all(&(1u32 << 20).to_be_bytes()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let start = Instant::now();
    let mut sink = Vec::new();
    assert!(c.read_to_end(&mut sink).is_ok(), "closed, not timed out");
    assert!(start.elapsed() < Duration::from_secs(4));
    // A request of another protocol version is told which versions differ.
    let mut c = UnixStream::connect(t.s.control()).unwrap();
    let mut frame = 8u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&999u32.to_le_bytes());
    frame.extend_from_slice(&0u32.to_le_bytes());
    c.write_all(&frame).unwrap();
    let answer: inetd_protocol::control::CtlResponse =
        inetd_protocol::read_message(&mut c).unwrap();
    match answer {
        inetd_protocol::control::CtlResponse::Error { kind, message } => {
            assert_eq!(kind, inetd_protocol::control::CtlErrorKind::VersionMismatch);
            assert!(message.contains("999"), "{message}");
            assert!(message.contains(&inetd_protocol::PROTOCOL_VERSION.to_string()));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(inetctl(&t.s, &["list"]).status.code(), Some(0));
}

#[test]
fn controller_one_user_cannot_starve_the_control_socket() {
    use std::os::unix::net::UnixStream;
    require_root!("inetctl as another user");
    let pa = free_port();
    let t = setup("starve", &cat_line(pa, ""), &[pa]);
    // This process (root) opens 1000 idle connections.
    let held: Vec<UnixStream> = (0..1000)
        .filter_map(|_| UnixStream::connect(t.s.control()).ok())
        .collect();
    assert!(held.len() >= 32);
    let start = Instant::now();
    let out = inetctl_as(Some("nobody"), &t.s, &["list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    drop(held);
}

#[test]
fn a_request_sent_a_byte_at_a_time_is_cut_off_at_the_time_limit() {
    use std::os::unix::net::UnixStream;
    let pa = free_port();
    let t = setup_env(
        "dribble",
        &cat_line(pa, ""),
        &[pa],
        &[("INETD_TEST_REQUEST_TIMEOUT_MS", "1500")],
    );
    let mut c = UnixStream::connect(t.s.control()).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // A header for 4096 bytes, then one byte every 100 ms: each read
    // comes well within any per-read timeout.
    c.write_all(&4096u32.to_be_bytes()).unwrap();
    let t0 = Instant::now();
    let closed_after = loop {
        let mut b = [0u8; 1];
        match c.read(&mut b) {
            Ok(0) => break t0.elapsed(),
            Ok(_) => panic!("an answer to half a request"),
            Err(_) => {}
        }
        if c.write_all(b"x").is_err() {
            break t0.elapsed();
        }
        assert!(t0.elapsed() < secs(10), "still open after 10 s");
    };
    assert!(
        closed_after > Duration::from_millis(1000) && closed_after < secs(5),
        "closed after {closed_after:?}"
    );
    // Others are served all along.
    let out = inetctl_as(Some("nobody"), &t.s, &["list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn sixteen_users_holding_every_connection_leave_room_for_an_admin() {
    require_root!("connections as sixteen users");
    let pa = free_port();
    let t = setup("admin-slots", &cat_line(pa, ""), &[pa]);
    // Sixteen uids with no name and no group, 32 connections each: all
    // 512 connections of the control socket, were none kept for admins.
    let mut holders = Vec::new();
    for uid in 61000..61016u32 {
        let mut p = Proc::spawn(
            command_as(uid, uid, probe_path())
                .arg("hold-unix")
                .arg(t.s.control())
                .arg("32")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
        );
        let mut line = String::new();
        let out = p.child_mut().stdout.take().unwrap();
        std::io::BufReader::new(out).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "held 32");
        holders.push(p);
    }
    // Another user finds every open slot taken...
    let out = inetctl_as(Some("nobody"), &t.s, &["list"]);
    assert_ne!(out.status.code(), Some(0), "nobody got a slot");
    // ...and an admin does not.
    let t0 = Instant::now();
    let out = inetctl(&t.s, &["list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(t0.elapsed() < secs(5), "{:?}", t0.elapsed());
    drop(holders);
}

#[test]
fn list_is_answered_from_a_recent_status_until_something_changes() {
    require_root!("inetctl as a user who is not an admin");
    let pa = free_port();
    // A cache of an hour, so the test cannot race it.
    let t = setup_env(
        "status-cache",
        &cat_line(pa, ""),
        &[pa],
        &[("INETD_TEST_STATUS_CACHE_MS", "3600000")],
    );
    // What `nobody` (not an admin) and root (an admin) see.
    let accepted = |who: Option<&str>| {
        let out = inetctl_as(who, &t.s, &["list", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["services"][0]["accepted"].as_u64().unwrap()
    };
    let before = accepted(Some("nobody"));
    assert!(answers(pa));
    assert!(answers(pa));
    assert_eq!(
        accepted(Some("nobody")),
        before,
        "a new status for a user's list"
    );
    // An admin sees the core as it is now...
    assert_eq!(accepted(None), before + 2);
    // ...and so does everyone after it: its status is the one kept.
    assert_eq!(accepted(Some("nobody")), before + 2);
    // A reload gives the core new work: the next list asks again.
    assert!(answers(pa));
    let out = inetctl(&t.s, &["reload"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(accepted(Some("nobody")), before + 3);
}

#[test]
fn controller_with_a_core_that_is_not_root_runs_entries_as_itself() {
    let who = if is_root() {
        Some("inetd-test-peer")
    } else {
        None
    };
    let pa = free_port();
    let s = Scratch::owned_by("nonroot", who.unwrap_or("inetd"));
    if is_root() {
        let pw = user("inetd-test-peer").expect("user inetd-test-peer");
        nix::unistd::chown(
            s.0.path(),
            Some(nix::unistd::Uid::from_raw(pw.uid)),
            Some(nix::unistd::Gid::from_raw(pw.gid)),
        )
        .unwrap();
    }
    let config = s.write("inetd.conf", &cat_line(pa, ""));
    let _core = start_core_as(&s, who);
    let _controller = Proc::spawn(&mut controller_command(&s, &config, who));
    wait_for("the listener", secs(15), || {
        state_of(&s, pa).as_deref() == Some("listening")
    });
    assert!(answers(pa));
    let v = list_json(&s).unwrap();
    let row = &v["services"][0];
    let me = match who {
        Some(u) => u.to_owned(),
        None => nix::unistd::User::from_uid(nix::unistd::getuid())
            .unwrap()
            .map_or_else(|| nix::unistd::getuid().to_string(), |u| u.name),
    };
    assert_eq!(row["user"], me.as_str(), "{v}");
    if me != "nobody" {
        let w = row["warnings"].as_array().unwrap();
        assert!(
            w.iter()
                .any(|w| w.as_str().unwrap().contains("the core is not root")),
            "{v}"
        );
    }
}

#[test]
fn controller_shows_what_the_core_refuses_and_applies_the_rest() {
    let (pa, busy) = (free_port(), free_port());
    // Holding the port makes the core's bind fail.
    let _holder = TcpListener::bind(("127.0.0.1", busy)).unwrap();
    let mut conf = cat_line(pa, "") + &cat_line(busy, "");
    let root_port = free_port();
    let root = root_or_skip("a root entry is refused by a root core");
    if root {
        conf += &format!("127.0.0.1:{root_port} stream tcp4 nowait root /bin/cat cat\n");
    }
    let t = setup("refused", &conf, &[pa]);
    assert!(answers(pa));
    wait_for("the failed row", secs(10), || {
        state_of(&t.s, busy).as_deref() == Some("failed")
    });
    let v = list_json(&t.s).unwrap();
    let rows = v["services"].as_array().unwrap();
    let failed = rows.iter().find(|r| r["port"] == busy).unwrap();
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("in use"),
        "{v}"
    );
    assert!(failed["until"].as_str().unwrap().ends_with('Z'), "{v}");
    if root {
        let root = rows.iter().find(|r| r["port"] == root_port).unwrap();
        assert_eq!(root["state"], "rejected");
        assert!(root["reason"]
            .as_str()
            .unwrap()
            .contains("--allow-root-services"));
        assert!(refuses(root_port));
    }
    // A reload that changes nothing else still reports the failure: not a
    // bad entry, so it does not block the reload, but it exits 1.
    let pnew = free_port();
    t.s.write("inetd.conf", &(conf.clone() + &cat_line(pnew, "")));
    let out = inetctl(&t.s, &["reload"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout
        .lines()
        .any(|l| l.starts_with("added") && l.contains(&format!(":{pnew}"))));
    assert!(answers(pnew), "the good part was applied");
    let st: serde_json::Value =
        serde_json::from_slice(&inetctl(&t.s, &["status", "--json"]).stdout).unwrap();
    assert_eq!(st["controller"]["last_reload"]["result"], "failed");
}

#[test]
fn controller_exits_1_naming_both_versions_when_the_core_speaks_another() {
    use inetd_protocol::{CoreRequest, CoreResponse, HelloReply, Policy};
    use std::os::unix::net::UnixListener;
    let s = Scratch::new("version");
    let config = s.write("inetd.conf", "");
    let fake = UnixListener::bind(s.path("core.sock")).unwrap();
    fs::set_permissions(s.path("core.sock"), fs::Permissions::from_mode(0o666)).unwrap();
    let mut controller =
        Proc::spawn(controller_command(&s, &config, Some("inetd")).stderr(Stdio::piped()));
    let (mut conn, _) = fake.accept().unwrap();
    let hello: CoreRequest = inetd_protocol::read_message(&mut conn).unwrap();
    assert_eq!(
        hello,
        CoreRequest::Hello {
            version: inetd_protocol::PROTOCOL_VERSION
        }
    );
    inetd_protocol::write_message(
        &mut conn,
        &CoreResponse::Hello(HelloReply {
            version: 999,
            software_version: "9.9.9".into(),
            pid: 1,
            uid: 0,
            policy: Policy {
                root: true,
                ..Policy::default()
            },
        }),
    )
    .unwrap();
    assert_eq!(controller.wait_exit(secs(10)).code(), Some(1));
    let mut err = String::new();
    controller
        .child_mut()
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("999"), "{err}");
    assert!(
        err.contains(&format!("version {}", inetd_protocol::PROTOCOL_VERSION)),
        "{err}"
    );
}

#[test]
fn controller_resyncs_a_restarted_core_and_reloads_after_a_sighup_it_got_meanwhile() {
    let (pa, pb) = (free_port(), free_port());
    let mut t = setup("core-restart", &cat_line(pa, ""), &[pa]);
    t.core.signal(nix::sys::signal::Signal::SIGKILL);
    t.core.wait_exit(secs(5));
    wait_for("the listener to go with the core", secs(5), || refuses(pa));
    assert_eq!(inetctl(&t.s, &["list"]).status.code(), Some(3), "core down");
    t.core = start_core(&t.s);
    wait_for("the desired set on the new core", secs(15), || answers(pa));
    // A SIGHUP while the core is down is carried out once it is back.
    t.core.signal(nix::sys::signal::Signal::SIGKILL);
    t.core.wait_exit(secs(5));
    wait_for("the listener to go with the core", secs(5), || refuses(pa));
    t.s.write("inetd.conf", &(cat_line(pa, "") + &cat_line(pb, "")));
    // The controller must have seen the core go before the SIGHUP.
    wait_for("the controller to notice", secs(10), || {
        inetctl(&t.s, &["list"]).status.code() == Some(3)
    });
    t.controller.signal(nix::sys::signal::Signal::SIGHUP);
    t.core = start_core(&t.s);
    wait_for("the reloaded set on the new core", secs(15), || {
        answers(pa) && answers(pb)
    });
}

#[test]
fn entries_the_core_would_refuse_are_shown_rejected_with_its_reason_and_never_sent() {
    require_root!("a root core's policy on identities");
    let s = Scratch::new("identities");
    let (ok, shadow, pinned, other) = (free_port(), free_port(), free_port(), free_port());
    let conf = format!(
        "{}\
         127.0.0.1:{shadow} stream tcp4 nowait nobody:shadow /bin/cat cat /etc/shadow\n\
         127.0.0.1:{pinned} stream tcp4 nowait root /usr/bin/id id -u\n\
         127.0.0.1:{other} stream tcp4 nowait root /usr/bin/id id -u -n\n",
        cat_line(ok, "")
    );
    let config = s.write("inetd.conf", &conf);
    let (_core, log) = start_core_logging(&s, &["--allow-root-command", "/usr/bin/id id -u"]);
    let _controller = start_controller(&s, &config);
    wait_for("the listeners", secs(15), || {
        state_of(&s, ok).as_deref() == Some("listening")
            && state_of(&s, pinned).as_deref() == Some("listening")
    });
    assert!(answers(ok));
    let mut id = TcpStream::connect(("127.0.0.1", pinned)).unwrap();
    let mut got = String::new();
    id.read_to_string(&mut got).unwrap();
    assert_eq!(got, "0\n", "the pinned command runs as root");

    let v = list_json(&s).unwrap();
    let rows = v["services"].as_array().unwrap();
    let row = |port: u16| {
        rows.iter()
            .find(|r| r["port"].as_u64() == Some(u64::from(port)))
            .unwrap()
    };
    assert_eq!(row(shadow)["state"], "rejected", "{v}");
    assert_eq!(row(shadow)["user"], "nobody");
    assert_eq!(row(shadow)["group"], "shadow");
    let shown = row(shadow)["reason"].as_str().unwrap();
    // The flag, and for the packaged service the drop-in it goes in.
    let (why, packaged) = shown.split_once(" (packaged: ").expect("the drop-in");
    assert!(
        why.contains("group shadow (gid")
            && why.ends_with("start the core with --allow-group shadow"),
        "{why}"
    );
    assert!(
        packaged.starts_with(
            "put it on the ExecStart= line of /etc/systemd/system/inetd-core.service.d/allow-users.conf, as /usr/share/doc/inetd-privsep/examples/inetd-core.service.d/allow-users.conf shows"
        ),
        "{packaged}"
    );
    assert_eq!(row(other)["state"], "rejected", "{v}");
    let why_other = row(other)["reason"].as_str().unwrap();
    assert!(
        why_other.contains(
            "start the core with --allow-root-command '/usr/bin/id id -u -n' (packaged: "
        ),
        "{why_other}"
    );
    let why_other = why_other.split(" (packaged: ").next().unwrap();
    assert!(refuses(shadow) && refuses(other));
    // Held back by the controller: the core never saw them.
    let core_log = fs::read_to_string(&log).unwrap();
    assert!(!core_log.contains(": rejected: "), "{core_log}");
    // The table shows the same reason under the row.
    let table = text(&inetctl(&s, &["list"]).stdout);
    assert!(table.contains(&format!("    reason: {shown}")), "{table}");

    // check, with a controller answering: the same reasons, exit 1.
    let out = inetctl(&s, &["check", config.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{}:2: error: refused by the running core: {why}",
            config.display()
        )),
        "{err}"
    );
    assert!(err.contains(why_other), "{err}");
    assert!(text(&out.stdout).contains("2 refused by the running core"));

    // status shows what the core allows.
    let st = text(&inetctl(&s, &["status"]).stdout);
    assert!(st.contains("allowed users:    nobody (uid 65534"), "{st}");
    assert!(st.contains("root commands:    /usr/bin/id id -u\n"), "{st}");
    let st: serde_json::Value =
        serde_json::from_slice(&inetctl(&s, &["status", "--json"]).stdout).unwrap();
    assert_eq!(st["core"]["root"], true);
    assert_eq!(st["core"]["allowed_users"][0]["uid"], 65534);
    assert_eq!(st["core"]["allowed_groups"], serde_json::json!([]));
    assert_eq!(
        st["core"]["root_commands"],
        serde_json::json!(["/usr/bin/id id -u"])
    );
}

/// The `apply:` lines the core has logged to `log` so far.
fn applies_logged(log: &Path) -> usize {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("apply: generation"))
        .count()
}

#[test]
fn an_unchanged_reload_sends_nothing_unless_a_listener_failed_to_bind() {
    let (pa, pb, busy) = (free_port(), free_port(), free_port());
    // `busy` is taken: its listener fails to bind and the core retries it
    // later (the first retry is seconds away).
    let blocker = TcpListener::bind(("127.0.0.1", busy)).unwrap();
    let s = Scratch::new("unchanged");
    let config = s.write("inetd.conf", &(cat_line(pa, "") + &cat_line(busy, "")));
    let (_core, log) = start_core_logging(&s, &[]);
    let _controller = start_controller(&s, &config);
    wait_for("the listener", secs(15), || {
        state_of(&s, pa).as_deref() == Some("listening")
    });
    wait_for("the failed bind", secs(15), || {
        state_of(&s, busy).as_deref() == Some("failed")
    });
    assert_eq!(
        applies_logged(&log),
        1,
        "{}",
        fs::read_to_string(&log).unwrap()
    );

    // A listener failed: the same plan is sent again, and the core binds it
    // now that the port is free.
    drop(blocker);
    let out = inetctl(&s, &["reload"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("0 failed, 2 unchanged"), "{stdout}");
    assert_eq!(state_of(&s, busy).as_deref(), Some("listening"));
    assert_eq!(applies_logged(&log), 2);

    // Everything runs as sent: an unchanged reload asks the core nothing
    // and reports what it would have answered.
    let before = list_json(&s).unwrap()["generation"].clone();
    let out = inetctl(&s, &["reload"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("0 added, 0 changed, 0 removed, 0 rejected, 0 failed, 2 unchanged"),
        "{stdout}"
    );
    assert_eq!(applies_logged(&log), 2, "no Apply for an unchanged plan");
    assert_eq!(list_json(&s).unwrap()["generation"], before);
    assert!(answers(pa) && answers(busy));

    // A change is sent.
    s.write(
        "inetd.conf",
        &(cat_line(pa, "") + &cat_line(busy, "") + &cat_line(pb, "")),
    );
    let out = inetctl(&s, &["reload"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(applies_logged(&log), 3);
    assert!(answers(pb));
}

/// A reload looks names up again even when no configuration file changed:
/// here the services file moves the service to another port, and the
/// reload that follows moves the listener.
#[test]
fn a_reload_resolves_names_again_when_only_they_changed() {
    let (pa, pb) = (free_port(), free_port());
    let s = Scratch::new("renamed");
    let services = s.write("services", &format!("moving {pa}/tcp\n"));
    let config = s.write(
        "inetd.conf",
        "127.0.0.1:moving stream tcp4 nowait nobody /bin/cat cat\n",
    );
    let (_core, log) = start_core_logging(&s, &[]);
    let _controller = Proc::spawn(
        controller_command(&s, &config, Some("inetd"))
            .arg("--services")
            .arg(&services),
    );
    wait_for("the listener", secs(15), || answers(pa));
    let out = inetctl(&s, &["reload"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(applies_logged(&log), 1, "nothing changed, nothing sent");

    s.write("services", &format!("moving {pb}/tcp\n"));
    let out = inetctl(&s, &["reload"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("1 added") && stdout.contains("1 removed"),
        "{stdout}"
    );
    assert_eq!(applies_logged(&log), 2);
    assert!(answers(pb));
    assert!(refuses(pa));
}
