//! Benchmark: what the number of services costs. One service against
//! 1,000 (and, with `INETD_BENCH_SCALE=1`, 10,000), for our core and the
//! inetd peers, in the same run, on a loopback of the run's own.
//!
//! ```text
//! cargo build --release --workspace
//! cargo bench -p inetd-tests --bench scale                        # as root, a few minutes
//! INETD_BENCH_SCALE=1 cargo bench -p inetd-tests --bench scale    # and 10,000 services
//! ```
//!
//! Services are one per port (127.0.0.1, from port 20000 up, or
//! `INETD_BENCH_PORT_BASE`), each exec'ing the tiny static server as
//! `nobody`, as a new user would configure many: one line per port.
//!
//! Two parts:
//!
//! * The core alone, in packaged mode, with the bench as its controller
//!   (root may speak on the core socket): the time from writing the
//!   `Apply` of N listeners (encoded beforehand) to reading the core's
//!   report, all `Added` (the core binds and listens before it answers);
//!   the same `Apply` again, all `Unchanged` (the core's side of an
//!   unchanged reload); the core's RSS with N listeners. Each on a fresh
//!   core, 3 times; medians.
//! * What a user runs: our core in one-command mode with the real
//!   controller, and openbsd-inetd, inetutils-inetd and xinetd, each
//!   given a config of N services: the time from starting it to all N
//!   ports listening (polled in `/proc/net/tcp`, so within about 10 ms
//!   plus one read of that file); the daemon's RSS and descriptors; our
//!   controller's RSS; connections per second on the last service at 1
//!   and 32 clients, and as a ratio to the same daemon with one service;
//!   for ours, `inetctl reload` with nothing changed (wall time of the
//!   command: the controller rereads and resolves the config, sends the
//!   `Apply`, the core diffs). 3 runs of 3 s per case; medians.
//!
//! Environment: `INETD_BENCH_SCALE=1` (add 10,000 services),
//! `INETD_BENCH_PORT_BASE` (20000), `INETD_BENCH_REPS` (3),
//! `INETD_BENCH_SECS` (3), `INETD_BENCH_DAEMONS=ours,openbsd,inetutils,xinetd`,
//! `INETD_BENCH_LOG_LEVEL`, `INETD_BENCH_NETNS=host`,
//! `INETD_BENCH_NO_PEERS=1`, as in the `spawn` bench;
//! `INETD_BENCH_CORE_ONLY=1` (the core alone only, no one-command mode
//! and no peers), `INETD_BENCH_SMAPS=1` (print where the core's resident
//! memory is, from `/proc/PID/smaps`, after each `Apply`).
//!
//! Run by `cargo test --benches`, it is the smoke run: 1 and 100
//! services, ours only, 200 connections per case; it fails unless every
//! step completes.

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use inetd_tests as h;
use inetd_tests::protocol::{
    encode_frame, read_message, Action, ApplyReport, Bind, CoreRequest, CoreResponse, IpMode,
    ListenerSpec, Outcome, SocketType,
};
use support::{
    env_flag, env_num, measure, median, print_load, print_table, print_table_named, ratios,
    wait_ports_closed, Amount, Bench, Kind, Row, Server, Smoke,
};

const SMOKE_CONNECTIONS: u64 = 200;

