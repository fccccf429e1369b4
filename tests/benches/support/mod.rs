//! What the bench targets share: the run's setup (root, full or smoke, a
//! private loopback, the reference programs, the peers), starting each
//! daemon with a set of exec services, the client load, readings from
//! `/proc`, medians and tables.
//!
//! Each bench target uses part of this module, hence `allow(dead_code)`.
#![allow(dead_code)]

use std::collections::HashSet;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use inetd_tests as h;

/// The uid and gid every service runs as (`nobody`, `nogroup`).
pub const NOBODY: u32 = 65534;

/// A whole run's setup, made once at the start of a bench target.
pub struct Bench {
    /// Run by `cargo test` (no `--bench` argument): a few hundred
    /// connections per case, to show every case still completes.
    pub smoke: bool,
    /// Where `inetd-core`, `inetd-controller` and `inetctl` are.
    pub bins: PathBuf,
    /// The peers' unpacked packages, if any.
    pub peers: Option<PathBuf>,
    /// Configs, the reference programs, control sockets: 0755 under /tmp,
    /// so `nobody` can exec what is in it and `inetd` can read the configs.
    pub work: h::TempDir,
    pub hello: PathBuf,
    pub forkloop: PathBuf,
    pub spawnloop: PathBuf,
    /// `--log-level` of our core (its default, `info`, unless
    /// `INETD_BENCH_LOG_LEVEL` says otherwise).
    pub log_level: String,
    /// The run has a loopback of its own (`unshare -n`).
    pub private_net: bool,
    seq: AtomicU64,
}

/// True when `cargo bench` runs us (it passes `--bench`); `cargo test
/// --benches` does not, and gets the smoke run.
pub fn is_smoke() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

/// An environment variable read as a number.
pub fn env_num(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.trim().replace('_', "").parse() {
        Ok(n) => Some(n),
        Err(_) => {
            eprintln!("{name}={v:?} is not a number: ignored");
            None
        }
    }
}

/// True when an environment variable is set to something other than
/// empty or `0`.
pub fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

