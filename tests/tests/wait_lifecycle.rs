//! A wait child holds its listener, so it goes with it: when the listener
//! is removed, when its entry changes (not when only its line moves), and
//! when the core stops, the child's process group gets SIGTERM, then
//! SIGKILL after the grace (5 s), and a core started next binds the port at
//! once. Nowait children keep finishing, and the core never signals a
//! process that is not its unreaped child or that child's group (a pid
//! reused by another process of the same uid gets nothing).
//!
//! The servers: the UDP `echo` builtin, and the probe's `udp-family`, an
//! exec'd dgram wait server that starts a helper in its process group
//! holding the same socket (as tftpd's per-transfer children do). The core
//! runs in one-command mode with an inetd.conf the test writes and changes
//! with `inetctl reload`, as a user would.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use inetd_tests::*;

/// The core's grace between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(5);
/// What a loaded CI host may add to a deadline.
const SLACK: Duration = Duration::from_secs(3);
/// The core's tests-only knob that shortens the grace.
const GRACE_ENV: &str = "INETD_TEST_STOP_GRACE_MS";

/// Writes `text` to `path` (0644, readable by the controller user) in one
/// step, so a reload never reads half a file.
fn write_file(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// `inetd-core --config inetd.conf` in a directory of its own. Dropping it
/// stops the core and kills whatever it started that is still running.
struct Inetd {
    dir: TempDir,
    core: Option<Proc>,
    grace_ms: Option<u64>,
    /// Every process seen under a core of this test, with its start time.
    seen: Vec<(i32, Option<u64>)>,
}

impl Inetd {
    /// A core on `conf`; `grace_ms` sets the tests-only grace.
    fn start(conf: &str, grace_ms: Option<u64>) -> Inetd {
        let dir = TempDir::new("lifecycle");
        let control = dir.join("control");
        fs::create_dir(&control).unwrap();
        if is_root() {
            let inetd = user("inetd").expect("user inetd (made by .ci/run)");
            nix::unistd::chown(
                &control,
                Some(nix::unistd::Uid::from_raw(inetd.uid)),
                Some(nix::unistd::Gid::from_raw(inetd.gid)),
            )
            .unwrap();
        }
        write_file(&dir.join("inetd.conf"), conf);
        let mut i = Inetd {
            dir,
            core: None,
            grace_ms,
            seen: Vec::new(),
        };
        i.spawn();
        i
    }

    fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("core.log"))
            .unwrap();
        let mut c = Command::new(bin_path("inetd-core"));
        c.arg("--config")
            .arg(self.dir.join("inetd.conf"))
            .arg("--control-socket")
            .arg(self.dir.join("control/control.sock"))
            .args(["--log-level", "debug"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        if let Some(ms) = self.grace_ms {
            c.env(GRACE_ENV, ms.to_string());
        }
        self.core = Some(Proc::spawn(&mut c));
    }

    fn core(&mut self) -> &mut Proc {
        self.core.as_mut().expect("a core runs")
    }

    fn pid(&mut self) -> i32 {
        self.core().pid()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("core.log")).unwrap_or_default()
    }

    fn inetctl(&self, args: &[&str]) -> Output {
        Command::new(bin_path("inetctl"))
            .arg("--socket")
            .arg(self.dir.join("control/control.sock"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run inetctl")
    }

    /// The rows of `inetctl list --json`, once the controller answers.
    fn rows(&self) -> Vec<serde_json::Value> {
        let mut rows = None;
        let ok = wait_until(Duration::from_secs(20), || {
            let out = self.inetctl(&["list", "--json"]);
            rows = serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .ok()
                .filter(|_| out.status.success())
                .and_then(|v| v["services"].as_array().cloned());
            rows.is_some()
        });
        assert!(ok, "inetctl list never answered; core log:\n{}", self.log());
        rows.unwrap()
    }

    /// Waits until every one of `n` rows is `listening`.
    fn wait_listening(&self, n: usize) {
        let mut last = Vec::new();
        let ok = wait_until(Duration::from_secs(20), || {
            last = self.rows();
            last.len() == n && last.iter().all(|r| r["state"] == "listening")
        });
        assert!(
            ok,
            "wanted {n} rows listening: {last:#?}; core log:\n{}",
            self.log()
        );
    }

    /// Writes `conf` and runs `inetctl reload`, which must succeed; its
    /// standard output.
    fn reload(&self, conf: &str) -> String {
        write_file(&self.dir.join("inetd.conf"), conf);
        let out = self.inetctl(&["reload"]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "inetctl reload: {stdout}{}; core log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        stdout
    }

    /// Notes what runs under the core now, for the clean-up.
    fn note_children(&mut self) {
        let mut todo = vec![self.pid()];
        while let Some(p) = todo.pop() {
            for (c, _) in children_of(p) {
                self.seen.push((c, start_time(c)));
                todo.push(c);
            }
        }
    }

    /// SIGTERM to the core, as a service manager stops it; waits for its
    /// exit and returns how long that took.
    fn stop(&mut self) -> Duration {
        self.note_children();
        let t0 = Instant::now();
        self.core().signal(nix::sys::signal::Signal::SIGTERM);
        let limit = GRACE + SLACK;
        let st = self.core().wait_exit(limit);
        assert!(
            st.success(),
            "the core exited with {st}; log:\n{}",
            self.log()
        );
        self.core = None;
        t0.elapsed()
    }
}

impl Drop for Inetd {
    fn drop(&mut self) {
        if self.core.is_some() {
            self.note_children();
            self.core = None;
        }
        for (p, start) in &self.seen {
            if start.is_some() && start_time(*p) == *start {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// The inetd.conf line of the UDP echo builtin on 127.0.0.1:`port`.
fn echo_line(port: u16) -> String {
    format!("127.0.0.1:{port} dgram udp4 wait nobody internal echo\n")
}

/// The line of the probe's `udp-family TAG` on 127.0.0.1:`port`.
fn family_line(port: u16, tag: &str, stubborn: bool) -> String {
    let extra = if stubborn { " stubborn" } else { "" };
    format!(
        "127.0.0.1:{port} dgram udp4 wait nobody {} inetd-test-probe udp-family {tag}{extra}\n",
        probe_path().display()
    )
}

/// A nowait stream service on 127.0.0.1:`port`: the probe's `echo`.
fn nowait_echo_line(port: u16) -> String {
    format!(
        "127.0.0.1:{port} stream tcp4 nowait nobody {} inetd-test-probe echo\n",
        probe_path().display()
    )
}

/// One datagram to 127.0.0.1:`port`: the answer, if one comes within
/// `timeout`.
fn ask(port: u16, payload: &str, timeout: Duration) -> Option<String> {
    udp_request(
        (Ipv4Addr::LOCALHOST, port).into(),
        payload.as_bytes(),
        timeout,
    )
    .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// The tag and pid of a `udp-family` answer (`TAG pid P PAYLOAD`).
fn family_answer(text: &str) -> (String, i32) {
    let f: Vec<&str> = text.split(' ').collect();
    assert!(
        f.len() >= 3 && f[1] == "pid",
        "not a family answer: {text:?}"
    );
    (f[0].to_string(), f[2].parse().unwrap())
}

/// Asks the family server on `port` until it answers; its tag and the
/// process group serving (the wait child's pid), once both the server and
/// its helper run.
fn family_group(inetd: &Inetd, port: u16) -> (String, i32) {
    let text = ask(port, "hello", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no answer on {port}; core log:\n{}", inetd.log()));
    let (tag, pid) = family_answer(&text);
    let pgid = pgid_of(pid).expect("the answering process");
    wait_for("the server and its helper", Duration::from_secs(10), || {
        group_members(pgid).len() == 2
    });
    (tag, pgid)
}

/// Waits up to `limit` until no process of group `pgid` is left; how long
/// that took.
fn wait_group_gone(inetd: &Inetd, pgid: i32, limit: Duration) -> Duration {
    let t0 = Instant::now();
    let mut left = Vec::new();
    let gone = wait_until(limit, || {
        left = group_members(pgid);
        left.is_empty()
    });
    assert!(
        gone,
        "group {pgid} still runs after {limit:?}: {left:?}; core log:\n{}",
        inetd.log()
    );
    t0.elapsed()
}

/// The core's builtin children (they never exec; the core names them
/// `inetd-echo`, `inetd-chargen`, ...).
fn builtin_children(core: i32) -> Vec<i32> {
    const NAMES: [&str; 5] = [
        "inetd-echo",
        "inetd-discard",
        "inetd-chargen",
        "inetd-daytime",
        "inetd-time",
    ];
    children_of(core)
        .into_iter()
        .filter(|&(p, st)| st != 'Z' && comm(p).is_some_and(|c| NAMES.contains(&c.as_str())))
        .map(|(p, _)| p)
        .collect()
}

/// True when nothing holds UDP 127.0.0.1:`port`.
fn udp_port_free(port: u16) -> bool {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

#[test]
fn a_removed_wait_server_and_dgram_builtin_leave_with_their_listeners() {
    require_probe_for_others!();
    let (echo, family) = (free_port(), free_port());
    let mut inetd = Inetd::start(&(echo_line(echo) + &family_line(family, "A", false)), None);
    inetd.wait_listening(2);
    assert_eq!(
        ask(echo, "ping", Duration::from_secs(10)).as_deref(),
        Some("ping")
    );
    let (_, group) = family_group(&inetd, family);
    let core = inetd.pid();
    let builtins = builtin_children(core);
    assert_eq!(builtins.len(), 1, "one echo child: {builtins:?}");

    let t0 = Instant::now();
    let out = inetd.reload("# nothing\n");
    assert!(
        out.lines().filter(|l| l.starts_with("removed")).count() == 2,
        "{out}"
    );
    // Within the grace: no answer on either port, no process of the
    // server's group, no echo child (whose --dgram-idle is 30 s).
    for port in [echo, family] {
        let silent = wait_until(GRACE, || {
            ask(port, "ping", Duration::from_millis(200)).is_none()
        });
        assert!(silent, "{port} still answers; core log:\n{}", inetd.log());
    }
    wait_group_gone(&inetd, group, GRACE.saturating_sub(t0.elapsed()) + SLACK);
    wait_for("the echo child to go", GRACE, || {
        builtin_children(core).is_empty()
    });
    assert!(
        t0.elapsed() < GRACE + SLACK,
        "removal took {:?}",
        t0.elapsed()
    );
    assert!(inetd.rows().is_empty(), "inetctl list still shows rows");
    assert!(udp_port_free(echo) && udp_port_free(family));
    eprintln!("removal: everything gone in {:?}", t0.elapsed());
}

#[test]
fn a_changed_entry_is_served_with_its_new_arguments_and_a_moved_line_is_no_change() {
    require_probe_for_others!();
    let port = free_port();
    let mut inetd = Inetd::start(&family_line(port, "A", false), None);
    inetd.wait_listening(1);
    let (tag, old) = family_group(&inetd, port);
    assert_eq!(tag, "A");

    let t0 = Instant::now();
    let out = inetd.reload(&family_line(port, "B", false));
    assert!(out.lines().any(|l| l.starts_with("changed")), "{out}");
    wait_group_gone(&inetd, old, GRACE + SLACK);
    // The next request starts the new spec.
    let (tag, new) = family_group(&inetd, port);
    assert_eq!(
        tag, "B",
        "the changed entry answered with the old arguments"
    );
    assert_ne!(new, old);
    assert!(t0.elapsed() < GRACE + SLACK, "took {:?}", t0.elapsed());

    // The same entry on another line: no change, the server runs on.
    let out = inetd.reload(&format!(
        "# moved down\n\n{}",
        family_line(port, "B", false)
    ));
    assert!(!out.lines().any(|l| l.starts_with("changed")), "{out}");
    let (tag, same) = family_group(&inetd, port);
    assert_eq!(
        (tag.as_str(), same),
        ("B", new),
        "a moved line restarted the server"
    );
    assert_eq!(group_members(new).len(), 2);
    let line = inetd.rows()[0]["source"]["line"].as_u64();
    assert_eq!(line, Some(3), "the row shows the new line");
    inetd.note_children();
}

#[test]
fn a_stopped_core_takes_its_wait_children_and_a_new_core_binds_at_once() {
    require_probe_for_others!();
    let (echo, family, tcp) = (free_port(), free_port(), free_port());
    let conf = echo_line(echo) + &family_line(family, "A", false) + &nowait_echo_line(tcp);
    let mut inetd = Inetd::start(&conf, None);
    inetd.wait_listening(3);
    assert_eq!(
        ask(echo, "ping", Duration::from_secs(10)).as_deref(),
        Some("ping")
    );
    let (_, group) = family_group(&inetd, family);
    let core = inetd.pid();
    let builtins = builtin_children(core);
    assert_eq!(builtins.len(), 1, "{builtins:?}");
    // A nowait connection in the middle of its work.
    let mut held = TcpStream::connect((Ipv4Addr::LOCALHOST, tcp)).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    held.write_all(b"one\n").unwrap();
    let mut buf = [0u8; 4];
    held.read_exact(&mut buf).unwrap();

    let took = inetd.stop();
    assert!(took < GRACE + SLACK, "the core took {took:?} to exit");
    // The core has reaped its wait children before it exited (the echo
    // child is gone); the server's helper, which is not its child, got
    // SIGTERM with its leader and SIGKILL before the leader was reaped, so
    // it is gone within moments. What a new core needs is checked below.
    assert!(
        builtins.iter().all(|&p| proc_stat(p).is_none()),
        "the echo child outlived the core"
    );
    wait_group_gone(&inetd, group, Duration::from_secs(1));
    assert!(udp_port_free(echo) && udp_port_free(family));
    // The nowait server finishes its work.
    held.write_all(b"two\n").unwrap();
    held.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"two\n");
    drop(held);
    eprintln!("core stop: exited with its wait children in {took:?}");

    inetd.spawn();
    inetd.wait_listening(3);
    let rows = inetd.rows();
    assert!(
        rows.iter().all(|r| r["last_error"].is_null()),
        "the new core failed a bind: {rows:#?}"
    );
    assert_eq!(
        ask(echo, "again", Duration::from_secs(10)).as_deref(),
        Some("again")
    );
    family_group(&inetd, family);
    inetd.note_children();
}

#[test]
fn a_server_that_ignores_sigterm_is_killed_when_the_grace_is_over() {
    require_probe_for_others!();
    let grace = Duration::from_millis(2000);
    let port = free_port();
    let stubborn = family_line(port, "S", true);
    let mut inetd = Inetd::start(&stubborn, Some(grace.as_millis() as u64));
    inetd.wait_listening(1);
    let sigterm_is = |pid: i32, field: &str| {
        proc_status(pid).is_some_and(|s| signals_in_mask(&s[field]).contains(&15))
    };

    for how in ["removal", "core stop"] {
        let (_, group) = family_group(&inetd, port);
        let members = group_members(group);
        wait_for(
            "SIGTERM blocked in the group",
            Duration::from_secs(5),
            || members.iter().all(|&p| sigterm_is(p, "SigBlk")),
        );
        let t0 = Instant::now();
        if how == "removal" {
            inetd.reload("# nothing\n");
        } else {
            inetd.note_children();
            inetd.core().signal(nix::sys::signal::Signal::SIGTERM);
        }
        // SIGTERM reached every member (pending: they block it), and they
        // are still there: not killed before the grace is over.
        wait_for("SIGTERM pending in the group", grace, || {
            members.iter().all(|&p| sigterm_is(p, "ShdPnd"))
        });
        assert_eq!(group_members(group).len(), 2, "{how}: killed at once");
        wait_group_gone(&inetd, group, grace + SLACK);
        let gone = t0.elapsed();
        assert!(
            gone + Duration::from_millis(100) >= grace,
            "{how}: killed after {gone:?}, before the grace of {grace:?}"
        );
        assert!(udp_port_free(port), "{how}: the port is still held");
        eprintln!("{how}: a group that ignores SIGTERM was killed after {gone:?}");
        if how == "removal" {
            assert!(inetd
                .log()
                .contains("has not stopped after SIGTERM; SIGKILL"));
            inetd.reload(&stubborn);
            inetd.wait_listening(1);
        } else {
            let st = inetd.core().wait_exit(SLACK);
            assert!(st.success(), "{st}");
            inetd.core = None;
        }
    }
}

#[test]
fn a_reused_pid_of_the_same_uid_is_never_signalled() {
    require_root!("a chosen pid through /proc/sys/kernel/ns_last_pid, a canary as nobody");
    require_probe_for_others!();
    let env = vec![
        (
            "PATH".to_string(),
            "/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ),
        (GRACE_ENV.to_string(), "1000".to_string()),
    ];
    let mut core = Core::start_with(CoreOptions {
        env: Some(env),
        ..CoreOptions::default()
    });
    let dir = TempDir::new("canary");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let record = dir.join("signals");
    let nobody = nobody_creds();
    // A listener whose wait child answers once and exits, and 50 more whose
    // children are exiting while they are removed.
    let port = free_port();
    let once = udp4(port).probe(&["udp-echo-once"]);
    let churn: Vec<u16> = (0..50).map(|_| free_port()).collect();
    let mut set = vec![once.clone()];
    set.extend(churn.iter().map(|&p| udp4(p).probe(&["udp-echo-once"])));
    assert_all_applied(&core.apply(set.clone()));

    // The wait child's pid, once the core has reaped it, goes to a canary
    // of the same uid in a session of its own (so its group has that id
    // too). Other processes may take the pid first: try again.
    let mut canary = None;
    for _ in 0..20 {
        let reply = ask(port, "x", Duration::from_secs(10)).expect("no answer");
        let pid: i32 = reply.split(' ').nth(1).unwrap().parse().unwrap();
        wait_for(
            "the wait child to be reaped",
            Duration::from_secs(10),
            || proc_stat(pid).is_none(),
        );
        let _ = fs::remove_file(&record);
        fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
        let mut c = command_as(nobody.uid, nobody.gid, probe_path());
        let mut p = Proc::spawn(
            c.arg("canary")
                .arg(&record)
                .stdin(Stdio::piped())
                .stdout(Stdio::null()),
        );
        if p.pid() == pid {
            canary = Some(p);
            break;
        }
        drop(p.child_mut().stdin.take());
        p.wait_exit(Duration::from_secs(5));
    }
    let mut canary = canary.expect("never got a reused pid for the canary");
    let cpid = canary.pid();
    wait_for("the canary", Duration::from_secs(5), || {
        fs::read_to_string(&record).is_ok_and(|t| t.starts_with("ready"))
    });
    assert_eq!(pgid_of(cpid), Some(cpid), "the canary leads its group");

    // Churn: wake every other wait child, then remove everything while they
    // answer and exit; then a change and a core stop for good measure.
    for &p in &churn {
        let _ = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .send_to(b"x", (Ipv4Addr::LOCALHOST, p));
    }
    let r = core.apply(vec![]);
    assert_eq!(r.removed.len(), 51);
    // A wait child of `once` may still be answering a late datagram of the
    // loop above; it holds the port until it has gone with its listener.
    wait_for(
        "the removed port to be free",
        Duration::from_secs(5),
        || udp_port_free(port),
    );
    assert_all_applied(&core.apply(vec![once.clone().probe(&["udp-echo"])]));
    core.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(core
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));

    // Past the grace: nothing reached the canary, and it lives.
    let got_any = wait_until(Duration::from_millis(1000) + SLACK, || {
        fs::read_to_string(&record).is_ok_and(|t| t != "ready\n")
    });
    let text = fs::read_to_string(&record).unwrap_or_default();
    assert!(!got_any, "the canary (pid {cpid}) got a signal: {text:?}");
    assert!(canary.exit_status().is_none(), "the canary was killed");
    drop(canary.child_mut().stdin.take());
    canary.wait_exit(Duration::from_secs(5));
}
