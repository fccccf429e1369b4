//! What an admin looks at on day one: `inetctl connections`, `inetctl
//! metrics`, `inetctl check` without paths, and what `inetctl reload`
//! reports. The real binaries: a packaged-mode core and a controller on a
//! temporary configuration, `/bin/cat` as the server on 127.0.0.1 ports
//! picked at run time. As root the controller runs as user `inetd` and
//! services as `nobody`; otherwise everything runs as the invoking user.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use inetd_tests::{bin_path, command_as_user, free_port, is_root, user, wait_for, Proc, TempDir};

const WAIT: Duration = Duration::from_secs(15);

struct Setup {
    dir: TempDir,
    config: PathBuf,
    _core: Proc,
    _controller: Proc,
}

impl Setup {
    fn control(&self) -> PathBuf {
        self.dir.join("control/control.sock")
    }

    fn write(&self, text: &str) {
        write(&self.dir, "inetd.conf", text);
    }

    /// inetctl as ourselves (root: an admin), or as `who` when root.
    fn inetctl_as(&self, who: Option<&str>, args: &[&str]) -> Output {
        let program = bin_path("inetctl");
        let mut c = match who {
            Some(name) if is_root() => command_as_user(&user(name).unwrap(), &program),
            _ => Command::new(&program),
        };
        c.arg("--socket").arg(self.control()).args(args);
        c.output().unwrap()
    }