impl Bench {
    /// Checks we are root, finds the binaries, moves the run onto a
    /// loopback of its own, fetches the peers (full runs), builds the
    /// reference programs. Exits with a message when something is missing.
    /// Call it first, before any thread starts: the network namespace is
    /// per thread, and only threads started after it share the new one.
    pub fn setup(what: &str) -> Bench {
        let smoke = is_smoke();
        println!(
            "{what}: {} run",
            if smoke { "smoke (cargo test)" } else { "full" }
        );
        if !h::is_root() {
            if smoke {
                eprintln!("skipped: needs root (the daemons bind, drop to nobody and run as root, like in production)");
                std::process::exit(0);
            }
            eprintln!("the benchmark runs the daemons as root, like in production: run it as root");
            std::process::exit(2);
        }
        let bins = find_bins();
        // Peers are fetched before the network goes away. The smoke run
        // checks our side only: a peer's own stalls must not fail it.
        let peers = if smoke {
            None
        } else if env_flag("INETD_BENCH_NO_PEERS") {
            unpacked_peers(&target_dir())
        } else {
            match fetch_peers(&target_dir()) {
                Ok(p) => Some(p),
                Err(e) => {
                    eprintln!("cannot fetch the peer daemons ({e}): running without them");
                    None
                }
            }
        };
        let private_net = std::env::var("INETD_BENCH_NETNS").map_or(true, |v| v != "host");
        if private_net {
            if let Err(e) = private_loopback() {
                eprintln!(
                    "cannot make a private loopback ({e}); INETD_BENCH_NETNS=host runs on the host's"
                );
                std::process::exit(2);
            }
        }
        raise_nofile();
        // The harness (used for the core protocol) finds the same binaries.
        std::env::set_var("INETD_BIN_DIR", &bins);
        let work = h::TempDir::new("bench");
        let (hello, forkloop, spawnloop) = match build_references(work.path()) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("cannot build the reference programs: {e}");
                std::process::exit(2);
            }
        };
        let log_level = std::env::var("INETD_BENCH_LOG_LEVEL").unwrap_or_else(|_| "info".into());
        Bench {
            smoke,
            bins,
            peers,
            work,
            hello,
            forkloop,
            spawnloop,
            log_level,
            private_net,
            seq: AtomicU64::new(0),
        }
    }

    /// A fresh name in the work directory.
    pub fn fresh(&self, tag: &str) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.work.join(format!("{tag}-{n}"))
    }

    /// Writes a file others can read (the controller runs as `inetd`).
    pub fn write(&self, tag: &str, text: &str) -> PathBuf {
        let p = self.fresh(tag);
        std::fs::write(&p, text).expect("write to the work directory");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        p
    }

    /// The kinds of daemon from `kinds` that can run here: peers only when
    /// their packages are unpacked, and only those `INETD_BENCH_DAEMONS`
    /// names (a comma list of keys: `ours,tcpserver,forkloop,...`) when
    /// it is set.
    pub fn available(&self, kinds: &[Kind]) -> Vec<Kind> {
        let only: Option<Vec<String>> = std::env::var("INETD_BENCH_DAEMONS")
            .ok()
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
        kinds
            .iter()
            .copied()
            .filter(|k| !k.is_peer() || self.peers.is_some())
            .filter(|k| only.as_ref().is_none_or(|o| o.iter().any(|x| x == k.key())))
            .collect()
    }

    pub fn server_path(&self, s: Server) -> PathBuf {
        match s {
            Server::Hello => self.hello.clone(),
            Server::True => PathBuf::from("/bin/true"),
        }
    }

    /// Starts `kind` serving `server` on 127.0.0.1 at each of `ports`, and
    /// waits until every port listens. `None` (said on stderr) when it
    /// does not come up.
    pub fn start(&self, kind: Kind, server: Server, ports: &[u16]) -> Option<Daemon> {
        assert!(
            kind.many_services() || ports.len() == 1,
            "{} serves one port",
            kind.name()
        );
        let path = self.server_path(server);
        let argv0 = server.argv0();
        let d = match kind {
            Kind::Ours => self.start_ours(&path, argv0, ports),
            Kind::Openbsd => self.start_openbsd(&path, argv0, ports),
            Kind::Inetutils => self.start_inetutils(&path, argv0, ports),
            Kind::Xinetd => self.start_xinetd(&path, ports),
            Kind::Tcpserver => self.start_tcpserver(&path, argv0, ports[0]),
            Kind::ForkLoop => self.start_loop(&self.forkloop, kind, &path, argv0, ports[0]),
            Kind::SpawnLoop => self.start_loop(&self.spawnloop, kind, &path, argv0, ports[0]),
        };
        let Some(mut d) = d else {
            eprintln!("{}: could not be started; skipped", kind.name());
            return None;
        };
        let timeout = Duration::from_secs(20 + ports.len() as u64 / 100);
        let up = h::wait_until(timeout, || {
            !d.exited() && d.pid_known() && all_listening(ports)
        });
        if !up || d.exited() {
            eprintln!(
                "{}: did not listen on its {} port(s) within {timeout:?}; skipped{}",
                kind.name(),
                ports.len(),
                d.log_tail()
            );
            d.stop();
            return None;
        }
        Some(d)
    }

    fn classic_lines(ports: &[u16], wait: &str, path: &Path, argv0: &str) -> String {
        ports
            .iter()
            .map(|p| {
                format!(
                    "127.0.0.1:{p}\tstream\ttcp4\t{wait}\tnobody\t{}\t{argv0}\n",
                    path.display()
                )
            })
            .collect()
    }

    fn start_ours(&self, path: &Path, argv0: &str, ports: &[u16]) -> Option<Daemon> {
        // No rate suffix: without one there is no rate limit.
        let conf = self.write(
            "ours.conf",
            &Self::classic_lines(ports, "nowait", path, argv0),
        );
        let ctl_dir = self.fresh("control");
        std::fs::create_dir(&ctl_dir).ok()?;
        if let Some(u) = h::user("inetd") {
            nix::unistd::chown(
                &ctl_dir,
                Some(nix::unistd::Uid::from_raw(u.uid)),
                Some(nix::unistd::Gid::from_raw(u.gid)),
            )
            .ok()?;
        }
        let control = ctl_dir.join("control.sock");
        let log = self.smoke.then(|| self.fresh("ours.log"));
        let stderr = match &log {
            Some(l) => Stdio::from(std::fs::File::create(l).ok()?),
            None => Stdio::null(),
        };
        let child = Command::new(self.bins.join("inetd-core"))
            .arg("--config")
            .arg(&conf)
            .arg("--control-socket")
            .arg(&control)
            .args(["--log-level", &self.log_level])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .ok()?;
        Some(Daemon::new(Kind::Ours, child, None, Some(control), log))
    }

    fn start_openbsd(&self, path: &Path, argv0: &str, ports: &[u16]) -> Option<Daemon> {
        // `.N` is its rate per minute (default 256 in Debian); -R is the
        // default for lines without one. Both lifted.
        let conf = self.write(
            "openbsd.conf",
            &Self::classic_lines(ports, "nowait.100000000", path, argv0),
        );
        let child = peer_command(self.peers.as_ref()?, "usr/sbin/inetd")
            .args(["-i", "-R", "100000000"])
            .arg(&conf)
            .spawn()
            .ok()?;
        Some(Daemon::new(Kind::Openbsd, child, None, None, None))
    }

    fn start_inetutils(&self, path: &Path, argv0: &str, ports: &[u16]) -> Option<Daemon> {
        let conf = self.write(
            "inetutils.conf",
            &Self::classic_lines(ports, "nowait", path, argv0),
        );
        // It always goes to the background (only --debug keeps it in the
        // foreground, and logs every connection): its pid is in the file.
        let pidfile = self.fresh("inetutils.pid");
        let child = peer_command(self.peers.as_ref()?, "usr/sbin/inetutils-inetd")
            .arg(format!("--pidfile={}", pidfile.display()))
            .arg("--rate=100000000")
            .arg(&conf)
            .spawn()
            .ok()?;
        Some(Daemon::new(
            Kind::Inetutils,
            child,
            Some(pidfile),
            None,
            None,
        ))
    }

    fn start_xinetd(&self, path: &Path, ports: &[u16]) -> Option<Daemon> {
        // instances and cps are its throttles: lifted.
        let mut text = String::from(
            "defaults\n{\n  instances = UNLIMITED\n  cps = 100000000 1\n  per_source = UNLIMITED\n  log_type = FILE /dev/null\n}\n",
        );
        for p in ports {
            text.push_str(&format!(
                "service bench-{p}\n{{\n  type = UNLISTED\n  socket_type = stream\n  protocol = tcp\n  port = {p}\n  bind = 127.0.0.1\n  wait = no\n  user = nobody\n  server = {}\n}}\n",
                path.display()
            ));
        }
        let conf = self.write("xinetd.conf", &text);
        let pidfile = self.fresh("xinetd.pid");
        let child = peer_command(self.peers.as_ref()?, "usr/sbin/xinetd")
            .args(["-dontfork", "-f"])
            .arg(&conf)
            .arg("-pidfile")
            .arg(&pidfile)
            .spawn()
            .ok()?;
        Some(Daemon::new(Kind::Xinetd, child, None, None, None))
    }

    fn start_tcpserver(&self, path: &Path, argv0: &str, port: u16) -> Option<Daemon> {
        // -c is its limit of concurrent children (default 40), -b its
        // listen backlog (default 20): both lifted. -H -R: no DNS, no
        // ident lookups.
        let _ = argv0; // tcpserver passes the program path as argv[0]
        let child = peer_command(self.peers.as_ref()?, "usr/bin/tcpserver")
            .args(["-c", "100000", "-b", "1024", "-H", "-R"])
            .args(["-u", &NOBODY.to_string(), "-g", &NOBODY.to_string()])
            .arg("127.0.0.1")
            .arg(port.to_string())
            .arg(path)
            .spawn()
            .ok()?;
        Some(Daemon::new(Kind::Tcpserver, child, None, None, None))
    }

    fn start_loop(
        &self,
        bin: &Path,
        kind: Kind,
        path: &Path,
        argv0: &str,
        port: u16,
    ) -> Option<Daemon> {
        let child = Command::new(bin)
            .arg(port.to_string())
            .arg(NOBODY.to_string())
            .arg(NOBODY.to_string())
            .arg(path)
            .arg(argv0)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(Daemon::new(kind, child, None, None, None))
    }

    /// Runs `inetctl reload` against our daemon `d`; its wall time when it
    /// succeeds.
    pub fn reload(&self, d: &Daemon) -> Result<Duration, String> {
        let control = d.control.as_ref().ok_or("not ours")?;
        let t = Instant::now();
        let out = Command::new(self.bins.join("inetctl"))
            .arg("--socket")
            .arg(control)
            .arg("reload")
            .output()
            .map_err(|e| format!("inetctl: {e}"))?;
        let took = t.elapsed();
        if out.status.success() {
            Ok(took)
        } else {
            Err(format!(
                "inetctl reload: {}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

/// The directory of this profile's binaries: `INETD_BIN_DIR`, else the one
/// this bench executable was built for (`target/release` under `cargo
/// bench`, `target/debug` under `cargo test`), so the daemons measured
/// are built like the bench.
fn find_bins() -> PathBuf {
    let dir = std::env::var_os("INETD_BIN_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            // target/PROFILE/deps/spawn-HASH -> target/PROFILE
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.parent()?.to_path_buf())
        })
        .unwrap_or_else(|| target_dir().join("release"));
    for b in ["inetd-core", "inetd-controller", "inetctl"] {
        if !dir.join(b).is_file() {
            let profile = if is_smoke() { "" } else { " --release" };
            eprintln!(
                "{} not found: build the workspace first (cargo build{profile} --workspace), or set INETD_BIN_DIR",
                dir.join(b).display()
            );
            std::process::exit(2);
        }
    }
    dir
}

pub fn target_dir() -> PathBuf {
    if let Ok(d) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target")
}

/// Moves this process (its one thread so far, and every thread and child
/// started later) into a network namespace of its own with its loopback
/// up: other runs, other tests and the host's inetd can neither collide
/// with the ports used nor load the loopback measured.
fn private_loopback() -> Result<(), String> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("unshare(CLONE_NEWNET): {e}"))?;
    let st = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .map_err(|e| format!("ip: {e}"))?;
    if !st.success() {
        return Err(format!("ip link set lo up: {st}"));
    }
    Ok(())
}

