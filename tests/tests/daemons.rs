//! Debian's own inetd daemons under the core, each driven by its own client
//! over 127.0.0.1 and ::1: `git daemon --inetd`, `rsync --daemon`,
//! `in.fingerd` and tftpd-hpa's `in.tftpd`. The core runs in one-command
//! mode (`inetd-core --config FILE`) with an inetd.conf the test writes, as a
//! user would start it; the lines are the ones docs/daemons.md gives.
//!
//! `.ci/run` installs the packages (git, rsync, fingerd, finger, tftpd-hpa,
//! tftp-hpa); where one is missing the test fails naming it. Every test
//! needs root: the daemons run as `nobody` (tftpd as root) under a root
//! core, and fingerd's port 79 is taken inside a network namespace the test
//! makes, so that no other inetd on the host is in the way.

use std::fs;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use inetd_tests::*;

/// Debian's git: a `git` earlier in PATH may be another build.
const GIT: &str = "/usr/bin/git";
const RSYNC: &str = "/usr/bin/rsync";
const FINGERD: &str = "/usr/sbin/in.fingerd";
const FINGER: &str = "/usr/bin/finger";
const TFTPD: &str = "/usr/sbin/in.tftpd";
const TFTP: &str = "/usr/bin/tftp";

/// How long a client may take for one small transfer on a loaded CI host.
const CLIENT_DEADLINE: Duration = Duration::from_secs(30);

/// Names of the processes these tests make the core start, directly or
/// through the daemons; only these are ever killed by [`Inetd`]'s clean-up.
const DAEMON_COMMS: &[&str] = &[
    "git",
    "git-daemon",
    "git-upload-pack",
    "rsync",
    "in.fingerd",
    "finger",
    "in.tftpd",
];

/// Panics unless `path` exists, naming the Debian package that has it.
fn need(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install Debian's {package} (apt-get install {package}, as .ci/run does)"
    );
}

/// `count` random bytes.
fn random_bytes(count: usize) -> Vec<u8> {
    let mut buf = vec![0u8; count];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf
}

/// The address prefix for an inetd.conf line: both loopbacks where the
/// host has IPv6, else 127.0.0.1 alone.
fn loopbacks() -> &'static str {
    if has_ipv6() {
        "127.0.0.1,::1"
    } else {
        "127.0.0.1"
    }
}

/// The loopback addresses the clients use, as URL hosts.
fn url_hosts() -> Vec<&'static str> {
    if has_ipv6() {
        vec!["127.0.0.1", "[::1]"]
    } else {
        vec!["127.0.0.1"]
    }
}

/// The number of listeners a `loopbacks()` line makes.
fn loopback_rows() -> usize {
    url_hosts().len()
}

// ---------------------------------------------------------------------------
// Clients, with a deadline

/// What a client did.
struct Ran {
    status: ExitStatus,
    out: String,
    err: String,
}

impl Ran {
    fn ok(&self) -> bool {
        self.status.success()
    }
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\nstdout:\n{}\nstderr:\n{}",
            self.status, self.out, self.err
        )
    }
}

/// A command for a client: a clean environment (PATH without
/// /usr/local, HOME in a scratch directory, no git configuration but the
/// command line's), no input.
fn client(program: &str, home: &Path) -> Command {
    let mut c = Command::new(program);
    c.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", home)
        .env("LC_ALL", "C")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null());
    c
}