fn main() {
    let b = Bench::setup("scale");
    let counts: Vec<usize> = if b.smoke {
        vec![1, 100]
    } else if env_flag("INETD_BENCH_SCALE") {
        vec![1, 1000, 10_000]
    } else {
        vec![1, 1000]
    };
    let reps = env_num("INETD_BENCH_REPS").unwrap_or(if b.smoke { 1 } else { 3 }) as usize;
    let secs = env_num("INETD_BENCH_SECS").unwrap_or(3);
    let amount = if b.smoke {
        Amount::Total(SMOKE_CONNECTIONS)
    } else {
        Amount::For(Duration::from_secs(secs))
    };
    let base = env_num("INETD_BENCH_PORT_BASE").unwrap_or(20_000);
    let max = *counts.last().unwrap_or(&1) as u64;
    let Some(base) = u16::try_from(base)
        .ok()
        .filter(|&p| p >= 1024 && u64::from(p) + max <= 65_535)
    else {
        eprintln!("INETD_BENCH_PORT_BASE={base}: the {max} ports must fit between 1024 and 65535");
        std::process::exit(2);
    };
    let all_ports: Vec<u16> = (0..max as u16).map(|i| base + i).collect();
    if !ports_free(&all_ports) {
        eprintln!(
            "ports {base}..{} are not all free: run in a private loopback (the default) or set INETD_BENCH_PORT_BASE",
            u64::from(base) + max - 1
        );
        std::process::exit(2);
    }
    let kinds = b.available(&Kind::INETDS);
    println!(
        "services: {}; daemons: {}; {reps} run(s) per case",
        counts
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    print_load("at start");
    let mut smoke = Smoke::default();

    if kinds.contains(&Kind::Ours) {
        core_alone(&b, &counts, &all_ports, reps, &mut smoke);
        print_load("after the core alone");
    }
    if !env_flag("INETD_BENCH_CORE_ONLY") {
        one_command_and_peers(&b, &kinds, &counts, &all_ports, reps, amount, &mut smoke);
    }
    print_load("at end");
    if b.smoke {
        smoke.finish();
    }
}

/// Binding each port once, on 127.0.0.1.
fn ports_free(ports: &[u16]) -> bool {
    ports
        .iter()
        .all(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
}

// ---------------------------------------------------------------------------
// The core alone

/// Our core in packaged mode, on a core socket in the work directory.
struct PackagedCore {
    child: Child,
    socket: PathBuf,
}

impl PackagedCore {
    fn start(b: &Bench) -> Option<PackagedCore> {
        let socket = b.fresh("core.sock");
        let child = Command::new(b.bins.join("inetd-core"))
            .arg("--core-socket")
            .arg(&socket)
            .args(["--log-level", &b.log_level])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut c = PackagedCore { child, socket };
        let up = h::wait_until(Duration::from_secs(10), || {
            UnixStream::connect(&c.socket).is_ok()
        });
        (up && c.child.try_wait().ok().flatten().is_none()).then_some(c)
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for PackagedCore {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        );
        if !h::wait_until(Duration::from_secs(5), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        }) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One listener per port, exec'ing the tiny server as nobody, unlimited.
fn specs(b: &Bench, ports: &[u16]) -> Vec<ListenerSpec> {
    ports
        .iter()
        .map(|&port| ListenerSpec {
            bind: Bind::Inet {
                addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                port,
                mode: IpMode::V4,
            },
            socket_type: SocketType::Stream,
            wait: false,
            action: Action::Exec {
                path: b.hello.display().to_string(),
                argv: vec!["hello".into()],
            },
            creds: h::nobody_creds(),
            limits: h::no_limits(),
            acl: None,
            label: format!("hello 127.0.0.1:{port}"),
        })
        .collect()
}

/// Writes the already encoded `frame` and reads the report: the time
/// between the two and the report.
fn timed_apply(s: &mut UnixStream, frame: &[u8]) -> Result<(Duration, ApplyReport), String> {
    let t = Instant::now();
    s.write_all(frame).map_err(|e| format!("write: {e}"))?;
    let r: CoreResponse = read_message(s).map_err(|e| format!("read: {e}"))?;
    let took = t.elapsed();
    match r {
        CoreResponse::Applied(r) => Ok((took, r)),
        other => Err(format!("answered {other:?}")),
    }
}

fn core_alone(b: &Bench, counts: &[usize], ports: &[u16], reps: usize, smoke: &mut Smoke) {
    let mut rows: Vec<Row> = Vec::new();
    for &n in counts {
        let frame = encode_frame(&CoreRequest::Apply {
            listeners: specs(b, &ports[..n]),
        })
        .expect("encode the Apply");
        let (mut apply, mut again, mut rss) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..reps {
            let case = format!("the core alone, {n} listeners");
            if !wait_ports_closed(&ports[..n], Duration::from_secs(10)) {
                smoke.require(&case, false, "the ports stayed in use");
                continue;
            }
            let Some(core) = PackagedCore::start(b) else {
                smoke.require(&case, false, "the core did not start");
                eprintln!("{case}: the core did not start");
                continue;
            };
            let mut client = match h::CoreClient::connect(&core.socket) {
                Ok(c) => c,
                Err(e) => {
                    smoke.require(&case, false, &e);
                    eprintln!("{case}: {e}");
                    continue;
                }
            };
            let _ = client
                .stream
                .set_read_timeout(Some(Duration::from_secs(60)));
            let first = timed_apply(&mut client.stream, &frame);
            let second = timed_apply(&mut client.stream, &frame);
            let ok = match (&first, &second) {
                (Ok((_, r1)), Ok((_, r2))) => {
                    r1.outcomes.iter().all(|o| *o == Outcome::Added)
                        && r2.outcomes.iter().all(|o| *o == Outcome::Unchanged)
                        && r1.outcomes.len() == n
                }
                _ => false,
            };
            smoke.require(&case, ok, "the Apply was not applied as a whole");
            if !ok {
                eprintln!("{case}: not applied as a whole: {first:?}");
                continue;
            }
            apply.push(first.ok().map(|(d, _)| d.as_secs_f64() * 1e3));
            again.push(second.ok().map(|(d, _)| d.as_secs_f64() * 1e3));
            rss.push(h::rss_kib(core.pid()).map(|v| v as f64));
            if env_flag("INETD_BENCH_SMAPS") {
                print_smaps(core.pid(), n);
            }
        }
        rows.push((
            n.to_string(),
            vec![median(apply), median(again), median(rss.clone())],
        ));
    }
    per_service(&mut rows, 2, counts);
    print_table_named(
        "the core alone (packaged mode, the bench as its controller): medians",
        "listeners",
        &["apply ms", "again ms", "rss KiB", "B/listener"],
        &rows,
        1,
    );
    println!("apply: the Apply written to its report read, all Added (bound and listening);");
    println!(
        "again: the same Apply again, all Unchanged; B/listener: RSS over the 1-listener core."
    );
}

/// With `INETD_BENCH_SMAPS=1`: where the core's resident memory is, by
/// kind of mapping (the binary's own file, other files, the heap, stacks
/// and other anonymous memory), in KiB, from `/proc/PID/smaps`.
fn print_smaps(pid: i32, n: usize) {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return;
    };
    let mut sums: Vec<(String, u64, u64)> = Vec::new();
    let mut name = String::new();
    let mut count = 0;
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            let _perms = f.next();
            let path = f.nth(3).unwrap_or("[anon]");
            name = match path {
                p if p.ends_with("inetd-core") => "inetd-core".to_string(),
                p if p.starts_with('/') => p.rsplit('/').next().unwrap_or(p).to_string(),
                p => p.to_string(),
            };
            count += 1;
        } else if first == "Rss:" {
            let kib: u64 = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            match sums.iter_mut().find(|s| s.0 == name) {
                Some(s) => {
                    s.1 += kib;
                    s.2 += 1;
                }
                None => sums.push((name.clone(), kib, 1)),
            }
        }
    }
    sums.sort_by_key(|s| std::cmp::Reverse(s.1));
    let total: u64 = sums.iter().map(|s| s.1).sum();
    println!("smaps of the core, {n} listeners: {count} mappings, {total} KiB resident");
    for (name, kib, maps) in sums {
        println!("  {kib:>8} KiB  {maps:>3} mapping(s)  {name}");
    }
}