/// The peers and the client threads hold many descriptors (10,000
/// listeners): raise the soft limit to the hard one, for us and the
/// daemons we start. (The core raises its own.)
fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Builds the reference programs with the machine's C compiler (`CC`, else
/// `cc`) into `dir`: the tiny static server and the two bare loops. C,
/// because the references are there to show the limit a minimal C daemon
/// reaches (tcpserver's language): no runtime of ours around them, and no
/// unsafe Rust outside the core.
fn build_references(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf), String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/ref");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let build = |out: &str, file: &str, extra: &[&str]| -> Result<PathBuf, String> {
        let dst = dir.join(out);
        let o = Command::new(&cc)
            .args(["-O2", "-Wall", "-Wextra", "-Werror"])
            .args(extra)
            .arg("-o")
            .arg(&dst)
            .arg(src.join(file))
            .output()
            .map_err(|e| format!("{cc}: {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "{cc} {file} {}: {}",
                extra.join(" "),
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        Ok(dst)
    };
    Ok((
        build("hello", "hello.c", &["-static"])?,
        build("forkloop", "loop.c", &[])?,
        build("spawnloop", "loop.c", &["-DUSE_POSIX_SPAWN"])?,
    ))
}

const PEER_PACKAGES: [&str; 5] = [
    "openbsd-inetd",
    "inetutils-inetd",
    "xinetd",
    "ucspi-tcp",
    "libwrap0",
];

