//! Harness for the black-box tests: find the real binaries, start
//! `inetd-core` on a private core socket, speak the core protocol, build
//! listener specs, read what the probe server reports, and look at
//! processes through `/proc`.
//!
//! Nothing here sleeps for synchronisation: [`wait_until`] and
//! [`wait_for`] poll a condition until a deadline. Ports come from
//! [`free_port`], temporary directories from [`TempDir`], so parallel test
//! runs do not collide.
//!
//! Every skip goes through [`skip()`] (the macros [`skip!`],
//! [`require_root!`], [`require_ipv6!`], [`require_user!`] and
//! [`require_probe_for_others!`] call it): it prints why, or fails the test
//! when `INETD_TEST_STRICT=1`, as CI sets it, so nothing passes there
//! without having run.
//!
//! # Running
//!
//! `cargo build --workspace && cargo test --workspace`. The binaries are
//! found by [`bin_dir`] (`INETD_BIN_DIR`, `CARGO_TARGET_DIR`, the target
//! directory of the test executable). As root every test runs (the users
//! `nobody`, `inetd`, `inetd-test-peer`, `inetd-test-admin` must exist); as
//! another user the root tests print `skipped: needs root (...)` and pass,
//! unless `INETD_TEST_STRICT=1` makes every skip a failure.
//!
//! # What is where
//!
//! The core alone, in packaged mode, spoken to over its core socket:
//!
//! * `core_child.rs`: what a server gets (descriptors, ids, groups,
//!   capabilities, no_new_privs, signals, environment, umask, cwd), the
//!   root-service policy, the core's own capabilities.
//! * `core_services.rs`: wait dgram and wait stream (and servers of either
//!   that cannot start), dual-stack and single-family sockets, removal, bind
//!   failure and retry.
//! * `core_unix.rs`: unix listeners and the filesystem.
//! * `core_identity.rs`: who services may run as: the users and groups the
//!   core's command line allows, never the controller's ids, root only
//!   with `--allow-root-services` or for a pinned command.
//! * `core_socket.rs`: who may talk to the core, malformed and random
//!   frames, version mismatch, a second core.
//! * `core_apply.rs`: validation, diff by bind key, generation, 10,000
//!   listeners in one Apply, logging.
//! * `core_policy.rs`: a normal user's core, setuid services, failing id
//!   changes, the source port 20 guard, descriptors after reloads.
//! * `core_acl.rs`: access lists.
//! * `core_resources.rs`: leaks, zombies, the descriptor limit, closed stdio,
//!   resets, signals (these take [`serial`]).
//! * `core_cli.rs`: command-line refusals and exit codes.
//! * `builtins.rs`: the `internal` services (echo, discard, daytime, time,
//!   chargen) over TCP and UDP, their children and their UDP guards.
//!
//! The core in one-command mode (`--config`), and the controller:
//!
//! * `core_onecommand.rs`: the controller the core starts, with a stand-in
//!   script: its command line, ids, environment and fd 3, signal
//!   forwarding, exit 1 after three failures before Hello, restarts without
//!   limit after Hello.
//! * `controller.rs`: the real `inetd-controller` and `inetctl` against a
//!   real core, each started as a [`Proc`].
//! * `controller_limits.rs`: limits and access lists as the controller
//!   reads, compiles and shows them (`inetctl check`, `list --json`, the
//!   access files reread on reload).
//! * `wait_lifecycle.rs`: wait children leaving with their listener on
//!   removal, change and core stop (driven by `inetctl reload`), SIGKILL
//!   after the grace, no signal to a reused pid.
//! * `daemons.rs`: Debian's own daemons (git daemon, rsync, fingerd,
//!   tftpd-hpa) under a one-command core, driven by their own clients.
//!
//! # Security-history rows (docs/security.md) and their tests
//!
//! | row | test |
//! |---|---|
//! | CVE-2017-1000082 (raw Apply with uid/gid 0) | `core_child::root_ids_are_refused_without_allow_root_services` |
//! | CVE-2023-40303 (unchecked set*id) | `core_policy::a_failing_setuid_in_the_child_stops_the_server`, `..._setgroups_...` |
//! | missing setgroups (nbd, OpenBSD 1.116) | `core_child::child_gets_only_the_specs_groups_when_the_core_has_more` |
//! | CVE-2007-0882 class, CVE-2001-1322 (env, umask, TMPDIR) | `core_child::child_environment_and_umask_do_not_come_from_the_core` |
//! | CVE-2002-0871 (leaked descriptors) | `core_child::nowait_stream_child_gets_the_connection_and_a_clean_process`, `core_policy::wait_and_reloaded_services_see_only_their_descriptors` |
//! | xinetd PR #22 (fd 0 closed at start) | `core_resources::a_core_started_with_stdio_closed_still_serves` |
//! | rinetd #1 (FD_SETSIZE) | `core_resources::listeners_past_fd_setsize_serve`, `core_apply::ten_thousand_listeners` |
//! | CVE-1999-0396 (RST between poll and accept) | `core_resources::resets_between_poll_and_accept_never_wedge_another_service` |
//! | EMFILE spin | `core_resources::at_the_descriptor_limit_the_core_does_not_spin_and_recovers`, `one_descriptor_short_of_fork_the_core_backs_off` |
//! | CVE-2003-0211 (memory per refused connection) | `core_acl::refused_connections_cost_no_memory` |
//! | systemd PR #2961 (zombies) | `core_resources::parallel_connections_leave_no_zombies`, `a_thousand_connections_leak_no_descriptor_and_no_zombie` |
//! | CVE-2016-7795/-7796, bincode#41 etc. (bad frames, 2^62 Vec) | `core_socket::malformed_frames_end_the_connection_and_the_core_keeps_serving`, `random_frames_on_300_connections_change_nothing` |
//! | CVE-2018-15686 (text forging state/log lines) | `core_apply::labels_cannot_forge_log_lines`, `invalid_listeners_are_refused_one_by_one` |
//! | CVE-2019-7304 dirty_sock | `core_socket::a_client_is_judged_by_its_uid_not_its_socket_path` |
//! | CVE-2020-15257 (who reaches the socket) | `core_socket::only_root_and_the_controller_are_served`, `core_socket_is_0660_root_and_the_controllers_group`, `the_core_has_no_abstract_socket` |
//! | CVE-2006-5051, CVE-2024-6387, cups#1072, keepalived#209 (signal handlers) | `core_resources::signals_applies_and_exits_at_once_leave_a_consistent_core` |
//! | OpenBSD `spawn()` (a wait server that cannot start) | `core_services::a_wait_dgram_server_that_cannot_start_does_not_loop`, `a_wait_stream_server_that_cannot_start_does_not_loop` |
//! | unlink/bind TOCTOU on unix paths | `core_unix::*` |
//! | openSUSE/xinetd PR #7 (ACL with no peer) | `core_acl::an_access_list_where_no_peer_can_be_checked_is_refused`, `controller_limits::list_json_shows_limits_counters_and_rejects_an_access_list_on_a_wait_stream_service` |
//! | tcp_wrappers (missing or unreadable access files) | `controller_limits::a_reload_with_an_unreadable_hosts_file_changes_nothing` |
//! | Debian 2000-06-19 (host-name access rules) | `controller_limits::inetctl_check_reports_limits_and_access_list_problems_with_file_and_line` |
//! | OpenBSD `gettcp()` port 20 | `core_policy::a_connection_from_source_port_20_is_closed_at_once` |
//! | PID reuse (ngIRCd, pidfd_send_signal) | `wait_lifecycle::a_reused_pid_of_the_same_uid_is_never_signalled` |
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use inetd_protocol as protocol;
use inetd_protocol::{
    read_message, write_message, Action, ApplyReport, Bind, Builtin, CoreRequest, CoreResponse,
    Credentials, HelloReply, IpMode, Limits, ListenerSpec, ListenerState, ListenerStatus,
    ProtocolError, SocketType, StatusReport, PROTOCOL_VERSION,
};

