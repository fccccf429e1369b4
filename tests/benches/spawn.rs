//! Benchmark: what one connection costs at the fork+exec limit. Our core
//! against its peers and against the limit itself, in the same run, on a
//! loopback of the run's own.
//!
//! ```text
//! cargo build --release --workspace
//! cargo bench -p inetd-tests --bench spawn          # as root, about 10 min
//! ```
//!
//! Every daemon serves one exec service on 127.0.0.1, as `nobody`, with
//! its throttles lifted; each connection is: connect, read to end of file
//! (the server's reply), close. Two servers: the tiny static server built
//! here (writes `hello\n` and exits: the exec costs little, so the
//! daemon's own cost shows) and `/bin/true` (dynamically linked: what a
//! typical server's exec adds). 1, 8 and 32 clients, each with one
//! connection at a time; 3 runs of 3 s per case, interleaved (run 1 of
//! every daemon, then run 2, ...), so a change in the machine's load hits
//! every daemon alike. Medians are printed.
//!
//! The daemons: `inetd-core` (one-command mode, the real controller, its
//! default log level), Debian's tcpserver (ucspi-tcp), openbsd-inetd,
//! inetutils-inetd and xinetd (see the `support` module), and two
//! references of the limit built here with the machine's C compiler from
//! `benches/ref/loop.c`: a bare fork+exec accept loop and a bare
//! posix_spawn accept loop (accept, spawn with the connection on 0/1/2,
//! reap; nothing else).
//!
//! Figures, per server and number of clients: connections per second;
//! p50 and p99 latency (connect to end of file); the daemon's own CPU per
//! connection (utime + stime from `/proc/PID/stat` over the run, divided
//! by the connections served; the children's CPU is theirs, not the
//! daemon's); the daemon's RSS after the runs (one service). Then each as
//! a ratio ours / other.
//!
//! Environment:
//! * `INETD_BENCH_REPS` (3), `INETD_BENCH_SECS` (3): runs per case and
//!   their length.
//! * `INETD_BENCH_DAEMONS=ours,tcpserver,forkloop,spawnloop,openbsd,inetutils,xinetd`:
//!   only these.
//! * `INETD_BENCH_PERF=DIR`: after the measured runs, record a profile of
//!   each daemon under 8 clients on the tiny server (`perf record -g -p
//!   PID`, not counted in the figures) into `DIR/KEY.perf.data`, and count
//!   the daemon's own system calls per connection (`perf stat -e
//!   raw_syscalls:sys_enter --no-inherit -p PID`). Read a profile with
//!   `perf report --stdio -i DIR/ours.perf.data`. With
//!   `INETD_BENCH_REPS=0` only the profiles are made.
//! * `INETD_BENCH_LOG_LEVEL`: our core's `--log-level` (default `info`,
//!   its own default: one log line per connection, to /dev/null here).
//! * `INETD_BENCH_NETNS=host`: run on the host's loopback instead of a
//!   private one (ports are picked free, but other traffic is measured
//!   along).
//! * `INETD_BENCH_NO_PEERS=1`: do not fetch the peers (use them only if
//!   already unpacked).
//!
//! Run by `cargo test --benches` (no `--bench` argument), it is the smoke
//! run: ours and the two loops only, one run of 300 connections per case,
//! with the binaries of that build (debug), and it fails unless every
//! connection of every case was served.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use inetd_tests as h;
use support::{
    env_num, measure, median, print_load, print_table, ratios, Amount, Bench, Kind, Row, Sample,
    Server, Smoke,
};

const CLIENTS: [usize; 3] = [1, 8, 32];
const SMOKE_CONNECTIONS: u64 = 300;