fn unpacked_peers(target: &Path) -> Option<PathBuf> {
    let root = target.join("bench-peers/root");
    [
        "usr/sbin/inetd",
        "usr/sbin/inetutils-inetd",
        "usr/sbin/xinetd",
        "usr/bin/tcpserver",
    ]
    .iter()
    .all(|b| root.join(b).exists())
    .then_some(root)
}

/// Unpacks the peers' Debian packages under `target/bench-peers/root`,
/// fetched with `apt-get download`: never installed, so none of them can
/// start as a system service.
pub fn fetch_peers(target: &Path) -> Result<PathBuf, String> {
    if let Some(root) = unpacked_peers(target) {
        return Ok(root);
    }
    let dir = target.join("bench-peers");
    let root = dir.join("root");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let st = Command::new("apt-get")
        .arg("download")
        .args(PEER_PACKAGES)
        .current_dir(&dir)
        .status()
        .map_err(|e| format!("apt-get: {e}"))?;
    if !st.success() {
        return Err("apt-get download failed (try apt-get update first)".into());
    }
    for entry in std::fs::read_dir(&dir).map_err(|e| e.to_string())? {
        let p = entry.map_err(|e| e.to_string())?.path();
        if p.extension().is_some_and(|e| e == "deb") {
            let st = Command::new("dpkg-deb")
                .arg("-x")
                .arg(&p)
                .arg(&root)
                .status()
                .map_err(|e| format!("dpkg-deb: {e}"))?;
            if !st.success() {
                return Err(format!("dpkg-deb -x {} failed", p.display()));
            }
        }
    }
    unpacked_peers(target).ok_or_else(|| "the packages lack a daemon".into())
}