// ---------------------------------------------------------------------------
// Who we are, and skipping

/// True when the tests run with effective uid 0.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The environment variable that makes a skip a failure: CI sets
/// `INETD_TEST_STRICT=1`, so a test that cannot run there fails instead of
/// passing without having checked anything.
pub const STRICT_ENV: &str = "INETD_TEST_STRICT";

/// True when skips are failures ([`STRICT_ENV`] is set to anything but
/// empty or `0`).
pub fn strict() -> bool {
    std::env::var_os(STRICT_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Every skip goes through here, whole tests ([`skip!`]) and parts of one
/// alike: prints `skipped: WHY`, or panics with the reason when
/// [`strict`]. The caller then leaves out what it cannot check.
pub fn skip(why: &str) {
    assert!(
        !strict(),
        "skipped, and {STRICT_ENV} makes a skip a failure: {why}"
    );
    eprintln!("skipped: {why}");
}

/// Skips the rest of the calling test through [`skip()`] (a `format!`
/// reason) and returns from it.
#[macro_export]
macro_rules! skip {
    ($($why:tt)*) => {{
        $crate::skip(&format!($($why)*));
        return;
    }};
}

/// True as root; otherwise says through [`skip()`] that the part `what`
/// needs root, and false: `if root_or_skip("...") { checks }`.
pub fn root_or_skip(what: &str) -> bool {
    if is_root() {
        return true;
    }
    skip(&format!("needs root ({what})"));
    false
}

/// Skips the calling test, saying `needs root (WHY)`, unless the tests run
/// as root.
#[macro_export]
macro_rules! require_root {
    ($why:expr) => {
        if !$crate::is_root() {
            $crate::skip!("needs root ({})", $why);
        }
    };
}

/// Skips the calling test when the host cannot bind `::1`.
#[macro_export]
macro_rules! require_ipv6 {
    () => {
        if !$crate::has_ipv6() {
            $crate::skip!("no IPv6 on this host");
        }
    };
}

/// Skips the calling test when the probe cannot be run by other users (a
/// target directory that is not world-readable): tests that run it as
/// `nobody` need that.
#[macro_export]
macro_rules! require_probe_for_others {
    () => {
        if let Err(why) = $crate::probe_usable_by_others() {
            $crate::skip!("{why}");
        }
    };
}

/// Skips the calling test when user `name` does not exist, else gives it.
#[macro_export]
macro_rules! require_user {
    ($name:expr) => {
        match $crate::user($name) {
            Some(u) => u,
            None => $crate::skip!("no user {}", $name),
        }
    };
}

/// Serialises the tests of one test binary that measure time or CPU, so
/// they do not disturb each other (cargo runs test binaries one at a
/// time, the tests inside one binary in parallel).
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// Binaries

/// The workspace's target directory: `CARGO_TARGET_DIR` (a relative one
/// is taken from the workspace root, as cargo does), else `target` in the
/// workspace.
pub fn target_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => workspace.join(d),
        None => workspace.join("target"),
    }
}