    fn inetctl(&self, args: &[&str]) -> Output {
        self.inetctl_as(None, args)
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.inetctl(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn state_of(&self, port: u16) -> Option<String> {
        let out = self.inetctl(&["list", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["services"]
            .as_array()?
            .iter()
            .find(|r| r["port"].as_u64() == Some(u64::from(port)))
            .and_then(|r| r["state"].as_str().map(str::to_owned))
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write(d: &TempDir, name: &str, text: &str) -> PathBuf {
    let p = d.join(name);
    let tmp = d.join(format!(".{name}.tmp"));
    fs::write(&tmp, text).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
    fs::rename(&tmp, &p).unwrap();
    p
}

fn cat_line(port: u16) -> String {
    format!("127.0.0.1:{port} stream tcp4 nowait nobody /bin/cat cat\n")
}

/// A core and a controller on `conf`, once `ports` listen.
fn setup(tag: &str, conf: &str, ports: &[u16]) -> Setup {
    setup_with(tag, conf, ports, &[])
}

/// As [`setup`], the core given `core_args` too.
fn setup_with(tag: &str, conf: &str, ports: &[u16], core_args: &[String]) -> Setup {
    let dir = TempDir::new(tag);
    let control = dir.join("control");
    fs::create_dir(&control).unwrap();
    fs::set_permissions(&control, fs::Permissions::from_mode(0o755)).unwrap();
    if is_root() {
        let inetd = user("inetd").expect("user inetd");
        nix::unistd::chown(
            &control,
            Some(nix::unistd::Uid::from_raw(inetd.uid)),
            Some(nix::unistd::Gid::from_raw(inetd.gid)),
        )
        .unwrap();
    }
    let config = write(&dir, "inetd.conf", conf);
    let core = Proc::spawn(
        Command::new(bin_path("inetd-core"))
            .arg("--core-socket")
            .arg(dir.join("core.sock"))
            .args(core_args)
            .stdin(Stdio::null()),
    );
    wait_for("the core socket", WAIT, || dir.join("core.sock").exists());
    let program = bin_path("inetd-controller");
    let mut c = if is_root() {
        command_as_user(&user("inetd").unwrap(), &program)
    } else {
        Command::new(&program)
    };
    c.arg("--core-socket")
        .arg(dir.join("core.sock"))
        .arg("--control-socket")
        .arg(dir.join("control/control.sock"))
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null());
    let controller = Proc::spawn(&mut c);
    let s = Setup {
        dir,
        config,
        _core: core,
        _controller: controller,
    };
    for &p in ports {
        wait_for("the listener", WAIT, || {
            s.state_of(p).as_deref() == Some("listening")
        });
    }
    s
}

/// A connection to `port` whose `/bin/cat` has answered once: its child
/// runs until the connection closes.
fn open_connection(port: u16) -> TcpStream {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"x\n").unwrap();
    let mut b = [0u8; 2];
    c.read_exact(&mut b).unwrap();
    c
}

#[test]
fn connections_shows_each_live_child_to_admins_only() {
    let port = free_port();
    let s = setup("conns", &cat_line(port), &[port]);
    let conn = open_connection(port);
    let me = conn.local_addr().unwrap();
    let v = s.json(&["connections", "--json"]);
    let rows = v["connections"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{v}");
    let r = &rows[0];
    assert_eq!(r["service"], port.to_string());
    assert_eq!(r["protocol"], "tcp4");
    assert_eq!(r["address"], "127.0.0.1");
    assert_eq!(r["port"], me.port());
    assert_eq!(r["peer"], serde_json::Value::Null);
    assert_eq!(r["wait"], false);
    assert_eq!(r["source"]["file"], s.config.display().to_string());
    assert_eq!(r["source"]["line"], 1);
    let pid = r["pid"].as_u64().unwrap();
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "cat", "the pid is the server's");
    if is_root() {
        assert_eq!(r["user"], "nobody");
        assert_eq!(r["uid"], 65534);
    }
    assert!(r["age_s"].as_u64().unwrap() < 60);
    assert!(r["started"].as_str().unwrap().ends_with('Z'));

    // The table: the client as ADDRESS:PORT, the pid, the source.
    let out = s.inetctl(&["connections"]);
    let table = text(&out.stdout);
    assert!(table.starts_with("PID "), "{table}");
    let line = table.lines().nth(1).unwrap_or_default();
    assert!(
        line.starts_with(&pid.to_string()) && line.contains(&me.to_string()),
        "{table}"
    );
    assert!(
        line.ends_with(&format!("{}:1", s.config.display())),
        "{table}"
    );

    // Not for everyone: clients' addresses are the admins' business.
    if is_root() {
        let out = s.inetctl_as(Some("nobody"), &["connections"]);
        assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("permission denied: connections"));
        assert!(out.stdout.is_empty());
    }

    // Gone with its connection.
    drop(conn);
    wait_for("the child to go", WAIT, || {
        s.json(&["connections", "--json"])["connections"]
            .as_array()
            .is_some_and(Vec::is_empty)
    });
}

/// The value of the sample `name` in an exposition.
fn sample(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_counts_per_service_and_says_who_is_up() {
    let port = free_port();
    let s = setup("metrics", &cat_line(port), &[port]);
    drop(open_connection(port));
    drop(open_connection(port));
    let id = format!(r#"service="{port}",protocol="tcp4",listen="127.0.0.1:{port}""#);
    let accepted = format!("inetd_service_accepted_total{{{id}}}");
    wait_for("two accepted connections in the metrics", WAIT, || {
        sample(&text(&s.inetctl(&["metrics"]).stdout), &accepted) == Some(2)
    });
    // Everyone may read them.
    let out = s.inetctl_as(Some("nobody"), &["metrics"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let m = text(&out.stdout);
    for (name, want) in [
        ("inetd_controller_up".to_owned(), 1),
        ("inetd_core_up".into(), 1),
        (r#"inetd_reloads_total{result="ok"}"#.into(), 1),
        (r#"inetd_last_reload{result="ok"}"#.into(), 1),
        (
            format!(r#"inetd_service_state{{{id},state="listening"}}"#),
            1,
        ),
        (format!(r#"inetd_service_state{{{id},state="failed"}}"#), 0),
        (format!("inetd_service_exec_failures_total{{{id}}}"), 0),
        (
            format!(r#"inetd_service_refused_total{{{id},reason="acl"}}"#),
            0,
        ),
    ] {
        assert_eq!(sample(&m, &name), Some(want), "{name} in\n{m}");
    }
    assert!(sample(&m, "inetd_core_uptime_seconds").is_some(), "{m}");
    assert!(
        sample(&m, "inetd_controller_uptime_seconds").is_some(),
        "{m}"
    );
    assert!(
        m.contains("# TYPE inetd_service_accepted_total counter\n"),
        "{m}"
    );

    // No controller: up 0 and exit 3, so a textfile collector shows it.
    let out = Command::new(bin_path("inetctl"))
        .arg("--socket")
        .arg(s.dir.join("nothing.sock"))
        .arg("metrics")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(sample(&text(&out.stdout), "inetd_controller_up"), Some(0));
}

#[test]
fn check_without_paths_checks_what_the_running_controller_uses() {
    let port = free_port();
    let conf = format!(
        "{}127.0.0.1:{} stream tcp4 nowiat nobody /bin/cat cat\n",
        cat_line(port),
        free_port()
    );
    let s = setup("check-running", &conf, &[port]);
    let out = s.inetctl(&["check"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "checking what the running controller uses: {}",
            s.config.display()
        )),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!("{}:2: error: ", s.config.display())),
        "{stderr}"
    );
    assert!(
        stdout.contains("1 listener, 1 rejected entry, 1 error, 0 warnings"),
        "{stdout}"
    );
}

#[test]
fn reload_reports_rejected_apart_from_failed_and_a_moved_line_as_unchanged() {
    let (a, b, busy) = (free_port(), free_port(), free_port());
    let bad = "127.0.0.1:1 stream tcq nowait nobody /bin/cat cat\n";
    let s = setup(
        "reload-report",
        &format!("{}{}{bad}", cat_line(a), cat_line(b)),
        &[a, b],
    );
    let inode_b = inetd_tests::listen_inode(b);

    // The start left the bad line out; a reload of the same file is
    // refused and says how to apply the good entries anyway.
    let out = s.inetctl(&["reload"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("reload rejected: nothing changed"), "{err}");
    assert!(err.contains("inetctl reload --partial"), "{err}");

    // Line 1 removed: b's line moved, which is not a change.
    s.write(&cat_line(b));
    let out = s.inetctl(&["reload"]);
    let got = text(&out.stdout);
    assert!(out.status.success(), "{got}{}", text(&out.stderr));
    assert!(!got.contains("changed "), "{got}");
    assert!(
        got.contains("1 removed") && got.contains("1 unchanged"),
        "{got}"
    );
    assert_eq!(inetd_tests::listen_inode(b), inode_b, "b kept its socket");

    // A port in use fails (retried); an entry the core refuses is rejected.
    let _hold = TcpListener::bind(("127.0.0.1", busy)).unwrap();
    let refused = if is_root() {
        format!(
            "127.0.0.1:{} stream tcp4 nowait daemon /bin/cat cat\n",
            free_port()
        )
    } else {
        String::new()
    };
    s.write(&format!("{}{}{refused}", cat_line(b), cat_line(busy)));
    let out = s.inetctl(&["reload"]);
    let got = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{got}{}", text(&out.stderr));
    assert!(
        got.lines()
            .any(|l| l.starts_with("failed ") && l.contains(&format!(":{busy}"))),
        "{got}"
    );
    let n_rejected = usize::from(is_root());
    assert!(
        got.contains(&format!("{n_rejected} rejected, 1 failed, 1 unchanged")),
        "{got}"
    );
    if is_root() {
        assert!(
            got.lines()
                .any(|l| l.starts_with("rejected ") && l.contains("--allow-user daemon")),
            "{got}"
        );
    }
}

/// Runs `program` in a private mount namespace whose `/dev/log` is
/// `socket` (on a fresh `/dev` holding the host's null, zero, random and
/// urandom), so the test reads what a daemon sends to syslog and the
/// host's `/dev` is untouched.
fn with_dev_log(dir: &TempDir, socket: &std::path::Path, program: &std::path::Path) -> Command {
    let script = r#"set -e
d=$1; sock=$2; shift 2
mkdir -p "$d/hostdev"
mount --bind /dev "$d/hostdev"
mount -t tmpfs -o mode=755 tmpfs /dev
for n in null zero random urandom; do
    touch "/dev/$n"
    mount --bind "$d/hostdev/$n" "/dev/$n"
done
ln -s /proc/self/fd /dev/fd
touch /dev/log
mount --bind "$sock" /dev/log
exec "$@""#;
    let mut c = Command::new("unshare");
    c.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
        "sh",
    ])
    .arg(dir.path())
    .arg(socket)
    .arg(program);
    c
}

#[test]
fn syslog_gets_both_daemons_lines_with_facility_daemon() {
    inetd_tests::require_root!("a private mount namespace and a /dev/log of our own");
    let dir = TempDir::new("syslog");
    let control = dir.join("control");
    fs::create_dir(&control).unwrap();
    let inetd = user("inetd").expect("user inetd");
    nix::unistd::chown(
        &control,
        Some(nix::unistd::Uid::from_raw(inetd.uid)),
        Some(nix::unistd::Gid::from_raw(inetd.gid)),
    )
    .unwrap();
    let sock_path = dir.join("log.sock");
    let log = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    fs::set_permissions(&sock_path, fs::Permissions::from_mode(0o666)).unwrap();
    log.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let port = free_port();
    let failing = free_port();
    let conf = format!(
        "{}127.0.0.1:{failing} stream tcp4 nowait nobody /bin/false false\n",
        cat_line(port)
    );
    let config = write(&dir, "inetd.conf", &conf);
    let stderr = dir.join("stderr");
    let mut cmd = with_dev_log(&dir, &sock_path, &bin_path("inetd-core"));
    cmd.arg("--syslog")
        .arg("--config")
        .arg(&config)
        .arg("--control-socket")
        .arg(control.join("control.sock"))
        .stdin(Stdio::null())
        .stderr(fs::File::create(&stderr).unwrap());
    let mut core = Proc::spawn(&mut cmd);
    let mut got: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    let mut conn = None;
    let deadline = std::time::Instant::now() + WAIT;
    let seen = |got: &[String], ident: &str, text: &str| {
        got.iter()
            .any(|m| m.contains(&format!(" {ident}[")) && m.contains(text))
    };
    while std::time::Instant::now() < deadline {
        if let Ok(n) = log.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        // The listener is up once the controller has applied the file.
        if conn.is_none() && seen(&got, "inetd-core", ": added (") {
            conn = Some(open_connection(port));
            let _ = TcpStream::connect(("127.0.0.1", failing));
        }
        let me = conn.as_ref().map(|c| c.local_addr().unwrap().to_string());
        if me.is_some_and(|me| seen(&got, "inetd-core", &format!("connection from {me},")))
            && seen(&got, "inetd-controller", "serving inetctl on")
            && seen(&got, "inetd-core", " failed: exit 1")
        {
            break;
        }
    }
    let all = got.join("\n");
    let me = conn.as_ref().expect("connected").local_addr().unwrap();
    // Facility daemon (3) and info (6): <30>; the ident and pid as usual.
    let line = got
        .iter()
        .find(|m| m.contains(&format!("connection from {me},")))
        .unwrap_or_else(|| panic!("no connection line in:\n{all}"));
    assert!(line.starts_with("<30>"), "{line}");
    assert!(
        line.contains(&format!(
            " inetd-core[{}]: {port} tcp4 {}:1 nobody:nogroup: connection from {me}, pid ",
            core.pid(),
            config.display()
        )),
        "{line}\nwant pid {} and {me}",
        core.pid()
    );
    let ctl = got
        .iter()
        .find(|m| m.contains(" inetd-controller[") && m.contains("serving inetctl on"))
        .unwrap_or_else(|| panic!("nothing from the controller (passed --syslog) in:\n{all}"));
    assert!(ctl.starts_with("<30>"), "{ctl}");
    // The same priorities as on stderr: a failed server is a warning, <28>.
    let failed = got
        .iter()
        .find(|m| m.contains(" failed: exit 1"))
        .unwrap_or_else(|| panic!("no failure line in:\n{all}"));
    assert!(failed.starts_with("<28>"), "{failed}");
    drop(conn);
    core.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(core.wait_exit(WAIT).success());
    let text_err = fs::read_to_string(&stderr).unwrap();
    assert!(
        !text_err.contains("connection from"),
        "--syslog also wrote to stderr:\n{text_err}"
    );
}

#[test]
fn a_missing_server_listens_with_a_warning_and_its_exec_failures_counted() {
    let port = free_port();
    let conf =
        format!("127.0.0.1:{port} stream tcp4 nowait nobody /nonexistent/in.fingerd in.fingerd\n");
    let s = setup("missing-server", &conf, &[port]);
    let row = |s: &Setup| s.json(&["list", "--json"])["services"][0].clone();
    let r = row(&s);
    assert_eq!(r["state"], "listening");
    assert!(
        r["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("\"/nonexistent/in.fingerd\" does not exist")),
        "{r}"
    );
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf);
    wait_for("the exec failure to be counted", WAIT, || {
        row(&s)["exec_failures"] == 1
    });
    let table = text(&s.inetctl(&["list"]).stdout);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let cells: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let at = |h: &str| cells[header.iter().position(|x| *x == h).unwrap()];
    assert_eq!(at("STATE"), "listening", "{table}");
    assert_eq!(at("EXEC-FAILED"), "1", "{table}");
    assert_eq!(at("WARNINGS"), "1", "{table}");
    assert!(
        table.contains("    warning: server \"/nonexistent/in.fingerd\" does not exist"),
        "{table}"
    );
    assert!(
        table.contains("    last error: exec failed at execve"),
        "{table}"
    );
}

#[test]
fn syslog_that_does_not_answer_falls_back_to_stderr_saying_so() {
    inetd_tests::require_root!("a private mount namespace and a /dev/log of our own");
    let dir = TempDir::new("syslog-down");
    // A socket file nobody reads any more: connecting is refused.
    let sock_path = dir.join("log.sock");
    drop(std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap());
    let stderr = dir.join("stderr");
    let mut cmd = with_dev_log(&dir, &sock_path, &bin_path("inetd-core"));
    cmd.arg("--syslog")
        .arg("--core-socket")
        .arg(dir.join("core.sock"))
        .stdin(Stdio::null())
        .stderr(fs::File::create(&stderr).unwrap());
    let mut core = Proc::spawn(&mut cmd);
    wait_for("the core socket", WAIT, || dir.join("core.sock").exists());
    let text = fs::read_to_string(&stderr).unwrap();
    assert!(
        text.lines().next().is_some_and(|l| l
            .starts_with("<4>inetd-core: --syslog: cannot reach the local syslog (/dev/log)")
            && l.ends_with("; logging to stderr")),
        "{text}"
    );
    // And it does: the start-up lines follow on stderr.
    assert!(text.lines().count() > 1, "{text}");
    core.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(core.wait_exit(WAIT).success());
}

#[test]
fn connections_shows_a_unix_client_by_its_credentials() {
    use std::os::unix::net::UnixStream;
    let sockets = TempDir::secure("conns-unix");
    let path = sockets.join("greet.sock");
    let conf = format!(
        "{} stream unix nowait nobody /bin/cat cat\n",
        path.display()
    );
    let s = setup_with("conns-unix", &conf, &[], &sockets.unix_dir_args());
    wait_for("the unix listener", WAIT, || path.exists());
    let mut c = UnixStream::connect(&path).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"x\n").unwrap();
    let mut b = [0u8; 2];
    c.read_exact(&mut b).unwrap();
    let v = s.json(&["connections", "--json"]);
    let r = &v["connections"][0];
    assert_eq!(r["service"], path.display().to_string(), "{v}");
    assert_eq!(r["protocol"], "unix");
    assert_eq!(r["address"], serde_json::Value::Null);
    assert_eq!(r["port"], serde_json::Value::Null);
    assert_eq!(r["peer"]["pid"], std::process::id());
    assert_eq!(r["peer"]["uid"], nix::unistd::getuid().as_raw());
    assert_eq!(r["peer"]["gid"], nix::unistd::getgid().as_raw());
    let table = text(&s.inetctl(&["connections"]).stdout);
    let me = format!(
        "uid {} gid {} (pid {})",
        nix::unistd::getuid(),
        nix::unistd::getgid(),
        std::process::id()
    );
    assert!(table.contains(&me), "{table}");
}