/// A peer's binary from the unpacked packages, with their libraries.
pub fn peer_command(peers: &Path, bin: &str) -> Command {
    let mut c = Command::new(peers.join(bin));
    c.env(
        "LD_LIBRARY_PATH",
        format!(
            "{}:{}",
            peers.join("usr/lib/x86_64-linux-gnu").display(),
            peers.join("lib/x86_64-linux-gnu").display()
        ),
    )
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    c
}

// ---------------------------------------------------------------------------
// Daemons and servers

/// A daemon measured: ours, a peer or a reference loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Ours,
    Tcpserver,
    ForkLoop,
    SpawnLoop,
    Openbsd,
    Inetutils,
    Xinetd,
}

impl Kind {
    /// Everything that serves one exec service, ours first.
    pub const ALL: [Kind; 7] = [
        Kind::Ours,
        Kind::Tcpserver,
        Kind::ForkLoop,
        Kind::SpawnLoop,
        Kind::Openbsd,
        Kind::Inetutils,
        Kind::Xinetd,
    ];

    /// The inetds: daemons that serve many services from one process.
    pub const INETDS: [Kind; 4] = [Kind::Ours, Kind::Openbsd, Kind::Inetutils, Kind::Xinetd];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Ours => "inetd-core",
            Kind::Tcpserver => "tcpserver",
            Kind::ForkLoop => "fork+exec loop",
            Kind::SpawnLoop => "posix_spawn loop",
            Kind::Openbsd => "openbsd-inetd",
            Kind::Inetutils => "inetutils-inetd",
            Kind::Xinetd => "xinetd",
        }
    }

    /// Its name in `INETD_BENCH_DAEMONS`.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Ours => "ours",
            Kind::Tcpserver => "tcpserver",
            Kind::ForkLoop => "forkloop",
            Kind::SpawnLoop => "spawnloop",
            Kind::Openbsd => "openbsd",
            Kind::Inetutils => "inetutils",
            Kind::Xinetd => "xinetd",
        }
    }

    pub fn is_peer(self) -> bool {
        matches!(
            self,
            Kind::Tcpserver | Kind::Openbsd | Kind::Inetutils | Kind::Xinetd
        )
    }

    pub fn many_services(self) -> bool {
        Kind::INETDS.contains(&self)
    }
}

/// The program exec'd per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Server {
    /// The tiny static server: writes `hello\n` and exits.
    Hello,
    /// `/bin/true`, dynamically linked: writes nothing.
    True,
}

impl Server {
    pub fn argv0(self) -> &'static str {
        match self {
            Server::Hello => "hello",
            Server::True => "true",
        }
    }

    /// What a client reads before end of file.
    pub fn reply(self) -> &'static [u8] {
        match self {
            Server::Hello => b"hello\n",
            Server::True => b"",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Server::Hello => "the tiny static server (writes one line, exits)",
            Server::True => "/bin/true (dynamically linked)",
        }
    }
}

