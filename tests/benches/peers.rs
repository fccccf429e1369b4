//! Benchmark: this inetd against its peers, in the same run, on loopback.
//!
//! Run as root (the peers bind and drop like in production):
//!
//! ```text
//! cargo build --release --workspace
//! cargo bench -p inetd-tests --bench peers
//! ```
//!
//! The peers are Debian's own packages (openbsd-inetd, inetutils-inetd,
//! xinetd, ucspi-tcp's tcpserver), fetched with `apt-get download` and
//! unpacked under the target directory, never installed, so they cannot
//! start as system services. Each workload runs for a fixed time against
//! each daemon in turn and the ratios to ours are printed. Nothing here is a
//! pass/fail test: targets are read from the ratios.
//!
//! Workloads:
//! * `exec`: connect, read to EOF; the server is `/bin/true` (accept → fork
//!   → drop → exec → exit, the path every real service pays).
//! * `tcp-echo`: the builtin echo; connect, send 64 bytes, shut down the
//!   write side, read the 64 bytes back and EOF.
//! * `udp-echo`: the builtin echo over UDP from [::1] (Debian's
//!   openbsd-inetd drops 127.0.0.1 sources for UDP builtins), 1 and 8
//!   clients each with one request in flight.
//!
//! `INETD_BENCH_ONLY=udp` runs only the `udp-echo` workloads, against only
//! the daemons that serve them (ours, openbsd-inetd, inetutils-inetd): a
//! shorter run for repeated measurements of the UDP path.
//!
//! The run moves itself onto a loopback of its own (`unshare -n`, see the
//! `support` module; `INETD_BENCH_NETNS=host` keeps the host's): every
//! daemon binds the echo port (7), so two runs at once, or an inetd
//! already serving echo, would otherwise measure each other.
//!
//! Run by `cargo test --benches` (no `--bench` argument), it is the smoke
//! run: ours only, 0.3 s per workload, failing unless each served.
//!
//! Before each daemon starts, the run waits until the echo port is free:
//! our UDP builtin child outlives its core until it has been idle (started
//! here with `--dgram-idle 1`), and a peer started while it still holds
//! [::1]:7 would fail to bind it and leave our child to answer the peer's
//! workload.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use support::{peer_command, Bench, Smoke};

const RUN_FOR: Duration = Duration::from_secs(3);
/// Each workload's time in the smoke run (`cargo test --benches`).
const SMOKE_RUN_FOR: Duration = Duration::from_millis(300);
const TCP_CLIENTS: usize = 4;
const ECHO_PORT: u16 = 7;

fn main() {
    let b = Bench::setup("peers");
    let run_for = if b.smoke { SMOKE_RUN_FOR } else { RUN_FOR };
    let work = b.work.path();

    let only_udp = std::env::var("INETD_BENCH_ONLY").is_ok_and(|v| v == "udp");
    let mut daemons: Vec<Starter> = vec![Box::new(|p| start_ours(&b.bins, work, p))];
    if let Some(peers) = &b.peers {
        daemons.push(Box::new(|p| start_openbsd(peers, work, p)));
        daemons.push(Box::new(|p| start_inetutils(peers, work, p)));
        if !only_udp {
            daemons.push(Box::new(|p| start_xinetd(peers, work, p)));
            daemons.push(Box::new(|p| start_tcpserver(peers, p)));
        }
    }

    let mut rows: Vec<(String, Vec<Option<f64>>)> = Vec::new();
    for start in &daemons {
        let ports = Ports::new();
        let Some(mut d) = wait_port_free(ports.echo).then(|| start(&ports)).flatten() else {
            // Keep our row first even when it failed, so ratios stay honest.
            if rows.is_empty() {
                rows.push(("inetd-core (not running)".into(), vec![None; 4]));
            }
            continue;
        };
        let results = vec![
            (d.exec && !only_udp).then(|| bench_exec(ports.exec, run_for)),
            (d.echo && !only_udp).then(|| bench_tcp_echo(ports.echo, run_for)),
            d.udp.then(|| bench_udp_echo(ports.echo, 1, run_for)),
            d.udp.then(|| bench_udp_echo(ports.echo, 8, run_for)),
        ];
        rows.push((d.name.clone(), results));
        d.stop();
    }

    let heads = [
        "exec conn/s",
        "tcp-echo conn/s",
        "udp-echo req/s x1",
        "udp-echo req/s x8",
    ];
    println!();
    println!(
        "{:<18}{}",
        "daemon",
        heads.map(|h| format!("{h:>20}")).join("")
    );
    for (name, res) in &rows {
        let cells: Vec<String> = res
            .iter()
            .map(|r| match r {
                Some(v) => format!("{v:>20.0}"),
                None => format!("{:>20}", "-"),
            })
            .collect();
        println!("{name:<18}{}", cells.join(""));
    }
    let ours = &rows[0].1;
    println!();
    println!("ratios (ours / peer; above 1.0 means ours is faster):");
    for (name, res) in rows.iter().skip(1) {
        let cells: Vec<String> = res
            .iter()
            .zip(ours)
            .map(|(p, o)| match (p, o) {
                (Some(p), Some(o)) if *p > 0.0 => format!("{:>20.2}", o / p),
                _ => format!("{:>20}", "-"),
            })
            .collect();
        println!("{name:<18}{}", cells.join(""));
    }
    if b.smoke {
        // Every workload of ours ran and served something.
        let mut smoke = Smoke::default();
        for (head, r) in heads.iter().zip(ours) {
            smoke.require(
                &format!("inetd-core {head}"),
                r.is_some_and(|v| v > 0.0),
                "nothing served",
            );
        }
        smoke.finish();
    }
}