/// The directory holding the workspace's binaries: `INETD_BIN_DIR` if set;
/// else the profile directory this test executable was built into
/// (`target/debug/deps/..`, wherever `CARGO_TARGET_DIR` put it) when the
/// binaries are there; else the profile directory of this build under
/// [`target_dir`].
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("INETD_BIN_DIR") {
        return PathBuf::from(d);
    }
    if let Ok(exe) = std::env::current_exe() {
        // target/debug/deps/core_child-HASH -> target/debug
        if let Some(d) = exe.parent().and_then(Path::parent) {
            if d.join("inetd-core").exists() {
                return d.to_path_buf();
            }
        }
    }
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    target_dir().join(profile)
}

/// The path of workspace binary `name`; panics with the build command when
/// it is missing.
pub fn bin_path(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} not found: build the workspace first (cargo build --workspace), or set INETD_BIN_DIR",
        p.display()
    );
    p
}

/// The probe server (`inetd-test-probe`, this crate's binary).
pub fn probe_path() -> PathBuf {
    bin_path("inetd-test-probe")
}

/// Ok when users other than the owner can execute the probe: every
/// directory above it searchable by others and the file executable by
/// others.
pub fn probe_usable_by_others() -> Result<(), String> {
    let p = probe_path();
    let p = std::fs::canonicalize(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    let m = std::fs::metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    if m.mode() & 0o005 != 0o005 {
        return Err(format!(
            "{} is not readable and executable by others (mode {:o}); the probe must run as nobody",
            p.display(),
            m.mode() & 0o7777
        ));
    }
    let mut dir = p.parent();
    while let Some(d) = dir {
        let m = std::fs::metadata(d).map_err(|e| format!("{}: {e}", d.display()))?;
        if m.mode() & 0o001 == 0 {
            return Err(format!(
                "{} is not searchable by others (mode {:o}); the probe must run as nobody",
                d.display(),
                m.mode() & 0o7777
            ));
        }
        dir = d.parent();
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Time

/// Polls `cond` every few milliseconds until it holds (true) or `timeout`
/// passes (false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Like [`wait_until`], but panics naming `what` at the deadline.
pub fn wait_for(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    assert!(
        wait_until(timeout, cond),
        "timed out after {timeout:?} waiting for {what}"
    );
}

/// Seconds since the epoch.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Temporary directories

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A directory with a unique name, mode 0755, removed with everything in
/// it on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A new directory under `/tmp`, named after `tag`.
    pub fn new(tag: &str) -> TempDir {
        TempDir::new_in(Path::new("/tmp"), tag)
    }

    /// A new directory under `base`.
    pub fn new_in(base: &Path, tag: &str) -> TempDir {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = base.join(format!(
            "inetd-tests-{tag}-{}-{n}-{nanos:x}",
            std::process::id()
        ));
        std::fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        TempDir { path }
    }

    /// A new directory where the core accepts unix listeners: every
    /// directory from `/` down is owned by root (or by us when we are not
    /// root) and not writable by group or others. `/tmp` is not such a
    /// place, so this is under `/run` for root, else under
    /// `$XDG_RUNTIME_DIR` or `$HOME`.
    pub fn secure(tag: &str) -> TempDir {
        let base = if is_root() {
            PathBuf::from("/run")
        } else {
            std::env::var_os("XDG_RUNTIME_DIR")
                .or_else(|| std::env::var_os("HOME"))
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/tmp"))
        };
        TempDir::new_in(&base, tag)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `--unix-dir PATH`: the core arguments that let it make unix
    /// listeners directly in this directory.
    pub fn unix_dir_args(&self) -> Vec<String> {
        vec!["--unix-dir".into(), self.path.display().to_string()]
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------
// Ports and addresses

/// True when this host can bind `::1`.
pub fn has_ipv6() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

/// A port that is free right now for TCP and UDP on 127.0.0.1 and (where
/// the host has IPv6) ::1 and the wildcards, and never the same port twice
/// in one test process. It is taken below the kernel's ephemeral range
/// (`ip_local_port_range`): a port handed out by binding port 0 is one the
/// kernel may give to the next client socket of a test running beside this
/// one, which then takes it before the core binds. Each test process starts
/// at its own offset in the range, so test binaries running at the same
/// time rarely pick the same ports.
pub fn free_port() -> u16 {
    static STATE: Mutex<(Vec<u16>, u32)> = Mutex::new((Vec::new(), 0));
    let v6 = has_ipv6();
    let (low, high) = below_ephemeral_range();
    let span = u32::from(high - low);
    let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    if state.0.is_empty() {
        // A per-process starting point: pid and clock, mixed.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        state.1 = (std::process::id().wrapping_mul(2_654_435_761) ^ t) % span;
    }
    for _ in 0..span {
        state.1 = (state.1 + 1) % span;
        let port = low + u16::try_from(state.1).expect("the span fits a port");
        if state.0.contains(&port) {
            continue;
        }
        // One at a time: each socket is closed before the next bind.
        let free_tcp = |a: &str| TcpListener::bind((a, port)).is_ok();
        let free_udp = |a: &str| UdpSocket::bind((a, port)).is_ok();
        if free_tcp("0.0.0.0") && free_udp("0.0.0.0") && (!v6 || (free_tcp("::") && free_udp("::")))
        {
            state.0.push(port);
            return port;
        }
    }
    panic!("no free port found below the ephemeral range");
}

/// The ports `free_port` draws from: from 10000 up to just below the
/// kernel's ephemeral range (Linux's default range starts at 32768), or
/// 10000-19999 where that range starts too low to leave room.
fn below_ephemeral_range() -> (u16, u16) {
    let first_ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if first_ephemeral > 12_000 {
        (10_000, first_ephemeral - 1)
    } else {
        (10_000, 19_999)
    }
}

/// Runs `f` on a thread of its own in a new network namespace with only
/// its loopback up, and returns what it returns (a panic in `f` is this
/// test's panic). Everything `f` binds and every process it starts lives
/// in that namespace, so a test owns every port there, fixed and
/// privileged ones included. A network namespace belongs to a thread, so
/// the test's other threads and the other tests are untouched. Needs root
/// (CAP_SYS_ADMIN): call [`require_root!`] first.
pub fn in_private_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("unshare(CLONE_NEWNET)");
            let st = Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .expect("ip (iproute2)");
            assert!(st.success(), "ip link set lo up: {st}");
            f()
        });
        thread
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// Connects to 127.0.0.1:`port`, with 5 s read and write timeouts.
pub fn connect4(port: u16) -> std::io::Result<TcpStream> {
    connect_to(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
}

/// Connects to `[::1]:port`, with 5 s read and write timeouts.
pub fn connect6(port: u16) -> std::io::Result<TcpStream> {
    connect_to(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port))
}

/// Connects to `addr` within 5 s, with 5 s read and write timeouts.
pub fn connect_to(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// Reads until end of file (or the read timeout) and returns the bytes as
/// text.
pub fn read_all(s: &mut impl Read) -> String {
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Sends `payload` from a fresh UDP socket to `to` and waits up to
/// `timeout` for one reply.
pub fn udp_request(to: SocketAddr, payload: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    let bind: SocketAddr = if to.is_ipv4() {
        "127.0.0.1:0".parse().unwrap()
    } else {
        "[::1]:0".parse().unwrap()
    };
    let s = UdpSocket::bind(bind).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.send_to(payload, to).ok()?;
    let mut buf = vec![0u8; 65536];
    let (n, _) = recv_from(&s, &mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// `UdpSocket::recv_from`, retried when a signal interrupts it (the test
/// process gets signals from the processes it starts); a timeout set with
/// `set_read_timeout` still ends it.
pub fn recv_from(s: &UdpSocket, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    loop {
        match s.recv_from(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

// ---------------------------------------------------------------------------
// Users

/// A user of the host, resolved through NSS.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Looks up a user by name.
pub fn user(name: &str) -> Option<User> {
    nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .map(|u| User {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        })
}

/// The gid of group `name`.
pub fn group_gid(name: &str) -> Option<u32> {
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// A command that runs `program` with real and effective uid `uid`, gid
/// `gid` and no supplementary groups (through `setpriv`, so no unsafe
/// pre-exec code is needed). Needs root.
pub fn command_as(uid: u32, gid: u32, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg("--")
        .arg(program);
    c
}

/// Like [`command_as`], with the user's supplementary groups from the group
/// database (`setpriv --init-groups`).
pub fn command_as_user(u: &User, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={}", u.uid))
        .arg(format!("--regid={}", u.gid))
        .arg("--init-groups")
        .arg("--")
        .arg(program);
    c
}

/// The credentials services run with in the tests: `nobody` (65534,
/// group 65534, groups `[65534]`) as root; our own uid and gid otherwise (a
/// normal user's core runs everything as itself).
pub fn service_creds() -> Credentials {
    if is_root() {
        nobody_creds()
    } else {
        Credentials {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            groups: Vec::new(),
        }
    }
}

/// `nobody`, as `initgroups("nobody", 65534)` gives it.
pub fn nobody_creds() -> Credentials {
    Credentials {
        uid: 65534,
        gid: 65534,
        groups: vec![65534],
    }
}

// ---------------------------------------------------------------------------
// Listener specs

/// A stream listener on 127.0.0.1:`port` running the probe's `report`.
pub fn tcp4(port: u16) -> ListenerSpec {
    inet_spec(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        port,
        IpMode::V4,
        SocketType::Stream,
    )
}

/// A stream listener on `[::1]:port`, IPv6 only.
pub fn tcp6(port: u16) -> ListenerSpec {
    inet_spec(
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        port,
        IpMode::V6Only,
        SocketType::Stream,
    )
}

/// A dual-stack stream listener on `[::]:port` (IPV6_V6ONLY off): reached
/// from 127.0.0.1 and ::1.
pub fn tcp_dual(port: u16) -> ListenerSpec {
    inet_spec(
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        port,
        IpMode::Dual,
        SocketType::Stream,
    )
}

/// A `wait` datagram listener on 127.0.0.1:`port` running the probe's
/// `udp-echo-once`.
pub fn udp4(port: u16) -> ListenerSpec {
    inet_spec(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        port,
        IpMode::V4,
        SocketType::Dgram,
    )
    .wait(true)
    .probe(&["udp-echo-once"])
}

/// A `wait` datagram listener on `[::1]:port`, IPv6 only.
pub fn udp6(port: u16) -> ListenerSpec {
    inet_spec(
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        port,
        IpMode::V6Only,
        SocketType::Dgram,
    )
    .wait(true)
    .probe(&["udp-echo-once"])
}

/// A `wait` dual-stack datagram listener on `[::]:port`.
pub fn udp_dual(port: u16) -> ListenerSpec {
    inet_spec(
        IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        port,
        IpMode::Dual,
        SocketType::Dgram,
    )
    .wait(true)
    .probe(&["udp-echo-once"])
}

/// A unix stream listener at `path` running the probe's `report`.
pub fn unix_stream(path: &Path) -> ListenerSpec {
    ListenerSpec {
        bind: Bind::Unix {
            path: path.display().to_string(),
        },
        socket_type: SocketType::Stream,
        wait: false,
        action: probe_action(&["report"]),
        creds: service_creds(),
        limits: Limits::default(),
        acl: None,
        label: format!("unix:{}", path.display()),
    }
}

/// Any internet listener, `nowait`, running the probe's `report` with
/// [`service_creds`] and the default limits.
pub fn inet_spec(addr: IpAddr, port: u16, mode: IpMode, socket_type: SocketType) -> ListenerSpec {
    ListenerSpec {
        bind: Bind::Inet { addr, port, mode },
        socket_type,
        wait: false,
        action: probe_action(&["report"]),
        creds: service_creds(),
        limits: Limits::default(),
        acl: None,
        label: format!("test {addr} {port} {mode:?} {socket_type:?}"),
    }
}

/// Limits that never pause, refuse or hold a connection (for tests that
/// make many connections quickly): zero is unlimited everywhere.
pub fn no_limits() -> Limits {
    Limits {
        max_per_minute: 0,
        max_children: 0,
        ..Limits::default()
    }
}

/// Exec the probe with `args` (`argv[0]` is `inetd-test-probe`).
pub fn probe_action(args: &[&str]) -> Action {
    let mut argv = vec!["inetd-test-probe".to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    Action::Exec {
        path: probe_path().display().to_string(),
        argv,
    }
}

/// Chainable changes to a [`ListenerSpec`].
pub trait SpecExt: Sized {
    /// Exec `path` with `argv` (`argv[0]` included).
    fn exec(self, path: &str, argv: &[&str]) -> Self;
    /// Exec the probe with `args`.
    fn probe(self, args: &[&str]) -> Self;
    /// Run a builtin.
    fn builtin(self, b: Builtin) -> Self;
    /// Set the credentials.
    fn creds(self, c: Credentials) -> Self;
    /// Set `wait`.
    fn wait(self, wait: bool) -> Self;
    /// Set the label.
    fn label(self, label: &str) -> Self;
    /// Set the limits.
    fn limits(self, l: Limits) -> Self;
}

impl SpecExt for ListenerSpec {
    fn exec(mut self, path: &str, argv: &[&str]) -> Self {
        self.action = Action::Exec {
            path: path.into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
        };
        self
    }
    fn probe(mut self, args: &[&str]) -> Self {
        self.action = probe_action(args);
        self
    }
    fn builtin(mut self, b: Builtin) -> Self {
        self.action = Action::Builtin(b);
        self
    }
    fn creds(mut self, c: Credentials) -> Self {
        self.creds = c;
        self
    }
    fn wait(mut self, wait: bool) -> Self {
        self.wait = wait;
        self
    }
    fn label(mut self, label: &str) -> Self {
        self.label = label.into();
        self
    }
    fn limits(mut self, l: Limits) -> Self {
        self.limits = l;
        self
    }
}

// ---------------------------------------------------------------------------
// The core

/// How to start a core. `Default` is packaged mode on a private core
/// socket with `--log-level debug`, stdio to /dev/null and stderr to a log
/// file, the tests' environment.
#[derive(Debug, Clone, Default)]
pub struct CoreOptions {
    /// Further arguments after `--core-socket PATH --log-level debug`.
    pub args: Vec<String>,
    /// A command that execs the core (`setpriv ...`, `prlimit ...`); the
    /// core's path and arguments follow it.
    pub wrapper: Vec<String>,
    /// Shell commands run before the core is exec'd (`umask 000;`,
    /// `exec 0<&- 1>&- 2>&-;`): when set, the core is started through
    /// `sh -c 'PREFIX exec "$0" "$@"'`.
    pub shell_prefix: Option<String>,
    /// Replace the environment with exactly this; `None` inherits ours.
    pub env: Option<Vec<(String, String)>>,
    /// Don't wait for the core socket to accept (the test expects the core
    /// to exit).
    pub no_wait: bool,
    /// Use this core socket path instead of one in the core's directory.
    pub socket: Option<PathBuf>,
    /// Give the core's directory to this uid and gid (for a core started
    /// as another user through `wrapper`).
    pub dir_owner: Option<(u32, u32)>,
}

/// A running `inetd-core`. Dropping it stops the core (SIGTERM, then
/// SIGKILL after 5 s) and kills the children it had left.
#[derive(Debug)]
pub struct Core {
    child: Child,
    pid: i32,
    dir: TempDir,
    socket: PathBuf,
    log_path: PathBuf,
    exited: Option<ExitStatus>,
}

impl Core {
    /// Starts a core with the default options and waits until its socket
    /// accepts.
    pub fn start() -> Core {
        Core::start_with(CoreOptions::default())
    }

    /// Starts a core with extra arguments (`--allow-root-services`, ...).
    pub fn start_args(args: &[&str]) -> Core {
        Core::start_with(CoreOptions {
            args: args.iter().map(|s| s.to_string()).collect(),
            ..CoreOptions::default()
        })
    }

    /// Starts a core that may make unix listeners directly in `dir` (and
    /// nowhere else when it is root).
    pub fn start_unix(dir: &TempDir) -> Core {
        Core::start_with(CoreOptions {
            args: dir.unix_dir_args(),
            ..CoreOptions::default()
        })
    }

    /// Starts a core as `opts` says and, unless `opts.no_wait`, waits up to
    /// 10 s until its socket accepts a connection.
    pub fn start_with(opts: CoreOptions) -> Core {
        let dir = TempDir::new("core");
        if let Some((uid, gid)) = opts.dir_owner {
            nix::unistd::chown(
                dir.path(),
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .expect("chown the core's directory");
        }
        let socket = opts.socket.clone().unwrap_or_else(|| dir.join("core.sock"));
        let log_path = dir.join("core.log");
        let core = bin_path("inetd-core");
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        argv.extend(opts.wrapper.iter().map(Into::into));
        argv.push(core.into_os_string());
        argv.push("--core-socket".into());
        argv.push(socket.clone().into_os_string());
        argv.push("--log-level".into());
        argv.push("debug".into());
        argv.extend(opts.args.iter().map(Into::into));
        let mut cmd = match &opts.shell_prefix {
            Some(prefix) => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c").arg(format!("{prefix} exec \"$0\" \"$@\""));
                c.args(&argv);
                c
            }
            None => {
                let mut c = Command::new(&argv[0]);
                c.args(&argv[1..]);
                c
            }
        };
        if let Some(env) = &opts.env {
            cmd.env_clear();
            cmd.envs(env.iter().map(|(k, v)| (k, v)));
        }
        let log = std::fs::File::create(&log_path).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        let child = cmd.spawn().expect("cannot start inetd-core");
        let pid = i32::try_from(child.id()).unwrap();
        let mut c = Core {
            child,
            pid,
            dir,
            socket,
            log_path,
            exited: None,
        };
        if !opts.no_wait {
            let ok = wait_until(Duration::from_secs(10), || {
                if c.exit_status().is_some() {
                    return true;
                }
                UnixStream::connect(&c.socket).is_ok()
            });
            if let Some(st) = c.exit_status() {
                panic!("inetd-core exited at start ({st}); log:\n{}", c.log());
            }
            assert!(ok, "the core socket never accepted; log:\n{}", c.log());
        }
        c
    }

    /// The core's pid. Wrappers that exec (setpriv, prlimit, sh) keep the
    /// spawned pid; one that stays as the parent (strace) has the core as
    /// its child, which is found by name.
    pub fn pid(&self) -> i32 {
        if comm(self.pid).as_deref() == Some("inetd-core") {
            return self.pid;
        }
        children_of(self.pid)
            .into_iter()
            .map(|(p, _)| p)
            .find(|&p| comm(p).as_deref() == Some("inetd-core"))
            .unwrap_or(self.pid)
    }

    /// The core socket's path.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The core's private directory (where its socket and log live).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the core has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; panics with the log after
    /// `timeout`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        if !wait_until(timeout, || self.log().contains(needle)) {
            panic!(
                "the core did not log {needle:?} within {timeout:?}; log:\n{}",
                self.log()
            );
        }
    }

    /// Connects and says Hello; panics if that fails.
    pub fn client(&self) -> CoreClient {
        CoreClient::connect(&self.socket)
            .unwrap_or_else(|e| panic!("cannot talk to the core: {e}; log:\n{}", self.log()))
    }

    /// A connection without Hello, with a 5 s read timeout.
    pub fn connect_raw(&self) -> UnixStream {
        let s = UnixStream::connect(&self.socket).expect("connect to the core socket");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    /// Applies `listeners` on a new connection and returns the report.
    pub fn apply(&self, listeners: Vec<ListenerSpec>) -> ApplyReport {
        self.client().apply(listeners)
    }

    /// The core's status, on a new connection.
    pub fn status(&self) -> StatusReport {
        self.client().status()
    }

    /// Waits until the listener with `bind` reports a state `pred` accepts.
    pub fn wait_state(
        &self,
        bind: &Bind,
        timeout: Duration,
        mut pred: impl FnMut(&ListenerState) -> bool,
    ) -> ListenerStatus {
        let mut last = None;
        let ok = wait_until(timeout, || {
            let st = self.status();
            last = st.listeners.into_iter().find(|l| &l.spec.bind == bind);
            last.as_ref().is_some_and(|l| pred(&l.state))
        });
        assert!(
            ok,
            "listener {bind:?} did not reach the wanted state within {timeout:?}; last: {last:?}"
        );
        last.unwrap()
    }

    /// Sends `sig` to the core.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    /// The core's exit status, if it has exited (reaps it).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Waits up to `timeout` for the core to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_until(timeout, || self.exit_status().is_some());
        self.exit_status()
    }

    /// True while the core runs (it has neither exited nor become a
    /// zombie).
    pub fn is_alive(&self) -> bool {
        proc_status(self.pid()).is_some_and(|s| !s["State"].starts_with('Z'))
    }

    /// The core's live children: (pid, state letter).
    pub fn children(&self) -> Vec<(i32, char)> {
        children_of(self.pid())
    }

    /// The core's open descriptors.
    pub fn fd_count(&self) -> usize {
        open_fds(self.pid()).len()
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        // The core's children, and the core itself when a wrapper stayed.
        let core = self.pid();
        let mut kids: Vec<(i32, Option<u64>)> = children_of(core)
            .into_iter()
            .map(|(p, _)| (p, start_time(p)))
            .collect();
        if core != self.pid {
            kids.push((core, start_time(core)));
        }
        if self.exit_status().is_none() {
            self.signal(nix::sys::signal::Signal::SIGTERM);
            if self.wait_exit(Duration::from_secs(5)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        // Nowait servers outlive the core by design (and wait servers its
        // SIGKILL); ours must not outlive the test.
        for (p, start) in kids {
            if start.is_some() && start_time(p) == start {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Any other process a test starts (a controller, a core in one-command
/// mode). Dropping it sends SIGTERM, then SIGKILL if it has not exited
/// within 5 s, and reaps it.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    exited: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd`; panics naming the program when that fails.
    pub fn spawn(cmd: &mut Command) -> Proc {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
        Proc {
            child,
            exited: None,
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    /// The process, for its piped standard streams.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Sends `sig`, unless the process has been reaped (its pid may have
    /// been reused since).
    pub fn signal(&mut self, sig: nix::sys::signal::Signal) {
        if self.exit_status().is_none() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
        }
    }

    /// The exit status, if the process has exited (reaps it).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Waits up to `timeout` for the process to exit; panics if it does
    /// not.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        wait_until(timeout, || self.exit_status().is_some());
        self.exit_status()
            .unwrap_or_else(|| panic!("process {} did not exit within {timeout:?}", self.pid()))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        if !wait_until(Duration::from_secs(5), || self.exit_status().is_some()) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A connection to a core socket, after Hello.
#[derive(Debug)]
pub struct CoreClient {
    pub stream: UnixStream,
    /// The core's answer to Hello.
    pub hello: HelloReply,
}

impl CoreClient {
    /// Connects to `path` and says Hello with our protocol version.
    pub fn connect(path: &Path) -> Result<CoreClient, String> {
        let mut stream = UnixStream::connect(path).map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let hello = CoreRequest::Hello {
            version: PROTOCOL_VERSION,
        };
        match request(&mut stream, &hello).map_err(|e| format!("hello: {e}"))? {
            CoreResponse::Hello(h) => Ok(CoreClient { stream, hello: h }),
            other => Err(format!("hello answered with {other:?}")),
        }
    }

    /// Sends one request and reads one response.
    pub fn request(&mut self, req: &CoreRequest) -> Result<CoreResponse, ProtocolError> {
        request(&mut self.stream, req)
    }

    /// Applies `listeners`; panics unless the core answers with a report.
    pub fn apply(&mut self, listeners: Vec<ListenerSpec>) -> ApplyReport {
        match self.try_apply(listeners) {
            CoreResponse::Applied(r) => r,
            other => panic!("apply answered with {other:?}"),
        }
    }

    /// Applies `listeners` and returns whatever the core answers.
    pub fn try_apply(&mut self, listeners: Vec<ListenerSpec>) -> CoreResponse {
        self.request(&CoreRequest::Apply { listeners })
            .unwrap_or_else(|e| panic!("apply failed: {e}"))
    }

    /// The core's status; panics on any other answer.
    pub fn status(&mut self) -> StatusReport {
        match self.request(&CoreRequest::Status) {
            Ok(CoreResponse::Status(s)) => s,
            other => panic!("status answered with {other:?}"),
        }
    }
}

/// Writes `req` on `s` and reads one response.
pub fn request(s: &mut UnixStream, req: &CoreRequest) -> Result<CoreResponse, ProtocolError> {
    write_message(s, req)?;
    read_message(s)
}

/// Panics unless every outcome of `r` is `Added` (or `Unchanged`/`Changed`).
pub fn assert_all_applied(r: &ApplyReport) {
    use inetd_protocol::Outcome;
    for (i, o) in r.outcomes.iter().enumerate() {
        assert!(
            matches!(o, Outcome::Added | Outcome::Changed | Outcome::Unchanged),
            "listener {i} was not applied: {o:?}"
        );
    }
}

/// Writes raw bytes to a fresh connection and reports what came back:
/// `Ok(Some(response))`, `Ok(None)` for a close, `Err` for a read error
/// (including a timeout).
pub fn raw_exchange(s: &mut UnixStream, bytes: &[u8]) -> Result<Option<CoreResponse>, String> {
    if let Err(e) = s.write_all(bytes) {
        // The core may close before we finish writing.
        if e.kind() == std::io::ErrorKind::BrokenPipe
            || e.kind() == std::io::ErrorKind::ConnectionReset
        {
            return Ok(None);
        }
        return Err(format!("write: {e}"));
    }
    match inetd_protocol::read_payload(s) {
        Ok(None) => Ok(None),
        Ok(Some(p)) => inetd_protocol::decode_payload(&p)
            .map(Some)
            .map_err(|e| format!("undecodable reply: {e}")),
        Err(ProtocolError::Io(e)) if e.contains("reset") => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

// ---------------------------------------------------------------------------
// The probe's report

/// The probe's `KEY VALUE` report.
#[derive(Debug, Clone)]
pub struct Report {
    pub lines: Vec<(String, String)>,
    /// True when the report ended with `end` (it was not cut short).
    pub complete: bool,
}

impl Report {
    /// Parses report text.
    pub fn parse(text: &str) -> Report {
        let mut lines = Vec::new();
        let mut complete = false;
        for l in text.lines() {
            if l == "end" {
                complete = true;
                break;
            }
            let (k, v) = l.split_once(' ').unwrap_or((l, ""));
            lines.push((k.to_string(), v.to_string()));
        }
        Report { lines, complete }
    }

    /// Reads a whole report from a stream (until end of file) and checks
    /// it is complete.
    pub fn read_from(s: &mut impl Read) -> Report {
        let text = read_all(s);
        let r = Report::parse(&text);
        assert!(r.complete, "incomplete probe report: {text:?}");
        r
    }

    /// The first value for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.lines
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The first value for `key`; panics when missing.
    pub fn value(&self, key: &str) -> &str {
        self.get(key)
            .unwrap_or_else(|| panic!("no {key} in the report: {:?}", self.lines))
    }

    /// Every value for `key`.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The environment.
    pub fn env(&self) -> BTreeMap<String, String> {
        self.all("env")
            .into_iter()
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    /// The open descriptors.
    pub fn fds(&self) -> Vec<i32> {
        self.all("fd")
            .into_iter()
            .filter_map(|v| v.split(' ').next()?.parse().ok())
            .collect()
    }

    /// The `sock` line for descriptor `fd`, as `key=value` pairs.
    pub fn sock(&self, fd: i32) -> Option<BTreeMap<String, String>> {
        let prefix = format!("{fd} ");
        let line = self
            .all("sock")
            .into_iter()
            .find(|v| v.starts_with(&prefix))?;
        Some(
            line[prefix.len()..]
                .split(' ')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// A numeric field (`pid`, `sid`).
    pub fn num(&self, key: &str) -> i64 {
        self.value(key)
            .parse()
            .unwrap_or_else(|_| panic!("{key} is not a number: {:?}", self.get(key)))
    }
}

// ---------------------------------------------------------------------------
// /proc

/// The `Key: value` lines of `/proc/PID/status` (values whitespace-
/// normalised), or `None` when the process is gone.
pub fn proc_status(pid: i32) -> Option<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| {
                (
                    k.to_string(),
                    v.split_whitespace().collect::<Vec<_>>().join(" "),
                )
            })
            .collect(),
    )
}

/// A capability mask from `/proc/PID/status` (`CapEff` and friends).
pub fn proc_caps(pid: i32, field: &str) -> Option<u64> {
    let st = proc_status(pid)?;
    u64::from_str_radix(st.get(field)?, 16).ok()
}

/// The fields of `/proc/PID/stat` after the command name: index 0 is the
/// state (field 3 in proc(5)), so proc(5) field N is index N-3.
pub fn proc_stat(pid: i32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 1..];
    Some(after.split_whitespace().map(str::to_string).collect())
}

/// The process's start time in clock ticks since boot (to tell a pid from
/// a reused one).
pub fn start_time(pid: i32) -> Option<u64> {
    proc_stat(pid)?.get(19)?.parse().ok()
}

/// The command name of `pid` (`/proc/PID/comm`).
pub fn comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// utime + stime of `pid`, in clock ticks.
pub fn cpu_ticks(pid: i32) -> Option<u64> {
    let f = proc_stat(pid)?;
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
pub fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(100)
}

/// Resident set size of `pid` in KiB.
pub fn rss_kib(pid: i32) -> Option<u64> {
    proc_status(pid)?
        .get("VmRSS")?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

/// The open descriptors of `pid`.
pub fn open_fds(pid: i32) -> Vec<i32> {
    let mut v: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// The children of `pid` with their state letter (`Z` for a zombie).
pub fn children_of(pid: i32) -> Vec<(i32, char)> {
    let mut out = Vec::new();
    // Every thread's children: the core is single-threaded, but read all.
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
        .unwrap_or_default();
    for t in tasks {
        let Ok(text) = std::fs::read_to_string(t.join("children")) else {
            continue;
        };
        for c in text
            .split_whitespace()
            .filter_map(|s| s.parse::<i32>().ok())
        {
            if let Some(st) = proc_stat(c) {
                let state = st.first().and_then(|s| s.chars().next()).unwrap_or('?');
                out.push((c, state));
            }
        }
    }
    out
}

/// The process group of `pid`.
pub fn pgid_of(pid: i32) -> Option<i32> {
    proc_stat(pid)?.get(2)?.parse().ok()
}

/// The live (not zombie) processes of process group `pgid`, from `/proc`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| {
            proc_stat(p).is_some_and(|st| {
                st.first().map(String::as_str) != Some("Z")
                    && st.get(2).and_then(|g| g.parse().ok()) == Some(pgid)
            })
        })
        .collect()
}

/// Capability numbers (linux/capability.h) the tests name.
pub mod cap {
    pub const CHOWN: u32 = 0;
    pub const DAC_OVERRIDE: u32 = 1;
    pub const KILL: u32 = 5;
    pub const SETGID: u32 = 6;
    pub const SETUID: u32 = 7;
    pub const SETPCAP: u32 = 8;
    pub const NET_BIND_SERVICE: u32 = 10;
    pub const SYS_ADMIN: u32 = 21;

    /// The mask with exactly `caps` set.
    pub fn mask(caps: &[u32]) -> u64 {
        caps.iter().fold(0, |m, c| m | (1u64 << c))
    }
}

/// Signal numbers set in a `/proc` signal mask (`SigIgn: 0000000000001000`).
pub fn signals_in_mask(hex: &str) -> Vec<u32> {
    let m = u64::from_str_radix(hex.trim(), 16).unwrap_or(u64::MAX);
    (0..64)
        .filter(|b| m & (1 << b) != 0)
        .map(|b| b + 1)
        .collect()
}

/// Waits for a TCP connect to 127.0.0.1:`port` to succeed (the listener is
/// up).
pub fn wait_tcp4_accepts(port: u16, timeout: Duration) -> bool {
    wait_until(timeout, || connect4(port).is_ok())
}

/// The inode of the TCP socket listening on 127.0.0.1:`port`, from
/// `/proc/net/tcp`.
pub fn listen_inode(port: u16) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let want = format!("0100007F:{port:04X}");
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&want.as_str()) && f.get(3) == Some(&"0A"))
            .then(|| f.get(9)?.parse().ok())
            .flatten()
    })
}

/// True when `pid` holds the socket with this inode.
pub fn holds_inode(pid: i32, inode: u64) -> bool {
    let want = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == want))
        })
        .unwrap_or(false)
}