/// A daemon started by [`Bench::start`]; stopped on drop.
pub struct Daemon {
    pub kind: Kind,
    child: Child,
    pidfile: Option<PathBuf>,
    /// Our control socket.
    pub control: Option<PathBuf>,
    log: Option<PathBuf>,
    stopped: bool,
}

impl Daemon {
    fn new(
        kind: Kind,
        child: Child,
        pidfile: Option<PathBuf>,
        control: Option<PathBuf>,
        log: Option<PathBuf>,
    ) -> Daemon {
        Daemon {
            kind,
            child,
            pidfile,
            control,
            log,
            stopped: false,
        }
    }

    fn pid_known(&self) -> bool {
        self.pidfile.is_none() || self.pid_from_file().is_some()
    }

    fn pid_from_file(&self) -> Option<i32> {
        let s = std::fs::read_to_string(self.pidfile.as_ref()?).ok()?;
        s.trim().parse().ok()
    }

    /// The daemon's own pid (for a daemon that forks into the background,
    /// the one in its pid file).
    pub fn pid(&self) -> i32 {
        if self.pidfile.is_some() {
            return self.pid_from_file().unwrap_or(-1);
        }
        self.child.id() as i32
    }

    /// True when the daemon is gone (the process we started, unless it is
    /// one that forks into the background).
    fn exited(&mut self) -> bool {
        if self.pidfile.is_some() {
            return self
                .pid_from_file()
                .is_some_and(|p| h::proc_stat(p).is_none_or(|s| s[0] == "Z"));
        }
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// utime + stime, in clock ticks.
    pub fn cpu_ticks(&self) -> Option<u64> {
        h::cpu_ticks(self.pid())
    }

    pub fn rss_kib(&self) -> Option<u64> {
        h::rss_kib(self.pid())
    }

    pub fn fd_count(&self) -> usize {
        h::open_fds(self.pid()).len()
    }

    /// Our controller's pid.
    pub fn controller_pid(&self) -> Option<i32> {
        h::children_of(self.pid()).into_iter().find_map(|(p, _)| {
            let exe = std::fs::read_link(format!("/proc/{p}/exe")).ok()?;
            exe.ends_with("inetd-controller").then_some(p)
        })
    }

    pub fn controller_rss_kib(&self) -> Option<u64> {
        h::rss_kib(self.controller_pid()?)
    }

    /// Waits until no server the daemon started is still running (zombies
    /// that a loop reaps at its next accept do not count, nor our
    /// controller).
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let ctl = self.controller_pid();
        h::wait_until(timeout, || {
            h::children_of(self.pid())
                .iter()
                .all(|&(p, st)| st == 'Z' || Some(p) == ctl)
        })
    }

    /// The end of our core's log (smoke runs keep one), for a failure.
    pub fn log_tail(&self) -> String {
        let Some(l) = &self.log else {
            return String::new();
        };
        let text = std::fs::read_to_string(l).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("; its log ends:\n{}", tail.join("\n"))
    }