type Starter<'a> = Box<dyn Fn(&Ports) -> Option<Running> + 'a>;

struct Ports {
    exec: u16,
    echo: u16,
}

impl Ports {
    fn new() -> Ports {
        Ports {
            exec: free_port(),
            echo: ECHO_PORT,
        }
    }
}

/// Waits until nobody holds `port` on [::1] (UDP) and 127.0.0.1 (TCP).
fn wait_port_free(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        // TcpListener sets SO_REUSEADDR, so only a listener (not TIME_WAIT)
        // keeps it from binding.
        let udp = UdpSocket::bind(("::1", port)).is_ok();
        let tcp = TcpListener::bind(("127.0.0.1", port)).is_ok();
        if udp && tcp {
            return true;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "port {port} is still in use (another run, or an inetd serving echo): skipped"
            );
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

struct Running {
    name: String,
    child: Child,
    exec: bool,
    echo: bool,
    udp: bool,
    pidfile: Option<PathBuf>,
}

impl Running {
    fn stop(&mut self) {
        if let Some(pf) = &self.pidfile {
            if let Ok(s) = std::fs::read_to_string(pf) {
                if let Ok(pid) = s.trim().parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
            }
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_tcp(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

fn ready(mut r: Running, ports: &Ports) -> Option<Running> {
    let ok = (!r.exec || wait_tcp(ports.exec)) && (!r.echo || wait_tcp(ports.echo));
    if ok {
        Some(r)
    } else {
        eprintln!("{}: did not start listening; skipped", r.name);
        r.stop();
        None
    }
}

/// The classic lines, for the daemons that read inetd.conf. The builtins
/// are on the real echo port (7): classic inetds pick a builtin by service
/// name, so a numeric port cannot name one.
fn classic_conf(ports: &Ports, rate: &str) -> String {
    format!(
        "127.0.0.1:{e}\tstream\ttcp4\tnowait{rate}\tnobody\t/bin/true\ttrue\n\
         127.0.0.1:echo\tstream\ttcp4\tnowait{rate}\tnobody\tinternal\n\
         [::1]:echo\tdgram\tudp6\twait{rate}\tnobody\tinternal\n",
        e = ports.exec,
    )
}

fn start_ours(bins: &Path, work: &Path, ports: &Ports) -> Option<Running> {
    let bin = bins.join("inetd-core");
    let conf = work.join("ours.conf");
    std::fs::write(&conf, classic_conf(ports, ".1000000")).ok()?;
    // The controller (user inetd) must be able to read it.
    let _ = std::fs::set_permissions(work, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    let _ = std::fs::set_permissions(&conf, std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let child = Command::new(&bin)
        .arg("--config")
        .arg(&conf)
        .arg("--log-level")
        .arg("warn")
        // The UDP builtin child leaves 1 s after the last request, so the
        // next daemon can bind the echo port soon.
        .args(["--dgram-idle", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    ready(
        Running {
            name: format!(
                "inetd-core ({})",
                bin.parent()?.file_name()?.to_string_lossy()
            ),
            child,
            exec: true,
            echo: true,
            udp: true,
            pidfile: None,
        },
        ports,
    )
}

fn start_openbsd(peers: &Path, work: &Path, ports: &Ports) -> Option<Running> {
    let conf = work.join("openbsd.conf");
    std::fs::write(&conf, classic_conf(ports, ".100000")).ok()?;
    let child = peer_command(peers, "usr/sbin/inetd")
        .args(["-i", "-R", "100000000"])
        .arg(&conf)
        .spawn()
        .ok()?;
    ready(
        Running {
            name: "openbsd-inetd".into(),
            child,
            exec: true,
            echo: true,
            udp: true,
            pidfile: None,
        },
        ports,
    )
}

fn start_inetutils(peers: &Path, work: &Path, ports: &Ports) -> Option<Running> {
    let conf = work.join("inetutils.conf");
    // inetutils writes IPv6 addresses without brackets.
    let text = classic_conf(ports, "").replace("[::1]:", "::1:");
    std::fs::write(&conf, text).ok()?;
    let pidfile = work.join("inetutils.pid");
    let child = peer_command(peers, "usr/sbin/inetutils-inetd")
        .arg(format!("--pidfile={}", pidfile.display()))
        .arg("--rate=100000000")
        .arg(&conf)
        .spawn()
        .ok()?;
    ready(
        Running {
            name: "inetutils-inetd".into(),
            child,
            exec: true,
            echo: true,
            udp: true,
            pidfile: Some(pidfile),
        },
        ports,
    )
}

fn start_xinetd(peers: &Path, work: &Path, ports: &Ports) -> Option<Running> {
    let conf = work.join("xinetd.conf");
    let text = format!(
        "defaults\n{{\n  instances = UNLIMITED\n  cps = 1000000 1\n  per_source = UNLIMITED\n  log_type = FILE /dev/null\n}}\n\
         service bench-exec\n{{\n  type = UNLISTED\n  socket_type = stream\n  protocol = tcp\n  port = {e}\n  bind = 127.0.0.1\n  wait = no\n  user = nobody\n  server = /bin/true\n}}\n\
         service echo\n{{\n  type = INTERNAL UNLISTED\n  id = echo-stream\n  socket_type = stream\n  protocol = tcp\n  port = {p}\n  bind = 127.0.0.1\n  wait = no\n  user = root\n}}\n",
        e = ports.exec,
        p = ports.echo
    );
    std::fs::write(&conf, text).ok()?;
    let pidfile = work.join("xinetd.pid");
    let child = peer_command(peers, "usr/sbin/xinetd")
        .args(["-dontfork", "-f"])
        .arg(&conf)
        .arg("-pidfile")
        .arg(&pidfile)
        .spawn()
        .ok()?;
    ready(
        Running {
            name: "xinetd".into(),
            child,
            exec: true,
            echo: true,
            udp: false,
            pidfile: None,
        },
        ports,
    )
}

fn start_tcpserver(peers: &Path, ports: &Ports) -> Option<Running> {
    let child = peer_command(peers, "usr/bin/tcpserver")
        .args([
            "-c",
            "10000",
            "-H",
            "-R",
            "-u",
            "65534",
            "-g",
            "65534",
            "127.0.0.1",
        ])
        .arg(ports.exec.to_string())
        .arg("/bin/true")
        .spawn()
        .ok()?;
    ready(
        Running {
            name: "tcpserver".into(),
            child,
            exec: true,
            echo: false,
            udp: false,
            pidfile: None,
        },
        ports,
    )
}

/// Runs `clients` threads doing `op` until RUN_FOR has passed; returns
/// successful operations per second.
fn run_clients(
    clients: usize,
    run_for: Duration,
    op: impl Fn() -> bool + Send + Sync + 'static,
) -> f64 {
    let op = Arc::new(op);
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let (op, done, stop) = (op.clone(), done.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if op() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    thread::sleep(run_for);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn bench_exec(port: u16, run_for: Duration) -> f64 {
    run_clients(TCP_CLIENTS, run_for, move || {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 64];
        matches!(s.read(&mut buf), Ok(0))
    })
}

fn bench_tcp_echo(port: u16, run_for: Duration) -> f64 {
    run_clients(TCP_CLIENTS, run_for, move || {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let msg = [b'x'; 64];
        if s.write_all(&msg).is_err() || s.shutdown(Shutdown::Write).is_err() {
            return false;
        }
        let mut back = Vec::with_capacity(64);
        s.read_to_end(&mut back).is_ok() && back == msg
    })
}

fn bench_udp_echo(port: u16, clients: usize, run_for: Duration) -> f64 {
    let server: SocketAddr = ([0u16, 0, 0, 0, 0, 0, 0, 1], port).into();
    run_clients(clients, run_for, move || {
        thread_local! {
            static SOCK: UdpSocket = {
                let s = UdpSocket::bind("[::1]:0").unwrap();
                s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
                s
            };
        }
        SOCK.with(|s| {
            let msg = [b'u'; 64];
            if s.send_to(&msg, server).is_err() {
                return false;
            }
            let mut buf = [0u8; 128];
            matches!(s.recv_from(&mut buf), Ok((64, from)) if from == server)
        })
    })
}