/// Appends a column: the growth of column `col` per service over the
/// first row (one service), in bytes.
fn per_service(rows: &mut [Row], col: usize, counts: &[usize]) {
    let one = rows.first().and_then(|r| r.1[col]);
    for (row, &n) in rows.iter_mut().zip(counts) {
        let v = match (one, row.1[col]) {
            (Some(o), Some(v)) if n > 1 => Some((v - o) * 1024.0 / (n - 1) as f64),
            _ => None,
        };
        row.1.push(v);
    }
}

// ---------------------------------------------------------------------------
// What a user runs, against the peers

#[derive(Default)]
struct Figures {
    start_ms: Vec<Option<f64>>,
    rss: Vec<Option<f64>>,
    ctl_rss: Vec<Option<f64>>,
    fds: Vec<Option<f64>>,
    rate1: Vec<Option<f64>>,
    rate32: Vec<Option<f64>>,
    reload_ms: Vec<Option<f64>>,
}

fn one_command_and_peers(
    b: &Bench,
    kinds: &[Kind],
    counts: &[usize],
    ports: &[u16],
    reps: usize,
    amount: Amount,
    smoke: &mut Smoke,
) {
    let mut figs: HashMap<(Kind, usize), Figures> = HashMap::new();
    for &n in counts {
        let ports = &ports[..n];
        let last = ports[n - 1];
        for &kind in kinds {
            let case = format!("{}, {n} services", kind.name());
            let f = figs.entry((kind, n)).or_default();
            if !wait_ports_closed(ports, Duration::from_secs(30)) {
                smoke.require(&case, false, "the ports stayed in use");
                eprintln!("{case}: the ports stayed in use; skipped");
                continue;
            }
            let t = Instant::now();
            let Some(d) = b.start(kind, Server::Hello, ports) else {
                smoke.require(&case, false, "did not start");
                continue;
            };
            f.start_ms.push(Some(t.elapsed().as_secs_f64() * 1e3));
            for rep in 0..reps {
                for (c, out) in [(1, &mut f.rate1), (32, &mut f.rate32)] {
                    let s = measure(&d, last, c, amount, Server::Hello.reply());
                    if b.smoke {
                        smoke.check(&format!("{case}, {c} clients"), &s, SMOKE_CONNECTIONS);
                    } else if s.failed > 0 {
                        eprintln!(
                            "{case}, {c} clients: {} failed (first: {})",
                            s.failed,
                            s.first_error.as_deref().unwrap_or("-")
                        );
                    }
                    out.push(Some(s.rate));
                }
                if kind == Kind::Ours {
                    match b.reload(&d) {
                        Ok(t) => f.reload_ms.push(Some(t.as_secs_f64() * 1e3)),
                        Err(e) => {
                            smoke.require(&case, false, &e);
                            eprintln!("{case}: reload {rep}: {e}");
                        }
                    }
                }
            }
            d.wait_idle(Duration::from_secs(10));
            f.rss.push(d.rss_kib().map(|v| v as f64));
            f.fds.push(Some(d.fd_count() as f64));
            if kind == Kind::Ours {
                let c = d.controller_rss_kib().map(|v| v as f64);
                smoke.require(&case, c.is_some(), "no controller found");
                f.ctl_rss.push(c);
            }
        }
        print_load(&format!("after {n} services"));
    }

    let heads = [
        "start ms",
        "rss KiB",
        "B/svc",
        "fds",
        "c/s@1",
        "c/s@32",
        "@1 vs 1",
        "@32 vs 1",
        "reload ms",
        "ctl KiB",
        "ctl B/svc",
    ];
    let med = |k: Kind, n: usize, pick: &dyn Fn(&Figures) -> &Vec<Option<f64>>| {
        figs.get(&(k, n))
            .and_then(|f| median(pick(f).iter().copied()))
    };
    let growth = |k: Kind, n: usize, pick: &dyn Fn(&Figures) -> &Vec<Option<f64>>| match (
        med(k, 1, pick),
        med(k, n, pick),
    ) {
        (Some(one), Some(v)) if n > 1 => Some((v - one) * 1024.0 / (n - 1) as f64),
        _ => None,
    };
    let vs_one = |k: Kind, n: usize, pick: &dyn Fn(&Figures) -> &Vec<Option<f64>>| match (
        med(k, 1, pick),
        med(k, n, pick),
    ) {
        (Some(one), Some(v)) if one > 0.0 => Some(v / one),
        _ => None,
    };
    for &n in counts {
        let rows: Vec<Row> = kinds
            .iter()
            .map(|&k| {
                (
                    k.name().to_string(),
                    vec![
                        med(k, n, &|f| &f.start_ms),
                        med(k, n, &|f| &f.rss),
                        growth(k, n, &|f| &f.rss),
                        med(k, n, &|f| &f.fds),
                        med(k, n, &|f| &f.rate1),
                        med(k, n, &|f| &f.rate32),
                        vs_one(k, n, &|f| &f.rate1).filter(|_| n > 1),
                        vs_one(k, n, &|f| &f.rate32).filter(|_| n > 1),
                        med(k, n, &|f| &f.reload_ms),
                        med(k, n, &|f| &f.ctl_rss),
                        growth(k, n, &|f| &f.ctl_rss),
                    ],
                )
            })
            .collect();
        let title = format!(
            "{n} service{} (one per port), conn/s on the last: medians",
            if n == 1 { "" } else { "s" }
        );
        print_table(&title, &heads, &rows, 2);
        if kinds.first() == Some(&Kind::Ours) && rows.len() > 1 {
            print_table(
                "ours / other (c/s, @N vs 1 above 1: ours does better; the rest below 1: ours is lower)",
                &heads,
                &ratios(&rows),
                2,
            );
        }
    }
    println!();
    println!("start ms: from starting the daemon to all ports listening; rss, fds: the daemon's,");
    println!("after the load; B/svc: RSS growth per service over the 1-service run; c/s@N:");
    println!("conn/s with N clients; @N vs 1: over the same daemon with one service; reload ms:");
    println!("`inetctl reload`, nothing changed; ctl: our controller's RSS.");
}