    /// SIGTERM, then SIGKILL after 5 s; waits until it is gone.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let term = |pid: i32| {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        };
        let bg = self.pid_from_file();
        if let Some(p) = bg {
            term(p);
        }
        term(self.child.id() as i32);
        let gone = |d: &mut Daemon| {
            let own = matches!(d.child.try_wait(), Ok(Some(_)));
            own && bg.is_none_or(|p| h::proc_stat(p).is_none_or(|s| s[0] == "Z"))
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if gone(self) {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        if let Some(p) = bg {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Local ports of the IPv4 TCP sockets in state LISTEN (`/proc/net/tcp`,
/// of our network namespace).
pub fn listening_ports() -> HashSet<u16> {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let local = f.nth(1)?;
            let state = f.nth(1)?;
            (state == "0A").then_some(())?;
            u16::from_str_radix(local.rsplit(':').next()?, 16).ok()
        })
        .collect()
}

pub fn all_listening(ports: &[u16]) -> bool {
    let l = listening_ports();
    ports.iter().all(|p| l.contains(p))
}

/// Waits until none of `ports` listens (the previous daemon is gone).
pub fn wait_ports_closed(ports: &[u16], timeout: Duration) -> bool {
    h::wait_until(timeout, || {
        let l = listening_ports();
        !ports.iter().any(|p| l.contains(p))
    })
}

// ---------------------------------------------------------------------------
// Load

/// How much load one measurement makes.
#[derive(Debug, Clone, Copy)]
pub enum Amount {
    /// As many connections as the clients make in this time.
    For(Duration),
    /// This many connections in all, shared among the clients.
    Total(u64),
}

/// What the clients saw.
#[derive(Debug, Default)]
pub struct Load {
    pub ok: u64,
    pub failed: u64,
    pub secs: f64,
    /// Latency of each successful connection, connect to end of file, µs.
    pub lat_us: Vec<u32>,
    pub first_error: Option<String>,
}

impl Load {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.secs
    }

    /// The `q`-quantile of the latencies (0.5, 0.99), µs.
    pub fn quantile(&mut self, q: f64) -> Option<f64> {
        if self.lat_us.is_empty() {
            return None;
        }
        self.lat_us.sort_unstable();
        let i = ((self.lat_us.len() as f64 - 1.0) * q).round() as usize;
        Some(f64::from(self.lat_us[i]))
    }
}

/// `clients` threads connect to 127.0.0.1:`port` one connection at a
/// time, each reading to end of file and checking it read `reply`.
///
/// With [`Amount::For`], a connection counts as served only if it ended
/// within the time, and the rate is over that time: one that hangs past
/// it (a peer that stalls) cannot stretch the run and lower everyone's
/// rate; it still counts as failed if it fails.
pub fn connect_load(port: u16, clients: usize, amount: Amount, reply: &'static [u8]) -> Load {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let end = match amount {
        Amount::For(d) => Some(t0 + d),
        Amount::Total(_) => None,
    };
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, started) = (stop.clone(), started.clone());
            thread::spawn(move || {
                let mut mine = Load::default();
                loop {
                    match amount {
                        Amount::For(_) if stop.load(Ordering::Relaxed) => break,
                        Amount::Total(n) if started.fetch_add(1, Ordering::Relaxed) >= n => break,
                        _ => {}
                    }
                    let t = Instant::now();
                    let r = one_connection(addr, reply);
                    let done = Instant::now();
                    match r {
                        Ok(()) if end.is_some_and(|e| done > e) => {}
                        Ok(()) => {
                            mine.ok += 1;
                            let us = (done - t).as_micros();
                            mine.lat_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                        }
                        Err(e) => {
                            mine.failed += 1;
                            mine.first_error.get_or_insert(e);
                        }
                    }
                }
                mine
            })
        })
        .collect();
    if let Amount::For(d) = amount {
        thread::sleep(d);
        stop.store(true, Ordering::Relaxed);
    }
    let mut all = Load::default();
    for hd in handles {
        let Ok(mine) = hd.join() else {
            all.failed += 1;
            all.first_error
                .get_or_insert("a client thread panicked".into());
            continue;
        };
        all.ok += mine.ok;
        all.failed += mine.failed;
        all.lat_us.extend(mine.lat_us);
        if all.first_error.is_none() {
            all.first_error = mine.first_error;
        }
    }
    all.secs = match amount {
        Amount::For(d) => d.as_secs_f64(),
        Amount::Total(_) => t0.elapsed().as_secs_f64(),
    };
    all
}

fn one_connection(addr: SocketAddr, reply: &[u8]) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    let mut got = 0;
    loop {
        if got == buf.len() {
            return Err("more than expected".into());
        }
        match s.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    if &buf[..got] == reply {
        Ok(())
    } else {
        Err(format!("read {:?}", String::from_utf8_lossy(&buf[..got])))
    }
}

/// One measurement of a daemon under load.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub rate: f64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// The daemon's own CPU (utime + stime) per successful connection, µs.
    pub cpu_us: Option<f64>,
    pub ok: u64,
    pub failed: u64,
    pub first_error: Option<String>,
}