/// Runs `cmd` to its end, or kills it after `timeout` and panics. Output
/// goes to files, so a grandchild that keeps a pipe open cannot block us.
fn run(cmd: &mut Command, timeout: Duration) -> Ran {
    let scratch = TempDir::new("client");
    let (out_path, err_path) = (scratch.join("stdout"), scratch.join("stderr"));
    cmd.stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let mut status = None;
    if !wait_until(timeout, || {
        status = child.try_wait().unwrap();
        status.is_some()
    }) {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{cmd:?} did not finish within {timeout:?}; stdout:\n{}\nstderr:\n{}",
            fs::read_to_string(&out_path).unwrap_or_default(),
            fs::read_to_string(&err_path).unwrap_or_default()
        );
    }
    let status = status.expect("exited");
    Ran {
        status,
        out: fs::read_to_string(&out_path).unwrap_or_default(),
        err: fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

// ---------------------------------------------------------------------------
// The core in one-command mode

/// Writes `text` to `path` (mode 0644, readable by the controller user)
/// in one step, so a reload never reads half a file.
fn write_file(path: &Path, text: &[u8]) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// A root `inetd-core --config FILE`, optionally in a network namespace of
/// its own. Dropping it stops the core and kills what it started that is
/// still running (servers outlive the core by design; ours must not
/// outlive the test).
struct Inetd {
    dir: TempDir,
    child: Child,
    pid: i32,
    start: u64,
    exited: Option<ExitStatus>,
    args: Vec<String>,
    netns: bool,
}

impl Inetd {
    /// Starts a core on `conf` with `core_args`, on the host's loopback.
    fn start(conf: &str, core_args: &[&str]) -> Inetd {
        Inetd::start_in(conf, core_args, false)
    }

    /// Starts a core on `conf` in a new network namespace with only its
    /// loopback up (for daemons whose clients know only the well-known
    /// port).
    fn start_in_netns(conf: &str, core_args: &[&str]) -> Inetd {
        Inetd::start_in(conf, core_args, true)
    }

    fn start_in(conf: &str, core_args: &[&str], netns: bool) -> Inetd {
        let dir = TempDir::new("daemons");
        let control = dir.join("control");
        fs::create_dir(&control).unwrap();
        let inetd = user("inetd").expect("user inetd (made by .ci/run)");
        nix::unistd::chown(
            &control,
            Some(nix::unistd::Uid::from_raw(inetd.uid)),
            Some(nix::unistd::Gid::from_raw(inetd.gid)),
        )
        .unwrap();
        write_file(&dir.join("inetd.conf"), conf.as_bytes());
        let mut i = Inetd {
            child: Inetd::spawn(&dir, core_args, netns),
            pid: 0,
            start: 0,
            exited: None,
            args: core_args.iter().map(|s| s.to_string()).collect(),
            netns,
            dir,
        };
        i.adopt();
        i
    }

    fn spawn(dir: &TempDir, core_args: &[&str], netns: bool) -> Child {
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if netns {
            // unshare and sh exec in turn, so the core keeps the pid.
            for a in [
                "unshare",
                "--net",
                "--",
                "/bin/sh",
                "-c",
                "ip link set lo up && exec \"$0\" \"$@\"",
            ] {
                argv.push(a.into());
            }
        }
        argv.push(bin_path("inetd-core").into());
        for a in ["--config", "inetd.conf", "--control-socket"] {
            argv.push(a.into());
        }
        argv.push(dir.join("control/control.sock").into());
        argv.push("--log-level".into());
        argv.push("debug".into());
        argv.extend(core_args.iter().map(Into::into));
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("core.log"))
            .unwrap();
        Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start inetd-core")
    }

    fn adopt(&mut self) {
        self.pid = i32::try_from(self.child.id()).unwrap();
        // The first core's start: what it started may outlive it, and is
        // cleaned up with the rest.
        if self.start == 0 {
            self.start = start_time(self.pid).unwrap_or(0);
        }
        self.exited = None;
    }

    /// Stops this core (SIGTERM, as a service manager does) and starts
    /// another with the same configuration and arguments.
    fn restart(&mut self) {
        self.stop();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.child = Inetd::spawn(&self.dir, &args, self.netns);
        self.adopt();
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("core.log")).unwrap_or_default()
    }

    fn control(&self) -> PathBuf {
        self.dir.join("control/control.sock")
    }

    /// `inetctl list --json`, or None while the controller does not answer.
    fn list(&self) -> Option<serde_json::Value> {
        let out = Command::new(bin_path("inetctl"))
            .arg("--socket")
            .arg(self.control())
            .args(["list", "--json"])
            .stdin(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Waits until the controller lists exactly `n` rows and each is in
    /// `state`; returns the rows.
    fn wait_rows(&mut self, n: usize, state: &str) -> Vec<serde_json::Value> {
        self.wait_list(&format!("{n} rows {state}"), |rows| {
            rows.len() == n && rows.iter().all(|r| r["state"] == state)
        })
    }

    /// Waits until the controller's rows satisfy `pred`; returns them.
    fn wait_list(
        &mut self,
        what: &str,
        mut pred: impl FnMut(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let mut last = None;
        let ok = wait_until(Duration::from_secs(20), || {
            if self.exit_status().is_some() {
                return true;
            }
            last = self.list();
            last.as_ref()
                .and_then(|v| v["services"].as_array())
                .is_some_and(|rows| pred(rows))
        });
        assert!(
            ok && self.exited.is_none(),
            "wanted {what}; last list: {last:#?}; core exit: {:?}; core log:\n{}",
            self.exited,
            self.log()
        );
        last.unwrap()["services"].as_array().unwrap().clone()
    }

    /// Writes a new configuration, sends SIGHUP (the core forwards it to
    /// the controller) and waits for a newer generation whose rows satisfy
    /// `pred`.
    fn reload(
        &mut self,
        conf: &str,
        what: &str,
        pred: impl FnMut(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let generation = |i: &Inetd| i.list().map(|v| v["generation"].clone());
        let before = generation(self);
        write_file(&self.dir.join("inetd.conf"), conf.as_bytes());
        self.signal(nix::sys::signal::Signal::SIGHUP);
        wait_for("a new generation", Duration::from_secs(20), || {
            generation(self) != before
        });
        self.wait_list(what, pred)
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), sig);
    }

    fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// SIGTERM, then waits up to 10 s for the exit (SIGKILL after that).
    fn stop(&mut self) -> Option<ExitStatus> {
        if self.exit_status().is_none() {
            self.signal(nix::sys::signal::Signal::SIGTERM);
            if !wait_until(Duration::from_secs(10), || self.exit_status().is_some()) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
        }
        self.exited
    }

    /// The running children of the core named `comm`.
    fn children_named(&self, comm_name: &str) -> Vec<i32> {
        children_of(self.pid)
            .into_iter()
            .filter(|&(p, state)| state != 'Z' && comm(p).as_deref() == Some(comm_name))
            .map(|(p, _)| p)
            .collect()
    }

    /// Every process the core started (each is a process-group leader:
    /// the core gives each child a session of its own) and the processes
    /// in their groups, still running.
    fn started_processes(&self) -> Vec<i32> {
        let log = self.log();
        let leaders: Vec<i32> = log
            .lines()
            .filter(|l| l.contains(": connection from ") || l.contains(": started pid "))
            .filter_map(|l| l.rsplit(" pid ").next())
            .filter_map(|rest| {
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        all_pids()
            .into_iter()
            .filter(|&p| {
                // A pid can be reused: only processes started since this
                // core, in one of its children's groups, and of a daemon
                // these tests run.
                let Some(st) = proc_stat(p) else { return false };
                let pgid: i32 = st.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
                leaders.contains(&pgid)
                    && start_time(p).is_some_and(|s| s >= self.start)
                    && comm(p).is_some_and(|c| DAEMON_COMMS.contains(&c.as_str()))
            })
            .collect()
    }
}

impl Drop for Inetd {
    fn drop(&mut self) {
        self.stop();
        for p in self.started_processes() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Every pid in /proc.
fn all_pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The `accepted` counter of every row.
fn accepted(rows: &[serde_json::Value]) -> Vec<u64> {
    rows.iter()
        .map(|r| r["accepted"].as_u64().unwrap_or(0))
        .collect()
}

// ---------------------------------------------------------------------------
// git daemon

/// Runs git in `dir` with a fixed author; panics on failure.
fn git(dir: &Path, home: &Path, args: &[&str]) -> String {
    let mut c = client(GIT, home);
    c.current_dir(dir)
        .args([
            "-c",
            "user.name=Inetd Test",
            "-c",
            "user.email=test@inetd.invalid",
        ])
        .args(args);
    let r = run(&mut c, CLIENT_DEADLINE);
    assert!(r.ok(), "git {args:?} in {}: {r}", dir.display());
    r.out
}

#[test]
fn git_daemon_serves_a_clone_as_nobody() {
    require_root!("git daemon runs as nobody under a root core");
    need(GIT, "git");
    let data = TempDir::new("git");
    let home = data.join("home");
    fs::create_dir(&home).unwrap();
    // A bare repository with two commits, owned by root as the test makes
    // it: not by nobody, who serves it.
    let repos = data.join("repos");
    fs::create_dir(&repos).unwrap();
    git(
        &repos,
        &home,
        &["init", "-q", "--bare", "-b", "main", "proj.git"],
    );
    let work = data.join("work");
    fs::create_dir(&work).unwrap();
    git(&work, &home, &["init", "-q", "-b", "main"]);
    fs::write(work.join("README"), "served by inetd\n").unwrap();
    git(&work, &home, &["add", "README"]);
    git(&work, &home, &["commit", "-q", "-m", "first"]);
    fs::write(work.join("second"), random_bytes(4096)).unwrap();
    git(&work, &home, &["add", "second"]);
    git(&work, &home, &["commit", "-q", "-m", "second"]);
    git(&work, &home, &["push", "-q", "../repos/proj.git", "main"]);
    let want = git(&work, &home, &["rev-list", "main"]);
    assert_eq!(want.lines().count(), 2);

    let (port, plain) = (free_port(), free_port());
    let conf = format!(
        "{addrs}:{port} stream tcp nowait nobody {GIT} git -c safe.directory=* daemon --inetd --export-all --base-path={repos}\n\
         127.0.0.1:{plain} stream tcp4 nowait nobody {GIT} git daemon --inetd --export-all --base-path={repos}\n",
        addrs = loopbacks(),
        repos = repos.display(),
    );
    let mut inetd = Inetd::start(&conf, &[]);
    inetd.wait_rows(loopback_rows() + 1, "listening");

    for host in url_hosts() {
        let dest = data.join(format!("clone-{}", host.trim_matches(['[', ']'])));
        let url = format!("git://{host}:{port}/proj.git");
        let r = run(
            client(GIT, &home)
                .arg("clone")
                .arg("-q")
                .arg(&url)
                .arg(&dest),
            CLIENT_DEADLINE,
        );
        assert!(r.ok(), "git clone {url}: {r}\ncore log:\n{}", inetd.log());
        assert_eq!(git(&dest, &home, &["rev-list", "main"]), want, "{url}");
        assert_eq!(
            fs::read(dest.join("second")).unwrap(),
            fs::read(work.join("second")).unwrap()
        );
    }

    // Without safe.directory, git refuses a repository that nobody does
    // not own ("dubious ownership"): the reason docs/daemons.md gives for
    // the option.
    let dest = data.join("clone-refused");
    let url = format!("git://127.0.0.1:{plain}/proj.git");
    let r = run(
        client(GIT, &home)
            .arg("clone")
            .arg("-q")
            .arg(&url)
            .arg(&dest),
        CLIENT_DEADLINE,
    );
    assert!(
        !r.ok(),
        "git clone {url} worked without safe.directory: {r}"
    );

    let rows = inetd.wait_rows(loopback_rows() + 1, "listening");
    assert!(
        accepted(&rows).iter().all(|&n| n >= 1),
        "every listener served a client: {rows:#?}"
    );
    assert!(rows.iter().all(|r| r["user"] == "nobody"), "{rows:#?}");
}

// ---------------------------------------------------------------------------
// rsync

#[test]
fn rsync_daemon_serves_a_module_from_its_own_config() {
    require_root!("rsync runs as nobody under a root core");
    need(RSYNC, "rsync");
    let data = TempDir::new("rsync");
    let module = data.join("module");
    fs::create_dir(&module).unwrap();
    fs::set_permissions(&module, fs::Permissions::from_mode(0o755)).unwrap();
    let blob = random_bytes(100 * 1024);
    write_file(&module.join("blob.bin"), &blob);
    let config = data.join("rsyncd.conf");
    write_file(
        &config,
        format!(
            "# Started by inetd as nobody: no chroot (that needs root).\n\
             use chroot = no\n\
             [pub]\n\
             \tpath = {}\n\
             \tread only = yes\n\
             \tcomment = inetd test module\n",
            module.display()
        )
        .as_bytes(),
    );

    let port = free_port();
    let conf = format!(
        "{}:{port} stream tcp nowait nobody {RSYNC} rsync --daemon --config={}\n",
        loopbacks(),
        config.display()
    );
    let mut inetd = Inetd::start(&conf, &[]);
    inetd.wait_rows(loopback_rows(), "listening");

    for host in url_hosts() {
        // The module list, then the file.
        let url = format!("rsync://{host}:{port}/");
        let r = run(client(RSYNC, data.path()).arg(&url), CLIENT_DEADLINE);
        assert!(r.ok(), "rsync {url}: {r}\ncore log:\n{}", inetd.log());
        assert!(r.out.contains("pub"), "module list of {url}: {r}");

        let dest = data.join(format!("copy-{}", host.trim_matches(['[', ']'])));
        let url = format!("rsync://{host}:{port}/pub/blob.bin");
        let r = run(
            client(RSYNC, data.path()).arg(&url).arg(&dest),
            CLIENT_DEADLINE,
        );
        assert!(r.ok(), "rsync {url}: {r}\ncore log:\n{}", inetd.log());
        assert!(fs::read(&dest).unwrap() == blob, "{url}: the copy differs");
    }
    let rows = inetd.wait_rows(loopback_rows(), "listening");
    assert!(
        accepted(&rows).iter().all(|&n| n >= 2),
        "every listener served both clients: {rows:#?}"
    );
}

// ---------------------------------------------------------------------------
// fingerd

/// A user made for one test with `useradd`, removed on drop.
struct TestUser {
    name: String,
    gecos: String,
}

impl TestUser {
    fn create() -> TestUser {
        let name = format!("inetd-fgr-{}", std::process::id());
        let gecos = format!("Inetd Finger {}", now_unix());
        // useradd refuses while another tool holds the passwd lock: retry.
        let mut last = None;
        let ok = wait_until(Duration::from_secs(20), || {
            let _ = Command::new("userdel").arg(&name).output();
            let r = run(
                Command::new("useradd")
                    .args(["--no-create-home", "--home-dir", "/nonexistent"])
                    .args(["--shell", "/usr/sbin/nologin", "--comment", &gecos])
                    .arg(&name),
                CLIENT_DEADLINE,
            );
            let ok = r.ok();
            last = Some(r);
            ok
        });
        assert!(ok, "useradd {name}: {}", last.unwrap());
        TestUser { name, gecos }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        wait_until(Duration::from_secs(20), || {
            Command::new("userdel")
                .arg(&self.name)
                .output()
                .is_ok_and(|o| o.status.success() || user(&self.name).is_none())
        });
    }
}

#[test]
fn fingerd_answers_for_a_user_the_test_creates() {
    require_root!("fingerd's port is 79 and the test adds a user");
    need(FINGERD, "fingerd");
    need(FINGER, "finger");
    let who = TestUser::create();
    // finger(1) knows only port 79: the core takes it in a network
    // namespace of its own, where the client joins it.
    let conf = format!(
        "{}:finger stream tcp nowait nobody {FINGERD} in.fingerd\n",
        loopbacks()
    );
    let mut inetd = Inetd::start_in_netns(&conf, &[]);
    inetd.wait_rows(loopback_rows(), "listening");
    let hosts: Vec<&str> = url_hosts()
        .into_iter()
        .map(|h| h.trim_matches(['[', ']']))
        .collect();
    for host in hosts {
        let query = format!("{}@{host}", who.name);
        let r = run(
            client("nsenter", Path::new("/"))
                .arg(format!("--net=/proc/{}/ns/net", inetd.pid))
                .args(["--", FINGER, "-l", &query]),
            CLIENT_DEADLINE,
        );
        assert!(r.ok(), "finger -l {query}: {r}\ncore log:\n{}", inetd.log());
        assert!(
            r.out.contains(&format!("Login: {}", who.name)) && r.out.contains(&who.gecos),
            "finger -l {query} did not show the user: {r}"
        );
    }
    let rows = inetd.wait_rows(loopback_rows(), "listening");
    assert!(
        accepted(&rows).iter().all(|&n| n >= 1),
        "every listener served the client: {rows:#?}"
    );
}

// ---------------------------------------------------------------------------
// tftpd-hpa

/// A directory for tftpd's `-s`, holding `blob.bin` (100 KiB of random
/// bytes).
fn tftp_root(tag: &str) -> (TempDir, Vec<u8>) {
    let dir = TempDir::new(tag);
    let blob = random_bytes(100 * 1024);
    write_file(&dir.join("blob.bin"), &blob);
    (dir, blob)
}

/// Fetches `file` with tftp-hpa's client from `host`:`port`.
fn tftp_get(host: &str, port: u16, file: &str, dest: &Path) -> Ran {
    run(
        client(TFTP, Path::new("/"))
            .args([host, &port.to_string(), "-m", "binary", "-c", "get", file])
            .arg(dest),
        CLIENT_DEADLINE,
    )
}

/// A read request of our own, block by block, so a test can look at the
/// server's processes in the middle of a transfer (RFC 1350: 512-byte
/// blocks, a shorter one ends the file).
struct TftpRead {
    sock: UdpSocket,
    server: Option<SocketAddr>,
    got: Vec<u8>,
    block: u16,
    done: bool,
}

impl TftpRead {
    /// Sends the request to `to` and waits for the first block.
    fn start(to: SocketAddr, file: &str) -> TftpRead {
        let local: SocketAddr = match to.ip() {
            IpAddr::V4(_) => (Ipv4Addr::LOCALHOST, 0).into(),
            IpAddr::V6(_) => (Ipv6Addr::LOCALHOST, 0).into(),
        };
        let sock = UdpSocket::bind(local).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut rrq = vec![0, 1];
        rrq.extend_from_slice(file.as_bytes());
        rrq.push(0);
        rrq.extend_from_slice(b"octet\0");
        sock.send_to(&rrq, to).unwrap();
        let mut t = TftpRead {
            sock,
            server: None,
            got: Vec::new(),
            block: 0,
            done: false,
        };
        t.next_block();
        t
    }

    /// Reads the next DATA block (skipping retransmissions); does not
    /// acknowledge it.
    fn next_block(&mut self) {
        let mut buf = [0u8; 600];
        loop {
            let (n, from) = recv_from(&self.sock, &mut buf).expect("a TFTP block within 10 s");
            assert!(n >= 4, "short TFTP packet {:?}", &buf[..n]);
            let op = u16::from_be_bytes([buf[0], buf[1]]);
            let num = u16::from_be_bytes([buf[2], buf[3]]);
            assert_eq!(
                op,
                3,
                "not a DATA packet: {:?}",
                String::from_utf8_lossy(&buf[..n])
            );
            if num != self.block.wrapping_add(1) {
                continue;
            }
            self.server = Some(from);
            self.block = num;
            self.got.extend_from_slice(&buf[4..n]);
            self.done = n < 4 + 512;
            return;
        }
    }

    fn ack(&self) {
        let [a, b] = self.block.to_be_bytes();
        self.sock
            .send_to(&[0, 4, a, b], self.server.unwrap())
            .unwrap();
    }

    /// Acknowledges blocks until the file ends; returns it.
    fn finish(mut self) -> Vec<u8> {
        while !self.done {
            self.ack();
            self.next_block();
        }
        self.ack();
        self.got
    }
}

/// The ids and root directory of a process, from /proc.
struct ProcIds {
    uid: String,
    gid: String,
    groups: String,
    root: PathBuf,
}

fn proc_ids(pid: i32) -> Option<ProcIds> {
    let st = proc_status(pid)?;
    Some(ProcIds {
        uid: st.get("Uid")?.clone(),
        gid: st.get("Gid")?.clone(),
        groups: st.get("Groups").cloned().unwrap_or_default(),
        root: fs::read_link(format!("/proc/{pid}/root")).ok()?,
    })
}

/// The processes whose process group is `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&p| {
            proc_stat(p).is_some_and(|st| {
                st.first().map(String::as_str) != Some("Z")
                    && st.get(2).and_then(|s| s.parse::<i32>().ok()) == Some(pgid)
            })
        })
        .collect()
}

/// The live children of `pid`.
fn live_children(pid: i32) -> Vec<i32> {
    children_of(pid)
        .into_iter()
        .filter(|&(_, s)| s != 'Z')
        .map(|(p, _)| p)
        .collect()
}

/// A transfer of `blob.bin` from 127.0.0.1:`port` stopped after its first
/// block (not acknowledged, so tftpd's transfer child waits for us), with
/// the wait server that forked it and that child.
fn stalled_transfer(inetd: &Inetd, port: u16) -> (TftpRead, i32, i32) {
    let t = TftpRead::start((Ipv4Addr::LOCALHOST, port).into(), "blob.bin");
    let servers = inetd.children_named("in.tftpd");
    let (server, child) = servers
        .iter()
        .find_map(|&s| Some((s, *live_children(s).first()?)))
        .unwrap_or_else(|| panic!("no transfer child under {servers:?}"));
    (t, server, child)
}

/// Checks what runs while a transfer from `port` on 127.0.0.1 is in its
/// middle: the wait server is root, its transfer child is tftpd's `-u`
/// user, chrooted into `root`; then finishes the transfer and compares it
/// with `blob`.
fn check_transfer_ids(inetd: &Inetd, port: u16, root: &Path, blob: &[u8]) {
    let tftp = user("tftp").expect("user tftp (made by tftpd-hpa's package)");
    let (t, server, child) = stalled_transfer(inetd, port);
    let ids = proc_ids(child).expect("the transfer child's ids");
    let want_uid = format!("{0} {0} {0} {0}", tftp.uid);
    let want_gid = format!("{0} {0} {0} {0}", tftp.gid);
    assert_eq!(ids.uid, want_uid, "transfer child uid");
    assert_eq!(ids.gid, want_gid, "transfer child gid");
    assert_eq!(ids.groups, tftp.gid.to_string(), "transfer child groups");
    assert_eq!(
        ids.root,
        fs::canonicalize(root).unwrap(),
        "transfer child chroot"
    );
    // What root is for: the wait server stays root to chroot and drop for
    // every transfer.
    let server_ids = proc_ids(server).expect("the wait server's ids");
    assert_eq!(server_ids.uid, "0 0 0 0", "the wait server runs as root");
    assert!(t.finish() == blob, "the transfer differs");
}

#[test]
fn tftpd_allowed_root_serves_a_binary_file_byte_for_byte() {
    require_root!("in.tftpd starts as root: it chroots and drops to -u itself");
    need(TFTPD, "tftpd-hpa");
    need(TFTP, "tftp-hpa");
    let (root, blob) = tftp_root("tftp");
    let port = free_port();
    let conf = format!(
        "{}:{port} dgram udp wait root {TFTPD} in.tftpd -s {} -u tftp\n",
        loopbacks(),
        root.path().display()
    );
    let mut inetd = Inetd::start(&conf, &["--allow-root-services"]);
    inetd.wait_rows(loopback_rows(), "listening");
    // First, while no other transfer runs, our own client on 127.0.0.1.
    check_transfer_ids(&inetd, port, root.path(), &blob);
    let scratch = TempDir::new("tftp-got");
    for host in url_hosts() {
        let host = host.trim_matches(['[', ']']);
        let dest = scratch.join(format!("got-{host}"));
        let r = tftp_get(host, port, "blob.bin", &dest);
        assert!(
            r.ok(),
            "tftp {host} {port}: {r}\ncore log:\n{}",
            inetd.log()
        );
        assert!(
            fs::read(&dest).unwrap() == blob,
            "tftp {host} {port}: the file differs"
        );
    }
}

// ---------------------------------------------------------------------------
// tftpd-hpa pinned with --allow-root-command

/// The pin for tftpd's line serving `root`: program path and whole argv.
fn tftpd_pin(root: &Path) -> String {
    format!("{TFTPD} in.tftpd -s {} -u tftp", root.display())
}

/// The inetd.conf line the pin allows, on `addr`:`port` with `protocol`.
fn tftpd_line(addr: &str, port: u16, protocol: &str, root: &Path) -> String {
    format!(
        "{addr}:{port} dgram {protocol} wait root {TFTPD} in.tftpd -s {} -u tftp\n",
        root.display()
    )
}

/// The rows for `port`.
fn rows_on(rows: &[serde_json::Value], port: u16) -> Vec<&serde_json::Value> {
    rows.iter()
        .filter(|r| r["port"].as_u64() == Some(u64::from(port)))
        .collect()
}

#[test]
fn tftpd_pinned_with_allow_root_command_serves_and_other_root_entries_are_refused() {
    require_root!("in.tftpd starts as root: it chroots and drops to -u itself");
    need(TFTPD, "tftpd-hpa");
    need(TFTP, "tftp-hpa");
    let (root, blob) = tftp_root("tftp-pin");
    let (pinned, other_args, other_program) = (free_port(), free_port(), free_port());
    let dir = root.path().display().to_string();
    // The pinned line; the same program with one more argument (-c: create
    // files, the reason a pin is the whole argv); another program as root.
    let conf = format!(
        "{}\
         127.0.0.1:{other_args} dgram udp4 wait root {TFTPD} in.tftpd -c -s {dir} -u tftp\n\
         127.0.0.1:{other_program} stream tcp4 nowait root /bin/cat cat\n",
        tftpd_line(loopbacks(), pinned, "udp", root.path()),
    );
    let pin = tftpd_pin(root.path());
    let mut inetd = Inetd::start(&conf, &["--allow-root-command", &pin]);
    let rows = inetd.wait_list("the pinned rows listening, the others rejected", |rows| {
        rows.len() == loopback_rows() + 2
            && rows_on(rows, pinned)
                .iter()
                .all(|r| r["state"] == "listening")
            && rows_on(rows, other_args)
                .iter()
                .all(|r| r["state"] == "rejected")
            && rows_on(rows, other_program)
                .iter()
                .all(|r| r["state"] == "rejected")
    });
    // The reason names the flag and the exact command line that would pin
    // the refused entry.
    let reason = |port| {
        rows_on(&rows, port)[0]["reason"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let r = reason(other_args);
    assert!(
        r.contains("--allow-root-command")
            && r.contains(&format!("{TFTPD} in.tftpd -c -s {dir} -u tftp")),
        "reason for the unpinned tftpd line: {r}"
    );
    let r = reason(other_program);
    assert!(
        r.contains("--allow-root-command") && r.contains("/bin/cat cat"),
        "reason for /bin/cat as root: {r}"
    );

    // The pinned daemon serves, and takes its own capabilities back at
    // exec (chroot) while the core keeps only its four.
    check_transfer_ids(&inetd, pinned, root.path(), &blob);
    let scratch = TempDir::new("tftp-pin-got");
    for host in url_hosts() {
        let host = host.trim_matches(['[', ']']);
        let dest = scratch.join(format!("got-{host}"));
        let r = tftp_get(host, pinned, "blob.bin", &dest);
        assert!(
            r.ok(),
            "tftp {host} {pinned}: {r}\ncore log:\n{}",
            inetd.log()
        );
        assert!(
            fs::read(&dest).unwrap() == blob,
            "tftp {host} {pinned}: the file differs"
        );
    }
    assert_eq!(
        proc_caps(inetd.pid, "CapPrm"),
        Some(cap::mask(&[
            cap::NET_BIND_SERVICE,
            cap::SETUID,
            cap::SETGID,
            cap::KILL
        ])),
        "the core's permitted set with a pin"
    );
    // Nothing answers where the entry was refused.
    let mut rrq = vec![0, 1];
    rrq.extend_from_slice(b"blob.bin\0octet\0");
    assert!(
        udp_request(
            (Ipv4Addr::LOCALHOST, other_args).into(),
            &rrq,
            Duration::from_millis(500)
        )
        .is_none(),
        "the unpinned tftpd line answered"
    );
}

/// Waits until no process of group `pgid` is left; returns how long that
/// took, or panics after `limit`.
fn wait_group_gone(inetd: &Inetd, pgid: i32, limit: Duration) -> Duration {
    let t0 = Instant::now();
    let mut left = Vec::new();
    let gone = wait_until(limit, || {
        left = group_members(pgid);
        left.is_empty()
    });
    assert!(
        gone,
        "processes of group {pgid} still run after {limit:?}: {left:?}; core log:\n{}",
        inetd.log()
    );
    t0.elapsed()
}

/// True when nothing holds UDP 127.0.0.1:`port`.
fn udp4_port_free(port: u16) -> bool {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

#[test]
fn a_pinned_tftpd_and_its_transfers_leave_with_its_listener() {
    require_root!("in.tftpd starts as root: it chroots and drops to -u itself");
    need(TFTPD, "tftpd-hpa");
    need(TFTP, "tftp-hpa");
    // The core's grace period between SIGTERM and SIGKILL, and a margin
    // for a loaded host.
    let limit = Duration::from_secs(5) + Duration::from_secs(3);
    let (one, blob_one) = tftp_root("tftp-one");
    let (two, blob_two) = tftp_root("tftp-two");
    let port = free_port();
    let line_one = tftpd_line("127.0.0.1", port, "udp4", one.path());
    let line_two = tftpd_line("127.0.0.1", port, "udp4", two.path());
    let pins = [tftpd_pin(one.path()), tftpd_pin(two.path())];
    let mut inetd = Inetd::start(
        &line_one,
        &[
            "--allow-root-command",
            &pins[0],
            "--allow-root-command",
            &pins[1],
        ],
    );
    inetd.wait_rows(1, "listening");
    let scratch = TempDir::new("tftp-life");
    let fetch = |tag: &str| {
        let dest = scratch.join(tag);
        let r = tftp_get("127.0.0.1", port, "blob.bin", &dest);
        assert!(r.ok(), "tftp after {tag}: {r}");
        fs::read(&dest).unwrap()
    };
    let serving = |rows: &[serde_json::Value]| {
        rows.len() == 1 && (rows[0]["state"] == "listening" || rows[0]["state"] == "waiting")
    };

    // A change of the entry (another -s): the server with the old
    // arguments and its transfer leave; the next request gets the new one.
    let (t, server, child) = stalled_transfer(&inetd, port);
    assert_eq!(
        group_members(server).len(),
        2,
        "server {server} and transfer {child}"
    );
    inetd.reload(&line_two, "the changed entry", serving);
    let took = wait_group_gone(&inetd, server, limit);
    drop(t);
    assert!(
        fetch("changed") == blob_two,
        "the changed entry served the old directory"
    );
    eprintln!("change: the old server's group left in {took:?}");

    // Removal: the server and its transfer leave, and the port is free.
    let (t, server, _) = stalled_transfer(&inetd, port);
    inetd.reload("# nothing\n", "no rows", |rows| rows.is_empty());
    let took = wait_group_gone(&inetd, server, limit);
    drop(t);
    assert!(
        udp4_port_free(port),
        "UDP {port} is still held after removal"
    );
    eprintln!("removal: the server's group left in {took:?}");

    // Core stop: the server and its transfer leave with the core, and a
    // new core binds the port at once (no failed bind, no retry).
    inetd.reload(&line_one, "the entry back", |rows| {
        rows.len() == 1 && rows[0]["state"] == "listening"
    });
    let (t, server, _) = stalled_transfer(&inetd, port);
    let t0 = Instant::now();
    inetd.signal(nix::sys::signal::Signal::SIGTERM);
    wait_group_gone(&inetd, server, limit);
    assert!(
        wait_until(limit, || inetd.exit_status().is_some()),
        "the core did not exit; log:\n{}",
        inetd.log()
    );
    let took = t0.elapsed();
    drop(t);
    assert!(
        udp4_port_free(port),
        "UDP {port} is still held after the core stopped"
    );
    eprintln!("core stop: the server's group and the core left in {took:?}");
    inetd.restart();
    let rows = inetd.wait_rows(1, "listening");
    assert!(
        rows[0]["last_error"].is_null(),
        "the restarted core failed a bind: {rows:#?}"
    );
    assert!(fetch("restarted") == blob_one, "the restarted core's tftpd");
}