fn main() {
    let b = Bench::setup("spawn");
    let reps = env_num("INETD_BENCH_REPS").unwrap_or(if b.smoke { 1 } else { 3 }) as usize;
    let secs = env_num("INETD_BENCH_SECS").unwrap_or(3);
    let amount = if b.smoke {
        Amount::Total(SMOKE_CONNECTIONS)
    } else {
        Amount::For(Duration::from_secs(secs))
    };
    let kinds = b.available(&Kind::ALL);
    let servers = [Server::Hello, Server::True];
    println!(
        "daemons: {}",
        kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "{} run(s) per case of {}; {} loopback",
        reps,
        match amount {
            Amount::For(d) => format!("{} s", d.as_secs()),
            Amount::Total(n) => format!("{n} connections"),
        },
        if b.private_net {
            "a private"
        } else {
            "the host's"
        }
    );
    print_load("at start");

    let mut smoke = Smoke::default();
    let mut samples: HashMap<(Kind, Server, usize), Vec<Sample>> = HashMap::new();
    let mut rss: HashMap<(Kind, Server), Vec<Option<f64>>> = HashMap::new();
    for rep in 1..=reps {
        for &server in &servers {
            for &kind in &kinds {
                let case = format!("{} on {}", kind.name(), server.argv0());
                let port = h::free_port();
                let Some(d) = b.start(kind, server, &[port]) else {
                    smoke.require(&case, false, "did not start");
                    continue;
                };
                for &c in &CLIENTS {
                    let s = measure(&d, port, c, amount, server.reply());
                    if s.failed > 0 {
                        eprintln!(
                            "{case}, {c} clients: {} connections failed (first: {})",
                            s.failed,
                            s.first_error.as_deref().unwrap_or("-")
                        );
                    }
                    if b.smoke {
                        smoke.check(&format!("{case}, {c} clients"), &s, SMOKE_CONNECTIONS);
                    }
                    samples.entry((kind, server, c)).or_default().push(s);
                }
                let r = d.rss_kib().map(|v| v as f64);
                if b.smoke {
                    smoke.require(&case, r.is_some(), "no RSS read");
                }
                rss.entry((kind, server)).or_default().push(r);
            }
        }
        println!("run {rep} of {reps} done");
        print_load(&format!("after run {rep}"));
    }

    let heads: Vec<String> = ["c/s", "p50", "p99", "cpu"]
        .iter()
        .flat_map(|m| CLIENTS.iter().map(move |c| format!("{m}@{c}")))
        .chain(["rss".to_string()])
        .collect();
    let heads: Vec<&str> = heads.iter().map(String::as_str).collect();
    for &server in servers.iter().filter(|_| reps > 0) {
        let rows: Vec<Row> = kinds
            .iter()
            .map(|&k| {
                let get = |c: usize, f: &dyn Fn(&Sample) -> Option<f64>| {
                    median(samples.get(&(k, server, c)).into_iter().flatten().map(f))
                };
                let mut cells = Vec::new();
                for f in [
                    &(|s: &Sample| Some(s.rate)) as &dyn Fn(&Sample) -> Option<f64>,
                    &|s: &Sample| s.p50_us,
                    &|s: &Sample| s.p99_us,
                    &|s: &Sample| s.cpu_us,
                ] {
                    cells.extend(CLIENTS.iter().map(|&c| get(c, f)));
                }
                cells.push(median(rss.get(&(k, server)).into_iter().flatten().copied()));
                (k.name().to_string(), cells)
            })
            .collect();
        print_table(
            &format!("exec of {}: medians", server.describe()),
            &heads,
            &rows,
            0,
        );
        if kinds.first() == Some(&Kind::Ours) && rows.len() > 1 {
            print_table(
                "ours / other (c/s above 1: ours is faster; p50, p99, cpu, rss below 1: ours is lower)",
                &heads,
                &ratios(&rows),
                2,
            );
        }
    }
    if reps > 0 {
        println!();
        println!("c/s: connections per second; p50, p99: latency from connect to end of file, µs;");
        println!("cpu: the daemon's own utime+stime per connection, µs; rss: its VmRSS with one");
        println!("service, KiB; @N: N clients.");
    }

    if let Ok(dir) = std::env::var("INETD_BENCH_PERF") {
        profile(&b, &kinds, PathBuf::from(dir), secs);
    }
    if b.smoke {
        smoke.finish();
    }
}

/// Records each daemon's profile under 8 clients on the tiny server, and
/// counts its own system calls, apart from the measured runs (perf slows
/// what it watches).
fn profile(b: &Bench, kinds: &[Kind], dir: PathBuf, secs: u64) {
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("{}: {e}", dir.display());
        return;
    }
    println!();
    for &kind in kinds {
        let port = h::free_port();
        let Some(d) = b.start(kind, Server::Hello, &[port]) else {
            continue;
        };
        let pid = d.pid().to_string();
        let data = dir.join(format!("{}.perf.data", kind.key()));
        let counts = dir.join(format!("{}.syscalls.csv", kind.key()));
        let _ = std::fs::remove_file(&data);
        let _ = std::fs::remove_file(&counts);
        let perf = |args: &[&str]| {
            Command::new("perf")
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        };
        let record = perf(&["record", "-g", "-p", &pid, "-o", &data.to_string_lossy()]);
        // The daemon's own calls only (--no-inherit): not its children's.
        let stat = perf(&[
            "stat",
            "--no-inherit",
            "-e",
            "raw_syscalls:sys_enter",
            "-x,",
            "-p",
            &pid,
            "-o",
            &counts.to_string_lossy(),
        ]);
        let (Ok(mut record), Ok(mut stat)) = (record, stat) else {
            eprintln!("perf: cannot start it; no profiles");
            return;
        };
        // perf creates its output files once it is attached.
        if !h::wait_until(Duration::from_secs(10), || data.exists() && counts.exists()) {
            eprintln!("perf did not start for {}", kind.name());
        }
        let s = measure(
            &d,
            port,
            8,
            Amount::For(Duration::from_secs(secs)),
            Server::Hello.reply(),
        );
        for p in [&record, &stat] {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p.id() as i32),
                nix::sys::signal::Signal::SIGINT,
            );
        }
        let _ = record.wait();
        let _ = stat.wait();
        let calls = std::fs::read_to_string(&counts)
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.contains("raw_syscalls:sys_enter"))
                    .and_then(|l| l.split(',').next()?.trim().parse::<f64>().ok())
            })
            .filter(|_| s.ok > 0)
            .map_or("-".to_string(), |c| format!("{:.1}", c / s.ok as f64));
        // The record follows the children too (before and after their
        // exec): --pid keeps the daemon's own samples, --comm adds its
        // children before exec.
        println!(
            "{} (pid {pid}): {:.0} conn/s under perf, {calls} system calls per connection;",
            kind.name(),
            s.rate,
        );
        println!(
            "  perf report --stdio --no-children --pid {pid} -i {}",
            data.display()
        );
    }
}