/// Loads `d` on `port` and reads its CPU time around the load (after
/// waiting for its last children, so their reaping is counted).
pub fn measure(
    d: &Daemon,
    port: u16,
    clients: usize,
    amount: Amount,
    reply: &'static [u8],
) -> Sample {
    let before = d.cpu_ticks();
    let mut load = connect_load(port, clients, amount, reply);
    d.wait_idle(Duration::from_secs(10));
    let after = d.cpu_ticks();
    let cpu_us = match (before, after) {
        (Some(b), Some(a)) if load.ok > 0 => {
            Some((a - b) as f64 * 1e6 / h::clock_ticks() as f64 / load.ok as f64)
        }
        _ => None,
    };
    Sample {
        rate: load.rate(),
        p50_us: load.quantile(0.5),
        p99_us: load.quantile(0.99),
        cpu_us,
        ok: load.ok,
        failed: load.failed,
        first_error: load.first_error.take(),
    }
}

// ---------------------------------------------------------------------------
// Figures

/// The median of the values present, if any.
pub fn median(v: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let mut v: Vec<f64> = v.into_iter().flatten().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// A row of a table: a name and one cell per column.
pub type Row = (String, Vec<Option<f64>>);

/// Prints a table of daemons: `heads` over the cells, with `decimals`
/// places.
pub fn print_table(title: &str, heads: &[&str], rows: &[Row], decimals: usize) {
    print_table_named(title, "daemon", heads, rows, decimals);
}

/// Prints a table whose rows are named under `first`.
pub fn print_table_named(title: &str, first: &str, heads: &[&str], rows: &[Row], decimals: usize) {
    let w = heads.iter().map(|h| h.len()).max().unwrap_or(0).max(7) + 2;
    let nw = rows
        .iter()
        .map(|r| r.0.len())
        .max()
        .unwrap_or(0)
        .max(first.len())
        .max(6)
        + 2;
    println!();
    println!("{title}");
    let mut line = format!("{first:<nw$}");
    for h in heads {
        line.push_str(&format!("{h:>w$}"));
    }
    println!("{}", line.trim_end());
    for (name, cells) in rows {
        let mut line = format!("{name:<nw$}");
        for c in cells {
            match c {
                Some(v) => line.push_str(&format!("{v:>w$.decimals$}")),
                None => line.push_str(&format!("{:>w$}", "-")),
            }
        }
        println!("{}", line.trim_end());
    }
}

/// `ours / row` for every row but ours (the first), cell by cell.
pub fn ratios(rows: &[Row]) -> Vec<Row> {
    let Some((_, ours)) = rows.first() else {
        return Vec::new();
    };
    rows.iter()
        .skip(1)
        .map(|(name, cells)| {
            let r = cells
                .iter()
                .zip(ours)
                .map(|(p, o)| match (p, o) {
                    (Some(p), Some(o)) if *p > 0.0 => Some(o / p),
                    _ => None,
                })
                .collect();
            (name.clone(), r)
        })
        .collect()
}

/// Prints the load average, which every figure should be read against
/// (the machine may be shared).
pub fn print_load(when: &str) {
    let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let l: Vec<&str> = l.split_whitespace().take(3).collect();
    println!("load average {when}: {}", l.join(" "));
}

/// Collects the smoke run's failures; [`Smoke::finish`] exits 1 if any.
#[derive(Default)]
pub struct Smoke {
    cases: usize,
    failures: Vec<String>,
}

impl Smoke {
    /// Records a case: it failed unless `ok` connections and none failed.
    pub fn check(&mut self, case: &str, s: &Sample, want: u64) {
        self.cases += 1;
        if s.ok != want || s.failed > 0 {
            self.failures.push(format!(
                "{case}: {} of {want} connections served, {} failed (first: {})",
                s.ok,
                s.failed,
                s.first_error.as_deref().unwrap_or("-")
            ));
        }
    }

    /// Records a case that did not run at all or whose figure is missing.
    pub fn require(&mut self, case: &str, ok: bool, why: &str) {
        self.cases += 1;
        if !ok {
            self.failures.push(format!("{case}: {why}"));
        }
    }

    pub fn finish(self) {
        println!();
        if self.failures.is_empty() {
            println!("smoke: all {} cases completed", self.cases);
            return;
        }
        for f in &self.failures {
            eprintln!("smoke: FAILED {f}");
        }
        eprintln!(
            "smoke: {} of {} cases failed",
            self.failures.len(),
            self.cases
        );
        std::process::exit(1);
    }
}
